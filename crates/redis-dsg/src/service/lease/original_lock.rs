//! Compatibility with the election of the original go-redis-dsg
//! (`compat.original_lock`, off by default).
//!
//! The original elects through one key for the whole database, `lock:gen`
//! (`SET lock:gen <uuid> EX <ping interval + 5> NX`, renewed every ping
//! interval): whoever holds it generates. With compatibility mode on, a
//! redis-dsg contender never takes its lease while `lock:gen` holds a value
//! that is not this fleet's, and the holder of the lease also holds
//! `lock:gen` (same TTL rule as the original's, renewed with the lease), so
//! originals running beside it stay consumers. The order is lease, then
//! `lock:gen`, then generating; the holder renews both every retry period
//! and stops at the earlier deadline. Each script touches one key, so this
//! works on Redis Cluster too. The fencing of redis-dsg's own writes is
//! unchanged (`{q}:lease` only).
//!
//! The value redis-dsg writes is `redis-dsg <lease key> <lease token>`: never
//! an original's uuid (so an original's renewal fails and its `SET NX`
//! too), and it tells `status` whose it is ([`OriginalLockKind`]).

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use serde::{Deserialize, Serialize};

use super::Lease;
use crate::config::LeaseConfig;
use crate::redis::keys::ORIGINAL_LOCK;
use crate::redis::scripts;
use crate::redis::{Keys, Redis, RedisError, value_bytes};
use crate::service::status::OriginalLockView;

/// The start of every `lock:gen` value redis-dsg writes.
const VALUE_PREFIX: &str = "redis-dsg ";
/// The start of a pause an operator set by hand (README, "Migrating from
/// go-redis-dsg"): `SET lock:gen redis-dsg-pause EX 120`.
const PAUSE_PREFIX: &str = "redis-dsg-pause";

/// Who holds `lock:gen`, judged from its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginalLockKind {
    /// This fleet's lease holder (the same generator as the lease).
    RedisDsg,
    /// A former holder of this fleet's lease: it lost the lease, so it no
    /// longer generates.
    RedisDsgStale,
    /// A redis-dsg fleet of another queue in compatibility mode.
    RedisDsgOtherQueue,
    /// An operator's pause: nobody generates until it expires.
    Pause,
    /// An original go-redis-dsg process (a uuid): it generates.
    Original,
    /// Anything else: treated like an original.
    Unknown,
}

impl OriginalLockKind {
    /// Classifies a `lock:gen` value for the fleet whose lease key is
    /// `lease_key` and whose lease holds `lease_token` (when known).
    pub fn of(value: &str, lease_key: &str, lease_token: Option<&str>) -> OriginalLockKind {
        if value.starts_with(PAUSE_PREFIX) {
            return OriginalLockKind::Pause;
        }
        if let Some(rest) = value.strip_prefix(VALUE_PREFIX) {
            let mut parts = rest.rsplitn(3, ' ');
            let (epoch, holder, key) = (parts.next(), parts.next(), parts.next());
            let well_formed = epoch.is_some_and(|e| e.parse::<u64>().is_ok())
                && holder.is_some_and(|h| !h.is_empty());
            return match key {
                Some(k) if well_formed && k == lease_key => {
                    let token = &rest[k.len() + 1..];
                    if lease_token == Some(token) {
                        OriginalLockKind::RedisDsg
                    } else {
                        OriginalLockKind::RedisDsgStale
                    }
                }
                Some(_) if well_formed => OriginalLockKind::RedisDsgOtherQueue,
                _ => OriginalLockKind::Unknown,
            };
        }
        if is_uuid(value) {
            OriginalLockKind::Original
        } else {
            OriginalLockKind::Unknown
        }
    }

    /// Whether a contender of this fleet must stay away from the lease
    /// while `lock:gen` holds such a value.
    pub fn blocks_contenders(self) -> bool {
        !matches!(
            self,
            OriginalLockKind::RedisDsg | OriginalLockKind::RedisDsgStale
        )
    }

    /// Whether the value stands for a generator that is not this fleet's
    /// lease holder (an original, or something unknown that may be one).
    pub fn is_foreign_generator(self) -> bool {
        matches!(self, OriginalLockKind::Original | OriginalLockKind::Unknown)
    }

    /// The name used in `/status`, `status --json` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginalLockKind::RedisDsg => "redis-dsg",
            OriginalLockKind::RedisDsgStale => "redis-dsg-stale",
            OriginalLockKind::RedisDsgOtherQueue => "redis-dsg-other-queue",
            OriginalLockKind::Pause => "pause",
            OriginalLockKind::Original => "original",
            OriginalLockKind::Unknown => "unknown",
        }
    }
}

/// `uuid.NewV4().String()`: 8-4-4-4-12 hex digits.
fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `lock:gen` as read: its value and time left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockGen {
    /// The value.
    pub value: String,
    /// Time left, when it has a TTL.
    pub remaining: Option<Duration>,
}

