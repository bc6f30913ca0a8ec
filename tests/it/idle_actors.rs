//! An actor with nothing to do stops after `--actor-idle-secs` and is started again from
//! the store when needed, with nothing lost; deleting a directory entry stops its actor.
//! Paused time: the grace and idle periods cost no real time.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const IDLE: Duration = Duration::from_secs(60);

fn idle_settings(dir: &[&str]) -> presence_hub::Settings {
    with_directory_agents(
        presence_hub::Settings {
            actor_idle: IDLE,
            ..settings()
        },
        dir,
    )
}

async fn actors(hub: &TestHub) -> u64 {
    metric(&metrics(hub).await, "presence_hub_agent_actors")
}

/// Waits (paused clock) until the hub has `n` actors.
async fn actors_become(hub: &TestHub, n: u64) {
    for _ in 0..200 {
        if actors(hub).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("actors stayed at {}, expected {n}", actors(hub).await);
}

fn without_connections(mut v: Value) -> Value {
    v["connections"] = json!(null);
    v
}

#[tokio::test(start_paused = true)]
async fn a_stopped_actor_starts_again_from_the_store_with_nothing_lost() {
    let hub = TestHub::with(idle_settings(&["d1"])).await;
    assert_eq!(actors(&hub).await, 1, "the directory agent has its actor");
    // A directory agent and a token-only agent change, then log out.
    let mut last = Vec::new();
    for id in ["d1", "t1"] {
        let (mut tab, _) = hub.agent(id).await;
        let ok = tab
            .request(json!({"type": "set_status", "status": "on_break", "note": "tea"}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let ok = tab.request(json!({"type": "logout"})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
        last.push(hub.agent_state(id).await);
    }
    assert_eq!(actors(&hub).await, 2);
    // Idle: both stop. The directory agent stays listed; the token-only one leaves.
    tokio::time::sleep(IDLE * 2).await;
    actors_become(&hub, 0).await;
    assert_eq!(hub.agent_state("d1").await, last[0], "listed as it was");
    let (status, _) = hub.get("/api/v1/agents/t1").await;
    assert_eq!(status, 404, "a stopped token-only agent leaves the list");
    // An admin action reaches the stopped directory agent: started from its stored state.
    let (mut admin, _) = hub.admin("boss").await;
    let reply = admin
        .request(json!({"type": "set_agent_status", "agent_id": "d1", "status": "busy"}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert_eq!(
        reply["version"],
        last[0]["version"].as_u64().expect("v") + 1
    );
    let upd = admin.update().await;
    assert_eq!(upd["agent"]["status"], "busy");
    assert_eq!(upd["agent"]["note"], last[0]["note"], "{upd}");
    // An admin action for the stopped token-only agent: unknown, nothing started.
    let reply = admin
        .request(json!({"type": "set_agent_status", "agent_id": "t1", "status": "busy"}))
        .await;
    assert_eq!(reply["code"], "unknown_agent", "{reply}");
    // Its tab logs in again: the stored state goes on (version, status, note).
    let (_tab, hello) = hub.agent("t1").await;
    let before = &last[1];
    assert_eq!(
        hello["agent"]["version"],
        before["version"].as_u64().expect("v") + 1
    );
    let mut expected = without_connections(before.clone());
    let mut got = without_connections(hello["agent"].clone());
    for v in [&mut expected, &mut got] {
        for field in ["version", "reason", "since"] {
            v[field] = Value::Null;
        }
    }
    assert_eq!(got, expected, "nothing lost but the login itself");
    assert_eq!(actors(&hub).await, 2);
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn deleting_a_directory_entry_stops_its_actor() {
    let hub = TestHub::with(idle_settings(&["d1", "d2"])).await;
    assert_eq!(actors(&hub).await, 2);
    let resp = reqwest::Client::new()
        .delete(hub.http_url("/api/v1/directory/agents/d2"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 204);
    actors_become(&hub, 1).await;
    let (status, _) = hub.get("/api/v1/agents/d2").await;
    assert_eq!(status, 404, "no longer listed");
    // A telephony event for it now: unknown, nothing started.
    let mut tel = hub.telephony().await;
    let reply = tel.request(event("call_ended", "c1", "d2")).await;
    assert_eq!(reply["code"], "unknown_agent", "{reply}");
    assert_eq!(actors(&hub).await, 1);
    hub.stop().await;
}
