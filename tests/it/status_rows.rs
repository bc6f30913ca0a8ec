//! Every row of the status-model table (docs/status-model.md), over real sockets, against one
//! node and against a three-node cluster from one body each (`both_topologies!`): an agent tab,
//! an admin subscribed to all and a telephony adapter socket. Each change must reach the
//! admin and every tab as exactly one identical update with the exact resulting state
//! (checked by `Rig::step`), no-op and rejected requests must emit nothing, and telephony
//! must get its notifications. Timer rows run on tokio's paused clock, frozen so that only
//! `tokio::time::advance` moves it (see `rig::freeze_time`).

use crate::common::*;
use crate::rig::*;
use presence_hub::directory::Directory;
use presence_hub::Settings;
use serde_json::{json, Value};
use std::time::Duration;

fn with(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = settings();
    f(&mut s);
    s
}

fn directory(toml: &str) -> Directory {
    Directory::from_toml(toml).expect("directory")
}

// ---------------------------------------------------------------- rows 1, 1b, 2

async fn row_01_first_socket_logs_in_offline_from_any_manual_status(topology: Topology) {
    let mut rig = Rig::without_agent(topology, settings()).await;
    // A fresh agent: version 0 -> 1, offline, reason login, one connection.
    let hello = rig.login().await;
    assert_eq!(hello["agent"]["version"], 1);
    assert_eq!(hello["agent"]["status"], "offline");
    assert_eq!(hello["agent"]["reason"], "login");
    assert_eq!(hello["agent"]["connections"], 1);
    for (status, note) in [
        ("available", None),
        ("busy", Some("lunch")),
        ("on_break", Some("coaching")),
    ] {
        // Log out, let an admin put the logged-out agent in `status`, log in again.
        let reply = rig.tab_req(0, json!({"type": "logout"})).await;
        rig.step(|e, _| {
            e["status"] = json!("offline");
            e["manual_status"] = json!("offline");
            e["note"] = Value::Null;
            e["reason"] = json!("logout");
            e["connections"] = json!(0);
        })
        .await;
        rig.assert_ok_version(&reply);
        expect_logged_out(rig.tabs.remove(0), "logout").await;
        let reply = rig
            .admin_req(
                json!({"type": "set_agent_status", "agent_id": ID, "status": status, "note": note}),
            )
            .await;
        rig.step(|e, _| {
            e["status"] = json!(status);
            e["manual_status"] = json!(status);
            e["note"] = json!(note);
            e["reason"] = json!("admin");
        })
        .await;
        rig.assert_ok_version(&reply);
        rig.quiet().await;
        let hello = rig.login().await;
        assert_eq!(hello["agent"]["status"], "offline", "from {status}");
        assert_eq!(hello["agent"]["note"], Value::Null, "from {status}");
    }
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_01_first_socket_logs_in_offline_from_any_manual_status
);

async fn row_01b_login_during_an_outbound_call_keeps_the_system_status(topology: Topology) {
    let mut rig = Rig::without_agent(topology, with_directory_agents(settings(), &[ID])).await;
    // Row 16 from offline for a directory agent that never logged in.
    let reply = rig
        .tel_event("outbound_started", "out1", json!({"to": "+4930123"}))
        .await;
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("outbound_started");
        e["call"] = outbound("out1", json!("+4930123"), now);
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    assert_eq!(rig.state["version"], 1);
    assert_eq!(rig.state["manual_status"], "offline");
    assert_eq!(rig.state["connections"], 0);
    // An admin picks `available` meanwhile (row 4): manual_status only.
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "available"}))
        .await;
    rig.step(|e, _| {
        e["manual_status"] = json!("available");
        e["reason"] = json!("admin");
    })
    .await;
    rig.assert_ok_version(&reply);
    // Row 1b: login sets manual_status offline, status stays on_call, since unchanged.
    let since = rig.state["since"].clone();
    rig.open_tab(|e, _| {
        e["manual_status"] = json!("offline");
        e["reason"] = json!("login");
        e["connections"] = json!(1);
    })
    .await;
    assert_eq!(rig.state["status"], "on_call");
    assert_eq!(rig.state["since"], since);
    rig.quiet().await;
    // The call ends: back to the manual status the login set.
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "offline");
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_01b_login_during_an_outbound_call_keeps_the_system_status
);

async fn row_02_another_tab_only_adds_a_connection(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("busy", Some("lunch")).await;
    let since = rig.state["since"].clone();
    for n in 2..=3 {
        let hello = rig.open_tab(|e, _| e["connections"] = json!(n)).await;
        assert_eq!(hello["agent"]["reason"], "manual", "reason unchanged");
        assert_eq!(hello["agent"]["status"], "busy");
        assert_eq!(hello["agent"]["note"], "lunch");
        assert_eq!(hello["agent"]["since"], since);
    }
    // Closing a tab that is not the last one: connections - 1, nothing else.
    rig.close_tab(1).await;
    assert_eq!(rig.state["connections"], 2);
    assert_eq!(rig.state["reason"], "manual");
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_02_another_tab_only_adds_a_connection
);

// ---------------------------------------------------------------- rows 3-6

