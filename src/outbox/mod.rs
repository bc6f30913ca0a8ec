//! The bounded outgoing queue of one socket.
//!
//! Producers (the fan-out, agent actors, the socket's own request handler) never wait on a
//! socket: they `try_send` into its [`Outbox`]. The queue is bounded in bytes (the
//! `--queue-bytes` setting, ~1 MiB by default); a producer that finds it over its bound marks
//! the socket for closing with 4008 and drops it, so a slow reader never slows anyone else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

mod ordered;

pub(crate) use ordered::{Later, Ordered};

use crate::metrics::Metrics;
use crate::protocol::{self, sort_by_id, LatestState, Ref, Text};

/// Close code for a socket that fell behind its queue bound.
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// One item for a socket's writer.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A ready-made text frame, shared with every other receiver of it.
    Frame(Text),
    /// Several frames to write in order (updates moved from the feed, earlier changes of a
    /// `resume` read from the stream).
    Frames(Vec<Text>),
    /// A `resume` replay: the `agent` frames of these kept updates, in order, rendered by
    /// the socket's own task (the fan-out keeps no frames: see `LatestState`).
    Replay(Vec<Arc<LatestState>>),
    /// A snapshot reply, serialized by the socket's own task so the fan-out lock is never
    /// held while megabytes of JSON are written.
    Snapshot(Box<SnapshotReply>),
    /// Close the socket with this code after what is queued before it.
    Close(u16, &'static str),
}

/// The parts of an `ok` reply carrying a `snapshot`.
#[derive(Debug)]
pub(crate) struct SnapshotReply {
    /// The `ref` of the request.
    pub reply_ref: Option<Ref>,
    /// `Some(false)` for a `resume` that could not be recovered.
    pub recovered: Option<bool>,
    pub epoch: Arc<str>,
    pub seq: u64,
    pub agents: Vec<Arc<LatestState>>,
}

impl SnapshotReply {
    /// Renders the reply frame (see [`crate::protocol::snapshot`]).
    pub(crate) fn render(mut self) -> String {
        sort_by_id(&mut self.agents);
        protocol::snapshot(
            self.reply_ref.as_ref(),
            self.recovered,
            &self.epoch,
            self.seq,
            &self.agents,
        )
    }
}

/// Why a push was refused: the socket is over its bound or already closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("socket queue over its bound")]
pub(crate) struct Overflow;

#[derive(Debug)]
struct Shared {
    /// The queue itself. A `VecDeque` grows only when frames are waiting (an idle socket
    /// holds no slots), unlike a channel that allocates its slots up front.
    items: Mutex<Queue>,
    /// Bytes queued and not yet taken by the writer.
    queued: AtomicUsize,
    /// The bound in bytes, from `--queue-bytes` (and the backstop on the number of items
    /// derived from it, [`max_items`]: not a field, so the whole `Arc` fits in 128 bytes).
    bound: usize,
    /// Producers alive; the receiver sees the end of the queue when it drops to zero.
    producers: AtomicUsize,
    /// The socket task, woken when an item is queued, a close is requested or the last
    /// producer left. One waker for the single consumer (24 bytes, where a `Notify` per
    /// event kind took ~40 bytes each and a waiter node in the task).
    waker: AtomicWaker,
    /// Close code requested by a producer; 0 while open.
    close_code: AtomicU16,
    /// The socket's liveness deadline (or its token's expiry) passed: set by the hub's
    /// timer (`hub::sockets`) with a wake-up, cleared when the socket sets its next
    /// deadline. A flag here instead of a tokio `Sleep` in every socket's task (112
    /// bytes); it sits in the padding beside `close_code`.
    due: AtomicBool,
}

/// The items, and since when the oldest one waits.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// When the queue last went from empty to not empty (cleared when the writer takes
    /// the first item after it): how long a batch's oldest frame waited, for the metrics.
    since: Option<std::time::Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every critical section is a single push or pop: a poisoned lock still holds a
        // consistent queue.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests a close with `code` (the first request wins) and wakes the socket.
    fn close(&self, code: u16) {
        if self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    fn poll_close(&self, cx: &mut Context<'_>) -> Poll<u16> {
        let code = self.close_code.load(Ordering::Acquire);
        if code != 0 {
            return Poll::Ready(code);
        }
        self.waker.register(cx.waker());
        match self.close_code.load(Ordering::Acquire) {
            0 => Poll::Pending,
            code => Poll::Ready(code),
        }
    }
}

