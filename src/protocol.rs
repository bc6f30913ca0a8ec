//! Wire messages: decoding client frames and building the hub's replies.
//!
//! Every client frame is decoded in one pass into [`Request`], a struct holding the union of
//! all fields; each socket then checks that its message type has what it needs. That gives
//! clear `bad_message` texts, and the `ref` is recovered even when the rest is wrong.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use crate::model::{AgentId, CallId, TeamId};

/// Longest `note` accepted (docs/status-model.md: <= 64 chars).
pub const MAX_NOTE_CHARS: usize = 64;
/// Longest free-text call field (`from`, `to`, `ring_group`, `cause`, `event_id`).
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest ring timeout an offer may ask for (1 hour).
pub const MAX_RING_TIMEOUT_MS: u64 = 3_600_000;

/// A client's correlation id: a string or an integer, echoed in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    Int(i64),
    UInt(u64),
    Str(String),
}

impl Ref {
    /// The ref as JSON text, ready to splice into a reply.
    pub fn to_json(&self) -> String {
        match self {
            Ref::Int(n) => n.to_string(),
            Ref::UInt(n) => n.to_string(),
            Ref::Str(s) => json_string(s),
        }
    }
}

/// Any client message, decoded. Fields not used by its `type` are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Request {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "ref")]
    pub reply_ref: Option<Ref>,
    pub status: Option<String>,
    pub note: Option<String>,
    pub if_version: Option<u64>,
    pub call_id: Option<CallId>,
    pub agent_id: Option<AgentId>,
    pub event_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub ring_group: Option<String>,
    pub ring_timeout_ms: Option<u64>,
    pub cause: Option<String>,
    pub teams: Option<Vec<TeamId>>,
    pub agents: Option<Vec<AgentId>>,
    pub epoch: Option<String>,
    pub seq: Option<u64>,
}

#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reply_ref: Option<Ref>,
}

/// A frame that could not be decoded: the error reply to send, with the `ref` if found.
#[derive(Debug)]
pub struct BadMessage {
    pub reply_ref: Option<Ref>,
    pub message: String,
}

impl Request {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<Request, BadMessage> {
        // serde would also fill a struct from a JSON array, field by field: only objects
        // are messages.
        if !text.trim_start().starts_with('{') {
            return Err(BadMessage {
                reply_ref: None,
                message: "not a JSON object".to_string(),
            });
        }
        match serde_json::from_str::<Request>(text) {
            Ok(req) => Ok(req),
            Err(e) => {
                let reply_ref = serde_json::from_str::<RefOnly>(text)
                    .ok()
                    .and_then(|r| r.reply_ref);
                let message = if text.trim_start().starts_with('{') {
                    format!("malformed message: {e}")
                } else {
                    "not a JSON object".to_string()
                };
                Err(BadMessage { reply_ref, message })
            }
        }
    }

    /// A `bad_message` for this request.
    pub fn bad(&self, message: impl Into<String>) -> BadMessage {
        BadMessage {
            reply_ref: self.reply_ref.clone(),
            message: message.into(),
        }
    }

    /// The `call_id` field, required.
    pub fn require_call_id(&self) -> Result<CallId, BadMessage> {
        self.call_id
            .clone()
            .ok_or_else(|| self.bad(format!("{} needs call_id", self.kind)))
    }

    /// The `agent_id` field, required.
    pub fn require_agent_id(&self) -> Result<AgentId, BadMessage> {
        self.agent_id
            .clone()
            .ok_or_else(|| self.bad(format!("{} needs agent_id", self.kind)))
    }

    /// The `note`, checked against its length limit.
    pub fn checked_note(&self) -> Result<Option<String>, BadMessage> {
        match &self.note {
            Some(n) if n.chars().count() > MAX_NOTE_CHARS => {
                Err(self.bad(format!("note is longer than {MAX_NOTE_CHARS} characters")))
            }
            Some(n) if n.is_empty() => Ok(None),
            other => Ok(other.clone()),
        }
    }

    /// Checks the free-text fields of a telephony event.
    pub fn check_text_fields(&self) -> Result<(), BadMessage> {
        for (name, v) in [
            ("event_id", &self.event_id),
            ("from", &self.from),
            ("to", &self.to),
            ("ring_group", &self.ring_group),
            ("cause", &self.cause),
        ] {
            if let Some(v) = v {
                if v.chars().count() > MAX_TEXT_CHARS {
                    return Err(
                        self.bad(format!("{name} is longer than {MAX_TEXT_CHARS} characters"))
                    );
                }
            }
        }
        if let Some(ms) = self.ring_timeout_ms {
            if ms == 0 || ms > MAX_RING_TIMEOUT_MS {
                return Err(self.bad(format!(
                    "ring_timeout_ms must be between 1 and {MAX_RING_TIMEOUT_MS}"
                )));
            }
        }
        Ok(())
    }
}

