//! The rules a type cannot express, checked after extraction; every
//! violation is reported at once, naming the setting and the rule.
//!
//! Every duration and count has bounds ([`BOUNDS`], also in the README's
//! settings table): beyond them a value is a typo or makes no sense, and
//! within them no arithmetic on settings can overflow, every value fits
//! TOML's i64 (so `redis-dsg config` always renders), and Redis accepts
//! every TTL derived from them. Cross-field rules are written without
//! products that could wrap.

use super::{Config, names};

/// A number setting's accepted range (inclusive).
#[derive(Debug)]
pub(crate) struct Bound {
    /// The setting's path.
    pub path: &'static str,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    read: fn(&Config) -> u64,
}

const fn bound(path: &'static str, min: u64, max: u64, read: fn(&Config) -> u64) -> Bound {
    Bound {
        path,
        min,
        max,
        read,
    }
}

/// The longest duration any setting may hold: an hour (longer is a typo).
const HOUR_MS: u64 = 3_600_000;
/// Lease and heartbeat lifetimes: ten minutes at most.
const TEN_MINUTES_MS: u64 = 600_000;

/// Every number setting's bounds.
pub(crate) const BOUNDS: &[Bound] = &[
    bound("http.header_read_timeout_ms", 100, 60_000, |c| {
        c.http.header_read_timeout_ms
    }),
    bound("http.max_connections", 1, 100_000, |c| {
        c.http.max_connections as u64
    }),
    bound("redis.pool_size", 1, 1_000, |c| c.redis.pool_size as u64),
    bound("redis.connect_timeout_ms", 100, 60_000, |c| {
        c.redis.connect_timeout_ms
    }),
    bound("redis.command_timeout_ms", 100, 60_000, |c| {
        c.redis.command_timeout_ms
    }),
    bound("redis.reconnect_max_delay_ms", 10, 60_000, |c| {
        c.redis.reconnect_max_delay_ms
    }),
    bound("generator.interval_ms", 0, HOUR_MS, |c| {
        c.generator.interval_ms
    }),
    // Lua's unpack() takes at most a few thousand values per call.
    bound("generator.batch_size", 1, 1_000, |c| {
        c.generator.batch_size as u64
    }),
    bound("generator.max_in_flight_batches", 1, 64, |c| {
        c.generator.max_in_flight_batches as u64
    }),
    bound("lease.ttl_ms", 1_000, TEN_MINUTES_MS, |c| c.lease.ttl_ms),
    bound("lease.renew_deadline_ms", 100, TEN_MINUTES_MS, |c| {
        c.lease.renew_deadline_ms
    }),
    bound("lease.retry_period_ms", 50, TEN_MINUTES_MS, |c| {
        c.lease.retry_period_ms
    }),
    bound("lease.ping_interval_seconds", 1, 3_600, |c| {
        c.lease.ping_interval_seconds
    }),
    bound("consumer.max_concurrency", 1, 1_000_000, |c| {
        c.consumer.max_concurrency as u64
    }),
    bound("consumer.fetch_batch", 1, 1_000, |c| {
        c.consumer.fetch_batch as u64
    }),
    bound("consumer.idle_poll_max_ms", 1, 600_000, |c| {
        c.consumer.idle_poll_max_ms
    }),
    bound("consumer.heartbeat_ttl_ms", 1_000, TEN_MINUTES_MS, |c| {
        c.consumer.heartbeat_ttl_ms
    }),
    bound(
        "consumer.heartbeat_interval_ms",
        10,
        TEN_MINUTES_MS / 2,
        |c| c.consumer.heartbeat_interval_ms,
    ),
    bound("consumer.reaper_interval_ms", 10, TEN_MINUTES_MS, |c| {
        c.consumer.reaper_interval_ms
    }),
    // Redis' own limit for one value.
    bound("consumer.max_message_bytes", 1, 512 * 1024 * 1024, |c| {
        c.consumer.max_message_bytes as u64
    }),
    // Below 64 KiB a budget would hold back even small batches (a
    // message larger than the budget still moves, alone); beyond 64 GiB
    // no pod could hold it.
    bound(
        "consumer.max_in_flight_bytes",
        64 * 1024,
        64 * 1024 * 1024 * 1024,
        |c| c.consumer.max_in_flight_bytes,
    ),
    bound("generator.max_backlog", 0, 1_000_000_000_000, |c| {
        c.generator.max_backlog
    }),
    bound("errors.max_entries", 0, 1_000_000_000_000, |c| {
        c.errors.max_entries
    }),
    bound("processor.min_ms", 0, HOUR_MS, |c| c.processor.min_ms),
    bound("processor.max_ms", 0, HOUR_MS, |c| c.processor.max_ms),
    bound("shutdown.timeout_ms", 100, HOUR_MS, |c| {
        c.shutdown.timeout_ms
    }),
];

