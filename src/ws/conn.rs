//! The loop every socket runs: write what its [`OutboxReceiver`] holds (several frames per
//! write), read client frames and hand them to the role's session (within the socket's
//! rate limit), ping on a timer and drop peers that stop answering, and close with the
//! right code on logout, slow consumption, oversized messages, protocol errors, rate
//! abuse, token expiry or shutdown.
//!
//! The loop waits on one hand-written poll ([`next_event`]) over its sources in a fixed
//! order, instead of a `select!` of futures: its idle state is the socket and a few
//! scalars, so every idle socket's task stays small. Its one deadline (liveness and
//! token expiry together) is kept by the hub's list of open sockets (`hub::sockets`),
//! whose timer task tells the socket through its outbox; shutdown reaches the loop the
//! same way (a close request with 1001), not through a waiter or a timer of its own.

use crate::protocol::Text as Utf8Bytes;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use super::frame::{CLOSE_INVALID_PAYLOAD, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG as FRAME_TOO_BIG};
use super::limit::{MessageLimiter, SocketLimiter, Verdict};
use super::session::{Flow, Session};
use super::socket::{Incoming, WsError, WsSocket};
use crate::hub::sockets::SocketKey;
use crate::hub::Hub;
use crate::metrics::Rejected;
use crate::outbox::{Outbound, OutboxReceiver, CLOSE_SLOW_CONSUMER};
use crate::protocol::Role;
use crate::protocol::{peek_ref, BadMessage};

/// Close codes of the protocol: the hub goes away (shutdown).
pub(crate) use crate::hub::sockets::CLOSE_GOING_AWAY;
/// Policy: the token expired, or the client kept sending over its rate.
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Message larger than the configured maximum.
pub(crate) const CLOSE_TOO_BIG: u16 = FRAME_TOO_BIG;

/// Outbox items written per batch before the loop looks at its other sources, so one busy
/// socket cannot hog its task.
const MAX_BATCH: usize = 128;
/// How long a closing socket may take to accept its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// We close with this code.
    Close(u16, &'static str),
    /// The peer closed (its close frame is echoed), vanished or stopped answering; nothing
    /// more to send.
    Gone,
}

/// What woke the loop.
enum Event {
    /// A close was requested (shutdown: 1001).
    CloseRequested(u16),
    Expired,
    Outbound(Outbound),
    /// An admin socket's update feed holds updates for it (and its outbox is empty).
    Feed,
    /// Every producer of the outbox is gone.
    QueueEnded,
    /// Unsent bytes went out (or could not).
    Flushed(io::Result<()>),
    Read(Result<Incoming, WsError>),
    /// The liveness deadline passed.
    Liveness,
}

/// One socket's parts, as its loop ([`drive`]) works on them.
pub(crate) struct Conn {
    pub(crate) socket: WsSocket,
    /// The socket's queue (frames to write, close requests, shutdown included).
    pub(crate) rx: OutboxReceiver,
    /// The role's message handling.
    pub(crate) session: Session,
    pub(crate) hub: Arc<Hub>,
    /// When the socket's token runs out (its `exp` plus the validation leeway): the socket
    /// is closed with 1008 then.
    pub(crate) expires: Option<Instant>,
}

