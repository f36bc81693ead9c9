//! The consumer's scripts for what it holds: taking messages into its
//! in-flight hash (and re-reading a fetch whose reply was lost), its
//! heartbeat, and returning what it holds. Acknowledging them is in
//! [`super::ack`].

use std::sync::LazyLock;

use fred::types::Value;

use super::{Memory, Script, flag};
use crate::redis::{Keys, Redis, RedisError, int};

/// The field every in-flight hash carries besides its messages, and its
/// value. The value is longer than Redis' `hash-max-listpack-value` (64
/// bytes by default), which makes Redis keep the hash in its hashtable
/// encoding from the first write: a small (listpack) hash is scanned
/// linearly by every HSET and HDEL, which made fetching 100 messages of 64
/// bytes cost 2 µs of Redis time per message. Field names of messages are
/// numbers, so they never collide with it.
pub const INFLIGHT_MARKER_FIELD: &str = "~";

/// See [`INFLIGHT_MARKER_FIELD`].
pub const INFLIGHT_MARKER_VALUE: &str =
    "redis-dsg in-flight hash; this field keeps it in the hashtable encoding (O(1) HSET/HDEL)";

/// Moves up to N messages from the consuming end of the queue into the
/// consumer's in-flight hash, each under its own delivery id, registering
/// the consumer first, as long as their bytes fit the consumer's budget.
///
/// KEYS: queue, in-flight hash, heartbeat, consumer set, heartbeat index,
/// doorbell.
/// ARGV: N, heartbeat TTL (ms), max message bytes, consumer id, heartbeat
/// value, marker field, marker value, first delivery id, byte budget, `1`
/// when the consumer holds nothing else (then one message is taken even if
/// it exceeds the budget, so a message larger than the budget still moves).
/// Returns `{need, messages…}`: the messages in the order taken (oldest
/// first), the i-th under delivery id `first + i - 1` (ids are made here
/// from one base, so an empty or small fetch carries ten arguments, not
/// one per message it might take); `need` is 0, or, when the budget
/// stopped the fetch before the queue ran out or N was reached, the bytes
/// the next message needs (at least 1): the caller waits for that much of
/// its budget before it fetches again, instead of waiting for a ring. A
/// message larger than the limit is returned as its size (an integer)
/// instead of its bytes, so it never crosses the network, and costs none
/// of the budget. The queue is read in chunks that the budget can hold (at
/// first as many messages of the limit's size as fit, but at least 32, so
/// the small fetches of a steady rate read once; then as many of the
/// average size seen), so a backlog of large messages is not copied whole
/// into the script (at most 32 of them at a time). On an empty queue it writes nothing (a fallback poll
/// costs Redis no writes, no replication). Atomic: every message is in the
/// queue or in the hash at all times, and the consumer is registered
/// (heartbeat key, set, and its expiry on Redis' clock in the index, so a
/// reaper can recover it) before it holds anything. The batch is removed
/// with `LTRIM` only after the `HSET` (the queue's trim probed first), so
/// a failing write removes nothing. A full batch rings the doorbell (best
/// effort): more is likely waiting, and an idle consumer wakes to help, one
/// at a time. Runs at `maxmemory`: it moves messages, growing memory by a
/// hash field's overhead per message, bounded by N; refusing it would leave
/// a full Redis full.
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fetch",
        Memory::Runs,
        r#"
