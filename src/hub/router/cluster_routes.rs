//! The router in cluster mode: who owns an agent (rendezvous hashing over the live
//! members), routes to other owners ([`Route::Remote`]), the owner's side of forwarded
//! commands, and this node's agent tabs (counted at their agent's owner, served here).
//!
//! Re-routing: a command whose owner answers `Moved` (it no longer owns the agent, or its
//! actor was fenced), or whose owner cannot be reached (a dead node answers "no
//! responders" at once), is sent again after looking the owner up again, at most
//! `RETRIES` times, with a short pause when the owner did not change (the member view
//! may be about to); then the caller gets `unavailable` with `retry_after_ms`.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Reach, Route, RouteError, Router, RETRIES};
use crate::agent::{Applied, Profile, TelephonyAnswer};
use crate::cluster::{Members, NodeId};
use crate::fanout::{HelloParts, LogoutAnswer, NodeTabs};
use crate::hub::remote::Peer;
use crate::model::{AgentId, AgentState, Input, Rejection};

/// Pause before retrying an owner that did not answer, when the member view still names
/// it: a lost node leaves the view within the member TTL, a clean leave within a beat.
const RECHECK_PAUSE: Duration = Duration::from_millis(250);

/// How long a closed tab's count-off is retried (a lost owner leaves the views within
/// member TTL + one heartbeat, 3 s by default; NATS may take a little longer).
const DETACH_PATIENCE: Duration = Duration::from_secs(10);

/// Cluster mode's part of the router.
#[derive(Clone)]
pub(crate) struct Ownership {
    /// Sends commands to other nodes (and knows this node's id).
    pub peer: Peer,
    /// The live members as this node sees them.
    pub members: watch::Receiver<Members>,
    /// The agent tabs connected to this node.
    pub tabs: Arc<NodeTabs>,
    /// This node's view (its epoch goes into a tab's `hello`).
    pub fanout: Arc<crate::fanout::Fanout>,
}

impl Ownership {
    /// The owner of `id` in the current view; `None` while the view is empty (joining).
    pub(crate) fn owner(&self, id: &AgentId) -> Option<NodeId> {
        self.members.borrow().owner(id.as_str()).cloned()
    }

    /// This node.
    pub(crate) fn me(&self) -> &NodeId {
        self.peer.me()
    }
}

impl Router {
    /// Cluster mode: a route to the owner when another node owns `id`; `None` when this
    /// node does (or on a single node); `unavailable` while the member view is empty.
    pub(super) fn remote_owner(&self, id: &AgentId) -> Result<Option<Route>, RouteError> {
        let Some(own) = &self.ownership else {
            return Ok(None);
        };
        match own.owner(id) {
            None => Err(RouteError::Backplane {
                retry_after_ms: super::super::cluster::RETRY_AFTER_MS,
            }),
            Some(owner) if owner == *own.me() => Ok(None),
            Some(owner) => Ok(Some(Route::remote(id.clone(), owner, own.peer.clone()))),
        }
    }

