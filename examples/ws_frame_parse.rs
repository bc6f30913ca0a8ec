//! Measures the hub's hand-written WebSocket frame-header parser against one built on
//! tungstenite's public frame types (`FrameHeader::parse`, `OpCode`) with the checks the
//! hub needs on top, and the hub's close-code check against `CloseCode::is_allowed`.
//! The figures and the decision are in the module doc of `src/ws/frame.rs`.
//!
//! ```text
//! cargo build --release --example ws_frame_parse
//! target/release/examples/ws_frame_parse                 # wall time, both parsers
//! # repeatable instruction counts (subtract the `none` run, the loop alone):
//! valgrind --tool=callgrind target/release/examples/ws_frame_parse hand 1000000
//! valgrind --tool=callgrind target/release/examples/ws_frame_parse tungstenite 1000000
//! valgrind --tool=callgrind target/release/examples/ws_frame_parse tungstenite-bare 1000000
//! valgrind --tool=callgrind target/release/examples/ws_frame_parse none 1000000
//! # the close-code checks: hand-close, tungstenite-close, none-close
//! ```
//!
//! Before measuring, both parsers are checked to agree on every header of the workload, on
//! invalid headers and on every prefix of each (so the comparison is of equal work).

use presence_hub::ws_echo::frame::{close_code_allowed, parse_header, FrameError, Header};
use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// A client frame header (masked) for `opcode` and `len`, with the shortest length encoding.
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    h
}

/// The hub's workload: mostly small text messages, some pings and pongs, a few medium and
/// large frames and fragments.
fn workload() -> Vec<Vec<u8>> {
    let mut w = Vec::new();
    for len in [20u64, 60, 90, 120, 40, 75] {
        w.push(header(true, 0x1, len));
    }
    w.push(header(true, 0x9, 0));
    w.push(header(true, 0xA, 4));
    w.push(header(true, 0x1, 300));
    w.push(header(false, 0x1, 1000));
    w.push(header(true, 0x0, 70_000));
    w.push(header(true, 0x8, 2));
    w
}

/// Headers that must be refused, and how.
fn invalid() -> Vec<Vec<u8>> {
    let mut unmasked = header(true, 0x1, 5);
    unmasked[1] &= 0x7F;
    let mut rsv = header(true, 0x1, 5);
    rsv[0] |= 0x40;
    let mut long_126 = vec![0x81, 0x80 | 126, 0, 100];
    long_126.extend_from_slice(&[1, 2, 3, 4]);
    let mut long_127 = vec![0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF];
    long_127.extend_from_slice(&[1, 2, 3, 4]);
    let mut msb = vec![0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    msb.extend_from_slice(&[1, 2, 3, 4]);
    vec![
        unmasked,
        rsv,
        header(true, 0x3, 0),
        header(true, 0xB, 0),
        header(false, 0x9, 0),
        header(true, 0x9, 126),
        long_126,
        long_127,
        msb,
    ]
}

/// The same parser built on tungstenite's `FrameHeader::parse` and `OpCode`: what it does
/// not check (mask required, control frames final and short, shortest length encoding,
/// the 64-bit length's top bit, errors as soon as the first byte proves them) is added.
fn parse_tungstenite(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    // Fail fast on the first byte, as the hub does (tungstenite reports a bad opcode only
    // once the whole header is there, and leaves RSV bits to the caller).
    if let Some(&b0) = buf.first() {
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        if let OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) =
            OpCode::from(b0 & 0x0F)
        {
            return Err(FrameError::UnknownOpcode(op));
        }
    }
    if let Some(&b1) = buf.get(1) {
        if b1 & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        if buf[0] & 0x08 != 0 && (buf[0] & 0x80 == 0 || b1 & 0x7F > 125) {
            return Err(FrameError::BadControlFrame);
        }
    }
    let mut cursor = Cursor::new(buf);
    let (h, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError::UnknownOpcode(buf[0] & 0x0F)),
    };
    let header_len = cursor.position() as usize;
    let shortest = match header_len {
        8 => len >= 126,
        14 => len > u64::from(u16::MAX) && len >> 63 == 0,
        _ => true,
    };
    if !shortest {
        return Err(FrameError::BadLength);
    }
    let Some(mask) = h.mask else {
        return Err(FrameError::Unmasked);
    };
    Ok(Some(Header {
        fin: h.is_final,
        opcode: u8::from(h.opcode),
        mask,
        len,
        header_len,
    }))
}

