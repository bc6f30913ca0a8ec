//! One test per row of the transition table of `docs/status-model.md`, plus the
//! cross-cutting rules (no-op requests, compare-and-set, `since`, notes, timers, stale calls).
//!
//! Every row test builds the expected state as "the state before, with exactly these fields
//! changed" and compares whole states, so a field that moves unexpectedly fails the test.
//! Property tests over random event sequences live in `machine_props.rs`.

use super::*;
use crate::model::{AgentId, CallDirection, CallInfo, EndedCalls, Session};
use Actor::{Admin, Agent};
use ManualStatus as M;
use Status::{Available, Busy, Offline, OnBreak, OnCall, Ringing, WrapUp};

const T0: Millis = 1_700_000_000_000;
const T1: Millis = T0 + 10;
const T2: Millis = T0 + 20;
const T3: Millis = T0 + 30;
const T4: Millis = T0 + 40;
const T5: Millis = T0 + 50;
const T6: Millis = T0 + 60;
const T7: Millis = T0 + 70;
const RING_MS: u64 = 20_000;
const WRAP_MS: u64 = 5_000;
const GRACE_MS: u64 = 15_000;
/// No wrap-up, missed-call limit disabled, default grace.
const P: Policy = Policy {
    wrap_up_ms: 0,
    disconnect_grace_ms: GRACE_MS,
    max_missed_in_row: 0,
};
/// The same with a wrap-up time.
const PW: Policy = Policy {
    wrap_up_ms: WRAP_MS,
    ..P
};

/// Who asks for a manual change, and the reason it gets.
const BY: [(Actor, Reason); 2] = [(Agent, Reason::Manual), (Admin, Reason::Admin)];

fn with_max_missed(max_missed_in_row: u32) -> Policy {
    Policy {
        max_missed_in_row,
        ..P
    }
}

fn with_grace(disconnect_grace_ms: u64) -> Policy {
    Policy {
        disconnect_grace_ms,
        ..P
    }
}

fn cid(s: &str) -> CallId {
    CallId::parse(s).unwrap()
}

fn fresh() -> AgentState {
    AgentState::new(AgentId::parse("agent-1").unwrap(), T0)
}

/// Applies an input that must commit a change; returns its effects.
fn changed(s: &mut AgentState, input: Input, now: Millis, p: &Policy) -> Vec<Effect> {
    let version = s.version;
    match apply(s, input, now, p) {
        Ok(Outcome::Changed(effects)) => {
            assert_eq!(s.version, version + 1);
            effects
        }
        other => panic!("expected Changed, got {other:?}"),
    }
}

/// Applies an input that must commit a change with exactly these effects.
fn emits(s: &mut AgentState, input: Input, now: Millis, p: &Policy, want: Vec<Effect>) {
    assert_eq!(changed(s, input, now, p), want);
}

/// Applies an input that must commit a change without effects.
fn quiet(s: &mut AgentState, input: Input, now: Millis, p: &Policy) {
    emits(s, input, now, p, vec![]);
}

/// Applies an input that must be rejected with `want`, and checks that nothing changed.
fn rejects(s: &mut AgentState, input: Input, now: Millis, p: &Policy, want: Rejection) {
    let before = s.clone();
    assert_eq!(apply(s, input, now, p), Err(want));
    assert_eq!(*s, before);
}

/// Applies an input that must be acknowledged as `want` and checks that nothing changed.
fn same(s: &mut AgentState, input: Input, now: Millis, p: &Policy, want: Outcome) {
    let before = s.clone();
    assert_eq!(apply(s, input, now, p), Ok(want));
    assert_eq!(*s, before);
}

fn unchanged(s: &mut AgentState, input: Input, now: Millis, p: &Policy) {
    same(s, input, now, p, Outcome::Unchanged);
}

fn stale(s: &mut AgentState, input: Input, now: Millis, p: &Policy) {
    same(s, input, now, p, Outcome::Stale);
}

fn set(status: Status, note: Option<&str>, by: Actor) -> Input {
    Input::SetStatus {
        status,
        note: note.map(str::to_string),
        if_version: None,
        by,
    }
}

