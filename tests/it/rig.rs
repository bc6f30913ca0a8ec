//! A test rig for the rows of docs/status-model.md over real sockets: one hub or a
//! three-node cluster ([`Topology`]), an admin subscribed to everything, a telephony adapter
//! socket and the tabs of one agent. It keeps the last state every observer saw, and
//! [`Rig::step`] checks that the next change reaches the admin and every tab as the same
//! single update (hub-wide `seq` + 1, `version` + 1), with exactly the expected
//! `AgentState`. [`Rig::finish`] checks that the admin's view is what every node serves.

use crate::common::*;
use crate::topology::Nodes;
pub(crate) use crate::topology::{both_topologies, Topology};
use presence_hub::Settings;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The agent every rig drives.
pub const ID: &str = "a1";

/// Keeps tokio's paused clock from auto-advancing while it lives.
///
/// With `start_paused = true` tokio moves the clock to the next timer whenever the runtime
/// parks, even when the park found socket IO ready (a wake from IO does not count), so every
/// loopback round trip would jump time forward and fire timeouts at random. A running
/// `spawn_blocking` task inhibits auto-advance; time then moves only by
/// [`tokio::time::advance`], which makes the timer tests deterministic.
pub struct FrozenClock {
    _release: std::sync::mpsc::Sender<()>,
}

/// Real time after which a frozen clock thaws, so that a test waiting for something that
/// never comes fails on the harness's `PATIENCE` timeouts instead of hanging.
const THAW_AFTER: Duration = Duration::from_secs(60);

/// Freezes paused time until the returned guard is dropped (or [`THAW_AFTER`] of real time
/// passed). Call it first in the test.
pub fn freeze_time() -> FrozenClock {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(THAW_AFTER) {
            eprintln!("frozen clock thawed after {THAW_AFTER:?}: the test is stuck");
        }
    });
    FrozenClock { _release: release }
}

/// Moves paused time forward by `ms` and lets due timers run.
pub async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// The state of an agent the hub has never seen (`since` unknown).
pub fn fresh(id: &str) -> Value {
    json!({
        "agent_id": id, "name": null, "teams": [],
        "status": "offline", "manual_status": "offline", "since": null, "reason": null,
        "note": null, "call": null, "ring_expires_at": null, "wrap_up_expires_at": null,
        "connections": 0, "missed_in_row": 0, "version": 0
    })
}

/// An inbound call as the hub shows it right after the offer.
pub fn inbound(call_id: &str, offer: &Value, offered_at: u64) -> Value {
    json!({
        "call_id": call_id, "direction": "inbound",
        "ring_group": offer.get("ring_group").cloned().unwrap_or(Value::Null),
        "from": offer.get("from").cloned().unwrap_or(Value::Null),
        "to": offer.get("to").cloned().unwrap_or(Value::Null),
        "offered_at": offered_at, "answered_at": null
    })
}

/// An outbound call as the hub shows it right after it started.
pub fn outbound(call_id: &str, to: Value, started_at: u64) -> Value {
    json!({
        "call_id": call_id, "direction": "outbound", "ring_group": null, "from": null,
        "to": to, "offered_at": null, "answered_at": started_at
    })
}

/// `v` without its `ref`.
pub fn strip_ref(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("ref");
    }
    v
}

/// Asserts an `ok` reply and returns it.
pub fn assert_ok(reply: &Value) -> &Value {
    assert_eq!(reply["type"], "ok", "expected ok, got {reply}");
    reply
}

/// Asserts an `error` reply with `code` and a human-readable message.
pub fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "expected error {code}, got {reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {reply}"
    );
}

/// The next frame of `c`, which must be an `agent` update.
pub async fn next_update(c: &mut Client, who: &str) -> Value {
    let v = c.recv().await;
    assert_eq!(
        v["type"], "agent",
        "{who}: expected an agent update, got {v}"
    );
    v
}

/// Reads the `logged_out` frame and the close that must follow it.
pub async fn expect_logged_out(mut tab: Client, reason: &str) {
    let (frames, closed) = tab.drain_until_closed().await;
    assert_eq!(
        frames,
        vec![json!({"type": "logged_out", "reason": reason})],
        "only logged_out before the close"
    );
    assert_eq!(closed, Closed::Code(1000), "logout closes with 1000");
}