/// The longest list name accepted (a key name, shown in logs and rules).
pub(crate) const MAX_NAME_BYTES: usize = 1_024;
/// The highest `generator.rate` accepted (messages per second).
pub(super) const MAX_RATE: f64 = 10_000_000.0;

/// Checks every rule that a type cannot express; returns (setting, rule)
/// for each violation.
pub fn validate(c: &Config) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    connection_rules(c, &mut p);
    name_rules(c, &mut p);
    for b in BOUNDS {
        let v = (b.read)(c);
        if !(b.min..=b.max).contains(&v) {
            p.push((
                b.path,
                format!("must be between {} and {} (is {v})", b.min, b.max),
            ));
        }
    }
    timing_rules(c, &mut p);
    ratio_rules(c, &mut p);
    if c.compat.original_lock {
        compat_rules(c, &mut p);
    }
    p
}

/// The Redis address, credentials and TLS files.
fn connection_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let r = &c.redis;
    let tls_url = match r.url.parts() {
        Ok(parts) => parts.scheme.is_tls(),
        Err(e) => {
            p.push(("redis.url", e.to_string()));
            true
        }
    };
    if r.password.is_some() && r.password_file.is_some() {
        p.push((
            "redis.password_file",
            "cannot be set together with redis.password; keep one".into(),
        ));
    }
    for (path, file) in [
        ("redis.password_file", &r.password_file),
        ("redis.tls_ca_file", &r.tls_ca_file),
        ("redis.tls_cert_file", &r.tls_cert_file),
        ("redis.tls_key_file", &r.tls_key_file),
    ] {
        if let Some(f) = file
            && std::fs::File::open(f).is_err()
        {
            p.push((path, format!("{} cannot be read", f.display())));
        }
    }
    if r.tls_cert_file.is_some() != r.tls_key_file.is_some() {
        p.push((
            "redis.tls_cert_file",
            "a client certificate needs both redis.tls_cert_file and redis.tls_key_file".into(),
        ));
    }
    let tls_settings = r.tls_ca_file.is_some()
        || r.tls_cert_file.is_some()
        || r.tls_server_name.is_some()
        || r.tls_insecure_skip_verify;
    if tls_settings && !tls_url {
        p.push((
            "redis.url",
            "TLS settings are given but the URL is not rediss:// (or rediss-sentinel://, rediss-cluster://)".into(),
        ));
    }
}

/// The list names: present, distinct, readable, and with braces that keep
/// derived keys in their list's hash slot.
fn name_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let r = &c.redis;
    let output = c.consumer.output_queue.as_deref();
    for (path, name) in [
        ("redis.queue", Some(r.queue.as_str())),
        ("redis.error_queue", Some(r.error_queue.as_str())),
        ("consumer.output_queue", output),
    ] {
        let Some(name) = name else { continue };
        if name.is_empty() {
            p.push((path, "must not be empty".into()));
        } else if name.len() > MAX_NAME_BYTES {
            p.push((
                path,
                format!("is {} bytes long; at most {MAX_NAME_BYTES}", name.len()),
            ));
        } else if name.chars().any(char::is_control) {
            p.push((path, "must not hold control characters".into()));
        } else if path != "consumer.output_queue" && !names::derived_keys_share_slot(name) {
            p.push((
                path,
                format!(
                    "{:?} has unbalanced braces: the keys derived from it would not share its hash slot; use a name without braces or with one {{tag}}",
                    name
                ),
            ));
        }
    }
    if r.queue == r.error_queue {
        p.push((
            "redis.error_queue",
            format!("must differ from redis.queue (both are {:?})", r.queue),
        ));
    }
    if let Some(out) = output
        && (out == r.queue || out == r.error_queue)
    {
        p.push((
            "consumer.output_queue",
            format!("must differ from redis.queue and redis.error_queue (is {out:?})"),
        ));
    }
}

