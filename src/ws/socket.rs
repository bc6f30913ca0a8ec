//! One server-side WebSocket on a raw [`TcpStream`], holding no buffer while idle.
//!
//! Reading: an idle socket waits on the stream's readiness only. When bytes arrive they are
//! read into a per-thread scratch buffer, inside a poll (never across an `.await`), and
//! decoded from there by [`Decoder`]. Only what cannot be handed over at once (a partial
//! frame, or the frames after a message the session is still handling) is kept in a
//! per-socket `Vec`, allocated then and freed once consumed; it is bounded by one frame
//! (the frame limit) plus one read.
//!
//! Writing: frames are encoded into a per-thread scratch buffer and written in batches
//! (one `write` per `--write-buffer-bytes`); what the kernel does not take is kept in a
//! per-socket `Vec` until the stream is writable again, and freed once written.
//!
//! Each ping is answered with a pong carrying its payload while the kernel takes our bytes;
//! while unsent bytes wait, one pong is owed, for the latest ping (a ping flood from a peer
//! that does not read queues nothing); a close frame from the peer is answered with a close frame echoing
//! its code, behind the pong owed for a ping that came before it (RFC 6455 5.5.2).

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

use super::frame::{Decoded, Decoder, FrameError, Limits, OP_CLOSE, OP_PONG};
use crate::config::Settings;

#[path = "socket_write.rs"]
mod write;

/// Frames at most read and dropped while a closing socket waits for the peer's close (see
/// [`WsSocket::linger`]).
const LINGER_MAX_FRAMES: usize = 4096;
/// Bytes at most read and dropped after a protocol error (see [`WsSocket::linger`]).
const LINGER_MAX_BYTES: usize = 1 << 20;
/// Per-thread scratch buffers kept after use; larger ones (after a big snapshot) are freed.
const SCRATCH_KEEP_BYTES: usize = 256 * 1024;

thread_local! {
    /// Where reads land before they are decoded; used only within a poll.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where a batch of frames is encoded before it is written; used only within a poll.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a socket cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    /// The peer closed the TCP connection (without a close frame).
    #[error("connection closed by the peer")]
    Eof,
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol or passed a limit; answer with its close code.
    #[error("{0}")]
    Protocol(#[from] FrameError),
}

/// What the peer sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A complete text message.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// Only control frames (ping, pong) arrived and nothing else is ready; a ping's pong
    /// is pending (see [`WsSocket::pong_pending`]).
    Control,
    /// The peer sent a close frame (with its code when it had one); the echo is queued.
    Close(Option<u16>),
}

/// A server-side WebSocket over TCP.
#[derive(Debug)]
pub(crate) struct WsSocket {
    tcp: TcpStream,
    /// Largest frame payload (`--max-frame-bytes`), checked on each header.
    max_frame: u32,
    /// Largest message (`--max-message-bytes`), checked on each header.
    max_message: u32,
    /// Bytes read from the stream at once (`--read-buffer-bytes`).
    read_chunk: u32,
    /// Bytes gathered before a write (`--write-buffer-bytes`).
    batch_bytes: u32,
    /// The peer's close frame was received: nothing more is read.
    read_closed: bool,
    /// Our close frame was written: nothing more is written.
    write_closed: bool,
    /// What a socket holds only while it is busy (a partial frame, a fragmented message,
    /// unsent bytes, a pong owed); `None`, nothing allocated, while idle. Boxed: ~110 bytes
    /// less in every idle socket's task.
    busy: Option<Box<Busy>>,
}

