//! `/ws/telephony`: a telephony adapter pushing call events and receiving
//! `call_accepted` / `call_declined` / `ring_timeout` notifications.
//!
//! Every frame to the adapter goes through one ordered sender: replies in the order their
//! events arrived, each once its event is committed, and notifications behind the reply
//! to the event that caused them (see `outbox::ordered`).

use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::session::Flow;
use crate::hub::{Dispatched, Hub, RouteError};
use crate::outbox::{Ordered, Outbox};
use crate::protocol::{self, BadMessage, Ref, Role, TelephonyMessage};

/// An adapter's socket.
pub(crate) struct TelephonySession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    conn_id: u64,
    /// Replies and notifications, in order.
    ordered: Ordered,
}

impl TelephonySession {
    /// Registers the socket for notifications.
    pub(super) fn new(hub: Arc<Hub>, conn_id: u64, outbox: Outbox) -> Self {
        let ordered = Ordered::new(outbox.clone(), hub.tasks());
        hub.notifier().add(conn_id, ordered.clone());
        TelephonySession {
            hub,
            outbox,
            conn_id,
            ordered,
        }
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let envelope = match protocol::decode::<TelephonyMessage>(text) {
            Ok(e) => e,
            Err(bad) => {
                self.bad(&bad);
                return Flow::Continue;
            }
        };
        let reply_ref = envelope.reply_ref;
        let message = envelope.message;
        if let TelephonyMessage::Ping {} = message {
            let _ = self.ordered.push(protocol::pong(
                reply_ref.as_ref(),
                self.hub.clock().now_ms(),
            ));
            return Flow::Continue;
        }
        if let Err(message) = message.check() {
            self.bad(&BadMessage { reply_ref, message });
            return Flow::Continue;
        }
        // The reply's place in the socket's order is taken before the event reaches its
        // actor: a notification the event causes (a 1 ms ring's timeout) queues behind it.
        let (routed, dispatched) = oneshot::channel();
        self.ordered
            .push_later(reply_when_committed(dispatched, reply_ref))
            .await;
        // Pipelined: the next events are read and dispatched while the actor works.
        let _ = routed.send(self.hub.router().telephony(&message).await);
        Flow::Continue
    }

    fn bad(&self, bad: &BadMessage) {
        self.hub.metrics().bad_message(Role::Telephony);
        let _ = self.ordered.push(protocol::bad_message(bad));
    }

    pub(super) fn closed(self) {
        self.hub.notifier().remove(self.conn_id);
    }
}

/// The reply to an event once it is routed, answered and committed: due when the event
/// had a `ref` or failed; an error instead when its commit failed or the hub is stopping.
fn reply_when_committed(
    dispatched: oneshot::Receiver<Result<Dispatched, RouteError>>,
    reply_ref: Option<Ref>,
) -> crate::outbox::Later {
    async move {
        let answer = match dispatched.await {
            Ok(Ok(dispatched)) => dispatched
                .answer()
                .await
                .map_err(|e| e.unavailable(reply_ref.as_ref())),
            Ok(Err(e)) => Err(e.unavailable(reply_ref.as_ref())),
            Err(_) => Err(None),
        };
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(Some(unavailable)) => return Some(unavailable),
            Err(None) => return Some(protocol::shutting_down(reply_ref.as_ref())),
        };
        if let Err(e) = answer.take_ticket().await {
            return Some(protocol::not_stored(reply_ref.as_ref(), &e));
        }
        let due = reply_ref.is_some() || answer.reply.error.is_some();
        due.then(|| answer.frame(reply_ref.as_ref()))
    }
    .boxed()
}
