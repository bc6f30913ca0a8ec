//! Abuse resistance over real sockets, with the hub's default limits: per-socket rate
//! limits (`rate_limited`, then 1008; ping frames free; the HTTP telephony bucket, 429),
//! the handshake timeout (slowloris, head and body), the connection cap (503 before the
//! upgrade), revocation (token expiry: 1008 at `exp` + leeway; admin `logout_agent` closing
//! every tab at once), agent slow consumers (4008, backlog freed), JWT secret rotation, and
//! the limit flags (CLI and environment).
//!
//! Timer-dependent tests run on tokio's paused clock: the runtime jumps to the next timer
//! whenever every task waits, so "10 s" costs no real time and is measured exactly.

use crate::common::*;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::get_current_timestamp;
use presence_hub::config::RateLimit;
use presence_hub::directory::Directory;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "abuse-test-secret-0123456789";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The hub's defaults (rate limits included), with pings far away.
fn defaults() -> Settings {
    Settings {
        ping_interval: Duration::from_secs(3600),
        ..Settings::default()
    }
}

fn rejected(m: &str, cause: &str) -> u64 {
    metric(
        m,
        &format!(r#"presence_hub_rejected_total{{cause="{cause}"}}"#),
    )
}

/// Opens a WebSocket: the client, or the HTTP status and body of the refusal.
async fn try_ws(url: &str, bearer: Option<&str>) -> Result<Client, (u16, String)> {
    let mut req = url.into_client_request().expect("url");
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client::from_ws(ws)),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// Reads a raw TCP stream until the peer closes it (or resets it); returns what came.
/// Fails after [`PATIENCE`] (of tokio time, which may be paused).
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!("the hub never closed the connection"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

/// Security table: "message flood beyond the per-connection rate: `rate_limited` errors,
/// then close 1008". Defaults: agent 50 msg/s, burst 100; 50 limited messages within 10 s
/// are tolerated, the 51st closes.
#[tokio::test(start_paused = true)]
async fn a_message_flood_gets_rate_limited_errors_then_close_1008() {
    let hub = TestHub::with(defaults()).await;
    let (mut admin, _) = hub.admin("boss").await;
    let (mut tab, _) = hub.agent("a1").await;
    assert_eq!(admin.update().await["agent"]["connections"], 1);
    // 300 messages at once, never read until the end; time does not move meanwhile.
    for i in 0..300 {
        tab.send(json!({"type": "ping", "ref": i})).await;
    }
    let (frames, closed) = tab.drain_until_closed().await;
    assert_eq!(closed, Closed::Code(1008), "after {} frames", frames.len());
    assert_eq!(frames.len(), 150, "{frames:?}");
    for (i, f) in frames.iter().enumerate() {
        if i < 100 {
            assert_eq!(f["type"], "pong", "burst message {i}: {f}");
        } else {
            assert_eq!(f["type"], "error", "message {i}: {f}");
            assert_eq!(f["code"], "rate_limited", "message {i}: {f}");
            assert!(f["message"].is_string(), "{f}");
        }
        assert_eq!(f["ref"], i, "replies in order, each with its ref: {f}");
    }
    // The agent's socket counts as closed (grace applies), the admin is unaffected.
    let gone = admin.update().await;
    assert_eq!(gone["agent"]["connections"], 0, "{gone}");
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "rate_limited"), 50);
    assert_eq!(rejected(&m, "rate_limit_closed"), 1);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="agent"}"#), 0);
    // Limited messages are not handled: only the 100 pings of the burst were answered as
    // pings, and nothing was counted as a bad message.
    assert_eq!(
        metric(&m, r#"presence_hub_bad_messages_total{role="agent"}"#),
        0
    );
    let pong = admin.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    hub.stop().await;
}

