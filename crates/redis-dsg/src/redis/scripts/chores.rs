//! The fleet's chores, done by the holder of the chores claim: the queue
//! watcher's doorbell, finding dead consumers, sampling the gauges, and
//! giving the claim up.

use std::sync::LazyLock;

use fred::bytes::Bytes;
use fred::clients::Client;
use fred::types::Value;

use super::{Memory, Script, flag};
use crate::redis::{Keys, Redis, RedisError, int, value_bytes};

/// Rings the doorbell when the queue holds messages: the chores holder's
/// answer to a change of the queue by any client (it runs this on its
/// `CLIENT TRACKING` connection, and the read of the queue's length here
/// arms tracking of the key again: Redis tracks keys read by scripts for
/// the calling client).
///
/// KEYS: queue, doorbell. Returns the queue's length. Its only write is the
/// ring, best effort as in [`super::FENCED_PUSH`].
pub static RING_IF_QUEUED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "ring_if_queued",
        Memory::Runs,
        r#"
local n = guard('LLEN', KEYS[1])
if n > 0 then redis.pcall('ZADD', KEYS[2], 0, 'r') end
return n
"#,
    )
});

/// Finds consumers whose heartbeat expired: run by one instance at a time
/// (the holder of the chores claim), so a pass costs the fleet
/// O(log n + dead), never O(pods).
///
/// KEYS: heartbeat index, consumer set. ARGV: at most this many, `1` to also
/// return registered consumers missing from the index (consumers of an
/// earlier version, which write only their heartbeat key: the caller's
/// [`super::RETURN_INFLIGHT`] checks that key, so a live one keeps its messages).
/// Returns the candidates' ids. Read-only.
pub static REAP_SCAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "reap_scan",
        Memory::ReadOnly,
        r#"
local t = guard('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local dead = guard('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
if ARGV[2] == '1' then
  for _, id in ipairs(guard('SMEMBERS', KEYS[2])) do
    if #dead >= tonumber(ARGV[1]) then break end
    if not guard('ZSCORE', KEYS[1], id) then dead[#dead + 1] = id end
  end
end
return dead
"#,
    )
});

/// One sample of the fleet's gauges, read by one instance at a time: the
/// caller takes or renews the sampler claim, then reads.
///
/// KEYS: sampler claim, queue, consumer set, lease.
/// ARGV: instance id, claim TTL (ms), how many bytes of the oldest message
/// to return.
/// Returns `{0}` when another instance holds the claim (nothing read),
/// else `{1, queue length, first bytes of the oldest message (nil when
/// empty), registered consumers, lease value (nil when free)}`. Only a
/// prefix of the oldest message leaves Redis, so a huge message costs one
/// copy inside Redis every sample, never a transfer. Removes nothing
/// (contract 10): its only write is the claim.
pub static SAMPLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "sample",
        Memory::Runs,
        r#"
local holder = guard('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0} end
guard('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local len = guard('LLEN', KEYS[2])
local oldest = false
if len > 0 then
  oldest = string.sub(guard('LINDEX', KEYS[2], -1), 1, tonumber(ARGV[3]))
end
return {1, len, oldest, guard('SCARD', KEYS[3]), guard('GET', KEYS[4])}
"#,
    )
});

/// Gives a claim up, only while it holds this holder's id.
///
/// KEYS: claim. ARGV: holder id. Returns 1 when released. The removal is
/// the script's only write, after its only check.
pub static RELEASE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "release_claim",
        Memory::Runs,
        r#"
if guard('GET', KEYS[1]) == ARGV[1] then
  return guard('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Runs [`RING_IF_QUEUED`] on `client` (the watcher's tracking
/// connection): the queue's length.
pub(crate) async fn ring_if_queued(
    redis: &Redis,
    client: &Client,
    keys: &Keys,
) -> Result<i64, RedisError> {
    redis
        .run_on(
            client,
            &RING_IF_QUEUED,
            vec![keys.queue.clone(), keys.bell()],
            vec![],
        )
        .await
}

/// Runs [`REAP_SCAN`]: the ids of at most `max` consumers whose heartbeat
/// expired, and with `legacy` of registered ones missing from the index.
pub(crate) async fn reap_scan(
    redis: &Redis,
    keys: &Keys,
    max: u64,
    legacy: bool,
) -> Result<Vec<String>, RedisError> {
    redis
        .run(
            &REAP_SCAN,
            vec![keys.heartbeats(), keys.consumers()],
            vec![int(max), flag(legacy)],
        )
        .await
}

/// What [`SAMPLE`] read.
#[derive(Debug)]
pub(crate) enum Sample {
    /// Another instance holds the claim; nothing was read.
    HeldByAnother,
    /// This instance holds the claim (taken or renewed).
    Read {
        /// The queue's length.
        queue_length: u64,
        /// The first bytes of the oldest message; `None` when the queue is
        /// empty.
        oldest: Option<Bytes>,
        /// Registered consumers.
        consumers: u64,
        /// The lease's value; `None` when nobody holds it.
        lease: Option<String>,
    },
}

/// Runs [`SAMPLE`] for `holder`, keeping the claim `claim_ttl_ms` and
/// reading `prefix_bytes` of the oldest message.
pub(crate) async fn sample(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    claim_ttl_ms: u64,
    prefix_bytes: u64,
) -> Result<Sample, RedisError> {
    let reply: Vec<Value> = redis
        .run(
            &SAMPLE,
            vec![
                keys.sampler(),
                keys.queue.clone(),
                keys.consumers(),
                keys.lease(),
            ],
            vec![holder.into(), int(claim_ttl_ms), int(prefix_bytes)],
        )
        .await?;
    let bad = |detail: &str| RedisError::Reply {
        script: SAMPLE.name,
        detail: detail.to_string(),
    };
    let mut it = reply.into_iter();
    if it.next().and_then(|v| v.as_i64()) != Some(1) {
        return Ok(Sample::HeldByAnother);
    }
    let queue_length = it
        .next()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("no queue length"))?;
    let oldest = it.next().and_then(value_bytes);
    let consumers = it
        .next()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("no consumer count"))?;
    let lease = it
        .next()
        .and_then(value_bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(Sample::Read {
        queue_length,
        oldest,
        consumers,
        lease,
    })
}

/// Runs [`RELEASE_CLAIM`]: gives `claim` up if `holder` holds it; whether
/// it did.
pub(crate) async fn release_claim(
    redis: &Redis,
    claim: &str,
    holder: &str,
) -> Result<bool, RedisError> {
    let released: i64 = redis
        .run(&RELEASE_CLAIM, vec![claim.to_string()], vec![holder.into()])
        .await?;
    Ok(released == 1)
}
