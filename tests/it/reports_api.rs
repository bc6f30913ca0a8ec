//! The report and history endpoints against hand-computed intervals: an in-process hub on
//! an in-memory store, on tokio's paused clock frozen so that only `advance` moves it (the
//! hub's clock follows tokio time), so every transition happens at a known millisecond.

use crate::common::*;
use crate::rig::{advance_ms, freeze_time};
use serde_json::{json, Value};

const STATUSES: [&str; 7] = [
    "available",
    "ringing",
    "on_call",
    "wrap_up",
    "busy",
    "on_break",
    "offline",
];

/// Milliseconds per status, all seven (the ones not given are 0).
fn ms(pairs: &[(&str, u64)]) -> Value {
    let mut m = serde_json::Map::new();
    for s in STATUSES {
        let v = pairs.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
        m.insert(s.to_string(), json!(v));
    }
    Value::Object(m)
}

/// The same, in seconds.
fn seconds(pairs: &[(&str, u64)]) -> Value {
    let mut m = serde_json::Map::new();
    for s in STATUSES {
        let v = pairs.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
        m.insert(s.to_string(), json!(v as f64 / 1000.0));
    }
    Value::Object(m)
}

fn row(agent: &str, pairs: &[(&str, u64)]) -> Value {
    let total: u64 = pairs.iter().map(|(_, v)| v).sum();
    json!({
        "agent_id": agent,
        "ms": ms(pairs),
        "total_ms": total,
        "seconds": seconds(pairs),
        "total_seconds": total as f64 / 1000.0,
    })
}

async fn report(hub: &TestHub, query: &str) -> Value {
    let (status, body) = hub
        .get(&format!("/api/v1/reports/status-time?{query}"))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn text(hub: &TestHub, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(hub.http_url(path));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("get");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, resp.text().await.expect("body"))
}