/// Reads `lock:gen` (`GET` and `PTTL` in one round trip); `None` when it is
/// not set.
pub(crate) async fn read(redis: &Redis) -> Result<Option<LockGen>, RedisError> {
    let p = redis.client().pipeline();
    let _: () = p.get(ORIGINAL_LOCK).await?;
    let _: () = p.pttl(ORIGINAL_LOCK).await?;
    let replies: Vec<Value> = p.all().await?;
    let mut it = replies.into_iter();
    let value = it.next().and_then(value_bytes);
    let pttl = it.next().and_then(|v| v.as_i64());
    Ok(value.map(|v| LockGen {
        value: String::from_utf8_lossy(&v).into_owned(),
        remaining: pttl
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_millis),
    }))
}

/// What taking `lock:gen` did.
#[derive(Debug)]
pub(super) enum Taken {
    /// It holds our value now.
    Yes,
    /// Another program holds it.
    No(LockGen),
}

/// `lock:gen` for the lease holder of one fleet.
#[derive(Debug, Clone)]
pub(super) struct OriginalLock {
    redis: Redis,
    lease_key: String,
    ttl_ms: u64,
}

impl OriginalLock {
    /// For the fleet of `keys`; the TTL follows the original's rule (ping
    /// interval + 5 s).
    pub(super) fn new(redis: Redis, keys: &Keys, cfg: &LeaseConfig) -> OriginalLock {
        OriginalLock {
            redis,
            lease_key: keys.lease(),
            ttl_ms: (cfg.ping_interval_seconds + 5) * 1000,
        }
    }

    /// The value the holder of `lease` writes.
    fn value(&self, lease: &Lease) -> String {
        format!("{VALUE_PREFIX}{} {}", self.lease_key, lease.wire())
    }

    /// `lock:gen` as it is right after the holder of `lease` took or
    /// renewed it.
    pub(super) fn view_of_ours(&self, lease: &Lease) -> OriginalLockView {
        OriginalLockView {
            value: self.value(lease),
            kind: OriginalLockKind::RedisDsg,
            ttl_ms: Some(self.ttl_ms),
        }
    }

    /// Classifies `value` for this fleet.
    pub(super) fn kind(&self, value: &str, lease_token: Option<&str>) -> OriginalLockKind {
        OriginalLockKind::of(value, &self.lease_key, lease_token)
    }

    /// Takes `lock:gen` for the holder of `lease` ([`ACQUIRE_ORIGINAL_LOCK`]).
    pub(super) async fn acquire(&self, lease: &Lease) -> Result<Taken, RedisError> {
        let acquired = scripts::acquire_original_lock(
            &self.redis,
            &self.value(lease),
            self.ttl_ms,
            &format!("{VALUE_PREFIX}{} ", self.lease_key),
        )
        .await?;
        Ok(match acquired {
            scripts::Acquired::Taken { .. } => Taken::Yes,
            scripts::Acquired::Held { value, ttl_ms } => Taken::No(LockGen {
                value,
                remaining: ttl_ms
                    .and_then(|t| u64::try_from(t).ok())
                    .map(Duration::from_millis),
            }),
        })
    }

    /// Extends `lock:gen` while it holds our value; `Ok(false)` when it
    /// does not (deleted, flushed, lost in a failover, then taken by an
    /// original or an operator's pause): the holder must stop.
    pub(super) async fn renew(&self, lease: &Lease) -> Result<bool, RedisError> {
        scripts::renew(
            &self.redis,
            ORIGINAL_LOCK.to_string(),
            &self.value(lease),
            self.ttl_ms,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_values_are_classified() {
        let kind = |v: &str| OriginalLockKind::of(v, "{a}:lease", Some("pod-1 7"));
        assert_eq!(
            kind("redis-dsg {a}:lease pod-1 7"),
            OriginalLockKind::RedisDsg
        );
        assert_eq!(
            kind("redis-dsg {a}:lease pod-2 6"),
            OriginalLockKind::RedisDsgStale
        );
        assert_eq!(
            kind("redis-dsg {b}:lease pod-9 1"),
            OriginalLockKind::RedisDsgOtherQueue
        );
        // A lease key with spaces (queue "with space") is still this
        // fleet's only when it is exactly the key.
        assert_eq!(
            OriginalLockKind::of(
                "redis-dsg {with space}:lease p 3",
                "{with space}:lease",
                None
            ),
            OriginalLockKind::RedisDsgStale
        );
        assert_eq!(
            kind("redis-dsg {a}:lease x:lease pod-1 7"),
            OriginalLockKind::RedisDsgOtherQueue
        );
        assert_eq!(kind("redis-dsg-pause"), OriginalLockKind::Pause);
        assert_eq!(
            kind("3f2b6c0e-7d1a-4c55-9a0e-0d6c1b0c2f7a"),
            OriginalLockKind::Original
        );
        assert_eq!(kind("redis-dsg garbage"), OriginalLockKind::Unknown);
        assert_eq!(kind("someone"), OriginalLockKind::Unknown);
    }

    #[test]
    fn only_this_fleets_values_let_contenders_in() {
        for (kind, blocks) in [
            (OriginalLockKind::RedisDsg, false),
            (OriginalLockKind::RedisDsgStale, false),
            (OriginalLockKind::RedisDsgOtherQueue, true),
            (OriginalLockKind::Pause, true),
            (OriginalLockKind::Original, true),
            (OriginalLockKind::Unknown, true),
        ] {
            assert_eq!(kind.blocks_contenders(), blocks, "{kind:?}");
        }
    }
}
