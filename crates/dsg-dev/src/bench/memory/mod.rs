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
//! `memory_report.rs`; the scenarios in `scenarios.rs`, reading the
//! processes' metrics and logs in `parse.rs`.

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

mod parse;
mod scenarios;

use super::memory_report::{
    EvictRun, FullRun, LargeRun, MemoryReport, PerProcess, ProbeReadiness, QueueBytes, Window,
};
use super::pods::{PodMode, PodSettings};
use super::{BenchArgs, progress};
use parse::*;

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
