//! Configuration: what the service reads, from where, and the rules it checks.
//!
//! Sources, lowest priority first: built-in defaults → an optional TOML file
//! (`--config` / `DSG_CONFIG`) → the original program's environment variables
//! (an explicit list of exact names, see [`LEGACY_ENV`]) → `DSG_*`
//! environment variables (nested with `__`) → command-line flags.
//!
//! Validation runs after extraction and reports every problem at once, each
//! naming the setting, the source its value came from, and the rule it broke.
//! The service exits with [`crate::exit::CONFIG`] before it touches Redis.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize, Serializer};

/// Which roles this instance may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Contend for the generator lease; consume while not holding it.
    Auto,
    /// Contend for the generator lease; never consume.
    Generator,
    /// Consume only; never contend for the lease.
    Consumer,
}

impl Mode {
    /// Whether this mode may hold the generator lease.
    pub fn may_generate(self) -> bool {
        matches!(self, Mode::Auto | Mode::Generator)
    }

    /// Whether this mode consumes while it does not generate.
    pub fn may_consume(self) -> bool {
        matches!(self, Mode::Auto | Mode::Consumer)
    }

    /// The lowercase name used in settings, logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Generator => "generator",
            Mode::Consumer => "consumer",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (what the Helm chart sets).
    Json,
}

/// A string that must never be printed: its `Debug` and `Serialize` forms are
/// redacted. Use [`Secret::expose`] where the real value is needed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A Redis address as given (`host:port` or a `redis://`-style URL). Its
/// `Debug`, `Display` and `Serialize` forms hide any password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps an address.
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }

    /// The address as a full URL (`host:port` gains `redis://`), password
    /// included.
    pub fn expose(&self) -> String {
        if self.0.contains("://") {
            self.0.clone()
        } else {
            format!("redis://{}", self.0)
        }
    }

    /// The address with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host`, and the value of
/// a `sentinelPassword` query parameter, with `***`.
pub fn redact_url(url: &str) -> String {
    // The query parameter first, wherever it is: its value may hold '@',
    // which would otherwise pass for the end of a userinfo.
    const PARAM: &str = "sentinelpassword=";
    let lower = url.to_ascii_lowercase();
    let mut out = String::with_capacity(url.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(PARAM) {
        let value_start = from + found + PARAM.len();
        let value_end = url[value_start..]
            .find('&')
            .map_or(url.len(), |i| value_start + i);
        out.push_str(&url[from..value_start]);
        out.push_str("***");
        from = value_end;
    }
    out.push_str(&url[from..]);
    redact_userinfo(&out)
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    // The userinfo ends at the last '@' before the path (a password may hold '@').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://password@host` is read as a password by some clients.
        None if !userinfo.is_empty() => "***".to_string(),
        None => String::new(),
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

/// The whole configuration of the service and its one-shot commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `auto`, `generator` or `consumer` (`MODE`).
    pub mode: Mode,
    /// `text` or `json` (`DSG_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// The HTTP server (probes, metrics, status).
    pub http: HttpConfig,
    /// The Redis connection and list names.
    pub redis: RedisConfig,
    /// The generator role.
    pub generator: GeneratorConfig,
    /// The generator lease.
    pub lease: LeaseConfig,
    /// The consumer role.
    pub consumer: ConsumerConfig,
    /// The built-in simulated processor.
    pub processor: ProcessorConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

/// The HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Port for `/healthz`, `/readyz`, `/metrics` and `/status` (`MPORT`).
    pub port: u16,
    /// Address to listen on.
    pub bind: IpAddr,
}

/// The Redis connection and the lists the service works on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` or `redis://[user:password@]host:port[/db]` (`REDIS_URL`).
    pub url: RedisUrl,
    /// ACL user name; overrides one in the URL.
    pub username: Option<String>,
    /// Password; overrides one in the URL.
    pub password: Option<Secret>,
    /// File holding the password (a mounted Kubernetes secret); read again
    /// at every connection, so a rotated secret works without a restart.
    pub password_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for `rediss://`
    /// (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that require one.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub tls_key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, when it differs from
    /// the host in the URL.
    pub tls_server_name: Option<String>,
    /// Accept any server certificate. Insecure; logged loudly at start.
    pub tls_insecure_skip_verify: bool,
    /// Upper bound on command connections (`REDIS_POOL_SIZE`). Commands are
    /// pipelined, so at most [`RedisConfig::MAX_OPEN_CONNECTIONS`] are opened.
    pub pool_size: usize,
    /// The list generated messages go to (`REDIS_QUEUE`).
    pub queue: String,
    /// The list failed messages go to (`REDIS_ERROR_QUEUE`).
    pub error_queue: String,
    /// Time allowed to open a connection.
    pub connect_timeout_ms: u64,
    /// Time allowed for one command before it counts as failed.
    pub command_timeout_ms: u64,
    /// Longest pause between reconnection attempts (backoff doubles up to it).
    pub reconnect_max_delay_ms: u64,
}