async fn row_03_manual_status_by_agent_and_admin(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.set("busy", Some("lunch")).await;
    // The same status and note again: acknowledged, nothing emitted.
    let v = rig.state["version"].clone();
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "busy", "note": "lunch"}),
        )
        .await;
    assert_ok(&reply);
    assert_eq!(reply["version"], v, "no-op keeps the version");
    rig.quiet().await;
    // Same status, other note: a change (note is part of the state).
    rig.set("busy", Some("meeting")).await;
    // Without a ref a success is silent: only the update comes.
    rig.tabs[0]
        .send(json!({"type": "set_status", "status": "busy", "note": "meeting-2"}))
        .await;
    rig.step(|e, _| e["note"] = json!("meeting-2")).await;
    rig.quiet().await;
    // The admin sets on_break without a note: reason admin, note cleared.
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "on_break"}))
        .await;
    rig.step(|e, _| {
        e["status"] = json!("on_break");
        e["manual_status"] = json!("on_break");
        e["note"] = Value::Null;
        e["reason"] = json!("admin");
    })
    .await;
    rig.assert_ok_version(&reply);
    // Admin no-op.
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "on_break"}))
        .await;
    rig.assert_ok_version(&reply);
    rig.quiet().await;
    // if_version: stale -> conflict carrying the current version, nothing changes.
    let current = rig.state["version"].as_u64().unwrap();
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "available", "if_version": current - 1}),
        )
        .await;
    assert_error(&reply, "conflict");
    assert_eq!(reply["version"], current);
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "offline", "if_version": current + 5}))
        .await;
    assert_error(&reply, "conflict");
    assert_eq!(reply["version"], current);
    rig.quiet().await;
    // Matching if_version: applied.
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "available", "if_version": current}))
        .await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["manual_status"] = json!("available");
        e["reason"] = json!("admin");
    })
    .await;
    rig.assert_ok_version(&reply);
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "offline", "if_version": current + 1}),
        )
        .await;
    rig.step(|e, _| {
        e["status"] = json!("offline");
        e["manual_status"] = json!("offline");
        e["reason"] = json!("manual");
    })
    .await;
    rig.assert_ok_version(&reply);
    // An admin acting on an agent the hub does not know.
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": "nobody", "status": "busy"}))
        .await;
    assert_error(&reply, "unknown_agent");
    let reply = rig
        .admin_req(json!({"type": "logout_agent", "agent_id": "nobody"}))
        .await;
    assert_error(&reply, "unknown_agent");
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_03_manual_status_by_agent_and_admin
);

async fn row_04_manual_status_while_ringing_or_on_call_applies_after_the_call(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    // While ringing: the agent picks busy with a note. Status, call and ring stay.
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "busy", "note": "x"}),
        )
        .await;
    rig.step(|e, _| {
        e["manual_status"] = json!("busy");
        e["note"] = json!("x");
        e["reason"] = json!("manual");
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(rig.state["status"], "ringing");
    // No-op while ringing.
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "busy", "note": "x"}),
        )
        .await;
    rig.assert_ok_version(&reply);
    rig.quiet().await;
    // Ring cancelled: returns to busy, note kept.
    let reply = rig.tel_event("call_cancelled", "c1", json!({})).await;
    rig.step(|e, _| {
        e["status"] = json!("busy");
        e["reason"] = json!("call_cancelled");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    assert_eq!(rig.state["note"], "x");
    // On a call: the admin picks on_break.
    rig.set("available", None).await;
    rig.offer("c2", json!({}), 30_000).await;
    rig.accept(0).await;
    let reply = rig
        .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": "on_break", "note": "coaching"}))
        .await;
    rig.step(|e, _| {
        e["manual_status"] = json!("on_break");
        e["note"] = json!("coaching");
        e["reason"] = json!("admin");
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(rig.state["status"], "on_call");
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "on_break");
    assert_eq!(rig.state["note"], "coaching");
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_04_manual_status_while_ringing_or_on_call_applies_after_the_call
);

async fn row_05_manual_status_ends_wrap_up(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    for (by_admin, status, note, call) in [
        (false, "busy", Some("after"), "c1"),
        (true, "available", None, "c2"),
    ] {
        rig.set("available", None).await;
        rig.offer(call, json!({}), 30_000).await;
        rig.accept(0).await;
        rig.end_call(60_000).await;
        let reply = if by_admin {
            rig.admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": status}))
                .await
        } else {
            rig.tab_req(
                0,
                json!({"type": "set_status", "status": status, "note": note}),
            )
            .await
        };
        rig.step(|e, _| {
            e["status"] = json!(status);
            e["manual_status"] = json!(status);
            e["note"] = json!(note);
            e["call"] = Value::Null;
            e["wrap_up_expires_at"] = Value::Null;
            e["reason"] = json!(if by_admin { "admin" } else { "manual" });
        })
        .await;
        rig.assert_ok_version(&reply);
        rig.quiet().await;
    }
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_05_manual_status_ends_wrap_up
);

async fn row_06_system_statuses_cannot_be_set(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    for status in ["ringing", "on_call", "wrap_up", "sleeping", ""] {
        let reply = rig
            .tab_req(0, json!({"type": "set_status", "status": status}))
            .await;
        assert_error(&reply, "invalid_status");
        let reply = rig
            .admin_req(json!({"type": "set_agent_status", "agent_id": ID, "status": status}))
            .await;
        assert_error(&reply, "invalid_status");
    }
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_06_system_statuses_cannot_be_set
);

// ---------------------------------------------------------------- rows 7-10

async fn row_07_offer_to_an_available_agent_rings_with_the_right_timeout(topology: Topology) {
    let dir = directory(
        r#"
        [[agents]]
        id = "a1"
        name = "Ada"
        teams = ["sales"]

        [[ring_groups]]
        id = "sales-line"
        ring_timeout_seconds = 20
        members = ["a1"]

        [[ring_groups]]
        id = "support-line"
        ring_timeout_seconds = 45
        "#,
    );
    let mut rig = Rig::start(topology, with(|s| s.directory = dir)).await;
    assert_eq!(rig.state["name"], "Ada");
    assert_eq!(rig.state["teams"], json!(["sales"]));
    rig.set("available", None).await;
    // The offer's own timeout wins, with every call field.
    let full = json!({"from": "+4930111", "to": "+4930999", "ring_group": "support-line", "ring_timeout_ms": 12_345});
    rig.offer("c1", full, 12_345).await;
    rig.tel_event("call_cancelled", "c1", json!({})).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("call_cancelled");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
    })
    .await;
    // The offer's ring group's timeout.
    rig.offer("c2", json!({"ring_group": "support-line"}), 45_000)
        .await;
    rig.tel_event("call_cancelled", "c2", json!({})).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("call_cancelled");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
    })
    .await;
    // No ring group in the offer: the agent's own ring group's timeout.
    rig.offer("c3", json!({}), 20_000).await;
    rig.check_http().await;
    rig.finish().await;

    // No group timeout anywhere: the hub default (30 s), and the one from settings.
    for (s, ms) in [
        (settings(), 30_000),
        (with(|s| s.ring_timeout = Duration::from_secs(50)), 50_000),
    ] {
        let mut rig = Rig::start(topology, s).await;
        rig.set("available", None).await;
        rig.offer("c1", json!({"ring_group": "unknown-group"}), ms)
            .await;
        rig.finish().await;
    }
}
both_topologies!(
    #[tokio::test]
    row_07_offer_to_an_available_agent_rings_with_the_right_timeout
);

