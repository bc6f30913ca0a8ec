//! `tungstenite-hub`: a benchmark peer of presence-hub (see `bench/competitors/README.md`).
//!
//! What a user would write instead of the hub with tokio-tungstenite: one task per socket,
//! small buffers, one `tokio::sync::broadcast` channel carrying every serialized event to every
//! subscribed admin task (`--mode tuned`). `--mode raw` is the ceiling the benchmark compares
//! per-delivery cost with: each event is framed once and one task writes each batch of frames
//! to every admin socket with one `write` per socket, with nothing else on the path.
//!
//! It speaks the subset of the hub protocol the fan-out scenarios use: `/ws/agent?agent_id=`
//! (`hello`, `set_status` with `ref` -> `ok` with `version`, `ping`), `/ws/admin?admin_id=`
//! (`hello`, `subscribe` -> snapshot, then `agent` events with `seq`), and `GET /healthz`.
//! No auth, no store, no status rules beyond the manual statuses, no filters, no resume.

mod raw;
mod state;
mod tuned;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use state::{error_frame, ref_part, ClientMsg, SetStatus, Store};

/// A server-side WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How events reach admin sockets.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// broadcast channel -> one task per admin socket (feed every queued event, one flush).
    Tuned,
    /// pre-built frames, one writer task, one write per admin socket per batch.
    Raw,
}

#[derive(Parser, Debug)]
#[command(about = "Benchmark peer of presence-hub: a plain tokio-tungstenite hub")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Fan-out path.
    #[arg(long, value_enum, default_value_t = Mode::Tuned)]
    mode: Mode,
    /// Events an admin may lag behind before it is closed with 4008 (broadcast capacity;
    /// 2,500 events of ~420 bytes is the hub's 1 MiB per-socket queue bound).
    #[arg(long, default_value_t = 2500)]
    queue_events: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Where a new event goes.
pub enum Fanout {
    Tuned(tokio::sync::broadcast::Sender<tokio_tungstenite::tungstenite::Utf8Bytes>),
    Raw(tokio::sync::mpsc::UnboundedSender<raw::Cmd>),
}

impl Fanout {
    /// Hands one serialized event to the fan-out (called under the store's lock).
    fn publish(&self, frame: String) {
        match self {
            // No receiver yet is not an error: nobody is subscribed.
            Fanout::Tuned(tx) => drop(tx.send(frame.into())),
            Fanout::Raw(tx) => drop(tx.send(raw::Cmd::Event(raw::frame(frame.as_bytes())))),
        }
    }
}

/// What every connection task shares.
pub struct Hub {
    pub store: Store,
    pub fanout: Fanout,
}

/// Small buffers: agents send ~150-byte messages and idle most of the time; admins read
/// little. The write buffer only fills between `feed`s and the `flush` of a batch.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let fanout = match args.mode {
        Mode::Tuned => Fanout::Tuned(tokio::sync::broadcast::channel(args.queue_events.max(1)).0),
        Mode::Raw => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(raw::writer(rx));
            Fanout::Raw(tx)
        }
    };
    let hub = Arc::new(Hub {
        store: Store::new(),
        fanout,
    });
    let listener = bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    println!(
        "tungstenite-hub ({:?}) listening on {}",
        args.mode,
        listener.local_addr()?
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        anyhow::Ok(())
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = &mut shutdown => return r,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(hub.clone(), stream));
            }
        }
    }
}

/// Binds with a deep accept backlog (as the hub does): a login burst must not overflow the
/// kernel's accept queue and send clients into 1 s SYN retries.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Which socket a request asked for.
enum Route {
    Agent(String),
    Admin(String),
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key && !v.is_empty() && v.len() <= 128).then(|| v.to_owned())
    })
}

fn route(req: &Request) -> Option<Route> {
    let query = req.uri().query().unwrap_or("");
    match req.uri().path() {
        "/ws/agent" => query_value(query, "agent_id").map(Route::Agent),
        "/ws/admin" => query_value(query, "admin_id").map(Route::Admin),
        _ => None,
    }
}

