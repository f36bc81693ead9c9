//! Building the instruments, in phases: the exporter, the instruments the
//! service records into, the gauges read at each scrape, the values known
//! at start, and the zero of every series that must exist from start.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundHistogram, Counter, Gauge, Meter, MeterProvider as _, UpDownCounter,
};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use super::{HoldBack, Observed, Outcome, Transition, buckets};
use crate::redis::Operation;

/// A counter kept once for both readers: the instrument `/metrics`
/// exports and the total `/status` shows (they cannot drift apart: every
/// `add` feeds both).
#[derive(Debug)]
pub(super) struct Counted {
    counter: Counter<u64>,
    total: AtomicU64,
}

impl Counted {
    fn new(counter: Counter<u64>) -> Counted {
        Counted {
            counter,
            total: AtomicU64::new(0),
        }
    }

    /// Adds `n` under `attributes` (the total counts every label set).
    pub(super) fn add(&self, n: u64, attributes: &[KeyValue]) {
        self.counter.add(n, attributes);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Everything added so far.
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// `dsg_messages_processed_total{outcome}` and its total per outcome.
#[derive(Debug)]
pub(super) struct Processed {
    counter: Counter<u64>,
    by_outcome: [AtomicU64; Outcome::ALL.len()],
}

impl Processed {
    /// `n` messages ended with `outcome`.
    pub(super) fn add(&self, outcome: Outcome, n: u64) {
        self.counter
            .add(n, &[KeyValue::new("outcome", outcome.as_str())]);
        self.by_outcome[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Messages that ended with `outcome` so far.
    pub(super) fn total(&self, outcome: Outcome) -> u64 {
        self.by_outcome[outcome as usize].load(Ordering::Relaxed)
    }
}

/// `dsg_in_flight_messages` and its value now.
#[derive(Debug)]
pub(super) struct InFlight {
    counter: UpDownCounter<i64>,
    now: AtomicI64,
}

impl InFlight {
    /// The number of held messages changed by `delta`.
    pub(super) fn add(&self, delta: i64) {
        self.counter.add(delta, &[]);
        self.now.fetch_add(delta, Ordering::Relaxed);
    }

    /// Messages held now.
    pub(super) fn now(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }
}

/// The instruments the service records into.
#[derive(Debug)]
pub(super) struct Instruments {
    pub generated: Counted,
    pub processed: Processed,
    pub in_flight: InFlight,
    /// Bound to `{queue}`: exported with zero counts from start.
    pub processing_duration: BoundHistogram<f64>,
    /// Bound to `{queue}`: exported with zero counts from start.
    pub message_age: BoundHistogram<f64>,
    pub age_implausible: Counter<u64>,
    pub recovered: Counted,
    pub redis_errors: Counted,
    pub late_acks: Counted,
    pub is_generator: Gauge<u64>,
    pub lease_transitions: Counted,
    pub fenced_rejected: Counted,
    pub notice_resubscriptions: Counter<u64>,
    pub redis_memory_used: Gauge<u64>,
    pub redis_memory_max: Gauge<u64>,
    pub redis_eviction_safe: Gauge<u64>,
    pub generator_paused: Gauge<u64>,
    pub generator_paused_seconds: Counter<f64>,
    pub error_entries_trimmed: Counter<u64>,
    pub in_flight_bytes: UpDownCounter<i64>,
}

/// Where the exporter writes, and the provider that feeds it.
pub(super) fn exporter() -> (prometheus::Registry, SdkMeterProvider) {
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
    (registry, provider)
}

/// The meter of the service.
pub(super) fn meter(provider: &SdkMeterProvider) -> Meter {
    provider.meter("redis-dsg")
}

impl Instruments {
    /// Creates the recorded instruments; `processing_max_ms` sets the
    /// processing histogram's boundaries.
    pub(super) fn create(meter: &Meter, queue: &str, processing_max_ms: u64) -> Instruments {
        let on_queue = [KeyValue::new("queue", queue.to_string())];
        let counter = |name: &'static str, unit: &'static str, help: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(help)
                .build()
        };
        Instruments {
            generated: Counted::new(counter(
                "dsg_messages_generated",
                "{message}",
                "Messages this instance wrote to the queue as generator.",
            )),
            processed: Processed {
                counter: counter(
                    "dsg_messages_processed",
                    "{message}",
                    "Messages whose processing finished, by outcome.",
                ),
                by_outcome: Default::default(),
            },
            in_flight: InFlight {
                counter: meter
                    .i64_up_down_counter("dsg_in_flight_messages")
                    .with_unit("{message}")
                    .with_description("Messages held by this consumer: fetched and not yet acknowledged.")
                    .build(),
                now: AtomicI64::new(0),
            },
            processing_duration: meter
                .f64_histogram("dsg_processing_duration")
                .with_unit("s")
                .with_description("Time from the start of processing a message to its outcome.")
                .with_boundaries(buckets::processing(processing_max_ms))
                .build()
                .bind(&on_queue),
            message_age: meter
                .f64_histogram("dsg_message_age")
                .with_unit("s")
                .with_description("Time from a well-formed message's own timestamp to the start of its processing.")
                .with_boundaries(buckets::MESSAGE_AGE.to_vec())
                .build()
                .bind(&on_queue),
            age_implausible: counter(
                "dsg_message_age_implausible",
                "{message}",
                "Messages stamped more than 60 s ahead or more than 30 days back: not in dsg_message_age_seconds.",
            ),
            recovered: Counted::new(counter(
                "dsg_messages_recovered",
                "{message}",
                "Messages returned to the queue from consumers whose heartbeat expired.",
            )),
            redis_errors: Counted::new(counter(
                "dsg_redis_errors",
                "{error}",
                "Failed Redis operations, by operation.",
            )),
            late_acks: Counted::new(counter(
                "dsg_late_acks",
                "{message}",
                "Acknowledgements that found the message already reclaimed by a reaper.",
            )),
            is_generator: meter
                .u64_gauge("dsg_is_generator")
                .with_unit("{instance}")
                .with_description("1 while this instance holds the lease and generates, else 0.")
                .build(),
            lease_transitions: Counted::new(counter(
                "dsg_lease_transitions",
                "{transition}",
                "Lease acquisitions, releases and losses by this instance.",
            )),
            fenced_rejected: Counted::new(counter(
                "dsg_generator_fenced_writes_rejected",
                "{write}",
                "Generator writes Redis refused because the lease was no longer this instance's.",
            )),
            notice_resubscriptions: counter(
                "dsg_lease_notice_resubscriptions",
                "{subscription}",
                "Times the subscription to lease release notices was lost and made again.",
            ),
            redis_memory_used: meter
                .u64_gauge("dsg_redis_memory_used")
                .with_unit("By")
                .with_description("Redis' used_memory, as this instance last read it (INFO memory, every minute; every second while generating).")
                .build(),
            redis_memory_max: meter
                .u64_gauge("dsg_redis_memory_max")
                .with_unit("By")
                .with_description("Redis' maxmemory as this instance last read it; 0 when none is set.")
                .build(),
            redis_eviction_safe: meter
                .u64_gauge("dsg_redis_eviction_safe")
                .with_description("1 while Redis' maxmemory-policy is noeviction, 0 when Redis may evict keys (queued and in-flight messages, leases, heartbeats).")
                .build(),
            generator_paused: meter
                .u64_gauge("dsg_generator_paused")
                .with_description("1 while this instance's generator holds back for the reason (backlog: the queue holds generator.max_backlog; memory: Redis is near maxmemory), else 0.")
                .build(),
            generator_paused_seconds: meter
                .f64_counter("dsg_generator_paused")
                .with_unit("s")
                .with_description("Time this instance's generator held back, by reason.")
                .build(),
            error_entries_trimmed: counter(
                "dsg_error_entries_trimmed",
                "{entry}",
                "Oldest error entries removed to keep the error list within errors.max_entries.",
            ),
            in_flight_bytes: meter
                .i64_up_down_counter("dsg_in_flight")
                .with_unit("By")
                .with_description("Bytes of the messages this consumer holds (counted against consumer.max_in_flight_bytes).")
                .build(),
        }
    }

    /// Records the zero of every series dashboards and alerts rely on (a
    /// series appears only once recorded; the histograms are bound).
    pub(super) fn record_zeros(&self) {
        for outcome in Outcome::ALL {
            self.processed.add(outcome, 0);
        }
        for op in Operation::ALL {
            self.redis_errors
                .add(0, &[KeyValue::new("operation", op.metric_label())]);
        }
        for t in Transition::ALL {
            self.lease_transitions
                .add(0, &[KeyValue::new("transition", t.as_str())]);
        }
        for reason in ["future", "past"] {
            self.age_implausible
                .add(0, &[KeyValue::new("reason", reason)]);
        }
        self.generated.add(0, &[]);
        self.in_flight.add(0);
        self.recovered.add(0, &[]);
        self.late_acks.add(0, &[]);
        self.fenced_rejected.add(0, &[]);
        self.notice_resubscriptions.add(0, &[]);
        self.is_generator.record(0, &[]);
        for reason in HoldBack::ALL {
            let label = [KeyValue::new("reason", reason.as_str())];
            self.generator_paused.record(0, &label);
            self.generator_paused_seconds.add(0.0, &label);
        }
        self.error_entries_trimmed.add(0, &[]);
        self.in_flight_bytes.add(0, &[]);
    }
}

/// Records what is known at start and never changes: the version, the
/// start time, the configured invalid ratio.
pub(super) fn record_constants(meter: &Meter, invalid_ratio: f64) {
    meter
        .u64_gauge("dsg_build_info")
        .with_unit("{info}")
        .with_description("1, labelled with the version this instance runs.")
        .build()
        .record(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    meter
        .f64_gauge("process_start_time")
        .with_unit("s")
        .with_description("Start time of the process since the Unix epoch.")
        .build()
        .record(started.as_secs_f64(), &[]);
    meter
        .f64_gauge("dsg_processor_invalid")
        .with_unit("1")
        .with_description("The processor's configured share of invalid messages (processor.invalid_ratio): the error share of a healthy fleet.")
        .build()
        .record(invalid_ratio, &[]);
}

/// Registers the gauges read at each scrape. A callback that observes
/// nothing drops the series from the exposition (the SDK exports
/// observable gauges as delta last-values), which is how a value that
/// cannot be read disappears instead of freezing.
pub(super) fn observe(meter: &Meter, observed: &Arc<Observed>, queue: &str, error_queue: &str) {
    let _ = meter
        .u64_observable_gauge("process_resident_memory")
        .with_unit("By")
        .with_description("Resident memory of this process.")
        .with_callback(|o| o.observe(crate::service::process_stats::resident_memory_bytes(), &[]))
        .build();
    let _ = meter
        .f64_observable_counter("process_cpu")
        .with_unit("s")
        .with_description("CPU time used by this process, user and system.")
        .with_callback(|o| o.observe(crate::service::process_stats::cpu_seconds(), &[]))
        .build();
    let o = observed.clone();
    let _ = meter
        .u64_observable_gauge("dsg_redis_up")
        .with_description(
            "1 while Redis answers this instance (connected, last round trip answered), else 0.",
        )
        .with_callback(move |g| g.observe(u64::from(o.health().is_some_and(|h| h.redis_up())), &[]))
        .build();
    let o = observed.clone();
    let _ = meter
        .u64_observable_gauge("dsg_ready")
        .with_description("1 while /readyz answers 200, else 0.")
        .with_callback(move |g| g.observe(u64::from(o.health().is_some_and(|h| h.ready())), &[]))
        .build();
    let o = observed.clone();
    let _ = meter
        .u64_observable_gauge("dsg_lease_epoch")
        .with_unit("{epoch}")
        .with_description(
            "Fencing epoch of the lease this instance last held or saw (absent until it saw one).",
        )
        .with_callback(move |g| match o.lease_epoch.load(Ordering::Relaxed) {
            0 => {}
            epoch => g.observe(epoch, &[]),
        })
        .build();
    observe_fleet(meter, observed, queue, error_queue);
}

/// The fleet's gauges, observed only by the instance whose sample is fresh
/// (one at a time: `service::sampler`).
fn observe_fleet(meter: &Meter, observed: &Arc<Observed>, queue: &str, error_queue: &str) {
    let (o, q, e) = (observed.clone(), queue.to_string(), error_queue.to_string());
    let _ = meter
        .u64_observable_gauge("dsg_queue_length")
        .with_unit("{message}")
        .with_description("Length of the message list and the error list (one instance of the fleet reports them).")
        .with_callback(move |g| {
            if let Some(s) = o.fresh_sample() {
                g.observe(s.queue_length, &[KeyValue::new("queue", q.clone())]);
                g.observe(s.error_queue_length, &[KeyValue::new("queue", e.clone())]);
            }
        })
        .build();
    let (o, q) = (observed.clone(), queue.to_string());
    let _ = meter
        .f64_observable_gauge("dsg_queue_oldest_message_age")
        .with_unit("s")
        .with_description("How long the oldest message in the queue has waited, from its timestamp; 0 when empty (one instance reports it).")
        .with_callback(move |g| {
            if let Some(s) = o.fresh_sample() {
                g.observe(s.oldest_age_seconds, &[KeyValue::new("queue", q.clone())]);
            }
        })
        .build();
    let o = observed.clone();
    let _ = meter
        .u64_observable_gauge("dsg_consumers_live")
        .with_unit("{consumer}")
        .with_description("Consumers registered on the queue (one instance reports it).")
        .with_callback(move |g| {
            if let Some(s) = o.fresh_sample() {
                g.observe(s.consumers, &[]);
            }
        })
        .build();
}
