//! Client messages, one serde-tagged enum per surface (agent, admin, telephony), each
//! decoded once from its text frame by [`decode`]. The `ref` every message may carry sits
//! in the [`Envelope`] around it, so it is echoed even when the rest is wrong.
//!
//! Errors name the field and what it must be; no Rust type name reaches a client (see
//! [`describe`]).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BadMessage, Ref, MAX_NOTE_CHARS, MAX_RING_TIMEOUT_MS, MAX_TEXT_CHARS};
use crate::model::{AgentId, CallId, Status, TeamId};

/// A decoded message with the `ref` that came with it.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// The client's correlation id, echoed in the reply.
    #[serde(rename = "ref")]
    pub reply_ref: Option<Ref>,
    /// The message itself (tagged by its `type`).
    #[serde(flatten)]
    pub message: T,
}

/// `set_status` (agent) and the status part of `set_agent_status` (admin).
#[derive(Debug, Clone, Deserialize)]
pub struct StatusChange {
    /// The status asked for: a manual one (`invalid_status` otherwise).
    pub status: String,
    /// Optional free text, <= 64 characters.
    pub note: Option<String>,
    /// Optimistic concurrency: refused with `conflict` unless the agent is at this version.
    pub if_version: Option<u64>,
}

/// Why a status change was refused before reaching the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChangeError {
    /// The note is too long: `bad_message`.
    Bad(String),
    /// Not a status an agent or admin may pick: `invalid_status`.
    InvalidStatus(String),
}

impl StatusChange {
    /// The checked status and note.
    pub fn checked(&self) -> Result<(Status, Option<String>), StatusChangeError> {
        let Some(status) = Status::parse(&self.status) else {
            return Err(StatusChangeError::InvalidStatus(format!(
                "unknown status {:?}: use offline, available, busy or on_break",
                self.status
            )));
        };
        let note = match &self.note {
            Some(n) if n.chars().count() > MAX_NOTE_CHARS => {
                return Err(StatusChangeError::Bad(format!(
                    "note is longer than {MAX_NOTE_CHARS} characters"
                )))
            }
            Some(n) if n.is_empty() => None,
            other => other.clone(),
        };
        Ok((status, note))
    }
}

/// What an agent tab may send on `/ws/agent`. The agent acts only on itself: its id comes
/// from the token, never from a field.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    SetStatus(StatusChange),
    AcceptCall { call_id: CallId },
    DeclineCall { call_id: CallId },
    EndWrapUp {},
    Logout {},
    Ping {},
}

/// Which agents a wallboard wants (both lists narrow).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterSpec {
    /// Only agents in one of these teams.
    pub teams: Option<Vec<TeamId>>,
    /// Only these agents.
    pub agents: Option<Vec<AgentId>>,
}

/// What a wallboard may send on `/ws/admin`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminMessage {
    Subscribe(FilterSpec),
    Resume {
        epoch: String,
        seq: u64,
        #[serde(flatten)]
        filter: FilterSpec,
    },
    Unsubscribe {},
    SetAgentStatus {
        agent_id: AgentId,
        #[serde(flatten)]
        change: StatusChange,
    },
    LogoutAgent {
        agent_id: AgentId,
    },
    Ping {},
}

/// The fields every telephony event carries.
#[derive(Debug, Clone, Deserialize)]
pub struct CallEvent {
    /// Idempotency key (required, <= 256 characters).
    pub event_id: String,
    pub call_id: CallId,
    pub agent_id: AgentId,
    /// Free text from the adapter, checked for length only.
    pub cause: Option<String>,
}

/// `call_offered`.
#[derive(Debug, Clone, Deserialize)]
pub struct CallOffer {
    #[serde(flatten)]
    pub event: CallEvent,
    pub from: Option<String>,
    pub to: Option<String>,
    pub ring_group: Option<String>,
    /// 1..=3,600,000 ms; else the ring group's, else the hub default.
    pub ring_timeout_ms: Option<u64>,
}

/// `outbound_started`.
#[derive(Debug, Clone, Deserialize)]
pub struct OutboundCall {
    #[serde(flatten)]
    pub event: CallEvent,
    pub to: Option<String>,
}

/// What a telephony adapter may send (on `/ws/telephony` or `POST /api/v1/telephony/events`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TelephonyMessage {
    CallOffered(CallOffer),
    CallAnswered(CallEvent),
    CallCancelled(CallEvent),
    CallEnded(CallEvent),
    OutboundStarted(OutboundCall),
    /// The phone system's own ring timeout (status-model row 11, like the hub's ring timer).
    CallNoAnswer(CallEvent),
    /// The agent rejected the call on the phone (row 10, like a console decline).
    CallRejected(CallEvent),
    Ping {},
}

