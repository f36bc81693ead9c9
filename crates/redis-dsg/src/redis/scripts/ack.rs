//! The consumer's acknowledgements: to the output or the error list in one
//! step, or, across Cluster slots, in two (push once, then forget).

use std::sync::LazyLock;

use fred::bytes::Bytes;
use fred::types::Value;

use super::{Memory, Script};
use crate::redis::{Keys, Redis, RedisError, int};

/// Hands processed messages over to the output list, exactly once.
///
/// KEYS: in-flight hash, output list. ARGV: delivery ids.
/// Each message this consumer still holds is pushed to the output list and
/// forgotten in the same step; returns how many. A message already
/// reclaimed by a reaper (this consumer was presumed dead) is not pushed:
/// its new owner will, so each message instance taken from the queue
/// reaches the output list once.
pub static ACK_OUTPUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "ack_output",
        Memory::Runs,
        r#"
guard('HDEL', KEYS[1], '')
local moved = 0
for i = 1, #ARGV do
  local body = guard('HGET', KEYS[1], ARGV[i])
  if body then
    guard('LPUSH', KEYS[2], body)
    guard('HDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"#,
    )
});

/// Moves messages this consumer still holds to the error list, each behind
/// its entry header, and forgets them; then keeps the error list within its
/// bound.
///
/// KEYS: in-flight hash, error list. ARGV: the bound (`errors.max_entries`,
/// `0`: none), then pairs of (delivery id, header).
/// Returns `{trimmed, flag…}`: how many of the oldest entries were trimmed
/// to keep the list within the bound, then one flag per pair: 1 moved, 0
/// already reclaimed by a reaper (a late acknowledgement). The message bytes
/// never leave Redis, and a message is in the hash or in the error list,
/// never both or neither. The length and the trim are the last steps
/// (both probed first): the entries the trim removes are the oldest, meant
/// to go by the bound; the ones just moved, the newest, go only when one
/// batch holds more entries than the bound.
pub static ACK_ERROR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "ack_error",
        Memory::Runs,
        r#"
local max = tonumber(ARGV[1])
guard('HDEL', KEYS[1], '')
if max > 0 then
  guard('LLEN', KEYS[2])
  guard('LTRIM', KEYS[2], 0, -1)
end
local out = {0}
for i = 2, #ARGV, 2 do
  local body = guard('HGET', KEYS[1], ARGV[i])
  if body then
    guard('LPUSH', KEYS[2], ARGV[i + 1] .. body)
    guard('HDEL', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if max > 0 then
  local len = guard('LLEN', KEYS[2])
  if len > max then
    guard('LTRIM', KEYS[2], 0, max - 1)
    out[1] = len - max
  end
end
return out
"#,
    )
});

/// First step of a move to a list in another hash slot (Redis Cluster):
/// pushes each entry unless its delivery token was pushed before, so a
/// retry after an error whose outcome is unknown does not push it twice.
/// Tokens are kept with their time and dropped after the TTL, so ones left
/// by a crash between the steps do not pile up under steady traffic. A
/// token is recorded only after its entry was pushed: a push that fails
/// leaves no token behind to suppress the retry. Then keeps the target
/// within its bound, as [`ACK_ERROR`] does.
///
/// KEYS: target list, its marker sorted set ([`crate::redis::Keys::moved_marker`]).
/// ARGV: now (ms), TTL (ms), the target's bound (`0`: none), then token
/// and entry pairs. Returns `{pushed, trimmed}`.
pub static PUSH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "push_once",
        Memory::Runs,
        r#"
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
guard('ZADD', KEYS[2], 'XX', now, '')
guard('LLEN', KEYS[1])
if max > 0 then guard('LTRIM', KEYS[1], 0, -1) end
local pushed = 0
for i = 4, #ARGV, 2 do
  if not guard('ZSCORE', KEYS[2], ARGV[i]) then
    guard('LPUSH', KEYS[1], ARGV[i + 1])
    guard('ZADD', KEYS[2], now, ARGV[i])
    pushed = pushed + 1
  end
