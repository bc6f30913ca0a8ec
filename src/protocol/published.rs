//! The published update: an agent's state serialized once into its `agent` frame (the hot
//! frame every subscriber gets a clone of), with the few fields filters and the HTTP API
//! read without asking the actor. Built by the fan-out, stored by the store, written by
//! every socket: so it lives here, below all of them.

use std::fmt::Write as _;
use std::sync::Arc;

use super::Text;
use crate::model::{AgentId, AgentState, Millis, Status, TeamId};

/// The latest published state of one agent: its update frame plus the fields filters and
/// the HTTP API need, so nobody has to ask the actor. One per agent stays alive (and one
/// per update in the `resume` history): kept compact, no spare capacity anywhere.
#[derive(Debug)]
pub struct Published {
    pub agent_id: AgentId,
    /// For subscriber filters (a boxed slice: no spare capacity).
    pub teams: Box<[TeamId]>,
    pub status: Status,
    pub since: Millis,
    pub version: u64,
    pub connections: u32,
    /// The hub-wide sequence number of this update (the current `seq` for a registration).
    pub seq: u64,
    /// `{"type":"agent","seq":N,"agent":{...}}`.
    pub frame: Text,
    /// Where the `AgentState` object starts inside `frame` (a short prefix: fits in `u32`).
    agent_start: u32,
}

impl Published {
    /// The `AgentState` JSON object.
    pub fn agent_json(&self) -> &str {
        let f = self.frame.as_str();
        &f[self.agent_start as usize..f.len() - 1]
    }

    /// The JSON of `state`, serialized before taking the fan-out lock (the number `seq` is
    /// only known under it): pass it to [`Published::build`].
    pub fn serialize(state: &AgentState) -> String {
        // AgentState holds only strings, numbers and enums: serialization cannot fail.
        serde_json::to_string(state).unwrap_or_else(|_| "{}".to_string())
    }

    /// The update of `state` numbered `seq`, around its JSON from [`Published::serialize`].
    /// The one place the hot `agent` frame is assembled by hand (measured: it is built once
    /// and cloned to every subscriber, and the prefix must be known to slice the state out).
    pub fn build(state: &AgentState, seq: u64, json: &str) -> Published {
        // Written straight into the frame (one allocation per update, not two); the
        // prefix is `{"type":"agent","seq":N,"agent":`, at most 51 bytes.
        let mut frame = String::with_capacity(52 + json.len() + 1);
        frame.push_str(r#"{"type":"agent","seq":"#);
        // Writing to a `String` cannot fail.
        let _ = write!(frame, "{seq}");
        frame.push_str(r#","agent":"#);
        let prefix_len = frame.len();
        frame.push_str(json);
        frame.push('}');
        Published {
            agent_id: state.agent_id.clone(),
            teams: state.teams.as_slice().into(),
            status: state.status,
            since: state.since,
            version: state.version,
            connections: state.connections,
            seq,
            frame: Text::from(frame),
            // The prefix is `{"type":"agent","seq":N,"agent":`: a few dozen bytes.
            agent_start: u32::try_from(prefix_len).unwrap_or(0),
        }
    }
}

/// Orders agents by id (done by the reader, outside the lock).
pub fn sort_by_id(agents: &mut [Arc<Published>]) {
    agents.sort_unstable_by(|a, b| a.agent_id.cmp(&b.agent_id));
}

/// The `ok` reply carrying a `snapshot` (to `subscribe`, or a `resume` that could not be
/// recovered). Like the agent list it holds, assembled around the pre-serialized agent
/// states (a snapshot of 100k agents is ~30 MB: serializing them again, or even checking
/// them, would cost the socket task that renders it tens of milliseconds).
pub fn snapshot(
    reply_ref: Option<&super::Ref>,
    recovered: Option<bool>,
    epoch: &str,
    seq: u64,
    agents: &[Arc<Published>],
) -> String {
    let body: usize = agents.iter().map(|a| a.agent_json().len() + 1).sum();
    let mut out = String::with_capacity(body + 128);
    out.push_str(r#"{"type":"ok""#);
    if let Some(r) = reply_ref {
        out.push_str(r#","ref":"#);
        out.push_str(&r.to_json());
    }
    if let Some(recovered) = recovered {
        out.push_str(if recovered {
            r#","recovered":true"#
        } else {
            r#","recovered":false"#
        });
    }
    out.push_str(r#","snapshot":"#);
    render_agent_list(&mut out, epoch, seq, agents);
    out.push('}');
    out
}

/// Writes `{"epoch":..,"seq":..,"agents":[..]}` from pre-serialized agent states (the
/// snapshot's body, and `GET /api/v1/agents`).
pub fn render_agent_list(out: &mut String, epoch: &str, seq: u64, agents: &[Arc<Published>]) {
    out.push_str(r#"{"epoch":"#);
    out.push_str(&crate::protocol::json_string(epoch));
    out.push_str(r#","seq":"#);
    out.push_str(&seq.to_string());
    out.push_str(r#","agents":["#);
    for (i, a) in agents.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(a.agent_json());
    }
    out.push_str("]}");
}
