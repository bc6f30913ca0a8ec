//! An agent's latest published state in compact form: the fields of the wire `AgentState`
//! and the `seq` of the update that published it, without the rendered frame.
//!
//! Why (issue 13, idle memory per agent): the fan-out keeps one of these per agent (its
//! latest state, for snapshots, the HTTP API and filters) and one per update in the
//! `resume` history. Keeping the rendered `agent` frame there instead cost ~400 bytes per
//! idle agent (the frame and its `Arc<Published>`); this is one 112-byte allocation (and
//! one more only while the agent has a note, a call or a deadline). The frame exists only
//! while it is on its way (the feed, the outboxes, the store's queue): a snapshot, a
//! `hello`, the HTTP API and a `resume` replay render it again from here, byte for byte
//! what [`Published::serialize`](super::Published::serialize) gives for the same state
//! (`tests::renders_what_the_state_serializes_to`).

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::Text;
use crate::model::{AgentId, AgentState, CallInfo, ManualStatus, Millis, Reason, Status, TeamId};

/// The latest published state of one agent (see the module doc). Shared (`Arc`) by the
/// fan-out's latest map, its history, the agent's actor and the snapshots being rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestState {
    /// The hub-wide sequence number of the update (the current `seq` for a registration).
    pub seq: u64,
    pub agent_id: AgentId,
    pub name: Option<Box<str>>,
    /// For subscriber filters (a boxed slice: no spare capacity).
    pub teams: Box<[TeamId]>,
    pub since: Millis,
    pub version: u64,
    pub connections: u32,
    pub missed_in_row: u32,
    pub status: Status,
    pub manual_status: ManualStatus,
    pub reason: Option<Reason>,
    /// `note`, `call` and the ring and wrap-up deadlines: most agents have none of them
    /// most of the time, so they cost a word until one is set.
    rare: Option<Box<Rare>>,
}

/// The fields of a [`LatestState`] that are usually empty.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    note: Option<Box<str>>,
    call: Option<Box<CallInfo>>,
    ring_expires_at: Option<Millis>,
    wrap_up_expires_at: Option<Millis>,
}

impl LatestState {
    /// The compact form of `state`, published as update `seq`.
    pub fn of(state: &AgentState, seq: u64) -> LatestState {
        let rare = (state.note.is_some()
            || state.call.is_some()
            || state.ring_expires_at.is_some()
            || state.wrap_up_expires_at.is_some())
        .then(|| {
            Box::new(Rare {
                note: state.note.as_deref().map(Box::from),
                call: state.call.clone(),
                ring_expires_at: state.ring_expires_at,
                wrap_up_expires_at: state.wrap_up_expires_at,
            })
        });
        LatestState {
            seq,
            agent_id: state.agent_id.clone(),
            name: state.name.as_deref().map(Box::from),
            teams: state.teams.as_slice().into(),
            since: state.since,
            version: state.version,
            connections: state.connections,
            missed_in_row: state.missed_in_row,
            status: state.status,
            manual_status: state.manual_status,
            reason: state.reason,
            rare,
        }
    }

    /// The `AgentState` JSON object.
    pub fn json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        // serde_json writes UTF-8 only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the `AgentState` JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Strings, numbers and enums only: writing to a `Vec` cannot fail.
        let _ = serde_json::to_writer(out, self);
    }

    /// The update frame, `{"type":"agent","seq":N,"agent":{...}}` (a `resume` replay).
    pub fn frame(&self) -> Text {
        Text::from(super::published::frame(self.seq, &self.json()).0)
    }
}

impl Serialize for LatestState {
    /// The wire `AgentState`: the fields and order of `AgentState`'s own serialization.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rare = self.rare.as_deref();
        let mut s = serializer.serialize_struct("AgentState", 14)?;
        s.serialize_field("agent_id", &self.agent_id)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("teams", &self.teams)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("manual_status", &self.manual_status)?;
        s.serialize_field("since", &self.since)?;
        s.serialize_field("reason", &self.reason)?;
        s.serialize_field("note", &rare.and_then(|r| r.note.as_deref()))?;
        s.serialize_field("call", &rare.and_then(|r| r.call.as_deref()))?;
        s.serialize_field("ring_expires_at", &rare.and_then(|r| r.ring_expires_at))?;
        s.serialize_field(
            "wrap_up_expires_at",
            &rare.and_then(|r| r.wrap_up_expires_at),
        )?;
        s.serialize_field("connections", &self.connections)?;
        s.serialize_field("missed_in_row", &self.missed_in_row)?;
        s.serialize_field("version", &self.version)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallDirection, CallId, Session};
    use crate::protocol::Published;

    fn states() -> Vec<AgentState> {
        let id = AgentId::parse("agent-7").expect("an id");
        let plain = AgentState::new(id.clone(), 1_700_000_000_000);
        let mut named = plain.clone();
        named.name = Some("Zoë \"Z\" O'Neil \\ \u{1}\n".into());
        named.teams = vec![
            TeamId::parse("sales").expect("a team"),
            TeamId::parse("support").expect("a team"),
        ];
        named.status = Status::Available;
        named.manual_status = ManualStatus::Available;
        named.reason = Some(Reason::Login);
        named.connections = 3;
        named.version = 42;
        named.session = Session::Connected;
        let mut busy = named.clone();
        busy.note = Some("lunch ☕".into());
        busy.status = Status::OnCall;
        busy.missed_in_row = 2;
        busy.ring_expires_at = Some(1);
        busy.wrap_up_expires_at = Some(u64::MAX);
        busy.call = Some(Box::new(CallInfo {
            call_id: CallId::parse("c-1").expect("a call id"),
            direction: CallDirection::Inbound,
            ring_group: Some("queue \"a\"".into()),
            from: Some("+1 555".into()),
            to: None,
            offered_at: Some(5),
            answered_at: Some(0),
        }));
        let mut noted = plain.clone();
        noted.note = Some(String::new());
        let mut ringing = plain.clone();
        ringing.ring_expires_at = Some(0);
        vec![plain, named, busy, noted, ringing]
    }

    #[test]
    fn renders_what_the_state_serializes_to() {
        for (i, state) in states().into_iter().enumerate() {
            let latest = LatestState::of(&state, 1_000 + i as u64);
            let json = Published::serialize(&state);
            assert_eq!(latest.json(), json, "state {i}");
            let published = Published::build(&state, latest.seq, &json);
            assert_eq!(latest.frame(), published.frame, "state {i}");
            assert_eq!(*published.latest, latest, "state {i}");
            assert_eq!(published.agent_json(), json, "state {i}");
        }
    }

    #[test]
    fn stays_small() {
        // One allocation per agent, with the `Arc` counts: 112 bytes (a jemalloc size
        // class) while it is at most 96.
        assert!(std::mem::size_of::<LatestState>() <= 96);
    }
}
