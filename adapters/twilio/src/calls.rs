//! Live inbound calls the adapter is hunting for: which agents were tried, which one rings
//! now, and whether that ring's outcome was already applied. Twilio reports one outcome
//! twice (the `<Dial>` action and the agent leg's status callback, in no promised order),
//! and the hub reports console declines and its own ring timeouts: the first report closes
//! the attempt, later ones find it closed and change nothing.
//!
//! Bounded: at most `capacity` calls; the oldest is forgotten first (a forgotten call is
//! still handled from what each Twilio request carries, only less precisely).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One inbound call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The ring group being hunted.
    pub group: String,
    /// Caller's number (`From`).
    pub from: String,
    /// Called number (`To`).
    pub to: String,
    /// Agents rung so far, in order.
    pub tried: Vec<String>,
    /// The agent ringing now and whether that ring is still undecided.
    pub ringing: Option<(String, Attempt)>,
    /// Answers already given, by the request that asked (`voice`, `action:<DialCallSid>`), so
    /// a retried webhook gets the same TwiML.
    answers: Vec<(String, String)>,
    /// The hub ended a ring and the adapter is moving the caller on through REST (or
    /// could not): what a late `<Dial>` action for an ended ring must answer.
    moving: Option<Move>,
    /// Counts REST moves, so the outcome of an older, slower one never overwrites a newer.
    move_gen: u64,
}

/// Where a REST move of the caller stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Hunting the next agent or waiting for Twilio's answer to the call update.
    InFlight,
    /// The update failed: Twilio still runs the old `<Dial>`, so its action request must be
    /// answered with this TwiML (the call's current hunting state) instead.
    Undelivered(String),
}

/// The state of one agent's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Ringing; no outcome applied yet.
    Open,
    /// Outcome applied (answered, timed out, declined, cancelled); `Mover` says who moves
    /// the caller on.
    Closed(Mover),
}

/// Who moves the caller on to the next agent after a ring ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// Twilio's `<Dial>` action request (Twilio ended the ring itself).
    Action,
    /// A REST update of the live call (the hub ended the ring: console decline, hub timer).
    Rest,
}

impl Call {
    /// A new call with nobody tried yet.
    pub fn new(group: &str, from: &str, to: &str) -> Call {
        Call {
            group: group.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            tried: Vec::new(),
            ringing: None,
            answers: Vec::new(),
            moving: None,
            move_gen: 0,
        }
    }

    /// The agent currently (or last) rung.
    pub fn current_agent(&self) -> Option<&str> {
        self.ringing.as_ref().map(|(a, _)| a.as_str())
    }
}

/// The table of calls.
pub struct Calls {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<String, Call>,
    order: VecDeque<String>,
}

