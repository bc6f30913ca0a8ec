//! Cluster mode: what an agent's change looks like in the agents stream ([`ClusterRecord`]),
//! written by its owner's actor and read back by every node's follower (its view, its
//! report history, its event-id memory) and by a new owner taking the agent over.
//!
//! The body is JSON: `{"state":{..wire AgentState..},"session":{..},"tabs":{"n1":2},
//! "event":{..}}`. `state` is the wire form (what admins see); `session` (login and grace
//! deadline) is not on the wire, so it travels beside it. `tabs` counts the agent's open
//! tabs per node (`state.connections` is their sum). `event` is the telephony event whose
//! reply this change carries: a change and the reply to the event that caused it are
//! stored in one append, so whoever owns the agent next knows the event was applied.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::model::{AgentState, Millis, Session, TelephonyNotice};
use crate::protocol::{ErrorCode, StoredReply};

/// One stored change of an agent (the stream message body). See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterRecord {
    /// The agent's state after the change, in its wire form.
    pub state: AgentState,
    /// Its login session (`state.session` is not part of the wire form).
    #[serde(default)]
    pub session: Session,
    /// Open tabs per node id; their sum is `state.connections`.
    #[serde(default)]
    pub tabs: BTreeMap<String, u32>,
    /// When the owner applied the change (Unix ms): the time of its history row.
    #[serde(default)]
    pub at: Millis,
    /// The telephony event this change answered, with its reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<RecordedEvent>,
    /// What this change tells telephony adapters (call accepted, declined, ring timeout):
    /// every node tells the adapters connected to it, so an adapter gets it whichever node
    /// it is connected to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<TelephonyNotice>,
}

/// A telephony event id and the first reply to it, stored with the change it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedEvent {
    /// The adapter's event id.
    pub id: String,
    /// `None` for `ok`, else the reply's error code.
    pub error: Option<ErrorCode>,
    /// The reply's fields (a JSON object, as the event-id memory keeps it).
    pub fields: String,
}

impl RecordedEvent {
    /// The record of `reply` to event `id`.
    pub(crate) fn new(id: &str, reply: &StoredReply) -> Self {
        RecordedEvent {
            id: id.to_owned(),
            error: reply.error,
            fields: reply.fields.to_string(),
        }
    }

    /// The reply as the event-id memory keeps it.
    pub(crate) fn reply(&self) -> StoredReply {
        StoredReply {
            error: self.error,
            fields: self.fields.as_str().into(),
        }
    }
}

/// Why a stored body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("agents stream: a change this hub cannot read: {0}")]
pub(crate) struct BadRecord(#[from] serde_json::Error);

impl ClusterRecord {
    /// The record of `state` as written by node `node`, which holds all of the agent's tabs
    /// (the tabs of one agent are all on its owner's node until tabs on other nodes are
    /// forwarded to the owner).
    pub(crate) fn of(state: &AgentState, node: &str, at: Millis) -> Self {
        let mut tabs = BTreeMap::new();
        if state.connections > 0 {
            tabs.insert(node.to_owned(), state.connections);
        }
        ClusterRecord {
            state: state.clone(),
            session: state.session,
            tabs,
            at,
            event: None,
            notices: Vec::new(),
        }
    }

    /// The stream message body.
    pub(crate) fn to_bytes(&self) -> Bytes {
        // AgentState and the rest hold only strings, numbers and enums: cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a body back; `state.session` is filled in from `session`.
    pub(crate) fn from_bytes(body: &[u8]) -> Result<Self, BadRecord> {
        let mut record: ClusterRecord = serde_json::from_slice(body)?;
        record.state.session = record.session;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, Status};

    #[test]
    fn a_record_round_trips_with_its_session_tabs_and_event() {
        let mut s = AgentState::new(AgentId::parse("ann").expect("id"), 5);
        s.status = Status::Ringing;
        s.ring_expires_at = Some(9_000);
        s.connections = 2;
        s.version = 4;
        s.session = Session::Connected;
        let mut r = ClusterRecord::of(&s, "n1", 77);
        r.event = Some(RecordedEvent::new(
            "ev-1",
            &StoredReply {
                error: Some(ErrorCode::UnknownCall),
                fields: r#"{"accepted":false}"#.into(),
            },
        ));
        let back = ClusterRecord::from_bytes(&r.to_bytes()).expect("decodes");
        assert_eq!(back, r);
        assert_eq!(back.state.session, Session::Connected);
        assert_eq!(back.tabs.get("n1"), Some(&2));
        let reply = back.event.expect("event").reply();
        assert_eq!(reply.error, Some(ErrorCode::UnknownCall));
        assert_eq!(&*reply.fields, r#"{"accepted":false}"#);
        assert!(ClusterRecord::from_bytes(b"{\"state\":1}").is_err());
    }
}
