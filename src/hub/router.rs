//! The routing seam: every command for an agent (from its own socket, an admin socket, the
//! telephony socket or the HTTP API) goes through the [`Router`], which finds the agent's
//! actor, starting it when the agent may have one, and hands back a [`Route`] to it.
//!
//! On a single node a route is always [`Route::Local`]: the actor runs in this process. In
//! cluster mode an agent owned by another node gets a [`Route::Remote`] to its owner, and
//! the same commands are forwarded there (`router/cluster_routes.rs`): callers only ever see
//! `Route` and the router's methods.
//!
//! Who may have an actor: an agent in the directory, and an agent whose tab logs in. A
//! command for anyone else (a telephony event, an admin action) creates nothing and is
//! answered `unknown_agent`.
//!
//! Cluster mode (`takeover.rs`): an actor is started only on the agent's owning node (see
//! [`Router::owner_of`]), from the agent's last change in the agents stream; a command for
//! an agent another node owns is forwarded there (`router/cluster_routes.rs`).
//!
//! Actors are bounded by what is live: one with no tab, call or timer stops after
//! `--actor-idle-secs` (see `agent::actor`). The reaper forgets it once its last change is
//! committed; the router starts it again from its stored state when a command comes (a
//! command that finds it stopping waits for that commit and does the same).

use dashmap::{DashMap, DashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::cluster::{Gate, Owners};
use super::dedup::ClusterDedup;
use super::persist::{self, restored};
use super::route::{Route, RouteError};
use super::{profile_of, LiveDirectory};
use crate::agent::{ActorError, AgentEnv, AgentHandle, Applied, Profile, TabId, TelephonyAnswer};
use crate::clock::Clock;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::model::{AgentId, AgentState, Input, Rejection};
use crate::outbox::Outbox;
use crate::protocol::LatestState;
use crate::store::dedup::EventIdCache;
use crate::store::Store;

mod takeover;
pub(super) use takeover::never_changed_since;
mod telephony;

/// How many times a command retries an actor that stopped under it, or (cluster mode) an
/// owner that moved.
const RETRIES: usize = 3;

mod cluster_routes;
pub(crate) use cluster_routes::Ownership;

/// Who may get an actor started by a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Only an agent in the directory (or with a live actor).
    Known,
    /// Anyone: a tab of this agent logs in.
    Login,
}

/// Cluster mode's part of the router.
pub(super) struct RouterCluster {
    /// Loads and takeover appends.
    pub backplane: crate::cluster::Backplane,
    /// Who owns which agent.
    pub owners: Owners,
}

/// A telephony event after routing: answered by the router itself (unknown agent), or on
/// its way at the actor (the answer arrives on the receiver, built once there).
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// Answered without an actor.
    Answered(TelephonyAnswer),
    /// The actor's answer will arrive here.
    Pending(oneshot::Receiver<Result<TelephonyAnswer, ActorError>>),
}

impl Dispatched {
    /// The answer, once the actor gave it (cluster mode: once it is stored).
    pub(crate) async fn answer(self) -> Result<TelephonyAnswer, RouteError> {
        match self {
            Dispatched::Answered(answer) => Ok(answer),
            Dispatched::Pending(pending) => match pending.await {
                Ok(answer) => answer.map_err(RouteError::from),
                Err(_) => Err(RouteError::Unavailable),
            },
        }
    }
}