fn offer(id: &str) -> Input {
    Input::CallOffered {
        call_id: cid(id),
        from: Some("+15550001".into()),
        to: Some("+18000002".into()),
        ring_group: Some("sales".into()),
        ring_timeout_ms: RING_MS,
    }
}

fn outbound(id: &str) -> Input {
    Input::OutboundStarted {
        call_id: cid(id),
        to: Some("+19990003".into()),
    }
}

fn accept(id: &str) -> Input {
    Input::AcceptCall { call_id: cid(id) }
}

fn answered(id: &str) -> Input {
    Input::CallAnswered { call_id: cid(id) }
}

fn decline(id: &str) -> Input {
    Input::DeclineCall { call_id: cid(id) }
}

fn end(id: &str) -> Input {
    Input::CallEnded { call_id: cid(id) }
}

fn cancel(id: &str) -> Input {
    Input::CallCancelled { call_id: cid(id) }
}

fn logout(by: Actor) -> Input {
    Input::Logout { by }
}

fn tel(notice: TelephonyNotice) -> Vec<Effect> {
    vec![Effect::Telephony(notice)]
}

/// Every tab gets `logged_out` and is closed.
fn gone(reason: Reason) -> Effect {
    Effect::LoggedOut(reason)
}

fn declined(id: &str, by_logout: bool) -> Effect {
    Effect::Telephony(TelephonyNotice::CallDeclined {
        call_id: cid(id),
        by_logout,
    })
}

fn ended(ids: &[&str]) -> EndedCalls {
    let mut e = EndedCalls::default();
    for id in ids {
        e.push(cid(id));
    }
    e
}

/// Expected-state edits, each a rule of the spec spelled once.
/// `status` changed at `now` for `reason`: status, since, reason, version.
fn moved(w: &mut AgentState, status: Status, reason: Reason, now: Millis) {
    w.status = status;
    w.since = now;
    w.reason = Some(reason);
    w.version += 1;
}

/// The current call is over: no call, no timers, and its id is remembered as ended.
fn call_over(w: &mut AgentState) {
    let call = w.call.take().expect("there was a call");
    w.ended_calls.push(call.call_id);
    w.ring_expires_at = None;
    w.wrap_up_expires_at = None;
}

/// Rows 18-21: manual_status offline, note cleared, no socket, no session.
fn logged_out(w: &mut AgentState) {
    w.manual_status = M::Offline;
    w.note = None;
    w.connections = 0;
    w.session = Session::LoggedOut;
}

/// Logged in with one socket at T1: offline, version 1, `since` still T0.
fn logged_in() -> AgentState {
    let mut s = fresh();
    changed(&mut s, Input::SocketOpened, T1, &P);
    s
}

/// Logged in, then the agent set `status` at T2 (version 2, or 1 if that was a no-op).
fn manual(status: Status, note: Option<&str>) -> AgentState {
    let mut s = logged_in();
    apply(&mut s, set(status, note, Agent), T2, &P).unwrap();
    s
}

/// Available, then call c1 offered at T3 (version 3, rings until T3 + RING_MS).
fn ringing() -> AgentState {
    let mut s = manual(Available, None);
    changed(&mut s, offer("c1"), T3, &P);
    s
}

/// Ringing, then c1 accepted at T4 (version 4).
fn on_call() -> AgentState {
    let mut s = ringing();
    changed(&mut s, accept("c1"), T4, &P);
    s
}

/// On call, then c1 ended at T5 with wrap-up (version 5, wrap-up until T5 + WRAP_MS).
fn wrap_up() -> AgentState {
    let mut s = on_call();
    changed(&mut s, end("c1"), T5, &PW);
    s
}

