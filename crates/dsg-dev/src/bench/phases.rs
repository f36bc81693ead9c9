//! The benchmark's phases against one Redis: the `redis-benchmark`
//! ceiling, the generator, draining a backlog, message age at a fixed rate,
//! and a consumer's memory with many messages in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, find_on_path, free_port};
use dsg_testkit::process::peak_rss_of;
use dsg_testkit::replica::{READY_TIMEOUT, Replica};
use dsg_testkit::wait::{eventually, poll};
use redis_dsg::redis::{Keys, Redis};
use redis_dsg::service::message::MessageWriter;

use super::report::{BenchReport, quantile, scrape_histogram};
use super::{BenchArgs, progress, remove_queue, replica_env, setup};

/// One benchmark run: the binary, its Redis and where the replicas log.
struct Bench {
    exe: PathBuf,
    url: String,
    port: Option<u16>,
    redis: Redis,
    logs: PathBuf,
    run_id: String,
}

/// Runs every phase; the figures.
pub(super) async fn measure(
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

/// Pushes `n` well-formed messages to `queue`, pipelined in pushes of
/// 1,000 (also the memory benchmark's queue).
pub(super) async fn prefill(redis: &Redis, queue: &str, n: u64) -> Result<(), String> {
    let mut writer = MessageWriter::new();
    let mut left = n;
    let client = redis.client();
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

/// `redis-server --version`'s version.
pub(super) fn redis_version() -> String {
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
        let base = replica_env(&self.url, &self.logs, &format!("{queue}-{mode}"), |c| {
            c.redis.queue = queue.into();
            c.redis.error_queue = format!("{queue}:errors");
            c.processor.max_ms = 0;
            c.processor.invalid_ratio = 0.0;
        })?;
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(fleet::with_extra(
            base,
            &[[("MODE", mode)].as_slice(), &extra].concat(),
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
        remove_queue(&self.redis, &Keys::new(queue, &format!("{queue}:errors"))).await;
    }

    async fn generator(&self, seconds: u64) -> Result<(f64, u64), String> {
        let queue = self.queue("generator");
        // No backlog bound: nothing consumes here, and the default bound
        // (1,000,000) would hold the generator back within the first second
        // of the window (it measured 0.2 M msgs/s for 1.2).
        let env = self.env(
            &queue,
            "generator",
            &[
                ("GENERATOR_INTERVAL", "0".into()),
                ("DSG_GENERATOR__MAX_BACKLOG", "0".into()),
            ],
        )?;
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

    async fn prefill(&self, queue: &str, n: u64) -> Result<(), String> {
        prefill(&self.redis, queue, n).await
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
        let mut done = 0;
        poll(
            Duration::from_secs(600),
            Duration::from_millis(20),
            async || {
                done = 0;
                for p in &procs {
                    done += p.counters().await.done();
                }
                if first.is_none() && done > 0 {
                    first = Some((Instant::now(), done));
                }
                (done >= n).then_some(())
            },
        )
        .await;
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
