//! The settings of the fleet benchmark's pods, as environment variables
//! naming only what a scenario changes: every other setting keeps the
//! default of the binary under test, so `--against` an older or newer
//! build measures *its* defaults (a configuration file written from this
//! build's `Config` would carry this build's defaults, and a field the
//! other binary does not know would stop it). The effective values a
//! figure is printed next to (heartbeat TTL, reaper interval) are read
//! back from that binary's own `redis-dsg config`.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// The role of a pod (`MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PodMode {
    Auto,
    Consumer,
    Generator,
}

/// What one group of pods is told; `None` keeps the binary's default.
#[derive(Debug, Clone)]
pub(super) struct PodSettings {
    pub mode: PodMode,
    pub queue: Option<String>,
    /// `processor.min_ms`, `processor.max_ms`.
    pub processing_ms: Option<(u64, u64)>,
    pub invalid_ratio: Option<f64>,
    /// A paced generator: `generator.interval_ms` 0 and this `generator.rate`.
    pub generator_rate: Option<f64>,
    pub output_queue: Option<String>,
}

impl PodSettings {
    /// Pods in `mode` with every other setting at the binary's default.
    pub(super) fn defaults(mode: PodMode) -> PodSettings {
        PodSettings {
            mode,
            queue: None,
            processing_ms: None,
            invalid_ratio: None,
            generator_rate: None,
            output_queue: None,
        }
    }

    /// The environment of a pod on `redis_url` (the HTTP port is the
    /// launcher's `MPORT`), logging warnings only.
    pub(super) fn env(&self, redis_url: &str) -> Vec<(String, String)> {
        let mode = match self.mode {
            PodMode::Auto => "auto",
            PodMode::Consumer => "consumer",
            PodMode::Generator => "generator",
        };
        let mut env = vec![
            ("REDIS_URL", redis_url.to_string()),
            ("MODE", mode.to_string()),
            ("RUST_LOG", "warn".to_string()),
        ];
        if let Some(q) = &self.queue {
            env.push(("REDIS_QUEUE", q.clone()));
            env.push(("REDIS_ERROR_QUEUE", format!("{q}:errors")));
        }
        if let Some((min, max)) = self.processing_ms {
            env.push(("DSG_PROCESSOR__MIN_MS", min.to_string()));
            env.push(("DSG_PROCESSOR__MAX_MS", max.to_string()));
        }
        if let Some(r) = self.invalid_ratio {
            env.push(("DSG_PROCESSOR__INVALID_RATIO", r.to_string()));
        }
        if let Some(rate) = self.generator_rate {
            env.push(("GENERATOR_INTERVAL", "0".to_string()));
            env.push(("DSG_GENERATOR__RATE", rate.to_string()));
        }
        if let Some(out) = &self.output_queue {
            env.push(("DSG_CONSUMER__OUTPUT_QUEUE", out.clone()));
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// The settings of the binary under test that figures are printed next
/// to, as its `redis-dsg config` reports them.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Effective {
    pub consumer: EffectiveConsumer,
    pub generator: EffectiveGenerator,
    pub redis: EffectiveRedis,
}

/// The Redis settings of [`Effective`].
#[derive(Debug, Clone, Deserialize)]
pub(super) struct EffectiveRedis {
    pub queue: String,
}

/// The consumer settings of [`Effective`].
#[derive(Debug, Clone, Deserialize)]
pub(super) struct EffectiveConsumer {
    pub heartbeat_ttl_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub reaper_interval_ms: u64,
}

/// The generator settings of [`Effective`].
#[derive(Debug, Clone, Deserialize)]
pub(super) struct EffectiveGenerator {
    pub interval_ms: u64,
}

/// Runs `exe config` with `env`; the values it reports.
pub(super) fn effective(exe: &Path, env: &[(String, String)]) -> Result<Effective, String> {
    let out = Command::new(exe)
        .arg("config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .map_err(|e| format!("cannot run {} config: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} config failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    toml::from_str(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("{} config printed no readable TOML: {e}", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_names_a_setting_of_this_build() {
        let settings = PodSettings {
            mode: PodMode::Generator,
            queue: Some("bench".into()),
            processing_ms: Some((0, 50)),
            invalid_ratio: Some(0.0),
            generator_rate: Some(2_000.0),
            output_queue: Some("{bench}:out".into()),
        };
        let env = settings.env("redis://127.0.0.1:6390");
        let loaded = redis_dsg::config::load_from(&env, &Default::default()).expect("loads");
        let c = loaded.config;
        assert_eq!(c.redis.queue, "bench");
        assert_eq!(c.redis.error_queue, "bench:errors");
        assert_eq!((c.processor.min_ms, c.processor.max_ms), (0, 50));
        assert_eq!(c.generator.interval_ms, 0);
        assert!((c.generator.rate - 2_000.0).abs() < 1e-9);
        assert_eq!(c.consumer.output_queue.as_deref(), Some("{bench}:out"));
        let defaults = PodSettings::defaults(PodMode::Auto).env("redis://127.0.0.1:6390");
        assert_eq!(
            defaults.len(),
            3,
            "only URL, mode and log level: {defaults:?}"
        );
    }

    #[test]
    fn the_effective_settings_read_the_config_commands_toml() {
        let text = "# Effective configuration\nmode = \"auto\"  # default\n\n[consumer]\n\
                    heartbeat_interval_ms = 2000  # default\nheartbeat_ttl_ms = 10000  # default\n\
                    reaper_interval_ms = 3000  # default\nfetch_batch = 500  # default\n\n\
                    [generator]\ninterval_ms = 500  # default\nrate = 0.0  # default\n\n\
                    [redis]\n# password: not set\nqueue = \"a\"  # default\n";
        let e: Effective = toml::from_str(text).expect("parses");
        assert_eq!(e.consumer.heartbeat_ttl_ms, 10_000);
        assert_eq!(e.consumer.reaper_interval_ms, 3_000);
        assert_eq!(e.generator.interval_ms, 500);
        assert_eq!(e.redis.queue, "a");
    }
}