/// Runs one socket until it must close, then sends its close frame (see [`linger`] for
/// the rest of the closing handshake).
///
/// Not an `async fn`: the arguments of an `async fn` are stored twice in its future (as
/// captured arguments and as locals); an `async move` block stores its captures once, in
/// every idle socket's task. One pointer to the parts, not one per part: the parts are
/// reached through it (never bound to locals that would live across an `.await`).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn drive(conn: &mut Conn) -> impl Future<Output = Exit> + Send + '_ {
    async move {
        // Liveness: one deadline at a time, kept by the hub's list of open sockets (its one
        // timer task tells the socket through its outbox: no timer in every socket's task),
        // shared with the token expiry (it is set to whichever comes first). It passes
        // `ping_interval` after the last frame from the peer (then a ping goes out), and
        // `pong_timeout` after a ping (then the peer is dead unless a frame came meanwhile).
        // Shutdown asks the outbox to close (1001); the socket leaves the list when the
        // loop ends or is dropped.
        // (Helpers of one step live in blocks: a local keeps its place in every socket's
        // task until its scope ends.)
        let registered = Registered::new(conn.hub.clone(), &conn.rx);
        let mut last_seen = Instant::now();
        registered.set_deadline(first(
            last_seen + conn.hub.settings().ping_interval,
            conn.expires,
        ));
        let mut awaiting_answer = false;
        // Held only while it counts something (see `SocketLimiter`).
        let mut limiter = SocketLimiter::default();
        let exit = loop {
            // A ping is answered as soon as nothing is queued ahead of the pong.
            {
                let socket = &mut conn.socket;
                if socket.pong_pending() && !socket.has_unsent() && socket.send_pong().is_err() {
                    break Exit::Gone;
                }
            }
            // The event lives in this block only: it is gone before a message is handled.
            let text = {
                let event = poll_fn(|cx| next_event(cx, &mut *conn)).await;
                if matches!(event, Event::Read(_)) {
                    // Any frame from the peer proves it is alive.
                    last_seen = Instant::now();
                    awaiting_answer = false;
                }
                let (core, role) = (&*conn.hub, conn.session.role());
                match event {
                    Event::Read(Ok(Incoming::Text(text))) => text,
                    Event::CloseRequested(code) => break close_exit(code, core, role),
                    Event::Expired => {
                        core.metrics().rejected(Rejected::TokenExpired);
                        break Exit::Close(CLOSE_POLICY, "token expired");
                    }
                    Event::QueueEnded | Event::Flushed(Err(_)) => break Exit::Gone,
                    Event::Flushed(Ok(())) => continue,
                    Event::Outbound(item) => {
                        match write_batch(
                            &mut conn.socket,
                            Some(item),
                            &conn.rx,
                            &mut conn.session,
                            core,
                        ) {
                            Ok(None) => continue,
                            Ok(Some(exit)) => break exit,
                            Err(_) => break Exit::Gone,
                        }
                    }
                    Event::Feed => {
                        match write_batch(&mut conn.socket, None, &conn.rx, &mut conn.session, core)
                        {
                            Ok(None) => continue,
                            Ok(Some(exit)) => break exit,
                            Err(_) => break Exit::Gone,
                        }
                    }
                    Event::Read(Ok(Incoming::Binary(_))) => {
                        core.metrics().message_in(role);
                        match limiter.check(Instant::now(), || fresh_limiter(core, role)) {
                            Verdict::Allow => conn.session.reject(&BadMessage {
                                reply_ref: None,
                                message: "binary frames are not supported; send JSON text frames"
                                    .into(),
                            }),
                            Verdict::Limited => conn.session.rate_limited(None),
                            Verdict::Close => break rate_limit_exit(core),
                        }
                        continue;
                    }
                    // Pings cost nothing: not rate limited, at most one pong owed (for the latest).
                    Event::Read(Ok(Incoming::Control)) => continue,
                    // The socket queued the echo of the peer's close frame.
                    Event::Read(Ok(Incoming::Close(_))) => break Exit::Gone,
                    Event::Read(Err(e)) => break read_error_exit(e, core),
                    Event::Liveness => {
                        let now = Instant::now();
                        limiter.rest(now);
                        if awaiting_answer {
                            core.metrics().dead_peer(role);
                            break Exit::Gone;
                        }
                        let quiet_until = last_seen + core.settings().ping_interval;
                        if quiet_until > now {
                            // The peer spoke since: ping only after a full interval of
                            // silence.
                            registered.set_deadline(first(quiet_until, conn.expires));
                            continue;
                        }
                        awaiting_answer = true;
                        registered
                            .set_deadline(first(now + core.settings().pong_timeout, conn.expires));
                        if conn.socket.write_batch(|b| b.ping()).is_err() {
                            core.metrics().dead_peer(role);
                            break Exit::Gone;
                        }
                        continue;
                    }
                }
            };
            let verdict = {
                let (core, role) = (&*conn.hub, conn.session.role());
                core.metrics().message_in(role);
                limiter.check(Instant::now(), || fresh_limiter(core, role))
            };
            match verdict {
                Verdict::Allow => {
                    // Boxed, text included: the handler's state lives only while a message
                    // is handled, not in every idle socket's task.
                    let handled = Box::pin(conn.session.on_text_owned(text)).await;
                    if let Flow::Close(code, reason) = handled {
                        break Exit::Close(code, reason);
                    }
                }
                Verdict::Limited => conn.session.rate_limited(peek_ref(&text)),
                Verdict::Close => break rate_limit_exit(&conn.hub),
            }
        };
        // What a closing admin socket did not read of the update feed is let go now, not
        // after its close frame went out.
        conn.session.stop_feed();
        // Boxed: the close timer lives only while a socket closes, not in every idle task.
        Box::pin(send_close(&mut conn.socket, exit)).await;
        exit
    }
}

