//! presence-hub: a real-time presence hub for contact centers.
//!
//! Every agent is a tokio task ([`agent`]) that owns its status (the pure machine in
//! [`model`]) and its timers. The [`hub`] routes socket and telephony messages to the actors
//! and fans each change out, serialized once, to subscribed admin sockets. [`ws`] holds the
//! three WebSocket surfaces, [`http`] the API, auth and the embedded web demo.
//!
//! [`run`] serves a bound listener until a shutdown future resolves.

pub mod agent;
pub mod config;
pub mod directory;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod store;
pub mod ws;

use axum::serve::ListenerExt;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Cli, Settings};
pub use hub::Hub;

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no JWT secret is configured and {0} is not a loopback address: set --jwt-secret (dev mode is loopback only)")]
    InsecureNoSecret(std::net::SocketAddr),
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the hub on `listener` until `shutdown` resolves, then closes every socket with
/// 1001 and waits (up to `settings.shutdown_timeout`) for tasks to drain.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let addr = listener.local_addr()?;
    if settings.jwt_secret.is_none() {
        if !addr.ip().is_loopback() {
            return Err(RunError::InsecureNoSecret(addr));
        }
        warn!(%addr, "DEV MODE: no JWT secret configured; ?agent_id=, ?admin_id= and ?adapter= are trusted as identities. Never expose this hub.");
    }
    let shutdown_timeout = settings.shutdown_timeout;
    let token = CancellationToken::new();
    let hub = Hub::new(settings, token.clone());
    let app = http::router(hub.clone());
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    info!(%addr, epoch = %hub.core.epoch(), "presence-hub listening");
    // Small frames (one agent update) must go out at once: without TCP_NODELAY, Nagle holds
    // a frame written while the previous one is unacknowledged until the peer's delayed ACK
    // (~40 ms on Linux), far beyond the latency target.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(token.clone().cancelled_owned());
    let result = serve.await;
    info!("shutting down: closing sockets");
    hub.stop_agents();
    let tasks = hub.core.tasks.clone();
    tasks.close();
    drop(hub);
    if tokio::time::timeout(shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = tasks.len(),
            "shutdown timeout: some tasks did not finish"
        );
    }
    info!("stopped");
    result.map_err(RunError::Io)
}

/// Starts the hub on `listener` in the background; returns a token that stops it and the
/// task to await for its end. Used by tests and embedders.
pub fn spawn(
    listener: TcpListener,
    settings: Settings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), RunError>>,
) {
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let handle = tokio::spawn(run(
        listener,
        settings,
        async move { signal.cancelled().await },
    ));
    (stop, handle)
}
