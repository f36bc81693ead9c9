//! Configuration: what the service reads, from where, and the rules it checks.
//!
//! Sources, lowest priority first: built-in defaults → an optional TOML file
//! (`--config` / `DSG_CONFIG`) → the original program's environment variables
//! (an explicit list of exact names, see [`LEGACY_ENV`]) → `DSG_*`
//! environment variables (nested with `__`) → command-line flags.
//!
//! Validation runs after extraction and reports every problem at once (every
//! unknown setting, every value of the wrong type, every broken rule), each
//! naming the setting, the source its value came from, and the rule it
//! broke; echoed input is capped.
//! The service exits with [`crate::ops::exit_codes::CONFIG`] before it
//! touches Redis.

mod extract;
mod load;
mod migration;
pub mod names;
mod render;
mod sources;
mod url;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

pub use load::{
    CONFIG_FILE_ENV, ConfigError, ENV_PREFIX, LEGACY_ENV, Loaded, Overrides, load, load_from,
};
pub(crate) use render::RenderError;
pub use url::RedisUrl;
pub(crate) use url::UrlParts;
pub use validate::validate;

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
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

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
    /// Working beside the original go-redis-dsg (a migration).
    pub compat: CompatConfig,
    /// The error list.
    pub errors: ErrorsConfig,
}

/// The HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Port for `/healthz`, `/readyz`, `/metrics` and `/status` (`MPORT`).
    pub port: u16,
    /// Address to listen on.
    pub bind: IpAddr,
    /// A connection that has not sent a request's headers within this is
    /// closed (slow or half-open clients; idle keep-alive connections too).
    pub header_read_timeout_ms: u64,
    /// Connections served at once, at most; more wait in the listen
    /// backlog.
    pub max_connections: usize,
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
    /// Report this instance unready while Redis' `maxmemory-policy` is not
    /// `noeviction` (an evicting Redis destroys queued and in-flight
    /// messages, leases and heartbeats); otherwise such a policy is only
    /// warned about.
    pub require_noeviction: bool,
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
    /// The generator holds back (without an error) while the queue holds
    /// this many messages; `0`: no bound.
    pub max_backlog: u64,
    /// The generator holds back while Redis' `used_memory` is at or above
    /// this share of its `maxmemory` (when one is set); `0`: no bound.
    pub max_redis_memory_ratio: f64,
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
    /// Longest wait of an idle consumer on the doorbell before it looks at
    /// the queue anyway (a fallback poll, for a push the bell missed; a
    /// push normally wakes it at once).
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
    /// Bytes of messages held at once, at most: a fetch takes messages only
    /// while their sizes fit what is left (at least one when nothing is
    /// held, so a single large message still moves).
    pub max_in_flight_bytes: u64,
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

/// Working beside the original go-redis-dsg during a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatConfig {
    /// Also hold the original's election key `lock:gen` while holding the
    /// lease, and never generate while an original holds it
    /// (`DSG_COMPAT__ORIGINAL_LOCK`). Off by default: `lock:gen` is global
    /// to the database, so fleets of different queues in this mode exclude
    /// each other, as the originals did.
    pub original_lock: bool,
}

/// The error list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// Entries the error list keeps, at most: beyond it the oldest are
    /// trimmed by the step that adds one (counted, warned about once);
    /// `0`: unbounded.
    pub max_entries: u64,
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
                header_read_timeout_ms: 3_000,
                max_connections: 512,
            },
            redis: RedisConfig {
                url: RedisUrl::default(),
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
                require_noeviction: false,
            },
            generator: GeneratorConfig {
                interval_ms: 500,
                batch_size: 500,
                max_in_flight_batches: 4,
                rate: 0.0,
                max_backlog: 1_000_000,
                max_redis_memory_ratio: 0.8,
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
                idle_poll_max_ms: 10_000,
                heartbeat_ttl_ms: 10_000,
                heartbeat_interval_ms: 3_000,
                reaper_interval_ms: 3_000,
                max_message_bytes: 1024 * 1024,
                max_in_flight_bytes: 64 * 1024 * 1024,
                output_queue: None,
            },
            processor: ProcessorConfig {
                min_ms: 0,
                max_ms: 999,
                invalid_ratio: 0.05,
            },
            shutdown: ShutdownConfig { timeout_ms: 20_000 },
            compat: CompatConfig::default(),
            errors: ErrorsConfig::default(),
        }
    }
}
