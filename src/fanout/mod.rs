//! The one place where agent updates get their hub-wide `seq`, are kept for `resume`, and
//! are handed to admin subscribers.
//!
//! Each update is serialized once into a shared frame and appended once to the [`Feed`]
//! (see `feed.rs` for why, with the profile figures); every subscribed admin socket reads
//! the feed from its own cursor and filters for itself, so a publish costs the same with 1
//! or 500 admins. What a socket queues itself (replies, snapshots, replays) goes through its
//! [`Outbox`], which it writes before the feed; updates still waiting in the feed are moved
//! into the outbox before anything else is queued there, so everything goes out in the
//! order it happened. The lock guarding this state is only ever held for non-blocking work,
//! never across an `.await`. A subscriber more than its `--queue-bytes` of updates behind
//! is closed with 4008 and dropped, never waited on.

use crate::protocol::Text;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

mod feed;
mod notifier;
mod tabs;

pub(crate) use feed::FeedReader;
pub(crate) use notifier::Notifier;
pub(crate) use tabs::{HelloParts, LogoutAnswer, NodeTabs};

use feed::{Feed, Sub, Tail};

use crate::model::{AgentId, AgentState, Status, TeamId};
use crate::outbox::{Outbound, Outbox, SnapshotReply, CLOSE_SLOW_CONSUMER};
use crate::protocol::{self, LatestState, Published, Ref};
use std::sync::atomic::Ordering;

/// Which agents a subscriber wants. Both lists narrow: an agent must match each one given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub teams: Option<HashSet<TeamId>>,
    pub agents: Option<HashSet<AgentId>>,
}

impl Filter {
    /// Builds a filter from the optional lists of a request.
    pub(crate) fn new(teams: Option<Vec<TeamId>>, agents: Option<Vec<AgentId>>) -> Self {
        Filter {
            teams: teams.map(|t| t.into_iter().collect()),
            agents: agents.map(|a| a.into_iter().collect()),
        }
    }

    /// True when the filter selects this agent.
    pub(crate) fn matches(&self, agent_id: &AgentId, teams: &[TeamId]) -> bool {
        if let Some(ids) = &self.agents {
            if !ids.contains(agent_id) {
                return false;
            }
        }
        if let Some(wanted) = &self.teams {
            if !teams.iter().any(|t| wanted.contains(t)) {
                return false;
            }
        }
        true
    }
}

struct Inner {
    seq: u64,
    /// Agents in `latest` by status (in `Status::ALL` order), kept as they change: a
    /// scrape reads seven numbers instead of walking every agent under the lock.
    by_status: [u64; Status::ALL.len()],
    /// Every listed agent's latest state, compact (its frame is not kept: snapshots and
    /// the HTTP API render it again).
    latest: HashMap<AgentId, Arc<LatestState>>,
    /// Recent updates, oldest first, for `resume` (each knows its `seq`; a replay renders
    /// their frames again). Bounded by `history_size`. A pointer each, to the same states
    /// as `latest` while they are the latest.
    history: VecDeque<Arc<LatestState>>,
    /// The feed's newest chunk and byte count (appends happen under this lock).
    tail: Tail,
    /// Subscribed sockets (each reads the feed itself; kept here to cut off the slow ones
    /// and for the metrics).
    subscribers: Vec<Arc<Sub>>,
    /// Frames delivered to subscribers that are gone (the live ones count their own).
    retired_deliveries: u64,
    /// Admin sockets dropped for falling behind.
    dropped_slow: u64,
}

/// What a `resume` produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeResult {
    /// Missed events replayed, then `ok recovered:true`.
    Recovered { replayed: usize },
    /// History did not cover the gap: `ok recovered:false` with a snapshot.
    Snapshot,
}

/// Counters read by `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FanoutStats {
    pub seq: u64,
    pub deliveries: u64,
    pub dropped_slow: u64,
    pub subscribers: usize,
    pub history_len: usize,
    pub max_queued_bytes: usize,
}

/// The hub-wide update sequence, history and admin subscriber list.
pub(crate) struct Fanout {
    /// Random per start on a single node; in cluster mode the agents stream's epoch, set
    /// once NATS is reached (see [`Fanout::reset`]).
    epoch: RwLock<Arc<str>>,
    history_size: usize,
    /// The update stream the admin sockets read.
    feed: Arc<Feed>,
    inner: Mutex<Inner>,
}

/// A socket's place in the update stream: `None` until it subscribes. Owned by the
/// socket (boxed: only a subscribed admin socket holds one).
pub(crate) type FeedCursor = Option<Box<FeedReader>>;

