//! Health: whether this instance works, and why not, learnt from what it
//! does anyway (no probe of its own sends a command to Redis).
//!
//! - Redis reachability comes from the [`Link`]: command outcomes and
//!   fred's connection events. Its failures are logged here, the first one
//!   at WARN at once naming the cause (refused, unknown host, wrong
//!   password, database index, TLS, timeout), then one WARN line a minute
//!   with a count while the cause stays the same, and INFO on recovery.
//! - Every Redis operation of the service reports its outcome
//!   ([`Health::succeeded`], [`Health::failed`]): a failure is counted in
//!   `dsg_redis_errors_total` and logged the same throttled way. An
//!   operation that keeps failing ([`READINESS_OPERATIONS`]) for
//!   [`UNREADY_AFTER`] makes the instance unready, so a consumer that
//!   cannot fetch (a key of the wrong type, a missing ACL permission) no
//!   longer looks healthy.
//! - [`Health::readiness`] answers `/readyz` and `dsg_ready` from this
//!   state alone: at once, whatever Redis does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::redis::{Cause, Failure, Link, LinkEvent, Operation, RedisError};
use crate::service::metrics::{HealthProbe, Metrics};
use crate::service::state::InstanceState;

/// How long an operation of [`READINESS_OPERATIONS`] may keep failing
/// before the instance reports itself unready.
pub(super) const UNREADY_AFTER: Duration = Duration::from_secs(15);

/// A failing operation that has not been tried for this long no longer
/// counts (the instance stopped doing it, e.g. a consumer that became the
/// generator stops fetching). Above the longest back-off pause (2 × 10 s).
const STALE_AFTER: Duration = Duration::from_secs(60);

/// While the same failure repeats, one line per this interval.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The operations without which the instance does not do its job.
pub(super) const READINESS_OPERATIONS: [Operation; 4] = [
    Operation::Fetch,
    Operation::Heartbeat,
    Operation::Lease,
    Operation::Push,
];

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Readiness {
    /// 200.
    Ready,
    /// 503, with the reason for the body.
    NotReady(String),
}

impl Readiness {
    /// Whether it is [`Readiness::Ready`].
    pub(super) fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// What to log for a failure, decided by [`Throttle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Line {
    /// The first failure, or a failure of another cause: log it now.
    First,
    /// The same failure again, `repeats` times since the last line, over
    /// `seconds` since the first.
    Repeated { repeats: u64, seconds: u64 },
    /// Nothing to log now.
    Quiet,
}

/// Log throttling for one kind of failure: the first at once, the same
/// cause again at most once per [`REPEAT_LOG_EVERY`] with a count.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    cause: Option<Cause>,
    first: Option<Instant>,
    last_line: Option<Instant>,
    unlogged: u64,
    total: u64,
}

impl Throttle {
    /// A failure of `cause` at `now`: what to log.
    pub(super) fn failure(&mut self, cause: Cause, now: Instant) -> Line {
        self.total += 1;
        if self.cause != Some(cause) || self.first.is_none() {
            self.cause = Some(cause);
            self.first.get_or_insert(now);
            self.last_line = Some(now);
            self.unlogged = 0;
            return Line::First;
        }
        self.unlogged += 1;
        let due = self
            .last_line
            .is_none_or(|at| now.duration_since(at) >= REPEAT_LOG_EVERY);
        if !due {
            return Line::Quiet;
        }
        self.last_line = Some(now);
        let repeats = std::mem::take(&mut self.unlogged);
        let seconds = self
            .first
            .map_or(0, |first| now.duration_since(first).as_secs());
        Line::Repeated { repeats, seconds }
    }

    /// A success at `now`: `Some((failures, seconds))` when it ends a run
    /// of failures.
    pub(super) fn success(&mut self, now: Instant) -> Option<(u64, u64)> {
        let first = self.first?;
        let ended = (self.total, now.duration_since(first).as_secs());
        *self = Throttle::default();
        Some(ended)
    }
}

/// One operation's failures.
#[derive(Debug, Default)]
struct OperationHealth {
    /// Set while the last outcome was a failure: a success costs one
    /// atomic load when nothing failed.
    failing: AtomicBool,
    state: Mutex<OperationState>,
}

