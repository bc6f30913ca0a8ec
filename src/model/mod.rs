//! The agent status model of `docs/status-model.md`, as pure data and pure functions.
//!
//! Nothing in here does I/O or knows about tokio: the agent actor owns the clock and the
//! timers and feeds [`machine::Input`]s in; this module answers with the new state and the
//! side effects the actor must carry out. That keeps every transition testable exhaustively.

pub mod ids;
pub mod invariants;
pub mod machine;
pub mod state;
pub mod status;

pub use ids::{AgentId, CallId, InvalidId, TeamId};
pub use machine::{
    apply, next_deadline, Actor, Effect, Input, Outcome, Policy, Rejection, TelephonyNotice, Timer,
};
pub use state::{AgentState, CallDirection, CallInfo, EndedCalls, Session};
pub use status::{ManualStatus, Reason, Status};

/// Milliseconds since the Unix epoch, the only time unit on the wire.
pub type Millis = u64;
