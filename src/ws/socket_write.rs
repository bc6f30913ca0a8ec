//! The writing half of [`WsSocket`]: frames are encoded into a per-thread scratch buffer
//! and written in batches (one `write` per `--write-buffer-bytes`); what the kernel does
//! not take is kept in the socket's busy state until the stream is writable again, and
//! freed once written. A large frame is written straight from its payload.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use super::{WsSocket, SCRATCH_KEEP_BYTES, WRITE_SCRATCH};
use crate::ws::frame::{
    encode_close, encode_frame, encode_header, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER, OP_BINARY,
    OP_CLOSE, OP_PING, OP_TEXT,
};

impl WsSocket {
    /// True while encoded bytes wait for the stream to take them.
    pub(crate) fn has_unsent(&self) -> bool {
        self.busy
            .as_ref()
            .is_some_and(|b| b.outpos < b.outbuf.len())
    }

    /// Encodes frames with `fill` and writes them: in one `write` per `batch_bytes`, the
    /// rest kept until the stream is writable (see [`WsSocket::poll_flush`]).
    pub(crate) fn write_batch<R>(
        &mut self,
        fill: impl FnOnce(&mut Batch<'_>) -> R,
    ) -> io::Result<R> {
        WRITE_SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let mut batch = Batch {
                socket: self,
                scratch,
                error: None,
            };
            let out = fill(&mut batch);
            batch.flush_scratch();
            let error = batch.error.take();
            if scratch.capacity() > SCRATCH_KEEP_BYTES {
                *scratch = Vec::new();
            }
            self.settle();
            match error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
    }

    /// Writes what is unsent; ready once all of it is written.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(b) = self
            .busy
            .as_deref_mut()
            .filter(|b| b.outpos < b.outbuf.len())
        {
            match self.tcp.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.tcp.try_write(&b.outbuf[b.outpos..]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => b.outpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Everything went out: give the memory back.
        if let Some(b) = self.busy.as_deref_mut() {
            b.outbuf = Vec::new();
            b.outpos = 0;
        }
        self.settle();
        Poll::Ready(Ok(()))
    }

    /// Hands `a` then `b` to the kernel as far as it takes them now; the rest is appended
    /// to `outbuf` (`b` moved there without a copy when it is owned and `a` went out).
    fn send(&mut self, a: &[u8], b: Payload<'_>) -> io::Result<()> {
        if self.write_closed {
            return Ok(());
        }
        let b_bytes = b.as_bytes();
        let total = a.len() + b_bytes.len();
        let mut off = 0;
        if !self.has_unsent() {
            while off < total {
                let written = if off < a.len() {
                    if b_bytes.is_empty() {
                        self.tcp.try_write(&a[off..])
                    } else {
                        let bufs = [IoSlice::new(&a[off..]), IoSlice::new(b_bytes)];
                        self.tcp.try_write_vectored(&bufs)
                    }
                } else {
                    self.tcp.try_write(&b_bytes[off - a.len()..])
                };
                match written {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if off == total {
            return Ok(());
        }
        let busy = self.busy();
        if busy.outpos > 0 && busy.outpos == busy.outbuf.len() {
            busy.outbuf.clear();
            busy.outpos = 0;
        }
        if off < a.len() {
            busy.outbuf.extend_from_slice(&a[off..]);
            busy.outbuf.extend_from_slice(b_bytes);
        } else {
            let b_off = off - a.len();
            match b {
                Payload::Owned(v) if busy.outbuf.is_empty() => {
                    busy.outbuf = v;
                    busy.outpos = b_off;
                }
                _ => busy.outbuf.extend_from_slice(&b_bytes[b_off..]),
            }
        }
        Ok(())
    }
}

/// A payload to write, borrowed (a shared frame) or owned (a rendered snapshot).
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// Frames being encoded into one write (see [`WsSocket::write_batch`]). Write errors are
/// kept and reported when the batch ends; frames after one are dropped.
pub(crate) struct Batch<'a> {
    socket: &'a mut WsSocket,
    scratch: &'a mut Vec<u8>,
    error: Option<io::Error>,
}

impl Batch<'_> {
    /// Adds a text frame (the payload is valid UTF-8: it comes from a `Utf8Bytes`/`String`).
    pub(crate) fn text(&mut self, payload: &[u8]) {
        self.data(OP_TEXT, Payload::Borrowed(payload));
    }

    /// Adds a text frame whose payload the socket may keep (a large snapshot is written
    /// from it, without copying it into the batch).
    pub(crate) fn text_owned(&mut self, payload: Vec<u8>) {
        self.data(OP_TEXT, Payload::Owned(payload));
    }

    /// Adds a binary frame whose payload the socket may keep (the hub sends none; the
    /// conformance echo sends back what it got).
    pub(crate) fn binary_owned(&mut self, payload: Vec<u8>) {
        self.data(OP_BINARY, Payload::Owned(payload));
    }

    fn data(&mut self, opcode: u8, payload: Payload<'_>) {
        if self.error.is_some() {
            return;
        }
        let len = payload.as_bytes().len();
        let mut header = [0u8; MAX_SERVER_HEADER];
        let n = encode_header(opcode, len, &mut header);
        self.scratch.extend_from_slice(&header[..n]);
        if len >= self.socket.batch_bytes as usize {
            // A large frame goes out straight from its payload, after the batch so far.
            let r = self.socket.send(self.scratch, payload);
            self.scratch.clear();
            self.latch(r);
            return;
        }
        self.scratch.extend_from_slice(payload.as_bytes());
        if self.scratch.len() >= self.socket.batch_bytes as usize {
            self.flush_scratch();
        }
    }

    /// Adds a control frame (ping, pong, empty close); payloads over 125 bytes are cut.
    /// Nothing is written after a close frame.
    pub(crate) fn control(&mut self, opcode: u8, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        encode_frame(self.scratch, opcode, payload);
        if opcode == OP_CLOSE {
            self.flush_scratch();
            self.socket.write_closed = true;
        }
    }

    /// Adds an empty ping.
    pub(crate) fn ping(&mut self) {
        self.control(OP_PING, &[]);
    }

    /// Adds a close frame with `code` and `reason`; nothing is written after it.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        encode_close(self.scratch, code, reason);
        self.flush_scratch();
        self.socket.write_closed = true;
    }

    /// True once the kernel stopped taking bytes: the caller should stop adding frames
    /// until [`WsSocket::poll_flush`] is done.
    pub(crate) fn blocked(&self) -> bool {
        self.error.is_some() || self.socket.has_unsent()
    }

    fn flush_scratch(&mut self) {
        if self.scratch.is_empty() || self.error.is_some() {
            return;
        }
        let r = self.socket.send(self.scratch, Payload::Borrowed(&[]));
        self.scratch.clear();
        self.latch(r);
    }

    fn latch(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.error = Some(e);
        }
    }
}
