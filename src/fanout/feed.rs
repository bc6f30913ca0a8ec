//! The shared update feed: every published update is appended once, and each subscribed
//! admin socket reads every update since its own cursor, in one batch per wake-up.
//!
//! Why hand-written (issue 13, `bench/competitors/FINDINGS.md`): with a queue per admin,
//! each update cost a lock, a deque push, a byte counter, a refcount increment and a wake
//! attempt *per admin*, all under the fan-out lock, and the same again when each socket
//! popped it (the profile at 500 admins: `Outbox::enqueue` 12.4 % self time, `try_recv`
//! 6.1 %, `Bytes` refcount 6.3 %, `AtomicWaker::wake` 2.2 %, deque `malloc`/`free` ~4 %).
//! Here a publish is O(1): one slot written, one counter raised, and only the readers that
//! are parked (none while they keep up) are woken. A reader copies the frames straight
//! from the shared slots into its socket's write batch: no lock, no refcount per frame,
//! one atomic store per batch. `tokio::sync::broadcast` was the crate to compare: its
//! `recv` clones every value (a refcount per delivery), takes a read lock per slot and
//! needs a pinned `Recv` future per socket (bytes in every socket's task, agents' too);
//! its bound is a number of values, where the hub's slow-consumer bound is in bytes.
//!
//! Layout: a linked list of chunks of [`CHUNK`] write-once slots (`OnceLock`, so no
//! `unsafe`). The fan-out keeps only the newest chunk; each reader keeps the chunk of its
//! cursor, so what is still unread stays alive exactly as long as someone needs it.
//! Memory stays bounded because a reader more than its socket's `--queue-bytes` of the
//! stream behind is cut off (4008) by the publisher, which checks the readers' positions
//! every [`SCAN_BYTES`] or [`SCAN_ENTRIES`] of the stream (O(admins) per scan, amortized).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::task::AtomicWaker;

use super::Filter;
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{Published, Text};

/// Slots per chunk: one allocation (~1.6 KiB) per 64 updates, and a reader's chunk
/// refcount moves once per 64 updates it reads.
pub(super) const CHUNK: usize = 64;
/// The publisher checks the readers' lag after this many bytes of the stream...
pub(super) const SCAN_BYTES: u64 = 64 * 1024;
/// ...or after this many updates, whichever comes first.
pub(super) const SCAN_ENTRIES: u64 = 256;

/// One update in the feed.
struct Entry {
    published: Arc<Published>,
    /// Bytes of the stream (sum of frame lengths) up to and including this update: a
    /// reader's lag is the stream's total minus this of the last update it read.
    end: u64,
    /// When it was published (how long it waited for each socket, for the metrics).
    at: Instant,
}

/// [`CHUNK`] consecutive updates, from stream position `first`.
pub(super) struct Chunk {
    first: u64,
    slots: [OnceLock<Entry>; CHUNK],
    /// The chunk after this one, set before its first update is visible.
    next: OnceLock<Arc<Chunk>>,
}

impl Chunk {
    pub(super) fn new(first: u64) -> Arc<Chunk> {
        Arc::new(Chunk {
            first,
            slots: std::array::from_fn(|_| OnceLock::new()),
            next: OnceLock::new(),
        })
    }
}

impl Drop for Chunk {
    /// Frees a run of chunks nobody else holds one by one (a slow reader's long chain
    /// would otherwise be dropped recursively, one stack frame per chunk).
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(chunk) = next {
            match Arc::into_inner(chunk) {
                Some(mut c) => next = c.next.take(),
                None => break,
            }
        }
    }
}

/// What publisher and readers share outside the fan-out lock.
pub(crate) struct Feed {
    /// Updates appended so far: positions below it are readable.
    head: AtomicU64,
    /// Readers that found nothing to read and wait for the next update.
    parked: Mutex<Vec<Arc<Sub>>>,
    /// True while `parked` may hold someone (read by every publish without the lock).
    any_parked: AtomicBool,
}

/// What an append leaves to do.
#[must_use]
pub(super) struct Appended {
    /// The readers' lag is due for a check (under the lock).
    pub(super) scan_due: bool,
    /// Readers that were parked: wake them (after the lock).
    woken: Vec<Arc<Sub>>,
}

impl Appended {
    /// Wakes the readers that waited for this update.
    pub(super) fn wake(self) {
        for sub in self.woken {
            sub.parked.store(false, Ordering::Release);
            sub.waker.wake();
        }
    }
}

/// A subscribed socket, as the fan-out sees it.
pub(super) struct Sub {
    pub(super) conn_id: u64,
    /// Where a cut-off (4008) is requested.
    pub(super) outbox: Outbox,
    /// Stream bytes this reader has gone past (published after each batch).
    consumed: AtomicU64,
    /// Frames written to the socket from the feed (for `/metrics`).
    pub(super) delivered: AtomicU64,
    /// In [`Feed::parked`].
    parked: AtomicBool,
    waker: AtomicWaker,
}

impl Sub {
    /// How many bytes of the stream (up to `total`) this reader has not read.
    pub(super) fn lag(&self, total: u64) -> u64 {
        total.saturating_sub(self.consumed.load(Ordering::Relaxed))
    }
}

/// The publisher's side of the feed, kept under the fan-out lock.
pub(super) struct Tail {
    chunk: Arc<Chunk>,
    /// Bytes appended so far.
    pub(super) bytes: u64,
    /// Stream bytes and position at the last lag check.
    scanned_bytes: u64,
    scanned_at: u64,
}

