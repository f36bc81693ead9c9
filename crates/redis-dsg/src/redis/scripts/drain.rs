//! The scripts of `errors drain`: a drain claims a batch of entries (moves
//! them from the error list into a claim list of its own), prints them,
//! and deletes the claim once its reader has them; a claim that was never
//! confirmed (the drain was killed, its reader went away) is moved back.
//! Concurrent drains therefore print disjoint entries, and an entry is
//! always in the error list, in a claim, or printed.
//!
//! Keys (in the error list's hash slot, [`crate::redis::Keys::drains`]):
//! the claims registry, a sorted set of claim name → deadline (ms, Redis'
//! clock), and one list per claim (`…:draining:<claim>`).

use std::sync::LazyLock;

use fred::types::Value;

use super::{Memory, Script, flag};
use crate::redis::{Keys, Redis, RedisError, int, value_bytes};

/// Claims up to N of the oldest error entries for one drain.
///
/// KEYS: error list, claims registry, this claim's list.
/// ARGV: N, claim name, how long the claim lives without confirmation (ms).
/// Returns the claimed entries, oldest first (empty when the list is).
/// The claim is registered with its deadline before it holds anything, so
/// whatever happens to the drain, the next command finds and restores it
/// ([`DRAIN_RESTORE`]). Each entry moves with one `LMOVE` (atomic), after
/// no-op forms of what confirming or putting back the claim will run
/// (`LMOVE`, `LTRIM` on the claim list, `ZREM` on the registry) probed the
/// commands and types: a drain that could not remove what it prints fails
/// before it prints anything.
pub static DRAIN_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "drain_claim",
        Memory::Runs,
        r#"
if guard('LLEN', KEYS[1]) == 0 then return {} end
guard('LMOVE', KEYS[3], KEYS[3], 'RIGHT', 'RIGHT')
guard('LTRIM', KEYS[3], 0, -1)
guard('ZREM', KEYS[2], '')
local t = guard('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
guard('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local e = guard('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'LEFT')
  if not e then break end
  out[i] = e
end
return out
"#,
    )
});

/// Confirms a claim: its entries reached their reader, so they go.
///
/// KEYS: claims registry, the claim's list. ARGV: claim name.
/// Returns 1, or 0 when the claim had been restored meanwhile (its deadline
/// passed and another command moved it back: the entries will show again,
/// never lost). Probes the registry's removal before it empties the list.
pub static DRAIN_ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "drain_ack",
        Memory::Runs,
        r#"
guard('ZREM', KEYS[1], '')
guard('LTRIM', KEYS[2], 0, -1)
guard('LTRIM', KEYS[2], 1, 0)
return guard('ZREM', KEYS[1], ARGV[1])
"#,
    )
});

/// Moves a claim's entries back to the old end of the error list, in their
/// order, and forgets the claim; only when its deadline has passed unless
/// `force` (the drain's own claim, its reader gone).
///
/// KEYS: error list, claims registry, the claim's list.
/// ARGV: claim name, `1` to force.
/// Returns how many entries went back, or -1 when the claim is still live.
/// Each entry moves with one `LMOVE` (atomic); the registry's entry goes
/// last, after its removal was probed.
pub static DRAIN_RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "drain_restore",
        Memory::Runs,
        r#"
if ARGV[2] ~= '1' then
  local deadline = guard('ZSCORE', KEYS[2], ARGV[1])
  local t = guard('TIME')
  if deadline and tonumber(deadline) > t[1] * 1000 + math.floor(t[2] / 1000) then
    return -1
  end
end
guard('ZREM', KEYS[2], '')
local moved = 0
while guard('LMOVE', KEYS[3], KEYS[1], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
guard('ZREM', KEYS[2], ARGV[1])
return moved
"#,
    )
});

/// Keeps a running drain's claims alive while it waits for a slow reader.
///
/// KEYS: claims registry. ARGV: how long from now (ms), claim names…
/// Returns 1. Only moves deadlines of claims still registered (`XX`): a
/// claim put back meanwhile stays put back.
pub static DRAIN_KEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "drain_keep",
        Memory::Runs,
        r#"
local t = guard('TIME')
local deadline = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  guard('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
return 1
"#,
    )
});

/// Runs [`DRAIN_CLAIM`]: claims up to `n` of the oldest entries under
/// `claim` for `ttl_ms`; the entries, oldest first.
pub(crate) async fn drain_claim(
    redis: &Redis,
    keys: &Keys,
    claim: &str,
    n: u64,
    ttl_ms: u64,
) -> Result<Vec<Vec<u8>>, RedisError> {
    let reply: Vec<Value> = redis
        .run(
            &DRAIN_CLAIM,
            vec![
                keys.error_queue.clone(),
                keys.drains(),
                keys.draining(claim),
            ],
            vec![int(n), claim.into(), int(ttl_ms)],
        )
        .await?;
    Ok(reply
        .into_iter()
        .filter_map(value_bytes)
        .map(|b| b.to_vec())
        .collect())
}

/// Runs [`DRAIN_ACK`]: deletes `claim`; whether it still existed (else it
/// had been restored meanwhile).
pub(crate) async fn drain_ack(redis: &Redis, keys: &Keys, claim: &str) -> Result<bool, RedisError> {
    let existed: i64 = redis
        .run(
            &DRAIN_ACK,
            vec![keys.drains(), keys.draining(claim)],
            vec![claim.into()],
        )
        .await?;
    Ok(existed == 1)
}

/// Runs [`DRAIN_RESTORE`]: how many entries of `claim` went back, or `None`
/// when the claim is still live (and not `force`d).
pub(crate) async fn drain_restore(
    redis: &Redis,
    keys: &Keys,
    claim: &str,
    force: bool,
) -> Result<Option<u64>, RedisError> {
    let back: i64 = redis
        .run(
            &DRAIN_RESTORE,
            vec![
                keys.error_queue.clone(),
                keys.drains(),
                keys.draining(claim),
            ],
            vec![claim.into(), flag(force)],
        )
        .await?;
    Ok(u64::try_from(back).ok())
}

/// Runs [`DRAIN_KEEP`]: moves the deadlines of `claims` to `ttl_ms` from
/// now.
pub(crate) async fn drain_keep(
    redis: &Redis,
    keys: &Keys,
    ttl_ms: u64,
    claims: impl IntoIterator<Item = &str>,
) -> Result<(), RedisError> {
    let mut args = vec![int(ttl_ms)];
    args.extend(claims.into_iter().map(Value::from));
    let _: i64 = redis.run(&DRAIN_KEEP, vec![keys.drains()], args).await?;
    Ok(())
}
