//! Every frame the hub sends, one builder each, serialized with serde from typed fields.
//!
//! Pre-serialized agent states (the `agent` object of the hot `agent` event, built once
//! per change by [`super::Published`], or rendered from a kept [`super::LatestState`]) are
//! embedded as raw JSON, not serialized again. The only frames assembled by hand are the
//! hot `agent` event itself and the agent lists of snapshots, which write each agent's
//! kept state in place (see `published.rs`).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;

use super::{ErrorCode, Ref, Role, StoredReply, Text};
use crate::model::{
    AgentId, AgentState, CallId, Millis, Outcome, Reason, Rejection, Status, TelephonyNotice,
};

/// `{"type":..,"ref":..,<fields>}`: the envelope of every reply and event.
#[derive(Serialize)]
struct Frame<'a, F: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reply_ref: Option<&'a Ref>,
    #[serde(flatten)]
    fields: F,
}

/// No fields.
#[derive(Serialize)]
struct Empty {}

fn frame<F: Serialize>(kind: &'static str, reply_ref: Option<&Ref>, fields: F) -> Text {
    // Every field is a string, a number, a bool, an enum or raw JSON that was valid when
    // made: serialization cannot fail.
    let json = serde_json::to_string(&Frame {
        kind,
        reply_ref,
        fields,
    })
    .unwrap_or_default();
    Text::from(json)
}

/// Raw JSON that is known valid (a pre-serialized agent state), embedded as is.
fn raw(json: &str) -> Option<&RawValue> {
    serde_json::from_str::<&RawValue>(json).ok()
}

/// `{"type":"ok","ref":..}`.
pub fn ok(reply_ref: Option<&Ref>) -> Text {
    frame("ok", reply_ref, Empty {})
}

/// `{"type":"ok","ref":..,"version":N}`: a status change applied (`version` after it).
pub fn ok_version(reply_ref: Option<&Ref>, version: u64) -> Text {
    #[derive(Serialize)]
    struct F {
        version: u64,
    }
    frame("ok", reply_ref, F { version })
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: ErrorCode,
    message: &'a str,
    /// The agent's current version, with `conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    /// When to retry, with `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// `{"type":"error","ref":..,"code":..,"message":..}`.
pub fn error(reply_ref: Option<&Ref>, code: ErrorCode, message: &str) -> Text {
    frame(
        "error",
        reply_ref,
        ErrorFields {
            code,
            message,
            version: None,
            retry_after_ms: None,
        },
    )
}

/// `{"type":"error","ref":..,"code":"unavailable","message":..,"retry_after_ms":N}`: the
/// hub cannot take the request now; the client retries it after `retry_after_ms` (on this
/// node or another). Nothing of the request was applied.
pub fn unavailable(reply_ref: Option<&Ref>, message: &str, retry_after_ms: u64) -> Text {
    frame(
        "error",
        reply_ref,
        ErrorFields {
            code: ErrorCode::Unavailable,
            message,
            version: None,
            retry_after_ms: Some(retry_after_ms),
        },
    )
}

/// The error for a request the status machine refused (`version` with `conflict`).
pub fn rejected(reply_ref: Option<&Ref>, rejection: Rejection) -> Text {
    let (code, version) = rejection_code(rejection);
    frame(
        "error",
        reply_ref,
        ErrorFields {
            code,
            message: &rejection.to_string(),
            version,
            retry_after_ms: None,
        },
    )
}

/// The error sent instead of `ok` when a change was applied but its commit failed (disk
/// error, or the hub is shutting down): the change is live but may not survive a restart.
pub fn not_stored(reply_ref: Option<&Ref>, why: &dyn std::fmt::Display) -> Text {
    error(
        reply_ref,
        ErrorCode::InvalidState,
        &format!("applied, but not durably stored: {why}"),
    )
}

/// The error when the actor is gone (the hub is shutting down).
pub fn shutting_down(reply_ref: Option<&Ref>) -> Text {
    error(
        reply_ref,
        ErrorCode::InvalidState,
        "the hub is shutting down",
    )
}

/// The `bad_message` reply for an undecodable or invalid frame.
pub fn bad_message(bad: &super::BadMessage) -> Text {
    error(bad.reply_ref.as_ref(), ErrorCode::BadMessage, &bad.message)
}

/// Wire code of a rejection, and the version a `conflict` reports.
pub fn rejection_code(rejection: Rejection) -> (ErrorCode, Option<u64>) {
    match rejection {
        Rejection::InvalidStatus => (ErrorCode::InvalidStatus, None),
        Rejection::InvalidState | Rejection::NotAvailable => (ErrorCode::InvalidState, None),
        Rejection::UnknownCall => (ErrorCode::UnknownCall, None),
        Rejection::Conflict { current } => (ErrorCode::Conflict, Some(current)),
    }
}

/// `{"type":"pong","ref":..,"server_time":..}`.
pub fn pong(reply_ref: Option<&Ref>, now: Millis) -> Text {
    #[derive(Serialize)]
    struct F {
        server_time: Millis,
    }
    frame("pong", reply_ref, F { server_time: now })
}

/// `hello` on an admin or telephony socket.
pub fn hello(role: Role, id: &str, now: Millis, epoch: &str, node: &str) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        role: &'a str,
        id: &'a str,
        server_time: Millis,
        epoch: &'a str,
        node: &'a str,
    }
    frame(
        "hello",
        None,
        F {
            role: role.as_str(),
            id,
            server_time: now,
            epoch,
            node,
        },
    )
}

