//! Recovery of dead consumers' messages, done by one instance at a time:
//! the holder of the chores claim ([`crate::service::chores`]). Each
//! consumer's heartbeat expiry is a score in `{q}:heartbeats`, on Redis'
//! clock, so a pass is one script that finds the expired
//! ([`crate::redis::scripts::REAP_SCAN`], O(log n + dead)) plus one script
//! per dead consumer that returns what it held to the consuming end of the
//! queue ([`crate::redis::scripts::RETURN_INFLIGHT`], which re-checks the
//! heartbeat key, so a live consumer never loses its messages). A pass
//! therefore costs the fleet 1 + dead commands, whatever the number of
//! pods; a second reaper during a hand-over of the claim finds nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::redis::Operation;
use crate::redis::scripts;
use crate::redis::{Keys, Redis, RedisError};
use crate::service::chores::{Chores, until_holding};
use crate::service::health::Health;
use crate::service::metrics::Metrics;

/// Dead consumers handled per pass, at most (the rest next pass).
const PER_PASS: u64 = 100;

/// Every this many passes, registered consumers missing from the index
/// are checked too: consumers of an earlier version, which write only
/// their heartbeat key (one command for the fleet, O(consumers) inside
/// Redis).
const LEGACY_EVERY: u64 = 20;

/// Looks for dead consumers once; returns how many messages went back.
pub(super) async fn reap_once(
    redis: &Redis,
    keys: &Keys,
    own_id: &str,
    metrics: &Metrics,
    legacy: bool,
) -> Result<u64, RedisError> {
    let dead = scripts::reap_scan(redis, keys, PER_PASS, legacy).await?;
    let mut recovered = 0;
    for member in dead.iter().filter(|m| m.as_str() != own_id) {
        match scripts::return_inflight(redis, keys, member, false).await? {
            Some(0) => {
                tracing::info!(consumer = %member, "unregistered a dead consumer that held nothing");
            }
            Some(returned) => {
                tracing::warn!(consumer = %member, returned, "returned a dead consumer's messages to the queue");
                metrics.record_recovered(returned);
                recovered += returned;
            }
            // Alive after all (its heartbeat came back): it keeps them.
            None => {}
        }
    }
    Ok(recovered)
}

/// The reaper of one instance.
#[derive(Debug)]
pub(super) struct Reaper {
    pub(super) redis: Redis,
    pub(super) keys: Keys,
    pub(super) own_id: String,
    pub(super) interval: Duration,
    pub(super) metrics: Metrics,
    pub(super) health: Health,
    pub(super) chores: Chores,
}

impl Reaper {
    /// While this instance holds the chores claim, runs [`reap_once`]
    /// every interval, until `stop` fires.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut holding = self.chores.holding();
        let mut passes = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                held = until_holding(&mut holding) => if !held { return },
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if !*holding.borrow() {
                continue;
            }
            let legacy = passes % LEGACY_EVERY == 0;
            passes += 1;
            match reap_once(&self.redis, &self.keys, &self.own_id, &self.metrics, legacy).await {
                Ok(_) => self.health.succeeded(Operation::Reap),
                Err(e) => self.health.failed(Operation::Reap, &e),
            }
        }
    }
}
