//! `/ws/telephony`: a telephony adapter pushing call events and receiving
//! `call_accepted` / `call_declined` / `ring_timeout` notifications.

use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

use super::outbox::Outbox;
use super::reply::{error, pong};
use super::session::Flow;
use crate::hub::telephony::EventError;
use crate::hub::Hub;
use crate::metrics::Role;
use crate::protocol::{bad_message_reply, ErrorCode, Request};

/// An adapter's socket.
pub struct TelephonySession {
    pub(super) hub: Arc<Hub>,
    pub(super) outbox: Outbox,
    conn_id: u64,
}

impl TelephonySession {
    pub(super) fn new(hub: Arc<Hub>, conn_id: u64, outbox: Outbox) -> Self {
        TelephonySession {
            hub,
            outbox,
            conn_id,
        }
    }

    pub(super) async fn on_text(&mut self, text: &str) -> Flow {
        let req = match Request::decode(text) {
            Ok(req) => req,
            Err(bad) => {
                self.hub.core.metrics.bad_message(Role::Telephony);
                self.send(Some(bad_message_reply(&bad)));
                return Flow::Continue;
            }
        };
        if req.kind == "ping" {
            self.send(pong(&req, &self.hub));
            return Flow::Continue;
        }
        let reply = match self.hub.telephony_event(&req).await {
            Ok(answer) => {
                if req.reply_ref.is_some() || answer.answer.reply.error.is_some() {
                    Some(answer.render(&req))
                } else {
                    None
                }
            }
            Err(EventError::Bad(bad)) => {
                self.hub.core.metrics.bad_message(Role::Telephony);
                Some(bad_message_reply(&bad))
            }
            Err(EventError::Unavailable) => {
                error(&req, ErrorCode::InvalidState, "the hub is shutting down")
            }
        };
        self.send(reply);
        Flow::Continue
    }

    fn send(&self, reply: Option<String>) {
        if let Some(reply) = reply {
            let _ = self.outbox.push(Utf8Bytes::from(reply));
        }
    }

    pub(super) fn closed(self) {
        self.hub.core.notices.remove(self.conn_id);
    }
}