    /// Cluster mode: whether this node owns `id` now (always true on a single node).
    pub(crate) fn owns(&self, id: &AgentId) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::Acquire)
            && self
                .ownership
                .as_ref()
                .is_none_or(|own| own.owner(id).as_ref() == Some(own.me()))
    }

    /// Whether a command that failed with `e` on `route` should be sent again: `Moved`
    /// always; an unreachable remote owner after a look at the member view (at once if it
    /// changed, after a short pause if not).
    pub(super) async fn retry(&self, route: &Route, e: RouteError) -> bool {
        match (e, route) {
            (RouteError::Moved | RouteError::NotOwner, _) => true,
            (RouteError::Unavailable, Route::Local(_)) => true,
            (RouteError::Backplane { .. }, Route::Remote(r)) => {
                if self.gate.admit().is_err() {
                    return false;
                }
                let owner = self.ownership.as_ref().and_then(|o| o.owner(&r.agent));
                if owner.as_ref() == Some(&r.owner) {
                    tokio::time::sleep(RECHECK_PAUSE).await;
                }
                true
            }
            _ => false,
        }
    }

    /// The error a command gives up with after its retries.
    pub(super) fn gave_up(&self, last: RouteError) -> RouteError {
        match last {
            RouteError::Moved | RouteError::NotOwner | RouteError::Backplane { .. } => {
                RouteError::Backplane {
                    retry_after_ms: super::super::cluster::RETRY_AFTER_MS,
                }
            }
            other => other,
        }
    }

    /// Cluster mode: this node's agent tabs.
    pub(crate) fn node_tabs(&self) -> Option<&Arc<NodeTabs>> {
        self.ownership.as_ref().map(|o| &o.tabs)
    }

    /// The route of `id` for a command from one of its tabs here: the owner's now.
    async fn tab_route(&self, id: &AgentId, reach: Reach) -> Result<Route, RouteError> {
        if let Some(remote) = self.remote_owner(id)? {
            return Ok(remote);
        }
        self.find(id, reach)
            .await?
            .map(Route::Local)
            .ok_or(RouteError::UnknownAgent)
    }

    /// Cluster mode: a tab of `id` opens on this node. It is registered here (pending),
    /// counted at the owner, then given its `hello`. Returns the tab's route for its
    /// later commands (routed to the owner of the moment on each of them).
    pub(crate) async fn login_node(
        &self,
        id: &AgentId,
        tab: u64,
        outbox: crate::outbox::Outbox,
        hint: Profile,
    ) -> Result<Route, RouteError> {
        let own = self.ownership.as_ref().ok_or(RouteError::Unavailable)?;
        let in_directory = self.directory.read().agents.contains_key(id);
        let hint = (!in_directory).then_some(hint);
        own.tabs.register(id, tab, outbox);
        let mut last = RouteError::Unavailable;
        for _ in 0..RETRIES {
            let route = match self.tab_route(id, Reach::Login).await {
                Ok(r) => r,
                Err(e) => {
                    own.tabs.remove(id, tab);
                    return Err(e);
                }
            };
            match route.attach_node(own.me().clone(), hint.clone()).await {
                Ok((seq, state)) => {
                    let epoch = self.env_epoch();
                    let hello = HelloParts {
                        now: self.clock.now_ms(),
                        epoch: &epoch,
                        node: own.me().as_str(),
                    };
                    if own.tabs.attached(id, tab, seq, &state, hello) {
                        return Ok(Route::remote(
                            id.clone(),
                            own.me().clone(),
                            own.peer.clone(),
                        ));
                    }
                    // Closed meanwhile (a logout): count it off again.
                    let _ = route.detach_node(own.me().clone()).await;
                    return Err(RouteError::Unavailable);
                }
                Err(e) if self.retry(&route, e).await => last = e,
                Err(e) => {
                    own.tabs.remove(id, tab);
                    return Err(e);
                }
            }
        }
        own.tabs.remove(id, tab);
        Err(self.gave_up(last))
    }

    /// Cluster mode: an input from tab `tab` of the agent of `route` (made by
    /// [`Router::login_node`]). The change it made is delivered to this node's tabs before
    /// the answer returns (the tab sees its update before its `ok`).
    pub(crate) async fn apply_tab(
        &self,
        route: &Route,
        tab: u64,
        input: Input,
    ) -> Result<Result<Applied, Rejection>, RouteError> {
        let (Route::Remote(r), Some(own)) = (route, self.ownership.as_ref()) else {
            return Err(RouteError::Unavailable);
        };
        // This tab answers its own logout (after the update, as on a single node); the
        // others are closed from the change.
        let own_logout =
            matches!(input, Input::Logout { .. }) && own.tabs.logging_out(&r.agent, tab);
        let mut result = Err(RouteError::Unavailable);
        for _ in 0..RETRIES {
            let route = match self.tab_route(&r.agent, Reach::Known).await {
                Ok(route) => route,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            match route.apply(input.clone(), None).await {
                Err(e) if self.retry(&route, e).await => result = Err(self.gave_up(e)),
                other => {
                    result = other;
                    break;
                }
            }
        }
        let answer = match &result {
            Ok(Ok(applied)) => {
                if let Ok(state) = serde_json::from_str::<AgentState>(&applied.state.json()) {
                    own.tabs.changed(applied.state.seq, &state);
                }
                LogoutAnswer::Done
            }
            _ => LogoutAnswer::Failed,
        };
        if own_logout {
            own.tabs.logout_answered(&r.agent, tab, answer);
        }
        result
    }

    /// Cluster mode: tab `tab` of the agent of `route` closed: it is forgotten here and
    /// counted off at the owner (unless a logout closed it, which cleared the count).
    pub(crate) async fn detach_tab(&self, route: &Route, tab: u64) {
        let (Route::Remote(r), Some(own)) = (route, self.ownership.as_ref()) else {
            return;
        };
        if !own.tabs.remove(&r.agent, tab) {
            return;
        }
        self.detach_node_count(&r.agent).await;
    }

    /// Counts one tab of this node off at the agent's owner (retried across a move).
    pub(super) async fn detach_node_count(&self, id: &AgentId) {
        let Some(own) = self.ownership.as_ref() else {
            return;
        };
        // Nobody waits for it, and a count left too high would keep the agent logged in:
        // retried (re-routed) while the owner moves or NATS is back, within a bound.
        let until = tokio::time::Instant::now() + DETACH_PATIENCE;
        loop {
            let failed = match self.tab_route(id, Reach::Known).await {
                Ok(route) => match route.detach_node(own.me().clone()).await {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(RouteError::UnknownAgent) => return,
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= until {
                warn!(agent = %id, error = %failed, "a closed tab could not be counted off at the agent's owner");
                return;
            }
            debug!(agent = %id, error = %failed, "tab close not counted yet; retrying");
            tokio::time::sleep(RECHECK_PAUSE).await;
        }
    }

    /// Drops the local actors of agents this node does not own in the current view;
    /// returns how many.
    pub(crate) fn drop_unowned(&self) -> usize {
        let Some(own) = &self.ownership else {
            return 0;
        };
        let before = self.agents.len();
        self.agents
            .retain(|id, _| own.owner(id).as_ref() == Some(own.me()));
        before - self.agents.len()
    }

    /// Tells every local actor which nodes are alive (tabs counted elsewhere are closed).
    pub(crate) async fn nodes_alive(&self, alive: Arc<[NodeId]>) {
        let handles: Vec<_> = self.agents.iter().map(|h| h.value().clone()).collect();
        for h in handles {
            let _ = h.nodes_alive(alive.clone()).await;
        }
    }

    /// The owner's side of a forwarded `apply`.
    pub(crate) async fn apply_owned(
        &self,
        id: &AgentId,
        input: Input,
    ) -> Result<Result<Applied, Rejection>, RouteError> {
        let h = self
            .find(id, Reach::Known)
            .await?
            .ok_or(RouteError::UnknownAgent)?;
        h.apply(input, None).await.map_err(|_| RouteError::Moved)
    }

    /// The owner's side of a forwarded telephony event.
    pub(crate) async fn telephony_owned(
        &self,
        id: &AgentId,
        event_id: String,
        input: Input,
    ) -> Result<TelephonyAnswer, RouteError> {
        let h = self
            .find(id, Reach::Known)
            .await?
            .ok_or(RouteError::UnknownAgent)?;
        let rx = h
            .telephony_dispatch(event_id, input)
            .await
            .map_err(|_| RouteError::Moved)?;
        rx.await
            .map_err(|_| RouteError::Moved)?
            .map_err(RouteError::from)
    }

    /// The owner's side of a forwarded attach.
    pub(crate) async fn attach_owned(
        &self,
        id: &AgentId,
        node: NodeId,
        hint: Option<Profile>,
    ) -> Result<(u64, AgentState), RouteError> {
        let h = self
            .find(id, Reach::Login)
            .await?
            .ok_or(RouteError::UnknownAgent)?;
        h.attach_node(node, hint)
            .await
            .map_err(|_| RouteError::Moved)
    }

    /// The owner's side of a forwarded detach.
    pub(crate) async fn detach_owned(&self, id: &AgentId, node: NodeId) {
        if let Ok(Some(h)) = self.find(id, Reach::Known).await {
            let _ = h.detach_node(node).await;
        }
    }

    /// The owner's side of a forwarded profile change.
    pub(crate) async fn set_profile_owned(&self, id: &AgentId, profile: Profile) {
        if let Ok(Some(h)) = self.find(id, Reach::Known).await {
            h.set_profile(profile).await;
        }
    }

    /// The owner's side of a forwarded directory removal.
    pub(crate) async fn leave_directory_owned(&self, id: &AgentId) {
        if let Some(h) = self.agents.get(id).map(|h| h.clone()) {
            h.leave_directory().await;
        }
    }

    /// The epoch tabs are told in `hello` (the fan-out's).
    fn env_epoch(&self) -> Arc<str> {
        self.ownership
            .as_ref()
            .map(|o| o.fanout.epoch().clone())
            .unwrap_or_else(|| Arc::from(""))
    }
}
