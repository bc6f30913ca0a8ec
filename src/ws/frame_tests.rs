//! Tests of the frame codec: every violation and its close code, limits checked on the
//! header alone, and a property: any valid stream of client frames, cut anywhere, decodes
//! to the same messages.

use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_frame: 64 * 1024,
    max_message: 64 * 1024,
};

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let mut masked = payload.to_vec();
    apply_mask(&mut masked, mask);
    out.extend_from_slice(&masked);
    out
}

/// A header alone declaring `len` (no payload follows).
fn header_only(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

/// What a decoded stream amounts to, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
}

/// Feeds `chunks` one after the other as a socket would (a buffer of unparsed bytes),
/// collecting messages until the stream ends or fails.
fn feed(chunks: &[&[u8]], limits: &Limits) -> (Vec<Got>, Result<(), FrameError>) {
    let mut decoder = Decoder::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf, limits) {
                Ok(Some((d, used))) => {
                    match d {
                        Decoded::Text(t) => got.push(Got::Text(t.into_owned())),
                        Decoded::Binary(b) => got.push(Got::Binary(b.into_owned())),
                        Decoded::Ping(p) => got.push(Got::Ping(p.to_vec())),
                        Decoded::Pong => got.push(Got::Pong),
                        Decoded::Close(c) => {
                            got.push(Got::Close(c.map(|(code, r)| (code, r.to_string()))))
                        }
                        Decoded::Fragment => {}
                    }
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (got, Err(e)),
            }
        }
    }
    (got, Ok(()))
}

fn one(bytes: &[u8]) -> (Vec<Got>, Result<(), FrameError>) {
    feed(&[bytes], &LIMITS)
}

fn err_code(bytes: &[u8]) -> u16 {
    match one(bytes).1 {
        Err(e) => e.close_code(),
        Ok(()) => panic!("accepted {bytes:?}"),
    }
}

const M: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

#[test]
fn a_single_text_frame_is_unmasked_and_borrowed() {
    let mut bytes = client_frame(true, OP_TEXT, b"hello", M);
    let mut d = Decoder::default();
    let (msg, used) = d
        .decode(&mut bytes, &LIMITS)
        .expect("valid")
        .expect("complete");
    assert_eq!(used, 2 + 4 + 5);
    assert!(matches!(msg, Decoded::Text(Cow::Borrowed("hello"))));
}

#[test]
fn lengths_of_7_16_and_64_bits_decode() {
    for len in [0usize, 125, 126, 65535, 65536] {
        let text = "a".repeat(len);
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        let bytes = client_frame(true, OP_TEXT, text.as_bytes(), M);
        let (got, end) = feed(&[&bytes], &limits);
        assert_eq!(end, Ok(()));
        assert_eq!(got, vec![Got::Text(text)], "len {len}");
    }
}

#[test]
fn fragments_reassemble_with_control_frames_between_them() {
    let mut s = client_frame(false, OP_TEXT, "héllo ".as_bytes(), M);
    s.extend(client_frame(true, OP_PING, b"p1", M));
    // The é of "wörld" cut between two fragments.
    let word = "wörld".as_bytes();
    s.extend(client_frame(false, OP_CONTINUATION, &word[..2], M));
    s.extend(client_frame(true, OP_PONG, b"", M));
    s.extend(client_frame(true, OP_CONTINUATION, &word[2..], M));
    s.extend(client_frame(false, OP_BINARY, &[1, 2], M));
    s.extend(client_frame(true, OP_CONTINUATION, &[3], M));
    let (got, end) = one(&s);
    assert_eq!(end, Ok(()));
    assert_eq!(
        got,
        vec![
            Got::Ping(b"p1".to_vec()),
            Got::Pong,
            Got::Text("héllo wörld".into()),
            Got::Binary(vec![1, 2, 3])
        ]
    );
}

#[test]
fn incomplete_input_asks_for_more_and_decodes_nothing() {
    let bytes = client_frame(true, OP_TEXT, b"hello", M);
    for cut in 0..bytes.len() {
        let mut part = bytes[..cut].to_vec();
        assert_eq!(Decoder::default().decode(&mut part, &LIMITS), Ok(None));
    }
}

#[test]
fn close_frames_carry_a_valid_code_and_utf8_reason() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("au revoir é".as_bytes());
    assert_eq!(
        one(&client_frame(true, OP_CLOSE, &payload, M)).0,
        vec![Got::Close(Some((1000, "au revoir é".into())))]
    );
    assert_eq!(
        one(&client_frame(true, OP_CLOSE, b"", M)).0,
        vec![Got::Close(None)]
    );
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
        let f = client_frame(true, OP_CLOSE, &code.to_be_bytes(), M);
        assert_eq!(one(&f).0, vec![Got::Close(Some((code, String::new())))]);
    }
}

