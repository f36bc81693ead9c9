//! What `bench --memory` measured, as figures (JSON) and as tables. A
//! metric the binary under test does not export is `null` in JSON and
//! "absent" in the tables, never a made-up zero: the old binary has none
//! of the memory metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Everything one `--memory` run measured.
#[derive(Debug, Serialize)]
pub(super) struct MemoryReport {
    pub binary: String,
    /// `version` of the binary's `/status`.
    pub binary_version: Option<String>,
    /// Whether `<binary> config` names `require_noeviction` (the binary
    /// with the memory safeguards).
    pub knows_new_settings: bool,
    pub redis_version: String,
    pub cores: usize,
    /// `maxmemory` of the full and evicting scenarios.
    pub maxmemory_bytes: u64,
    /// The unconstrained reference first, then one run per invalid ratio.
    pub full: Vec<FullRun>,
    pub evict: Vec<EvictRun>,
    pub large: Option<LargeRun>,
    pub bytes: Option<QueueBytes>,
    /// Where the processes logged (removed after a successful run).
    pub logs: String,
}

/// Scenario 1, one run.
#[derive(Debug, Serialize)]
pub(super) struct FullRun {
    pub name: String,
    /// 0: no `maxmemory` (the reference).
    pub maxmemory_bytes: u64,
    pub policy: Option<String>,
    pub invalid_ratio: f64,
    pub fill_seconds: u64,
    pub consume_seconds: u64,
    /// The highest `used_memory` sampled (every 250 ms).
    pub peak_used_memory_bytes: u64,
    pub windows: Vec<Window>,
    /// `dsg_messages_processed_total` of both consumers, every outcome:
    /// messages whose acknowledgement Redis confirmed.
    pub processed_total: u64,
    /// `dsg_messages_generated_total` of the generator: messages of pushes
    /// Redis confirmed.
    pub generated_total: u64,
    /// Process → operation named by the line → WARN/ERROR lines naming "OOM".
    /// The service throttles repeated failure lines, so these undercount
    /// failures; `redis_errors` counts each.
    pub oom_log_lines: BTreeMap<String, BTreeMap<String, u64>>,
    /// Process → operation → `dsg_redis_errors_total` at the end (since the
    /// process started, which is the run), non-zero only; every cause, not
    /// only OOM.
    pub redis_errors: BTreeMap<String, BTreeMap<String, u64>>,
    /// `dsg_redis_errors_total{operation="heartbeat"}`, every process.
    pub heartbeat_errors: u64,
    /// `dsg_generator_paused` by reason at the end; `None`: not exported.
    pub generator_paused: Option<BTreeMap<String, f64>>,
    /// `dsg_generator_paused_seconds_total` by reason; `None`: not exported.
    pub generator_paused_seconds: Option<BTreeMap<String, f64>>,
    /// Generator log lines saying it starts holding back.
    pub generator_paused_log_lines: u64,
    /// Generator log lines saying it resumed after holding back.
    pub generator_resumed_log_lines: u64,
    /// Processes that exited during the run, with their status.
    pub exited: BTreeMap<String, String>,
}

/// One reporting window of a [`FullRun`].
#[derive(Debug, Serialize)]
pub(super) struct Window {
    /// Seconds since the generator was ready.
    pub start_s: f64,
    pub end_s: f64,
    /// `fill` (generator alone) or `consume`.
    pub phase: String,
    /// The highest `used_memory` of the window's samples.
    pub used_memory_max_bytes: u64,
    /// `LLEN` of the queue and of the error list at the window's end.
    pub queue_length: u64,
    pub error_list_length: u64,
    /// Both consumers' `dsg_messages_processed_total` (every outcome), per
    /// second over the window.
    pub processed_per_second: f64,
    /// The generator's `dsg_messages_generated_total` per second.
    pub generated_per_second: f64,
    /// Against the unconstrained reference's window of the same index.
    pub processed_ratio_to_reference: Option<f64>,
    pub generated_ratio_to_reference: Option<f64>,
    /// `dsg_generator_paused` by reason at the window's end; `None`: not
    /// exported.
    pub generator_paused: Option<BTreeMap<String, f64>>,
}

/// A gauge of one process; `None`: not exported.
#[derive(Debug, Serialize)]
pub(super) struct PerProcess {
    pub process: String,
    pub value: Option<f64>,
}

/// `/readyz` of the replica started with `require_noeviction`.
#[derive(Debug, Serialize)]
pub(super) struct ProbeReadiness {
    /// HTTP status; `None`: no answer.
    pub status: Option<u16>,
    pub body: String,
}

