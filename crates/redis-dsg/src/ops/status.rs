//! `redis-dsg status`: a one-shot view of the whole fleet, read from Redis:
//! lease holder, epoch and time left, list lengths, live consumers and what
//! each holds.

use fred::prelude::*;
use fred::types::Value;
use serde::Serialize;

use super::CliError;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::redis::{Keys, Redis, RedisError, value_bytes};
use crate::service::LeaseToken;

/// The fleet as Redis records it.
#[derive(Debug, Serialize)]
pub struct FleetStatus {
    /// The message list.
    pub queue: String,
    /// Its length.
    pub queue_length: u64,
    /// The error list.
    pub error_queue: String,
    /// Its length.
    pub error_queue_length: u64,
    /// The lease holder, if any.
    pub holder: Option<String>,
    /// The holder's epoch (or the last epoch handed out when nobody holds
    /// the lease).
    pub epoch: Option<u64>,
    /// Milliseconds before the lease expires without renewal.
    pub lease_ttl_ms: Option<u64>,
    /// Registered consumers.
    pub consumers: Vec<ConsumerStatus>,
}

/// One registered consumer.
#[derive(Debug, Serialize)]
pub struct ConsumerStatus {
    /// Its id.
    pub id: String,
    /// Whether its heartbeat is alive.
    pub alive: bool,
    /// Milliseconds before its heartbeat expires.
    pub heartbeat_ttl_ms: Option<u64>,
    /// Messages it holds.
    pub in_flight: u64,
}

/// Reads the fleet's state.
pub(super) async fn read(redis: &Redis, keys: &Keys) -> Result<FleetStatus, RedisError> {
    let client = redis.client();
    let p = client.pipeline();
    let _: () = p.get(keys.lease()).await?;
    let _: () = p.pttl(keys.lease()).await?;
    let _: () = p.get(keys.epoch()).await?;
    let _: () = p.llen(keys.queue.as_str()).await?;
    let _: () = p.llen(keys.error_queue.as_str()).await?;
    let _: () = p.smembers(keys.consumers()).await?;
    let replies: Vec<Value> = p.all().await?;
    let mut it = replies.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    let token = value_bytes(next()).map(|b| String::from_utf8_lossy(&b).into_owned());
    let pttl = next().as_i64().and_then(|t| u64::try_from(t).ok());
    let last_epoch = next().as_u64();
    let queue_length = next().as_u64().unwrap_or(0);
    let error_queue_length = next().as_u64().unwrap_or(0);
    let mut members: Vec<String> = next()
        .into_array()
        .into_iter()
        .filter_map(value_bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    members.sort();

    let (holder, epoch) = match token.as_deref().map(|t| (t, LeaseToken::parse(t))) {
        Some((_, Some(t))) => (Some(t.holder), Some(t.epoch)),
        // A value that is not a redis-dsg token: show it as it is.
        Some((raw, None)) => (Some(raw.to_string()), None),
        None => (None, last_epoch),
    };

    let mut consumers = Vec::with_capacity(members.len());
    if !members.is_empty() {
        let p = client.pipeline();
        for m in &members {
            let _: () = p.pttl(keys.heartbeat(m)).await?;
            let _: () = p.hlen(keys.inflight(m)).await?;
        }
        let replies: Vec<i64> = p.all().await?;
        for (m, r) in members.into_iter().zip(replies.chunks(2)) {
            let ttl = u64::try_from(r[0]).ok();
            consumers.push(ConsumerStatus {
                id: m,
                alive: r[0] != -2,
                heartbeat_ttl_ms: ttl,
                // Less the marker field every in-flight hash carries.
                in_flight: (r[1] - 1).max(0) as u64,
            });
        }
    }
    Ok(FleetStatus {
        queue: keys.queue.clone(),
        queue_length,
        error_queue: keys.error_queue.clone(),
        error_queue_length,
        holder,
        epoch,
        lease_ttl_ms: pttl.filter(|_| token.is_some()),
        consumers,
    })
}

impl FleetStatus {
    /// A short human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        match (&self.holder, self.lease_ttl_ms) {
            (Some(h), ttl) => s.push_str(&format!(
                "generator: {h} (epoch {}, lease {} left)\n",
                self.epoch.map_or("?".into(), |e| e.to_string()),
                ttl.map_or("without TTL".into(), |t| format!(
                    "{:.1} s",
                    t as f64 / 1000.0
                )),
            )),
            (None, _) => s.push_str(&format!(
                "generator: none (last epoch {})\n",
                self.epoch.map_or("none".into(), |e| e.to_string())
            )),
        }
        s.push_str(&format!(
            "queue:     {} ({} messages)\n",
            self.queue, self.queue_length
        ));
        s.push_str(&format!(
            "errors:    {} ({} entries)\n",
            self.error_queue, self.error_queue_length
        ));
        let alive = self.consumers.iter().filter(|c| c.alive).count();
        s.push_str(&format!(
            "consumers: {alive} alive, {} registered\n",
            self.consumers.len()
        ));
        if !self.consumers.is_empty() {
            s.push_str(&format!(
                "  {:<40} {:>9} {:>10}\n",
                "ID", "IN-FLIGHT", "HEARTBEAT"
            ));
            for c in &self.consumers {
                let hb = match (c.alive, c.heartbeat_ttl_ms) {
                    (true, Some(t)) => format!("{:.1} s", t as f64 / 1000.0),
                    (true, None) => "alive".into(),
                    (false, _) => "expired".into(),
                };
                s.push_str(&format!("  {:<40} {:>9} {:>10}\n", c.id, c.in_flight, hb));
            }
        }
        s
    }

    /// Problems worth a non-zero exit for `status --check`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.holder.is_none() {
            p.push("no instance holds the generator lease".to_string());
        }
        if !self.consumers.iter().any(|c| c.alive) {
            p.push("no live consumer".to_string());
        }
        p
    }
}

/// Runs `status`: prints the fleet; with `--check`, fails when no instance
/// generates or no consumer is alive.
pub async fn status_command(config: &Config, args: &StatusArgs) -> Result<(), CliError> {
    let redis = super::connect_once(config).await?;
    let keys = Keys::new(&config.redis.queue, &config.redis.error_queue);
    let status = read(&redis, &keys).await;
    redis.quit().await;
    let status = status?;
    if args.json {
        // A struct of strings, numbers and options always serializes.
        let json = serde_json::to_string_pretty(&status).expect("FleetStatus serializes to JSON");
        println!("{json}");
    } else {
        print!("{}", status.to_text());
    }
    let problems = status.problems();
    if args.check && !problems.is_empty() {
        for p in &problems {
            eprintln!("redis-dsg: check failed: {p}");
        }
        return Err(CliError::CheckFailed(problems));
    }
    Ok(())
}