#[derive(Debug, Default)]
struct OperationState {
    since: Option<Instant>,
    last: Option<Instant>,
    failure: Option<Failure>,
    /// Whether a failure of this run was logged at WARN (an unreachable
    /// Redis is logged for the connection, not per operation).
    warned: bool,
    announced_unready: bool,
    throttle: Throttle,
}

/// The health of this instance; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Arc<Link>,
    state: Arc<InstanceState>,
    metrics: Metrics,
    /// The Redis address, password redacted, for log lines.
    redis_url: String,
    operations: Vec<OperationHealth>,
    /// Why this instance refuses readiness although it works (a setting
    /// that demands what Redis does not offer: `redis.require_noeviction`).
    refusal: Mutex<Option<String>>,
}

impl Health {
    /// Health over `link`, for the instance `state`; failures are counted
    /// in `metrics`, which also exports `dsg_redis_up` and `dsg_ready` from
    /// here.
    pub(super) fn new(
        link: Arc<Link>,
        state: Arc<InstanceState>,
        metrics: Metrics,
        redis_url: String,
    ) -> Health {
        let health = Health {
            inner: Arc::new(Inner {
                link,
                state,
                metrics: metrics.clone(),
                redis_url,
                operations: Operation::ALL
                    .iter()
                    .map(|_| OperationHealth::default())
                    .collect(),
                refusal: Mutex::new(None),
            }),
        };
        // A weak link: metrics must not keep health alive (health holds
        // the metrics).
        metrics.attach_health(Arc::new(Probe(Arc::downgrade(&health.inner))));
        health
    }

    fn operation(&self, op: Operation) -> &OperationHealth {
        // `operations` has one entry per variant, in `Operation::ALL` order.
        &self.inner.operations[op as usize]
    }

    /// `op` worked.
    pub(super) fn succeeded(&self, op: Operation) {
        let health = self.operation(op);
        if !health.failing.load(Ordering::Acquire) {
            return;
        }
        let mut state = lock(&health.state);
        health.failing.store(false, Ordering::Release);
        state.since = None;
        state.failure = None;
        state.announced_unready = false;
        let warned = std::mem::take(&mut state.warned);
        if let Some((failures, seconds)) = state.throttle.success(Instant::now())
            && warned
        {
            tracing::info!(
                operation = op.metric_label(),
                failures,
                seconds,
                "{} works again",
                op.describe()
            );
        }
    }

    /// The instance stopped doing `op` (a role change: a generator that
    /// stepped down no longer writes, a consumer that became the generator
    /// no longer fetches): its failures no longer count for readiness, and a
    /// later failure starts a new run.
    pub(super) fn stopped(&self, op: Operation) {
        let health = self.operation(op);
        if !health.failing.load(Ordering::Acquire) {
            return;
        }
        let mut state = lock(&health.state);
        health.failing.store(false, Ordering::Release);
        *state = OperationState::default();
    }

    /// `op` failed with `error`: counted, logged (throttled), and remembered
    /// for readiness. Failures because Redis is unreachable are logged once
    /// for the connection (see [`Health::follow_link`]), not per operation.
    pub(super) fn failed(&self, op: Operation, error: &RedisError) {
        self.failed_at(op, error, Instant::now());
    }

    fn failed_at(&self, op: Operation, error: &RedisError, now: Instant) {
        self.inner.metrics.record_redis_error(op);
        let failure = error.failure();
        let health = self.operation(op);
        let mut state = lock(&health.state);
        health.failing.store(true, Ordering::Release);
        let since = *state.since.get_or_insert(now);
        state.last = Some(now);
        state.failure = Some(failure.clone());
        let line = state.throttle.failure(failure.cause, now);
        if failure.cause.is_unreachable() {
            tracing::debug!(operation = op.metric_label(), error = %failure, "{} failed", op.describe());
            return;
        }
        state.warned = true;
        match line {
            Line::First => tracing::warn!(
                operation = op.metric_label(),
                error = %failure,
                "{} failed; retrying with a growing pause",
                op.describe()
            ),
            Line::Repeated { repeats, seconds } => tracing::warn!(
                operation = op.metric_label(),
                error = %failure,
                repeats,
                failing_for_s = seconds,
                "{} still fails",
                op.describe()
            ),
            Line::Quiet => {}
        }
        if READINESS_OPERATIONS.contains(&op)
            && !state.announced_unready
            && now.duration_since(since) >= UNREADY_AFTER
        {
            state.announced_unready = true;
            tracing::warn!(
                operation = op.metric_label(),
                error = %failure,
                "{} has failed for {} s: reporting unready until it works again",
                op.describe(),
                now.duration_since(since).as_secs()
            );
        }
    }

