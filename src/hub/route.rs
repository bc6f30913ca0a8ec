//! What the router hands back: a [`Route`] to an agent's actor, in this process
//! ([`Route::Local`]) or on the node that owns the agent ([`Route::Remote`], cluster mode:
//! the same commands, forwarded with [`super::remote`]), and [`RouteError`], why a
//! command did not reach one.

use tokio::sync::oneshot;

use super::remote::{self, Answer, Command, Peer};
use crate::agent::{ActorError, AgentHandle, Applied, Profile, TabId, TelephonyAnswer};
use crate::cluster::NodeId;
use crate::model::{AgentId, AgentState, Input, Rejection};
use crate::outbox::Outbox;
use crate::protocol::{self, Ref, Text};

/// Why a command did not reach an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// Neither in the directory nor logged in.
    #[error("unknown agent")]
    UnknownAgent,
    /// The actor is gone: the hub is shutting down.
    #[error("the hub is shutting down")]
    Unavailable,
    /// Cluster mode: NATS is unreachable, so no change is taken (retryable).
    #[error("the cluster backplane (NATS) is unavailable: retry")]
    Backplane {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Cluster mode: another copy of this telephony event is being applied (by this node
    /// or another one) and its reply is not stored yet (retryable).
    #[error("this event is being applied (another copy of it arrived first): retry")]
    EventInFlight {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Cluster mode: the node asked does not own the agent (any more), or its actor was
    /// fenced (another node stored a change of it first): the router looks the owner up
    /// again (bounded), then answers `unavailable`.
    #[error("the agent is moving to another node: retry")]
    Moved,
    /// Cluster mode: another node owns the agent; the router routes there.
    #[error("another node owns this agent: retry")]
    NotOwner,
}

impl From<ActorError> for RouteError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Stopped => RouteError::Unavailable,
            ActorError::Unavailable { retry_after_ms } => RouteError::Backplane { retry_after_ms },
            ActorError::Moved => RouteError::Moved,
        }
    }
}

impl RouteError {
    /// The `unavailable` reply when the error is the cluster's (retryable), else `None`.
    pub(crate) fn unavailable(&self, reply_ref: Option<&Ref>) -> Option<Text> {
        let retry_after_ms = match self {
            RouteError::Backplane { retry_after_ms }
            | RouteError::EventInFlight { retry_after_ms } => *retry_after_ms,
            RouteError::Moved | RouteError::NotOwner => super::cluster::RETRY_AFTER_MS,
            RouteError::UnknownAgent | RouteError::Unavailable => return None,
        };
        Some(protocol::unavailable(
            reply_ref,
            &self.to_string(),
            retry_after_ms,
        ))
    }
}

/// Where an agent's commands go. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Route {
    /// The actor runs in this process.
    Local(AgentHandle),
    /// Cluster mode: the actor runs on another node (boxed: a socket holding a route stays
    /// one word plus the tag).
    Remote(Box<RemoteRoute>),
}

/// An agent owned by another node.
#[derive(Clone)]
pub(crate) struct RemoteRoute {
    /// The agent.
    pub agent: AgentId,
    /// Its owner as this node saw it when the route was made.
    pub owner: NodeId,
    /// Sends the commands.
    pub peer: Peer,
}

impl Route {
    /// The route to `agent` on `owner`.
    pub(crate) fn remote(agent: AgentId, owner: NodeId, peer: Peer) -> Route {
        Route::Remote(Box::new(RemoteRoute { agent, owner, peer }))
    }

    /// Registers a tab with a local actor (which queues `hello` into `outbox` first).
    /// Single mode only: in cluster mode tabs are counted per node ([`Route::attach_node`]).
    pub(crate) async fn attach(
        &self,
        outbox: Outbox,
        hint: Option<Profile>,
    ) -> Result<TabId, RouteError> {
        match self {
            Route::Local(h) => h.attach(outbox, hint).await.map_err(RouteError::from),
            Route::Remote(_) => Err(RouteError::Moved),
        }
    }

