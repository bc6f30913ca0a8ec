//! Cluster mode when things fail, over the public protocol only, against real nats-server
//! processes: hub nodes are child processes of the real binary where one must die with
//! `kill -9`, freeze (`SIGSTOP`) or stop (`SIGTERM`), in-process nodes otherwise.
//!
//! - the owning node killed mid-ring, mid-call and in wrap-up: the agent moves, its timers
//!   fire on the new owner, a tab reconnecting to another node within the grace keeps the
//!   status, no acknowledged change is lost, every admin sees every `seq` in order (or is
//!   told `recovered: false` when it resumes);
//! - a forced race: the owner frozen while the others take its agent over, then thawed with
//!   a change of its own in flight: the stored versions are one chain 1..n;
//! - one telephony `event_id` sent to two nodes at once: applied once;
//! - `SIGTERM` on a node: its tabs see 1001 and reconnect elsewhere with their status kept.
//!
//! NATS itself failing under load is in `cluster_outage`.

use crate::common::cluster::{admin_on, first_text, read_until, until_taken, NodeProc};
use crate::common::nats::{stored_in, NatsServer};
use crate::common::process::TempDir;
use crate::common::{Client, Closed, PATIENCE};
use presence_hub::cluster::{owner_of, NodeId};
use presence_hub::model::AgentId;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Directory agents every node of a test knows.
pub(crate) const AGENTS: [&str; 12] = [
    "f1a", "f2a", "f3a", "f4a", "f5a", "f6a", "f7a", "f8a", "f9a", "f10a", "f11a", "f12a",
];

/// Node names of the child-process clusters.
const NODES: [&str; 3] = ["f1", "f2", "f3"];

/// NATS prefix of the child-process clusters.
const PREFIX: &str = "phtfault";

/// The contract's failover bound (docs/cluster.md): `kill -9` of a node until its agents
/// accept changes on their new owners.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// An agent of [`AGENTS`] owned by `owner` while `members` are live.
fn owned_by(owner: &str, members: &[&str]) -> &'static str {
    let nodes: Vec<NodeId> = members.iter().map(|n| NodeId::parse(n).unwrap()).collect();
    AGENTS
        .iter()
        .copied()
        .find(|a| owner_of(a, &nodes).map(NodeId::as_str) == Some(owner))
        .expect("every node owns one of the agents")
}

/// A NATS server and three child-process nodes on it, all ready and seeing each other.
struct Cluster {
    nats: NatsServer,
    nodes: Vec<NodeProc>,
    /// The directory file every node was started with.
    _dir: TempDir,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Option<Cluster> {
        let nats = NatsServer::start().await?;
        let dir = TempDir::new("fault-dir");
        let toml: String = AGENTS
            .iter()
            .map(|id| format!("[[agents]]\nid = \"{id}\"\n"))
            .collect();
        let file = dir.path("directory.toml");
        std::fs::write(&file, toml).unwrap();
        let file = file.display().to_string();
        let mut flags = vec!["--nats-prefix", PREFIX, "--directory", &file];
        flags.extend_from_slice(extra);
        let nodes: Vec<NodeProc> = NODES
            .iter()
            .map(|n| NodeProc::start(n, &nats.url(), &flags))
            .collect();
        for n in &nodes {
            n.until_members(&NODES).await;
        }
        Some(Cluster {
            nats,
            nodes,
            _dir: dir,
        })
    }

    /// Every change stored for `agent`: (seq, version, body).
    async fn stored(&self, agent: &str) -> Vec<(u64, u64, String)> {
        stored_in(&self.nats.url(), PREFIX, &AgentId::parse(agent).unwrap()).await
    }
}

/// The stored versions of one agent are 1, 2, ..., n in stream order: one chain, no fork.
pub(crate) fn assert_one_chain(stored: &[(u64, u64, String)]) {
    let versions: Vec<u64> = stored.iter().map(|s| s.1).collect();
    let want: Vec<u64> = (1..=versions.len() as u64).collect();
    assert_eq!(versions, want, "stored versions fork or skip");
}

/// Where the killed owner left the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    OnCall,
    WrapUp,
}

/// Sends a telephony event until it is taken (retried with the same `event_id` while the
/// agent moves); returns the reply.
async fn tel(c: &mut Client, kind: &str, call: &str, agent: &str, extra: Value) -> Value {
    let mut ev = crate::common::event(kind, call, agent);
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            ev[k] = v.clone();
        }
    }
    until_taken(c, ev).await.0
}

