//! Histogram boundaries, in seconds, and the window of plausible message
//! ages.
//!
//! `histogram_quantile` interpolates linearly inside a bucket, so a
//! quantile is only as good as the bucket it falls in: boundaries must be
//! close together where the values are.

use std::time::Duration;

/// Message age: fine below 10 ms, where it lives when consumers keep up (a
/// 5 ms p99 target needs boundaries on both sides of it), then up to a day
/// for backlogs (issue 14: at 60 s, two thirds of a drained backlog read as
/// exactly 60).
pub(super) const MESSAGE_AGE: [f64; 28] = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// A message stamped further ahead of this consumer's clock than this is
/// implausible (beyond clock skew): counted apart, not observed. Ages
/// between it and 0 are observed as 0.
pub(super) const AGE_FUTURE_LIMIT: Duration = Duration::from_secs(60);

/// A message older than this is implausible (year 0000, a bad clock):
/// counted apart, not observed (one such message once added 6.4e10 s to the
/// histogram's sum).
pub(super) const AGE_PAST_LIMIT: Duration = Duration::from_secs(30 * 86_400);

/// Where a message age goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Age {
    /// Into the histogram, in seconds (≥ 0).
    Observed(f64),
    /// Stamped implausibly far in the future.
    Future,
    /// Stamped implausibly far in the past.
    Past,
}

/// Sorts an age (seconds, now − timestamp) into the histogram or out of it.
pub(super) fn classify_age(seconds: f64) -> Age {
    if seconds <= -AGE_FUTURE_LIMIT.as_secs_f64() {
        Age::Future
    } else if seconds >= AGE_PAST_LIMIT.as_secs_f64() {
        Age::Past
    } else {
        Age::Observed(seconds.max(0.0))
    }
}

/// Processing time, from the processor's configured maximum: fine below
/// 10 ms, then at most 25 % apart up to a boundary exactly at the maximum
/// (a uniform 0–200 ms processor read p99 0.247 s with 0.1, 0.25, 0.5 …),
/// then a few above it for a slow custom processor.
pub(super) fn processing(max_ms: u64) -> Vec<f64> {
    const FINE: [f64; 6] = [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01];
    let round = |s: f64| (s * 10_000.0).round() / 10_000.0;
    let max = (max_ms as f64 / 1000.0).max(0.01);
    let mut out: Vec<f64> = FINE.to_vec();
    let mut step = max;
    // Down to the first step above 10 ms: at most 25 % above the last
    // fine boundary.
    while step > 0.01 {
        out.push(round(step));
        step /= 1.25;
    }
    out.extend([1.5, 2.0, 5.0, 10.0].map(|k| round(k * max)));
    out.sort_by(f64::total_cmp);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue14_processing_buckets_follow_the_configured_maximum() {
        let default = processing(999);
        assert_eq!(default.len(), 31, "{default:?}");
        assert_eq!(
            &default[..8],
            &[0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0115, 0.0144]
        );
        assert!(default.contains(&0.999) && default.contains(&9.99));
        // At most 25 % apart between 10 ms and the maximum.
        for w in default.windows(2).filter(|w| w[0] >= 0.01 && w[1] <= 0.999) {
            assert!(w[1] / w[0] <= 1.26, "{w:?}");
        }
        let fast = processing(200);
        assert_eq!(
            &fast[fast.len() - 6..],
            &[0.16, 0.2, 0.3, 0.4, 1.0, 2.0],
            "{fast:?}"
        );
        assert_eq!(
            processing(0),
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1
            ]
        );
    }

    #[test]
    fn issue11_ages_outside_the_plausible_window_are_not_observed() {
        assert_eq!(classify_age(0.003), Age::Observed(0.003));
        assert_eq!(classify_age(-2.0), Age::Observed(0.0));
        assert_eq!(classify_age(-60.0), Age::Future);
        assert_eq!(classify_age(6.4e10), Age::Past);
        assert_eq!(classify_age(86_400.0), Age::Observed(86_400.0));
        assert_eq!(MESSAGE_AGE.last(), Some(&86_400.0));
    }
}