/// Scenario 2, one policy.
#[derive(Debug, Serialize)]
pub(super) struct EvictRun {
    pub policy: String,
    pub seconds: u64,
    pub invalid_ratio: f64,
    pub peak_used_memory_bytes: u64,
    /// `INFO stats` `evicted_keys` at the end.
    pub evicted_keys: u64,
    /// `LLEN` of the error list when the processes had been started, its
    /// highest value sampled (every 250 ms), and at the end.
    pub error_list_at_start: u64,
    pub error_list_max: u64,
    pub error_list_at_end: u64,
    pub queue_at_end: u64,
    /// Generator log lines containing "write fenced off".
    pub fenced_off_log_lines: u64,
    /// `dsg_lease_transitions_total` by transition, every process.
    pub lease_transitions: BTreeMap<String, f64>,
    pub processed_total: u64,
    pub generated_total: u64,
    /// Seconds from the processes' start until a log line containing
    /// "WARN" and the policy's name appeared (looked for every 250 ms);
    /// `None`: never.
    pub first_policy_warning_seconds: Option<f64>,
    pub first_policy_warning: Option<String>,
    /// `dsg_redis_eviction_safe` of each process at the end.
    pub eviction_safe: Vec<PerProcess>,
    /// The `require_noeviction` replica's readiness; `None`: not started
    /// (the binary does not know the setting).
    pub probe: Option<ProbeReadiness>,
    /// As in [`FullRun::redis_errors`].
    pub redis_errors: BTreeMap<String, BTreeMap<String, u64>>,
    pub exited: BTreeMap<String, String>,
}

/// Scenario 3.
#[derive(Debug, Serialize)]
pub(super) struct LargeRun {
    pub messages: usize,
    pub message_bytes: usize,
    /// Whether the product's parser takes them as well-formed (the
    /// original's format, padded after the zone name).
    pub well_formed: bool,
    pub redis_used_memory_after_push_bytes: u64,
    pub redis_used_memory_peak_bytes: u64,
    /// Seconds from the consumer's start until it had processed every
    /// message; `None`: not within 180 s.
    pub all_processed_after_seconds: Option<f64>,
    /// `VmHWM` of the consumer at the end.
    pub consumer_vm_hwm_bytes: u64,
    /// The highest `VmRSS` sampled every 50 ms.
    pub consumer_vm_rss_peak_sampled_bytes: u64,
    pub rss_samples: u64,
    /// `dsg_messages_processed_total` by outcome.
    pub processed_by_outcome: BTreeMap<String, u64>,
    pub processed_total: u64,
    pub queue_at_end: u64,
    pub error_list_at_end: u64,
    /// `in_flight` of the consumer's `/status`.
    pub in_flight_reported: Option<i64>,
    /// Messages left in in-flight hashes in Redis (the marker field left
    /// out).
    pub in_flight_left_in_redis: u64,
    pub redis_errors: BTreeMap<String, u64>,
    pub exited: BTreeMap<String, String>,
}

