//! This node's part in a cluster (`--nats`): the backplane connection, the
//! membership heartbeat and this node's view of the agents stream (`view.rs`), and what
//! the rest of the hub asks of them: whether changes may be taken (NATS reachable), who
//! owns an agent ([`Owners`]), and the live members for `/healthz` and `/metrics`.
//!
//! Preview: actors append every change to the agents stream, every node's view follows it,
//! and commands for an agent another node owns are forwarded there (`remote.rs`); the
//! telephony dedup and the directory are still per node. `docs/cluster.md` ("Status")
//! lists what is and is not built.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::view::View;
use crate::cluster::{
    Availability, Backplane, ClusterConfig, ClusterError, Link, Members, Membership, NodeId,
};
use crate::config::ClusterSettings;

/// How long a client waits before retrying a change answered `unavailable` while NATS is
/// unreachable (the backplane reconnects with a backoff of 100 ms .. 1 s).
pub(crate) const RETRY_AFTER_MS: u64 = 500;

/// How long a clean stop waits for this node's member key to be deleted.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// This node in the cluster.
pub(crate) struct ClusterNode {
    /// The connection to NATS (availability) and this node's settings.
    backplane: Backplane,
    /// The heartbeat and the member view; taken by [`ClusterNode::leave`].
    membership: Mutex<Option<Membership>>,
    /// The member view as of the last look, kept after `leave` for `/healthz`.
    last_members: Mutex<Vec<NodeId>>,
    /// Ends the backplane's connection task, after the clean leave.
    stop: CancellationToken,
    /// How far this node's copy of the cluster's directory is (see `cluster_directory`).
    directory: Arc<super::cluster_directory::DirectorySync>,
    /// The member view, for ownership (kept by the heartbeat).
    members_view: watch::Receiver<Members>,
    /// This node's view of the agents stream.
    view: Arc<View>,
}

/// The cluster's state as `/healthz` shows it.
pub(crate) struct ClusterHealth {
    /// Why this node does not take changes now (`None`: it does).
    pub not_ready: Option<String>,
    /// The live members this node sees.
    pub members: Vec<NodeId>,
}

impl ClusterNode {
    /// Starts the backplane connection (in the background: the node serves at once and
    /// answers `unavailable` until NATS is reached) and joins the members.
    pub(crate) fn start(settings: &ClusterSettings, node: NodeId) -> Result<Self, ClusterError> {
        let mut config = ClusterConfig::new(
            settings.servers.clone(),
            node,
            &settings.prefix,
            settings.replicas,
        )?;
        if let Some(heartbeat) = settings.heartbeat {
            config.heartbeat = heartbeat;
        }
        if let Some(ttl) = settings.member_ttl {
            config.member_ttl = ttl;
        }
        if let Some(t) = settings.ack_timeout {
            config.ack_timeout = t;
        }
        if let Some(p) = settings.nats_ping_interval {
            config.ping_interval = p;
        }
        let stop = CancellationToken::new();
        let backplane = Backplane::start(config, stop.clone());
        let membership = backplane.join();
        let members_view = membership.watch();
        info!(
            node = %backplane.config().node_id,
            nats = ?settings.servers,
            "CLUSTER MODE: changes are stored in NATS JetStream, every node \
             follows them, commands are forwarded to the agent's owning node, and telephony \
             dedup and the directory are cluster-wide; what is not built or measured yet is \
             listed in docs/cluster.md, Status."
        );
        Ok(ClusterNode {
            backplane,
            membership: Mutex::new(Some(membership)),
            last_members: Mutex::new(Vec::new()),
            stop,
            members_view,
            view: Arc::default(),
            directory: Arc::default(),
        })
    }

    /// The backplane (appends, loads, the follower, dedup, the directory).
    pub(crate) fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    /// This node's view of the agents stream.
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Who owns which agent, as this node sees the members.
    pub(crate) fn owners(&self) -> Owners {
        Owners {
            me: self.node_id().clone(),
            members: self.members_view.clone(),
        }
    }

    /// A receiver of the member view (wakes up when it changes).
    pub(crate) fn members_watch(&self) -> watch::Receiver<Members> {
        self.members_view.clone()
    }

