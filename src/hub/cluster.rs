//! This node's part in a cluster (`--nats`, preview): the backplane connection and the
//! membership heartbeat, and what the rest of the hub asks of them today: whether changes
//! may be taken (NATS reachable), and the live members for `/healthz` and `/metrics`.
//!
//! Preview: agent state is still kept by this node alone (its actors, its SQLite store).
//! Nothing is appended to the agents stream yet and no command is forwarded to another
//! node; `docs/cluster.md` ("Status") lists what is and is not built.

use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{
    Availability, Backplane, ClusterConfig, ClusterError, Link, Membership, NodeId,
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
        let stop = CancellationToken::new();
        let backplane = Backplane::start(config, stop.clone());
        let membership = backplane.join();
        warn!(
            node = %backplane.config().node_id,
            nats = ?settings.servers,
            "CLUSTER MODE IS A PREVIEW: this node connects to NATS and joins the members, and \
             refuses changes with `unavailable` while NATS is unreachable, but it still keeps \
             agent state ONLY LOCALLY: nothing is replicated, commands are not forwarded to \
             other nodes, and each node has its own view of every agent. Do not run several \
             nodes behind one load balancer yet (see docs/cluster.md, Status)."
        );
        Ok(ClusterNode {
            backplane,
            membership: Mutex::new(Some(membership)),
            last_members: Mutex::new(Vec::new()),
            stop,
        })
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
            Availability::Available if !members.contains(self.node_id()) => {
                Some("joining the cluster: this node is not in the member list yet".to_owned())
            }
            Availability::Available => None,
        };
        ClusterHealth { not_ready, members }
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

    /// A clean stop: deletes this node's member key (so the others see it leave at their
    /// next heartbeat), then closes the connection.
    pub(crate) async fn leave(&self) {
        let membership = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(m) = membership {
            match tokio::time::timeout(LEAVE_TIMEOUT, m.leave()).await {
                Ok(Ok(())) => info!("left the cluster"),
                Ok(Err(e)) => warn!(error = %e, "could not leave the cluster cleanly"),
                Err(_) => warn!("leaving the cluster timed out"),
            }
        }
        self.stop.cancel();
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
