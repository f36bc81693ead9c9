//! The generator lease: a Redis key taken with `NX PX`, a fencing epoch per
//! acquisition, compare-and-set renewal and release (scripts in
//! [`crate::keys`]).
//!
//! Timing follows client-go's leader election: TTL > renew deadline > retry
//! period. The holder renews every retry period and treats its lease as
//! valid only until `renew deadline` after it *sent* its last successful
//! renewal (monotonic clock). Redis set the key's expiry after receiving that
//! renewal, so the holder always gives up before the key can expire, and a
//! standby can only take over after the holder stopped. Writes are fenced in
//! Redis as well ([`crate::keys::FENCED_PUSH`]), so even a holder whose clock
//! or scheduler misbehaves cannot write once it lost the lease.
//!
//! Standbys do not poll on a fixed period: they listen for release notices
//! and otherwise sleep until the lease's remaining TTL (`PTTL`) has run out,
//! bounded by `GENERATOR_PING_INTERVAL`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::LeaseConfig;
use crate::keys::{ACQUIRE_LEASE, Keys, RELEASE_LEASE, RENEW_LEASE};
use crate::metrics::{Metrics, Transition};
use crate::redis::{Redis, RedisError, int, value_bytes};
use crate::state::InstanceState;

/// A lease this instance holds.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `<holder id> <epoch>`, the value of the lease key.
    pub token: String,
    /// The fencing epoch.
    pub epoch: u64,
    valid_until: Arc<ValidUntil>,
    lost: CancellationToken,
}

impl Lease {
    fn new(token: String, epoch: u64, valid_until: Instant) -> Lease {
        Lease {
            token,
            epoch,
            valid_until: Arc::new(ValidUntil::new(valid_until)),
            lost: CancellationToken::new(),
        }
    }

    /// Whether the holder may still write: before its renew deadline and
    /// not marked lost.
    pub fn is_valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.valid_until.get()
    }

    /// The moment the holder must stop writing unless renewed.
    pub fn valid_until(&self) -> Instant {
        self.valid_until.get()
    }

    /// Marks the lease lost (a fenced write was refused).
    pub fn mark_lost(&self) {
        self.lost.cancel();
    }

    /// Resolves when the lease is marked lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }
}

/// An `Instant` that can be moved forward from another task.
#[derive(Debug)]
struct ValidUntil {
    base: Instant,
    nanos: AtomicU64,
}

impl ValidUntil {
    fn new(at: Instant) -> ValidUntil {
        // A base in the past, so that any deadline can be stored exactly.
        let now = Instant::now();
        let base = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
        let v = ValidUntil {
            base,
            nanos: AtomicU64::new(0),
        };
        v.set(at);
        v
    }

    fn get(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        self.nanos
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }
}

/// The outcome of one attempt to take the lease.
#[derive(Debug)]
pub enum Attempt {
    /// Taken: this instance is the holder.
    Acquired(Lease),
    /// Someone holds it.
    Held {
        /// The holder's token (`<id> <epoch>`).
        token: String,
        /// Time left before the key expires, when it has a TTL.
        remaining: Option<Duration>,
    },
}

/// Splits a lease token into holder id and epoch.
pub fn parse_token(token: &str) -> (String, Option<u64>) {
    match token.rsplit_once(' ') {
        Some((id, epoch)) => (id.to_string(), epoch.parse().ok()),
        None => (token.to_string(), None),
    }
}

/// Takes, renews and releases the lease for one instance.
#[derive(Debug, Clone)]
pub struct LeaseClient {
    redis: Redis,
    keys: Keys,
    id: String,
    cfg: LeaseConfig,
}

impl LeaseClient {
    /// A client acting for instance `id`.
    pub fn new(redis: Redis, keys: Keys, id: String, cfg: LeaseConfig) -> LeaseClient {
        LeaseClient {
            redis,
            keys,
            id,
            cfg,
        }
    }

    /// One attempt to take the lease; `seen_epoch` is the highest epoch
    /// this instance has seen (new epochs are always above it).
    pub async fn try_acquire(&self, seen_epoch: u64) -> Result<Attempt, RedisError> {
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
        let token = it
            .next()
            .and_then(value_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| bad("no token"))?;
        let third = it
            .next()
            .and_then(|v| v.as_i64())
            .ok_or_else(|| bad("no epoch/ttl"))?;
        if taken == 1 {
            let epoch = u64::try_from(third).map_err(|_| bad("negative epoch"))?;
            Ok(Attempt::Acquired(Lease::new(
                token,
                epoch,
                sent + self.cfg.renew_deadline(),
            )))
        } else {
            let remaining = u64::try_from(third).ok().map(Duration::from_millis);
            Ok(Attempt::Held { token, remaining })
        }
    }

    /// Adopts a lease Redis still records as ours (we gave up locally, e.g.
    /// after a Redis outage, but the key never expired). Same token, same
    /// epoch: nobody else can have written in between.
    pub async fn try_adopt(&self, token: &str) -> Result<Option<Lease>, RedisError> {
        let (id, epoch) = parse_token(token);
        let Some(epoch) = epoch.filter(|_| id == self.id) else {
            return Ok(None);
        };
        let lease = Lease::new(token.to_string(), epoch, Instant::now());
        Ok(self.renew(&lease).await?.then_some(lease))
    }

