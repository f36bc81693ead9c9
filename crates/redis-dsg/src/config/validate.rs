//! The rules a type cannot express, checked after extraction; every
//! violation is reported at once, naming the setting and the rule.

use super::Config;

/// Checks every rule that a type cannot express; returns (setting, rule)
/// for each violation.
pub fn validate(c: &Config) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    if let Err(e) = super::parse_url(&c.redis.url.expose()) {
        p.push(("redis.url", e));
    }
    let r = &c.redis;
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
    if tls_settings && !r.url.expose().starts_with("rediss") {
        p.push((
            "redis.url",
            "TLS settings are given but the URL is not rediss:// (or rediss-sentinel://, rediss-cluster://)".into(),
        ));
    }
    if c.redis.pool_size == 0 {
        p.push(("redis.pool_size", "must be at least 1".into()));
    }
    for (path, name) in [
        ("redis.queue", &c.redis.queue),
        ("redis.error_queue", &c.redis.error_queue),
    ] {
        if name.is_empty() {
            p.push((path, "must not be empty".into()));
        }
    }
    if !c.redis.queue.is_empty() && !super::names::derived_keys_share_slot(&c.redis.queue) {
        p.push((
            "redis.queue",
            format!(
                "{:?} has unbalanced braces: the keys derived from it would not share its hash slot; use a name without braces or with one {{tag}}",
                c.redis.queue
            ),
        ));
    }
    if c.redis.queue == c.redis.error_queue {
        p.push((
            "redis.error_queue",
            format!(
                "must differ from redis.queue (both are {:?})",
                c.redis.queue
            ),
        ));
    }
    for (path, ms) in [
        ("redis.connect_timeout_ms", c.redis.connect_timeout_ms),
        ("redis.command_timeout_ms", c.redis.command_timeout_ms),
        (
            "redis.reconnect_max_delay_ms",
            c.redis.reconnect_max_delay_ms,
        ),
        ("shutdown.timeout_ms", c.shutdown.timeout_ms),
    ] {
        if ms == 0 {
            p.push((path, "must be greater than 0".into()));
        }
    }
    // Lua's unpack() takes at most a few thousand values per call.
    if !(1..=1000).contains(&c.generator.batch_size) {
        p.push(("generator.batch_size", "must be between 1 and 1000".into()));
    }
    if c.generator.max_in_flight_batches == 0 {
        p.push((
            "generator.max_in_flight_batches",
            "must be at least 1".into(),
        ));
    }
    if !c.generator.rate.is_finite() || c.generator.rate < 0.0 {
        p.push((
            "generator.rate",
            "must be 0 (unlimited) or a positive number of messages per second".into(),
        ));
    }
    let l = &c.lease;
    if l.retry_period_ms == 0 {
        p.push(("lease.retry_period_ms", "must be greater than 0".into()));
    }
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
    if l.ping_interval_seconds == 0 {
        p.push(("lease.ping_interval_seconds", "must be at least 1".into()));
    }
    let k = &c.consumer;
    if k.max_concurrency == 0 {
        p.push(("consumer.max_concurrency", "must be at least 1".into()));
    }
    if k.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS / 2 {
        p.push(("consumer.max_concurrency", "is too large".into()));
    }
    if !(1..=1000).contains(&k.fetch_batch) {
        p.push(("consumer.fetch_batch", "must be between 1 and 1000".into()));
    }
    if !(1..=10_000).contains(&k.idle_poll_max_ms) {
        p.push((
            "consumer.idle_poll_max_ms",
            "must be between 1 and 10000".into(),
        ));
    }
    if k.heartbeat_interval_ms == 0 {
        p.push((
            "consumer.heartbeat_interval_ms",
            "must be greater than 0".into(),
        ));
    }
    if k.heartbeat_ttl_ms < 2 * k.heartbeat_interval_ms {
        p.push((
            "consumer.heartbeat_ttl_ms",
            format!(
                "must be at least twice consumer.heartbeat_interval_ms ({} < 2 × {}): one late heartbeat must not declare a live consumer dead",
                k.heartbeat_ttl_ms, k.heartbeat_interval_ms
            ),
        ));
    }
    if k.reaper_interval_ms == 0 {
        p.push((
            "consumer.reaper_interval_ms",
            "must be greater than 0".into(),
        ));
    }
    if k.max_message_bytes == 0 || k.max_message_bytes > 512 * 1024 * 1024 {
        p.push((
            "consumer.max_message_bytes",
            "must be between 1 and 536870912 (Redis' own limit)".into(),
        ));
    }
    if let Some(out) = &k.output_queue {
        if out.is_empty() {
            p.push(("consumer.output_queue", "must not be empty when set".into()));
        }
        if out == &c.redis.queue || out == &c.redis.error_queue {
            p.push((
                "consumer.output_queue",
                format!("must differ from redis.queue and redis.error_queue (is {out:?})"),
            ));
        }
    }
    if c.compat.original_lock {
        compat_rules(c, &mut p);
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
    if !(0.0..=1.0).contains(&pr.invalid_ratio) {
        p.push(("processor.invalid_ratio", "must be between 0 and 1".into()));
    }
    p
}

/// Compatibility mode: `lock:gen` must be the one the originals use, and
/// the holder must stop generating before its `lock:gen` can expire.
fn compat_rules(c: &Config, p: &mut Vec<(&'static str, String)>) {
    let database = super::parse_url(&c.redis.url.expose())
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
    let lock_ttl_ms = (c.lease.ping_interval_seconds + 5) * 1000;
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
mod tests {
    use super::*;
    use crate::config::RedisUrl;

    fn compat() -> Config {
        let mut c = Config::default();
        c.compat.original_lock = true;
        c
    }

    fn settings(c: &Config) -> Vec<&'static str> {
        validate(c).into_iter().map(|(path, _)| path).collect()
    }

    #[test]
    fn compatibility_mode_is_off_by_default_and_valid_with_the_defaults() {
        assert!(!Config::default().compat.original_lock);
        assert!(validate(&compat()).is_empty(), "{:?}", validate(&compat()));
    }

    #[test]
    fn compatibility_mode_needs_database_0_and_a_lease_within_the_lock_ttl() {
        let mut c = compat();
        c.redis.url = RedisUrl::new("redis://h:6379/3");
        assert_eq!(settings(&c), ["compat.original_lock"]);
        let (_, rule) = &validate(&c)[0];
        assert!(rule.contains("database 3"), "{rule}");
        c.compat.original_lock = false;
        assert!(validate(&c).is_empty(), "only compatibility mode cares");

        let mut c = compat();
        // GENERATOR_PING_INTERVAL=1: lock:gen lives 6 s, the lease 10 s.
        c.lease.ping_interval_seconds = 1;
        assert_eq!(settings(&c), ["lease.ttl_ms"]);
        let (_, rule) = &validate(&c)[0];
        assert!(rule.contains("10000 > 6000"), "{rule}");
        c.lease.ttl_ms = 6_000;
        c.lease.renew_deadline_ms = 4_000;
        assert!(validate(&c).is_empty());
    }
}
