//! What the router hands back: a [`Route`] to an agent's actor (a socket keeps the route
//! of its agent), and [`RouteError`], why a command did not reach one.

use tokio::sync::oneshot;

use crate::agent::{ActorError, AgentHandle, Applied, Profile, TabId, TelephonyAnswer};
use crate::model::{Input, Rejection};
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
    /// Cluster mode: the agent's actor here was fenced (another node stored a change of
    /// it first). The router routes again; after a few tries this is `unavailable`.
    #[error("the agent is moving to another node: retry")]
    Moved,
    /// Cluster mode: another node owns the agent ([`super::Router::owner_of`] names it).
    /// The remote route forwards there; without one this is `unavailable`.
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
            RouteError::Backplane { retry_after_ms } => *retry_after_ms,
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

/// Where an agent's commands go. Cheap to clone; a socket keeps the route of its agent.
#[derive(Clone)]
pub(crate) enum Route {
    /// The actor runs in this process.
    Local(AgentHandle),
}

impl Route {
    /// Registers a tab with the actor (which queues `hello` into `outbox` first).
    pub(crate) async fn attach(
        &self,
        outbox: Outbox,
        hint: Option<Profile>,
    ) -> Result<TabId, RouteError> {
        match self {
            Route::Local(h) => h.attach(outbox, hint).await.map_err(RouteError::from),
        }
    }

    /// A tab closed.
    pub(crate) async fn detach(&self, tab: TabId) {
        match self {
            Route::Local(h) => h.detach(tab).await,
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
        }
    }

    /// Hands a telephony event to the actor; its answer arrives on the receiver.
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
        }
    }

    pub(super) async fn set_profile(&self, profile: Profile) {
        match self {
            Route::Local(h) => h.set_profile(profile).await,
        }
    }
}
