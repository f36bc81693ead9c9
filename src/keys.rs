//! Every Redis key name and every Lua script the service uses.
//!
//! Keys derived from the queue name share the queue's hash slot, so every
//! multi-key script also runs on Redis Cluster: a queue without a `{…}` hash
//! tag gets derived keys `{<queue>}:<suffix>` (Redis hashes only the part
//! inside the braces); a queue that has a tag gets `<queue>:<suffix>`.
//!
//! | key | type | what it holds |
//! |---|---|---|
//! | `<queue>` | list | messages; producers `LPUSH`, consumers take from the right |
//! | `<error_queue>` | list | error entries ([`crate::error_entry`]) |
//! | `{q}:lease` | string, TTL | `<holder id> <epoch>`: who generates |
//! | `{q}:epoch` | counter | the last fencing epoch handed out |
//! | `{q}:lease:released` | pub/sub channel | release notices |
//! | `{q}:consumers` | set | ids of registered consumers |
//! | `{q}:consumer:<id>` | string, TTL | a consumer's heartbeat |
//! | `{q}:inflight:<id>` | hash | delivery id → message, what a consumer holds |

use std::sync::LazyLock;

/// The key names for one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The message list.
    pub queue: String,
    /// The error list.
    pub error_queue: String,
    base: String,
}

impl Keys {
    /// Key names for `queue` and `error_queue`.
    pub fn new(queue: &str, error_queue: &str) -> Keys {
        let base = if hash_tag(queue).is_some() {
            queue.to_string()
        } else {
            format!("{{{queue}}}")
        };
        Keys {
            queue: queue.to_string(),
            error_queue: error_queue.to_string(),
            base,
        }
    }

    fn derived(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.base)
    }

    /// The generator lease.
    pub fn lease(&self) -> String {
        self.derived("lease")
    }

    /// The fencing epoch counter.
    pub fn epoch(&self) -> String {
        self.derived("epoch")
    }

    /// The pub/sub channel on which a releasing holder announces it.
    pub fn release_channel(&self) -> String {
        self.derived("lease:released")
    }

    /// The set of registered consumer ids.
    pub fn consumers(&self) -> String {
        self.derived("consumers")
    }

    /// A consumer's heartbeat key.
    pub fn heartbeat(&self, consumer: &str) -> String {
        self.derived(&format!("consumer:{consumer}"))
    }

    /// A consumer's in-flight hash.
    pub fn inflight(&self, consumer: &str) -> String {
        self.derived(&format!("inflight:{consumer}"))
    }

    /// Whether every derived key lands in the queue's hash slot. False only
    /// for queue names with unbalanced braces (e.g. `a}b`), which validation
    /// rejects.
    pub fn derived_keys_share_slot(&self) -> bool {
        let slot = fred::util::redis_keyslot(self.queue.as_bytes());
        [self.lease(), self.inflight("x"), self.consumers()]
            .iter()
            .all(|k| fred::util::redis_keyslot(k.as_bytes()) == slot)
    }

    /// Whether the error list shares the queue's slot (then moving a message
    /// to it is one atomic script even on Redis Cluster).
    pub fn error_queue_shares_slot(&self) -> bool {
        self.shares_slot(&self.error_queue)
    }

    /// Whether `key` is in the queue's hash slot.
    pub fn shares_slot(&self, key: &str) -> bool {
        fred::util::redis_keyslot(self.queue.as_bytes())
            == fred::util::redis_keyslot(key.as_bytes())
    }

    /// The delivery tokens already pushed to `list` by a two-step
    /// move (lists in another hash slot on Redis Cluster). It shares the
    /// list's slot, so pushing and marking are one script there.
    pub fn moved_marker(list: &str) -> String {
        let slot = fred::util::redis_keyslot(list.as_bytes());
        let same_slot = |k: &String| fred::util::redis_keyslot(k.as_bytes()) == slot;
        if hash_tag(list).is_some() {
            return format!("{list}:moved");
        }
        let tagged = format!("{{{list}}}:moved");
        if same_slot(&tagged) {
            return tagged;
        }
        // Braces that make no tag (`a{}b`): any tag of the same slot will
        // do, since delivery tokens are unique whichever list they go to.
        (0u32..)
            .map(|n| format!("{{moved-{n}}}:moved"))
            .find(same_slot)
            .unwrap_or(tagged)
    }
}