/// The agent's tab on the owner, telephony on f2, admins on all three nodes; the agent is
/// brought to `phase`, then the owner (f1) is killed with `kill -9`. The tab reconnects to
/// f2 within the grace, the timers fire on the new owner, nothing acknowledged is lost.
async fn kill_the_owner(phase: Phase) {
    let Some(mut cl) = Cluster::start(&["--wrap-up-secs", "6"]).await else {
        return;
    };
    let agent = owned_by("f1", &NODES);
    let mut admins = Vec::new();
    for n in &cl.nodes {
        admins.push(admin_on(n).await);
    }
    let mut phone = cl.nodes[1].telephony().await;
    let (mut tab, hello) = cl.nodes[0].tab(agent).await;
    assert_eq!(hello["agent"]["connections"], 1, "{hello}");
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let ring_ms = if phase == Phase::Ringing {
        7_000
    } else {
        60_000
    };
    let r = tel(
        &mut phone,
        "call_offered",
        "c1",
        agent,
        json!({"ring_timeout_ms": ring_ms}),
    )
    .await;
    assert_eq!(r["accepted"], true, "{r}");
    let mut acked = r["agent"].clone();
    if phase != Phase::Ringing {
        let r = tab
            .request(json!({"type": "accept_call", "call_id": "c1"}))
            .await;
        assert_eq!(r["type"], "ok", "{r}");
        acked = cl.nodes[1]
            .agent_until(agent, |s| s["version"] == r["version"])
            .await;
    }
    if phase == Phase::WrapUp {
        let r = tel(&mut phone, "call_ended", "c1", agent, json!({})).await;
        assert_eq!(r["type"], "ok", "{r}");
        acked = r["agent"].clone();
        assert_eq!(acked["status"], "wrap_up", "{acked}");
    }
    let want_status = acked["status"].as_str().unwrap().to_owned();
    let acked_version = acked["version"].as_u64().unwrap();
    // Every admin has seen every acknowledged change before the kill.
    for (i, (c, feed, _)) in admins.iter_mut().enumerate() {
        read_until(c, feed, |f| f.last_version(agent) == Some(acked_version)).await;
        feed.assert_in_order(&format!("admin on {}", NODES[i]));
    }

    let killed = Instant::now();
    cl.nodes[0].kill9();
    let (c1, feed1, epoch) = admins.remove(0);
    drop(c1);
    // The tab lost its node; it reconnects to f2 within the grace and keeps its status.
    assert_eq!(tab.closed().await, Closed::NoFrame);
    let (mut tab, hello) = cl.nodes[1].tab(agent).await;
    let moved = killed.elapsed();
    assert_eq!(hello["agent"]["status"], want_status.as_str(), "{hello}");
    assert_eq!(hello["agent"]["call"]["call_id"], "c1", "{hello}");
    assert!(
        hello["agent"]["version"].as_u64().unwrap() >= acked_version,
        "acknowledged change lost: {hello}"
    );
    // The agent accepts changes on its new owner within the bound: the tab's login was one
    // (its count); a manual status is another, except in wrap-up, which it would end
    // (row 5): there it comes after the wrap-up timer.
    let busy = json!({"type": "set_status", "status": "busy", "note": "moved"});
    let failover = if phase == Phase::WrapUp {
        moved
    } else {
        let (r, _) = until_taken(&mut tab, busy.clone()).await;
        assert_eq!(r["type"], "ok", "{r}");
        killed.elapsed()
    };
    eprintln!("{phase:?}: tab back after {moved:?}, a change accepted after {failover:?}");
    assert!(failover <= FAILOVER_BOUND, "failover took {failover:?}");

    // The admin of the dead node reconnects to f3 and resumes where it was.
    let mut feed1 = feed1;
    let last_seq = feed1
        .events
        .last()
        .map(|e| e.0)
        .expect("f1's admin saw changes");
    let mut c1 = Client::connect(&cl.nodes[2].ws("/ws/admin?admin_id=boss")).await;
    assert_eq!(c1.recv().await["type"], "hello");
    let r = c1
        .request(json!({"type": "resume", "epoch": epoch, "seq": last_seq}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    if r["recovered"] == false {
        feed1.unrecovered = true;
    }
    admins.insert(0, (c1, feed1, epoch));

    // The timer of the phase fires on the new owner.
    let final_state = match phase {
        Phase::Ringing => {
            let s = cl.nodes[2]
                .agent_until(agent, |s| s["reason"] == "ring_timeout")
                .await;
            let expires = acked["ring_expires_at"].as_u64().unwrap();
            assert!(
                s["since"].as_u64().unwrap() >= expires,
                "ring ended early: {s}"
            );
            s
        }
        Phase::OnCall => {
            let r = tel(&mut phone, "call_ended", "c1", agent, json!({})).await;
            assert_eq!(r["agent"]["status"], "wrap_up", "{r}");
            cl.nodes[2]
                .agent_until(agent, |s| s["reason"] == "wrap_up_expired")
                .await
        }
        Phase::WrapUp => {
            let expires = acked["wrap_up_expires_at"].as_u64().unwrap();
            let s = cl.nodes[2]
                .agent_until(agent, |s| s["reason"] == "wrap_up_expired")
                .await;
            assert!(
                s["since"].as_u64().unwrap() >= expires,
                "wrap-up ended early: {s}"
            );
            assert_eq!(s["status"], "available", "{s}");
            let (r, _) = until_taken(&mut tab, busy).await;
            assert_eq!(r["type"], "ok", "{r}");
            cl.nodes[2]
                .agent_until(agent, |s| s["version"] == r["version"])
                .await
        }
    };
    assert_eq!(
        final_state["status"], "busy",
        "the manual status set after the move"
    );
    let final_version = final_state["version"].as_u64().unwrap();
    // Every admin ends with every change, in order.
    for (i, (c, feed, _)) in admins.iter_mut().enumerate() {
        read_until(c, feed, |f| f.last_version(agent) == Some(final_version)).await;
        feed.assert_in_order(&format!("admin {i}"));
    }
    for n in &cl.nodes[1..] {
        let s = n
            .agent_until(agent, |s| s["version"] == final_version)
            .await;
        assert_eq!(s, final_state, "node {} serves the same state", n.name);
    }
    let stored = cl.stored(agent).await;
    assert_one_chain(&stored);
    assert_eq!(stored.len() as u64, final_version);
}

#[tokio::test]
async fn killing_the_owner_mid_ring_moves_the_agent_and_the_ring_timer_fires_on_the_new_owner() {
    kill_the_owner(Phase::Ringing).await;
}

#[tokio::test]
async fn killing_the_owner_mid_call_keeps_the_call_on_the_new_owner() {
    kill_the_owner(Phase::OnCall).await;
}

#[tokio::test]
async fn killing_the_owner_in_wrap_up_the_wrap_up_timer_fires_on_the_new_owner() {
    kill_the_owner(Phase::WrapUp).await;
}

#[tokio::test]
async fn a_frozen_owner_thawed_with_a_change_in_flight_never_forks_the_agent() {
    let Some(cl) = Cluster::start(&[]).await else {
        return;
    };
    let agent = owned_by("f1", &NODES);
    let (mut admin, mut feed, _) = admin_on(&cl.nodes[2]).await;
    let (mut tab_a, _) = cl.nodes[0].tab(agent).await;
    let (mut tab_b, _) = cl.nodes[1].tab(agent).await;
    let r = tab_a
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    // The owner stalls with a change of its own waiting in its socket.
    cl.nodes[0].signal("STOP");
    tab_a
        .send(json!({"type": "set_status", "status": "busy", "note": "frozen", "ref": 99}))
        .await;
    cl.nodes[1].until_members(&["f2", "f3"]).await;
    // The others take the agent over and change it.
    let (r, _) = until_taken(
        &mut tab_b,
        json!({"type": "set_status", "status": "on_break", "note": "taken-over"}),
    )
    .await;
    assert_eq!(r["type"], "ok", "{r}");
    // The old owner thaws: it still believes it owns the agent, and its change races.
    cl.nodes[0].signal("CONT");
    let mut acked: Vec<(u64, String)> = vec![(r["version"].as_u64().unwrap(), "taken-over".into())];
    // Its answer: ok (then it must be stored), `unavailable`, or the socket closes
    // (the node learnt its tabs were counted as closed): then a new tab on it.
    let frozen_reply = loop {
        match first_text(&mut tab_a).await {
            Some(f) if f["ref"] == 99 => break Some(f),
            Some(_) => continue,
            None => break None,
        }
    };
    match frozen_reply {
        Some(f) if f["type"] == "ok" => {
            acked.push((f["version"].as_u64().unwrap(), "frozen".into()));
        }
        Some(f) => assert_eq!(f["code"], "unavailable", "{f}"),
        None => tab_a = cl.nodes[0].tab(agent).await.0,
    }
    // Both tabs keep writing while the old owner rejoins and ownership moves back.
    for k in 0u32..10 {
        for (tab, name) in [(&mut tab_a, "a"), (&mut tab_b, "b")] {
            let note = format!("{name}-{k}");
            let (r, _) = until_taken(
                tab,
                json!({"type": "set_status", "status": if k.is_multiple_of(2) { "busy" } else { "available" }, "note": note}),
            )
            .await;
            assert_eq!(r["type"], "ok", "{r}");
            acked.push((r["version"].as_u64().unwrap(), note));
        }
    }
    let stored = cl.stored(agent).await;
    assert_one_chain(&stored);
    for (version, note) in &acked {
        let s = stored
            .iter()
            .find(|s| s.1 == *version)
            .unwrap_or_else(|| panic!("acknowledged version {version} ({note}) not stored"));
        assert!(
            s.2.contains(&format!("\"{note}\"")),
            "version {version} stored without its note {note}: {}",
            s.2
        );
    }
    let last = stored.len() as u64;
    read_until(&mut admin, &mut feed, |f| {
        f.last_version(agent) == Some(last)
    })
    .await;
    feed.assert_in_order("admin on f3");
}

#[tokio::test]
async fn one_event_id_sent_to_two_nodes_at_once_is_applied_once() {
    let Some(cl) = Cluster::start(&[]).await else {
        return;
    };
    let agent = owned_by("f3", &NODES);
    let (mut tab, _) = cl.nodes[0].tab(agent).await;
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let before = r["version"].as_u64().unwrap();
    let ev = json!({"type": "call_offered", "event_id": "dup-1", "call_id": "c1",
                    "agent_id": agent, "ref": "r"});
    let mut phone = cl.nodes[1].telephony().await;
    let (ws, http) = tokio::join!(
        until_taken(&mut phone, ev.clone()),
        cl.nodes[0].post("/api/v1/telephony/events", &ev)
    );
    let mut replies = vec![ws.0];
    let (mut status, mut body) = http;
    // A claim still pending on the other node is answered `unavailable`: retried.
    let start = Instant::now();
    while status == 503 {
        assert!(start.elapsed() < PATIENCE, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, body) = cl.nodes[0].post("/api/v1/telephony/events", &ev).await;
    }
    assert_eq!(status, 200, "{body}");
    replies.push(body);
    let dups = replies.iter().filter(|r| r["duplicate"] == true).count();
    assert_eq!(dups, 1, "exactly one is the duplicate: {replies:?}");
    // A third node, later: a duplicate too.
    let (status, body) = cl.nodes[2].post("/api/v1/telephony/events", &ev).await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    for n in &cl.nodes {
        let s = n.agent_until(agent, |s| s["status"] == "ringing").await;
        assert_eq!(s["version"], before + 1, "applied once on {}: {s}", n.name);
    }
    assert_eq!(cl.stored(agent).await.len() as u64, before + 1);
}

#[tokio::test]
async fn sigterm_hands_the_agents_over_and_tabs_reconnect_elsewhere_with_their_status() {
    let Some(mut cl) = Cluster::start(&[]).await else {
        return;
    };
    let agent = owned_by("f1", &NODES);
    let (mut admin, mut feed, _) = admin_on(&cl.nodes[2]).await;
    let (mut tab, _) = cl.nodes[0].tab(agent).await;
    let r = tab
        .request(json!({"type": "set_status", "status": "busy", "note": "kept"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    let status = cl.nodes[0].terminate().await;
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(tab.closed().await, Closed::Code(1001), "going away");
    let (mut tab, hello) = cl.nodes[1].tab(agent).await;
    assert_eq!(hello["agent"]["status"], "busy", "{hello}");
    assert_eq!(hello["agent"]["note"], "kept", "{hello}");
    assert_eq!(hello["agent"]["connections"], 1, "{hello}");
    // Handed over: the next change is taken at once, not after a failover.
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "taken at once after a clean stop: {r}");
    let v = r["version"].as_u64().unwrap();
    read_until(&mut admin, &mut feed, |f| f.last_version(agent) == Some(v)).await;
    feed.assert_in_order("admin on f3");
    assert_one_chain(&cl.stored(agent).await);
}
