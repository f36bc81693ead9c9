//! Building fred clients from the configuration: URL, credentials, TLS,
//! timeouts and the reconnect policy.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

use super::RedisError;
use super::credentials::{PasswordFile, SentinelSide};
use super::tls::tls_config;
use crate::config::{RedisConfig, UrlParts};

/// fred's client configuration, built from the parsed URL's parts (never
/// from its text), with the separate credential settings on top.
fn fred_config(cfg: &RedisConfig, fail_fast: bool) -> Result<Config, RedisError> {
    let url = cfg
        .url
        .parts()
        .map_err(|e| RedisError::Setup(format!("redis.url {e}")))?;
    let mut config = Config {
        server: server_config(url),
        username: url.username.clone(),
        password: url.password.as_ref().map(|p| p.expose().to_string()),
        database: url.database,
        ..Config::default()
    };
    if let Some(user) = &cfg.username {
        config.username = Some(user.clone());
    }
    if let Some(password) = &cfg.password {
        config.password = Some(password.expose().to_string());
    }
    if url.scheme.is_tls() {
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

/// The servers of the URL: one, a Cluster's seed nodes or the sentinels
/// (the URL's host after the `node=` ones, as fred's own parser orders
/// them).
fn server_config(url: &UrlParts) -> ServerConfig {
    let mut hosts: Vec<Server> = url.hosts[1..]
        .iter()
        .chain(&url.hosts[..1])
        .map(|h| Server::new(h.host.as_str(), h.port))
        .collect();
    match &url.sentinel {
        Some(s) => ServerConfig::Sentinel {
            hosts,
            service_name: s.service_name.clone(),
            username: s.username.clone(),
            password: s.password.as_ref().map(|p| p.expose().to_string()),
        },
        None if url.scheme.is_cluster() => ServerConfig::Clustered {
            hosts,
            policy: fred::types::config::ClusterDiscoveryPolicy::default(),
        },
        None => ServerConfig::Centralized {
            server: hosts.remove(hosts.len() - 1),
        },
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

pub(super) fn builder(cfg: &RedisConfig, fail_fast: bool) -> Result<Builder, RedisError> {
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