async fn row_08_offer_to_an_agent_that_is_not_available_is_refused(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    let refuse = |rig: &Rig, reply: &Value| {
        rig.assert_tel_ok(
            reply,
            json!({"accepted": false, "reason": "not_available", "status": rig.state["status"]}),
        );
    };
    // offline (logged in), busy, on_break
    let reply = rig.tel_event("call_offered", "x0", json!({})).await;
    refuse(&rig, &reply);
    rig.set("busy", None).await;
    let reply = rig.tel_event("call_offered", "x1", json!({})).await;
    refuse(&rig, &reply);
    rig.set("on_break", None).await;
    let reply = rig.tel_event("call_offered", "x2", json!({})).await;
    refuse(&rig, &reply);
    rig.quiet().await;
    // ringing, on_call, wrap_up
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    let reply = rig.tel_event("call_offered", "x3", json!({})).await;
    refuse(&rig, &reply);
    assert_eq!(reply["status"], "ringing");
    rig.accept(0).await;
    let reply = rig.tel_event("call_offered", "x4", json!({})).await;
    refuse(&rig, &reply);
    assert_eq!(reply["status"], "on_call");
    rig.end_call(60_000).await;
    let reply = rig.tel_event("call_offered", "x5", json!({})).await;
    refuse(&rig, &reply);
    assert_eq!(reply["status"], "wrap_up");
    rig.quiet().await;
    // An unknown agent.
    let reply = rig.tel.request(event("call_offered", "x6", "nobody")).await;
    assert_eq!(
        strip_ref(&reply),
        json!({"type": "ok", "accepted": false, "reason": "unknown_agent", "status": null})
    );
    rig.quiet().await;
    for (status, _) in rig.nodes.get_all("/api/v1/agents/nobody").await {
        assert_eq!(status, 404, "a refused offer creates no agent");
    }
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_08_offer_to_an_agent_that_is_not_available_is_refused
);

async fn row_09_accept_by_the_agent_or_answered_by_telephony(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({"from": "+1"}), 30_000).await;
    rig.accept(0).await;
    // Telephony confirms the answer afterwards: acknowledged, nothing changes.
    let reply = rig.tel_event("call_answered", "c1", json!({})).await;
    rig.assert_tel_ok(&reply, json!({}));
    rig.quiet().await;
    rig.end_call(0).await;

    // Answered by telephony (no click): on_call, reason call_answered, no notification.
    rig.offer("c2", json!({}), 30_000).await;
    let reply = rig.tel_event("call_answered", "c2", json!({})).await;
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("call_answered");
        e["ring_expires_at"] = Value::Null;
        e["call"]["answered_at"] = json!(now);
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    rig.quiet().await;
    // Accepting it now is the wrong state.
    let reply = rig
        .tab_req(0, json!({"type": "accept_call", "call_id": "c2"}))
        .await;
    assert_error(&reply, "invalid_state");
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_09_accept_by_the_agent_or_answered_by_telephony
);