/// Limited messages are not processed: a rate-limited `set_status` changes nothing, and
/// refs that cannot be read cheaply (not JSON) are answered without one. Binary frames
/// count like text frames.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_message_is_not_processed() {
    let hub = TestHub::with(Settings {
        agent_rate: RateLimit::new(1, 2),
        ..defaults()
    })
    .await;
    let (mut tab, _) = hub.agent("a1").await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "busy"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(tab.update().await["agent"]["status"], "busy");
    tab.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(tab.recv().await["type"], "pong");
    // Bucket empty now.
    tab.send(json!({"type": "set_status", "status": "on_break", "ref": "s"}))
        .await;
    let err = tab.recv().await;
    assert_eq!(
        (&err["code"], &err["ref"]),
        (&json!("rate_limited"), &json!("s")),
        "{err}"
    );
    tab.send_raw(Message::text("not json")).await;
    let err = tab.recv().await;
    assert_eq!(err["code"], "rate_limited", "{err}");
    assert_eq!(err.get("ref"), None, "{err}");
    tab.send_raw(Message::binary(b"{}".to_vec())).await;
    assert_eq!(tab.recv().await["code"], "rate_limited");
    assert_eq!(hub.agent_state("a1").await["status"], "busy", "not applied");
    // One second later there is one token again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "on_break"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(tab.update().await["agent"]["status"], "on_break");
    hub.stop().await;
}

/// A client at (not over) its rate is never limited: the full burst at once, then exactly
/// the sustained rate for 30 s, on agent and admin sockets with the default limits.
#[tokio::test(start_paused = true)]
async fn a_client_within_its_rate_is_never_limited() {
    let hub = TestHub::with(defaults()).await;
    let (mut tab, _) = hub.agent("a1").await;
    let mut admin = Client::connect(&hub.ws_url("/ws/admin?admin_id=boss")).await;
    assert_eq!(admin.recv().await["type"], "hello");
    let defaults = Settings::default();
    for (name, c, limit) in [
        ("agent", &mut tab, defaults.agent_rate),
        ("admin", &mut admin, defaults.admin_rate),
    ] {
        for i in 0..limit.burst {
            c.send(json!({"type": "ping", "ref": i})).await;
        }
        for i in 0..limit.burst {
            let pong = c.recv().await;
            assert_eq!(pong["type"], "pong", "{name} burst {i}: {pong}");
        }
        let every = Duration::from_secs(1) / limit.per_sec;
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(every).await;
            let pong = c.request(json!({"type": "ping"})).await;
            assert_eq!(
                pong["type"], "pong",
                "{name} at its rate, message {sent}: {pong}"
            );
            sent += 1;
        }
        assert_eq!(sent, 30 * limit.per_sec, "{name}");
    }
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "rate_limited"), 0);
    assert_eq!(
        metric(&m, r#"presence_hub_messages_in_total{role="agent"}"#),
        100 + 30 * 50
    );
    hub.stop().await;
}

/// Security table: "ping floods cost nothing". WebSocket ping frames are not counted
/// against the rate, and tungstenite keeps one pending pong: 20,000 pings neither close
/// nor limit the socket, and the full burst of messages is still available afterwards.
#[tokio::test(start_paused = true)]
async fn a_ping_frame_flood_neither_limits_nor_closes_the_socket() {
    let hub = TestHub::with(defaults()).await;
    let (mut tab, _) = hub.agent("a1").await;
    for i in 0..20_000u32 {
        tab.ws
            .feed(Message::Ping(i.to_be_bytes().to_vec().into()))
            .await
            .expect("feed ping");
    }
    tab.ws.flush().await.expect("flush pings");
    // The burst of 40 messages is intact.
    for i in 0..40 {
        tab.send(json!({"type": "ping", "ref": i})).await;
    }
    let mut pongs = 0;
    let mut pong_frames = 0;
    while pongs < 40 {
        match tab.ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                assert_eq!(v["type"], "pong", "{v}");
                assert_eq!(v["ref"], pongs);
                pongs += 1;
            }
            Message::Pong(_) => pong_frames += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pong_frames >= 1, "pings are answered");
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "rate_limited"), 0);
    assert_eq!(rejected(&m, "rate_limit_closed"), 0);
    assert_eq!(
        metric(&m, r#"presence_hub_messages_in_total{role="agent"}"#),
        40,
        "ping frames are not messages"
    );
    assert_eq!(hub.agent_state("a1").await["connections"], 1);
    hub.stop().await;
}

