//! The rules of `docs/status-model.md` that cut across rows: a request that changes nothing,
//! `if_version`, `since`, notes, timers dying with their state, `next_deadline`, stale calls
//! and competing offers. Shares the helpers of `machine_tests.rs`.

use super::*;

#[test]
fn a_request_that_changes_nothing_is_unchanged() {
    let mut s = manual(Busy, Some("lunch"));
    unchanged(&mut s, set(Busy, Some("lunch"), Agent), T3, &P);
    unchanged(&mut s, set(Busy, Some("lunch"), Admin), T3, &P);
    let mut s = on_call();
    unchanged(&mut s, set(Available, None, Agent), T5, &P);
    unchanged(&mut s, answered("c1"), T5, &P);
    unchanged(&mut s, outbound("c1"), T5, &P);
    unchanged(&mut s, Input::RingTimerFired, T5 + RING_MS, &P);
    let mut s = fresh();
    for input in [
        Input::SocketClosed,
        Input::GraceExpired,
        logout(Admin),
        Input::RingTimerFired,
        Input::WrapUpTimerFired,
    ] {
        unchanged(&mut s, input, T1, &P);
    }
}

fn cas(status: Status, if_version: u64) -> Input {
    Input::SetStatus {
        status,
        note: None,
        if_version: Some(if_version),
        by: Admin,
    }
}

#[test]
fn if_version_is_compare_and_set() {
    let mut s = manual(Available, None);
    changed(&mut s, cas(Busy, 2), T3, &P);
    assert_eq!(
        (s.status, s.version, s.reason),
        (Busy, 3, Some(Reason::Admin))
    );
    let conflict = Rejection::Conflict { current: 3 };
    for stale in [0, 2, 4, u64::MAX] {
        rejects(&mut s, cas(OnBreak, stale), T4, &P, conflict);
        // Conflict wins over every other answer: a system status, or a no-op.
        rejects(&mut s, cas(Ringing, stale), T4, &P, conflict);
        rejects(&mut s, cas(Busy, stale), T4, &P, conflict);
    }
    unchanged(&mut s, cas(Busy, 3), T4, &P); // a matching no-op is just acknowledged
                                             // While ringing it applies to manual_status (row 4).
    let mut s = ringing();
    changed(&mut s, cas(OnBreak, 3), T4, &P);
    assert_eq!(
        (s.status, s.manual_status, s.version),
        (Ringing, M::OnBreak, 4)
    );
}

#[test]
fn since_changes_only_when_status_changes() {
    let mut s = manual(Available, None);
    assert_eq!(s.since, T2);
    changed(&mut s, set(Available, Some("vip"), Agent), T3, &P);
    changed(&mut s, Input::SocketOpened, T3, &P);
    changed(&mut s, Input::SocketClosed, T3, &P);
    assert_eq!(s.since, T2);
    changed(&mut s, offer("c1"), T4, &P);
    assert_eq!(s.since, T4);
    changed(&mut s, set(Busy, None, Admin), T5, &P);
    assert_eq!(s.since, T4);
    changed(&mut s, accept("c1"), T6, &P);
    assert_eq!(s.since, T6);
}

#[test]
fn note_is_set_cleared_and_kept_through_system_statuses() {
    let mut s = manual(OnBreak, Some("lunch"));
    changed(&mut s, outbound("c1"), T3, &PW);
    assert_eq!((s.status, s.note.as_deref()), (OnCall, Some("lunch")));
    changed(&mut s, end("c1"), T4, &PW);
    assert_eq!((s.status, s.note.as_deref()), (WrapUp, Some("lunch")));
    changed(&mut s, Input::WrapUpTimerFired, T4 + WRAP_MS, &PW);
    assert_eq!((s.status, s.note.as_deref()), (OnBreak, Some("lunch")));
    // A manual change without a note clears it, even to the same status.
    changed(&mut s, set(OnBreak, None, Agent), T5, &PW);
    assert_eq!(s.note, None);
    // Kept through a ring that times out.
    let mut s = manual(Available, Some("vip"));
    changed(&mut s, offer("c1"), T3, &P);
    changed(&mut s, Input::RingTimerFired, T3 + RING_MS, &P);
    assert_eq!((s.status, s.note.as_deref()), (Available, Some("vip")));
    // Cleared by a decline (manual(busy) carries no note).
    let mut s = manual(Available, Some("vip"));
    changed(&mut s, offer("c1"), T3, &P);
    changed(&mut s, decline("c1"), T4, &P);
    assert_eq!((s.status, s.note), (Busy, None));
}

