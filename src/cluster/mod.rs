//! The cluster backplane: everything several hub nodes share, kept in NATS JetStream
//! (`docs/cluster.md` has the design, the NATS settings and the failure cases).
//!
//! - [`agents`]: the stream of agent state changes. One subject per agent; every append
//!   names the sequence it expects to follow, so a node that lost ownership is refused
//!   (fencing) and the stream sequence is the cluster-wide `seq`.
//! - [`dedup`]: telephony event ids, create-only keys in a KV bucket with a TTL.
//! - [`directory`]: agents and ring groups in a KV bucket, with a watch for edits.
//! - [`follow`]: every change of the stream in `seq` order, for each node's own view.
//! - [`forward`]: commands sent to the owning node and its reply relayed (request/reply).
//! - [`members`]: live nodes (KV keys kept alive by heartbeats) and who owns which agent
//!   (rendezvous hashing over the live nodes).
//! - [`link`]: the connection to NATS, its availability, and the rule that a change is sent
//!   promptly or never.
//!
//! This module only talks to NATS. It knows ids from [`crate::model`] and nothing of the hub:
//! the hub's router will decide what to append and whom to forward to.

pub mod agents;
pub mod dedup;
pub mod directory;
pub mod follow;
pub mod forward;
pub mod link;
pub mod members;
pub mod naming;
mod setup;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

pub use agents::{Epoch, Head, StoredChange};
pub use dedup::{Claim, ClaimToken, DedupRecord};
pub use directory::{DirectoryChange, DirectoryKey};
pub use follow::{Followed, FollowedChange};
pub use forward::Forwarded;
pub use link::{Availability, Link};
pub use members::{owner_of, Members, Membership};
pub use naming::{InvalidName, Names};
pub use stats::Stats;

/// This node's name in the cluster (`--node-id`): 1..=64 characters of `[A-Za-z0-9._-]`
/// (a host name and a port fit; it is escaped wherever NATS needs a token).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates a node id.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(InvalidName {
                what: "--node-id",
                value: s.to_owned(),
                allowed: "1..=64 characters of [A-Za-z0-9._-]",
            });
        }
        Ok(NodeId(Arc::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a node reaches the backplane and how it names and sizes what it creates there.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (`--nats`); a client moves to another one when its server is lost.
    pub servers: Vec<String>,
    /// This node (`--node-id`).
    pub node_id: NodeId,
    /// Replicas of every stream and bucket (`--nats-replicas`): 3 in production, so an
    /// acknowledged change survives the loss of one NATS server.
    pub replicas: usize,
    /// Names of streams, buckets and subjects (`--nats-prefix`).
    pub names: Names,
    /// How long an append may wait for JetStream's acknowledgement before the change is
    /// answered `unavailable` (the spec allows 2 s from losing NATS to `unavailable`).
    pub ack_timeout: Duration,
    /// How often the NATS client pings its server; two pings unanswered close the
    /// connection (a silent server is noticed within ~2 intervals).
    pub ping_interval: Duration,
    /// How often a node renews its member key.
    pub heartbeat: Duration,
    /// A member whose key was not renewed for this long is gone (its agents move).
    pub member_ttl: Duration,
    /// How long telephony event ids are remembered (at least 4 h by the contract).
    pub dedup_ttl: Duration,
    /// How long the agents stream keeps changes: the window for exact `resume` and for a
    /// node to rebuild report history from the stream.
    pub history_max_age: Duration,
}

impl ClusterConfig {
    /// The defaults of `docs/cluster.md` for one node.
    pub fn new(
        servers: Vec<String>,
        node_id: NodeId,
        prefix: &str,
        replicas: usize,
    ) -> Result<Self, ClusterError> {
        if servers.is_empty() {
            return Err(ClusterError::Config("--nats needs at least one URL".into()));
        }
        if !(1..=5).contains(&replicas) {
            return Err(ClusterError::Config(format!(
                "--nats-replicas must be 1..=5 (JetStream's limit), got {replicas}"
            )));
        }
        Ok(ClusterConfig {
            servers,
            node_id,
            replicas,
            names: Names::new(prefix).map_err(|e| ClusterError::Config(e.to_string()))?,
            ack_timeout: Duration::from_millis(1500),
            ping_interval: Duration::from_secs(1),
            // A lost node leaves every view within member TTL + one heartbeat (3 s): the
            // contract's 5 s failover keeps 2 s for the takeover and the client's retry
            // (measured 2.9-4.1 s end to end with 1 s / 3 s, too close to 5 s). Five
            // missed beats before a live node is taken for lost.
            heartbeat: Duration::from_millis(500),
            member_ttl: Duration::from_millis(2500),
            dedup_ttl: Duration::from_secs(5 * 3600),
            history_max_age: Duration::from_secs(90 * 24 * 3600),
        })
    }
}

/// What a backplane operation can answer besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// NATS cannot be reached or did not acknowledge in time. Retryable: the hub answers
    /// `unavailable` with `retry_after_ms`. A change refused this way was not acknowledged;
    /// see `docs/cluster.md` ("Outage") for the one case where it may still be stored.
    #[error("NATS unavailable: {reason}")]
    Unavailable {
        /// What failed, for logs and `/healthz`.
        reason: String,
    },
    /// The append's expected sequence was not the agent's last one: another node appended
    /// first. The caller has lost ownership of the agent (or raced for it and lost).
    #[error("append fenced: agent {agent} has a newer stored change")]
    Fenced {
        /// The agent whose append was refused.
        agent: String,
    },
    /// JetStream refused a request for a reason retrying will not fix.
    #[error("JetStream refused: {0}")]
    Refused(String),
    /// A setting cannot work.
    #[error("cluster configuration: {0}")]
    Config(String),
}