/// `hello` on an agent socket: the agent's current state (pre-serialized) and the `seq`
/// of its latest update.
pub fn agent_hello(agent_json: &str, now: Millis, epoch: &str, seq: u64, node: &str) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        role: &'a str,
        agent: Option<&'a RawValue>,
        server_time: Millis,
        epoch: &'a str,
        seq: u64,
        node: &'a str,
    }
    frame(
        "hello",
        None,
        F {
            role: Role::Agent.as_str(),
            agent: raw(agent_json),
            server_time: now,
            epoch,
            seq,
            node,
        },
    )
}

/// `call_offered` to an agent's tabs.
pub fn call_offered(state: &AgentState) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        call: &'a Option<Box<crate::model::CallInfo>>,
        ring_expires_at: Option<Millis>,
    }
    frame(
        "call_offered",
        None,
        F {
            call: &state.call,
            ring_expires_at: state.ring_expires_at,
        },
    )
}

/// `logged_out` to a tab that is being closed.
pub fn logged_out(reason: Reason) -> Text {
    #[derive(Serialize)]
    struct F {
        reason: Reason,
    }
    frame("logged_out", None, F { reason })
}

/// A notification to telephony adapters.
pub fn notice(agent_id: &AgentId, notice: &TelephonyNotice) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        call_id: &'a CallId,
        agent_id: &'a AgentId,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    }
    let (kind, call_id, reason) = match notice {
        TelephonyNotice::CallAccepted { call_id } => ("call_accepted", call_id, None),
        TelephonyNotice::CallDeclined { call_id, by_logout } => (
            "call_declined",
            call_id,
            Some(if *by_logout { "logout" } else { "declined" }),
        ),
        TelephonyNotice::RingTimeout { call_id } => ("ring_timeout", call_id, None),
    };
    frame(
        kind,
        None,
        F {
            call_id,
            agent_id,
            reason,
        },
    )
}

/// `ok` to a `resume` whose gap the history covered (the replayed updates went before it).
pub fn resumed(reply_ref: Option<&Ref>, replayed: usize, epoch: &str, seq: u64) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        recovered: bool,
        replayed: usize,
        epoch: &'a str,
        seq: u64,
    }
    frame(
        "ok",
        reply_ref,
        F {
            recovered: true,
            replayed,
            epoch,
            seq,
        },
    )
}

/// What a telephony event did, for its reply (the machine's result without its effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    Changed,
    Unchanged,
    Stale,
    /// The machine refused it.
    Rejected(Rejection),
}

