//! Routing across cluster nodes over the public protocol, against a real nats-server: the
//! tabs of one agent on two nodes with its owner on a third, telephony on a node that does
//! not own the agent, `kill -9` of the owning node (a child process) and a clean stop.
//!
//! Ownership is rendezvous hashing over the live members, so each test picks, among a few
//! directory agents, one whose owner is the node it needs (`agent_owned_by`).

use crate::common::nats::NatsServer;
use crate::common::process::{free_port, hub_command, TempDir};
use crate::common::{settings, with_directory_agents, Client, Closed, TestHub, PATIENCE};
use presence_hub::cluster::{owner_of, NodeId};
use presence_hub::config::ClusterSettings;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Directory agents every node of a test knows.
const AGENTS: [&str; 12] = [
    "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
];

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| NodeId::parse(n).unwrap()).collect()
}

/// An agent of [`AGENTS`] owned by `owner` when `members` are live.
fn agent_owned_by(owner: &str, members: &[&str]) -> &'static str {
    let nodes = ids(members);
    AGENTS
        .iter()
        .copied()
        .find(|a| owner_of(a, &nodes).map(NodeId::as_str) == Some(owner))
        .expect("some agent is owned by every node")
}

fn node(name: &str, nats: &NatsServer, prefix: &str) -> Settings {
    Settings {
        node_id: Some(NodeId::parse(name).unwrap()),
        cluster: Some(ClusterSettings {
            prefix: prefix.into(),
            ..ClusterSettings::new(vec![nats.url()])
        }),
        ..with_directory_agents(settings(), &AGENTS)
    }
}

