//! The cluster backplane (`src/cluster/`) against real nats-server processes: fencing of
//! concurrent owners, cluster-wide dedup, the directory watch, membership and ownership,
//! and NATS being killed (`kill -9`) and restarted. Several "nodes" here are several
//! `Backplane`s in one process, each with its own NATS connection, exactly as separate hub
//! processes would hold them.

use crate::common::nats::{self, stored, NatsServer};
use bytes::Bytes;
use presence_hub::cluster::{
    Backplane, Claim, ClusterConfig, ClusterError, DedupRecord, DirectoryKey, Followed, Head,
    NodeId,
};
use presence_hub::model::AgentId;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Safety net so a broken test fails instead of hanging (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(20);

fn config(servers: Vec<String>, node: &str, replicas: usize) -> ClusterConfig {
    ClusterConfig::new(servers, NodeId::parse(node).unwrap(), "pht", replicas).unwrap()
}

async fn node(cfg: ClusterConfig) -> (Backplane, CancellationToken) {
    nats::node(cfg, PATIENCE).await
}

fn agent(id: &str) -> AgentId {
    AgentId::parse(id).unwrap()
}

/// Load-modify-append until it sticks: what an owner does after losing a race.
async fn increment(bp: &Backplane, a: &AgentId, who: &str) -> Result<Head, ClusterError> {
    for _ in 0..200 {
        let head = bp.last(a).await?.map(|c| c.head).unwrap_or_default();
        let body = Bytes::from(format!("{who}:{}", head.version + 1));
        match bp.append(a, head, body).await {
            Err(ClusterError::Fenced { .. }) => continue,
            other => return other,
        }
    }
    panic!("{who} was fenced 200 times in a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_race_exactly_one_append_wins_and_versions_never_fork() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, _sa) = node(config(vec![nats.url()], "a", 1)).await;
    let (b, _sb) = node(config(vec![nats.url()], "b", 1)).await;
    let ann = agent("ann.lee");

    // Both nodes believe they own ann and both start from "nothing stored".
    assert_eq!(a.last(&ann).await.unwrap(), None);
    let (ra, rb) = tokio::join!(
        a.append(&ann, Head::default(), Bytes::from("a:1")),
        b.append(&ann, Head::default(), Bytes::from("b:1")),
    );
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one append wins: {ra:?} {rb:?}");
    let loser = if ra.is_ok() { &rb } else { &ra };
    assert!(
        matches!(loser, Err(ClusterError::Fenced { agent }) if agent == "ann.lee"),
        "{loser:?}"
    );
    let winner = ra.clone().or(rb.clone()).unwrap();
    assert_eq!(winner.version, 1);
    // The loser's stale head is refused again, whatever it retries with.
    assert!(matches!(
        b.append(&ann, Head::default(), Bytes::from("x")).await,
        Err(ClusterError::Fenced { .. })
    ));

    // Then both keep writing at once, each reloading after a refusal.
    let (ta, tb) = tokio::join!(
        async {
            for _ in 0..25 {
                increment(&a, &ann, "a").await.unwrap();
            }
        },
        async {
            for _ in 0..25 {
                increment(&b, &ann, "b").await.unwrap();
            }
        },
    );
    let _ = (ta, tb);
    let rows = stored(&nats.url(), &ann).await;
    let versions: Vec<u64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(versions, (1..=51).collect::<Vec<_>>(), "one chain, no fork");
    for (seq, version, body) in &rows[1..] {
        assert!(body.ends_with(&format!(":{version}")), "{seq}: {body}");
    }
    let last = a.last(&ann).await.unwrap().unwrap();
    assert_eq!(
        last.head,
        Head {
            seq: rows[50].0,
            version: 51
        }
    );
    // Every refusal and acknowledgement was counted (for /metrics).
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.appended + sb.appended, 51);
    assert!(sa.fenced + sb.fenced >= 2, "{sa:?} {sb:?}");
    assert_eq!(sa.append_unavailable + sb.append_unavailable, 0);
    assert!(a.epoch().unwrap().as_str().len() == 16);
    assert_eq!(a.epoch().unwrap(), b.epoch().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_across_two_nodes_applies_once_and_returns_the_stored_reply() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, _sa) = node(config(vec![nats.url()], "a", 1)).await;
    let (b, _sb) = node(config(vec![nats.url()], "b", 1)).await;

    let (ca, cb) = tokio::join!(a.dedup_claim("evt-1.x@y"), b.dedup_claim("evt-1.x@y"));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let (first, first_node, second, other) = match (&ca, &cb) {
        (Claim::New(t), Claim::Duplicate(d)) => (t.clone(), "a", d.clone(), &b),
        (Claim::Duplicate(d), Claim::New(t)) => (t.clone(), "b", d.clone(), &a),
        _ => panic!("exactly one claim must be new: {ca:?} {cb:?}"),
    };
    assert_eq!(
        second,
        DedupRecord::Pending {
            node: first_node.into()
        }
    );
    let winner = if first_node == "a" { &a } else { &b };
    winner
        .dedup_complete(first, br#"{"type":"ok","ref":7}"#)
        .await
        .unwrap();
    assert_eq!(
        other.dedup_claim("evt-1.x@y").await.unwrap(),
        Claim::Duplicate(DedupRecord::Done {
            reply: Bytes::from_static(br#"{"type":"ok","ref":7}"#)
        })
    );

    // A claim given up (the event could not be applied) lets a retry through, once.
    let Claim::New(t) = a.dedup_claim("evt-2").await.unwrap() else {
        panic!("fresh id")
    };
    a.dedup_release(t).await.unwrap();
    assert!(matches!(
        b.dedup_claim("evt-2").await.unwrap(),
        Claim::New(_)
    ));
    assert!(matches!(
        a.dedup_claim("evt-2").await.unwrap(),
        Claim::Duplicate(DedupRecord::Pending { .. })
    ));

    // Ids are remembered at least 4 hours, by the engine.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut kv = js.get_stream("KV_pht_dedup").await.unwrap();
    let max_age = kv.info().await.unwrap().config.max_age;
    assert!(max_age >= Duration::from_secs(4 * 3600), "{max_age:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_edit_on_one_node_is_seen_by_another_within_a_second() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, _sa) = node(config(vec![nats.url()], "a", 1)).await;
    let (b, _sb) = node(config(vec![nats.url()], "b", 1)).await;
    let ann = DirectoryKey::Agent(agent("ann"));
    let sales = DirectoryKey::Group("sales.eu".into());
    a.directory_put(&ann, Bytes::from("{\"name\":\"Ann\"}"))
        .await
        .unwrap();

    let mut watch = b.directory_watch();
    let first = tokio::time::timeout(PATIENCE, watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.key, ann, "the watch starts with the current entries");

    for (key, value) in [
        (&sales, Some("{\"members\":[\"ann\"]}")),
        (&ann, Some("{\"name\":\"Ann Lee\"}")),
        (&sales, None),
    ] {
        let t0 = Instant::now();
        match value {
            Some(v) => {
                a.directory_put(key, Bytes::from(v)).await.unwrap();
            }
            None => a.directory_delete(key).await.unwrap(),
        }
        let seen = tokio::time::timeout(Duration::from_secs(1), watch.recv())
            .await
            .expect("edit seen within a second")
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(&seen.key, key);
        assert_eq!(seen.value.as_deref(), value.map(str::as_bytes));
    }
    assert_eq!(
        b.directory_get(&ann).await.unwrap().as_deref(),
        Some(&b"{\"name\":\"Ann Lee\"}"[..])
    );
    assert_eq!(b.directory_get(&sales).await.unwrap(), None);
}

#[test]
fn the_nats_cluster_config_in_the_docs_is_valid() {
    let Some(bin) = crate::common::nats::binary() else {
        return;
    };
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster.md")).unwrap();
    let conf = doc
        .split("```conf\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/cluster.md has a ```conf block");
    for needle in ["sync_interval: always", "store_dir", "cluster {"] {
        assert!(
            conf.contains(needle),
            "the documented config lacks {needle}"
        );
    }
    let path = std::env::temp_dir().join(format!("presence-hub-doc-{}.conf", std::process::id()));
    std::fs::write(&path, conf).unwrap();
    let out = std::process::Command::new(bin)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "nats-server -t rejects the documented config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_receives_every_change_once_in_seq_order_from_where_it_asks() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, _sa) = node(config(vec![nats.url()], "a", 1)).await;
    let (b, _sb) = node(config(vec![nats.url()], "b", 1)).await;
    let (c, _sc) = node(config(vec![nats.url()], "c", 1)).await;
    let mut from_start = c.follow(0);
    // Two writers, four agents, interleaved.
    let agents: Vec<AgentId> = ["p", "q.r", "s@t", "u"].iter().map(|s| agent(s)).collect();
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..20 {
                increment(&a, &agents[i % 2], "a").await.unwrap();
            }
        },
        async {
            for i in 0..20 {
                increment(&b, &agents[2 + i % 2], "b").await.unwrap();
            }
        },
    );
    let _ = (ra, rb);
    let mut got = Vec::new();
    while got.len() < 40 {
        match tokio::time::timeout(PATIENCE, from_start.recv())
            .await
            .unwrap()
        {
            Some(Followed::Change(ch)) => got.push(ch),
            other => panic!("{other:?}"),
        }
    }
    let seqs: Vec<u64> = got.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "every change once, in order"
    );
    for a in &agents {
        let versions: Vec<u64> = got
            .iter()
            .filter(|c| &c.agent == a)
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "{a}");
        let last = c.last(a).await.unwrap().unwrap();
        let seen = got.iter().rfind(|ch| &ch.agent == a).unwrap();
        assert_eq!(
            (last.head.seq, last.head.version, &last.body),
            (seen.seq, seen.version, &seen.body)
        );
    }
    assert_eq!(c.last_seq().await.unwrap(), 40);

    // A follower asking from seq 30 (a resume) gets exactly 31.. and then new changes.
    let mut resumed = c.follow(30);
    increment(&a, &agents[0], "a").await.unwrap();
    let mut tail = Vec::new();
    while tail.len() < 11 {
        match tokio::time::timeout(PATIENCE, resumed.recv())
            .await
            .unwrap()
        {
            Some(Followed::Change(ch)) => tail.push(ch.seq),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tail, (31..=41).collect::<Vec<_>>());
}

/// Answers every forwarded command with `pong:<body>`.
async fn pong(bp: &Backplane) {
    let mut inbox = bp.forwarded().await.unwrap();
    tokio::spawn(async move {
        while let Some(cmd) = inbox.recv().await {
            let reply = [b"pong:".as_slice(), &cmd.body].concat();
            let _ = cmd.respond(Bytes::from(reply)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_command_is_answered_by_its_node_or_unavailable() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, _sa) = node(config(vec![nats.url()], "a", 1)).await;
    let (b, _sb) = node(config(vec![nats.url()], "b.example-7400", 1)).await;
    let (c, _sc) = node(config(vec![nats.url()], "c", 1)).await;
    pong(&b).await;
    let to_b = NodeId::parse("b.example-7400").unwrap();
    let reply = a
        .forward(&to_b, Bytes::from("ping"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from("pong:ping"));

    // A node nobody serves (gone): unavailable at once.
    let t0 = Instant::now();
    let gone = a
        .forward(
            &NodeId::parse("gone").unwrap(),
            Bytes::from("x"),
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(&gone, Err(ClusterError::Unavailable { reason }) if reason.contains("not reachable")),
        "{gone:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );

    // A node that listens but does not answer: unavailable after the timeout.
    let _silent = c.forwarded().await.unwrap();
    let t0 = Instant::now();
    let slow = a
        .forward(
            &NodeId::parse("c").unwrap(),
            Bytes::from("x"),
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(slow, Err(ClusterError::Unavailable { .. })),
        "{slow:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!((a.stats().forwarded, a.stats().forward_failed), (1, 2));
}
