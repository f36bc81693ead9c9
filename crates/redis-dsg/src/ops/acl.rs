//! `redis-dsg acl-rule`: the least-privilege `ACL SETUSER` command for the
//! configured lists, as one line for `redis-cli`.

use crate::cli::AclRuleArgs;
use crate::config::{Config, ConfigError};
use crate::redis::{Keys, acl_unexpressible, cli_quote};

/// The `ACL SETUSER` command for `config`'s keys; the password is left for
/// the operator to add (`>secret`), so it never passes through here.
/// Fails (bad configuration) for a user name or list name that no ACL
/// rule can hold (whitespace, control characters); names with glob
/// characters (`*?[]\`) are escaped, arguments with quotes quoted.
pub fn acl_rule_command(config: &Config, args: &AclRuleArgs) -> Result<String, ConfigError> {
    let mut problems = Vec::new();
    let names = [
        ("--user", Some(args.user.as_str())),
        ("redis.queue", Some(config.redis.queue.as_str())),
        ("redis.error_queue", Some(config.redis.error_queue.as_str())),
        (
            "consumer.output_queue",
            config.consumer.output_queue.as_deref(),
        ),
    ];
    for (setting, name) in names {
        if let Some(why) = name.and_then(acl_unexpressible) {
            problems.push(format!(
                "{setting}: cannot be written in an ACL rule: {why}; rename it, or write the rule by hand"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let keys = Keys::of(&config.redis);
    let rule = keys.acl_rule_with(
        config.consumer.output_queue.as_deref(),
        config.compat.original_lock,
    );
    let mut line = format!("ACL SETUSER {}", cli_quote(&args.user));
    for token in rule.split(' ') {
        line.push(' ');
        line.push_str(&cli_quote(token));
    }
    line.push('\n');
    Ok(line)
}
