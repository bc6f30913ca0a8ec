//! Admin sockets of `--mode tuned`: the straightforward tokio design. Each admin socket is one
//! task holding a `broadcast::Receiver` of serialized events (cheap `Bytes` clones of one
//! frame). On each wake-up it feeds every event already queued for it into tungstenite's write
//! buffer and flushes once, so a burst costs one `write` per socket, not one per event.

use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::state::{error_frame, ref_part};
use crate::{admin_hello, parse, Fanout, Hub, Ws};

/// Most events fed before one flush (bounds the write buffer of one batch).
const BATCH: usize = 256;

pub async fn admin(hub: Arc<Hub>, mut ws: Ws, id: String) {
    let Fanout::Tuned(tx) = &hub.fanout else {
        return;
    };
    if ws
        .send(Message::text(admin_hello(&hub, &id)))
        .await
        .is_err()
    {
        return;
    }
    let mut rx: Option<Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            ev = async {
                match rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let first = match ev {
                    Ok(f) => f,
                    Err(RecvError::Lagged(_)) => return slow(ws).await,
                    Err(RecvError::Closed) => return,
                };
                let Some(rx) = rx.as_mut() else { return };
                if ws.feed(Message::Text(first)).await.is_err() {
                    return;
                }
                let mut lagged = false;
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(f) => {
                            if ws.feed(Message::Text(f)).await.is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Lagged(_)) => {
                            lagged = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if lagged {
                    return slow(ws).await;
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = match parse(text.as_str()) {
                    Err(reply) => reply,
                    Ok(m) => match m.kind.as_str() {
                        "subscribe" => {
                            let (reply, sub) =
                                hub.store.snapshot(&m.reply_ref, |s| (s.to_owned(), tx.subscribe()));
                            rx = Some(sub);
                            reply
                        }
                        "unsubscribe" => {
                            rx = None;
                            format!(r#"{{"type":"ok"{}}}"#, ref_part(&m.reply_ref))
                        }
                        _ => error_frame(&m.reply_ref, "bad_message", "unknown type"),
                    },
                };
                if ws.send(Message::text(reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The admin fell more than the broadcast capacity behind: close 4008, as the hub does.
async fn slow(mut ws: Ws) {
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Library(4008),
            reason: "slow consumer".into(),
        }))
        .await;
}
