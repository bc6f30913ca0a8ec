//! Every open socket of the hub, so that shutdown reaches each one: when the hub's
//! shutdown token is cancelled, every registered socket's queue is asked to close with
//! 1001 (its loop then sends the close frame before anything still queued).
//!
//! Why a list instead of each socket waiting on the shutdown token itself: that wait is a
//! 72-byte future (a `Notified` waiter node) in every socket's task, for its whole life.
//! A slot here is 8 bytes and the socket keeps a 4-byte key: with the rest of the socket
//! loop's trimming, an idle agent socket's task cell is 512 bytes instead of 640
//! (BENCHMARKS.md, "Idle memory per agent").
//!
//! The list is also every socket's liveness timer: each slot holds the socket's next
//! deadline (its ping, its pong timeout or its token's expiry, whichever comes first),
//! and one hub task ([`Sockets::run`]) sleeps until the earliest one and then tells
//! that socket through its queue (`Closer::set_due`). Why not a tokio `Sleep` in each
//! socket's task: it is 112 bytes for the whole life of every idle socket, and it
//! pushed the task's cell from 384 to 512 bytes; a deadline here is 8 bytes in the slot
//! and a 16-byte entry in the heap. Deadlines are exact (nanoseconds), so the timing is
//! the same as with a per-socket timer; a socket sets its deadline about once per ping
//! interval (never per message).
//!
//! The lock is held for a push, a slot update, popping what is due or taking the whole
//! list, never across an `.await`; closing happens outside it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outbox::Closer;

/// Close code of a socket closed by the hub's shutdown ("going away").
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;

/// The open sockets (see the module doc).
#[derive(Debug)]
pub(crate) struct Sockets {
    inner: Mutex<Inner>,
    /// Where deadlines are counted from (nanoseconds since).
    base: Instant,
    /// Wakes the timer task when a deadline earlier than every other one was set.
    earlier: Notify,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            inner: Mutex::default(),
            base: Instant::now(),
            earlier: Notify::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once shutdown began: a socket registering later is closed at once.
    closing: bool,
    /// One slot per open socket; `None` is free.
    slots: Vec<Option<Slot>>,
    /// Free slots, reused first.
    free: Vec<u32>,
    /// Deadlines set (nanoseconds since `base`, slot), earliest first. An entry whose
    /// slot holds another deadline (or is free) is stale and skipped.
    deadlines: BinaryHeap<Reverse<(u64, u32)>>,
}

/// One open socket.
#[derive(Debug)]
struct Slot {
    /// Asks the socket to close, or tells it its deadline passed.
    closer: Closer,
    /// Its deadline (nanoseconds since `base`); [`NO_DEADLINE`] when none is pending.
    due: u64,
}

/// A slot's deadline when none is pending (not set yet, or passed and told).
const NO_DEADLINE: u64 = u64::MAX;

