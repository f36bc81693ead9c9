//! Metrics: the instruments, named for intent, exported in Prometheus text
//! format through opentelemetry-prometheus (kept behind this module so the
//! exporter can be swapped for OTLP).
//!
//! Every series that dashboards and alerts rely on is recorded once at start
//! (a metric appears only after its first recording). The same events are
//! also counted in plain atomics for `/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::redis::Operation;
use crate::service::status::Counts;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _, UpDownCounter};
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
    fn as_str(self) -> &'static str {
        match self {
            Transition::Acquired => "acquired",
            Transition::Released => "released",
            Transition::Lost => "lost",
        }
    }
}

/// Plain counters mirrored from the instruments, for `/status` and the demo.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Messages written by this instance's generator.
    pub generated: AtomicU64,
    /// Messages processed `ok`.
    pub processed_ok: AtomicU64,
    /// Messages routed to the error list as invalid.
    pub invalid: AtomicU64,
    /// Messages routed to the error list as malformed.
    pub malformed: AtomicU64,
    /// Messages routed to the error list as oversized.
    pub oversized: AtomicU64,
    /// Messages returned to the queue from dead consumers by this instance.
    pub recovered: AtomicU64,
    /// Acknowledgements that found the message already reclaimed.
    pub late_acks: AtomicU64,
    /// Fenced writes Redis refused.
    pub fenced_writes_rejected: AtomicU64,
    /// Lease acquisitions, releases and losses.
    pub lease_transitions: AtomicU64,
    /// Failed Redis operations.
    pub redis_errors: AtomicU64,
    /// Messages currently held (fetched, not yet acknowledged).
    pub in_flight: AtomicI64,
}

impl Counters {
    /// The counters now, for `/status`.
    pub(super) fn snapshot(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            generated: load(&self.generated),
            processed_ok: load(&self.processed_ok),
            invalid: load(&self.invalid),
            malformed: load(&self.malformed),
            oversized: load(&self.oversized),
            recovered: load(&self.recovered),
            late_acks: load(&self.late_acks),
            fenced_writes_rejected: load(&self.fenced_writes_rejected),
            lease_transitions: load(&self.lease_transitions),
            redis_errors: load(&self.redis_errors),
        }
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
    counters: Counters,
    generated: Counter<u64>,
    processed: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    processing_duration: Histogram<f64>,
    message_age: Histogram<f64>,
    queue_length: Gauge<u64>,
    recovered: Counter<u64>,
    redis_errors: Counter<u64>,
    late_acks: Counter<u64>,
    is_generator: Gauge<u64>,
    lease_epoch: Gauge<u64>,
    lease_transitions: Counter<u64>,
    fenced_rejected: Counter<u64>,
}

