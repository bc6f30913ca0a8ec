//! A WebSocket echo server on the hub's own RFC 6455 layer, for conformance testing only
//! (`examples/ws_echo.rs`, driven by Autobahn|Testsuite's fuzzingclient through
//! `scripts/autobahn.sh`; results in `docs/autobahn.md`).
//!
//! It runs exactly the code the hub's sockets run: the handshake checks
//! ([`handshake::check`]), hyper's upgrade and [`handshake::upgraded`], [`WsSocket`]'s
//! reading, pongs, close echo and batched writing, and the socket loop's closing path
//! ([`send_close`], [`linger`]). Only what is done with a message differs: it is sent back,
//! text as text and binary as binary, where the hub would parse it. Its limits are raised
//! to 64 MiB so that the suite's 16 MiB messages fit; everything else is the hub's default.
//! Not part of the hub's API: hidden from the docs.

use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

use super::conn::{linger, send_close, Exit};
use super::handshake;
use super::socket::{Incoming, WsError, WsSocket};
use crate::config::Settings;

/// The frame codec, for `examples/ws_frame_parse.rs` (its parser measured against
/// tungstenite's).
pub use super::frame;

/// The largest frame and message the echo takes (the suite sends up to 16 MiB).
const ECHO_LIMIT_BYTES: usize = 64 << 20;

/// The settings the echo's sockets run with: the hub's defaults, with room for the suite's
/// largest messages.
pub fn settings() -> Settings {
    Settings {
        max_frame_bytes: ECHO_LIMIT_BYTES,
        max_message_bytes: ECHO_LIMIT_BYTES,
        ..Settings::default()
    }
}

/// Serves the echo on `listener` until the listener fails; every connection in its own
/// task.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let settings = Arc::new(settings());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, settings.clone()));
    }
}

/// One HTTP/1.1 connection: its upgrade request is answered as the hub answers it.
async fn connection(tcp: TcpStream, settings: Arc<Settings>) {
    let service = hyper::service::service_fn(move |mut req: Request<Body>| {
        let settings = settings.clone();
        async move {
            let accept = match handshake::check(&req) {
                Ok(accept) => accept,
                Err(e) => {
                    return Ok::<_, Infallible>(axum::response::IntoResponse::into_response(e))
                }
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Some(socket) = handshake::upgraded(on_upgrade, &settings).await {
                    echo(socket).await;
                }
            });
            Ok(handshake::switching_protocols(accept))
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades()
        .await;
}

/// Sends every message back until the peer closes, breaks the protocol or goes away.
async fn echo(mut socket: WsSocket) {
    let exit = loop {
        // What was written so far goes out before anything more is read (backpressure).
        if poll_fn(|cx| socket.poll_flush(cx)).await.is_err() {
            break Exit::Gone;
        }
        let read = poll_fn(|cx| socket.poll_read(cx)).await;
        // A pong owed for a ping that came before the message goes out before its echo, as
        // on the hub's sockets (where replies queue behind it).
        if socket.pong_pending() && socket.send_pong().is_err() {
            break Exit::Gone;
        }
        let sent = match read {
            Ok(Incoming::Text(text)) => socket.write_batch(|b| b.text_owned(text.into_bytes())),
            Ok(Incoming::Binary(data)) => socket.write_batch(|b| b.binary_owned(data)),
            Ok(Incoming::Control) => Ok(()),
            // The socket queued the echo of the peer's close frame.
            Ok(Incoming::Close(_)) => break Exit::Gone,
            Err(WsError::Protocol(e)) => break Exit::Close(e.close_code(), e.reason()),
            Err(WsError::Eof | WsError::Io(_)) => break Exit::Gone,
        };
        if sent.is_err() {
            break Exit::Gone;
        }
    };
    send_close(&mut socket, exit).await;
    linger(&mut socket, exit).await;
}
