//! `redis-dsg bench --failover --sentinel`: a Sentinel failover of Redis
//! itself under a working fleet. One primary, one replica and three
//! sentinels; in each trial the primary is SIGKILLed while generator and
//! consumers run, and we time how long until Sentinel names a new primary
//! and until the fleet is processing again on it, and count processed
//! messages the crash lost. The crashed node comes back as a replica
//! before the next trial.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use fred::prelude::*;
use serde::Serialize;
use time::OffsetDateTime;

use dsg_testkit::local_redis::connect;
use dsg_testkit::local_sentinel::{SentinelTopology, wait_replicated};
use dsg_testkit::replica::{Replica, generators};
use dsg_testkit::stats::percentile;
use dsg_testkit::wait::within;
use redis_dsg::redis::Redis;

use super::{progress, replica_env};

/// Figures of a series of Sentinel failovers (`bench --failover
/// --sentinel`): the primary is SIGKILLed while generator and consumers
/// run, and we time how long until Sentinel names a new primary and until
/// the fleet is processing again on it.
#[derive(Debug, Serialize)]
pub(super) struct SentinelSeries {
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
pub(super) async fn measure(
    exe: &Path,
    logs: &Path,
    reconnect_max_delays_ms: &[u64],
    down_after_ms: u64,
    trials: usize,
) -> Result<Vec<SentinelSeries>, String> {
    let mut out = Vec::new();
    for &delay in reconnect_max_delays_ms {
        progress(&format!(
            "Sentinel failover: {trials} × SIGKILL of the primary, down-after {down_after_ms} ms, \
             reconnect back-off up to {delay} ms"
        ));
        out.push(series(exe, logs, delay, down_after_ms, trials).await?);
    }
    Ok(out)
}

/// The lists of one series: the queue, and the output list in its slot.
struct Lists {
    queue: String,
    output: String,
}

/// What one trial measured.
struct Trial {
    /// From the SIGKILL until Sentinel names a new primary.
    promoted: Duration,
    /// From the SIGKILL until the fleet processes on the new primary.
    recovered: Duration,
    /// Processed messages replicated before the crash and missing after.
    lost: usize,
}

/// One series: a fresh topology and 3 replicas with the given back-off
/// bound, `trials` failovers.
async fn series(
    exe: &Path,
    logs: &Path,
    reconnect_max_delay_ms: u64,
    down_after_ms: u64,
    trials: usize,
) -> Result<SentinelSeries, String> {
    let mut topology = SentinelTopology::start(down_after_ms)?;
    let queue = format!("sentinel:{:08x}", rand::random::<u32>());
    let lists = Lists {
        output: format!("{{{queue}}}:out"),
        queue,
    };
    // An output list, a generator every 2 ms, no processing time, no
    // invalid messages.
    let env = replica_env(&topology.url(), logs, &lists.queue, |c| {
        c.redis.queue = lists.queue.clone();
        c.consumer.output_queue = Some(lists.output.clone());
        c.generator.interval_ms = 2;
        c.processor.max_ms = 0;
        c.processor.invalid_ratio = 0.0;
        c.redis.reconnect_max_delay_ms = reconnect_max_delay_ms;
    })?;
    let prefix = format!("sentinel-{reconnect_max_delay_ms}");
    let mut replicas = Replica::start_ready(exe, &env, logs, &prefix, 3).await?;
    let mut done = Vec::with_capacity(trials);
    for _ in 0..trials {
        done.push(trial(&mut topology, &replicas, &lists).await?);
    }
    for r in replicas.iter_mut() {
        r.stop(Duration::from_secs(10));
    }
    let ms = |f: fn(&Trial) -> Duration| -> Vec<f64> {
        done.iter().map(|t| f(t).as_secs_f64() * 1000.0).collect()
    };
    let (promotions, recoveries) = (ms(|t| t.promoted), ms(|t| t.recovered));
    let own_share = ms(|t| t.recovered - t.promoted);
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
        processed_lost: done.iter().map(|t| t.lost).sum(),
    })
}

/// One failover: the primary SIGKILLed under a working fleet, timed to
/// promotion and to recovery, then the topology made whole again.
async fn trial(
    topology: &mut SentinelTopology,
    replicas: &[Replica],
    lists: &Lists,
) -> Result<Trial, String> {
    let old = topology
        .primary_port()
        .ok_or("the sentinels name no primary")?;
    let before = processed_before_the_crash(old, lists).await?;
    let killed_at = OffsetDateTime::now_utc();
    let killed = Instant::now();
    topology
        .node_mut(old)
        .ok_or("the primary is none of our nodes")?
        .kill();
    let new = within("promotion", Duration::from_secs(60), FAST, async || {
        topology.primary_port().filter(|p| *p != old)
    })
    .await?;
    let promoted = killed.elapsed();
    let client = processing_again(new, &lists.output, killed_at).await?;
    let recovered = killed.elapsed();
    let after = all_of(&client, &lists.output).await?;
    client.quit().await;
    let one = Duration::from_millis(50);
    within(
        "exactly one generator",
        Duration::from_secs(30),
        one,
        async || (generators(replicas).await.len() == 1).then_some(()),
    )
    .await?;
    // The crashed node comes back as a replica of the new primary.
    topology.restart_as_replica(old, new)?;
    topology.wait_converged(Duration::from_secs(60))?;
    Ok(Trial {
        promoted,
        recovered,
        lost: before.iter().filter(|m| !after.contains(*m)).count(),
    })
}

/// How often a trial looks at Sentinel and at the new primary.
const FAST: Duration = Duration::from_millis(5);

/// Waits until processing is under way on the primary on `port`, then
/// returns what it has processed once the replica has it too.
async fn processed_before_the_crash(port: u16, lists: &Lists) -> Result<HashSet<Vec<u8>>, String> {
    let primary = connect_to(port).await?;
    let now = OffsetDateTime::now_utc();
    let every = Duration::from_millis(10);
    within(
        "processing before the crash",
        Duration::from_secs(30),
        every,
        async || {
            processed_since(&primary, &lists.output, now)
                .await
                .then_some(())
        },
    )
    .await?;
    let before = all_of(&primary, &lists.output).await?;
    wait_replicated(&primary, &format!("{{{}}}:probe", lists.queue)).await?;
    primary.quit().await;
    Ok(before)
}

/// Waits until a message generated after `since` is processed on the new
/// primary on `port`; a client of it. Sentinel cuts the promoted node's
/// clients, so a client that stops answering is replaced.
async fn processing_again(port: u16, output: &str, since: OffsetDateTime) -> Result<Redis, String> {
    let mut client = connect_to(port).await.ok();
    within(
        "recovery on the new primary",
        Duration::from_secs(60),
        FAST,
        async || {
            match &client {
                Some(c) if processed_since(c, output, since).await => return Some(()),
                Some(c) if c.client().ping::<()>(None).await.is_ok() => {}
                _ => client = connect_to(port).await.ok(),
            }
            None
        },
    )
    .await?;
    client.ok_or_else(|| "no connection to the new primary".into())
}

async fn connect_to(port: u16) -> Result<Redis, String> {
    connect(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await
}

/// Whether the newest entries of `output` hold a message generated after
/// `since`: then a generator and a consumer both work on this server.
async fn processed_since(redis: &Redis, output: &str, since: OffsetDateTime) -> bool {
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

async fn all_of(redis: &Redis, list: &str) -> Result<HashSet<Vec<u8>>, String> {
    Ok(redis
        .list(list)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect())
}

/// The Sentinel series as a table.
pub(super) fn render(series: &[SentinelSeries]) -> String {
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
