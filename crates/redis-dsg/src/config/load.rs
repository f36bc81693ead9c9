//! Where settings come from, lowest priority first: built-in defaults → an
//! optional TOML file (`--config` / `DSG_CONFIG`) → the original program's
//! environment variables (an explicit list of exact names, see
//! [`LEGACY_ENV`]) → `DSG_*` environment variables (nested with `__`) →
//! command-line flags. Every value keeps its source, so errors and
//! `redis-dsg config` can name it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::Config;
use super::render::render_with_sources;
use super::validate::validate;

/// The original program's environment variables, accepted by exact name
/// only: a blanket unprefixed scan would pick up what Kubernetes injects for
/// Services (`REDIS_PORT=tcp://…` for a Service named `redis`).
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("MODE", "mode"),
    ("MPORT", "http.port"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_QUEUE", "redis.queue"),
    ("REDIS_ERROR_QUEUE", "redis.error_queue"),
    ("REDIS_POOL_SIZE", "redis.pool_size"),
    ("GENERATOR_INTERVAL", "generator.interval_ms"),
    ("GENERATOR_PING_INTERVAL", "lease.ping_interval_seconds"),
    ("CONSUMER_MAX_GOROUTINES", "consumer.max_concurrency"),
];

/// Prefix of the service's own environment variables.
pub const ENV_PREFIX: &str = "DSG_";

/// The variable naming the TOML file (not a setting itself).
pub const CONFIG_FILE_ENV: &str = "DSG_CONFIG";

/// Settings given on the command line; each `Some` overrides every other
/// source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`: TOML file path (beats `DSG_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// Setting path (`redis.url`) → (flag name, value).
    pub values: Vec<(&'static str, &'static str, String)>,
}

impl Overrides {
    /// Records `flag` setting `path` to `value` when present.
    pub fn set(&mut self, path: &'static str, flag: &'static str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.values.push((path, flag, v.to_string()));
        }
    }
}

/// Everything wrong with a configuration, each problem on its own line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming setting, source and rule.
    pub problems: Vec<String>,
}

/// A loaded configuration with the provenance of every value.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// Where the value of `path` (`redis.url`) came from, e.g.
    /// `environment variable REDIS_URL` or `default`.
    pub fn source_of(&self, path: &str) -> String {
        describe_source(&self.figment, path)
    }

    /// The effective configuration as TOML, secrets redacted, each value
    /// followed by a comment naming its source.
    pub fn render_toml(&self) -> String {
        render_with_sources(&self.config, |path| self.source_of(path))
    }
}

/// Loads configuration from the process environment and `overrides`.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(&env, overrides)
}

/// Loads configuration from the given environment (for tests and the demo).
pub fn load_from(env: &[(String, String)], overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));

    let file = overrides.config_file.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == CONFIG_FILE_ENV)
            .map(|(_, v)| PathBuf::from(v))
    });
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![format!(
                    "config file {} (from {}) does not exist or is not a file",
                    path.display(),
                    if overrides.config_file.is_some() {
                        "--config".to_string()
                    } else {
                        format!("environment variable {CONFIG_FILE_ENV}")
                    }
                )],
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }

    let legacy: Vec<Var> = env
        .iter()
        .filter_map(|(name, value)| {
            LEGACY_ENV
                .iter()
                .find(|(legacy, _)| legacy == name)
                .map(|(_, path)| Var::new(name, path, value))
        })
        .collect();
    figment = figment.merge(NamedValues::new(SourceKind::Environment, legacy));

    let mut own = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == CONFIG_FILE_ENV || is_service_link(rest) {
            continue;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        if path.is_empty() || path.split('.').any(str::is_empty) {
            problems.push(format!(
                "environment variable {name}: not a setting name (use DSG_SECTION__KEY)"
            ));
            continue;
        }
        own.push(Var::new(name, &path, value));
    }
    figment = figment.merge(NamedValues::new(SourceKind::Environment, own));

    let flags = overrides
        .values
        .iter()
        .map(|(path, flag, value)| Var::new(flag, path, value))
        .collect();
    figment = figment.merge(NamedValues::new(SourceKind::Flag, flags));

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    // Environment values arrive as strings; "lossy" extraction turns "500"
    // and "true" into numbers and booleans while leaving string settings
    // (a queue named "123") alone.
    let config: Config = figment.extract_lossy().map_err(|e| ConfigError {
        problems: e.into_iter().map(|e| describe_figment_error(&e)).collect(),
    })?;

    let problems = validate(&config);
    if !problems.is_empty() {
        return Err(ConfigError {
            problems: problems
                .into_iter()
                .map(|(path, rule)| {
                    format!("{path} (from {}): {rule}", describe_source(&figment, path))
                })
                .collect(),
        });
    }
    Ok(Loaded { config, figment })
}

