//! A small bounded multi-producer, single-consumer mailbox for agent actors.
//!
//! It replaces `tokio::sync::mpsc` because of what an idle agent pays for it: tokio's
//! channel allocates its first block of 32 slots and a cache-padded channel header when it
//! is created (~1.8 KiB per agent with a 48-byte message). Here every agent pays one small
//! `Arc` (a mutex-guarded `VecDeque` that holds no allocation while the mailbox is empty, a
//! semaphore for the bound and a sender count).
//!
//! Semantics kept from tokio's bounded channel, as the actor relies on them:
//! - FIFO; a sender waits while the mailbox is full (backpressure), and a dropped `send`
//!   future gives back its place (the semaphore's `acquire` is cancel-safe, and nothing
//!   after it awaits);
//! - when the last [`Sender`] drops, the receiver gets what is queued and then `None`;
//! - a receive spends tokio's cooperative budget, as tokio's `recv` does;
//! - when the [`Receiver`] drops, queued messages are dropped and every send, waiting or
//!   new, fails at once with the message back.
//!
//! The mutex is only held for a push, a pop or a waker swap, never across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Semaphore;

/// The receiver is gone; the message comes back.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SendError<T>(pub T);

/// Creates a mailbox that holds at most `bound` messages.
pub(super) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_waker: None,
            closed: false,
        }),
        space: Semaphore::new(bound),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    /// Queue and receiver waker under one short lock: a push and the wake-up it needs
    /// cannot interleave with the receiver deciding to sleep.
    state: Mutex<State<T>>,
    /// Free places in the queue: a sender takes one before pushing, the receiver gives it
    /// back after popping. Closed when the receiver drops, which wakes waiting senders.
    space: Semaphore,
    /// Live senders; the last one to drop wakes the receiver so it sees the end.
    senders: AtomicUsize,
}

struct State<T> {
    /// Messages in order. Empty and unallocated while the agent is idle (see `poll_recv`).
    queue: VecDeque<T>,
    /// The receiver's task while it waits for a message.
    receiver_waker: Option<Waker>,
    /// The receiver is gone: pushes fail.
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every mutation under this lock is a single step: the state stays consistent even
        // if a panic poisoned it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending half; clone it for more senders.
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value`, waiting while the mailbox is full. Fails (giving `value` back) when
    /// the receiver is gone. Cancel-safe: dropped before it completes, nothing is queued
    /// and no place is lost.
    pub(super) async fn send(&self, value: T) -> Result<(), SendError<T>> {
        let shared = &*self.shared;
        match shared.space.acquire().await {
            // The place now belongs to the message; the receiver gives it back on pop.
            Ok(permit) => permit.forget(),
            Err(_) => return Err(SendError(value)),
        }
        let mut state = shared.lock();
        if state.closed {
            return Err(SendError(value));
        }
        state.queue.push_back(value);
        let waker = state.receiver_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Sender<T> {
    /// True once the receiver is gone or closed the mailbox.
    pub(super) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last sender: the receiver, if it sleeps, must wake up to see the end. It reads
        // the count under the lock, so taking its waker under the lock cannot miss it.
        let waker = self.shared.lock().receiver_waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half (the actor).
pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message, or `None` once every sender is gone and the queue is drained.
    /// Cancel-safe: a dropped `recv` future loses no message. (The actor polls
    /// [`Receiver::poll_recv`] in its own select; this is for the tests.)
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] for a hand-written select.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Like tokio's channels, a receive spends the task's budget: an actor whose mailbox
        // is kept full yields now and then instead of hogging its worker thread.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let shared = &*self.shared;
        let mut state = shared.lock();
        if let Some(value) = state.queue.pop_front() {
            drop(state);
            shared.space.add_permits(1);
            coop.made_progress();
            return Poll::Ready(Some(value));
        }
        if shared.senders.load(Ordering::Acquire) == 0 {
            coop.made_progress();
            return Poll::Ready(None);
        }
        // Going to sleep with an empty queue: give its memory back (a burst keeps it, as
        // it never gets here between two messages; an idle agent holds none).
        if state.queue.capacity() != 0 {
            state.queue = VecDeque::new();
        }
        match &mut state.receiver_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.receiver_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Receiver<T> {
    /// Closes the mailbox if nothing is waiting in it (an idle actor that stops): every
    /// later send fails at once, and a send that got in first keeps the mailbox open (the
    /// actor handles it instead of stopping). Decided under the queue's lock, so no
    /// message is ever accepted and then dropped.
    pub(super) fn close_if_empty(&mut self) -> bool {
        let shared = &*self.shared;
        {
            let mut state = shared.lock();
            if !state.queue.is_empty() {
                return false;
            }
            state.closed = true;
            state.receiver_waker = None;
        }
        // Wakes every sender waiting for room with an error.
        shared.space.close();
        true
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let queued = {
            let mut state = shared.lock();
            state.closed = true;
            state.receiver_waker = None;
            std::mem::take(&mut state.queue)
        };
        // Wakes every waiting sender with an error; later sends fail at once.
        shared.space.close();
        // Dropped outside the lock: a message may own things whose drop wakes other tasks.
        drop(queued);
    }
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
