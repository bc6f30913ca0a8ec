//! Node-to-node commands (cluster mode): what a node sends to the owner of an agent over
//! [`Backplane::forward`], what the owner answers, and the owner's side that runs them.
//!
//! The format is one serde enum each way ([`Command`], [`Answer`]), JSON: internal to the
//! cluster (every node of a cluster runs the same build), not part of the wire protocol.
//! A node that receives a command for an agent it does not own (any more) answers
//! [`Answer::Moved`]; the sender looks the owner up again and retries (bounded, see the
//! router). The owner answers only once the change it made is stored (the actor's ticket),
//! so the relayed acknowledgement means what a local one means.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

use super::route::RouteError;
use super::Hub;
use crate::agent::{Applied, Profile, TelephonyAnswer};
use crate::cluster::{Backplane, ClusterError, Forwarded, NodeId};
use crate::model::{AgentId, AgentState, Input, Rejection};
use crate::protocol::{ErrorCode, LatestState, StoredReply};
use crate::store::CommitTicket;

/// How long a forwarded command may wait for the owner's answer. Above the owner's own
/// worst case (an append waits at most the ack timeout, 1.5 s) so a slow append is
/// answered by the owner, not by this timeout.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_millis(2500);

/// A command for an agent, sent to the node that owns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    /// An input from a tab, an admin or the HTTP API.
    Apply { agent: AgentId, input: Input },
    /// A telephony event (already claimed by the receiving node where dedup is shared).
    Telephony {
        agent: AgentId,
        event_id: String,
        input: Input,
    },
    /// A tab of the agent opened on `node`.
    Attach {
        agent: AgentId,
        node: String,
        hint: Option<Profile>,
    },
    /// A tab of the agent on `node` closed.
    Detach { agent: AgentId, node: String },
    /// The agent's directory entry changed.
    SetProfile { agent: AgentId, profile: Profile },
    /// The agent's directory entry was deleted.
    LeaveDirectory { agent: AgentId },
}

impl Command {
    /// The agent the command is for.
    pub(crate) fn agent(&self) -> &AgentId {
        match self {
            Command::Apply { agent, .. }
            | Command::Telephony { agent, .. }
            | Command::Attach { agent, .. }
            | Command::Detach { agent, .. }
            | Command::SetProfile { agent, .. }
            | Command::LeaveDirectory { agent } => agent,
        }
    }
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub(crate) enum Answer {
    /// The input was applied (or changed nothing); the agent's state after it, stored.
    Applied { seq: u64, state: AgentState },
    /// The input was refused; nothing changed.
    Rejected { rejection: Rejection },
    /// A telephony event's reply, exactly as the owner built it.
    Telephony {
        error: Option<ErrorCode>,
        fields: String,
        duplicate: bool,
    },
    /// The tab is counted; the agent's state now (for the tab's `hello`).
    Attached { seq: u64, state: AgentState },
    /// Done (detach, profile).
    Done,
    /// This node does not own the agent (any more): look the owner up again.
    Moved,
    /// Neither in the directory nor logged in.
    UnknownAgent,
    /// Retryable: the owner could not take it now (NATS, a store failure, shutdown).
    Unavailable { retry_after_ms: u64 },
}

impl Answer {
    fn encode(&self) -> Bytes {
        // Strings, numbers and enums only: serialization cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The answer for a route error on the owner.
    fn of_error(e: RouteError) -> Answer {
        match e {
            RouteError::UnknownAgent => Answer::UnknownAgent,
            RouteError::Moved | RouteError::NotOwner => Answer::Moved,
            RouteError::Backplane { retry_after_ms }
            | RouteError::EventInFlight { retry_after_ms } => {
                Answer::Unavailable { retry_after_ms }
            }
            RouteError::Unavailable => Answer::Unavailable {
                retry_after_ms: super::cluster::RETRY_AFTER_MS,
            },
        }
    }

    /// The answer's route error, if it is one.
    pub(crate) fn error(&self) -> Option<RouteError> {
        match self {
            Answer::Moved => Some(RouteError::Moved),
            Answer::UnknownAgent => Some(RouteError::UnknownAgent),
            Answer::Unavailable { retry_after_ms } => Some(RouteError::Backplane {
                retry_after_ms: *retry_after_ms,
            }),
            _ => None,
        }
    }
}

/// What sends commands to other nodes: the backplane and this node's id.
#[derive(Clone)]
pub(crate) struct Peer {
    /// The backplane's forward.
    backplane: Backplane,
    /// This node (named in attach and detach).
    me: NodeId,
}

impl Peer {
    /// The peer side of a node.
    pub(crate) fn new(backplane: Backplane) -> Peer {
        let me = backplane.config().node_id.clone();
        Peer { backplane, me }
    }

