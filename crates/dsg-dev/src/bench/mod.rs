//! `redis-dsg bench`: throughput, latency and memory of the real binary
//! against a private `redis-server`, next to the ceiling `redis-benchmark`
//! measures on the same server in the same run. Figures are reported as
//! ratios to that ceiling, because the machine is shared and noisy.
//!
//! Phases (`phases.rs`): the `redis-benchmark` ceiling (pipelined LPUSH and
//! LPOP); one generator at interval 0; one and two consumer processes
//! draining a pre-filled backlog with processing time 0; end-to-end message
//! age at a fixed rate; consumer memory with 10,000 messages in flight.
//! The figures and their table are in `report.rs`; `--failover` measures
//! handover and takeover instead (`failover.rs`), and `--failover
//! --sentinel` a Sentinel failover of Redis itself (`sentinel.rs`), and
//! `--fleet` what fleets of consumer processes cost Redis, idle and at a
//! rate, with wake-up latency and reaping (`fleet.rs`), and `--memory`
//! what the service does when Redis memory runs out (`noeviction` at
//! `maxmemory`, against the same load without a limit; `allkeys-lru` and
//! `volatile-lru`), a default consumer's memory with 900 KiB messages, and
//! Redis' bytes per queued and per held message (`memory.rs`). `--fleet`
//! and `--memory` run another binary with `--against`.

mod failover;
mod fleet;
mod fleet_report;
mod memory;
mod memory_report;
mod phases;
mod pods;
mod redis_load;
mod report;
mod sentinel;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use fred::prelude::*;
use serde::Serialize;

use dsg_testkit::local_redis::{LocalRedis, connect};
use redis_dsg::config::{Config, RedisUrl};
use redis_dsg::redis::{Keys, Redis};

/// Flags of `bench`. `--against` (in [`fleet::FleetArgs`]) needs one of
/// the modes that take it.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("against_mode").args(["fleet", "memory"]).multiple(true)))]
pub(crate) struct BenchArgs {
    /// Size of the pre-filled backlog the consumers drain.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Seconds the generator and latency phases measure.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Generator rate (msgs/s) for the latency phase.
    #[arg(long, default_value_t = 10_000)]
    pub latency_rate: u64,
    /// Messages held at once in the memory phase.
    #[arg(long, default_value_t = 10_000)]
    pub in_flight: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure failover instead: handover after SIGTERM and takeover after
    /// SIGKILL of the generator among 3 replicas.
    #[arg(long)]
    pub failover: bool,
    /// Trials per signal and TTL (with --failover).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Lease TTLs to measure, milliseconds (with --failover).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000])]
    pub ttl_ms: Vec<u64>,
    /// Signals to send the generator (with --failover): `term` (graceful
    /// handover), `kill` (crash, takeover after the TTL), or both.
    #[arg(long, value_delimiter = ',', default_values = ["term", "kill"])]
    pub signals: Vec<failover::StopSignal>,
    /// With --failover: SIGKILL the Redis primary of a local Sentinel
    /// topology (1 primary, 1 replica, 3 sentinels) instead of the
    /// generator, and time promotion and recovery of processing.
    #[arg(long, requires = "failover")]
    pub sentinel: bool,
    /// Sentinel's down-after-milliseconds (with --sentinel).
    #[arg(long, default_value_t = 1_000, requires = "sentinel")]
    pub down_after_ms: u64,
    /// The replicas' redis.reconnect_max_delay_ms values to measure (with
    /// --sentinel).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 250], requires = "sentinel")]
    pub reconnect_max_delay_ms: Vec<u64>,
    /// The fleet benchmark's flags (`--fleet`).
    #[command(flatten)]
    pub fleet: fleet::FleetArgs,
    /// The memory benchmark's flags (`--memory`).
    #[command(flatten)]
    pub memory: memory::MemoryArgs,
}

