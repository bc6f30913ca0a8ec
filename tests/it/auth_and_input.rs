//! Security and bad input over the wire: JWT roles and refusals before the upgrade, the
//! Origin allowlist, dev mode, malformed and oversized messages on every socket, the HTTP
//! API, graceful shutdown (1001), and ping/pong liveness under paused time.

use crate::common::*;
use jsonwebtoken::{get_current_timestamp, Algorithm};
use presence_hub::directory::Directory;
use presence_hub::{RunError, Settings};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "test-secret-0123456789";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn token(sub: &str, role: &str) -> String {
    token_with(SECRET, Algorithm::HS256, sub, role, 3600, json!({}))
}

fn secured() -> Settings {
    tokens::secured(SECRET, settings())
}

/// Opens a socket with extra headers: the client and its `hello`, or the HTTP status of
/// the refused upgrade.
async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<(Client, Value), u16> {
    let mut req = url.into_client_request().expect("url");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            let mut c = Client::from_ws(ws);
            let hello = c.recv().await;
            assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
            Ok((c, hello))
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect {url}: {e}"),
    }
}

async fn status_of(url: &str, headers: &[(&str, &str)]) -> u16 {
    match try_connect(url, headers).await {
        Ok(_) => 101,
        Err(status) => status,
    }
}

async fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("http get");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// The next JSON text frame within `limit` of tokio time (which may be paused: the harness'
/// own safety timeout would fire first when the runtime auto-advances), or `None`.
/// Pings are answered by tungstenite as they are read.
async fn next_json_within(c: &mut Client, limit: Duration) -> Option<Value> {
    use futures::StreamExt;
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON frame"))
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed unexpectedly: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_bad_or_expired_tokens_get_401_before_the_upgrade() {
    let hub = TestHub::with(secured()).await;
    let agent = |q: &str| hub.ws_url(&format!("/ws/agent{q}"));
    let good = token("a1", "agent");
    // (what, url, Authorization header)
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no token", agent(""), None),
        ("empty token", agent("?token="), None),
        ("garbage", agent("?token=not.a.jwt"), None),
        (
            "other secret",
            agent(&format!(
                "?token={}",
                token_with(
                    "other-secret",
                    Algorithm::HS256,
                    "a1",
                    "agent",
                    3600,
                    json!({})
                )
            )),
            None,
        ),
        (
            "expired",
            agent(&format!(
                "?token={}",
                token_with(SECRET, Algorithm::HS256, "a1", "agent", -3600, json!({}))
            )),
            None,
        ),
        (
            "HS512 with the same secret",
            agent(&format!(
                "?token={}",
                token_with(SECRET, Algorithm::HS512, "a1", "agent", 3600, json!({}))
            )),
            None,
        ),
        (
            "tampered payload",
            agent(&format!("?token={}", {
                let mut parts: Vec<String> = good.split('.').map(String::from).collect();
                let other = token("a2", "agent");
                parts[1] = other.split('.').nth(1).expect("payload").to_string();
                parts.join(".")
            })),
            None,
        ),
        (
            "unknown role",
            agent(&format!("?token={}", token("a1", "supervisor"))),
            None,
        ),
        (
            "invalid agent id in sub",
            agent(&format!("?token={}", token("a 1", "agent"))),
            None,
        ),
        (
            "dev identity while a secret is set",
            agent("?agent_id=a1"),
            None,
        ),
        (
            "bad bearer",
            agent(""),
            Some("Bearer not.a.jwt".to_string()),
        ),
        ("basic auth", agent(""), Some(format!("Basic {good}"))),
    ];
    let n = cases.len() as u64;
    for (what, url, auth) in &cases {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        assert_eq!(status_of(url, &headers).await, 401, "{what}");
    }
    for path in ["/ws/admin", "/ws/telephony"] {
        assert_eq!(status_of(&hub.ws_url(path), &[]).await, 401, "{path}");
        let expired = token_with(SECRET, Algorithm::HS256, "x", "admin", -3600, json!({}));
        assert_eq!(
            status_of(&hub.ws_url(&format!("{path}?token={expired}")), &[]).await,
            401
        );
    }
    // Nothing was opened for any of them.
    let m = metrics(&hub).await;
    for role in ["agent", "admin", "telephony"] {
        let sample = format!(r#"presence_hub_connections_opened_total{{role="{role}"}}"#);
        assert_eq!(metric(&m, &sample), 0, "{role}");
    }
    assert_eq!(
        metric(&m, r#"presence_hub_rejected_total{cause="unauthorized"}"#),
        n + 4
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_token_not_valid_yet_gets_401_with_the_same_leeway_as_exp() {
    let hub = TestHub::with(secured()).await;
    let now = get_current_timestamp() as i64;
    let with_nbf = |nbf: i64| {
        let t = token_with(
            SECRET,
            Algorithm::HS256,
            "a1",
            "agent",
            3600,
            json!({ "nbf": nbf }),
        );
        hub.ws_url(&format!("/ws/agent?token={t}"))
    };
    assert_eq!(
        status_of(&with_nbf(now + 3600), &[]).await,
        401,
        "an hour early"
    );
    assert_eq!(
        status_of(&with_nbf(now + 60), &[]).await,
        401,
        "a minute early"
    );
    // Within the 5 s leeway (clock skew), and in the past: accepted.
    assert_eq!(status_of(&with_nbf(now + 2), &[]).await, 101, "2 s early");
    assert_eq!(
        status_of(&with_nbf(now - 60), &[]).await,
        101,
        "valid since"
    );
    // The HTTP API checks it the same way.
    let early = token_with(
        SECRET,
        Algorithm::HS256,
        "boss",
        "admin",
        3600,
        json!({ "nbf": now + 3600 }),
    );
    let (status, body) = http_get(
        &hub.http_url("/api/v1/agents"),
        &[("authorization", &format!("Bearer {early}"))],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    hub.stop().await;
}

#[tokio::test]
async fn tokens_of_another_role_get_403() {
    let hub = TestHub::with(secured()).await;
    let cases = [
        ("/ws/admin", "agent"),
        ("/ws/telephony", "agent"),
        ("/ws/agent", "admin"),
        ("/ws/telephony", "admin"),
        ("/ws/agent", "telephony"),
        ("/ws/admin", "telephony"),
    ];
    for (path, role) in cases {
        let t = token("a1", role);
        let url = hub.ws_url(&format!("{path}?token={t}"));
        assert_eq!(status_of(&url, &[]).await, 403, "{role} token on {path}");
        let bearer = format!("Bearer {t}");
        assert_eq!(
            status_of(&hub.ws_url(path), &[("authorization", &bearer)]).await,
            403,
            "{role} bearer on {path}"
        );
    }
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_rejected_total{cause="wrong_role"}"#),
        12
    );
    hub.stop().await;
}

#[tokio::test]
async fn valid_tokens_work_in_the_query_or_a_bearer_header() {
    let hub = TestHub::with(secured()).await;
    let t = token_with(
        SECRET,
        Algorithm::HS256,
        "a1",
        "agent",
        3600,
        json!({"name": "Ada", "teams": ["sales"]}),
    );
    let (_tab, hello) = try_connect(&hub.ws_url(&format!("/ws/agent?token={t}")), &[])
        .await
        .expect("agent via ?token=");
    assert_eq!(hello["role"], "agent");
    assert_eq!(hello["agent"]["agent_id"], "a1");
    assert_eq!(hello["agent"]["name"], "Ada", "name from the token");
    assert_eq!(hello["agent"]["teams"], json!(["sales"]));
    assert_eq!(hello["agent"]["connections"], 1);
    assert!(
        hello["epoch"].is_string() && hello["server_time"].is_u64(),
        "{hello}"
    );

    // Same agent, second tab through the header.
    let bearer = format!("Bearer {t}");
    let (_tab2, hello2) = try_connect(&hub.ws_url("/ws/agent"), &[("authorization", &bearer)])
        .await
        .expect("agent via bearer");
    assert_eq!(hello2["agent"]["agent_id"], "a1");
    assert_eq!(hello2["agent"]["connections"], 2);

    let admin_bearer = format!("Bearer {}", token("boss-1", "admin"));
    let (mut admin, hello) = try_connect(
        &hub.ws_url("/ws/admin"),
        &[("authorization", &admin_bearer)],
    )
    .await
    .expect("admin via bearer");
    assert_eq!(hello["role"], "admin");
    assert_eq!(hello["id"], "boss-1");
    assert_eq!(hello["epoch"], hello2["epoch"]);
    let snap = admin.request(json!({"type": "subscribe"})).await;
    assert_eq!(ids(&snap["snapshot"]["agents"]), ["a1"]);

    // The auth scheme is case-insensitive (RFC 7235).
    let lower = format!("bearer {}", token("pbx", "telephony"));
    let (_tel, hello) = try_connect(&hub.ws_url("/ws/telephony"), &[("authorization", &lower)])
        .await
        .expect("telephony via lowercase bearer");
    assert_eq!(hello["role"], "telephony");
    assert_eq!(hello["id"], "pbx");
    let admin_q = token("boss-2", "admin");
    let (_a2, hello) = try_connect(&hub.ws_url(&format!("/ws/admin?token={admin_q}")), &[])
        .await
        .expect("admin via ?token=");
    assert_eq!(hello["id"], "boss-2");
    hub.stop().await;
}

#[tokio::test]
async fn an_agent_acts_only_on_itself() {
    let hub = TestHub::with(secured()).await;
    let url = |sub: &str| hub.ws_url(&format!("/ws/agent?token={}", token(sub, "agent")));
    let (mut a1, _) = try_connect(&url("a1"), &[]).await.expect("a1");
    let (_a2, hello2) = try_connect(&url("a2"), &[]).await.expect("a2");
    let a2_before = hello2["agent"].clone();

    // A stray agent_id is ignored: the change applies to the token's agent.
    let ok = a1
        .request(json!({"type": "set_status", "status": "busy", "agent_id": "a2"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let upd = a1.update().await;
    assert_eq!(upd["agent"]["agent_id"], "a1");
    assert_eq!(upd["agent"]["status"], "busy");
    // Admin messages do not exist on an agent socket.
    for msg in [
        json!({"type": "set_agent_status", "agent_id": "a2", "status": "busy"}),
        json!({"type": "logout_agent", "agent_id": "a2"}),
        json!({"type": "subscribe"}),
    ] {
        let err = a1.request(msg.clone()).await;
        assert_eq!(err["type"], "error", "{msg} -> {err}");
        assert_eq!(err["code"], "bad_message", "{msg} -> {err}");
    }
    a1.expect_quiet().await;
    let admin = format!("Bearer {}", token("boss", "admin"));
    let (status, a2_now) = http_get(
        &hub.http_url("/api/v1/agents/a2"),
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a2_now, a2_before, "a2 untouched");
    hub.stop().await;
}

#[tokio::test]
async fn http_api_needs_an_admin_or_telephony_token_when_a_secret_is_set() {
    let hub = TestHub::with(secured()).await;
    let url = hub.http_url("/api/v1/agents");
    assert_eq!(http_get(&url, &[]).await.0, 401);
    let agent = format!("Bearer {}", token("a1", "agent"));
    assert_eq!(http_get(&url, &[("authorization", &agent)]).await.0, 403);
    let admin = format!("Bearer {}", token("boss", "admin"));
    let (status, body) = http_get(&url, &[("authorization", &admin)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["agents"], json!([]));
    let tel = token("pbx", "telephony");
    assert_eq!(
        http_get(&hub.http_url(&format!("/api/v1/summary?token={tel}")), &[])
            .await
            .0,
        200
    );
    for path in ["/api/v1/available", "/api/v1/summary", "/api/v1/agents/a1"] {
        assert_eq!(http_get(&hub.http_url(path), &[]).await.0, 401, "{path}");
    }
    // Telephony events over HTTP take a telephony token.
    let client = reqwest::Client::new();
    let post = |auth: Option<String>| {
        let mut req = client
            .post(hub.http_url("/api/v1/telephony/events"))
            .json(&event("outbound_started", "c1", "a1"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(post(None).await.expect("post").status().as_u16(), 401);
    assert_eq!(
        post(Some(admin.clone()))
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    // a1 is not known yet: the event creates nothing.
    let resp = post(Some(format!("Bearer {tel}"))).await.expect("post");
    assert_eq!(resp.status().as_u16(), 404);
    let tab_url = hub.ws_url(&format!("/ws/agent?token={}", token("a1", "agent")));
    let (_tab, _) = try_connect(&tab_url, &[]).await.expect("a1 logs in");
    let resp = post(Some(format!("Bearer {tel}"))).await.expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["agent"]["status"], "on_call", "{body}");
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Origin and dev mode
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn origin_allowlist_is_an_exact_match() {
    let hub = TestHub::with(Settings {
        allowed_origins: vec!["https://wall.example".to_string()],
        ..settings()
    })
    .await;
    let paths = [
        "/ws/agent?agent_id=a1",
        "/ws/admin?admin_id=x",
        "/ws/telephony?adapter=x",
    ];
    for path in paths {
        let url = hub.ws_url(path);
        assert_eq!(
            status_of(&url, &[("origin", "https://wall.example")]).await,
            101,
            "{path}"
        );
        assert_eq!(status_of(&url, &[]).await, 101, "no Origin: {path}");
        for bad in [
            "null",
            "https://wall.example.evil.com",
            "https://evil.com",
            "http://wall.example",
            "https://wall.example:443",
            "https://wall.example/",
            "https://sub.wall.example",
        ] {
            assert_eq!(
                status_of(&url, &[("origin", bad)]).await,
                403,
                "{bad} on {path}"
            );
        }
    }
    let api = hub.http_url("/api/v1/agents");
    assert_eq!(
        http_get(&api, &[("origin", "https://evil.com")]).await.0,
        403
    );
    assert_eq!(
        http_get(&api, &[("origin", "https://wall.example")])
            .await
            .0,
        200
    );
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_rejected_total{cause="origin"}"#),
        22
    );
    hub.stop().await;

    // With a secret too: a valid token does not make a foreign origin acceptable.
    let hub = TestHub::with(Settings {
        allowed_origins: vec!["https://wall.example".to_string()],
        ..secured()
    })
    .await;
    let url = hub.ws_url(&format!("/ws/admin?token={}", token("boss", "admin")));
    assert_eq!(
        status_of(&url, &[("origin", "https://evil.com")]).await,
        403
    );
    assert_eq!(
        status_of(&url, &[("origin", "https://wall.example")]).await,
        101
    );
    hub.stop().await;
}

#[tokio::test]
async fn without_an_allowlist_only_the_hubs_own_origin_passes() {
    let hub = TestHub::start().await;
    let url = hub.ws_url("/ws/admin?admin_id=x");
    let own = format!("http://{}", hub.addr);
    assert_eq!(status_of(&url, &[("origin", &own)]).await, 101);
    assert_eq!(status_of(&url, &[]).await, 101);
    let other_port = format!("http://127.0.0.1:{}", hub.addr.port() + 1);
    let localhost = format!("http://localhost:{}", hub.addr.port());
    for bad in [
        "https://evil.com",
        "null",
        other_port.as_str(),
        localhost.as_str(),
    ] {
        assert_eq!(status_of(&url, &[("origin", bad)]).await, 403, "{bad}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn dev_mode_is_refused_off_loopback() {
    let listener = match tokio::net::TcpListener::bind("0.0.0.0:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind 0.0.0.0 here ({e}); skipping");
            return;
        }
    };
    let addr = listener.local_addr().expect("addr");
    let result = tokio::time::timeout(
        PATIENCE,
        presence_hub::run(listener, Settings::default(), std::future::pending()),
    )
    .await
    .expect("run returns at once instead of serving");
    match result {
        Err(RunError::InsecureNoSecret(a)) => assert_eq!(a, addr),
        other => panic!("expected InsecureNoSecret, got {other:?}"),
    }
    // An empty secret from the command line counts as none.
    use clap::Parser;
    let cli = presence_hub::Cli::parse_from(["presence-hub", "--jwt-secret", ""]);
    assert!(cli.settings().expect("settings").jwt_secret.is_none());
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// What a bad frame must get back: `bad_message`, with this `ref` (or none).
struct Bad {
    msg: Message,
    reply_ref: Option<Value>,
}

fn bad(text: &str, reply_ref: Option<Value>) -> Bad {
    Bad {
        msg: Message::text(text.to_string()),
        reply_ref,
    }
}

/// Frames every socket kind must answer with `bad_message`.
fn common_bad_input() -> Vec<Bad> {
    vec![
        bad("not json", None),
        bad("{\"type\":\"ping\"", None),
        bad("[1,2]", None),
        bad("[]", None),
        bad("\"set_status\"", None),
        bad("42", None),
        bad("null", None),
        bad(r#"{"ref":4}"#, Some(json!(4))),
        bad(r#"{"type":5,"ref":"t"}"#, Some(json!("t"))),
        bad(r#"{"type":"no_such_type","ref":"u"}"#, Some(json!("u"))),
        bad(r#"{"type":"no_such_type"}"#, None),
        bad(r#"{"type":"ping","ref":{"x":1}}"#, None),
        bad(r#"{"type":"ping","ref":1.5}"#, None),
        Bad {
            msg: Message::binary(br#"{"type":"ping","ref":1}"#.to_vec()),
            reply_ref: None,
        },
    ]
}

async fn expect_bad_messages(c: &mut Client, cases: Vec<Bad>) -> usize {
    let n = cases.len();
    for case in cases {
        let shown = format!("{:?}", case.msg);
        c.send_raw(case.msg).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "error", "{shown} -> {reply}");
        assert_eq!(reply["code"], "bad_message", "{shown} -> {reply}");
        assert!(reply["message"].is_string(), "{shown} -> {reply}");
        assert_eq!(
            reply.get("ref"),
            case.reply_ref.as_ref(),
            "{shown} -> {reply}"
        );
    }
    n
}

#[tokio::test]
async fn bad_input_gets_bad_message_on_every_socket_and_the_socket_stays_open() {
    let hub = TestHub::start().await;

    let (mut tab, _) = hub.agent("a1").await;
    let mut cases = common_bad_input();
    cases.extend([
        bad(r#"{"type":"set_status","ref":"m1"}"#, Some(json!("m1"))),
        bad(r#"{"type":"accept_call","ref":"m2"}"#, Some(json!("m2"))),
        bad(r#"{"type":"decline_call","ref":"m3"}"#, Some(json!("m3"))),
        bad(
            r#"{"type":"set_status","ref":7,"status":5}"#,
            Some(json!(7)),
        ),
        bad(
            r#"{"type":"set_status","ref":8,"status":"busy","if_version":"x"}"#,
            Some(json!(8)),
        ),
        bad(
            r#"{"type":"set_status","ref":9,"status":"busy","note":["a"]}"#,
            Some(json!(9)),
        ),
        bad(
            r#"{"type":"accept_call","ref":10,"call_id":7}"#,
            Some(json!(10)),
        ),
        bad(
            r#"{"type":"accept_call","ref":11,"call_id":"has space"}"#,
            Some(json!(11)),
        ),
    ]);
    let agent_bad = expect_bad_messages(&mut tab, cases).await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "still serving: {ok}");
    assert_eq!(tab.update().await["agent"]["status"], "available");

    let mut admin = Client::connect(&hub.ws_url("/ws/admin?admin_id=boss")).await;
    assert_eq!(admin.recv().await["type"], "hello");
    let mut cases = common_bad_input();
    cases.extend([
        bad(
            r#"{"type":"set_agent_status","ref":"m1","status":"busy"}"#,
            Some(json!("m1")),
        ),
        bad(r#"{"type":"logout_agent","ref":"m2"}"#, Some(json!("m2"))),
        bad(
            r#"{"type":"resume","ref":"m3","epoch":"e"}"#,
            Some(json!("m3")),
        ),
        bad(r#"{"type":"resume","ref":"m4","seq":3}"#, Some(json!("m4"))),
        bad(
            r#"{"type":"subscribe","ref":7,"teams":"sales"}"#,
            Some(json!(7)),
        ),
        bad(
            r#"{"type":"subscribe","ref":8,"agents":[1,2]}"#,
            Some(json!(8)),
        ),
        bad(
            r#"{"type":"subscribe","ref":9,"teams":["bad team"]}"#,
            Some(json!(9)),
        ),
        bad(
            r#"{"type":"resume","ref":10,"epoch":"e","seq":-1}"#,
            Some(json!(10)),
        ),
        bad(
            r#"{"type":"set_agent_status","ref":11,"agent_id":"a1"}"#,
            Some(json!(11)),
        ),
    ]);
    let admin_bad = expect_bad_messages(&mut admin, cases).await;
    let snap = admin.request(json!({"type": "subscribe"})).await;
    assert_eq!(
        ids(&snap["snapshot"]["agents"]),
        ["a1"],
        "still serving: {snap}"
    );

    let mut tel = hub.telephony().await;
    let mut cases = common_bad_input();
    cases.extend([
        bad(
            r#"{"type":"call_offered","ref":"m1","call_id":"c1","agent_id":"a1"}"#,
            Some(json!("m1")),
        ),
        bad(
            r#"{"type":"call_answered","ref":"m2","event_id":"e2","agent_id":"a1"}"#,
            Some(json!("m2")),
        ),
        bad(
            r#"{"type":"call_ended","ref":"m3","event_id":"e3","call_id":"c1"}"#,
            Some(json!("m3")),
        ),
        bad(
            r#"{"type":"call_offered","ref":7,"event_id":"e7","call_id":5,"agent_id":"a1"}"#,
            Some(json!(7)),
        ),
        bad(
            r#"{"type":"call_offered","ref":8,"event_id":"e8","call_id":"c1","agent_id":"a1","ring_timeout_ms":0}"#,
            Some(json!(8)),
        ),
        bad(
            r#"{"type":"call_offered","ref":9,"event_id":"e9","call_id":"c1","agent_id":"a1","ring_timeout_ms":"5"}"#,
            Some(json!(9)),
        ),
    ]);
    let tel_bad = expect_bad_messages(&mut tel, cases).await;
    let ok = tel.request(event("call_offered", "c1", "a1")).await;
    assert_eq!(ok["accepted"], true, "still serving: {ok}");

    // Nothing else came out of all that, and the admin saw only the real changes.
    assert_eq!(admin.update().await["agent"]["status"], "ringing");
    assert_eq!(tab.update().await["agent"]["status"], "ringing");
    assert_eq!(tab.recv().await["type"], "call_offered");
    tab.expect_quiet().await;
    admin.expect_quiet().await;
    tel.expect_quiet().await;
    let m = metrics(&hub).await;
    for (role, n) in [
        ("agent", agent_bad),
        ("admin", admin_bad),
        ("telephony", tel_bad),
    ] {
        let sample = format!(r#"presence_hub_bad_messages_total{{role="{role}"}}"#);
        assert_eq!(metric(&m, &sample), n as u64, "{role}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn telephony_http_endpoint_answers_bad_input_with_400() {
    let hub = TestHub::start().await;
    let url = hub.http_url("/api/v1/telephony/events");
    let client = reqwest::Client::new();
    for body in [
        "not json",
        "[1]",
        r#"{"type":"nope","event_id":"e","call_id":"c","agent_id":"a"}"#,
        r#"{"type":"call_offered","call_id":"c","agent_id":"a"}"#,
        r#"{"type":"call_offered","event_id":"e","call_id":5,"agent_id":"a"}"#,
    ] {
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let v: Value = resp.json().await.expect("json error body");
        assert_eq!(v["code"], "bad_message", "{body} -> {v}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn messages_over_64_kib_close_with_1009_on_every_socket() {
    let hub = TestHub::start().await;
    let limit = 64 * 1024;
    // The largest message allowed is handled normally.
    let ping_of = |len: usize| {
        let head = r#"{"type":"ping","ref":1,"pad":""#;
        let tail = r#""}"#;
        let s = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
        assert_eq!(s.len(), len);
        s
    };
    let mut sockets = vec![
        hub.agent("big").await.0,
        Client::connect(&hub.ws_url("/ws/admin?admin_id=big")).await,
        hub.telephony().await,
    ];
    assert_eq!(sockets[1].recv().await["type"], "hello");
    for (i, mut c) in sockets.drain(..).enumerate() {
        c.send_raw(Message::text(ping_of(limit))).await;
        let pong = c.recv().await;
        assert_eq!(pong["type"], "pong", "socket {i}: {pong}");
        assert_eq!(pong["ref"], 1);
        let msg = if i == 2 {
            Message::binary(vec![b'x'; limit + 1])
        } else {
            Message::text(ping_of(limit + 1))
        };
        c.send_raw(msg).await;
        assert_eq!(c.closed().await, Closed::Code(1009), "socket {i}");
    }
    // A declared length far beyond the limit is refused from the frame header alone: send
    // just the header of a masked 8 MiB text frame, nothing of its payload.
    let (mut c, _) = hub.agent("huge").await;
    let mut header = vec![0x81, 0xFF];
    header.extend_from_slice(&(8u64 * 1024 * 1024).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    {
        use tokio::io::AsyncWriteExt;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.ws.get_mut() else {
            panic!("plain TCP");
        };
        tcp.write_all(&header).await.expect("raw header");
    }
    assert_eq!(c.closed().await, Closed::Code(1009));
    // The closed agent sockets count as gone.
    let (_, big) = hub.get("/api/v1/agents/big").await;
    let deadline = Instant::now() + PATIENCE;
    let mut big = big;
    while big["connections"] != 0 {
        assert!(Instant::now() < deadline, "{big}");
        tokio::task::yield_now().await;
        big = hub.agent_state("big").await;
    }
    hub.stop().await;
}

#[tokio::test]
async fn note_length_and_status_names_are_checked() {
    let hub = TestHub::start().await;
    let (mut tab, _) = hub.agent("a1").await;
    let mut admin = Client::connect(&hub.ws_url("/ws/admin?admin_id=boss")).await;
    assert_eq!(admin.recv().await["type"], "hello");

    for note in ["n".repeat(65), "é".repeat(65)] {
        let err = tab
            .request(json!({"type": "set_status", "status": "busy", "note": note}))
            .await;
        assert_eq!(err["code"], "bad_message", "{err}");
        let err = admin
            .request(json!({"type": "set_agent_status", "agent_id": "a1", "status": "busy", "note": note}))
            .await;
        assert_eq!(err["code"], "bad_message", "{err}");
    }
    for status in ["lunch", "ringing", "on_call", "wrap_up", "Available", ""] {
        let err = tab
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(err["type"], "error", "{status}: {err}");
        assert_eq!(err["code"], "invalid_status", "{status}: {err}");
        let err = admin
            .request(json!({"type": "set_agent_status", "agent_id": "a1", "status": status}))
            .await;
        assert_eq!(err["code"], "invalid_status", "{status}: {err}");
    }
    let err = admin
        .request(json!({"type": "set_agent_status", "agent_id": "ghost", "status": "busy"}))
        .await;
    assert_eq!(err["code"], "unknown_agent", "{err}");
    // Nothing changed so far.
    tab.expect_quiet().await;
    assert_eq!(hub.agent_state("a1").await["version"], 1);

    // 64 characters, even of two bytes each, are fine.
    let note = "é".repeat(64);
    let ok = tab
        .request(json!({"type": "set_status", "status": "on_break", "note": note}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let upd = tab.update().await;
    assert_eq!(upd["agent"]["note"], note.as_str());
    let ok = admin
        .request(json!({"type": "set_agent_status", "agent_id": "a1", "status": "busy", "note": "n".repeat(64)}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(tab.update().await["agent"]["reason"], "admin");
    // The long notes count as bad messages, the unknown statuses do not.
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_bad_messages_total{role="agent"}"#),
        2
    );
    assert_eq!(
        metric(&m, r#"presence_hub_bad_messages_total{role="admin"}"#),
        2
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_json_array_is_never_a_message() {
    let hub = TestHub::start().await;
    let (mut tab, _) = hub.agent("a1").await;
    // 17 elements, one per field of the decoded request, in declaration order.
    let mut arr = vec![json!("ping"), json!(5)];
    arr.extend(std::iter::repeat_n(Value::Null, 15));
    tab.send(Value::Array(arr)).await;
    let reply = tab.recv().await;
    assert_eq!(reply["code"], "bad_message", "{reply}");
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn http_api_lists_filters_orders_and_summarizes() {
    let dir = Directory::from_toml(
        r#"
        [[agents]]
        id = "a1"
        name = "Ada"
        teams = ["sales"]
        ring_groups = ["sales-line"]
        [[agents]]
        id = "a2"
        name = "Bob"
        teams = ["support"]
        [[agents]]
        id = "a3"
        name = "Cy"
        teams = ["sales", "support"]
        [[agents]]
        id = "a4"
        name = "Di"
        teams = ["sales"]
        [[ring_groups]]
        id = "sales-line"
        members = ["a3"]
        "#,
    )
    .expect("directory");
    let hub = TestHub::with(Settings {
        directory: dir,
        ..settings()
    })
    .await;
    let mut tabs = Vec::new();
    for id in ["a1", "a2", "a3", "a4"] {
        tabs.push(hub.agent(id).await.0);
    }
    // Changes 10 s apart, so "longest" is well defined: a3, a2, a1 become available in that
    // order (against id order), a4 busy.
    for (k, status) in [
        (2, "available"),
        (1, "available"),
        (0, "available"),
        (3, "busy"),
    ] {
        tokio::time::advance(Duration::from_secs(10)).await;
        let ok = tabs[k]
            .request(json!({"type": "set_status", "status": status}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    tokio::time::advance(Duration::from_secs(5)).await;

    let (status, all) = hub.get("/api/v1/agents").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all["agents"]), ["a1", "a2", "a3", "a4"]);
    assert_eq!(all["seq"], 8, "4 logins + 4 changes");
    assert!(all["epoch"].is_string());
    for (query, expected) in [
        ("?team=support", vec!["a2", "a3"]),
        ("?status=available", vec!["a1", "a2", "a3"]),
        ("?team=sales&status=available", vec!["a1", "a3"]),
        ("?status=busy", vec!["a4"]),
        ("?status=ringing", vec![]),
        ("?team=nobody", vec![]),
    ] {
        let (status, body) = hub.get(&format!("/api/v1/agents{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(ids(&body["agents"]), expected, "{query}");
        assert_eq!(body["seq"], 8, "{query}");
    }
    for query in ["?status=lunch", "?team=bad%20team"] {
        let (status, body) = hub.get(&format!("/api/v1/agents{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["code"], "bad_message", "{query}: {body}");
    }

    let (status, a3) = hub.get("/api/v1/agents/a3").await;
    assert_eq!(status, 200);
    assert_eq!(a3, all["agents"][2], "one agent equals its list entry");
    assert_eq!(a3["name"], "Cy");
    assert_eq!(a3["status"], "available");
    for id in ["nobody", "bad%20id"] {
        let (status, body) = hub.get(&format!("/api/v1/agents/{id}")).await;
        assert_eq!(status, 404, "{id}");
        assert_eq!(body["code"], "unknown_agent", "{id}: {body}");
    }

    for (query, expected) in [
        ("", vec!["a3", "a2", "a1"]),
        ("?ring_group=sales-line", vec!["a3", "a1"]),
        ("?team=sales", vec!["a3", "a1"]),
        ("?team=support&ring_group=sales-line", vec!["a3"]),
    ] {
        let (status, body) = hub.get(&format!("/api/v1/available{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(
            ids(&body["agents"]),
            expected,
            "longest available first: {query}"
        );
    }
    // An unknown ring group is a 404 (issue 12 item 6), not an empty list.
    let (status, body) = hub.get("/api/v1/available?ring_group=nope").await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));

    let (status, summary) = hub.get("/api/v1/summary").await;
    assert_eq!(status, 200);
    assert_eq!(
        summary["counts"],
        json!({"offline": 0, "available": 3, "busy": 1, "on_break": 0, "ringing": 0, "on_call": 0, "wrap_up": 0})
    );
    assert_eq!(summary["total"], 4);
    assert_eq!(summary["connected"], 4);
    assert_eq!(summary["longest"]["available"]["agent_id"], "a3");
    assert_eq!(summary["longest"]["available"]["seconds"], 35);
    assert_eq!(summary["longest"]["busy"]["agent_id"], "a4");
    assert_eq!(summary["longest"]["busy"]["seconds"], 5);
    assert_eq!(summary["longest"]["offline"], Value::Null);
    let (_, support) = hub.get("/api/v1/summary?team=support").await;
    assert_eq!(support["total"], 2);
    assert_eq!(support["counts"]["available"], 2);
    assert_eq!(support["longest"]["available"]["agent_id"], "a3");
    hub.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics_report_what_happened() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.admin("boss").await;
    let (mut tab, hello) = hub.agent("a1").await;
    let mut tel = hub.telephony().await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok");
    let ok = tel.request(event("call_offered", "c1", "a1")).await;
    assert_eq!(ok["accepted"], true);
    for _ in 0..3 {
        admin.update().await;
    }

    let (status, health) = hub.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["epoch"], hello["epoch"]);

    let m = metrics(&hub).await;
    for (sample, value) in [
        (r#"presence_hub_connections{role="agent"}"#, 1),
        (r#"presence_hub_connections{role="admin"}"#, 1),
        (r#"presence_hub_connections{role="telephony"}"#, 1),
        (r#"presence_hub_agents{status="ringing"}"#, 1),
        (r#"presence_hub_agents{status="available"}"#, 0),
        (r#"presence_hub_agents{status="offline"}"#, 0),
        (r#"presence_hub_messages_in_total{role="agent"}"#, 1),
        (r#"presence_hub_messages_in_total{role="admin"}"#, 1),
        (r#"presence_hub_messages_in_total{role="telephony"}"#, 1),
        ("presence_hub_telephony_events_total", 1),
        ("presence_hub_agent_updates_total", 3),
        ("presence_hub_admin_deliveries_total", 3),
        (
            r#"presence_hub_slow_consumers_dropped_total{role="admin"}"#,
            0,
        ),
        ("presence_hub_admin_slow_dropped_total", 0),
        ("presence_hub_admin_subscribers", 1),
    ] {
        assert_eq!(metric(&m, sample), value, "{sample}");
    }
    assert!(
        m.contains("# TYPE presence_hub_fanout_lag_bytes gauge"),
        "{m}"
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------
// Shutdown and liveness
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn graceful_shutdown_closes_every_socket_with_1001() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.admin("boss").await;
    let mut idle_admin = Client::connect(&hub.ws_url("/ws/admin?admin_id=idle")).await;
    assert_eq!(idle_admin.recv().await["type"], "hello");
    let (mut tab1, _) = hub.agent("a1").await;
    let (mut tab2, _) = hub.agent("a1").await;
    let (mut other, _) = hub.agent("a2").await;
    let mut tel = hub.telephony().await;
    let ok = tab1
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok");
    let addr = hub.addr;
    hub.stop().await;
    for (name, c) in [
        ("admin", &mut admin),
        ("idle admin", &mut idle_admin),
        ("tab1", &mut tab1),
        ("tab2", &mut tab2),
        ("other agent", &mut other),
        ("telephony", &mut tel),
    ] {
        let (frames, closed) = c.drain_until_closed().await;
        assert_eq!(closed, Closed::Code(1001), "{name}");
        assert!(
            frames
                .iter()
                .all(|f| f["type"] == "agent" || f["type"] == "ok"),
            "{name}: no logout on shutdown: {frames:?}"
        );
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is gone"
    );
}

fn liveness_settings() -> Settings {
    Settings {
        ping_interval: Duration::from_secs(25),
        pong_timeout: Duration::from_secs(10),
        ..Settings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_keeps_reading_stays_open_across_ping_intervals() {
    use futures::StreamExt;
    let hub = TestHub::with(liveness_settings()).await;
    let (mut tab, _) = hub.agent("a1").await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(200);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, tab.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert!(pings >= 7, "pinged every 25 s over 200 s: {pings}");
    let pong = tab.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let a1 = hub.agent_state("a1").await;
    assert_eq!(a1["connections"], 1);
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_dead_peers_total{role="agent"}"#),
        0
    );
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_reads_is_closed_after_interval_plus_timeout() {
    let hub = TestHub::with(liveness_settings()).await;
    let (mut admin, _) = hub.admin("boss").await;
    let (dead, _) = hub.agent("a2").await;
    let opened = Instant::now();
    let login = admin.update().await;
    assert_eq!(login["agent"]["connections"], 1);

    // The admin keeps reading (and so answers its own pings); the agent never does.
    let gone = loop {
        let u = next_json_within(&mut admin, Duration::from_secs(600))
            .await
            .expect("an update before the limit");
        if u["agent"]["agent_id"] == "a2" {
            break u;
        }
    };
    let elapsed = opened.elapsed();
    assert_eq!(gone["agent"]["connections"], 0, "{gone}");
    assert!(
        elapsed >= Duration::from_secs(35) && elapsed <= Duration::from_secs(36),
        "detected after ping interval + pong timeout, not {elapsed:?}"
    );
    // The admin itself is alive, well past its own first ping.
    let pong = admin.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_dead_peers_total{role="agent"}"#),
        1
    );
    assert_eq!(
        metric(&m, r#"presence_hub_dead_peers_total{role="admin"}"#),
        0
    );
    assert_eq!(metric(&m, r#"presence_hub_connections{role="agent"}"#), 0);
    assert_eq!(metric(&m, r#"presence_hub_connections{role="admin"}"#), 1);
    drop(dead);
    hub.stop().await;
}

/// Issue 12, item 13: unknown routes under `/api` answer a JSON 404 (not the web demo's
/// plain text), and every error of the HTTP API has the same keys in the same order
/// (`type`, `code`, `message`): auth refusals, directory and report errors, the JSON API's.
#[tokio::test]
async fn api_errors_are_json_with_one_key_order_and_unknown_api_routes_404() {
    let hub = TestHub::with(secured()).await;
    let admin = token("boss", "admin");
    let http = reqwest::Client::new();
    // (method, path, body, token role, status, code)
    type Case<'a> = (
        reqwest::Method,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: [Case; 9] = [
        (
            reqwest::Method::GET,
            "/api/v1/agents",
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/agents",
            None,
            Some("agent"),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/nope",
            None,
            Some("admin"),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/api/v2/anything?x=1",
            Some("{}"),
            None,
            404,
            "not_found",
        ),
        (reqwest::Method::GET, "/api", None, None, 404, "not_found"),
        (
            reqwest::Method::PUT,
            "/api/v1/directory/agents/a1",
            Some("[]"),
            Some("admin"),
            400,
            "bad_message",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/agents/ghost",
            None,
            Some("admin"),
            404,
            "unknown_agent",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/reports/status-time?from=x",
            None,
            Some("admin"),
            400,
            "bad_message",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/available?ring_group=nope",
            None,
            Some("admin"),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, role, status, code) in cases {
        let mut req = http.request(method.clone(), hub.http_url(path));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        match role {
            Some("admin") => req = req.bearer_auth(&admin),
            Some(r) => req = req.bearer_auth(token("x1", r)),
            None => {}
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        let text = resp.text().await.expect("body");
        let prefix = format!(r#"{{"type":"error","code":"{code}","message":""#);
        assert!(text.starts_with(&prefix), "{method} {path}: {text}");
    }
    // Outside /api, an unknown path is still the web server's 404.
    let resp = http
        .get(hub.http_url("/nope.html"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 404);
    hub.stop().await;
}

/// Issue 12, item 10: with `--metrics-listen` the metrics are served on their own address
/// only; the main (published) port answers 404 for `/metrics`.
#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let hub = TestHub::with(Settings {
        metrics_listen: Some(port),
        ..secured()
    })
    .await;
    let main = reqwest::get(hub.http_url("/metrics")).await.expect("get");
    assert_eq!(main.status().as_u16(), 404, "not on the main port");
    let mut scraped = None;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://{port}/metrics")).await {
            scraped = Some((r.status().as_u16(), r.text().await.unwrap_or_default()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, text) = scraped.expect("the metrics address answers");
    assert_eq!(status, 200);
    assert!(
        text.contains("presence_hub_agents{status=\"available\"}"),
        "{text}"
    );
    let other = reqwest::get(format!("http://{port}/api/v1/agents"))
        .await
        .expect("get");
    assert_eq!(other.status().as_u16(), 404, "only /metrics there");
    hub.stop().await;
    assert!(
        reqwest::get(format!("http://{port}/metrics"))
            .await
            .is_err(),
        "closed with the hub"
    );
}
