//! The hub: the shared services (fan-out, adapter notifier, event-id memory, clock,
//! metrics, store, directory) and the [`Router`], the one place through which every command
//! for an agent reaches its actor.
//!
//! Every field is private: sockets and the HTTP API read what they need through the
//! accessors below, and actors get their own narrow handle ([`crate::agent::AgentEnv`]).
//!
//! Cluster mode (`--nats`, [`cluster`]): the actors append to the agents stream instead of
//! the store, the fan-out and the store are fed by the node's stream follower
//! ([`view`]), the router starts actors only for the agents this node owns, and reads
//! wait for the view to catch up ([`Hub::caught_up`]). Without `--nats` none of it runs.

pub(crate) mod cluster;
pub(crate) mod cluster_directory;
mod dedup;
pub(crate) mod failover;
mod ownership;
pub(crate) mod persist;
pub(crate) mod remote;
mod route;
mod router;
pub(crate) mod sockets;
pub(crate) mod view;

pub(crate) use route::{Route, RouteError};
pub(crate) use router::{Dispatched, Router};

use router::RouterParts;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentEnv, Defaults, EnvParts, Profile};
use crate::clock::Clock;
use crate::cluster::NodeId;
use crate::config::Settings;
use crate::directory::{AgentProfile, Directory};
use crate::fanout::{Fanout, Notifier};
use crate::metrics::Metrics;
use crate::model::AgentId;
use crate::store::dedup::EventIdCache;
use crate::store::{Recovered, Store};
use cluster::ClusterNode;
use sockets::Sockets;

/// Whether this node takes requests, for `/healthz`.
pub(crate) struct Health {
    /// `single` or `cluster`.
    pub mode: &'static str,
    /// Why the node is not ready (`None`: ready). Shutdown is the caller's to add.
    pub not_ready: Option<String>,
    /// The live members as this node sees them (itself alone in single mode).
    pub members: Vec<NodeId>,
}

/// The live directory, shared by the hub (directory API) and the router (profiles, who is
/// known).
pub(crate) struct LiveDirectory {
    /// The entries; read and written in short critical sections, never across `.await`.
    entries: RwLock<Directory>,
    /// Serializes directory edits (store commit, then the live directory and the actors)
    /// so two edits of one entry cannot apply in a different order than they committed.
    edits: tokio::sync::Mutex<()>,
}

