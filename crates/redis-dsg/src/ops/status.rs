//! `redis-dsg status`: a one-shot view of the whole fleet, read from Redis:
//! lease holder, epoch and time left, go-redis-dsg's `lock:gen` (an
//! original generating beside redis-dsg counts as a generator), list
//! lengths, live consumers and what each holds.

use fred::prelude::*;
use fred::types::Value;
use serde::Serialize;

use super::CliError;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::redis::keys::ORIGINAL_LOCK;
use crate::redis::{Keys, Redis, RedisError, value_bytes};
use crate::service::{LeaseToken, OriginalLockKind, OriginalLockView};
use crate::service::{original_lock, registry};

/// The fleet as Redis records it.
#[derive(Debug, Serialize)]
pub(crate) struct FleetStatus {
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
    /// go-redis-dsg's election key `lock:gen`, when set: an original
    /// process holding it generates.
    pub original_lock: Option<OriginalLockView>,
    /// Registered consumers.
    pub consumers: Vec<ConsumerStatus>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
}

/// One registered consumer.
#[derive(Debug, Serialize)]
pub(crate) struct ConsumerStatus {
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
    let p = redis.client().pipeline();
    let _: () = p.get(keys.lease()).await?;
    let _: () = p.pttl(keys.lease()).await?;
    let _: () = p.get(keys.epoch()).await?;
    let _: () = p.llen(keys.queue.as_str()).await?;
    let _: () = p.llen(keys.error_queue.as_str()).await?;
    let replies: Vec<Value> = p.all().await?;
    let mut it = replies.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    let token = value_bytes(next()).map(|b| String::from_utf8_lossy(&b).into_owned());
    let pttl = next().as_i64().and_then(|t| u64::try_from(t).ok());
    let last_epoch = next().as_u64();
    let queue_length = next().as_u64().unwrap_or(0);
    let error_queue_length = next().as_u64().unwrap_or(0);

    let (holder, epoch) = match token.as_deref().map(|t| (t, LeaseToken::parse(t))) {
        Some((_, Some(t))) => (Some(t.holder), Some(t.epoch)),
        // A value that is not a redis-dsg token: show it as it is.
        Some((raw, None)) => (Some(raw.to_string()), None),
        None => (None, last_epoch),
    };

    let registered = registry::registered_consumers(redis, keys).await?;
    let ids: Vec<String> = registered.iter().map(|c| c.id.clone()).collect();
    let held = registry::held(redis, keys, &ids).await?;
    let consumers = registered
        .into_iter()
        .zip(held)
        .map(|(c, in_flight)| ConsumerStatus {
            id: c.id,
            alive: c.alive,
            heartbeat_ttl_ms: c.heartbeat_ttl_ms,
            in_flight,
        })
        .collect();
    let mut notes = Vec::new();
    // lock:gen lives in its own slot (Cluster): read on its own.
    let original_lock = match original_lock::read(redis).await {
        Ok(seen) => seen.map(|seen| OriginalLockView {
            kind: OriginalLockKind::of(&seen.value, &keys.lease(), token.as_deref()),
            value: seen.value,
            ttl_ms: seen.remaining.map(|r| r.as_millis() as u64),
        }),
        Err(RedisError::Command(e)) => {
            notes.push(format!(
                "{ORIGINAL_LOCK} could not be read ({e}): an original go-redis-dsg generating would not show; allow reading it (%R~{ORIGINAL_LOCK}, see `redis-dsg acl-rule`)"
            ));
            None
        }
        Err(e) => return Err(e),
    };
    Ok(FleetStatus {
        queue: keys.queue.clone(),
        queue_length,
        error_queue: keys.error_queue.clone(),
        error_queue_length,
        holder,
        epoch,
        lease_ttl_ms: pttl.filter(|_| token.is_some()),
        original_lock,
        consumers,
        notes,
    })
}