async fn row_10_decline_sets_busy_and_tells_telephony(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    // A note picked while ringing is cleared by the decline (a manual change without one).
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "on_break", "note": "x"}),
        )
        .await;
    rig.step(|e, _| {
        e["manual_status"] = json!("on_break");
        e["note"] = json!("x");
        e["reason"] = json!("manual");
    })
    .await;
    rig.assert_ok_version(&reply);
    let reply = rig
        .tab_req(0, json!({"type": "decline_call", "call_id": "c1"}))
        .await;
    rig.step(|e, _| {
        e["status"] = json!("busy");
        e["manual_status"] = json!("busy");
        e["note"] = Value::Null;
        e["reason"] = json!("call_declined");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "call_declined", "call_id": "c1", "agent_id": ID, "reason": "declined"})
    );
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_10_decline_sets_busy_and_tells_telephony
);

// ---------------------------------------------------------------- row 11 (paused time)

async fn row_11_ring_timeout_returns_and_counts_missed_rings(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({"ring_timeout_ms": 10_000}), 10_000)
        .await;
    let deadline = rig.state["ring_expires_at"].as_u64().unwrap();
    advance_ms(9_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("ring_timeout");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
        e["missed_in_row"] = json!(1);
    })
    .await;
    assert_eq!(rig.state["since"], deadline, "fired at ring_expires_at");
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "ring_timeout", "call_id": "c1", "agent_id": ID})
    );
    rig.quiet().await;
    // The hub default ring timeout (30 s); the manual status and its note come back.
    rig.set("available", Some("x")).await;
    assert_eq!(rig.state["missed_in_row"], 0, "row 3 resets missed_in_row");
    rig.offer("c2", json!({}), 30_000).await;
    advance_ms(29_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("ring_timeout");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
        e["missed_in_row"] = json!(1);
    })
    .await;
    assert_eq!(rig.state["note"], "x");
    rig.expect_notice("ring_timeout", "c2", None).await;
    // A ring timer dies with its ring: accepted before the deadline, nothing fires later;
    // the accept resets missed_in_row (row 9).
    rig.offer("c3", json!({"ring_timeout_ms": 10_000}), 10_000)
        .await;
    advance_ms(5_000).await;
    rig.accept(0).await;
    assert_eq!(rig.state["missed_in_row"], 0);
    advance_ms(60_000).await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_11_ring_timeout_returns_and_counts_missed_rings
);

async fn row_11_max_missed_in_row_sets_busy_with_note_missed_calls(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(topology, with(|s| s.max_missed_in_row = 2)).await;
    rig.set("available", None).await;
    for (n, call) in [(1u64, "c1"), (2, "c2")] {
        rig.offer(call, json!({"ring_timeout_ms": 5_000}), 5_000)
            .await;
        advance_ms(4_999).await;
        rig.quiet().await;
        advance_ms(1).await;
        rig.step(|e, _| {
            e["reason"] = json!("ring_timeout");
            e["call"] = Value::Null;
            e["ring_expires_at"] = Value::Null;
            e["missed_in_row"] = json!(n);
            if n == 2 {
                e["status"] = json!("busy");
                e["manual_status"] = json!("busy");
                e["note"] = json!("missed_calls");
            } else {
                e["status"] = json!("available");
            }
        })
        .await;
        assert_eq!(
            rig.tel.recv().await,
            json!({"type": "ring_timeout", "call_id": call, "agent_id": ID})
        );
    }
    rig.quiet().await;
    // Busy agents are not offered calls; setting available resets the count.
    let reply = rig.tel_event("call_offered", "c3", json!({})).await;
    assert_eq!(reply["accepted"], false);
    rig.set("available", None).await;
    assert_eq!(rig.state["missed_in_row"], 0);
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_11_max_missed_in_row_sets_busy_with_note_missed_calls
);

// ---------------------------------------------------------------- rows 12-15

async fn row_12_cancel_or_end_while_ringing_returns(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("on_break", Some("x")).await;
    rig.set("available", None).await;
    for (kind, call) in [("call_cancelled", "c1"), ("call_ended", "c2")] {
        rig.offer(call, json!({}), 30_000).await;
        let reply = rig
            .tel_event(kind, call, json!({"cause": "caller_hangup"}))
            .await;
        rig.step(|e, _| {
            e["status"] = json!("available");
            e["reason"] = json!("call_cancelled");
            e["call"] = Value::Null;
            e["ring_expires_at"] = Value::Null;
        })
        .await;
        rig.assert_tel_ok(&reply, json!({}));
        // The adapter gets no notification for its own event.
        rig.quiet().await;
    }
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_12_cancel_or_end_while_ringing_returns
);

async fn row_13_call_ended_without_wrap_up_returns(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "available");
    assert_eq!(rig.state["reason"], "call_ended");
    assert_eq!(rig.state["call"], Value::Null);
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_13_call_ended_without_wrap_up_returns
);

