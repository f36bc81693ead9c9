//! Credentials read at every connection: a password file (a mounted
//! Kubernetes secret, rotated without a restart), and with Sentinel the
//! sentinels' own credentials, never the data nodes' password.

use std::path::PathBuf;
use std::time::Duration;

use fred::prelude::*;

/// Reads the password from a file at every connection (fred asks before
/// each `AUTH`), so a rotated Kubernetes secret is picked up by the next
/// reconnect without a restart.
#[derive(Debug)]
pub(super) struct PasswordFile {
    pub(super) username: Option<String>,
    pub(super) path: PathBuf,
    /// With Sentinel, fred asks the same provider for the sentinels'
    /// credentials too, and after the first connection it knows the
    /// sentinels by the addresses they announce, not those in the URL.
    pub(super) sentinel: Option<SentinelSide>,
}

/// What the password file's provider needs to tell sentinels from the
/// primary: the primary is positively identified by asking a sentinel
/// (`SENTINEL get-master-addr-by-name`); everything else is a sentinel and
/// gets the sentinel credentials of the URL (`sentinelUsername`,
/// `sentinelPassword`), never the data password.
#[derive(Debug)]
pub(super) struct SentinelSide {
    hosts: Vec<Server>,
    service_name: String,
    username: Option<String>,
    password: Option<String>,
    tls: Option<fred::types::config::TlsConfig>,
}

impl SentinelSide {
    pub(super) fn of(config: &Config) -> Option<SentinelSide> {
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