/// `GET /healthz` (for readiness checks), answered before any WebSocket handshake.
async fn healthz(stream: &mut TcpStream) -> bool {
    const PROBE: &[u8] = b"GET /healthz ";
    let mut buf = [0u8; 13];
    for _ in 0..50 {
        let n = match stream.peek(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => return false,
        };
        if buf[..n] != PROBE[..n] {
            return false;
        }
        if n == PROBE.len() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
            let _ = stream.shutdown().await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

// The handshake callback returns tungstenite's own `ErrorResponse` (an HTTP response).
#[allow(clippy::result_large_err)]
async fn connection(hub: Arc<Hub>, mut stream: TcpStream) {
    if healthz(&mut stream).await {
        return;
    }
    let mut chosen = None;
    let callback = |req: &Request, resp: Response| match route(req) {
        Some(r) => {
            chosen = Some(r);
            Ok(resp)
        }
        None => {
            let mut e = ErrorResponse::new(Some("unknown path or missing id".into()));
            *e.status_mut() = StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await
    else {
        return;
    };
    match chosen {
        Some(Route::Agent(id)) => agent(hub, ws, id).await,
        Some(Route::Admin(id)) => match hub.fanout {
            Fanout::Tuned(_) => tuned::admin(hub, ws, id).await,
            Fanout::Raw(_) => raw::admin(hub, ws, id).await,
        },
        None => {}
    }
}

/// The `hello` of an admin socket.
pub fn admin_hello(hub: &Hub, id: &str) -> String {
    format!(
        r#"{{"type":"hello","role":"admin","id":"{id}","server_time":0,"epoch":"{}"}}"#,
        hub.store.epoch
    )
}

/// Parses a client text frame; `Err` is the error reply to send.
pub fn parse(text: &str) -> Result<ClientMsg, String> {
    serde_json::from_str::<ClientMsg>(text)
        .map_err(|_| error_frame(&None, "bad_message", "not a JSON object with a type"))
}

/// One agent socket: request/reply on the socket's own task (no split, no second task).
async fn agent(hub: Arc<Hub>, mut ws: Ws, id: String) {
    let hello = hub.store.login(&id, |f| hub.fanout.publish(f));
    if ws.send(Message::text(hello)).await.is_ok() {
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => match agent_message(&hub, &id, t.as_str()) {
                    Some(reply) => reply,
                    None => continue,
                },
                Message::Binary(_) => error_frame(&None, "bad_message", "binary frame"),
                Message::Close(_) => break,
                // Pings are answered by tungstenite.
                _ => continue,
            };
            if ws.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
    }
    hub.store.logout(&id);
}

/// The reply to one agent message (`None`: a success without `ref`, which is silent).
fn agent_message(hub: &Hub, id: &str, text: &str) -> Option<String> {
    let m = match parse(text) {
        Ok(m) => m,
        Err(reply) => return Some(reply),
    };
    let reply = match m.kind.as_str() {
        "set_status" => {
            let status = m.status.as_deref().unwrap_or("");
            if m.note.as_ref().is_some_and(|n| n.chars().count() > 64) {
                return Some(error_frame(
                    &m.reply_ref,
                    "bad_message",
                    "note over 64 chars",
                ));
            }
            match hub
                .store
                .set_status(id, status, m.note, |f| hub.fanout.publish(f))
            {
                SetStatus::Changed(v) | SetStatus::Same(v) => {
                    m.reply_ref.as_ref()?;
                    format!(r#"{{"type":"ok"{},"version":{v}}}"#, ref_part(&m.reply_ref))
                }
                SetStatus::Invalid => {
                    error_frame(&m.reply_ref, "invalid_status", "not a manual status")
                }
            }
        }
        "ping" => format!(
            r#"{{"type":"pong","server_time":0{}}}"#,
            ref_part(&m.reply_ref)
        ),
        _ => error_frame(&m.reply_ref, "bad_message", "unknown type"),
    };
    Some(reply)
}