/// The producer side of a socket queue. Cheap to clone.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

/// Asks a socket to close without being one of its producers (the hub's list of open
/// sockets keeps one per socket, for shutdown: see `hub::sockets`).
#[derive(Debug)]
pub(crate) struct Closer {
    shared: Arc<Shared>,
}

impl Closer {
    /// Asks the socket to close with `code` (unless a close was requested already).
    pub(crate) fn close(&self, code: u16) {
        self.shared.close(code);
    }

    /// Tells the socket its deadline passed (see `Shared::due`) and wakes it.
    pub(crate) fn set_due(&self) {
        self.shared.due.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// The socket set a new deadline: the one that passed is forgotten.
    pub(crate) fn clear_due(&self) {
        self.shared.due.store(false, Ordering::Release);
    }
}

/// The writer side, owned by the socket task.
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    shared: Arc<Shared>,
    /// Where the queue wait of each batch is observed (none in unit tests).
    metrics: Option<Arc<Metrics>>,
}

/// Queue capacity kept after a burst drained; larger buffers are given back.
const KEEP_CAPACITY: usize = 64;
/// A queue this small is freed entirely once drained: an idle socket holds no slots (a
/// busy wallboard's larger queue is kept, up to `KEEP_CAPACITY`, to avoid regrowing it).
const FREE_CAPACITY: usize = 8;

/// Backstop on the number of items queued (frames are >= ~64 bytes, so the byte bound
/// bites first).
fn max_items(bound_bytes: usize) -> usize {
    (bound_bytes / 64).clamp(64, 1 << 16)
}

/// Creates a queue bounded to `bound_bytes`.
#[cfg(test)]
pub(crate) fn outbox(bound_bytes: usize) -> (Outbox, OutboxReceiver) {
    outbox_measured(bound_bytes, None)
}

/// [`outbox`], observing each batch's queue wait in `metrics`.
pub(crate) fn outbox_measured(
    bound_bytes: usize,
    metrics: Option<Arc<Metrics>>,
) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        items: Mutex::new(Queue::default()),
        queued: AtomicUsize::new(0),
        bound: bound_bytes,
        producers: AtomicUsize::new(1),
        waker: AtomicWaker::new(),
        close_code: AtomicU16::new(0),
        due: AtomicBool::new(false),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver { shared, metrics },
    )
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.waker.wake();
        }
    }
}

impl Outbox {
    /// Queues a frame. Over the bound, the socket is marked for closing with 4008 and
    /// `Overflow` is returned: the caller drops this receiver from its lists.
    pub(crate) fn push(&self, frame: Text) -> Result<(), Overflow> {
        if self.is_closing() {
            return Err(Overflow);
        }
        let len = frame.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.shared.bound {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            self.close(CLOSE_SLOW_CONSUMER);
            return Err(Overflow);
        }
        self.enqueue(Outbound::Frame(frame), len)
    }

    /// Queues an item that is not counted against the byte bound (snapshots, replays: one
    /// per request, sized by the request, not by the event rate).
    pub(crate) fn push_unbounded(&self, item: Outbound) -> Result<(), Overflow> {
        if self.is_closing() {
            return Err(Overflow);
        }
        // The writer subtracts every `Frame` it takes from `queued`, so a frame queued here
        // is added too (without the bound check); otherwise the counter would wrap below
        // zero and the socket's next bounded push would look like an overflow (4008).
        let counted = match &item {
            Outbound::Frame(f) => f.len(),
            _ => 0,
        };
        self.shared.queued.fetch_add(counted, Ordering::Relaxed);
        self.enqueue(item, counted)
    }