#[test]
fn timers_die_with_their_state() {
    let mut s = on_call();
    assert_eq!(next_deadline(&s), None);
    unchanged(&mut s, Input::RingTimerFired, T3 + RING_MS, &P);
    let mut s = ringing();
    unchanged(&mut s, Input::RingTimerFired, T3 + RING_MS - 1, &P);
    let mut s = wrap_up();
    unchanged(&mut s, Input::WrapUpTimerFired, T5 + WRAP_MS - 1, &PW);
    changed(&mut s, Input::EndWrapUp, T6, &PW);
    unchanged(&mut s, Input::WrapUpTimerFired, T5 + WRAP_MS, &PW);
    // The wrap-up deadline of a call that an outbound call replaced is gone too.
    let mut s = wrap_up();
    changed(&mut s, outbound("c2"), T6, &PW);
    unchanged(&mut s, Input::WrapUpTimerFired, T5 + WRAP_MS, &PW);
}

#[test]
fn next_deadline_is_the_earliest_live_timer() {
    assert_eq!(next_deadline(&fresh()), None);
    assert_eq!(next_deadline(&manual(Available, None)), None);
    assert_eq!(next_deadline(&ringing()), Some((T3 + RING_MS, Timer::Ring)));
    assert_eq!(
        next_deadline(&wrap_up()),
        Some((T5 + WRAP_MS, Timer::WrapUp))
    );
    // Ringing and in grace: whichever comes first.
    let mut s = ringing();
    changed(&mut s, Input::SocketClosed, T4, &P);
    assert_eq!(next_deadline(&s), Some((T4 + GRACE_MS, Timer::Grace)));
    let long = with_grace(60_000);
    let mut s = ringing();
    changed(&mut s, Input::SocketClosed, T4, &long);
    assert_eq!(next_deadline(&s), Some((T3 + RING_MS, Timer::Ring)));
    assert_eq!(Timer::Ring.input(), Input::RingTimerFired);
    assert_eq!(Timer::WrapUp.input(), Input::WrapUpTimerFired);
    assert_eq!(Timer::Grace.input(), Input::GraceExpired);
}

#[test]
fn events_for_recently_ended_calls_are_stale() {
    let mut s = ringing();
    changed(&mut s, cancel("c1"), T4, &P);
    assert_eq!(s.status, Available);
    for input in [offer("c1"), answered("c1"), outbound("c1")] {
        stale(&mut s, input, T5, &P);
    }
    // Only that call: another one still rings.
    changed(&mut s, offer("c2"), T5, &P);
    assert_eq!(s.status, Ringing);
    // During wrap-up the call is still set but over: late answered/outbound are stale.
    let mut s = wrap_up();
    stale(&mut s, answered("c1"), T6, &PW);
    stale(&mut s, outbound("c1"), T6, &PW);
    // The memory is bounded: the oldest of more than EndedCalls::CAPACITY calls is forgotten.
    let mut s = manual(Available, None);
    for i in 0..=EndedCalls::CAPACITY {
        changed(&mut s, offer(&format!("x{i}")), T3, &P);
        changed(&mut s, cancel(&format!("x{i}")), T3, &P);
    }
    changed(&mut s, offer("x0"), T4, &P);
    stale(&mut s, offer("x1"), T4, &P);
}

#[test]
fn two_offers_to_one_available_agent_exactly_one_rings() {
    let mut s = manual(Available, None);
    emits(&mut s, offer("c1"), T3, &P, vec![Effect::OfferToTabs]);
    rejects(&mut s, offer("c2"), T3, &P, Rejection::NotAvailable);
    assert_eq!(s.call_id(), Some(&cid("c1")));
}

#[test]
fn phone_side_no_answer_is_a_ring_timeout_before_the_timer() {
    let mut s = ringing();
    let mut want = s.clone();
    // The phone system gives up early: same outcome as row 11, before the hub's timer.
    let fx = tel(TelephonyNotice::RingTimeout { call_id: cid("c1") });
    emits(
        &mut s,
        Input::CallNoAnswer { call_id: cid("c1") },
        T4,
        &P,
        fx,
    );
    moved(&mut want, Available, Reason::RingTimeout, T4);
    call_over(&mut want);
    want.missed_in_row = 1;
    assert_eq!(s, want);
    // Again, or for another call, or once the timer fired: stale, nothing changes.
    stale(&mut s, Input::CallNoAnswer { call_id: cid("c1") }, T5, &P);
    let mut s = ringing();
    stale(&mut s, Input::CallNoAnswer { call_id: cid("c9") }, T4, &P);
    let mut s = on_call();
    stale(&mut s, Input::CallNoAnswer { call_id: cid("c1") }, T5, &P);
}

#[test]
fn phone_side_reject_is_a_decline() {
    let mut s = ringing();
    let mut want = s.clone();
    let input = Input::CallRejected { call_id: cid("c1") };
    emits(&mut s, input.clone(), T4, &P, vec![declined("c1", false)]);
    moved(&mut want, Busy, Reason::CallDeclined, T4);
    call_over(&mut want);
    (want.manual_status, want.note) = (M::Busy, None);
    assert_eq!(s, want);
    stale(&mut s, input.clone(), T5, &P);
    let mut s = on_call();
    stale(&mut s, input, T5, &P);
}
