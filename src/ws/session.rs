//! One connected socket of any role: its set-up (hello, registration), its message
//! handling (delegated to the role's session), and its clean-up.

use hyper::upgrade::OnUpgrade;
use std::future::Future;
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use super::admin::AdminSession;
use super::agent::AgentSession;
use super::conn::{bad_message_frame, drive, linger, Conn, Exit};
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
    /// Boxed: admins are few, and their filter would make every agent's task larger (128
    /// bytes of session instead of 40).
    Admin(Box<AdminSession>),
    /// Boxed: adapters are few, and their ordered acks would make every agent's task
    /// larger.
    Telephony(Box<TelephonySession>),
}

impl Session {
    /// Handles one text frame.
    pub(crate) async fn on_text(&mut self, text: &str) -> Flow {
        match self {
            Session::Agent(s) => s.on_text(text).await,
            // Boxed, so that the agents' (most frequent) handler stays a small allocation
            // (see the test below): these two are ~1 KiB each.
            Session::Admin(s) => Box::pin(s.on_text(text)).await,
            Session::Telephony(s) => Box::pin(s.on_text(text)).await,
        }
    }

    /// Handles one text frame it owns (so that a boxed handler holds the text, not the
    /// socket's task).
    pub(crate) async fn on_text_owned(&mut self, text: String) -> Flow {
        self.on_text(&text).await
    }

    /// Answers an undecodable frame with `bad_message`.
    pub(crate) fn reject(&mut self, bad: &BadMessage) {
        let (_, hub) = self.parts();
        hub.metrics().bad_message(self.role());
        self.send(bad_message_frame(bad));
    }

    /// Answers a message refused by the rate limit with `rate_limited` (with its `ref` when
    /// one was found).
    pub(crate) fn rate_limited(&mut self, reply_ref: Option<Ref>) {
        let (_, hub) = self.parts();
        hub.metrics().rejected(Rejected::RateLimited);
        let reply = protocol::error(
            reply_ref.as_ref(),
            ErrorCode::RateLimited,
            "too many messages: slow down",
        );
        self.send(reply);
    }

    /// Queues a reply (an admin's after the updates published before it).
    fn send(&mut self, frame: crate::protocol::Text) {
        match self {
            Session::Admin(s) => s.send(frame),
            _ => {
                let _ = self.parts().0.push(frame);
            }
        }
    }

    /// Ready when an admin socket's update feed holds something for it.
    pub(crate) fn poll_feed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self {
            Session::Admin(s) => s.poll_feed(cx),
            _ => std::task::Poll::Pending,
        }
    }

    /// Hands an admin socket's waiting updates to `emit` (false: stop, the socket is full).
    pub(crate) fn write_feed(&mut self, emit: impl FnMut(&crate::protocol::Text) -> bool) {
        if let Session::Admin(s) = self {
            s.write_feed(emit);
        }
    }

    /// The socket is closing: an admin's feed cursor is let go at once.
    pub(crate) fn stop_feed(&mut self) {
        if let Session::Admin(s) = self {
            s.stop_feed();
        }
    }

    fn parts(&self) -> (&Outbox, &Hub) {
        match self {
            Session::Agent(s) => (&s.outbox, &s.hub),
            Session::Admin(s) => (&s.outbox, &s.hub),
            Session::Telephony(s) => (&s.outbox, &s.hub),
        }
    }

    /// The role of the socket.
    pub(crate) fn role(&self) -> Role {
        match self {
            Session::Agent(_) => Role::Agent,
            Session::Admin(_) => Role::Admin,
            Session::Telephony(_) => Role::Telephony,
        }
    }

    async fn closed(self) {
        match self {
            Session::Agent(s) => s.closed().await,
            Session::Admin(s) => (*s).closed(),
            Session::Telephony(s) => s.closed(),
        }
    }
}

/// Spawns the task of one socket (see [`serve`]) on `tasks`.
///
/// The connection's span (`conn_id`, role, id) is a debug span: at the default `info`
/// level an enabled span costs ~460 bytes of subscriber registry per socket, more than a
/// third of the socket's own memory; `RUST_LOG=presence_hub=debug` shows it. A disabled
/// span is not attached at all: `Instrumented` would keep 40 bytes of it in every
/// socket's task.
pub(crate) fn spawn(
    tasks: &TaskTracker,
    on_upgrade: OnUpgrade,
    hub: Arc<Hub>,
    identity: Identity,
    slot: Option<ConnSlot>,
) {
    let conn_id = hub.next_conn_id();
    let span = tracing::debug_span!("conn", conn_id, role = identity.role.as_str(), id = %identity.subject);
    let start = Box::new(Start {
        on_upgrade,
        hub,
        identity,
        conn_id,
    });
    let task = serve(start, slot);
    if span.is_disabled() {
        tasks.spawn(task);
    } else {
        tasks.spawn(task.instrument(span));
    }
}

