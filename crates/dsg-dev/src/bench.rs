//! `redis-dsg bench`: throughput, latency and memory of the real binary
//! against a private `redis-server`, next to the ceiling `redis-benchmark`
//! measures on the same server in the same run. Figures are reported as
//! ratios to that ceiling, because the machine is shared and noisy.
//!
//! Phases: the `redis-benchmark` ceiling (pipelined LPUSH and LPOP); one
//! generator at interval 0; one and two consumer processes draining a
//! pre-filled backlog with processing time 0; end-to-end message age at a
//! fixed rate; consumer memory with 10,000 messages in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use fred::prelude::*;
use serde::Serialize;

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, connect, find_on_path, free_port};
use dsg_testkit::process::peak_rss_of;
use dsg_testkit::replica::{READY_TIMEOUT, Replica};
use dsg_testkit::wait::eventually;
use redis_dsg::redis::Redis;
use redis_dsg::service::message::MessageWriter;

/// Flags of `bench`.
#[derive(Debug, Args)]
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
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct BenchReport {
    /// `redis-server --version`.
    pub redis_version: String,
    /// CPU cores available.
    pub cores: usize,
    /// `redis-benchmark -P 64 -c 50 -t lpush` requests (elements) per second.
    pub ceiling_lpush_per_second: Option<f64>,
    /// `redis-benchmark -P 64 -c 50 -t lpop` requests per second.
    pub ceiling_lpop_per_second: Option<f64>,
    /// Generator at interval 0, messages per second.
    pub generator_per_second: f64,
    /// Backlog drained by one consumer process, messages per second.
    pub drain_1_consumer_per_second: f64,
    /// Backlog drained by two consumer processes, messages per second.
    pub drain_2_consumers_per_second: f64,
    /// Median message age at the fixed rate, milliseconds.
    pub age_p50_ms: f64,
    /// 99th percentile message age at the fixed rate, milliseconds.
    pub age_p99_ms: f64,
    /// The fixed rate of the latency phase.
    pub latency_rate: u64,
    /// Peak RSS of the generator process, bytes.
    pub generator_peak_rss_bytes: u64,
    /// Peak RSS of the single draining consumer, bytes.
    pub consumer_peak_rss_bytes: u64,
    /// RSS of a consumer holding `in_flight` messages, bytes.
    pub consumer_rss_at_in_flight_bytes: u64,
    /// Messages held in the memory phase.
    pub in_flight: u64,
}

