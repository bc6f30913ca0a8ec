//! The accept loop of the single port: TCP_NODELAY, the connection cap (`--max-connections`:
//! 503 before any upgrade), the handshake timeout (`--handshake-timeout-secs`: a client that
//! does not send its request head in time is closed, the slowloris defence), HTTP/1.1 with
//! upgrades, and graceful shutdown (stop accepting, let in-flight requests finish).
//!
//! Every accepted connection holds a [`ConnSlot`]. The slot travels in the request's
//! extensions into the WebSocket handler, which keeps it for the life of the socket, so
//! the cap counts upgraded sockets and plain HTTP connections alike.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::Settings;
use crate::metrics::{Metrics, Rejected};

/// Connections over the cap that are still answered with a 503 at the same time; beyond
/// this the hub drops them without a word (they cost one accept and one close).
const REFUSING_AT_ONCE: usize = 1024;
/// Largest HTTP request head (request line and headers, query-string token included);
/// larger ones get 431. Without it hyper buffers up to ~400 KiB per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One slot of `--max-connections`, held by a TCP connection and by the WebSocket it was
/// upgraded to. Freed when the last holder drops it.
#[derive(Clone)]
pub(crate) struct ConnSlot(#[allow(dead_code)] Arc<SlotInner>);

struct SlotInner {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.metrics.tcp_closed();
    }
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// What the accept loop needs of the hub: its limits, its counters and the tracker its
/// connection tasks join.
pub(crate) struct Accept {
    /// `--max-connections`: TCP connections holding a slot at once.
    pub max_connections: usize,
    /// `--handshake-timeout-secs`: for the request head, and for a request body.
    pub handshake_timeout: Duration,
    /// Where TCP connections and refusals are counted.
    pub metrics: Arc<Metrics>,
    /// Every connection task joins it, so the shutdown waits for them with the rest.
    pub tasks: TaskTracker,
}

impl Accept {
    /// The accept loop's part of `settings`.
    pub(crate) fn new(settings: &Settings, metrics: Arc<Metrics>, tasks: TaskTracker) -> Accept {
        Accept {
            max_connections: settings.max_connections,
            handshake_timeout: settings.handshake_timeout,
            metrics,
            tasks,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// asks every HTTP connection to finish its current request. The connection tasks are in
/// `accept.tasks`: the caller waits for them, with every other task, under one deadline.
/// (Upgraded sockets are not HTTP connections any more: they close themselves with 1001.)
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    accept: Accept,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Accept {
        max_connections,
        handshake_timeout,
        metrics,
        tasks: conns,
    } = accept;
    let slots = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    loop {
        let tcp = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        // Small frames (one agent update) must go out at once: without TCP_NODELAY, Nagle
        // holds a frame written while the previous one is unacknowledged until the peer's
        // delayed ACK (~40 ms on Linux), far beyond the latency target.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!("cannot set TCP_NODELAY: {e}");
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics.tcp_opened();
                let slot = ConnSlot(Arc::new(SlotInner {
                    _permit: permit,
                    metrics: metrics.clone(),
                }));
                conns.spawn(serve_connection(
                    builder.clone(),
                    tcp,
                    router.clone(),
                    slot,
                    Limit {
                        body: handshake_timeout,
                        metrics: metrics.clone(),
                    },
                    shutdown.clone(),
                ));
            }
            Err(_) => {
                metrics.rejected(Rejected::OverCapacity);
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    conns.spawn(refuse(builder.clone(), tcp, permit));
                }
            }
        }
    }
    drop(listener);
    Ok(())
}

/// The request-body deadline of a connection, and where to count its expiry.
#[derive(Clone)]
struct Limit {
    body: Duration,
    metrics: Arc<Metrics>,
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

async fn serve_connection(
    builder: http1::Builder,
    tcp: TcpStream,
    router: Router,
    slot: ConnSlot,
    limit: Limit,
    shutdown: CancellationToken,
) {
    let metrics = limit.metrics.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req =
            req.map(|body| Body::new(DeadlineBody::new(body, limit.body, limit.metrics.clone())));
        req.extensions_mut().insert(slot.clone());
        router.clone().oneshot(req)
    });
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // hyper's errors never carry the request line or headers (no token can leak here).
        if e.is_timeout() {
            metrics.rejected(Rejected::HandshakeTimeout);
            debug!("connection closed: request head not received in time");
        } else {
            debug!("connection error: {e}");
        }
    }
}

/// Answers every request of an over-capacity connection with 503 and closes it.
async fn refuse(builder: http1::Builder, tcp: TcpStream, _permit: OwnedSemaphorePermit) {
    let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(over_capacity())
    });
    let mut builder = builder;
    builder.keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
}

fn over_capacity() -> Response<Body> {
    let body = r#"{"type":"error","code":"over_capacity","message":"the hub is at its connection limit; retry later"}"#;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A request body that must arrive completely within a deadline (the slow-body variant
/// of slowloris); past it, reading fails and the request is answered with an error.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
    expired: bool,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration, metrics: Arc<Metrics>) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            metrics,
            expired: false,
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the handshake timeout")]
struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.expired {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.expired = true;
                    this.metrics.rejected(Rejected::HandshakeTimeout);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