/// `POST /api/v1/telephony/events` shares one bucket: over it, 429 `rate_limited` (with
/// the event's ref), nothing applied; the bucket refills at its rate.
#[tokio::test(start_paused = true)]
async fn the_http_telephony_endpoint_answers_429_over_its_rate() {
    let ids: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let hub = TestHub::with(with_directory_agents(
        Settings {
            http_telephony_rate: RateLimit::new(2, 3),
            ..defaults()
        },
        &ids,
    ))
    .await;
    let client = reqwest::Client::new();
    let post = |i: usize| {
        let mut ev = event("outbound_started", &format!("c{i}"), &format!("h{i}"));
        ev["ref"] = json!(i);
        client
            .post(hub.http_url("/api/v1/telephony/events"))
            .json(&ev)
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..5 {
        let resp = post(i).await.expect("post");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json");
        if status == 429 {
            assert_eq!(body["code"], "rate_limited", "{body}");
            assert_eq!(body["ref"], i, "{body}");
        } else {
            assert_eq!(body["agent"]["status"], "on_call", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (status, h3) = hub.get("/api/v1/agents/h3").await;
    assert_eq!(status, 200);
    assert_eq!(h3["status"], "offline", "a refused event is not applied");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 5..7 {
        assert_eq!(post(i).await.expect("post").status().as_u16(), 200, "{i}");
    }
    assert_eq!(post(7).await.expect("post").status().as_u16(), 429);
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "rate_limited"), 3);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Handshake: slowloris and the connection cap
// ---------------------------------------------------------------------------------------

/// Security table: "slow handshake (slowloris): closed after the handshake timeout (10 s)".
/// A client trickling one header line per second, and one sending nothing at all, are
/// both closed at 10 s (the deadline covers the whole request head), never upgraded.
#[tokio::test(start_paused = true)]
async fn a_slowloris_client_is_closed_after_the_handshake_timeout() {
    let hub = TestHub::with(defaults()).await;
    assert_eq!(
        Settings::default().handshake_timeout,
        Duration::from_secs(10)
    );

    let mut trickle = TcpStream::connect(hub.addr).await.expect("connect");
    let mut silent = TcpStream::connect(hub.addr).await.expect("connect");
    let start = Instant::now();
    trickle
        .write_all(b"GET /ws/agent?agent_id=a1 HTTP/1.1\r\nHost: hub\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let mut lines = 0;
    let closed_at = loop {
        tokio::select! {
            r = trickle.read(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => break start.elapsed(),
                    Ok(n) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
                }
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                assert!(start.elapsed() < PATIENCE, "never closed");
                lines += 1;
                // The peer may already be gone; the read above tells.
                let _ = trickle.write_all(format!("X-Slow-{lines}: 1\r\n").as_bytes()).await;
            }
        }
    };
    assert!(
        closed_at >= Duration::from_secs(10) && closed_at < Duration::from_secs(11),
        "closed after {closed_at:?}"
    );
    assert!(lines >= 9, "the client kept sending: {lines} lines");
    assert!(
        read_to_close(&mut silent).await.is_empty(),
        "nothing sent back"
    );
    assert!(start.elapsed() < Duration::from_secs(11));

    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "handshake_timeout"), 2);
    assert_eq!(
        metric(&m, r#"presence_hub_connections_opened_total{role="agent"}"#),
        0
    );
    assert_eq!(
        metric(&m, "presence_hub_tcp_connections"),
        1,
        "only this request"
    );
    hub.stop().await;
}

/// The slow-body variant: a request whose body does not arrive within the handshake
/// timeout is answered with an error and the connection closed, the event not applied.
#[tokio::test(start_paused = true)]
async fn a_slow_request_body_is_cut_off_at_the_handshake_timeout() {
    let hub = TestHub::with(defaults()).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let start = Instant::now();
    tcp.write_all(
        b"POST /api/v1/telephony/events HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"type\":",
    )
    .await
    .expect("write");
    let got = read_to_close(&mut tcp).await;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "refused: {text}");
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11),
        "cut off after {elapsed:?}"
    );
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "handshake_timeout"), 1);
    assert_eq!(metric(&m, "presence_hub_telephony_events_total"), 0);
    hub.stop().await;
}

