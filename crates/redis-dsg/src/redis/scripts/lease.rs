//! The generator's scripts: the lease (taken, renewed, released, and
//! go-redis-dsg's `lock:gen` in compatibility mode) and the fenced push,
//! its only write path (contract 1).

use std::sync::LazyLock;

use super::{Memory, Script};

/// Takes the lease if nobody holds it, with a new fencing epoch.
///
/// KEYS: lease, epoch counter. ARGV: holder id, TTL (ms), the highest epoch
/// the caller has seen.
/// Returns `{1, token, epoch}` when taken, `{0, current token, PTTL}` when
/// held. Reading the counter, `SET NX PX` and writing the new epoch run in
/// one atomic step, so every acquisition has its own epoch and no two
/// holders ever share one. The epoch is written before the lease: were the
/// lease written first and the counter's write refused (an ACL user whose
/// key patterns allow the lease but not the counter), a holder would run
/// under an epoch the counter never recorded and the next holder could get
/// the same one (Redis 7 refuses such a call before the script runs; the
/// order keeps it safe wherever a write inside could be refused). This
/// order at worst skips an epoch (the lease's `SET`
/// refused after the counter's), which fencing does not mind. Epochs never go backwards, even when Redis lost the counter (a
/// restart without persistence, a failover to a replica that missed the
/// last write), as long as one contender saw the latest epoch: the counter
/// is raised past what the caller has seen.
pub static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "acquire_lease",
        Memory::Runs,
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
guard('SET', KEYS[2], text)
guard('SET', KEYS[1], token, 'NX', 'PX', ARGV[2])
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
        Memory::Runs,
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
        Memory::Runs,
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
        Memory::Runs,
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
/// holds this holder's token, and only while the queue is below the
/// backlog bound.
///
/// KEYS: lease, queue, doorbell. ARGV: token, backlog bound (`0`: none),
/// messages… Returns the queue length after the push, -1 when fenced off,
/// or -2 when held back (the queue holds the bound or more); in both cases
/// nothing was written. The check and the push are one atomic step, so a
/// deposed holder cannot append a single message, however long it was
/// paused; the fence is checked first, so a deposed holder learns it lost
/// the lease even while the queue is full. The bound costs one `LLEN` in
/// the same call (no round trip), so the queue holds at most the bound
/// plus one batch. After the push it rings the doorbell
/// ([`crate::redis::Keys::bell`]): one idle consumer wakes. Ringing is best
/// effort (`pcall`): a bell that cannot be rung (wrong type, no `+zadd`)
/// costs a wake-up the fallback poll makes up for, and must not turn a
/// done push into an error the caller would retry.
///
/// The one script refused at `maxmemory` ([`Memory::Refused`]): it only
/// adds, and a full Redis must be left to the scripts that free memory.
pub static FENCED_PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fenced_push",
        Memory::Refused,
        r#"
if guard('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local bound = tonumber(ARGV[2])
if bound > 0 and guard('LLEN', KEYS[2]) >= bound then
  return -2
end
local len = guard('LPUSH', KEYS[2], unpack(ARGV, 3))
redis.pcall('ZADD', KEYS[3], 0, 'r')
return len
"#,
    )
});
