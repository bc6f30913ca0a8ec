//! The invariants of the status model as executable checks, shared by the property tests
//! (`cargo test`) and the cargo-fuzz target (`fuzz/`): every reachable state must pass
//! [`check_state`], and every step [`checked_apply`]'s rules. They panic on a violation, so
//! a fuzzer or a property test reports the input that broke them.

// Checks for tests and fuzzing: a panic is how a violation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::machine::{apply, Effect, Outcome, Rejection};
use super::{
    Actor, AgentState, CallDirection, Input, ManualStatus, Millis, Policy, Reason, Session, Status,
};

/// The invariants every reachable state satisfies.
pub fn check_state(s: &AgentState) {
    match s.status.as_manual() {
        Some(m) => {
            assert_eq!(m, s.manual_status, "manual status shown: {s:?}");
            assert!(s.call.is_none(), "manual status with a call: {s:?}");
            assert!(
                s.ring_expires_at.is_none() && s.wrap_up_expires_at.is_none(),
                "{s:?}"
            );
        }
        None => assert!(s.call.is_some(), "system status without a call: {s:?}"),
    }
    match s.status {
        Status::Ringing => {
            assert!(
                s.ring_expires_at.is_some() && s.wrap_up_expires_at.is_none(),
                "{s:?}"
            );
            let call = s.call.as_ref().expect("ringing has a call");
            assert_eq!(call.direction, CallDirection::Inbound);
            assert!(call.answered_at.is_none());
        }
        Status::OnCall => {
            assert!(
                s.ring_expires_at.is_none() && s.wrap_up_expires_at.is_none(),
                "{s:?}"
            );
        }
        Status::WrapUp => {
            assert!(
                s.wrap_up_expires_at.is_some() && s.ring_expires_at.is_none(),
                "{s:?}"
            );
        }
        _ => {}
    }
    if s.call.is_none() {
        assert!(
            s.status.as_manual().is_some(),
            "no call but system status: {s:?}"
        );
    }
    if let Some(id) = s.call_id() {
        assert!(
            !s.ended_calls.contains(id),
            "current call remembered as ended: {s:?}"
        );
    }
    match s.session {
        Session::LoggedOut | Session::Grace { .. } => assert_eq!(s.connections, 0, "{s:?}"),
        Session::Connected => assert!(s.connections > 0, "{s:?}"),
    }
}

/// Applies one input like [`apply`] and checks the per-step rules against the state
/// before, then every invariant of the result. Panics on a violation.
pub fn checked_apply(
    s: &mut AgentState,
    input: Input,
    now: Millis,
    p: &Policy,
) -> Result<Outcome, Rejection> {
    let before = s.clone();
    let result = apply(s, input.clone(), now, p);
    match &result {
        Err(_) => assert_eq!(*s, before, "rejected {input:?} changed the state"),
        Ok(Outcome::Changed(_)) => assert_eq!(s.version, before.version + 1),
        Ok(Outcome::Stale) => assert_eq!(*s, before, "stale {input:?} changed the state"),
        Ok(Outcome::Unchanged) => {
            // Only the internal session may move.
            let mut same = before.clone();
            same.session = s.session;
            assert_eq!(*s, same, "unchanged {input:?} changed the state");
        }
    }
    if s.status != before.status {
        assert_eq!(s.since, now, "status changed, since not updated");
    } else {
        assert_eq!(s.since, before.since, "since moved without a status change");
    }
    match (&input, &result) {
        (
            Input::SetStatus {
                if_version: Some(v),
                ..
            },
            _,
        ) if *v != before.version => {
            let current = before.version;
            assert_eq!(result, Err(Rejection::Conflict { current }));
        }
        (Input::SetStatus { status, by, .. }, Ok(outcome)) => {
            let m = status
                .as_manual()
                .expect("only manual statuses are accepted");
            assert_eq!(s.manual_status, m);
            if matches!(outcome, Outcome::Changed(_)) {
                let reason = match by {
                    Actor::Agent => Reason::Manual,
                    Actor::Admin => Reason::Admin,
                };
                assert_eq!(s.reason, Some(reason));
            }
        }
        (Input::SetStatus { status, .. }, Err(e)) => {
            assert!(status.as_manual().is_none());
            assert_eq!(*e, Rejection::InvalidStatus);
        }
        (Input::CallOffered { call_id, .. }, Ok(Outcome::Changed(effects))) => {
            assert_eq!(
                before.status,
                Status::Available,
                "offered to a non-available agent"
            );
            assert_eq!((s.status, s.call_id()), (Status::Ringing, Some(call_id)));
            assert_eq!(effects, &vec![Effect::OfferToTabs]);
        }
        (Input::CallOffered { call_id, .. }, other) => {
            assert!(before.status != Status::Available || before.ended_calls.contains(call_id));
            assert!(matches!(
                other,
                Err(Rejection::NotAvailable) | Ok(Outcome::Stale)
            ));
        }
        (Input::AcceptCall { call_id }, Ok(_)) => {
            assert_eq!(
                (before.status, before.call_id()),
                (Status::Ringing, Some(call_id))
            );
            assert_eq!((s.status, s.missed_in_row), (Status::OnCall, 0));
        }
        (Input::Logout { .. }, Ok(_)) => {
            assert_eq!((s.session, s.connections), (Session::LoggedOut, 0));
            assert_eq!(s.manual_status, ManualStatus::Offline);
        }
        (Input::SocketOpened, Ok(_)) => {
            assert_eq!(s.session, Session::Connected);
            assert_eq!(s.connections, before.connections + 1);
            let login = match before.session {
                Session::LoggedOut => true,
                Session::Grace { until } => until <= now, // grace ran out: not a reconnect
                Session::Connected => false,
            };
            if login {
                assert_eq!(
                    (s.reason, s.manual_status),
                    (Some(Reason::Login), ManualStatus::Offline)
                );
            } else {
                assert_eq!(s.reason, before.reason, "a reconnect keeps the reason");
            }
        }
        (Input::EndWrapUp, r) => assert_eq!(r.is_ok(), before.status == Status::WrapUp),
        _ => {}
    }
    check_state(s);
    result
}
