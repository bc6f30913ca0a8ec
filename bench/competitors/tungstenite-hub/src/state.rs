//! The peer's whole "hub": one map of agent states and one `seq` behind one mutex, and the
//! frames it sends (the presence-hub's field names and order, so that frames are the same
//! size and loadgen reads them the same way). Every change is serialized once, under the
//! lock, and handed to the fan-out in `seq` order.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// An agent's state as the hub's `AgentState` (fields the fan-out subset never sets stay null).
#[derive(Serialize, Clone, Debug)]
pub struct AgentState {
    agent_id: String,
    /// Always null: there is no directory.
    name: Option<String>,
    /// Always empty: there are no team filters.
    teams: Vec<String>,
    status: &'static str,
    manual_status: &'static str,
    /// Unix ms of the last change.
    since: u64,
    reason: &'static str,
    note: Option<String>,
    /// Always null: no telephony.
    call: Option<()>,
    ring_expires_at: Option<u64>,
    wrap_up_expires_at: Option<u64>,
    /// Open agent sockets of this id.
    connections: u32,
    missed_in_row: u32,
    /// +1 per change, as the hub.
    version: u64,
}

/// A client message of the subset (unknown fields ignored).
#[derive(Deserialize, Debug)]
pub struct ClientMsg {
    #[serde(rename = "type")]
    pub kind: String,
    /// Echoed in the reply (string or integer).
    #[serde(rename = "ref", default)]
    pub reply_ref: Option<serde_json::Value>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// The manual statuses `set_status` accepts.
const MANUAL: [&str; 4] = ["offline", "available", "busy", "on_break"];

/// What the lock protects.
#[derive(Default)]
struct Inner {
    seq: u64,
    agents: HashMap<String, AgentState>,
}

/// Agent states, the hub-wide sequence, and the epoch.
pub struct Store {
    inner: Mutex<Inner>,
    pub epoch: String,
}

/// Outcome of a `set_status`.
pub enum SetStatus {
    /// The status (or note) changed: new version.
    Changed(u64),
    /// Nothing changed: current version, nothing published.
    Same(u64),
    /// Not a manual status.
    Invalid,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `{"type":"agent","seq":S,"agent":{...}}`.
fn event_frame(seq: u64, a: &AgentState) -> String {
    let agent = serde_json::to_string(a).unwrap_or_default();
    format!(r#"{{"type":"agent","seq":{seq},"agent":{agent}}}"#)
}

/// `,"ref":R` or nothing.
pub fn ref_part(r: &Option<serde_json::Value>) -> String {
    r.as_ref()
        .map_or(String::new(), |v| format!(r#","ref":{v}"#))
}

/// An error reply.
pub fn error_frame(r: &Option<serde_json::Value>, code: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error"{},"code":"{code}","message":"{message}"}}"#,
        ref_part(r)
    )
}

impl Store {
    pub fn new() -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            epoch: format!("{:012x}", now_ms() ^ 0x5eed_0000_0000),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An agent socket opened: the agent exists (offline) from now on, its connection count
    /// goes up, the change is published. Returns the `hello` frame.
    pub fn login(&self, id: &str, publish: impl FnOnce(String)) -> String {
        let mut g = self.lock();
        g.seq += 1;
        let seq = g.seq;
        let a = g.agents.entry(id.to_owned()).or_insert_with(|| AgentState {
            agent_id: id.to_owned(),
            name: None,
            teams: Vec::new(),
            status: "offline",
            manual_status: "offline",
            since: now_ms(),
            reason: "login",
            note: None,
            call: None,
            ring_expires_at: None,
            wrap_up_expires_at: None,
            connections: 0,
            missed_in_row: 0,
            version: 0,
        });
        a.connections += 1;
        a.reason = "login";
        a.version += 1;
        let agent = serde_json::to_string(&*a).unwrap_or_default();
        publish(event_frame(seq, a));
        format!(
            r#"{{"type":"hello","role":"agent","agent":{agent},"server_time":{},"epoch":"{}","seq":{seq}}}"#,
            now_ms(),
            self.epoch
        )
    }

    /// An agent socket closed (no event: the hub's grace period is not modelled).
    pub fn logout(&self, id: &str) {
        if let Some(a) = self.lock().agents.get_mut(id) {
            a.connections = a.connections.saturating_sub(1);
        }
    }

    /// `set_status` of agent `id`; a change is serialized and published under the lock, so
    /// the fan-out sees events in `seq` order.
    pub fn set_status(
        &self,
        id: &str,
        status: &str,
        note: Option<String>,
        publish: impl FnOnce(String),
    ) -> SetStatus {
        let Some(&status) = MANUAL.iter().find(|s| **s == status) else {
            return SetStatus::Invalid;
        };
        let mut g = self.lock();
        let seq = g.seq + 1;
        let Some(a) = g.agents.get_mut(id) else {
            return SetStatus::Invalid;
        };
        if a.status == status && a.note == note {
            return SetStatus::Same(a.version);
        }
        a.status = status;
        a.manual_status = status;
        a.note = note;
        a.reason = "manual";
        a.since = now_ms();
        a.version += 1;
        let version = a.version;
        publish(event_frame(seq, a));
        g.seq = seq;
        SetStatus::Changed(version)
    }

    /// The `subscribe` reply (a snapshot) for `reply_ref`, built under the lock; `subscribe`
    /// runs under the same lock, so every event after the snapshot's `seq` reaches the
    /// subscription and none before it.
    pub fn snapshot<T>(
        &self,
        reply_ref: &Option<serde_json::Value>,
        subscribe: impl FnOnce(&str) -> T,
    ) -> T {
        let g = self.lock();
        let agents: Vec<&AgentState> = g.agents.values().collect();
        let list = serde_json::to_string(&agents).unwrap_or_default();
        let reply = format!(
            r#"{{"type":"ok"{},"snapshot":{{"epoch":"{}","seq":{},"agents":{list}}}}}"#,
            ref_part(reply_ref),
            self.epoch,
            g.seq
        );
        subscribe(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_bump_version_and_seq_and_publish_in_order() {
        let s = Store::new();
        let mut frames = Vec::new();
        let hello = s.login("a1", |f| frames.push(f));
        assert!(hello.starts_with(r#"{"type":"hello","role":"agent","agent":{"agent_id":"a1""#));
        let r = s.set_status("a1", "busy", Some("n1".into()), |f| frames.push(f));
        assert!(matches!(r, SetStatus::Changed(2)));
        let r = s.set_status("a1", "busy", Some("n1".into()), |f| frames.push(f));
        assert!(matches!(r, SetStatus::Same(2)));
        assert!(matches!(
            s.set_status("a1", "ringing", None, |f| frames.push(f)),
            SetStatus::Invalid
        ));
        assert_eq!(frames.len(), 2);
        assert!(frames[1].starts_with(r#"{"type":"agent","seq":2,"agent":{"agent_id":"a1""#));
        assert!(frames[1].contains(r#""reason":"manual","note":"n1""#));
        assert!(frames[1].ends_with(r#""version":2}}"#));
        let snap = s.snapshot(&Some(serde_json::json!(1)), str::to_owned);
        assert!(snap.starts_with(r#"{"type":"ok","ref":1,"snapshot":{"epoch":"#));
        assert!(snap.contains(r#""seq":2,"agents":[{"agent_id":"a1""#));
    }
}
