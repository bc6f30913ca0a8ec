//! Multi-tab behaviour, concurrent offers, and the telephony surface (idempotency, stale
//! events, refusals, notifications to every adapter, and the HTTP endpoint), over real
//! sockets with an admin subscribed to all.

use crate::common::*;
use crate::rig::*;
use serde_json::{json, Value};

fn ringing_gone(e: &mut Value, status: &str, reason: &str) {
    e["status"] = json!(status);
    e["reason"] = json!(reason);
    e["call"] = Value::Null;
    e["ring_expires_at"] = Value::Null;
}

// ---------------------------------------------------------------- multiple tabs

#[tokio::test]
async fn two_tabs_see_the_same_updates_and_the_first_accept_wins() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    rig.open_tab(|e, _| e["connections"] = json!(2)).await;
    // Every step checks that both tabs get the admin's frame, in the same order.
    rig.set("busy", Some("x")).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({"from": "+1"}), 30_000).await;
    // Tab 1 accepts first; tab 0 then gets invalid_state, having seen the update.
    rig.accept(1).await;
    let reply = rig
        .tab_req(0, json!({"type": "accept_call", "call_id": "c1"}))
        .await;
    assert_error(&reply, "invalid_state");
    rig.quiet().await;
    rig.end_call(0).await;
    // First decline wins as well.
    rig.offer("c2", json!({}), 30_000).await;
    let reply = rig
        .tab_req(0, json!({"type": "decline_call", "call_id": "c2"}))
        .await;
    rig.step(|e, _| {
        ringing_gone(e, "busy", "call_declined");
        e["manual_status"] = json!("busy");
    })
    .await;
    rig.assert_ok_version(&reply);
    assert_eq!(
        rig.tel.recv().await,
        json!({"type": "call_declined", "call_id": "c2", "agent_id": ID, "reason": "declined"})
    );
    let reply = rig
        .tab_req(1, json!({"type": "accept_call", "call_id": "c2"}))
        .await;
    assert_error(&reply, "invalid_state");
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}

#[tokio::test]
async fn concurrent_accepts_from_two_tabs_exactly_one_wins() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    rig.open_tab(|e, _| e["connections"] = json!(2)).await;
    rig.set("available", None).await;
    for round in 0..10 {
        let call = format!("c{round}");
        rig.offer(&call, json!({}), 30_000).await;
        let (first, second) = rig.tabs.split_at_mut(1);
        let accept = json!({"type": "accept_call", "call_id": call});
        let (r0, r1) = tokio::join!(
            first[0].request(accept.clone()),
            second[0].request(accept.clone())
        );
        let oks = [&r0, &r1].iter().filter(|r| r["type"] == "ok").count();
        assert_eq!(oks, 1, "exactly one accept wins: {r0} {r1}");
        let loser = if r0["type"] == "ok" { &r1 } else { &r0 };
        assert_error(loser, "invalid_state");
        rig.step(|e, now| {
            e["status"] = json!("on_call");
            e["reason"] = json!("call_accepted");
            e["ring_expires_at"] = Value::Null;
            e["call"]["answered_at"] = json!(now);
        })
        .await;
        assert_eq!(
            rig.tel.recv().await,
            json!({"type": "call_accepted", "call_id": call, "agent_id": ID})
        );
        rig.quiet().await;
        rig.end_call(0).await;
    }
    rig.finish().await;
}

#[tokio::test]
async fn a_tab_opened_while_ringing_gets_hello_then_call_offered() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    rig.set("available", None).await;
    rig.offer("c1", json!({"from": "+1", "ring_group": "g"}), 30_000)
        .await;
    let hello = rig.open_tab(|e, _| e["connections"] = json!(2)).await;
    assert_eq!(hello["agent"]["status"], "ringing");
    let offered = rig.tabs[1].recv().await;
    assert_eq!(
        offered,
        json!({"type": "call_offered", "call": rig.state["call"], "ring_expires_at": rig.state["ring_expires_at"]})
    );
    // The new tab can take the call.
    rig.accept(1).await;
    rig.quiet().await;
    rig.finish().await;
}

