//! One tokio task per agent: it owns the agent's state and its ring, wrap-up and
//! disconnect-grace timers, and is the only writer of that state.
//!
//! Callers hold a cloneable [`AgentHandle`] and talk to the actor through a bounded mailbox
//! with `oneshot` replies (its own small mailbox: tokio's channel costs an idle agent ~1.8 KiB). The actor applies [`crate::model::machine`], publishes each change
//! once through the hub's fan-out, and pushes the same frame to the agent's own tabs.

mod actor;
mod alarm;
mod env;
mod handle;
mod mailbox;
pub(crate) mod record;

pub(crate) use actor::NodeTabs;
pub(crate) use env::{AgentEnv, Defaults, EnvParts};
pub(crate) use handle::{ActorError, AgentHandle, Applied, Profile, TabId, TelephonyAnswer};
