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

use dsg_testkit::fleet;
use dsg_testkit::local_redis::connect;
use dsg_testkit::replica::{Replica, generators};
use dsg_testkit::stats::percentile;
use redis_dsg::config::{Config, RedisUrl};
use redis_dsg::redis::Keys;
use redis_dsg::redis::Redis;
use redis_dsg::service::LeaseToken;

/// Figures of one series of trials.
#[derive(Debug, Serialize)]
pub(crate) struct FailoverSeries {
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
pub(crate) async fn measure(
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
    let mut config = Config::default();
    config.redis.url = RedisUrl::new(url);
    config.redis.queue = queue.clone();
    config.redis.error_queue = keys.error_queue.clone();
    config.generator.interval_ms = 100;
    config.lease.ping_interval_seconds = (ttl / 1000).max(1);
    fleet::set_lease_ttl(&mut config, ttl);
    config.processor.max_ms = 0;
    let env = fleet::with_extra(
        fleet::env_for(&config, logs, &queue)?,
        &[("RUST_LOG", "warn")],
    );
    let mut replicas =
        Replica::start_ready(exe, &env, logs, &format!("failover-{ttl}-{signal}"), 3).await?;
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
                    if r.status().await.is_some_and(|s| s.id == *h) {
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
pub(crate) fn render(series: &[FailoverSeries]) -> String {
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

/// Figures of a series of Sentinel failovers (`bench --failover
/// --sentinel`): the primary is SIGKILLed while generator and consumers
/// run, and we time how long until Sentinel names a new primary and until
/// the fleet is processing again on it.
#[derive(Debug, Serialize)]
pub(crate) struct SentinelSeries {
    /// `redis.reconnect_max_delay_ms` of the replicas.
    pub reconnect_max_delay_ms: u64,
    /// Sentinel's `down-after-milliseconds`: no failover can be faster.
    pub down_after_ms: u64,
    /// Trials run.
    pub trials: usize,
    /// Median time from the SIGKILL until Sentinel names a new primary.
    pub promotion_p50_ms: f64,
    /// Longest such time.
    pub promotion_max_ms: f64,
    /// Median time from the SIGKILL until a message generated after it has
    /// been processed on the new primary (failover to recovery).
    pub recovery_p50_ms: f64,
    /// Longest such time.
    pub recovery_max_ms: f64,
    /// Median of recovery minus promotion: the service's own share.
    pub reconnect_p50_ms: f64,
    /// Processed messages acknowledged by the replica before the crash
    /// (`WAIT 1`) that were missing afterwards, over all trials.
    pub processed_lost: usize,
}

/// Runs `trials` Sentinel failovers with each reconnect back-off bound.
pub(crate) async fn measure_sentinel(
    exe: &std::path::Path,
    logs: &std::path::Path,
    reconnect_max_delays_ms: &[u64],
    down_after_ms: u64,
    trials: usize,
) -> Result<Vec<SentinelSeries>, String> {
    let mut out = Vec::new();
    for &delay in reconnect_max_delays_ms {
        crate::bench::progress(&format!(
            "Sentinel failover: {trials} × SIGKILL of the primary, down-after {down_after_ms} ms, \
             reconnect back-off up to {delay} ms"
        ));
        out.push(sentinel_series(exe, logs, delay, down_after_ms, trials).await?);
    }
    Ok(out)
}

async fn connect_to(port: u16) -> Result<Redis, String> {
    connect(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await
}

/// Whether the newest entries of `output` hold a message generated after
/// `since`: then a generator and a consumer both work on this server.
async fn processed_since(redis: &Redis, output: &str, since: time::OffsetDateTime) -> bool {
    let newest: Vec<fred::types::Value> = match redis.client().lrange(output, 0, 99).await {
        Ok(v) => v,
        Err(_) => return false,
    };
    newest
        .into_iter()
        .filter_map(redis_dsg::redis::value_bytes)
        .filter_map(|b| redis_dsg::service::message::parse(&b).ok())
        .any(|m| m.created_at > since)
}

async fn all_of(redis: &Redis, list: &str) -> Result<std::collections::HashSet<Vec<u8>>, String> {
    Ok(redis
        .list(list)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect())
}

async fn sentinel_series(
    exe: &std::path::Path,
    logs: &std::path::Path,
    reconnect_max_delay_ms: u64,
    down_after_ms: u64,
    trials: usize,
) -> Result<SentinelSeries, String> {
    use dsg_testkit::local_sentinel::SentinelTopology;

    let mut topology = SentinelTopology::start(down_after_ms)?;
    let queue = format!("sentinel:{:08x}", rand::random::<u32>());
    let output = format!("{{{queue}}}:out");
    let mut config = Config::default();
    config.redis.url = RedisUrl::new(topology.url());
    config.redis.queue = queue.clone();
    config.consumer.output_queue = Some(output.clone());
    config.generator.interval_ms = 2;
    config.processor.max_ms = 0;
    config.processor.invalid_ratio = 0.0;
    config.redis.reconnect_max_delay_ms = reconnect_max_delay_ms;
    let env = fleet::with_extra(
        fleet::env_for(&config, logs, &queue)?,
        &[("RUST_LOG", "warn")],
    );
    let mut replicas = Replica::start_ready(
        exe,
        &env,
        logs,
        &format!("sentinel-{reconnect_max_delay_ms}"),
        3,
    )
    .await?;
    let wait_for = |what: &'static str, limit: Duration| {
        let start = Instant::now();
        move || {
            if start.elapsed() > limit {
                Err(format!("{what} did not happen within {limit:?}"))
            } else {
                Ok(())
            }
        }
    };
    let (mut promotions, mut recoveries, mut own_share) = (Vec::new(), Vec::new(), Vec::new());
    let mut processed_lost = 0;
    for _ in 0..trials {
        let old = topology
            .primary_port()
            .ok_or("the sentinels name no primary")?;
        let primary = connect_to(old).await?;
        // Processing must be under way before the crash.
        let check = wait_for("processing before the crash", Duration::from_secs(30));
        let now = time::OffsetDateTime::now_utc();
        while !processed_since(&primary, &output, now).await {
            check()?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = all_of(&primary, &output).await?;
        dsg_testkit::local_sentinel::wait_replicated(&primary, &format!("{{{queue}}}:probe"))
            .await?;
        primary.quit().await;

        let killed_at = time::OffsetDateTime::now_utc();
        let killed = Instant::now();
        topology
            .node_mut(old)
            .ok_or("the primary is none of our nodes")?
            .kill();
        let check = wait_for("promotion", Duration::from_secs(60));
        let new = loop {
            if let Some(p) = topology.primary_port()
                && p != old
            {
                break p;
            }
            check()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let promoted = killed.elapsed();
        // Sentinel cuts the promoted node's clients: reconnect on errors.
        let check = wait_for("recovery on the new primary", Duration::from_secs(60));
        let mut client = connect_to(new).await.ok();
        loop {
            match &client {
                Some(c) if processed_since(c, &output, killed_at).await => break,
                Some(c) if c.client().ping::<()>(None).await.is_ok() => {}
                _ => client = connect_to(new).await.ok(),
            }
            check()?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let recovered = killed.elapsed();
        let client = client.ok_or("no connection to the new primary")?;
        let after = all_of(&client, &output).await?;
        processed_lost += before.iter().filter(|m| !after.contains(*m)).count();
        client.quit().await;
        let check = wait_for("exactly one generator", Duration::from_secs(30));
        while generators(&replicas).await.len() != 1 {
            check()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        promotions.push(promoted.as_secs_f64() * 1000.0);
        recoveries.push(recovered.as_secs_f64() * 1000.0);
        own_share.push((recovered - promoted).as_secs_f64() * 1000.0);

        // The crashed node comes back as a replica of the new primary.
        topology.restart_as_replica(old, new)?;
        topology.wait_converged(Duration::from_secs(60))?;
    }
    for r in replicas.iter_mut() {
        r.stop(Duration::from_secs(10));
    }
    let median = |v: &[f64]| percentile(v, 0.5).unwrap_or(f64::NAN);
    let max = |v: &[f64]| percentile(v, 1.0).unwrap_or(f64::NAN);
    Ok(SentinelSeries {
        reconnect_max_delay_ms,
        down_after_ms,
        trials,
        promotion_p50_ms: median(&promotions),
        promotion_max_ms: max(&promotions),
        recovery_p50_ms: median(&recoveries),
        recovery_max_ms: max(&recoveries),
        reconnect_p50_ms: median(&own_share),
        processed_lost,
    })
}

/// The Sentinel series as a table.
pub(crate) fn render_sentinel(series: &[SentinelSeries]) -> String {
    let mut s = format!(
        "\nSentinel failover: SIGKILL of the primary (1 primary, 1 replica, 3 sentinels)\n\
         {:>14} {:>11} {:>7} {:>13} {:>13} {:>13} {:>13} {:>13} {:>6}\n",
        "backoff max ms",
        "down-after",
        "trials",
        "promote p50",
        "promote max",
        "recover p50",
        "recover max",
        "own p50",
        "lost"
    );
    for x in series {
        s.push_str(&format!(
            "{:>14} {:>11} {:>7} {:>13.0} {:>13.0} {:>13.0} {:>13.0} {:>13.0} {:>6}\n",
            x.reconnect_max_delay_ms,
            x.down_after_ms,
            x.trials,
            x.promotion_p50_ms,
            x.promotion_max_ms,
            x.recovery_p50_ms,
            x.recovery_max_ms,
            x.reconnect_p50_ms,
            x.processed_lost
        ));
    }
    s.push_str(
        "promote: until Sentinel names the new primary; recover: until a message generated after the \
         crash is processed on it; own: recover − promote (times in ms)\n",
    );
    s
}
