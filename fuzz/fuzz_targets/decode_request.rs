//! `Request::decode` (and every field check a socket applies after it) on arbitrary
//! bytes taken as text: never a panic, and every refusal renders as a valid reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_hub::protocol::{bad_message_reply, peek_ref, Request};

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they reach the decoder (tungstenite checks it);
    // the lossy conversion still feeds every byte pattern in.
    let text = match std::str::from_utf8(data) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(data),
    };
    let _ = peek_ref(&text);
    match Request::decode(&text) {
        Ok(req) => {
            assert!(text.trim_start().starts_with('{'), "only objects decode");
            let _ = req.require_call_id();
            let _ = req.require_agent_id();
            let _ = req.checked_note();
            let _ = req.check_text_fields();
            let reply = bad_message_reply(&req.bad("x"));
            assert!(
                serde_json::from_str::<serde_json::Value>(&reply).is_ok(),
                "{reply}"
            );
        }
        Err(bad) => {
            let reply = bad_message_reply(&bad);
            assert!(
                serde_json::from_str::<serde_json::Value>(&reply).is_ok(),
                "{reply}"
            );
        }
    }
});