/// Kubernetes injects `<SERVICE>_PORT…` and `<SERVICE>_SERVICE_…` variables
/// for every Service; a Service named `dsg` must not break start-up.
fn is_service_link(rest: &str) -> bool {
    rest == "PORT" || rest.starts_with("PORT_") || rest.starts_with("SERVICE_")
}

/// One value from a named source (an environment variable or a flag).
struct Var {
    name: String,
    path: String,
    value: String,
}

impl Var {
    fn new(name: &str, path: &str, value: &str) -> Var {
        Var {
            name: name.to_string(),
            path: path.to_string(),
            value: value.to_string(),
        }
    }
}

/// A figment provider for values that each come from a named variable or
/// flag, so errors and `redis-dsg config` can name it exactly.
struct NamedValues {
    kind: SourceKind,
    vars: Vec<Var>,
}

impl NamedValues {
    fn new(kind: SourceKind, vars: Vec<Var>) -> NamedValues {
        NamedValues { kind, vars }
    }
}

impl Provider for NamedValues {
    fn metadata(&self) -> Metadata {
        let names: BTreeMap<String, String> = self
            .vars
            .iter()
            .map(|v| (v.path.clone(), v.name.clone()))
            .collect();
        Metadata::named(self.kind.name()).interpolater(move |_: &Profile, path: &[&str]| {
            let path = path.join(".");
            names.get(&path).cloned().unwrap_or(path)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for var in &self.vars {
            let nested = figment::util::nest(&var.path, Value::from(var.value.clone()))
                .into_dict()
                .unwrap_or_default();
            merge_into(&mut dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Deep-merges `from` into `into` (later values win).
fn merge_into(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_into(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Where a value came from. Figment identifies a provider by the name in
/// its metadata, so each kind has exactly one name, and the names are only
/// ever produced and read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    /// A named environment variable (an original one or `DSG_*`).
    Environment,
    /// A command-line flag.
    Flag,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::Environment => "environment variable",
            SourceKind::Flag => "command-line flag",
        }
    }

    fn of(md: &Metadata) -> Option<SourceKind> {
        [SourceKind::Environment, SourceKind::Flag]
            .into_iter()
            .find(|k| md.name == k.name())
    }
}

/// `environment variable REDIS_URL`, `command-line flag --port`, `TOML file
/// /etc/dsg.toml`, or `default`, for the value at `keys`.
fn describe(md: &Metadata, keys: &[&str]) -> String {
    match (SourceKind::of(md), &md.source) {
        (Some(kind), _) => format!(
            "{} {}",
            kind.name(),
            md.interpolate(&Profile::Default, keys)
        ),
        // Only the built-in defaults are provided from code.
        (None, Some(figment::Source::Code(_))) => "default".to_string(),
        (None, Some(source)) => format!("{} {source}", md.name),
        (None, None) => md.name.to_string(),
    }
}

fn describe_source(figment: &Figment, path: &str) -> String {
    match figment.find_metadata(path) {
        Some(md) => describe(md, &path.split('.').collect::<Vec<_>>()),
        None => "default".to_string(),
    }
}

fn describe_figment_error(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let source = match &e.metadata {
        Some(md) => describe(md, &e.path.iter().map(String::as_str).collect::<Vec<_>>()),
        None => "configuration".to_string(),
    };
    let rule = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            format!("unknown setting `{field}` (check its spelling)")
        }
        kind => kind.to_string(),
    };
    if path.is_empty() {
        format!("{source}: {rule}")
    } else {
        format!("{path} (from {source}): {rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load_from(&env(pairs), &Overrides::default())
    }

    fn problems(pairs: &[(&str, &str)]) -> String {
        match load_env(pairs) {
            Ok(_) => panic!("expected a configuration error for {pairs:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_original_program() {
        let c = load_env(&[]).expect("defaults are valid").config;
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(c.redis.queue, "a");
        assert_eq!(c.redis.error_queue, "errors");
        assert_eq!(c.redis.pool_size, 100);
        assert_eq!(c.generator.interval_ms, 500);
        assert_eq!(c.lease.ping_interval_seconds, 10);
        assert_eq!(c.consumer.max_concurrency, 10_000);
        assert_eq!(c.processor.max_ms, 999);
        assert!((c.processor.invalid_ratio - 0.05).abs() < f64::EPSILON);
    }

    #[test]
    fn legacy_names_are_read_exactly() {
        let c = load_env(&[
            ("MPORT", "9090"),
            ("MODE", "consumer"),
            ("GENERATOR_INTERVAL", "0"),
            ("REDIS_QUEUE", "123"),
            ("REDIS_PORT", "tcp://10.0.0.1:6379"),
            ("DSG_PORT", "tcp://10.0.0.1:8080"),
        ])
        .expect("valid")
        .config;
        assert_eq!(c.http.port, 9090);
        assert_eq!(c.mode, Mode::Consumer);
        assert_eq!(c.generator.interval_ms, 0);
        // A numeric-looking queue name stays a string.
        assert_eq!(c.redis.queue, "123");
    }

    #[test]
    fn prefixed_env_beats_legacy_and_flags_beat_both() {
        let mut o = Overrides::default();
        let e = env(&[("MPORT", "9090"), ("DSG_HTTP__PORT", "9091")]);
        assert_eq!(load_from(&e, &o).expect("valid").config.http.port, 9091);
        o.set("http.port", "--port", Some(9092));
        let loaded = load_from(&e, &o).expect("valid");
        assert_eq!(loaded.config.http.port, 9092);
        assert_eq!(loaded.source_of("http.port"), "command-line flag --port");
    }

    #[test]
    fn bad_config_names_setting_and_source() {
        let msg = problems(&[("GENERATOR_INTERVAL", "fast")]);
        assert!(msg.contains("generator.interval_ms"), "{msg}");
        assert!(
            msg.contains("environment variable GENERATOR_INTERVAL"),
            "{msg}"
        );

        let msg = problems(&[("MODE", "leader")]);
        assert!(msg.contains("mode") && msg.contains("MODE"), "{msg}");
        assert!(msg.contains("auto"), "{msg}");

        let msg = problems(&[("REDIS_POOL_SIZE", "-3")]);
        assert!(
            msg.contains("redis.pool_size") && msg.contains("REDIS_POOL_SIZE"),
            "{msg}"
        );

        let msg = problems(&[("DSG_CONSUMER__MAX_MESSAGE_BYTES", "-1")]);
        assert!(msg.contains("DSG_CONSUMER__MAX_MESSAGE_BYTES"), "{msg}");

        let msg = problems(&[("DSG_CONSUMER__FECH_BATCH", "5")]);
        assert!(msg.contains("fech_batch"), "{msg}");
    }

    #[test]
    fn conflicting_lease_timings_are_rejected() {
        let msg = problems(&[
            ("DSG_LEASE__TTL_MS", "5000"),
            ("DSG_LEASE__RENEW_DEADLINE_MS", "6000"),
        ]);
        assert!(msg.contains("lease.ttl_ms"), "{msg}");
        assert!(msg.contains("DSG_LEASE__TTL_MS"), "{msg}");
        let msg = problems(&[("DSG_LEASE__RETRY_PERIOD_MS", "8000")]);
        assert!(msg.contains("lease.renew_deadline_ms"), "{msg}");
    }

    #[test]
    fn contract5_inconsistent_auth_and_tls_settings_are_rejected() {
        let file = tempfile::NamedTempFile::new().expect("file");
        let path = file.path().display().to_string();
        // A password given twice.
        let msg = problems(&[
            ("DSG_REDIS__PASSWORD", "x"),
            ("DSG_REDIS__PASSWORD_FILE", &path),
        ]);
        assert!(msg.contains("redis.password_file"), "{msg}");
        // A file that cannot be read.
        let msg = problems(&[("DSG_REDIS__PASSWORD_FILE", "/nonexistent/password")]);
        assert!(
            msg.contains("redis.password_file") && msg.contains("cannot be read"),
            "{msg}"
        );
        // A client certificate without its key.
        let msg = problems(&[
            ("REDIS_URL", "rediss://h:1"),
            ("DSG_REDIS__TLS_CERT_FILE", &path),
        ]);
        assert!(msg.contains("redis.tls_cert_file"), "{msg}");
        // TLS settings with a plain URL.
        let msg = problems(&[
            ("REDIS_URL", "redis://h:1"),
            ("DSG_REDIS__TLS_SERVER_NAME", "redis.test"),
        ]);
        assert!(msg.contains("redis.url") && msg.contains("rediss"), "{msg}");
        // And a consistent set passes.
        let ok = load_env(&[
            ("REDIS_URL", "rediss://h:1"),
            ("DSG_REDIS__TLS_CA_FILE", &path),
            ("DSG_REDIS__PASSWORD_FILE", &path),
        ]);
        assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    }

    #[test]
    fn bad_redis_url_is_rejected() {
        for url in ["http://example.com", "localhost:notaport", "redis://", ""] {
            let msg = problems(&[("REDIS_URL", url)]);
            assert!(
                msg.contains("redis.url") && msg.contains("REDIS_URL"),
                "{url}: {msg}"
            );
        }
    }

    #[test]
    fn render_redacts_secrets_and_names_sources() {
        let loaded = load_env(&[
            ("REDIS_URL", "redis://app:hunter2@redis:6380/2"),
            ("DSG_REDIS__PASSWORD", "s3cret"),
        ])
        .expect("valid");
        let text = loaded.render_toml();
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("redis://app:***@redis:6380/2"), "{text}");
        assert!(text.contains("# environment variable REDIS_URL"), "{text}");
        assert!(text.contains("interval_ms = 500  # default"), "{text}");
        // What is rendered parses back as TOML.
        toml::from_str::<toml::Table>(&text).expect("valid TOML");
    }

    #[test]
    fn toml_file_is_read_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dsg.toml");
        std::fs::write(&path, "[generator]\ninterval_ms = \"x\"\n").expect("write");
        let msg = problems(&[("DSG_CONFIG", path.to_str().expect("utf-8"))]);
        assert!(
            msg.contains("generator.interval_ms") && msg.contains("dsg.toml"),
            "{msg}"
        );

        std::fs::write(&path, "mode = \"consumer\"\n[generator]\ninterval_ms = 5\n")
            .expect("write");
        let loaded = load_env(&[("DSG_CONFIG", path.to_str().expect("utf-8"))]).expect("valid");
        assert_eq!(loaded.config.generator.interval_ms, 5);
        assert!(
            loaded
                .source_of("generator.interval_ms")
                .contains("dsg.toml")
        );
    }
}
