//! `redis-dsg errors drain`: prints the error list and removes what its
//! reader got (DESIGN.md, contract 8).
//!
//! A drain claims a batch (moves it from the error list into a claim list
//! of its own, [`DRAIN_CLAIM`]), prints it, and deletes the claim only once
//! the reader has it ([`DRAIN_ACK`]; for a pipe see
//! [`ConfirmedStdout`]: the reader must have come back for the next
//! batch). So concurrent drains print disjoint entries, and an entry is in
//! the list, in a claim or delivered. A drain whose reader went away, or
//! that is interrupted, puts its open claims back ([`DRAIN_RESTORE`]) and
//! exits 1 saying how many it drained; one that was killed leaves claims
//! that the next drain restores once their deadline passed. A reader that
//! stops early may see one batch again next time; it never loses one.
//!
//! Batches start at one entry and double up to [`MAX_BATCH_ENTRIES`] (or
//! [`MAX_BATCH_BYTES`] of output), so `| head` costs little and a long
//! drain into `cat > file` moves tens of thousands of entries a second.

use std::time::Duration;

use fred::prelude::*;

use super::CliError;
use super::entries::{ErrorsCommandError, Format, render};
use super::stdout::ConfirmedStdout;
use crate::redis::scripts;
use crate::redis::{Keys, Redis, RedisError};
use crate::service::error_entry;

/// Entries claimed at once, at most.
pub(crate) const MAX_BATCH_ENTRIES: usize = 1_000;
/// Bytes of output per batch above which batches shrink again.
pub(crate) const MAX_BATCH_BYTES: usize = 512 * 1024;
/// How long a claim lives in Redis without being confirmed or kept alive:
/// after that, another drain may put it back.
const CLAIM_TTL_MS: u64 = 60_000;
/// How often the claims of a drain waiting for its reader are kept alive.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long the reader must still be there after taking the last batch.
const LAST_BATCH_GRACE: Duration = Duration::from_millis(100);

/// One claimed batch.
#[derive(Debug)]
struct Claim {
    member: String,
    entries: usize,
}

/// One run of `errors drain`.
#[derive(Debug)]
pub(crate) struct Drain {
    redis: Redis,
    keys: Keys,
    id: String,
    seq: u64,
    /// Claims not yet confirmed, oldest first.
    open: Vec<Claim>,
    /// Entries removed for good.
    pub drained: u64,
    /// Entries printed whose claim had expired and been put back meanwhile
    /// (they show again).
    pub shown_again: u64,
}

impl Drain {
    /// A drain of `keys`' error list.
    pub(crate) fn new(redis: Redis, keys: Keys) -> Drain {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Drain {
            redis,
            keys,
            id,
            seq: 0,
            open: Vec::new(),
            drained: 0,
            shown_again: 0,
        }
    }

    /// Puts back the claims of drains that were killed (their deadline
    /// passed); returns how many entries went back.
    pub(crate) async fn restore_abandoned(&self) -> Result<u64, RedisError> {
        let members: Vec<String> = self
            .redis
            .client()
            .zrange(self.keys.drains(), 0, -1, None, false, None, false)
            .await?;
        let mut back = 0;
        for member in members {
            back += self.restore(&member, false).await?.unwrap_or(0);
        }
        Ok(back)
    }

    /// Puts back every claim of this drain not confirmed yet; returns how
    /// many entries went back.
    pub(crate) async fn restore_own(&mut self) -> Result<u64, RedisError> {
        let mut back = 0;
        while let Some(claim) = self.open.first() {
            back += self
                .restore(&claim.member.clone(), true)
                .await?
                .unwrap_or(0);
            self.open.remove(0);
        }
        Ok(back)
    }

    async fn restore(&self, member: &str, force: bool) -> Result<Option<u64>, RedisError> {
        scripts::drain_restore(&self.redis, &self.keys, member, force).await
    }

    /// Claims up to `n` of the oldest entries; empty when there are none.
    async fn claim(&mut self, n: usize) -> Result<Vec<Vec<u8>>, RedisError> {
        let member = format!("{}:{}", self.id, self.seq);
        self.seq += 1;
        // Recorded before the call: if its reply is lost, the claim may
        // exist all the same, and it must be put back with the others.
        self.open.push(Claim {
            member: member.clone(),
            entries: 0,
        });
        let entries =
            scripts::drain_claim(&self.redis, &self.keys, &member, n as u64, CLAIM_TTL_MS).await?;
        if entries.is_empty() {
            self.open.pop();
        } else if let Some(last) = self.open.last_mut() {
            last.entries = entries.len();
        }
        Ok(entries)
    }

    /// Confirms the oldest open claim: its entries reached the reader.
    async fn ack_oldest(&mut self) -> Result<(), RedisError> {
        let Some(claim) = self.open.first() else {
            return Ok(());
        };
        if scripts::drain_ack(&self.redis, &self.keys, &claim.member).await? {
            self.drained += claim.entries as u64;
        } else {
            self.shown_again += claim.entries as u64;
        }
        self.open.remove(0);
        Ok(())
    }