/// A rested limiter for a socket of `role` (full bucket, no strikes).
fn fresh_limiter(core: &Hub, role: Role) -> MessageLimiter {
    let settings = core.settings();
    MessageLimiter::new(
        settings.rate_limit(role),
        settings.rate_limit_strikes,
        settings.rate_limit_window,
        Instant::now(),
    )
}

/// The earlier of a liveness deadline and the token's expiry.
fn first(liveness: Instant, expires: Option<Instant>) -> Instant {
    expires.map_or(liveness, |e| e.min(liveness))
}

/// Polls the loop's sources in priority order: a close request (shutdown included), the
/// token expiry, the outbox (or the unsent bytes of the last batch), an admin's update
/// feed, the peer, then liveness (after reading, so a pong that came in time is seen before
/// the deadline is judged).
fn next_event(cx: &mut Context<'_>, conn: &mut Conn) -> Poll<Event> {
    let (socket, rx, session, expires) = (&mut conn.socket, &conn.rx, &conn.session, conn.expires);
    // Registers the task's waker first: a deadline passing from now on wakes it.
    if let Poll::Ready(code) = rx.poll_close(cx) {
        return Poll::Ready(Event::CloseRequested(code));
    }
    // The deadline is the earlier of liveness and expiry: once it passed, the token ran
    // out if its expiry is behind us.
    let timer_fired = rx.is_due();
    if timer_fired && expires.is_some_and(|e| Instant::now() >= e) {
        return Poll::Ready(Event::Expired);
    }
    if socket.has_unsent() {
        if let Poll::Ready(r) = socket.poll_flush(cx) {
            return Poll::Ready(Event::Flushed(r));
        }
    } else if let Poll::Ready(item) = rx.poll_recv(cx) {
        return Poll::Ready(match item {
            Some(item) => Event::Outbound(item),
            None => Event::QueueEnded,
        });
    } else if session.poll_feed(cx).is_ready() {
        return Poll::Ready(Event::Feed);
    }
    if let Poll::Ready(read) = socket.poll_read(cx) {
        return Poll::Ready(Event::Read(read));
    }
    if timer_fired {
        return Poll::Ready(Event::Liveness);
    }
    Poll::Pending
}

/// Sends the close frame (for a close of ours) and lets what is unsent go out (the close
/// frame, the echo of the peer's, the last replies) within [`CLOSE_TIMEOUT`]; what could
/// not go out in time stays unsent (and [`linger`] then does not wait for the peer).
pub(crate) async fn send_close(socket: &mut WsSocket, exit: Exit) {
    if let Exit::Close(code, reason) = exit {
        if socket.write_batch(|b| b.close(code, reason)).is_err() {
            return;
        }
    }
    if socket.has_unsent() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| socket.poll_flush(cx))).await;
    }
}

/// After a close of ours went out: waits (at most [`CLOSE_TIMEOUT`]) for the peer's close
/// frame or FIN while dropping what it still sends, so the connection ends without a reset
/// (see [`WsSocket::linger`]). After the peer's close frame was echoed, the same: what the
/// peer sent behind its close frame is read and dropped (undecoded, at most
/// [`CLOSE_TIMEOUT`] and 1 MiB) until its FIN, so that the kernel does not answer unread
/// bytes with a reset that destroys the echo in flight. Called once the session is closed:
/// the socket no longer counts anywhere, only its descriptor is held meanwhile.
pub(crate) async fn linger(socket: &mut WsSocket, exit: Exit) {
    if socket.has_unsent() {
        return;
    }
    let code = match exit {
        Exit::Close(code, _) => code,
        Exit::Gone if socket.peer_closed() => {
            Box::pin(socket.linger(CLOSE_TIMEOUT, true)).await;
            return;
        }
        Exit::Gone => return,
    };
    // After a protocol error or an oversized frame the stream cannot be decoded further.
    let raw = matches!(
        code,
        CLOSE_PROTOCOL_ERROR | CLOSE_INVALID_PAYLOAD | CLOSE_TOO_BIG
    );
    // On shutdown the hub does not wait for every peer: what is there is dropped at once.
    let limit = if code == CLOSE_GOING_AWAY {
        Duration::ZERO
    } else {
        CLOSE_TIMEOUT
    };
    Box::pin(socket.linger(limit, raw)).await;
}