local n = tonumber(ARGV[1])
local max = tonumber(ARGV[3])
local budget = tonumber(ARGV[9])
local alone = ARGV[10] == '1'
local msgs, used, need, read = {}, 0, 0, 0
local chunk = math.min(n, math.max(32, math.floor(budget / max)))
while #msgs < n do
  local part = guard('LRANGE', KEYS[1], -(read + chunk), -(read + 1))
  read = read + #part
  local full = false
  for j = #part, 1, -1 do
    local cost = #part[j]
    if cost > max then cost = 0 end
    if used + cost > budget and not (alone and #msgs == 0) then
      need = math.max(cost, 1)
      break
    end
    used = used + cost
    msgs[#msgs + 1] = part[j]
    if #msgs == n then full = true break end
  end
  if need > 0 or full or #part < chunk then break end
  local avg = math.max(1, math.floor(used / #msgs))
  chunk = math.max(1, math.min(n - #msgs, math.floor((budget - used) / avg) + 1))
end
if #msgs == 0 then return {need} end
guard('LTRIM', KEYS[1], 0, -1)
guard('SET', KEYS[3], ARGV[5], 'PX', ARGV[2])
guard('SADD', KEYS[4], ARGV[4])
local t = guard('TIME')
guard('ZADD', KEYS[5], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]), ARGV[4])
local first = tonumber(ARGV[8])
local k = #msgs
local fields = {ARGV[6], ARGV[7]}
local out = {need}
for i = 1, k do
  local m = msgs[i]
  fields[2 * i + 1] = first + i - 1
  fields[2 * i + 2] = m
  if #m > max then out[i + 1] = #m else out[i + 1] = m end
end
guard('HSET', KEYS[2], unpack(fields))
guard('LTRIM', KEYS[1], 0, -k - 1)
if k == n then redis.pcall('ZADD', KEYS[6], 0, 'r') end
return out
"#,
    )
});

/// Re-reads messages this consumer holds under the given delivery ids: the
/// ones a fetch moved into the hash when its reply never arrived.
///
/// KEYS: in-flight hash. ARGV: max message bytes, delivery ids…
/// Returns `{id, message or size, …}` for the ids still in the hash, in the
/// shape of [`FETCH`]. Read-only.
pub static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "adopt",
        Memory::ReadOnly,
        r#"
local max = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local m = guard('HGET', KEYS[1], ARGV[i])
  if m then
    out[#out + 1] = tonumber(ARGV[i])
    if #m > max then out[#out + 1] = #m else out[#out + 1] = m end
  end
end
return out
"#,
    )
});

/// Returns everything a consumer holds to the consuming end of the queue and
/// unregisters it.
///
/// KEYS: heartbeat, in-flight hash, queue, consumer set, heartbeat index.
/// ARGV: consumer id, `force` (`1` for a consumer returning its own work;
/// otherwise only when the heartbeat has expired).
/// Returns the number of messages returned, or -1 when the consumer is alive.
/// The oldest delivery ends up rightmost, so it is taken next. Atomic: a
/// consumer that is alive never loses its messages to a reaper, and a
/// message is never both returned and held. The hash is emptied with
/// `HDEL` (probed before the pushes, in chunks: `unpack` takes a few
/// thousand values), not `DEL`, so a user without `+hdel` fails before
/// anything moved; the heartbeat's removal is tidying (it expires). The
/// heartbeat key, not the index, decides whether a consumer is alive:
/// consumers of an earlier version write only the key.
pub static RETURN_INFLIGHT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "return_inflight",
        Memory::Runs,
        r#"
if ARGV[2] ~= '1' and guard('EXISTS', KEYS[1]) == 1 then
  return -1
end
local flat = guard('HGETALL', KEYS[2])
guard('HDEL', KEYS[2], '')
guard('SREM', KEYS[4], '')
guard('ZREM', KEYS[5], '')
local held, fields = {}, {}
for i = 1, #flat, 2 do
  fields[#fields + 1] = flat[i]
  local id = tonumber(flat[i])
  if id then held[#held + 1] = {id, flat[i + 1]} end
end
table.sort(held, function(a, b) return a[1] > b[1] end)
for _, h in ipairs(held) do
  guard('RPUSH', KEYS[3], h[2])
end
for i = 1, #fields, 1000 do
  guard('HDEL', KEYS[2], unpack(fields, i, math.min(i + 999, #fields)))
end
if ARGV[2] == '1' then redis.pcall('DEL', KEYS[1]) end
guard('SREM', KEYS[4], ARGV[1])
guard('ZREM', KEYS[5], ARGV[1])
return #held
"#,
    )
});

/// Refreshes a consumer's heartbeat and membership.
///
/// KEYS: heartbeat, consumer set, heartbeat index, the chores claim
/// ([`crate::redis::Keys::sampler`]). ARGV: consumer id, TTL (ms), value.
/// Returns `{alive, claimed}`: alive is 1 when the heartbeat was still
/// alive, 0 when it had expired (a reaper may have returned this
/// consumer's messages meanwhile); claimed is 0 when no instance holds the
/// chores claim, so this one tries to take it at once (the fleet's reaper
/// and watcher come back within a heartbeat interval, at no extra command).
/// The expiry in the index is on Redis' clock (`TIME`), never a pod's.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "heartbeat",
        Memory::Runs,
        r#"
local alive = guard('EXISTS', KEYS[1])
guard('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
guard('SADD', KEYS[2], ARGV[1])
local t = guard('TIME')
guard('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]), ARGV[1])
return {alive, guard('EXISTS', KEYS[4])}
"#,
    )
});

/// A [`FETCH`] call: what a consumer asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch<'a> {
    /// The consumer's id.
    pub consumer: &'a str,
    /// Its heartbeat value (its details, for `status`).
    pub heartbeat_value: &'a str,
    /// Messages to take, at most.
    pub max: u64,
    /// The heartbeat's TTL, ms.
    pub heartbeat_ttl_ms: u64,
    /// A message larger than this comes back as its size.
    pub max_message_bytes: u64,
    /// The delivery id of the first message taken.
    pub first_id: u64,
    /// Bytes the messages may fill.
    pub budget: u64,
    /// The consumer holds nothing else: one message is taken whatever its
    /// size.
    pub alone: bool,
}

