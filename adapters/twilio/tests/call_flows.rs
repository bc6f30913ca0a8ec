//! Full call flows: Twilio's webhooks (signed, form-encoded, shaped like Twilio's documented
//! callbacks) into the adapter, against a real hub; every TwiML answer parsed as XML, every
//! hub effect read back from the hub's API.

mod common;

use common::*;
use presence_twilio::{Fallback, GroupPolicy};

const PARENT: &str = "CA11111111111111111111111111111111";
const LEG1: &str = "CA22222222222222222222222222222222";
const LEG2: &str = "CA33333333333333333333333333333333";

/// An inbound call to `NUMBER` that rings `a1` (a1 available first, then a2).
async fn ringing_a1(rig: &Rig) -> (Agent, Agent) {
    let a1 = rig.available_agent("a1").await;
    let a2 = rig.available_agent("a2").await;
    let (status, twiml) = rig.twilio("/twilio/voice", &incoming(PARENT, NUMBER)).await;
    assert_eq!(status, 200, "{twiml}");
    assert_dials(&twiml, rig, "a1", "sales", 20);
    let s = rig.agent_state("a1").await;
    assert_eq!(s["status"], "ringing", "{s}");
    assert_eq!(s["call"]["call_id"], PARENT);
    assert_eq!(s["call"]["ring_group"], "sales");
    assert_eq!(s["call"]["from"], CALLER);
    assert_eq!(s["call"]["to"], NUMBER);
    (a1, a2)
}

#[tokio::test]
async fn answered_then_completed_then_wrap_up() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    let path = status_path("a1", "sales");
    for (status, seq) in [("initiated", "0"), ("ringing", "1")] {
        let (code, _) = rig
            .twilio(&path, &leg_status(LEG1, PARENT, "client:a1", status, seq))
            .await;
        assert_eq!(code, 204);
    }
    assert_eq!(rig.agent_state("a1").await["status"], "ringing");
    let (code, _) = rig
        .twilio(
            &path,
            &leg_status(LEG1, PARENT, "client:a1", "in-progress", "2"),
        )
        .await;
    assert_eq!(code, 204);
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("on_call"), Some("call_answered"))
    );
    let (code, _) = rig
        .twilio(
            &path,
            &leg_status(LEG1, PARENT, "client:a1", "completed", "3"),
        )
        .await;
    assert_eq!(code, 204);
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("wrap_up"), Some("call_ended"))
    );
    assert!(s["wrap_up_expires_at"].as_u64().is_some(), "{s}");
    // The <Dial> then ends: the caller is hung up on.
    let (code, twiml) = rig
        .twilio(
            &action_path("a1", "sales"),
            &dial_action(PARENT, LEG1, "completed"),
        )
        .await;
    assert_eq!(code, 200);
    let doc = parse(&twiml);
    let names: Vec<_> = verbs(&doc).iter().map(|n| n.tag_name().name()).collect();
    assert_eq!(names, ["Hangup"]);
    assert_eq!(rig.agent_state("a2").await["status"], "available");
}

#[tokio::test]
async fn no_answer_is_hunted_to_the_second_agent_whichever_report_comes_first() {
    for child_first in [true, false] {
        let rig = Rig::start().await;
        let _agents = ringing_a1(&rig).await;
        let leg = leg_status(LEG1, PARENT, "client:a1", "no-answer", "2");
        let action = dial_action(PARENT, LEG1, "no-answer");
        let next = if child_first {
            let (code, _) = rig.twilio(&status_path("a1", "sales"), &leg).await;
            assert_eq!(code, 204);
            let s = rig.agent_state("a1").await;
            assert_eq!(s["reason"], "ring_timeout", "{s}");
            rig.twilio(&action_path("a1", "sales"), &action).await.1
        } else {
            rig.twilio(&action_path("a1", "sales"), &action).await.1
        };
        assert_dials(&next, &rig, "a2", "sales", 20);
        let s1 = rig.agent_state("a1").await;
        assert_eq!(s1["status"], "available", "{s1}");
        assert_eq!(s1["reason"], "ring_timeout");
        assert_eq!(s1["missed_in_row"], 1, "the ring timeout was applied once");
        let version = s1["version"].clone();
        if !child_first {
            let (code, _) = rig.twilio(&status_path("a1", "sales"), &leg).await;
            assert_eq!(code, 204);
        }
        // The second report changed nothing.
        assert_eq!(rig.agent_state("a1").await["version"], version);
        let s2 = rig.agent_state("a2").await;
        assert_eq!(
            (s2["status"].as_str(), s2["call"]["call_id"].as_str()),
            (Some("ringing"), Some(PARENT))
        );
    }
}

