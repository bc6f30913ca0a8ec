//! The wire protocol (docs/protocol.md) and the data types every layer shares.
//!
//! - `inbound`: one serde-tagged enum per surface, decoded once per frame;
//! - `outbound`: one builder per frame the hub sends;
//! - `published`: the published update (the hot `agent` event, serialized once);
//! - `latest`: an agent's latest state as the hub keeps it (compact, rendered on demand);
//! - `identity`: roles and the authenticated caller.

mod identity;
mod inbound;
mod latest;
mod outbound;
mod published;
mod text;

pub use identity::{Identity, Role, TOKEN_LEEWAY_SECS};
pub use inbound::{
    decode, describe, peek_ref, AdminMessage, AgentMessage, CallEvent, CallOffer, Envelope,
    FilterSpec, OutboundCall, StatusChange, StatusChangeError, TelephonyMessage,
};
pub use latest::LatestState;
pub use outbound::*;
pub use published::{render_agent_list, snapshot, sort_by_id, Published};

use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use text::Text;

/// The first reply to a telephony event, without its `ref`: what the event-id memory and
/// the durable store keep, so a repeat gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// `None` for `ok`, else the error code.
    pub error: Option<ErrorCode>,
    /// The reply's fields after `type` and `ref`, as a JSON object
    /// (`{"accepted":true,"agent":{..}}`).
    pub fields: Arc<str>,
}

impl StoredReply {
    /// A reply read back from the store. Rows written before replies were kept as objects
    /// hold the bare members (`"accepted":true,..`): those are wrapped into an object.
    pub fn from_stored(error: Option<ErrorCode>, fields: &str) -> StoredReply {
        let fields = if fields.trim_start().starts_with('{') {
            Arc::from(fields)
        } else {
            Arc::from(format!("{{{fields}}}"))
        };
        StoredReply { error, fields }
    }
}

/// Longest `note` accepted (docs/status-model.md: <= 64 chars).
pub const MAX_NOTE_CHARS: usize = 64;
/// Longest free-text call field (`from`, `to`, `ring_group`, `cause`, `event_id`).
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest ring timeout an offer may ask for (1 hour).
pub const MAX_RING_TIMEOUT_MS: u64 = 3_600_000;

/// A client's correlation id: a string or an integer, echoed in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Ref {
    Int(i64),
    UInt(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RefVisitor;
        impl serde::de::Visitor<'_> for RefVisitor {
            type Value = Ref;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("ref to be a string or an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ref, E> {
                Ok(Ref::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ref, E> {
                Ok(i64::try_from(v).map_or(Ref::UInt(v), Ref::Int))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ref, E> {
                Ok(Ref::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Ref, E> {
                Ok(Ref::Str(v))
            }
        }
        d.deserialize_any(RefVisitor)
    }
}

impl Ref {
    /// The ref as JSON text, ready to splice into a reply.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }
}

/// JSON-encodes a string.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A frame that could not be decoded: the error reply to send, with the `ref` if found.
#[derive(Debug)]
pub struct BadMessage {
    /// The `ref` of the frame, when one could be read.
    pub reply_ref: Option<Ref>,
    /// What was wrong, for the client.
    pub message: String,
}

/// Error codes of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    InvalidStatus,
    InvalidState,
    UnknownCall,
    UnknownAgent,
    Forbidden,
    Conflict,
    RateLimited,
    /// HTTP only: no such API route, ring group or directory entry.
    NotFound,
    /// Retryable: the hub cannot take the request now (cluster mode: NATS unreachable, or
    /// the agent is moving between nodes). Carries `retry_after_ms`; HTTP 503.
    Unavailable,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::InvalidStatus => "invalid_status",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::UnknownCall => "unknown_call",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The code of a wire name (e.g. read back from the cluster's dedup bucket).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// The HTTP status the REST telephony endpoint answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadMessage | ErrorCode::InvalidStatus => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownAgent | ErrorCode::NotFound => 404,
            ErrorCode::InvalidState | ErrorCode::UnknownCall | ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_tagged_message_and_its_ref() {
        let m = decode::<AgentMessage>(r#"{"type":"set_status","ref":7,"status":"busy","x":1}"#)
            .expect("valid");
        assert_eq!(m.reply_ref, Some(Ref::Int(7)));
        assert!(matches!(m.message, AgentMessage::SetStatus(ref c) if c.status == "busy"));
    }

    #[test]
    fn recovers_the_ref_of_a_mistyped_message_and_names_no_rust_type() {
        let e = decode::<AgentMessage>(r#"{"type":"accept_call","ref":"r1","call_id":5}"#)
            .expect_err("call_id must be a string");
        assert_eq!(e.reply_ref, Some(Ref::Str("r1".into())));
        let e = decode::<AgentMessage>("not json").expect_err("not json");
        assert_eq!(e.reply_ref, None);
        assert_eq!(e.message, "not a JSON object");
        assert!(decode::<AgentMessage>("[1,2]").is_err());
        let big = decode::<AgentMessage>(r#"{"type":"ping","ref":18446744073709551615}"#)
            .expect("u64 ref");
        assert_eq!(big.reply_ref, Some(Ref::UInt(u64::MAX)));
        assert!(
            decode::<AgentMessage>(r#"{"ref":1}"#).is_err(),
            "type is required"
        );
        for bad in [
            r#"{"type":"ping","ref":[1]}"#,
            r#"{"type":"ping","ref":1.5}"#,
            r#"{"type":"subscribe","teams":"t1"}"#,
            r#"{"type":"resume","epoch":"e","seq":"x"}"#,
            r#"{"type":"resume","epoch":"e","seq":-1}"#,
            r#"{"type":"set_agent_status","agent_id":"a1","status":5}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":5}"#,
        ] {
            let e = decode::<AdminMessage>(bad).expect_err(bad);
            for rust in [
                "struct",
                "enum",
                "Ref",
                "u64",
                "FilterSpec",
                "AdminMessage",
                "variant ",
            ] {
                assert!(
                    !e.message.contains(rust) || e.message.contains("unknown variant"),
                    "{bad} -> {}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn http_bodies_are_described_without_rust_types() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct AgentBody {
            name: Option<String>,
            wrap_up_seconds: Option<u64>,
        }
        for body in [r#"["a","b"]"#, r#""x""#, r#"{"wrap_up_seconds":"x"}"#, "[]"] {
            let e = serde_json::from_str::<AgentBody>(body).expect_err(body);
            let text = describe(&e);
            for rust in ["AgentBody", "struct", "u64"] {
                assert!(!text.contains(rust), "{body} -> {text}");
            }
        }
    }

    #[test]
    fn replies_are_valid_json() {
        let r = Ref::Str("a\"b".into());
        let ok: serde_json::Value = serde_json::from_str(&ok_version(Some(&r), 3)).expect("json");
        assert_eq!(ok["ref"], "a\"b");
        assert_eq!(ok["version"], 3);
        let err: serde_json::Value = serde_json::from_str(&rejected(
            None,
            crate::model::Rejection::Conflict { current: 3 },
        ))
        .expect("json");
        assert_eq!(err["code"], "conflict");
        assert_eq!(err["version"], 3);
        let busy: serde_json::Value =
            serde_json::from_str(&unavailable(Some(&Ref::Int(4)), "NATS is down", 500))
                .expect("json");
        assert_eq!(busy["type"], "error");
        assert_eq!(busy["ref"], 4);
        assert_eq!(busy["code"], "unavailable");
        assert_eq!(busy["retry_after_ms"], 500);
        assert_eq!(busy["message"], "NATS is down");
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert!(err.get("retry_after_ms").is_none());
    }
}
