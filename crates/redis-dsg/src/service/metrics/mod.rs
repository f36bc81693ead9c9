//! Metrics: the instruments, named for intent, exported in Prometheus text
//! format through opentelemetry-prometheus (kept behind this module so the
//! exporter can be swapped for OTLP).
//!
//! Every series that dashboards and alerts rely on exists from start (a
//! metric appears only after its first recording: zeros are recorded, the
//! histograms are bound to their label set), except the fleet's gauges
//! (queue lengths, oldest message age, consumers), which only the instance
//! holding a fresh sample exports (`service::sampler`), and
//! `dsg_lease_epoch`, absent until an epoch was seen. The counts `/status`
//! shows are read from the same instruments ([`instruments::Counted`]):
//! one source per counter.

mod buckets;
mod instruments;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ProcessorConfig;
use crate::redis::Operation;
use crate::service::status::Counts;
use buckets::Age;
use instruments::Instruments;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::TextEncoder;

/// How a message's processing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Processed; gone from Redis.
    Ok,
    /// Rejected by the processor; in the error list.
    Invalid,
    /// Not `<uuid> <timestamp>`; in the error list.
    Malformed,
    /// Larger than the limit; in the error list, unprocessed.
    Oversized,
}

impl Outcome {
    /// Every outcome, for zero-initialising series.
    pub(super) const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Malformed,
        Outcome::Oversized,
    ];

    /// The `outcome` label value.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Malformed => "malformed",
            Outcome::Oversized => "oversized",
        }
    }
}

/// Why the generator holds back (the `reason` label of
/// `dsg_generator_paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldBack {
    /// The queue holds `generator.max_backlog` messages.
    Backlog,
    /// Redis' memory is at `generator.max_redis_memory_ratio` of
    /// `maxmemory`, or Redis refused the push for lack of memory.
    Memory,
}

impl HoldBack {
    /// Every reason, for zero-initialising series.
    pub(super) const ALL: [HoldBack; 2] = [HoldBack::Backlog, HoldBack::Memory];

    /// The `reason` label value.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            HoldBack::Backlog => "backlog",
            HoldBack::Memory => "memory",
        }
    }
}

/// What the role of this instance changed by, for `dsg_lease_transitions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    /// This instance took the lease.
    Acquired,
    /// It gave the lease up on purpose.
    Released,
    /// It lost the lease (renewal failed, fenced off).
    Lost,
}

impl Transition {
    /// Every transition, for zero-initialising series.
    const ALL: [Transition; 3] = [Transition::Acquired, Transition::Released, Transition::Lost];

    fn as_str(self) -> &'static str {
        match self {
            Transition::Acquired => "acquired",
            Transition::Released => "released",
            Transition::Lost => "lost",
        }
    }
}

/// What the health gauges read at each scrape (`service::health`).
pub(super) trait HealthProbe: Debug + Send + Sync {
    /// Whether Redis answers this instance.
    fn redis_up(&self) -> bool;
    /// Whether `/readyz` would answer 200.
    fn ready(&self) -> bool;
}

/// The fleet's gauges, as one sample read in Redis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FleetSample {
    /// Length of the queue.
    pub queue_length: u64,
    /// Length of the error list.
    pub error_queue_length: u64,
    /// How long the oldest message of the queue has waited; 0 when empty.
    pub oldest_age_seconds: f64,
    /// Consumers registered on the queue.
    pub consumers: u64,
}

/// A sample older than this is not exported: three sample intervals, so
/// one late sample does not blink the series, a stopped sampler (Redis
/// unreachable, another instance took over) drops them within seconds.
pub(super) const SAMPLE_MAX_AGE: Duration = Duration::from_secs(6);

/// `seconds` (now − a message's timestamp) clamped at 0, or `None` outside
/// the plausible window (more than a minute ahead, more than 30 days back).
pub(super) fn plausible_age(seconds: f64) -> Option<f64> {
    match buckets::classify_age(seconds) {
        Age::Observed(s) => Some(s),
        Age::Future | Age::Past => None,
    }
}

