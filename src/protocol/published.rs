//! The published update: an agent's state serialized once into its `agent` frame (the hot
//! frame every subscriber gets a clone of), with its compact state ([`LatestState`], what
//! filters, snapshots and the HTTP API read without asking the actor). Built by the
//! fan-out, stored by the store, written by every socket: so it lives here, below all of
//! them.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{LatestState, Text};
use crate::model::AgentState;

/// One published update: its `agent` frame (what the feed, the agent's tabs and the store
/// take) and the compact state the fan-out keeps once the frame is written
/// ([`LatestState`]: filters and the HTTP API read it, snapshots render from it). Lives
/// only while the frame is on its way.
#[derive(Debug)]
pub struct Published {
    /// The state and `seq` of this update (kept by the fan-out after the frame is gone).
    pub latest: Arc<LatestState>,
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
    pub fn build(state: &AgentState, seq: u64, json: &str) -> Published {
        Published::around(Arc::new(LatestState::of(state, seq)), json)
    }

    fn around(latest: Arc<LatestState>, json: &str) -> Published {
        let (frame, prefix_len) = frame(latest.seq, json);
        Published {
            latest,
            frame: Text::from(frame),
            // The prefix is `{"type":"agent","seq":N,"agent":`: a few dozen bytes.
            agent_start: u32::try_from(prefix_len).unwrap_or(0),
        }
    }
}

/// A published update reads as its state (`p.agent_id`, `p.seq`, `p.version`, ...): the
/// frame is the only thing it adds.
impl std::ops::Deref for Published {
    type Target = LatestState;

    fn deref(&self) -> &LatestState {
        &self.latest
    }
}

/// The `agent` frame of update `seq` around the state's JSON, and where the JSON starts in
/// it. The one place the hot `agent` frame is assembled by hand (measured: it is built once
/// and cloned to every subscriber, and the prefix must be known to slice the state out).
pub(super) fn frame(seq: u64, json: &str) -> (String, usize) {
    // Written straight into the frame (one allocation per update, not two); the prefix is
    // `{"type":"agent","seq":N,"agent":`, at most 51 bytes.
    let mut frame = String::with_capacity(52 + json.len() + 1);
    frame.push_str(r#"{"type":"agent","seq":"#);
    // Writing to a `String` cannot fail.
    let _ = write!(frame, "{seq}");
    frame.push_str(r#","agent":"#);
    let prefix_len = frame.len();
    frame.push_str(json);
    frame.push('}');
    (frame, prefix_len)
}

/// Orders agents by id (done by the reader, outside the lock).
pub fn sort_by_id(agents: &mut [Arc<LatestState>]) {
    agents.sort_unstable_by(|a, b| a.agent_id.cmp(&b.agent_id));
}

/// The `ok` reply carrying a `snapshot` (to `subscribe`, or a `resume` that could not be
/// recovered), rendered from the agents' kept states (by the socket task that sends it,
/// outside the fan-out lock).
pub fn snapshot(
    reply_ref: Option<&super::Ref>,
    recovered: Option<bool>,
    epoch: &str,
    seq: u64,
    agents: &[Arc<LatestState>],
) -> String {
    let mut out = Vec::with_capacity(agents.len() * AGENT_JSON_GUESS + 128);
    out.extend_from_slice(br#"{"type":"ok""#);
    if let Some(r) = reply_ref {
        out.extend_from_slice(br#","ref":"#);
        out.extend_from_slice(r.to_json().as_bytes());
    }
    if let Some(recovered) = recovered {
        out.extend_from_slice(if recovered {
            br#","recovered":true"#
        } else {
            br#","recovered":false"#
        });
    }
    out.extend_from_slice(br#","snapshot":"#);
    write_agent_list(&mut out, epoch, seq, agents);
    out.push(b'}');
    // Everything written is UTF-8 (the JSON serializer's output and the strings above).
    String::from_utf8(out).unwrap_or_default()
}

/// About the length of one agent's JSON (a logged-in agent without a call is ~230 bytes):
/// the first guess of a snapshot's size.
const AGENT_JSON_GUESS: usize = 256;

/// `{"epoch":..,"seq":..,"agents":[..]}` (`GET /api/v1/agents`).
pub fn render_agent_list(epoch: &str, seq: u64, agents: &[Arc<LatestState>]) -> String {
    let mut out = Vec::with_capacity(agents.len() * AGENT_JSON_GUESS + 64);
    write_agent_list(&mut out, epoch, seq, agents);
    // Everything written is UTF-8 (the JSON serializer's output and the strings above).
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `{"epoch":..,"seq":..,"agents":[..]}` (the snapshot's body, and the agent list
/// of the HTTP API), rendering each agent from its kept state.
fn write_agent_list(out: &mut Vec<u8>, epoch: &str, seq: u64, agents: &[Arc<LatestState>]) {
    out.extend_from_slice(br#"{"epoch":"#);
    out.extend_from_slice(crate::protocol::json_string(epoch).as_bytes());
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(br#","agents":["#);
    for (i, a) in agents.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        a.write_json(out);
    }
    out.extend_from_slice(b"]}");
}