#[test]
fn every_violation_has_its_close_code() {
    // Unmasked client frame.
    assert_eq!(err_code(&[0x81, 0x02, b'h', b'i']), 1002);
    // RSV1, RSV2, RSV3 without an extension.
    for rsv in [0x40, 0x20, 0x10] {
        assert_eq!(err_code(&[0x81 | rsv]), 1002, "rsv {rsv:#x}");
    }
    // Reserved opcodes.
    for op in [0x3u8, 0x7, 0xB, 0xF] {
        assert_eq!(
            one(&[0x80 | op]).1,
            Err(FrameError::UnknownOpcode(op)),
            "{op}"
        );
    }
    // Continuation with nothing to continue.
    assert_eq!(
        one(&client_frame(true, OP_CONTINUATION, b"x", M)).1,
        Err(FrameError::UnexpectedContinuation)
    );
    // A new text frame while a fragmented message is open.
    let mut s = client_frame(false, OP_TEXT, b"a", M);
    s.extend(client_frame(true, OP_TEXT, b"b", M));
    assert_eq!(one(&s).1, Err(FrameError::ExpectedContinuation));
    assert_eq!(err_code(&s), 1002);
    // Control frames: fragmented, or longer than 125 bytes.
    assert_eq!(
        one(&client_frame(false, OP_PING, b"x", M)).1,
        Err(FrameError::BadControlFrame)
    );
    assert_eq!(
        one(&client_frame(true, OP_PONG, &[0; 126], M)).1,
        Err(FrameError::BadControlFrame)
    );
    // 64-bit length with the top bit set.
    assert_eq!(
        one(&header_only(0x81, 1 << 63)).1,
        Err(FrameError::BadLength)
    );
    // Lengths not in their shortest encoding: 5 bytes in 16 bits, 65,535 bytes in 64 bits.
    assert_eq!(
        one(&[
            0x81,
            0x80 | 126,
            0,
            5,
            1,
            2,
            3,
            4,
            b'h',
            b'e',
            b'l',
            b'l',
            b'o'
        ])
        .1,
        Err(FrameError::BadLength)
    );
    assert_eq!(
        one(&header_only(0x81, 65_535)).1,
        Err(FrameError::BadLength)
    );
    // Invalid UTF-8: in one frame, in a fragment (found before the message ends), cut at
    // the end of the message.
    assert_eq!(
        err_code(&client_frame(true, OP_TEXT, &[0xC3, 0x28], M)),
        1007
    );
    let mut s = client_frame(false, OP_TEXT, &[b'a', 0xFF], M);
    s.extend(client_frame(false, OP_CONTINUATION, b"b", M));
    assert_eq!(one(&s).1, Err(FrameError::InvalidUtf8));
    let mut s = client_frame(false, OP_TEXT, b"a", M);
    s.extend(client_frame(true, OP_CONTINUATION, &[0xC3], M));
    assert_eq!(err_code(&s), 1007);
    // Close payloads: 1 byte, codes that may not be sent, a reason that is not UTF-8.
    assert_eq!(err_code(&client_frame(true, OP_CLOSE, &[3], M)), 1002);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        assert_eq!(
            one(&client_frame(true, OP_CLOSE, &code.to_be_bytes(), M)).1,
            Err(FrameError::InvalidCloseCode(code))
        );
    }
    assert_eq!(
        err_code(&client_frame(true, OP_CLOSE, &[0x03, 0xE8, 0xFF], M)),
        1007
    );
}

#[test]
fn oversized_frames_and_messages_are_refused_on_their_header() {
    // 1 GiB declared: refused from the 14 header bytes, no payload needed.
    let (_, end) = one(&header_only(0x81, 1 << 30));
    assert_eq!(end, Err(FrameError::FrameTooBig));
    assert_eq!(end.unwrap_err().close_code(), 1009);
    // The largest legal length, on a binary frame.
    assert_eq!(err_code(&header_only(0x82, i64::MAX as u64)), 1009);
    // One byte over the frame limit, with a larger message limit.
    let limits = Limits {
        max_frame: 1000,
        max_message: 4000,
    };
    let mut h = client_frame(true, OP_TEXT, &[b'a'; 1001], M);
    h.truncate(8);
    assert_eq!(feed(&[&h], &limits).1, Err(FrameError::FrameTooBig));
    // Fragments each within the frame limit, over the message limit: refused on the header
    // of the fragment that passes it.
    let mut s = Vec::new();
    for i in 0..4 {
        let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        s.extend(client_frame(false, op, &[b'a'; 1000], M));
    }
    let mut last = client_frame(true, OP_CONTINUATION, &[b'a'; 1], M);
    last.truncate(6);
    s.extend(last);
    assert_eq!(feed(&[&s], &limits).1, Err(FrameError::MessageTooBig));
    // Exactly at the limits: accepted.
    let mut s = Vec::new();
    for i in 0..4 {
        let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        s.extend(client_frame(i == 3, op, &[b'a'; 1000], M));
    }
    assert_eq!(feed(&[&s], &limits).0, vec![Got::Text("a".repeat(4000))]);
}