// ---------------------------------------------------------------- concurrent offers

#[tokio::test]
async fn two_concurrent_offers_to_one_available_agent_exactly_one_accepted() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    let mut tel2 = rig.hub().telephony().await;
    rig.set("available", None).await;
    for round in 0..10 {
        let (ca, cb) = (format!("a{round}"), format!("b{round}"));
        let (ra, rb) = tokio::join!(
            rig.tel.request(event("call_offered", &ca, ID)),
            tel2.request(event("call_offered", &cb, ID))
        );
        let accepted: Vec<&Value> = [&ra, &rb]
            .into_iter()
            .filter(|r| r["accepted"] == true)
            .collect();
        assert_eq!(accepted.len(), 1, "exactly one accepted: {ra} {rb}");
        let (winner, loser, call) = if ra["accepted"] == true {
            (&ra, &rb, &ca)
        } else {
            (&rb, &ra, &cb)
        };
        let state = rig
            .step(|e, now| {
                e["status"] = json!("ringing");
                e["reason"] = json!("call_offered");
                e["call"] = inbound(call, &json!({}), now);
                e["ring_expires_at"] = json!(now + 30_000);
            })
            .await;
        assert_eq!(strip_ref(winner)["agent"], state);
        assert_eq!(
            strip_ref(loser),
            json!({"type": "ok", "accepted": false, "reason": "not_available", "status": "ringing", "agent": state})
        );
        assert_eq!(rig.tabs[0].recv().await["type"], "call_offered");
        rig.quiet().await;
        tel2.expect_quiet().await;
        let reply = rig.tel_event("call_cancelled", call, json!({})).await;
        rig.step(|e, _| ringing_gone(e, "available", "call_cancelled"))
            .await;
        rig.assert_tel_ok(&reply, json!({}));
    }
    rig.finish().await;
}

#[tokio::test]
async fn notifications_reach_every_telephony_socket() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    let mut tel2 = rig.hub().telephony().await;
    rig.set("available", None).await;
    rig.offer("c1", json!({}), 30_000).await;
    rig.accept(0).await;
    assert_eq!(
        tel2.recv().await,
        json!({"type": "call_accepted", "call_id": "c1", "agent_id": ID})
    );
    rig.end_call(0).await;
    rig.offer("c2", json!({}), 30_000).await;
    let reply = rig
        .tab_req(0, json!({"type": "decline_call", "call_id": "c2"}))
        .await;
    rig.step(|e, _| {
        ringing_gone(e, "busy", "call_declined");
        e["manual_status"] = json!("busy");
    })
    .await;
    rig.assert_ok_version(&reply);
    let declined =
        json!({"type": "call_declined", "call_id": "c2", "agent_id": ID, "reason": "declined"});
    assert_eq!(rig.tel.recv().await, declined);
    assert_eq!(tel2.recv().await, declined);
    tel2.expect_quiet().await;
    rig.finish().await;
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn the_same_event_id_three_times_changes_once_and_replies_the_same() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    rig.set("available", None).await;
    // call_offered x3.
    let offer = event("call_offered", "c1", ID);
    let first = rig.tel.request(offer.clone()).await;
    rig.step(|e, now| {
        e["status"] = json!("ringing");
        e["reason"] = json!("call_offered");
        e["call"] = inbound("c1", &json!({}), now);
        e["ring_expires_at"] = json!(now + 30_000);
    })
    .await;
    rig.assert_tel_ok(&first, json!({"accepted": true}));
    assert!(first.get("duplicate").is_none(), "{first}");
    rig.expect_call_offered().await;
    let mut expected = strip_ref(&first);
    expected["duplicate"] = json!(true);
    for _ in 0..2 {
        let again = rig.tel.request(offer.clone()).await;
        assert_eq!(strip_ref(&again), expected);
    }
    rig.quiet().await;
    // The call moves on; a retry of the offer still gets the first reply.
    rig.accept(0).await;
    let again = rig.tel.request(offer.clone()).await;
    assert_eq!(strip_ref(&again), expected);
    let offer_again = expected;
    rig.quiet().await;
    // call_ended x3: one change.
    let ended = event("call_ended", "c1", ID);
    let first = rig.tel.request(ended.clone()).await;
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("call_ended");
        e["call"] = Value::Null;
    })
    .await;
    rig.assert_tel_ok(&first, json!({}));
    let mut expected = strip_ref(&first);
    expected["duplicate"] = json!(true);
    for _ in 0..2 {
        assert_eq!(strip_ref(&rig.tel.request(ended.clone()).await), expected);
    }
    rig.quiet().await;
    // An error reply is remembered too.
    rig.offer("c2", json!({}), 30_000).await;
    let out = event("outbound_started", "o1", ID);
    let first = rig.tel.request(out.clone()).await;
    assert_error(&first, "invalid_state");
    let mut expected = strip_ref(&first);
    expected["duplicate"] = json!(true);
    for _ in 0..2 {
        assert_eq!(strip_ref(&rig.tel.request(out.clone()).await), expected);
    }
    rig.quiet().await;
    // A repeat over HTTP of an event first sent on the socket.
    let (status, body) = rig.hub().post("/api/v1/telephony/events", &offer).await;
    assert_eq!(status, 200);
    assert_eq!(body, offer_again);
    rig.quiet().await;
    rig.finish().await;
}