/// A socket's place in the hub's list of open sockets (and its deadline there), given
/// back when the loop ends.
struct Registered {
    hub: Arc<Hub>,
    key: Option<SocketKey>,
}

impl Registered {
    /// Registers the socket of `rx` (asked to close at once during shutdown).
    fn new(hub: Arc<Hub>, rx: &OutboxReceiver) -> Self {
        let key = hub.sockets().add(rx.closer());
        Registered { hub, key }
    }

    /// Sets the socket's next liveness (or expiry) deadline (see `hub::sockets`).
    fn set_deadline(&self, at: Instant) {
        if let Some(key) = self.key {
            self.hub.sockets().set_deadline(key, at);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.hub.sockets().remove(key);
        }
    }
}

fn close_exit(code: u16, core: &Hub, role: Role) -> Exit {
    if code == CLOSE_GOING_AWAY {
        Exit::Close(code, "hub shutting down")
    } else if code == CLOSE_SLOW_CONSUMER {
        core.metrics().slow_dropped(role);
        Exit::Close(code, "slow consumer")
    } else {
        Exit::Close(code, "closed by the hub")
    }
}

/// A read error: a protocol violation or a message over the limit is answered with its
/// close code (1002, 1007, 1009); the peer is gone otherwise.
fn read_error_exit(e: WsError, core: &Hub) -> Exit {
    match e {
        WsError::Protocol(e) => {
            if e.close_code() == CLOSE_TOO_BIG {
                core.metrics().rejected(Rejected::MessageTooBig);
            }
            tracing::debug!("closing on a protocol error: {e}");
            Exit::Close(e.close_code(), e.reason())
        }
        WsError::Eof | WsError::Io(_) => Exit::Gone,
    }
}

fn rate_limit_exit(core: &Hub) -> Exit {
    core.metrics().rejected(Rejected::RateLimitClosed);
    Exit::Close(CLOSE_POLICY, "rate limit exceeded")
}

/// Writes `first` and whatever else is ready (up to [`MAX_BATCH`] outbox items, and only
/// while the kernel takes the bytes), then, once the outbox is empty, an admin's waiting
/// updates from the feed, all in writes of `--write-buffer-bytes` (one `write` per turn
/// when it fits). Returns the exit when a queued `Close` was reached.
fn write_batch(
    socket: &mut WsSocket,
    first: Option<Outbound>,
    rx: &OutboxReceiver,
    session: &mut Session,
    core: &Hub,
) -> io::Result<Option<Exit>> {
    let max_frame_out = core.settings().max_write_buffer_bytes;
    socket.write_batch(|b| {
        let mut item = first.or_else(|| rx.try_recv());
        let mut written = 0;
        while let Some(current) = item.take() {
            match current {
                Outbound::Frame(frame) => b.text(frame.as_bytes()),
                Outbound::Frames(frames) => {
                    for frame in &frames {
                        b.text(frame.as_bytes());
                    }
                }
                Outbound::Replay(updates) => {
                    for update in &updates {
                        b.text(update.frame().as_bytes());
                    }
                }
                Outbound::Snapshot(reply) => {
                    let frame = reply.render();
                    if frame.len() > max_frame_out {
                        tracing::warn!(
                            bytes = frame.len(),
                            "snapshot larger than the outgoing frame cap: raise --max-write-buffer-bytes"
                        );
                        return Some(Exit::Gone);
                    }
                    b.text_owned(frame.into_bytes());
                }
                Outbound::Close(code, reason) => return Some(Exit::Close(code, reason)),
            }
            written += 1;
            if written == MAX_BATCH || b.blocked() {
                // The outbox may hold more: the feed waits for it (it comes after).
                return None;
            }
            item = rx.try_recv();
        }
        if !b.blocked() {
            session.write_feed(|frame| {
                b.text(frame.as_bytes());
                !b.blocked()
            });
        }
        None
    })
}

/// Queues the `bad_message` reply for an undecodable frame.
pub(crate) fn bad_message_frame(bad: &BadMessage) -> Utf8Bytes {
    crate::protocol::bad_message(bad)
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
