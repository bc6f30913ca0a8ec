//! Reports and `/metrics` of cluster nodes, against real nats-server processes and hub
//! nodes on 127.0.0.1: history and the status-time report answered by a node that does not
//! own the agent, and the cluster figures (agents owned, appends, stream lag, ownership
//! moves).

use crate::cluster_dir::{cluster, owner, stop_all, PATIENCE};
use crate::common::nats::NatsServer;
use crate::common::{metric, metrics, settings, TestHub};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn cluster_metrics_show_agents_owned_backplane_counters_lag_and_ownership_moves() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let ids: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut hubs = cluster(&nats, &["mx-a", "mx-b"], &ids).await;
    // Every directory agent is owned by exactly one node, and both own some.
    let owned = |text: &str| metric(text, "presence_hub_cluster_agents_owned");
    let start = Instant::now();
    let (a_text, b_text) = loop {
        let a_text = metrics(&hubs[0]).await;
        let b_text = metrics(&hubs[1]).await;
        if owned(&a_text) + owned(&b_text) == 20 {
            break (a_text, b_text);
        }
        assert!(start.elapsed() < PATIENCE, "{a_text}\n{b_text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let b_owned = owned(&b_text);
    assert!(owned(&a_text) > 0 && b_owned > 0, "{a_text}");
    for sample in [
        "presence_hub_cluster_appends_total{outcome=\"acked\"}",
        "presence_hub_cluster_appends_total{outcome=\"fenced\"}",
        "presence_hub_cluster_appends_total{outcome=\"unavailable\"}",
        "presence_hub_cluster_append_conflicts_total",
        "presence_hub_cluster_forwarded_commands_total{outcome=\"answered\"}",
        "presence_hub_cluster_forwarded_commands_total{outcome=\"unavailable\"}",
        "presence_hub_cluster_ownership_moves_total{direction=\"gained\"}",
        "presence_hub_cluster_ownership_moves_total{direction=\"lost\"}",
        "presence_hub_cluster_stream_lag",
    ] {
        metric(&a_text, sample);
    }
    // A change on its owner is an acknowledged append there, and both views catch up.
    let names = ["mx-a", "mx-b"];
    let o = owner("m0", &names);
    let acked = "presence_hub_cluster_appends_total{outcome=\"acked\"}";
    let acked_before = metric(&metrics(&hubs[o]).await, acked);
    let (mut tab, _) = hubs[o].agent("m0").await;
    let r = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(r["type"], "ok", "{r}");
    assert!(metric(&metrics(&hubs[o]).await, acked) > acked_before);
    for hub in &hubs {
        let start = Instant::now();
        while metric(&metrics(hub).await, "presence_hub_cluster_stream_lag") != 0 {
            assert!(start.elapsed() < PATIENCE, "the view never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tab.close().await;
    // An event sent to the node that does not own m0 is forwarded to its owner: counted
    // there as a forwarded command answered.
    let forwarded = "presence_hub_cluster_forwarded_commands_total{outcome=\"answered\"}";
    let other = &hubs[1 - o];
    let before = metric(&metrics(other).await, forwarded);
    let (status, reply) = other
        .post(
            "/api/v1/telephony/events",
            &crate::common::event("call_offered", "c1", "m0"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(metric(&metrics(other).await, forwarded) > before);
    // B stops: A takes its agents over, and counts each as gained.
    let gained = |text: &str| {
        metric(
            text,
            "presence_hub_cluster_ownership_moves_total{direction=\"gained\"}",
        )
    };
    let gained_before = gained(&a_text);
    hubs.pop().unwrap().stop().await;
    let start = Instant::now();
    loop {
        let text = metrics(&hubs[0]).await;
        if owned(&text) == 20 && gained(&text) == gained_before + b_owned {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A single node shows no cluster series.
    let single = TestHub::with(settings()).await;
    assert!(!metrics(&single).await.contains("presence_hub_cluster_"));
    single.stop().await;
    stop_all(hubs).await;
}

#[tokio::test]
async fn cluster_reports_history_and_status_time_answer_for_agents_owned_by_another_node() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let names = ["rp-a", "rp-b"];
    let hubs = cluster(&nats, &names, &["a1"]).await;
    // a1 is in the directory; t7 is known only from its token. Each tab on its agent's
    // owner (these tests do not depend on forwarding).
    let mut tabs = Vec::new();
    for (id, statuses) in [
        ("a1", &["available", "busy"][..]),
        ("t7", &["available"][..]),
    ] {
        let (mut tab, _) = hubs[owner(id, &names)].agent(id).await;
        for status in statuses {
            let r = tab
                .request(json!({"type": "set_status", "status": status}))
                .await;
            assert_eq!(r["type"], "ok", "{r}");
        }
        tabs.push(tab);
    }
    let expected = [
        (
            "a1",
            json!([["offline", "available"], ["available", "busy"]]),
        ),
        ("t7", json!([["offline", "available"]])),
    ];
    for (id, transitions) in expected {
        // Asked of the node that does not own the agent (no actor of it runs there).
        let other = &hubs[1 - owner(id, &names)];
        let (status, history) = other.get(&format!("/api/v1/agents/{id}/history")).await;
        assert_eq!(status, 200, "{history}");
        let brief: Vec<Value> = history["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!([t["from"], t["to"]]))
            .collect();
        assert_eq!(json!(brief), transitions, "{history}");
        let (status, report) = other
            .get(&format!("/api/v1/reports/status-time?agent={id}"))
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["agents"][0]["agent_id"], id, "{report}");
        // The whole report on that node lists both agents.
        let (_, all) = other.get("/api/v1/reports/status-time").await;
        let ids: Vec<&str> = all["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["agent_id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"a1") && ids.contains(&"t7"), "{all}");
    }
    // An agent no node knows is still a 404.
    let (status, _) = hubs[0].get("/api/v1/agents/zz/history").await;
    assert_eq!(status, 404);
    drop(tabs);
    stop_all(hubs).await;
}