#[tokio::test]
async fn the_same_event_id_sent_concurrently_changes_once() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    let mut tel2 = rig.hub().telephony().await;
    rig.set("available", None).await;
    let offer = event("call_offered", "c1", ID);
    let (ra, rb) = tokio::join!(rig.tel.request(offer.clone()), tel2.request(offer.clone()));
    let dups = [&ra, &rb].iter().filter(|r| r["duplicate"] == true).count();
    assert_eq!(dups, 1, "one original, one duplicate: {ra} {rb}");
    rig.step(|e, now| {
        e["status"] = json!("ringing");
        e["reason"] = json!("call_offered");
        e["call"] = inbound("c1", &json!({}), now);
        e["ring_expires_at"] = json!(now + 30_000);
    })
    .await;
    for r in [&ra, &rb] {
        assert_eq!(r["accepted"], true);
        assert_eq!(r["agent"], rig.state);
    }
    rig.expect_call_offered().await;
    rig.quiet().await;
    tel2.expect_quiet().await;
    rig.finish().await;
}

// ---------------------------------------------------------------- refusals and stale

#[tokio::test]
async fn refusals_unknown_agents_and_events_without_ref() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    // Unknown agent: an offer is refused in the reply, other events are errors.
    let reply = rig.tel.request(event("call_offered", "c1", "ghost")).await;
    assert_eq!(
        strip_ref(&reply),
        json!({"type": "ok", "accepted": false, "reason": "unknown_agent", "status": null})
    );
    for kind in ["call_answered", "call_cancelled", "call_ended"] {
        let reply = rig.tel.request(event(kind, "c1", "ghost")).await;
        assert_error(&reply, "unknown_agent");
    }
    // Those replies are remembered by event id too.
    for ev in [
        event("call_offered", "c1", "ghost"),
        event("call_ended", "c1", "ghost"),
    ] {
        let mut expected = strip_ref(&rig.tel.request(ev.clone()).await);
        expected["duplicate"] = json!(true);
        for _ in 0..2 {
            assert_eq!(strip_ref(&rig.tel.request(ev.clone()).await), expected);
        }
    }
    // Busy agent.
    rig.set("busy", None).await;
    let reply = rig.tel_event("call_offered", "c1", json!({})).await;
    rig.assert_tel_ok(
        &reply,
        json!({"accepted": false, "reason": "not_available", "status": "busy"}),
    );
    rig.quiet().await;
    // Without a ref, a success is silent and an error still comes (without ref).
    rig.set("available", None).await;
    rig.tel.send(event("call_offered", "c2", ID)).await;
    rig.step(|e, now| {
        e["status"] = json!("ringing");
        e["reason"] = json!("call_offered");
        e["call"] = inbound("c2", &json!({}), now);
        e["ring_expires_at"] = json!(now + 30_000);
    })
    .await;
    rig.expect_call_offered().await;
    rig.quiet().await;
    rig.tel.send(event("outbound_started", "o1", ID)).await;
    let err = rig.tel.recv().await;
    assert_error(&err, "invalid_state");
    assert!(err.get("ref").is_none(), "{err}");
    // Bad telephony messages: bad_message, socket stays open.
    for bad in [
        json!({"type": "call_offered", "call_id": "c9", "agent_id": ID}),
        json!({"type": "call_offered", "event_id": "e-x", "agent_id": ID}),
        json!({"type": "call_offered", "event_id": "e-y", "call_id": "c9"}),
        json!({"type": "call_exploded", "event_id": "e-z", "call_id": "c9", "agent_id": ID}),
    ] {
        let reply = rig.tel.request(bad).await;
        assert_error(&reply, "bad_message");
    }
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}