#[tokio::test]
async fn rejected_in_the_softphone_sets_busy_and_hunts() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    let (code, next) = rig
        .twilio(
            &action_path("a1", "sales"),
            &dial_action(PARENT, LEG1, "busy"),
        )
        .await;
    assert_eq!(code, 200);
    assert_dials(&next, &rig, "a2", "sales", 20);
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["manual_status"].as_str()),
        (Some("busy"), Some("busy"))
    );
    assert_eq!(s["reason"], "call_declined");
    let version = s["version"].clone();
    let (code, _) = rig
        .twilio(
            &status_path("a1", "sales"),
            &leg_status(LEG1, PARENT, "client:a1", "busy", "2"),
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(rig.agent_state("a1").await["version"], version);
    // a2 rejects too: the group's limit (2 attempts) is reached, the fallback plays.
    let (_, last) = rig
        .twilio(
            &action_path("a2", "sales"),
            &dial_action(PARENT, LEG2, "busy"),
        )
        .await;
    assert_says_and_hangs_up(&last, "Sorry, nobody can take your call.");
    assert_eq!(rig.agent_state("a2").await["status"], "busy");
}

#[tokio::test]
async fn caller_hangs_up_while_ringing() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    let (code, _) = rig
        .twilio(
            &status_path("a1", "sales"),
            &leg_status(LEG1, PARENT, "client:a1", "canceled", "2"),
        )
        .await;
    assert_eq!(code, 204);
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("available"), Some("call_cancelled"))
    );
    assert_eq!(s["missed_in_row"], 0);
    let version = s["version"].clone();
    // The call's own status callback and the <Dial> action follow: nothing more changes.
    let mut done = incoming(PARENT, NUMBER);
    done.retain(|(k, _)| *k != "CallStatus");
    done.push(("CallStatus", "completed"));
    let (code, _) = rig.twilio("/twilio/call-status", &done).await;
    assert_eq!(code, 204);
    let (_, twiml) = rig
        .twilio(
            &action_path("a1", "sales"),
            &dial_action(PARENT, LEG1, "canceled"),
        )
        .await;
    let doc = parse(&twiml);
    assert_eq!(verbs(&doc)[0].tag_name().name(), "Hangup");
    assert_eq!(rig.agent_state("a1").await["version"], version);
    assert_eq!(rig.agent_state("a2").await["status"], "available");
}

#[tokio::test]
async fn nobody_available_plays_the_fallback() {
    let rig = Rig::start().await;
    let (code, twiml) = rig.twilio("/twilio/voice", &incoming(PARENT, NUMBER)).await;
    assert_eq!(code, 200);
    assert_says_and_hangs_up(&twiml, "Sorry, nobody can take your call.");
    // The support group redirects to voicemail.
    let (_, twiml) = rig
        .twilio("/twilio/voice", &incoming(LEG1, VOICEMAIL_NUMBER))
        .await;
    let doc = parse(&twiml);
    let v = verbs(&doc);
    assert_eq!(v.len(), 1, "{twiml}");
    assert_eq!(v[0].tag_name().name(), "Redirect");
    assert_eq!(v[0].attribute("method"), Some("POST"));
    assert_eq!(v[0].text(), Some("https://voicemail.example/box?id=7"));
}

#[tokio::test]
async fn an_unmapped_number_is_not_in_service_not_busy() {
    let rig = Rig::start().await;
    let _a1 = rig.available_agent("a1").await;
    let (code, twiml) = rig
        .twilio("/twilio/voice", &incoming(LEG2, "+15557777777"))
        .await;
    assert_eq!(code, 200);
    assert_says_and_hangs_up(&twiml, "This number is not in service.");
    assert_eq!(
        rig.agent_state("a1").await["status"],
        "available",
        "nobody was offered the call"
    );
    // The routing file's `unmapped` sets it.
    let rig = Rig::with(|s| {
        s.behaviour.routing =
            routing().with_unmapped(Fallback::Redirect("https://example.com/closed".into()))
    })
    .await;
    let (_, twiml) = rig
        .twilio("/twilio/voice", &incoming(LEG2, "+15557777777"))
        .await;
    let doc = parse(&twiml);
    let v = verbs(&doc);
    assert_eq!(v.len(), 1, "{twiml}");
    assert_eq!(v[0].tag_name().name(), "Redirect");
    assert_eq!(v[0].text(), Some("https://example.com/closed"));
}