    /// Refuses readiness for `reason` (or stops refusing: `None`).
    pub(super) fn set_refusal(&self, reason: Option<String>) {
        *lock(&self.inner.refusal) = reason;
    }

    /// What `/readyz` answers now, from state only (no Redis call).
    pub(super) fn readiness(&self) -> Readiness {
        self.readiness_at(Instant::now())
    }

    fn readiness_at(&self, now: Instant) -> Readiness {
        let state = &self.inner.state;
        let link = &self.inner.link;
        if state.is_stopping() {
            return Readiness::NotReady("stopping".into());
        }
        if let Some((failure, since)) = link.failure() {
            return Readiness::NotReady(format!(
                "Redis unreachable for {} s: {failure}",
                now.saturating_duration_since(since).as_secs()
            ));
        }
        if !link.is_up() || !state.role_loop_running() {
            return Readiness::NotReady("starting: waiting for Redis".into());
        }
        if let Some(reason) = lock(&self.inner.refusal).clone() {
            return Readiness::NotReady(reason);
        }
        for op in READINESS_OPERATIONS {
            let health = self.operation(op);
            if !health.failing.load(Ordering::Acquire) {
                continue;
            }
            let state = lock(&health.state);
            let (Some(since), Some(last), Some(failure)) =
                (state.since, state.last, state.failure.as_ref())
            else {
                continue;
            };
            // Failing for the bound means failures observed that far
            // apart, not one failure followed by silence.
            if last.saturating_duration_since(since) >= UNREADY_AFTER
                && now.saturating_duration_since(last) < STALE_AFTER
            {
                return Readiness::NotReady(format!(
                    "{} has failed for {} s: {failure}",
                    op.describe(),
                    now.saturating_duration_since(since).as_secs()
                ));
            }
        }
        Readiness::Ready
    }