impl LiveDirectory {
    fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hub: what every socket and request handler shares.
pub(crate) struct Hub {
    /// The effective configuration.
    settings: Settings,
    /// Update numbering, `resume` history and admin subscribers.
    fanout: Arc<Fanout>,
    /// Telephony adapter sockets that get call notifications.
    notifier: Arc<Notifier>,
    /// Unix milliseconds on tokio's clock.
    clock: Clock,
    /// Process counters.
    metrics: Arc<Metrics>,
    /// Cancelled when the hub shuts down: every socket closes with 1001.
    shutdown: CancellationToken,
    /// Every open socket: shutdown closes them through it.
    sockets: Arc<Sockets>,
    /// Every actor and socket task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The durable store: every change is queued to it (never waited on by an actor).
    store: Arc<Store>,
    /// The directory of agents and ring groups.
    directory: Arc<LiveDirectory>,
    /// Where every command for an agent goes.
    router: Router,
    /// Source of socket ids.
    next_conn_id: AtomicU64,
    /// This node's id (`--node-id`, else host name and port).
    node: NodeId,
    /// Cluster mode (`--nats`): the backplane and membership; `None` on a single node.
    cluster: Option<ClusterNode>,
}

impl Hub {
    /// A hub with a fresh random epoch over an opened store and what it recovered: every
    /// stored agent's actor resumes its last state (see [`persist::restored`]), every other
    /// directory agent gets its actor (offline), and the stored event ids are remembered
    /// for the rest of their lifetime. `settings.directory` is not used: the store's
    /// directory (seeded from it on the first start) is the live one.
    pub(crate) fn new(
        mut settings: Settings,
        node: NodeId,
        cluster: Option<ClusterNode>,
        shutdown: CancellationToken,
        store: Arc<Store>,
        recovered: Recovered,
    ) -> Arc<Hub> {
        let epoch: Arc<str> = Arc::from(new_epoch());
        // The file's directory: it seeded the store on its first start; in cluster mode it
        // seeds the cluster's directory if that was never written.
        let seed = std::mem::take(&mut settings.directory);
        let Recovered {
            agents: stored,
            directory,
            event_ids,
        } = recovered;
        // Cluster mode: the directory is the cluster's, filled by the watch (see
        // `cluster_directory`); the local store's copy is not used.
        let directory = if cluster.is_some() {
            Directory::default()
        } else {
            directory
        };
        let clock = Clock::new();
        let fanout = Arc::new(Fanout::new(epoch, settings.history_size));
        let notifier = Arc::new(Notifier::default());
        let events = Arc::new(EventIdCache::new(
            settings.event_id_capacity,
            settings.event_id_ttl,
        ));
        let metrics = Arc::new(if cluster.is_some() {
            Metrics::for_cluster()
        } else {
            Metrics::default()
        });
        let tasks = TaskTracker::new();
        let now = clock.now_ms();
        for (event_id, reply, at) in event_ids {
            let age = Duration::from_millis(now.saturating_sub(at));
            events.insert_aged(&event_id, reply, age);
        }
        // Stopped actors, to forget once their last change is committed (see the router).
        let (retired, retired_rx) = tokio::sync::mpsc::channel(1 << 16);
        let ownership = cluster.as_ref().map(|c| router::Ownership {
            peer: remote::Peer::new(c.backplane().clone()),
            members: c.members_watch(),
            tabs: crate::fanout::NodeTabs::new(),
            fanout: fanout.clone(),
        });
        let cluster_mode = cluster.is_some();
        let env = AgentEnv::new(EnvParts {
            fanout: fanout.clone(),
            notifier: notifier.clone(),
            events: events.clone(),
            store: store.clone(),
            clock,
            metrics: metrics.clone(),
            defaults: Defaults {
                wrap_up: settings.wrap_up,
                disconnect_grace: settings.disconnect_grace,
                max_missed_in_row: settings.max_missed_in_row,
                actor_idle: settings.actor_idle,
            },
            tasks: tasks.clone(),
            retired,
            node: node.clone(),
            node_tabs: ownership.as_ref().map(|o| o.tabs.clone()),
            cluster: cluster.as_ref().map(|c| c.backplane().clone()),
            shutdown: shutdown.clone(),
        });
        let directory = Arc::new(LiveDirectory {
            entries: RwLock::new(directory),
            edits: tokio::sync::Mutex::new(()),
        });
        let router = Router::new(RouterParts {
            env,
            directory: directory.clone(),
            events: events.clone(),
            store: store.clone(),
            clock,
            metrics: metrics.clone(),
            ring_timeout: settings.ring_timeout,
            grace: settings.disconnect_grace,
            gate: cluster::Gate::new(cluster.as_ref()),
            ownership,
            cluster: cluster.as_ref().map(|c| router::RouterCluster {
                backplane: c.backplane().clone(),
                owners: c.owners(),
            }),
            dedup: cluster
                .as_ref()
                .map(|c| dedup::ClusterDedup::new(c, events.clone())),
        });
        tasks.spawn(router.reaper(retired_rx, fanout.clone(), shutdown.clone()));
        let sockets = Arc::new(Sockets::default());
        tasks.spawn({
            let (sockets, shutdown) = (sockets.clone(), shutdown.clone());
            async move { sockets.run(shutdown).await }
        });
        if let Some(c) = &cluster {
            // The stream is the truth: the database only tells the follower what it holds.
            let stored_versions = stored
                .into_iter()
                .map(|a| (a.state.agent_id, a.state.version))
                .collect();
            tasks.spawn(view::follow(
                view::FollowerParts {
                    backplane: c.backplane().clone(),
                    view: c.view().clone(),
                    fanout: fanout.clone(),
                    store: store.clone(),
                    events: router.events().clone(),
                    stored_versions,
                    tabs: router.node_tabs().cloned(),
                    notifier: notifier.clone(),
                },
                shutdown.clone(),
            ));
            // Directory agents are listed by the directory watch (`cluster_directory`), with
            // the cluster's start as their `since`, once NATS is reached.
        } else {
            let grace = settings.disconnect_grace;
            for agent in stored {
                router.restore(persist::restored(agent.state, now, grace));
            }
            router.start_directory_agents();
        }
        let hub = Arc::new(Hub {
            settings,
            fanout,
            notifier,
            clock,
            metrics,
            shutdown,
            sockets,
            tasks,
            store,
            directory,
            router,
            next_conn_id: AtomicU64::new(1),
            node,
            cluster,
        });
        if let Some(c) = &hub.cluster {
            hub.tasks.spawn(cluster_directory::run(
                Arc::downgrade(&hub),
                c.backplane().clone(),
                seed,
                hub.shutdown.clone(),
            ));
            hub.tasks.spawn(ownership::count_moves(
                Arc::downgrade(&hub),
                hub.shutdown.clone(),
            ));
        }
        if cluster_mode {
            hub.tasks.spawn(adopt(hub.clone()));
        }
        hub
    }

