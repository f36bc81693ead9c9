//! Every Lua script the service runs, each with a comment saying what it
//! guarantees. Key names are in [`super::keys`].
//!
//! # No destructive step before a fallible one (DESIGN.md, contract 10)
//!
//! Redis does not roll back a script that fails half-way: whatever it
//! removed before the error stays removed. So every script runs in three
//! phases:
//!
//! 1. **Check.** Read what it needs, and probe every key it will later
//!    remove from with a no-op form of that removal (`LTRIM k 0 -1`,
//!    `HDEL k ''`, `SREM k ''`, `ZREM k ''`, `ZADD k XX …`), so a key of
//!    the wrong type or a command the ACL user may not run fails here,
//!    before anything changed.
//! 2. **Write.** Then the writes. The first write is the one step that may
//!    still fail (`LPUSH`, `HSET`, `SET` have no no-op form); every later
//!    write repeats a command already run on the same key, so it cannot
//!    fail where the first one passed. A "done" record (a marker, a
//!    registration of a claim) is written after what it records, or is
//!    harmless when found without it.
//! 3. **Remove.** Removals come last, each probed in phase 1. Tidying that
//!    loses nothing when skipped (expiring markers, a heartbeat that
//!    expires anyway) runs through `redis.pcall` and its failure is
//!    ignored.
//!
//! Every command goes through `guard` ([`GUARD`]), which names the command
//! and the key in the error (Redis names neither). Every script is listed
//! in [`all`]; a unit test fails when a `pub static …: LazyLock<Script>` is
//! missing there, and the integration test `contract10_*` runs each one
//! against every key of the wrong type and without each command it runs
//! (register a new script in [`all`] and give it a case there).

mod drain;
mod script;

use std::sync::LazyLock;

pub use drain::{DRAIN_ACK, DRAIN_CLAIM, DRAIN_KEEP, DRAIN_RESTORE};
pub use script::{GUARD, Script};

/// Every script, for the tests that prove contract 10 for each and for the
/// ACL rule (which must grant every command they run). Add every new
/// script here.
pub fn all() -> Vec<&'static Script> {
    vec![
        &ACQUIRE_LEASE,
        &RENEW_LEASE,
        &ACQUIRE_ORIGINAL_LOCK,
        &RELEASE_LEASE,
        &FENCED_PUSH,
        &FETCH,
        &ADOPT,
        &ACK_OUTPUT,
        &ACK_ERROR,
        &RETURN_INFLIGHT,
        &HEARTBEAT,
        &REAP_SCAN,
        &RING_IF_QUEUED,
        &SAMPLE,
        &RELEASE_CLAIM,
        &CONFIRM_DRAINED,
        &REQUEUE,
        &PUSH_ONCE,
        &FORGET,
        &DRAIN_CLAIM,
        &DRAIN_ACK,
        &DRAIN_RESTORE,
        &DRAIN_KEEP,
    ]
}

/// Takes the lease if nobody holds it, with a new fencing epoch.
///
/// KEYS: lease, epoch counter. ARGV: holder id, TTL (ms), the highest epoch
/// the caller has seen.
/// Returns `{1, token, epoch}` when taken, `{0, current token, PTTL}` when
/// held. Reading the counter, `SET NX PX` and writing the new epoch run in
/// one atomic step, so every acquisition has its own epoch and no two
/// holders ever share one. The epoch is written after the lease: a `SET`
/// Redis refuses (a TTL out of range, an ACL user without `+set`) burns no
/// epoch. Epochs never go backwards, even when Redis lost the counter (a
/// restart without persistence, a failover to a replica that missed the
/// last write), as long as one contender saw the latest epoch: the counter
/// is raised past what the caller has seen.
pub static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "acquire_lease",
        r#"
local current = guard('GET', KEYS[1])
if current then
  return {0, current, guard('PTTL', KEYS[1])}
end
local epoch = tonumber(guard('GET', KEYS[2]) or '0')
if not epoch then
  return redis.error_reply('ERR the epoch counter does not hold a number [GET ' .. KEYS[2] .. ']')
end
epoch = math.max(epoch, tonumber(ARGV[3])) + 1
local text = string.format('%d', epoch)
local token = ARGV[1] .. ' ' .. text
guard('SET', KEYS[1], token, 'NX', 'PX', ARGV[2])
guard('SET', KEYS[2], text)
return {1, token, epoch}
"#,
    )
});

/// Extends the lease only while it still holds this holder's token.
///
/// KEYS: lease. ARGV: token, TTL (ms). Returns 1 when renewed, 0 when the
/// lease is gone or someone else's (the caller must stop generating).
/// Compatibility mode renews `lock:gen` with it too (KEYS: `lock:gen`;
/// ARGV: our value there, its TTL).
pub static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "renew_lease",
        r#"
