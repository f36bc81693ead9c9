//! `redis-dsg errors count|list|drain|requeue`: the operator's tools for the
//! error list. Entries are shown oldest first.
//!
//! None of them loses an entry when interrupted: `list` only reads; `drain`
//! claims batches and removes each once its reader has it
//! ([`super::drain`]); `requeue` reads and decodes a batch, then moves it
//! back to the queue in one atomic script that checks the entries are still
//! the ones read ([`REQUEUE`]).

use fred::prelude::*;
use fred::types::Value;

use super::CliError;
use super::entries::{ErrorsCommandError, Format, render};
use super::stdout::ConfirmedStdout;
use crate::cli::ErrorsCommand;
use crate::config::Config;
use crate::redis::scripts;
use crate::redis::{Keys, Redis, RedisError, value_bytes};
use crate::service::error_entry::{self, ErrorEntry};

/// Operations on one error list.
#[derive(Debug)]
pub(crate) struct ErrorList {
    redis: Redis,
    keys: Keys,
}

impl ErrorList {
    /// The error list of `keys`.
    pub(crate) fn new(redis: Redis, keys: Keys) -> ErrorList {
        ErrorList { redis, keys }
    }

    /// Number of entries.
    pub(crate) async fn count(&self) -> Result<u64, RedisError> {
        Ok(self
            .redis
            .client()
            .llen(self.keys.error_queue.as_str())
            .await?)
    }

    /// The `n` oldest entries, raw, oldest first (`LRANGE` from the right).
    async fn oldest(&self, skip: usize, n: usize) -> Result<Vec<Vec<u8>>, RedisError> {
        let start = -((skip + n) as i64);
        let stop = -(skip as i64) - 1;
        let raw: Vec<Value> = self
            .redis
            .client()
            .lrange(self.keys.error_queue.as_str(), start, stop)
            .await?;
        Ok(raw
            .into_iter()
            .rev()
            .filter_map(value_bytes)
            .map(|b| b.to_vec())
            .collect())
    }

    /// Prints up to `limit` entries without removing them; returns how many.
    pub(crate) async fn list(
        &self,
        limit: Option<usize>,
        format: Format,
        out: &mut ConfirmedStdout,
    ) -> Result<u64, ErrorsCommandError> {
        let mut printed = 0usize;
        let limit = limit.unwrap_or(usize::MAX);
        while printed < limit {
            let page = self.oldest(printed, (limit - printed).min(500)).await?;
            if page.is_empty() {
                break;
            }
            for raw in &page {
                out.write(&render(&error_entry::decode(raw), format))?;
            }
            printed += page.len();
        }
        Ok(printed as u64)
    }

    /// Moves up to `limit` entries, oldest first, back to the queue with
    /// their original bytes, printing each; returns how many.
    ///
    /// Each batch is read, decoded here (exactly as `list` shows it), then
    /// moved by one script that first checks the entries are still the
    /// oldest ones, by SHA1: a batch that changed meanwhile (another drain
    /// or requeue) moves nothing and is read again.
    pub(crate) async fn requeue(
        &self,
        limit: Option<usize>,
        format: Format,
        out: &mut ConfirmedStdout,
    ) -> Result<u64, ErrorsCommandError> {
        if self.redis.is_clustered() && !self.keys.error_queue_shares_slot() {
            return self.requeue_in_two_steps(limit, format, out).await;
        }
        let limit = limit.unwrap_or(usize::MAX);
        let mut moved = 0usize;
        let mut output_open = true;
        while moved < limit {
            let raw = self
                .oldest(0, (limit - moved).min(REQUEUE_BATCH_ENTRIES))
                .await?;
            if raw.is_empty() {
                break;
            }
            let batch = requeue_batch(&raw);
            let n = batch.len();
            let entries: Vec<(String, fred::bytes::Bytes)> = raw[..n]
                .iter()
                .zip(&batch)
                .map(|(read, e)| (sha1_hex(read), e.payload.clone().into()))
                .collect();
            if !scripts::requeue(&self.redis, &self.keys, &entries).await? {
                // The old end changed since it was read: read again.
                continue;
            }
            moved += n;
            // The entries are back in the queue already; printing is a
            // report, and a closed output must not stop the move halfway.
            for entry in &batch {
                if output_open && out.write(&render(entry, format)).is_err() {
                    output_open = false;
                }
            }
        }
        Ok(moved as u64)
    }
}

