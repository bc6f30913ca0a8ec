//! Cluster mode's shared pieces, against real nats-server processes and hub nodes on
//! 127.0.0.1: telephony events deduplicated cluster-wide (the same event id sent to two
//! nodes, and twenty copies at once over three nodes, are applied once) and one directory
//! (an edit on any node is seen on every node within a second; the `--directory` file
//! seeds an empty cluster only). Reports and `/metrics` are in `cluster_reports`.

use crate::common::nats::NatsServer;
use crate::common::{event, metric, metrics, settings, with_directory_agents, TestHub};
use presence_hub::cluster::{owner_of, Claim, ClusterConfig, NodeId};
use presence_hub::config::ClusterSettings;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Safety net so a broken test fails instead of hanging (not a timing assertion).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
/// The contract: an edit on one node is seen by every node within a second.
const DIRECTORY_BOUND: Duration = Duration::from_secs(1);

pub(crate) fn node(name: &str, nats: &NatsServer, directory: &[&str]) -> Settings {
    Settings {
        node_id: Some(NodeId::parse(name).unwrap()),
        cluster: Some(ClusterSettings {
            prefix: "phtdir".into(),
            ..ClusterSettings::new(vec![nats.url()])
        }),
        ..with_directory_agents(settings(), directory)
    }
}