/// A request head larger than 64 KiB (a huge header or query string) is refused without
/// being buffered further.
#[tokio::test(start_paused = true)]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    let hub = TestHub::with(defaults()).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let head = format!(
        "GET /ws/agent?agent_id=a1 HTTP/1.1\r\nHost: hub\r\nX-Big: {}\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    // The hub may stop reading before the end: a failed write is fine.
    let _ = tcp.write_all(head.as_bytes()).await;
    let got = read_to_close(&mut tcp).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_connections_opened_total{role="agent"}"#),
        0
    );
    hub.stop().await;
}

/// `--max-connections`: over the cap the hub answers 503 `over_capacity` before any
/// upgrade (and to plain HTTP); a freed slot is usable again.
#[tokio::test(start_paused = true)]
async fn over_max_connections_the_hub_answers_503_before_the_upgrade() {
    let hub = TestHub::with(Settings {
        max_connections: 2,
        ..defaults()
    })
    .await;
    let (a1, _) = hub.agent("a1").await;
    let (_a2, _) = hub.agent("a2").await;
    for path in [
        "/ws/agent?agent_id=a3",
        "/ws/admin?admin_id=x",
        "/ws/telephony?adapter=x",
    ] {
        match try_ws(&hub.ws_url(path), None).await {
            Ok(_) => panic!("{path} upgraded over the cap"),
            Err((status, body)) => {
                assert_eq!(status, 503, "{path}");
                let v: Value = serde_json::from_str(&body).expect("JSON body");
                assert_eq!(v["code"], "over_capacity", "{v}");
            }
        }
    }
    let resp = reqwest::get(hub.http_url("/healthz")).await.expect("get");
    assert_eq!(resp.status().as_u16(), 503);

    // A closed socket gives its slot back.
    a1.close().await;
    let deadline = Instant::now() + PATIENCE;
    let m = loop {
        let resp = reqwest::get(hub.http_url("/metrics")).await.expect("get");
        if resp.status().as_u16() == 200 {
            break resp.text().await.expect("body");
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(rejected(&m, "over_capacity") >= 4);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="agent"}"#), 1);
    assert_eq!(
        metric(&m, r#"presence_hub_connections_opened_total{role="agent"}"#),
        2,
        "nothing was set up for the refused ones"
    );
    assert_eq!(
        metric(&m, "presence_hub_tcp_connections"),
        2,
        "a2 and this request"
    );
    // (The connection of the previous request may not have ended on the hub's side yet.)
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _) = hub.get("/api/v1/agents/a3").await;
        if status != 503 {
            assert_eq!(status, 404, "the refused agent never reached the hub");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------

fn secured() -> Settings {
    tokens::secured(SECRET, defaults())
}

/// Revocation by expiry: every socket whose token runs out is closed with 1008 at `exp`
/// plus the 5 s validation leeway, all of an agent's tabs at the same instant; the agent
/// then counts as disconnected (grace applies), and sockets with longer tokens stay.
#[tokio::test(start_paused = true)]
async fn sockets_are_closed_with_1008_when_their_token_expires() {
    let hub = TestHub::with(secured()).await;
    let now = get_current_timestamp();
    let long = jwt(SECRET, "boss", "admin", now + 3600);
    let mut watcher = try_ws(&hub.ws_url(&format!("/ws/admin?token={long}")), None)
        .await
        .expect("admin");
    assert_eq!(watcher.recv().await["type"], "hello");
    let snap = watcher.request(json!({"type": "subscribe"})).await;
    assert_eq!(snap["type"], "ok");

    // Expires in 3 s (whole seconds: 2-3 s from now), plus 5 s leeway.
    let short = jwt(SECRET, "a1", "agent", now + 3);
    let start = Instant::now();
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = try_ws(&hub.ws_url(&format!("/ws/agent?token={short}")), None)
            .await
            .expect("tab");
        assert_eq!(tab.recv().await["type"], "hello");
        tabs.push(tab);
    }
    let short_admin = jwt(SECRET, "temp", "admin", now + 3);
    let mut admin = try_ws(&hub.ws_url("/ws/admin"), Some(&short_admin))
        .await
        .expect("admin");
    assert_eq!(admin.recv().await["type"], "hello");
    let short_tel = jwt(SECRET, "pbx", "telephony", now + 3);
    let mut tel = try_ws(&hub.ws_url("/ws/telephony"), Some(&short_tel))
        .await
        .expect("telephony");
    assert_eq!(tel.recv().await["type"], "hello");

    let mut closed_at = Vec::new();
    for (name, c) in tabs
        .iter_mut()
        .map(|t| ("tab", t))
        .chain([("admin", &mut admin), ("telephony", &mut tel)])
    {
        let (frames, closed) = c.drain_until_closed().await;
        assert_eq!(closed, Closed::Code(1008), "{name}: {frames:?}");
        assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
        closed_at.push(start.elapsed());
    }
    let first = closed_at[0];
    assert!(
        first >= Duration::from_millis(6_900) && first <= Duration::from_millis(8_100),
        "closed at exp + leeway, not after {first:?}"
    );
    assert!(
        closed_at
            .iter()
            .all(|t| *t - first < Duration::from_secs(1)),
        "all together: {closed_at:?}"
    );
    // The watcher saw the three tabs open, then the agent disconnected (not logged out:
    // expiry is not a logout, the grace period applies).
    let mut last = Value::Null;
    while last["connections"] != 0 {
        last = watcher.update().await["agent"].clone();
    }
    assert_eq!(last["agent_id"], "a1");
    assert_eq!(last["status"], "offline", "never set anything else");
    let pong = watcher.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "the long token still works");
    let m = metrics(&hub).await;
    assert_eq!(rejected(&m, "token_expired"), 5);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="agent"}"#), 0);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="admin"}"#), 1);
    // (A new connection with an expired token gets 401 before the upgrade: covered in
    // auth_and_input.rs; it cannot be shown here, the token is checked against the real
    // clock while this test runs on the paused one.)
    hub.stop().await;
}

