//! The hub's WebSocket frame decoder (`ws::frame::Decoder`) on arbitrary client bytes, cut
//! into chunks at fuzzer-chosen points as the socket would receive them: never a panic,
//! never a message or frame over the limits, every text message valid UTF-8, every error a
//! close code of the protocol (1002, 1007, 1009), and nothing decoded after an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_hub::ws::frame::{Decoded, Decoder, Limits};

/// Small limits so the fuzzer reaches the size checks quickly.
const LIMITS: Limits = Limits {
    max_frame: 300,
    max_message: 500,
};

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, cuts) = input;
    let mut decoder = Decoder::default();
    // What the socket keeps between reads: the bytes of an incomplete frame.
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut cuts = cuts.into_iter();
    while at < data.len() {
        let step = usize::from(cuts.next().unwrap_or(u8::MAX)).max(1);
        let end = (at + step).min(data.len());
        pending.extend_from_slice(&data[at..end]);
        at = end;
        loop {
            let available = pending.len();
            match decoder.decode(&mut pending, &LIMITS) {
                Ok(None) => break,
                Ok(Some((decoded, used))) => {
                    assert!(used > 0 && used <= available);
                    match decoded {
                        Decoded::Text(text) => assert!(text.len() <= LIMITS.max_message),
                        Decoded::Binary(data) => assert!(data.len() <= LIMITS.max_message),
                        Decoded::Ping(payload) => assert!(payload.len() <= 125),
                        Decoded::Close(Some((code, reason))) => {
                            assert!(code >= 1000);
                            assert!(reason.len() <= 123);
                        }
                        Decoded::Close(None)
                        | Decoded::Pong
                        | Decoded::Fragment => {}
                    }
                    pending.drain(..used);
                }
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e}");
                    assert!(!e.reason().is_empty());
                    // The socket closes: nothing after an error is read.
                    return;
                }
            }
        }
    }
});