/// Finds (or starts) the actor of an agent. See the module doc.
pub(crate) struct Router {
    /// The live actors (and, for a moment, stopped ones the reaper has not forgotten).
    agents: Arc<DashMap<AgentId, AgentHandle>>,
    /// What every actor is started with.
    env: AgentEnv,
    /// Who is in the directory, and their profiles.
    directory: Arc<LiveDirectory>,
    /// Event ids answered without an actor (unknown agent) are remembered here too.
    events: Arc<EventIdCache>,
    /// Where those answers are stored, and stopped actors' states are read back from.
    store: Arc<Store>,
    /// For the time of a stored event id.
    clock: Clock,
    /// Telephony outcomes answered here.
    metrics: Arc<Metrics>,
    /// `--ring-timeout-secs`: when neither the offer nor a ring group sets one.
    ring_timeout: Duration,
    /// `--disconnect-grace-secs`, for a state read back from the store.
    grace: Duration,
    /// Cluster mode: refuses changes while NATS is unreachable.
    gate: Gate,
    /// Cluster mode: ownership and the stream actors start from; `None` on a single node.
    cluster: Option<RouterCluster>,
    /// Cluster mode: telephony event ids claimed cluster-wide before routing.
    dedup: Option<ClusterDedup>,
    /// Set at shutdown: nothing is started any more.
    closed: AtomicBool,
    /// Store reads in flight at once: no more than the store keeps read connections, so a
    /// login burst reuses them instead of opening one per login (and holds few blocking
    /// threads).
    reads: tokio::sync::Semaphore,
    /// Every agent that had an actor since the start (restored, directory, or started on
    /// demand): only these can have a stored state, so a first login skips the store read.
    /// Measured (bench/run.sh connections and churn, same-hour A/B against 8f732e8): the
    /// read cost first logins ~15-20 % (9.5-11.0k/s against 11.7-13.0k/s); an id costs
    /// ~60 bytes here, against the ~3.5 KiB of a connected agent.
    had_actor: DashSet<AgentId>,
    /// Cluster mode: who owns which agent, and how to reach the owners; `None` on a single
    /// node.
    ownership: Option<Ownership>,
}

/// What the router is built from.
pub(super) struct RouterParts {
    pub env: AgentEnv,
    pub directory: Arc<LiveDirectory>,
    pub events: Arc<EventIdCache>,
    pub store: Arc<Store>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub ring_timeout: Duration,
    pub grace: Duration,
    pub gate: Gate,
    pub ownership: Option<Ownership>,
    pub cluster: Option<RouterCluster>,
    pub dedup: Option<ClusterDedup>,
}

impl Router {
    pub(super) fn new(parts: RouterParts) -> Router {
        Router {
            agents: Arc::new(DashMap::new()),
            env: parts.env,
            directory: parts.directory,
            events: parts.events,
            store: parts.store,
            clock: parts.clock,
            metrics: parts.metrics,
            ring_timeout: parts.ring_timeout,
            grace: parts.grace,
            gate: parts.gate,
            cluster: parts.cluster,
            dedup: parts.dedup,
            closed: AtomicBool::new(false),
            reads: tokio::sync::Semaphore::new(crate::store::READ_CONNECTIONS),
            had_actor: DashSet::new(),
            ownership: parts.ownership,
        }
    }

    /// Starts the actor of a stored agent (at start, after a restart).
    pub(super) fn restore(&self, state: AgentState) {
        let id = state.agent_id.clone();
        let profile = self.profile_for(&id, &state);
        let handle = AgentHandle::spawn(&self.env, state, profile);
        self.had_actor.insert(id.clone());
        self.agents.insert(id, handle);
    }

    /// The profile an actor starts with: its directory entry's, else (known from its
    /// token only) the name and teams it had.
    fn profile_for(&self, id: &AgentId, state: &AgentState) -> Profile {
        match self.directory.read().agents.get(id) {
            Some(p) => profile_of(p),
            None => Profile {
                name: state.name.clone(),
                teams: state.teams.clone(),
                wrap_up_ms: None,
            },
        }
    }

    /// Starts an actor (offline) for every directory agent that has none.
    pub(super) fn start_directory_agents(&self) {
        let ids: Vec<AgentId> = self.directory.read().agents.keys().cloned().collect();
        for id in ids {
            if !self.agents.contains_key(&id) {
                let state = AgentState::new(id.clone(), self.clock.now_ms());
                let profile = self.profile_for(&id, &state);
                self.had_actor.insert(id.clone());
                self.agents
                    .insert(id, AgentHandle::spawn(&self.env, state, profile));
            }
        }
    }

