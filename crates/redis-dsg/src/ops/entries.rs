//! Printing error entries, shared by `errors list` and `errors drain`: the
//! formats, one entry's line, and how printing them fails.

use std::io;

use super::CliError;
use crate::redis::RedisError;
use crate::service::error_entry::ErrorEntry;

/// What can stop an errors command.
#[derive(Debug, thiserror::Error)]
pub enum ErrorsCommandError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Standard output was closed or failed (its reader went away).
    #[error("output closed: {0}")]
    Output(#[from] io::Error),
}

impl From<ErrorsCommandError> for CliError {
    fn from(e: ErrorsCommandError) -> CliError {
        match e {
            ErrorsCommandError::Redis(e) => CliError::Redis(e),
            ErrorsCommandError::Output(e) => CliError::Output(e),
        }
    }
}

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One human-readable line per entry.
    Text,
    /// One JSON object per line.
    Json,
}

/// One entry as printed: a line of text or of JSON.
pub(super) fn render(entry: &ErrorEntry, format: Format) -> Vec<u8> {
    let mut line = match format {
        Format::Text => entry.to_line(),
        Format::Json => entry.to_json().to_string(),
    }
    .into_bytes();
    line.push(b'\n');
    line
}