    fn enqueue(&self, item: Outbound, counted: usize) -> Result<(), Overflow> {
        {
            let mut queue = self.shared.lock();
            if queue.items.len() >= max_items(self.shared.bound) {
                drop(queue);
                self.shared.queued.fetch_sub(counted, Ordering::Relaxed);
                self.close(CLOSE_SLOW_CONSUMER);
                return Err(Overflow);
            }
            if queue.items.is_empty() && queue.since.is_none() {
                queue.since = Some(std::time::Instant::now());
            }
            queue.items.push_back(item);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// Asks the socket to close with `code` now (what is queued is dropped).
    pub(crate) fn close(&self, code: u16) {
        self.shared.close(code);
    }

    /// True once a close was requested.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.close_code.load(Ordering::Acquire) != 0
    }

    /// The queue's bound in bytes (`--queue-bytes`): also how far an admin socket may fall
    /// behind the fan-out's update feed.
    pub(crate) fn bound(&self) -> usize {
        self.shared.bound
    }

    /// Bytes waiting in the queue (for the fan-out lag gauge).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl OutboxReceiver {
    /// The next item, or `None` when every producer is gone and the queue is empty.
    #[cfg(test)]
    /// (Single consumer: the socket task; see [`OutboxReceiver::poll_recv`].)
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item; the task is woken when one is queued or the last producer
    /// left. Only the socket task polls its receiver (one waker is kept).
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(item) = self.try_recv() {
            return Poll::Ready(Some(item));
        }
        self.shared.waker.register(cx.waker());
        // Checked again after registering: a push in between woke nobody.
        if let Some(item) = self.try_recv() {
            return Poll::Ready(Some(item));
        }
        if self.shared.producers.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// A closer of this queue that does not count as a producer.
    pub(crate) fn closer(&self) -> Closer {
        Closer {
            shared: self.shared.clone(),
        }
    }

    /// True once the socket's deadline passed (until it sets the next one); the socket is
    /// woken like [`OutboxReceiver::poll_recv`] when it becomes true.
    pub(crate) fn is_due(&self) -> bool {
        self.shared.due.load(Ordering::Acquire)
    }

    /// Polls for a close request (its code); woken like [`OutboxReceiver::poll_recv`].
    pub(crate) fn poll_close(&self, cx: &mut Context<'_>) -> Poll<u16> {
        self.shared.poll_close(cx)
    }

    /// The next item if one is ready.
    pub(crate) fn try_recv(&self) -> Option<Outbound> {
        let (item, since) = {
            let mut queue = self.shared.lock();
            let item = queue.items.pop_front();
            let since = if item.is_some() {
                queue.since.take()
            } else {
                None
            };
            let items = &mut queue.items;
            if items.is_empty() {
                if items.capacity() <= FREE_CAPACITY {
                    // An idle socket holds no slots at all.
                    *items = VecDeque::new();
                } else if items.capacity() > KEEP_CAPACITY {
                    items.shrink_to(KEEP_CAPACITY);
                }
            }
            (item, since)
        };
        if let (Some(since), Some(metrics)) = (since, &self.metrics) {
            metrics.queue_waited(since.elapsed());
        }
        let item = item?;
        if let Outbound::Frame(f) = &item {
            self.shared.queued.fetch_sub(f.len(), Ordering::Relaxed);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_stays_in_128_bytes() {
        // One per socket: with the `Arc`'s two counts, at most 128 bytes is jemalloc's
        // 128-byte size class (one byte more is the 160-byte one).
        assert!(16 + std::mem::size_of::<Shared>() <= 128);
    }

    fn text(s: &str) -> Text {
        Text::from(s.to_string())
    }

    #[tokio::test]
    async fn delivers_in_order_then_ends_when_producers_are_gone() {
        let (tx, mut rx) = outbox(1024);
        let tx2 = tx.clone();
        tx.push(text("a")).expect("room");
        tx2.push(text("b")).expect("room");
        drop(tx);
        drop(tx2);
        for want in ["a", "b"] {
            match rx.recv().await {
                Some(Outbound::Frame(f)) => assert_eq!(f.as_str(), want),
                other => panic!("expected {want}, got {other:?}"),
            }
        }
        assert!(rx.recv().await.is_none());
        assert_eq!(rx.shared.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn over_the_byte_bound_closes_with_4008_and_frees_nothing_twice() {
        let (tx, rx) = outbox(10);
        tx.push(text("123456")).expect("fits");
        assert_eq!(tx.push(text("123456")), Err(Overflow));
        assert!(tx.is_closing());
        assert_eq!(
            std::future::poll_fn(|cx| rx.poll_close(cx)).await,
            CLOSE_SLOW_CONSUMER
        );
        assert_eq!(tx.queued_bytes(), 6, "the refused frame is not counted");
        assert!(rx.try_recv().is_some());
        assert_eq!(tx.queued_bytes(), 0);
    }
}