/// Starts one node per name (each with `directory` as its file) and waits until every one
/// is ready and sees all of them.
pub(crate) async fn cluster(nats: &NatsServer, names: &[&str], directory: &[&str]) -> Vec<TestHub> {
    let mut hubs = Vec::new();
    for name in names {
        hubs.push(TestHub::with(node(name, nats, directory)).await);
    }
    for hub in &hubs {
        let start = Instant::now();
        loop {
            let (status, body) = hub.get("/healthz").await;
            if status == 200 && body["members"].as_array().map(Vec::len) == Some(names.len()) {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "never ready: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    hubs
}

pub(crate) async fn stop_all(hubs: Vec<TestHub>) {
    for hub in hubs {
        hub.stop().await;
    }
}

/// The index in `names` of the node that owns `agent` when all of `names` are members
/// (the cluster's rendezvous owner): first copies go to the owner, so these tests do not
/// depend on forwarding.
pub(crate) fn owner(agent: &str, names: &[&str]) -> usize {
    let nodes: Vec<NodeId> = names.iter().map(|n| NodeId::parse(n).unwrap()).collect();
    let o = owner_of(agent, &nodes).unwrap();
    nodes.iter().position(|n| n == o).unwrap()
}

/// Events a node applied: processed minus answered as duplicates.
async fn applied(hub: &TestHub) -> u64 {
    let text = metrics(hub).await;
    metric(&text, "presence_hub_telephony_events_total")
        - metric(&text, "presence_hub_telephony_duplicates_total")
}

/// A reply without the keys that differ between a first answer and a repeat.
fn reply_of(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("duplicate");
        o.remove("ref");
    }
    b
}

async fn send(
    hub: &TestHub,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, hub.http_url(path));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// Polls `path` on `hub` until `done` holds; returns how long it took.
pub(crate) async fn until(
    hub: &TestHub,
    path: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = hub.get(path).await;
        if done(status, &body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{path}: never got there: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cluster_dedup_the_same_event_on_two_nodes_is_applied_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["dd-a", "dd-b"];
    let hubs = cluster(&nats, &names, &["a1"]).await;
    // A is a1's owner, B the other node.
    let i = owner("a1", &names);
    let (a, b) = (&hubs[i], &hubs[1 - i]);
    let offer = event("call_offered", "c1", "a1");
    // First over node A's telephony socket.
    let mut tel = a.telephony().await;
    let first = tel.request(offer.clone()).await;
    assert_eq!(first["type"], "ok", "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    // Then the same event id over HTTP on node B: the same reply, as a duplicate.
    let (status, second) = b.post("/api/v1/telephony/events", &offer).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(reply_of(&second), reply_of(&first));
    // And again on B: answered from B's own memory now, still the same.
    let (_, third) = b.post("/api/v1/telephony/events", &offer).await;
    assert_eq!(third["duplicate"], true, "{third}");
    assert_eq!(reply_of(&third), reply_of(&first));
    assert_eq!(
        applied(a).await + applied(b).await,
        1,
        "applied once in all"
    );
    // The other way round: first on B (forwarded to the owner), then on A.
    let cancel = event("call_cancelled", "c1", "a1");
    let (status, first_b) = b.post("/api/v1/telephony/events", &cancel).await;
    assert_eq!(status, 200, "{first_b}");
    assert!(first_b.get("duplicate").is_none(), "{first_b}");
    let (_, again_a) = a.post("/api/v1/telephony/events", &cancel).await;
    assert_eq!(again_a["duplicate"], true, "{again_a}");
    assert_eq!(reply_of(&again_a), reply_of(&first_b));
    assert_eq!(applied(a).await + applied(b).await, 2, "each event once");
    // An event for an agent nobody knows is deduplicated too: the answer is stored. First
    // on the node that owns that id, then on the other one.
    let unknown = event("call_offered", "c2", "nobody");
    let j = owner("nobody", &names);
    let (status, first) = hubs[j].post("/api/v1/telephony/events", &unknown).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["reason"], "unknown_agent", "{first}");
    let mut tel = hubs[1 - j].telephony().await;
    let again = tel.request(unknown).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(reply_of(&again), reply_of(&first));
    // A long event id (256 characters, 4 bytes each in UTF-8) is a key like any other.
    let mut long = event("call_offered", "c3", "a1");
    long["event_id"] = json!("𝄞".repeat(256));
    let (status, body) = a.post("/api/v1/telephony/events", &long).await;
    assert!(status == 200 || status == 409, "{status} {body}");
    let (_, body) = b.post("/api/v1/telephony/events", &long).await;
    assert_eq!(body["duplicate"], true, "{body}");
    stop_all(hubs).await;
}

#[tokio::test]
async fn cluster_dedup_twenty_concurrent_copies_over_three_nodes_apply_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let hubs = cluster(&nats, &["cc-a", "cc-b", "cc-c"], &["a1"]).await;
    let offer = event("call_offered", "c1", "a1");
    let copies = (0..20).map(|i| hubs[i % hubs.len()].post("/api/v1/telephony/events", &offer));
    let answers = futures::future::join_all(copies).await;
    let mut firsts = Vec::new();
    let mut replies = Vec::new();
    for (i, (status, body)) in answers.into_iter().enumerate() {
        let (status, body) = if status == 503 {
            // Another copy was being applied: retryable. Retry until it is answered.
            assert_eq!(body["code"], "unavailable", "{body}");
            assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
            // As an adapter would: on this node or another (a copy that reaches a node
            // which neither owns the agent nor can forward is `unavailable` too).
            let start = Instant::now();
            let mut k = i;
            loop {
                k += 1;
                let hub = &hubs[k % hubs.len()];
                let (s, b) = hub.post("/api/v1/telephony/events", &offer).await;
                if s != 503 {
                    break (s, b);
                }
                assert!(start.elapsed() < PATIENCE, "still unavailable: {b}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            (status, body)
        };
        assert_eq!(status, 200, "{body}");
        if body.get("duplicate").is_none() {
            firsts.push(body.clone());
        }
        replies.push(reply_of(&body));
    }
    assert_eq!(firsts.len(), 1, "exactly one copy applied: {firsts:?}");
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
    let mut total = 0;
    for hub in &hubs {
        total += applied(hub).await;
    }
    assert_eq!(total, 1, "applied once over all nodes");
    stop_all(hubs).await;
}

#[tokio::test]
async fn cluster_directory_an_edit_on_one_node_is_seen_on_every_node_within_a_second() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["di-a", "di-b", "di-c"];
    let hubs = cluster(&nats, &names, &["a1"]).await;
    let put = reqwest::Method::PUT;
    let delete = reqwest::Method::DELETE;
    // Create on A: every node serves it within a second.
    let body = r#"{"name":"Nina","teams":["sales"],"ring_groups":["line"]}"#;
    let (status, created) = send(
        &hubs[0],
        put.clone(),
        "/api/v1/directory/agents/a9",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    for hub in &hubs {
        let took = until(hub, "/api/v1/directory/agents/a9", |s, b| {
            s == 200 && b["name"] == "Nina"
        })
        .await;
        assert!(took < DIRECTORY_BOUND, "seen after {took:?}");
    }
    // The agent is known to its owner's router, which did not create it: an offer there is
    // answered for the agent (offline: not accepted), not as for an unknown agent.
    let (status, reply) = hubs[owner("a9", &names)]
        .post(
            "/api/v1/telephony/events",
            &event("call_offered", "c1", "a9"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_ne!(reply["reason"], "unknown_agent", "{reply}");
    // Replace it on B (200): the new name everywhere.
    let (status, _) = send(
        &hubs[1],
        put.clone(),
        "/api/v1/directory/agents/a9",
        Some(r#"{"name":"Nina B"}"#),
    )
    .await;
    assert_eq!(status, 200);
    for hub in &hubs {
        let took = until(hub, "/api/v1/directory/agents/a9", |s, b| {
            s == 200 && b["name"] == "Nina B"
        })
        .await;
        assert!(took < DIRECTORY_BOUND, "seen after {took:?}");
    }
    // A ring group made on C drives /available on A.
    let (status, _) = send(
        &hubs[2],
        put.clone(),
        "/api/v1/ring-groups/line",
        Some(r#"{"ring_timeout_seconds":12,"members":["a1"]}"#),
    )
    .await;
    assert_eq!(status, 201);
    for hub in &hubs {
        let took = until(hub, "/api/v1/ring-groups/line", |s, b| {
            s == 200 && b["ring_timeout_seconds"] == 12
        })
        .await;
        assert!(took < DIRECTORY_BOUND, "seen after {took:?}");
    }
    // Validated as on a single node: a bad body is a 400 and nothing is stored.
    let (status, bad) = send(
        &hubs[1],
        put.clone(),
        "/api/v1/directory/agents/a8",
        Some(r#"{"wrap_up_seconds":999999}"#),
    )
    .await;
    assert_eq!(
        (status, &bad["code"]),
        (400, &json!("bad_message")),
        "{bad}"
    );
    let (status, _) = send(
        &hubs[1],
        put,
        "/api/v1/ring-groups/bad",
        Some(r#"{"ring_timeout_seconds":0}"#),
    )
    .await;
    assert_eq!(status, 400);
    // Deleted on C: gone everywhere within a second; a second delete is a 404.
    let (status, _) = send(
        &hubs[2],
        delete.clone(),
        "/api/v1/directory/agents/a9",
        None,
    )
    .await;
    assert_eq!(status, 204);
    for hub in &hubs {
        let took = until(hub, "/api/v1/directory/agents/a9", |s, _| s == 404).await;
        assert!(took < DIRECTORY_BOUND, "gone after {took:?}");
    }
    let (status, _) = send(
        &hubs[0],
        delete.clone(),
        "/api/v1/directory/agents/a9",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(&hubs[0], delete, "/api/v1/ring-groups/line", None).await;
    assert_eq!(status, 204);
    until(&hubs[1], "/api/v1/ring-groups/line", |s, _| s == 404).await;
    // Every node lists the same directory.
    let (_, list) = hubs[0].get("/api/v1/directory/agents").await;
    for hub in &hubs[1..] {
        assert_eq!(hub.get("/api/v1/directory/agents").await.1, list);
    }
    assert_eq!(list["agents"].as_array().map(Vec::len), Some(1), "{list}");
    stop_all(hubs).await;
}

#[tokio::test]
async fn cluster_directory_the_file_seeds_an_empty_cluster_only() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let first = cluster(&nats, &["sd-a"], &["a1", "a2"]).await;
    // A later node with another file uses the cluster's directory.
    let later = TestHub::with(node("sd-b", &nats, &["b1"])).await;
    until(&later, "/healthz", |s, _| s == 200).await;
    for hub in [&first[0], &later] {
        let (_, list) = hub.get("/api/v1/directory/agents").await;
        let ids: Vec<&str> = list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a1", "a2"], "{list}");
    }
    // Even when every entry was deleted, a restart does not seed again.
    for id in ["a1", "a2"] {
        let path = format!("/api/v1/directory/agents/{id}");
        let (status, _) = send(&later, reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 204);
    }
    stop_all(first).await;
    later.stop().await;
    let again = cluster(&nats, &["sd-c"], &["a1", "a2"]).await;
    let (_, list) = again[0].get("/api/v1/directory/agents").await;
    assert_eq!(list, json!({"agents": []}));
    stop_all(again).await;
}

#[tokio::test]
async fn cluster_dedup_a_claim_left_pending_by_a_node_that_is_gone_is_taken_over() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["po-a", "po-b"];
    let hubs = cluster(&nats, &names, &["a1"]).await;
    let a = &hubs[owner("a1", &names)];
    // Claims made straight on the backplane, as a node would before applying an event:
    // one by a node that never joined (it died right after its claim), one by a live
    // member (it is still applying the event).
    let claimer = |node: &str| {
        let cfg = ClusterConfig::new(vec![nats.url()], NodeId::parse(node).unwrap(), "phtdir", 1)
            .unwrap();
        crate::common::nats::node(cfg, PATIENCE)
    };
    let (ghost, _g) = claimer("po-ghost").await;
    let (live, _l) = claimer(names[0]).await;
    let orphan = event("call_offered", "c1", "a1");
    let busy = event("call_offered", "c2", "a1");
    for (bp, e) in [(&ghost, &orphan), (&live, &busy)] {
        let id = e["event_id"].as_str().unwrap();
        assert!(matches!(bp.dedup_claim(id).await.unwrap(), Claim::New(_)));
    }
    // The live member's claim is in flight: retryable, not applied.
    let (status, body) = a.post("/api/v1/telephony/events", &busy).await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    // The ghost's claim is taken over: the event is applied once, then a duplicate.
    let (status, first) = a.post("/api/v1/telephony/events", &orphan).await;
    assert_eq!(status, 200, "{first}");
    // Answered by a1's actor (offline: not accepted), not as in flight.
    assert_eq!(first["reason"], "not_available", "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    let (_, again) = hubs[1 - owner("a1", &names)]
        .post("/api/v1/telephony/events", &orphan)
        .await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(reply_of(&again), reply_of(&first));
    assert_eq!(applied(&hubs[0]).await + applied(&hubs[1]).await, 1);
    stop_all(hubs).await;
}

#[tokio::test]
async fn cluster_directory_edits_reach_the_agent_on_its_owner_and_every_view() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["pf-a", "pf-b"];
    let hubs = cluster(&nats, &names, &["a1"]).await;
    let o = owner("a1", &names);
    let (mut tab, _) = hubs[o].agent("a1").await;
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    // Edited on the node that does not own a1: its actor on the owner takes the new name
    // and teams, and every node's view shows them with the status kept.
    let body = r#"{"name":"Ada","teams":["sales"]}"#;
    let (status, _) = send(
        &hubs[1 - o],
        reqwest::Method::PUT,
        "/api/v1/directory/agents/a1",
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    for hub in &hubs {
        until(hub, "/api/v1/agents/a1", |s, b| {
            s == 200 && b["name"] == "Ada" && b["teams"] == json!(["sales"])
        })
        .await;
        assert_eq!(hub.agent_state("a1").await["status"], "available");
    }
    // A new directory agent is listed (offline) on every node; deleted, it leaves the
    // directory everywhere and its name is cleared (as on a single node: its state and
    // history stay; an agent nothing was ever stored for is not listed any more).
    let (status, _) = send(
        &hubs[0],
        reqwest::Method::PUT,
        "/api/v1/directory/agents/n5",
        Some(r#"{"name":"New"}"#),
    )
    .await;
    assert_eq!(status, 201);
    for hub in &hubs {
        until(hub, "/api/v1/agents/n5", |s, b| {
            s == 200 && b["status"] == "offline"
        })
        .await;
    }
    let (status, _) = send(
        &hubs[1],
        reqwest::Method::DELETE,
        "/api/v1/directory/agents/n5",
        None,
    )
    .await;
    assert_eq!(status, 204);
    for hub in &hubs {
        until(hub, "/api/v1/directory/agents/n5", |s, _| s == 404).await;
        until(hub, "/api/v1/agents/n5", |s, b| {
            s == 404 || (s == 200 && b["name"].is_null())
        })
        .await;
    }
    tab.close().await;
    stop_all(hubs).await;
}
