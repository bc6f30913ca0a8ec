//! Following the agents stream: every node applies every change, in `seq` order, to serve
//! its own admins, reads and reports. [`Backplane::follow`] delivers the stream from a given
//! sequence on, across NATS outages: after a new session it resumes at the sequence after
//! the last one it delivered, so nothing is skipped or repeated. If the stream no longer
//! holds what was asked for (aged out), it says so with [`Followed::Gap`]; if the stream was
//! recreated (new epoch), with [`Followed::NewEpoch`], and starts again from its beginning.

use super::naming::untoken;
use super::{Backplane, Epoch};
use crate::model::AgentId;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

/// Capacity of a follower's channel; when it is full the follower waits (never drops).
const FOLLOW_CAPACITY: usize = 4096;

/// One stored change, as every node receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedChange {
    /// Its stream sequence: the protocol's `seq`.
    pub seq: u64,
    /// Whose change.
    pub agent: AgentId,
    /// The agent's version in it.
    pub version: u64,
    /// What the owner stored.
    pub body: Bytes,
}

/// What a follower delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The next change.
    Change(FollowedChange),
    /// Sequences `from..=to` are no longer in the stream (older than its max age): a view
    /// that needed them must start from a snapshot (`recovered: false`).
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
    /// The stream was recreated: sequences start again under a new epoch.
    NewEpoch(Epoch),
}

impl Backplane {
    /// Delivers every change with a sequence above `after`, then every new one (module doc).
    /// Ends when the receiver is dropped or the backplane stops.
    pub fn follow(&self, after: u64) -> mpsc::Receiver<Followed> {
        let (tx, rx) = mpsc::channel(FOLLOW_CAPACITY);
        let mut sessions = self.link.sessions();
        let subjects = self.config.names.agents_subjects();
        let agent_prefix = format!("{}.agent.", self.config.names.prefix);
        tokio::spawn(async move {
            let mut last = after;
            let mut epoch: Option<Epoch> = None;
            while let Some(session) = sessions.up().await {
                if epoch.as_ref().is_some_and(|e| *e != session.epoch) {
                    last = 0;
                    if tx
                        .send(Followed::NewEpoch(session.epoch.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                epoch = Some(session.epoch.clone());
                let deliver_policy = if last == 0 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: last + 1,
                    }
                };
                let consumer = session
                    .h
                    .agents
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subjects.clone(),
                        deliver_policy,
                        ..Default::default()
                    })
                    .await;
                let messages = match consumer {
                    Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let mut messages = match messages {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "stream follower could not start; retrying");
                        sessions.pause(session.generation).await;
                        continue;
                    }
                };
                loop {
                    let msg = tokio::select! {
                        m = messages.next() => m,
                        _ = sessions.ended(session.generation) => None,
                    };
                    let Some(Ok(msg)) = msg else { break };
                    let Ok(info) = msg.info() else { break };
                    let seq = info.stream_sequence;
                    if seq <= last {
                        continue;
                    }
                    if seq > last + 1 {
                        let gap = Followed::Gap {
                            from: last + 1,
                            to: seq - 1,
                        };
                        if tx.send(gap).await.is_err() {
                            return;
                        }
                    }
                    last = seq;
                    let agent = msg
                        .subject
                        .as_str()
                        .strip_prefix(&agent_prefix)
                        .and_then(untoken)
                        .and_then(|raw| AgentId::parse(&raw).ok());
                    let version = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(super::agents::VERSION))
                        .and_then(|v| v.as_str().parse::<u64>().ok());
                    let (Some(agent), Some(version)) = (agent, version) else {
                        warn!(seq, subject = %msg.subject, "agents stream holds a message this hub did not write");
                        continue;
                    };
                    let change = FollowedChange {
                        seq,
                        agent,
                        version,
                        body: msg.payload.clone(),
                    };
                    if tx.send(Followed::Change(change)).await.is_err() {
                        return;
                    }
                }
                sessions.pause(session.generation).await;
            }
        });
        rx
    }
}
