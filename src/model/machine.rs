//! The transition function: rows 1-24 of `docs/status-model.md`.
//!
//! [`apply`] takes the current state, one [`Input`] and the time, and either rejects the
//! input (nothing changes) or commits the new state and returns the [`Effect`]s the actor
//! must carry out (notify telephony, close sockets, show the call to the tabs). It never
//! reads a clock, sleeps or sends anything.

use super::state::{AgentState, CallDirection, CallInfo, Session};
use super::{CallId, ManualStatus, Millis, Reason, Status};

/// Per-agent settings the machine needs, resolved by the actor from config and directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wrap-up after a call; 0 means no wrap-up (row 13 returns at once).
    pub wrap_up_ms: u64,
    /// How long an agent whose last socket closed stays logged in (row 21).
    pub disconnect_grace_ms: u64,
    /// Rings in a row that may time out before the agent is set busy; 0 disables it.
    pub max_missed_in_row: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            wrap_up_ms: 0,
            disconnect_grace_ms: 15_000,
            max_missed_in_row: 0,
        }
    }
}

/// Who asked for a manual change or a logout: decides the `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Actor {
    Agent,
    Admin,
}

/// Everything that can happen to an agent. Serde: cluster nodes forward inputs to the
/// agent's owner (`hub::remote`); the form is internal to the cluster, not the wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// An agent socket (browser tab) opened: rows 1, 1b, 2, 22.
    SocketOpened,
    /// An agent socket closed without logout: row 21.
    SocketClosed,
    /// The disconnect-grace timer fired: row 21, second half.
    GraceExpired,
    /// Rows 3-6. `status` may be any status: system ones are rejected here.
    SetStatus {
        status: Status,
        note: Option<String>,
        if_version: Option<u64>,
        by: Actor,
    },
    /// Row 9 (agent clicked Connect).
    AcceptCall { call_id: CallId },
    /// Row 10.
    DeclineCall { call_id: CallId },
    /// Row 15.
    EndWrapUp,
    /// Rows 18-20.
    Logout { by: Actor },
    /// Rows 7-8. `ring_timeout_ms` is already resolved (offer, ring group, hub default).
    CallOffered {
        call_id: CallId,
        from: Option<String>,
        to: Option<String>,
        ring_group: Option<String>,
        ring_timeout_ms: u64,
    },
    /// Row 9 (telephony reports answered).
    CallAnswered { call_id: CallId },
    /// Row 12.
    CallCancelled { call_id: CallId },
    /// Rows 12-13.
    CallEnded { call_id: CallId },
    /// Rows 16-17.
    OutboundStarted { call_id: CallId, to: Option<String> },
    /// Row 11, reported by telephony: the phone system stopped ringing the agent (its own
    /// ring timeout, e.g. Twilio's `no-answer`). Stale unless that call is ringing.
    CallNoAnswer { call_id: CallId },
    /// Row 10, reported by telephony: the agent rejected the call on the phone (e.g. a
    /// softphone's reject, Twilio's `busy`). Stale unless that call is ringing.
    CallRejected { call_id: CallId },
    /// Row 11.
    RingTimerFired,
    /// Row 14.
    WrapUpTimerFired,
}

/// Why an input was refused. Nothing changed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum Rejection {
    #[error("only offline, available, busy and on_break can be set")]
    InvalidStatus,
    #[error("not possible in the agent's current status")]
    InvalidState,
    #[error("that call is not the agent's current call")]
    UnknownCall,
    #[error("if_version does not match the agent's current version {current}")]
    Conflict { current: u64 },
    #[error("the agent is not available")]
    NotAvailable,
}

/// What a telephony adapter is told about a call it offered. Serde: in cluster mode it is
/// stored with the change that caused it, and every node tells its own adapters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TelephonyNotice {
    CallAccepted { call_id: CallId },
    CallDeclined { call_id: CallId, by_logout: bool },
    RingTimeout { call_id: CallId },
}

/// A side effect of a committed transition, carried out by the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell every telephony socket.
    Telephony(TelephonyNotice),
    /// Show the incoming call on every tab (`call_offered`).
    OfferToTabs,
    /// Send `logged_out` to every tab and close them with 1000.
    LoggedOut(Reason),
}

/// The result of an accepted input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed: `version` went up by one and one update must be published.
    Changed(Vec<Effect>),
    /// Accepted, nothing visible changed: acknowledge, publish nothing.
    Unchanged,
    /// A telephony event for a call that is not current (row 24): acknowledged as stale.
    Stale,
}

