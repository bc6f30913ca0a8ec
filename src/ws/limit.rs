//! Rate limits: a token bucket per socket (per role, `--agent-rate` / `--agent-burst` etc.)
//! with a strike count that closes an abusive socket with 1008, and a shared bucket for the
//! HTTP telephony endpoint.
//!
//! Time is tokio's [`Instant`], so tests drive the buckets with paused time. The arithmetic
//! is integral (nano-tokens), so a client sending exactly at its rate is never refused by
//! a rounding error.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::config::RateLimit;

/// One token in bucket units (a full bucket of `u32::MAX` tokens still fits a `u64`).
const UNIT: u64 = 1_000_000_000;

/// A token bucket: `per_sec` tokens per second flow in, up to `burst`; each message takes one.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    /// Tokens held, in [`UNIT`]s (a `u64`, not a `u128`: the limiter lives in every socket
    /// task, and a `u128` would align the whole task to 16 bytes).
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: u64::from(limit.burst.max(1)) * UNIT,
            last: now,
        }
    }

    /// True when the bucket is full at `now`: a new bucket would behave the same.
    fn is_full(&self, now: Instant) -> bool {
        if self.limit.is_unlimited() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        let cap = u64::from(self.limit.burst.max(1)) * UNIT;
        let refill = elapsed.saturating_mul(u64::from(self.limit.per_sec));
        self.tokens.saturating_add(refill) >= cap
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.limit.is_unlimited() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.last = now.max(self.last);
        let cap = u64::from(self.limit.burst.max(1)) * UNIT;
        // elapsed (ns) * per_sec tokens/s = nano-tokens (saturating: the cap bounds it).
        let refill = elapsed.saturating_mul(u64::from(self.limit.per_sec));
        self.tokens = self.tokens.saturating_add(refill).min(cap);
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            true
        } else {
            false
        }
    }
}

/// What to do with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: answer `rate_limited`, do not handle it.
    Limited,
    /// Over the rate too often within the window: close the socket with 1008.
    Close,
}

/// The limiter of one socket.
#[derive(Debug, Clone)]
pub(crate) struct MessageLimiter {
    bucket: TokenBucket,
    /// Limited messages allowed within `window` before the socket is closed.
    max_strikes: u32,
    window: Duration,
    strikes: u32,
    window_start: Instant,
}

impl MessageLimiter {
    pub(crate) fn new(limit: RateLimit, max_strikes: u32, window: Duration, now: Instant) -> Self {
        MessageLimiter {
            bucket: TokenBucket::new(limit, now),
            max_strikes,
            window,
            strikes: 0,
            window_start: now,
        }
    }

    /// True when a new limiter made at `now` would judge every later message the same way
    /// (a full bucket, no strike that still counts): an idle socket may then drop this one
    /// and make a new one for its next message.
    pub(crate) fn is_rested(&self, now: Instant) -> bool {
        let no_strikes =
            self.strikes == 0 || now.saturating_duration_since(self.window_start) >= self.window;
        no_strikes && self.bucket.is_full(now)
    }

    /// Judges one message arriving at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        if self.strikes > self.max_strikes {
            Verdict::Close
        } else {
            Verdict::Limited
        }
    }
}

/// A bucket shared by every caller of an HTTP endpoint.
/// The limiter of one socket as its task keeps it: nothing (8 bytes, no allocation) while
/// the socket is rested, a boxed [`MessageLimiter`] while it counts something. An idle
/// socket's task is 64 bytes smaller than with the limiter inline (measured: enough to
/// keep every agent socket's task cell at 640 bytes instead of 768).
#[derive(Debug, Default)]
pub(crate) struct SocketLimiter(Option<Box<MessageLimiter>>);

impl SocketLimiter {
    /// Judges one message arriving at `now`; `fresh` makes the limiter when none is held
    /// (a full bucket, no strikes: what a rested one is equal to).
    pub(crate) fn check(
        &mut self,
        now: Instant,
        fresh: impl FnOnce() -> MessageLimiter,
    ) -> Verdict {
        self.0.get_or_insert_with(|| Box::new(fresh())).check(now)
    }

    /// Frees the limiter once it is rested (see [`MessageLimiter::is_rested`]).
    pub(crate) fn rest(&mut self, now: Instant) {
        if self.0.as_ref().is_some_and(|l| l.is_rested(now)) {
            self.0 = None;
        }
    }
}

#[derive(Debug)]
pub(crate) struct SharedBucket(Mutex<TokenBucket>);

impl SharedBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        SharedBucket(Mutex::new(TokenBucket::new(limit, Instant::now())))
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&self) -> bool {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::new(20, 40), t0);
        for i in 0..40 {
            assert!(b.try_take(t0), "burst message {i}");
        }
        assert!(!b.try_take(t0), "bucket empty");
        // Exactly one token every 50 ms, for a long time.
        for i in 1..=10_000u64 {
            let t = t0 + Duration::from_millis(50 * i);
            assert!(b.try_take(t), "message at its rate {i}");
            assert!(!b.try_take(t), "nothing more at {i}");
        }
    }

    #[test]
    fn a_limiter_is_rested_once_refilled_and_its_strikes_expired() {
        let t0 = Instant::now();
        let mut l = MessageLimiter::new(RateLimit::new(1, 2), 3, Duration::from_secs(10), t0);
        assert!(l.is_rested(t0), "new");
        assert_eq!(l.check(t0), Verdict::Allow);
        assert!(!l.is_rested(t0), "a token taken");
        assert!(!l.is_rested(t0 + Duration::from_millis(999)));
        assert!(l.is_rested(t0 + Duration::from_secs(1)), "refilled");
        assert_eq!(l.check(t0), Verdict::Allow);
        assert_eq!(l.check(t0), Verdict::Limited);
        assert!(
            !l.is_rested(t0 + Duration::from_secs(2)),
            "a strike still counts"
        );
        assert!(
            l.is_rested(t0 + Duration::from_secs(10)),
            "window over, refilled"
        );
        let unlimited = MessageLimiter::new(RateLimit::UNLIMITED, 3, Duration::from_secs(10), t0);
        assert!(unlimited.is_rested(t0));
    }

    #[test]
    fn unlimited_never_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::UNLIMITED, t0);
        assert!((0..100_000).all(|_| b.try_take(t0)));
    }

    #[test]
    fn strikes_close_after_the_allowance_within_the_window() {
        let t0 = Instant::now();
        let mut l = MessageLimiter::new(RateLimit::new(1, 1), 3, Duration::from_secs(10), t0);
        assert_eq!(l.check(t0), Verdict::Allow);
        for _ in 0..3 {
            assert_eq!(l.check(t0), Verdict::Limited);
        }
        assert_eq!(l.check(t0), Verdict::Close);
        // A new window forgives.
        let mut l = MessageLimiter::new(RateLimit::new(1, 1), 3, Duration::from_secs(10), t0);
        assert_eq!(l.check(t0), Verdict::Allow);
        for _ in 0..3 {
            assert_eq!(l.check(t0), Verdict::Limited);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.check(t1), Verdict::Allow, "refilled");
        for _ in 0..3 {
            assert_eq!(l.check(t1), Verdict::Limited, "new window");
        }
        assert_eq!(l.check(t1), Verdict::Close);
    }
}
