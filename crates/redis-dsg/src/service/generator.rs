//! The generator role: writes `<uuid> <timestamp>` messages to the queue
//! while this instance holds the lease.
//!
//! Every write goes through [`FencedWriter`], the one write path, which asks
//! Redis to push only while the lease still holds this holder's token. At
//! `interval_ms = 0` it writes batches, several in flight at once, optionally
//! paced to a target rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::types::Value;
use std::sync::{Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

use crate::config::GeneratorConfig;
use crate::redis::Keys;
use crate::redis::Operation;
use crate::redis::scripts::FENCED_PUSH;
use crate::redis::{Redis, RedisError};
use crate::service::backoff::Backoff;
use crate::service::health::Health;
use crate::service::lease::Lease;
use crate::service::message::MessageWriter;
use crate::service::metrics::Metrics;

/// What a fenced write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Written; the queue's length afterwards.
    Written(u64),
    /// Refused: the lease is not ours any more. Nothing was written.
    Fenced,
}

/// The single write path of the generator.
#[derive(Debug, Clone)]
pub(super) struct FencedWriter {
    redis: Redis,
    keys: Keys,
}

impl FencedWriter {
    /// A writer to `keys.queue`, fenced by `keys.lease()`.
    pub(super) fn new(redis: Redis, keys: Keys) -> FencedWriter {
        FencedWriter { redis, keys }
    }

    /// Pushes `messages` (in order, with LPUSH) if `lease` is still ours.
    pub(super) async fn push(
        &self,
        lease: &Lease,
        messages: Vec<Bytes>,
    ) -> Result<Pushed, RedisError> {
        let mut args = Vec::with_capacity(messages.len() + 1);
        args.push(Value::from(lease.wire()));
        args.extend(messages.into_iter().map(Value::Bytes));
        let len: i64 = self
            .redis
            .run(
                &FENCED_PUSH,
                vec![self.keys.lease(), self.keys.queue.clone(), self.keys.bell()],
                args,
            )
            .await?;
        Ok(match u64::try_from(len) {
            Ok(len) => Pushed::Written(len),
            Err(_) => Pushed::Fenced,
        })
    }
}

/// How a generator run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GeneratorEnd {
    /// Asked to stop.
    Stopped,
    /// The lease's renew deadline passed or a write was fenced off.
    LeaseLost,
}

/// The generator loop.
#[derive(Debug, Clone)]
pub(super) struct Generator {
    writer: FencedWriter,
    cfg: GeneratorConfig,
    metrics: Metrics,
    health: Health,
}

impl Generator {
    /// A generator writing through `writer`; failed writes are reported to
    /// `health`.
    pub(super) fn new(
        writer: FencedWriter,
        cfg: GeneratorConfig,
        metrics: Metrics,
        health: Health,
    ) -> Generator {
        Generator {
            writer,
            health,
            cfg,
            metrics,
        }
    }

    /// Generates until `stop` fires or `lease` is lost. When it returns, no
    /// write of this run is still in flight.
    pub(super) async fn run(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        if self.cfg.interval_ms == 0 {
            self.run_batched(lease, stop).await
        } else {
            self.run_ticking(lease, stop).await
        }
    }

