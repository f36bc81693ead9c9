//! The fleet's gauges (queue and error list lengths, the age of the oldest
//! message, registered consumers, the lease epoch) are read in Redis by one
//! instance at a time, whatever its mode, and exported only by it: contract
//! 9, a fleet-wide chore is done once for the fleet, never once per pod.
//!
//! The instance holding the claim `{q}:sampler` (a key with a TTL of three
//! sample intervals) reads everything in one script every
//! [`SAMPLE_INTERVAL`] ([`crate::redis::scripts::SAMPLE`], which also
//! renews the claim) plus one `LLEN` of the error list (it may live in
//! another Redis Cluster slot). The others try to take the claim every
//! [`STANDBY_RETRY`] (±20 %), one command, and at once when a consumer's
//! heartbeat finds the claim free; a stopping holder releases it so another
//! takes over at its next try. The holder also does the fleet's other
//! chores ([`crate::service::chores`]): reaping and watching the queue.
//!
//! The gauges of a sample are exported for `metrics::SAMPLE_MAX_AGE`: a
//! holder that cannot read Redis stops exporting them within seconds, so a
//! dashboard shows a gap, never a frozen value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::Mode;
use crate::redis::scripts;
use crate::redis::{Keys, Operation, Redis, RedisError};
use crate::service::chores::Chores;
use crate::service::health::Health;
use crate::service::lease::LeaseToken;
use crate::service::message;
use crate::service::metrics::{FleetSample, Metrics, SAMPLE_MAX_AGE, plausible_age};
use crate::service::state::InstanceState;

/// Pause between two samples of the holder.
pub(super) const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Pause between two tries of an instance that does not hold the claim.
pub(super) const STANDBY_RETRY: Duration = Duration::from_secs(10);

/// Bytes of the oldest message read: enough for `<uuid> <RFC 3339 µs>`
/// (64 bytes) and the original's `<uuid> at <Go time>` (about 95).
const PREFIX_BYTES: u64 = 128;

/// What one try found.
#[derive(Debug)]
enum Sampled {
    /// This instance holds the claim; what it read.
    Read {
        sample: FleetSample,
        lease: Option<String>,
    },
    /// Another instance holds the claim.
    HeldByAnother,
}

/// The fleet's sampler of one instance.
#[derive(Debug)]
pub(super) struct Sampler {
    redis: Redis,
    keys: Keys,
    metrics: Metrics,
    health: Health,
    state: Arc<InstanceState>,
    chores: Chores,
    oldest: OldestAge,
    holding: bool,
}

impl Sampler {
    /// A sampler for this instance (`state.id` is the claim's holder id).
    pub(super) fn new(
        redis: Redis,
        keys: Keys,
        metrics: Metrics,
        health: Health,
        state: Arc<InstanceState>,
        chores: Chores,
    ) -> Sampler {
        Sampler {
            redis,
            keys,
            metrics,
            health,
            state,
            chores,
            oldest: OldestAge::default(),
            holding: false,
        }
    }