/// Polls `/healthz` until the node is ready and sees exactly `members`.
async fn settled(addr: std::net::SocketAddr, members: &[&str]) {
    let start = Instant::now();
    loop {
        if let Ok(resp) = reqwest::get(format!("http://{addr}/healthz")).await {
            let ok = resp.status().as_u16() == 200;
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let seen: Vec<&str> = body["members"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if ok && seen == members {
                return;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "node {addr} never saw {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls an agent's state on a node until `done` holds; returns it.
async fn agent_until(addr: std::net::SocketAddr, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Ok(resp) = reqwest::get(format!("http://{addr}/api/v1/agents/{id}")).await {
            if resp.status().as_u16() == 200 {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if done(&body) {
                    return body;
                }
                assert!(
                    start.elapsed() < PATIENCE,
                    "agent {id} on {addr} never got there: {body}"
                );
            }
        }
        assert!(start.elapsed() < PATIENCE, "agent {id} on {addr} not found");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn agent_tab(addr: std::net::SocketAddr, id: &str) -> (Client, Value) {
    let mut c = Client::connect(&format!("ws://{addr}/ws/agent?agent_id={id}")).await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
    (c, hello)
}

/// The first text frame, or `None` when the socket closes first (a login the hub could
/// not route yet).
async fn first_frame(c: &mut Client) -> Option<Value> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(PATIENCE, c.ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The next `agent` update with `status`, skipping others.
async fn update_with(c: &mut Client, status: &str) -> Value {
    loop {
        let u = c.update().await;
        if u["agent"]["status"] == status {
            return u;
        }
    }
}

#[tokio::test]
async fn tabs_on_two_nodes_with_the_owner_on_a_third() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["route-a", "route-b", "route-c"];
    let a = TestHub::with(node("route-a", &nats, "phtroute1")).await;
    let b = TestHub::with(node("route-b", &nats, "phtroute1")).await;
    let c = TestHub::with(node("route-c", &nats, "phtroute1")).await;
    for hub in [&a, &b, &c] {
        settled(hub.addr, &names).await;
    }
    let agent = agent_owned_by("route-c", &names);
    let (mut admin, _) = c.admin("boss").await;

    // A tab on A, then one on B: both counted at the owner (C).
    let (mut tab_a, hello_a) = agent_tab(a.addr, agent).await;
    assert_eq!(hello_a["node"], "route-a", "{hello_a}");
    assert_eq!(hello_a["agent"]["connections"], 1, "{hello_a}");
    let (mut tab_b, hello_b) = agent_tab(b.addr, agent).await;
    assert_eq!(hello_b["node"], "route-b", "{hello_b}");
    assert_eq!(hello_b["agent"]["connections"], 2, "{hello_b}");
    for hub in [&a, &b, &c] {
        agent_until(hub.addr, agent, |s| s["connections"] == 2).await;
    }

    // A change from the tab on A: acked, seen by both tabs and the admin on C.
    let ok = tab_a
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let ua = update_with(&mut tab_a, "available").await;
    let ub = update_with(&mut tab_b, "available").await;
    assert_eq!(ua["seq"], ub["seq"], "one change, one seq: {ua} {ub}");
    let seen = loop {
        let u = admin.update().await;
        if u["agent"]["agent_id"] == agent && u["agent"]["status"] == "available" {
            break u;
        }
    };
    assert_eq!(seen["seq"], ua["seq"]);

    // A change from the tab on B: the same, the other way round.
    let ok = tab_b
        .request(json!({"type": "set_status", "status": "on_break"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    update_with(&mut tab_b, "on_break").await;
    update_with(&mut tab_a, "on_break").await;
    loop {
        let u = admin.update().await;
        if u["agent"]["agent_id"] == agent && u["agent"]["status"] == "on_break" {
            break;
        }
    }

    // An admin on C (the owner) sets it busy: both remote tabs get it.
    let ok = admin
        .request(json!({"type": "set_agent_status", "agent_id": agent, "status": "busy"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    update_with(&mut tab_a, "busy").await;
    update_with(&mut tab_b, "busy").await;

    // The tab on B closes: one tab left, counted everywhere.
    tab_b.close().await;
    for hub in [&a, &b, &c] {
        agent_until(hub.addr, agent, |s| s["connections"] == 1).await;
    }
    // The tab on A logs out: ok, logged_out, closed; the agent is logged out everywhere.
    let ok = tab_a.request(json!({"type": "logout"})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (frames, closed) = tab_a.drain_until_closed().await;
    assert!(
        frames.iter().filter(|f| f["type"] == "logged_out").count() == 1,
        "one logged_out: {frames:?}"
    );
    assert_eq!(closed, Closed::Code(1000));
    for hub in [&a, &b, &c] {
        agent_until(hub.addr, agent, |s| {
            s["connections"] == 0 && s["status"] == "offline"
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn telephony_on_a_non_owner_rings_a_tab_on_another_node() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["tel-a", "tel-b", "tel-c"];
    let a = TestHub::with(node("tel-a", &nats, "phtroute2")).await;
    let b = TestHub::with(node("tel-b", &nats, "phtroute2")).await;
    let c = TestHub::with(node("tel-c", &nats, "phtroute2")).await;
    for hub in [&a, &b, &c] {
        settled(hub.addr, &names).await;
    }
    // Owner C, tab on A, telephony on B.
    let agent = agent_owned_by("tel-c", &names);
    let (mut tab, _) = agent_tab(a.addr, agent).await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let mut phone = b.telephony().await;
    let offer = json!({"type": "call_offered", "event_id": "ev-1", "call_id": "call-1",
                       "agent_id": agent, "from": "+15550001"});
    let reply = phone.request(offer.clone()).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert_eq!(reply["accepted"], true, "{reply}");
    assert_eq!(reply["agent"]["status"], "ringing", "{reply}");
    // The tab on A rings.
    let offered = tab.recv_type("call_offered").await;
    assert_eq!(offered["call"]["call_id"], "call-1", "{offered}");
    // The same event again on B: the owner's stored reply, marked duplicate.
    let again = phone.request(offer).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["agent"], reply["agent"], "{again}");
    // The tab accepts: the call is on, seen on every node, and the adapter on B (neither
    // the tab's node nor the owner) is told `call_accepted`, once.
    let ok = tab
        .request(json!({"type": "accept_call", "call_id": "call-1"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let accepted = phone.recv_type("call_accepted").await;
    assert_eq!(accepted["call_id"], "call-1", "{accepted}");
    assert_eq!(accepted["agent_id"], agent, "{accepted}");
    for hub in [&a, &b, &c] {
        agent_until(hub.addr, agent, |s| s["status"] == "on_call").await;
    }
    phone.expect_quiet().await;
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// A hub node in a child process, so it can be killed with SIGKILL.
struct ChildNode {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl ChildNode {
    async fn start(name: &str, nats: &NatsServer, prefix: &str, extra: &[&str]) -> ChildNode {
        let dir = TempDir::new("cluster-route");
        let directory: String = AGENTS
            .iter()
            .map(|id| format!("[[agents]]\nid = \"{id}\"\n"))
            .collect();
        std::fs::write(dir.path("directory.toml"), directory).unwrap();
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = tokio::process::Command::from(hub_command());
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--nats")
            .arg(nats.url())
            .arg("--node-id")
            .arg(name)
            .arg("--nats-prefix")
            .arg(prefix)
            .arg("--database")
            .arg(dir.path("hub.db"))
            .arg("--directory")
            .arg(dir.path("directory.toml"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start the hub binary");
        ChildNode {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `kill -9`: no goodbye.
    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }
}

#[tokio::test]
async fn kill9_of_the_owner_moves_its_agents_timers_fire_and_tabs_keep_their_status() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["kill-a", "kill-b", "kill-c"];
    let a = TestHub::with(node("kill-a", &nats, "phtroute3")).await;
    let b = TestHub::with(node("kill-b", &nats, "phtroute3")).await;
    let c = ChildNode::start("kill-c", &nats, "phtroute3", &[]).await;
    for addr in [a.addr, b.addr, c.addr] {
        settled(addr, &names).await;
    }
    // Two agents owned by C: one rings (its tab on A), one is on break with its only tab
    // on C (which dies with it).
    let ringing = agent_owned_by("kill-c", &names);
    let nodes = ids(&names);
    let on_break = AGENTS
        .iter()
        .copied()
        .find(|x| *x != ringing && owner_of(x, &nodes).map(NodeId::as_str) == Some("kill-c"))
        .unwrap();
    let (mut tab, _) = agent_tab(a.addr, ringing).await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let (mut doomed, _) = agent_tab(c.addr, on_break).await;
    let ok = doomed
        .request(json!({"type": "set_status", "status": "on_break"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let mut phone = b.telephony().await;
    let reply = phone
        .request(
            json!({"type": "call_offered", "event_id": "k-1", "call_id": "kc-1",
                        "agent_id": ringing, "ring_timeout_ms": 6000}),
        )
        .await;
    assert_eq!(reply["agent"]["status"], "ringing", "{reply}");
    tab.recv_type("call_offered").await;

    // kill -9 of the owner.
    c.kill9().await;
    let killed = Instant::now();
    drop(doomed);

    // Its agents accept changes on a new owner: an admin on B sets the on-break agent busy
    // until it is acknowledged (answered `unavailable` meanwhile, never lost).
    let (mut admin, _) = b.admin("boss").await;
    let failover = loop {
        let r = admin
            .request(json!({"type": "set_agent_status", "agent_id": on_break, "status": "busy"}))
            .await;
        if r["type"] == "ok" {
            break killed.elapsed();
        }
        assert_eq!(r["code"], "unavailable", "{r}");
        assert!(killed.elapsed() < PATIENCE, "never taken over: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("failover after kill -9: {failover:?}");
    assert!(
        failover <= Duration::from_secs(5),
        "the contract's bound is 5 s, took {failover:?}"
    );
    // The ring timer fires on the new owner (6 s after the offer): the tab sees it.
    let timed_out = loop {
        let u = tab.update().await;
        if u["agent"]["reason"] == "ring_timeout" {
            break u;
        }
    };
    assert_ne!(timed_out["agent"]["status"], "ringing", "{timed_out}");
    // The tab that was on C counts as closed since the loss was detected; reconnecting to
    // A within the grace keeps the agent's status.
    agent_until(a.addr, on_break, |s| s["connections"] == 0).await;
    let (_back, hello) = agent_tab(a.addr, on_break).await;
    assert_eq!(hello["agent"]["status"], "busy", "status kept: {hello}");
    assert_eq!(hello["agent"]["connections"], 1, "{hello}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_clean_stop_closes_tabs_with_1001_and_they_reconnect_elsewhere_keeping_status() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["stop-a", "stop-b"];
    let a = TestHub::with(node("stop-a", &nats, "phtroute4")).await;
    let b = TestHub::with(node("stop-b", &nats, "phtroute4")).await;
    for hub in [&a, &b] {
        settled(hub.addr, &names).await;
    }
    // One agent owned by the node that stops, its tab there; one owned by the other node
    // with its tab on the node that stops.
    let owned = agent_owned_by("stop-a", &names);
    let visiting = agent_owned_by("stop-b", &names);
    let (mut t1, _) = a.agent(owned).await;
    let (mut t2, _) = a.agent(visiting).await;
    for (t, status) in [(&mut t1, "on_break"), (&mut t2, "busy")] {
        let ok = t
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let stopping = tokio::spawn(a.stop());
    assert_eq!(t1.closed().await, Closed::Code(1001));
    assert_eq!(t2.closed().await, Closed::Code(1001));
    // They reconnect to B: the status is kept (within the grace), the tab counted once.
    let mut back = Vec::new();
    for (id, status) in [(owned, "on_break"), (visiting, "busy")] {
        let start = Instant::now();
        let hello = loop {
            let mut c = Client::connect(&b.ws_url(&format!("/ws/agent?agent_id={id}"))).await;
            if let Some(first) = first_frame(&mut c).await {
                if first["type"] == "hello" {
                    back.push(c);
                    break first;
                }
            }
            assert!(start.elapsed() < PATIENCE, "never logged in again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(hello["agent"]["status"], status, "{hello}");
        assert_eq!(hello["agent"]["connections"], 1, "{hello}");
    }
    stopping.await.unwrap();
    settled(b.addr, &["stop-b"]).await;
    agent_until(b.addr, owned, |s| {
        s["connections"] == 1 && s["status"] == "on_break"
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn a_joining_node_takes_its_agents_over_and_tabs_elsewhere_keep_working() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let two = ["join-a", "join-b"];
    let three = ["join-a", "join-b", "join-c"];
    // An agent owned by B while two nodes are up, by C once C joins; its tab is on A.
    let (n2, n3) = (ids(&two), ids(&three));
    let agent = AGENTS
        .iter()
        .copied()
        .find(|x| {
            owner_of(x, &n2).map(NodeId::as_str) == Some("join-b")
                && owner_of(x, &n3).map(NodeId::as_str) == Some("join-c")
        })
        .expect("an agent that moves from B to C");
    let a = TestHub::with(node("join-a", &nats, "phtroute5")).await;
    let b = TestHub::with(node("join-b", &nats, "phtroute5")).await;
    for hub in [&a, &b] {
        settled(hub.addr, &two).await;
    }
    let (mut tab, _) = agent_tab(a.addr, agent).await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let c = TestHub::with(node("join-c", &nats, "phtroute5")).await;
    for hub in [&a, &b, &c] {
        settled(hub.addr, &three).await;
    }
    // The tab's next change goes to the new owner: acked (a retry may be asked for while
    // the views settle), seen on every node, the tab still counted once.
    let start = Instant::now();
    loop {
        let r = tab
            .request(json!({"type": "set_status", "status": "busy"}))
            .await;
        if r["type"] == "ok" {
            break;
        }
        assert_eq!(r["code"], "unavailable", "{r}");
        assert!(start.elapsed() < PATIENCE, "never acked: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    update_with(&mut tab, "busy").await;
    for hub in [&a, &b, &c] {
        agent_until(hub.addr, agent, |s| {
            s["status"] == "busy" && s["connections"] == 1
        })
        .await;
    }
    // B no longer runs the agent's actor; C does.
    let actors = |text: &str| crate::common::metric(text, "presence_hub_agent_actors");
    let on_b = actors(&crate::common::metrics(&b).await);
    let on_c = actors(&crate::common::metrics(&c).await);
    assert_eq!((on_b, on_c), (0, 1), "actors on B and C");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}
