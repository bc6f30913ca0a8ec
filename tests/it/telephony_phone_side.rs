//! The phone system's own outcomes of a ring, over real sockets: `call_no_answer` acts as
//! the hub's ring timeout and `call_rejected` as a decline, each notified to every adapter,
//! and both are stale unless that call is ringing (extensions for adapters such as Twilio's).

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn no_answer_and_reject_from_the_phone_side() {
    let hub = TestHub::start().await;
    let (mut tab, _) = hub.agent("a1").await;
    let ok = tab
        .request(json!({"type": "set_status", "status": "available"}))
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let mut tel = hub.telephony().await;
    let mut other = hub.telephony().await;

    let offer = tel.request(event("call_offered", "c1", "a1")).await;
    assert_eq!(offer["accepted"], true, "{offer}");
    let reply = tel.request(event("call_no_answer", "c1", "a1")).await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert_eq!(reply["agent"]["status"], "available");
    assert_eq!(reply["agent"]["reason"], "ring_timeout");
    assert_eq!(reply["agent"]["missed_in_row"], 1);
    let notice = json!({"type": "ring_timeout", "call_id": "c1", "agent_id": "a1"});
    assert_eq!(tel.recv_type("ring_timeout").await, notice);
    assert_eq!(other.recv_type("ring_timeout").await, notice);
    // Again, or a reject of the same call: stale, nothing changes.
    let again = tel.request(event("call_no_answer", "c1", "a1")).await;
    assert_eq!(again["stale"], true, "{again}");
    let late = tel.request(event("call_rejected", "c1", "a1")).await;
    assert_eq!(late["stale"], true, "{late}");
    assert_eq!(late["agent"]["version"], reply["agent"]["version"]);

    let offer = tel.request(event("call_offered", "c2", "a1")).await;
    assert_eq!(offer["accepted"], true, "{offer}");
    let reply = tel.request(event("call_rejected", "c2", "a1")).await;
    assert_eq!(reply["agent"]["status"], "busy", "{reply}");
    assert_eq!(reply["agent"]["manual_status"], "busy");
    assert_eq!(reply["agent"]["reason"], "call_declined");
    let notice =
        json!({"type": "call_declined", "call_id": "c2", "agent_id": "a1", "reason": "declined"});
    assert_eq!(other.recv_type("call_declined").await, notice);
    // The HTTP endpoint takes them too.
    let (status, body) = hub
        .post(
            "/api/v1/telephony/events",
            &event("call_rejected", "c2", "a1"),
        )
        .await;
    assert_eq!((status, &body["stale"]), (200, &json!(true)), "{body}");
}
