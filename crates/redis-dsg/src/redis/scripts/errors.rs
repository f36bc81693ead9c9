//! The `errors` command's scripts besides `drain`'s: confirming printed
//! entries and requeueing them.

use std::sync::LazyLock;

use fred::types::Value;

use super::{Memory, Script};
use crate::redis::{Keys, Redis, RedisError, int};

/// Removes entries from the old end of the error list only if they are
/// still exactly the ones the caller printed.
///
/// KEYS: error list. ARGV: SHA1 of each printed entry, oldest first.
/// Returns how many were removed (all or none). Used after the printed
/// entries reached their reader, so an interrupted drain never loses one.
pub static CONFIRM_DRAINED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "confirm_drained",
        Memory::Runs,
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
        Memory::Runs,
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

/// Runs [`CONFIRM_DRAINED`]: removes the entries whose SHA1s are `sha1s`
/// (oldest first) from the error list; how many were removed (all or none).
pub(crate) async fn confirm_drained(
    redis: &Redis,
    keys: &Keys,
    sha1s: Vec<String>,
) -> Result<u64, RedisError> {
    let removed: i64 = redis
        .run(
            &CONFIRM_DRAINED,
            vec![keys.error_queue.clone()],
            sha1s.into_iter().map(Value::from).collect(),
        )
        .await?;
    Ok(removed.max(0) as u64)
}

/// Runs [`REQUEUE`]: moves the entries read as `(sha1, message)` (oldest
/// first) back to the queue as their messages; whether they moved (false:
/// the old end of the error list changed since it was read).
pub(crate) async fn requeue(
    redis: &Redis,
    keys: &Keys,
    entries: &[(String, fred::bytes::Bytes)],
) -> Result<bool, RedisError> {
    let mut args = Vec::with_capacity(2 * entries.len() + 1);
    args.push(int(entries.len() as u64));
    args.extend(entries.iter().map(|(sha1, _)| Value::from(sha1.as_str())));
    args.extend(entries.iter().map(|(_, m)| Value::Bytes(m.clone())));
    let done: i64 = redis
        .run(
            &REQUEUE,
            vec![keys.error_queue.clone(), keys.queue.clone()],
            args,
        )
        .await?;
    Ok(done > 0)
}
