//! `redis-dsg acl-rule`: the least-privilege `ACL SETUSER` command for the
//! configured lists.

use crate::cli::AclRuleArgs;
use crate::config::Config;
use crate::redis::Keys;

/// The `ACL SETUSER` command for `config`'s keys; the password is left for
/// the operator to add (`>secret`), so it never passes through here.
pub fn acl_rule_command(config: &Config, args: &AclRuleArgs) -> String {
    let keys = Keys::new(&config.redis.queue, &config.redis.error_queue);
    format!(
        "ACL SETUSER {} {}\n",
        args.user,
        keys.acl_rule_with(
            config.consumer.output_queue.as_deref(),
            config.compat.original_lock
        )
    )
}
