//! The hub: the registry of agent actors and the shared services they use (fan-out,
//! telephony notifications, event-id cache, clock, metrics), plus the routing of
//! requests from sockets and the HTTP API to the right actor.

pub mod clock;
pub mod dedup;
pub mod fanout;
pub mod persist;
pub mod telephony;

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentHandle, Profile};
use crate::config::Settings;
use crate::directory::{AgentProfile, Directory};
use crate::metrics::Metrics;
use crate::model::{AgentId, AgentState, Millis, Session};
use crate::store::{CommitTicket, Durability, Recovered, Store};
use clock::Clock;
use dedup::EventIdCache;
use fanout::Fanout;
use telephony::TelephonySockets;

/// What every actor and socket shares.
pub struct HubCore {
    pub settings: Settings,
    pub fanout: Fanout,
    pub notices: TelephonySockets,
    pub dedup: EventIdCache,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Cancelled when the hub shuts down: every socket closes with 1001.
    pub shutdown: CancellationToken,
    /// Every actor and socket task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The durable store: every change is queued to it (never waited on by an actor).
    pub store: Arc<Store>,
    /// Serializes directory edits (store commit, then the live directory and the actors)
    /// so two edits of one entry cannot apply in a different order than they committed.
    pub directory_edits: tokio::sync::Mutex<()>,
    directory: RwLock<Directory>,
    next_conn_id: AtomicU64,
}

impl HubCore {
    /// The directory, for a short read (never held across `.await`).
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory, for a short edit (never held across `.await`).
    pub fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for an answer that stored nothing itself: with `--durability commit` it
    /// resolves once everything queued before it is committed (an earlier change the answer
    /// reports may still be on its way); with `async`, at once.
    pub fn ack_barrier(&self) -> CommitTicket {
        match self.store.durability() {
            Durability::Commit => self.store.flush(),
            Durability::Async => CommitTicket::done(),
        }
    }

    /// A process-unique id for a socket.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The hub's epoch: changes on every start.
    pub fn epoch(&self) -> &Arc<str> {
        self.fanout.epoch()
    }
}

/// The registry of agent actors, created on first contact.
pub struct Hub {
    pub core: Arc<HubCore>,
    agents: DashMap<AgentId, AgentHandle>,
}

impl Hub {
    /// A hub with a fresh random epoch over an opened store and what it recovered: every
    /// stored agent's actor resumes its last state (see [`restored`]), every other
    /// directory agent gets its actor (offline), and the stored event ids are remembered
    /// for the rest of their lifetime. `settings.directory` is not used: the store's
    /// directory (seeded from it on the first start) is the live one.
    pub fn new(
        mut settings: Settings,
        shutdown: CancellationToken,
        store: Arc<Store>,
        recovered: Recovered,
    ) -> Arc<Hub> {
        let epoch: Arc<str> = Arc::from(new_epoch());
        settings.directory = Directory::default();
        let Recovered {
            agents: stored,
            directory,
            event_ids,
        } = recovered;
        let core = Arc::new(HubCore {
            fanout: Fanout::new(epoch, settings.history_size),
            notices: TelephonySockets::default(),
            dedup: EventIdCache::new(settings.event_id_capacity, settings.event_id_ttl),
            clock: Clock::new(),
            metrics: Metrics::default(),
            shutdown,
            tasks: TaskTracker::new(),
            store,
            directory_edits: tokio::sync::Mutex::new(()),
            directory: RwLock::new(directory),
            next_conn_id: AtomicU64::new(1),
            settings,
        });
        let now = core.clock.now_ms();
        for (event_id, reply, at) in event_ids {
            let age = Duration::from_millis(now.saturating_sub(at));
            core.dedup.insert_aged(&event_id, reply, age);
        }
        let hub = Arc::new(Hub {
            core,
            agents: DashMap::new(),
        });
        let grace = hub.core.settings.disconnect_grace;
        for agent in stored {
            let state = restored(agent.state, now, grace);
            let id = state.agent_id.clone();
            let profile = match hub.core.directory().agents.get(&id) {
                Some(p) => profile_of(p),
                // Known from its token only: keep the name and teams it had.
                None => Profile {
                    name: state.name.clone(),
                    teams: state.teams.clone(),
                    wrap_up_ms: None,
                },
            };
            let handle = AgentHandle::spawn(hub.core.clone(), state, profile);
            hub.agents.insert(id, handle);
        }
        let ids: Vec<AgentId> = hub.core.directory().agents.keys().cloned().collect();
        for id in ids {
            hub.agent_or_create(&id);
        }
        hub
    }

