//! Security table: "tokens in logs: never". The hub runs in this process, on the test's
//! single-threaded runtime, with a tracing subscriber of that thread at TRACE for everything
//! (the hub, axum, tower, hyper, `log` records via the bridge) writing into a buffer (the
//! store's own threads are not captured: no token reaches them); valid and invalid tokens
//! travel in `?token=` and in `Authorization: Bearer`, on every socket path and the HTTP
//! API; then the captured text must contain neither a token nor `token=`.
//!
//! The clients (tungstenite's client handshake, reqwest, hyper-util's client) run in the
//! same process and are filtered out of the capture: they are not the hub.

use crate::common::*;
use jsonwebtoken::get_current_timestamp;
use presence_hub::Settings;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &str = "log-hygiene-secret-0123456789";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

fn token(sub: &str, role: &str) -> String {
    jwt(SECRET, sub, role, get_current_timestamp() + 3600)
}

/// Connects; returns the HTTP status (101 when upgraded) and keeps an upgraded socket
/// open long enough to get its hello.
async fn ws_status(url: &str, bearer: Option<&str>) -> u16 {
    let mut req = url.into_client_request().expect("url");
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            let mut c = Client::from_ws(ws);
            assert_eq!(c.recv().await["type"], "hello");
            let pong = c.request(json!({"type": "ping"})).await;
            assert_eq!(pong["type"], "pong");
            c.close().await;
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test]
async fn tokens_and_token_query_strings_are_never_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The subscriber is this thread's only (the test's runtime is single-threaded: the hub's
    // tasks run here), so the other tests of this process neither log into the capture nor
    // pay for TRACE. (`set_default` also installs the `log` bridge, which hands each record to
    // the subscriber of the thread it is logged on.)
    let _subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            "trace,tungstenite::handshake::client=off,reqwest=off,hyper_util::client=off",
        )
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .set_default();

    let hub = TestHub::with(Settings {
        jwt_secret: Some(SECRET.to_string()),
        ..settings()
    })
    .await;
    let agent = token("a1", "agent");
    let admin = token("boss", "admin");
    let tel = token("pbx", "telephony");
    let forged = "SECRETTOKEN.forged.value";
    let mut secrets = vec![
        agent.clone(),
        admin.clone(),
        tel.clone(),
        forged.to_string(),
    ];
    // The signature part alone must not leak either.
    secrets.extend(
        [&agent, &admin, &tel].map(|t| t.rsplit('.').next().expect("signature").to_string()),
    );

    let url = |path: &str, token: &str| hub.ws_url(&format!("{path}?token={token}"));
    assert_eq!(ws_status(&url("/ws/agent", &agent), None).await, 101);
    assert_eq!(ws_status(&url("/ws/agent", forged), None).await, 401);
    assert_eq!(ws_status(&url("/ws/admin", &agent), None).await, 403);
    assert_eq!(ws_status(&url("/ws/admin", &admin), None).await, 101);
    assert_eq!(
        ws_status(&hub.ws_url("/ws/telephony"), Some(&tel)).await,
        101
    );
    assert_eq!(
        ws_status(&hub.ws_url("/ws/telephony"), Some(forged)).await,
        401
    );
    assert_eq!(ws_status(&hub.ws_url("/ws/agent"), Some(&admin)).await, 403);

    let client = reqwest::Client::new();
    for (path, bearer, want) in [
        (format!("/api/v1/agents?token={admin}"), None, 200),
        (format!("/api/v1/agents?token={forged}"), None, 401),
        (format!("/api/v1/summary?team=x&token={tel}"), None, 200),
        ("/api/v1/agents/a1".to_string(), Some(&admin), 200),
        ("/api/v1/agents".to_string(), Some(&agent), 403),
        (format!("/no/such/page?token={agent}"), None, 404),
        (
            format!("/api/v1/agents?token={admin}&team=bad%20team"),
            None,
            400,
        ),
    ] {
        let mut req = client.get(hub.http_url(&path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let status = req.send().await.expect("get").status().as_u16();
        assert_eq!(status, want, "{path}");
    }
    let resp = client
        .post(hub.http_url(&format!("/api/v1/telephony/events?token={tel}")))
        .json(&event("outbound_started", "c1", "a1"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client
        .post(hub.http_url("/api/v1/telephony/events"))
        .bearer_auth(forged)
        .body("not even json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    hub.stop().await;

    let log = capture.text();
    // The capture works: the hub's own debug lines and tungstenite's traces are in it.
    assert!(
        log.contains("socket opened"),
        "capture is empty or partial:\n{log}"
    );
    assert!(log.contains("presence-hub listening"), "{log}");
    assert!(log.lines().count() > 50, "{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a token was logged:\n{log}");
    }
    assert!(!log.contains("SECRETTOKEN"), "{log}");
    assert!(
        !log.contains("token="),
        "a token query string was logged:\n{log}"
    );
    assert!(!log.contains(SECRET), "the secret was logged");
}