impl Fanout {
    /// An empty fan-out for `epoch`, keeping `history_size` recent updates for `resume`.
    pub(crate) fn new(epoch: Arc<str>, history_size: usize) -> Self {
        let (feed, tail) = Feed::new();
        Fanout {
            epoch: RwLock::new(epoch),
            history_size,
            feed,
            inner: Mutex::new(Inner {
                seq: 0,
                by_status: [0; Status::ALL.len()],
                latest: HashMap::new(),
                history: VecDeque::new(),
                tail,
                subscribers: Vec::new(),
                retired_deliveries: 0,
                dropped_slow: 0,
            }),
        }
    }

    /// The epoch this fan-out numbers its updates in.
    pub(crate) fn epoch(&self) -> Arc<str> {
        self.epoch.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in this module; the data is still
        // consistent (every mutation is a single step), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an agent's state without an update (a directory agent that exists before it
    /// ever changed). It shows in snapshots; subscribers get nothing.
    pub(crate) fn register(&self, state: &AgentState) -> Arc<LatestState> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        match inner.latest.entry(state.agent_id.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let latest = Arc::new(LatestState::of(state, inner.seq));
                inner.by_status[status_index(latest.status)] += 1;
                e.insert(latest).clone()
            }
        }
    }

    /// Publishes a changed state: assigns the next `seq`, keeps it for `resume`, appends it
    /// to the feed every admin reads. Returns the shared entry (its frame goes to the
    /// agent's tabs).
    pub(crate) fn publish(&self, state: &AgentState) -> Arc<Published> {
        let json = Published::serialize(state);
        let mut guard = self.lock();
        let seq = guard.seq + 1;
        let (published, appended) = self.publish_locked(&mut guard, state, seq, &json);
        drop(guard);
        appended.wake();
        published
    }

    /// Cluster mode: publishes a change with the `seq` the agents stream gave it (its
    /// stream sequence). Sequences only go up: one at or below the current `seq` is
    /// ignored (`None`).
    pub(crate) fn publish_at(&self, seq: u64, state: &AgentState) -> Option<Arc<Published>> {
        let json = Published::serialize(state);
        let mut guard = self.lock();
        if seq <= guard.seq {
            return None;
        }
        let (published, appended) = self.publish_locked(&mut guard, state, seq, &json);
        drop(guard);
        appended.wake();
        Some(published)
    }

    /// Cluster mode: the stream starts under `epoch` (first contact, or the stream was
    /// recreated), or lost changes up to `seq` (`Followed::Gap`): history is dropped, so a
    /// `resume` from before is answered with a snapshot (`recovered: false`). The agents'
    /// latest states stay (directory agents that never changed are listed by them); the
    /// stream's changes overwrite them.
    pub(crate) fn reset(&self, epoch: Option<Arc<str>>, seq: u64) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.seq = seq;
        if let Some(epoch) = epoch {
            *self.epoch.write().unwrap_or_else(|p| p.into_inner()) = epoch;
        }
    }

    /// Numbers, records and appends a change (under the lock); the parked readers are
    /// woken by the caller once the lock is released.
    fn publish_locked(
        &self,
        inner: &mut Inner,
        state: &AgentState,
        seq: u64,
        json: &str,
    ) -> (Arc<Published>, feed::Appended) {
        inner.seq = seq;
        let published = Arc::new(Published::build(state, seq, json));
        let latest = &published.latest;
        if let Some(old) = inner.latest.insert(state.agent_id.clone(), latest.clone()) {
            inner.by_status[status_index(old.status)] -= 1;
        }
        inner.by_status[status_index(latest.status)] += 1;
        inner.history.push_back(latest.clone());
        while inner.history.len() > self.history_size {
            inner.history.pop_front();
        }
        let appended = self.feed.append(&mut inner.tail, published.clone());
        if appended.scan_due {
            cut_slow(inner);
        }
        (published, appended)
    }

    /// Subscribes (or re-subscribes with a new filter) the socket `conn_id`: queues the
    /// `ok` reply with a snapshot, then every later matching update, with nothing between.
    pub(crate) fn subscribe(
        &self,
        conn_id: u64,
        filter: Filter,
        outbox: &Outbox,
        reply_ref: Option<&Ref>,
        cursor: &mut FeedCursor,
    ) {
        let mut inner = self.lock();
        flush(cursor, outbox);
        let reply = self.snapshot_reply(&inner, &filter, reply_ref, None);
        if outbox
            .push_unbounded(Outbound::Snapshot(Box::new(reply)))
            .is_ok()
        {
            self.attach(&mut inner, conn_id, filter, outbox, cursor);
        }
    }

    /// `resume`: replays what `conn_id` missed after (`epoch`, `seq`) if history still holds
    /// all of it, else answers with a fresh snapshot; then subscribes it (updates of an
    /// earlier subscription still waiting in `cursor` are queued first).
    #[allow(clippy::too_many_arguments)] // the request's fields, the socket's two handles
    pub(crate) fn resume(
        &self,
        conn_id: u64,
        epoch: &str,
        seq: u64,
        filter: Filter,
        outbox: &Outbox,
        reply_ref: Option<&Ref>,
        cursor: &mut FeedCursor,
    ) -> ResumeResult {
        self.resume_after(
            conn_id,
            epoch,
            seq,
            Vec::new(),
            filter,
            outbox,
            cursor,
            reply_ref,
        )
    }

    /// The sequence range history holds: (the oldest kept, the current `seq`).
    pub(crate) fn history_range(&self) -> (u64, u64) {
        let inner = self.lock();
        let oldest = inner.history.front().map_or(inner.seq + 1, |p| p.seq);
        (oldest, inner.seq)
    }

    /// [`Fanout::resume`] after `earlier`: the frames of the changes before `seq` that
    /// were missed and are older than history (cluster mode reads them from the stream).
    /// They are sent first when history covers the rest, and dropped with a snapshot if not.
    /// (Updates of an earlier subscription still waiting in `cursor` are queued first.)
    #[allow(clippy::too_many_arguments)] // resume's arguments plus the earlier frames
    pub(crate) fn resume_after(
        &self,
        conn_id: u64,
        epoch: &str,
        seq: u64,
        earlier: Vec<Text>,
        filter: Filter,
        outbox: &Outbox,
        cursor: &mut FeedCursor,
        reply_ref: Option<&Ref>,
    ) -> ResumeResult {
        let mut inner = self.lock();
        flush(cursor, outbox);
        let current = self.epoch();
        let oldest_kept = inner.history.front().map_or(inner.seq + 1, |p| p.seq);
        let covered = epoch == &*current && seq <= inner.seq && seq + 1 >= oldest_kept;
        if !covered {
            let reply = self.snapshot_reply(&inner, &filter, reply_ref, Some(false));
            if outbox
                .push_unbounded(Outbound::Snapshot(Box::new(reply)))
                .is_ok()
            {
                self.attach(&mut inner, conn_id, filter, outbox, cursor);
            }
            return ResumeResult::Snapshot;
        }
        // By seq, not by offset: in cluster mode the kept seqs may skip numbers.
        let skip = inner.history.partition_point(|p| p.seq <= seq);
        // Rendered by the socket's task, not under this lock.
        let replay: Vec<Arc<LatestState>> = inner
            .history
            .iter()
            .skip(skip)
            .filter(|p| filter.matches(&p.agent_id, &p.teams))
            .cloned()
            .collect();
        let replayed = earlier.len() + replay.len();
        let ok = protocol::resumed(reply_ref, replayed, &current, inner.seq);
        let queued = (earlier.is_empty()
            || outbox.push_unbounded(Outbound::Frames(earlier)).is_ok())
            && (replay.is_empty() || outbox.push_unbounded(Outbound::Replay(replay)).is_ok())
            && outbox.push_unbounded(Outbound::Frame(ok)).is_ok();
        if queued {
            self.attach(&mut inner, conn_id, filter, outbox, cursor);
        }
        ResumeResult::Recovered { replayed }
    }

    /// Forgets an agent whose actor stopped (not in the directory): it leaves snapshots,
    /// unless it changed since `last` (its actor started again).
    pub(crate) fn forget(&self, last: &Arc<LatestState>) {
        let mut inner = self.lock();
        if inner
            .latest
            .get(&last.agent_id)
            .is_some_and(|p| Arc::ptr_eq(p, last))
        {
            inner.latest.remove(&last.agent_id);
            inner.by_status[status_index(last.status)] -= 1;
        }
    }

    /// Stops updates to `conn_id`: what `sub` had not read yet (published before this
    /// call) is queued to `outbox` first.
    pub(crate) fn unsubscribe(&self, conn_id: u64, outbox: &Outbox, cursor: &mut FeedCursor) {
        let mut inner = self.lock();
        flush(cursor, outbox);
        *cursor = None;
        detach(&mut inner, conn_id);
    }

    /// Forgets the socket `conn_id` (it is gone: nothing more is queued to it).
    pub(crate) fn leave(&self, conn_id: u64) {
        detach(&mut self.lock(), conn_id);
    }

    /// A consistent view: current `seq` and the matching agents' latest states.
    pub(crate) fn snapshot(&self, filter: &Filter) -> (u64, Vec<Arc<LatestState>>) {
        let inner = self.lock();
        (inner.seq, matching(&inner, filter))
    }

    /// How many agents (listed in snapshots) are in each status.
    pub(crate) fn status_counts(&self) -> [(Status, u64); Status::ALL.len()] {
        let counts = self.lock().by_status;
        let mut out = [(Status::Offline, 0); Status::ALL.len()];
        for (i, s) in Status::ALL.iter().enumerate() {
            out[i] = (*s, counts[i]);
        }
        out
    }

    /// The latest state of one agent.
    pub(crate) fn get(&self, agent_id: &AgentId) -> Option<Arc<LatestState>> {
        self.lock().latest.get(agent_id).cloned()
    }

    /// Counters for `/metrics`.
    pub(crate) fn stats(&self) -> FanoutStats {
        let inner = self.lock();
        let total = inner.tail.bytes;
        FanoutStats {
            seq: inner.seq,
            deliveries: inner.retired_deliveries
                + inner
                    .subscribers
                    .iter()
                    .map(|s| s.delivered.load(Ordering::Relaxed))
                    .sum::<u64>(),
            dropped_slow: inner.dropped_slow,
            subscribers: inner.subscribers.len(),
            history_len: inner.history.len(),
            max_queued_bytes: inner
                .subscribers
                .iter()
                .map(|s| (s.lag(total) as usize).max(s.outbox.queued_bytes()))
                .max()
                .unwrap_or(0),
        }
    }

    fn snapshot_reply(
        &self,
        inner: &Inner,
        filter: &Filter,
        reply_ref: Option<&Ref>,
        recovered: Option<bool>,
    ) -> SnapshotReply {
        SnapshotReply {
            reply_ref: reply_ref.cloned(),
            recovered,
            epoch: self.epoch(),
            seq: inner.seq,
            agents: matching(inner, filter),
        }
    }
}

