//! Unit tests of the exposition: names, series present from start, stale
//! fleet gauges, implausible ages.

use super::*;

fn processor() -> ProcessorConfig {
    crate::config::Config::default().processor
}

#[derive(Debug)]
struct Up;
impl HealthProbe for Up {
    fn redis_up(&self) -> bool {
        true
    }
    fn ready(&self) -> bool {
        true
    }
}

#[test]
fn issue14_every_series_exists_from_start_with_suffixed_names() {
    let m = Metrics::new("a", "errors", &processor());
    let text = m.render().expect("the exposition renders");
    for name in [
        "dsg_messages_generated_total 0",
        "dsg_messages_processed_total{outcome=\"ok\"} 0",
        "dsg_messages_processed_total{outcome=\"malformed\"} 0",
        "dsg_in_flight_messages 0",
        // Histograms with zero counts before any message.
        "dsg_processing_duration_seconds_bucket{queue=\"a\",le=\"0.999\"} 0",
        "dsg_processing_duration_seconds_count{queue=\"a\"} 0",
        "dsg_message_age_seconds_bucket{queue=\"a\",le=\"86400\"} 0",
        "dsg_message_age_seconds_count{queue=\"a\"} 0",
        "dsg_message_age_implausible_total{reason=\"future\"} 0",
        "dsg_message_age_implausible_total{reason=\"past\"} 0",
        "dsg_messages_recovered_total 0",
        "dsg_redis_errors_total{operation=\"sample\"} 0",
        "dsg_is_generator 0",
        "dsg_lease_transitions_total{transition=\"lost\"} 0",
        "dsg_generator_fenced_writes_rejected_total 0",
        "dsg_late_acks_total 0",
        "dsg_lease_notice_resubscriptions_total 0",
        "dsg_generator_paused{reason=\"backlog\"} 0",
        "dsg_generator_paused{reason=\"memory\"} 0",
        "dsg_generator_paused_seconds_total{reason=\"backlog\"} 0",
        "dsg_error_entries_trimmed_total 0",
        "dsg_in_flight_bytes 0",
        "dsg_build_info{version=",
        "process_start_time_seconds ",
        "dsg_processor_invalid_ratio 0.05",
        // 0 until health is attached (and Redis answers).
        "dsg_redis_up 0",
        "dsg_ready 0",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(
        !text.contains("_total_total") && !text.contains("_seconds_seconds"),
        "{text}"
    );
    assert!(!text.contains("otel_scope"), "{text}");
    // Absent until seen or sampled, never a made-up zero.
    for absent in [
        "dsg_lease_epoch",
        "dsg_queue_length",
        "dsg_queue_oldest_message_age_seconds",
        "dsg_consumers_live",
        // Until INFO memory was read.
        "dsg_redis_eviction_safe",
        "dsg_redis_memory_used_bytes",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    m.attach_health(Arc::new(Up));
    m.record_epoch(4);
    let text = m.render().expect("renders");
    for name in ["dsg_redis_up 1", "dsg_ready 1", "dsg_lease_epoch 4"] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[test]
fn issue14_fleet_gauges_vanish_when_their_sample_is_stale() {
    let m = Metrics::new("a", "errors", &processor());
    m.record_fleet_sample(FleetSample {
        queue_length: 7,
        error_queue_length: 3,
        oldest_age_seconds: 12.5,
        consumers: 2,
    });
    let text = m.render().expect("renders");
    for name in [
        "dsg_queue_length{queue=\"a\"} 7",
        "dsg_queue_length{queue=\"errors\"} 3",
        "dsg_queue_oldest_message_age_seconds{queue=\"a\"} 12.5",
        "dsg_consumers_live 2",
        "# HELP dsg_queue_length",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    // A stale sample: the series go, HELP and TYPE with them.
    *m.inner.observed.sample.lock().expect("lock") = Some((
        Instant::now() - SAMPLE_MAX_AGE,
        FleetSample {
            queue_length: 7,
            error_queue_length: 3,
            oldest_age_seconds: 12.5,
            consumers: 2,
        },
    ));
    let text = m.render().expect("renders");
    assert!(!text.contains("dsg_queue_length"), "{text}");
    assert!(!text.contains("dsg_consumers_live"), "{text}");
}

#[test]
fn issue11_an_implausible_age_is_counted_not_observed() {
    let m = Metrics::new("a", "errors", &processor());
    m.record_message_age(0.002);
    m.record_message_age(6.4e10);
    m.record_message_age(-3600.0);
    let text = m.render().expect("renders");
    for name in [
        "dsg_message_age_seconds_count{queue=\"a\"} 1",
        "dsg_message_age_seconds_sum{queue=\"a\"} 0.002",
        "dsg_message_age_implausible_total{reason=\"past\"} 1",
        "dsg_message_age_implausible_total{reason=\"future\"} 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}