/// Values the observable gauges read at each scrape.
#[derive(Debug, Default)]
pub(super) struct Observed {
    health: OnceLock<Arc<dyn HealthProbe>>,
    /// 0 until an epoch was seen.
    lease_epoch: AtomicU64,
    sample: Mutex<Option<(Instant, FleetSample)>>,
}

impl Observed {
    fn health(&self) -> Option<&Arc<dyn HealthProbe>> {
        self.health.get()
    }

    /// The last sample, while it is fresh.
    fn fresh_sample(&self) -> Option<FleetSample> {
        let sample = *self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        sample
            .filter(|(at, _)| at.elapsed() < SAMPLE_MAX_AGE)
            .map(|(_, s)| s)
    }
}

/// The service's instruments and their exporter.
#[derive(Debug, Clone)]
pub(super) struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    instruments: Instruments,
    observed: Arc<Observed>,
}

impl Metrics {
    /// Creates every instrument for the lists `queue` and `error_queue` and
    /// the `processor`'s settings, and records what must exist from start.
    pub(super) fn new(queue: &str, error_queue: &str, processor: &ProcessorConfig) -> Metrics {
        let (registry, provider) = instruments::exporter();
        let meter = instruments::meter(&provider);
        let instruments = Instruments::create(&meter, queue, processor.max_ms);
        instruments.record_zeros();
        instruments::record_constants(&meter, processor.invalid_ratio);
        let observed = Arc::new(Observed::default());
        instruments::observe(&meter, &observed, queue, error_queue);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                provider,
                instruments,
                observed,
            }),
        }
    }

    /// Lets `dsg_redis_up` and `dsg_ready` read `health` (both read 0
    /// before). Only the first call counts.
    pub(super) fn attach_health(&self, health: Arc<dyn HealthProbe>) {
        let _ = self.inner.observed.health.set(health);
    }

    /// The counts `/status` shows, read from the instruments themselves.
    pub(super) fn counts(&self) -> Counts {
        let i = self.i();
        Counts {
            generated: i.generated.total(),
            processed_ok: i.processed.total(Outcome::Ok),
            invalid: i.processed.total(Outcome::Invalid),
            malformed: i.processed.total(Outcome::Malformed),
            oversized: i.processed.total(Outcome::Oversized),
            recovered: i.recovered.total(),
            late_acks: i.late_acks.total(),
            fenced_writes_rejected: i.fenced_rejected.total(),
            lease_transitions: i.lease_transitions.total(),
            redis_errors: i.redis_errors.total(),
        }
    }

    /// Messages this consumer holds now.
    pub(super) fn in_flight(&self) -> i64 {
        self.i().in_flight.now()
    }

    /// The exposition in Prometheus text format.
    pub(super) fn render(&self) -> Result<String, String> {
        let families = self.inner.registry.gather();
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&families, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn i(&self) -> &Instruments {
        &self.inner.instruments
    }

    /// `n` messages were written by the generator.
    pub(super) fn record_generated(&self, n: u64) {
        self.i().generated.add(n, &[]);
    }

    /// `n` messages' processing ended with `outcome` and was acknowledged.
    pub(super) fn record_processed(&self, outcome: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        self.i().processed.add(outcome, n);
    }

    /// How long processing one message took.
    pub(super) fn record_processing_time(&self, d: Duration) {
        self.i().processing_duration.record(d.as_secs_f64());
    }

    /// How old a message was when its processing started (now − its
    /// timestamp, in seconds). Ages outside the plausible window (more than
    /// a minute ahead, more than 30 days back) are counted apart.
    pub(super) fn record_message_age(&self, seconds: f64) {
        match buckets::classify_age(seconds) {
            Age::Observed(s) => self.i().message_age.record(s),
            Age::Future => self
                .i()
                .age_implausible
                .add(1, &[KeyValue::new("reason", "future")]),
            Age::Past => self
                .i()
                .age_implausible
                .add(1, &[KeyValue::new("reason", "past")]),
        }
    }

    /// The number of held messages changed by `delta`.
    pub(super) fn add_in_flight(&self, delta: i64) {
        self.i().in_flight.add(delta);
    }

    /// A fresh sample of the fleet's gauges; exported for
    /// [`SAMPLE_MAX_AGE`] unless another one follows.
    pub(super) fn record_fleet_sample(&self, sample: FleetSample) {
        *self
            .inner
            .observed
            .sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), sample));
    }

    /// The fleet sample this instance exports now, if any.
    pub(super) fn fresh_fleet_sample(&self) -> Option<FleetSample> {
        self.inner.observed.fresh_sample()
    }

    /// Stops exporting the fleet's gauges at once (this instance no longer
    /// samples them).
    pub(super) fn forget_fleet_sample(&self) {
        *self
            .inner
            .observed
            .sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// `n` messages of dead consumers went back to the queue.
    pub(super) fn record_recovered(&self, n: u64) {
        self.i().recovered.add(n, &[]);
    }

    /// `n` acknowledgements found their message already reclaimed.
    pub(super) fn record_late_acks(&self, n: u64) {
        self.i().late_acks.add(n, &[]);
    }

    /// A Redis operation failed (see `service::health`, which calls this).
    pub(super) fn record_redis_error(&self, operation: Operation) {
        self.i()
            .redis_errors
            .add(1, &[KeyValue::new("operation", operation.metric_label())]);
    }

    /// This instance started or stopped generating.
    pub(super) fn record_generating(&self, generating: bool) {
        self.i().is_generator.record(u64::from(generating), &[]);
    }

    /// The lease epoch this instance holds or last saw.
    pub(super) fn record_epoch(&self, epoch: u64) {
        self.inner
            .observed
            .lease_epoch
            .store(epoch, Ordering::Relaxed);
    }

    /// This instance's hold on the lease changed.
    pub(super) fn record_transition(&self, t: Transition) {
        self.i()
            .lease_transitions
            .add(1, &[KeyValue::new("transition", t.as_str())]);
    }

    /// Redis refused a fenced write.
    pub(super) fn record_fenced_rejection(&self) {
        self.i().fenced_rejected.add(1, &[]);
    }

    /// What `INFO memory` said: `used_memory`, `maxmemory` (0: none), and
    /// whether the policy is `noeviction`.
    pub(super) fn record_redis_memory(&self, used_bytes: u64, max_bytes: u64, eviction_safe: bool) {
        self.i().redis_memory_used.record(used_bytes, &[]);
        self.i().redis_memory_max.record(max_bytes, &[]);
        self.i()
            .redis_eviction_safe
            .record(u64::from(eviction_safe), &[]);
    }

    /// The generator started (`true`) or stopped holding back for `reason`.
    pub(super) fn record_held_back(&self, reason: HoldBack, held: bool) {
        self.i()
            .generator_paused
            .record(u64::from(held), &[KeyValue::new("reason", reason.as_str())]);
    }

    /// The generator held back `seconds` more for `reason`.
    pub(super) fn add_held_back_seconds(&self, reason: HoldBack, seconds: f64) {
        self.i()
            .generator_paused_seconds
            .add(seconds, &[KeyValue::new("reason", reason.as_str())]);
    }

    /// `n` error entries were trimmed by `errors.max_entries`.
    pub(super) fn record_error_entries_trimmed(&self, n: u64) {
        self.i().error_entries_trimmed.add(n, &[]);
    }

    /// The bytes of held messages changed by `delta`.
    pub(super) fn add_in_flight_bytes(&self, delta: i64) {
        self.i().in_flight_bytes.add(delta, &[]);
    }

    /// The subscription to lease release notices was lost and made again.
    pub(super) fn record_notice_resubscription(&self) {
        self.i().notice_resubscriptions.add(1, &[]);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests;