/// Which timer is due next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Ring,
    WrapUp,
    Grace,
}

impl Timer {
    /// The input to feed when this timer fires.
    pub fn input(self) -> Input {
        match self {
            Timer::Ring => Input::RingTimerFired,
            Timer::WrapUp => Input::WrapUpTimerFired,
            Timer::Grace => Input::GraceExpired,
        }
    }
}

/// The earliest timer the state asks for. Timers are derived from the state, so a timer
/// whose state is gone (ring after accept) simply is not there any more.
pub fn next_deadline(state: &AgentState) -> Option<(Millis, Timer)> {
    let ring = match (state.status, state.ring_expires_at) {
        (Status::Ringing, Some(at)) => Some((at, Timer::Ring)),
        _ => None,
    };
    let wrap = match (state.status, state.wrap_up_expires_at) {
        (Status::WrapUp, Some(at)) => Some((at, Timer::WrapUp)),
        _ => None,
    };
    let grace = match state.session {
        Session::Grace { until } => Some((until, Timer::Grace)),
        _ => None,
    };
    [ring, wrap, grace]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
}

/// Applies `input` at time `now`. On `Err`, `state` is untouched. On `Ok(Changed)`, `state`
/// holds the new state with `version + 1`; on `Unchanged`/`Stale` only internal
/// bookkeeping (session) may have moved.
pub fn apply(
    state: &mut AgentState,
    input: Input,
    now: Millis,
    policy: &Policy,
) -> Result<Outcome, Rejection> {
    if let Input::CallOffered { call_id, .. }
    | Input::CallAnswered { call_id }
    | Input::OutboundStarted { call_id, .. } = &input
    {
        if state.ended_calls.contains(call_id) {
            return Ok(Outcome::Stale);
        }
    }
    let mut next = state.clone();
    let mut effects = Vec::new();
    let reason = match step(&mut next, input, now, policy, &mut effects)? {
        Step::Stale => return Ok(Outcome::Stale),
        Step::Reason(reason) => reason,
    };
    if !visible_change(state, &next) {
        state.session = next.session;
        return Ok(Outcome::Unchanged);
    }
    if let Some(ended) = state.call_id() {
        if next.call_id() != Some(ended) {
            next.ended_calls.push(ended.clone());
        }
    }
    if next.status != state.status {
        next.since = now;
    }
    if let Some(reason) = reason {
        next.reason = Some(reason);
    }
    next.version = state.version + 1;
    *state = next;
    Ok(Outcome::Changed(effects))
}

enum Step {
    /// Accepted; `Some(reason)` replaces the reason, `None` keeps it (connection counts).
    Reason(Option<Reason>),
    Stale,
}

fn visible_change(old: &AgentState, new: &AgentState) -> bool {
    old.status != new.status
        || old.manual_status != new.manual_status
        || old.note != new.note
        || old.call != new.call
        || old.ring_expires_at != new.ring_expires_at
        || old.wrap_up_expires_at != new.wrap_up_expires_at
        || old.connections != new.connections
        || old.missed_in_row != new.missed_in_row
}

fn set_manual(s: &mut AgentState, status: ManualStatus, note: Option<String>) {
    s.status = status.status();
    s.manual_status = status;
    s.note = note;
    s.call = None;
    s.ring_expires_at = None;
    s.wrap_up_expires_at = None;
}

fn return_to_manual(s: &mut AgentState) {
    s.status = s.manual_status.status();
    s.call = None;
    s.ring_expires_at = None;
    s.wrap_up_expires_at = None;
}

fn is_current(s: &AgentState, call_id: &CallId) -> bool {
    s.call_id() == Some(call_id)
}