#[test]
fn row_01_login_puts_agent_offline() {
    // Never logged in: status already offline, so `since` stays T0.
    let mut s = fresh();
    let mut want = s.clone();
    quiet(&mut s, Input::SocketOpened, T1, &P);
    (want.reason, want.connections, want.session) = (Some(Reason::Login), 1, Session::Connected);
    want.version = 1;
    assert_eq!(s, want);

    // An admin made the logged-out agent available with a note: login still means offline.
    // missed_in_row is deliberately not reset by login.
    let mut s = fresh();
    changed(&mut s, set(Available, Some("vip"), Admin), T1, &P);
    s.missed_in_row = 2;
    let mut want = s.clone();
    quiet(&mut s, Input::SocketOpened, T2, &P);
    moved(&mut want, Offline, Reason::Login, T2);
    (want.manual_status, want.note) = (M::Offline, None);
    (want.connections, want.session) = (1, Session::Connected);
    assert_eq!(s, want);
}

#[test]
fn row_01b_login_during_outbound_call_keeps_status() {
    let mut s = fresh();
    changed(&mut s, set(Busy, Some("lunch"), Admin), T1, &P);
    changed(&mut s, outbound("c1"), T2, &P);
    assert_eq!((s.status, s.since), (OnCall, T2));
    let mut want = s.clone();
    quiet(&mut s, Input::SocketOpened, T3, &P);
    (want.manual_status, want.note, want.reason) = (M::Offline, None, Some(Reason::Login));
    (want.connections, want.session, want.version) = (1, Session::Connected, 3);
    assert_eq!(s, want);
}

#[test]
fn row_02_another_socket_only_counts() {
    for mut s in [logged_in(), ringing(), wrap_up()] {
        let mut want = s.clone();
        quiet(&mut s, Input::SocketOpened, T6, &P);
        (want.connections, want.version) = (2, want.version + 1);
        assert_eq!(s, want);
    }
}

#[test]
fn row_03_manual_change_from_manual_status() {
    for from in M::ALL {
        for to in M::ALL {
            for (by, reason) in BY {
                let mut s = manual(from.status(), Some("old"));
                s.missed_in_row = 3;
                let mut want = s.clone();
                quiet(&mut s, set(to.status(), Some("new"), by), T3, &P);
                (want.status, want.manual_status, want.note) =
                    (to.status(), to, Some("new".into()));
                (want.missed_in_row, want.reason, want.version) =
                    (0, Some(reason), want.version + 1);
                if from != to {
                    want.since = T3;
                }
                assert_eq!(s, want, "{from:?} -> {to:?} by {by:?}");
            }
        }
    }
}

#[test]
fn row_04_manual_change_while_ringing_or_on_call_applies_later() {
    for (by, reason) in BY {
        for mut s in [ringing(), on_call()] {
            s.missed_in_row = 1; // not reset: only row 3 resets it
            let mut want = s.clone();
            quiet(&mut s, set(OnBreak, Some("coaching"), by), T5, &P);
            (want.manual_status, want.note) = (M::OnBreak, Some("coaching".into()));
            (want.reason, want.version) = (Some(reason), want.version + 1);
            assert_eq!(s, want);
        }
    }
    // ... and applies when the call is over.
    let mut s = on_call();
    changed(&mut s, set(Busy, Some("coaching"), Agent), T5, &P);
    changed(&mut s, end("c1"), T6, &P);
    assert_eq!((s.status, s.note.as_deref()), (Busy, Some("coaching")));
}

#[test]
fn row_05_manual_change_ends_wrap_up() {
    let mut s = wrap_up();
    let mut want = s.clone();
    quiet(&mut s, set(OnBreak, Some("lunch"), Agent), T6, &PW);
    moved(&mut want, OnBreak, Reason::Manual, T6);
    call_over(&mut want);
    (want.manual_status, want.note) = (M::OnBreak, Some("lunch".into()));
    assert_eq!(s, want);
    assert_eq!(s.ended_calls, ended(&["c1"]));
}

#[test]
fn row_06_system_status_is_invalid_status() {
    for st in [Ringing, OnCall, WrapUp] {
        for mut s in [manual(Available, None), ringing(), on_call(), wrap_up()] {
            for by in [Agent, Admin] {
                rejects(&mut s, set(st, None, by), T6, &PW, Rejection::InvalidStatus);
            }
        }
    }
}

