//! The public side of an agent actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

use super::actor::{AgentActor, NodeTabs};
use super::env::AgentEnv;
use super::mailbox;
use crate::cluster::NodeId;
use crate::model::{AgentState, Input, Rejection, TeamId};
use crate::outbox::Outbox;
use crate::protocol::StoredReply;
use crate::protocol::{self, ErrorCode, LatestState, Ref, Text};
use crate::store::CommitTicket;

/// Mailbox size of one agent. Small: an agent gets a handful of requests per call.
const MAILBOX: usize = 64;

/// Identifies one socket (tab) of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TabId(u64);

impl TabId {
    /// The number (cluster mode's node tabs key tabs by it).
    pub(crate) fn get(self) -> u64 {
        self.0
    }
}

impl TabId {
    /// A process-unique tab id (so unique among one agent's tabs).
    pub(crate) fn next() -> TabId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TabId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Name, teams and wrap-up of an agent, from the directory or its token. Serde: cluster
/// nodes forward it to the agent's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Profile {
    pub name: Option<String>,
    pub teams: Vec<TeamId>,
    /// Overrides the hub default; `None` uses it.
    pub wrap_up_ms: Option<u64>,
}

/// The answer to an applied input.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The agent's latest published state after it (shared with the fan-out).
    pub state: Arc<LatestState>,
    /// Resolves when the state this answer reports is committed to the durable store
    /// (at once with `--durability async`). Await it before acknowledging the request.
    pub ticket: CommitTicket,
}

impl Applied {
    /// Takes the ticket out (leaving a resolved one), to await it while keeping the answer.
    pub(crate) fn take_ticket(&mut self) -> CommitTicket {
        std::mem::replace(&mut self.ticket, CommitTicket::done())
    }
}

/// The answer to a telephony event: the stored first reply, and whether this was a repeat.
#[derive(Debug)]
pub(crate) struct TelephonyAnswer {
    pub reply: StoredReply,
    pub duplicate: bool,
    /// Resolves when the event id and the change it caused are committed to the durable
    /// store (at once with `--durability async`). Await it before sending the reply.
    pub ticket: CommitTicket,
}

impl TelephonyAnswer {
    /// The reply frame, for a request whose `ref` was `reply_ref`.
    pub(crate) fn frame(&self, reply_ref: Option<&Ref>) -> Text {
        protocol::telephony_answer(reply_ref, &self.reply, self.duplicate)
    }

    /// The HTTP status of the reply (`POST /api/v1/telephony/events`).
    pub(crate) fn http_status(&self) -> u16 {
        self.reply.error.map_or(200, ErrorCode::http_status)
    }

    /// Takes the ticket out (leaving a resolved one).
    pub(crate) fn take_ticket(&mut self) -> CommitTicket {
        std::mem::replace(&mut self.ticket, CommitTicket::done())
    }
}

