//! Wall-clock milliseconds derived from tokio's clock.
//!
//! The wire speaks Unix milliseconds (`since`, `ring_expires_at`); timers need
//! [`tokio::time::Instant`]s. Deriving one from the other at a fixed base keeps them in step,
//! and makes the whole hub follow tokio's paused time in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use crate::model::Millis;

/// Converts between tokio instants and Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: Millis,
    base: Instant,
}

impl Clock {
    /// A clock anchored at the current system time.
    pub(crate) fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            base_ms,
            base: Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> Millis {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// The instant at which Unix time `ms` is reached (now, if it has passed).
    pub(crate) fn instant_at(&self, ms: Millis) -> Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
