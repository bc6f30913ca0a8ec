//! The adapter's side of the hub: one telephony WebSocket (`/ws/telephony`) that carries
//! call events out and replies and notifications back, reconnected with backoff when it
//! drops, plus `GET /api/v1/available` for routing. Only the hub's public surfaces.
//!
//! Events wait for their reply by `ref`. While the socket is down, events fail at once
//! (the webhook then answers its fallback); nothing is queued for later, since Twilio
//! retries and every event id is idempotent at the hub.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::secret::Secret;

/// Events waiting to be written to the socket.
const OUTBOX: usize = 1024;
/// Notifications waiting to be handled; more are dropped (and logged).
const NOTICES: usize = 1024;
/// Backoff between reconnects: starts here, doubles, up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for the hub's HTTP API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the hub could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the hub's telephony socket is not connected")]
    Disconnected,
    #[error("the hub's HTTP API failed: {0}")]
    Http(String),
    #[error("the hub answered something unexpected: {0}")]
    Unexpected(String),
}

/// A call notification from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `call_declined`, `ring_timeout` or `call_accepted`.
    pub kind: String,
    /// The call (the caller's Twilio `CallSid`).
    pub call_id: String,
    /// The agent it was offered to.
    pub agent_id: String,
}

/// Where the hub is and who the adapter is to it.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `http://host:port` of the hub (`https://` behind TLS).
    pub url: String,
    /// A JWT of role `telephony`; without it, the dev-mode `?adapter=` id is used.
    pub token: Option<Secret>,
    /// The adapter's name in dev mode.
    pub adapter_id: String,
}

struct Outgoing {
    frame: Value,
    reply: oneshot::Sender<Value>,
}

/// A handle to the hub. Cheap to clone.
#[derive(Clone)]
pub struct HubClient {
    outbox: mpsc::Sender<Outgoing>,
    http: reqwest::Client,
    config: Arc<HubConfig>,
    connected: Arc<AtomicBool>,
}

impl HubClient {
    /// Starts the socket task; notifications arrive on the returned receiver.
    pub fn start(config: HubConfig) -> (HubClient, mpsc::Receiver<Notice>) {
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let (notices_tx, notices) = mpsc::channel(NOTICES);
        let config = Arc::new(config);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(socket_task(
            config.clone(),
            rx,
            notices_tx,
            connected.clone(),
        ));
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        let client = HubClient {
            outbox,
            http,
            config,
            connected,
        };
        (client, notices)
    }

    /// Whether the telephony socket is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Sends one telephony event and returns the hub's reply (`ok` or `error`).
    pub async fn event(&self, frame: Value) -> Result<Value, HubError> {
        let (reply, answer) = oneshot::channel();
        self.outbox
            .send(Outgoing { frame, reply })
            .await
            .map_err(|_| HubError::Disconnected)?;
        answer.await.map_err(|_| HubError::Disconnected)
    }

    /// Available agents of a ring group, longest available first.
    pub async fn available(&self, ring_group: &str) -> Result<Vec<String>, HubError> {
        let url = format!("{}/api/v1/available", self.config.url.trim_end_matches('/'));
        let mut req = self.http.get(url).query(&[("ring_group", ring_group)]);
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| HubError::Http(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(HubError::Http(format!("status {}", resp.status())));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| HubError::Http(e.without_url().to_string()))?;
        let agents = body["agents"]
            .as_array()
            .ok_or_else(|| HubError::Unexpected("no agents list".into()))?;
        Ok(agents
            .iter()
            .filter_map(|a| a["agent_id"].as_str().map(str::to_string))
            .collect())
    }
}

/// The telephony socket URL (the token goes in a header, never in the URL).
fn socket_url(config: &HubConfig) -> String {
    let base = config.url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    match &config.token {
        Some(_) => format!("{base}/ws/telephony"),
        None => {
            let query = serde_urlencoded::to_string([("adapter", config.adapter_id.as_str())])
                .unwrap_or_default();
            format!("{base}/ws/telephony?{query}")
        }
    }
}

async fn socket_task(
    config: Arc<HubConfig>,
    mut outbox: mpsc::Receiver<Outgoing>,
    notices: mpsc::Sender<Notice>,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match connect(&config).await {
            Ok(ws) => {
                tracing::info!("connected to the hub's telephony socket");
                backoff = MIN_BACKOFF;
                connected.store(true, Ordering::Relaxed);
                let open = serve(ws, &mut outbox, &notices).await;
                connected.store(false, Ordering::Relaxed);
                if !open {
                    return; // every HubClient is gone
                }
                tracing::warn!("hub telephony socket closed; reconnecting");
            }
            Err(e) => tracing::warn!("cannot reach the hub: {e}"),
        }
        // While down, events fail at once: their webhook answers its fallback.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                next = outbox.recv() => match next {
                    Some(out) => drop(out.reply),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(config: &HubConfig) -> Result<Socket, String> {
    let mut request = socket_url(config)
        .into_client_request()
        .map_err(|e| format!("bad hub URL: {e}"))?;
    if let Some(token) = &config.token {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the hub token is not a valid header value".to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    let (ws, _) = tokio::time::timeout(HTTP_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Runs one connection until it drops. Returns false when the adapter is shutting down.
async fn serve(
    ws: Socket,
    outbox: &mut mpsc::Receiver<Outgoing>,
    notices: &mpsc::Sender<Notice>,
) -> bool {
    let (mut sink, mut stream) = ws.split();
    let mut pending: HashMap<u64, oneshot::Sender<Value>> = HashMap::new();
    let mut next_ref: u64 = 1;
    loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some(Outgoing { mut frame, reply }) = out else { return false };
                let r = next_ref;
                next_ref += 1;
                frame["ref"] = Value::from(r);
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    return true; // `reply` dropped: the event fails
                }
                pending.insert(r, reply);
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    tracing::warn!("hub sent a frame that is not JSON");
                    continue;
                };
                if let Some(r) = v.get("ref").and_then(Value::as_u64) {
                    if let Some(reply) = pending.remove(&r) {
                        let _ = reply.send(v);
                    }
                    continue;
                }
                if let Some(notice) = parse_notice(&v) {
                    if notices.try_send(notice).is_err() {
                        tracing::warn!("notification queue full; dropped one");
                    }
                }
            }
        }
    }
}

fn parse_notice(v: &Value) -> Option<Notice> {
    let kind = v["type"].as_str()?;
    if !matches!(kind, "call_declined" | "ring_timeout" | "call_accepted") {
        return None;
    }
    Some(Notice {
        kind: kind.to_string(),
        call_id: v["call_id"].as_str()?.to_string(),
        agent_id: v["agent_id"].as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_uses_dev_id_only_without_token() {
        let mut c = HubConfig {
            url: "https://hub.example/".into(),
            token: None,
            adapter_id: "twilio".into(),
        };
        assert_eq!(
            socket_url(&c),
            "wss://hub.example/ws/telephony?adapter=twilio"
        );
        c.token = Some(Secret::new("jwt"));
        c.url = "http://127.0.0.1:7400".into();
        assert_eq!(socket_url(&c), "ws://127.0.0.1:7400/ws/telephony");
    }
}
