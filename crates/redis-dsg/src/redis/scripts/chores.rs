//! The fleet's chores, done by the holder of the chores claim: the queue
//! watcher's doorbell, finding dead consumers, sampling the gauges, and
//! giving the claim up.

use std::sync::LazyLock;

use super::{Memory, Script};

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
