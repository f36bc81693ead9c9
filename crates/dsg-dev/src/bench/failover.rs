//! `redis-dsg bench --failover`: how long the fleet is without a generator
//! after its generator stops, measured on Redis itself.
//!
//! Three replicas in `auto` mode; in each trial the current generator gets
//! SIGTERM (graceful handover) or SIGKILL (crash), and the benchmark polls
//! the lease key every millisecond until another replica holds it. The
//! killed replica is started again before the next trial.

use std::path::Path;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::Serialize;

use dsg_testkit::fleet;
use dsg_testkit::replica::{READY_TIMEOUT, Replica};
use dsg_testkit::stats::percentile;
use dsg_testkit::wait::within;
use redis_dsg::redis::{Keys, Redis};
use redis_dsg::service::LeaseToken;

use super::{progress, remove_queue, replica_env};

/// Figures of one series of trials.
#[derive(Debug, Serialize)]
pub(super) struct FailoverSeries {
    /// `SIGTERM` or `SIGKILL`.
    pub signal: &'static str,
    /// The lease TTL of the replicas, milliseconds.
    pub ttl_ms: u64,
    /// Trials run.
    pub trials: usize,
    /// Median time to the next holder, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), milliseconds.
    pub p99_ms: f64,
    /// Longest, milliseconds.
    pub max_ms: f64,
    /// The median as a share of the TTL.
    pub p50_ttl_ratio: f64,
}

/// How the generator is stopped in a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StopSignal {
    /// SIGTERM: a graceful handover (release and notice).
    Term,
    /// SIGKILL: a crash; takeover once the lease expires.
    Kill,
}

impl StopSignal {
    fn number_and_name(self) -> (i32, &'static str) {
        match self {
            StopSignal::Term => (libc::SIGTERM, "SIGTERM"),
            StopSignal::Kill => (libc::SIGKILL, "SIGKILL"),
        }
    }
}

/// Runs `trials` trials of each signal with each TTL.
pub(super) async fn measure(
    exe: &Path,
    url: &str,
    redis: &Redis,
    logs: &Path,
    ttls_ms: &[u64],
    signals: &[StopSignal],
    trials: usize,
) -> Result<Vec<FailoverSeries>, String> {
    let mut out = Vec::new();
    for &ttl in ttls_ms {
        for (signal, name) in signals.iter().map(|s| s.number_and_name()) {
            progress(&format!(
                "failover: {trials} × {name} with lease TTL {ttl} ms"
            ));
            let times = series(exe, url, redis, logs, ttl, signal, trials).await?;
            out.push(summarize(name, ttl, &times));
        }
    }
    Ok(out)
}

fn summarize(signal: &'static str, ttl_ms: u64, times: &[f64]) -> FailoverSeries {
    let pick = |q: f64| percentile(times, q).unwrap_or(f64::NAN);
    FailoverSeries {
        signal,
        ttl_ms,
        trials: times.len(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        p50_ttl_ratio: pick(0.5) / ttl_ms as f64,
    }
}

async fn holder(redis: &Redis, keys: &Keys) -> Option<String> {
    let token: Option<String> = redis.client().get(keys.lease()).await.ok().flatten();
    token.map(|t| LeaseToken::parse(&t).map_or(t, |t| t.holder))
}

/// One series: 3 replicas with lease TTL `ttl` ms; `trials` times, the
/// generator gets `signal` and the time to the next holder is taken.
async fn series(
    exe: &Path,
    url: &str,
    redis: &Redis,
    logs: &Path,
    ttl: u64,
    signal: i32,
    trials: usize,
) -> Result<Vec<f64>, String> {
    let queue = format!("failover:{:08x}", rand::random::<u32>());
    let keys = Keys::new(&queue, &format!("{queue}:errors"));
    // Their own queue, a generator every 100 ms, no processing time.
    let env = replica_env(url, logs, &keys.queue, |c| {
        c.redis.queue = keys.queue.clone();
        c.redis.error_queue = keys.error_queue.clone();
        c.generator.interval_ms = 100;
        c.lease.ping_interval_seconds = (ttl / 1000).max(1);
        fleet::set_lease_ttl(c, ttl);
        c.processor.max_ms = 0;
    })?;
    let prefix = format!("failover-{ttl}-{signal}");
    let mut replicas = Replica::start_ready(exe, &env, logs, &prefix, 3).await?;
    // Long enough for a lease to expire and a slow machine to notice.
    let patience = Duration::from_millis(ttl * 3 + 10_000);
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let (index, old) = current_generator(redis, &keys, &replicas, patience).await?;
        let sent = Instant::now();
        replicas[index].signal(signal);
        let taken = within(
            "a takeover",
            patience,
            Duration::from_millis(1),
            async || {
                let new = holder(redis, &keys).await.filter(|h| *h != old);
                new.map(|_| Instant::now())
            },
        )
        .await?;
        times.push((taken - sent).as_secs_f64() * 1000.0);
        let stopped = &mut replicas[index];
        let _ = stopped.wait_timeout(Duration::from_secs(30));
        stopped.restart().map_err(|e| e.to_string())?;
        stopped.ready_within(READY_TIMEOUT).await?;
    }
    for r in replicas.iter_mut() {
        r.stop(Duration::from_secs(10));
    }
    remove_queue(redis, &keys).await;
    Ok(times)
}

/// The replica holding the lease, found through its status (the lease
/// names its id), and the holder's id.
async fn current_generator(
    redis: &Redis,
    keys: &Keys,
    replicas: &[Replica],
    patience: Duration,
) -> Result<(usize, String), String> {
    within(
        "a generator",
        patience,
        Duration::from_millis(20),
        async || {
            let h = holder(redis, keys).await?;
            for (i, r) in replicas.iter().enumerate() {
                if r.status().await.is_some_and(|s| s.id == h) {
                    return Some((i, h));
                }
            }
            None
        },
    )
    .await
}

/// The series as a table.
pub(super) fn render(series: &[FailoverSeries]) -> String {
    let mut s = format!(
        "\n{:<9} {:>8} {:>7} {:>10} {:>10} {:>10} {:>12}\n",
        "signal", "TTL ms", "trials", "p50 ms", "p99 ms", "max ms", "p50 / TTL"
    );
    for x in series {
        s.push_str(&format!(
            "{:<9} {:>8} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>12.3}\n",
            x.signal, x.ttl_ms, x.trials, x.p50_ms, x.p99_ms, x.max_ms, x.p50_ttl_ratio
        ));
    }
    s
}
