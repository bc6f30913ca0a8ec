//! The status machine (`model::machine::apply`) fed arbitrary input sequences, with time
//! passing and due timers firing in between: never a panic, and after every step the
//! invariants of `docs/status-model.md` and the per-step rules hold (`model::invariants`, the
//! same checks the property tests of `cargo test` run).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use presence_hub::model::invariants::{check_state, checked_apply as step};
use presence_hub::model::machine::next_deadline;
use presence_hub::model::{
    Actor, AgentId, AgentState, CallId, Input, Millis, Outcome, Policy, Status,
};

const T0: Millis = 1_700_000_000_000;
const CALLS: [&str; 5] = ["c0", "c1", "c2", "c3", "c-long-id_4"];

fn call(u: &mut Unstructured) -> Result<CallId> {
    let name = *u.choose(&CALLS)?;
    Ok(CallId::parse(name).expect("valid call id"))
}

fn status(u: &mut Unstructured) -> Result<Status> {
    Ok(*u.choose(&Status::ALL)?)
}

fn actor(u: &mut Unstructured) -> Result<Actor> {
    Ok(if u.arbitrary::<bool>()? {
        Actor::Agent
    } else {
        Actor::Admin
    })
}

fn text(u: &mut Unstructured) -> Result<Option<String>> {
    if u.arbitrary::<bool>()? {
        let len = u.int_in_range(0..=8)?;
        let s: String = (0..len)
            .map(|_| u.int_in_range(b'a'..=b'z').map(char::from))
            .collect::<Result<_>>()?;
        Ok(Some(s))
    } else {
        Ok(None)
    }
}

fn input(u: &mut Unstructured, s: &AgentState) -> Result<Input> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => Input::SocketOpened,
        1 => Input::SocketClosed,
        2 => Input::GraceExpired,
        3 => {
            // if_version: none, matching, or off by some amount.
            let if_version = match u.int_in_range(0..=2u8)? {
                0 => None,
                1 => Some(s.version),
                _ => Some(u.arbitrary::<u64>()?),
            };
            Input::SetStatus {
                status: status(u)?,
                note: text(u)?,
                if_version,
                by: actor(u)?,
            }
        }
        4 => Input::AcceptCall { call_id: call(u)? },
        5 => Input::DeclineCall { call_id: call(u)? },
        6 => Input::EndWrapUp,
        7 => Input::Logout { by: actor(u)? },
        8 => Input::CallOffered {
            call_id: call(u)?,
            from: text(u)?,
            to: text(u)?,
            ring_group: text(u)?,
            ring_timeout_ms: u.int_in_range(0..=120_000)?,
        },
        9 => Input::CallAnswered { call_id: call(u)? },
        10 => Input::CallCancelled { call_id: call(u)? },
        11 => Input::CallEnded { call_id: call(u)? },
        12 => Input::OutboundStarted {
            call_id: call(u)?,
            to: text(u)?,
        },
        13 => Input::RingTimerFired,
        14 => Input::WrapUpTimerFired,
        _ => Input::SocketOpened,
    })
}

fn run(u: &mut Unstructured) -> Result<()> {
    let p = Policy {
        wrap_up_ms: u.int_in_range(0..=20_000)?,
        disconnect_grace_ms: u.int_in_range(0..=30_000)?,
        max_missed_in_row: u.int_in_range(0..=4)?,
    };
    let mut s = AgentState::new(AgentId::parse("fuzz-agent").expect("id"), T0);
    check_state(&s);
    let mut now = T0;
    let mut changes = 0u64;
    for _ in 0..512 {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=9u8)? {
            // Time passes; due timers fire at their deadlines (the actor's job).
            0 | 1 => {
                let until = now + u.int_in_range(0..=60_000u64)?;
                let mut last = None;
                while let Some((at, timer)) = next_deadline(&s) {
                    if at > until {
                        break;
                    }
                    assert_ne!(last, Some((at, timer)), "a due timer did nothing: {s:?}");
                    last = Some((at, timer));
                    now = now.max(at);
                    let r = step(&mut s, timer.input(), now, &p);
                    assert!(r.is_ok(), "a due timer was rejected: {r:?} {s:?}");
                    if let Ok(Outcome::Changed(_)) = r {
                        changes += 1;
                    }
                }
                now = now.max(until);
            }
            // Time passes, timers late (racing the next input).
            2 => now += u.int_in_range(0..=60_000u64)?,
            _ => {
                let i = input(u, &s)?;
                if let Ok(Outcome::Changed(_)) = step(&mut s, i, now, &p) {
                    changes += 1;
                }
            }
        }
        assert_eq!(s.version, changes, "version is the number of changes");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
