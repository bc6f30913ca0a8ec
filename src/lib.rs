//! presence-hub: a real-time presence hub for contact centers.
//!
//! Every agent is a tokio task (`agent`) that owns its status (the pure machine in
//! [`model`]) and its timers. Every command for an agent goes through the hub's router to
//! its actor; each change is serialized once (`protocol::Published`) and fanned out to
//! subscribed admin sockets (`fanout`). `ws` holds the WebSocket layer and the three
//! surfaces, `http` the API, auth and the embedded web demo. The layers are drawn in the
//! README.
//!
//! [`run`] serves a bound listener until a shutdown future resolves.

// The public API is what the binary, the tests, the load generator, the fuzz targets and
// the store example need: `run`, `spawn`, `Settings`/`Cli`, the status machine (`model`),
// the wire protocol (`protocol`), the directory, the store, and the frame decoder.
pub(crate) mod agent;
pub(crate) mod clock;
pub mod cluster;
pub mod config;
pub mod directory;
pub(crate) mod fanout;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod metrics;
pub mod model;
pub(crate) mod outbox;
pub mod protocol;
pub(crate) mod server;
pub mod store;
pub mod ws;

use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Cli, Settings};
use hub::Hub;
/// The conformance echo on the hub's WebSocket layer (`examples/ws_echo.rs`).
#[doc(hidden)]
pub use ws::echo as ws_echo;

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no JWT secret is configured and {0} is not a loopback address: set --jwt-secret (dev mode is loopback only)")]
    InsecureNoSecret(std::net::SocketAddr),
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen for metrics on {addr} (--metrics-listen): {error}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// The database cannot be used (corrupt, read-only, locked, too new, ...): the message
    /// says which file and what to do. Nothing was written to it.
    #[error("durable store: {0}")]
    Store(store::StoreError),
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

// Not `#[from]`: that would also make it the error's source, and the message would be
// printed twice ("Caused by: ...") when the binary exits with it.
impl From<store::StoreError> for RunError {
    fn from(e: store::StoreError) -> Self {
        RunError::Store(e)
    }
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
    // Bound before the store opens: a taken metrics port ends the run with nothing done.
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|error| RunError::MetricsListen { addr, error })?,
        ),
        None => None,
    };
    // Before anything is served: a database that cannot be used ends the run here, with
    // nothing written to it.
    let node = match settings.node_id.clone() {
        Some(node) => node,
        None => config::default_node_id(addr.port())?,
    };
    let (store, recovered) = hub::persist::open(&settings).await?;
    let cluster = match &settings.cluster {
        Some(c) => Some(hub::cluster::ClusterNode::start(c, node.clone())?),
        None => None,
    };
    let token = CancellationToken::new();
    let hub = Hub::new(
        settings,
        node,
        cluster,
        token.clone(),
        store.clone(),
        recovered,
    );
    let tasks = hub.tasks().clone();
    tasks.spawn(hub::persist::prune(
        store.clone(),
        hub.clock(),
        token.clone(),
    ));
    hub::failover::start(&hub);
    let app = http::router(hub.clone());
    if let Some(l) = metrics_listener {
        spawn_metrics(l, hub.clone(), &tasks, token.clone());
    }
    let trigger = token.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown => trigger.cancel(),
            () = trigger.cancelled() => {}
        }
    });
    info!(%addr, node = %hub.node(), epoch = %hub.epoch(), "presence-hub listening");
    let accept = server::Accept::new(hub.settings(), hub.metrics_handle(), tasks.clone());
    let result = server::serve(listener, app, accept, token.clone()).await;
    // One deadline for the whole shutdown: HTTP connections finishing their request,
    // sockets closing with 1001, actors ending, then the store's last commit.
    let deadline = tokio::time::Instant::now() + shutdown_timeout;
    info!("shutting down: closing sockets");
    hub::failover::clean_stop(&hub, deadline).await;
    hub.router().stop_all();
    tasks.close();
    drop(hub);
    if tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = tasks.len(),
            "shutdown timeout: some tasks did not finish"
        );
    }
    // The actors have ended (or the deadline passed): commit what they queued, checkpoint,
    // bounded by what is left of the deadline (at least a short grace for the last commit).
    hub::persist::close(store, deadline).await;
    info!("stopped");
    result.map_err(RunError::Io)
}

/// Serves `/metrics` alone on `listener` (`--metrics-listen`) until `stop` is cancelled.
/// Tracked with every other task: the one shutdown deadline covers it too.
fn spawn_metrics(
    listener: TcpListener,
    hub: std::sync::Arc<Hub>,
    tasks: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics listening (GET /metrics)");
    }
    let app = http::metrics_router(hub);
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "metrics listener failed");
        }
    });
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