/// A socket's place in [`Sockets`]; give it back with [`Sockets::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketKey(u32);

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section is one step: a poisoned lock still holds a consistent list.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket by the closer of its queue. During shutdown the socket is asked
    /// to close at once (and gets no slot).
    pub(crate) fn add(&self, closer: Closer) -> Option<SocketKey> {
        let mut inner = self.lock();
        if inner.closing {
            drop(inner);
            closer.close(CLOSE_GOING_AWAY);
            return None;
        }
        let slot = Slot {
            closer,
            due: NO_DEADLINE,
        };
        let key = match inner.free.pop() {
            Some(i) => {
                inner.slots[i as usize] = Some(slot);
                i
            }
            None => {
                let i = u32::try_from(inner.slots.len()).unwrap_or(u32::MAX);
                inner.slots.push(Some(slot));
                i
            }
        };
        Some(SocketKey(key))
    }

    /// Sets the socket's next deadline (replacing the one it had, and forgetting that one
    /// passed): at `at` the socket is told (`OutboxReceiver::is_due`) and woken.
    pub(crate) fn set_deadline(&self, key: SocketKey, at: Instant) {
        let due = self.ticks(at);
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(key.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        slot.due = due;
        slot.closer.clear_due();
        let earliest = inner
            .deadlines
            .peek()
            .is_none_or(|Reverse((first, _))| due < *first);
        inner.deadlines.push(Reverse((due, key.0)));
        drop(inner);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Nanoseconds from `base` to `at` (0 before it).
    fn ticks(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since).unwrap_or(NO_DEADLINE - 1)
    }

    /// Tells every socket whose deadline is at or before `now`; returns the next deadline.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let now = self.ticks(now);
        let mut inner = self.lock();
        let inner = &mut *inner;
        while let Some(&Reverse((due, key))) = inner.deadlines.peek() {
            if due > now {
                return Some(self.base + Duration::from_nanos(due));
            }
            inner.deadlines.pop();
            if let Some(slot) = inner.slots.get_mut(key as usize).and_then(Option::as_mut) {
                if slot.due == due {
                    slot.due = NO_DEADLINE;
                    slot.closer.set_due();
                }
            }
        }
        None
    }

    /// Forgets a socket that ended.
    pub(crate) fn remove(&self, key: SocketKey) {
        let mut inner = self.lock();
        let i = key.0 as usize;
        if inner.slots.get(i).is_some_and(Option::is_some) {
            inner.slots[i] = None;
            inner.free.push(key.0);
        }
        // Everything gone: give the memory back (the list grows again with the sockets).
        if inner.free.len() == inner.slots.len() && !inner.slots.is_empty() {
            inner.slots = Vec::new();
            inner.free = Vec::new();
            inner.deadlines = BinaryHeap::new();
        }
    }

    /// True once shutdown reached the list (every socket was asked to close).
    #[cfg(test)]
    pub(crate) fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Open sockets registered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.slots.len() - inner.free.len()
    }

    /// Asks every socket to close with 1001, and every later one at once.
    pub(crate) fn close_all(&self) {
        let slots = {
            let mut inner = self.lock();
            inner.closing = true;
            inner.free.clear();
            inner.deadlines = BinaryHeap::new();
            std::mem::take(&mut inner.slots)
        };
        for slot in slots.into_iter().flatten() {
            slot.closer.close(CLOSE_GOING_AWAY);
        }
    }

    /// The sockets' timer until `shutdown` is cancelled, then closes every socket (the hub
    /// runs this as a task).
    pub(crate) async fn run(&self, shutdown: CancellationToken) {
        loop {
            let next = self.fire(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.earlier.notified() => {}
                _ = sleep => {}
            }
        }
        self.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;
    use std::future::poll_fn;

    #[tokio::test]
    async fn shutdown_closes_every_registered_socket_and_every_later_one() {
        let sockets = Sockets::default();
        let (_a_tx, a) = outbox(1024);
        let (_b_tx, b) = outbox(1024);
        let (_c_tx, c) = outbox(1024);
        let ka = sockets.add(a.closer()).expect("a slot");
        let kb = sockets.add(b.closer()).expect("a slot");
        sockets.remove(ka);
        assert_eq!(sockets.len(), 1);
        let ka2 = sockets.add(a.closer()).expect("a slot");
        assert_eq!(ka2, ka, "a free slot is reused");
        sockets.remove(ka2);
        sockets.close_all();
        assert_eq!(poll_fn(|cx| b.poll_close(cx)).await, CLOSE_GOING_AWAY);
        assert!(sockets.add(c.closer()).is_none(), "no slot during shutdown");
        assert_eq!(poll_fn(|cx| c.poll_close(cx)).await, CLOSE_GOING_AWAY);
        sockets.remove(kb);
        assert_eq!(sockets.len(), 0);
    }

    /// How long after `start` the socket of `rx` is told its deadline passed.
    async fn due_at(rx: &crate::outbox::OutboxReceiver, start: Instant) -> Duration {
        poll_fn(|cx| {
            let _ = rx.poll_close(cx);
            if rx.is_due() {
                std::task::Poll::Ready(start.elapsed())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn each_socket_is_told_at_its_latest_deadline_and_no_earlier() {
        let sockets = std::sync::Arc::new(Sockets::default());
        let stop = CancellationToken::new();
        let timer = tokio::spawn({
            let (sockets, stop) = (sockets.clone(), stop.clone());
            async move { sockets.run(stop).await }
        });
        let start = Instant::now();
        let (_a_tx, a) = outbox(1024);
        let (_b_tx, b) = outbox(1024);
        let (_c_tx, c) = outbox(1024);
        let ka = sockets.add(a.closer()).expect("a slot");
        let kb = sockets.add(b.closer()).expect("a slot");
        let kc = sockets.add(c.closer()).expect("a slot");
        sockets.set_deadline(ka, start + Duration::from_secs(30));
        // Replaced: only the later deadline counts.
        sockets.set_deadline(kb, start + Duration::from_secs(5));
        sockets.set_deadline(kb, start + Duration::from_secs(20));
        // Gone before its deadline: never told (and its slot's next owner is not either).
        sockets.set_deadline(kc, start + Duration::from_secs(10));
        sockets.remove(kc);
        let (_d_tx, d) = outbox(1024);
        let kd = sockets.add(d.closer()).expect("a slot");
        assert_eq!(kd, kc, "the free slot is reused");

        assert_eq!(due_at(&b, start).await, Duration::from_secs(20));
        assert!(!a.is_due() && !d.is_due());
        assert_eq!(due_at(&a, start).await, Duration::from_secs(30));
        assert!(!d.is_due(), "a stale deadline of a reused slot is not told");
        // A new deadline clears the flag; an earlier one than the timer's wakes it.
        sockets.set_deadline(ka, start + Duration::from_secs(100));
        assert!(!a.is_due());
        sockets.set_deadline(kd, start + Duration::from_secs(40));
        assert_eq!(due_at(&d, start).await, Duration::from_secs(40));
        assert_eq!(due_at(&a, start).await, Duration::from_secs(100));
        stop.cancel();
        timer.await.expect("the timer task ends");
        assert_eq!(poll_fn(|cx| a.poll_close(cx)).await, CLOSE_GOING_AWAY);
    }

    #[test]
    fn the_list_gives_its_memory_back_when_empty() {
        let sockets = Sockets::default();
        let (_tx, rx) = outbox(1024);
        let keys: Vec<_> = (0..100)
            .map(|_| sockets.add(rx.closer()).expect("a slot"))
            .collect();
        for k in keys {
            sockets.remove(k);
        }
        let inner = sockets.lock();
        assert_eq!(inner.slots.capacity() + inner.free.capacity(), 0);
    }
}
