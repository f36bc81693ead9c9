//! The one retry policy of the service: after a failed Redis call, wait a
//! pause that doubles with each consecutive failure up to a cap, with
//! jitter so that a fleet does not retry in lockstep; a success resets it.
//! The delays come from `backon`'s exponential builder.
//!
//! Two caps: an outage (Redis unreachable) is retried at most `max` apart,
//! so work resumes soon after Redis is back; an error *reply* that repeats
//! identically (a key of the wrong type, a missing ACL permission) will not
//! go away by itself, so its pauses keep growing up to `max_repeated`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::redis::{Cause, RedisError};

/// Consecutive failures of one operation and the pause before the next try.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    max_repeated: Duration,
    delays: ExponentialBackoff,
    /// The cap the current delays grow to.
    cap: Duration,
    failures: u32,
    /// The cause of the last failure, when it was an error reply.
    repeated: Option<Cause>,
}

fn delays(first: Duration, cap: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap.max(first))
        .without_max_times()
        .with_jitter()
        .build()
}

impl Backoff {
    /// Pauses from `first`, doubling, at most `max` (before jitter, which
    /// adds up to as much again); identical error replies up to
    /// `max_repeated`.
    pub(crate) fn new(first: Duration, max: Duration, max_repeated: Duration) -> Backoff {
        Backoff {
            first,
            max,
            max_repeated,
            delays: delays(first, max),
            cap: max,
            failures: 0,
            repeated: None,
        }
    }

    /// The policy for Redis calls of the service: 50 ms doubling to 2 s,
    /// to 10 s for an error reply that repeats.
    pub(crate) fn for_redis() -> Backoff {
        Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from the first pause again.
    pub(crate) fn reset(&mut self) {
        if self.failures > 0 {
            self.failures = 0;
            self.repeated = None;
            self.cap = self.max;
            self.delays = delays(self.first, self.max);
        }
    }

    /// Records a failure of unknown kind; returns the pause before the
    /// next attempt.
    pub(crate) fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // Without a maximum number of attempts the iterator never ends.
        self.delays.next().unwrap_or(self.cap)
    }

    /// Records `error`; returns the pause before the next attempt. The same
    /// error reply again raises the cap to `max_repeated`; another kind of
    /// failure starts over from the first pause.
    pub(crate) fn fail_for(&mut self, error: &RedisError) -> Duration {
        let cause = error.failure().cause;
        let reply = (!cause.is_unreachable()).then_some(cause);
        if reply != self.repeated {
            self.repeated = reply;
            self.cap = self.max;
            self.delays = delays(self.first, self.max);
        } else if reply.is_some() && self.cap != self.max_repeated {
            self.cap = self.max_repeated;
            let grown = self.delays.next().unwrap_or(self.max);
            self.delays = delays(grown, self.max_repeated);
        }
        self.fail()
    }

    /// Records `error` and sleeps the pause, unless `stop` fires first;
    /// returns true when it did.
    pub(crate) async fn fail_and_wait(
        &mut self,
        error: &RedisError,
        stop: &CancellationToken,
    ) -> bool {
        let pause = self.fail_for(error);
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(pause) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::error::{Error, ErrorKind};

    fn reply(text: &'static str) -> RedisError {
        RedisError::Command(Error::new(ErrorKind::Unknown, text))
    }

    #[test]
    fn pauses_grow_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(400),
            Duration::from_secs(10),
        );
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

    #[test]
    fn issue11_an_identical_error_reply_backs_off_further_than_an_outage() {
        let wrong_type = reply("WRONGTYPE Operation against a key holding the wrong kind of value");
        let outage = RedisError::Unavailable(Error::new(ErrorKind::IO, "Connection refused"));
        let mut b = Backoff::for_redis();
        let outage_pauses: Vec<Duration> = (0..20).map(|_| b.fail_for(&outage)).collect();
        assert!(
            outage_pauses.iter().all(|p| *p <= Duration::from_secs(4)),
            "{outage_pauses:?}"
        );
        b.reset();
        let pauses: Vec<Duration> = (0..20).map(|_| b.fail_for(&wrong_type)).collect();
        assert!(
            pauses[19] >= Duration::from_secs(10) && pauses[19] <= Duration::from_secs(20),
            "{pauses:?}"
        );
        // Another failure starts from the first pause again.
        assert!(b.fail_for(&outage) < Duration::from_millis(100));
    }
}
