//! Recovery of dead consumers' messages. Every instance runs a reaper: it
//! looks for registered consumers whose heartbeat expired and returns what
//! they held to the consuming end of the queue, one atomic script per dead
//! consumer ([`crate::redis::scripts::RETURN_INFLIGHT`], which re-checks the heartbeat
//! so a live consumer never loses its messages). Running it everywhere is
//! safe: the second reaper of the same consumer finds nothing.

use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::redis::Keys;
use crate::redis::Operation;
use crate::redis::scripts::RETURN_INFLIGHT;
use crate::redis::{Redis, RedisError};
use crate::service::health::Health;
use crate::service::metrics::Metrics;

/// Looks for dead consumers once; returns how many messages went back.
pub(super) async fn reap_once(
    redis: &Redis,
    keys: &Keys,
    own_id: &str,
    metrics: &Metrics,
) -> Result<u64, RedisError> {
    let members = redis
        .client()
        .smembers::<Vec<String>, _>(keys.consumers())
        .await;
    redis.observe(&members);
    let members = members?;
    let others: Vec<&String> = members.iter().filter(|m| m.as_str() != own_id).collect();
    if others.is_empty() {
        return Ok(0);
    }
    let pipeline = redis.client().pipeline();
    for m in &others {
        let _: () = pipeline.exists(keys.heartbeat(m)).await?;
    }
    let alive = pipeline.all::<Vec<i64>>().await;
    redis.observe(&alive);
    let alive = alive?;
    let mut recovered = 0;
    for (member, alive) in others.iter().zip(alive) {
        if alive == 1 {
            continue;
        }
        let returned: i64 = redis
            .run(
                &RETURN_INFLIGHT,
                vec![
                    keys.heartbeat(member),
                    keys.inflight(member),
                    keys.queue.clone(),
                    keys.consumers(),
                ],
                vec![member.as_str().into(), "0".into()],
            )
            .await?;
        if returned > 0 {
            tracing::warn!(consumer = %member, returned, "returned a dead consumer's messages to the queue");
            metrics.record_recovered(returned as u64);
            recovered += returned as u64;
        } else if returned == 0 {
            tracing::info!(consumer = %member, "unregistered a dead consumer that held nothing");
        }
    }
    Ok(recovered)
}

/// Runs [`reap_once`] every `interval` (with jitter, so a fleet does not
/// reap in lockstep) until `stop` fires.
pub(super) async fn run(
    redis: Redis,
    keys: Keys,
    own_id: String,
    interval: Duration,
    metrics: Metrics,
    health: Health,
    stop: CancellationToken,
) {
    loop {
        let jitter = rand::random_range(0.8..1.2);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval.mul_f64(jitter)) => {}
        }
        match reap_once(&redis, &keys, &own_id, &metrics).await {
            Ok(_) => health.succeeded(Operation::Reap),
            Err(e) => health.failed(Operation::Reap, &e),
        }
    }
}
