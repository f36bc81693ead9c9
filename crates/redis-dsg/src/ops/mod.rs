//! The operator's one-shot commands: `errors`, `status`, `config`,
//! `acl-rule` and `return-inflight`. Each returns `Result<(), CliError>`; [`CliError`] owns the
//! exit code, printed once in `main`.

mod acl;
mod drain;
mod entries;
mod errors;
mod exit;
/// The exit codes, for callers that exit without a [`CliError`].
pub mod exit_codes {
    pub use super::exit::{CONFIG, FAILURE, UNAVAILABLE};
}
mod return_inflight;
mod status;
mod stdout;

pub use acl::acl_rule_command;
pub use errors::errors_command;
pub use exit::CliError;
pub use return_inflight::return_inflight_command;
pub use status::status_command;

use crate::config::Config;
use crate::redis::Redis;

/// Connects for a one-shot command (fails fast: exit 69).
async fn connect_once(config: &Config) -> Result<Redis, CliError> {
    Redis::connect_once(&config.redis)
        .await
        .map_err(|source| CliError::Unreachable {
            url: config.redis.url.to_string(),
            source,
        })
}