pub struct Rig {
    /// The hub, or the cluster's nodes.
    pub nodes: Nodes,
    pub admin: Client,
    pub tel: Client,
    /// Open tabs of the agent, oldest first.
    pub tabs: Vec<Client>,
    pub id: String,
    /// The agent's state as every observer last saw it.
    pub state: Value,
    /// The hub-wide seq of the last update.
    pub seq: u64,
    pub epoch: Value,
    /// Tabs opened so far (closed ones included): picks the next tab's node.
    tabs_opened: usize,
    /// Every agent as the admin saw it: its snapshot with every update applied.
    view: BTreeMap<String, Value>,
}

impl Rig {
    /// The nodes of `topology`, an admin, a telephony socket, and agent [`ID`] logged in
    /// with one tab.
    pub async fn start(topology: Topology, settings: Settings) -> Rig {
        let mut rig = Rig::without_agent(topology, settings).await;
        rig.login().await;
        rig
    }

    /// The nodes of `topology`, an admin and a telephony socket; the agent has never
    /// connected.
    pub async fn without_agent(topology: Topology, settings: Settings) -> Rig {
        let nodes = Nodes::start(topology, settings).await;
        let (admin, snap) = nodes.admin_node().admin("boss").await;
        let tel = nodes.telephony_node().telephony().await;
        let seq = snap["snapshot"]["seq"].as_u64().expect("snapshot seq");
        let epoch = snap["snapshot"]["epoch"].clone();
        assert!(epoch.is_string(), "{snap}");
        let view: BTreeMap<String, Value> = snap["snapshot"]["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| {
                (
                    a["agent_id"].as_str().expect("agent_id").to_owned(),
                    a.clone(),
                )
            })
            .collect();
        let state = view.get(ID).cloned().unwrap_or_else(|| fresh(ID));
        Rig {
            nodes,
            admin,
            tel,
            tabs: Vec::new(),
            id: ID.to_string(),
            state,
            seq,
            epoch,
            tabs_opened: 0,
            view,
        }
    }

    /// The admin's node (the only one of a single node): for HTTP calls of a test.
    pub fn hub(&self) -> &TestHub {
        self.nodes.admin_node()
    }

    fn version(&self) -> u64 {
        self.state["version"].as_u64().expect("version")
    }

    /// Reads the next change on the admin and every open tab: the same single frame with
    /// `seq` + 1, whose agent equals the last state changed by `f` (given the update's
    /// `since`, which is "now" whenever the status changed) with `version` + 1. `since` must
    /// stay unless `status` changed.
    pub async fn step(&mut self, f: impl FnOnce(&mut Value, u64)) -> Value {
        let frame = next_update(&mut self.admin, "admin").await;
        assert_eq!(
            frame["seq"].as_u64(),
            Some(self.seq + 1),
            "hub-wide seq + 1: {frame}"
        );
        for (i, tab) in self.tabs.iter_mut().enumerate() {
            let t = next_update(tab, &format!("tab {i}")).await;
            assert_eq!(t, frame, "tab {i} gets the admin's update");
        }
        let actual = frame["agent"].clone();
        let now = actual["since"].as_u64().expect("since is a number");
        let mut expected = self.state.clone();
        f(&mut expected, now);
        expected["version"] = json!(self.version() + 1);
        if expected["status"] != self.state["status"] || self.state["since"].is_null() {
            if let Some(before) = self.state["since"].as_u64() {
                assert!(now >= before, "since went back: {before} -> {now}");
            }
            expected["since"] = json!(now);
        }
        assert_eq!(actual, expected, "\nactual   {actual}\nexpected {expected}");
        self.seq += 1;
        self.state = actual.clone();
        self.view.insert(self.id.clone(), actual.clone());
        actual
    }

    /// Opens a tab; its `hello` must carry the state after the change `f` describes, which
    /// reaches the admin and the other tabs as one update. Returns the hello.
    pub async fn open_tab(&mut self, f: impl FnOnce(&mut Value, u64)) -> Value {
        let node = self.nodes.tab_node(self.tabs_opened);
        self.tabs_opened += 1;
        let (tab, hello) = node.agent(&self.id).await;
        let agent = self.step(f).await;
        assert_eq!(hello["role"], "agent", "{hello}");
        assert_eq!(hello["epoch"], self.epoch, "{hello}");
        assert!(hello["server_time"].is_u64(), "{hello}");
        assert_eq!(hello["agent"], agent, "hello carries the current state");
        self.tabs.push(tab);
        hello
    }

    /// Row 1: the first tab of an agent in a manual status logs it in, offline.
    pub async fn login(&mut self) -> Value {
        assert!(self.tabs.is_empty());
        self.open_tab(|e, _| {
            e["status"] = json!("offline");
            e["manual_status"] = json!("offline");
            e["note"] = Value::Null;
            e["reason"] = json!("login");
            e["connections"] = json!(1);
        })
        .await
    }

    /// Closes tab `i` without logout; the change is one update with `connections` - 1.
    pub async fn close_tab(&mut self, i: usize) {
        let tab = self.tabs.remove(i);
        tab.close().await;
        self.step(|e, _| {
            e["connections"] = json!(e["connections"].as_u64().expect("connections") - 1);
        })
        .await;
    }

    /// A request from tab `i`.
    pub async fn tab_req(&mut self, i: usize, v: Value) -> Value {
        self.tabs[i].request(v).await
    }

    /// An admin request.
    pub async fn admin_req(&mut self, v: Value) -> Value {
        self.admin.request(v).await
    }

    /// A telephony event for the rig's agent with extra fields, over the socket.
    pub async fn tel_event(&mut self, kind: &str, call_id: &str, extra: Value) -> Value {
        let mut ev = event(kind, call_id, &self.id);
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                ev[k] = v.clone();
            }
        }
        self.tel.request(ev).await
    }

    /// Asserts an `ok` reply to an agent/admin request carrying the current version.
    pub fn assert_ok_version(&self, reply: &Value) {
        assert_ok(reply);
        assert_eq!(reply["version"], self.state["version"], "{reply}");
    }

    /// Asserts a telephony `ok` reply `{..fields, agent: <current state>}`.
    pub fn assert_tel_ok(&self, reply: &Value, fields: Value) {
        let mut expected = fields;
        expected["type"] = json!("ok");
        expected["agent"] = self.state.clone();
        assert_eq!(strip_ref(reply), expected, "telephony reply");
    }

    /// Sets a manual status from a manual status (row 3) through tab 0.
    pub async fn set(&mut self, status: &str, note: Option<&str>) {
        let mut req = json!({"type": "set_status", "status": status});
        if let Some(n) = note {
            req["note"] = json!(n);
        }
        let reply = self.tab_req(0, req).await;
        self.step(|e, _| {
            e["status"] = json!(status);
            e["manual_status"] = json!(status);
            e["note"] = json!(note);
            e["reason"] = json!("manual");
            e["missed_in_row"] = json!(0);
        })
        .await;
        self.assert_ok_version(&reply);
    }

    /// Row 7: offers `call_id` (with `extra` offer fields) to the available agent; checks
    /// the reply, the update, and `call_offered` on every tab. `ring_ms` is the expected
    /// ring timeout.
    pub async fn offer(&mut self, call_id: &str, extra: Value, ring_ms: u64) {
        let reply = self.tel_event("call_offered", call_id, extra.clone()).await;
        self.step(|e, now| {
            e["status"] = json!("ringing");
            e["reason"] = json!("call_offered");
            e["call"] = inbound(call_id, &extra, now);
            e["ring_expires_at"] = json!(now + ring_ms);
        })
        .await;
        self.assert_tel_ok(&reply, json!({"accepted": true}));
        self.expect_call_offered().await;
    }

    /// Every tab's next frame is `call_offered` for the current call.
    pub async fn expect_call_offered(&mut self) {
        let offered = json!({
            "type": "call_offered",
            "call": self.state["call"],
            "ring_expires_at": self.state["ring_expires_at"],
        });
        for (i, tab) in self.tabs.iter_mut().enumerate() {
            assert_eq!(tab.recv().await, offered, "tab {i} shows the call");
        }
    }

    /// The adapter's next frame is the notification `kind` for `call_id` of this agent
    /// (`reason` for `call_declined`).
    pub async fn expect_notice(&mut self, kind: &str, call_id: &str, reason: Option<&str>) {
        let mut expected = json!({"type": kind, "call_id": call_id, "agent_id": self.id});
        if let Some(r) = reason {
            expected["reason"] = json!(r);
        }
        assert_eq!(self.tel.recv().await, expected, "telephony notification");
    }

    /// Row 9: tab `i` accepts the ringing call; telephony is told.
    pub async fn accept(&mut self, i: usize) {
        let call_id = self.state["call"]["call_id"].clone();
        let reply = self
            .tab_req(i, json!({"type": "accept_call", "call_id": call_id}))
            .await;
        self.step(|e, now| {
            e["status"] = json!("on_call");
            e["reason"] = json!("call_accepted");
            e["ring_expires_at"] = Value::Null;
            e["missed_in_row"] = json!(0);
            e["call"]["answered_at"] = json!(now);
        })
        .await;
        self.assert_ok_version(&reply);
        let notice = self.tel.recv().await;
        assert_eq!(
            notice,
            json!({"type": "call_accepted", "call_id": call_id, "agent_id": self.id})
        );
    }

    /// Row 13: telephony ends the current call; `wrap_ms` is the agent's wrap-up time.
    pub async fn end_call(&mut self, wrap_ms: u64) {
        let call_id = self.state["call"]["call_id"]
            .as_str()
            .expect("a current call")
            .to_string();
        let reply = self.tel_event("call_ended", &call_id, json!({})).await;
        self.step(|e, now| {
            e["reason"] = json!("call_ended");
            if wrap_ms > 0 {
                e["status"] = json!("wrap_up");
                e["wrap_up_expires_at"] = json!(now + wrap_ms);
            } else {
                e["status"] = e["manual_status"].clone();
                e["call"] = Value::Null;
            }
        })
        .await;
        self.assert_tel_ok(&reply, json!({}));
    }

    /// Every node's HTTP view of the agent must equal what the observers saw.
    pub async fn check_http(&self) {
        for (i, hub) in self.nodes.hubs.iter().enumerate() {
            assert_eq!(hub.agent_state(&self.id).await, self.state, "node {i}");
        }
    }

    /// The admin's view (its snapshot with every update applied) must be what every node
    /// serves: `GET /api/v1/agents` and a new admin's snapshot, with the same `epoch` and
    /// `seq`.
    pub async fn check_views(&self) {
        let agents: Vec<Value> = self.view.values().cloned().collect();
        for (i, hub) in self.nodes.hubs.iter().enumerate() {
            let (status, body) = hub.get("/api/v1/agents").await;
            assert_eq!(status, 200, "node {i}: {body}");
            assert_eq!(
                body["agents"],
                json!(agents),
                "node {i}: GET /api/v1/agents"
            );
            assert_eq!(
                body["seq"],
                json!(self.seq),
                "node {i}: seq of GET /api/v1/agents"
            );
            assert_eq!(body["epoch"], self.epoch, "node {i}: epoch");
            let (admin, snap) = hub.admin("auditor").await;
            let mut seen = snap["snapshot"]["agents"]
                .as_array()
                .cloned()
                .expect("agents");
            seen.sort_by(|a, b| a["agent_id"].as_str().cmp(&b["agent_id"].as_str()));
            assert_eq!(
                json!(seen),
                json!(agents),
                "node {i}: a new admin's snapshot"
            );
            assert_eq!(
                snap["snapshot"]["seq"],
                json!(self.seq),
                "node {i}: snapshot seq"
            );
            admin.close().await;
        }
    }

    /// Nothing more for the admin, any tab or the adapter.
    pub async fn quiet(&mut self) {
        self.admin.expect_quiet().await;
        for tab in &mut self.tabs {
            tab.expect_quiet().await;
        }
        self.tel.expect_quiet().await;
    }

    /// Checks quiet and that every node serves the admin's view, then stops the nodes.
    pub async fn finish(mut self) {
        self.quiet().await;
        self.check_views().await;
        self.nodes.stop().await;
    }
}
