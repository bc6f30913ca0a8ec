//! `/ws/telephony`: a telephony adapter pushing call events and receiving
//! `call_accepted` / `call_declined` / `ring_timeout` notifications.

use std::sync::Arc;

use super::acks::OrderedAcks;
use super::outbox::Outbox;
use super::reply::{error, pong};
use super::session::Flow;
use crate::hub::telephony::{Dispatched, EventError};
use crate::hub::Hub;
use crate::metrics::Role;
use crate::protocol::{bad_message_reply, ErrorCode, Request};

/// An adapter's socket.
pub struct TelephonySession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    conn_id: u64,
    /// Replies go out in order, each once its event is committed (see `acks.rs`).
    acks: OrderedAcks,
}

impl TelephonySession {
    pub(super) fn new(hub: Arc<Hub>, conn_id: u64, outbox: Outbox) -> Self {
        TelephonySession {
            hub,
            acks: OrderedAcks::new(outbox.clone()),
            outbox,
            conn_id,
        }
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let req = match Request::decode(text) {
            Ok(req) => req,
            Err(bad) => {
                self.hub.core.metrics.bad_message(Role::Telephony);
                self.acks.send_now(Some(bad_message_reply(&bad))).await;
                return Flow::Continue;
            }
        };
        if req.kind == "ping" {
            self.acks.send_now(pong(&req, &self.hub)).await;
            return Flow::Continue;
        }
        match self.hub.telephony_dispatch(&req).await {
            Ok(Dispatched::Answered(mut answer)) => {
                let reply = if req.reply_ref.is_some() || answer.answer.reply.error.is_some() {
                    Some(answer.render(&req))
                } else {
                    None
                };
                // Sent once the event (and its change) is committed, in arrival order;
                // the socket goes on reading meanwhile.
                let ticket = answer.answer.take_ticket();
                self.acks.send(ticket, reply, req.reply_ref.clone()).await;
            }
            Ok(Dispatched::Pending(answer)) => {
                // Pipelined: the next events are read and dispatched while the actor works.
                self.acks
                    .send_event(answer, self.hub.clone(), req.reply_ref.clone())
                    .await;
            }
            Err(EventError::Bad(bad)) => {
                self.hub.core.metrics.bad_message(Role::Telephony);
                self.acks.send_now(Some(bad_message_reply(&bad))).await;
            }
            Err(EventError::Unavailable) => {
                let reply = error(&req, ErrorCode::InvalidState, "the hub is shutting down");
                self.acks.send_now(reply).await;
            }
        }
        Flow::Continue
    }

    pub(super) fn closed(self) {
        self.hub.core.notices.remove(self.conn_id);
    }
}
