//! Failover and membership changes over the public protocol, against a real nats-server:
//! `kill -9` of the owning node (a child process), a clean stop, a node joining.

use crate::cluster_route::{
    agent_owned_by, agent_tab, agent_until, first_frame, ids, node, settled, update_with, AGENTS,
};
use crate::common::nats::NatsServer;
use crate::common::process::{free_port, hub_command, TempDir};
use crate::common::{Client, Closed, TestHub, PATIENCE};
use presence_hub::cluster::{owner_of, NodeId};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    // An agent owned by A (which survives) with its only tab on C: counted there.
    let visitor = agent_owned_by("kill-a", &names);
    let (visiting, _) = agent_tab(c.addr, visitor).await;
    agent_until(a.addr, visitor, |s| s["connections"] == 1).await;
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
    // The agent A kept: its tab on C counts as closed since C's loss was detected.
    drop(visiting);
    agent_until(b.addr, visitor, |s| s["connections"] == 0).await;
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
