//! `redis-dsg bench --failover`: how long the fleet is without a generator
//! after its generator stops, measured on Redis itself.
//!
//! Three replicas in `auto` mode; in each trial the current generator gets
//! SIGTERM (graceful handover) or SIGKILL (crash), and the benchmark polls
//! the lease key every millisecond until another replica holds it. The
//! killed replica is started again before the next trial.

use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::Serialize;

use crate::keys::Keys;
use crate::lease::parse_token;
use crate::local_redis::free_port;
use crate::redis::Redis;
use crate::replica::Replica;

/// Figures of one series of trials.
#[derive(Debug, Serialize)]
pub struct FailoverSeries {
    /// `SIGTERM` or `SIGKILL`.
    pub signal: &'static str,
    /// The lease TTL of the replicas, milliseconds.
    pub ttl_ms: u64,
    /// Trials run.
    pub trials: usize,
    /// Median time to the next holder, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (the worst of 20 trials), milliseconds.
    pub p99_ms: f64,
    /// Longest, milliseconds.
    pub max_ms: f64,
    /// The median as a share of the TTL.
    pub p50_ttl_ratio: f64,
}

/// Runs `trials` SIGTERM and `trials` SIGKILL trials with each TTL.
pub async fn measure(
    exe: &std::path::Path,
    url: &str,
    redis: &Redis,
    logs: &std::path::Path,
    ttls_ms: &[u64],
    trials: usize,
) -> Result<Vec<FailoverSeries>, String> {
    let mut out = Vec::new();
    for &ttl in ttls_ms {
        for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
            crate::bench::progress(&format!(
                "failover: {trials} × {name} with lease TTL {ttl} ms"
            ));
            let times = series(exe, url, redis, logs, ttl, signal, trials).await?;
            out.push(summarize(name, ttl, &times));
        }
    }
    Ok(out)
}

fn summarize(signal: &'static str, ttl_ms: u64, times: &[f64]) -> FailoverSeries {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let pick = |q: f64| t[((q * (t.len() - 1) as f64).round() as usize).min(t.len() - 1)];
    let p50 = pick(0.5);
    FailoverSeries {
        signal,
        ttl_ms,
        trials: t.len(),
        p50_ms: p50,
        p99_ms: pick(0.99),
        max_ms: t.last().copied().unwrap_or(f64::NAN),
        p50_ttl_ratio: p50 / ttl_ms as f64,
    }
}

async fn holder(redis: &Redis, keys: &Keys) -> Option<String> {
    let token: Option<String> = redis.client().get(keys.lease()).await.ok().flatten();
    token.map(|t| parse_token(&t).0)
}

async fn series(
    exe: &std::path::Path,
    url: &str,
    redis: &Redis,
    logs: &std::path::Path,
    ttl: u64,
    signal: i32,
    trials: usize,
) -> Result<Vec<f64>, String> {
    let queue = format!("failover:{:08x}", rand::random::<u32>());
    let keys = Keys::new(&queue, &format!("{queue}:errors"));
    let env: Vec<(String, String)> = [
        ("MODE", "auto".to_string()),
        ("REDIS_URL", url.to_string()),
        ("REDIS_QUEUE", queue.clone()),
        ("REDIS_ERROR_QUEUE", keys.error_queue.clone()),
        ("GENERATOR_INTERVAL", "100".into()),
        ("GENERATOR_PING_INTERVAL", (ttl / 1000).max(1).to_string()),
        ("DSG_LEASE__TTL_MS", ttl.to_string()),
        ("DSG_LEASE__RENEW_DEADLINE_MS", (ttl * 7 / 10).to_string()),
        ("DSG_LEASE__RETRY_PERIOD_MS", (ttl / 5).to_string()),
        ("DSG_PROCESSOR__MAX_MS", "0".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let log = logs.join(format!("failover-{ttl}-{signal}-{i}.log"));
        let mut r = Replica::start(exe, free_port(), &env, &log).map_err(|e| e.to_string())?;
        if !r.wait_ready(Duration::from_secs(20)).await {
            return Err(format!(
                "a replica did not become ready; see {}",
                log.display()
            ));
        }
        replicas.push(r);
    }
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        // Find the generator through its status (the lease names its id).
        let deadline = Instant::now() + Duration::from_millis(ttl * 3 + 10_000);
        let (index, old) = loop {
            if Instant::now() > deadline {
                return Err("no generator appeared".into());
            }
            if let Some(h) = holder(redis, &keys).await {
                let mut found = None;
                for (i, r) in replicas.iter().enumerate() {
                    if r.status().await.is_some_and(|s| s["id"] == h.as_str()) {
                        found = Some(i);
                    }
                }
                if let Some(i) = found {
                    break (i, h);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let sent = Instant::now();
        replicas[index].signal(signal);
        let taken = loop {
            if let Some(h) = holder(redis, &keys).await
                && h != old
            {
                break Instant::now();
            }
            if sent.elapsed() > Duration::from_millis(ttl * 3 + 10_000) {
                return Err("no takeover".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        times.push((taken - sent).as_secs_f64() * 1000.0);
        let _ = replicas[index].wait_timeout(Duration::from_secs(30));
        replicas[index].restart().map_err(|e| e.to_string())?;
        if !replicas[index].wait_ready(Duration::from_secs(20)).await {
            return Err("a restarted replica did not become ready".into());
        }
    }
    for r in replicas.iter_mut() {
        r.stop(Duration::from_secs(10));
    }
    crate::bench::remove_queue(redis, &keys).await;
    Ok(times)
}

/// The series as a table.
pub fn render(series: &[FailoverSeries]) -> String {
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
