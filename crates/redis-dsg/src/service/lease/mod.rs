//! The generator lease: a Redis key taken with `NX PX`, a fencing epoch per
//! acquisition, compare-and-set renewal and release (scripts in
//! [`crate::redis::scripts`]).
//!
//! Timing follows client-go's leader election: TTL > renew deadline > retry
//! period. The holder renews every retry period and treats its lease as
//! valid only until `renew deadline` after it *sent* its last successful
//! renewal (monotonic clock). Redis set the key's expiry after receiving that
//! renewal, so the holder always gives up before the key can expire, and a
//! standby can only take over after the holder stopped. Writes are fenced in
//! Redis as well ([`crate::redis::scripts::FENCED_PUSH`]), so even a holder whose clock
//! or scheduler misbehaves cannot write once it lost the lease.
//!
//! Standbys do not poll on a fixed period: they listen for release notices
//! and otherwise sleep until the lease's remaining TTL (`PTTL`) has run out,
//! bounded by `GENERATOR_PING_INTERVAL`.
//!
//! In compatibility mode the holder also holds go-redis-dsg's `lock:gen`
//! ([`original_lock`]).

mod notices;
pub(crate) mod original_lock;
mod token;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::LeaseConfig;
use crate::redis::Operation;
use crate::redis::scripts::{self, ACQUIRE_LEASE};
use crate::redis::{Keys, Redis, RedisError};
use crate::service::backoff::Backoff;
use crate::service::health::Health;
use crate::service::metrics::{Metrics, Transition};
use crate::service::state::InstanceState;
use crate::service::status::OriginalLockView;
pub(crate) use notices::Notices;
use original_lock::{LockGen, OriginalLock, Taken};
pub(crate) use token::Lease;
pub use token::LeaseToken;

/// The outcome of one attempt to take the lease.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Taken: this instance is the holder.
    Acquired(Lease),
    /// Someone holds it.
    Held {
        /// The lease key's value: a holder's token, or anything else a
        /// person or another program put there.
        value: String,
        /// Time left before the key expires, when it has a TTL.
        remaining: Option<Duration>,
    },
}

/// What one step of a contender ended with.
#[derive(Debug)]
enum Step {
    /// This instance holds the lease (and, in compatibility mode,
    /// `lock:gen`): it may generate.
    Won(Lease),
    /// Someone else generates, or may: look again after this long (or at a
    /// release notice).
    Wait(Duration),
}

/// Why a holder stops when `lock:gen` no longer holds its value (an
/// operator's pause, or an original after the key was lost): the lease is
/// still its own, and it gives it back.
pub(super) const LOCK_GEN_TAKEN: &str = "lock:gen holds another value";

/// How a renewal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renewal {
    /// Everything held is extended.
    Renewed,
    /// Something held is gone or someone else's: stop, for this reason.
    Lost(&'static str),
}

/// Takes, renews and releases the lease for one instance.
#[derive(Debug, Clone)]
pub(super) struct LeaseClient {
    redis: Redis,
    keys: Keys,
    id: String,
    cfg: LeaseConfig,
    /// `lock:gen`, in compatibility mode only.
    original: Option<OriginalLock>,
    health: Health,
}

impl LeaseClient {
    /// A client acting for instance `id`; with `original_lock` (compatibility
    /// mode) it also holds go-redis-dsg's `lock:gen` while holding the lease.
    /// Failures are reported to `health` (a lease that cannot even be
    /// attempted makes the instance unready).
    pub(super) fn new(
        redis: Redis,
        keys: Keys,
        id: String,
        cfg: LeaseConfig,
        original_lock: bool,
        health: Health,
    ) -> LeaseClient {
        let original = original_lock.then(|| OriginalLock::new(redis.clone(), &keys, &cfg));
        LeaseClient {
            redis,
            keys,
            id,
            cfg,
            original,
            health,
        }
    }