    /// The connection, for the router's check before a change.
    pub(crate) fn link(&self) -> &Link {
        self.backplane.link()
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &NodeId {
        &self.backplane.config().node_id
    }

    /// Readiness and members now.
    pub(crate) fn health(&self) -> ClusterHealth {
        let members = self.members();
        let not_ready = match self.link().availability() {
            Availability::Unavailable { reason } => Some(reason),
            Availability::Available if !self.view.ready() => {
                Some("starting: this node has not caught up with the agents stream yet".to_owned())
            }
            Availability::Available if !members.contains(self.node_id()) => {
                Some("joining the cluster: this node is not in the member list yet".to_owned())
            }
            Availability::Available if !self.directory.loaded() => {
                Some("loading the cluster's directory".to_owned())
            }
            Availability::Available => None,
        };
        ClusterHealth { not_ready, members }
    }

    /// How far this node's copy of the cluster's directory is.
    pub(crate) fn directory_sync(&self) -> Arc<super::cluster_directory::DirectorySync> {
        self.directory.clone()
    }

    /// True when this node owns `agent` in its current member view (false before it sees
    /// any member, and after it left).
    pub(crate) fn owns(&self, agent: &crate::model::AgentId) -> bool {
        self.members_now()
            .is_some_and(|m| m.owner(agent.as_str()) == Some(self.node_id()))
    }

    /// The current member view (`None` after a clean leave).
    pub(crate) fn members_now(&self) -> Option<crate::cluster::Members> {
        let membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        membership.as_ref().map(Membership::current)
    }

    /// The live members as this node sees them (the last view once it left).
    pub(crate) fn members(&self) -> Vec<NodeId> {
        let mut last = self.last_members.lock().unwrap_or_else(|p| p.into_inner());
        let membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = membership.as_ref() {
            *last = m.current().nodes().to_vec();
        }
        last.clone()
    }

    /// True once the node left (or the backplane stopped).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// A clean stop: deletes this node's member key (so the others see it leave at their
    /// next heartbeat), keeps answering forwarded commands until they have (one heartbeat
    /// and a margin, at most until `deadline`), then closes the connection.
    pub(crate) async fn leave(&self, deadline: tokio::time::Instant) {
        let left = self.delete_member_key().await;
        if left {
            let linger = self.backplane.config().heartbeat + Duration::from_millis(250);
            let until = (tokio::time::Instant::now() + linger).min(deadline);
            tokio::time::sleep_until(until).await;
        }
        self.stop.cancel();
    }

    /// Deletes this node's member key; true if it was deleted.
    async fn delete_member_key(&self) -> bool {
        let membership = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(m) = membership else {
            return false;
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, m.leave()).await {
            Ok(Ok(())) => {
                info!("left the cluster");
                true
            }
            Ok(Err(e)) => {
                warn!(error = %e, "could not leave the cluster cleanly");
                false
            }
            Err(_) => {
                warn!("leaving the cluster timed out");
                false
            }
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The check every change passes before it reaches an actor: in cluster mode, NATS must be
/// reachable (a change is refused with `unavailable` rather than taken while the node is
/// cut off); in single mode it always passes.
#[derive(Clone, Default)]
pub(crate) struct Gate {
    /// The backplane's connection; `None` in single mode.
    link: Option<Link>,
}

impl Gate {
    /// The gate of a node (`None`: single mode).
    pub(crate) fn new(cluster: Option<&ClusterNode>) -> Self {
        Gate {
            link: cluster.map(|c| c.link().clone()),
        }
    }

    /// `Ok` when a change may be taken now.
    pub(crate) fn admit(&self) -> Result<(), super::RouteError> {
        match self.link.as_ref().map(Link::availability) {
            None | Some(Availability::Available) => Ok(()),
            Some(Availability::Unavailable { .. }) => Err(super::RouteError::Backplane {
                retry_after_ms: RETRY_AFTER_MS,
            }),
        }
    }
}

/// Where an agent's actor runs, as this node sees the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This node (always, on a single node).
    Local,
    /// Another live member.
    Remote(NodeId),
    /// No member is known yet (the node has not joined): nobody can take the agent.
    Nobody,
}

/// Computes owners: rendezvous hashing over the live members (`cluster::members`).
#[derive(Clone)]
pub(crate) struct Owners {
    /// This node.
    me: NodeId,
    /// The member view kept by the heartbeat.
    members: watch::Receiver<Members>,
}

impl Owners {
    /// The owner of `agent_id` now.
    pub(crate) fn owner_of(&self, agent_id: &str) -> Owner {
        match self.members.borrow().owner(agent_id) {
            None => Owner::Nobody,
            Some(n) if *n == self.me => Owner::Local,
            Some(n) => Owner::Remote(n.clone()),
        }
    }

    /// This node.
    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    /// The live members now.
    pub(crate) fn members(&self) -> Members {
        self.members.borrow().clone()
    }
}
