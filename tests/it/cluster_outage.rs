//! Cluster mode when NATS fails under load, over the public protocol, with three
//! in-process hub nodes and real nats-server processes:
//!
//! - `kill -9` of the only NATS server under load, then a restart: `unavailable` meanwhile,
//!   no acknowledged change lost, the nodes catch up by themselves;
//! - one server of a three-server NATS cluster (replicas 3) killed under load: writes stop
//!   for no longer than [`NATS_NODE_LOSS_BOUND`].

use crate::cluster_faults::{assert_one_chain, AGENTS};
use crate::common::cluster::{first_text, read_until, Feed};
use crate::common::nats::{stored_in, NatsCluster, NatsServer};
use crate::common::{settings, with_directory_agents, Client, TestHub, PATIENCE};
use presence_hub::cluster::NodeId;
use presence_hub::config::ClusterSettings;
use presence_hub::model::AgentId;
use presence_hub::Settings;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a three-server NATS cluster with replicas 3 may stop taking writes when one
/// server is killed: JetStream elects a new stream leader within its Raft election timeout
/// (randomized 4-9 s), measured 4.7-7.8 s for the backplane alone (docs/cluster.md), plus
/// the client's move to another server (<= 1 s), the retry delay (500 ms) and the margin of
/// a loaded 2-core box (10.4 s seen once in a CI run on a fresh clone).
const NATS_NODE_LOSS_BOUND: Duration = Duration::from_secs(15);

/// An in-process node of a cluster on `servers`.
fn node(name: &str, servers: Vec<String>, prefix: &str, replicas: usize) -> Settings {
    Settings {
        node_id: Some(NodeId::parse(name).unwrap()),
        cluster: Some(ClusterSettings {
            prefix: prefix.into(),
            replicas,
            ..ClusterSettings::new(servers)
        }),
        ..with_directory_agents(settings(), &AGENTS)
    }
}

/// What one writer saw: acknowledged (version, note, when), refusals, other errors.
#[derive(Default)]
struct Writes {
    acked: Vec<(u64, String, Instant)>,
    unavailable: Vec<Instant>,
}