    /// This node's id.
    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    /// Sends `command` to `owner` and returns its answer; transport failures (the node is
    /// gone, no answer in time, NATS down) and error answers are route errors.
    pub(crate) async fn call(
        &self,
        owner: &NodeId,
        command: &Command,
    ) -> Result<Answer, RouteError> {
        let body = Bytes::from(serde_json::to_vec(command).unwrap_or_default());
        let reply = self
            .backplane
            .forward(owner, body, FORWARD_TIMEOUT)
            .await
            .map_err(|e| {
                debug!(node = %owner, error = %e, "forward failed");
                RouteError::Backplane {
                    retry_after_ms: e.retry_after_ms().unwrap_or(super::cluster::RETRY_AFTER_MS),
                }
            })?;
        let answer: Answer = serde_json::from_slice(&reply).map_err(|e| {
            warn!(node = %owner, error = %e, "undecodable answer from a node");
            RouteError::Backplane {
                retry_after_ms: super::cluster::RETRY_AFTER_MS,
            }
        })?;
        match answer.error() {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }
}

/// Rebuilds an applied answer on the node that forwarded it: the state as the owner stored
/// it, already committed (the owner answered after its ticket).
pub(crate) fn applied(seq: u64, state: &AgentState) -> Applied {
    Applied {
        state: Arc::new(LatestState::of(state, seq)),
        ticket: CommitTicket::done(),
    }
}

/// Rebuilds a telephony answer on the node that forwarded it.
pub(crate) fn telephony_answer(
    error: Option<ErrorCode>,
    fields: &str,
    duplicate: bool,
) -> TelephonyAnswer {
    TelephonyAnswer {
        reply: StoredReply {
            error,
            fields: Arc::from(fields),
        },
        duplicate,
        ticket: CommitTicket::done(),
    }
}

/// The owner's side: receives the commands other nodes forward to this one and runs each
/// on the local router, in its own task (one agent's slow append does not hold up
/// another's). Returns when the backplane stops or the hub shuts down.
pub(crate) async fn serve(hub: Arc<Hub>, mut inbox: tokio::sync::mpsc::Receiver<Forwarded>) {
    while let Some(fwd) = inbox.recv().await {
        let hub = hub.clone();
        hub.tasks().clone().spawn(async move {
            let answer = match serde_json::from_slice::<Command>(&fwd.body) {
                Ok(command) => run(&hub, command).await,
                Err(e) => {
                    warn!(error = %e, "undecodable command from another node");
                    Answer::Unavailable {
                        retry_after_ms: super::cluster::RETRY_AFTER_MS,
                    }
                }
            };
            if let Err(e) = fwd.respond(answer.encode()).await {
                debug!(error = %e, "could not answer a forwarded command");
            }
        });
    }
}

/// Runs one forwarded command on this node's router.
async fn run(hub: &Hub, command: Command) -> Answer {
    let router = hub.router();
    if !router.owns(command.agent()) {
        return Answer::Moved;
    }
    match command {
        Command::Apply { agent, input } => match router.apply_owned(&agent, input).await {
            Ok(Ok(mut applied)) => match applied.take_ticket().await {
                Ok(()) => answer_state(&applied.state),
                Err(_) => Answer::Unavailable {
                    retry_after_ms: super::cluster::RETRY_AFTER_MS,
                },
            },
            Ok(Err(rejection)) => Answer::Rejected { rejection },
            Err(e) => Answer::of_error(e),
        },
        Command::Telephony {
            agent,
            event_id,
            input,
        } => match router.telephony_owned(&agent, event_id, input).await {
            Ok(mut answer) => match answer.take_ticket().await {
                Ok(()) => Answer::Telephony {
                    error: answer.reply.error,
                    fields: answer.reply.fields.to_string(),
                    duplicate: answer.duplicate,
                },
                Err(_) => Answer::Unavailable {
                    retry_after_ms: super::cluster::RETRY_AFTER_MS,
                },
            },
            Err(e) => Answer::of_error(e),
        },
        Command::Attach { agent, node, hint } => {
            let Ok(node) = NodeId::parse(&node) else {
                return Answer::Unavailable {
                    retry_after_ms: super::cluster::RETRY_AFTER_MS,
                };
            };
            match router.attach_owned(&agent, node, hint).await {
                Ok((seq, state)) => Answer::Attached { seq, state },
                Err(e) => Answer::of_error(e),
            }
        }
        Command::Detach { agent, node } => {
            if let Ok(node) = NodeId::parse(&node) {
                router.detach_owned(&agent, node).await;
            }
            Answer::Done
        }
        Command::SetProfile { agent, profile } => {
            router.set_profile_owned(&agent, profile).await;
            Answer::Done
        }
        Command::LeaveDirectory { agent } => {
            router.leave_directory_owned(&agent).await;
            Answer::Done
        }
    }
}

fn answer_state(published: &LatestState) -> Answer {
    // The owner's own published state, as JSON parsed back (cluster mode only; a few
    // microseconds against a NATS round trip).
    let state = match serde_json::from_str::<AgentState>(&published.json()) {
        Ok(s) => s,
        Err(_) => {
            return Answer::Unavailable {
                retry_after_ms: super::cluster::RETRY_AFTER_MS,
            }
        }
    };
    Answer::Applied {
        seq: published.seq,
        state,
    }
}

impl From<ClusterError> for RouteError {
    fn from(e: ClusterError) -> Self {
        RouteError::Backplane {
            retry_after_ms: e.retry_after_ms().unwrap_or(super::cluster::RETRY_AFTER_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[test]
    fn commands_and_answers_round_trip_as_json() {
        let agent = AgentId::parse("a1").unwrap();
        let cmds = [
            Command::Apply {
                agent: agent.clone(),
                input: Input::SetStatus {
                    status: Status::Busy,
                    note: Some("x".into()),
                    if_version: Some(3),
                    by: crate::model::Actor::Admin,
                },
            },
            Command::Attach {
                agent: agent.clone(),
                node: "n2".into(),
                hint: Some(Profile {
                    name: Some("Ann".into()),
                    teams: vec![],
                    wrap_up_ms: None,
                }),
            },
            Command::Detach {
                agent: agent.clone(),
                node: "n2".into(),
            },
        ];
        for c in cmds {
            let text = serde_json::to_string(&c).unwrap();
            let back: Command = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
            assert_eq!(back.agent(), &agent);
        }
        let a = Answer::Rejected {
            rejection: Rejection::Conflict { current: 4 },
        };
        let back: Answer = serde_json::from_slice(&a.encode()).unwrap();
        assert!(matches!(
            back,
            Answer::Rejected {
                rejection: Rejection::Conflict { current: 4 }
            }
        ));
        assert_eq!(Answer::Moved.error(), Some(RouteError::Moved));
        // A garbled command is refused, not guessed.
        assert!(serde_json::from_str::<Command>(r#"{"op":"apply"}"#).is_err());
    }
}
