//! How the names of the keys the service derives from a queue name are
//! formed, so that they all share the queue's hash slot (Redis Cluster): a
//! queue without a `{…}` hash tag gets derived keys `{<queue>}:<suffix>`
//! (Redis hashes only the part inside the braces); a queue that has a tag
//! gets `<queue>:<suffix>`. The key names themselves are in
//! `crate::redis::keys`; validation uses the rule here to refuse queue names
//! whose braces would break it.

/// The hash tag Redis would use for `key`: the text between the first `{`
/// and the first `}` after it, when not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

/// The common prefix of every key derived from `queue`.
pub fn key_base(queue: &str) -> String {
    if hash_tag(queue).is_some() {
        queue.to_string()
    } else {
        format!("{{{queue}}}")
    }
}

/// Whether the keys derived from `queue` land in its hash slot. False only
/// for names with unbalanced braces (e.g. `a}b`). Derived suffixes hold no
/// braces (consumer ids are `[A-Za-z0-9.-]`), so one derived key decides.
pub fn derived_keys_share_slot(queue: &str) -> bool {
    let derived = format!("{}:lease", key_base(queue));
    fred::util::redis_keyslot(queue.as_bytes()) == fred::util::redis_keyslot(derived.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_redis() {
        assert_eq!(hash_tag("{a}:x"), Some("a"));
        assert_eq!(hash_tag("x{y}z"), Some("y"));
        assert_eq!(hash_tag("a{}b"), None);
        assert_eq!(hash_tag("plain"), None);
        assert_eq!(key_base("a"), "{a}");
        assert_eq!(key_base("{t}q"), "{t}q");
        assert!(derived_keys_share_slot("with space"));
        assert!(!derived_keys_share_slot("a}b"));
    }
}
