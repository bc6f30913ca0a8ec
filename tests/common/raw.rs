//! A raw WebSocket client over plain TCP, for what tungstenite clients cannot produce:
//! hand-made handshakes, fragments, unmasked or invalid frames, bare headers declaring
//! huge lengths. Frames from the hub are parsed by hand (never masked, always final).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestHub, PATIENCE};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The usual headers of an upgrade request (without the request line and `Host`).
pub const UPGRADE_HEADERS: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// A masked client frame (`fin`, `opcode`, `payload`) with a fixed non-zero mask.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = client_header(fin, opcode, payload.len() as u64, Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A client frame header declaring `len`, masked with `mask` when given.
pub fn client_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 | opcode } else { opcode }];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        h.push(bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(bit | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(bit | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        h.extend_from_slice(&m);
    }
    h
}

/// One frame from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (`None` for an empty one).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.opcode, OP_TEXT, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("JSON text frame")
    }
}

/// A raw client socket.
pub struct RawWs {
    pub tcp: TcpStream,
    /// Bytes received and not parsed yet.
    buf: Vec<u8>,
}

/// The answer to a hand-made handshake: status line code and the head's text.
pub struct Answer {
    pub status: u16,
    pub head: String,
    /// The socket, when upgraded.
    pub ws: Option<RawWs>,
}

impl Answer {
    /// The value of header `name` in the answer (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

impl RawWs {
    /// Sends `GET path` with `headers` and reads the answer head (and the body of a
    /// refusal, up to the connection's end or a short wait).
    pub async fn handshake(hub: &TestHub, path: &str, headers: &[(&str, &str)]) -> Answer {
        let host = hub.addr.to_string();
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        RawWs::handshake_exactly(hub, path, &all).await
    }

    /// Sends `GET path` with exactly `headers` (no `Host` unless given) and reads the answer
    /// as [`RawWs::handshake`] does.
    pub async fn handshake_exactly(hub: &TestHub, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.expect("send request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(PATIENCE, tcp.read(&mut chunk))
                .await
                .expect("answer in time")
                .expect("read answer");
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line: {head}"));
        let rest = buf[end..].to_vec();
        let ws = (status == 101).then(|| RawWs { tcp, buf: rest });
        Answer { status, head, ws }
    }

    /// Opens a socket with the usual headers; reads and returns its `hello`.
    pub async fn connect(hub: &TestHub, path: &str) -> (RawWs, serde_json::Value) {
        let answer = RawWs::handshake(hub, path, &UPGRADE_HEADERS).await;
        assert_eq!(answer.status, 101, "{}", answer.head);
        assert_eq!(
            answer.header("sec-websocket-accept").as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "RFC 6455 example key"
        );
        let mut ws = answer.ws.expect("upgraded");
        let hello = ws.next_frame().await.expect("hello").json();
        assert_eq!(hello["type"], "hello", "{hello}");
        (ws, hello)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("raw write");
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&client_frame(fin, opcode, payload)).await;
    }

    /// The next frame from the hub, or `None` once the hub closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(PATIENCE, self.tcp.read(&mut chunk))
                .await
                .expect("a frame in time");
            match n {
                Ok(0) | Err(_) => {
                    assert!(self.buf.is_empty(), "connection ended mid-frame");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next text frame as JSON, skipping control frames.
    pub async fn next_json(&mut self) -> serde_json::Value {
        loop {
            let f = self.next_frame().await.expect("socket open");
            match f.opcode {
                OP_TEXT => return f.json(),
                OP_PING | OP_PONG => continue,
                _ => panic!("unexpected frame {f:?}"),
            }
        }
    }

    /// Reads until the hub's close frame (text frames are skipped); returns its code, then
    /// checks the hub ends the TCP connection.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            let f = self
                .next_frame()
                .await
                .expect("a close frame before the end");
            if f.opcode == OP_CLOSE {
                let code = f.close_code();
                assert_eq!(
                    self.next_frame().await,
                    None,
                    "nothing after the close frame"
                );
                return code;
            }
        }
    }
}

/// Parses one server frame (unmasked, FIN and RSV as sent) from `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    assert_eq!(b0 & 0x70, 0, "no RSV bits");
    let (len, at) = match b1 & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let b = buf.get(2..10)?;
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            (u64::from_be_bytes(be) as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            payload,
        },
        at + len,
    ))
}
