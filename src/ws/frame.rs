//! RFC 6455 framing for the server side of the hub's sockets, pure (no I/O).
//!
//! [`Decoder`] turns the bytes a client sent into messages: it parses one frame header at a
//! time (FIN, RSV, opcode, mask, 7/16/64-bit length), checks it against the limits *before*
//! any of the payload is needed (a frame declaring 1 GiB is refused on its 2..14 header
//! bytes), unmasks the payload in place, reassembles fragmented messages and lets control
//! frames through between fragments. Every protocol violation is a [`FrameError`] that
//! carries the close code to answer with (1002, 1007 or 1009).
//!
//! The encoding side writes server frames: unmasked, always final, one header and the
//! payload.
//!
//! ## Why not tungstenite's frame types
//!
//! tungstenite (already a dependency: the handshake's `derive_accept_key`, the tests'
//! clients) has public frame types: `FrameHeader::parse`, `OpCode`, `CloseCode`. Neither
//! needs a buffer of its own (`FrameHeader::parse` reads from a `Cursor` over the bytes
//! already received), so memory is no reason either way. They were measured against this
//! module with `examples/ws_frame_parse.rs` (a workload of the hub's client headers: small
//! masked text frames, pings, pongs, 16- and 64-bit lengths, fragments, a close); both
//! parsers are first checked to give the same result on every header, every prefix of
//! each, and invalid headers. Instructions per header, callgrind, release build, loop cost
//! subtracted (2026-12-02):
//!
//! | parser | instructions per header | wall time per header |
//! |---|---:|---:|
//! | [`parse_header`] (this module) | 41.5 | 2.7 ns |
//! | `FrameHeader::parse` + the checks the hub needs on top | 309 | 11.3 ns |
//! | `FrameHeader::parse` alone, no checks (a lower bound) | 211 | 6.8 ns |
//!
//! (Wall times: 5 M rounds on a shared 2-core box, less the empty loop's; indicative only.)
//! `FrameHeader::parse` goes through `io::Read` on a `Cursor`, returns a `Result` with
//! tungstenite's large error type, and has `trace!` calls; and it checks less than the hub
//! must, so the checks would stay hand-written anyway: the mask bit (it returns an
//! `Option`), control frames final and at most 125 bytes, the shortest length encoding and
//! the top bit of a 64-bit length (RFC 6455 5.2), RSV bits; and it reports a bad opcode only
//! once the whole header (up to 14 bytes) is there, where this parser fails on the first
//! byte. So [`parse_header`] stays: 7x fewer instructions, same memory. `OpCode` would only
//! rename the six opcodes of `check_first_byte`'s match. `CloseCode::is_allowed` costs
//! about the same as [`close_code_allowed`] (11.8 against 10.5 instructions) but refuses
//! 1014 (Bad Gateway), which IANA registered and a peer may send, so the hub keeps its own
//! check (the example checks the two agree on every other code).

use std::borrow::Cow;

/// Continuation of a fragmented message.
pub const OP_CONTINUATION: u8 = 0x0;
/// A text (UTF-8) data frame.
pub const OP_TEXT: u8 = 0x1;
/// A binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Close control frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping control frame.
pub const OP_PING: u8 = 0x9;
/// Pong control frame.
pub const OP_PONG: u8 = 0xA;

/// Close code: the peer broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message (or close reason) that is not UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: a frame or message over the configured limit.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Largest payload of a control frame (RFC 6455, 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest client frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// Largest server frame header: 2 bytes and 8 bytes of extended length (no mask).
pub const MAX_SERVER_HEADER: usize = 10;

/// A violation of the protocol by the client, or a message over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("continuation frame with no fragmented message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControlFrame,
    /// RFC 6455 5.2: the most significant bit of a 64-bit length must be 0, and a length
    /// must use the shortest of the three encodings.
    #[error("payload length with its most significant bit set or not in its shortest encoding")]
    BadLength,
    #[error("frame over the size limit")]
    FrameTooBig,
    #[error("message over the size limit")]
    MessageTooBig,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("close frame with a 1-byte payload")]
    CloseTooShort,
    #[error("close frame with a code that may not be sent: {0}")]
    InvalidCloseCode(u16),
    #[error("close frame reason is not valid UTF-8")]
    CloseReasonUtf8,
}

