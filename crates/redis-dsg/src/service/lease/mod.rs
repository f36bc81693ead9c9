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

mod notices;
mod token;

use std::time::{Duration, Instant};

use fred::types::Value;
use tokio_util::sync::CancellationToken;

use crate::config::LeaseConfig;
use crate::redis::Operation;
use crate::redis::scripts::{ACQUIRE_LEASE, RELEASE_LEASE, RENEW_LEASE};
use crate::redis::{Keys, Redis, RedisError, int, value_bytes};
use crate::service::metrics::{Metrics, Transition};
use crate::service::state::InstanceState;
pub(crate) use notices::Notices;
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

/// Takes, renews and releases the lease for one instance.
#[derive(Debug, Clone)]
pub(super) struct LeaseClient {
    redis: Redis,
    keys: Keys,
    id: String,
    cfg: LeaseConfig,
}

impl LeaseClient {
    /// A client acting for instance `id`.
    pub(super) fn new(redis: Redis, keys: Keys, id: String, cfg: LeaseConfig) -> LeaseClient {
        LeaseClient {
            redis,
            keys,
            id,
            cfg,
        }
    }

    /// One attempt to take the lease; `seen_epoch` is the highest epoch
    /// this instance has seen (new epochs are always above it).
    pub(super) async fn try_acquire(&self, seen_epoch: u64) -> Result<Attempt, RedisError> {
        let sent = Instant::now();
        let reply: Vec<Value> = self
            .redis
            .run(
                &ACQUIRE_LEASE,
                vec![self.keys.lease(), self.keys.epoch()],
                vec![
                    self.id.clone().into(),
                    int(self.cfg.ttl_ms),
                    int(seen_epoch),
                ],
            )
            .await?;
        let bad = |detail: &str| RedisError::Reply {
            script: ACQUIRE_LEASE.name,
            detail: detail.to_string(),
        };
        let mut it = reply.into_iter();
        let taken = it
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| bad("no status"))?;
        let value = it
            .next()
            .and_then(value_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| bad("no token"))?;
        let third = it
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| bad("no epoch/ttl"))?;
        if taken == 1 {
            let token = LeaseToken::parse(&value)
                .filter(|t| t.holder == self.id && i64::try_from(t.epoch).ok() == Some(third))
                .ok_or_else(|| bad("the token taken is not ours"))?;
            Ok(Attempt::Acquired(Lease::new(
                token,
                sent + self.cfg.renew_deadline(),
            )))
        } else {
            let remaining = u64::try_from(third).ok().map(Duration::from_millis);
            Ok(Attempt::Held { value, remaining })
        }
    }

    /// Adopts a lease Redis still records as ours (we gave up locally, e.g.
    /// after a Redis outage, but the key never expired). Same token, same
    /// epoch: nobody else can have written in between.
    pub(super) async fn try_adopt(&self, token: &LeaseToken) -> Result<Option<Lease>, RedisError> {
        if token.holder != self.id {
            return Ok(None);
        }
        let lease = Lease::new(token.clone(), Instant::now());
        Ok(self.renew(&lease).await?.then_some(lease))
    }

    /// Extends the lease; `Ok(false)` when it is no longer ours.
    pub(super) async fn renew(&self, lease: &Lease) -> Result<bool, RedisError> {
        let sent = Instant::now();
        let renewed: i64 = self
            .redis
            .run(
                &RENEW_LEASE,
                vec![self.keys.lease()],
                vec![lease.wire().into(), int(self.cfg.ttl_ms)],
            )
            .await?;
        if renewed == 1 {
            lease.valid_until.set(sent + self.cfg.renew_deadline());
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Gives the lease up and announces it to standbys.
    pub(super) async fn release(&self, lease: &Lease) -> Result<bool, RedisError> {
        lease.mark_lost();
        let released: i64 = self
            .redis
            .run(
                &RELEASE_LEASE,
                vec![self.keys.lease()],
                vec![lease.wire().into(), self.keys.release_channel().into()],
            )
            .await?;
        Ok(released == 1)
    }

    /// Keeps `lease` alive until `stop` fires or the lease is lost. Returns
    /// how it ended. Never lets the lease be valid past its renew deadline.
    pub(super) async fn hold(
        &self,
        lease: &Lease,
        stop: &CancellationToken,
        metrics: &Metrics,
    ) -> HoldEnd {
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
                Ok(Ok(true)) => next_renewal = Instant::now() + retry,
                Ok(Ok(false)) => {
                    lease.mark_lost();
                    return HoldEnd::Lost("the lease key no longer holds our token");
                }
                Ok(Err(e)) => {
                    metrics.record_redis_error(Operation::Lease);
                    tracing::warn!(error = %e, "lease renewal failed; retrying");
                    next_renewal = Instant::now() + retry / 4;
                }
                Err(_) => {
                    metrics.record_redis_error(Operation::Lease);
                    next_renewal = Instant::now();
                }
            }
        }
    }

    /// Waits until this instance holds the lease, or `stop` fires. Listens
    /// to release notices; otherwise sleeps for the lease's remaining TTL,
    /// at most the ping interval. `on_waiting` runs whenever an attempt
    /// did not win (the caller then knows it is not the generator).
    pub(super) async fn wait_for_lease(
        &self,
        notices: &mut Notices,
        state: &InstanceState,
        metrics: &Metrics,
        stop: &CancellationToken,
        on_waiting: &(dyn Fn() + Sync),
    ) -> Option<Lease> {
        loop {
            let attempt = self.try_acquire(state.epoch()).await;
            if !matches!(attempt, Ok(Attempt::Acquired(_))) {
                on_waiting();
            }
            let wait = match attempt {
                Ok(Attempt::Acquired(lease)) => return Some(lease),
                Ok(Attempt::Held { value, remaining }) => {
                    let token = LeaseToken::parse(&value);
                    if let Some(token) = token.as_ref().filter(|t| t.holder == self.id) {
                        match self.try_adopt(token).await {
                            Ok(Some(lease)) => return Some(lease),
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
                    // Wake just after the key expires; a key without TTL
                    // (set by hand) is looked at every ping interval.
                    remaining
                        .map(|r| r + Duration::from_millis(1))
                        .unwrap_or(self.cfg.ping_interval())
                        .min(self.cfg.ping_interval())
                }
                Err(e) => {
                    metrics.record_redis_error(Operation::Lease);
                    tracing::debug!(error = %e, "lease attempt failed");
                    self.cfg.retry_period()
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = notices.next() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
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