if guard('GET', KEYS[1]) == ARGV[1] then
  guard('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Compatibility mode (`compat.original_lock`): takes go-redis-dsg's
/// election key `lock:gen` for the holder of this fleet's lease.
///
/// KEYS: `lock:gen`. ARGV: our value (`redis-dsg <lease key> <token>`),
/// TTL (ms), `redis-dsg <lease key> ` (the prefix of this fleet's values).
/// Returns `{1}` when set, `{0, current value, PTTL}` when another program
/// holds it (an original generator, an operator's pause, another queue's
/// fleet): the caller then gives its lease back and does not generate.
/// A value of this fleet (`<prefix><holder> <epoch>`) is overwritten: the
/// caller holds the lease, so that holder has lost it and stopped
/// generating (contract 1). So a handover between redis-dsg holders never
/// leaves `lock:gen` free for an original to take. One key: it runs on
/// Redis Cluster, where `lock:gen` has its own slot.
pub static ACQUIRE_ORIGINAL_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "acquire_original_lock",
        r#"
local cur = guard('GET', KEYS[1])
local ours = not cur or cur == ARGV[1]
if cur and not ours and string.sub(cur, 1, #ARGV[3]) == ARGV[3] then
  ours = string.match(string.sub(cur, #ARGV[3] + 1), '^[^ ]+ %d+$') ~= nil
end
if ours then
  guard('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, cur, guard('PTTL', KEYS[1])}
"#,
    )
});

/// Gives the lease up and announces it, only while it holds this token.
///
/// KEYS: lease. ARGV: token, release channel. Returns 1 when released and
/// announced, 2 when released but the notice could not be published (an
/// ACL user without `+publish` or the channel: standbys then take over
/// when they next look), 0 when not ours. Standbys subscribed to the
/// channel try to acquire at once; the notice reaches them after this
/// script, so after the removal.
pub static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "release_lease",
        r#"
if guard('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local announced = redis.pcall('PUBLISH', ARGV[2], ARGV[1])
guard('DEL', KEYS[1])
if type(announced) == 'table' and announced.err then return 2 end
return 1
"#,
    )
});

/// The generator's only write path: pushes the batch only while the lease
/// holds this holder's token.
///
/// KEYS: lease, queue, doorbell. ARGV: token, messages… Returns the queue
/// length after the push, or -1 when fenced off (nothing written). The
/// check and the push are one atomic step, so a deposed holder cannot
/// append a single message, however long it was paused. After the push it
/// rings the doorbell ([`super::Keys::bell`]): one idle consumer wakes.
/// Ringing is best effort (`pcall`): a bell that cannot be rung (wrong
/// type, no `+zadd`) costs a wake-up the fallback poll makes up for, and
/// must not turn a done push into an error the caller would retry.
pub static FENCED_PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fenced_push",
        r#"
if guard('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local len = guard('LPUSH', KEYS[2], unpack(ARGV, 2))
redis.pcall('ZADD', KEYS[3], 0, 'r')
return len
"#,
    )
});

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
/// the consumer first.
///
/// KEYS: queue, in-flight hash, heartbeat, consumer set, heartbeat index,
/// doorbell.
/// ARGV: N, heartbeat TTL (ms), max message bytes, consumer id, heartbeat
/// value, marker field, marker value, first delivery id.
/// Returns the messages in the order taken (oldest first), the i-th under
/// delivery id `first + i - 1` (ids are made here from one base, so an
/// empty or small fetch carries eight arguments, not one per message it
/// might take). A message larger than the limit is returned as its size
/// (an integer) instead of its bytes, so it never crosses the network. On
/// an empty queue it writes nothing (a fallback poll costs Redis no
/// writes, no replication). Atomic: every message is in the queue or in
/// the hash at all times, and the consumer is registered (heartbeat key,
/// set, and its expiry on Redis' clock in the index, so a reaper can
/// recover it) before it holds anything. The batch is read with `LRANGE`
/// and removed with `LTRIM` only after the `HSET` (the queue's trim probed
/// first), so a failing write removes nothing. A full batch rings the
/// doorbell (best effort): more is likely waiting, and an idle consumer
/// wakes to help, one at a time.
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fetch",
        r#"
local n = tonumber(ARGV[1])
local msgs = guard('LRANGE', KEYS[1], -n, -1)
if #msgs == 0 then return {} end
guard('LTRIM', KEYS[1], 0, -1)
guard('SET', KEYS[3], ARGV[5], 'PX', ARGV[2])
guard('SADD', KEYS[4], ARGV[4])
local t = guard('TIME')
guard('ZADD', KEYS[5], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[2]), ARGV[4])
local max = tonumber(ARGV[3])
local first = tonumber(ARGV[8])
local k = #msgs
local fields = {ARGV[6], ARGV[7]}
local out = {}
for i = 1, k do
  local m = msgs[k - i + 1]
  fields[2 * i + 1] = first + i - 1
  fields[2 * i + 2] = m
  if #m > max then out[i] = #m else out[i] = m end
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
/// its entry header, and forgets them.
///
/// KEYS: in-flight hash, error list. ARGV: pairs of (delivery id, header).
/// Returns one flag per pair: 1 moved, 0 already reclaimed by a reaper (a
/// late acknowledgement). The message bytes never leave Redis, and a
/// message is in the hash or in the error list, never both or neither.
pub static ACK_ERROR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "ack_error",
        r#"