/// Why an actor did not take a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ActorError {
    /// The actor is gone (stopped while idle, or the hub is shutting down).
    #[error("the agent actor has stopped")]
    Stopped,
    /// Cluster mode: the change could not be stored (NATS unreachable or too slow to
    /// acknowledge); nothing was applied. Retryable.
    #[error("the change could not be stored: retry")]
    Unavailable {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Cluster mode: another node stored a change of this agent first (it owns the agent
    /// now). The actor stopped; nothing was applied.
    #[error("the agent moved to another node")]
    Moved,
}

/// Close code for the tabs of an agent whose actor here was fenced (another node owns the
/// agent now): WebSocket "service restart", reconnect.
pub(crate) const CLOSE_MOVED: u16 = 1012;

/// What the actor answers a command with.
pub(super) type Reply<T> = oneshot::Sender<Result<T, ActorError>>;

/// What the actor is asked to do. Every variant is kept to a few words (large payloads
/// boxed): the mailbox queue holds these by value while messages wait.
pub(super) enum Command {
    Attach {
        outbox: Outbox,
        hint: Option<Box<Profile>>,
        reply: Reply<TabId>,
    },
    Detach {
        tab: TabId,
    },
    Apply {
        input: Box<Input>,
        /// The tab that asked for a logout answers itself; the others are closed by the actor.
        origin: Option<TabId>,
        reply: Reply<Result<Applied, Rejection>>,
    },
    Telephony {
        event_id: Box<str>,
        input: Box<Input>,
        reply: Reply<TelephonyAnswer>,
    },
    SetProfile {
        profile: Box<Profile>,
        /// The agent left the directory: stop at once if idle.
        stop: bool,
    },
    /// Cluster mode: a tab of this agent opened on `node` (any node, this one included).
    /// The tab's frames are made on its own node from the followed stream; the actor only
    /// counts it. Answers the state after the tab was counted, with its `seq`.
    AttachNode {
        node: NodeId,
        hint: Option<Box<Profile>>,
        reply: Reply<(u64, AgentState)>,
    },
    /// Cluster mode: a tab of this agent on `node` closed.
    DetachNode {
        node: NodeId,
    },
    /// Cluster mode: only these nodes are alive; tabs counted on any other node are closed
    /// (the disconnect grace starts now if none is left).
    NodesAlive {
        alive: Arc<[NodeId]>,
    },
}

/// A cloneable handle to one agent's actor. The actor stops when every handle is dropped.
#[derive(Clone)]
pub(crate) struct AgentHandle {
    /// The actor's bounded mailbox; the actor ends once every sender is dropped.
    sender: mailbox::Sender<Command>,
}

impl AgentHandle {
    /// Starts the actor for `state` with `profile` and returns its handle.
    pub(crate) fn spawn(env: &AgentEnv, state: AgentState, profile: Profile) -> AgentHandle {
        Self::spawn_at(env, state, profile, 0, NodeTabs::new())
    }

    /// [`AgentHandle::spawn`] in cluster mode: `seq` is the stream sequence of the agent's
    /// last stored change (0: none), whose version is `state.version`; the actor's next
    /// append expects it; `tabs` are its open tabs per node (their sum is
    /// `state.connections`).
    pub(crate) fn spawn_at(
        env: &AgentEnv,
        state: AgentState,
        profile: Profile,
        seq: u64,
        tabs: NodeTabs,
    ) -> AgentHandle {
        let (sender, receiver) = mailbox::channel(MAILBOX);
        let actor =
            AgentActor::new(receiver, env.clone(), state, profile, seq).with_node_tabs(tabs);
        env.tasks().spawn(actor.run());
        AgentHandle { sender }
    }

    /// Registers a new socket of this agent. The actor queues `hello` (and `call_offered`
    /// if ringing) into `outbox` before anything else.
    pub(crate) async fn attach(
        &self,
        outbox: Outbox,
        hint: Option<Profile>,
    ) -> Result<TabId, ActorError> {
        let (reply, rx) = oneshot::channel();
        self.sender
            .send(Command::Attach {
                outbox,
                hint: hint.map(Box::new),
                reply,
            })
            .await
            .map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// Tells the actor a socket closed (row 21 applies to the last one).
    pub(crate) async fn detach(&self, tab: TabId) {
        let _ = self.sender.send(Command::Detach { tab }).await;
    }

    /// Applies an input from a socket or the HTTP API.
    pub(crate) async fn apply(
        &self,
        input: Input,
        origin: Option<TabId>,
    ) -> Result<Result<Applied, Rejection>, ActorError> {
        let (reply, rx) = oneshot::channel();
        self.sender
            .send(Command::Apply {
                input: Box::new(input),
                origin,
                reply,
            })
            .await
            .map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// Hands a telephony event (deduplicated by `event_id`) to the actor and returns where
    /// its answer will arrive; waits only when the mailbox is full.
    pub(crate) async fn telephony_dispatch(
        &self,
        event_id: String,
        input: Input,
    ) -> Result<oneshot::Receiver<Result<TelephonyAnswer, ActorError>>, ActorError> {
        let (reply, rx) = oneshot::channel();
        self.sender
            .send(Command::Telephony {
                event_id: event_id.into_boxed_str(),
                input: Box::new(input),
                reply,
            })
            .await
            .map_err(|_| ActorError::Stopped)?;
        Ok(rx)
    }

    /// Updates name, teams or wrap-up (directory change). A new wrap-up time applies from
    /// the next call on; a running wrap-up keeps its deadline.
    pub(crate) async fn set_profile(&self, profile: Profile) {
        let _ = self
            .sender
            .send(Command::SetProfile {
                profile: Box::new(profile),
                stop: false,
            })
            .await;
    }

    /// The agent left the directory: its name and teams are cleared, and the actor stops
    /// at once if it is idle (else once it is, after the idle period).
    pub(crate) async fn leave_directory(&self) {
        let _ = self
            .sender
            .send(Command::SetProfile {
                profile: Box::default(),
                stop: true,
            })
            .await;
    }

    /// Cluster mode: counts a tab that opened on `node`; answers the agent's state then.
    pub(crate) async fn attach_node(
        &self,
        node: NodeId,
        hint: Option<Profile>,
    ) -> Result<(u64, AgentState), ActorError> {
        let (reply, rx) = oneshot::channel();
        self.sender
            .send(Command::AttachNode {
                node,
                hint: hint.map(Box::new),
                reply,
            })
            .await
            .map_err(|_| ActorError::Stopped)?;
        rx.await.map_err(|_| ActorError::Stopped)?
    }

    /// Cluster mode: a tab on `node` closed.
    pub(crate) async fn detach_node(&self, node: NodeId) -> Result<(), ActorError> {
        self.sender
            .send(Command::DetachNode { node })
            .await
            .map_err(|_| ActorError::Stopped)
    }

    /// Cluster mode: tabs counted on nodes not in `alive` are closed.
    pub(crate) async fn nodes_alive(&self, alive: Arc<[NodeId]>) -> Result<(), ActorError> {
        self.sender
            .send(Command::NodesAlive { alive })
            .await
            .map_err(|_| ActorError::Stopped)
    }

    /// True once the actor stopped (idle, or at shutdown): commands to it fail.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_slots_stay_small() {
        // Waiting messages are held by value in the mailbox queue: a few words each.
        let size = std::mem::size_of::<Command>();
        assert!(size <= 48, "Command grew to {size} bytes");
    }
}