#[test]
fn row_07_offer_to_available_rings() {
    let mut s = manual(Available, None);
    let mut want = s.clone();
    emits(&mut s, offer("c1"), T3, &P, vec![Effect::OfferToTabs]);
    moved(&mut want, Ringing, Reason::CallOffered, T3);
    want.ring_expires_at = Some(T3 + RING_MS);
    want.call = Some(Box::new(CallInfo {
        call_id: cid("c1"),
        direction: CallDirection::Inbound,
        ring_group: Some("sales".into()),
        from: Some("+15550001".into()),
        to: Some("+18000002".into()),
        offered_at: Some(T3),
        answered_at: None,
    }));
    assert_eq!(s, want);
}

#[test]
fn row_08_offer_to_anyone_else_is_not_available() {
    let offline = manual(Offline, None);
    let busy = manual(Busy, None);
    let on_break = manual(OnBreak, None);
    for mut s in [
        fresh(),
        offline,
        busy,
        on_break,
        ringing(),
        on_call(),
        wrap_up(),
    ] {
        rejects(&mut s, offer("c9"), T6, &PW, Rejection::NotAvailable);
    }
}

#[test]
fn row_09_accept_or_answered_connects() {
    let accepted = tel(TelephonyNotice::CallAccepted { call_id: cid("c1") });
    let cases = [
        (accept("c1"), Reason::CallAccepted, accepted),
        (answered("c1"), Reason::CallAnswered, vec![]),
    ];
    for (input, reason, effects) in cases {
        let mut s = ringing();
        s.missed_in_row = 2;
        let mut want = s.clone();
        emits(&mut s, input, T4, &P, effects);
        moved(&mut want, OnCall, reason, T4);
        (want.ring_expires_at, want.missed_in_row) = (None, 0);
        want.call.as_mut().unwrap().answered_at = Some(T4);
        assert_eq!(s, want);
    }
}

#[test]
fn row_10_decline_sets_busy() {
    let mut s = ringing();
    let mut want = s.clone();
    emits(&mut s, decline("c1"), T4, &P, vec![declined("c1", false)]);
    moved(&mut want, Busy, Reason::CallDeclined, T4);
    call_over(&mut want);
    (want.manual_status, want.note) = (M::Busy, None);
    assert_eq!(s, want);
}

fn ring_timeout(id: &str) -> Vec<Effect> {
    tel(TelephonyNotice::RingTimeout { call_id: cid(id) })
}

#[test]
fn row_11_ring_timeout_returns() {
    let mut s = ringing();
    let mut want = s.clone();
    let at = T3 + RING_MS;
    emits(&mut s, Input::RingTimerFired, at, &P, ring_timeout("c1"));
    moved(&mut want, Available, Reason::RingTimeout, at);
    call_over(&mut want);
    want.missed_in_row = 1;
    assert_eq!(s, want);
}

#[test]
fn row_11_max_missed_in_row_reached_sets_busy() {
    let p = with_max_missed(2);
    let mut s = ringing();
    changed(&mut s, Input::RingTimerFired, T3 + RING_MS, &p);
    assert_eq!((s.status, s.missed_in_row), (Available, 1));
    let t = T3 + RING_MS + 100;
    changed(&mut s, offer("c2"), t, &p);
    let mut want = s.clone();
    let fx = ring_timeout("c2");
    emits(&mut s, Input::RingTimerFired, t + RING_MS, &p, fx);
    moved(&mut want, Busy, Reason::RingTimeout, t + RING_MS);
    call_over(&mut want);
    (want.manual_status, want.note) = (M::Busy, Some("missed_calls".into()));
    want.missed_in_row = 2; // kept while busy
    assert_eq!(s, want);

    // A limit of 1 sets busy at the first timeout; a manual change resets the count.
    let p1 = with_max_missed(1);
    let mut s = ringing();
    changed(&mut s, Input::RingTimerFired, T3 + RING_MS, &p1);
    assert_eq!((s.status, s.missed_in_row), (Busy, 1));
    changed(&mut s, set(Available, None, Agent), T3 + RING_MS + 1, &p1);
    assert_eq!(
        (s.status, s.missed_in_row, s.note.as_deref()),
        (Available, 0, None)
    );
}

