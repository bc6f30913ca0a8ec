//! The writer's queue: a `Mutex<VecDeque>` + `Condvar`, not a bounded channel. A caller
//! holds the lock only to push (the writer only to take up to [`MAX_BATCH`] items), so no
//! caller ever waits on disk, nothing acknowledged is dropped when the disk is slow, and the
//! order of every caller's items is kept (a bounded channel plus an overflow list could
//! reorder an agent's changes, or let a flush overtake earlier items). Its length is watched
//! instead: [`Queue::len`] for metrics, and a warning each time it passes a multiple of
//! [`WARN_QUEUE_LEN`].

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::warn;

use super::StoreError;
use crate::directory::{AgentProfile, RingGroup};
use crate::model::{AgentId, Millis, Reason, Session, Status};
use crate::protocol::Published;

/// Most items written in one transaction.
pub(super) const MAX_BATCH: usize = 4096;
/// The queue length that is worth a warning (the disk does not keep up).
pub(super) const WARN_QUEUE_LEN: usize = 100_000;

/// Completes a ticket.
pub(super) type Done = oneshot::Sender<Result<(), StoreError>>;

/// One history row to append.
#[derive(Debug)]
pub(super) struct HistoryInsert {
    pub from: Status,
    pub to: Status,
    pub from_manual: &'static str,
    pub to_manual: &'static str,
    pub call_id: Option<String>,
}

/// One event id to remember.
#[derive(Debug)]
pub(super) struct EventInsert {
    pub event_id: String,
    pub error: Option<&'static str>,
    pub fields: Arc<str>,
    pub at: Millis,
}

/// An agent's state as the writer stores it: what its `agent_state` row and history row
/// need, without a deep copy of the state.
#[derive(Debug)]
pub(super) struct StateRecord {
    pub agent_id: AgentId,
    pub status: Status,
    pub reason: Option<Reason>,
    pub note: Option<String>,
    pub version: u64,
    /// Not on the wire: stored beside the JSON.
    pub session: Session,
    /// The wire JSON of the state.
    pub json: StateJson,
}

/// The wire JSON of a state: usually the update frame the actor just published (shared,
/// so the writer neither copies nor serializes it again), else serialized by the caller.
#[derive(Debug)]
pub(super) enum StateJson {
    Published(Arc<Published>),
    Owned(String),
}

impl StateJson {
    pub(super) fn as_str(&self) -> &str {
        match self {
            StateJson::Published(p) => p.agent_json(),
            StateJson::Owned(s) => s,
        }
    }
}

/// What the writer does with one item.
#[derive(Debug)]
pub(super) enum Op {
    Change {
        state: Box<StateRecord>,
        history: Option<HistoryInsert>,
        event: Option<EventInsert>,
        at: Millis,
    },
    EventId(EventInsert),
    PutAgent(AgentProfile),
    DeleteAgent(AgentId),
    PutRingGroup(RingGroup),
    DeleteRingGroup(String),
    Prune {
        history_before: Millis,
        events_before: Millis,
    },
    /// Nothing to write: completes once everything queued before it is committed.
    Flush,
}

/// An item and the ticket it completes (none when the caller was answered at once).
pub(super) struct Item {
    pub op: Op,
    pub done: Option<Done>,
}

struct Inner {
    items: VecDeque<Item>,
    closed: bool,
    /// The writer waits on the condvar (only then does a push signal it: a signal is a
    /// syscall, and pushes come by the hundred thousand per second).
    waiting: bool,
    warned_at: usize,
}

/// The writer's queue, and counters of what the writer did.
pub(super) struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    /// Transactions committed.
    pub(super) commits: AtomicU64,
    /// Items committed.
    pub(super) items: AtomicU64,
    /// Items whose transaction failed (not stored).
    pub(super) failed: AtomicU64,
}

impl Queue {
    pub(super) fn new() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
                waiting: false,
                warned_at: 0,
            }),
            ready: Condvar::new(),
            commits: AtomicU64::new(0),
            items: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item; when the store is closed, hands back its ticket sender.
    pub(super) fn push(&self, item: Item) -> Result<(), Option<Done>> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(item.done);
        }
        inner.items.push_back(item);
        let len = inner.items.len();
        if len >= inner.warned_at + WARN_QUEUE_LEN {
            inner.warned_at = len;
            warn!(queued = len, "durable store: the disk does not keep up");
        } else if len < inner.warned_at / 2 {
            inner.warned_at = 0;
        }
        let wake = inner.waiting;
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Items waiting for the writer.
    pub(super) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Refuses new items; the writer commits what is queued and ends.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next batch: waits for a first item, then sleeps `window` to gather more (without
    /// being woken by every push). At most [`MAX_BATCH`] items; `None` once closed and empty.
    pub(super) fn take(&self, window: Duration) -> Option<Vec<Item>> {
        let mut inner = self.lock();
        while inner.items.is_empty() {
            if inner.closed {
                return None;
            }
            inner.waiting = true;
            inner = self.ready.wait(inner).unwrap_or_else(|p| p.into_inner());
            inner.waiting = false;
        }
        if !window.is_zero() && !inner.closed && inner.items.len() < MAX_BATCH {
            drop(inner);
            std::thread::sleep(window);
            inner = self.lock();
        }
        if inner.items.len() <= MAX_BATCH {
            // O(1) under the lock; the copy into a Vec happens after it is released.
            let items = std::mem::take(&mut inner.items);
            drop(inner);
            Some(Vec::from(items))
        } else {
            Some(inner.items.drain(..MAX_BATCH).collect())
        }
    }

    /// Closes the queue and fails every item still in it (the writer is gone).
    fn abandon(&self) {
        let items: Vec<Item> = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.items.drain(..).collect()
        };
        for item in items {
            if let Some(done) = item.done {
                let _ = done.send(Err(StoreError::Closed));
            }
        }
    }
}

/// Fails what is left if the writer thread ends in any way (even a panic).
pub(super) struct AbandonOnDrop(pub(super) Arc<Queue>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
    }
}