impl Calls {
    /// An empty table holding at most `capacity` calls.
    pub fn new(capacity: usize) -> Calls {
        Calls {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of a call's state.
    pub fn get(&self, call_sid: &str) -> Option<Call> {
        self.lock().calls.get(call_sid).cloned()
    }

    /// Adds a call if it is not there yet.
    pub fn ensure(&self, call_sid: &str, call: Call) {
        let mut inner = self.lock();
        if inner.calls.contains_key(call_sid) {
            return;
        }
        while inner.calls.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.calls.remove(&old);
                }
                None => break,
            }
        }
        inner.order.push_back(call_sid.to_string());
        inner.calls.insert(call_sid.to_string(), call);
    }

    /// Records that `agent` now rings for the call.
    pub fn ringing(&self, call_sid: &str, agent: &str) {
        if let Some(c) = self.lock().calls.get_mut(call_sid) {
            c.tried.push(agent.to_string());
            c.ringing = Some((agent.to_string(), Attempt::Open));
        }
    }

    /// Closes `agent`'s ring if it is the open one. True for the first caller only: it
    /// applies the outcome; everyone after it finds the ring closed. `mover` says who moves
    /// the caller on.
    pub fn close(&self, call_sid: &str, agent: &str, mover: Mover) -> bool {
        let mut inner = self.lock();
        let Some(c) = inner.calls.get_mut(call_sid) else {
            return false;
        };
        match &mut c.ringing {
            Some((a, state)) if a == agent && *state == Attempt::Open => {
                *state = Attempt::Closed(mover);
                true
            }
            _ => false,
        }
    }

    /// The state of `agent`'s ring, if that agent is the one rung last.
    pub fn attempt(&self, call_sid: &str, agent: &str) -> Option<Attempt> {
        let inner = self.lock();
        match &inner.calls.get(call_sid)?.ringing {
            Some((a, state)) if a == agent => Some(*state),
            _ => None,
        }
    }

    /// The answer given earlier to the request `key`, if any.
    pub fn answer_for(&self, call_sid: &str, key: &str) -> Option<String> {
        let inner = self.lock();
        let c = inner.calls.get(call_sid)?;
        c.answers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, twiml)| twiml.clone())
    }

    /// Remembers the answer given to the request `key`.
    pub fn remember_answer(&self, call_sid: &str, key: &str, twiml: &str) {
        if let Some(c) = self.lock().calls.get_mut(call_sid) {
            if c.answers.len() < 64 {
                c.answers.push((key.to_string(), twiml.to_string()));
            }
        }
    }

    /// Starts a REST move (the hub ended the ring): returns its generation, or `None` for a
    /// forgotten call. A move started later supersedes this one.
    pub fn start_move(&self, call_sid: &str) -> Option<u64> {
        let mut inner = self.lock();
        let c = inner.calls.get_mut(call_sid)?;
        c.move_gen += 1;
        c.moving = Some(Move::InFlight);
        Some(c.move_gen)
    }

    /// Records how move `generation` ended: delivered through REST (`None`: Twilio runs the
    /// new TwiML), or not (`Some(twiml)`: the old `<Dial>`'s action must answer it). The
    /// outcome of a superseded move is ignored.
    pub fn end_move(&self, call_sid: &str, generation: u64, undelivered: Option<String>) {
        if let Some(c) = self.lock().calls.get_mut(call_sid) {
            if c.move_gen == generation {
                c.moving = undelivered.map(Move::Undelivered);
            }
        }
    }

    /// Where the latest REST move stands. An undelivered answer is handed out once (taken):
    /// after that Twilio runs it, as if the update had worked.
    pub fn take_move(&self, call_sid: &str) -> Option<Move> {
        let mut inner = self.lock();
        let c = inner.calls.get_mut(call_sid)?;
        match c.moving.take() {
            Some(Move::InFlight) => {
                c.moving = Some(Move::InFlight);
                Some(Move::InFlight)
            }
            other => other,
        }
    }

    /// Forgets a call that is over.
    pub fn remove(&self, call_sid: &str) {
        let mut inner = self.lock();
        if inner.calls.remove(call_sid).is_some() {
            inner.order.retain(|s| s != call_sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_report_closes_the_ring() {
        let calls = Calls::new(10);
        calls.ensure("CA1", Call::new("g", "+1", "+2"));
        calls.ringing("CA1", "a1");
        assert!(
            !calls.close("CA1", "a2", Mover::Action),
            "not the ringing agent"
        );
        assert!(calls.close("CA1", "a1", Mover::Rest));
        assert!(!calls.close("CA1", "a1", Mover::Action), "already closed");
        assert_eq!(
            calls.attempt("CA1", "a1"),
            Some(Attempt::Closed(Mover::Rest))
        );
        calls.ringing("CA1", "a2");
        assert_eq!(
            calls.get("CA1").map(|c| c.tried),
            Some(vec!["a1".into(), "a2".into()])
        );
    }

    #[test]
    fn only_the_latest_move_counts_and_is_handed_out_once() {
        let calls = Calls::new(10);
        calls.ensure("CA1", Call::new("g", "+1", "+2"));
        let first = calls.start_move("CA1").expect("known call");
        assert_eq!(calls.take_move("CA1"), Some(Move::InFlight));
        let second = calls.start_move("CA1").expect("known call");
        calls.end_move("CA1", second, Some("<fallback/>".into()));
        calls.end_move("CA1", first, Some("<dial a2/>".into()));
        assert_eq!(
            calls.take_move("CA1"),
            Some(Move::Undelivered("<fallback/>".into())),
            "the older move's outcome is ignored"
        );
        assert_eq!(calls.take_move("CA1"), None, "handed out once");
        let third = calls.start_move("CA1").expect("known call");
        calls.end_move("CA1", third, None);
        assert_eq!(calls.take_move("CA1"), None, "delivered through REST");
        assert_eq!(calls.start_move("CA9"), None);
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let calls = Calls::new(2);
        for sid in ["CA1", "CA2", "CA3"] {
            calls.ensure(sid, Call::new("g", "+1", "+2"));
        }
        assert!(calls.get("CA1").is_none());
        assert!(calls.get("CA3").is_some());
    }
}