async fn row_13_call_ended_with_wrap_up_from_settings_or_directory(topology: Topology) {
    // Hub default.
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(30))).await;
    rig.set("busy", Some("n")).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    let call = rig.state["call"].clone();
    rig.end_call(30_000).await;
    assert_eq!(rig.state["status"], "wrap_up");
    assert_eq!(rig.state["manual_status"], "available");
    assert_eq!(
        rig.state["call"], call,
        "the call stays shown during wrap-up"
    );
    rig.check_http().await;
    rig.finish().await;

    // The directory's wrap_up_seconds overrides the hub default, both ways.
    let dir = directory(
        r#"
        [[agents]]
        id = "a1"
        wrap_up_seconds = 45
        "#,
    );
    let mut rig = Rig::start(topology, with(|s| s.directory = dir)).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(45_000).await;
    rig.finish().await;
    let dir = directory(
        r#"
        [[agents]]
        id = "a1"
        wrap_up_seconds = 0
        "#,
    );
    let mut rig = Rig::start(
        topology,
        with(|s| {
            s.directory = dir;
            s.wrap_up = Duration::from_secs(30);
        }),
    )
    .await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(0).await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_13_call_ended_with_wrap_up_from_settings_or_directory
);

async fn row_14_wrap_up_timer_returns(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(20))).await;
    rig.set("on_break", Some("after-call")).await;
    // An outbound call from on_break, ended into wrap-up.
    let reply = rig.tel_event("outbound_started", "o1", json!({})).await;
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("outbound_started");
        e["call"] = outbound("o1", Value::Null, now);
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    advance_ms(1_000).await;
    rig.end_call(20_000).await;
    let deadline = rig.state["wrap_up_expires_at"].as_u64().unwrap();
    advance_ms(19_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    rig.step(|e, _| {
        e["status"] = json!("on_break");
        e["reason"] = json!("wrap_up_expired");
        e["call"] = Value::Null;
        e["wrap_up_expires_at"] = Value::Null;
    })
    .await;
    assert_eq!(rig.state["since"], deadline, "fired at wrap_up_expires_at");
    assert_eq!(rig.state["note"], "after-call");
    rig.quiet().await;
    // A wrap-up ended by hand leaves no timer behind.
    rig.set("available", None).await;
    rig.offer("c2", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(20_000).await;
    let reply = rig.tab_req(0, json!({"type": "end_wrap_up"})).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("wrap_up_ended");
        e["call"] = Value::Null;
        e["wrap_up_expires_at"] = Value::Null;
    })
    .await;
    rig.assert_ok_version(&reply);
    advance_ms(60_000).await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_14_wrap_up_timer_returns
);

async fn row_15_agent_ends_wrap_up(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    rig.set("busy", Some("paperwork")).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    // Row 4 during the call, then wrap-up, then the agent ends it: back to busy + note.
    let reply = rig
        .tab_req(
            0,
            json!({"type": "set_status", "status": "busy", "note": "paperwork"}),
        )
        .await;
    rig.step(|e, _| {
        e["manual_status"] = json!("busy");
        e["note"] = json!("paperwork");
        e["reason"] = json!("manual");
    })
    .await;
    rig.assert_ok_version(&reply);
    rig.end_call(60_000).await;
    let reply = rig.tab_req(0, json!({"type": "end_wrap_up"})).await;
    rig.step(|e, _| {
        e["status"] = json!("busy");
        e["reason"] = json!("wrap_up_ended");
        e["call"] = Value::Null;
        e["wrap_up_expires_at"] = Value::Null;
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(rig.state["note"], "paperwork");
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_15_agent_ends_wrap_up
);

// ---------------------------------------------------------------- rows 16-17

async fn row_16_outbound_from_any_manual_status_and_from_wrap_up(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    // From offline (logged in), available, busy, on_break.
    for (i, status) in ["offline", "available", "busy", "on_break"]
        .into_iter()
        .enumerate()
    {
        if status != "offline" {
            rig.set(status, None).await;
        }
        let call = format!("o{i}");
        let reply = rig
            .tel_event("outbound_started", &call, json!({"to": "+49"}))
            .await;
        rig.step(|e, now| {
            e["status"] = json!("on_call");
            e["reason"] = json!("outbound_started");
            e["call"] = outbound(&call, json!("+49"), now);
        })
        .await;
        rig.assert_tel_ok(&reply, json!({}));
        assert_eq!(rig.state["manual_status"], status);
        // The same call started again (a retry with a new event id): nothing changes.
        let reply = rig
            .tel_event("outbound_started", &call, json!({"to": "+49"}))
            .await;
        rig.assert_tel_ok(&reply, json!({}));
        rig.quiet().await;
        rig.end_call(60_000).await;
        let reply = rig.tab_req(0, json!({"type": "end_wrap_up"})).await;
        rig.step(|e, _| {
            e["status"] = json!(status);
            e["reason"] = json!("wrap_up_ended");
            e["call"] = Value::Null;
            e["wrap_up_expires_at"] = Value::Null;
        })
        .await;
        rig.assert_ok_version(&reply);
    }
    // From wrap_up: it ends the wrap-up.
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(60_000).await;
    let reply = rig.tel_event("outbound_started", "o9", json!({})).await;
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("outbound_started");
        e["wrap_up_expires_at"] = Value::Null;
        e["call"] = outbound("o9", Value::Null, now);
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    rig.end_call(60_000).await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_16_outbound_from_any_manual_status_and_from_wrap_up
);

async fn row_16_outbound_for_an_agent_that_never_logged_in(topology: Topology) {
    // An agent the hub does not know (not in the directory, never logged in): nothing is
    // created, the event is answered `unknown_agent`.
    let mut rig = Rig::without_agent(topology, settings()).await;
    for (status, _) in rig.nodes.get_all(&format!("/api/v1/agents/{ID}")).await {
        assert_eq!(status, 404);
    }
    let reply = rig.tel_event("outbound_started", "o0", json!({})).await;
    assert_error(&reply, "unknown_agent");
    for (status, _) in rig.nodes.get_all(&format!("/api/v1/agents/{ID}")).await {
        assert_eq!(status, 404, "nothing was created");
    }
    rig.finish().await;
    // A directory agent that never logged in: offline, and it may dial out.
    let mut rig = Rig::without_agent(topology, with_directory_agents(settings(), &[ID])).await;
    let reply = rig.tel_event("outbound_started", "o1", json!({})).await;
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("outbound_started");
        e["call"] = outbound("o1", Value::Null, now);
    })
    .await;
    rig.assert_tel_ok(&reply, json!({}));
    rig.check_http().await;
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "offline");
    assert_eq!(rig.state["connections"], 0);
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_16_outbound_for_an_agent_that_never_logged_in
);

