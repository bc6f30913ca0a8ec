//! The connection to NATS: one background task keeps a session (client, JetStream context,
//! stream and buckets) and publishes whether the backplane is available.
//!
//! The rule this module exists for: **a change is sent to NATS promptly or never.** A NATS
//! client queues what it is asked to send while it reconnects and sends it afterwards; for
//! the hub that would mean a change answered `unavailable` being applied later, behind the
//! client's back. So the client is allowed one immediate reconnect attempt (500 ms connect
//! timeout: enough to move to a live server of a NATS cluster); if that fails the client is
//! closed, whatever it still queued is dropped with it, and a new session is opened from
//! scratch (backoff 100 ms .. 1 s). Appends are only issued while the session is connected,
//! so a queued append waits at most one reconnect attempt, less than the ack timeout.

use super::setup::{self, Handles};
use super::{ClusterConfig, ClusterError, Epoch};
use async_nats::{jetstream, Client, ClientError, ConnectOptions, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Timeout of the calls that create or update the stream and buckets (replicated creation
/// takes longer than an append).
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout of one attempt to one server.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the task re-reads the client's connection state (events may be dropped).
const POLL: Duration = Duration::from_millis(250);

/// Whether the backplane can take changes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Connected, stream and buckets in place.
    Available,
    /// Changes are refused with `unavailable`; `reason` is for `/healthz` and logs.
    Unavailable {
        /// What is wrong.
        reason: String,
    },
}

/// One connected session: dropped whole when its client gives up.
pub(crate) struct Session {
    /// The client; its state is checked before every append.
    pub client: Client,
    /// JetStream with the append timeout.
    pub js: jetstream::Context,
    /// Stream and buckets, bound to `js`.
    pub h: Handles,
    /// The agents stream's identity when this session opened it.
    pub epoch: Epoch,
    /// Counts sessions of this node, so watchers know when to resubscribe.
    pub generation: u64,
}

#[derive(Clone)]
enum LinkState {
    Up(Arc<Session>),
    Down(Arc<str>),
}

/// Handle on the connection; cheap to clone.
#[derive(Clone)]
pub struct Link {
    /// The current session or why there is none.
    state: watch::Receiver<LinkState>,
}

impl Link {
    /// Starts the connection task.
    pub(crate) fn start(cfg: Arc<ClusterConfig>, stop: CancellationToken) -> Link {
        let (tx, rx) = watch::channel(LinkState::Down(Arc::from("connecting to NATS")));
        tokio::spawn(supervise(cfg, tx, stop));
        Link { state: rx }
    }

    /// Whether changes can be made now.
    pub fn availability(&self) -> Availability {
        match self.session() {
            Ok(_) => Availability::Available,
            Err(e) => Availability::Unavailable {
                reason: e.to_string(),
            },
        }
    }

    /// Waits until the availability may have changed (or the link task ended).
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The connected session, or `unavailable`.
    pub(crate) fn session(&self) -> Result<Arc<Session>, ClusterError> {
        match &*self.state.borrow() {
            LinkState::Up(s)
                if s.client.connection_state() == async_nats::connection::State::Connected =>
            {
                Ok(s.clone())
            }
            LinkState::Up(_) => Err(ClusterError::unavailable("connection to NATS lost")),
            LinkState::Down(reason) => Err(ClusterError::unavailable(reason)),
        }
    }

    /// Waits (bounded) for a connected session.
    pub(crate) async fn wait_up(&self, timeout: Duration) -> Result<Arc<Session>, ClusterError> {
        let mut rx = self.state.clone();
        let wait = async {
            loop {
                if let Ok(s) = self.session() {
                    return s;
                }
                // Connection state changes inside the client are not all signalled on the
                // watch: poll as well.
                let _ = tokio::time::timeout(POLL, rx.changed()).await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(s) => Ok(s),
            Err(_) => self.session(),
        }
    }

    /// A receiver of session changes, for the crate's background tasks.
    pub(crate) fn sessions(&self) -> SessionWatch {
        SessionWatch {
            state: self.state.clone(),
        }
    }
}

/// Follows the sessions for one background task.
pub(crate) struct SessionWatch {
    state: watch::Receiver<LinkState>,
}

impl SessionWatch {
    /// The current session, waiting while there is none; `None` when the link is gone.
    pub(crate) async fn up(&mut self) -> Option<Arc<Session>> {
        loop {
            if let LinkState::Up(s) = &*self.state.borrow_and_update() {
                return Some(s.clone());
            }
            self.state.changed().await.ok()?;
        }
    }

    /// Waits a moment before a watch or follower is restarted on session `generation` (less,
    /// if that session ends meanwhile): a failing restart does not spin.
    pub(crate) async fn pause(&mut self, generation: u64) {
        tokio::select! {
            _ = self.ended(generation) => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }

    /// Resolves once session `generation` is no longer the connected one (lost, or
    /// replaced), or the link is gone.
    pub(crate) async fn ended(&mut self, generation: u64) {
        loop {
            match &*self.state.borrow_and_update() {
                LinkState::Up(s) if s.generation == generation => {}
                _ => return,
            }
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn supervise(cfg: Arc<ClusterConfig>, tx: watch::Sender<LinkState>, stop: CancellationToken) {
    let mut generation = 0;
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let (ev_tx, mut events) = mpsc::channel::<Event>(64);
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            r = open(&cfg, ev_tx, generation + 1) => r,
        };
        let session = match opened {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tx.send_replace(LinkState::Down(Arc::from(e.to_string())));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        generation += 1;
        backoff = Duration::from_millis(100);
        info!(generation, epoch = %session.epoch, "cluster backplane connected");
        tx.send_replace(LinkState::Up(session.clone()));
        let mut poll = tokio::time::interval(POLL);
        let mut was_up = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = events.recv() => match ev {
                    None | Some(Event::Closed) | Some(Event::ClientError(ClientError::MaxReconnects)) => break,
                    Some(_) => {}
                },
                _ = poll.tick() => {}
            }
            let up = session.client.connection_state() == async_nats::connection::State::Connected;
            if up != was_up {
                was_up = up;
                if up {
                    info!(generation, "cluster backplane reconnected");
                    tx.send_replace(LinkState::Up(session.clone()));
                } else {
                    warn!(generation, "cluster backplane: connection to NATS lost");
                    tx.send_replace(LinkState::Down(Arc::from("connection to NATS lost")));
                }
            }
        }
        tx.send_replace(LinkState::Down(Arc::from(
            "connection to NATS lost; reconnecting",
        )));
        warn!(generation, "cluster backplane session closed");
    }
    tx.send_replace(LinkState::Down(Arc::from("backplane stopped")));
}

async fn open(
    cfg: &ClusterConfig,
    events: mpsc::Sender<Event>,
    generation: u64,
) -> Result<Session, ClusterError> {
    let client = ConnectOptions::new()
        .name(format!("presence-hub {}", cfg.node_id))
        .connection_timeout(CONNECT_TIMEOUT)
        // One immediate reconnect attempt, then the client closes (module doc).
        .max_reconnects(Some(1))
        .reconnect_delay_callback(|_| Duration::ZERO)
        .ping_interval(cfg.ping_interval)
        .event_callback(move |ev| {
            let events = events.clone();
            async move {
                // Lost events are covered by the state poll.
                let _ = events.try_send(ev);
            }
        })
        .connect(cfg.servers.as_slice())
        .await
        .map_err(ClusterError::unavailable)?;
    let admin = jetstream::ContextBuilder::new()
        .timeout(SETUP_TIMEOUT)
        .build(client.clone());
    setup::ensure(&admin, cfg).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .build(client.clone());
    let h = setup::handles(&js, cfg).await?;
    let epoch = Epoch::of(h.agents.cached_info());
    Ok(Session {
        client,
        js,
        h,
        epoch,
        generation,
    })
}