/// What [`FETCH`] took.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// 0, or the bytes the next message needs when the budget stopped the
    /// fetch.
    pub need: u64,
    /// The messages, oldest first, the i-th under delivery id
    /// `first_id + i`: bytes, or a size (an integer) when too large.
    pub bodies: Vec<Value>,
}

/// Runs [`FETCH`].
pub(crate) async fn fetch(
    redis: &Redis,
    keys: &Keys,
    call: &Fetch<'_>,
) -> Result<Fetched, RedisError> {
    let reply: Vec<Value> = redis
        .run(
            &FETCH,
            vec![
                keys.queue.clone(),
                keys.inflight(call.consumer),
                keys.heartbeat(call.consumer),
                keys.consumers(),
                keys.heartbeats(),
                keys.bell(),
            ],
            vec![
                int(call.max),
                int(call.heartbeat_ttl_ms),
                int(call.max_message_bytes),
                call.consumer.into(),
                call.heartbeat_value.into(),
                INFLIGHT_MARKER_FIELD.into(),
                INFLIGHT_MARKER_VALUE.into(),
                int(call.first_id),
                int(call.budget),
                flag(call.alone),
            ],
        )
        .await?;
    let mut reply = reply.into_iter();
    let need = reply
        .next()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| RedisError::Reply {
            script: FETCH.name,
            detail: "the reply does not start with the bytes needed".into(),
        })?;
    Ok(Fetched {
        need,
        bodies: reply.collect(),
    })
}

/// Runs [`ADOPT`]: what `consumer`'s hash still holds under `ids`, as
/// (id, message or size) pairs.
pub(crate) async fn adopt(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    max_message_bytes: u64,
    ids: &[u64],
) -> Result<Vec<(u64, Value)>, RedisError> {
    let mut args = Vec::with_capacity(ids.len() + 1);
    args.push(int(max_message_bytes));
    args.extend(ids.iter().map(|&id| int(id)));
    let reply: Vec<Value> = redis
        .run(&ADOPT, vec![keys.inflight(consumer)], args)
        .await?;
    let mut out = Vec::with_capacity(reply.len() / 2);
    let mut it = reply.into_iter();
    while let (Some(id), Some(body)) = (it.next(), it.next()) {
        let id = id.as_u64().ok_or_else(|| RedisError::Reply {
            script: ADOPT.name,
            detail: "delivery id is not a number".into(),
        })?;
        out.push((id, body));
    }
    Ok(out)
}

/// What [`HEARTBEAT`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// The heartbeat was still alive (else a reaper may have returned this
    /// consumer's messages meanwhile).
    pub was_alive: bool,
    /// Some instance holds the chores claim.
    pub chores_claimed: bool,
}

/// Runs [`HEARTBEAT`] for `consumer`: its heartbeat set to `value` for
/// `ttl_ms`, its membership and its expiry in the index.
pub(crate) async fn heartbeat(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    ttl_ms: u64,
    value: &str,
) -> Result<Heartbeat, RedisError> {
    let (alive, claimed): (i64, i64) = redis
        .run(
            &HEARTBEAT,
            vec![
                keys.heartbeat(consumer),
                keys.consumers(),
                keys.heartbeats(),
                keys.sampler(),
            ],
            vec![consumer.into(), int(ttl_ms), value.into()],
        )
        .await?;
    Ok(Heartbeat {
        was_alive: alive == 1,
        chores_claimed: claimed != 0,
    })
}

/// Runs [`RETURN_INFLIGHT`] for `consumer`: how many messages went back,
/// or `None` when the consumer is alive (and not `force`d).
pub(crate) async fn return_inflight(
    redis: &Redis,
    keys: &Keys,
    consumer: &str,
    force: bool,
) -> Result<Option<u64>, RedisError> {
    let returned: i64 = redis
        .run(
            &RETURN_INFLIGHT,
            keys.return_inflight(consumer),
            vec![consumer.into(), flag(force)],
        )
        .await?;
    Ok(u64::try_from(returned).ok())
}