impl FrameError {
    /// The close code that answers this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::FrameTooBig | FrameError::MessageTooBig => CLOSE_TOO_BIG,
            FrameError::InvalidUtf8 | FrameError::CloseReasonUtf8 => CLOSE_INVALID_PAYLOAD,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// The (short, static) close reason sent to the client.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::FrameTooBig | FrameError::MessageTooBig => "message too big",
            FrameError::InvalidUtf8 | FrameError::CloseReasonUtf8 => "invalid UTF-8",
            FrameError::Unmasked => "client frames must be masked",
            _ => "protocol error",
        }
    }
}

/// Size limits of the decoder (from `--max-frame-bytes` and `--max-message-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame.
    pub max_frame: usize,
    /// Largest message, all its fragments together.
    pub max_message: usize,
}

/// One parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    pub opcode: u8,
    /// The client's masking key.
    pub mask: [u8; 4],
    /// Declared payload length.
    pub len: u64,
    /// Bytes of the header itself (2..=14).
    pub header_len: usize,
}

impl Header {
    /// True for close, ping and pong.
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the header at the start of `buf`. `Ok(None)`: more bytes are needed. Errors are
/// reported as soon as the bytes that prove them are there (the first two bytes carry the
/// RSV bits, the opcode and the mask bit).
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        if let Some(&b0) = buf.first() {
            check_first_byte(b0)?;
        }
        return Ok(None);
    };
    check_first_byte(b0)?;
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let is_control = opcode & 0x8 != 0;
    let len7 = b1 & 0x7F;
    if is_control && (!fin || len7 > MAX_CONTROL_PAYLOAD as u8) {
        return Err(FrameError::BadControlFrame);
    }
    let (len, at) = match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([b[0], b[1]]);
            if len < 126 {
                return Err(FrameError::BadLength);
            }
            (u64::from(len), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 || len <= u64::from(u16::MAX) {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len,
        header_len: at + 4,
    }))
}

fn check_first_byte(b0: u8) -> Result<(), FrameError> {
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    match b0 & 0x0F {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => Ok(()),
        other => Err(FrameError::UnknownOpcode(other)),
    }
}

