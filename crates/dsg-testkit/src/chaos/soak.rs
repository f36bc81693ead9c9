//! The soak's world and its phases around the faults: set up (durable
//! Redis, proxy, MONITOR audit, replicas), settle, drain with consumers
//! only, collect the evidence, clean up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use redis_dsg::config::{Config, RedisUrl};
use redis_dsg::redis::{Keys, Redis};

use crate::fencing_audit::{self, Audit};
use crate::fleet;
use crate::local_redis::LocalRedis;
use crate::proxy::Proxy;
use crate::replica::{Census, READY_TIMEOUT, Replica};
use crate::stats::percentile;
use crate::wait::poll;

use super::faults::FaultLog;
use super::reconcile::{Evidence, takeover_times_ms};
use super::summary::ChaosSummary;
use super::{ChaosArgs, aof, number_of, say};

/// The set in which the producer records each number it pushed.
pub(super) const PRODUCED_SET: &str = "{chaos}:produced";

/// The list the replicas write each processed message to.
const OUTPUT: &str = "{chaos}:out";

/// Durable Redis: every acknowledged write survives a crash. No AOF
/// rewrite, so the file keeps the whole history of pushes.
const DURABLE_REDIS: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--auto-aof-rewrite-percentage",
    "0",
];

/// Everything a soak runs and watches. The replicas come first so that,
/// dropped on an early error, they stop before the Redis they use.
pub(super) struct Soak<'a> {
    pub(super) replicas: Vec<Replica>,
    pub(super) args: &'a ChaosArgs,
    pub(super) seed: u64,
    pub(super) rng: StdRng,
    pub(super) client: Redis,
    pub(super) keys: Keys,
    pub(super) late_acks: LateAcks,
    pub(super) proxy: Proxy,
    pub(super) redis: LocalRedis,
    exe: PathBuf,
    logs: PathBuf,
    /// The replicas' environment (`MODE` aside).
    env: Vec<(String, String)>,
    audit: Arc<Mutex<Audit>>,
    monitor: JoinHandle<()>,
    stop_monitor: CancellationToken,
}

