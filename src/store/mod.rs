//! The durable store: SQLite (bundled) holding every agent's last state, the append-only
//! status history, telephony event ids, and the editable agent directory and ring groups.
//!
//! # Shape
//! - [`Store::open`] checks the file (a corrupt, foreign, newer, locked or read-only
//!   database is refused before anything is written to it), applies the migrations of
//!   `src/store/migrations/` (versioned by `PRAGMA user_version`, logged in
//!   `schema_version`), seeds the directory tables from the TOML directory on the first
//!   start only, and returns what a restart recovers ([`Recovered`]).
//! - One writer thread owns the write connection. Changes are queued without blocking
//!   ([`Store::record_change`] and friends: a short mutex push, never disk I/O on the
//!   caller) and written by group commit: the writer takes everything queued (up to 4096
//!   items), writes it in one transaction (one `agent_state` upsert per agent per batch,
//!   every history row and event id), commits, then completes every item's
//!   [`CommitTicket`]. The queue is unbounded so nothing acknowledged is ever dropped; see
//!   `queue.rs` for why it is not a bounded channel with an overflow list.
//! - Reads ([`Store::history`], [`Store::status_time_report`], [`Store::directory`]) run on
//!   a small pool of read-only connections; with WAL they never wait for the writer. They
//!   are synchronous: call them from `tokio::task::spawn_blocking`.
//!
//! # Durability modes
//! - [`Durability::Commit`] (default): a change's ticket resolves after its transaction is
//!   committed with `synchronous=FULL` (the WAL is fsynced on every commit): an acknowledged
//!   change survives `kill -9` and power loss. Cost: one fsync per batch; the ack waits for
//!   it (group commit shares it among everything queued meanwhile).
//! - [`Durability::Async`]: tickets of state changes and event ids resolve at once; the
//!   writer gathers for up to [`ASYNC_BATCH_WINDOW`] and commits with `synchronous=NORMAL`
//!   (no fsync per commit; the WAL is synced at checkpoints). A crash of the process
//!   (`kill -9`) loses what was acknowledged but not yet committed: the last ~10-50 ms of
//!   changes. A power loss or OS crash may also lose commits not yet synced. The database
//!   stays consistent in every case; the trade is ack latency (0 instead of one fsync per
//!   batch) and throughput against that window.
//! - Directory writes, prune and flush always resolve after their commit.
//!
//! In-memory databases (`:memory:`, for tests) use SQLite's `memdb` VFS so the reader pool
//! sees the writer's data; they have no WAL (readers and the writer briefly wait for each
//! other) and vanish when the store closes.

mod codec;
pub mod dedup;
mod error;
mod open;
mod queue;
mod read;
mod report;

/// Read connections the store keeps open: callers that read often (the router, at logins)
/// keep this many reads in flight at most.
pub(crate) const READ_CONNECTIONS: usize = read::POOL_SIZE;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_open;
#[cfg(test)]
mod tests_read;
#[cfg(test)]
mod tests_write;
mod ticket;
mod writer;

pub use error::StoreError;
pub use read::{HistoryCursor, HistoryRow, ReportQuery, MAX_HISTORY_LIMIT};
pub use report::{status_time, to_csv, AgentStatusTime, StatusClock, Transition};
pub use ticket::CommitTicket;
pub use writer::StatusBefore;

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::directory::{AgentProfile, Directory, RingGroup};
use crate::model::{AgentId, AgentState, Millis, Session};
use crate::protocol::Published;
use crate::protocol::StoredReply;
use open::Location;
use queue::{EventInsert, Item, Op, Queue, StateJson, StateRecord};
use read::Readers;

/// How long the writer gathers changes before a commit in [`Durability::Async`] mode.
pub const ASYNC_BATCH_WINDOW: Duration = Duration::from_millis(10);