    /// Samples until `stop`, then gives the claim up.
    pub(super) async fn run(mut self, stop: CancellationToken) {
        loop {
            let wait = match self.sample_once().await {
                Ok(Sampled::Read { sample, lease }) => {
                    self.health.succeeded(Operation::Sample);
                    self.holding = true;
                    self.chores.set_holding(true);
                    self.publish(sample, lease.as_deref());
                    SAMPLE_INTERVAL
                }
                Ok(Sampled::HeldByAnother) => {
                    self.health.succeeded(Operation::Sample);
                    if self.holding {
                        self.step_aside();
                    }
                    STANDBY_RETRY.mul_f64(rand::random_range(0.8..1.2))
                }
                Err(e) => {
                    // A holder keeps trying at its pace; its gauges vanish
                    // once its last sample is stale.
                    self.health.failed(Operation::Sample, &e);
                    if self.holding {
                        SAMPLE_INTERVAL
                    } else {
                        STANDBY_RETRY.mul_f64(rand::random_range(0.8..1.2))
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.chores.claim_freed(), if !self.holding => {}
            }
        }
        self.chores.set_holding(false);
        if self.holding {
            self.metrics.forget_fleet_sample();
            let claim = self.keys.sampler();
            let release = scripts::release_claim(&self.redis, &claim, &self.state.id);
            let _ = tokio::time::timeout(Duration::from_secs(1), release).await;
        }
    }

    /// Another instance samples now: stop exporting at once.
    fn step_aside(&mut self) {
        self.holding = false;
        self.chores.set_holding(false);
        self.oldest = OldestAge::default();
        self.metrics.forget_fleet_sample();
        // A consumer-only instance shows an epoch only while it reads it.
        if self.state.mode == Mode::Consumer {
            self.metrics.record_epoch(0);
        }
    }

    fn publish(&mut self, sample: FleetSample, lease: Option<&str>) {
        self.metrics.record_fleet_sample(sample);
        if let Some(token) = lease.and_then(LeaseToken::parse) {
            self.metrics.record_epoch(token.epoch);
        }
    }

    /// One try: the script, and the error list's length if we hold the
    /// claim.
    async fn sample_once(&mut self) -> Result<Sampled, RedisError> {
        let read = scripts::sample(
            &self.redis,
            &self.keys,
            &self.state.id,
            SAMPLE_MAX_AGE.as_millis() as u64,
            PREFIX_BYTES,
        )
        .await?;
        let scripts::Sample::Read {
            queue_length,
            oldest,
            consumers,
            lease,
        } = read
        else {
            return Ok(Sampled::HeldByAnother);
        };
        let errors = self
            .redis
            .client()
            .llen::<u64, _>(self.keys.error_queue.as_str())
            .await;
        self.redis.observe(&errors);
        let error_queue_length = errors?;
        let oldest_age_seconds =
            self.oldest
                .age(oldest.as_deref(), OffsetDateTime::now_utc(), Instant::now());
        Ok(Sampled::Read {
            sample: FleetSample {
                queue_length,
                error_queue_length,
                oldest_age_seconds,
                consumers,
            },
            lease,
        })
    }
}

/// The age of the queue's oldest message, from the first bytes of it.
///
/// A message with a readable, plausible timestamp (either format of
/// [`message::parse`]) is as old as its timestamp says. Any other message
/// (a foreign producer's, a year-0000 stamp, one longer than the bytes
/// read) is as old as the time since this instance first saw the same bytes
/// at the consuming end: a lower bound, reset when they change.
#[derive(Debug, Default)]
struct OldestAge {
    first_seen: Option<(Vec<u8>, Instant)>,
}

impl OldestAge {
    fn age(&mut self, oldest: Option<&[u8]>, now_utc: OffsetDateTime, now: Instant) -> f64 {
        let Some(bytes) = oldest else {
            self.first_seen = None;
            return 0.0;
        };
        if let Some(age) = message::parse(bytes)
            .ok()
            .and_then(|m| plausible_age((now_utc - m.created_at).as_seconds_f64()))
        {
            self.first_seen = None;
            return age;
        }
        match &self.first_seen {
            Some((seen, at)) if seen.as_slice() == bytes => now.duration_since(*at).as_secs_f64(),
            _ => {
                self.first_seen = Some((bytes.to_vec(), now));
                0.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue14_oldest_age_from_the_timestamp_or_from_when_first_seen() {
        let mut o = OldestAge::default();
        let now_utc = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        assert_eq!(o.age(None, now_utc, t0), 0.0);
        let mut ours = Vec::new();
        let ts = (now_utc - time::Duration::seconds(90)).unix_timestamp() as u64;
        message::MessageWriter::new().write(&mut ours, [7; 16], ts, 0);
        let age = o.age(Some(&ours), now_utc, t0);
        assert!((age - 90.0).abs() < 1.0, "{age}");
        let go = b"3f2b0c3e-1111-4222-8333-444455556666 at 0000-01-01 00:00:00 +0000 UTC";
        let foreign: &[u8] = b"hello";
        for odd in [&go[..], foreign] {
            assert_eq!(o.age(Some(odd), now_utc, t0), 0.0);
            let later = o.age(Some(odd), now_utc, t0 + Duration::from_secs(30));
            assert_eq!(later, 30.0, "{}", String::from_utf8_lossy(odd));
        }
        // The tail changed: counted from now.
        assert_eq!(
            o.age(Some(b"other"), now_utc, t0 + Duration::from_secs(40)),
            0.0
        );
    }
}
