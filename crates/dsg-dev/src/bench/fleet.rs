//! `bench --fleet`: what fleets of real consumer processes cost Redis,
//! idle and at work, each scenario on its own fresh `redis-server` (no
//! persistence) so no scenario inherits another's keys or clients. An
//! empty server measured first is the reference every CPU figure is also
//! given above. The figures come from Redis' own counters
//! (`redis_load.rs`), the pods' `/status` and `LLEN`; the tables are in
//! `fleet_report.rs`, the pods' settings in `pods.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use fred::prelude::*;
use rand::RngExt;

use dsg_testkit::local_redis::{LocalRedis, connect};
use dsg_testkit::replica::Replica;
use dsg_testkit::stats::percentile;
use dsg_testkit::wait::poll;
use redis_dsg::redis::{Keys, Redis};
use redis_dsg::service::message::MessageWriter;

use super::fleet_report::{FleetReport, ReapingFigures, ScenarioFigures, WakeupFigures};
use super::pods::{Effective, PodMode, PodSettings, effective};
use super::redis_load::{RedisLoad, Snapshot, usec_per_message};
use super::{BenchArgs, progress};

/// How long a fleet's pods may take to become ready, all together (a
/// hundred processes start on two cores).
const FLEET_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The queue of the scenarios that name one (wake-up, reaping).
const QUEUE: &str = "bench";

/// The fleet scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// An empty redis-server: the reference.
    Empty,
    /// Idle consumer pods (`--idle-pods`).
    Idle,
    /// Three replicas, every setting at the binary's default.
    Default3,
    /// Three consumers and a generator at 200 msgs/s, default processing.
    Rate200,
    /// Ten consumers and a generator at 2,000 msgs/s, processing 0–50 ms.
    Rate2000,
    /// A plain LPUSH into an idle fleet until processed.
    Wakeup,
    /// A SIGKILLed consumer's messages coming back.
    Reaping,
}

/// Flags of `bench --fleet`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// Measure what fleets of consumer processes cost Redis (idle, at a
    /// rate, wake-up, reaping) instead of the bulk phases.
    #[arg(long)]
    pub fleet: bool,
    /// Run the benchmark with this redis-dsg binary instead (e.g. a
    /// baseline build), with the same scenarios (with --fleet or
    /// --memory).
    #[arg(long, value_name = "PATH", requires = "against_mode")]
    pub against: Option<PathBuf>,
    /// The scenarios to run (with --fleet).
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [
        Scenario::Empty, Scenario::Idle, Scenario::Default3, Scenario::Rate200,
        Scenario::Rate2000, Scenario::Wakeup, Scenario::Reaping,
    ])]
    pub scenarios: Vec<Scenario>,
    /// Pod counts of the idle scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 30, 100])]
    pub idle_pods: Vec<usize>,
    /// Seconds a fleet runs before its window.
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Seconds of each measurement window.
    #[arg(long, default_value_t = 15)]
    pub window_seconds: u64,
    /// Wake-up samples.
    #[arg(long, default_value_t = 20)]
    pub wakeup_samples: usize,
    /// Idle consumer pods of the wake-up scenario.
    #[arg(long, default_value_t = 10)]
    pub wakeup_pods: usize,
    /// Consumer pods of the reaping scenario.
    #[arg(long, default_value_t = 20)]
    pub reaping_pods: usize,
    /// Also run the bulk phases (ceiling, generator, drain, age, memory),
    /// so one command prints everything.
    #[arg(long, requires = "fleet")]
    pub with_bulk: bool,
}

/// One run: the binary, where pods log, the reference.
struct Fleet<'a> {
    exe: &'a Path,
    args: &'a FleetArgs,
    logs: PathBuf,
    /// The empty server's CPU, percent of a core.
    reference: Option<f64>,
    version: Option<String>,
}

/// One scenario's Redis and pods; everything is killed when dropped (pods
/// first: fields drop in order).
struct Stage {
    pods: Vec<Replica>,
    redis: Redis,
    url: String,
    logs: PathBuf,
    _server: LocalRedis,
}

impl Stage {
    /// Stops the pods, then closes the client before its server goes (a
    /// client whose server vanishes logs the broken connection).
    async fn close(mut self) {
        self.pods.clear();
        self.redis.quit().await;
    }
}

/// Counters of one window.
struct Measured {
    load: RedisLoad,
    processed: u64,
    generated: u64,
    counter_seconds: f64,
}

