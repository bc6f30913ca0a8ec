//! What an agent actor uses of the rest of the hub, as one small handle with private
//! fields: the fan-out it publishes to, the adapter notifier, the event-id memory, the
//! durable store (or, in cluster mode, the backplane), the clock, the metrics, the policy
//! defaults and the task tracker it is spawned on, and where it reports that it stopped. The hub builds one [`AgentEnv`] and
//! every actor holds a clone (one pointer in every agent's task).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::cluster::{Backplane, NodeId};
use crate::fanout::{Fanout, NodeTabs, Notifier};
use crate::metrics::Metrics;
use crate::protocol::LatestState;
use crate::store::dedup::EventIdCache;
use crate::store::{CommitTicket, Store};

/// The hub-wide defaults an actor's policy starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Defaults {
    /// Wrap-up after a call when the directory sets none for the agent (`--wrap-up-secs`).
    pub wrap_up: Duration,
    /// How long an agent with no open tab stays logged in (`--disconnect-grace-secs`).
    pub disconnect_grace: Duration,
    /// Ring timeouts in a row before the agent is set busy (0: off).
    pub max_missed_in_row: u32,
    /// How long an actor with no tab, call or timer waits for something to happen before
    /// it stops (`--actor-idle-secs`); its state stays in the store.
    pub actor_idle: Duration,
}

/// The services of an agent actor. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct AgentEnv {
    /// Shared by every actor: one allocation for the hub.
    shared: Arc<EnvParts>,
}

/// The parts an [`AgentEnv`] is made of (built by the hub once, shared by every actor).
pub(crate) struct EnvParts {
    /// Numbers and keeps every change, hands it to subscribed admins.
    pub fanout: Arc<Fanout>,
    /// Pushes call notifications to adapter sockets.
    pub notifier: Arc<Notifier>,
    /// First replies to telephony events, for idempotency.
    pub events: Arc<EventIdCache>,
    /// Every change is queued to it (never waited on by an actor).
    pub store: Arc<Store>,
    /// Unix milliseconds on tokio's clock.
    pub clock: Clock,
    /// Counters the actor bumps (notifications, telephony outcomes).
    pub metrics: Arc<Metrics>,
    /// Hub-wide policy defaults.
    pub defaults: Defaults,
    /// Every actor task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Where a stopping actor leaves its last published state, for the hub to forget it
    /// once its last change is committed.
    pub retired: mpsc::Sender<Arc<LatestState>>,
    /// This node's id, for the `hello` of agent tabs.
    pub node: NodeId,
    /// Cluster mode: this node's agent tabs, which get their frames from every change this
    /// node sees (here: its own actors' changes); `None` on a single node.
    pub node_tabs: Option<Arc<NodeTabs>>,
    /// How changes are kept, chosen once at start: `None` on a single node (queued to
    /// `store`, acknowledged after its commit); in cluster mode the backplane every change
    /// is appended to (acknowledged after JetStream's ack; `store` is then the follower's
    /// history cache and actors do not write it).
    pub cluster: Option<Backplane>,
    /// Cancelled when the hub shuts down: in cluster mode a timer or a closed tab whose
    /// change cannot be stored then stops retrying (the stored state is what a restart or
    /// a new owner takes over).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AgentEnv {
    /// The handle over `parts`.
    pub(crate) fn new(parts: EnvParts) -> AgentEnv {
        AgentEnv {
            shared: Arc::new(parts),
        }
    }

    pub(super) fn fanout(&self) -> &Fanout {
        &self.shared.fanout
    }

    pub(super) fn notifier(&self) -> &Notifier {
        &self.shared.notifier
    }

    pub(super) fn events(&self) -> &EventIdCache {
        &self.shared.events
    }

    pub(super) fn store(&self) -> &Store {
        &self.shared.store
    }

    pub(super) fn clock(&self) -> Clock {
        self.shared.clock
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(super) fn defaults(&self) -> &Defaults {
        &self.shared.defaults
    }

    /// Cluster mode's backplane (`None` on a single node).
    pub(super) fn cluster(&self) -> Option<&Backplane> {
        self.shared.cluster.as_ref()
    }

    /// Cancelled when the hub shuts down.
    pub(super) fn shutdown(&self) -> &tokio_util::sync::CancellationToken {
        &self.shared.shutdown
    }

    /// This node's id.
    pub(super) fn node(&self) -> &NodeId {
        &self.shared.node
    }

    /// Cluster mode: this node's agent tabs.
    pub(super) fn node_tabs(&self) -> Option<&NodeTabs> {
        self.shared.node_tabs.as_deref()
    }

    pub(super) fn tasks(&self) -> &TaskTracker {
        &self.shared.tasks
    }

    /// An actor stopped (idle): the hub forgets it once its last change is committed. A
    /// full queue only delays that until the agent is next looked up.
    pub(super) fn retired(&self, last: Arc<LatestState>) {
        let _ = self.shared.retired.try_send(last);
    }

    /// A ticket for an answer that stored nothing itself (see [`Store::ack_barrier`]).
    pub(super) fn ack_barrier(&self) -> CommitTicket {
        self.shared.store.ack_barrier()
    }
}
