//! Why a command failed, and the process exit code for it (from BSD
//! `sysexits.h` where one fits): 0 ok, 78 bad configuration, 69 Redis
//! unavailable for a one-shot command, 1 anything else. `main` prints the
//! error once and exits with [`CliError::exit_code`].

use std::process::ExitCode;

use crate::config::{ConfigError, RenderError};
use crate::redis::RedisError;
use crate::service::AppError;

/// Bad configuration (`EX_CONFIG`): nothing was started.
pub const CONFIG: u8 = 78;
/// A one-shot command could not reach Redis (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Anything else went wrong.
pub const FAILURE: u8 = 1;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A one-shot command could not connect.
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        /// The address, redacted.
        url: String,
        /// Why.
        source: RedisError,
    },
    /// Redis failed during a command.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Standard output failed.
    #[error("output closed: {0}")]
    Output(#[from] std::io::Error),
    /// The command refused to act, or could not finish; the message says
    /// why and what to do.
    #[error("{0}")]
    Refused(String),
    /// `status --check` found problems (each already printed).
    #[error("check failed: {}", .0.join("; "))]
    CheckFailed(Vec<String>),
    /// The service could not start.
    #[error("cannot start: {0}")]
    Start(#[from] AppError),
    /// `errors drain` stopped before the end (its reader went away, a
    /// signal); what it had claimed and not delivered went back.
    #[error("{why}: drained {drained} entries; {restored} put back in the error list")]
    Drain {
        /// What stopped it.
        why: String,
        /// Entries removed after their reader had them.
        drained: u64,
        /// Entries put back.
        restored: u64,
    },
    /// `redis-dsg config` could not render the configuration.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The service did not stop within its shutdown timeout.
    #[error("the shutdown timeout ran out before everything stopped")]
    ShutdownTimedOut,
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Config(_) => CONFIG,
            CliError::Unreachable { .. } => UNAVAILABLE,
            CliError::Redis(RedisError::Unavailable(_)) => UNAVAILABLE,
            CliError::Redis(_)
            | CliError::Output(_)
            | CliError::Refused(_)
            | CliError::CheckFailed(_)
            | CliError::Start(_)
            | CliError::Render(_)
            | CliError::Drain { .. }
            | CliError::ShutdownTimedOut => FAILURE,
        })
    }
}