// ---------------------------------------------------------------- HTTP endpoint

#[tokio::test]
async fn http_telephony_events_give_the_socket_replies() {
    let mut rig = Rig::start(Topology::Single, settings()).await;
    rig.set("available", None).await;
    let path = "/api/v1/telephony/events";
    // 200: an accepted offer, same reply as the socket (no ref).
    let (status, body) = rig.hub().post(path, &event("call_offered", "c1", ID)).await;
    assert_eq!(status, 200, "{body}");
    rig.step(|e, now| {
        e["status"] = json!("ringing");
        e["reason"] = json!("call_offered");
        e["call"] = inbound("c1", &json!({}), now);
        e["ring_expires_at"] = json!(now + 30_000);
    })
    .await;
    assert_eq!(
        body,
        json!({"type": "ok", "accepted": true, "agent": rig.state})
    );
    rig.expect_call_offered().await;
    // 409: outbound while ringing.
    let (status, body) = rig
        .hub()
        .post(path, &event("outbound_started", "o1", ID))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "invalid_state");
    assert_eq!(body["status"], "ringing");
    // 404: an event for an unknown agent.
    let (status, body) = rig
        .hub()
        .post(path, &event("call_ended", "c1", "ghost"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "unknown_agent");
    // 200: an offer to an unknown agent is a refusal, not an error.
    let (status, body) = rig
        .hub()
        .post(path, &event("call_offered", "c1", "ghost"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"type": "ok", "accepted": false, "reason": "unknown_agent", "status": null})
    );
    // 200 stale.
    let (status, body) = rig
        .hub()
        .post(path, &event("call_ended", "other", ID))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"type": "ok", "stale": true, "agent": rig.state})
    );
    // 400: missing event_id, unknown type, not JSON.
    for bad in [
        json!({"type": "call_ended", "call_id": "c1", "agent_id": ID}),
        json!({"type": "call_exploded", "event_id": "e1", "call_id": "c1", "agent_id": ID}),
        json!([1, 2]),
    ] {
        let (status, body) = rig.hub().post(path, &bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert_error(&body, "bad_message");
    }
    rig.quiet().await;
    // 200: answered over HTTP; the change reaches every observer.
    let (status, body) = rig
        .hub()
        .post(path, &event("call_answered", "c1", ID))
        .await;
    assert_eq!(status, 200, "{body}");
    rig.step(|e, now| {
        e["status"] = json!("on_call");
        e["reason"] = json!("call_answered");
        e["ring_expires_at"] = Value::Null;
        e["call"]["answered_at"] = json!(now);
    })
    .await;
    assert_eq!(body, json!({"type": "ok", "agent": rig.state}));
    // A duplicate over HTTP.
    let ended = event("call_ended", "c1", ID);
    let (status, first) = rig.hub().post(path, &ended).await;
    assert_eq!(status, 200);
    rig.step(|e, _| {
        e["status"] = json!("available");
        e["reason"] = json!("call_ended");
        e["call"] = Value::Null;
    })
    .await;
    assert_eq!(first, json!({"type": "ok", "agent": rig.state}));
    for _ in 0..2 {
        let (status, again) = rig.hub().post(path, &ended).await;
        assert_eq!(status, 200);
        assert_eq!(
            again,
            json!({"type": "ok", "duplicate": true, "agent": rig.state})
        );
    }
    rig.quiet().await;
    rig.check_http().await;
    rig.finish().await;
}