/// When a state change counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after its commit (fsynced).
    #[default]
    Commit,
    /// Acknowledged at once, committed within ~50 ms.
    Async,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions<'a> {
    pub durability: Durability,
    /// How long status history is kept (default 90 days).
    pub retention: Duration,
    /// How long event ids are kept (the hub's `event_id_ttl`).
    pub event_id_ttl: Duration,
    /// Written into the directory tables on the first start only.
    pub seed: &'a Directory,
    /// The hub's clock now (migration log; nothing else depends on it).
    pub now: Millis,
    /// Page cache of the write connection in KiB (`--store-cache-mib`); each read
    /// connection gets at most SQLite's default 2 MiB, and never more than this.
    pub cache_kib: u32,
}

impl<'a> StoreOptions<'a> {
    /// The defaults: commit durability, 90 days of history, 4 h of event ids.
    pub fn new(seed: &'a Directory, now: Millis) -> Self {
        StoreOptions {
            durability: Durability::Commit,
            retention: Duration::from_secs(90 * 24 * 3600),
            event_id_ttl: Duration::from_secs(4 * 3600),
            seed,
            now,
            cache_kib: open::WRITER_CACHE_KIB,
        }
    }
}

/// One agent as stored: its last state (with `session` filled in) and its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredAgent {
    pub state: AgentState,
    pub session: Session,
}

/// What the database holds at start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Every agent's last state, by agent id. Raw: `connections`, sessions, timers are as
    /// they were written; the hub decides what a restart does with them.
    pub agents: Vec<RecoveredAgent>,
    /// The directory (the seed on a first start, else what the admin API left).
    pub directory: Directory,
    /// Stored event ids with their first reply and when they were stored, oldest first.
    pub event_ids: Vec<(String, StoredReply, Millis)>,
}

/// Counters of the writer, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Items waiting for the writer.
    pub queued: usize,
    /// Transactions committed (group commits).
    pub commits: u64,
    /// Items committed (so `items / commits` is the mean batch size).
    pub items: u64,
    /// Items whose transaction failed after retries (not stored).
    pub failed: u64,
}

/// The durable store. Share it with `Arc`; every method takes `&self`.
pub struct Store {
    queue: Arc<Queue>,
    readers: Readers,
    durability: Durability,
    retention: Duration,
    event_id_ttl: Duration,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Exclusive advisory lock on the file; released last, after every connection closed.
    lock: Mutex<Option<File>>,
}

