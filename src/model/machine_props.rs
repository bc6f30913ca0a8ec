//! Property tests: random event sequences against the invariants of
//! `docs/status-model.md`, checked after every single step.

use super::*;
use crate::model::invariants::{check_state, checked_apply as step};
use crate::model::AgentId;
use proptest::prelude::*;

const T0: Millis = 1_700_000_000_000;
const POOL: [&str; 4] = ["c0", "c1", "c2", "c3"];

/// One step of a generated scenario.
#[derive(Debug, Clone)]
enum Op {
    /// Feed this input now.
    Do(Input),
    /// A `SetStatus` whose `if_version` is the current version plus `off` (0 = matching).
    Cas {
        status: Status,
        note: Option<String>,
        by: Actor,
        off: u64,
    },
    /// Two offers at the same instant (invariant 2).
    TwoOffers(CallId, CallId),
    /// Time passes and the actor fires every timer that falls due, at its deadline.
    Wait(u64),
    /// Time passes but the timers are late (they race with the next inputs).
    Late(u64),
}

fn call_id() -> impl Strategy<Value = CallId> {
    proptest::sample::select(POOL.to_vec()).prop_map(|id| CallId::parse(id).unwrap())
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![Just(Actor::Agent), Just(Actor::Admin)]
}

fn status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

fn note() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(vec!["lunch", "coaching"]).prop_map(String::from))
}

fn offer(call_id: CallId, ring_timeout_ms: u64) -> Input {
    Input::CallOffered {
        call_id,
        from: Some("+15550001".into()),
        to: None,
        ring_group: None,
        ring_timeout_ms,
    }
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => Just(Input::SocketOpened),
        3 => Just(Input::SocketClosed),
        1 => Just(Input::GraceExpired),
        5 => (status(), note(), proptest::option::of(0u64..8), actor()).prop_map(
            |(status, note, if_version, by)| Input::SetStatus { status, note, if_version, by }
        ),
        3 => call_id().prop_map(|call_id| Input::AcceptCall { call_id }),
        2 => call_id().prop_map(|call_id| Input::DeclineCall { call_id }),
        2 => Just(Input::EndWrapUp),
        1 => actor().prop_map(|by| Input::Logout { by }),
        6 => (call_id(), 0u64..30_000).prop_map(|(id, ms)| offer(id, ms)),
        2 => call_id().prop_map(|call_id| Input::CallAnswered { call_id }),
        2 => call_id().prop_map(|call_id| Input::CallCancelled { call_id }),
        3 => call_id().prop_map(|call_id| Input::CallEnded { call_id }),
        2 => call_id().prop_map(|call_id| Input::OutboundStarted { call_id, to: None }),
        1 => Just(Input::RingTimerFired),
        1 => Just(Input::WrapUpTimerFired),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => input().prop_map(Op::Do),
        2 => (status(), note(), actor(), prop_oneof![Just(0u64), 1u64..3, Just(u64::MAX)])
            .prop_map(|(status, note, by, off)| Op::Cas { status, note, by, off }),
        1 => (call_id(), call_id()).prop_map(|(a, b)| Op::TwoOffers(a, b)),
        4 => prop_oneof![0u64..2_000, 2_000u64..40_000].prop_map(Op::Wait),
        1 => (0u64..40_000).prop_map(Op::Late),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![Just(0u64), 1u64..10_000],
        0u64..20_000,
        0u32..=3,
    )
        .prop_map(
            |(wrap_up_ms, disconnect_grace_ms, max_missed_in_row)| Policy {
                wrap_up_ms,
                disconnect_grace_ms,
                max_missed_in_row,
            },
        )
}

/// A scenario being played: the state, the clock, and how many changes were committed.
struct Sim {
    s: AgentState,
    now: Millis,
    p: Policy,
    changes: u64,
}

impl Sim {
    fn new(p: Policy) -> Self {
        let s = AgentState::new(AgentId::parse("agent-1").unwrap(), T0);
        check_state(&s);
        Sim {
            s,
            now: T0,
            p,
            changes: 0,
        }
    }

    fn feed(&mut self, input: Input) -> Result<Outcome, Rejection> {
        let result = step(&mut self.s, input, self.now, &self.p);
        if let Ok(Outcome::Changed(_)) = result {
            self.changes += 1;
        }
        assert_eq!(
            self.s.version, self.changes,
            "version is not the number of changes"
        );
        result
    }

