//! Property tests of the message decoder (the CI side of `fuzz/`): arbitrary strings and
//! arbitrary JSON-ish messages (the protocol's field names with values of any type, any
//! nesting, truncated or not) never make the decoder of any surface or the field checks
//! panic; every refusal renders as a valid `bad_message` reply carrying the `ref` when it
//! was readable, and its text never names a Rust type.

use presence_hub::protocol::{
    bad_message, decode, peek_ref, AdminMessage, AgentMessage, BadMessage, Envelope, Ref,
    TelephonyMessage,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const FIELDS: &[&str] = &[
    "type",
    "ref",
    "status",
    "note",
    "if_version",
    "call_id",
    "agent_id",
    "event_id",
    "from",
    "to",
    "ring_group",
    "ring_timeout_ms",
    "cause",
    "teams",
    "agents",
    "epoch",
    "seq",
    "x",
];

const TYPES: &[&str] = &[
    "ping",
    "set_status",
    "accept_call",
    "decline_call",
    "end_wrap_up",
    "logout",
    "subscribe",
    "resume",
    "unsubscribe",
    "set_agent_status",
    "logout_agent",
    "call_offered",
    "call_answered",
    "call_cancelled",
    "call_ended",
    "outbound_started",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,80}".prop_map(Value::String),
        "[a-z0-9_-]{0,70}".prop_map(Value::String),
        proptest::sample::select(TYPES).prop_map(|t| Value::String(t.to_string())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((proptest::sample::select(FIELDS), inner), 0..8).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

/// A message-shaped object: mostly the protocol's fields, a real type most of the time.
fn message() -> impl Strategy<Value = Value> {
    (
        proptest::option::weighted(
            0.8,
            prop_oneof![
                proptest::sample::select(TYPES).prop_map(|t| Value::String(t.to_string())),
                scalar(),
            ],
        ),
        prop::collection::vec((proptest::sample::select(FIELDS), json_value()), 0..10),
    )
        .prop_map(|(kind, fields)| {
            let mut m = Map::new();
            if let Some(kind) = kind {
                m.insert("type".into(), kind);
            }
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        })
}

/// Words of Rust's type vocabulary that must not reach a client.
const RUST_WORDS: &[&str] = &[
    "struct",
    "enum ",
    "untagged",
    "variant",
    "Envelope",
    "Message",
    "u64",
    "i64",
    "Ref",
    "FilterSpec",
    "StatusChange",
    "CallEvent",
    "CallOffer",
];

fn check_refusal(text: &str, bad: &BadMessage) {
    let reply: Value = serde_json::from_str(&bad_message(bad)).expect("valid JSON");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_message");
    let message = reply["message"].as_str().expect("a message");
    for word in RUST_WORDS {
        assert!(!message.contains(word), "{text:?} -> {message:?}");
    }
}

fn check_decoded<T>(text: &str, envelope: &Envelope<T>) {
    assert!(text.trim_start().starts_with('{'), "only objects decode");
    let bad = BadMessage {
        reply_ref: envelope.reply_ref.clone(),
        message: "x".into(),
    };
    let reply: Value = serde_json::from_str(&bad_message(&bad)).expect("valid JSON");
    if let Some(r) = &envelope.reply_ref {
        let echoed: Value = serde_json::from_str(&r.to_json()).expect("ref JSON");
        assert_eq!(reply["ref"], echoed);
    }
}

/// Decodes `text` as every surface would and exercises the checks a socket applies;
/// panics are the failure.
fn exercise(text: &str) {
    let _ = peek_ref(text);
    match decode::<AgentMessage>(text) {
        Ok(e) => {
            check_decoded(text, &e);
            if let AgentMessage::SetStatus(change) = &e.message {
                let _ = change.checked();
            }
        }
        Err(bad) => check_refusal(text, &bad),
    }
    match decode::<AdminMessage>(text) {
        Ok(e) => {
            check_decoded(text, &e);
            if let AdminMessage::SetAgentStatus { change, .. } = &e.message {
                let _ = change.checked();
            }
        }
        Err(bad) => check_refusal(text, &bad),
    }
    match decode::<TelephonyMessage>(text) {
        Ok(e) => {
            check_decoded(text, &e);
            let _ = e.message.check();
        }
        Err(bad) => check_refusal(text, &bad),
    }
}

/// The `ref` a refusal carries, for every surface.
fn refused_refs(text: &str) -> Vec<Option<Ref>> {
    [
        decode::<AgentMessage>(text).err(),
        decode::<AdminMessage>(text).err(),
        decode::<TelephonyMessage>(text).err(),
    ]
    .into_iter()
    .flatten()
    .map(|bad| bad.reply_ref)
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_strings_never_panic(text in ".{0,300}") {
        exercise(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn json_values_of_any_shape_never_panic(v in json_value()) {
        exercise(&v.to_string());
    }

    #[test]
    fn message_shaped_objects_never_panic_and_keep_a_readable_ref(v in message(), cut in any::<prop::sample::Index>()) {
        let text = v.to_string();
        exercise(&text);
        // A valid ref is always recovered, whatever else is wrong with the message.
        let expected: Option<Ref> = v.get("ref").and_then(|r| serde_json::from_value(r.clone()).ok());
        prop_assert_eq!(peek_ref(&text), expected.clone());
        for refused in refused_refs(&text) {
            prop_assert_eq!(&refused, &expected);
        }
        // Truncated anywhere (on a char boundary).
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        exercise(&text[..at]);
    }
}

#[test]
fn deeply_nested_input_is_refused_not_overflowed() {
    // serde_json's recursion limit (128) refuses this instead of overflowing the stack.
    for depth in [127, 128, 129, 10_000, 100_000] {
        let text = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        exercise(&text);
        let text = format!(r#"{{"type":"ping","x":{}"#, "{\"x\":".repeat(depth));
        exercise(&text);
    }
}
