//! The state of one agent, exactly as every consumer sees it (`AgentState` of the spec),
//! plus the session bookkeeping the wire does not show.

use super::{AgentId, CallId, ManualStatus, Millis, Reason, Status, TeamId};
use serde::{Deserialize, Serialize};

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Inbound,
    Outbound,
}

/// The call an agent is ringing for, talking on, or wrapping up. Its texts are boxed
/// `str`s (no spare capacity, a word less each): every agent's state holds room for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: CallId,
    pub direction: CallDirection,
    /// The ring group the call came in through, for wallboards and reports.
    pub ring_group: Option<Box<str>>,
    /// Caller number or name as the adapter gave it.
    pub from: Option<Box<str>>,
    /// Dialled number.
    pub to: Option<Box<str>>,
    /// When ringing started (inbound only).
    pub offered_at: Option<Millis>,
    /// When the call connected.
    pub answered_at: Option<Millis>,
}

/// Whether the agent is logged in, and if its sockets are gone, until when it may come back.
///
/// Not on the wire: consumers see `connections` and `manual_status`; the hub needs the rest
/// to tell row 1 (login) from row 22 (reconnect within grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Session {
    /// Never logged in, logged out, or grace ran out.
    #[default]
    LoggedOut,
    /// At least one socket is open.
    Connected,
    /// The last socket closed; the agent is logged out at `until` unless one comes back.
    Grace { until: Millis },
}

/// One agent's presence state. Serializes to the wire `AgentState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: AgentId,
    pub name: Option<String>,
    pub teams: Vec<TeamId>,
    pub status: Status,
    pub manual_status: ManualStatus,
    pub since: Millis,
    /// `None` only for a directory agent that has never changed.
    pub reason: Option<Reason>,
    pub note: Option<String>,
    /// Boxed: most agents are idle without a call, and every agent actor holds its state.
    pub call: Option<Box<CallInfo>>,
    pub ring_expires_at: Option<Millis>,
    pub wrap_up_expires_at: Option<Millis>,
    pub connections: u32,
    pub missed_in_row: u32,
    pub version: u64,
    /// Internal: login session and disconnect grace deadline.
    #[serde(skip_serializing, default)]
    pub session: Session,
    /// Internal: the last few calls that ended, so late or reordered telephony events for
    /// them are recognized as stale instead of starting them again.
    #[serde(skip, default)]
    pub ended_calls: EndedCalls,
}

/// A small ring of recently ended call ids (bounded: [`EndedCalls::CAPACITY`]), oldest
/// first. A `Vec` (a word smaller than a `VecDeque` in every agent's state): shifting
/// eight ids when the oldest is forgotten costs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndedCalls(Vec<CallId>);

impl EndedCalls {
    /// How many ended calls an agent remembers.
    pub const CAPACITY: usize = 8;

    /// Remembers a call that ended.
    pub fn push(&mut self, call_id: CallId) {
        if self.0.len() == Self::CAPACITY {
            self.0.remove(0);
        }
        self.0.push(call_id);
    }

    /// True when `call_id` ended recently.
    pub fn contains(&self, call_id: &CallId) -> bool {
        self.0.contains(call_id)
    }
}

impl AgentState {
    /// A fresh agent: offline, never logged in, version 0.
    pub fn new(agent_id: AgentId, now: Millis) -> Self {
        AgentState {
            agent_id,
            name: None,
            teams: Vec::new(),
            status: Status::Offline,
            manual_status: ManualStatus::Offline,
            since: now,
            reason: None,
            note: None,
            call: None,
            ring_expires_at: None,
            wrap_up_expires_at: None,
            connections: 0,
            missed_in_row: 0,
            version: 0,
            session: Session::LoggedOut,
            ended_calls: EndedCalls::default(),
        }
    }

    /// True when the agent may be offered an inbound call (invariant 5).
    pub fn can_be_offered(&self) -> bool {
        self.status == Status::Available
    }

    /// The id of the current call, if any.
    pub fn call_id(&self) -> Option<&CallId> {
        self.call.as_ref().map(|c| &c.call_id)
    }
}
