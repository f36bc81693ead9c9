//! `bench --memory`: what the service does when Redis memory runs out, and
//! what its messages cost in memory, each scenario on its own fresh
//! `redis-server` (no persistence) with the real binary (or `--against`
//! another) in separate processes:
//!
//! 1. *Full Redis*: `maxmemory` with `noeviction`; a generator at interval
//!    0 alone for `--fill-seconds`, then two consumers for
//!    `--consume-seconds` more, once per `--invalid-ratios` value, next to
//!    the same run without `maxmemory` (the reference every window's rate
//!    is divided by). Per window: `used_memory` (its maximum, sampled every
//!    250 ms), queue and error-list lengths, rates; over the run: OOM log
//!    lines and `dsg_redis_errors_total` by operation, and whether the
//!    generator paused.
//! 2. *Evicting Redis*: the same load under `allkeys-lru` and
//!    `volatile-lru`: evicted keys, what happened to the error list and the
//!    lease, whether anything warned about the policy.
//! 3. *Large messages*: a consumer with every default taking messages of
//!    900 KiB; its peak RSS, and that each was processed exactly once.
//! 4. *Bytes per message*: `MEMORY USAGE` of the queue and of an in-flight
//!    hash, per message.
//!
//! Pods get only the settings a scenario changes, as environment variables
//! the old binary knows too (`pods.rs`): a setting an old binary does not
//! know would stop it with exit code 78. The figures are in
//! `memory_report.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fred::prelude::*;
use fred::types::{CustomCommand, InfoKind};

use dsg_testkit::local_redis::{LocalRedis, connect, free_port};
use dsg_testkit::replica::{READY_TIMEOUT, Replica};
use dsg_testkit::wait::poll;
use redis_dsg::redis::scripts::INFLIGHT_MARKER_FIELD as INFLIGHT_MARKER;
use redis_dsg::redis::{Keys, Redis};
use redis_dsg::service::message::MessageWriter;

use super::memory_report::{
    EvictRun, FullRun, LargeRun, MemoryReport, PerProcess, ProbeReadiness, QueueBytes, Window,
};
use super::pods::{PodMode, PodSettings};
use super::{BenchArgs, progress};

/// The setting only a binary with the memory safeguards knows; its name in
/// `redis-dsg config` tells the two apart.
const REQUIRE_NOEVICTION: &str = "require_noeviction";

/// How often Redis' memory is read during a run.
const MEMORY_EVERY: Duration = Duration::from_millis(250);

/// The scenarios of `--memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MemoryScenario {
    /// `maxmemory` with `noeviction`, and the unconstrained reference.
    Full,
    /// `maxmemory` with `allkeys-lru`, then `volatile-lru`.
    Evict,
    /// Messages of `--large-message-kib` into a default consumer.
    Large,
    /// `MEMORY USAGE` per queued and per held message.
    Bytes,
}

/// Flags of `bench --memory`.
#[derive(Debug, Args)]
pub(crate) struct MemoryArgs {
    /// Measure what happens when Redis memory runs out (full, evicting),
    /// a consumer's memory with large messages, and bytes per message.
    #[arg(long)]
    pub memory: bool,
    /// The scenarios to run (with --memory).
    #[arg(long, value_delimiter = ',', value_enum, requires = "memory", default_values_t = [
        MemoryScenario::Full, MemoryScenario::Evict, MemoryScenario::Large, MemoryScenario::Bytes,
    ])]
    pub memory_scenarios: Vec<MemoryScenario>,
    /// Redis `maxmemory` of the full and evicting scenarios, MiB.
    #[arg(long, default_value_t = 24, requires = "memory")]
    pub maxmemory_mb: u64,
    /// Seconds the generator runs alone before the consumers start (full).
    #[arg(long, default_value_t = 20, requires = "memory")]
    pub fill_seconds: u64,
    /// Seconds the consumers then run next to the generator (full).
    #[arg(long, default_value_t = 30, requires = "memory")]
    pub consume_seconds: u64,
    /// Seconds each eviction policy runs (evict).
    #[arg(long, default_value_t = 30, requires = "memory")]
    pub evict_seconds: u64,
    /// Length of a reporting window (full), seconds.
    #[arg(long, default_value_t = 5, requires = "memory")]
    pub sample_window_seconds: u64,
    /// The consumers' `processor.invalid_ratio` of the full-Redis runs, one
    /// run each.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.05], requires = "memory")]
    pub invalid_ratios: Vec<f64>,
    /// The consumers' `processor.invalid_ratio` of the unconstrained
    /// reference run (one run, to keep the mode short; 0, like the run the
    /// issue's ≥ 50 % target compares).
    #[arg(long, default_value_t = 0.0, requires = "memory")]
    pub reference_invalid_ratio: f64,
    /// The consumers' `processor.invalid_ratio` under eviction.
    #[arg(long, default_value_t = 0.05, requires = "memory")]
    pub evict_invalid_ratio: f64,
    /// Large messages pushed (large).
    #[arg(long, default_value_t = 400, requires = "memory")]
    pub large_messages: usize,
    /// Size of each large message, KiB (the default `max_message_bytes` is
    /// 1024 KiB).
    #[arg(long, default_value_t = 900, requires = "memory")]
    pub large_message_kib: usize,
    /// Messages queued for `MEMORY USAGE` of the queue (bytes).
    #[arg(long, default_value_t = 100_000, requires = "memory")]
    pub queued_messages: u64,
    /// Messages a consumer holds for `MEMORY USAGE` of its in-flight hash
    /// (bytes; `CONSUMER_MAX_GOROUTINES`).
    #[arg(long, default_value_t = 10_000, requires = "memory")]
    pub held_messages: u64,
}

