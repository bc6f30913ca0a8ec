//! The stream of agent state changes: one subject per agent (`<prefix>.agent.<id>`), file
//! storage, `--nats-replicas` replicas.
//!
//! Single writer per agent: every append carries `Nats-Expected-Last-Subject-Sequence`, the
//! stream sequence of the last change the writer knows for that agent (0 for none). JetStream
//! stores the message only if that is still the subject's last sequence, atomically in the
//! stream leader; otherwise it refuses with "wrong last sequence" and the writer has lost the
//! agent ([`ClusterError::Fenced`]). So whatever nodes believe about ownership, the stored
//! versions of an agent form one chain 1, 2, 3, ... with no fork.
//!
//! The stream sequence of a change is its `seq` (one order for all admins), and the stream's
//! creation time names the epoch: it changes only if the stream is recreated.
//!
//! Reads of an agent's last change use the stream's message-get API, which the stream leader
//! answers, so a new owner reads everything acknowledged before it asked (a direct get may be
//! answered by a lagging replica).

use super::stats::Outcome;
use super::{Backplane, ClusterError};
use crate::model::AgentId;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::fmt;

/// Header holding the agent's version of a change (1, 2, 3, ...).
pub(crate) const VERSION: &str = "Presence-Version";
/// Header naming the node that wrote a change (for operators).
const NODE: &str = "Presence-Node";

/// The identity of the agents stream; becomes the protocol's `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(String);

impl Epoch {
    /// The epoch of a stream: its creation time in nanoseconds, as 16 hex digits.
    pub(crate) fn of(info: &stream::Info) -> Self {
        let nanos = info.created.unix_timestamp_nanos() as u64;
        Epoch(format!("{nanos:016x}"))
    }

    /// The stream's creation time in Unix milliseconds: the cluster's start, which every
    /// node reads the same (the `since` of a directory agent that never changed).
    pub fn created_ms(&self) -> Option<u64> {
        u64::from_str_radix(&self.0, 16)
            .ok()
            .map(|nanos| nanos / 1_000_000)
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an agent's chain of changes ends: what the next append must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Stream sequence of the last stored change (its `seq`); 0 when none is stored.
    pub seq: u64,
    /// The agent's version in that change; 0 when none is stored.
    pub version: u64,
}

/// An agent's last stored change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// Its place in the stream and the agent's chain.
    pub head: Head,
    /// What the writer stored (the hub's serialized agent state).
    pub body: Bytes,
}

impl Backplane {
    /// The epoch of the stream this node is connected to, if connected.
    pub fn epoch(&self) -> Result<Epoch, ClusterError> {
        Ok(self.link.session()?.epoch.clone())
    }

    /// Appends the agent's next change after `after` (the head the caller last stored or
    /// loaded). Returns the new head (`version = after.version + 1`) once JetStream has
    /// acknowledged it: stored with the stream's replication and storage settings.
    ///
    /// [`ClusterError::Fenced`] if another change was stored after `after`;
    /// [`ClusterError::Unavailable`] if NATS is not reachable or did not acknowledge within
    /// the ack timeout.
    pub async fn append(
        &self,
        agent: &AgentId,
        after: Head,
        body: Bytes,
    ) -> Result<Head, ClusterError> {
        let result = self.append_once(agent, after, body).await;
        self.counters.count(match &result {
            Ok(_) => Outcome::Appended,
            Err(ClusterError::Fenced { .. }) => Outcome::Fenced,
            Err(_) => Outcome::AppendUnavailable,
        });
        result
    }

    async fn append_once(
        &self,
        agent: &AgentId,
        after: Head,
        body: Bytes,
    ) -> Result<Head, ClusterError> {
        let session = self.link.session()?;
        let version = after.version + 1;
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            after.seq.to_string().as_str(),
        );
        headers.insert(VERSION, version.to_string().as_str());
        headers.insert(NODE, self.config.node_id.as_str());
        let subject = self.config.names.agent_subject(agent.as_str());
        let ack = session
            .js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(ClusterError::unavailable)?
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::WrongLastSequence => ClusterError::Fenced {
                    agent: agent.to_string(),
                },
                _ => ClusterError::unavailable(e),
            })?;
        Ok(Head {
            seq: ack.sequence,
            version,
        })
    }

    /// The agent's last stored change (`None` if it has none): what a new owner loads before
    /// it takes the agent over.
    pub async fn last(&self, agent: &AgentId) -> Result<Option<StoredChange>, ClusterError> {
        let session = self.link.session()?;
        let subject = self.config.names.agent_subject(agent.as_str());
        match session
            .h
            .agents
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(msg) => {
                let version = msg
                    .headers
                    .get(VERSION)
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| {
                        ClusterError::Refused(format!(
                            "change {} of {agent} has no valid {VERSION} header",
                            msg.sequence
                        ))
                    })?;
                Ok(Some(StoredChange {
                    head: Head {
                        seq: msg.sequence,
                        version,
                    },
                    body: msg.payload,
                }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ClusterError::unavailable(e)),
        }
    }

    /// The last sequence of the agents stream, asked of the stream leader: a view that has
    /// applied this sequence reflects every change acknowledged before the call.
    pub async fn last_seq(&self) -> Result<u64, ClusterError> {
        let session = self.link.session()?;
        let info = session
            .h
            .agents
            .get_info()
            .await
            .map_err(ClusterError::unavailable)?;
        Ok(info.state.last_sequence)
    }
}
