//! The one retry policy of the service: after a failed Redis call, wait a
//! pause that doubles with each consecutive failure up to a cap, with
//! jitter so that a fleet does not retry in lockstep; a success resets it.
//! The delays come from `backon`'s exponential builder.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Consecutive failures of one operation and the pause before the next try.
#[derive(Debug)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    failures: u32,
}

impl Backoff {
    /// Pauses from `first`, doubling, at most `max` (before jitter, which
    /// adds up to as much again).
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .without_max_times()
            .with_jitter();
        Backoff {
            delays: builder.build(),
            builder,
            failures: 0,
        }
    }

    /// The policy for Redis calls of the service: 50 ms doubling to 2 s.
    pub(crate) fn for_redis() -> Backoff {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from the first pause again.
    pub(crate) fn reset(&mut self) {
        if self.failures > 0 {
            self.failures = 0;
            self.delays = self.builder.build();
        }
    }

    /// Records a failure; returns the pause before the next attempt.
    pub(crate) fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // Without a maximum number of attempts the iterator never ends.
        self.delays.next().unwrap_or(Duration::from_secs(2))
    }

    /// Records a failure and sleeps the pause, unless `stop` fires first;
    /// returns true when it did.
    pub(crate) async fn fail_and_wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.fail();
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(pause) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        let first = b.fail();
        assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(100));
        let pauses: Vec<Duration> = (0..6).map(|_| b.fail()).collect();
        assert!(
            pauses.iter().all(|p| *p <= Duration::from_millis(800)),
            "{pauses:?}"
        );
        assert!(pauses[5] >= Duration::from_millis(400), "{pauses:?}");
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.fail() < Duration::from_millis(100));
    }
}