impl FleetStatus {
    /// A short human-readable report.
    pub(crate) fn to_text(&self) -> String {
        let mut s = self.generator_text();
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
        for note in &self.notes {
            s.push_str(&format!("note: {note}\n"));
        }
        if self.foreign_generator().is_some() && !self.consumers.iter().any(|c| c.alive) {
            s.push_str("note: go-redis-dsg consumers register nowhere, so none show here\n");
        }
        s
    }

    /// The `generator:` line, with a warning when two generate.
    fn generator_text(&self) -> String {
        let seconds =
            |ms: Option<u64>| ms.map_or("no TTL".into(), |t| format!("{:.1} s", t as f64 / 1000.0));
        let lock = self.original_lock.as_ref();
        let Some(h) = &self.holder else {
            return match lock {
                Some(l) if l.kind.is_foreign_generator() => format!(
                    "generator: go-redis-dsg {} (holds {ORIGINAL_LOCK}, {} left; not a redis-dsg process)\n",
                    l.value,
                    seconds(l.ttl_ms)
                ),
                Some(l) if l.kind == OriginalLockKind::Pause => format!(
                    "generator: none: paused by an operator ({ORIGINAL_LOCK} = {:?}, {} left)\n",
                    l.value,
                    seconds(l.ttl_ms)
                ),
                Some(l) if l.kind == OriginalLockKind::RedisDsgOtherQueue => format!(
                    "generator: none ({ORIGINAL_LOCK} is held by a redis-dsg fleet of another queue: {})\n",
                    l.value
                ),
                _ => format!(
                    "generator: none (last epoch {})\n",
                    self.epoch.map_or("none".into(), |e| e.to_string())
                ),
            };
        };
        let also = match lock {
            Some(l) if l.kind == OriginalLockKind::RedisDsg => {
                format!("; also holds {ORIGINAL_LOCK}: compatibility mode")
            }
            _ => String::new(),
        };
        let mut s = format!(
            "generator: {h} (epoch {}, lease {} left{also})\n",
            self.epoch.map_or("?".into(), |e| e.to_string()),
            seconds(self.lease_ttl_ms),
        );
        if let Some(l) = self.foreign_generator() {
            s.push_str(&format!(
                "  WARNING: {ORIGINAL_LOCK} is held by go-redis-dsg {} too: TWO GENERATORS (enable compat.original_lock on every redis-dsg pod)\n",
                l.value
            ));
        }
        s
    }

    /// `lock:gen` when it stands for a generator that is not this fleet's
    /// lease holder (an original go-redis-dsg).
    fn foreign_generator(&self) -> Option<&OriginalLockView> {
        self.original_lock
            .as_ref()
            .filter(|l| l.kind.is_foreign_generator())
    }

    /// Problems worth a non-zero exit for `status --check`: no generator or
    /// two (the lease holder and an original holding `lock:gen`), no live
    /// consumer (unless an original generates: its consumers register
    /// nowhere).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let foreign = self.foreign_generator();
        match (&self.holder, foreign) {
            (None, None) => p.push(match &self.original_lock {
                Some(l) if l.kind == OriginalLockKind::Pause => format!(
                    "no generator: generation is paused by an operator ({ORIGINAL_LOCK} = {:?})",
                    l.value
                ),
                _ => "no instance holds the generator lease".to_string(),
            }),
            (Some(h), Some(l)) => p.push(format!(
                "two generators: {h} (the lease) and go-redis-dsg {} ({ORIGINAL_LOCK}); enable compat.original_lock on every redis-dsg pod",
                l.value
            )),
            _ => {}
        }
        if foreign.is_none() && !self.consumers.iter().any(|c| c.alive) {
            p.push("no live consumer".to_string());
        }
        p
    }
}

/// Runs `status`: prints the fleet; with `--check`, fails when no instance
/// generates or no consumer is alive.
pub async fn status_command(config: &Config, args: &StatusArgs) -> Result<(), CliError> {
    let redis = super::connect_once(config).await?;
    let keys = Keys::of(&config.redis);
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
