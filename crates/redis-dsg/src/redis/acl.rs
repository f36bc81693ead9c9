//! The least-privilege ACL rule for the configured lists: every command the
//! service and its one-shot commands send, directly or from their Lua
//! scripts, and only the keys and the channel derived from the names.

use super::keys::{Keys, ORIGINAL_LOCK};
use super::scripts;

/// Commands sent outside the Lua scripts (the scripts' own are read from
/// [`scripts::all`], so the rule cannot miss one).
const DIRECT_COMMANDS: &[&str] = &[
    "ping",
    "evalsha",
    "eval",
    "llen",
    "lrange",
    "lpush",
    "hmget",
    "hdel",
    "hlen",
    "smembers",
    "exists",
    "get",
    "pttl",
    // `errors drain` lists the claims of other drains to restore
    // abandoned ones.
    "zrange",
    "subscribe",
    "select",
    "cluster|slots",
    "cluster|shards",
    "cluster|info",
    // Sent by fred itself: the primary check after a Sentinel lookup, and
    // the redirect during Cluster resharding.
    "role",
    "asking",
    // fred reads the server version at every connection (and warns at
    // each one if it cannot).
    "info",
    // Clearing move markers, and undoing a cross-slot requeue that lost a
    // race (Cluster).
    "zrem",
    "lrem",
    // Idle consumers wait on the doorbell; one instance rings it for
    // pushes it learns of through client-side-caching invalidations, on a
    // RESP3 connection (fred opens it with HELLO).
    "bzpopmin",
    "zadd",
    "client|tracking",
    "hello",
];

impl Keys {
    /// The least-privilege ACL rule (the part after `ACL SETUSER <name>`,
    /// without a password) for the service and its one-shot commands:
    /// exactly the commands they send, directly or from their Lua scripts,
    /// and only the keys and channel derived from these names. Names are
    /// escaped for Redis' glob patterns (`*?[]\`); names with whitespace or
    /// control characters cannot be expressed at all (Redis refuses spaces
    /// in patterns): check them first with [`acl_unexpressible`].
    /// Compatibility mode off; see [`Keys::acl_rule_with`].
    pub fn acl_rule(&self, output_queue: Option<&str>) -> String {
        self.acl_rule_with(output_queue, false)
    }

    /// [`Keys::acl_rule`], for compatibility mode when `original_lock` is
    /// true: then `lock:gen` may be written too. Without it `lock:gen` is
    /// readable only (`%R~`, Redis 7), so `status` and the start-up check
    /// can see an original go-redis-dsg generating.
    pub fn acl_rule_with(&self, output_queue: Option<&str>, original_lock: bool) -> String {
        let mut keys = vec![
            format!("~{}", glob_escape(&self.queue)),
            format!("~{}", glob_escape(&self.error_queue)),
            format!("~{}:*", glob_escape(&self.base)),
        ];
        if let Some(out) = output_queue {
            keys.push(format!("~{}", glob_escape(out)));
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
                keys.push(format!("~{}", glob_escape(&Keys::moved_marker(list))));
            }
        }
        // The claims of `errors drain`, in the error list's slot.
        keys.push(format!("~{}", glob_escape(&self.drains())));
        keys.push(format!("~{}*", glob_escape(&self.draining(""))));
        let mut commands: Vec<String> = DIRECT_COMMANDS.iter().map(|c| c.to_string()).collect();
        // Run by the Lua scripts, which use the caller's rights.
        for script in scripts::all() {
            for c in script.commands() {
                let c = c.to_ascii_lowercase();
                if !commands.contains(&c) {
                    commands.push(c);
                }
            }
        }
        let commands: Vec<String> = commands.iter().map(|c| format!("+{c}")).collect();
        format!(
            "on resetkeys resetchannels {} &{} -@all {}",
            keys.join(" "),
            glob_escape(&self.release_channel()),
            commands.join(" ")
        )
    }
}

/// Escapes the characters Redis' ACL patterns (glob, `stringmatchlen`)
/// treat specially, so a pattern matches exactly `name`.
pub(crate) fn glob_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Why `name` cannot appear in an ACL pattern or as a user name, if it
/// cannot: Redis refuses whitespace there, and control characters would
/// not survive being pasted.
pub(crate) fn acl_unexpressible(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.chars().any(char::is_whitespace) {
        Some("Redis ACL rules cannot hold whitespace")
    } else if name.chars().any(char::is_control) {
        Some("it holds control characters")
    } else {
        None
    }
}

/// One argument as `redis-cli` reads it: as is when plain, else in double
/// quotes with `"`, `\` and non-printable bytes escaped (`sdssplitargs`).
pub(crate) fn cli_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'');
    if plain {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    for b in arg.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_rule_names_only_our_keys() {
        let rule = Keys::new("a", "errors").acl_rule(None);
        assert!(
            rule.contains(
                "~a ~errors ~{a}:* %R~lock:gen ~{errors}:moved ~{errors}:drains ~{errors}:draining:* &{a}:lease:released -@all +ping"
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
        let rule = Keys::new("a", "errors").acl_rule(None);
        for script in scripts::all() {
            for c in script.commands() {
                let grant = format!(" +{}", c.to_ascii_lowercase());
                assert!(
                    rule.split(' ').any(|t| format!(" {t}") == grant),
                    "{}: {c} missing from {rule}",
                    script.name
                );
            }
        }
        assert!(!rule.contains("+incr"), "no script increments: {rule}");
    }

    #[test]
    fn acl_rule_escapes_glob_characters() {
        let rule = Keys::new("q*", "e[1]").acl_rule(Some("o?\\x"));
        assert!(rule.contains(r"~q\* "), "{rule}");
        assert!(rule.contains(r"~e\[1\] "), "{rule}");
        assert!(rule.contains(r"~o\?\\x "), "{rule}");
        assert!(rule.contains(r"~{q\*}:* "), "{rule}");
        assert!(rule.contains(r"&{q\*}:lease:released "), "{rule}");
        assert_eq!(
            acl_unexpressible("my queue"),
            Some("Redis ACL rules cannot hold whitespace")
        );
        assert_eq!(
            acl_unexpressible("a\u{1}"),
            Some("it holds control characters")
        );
        assert_eq!(acl_unexpressible("q*"), None);
        assert_eq!(cli_quote("~a"), "~a");
        assert_eq!(cli_quote(r#"~a"b\c"#), r#""~a\"b\\c""#);
        assert_eq!(cli_quote("it's"), r#""it's""#);
        assert_eq!(cli_quote("é"), r#""\xc3\xa9""#);
    }
}