/// A tab of `agent` on `hub` changing status as fast as it is answered until `stop`.
async fn writer(hub: std::net::SocketAddr, agent: &'static str, stop: Arc<AtomicBool>) -> Writes {
    let mut tab = Client::connect(&format!("ws://{hub}/ws/agent?agent_id={agent}")).await;
    let hello = first_text(&mut tab).await.expect("hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    let mut w = Writes::default();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let note = format!("{agent}-{k}");
        let status = if k.is_multiple_of(2) {
            "busy"
        } else {
            "on_break"
        };
        let r = tab
            .request(json!({"type": "set_status", "status": status, "note": note}))
            .await;
        match r["code"].as_str() {
            None => {
                assert_eq!(r["type"], "ok", "{r}");
                w.acked
                    .push((r["version"].as_u64().unwrap(), note, Instant::now()));
            }
            Some("unavailable") => {
                w.unavailable.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(_) => panic!("{r}"),
        }
    }
    w
}

/// Every acknowledged write of `agent` is stored with its version and note, in one chain.
async fn assert_kept(url: &str, prefix: &str, agent: &str, w: &Writes) -> u64 {
    let stored = stored_in(url, prefix, &AgentId::parse(agent).unwrap()).await;
    assert_one_chain(&stored);
    for (version, note, _) in &w.acked {
        let s = stored
            .iter()
            .find(|s| s.1 == *version)
            .unwrap_or_else(|| panic!("acknowledged {agent} v{version} ({note}) lost"));
        assert!(s.2.contains(&format!("\"{note}\"")), "v{version}: {}", s.2);
    }
    stored.len() as u64
}

/// How long three fresh NATS servers may take to form their JetStream cluster (elect a
/// meta leader) before the nodes can create a stream with replicas 3: seconds, more on a
/// loaded machine. A setup wait only, not a bound under test.
const CLUSTER_FORMING: Duration = Duration::from_secs(60);

/// Three in-process nodes on `servers`, ready; the agents of [`AGENTS`] spread over them.
async fn in_process(servers: &[String], prefix: &str, replicas: usize) -> Vec<TestHub> {
    let patience = if replicas > 1 {
        CLUSTER_FORMING
    } else {
        PATIENCE
    };
    let names = ["p1", "p2", "p3"];
    let mut hubs = Vec::new();
    for n in names {
        hubs.push(TestHub::with(node(n, servers.to_vec(), prefix, replicas)).await);
    }
    for h in &hubs {
        let start = Instant::now();
        loop {
            let (status, body) = h.get("/healthz").await;
            if status == 200 && body["members"] == json!(names) {
                break;
            }
            assert!(start.elapsed() < patience, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    hubs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kill9_and_restart_under_load_loses_no_acknowledged_change() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let hubs = in_process(&[nats.url()], "phtload", 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = AGENTS[..6]
        .iter()
        .enumerate()
        .map(|(i, a)| tokio::spawn(writer(hubs[i % 3].addr, a, stop.clone())))
        .collect();
    let mut admins = Vec::new();
    for h in &hubs {
        admins.push((h.admin("boss").await.0, Feed::default()));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Instant::now();
    nats.kill9().await;
    for h in &hubs {
        let start = Instant::now();
        while h.get("/healthz").await.0 != 503 {
            assert!(start.elapsed() < PATIENCE, "never unready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("every node unready {:?} after the kill", killed.elapsed());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.restart().await;
    for h in &hubs {
        let start = Instant::now();
        while h.get("/healthz").await.0 != 200 {
            assert!(start.elapsed() < PATIENCE, "never ready again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Load goes on after the restart, then stops.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.expect("writer"));
    }
    let restarted = Instant::now();
    for (i, w) in results.iter().enumerate() {
        let agent = AGENTS[i];
        // `unavailable` within 2 s of the kill, and writes taken again after the restart.
        let first_refusal = w
            .unavailable
            .iter()
            .find(|t| **t >= killed)
            .unwrap_or_else(|| panic!("{agent}: never answered unavailable"));
        assert!(
            first_refusal.duration_since(killed) <= Duration::from_secs(2),
            "{agent}: unavailable only after {:?}",
            first_refusal.duration_since(killed)
        );
        assert!(
            w.acked
                .iter()
                .any(|a| a.2 > killed + Duration::from_millis(1500)),
            "{agent}: no change taken after the restart"
        );
        let n = assert_kept(&nats.url(), "phtload", agent, w).await;
        // Every node caught up by itself: it serves the last stored version.
        for h in &hubs {
            loop {
                let s = h.agent_state(agent).await;
                if s["version"] == n {
                    break;
                }
                assert!(restarted.elapsed() < PATIENCE, "{agent} stuck at {s}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Admins: every seq in order; each agent's versions without a gap (or a resume told
    // them recovered: false, which these sockets never needed: they stayed open).
    for (i, (c, feed)) in admins.iter_mut().enumerate() {
        for (j, a) in AGENTS[..6].iter().enumerate() {
            let n = results[j].acked.last().map(|x| x.0).unwrap_or(0);
            read_until(c, feed, |f| f.last_version(a) >= Some(n)).await;
        }
        feed.assert_in_order(&format!("admin on p{}", i + 1));
    }
    for h in hubs {
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_nats_server_of_three_with_replicas_3_interrupts_writes_within_the_bound() {
    let Some(mut nats) = NatsCluster::start().await else {
        return;
    };
    let hubs = in_process(&nats.urls(), "phtr3", 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = AGENTS[..3]
        .iter()
        .enumerate()
        .map(|(i, a)| tokio::spawn(writer(hubs[i].addr, a, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Instant::now();
    nats.servers[0].kill9().await;
    // Writes go on (after at most the bound) on every node.
    tokio::time::sleep(NATS_NODE_LOSS_BOUND + Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let url = nats.servers[1].url();
    for (i, w) in writers.into_iter().enumerate() {
        let w = w.await.expect("writer");
        let agent = AGENTS[i];
        let mut times: Vec<Instant> = w.acked.iter().map(|a| a.2).collect();
        times.push(killed);
        times.sort();
        let gap = times
            .windows(2)
            .map(|p| p[1].duration_since(p[0]))
            .max()
            .unwrap();
        eprintln!("{agent}: longest time without an acknowledged write {gap:?}");
        assert!(
            gap <= NATS_NODE_LOSS_BOUND,
            "{agent}: writes stopped for {gap:?}"
        );
        assert!(
            w.acked.iter().any(|a| a.2 > killed + NATS_NODE_LOSS_BOUND),
            "{agent}: no write taken after the bound"
        );
        assert_kept(&url, "phtr3", agent, &w).await;
    }
    for h in hubs {
        h.stop().await;
    }
}