    /// Logs the link's failures and recoveries until `stop`: the first
    /// failure at WARN naming its cause, the same cause again once a minute
    /// with a count, recovery at INFO.
    pub(super) async fn follow_link(self, stop: CancellationToken) {
        let mut events = self.inner.link.subscribe();
        let mut throttle = Throttle::default();
        let url = &self.inner.redis_url;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(LinkEvent::Down(failure)) => {
                    // The link keeps a named cause over later timeouts
                    // (commands queued while disconnected): so does the log.
                    let failure = self
                        .inner
                        .link
                        .failure()
                        .map_or(failure, |(current, _)| current);
                    match throttle.failure(failure.cause, Instant::now()) {
                        Line::First => {
                            tracing::warn!(redis = %url, error = %failure, "cannot reach Redis")
                        }
                        Line::Repeated { repeats, seconds } => tracing::warn!(
                            redis = %url,
                            error = %failure,
                            failed_attempts = repeats,
                            unreachable_for_s = seconds,
                            "still cannot reach Redis"
                        ),
                        Line::Quiet => {}
                    }
                }
                Ok(LinkEvent::Up) => {
                    if let Some((failures, seconds)) = throttle.success(Instant::now()) {
                        tracing::info!(redis = %url, failures, unreachable_for_s = seconds, "Redis answers again");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// What `dsg_redis_up` and `dsg_ready` read.
#[derive(Debug)]
struct Probe(Weak<Inner>);

impl HealthProbe for Probe {
    fn redis_up(&self) -> bool {
        self.0.upgrade().is_some_and(|inner| inner.link.is_up())
    }

    fn ready(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|inner| Health { inner }.readiness().is_ready())
    }
}

/// A lock whose value is replaced whole: a poisoned one is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Mode};
    use fred::error::{Error, ErrorKind};

    fn health() -> (Health, Arc<Link>, Arc<InstanceState>) {
        let link = Link::new();
        let state = Arc::new(InstanceState::new("i".into(), Mode::Consumer));
        let config = Config::default();
        let metrics = Metrics::new("a", "errors", &config.processor);
        let health = Health::new(link.clone(), state.clone(), metrics, "redis://x".into());
        (health, link, state)
    }

    #[test]
    fn issue11_readiness_says_why_and_follows_failing_operations() {
        let (health, link, state) = health();
        assert_eq!(
            health.readiness(),
            Readiness::NotReady("starting: waiting for Redis".into())
        );
        link.failed(Failure::classify(&ErrorKind::IO, "Connection refused"));
        let Readiness::NotReady(why) = health.readiness() else {
            panic!("ready while Redis refuses")
        };
        assert!(
            why.starts_with("Redis unreachable for 0 s: connection refused"),
            "{why}"
        );
        link.answered();
        state.set_role_loop_running(true);
        assert!(health.readiness().is_ready());

        // A fetch that keeps failing: ready until the bound, then not.
        let t0 = Instant::now();
        let wrong_type = RedisError::Command(Error::new(ErrorKind::Unknown, "WRONGTYPE x"));
        health.failed_at(Operation::Fetch, &wrong_type, t0);
        assert!(health.readiness_at(t0 + Duration::from_secs(5)).is_ready());
        health.failed_at(Operation::Fetch, &wrong_type, t0 + UNREADY_AFTER);
        let Readiness::NotReady(why) = health.readiness_at(t0 + UNREADY_AFTER) else {
            panic!("ready while fetching fails")
        };
        assert!(
            why.contains("fetching messages") && why.contains("wrong type"),
            "{why}"
        );
        // Not attempted any more (the consumer became the generator).
        assert!(
            health
                .readiness_at(t0 + UNREADY_AFTER + STALE_AFTER)
                .is_ready()
        );
        // A success ends it; a failing fleet chore never makes it unready.
        health.succeeded(Operation::Fetch);
        health.failed_at(Operation::Sample, &wrong_type, t0);
        health.failed_at(Operation::Sample, &wrong_type, t0 + UNREADY_AFTER);
        assert!(health.readiness_at(t0 + UNREADY_AFTER).is_ready());
        state.begin_stopping();
        assert_eq!(health.readiness(), Readiness::NotReady("stopping".into()));
    }

    #[test]
    fn issue11_an_operation_the_instance_stopped_doing_does_not_keep_it_unready() {
        let (health, link, state) = health();
        link.answered();
        state.set_role_loop_running(true);
        let t0 = Instant::now();
        let timeout = RedisError::Unavailable(Error::new(ErrorKind::Timeout, "Request timed out."));
        // The last write of a generator that then lost its lease: one
        // failure, and silence after it, is not a write failing for 15 s.
        health.failed_at(Operation::Push, &timeout, t0);
        assert!(health.readiness_at(t0 + UNREADY_AFTER * 2).is_ready());
        // Writes failing for the bound, then the generator steps down.
        health.failed_at(Operation::Push, &timeout, t0 + UNREADY_AFTER);
        assert!(!health.readiness_at(t0 + UNREADY_AFTER).is_ready());
        health.stopped(Operation::Push);
        assert!(health.readiness_at(t0 + UNREADY_AFTER).is_ready());
    }

    #[test]
    fn issue11_the_first_failure_is_logged_at_once_then_once_a_minute_with_a_count() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(t.failure(Cause::WrongType, t0), Line::First);
        for i in 1..100 {
            let at = t0 + Duration::from_millis(500 * i);
            assert_eq!(t.failure(Cause::WrongType, at), Line::Quiet, "{i}");
        }
        assert_eq!(
            t.failure(Cause::WrongType, t0 + Duration::from_secs(61)),
            Line::Repeated {
                repeats: 100,
                seconds: 61
            }
        );
        // Another cause is news.
        assert_eq!(
            t.failure(Cause::NoPermission, t0 + Duration::from_secs(62)),
            Line::First
        );
        assert_eq!(t.success(t0 + Duration::from_secs(70)), Some((102, 70)));
        assert_eq!(t.success(t0 + Duration::from_secs(71)), None);
        assert_eq!(
            t.failure(Cause::WrongType, t0 + Duration::from_secs(72)),
            Line::First
        );
    }
}