impl RedisConfig {
    /// Connections actually opened for commands, whatever `pool_size` allows:
    /// fred pipelines every command, so more connections only cost memory.
    pub const MAX_OPEN_CONNECTIONS: usize = 4;

    /// Command connections to open: `pool_size`, capped.
    pub fn open_connections(&self) -> usize {
        self.pool_size.clamp(1, Self::MAX_OPEN_CONNECTIONS)
    }

    /// [`RedisConfig::command_timeout_ms`] as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

/// The generator role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Pause between messages; `0` generates as fast as Redis takes them
    /// (`GENERATOR_INTERVAL`).
    pub interval_ms: u64,
    /// Messages per fenced write when `interval_ms` is 0.
    pub batch_size: usize,
    /// Fenced writes in flight at once when `interval_ms` is 0.
    pub max_in_flight_batches: usize,
    /// Target messages per second when `interval_ms` is 0; `0` is unlimited.
    pub rate: f64,
}

/// The generator lease (timing rules as client-go's leader election).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// How long the lease key lives in Redis without renewal.
    pub ttl_ms: u64,
    /// The holder stops generating when it has not renewed for this long,
    /// counted from when it sent its last successful renewal.
    pub renew_deadline_ms: u64,
    /// Pause between renewals, and between retries after an error.
    pub retry_period_ms: u64,
    /// Longest pause of a standby between checks of the lease
    /// (`GENERATOR_PING_INTERVAL`).
    pub ping_interval_seconds: u64,
}

impl LeaseConfig {
    /// [`LeaseConfig::ttl_ms`] as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
    /// [`LeaseConfig::renew_deadline_ms`] as a duration.
    pub fn renew_deadline(&self) -> Duration {
        Duration::from_millis(self.renew_deadline_ms)
    }
    /// [`LeaseConfig::retry_period_ms`] as a duration.
    pub fn retry_period(&self) -> Duration {
        Duration::from_millis(self.retry_period_ms)
    }
    /// [`LeaseConfig::ping_interval_seconds`] as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_seconds)
    }
}

/// The consumer role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Messages processed at once, at most (`CONSUMER_MAX_GOROUTINES`).
    pub max_concurrency: usize,
    /// Messages moved into in-flight storage per round trip, at most.
    pub fetch_batch: usize,
    /// Longest pause between polls of an empty queue (polls start 1 ms
    /// apart and slow down while the queue stays empty).
    pub idle_poll_max_ms: u64,
    /// A consumer whose heartbeat is older than this is presumed dead and
    /// its in-flight messages go back to the queue.
    pub heartbeat_ttl_ms: u64,
    /// Pause between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Pause between looks for dead consumers.
    pub reaper_interval_ms: u64,
    /// Larger messages go to the error list as `oversized`, unprocessed.
    pub max_message_bytes: usize,
    /// When set, every message processed `ok` is pushed to this list in the
    /// same atomic step that acknowledges it (off by default).
    pub output_queue: Option<String>,
}

/// The built-in processor that simulates work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Shortest simulated processing time.
    pub min_ms: u64,
    /// Longest simulated processing time.
    pub max_ms: u64,
    /// Share of well-formed messages that are declared invalid, 0 to 1.
    pub invalid_ratio: f64,
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Everything (release the lease, finish or return in-flight work) must
    /// be done within this time after SIGTERM; keep it below the pod's
    /// `terminationGracePeriodSeconds`.
    pub timeout_ms: u64,
}

impl ShutdownConfig {
    /// [`ShutdownConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            log_format: LogFormat::Text,
            http: HttpConfig {
                port: 8080,
                bind: IpAddr::from([0, 0, 0, 0]),
            },
            redis: RedisConfig {
                url: RedisUrl::new("127.0.0.1:6379"),
                username: None,
                password: None,
                password_file: None,
                tls_ca_file: None,
                tls_cert_file: None,
                tls_key_file: None,
                tls_server_name: None,
                tls_insecure_skip_verify: false,
                pool_size: 100,
                queue: "a".into(),
                error_queue: "errors".into(),
                connect_timeout_ms: 5_000,
                command_timeout_ms: 5_000,
                reconnect_max_delay_ms: 1_000,
            },
            generator: GeneratorConfig {
                interval_ms: 500,
                batch_size: 500,
                max_in_flight_batches: 4,
                rate: 0.0,
            },
            lease: LeaseConfig {
                ttl_ms: 10_000,
                renew_deadline_ms: 7_000,
                retry_period_ms: 2_000,
                ping_interval_seconds: 10,
            },
            consumer: ConsumerConfig {
                max_concurrency: 10_000,
                fetch_batch: 500,
                idle_poll_max_ms: 50,
                heartbeat_ttl_ms: 10_000,
                heartbeat_interval_ms: 2_000,
                reaper_interval_ms: 3_000,
                max_message_bytes: 1024 * 1024,
                output_queue: None,
            },
            processor: ProcessorConfig {
                min_ms: 0,
                max_ms: 999,
                invalid_ratio: 0.05,
            },
            shutdown: ShutdownConfig { timeout_ms: 20_000 },
        }
    }
}

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
    figment = figment.merge(NamedValues::new("environment variable", legacy));

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
    figment = figment.merge(NamedValues::new("environment variable", own));

    let flags = overrides
        .values
        .iter()
        .map(|(path, flag, value)| Var::new(flag, path, value))
        .collect();
    figment = figment.merge(NamedValues::new("command-line flag", flags));

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
    kind: &'static str,
    vars: Vec<Var>,
}

