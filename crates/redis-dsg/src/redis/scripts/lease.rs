//! The generator's scripts: the lease (taken, renewed, released, and
//! go-redis-dsg's `lock:gen` in compatibility mode) and the fenced push,
//! its only write path (contract 1).

use std::sync::LazyLock;

use fred::bytes::Bytes;
use fred::types::Value;

use super::{Memory, Script};
use crate::redis::keys::ORIGINAL_LOCK;
use crate::redis::{Keys, Redis, RedisError, int, value_bytes};

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

/// What [`ACQUIRE_LEASE`] and [`ACQUIRE_ORIGINAL_LOCK`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Taken: the key now holds `value`; for the lease, with `epoch`.
    Taken {
        /// The value written (the lease's token).
        value: String,
        /// The lease's new epoch (0 for `lock:gen`).
        epoch: i64,
    },
    /// Held by someone else: its value and how long it lives (ms; `None`
    /// when Redis did not say).
    Held {
        /// The holder's value.
        value: String,
        /// The key's remaining TTL, ms.
        ttl_ms: Option<i64>,
    },
}

/// Runs [`ACQUIRE_LEASE`] for `holder`, for `ttl_ms`, above `seen_epoch`.
pub(crate) async fn acquire_lease(
    redis: &Redis,
    keys: &Keys,
    holder: &str,
    ttl_ms: u64,
    seen_epoch: u64,
) -> Result<Acquired, RedisError> {
    let reply: Vec<Value> = redis
        .run(
            &ACQUIRE_LEASE,
            vec![keys.lease(), keys.epoch()],
            vec![holder.into(), int(ttl_ms), int(seen_epoch)],
        )
        .await?;
    let bad = |detail: &str| RedisError::Reply {
        script: ACQUIRE_LEASE.name,
        detail: detail.to_string(),
    };
    let mut it = reply.into_iter();
    let taken = it
        .next()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| bad("no status"))?;
    let value = it
        .next()
        .and_then(value_bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| bad("no token"))?;
    let third = it
        .next()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| bad("no epoch/ttl"))?;
    Ok(if taken == 1 {
        Acquired::Taken {
            value,
            epoch: third,
        }
    } else {
        Acquired::Held {
            value,
            ttl_ms: Some(third),
        }
    })
}

/// Runs [`RENEW_LEASE`] on `key` (the lease, or `lock:gen`): whether it
/// still held `value` and was extended to `ttl_ms`.
pub(crate) async fn renew(
    redis: &Redis,
    key: String,
    value: &str,
    ttl_ms: u64,
) -> Result<bool, RedisError> {
    let renewed: i64 = redis
        .run(&RENEW_LEASE, vec![key], vec![value.into(), int(ttl_ms)])
        .await?;
    Ok(renewed == 1)
}

/// Runs [`ACQUIRE_ORIGINAL_LOCK`]: takes `lock:gen` with `value` for
/// `ttl_ms`, or over a value starting with `own_prefix` (this fleet's).
pub(crate) async fn acquire_original_lock(
    redis: &Redis,
    value: &str,
    ttl_ms: u64,
    own_prefix: &str,
) -> Result<Acquired, RedisError> {
    let reply: Vec<Value> = redis
        .run(
            &ACQUIRE_ORIGINAL_LOCK,
            vec![ORIGINAL_LOCK.to_string()],
            vec![value.into(), int(ttl_ms), own_prefix.into()],
        )
        .await?;
    let mut it = reply.into_iter();
    if it.next().and_then(|v| v.as_i64()) == Some(1) {
        return Ok(Acquired::Taken {
            value: value.to_string(),
            epoch: 0,
        });
    }
    let value = it
        .next()
        .and_then(value_bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let ttl_ms = it.next().and_then(|v| v.as_i64());
    Ok(Acquired::Held { value, ttl_ms })
}

/// What [`RELEASE_LEASE`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// The lease was not ours (any more).
    NotOurs,
    /// Released and announced.
    Announced,
    /// Released, but the notice could not be published.
    Unannounced,
}

/// Runs [`RELEASE_LEASE`] for `token`.
pub(crate) async fn release_lease(
    redis: &Redis,
    keys: &Keys,
    token: &str,
) -> Result<Released, RedisError> {
    let released: i64 = redis
        .run(
            &RELEASE_LEASE,
            vec![keys.lease()],
            vec![token.into(), keys.release_channel().into()],
        )
        .await?;
    Ok(match released {
        1 => Released::Announced,
        2 => Released::Unannounced,
        _ => Released::NotOurs,
    })
}

/// What a fenced push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Written; the queue's length afterwards.
    Written(u64),
    /// Refused: the lease is not ours any more. Nothing was written.
    Fenced,
    /// Not written: the queue holds the backlog bound or more.
    HeldBack,
}

/// Runs [`FENCED_PUSH`]: `messages` (in order, with LPUSH) if `token` still
/// holds the lease and the queue holds fewer than `max_backlog` (0: no
/// bound).
pub(crate) async fn fenced_push(
    redis: &Redis,
    keys: &Keys,
    token: &str,
    max_backlog: u64,
    messages: Vec<Bytes>,
) -> Result<Pushed, RedisError> {
    let mut args = Vec::with_capacity(messages.len() + 2);
    args.push(Value::from(token));
    args.push(int(max_backlog));
    args.extend(messages.into_iter().map(Value::Bytes));
    let len: i64 = redis
        .run(
            &FENCED_PUSH,
            vec![keys.lease(), keys.queue.clone(), keys.bell()],
            args,
        )
        .await?;
    Ok(match len {
        -1 => Pushed::Fenced,
        -2 => Pushed::HeldBack,
        len => Pushed::Written(u64::try_from(len).map_err(|_| RedisError::Reply {
            script: FENCED_PUSH.name,
            detail: format!("{len} is neither a length nor -1 or -2"),
        })?),
    })
}