    async fn run_ticking(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms));
        // After a slow write, carry on at the interval instead of bursting.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writer = MessageWriter::new();
        let mut backoff = Backoff::for_redis();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return GeneratorEnd::Stopped,
                _ = lease.lost() => return GeneratorEnd::LeaseLost,
                _ = ticker.tick() => {}
            }
            match self.write_batch(lease, &mut writer, 1).await {
                Ok(true) => backoff.reset(),
                Ok(false) => return GeneratorEnd::LeaseLost,
                Err(e) => {
                    if backoff.fail_and_wait(&e, stop).await {
                        return GeneratorEnd::Stopped;
                    }
                }
            }
        }
    }

    async fn run_batched(&self, lease: &Lease, stop: &CancellationToken) -> GeneratorEnd {
        let pacer = Arc::new(Pacer::new(self.cfg.rate));
        let batch = batch_for_rate(self.cfg.batch_size, self.cfg.rate);
        let mut tasks = tokio::task::JoinSet::new();
        // The workers share a token that the first to see the lease lost
        // cancels, so every worker stops.
        let halt = stop.child_token();
        let watcher = {
            let (lease, halt) = (lease.clone(), halt.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lease.lost() => halt.cancel(),
                    _ = halt.cancelled() => {}
                }
            })
        };
        for _ in 0..self.cfg.max_in_flight_batches {
            let this = self.clone();
            let lease = lease.clone();
            let halt = halt.clone();
            let pacer = pacer.clone();
            tasks.spawn(async move {
                let mut writer = MessageWriter::new();
                let mut backoff = Backoff::for_redis();
                loop {
                    if halt.is_cancelled() {
                        return GeneratorEnd::Stopped;
                    }
                    if let Some(at) = pacer.reserve(batch) {
                        tokio::select! {
                            _ = halt.cancelled() => return GeneratorEnd::Stopped,
                            _ = tokio::time::sleep_until(at.into()) => {}
                        }
                    }
                    match this.write_batch(&lease, &mut writer, batch).await {
                        Ok(true) => backoff.reset(),
                        Ok(false) => {
                            halt.cancel();
                            return GeneratorEnd::LeaseLost;
                        }
                        Err(e) => {
                            if backoff.fail_and_wait(&e, &halt).await {
                                return GeneratorEnd::Stopped;
                            }
                        }
                    }
                }
            });
        }
        let mut end = GeneratorEnd::Stopped;
        while let Some(result) = tasks.join_next().await {
            if let Ok(GeneratorEnd::LeaseLost) = result {
                end = GeneratorEnd::LeaseLost;
            }
        }
        halt.cancel();
        let _ = watcher.await;
        if lease.is_valid() || stop.is_cancelled() {
            end
        } else {
            GeneratorEnd::LeaseLost
        }
    }

    /// Writes one batch of `n` new messages. `Ok(false)`: the lease is gone
    /// (locally expired or fenced off by Redis); `Err`: Redis failed
    /// (already reported to health).
    async fn write_batch(
        &self,
        lease: &Lease,
        writer: &mut MessageWriter,
        n: usize,
    ) -> Result<bool, RedisError> {
        if !lease.is_valid() {
            lease.mark_lost();
            return Ok(false);
        }
        match self.writer.push(lease, writer.batch(n)).await {
            Ok(Pushed::Written(_)) => {
                self.health.succeeded(Operation::Push);
                self.metrics.record_generated(n as u64);
                Ok(true)
            }
            Ok(Pushed::Fenced) => {
                self.metrics.record_fenced_rejection();
                lease.mark_lost();
                tracing::warn!(
                    epoch = lease.epoch,
                    "write fenced off: the lease is no longer ours"
                );
                Ok(false)
            }
            Err(e) => {
                self.health.failed(Operation::Push, &e);
                Err(e)
            }
        }
    }
}

/// Messages per write: the configured batch, but at a target rate no more
/// than about one millisecond's worth, so a paced stream arrives smoothly
/// rather than in bursts.
fn batch_for_rate(batch_size: usize, rate: f64) -> usize {
    if rate > 0.0 {
        ((rate / 1000.0).ceil() as usize).clamp(1, batch_size)
    } else {
        batch_size
    }
}

/// Spreads batches evenly over time to hold a target rate.
#[derive(Debug)]
struct Pacer {
    seconds_per_message: Option<f64>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            seconds_per_message: (rate > 0.0).then(|| 1.0 / rate),
            next: Mutex::new(None),
        }
    }

    /// When the caller may write `n` messages (`None`: at once, unpaced).
    fn reserve(&self, n: usize) -> Option<Instant> {
        let per = self.seconds_per_message?;
        // Held for a few instructions, never across an await; a poisoned
        // lock still holds a whole instant (the same policy as every lock of
        // the service).
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Do not let an idle period bank a burst.
        let at = next.filter(|&t| t > now).unwrap_or(now);
        *next = Some(at + Duration::from_secs_f64(per * n as f64));
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_batches_evenly() {
        let p = Pacer::new(1000.0);
        let first = p.reserve(100).expect("paced");
        let second = p.reserve(100).expect("paced");
        let gap = second - first;
        assert!(
            gap >= Duration::from_millis(99) && gap <= Duration::from_millis(101),
            "{gap:?}"
        );
        assert!(Pacer::new(0.0).reserve(100).is_none());
    }

    #[test]
    fn paced_batches_hold_about_a_millisecond_of_messages() {
        assert_eq!(batch_for_rate(100, 0.0), 100);
        assert_eq!(batch_for_rate(100, 10_000.0), 10);
        assert_eq!(batch_for_rate(100, 50.0), 1);
        assert_eq!(batch_for_rate(100, 5_000_000.0), 100);
    }
}