/// Runs the benchmark with the redis-dsg binary `exe`; returns the exit
/// code.
pub(crate) async fn run(exe: &Path, redis_url: Option<&str>, args: &BenchArgs) -> u8 {
    if args.sentinel {
        let series = sentinel_failover(exe, args).await;
        return report(series, args.json, |s| sentinel::render(s));
    }
    if args.memory.memory {
        if redis_url.is_some() {
            eprintln!(
                "bench: --memory starts its own redis-server per scenario; --redis-url is not used"
            );
            return 2;
        }
        // Ctrl-C or SIGTERM drops the run, and with it every process and
        // redis-server it started (each is killed when dropped): they run
        // in their own process groups, so the terminal's signal reaches
        // only this program.
        let figures = tokio::select! {
            f = memory::measure(exe, args) => f,
            s = interrupted() => Err(format!(
                "interrupted by {s}; every process it started was stopped (logs in {})",
                memory::logs_dir().display()
            )),
        };
        return report(figures, args.json, memory_report::render);
    }
    if args.fleet.fleet {
        if redis_url.is_some() {
            eprintln!(
                "bench: --fleet starts its own redis-server per scenario; --redis-url is not used"
            );
            return 2;
        }
        return report(
            fleet::measure(exe, args).await,
            args.json,
            fleet_report::render,
        );
    }
    if args.failover {
        let series = failover(exe, redis_url, args).await;
        return report(series, args.json, |s| failover::render(s));
    }
    report(
        phases::measure(exe, redis_url, args).await,
        args.json,
        report::render,
    )
}

/// Waits for Ctrl-C or SIGTERM; which one.
async fn interrupted() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => "SIGTERM",
    }
}

/// Prints figures as JSON or as a table; returns the exit code.
fn report<T: Serialize>(
    figures: Result<T, String>,
    json: bool,
    table: impl Fn(&T) -> String,
) -> u8 {
    match figures {
        Ok(f) => {
            if json {
                // Figures are numbers and strings: they always serialize.
                let text = serde_json::to_string_pretty(&f).expect("figures serialize");
                println!("{text}");
            } else {
                print!("{}", table(&f));
            }
            0
        }
        Err(e) => {
            eprintln!("bench: {e}");
            1
        }
    }
}

/// A private redis-server (unless `--redis-url` names one: never taken from
/// `REDIS_URL`, so the benchmark cannot fill a production Redis by
/// accident), a client, a log directory.
async fn setup(
    redis_url: Option<&str>,
) -> Result<(Option<LocalRedis>, String, Redis, PathBuf), String> {
    let (local, url) = match redis_url {
        Some(u) => (None, u.to_string()),
        None => {
            let l = LocalRedis::start()?;
            let url = l.url();
            (Some(l), url)
        }
    };
    let redis = connect(&url, Duration::from_secs(5)).await?;
    let logs = std::env::temp_dir().join(format!("redis-dsg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    Ok((local, url, redis, logs))
}

async fn failover(
    exe: &Path,
    redis_url: Option<&str>,
    args: &BenchArgs,
) -> Result<Vec<failover::FailoverSeries>, String> {
    let (local, url, redis, logs) = setup(redis_url).await?;
    let series = failover::measure(
        exe,
        &url,
        &redis,
        &logs,
        &args.ttl_ms,
        &args.signals,
        args.trials,
    )
    .await;
    redis.quit().await;
    let _ = std::fs::remove_dir_all(&logs);
    drop(local);
    series
}

async fn sentinel_failover(
    exe: &Path,
    args: &BenchArgs,
) -> Result<Vec<sentinel::SentinelSeries>, String> {
    let logs = std::env::temp_dir().join(format!("redis-dsg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let series = sentinel::measure(
        exe,
        &logs,
        &args.reconnect_max_delay_ms,
        args.down_after_ms,
        args.trials,
    )
    .await;
    if series.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    }
    series
}

/// The settings of a benchmark's replicas, written to `<logs>/<name>.toml`:
/// the product's defaults on `url` (so the figures are the product's) with
/// `tune` on top, logging warnings only (a line per message would be
/// measured too).
fn replica_env(
    url: &str,
    logs: &Path,
    name: &str,
    tune: impl FnOnce(&mut Config),
) -> Result<Vec<(String, String)>, String> {
    let mut config = Config::default();
    config.redis.url = RedisUrl::new(url);
    tune(&mut config);
    Ok(dsg_testkit::fleet::with_extra(
        dsg_testkit::fleet::env_for(&config, logs, name)?,
        &[("RUST_LOG", "warn")],
    ))
}

/// Reports a benchmark phase on standard error.
fn progress(what: &str) {
    eprintln!("redis-dsg bench: {what} …");
}

/// Removes a benchmark queue and the keys derived from it.
async fn remove_queue(redis: &Redis, keys: &Keys) {
    let _: Result<(), _> = redis
        .client()
        .unlink(vec![
            keys.queue.clone(),
            keys.error_queue.clone(),
            keys.lease(),
            keys.epoch(),
            keys.consumers(),
        ])
        .await;
}
