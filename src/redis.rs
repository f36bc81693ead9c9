//! Connections to Redis (fred): a pool for commands and a subscriber client
//! for lease notices. Nothing blocks a connection: consumers poll an empty
//! queue (see [`crate::consumer`] for why), so no command ever waits behind
//! a blocking pop.
//!
//! The service connects lazily and reconnects forever with exponential
//! backoff; one-shot commands connect once and fail fast.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;

use crate::config::RedisConfig;
use crate::keys::Script;

/// A Redis failure, classified for metrics and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The server could not be reached or the connection broke.
    #[error("Redis unavailable: {0}")]
    Unavailable(#[source] fred::error::Error),
    /// The server answered with an error, or an answer had the wrong shape.
    #[error("Redis error: {0}")]
    Command(#[source] fred::error::Error),
    /// The connection could not be set up (TLS material, URL).
    #[error("cannot set up the Redis connection: {0}")]
    Setup(String),
    /// A reply did not have the shape a script promises.
    #[error("unexpected reply from Redis script {script}: {detail}")]
    Reply {
        /// The script's name.
        script: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl From<fred::error::Error> for RedisError {
    fn from(e: fred::error::Error) -> Self {
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
                RedisError::Unavailable(e)
            }
            _ if e.details().contains("connection") || e.details().contains("Connection") => {
                RedisError::Unavailable(e)
            }
            _ => RedisError::Command(e),
        }
    }
}

/// Parses a `REDIS_URL` value: `host:port` or a `redis://`, `rediss://`,
/// `redis-sentinel://`, `redis-cluster://` (and TLS variants) URL.
pub fn parse_url(url: &str) -> Result<Config, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("must not be empty; use host:port or redis://host:port".into());
    }
    let full = if url.contains("://") {
        url.to_string()
    } else {
        let (host, port) = url
            .rsplit_once(':')
            .ok_or_else(|| format!("{url:?} is neither host:port nor a redis:// URL"))?;
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("{url:?}: port {port:?} is not a number from 0 to 65535"))?;
        format!("redis://{url}")
    };
    let scheme = full.split("://").next().unwrap_or_default();
    const SCHEMES: [&str; 6] = [
        "redis",
        "rediss",
        "redis-sentinel",
        "rediss-sentinel",
        "redis-cluster",
        "rediss-cluster",
    ];
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "scheme {scheme:?} is not supported; use one of {}",
            SCHEMES.join(", ")
        ));
    }
    let after = &full[scheme.len() + 3..];
    let host_part = after.rsplit('@').next().unwrap_or(after);
    if host_part.is_empty() || host_part.starts_with('/') || host_part.starts_with(':') {
        return Err(format!(
            "{:?} has no host",
            crate::config::redact_url(&full)
        ));
    }
    Config::from_url(&full).map_err(|e| {
        format!(
            "{:?} is not a valid Redis URL: {}",
            crate::config::redact_url(&full),
            e.details()
        )
    })
}

fn config_error(detail: String) -> RedisError {
    RedisError::Setup(detail)
}

fn fred_config(cfg: &RedisConfig, fail_fast: bool) -> Result<Config, RedisError> {
    let mut config = parse_url(&cfg.url.expose()).map_err(config_error)?;
    if let Some(user) = &cfg.username {
        config.username = Some(user.clone());
    }
    if let Some(password) = &cfg.password {
        config.password = Some(password.expose().to_string());
    }
    if config.tls.is_some() {
        config.tls = Some(tls_config(cfg)?);
        if let Some(name) = &cfg.tls_server_name {
            set_tls_server_name(&mut config, name);
        }
    }
    // Last: the provider copies the sentinel side's settings (TLS too).
    if let Some(path) = &cfg.password_file {
        config.credential_provider = Some(Arc::new(PasswordFile {
            username: config.username.clone(),
            path: path.clone(),
            sentinel: SentinelSide::of(&config),
        }));
    }
    config.fail_fast = fail_fast;
    Ok(config)
}