    /// Read-your-writes: waits (bounded) until this node's view has applied every change
    /// stored before the call (cluster mode), else `unavailable`. At once on a single node.
    pub(crate) async fn caught_up(&self) -> Result<(), RouteError> {
        match &self.cluster {
            None => Ok(()),
            Some(c) => c.view().caught_up(c.backplane()).await,
        }
    }

    /// The effective configuration.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where every command for an agent goes.
    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// Update numbering, history and admin subscribers.
    pub(crate) fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Adapter sockets that get call notifications.
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The hub's clock.
    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    /// Process counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A shared handle on the counters (the accept loop keeps one).
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Cancelled when the hub shuts down.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Every open socket (shutdown closes them with 1001).
    pub(crate) fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// Every actor and socket task.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The durable store.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The directory, for a short read (never held across `.await`).
    pub(crate) fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read()
    }

    /// The directory, for a short edit (never held across `.await`).
    pub(crate) fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory.write()
    }

    /// Held for the whole of a directory edit (store commit, live directory, actors).
    pub(crate) async fn directory_edit(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.directory.edits.lock().await
    }

    /// True when reports and history may be asked for the agent: it is in this node's view
    /// (in cluster mode the view of every agent, whichever node owns it), or the router
    /// knows it (see [`Router::has_record`]).
    pub(crate) async fn has_record(&self, id: &AgentId) -> bool {
        self.fanout.get(id).is_some() || self.router.has_record(id).await
    }

    /// A process-unique id for a socket.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &NodeId {
        &self.node
    }

    /// Whether this node takes requests now.
    pub(crate) fn health(&self) -> Health {
        match &self.cluster {
            None => Health {
                mode: "single",
                not_ready: None,
                members: vec![self.node.clone()],
            },
            Some(c) => {
                let h = c.health();
                Health {
                    mode: "cluster",
                    not_ready: h.not_ready,
                    members: h.members,
                }
            }
        }
    }

    /// Cluster mode's node; `None` on a single node.
    pub(crate) fn cluster(&self) -> Option<&ClusterNode> {
        self.cluster.as_ref()
    }

    /// The hub's epoch: changes on every start.
    pub(crate) fn epoch(&self) -> Arc<str> {
        self.fanout.epoch()
    }
}

/// Cluster mode: starts the actor of every live agent (a tab, a call or a timer in its
/// stored state) this node owns and has no actor for, so its timers fire here: once the
/// view has caught up at start, and whenever the members change (an owner left). Runs
/// until the hub shuts down.
async fn adopt(hub: Arc<Hub>) {
    let Some(c) = hub.cluster() else { return };
    let mut members = c.members_watch();
    let stop = hub.shutdown.clone();
    loop {
        let caught_up = hub.caught_up().await.is_ok();
        if caught_up {
            for id in c.view().live_agents() {
                if hub.router.owner_of(&id) == cluster::Owner::Local {
                    if let Err(e) = hub.router.adopt(&id).await {
                        tracing::debug!(agent = %id, error = %e, "not taken over now");
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            r = members.changed() => if r.is_err() { return },
            // Again after a while when the view had not caught up.
            () = tokio::time::sleep(Duration::from_secs(1)), if !caught_up => {}
        }
    }
}

/// The actor profile of a directory entry.
pub(crate) fn profile_of(p: &AgentProfile) -> Profile {
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
