//! Routing across cluster nodes over the public protocol, against a real nats-server: the
//! tabs of one agent on two nodes with its owner on a third, and telephony on a node that
//! does not own the agent. The helpers here are shared with `cluster_failover.rs`.
//!
//! Ownership is rendezvous hashing over the live members, so each test picks, among a few
//! directory agents, one whose owner is the node it needs (`agent_owned_by`).

use crate::common::nats::NatsServer;
use crate::common::{settings, with_directory_agents, Client, Closed, TestHub, PATIENCE};
use presence_hub::cluster::{owner_of, NodeId};
use presence_hub::config::ClusterSettings;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Directory agents every node of a test knows.
pub(crate) const AGENTS: [&str; 12] = [
    "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
];

pub(crate) fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| NodeId::parse(n).unwrap()).collect()
}

/// An agent of [`AGENTS`] owned by `owner` when `members` are live.
pub(crate) fn agent_owned_by(owner: &str, members: &[&str]) -> &'static str {
    let nodes = ids(members);
    AGENTS
        .iter()
        .copied()
        .find(|a| owner_of(a, &nodes).map(NodeId::as_str) == Some(owner))
        .expect("some agent is owned by every node")
}

pub(crate) fn node(name: &str, nats: &NatsServer, prefix: &str) -> Settings {
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
pub(crate) async fn settled(addr: std::net::SocketAddr, members: &[&str]) {
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
pub(crate) async fn agent_until(
    addr: std::net::SocketAddr,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
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

pub(crate) async fn agent_tab(addr: std::net::SocketAddr, id: &str) -> (Client, Value) {
    let mut c = Client::connect(&format!("ws://{addr}/ws/agent?agent_id={id}")).await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
    (c, hello)
}

/// The first text frame, or `None` when the socket closes first (a login the hub could
/// not route yet).
pub(crate) async fn first_frame(c: &mut Client) -> Option<Value> {
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
pub(crate) async fn update_with(c: &mut Client, status: &str) -> Value {
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
    // Tabs on A and B again; an admin on C logs the agent out: both get `logged_out` and
    // a close (1000) from their own nodes.
    let (mut tab_a, _) = agent_tab(a.addr, agent).await;
    let (mut tab_b, hello_b) = agent_tab(b.addr, agent).await;
    assert_eq!(hello_b["agent"]["connections"], 2, "{hello_b}");
    let ok = admin
        .request(json!({"type": "logout_agent", "agent_id": agent}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    for tab in [&mut tab_a, &mut tab_b] {
        let (frames, closed) = tab.drain_until_closed().await;
        let bye: Vec<&Value> = frames
            .iter()
            .filter(|f| f["type"] == "logged_out")
            .collect();
        assert_eq!(bye.len(), 1, "{frames:?}");
        assert_eq!(bye[0]["reason"], "admin_logout", "{frames:?}");
        assert_eq!(closed, Closed::Code(1000));
    }
    agent_until(a.addr, agent, |s| s["connections"] == 0).await;
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