impl TelephonyMessage {
    /// The common fields of an event (`None` for `ping`).
    pub fn event(&self) -> Option<&CallEvent> {
        match self {
            TelephonyMessage::CallOffered(o) => Some(&o.event),
            TelephonyMessage::CallAnswered(e)
            | TelephonyMessage::CallCancelled(e)
            | TelephonyMessage::CallEnded(e)
            | TelephonyMessage::CallNoAnswer(e)
            | TelephonyMessage::CallRejected(e) => Some(e),
            TelephonyMessage::OutboundStarted(o) => Some(&o.event),
            TelephonyMessage::Ping {} => None,
        }
    }

    /// Checks lengths and ranges serde cannot: free-text fields <= 256 characters, a
    /// non-empty `event_id`, a ring timeout in range.
    pub fn check(&self) -> Result<(), String> {
        let Some(event) = self.event() else {
            return Ok(());
        };
        if event.event_id.is_empty() {
            return Err("event_id must not be empty".to_string());
        }
        let (from, to, ring_group, timeout) = match self {
            TelephonyMessage::CallOffered(o) => (&o.from, &o.to, &o.ring_group, o.ring_timeout_ms),
            TelephonyMessage::OutboundStarted(o) => (&None, &o.to, &None, None),
            _ => (&None, &None, &None, None),
        };
        for (name, v) in [
            ("event_id", Some(&event.event_id)),
            ("from", from.as_ref()),
            ("to", to.as_ref()),
            ("ring_group", ring_group.as_ref()),
            ("cause", event.cause.as_ref()),
        ] {
            if v.is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS) {
                return Err(format!("{name} is longer than {MAX_TEXT_CHARS} characters"));
            }
        }
        if let Some(ms) = timeout {
            if ms == 0 || ms > MAX_RING_TIMEOUT_MS {
                return Err(format!(
                    "ring_timeout_ms must be between 1 and {MAX_RING_TIMEOUT_MS}"
                ));
            }
        }
        Ok(())
    }
}

/// The `ref` and `type` of a frame, left raw: read first, so a refusal still carries the
/// `ref`, and a `type` that is not a string is refused (serde would take an integer as
/// the index of a message type).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "ref", borrow)]
    reply_ref: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
}

fn not_an_object() -> BadMessage {
    BadMessage {
        reply_ref: None,
        message: "not a JSON object".to_string(),
    }
}

/// Decodes one text frame of a surface whose messages are `T`.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<Envelope<T>, BadMessage> {
    // serde would also fill a struct from a JSON array, field by field: only objects are
    // messages.
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object());
    }
    let head = serde_json::from_str::<Head<'_>>(text).map_err(|e| BadMessage {
        reply_ref: None,
        message: format!("malformed JSON: {}", describe(&e)),
    })?;
    let reply_ref = head
        .reply_ref
        .and_then(|raw| serde_json::from_str::<Ref>(raw.get()).ok());
    if head.kind.is_some_and(|k| !k.get().starts_with('"')) {
        return Err(BadMessage {
            reply_ref,
            message: "type must be a string".to_string(),
        });
    }
    serde_json::from_str::<Envelope<T>>(text).map_err(|e| BadMessage {
        reply_ref,
        message: if e.is_syntax() || e.is_eof() {
            format!("malformed JSON: {}", describe(&e))
        } else {
            format!("malformed message: {}", describe(&e))
        },
    })
}

/// The `ref` of a frame, if it is a JSON object with a valid `ref`: used to answer a frame
/// that is refused without being decoded (`rate_limited`). One pass over the text that
/// skips every other field.
pub fn peek_ref(text: &str) -> Option<Ref> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Head<'_>>(text)
        .ok()?
        .reply_ref
        .and_then(|raw| serde_json::from_str::<Ref>(raw.get()).ok())
}

/// A serde error as a client reads it: what was wrong, never a Rust type name, without
/// the line and column of a one-line frame (also for the JSON bodies of the HTTP API).
pub fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    if e.is_syntax() || e.is_eof() {
        return text.to_string();
    }
    let mut out = text.to_string();
    for (rust, wire) in [
        ("unknown variant", "unknown message type"),
        (
            "expected variant identifier",
            "expected a message type name",
        ),
        (
            "expected internally tagged enum",
            "expected an object with a \"type\"; enum",
        ),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected a borrowed string", "expected a string"),
        ("`type`", "\"type\""),
    ] {
        out = out.replace(rust, wire);
    }
    // Derived visitors describe themselves as "struct X", "struct variant X::Y", "enum X":
    // a client only needs to know an object was expected.
    for marker in ["struct variant ", "tuple variant ", "struct ", "enum "] {
        while let Some(at) = out.find(marker) {
            let end = out[at + marker.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == ':' || c == '_'))
                .map_or(out.len(), |n| at + marker.len() + n);
            out.replace_range(at..end, "an object");
        }
    }
    out
}