    /// Pushes the deadlines of the open claims back.
    async fn keep_alive(&self) -> Result<(), RedisError> {
        if self.open.is_empty() {
            return Ok(());
        }
        scripts::drain_keep(
            &self.redis,
            &self.keys,
            CLAIM_TTL_MS,
            self.open.iter().map(|c| c.member.as_str()),
        )
        .await
    }

    /// Waits for `reader` (a wait on the pipe's reader), keeping the open
    /// claims alive meanwhile.
    async fn waiting<F>(&self, reader: F) -> Result<(), ErrorsCommandError>
    where
        F: std::future::Future<Output = std::io::Result<()>>,
    {
        tokio::pin!(reader);
        loop {
            tokio::select! {
                r = &mut reader => return Ok(r?),
                _ = tokio::time::sleep(KEEP_ALIVE) => self.keep_alive().await?,
            }
        }
    }

    /// Prints and removes up to `limit` entries, oldest first. On error
    /// the open claims are still open: call [`Drain::restore_own`].
    pub(crate) async fn run(
        &mut self,
        limit: Option<usize>,
        format: Format,
        out: &ConfirmedStdout,
    ) -> Result<u64, ErrorsCommandError> {
        out.grow_pipe();
        let limit = limit.unwrap_or(usize::MAX);
        let mut claimed = 0usize;
        let mut size = 1usize;
        while claimed < limit {
            let batch = self.claim(size.min(limit - claimed)).await?;
            if batch.is_empty() {
                break;
            }
            claimed += batch.len();
            let mut bytes = Vec::new();
            for raw in &batch {
                bytes.extend(render(&error_entry::decode(raw), format));
            }
            size = if bytes.len() > MAX_BATCH_BYTES {
                (size / 2).max(1)
            } else {
                (size * 2).min(MAX_BATCH_ENTRIES)
            };
            // The previous batch must be read whole before this one goes
            // in, so that the reader's coming back for this one proves it
            // dealt with that one.
            let previous_open = self.open.len() > 1;
            if previous_open {
                self.waiting(out.read_all()).await?;
            }
            let written = bytes.len();
            out.write_detached(bytes).await?;
            if previous_open {
                self.waiting(out.reader_moved_on(written)).await?;
                self.ack_oldest().await?;
            } else if !out.is_pipe() {
                self.ack_oldest().await?;
            }
        }
        if !self.open.is_empty() {
            self.waiting(out.reader_kept_everything(LAST_BATCH_GRACE))
                .await?;
            self.ack_oldest().await?;
        }
        Ok(self.drained)
    }
}

/// `errors drain`: runs a [`Drain`] until it is done, its reader goes
/// away or a signal arrives; whatever it claimed and did not deliver goes
/// back to the error list before it exits.
pub(super) async fn drain_command(
    redis: &Redis,
    keys: Keys,
    limit: Option<usize>,
    format: Format,
) -> Result<(), CliError> {
    let list = keys.error_queue.clone();
    let mut drain = Drain::new(redis.clone(), keys);
    let back = drain.restore_abandoned().await?;
    if back > 0 {
        eprintln!("redis-dsg: put {back} entries of an interrupted drain back into {list}");
    }
    let out = ConfirmedStdout::new();
    let stopped = tokio::select! {
        r = drain.run(limit, format, &out) => r.err().map(|e| match e {
            ErrorsCommandError::Redis(e) => Err(e),
            ErrorsCommandError::Output(e) => Ok(format!("the reader went away ({e})")),
        }),
        signal = crate::service::shutdown::signal() => Some(Ok(format!("interrupted by {signal}"))),
    };
    let Some(why) = stopped else {
        eprintln!("redis-dsg: drained {} entries from {list}", drain.drained);
        report_shown_again(&drain);
        return Ok(());
    };
    // A failure to put back must not hide why the drain stopped; the next
    // drain puts back what is left once the claim's deadline passed.
    let restored = match drain.restore_own().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "redis-dsg: could not put the claimed entries back ({e}); the next `errors drain` does once {} s passed",
                CLAIM_TTL_MS / 1000
            );
            0
        }
    };
    report_shown_again(&drain);
    match why {
        Ok(why) => Err(CliError::Drain {
            why,
            drained: drain.drained,
            restored,
        }),
        Err(e) => {
            eprintln!(
                "redis-dsg: drained {} entries; {restored} put back in {list}",
                drain.drained
            );
            Err(CliError::Redis(e))
        }
    }
}

fn report_shown_again(drain: &Drain) {
    if drain.shown_again > 0 {
        eprintln!(
            "redis-dsg: {} printed entries had been put back meanwhile (their claim expired): they will show again",
            drain.shown_again
        );
    }
}