/// Reads the password from a file at every connection (fred asks before
/// each `AUTH`), so a rotated Kubernetes secret is picked up by the next
/// reconnect without a restart.
#[derive(Debug)]
struct PasswordFile {
    username: Option<String>,
    path: PathBuf,
    /// With Sentinel, fred asks the same provider for the sentinels'
    /// credentials too, and after the first connection it knows the
    /// sentinels by the addresses they announce, not those in the URL.
    sentinel: Option<SentinelSide>,
}

/// What the password file's provider needs to tell sentinels from the
/// primary: the primary is positively identified by asking a sentinel
/// (`SENTINEL get-master-addr-by-name`); everything else is a sentinel and
/// gets the sentinel credentials of the URL (`sentinelUsername`,
/// `sentinelPassword`), never the data password.
#[derive(Debug)]
struct SentinelSide {
    hosts: Vec<Server>,
    service_name: String,
    username: Option<String>,
    password: Option<String>,
    tls: Option<fred::types::config::TlsConfig>,
}

impl SentinelSide {
    fn of(config: &Config) -> Option<SentinelSide> {
        match &config.server {
            ServerConfig::Sentinel {
                hosts,
                service_name,
                username,
                password,
            } => Some(SentinelSide {
                hosts: hosts.clone(),
                service_name: service_name.clone(),
                username: username.clone(),
                password: password.clone(),
                tls: config.tls.clone(),
            }),
            _ => None,
        }
    }

    fn credentials(&self) -> (Option<String>, Option<String>) {
        (self.username.clone(), self.password.clone())
    }

    fn is_listed(&self, server: &Server) -> bool {
        self.hosts
            .iter()
            .any(|h| h.host == server.host && h.port == server.port)
    }

    /// Whether a sentinel of the URL names `server` as the primary now.
    /// All are asked at once and the first answer counts; the whole lookup
    /// ends within [`SentinelSide::LOOKUP`], well inside fred's own
    /// connection setup timeout, so one stalled sentinel cannot keep the
    /// service from its primary.
    async fn is_primary(&self, server: &Server) -> bool {
        let mut asks = tokio::task::JoinSet::new();
        for host in &self.hosts {
            let config = Config {
                server: ServerConfig::Centralized {
                    server: host.clone(),
                },
                username: self.username.clone(),
                password: self.password.clone(),
                tls: self.tls.clone(),
                fail_fast: true,
                ..Config::default()
            };
            asks.spawn(ask_primary(config, self.service_name.clone()));
        }
        let deadline = tokio::time::sleep(Self::LOOKUP);
        tokio::pin!(deadline);
        let primary = loop {
            tokio::select! {
                _ = &mut deadline => break None,
                next = asks.join_next() => match next {
                    Some(Ok(Some(primary))) => break Some(primary),
                    Some(_) => continue,
                    None => break None,
                },
            }
        };
        // The others end on their own (each is bounded) and close their
        // connections; aborting them could leave a connection behind.
        asks.detach_all();
        primary.is_some_and(|(host, port)| *server.host == *host && port == server.port)
    }

    const LOOKUP: Duration = Duration::from_millis(2_000);
}

/// `SENTINEL get-master-addr-by-name` on one sentinel: one connection
/// attempt (no reconnect policy), bounded in time, always closed.
async fn ask_primary(config: Config, service: String) -> Option<(String, u16)> {
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_millis(1_000);
            c.internal_command_timeout = Duration::from_millis(1_000);
        })
        .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(1_000))
        .build()
        .ok()?;
    let connection = client.connect();
    let answer = tokio::time::timeout(Duration::from_millis(1_500), async {
        client.wait_for_connect().await?;
        client
            .custom::<Option<(String, u16)>, _>(
                fred::types::CustomCommand::new_static("SENTINEL", None, false),
                vec!["get-master-addr-by-name", service.as_str()],
            )
            .await
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_millis(500), client.quit()).await;
    connection.abort();
    answer.ok()?.ok()?
}