impl Store {
    /// Opens (or creates) the database at `path` (`":memory:"` for a private in-memory
    /// one), migrates it, seeds the directory on first start and starts the writer.
    pub fn open(path: &Path, options: StoreOptions<'_>) -> Result<(Store, Recovered), StoreError> {
        let location = Location::of(path);
        let lock = match &location {
            Location::File(p) => Some(open::check_file(p)?),
            Location::Memory(_) => None,
        };
        let shown = location.display().to_path_buf();
        let mut conn = location
            .connect(true)
            .map_err(|e| StoreError::at_open(&shown, e))?;
        let version = open::check_schema(&conn, &shown)?;
        // Writes happen only on a first start (or an upgrade): an existing database at the
        // current version is read whole first, so one that cannot be decoded is refused
        // before the pragmas below touch the file.
        open::migrate(&mut conn, version, options.now)?;
        open::seed_directory(&mut conn, options.seed)?;
        let recovered = Recovered {
            agents: open::load_agents(&conn)?,
            directory: open::load_directory(&conn)?,
            event_ids: open::load_event_ids(&conn)?,
        };
        open::configure_writer(&conn, &location, options.durability, options.cache_kib)?;
        let queue = Arc::new(Queue::new());
        let window = match options.durability {
            Durability::Commit => Duration::ZERO,
            Durability::Async => ASYNC_BATCH_WINDOW,
        };
        let writer_queue = queue.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(conn, writer_queue, window))
            .map_err(|e| StoreError::io(&shown, e))?;
        let store = Store {
            queue,
            readers: Readers::new(location, options.cache_kib.min(open::READER_CACHE_KIB)),
            durability: options.durability,
            retention: options.retention,
            event_id_ttl: options.event_id_ttl,
            writer: Mutex::new(Some(writer)),
            lock: Mutex::new(lock),
        };
        Ok((store, recovered))
    }

    /// A ticket for an answer that stored nothing itself: with `--durability commit` it
    /// resolves once everything queued before it is committed (an earlier change the answer
    /// reports may still be on its way); with `async`, at once.
    pub fn ack_barrier(&self) -> CommitTicket {
        match self.durability() {
            Durability::Commit => self.flush(),
            Durability::Async => CommitTicket::done(),
        }
    }

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Items queued for the writer now (a gauge for metrics).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// What the writer did so far.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            queued: self.queue.len(),
            commits: self.queue.commits.load(Relaxed),
            items: self.queue.items.load(Relaxed),
            failed: self.queue.failed.load(Relaxed),
        }
    }

    /// Records a change of one agent's state: upserts its last state (with `after.session`)
    /// and appends a history row when `status` or `manual_status` changed. `before` is the
    /// state before the change (`&AgentState`) or just its [`StatusBefore`]. Never blocks.
    pub fn record_change(
        &self,
        before: impl Into<StatusBefore>,
        after: &AgentState,
        at: Millis,
    ) -> CommitTicket {
        self.change(before.into(), after, None, at, None)
    }

    /// [`Store::record_change`] for a change whose update was just published as
    /// `published` (the actor's frame of `after`): its JSON is stored as it is, neither
    /// copied nor serialized again. Falls back to serializing `after` if `published` is of
    /// another agent or version.
    pub fn record_published_change(
        &self,
        before: impl Into<StatusBefore>,
        after: &AgentState,
        published: Option<&Arc<Published>>,
        at: Millis,
    ) -> CommitTicket {
        self.change(before.into(), after, published, at, None)
    }

    /// [`Store::record_published_change`] plus the event id whose reply it is, in one
    /// transaction: after a crash both or neither are back (so a retried event is either
    /// recognized as a duplicate or applied afresh, never applied twice).
    pub fn record_change_with_event(
        &self,
        before: impl Into<StatusBefore>,
        after: &AgentState,
        published: Option<&Arc<Published>>,
        at: Millis,
        event_id: &str,
        reply: &StoredReply,
    ) -> CommitTicket {
        self.change(
            before.into(),
            after,
            published,
            at,
            Some(event_insert(event_id, reply, at)),
        )
    }

    fn change(
        &self,
        before: StatusBefore,
        after: &AgentState,
        published: Option<&Arc<Published>>,
        at: Millis,
        event: Option<EventInsert>,
    ) -> CommitTicket {
        let op = Op::Change {
            state: Box::new(state_record(after, published)),
            history: writer::history_of(&before, after),
            event,
            at,
        };
        self.submit(op, self.durability == Durability::Commit)
    }

    /// Remembers the first reply to a telephony event id (a later one for the same id is
    /// ignored). Follows the durability mode.
    pub fn record_event_id(&self, event_id: &str, reply: &StoredReply, at: Millis) -> CommitTicket {
        let op = Op::EventId(event_insert(event_id, reply, at));
        self.submit(op, self.durability == Durability::Commit)
    }

    /// Creates or replaces a directory agent.
    pub fn put_agent(&self, profile: AgentProfile) -> CommitTicket {
        self.submit(Op::PutAgent(profile), true)
    }

    /// Deletes a directory agent (its state and history stay).
    pub fn delete_agent(&self, id: &AgentId) -> CommitTicket {
        self.submit(Op::DeleteAgent(id.clone()), true)
    }

    /// Creates or replaces a ring group.
    pub fn put_ring_group(&self, group: RingGroup) -> CommitTicket {
        self.submit(Op::PutRingGroup(group), true)
    }

    /// Deletes a ring group.
    pub fn delete_ring_group(&self, id: &str) -> CommitTicket {
        self.submit(Op::DeleteRingGroup(id.to_string()), true)
    }

    /// Deletes history older than the retention (keeping each agent's last row, the status
    /// it is still in) and event ids older than their ttl, in steps of a few thousand rows
    /// that queue behind other writes. The ticket resolves when all steps are committed.
    pub fn prune(&self, now: Millis) -> CommitTicket {
        let op = Op::Prune {
            history_before: now.saturating_sub(duration_ms(self.retention)),
            events_before: now.saturating_sub(duration_ms(self.event_id_ttl)),
        };
        self.submit(op, true)
    }

    /// Resolves once everything queued before it is committed.
    pub fn flush(&self) -> CommitTicket {
        self.submit(Op::Flush, true)
    }

    /// Commits everything queued, checkpoints the WAL into the main file and stops the
    /// writer; later writes fail with [`StoreError::Closed`]. Blocks until done (use
    /// `spawn_blocking` from async code). Idempotent. Dropping the store does the same.
    pub fn close(&self) -> Result<(), StoreError> {
        self.queue.close();
        // Before the writer's last checkpoint: an open reader would keep the WAL from being
        // folded into the main file.
        self.readers.close();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let joined = match handle {
            Some(h) => h.join(),
            None => Ok(()),
        };
        // Only now: closing our handle of the file must not drop SQLite's own locks early.
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        joined.map_err(|_| StoreError::WriteFailed(Arc::from("the store writer panicked")))
    }

    /// An agent's transitions with `from <= at < to` (after `after`, for the next page),
    /// oldest first, at most `limit` (capped at [`MAX_HISTORY_LIMIT`]). Blocking.
    pub fn history(
        &self,
        agent_id: &AgentId,
        from: Millis,
        to: Millis,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.readers
            .with(|c| read::history(c, agent_id, from, to, after, limit))
    }

    /// Time per status within the query's range for every stored agent passing its
    /// filters, by agent id (rules: [`status_time`]). Blocking.
    pub fn status_time_report(&self, q: &ReportQuery) -> Result<Vec<AgentStatusTime>, StoreError> {
        self.readers.with(|c| read::status_time_report(c, q))
    }

    /// One agent's stored state (with its session), if it has one: what a stopped actor
    /// left. Blocking.
    pub fn agent_state(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        self.readers.with(|c| read::read_agent(c, agent_id))
    }

    /// The stored directory. Blocking.
    pub fn directory(&self) -> Result<Directory, StoreError> {
        self.readers.with(read::read_directory)
    }

    fn submit(&self, op: Op, wait: bool) -> CommitTicket {
        let (done, ticket) = if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), CommitTicket::waiting(rx))
        } else {
            (None, CommitTicket::done())
        };
        match self.queue.push(Item { op, done }) {
            Ok(()) => ticket,
            Err(_) => CommitTicket::failed(StoreError::Closed),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "durable store: close failed");
        }
    }
}

/// What the writer needs of `state`; its JSON from `published` when that is this state.
fn state_record(state: &AgentState, published: Option<&Arc<Published>>) -> StateRecord {
    let json = match published {
        Some(p) if p.version == state.version && p.agent_id == state.agent_id => {
            StateJson::Published(p.clone())
        }
        // AgentState holds only strings, numbers and enums: serialization cannot fail.
        _ => StateJson::Owned(serde_json::to_string(state).unwrap_or_else(|_| "{}".into())),
    };
    StateRecord {
        agent_id: state.agent_id.clone(),
        status: state.status,
        reason: state.reason,
        note: state.note.clone(),
        version: state.version,
        session: state.session,
        json,
    }
}

fn event_insert(event_id: &str, reply: &StoredReply, at: Millis) -> EventInsert {
    EventInsert {
        event_id: event_id.to_string(),
        error: reply.error.map(|c| c.as_str()),
        fields: reply.fields.clone(),
        at,
    }
}

fn duration_ms(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
