//! A hub node in cluster mode (`--nats`) against real nats-server processes: it
//! joins the members and reports them on `/healthz` and `/metrics`, is not ready while NATS
//! is unreachable and then answers changes and reads `unavailable` (open sockets stay
//! open; a new tab's login, itself a change, is refused), catches up by itself when NATS
//! is back, and leaves the members when it stops cleanly.

use crate::common::nats::NatsServer;
use crate::common::{settings, with_directory_agents, TestHub};
use presence_hub::cluster::NodeId;
use presence_hub::config::ClusterSettings;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Safety net so a broken test fails instead of hanging (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(15);

fn node(name: &str, servers: Vec<String>) -> Settings {
    Settings {
        node_id: Some(NodeId::parse(name).unwrap()),
        cluster: Some(ClusterSettings {
            prefix: "phtnode".into(),
            ..ClusterSettings::new(servers)
        }),
        ..with_directory_agents(settings(), &["a1"])
    }
}

/// Polls `/healthz` until `done` holds for (status, body); returns the last answer.
async fn health_until(hub: &TestHub, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let (status, body) = hub.get("/healthz").await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(
            start.elapsed() < PATIENCE,
            "healthz never got there: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn members(body: &Value) -> Vec<&str> {
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn nodes_join_report_members_and_leave_cleanly() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = TestHub::with(node("node-a", vec![nats.url()])).await;
    let b = TestHub::with(node("node-b", vec![nats.url()])).await;
    let (status, body) = health_until(&a, |_, b| members(b) == ["node-a", "node-b"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "cluster");
    assert_eq!(body["node"], "node-a");
    assert_eq!(body["ready"], true);
    assert!(body["reason"].is_null(), "{body}");
    let (_, body) = health_until(&b, |_, b| members(b) == ["node-a", "node-b"]).await;
    assert_eq!(body["ready"], true, "{body}");
    let text = crate::common::metrics(&a).await;
    assert_eq!(
        crate::common::metric(&text, "presence_hub_cluster_members"),
        2
    );
    assert_eq!(
        crate::common::metric(&text, "presence_hub_cluster_ready"),
        1
    );
    // A ready node takes changes of the agents it owns (stored in the agents stream).
    let nodes = [
        NodeId::parse("node-a").unwrap(),
        NodeId::parse("node-b").unwrap(),
    ];
    let owner = presence_hub::cluster::owner_of("a1", &nodes)
        .unwrap()
        .clone();
    let on = if owner.as_str() == "node-a" { &a } else { &b };
    let (mut tab, hello) = on.agent("a1").await;
    assert_eq!(hello["node"], owner.as_str());
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    // A clean stop deletes the member key: the other node sees it go within a heartbeat
    // (1 s), not after the member TTL (3 s).
    a.stop().await;
    let stopped = Instant::now();
    let (_, body) = health_until(&b, |_, b| members(b) == ["node-b"]).await;
    assert!(
        stopped.elapsed() < Duration::from_millis(2500),
        "left after {:?}: {body}",
        stopped.elapsed()
    );
    b.stop().await;
}

#[tokio::test]
async fn without_nats_the_node_is_not_ready_and_answers_changes_unavailable() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", dead.local_addr().unwrap());
    drop(dead);
    let hub = TestHub::with(node("lonely", vec![url])).await;
    let (status, body) = hub.get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["mode"], "cluster");
    assert_eq!(body["ready"], false);
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    // A tab cannot log in (its opening cannot be counted at the agent's owner): it is told
    // `unavailable` (retryable) and closed with 1013, "try again later".
    let mut tab = crate::common::Client::connect(&hub.ws_url("/ws/agent?agent_id=a1")).await;
    let (frames, closed) = tab.drain_until_closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
    assert_eq!(frames[0]["code"], "unavailable", "{frames:?}");
    assert_eq!(frames[0]["retry_after_ms"], 500, "{frames:?}");
    assert_eq!(closed, crate::common::Closed::Code(1013));
    // A read cannot be sure to reflect every stored change: 503 `unavailable`.
    let (status, r) = hub.get("/api/v1/agents").await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["code"], "unavailable", "{r}");
    assert_eq!(r["retry_after_ms"], 500, "{r}");
    // An admin action: refused, retryable.
    let mut admin = crate::common::Client::connect(&hub.ws_url("/ws/admin?admin_id=boss")).await;
    assert_eq!(admin.recv().await["type"], "hello");
    let r = admin
        .request(json!({"type": "set_agent_status", "agent_id": "a1", "status": "busy"}))
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    // A telephony event over HTTP: 503 with the same body.
    let (status, r) = hub
        .post(
            "/api/v1/telephony/events",
            &json!({"type": "call_offered", "ref": "r1", "event_id": "e1",
                    "call_id": "c1", "agent_id": "a1"}),
        )
        .await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["code"], "unavailable", "{r}");
    assert_eq!(r["ref"], "r1", "{r}");
    // Over the telephony socket as well.
    let mut phone = hub.telephony().await;
    let r = phone
        .request(
            json!({"type": "call_offered", "event_id": "e2", "call_id": "c2",
                        "agent_id": "a1"}),
        )
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn a_nats_restart_makes_the_node_unready_then_ready_again_by_itself() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let hub = TestHub::with(node("phoenix", vec![nats.url()])).await;
    health_until(&hub, |s, _| s == 200).await;
    let (mut tab, _) = hub.agent("a1").await;
    nats.kill9().await;
    let (_, body) = health_until(&hub, |s, _| s == 503).await;
    assert_eq!(body["ready"], false);
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    nats.restart().await;
    let (_, body) = health_until(&hub, |s, _| s == 200).await;
    assert_eq!(members(&body), ["phoenix"], "{body}");
    // The same socket: the retry is taken now.
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    hub.stop().await;
}

#[test]
fn cluster_flags_are_parsed_and_checked() {
    use clap::Parser;
    use presence_hub::Cli;
    let parse = |args: &[&str]| {
        let mut all = vec!["presence-hub"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").settings()
    };
    let s = parse(&[
        "--nats",
        "nats://n1:4222, nats://n2:4222",
        "--nats-replicas",
        "3",
        "--nats-prefix",
        "blue",
    ])
    .expect("valid");
    let c = s.cluster.expect("cluster mode");
    assert_eq!(c.servers, ["nats://n1:4222", "nats://n2:4222"]);
    assert_eq!(c.replicas, 3);
    assert_eq!(c.prefix, "blue");
    let c = parse(&["--nats", "nats://n1:4222"])
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!((c.replicas, c.prefix.as_str()), (1, "presence"));
    assert!(
        parse(&[]).unwrap().cluster.is_none(),
        "no --nats: single node"
    );
    let e = parse(&["--nats", "nats://n1:4222", "--nats-replicas", "0"]).unwrap_err();
    assert!(e.to_string().contains("--nats-replicas"), "{e}");
    let e = parse(&["--nats", "nats://n1:4222", "--nats-prefix", "a.b"]).unwrap_err();
    assert!(e.to_string().contains("--nats-prefix"), "{e}");
}