/// Error codes of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
        }
    }

    /// The HTTP status the REST telephony endpoint answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadMessage | ErrorCode::InvalidStatus => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownAgent => 404,
            ErrorCode::InvalidState | ErrorCode::UnknownCall | ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
        }
    }
}

/// JSON-encodes a string.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Builds `{"type":"ok","ref":..,<fields>}`; `fields` is a JSON fragment without braces
/// (`"a":1,"b":2`) or empty.
pub fn ok_reply(reply_ref: Option<&Ref>, fields: &str) -> String {
    let mut out = String::with_capacity(32 + fields.len());
    out.push_str(r#"{"type":"ok""#);
    push_ref(&mut out, reply_ref);
    if !fields.is_empty() {
        out.push(',');
        out.push_str(fields);
    }
    out.push('}');
    out
}

/// Builds `{"type":"error","ref":..,"code":..,"message":..}` plus optional extra fields.
pub fn error_reply(reply_ref: Option<&Ref>, code: ErrorCode, message: &str, extra: &str) -> String {
    let mut out = String::with_capacity(64 + message.len() + extra.len());
    out.push_str(r#"{"type":"error""#);
    push_ref(&mut out, reply_ref);
    let _ = write!(
        out,
        r#","code":"{}","message":{}"#,
        code.as_str(),
        json_string(message)
    );
    if !extra.is_empty() {
        out.push(',');
        out.push_str(extra);
    }
    out.push('}');
    out
}

/// Builds `{"type":"error","ref":..,"code":..,<fields>}` where `fields` already holds
/// `"message"` and any extras.
pub fn error_reply_fields(reply_ref: Option<&Ref>, code: ErrorCode, fields: &str) -> String {
    let mut out = String::with_capacity(48 + fields.len());
    out.push_str(r#"{"type":"error""#);
    push_ref(&mut out, reply_ref);
    let _ = write!(out, r#","code":"{}","#, code.as_str());
    out.push_str(fields);
    out.push('}');
    out
}

fn push_ref(out: &mut String, reply_ref: Option<&Ref>) {
    if let Some(r) = reply_ref {
        out.push_str(r#","ref":"#);
        out.push_str(&r.to_json());
    }
}

/// The `ref` of a frame, if it is a JSON object with a valid `ref`: used to answer a frame
/// that is refused without being handled (`rate_limited`). One pass over the text that
/// skips every other field; frames are already bounded by the maximum message size.
pub fn peek_ref(text: &str) -> Option<Ref> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<RefOnly>(text)
        .ok()
        .and_then(|r| r.reply_ref)
}

/// The `bad_message` reply for an undecodable frame.
pub fn bad_message_reply(bad: &BadMessage) -> String {
    error_reply(
        bad.reply_ref.as_ref(),
        ErrorCode::BadMessage,
        &bad.message,
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_fields_and_ignores_others() {
        let r = Request::decode(r#"{"type":"set_status","ref":7,"status":"busy","x":1}"#)
            .expect("valid");
        assert_eq!(r.kind, "set_status");
        assert_eq!(r.reply_ref, Some(Ref::Int(7)));
        assert_eq!(r.status.as_deref(), Some("busy"));
    }

    #[test]
    fn recovers_the_ref_of_a_mistyped_message() {
        let e = Request::decode(r#"{"type":"accept_call","ref":"r1","call_id":5}"#)
            .expect_err("call_id must be a string");
        assert_eq!(e.reply_ref, Some(Ref::Str("r1".into())));
        let e = Request::decode("not json").expect_err("not json");
        assert_eq!(e.reply_ref, None);
        assert_eq!(e.message, "not a JSON object");
        assert!(Request::decode("[1,2]").is_err());
        assert!(
            Request::decode(r#"["ping",5]"#).is_err(),
            "arrays are not messages"
        );
        let big =
            Request::decode(r#"{"type":"ping","ref":18446744073709551615}"#).expect("u64 ref");
        assert_eq!(big.reply_ref, Some(Ref::UInt(u64::MAX)));
        assert!(Request::decode(r#"{"ref":1}"#).is_err(), "type is required");
    }

    #[test]
    fn replies_are_valid_json() {
        let r = Ref::Str("a\"b".into());
        let ok: serde_json::Value =
            serde_json::from_str(&ok_reply(Some(&r), r#""x":1"#)).expect("json");
        assert_eq!(ok["ref"], "a\"b");
        assert_eq!(ok["x"], 1);
        let err: serde_json::Value = serde_json::from_str(&error_reply(
            None,
            ErrorCode::Conflict,
            "m\n",
            r#""version":3"#,
        ))
        .expect("json");
        assert_eq!(err["code"], "conflict");
        assert_eq!(err["version"], 3);
    }
}