#[test]
fn row_11_max_missed_in_row_zero_is_disabled() {
    let mut s = ringing();
    s.missed_in_row = 7;
    let mut want = s.clone();
    changed(&mut s, Input::RingTimerFired, T3 + RING_MS, &P);
    moved(&mut want, Available, Reason::RingTimeout, T3 + RING_MS);
    call_over(&mut want);
    want.missed_in_row = 8;
    assert_eq!(s, want);
}

#[test]
fn row_12_cancel_or_end_while_ringing_returns() {
    for input in [cancel("c1"), end("c1")] {
        let mut s = ringing();
        let mut want = s.clone();
        quiet(&mut s, input, T4, &PW);
        moved(&mut want, Available, Reason::CallCancelled, T4);
        call_over(&mut want);
        assert_eq!(s, want);
    }
}

#[test]
fn row_13_call_end_with_wrap_up() {
    let mut s = on_call();
    let mut want = s.clone();
    quiet(&mut s, end("c1"), T5, &PW);
    moved(&mut want, WrapUp, Reason::CallEnded, T5);
    want.wrap_up_expires_at = Some(T5 + WRAP_MS);
    assert_eq!(s, want); // the call stays set during wrap-up
    assert_eq!(next_deadline(&s), Some((T5 + WRAP_MS, Timer::WrapUp)));
}

#[test]
fn row_13_call_end_without_wrap_up_returns() {
    let mut s = on_call();
    let mut want = s.clone();
    quiet(&mut s, end("c1"), T5, &P);
    moved(&mut want, Available, Reason::CallEnded, T5);
    call_over(&mut want);
    assert_eq!(s, want);
}

#[test]
fn row_14_wrap_up_timer_returns() {
    let mut s = wrap_up();
    let mut want = s.clone();
    let at = T5 + WRAP_MS;
    quiet(&mut s, Input::WrapUpTimerFired, at, &PW);
    moved(&mut want, Available, Reason::WrapUpExpired, at);
    call_over(&mut want);
    assert_eq!(s, want);
}

#[test]
fn row_15_agent_ends_wrap_up() {
    let mut s = wrap_up();
    let mut want = s.clone();
    quiet(&mut s, Input::EndWrapUp, T6, &PW);
    moved(&mut want, Available, Reason::WrapUpEnded, T6);
    call_over(&mut want);
    assert_eq!(s, want);
}

fn outbound_call(id: &str, answered_at: Millis) -> Option<Box<CallInfo>> {
    Some(Box::new(CallInfo {
        call_id: cid(id),
        direction: CallDirection::Outbound,
        ring_group: None,
        from: None,
        to: Some("+19990003".into()),
        offered_at: None,
        answered_at: Some(answered_at),
    }))
}

#[test]
fn row_16_outbound_from_offline_and_every_manual_status() {
    for m in M::ALL {
        let mut s = manual(m.status(), Some("n"));
        let mut want = s.clone();
        quiet(&mut s, outbound("c7"), T3, &P);
        moved(&mut want, OnCall, Reason::OutboundStarted, T3);
        want.call = outbound_call("c7", T3);
        assert_eq!(s, want, "from {m:?}");
    }
}

#[test]
fn row_16_outbound_ends_wrap_up() {
    let mut s = wrap_up();
    let mut want = s.clone();
    quiet(&mut s, outbound("c2"), T6, &PW);
    moved(&mut want, OnCall, Reason::OutboundStarted, T6);
    call_over(&mut want);
    want.call = outbound_call("c2", T6);
    assert_eq!(s, want);
}

#[test]
fn row_17_outbound_while_ringing_or_on_call_is_invalid_state() {
    for mut s in [ringing(), on_call()] {
        rejects(&mut s, outbound("c2"), T6, &P, Rejection::InvalidState);
    }
}