impl Keys {
    /// The least-privilege ACL rule (the part after `ACL SETUSER <name>`,
    /// without a password) for the service and its one-shot commands:
    /// exactly the commands they send, directly or from their Lua scripts,
    /// and only the keys and channel derived from these names.
    pub fn acl_rule(&self, output_queue: Option<&str>) -> String {
        let mut keys = vec![
            format!("~{}", self.queue),
            format!("~{}", self.error_queue),
            format!("~{}:*", self.base),
        ];
        if let Some(out) = output_queue {
            keys.push(format!("~{out}"));
        }
        // Lists in another hash slot are written in two steps, each pushed
        // delivery marked next to the list (only used on Redis Cluster).
        for list in std::iter::once(self.error_queue.as_str()).chain(output_queue) {
            if !self.shares_slot(list) {
                keys.push(format!("~{}", Keys::moved_marker(list)));
            }
        }
        let commands = [
            // Sent directly.
            "+ping",
            "+evalsha",
            "+eval",
            "+llen",
            "+lrange",
            "+lpush",
            "+hmget",
            "+hdel",
            "+hlen",
            "+smembers",
            "+exists",
            "+get",
            "+pttl",
            "+subscribe",
            "+select",
            "+cluster|slots",
            "+cluster|shards",
            "+cluster|info",
            // Sent by fred itself: the primary check after a Sentinel
            // lookup, and the redirect during Cluster resharding.
            "+role",
            "+asking",
            // fred reads the server version at every connection (and warns
            // at each one if it cannot).
            "+info",
            // Run by the Lua scripts, which use the caller's rights.
            "+set",
            "+incr",
            "+pexpire",
            "+del",
            "+rpush",
            "+rpop",
            "+hset",
            "+hget",
            "+hgetall",
            "+sadd",
            "+srem",
            "+ltrim",
            "+zadd",
            "+zrem",
            "+zremrangebyscore",
            // Undoing a cross-slot requeue that lost a race (Cluster).
            "+lrem",
            "+publish",
        ];
        format!(
            "on resetkeys resetchannels {} &{} -@all {}",
            keys.join(" "),
            self.release_channel(),
            commands.join(" ")
        )
    }
}

/// The hash tag Redis would use for `key`: the text between the first `{`
/// and the first `}` after it, when not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

/// A Lua script with its SHA1, run with `EVALSHA` and, when the server does
/// not know it yet (first use, Redis restart, another Cluster node), with
/// `EVAL`, which also caches it there.
#[derive(Debug)]
pub struct Script {
    /// A short name for logs and metrics.
    pub name: &'static str,
    /// The Lua source.
    pub lua: &'static str,
    /// The SHA1 of the source.
    pub sha1: String,
}

impl Script {
    fn new(name: &'static str, lua: &'static str) -> Script {
        let sha1 = fred::types::scripts::Script::from_lua(lua)
            .sha1()
            .to_string();
        Script { name, lua, sha1 }
    }
}

/// Prefix of a structured error entry (see [`crate::error_entry`]); the Lua
/// scripts below strip it to recover a message's original bytes.
pub const ERROR_ENTRY_PREFIX: &str = "DSGERR1 ";

/// Takes the lease if nobody holds it, with a new fencing epoch.
///
/// KEYS: lease, epoch counter. ARGV: holder id, TTL (ms), the highest epoch
/// the caller has seen.
/// Returns `{1, token, epoch}` when taken, `{0, current token, PTTL}` when
/// held. `INCR` and `SET NX PX` run in one atomic step, so every
/// acquisition has its own epoch and no two holders ever share one. Epochs
/// never go backwards, even when Redis lost the counter (a restart without
/// persistence, a failover to a replica that missed the last `INCR`), as
/// long as one contender saw the latest epoch: the counter is raised past
/// what the caller has seen.
pub static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "acquire_lease",
        r#"
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
local token = ARGV[1] .. ' ' .. epoch
redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2])
return {1, token, epoch}
"#,
    )
});