/// What `<binary> config` says about the binary under test.
struct Binary<'a> {
    exe: &'a Path,
    queue: String,
    error_queue: String,
    /// Whether it knows `redis.require_noeviction` (the new settings).
    knows_new_settings: bool,
}

/// One process of a scenario.
struct Pod {
    name: String,
    replica: Replica,
    /// Its `/metrics` at the last successful scrape (a pod that exited
    /// keeps what it last exported).
    metrics: Option<String>,
    /// How far its log has been searched.
    log_offset: u64,
}

impl Pod {
    async fn scrape(&mut self) -> Option<&str> {
        if let Some((200, body)) =
            dsg_testkit::http_client::get(self.replica.port(), "/metrics", Duration::from_secs(2))
                .await
        {
            self.metrics = Some(body);
        }
        self.metrics.as_deref()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.replica.log()).unwrap_or_default()
    }

    /// The log lines written since the last call.
    fn new_log_lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(self.replica.log()) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.log_offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        // Only whole lines: a line being written is read at the next look.
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        self.log_offset += end as u64 + 1;
        String::from_utf8_lossy(&buf[..end])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What it exports of `name`, summed over its series (`None`: absent).
    fn sum(&self, name: &str) -> Option<f64> {
        self.metrics.as_deref().and_then(|m| metric_sum(m, name))
    }

    fn exit_status(&mut self) -> Option<String> {
        self.replica.try_wait().map(|s| s.to_string())
    }
}

/// One scenario's Redis and processes; everything is killed when dropped
/// (processes first: fields drop in order), also when the run is
/// interrupted.
struct Stage {
    pods: Vec<Pod>,
    redis: Redis,
    url: String,
    logs: PathBuf,
    _server: LocalRedis,
}