async fn row_17_outbound_while_ringing_or_on_another_call_is_refused(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    let reply = rig.tel_event("outbound_started", "o1", json!({})).await;
    assert_error(&reply, "invalid_state");
    assert_eq!(reply["status"], "ringing");
    // Even for the ringing call's id.
    let reply = rig.tel_event("outbound_started", "c1", json!({})).await;
    assert_error(&reply, "invalid_state");
    rig.quiet().await;
    rig.accept(0).await;
    let reply = rig.tel_event("outbound_started", "o2", json!({})).await;
    assert_error(&reply, "invalid_state");
    assert_eq!(reply["status"], "on_call");
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_17_outbound_while_ringing_or_on_another_call_is_refused
);

// ---------------------------------------------------------------- rows 18-20

fn logged_out(e: &mut Value, reason: &str) {
    e["status"] = json!("offline");
    e["manual_status"] = json!("offline");
    e["note"] = Value::Null;
    e["reason"] = json!(reason);
    e["connections"] = json!(0);
    e["call"] = Value::Null;
    e["ring_expires_at"] = Value::Null;
    e["wrap_up_expires_at"] = Value::Null;
}

async fn row_18_agent_logout_closes_every_tab(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("busy", Some("lunch")).await;
    rig.open_tab(|e, _| e["connections"] = json!(2)).await;
    // The second tab logs out: both tabs see the update, then logged_out and close 1000.
    let reply = rig.tab_req(1, json!({"type": "logout"})).await;
    rig.step(|e, _| logged_out(e, "logout")).await;
    rig.assert_ok_version(&reply);
    for tab in std::mem::take(&mut rig.tabs) {
        expect_logged_out(tab, "logout").await;
    }
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_18_agent_logout_closes_every_tab
);

async fn row_18_admin_logout_closes_every_tab_also_from_wrap_up(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    rig.set("available", None).await;
    rig.open_tab(|e, _| e["connections"] = json!(2)).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(1).await;
    rig.end_call(60_000).await;
    let reply = rig
        .admin_req(json!({"type": "logout_agent", "agent_id": ID}))
        .await;
    rig.step(|e, _| logged_out(e, "admin_logout")).await;
    rig.assert_ok_version(&reply);
    for tab in std::mem::take(&mut rig.tabs) {
        expect_logged_out(tab, "admin_logout").await;
    }
    rig.quiet().await;
    // Logging out a logged-out agent is a no-op.
    let reply = rig
        .admin_req(json!({"type": "logout_agent", "agent_id": ID}))
        .await;
    rig.assert_ok_version(&reply);
    rig.quiet().await;
    // The agent logs in again (row 1) and logs out from wrap-up itself.
    rig.login().await;
    rig.set("available", None).await;
    rig.offer("c2", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.end_call(60_000).await;
    let reply = rig.tab_req(0, json!({"type": "logout"})).await;
    rig.step(|e, _| logged_out(e, "logout")).await;
    rig.assert_ok_version(&reply);
    expect_logged_out(rig.tabs.remove(0), "logout").await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_18_admin_logout_closes_every_tab_also_from_wrap_up
);

async fn row_19_logout_while_ringing_declines_the_call(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    let reply = rig.tab_req(0, json!({"type": "logout"})).await;
    rig.step(|e, _| logged_out(e, "logout")).await;
    rig.assert_ok_version(&reply);
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "call_declined", "call_id": "c1", "agent_id": ID, "reason": "logout"})
    );
    expect_logged_out(rig.tabs.remove(0), "logout").await;
    rig.quiet().await;
    // Late events for that call are stale now.
    let reply = rig.tel_event("call_cancelled", "c1", json!({})).await;
    rig.assert_tel_ok(&reply, json!({"stale": true}));
    // The same through an admin logout.
    rig.login().await;
    rig.set("available", None).await;
    rig.offer("c2", json!({}), 30_000).await;
    let reply = rig
        .admin_req(json!({"type": "logout_agent", "agent_id": ID}))
        .await;
    rig.step(|e, _| logged_out(e, "admin_logout")).await;
    rig.assert_ok_version(&reply);
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "call_declined", "call_id": "c2", "agent_id": ID, "reason": "logout"})
    );
    expect_logged_out(rig.tabs.remove(0), "admin_logout").await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_19_logout_while_ringing_declines_the_call
);