/// An adapter pipelines: it sends a whole call flow for several agents without waiting.
/// Replies come back in the order the events were sent, and each agent's events apply in
/// that order (offer, answer, end), so every agent ends where the flow leads.
#[tokio::test]
async fn pipelined_events_keep_their_order_and_replies_come_back_in_order() {
    let hub = TestHub::start().await;
    let agents = ["p1", "p2", "p3", "p4"];
    let mut tabs = Vec::new();
    for a in agents {
        let (mut tab, _) = hub.agent(a).await;
        let ok = tab
            .request(json!({"type": "set_status", "status": "available"}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        tabs.push(tab);
    }
    let mut tel = hub.telephony().await;
    let mut sent = Vec::new();
    for round in 0..3 {
        for kind in ["call_offered", "call_answered", "call_ended"] {
            for a in agents {
                let r = sent.len() as u64 + 1;
                let mut e = event(kind, &format!("{a}-call-{round}"), a);
                e["ref"] = json!(r);
                tel.send(e).await;
                sent.push((r, kind, a));
            }
        }
    }
    for (r, kind, a) in &sent {
        let reply = tel.recv().await;
        assert_eq!(reply["ref"], json!(r), "replies in send order: {reply}");
        assert_eq!(reply["type"], "ok", "{kind} for {a}: {reply}");
        assert!(
            reply.get("stale").is_none(),
            "{kind} for {a} applied in order: {reply}"
        );
        if *kind == "call_offered" {
            assert_eq!(reply["accepted"], true, "{reply}");
        }
    }
    for a in agents {
        let state = hub.agent_state(a).await;
        assert_eq!(state["status"], "available", "{a}: {state}");
        assert_eq!(state["reason"], "call_ended", "{a}: {state}");
    }
    hub.stop().await;
}

// ---------------------------------------------------------------- order on the adapter socket

/// On the adapter's socket, the reply to an event comes before the notifications it
/// causes: a 1 ms ring times out long before the offer is committed (`--durability
/// commit`, a real file), and `call_declined` follows an offer to a tab that declines at
/// once; neither may overtake the `ok` of the offer. The database is on the build's disk
/// (not a tmpfs), where a commit takes longer than the ring.
#[tokio::test]
async fn a_reply_comes_before_the_notifications_its_event_causes() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ph-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hub = TestHub::with(presence_hub::Settings {
        database: dir.join("hub.db"),
        durability: presence_hub::store::Durability::Commit,
        ..settings()
    })
    .await;
    // Many offers in flight at once, each for its own agent, each ringing for 1 ms: their
    // replies wait for commits while the rings run out.
    const AGENTS: usize = 100;
    let mut tabs = Vec::new();
    for i in 0..AGENTS {
        let (mut tab, _) = hub.agent(&format!("a{i}")).await;
        let ok = tab
            .request(json!({"type": "set_status", "status": "available"}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        tabs.push(tab);
    }
    let mut tel = hub.telephony().await;
    for i in 0..AGENTS {
        let mut offer = event("call_offered", &format!("c{i}"), &format!("a{i}"));
        offer["ring_timeout_ms"] = json!(1);
        offer["ref"] = json!(i);
        tel.send(offer).await;
    }
    let mut replied = [false; AGENTS];
    let mut timed_out = 0;
    while timed_out < AGENTS {
        let frame = tel.recv().await;
        match frame["type"].as_str() {
            Some("ok") => {
                let i = frame["ref"].as_u64().expect("ref") as usize;
                assert_eq!(frame["accepted"], true, "{frame}");
                replied[i] = true;
            }
            Some("ring_timeout") => {
                let call = frame["call_id"].as_str().expect("call_id");
                let i: usize = call[1..].parse().expect("c<i>");
                assert!(
                    replied[i],
                    "ring_timeout of {call} before the reply to its offer"
                );
                timed_out += 1;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    hub.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