impl Stage {
    /// A fresh `redis-server` with `extra` arguments, and a client.
    async fn open(root: &Path, name: &str, extra: &[String]) -> Result<Stage, String> {
        progress(&format!("memory: {name}"));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = LocalRedis::start_with(&extra)?;
        let url = server.url();
        // Long enough for a push of several large messages.
        let redis = connect(&url, Duration::from_secs(60)).await?;
        let logs = root.join(name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        Ok(Stage {
            pods: Vec::new(),
            redis,
            url,
            logs,
            _server: server,
        })
    }

    /// Starts a process named `name` with `env`, without waiting for it.
    fn spawn(&mut self, exe: &Path, name: &str, env: &[(String, String)]) -> Result<(), String> {
        let log = self.logs.join(format!("{name}.log"));
        let replica = Replica::start(exe, free_port(), env, &log)
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.pods.push(Pod {
            name: name.to_string(),
            replica,
            metrics: None,
            log_offset: 0,
        });
        Ok(())
    }

    /// [`Stage::spawn`], then waits until it is ready.
    async fn start(
        &mut self,
        exe: &Path,
        name: &str,
        env: &[(String, String)],
    ) -> Result<(), String> {
        self.spawn(exe, name, env)?;
        let pod = self.pods.last_mut().expect("just pushed");
        pod.replica.ready_within(READY_TIMEOUT).await
    }

    /// Stops the processes, then closes the client before its server goes
    /// (a client whose server vanishes logs the broken connection).
    async fn close(mut self) {
        self.pods.clear();
        self.redis.quit().await;
    }

    async fn info_field(&self, kind: InfoKind, field: &str) -> Result<u64, String> {
        let text: String = self
            .redis
            .client()
            .info(Some(kind))
            .await
            .map_err(|e| format!("INFO: {e}"))?;
        info_field(&text, field).ok_or_else(|| format!("INFO without {field}"))
    }

    async fn used_memory(&self) -> Result<u64, String> {
        self.info_field(InfoKind::Memory, "used_memory").await
    }

    async fn llen(&self, key: &str) -> Result<u64, String> {
        self.redis
            .client()
            .llen(key)
            .await
            .map_err(|e| format!("LLEN {key}: {e}"))
    }

    /// A raw command (`MEMORY USAGE`, `SCAN`: not among fred's features
    /// here).
    async fn command(&self, args: &[&str]) -> Result<Value, String> {
        let cmd = CustomCommand::new(args[0].to_string(), None::<u16>, false);
        let rest: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
        self.redis
            .client()
            .custom::<Value, _>(cmd, rest)
            .await
            .map_err(|e| format!("{args:?}: {e}"))
    }

    /// `MEMORY USAGE key SAMPLES 0`: every element counted, not a sample.
    async fn memory_usage(&self, key: &str) -> Result<u64, String> {
        match self
            .command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
            .await?
        {
            Value::Integer(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(format!("MEMORY USAGE {key}: {other:?}")),
        }
    }

    /// Every key matching `pattern` (`SCAN`, not `KEYS`).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, String> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let reply = self
                .command(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .await?;
            let Value::Array(parts) = reply else {
                return Err(format!("SCAN: {reply:?}"));
            };
            let mut parts = parts.into_iter();
            cursor = parts
                .next()
                .and_then(|c| c.as_string())
                .ok_or("SCAN without a cursor")?;
            if let Some(Value::Array(found)) = parts.next() {
                keys.extend(found.into_iter().filter_map(|k| k.as_string()));
            }
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// Scrapes every process's `/metrics` (each keeps its last answer).
    async fn scrape_all(&mut self) {
        for p in &mut self.pods {
            p.scrape().await;
        }
    }

    /// What every process exports of `name`, summed.
    fn total(&self, name: &str) -> f64 {
        self.pods.iter().filter_map(|p| p.sum(name)).sum()
    }
}

/// Runs the selected scenarios with `exe` (or `--against`); the figures.
pub(super) async fn measure(exe: &Path, args: &BenchArgs) -> Result<MemoryReport, String> {
    let m = &args.memory;
    let exe = args.fleet.against.as_deref().unwrap_or(exe);
    if !exe.is_file() {
        return Err(format!("{}: no such file", exe.display()));
    }
    let binary = inspect(exe)?;
    let logs = logs_dir();
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut report = MemoryReport {
        binary: exe.display().to_string(),
        binary_version: version_of(exe),
        knows_new_settings: binary.knows_new_settings,
        redis_version: super::phases::redis_version(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        maxmemory_bytes: m.maxmemory_mb * 1024 * 1024,
        full: Vec::new(),
        evict: Vec::new(),
        large: None,
        bytes: None,
        logs: logs.display().to_string(),
    };
    let run = Run {
        binary: &binary,
        args: m,
        logs: &logs,
    };
    let result = run.all(&mut report).await;
    // Logs stay for a look after a failure; the error names where.
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&logs);
            Ok(report)
        }
        Err(e) => Err(format!("{e} (logs in {})", logs.display())),
    }
}

/// Where the processes of this run log (one directory per scenario).
pub(super) fn logs_dir() -> PathBuf {
    std::env::temp_dir().join(format!("redis-dsg-memory-{}", std::process::id()))
}

/// Runs `exe config`: the queue names and whether it knows the new
/// settings. Nothing but `MODE` is set, so the defaults are its own.
fn inspect(exe: &Path) -> Result<Binary<'_>, String> {
    let out = std::process::Command::new(exe)
        .arg("config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .map_err(|e| format!("cannot run {} config: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} config failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let config: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{} config printed no readable TOML: {e}", exe.display()))?;
    let redis = |key: &str| {
        config
            .get("redis")
            .and_then(|r| r.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{} config has no redis.{key}", exe.display()))
    };
    Ok(Binary {
        exe,
        queue: redis("queue")?,
        error_queue: redis("error_queue")?,
        knows_new_settings: text.contains(REQUIRE_NOEVICTION),
    })
}

/// What `<binary> --version` prints (`redis-dsg 0.1.0`): asked of the
/// program, not of a busy process's `/status`, which a generator at
/// interval 0 may not answer in time.
fn version_of(exe: &Path) -> Option<String> {
    let out = std::process::Command::new(exe)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?;
    out.status.success().then(|| version.to_string())
}

/// One `--memory` run.
struct Run<'a> {
    binary: &'a Binary<'a>,
    args: &'a MemoryArgs,
    logs: &'a Path,
}