    /// One attempt to take the lease; `seen_epoch` is the highest epoch
    /// this instance has seen (new epochs are always above it).
    pub(super) async fn try_acquire(&self, seen_epoch: u64) -> Result<Attempt, RedisError> {
        let sent = Instant::now();
        let acquired = scripts::acquire_lease(
            &self.redis,
            &self.keys,
            &self.id,
            self.cfg.ttl_ms,
            seen_epoch,
        )
        .await?;
        match acquired {
            scripts::Acquired::Taken { value, epoch } => {
                let token = LeaseToken::parse(&value)
                    .filter(|t| t.holder == self.id && i64::try_from(t.epoch).ok() == Some(epoch))
                    .ok_or_else(|| RedisError::Reply {
                        script: ACQUIRE_LEASE.name,
                        detail: "the token taken is not ours".to_string(),
                    })?;
                Ok(Attempt::Acquired(Lease::new(
                    token,
                    sent + self.cfg.renew_deadline(),
                )))
            }
            scripts::Acquired::Held { value, ttl_ms } => {
                let remaining = ttl_ms
                    .and_then(|t| u64::try_from(t).ok())
                    .map(Duration::from_millis);
                Ok(Attempt::Held { value, remaining })
            }
        }
    }

    /// Adopts a lease Redis still records as ours (we gave up locally, e.g.
    /// after a Redis outage, but the key never expired). Same token, same
    /// epoch: nobody else can have written in between.
    pub(super) async fn try_adopt(&self, token: &LeaseToken) -> Result<Option<Lease>, RedisError> {
        if token.holder != self.id {
            return Ok(None);
        }
        let sent = Instant::now();
        let lease = Lease::new(token.clone(), sent);
        if !self.renew_lease_key(&lease).await? {
            return Ok(None);
        }
        lease.valid_until.set(sent + self.cfg.renew_deadline());
        Ok(Some(lease))
    }

    /// Extends the lease key; `Ok(false)` when it is no longer ours.
    async fn renew_lease_key(&self, lease: &Lease) -> Result<bool, RedisError> {
        scripts::renew(
            &self.redis,
            self.keys.lease(),
            lease.wire(),
            self.cfg.ttl_ms,
        )
        .await
    }

    /// Extends the lease and, in compatibility mode, `lock:gen` (two calls
    /// sent together: on a Cluster the keys live in different slots). The
    /// lease stays valid until the renew deadline after the moment both
    /// were sent, so the earlier of the two deadlines rules.
    pub(super) async fn renew(&self, lease: &Lease) -> Result<Renewal, RedisError> {
        let sent = Instant::now();
        let (lease_renewed, lock_renewed) = match &self.original {
            None => (self.renew_lease_key(lease).await?, true),
            Some(lock) => {
                let (a, b) = tokio::join!(self.renew_lease_key(lease), lock.renew(lease));
                (a?, b?)
            }
        };
        if !lease_renewed {
            return Ok(Renewal::Lost("the lease key no longer holds our token"));
        }
        if !lock_renewed {
            return Ok(Renewal::Lost(LOCK_GEN_TAKEN));
        }
        lease.valid_until.set(sent + self.cfg.renew_deadline());
        Ok(Renewal::Renewed)
    }

    /// Gives the lease up and announces it to standbys.
    pub(super) async fn release(&self, lease: &Lease) -> Result<bool, RedisError> {
        lease.mark_lost();
        let released = scripts::release_lease(&self.redis, &self.keys, lease.wire()).await?;
        if released == scripts::Released::Unannounced {
            tracing::warn!(
                channel = %self.keys.release_channel(),
                "released the lease, but the release notice could not be published (PUBLISH refused: check the ACL user's +publish and channel); standbys take over when they next look"
            );
        }
        Ok(released != scripts::Released::NotOurs)
    }