/// Entries moved by one requeue script, at most: the script's arguments
/// are two per entry, and Lua's `unpack` takes a few thousand values.
const REQUEUE_BATCH_ENTRIES: usize = 100;
/// Message bytes moved by one requeue script, at most (unless a single
/// message is larger): the messages travel as the script's arguments.
const REQUEUE_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Decodes the leading entries of `raw` (oldest first) that fit in one
/// requeue script: at least one, at most [`REQUEUE_BATCH_BYTES`] of
/// messages after that.
fn requeue_batch(raw: &[Vec<u8>]) -> Vec<ErrorEntry> {
    let mut bytes = 0usize;
    let mut batch = Vec::new();
    for entry in raw {
        let decoded = error_entry::decode(entry);
        bytes += decoded.payload.len();
        if !batch.is_empty() && bytes > REQUEUE_BATCH_BYTES {
            break;
        }
        batch.push(decoded);
    }
    batch
}

impl ErrorList {
    /// `requeue` when the error list and the queue are in different hash
    /// slots of a Redis Cluster (no script can touch both): push the oldest
    /// entry's message to the queue, then remove the entry if it is still
    /// the oldest. Interrupted in between, an entry is requeued twice at
    /// worst, never lost. `lrem` counts from the head, where `lpush` put
    /// our copy.
    async fn requeue_in_two_steps(
        &self,
        limit: Option<usize>,
        format: Format,
        out: &mut ConfirmedStdout,
    ) -> Result<u64, ErrorsCommandError> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut moved = 0usize;
        let mut output_open = true;
        while moved < limit {
            let Some(raw) = self.oldest(0, 1).await?.pop() else {
                break;
            };
            let entry = error_entry::decode(&raw);
            let _: i64 = self
                .redis
                .client()
                .lpush(
                    self.keys.queue.as_str(),
                    Value::Bytes(entry.payload.clone().into()),
                )
                .await
                .map_err(RedisError::from)?;
            let removed =
                scripts::confirm_drained(&self.redis, &self.keys, vec![sha1_hex(&raw)]).await?;
            if removed == 0 {
                // Another drain or requeue took the entry meanwhile: take
                // our copy back off the queue's head unless a consumer
                // already has it, and do not count or print it.
                let _: i64 = self
                    .redis
                    .client()
                    .lrem(
                        self.keys.queue.as_str(),
                        1,
                        Value::Bytes(entry.payload.clone().into()),
                    )
                    .await
                    .map_err(RedisError::from)?;
                continue;
            }
            moved += 1;
            if output_open && out.write(&render(&entry, format)).is_err() {
                output_open = false;
            }
        }
        Ok(moved as u64)
    }
}

/// Lowercase hex SHA1, as Redis' `redis.sha1hex` computes it.
pub(super) fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs an `errors` subcommand.
pub async fn errors_command(config: &Config, cmd: &ErrorsCommand) -> Result<(), CliError> {
    let redis = super::connect_once(config).await?;
    if let ErrorsCommand::Drain(a) = cmd {
        let keys = Keys::of(&config.redis);
        let format = if a.json { Format::Json } else { Format::Text };
        let result = super::drain::drain_command(&redis, keys, a.limit, format).await;
        redis.quit().await;
        return result;
    }
    let list = ErrorList::new(redis.clone(), Keys::of(&config.redis));
    let mut out = ConfirmedStdout::new();
    let fmt = |json: bool| if json { Format::Json } else { Format::Text };
    let result: Result<(), ErrorsCommandError> = async {
        match cmd {
            ErrorsCommand::Count(a) => {
                let n = list.count().await?;
                let line = if a.json {
                    format!("{{\"count\":{n}}}\n")
                } else {
                    format!("{n}\n")
                };
                out.write(line.as_bytes())?;
            }
            ErrorsCommand::List(a) => {
                list.list(a.limit, fmt(a.json), &mut out).await?;
            }
            ErrorsCommand::Drain(_) => {}
            ErrorsCommand::Requeue(a) => {
                let n = list.requeue(a.limit, fmt(a.json), &mut out).await?;
                eprintln!(
                    "redis-dsg: requeued {n} entries from {} to {}",
                    config.redis.error_queue, config.redis.queue
                );
            }
        }
        Ok(())
    }
    .await;
    redis.quit().await;
    match result {
        // The reader went away (`| head`): what it did not get is still in
        // Redis, which is the point; not an error worth a message.
        Err(ErrorsCommandError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_known_vectors() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha1_hex(&[b'a'; 1000]),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
    }
}