impl Run<'_> {
    async fn all(&self, report: &mut MemoryReport) -> Result<(), String> {
        let on = |s: MemoryScenario| self.args.memory_scenarios.contains(&s);
        if on(MemoryScenario::Full) {
            let reference = self
                .full(None, self.args.reference_invalid_ratio, None)
                .await?;
            for &ratio in &self.args.invalid_ratios {
                let run = self
                    .full(Some(report.maxmemory_bytes), ratio, Some(&reference))
                    .await?;
                report.full.push(run);
            }
            report.full.insert(0, reference);
        }
        if on(MemoryScenario::Evict) {
            for policy in ["allkeys-lru", "volatile-lru"] {
                report
                    .evict
                    .push(self.evict(report.maxmemory_bytes, policy).await?);
            }
        }
        if on(MemoryScenario::Large) {
            report.large = Some(self.large().await?);
        }
        if on(MemoryScenario::Bytes) {
            report.bytes = Some(self.bytes().await?);
        }
        Ok(())
    }

    /// A pod's environment: `mode`, the scenario's settings, logging at
    /// info (a pause or a policy warning may be logged at info or warn;
    /// nothing is logged per message at info).
    fn env(
        &self,
        url: &str,
        settings: &PodSettings,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let env = settings.env(url);
        dsg_testkit::fleet::with_extra(env, &[[("RUST_LOG", "info")].as_slice(), extra].concat())
    }

    fn generator_env(&self, url: &str) -> Vec<(String, String)> {
        self.env(
            url,
            &PodSettings::defaults(PodMode::Generator),
            &[("GENERATOR_INTERVAL", "0")],
        )
    }

    fn consumer_env(&self, url: &str, invalid_ratio: f64) -> Vec<(String, String)> {
        let mut c = PodSettings::defaults(PodMode::Consumer);
        c.processing_ms = Some((0, 0));
        c.invalid_ratio = Some(invalid_ratio);
        self.env(url, &c, &[])
    }

    /// Scenario 1: a generator at interval 0 alone for `fill_seconds`, then
    /// two consumers for `consume_seconds`; with `maxmemory` and
    /// `noeviction`, or without a limit (`maxmemory` `None`).
    async fn full(
        &self,
        maxmemory: Option<u64>,
        invalid_ratio: f64,
        reference: Option<&FullRun>,
    ) -> Result<FullRun, String> {
        let a = self.args;
        let name = match maxmemory {
            Some(b) => format!(
                "full Redis, maxmemory {} MiB noeviction, {} % invalid",
                b / 1_048_576,
                invalid_ratio * 100.0
            ),
            None => format!(
                "unconstrained reference, no maxmemory, {} % invalid",
                invalid_ratio * 100.0
            ),
        };
        let server_args = match maxmemory {
            Some(b) => vec![
                "--maxmemory".to_string(),
                b.to_string(),
                "--maxmemory-policy".into(),
                "noeviction".into(),
            ],
            None => vec!["--maxmemory".to_string(), "0".into()],
        };
        let mut stage = Stage::open(self.logs, &name, &server_args).await?;
        let exe = self.binary.exe;
        stage
            .start(exe, "generator", &self.generator_env(&stage.url))
            .await?;
        let t0 = Instant::now();
        let window = Duration::from_secs(a.sample_window_seconds.max(1));
        let fill = Duration::from_secs(a.fill_seconds);
        let end = fill + Duration::from_secs(a.consume_seconds);
        let mut windows = Vec::new();
        let mut current = WindowState::open(Duration::ZERO, &mut stage).await;
        let mut consumers_started = false;
        let mut tick = tokio::time::interval(MEMORY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut peak = 0;
        loop {
            tick.tick().await;
            let t = t0.elapsed();
            if let Ok(used) = stage.used_memory().await {
                current.used_max = current.used_max.max(used);
                peak = peak.max(used);
            }
            if !consumers_started && t >= fill {
                // Not waiting for them: their start-up is part of the run.
                let env = self.consumer_env(&stage.url, invalid_ratio);
                stage.spawn(exe, "consumer-1", &env)?;
                stage.spawn(exe, "consumer-2", &env)?;
                consumers_started = true;
            }
            if t >= current.start + window || t >= end {
                let (closed, next) = current.close(&mut stage, self.binary, fill, window).await?;
                windows.push(closed);
                if t >= end {
                    break;
                }
                current = next;
            }
        }
        if let Some(r) = reference {
            for (w, rw) in windows.iter_mut().zip(&r.windows) {
                w.processed_ratio_to_reference =
                    ratio(w.processed_per_second, rw.processed_per_second);
                w.generated_ratio_to_reference =
                    ratio(w.generated_per_second, rw.generated_per_second);
            }
        }
        stage.scrape_all().await;
        let run = FullRun {
            name,
            maxmemory_bytes: maxmemory.unwrap_or(0),
            policy: maxmemory.map(|_| "noeviction".to_string()),
            invalid_ratio,
            fill_seconds: a.fill_seconds,
            consume_seconds: a.consume_seconds,
            peak_used_memory_bytes: peak,
            windows,
            processed_total: stage.total("dsg_messages_processed_total") as u64,
            generated_total: stage.total("dsg_messages_generated_total") as u64,
            oom_log_lines: oom_lines(&stage.pods),
            redis_errors: per_process(&stage.pods, |p| {
                p.metrics
                    .as_deref()
                    .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
            }),
            heartbeat_errors: stage
                .pods
                .iter()
                .filter_map(|p| {
                    p.metrics.as_deref().map(|m| {
                        metric_by_label(m, "dsg_redis_errors_total", "operation")
                            .get("heartbeat")
                            .copied()
                            .unwrap_or(0.0)
                    })
                })
                .sum::<f64>() as u64,
            generator_paused: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused", "reason"))
                .filter(|m| !m.is_empty()),
            generator_paused_seconds: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused_seconds_total", "reason"))
                .filter(|m| !m.is_empty()),
            generator_paused_log_lines: count_lines(&stage.pods[0].log_text(), |l| {
                l.contains("generator holding back")
            }),
            generator_resumed_log_lines: count_lines(&stage.pods[0].log_text(), |l| {
                l.contains("generator resumed after holding back")
            }),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 2: a generator at interval 0 and two consumers together on
    /// a Redis at `maxmemory` with an evicting `policy`.
    async fn evict(&self, maxmemory: u64, policy: &str) -> Result<EvictRun, String> {
        let a = self.args;
        let name = format!(
            "evicting Redis, maxmemory {} MiB {policy}",
            maxmemory / 1_048_576
        );
        let server_args = vec![
            "--maxmemory".to_string(),
            maxmemory.to_string(),
            "--maxmemory-policy".into(),
            policy.into(),
        ];
        let mut stage = Stage::open(self.logs, &name, &server_args).await?;
        let exe = self.binary.exe;
        let t0 = Instant::now();
        stage.spawn(exe, "generator", &self.generator_env(&stage.url))?;
        let env = self.consumer_env(&stage.url, a.evict_invalid_ratio);
        stage.spawn(exe, "consumer-1", &env)?;
        stage.spawn(exe, "consumer-2", &env)?;
        if self.binary.knows_new_settings {
            // Its own queue, so it takes none of the others' messages: it is
            // there for its readiness only.
            let probe = self.env(
                &stage.url,
                &PodSettings::defaults(PodMode::Consumer),
                &[
                    ("DSG_REDIS__REQUIRE_NOEVICTION", "true"),
                    ("REDIS_QUEUE", "dsg-bench-probe"),
                    ("REDIS_ERROR_QUEUE", "dsg-bench-probe:errors"),
                ],
            );
            stage.spawn(exe, "probe", &probe)?;
        }
        let errors_at_start = stage.llen(&self.binary.error_queue).await?;
        let mut errors_max = errors_at_start;
        let mut first_warning: Option<(f64, String, String)> = None;
        let end = Duration::from_secs(a.evict_seconds);
        let mut tick = tokio::time::interval(MEMORY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut peak = 0;
        while t0.elapsed() < end {
            tick.tick().await;
            if let Ok(used) = stage.used_memory().await {
                peak = peak.max(used);
            }
            if let Ok(n) = stage.llen(&self.binary.error_queue).await {
                errors_max = errors_max.max(n);
            }
            if first_warning.is_none() {
                let at = t0.elapsed().as_secs_f64();
                for p in &mut stage.pods {
                    if let Some(line) = p
                        .new_log_lines()
                        .into_iter()
                        .find(|l| l.contains("WARN") && l.contains(policy))
                    {
                        first_warning = Some((at, p.name.clone(), shorten(&line, 240)));
                        break;
                    }
                }
            }
        }
        stage.scrape_all().await;
        let probe = match stage.pods.iter().find(|p| p.name == "probe") {
            Some(p) => {
                let answer = dsg_testkit::http_client::get(
                    p.replica.port(),
                    "/readyz",
                    Duration::from_secs(2),
                )
                .await;
                Some(match answer {
                    Some((code, body)) => ProbeReadiness {
                        status: Some(code),
                        body: shorten(body.trim(), 400),
                    },
                    None => ProbeReadiness {
                        status: None,
                        body: "no answer".into(),
                    },
                })
            }
            None => None,
        };
        let generator = &stage.pods[0];
        let run = EvictRun {
            policy: policy.to_string(),
            seconds: a.evict_seconds,
            invalid_ratio: a.evict_invalid_ratio,
            peak_used_memory_bytes: peak,
            evicted_keys: stage.info_field(InfoKind::Stats, "evicted_keys").await?,
            error_list_at_start: errors_at_start,
            error_list_max: errors_max,
            error_list_at_end: stage.llen(&self.binary.error_queue).await?,
            queue_at_end: stage.llen(&self.binary.queue).await?,
            fenced_off_log_lines: count_lines(&generator.log_text(), |l| {
                l.contains("write fenced off")
            }),
            lease_transitions: {
                let mut all = BTreeMap::new();
                for p in &stage.pods {
                    if let Some(m) = p.metrics.as_deref() {
                        for (k, v) in
                            metric_by_label(m, "dsg_lease_transitions_total", "transition")
                        {
                            *all.entry(k).or_insert(0.0) += v;
                        }
                    }
                }
                all
            },
            processed_total: stage.total("dsg_messages_processed_total") as u64,
            generated_total: stage.total("dsg_messages_generated_total") as u64,
            first_policy_warning_seconds: first_warning.as_ref().map(|w| w.0),
            first_policy_warning: first_warning.map(|(_, who, line)| format!("{who}: {line}")),
            eviction_safe: stage
                .pods
                .iter()
                .map(|p| PerProcess {
                    process: p.name.clone(),
                    value: p.sum("dsg_redis_eviction_safe"),
                })
                .collect(),
            probe,
            redis_errors: per_process(&stage.pods, |p| {
                p.metrics
                    .as_deref()
                    .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
            }),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 3: `large_messages` messages of `large_message_kib` KiB
    /// each, then one consumer with every default; its memory while it
    /// takes them all.
    async fn large(&self) -> Result<LargeRun, String> {
        let a = self.args;
        let size = a.large_message_kib * 1024;
        let name = format!(
            "{} messages of {} KiB",
            a.large_messages, a.large_message_kib
        );
        let mut stage = Stage::open(self.logs, &name, &[]).await?;
        let mut writer = MessageWriter::new();
        let well_formed =
            redis_dsg::service::message::parse(&large_message(size, &mut writer)).is_ok();
        let mut left = a.large_messages;
        while left > 0 {
            // About 7 MiB per LPUSH: large enough to be quick, small enough
            // for one reply within the client's timeout.
            let k = left.min(8);
            left -= k;
            let batch: Vec<Value> = (0..k)
                .map(|_| Value::Bytes(large_message(size, &mut writer).into()))
                .collect();
            let _: u64 = stage
                .redis
                .client()
                .lpush(&self.binary.queue, batch)
                .await
                .map_err(|e| format!("LPUSH: {e}"))?;
        }
        let used_before = stage.used_memory().await?;
        let env = self.env(&stage.url, &PodSettings::defaults(PodMode::Consumer), &[]);
        let t0 = Instant::now();
        stage.spawn(self.binary.exe, "consumer", &env)?;
        let pid = stage.pods[0]
            .replica
            .pid()
            .ok_or("the consumer did not start")?;
        let sampler = RssSampler::start(pid);
        let n = a.large_messages as f64;
        let mut used_peak = used_before;
        let done = poll(
            Duration::from_secs(180),
            Duration::from_millis(100),
            async || {
                if let Ok(u) = stage.used_memory().await {
                    used_peak = used_peak.max(u);
                }
                let pod = &mut stage.pods[0];
                let processed = pod
                    .scrape()
                    .await
                    .and_then(|m| metric_sum(m, "dsg_messages_processed_total"));
                (processed.unwrap_or(0.0) >= n).then(|| t0.elapsed())
            },
        )
        .await;
        // A moment for anything still being acknowledged twice to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stage.scrape_all().await;
        let peak_hwm = dsg_testkit::process::peak_rss_of(&pid.to_string()).unwrap_or(0);
        let (peak_sampled, samples) = sampler.stop();
        let pod = &stage.pods[0];
        let by_outcome = pod
            .metrics
            .as_deref()
            .map(|m| metric_by_label(m, "dsg_messages_processed_total", "outcome"))
            .unwrap_or_default();
        let in_flight_status = pod.replica.status().await.map(|s| s.in_flight);
        let keys = Keys::new(&self.binary.queue, &self.binary.error_queue);
        let mut in_flight_left = 0;
        for key in stage.scan(&keys.inflight("*")).await? {
            let n: u64 = stage
                .redis
                .client()
                .hlen(&key)
                .await
                .map_err(|e| e.to_string())?;
            // The marker field every in-flight hash carries is not a message.
            let marker: bool = stage
                .redis
                .client()
                .hexists(&key, INFLIGHT_MARKER)
                .await
                .map_err(|e| e.to_string())?;
            in_flight_left += n - u64::from(marker && n > 0);
        }
        let run = LargeRun {
            messages: a.large_messages,
            message_bytes: size,
            well_formed,
            redis_used_memory_after_push_bytes: used_before,
            redis_used_memory_peak_bytes: used_peak,
            all_processed_after_seconds: done.map(|d| d.as_secs_f64()),
            consumer_vm_hwm_bytes: peak_hwm,
            consumer_vm_rss_peak_sampled_bytes: peak_sampled,
            rss_samples: samples,
            processed_by_outcome: by_outcome
                .iter()
                .map(|(k, v)| (k.clone(), *v as u64))
                .collect(),
            processed_total: by_outcome.values().sum::<f64>() as u64,
            queue_at_end: stage.llen(&self.binary.queue).await?,
            error_list_at_end: stage.llen(&self.binary.error_queue).await?,
            in_flight_reported: in_flight_status,
            in_flight_left_in_redis: in_flight_left,
            redis_errors: pod
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(k, v)| (k, v as u64))
                .collect(),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 4: `MEMORY USAGE` of a queue of `queued_messages` product
    /// messages, and of the in-flight hash of a consumer holding
    /// `held_messages` (each takes 60 s, so they stay held).
    async fn bytes(&self) -> Result<QueueBytes, String> {
        let a = self.args;
        let name = format!("bytes per message, {} queued", a.queued_messages);
        let mut stage = Stage::open(self.logs, &name, &[]).await?;
        let queue = &self.binary.queue;
        super::phases::prefill(&stage.redis, queue, a.queued_messages).await?;
        let queue_len = stage.llen(queue).await?;
        let queue_usage = stage.memory_usage(queue).await?;
        let mut c = PodSettings::defaults(PodMode::Consumer);
        c.processing_ms = Some((60_000, 60_000));
        let held = a.held_messages.to_string();
        let env = self.env(
            &stage.url,
            &c,
            &[("CONSUMER_MAX_GOROUTINES", held.as_str())],
        );
        stage.start(self.binary.exe, "consumer", &env).await?;
        let pod = &stage.pods[0];
        let want = a.held_messages.min(queue_len);
        poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let s = pod.replica.status().await?;
                (u64::try_from(s.in_flight) == Ok(want)).then_some(())
            },
        )
        .await
        .ok_or_else(|| format!("the consumer did not hold {want} messages within 60 s"))?;
        let keys = Keys::new(queue, &self.binary.error_queue);
        let hashes = stage.scan(&keys.inflight("*")).await?;
        let hash = hashes
            .first()
            .ok_or("no in-flight hash found with SCAN")?
            .clone();
        let fields: u64 = stage
            .redis
            .client()
            .hlen(&hash)
            .await
            .map_err(|e| e.to_string())?;
        let marker: bool = stage
            .redis
            .client()
            .hexists(&hash, INFLIGHT_MARKER)
            .await
            .map_err(|e| e.to_string())?;
        let hash_usage = stage.memory_usage(&hash).await?;
        let held_n = fields - u64::from(marker);
        let run = QueueBytes {
            queued: queue_len,
            queue_usage_bytes: queue_usage,
            queue_bytes_per_message: queue_usage as f64 / queue_len.max(1) as f64,
            inflight_key: hash,
            inflight_fields: fields,
            inflight_marker: marker,
            held: held_n,
            inflight_usage_bytes: hash_usage,
            inflight_bytes_per_message: hash_usage as f64 / held_n.max(1) as f64,
            message_bytes: redis_dsg::service::message::GENERATED_LEN,
        };
        stage.close().await;
        Ok(run)
    }
}

/// A well-formed product message of exactly `size` bytes (at least ~90):
/// the original's format, `<uuid> at <Go time>`, whose parser reads the
/// date, the clock and the offset and takes what follows (Go's zone name
/// and monotonic reading) as informational, so padding after them keeps
/// it well-formed. The RFC 3339 format has no such room: any byte after
/// the timestamp makes it malformed.
fn large_message(size: usize, writer: &mut MessageWriter) -> Vec<u8> {
    let small = writer.batch(1).remove(0);
    let text = String::from_utf8_lossy(&small);
    let (uuid, stamp) = text.split_once(' ').unwrap_or((&text, ""));
    let (date, clock) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or(("", ""));
    let mut out = format!("{uuid} at {date} {clock} +0000 UTC m=+0.000000001 ").into_bytes();
    out.resize(size.max(out.len()), b'x');
    out
}

/// The window being measured of a full-Redis run.
struct WindowState {
    start: Duration,
    used_max: u64,
    /// When the counters below were read.
    at: Instant,
    processed: f64,
    generated: f64,
}

impl WindowState {
    /// The first window, from the counters now.
    async fn open(start: Duration, stage: &mut Stage) -> WindowState {
        stage.scrape_all().await;
        WindowState {
            start,
            used_max: 0,
            at: Instant::now(),
            processed: stage.total("dsg_messages_processed_total"),
            generated: stage.total("dsg_messages_generated_total"),
        }
    }

    /// Ends the window with the lengths and counters now; the next window
    /// starts from the same reading, so no message falls between two.
    async fn close(
        self,
        stage: &mut Stage,
        binary: &Binary<'_>,
        fill: Duration,
        length: Duration,
    ) -> Result<(Window, WindowState), String> {
        stage.scrape_all().await;
        let at = Instant::now();
        let seconds = (at - self.at).as_secs_f64().max(1e-9);
        let processed = stage.total("dsg_messages_processed_total");
        let generated = stage.total("dsg_messages_generated_total");
        let window = Window {
            start_s: self.start.as_secs_f64(),
            end_s: (self.start + length).as_secs_f64(),
            phase: if self.start < fill { "fill" } else { "consume" }.into(),
            used_memory_max_bytes: self.used_max,
            queue_length: stage.llen(&binary.queue).await?,
            error_list_length: stage.llen(&binary.error_queue).await?,
            processed_per_second: (processed - self.processed).max(0.0) / seconds,
            generated_per_second: (generated - self.generated).max(0.0) / seconds,
            processed_ratio_to_reference: None,
            generated_ratio_to_reference: None,
            generator_paused: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused", "reason"))
                .filter(|m| !m.is_empty()),
        };
        let next = WindowState {
            start: self.start + length,
            used_max: 0,
            at,
            processed,
            generated,
        };
        Ok((window, next))
    }
}

fn ratio(v: f64, reference: f64) -> Option<f64> {
    (reference > 0.0).then(|| v / reference)
}

/// Samples a process's `VmRSS` every 50 ms on its own thread (the async
/// tasks may be busy scraping), keeping the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, p, n) = (stop.clone(), peak.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = vm_rss(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                    n.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peak,
            samples,
            thread: Some(thread),
        }
    }

    /// The highest `VmRSS` seen and how many samples were taken.
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.peak.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `VmRSS` of `/proc/<pid>/status`, bytes.
fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `field:value` of an `INFO` reply, as a number.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| *k == field)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// One series of Prometheus text: name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// The series of Prometheus text format 0.0.4 (comments skipped).
fn parse_metrics(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            let Some((parsed, after)) = parse_labels(&rest[1..]) else {
                continue;
            };
            labels = parsed;
            rest = after;
        }
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.push((name, labels, v));
        }
    }
    out
}