async fn set(tab: &mut Client, status: &str, note: Option<&str>) {
    let reply = tab
        .request(json!({"type": "set_status", "status": status, "note": note}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
}

/// a1: available at t1, busy (lunch) at t1 + 10 s, on_break at t1 + 15 s, now t1 + 18 s.
/// a2 (team x): available at t1, still now.
struct Timeline {
    hub: TestHub,
    t1: u64,
    now: u64,
    _tabs: Vec<Client>,
}

async fn timeline() -> Timeline {
    let hub = TestHub::start().await;
    let (mut a1, _) = hub.agent("a1").await;
    let mut a2 = Client::connect(&hub.ws_url("/ws/agent?agent_id=a2&teams=x")).await;
    assert_eq!(a2.recv().await["type"], "hello");
    set(&mut a1, "available", None).await;
    set(&mut a2, "available", None).await;
    let t1 = hub.agent_state("a1").await["since"]
        .as_u64()
        .expect("since");
    assert_eq!(hub.agent_state("a2").await["since"].as_u64(), Some(t1));
    advance_ms(10_000).await;
    set(&mut a1, "busy", Some("lunch")).await;
    advance_ms(5_000).await;
    set(&mut a1, "on_break", None).await;
    assert_eq!(
        hub.agent_state("a1").await["since"].as_u64(),
        Some(t1 + 15_000)
    );
    advance_ms(3_000).await;
    Timeline {
        hub,
        t1,
        now: t1 + 18_000,
        _tabs: vec![a1, a2],
    }
}

#[tokio::test(start_paused = true)]
async fn status_time_splits_intervals_at_the_range_edges_and_counts_the_open_one() {
    let _frozen = freeze_time();
    let Timeline {
        hub,
        t1,
        now,
        _tabs,
    } = timeline().await;
    // The agent was created at t1 (its tab logged in, then it went available): the two
    // seconds before do not count; the range runs past now: the open interval counts up to
    // now only.
    let r = report(
        &hub,
        &format!("from={}&to={}&agent=a1", t1 - 2_000, now + 10_000),
    )
    .await;
    assert_eq!(r["now"].as_u64(), Some(now));
    assert_eq!(
        r["agents"],
        json!([row(
            "a1",
            &[("available", 10_000), ("busy", 5_000), ("on_break", 3_000)]
        )])
    );
    // Both edges inside intervals.
    let r = report(
        &hub,
        &format!("from={}&to={}&agent=a1", t1 + 4_000, t1 + 11_000),
    )
    .await;
    assert_eq!(
        r["agents"],
        json!([row("a1", &[("available", 6_000), ("busy", 1_000)])])
    );
    // Only the open interval, which started before the range.
    let r = report(
        &hub,
        &format!("from={}&to={}&agent=a1", t1 + 16_000, now + 5_000),
    )
    .await;
    assert_eq!(r["agents"], json!([row("a1", &[("on_break", 2_000)])]));
    // A range entirely in the future counts nothing.
    let r = report(&hub, &format!("from={}&to={}&agent=a1", now + 1, now + 100)).await;
    assert_eq!(r["agents"], json!([row("a1", &[])]));
    // A team: its members now; no filter: everyone, by id.
    let r = report(&hub, &format!("from={t1}&to={now}&team=x")).await;
    assert_eq!(r["agents"], json!([row("a2", &[("available", 18_000)])]));
    let r = report(&hub, &format!("from={t1}&to={now}")).await;
    assert_eq!(
        r["agents"],
        json!([
            row(
                "a1",
                &[("available", 10_000), ("busy", 5_000), ("on_break", 3_000)]
            ),
            row("a2", &[("available", 18_000)]),
        ])
    );
    // Default range: the last 24 hours up to now.
    let r = report(&hub, "agent=a1").await;
    assert_eq!(r["to"].as_u64(), Some(now));
    assert_eq!(r["from"].as_u64(), Some(now - 86_400_000));
    assert_eq!(r["agents"][0]["total_ms"], 18_000, "only since it exists");
    assert_eq!(r["agents"][0]["ms"]["available"], 10_000);
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn status_time_as_csv() {
    let _frozen = freeze_time();
    let Timeline {
        hub,
        t1,
        now,
        _tabs,
    } = timeline().await;
    let expected = "agent_id,available,ringing,on_call,wrap_up,busy,on_break,offline,total\r\n\
                    a1,6.000,0.000,0.000,0.000,1.250,0.000,0.000,7.250\r\n\
                    a2,7.250,0.000,0.000,0.000,0.000,0.000,0.000,7.250\r\n";
    let range = format!("from={}&to={}", t1 + 4_000, t1 + 11_250);
    let path = format!("/api/v1/reports/status-time?{range}&format=csv");
    let (status, ctype, body) = text(&hub, &path, None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert_eq!(body, expected);
    let path = format!("/api/v1/reports/status-time?{range}");
    let (status, ctype, body) = text(&hub, &path, Some("text/csv")).await;
    assert_eq!((status, ctype.starts_with("text/csv")), (200, true));
    assert_eq!(body, expected);
    // format=json wins over the Accept header.
    let path = format!("/api/v1/reports/status-time?{range}&format=json");
    let (_, ctype, _) = text(&hub, &path, Some("text/csv")).await;
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let _ = now;
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_report_and_history_queries_are_400_or_404() {
    let _frozen = freeze_time();
    let Timeline {
        hub,
        t1,
        now,
        _tabs,
    } = timeline().await;
    let too_long = 401 * 86_400_000u64;
    for query in [
        format!("from={t1}&to={t1}"),
        format!("from={now}&to={t1}"),
        format!("from=0&to={too_long}"),
        "from=yesterday".to_string(),
        "to=-5".to_string(),
        "from=1.5".to_string(),
        "format=xml".to_string(),
        "agent=a%20b".to_string(),
        "team=bad%20team".to_string(),
    ] {
        let (status, body) = hub
            .get(&format!("/api/v1/reports/status-time?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for query in [
        "limit=0",
        "limit=10001",
        "limit=x",
        "cursor=nope",
        "from=10&to=5",
    ] {
        let (status, body) = hub.get(&format!("/api/v1/agents/a1/history?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = hub.get("/api/v1/agents/nobody/history").await;
    assert_eq!(status, 404);
    let (status, _) = hub.get("/api/v1/agents/a%20b/history").await;
    assert_eq!(status, 400);
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn history_lists_transitions_in_pages() {
    let _frozen = freeze_time();
    let Timeline { hub, t1, _tabs, .. } = timeline().await;
    let (status, all) = hub.get("/api/v1/agents/a1/history").await;
    assert_eq!(status, 200, "{all}");
    let transitions = all["transitions"].as_array().expect("transitions").clone();
    let brief: Vec<Value> = transitions
        .iter()
        .map(|t| {
            json!([
                t["from"],
                t["to"],
                t["reason"],
                t["note"],
                t["at"].as_u64().map(|at| at - t1)
            ])
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            json!(["offline", "available", "manual", null, 0]),
            json!(["available", "busy", "manual", "lunch", 10_000]),
            json!(["busy", "on_break", "manual", null, 15_000]),
        ]
    );
    assert_eq!(all["next_cursor"], Value::Null);
    // Pages of two.
    let (_, page1) = hub.get("/api/v1/agents/a1/history?limit=2").await;
    assert_eq!(page1["transitions"], json!(transitions[..2]));
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, page2) = hub
        .get(&format!(
            "/api/v1/agents/a1/history?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["transitions"], json!(transitions[2..]));
    assert_eq!(page2["next_cursor"], Value::Null);
    // A time range: from inclusive, to exclusive.
    let (_, ranged) = hub
        .get(&format!(
            "/api/v1/agents/a1/history?from={}&to={}",
            t1 + 10_000,
            t1 + 15_000
        ))
        .await;
    assert_eq!(ranged["transitions"], json!(transitions[1..2]));
    hub.stop().await;
}

/// Issue 12, item 2: a report counts only the time an agent existed (from its first stored
/// state). An agent created with the directory API is not listed before anything about it
/// was stored; once its tab logged in (a change with no status transition: its history
/// stays empty) a minute ago, it shows one minute offline, not the whole day; a range that
/// ended before it existed does not list it, one it entered halfway counts from then.
#[tokio::test(start_paused = true)]
async fn status_time_counts_only_the_time_an_agent_existed() {
    let _frozen = freeze_time();
    let hub = TestHub::start().await;
    advance_ms(3_600_000).await;
    let put = reqwest::Client::new()
        .put(hub.http_url("/api/v1/directory/agents/a5"))
        .header("content-type", "application/json")
        .body(r#"{"name":"Five","teams":["sales"]}"#)
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 201);
    assert_eq!(report(&hub, "").await["agents"], json!([]));
    let (_tab, hello) = hub.agent("a5").await;
    let created = hello["server_time"].as_u64().expect("server_time");
    advance_ms(60_000).await;
    let (_, history) = hub.get("/api/v1/agents/a5/history").await;
    assert_eq!(history["transitions"], json!([]), "never changed status");
    let r = report(&hub, "agent=a5").await;
    assert_eq!(r["agents"], json!([row("a5", &[("offline", 60_000)])]));
    let (status, _, csv) = text(&hub, "/api/v1/reports/status-time?format=csv", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        csv,
        "agent_id,available,ringing,on_call,wrap_up,busy,on_break,offline,total\r\n\
         a5,0.000,0.000,0.000,0.000,0.000,0.000,60.000,60.000\r\n"
    );
    let r = report(&hub, &format!("from={}&to={created}", created - 3_600_000)).await;
    assert_eq!(r["agents"], json!([]));
    let r = report(
        &hub,
        &format!("from={}&to={}", created - 30_000, created + 30_000),
    )
    .await;
    assert_eq!(r["agents"], json!([row("a5", &[("offline", 30_000)])]));
    hub.stop().await;
}
