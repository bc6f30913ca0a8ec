//! The loop every socket runs: write what its [`Outbox`] holds (several frames per flush),
//! read client frames and hand them to the role's session (within the socket's rate
//! limit), ping on a timer and drop peers that stop answering, and close with the right
//! code on logout, slow consumption, oversized messages, rate abuse, token expiry or
//! shutdown.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{FutureExt, SinkExt};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

use super::limit::{MessageLimiter, Verdict};
use super::outbox::{Outbound, OutboxReceiver, CLOSE_SLOW_CONSUMER};
use super::session::{Flow, Session};
use crate::hub::HubCore;
use crate::metrics::{Rejected, Role};
use crate::protocol::{bad_message_reply, peek_ref, BadMessage};

/// Close codes of the protocol.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Policy: the token expired, or the client kept sending over its rate.
pub const CLOSE_POLICY: u16 = 1008;
/// Message larger than the configured maximum.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Frames written before a flush is forced, so one busy socket cannot hog its task.
const MAX_BATCH: usize = 128;
/// How long a closing socket may take to accept its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// We close with this code.
    Close(u16, &'static str),
    /// The peer closed, vanished or broke the protocol; nothing more to send.
    Gone,
}

/// Runs one socket until it closes. `expires` is when the socket's token runs out (its
/// `exp` plus the validation leeway); the socket is closed with 1008 then.
pub async fn drive(
    mut ws: WebSocket,
    mut rx: OutboxReceiver,
    session: &mut Session,
    core: &HubCore,
    role: Role,
    expires: Option<Instant>,
) -> Exit {
    let ping_interval = core.settings.ping_interval;
    let pong_timeout = core.settings.pong_timeout;
    let close_signal = rx.close_signal();
    let now = Instant::now();
    // Liveness: one timer for the whole life of the socket (no timer per loop turn). It
    // fires `ping_interval` after the last frame from the peer (then a ping goes out), and
    // `pong_timeout` after a ping (then the peer is dead unless a frame came meanwhile).
    let mut last_seen = now;
    let mut awaiting_answer = false;
    let liveness = tokio::time::sleep_until(now + ping_interval);
    tokio::pin!(liveness);
    let mut limiter = MessageLimiter::new(
        core.settings.rate_limit(role),
        core.settings.rate_limit_strikes,
        core.settings.rate_limit_window,
        now,
    );
    // The largest frame tungstenite's capped write buffer takes (see Settings).
    let max_frame_out = core
        .settings
        .max_write_buffer_bytes
        .saturating_sub(core.settings.write_buffer_bytes);
    let expiry = tokio::time::sleep_until(expires.unwrap_or(now));
    tokio::pin!(expiry);
    let exit = loop {
        tokio::select! {
            biased;
            () = core.shutdown.cancelled() => break Exit::Close(CLOSE_GOING_AWAY, "hub shutting down"),
            code = close_signal.requested() => break close_exit(code, core, role),
            () = &mut expiry, if expires.is_some() => {
                core.metrics.rejected(Rejected::TokenExpired);
                break Exit::Close(CLOSE_POLICY, "token expired");
            }
            item = rx.recv() => {
                let Some(item) = item else { break Exit::Gone };
                let written = tokio::select! {
                    biased;
                    () = core.shutdown.cancelled() => break Exit::Close(CLOSE_GOING_AWAY, "hub shutting down"),
                    code = close_signal.requested() => break close_exit(code, core, role),
                    r = write_batch(&mut ws, item, &mut rx, max_frame_out) => r,
                };
                match written {
                    Ok(None) => {}
                    Ok(Some(exit)) => break exit,
                    Err(_) => break Exit::Gone,
                }
            }
            msg = ws.recv() => {
                // Any frame from the peer proves it is alive.
                last_seen = Instant::now();
                awaiting_answer = false;
                match msg {
                    None => break Exit::Gone,
                    Some(Err(e)) => break read_error_exit(e, core),
                    Some(Ok(Message::Text(text))) => {
                        core.metrics.message_in(role);
                        match limiter.check(Instant::now()) {
                            Verdict::Allow => {
                                // Boxed: the handler's state lives only while a message is
                                // handled, not in every idle socket's task.
                                let handled = Box::pin(session.on_text(text.as_str())).await;
                                if let Flow::Close(code, reason) = handled {
                                    break Exit::Close(code, reason);
                                }
                            }
                            Verdict::Limited => session.rate_limited(peek_ref(text.as_str())),
                            Verdict::Close => break rate_limit_exit(core),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        core.metrics.message_in(role);
                        match limiter.check(Instant::now()) {
                            Verdict::Allow => session.reject(&BadMessage {
                                reply_ref: None,
                                message: "binary frames are not supported; send JSON text frames".into(),
                            }),
                            Verdict::Limited => session.rate_limited(None),
                            Verdict::Close => break rate_limit_exit(core),
                        }
                    }
                    // Pings cost nothing: not rate limited, and tungstenite keeps one pending
                    // pong, which the next read or write of this loop sends without waiting.
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => break Exit::Gone,
                }
            }
            () = &mut liveness => {
                let now = Instant::now();
                if awaiting_answer {
                    core.metrics.dead_peer(role);
                    break Exit::Gone;
                }
                let quiet_until = last_seen + ping_interval;
                if quiet_until > now {
                    // The peer spoke since: ping only after a full interval of silence.
                    liveness.as_mut().reset(quiet_until);
                    continue;
                }
                awaiting_answer = true;
                liveness.as_mut().reset(now + pong_timeout);
                let sent = tokio::time::timeout(pong_timeout, ws.send(Message::Ping(Bytes::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    core.metrics.dead_peer(role);
                    break Exit::Gone;
                }
            }
        }
    };
    if let Exit::Close(code, reason) = exit {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        let sent = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(frame)).await;
        if matches!(sent, Ok(Ok(()))) && code != CLOSE_TOO_BIG {
            discard_received(&mut ws);
        }
    }
    exit
}

/// Frames at most discarded by [`discard_received`].
const DISCARD_MAX_FRAMES: usize = 4096;

/// Reads and drops what the peer already sent, without waiting. Closing a TCP socket
/// with unread data makes the kernel reset the connection, and a reset discards what is
/// still in flight to the peer: the close frame and the last replies (a flooding client
/// would see its connection reset instead of 1008). After a 1009 the stream is mid-frame
/// and cannot be read any more, so this is skipped then.
fn discard_received(ws: &mut WebSocket) {
    for _ in 0..DISCARD_MAX_FRAMES {
        match ws.recv().now_or_never() {
            Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) | None => break,
            Some(Some(Ok(_))) => {}
        }
    }
}

fn close_exit(code: u16, core: &HubCore, role: Role) -> Exit {
    if code == CLOSE_SLOW_CONSUMER {
        core.metrics.slow_dropped(role);
        Exit::Close(code, "slow consumer")
    } else {
        Exit::Close(code, "closed by the hub")
    }
}

fn read_error_exit(e: axum::Error, core: &HubCore) -> Exit {
    let too_big = e
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_big {
        core.metrics.rejected(Rejected::MessageTooBig);
        Exit::Close(CLOSE_TOO_BIG, "message too big")
    } else {
        Exit::Gone
    }
}

fn rate_limit_exit(core: &HubCore) -> Exit {
    core.metrics.rejected(Rejected::RateLimitClosed);
    Exit::Close(CLOSE_POLICY, "rate limit exceeded")
}

/// Writes `first` and whatever else is ready (up to [`MAX_BATCH`]), then flushes once.
/// Returns the exit when a queued `Close` was reached.
async fn write_batch(
    ws: &mut WebSocket,
    first: Outbound,
    rx: &mut OutboxReceiver,
    max_frame_out: usize,
) -> Result<Option<Exit>, axum::Error> {
    let mut item = Some(first);
    let mut written = 0;
    while let Some(current) = item.take() {
        match current {
            Outbound::Frame(frame) => ws.feed(Message::Text(frame)).await?,
            Outbound::Frames(frames) => {
                for frame in frames {
                    ws.feed(Message::Text(frame)).await?;
                }
            }
            Outbound::Snapshot(reply) => {
                let frame = reply.render();
                if frame.len() > max_frame_out {
                    // tungstenite refuses it and the socket ends: say why.
                    tracing::warn!(
                        bytes = frame.len(),
                        "snapshot larger than the write buffer cap: raise --max-write-buffer-bytes"
                    );
                }
                ws.feed(Message::Text(Utf8Bytes::from(frame))).await?
            }
            Outbound::Close(code, reason) => {
                ws.flush().await?;
                return Ok(Some(Exit::Close(code, reason)));
            }
        }
        written += 1;
        if written < MAX_BATCH {
            item = rx.try_recv();
        }
    }
    ws.flush().await?;
    Ok(None)
}

/// Queues the `bad_message` reply for an undecodable frame.
pub fn bad_message_frame(bad: &BadMessage) -> Utf8Bytes {
    Utf8Bytes::from(bad_message_reply(bad))
}
