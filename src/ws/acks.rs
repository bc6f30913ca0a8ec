//! Acknowledgements that wait for the durable store without stalling the socket: a
//! telephony adapter pipelines events (hundreds in flight), and with `--durability commit`
//! each reply may only go out once its event is committed. Waiting inline would cost one
//! commit per event; instead the socket goes on reading while a small task sends the
//! replies, in the order their events arrived, as their commits complete. The writer's
//! group commit then covers every event that arrived meanwhile with one fsync.
//!
//! Replies whose ticket is already resolved (`--durability async`, or nothing to wait for)
//! go straight to the outbox when nothing is waiting ahead of them, with no task at all.

use axum::extract::ws::Utf8Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::outbox::Outbox;
use super::reply::not_stored;
use crate::agent::TelephonyAnswer;
use crate::hub::Hub;
use crate::protocol::{error_reply, ErrorCode, Ref};
use crate::store::CommitTicket;

/// Replies waiting for their commit, per socket, before the socket stops reading until
/// one is sent (backpressure on an adapter that outruns the disk).
pub const MAX_PENDING: usize = 1024;

struct Pending {
    answer: Answer,
    reply_ref: Option<Ref>,
}

/// Where a queued reply comes from.
enum Answer {
    /// Known already; it waits for its commit.
    Ready {
        ticket: CommitTicket,
        reply: Option<String>,
    },
    /// A telephony event still at its agent's actor: the adapter pipelines events, so the
    /// socket dispatches the next ones while this answer is computed.
    Event {
        answer: oneshot::Receiver<TelephonyAnswer>,
        hub: Arc<Hub>,
    },
}

impl Answer {
    /// The reply (if one is due) and the commit it waits for.
    async fn resolve(self, reply_ref: Option<&Ref>) -> (CommitTicket, Option<String>) {
        match self {
            Answer::Ready { ticket, reply } => (ticket, reply),
            Answer::Event { answer, hub } => match hub.telephony_answer(answer).await {
                Ok(mut answer) => {
                    let due = reply_ref.is_some() || answer.answer.reply.error.is_some();
                    let reply = due.then(|| answer.render_for(reply_ref));
                    (answer.answer.take_ticket(), reply)
                }
                Err(_) => (
                    CommitTicket::done(),
                    Some(error_reply(
                        reply_ref,
                        ErrorCode::InvalidState,
                        "the hub is shutting down",
                        "",
                    )),
                ),
            },
        }
    }
}

/// The ordered reply queue of one socket.
pub struct OrderedAcks {
    outbox: Outbox,
    /// Replies queued to the task and not yet pushed to the outbox.
    pending: Arc<AtomicUsize>,
    /// Started at the first reply that has to wait.
    queue: Option<mpsc::Sender<Pending>>,
}

impl OrderedAcks {
    pub fn new(outbox: Outbox) -> Self {
        OrderedAcks {
            outbox,
            pending: Arc::new(AtomicUsize::new(0)),
            queue: None,
        }
    }

    /// Sends `reply` (if any) once `ticket` resolved, after every reply queued before it.
    /// If the commit fails, an error with `reply_ref` goes out instead (also when there was
    /// no reply: an error is always sent). Waits only when [`MAX_PENDING`] replies are
    /// already waiting.
    pub async fn send(
        &mut self,
        ticket: CommitTicket,
        reply: Option<String>,
        reply_ref: Option<Ref>,
    ) {
        if ticket.is_immediate() && self.pending.load(Ordering::Acquire) == 0 {
            // Resolved already: the await returns at once.
            let stored = ticket.await;
            push(&self.outbox, finish(stored, reply, reply_ref.as_ref()));
            return;
        }
        self.enqueue(Pending {
            answer: Answer::Ready { ticket, reply },
            reply_ref,
        })
        .await;
    }

    /// Queues the reply to a telephony event its actor is still working on; it goes out
    /// after every reply queued before it, once the event is answered and committed.
    pub async fn send_event(
        &mut self,
        answer: oneshot::Receiver<TelephonyAnswer>,
        hub: Arc<Hub>,
        reply_ref: Option<Ref>,
    ) {
        self.enqueue(Pending {
            answer: Answer::Event { answer, hub },
            reply_ref,
        })
        .await;
    }

    async fn enqueue(&mut self, item: Pending) {
        let queue = match &self.queue {
            Some(q) => q.clone(),
            None => {
                let q = spawn(self.outbox.clone(), self.pending.clone());
                self.queue = Some(q.clone());
                q
            }
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(item)) = queue.send(item).await {
            // The task is gone (it cannot be while we hold the sender; keep the reply).
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let (ticket, reply) = item.answer.resolve(item.reply_ref.as_ref()).await;
            push(
                &self.outbox,
                finish(ticket.await, reply, item.reply_ref.as_ref()),
            );
        }
    }

    /// Sends a reply that waits for nothing, after those still waiting.
    pub async fn send_now(&mut self, reply: Option<String>) {
        if reply.is_some() {
            self.send(CommitTicket::done(), reply, None).await;
        }
    }
}

/// The task that sends queued replies in order; it ends when the socket's queue is
/// dropped and everything in it was sent.
fn spawn(outbox: Outbox, pending: Arc<AtomicUsize>) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(MAX_PENDING);
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let (ticket, reply) = item.answer.resolve(item.reply_ref.as_ref()).await;
            push(
                &outbox,
                finish(ticket.await, reply, item.reply_ref.as_ref()),
            );
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    });
    tx
}

fn finish(
    stored: Result<(), crate::store::StoreError>,
    reply: Option<String>,
    reply_ref: Option<&Ref>,
) -> Option<String> {
    match stored {
        Ok(()) => reply,
        Err(e) => Some(not_stored(reply_ref, &e)),
    }
}

fn push(outbox: &Outbox, reply: Option<String>) {
    if let Some(reply) = reply {
        let _ = outbox.push(Utf8Bytes::from(reply));
    }
}
