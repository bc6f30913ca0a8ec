//! Test rig: a real presence-hub on 127.0.0.1:0 (through its public `spawn` and `Settings`
//! only), the adapter on 127.0.0.1:0, a local stand-in for Twilio's REST API that records
//! every request, and a "Twilio" that sends signed, form-encoded webhooks shaped like
//! Twilio's documented callbacks. Agents are real WebSocket clients of the hub.
#![allow(dead_code)]

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use futures::{SinkExt, StreamExt};
use presence_twilio::{signature, Fallback, GroupPolicy, Routing, Secret, Settings};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Safety net so a broken test fails instead of hanging (not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);
pub const TOKEN: &str = "test-auth-token-0123456789abcdef";
pub const ACCOUNT: &str = "AC00000000000000000000000000000001";
pub const NUMBER: &str = "+15550000000";
pub const VOICEMAIL_NUMBER: &str = "+15550000001";
pub const CALLER: &str = "+15551234567";
pub const WRAP_UP_SECS: u64 = 30;

/// One request the REST stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
}

pub struct Rig {
    pub hub: SocketAddr,
    pub adapter: SocketAddr,
    pub rest: mpsc::Receiver<Recorded>,
    pub http: reqwest::Client,
}

/// The routing the flows use: `NUMBER` rings `sales` (2 attempts, say-and-hang-up),
/// `VOICEMAIL_NUMBER` rings `support` (redirect to voicemail).
pub fn routing() -> Routing {
    Routing::default()
        .with_number(NUMBER, "sales")
        .with_number(VOICEMAIL_NUMBER, "support")
        .with_group(
            "sales",
            GroupPolicy {
                ring_timeout_secs: 20,
                max_attempts: 2,
                fallback: Fallback::Say("Sorry, nobody can take your call.".into()),
            },
        )
        .with_group(
            "support",
            GroupPolicy {
                ring_timeout_secs: 15,
                max_attempts: 3,
                fallback: Fallback::Redirect("https://voicemail.example/box?id=7".into()),
            },
        )
}

pub async fn start_hub() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hub");
    let addr = listener.local_addr().expect("addr");
    let _running = hub_on(listener);
    addr
}

/// A running hub: `stop()` shuts it down (sockets closed with 1001) and waits for the end.
pub struct HubHandle {
    stop: Box<dyn FnOnce() + Send>,
    ended: tokio::task::JoinHandle<()>,
}

impl HubHandle {
    pub async fn stop(self) {
        (self.stop)();
        tokio::time::timeout(PATIENCE, self.ended)
            .await
            .expect("hub stopped in time")
            .expect("hub task");
    }
}

/// Starts the hub on `listener` (dev mode, wrap-up `WRAP_UP_SECS`, in-memory database).
pub fn hub_on(listener: TcpListener) -> HubHandle {
    let settings = presence_hub::Settings {
        wrap_up: Duration::from_secs(WRAP_UP_SECS),
        ..presence_hub::Settings::default()
    };
    let (stop, task) = presence_hub::spawn(listener, settings);
    HubHandle {
        stop: Box::new(move || stop.cancel()),
        ended: tokio::spawn(async move {
            let _ = task.await;
        }),
    }
}

/// How the REST stand-in answers.
#[derive(Debug, Clone)]
pub enum RestMode {
    /// 200 and the call's JSON, like Twilio.
    Works,
    /// 503 to every request (Twilio unreachable or failing), still recording it.
    Fails,
    /// Records the request, then holds it until a permit is added, then answers 503.
    HeldThenFails(std::sync::Arc<tokio::sync::Semaphore>),
}