/// Runs the benchmark with the redis-dsg binary `exe`; returns the exit
/// code.
pub(crate) async fn run(exe: &Path, redis_url: Option<&str>, args: &BenchArgs) -> u8 {
    if args.sentinel {
        let series = sentinel_failover(exe, args).await;
        return report(series, args.json, |s| {
            crate::failover_bench::render_sentinel(s)
        });
    }
    if args.failover {
        let series = failover(exe, redis_url, args).await;
        return report(series, args.json, |s| crate::failover_bench::render(s));
    }
    report(measure(exe, redis_url, args).await, args.json, render)
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

struct Bench {
    exe: PathBuf,
    url: String,
    port: Option<u16>,
    redis: Redis,
    logs: PathBuf,
    run_id: String,
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
) -> Result<Vec<crate::failover_bench::FailoverSeries>, String> {
    let (local, url, redis, logs) = setup(redis_url).await?;
    let series =
        crate::failover_bench::measure(exe, &url, &redis, &logs, &args.ttl_ms, args.trials).await;
    redis.quit().await;
    let _ = std::fs::remove_dir_all(&logs);
    drop(local);
    series
}

async fn sentinel_failover(
    exe: &Path,
    args: &BenchArgs,
) -> Result<Vec<crate::failover_bench::SentinelSeries>, String> {
    let logs = std::env::temp_dir().join(format!("redis-dsg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let series = crate::failover_bench::measure_sentinel(
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

async fn measure(
    exe: &Path,
    redis_url: Option<&str>,
    args: &BenchArgs,
) -> Result<BenchReport, String> {
    let (local, url, redis, logs) = setup(redis_url).await?;
    let bench = Bench {
        exe: exe.to_path_buf(),
        port: local.as_ref().map(LocalRedis::port),
        url,
        redis,
        logs,
        run_id: format!("{:08x}", rand::random::<u32>()),
    };
    let mut report = BenchReport {
        redis_version: redis_version(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        latency_rate: args.latency_rate,
        in_flight: args.in_flight,
        ..Default::default()
    };

    progress("ceiling: redis-benchmark -P 64 -c 50 -t lpush,lpop");
    if let Some(port) = bench.port {
        let (push, pop) = redis_benchmark(port);
        report.ceiling_lpush_per_second = push;
        report.ceiling_lpop_per_second = pop;
    }

    progress("generator at interval 0");
    let (rate, rss) = bench.generator(args.seconds).await?;
    report.generator_per_second = rate;
    report.generator_peak_rss_bytes = rss;

    progress(&format!("drain {} messages with 1 consumer", args.messages));
    let (rate, rss) = bench.drain(args.messages, 1).await?;
    report.drain_1_consumer_per_second = rate;
    report.consumer_peak_rss_bytes = rss;

    progress(&format!(
        "drain {} messages with 2 consumers",
        args.messages
    ));
    report.drain_2_consumers_per_second = bench.drain(args.messages, 2).await?.0;

    progress(&format!("message age at {} msgs/s", args.latency_rate));
    let (p50, p99) = bench.latency(args.latency_rate, args.seconds).await?;
    report.age_p50_ms = p50 * 1000.0;
    report.age_p99_ms = p99 * 1000.0;

    progress(&format!(
        "consumer memory with {} messages in flight",
        args.in_flight
    ));
    report.consumer_rss_at_in_flight_bytes = bench.memory(args.in_flight).await?;

    bench.redis.quit().await;
    let _ = std::fs::remove_dir_all(&bench.logs);
    drop(local);
    Ok(report)
}

/// Reports a benchmark phase on standard error.
pub(crate) fn progress(what: &str) {
    eprintln!("redis-dsg bench: {what} …");
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|v| v[2..].to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `redis-benchmark`; its LPUSH and LPOP requests per second.
fn redis_benchmark(port: u16) -> (Option<f64>, Option<f64>) {
    if find_on_path("redis-benchmark").is_none() {
        eprintln!("redis-dsg bench: redis-benchmark is not on PATH; no ceiling");
        return (None, None);
    }
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-q",
            "-P",
            "64",
            "-c",
            "50",
            "-n",
            "2000000",
            "-t",
            "lpush,lpop",
        ])
        .output();
    let Ok(out) = out else { return (None, None) };
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let rate = |name: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(name))
            .filter_map(|l| {
                l.split(':')
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .next_back()
    };
    (rate("LPUSH"), rate("LPOP"))
}

impl Bench {
    /// Replicas of one phase in `mode` on `queue`, processing in no time,
    /// with `extra` variables on top.
    fn env(
        &self,
        queue: &str,
        mode: &str,
        extra: &[(&str, String)],
    ) -> Result<Vec<(String, String)>, String> {
        let mut config = redis_dsg::config::Config::default();
        config.redis.url = redis_dsg::config::RedisUrl::new(self.url.clone());
        config.redis.queue = queue.into();
        config.redis.error_queue = format!("{queue}:errors");
        config.processor.max_ms = 0;
        config.processor.invalid_ratio = 0.0;
        let base = fleet::env_for(&config, &self.logs, &format!("{queue}-{mode}"))?;
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(fleet::with_extra(
            base,
            &[[("MODE", mode), ("RUST_LOG", "warn")].as_slice(), &extra].concat(),
        ))
    }

    fn queue(&self, phase: &str) -> String {
        format!("bench:{}:{phase}", self.run_id)
    }

    async fn start(&self, name: &str, env: &[(String, String)]) -> Result<Replica, String> {
        let mut r = Replica::start(
            &self.exe,
            free_port(),
            env,
            &self.logs.join(format!("{name}.log")),
        )
        .map_err(|e| format!("cannot start {name}: {e}"))?;
        r.ready_within(READY_TIMEOUT).await?;
        Ok(r)
    }

    async fn clean(&self, queue: &str) {
        remove_queue(
            &self.redis,
            &redis_dsg::redis::Keys::new(queue, &format!("{queue}:errors")),
        )
        .await;
    }

    async fn generator(&self, seconds: u64) -> Result<(f64, u64), String> {
        let queue = self.queue("generator");
        let env = self.env(&queue, "generator", &[("GENERATOR_INTERVAL", "0".into())])?;
        let mut g = self.start("generator", &env).await?;
        eventually(Duration::from_secs(15), async || g.is_generator().await).await;
        let (t0, n0) = (Instant::now(), g.counters().await.generated);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (t1, n1) = (Instant::now(), g.counters().await.generated);
        let rss = g
            .pid()
            .and_then(|p| peak_rss_of(&p.to_string()))
            .unwrap_or(0);
        g.stop(Duration::from_secs(10));
        self.clean(&queue).await;
        Ok(((n1 - n0) as f64 / (t1 - t0).as_secs_f64(), rss))
    }

    /// Pushes `n` well-formed messages.
    async fn prefill(&self, queue: &str, n: u64) -> Result<(), String> {
        let mut writer = MessageWriter::new();
        let mut left = n;
        let client = self.redis.client();
        while left > 0 {
            let pipeline = client.pipeline();
            for _ in 0..20 {
                if left == 0 {
                    break;
                }
                let k = left.min(1000);
                left -= k;
                let batch: Vec<Value> = writer
                    .batch(k as usize)
                    .into_iter()
                    .map(Value::Bytes)
                    .collect();
                let _: () = pipeline
                    .lpush(queue, batch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let _: Vec<Value> = pipeline.all().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn drain(&self, n: u64, consumers: usize) -> Result<(f64, u64), String> {
        let queue = self.queue(&format!("drain{consumers}"));
        self.prefill(&queue, n).await?;
        let env = self.env(&queue, "consumer", &[])?;
        let mut procs = Replica::start_many(
            &self.exe,
            &env,
            &self.logs,
            &format!("drain{consumers}"),
            consumers,
        )?;
        // Measure from the first processed message to the last, so process
        // start-up does not count.
        let mut first: Option<(Instant, u64)> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut done;
        loop {
            done = 0;
            for p in &procs {
                done += p.counters().await.done();
            }
            let now = Instant::now();
            if first.is_none() && done > 0 {
                first = Some((now, done));
            }
            if done >= n || now > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let end = Instant::now();
        let rss = procs
            .first()
            .and_then(|p| p.pid())
            .and_then(|p| peak_rss_of(&p.to_string()))
            .unwrap_or(0);
        for p in procs.iter_mut() {
            p.stop(Duration::from_secs(10));
        }
        self.clean(&queue).await;
        let (t0, n0) = first.ok_or("nothing was processed")?;
        if done < n {
            return Err(format!(
                "only {done} of {n} messages were processed within 10 minutes"
            ));
        }
        Ok(((done - n0) as f64 / (end - t0).as_secs_f64().max(1e-6), rss))
    }

    async fn latency(&self, rate: u64, seconds: u64) -> Result<(f64, f64), String> {
        let queue = self.queue("latency");
        let g_env = self.env(
            &queue,
            "generator",
            &[
                ("GENERATOR_INTERVAL", "0".into()),
                ("DSG_GENERATOR__RATE", rate.to_string()),
            ],
        )?;
        let c_env = self.env(&queue, "consumer", &[])?;
        let mut c = self.start("latency-consumer", &c_env).await?;
        let mut g = self.start("latency-generator", &g_env).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = scrape_histogram(c.port(), "dsg_message_age_seconds").await;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let after = scrape_histogram(c.port(), "dsg_message_age_seconds").await;
        g.stop(Duration::from_secs(10));
        c.stop(Duration::from_secs(10));
        self.clean(&queue).await;
        let delta: Vec<(f64, f64)> = after
            .iter()
            .map(|(le, n)| {
                (
                    *le,
                    n - before
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, b)| *b),
                )
            })
            .collect();
        Ok((quantile(&delta, 0.5), quantile(&delta, 0.99)))
    }

    async fn memory(&self, in_flight: u64) -> Result<u64, String> {
        let queue = self.queue("memory");
        self.prefill(&queue, in_flight * 2).await?;
        // Every message takes 30 s, so the consumer fills up to its limit
        // and holds it while we measure.
        let env = self.env(
            &queue,
            "consumer",
            &[
                ("CONSUMER_MAX_GOROUTINES", in_flight.to_string()),
                ("DSG_PROCESSOR__MIN_MS", "30000".into()),
                ("DSG_PROCESSOR__MAX_MS", "30000".into()),
                ("DSG_SHUTDOWN__TIMEOUT_MS", "3000".into()),
            ],
        )?;
        let mut c = self.start("memory-consumer", &env).await?;
        eventually(Duration::from_secs(20), async || {
            c.status()
                .await
                .is_some_and(|s| u64::try_from(s.in_flight) == Ok(in_flight))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = c
            .pid()
            .and_then(|p| dsg_testkit::process::rss_of(&p.to_string()))
            .unwrap_or(0);
        c.stop(Duration::from_secs(10));
        self.clean(&queue).await;
        Ok(rss)
    }
}

/// Removes a benchmark queue and the keys derived from it.
pub(crate) async fn remove_queue(redis: &Redis, keys: &redis_dsg::redis::Keys) {
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

/// Cumulative `(le, count)` buckets of a histogram from `/metrics`.
pub(crate) async fn scrape_histogram(port: u16, name: &str) -> Vec<(f64, f64)> {
    let Some((_, body)) =
        dsg_testkit::http_client::get(port, "/metrics", Duration::from_secs(2)).await
    else {
        return Vec::new();
    };
    parse_histogram(&body, name)
}

/// Parses cumulative buckets of `name` from Prometheus text.
pub(crate) fn parse_histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within a
/// bucket (as Prometheus' `histogram_quantile`).
pub(crate) fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let Some(&(_, total)) = b.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &b {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, count);
    }
    prev.0
}

fn render(r: &BenchReport) -> String {
    let ratio = |v: f64, c: Option<f64>| c.map_or("-".to_string(), |c| format!("{:.2}", v / c));
    let per_s = |v: f64| format!("{:>12.0} /s", v);
    let opt = |v: Option<f64>| v.map_or(format!("{:>14}", "-"), per_s);
    let mb = |b: u64| format!("{:>11.1} MB", b as f64 / 1_048_576.0);
    let mut s = format!(
        "redis-dsg bench: redis-server {} on loopback, {} cores\n\n{:<48} {:>14}  {}\n",
        r.redis_version, r.cores, "measure", "value", "ratio to ceiling"
    );
    let mut line = |name: &str, value: String, ratio: String| {
        s.push_str(&format!("{name:<48} {value:>14}  {ratio}\n"));
    };
    line(
        "ceiling: redis-benchmark LPUSH -P 64 -c 50",
        opt(r.ceiling_lpush_per_second),
        "1.00".into(),
    );
    line(
        "ceiling: redis-benchmark LPOP -P 64 -c 50",
        opt(r.ceiling_lpop_per_second),
        "1.00".into(),
    );
    line(
        "generator, GENERATOR_INTERVAL=0",
        per_s(r.generator_per_second),
        format!(
            "{} of LPUSH",
            ratio(r.generator_per_second, r.ceiling_lpush_per_second)
        ),
    );
    line(
        "drain backlog, 1 consumer process",
        per_s(r.drain_1_consumer_per_second),
        format!(
            "{} of LPOP",
            ratio(r.drain_1_consumer_per_second, r.ceiling_lpop_per_second)
        ),
    );
    line(
        "drain backlog, 2 consumer processes",
        per_s(r.drain_2_consumers_per_second),
        format!(
            "{} of LPOP",
            ratio(r.drain_2_consumers_per_second, r.ceiling_lpop_per_second)
        ),
    );
    line(
        &format!("message age p50 at {} msgs/s", r.latency_rate),
        format!("{:>11.2} ms", r.age_p50_ms),
        String::new(),
    );
    line(
        &format!("message age p99 at {} msgs/s", r.latency_rate),
        format!("{:>11.2} ms", r.age_p99_ms),
        String::new(),
    );
    line(
        "peak RSS, generator",
        mb(r.generator_peak_rss_bytes),
        String::new(),
    );
    line(
        "peak RSS, consumer draining",
        mb(r.consumer_peak_rss_bytes),
        String::new(),
    );
    line(
        &format!("RSS, consumer with {} in flight", r.in_flight),
        mb(r.consumer_rss_at_in_flight_bytes),
        String::new(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = vec![
            (0.001, 50.0),
            (0.002, 90.0),
            (0.005, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5) - 0.001).abs() < 1e-9);
        assert!((quantile(&b, 0.7) - 0.0015).abs() < 1e-9);
        assert!((quantile(&b, 0.95) - 0.0035).abs() < 1e-9);
        let text = "x_bucket{le=\"0.001\"} 5\nx_bucket{le=\"+Inf\"} 7\nx_count 7\n";
        assert_eq!(
            parse_histogram(text, "x"),
            vec![(0.001, 5.0), (f64::INFINITY, 7.0)]
        );
    }
}