    /// The live actor of `id`, started from its stored state (or fresh) when it has none
    /// and `reach` allows it; `None` for an agent the hub does not know.
    async fn find(&self, id: &AgentId, reach: Reach) -> Result<Option<AgentHandle>, RouteError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RouteError::Unavailable);
        }
        if let Some(cluster) = &self.cluster {
            return self.find_owned(cluster, id, reach).await;
        }
        if let Some(h) = self.agents.get(id).map(|h| h.clone()) {
            if !h.is_closed() {
                return Ok(Some(h));
            }
            // It stopped a moment ago: its last change may still be on its way to the
            // disk. Once that is committed, it is forgotten and read back.
            persist::wait(self.store.flush())
                .await
                .map_err(|_| RouteError::Unavailable)?;
            self.agents.remove_if(id, |_, h| h.is_closed());
        }
        if reach == Reach::Known && !self.directory.read().agents.contains_key(id) {
            return Ok(None);
        }
        // An agent that never had an actor since the start has no stored state: every
        // stored agent was restored at start, and every later one had an actor first.
        let stored = if self.had_actor.contains(id) {
            self.read_stored(id).await?
        } else {
            None
        };
        let now = self.clock.now_ms();
        let state = match stored {
            Some(state) => restored(state, now, self.grace),
            None => AgentState::new(id.clone(), now),
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(RouteError::Unavailable);
        }
        let handle = self
            .agents
            .entry(id.clone())
            .or_insert_with(|| {
                let profile = self.profile_for(id, &state);
                self.had_actor.insert(id.clone());
                AgentHandle::spawn(&self.env, state, profile)
            })
            .clone();
        Ok(Some(handle))
    }

    /// The stored state of an agent whose actor stopped (one store read, bounded in
    /// number with the store's read connections).
    async fn read_stored(&self, id: &AgentId) -> Result<Option<AgentState>, RouteError> {
        let store = self.store.clone();
        let key = id.clone();
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|_| RouteError::Unavailable)?;
        tokio::task::spawn_blocking(move || store.agent_state(&key))
            .await
            .map_err(|_| RouteError::Unavailable)?
            .map_err(|_| RouteError::Unavailable)
    }

    /// `Ok` when a change may be taken now (cluster mode: NATS reachable). Commands from
    /// an agent's own socket, which holds its route, ask before applying.
    pub(crate) fn admit(&self) -> Result<(), RouteError> {
        self.gate.admit()
    }

    /// The route of an agent that may have an actor (in the directory, or with a live
    /// actor); `None` for anyone else.
    pub(crate) async fn route(&self, id: &AgentId) -> Result<Option<Route>, RouteError> {
        if let Some(owner) = self.remote_owner(id)? {
            return Ok(Some(owner));
        }
        Ok(self.find(id, Reach::Known).await?.map(Route::Local))
    }

    /// A tab of `id` logs in: its actor is found or started, and the tab attached. The
    /// token's name and teams are used only for an agent the directory does not know.
    pub(crate) async fn login(
        &self,
        id: &AgentId,
        outbox: Outbox,
        hint: Profile,
    ) -> Result<(Route, TabId), RouteError> {
        let in_directory = self.directory.read().agents.contains_key(id);
        let hint = (!in_directory).then_some(hint);
        for _ in 0..RETRIES {
            let Some(h) = self.find(id, Reach::Login).await? else {
                return Err(RouteError::UnknownAgent);
            };
            let route = Route::Local(h);
            // A stopped (or, in cluster mode, fenced) actor refuses the tab: start it again.
            match route.attach(outbox.clone(), hint.clone()).await {
                Ok(tab) => return Ok((route, tab)),
                Err(e @ RouteError::Backplane { .. }) => return Err(e),
                Err(_) => continue,
            }
        }
        Err(RouteError::Unavailable)
    }

    /// Applies an input from an admin socket or the HTTP API to a known agent.
    pub(crate) async fn apply(
        &self,
        id: &AgentId,
        input: Input,
    ) -> Result<Result<Applied, Rejection>, RouteError> {
        self.admit()?;
        let mut last = RouteError::Unavailable;
        for _ in 0..RETRIES {
            let route = self.route(id).await?.ok_or(RouteError::UnknownAgent)?;
            match route.apply(input.clone(), None).await {
                Err(e) if self.retry(&route, e).await => last = e,
                other => return other,
            }
        }
        Err(self.gave_up(last))
    }

    /// A directory entry was created or changed: the actor (started if needed) takes the
    /// new profile.
    pub(crate) async fn profile_changed(&self, id: &AgentId, profile: Profile) {
        if let Ok(Some(route)) = self.route(id).await {
            let _ = route.set_profile(profile).await;
        }
    }

    /// A directory entry was deleted: its name and teams are cleared, and its actor stops
    /// (at once when idle, else once it is).
    pub(crate) async fn profile_removed(&self, id: &AgentId) {
        if let Ok(Some(route)) = self.remote_owner(id) {
            let _ = route.leave_directory().await;
            return;
        }
        if let Some(h) = self.agents.get(id).map(|h| h.clone()) {
            h.leave_directory().await;
        }
    }

    /// Cluster mode: a directory edit applied from the cluster's directory reaches the
    /// actor of `id` if it runs here (nothing is forwarded: every node applies every edit).
    /// `profile` `None`: the entry was deleted. False when no live actor runs here.
    pub(crate) async fn local_profile(&self, id: &AgentId, profile: Option<Profile>) -> bool {
        let Some(h) = self.agents.get(id).map(|h| h.clone()) else {
            return false;
        };
        if h.is_closed() {
            return false;
        }
        match profile {
            Some(p) => h.set_profile(p).await,
            None => h.leave_directory().await,
        }
        true
    }

    /// True when the agent has a live actor or a directory entry.
    pub(crate) fn is_known(&self, id: &AgentId) -> bool {
        self.agents.contains_key(id) || self.directory.read().agents.contains_key(id)
    }

    /// True when the agent is known (see [`Router::is_known`]) or has a stored state: an
    /// agent whose actor stopped while idle still has its history and reports.
    pub(crate) async fn has_record(&self, id: &AgentId) -> bool {
        self.is_known(id) || self.stored_state(id).await.is_some()
    }

    /// The stored state of an agent (one store read): what is kept of an agent whose actor
    /// stopped and which the fan-out no longer lists (idle and out of the directory).
    pub(crate) async fn stored_state(&self, id: &AgentId) -> Option<AgentState> {
        let store = self.store.clone();
        let key = id.clone();
        match tokio::task::spawn_blocking(move || store.agent_state(&key)).await {
            Ok(Ok(state)) => state,
            _ => None,
        }
    }

    /// Telephony event ids remembered for deduplication.
    pub(crate) fn remembered_event_ids(&self) -> usize {
        self.events.len()
    }

    /// The agents with an actor here (live, or stopped and not yet forgotten).
    pub(crate) fn live_ids(&self) -> Vec<AgentId> {
        self.agents.iter().map(|e| e.key().clone()).collect()
    }

    /// Live actors (and stopped ones not yet forgotten).
    pub(crate) fn actor_count(&self) -> usize {
        self.agents.len()
    }

    /// Drops every actor handle so the actors end, and starts none any more (shutdown).
    pub(crate) fn stop_all(&self) {
        self.closed.store(true, Ordering::Release);
        self.agents.clear();
    }

    /// Forgets stopped actors once their last change is committed: their entry here, and,
    /// for an agent not in the directory, its state in the fan-out (snapshots list the
    /// directory and the live agents). Runs until `stop`.
    pub(super) fn reaper(
        &self,
        mut retired: mpsc::Receiver<Arc<LatestState>>,
        fanout: Arc<Fanout>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let agents = self.agents.clone();
        let directory = self.directory.clone();
        let store = self.store.clone();
        async move {
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    n = retired.recv_many(&mut batch, 4096) => if n == 0 { break },
                }
                // One commit covers the whole batch.
                if persist::wait(store.flush()).await.is_err() {
                    batch.clear();
                    continue;
                }
                for last in batch.drain(..) {
                    let id = &last.agent_id;
                    agents.remove_if(id, |_, h| h.is_closed());
                    if !agents.contains_key(id) && !directory.read().agents.contains_key(id) {
                        fanout.forget(&last);
                    }
                }
            }
        }
    }
}