fn step(
    s: &mut AgentState,
    input: Input,
    now: Millis,
    policy: &Policy,
    effects: &mut Vec<Effect>,
) -> Result<Step, Rejection> {
    use Status::*;
    let reason = match input {
        Input::SocketOpened => match s.session {
            Session::Grace { until } if until <= now => {
                // Row 21 then row 1: the grace ran out before this socket came (the grace
                // timer has not been fed yet, or the state was restored after a restart), so
                // this is not a reconnect: the agent is logged out, then logs in again.
                logout(s, Reason::Disconnected, effects);
                login(s);
                Some(Reason::Login)
            }
            Session::LoggedOut => {
                login(s);
                Some(Reason::Login)
            }
            Session::Connected | Session::Grace { .. } => {
                // Rows 2 and 22.
                s.connections = s.connections.saturating_add(1);
                s.session = Session::Connected;
                None
            }
        },
        Input::SocketClosed => {
            if s.connections == 0 {
                return Ok(Step::Reason(None));
            }
            s.connections -= 1;
            if s.connections == 0 && s.session == Session::Connected {
                s.session = Session::Grace {
                    until: now.saturating_add(policy.disconnect_grace_ms),
                };
            }
            None
        }
        Input::GraceExpired => match s.session {
            Session::Grace { until } if until <= now => {
                logout(s, Reason::Disconnected, effects);
                Some(Reason::Disconnected)
            }
            _ => return Ok(Step::Reason(None)),
        },
        Input::SetStatus {
            status,
            note,
            if_version,
            by,
        } => {
            if let Some(expected) = if_version {
                if expected != s.version {
                    return Err(Rejection::Conflict { current: s.version });
                }
            }
            let wanted = status.as_manual().ok_or(Rejection::InvalidStatus)?;
            match s.status {
                Offline | Available | Busy | OnBreak => {
                    set_manual(s, wanted, note);
                    s.missed_in_row = 0;
                }
                Ringing | OnCall => {
                    s.manual_status = wanted;
                    s.note = note;
                }
                WrapUp => set_manual(s, wanted, note),
            }
            Some(match by {
                Actor::Agent => Reason::Manual,
                Actor::Admin => Reason::Admin,
            })
        }
        Input::AcceptCall { call_id } => {
            if s.status != Ringing {
                return Err(Rejection::InvalidState);
            }
            if !is_current(s, &call_id) {
                return Err(Rejection::UnknownCall);
            }
            connect(s, now);
            effects.push(Effect::Telephony(TelephonyNotice::CallAccepted { call_id }));
            Some(Reason::CallAccepted)
        }
        Input::DeclineCall { call_id } => {
            if s.status != Ringing {
                return Err(Rejection::InvalidState);
            }
            if !is_current(s, &call_id) {
                return Err(Rejection::UnknownCall);
            }
            set_manual(s, ManualStatus::Busy, None);
            effects.push(Effect::Telephony(TelephonyNotice::CallDeclined {
                call_id,
                by_logout: false,
            }));
            Some(Reason::CallDeclined)
        }
        Input::EndWrapUp => {
            if s.status != WrapUp {
                return Err(Rejection::InvalidState);
            }
            return_to_manual(s);
            Some(Reason::WrapUpEnded)
        }
        Input::Logout { by } => {
            let reason = match by {
                Actor::Agent => Reason::Logout,
                Actor::Admin => Reason::AdminLogout,
            };
            logout(s, reason, effects);
            Some(reason)
        }
        Input::CallOffered {
            call_id,
            from,
            to,
            ring_group,
            ring_timeout_ms,
        } => {
            if s.status != Available {
                return Err(Rejection::NotAvailable);
            }
            s.status = Ringing;
            s.ring_expires_at = Some(now.saturating_add(ring_timeout_ms));
            s.call = Some(Box::new(CallInfo {
                call_id,
                direction: CallDirection::Inbound,
                ring_group: ring_group.map(String::into_boxed_str),
                from: from.map(String::into_boxed_str),
                to: to.map(String::into_boxed_str),
                offered_at: Some(now),
                answered_at: None,
            }));
            effects.push(Effect::OfferToTabs);
            Some(Reason::CallOffered)
        }
        Input::CallAnswered { call_id } => {
            if !is_current(s, &call_id) {
                return Ok(Step::Stale);
            }
            match s.status {
                Ringing => {
                    connect(s, now);
                    Some(Reason::CallAnswered)
                }
                // Already connected (the agent clicked Connect first): nothing to do.
                OnCall => return Ok(Step::Reason(None)),
                _ => return Ok(Step::Stale),
            }
        }
        Input::CallCancelled { call_id } => {
            if !is_current(s, &call_id) || s.status != Ringing {
                return Ok(Step::Stale);
            }
            return_to_manual(s);
            Some(Reason::CallCancelled)
        }
        Input::CallEnded { call_id } => {
            if !is_current(s, &call_id) {
                return Ok(Step::Stale);
            }
            match s.status {
                Ringing => {
                    return_to_manual(s);
                    Some(Reason::CallCancelled)
                }
                OnCall => {
                    if policy.wrap_up_ms > 0 {
                        s.status = WrapUp;
                        s.wrap_up_expires_at = Some(now.saturating_add(policy.wrap_up_ms));
                    } else {
                        return_to_manual(s);
                    }
                    Some(Reason::CallEnded)
                }
                _ => return Ok(Step::Stale),
            }
        }
        Input::OutboundStarted { call_id, to } => match s.status {
            Ringing => return Err(Rejection::InvalidState),
            OnCall if is_current(s, &call_id) => return Ok(Step::Reason(None)),
            OnCall => return Err(Rejection::InvalidState),
            WrapUp if is_current(s, &call_id) => return Ok(Step::Stale),
            Offline | Available | Busy | OnBreak | WrapUp => {
                s.status = OnCall;
                s.wrap_up_expires_at = None;
                s.ring_expires_at = None;
                s.call = Some(Box::new(CallInfo {
                    call_id,
                    direction: CallDirection::Outbound,
                    ring_group: None,
                    from: None,
                    to: to.map(String::into_boxed_str),
                    offered_at: None,
                    answered_at: Some(now),
                }));
                Some(Reason::OutboundStarted)
            }
        },
        Input::RingTimerFired => match (s.status, s.ring_expires_at) {
            (Ringing, Some(at)) if at <= now => {
                ring_out(s, policy, effects);
                Some(Reason::RingTimeout)
            }
            _ => None,
        },
        Input::CallNoAnswer { call_id } => {
            if !is_current(s, &call_id) || s.status != Ringing {
                return Ok(Step::Stale);
            }
            ring_out(s, policy, effects);
            Some(Reason::RingTimeout)
        }
        Input::CallRejected { call_id } => {
            if !is_current(s, &call_id) || s.status != Ringing {
                return Ok(Step::Stale);
            }
            set_manual(s, ManualStatus::Busy, None);
            effects.push(Effect::Telephony(TelephonyNotice::CallDeclined {
                call_id,
                by_logout: false,
            }));
            Some(Reason::CallDeclined)
        }
        Input::WrapUpTimerFired => match (s.status, s.wrap_up_expires_at) {
            (WrapUp, Some(at)) if at <= now => {
                return_to_manual(s);
                Some(Reason::WrapUpExpired)
            }
            _ => None,
        },
    };
    Ok(Step::Reason(reason))
}