/// The lease's and the heartbeat's proportions (client-go's rules).
fn timing_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let l = &c.lease;
    if l.renew_deadline_ms <= l.retry_period_ms {
        p.push((
            "lease.renew_deadline_ms",
            format!(
                "must be greater than lease.retry_period_ms ({} <= {}): the holder needs room to retry a failed renewal",
                l.renew_deadline_ms, l.retry_period_ms
            ),
        ));
    }
    if l.ttl_ms <= l.renew_deadline_ms {
        p.push((
            "lease.ttl_ms",
            format!(
                "must be greater than lease.renew_deadline_ms ({} <= {}): the holder must stop before its lease can expire in Redis",
                l.ttl_ms, l.renew_deadline_ms
            ),
        ));
    }
    let k = &c.consumer;
    // ttl ≥ 2 × interval, written so that it cannot wrap.
    if k.heartbeat_ttl_ms / 2 < k.heartbeat_interval_ms {
        p.push((
            "consumer.heartbeat_ttl_ms",
            format!(
                "must be at least twice consumer.heartbeat_interval_ms ({} < 2 × {}): one late heartbeat must not declare a live consumer dead",
                k.heartbeat_ttl_ms, k.heartbeat_interval_ms
            ),
        ));
    }
    let pr = &c.processor;
    if pr.min_ms > pr.max_ms {
        p.push((
            "processor.min_ms",
            format!(
                "must not exceed processor.max_ms ({} > {})",
                pr.min_ms, pr.max_ms
            ),
        ));
    }
}

/// The settings that are fractions or rates.
fn ratio_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let rate = c.generator.rate;
    if !rate.is_finite() || !(0.0..=MAX_RATE).contains(&rate) {
        p.push((
            "generator.rate",
            format!("must be 0 (unlimited) or a number of messages per second up to {MAX_RATE}"),
        ));
    }
    if !(0.0..=1.0).contains(&c.processor.invalid_ratio) {
        p.push(("processor.invalid_ratio", "must be between 0 and 1".into()));
    }
    let memory = c.generator.max_redis_memory_ratio;
    if !(0.0..=1.0).contains(&memory) {
        p.push((
            "generator.max_redis_memory_ratio",
            "must be 0 (no bound) or a share of maxmemory up to 1".into(),
        ));
    }
}

/// Compatibility mode: `lock:gen` must be the one the originals use, and
/// the holder must stop generating before its `lock:gen` can expire.
fn compat_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let database = c
        .redis
        .url
        .parts()
        .ok()
        .and_then(|u| u.database)
        .unwrap_or(0);
    if database != 0 {
        p.push((
            "compat.original_lock",
            format!(
                "go-redis-dsg always uses database 0, but redis.url selects database {database}"
            ),
        ));
    }
    // lock:gen is renewed with the lease and shares its renew deadline; with
    // a TTL no shorter than the lease's, the holder stops at least the
    // lease's own margin before lock:gen can expire.
    let lock_ttl_ms = c
        .lease
        .ping_interval_seconds
        .saturating_add(5)
        .saturating_mul(1000);
    if c.lease.ttl_ms > lock_ttl_ms {
        p.push((
            "lease.ttl_ms",
            format!(
                "must not exceed the original's lock:gen TTL in compatibility mode, lease.ping_interval_seconds + 5 s ({} > {lock_ttl_ms}): raise GENERATOR_PING_INTERVAL or lower lease.ttl_ms (with lease.renew_deadline_ms and lease.retry_period_ms)",
                c.lease.ttl_ms
            ),
        ));
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