#[async_trait::async_trait]
impl fred::types::config::CredentialProvider for PasswordFile {
    async fn fetch(
        &self,
        server: Option<&Server>,
    ) -> Result<(Option<String>, Option<String>), fred::error::Error> {
        if let (Some(sentinel), Some(server)) = (&self.sentinel, server)
            && (sentinel.is_listed(server) || !sentinel.is_primary(server).await)
        {
            return Ok(sentinel.credentials());
        }
        let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            fred::error::Error::new(
                ErrorKind::Auth,
                format!("cannot read the password file {}: {e}", self.path.display()),
            )
        })?;
        let password = text.trim_end_matches(['\n', '\r']).to_string();
        Ok((self.username.clone(), Some(password)))
    }
}

fn set_tls_server_name(config: &mut Config, name: &str) {
    let name: fred::bytes_utils::Str = name.into();
    match &mut config.server {
        ServerConfig::Centralized { server } => server.tls_server_name = Some(name),
        ServerConfig::Clustered { hosts, .. } | ServerConfig::Sentinel { hosts, .. } => {
            for h in hosts {
                h.tls_server_name = Some(name.clone());
            }
        }
        // Other topologies keep the host names of the URL.
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// The rustls configuration for `rediss://`: the given CA bundle (or the
/// system's roots), an optional client certificate, and verification on
/// unless explicitly turned off.
fn tls_config(cfg: &RedisConfig) -> Result<fred::types::config::TlsConfig, RedisError> {
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use fred::rustls::{ClientConfig, RootCertStore};

    let read_certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, RedisError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                config_error(format!(
                    "cannot read certificates from {}: {e}",
                    path.display()
                ))
            })
    };
    let builder = if cfg.tls_insecure_skip_verify {
        tracing::warn!(
            "redis.tls_insecure_skip_verify is on: the Redis server's certificate is NOT verified; anyone on the path can impersonate it"
        );
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
    } else {
        let mut roots = RootCertStore::empty();
        match &cfg.tls_ca_file {
            Some(ca) => {
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| config_error(format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                for cert in rustls_native_roots() {
                    let _ = roots.add(cert);
                }
            }
        }
        match &cfg.tls_server_name {
            // Every server's certificate must name this, including servers
            // the client discovers by IP (Cluster nodes from CLUSTER SLOTS,
            // the primary a sentinel names), which fred dials by address.
            Some(name) => {
                let name = fred::rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| config_error(format!("redis.tls_server_name {name:?}: {e}")))?;
                let inner = fred::rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(fred::rustls::crypto::ring::default_provider()),
                )
                .build()
                .map_err(|e| config_error(format!("TLS roots: {e}")))?;
                ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ExpectServerName { inner, name }))
            }
            None => ClientConfig::builder().with_root_certificates(roots),
        }
    };
    let config = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                config_error(format!(
                    "cannot read the private key {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(fred::types::config::TlsConnector::from(config).into())
}

/// The system's trusted roots, through fred's own default connector's
/// source (rustls-native-certs).
fn rustls_native_roots() -> Vec<fred::rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// Full WebPKI verification, against `redis.tls_server_name` whatever
/// address was dialled.
#[derive(Debug)]
struct ExpectServerName {
    inner: Arc<fred::rustls::client::WebPkiServerVerifier>,
    name: fred::rustls::pki_types::ServerName<'static>,
}

impl fred::rustls::client::danger::ServerCertVerifier for ExpectServerName {
    fn verify_server_cert(
        &self,
        end_entity: &fred::rustls::pki_types::CertificateDer<'_>,
        intermediates: &[fred::rustls::pki_types::CertificateDer<'_>],
        _dialled: &fred::rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: fred::rustls::pki_types::UnixTime,
    ) -> Result<fred::rustls::client::danger::ServerCertVerified, fred::rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<fred::rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every server certificate (`redis.tls_insecure_skip_verify`).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<fred::rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    fn new() -> AcceptAnyCertificate {
        AcceptAnyCertificate(Arc::new(fred::rustls::crypto::ring::default_provider()))
    }
}

impl fred::rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &fred::rustls::pki_types::CertificateDer<'_>,
        _: &[fred::rustls::pki_types::CertificateDer<'_>],
        _: &fred::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: fred::rustls::pki_types::UnixTime,
    ) -> Result<fred::rustls::client::danger::ServerCertVerified, fred::rustls::Error> {
        Ok(fred::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        fred::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        fred::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<fred::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn builder(cfg: &RedisConfig, fail_fast: bool) -> Result<Builder, RedisError> {
    let mut builder = Builder::from_config(fred_config(cfg, fail_fast)?);
    let command_timeout = cfg.command_timeout();
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            // Never resend a command after a connection drops: a script whose
            // reply was lost may have run, and running a fetch or a push twice
            // overwrites or duplicates messages. Callers retry what is safe.
            // (A per-call `Options::max_attempts` is not enough: fred 10.1
            // still replays such a command after reconnecting.)
            c.max_command_attempts = 1;
            c.internal_command_timeout = connect_timeout;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..Default::default()
            };
            // A connection that stops answering (a partition without a RST)
            // is closed and reconnected instead of hanging forever.
            c.unresponsive.max_timeout = Some(command_timeout * 2);
            c.unresponsive.interval = Duration::from_millis(500).min(command_timeout);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        });
    if !fail_fast {
        let max = u32::try_from(cfg.reconnect_max_delay_ms).unwrap_or(u32::MAX);
        builder.set_policy(ReconnectPolicy::new_exponential(0, 50, max, 2));
    }
    Ok(builder)
}

/// The service's Redis connections.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    builder: Builder,
    command_timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Builds the clients for the long-running service; they connect in the
    /// background and reconnect forever. Call [`Redis::connect`] once.
    pub fn for_service(cfg: &RedisConfig) -> Result<Redis, RedisError> {
        Self::build(cfg, false, cfg.open_connections())
    }

    /// Connects once, for a one-shot command: fails if Redis cannot be
    /// reached within the connect timeout.
    pub async fn connect_once(cfg: &RedisConfig) -> Result<Redis, RedisError> {
        let redis = Self::build(cfg, true, 1)?;
        let timeout = Duration::from_millis(cfg.connect_timeout_ms) + Duration::from_secs(1);
        let init = async {
            redis.pool.init().await?;
            Ok::<_, fred::error::Error>(())
        };
        match tokio::time::timeout(timeout, init).await {
            Ok(Ok(())) => Ok(redis),
            Ok(Err(e)) => Err(RedisError::Unavailable(e)),
            Err(_) => Err(RedisError::Unavailable(fred::error::Error::new(
                ErrorKind::Timeout,
                format!("no connection to {} within {timeout:?}", cfg.url),
            ))),
        }
    }

    fn build(cfg: &RedisConfig, fail_fast: bool, size: usize) -> Result<Redis, RedisError> {
        let builder = builder(cfg, fail_fast)?;
        Ok(Redis {
            pool: builder.build_pool(size)?,
            command_timeout: cfg.command_timeout(),
            builder,
        })
    }

    /// Starts the background connection tasks (they retry until connected).
    pub fn connect(&self) {
        drop(self.pool.connect_pool());
    }

    /// Resolves once every connection is up.
    pub async fn wait_connected(&self) -> Result<(), RedisError> {
        self.pool.wait_for_connect().await?;
        Ok(())
    }

    /// Whether this is a Redis Cluster (then one script may only touch keys
    /// of one hash slot).
    pub fn is_clustered(&self) -> bool {
        self.pool.next().is_clustered()
    }

    /// Whether the pool has at least one live connection.
    pub fn is_connected(&self) -> bool {
        self.pool.clients().iter().any(|c| c.is_connected())
    }

    /// The pool for ordinary commands.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One client of the pool (for scripts, pub/sub publishing, pipelines).
    pub fn client(&self) -> &Client {
        self.pool.next_connected()
    }

    /// Every element of the list `key`, head first, read in pages so a long
    /// list stays within the command timeout.
    pub async fn list(&self, key: &str) -> Result<Vec<Vec<u8>>, RedisError> {
        let mut out = Vec::new();
        let mut start = 0i64;
        loop {
            let page: Vec<Value> = self.client().lrange(key, start, start + 9_999).await?;
            if page.is_empty() {
                return Ok(out);
            }
            start += page.len() as i64;
            out.extend(page.into_iter().filter_map(value_bytes).map(|b| b.to_vec()));
        }
    }

    /// The per-command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A new subscriber client with the same settings (connect it yourself).
    pub fn subscriber(&self) -> Result<fred::clients::SubscriberClient, RedisError> {
        Ok(self.builder.build_subscriber_client()?)
    }

    /// `PING` with the command timeout: is Redis answering now?
    pub async fn ping(&self) -> bool {
        let opts = Options {
            max_attempts: Some(1),
            timeout: Some(self.command_timeout.min(Duration::from_secs(2))),
            ..Default::default()
        };
        self.client()
            .with_options(&opts)
            .ping::<String>(None)
            .await
            .is_ok()
    }

    /// Runs `script` exactly once (no automatic resend after a connection
    /// drop: the scripts move messages, so a resend could run them twice).
    /// An unknown script (first use, Redis restarted) is sent whole with
    /// `EVAL`, which also caches it on that server.
    pub async fn run<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RedisError> {
        let opts = Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let client = self.client().with_options(&opts);
        match client
            .evalsha::<R, _, _, _>(script.sha1.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                Ok(client.eval(script.lua, keys, args).await?)
            }
            other => Ok(other?),
        }
    }

    /// Closes every connection.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }
}