/// `a="x",b="y"}` → the labels and what follows the brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, e) = chars.next()?;
                    value.push(match e {
                        'n' => '\n',
                        other => other,
                    });
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = &after[end + 1..];
    }
}

/// The sum of every series of `name` (`None` when it is not exported).
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The series of `name` by the value of `label` (summed over the others).
fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (n, labels, v) in parse_metrics(text) {
        if n != name {
            continue;
        }
        let key = labels
            .iter()
            .find(|(k, _)| k == label)
            .map_or_else(|| "(none)".to_string(), |(_, v)| v.clone());
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// A map per process (absent when the process exported nothing).
fn per_process(
    pods: &[Pod],
    f: impl Fn(&Pod) -> Option<BTreeMap<String, f64>>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    pods.iter()
        .filter_map(|p| {
            let m = f(p)?;
            Some((
                p.name.clone(),
                m.into_iter()
                    .filter(|(_, v)| *v > 0.0)
                    .map(|(k, v)| (k, v as u64))
                    .collect(),
            ))
        })
        .collect()
}

/// Failures naming "OOM" (WARN and ERROR lines) in each process's log, by
/// the operation the line names (`operation=…`; "(none)" for lines that
/// name none). A generator holding back on OOM says so at INFO: that is the
/// designed answer, not a failure.
fn oom_lines(pods: &[Pod]) -> BTreeMap<String, BTreeMap<String, u64>> {
    pods.iter()
        .map(|p| {
            let mut by_op = BTreeMap::new();
            for line in p.log_text().lines().filter(|l| is_oom_failure(l)) {
                *by_op.entry(operation_of(line)).or_insert(0) += 1;
            }
            (p.name.clone(), by_op)
        })
        .collect()
}

fn is_oom_failure(line: &str) -> bool {
    let failure = ["WARN", "ERROR", "\"level\":\"WARN\"", "\"level\":\"ERROR\""]
        .iter()
        .any(|level| line.contains(level));
    failure && line.contains("OOM")
}

/// The `operation` field of a log line, text (`operation="fetch"` or
/// `operation=fetch`) or JSON (`"operation":"fetch"`).
fn operation_of(line: &str) -> String {
    for key in ["operation=", "\"operation\":"] {
        if let Some(at) = line.find(key) {
            let v = &line[at + key.len()..];
            let v = v.trim_start_matches('"');
            let end = v.find(['"', ' ', ',', '}']).unwrap_or(v.len());
            return v[..end].to_string();
        }
    }
    "(none)".to_string()
}

fn count_lines(text: &str, pred: impl Fn(&str) -> bool) -> u64 {
    text.lines().filter(|l| pred(l)).count() as u64
}

/// The processes that exited during the run, with their status.
fn exited(pods: &mut [Pod]) -> BTreeMap<String, String> {
    pods.iter_mut()
        .filter_map(|p| Some((p.name.clone(), p.exit_status()?)))
        .collect()
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_label() {
        let text = "# HELP x y\n# TYPE dsg_redis_errors_total counter\n\
                    dsg_redis_errors_total{operation=\"fetch\"} 3\n\
                    dsg_redis_errors_total{operation=\"push\"} 2\n\
                    dsg_messages_processed_total{outcome=\"ok\"} 10\n\
                    dsg_messages_processed_total{outcome=\"invalid\"} 1\n\
                    dsg_build_info{version=\"0.1 \\\"x\\\"\"} 1\n\
                    dsg_is_generator 1\n";
        assert_eq!(metric_sum(text, "dsg_messages_processed_total"), Some(11.0));
        assert_eq!(metric_sum(text, "dsg_is_generator"), Some(1.0));
        assert_eq!(metric_sum(text, "dsg_generator_paused"), None);
        let errors = metric_by_label(text, "dsg_redis_errors_total", "operation");
        assert_eq!(errors.get("fetch"), Some(&3.0));
        assert_eq!(errors.get("push"), Some(&2.0));
        assert_eq!(metric_sum(text, "dsg_build_info"), Some(1.0));
    }

    #[test]
    fn log_lines_name_their_operation() {
        let text = "2026-12-06T10:00:00Z  WARN redis_dsg::service::health: fetching messages from the queue failed; retrying with a growing pause operation=\"fetch\" error=OOM command not allowed";
        assert_eq!(operation_of(text), "fetch");
        assert_eq!(
            operation_of("{\"level\":\"WARN\",\"operation\":\"push\",\"error\":\"OOM\"}"),
            "push"
        );
        assert_eq!(operation_of("OOM somewhere"), "(none)");
        assert!(is_oom_failure(text));
        assert!(!is_oom_failure(
            "2026-12-07T23:33:02Z  INFO redis_dsg::service::generator::hold_back: generator holding back: Redis refused the push: it is at maxmemory (OOM)"
        ));
    }

    #[test]
    fn a_large_message_is_well_formed_and_exactly_its_size() {
        let mut w = MessageWriter::new();
        let m = large_message(900 * 1024, &mut w);
        assert_eq!(m.len(), 900 * 1024);
        assert!(redis_dsg::service::message::parse(&m).is_ok());
    }

    #[test]
    fn info_fields_are_numbers() {
        let info =
            "# Memory\r\nused_memory:1234\r\nmaxmemory:25165824\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1234));
        assert_eq!(info_field(info, "maxmemory"), Some(25_165_824));
        assert_eq!(info_field(info, "maxmemory_policy"), None);
    }
}
