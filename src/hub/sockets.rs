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
//! The lock is held for a push, a slot update or taking the whole list, never across an
//! `.await`; closing happens outside it.

use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::outbox::Closer;

/// Close code of a socket closed by the hub's shutdown ("going away").
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;

/// The open sockets (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once shutdown began: a socket registering later is closed at once.
    closing: bool,
    /// One slot per open socket; `None` is free.
    slots: Vec<Option<Closer>>,
    /// Free slots, reused first.
    free: Vec<u32>,
}

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
        let key = match inner.free.pop() {
            Some(i) => {
                inner.slots[i as usize] = Some(closer);
                i
            }
            None => {
                let i = u32::try_from(inner.slots.len()).unwrap_or(u32::MAX);
                inner.slots.push(Some(closer));
                i
            }
        };
        Some(SocketKey(key))
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
            std::mem::take(&mut inner.slots)
        };
        for closer in slots.into_iter().flatten() {
            closer.close(CLOSE_GOING_AWAY);
        }
    }

    /// Closes every socket once `shutdown` is cancelled (the hub runs this as a task).
    pub(crate) async fn close_on(&self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
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