impl Metrics {
    /// Creates every instrument and records the initial zero of each series.
    pub(super) fn new(queue: &str, error_queue: &str) -> Metrics {
        let registry = prometheus::Registry::new();
        // Building the exporter only fails when the registry rejects a
        // collector; a fresh registry never does.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh Prometheus registry accepts the exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("redis-dsg");

        // Fine below 10 ms, where message age lives when consumers keep up
        // (a p99 target of 5 ms needs boundaries on both sides of it).
        let seconds_buckets = vec![
            0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let inner = Inner {
            generated: meter
                .u64_counter("dsg_messages_generated")
                .with_unit("{message}")
                .with_description("Messages this instance wrote to the queue as generator.")
                .build(),
            processed: meter
                .u64_counter("dsg_messages_processed")
                .with_unit("{message}")
                .with_description("Messages whose processing finished, by outcome.")
                .build(),
            in_flight: meter
                .i64_up_down_counter("dsg_in_flight_messages")
                .with_unit("{message}")
                .with_description("Messages held by this consumer: fetched and not yet acknowledged.")
                .build(),
            processing_duration: meter
                .f64_histogram("dsg_processing_duration")
                .with_unit("s")
                .with_description("Time from the start of processing a message to its outcome.")
                .with_boundaries(seconds_buckets.clone())
                .build(),
            message_age: meter
                .f64_histogram("dsg_message_age")
                .with_unit("s")
                .with_description("Time from a well-formed message's own timestamp to the start of its processing.")
                .with_boundaries(seconds_buckets)
                .build(),
            queue_length: meter
                .u64_gauge("dsg_queue_length")
                .with_unit("{message}")
                .with_description("Length of the message list and the error list, as last read.")
                .build(),
            recovered: meter
                .u64_counter("dsg_messages_recovered")
                .with_unit("{message}")
                .with_description("Messages returned to the queue from consumers whose heartbeat expired.")
                .build(),
            redis_errors: meter
                .u64_counter("dsg_redis_errors")
                .with_unit("{error}")
                .with_description("Failed Redis operations, by operation.")
                .build(),
            late_acks: meter
                .u64_counter("dsg_late_acks")
                .with_unit("{message}")
                .with_description("Acknowledgements that found the message already reclaimed by a reaper.")
                .build(),
            is_generator: meter
                .u64_gauge("dsg_is_generator")
                .with_unit("{instance}")
                .with_description("1 while this instance holds the lease and generates, else 0.")
                .build(),
            lease_epoch: meter
                .u64_gauge("dsg_lease_epoch")
                .with_unit("{epoch}")
                .with_description("Fencing epoch of the lease this instance last held or saw.")
                .build(),
            lease_transitions: meter
                .u64_counter("dsg_lease_transitions")
                .with_unit("{transition}")
                .with_description("Lease acquisitions, releases and losses by this instance.")
                .build(),
            fenced_rejected: meter
                .u64_counter("dsg_generator_fenced_writes_rejected")
                .with_unit("{write}")
                .with_description("Generator writes Redis refused because the lease was no longer this instance's.")
                .build(),
            registry,
            provider,
            counters: Counters::default(),
        };

        let _process_rss = meter
            .u64_observable_gauge("process_resident_memory")
            .with_unit("By")
            .with_description("Resident memory of this process.")
            .with_callback(|o| {
                o.observe(crate::service::process_stats::resident_memory_bytes(), &[])
            })
            .build();
        let _process_cpu = meter
            .f64_observable_counter("process_cpu")
            .with_unit("s")
            .with_description("CPU time used by this process, user and system.")
            .with_callback(|o| o.observe(crate::service::process_stats::cpu_seconds(), &[]))
            .build();

        for outcome in Outcome::ALL {
            inner
                .processed
                .add(0, &[KeyValue::new("outcome", outcome.as_str())]);
        }
        for op in Operation::ALL {
            inner
                .redis_errors
                .add(0, &[KeyValue::new("operation", op.metric_label())]);
        }
        for t in [Transition::Acquired, Transition::Released, Transition::Lost] {
            inner
                .lease_transitions
                .add(0, &[KeyValue::new("transition", t.as_str())]);
        }
        inner.generated.add(0, &[]);
        inner.in_flight.add(0, &[]);
        inner.recovered.add(0, &[]);
        inner.late_acks.add(0, &[]);
        inner.fenced_rejected.add(0, &[]);
        inner.is_generator.record(0, &[]);
        inner.lease_epoch.record(0, &[]);
        inner
            .queue_length
            .record(0, &[KeyValue::new("queue", queue.to_string())]);
        inner
            .queue_length
            .record(0, &[KeyValue::new("queue", error_queue.to_string())]);
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The plain counters (for `/status`).
    pub(super) fn counters(&self) -> &Counters {
        &self.inner.counters
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

    /// `n` messages were written by the generator.
    pub(super) fn record_generated(&self, n: u64) {
        self.inner.generated.add(n, &[]);
        self.inner
            .counters
            .generated
            .fetch_add(n, Ordering::Relaxed);
    }

    /// `n` messages' processing ended with `outcome` and was acknowledged.
    pub(super) fn record_processed(&self, outcome: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        self.inner
            .processed
            .add(n, &[KeyValue::new("outcome", outcome.as_str())]);
        let c = &self.inner.counters;
        match outcome {
            Outcome::Ok => &c.processed_ok,
            Outcome::Invalid => &c.invalid,
            Outcome::Malformed => &c.malformed,
            Outcome::Oversized => &c.oversized,
        }
        .fetch_add(n, Ordering::Relaxed);
    }

    /// How long processing one message took.
    pub(super) fn record_processing_time(&self, d: Duration) {
        self.inner.processing_duration.record(d.as_secs_f64(), &[]);
    }

    /// How old a message was when its processing started.
    pub(super) fn record_message_age(&self, seconds: f64) {
        self.inner.message_age.record(seconds.max(0.0), &[]);
    }

    /// The number of held messages changed by `delta`.
    pub(super) fn add_in_flight(&self, delta: i64) {
        self.inner.in_flight.add(delta, &[]);
        self.inner
            .counters
            .in_flight
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// A list's length was read.
    pub(super) fn record_queue_length(&self, queue: &str, length: u64) {
        self.inner
            .queue_length
            .record(length, &[KeyValue::new("queue", queue.to_string())]);
    }

    /// `n` messages of dead consumers went back to the queue.
    pub(super) fn record_recovered(&self, n: u64) {
        self.inner.recovered.add(n, &[]);
        self.inner
            .counters
            .recovered
            .fetch_add(n, Ordering::Relaxed);
    }

    /// `n` acknowledgements found their message already reclaimed.
    pub(super) fn record_late_acks(&self, n: u64) {
        self.inner.late_acks.add(n, &[]);
        self.inner
            .counters
            .late_acks
            .fetch_add(n, Ordering::Relaxed);
    }

    /// A Redis operation failed.
    pub(super) fn record_redis_error(&self, operation: Operation) {
        self.inner
            .redis_errors
            .add(1, &[KeyValue::new("operation", operation.metric_label())]);
        self.inner
            .counters
            .redis_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// This instance started or stopped generating.
    pub(super) fn record_generating(&self, generating: bool) {
        self.inner.is_generator.record(u64::from(generating), &[]);
    }

    /// The lease epoch this instance holds or last saw.
    pub(super) fn record_epoch(&self, epoch: u64) {
        self.inner.lease_epoch.record(epoch, &[]);
    }

    /// This instance's hold on the lease changed.
    pub(super) fn record_transition(&self, t: Transition) {
        self.inner
            .lease_transitions
            .add(1, &[KeyValue::new("transition", t.as_str())]);
        self.inner
            .counters
            .lease_transitions
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Redis refused a fenced write.
    pub(super) fn record_fenced_rejection(&self) {
        self.inner.fenced_rejected.add(1, &[]);
        self.inner
            .counters
            .fenced_writes_rejected
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_documented_name_once_suffixed() {
        let m = Metrics::new("a", "errors");
        m.record_processing_time(Duration::from_millis(3));
        m.record_message_age(0.002);
        let text = m.render().expect("the exposition renders");
        for name in [
            "dsg_messages_generated_total",
            "dsg_messages_processed_total{outcome=\"ok\"}",
            "dsg_messages_processed_total{outcome=\"malformed\"}",
            "dsg_in_flight_messages",
            "dsg_processing_duration_seconds_bucket",
            "dsg_message_age_seconds_bucket",
            "dsg_queue_length{queue=\"a\"}",
            "dsg_queue_length{queue=\"errors\"}",
            "dsg_messages_recovered_total",
            "dsg_redis_errors_total",
            "dsg_is_generator",
            "dsg_lease_epoch",
            "dsg_lease_transitions_total",
            "dsg_generator_fenced_writes_rejected_total",
            "dsg_late_acks_total",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "# HELP dsg_queue_length",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            !text.contains("_total_total") && !text.contains("_seconds_seconds"),
            "{text}"
        );
        assert!(!text.contains("otel_scope"), "{text}");
    }
}