/// What a socket is set up from (boxed: see [`serve`]).
struct Start {
    /// Resolves once the 101 response went out.
    on_upgrade: OnUpgrade,
    hub: Arc<Hub>,
    /// Who the socket is; needed only while it is set up.
    identity: Identity,
    conn_id: u64,
}

/// Serves one socket from its upgrade to its end, for an authenticated identity; `slot`
/// (the connection's place under `--max-connections`) is held until the socket is gone.
///
/// One `async` block (not an `async fn`): every value it captures is stored once in the
/// task, for its whole life (even once moved out). The set-up and the closing run as
/// boxed futures of their own: their state (the handshake, the login, the identity, the
/// close timers) lives only while they run, and what every idle socket's task holds is
/// the socket's parts ([`Conn`]) and its loop ([`drive`]).
#[allow(clippy::manual_async_fn)] // on purpose: an `async fn` stores its arguments twice
fn serve(start: Box<Start>, slot: Option<ConnSlot>) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let Some(mut conn) = Box::pin(set_up(start)).await else {
            return;
        };
        let exit = drive(&mut conn).await;
        Box::pin(finish(conn, exit)).await;
        // The connection slot is held for the life of the socket.
        drop(slot);
    }
}

/// Takes the connection over from hyper, then registers the socket for its role (an
/// agent's tab logs in through the router; admins and adapters get their `hello`).
/// `None` when the upgrade or the login failed.
async fn set_up(start: Box<Start>) -> Option<Conn> {
    let Start {
        on_upgrade,
        hub,
        identity,
        conn_id,
    } = *start;
    let role = identity.role;
    let mut socket = upgraded(on_upgrade, hub.settings()).await?;
    hub.metrics().socket_opened(role);
    debug!("socket opened");
    let (outbox, rx) = outbox_measured(hub.settings().queue_bytes, Some(hub.metrics_handle()));
    let session = match role {
        Role::Agent => match AgentSession::start(hub.clone(), &identity, outbox).await {
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
                    linger(&mut socket, Exit::Close(CLOSE_TRY_AGAIN, "retry later")).await;
                }
                return None;
            }
        },
        Role::Admin => {
            hello(&hub, &outbox, &identity);
            Session::Admin(Box::new(AdminSession::new(hub.clone(), conn_id, outbox)))
        }
        Role::Telephony => {
            hello(&hub, &outbox, &identity);
            let adapter = TelephonySession::new(hub.clone(), conn_id, outbox);
            Session::Telephony(Box::new(adapter))
        }
    };
    let expires = identity.expires_at.map(|exp| {
        let ms = exp
            .saturating_add(crate::protocol::TOKEN_LEEWAY_SECS)
            .saturating_mul(1000);
        hub.clock().instant_at(ms)
    });
    Some(Conn {
        socket,
        rx,
        session,
        hub,
        expires,
    })
}

/// After the loop: the session leaves (an agent's tab detaches from its actor), then the
/// closing handshake ends (see [`linger`]).
async fn finish(conn: Conn, exit: Exit) {
    match exit {
        Exit::Close(code, reason) => debug!(code, reason, "socket closed by the hub"),
        Exit::Gone => debug!("socket closed by the peer"),
    }
    let Conn {
        mut socket,
        session,
        hub,
        ..
    } = conn;
    let role = session.role();
    session.closed().await;
    hub.metrics().socket_closed(role);
    linger(&mut socket, exit).await;
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

#[cfg(test)]
mod size_tests {
    use super::*;

    fn future_size<A, B, F>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn the_socket_task_stays_small() {
        // Every socket's task holds this future. tokio's task cell is the future plus 104
        // bytes (header, scheduler, id, stage, trailer), aligned to 128; the task tracker
        // adds 8. At most 272 bytes keeps the cell at 384 (heaptrack at 10,000 agents:
        // 896 bytes per socket with a 712-byte future and its span, 640 with 520, 512 with
        // 384; 384 since the liveness timer moved to the hub's list of open sockets).
        let serve = future_size(serve);
        assert!(serve <= 272, "the socket's future grew to {serve} bytes");
        assert!(
            std::mem::size_of::<Session>() <= 48,
            "a role's session grew into every socket's task"
        );
    }

    #[test]
    fn an_agent_message_handler_is_a_small_allocation() {
        // Each message's handler is boxed (see `conn::drive`): under 1024 bytes it stays a
        // small-bin allocation for glibc's malloc; from 1024 on, every one of them made
        // malloc consolidate its fast bins (~4 % of the hub's CPU at 50 admins, issue 13).
        let size = future_size::<&'static mut Session, String, _>(|s, t| s.on_text_owned(t));
        assert!(size < 1024, "the message handler grew to {size} bytes");
    }
}
