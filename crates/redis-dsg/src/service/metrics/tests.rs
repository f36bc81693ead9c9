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

/// Each count `/status` shows, and the series it must equal in `/metrics`
/// (summed over its labels). A count added to `Counts` and not here fails
/// the test below; so does one that no recording feeds.
const STATUS_SERIES: [(&str, &str); 10] = [
    ("generated", "dsg_messages_generated_total"),
    (
        "processed_ok",
        "dsg_messages_processed_total{outcome=\"ok\"}",
    ),
    (
        "invalid",
        "dsg_messages_processed_total{outcome=\"invalid\"}",
    ),
    (
        "malformed",
        "dsg_messages_processed_total{outcome=\"malformed\"}",
    ),
    (
        "oversized",
        "dsg_messages_processed_total{outcome=\"oversized\"}",
    ),
    ("recovered", "dsg_messages_recovered_total"),
    ("late_acks", "dsg_late_acks_total"),
    (
        "fenced_writes_rejected",
        "dsg_generator_fenced_writes_rejected_total",
    ),
    ("lease_transitions", "dsg_lease_transitions_total"),
    ("redis_errors", "dsg_redis_errors_total"),
];

/// The sum of the samples of `series` (a name, or a name with one label)
/// in an exposition.
fn exposed(text: &str, series: &str) -> f64 {
    let (name, label) = match series.split_once('{') {
        Some((name, rest)) => (name, Some(rest.trim_end_matches('}'))),
        None => (series, None),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (key_name, labels) = key.split_once('{').unwrap_or((key, ""));
            (key_name == name && label.is_none_or(|want| labels.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[test]
fn issue24_every_status_count_is_its_metric() {
    let m = Metrics::new("a", "errors", &processor());
    m.record_generated(3);
    m.record_processed(Outcome::Ok, 5);
    m.record_processed(Outcome::Invalid, 7);
    m.record_processed(Outcome::Malformed, 11);
    m.record_processed(Outcome::Oversized, 13);
    m.record_recovered(17);
    m.record_late_acks(19);
    m.record_fenced_rejection();
    m.record_transition(Transition::Acquired);
    m.record_transition(Transition::Lost);
    m.record_redis_error(Operation::Fetch);
    m.record_redis_error(Operation::Ack);
    m.record_redis_error(Operation::Push);
    m.add_in_flight(4);
    m.add_in_flight(-1);
    let counts = serde_json::to_value(m.counts()).expect("Counts serializes");
    let text = m.render().expect("renders");
    let fields = counts.as_object().expect("Counts is an object");
    for (field, value) in fields {
        let series = STATUS_SERIES
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("/status count {field} names no series in STATUS_SERIES"));
        let value = value.as_u64().expect("a count");
        assert!(value > 0, "{field}: no recording feeds it");
        assert_eq!(exposed(&text, series), value as f64, "{field} vs {series}");
    }
    assert_eq!(
        fields.len(),
        STATUS_SERIES.len(),
        "a series for a count that is gone"
    );
    assert_eq!(m.in_flight(), 3);
    assert_eq!(exposed(&text, "dsg_in_flight_messages"), 3.0);
}