fn status_index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

fn matching(inner: &Inner, filter: &Filter) -> Vec<Arc<LatestState>> {
    let agents: Vec<Arc<LatestState>> = match &filter.agents {
        // An id list is usually short: look the ids up instead of scanning everyone.
        Some(ids) if ids.len() < inner.latest.len() => ids
            .iter()
            .filter_map(|id| inner.latest.get(id))
            .filter(|p| filter.matches(&p.agent_id, &p.teams))
            .cloned()
            .collect(),
        _ => inner
            .latest
            .values()
            .filter(|p| filter.matches(&p.agent_id, &p.teams))
            .cloned()
            .collect(),
    };
    agents
}

impl Fanout {
    /// Subscribes `conn_id` from the current end of the feed (replacing its subscription).
    fn attach(
        &self,
        inner: &mut Inner,
        conn_id: u64,
        filter: Filter,
        outbox: &Outbox,
        cursor: &mut FeedCursor,
    ) {
        detach(inner, conn_id);
        let reader = self.feed.reader(&inner.tail, conn_id, outbox, filter);
        inner.subscribers.push(reader.sub.clone());
        *cursor = Some(Box::new(reader));
    }
}

/// Queues what `cursor` has not read yet to `outbox` (ahead of what comes next).
fn flush(cursor: &mut FeedCursor, outbox: &Outbox) {
    if let Some(reader) = cursor {
        reader.drain_into(outbox);
    }
}

fn detach(inner: &mut Inner, conn_id: u64) {
    let mut retired = 0;
    inner.subscribers.retain(|s| {
        if s.conn_id != conn_id {
            return true;
        }
        retired += s.delivered.load(Ordering::Relaxed);
        false
    });
    inner.retired_deliveries += retired;
}

/// Closes (4008) and drops every subscriber more than its queue bound behind the feed
/// (and forgets those closing for another reason).
fn cut_slow(inner: &mut Inner) {
    let total = inner.tail.bytes;
    let mut retired = 0;
    let mut dropped = 0;
    inner.subscribers.retain(|s| {
        let slow = s.lag(total) > s.outbox.bound() as u64;
        if !slow && !s.outbox.is_closing() {
            return true;
        }
        if slow {
            s.outbox.close(CLOSE_SLOW_CONSUMER);
            dropped += 1;
        }
        retired += s.delivered.load(Ordering::Relaxed);
        false
    });
    inner.retired_deliveries += retired;
    inner.dropped_slow += dropped;
}

#[cfg(test)]
mod tests;
