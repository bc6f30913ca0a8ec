//! Test harness: starts the real hub on 127.0.0.1:0 and speaks its protocol over real
//! sockets with tokio-tungstenite and reqwest; tokens, child hub processes and NATS servers
//! in its submodules. Shared by every test target (`tests/it` and the process-measuring
//! targets beside it).

pub mod cluster;
pub mod nats;
pub mod process;
pub mod raw;
pub mod tokens;

pub use process::{assert_alone, free_port, run_alone, status_kib, TempDir};
pub use tokens::{ids, jwt, token_with};

use futures::{SinkExt, StreamExt};
use presence_hub::config::RateLimit;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Generous safety net so a broken test fails instead of hanging (not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestHub {
    pub addr: SocketAddr,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), presence_hub::RunError>>,
}

/// Settings for tests: defaults, with pings far away unless a test wants them, and no
/// per-socket rate limits (tests drive one socket far faster than a person would; the
/// limits have their own tests in `tests/it/abuse.rs`, with the defaults).
pub fn settings() -> Settings {
    Settings {
        ping_interval: Duration::from_secs(3600),
        agent_rate: RateLimit::UNLIMITED,
        admin_rate: RateLimit::UNLIMITED,
        telephony_rate: RateLimit::UNLIMITED,
        http_telephony_rate: RateLimit::UNLIMITED,
        ..Settings::default()
    }
}

/// `settings` with `ids` in the directory (no name, teams or groups): agents the hub knows
/// before any of them logs in, so telephony events and admin actions reach them.
pub fn with_directory_agents(mut settings: Settings, ids: &[&str]) -> Settings {
    let toml: String = ids
        .iter()
        .map(|id| format!("[[agents]]\nid = \"{id}\"\n"))
        .collect();
    settings.directory = presence_hub::directory::Directory::from_toml(&toml).expect("directory");
    settings
}

impl TestHub {
    pub async fn start() -> TestHub {
        TestHub::with(settings()).await
    }

    pub async fn with(settings: Settings) -> TestHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, handle) = presence_hub::spawn(listener, settings);
        TestHub { addr, stop, handle }
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Connects an agent tab (dev mode) and returns it with its `hello`.
    pub async fn agent(&self, id: &str) -> (Client, Value) {
        let mut c = Client::connect(&self.ws_url(&format!("/ws/agent?agent_id={id}"))).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
        (c, hello)
    }

    /// Connects an admin (dev mode), reads `hello`, subscribes to everything.
    pub async fn admin(&self, id: &str) -> (Client, Value) {
        let mut c = Client::connect(&self.ws_url(&format!("/ws/admin?admin_id={id}"))).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
        let snapshot = c.request(json!({"type": "subscribe"})).await;
        assert_eq!(snapshot["type"], "ok", "{snapshot}");
        (c, snapshot)
    }

    /// Connects a telephony adapter (dev mode) and reads its `hello`.
    pub async fn telephony(&self) -> Client {
        let mut c = Client::connect(&self.ws_url("/ws/telephony?adapter=test")).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "hello", "first frame is hello: {hello}");
        c
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(self.http_url(path)).await.expect("http get");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.http_url(path))
            .json(body)
            .send()
            .await
            .expect("http post");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The hub's view of one agent.
    pub async fn agent_state(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/agents/{id}")).await;
        assert_eq!(status, 200, "agent {id} exists");
        body
    }

    /// Stops the hub (as SIGTERM would) and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(PATIENCE, self.handle).await;
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that keeps frames it skipped while waiting for a reply.
pub struct Client {
    pub ws: Ws,
    pending: VecDeque<Value>,
    next_ref: u64,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    NoFrame,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url.into_client_request().expect("url"))
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client {
            ws,
            pending: VecDeque::new(),
            next_ref: 1,
        }
    }

    pub fn from_ws(ws: Ws) -> Client {
        Client {
            ws,
            pending: VecDeque::new(),
            next_ref: 1,
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next JSON text frame (pings are answered by tungstenite while reading).
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket ended")
                .expect("socket error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("frame is JSON");
                }
                Message::Close(f) => panic!("socket closed unexpectedly: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Skips frames until one of `ty` arrives (the skipped ones are dropped).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Sends `v` with a fresh `ref` and returns the reply with that ref; other frames that
    /// arrive meanwhile stay queued for `recv`.
    pub async fn request(&mut self, mut v: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        v["ref"] = json!(r);
        self.send(v).await;
        let mut skipped = Vec::new();
        let reply = loop {
            let frame = match self.pending.pop_front() {
                Some(f) => f,
                None => self.recv_wire().await,
            };
            if frame["ref"] == json!(r) {
                break frame;
            }
            skipped.push(frame);
        };
        for f in skipped.into_iter().rev() {
            self.pending.push_front(f);
        }
        reply
    }

    /// The next `agent` update.
    pub async fn update(&mut self) -> Value {
        self.recv_type("agent").await
    }

    /// Reads until the socket closes; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Close(Some(f)))) => return Closed::Code(u16::from(f.code)),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Closed::NoFrame,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until close, returning the frames seen before it and the close code.
    pub async fn drain_until_closed(&mut self) -> (Vec<Value>, Closed) {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).expect("json"))
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return (frames, Closed::Code(u16::from(f.code)))
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return (frames, Closed::NoFrame)
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Asserts no frame arrives for `d` (a ping round-trip proves the socket is live and
    /// that nothing was queued before the pong).
    pub async fn expect_quiet(&mut self) {
        assert!(
            self.pending.is_empty(),
            "unexpected queued frames: {:?}",
            self.pending
        );
        let r = self.next_ref;
        self.next_ref += 1;
        self.send(json!({"type": "ping", "ref": r})).await;
        let v = self.recv_wire().await;
        assert_eq!(
            v["type"], "pong",
            "expected nothing before the pong, got {v}"
        );
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A telephony event with a fresh event id.
pub fn event(kind: &str, call_id: &str, agent_id: &str) -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({"type": kind, "event_id": format!("ev-{n}"), "call_id": call_id, "agent_id": agent_id})
}

/// The value of one Prometheus sample (`name{labels}` exactly as rendered).
pub fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {sample} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("metric {sample} is a number"))
}

/// The hub's `/metrics` text.
pub async fn metrics(hub: &TestHub) -> String {
    reqwest::get(hub.http_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Polls `/metrics` until `sample` has `value` (counters updated just after a socket
/// task's last frame went out).
pub async fn eventually_metric(hub: &TestHub, sample: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = metric(&metrics(hub).await, sample);
        if got == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} stayed {got}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A WebSocket client on `path_and_query` whose kernel receive buffer is small and fixed
/// (no autotuning), so that not reading it fills the path from the hub quickly; its
/// `hello` is read.
pub async fn small_buffer_client(hub: &TestHub, path_and_query: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(hub.addr).await.expect("connect");
    let (ws, _) =
        tokio_tungstenite::client_async(hub.ws_url(path_and_query), MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    let mut c = Client::from_ws(ws);
    assert_eq!(c.recv().await["type"], "hello");
    c
}