/// The state of a busy socket (see [`WsSocket::busy`]).
#[derive(Debug, Default)]
struct Busy {
    /// A fragmented message being reassembled.
    decoder: Decoder,
    /// Received bytes not decoded yet.
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` already decoded.
    inpos: usize,
    /// Encoded bytes the kernel has not taken yet.
    outbuf: Vec<u8>,
    /// Bytes of `outbuf` already written.
    outpos: usize,
    /// Payload of the pong owed for the latest ping.
    pong: Option<Box<[u8]>>,
}

impl Busy {
    /// True when nothing is held any more.
    fn is_idle(&self) -> bool {
        !self.decoder.in_message()
            && self.inpos >= self.inbuf.len()
            && self.outpos >= self.outbuf.len()
            && self.pong.is_none()
    }
}

impl WsSocket {
    /// A socket on an upgraded stream; `received` holds bytes read past the handshake.
    pub(crate) fn new(tcp: TcpStream, received: &[u8], settings: &Settings) -> WsSocket {
        let mut socket = WsSocket {
            tcp,
            max_frame: clamp_u32(settings.max_frame_bytes),
            max_message: clamp_u32(settings.max_message_bytes),
            read_chunk: clamp_u32(settings.read_buffer_bytes.max(256)),
            batch_bytes: clamp_u32(settings.write_buffer_bytes.max(1024)),
            read_closed: false,
            write_closed: false,
            busy: None,
        };
        if !received.is_empty() {
            socket.busy().inbuf = received.to_vec();
        }
        socket
    }

    /// Per-socket heap bytes held right now (0 while idle): for tests and metrics.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| {
            std::mem::size_of::<Busy>()
                + b.inbuf.capacity()
                + b.outbuf.capacity()
                + b.pong.as_ref().map_or(0, |p| p.len())
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_frame: self.max_frame as usize,
            max_message: self.max_message as usize,
        }
    }

    /// The busy state, allocated when needed.
    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// Frees the busy state once it holds nothing.
    fn settle(&mut self) {
        if self.busy.as_ref().is_some_and(|b| b.is_idle()) {
            self.busy = None;
        }
    }

    // -----------------------------------------------------------------------------------
    // Reading
    // -----------------------------------------------------------------------------------

    /// The next message from the peer. Control frames are handled on the way (a pong is
    /// owed for the latest ping); when only those arrived, [`Incoming::Control`] says so.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, WsError>> {
        let read = self.poll_read_inner(cx);
        self.settle();
        read
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, WsError>> {
        let mut control = false;
        let limits = self.limits();
        loop {
            if self.read_closed {
                // The peer's close frame came: nothing more is read.
                return Poll::Pending;
            }
            let pongs = self.pong_policy();
            if let Some(b) = self.busy.as_deref_mut().filter(|b| b.inpos < b.inbuf.len()) {
                let buf = &mut b.inbuf[b.inpos..];
                let (step, used) = decode_some(&mut b.decoder, &limits, &mut b.pong, pongs, buf)?;
                b.inpos += used;
                if b.inpos == b.inbuf.len() {
                    // Consumed: give the memory back.
                    b.inbuf = Vec::new();
                    b.inpos = 0;
                }
                match self.after_decode(step) {
                    Step::Message(m) => return Poll::Ready(Ok(m)),
                    Step::Pong(payload) => {
                        self.write_pong(&payload)?;
                        control = true;
                        continue;
                    }
                    // What is left (if anything) is an incomplete frame: read more.
                    Step::NeedMore { control: c } => control |= c,
                }
            }
            match self.tcp.poll_read_ready(cx) {
                Poll::Pending if control => return Poll::Ready(Ok(Incoming::Control)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {}
            }
            match self.read_and_decode()? {
                None => {}
                Some(Step::Message(m)) => return Poll::Ready(Ok(m)),
                Some(Step::Pong(payload)) => {
                    self.write_pong(&payload)?;
                    control = true;
                }
                Some(Step::NeedMore { control: c }) => control |= c,
            }
        }
    }

    /// Reads once into the scratch and decodes from it; keeps what is left over.
    /// `None`: nothing to read now (readiness was cleared).
    fn read_and_decode(&mut self) -> Result<Option<Step>, WsError> {
        let chunk = self.read_chunk as usize;
        let limits = self.limits();
        let pongs = self.pong_policy();
        READ_SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < chunk {
                scratch.resize(chunk, 0);
            }
            let buf = &mut scratch[..chunk];
            let n = match self.tcp.try_read(buf) {
                Ok(0) => return Err(WsError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if let Some(b) = self.busy.as_deref_mut().filter(|b| b.inpos < b.inbuf.len()) {
                // A partial frame is waiting: complete it in the per-socket buffer (bounded:
                // the frame's header already passed the limits, and one read is added).
                b.inbuf.drain(..b.inpos);
                b.inpos = 0;
                b.inbuf.extend_from_slice(&buf[..n]);
                return Ok(Some(Step::NeedMore { control: false }));
            }
            // Decoded straight from the scratch; an idle socket's decoder state lives here
            // and moves into the socket only if something is left over.
            let mut decoder = Decoder::default();
            let mut pong = None;
            let (step, used) = match self.busy.as_deref_mut() {
                Some(b) => decode_some(&mut b.decoder, &limits, &mut b.pong, pongs, &mut buf[..n])?,
                None => decode_some(&mut decoder, &limits, &mut pong, pongs, &mut buf[..n])?,
            };
            if decoder.in_message() || pong.is_some() || used < n {
                let b = self.busy();
                if decoder.in_message() {
                    b.decoder = decoder;
                }
                if pong.is_some() {
                    b.pong = pong;
                }
                if used < n {
                    b.inbuf = buf[used..n].to_vec();
                    b.inpos = 0;
                }
            }
            Ok(Some(self.after_decode(step)))
        })
    }

    /// Queues the echo of a close frame when one came, behind the pong still owed for a
    /// ping that came before it (RFC 6455 5.5.2: a ping is answered unless the close frame
    /// was *sent* first; nothing is written after the close echo).
    fn after_decode(&mut self, step: Step) -> Step {
        if let Step::Message(Incoming::Close(code)) = &step {
            let code = *code;
            let pong = self.busy.as_deref_mut().and_then(|b| {
                b.inbuf = Vec::new();
                b.inpos = 0;
                b.pong.take()
            });
            // The echo; an error here shows on the next write or flush.
            let _ = self.write_batch(|b| {
                if let Some(payload) = &pong {
                    b.control(OP_PONG, payload);
                }
                match code {
                    Some(code) => b.close(code, ""),
                    None => b.control(OP_CLOSE, &[]),
                }
            });
            self.read_closed = true;
        }
        step
    }

    /// True once the peer's close frame came (its echo is queued).
    pub(crate) fn peer_closed(&self) -> bool {
        self.read_closed
    }

    /// Whether a ping that comes while a pong is owed gets the owed pong written at once:
    /// yes while the kernel takes our bytes, no (only the latest ping is answered) while
    /// unsent bytes wait, so a ping flood from a peer that does not read queues nothing.
    fn pong_policy(&self) -> Pongs {
        if self.has_unsent() || self.write_closed {
            Pongs::Latest
        } else {
            Pongs::Each
        }
    }

    /// Writes a pong now (behind whatever is still unsent).
    fn write_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_batch(|b| b.control(OP_PONG, payload))
    }

    /// True when a pong is owed for a ping.
    pub(crate) fn pong_pending(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.pong.is_some())
    }

    /// Sends the pong owed for the latest ping (behind whatever is still unsent).
    pub(crate) fn send_pong(&mut self) -> io::Result<()> {
        match self.busy.as_mut().and_then(|b| b.pong.take()) {
            Some(payload) => self.write_batch(|b| b.control(OP_PONG, &payload)),
            None => Ok(()),
        }
    }

    /// After our close frame (or the echo of the peer's) went out: ends our side of the
    /// TCP connection (FIN), then
    /// reads and drops what the peer still sends until its close frame or its FIN, for at
    /// most `limit` and [`LINGER_MAX_FRAMES`] frames. Closing a TCP socket with unread data
    /// makes the kernel reset the connection, and a reset discards what is still in flight
    /// to the peer: the close frame and the last replies (a flooding client would see its
    /// connection reset instead of 1008). After a protocol error (`raw`) the stream cannot
    /// be decoded any more: its bytes are dropped undecoded, up to [`LINGER_MAX_BYTES`].
    pub(crate) async fn linger(&mut self, limit: Duration, raw: bool) {
        // Errors: the peer is gone already, nothing to wait for.
        if tokio::io::AsyncWriteExt::shutdown(&mut self.tcp)
            .await
            .is_err()
        {
            return;
        }
        let mut frames = 0;
        let mut bytes = 0;
        let drained = std::future::poll_fn(|cx| {
            if raw {
                return self.poll_discard_raw(cx, &mut bytes);
            }
            loop {
                match self.poll_read(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Incoming::Close(_)) | Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(_)) => {
                        frames += 1;
                        if frames >= LINGER_MAX_FRAMES {
                            return Poll::Ready(());
                        }
                    }
                }
            }
        });
        let _ = tokio::time::timeout(limit, drained).await;
        self.busy = None;
    }

    /// Reads and drops bytes until the peer's FIN or [`LINGER_MAX_BYTES`].
    fn poll_discard_raw(&mut self, cx: &mut Context<'_>, total: &mut usize) -> Poll<()> {
        if let Some(b) = self.busy.as_deref_mut() {
            b.inbuf = Vec::new();
            b.inpos = 0;
        }
        let chunk = self.read_chunk as usize;
        loop {
            if *total >= LINGER_MAX_BYTES {
                return Poll::Ready(());
            }
            match self.tcp.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            let read = READ_SCRATCH.with_borrow_mut(|scratch| {
                if scratch.len() < chunk {
                    scratch.resize(chunk, 0);
                }
                self.tcp.try_read(&mut scratch[..chunk])
            });
            match read {
                Ok(0) => return Poll::Ready(()),
                Ok(n) => *total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// How pings that come while a pong is owed are answered (see [`WsSocket::pong_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pongs {
    /// Each ping gets its pong: the owed one is handed out to be written now.
    Each,
    /// Only the latest ping's pong is owed (RFC 6455 5.5.3 allows it).
    Latest,
}

/// The outcome of decoding what was received so far.
enum Step {
    /// Something to hand over.
    Message(Incoming),
    /// Another ping came while this pong was owed: write it now, then decode on.
    Pong(Box<[u8]>),
    /// The rest is an incomplete frame; `control` when control frames were taken in.
    NeedMore { control: bool },
}

/// Decodes frames from `buf` until a message is complete or the rest is incomplete;
/// returns what it found and the bytes taken.
fn decode_some(
    decoder: &mut Decoder,
    limits: &Limits,
    pong: &mut Option<Box<[u8]>>,
    pongs: Pongs,
    buf: &mut [u8],
) -> Result<(Step, usize), FrameError> {
    let mut used = 0;
    let mut control = false;
    loop {
        let Some((decoded, n)) = decoder.decode(&mut buf[used..], limits)? else {
            return Ok((Step::NeedMore { control }, used));
        };
        used += n;
        let message = match decoded {
            Decoded::Text(text) => Incoming::Text(text.into_owned()),
            Decoded::Binary(data) => Incoming::Binary(data.into_owned()),
            Decoded::Close(frame) => Incoming::Close(frame.map(|(code, _)| code)),
            Decoded::Ping(payload) => {
                // One pong owed, for the latest ping (RFC 6455 5.5.3); the one owed before
                // goes out first when the kernel takes our bytes.
                match pong.replace(payload.into()) {
                    Some(owed) if pongs == Pongs::Each => return Ok((Step::Pong(owed), used)),
                    _ => {}
                }
                control = true;
                continue;
            }
            Decoded::Pong => {
                control = true;
                continue;
            }
            Decoded::Fragment => {
                control = true;
                continue;
            }
        };
        return Ok((Step::Message(message), used));
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "socket_tests.rs"]
pub(super) mod tests;