impl Feed {
    pub(super) fn new() -> (Arc<Feed>, Tail) {
        let feed = Arc::new(Feed {
            head: AtomicU64::new(0),
            parked: Mutex::new(Vec::new()),
            any_parked: AtomicBool::new(false),
        });
        let tail = Tail {
            chunk: Chunk::new(0),
            bytes: 0,
            scanned_bytes: 0,
            scanned_at: 0,
        };
        (feed, tail)
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Sub>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an update (under the fan-out lock: one appender at a time). The parked
    /// readers are returned, to be woken once the lock is released.
    pub(super) fn append(&self, tail: &mut Tail, published: Arc<Published>) -> Appended {
        let pos = self.head.load(Ordering::Relaxed);
        let mut idx = (pos - tail.chunk.first) as usize;
        if idx == CHUNK {
            let next = Chunk::new(pos);
            // Set once: only the appender links chunks, and this one had no successor.
            let _ = tail.chunk.next.set(next.clone());
            tail.chunk = next;
            idx = 0;
        }
        tail.bytes += published.frame.len() as u64;
        let entry = Entry {
            published,
            end: tail.bytes,
            at: Instant::now(),
        };
        let _ = tail.chunk.slots[idx].set(entry);
        // SeqCst with `any_parked` (a reader stores that, then reads `head`): either the
        // reader sees the new head, or this publish sees it parked.
        self.head.store(pos + 1, Ordering::SeqCst);
        let woken = if self.any_parked.load(Ordering::SeqCst) {
            let mut parked = self.parked();
            self.any_parked.store(false, Ordering::SeqCst);
            std::mem::take(&mut *parked)
        } else {
            Vec::new()
        };
        let scan_due = tail.bytes - tail.scanned_bytes >= SCAN_BYTES
            || pos + 1 - tail.scanned_at >= SCAN_ENTRIES;
        if scan_due {
            tail.scanned_bytes = tail.bytes;
            tail.scanned_at = pos + 1;
        }
        Appended { scan_due, woken }
    }

    /// A reader starting after everything appended so far (under the fan-out lock).
    pub(super) fn reader(
        self: &Arc<Self>,
        tail: &Tail,
        conn_id: u64,
        outbox: &Outbox,
        filter: Filter,
    ) -> FeedReader {
        let sub = Arc::new(Sub {
            conn_id,
            outbox: outbox.clone(),
            consumed: AtomicU64::new(tail.bytes),
            delivered: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        FeedReader {
            feed: self.clone(),
            sub,
            chunk: tail.chunk.clone(),
            next: self.head.load(Ordering::Relaxed),
            filter,
        }
    }
}

/// What one [`FeedReader::read`] went through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Read {
    /// Updates gone past, matching or not.
    pub entries: usize,
    /// When the first of them was published.
    pub oldest: Option<Instant>,
}

/// One socket's cursor in the feed, owned by the socket's task.
pub(crate) struct FeedReader {
    feed: Arc<Feed>,
    pub(super) sub: Arc<Sub>,
    /// The chunk holding position `next` (or the one before it, when `next` starts a
    /// chunk not linked yet).
    chunk: Arc<Chunk>,
    /// The next stream position to read.
    next: u64,
    /// Which updates this socket wants.
    filter: Filter,
}

impl FeedReader {
    /// Ready when an update is waiting; otherwise the task is woken by the next publish.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.next < self.feed.head.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let sub = &self.sub;
        sub.waker.register(cx.waker());
        if !sub.parked.swap(true, Ordering::AcqRel) {
            let mut parked = self.feed.parked();
            parked.push(sub.clone());
            self.feed.any_parked.store(true, Ordering::SeqCst);
        }
        if self.next < self.feed.head.load(Ordering::SeqCst) {
            // Stays parked: the next publish wakes it once for nothing, which is harmless.
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Hands up to `max` waiting updates that match the filter to `emit`, oldest first;
    /// `emit` returns false to stop after the frame it was given (the socket is full).
    /// Returns how many updates were gone past (matching or not) and when the first of
    /// them was published.
    pub(crate) fn read(&mut self, max: usize, mut emit: impl FnMut(&Text) -> bool) -> Read {
        let head = self.feed.head.load(Ordering::Acquire);
        let mut read = 0;
        let mut oldest = None;
        let mut delivered = 0u64;
        let mut consumed = None;
        while self.next < head && read < max {
            let mut idx = (self.next - self.chunk.first) as usize;
            if idx == CHUNK {
                // Linked before any update of it became visible.
                let Some(next) = self.chunk.next.get().cloned() else {
                    break;
                };
                self.chunk = next;
                idx = 0;
            }
            // Written before `head` passed it.
            let Some(entry) = self.chunk.slots[idx].get() else {
                break;
            };
            self.next += 1;
            read += 1;
            consumed = Some(entry.end);
            oldest.get_or_insert(entry.at);
            let p = &entry.published;
            if self.filter.matches(&p.agent_id, &p.teams) {
                delivered += 1;
                if !emit(&p.frame) {
                    break;
                }
            }
        }
        if let Some(end) = consumed {
            self.sub.consumed.store(end, Ordering::Relaxed);
        }
        if delivered > 0 {
            self.sub.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        Read {
            entries: read,
            oldest,
        }
    }

    /// Moves every waiting update that matches into `outbox`, ahead of what the socket
    /// queues next (a reply, a new subscription's snapshot): the socket writes its outbox
    /// before the feed, so this keeps the order in which things happened.
    pub(crate) fn drain_into(&mut self, outbox: &Outbox) {
        let mut frames = Vec::new();
        while self
            .read(usize::MAX, |f| {
                frames.push(f.clone());
                true
            })
            .entries
            > 0
        {}
        if !frames.is_empty() {
            let _ = outbox.push_unbounded(Outbound::Frames(frames));
        }
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