impl ClusterError {
    /// An [`ClusterError::Unavailable`] from any error.
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> Self {
        ClusterError::Unavailable {
            reason: e.to_string(),
        }
    }

    /// How long a client should wait before retrying, when retrying makes sense.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ClusterError::Unavailable { .. } => Some(500),
            _ => None,
        }
    }
}

/// A node's handle on the backplane; cheap to clone.
#[derive(Clone)]
pub struct Backplane {
    /// The connection and its availability.
    link: Link,
    /// This node's settings.
    config: Arc<ClusterConfig>,
    /// What this node did, for `/metrics`.
    counters: Arc<stats::Counters>,
}

impl Backplane {
    /// Starts the connection in the background and returns at once: operations answer
    /// `unavailable` until NATS is reached and the streams and buckets are set up. `stop`
    /// ends the background task.
    pub fn start(config: ClusterConfig, stop: tokio_util::sync::CancellationToken) -> Self {
        let config = Arc::new(config);
        let link = Link::start(config.clone(), stop);
        Backplane {
            link,
            config,
            counters: Arc::default(),
        }
    }

    /// What this node did on the backplane since it started.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Waits until the backplane is available, at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        self.link.wait_up(timeout).await.map(|_| ())
    }

    /// This node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The connection (availability, its watch).
    pub fn link(&self) -> &Link {
        &self.link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let n1 = NodeId::parse("host-1.example.com-7400").unwrap();
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a b").is_err());
        assert!(NodeId::parse(&"x".repeat(65)).is_err());
        let url = || vec!["nats://127.0.0.1:4222".to_string()];
        assert!(ClusterConfig::new(url(), n1.clone(), "presence", 3).is_ok());
        for (servers, prefix, replicas) in [
            (vec![], "presence", 1),
            (url(), "pre.sence", 1),
            (url(), "presence", 0),
            (url(), "presence", 6),
        ] {
            let e = ClusterConfig::new(servers, n1.clone(), prefix, replicas).unwrap_err();
            assert!(matches!(e, ClusterError::Config(_)), "{e}");
        }
        let cfg = ClusterConfig::new(url(), n1, "presence", 1).unwrap();
        assert!(cfg.dedup_ttl >= Duration::from_secs(4 * 3600));
        assert!(cfg.ack_timeout <= Duration::from_secs(2));
        assert!(cfg.member_ttl > 2 * cfg.heartbeat);
    }
}
