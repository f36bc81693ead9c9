//! The [`Script`] type and the prelude every script is compiled with.

/// How a script behaves when Redis is at `maxmemory` (contract 12): its
/// Redis 7 shebang flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Runs at `maxmemory` (`flags=allow-oom`): a script that frees memory
    /// or moves it with at most a small, bounded growth (a fetch, an
    /// acknowledgement, a heartbeat, a return, a drain). Without it a full
    /// Redis would wedge the fleet: consumers could not take, acknowledge
    /// or heartbeat, so nothing would ever free memory again.
    Runs,
    /// Refused as a whole at `maxmemory`, before it runs (a shebang without
    /// `allow-oom`): the generator's push, the one script that only adds.
    Refused,
    /// Writes nothing (`flags=no-writes`): runs at `maxmemory` anyway.
    ReadOnly,
}

impl Memory {
    fn shebang(self) -> &'static str {
        match self {
            Memory::Runs => "#!lua flags=allow-oom\n",
            Memory::Refused => "#!lua\n",
            Memory::ReadOnly => "#!lua flags=no-writes\n",
        }
    }
}

/// A Lua script with its SHA1, run with `EVALSHA` and, when the server does
/// not know it yet (first use, Redis restart, another Cluster node), with
/// `EVAL`, which also caches it there.
#[derive(Debug)]
pub struct Script {
    /// A short name for logs and metrics: the static's name in lower case.
    pub name: &'static str,
    /// How it behaves at `maxmemory`.
    pub memory: Memory,
    /// The Lua source as sent to Redis 7 and later: the shebang of
    /// [`Script::memory`], [`GUARD`], then the body. A shebang script must
    /// name every key it touches in KEYS (they all do).
    pub lua: String,
    /// The SHA1 of [`Script::lua`].
    pub sha1: String,
    /// The same without the shebang, for servers before Redis 7.0, which
    /// cannot compile one (there a full Redis refuses a script at its first
    /// write that grows memory, as before).
    pub lua_without_flags: String,
    /// The SHA1 of [`Script::lua_without_flags`].
    pub sha1_without_flags: String,
}

impl Script {
    /// A script named `name` (for logs and metrics) with body `lua`; the
    /// body may call `guard` (see [`GUARD`]).
    pub fn new(name: &'static str, memory: Memory, lua: &str) -> Script {
        let sha1_of = |lua: &str| {
            fred::types::scripts::Script::from_lua(lua)
                .sha1()
                .to_string()
        };
        let lua_without_flags = format!("{GUARD}{lua}");
        let lua = format!("{}{lua_without_flags}", memory.shebang());
        Script {
            name,
            memory,
            sha1: sha1_of(&lua),
            lua,
            sha1_without_flags: sha1_of(&lua_without_flags),
            lua_without_flags,
        }
    }

    /// The body, without the shebang and [`GUARD`].
    pub fn body(&self) -> &str {
        &self.lua_without_flags[GUARD.len()..]
    }

    /// The Redis commands the script's body runs (upper case, each once;
    /// guarded ones first, in order of first use), as written in
    /// `guard('CMD'`, `redis.call('CMD'` and `redis.pcall('CMD'`. The ACL rule must grant
    /// each (scripts run with the caller's rights).
    pub fn commands(&self) -> Vec<String> {
        let body = self.body();
        let mut out: Vec<String> = Vec::new();
        for opener in ["guard('", "redis.call('", "redis.pcall('"] {
            for (at, _) in body.match_indices(opener) {
                let rest = &body[at + opener.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                if !name.is_empty() && !out.contains(&name.to_ascii_uppercase()) {
                    out.push(name.to_ascii_uppercase());
                }
            }
        }
        out
    }
}

/// Prepended to every script: `guard(cmd, key, …)` runs a command and, on
/// an error reply, raises it again with the command and key appended
/// (`WRONGTYPE … [HSET {a}:inflight:c1]`). Redis itself names neither the
/// key of a `WRONGTYPE` nor the command a script's ACL check refused; the
/// error's first word (`WRONGTYPE`, `ERR`, `NOPERM`) stays first, so
/// clients classify it as before. `key` may be nil (`TIME`); `LMOVE`
/// names both its keys.
pub const GUARD: &str = r#"local function guard(cmd, key, ...)
  local r
  if key == nil then r = redis.pcall(cmd) else r = redis.pcall(cmd, key, ...) end
  if type(r) == 'table' and r.err then
    local where = cmd
    if key ~= nil then where = cmd .. ' ' .. key end
    if cmd == 'LMOVE' then where = where .. ' ' .. select(1, ...) end
    return error({err = r.err .. ' [' .. where .. ']'})
  end
  return r
end
"#;

#[cfg(test)]
mod tests {
    use super::super::{FETCH, all};

    /// Every `pub static NAME: LazyLock<Script>` of this module is in
    /// [`all`] under its own name, so the contract 10 tests and the ACL
    /// rule cannot miss a script someone adds.
    #[test]
    fn contract10_every_script_is_registered() {
        // Every file of the scripts module: add a new one here.
        let sources = [
            include_str!("../scripts.rs"),
            include_str!("ack.rs"),
            include_str!("chores.rs"),
            include_str!("consumer.rs"),
            include_str!("drain.rs"),
            include_str!("errors.rs"),
            include_str!("lease.rs"),
        ];
        let mut declared: Vec<String> = Vec::new();
        for src in sources {
            for line in src.lines() {
                let Some(rest) = line.strip_prefix("pub static ") else {
                    continue;
                };
                if let Some((name, ty)) = rest.split_once(':')
                    && ty.trim_start().starts_with("LazyLock<Script>")
                {
                    declared.push(name.trim().to_ascii_lowercase());
                }
            }
        }
        declared.sort();
        let mut registered: Vec<String> = all().iter().map(|s| s.name.to_string()).collect();
        registered.sort();
        assert_eq!(
            declared, registered,
            "every script must be listed in scripts::all() under its static's name"
        );
        let mut shas: Vec<&str> = all().iter().map(|s| s.sha1.as_str()).collect();
        shas.sort();
        shas.dedup();
        assert_eq!(shas.len(), all().len(), "two scripts with one body");
    }

    /// Every command a script runs goes through `guard` (so its errors name
    /// the command and key) or is tidying in `redis.pcall`.
    #[test]
    fn contract10_scripts_name_their_failures() {
        for s in all() {
            let body = s.body();
            assert!(
                !body.contains("redis.call("),
                "{}: use guard() so errors name the command and key",
                s.name
            );
            assert!(!s.commands().is_empty(), "{}", s.name);
        }
        assert_eq!(
            FETCH.commands(),
            ["LRANGE", "LTRIM", "SET", "SADD", "TIME", "ZADD", "HSET"],
            "guarded commands in order of first use"
        );
    }
}
