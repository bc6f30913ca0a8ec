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
    fn capacity_forgets_the_oldest() {
        let calls = Calls::new(2);
        for sid in ["CA1", "CA2", "CA3"] {
            calls.ensure(sid, Call::new("g", "+1", "+2"));
        }
        assert!(calls.get("CA1").is_none());
        assert!(calls.get("CA3").is_some());
    }
}
