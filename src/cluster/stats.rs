//! Counters of what this node did on the backplane, for `/metrics` (append conflicts,
//! forwarded commands, refusals while NATS is unavailable).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The live counters, shared by the clones of one node's backplane.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    appended: AtomicU64,
    fenced: AtomicU64,
    append_unavailable: AtomicU64,
    forwarded: AtomicU64,
    forward_failed: AtomicU64,
}

/// A snapshot of the counters since the node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Appends JetStream acknowledged.
    pub appended: u64,
    /// Appends refused because another change was stored first (lost ownership or a race).
    pub fenced: u64,
    /// Appends answered `unavailable` (not sent, or not acknowledged in time).
    pub append_unavailable: u64,
    /// Commands forwarded to another node and answered by it.
    pub forwarded: u64,
    /// Forwards answered `unavailable` (node gone or silent, or no NATS).
    pub forward_failed: u64,
}

/// Which counter an outcome bumps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Appended,
    Fenced,
    AppendUnavailable,
    Forwarded,
    ForwardFailed,
}

impl Counters {
    pub(crate) fn count(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Appended => &self.appended,
            Outcome::Fenced => &self.fenced,
            Outcome::AppendUnavailable => &self.append_unavailable,
            Outcome::Forwarded => &self.forwarded,
            Outcome::ForwardFailed => &self.forward_failed,
        };
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            appended: self.appended.load(Relaxed),
            fenced: self.fenced.load(Relaxed),
            append_unavailable: self.append_unavailable.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            forward_failed: self.forward_failed.load(Relaxed),
        }
    }
}
