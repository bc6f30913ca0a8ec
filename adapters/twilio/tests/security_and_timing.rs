//! Signatures over HTTP (403, nothing changed), `--public-url` behind a TLS-terminating
//! proxy, the webhook deadline when the hub is down or hangs, the hub's ring timer moving a
//! call on through REST, a late `<Dial>` action waiting for a REST move still in flight,
//! and reconnecting to a restarted hub.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const CALL: &str = "CA44444444444444444444444444444444";
const LEG: &str = "CA55555555555555555555555555555555";

#[tokio::test]
async fn bad_or_missing_signatures_get_403_and_change_nothing() {
    let rig = Rig::start().await;
    let _a1 = rig.available_agent("a1").await;
    let before = rig.agent_state("a1").await;
    let url = format!("http://{}/twilio/voice", rig.adapter);
    let params = incoming(CALL, NUMBER);
    let good = sign(TOKEN, &url, &params);
    let mut tampered = params.clone();
    tampered[7] = ("From", "+15550006666");
    let other_url = format!("http://{}/twilio/voice?x=1", rig.adapter);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<String>);
    let cases: Vec<Case> = vec![
        ("missing", params.clone(), None),
        (
            "wrong token",
            params.clone(),
            Some(sign("not-the-token", &url, &params)),
        ),
        ("tampered parameter", tampered, Some(good.clone())),
        (
            "signed for another URL",
            params.clone(),
            Some(sign(TOKEN, &other_url, &params)),
        ),
        ("garbage", params.clone(), Some("AAAA".into())),
    ];
    for (what, p, sig) in cases {
        let (code, body) = rig.post_signed(&url, &p, sig.as_deref()).await;
        assert_eq!(code, 403, "{what}: {body}");
    }
    let after = rig.agent_state("a1").await;
    assert_eq!(after["version"], before["version"], "nothing was offered");
    assert_eq!(after["status"], "available");
    // A forged status callback does not answer a ringing call either.
    let (code, twiml) = rig.twilio("/twilio/voice", &params).await;
    assert_eq!(code, 200);
    assert_dials(&twiml, &rig, "a1", "sales", 20);
    let path = format!("http://{}{}", rig.adapter, status_path("a1", "sales"));
    let forged = leg_status(LEG, CALL, "client:a1", "in-progress", "2");
    let (code, _) = rig
        .post_signed(&path, &forged, Some(&sign("guess", &path, &forged)))
        .await;
    assert_eq!(code, 403);
    assert_eq!(rig.agent_state("a1").await["status"], "ringing");
}

#[tokio::test]
async fn public_url_covers_a_tls_terminating_proxy() {
    let public = "https://voice.example.com/pbx";
    let rig = Rig::with(|s| s.behaviour.public_url = public.to_string()).await;
    let _a1 = rig.available_agent("a1").await;
    let params = incoming(CALL, NUMBER);
    let local = format!("http://{}/twilio/voice", rig.adapter);
    // Twilio signed the URL it called: the proxy's, not the adapter's own.
    let (code, _) = rig
        .post_signed(&local, &params, Some(&sign(TOKEN, &local, &params)))
        .await;
    assert_eq!(code, 403);
    let twilio_called = format!("{public}/twilio/voice");
    let (code, twiml) = rig
        .post_signed(&local, &params, Some(&sign(TOKEN, &twilio_called, &params)))
        .await;
    assert_eq!(code, 200, "{twiml}");
    let doc = parse(&twiml);
    let dial = verbs(&doc)[0];
    assert_eq!(
        dial.attribute("action"),
        Some("https://voice.example.com/pbx/twilio/dial-action?agent=a1&group=sales")
    );
}

#[tokio::test]
async fn hub_refusing_connections_gets_the_fallback_at_once() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hub = closed.local_addr().expect("addr");
    drop(closed);
    let rig = Rig::adapter_for(hub, |s| s.behaviour.deadline = Duration::from_millis(300)).await;
    let started = Instant::now();
    let (code, twiml) = rig.twilio("/twilio/voice", &incoming(CALL, NUMBER)).await;
    assert_eq!(code, 200);
    assert_says_and_hangs_up(&twiml, "Sorry, nobody can take your call.");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let (code, _) = rig
        .twilio(
            &status_path("a1", "sales"),
            &leg_status(LEG, CALL, "client:a1", "in-progress", "2"),
        )
        .await;
    assert_eq!(
        code, 503,
        "a status callback the hub did not take is not acknowledged"
    );
}

#[tokio::test]
async fn hub_that_hangs_gets_the_fallback_within_the_deadline() {
    // Accepts connections and never answers: the socket handshake and the API both hang.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hub = black_hole.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..16 {
            match black_hole.accept().await {
                Ok((s, _)) => held.push(s),
                Err(_) => return,
            }
        }
    });
    let deadline = Duration::from_millis(300);
    let rig = Rig::adapter_for(hub, |s| s.behaviour.deadline = deadline).await;
    let started = Instant::now();
    let (code, twiml) = rig
        .twilio("/twilio/voice", &incoming(CALL, VOICEMAIL_NUMBER))
        .await;
    let took = started.elapsed();
    assert_eq!(code, 200);
    let doc = parse(&twiml);
    let v = verbs(&doc);
    assert_eq!(v[0].tag_name().name(), "Redirect", "{twiml}");
    assert!(took >= deadline, "answered before the deadline: {took:?}");
    assert!(took < deadline + Duration::from_millis(1200), "{took:?}");
}