impl<'a> Soak<'a> {
    /// Starts the durable Redis, the proxy in front of it, the MONITOR
    /// audit, a client, and the replicas (in `auto` mode, through the
    /// proxy), and waits until every replica is ready.
    pub(super) async fn set_up(exe: &Path, args: &'a ChaosArgs) -> Result<Soak<'a>, String> {
        let seed = args.seed.unwrap_or_else(rand::random);
        let logs = std::env::temp_dir().join(format!("redis-dsg-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        say(&format!("seed {seed}; logs in {}", logs.display()));
        let redis = LocalRedis::start_with(&DURABLE_REDIS)?;
        let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into())
            .await
            .map_err(|e| format!("proxy: {e}"))?;
        let keys = Keys::new("chaos", "{chaos}:errors");
        let stop_monitor = CancellationToken::new();
        let audit = Arc::new(Mutex::new(Audit::new(&keys.lease(), &keys.queue)));
        let monitor = tokio::spawn(fencing_audit::follow(
            redis.port(),
            audit.clone(),
            stop_monitor.clone(),
        ));
        let client = reconnecting_client(&redis.url()).await?;
        let env = replica_env(&keys, proxy.port(), &logs)?;
        let auto = fleet::with_extra(env.clone(), &[("MODE", "auto")]);
        // All at once, as pods of a rollout come up.
        let mut replicas = Replica::start_many(exe, &auto, &logs, "replica", args.replicas)?;
        for r in replicas.iter_mut() {
            r.ready_within(READY_TIMEOUT).await?;
        }
        Ok(Soak {
            replicas,
            args,
            seed,
            rng: StdRng::seed_from_u64(seed),
            client,
            keys,
            late_acks: LateAcks::default(),
            proxy,
            redis,
            exe: exe.to_path_buf(),
            logs,
            env,
            audit,
            monitor,
            stop_monitor,
        })
    }

    /// After the faults: wakes every replica and restarts any that exited,
    /// then waits (up to 20 s) for exactly one generator and every replica
    /// ready, recording what it last saw.
    pub(super) async fn settle(&mut self, summary: &mut ChaosSummary) -> Result<(), String> {
        say("faults stopped; checking the fleet");
        for r in self.replicas.iter_mut() {
            r.signal(libc::SIGCONT);
            if r.try_wait().is_some() {
                r.restart().map_err(|e| e.to_string())?;
            }
        }
        let mut census = Census::default();
        let _ = poll(
            Duration::from_secs(20),
            Duration::from_millis(250),
            async || {
                census = Census::of(&self.replicas).await;
                census.is_settled().then_some(())
            },
        )
        .await;
        summary.generators_at_end = census.generators;
        summary.stuck_replicas = census.not_ready;
        summary.stuck_reasons = census.not_ready_reasons;
        self.late_acks.collect(&self.replicas).await;
        Ok(())
    }

    /// Stops the fleet (and with it generation), then drains the queue
    /// with two consumers only; a queue that does not drain is a violation.
    pub(super) async fn drain(&mut self, summary: &mut ChaosSummary) -> Result<(), String> {
        say("draining with consumers only");
        for r in self.replicas.iter_mut() {
            r.stop(Duration::from_secs(8));
        }
        self.late_acks.collect(&self.replicas).await;
        let consumers = fleet::with_extra(self.env.clone(), &[("MODE", "consumer")]);
        let n = self.args.replicas.min(2);
        let mut drainers = Replica::start_many(&self.exe, &consumers, &self.logs, "drainer", n)?;
        let drained = queue_drained(&self.client, &self.keys).await;
        self.late_acks.collect(&drainers).await;
        for d in drainers.iter_mut() {
            d.stop(Duration::from_secs(8));
        }
        if !drained {
            summary
                .violations
                .push("the queue did not drain within 120 s".into());
        }
        Ok(())
    }

    /// Redis-side evidence: the audit's verdict on fencing and takeovers
    /// (into `summary`), the durable pushes, and the lists as they ended.
    pub(super) async fn collect_evidence(
        &mut self,
        faults: &FaultLog,
        summary: &mut ChaosSummary,
    ) -> Result<Evidence, String> {
        self.stop_monitor.cancel();
        let _ = (&mut self.monitor).await;
        let report = self
            .audit
            .lock()
            .map(|mut a| a.report())
            .map_err(|_| "audit lock poisoned")?;
        let mut generated = aof::durable_pushes(self.redis.dir(), &self.keys.queue)?;
        generated.retain(|m, _| number_of(m).is_none() && report.generated.contains_key(m));
        summary.generated = generated.values().map(|&n| u64::from(n)).sum();
        summary.fenced_rejections = report.rejected_pushes;
        summary.fencing_violations = report.violations.len() as u64;
        for v in report.violations.iter().take(5) {
            summary.violations.push(format!("fencing: {v}"));
        }
        summary.late_acks = self.late_acks.total();
        let takeovers = takeover_times_ms(&faults.generator_faults, &report.acquisitions);
        summary.takeover_p99_ms = percentile(&takeovers, 0.99).unwrap_or(0.0);
        summary.takeover_max_ms = percentile(&takeovers, 1.0).unwrap_or(0.0);
        let read = |e: redis_dsg::redis::RedisError| e.to_string();
        let produced: Vec<String> = self
            .client
            .client()
            .smembers(PRODUCED_SET)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Evidence {
            generated,
            produced_numbers: produced.iter().filter_map(|s| s.parse().ok()).collect(),
            outputs: self.client.list(OUTPUT).await.map_err(read)?,
            errors: self
                .client
                .list(&self.keys.error_queue)
                .await
                .map_err(read)?,
        })
    }

    /// Stops everything; keeps the replica logs and the append-only file
    /// when an invariant was violated, removes them otherwise.
    pub(super) async fn clean_up(self, summary: &ChaosSummary) {
        self.proxy.stop();
        self.client.quit().await;
        drop(self.replicas);
        if summary.violations.is_empty() {
            let _ = std::fs::remove_dir_all(&self.logs);
        } else {
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(self.redis.dir())
                .arg(self.logs.join("redis"))
                .status();
            say(&format!(
                "violations found; replica logs and the AOF kept in {}",
                self.logs.display()
            ));
        }
    }
}

/// The soak's own client: reconnects by itself across Redis restarts.
async fn reconnecting_client(url: &str) -> Result<Redis, String> {
    let mut cfg = Config::default();
    cfg.redis.url = RedisUrl::new(url);
    cfg.redis.command_timeout_ms = 1000;
    cfg.redis.reconnect_max_delay_ms = 200;
    let client = Redis::for_service(&cfg.redis).map_err(|e| e.to_string())?;
    client.connect();
    client.wait_connected().await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// The replicas' settings: through the proxy, an output list, a generator
/// every 20 ms, short heartbeats and processing, and a shutdown timeout
/// that a SIGTERM fault can wait for.
fn replica_env(keys: &Keys, proxy_port: u16, logs: &Path) -> Result<Vec<(String, String)>, String> {
    let mut config = fleet::quick_config(&format!("127.0.0.1:{proxy_port}"));
    config.redis.queue = keys.queue.clone();
    config.redis.error_queue = keys.error_queue.clone();
    config.consumer.output_queue = Some(OUTPUT.to_string());
    config.generator.interval_ms = 20;
    config.consumer.heartbeat_ttl_ms = 1_500;
    config.consumer.heartbeat_interval_ms = 300;
    config.processor.max_ms = 20;
    config.shutdown.timeout_ms = 4_000;
    fleet::env_for(&config, logs, "replica")
}

/// Each process's latest late-ack count (a restart starts a new process
/// with its own counters, so they are kept by process id).
#[derive(Debug, Default)]
pub(super) struct LateAcks(HashMap<u32, u64>);

impl LateAcks {
    /// Reads the count of every replica that answers.
    pub(super) async fn collect(&mut self, replicas: &[Replica]) {
        for r in replicas {
            if let (Some(pid), Some(s)) = (r.pid(), r.status().await) {
                self.0.insert(pid, s.counters.late_acks);
            }
        }
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Waits (up to 120 s) until the queue is empty and no consumer holds a
/// message, for a second on end.
async fn queue_drained(client: &Redis, keys: &Keys) -> bool {
    let mut quiet_since: Option<Instant> = None;
    poll(
        Duration::from_secs(120),
        Duration::from_millis(200),
        async || {
            let queued: u64 = client.client().llen(keys.queue.as_str()).await.unwrap_or(1);
            let held = held_messages(client, keys).await.unwrap_or(1);
            if queued == 0 && held == 0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                (since.elapsed() > Duration::from_secs(1)).then_some(())
            } else {
                quiet_since = None;
                None
            }
        },
    )
    .await
    .is_some()
}

/// Messages held in any in-flight hash (registered or not).
async fn held_messages(client: &Redis, keys: &Keys) -> Result<u64, fred::error::Error> {
    let pattern = keys.inflight("*");
    let found: Vec<String> = client
        .client()
        .custom(
            fred::types::CustomCommand::new_static("KEYS", None, false),
            vec![pattern],
        )
        .await?;
    let mut held = 0;
    for k in found {
        let fields: Vec<String> = client.client().hkeys(k).await?;
        held += fields.iter().filter(|f| f.parse::<u64>().is_ok()).count() as u64;
    }
    Ok(held)
}
