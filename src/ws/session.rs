//! One connected socket of any role: its set-up (hello, registration), its message
//! handling (delegated to the role's session), and its clean-up.

use axum::extract::ws::{Utf8Bytes, WebSocket};
use std::sync::Arc;
use tracing::{debug, Instrument};

use super::admin::AdminSession;
use super::agent::AgentSession;
use super::conn::{bad_message_frame, drive, Exit};
use super::outbox::{outbox, Outbox};
use super::telephony::TelephonySession;
use crate::http::auth::Identity;
use crate::hub::{Hub, HubCore};
use crate::metrics::{Rejected, Role};
use crate::protocol::{error_reply, json_string, BadMessage, ErrorCode, Ref};

/// What the socket loop does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// The role-specific half of a socket.
pub enum Session {
    Agent(AgentSession),
    Admin(AdminSession),
    Telephony(TelephonySession),
}

impl Session {
    /// Handles one text frame.
    pub async fn on_text(&mut self, text: &str) -> Flow {
        match self {
            Session::Agent(s) => s.on_text(text).await,
            Session::Admin(s) => s.on_text(text).await,
            Session::Telephony(s) => s.on_text(text).await,
        }
    }

    /// Answers an undecodable frame with `bad_message`.
    pub fn reject(&self, bad: &BadMessage) {
        let (outbox, core) = self.parts();
        core.metrics.bad_message(self.role());
        let _ = outbox.push(bad_message_frame(bad));
    }

    /// Answers a message refused by the rate limit with `rate_limited` (with its `ref` when
    /// one was found).
    pub fn rate_limited(&self, reply_ref: Option<Ref>) {
        let (outbox, core) = self.parts();
        core.metrics.rejected(Rejected::RateLimited);
        let reply = error_reply(
            reply_ref.as_ref(),
            ErrorCode::RateLimited,
            "too many messages: slow down",
            "",
        );
        let _ = outbox.push(Utf8Bytes::from(reply));
    }

    fn parts(&self) -> (&Outbox, &HubCore) {
        match self {
            Session::Agent(s) => (&s.outbox, &s.hub.core),
            Session::Admin(s) => (&s.outbox, &s.hub.core),
            Session::Telephony(s) => (&s.outbox, &s.hub.core),
        }
    }

    fn role(&self) -> Role {
        match self {
            Session::Agent(_) => Role::Agent,
            Session::Admin(_) => Role::Admin,
            Session::Telephony(_) => Role::Telephony,
        }
    }

    async fn closed(self) {
        match self {
            Session::Agent(s) => s.closed().await,
            Session::Admin(s) => s.closed(),
            Session::Telephony(s) => s.closed(),
        }
    }
}

/// Serves one upgraded socket for an authenticated identity, until it closes.
pub async fn serve(ws: WebSocket, hub: Arc<Hub>, identity: Identity) {
    let core = hub.core.clone();
    let conn_id = core.next_conn_id();
    let role = identity.role;
    let span = tracing::info_span!("conn", conn_id, role = role.as_str(), id = %identity.subject);
    async move {
        core.metrics.socket_opened(role);
        debug!("socket opened");
        let (outbox, rx) = outbox(core.settings.queue_bytes);
        let session = match role {
            Role::Agent => AgentSession::start(hub.clone(), &identity, outbox.clone())
                .await
                .map(Session::Agent),
            Role::Admin => {
                hello(&hub, &outbox, &identity);
                Some(Session::Admin(AdminSession::new(
                    hub.clone(),
                    conn_id,
                    outbox.clone(),
                )))
            }
            Role::Telephony => {
                hello(&hub, &outbox, &identity);
                core.notices.add(conn_id, outbox.clone());
                Some(Session::Telephony(TelephonySession::new(
                    hub.clone(),
                    conn_id,
                    outbox.clone(),
                )))
            }
        };
        drop(outbox);
        if let Some(mut session) = session {
            let expires = identity.expires_at.map(|exp| {
                let ms = exp
                    .saturating_add(crate::http::auth::TOKEN_LEEWAY_SECS)
                    .saturating_mul(1000);
                core.clock.instant_at(ms)
            });
            let exit = drive(ws, rx, &mut session, &core, role, expires).await;
            match exit {
                Exit::Close(code, reason) => debug!(code, reason, "socket closed by the hub"),
                Exit::Gone => debug!("socket closed by the peer"),
            }
            session.closed().await;
        }
        core.metrics.socket_closed(role);
    }
    .instrument(span)
    .await
}

fn hello(hub: &Hub, outbox: &Outbox, identity: &Identity) {
    let core = &hub.core;
    let frame = format!(
        r#"{{"type":"hello","role":"{}","id":{},"server_time":{},"epoch":{}}}"#,
        identity.role.as_str(),
        json_string(&identity.subject),
        core.clock.now_ms(),
        json_string(core.epoch()),
    );
    let _ = outbox.push(Utf8Bytes::from(frame));
}
