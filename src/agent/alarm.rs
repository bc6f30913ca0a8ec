//! The one timer of an agent actor: a sleep until the earliest of its ring, wrap-up and
//! disconnect-grace deadlines (see [`crate::model::machine::next_deadline`]).
//!
//! The sleep lives on the heap and only while a deadline is set: most idle agents have
//! none, and a tokio `Sleep` inline in every actor's task would cost each of them its size.
//! While deadlines follow one another (ring, then wrap-up) the same sleep is reset.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// The actor's pending deadline, if any. Which timer it is, the actor reads from its state
/// (the deadlines are derived from it), so this is one pointer.
pub(super) struct Alarm {
    /// Sleeps until the deadline; `None` when the state asks for no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Alarm {
    /// No deadline.
    pub(super) fn new() -> Self {
        Alarm { sleep: None }
    }

    /// Arms the alarm for `at` (reusing the sleep when one exists), or disarms it.
    pub(super) fn set(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            self.sleep = None;
            return;
        };
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() == at => {}
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Ready when the deadline is reached (at once if it has passed, and again on every
    /// poll until the alarm is set to something else); never when disarmed.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::future::poll_fn;
    use std::time::Duration;

    impl Alarm {
        async fn rung(&mut self) {
            poll_fn(|cx| self.poll(cx)).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rings_at_the_deadline_and_follows_resets() {
        let mut alarm = Alarm::new();
        assert_eq!(alarm.rung().now_or_never(), None, "disarmed: never");
        let start = Instant::now();
        alarm.set(Some(start + Duration::from_secs(10)));
        alarm.set(Some(start + Duration::from_secs(5)));
        alarm.rung().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(alarm.rung().now_or_never(), Some(()), "a passed deadline");
        alarm.set(Some(start + Duration::from_secs(20)));
        alarm.rung().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(20));
        alarm.set(None);
        assert!(alarm.sleep.is_none(), "disarmed: no memory held");
        assert_eq!(alarm.rung().now_or_never(), None);
    }
}
