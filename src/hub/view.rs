//! Cluster mode: this node's view of every agent, fed by following the agents stream.
//!
//! Every node runs one follower ([`follow`]). It takes the stream's epoch as the fan-out's
//! once NATS is reached (before that the node is not ready), reads the stream from its
//! start (so the view has every agent's last state, and the fan-out's `resume` history
//! the most recent changes) and then every new change as it is stored, across NATS
//! outages without gap or repeat (`Backplane::follow` resumes after the last sequence it
//! delivered). For each change it:
//!
//! - publishes it to the node's fan-out with `seq` = its stream sequence (admins on every
//!   node see one order; the owning actor does not publish to the fan-out itself);
//! - writes it into the node's SQLite database (agent state and status history, for
//!   reports on any node): in cluster mode `--database` is a cache the follower rebuilds
//!   from the stream. A change whose version the database already holds (a restart with
//!   the same file) is not written twice;
//! - remembers the reply of the telephony event stored with it (the event-id memory);
//! - notes which agents are live (a tab, a call or a timer), so a node that comes to own
//!   one starts its actor at once and its timers fire there.
//!
//! [`View::caught_up`] is the read-your-writes wait of HTTP reads and admin snapshots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::RouteError;
use crate::agent::record::ClusterRecord;
use crate::cluster::{Backplane, ClusterError, Followed, FollowedChange};
use crate::fanout::{Fanout, NodeTabs, Notifier};
use crate::model::machine::next_deadline;
use crate::model::{AgentId, AgentState, Session};
use crate::store::dedup::EventIdCache;
use crate::store::{StatusBefore, Store};

/// How long a read waits for this node's view to catch up with the stream (the contract's
/// bound); past it the read is answered `unavailable` (503).
pub(crate) const CATCH_UP: Duration = Duration::from_secs(2);

/// This node's view, as far as the rest of the hub needs it.
#[derive(Default)]
pub(crate) struct View {
    /// The stream sequence of the last change applied to the fan-out (0: none yet).
    applied: watch::Sender<u64>,
    /// Set once the fan-out carries the stream's epoch.
    started: AtomicBool,
    /// Set once the view first caught up with the stream (at start it reads the whole
    /// stream; the node is not ready before).
    caught_up_once: AtomicBool,
    /// Agents whose last stored state has a tab, a call or a timer.
    live: Mutex<HashSet<AgentId>>,
}

impl View {
    /// The stream sequence of the last change applied to this node's view (0: none yet),
    /// for the stream lag of `/metrics`.
    pub(crate) fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// True once the fan-out carries the stream's epoch (NATS was reached).
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// True once the view first caught up with the stream.
    pub(crate) fn ready(&self) -> bool {
        self.caught_up_once.load(Ordering::Acquire)
    }

    /// Agents whose last stored state has a tab, a call or a timer.
    pub(crate) fn live_agents(&self) -> Vec<AgentId> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().cloned().collect()
    }

    /// Waits (at most [`CATCH_UP`]) until this node applied every change stored before the
    /// call: one stream-info request for the stream's last sequence, then a wait for the
    /// follower to get there.
    pub(crate) async fn caught_up(&self, backplane: &Backplane) -> Result<(), RouteError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let unavailable = RouteError::Backplane {
            retry_after_ms: super::cluster::RETRY_AFTER_MS,
        };
        if !self.started() {
            return Err(unavailable);
        }
        let target = match tokio::time::timeout_at(deadline, backplane.last_seq()).await {
            Ok(Ok(seq)) => seq,
            _ => return Err(unavailable),
        };
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            self.caught_up_once.store(true, Ordering::Release);
            Ok(())
        } else {
            Err(unavailable)
        }
    }
}

/// Most changes a `resume` reads back from the stream (older than the node's in-memory
/// history); beyond it the admin gets a snapshot (`recovered: false`).
const REPLAY_MAX: u64 = 100_000;

/// Cluster mode `resume` from a `seq` older than the fan-out's history: the frames of the
/// changes `after+1 ..= upto` that match `filter`, read from the stream (within
/// [`CATCH_UP`]); `None` when the stream no longer holds all of them, or on a timeout.
pub(crate) async fn replay(
    backplane: &Backplane,
    after: u64,
    upto: u64,
    filter: &crate::fanout::Filter,
) -> Option<Vec<crate::protocol::Text>> {
    if upto <= after || upto - after > REPLAY_MAX {
        return None;
    }
    let read = async {
        let mut changes = backplane.follow(after);
        let mut frames = Vec::new();
        let mut next = after + 1;
        while next <= upto {
            match changes.recv().await? {
                Followed::Change(c) if c.seq == next => {
                    next += 1;
                    let Ok(record) = ClusterRecord::from_bytes(&c.body) else {
                        continue;
                    };
                    let s = &record.state;
                    if filter.matches(&s.agent_id, &s.teams) {
                        let json = crate::protocol::Published::serialize(s);
                        frames.push(crate::protocol::Published::build(s, c.seq, &json).frame);
                    }
                }
                // A gap or a new epoch: not all of it is there.
                _ => return None,
            }
        }
        Some(frames)
    };
    tokio::time::timeout(CATCH_UP, read).await.ok().flatten()
}

