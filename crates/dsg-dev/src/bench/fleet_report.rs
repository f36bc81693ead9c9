//! What the fleet benchmark measured (JSON) and its tables: one compact
//! table per scenario, each with the empty server's CPU as reference line.

use serde::Serialize;

use super::redis_load::RedisLoad;
use super::report::BenchReport;

/// Everything one `bench --fleet` run measured.
#[derive(Debug, Serialize)]
pub(super) struct FleetReport {
    /// The redis-dsg binary measured.
    pub binary: String,
    /// Its version, as its `/status` says.
    pub binary_version: Option<String>,
    pub redis_version: String,
    pub cores: usize,
    pub warmup_seconds: u64,
    pub window_seconds: u64,
    /// The empty redis-server's own load (the reference).
    pub empty: Option<RedisLoad>,
    pub scenarios: Vec<ScenarioFigures>,
    pub wakeup: Option<WakeupFigures>,
    pub reaping: Option<ReapingFigures>,
    /// The bulk phases (`--with-bulk`): ceiling, generator, drain, age, memory.
    pub bulk: Option<BenchReport>,
}

/// One fleet at work (or idle) over the measurement window.
#[derive(Debug, Serialize)]
pub(super) struct ScenarioFigures {
    pub name: String,
    /// Consumer pods (a separate generator pod is not counted).
    pub pods: usize,
    pub load: RedisLoad,
    /// CPU above the empty server's own, percent of a core.
    pub cpu_percent_above_empty: Option<f64>,
    pub commands_per_pod_per_second: f64,
    /// Commands of the whole fleet per reaper interval.
    pub commands_per_reaper_interval: f64,
    pub reaper_interval_ms: u64,
    /// The rate the scenario asks for (messages per second), if any.
    pub target_per_second: Option<f64>,
    pub generated_per_second: f64,
    pub processed_per_second: f64,
    pub redis_usec_per_message: Option<f64>,
    pub redis_usec_per_message_above_empty: Option<f64>,
    /// `LLEN` of the queue at the end of the window.
    pub backlog_at_end: u64,
}

/// Time from a plain `LPUSH` into an idle fleet until the message is on the
/// output list.
#[derive(Debug, Serialize)]
pub(super) struct WakeupFigures {
    pub pods: usize,
    pub samples: usize,
    /// Pushes whose message did not come out within the sample timeout.
    pub lost: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// A SIGKILLed consumer's messages coming back.
#[derive(Debug, Serialize)]
pub(super) struct ReapingFigures {
    pub pods: usize,
    /// Messages in the killed consumer's in-flight hash when it was killed.
    pub killed_in_flight: u64,
    /// Until its in-flight hash was empty (the reaper returned them).
    pub returned_after_ms: Option<f64>,
    /// Until the survivors held every message in flight again.
    pub refetched_after_ms: Option<f64>,
    pub heartbeat_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub reaper_interval_ms: u64,
    /// The idle fleet before the kill, as commands per reaper interval.
    pub idle: ScenarioFigures,
}

/// The whole report as tables.
pub(super) fn render(r: &FleetReport) -> String {
    let mut s = format!(
        "redis-dsg bench --fleet: {} ({}), redis-server {}, {} cores; warm-up {} s, window {} s\n\
         Redis CPU from INFO cpu (user + sys), commands from INFO commandstats (script-inner commands included)\n",
        r.binary,
        r.binary_version.as_deref().unwrap_or("version unknown"),
        r.redis_version,
        r.cores,
        r.warmup_seconds,
        r.window_seconds,
    );
    let reference = r.empty.as_ref().map(|e| e.cpu_percent);
    if let Some(e) = &r.empty {
        s.push_str(&format!(
            "\n== empty redis-server (reference) ==\n{:<34} {:>8.2} % of a core, {:.1} commands/s\n",
            "Redis CPU", e.cpu_percent, e.commands_per_second
        ));
    }
    for sc in &r.scenarios {
        s.push_str(&scenario_table(sc, reference));
    }
    if let Some(w) = &r.wakeup {
        s.push_str(&wakeup_table(w));
    }
    if let Some(rp) = &r.reaping {
        s.push_str(&reaping_table(rp, reference));
    }
    if let Some(b) = &r.bulk {
        s.push_str("\n== bulk phases ==\n");
        s.push_str(&super::report::render(b));
    }
    s
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn scenario_table(sc: &ScenarioFigures, reference: Option<f64>) -> String {
    let mut s = format!("\n== {} ==\n", sc.name);
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<34} {v}\n"));
    line(
        "Redis CPU, % of a core",
        format!(
            "{:>8.2}   above empty {} (per pod {})",
            sc.load.cpu_percent,
            opt(sc.cpu_percent_above_empty, 2),
            opt(
                sc.cpu_percent_above_empty
                    .map(|c| c / sc.pods.max(1) as f64),
                4
            ),
        ),
    );
    line(
        "  reference: empty redis-server",
        format!("{:>8}", opt(reference, 2)),
    );
    line(
        "Redis µs per message",
        format!(
            "{:>8}   above empty {}",
            opt(sc.redis_usec_per_message, 1),
            opt(sc.redis_usec_per_message_above_empty, 1)
        ),
    );
    line(
        "messages/s processed (target)",
        format!(
            "{:>8.1}   ({}; generated {:.1}), backlog at end {}",
            sc.processed_per_second,
            opt(sc.target_per_second, 0),
            sc.generated_per_second,
            sc.backlog_at_end
        ),
    );
    line(
        "commands/s",
        format!(
            "{:>8.1}   per pod {:.1}; per reaper interval ({} ms) {:.0}",
            sc.load.commands_per_second,
            sc.commands_per_pod_per_second,
            sc.reaper_interval_ms,
            sc.commands_per_reaper_interval
        ),
    );
    for t in &sc.load.top {
        line(
            &format!("  {}", t.name),
            format!(
                "{:>8.1} calls/s at {:.1} µs",
                t.calls_per_second, t.usec_per_call
            ),
        );
    }
    s
}

fn wakeup_table(w: &WakeupFigures) -> String {
    format!(
        "\n== wake-up: plain LPUSH into {} idle consumers ==\n{:<34} p50 {} ms, p99 {} ms, max {} ms ({} samples, {} lost)\n",
        w.pods,
        "push → output list",
        opt(w.p50_ms, 2),
        opt(w.p99_ms, 2),
        opt(w.max_ms, 2),
        w.samples,
        w.lost
    )
}

fn reaping_table(r: &ReapingFigures, reference: Option<f64>) -> String {
    let mut s = scenario_table(&r.idle, reference);
    s.push_str(&format!(
        "\n== reaping: SIGKILL one of {} consumers holding {} messages ==\n",
        r.pods, r.killed_in_flight
    ));
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<34} {v}\n"));
    line(
        "in-flight hash empty after",
        format!("{:>8} ms", opt(r.returned_after_ms, 0)),
    );
    line(
        "all held by survivors after",
        format!("{:>8} ms", opt(r.refetched_after_ms, 0)),
    );
    line(
        "  reference: heartbeat TTL + reaper",
        format!(
            "{:>8} ms   (TTL {} + interval {}; heartbeat every {} ms)",
            r.heartbeat_ttl_ms + r.reaper_interval_ms,
            r.heartbeat_ttl_ms,
            r.reaper_interval_ms,
            r.heartbeat_interval_ms
        ),
    );
    s
}