guard('HDEL', KEYS[1], '')
local moved = {}
for i = 1, #ARGV, 2 do
  local body = guard('HGET', KEYS[1], ARGV[i])
  if body then
    guard('LPUSH', KEYS[2], ARGV[i + 1] .. body)
    guard('HDEL', KEYS[1], ARGV[i])
    moved[#moved + 1] = 1
  else
    moved[#moved + 1] = 0
  end
end
return moved
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
/// ([`super::Keys::sampler`]). ARGV: consumer id, TTL (ms), value.
/// Returns `{alive, claimed}`: alive is 1 when the heartbeat was still
/// alive, 0 when it had expired (a reaper may have returned this
/// consumer's messages meanwhile); claimed is 0 when no instance holds the
/// chores claim, so this one tries to take it at once (the fleet's reaper
/// and watcher come back within a heartbeat interval, at no extra command).
/// The expiry in the index is on Redis' clock (`TIME`), never a pod's.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "heartbeat",
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

/// Rings the doorbell when the queue holds messages: the chores holder's
/// answer to a change of the queue by any client (it runs this on its
/// `CLIENT TRACKING` connection, and the read of the queue's length here
/// arms tracking of the key again: Redis tracks keys read by scripts for
/// the calling client).
///
/// KEYS: queue, doorbell. Returns the queue's length. Its only write is the
/// ring, best effort as in [`FENCED_PUSH`].
pub static RING_IF_QUEUED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "ring_if_queued",
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
/// [`RETURN_INFLIGHT`] checks that key, so a live one keeps its messages).
/// Returns the candidates' ids. Read-only.
pub static REAP_SCAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "reap_scan",
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
        r#"
if guard('GET', KEYS[1]) == ARGV[1] then
  return guard('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Removes entries from the old end of the error list only if they are
/// still exactly the ones the caller printed.
///
/// KEYS: error list. ARGV: SHA1 of each printed entry, oldest first.
/// Returns how many were removed (all or none). Used after the printed
/// entries reached their reader, so an interrupted drain never loses one.
pub static CONFIRM_DRAINED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "confirm_drained",
        r#"
local n = #ARGV
local tail = guard('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return 0 end
for i = 1, n do
  if redis.sha1hex(tail[n - i + 1]) ~= ARGV[i] then return 0 end
end
guard('LTRIM', KEYS[1], 0, -n - 1)
return n
"#,
    )
});

/// Moves the oldest error entries back to the queue, as the messages the
/// caller decoded from them, only if they are still exactly the entries it
/// read.
///
/// KEYS: error list, queue. ARGV: n, then the SHA1 of each entry read
/// (oldest first), then the message decoded from each (same order).
/// Returns n when moved, 0 when the old end of the error list changed
/// since it was read (nothing moved: read again). Decoding happens in the
/// caller ([`crate::service::error_entry::decode`]), so `requeue` puts back
/// exactly what `errors list` shows. Atomic: an entry is in one list or the
/// other. The push, the only write that can fail (a wrong-type queue, a
/// missing `+lpush`), comes before the removal, whose `LTRIM` was probed
/// first (a user without `+ltrim` would otherwise push copies and keep the
/// entries), so a failure removes and duplicates nothing. The oldest
/// message is pushed first, as new messages are.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "requeue",
        r#"
local n = tonumber(ARGV[1])
local tail = guard('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return 0 end
for i = 1, n do
  if redis.sha1hex(tail[n - i + 1]) ~= ARGV[1 + i] then return 0 end
end
guard('LTRIM', KEYS[1], 0, -1)
guard('LPUSH', KEYS[2], unpack(ARGV, n + 2, 2 * n + 1))
guard('LTRIM', KEYS[1], 0, -n - 1)
return n
"#,
    )
});

/// First step of a move to a list in another hash slot (Redis Cluster):
/// pushes each entry unless its delivery token was pushed before, so a
/// retry after an error whose outcome is unknown does not push it twice.
/// Tokens are kept with their time and dropped after the TTL, so ones left
/// by a crash between the steps do not pile up under steady traffic. A
/// token is recorded only after its entry was pushed: a push that fails
/// leaves no token behind to suppress the retry.
///
/// KEYS: target list, its marker sorted set ([`Keys::moved_marker`]).
/// ARGV: now (ms), TTL (ms), then token and entry pairs. Returns how many
/// were pushed.
pub static PUSH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "push_once",
        r#"
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
guard('ZADD', KEYS[2], 'XX', now, '')
guard('LLEN', KEYS[1])
local pushed = 0
for i = 3, #ARGV, 2 do
  if not guard('ZSCORE', KEYS[2], ARGV[i]) then
    guard('LPUSH', KEYS[1], ARGV[i + 1])
    guard('ZADD', KEYS[2], now, ARGV[i])
    pushed = pushed + 1
  end
end
redis.pcall('PEXPIRE', KEYS[2], ttl)
redis.pcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
return pushed
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
        r#"
local flags = {}
for i = 1, #ARGV do
  flags[i] = guard('HDEL', KEYS[1], ARGV[i])
end
return flags
"#,
    )
});