/// What the follower writes to.
pub(crate) struct FollowerParts {
    pub backplane: Backplane,
    pub view: Arc<View>,
    pub fanout: Arc<Fanout>,
    pub store: Arc<Store>,
    pub events: Arc<EventIdCache>,
    /// The version of every agent the database held at start: changes up to it are in
    /// the database already.
    pub stored_versions: HashMap<AgentId, u64>,
    /// The agent tabs served by this node: each followed change makes their frames.
    pub tabs: Option<Arc<NodeTabs>>,
    /// The telephony adapters connected to this node: told the notices stored with each
    /// change followed live (not those of the replay at start).
    pub notifier: Arc<Notifier>,
}

/// The follower: runs until `stop` (module doc).
pub(crate) async fn follow(parts: FollowerParts, stop: CancellationToken) {
    let FollowerParts {
        backplane,
        view,
        fanout,
        store,
        events,
        mut stored_versions,
        tabs,
        notifier,
    } = parts;
    // The stream's epoch, once NATS is reached.
    let epoch = loop {
        if let Ok(epoch) = backplane.epoch() {
            break epoch;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = backplane.ready(Duration::from_secs(1)) => {}
        }
    };
    // Changes up to here are history: their adapter notices were given when they happened.
    let replayed_until = loop {
        if let Ok(seq) = backplane.last_seq().await {
            break seq;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    fanout.reset(Some(Arc::from(epoch.as_str())), 0);
    view.started.store(true, Ordering::Release);
    info!(%epoch, "following the agents stream");
    let mut before: HashMap<AgentId, StatusBefore> = HashMap::new();
    let mut changes = backplane.follow(0);
    loop {
        let followed = tokio::select! {
            () = stop.cancelled() => return,
            f = changes.recv() => match f {
                Some(f) => f,
                None => return,
            },
        };
        let seq = match followed {
            Followed::Change(change) => {
                let seq = change.seq;
                let record = apply(
                    change,
                    &view,
                    &fanout,
                    &store,
                    &events,
                    &mut before,
                    &mut stored_versions,
                );
                if let Some(record) = &record {
                    // This node's tabs of the agent get the change (`fanout::tabs`).
                    if let Some(tabs) = &tabs {
                        tabs.changed(seq, &record.state);
                    }
                    if seq > replayed_until {
                        for notice in &record.notices {
                            notifier.notify(&record.state.agent_id, notice);
                        }
                    }
                }
                seq
            }
            Followed::Gap { from, to } => {
                warn!(from, to, "the agents stream no longer holds these changes: resume from before them gets a snapshot");
                fanout.reset(None, to);
                to
            }
            Followed::NewEpoch(epoch) => {
                warn!(%epoch, "the agents stream was recreated: the view starts again");
                fanout.reset(Some(Arc::from(epoch.as_str())), 0);
                before.clear();
                stored_versions.clear();
                view.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
                0
            }
        };
        view.applied.send_replace(seq);
    }
}

fn apply(
    change: FollowedChange,
    view: &View,
    fanout: &Fanout,
    store: &Store,
    events: &EventIdCache,
    before: &mut HashMap<AgentId, StatusBefore>,
    stored_versions: &mut HashMap<AgentId, u64>,
) -> Option<ClusterRecord> {
    let record = match ClusterRecord::from_bytes(&change.body) {
        Ok(r) => r,
        Err(e) => {
            warn!(seq = change.seq, agent = %change.agent, error = %e, "skipped");
            return None;
        }
    };
    let state = &record.state;
    fanout.publish_at(change.seq, state);
    if let Some(event) = &record.event {
        events.insert(&event.id, event.reply());
    }
    let prior = before
        .insert(change.agent.clone(), StatusBefore::from(state))
        .unwrap_or_else(|| StatusBefore::from(&AgentState::new(change.agent.clone(), 0)));
    let in_database = stored_versions
        .get(&change.agent)
        .is_some_and(|v| *v >= change.version);
    if !in_database {
        stored_versions.remove(&change.agent);
        // Queued: the follower never waits for the disk.
        drop(match &record.event {
            Some(event) => store.record_change_with_event(
                prior,
                state,
                None,
                record.at,
                &event.id,
                &event.reply(),
            ),
            None => store.record_change(prior, state, record.at),
        });
    }
    let live = state.session != Session::LoggedOut
        || state.call.is_some()
        || next_deadline(state).is_some();
    let mut set = view.live.lock().unwrap_or_else(|p| p.into_inner());
    if live {
        set.insert(change.agent);
    } else {
        set.remove(&change.agent);
    }
    drop(set);
    Some(record)
}

/// The `unavailable` error of a backplane failure.
pub(crate) fn unavailable(e: &ClusterError) -> RouteError {
    RouteError::Backplane {
        retry_after_ms: e.retry_after_ms().unwrap_or(super::cluster::RETRY_AFTER_MS),
    }
}