    /// The actor of a known agent.
    pub fn agent(&self, id: &AgentId) -> Option<AgentHandle> {
        self.agents.get(id).map(|h| h.clone())
    }

    /// The actor of an agent, started (offline) if this is its first contact.
    pub fn agent_or_create(&self, id: &AgentId) -> AgentHandle {
        if let Some(h) = self.agents.get(id) {
            return h.clone();
        }
        self.agents
            .entry(id.clone())
            .or_insert_with(|| {
                let profile = self
                    .core
                    .directory()
                    .agents
                    .get(id)
                    .map(profile_of)
                    .unwrap_or_default();
                let state = AgentState::new(id.clone(), self.core.clock.now_ms());
                AgentHandle::spawn(self.core.clone(), state, profile)
            })
            .clone()
    }

    /// Number of agents with an actor.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Drops every actor handle so the actors end (shutdown).
    pub fn stop_agents(&self) {
        self.agents.clear();
    }
}

/// An agent's stored state as it resumes after a restart at `now`. Everything is kept
/// (status, call, timers: a ring or wrap-up whose deadline passed while the hub was down
/// fires as soon as the actor starts, its select being biased timer-first), except the
/// sockets: they died with the old process. An agent that was logged in (connected, or in
/// its grace period) gets `connections = 0` and a fresh grace period from now, so a tab
/// that reconnects within it resumes as in row 22 and one that does not come back is
/// logged out as in row 21. A change of `connections` counts as a change (`version + 1`,
/// reason kept).
pub fn restored(mut state: AgentState, now: Millis, grace: Duration) -> AgentState {
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    if state.session != Session::LoggedOut {
        state.session = Session::Grace {
            until: now.saturating_add(grace_ms),
        };
    }
    if state.connections != 0 {
        state.connections = 0;
        state.version += 1;
    }
    state
}

/// The actor profile of a directory entry.
pub fn profile_of(p: &AgentProfile) -> Profile {
    Profile {
        name: p.name.clone(),
        teams: p.teams.clone(),
        wrap_up_ms: p.wrap_up_seconds.map(|s| s.saturating_mul(1000)),
    }
}

fn new_epoch() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(session: Session, connections: u32) -> AgentState {
        let mut s = AgentState::new(AgentId::parse("a1").expect("id"), 1_000);
        s.session = session;
        s.connections = connections;
        s.version = 7;
        s
    }

    #[test]
    fn a_restart_keeps_the_state_but_not_the_sockets() {
        let grace = Duration::from_secs(15);
        // Connected with two tabs: no tabs now, a fresh grace from the start, one change.
        let s = restored(agent(Session::Connected, 2), 50_000, grace);
        assert_eq!(s.connections, 0);
        assert_eq!(s.session, Session::Grace { until: 65_000 });
        assert_eq!(s.version, 8);
        // In its grace when the hub died (even one that ran out meanwhile): a fresh grace.
        let s = restored(agent(Session::Grace { until: 2_000 }, 0), 50_000, grace);
        assert_eq!(s.session, Session::Grace { until: 65_000 });
        assert_eq!(s.version, 7, "nothing visible changed");
        // Logged out: untouched.
        let before = agent(Session::LoggedOut, 0);
        assert_eq!(restored(before.clone(), 50_000, grace), before);
    }
}