#[tokio::test]
async fn hub_ring_timer_moves_the_call_on_through_rest() {
    let mut rig = Rig::with(|s| {
        s.behaviour.hub_ring_margin = Duration::ZERO;
        s.behaviour.deadline = Duration::from_secs(60);
        s.behaviour.routing = routing().with_group(
            "sales",
            presence_twilio::GroupPolicy {
                ring_timeout_secs: 5,
                max_attempts: 3,
                fallback: presence_twilio::Fallback::Say("Nobody.".into()),
            },
        );
    })
    .await;
    let _a1 = rig.available_agent("a1").await;
    let _a2 = rig.available_agent("a2").await;
    let (_, twiml) = rig.twilio("/twilio/voice", &incoming(CALL, NUMBER)).await;
    assert_dials(&twiml, &rig, "a1", "sales", 5);
    // Twilio's no-answer never comes: the hub's 5 s timer ends the ring (paused time).
    tokio::time::pause();
    let rec = rig.rest_request().await;
    tokio::time::resume();
    assert_eq!(
        rec.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json")
    );
    assert_eq!(rec.form[0].0, "Twiml");
    assert_dials(&rec.form[0].1, &rig, "a2", "sales", 5);
    let s1 = rig.agent_state("a1").await;
    assert_eq!(
        (s1["status"].as_str(), s1["reason"].as_str()),
        (Some("available"), Some("ring_timeout"))
    );
    assert_eq!(rig.agent_state("a2").await["status"], "ringing");
    // Twilio's late action for the replaced <Dial> changes nothing and dials nobody.
    let (_, late) = rig
        .twilio(
            &action_path("a1", "sales"),
            &dial_action(CALL, LEG, "no-answer"),
        )
        .await;
    let doc = parse(&late);
    assert!(verbs(&doc).is_empty(), "{late}");
    assert_eq!(rig.agent_state("a1").await["version"], s1["version"]);
}

/// The console Decline's REST update hangs (Twilio slow), and Twilio's action for the old
/// `<Dial>` comes meanwhile: the action waits for the move's outcome. Released after 300 ms
/// (failing), the action answers the move's TwiML; never released, the action answers the
/// fallback at its deadline.
#[tokio::test]
async fn late_action_waits_for_a_rest_move_in_flight() {
    for released in [true, false] {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let deadline = Duration::from_millis(if released { 3000 } else { 400 });
        let mut rig = Rig::with_rest(RestMode::HeldThenFails(gate.clone()), |s| {
            s.behaviour.deadline = deadline;
        })
        .await;
        let mut a1 = rig.available_agent("a1").await;
        let _a2 = rig.available_agent("a2").await;
        let (_, twiml) = rig.twilio("/twilio/voice", &incoming(CALL, NUMBER)).await;
        assert_dials(&twiml, &rig, "a1", "sales", 20);
        let ok = a1
            .request(serde_json::json!({"type": "decline_call", "call_id": CALL}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let held = rig.rest_request().await; // in flight now
        assert_dials(&held.form[0].1, &rig, "a2", "sales", 20);
        let release_after = Duration::from_millis(300);
        let (path, form) = (
            action_path("a1", "sales"),
            dial_action(CALL, LEG, "no-answer"),
        );
        let started = Instant::now();
        let ((code, late), ()) = tokio::join!(rig.twilio(&path, &form), async {
            if released {
                tokio::time::sleep(release_after).await;
                gate.add_permits(1);
            }
        });
        let took = started.elapsed();
        assert_eq!(code, 200);
        if released {
            assert_eq!(late, held.form[0].1, "the move's TwiML");
            assert!(took >= release_after, "did not wait: {took:?}");
            assert!(took < deadline, "{took:?}");
        } else {
            let doc = parse(&late);
            let names: Vec<_> = verbs(&doc).iter().map(|n| n.tag_name().name()).collect();
            assert_eq!(names, ["Say", "Hangup"], "the fallback: {late}");
            assert!(took >= deadline, "answered before the deadline: {took:?}");
            assert!(took < deadline + Duration::from_millis(1200), "{took:?}");
        }
    }
}

#[tokio::test]
async fn reconnects_to_a_restarted_hub() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hub_addr = listener.local_addr().expect("addr");
    let first = hub_on(listener);
    let rig = Rig::adapter_for(hub_addr, |_| {}).await;
    rig.wait_hub("connected").await;
    first.stop().await;
    rig.wait_hub("disconnected").await;
    let second = hub_on(TcpListener::bind(hub_addr).await.expect("rebind"));
    rig.wait_hub("connected").await;
    // Events flow on the new connection.
    let _a1 = rig.available_agent("a1").await;
    let out = [
        ("AccountSid", ACCOUNT),
        ("CallSid", CALL),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "client:a1"),
        ("To", "+15559999999"),
    ];
    let (code, _) = rig.twilio("/twilio/voice", &out).await;
    assert_eq!(code, 200);
    assert_eq!(rig.agent_state("a1").await["status"], "on_call");
    second.stop().await;
}