/// Scenario 4.
#[derive(Debug, Serialize)]
pub(super) struct QueueBytes {
    /// `LLEN` of the queue.
    pub queued: u64,
    /// `MEMORY USAGE <queue> SAMPLES 0`.
    pub queue_usage_bytes: u64,
    pub queue_bytes_per_message: f64,
    /// The in-flight hash found with `SCAN`.
    pub inflight_key: String,
    /// Its `HLEN`, the marker field included.
    pub inflight_fields: u64,
    /// Whether it holds the marker field (which keeps it a hashtable).
    pub inflight_marker: bool,
    /// Messages in it (`HLEN` less the marker).
    pub held: u64,
    /// `MEMORY USAGE <hash> SAMPLES 0`.
    pub inflight_usage_bytes: u64,
    pub inflight_bytes_per_message: f64,
    /// Length of one generated message.
    pub message_bytes: usize,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// `a 1, b 2` (or `none`).
fn counts<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `process: a 1, b 2; process: none`.
fn per_process<V: std::fmt::Display>(m: &BTreeMap<String, BTreeMap<String, V>>) -> String {
    if m.is_empty() {
        return "no process answered".into();
    }
    m.iter()
        .map(|(p, c)| format!("{p}: {}", counts(c)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn gauge(m: &Option<BTreeMap<String, f64>>) -> String {
    m.as_ref().map_or("absent".into(), counts)
}

/// The figures as tables.
pub(super) fn render(r: &MemoryReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "redis-dsg bench --memory: {} ({}; {}), redis-server {}, {} cores",
        r.binary,
        r.binary_version.as_deref().unwrap_or("version unknown"),
        if r.knows_new_settings {
            "knows require_noeviction"
        } else {
            "does not know require_noeviction: the new settings are not passed"
        },
        r.redis_version,
        r.cores
    );
    let reference = r.full.first().filter(|f| f.maxmemory_bytes == 0);
    for run in &r.full {
        render_full(&mut s, run, reference.map(|f| f.name.as_str()));
    }
    for run in &r.evict {
        render_evict(&mut s, run, r.maxmemory_bytes);
    }
    if let Some(l) = &r.large {
        render_large(&mut s, l);
    }
    if let Some(b) = &r.bytes {
        render_bytes(&mut s, b);
    }
    s
}

fn render_full(s: &mut String, run: &FullRun, reference: Option<&str>) {
    let _ = writeln!(
        s,
        "\n1. {} — generator at interval 0 alone for {} s, then 2 consumers (processing 0 ms) for {} s",
        run.name, run.fill_seconds, run.consume_seconds
    );
    let max = run.maxmemory_bytes;
    if max > 0
        && let Some(name) = reference
    {
        let _ = writeln!(
            s,
            "(/ref: the same window of the {name}; processed/s counts both consumers' acknowledged messages, every outcome)"
        );
    }
    let _ = writeln!(
        s,
        "{:<9} {:<8} {:>22} {:>10} {:>9} {:>12} {:>12} {:>10} {:>10}  dsg_generator_paused",
        "window",
        "phase",
        "used_memory max",
        "queue",
        "errors",
        "processed/s",
        "generated/s",
        "proc/ref",
        "gen/ref",
    );
    for w in &run.windows {
        let used = if max > 0 {
            format!(
                "{} ({:.0} %)",
                mib(w.used_memory_max_bytes),
                w.used_memory_max_bytes as f64 / max as f64 * 100.0
            )
        } else {
            mib(w.used_memory_max_bytes)
        };
        let _ = writeln!(
            s,
            "{:<9} {:<8} {:>22} {:>10} {:>9} {:>12} {:>12} {:>10} {:>10}  {}",
            format!("{:.0}–{:.0} s", w.start_s, w.end_s),
            w.phase,
            used,
            w.queue_length,
            w.error_list_length,
            rate(w.processed_per_second),
            rate(w.generated_per_second),
            opt_ratio(w.processed_ratio_to_reference),
            opt_ratio(w.generated_ratio_to_reference),
            gauge(&w.generator_paused),
        );
    }
    let _ = writeln!(
        s,
        "peak used_memory {}{}; processed {} (acknowledged, every outcome), generated {}",
        mib(run.peak_used_memory_bytes),
        if max > 0 {
            format!(" of maxmemory {}", mib(max))
        } else {
            String::new()
        },
        run.processed_total,
        run.generated_total
    );
    let _ = writeln!(
        s,
        "WARN/ERROR log lines with \"OOM\", by operation: {}",
        per_process(&run.oom_log_lines)
    );
    let _ = writeln!(
        s,
        "dsg_redis_errors_total (every cause): {}",
        per_process(&run.redis_errors)
    );
    let _ = writeln!(
        s,
        "heartbeat failures (dsg_redis_errors_total{{operation=\"heartbeat\"}}): {}",
        run.heartbeat_errors
    );
    let _ = writeln!(
        s,
        "generator pause: dsg_generator_paused {}; paused seconds {}; log lines \"holding back\" {}, \"resumed\" {}",
        gauge(&run.generator_paused),
        gauge(&run.generator_paused_seconds),
        run.generator_paused_log_lines,
        run.generator_resumed_log_lines
    );
    if !run.exited.is_empty() {
        let _ = writeln!(s, "exited during the run: {}", counts(&run.exited));
    }
}

fn render_evict(s: &mut String, run: &EvictRun, maxmemory: u64) {
    let _ = writeln!(
        s,
        "\n2. evicting Redis, maxmemory {} {} — generator at interval 0 and 2 consumers ({} % invalid) for {} s",
        mib(maxmemory),
        run.policy,
        run.invalid_ratio * 100.0,
        run.seconds
    );
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<44} {v}");
    };
    line("peak used_memory", mib(run.peak_used_memory_bytes));
    line("evicted_keys", run.evicted_keys.to_string());
    line(
        "error list: at start / max / at end",
        format!(
            "{} / {} / {}",
            run.error_list_at_start, run.error_list_max, run.error_list_at_end
        ),
    );
    line("queue at end", run.queue_at_end.to_string());
    line(
        "processed / generated",
        format!("{} / {}", run.processed_total, run.generated_total),
    );
    line(
        "\"write fenced off\" lines, generator",
        run.fenced_off_log_lines.to_string(),
    );
    line(
        "lease transitions (all processes)",
        counts(&run.lease_transitions),
    );
    line(
        &format!("first WARN naming {}", run.policy),
        match (&run.first_policy_warning_seconds, &run.first_policy_warning) {
            (Some(t), Some(l)) => format!("{t:.2} s — {l}"),
            _ => "none".into(),
        },
    );
    line(
        "dsg_redis_eviction_safe",
        run.eviction_safe
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.process,
                    p.value.map_or("absent".into(), |v| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "require_noeviction replica /readyz",
        match &run.probe {
            None => "not started (the binary does not know require_noeviction)".into(),
            Some(p) => format!(
                "{} {}",
                p.status.map_or("no answer".into(), |c| c.to_string()),
                p.body
            ),
        },
    );
    line(
        "dsg_redis_errors_total (every cause)",
        per_process(&run.redis_errors),
    );
    if !run.exited.is_empty() {
        line("exited during the run", counts(&run.exited));
    }
}

fn render_large(s: &mut String, l: &LargeRun) {
    let _ = writeln!(
        s,
        "\n3. large messages — {} messages of {} bytes ({}), one consumer with every default (processing 0–999 ms)",
        l.messages,
        l.message_bytes,
        if l.well_formed {
            "well-formed: the original's `<uuid> at <Go time>` format, padded after the zone"
        } else {
            "malformed"
        }
    );
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<44} {v}");
    };
    line(
        "Redis used_memory after the push / peak",
        format!(
            "{} / {}",
            mib(l.redis_used_memory_after_push_bytes),
            mib(l.redis_used_memory_peak_bytes)
        ),
    );
    line(
        "consumer peak RSS: VmHWM / VmRSS sampled",
        format!(
            "{} / {} ({} samples, 50 ms apart)",
            mib(l.consumer_vm_hwm_bytes),
            mib(l.consumer_vm_rss_peak_sampled_bytes),
            l.rss_samples
        ),
    );
    line(
        "all processed after",
        l.all_processed_after_seconds
            .map_or("not within 180 s".into(), |t| format!("{t:.1} s")),
    );
    line(
        "processed by outcome",
        format!(
            "{} (total {})",
            counts(&l.processed_by_outcome),
            l.processed_total
        ),
    );
    let errors_in_list = l.error_list_at_end;
    let ok = l.processed_by_outcome.get("ok").copied().unwrap_or(0);
    line(
        "queue / error list / in flight at end",
        format!(
            "{} / {} / {} reported, {} left in Redis",
            l.queue_at_end,
            errors_in_list,
            l.in_flight_reported.map_or("?".into(), |n| n.to_string()),
            l.in_flight_left_in_redis
        ),
    );
    let exactly_once = l.queue_at_end == 0
        && l.in_flight_left_in_redis == 0
        && l.processed_total == l.messages as u64
        && ok + errors_in_list == l.messages as u64;
    line(
        "every message exactly once",
        format!(
            "{} (ok {ok} + error list {errors_in_list} = {}, of {})",
            if exactly_once { "yes" } else { "NO" },
            ok + errors_in_list,
            l.messages
        ),
    );
    if !l.redis_errors.is_empty() {
        line("dsg_redis_errors_total", counts(&l.redis_errors));
    }
    if !l.exited.is_empty() {
        line("exited during the run", counts(&l.exited));
    }
}

fn render_bytes(s: &mut String, b: &QueueBytes) {
    let _ = writeln!(
        s,
        "\n4. bytes per message ({}-byte product messages)",
        b.message_bytes
    );
    let _ = writeln!(
        s,
        "  {:<44} {} bytes / {} = {:.1} bytes per message",
        "MEMORY USAGE queue SAMPLES 0 / LLEN",
        b.queue_usage_bytes,
        b.queued,
        b.queue_bytes_per_message
    );
    let _ = writeln!(
        s,
        "  {:<44} {} bytes / {} = {:.1} bytes per message ({}; HLEN {}{})",
        "MEMORY USAGE in-flight hash / messages held",
        b.inflight_usage_bytes,
        b.held,
        b.inflight_bytes_per_message,
        b.inflight_key,
        b.inflight_fields,
        if b.inflight_marker {
            ", the marker field left out"
        } else {
            ""
        }
    );
}