fn check_agreement(headers: &[Vec<u8>]) {
    for h in headers {
        for cut in 0..=h.len() {
            let part = &h[..cut];
            let (hand, tungstenite) = (parse_header(part), parse_tungstenite(part));
            // The hand-written parser refuses a length not in its shortest encoding as soon
            // as the length bytes are there; on tungstenite's, once the mask is there too.
            let later = hand == Err(FrameError::BadLength) && tungstenite == Ok(None);
            assert!(
                hand == tungstenite || later,
                "header {h:02x?} cut at {cut}: {hand:?} {tungstenite:?}"
            );
        }
    }
    for code in 0..=u16::MAX {
        let tungstenite = CloseCode::from(code).is_allowed();
        // 1014 (Bad Gateway) is registered with IANA; tungstenite 0.29 refuses it.
        if code != 1014 {
            assert_eq!(close_code_allowed(code), tungstenite, "close code {code}");
        }
    }
}

fn run(mode: &str, headers: &[Vec<u8>], rounds: usize) -> u64 {
    let mut sum = 0u64;
    for _ in 0..rounds {
        for h in headers {
            let h = black_box(h.as_slice());
            let parsed = match mode {
                "hand" => parse_header(h),
                "tungstenite" => parse_tungstenite(h),
                // tungstenite's parse alone, none of the hub's checks (a lower bound).
                "tungstenite-bare" => match FrameHeader::parse(&mut Cursor::new(h)) {
                    Ok(Some((f, len))) => Ok(Some(Header {
                        fin: f.is_final,
                        opcode: 0,
                        mask: f.mask.unwrap_or_default(),
                        len,
                        header_len: 0,
                    })),
                    _ => Ok(None),
                },
                _ => Ok(Some(Header {
                    fin: true,
                    opcode: h[0],
                    mask: [0; 4],
                    len: h.len() as u64,
                    header_len: 0,
                })),
            };
            if let Ok(Some(p)) = black_box(parsed) {
                sum = sum.wrapping_add(p.len).wrapping_add(p.header_len as u64);
            }
        }
    }
    sum
}

fn run_close(mode: &str, rounds: usize) -> u64 {
    let mut n = 0u64;
    for _ in 0..rounds {
        for code in [
            1000u16, 1001, 1008, 3000, 4000, 1005, 999, 5000, 1011, 1002, 1009, 4999,
        ] {
            let code = black_box(code);
            let ok = match mode {
                "hand-close" => close_code_allowed(code),
                "tungstenite-close" => CloseCode::from(code).is_allowed(),
                _ => code > 0,
            };
            n += u64::from(black_box(ok));
        }
    }
    n
}

fn main() {
    let headers = workload();
    let mut all = headers.clone();
    all.extend(invalid());
    check_agreement(&all);
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next().and_then(|n| n.parse().ok())) {
        (Some(mode), Some(rounds)) if mode.ends_with("close") => {
            println!("{}", run_close(&mode, rounds));
        }
        (Some(mode), Some(rounds)) => {
            println!("{}", run(&mode, &headers, rounds));
        }
        _ => {
            let rounds = 5_000_000;
            let parses = (rounds * headers.len()) as f64;
            let modes = ["none", "hand", "tungstenite", "tungstenite-bare"];
            for mode in modes.iter().chain(&modes) {
                let t = Instant::now();
                let sum = run(mode, &headers, rounds);
                let ns = t.elapsed().as_nanos() as f64 / parses;
                println!("{mode:>12}: {ns:.2} ns per header (checksum {sum})");
            }
        }
    }
}
