//! Which consumers Redis records: the registered ones (`{q}:consumers`)
//! and whether each is alive (its heartbeat), plus the in-flight hashes
//! left without a registration. The one place the operator commands
//! (`status`, `return-inflight`) learn this, so a change of how heartbeats
//! are stored touches only this file (and the consumer and reaper, which
//! write and read them on the hot path).

use fred::prelude::*;
use futures_util::TryStreamExt;

use crate::redis::{Keys, Redis, RedisError, value_bytes};

/// One registered consumer, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredConsumer {
    /// Its id.
    pub id: String,
    /// Whether its heartbeat is alive (then it may be processing).
    pub alive: bool,
    /// Milliseconds before its heartbeat expires, when alive with a TTL.
    pub heartbeat_ttl_ms: Option<u64>,
}

/// Every registered consumer, sorted by id.
pub async fn registered_consumers(
    redis: &Redis,
    keys: &Keys,
) -> Result<Vec<RegisteredConsumer>, RedisError> {
    let client = redis.client();
    let members: Vec<fred::types::Value> = client.smembers(keys.consumers()).await?;
    let mut ids: Vec<String> = members
        .into_iter()
        .filter_map(value_bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    ids.sort();
    liveness(redis, keys, ids).await
}

/// The heartbeat of each of `ids` (registered or not).
pub async fn liveness(
    redis: &Redis,
    keys: &Keys,
    ids: Vec<String>,
) -> Result<Vec<RegisteredConsumer>, RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let p = redis.client().pipeline();
    for id in &ids {
        let _: () = p.pttl(keys.heartbeat(id)).await?;
    }
    let ttls: Vec<i64> = p.all().await?;
    Ok(ids
        .into_iter()
        .zip(ttls)
        .map(|(id, ttl)| RegisteredConsumer {
            id,
            // -2: no heartbeat key; -1: a key without TTL (alive).
            alive: ttl != -2,
            heartbeat_ttl_ms: u64::try_from(ttl).ok(),
        })
        .collect())
}

/// How many messages each of `ids` holds in its in-flight hash.
pub async fn held(redis: &Redis, keys: &Keys, ids: &[String]) -> Result<Vec<u64>, RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let p = redis.client().pipeline();
    for id in ids {
        let _: () = p.hlen(keys.inflight(id)).await?;
    }
    let lengths: Vec<i64> = p.all().await?;
    // Less the marker field every in-flight hash carries.
    Ok(lengths
        .into_iter()
        .map(|n| u64::try_from(n - 1).unwrap_or(0))
        .collect())
}

/// Ids of the in-flight hashes that exist (`SCAN`, so it never blocks
/// Redis), whether registered or not: hashes of a consumer unregistered
/// by hand, or left by an older version, are found too. The keys share the
/// queue's hash tag, so on a Cluster one node holds them all.
pub async fn inflight_owners(redis: &Redis, keys: &Keys) -> Result<Vec<String>, RedisError> {
    let prefix = keys.inflight("");
    let pattern = format!("{}*", glob_escape(&prefix));
    let found: Vec<fred::types::Key> = redis
        .client()
        .scan_buffered(pattern, Some(1000), None)
        .try_collect()
        .await?;
    let mut ids: Vec<String> = found
        .iter()
        .filter_map(|k| k.as_bytes().strip_prefix(prefix.as_bytes()))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// `s` with the characters `SCAN MATCH` treats specially escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("{a}:inflight:"), "{a}:inflight:");
        assert_eq!(glob_escape("{a*b}:x?[y]\\"), "{a\\*b}:x\\?\\[y\\]\\\\");
    }
}