/// XORs `data` with the masking key (the same call masks and unmasks).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut v = [0u8; 4];
        v.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(v) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// What one decoded frame amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete text message: borrowed from the input when it came in one frame,
    /// owned when it was reassembled from fragments.
    Text(Cow<'a, str>),
    /// A complete binary message, borrowed or reassembled like a text one (the hub refuses
    /// binary messages; the echo used for conformance sends them back).
    Binary(Cow<'a, [u8]>),
    /// A ping with its payload (to echo in the pong).
    Ping(&'a [u8]),
    Pong,
    /// A close frame, with its code and reason when it has a payload.
    Close(Option<(u16, &'a str)>),
    /// A non-final fragment was taken in; nothing to hand over yet.
    Fragment,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
enum Partial {
    /// Text fragments so far, and how many leading bytes are known to be valid UTF-8.
    Text { data: Vec<u8>, checked: usize },
    /// Binary fragments so far.
    Binary { data: Vec<u8> },
}

/// Decodes client frames one at a time; holds a fragmented message between its frames
/// (nothing while no fragmented message is open).
#[derive(Debug, Default)]
pub struct Decoder {
    /// The unfinished fragmented message, if any.
    partial: Option<Partial>,
}

impl Decoder {
    /// True while a fragmented message is unfinished.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the frame at the start of `buf`, unmasking its payload in place. Returns
    /// the frame and the bytes it took, or `Ok(None)` when `buf` does not hold a complete
    /// frame yet. A header over the limits is refused before its payload arrives.
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Option<(Decoded<'a>, usize)>, FrameError> {
        let Some(h) = parse_header(buf)? else {
            return Ok(None);
        };
        self.check(&h, limits)?;
        // `check` bounded `len` by the limits, which are `usize`.
        let len = usize::try_from(h.len).map_err(|_| FrameError::FrameTooBig)?;
        let total = h.header_len + len;
        if buf.len() < total {
            return Ok(None);
        }
        let payload = &mut buf[h.header_len..total];
        apply_mask(payload, h.mask);
        let payload: &'a [u8] = payload;
        let decoded = match h.opcode {
            OP_PING => Decoded::Ping(payload),
            OP_PONG => Decoded::Pong,
            OP_CLOSE => Decoded::Close(close_payload(payload)?),
            OP_TEXT if h.fin => match std::str::from_utf8(payload) {
                Ok(text) => Decoded::Text(Cow::Borrowed(text)),
                Err(_) => return Err(FrameError::InvalidUtf8),
            },
            OP_TEXT => {
                let mut data = Vec::with_capacity(len);
                data.extend_from_slice(payload);
                let checked = check_utf8_prefix(&data, 0)?;
                self.partial = Some(Partial::Text { data, checked });
                Decoded::Fragment
            }
            OP_BINARY if h.fin => Decoded::Binary(Cow::Borrowed(payload)),
            OP_BINARY => {
                self.partial = Some(Partial::Binary {
                    data: payload.to_vec(),
                });
                Decoded::Fragment
            }
            // OP_CONTINUATION: `check` proved a message is open.
            _ => match self.partial.take() {
                Some(Partial::Text { mut data, checked }) => {
                    data.extend_from_slice(payload);
                    if h.fin {
                        let text = String::from_utf8(data).map_err(|_| FrameError::InvalidUtf8)?;
                        Decoded::Text(Cow::Owned(text))
                    } else {
                        let checked = check_utf8_prefix(&data, checked)?;
                        self.partial = Some(Partial::Text { data, checked });
                        Decoded::Fragment
                    }
                }
                Some(Partial::Binary { mut data }) => {
                    data.extend_from_slice(payload);
                    if h.fin {
                        Decoded::Binary(Cow::Owned(data))
                    } else {
                        self.partial = Some(Partial::Binary { data });
                        Decoded::Fragment
                    }
                }
                None => return Err(FrameError::UnexpectedContinuation),
            },
        };
        Ok(Some((decoded, total)))
    }

    /// Checks a header against the open message and the limits.
    fn check(&self, h: &Header, limits: &Limits) -> Result<(), FrameError> {
        if h.is_control() {
            return Ok(());
        }
        if h.len > limits.max_frame as u64 {
            return Err(FrameError::FrameTooBig);
        }
        let so_far = match (&self.partial, h.opcode) {
            (None, OP_CONTINUATION) => return Err(FrameError::UnexpectedContinuation),
            (Some(_), OP_TEXT | OP_BINARY) => return Err(FrameError::ExpectedContinuation),
            (None, _) => 0,
            (Some(Partial::Text { data, .. }), _) => data.len(),
            (Some(Partial::Binary { data }), _) => data.len(),
        };
        if (so_far as u64).saturating_add(h.len) > limits.max_message as u64 {
            return Err(FrameError::MessageTooBig);
        }
        Ok(())
    }
}

/// Checks the UTF-8 of `data` from `from` (a char boundary); an incomplete sequence at the
/// end is fine (the next fragment completes it). Returns the new checked length.
fn check_utf8_prefix(data: &[u8], from: usize) -> Result<usize, FrameError> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() => Ok(from + e.valid_up_to()),
        Err(_) => Err(FrameError::InvalidUtf8),
    }
}

/// Validates a close frame's payload: empty, or a code a peer may send and a UTF-8 reason.
fn close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(FrameError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::CloseReasonUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Close codes a peer may put on the wire (RFC 6455 7.4 and the IANA registry): 1004-1006
/// and 1015 are reserved, below 1000 and 1016-2999 unassigned, 5000 and up invalid.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Writes a final, unmasked frame header for `len` payload bytes; returns its length.
pub fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    out[0] = 0x80 | (opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len16) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends one complete server frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let n = encode_header(opcode, payload.len(), &mut header);
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut at a char boundary to fit the 125
/// bytes of a control frame).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, OP_CLOSE, &payload[..2 + end]);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