    /// A tab closed (single mode).
    pub(crate) async fn detach(&self, tab: TabId) {
        match self {
            Route::Local(h) => h.detach(tab).await,
            Route::Remote(_) => {}
        }
    }

    /// Cluster mode: a tab of the agent opened on `node`; the state after it, with its seq.
    pub(crate) async fn attach_node(
        &self,
        node: NodeId,
        hint: Option<Profile>,
    ) -> Result<(u64, AgentState), RouteError> {
        match self {
            Route::Local(h) => h.attach_node(node, hint).await.map_err(RouteError::from),
            Route::Remote(r) => {
                let command = Command::Attach {
                    agent: r.agent.clone(),
                    node: node.to_string(),
                    hint,
                };
                match r.peer.call(&r.owner, &command).await? {
                    Answer::Attached { seq, state } => Ok((seq, state)),
                    _ => Err(RouteError::Moved),
                }
            }
        }
    }

    /// Cluster mode: a tab of the agent on `node` closed.
    pub(crate) async fn detach_node(&self, node: NodeId) -> Result<(), RouteError> {
        match self {
            Route::Local(h) => h.detach_node(node).await.map_err(RouteError::from),
            Route::Remote(r) => {
                let command = Command::Detach {
                    agent: r.agent.clone(),
                    node: node.to_string(),
                };
                r.peer.call(&r.owner, &command).await.map(|_| ())
            }
        }
    }

    /// Applies an input; `origin` is the tab that asked (it answers a logout itself).
    pub(crate) async fn apply(
        &self,
        input: Input,
        origin: Option<TabId>,
    ) -> Result<Result<Applied, Rejection>, RouteError> {
        match self {
            Route::Local(h) => h.apply(input, origin).await.map_err(RouteError::from),
            Route::Remote(r) => {
                let command = Command::Apply {
                    agent: r.agent.clone(),
                    input,
                };
                match r.peer.call(&r.owner, &command).await? {
                    Answer::Applied { seq, state } => Ok(Ok(remote::applied(seq, &state))),
                    Answer::Rejected { rejection } => Ok(Err(rejection)),
                    _ => Err(RouteError::Moved),
                }
            }
        }
    }

    /// Hands a telephony event to the actor; its answer arrives on the receiver. A remote
    /// one is answered before this returns (the owner's reply, relayed as it is).
    pub(super) async fn telephony(
        &self,
        event_id: String,
        input: Input,
    ) -> Result<oneshot::Receiver<Result<TelephonyAnswer, ActorError>>, RouteError> {
        match self {
            Route::Local(h) => h
                .telephony_dispatch(event_id, input)
                .await
                .map_err(RouteError::from),
            Route::Remote(r) => {
                let command = Command::Telephony {
                    agent: r.agent.clone(),
                    event_id,
                    input,
                };
                match r.peer.call(&r.owner, &command).await? {
                    Answer::Telephony {
                        error,
                        fields,
                        duplicate,
                    } => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(Ok(remote::telephony_answer(error, &fields, duplicate)));
                        Ok(rx)
                    }
                    _ => Err(RouteError::Moved),
                }
            }
        }
    }

    /// A new profile from the directory.
    pub(super) async fn set_profile(&self, profile: Profile) -> Result<(), RouteError> {
        match self {
            Route::Local(h) => {
                h.set_profile(profile).await;
                Ok(())
            }
            Route::Remote(r) => {
                let command = Command::SetProfile {
                    agent: r.agent.clone(),
                    profile,
                };
                r.peer.call(&r.owner, &command).await.map(|_| ())
            }
        }
    }

    /// The agent left the directory.
    pub(super) async fn leave_directory(&self) -> Result<(), RouteError> {
        match self {
            Route::Local(h) => {
                h.leave_directory().await;
                Ok(())
            }
            Route::Remote(r) => {
                let command = Command::LeaveDirectory {
                    agent: r.agent.clone(),
                };
                r.peer.call(&r.owner, &command).await.map(|_| ())
            }
        }
    }
}