/// An integer script argument (fred has no `From<u64>` for `Value`).
pub fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The bytes of a bulk-string reply.
pub fn value_bytes(v: Value) -> Option<fred::bytes::Bytes> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test CA and the `redis.test` server certificate, in DER.
    fn ca_and_certificate() -> (
        fred::rustls::pki_types::CertificateDer<'static>,
        fred::rustls::pki_types::CertificateDer<'static>,
    ) {
        use fred::rustls::pki_types::CertificateDer;
        use fred::rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tempdir");
        crate::local_redis::make_test_certificates(dir.path()).expect("certificates");
        let read = |f: &str| CertificateDer::from_pem_file(dir.path().join(f)).expect("pem");
        (read("ca.pem"), read("server.pem"))
    }

    #[test]
    fn tls_server_name_is_checked_whatever_address_was_dialled() {
        use fred::rustls::client::danger::ServerCertVerifier;
        use fred::rustls::pki_types::{ServerName, UnixTime};
        let (ca, cert) = ca_and_certificate();
        let verifier = |name: &str| {
            let mut roots = fred::rustls::RootCertStore::empty();
            roots.add(ca.clone()).expect("root");
            ExpectServerName {
                inner: fred::rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(fred::rustls::crypto::ring::default_provider()),
                )
                .build()
                .expect("verifier"),
                name: ServerName::try_from(name.to_string()).expect("name"),
            }
        };
        // Dialled by IP (a Cluster node, the primary a sentinel names).
        let dialled = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let check = |name: &str| {
            verifier(name).verify_server_cert(&cert, &[], &dialled, &[], UnixTime::now())
        };
        assert!(check("redis.test").is_ok());
        assert!(check("other.test").is_err());
    }

    #[test]
    fn url_forms() {
        assert!(parse_url("127.0.0.1:6379").is_ok());
        assert!(parse_url("redis-host:6380").is_ok());
        assert!(parse_url("redis://user:pw@host:6379/2").is_ok());
        assert!(parse_url("rediss://host:6380").is_ok());
        assert!(parse_url("host").is_err());
        assert!(parse_url("host:99999").is_err());
        assert!(parse_url("http://host:1").is_err());
        assert!(parse_url("redis://").is_err());
        let e = parse_url("redis://u:secret@:1").expect_err("no host");
        assert!(!e.contains("secret"), "{e}");
    }
}