    /// Keeps `lease` alive until `stop` fires or the lease is lost. Returns
    /// how it ended. Never lets the lease be valid past its renew deadline.
    pub(super) async fn hold(&self, lease: &Lease, stop: &CancellationToken) -> HoldEnd {
        let retry = self.cfg.retry_period();
        let mut next_renewal = Instant::now() + retry;
        loop {
            let wake = next_renewal.min(lease.valid_until());
            tokio::select! {
                _ = stop.cancelled() => return HoldEnd::Stopped,
                _ = lease.lost() => return HoldEnd::Lost("a fenced write was refused"),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if !lease.is_valid() {
                lease.mark_lost();
                return HoldEnd::Lost("no successful renewal within the renew deadline");
            }
            if Instant::now() < next_renewal {
                continue;
            }
            // A renewal that cannot finish before the deadline is useless.
            let renewal = tokio::time::timeout_at(lease.valid_until().into(), self.renew(lease));
            match renewal.await {
                Ok(Ok(Renewal::Renewed)) => {
                    self.health.succeeded(Operation::Lease);
                    next_renewal = Instant::now() + retry;
                }
                Ok(Ok(Renewal::Lost(why))) => {
                    lease.mark_lost();
                    return HoldEnd::Lost(why);
                }
                Ok(Err(e)) => {
                    self.health.failed(Operation::Lease, &e);
                    next_renewal = Instant::now() + retry / 4;
                }
                Err(_) => {
                    let late = fred::error::Error::new(
                        fred::error::ErrorKind::Timeout,
                        "the lease renewal did not finish before the renew deadline",
                    );
                    self.health
                        .failed(Operation::Lease, &RedisError::Unavailable(late));
                    next_renewal = Instant::now();
                }
            }
        }
    }

    /// Waits until this instance holds the lease, or `stop` fires. Listens
    /// to release notices; otherwise sleeps for the lease's remaining TTL,
    /// at most the ping interval (at most the retry period while no notice
    /// subscription is confirmed). `on_waiting` runs whenever an attempt
    /// did not win (the caller then knows it is not the generator). A
    /// failed attempt is reported to health (WARN: it is not "held by
    /// another") and retried after the retry period, longer while the same
    /// error reply repeats.
    pub(super) async fn wait_for_lease(
        &self,
        notices: &mut Notices,
        state: &InstanceState,
        metrics: &Metrics,
        stop: &CancellationToken,
        on_waiting: &(dyn Fn() + Sync),
    ) -> Option<Lease> {
        let retry = self.cfg.retry_period();
        let mut backoff = Backoff::new(retry, retry, retry.max(Duration::from_secs(10)));
        loop {
            let wait = match self.attempt(state, metrics).await {
                Ok(Step::Won(lease)) => {
                    self.health.succeeded(Operation::Lease);
                    return Some(lease);
                }
                Ok(Step::Wait(wait)) => {
                    self.health.succeeded(Operation::Lease);
                    backoff.reset();
                    if notices.is_active() {
                        wait
                    } else {
                        wait.min(retry)
                    }
                }
                Err(e) => {
                    self.health.failed(Operation::Lease, &e);
                    backoff.fail_for(&e)
                }
            };
            on_waiting();
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = notices.next() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt: in compatibility mode, stay away while `lock:gen` holds
    /// a value that is not this fleet's; then take (or adopt) the lease;
    /// then, in compatibility mode, `lock:gen`, giving the lease back if an
    /// original took `lock:gen` in between.
    async fn attempt(&self, state: &InstanceState, metrics: &Metrics) -> Result<Step, RedisError> {
        if let Some(lock) = &self.original {
            let seen = original_lock::read(&self.redis).await?;
            if let Some(wait) = self.foreign_lock_wait(lock, seen, state) {
                return Ok(Step::Wait(wait));
            }
        }
        let lease = match self.take_or_adopt(state, metrics).await? {
            Ok(lease) => lease,
            Err(wait) => return Ok(Step::Wait(wait)),
        };
        let Some(lock) = &self.original else {
            return Ok(Step::Won(lease));
        };
        match lock.acquire(&lease).await {
            Ok(Taken::Yes) => {
                state.set_original_lock(Some(lock.view_of_ours(&lease)));
                Ok(Step::Won(lease))
            }
            Ok(Taken::No(seen)) => {
                tracing::info!(value = %seen.value, "lock:gen was taken by another program after the lease; giving the lease back");
                let wait = self.foreign_lock_wait(lock, Some(seen), state);
                self.give_back(&lease).await;
                Ok(Step::Wait(wait.unwrap_or(self.cfg.retry_period())))
            }
            Err(e) => {
                self.give_back(&lease).await;
                Err(e)
            }
        }
    }

    /// When `lock:gen` (as `seen`) holds a value that keeps this fleet's
    /// contenders away, records it and returns how long to wait: until just
    /// after it expires (originals look only once per ping interval, so a
    /// contender waking at the expiry almost always wins it), at most the
    /// ping interval.
    fn foreign_lock_wait(
        &self,
        lock: &OriginalLock,
        seen: Option<LockGen>,
        state: &InstanceState,
    ) -> Option<Duration> {
        let seen = seen?;
        let kind = lock.kind(&seen.value, None);
        state.set_original_lock(Some(OriginalLockView {
            value: seen.value.clone(),
            kind,
            ttl_ms: seen.remaining.map(|r| r.as_millis() as u64),
        }));
        if !kind.blocks_contenders() {
            return None;
        }
        Some(
            seen.remaining
                .map(|r| r + Duration::from_millis(1))
                .unwrap_or(self.cfg.ping_interval())
                .min(self.cfg.ping_interval()),
        )
    }

    /// Gives back a lease this instance may not generate under (best
    /// effort: unreleased, it expires within its TTL; nobody generates
    /// under it meanwhile).
    pub(super) async fn give_back(&self, lease: &Lease) {
        if let Err(e) = self.release(lease).await {
            tracing::debug!(error = %e, "could not give the lease back; it expires on its own");
        }
    }

    /// Takes the lease, or adopts it when Redis still records it as ours;
    /// otherwise records the holder and says how long to wait: just after
    /// the key expires, at most the ping interval (a key without TTL, set
    /// by hand, is looked at every ping interval).
    async fn take_or_adopt(
        &self,
        state: &InstanceState,
        metrics: &Metrics,
    ) -> Result<Result<Lease, Duration>, RedisError> {
        let (value, remaining) = match self.try_acquire(state.epoch()).await? {
            Attempt::Acquired(lease) => return Ok(Ok(lease)),
            Attempt::Held { value, remaining } => (value, remaining),
        };
        let token = LeaseToken::parse(&value);
        if let Some(token) = token.as_ref().filter(|t| t.holder == self.id) {
            match self.try_adopt(token).await {
                Ok(Some(lease)) => return Ok(Ok(lease)),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not adopt our own lease"),
            }
        }
        match token {
            Some(t) => {
                metrics.record_epoch(t.epoch);
                state.set_holder(Some(t.holder), Some(t.epoch));
            }
            None => state.set_holder(Some(value), None),
        }
        Ok(Err(remaining
            .map(|r| r + Duration::from_millis(1))
            .unwrap_or(self.cfg.ping_interval())
            .min(self.cfg.ping_interval())))
    }

    /// Records the transition of this instance to holder.
    pub(super) fn announce_acquired(
        &self,
        lease: &Lease,
        state: &InstanceState,
        metrics: &Metrics,
    ) {
        state.set_holder(Some(self.id.clone()), Some(lease.epoch));
        metrics.record_epoch(lease.epoch);
        metrics.record_transition(Transition::Acquired);
        tracing::info!(epoch = lease.epoch, "acquired the generator lease");
    }
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldEnd {
    /// Shutdown or a role change asked to stop.
    Stopped,
    /// The lease was lost, for the given reason.
    Lost(&'static str),
}