impl EventResult {
    /// From the machine's result.
    pub fn of(result: &Result<Outcome, Rejection>) -> EventResult {
        match result {
            Ok(Outcome::Changed(_)) => EventResult::Changed,
            Ok(Outcome::Unchanged) => EventResult::Unchanged,
            Ok(Outcome::Stale) => EventResult::Stale,
            Err(r) => EventResult::Rejected(*r),
        }
    }
}

/// The fields of a telephony reply (a JSON object), for an event the actor handled.
pub fn telephony_reply(
    is_offer: bool,
    result: EventResult,
    status: Status,
    agent_json: &str,
) -> StoredReply {
    #[derive(Serialize, Default)]
    struct F<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        accepted: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stale: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<Status>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<&'a RawValue>,
    }
    let agent = raw(agent_json);
    let (error, fields) = match (is_offer, result) {
        (true, EventResult::Changed) => (
            None,
            F {
                accepted: Some(true),
                agent,
                ..F::default()
            },
        ),
        (true, EventResult::Stale) => (
            None,
            F {
                accepted: Some(false),
                reason: Some("stale"),
                status: Some(status),
                agent,
                ..F::default()
            },
        ),
        (true, _) => (
            None,
            F {
                accepted: Some(false),
                reason: Some("not_available"),
                status: Some(status),
                agent,
                ..F::default()
            },
        ),
        (false, EventResult::Stale) => (
            None,
            F {
                stale: Some(true),
                agent,
                ..F::default()
            },
        ),
        (false, EventResult::Rejected(rejection)) => {
            let (code, version) = rejection_code(rejection);
            (
                Some(code),
                F {
                    message: Some(rejection.to_string()),
                    status: Some(status),
                    version,
                    ..F::default()
                },
            )
        }
        (false, _) => (
            None,
            F {
                agent,
                ..F::default()
            },
        ),
    };
    StoredReply {
        error,
        fields: Arc::from(serde_json::to_string(&fields).unwrap_or_else(|_| "{}".into())),
    }
}

/// The reply to an event for an agent that is neither in the directory nor logged in: an
/// offer is refused in an `ok` (`reason: unknown_agent`), other events are errors.
pub fn telephony_unknown_agent(is_offer: bool, agent_id: &AgentId) -> StoredReply {
    if is_offer {
        #[derive(Serialize)]
        struct F {
            accepted: bool,
            reason: &'static str,
            status: Option<Status>,
        }
        let f = F {
            accepted: false,
            reason: "unknown_agent",
            status: None,
        };
        return StoredReply {
            error: None,
            fields: Arc::from(serde_json::to_string(&f).unwrap_or_else(|_| "{}".into())),
        };
    }
    #[derive(Serialize)]
    struct F {
        message: String,
    }
    let f = F {
        message: format!("unknown agent {agent_id}"),
    };
    StoredReply {
        error: Some(ErrorCode::UnknownAgent),
        fields: Arc::from(serde_json::to_string(&f).unwrap_or_else(|_| "{}".into())),
    }
}

/// The reply frame of a telephony event: its first reply (`fields`), with this request's
/// `ref` and `duplicate: true` for a repeat.
pub fn telephony_answer(reply_ref: Option<&Ref>, reply: &StoredReply, duplicate: bool) -> Text {
    #[derive(Serialize)]
    struct F<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        #[serde(flatten)]
        fields: RawObject<'a>,
    }
    let kind = if reply.error.is_some() { "error" } else { "ok" };
    frame(
        kind,
        reply_ref,
        F {
            code: reply.error,
            duplicate,
            fields: RawObject(&reply.fields),
        },
    )
}

/// A stored JSON object whose members are written as they are (each value raw).
struct RawObject<'a>(&'a str);

impl Serialize for RawObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let members: Vec<(&str, &RawValue)> =
            serde_json::from_str::<Members<'_>>(self.0).map_or_else(|_| Vec::new(), |m| m.0);
        let mut map = s.serialize_map(Some(members.len()))?;
        for (k, v) in members {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The members of a JSON object in their order, values left raw.
struct Members<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<&'de str, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}
