//! Replies in arrival order, each once its commit is known, with the notifications of one
//! telephony adapter socket in the same order.
//!
//! A telephony adapter pipelines events (hundreds in flight), and with `--durability
//! commit` each reply may only go out once its event is committed. Waiting inline would
//! cost one commit per event; instead the socket goes on reading while a small task writes
//! the replies, in the order their events arrived, as their answers and commits complete.
//! The writer's group commit then covers every event that arrived meanwhile with one fsync.
//!
//! Notifications (`call_accepted`, `call_declined`, `ring_timeout`) go through the same
//! queue: one caused by an event is queued while that event's reply is, at the latest, on
//! its way to the actor, so on the adapter's socket the reply always comes first.
//!
//! A frame with nothing waiting ahead of it goes straight to the outbox, with no task hop.

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::{Outbox, Overflow, CLOSE_SLOW_CONSUMER};
use crate::protocol::Text;

/// Replies still waiting for their answer or commit, per socket, before the socket stops
/// reading until one is sent (backpressure on an adapter that outruns the disk).
pub(crate) const MAX_PENDING: usize = 1024;
/// Notifications that may wait behind those replies; past it the adapter is too slow and
/// its socket is closed with 4008, as for any queue over its bound.
pub(super) const MAX_WAITING_NOTICES: usize = 4096;

/// A reply that is known later: resolves to the frame to send (or none).
pub(crate) type Later = BoxFuture<'static, Option<Text>>;

enum Item {
    /// A notification or an immediate reply queued behind waiting ones.
    Frame(Text),
    /// A reply still being answered or committed; the permit is its place under
    /// [`MAX_PENDING`].
    Later(Later, OwnedSemaphorePermit),
}

struct Shared {
    /// Items queued to the task and not yet written to the outbox.
    pending: AtomicUsize,
    /// The task's queue.
    queue: mpsc::Sender<Item>,
    /// Places for waiting replies.
    room: Arc<Semaphore>,
}

/// The ordered sender of one socket. Cheap to clone: the socket's session and the
/// notifier each hold one.
#[derive(Clone)]
pub(crate) struct Ordered {
    outbox: Outbox,
    shared: Arc<Shared>,
}

impl Ordered {
    /// An ordered sender over `outbox`; its task (tracked by `tasks`) ends once every
    /// clone is dropped and everything queued was written.
    pub(crate) fn new(outbox: Outbox, tasks: &TaskTracker) -> Ordered {
        let (tx, mut rx) = mpsc::channel::<Item>(MAX_PENDING + MAX_WAITING_NOTICES);
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            queue: tx,
            room: Arc::new(Semaphore::new(MAX_PENDING)),
        });
        let writer = outbox.clone();
        // The task holds no `Shared` (it would keep its own queue open): it decrements the
        // count through a weak handle.
        let count = Arc::downgrade(&shared);
        tasks.spawn(async move {
            while let Some(item) = rx.recv().await {
                let frame = match item {
                    Item::Frame(f) => Some(f),
                    Item::Later(later, permit) => {
                        let frame = later.await;
                        drop(permit);
                        frame
                    }
                };
                if let Some(frame) = frame {
                    let _ = writer.push(frame);
                }
                if let Some(shared) = count.upgrade() {
                    shared.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
        Ordered { outbox, shared }
    }

    /// Sends `frame` after everything queued before it (at once when nothing is). Fails
    /// when the socket is over its bound (it is then closing with 4008).
    pub(crate) fn push(&self, frame: Text) -> Result<(), Overflow> {
        let shared = &self.shared;
        if shared.pending.load(Ordering::Acquire) == 0 {
            return self.outbox.push(frame);
        }
        if self.outbox.is_closing() {
            return Err(Overflow);
        }
        shared.pending.fetch_add(1, Ordering::AcqRel);
        if shared.queue.try_send(Item::Frame(frame)).is_err() {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            self.outbox.close(CLOSE_SLOW_CONSUMER);
            return Err(Overflow);
        }
        Ok(())
    }

    /// Queues a reply known later, after everything queued before it. Waits while
    /// [`MAX_PENDING`] replies are already waiting.
    pub(crate) async fn push_later(&self, later: Later) {
        let shared = &self.shared;
        let Ok(permit) = shared.room.clone().acquire_owned().await else {
            return;
        };
        shared.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = shared.queue.send(Item::Later(later, permit)).await {
            // The task is gone (only at shutdown): nothing will write this reply.
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            drop(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{outbox, Outbound};
    use futures::FutureExt;
    use tokio::sync::oneshot;

    fn text(s: &str) -> Text {
        Text::from(s.to_string())
    }

    async fn next(rx: &mut crate::outbox::OutboxReceiver) -> String {
        match rx.recv().await {
            Some(Outbound::Frame(f)) => f.as_str().to_string(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_notification_waits_for_the_reply_queued_before_it() {
        let tasks = TaskTracker::new();
        let (tx, mut rx) = outbox(1 << 20);
        let ordered = Ordered::new(tx, &tasks);
        let (answer, later) = oneshot::channel::<Text>();
        ordered
            .push_later(async move { later.await.ok() }.boxed())
            .await;
        // Caused by the event whose reply is still on its way: it must not overtake it.
        ordered.push(text("notice")).expect("room");
        assert!(
            rx.try_recv().is_none(),
            "nothing may go out before the reply"
        );
        answer.send(text("reply")).expect("open");
        assert_eq!(next(&mut rx).await, "reply");
        assert_eq!(next(&mut rx).await, "notice");
        // Nothing waiting: straight to the outbox.
        ordered.push(text("direct")).expect("room");
        assert_eq!(next(&mut rx).await, "direct");
    }
}