/// Extends the lease only while it still holds this holder's token.
///
/// KEYS: lease. ARGV: token, TTL (ms). Returns 1 when renewed, 0 when the
/// lease is gone or someone else's (the caller must stop generating).
pub static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "renew_lease",
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Gives the lease up and announces it, only while it holds this token.
///
/// KEYS: lease. ARGV: token, release channel. Returns 1 when released.
/// Standbys subscribed to the channel try to acquire at once.
pub static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "release_lease",
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
"#,
    )
});

/// The generator's only write path: pushes the batch only while the lease
/// holds this holder's token.
///
/// KEYS: lease, queue. ARGV: token, messages… Returns the queue length
/// after the push, or -1 when fenced off (nothing written). The check and
/// the push are one atomic step, so a deposed holder cannot append a single
/// message, however long it was paused.
pub static FENCED_PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fenced_push",
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
return redis.call('LPUSH', KEYS[2], unpack(ARGV, 2))
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
/// KEYS: queue, in-flight hash, heartbeat, consumer set.
/// ARGV: N, heartbeat TTL (ms), max message bytes, consumer id, heartbeat
/// value, marker field, marker value, then N delivery ids (as strings: a
/// Lua number passed to Redis is formatted with printf, which cost more
/// than the rest of the script).
/// Returns the messages in the order taken (oldest first), the i-th under
/// the i-th delivery id. A message larger than the limit is returned as its
/// size (an integer) instead of its bytes, so it never crosses the
/// network. On an empty queue it writes nothing (idle polling
/// costs Redis no writes, no replication). Atomic: every message is in the
/// queue or in the hash at all times, and the consumer is registered (so a
/// reaper can recover it) before it holds anything.
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "fetch",
        r#"
local msgs = redis.call('RPOP', KEYS[1], ARGV[1])
if not msgs then return {} end
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
local max = tonumber(ARGV[3])
local fields = {ARGV[6], ARGV[7]}
for i, m in ipairs(msgs) do
  fields[2 * i + 1] = ARGV[7 + i]
  fields[2 * i + 2] = m
  if #m > max then msgs[i] = #m end
end
redis.call('HSET', KEYS[2], unpack(fields))
return msgs
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
  local m = redis.call('HGET', KEYS[1], ARGV[i])
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
local moved = 0
for i = 1, #ARGV do
  local body = redis.call('HGET', KEYS[1], ARGV[i])
  if body then
    redis.call('LPUSH', KEYS[2], body)
    redis.call('HDEL', KEYS[1], ARGV[i])
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
local moved = {}
for i = 1, #ARGV, 2 do
  local body = redis.call('HGET', KEYS[1], ARGV[i])
  if body then
    redis.call('LPUSH', KEYS[2], ARGV[i + 1] .. body)
    redis.call('HDEL', KEYS[1], ARGV[i])
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
/// KEYS: heartbeat, in-flight hash, queue, consumer set.
/// ARGV: consumer id, `force` (`1` for a consumer returning its own work;
/// otherwise only when the heartbeat has expired).
/// Returns the number of messages returned, or -1 when the consumer is alive.
/// The oldest delivery ends up rightmost, so it is taken next. Atomic: a
/// consumer that is alive never loses its messages to a reaper, and a
/// message is never both returned and held.
pub static RETURN_INFLIGHT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "return_inflight",
        r#"
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local flat = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #flat, 2 do
  local id = tonumber(flat[i])
  if id then held[#held + 1] = {id, flat[i + 1]} end
end
table.sort(held, function(a, b) return a[1] > b[1] end)
for _, h in ipairs(held) do
  redis.call('RPUSH', KEYS[3], h[2])
end
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[4], ARGV[1])
return #held
"#,
    )
});