#[test]
fn server_frames_encode_with_the_shortest_length() {
    for (len, header_len) in [
        (0usize, 2usize),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
    ] {
        let payload = vec![b'x'; len];
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, &payload);
        assert_eq!(out.len(), header_len + len);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1] & 0x80, 0, "server frames are not masked");
    }
    let mut out = Vec::new();
    encode_close(&mut out, 1009, &"é".repeat(100));
    assert_eq!(out[0], 0x88);
    let payload_len = usize::from(out[1]);
    assert!(payload_len <= 125);
    assert_eq!(&out[2..4], &1009u16.to_be_bytes());
    assert!(
        std::str::from_utf8(&out[4..]).is_ok(),
        "cut at a char boundary"
    );
}

/// One message of a generated client stream.
#[derive(Debug, Clone)]
enum Gen {
    /// Text, cut into fragments at these byte offsets (anywhere, even inside a char), with
    /// a ping sent between fragments when the flag is set.
    Text(String, Vec<usize>, bool),
    Binary(Vec<u8>, Vec<usize>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn gen_message() -> impl Strategy<Value = Gen> {
    prop_oneof![
        4 => (".{0,300}", proptest::collection::vec(0usize..400, 0..4), any::<bool>())
            .prop_map(|(s, cuts, ping)| Gen::Text(s, cuts, ping)),
        1 => (proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(0usize..300, 0..3))
            .prop_map(|(b, cuts)| Gen::Binary(b, cuts)),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Gen::Ping),
        1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Gen::Pong),
    ]
}

/// Encodes a generated stream; returns the bytes and the messages they must decode to.
fn encode_stream(msgs: &[Gen], mask: [u8; 4]) -> (Vec<u8>, Vec<Got>) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    let fragments = |bytes: &mut Vec<u8>,
                     want: &mut Vec<Got>,
                     op: u8,
                     data: &[u8],
                     cuts: &[usize],
                     ping: bool| {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        let mut first = true;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let last = cut == data.len();
            let code = if first { op } else { OP_CONTINUATION };
            bytes.extend(client_frame(last, code, &data[start..cut], mask));
            if ping && !last {
                bytes.extend(client_frame(true, OP_PING, b"mid", mask));
                want.push(Got::Ping(b"mid".to_vec()));
            }
            first = false;
            start = cut;
            if last {
                break;
            }
        }
    };
    for m in msgs {
        match m {
            Gen::Text(s, cuts, ping) => {
                fragments(&mut bytes, &mut want, OP_TEXT, s.as_bytes(), cuts, *ping);
                want.push(Got::Text(s.clone()));
            }
            Gen::Binary(b, cuts) => {
                fragments(&mut bytes, &mut want, OP_BINARY, b, cuts, false);
                want.push(Got::Binary(b.clone()));
            }
            Gen::Ping(p) => {
                bytes.extend(client_frame(true, OP_PING, p, mask));
                want.push(Got::Ping(p.clone()));
            }
            Gen::Pong(p) => {
                bytes.extend(client_frame(true, OP_PONG, p, mask));
                want.push(Got::Pong);
            }
        }
    }
    (bytes, want)
}

/// Cuts `bytes` at the given offsets.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        out.push(&bytes[start..c]);
        start = c;
    }
    out.push(&bytes[start..]);
    out
}

/// Protocol violations appended to a valid stream, with the close code each must get.
fn violation(kind: u8) -> (Vec<u8>, u16) {
    match kind % 9 {
        0 => (vec![0x81, 0x03, b'a', b'b', b'c'], 1002),
        1 => (client_frame(true, OP_TEXT | 0x40, b"x", M), 1002),
        2 => (client_frame(true, 0x3, b"x", M), 1002),
        3 => (client_frame(true, OP_CONTINUATION, b"x", M), 1002),
        4 => (client_frame(true, OP_TEXT, &[0xED, 0xA0, 0x80], M), 1007),
        5 => (header_only(0x81, 1 << 30), 1009),
        6 => (client_frame(true, OP_PING, &[0; 126], M), 1002),
        7 => (
            client_frame(true, OP_CLOSE, &1005u16.to_be_bytes(), M),
            1002,
        ),
        _ => {
            let mut s = client_frame(false, OP_TEXT, b"a", M);
            s.extend(client_frame(true, OP_BINARY, b"b", M));
            (s, 1002)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_valid_stream_cut_anywhere_decodes_to_the_same_messages(
        msgs in proptest::collection::vec(gen_message(), 0..12),
        mask in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let (bytes, want) = encode_stream(&msgs, mask);
        let (got, end) = feed(&split(&bytes, &cuts), &LIMITS);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn every_violation_after_valid_frames_gets_its_close_code(
        msgs in proptest::collection::vec(gen_message(), 0..6),
        kind in any::<u8>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let (mut bytes, want) = encode_stream(&msgs, M);
        let (bad, code) = violation(kind);
        bytes.extend(bad);
        let (got, end) = feed(&split(&bytes, &cuts), &LIMITS);
        prop_assert_eq!(got, want, "everything before the violation is delivered");
        prop_assert_eq!(end.map_err(|e| e.close_code()), Err(code));
    }
}
