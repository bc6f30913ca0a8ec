//! The hub: the registry of agent actors and the shared services they use (fan-out,
//! telephony notifications, event-id cache, clock, metrics), plus the routing of
//! requests from sockets and the HTTP API to the right actor.

pub mod clock;
pub mod dedup;
pub mod fanout;
pub mod telephony;

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentHandle, Profile};
use crate::config::Settings;
use crate::directory::{AgentProfile, Directory};
use crate::metrics::Metrics;
use crate::model::{AgentId, AgentState};
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
    directory: RwLock<Directory>,
    next_conn_id: AtomicU64,
}

impl HubCore {
    /// The directory, for a short read (never held across `.await`).
    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
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
    /// A hub with a fresh random epoch; every directory agent gets its actor (offline).
    pub fn new(mut settings: Settings, shutdown: CancellationToken) -> Arc<Hub> {
        let epoch: Arc<str> = Arc::from(new_epoch());
        let directory = std::mem::take(&mut settings.directory);
        let core = Arc::new(HubCore {
            fanout: Fanout::new(epoch, settings.history_size),
            notices: TelephonySockets::default(),
            dedup: EventIdCache::new(settings.event_id_capacity, settings.event_id_ttl),
            clock: Clock::new(),
            metrics: Metrics::default(),
            shutdown,
            tasks: TaskTracker::new(),
            directory: RwLock::new(directory),
            next_conn_id: AtomicU64::new(1),
            settings,
        });
        let hub = Arc::new(Hub {
            core,
            agents: DashMap::new(),
        });
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