#[tokio::test]
async fn outbound_from_the_softphone() {
    let rig = Rig::start().await;
    let _a1 = rig.available_agent("a1").await;
    let out = [
        ("AccountSid", ACCOUNT),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", PARENT),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "client:a1"),
        ("Caller", "client:a1"),
        ("To", "+15559999999"),
    ];
    let (code, twiml) = rig.twilio("/twilio/voice", &out).await;
    assert_eq!(code, 200);
    let doc = parse(&twiml);
    let v = verbs(&doc);
    assert_eq!(v.len(), 1, "{twiml}");
    assert_eq!(v[0].tag_name().name(), "Dial");
    let nouns: Vec<_> = v[0].children().filter(|n| n.is_element()).collect();
    assert_eq!(nouns.len(), 1);
    assert_eq!(nouns[0].tag_name().name(), "Number");
    assert_eq!(nouns[0].text(), Some("+15559999999"));
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("on_call"), Some("outbound_started"))
    );
    assert_eq!(s["call"]["direction"], "outbound");
    assert_eq!(s["call"]["to"], "+15559999999");
    let mut done = out.to_vec();
    done.retain(|(k, _)| *k != "CallStatus");
    done.extend([("CallStatus", "completed"), ("CallDuration", "42")]);
    let (code, _) = rig.twilio("/twilio/call-status", &done).await;
    assert_eq!(code, 204);
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("wrap_up"), Some("call_ended"))
    );
}

#[tokio::test]
async fn the_same_callback_twice_changes_nothing() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    let path = status_path("a1", "sales");
    let answered = leg_status(LEG1, PARENT, "client:a1", "in-progress", "2");
    rig.twilio(&path, &answered).await;
    let after_first = rig.agent_state("a1").await;
    assert_eq!(after_first["status"], "on_call");
    let (code, _) = rig.twilio(&path, &answered).await;
    assert_eq!(code, 204);
    assert_eq!(
        rig.agent_state("a1").await["version"],
        after_first["version"]
    );
    let completed = leg_status(LEG1, PARENT, "client:a1", "completed", "3");
    rig.twilio(&path, &completed).await;
    let ended = rig.agent_state("a1").await;
    assert_eq!(ended["status"], "wrap_up");
    rig.twilio(&path, &completed).await;
    assert_eq!(rig.agent_state("a1").await["version"], ended["version"]);
    // A retried incoming-call webhook gets the same TwiML and offers nobody else.
    let (_, again) = rig.twilio("/twilio/voice", &incoming(PARENT, NUMBER)).await;
    assert_dials(&again, &rig, "a1", "sales", 20);
    assert_eq!(rig.agent_state("a2").await["status"], "available");
}

#[tokio::test]
async fn completed_before_answered_leaves_the_late_answer_stale() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    let path = status_path("a1", "sales");
    rig.twilio(
        &path,
        &leg_status(LEG1, PARENT, "client:a1", "completed", "3"),
    )
    .await;
    // `completed` means the agent talked: the call ends into wrap-up.
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("wrap_up"), Some("call_ended"))
    );
    let (code, _) = rig
        .twilio(
            &path,
            &leg_status(LEG1, PARENT, "client:a1", "in-progress", "2"),
        )
        .await;
    assert_eq!(code, 204);
    let late = rig.agent_state("a1").await;
    assert_eq!(late["version"], s["version"], "stale: no change");
    assert_eq!(late["status"], "wrap_up");
}