/// Refreshes a consumer's heartbeat and membership.
///
/// KEYS: heartbeat, consumer set. ARGV: consumer id, TTL (ms), value.
/// Returns 1 when the heartbeat was still alive, 0 when it had expired (a
/// reaper may have returned this consumer's messages meanwhile).
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "heartbeat",
        r#"
local alive = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return alive
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
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return 0 end
for i = 1, n do
  if redis.sha1hex(tail[n - i + 1]) ~= ARGV[i] then return 0 end
end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
return n
"#,
    )
});

/// Moves the oldest error entries back to the queue with their original
/// bytes.
///
/// KEYS: error list, queue. ARGV: how many at most.
/// Returns the entries moved (whole, for printing). Each message goes to
/// the head of the queue (as if newly produced) with the header stripped;
/// entries written by the original go-redis-dsg (`m:"…" e:"…"`) give back
/// their message. Atomic: an entry is in one list or the other.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "requeue",
        r#"
local entries = redis.call('RPOP', KEYS[1], ARGV[1])
if not entries then return {} end
for _, e in ipairs(entries) do
  local body = e
  if string.sub(e, 1, 8) == 'DSGERR1 ' then
    local nl = string.find(e, '\n', 9, true)
    if nl then body = string.sub(e, nl + 1) end
  else
    local m = string.match(e, '^m:"(.*)" e:"[^"]*"$')
    if m then body = m end
  end
  redis.call('LPUSH', KEYS[2], body)
end
return entries
"#,
    )
});

/// First step of a move to a list in another hash slot (Redis Cluster):
/// pushes each entry unless its delivery token was pushed before, so a
/// retry after an error whose outcome is unknown does not push it twice.
/// Tokens are kept with their time and dropped after the TTL, so ones left
/// by a crash between the steps do not pile up under steady traffic.
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
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local pushed = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[1], ARGV[i + 1])
    pushed = pushed + 1
  end
end
redis.call('PEXPIRE', KEYS[2], ttl)
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
  flags[i] = redis.call('HDEL', KEYS[1], ARGV[i])
end
return flags
"#,
    )
});

/// The chaos soak's external producer: pushes message number N only once,
/// however often a push is retried after an error whose outcome is unknown.
///
/// KEYS: queue, set of numbers pushed. ARGV: N, message.
/// Returns 1 when pushed, 0 when N was pushed before.
pub static PRODUCE_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "produce_once",
        r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_share_the_queue_slot() {
        for q in ["a", "orders", "{tenant}.orders", "x{y}z", "with space"] {
            let k = Keys::new(q, "errors");
            assert!(k.derived_keys_share_slot(), "{q}: {}", k.lease());
        }
        assert_eq!(Keys::new("a", "e").lease(), "{a}:lease");
        assert_eq!(Keys::new("{t}q", "e").inflight("c1"), "{t}q:inflight:c1");
        assert!(!Keys::new("a}b", "e").derived_keys_share_slot());
    }

    #[test]
    fn moved_markers_share_their_list_slot() {
        for list in ["errors", "{a}:errors", "x{y}z", "with space", "a{}b", "{}"] {
            let marker = Keys::moved_marker(list);
            assert_eq!(
                fred::util::redis_keyslot(marker.as_bytes()),
                fred::util::redis_keyslot(list.as_bytes()),
                "{list} -> {marker}"
            );
        }
    }

    #[test]
    fn acl_rule_names_only_our_keys() {
        let rule = Keys::new("a", "errors").acl_rule(None);
        assert!(
            rule.contains("~a ~errors ~{a}:* ~{errors}:moved &{a}:lease:released -@all +ping"),
            "{rule}"
        );
        assert!(!rule.contains("+@"), "{rule}");
    }

    #[test]
    fn error_entry_prefix_matches_the_lua_scripts() {
        assert_eq!(ERROR_ENTRY_PREFIX.len(), 8);
        assert!(REQUEUE.lua.contains(&format!("'{ERROR_ENTRY_PREFIX}'")));
    }
}