#[test]
fn row_18_agent_and_admin_logout() {
    let cases = [(Agent, Reason::Logout), (Admin, Reason::AdminLogout)];
    for (by, reason) in cases {
        let mut s = manual(Busy, Some("lunch"));
        changed(&mut s, Input::SocketOpened, T3, &P);
        let mut want = s.clone();
        emits(&mut s, logout(by), T4, &P, vec![gone(reason)]);
        moved(&mut want, Offline, reason, T4);
        logged_out(&mut want);
        assert_eq!(s, want);
    }
}

#[test]
fn row_18_logout_ends_wrap_up() {
    let mut s = wrap_up();
    let mut want = s.clone();
    let fx = vec![gone(Reason::AdminLogout)];
    emits(&mut s, logout(Admin), T6, &PW, fx);
    moved(&mut want, Offline, Reason::AdminLogout, T6);
    call_over(&mut want);
    logged_out(&mut want);
    assert_eq!(s, want);
}

#[test]
fn row_19_logout_while_ringing_declines_the_call() {
    let mut s = ringing();
    let mut want = s.clone();
    let fx = vec![declined("c1", true), gone(Reason::Logout)];
    emits(&mut s, logout(Agent), T4, &P, fx);
    moved(&mut want, Offline, Reason::Logout, T4);
    call_over(&mut want);
    logged_out(&mut want);
    assert_eq!(s, want);
}

#[test]
fn row_20_logout_on_call_waits_for_the_call_to_end() {
    let mut s = on_call();
    changed(&mut s, set(Busy, Some("lunch"), Agent), T5, &P);
    let mut want = s.clone();
    emits(&mut s, logout(Agent), T6, &P, vec![gone(Reason::Logout)]);
    logged_out(&mut want);
    (want.reason, want.version) = (Some(Reason::Logout), want.version + 1);
    assert_eq!(s, want); // status and since stay: still on the call
    let mut want = s.clone();
    changed(&mut s, end("c1"), T7, &P);
    moved(&mut want, Offline, Reason::CallEnded, T7);
    call_over(&mut want);
    assert_eq!(s, want);
}

#[test]
fn row_21_last_socket_closes_then_grace_logs_out() {
    let mut s = manual(Available, None);
    let mut want = s.clone();
    quiet(&mut s, Input::SocketClosed, T3, &P);
    let until = T3 + GRACE_MS;
    (want.connections, want.session) = (0, Session::Grace { until });
    want.version += 1; // reason (manual), status and since unchanged
    assert_eq!(s, want);
    assert_eq!(next_deadline(&s), Some((until, Timer::Grace)));

    unchanged(&mut s, Input::GraceExpired, until - 1, &P);
    let mut want = s.clone();
    let fx = vec![gone(Reason::Disconnected)];
    emits(&mut s, Timer::Grace.input(), until, &P, fx);
    moved(&mut want, Offline, Reason::Disconnected, until);
    logged_out(&mut want);
    assert_eq!(s, want);
    assert_eq!(next_deadline(&s), None);
}

#[test]
fn row_21_grace_running_out_while_ringing_declines() {
    let mut s = ringing();
    changed(&mut s, Input::SocketClosed, T4, &P);
    assert_eq!(next_deadline(&s), Some((T4 + GRACE_MS, Timer::Grace)));
    let fx = vec![declined("c1", true), gone(Reason::Disconnected)];
    emits(&mut s, Input::GraceExpired, T4 + GRACE_MS, &P, fx);
    assert_eq!(
        (s.status, s.reason, s.call),
        (Offline, Some(Reason::Disconnected), None)
    );
}

#[test]
fn row_21_closing_one_of_several_sockets_starts_no_grace() {
    let mut s = manual(Busy, None);
    changed(&mut s, Input::SocketOpened, T3, &P);
    let mut want = s.clone();
    quiet(&mut s, Input::SocketClosed, T4, &P);
    (want.connections, want.version) = (1, want.version + 1);
    assert_eq!(s, want);
    assert_eq!((s.session, next_deadline(&s)), (Session::Connected, None));
    unchanged(&mut s, Input::GraceExpired, T4 + GRACE_MS, &P);
}