async fn row_20_logout_on_a_call_keeps_on_call_until_it_ends(topology: Topology) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    let since = rig.state["since"].clone();
    let reply = rig.tab_req(0, json!({"type": "logout"})).await;
    rig.step(|e, _| {
        e["manual_status"] = json!("offline");
        e["reason"] = json!("logout");
        e["connections"] = json!(0);
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(rig.state["status"], "on_call");
    assert_eq!(rig.state["since"], since);
    expect_logged_out(rig.tabs.remove(0), "logout").await;
    rig.quiet().await;
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "offline");
    assert_eq!(rig.state["reason"], "call_ended");
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_20_logout_on_a_call_keeps_on_call_until_it_ends
);

// ---------------------------------------------------------------- rows 21-22 (paused time)

async fn row_21_last_tab_closing_logs_out_after_the_grace(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", Some("x")).await;
    // connections 0 at once, reason unchanged.
    rig.close_tab(0).await;
    assert_eq!(rig.state["connections"], 0);
    assert_eq!(rig.state["reason"], "manual");
    assert_eq!(rig.state["status"], "available");
    // The default grace is 15 s.
    advance_ms(14_999).await;
    rig.quiet().await;
    let before = rig.state["since"].as_u64().unwrap();
    advance_ms(1).await;
    rig.step(|e, _| logged_out(e, "disconnected")).await;
    let at = rig.state["since"].as_u64().unwrap();
    assert_eq!(at - before, 15_000, "logged out 15 s after the close");
    rig.quiet().await;
    // Coming back after the grace is a fresh login (row 1).
    rig.login().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_21_last_tab_closing_logs_out_after_the_grace
);

async fn row_21_grace_running_out_while_ringing_declines_the_call(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(
        topology,
        with(|s| s.disconnect_grace = Duration::from_secs(5)),
    )
    .await;
    rig.set("available", None).await;
    rig.close_tab(0).await;
    // Still available during the grace: offers ring.
    advance_ms(1_000).await;
    rig.offer("c1", json!({"ring_timeout_ms": 60_000}), 60_000)
        .await;
    advance_ms(3_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    rig.step(|e, _| logged_out(e, "disconnected")).await;
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "call_declined", "call_id": "c1", "agent_id": ID, "reason": "logout"})
    );
    // The ring timer died with the ring.
    advance_ms(120_000).await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_21_grace_running_out_while_ringing_declines_the_call
);

async fn row_21_grace_running_out_on_a_call_keeps_the_call(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(
        topology,
        with(|s| s.disconnect_grace = Duration::from_secs(5)),
    )
    .await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.close_tab(0).await;
    advance_ms(4_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    // As row 20: manual_status offline, the call goes on.
    rig.step(|e, _| {
        e["manual_status"] = json!("offline");
        e["reason"] = json!("disconnected");
    })
    .await;
    assert_eq!(rig.state["status"], "on_call");
    rig.quiet().await;
    rig.end_call(0).await;
    assert_eq!(rig.state["status"], "offline");
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_21_grace_running_out_on_a_call_keeps_the_call
);

async fn row_22_reconnect_within_the_grace_keeps_everything(topology: Topology) {
    let _clock = freeze_time();
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("on_break", Some("coffee")).await;
    rig.close_tab(0).await;
    advance_ms(14_999).await;
    rig.quiet().await;
    // A page reload just in time: only connections changes.
    let before = rig.state.clone();
    let hello = rig.open_tab(|e, _| e["connections"] = json!(1)).await;
    assert_eq!(hello["agent"]["reason"], before["reason"]);
    assert_eq!(hello["agent"]["since"], before["since"]);
    // The old grace deadline passes: nothing happens.
    advance_ms(60_000).await;
    rig.quiet().await;
    // A reload while ringing: hello, then the offer again; the ring timer still runs.
    rig.set("available", None).await;
    rig.offer("c0", json!({"ring_timeout_ms": 20_000}), 20_000)
        .await;
    rig.close_tab(0).await;
    advance_ms(5_000).await;
    let hello = rig.open_tab(|e, _| e["connections"] = json!(1)).await;
    assert_eq!(hello["agent"]["status"], "ringing");
    assert_eq!(
        rig.tabs[0].recv().await,
        json!({"type": "call_offered", "call": rig.state["call"], "ring_expires_at": rig.state["ring_expires_at"]})
    );
    advance_ms(14_999).await;
    rig.quiet().await;
    advance_ms(1).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("ring_timeout");
        e["call"] = Value::Null;
        e["ring_expires_at"] = Value::Null;
        e["missed_in_row"] = json!(1);
    })
    .await;
    rig.expect_notice("ring_timeout", "c0", None).await;
    // A reload while on a call keeps the call too.
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    rig.close_tab(0).await;
    advance_ms(10_000).await;
    rig.open_tab(|e, _| e["connections"] = json!(1)).await;
    assert_eq!(rig.state["status"], "on_call");
    assert_eq!(rig.state["reason"], "call_accepted");
    advance_ms(60_000).await;
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test(start_paused = true)]
    row_22_reconnect_within_the_grace_keeps_everything
);