/// Rows 1 and 1b: the first socket opens; logging in puts you offline.
fn login(s: &mut AgentState) {
    if s.status.as_manual().is_some() {
        set_manual(s, ManualStatus::Offline, None);
    } else {
        s.manual_status = ManualStatus::Offline;
        s.note = None;
    }
    s.connections = 1;
    s.session = Session::Connected;
}

/// Row 11: the ringing call timed out (the hub's timer or the phone system's).
fn ring_out(s: &mut AgentState, policy: &Policy, effects: &mut Vec<Effect>) {
    if let Some(call_id) = s.call_id().cloned() {
        effects.push(Effect::Telephony(TelephonyNotice::RingTimeout { call_id }));
    }
    s.missed_in_row = s.missed_in_row.saturating_add(1);
    if policy.max_missed_in_row > 0 && s.missed_in_row >= policy.max_missed_in_row {
        set_manual(s, ManualStatus::Busy, Some("missed_calls".to_string()));
    } else {
        return_to_manual(s);
    }
}

/// Row 9: the ringing call connects.
fn connect(s: &mut AgentState, now: Millis) {
    s.status = Status::OnCall;
    s.ring_expires_at = None;
    s.missed_in_row = 0;
    if let Some(call) = s.call.as_mut() {
        call.answered_at = Some(now);
    }
}

/// Rows 18-20 (and 21 when grace runs out): end the session.
fn logout(s: &mut AgentState, reason: Reason, effects: &mut Vec<Effect>) {
    match s.status {
        Status::Ringing => {
            if let Some(call_id) = s.call_id().cloned() {
                effects.push(Effect::Telephony(TelephonyNotice::CallDeclined {
                    call_id,
                    by_logout: true,
                }));
            }
            set_manual(s, ManualStatus::Offline, None);
        }
        Status::OnCall => {
            s.manual_status = ManualStatus::Offline;
            s.note = None;
        }
        _ => set_manual(s, ManualStatus::Offline, None),
    }
    s.connections = 0;
    s.session = Session::LoggedOut;
    effects.push(Effect::LoggedOut(reason));
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "machine_props.rs"]
mod props;