#[test]
fn row_22_reconnect_within_grace_keeps_everything() {
    let mut s = manual(Busy, Some("lunch"));
    changed(&mut s, Input::SocketClosed, T3, &P);
    let mut want = s.clone();
    quiet(&mut s, Input::SocketOpened, T3 + GRACE_MS - 1, &P);
    (want.connections, want.session) = (1, Session::Connected);
    want.version += 1;
    assert_eq!(s, want);
    assert_eq!(next_deadline(&s), None);
    // The grace timer, if it still fires, does nothing.
    unchanged(&mut s, Input::GraceExpired, T3 + GRACE_MS, &P);
}

#[test]
fn row_22_a_socket_after_the_grace_deadline_is_a_login() {
    // The grace timer has not been fed yet (or the state was restored after a restart):
    // the agent is logged out as in row 21, then logs in as in row 1.
    let mut s = manual(Busy, Some("lunch"));
    changed(&mut s, Input::SocketClosed, T3, &P);
    let mut want = s.clone();
    let fx = vec![gone(Reason::Disconnected)];
    emits(&mut s, Input::SocketOpened, T3 + GRACE_MS, &P, fx);
    moved(&mut want, Offline, Reason::Login, T3 + GRACE_MS);
    (want.manual_status, want.note) = (M::Offline, None);
    (want.connections, want.session) = (1, Session::Connected);
    assert_eq!(s, want);
    // While ringing, the ring ends as a decline by logout.
    let mut s = ringing();
    changed(&mut s, Input::SocketClosed, T4, &P);
    let fx = vec![declined("c1", true), gone(Reason::Disconnected)];
    emits(&mut s, Input::SocketOpened, T4 + GRACE_MS + 1, &P, fx);
    assert_eq!(
        (s.status, s.reason, s.call),
        (Offline, Some(Reason::Login), None)
    );
}

#[test]
fn row_23_call_actions_in_the_wrong_state_or_for_another_call() {
    for mut s in [manual(Available, None), on_call(), wrap_up()] {
        rejects(&mut s, accept("c1"), T6, &PW, Rejection::InvalidState);
        rejects(&mut s, decline("c1"), T6, &PW, Rejection::InvalidState);
    }
    let mut s = ringing();
    rejects(&mut s, accept("c2"), T4, &P, Rejection::UnknownCall);
    rejects(&mut s, decline("c2"), T4, &P, Rejection::UnknownCall);
    for mut s in [manual(Available, None), ringing(), on_call()] {
        rejects(&mut s, Input::EndWrapUp, T6, &P, Rejection::InvalidState);
    }
    // Multiple tabs: the first accept wins, the others get invalid_state.
    let mut s = ringing();
    changed(&mut s, accept("c1"), T4, &P);
    rejects(&mut s, accept("c1"), T4, &P, Rejection::InvalidState);
    rejects(&mut s, decline("c1"), T4, &P, Rejection::InvalidState);
}

#[test]
fn row_24_telephony_end_or_cancel_for_another_call_is_stale() {
    for mut s in [manual(Available, None), ringing(), on_call(), wrap_up()] {
        stale(&mut s, end("c2"), T6, &PW);
        stale(&mut s, cancel("c2"), T6, &PW);
    }
    // Late events for the current call: a cancel after the agent accepted, a second end
    // during wrap-up, and both after the call is over.
    let mut s = on_call();
    stale(&mut s, cancel("c1"), T5, &PW);
    changed(&mut s, end("c1"), T5, &PW);
    stale(&mut s, end("c1"), T6, &PW);
    stale(&mut s, cancel("c1"), T6, &PW);
    changed(&mut s, Input::EndWrapUp, T6, &PW);
    stale(&mut s, end("c1"), T7, &PW);
    stale(&mut s, cancel("c1"), T7, &PW);
}

/// The cross-cutting rules: no-op requests, compare-and-set, `since`, notes, timers, stale.
#[path = "machine_rules_tests.rs"]
mod rules;
