//! What a deployment migrated from go-redis-dsg should know: the original's
//! variables whose meaning differs here, and the defaults its code (not
//! its README) used that redis-dsg does not. `run` logs these once at
//! start (README, "Migrating from go-redis-dsg").

use super::{LEGACY_ENV, Loaded, Mode};

/// One thing that differs from the original, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationNote {
    /// Worth a warning rather than information (it changes what the pod
    /// does in a way the operator most likely did not mean).
    pub warn: bool,
    /// What differs, naming the variable.
    pub text: String,
}

impl MigrationNote {
    fn info(text: String) -> MigrationNote {
        MigrationNote { warn: false, text }
    }

    /// Logs it (`tracing`, at INFO or WARN).
    pub fn log(&self) {
        if self.warn {
            tracing::warn!("{}", self.text);
        } else {
            tracing::info!("{}", self.text);
        }
    }
}

impl Loaded {
    /// Whether the original variable `name` set its setting.
    fn set_by_original_variable(&self, name: &str) -> bool {
        LEGACY_ENV
            .iter()
            .find(|(n, _)| *n == name)
            .is_some_and(|(_, path)| self.source_of(path) == format!("environment variable {name}"))
    }

    /// The differences from the original that apply to this configuration:
    /// each original variable that is set and means something else here,
    /// and, when any is set (a migrated deployment), the unset ones whose
    /// default in the original's code differed.
    pub fn migration_notes(&self) -> Vec<MigrationNote> {
        let c = &self.config;
        let set = |name: &str| self.set_by_original_variable(name);
        let mut notes = Vec::new();
        if set("MODE") && c.mode == Mode::Generator {
            notes.push(MigrationNote {
                warn: true,
                text: "MODE=generator: this instance never consumes; the original ignored MODE (every process contended and consumed), use MODE=auto for that".into(),
            });
        }
        if set("CONSUMER_MAX_GOROUTINES") {
            notes.push(MigrationNote::info(format!(
                "CONSUMER_MAX_GOROUTINES={}: messages processed at once, not worker goroutines started per consumer as in the original",
                c.consumer.max_concurrency
            )));
        }
        if set("GENERATOR_PING_INTERVAL") {
            notes.push(MigrationNote::info(format!(
                "GENERATOR_PING_INTERVAL={}: only the longest pause of a standby between looks at the lease{}; the lease lives lease.ttl_ms ({} ms) and is renewed every lease.retry_period_ms ({} ms), not the original's ping interval + 5 s",
                c.lease.ping_interval_seconds,
                if c.compat.original_lock { " and the TTL of lock:gen" } else { "" },
                c.lease.ttl_ms,
                c.lease.retry_period_ms
            )));
        }
        if set("GENERATOR_INTERVAL") && c.generator.interval_ms == 0 {
            notes.push(MigrationNote::info(
                "GENERATOR_INTERVAL=0: generating as fast as Redis takes the messages (the original panicked on 0)".into(),
            ));
        }
        if set("MPORT") {
            notes.push(MigrationNote::info(format!(
                "MPORT={}: /healthz, /readyz, /metrics and /status listen on {} (the original served expvar on 127.0.0.1 only)",
                c.http.port, c.http.bind
            )));
        }
        if set("REDIS_POOL_SIZE") {
            notes.push(MigrationNote::info(format!(
                "REDIS_POOL_SIZE={}: an upper bound; commands are pipelined over at most {} connections",
                c.redis.pool_size,
                c.redis.open_connections()
            )));
        }
        if LEGACY_ENV.iter().any(|(name, _)| set(name)) {
            notes.extend(self.unset_original_defaults());
        }
        notes
    }

    /// The original variables left unset whose default in the original's
    /// code differs from the one used here (its README's).
    fn unset_original_defaults(&self) -> Vec<MigrationNote> {
        let c = &self.config;
        let mut unset = Vec::new();
        for (name, ours, original) in [
            ("REDIS_URL", c.redis.url.to_string(), "no connection at all"),
            ("REDIS_QUEUE", c.redis.queue.clone(), "the list named \"\""),
            (
                "REDIS_ERROR_QUEUE",
                c.redis.error_queue.clone(),
                "the list named \"\"",
            ),
            ("MPORT", c.http.port.to_string(), "a random port"),
            (
                "CONSUMER_MAX_GOROUTINES",
                c.consumer.max_concurrency.to_string(),
                "1000",
            ),
        ] {
            if self.source_of(
                LEGACY_ENV
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, p)| p),
            ) == "default"
            {
                unset.push(format!(
                    "{name} unset: using {ours} (the original's code used {original})"
                ));
            }
        }
        if unset.is_empty() {
            return Vec::new();
        }
        vec![MigrationNote::info(format!(
            "{}; see README, Migrating from go-redis-dsg",
            unset.join("; ")
        ))]
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, load_from};

    fn notes(env: &[(&str, &str)]) -> Vec<String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_from(&env, &Overrides::default())
            .expect("valid")
            .migration_notes()
            .into_iter()
            .map(|n| format!("{}{}", if n.warn { "WARN " } else { "" }, n.text))
            .collect()
    }

    #[test]
    fn original_variables_whose_meaning_differs_are_named_once() {
        assert!(notes(&[]).is_empty(), "a fresh deployment hears nothing");
        assert!(notes(&[("DSG_MODE", "generator")]).is_empty());
        let n = notes(&[
            ("MODE", "generator"),
            ("CONSUMER_MAX_GOROUTINES", "1000"),
            ("REDIS_QUEUE", "q"),
        ]);
        assert!(n[0].starts_with("WARN MODE=generator"), "{n:?}");
        assert!(n[1].starts_with("CONSUMER_MAX_GOROUTINES=1000"), "{n:?}");
        let unset = n.last().expect("the unset defaults");
        assert!(unset.contains("REDIS_URL unset"), "{unset}");
        assert!(
            unset.contains("REDIS_ERROR_QUEUE unset: using errors"),
            "{unset}"
        );
        assert!(!unset.contains("REDIS_QUEUE unset"), "{unset}");
        assert!(!unset.contains("CONSUMER_MAX_GOROUTINES unset"), "{unset}");
    }
}