end
redis.pcall('PEXPIRE', KEYS[2], ttl)
redis.pcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local trimmed = 0
if max > 0 then
  local len = guard('LLEN', KEYS[1])
  if len > max then
    guard('LTRIM', KEYS[1], 0, max - 1)
    trimmed = len - max
  end
end
return {pushed, trimmed}
"#,
    )
});

/// Second step of such a move: forgets the held messages.
///
/// KEYS: in-flight hash. ARGV: delivery ids.
/// Returns per id 1 if this consumer still held it, 0 if a reaper had
/// taken it back meanwhile (then it is delivered again: a duplicate).
pub static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "forget",
        Memory::Runs,
        r#"
local flags = {}
for i = 1, #ARGV do
  flags[i] = guard('HDEL', KEYS[1], ARGV[i])
end
return flags
"#,
    )
});

/// Runs [`ACK_OUTPUT`]: moves `ids` from `consumer`'s hash to `output`; how
/// many were still held.
pub(crate) async fn ack_output(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    output: &str,
    ids: &[u64],
) -> Result<u64, RedisError> {
    redis
        .run(
            &ACK_OUTPUT,
            vec![keys.inflight(consumer), output.to_string()],
            ids.iter().map(|&id| int(id)).collect(),
        )
        .await
}

/// What [`ACK_ERROR`] did.
#[derive(Debug)]
pub(crate) struct MovedToErrors {
    /// Oldest entries trimmed to keep the error list within its bound.
    pub trimmed: u64,
    /// Per entry, whether it was still held (and moved).
    pub moved: Vec<bool>,
}

/// Runs [`ACK_ERROR`]: moves `entries` (delivery id, entry header) from
/// `consumer`'s hash to the error list, kept within `max_entries`.
pub(crate) async fn ack_error(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    max_entries: u64,
    entries: &[(u64, &str)],
) -> Result<MovedToErrors, RedisError> {
    let mut args = Vec::with_capacity(entries.len() * 2 + 1);
    args.push(int(max_entries));
    for (id, header) in entries {
        args.push(int(*id));
        args.push(Value::from(*header));
    }
    let reply: Vec<i64> = redis
        .run(
            &ACK_ERROR,
            vec![keys.inflight(consumer), keys.error_queue.clone()],
            args,
        )
        .await?;
    let Some((trimmed, flags)) = reply.split_first() else {
        return Err(RedisError::Reply {
            script: ACK_ERROR.name,
            detail: "no trimmed count".into(),
        });
    };
    Ok(MovedToErrors {
        trimmed: (*trimmed).max(0) as u64,
        moved: flags.iter().map(|f| *f == 1).collect(),
    })
}

/// Runs [`PUSH_ONCE`]: pushes each (delivery token, entry) to `target`
/// unless its token is marked already (the marker set `marker`, entries
/// kept `ttl_ms` from `now_ms`), then keeps `target` within `max_entries`.
/// Returns (pushed, trimmed).
pub(crate) async fn push_once(
    redis: &Redis,
    target: &str,
    marker: &str,
    now_ms: u64,
    ttl_ms: u64,
    max_entries: u64,
    entries: Vec<(String, Bytes)>,
) -> Result<(u64, u64), RedisError> {
    let mut args = vec![int(now_ms), int(ttl_ms), int(max_entries)];
    for (token, entry) in entries {
        args.push(Value::from(token));
        args.push(Value::Bytes(entry));
    }
    let (pushed, trimmed): (i64, i64) = redis
        .run(
            &PUSH_ONCE,
            vec![target.to_string(), marker.to_string()],
            args,
        )
        .await?;
    Ok((pushed.max(0) as u64, trimmed.max(0) as u64))
}

/// Runs [`FORGET`]: removes `ids` from `consumer`'s hash; per id, whether
/// it was still held.
pub(crate) async fn forget(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    ids: &[u64],
) -> Result<Vec<bool>, RedisError> {
    let flags: Vec<i64> = redis
        .run(
            &FORGET,
            vec![keys.inflight(consumer)],
            ids.iter().map(|&id| int(id)).collect(),
        )
        .await?;
    Ok(flags.iter().map(|f| *f == 1).collect())
}