impl NamedValues {
    fn new(kind: &'static str, vars: Vec<Var>) -> NamedValues {
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
        Metadata::named(self.kind).interpolater(move |_: &Profile, path: &[&str]| {
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

fn describe_source(figment: &Figment, path: &str) -> String {
    let Some(md) = figment.find_metadata(path) else {
        return "default".to_string();
    };
    let keys: Vec<&str> = path.split('.').collect();
    match md.name.as_ref() {
        "environment variable" | "command-line flag" => {
            format!("{} {}", md.name, md.interpolate(&Profile::Default, &keys))
        }
        _ => match &md.source {
            // Only the built-in defaults are provided from code.
            Some(figment::Source::Code(_)) => "default".to_string(),
            Some(source) => format!("{} {source}", md.name),
            None => md.name.to_string(),
        },
    }
}

fn describe_figment_error(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let source = match &e.metadata {
        Some(md) => {
            let keys: Vec<&str> = e.path.iter().map(String::as_str).collect();
            match md.name.as_ref() {
                "environment variable" | "command-line flag" => {
                    format!("{} {}", md.name, md.interpolate(&Profile::Default, &keys))
                }
                _ => match &md.source {
                    Some(s) => format!("{} {s}", md.name),
                    None => md.name.to_string(),
                },
            }
        }
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

/// Checks every rule that a type cannot express; returns (setting, rule)
/// for each violation.
pub fn validate(c: &Config) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    if let Err(e) = crate::redis::parse_url(&c.redis.url.expose()) {
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
    if !c.redis.queue.is_empty()
        && !crate::keys::Keys::new(&c.redis.queue, &c.redis.error_queue).derived_keys_share_slot()
    {
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

/// Renders `config` as TOML, one `key = value  # source` line per setting.
fn render_with_sources(config: &Config, source_of: impl Fn(&str) -> String) -> String {
    let table = match toml::Table::try_from(config) {
        Ok(t) => t,
        Err(e) => return format!("# cannot render configuration: {e}\n"),
    };
    let mut out = String::from(
        "# Effective redis-dsg configuration; secrets are shown as ***.\n\
         # Each value is followed by the source it came from.\n",
    );
    let mut sections = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(t) => sections.push((key, t)),
            v => out.push_str(&format!("{key} = {v}  # {}\n", source_of(key))),
        }
    }
    for (section, t) in sections {
        out.push_str(&format!("\n[{section}]\n"));
        for (key, value) in t {
            let path = format!("{section}.{key}");
            out.push_str(&format!("{key} = {value}  # {}\n", source_of(&path)));
        }
    }
    // Unset optional settings (no password) are absent from TOML; say so.
    if config.redis.password.is_none() {
        out = out.replace("\n[redis]\n", "\n[redis]\n# password: not set\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("rediss://:p@w@h:1"), "rediss://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("h:1"), "h:1");
    }

    #[test]
    fn redact_url_hides_the_sentinel_password() {
        assert_eq!(
            redact_url(
                "redis-sentinel://u:p@s0:26379/0?sentinelServiceName=m&sentinelPassword=sp&node=s1:26379"
            ),
            "redis-sentinel://u:***@s0:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s1:26379"
        );
        assert_eq!(
            redact_url("redis-sentinel://s0:26379?sentinelServiceName=m&sentinelPassword=a@b"),
            "redis-sentinel://s0:26379?sentinelServiceName=m&sentinelPassword=***"
        );
        // A '?' in a password does not hide it from redaction.
        assert_eq!(redact_url("redis://u:pa?ss@h:1"), "redis://u:***@h:1");
        assert_eq!(
            redact_url("redis-sentinel://u:p?x@s0:1?sentinelPassword=sp&node=s1:1"),
            "redis-sentinel://u:***@s0:1?sentinelPassword=***&node=s1:1"
        );
    }
}