    /// Extends the lease; `Ok(false)` when it is no longer ours.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, RedisError> {
        let sent = Instant::now();
        let renewed: i64 = self
            .redis
            .run(
                &RENEW_LEASE,
                vec![self.keys.lease()],
                vec![lease.token.clone().into(), int(self.cfg.ttl_ms)],
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
    pub async fn release(&self, lease: &Lease) -> Result<bool, RedisError> {
        lease.mark_lost();
        let released: i64 = self
            .redis
            .run(
                &RELEASE_LEASE,
                vec![self.keys.lease()],
                vec![
                    lease.token.clone().into(),
                    self.keys.release_channel().into(),
                ],
            )
            .await?;
        Ok(released == 1)
    }

    /// Keeps `lease` alive until `stop` fires or the lease is lost. Returns
    /// how it ended. Never lets the lease be valid past its renew deadline.
    pub async fn hold(
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
                    metrics.record_redis_error("lease");
                    tracing::warn!(error = %e, "lease renewal failed; retrying");
                    next_renewal = Instant::now() + retry / 4;
                }
                Err(_) => {
                    metrics.record_redis_error("lease");
                    next_renewal = Instant::now();
                }
            }
        }
    }

    /// Waits until this instance holds the lease, or `stop` fires. Listens
    /// to release notices; otherwise sleeps for the lease's remaining TTL,
    /// at most the ping interval. `on_waiting` runs whenever an attempt
    /// did not win (the caller then knows it is not the generator).
    pub async fn wait_for_lease(
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
                Ok(Attempt::Held { token, remaining }) => {
                    let (holder, epoch) = parse_token(&token);
                    if holder == self.id {
                        match self.try_adopt(&token).await {
                            Ok(Some(lease)) => return Some(lease),
                            Ok(None) => {}
                            Err(e) => tracing::debug!(error = %e, "could not adopt our own lease"),
                        }
                    }
                    state.set_holder(Some(holder), epoch);
                    if let Some(e) = epoch {
                        metrics.record_epoch(e);
                    }
                    // Wake just after the key expires; a key without TTL
                    // (set by hand) is looked at every ping interval.
                    remaining
                        .map(|r| r + Duration::from_millis(1))
                        .unwrap_or(self.cfg.ping_interval())
                        .min(self.cfg.ping_interval())
                }
                Err(e) => {
                    metrics.record_redis_error("lease");
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
    pub fn announce_acquired(&self, lease: &Lease, state: &InstanceState, metrics: &Metrics) {
        state.set_holder(Some(self.id.clone()), Some(lease.epoch));
        metrics.record_epoch(lease.epoch);
        metrics.record_transition(Transition::Acquired);
        tracing::info!(epoch = lease.epoch, "acquired the generator lease");
    }
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// Shutdown or a role change asked to stop.
    Stopped,
    /// The lease was lost, for the given reason.
    Lost(&'static str),
}

/// Release notices from other instances (a pub/sub subscription that
/// survives reconnects). Missing one only delays takeover until the TTL
/// runs out.
#[derive(Debug)]
pub struct Notices {
    rx: Option<broadcast::Receiver<fred::types::Message>>,
    client: Option<fred::clients::SubscriberClient>,
}

impl Notices {
    /// Subscribes to the release channel. Without a connection the
    /// subscription is retried in the background; until then standbys rely
    /// on PTTL-timed wake-ups.
    pub fn subscribe(redis: &Redis, keys: &Keys) -> Notices {
        let client = match redis.subscriber() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a subscriber; release notices disabled");
                return Notices {
                    rx: None,
                    client: None,
                };
            }
        };
        let rx = client.message_rx();
        drop(client.connect());
        drop(client.manage_subscriptions());
        let c = client.clone();
        let channel = keys.release_channel();
        // fred resubscribes after reconnects only to channels whose first
        // subscription succeeded, so retry that one until it does.
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                if c.wait_for_connect().await.is_ok() {
                    match c.subscribe(channel.clone()).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "subscribing to release notices failed; retrying")
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
        Notices {
            rx: Some(rx),
            client: Some(client),
        }
    }

    /// No notices at all (`MODE=consumer`).
    pub fn none() -> Notices {
        Notices {
            rx: None,
            client: None,
        }
    }

    /// Resolves at the next release notice (never, without a subscription).
    pub async fn next(&mut self) {
        let Some(rx) = &mut self.rx else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                std::future::pending::<()>().await
            }
        }
    }

    /// Closes the subscription.
    pub async fn close(self) {
        if let Some(c) = self.client {
            let _ = c.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_into_holder_and_epoch() {
        assert_eq!(parse_token("pod-1-abc 42"), ("pod-1-abc".into(), Some(42)));
        assert_eq!(parse_token("weird"), ("weird".into(), None));
    }

    #[test]
    fn lease_validity_follows_the_deadline_and_loss() {
        let l = Lease::new("x 1".into(), 1, Instant::now() + Duration::from_secs(5));
        assert!(l.is_valid());
        l.valid_until.set(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_valid());
        l.valid_until.set(Instant::now() + Duration::from_secs(5));
        assert!(l.is_valid());
        l.mark_lost();
        assert!(!l.is_valid());
    }
}