// ---------------------------------------------------------------- rows 23-24

async fn row_23_accept_decline_end_wrap_up_in_the_wrong_state_or_for_another_call(
    topology: Topology,
) {
    let mut rig = Rig::start(topology, settings()).await;
    rig.set("available", None).await;
    // Not ringing.
    for req in [
        json!({"type": "accept_call", "call_id": "c1"}),
        json!({"type": "decline_call", "call_id": "c1"}),
        json!({"type": "end_wrap_up"}),
    ] {
        let reply = rig.tab_req(0, req).await;
        assert_error(&reply, "invalid_state");
    }
    rig.quiet().await;
    // Ringing for c1: another call id is unknown; end_wrap_up is the wrong state.
    rig.offer("c1", json!({}), 30_000).await;
    for req in [
        json!({"type": "accept_call", "call_id": "c2"}),
        json!({"type": "decline_call", "call_id": "c2"}),
    ] {
        let reply = rig.tab_req(0, req).await;
        assert_error(&reply, "unknown_call");
    }
    let reply = rig.tab_req(0, json!({"type": "end_wrap_up"})).await;
    assert_error(&reply, "invalid_state");
    rig.quiet().await;
    // On the call: accepting or declining it again is the wrong state.
    rig.accept(0).await;
    for req in [
        json!({"type": "accept_call", "call_id": "c1"}),
        json!({"type": "decline_call", "call_id": "c1"}),
        json!({"type": "end_wrap_up"}),
    ] {
        let reply = rig.tab_req(0, req).await;
        assert_error(&reply, "invalid_state");
    }
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_23_accept_decline_end_wrap_up_in_the_wrong_state_or_for_another_call
);

async fn row_24_events_for_a_call_that_is_not_current_are_stale(topology: Topology) {
    let mut rig = Rig::start(topology, with(|s| s.wrap_up = Duration::from_secs(60))).await;
    rig.set("available", None).await;
    // No call at all.
    for kind in ["call_ended", "call_cancelled", "call_answered"] {
        let reply = rig.tel_event(kind, "zz", json!({})).await;
        rig.assert_tel_ok(&reply, json!({"stale": true}));
    }
    rig.quiet().await;
    // Ringing for c1, on c1, wrapping up c1: events for c2 are stale.
    rig.offer("c1", json!({}), 30_000).await;
    for kind in ["call_ended", "call_cancelled", "call_answered"] {
        let reply = rig.tel_event(kind, "c2", json!({})).await;
        rig.assert_tel_ok(&reply, json!({"stale": true}));
    }
    rig.quiet().await;
    rig.accept(0).await;
    for kind in ["call_ended", "call_cancelled"] {
        let reply = rig.tel_event(kind, "c2", json!({})).await;
        rig.assert_tel_ok(&reply, json!({"stale": true}));
    }
    // A late cancel of the connected call: stale too (it is not ringing).
    let reply = rig.tel_event("call_cancelled", "c1", json!({})).await;
    rig.assert_tel_ok(&reply, json!({"stale": true}));
    rig.quiet().await;
    rig.end_call(60_000).await;
    for kind in ["call_ended", "call_cancelled", "call_answered"] {
        let reply = rig.tel_event(kind, "c1", json!({})).await;
        rig.assert_tel_ok(&reply, json!({"stale": true}));
    }
    rig.quiet().await;
    // After the call is gone: late events for it, even a late re-offer, change nothing.
    let reply = rig.tab_req(0, json!({"type": "end_wrap_up"})).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("wrap_up_ended");
        e["call"] = Value::Null;
        e["wrap_up_expires_at"] = Value::Null;
    })
    .await;
    rig.assert_ok_version(&reply);
    for kind in ["call_ended", "call_cancelled", "call_answered"] {
        let reply = rig.tel_event(kind, "c1", json!({})).await;
        rig.assert_tel_ok(&reply, json!({"stale": true}));
    }
    let reply = rig.tel_event("call_offered", "c1", json!({})).await;
    rig.assert_tel_ok(
        &reply,
        json!({"accepted": false, "reason": "stale", "status": "available"}),
    );
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}
both_topologies!(
    #[tokio::test]
    row_24_events_for_a_call_that_is_not_current_are_stale
);
