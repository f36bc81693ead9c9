//! Back-pressure (contract 12): the generator holds back, without an
//! error, while the queue holds `generator.max_backlog` messages or while
//! Redis is near its `maxmemory`, and resumes once below
//! [`RESUME_BELOW`] of that bound. A held-back
//! generator is ready (holding back is its job then); it says once at INFO
//! why it paused and when it resumed, and exports both
//! (`dsg_generator_paused{reason}`, `dsg_generator_paused_seconds_total`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::service::metrics::{HoldBack, Metrics};

/// How long a held-back generator waits before it tries again. Its writers
/// take turns ([`HeldBack::turn`]), so this is the pace of the tries, not of
/// each writer: about two calls a second, whatever the batch settings.
pub(super) const RETRY: Duration = Duration::from_millis(500);

/// A held-back generator resumes once below this share of the bound that
/// held it back. Resuming just below the bound made a generator faster
/// than its consumers flap at it: one batch through, the next held back,
/// two log lines and two gauge changes a second for as long as it lasted.
pub(super) const RESUME_BELOW: f64 = 0.9;

/// The backlog bound a generator held back by `max_backlog` pushes
/// against: [`RESUME_BELOW`] of it, at least 1 (0 would mean no bound).
pub(super) fn resume_below(max_backlog: u64) -> u64 {
    if max_backlog == 0 {
        return 0;
    }
    ((max_backlog as f64 * RESUME_BELOW) as u64).max(1)
}

#[derive(Debug)]
struct Held {
    reason: HoldBack,
    since: Instant,
    /// Up to when the time held was added to the counter.
    counted_to: Instant,
}

/// Whether the generator holds back now, and why; shared by its writers.
#[derive(Debug)]
pub(super) struct HeldBack {
    metrics: Metrics,
    held: Mutex<Option<Held>>,
    turn: tokio::sync::Mutex<()>,
}

impl HeldBack {
    pub(super) fn new(metrics: Metrics) -> HeldBack {
        HeldBack {
            metrics,
            held: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        // Held for a few instructions; a poisoned lock still holds a whole
        // `Option` (the service's policy for every lock).
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the generator holds back, if it does.
    pub(super) fn reason(&self) -> Option<HoldBack> {
        self.held().as_ref().map(|h| h.reason)
    }

    /// While held back, writers try one at a time: the guard is a writer's
    /// turn.
    pub(super) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// The generator holds back for `reason` (`why` says it to the
    /// operator, once, when it starts or its reason changes).
    pub(super) fn hold(&self, reason: HoldBack, why: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut held = self.held();
        match held.as_mut() {
            Some(h) if h.reason == reason => {
                self.count(h, now);
                return;
            }
            Some(h) => {
                self.count(h, now);
                self.metrics.record_held_back(h.reason, false);
            }
            None => {}
        }
        tracing::info!(
            reason = reason.as_str(),
            "generator holding back: {}; resuming below {:.0} % of that",
            why(),
            RESUME_BELOW * 100.0
        );
        self.metrics.record_held_back(reason, true);
        *held = Some(Held {
            reason,
            since: now,
            counted_to: now,
        });
    }

    /// A push sent at `sent` went through: the generator no longer holds
    /// back, unless the hold began after it was sent (writes in flight
    /// when the bound was reached still land: they must not end the hold).
    pub(super) fn resume(&self, sent: Instant) {
        if self.held().as_ref().is_some_and(|h| h.since > sent) {
            return;
        }
        if let Some(seconds) = self.end() {
            tracing::info!(seconds, "generator resumed after holding back");
        }
    }

    /// The generator stops (lease lost, shutdown): whatever held it back
    /// ends with it.
    pub(super) fn stopped(&self) {
        self.end();
    }

    /// Ends a hold; how long it lasted, in whole seconds.
    fn end(&self) -> Option<u64> {
        let now = Instant::now();
        let mut held = self.held();
        let h = held.as_mut()?;
        self.count(h, now);
        self.metrics.record_held_back(h.reason, false);
        let seconds = now.duration_since(h.since).as_secs();
        *held = None;
        Some(seconds)
    }

    fn count(&self, h: &mut Held, now: Instant) {
        let more = now.duration_since(h.counted_to).as_secs_f64();
        self.metrics.add_held_back_seconds(h.reason, more);
        h.counted_to = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_back_generator_resumes_well_below_the_backlog_bound() {
        assert_eq!(resume_below(0), 0, "no bound stays no bound");
        assert_eq!(resume_below(1), 1);
        assert_eq!(resume_below(2_000), 1_800);
        assert_eq!(resume_below(1_000_000), 900_000);
    }
}
