//! The settings of the replicas a test or tool starts, typed: a product
//! [`Config`] (so a renamed or retyped setting breaks the build, not a test
//! at run time), written as the TOML file every replica reads
//! (`DSG_CONFIG`). Environment variables given on top still win, as they do
//! in a pod (file < original variables < `DSG_*`), so a test can vary one
//! setting per replica the way an operator would.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redis_dsg::config::{Config, RedisUrl};

/// A configuration for replicas on `redis_url` with timings short enough
/// for tests and tools (lease 1 s, heartbeat TTL 1 s, reaper every 0.3 s,
/// Redis timeouts 1 s); everything else at its default.
pub fn quick_config(redis_url: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = RedisUrl::new(redis_url);
    c.redis.command_timeout_ms = 1_000;
    c.redis.connect_timeout_ms = 1_000;
    c.redis.reconnect_max_delay_ms = 200;
    c.lease.ping_interval_seconds = 1;
    set_lease_ttl(&mut c, 1_000);
    c.consumer.heartbeat_ttl_ms = 1_000;
    c.consumer.heartbeat_interval_ms = 250;
    c.consumer.reaper_interval_ms = 300;
    c.shutdown.timeout_ms = 5_000;
    c
}

/// Sets the lease TTL with the client-go proportions the service requires
/// (renew deadline 70 %, retry period 20 %).
pub fn set_lease_ttl(c: &mut Config, ttl_ms: u64) {
    c.lease.ttl_ms = ttl_ms;
    c.lease.renew_deadline_ms = ttl_ms * 7 / 10;
    c.lease.retry_period_ms = ttl_ms / 5;
}

/// Writes `config` as `<dir>/<name>.toml` and returns the environment that
/// makes a replica read it. The file holds the Redis URL and password in
/// clear (the configuration's own rendering redacts them), so keep `dir`
/// private to the test or tool.
pub fn env_for(config: &Config, dir: &Path, name: &str) -> Result<Vec<(String, String)>, String> {
    let mut table = toml::Table::try_from(config).map_err(|e| format!("config as TOML: {e}"))?;
    if let Some(toml::Value::Table(redis)) = table.get_mut("redis") {
        redis.insert("url".into(), config.redis.url.expose().into());
        if let Some(password) = &config.redis.password {
            redis.insert("password".into(), password.expose().into());
        }
    }
    let path = dir.join(format!("{name}.toml"));
    // Replaced atomically: a replica started a moment ago may be reading
    // the previous file, and an empty one would be a valid (default)
    // configuration.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = dir.join(format!(".{name}.toml.{}.{n}", std::process::id()));
    std::fs::write(&partial, table.to_string())
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(vec![
        ("DSG_CONFIG".into(), path.display().to_string()),
        ("RUST_LOG".into(), "info".into()),
    ])
}

/// `env` with `extra` on top (an extra variable replaces one of the same
/// name).
pub fn with_extra(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_file_loads_back_as_the_same_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = quick_config("redis://user:s3cret@127.0.0.1:6390/2");
        c.consumer.output_queue = Some("{q}:out".into());
        c.redis.queue = "q".into();
        let env = env_for(&c, dir.path(), "replica").expect("written");
        let loaded = redis_dsg::config::load_from(&env, &Default::default()).expect("loads");
        assert_eq!(
            loaded.config.redis.url.expose(),
            "redis://user:s3cret@127.0.0.1:6390/2"
        );
        assert_eq!(loaded.config.lease.renew_deadline_ms, 700);
        assert_eq!(
            loaded.config.consumer.output_queue.as_deref(),
            Some("{q}:out")
        );
        let with_legacy = with_extra(env, &[("REDIS_QUEUE", "other")]);
        let loaded =
            redis_dsg::config::load_from(&with_legacy, &Default::default()).expect("loads");
        assert_eq!(
            loaded.config.redis.queue, "other",
            "environment beats the file"
        );
    }
}
