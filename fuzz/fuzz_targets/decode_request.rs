//! The decoder of every surface (`protocol::decode` into the agent, admin and telephony
//! messages, and the checks a socket applies after it) on arbitrary bytes taken as text:
//! never a panic, and every refusal renders as a valid reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_hub::protocol::{
    bad_message, decode, peek_ref, AdminMessage, AgentMessage, BadMessage, TelephonyMessage,
};

fn refused(bad: &BadMessage) {
    let reply = bad_message(bad);
    assert!(
        serde_json::from_str::<serde_json::Value>(&reply).is_ok(),
        "{reply}"
    );
}

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they reach the decoder (the socket checks it);
    // the lossy conversion still feeds every byte pattern in.
    let text = match std::str::from_utf8(data) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(data),
    };
    let _ = peek_ref(&text);
    match decode::<AgentMessage>(&text) {
        Ok(e) => {
            assert!(text.trim_start().starts_with('{'), "only objects decode");
            if let AgentMessage::SetStatus(change) = &e.message {
                let _ = change.checked();
            }
        }
        Err(bad) => refused(&bad),
    }
    match decode::<AdminMessage>(&text) {
        Ok(e) => {
            if let AdminMessage::SetAgentStatus { change, .. } = &e.message {
                let _ = change.checked();
            }
        }
        Err(bad) => refused(&bad),
    }
    match decode::<TelephonyMessage>(&text) {
        Ok(e) => {
            let _ = e.message.check();
        }
        Err(bad) => refused(&bad),
    }
});
