//! `--mode raw`: the per-delivery ceiling. Each event is framed once (WebSocket header +
//! payload, one buffer) and handed to a single writer task, which gathers every frame queued
//! since its last wake-up into one batch and writes that batch to each subscribed admin socket
//! with one `write_all` per socket. No per-admin queue, task, lock or wake-up: the cost left per
//! delivery is the kernel's (one syscall per socket per batch, copying into its buffer).
//!
//! Not a server anyone should run: one admin whose socket buffer is full stalls the writer for
//! everybody, and once subscribed an admin's input is read and dropped (no unsubscribe, no
//! pong). It exists to say how far each server is from the bare cost of the writes.

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;

use crate::state::error_frame;
use crate::{admin_hello, parse, Fanout, Hub, Ws};

/// What the writer task is told, in `seq` order (both are sent under the store's lock).
pub enum Cmd {
    /// One framed event.
    Event(Bytes),
    /// A new subscriber and its framed snapshot: events queued before it are not for it.
    Register(OwnedWriteHalf, Bytes),
}

/// Most commands gathered into one batch.
const BATCH: usize = 4096;

/// A server (unmasked, FIN) text frame carrying `payload`.
pub fn frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut b = BytesMut::with_capacity(len + 10);
    b.put_u8(0x81);
    if len < 126 {
        b.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        b.put_u8(126);
        b.put_u16(len as u16);
    } else {
        b.put_u8(127);
        b.put_u64(len as u64);
    }
    b.put_slice(payload);
    b.freeze()
}

/// Writes `batch` to every admin, dropping those whose socket failed.
async fn write_all(admins: &mut Vec<OwnedWriteHalf>, batch: &[u8]) {
    if batch.is_empty() {
        return;
    }
    let mut i = 0;
    while i < admins.len() {
        if admins[i].write_all(batch).await.is_err() {
            admins.swap_remove(i);
        } else {
            i += 1;
        }
    }
}

/// The single writer task.
pub async fn writer(mut rx: UnboundedReceiver<Cmd>) {
    let mut admins: Vec<OwnedWriteHalf> = Vec::new();
    let mut batch = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(cmd) = next {
            match cmd {
                Cmd::Event(f) => batch.extend_from_slice(&f),
                Cmd::Register(mut w, snapshot) => {
                    write_all(&mut admins, &batch).await;
                    batch.clear();
                    if w.write_all(&snapshot).await.is_ok() {
                        admins.push(w);
                    }
                }
            }
            n += 1;
            next = if n < BATCH { rx.try_recv().ok() } else { None };
        }
        write_all(&mut admins, &batch).await;
        batch.clear();
    }
}

/// An admin socket: `hello`, then `subscribe`, then its writing belongs to the writer task.
pub async fn admin(hub: Arc<Hub>, mut ws: Ws, id: String) {
    let Fanout::Raw(tx) = &hub.fanout else {
        return;
    };
    if ws
        .send(Message::text(admin_hello(&hub, &id)))
        .await
        .is_err()
    {
        return;
    }
    let reply_ref = loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        let reply = match parse(text.as_str()) {
            Ok(m) if m.kind == "subscribe" => break m.reply_ref,
            Ok(m) => error_frame(&m.reply_ref, "bad_message", "raw mode: subscribe first"),
            Err(reply) => reply,
        };
        if ws.send(Message::text(reply)).await.is_err() {
            return;
        }
    };
    // The client sends nothing more (loadgen's admins do not) before it has the snapshot, so
    // tungstenite holds no unread input and nothing unwritten: the raw stream takes over.
    let (mut rd, wr) = ws.into_inner().into_split();
    hub.store.snapshot(&reply_ref, |s| {
        let _ = tx.send(Cmd::Register(wr, frame(s.as_bytes())));
    });
    let mut sink = [0u8; 1024];
    while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn frame_headers() {
        assert_eq!(&frame(b"hi")[..], b"\x81\x02hi");
        let mid = frame(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = frame(&vec![b'y'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(big.len(), 70_010);
    }
}