/// The REST stand-in: records every call update and answers as `mode` says.
pub async fn start_rest(mode: RestMode) -> (SocketAddr, mpsc::Receiver<Recorded>) {
    async fn update(
        State((tx, mode)): State<(mpsc::Sender<Recorded>, RestMode)>,
        Path((account, call)): Path<(String, String)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let rec = Recorded {
            path: format!("/2010-04-01/Accounts/{account}/Calls/{call}"),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            form,
        };
        let _ = tx.send(rec).await;
        match mode {
            RestMode::Works => {}
            RestMode::Fails => {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            RestMode::HeldThenFails(gate) => {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
        let sid = call.trim_end_matches(".json").to_string();
        axum::Json(json!({"sid": sid, "status": "in-progress"})).into_response()
    }
    let (tx, rx) = mpsc::channel(64);
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            axum::routing::post(update),
        )
        .with_state((tx, mode));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind rest");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

impl Rig {
    /// Hub, REST stand-in and adapter, with the `sales` group (`a1`, `a2`, `a3`) and the
    /// `support` group (`s1`) in the hub's directory.
    pub async fn start() -> Rig {
        Rig::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut Settings)) -> Rig {
        Rig::with_rest(RestMode::Works, tune).await
    }

    /// Like [`Rig::with`], with the REST stand-in answering as `mode` says.
    pub async fn with_rest(mode: RestMode, tune: impl FnOnce(&mut Settings)) -> Rig {
        let hub = start_hub().await;
        let rig = Rig::adapter_with_rest(hub, mode, tune).await;
        for (group, members) in [
            ("sales", json!(["a1", "a2", "a3"])),
            ("support", json!(["s1"])),
        ] {
            let r = rig
                .http
                .put(format!("http://{hub}/api/v1/ring-groups/{group}"))
                .json(&json!({"ring_timeout_seconds": 20, "members": members}))
                .send()
                .await
                .expect("put group");
            assert!(r.status().is_success(), "ring group: {}", r.status());
        }
        rig.wait_hub("connected").await;
        rig
    }

    /// The adapter (and REST stand-in) for a hub at `hub`, which may not be running.
    pub async fn adapter_for(hub: SocketAddr, tune: impl FnOnce(&mut Settings)) -> Rig {
        Rig::adapter_with_rest(hub, RestMode::Works, tune).await
    }

    async fn adapter_with_rest(
        hub: SocketAddr,
        mode: RestMode,
        tune: impl FnOnce(&mut Settings),
    ) -> Rig {
        let (rest_addr, rest) = start_rest(mode).await;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind adapter");
        let adapter = listener.local_addr().expect("addr");
        let mut settings = Settings::new(
            &format!("http://{hub}"),
            &format!("http://{adapter}"),
            ACCOUNT,
            Secret::new(TOKEN),
        );
        settings.rest_base = format!("http://{rest_addr}");
        settings.behaviour.routing = routing();
        tune(&mut settings);
        presence_twilio::spawn(listener, settings);
        Rig {
            hub,
            adapter,
            rest,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until the adapter's `/healthz` says the hub socket is `state`.
    pub async fn wait_hub(&self, state: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let r = self
                .http
                .get(format!("http://{}/healthz", self.adapter))
                .send()
                .await;
            if let Ok(r) = r {
                let v: Value = r.json().await.unwrap_or_default();
                if v["hub"] == state {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub never became {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a webhook as Twilio does: form body, signed over the adapter's public URL.
    pub async fn twilio(&self, path_and_query: &str, params: &[(&str, &str)]) -> (u16, String) {
        let url = format!("http://{}{path_and_query}", self.adapter);
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sig = signature::compute(&Secret::new(TOKEN), &url, &owned);
        self.post_signed(&url, params, Some(&sig)).await
    }

    pub async fn post_signed(
        &self,
        url: &str,
        params: &[(&str, &str)],
        sig: Option<&str>,
    ) -> (u16, String) {
        let mut req = self.http.post(url).form(params);
        if let Some(sig) = sig {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = tokio::time::timeout(PATIENCE, req.send())
            .await
            .expect("adapter answered in time")
            .expect("adapter reachable");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// The hub's view of an agent.
    pub async fn agent_state(&self, id: &str) -> Value {
        self.http
            .get(format!("http://{}/api/v1/agents/{id}", self.hub))
            .send()
            .await
            .expect("hub")
            .json()
            .await
            .expect("json")
    }

    /// An agent tab on the hub, set available.
    pub async fn available_agent(&self, id: &str) -> Agent {
        let url = format!("ws://{}/ws/agent?agent_id={id}", self.hub);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("agent ws");
        let mut a = Agent { ws, next_ref: 1 };
        let hello = a.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        let ok = a
            .request(json!({"type": "set_status", "status": "available"}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        a
    }

    /// The next request the REST stand-in saw.
    pub async fn rest_request(&mut self) -> Recorded {
        tokio::time::timeout(PATIENCE, self.rest.recv())
            .await
            .expect("a REST request in time")
            .expect("REST stand-in running")
    }
}

pub struct Agent {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
}

impl Agent {
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("frame in time")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(t) = msg {
                return serde_json::from_str(&t).expect("json");
            }
        }
    }

    /// Sends a request and returns its reply (skipping other frames).
    pub async fn request(&mut self, mut msg: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        msg["ref"] = json!(r);
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
        loop {
            let v = self.recv().await;
            if v["ref"] == json!(r) {
                return v;
            }
        }
    }
}

/// Parses a TwiML answer; panics (failing the test) when it is not XML.
pub fn parse(twiml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(twiml).unwrap_or_else(|e| panic!("not XML ({e}): {twiml}"))
}

/// The element children of `<Response>`, checked to be the root.
pub fn verbs<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    root.children().filter(|n| n.is_element()).collect()
}

/// Checks a TwiML answer that dials `agent` for ring group `group`, noun by noun; returns
/// the action and status callback URLs.
pub fn assert_dials(twiml: &str, rig: &Rig, agent: &str, group: &str, timeout: u32) {
    let doc = parse(twiml);
    let verbs = verbs(&doc);
    assert_eq!(verbs.len(), 1, "{twiml}");
    let dial = verbs[0];
    assert_eq!(dial.tag_name().name(), "Dial", "{twiml}");
    assert_eq!(
        dial.attribute("timeout"),
        Some(timeout.to_string().as_str())
    );
    let base = format!("http://{}", rig.adapter);
    let query = format!("agent={agent}&group={group}");
    assert_eq!(
        dial.attribute("action"),
        Some(format!("{base}/twilio/dial-action?{query}").as_str())
    );
    assert_eq!(dial.attribute("method"), Some("POST"));
    let nouns: Vec<_> = dial.children().filter(|n| n.is_element()).collect();
    assert_eq!(nouns.len(), 1, "{twiml}");
    let client = nouns[0];
    assert_eq!(client.tag_name().name(), "Client");
    assert_eq!(client.text(), Some(agent));
    assert_eq!(
        client.attribute("statusCallbackEvent"),
        Some("ringing answered completed")
    );
    assert_eq!(
        client.attribute("statusCallback"),
        Some(format!("{base}/twilio/agent-status?{query}").as_str())
    );
}

/// Checks the say-and-hang-up fallback.
pub fn assert_says_and_hangs_up(twiml: &str, text: &str) {
    let doc = parse(twiml);
    let verbs = verbs(&doc);
    let names: Vec<_> = verbs.iter().map(|n| n.tag_name().name()).collect();
    assert_eq!(names, ["Say", "Hangup"], "{twiml}");
    assert_eq!(verbs[0].text(), Some(text));
}

/// Twilio's incoming-call webhook for `sid` to `to`.
pub fn incoming<'a>(sid: &'a str, to: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("Caller", CALLER),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", to),
    ]
}

/// The agent leg's status callback (`<Client statusCallback>`).
pub fn leg_status<'a>(
    child: &'a str,
    parent: &'a str,
    agent_to: &'a str,
    status: &'a str,
    seq: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", child),
        ("ParentCallSid", parent),
        ("CallStatus", status),
        ("CallbackSource", "call-progress-events"),
        ("Direction", "outbound-dial"),
        ("From", CALLER),
        ("To", agent_to),
        ("SequenceNumber", seq),
        ("Timestamp", "Wed, 02 Dec 2026 12:00:00 +0000"),
    ]
}

/// The `<Dial>` action request.
pub fn dial_action<'a>(
    parent: &'a str,
    child: &'a str,
    status: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", parent),
        ("CallStatus", "in-progress"),
        ("DialCallSid", child),
        ("DialCallStatus", status),
        ("DialCallDuration", "0"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", NUMBER),
    ]
}

pub fn action_path(agent: &str, group: &str) -> String {
    format!("/twilio/dial-action?agent={agent}&group={group}")
}

pub fn status_path(agent: &str, group: &str) -> String {
    format!("/twilio/agent-status?agent={agent}&group={group}")
}

/// The signature Twilio would send.
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    signature::compute(&Secret::new(token), url, &owned)
}
