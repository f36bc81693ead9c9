//! Everything that talks to Redis: connections (fred; a pool for commands
//! and a subscriber client for lease notices), TLS, credentials, the key
//! names and the Lua scripts. This layer knows no role: the service decides
//! what to run, this layer runs it.
//!
//! The service connects lazily and reconnects forever with exponential
//! backoff; one-shot commands connect once and fail fast.

mod acl;
mod connection;
mod credentials;
mod error;
pub mod keys;
mod link;
pub mod scripts;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;

use crate::config::RedisConfig;
pub(crate) use acl::{acl_unexpressible, cli_quote};
use connection::builder;
pub use error::{Operation, RedisError};
pub use keys::Keys;
pub(crate) use link::{Cause, Failure, Link, LinkEvent};
pub use scripts::Script;

/// The service's Redis connections.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    builder: Builder,
    command_timeout: Duration,
    link: Arc<Link>,
    /// Set once the server refused a script's shebang (Redis before 7.0):
    /// scripts are sent without their flags from then on.
    without_script_flags: Arc<AtomicBool>,
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
            link: Link::new(),
            without_script_flags: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts the background connection tasks (they retry until connected),
    /// following each connection's events on the [`Link`].
    pub fn connect(&self) {
        for client in self.pool.clients() {
            self.link.follow(client);
        }
        drop(self.pool.connect_pool());
    }

    /// Whether Redis answers, as learnt from commands and connection events.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Records the outcome of a command sent directly through
    /// [`Redis::client`] on the [`Link`] (the methods here do it
    /// themselves).
    pub fn observe<T>(&self, outcome: &Result<T, fred::error::Error>) {
        self.link.observe(outcome.as_ref().map(|_| ()));
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

    /// A new subscriber client with the same settings (connect it
    /// yourself). Its connection is not followed on the [`Link`]: losing
    /// it alone does not keep commands from Redis (an outage closes the
    /// command connections too), and its owner watches it.
    pub fn subscriber(&self) -> Result<fred::clients::SubscriberClient, RedisError> {
        Ok(self.builder.build_subscriber_client()?)
    }

    /// A client of its own (one connection, same settings; connect it
    /// yourself), for a command that holds its connection: a blocking pop
    /// on the doorbell, or `CLIENT TRACKING` (`resp3`: invalidations
    /// arrive as RESP3 pushes on the tracking connection). The pool's
    /// connections are shared by every task and must never block.
    /// `blocks_for` is the longest a command of it may block: the check
    /// for unresponsive connections allows it on top of the command
    /// timeout.
    pub fn dedicated(&self, resp3: bool, blocks_for: Duration) -> Result<Client, RedisError> {
        let mut builder = self.builder.clone();
        if resp3 {
            builder.with_config(|c| c.version = fred::types::RespVersion::RESP3);
        }
        let allowed = blocks_for + self.command_timeout * 2;
        builder.with_connection_config(|c| c.unresponsive.max_timeout = Some(allowed));
        Ok(builder.build()?)
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
        self.run_on(self.client(), script, keys, args).await
    }

    /// [`Redis::run`] on a client of its own ([`Redis::dedicated`]).
    pub async fn run_on<R: FromValue>(
        &self,
        client: &Client,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RedisError> {
        let opts = Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let client = client.with_options(&opts);
        let flagless = self.without_script_flags.load(Ordering::Relaxed);
        let (sha1, lua) = if flagless {
            (&script.sha1_without_flags, &script.lua_without_flags)
        } else {
            (&script.sha1, &script.lua)
        };
        let outcome = match client
            .evalsha::<R, _, _, _>(sha1.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                match client.eval(lua.as_str(), keys.clone(), args.clone()).await {
                    Err(e) if !flagless && shebang_refused(e.details()) => {
                        tracing::warn!(
                            "this Redis is older than 7.0 and cannot run script flags: scripts run without them, \
                             so at maxmemory consumers cannot acknowledge or heartbeat (DESIGN.md, contract 12)"
                        );
                        self.without_script_flags.store(true, Ordering::Relaxed);
                        client
                            .eval(script.lua_without_flags.as_str(), keys, args)
                            .await
                    }
                    other => other,
                }
            }
            other => other,
        };
        self.observe(&outcome);
        Ok(outcome?)
    }

    /// The `INFO memory` section of the server that holds `key` (on a
    /// Cluster, the primary of its slot; elsewhere the one server). Any
    /// ACL user allowed `INFO` may read it, unlike `CONFIG GET`.
    pub async fn info_memory(&self, key: &str) -> Result<String, RedisError> {
        let opts = Options {
            cluster_hash: Some(fred::types::ClusterHash::Custom(fred::util::redis_keyslot(
                key.as_bytes(),
            ))),
            ..Default::default()
        };
        let outcome: Result<String, _> = self
            .client()
            .with_options(&opts)
            .info(Some(fred::types::InfoKind::Memory))
            .await;
        self.observe(&outcome);
        Ok(outcome?)
    }

    /// Closes every connection.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }
}

/// Whether an `EVAL` failed because the server cannot compile a script's
/// shebang line: Redis before 7.0 reads `#!lua …` as Lua and stops at the
/// `#`.
fn shebang_refused(details: &str) -> bool {
    details.contains("Error compiling script") && details.contains("'#'")
}

/// An integer script argument (fred has no `From<u64>` for `Value`). Every
/// setting passed this way is bounded far below `i64::MAX`
/// ([`crate::config::BOUNDS`]), so the clamp never changes one.
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
    use super::shebang_refused;

    #[test]
    fn contract12_a_server_before_redis_7_that_cannot_read_script_flags_is_recognised() {
        // Redis 6.2's reply to `EVAL "#!lua flags=allow-oom\n…"`.
        assert!(shebang_refused(
            "ERR Error compiling script (new function): user_script:1: unexpected symbol near '#'"
        ));
        // Other compile errors, and Redis 7's refusals of a flag, are not.
        assert!(!shebang_refused(
            "ERR Error compiling script (new function): user_script:3: '=' expected near 'x'"
        ));
        assert!(!shebang_refused(
            "ERR Unexpected flag in script shebang: bogus"
        ));
    }
}