/// Runs the selected scenarios with `exe` (or `--against`); the figures.
pub(super) async fn measure(exe: &Path, args: &BenchArgs) -> Result<FleetReport, String> {
    let f = &args.fleet;
    let exe = f.against.as_deref().unwrap_or(exe);
    if !exe.is_file() {
        return Err(format!("{}: no such file", exe.display()));
    }
    let logs = std::env::temp_dir().join(format!("redis-dsg-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut fleet = Fleet {
        exe,
        args: f,
        logs,
        reference: None,
        version: None,
    };
    let mut report = FleetReport {
        binary: exe.display().to_string(),
        binary_version: None,
        redis_version: super::phases::redis_version(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        warmup_seconds: f.warmup_seconds,
        window_seconds: f.window_seconds,
        empty: None,
        scenarios: Vec::new(),
        wakeup: None,
        reaping: None,
        bulk: None,
    };
    fleet.run_all(&mut report).await?;
    report.binary_version = fleet.version.clone();
    if f.with_bulk {
        report.bulk = Some(super::phases::measure(exe, None, args).await?);
    }
    let _ = std::fs::remove_dir_all(&fleet.logs);
    Ok(report)
}

impl Fleet<'_> {
    async fn run_all(&mut self, report: &mut FleetReport) -> Result<(), String> {
        let on = |s: Scenario| self.args.scenarios.contains(&s);
        if on(Scenario::Empty) {
            let empty = self.empty().await?;
            self.reference = Some(empty.cpu_percent);
            report.empty = Some(empty);
        }
        if on(Scenario::Idle) {
            for &n in &self.args.idle_pods {
                let idle = PodSettings::defaults(PodMode::Consumer);
                let name = format!("{n} idle consumer pods (mode consumer)");
                report
                    .scenarios
                    .push(self.scenario(&name, &idle, n, None, None).await?);
            }
        }
        if on(Scenario::Default3) {
            let auto = PodSettings::defaults(PodMode::Auto);
            let name = "3 replicas, every setting default (mode auto)";
            report
                .scenarios
                .push(self.scenario(name, &auto, 3, None, None).await?);
        }
        if on(Scenario::Rate200) {
            report.scenarios.push(self.rate(3, 200.0, None).await?);
        }
        if on(Scenario::Rate2000) {
            report
                .scenarios
                .push(self.rate(10, 2_000.0, Some((0, 50))).await?);
        }
        if on(Scenario::Wakeup) {
            report.wakeup = Some(self.wakeup().await?);
        }
        if on(Scenario::Reaping) {
            report.reaping = Some(self.reaping().await?);
        }
        Ok(())
    }

    /// A fresh redis-server and a client of it.
    async fn open(&self, name: &str) -> Result<Stage, String> {
        progress(&format!("fleet: {name}"));
        let server = LocalRedis::start()?;
        let url = server.url();
        let redis = connect(&url, Duration::from_secs(10)).await?;
        let logs = self.logs.join(name.replace([' ', ',', '/', '(', ')'], "_"));
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        Ok(Stage {
            pods: Vec::new(),
            redis,
            url,
            logs,
            _server: server,
        })
    }

    /// `n` pods with `settings` on the stage, ready; the binary's effective
    /// settings for them.
    async fn start(
        &mut self,
        stage: &mut Stage,
        settings: &PodSettings,
        n: usize,
        prefix: &str,
    ) -> Result<Effective, String> {
        let env = settings.env(&stage.url);
        let mut pods = Replica::start_many(self.exe, &env, &stage.logs, prefix, n)?;
        let deadline = Instant::now() + FLEET_READY_TIMEOUT;
        for p in &mut pods {
            p.ready_within(deadline.saturating_duration_since(Instant::now()))
                .await?;
        }
        if self.version.is_none()
            && let Some(p) = pods.first()
        {
            self.version = p.status().await.map(|s| s.version);
        }
        stage.pods.extend(pods);
        effective(self.exe, &env)
    }

    async fn empty(&self) -> Result<RedisLoad, String> {
        let stage = self.open("empty redis-server").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let load = self.window(&stage, 0).await?.load;
        stage.close().await;
        Ok(load)
    }

    /// `n` pods with `settings` and, with `rate`, a generator pod pacing
    /// that many messages per second.
    async fn scenario(
        &mut self,
        name: &str,
        settings: &PodSettings,
        n: usize,
        generator: Option<&PodSettings>,
        target: Option<f64>,
    ) -> Result<ScenarioFigures, String> {
        let mut stage = self.open(name).await?;
        let effective = self.start(&mut stage, settings, n, "pod").await?;
        if let Some(g) = generator {
            self.start(&mut stage, g, 1, "generator").await?;
        }
        let target = target.or_else(|| {
            // Mode auto: one replica generates at its default interval.
            (settings.mode == PodMode::Auto && effective.generator.interval_ms > 0)
                .then(|| 1_000.0 / effective.generator.interval_ms as f64)
        });
        let m = self.window(&stage, self.args.warmup_seconds).await?;
        let queue = settings.queue.clone().unwrap_or(effective.redis.queue);
        let backlog: u64 = stage
            .redis
            .client()
            .llen(&queue)
            .await
            .map_err(|e| format!("LLEN {queue}: {e}"))?;
        stage.close().await;
        let mut figures = self.figures(name, n, &m, effective.consumer.reaper_interval_ms);
        figures.target_per_second = target;
        figures.backlog_at_end = backlog;
        Ok(figures)
    }

    async fn rate(
        &mut self,
        consumers: usize,
        rate: f64,
        processing_ms: Option<(u64, u64)>,
    ) -> Result<ScenarioFigures, String> {
        let mut pods = PodSettings::defaults(PodMode::Consumer);
        pods.processing_ms = processing_ms;
        let mut generator = PodSettings::defaults(PodMode::Generator);
        generator.generator_rate = Some(rate);
        let processing = processing_ms.map_or("default processing".into(), |(a, b)| {
            format!("processing {a}–{b} ms")
        });
        let name = format!("{consumers} consumers + generator at {rate} msgs/s, {processing}");
        self.scenario(&name, &pods, consumers, Some(&generator), Some(rate))
            .await
    }

    /// Sleeps `warmup_seconds`, then measures one window.
    async fn window(&self, stage: &Stage, warmup_seconds: u64) -> Result<Measured, String> {
        tokio::time::sleep(Duration::from_secs(warmup_seconds)).await;
        let before = Snapshot::take(&stage.redis).await?;
        let (t0, done0, gen0) = counters(&stage.pods).await;
        tokio::time::sleep(Duration::from_secs(self.args.window_seconds)).await;
        let after = Snapshot::take(&stage.redis).await?;
        let (t1, done1, gen1) = counters(&stage.pods).await;
        Ok(Measured {
            load: RedisLoad::between(&before, &after),
            processed: done1.saturating_sub(done0),
            generated: gen1.saturating_sub(gen0),
            counter_seconds: (t1 - t0).as_secs_f64().max(1e-9),
        })
    }

    fn figures(&self, name: &str, pods: usize, m: &Measured, reaper_ms: u64) -> ScenarioFigures {
        let (cpu, seconds) = (m.load.cpu_percent, m.load.seconds);
        ScenarioFigures {
            name: name.to_string(),
            pods,
            cpu_percent_above_empty: self.reference.map(|r| cpu - r),
            commands_per_pod_per_second: m.load.commands_per_second / pods.max(1) as f64,
            commands_per_reaper_interval: m.load.commands_per_second * reaper_ms as f64 / 1e3,
            reaper_interval_ms: reaper_ms,
            target_per_second: None,
            generated_per_second: m.generated as f64 / m.counter_seconds,
            processed_per_second: m.processed as f64 / m.counter_seconds,
            redis_usec_per_message: usec_per_message(cpu, 0.0, seconds, m.processed),
            redis_usec_per_message_above_empty: self
                .reference
                .and_then(|r| usec_per_message(cpu, r, seconds, m.processed)),
            backlog_at_end: 0,
            load: m.load.clone(),
        }
    }

    /// Wake-up: an idle fleet handing every message to an output list; the
    /// benchmark pushes one message with a plain LPUSH (it is not the
    /// generator) and BLPOPs the output list, with random gaps of
    /// 0.5–1.5 s so the fleet is idle again before each push.
    async fn wakeup(&mut self) -> Result<WakeupFigures, String> {
        let pods = self.args.wakeup_pods;
        let mut stage = self.open(&format!("wake-up, {pods} idle pods")).await?;
        let keys = Keys::new(QUEUE, &format!("{QUEUE}:errors"));
        let output = format!("{{{QUEUE}}}:out");
        let mut settings = PodSettings::defaults(PodMode::Consumer);
        settings.queue = Some(QUEUE.into());
        settings.processing_ms = Some((0, 0));
        settings.invalid_ratio = Some(0.0);
        settings.output_queue = Some(output.clone());
        self.start(&mut stage, &settings, pods, "pod").await?;
        let popper = connect(&stage.url, Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_secs(self.args.warmup_seconds)).await;
        let mut writer = MessageWriter::new();
        let (mut samples_ms, mut lost) = (Vec::new(), 0);
        for _ in 0..self.args.wakeup_samples {
            let gap_ms = rand::rng().random_range(500..=1_500);
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            let message = writer.batch(1);
            let t0 = Instant::now();
            let _: u64 = stage
                .redis
                .client()
                .lpush(&keys.queue, message[0].clone())
                .await
                .map_err(|e| format!("LPUSH: {e}"))?;
            let popped: Result<Option<(String, Value)>, _> =
                popper.client().blpop(&output, 5.0).await;
            match popped {
                Ok(Some(_)) => samples_ms.push(t0.elapsed().as_secs_f64() * 1e3),
                _ => lost += 1,
            }
        }
        popper.quit().await;
        stage.close().await;
        Ok(WakeupFigures {
            pods,
            samples: samples_ms.len(),
            lost,
            p50_ms: percentile(&samples_ms, 0.5),
            p99_ms: percentile(&samples_ms, 0.99),
            max_ms: percentile(&samples_ms, 1.0),
        })
    }

    /// Reaping: an idle fleet whose commands per reaper interval are
    /// measured first; then messages that take a minute each, and the
    /// consumer holding most of them SIGKILLed.
    async fn reaping(&mut self) -> Result<ReapingFigures, String> {
        const MESSAGES: usize = 50;
        let pods = self.args.reaping_pods;
        let name = format!("{pods} idle consumer pods, before the reaping test");
        let mut stage = self.open(&name).await?;
        let keys = Keys::new(QUEUE, &format!("{QUEUE}:errors"));
        let mut settings = PodSettings::defaults(PodMode::Consumer);
        settings.queue = Some(QUEUE.into());
        settings.processing_ms = Some((60_000, 60_000));
        settings.invalid_ratio = Some(0.0);
        let eff = self.start(&mut stage, &settings, pods, "pod").await?;
        let m = self.window(&stage, self.args.warmup_seconds).await?;
        let idle = self.figures(&name, pods, &m, eff.consumer.reaper_interval_ms);
        let batch: Vec<Value> = MessageWriter::new()
            .batch(MESSAGES)
            .into_iter()
            .map(Value::Bytes)
            .collect();
        let _: u64 = stage
            .redis
            .client()
            .lpush(&keys.queue, batch)
            .await
            .map_err(|e| format!("LPUSH: {e}"))?;
        let held = |n: i64| (n == MESSAGES as i64).then_some(());
        poll(
            Duration::from_secs(30),
            Duration::from_millis(50),
            async || held(in_flight(&stage.pods).await.iter().map(|(_, n)| n).sum()),
        )
        .await
        .ok_or("the fleet did not take every message within 30 s")?;
        let (victim, id, killed) = busiest(&stage.pods)
            .await
            .ok_or("no consumer holds messages")?;
        // The hash also holds a padding field while it holds messages; the
        // reaper removes the whole key.
        let hash = keys.inflight(&id);
        stage.pods[victim].signal(libc::SIGKILL);
        let t0 = Instant::now();
        let limit =
            Duration::from_millis(eff.consumer.heartbeat_ttl_ms + eff.consumer.reaper_interval_ms)
                + Duration::from_secs(30);
        let client = stage.redis.client().clone();
        let returned = poll(limit, Duration::from_millis(20), async || {
            let left: u64 = client.hlen(&hash).await.ok()?;
            (left == 0).then(|| t0.elapsed())
        })
        .await;
        let refetched = poll(limit, Duration::from_millis(50), async || {
            held(in_flight(&stage.pods).await.iter().map(|(_, n)| n).sum()).map(|()| t0.elapsed())
        })
        .await;
        stage.close().await;
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        Ok(ReapingFigures {
            pods,
            killed_in_flight: u64::try_from(killed).unwrap_or(0),
            returned_after_ms: ms(returned),
            refetched_after_ms: ms(refetched),
            heartbeat_ttl_ms: eff.consumer.heartbeat_ttl_ms,
            heartbeat_interval_ms: eff.consumer.heartbeat_interval_ms,
            reaper_interval_ms: eff.consumer.reaper_interval_ms,
            idle,
        })
    }
}

/// When, and the messages done and generated by every pod so far.
async fn counters(pods: &[Replica]) -> (Instant, u64, u64) {
    let mut done = 0;
    let mut generated = 0;
    for p in pods {
        let c = p.counters().await;
        done += c.done();
        generated += c.generated;
    }
    (Instant::now(), done, generated)
}

/// Each answering pod's id and messages in flight.
async fn in_flight(pods: &[Replica]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for p in pods {
        if let Some(s) = p.status().await {
            out.push((s.id, s.in_flight));
        }
    }
    out
}

/// The index, id and messages in flight of the pod holding most.
async fn busiest(pods: &[Replica]) -> Option<(usize, String, i64)> {
    let mut best: Option<(usize, String, i64)> = None;
    for (i, p) in pods.iter().enumerate() {
        if let Some(s) = p.status().await
            && s.in_flight > best.as_ref().map_or(0, |b| b.2)
        {
            best = Some((i, s.id, s.in_flight));
        }
    }
    best
}