    /// Fires every timer due by `until`, each at its own deadline (never before `now`).
    fn fire_due(&mut self, until: Millis) {
        let mut last = None;
        while let Some((at, timer)) = next_deadline(&self.s) {
            if at > until {
                break;
            }
            assert_ne!(
                last,
                Some((at, timer)),
                "a due timer did nothing: {:?}",
                self.s
            );
            last = Some((at, timer));
            self.now = at.max(self.now);
            let result = self.feed(timer.input());
            assert!(result.is_ok(), "a due timer was rejected: {result:?}");
        }
        self.now = until.max(self.now);
    }

    fn play(&mut self, op: Op) {
        match op {
            Op::Do(input) => {
                let _ = self.feed(input);
            }
            Op::Cas {
                status,
                note,
                by,
                off,
            } => {
                let if_version = Some(self.s.version.wrapping_add(off));
                let _ = self.feed(Input::SetStatus {
                    status,
                    note,
                    if_version,
                    by,
                });
            }
            Op::TwoOffers(a, b) => {
                let ready = self.s.status == Status::Available && !self.s.ended_calls.contains(&a);
                let first = self.feed(offer(a, 5_000));
                let second = self.feed(offer(b, 5_000));
                let rang = [&first, &second]
                    .iter()
                    .filter(|r| matches!(r, Ok(Outcome::Changed(_))))
                    .count();
                assert!(rang <= 1, "two offers both rang: {first:?} {second:?}");
                if ready {
                    assert!(matches!(first, Ok(Outcome::Changed(_))), "{first:?}");
                    assert!(matches!(
                        second,
                        Err(Rejection::NotAvailable) | Ok(Outcome::Stale)
                    ));
                }
            }
            Op::Wait(d) => self.fire_due(self.now + d),
            Op::Late(d) => self.now += d,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_after_every_step(p in policy(), ops in prop::collection::vec(op(), 1..60)) {
        let mut sim = Sim::new(p);
        for op in ops {
            sim.play(op);
        }
        // With enough time every timer fires: the agent ends in a manual status, or on a
        // call that only telephony can end.
        sim.fire_due(sim.now + 1_000_000);
        prop_assert_eq!(next_deadline(&sim.s), None);
        prop_assert!(sim.s.status.as_manual().is_some() || sim.s.status == Status::OnCall);
    }

    #[test]
    fn every_input_from_every_reachable_state(p in policy(), ops in prop::collection::vec(op(), 0..40)) {
        let mut sim = Sim::new(p);
        for op in ops {
            sim.play(op);
        }
        let deadline = next_deadline(&sim.s).map(|(at, _)| at.max(sim.now));
        for input in catalogue(sim.s.version) {
            for now in [Some(sim.now), deadline].into_iter().flatten() {
                let mut s = sim.s.clone();
                let _ = step(&mut s, input.clone(), now, &p);
            }
        }
    }
}

/// Every kind of input, over every call id of the pool and every status.
fn catalogue(version: u64) -> Vec<Input> {
    let mut all = vec![
        Input::SocketOpened,
        Input::SocketClosed,
        Input::GraceExpired,
        Input::EndWrapUp,
        Input::RingTimerFired,
        Input::WrapUpTimerFired,
        Input::Logout { by: Actor::Agent },
        Input::Logout { by: Actor::Admin },
    ];
    for status in Status::ALL {
        for if_version in [None, Some(version), Some(version + 1)] {
            for note in [None, Some("lunch".to_string())] {
                let by = Actor::Agent;
                all.push(Input::SetStatus {
                    status,
                    note,
                    if_version,
                    by,
                });
            }
        }
    }
    for id in POOL {
        let call_id = CallId::parse(id).unwrap();
        all.push(offer(call_id.clone(), 1_000));
        all.push(Input::AcceptCall {
            call_id: call_id.clone(),
        });
        all.push(Input::DeclineCall {
            call_id: call_id.clone(),
        });
        all.push(Input::CallAnswered {
            call_id: call_id.clone(),
        });
        all.push(Input::CallNoAnswer {
            call_id: call_id.clone(),
        });
        all.push(Input::CallRejected {
            call_id: call_id.clone(),
        });
        all.push(Input::CallCancelled {
            call_id: call_id.clone(),
        });
        all.push(Input::CallEnded {
            call_id: call_id.clone(),
        });
        all.push(Input::OutboundStarted { call_id, to: None });
    }
    all
}
