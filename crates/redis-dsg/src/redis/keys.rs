//! Every Redis key name the service uses (the Lua scripts are in
//! [`super::scripts`]).
//!
//! Keys derived from the queue name share the queue's hash slot, so every
//! multi-key script also runs on Redis Cluster: a queue without a `{…}` hash
//! tag gets derived keys `{<queue>}:<suffix>` (Redis hashes only the part
//! inside the braces); a queue that has a tag gets `<queue>:<suffix>`.
//!
//! | key | type | what it holds |
//! |---|---|---|
//! | `<queue>` | list | messages; producers `LPUSH`, consumers take from the right |
//! | `<error_queue>` | list | error entries ([`crate::service::error_entry`]) |
//! | `{q}:lease` | string, TTL | `<holder id> <epoch>`: who generates |
//! | `{q}:epoch` | counter | the last fencing epoch handed out |
//! | `{q}:lease:released` | pub/sub channel | release notices |
//! | `{q}:consumers` | set | ids of registered consumers |
//! | `{q}:consumer:<id>` | string, TTL | a consumer's heartbeat (its details, for `status`; what decides whether it is alive) |
//! | `{q}:heartbeats` | sorted set | consumer id → when its heartbeat expires (ms, Redis' clock): the reaper's index, so finding the dead costs O(log n + dead) |
//! | `{q}:bell` | sorted set | the doorbell: at most one member, added after a push; idle consumers wait on it with `BZPOPMIN` |
//! | `{q}:inflight:<id>` | hash | delivery id → message, what a consumer holds |
//! | `lock:gen` | string, TTL | go-redis-dsg's election key, global to the database; written only in compatibility mode (`compat.original_lock`), read by `status` |
//! | `{q}:sampler` | string, TTL | id of the instance that reads the fleet's gauges |
//! | `{e}:drains` | sorted set | claims of running `errors drain` commands → deadline (ms) |
//! | `{e}:draining:<claim>` | list | error entries a drain claimed and is printing |
//!
//! (`{e}` stands for the error list's own prefix, formed from its name as
//! `{q}` is from the queue's, so the claims share the error list's slot.)

use crate::config::names::{hash_tag, key_base};

/// The election key of the original go-redis-dsg: one for the whole
/// database, whatever the queue (its own hash slot on a Cluster).
pub const ORIGINAL_LOCK: &str = "lock:gen";

/// The key names for one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The message list.
    pub queue: String,
    /// The error list.
    pub error_queue: String,
    pub(super) base: String,
}

impl Keys {
    /// Key names for `queue` and `error_queue`.
    pub fn new(queue: &str, error_queue: &str) -> Keys {
        let base = key_base(queue);
        Keys {
            queue: queue.to_string(),
            error_queue: error_queue.to_string(),
            base,
        }
    }

    /// Key names for the queue and error list `redis` configures.
    pub fn of(redis: &crate::config::RedisConfig) -> Keys {
        Keys::new(&redis.queue, &redis.error_queue)
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

    /// Consumer id → heartbeat expiry (ms, Redis' clock): where the reaper
    /// finds the dead without reading every consumer.
    pub fn heartbeats(&self) -> String {
        self.derived("heartbeats")
    }

    /// The doorbell idle consumers block on (`BZPOPMIN`); a push rings it.
    pub fn bell(&self) -> String {
        self.derived("bell")
    }

    /// A consumer's in-flight hash.
    pub fn inflight(&self, consumer: &str) -> String {
        self.derived(&format!("inflight:{consumer}"))
    }

    /// The KEYS of [`super::scripts::RETURN_INFLIGHT`] for `consumer` (a
    /// stopping consumer, the reaper and `return-inflight` all run it).
    pub fn return_inflight(&self, consumer: &str) -> Vec<String> {
        vec![
            self.heartbeat(consumer),
            self.inflight(consumer),
            self.queue.clone(),
            self.consumers(),
            self.heartbeats(),
        ]
    }

    /// The claim of the instance that reads the fleet's gauges (one at a
    /// time, `service::sampler`).
    pub fn sampler(&self) -> String {
        self.derived("sampler")
    }

    /// The registry of `errors drain` claims: claim name → deadline (ms).
    pub fn drains(&self) -> String {
        format!("{}:drains", key_base(&self.error_queue))
    }

    /// The list holding the entries of one drain claim.
    pub fn draining(&self, claim: &str) -> String {
        format!("{}:draining:{claim}", key_base(&self.error_queue))
    }

    /// Whether every derived key lands in the queue's hash slot. False only
    /// for queue names with unbalanced braces (e.g. `a}b`), which validation
    /// rejects.
    pub fn derived_keys_share_slot(&self) -> bool {
        crate::config::names::derived_keys_share_slot(&self.queue)
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
        for e in ["errors", "{a}:errors", "x{y}z", "with space"] {
            let k = Keys::new("a", e);
            for key in [k.drains(), k.draining("d1:0")] {
                assert_eq!(
                    fred::util::redis_keyslot(key.as_bytes()),
                    fred::util::redis_keyslot(e.as_bytes()),
                    "{e} -> {key}"
                );
            }
        }
        assert_eq!(Keys::new("a", "errors").drains(), "{errors}:drains");
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
}