/// Revocation by an admin: `logout_agent` closes all three tabs of the agent with 1000,
/// each right after its final update and `logged_out`, with no clock time passing (the
/// clock is paused and would jump to the next timer if anything waited on one).
#[tokio::test(start_paused = true)]
async fn admin_logout_agent_closes_all_three_tabs_at_once() {
    let hub = TestHub::with(defaults()).await;
    let (mut admin, _) = hub.admin("boss").await;
    let mut tabs = Vec::new();
    for n in 1..=3 {
        let (tab, hello) = hub.agent("a1").await;
        assert_eq!(hello["agent"]["connections"], n);
        tabs.push(tab);
        assert_eq!(admin.update().await["agent"]["connections"], n);
    }
    let start = Instant::now();
    admin
        .send(json!({"type": "logout_agent", "agent_id": "a1", "ref": "out"}))
        .await;
    for (i, tab) in tabs.iter_mut().enumerate() {
        let (frames, closed) = tab.drain_until_closed().await;
        assert_eq!(closed, Closed::Code(1000), "tab {i}");
        // Earlier tabs first see the later ones log in; then the logout, and nothing else.
        let kinds: Vec<&str> = frames.iter().filter_map(|f| f["type"].as_str()).collect();
        let mut expected = vec!["agent"; 2 - i];
        expected.extend(["agent", "logged_out"]);
        assert_eq!(kinds, expected, "tab {i}: {frames:?}");
        let last = &frames[frames.len() - 2]["agent"];
        assert_eq!(last["status"], "offline", "tab {i}");
        assert_eq!(last["connections"], 0, "tab {i}");
        assert_eq!(last["reason"], "admin_logout", "tab {i}");
        assert_eq!(frames[frames.len() - 1]["reason"], "admin_logout");
    }
    let u = admin.update().await;
    assert_eq!(u["agent"]["reason"], "admin_logout");
    let ok = admin.recv().await;
    assert_eq!(
        (&ok["type"], &ok["ref"]),
        (&json!("ok"), &json!("out")),
        "{ok}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    eventually_metric(&hub, r#"presence_hub_connections{role="agent"}"#, 0).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------------------

/// Reliability/issue row: an agent socket that stops reading is closed with 4008 once its
/// queue passes the bound, counted (role agent), and its backlog freed (the socket task
/// ends: the agent's connections drop); a healthy admin's deliveries continue throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_tab_that_stops_reading_is_closed_with_4008() {
    // Many long team ids (from the directory, within its limits: 32 of 120 characters)
    // make every update frame ~4 KiB.
    let teams: Vec<String> = (0..32)
        .map(|i| format!("\"t{i:02}{}\"", "x".repeat(117)))
        .collect();
    let toml = format!(
        "[[agents]]\nid = \"big\"\nname = \"Big\"\nteams = [{}]\n",
        teams.join(",")
    );
    let hub = TestHub::with(Settings {
        directory: Directory::from_toml(&toml).expect("directory"),
        queue_bytes: 64 * 1024,
        ..settings()
    })
    .await;
    let (mut admin, _) = hub.admin("watch").await;
    let mut slow = small_buffer_client(&hub, "/ws/agent?agent_id=big").await;
    let login = admin.update().await;
    assert_eq!(login["agent"]["connections"], 1);
    let mut version = login["agent"]["version"].as_u64().expect("version");

    // The tab reads nothing from here on; the admin changes the agent's status and reads
    // every update.
    let statuses = ["busy", "on_break", "available"];
    let dropped = r#"presence_hub_slow_consumers_dropped_total{role="agent"}"#;
    let mut was_dropped = false;
    for i in 0..20_000usize {
        let ok = admin
            .request(
                json!({"type": "set_agent_status", "agent_id": "big", "status": statuses[i % 3]}),
            )
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let u = admin.update().await;
        let v = u["agent"]["version"].as_u64().expect("version");
        assert_eq!(v, version + 1, "the admin misses nothing");
        version = v;
        if i % 25 == 24 && metric(&metrics(&hub).await, dropped) > 0 {
            was_dropped = true;
            break;
        }
    }
    assert!(was_dropped, "the tab was never dropped");
    // The tab resumes reading (within the hub's 2 s close timeout): a prefix of its
    // updates in order, then 4008.
    let (frames, closed) = slow.drain_until_closed().await;
    assert_eq!(closed, Closed::Code(4008), "after {} frames", frames.len());
    let versions: Vec<u64> = frames
        .iter()
        .filter_map(|f| f["agent"]["version"].as_u64())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {versions:?}"
    );
    assert!(
        versions.last().copied().unwrap_or(0) < version,
        "the tab did not get everything"
    );
    // The admin sees the tab go (the agent's connections drop) and is still served.
    loop {
        let u = admin.update().await;
        let v = u["agent"]["version"].as_u64().expect("version");
        assert_eq!(v, version + 1, "the admin misses nothing");
        version = v;
        if u["agent"]["connections"] == 0 {
            break;
        }
    }
    let ok = admin
        .request(json!({"type": "set_agent_status", "agent_id": "big", "status": "busy"}))
        .await;
    assert_eq!(ok["type"], "ok");
    // The socket task ended (its queue and channel are gone with it).
    eventually_metric(&hub, r#"presence_hub_connections{role="agent"}"#, 0).await;
    let m = metrics(&hub).await;
    assert_eq!(
        metric(
            &m,
            r#"presence_hub_slow_consumers_dropped_total{role="agent"}"#
        ),
        1
    );
    assert_eq!(rejected(&m, "slow_consumer"), 1);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="admin"}"#), 1);
    assert_eq!(hub.agent_state("big").await["connections"], 0);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// JWT secret rotation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tokens_of_the_previous_secret_are_accepted_during_a_rotation() {
    let old = "old-secret-0123456789";
    let exp = get_current_timestamp() + 3600;
    let url = |hub: &TestHub, t: &str| hub.ws_url(&format!("/ws/agent?token={t}"));

    let hub = TestHub::with(Settings {
        jwt_secret: Some(SECRET.to_string()),
        jwt_secret_previous: Some(old.to_string()),
        ..defaults()
    })
    .await;
    for (what, token, want) in [
        ("current", jwt(SECRET, "a1", "agent", exp), None),
        ("previous", jwt(old, "a2", "agent", exp), None),
        (
            "unknown",
            jwt("other-secret-x", "a3", "agent", exp),
            Some(401),
        ),
        (
            "previous but expired",
            jwt(old, "a4", "agent", exp - 7200),
            Some(401),
        ),
        (
            "previous, wrong role",
            jwt(old, "x", "admin", exp),
            Some(403),
        ),
    ] {
        match try_ws(&url(&hub, &token), None).await {
            Ok(mut c) => {
                assert_eq!(want, None, "{what} accepted");
                assert_eq!(c.recv().await["type"], "hello", "{what}");
            }
            Err((status, _)) => assert_eq!(Some(status), want, "{what}"),
        }
    }
    hub.stop().await;

    // After the rotation (no previous secret), the old tokens are refused.
    let hub = TestHub::with(secured()).await;
    let refused = try_ws(&url(&hub, &jwt(old, "a2", "agent", exp)), None).await;
    assert_eq!(refused.err().map(|e| e.0), Some(401));
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

#[test]
fn every_limit_is_a_flag_and_an_environment_variable() {
    use clap::Parser;
    use presence_hub::Cli;
    let d = Cli::parse_from(["presence-hub"])
        .settings()
        .expect("settings");
    assert_eq!(d.read_buffer_bytes, 4096);
    assert_eq!(d.write_buffer_bytes, 64 * 1024);
    assert_eq!(d.max_write_buffer_bytes, 64 << 20);
    assert_eq!(d.max_message_bytes, 64 * 1024);
    assert_eq!(d.max_frame_bytes, 64 * 1024);
    assert_eq!(d.handshake_timeout, Duration::from_secs(10));
    assert_eq!(d.max_connections, 200_000);
    assert_eq!(d.agent_rate, RateLimit::new(50, 100));
    assert_eq!(d.admin_rate, RateLimit::new(200, 400));
    assert_eq!(d.telephony_rate, RateLimit::new(200_000, 200_000));
    assert_eq!(d.http_telephony_rate, RateLimit::new(20_000, 40_000));
    assert_eq!(
        (d.rate_limit_strikes, d.rate_limit_window),
        (50, Duration::from_secs(10))
    );
    let dflt = Settings::default();
    assert_eq!(
        (d.agent_rate, d.max_write_buffer_bytes, d.handshake_timeout),
        (
            dflt.agent_rate,
            dflt.max_write_buffer_bytes,
            dflt.handshake_timeout
        ),
        "the library defaults are the binary's"
    );

    let s = Cli::parse_from([
        "presence-hub",
        "--read-buffer-bytes=8192",
        "--write-buffer-bytes=16384",
        "--max-write-buffer-bytes=33554432",
        "--max-message-bytes=131072",
        "--max-frame-bytes=32768",
        "--handshake-timeout-secs=3",
        "--max-connections=500",
        "--agent-rate=5",
        "--agent-burst=6",
        "--admin-rate=7",
        "--admin-burst=8",
        "--telephony-rate=0",
        "--http-telephony-rate=9",
        "--http-telephony-burst=10",
        "--rate-limit-strikes=11",
        "--rate-limit-window-secs=12",
        "--jwt-secret=s1",
        "--jwt-secret-previous=s0",
    ])
    .settings()
    .expect("settings");
    assert_eq!(
        (
            s.read_buffer_bytes,
            s.write_buffer_bytes,
            s.max_write_buffer_bytes
        ),
        (8192, 16384, 32 << 20)
    );
    assert_eq!(
        (s.max_message_bytes, s.max_frame_bytes),
        (128 * 1024, 32 * 1024)
    );
    assert_eq!(s.handshake_timeout, Duration::from_secs(3));
    assert_eq!(s.max_connections, 500);
    assert_eq!(s.agent_rate, RateLimit::new(5, 6));
    assert_eq!(s.admin_rate, RateLimit::new(7, 8));
    assert!(s.telephony_rate.is_unlimited());
    assert_eq!(s.http_telephony_rate, RateLimit::new(9, 10));
    assert_eq!(
        (s.rate_limit_strikes, s.rate_limit_window),
        (11, Duration::from_secs(12))
    );
    assert_eq!(s.jwt_secret_previous.as_deref(), Some("s0"));
    // tungstenite needs the cap above the write buffer: a smaller one is raised.
    let s = Cli::parse_from([
        "presence-hub",
        "--write-buffer-bytes=65536",
        "--max-write-buffer-bytes=1000",
    ])
    .settings()
    .expect("settings");
    assert!(s.max_write_buffer_bytes > s.write_buffer_bytes);

    // The same through the environment: in a child process (this test binary running only
    // the test below), so that no other test sees the variables.
    run_alone(
        "abuse::limits_from_the_environment",
        &LIMITS_FROM_THE_ENVIRONMENT,
    );
}

/// The variables `limits_from_the_environment` reads.
const LIMITS_FROM_THE_ENVIRONMENT: [(&str, &str); 8] = [
    ("PRESENCE_HUB_MAX_FRAME_BYTES", "4096"),
    ("PRESENCE_HUB_READ_BUFFER_BYTES", "2048"),
    ("PRESENCE_HUB_MAX_CONNECTIONS", "77"),
    ("PRESENCE_HUB_HANDSHAKE_TIMEOUT_SECS", "4"),
    ("PRESENCE_HUB_AGENT_RATE", "3"),
    ("PRESENCE_HUB_AGENT_BURST", "9"),
    ("PRESENCE_HUB_MAX_WRITE_BUFFER_BYTES", "16777216"),
    ("PRESENCE_HUB_JWT_SECRET_PREVIOUS", "prev"),
];

/// The limits through the environment. Run by `every_limit_is_a_flag_and_an_environment_variable`
/// in a child process with `LIMITS_FROM_THE_ENVIRONMENT` set: this process never sets them.
#[test]
#[ignore = "needs its environment: run alone by every_limit_is_a_flag_and_an_environment_variable"]
fn limits_from_the_environment() {
    use clap::Parser;
    use presence_hub::Cli;
    assert_alone();
    for (k, v) in LIMITS_FROM_THE_ENVIRONMENT {
        assert_eq!(std::env::var(k).as_deref(), Ok(v), "run with {k}={v}");
    }
    let s = Cli::parse_from(["presence-hub"])
        .settings()
        .expect("settings");
    assert_eq!(s.max_frame_bytes, 4096);
    assert_eq!(s.read_buffer_bytes, 2048);
    assert_eq!(s.max_connections, 77);
    assert_eq!(s.handshake_timeout, Duration::from_secs(4));
    assert_eq!(s.agent_rate, RateLimit::new(3, 9));
    assert_eq!(s.max_write_buffer_bytes, 16 << 20);
    assert_eq!(s.jwt_secret_previous.as_deref(), Some("prev"));
}
