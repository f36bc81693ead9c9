//! The least-privilege ACL rule for the configured lists: every command the
//! service and its one-shot commands send, directly or from their Lua
//! scripts, and only the keys and the channel derived from the names.

use super::keys::{Keys, ORIGINAL_LOCK};

impl Keys {
    /// The least-privilege ACL rule (the part after `ACL SETUSER <name>`,
    /// without a password) for the service and its one-shot commands:
    /// exactly the commands they send, directly or from their Lua scripts,
    /// and only the keys and channel derived from these names. Compatibility
    /// mode off; see [`Keys::acl_rule_with`].
    pub fn acl_rule(&self, output_queue: Option<&str>) -> String {
        self.acl_rule_with(output_queue, false)
    }

    /// [`Keys::acl_rule`], for compatibility mode when `original_lock` is
    /// true: then `lock:gen` may be written too. Without it `lock:gen` is
    /// readable only (`%R~`, Redis 7), so `status` and the start-up check
    /// can see an original go-redis-dsg generating.
    pub fn acl_rule_with(&self, output_queue: Option<&str>, original_lock: bool) -> String {
        let mut keys = vec![
            format!("~{}", self.queue),
            format!("~{}", self.error_queue),
            format!("~{}:*", self.base),
        ];
        if let Some(out) = output_queue {
            keys.push(format!("~{out}"));
        }
        keys.push(if original_lock {
            format!("~{ORIGINAL_LOCK}")
        } else {
            format!("%R~{ORIGINAL_LOCK}")
        });
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
            // The sampler: the oldest message's first bytes, consumers.
            "+lindex",
            "+scard",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_rule_names_only_our_keys() {
        let rule = Keys::new("a", "errors").acl_rule(None);
        assert!(
            rule.contains(
                "~a ~errors ~{a}:* %R~lock:gen ~{errors}:moved &{a}:lease:released -@all +ping"
            ),
            "{rule}"
        );
        assert!(!rule.contains("+@"), "{rule}");
        let compat = Keys::new("a", "errors").acl_rule_with(None, true);
        assert!(
            compat.contains(" ~lock:gen ") && !compat.contains("%R~"),
            "{compat}"
        );
    }

    #[test]
    fn contract10_every_command_of_every_script_is_granted() {
        use crate::redis::scripts::*;
        let rule = Keys::new("a", "errors").acl_rule(None);
        let scripts = [
            &*ACQUIRE_LEASE,
            &*RENEW_LEASE,
            &*ACQUIRE_ORIGINAL_LOCK,
            &*RELEASE_LEASE,
            &*FENCED_PUSH,
            &*FETCH,
            &*ADOPT,
            &*ACK_OUTPUT,
            &*ACK_ERROR,
            &*RETURN_INFLIGHT,
            &*HEARTBEAT,
            &*SAMPLE,
            &*RELEASE_CLAIM,
            &*CONFIRM_DRAINED,
            &*REQUEUE,
            &*PUSH_ONCE,
            &*FORGET,
        ];
        for script in scripts {
            for call in script.lua.split("redis.call('").skip(1) {
                let command = call.split('\'').next().unwrap_or_default();
                let grant = format!(" +{}", command.to_lowercase());
                assert!(
                    rule.contains(&format!("{grant} ")) || rule.ends_with(&grant),
                    "{} calls {command}, which the ACL rule does not grant: {rule}",
                    script.name
                );
            }
        }
    }
}
