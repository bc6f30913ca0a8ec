//! One connected socket of any role: its set-up (hello, registration), its message
//! handling (delegated to the role's session), and its clean-up.

use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, Instrument};

use super::admin::AdminSession;
use super::agent::AgentSession;
use super::conn::{bad_message_frame, drive, linger, Exit};
use super::handshake::upgraded;
use super::telephony::TelephonySession;
use crate::hub::Hub;
use crate::metrics::Rejected;
use crate::outbox::{outbox_measured, Outbox};
use crate::protocol::Identity;
use crate::protocol::Role;
use crate::protocol::{self, BadMessage, ErrorCode, Ref};
use crate::server::ConnSlot;

/// Close code of a tab whose login cannot be taken now (cluster mode, retryable).
const CLOSE_TRY_AGAIN: u16 = 1013;

/// What the socket loop does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// The role-specific half of a socket.
pub(crate) enum Session {
    Agent(AgentSession),
    Admin(AdminSession),
    /// Boxed: adapters are few, and their ordered acks would make every agent's task
    /// larger.
    Telephony(Box<TelephonySession>),
}

impl Session {
    /// Handles one text frame.
    pub(crate) async fn on_text(&mut self, text: &str) -> Flow {
        match self {
            Session::Agent(s) => s.on_text(text).await,
            Session::Admin(s) => s.on_text(text).await,
            Session::Telephony(s) => s.on_text(text).await,
        }
    }

    /// Handles one text frame it owns (so that a boxed handler holds the text, not the
    /// socket's task).
    pub(crate) async fn on_text_owned(&mut self, text: String) -> Flow {
        self.on_text(&text).await
    }

    /// Answers an undecodable frame with `bad_message`.
    pub(crate) fn reject(&self, bad: &BadMessage) {
        let (outbox, hub) = self.parts();
        hub.metrics().bad_message(self.role());
        let _ = outbox.push(bad_message_frame(bad));
    }

    /// Answers a message refused by the rate limit with `rate_limited` (with its `ref` when
    /// one was found).
    pub(crate) fn rate_limited(&self, reply_ref: Option<Ref>) {
        let (outbox, hub) = self.parts();
        hub.metrics().rejected(Rejected::RateLimited);
        let reply = protocol::error(
            reply_ref.as_ref(),
            ErrorCode::RateLimited,
            "too many messages: slow down",
        );
        let _ = outbox.push(reply);
    }

    fn parts(&self) -> (&Outbox, &Hub) {
        match self {
            Session::Agent(s) => (&s.outbox, &s.hub),
            Session::Admin(s) => (&s.outbox, &s.hub),
            Session::Telephony(s) => (&s.outbox, &s.hub),
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

/// Serves one socket from its upgrade to its end, for an authenticated identity.
/// `on_upgrade` resolves once the 101 response went out; `slot` (the connection's place
/// under `--max-connections`) is held until the socket is gone.
///
/// One `async` block (not an `async fn` wrapping an instrumented block): every value it
/// captures is stored once in the task. `identity` is boxed because it is needed only while
/// the socket is set up; it is dropped before the socket's loop starts.
///
/// The connection's span (`conn_id`, role, id) is a debug span: at the default `info`
/// level an enabled span costs ~460 bytes of subscriber registry per socket, more than a
/// third of the socket's own memory; `RUST_LOG=presence_hub=debug` shows it.
pub(crate) fn serve(
    on_upgrade: OnUpgrade,
    hub: Arc<Hub>,
    identity: Box<Identity>,
    slot: Option<ConnSlot>,
) -> impl Future<Output = ()> + Send + 'static {
    let conn_id = hub.next_conn_id();
    let role = identity.role;
    let span = tracing::debug_span!("conn", conn_id, role = role.as_str(), id = %identity.subject);
    async move {
        let Some(mut socket) = upgraded(on_upgrade, hub.settings()).await else {
            return;
        };
        hub.metrics().socket_opened(role);
        debug!("socket opened");
        // In a block: the producer handle is gone before the socket's loop starts (a local
        // that was ever borrowed keeps its place in the task until its scope ends).
        let (mut session, rx) = {
            let (outbox, rx) =
                outbox_measured(hub.settings().queue_bytes, Some(hub.metrics_handle()));
            let session = match role {
                // Boxed: the registration's state is not kept in every socket's task.
                Role::Agent => {
                    match Box::pin(AgentSession::start(hub.clone(), &identity, outbox)).await {
                        Ok(session) => Session::Agent(session),
                        Err(refusal) => {
                            hub.metrics().socket_closed(role);
                            if let Some(frame) = refusal {
                                // Retryable (cluster mode): say so, then "try again later".
                                let bytes = frame.as_str().as_bytes();
                                let written = socket.write_batch(|b| {
                                    b.text(bytes);
                                    b.close(CLOSE_TRY_AGAIN, "retry later");
                                });
                                if written.is_ok() {
                                    let _ = std::future::poll_fn(|cx| socket.poll_flush(cx)).await;
                                }
                                linger(&mut socket, Exit::Close(CLOSE_TRY_AGAIN, "retry later"))
                                    .await;
                            }
                            return;
                        }
                    }
                }
                Role::Admin => {
                    hello(&hub, &outbox, &identity);
                    Session::Admin(AdminSession::new(hub.clone(), conn_id, outbox))
                }
                Role::Telephony => {
                    hello(&hub, &outbox, &identity);
                    Session::Telephony(Box::new(TelephonySession::new(
                        hub.clone(),
                        conn_id,
                        outbox,
                    )))
                }
            };
            (session, rx)
        };
        let expires = identity.expires_at.map(|exp| {
            let ms = exp
                .saturating_add(crate::protocol::TOKEN_LEEWAY_SECS)
                .saturating_mul(1000);
            hub.clock().instant_at(ms)
        });
        drop(identity);
        let exit = drive(&mut socket, &rx, &mut session, &hub, role, expires).await;
        match exit {
            Exit::Close(code, reason) => debug!(code, reason, "socket closed by the hub"),
            Exit::Gone => debug!("socket closed by the peer"),
        }
        Box::pin(session.closed()).await;
        hub.metrics().socket_closed(role);
        linger(&mut socket, exit).await;
        // The connection slot is held for the life of the socket.
        drop(slot);
    }
    .instrument(span)
}

fn hello(hub: &Hub, outbox: &Outbox, identity: &Identity) {
    let frame = protocol::hello(
        identity.role,
        &identity.subject,
        hub.clock().now_ms(),
        &hub.epoch(),
        hub.node().as_str(),
    );
    let _ = outbox.push(frame);
}