#[tokio::test]
async fn console_decline_moves_the_call_on_through_rest() {
    let mut rig = Rig::start().await;
    let (mut a1, _a2) = ringing_a1(&rig).await;
    let ok = a1
        .request(serde_json::json!({"type": "decline_call", "call_id": PARENT}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let rec = rig.rest_request().await;
    assert_eq!(
        rec.path,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{PARENT}.json")
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{TOKEN}"));
    assert_eq!(rec.authorization, Some(format!("Basic {basic}")));
    assert_eq!(rec.form.len(), 1, "{:?}", rec.form);
    assert_eq!(rec.form[0].0, "Twiml");
    assert_dials(&rec.form[0].1, &rig, "a2", "sales", 20);
    let s1 = rig.agent_state("a1").await;
    assert_eq!(
        (s1["status"].as_str(), s1["reason"].as_str()),
        (Some("busy"), Some("call_declined"))
    );
    assert_eq!(rig.agent_state("a2").await["status"], "ringing");
    // The replaced <Dial>'s leg reports canceled: nothing changes.
    let v1 = s1["version"].clone();
    rig.twilio(
        &status_path("a1", "sales"),
        &leg_status(LEG1, PARENT, "client:a1", "canceled", "2"),
    )
    .await;
    assert_eq!(rig.agent_state("a1").await["version"], v1);
}

#[tokio::test]
async fn dial_action_completed_first_ends_the_call_once() {
    let rig = Rig::start().await;
    let _agents = ringing_a1(&rig).await;
    // The <Dial> action reports the finished conversation before any leg callback.
    let (_, twiml) = rig
        .twilio(
            &action_path("a1", "sales"),
            &dial_action(PARENT, LEG1, "completed"),
        )
        .await;
    let doc = parse(&twiml);
    assert_eq!(verbs(&doc)[0].tag_name().name(), "Hangup");
    let s = rig.agent_state("a1").await;
    assert_eq!(
        (s["status"].as_str(), s["reason"].as_str()),
        (Some("wrap_up"), Some("call_ended"))
    );
    let path = status_path("a1", "sales");
    for (status, seq) in [("in-progress", "2"), ("completed", "3")] {
        let (code, _) = rig
            .twilio(&path, &leg_status(LEG1, PARENT, "client:a1", status, seq))
            .await;
        assert_eq!(code, 204);
    }
    assert_eq!(
        rig.agent_state("a1").await["version"],
        s["version"],
        "late legs are stale"
    );
}

/// Twilio unreachable: both REST moves fail. a1 declines in the console (the adapter offers
/// a2, cannot tell Twilio), a2 declines too (the group's 2 attempts are used up: fallback,
/// cannot tell Twilio either). Twilio's late action for a1's `<Dial>` must get the call's
/// state now: the fallback, not a `<Dial>` to a2, who is busy at the hub. With 3 attempts
/// and a3 available, it dials a3, who rings at the hub.
#[tokio::test]
async fn late_action_after_failed_rest_moves_gets_the_current_hunt() {
    for attempts in [2, 3] {
        let mut rig = Rig::with_rest(RestMode::Fails, |s| {
            s.behaviour.routing = routing().with_group(
                "sales",
                GroupPolicy {
                    ring_timeout_secs: 20,
                    max_attempts: attempts,
                    fallback: Fallback::Say("Sorry, nobody can take your call.".into()),
                },
            )
        })
        .await;
        let (mut a1, mut a2) = ringing_a1(&rig).await;
        let _a3 = rig.available_agent("a3").await;
        let ok = a1
            .request(serde_json::json!({"type": "decline_call", "call_id": PARENT}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let first = rig.rest_request().await;
        assert_dials(&first.form[0].1, &rig, "a2", "sales", 20);
        assert_eq!(rig.agent_state("a2").await["status"], "ringing");
        let ok = a2
            .request(serde_json::json!({"type": "decline_call", "call_id": PARENT}))
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
        let second = rig.rest_request().await;
        let s2 = rig.agent_state("a2").await;
        assert_eq!(
            (s2["status"].as_str(), s2["reason"].as_str()),
            (Some("busy"), Some("call_declined"))
        );
        // a1's softphone rang out in Twilio, which still runs the first <Dial>.
        let (code, late) = rig
            .twilio(
                &action_path("a1", "sales"),
                &dial_action(PARENT, LEG1, "no-answer"),
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(late, second.form[0].1, "the latest move's TwiML");
        if attempts == 2 {
            assert_says_and_hangs_up(&late, "Sorry, nobody can take your call.");
            assert_eq!(rig.agent_state("a3").await["status"], "available");
        } else {
            assert_dials(&late, &rig, "a3", "sales", 20);
            let s3 = rig.agent_state("a3").await;
            assert_eq!(
                (s3["status"].as_str(), s3["call"]["call_id"].as_str()),
                (Some("ringing"), Some(PARENT))
            );
        }
        let s1 = rig.agent_state("a1").await;
        assert_eq!(s1["status"], "busy", "a1's decline stands: {s1}");
        assert_eq!(rig.agent_state("a2").await["version"], s2["version"]);
        // Twilio retrying that action gets the same answer.
        let (_, again) = rig
            .twilio(
                &action_path("a1", "sales"),
                &dial_action(PARENT, LEG1, "no-answer"),
            )
            .await;
        assert_eq!(again, late);
    }
}
