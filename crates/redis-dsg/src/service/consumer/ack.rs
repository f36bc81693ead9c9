//! Acknowledging processed messages in batches: successes are removed (or
//! handed over to the output list in the same step,
//! [`crate::redis::scripts::ACK_OUTPUT`]), failures move to the error list
//! behind their entry header ([`crate::redis::scripts::ACK_ERROR`]); lists
//! in another Cluster slot take two steps. Every acknowledgement is
//! idempotent, so a retry after an error whose outcome is unknown is safe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ack, Consumer};
use crate::redis::scripts;
use crate::redis::{Keys, Operation, RedisError, value_bytes};
use crate::service::backoff::Backoff;
use crate::service::metrics::Outcome;

/// Routes each acknowledgement to the acker of its kind.
#[derive(Debug, Clone)]
pub(super) struct AckSender {
    pub(super) ok: mpsc::UnboundedSender<Ack>,
    pub(super) err: mpsc::UnboundedSender<Ack>,
}

impl AckSender {
    pub(super) fn send(&self, ack: Ack) {
        let tx = if ack.header.is_some() {
            &self.err
        } else {
            &self.ok
        };
        // The ackers live until every sender is gone.
        let _ = tx.send(ack);
    }
}

/// Acknowledgements per call, at most.
const ACK_BATCH: usize = 1024;

/// Under steady traffic the acker of successes calls Redis at most this
/// often (unless a batch is full): a round trip costs Redis tens of µs of
/// CPU in system calls whatever it carries, so one call per message made
/// the round trips, not the work, the cost of a message at a moderate rate
/// (contract 9). A lone acknowledgement after a quiet spell goes at once,
/// and so do [`WORTH_A_CALL`] of them.
/// The price: a finished message stays in flight up to this much longer
/// (a crash then repeats it; it is never lost).
const OK_SPACING: Duration = Duration::from_millis(250);

/// The same for the error list, which nobody waits on: invalid messages
/// are a few per cent of the traffic, so they gather longer.
const ERROR_SPACING: Duration = Duration::from_secs(1);

/// Enough acknowledgements for a call to carry its cost: gathering stops
/// here, so a backlog (or its last batch) is acknowledged without waiting.
const WORTH_A_CALL: usize = 32;

/// Adds acknowledgements to `batch` until `until` or until it holds
/// [`WORTH_A_CALL`].
async fn gather(rx: &mut mpsc::UnboundedReceiver<Ack>, batch: &mut Vec<Ack>, until: Instant) {
    while batch.len() < WORTH_A_CALL {
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => return,
            n = rx.recv_many(batch, ACK_BATCH - batch.len()) => if n == 0 { return },
        }
    }
}

impl Consumer {
    /// Sends acknowledgements (all successes or all failures) in batches;
    /// permits go back when their acknowledgement reached Redis.
    pub(super) async fn acker(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Ack>,
        give_up: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut last_call: Option<Instant> = None;
        while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
            if let Some(last) = last_call {
                let spacing = if batch[0].header.is_some() {
                    ERROR_SPACING
                } else {
                    OK_SPACING
                };
                gather(&mut rx, &mut batch, last + spacing).await;
            }
            last_call = Some(Instant::now());
            let errors = batch[0].header.is_some();
            let (this, acks) = (&self, &batch);
            self.retry_ack(Operation::Ack, acks, &give_up, |attempt| async move {
                if errors {
                    this.ack_errors(acks, attempt).await
                } else {
                    this.ack_oks(acks, attempt).await
                }
            })
            .await;
            self.metrics.add_in_flight(-(batch.len() as i64));
            batch.clear();
        }
    }

    /// Runs `attempt` until it succeeds or `give_up` fires.
    async fn retry_ack<F, Fut>(
        &self,
        operation: Operation,
        acks: &[Ack],
        give_up: &CancellationToken,
        attempt: F,
    ) where
        F: Fn(u32) -> Fut,
        Fut: std::future::Future<Output = Result<(), RedisError>>,
    {
        if acks.is_empty() {
            return;
        }
        let mut backoff = Backoff::for_redis();
        loop {
            let n = backoff.failures() + 1;
            // Past the deadline nothing is tried or awaited any more: the
            // messages stay in our hash and go back with our return.
            let result = tokio::select! {
                _ = give_up.cancelled() => return,
                r = attempt(n) => r,
            };
            match result {
                Ok(()) => {
                    self.health.succeeded(operation);
                    return;
                }
                Err(e) => {
                    self.health.failed(operation, &e);
                    if backoff.fail_and_wait(&e, give_up).await {
                        // They stay in our hash; our return (or a reaper)
                        // puts them back in the queue.
                        tracing::warn!(pending = acks.len(), "giving up on acknowledgements");
                        return;
                    }
                }
            }
        }
    }

    /// Acknowledges successes (idempotent). After a failed attempt whose
    /// outcome is unknown, a message found gone was most likely removed by
    /// that attempt, so it counts as processed rather than late.
    async fn ack_oks(&self, acks: &[Ack], attempt: u32) -> Result<(), RedisError> {
        let ids: Vec<u64> = acks.iter().map(|a| a.id).collect();
        let removed: u64 = match &self.cfg.output_queue {
            Some(output) if self.split_output => {
                let (moved, _) = self
                    .move_in_two_steps(
                        output,
                        0,
                        &acks.iter().map(|a| (a.id, "")).collect::<Vec<_>>(),
                    )
                    .await?;
                moved.iter().filter(|m| **m).count() as u64
            }
            // The hand-off and the acknowledgement are one step.
            Some(output) => {
                scripts::ack_output(&self.redis, &self.keys, &self.id, output, &ids).await?
            }
            None => {
                self.redis
                    .client()
                    .hdel(self.keys.inflight(&self.id).as_str(), ids)
                    .await?
            }
        };
        let n = acks.len() as u64;
        let removed = removed.min(n);
        if attempt == 1 {
            self.record(Outcome::Ok, removed);
            self.metrics.record_late_acks(n - removed);
        } else {
            self.record(Outcome::Ok, n);
        }
        Ok(())
    }

    /// Moves failures to the error list (idempotent: a message no longer in
    /// the hash is not pushed again).
    async fn ack_errors(&self, acks: &[Ack], attempt: u32) -> Result<(), RedisError> {
        let max_entries = self.max_error_entries;
        let items: Vec<(u64, &str)> = acks.iter().map(|a| (a.id, a.error_header())).collect();
        let (trimmed, flags): (u64, Vec<bool>) = if self.split_errors {
            let (flags, trimmed) = self
                .move_in_two_steps(&self.keys.error_queue, max_entries, &items)
                .await?;
            (trimmed, flags)
        } else {
            let moved =
                scripts::ack_error(&self.redis, &self.keys, &self.id, max_entries, &items).await?;
            (moved.trimmed, moved.moved)
        };
        self.error_entries_trimmed(trimmed);
        let mut late = 0;
        let mut counts = [0u64; Outcome::ALL.len()];
        for (flag, a) in flags.iter().zip(acks) {
            if *flag || attempt > 1 {
                counts[a.outcome as usize] += 1;
            } else {
                late += 1;
            }
        }
        for (outcome, n) in Outcome::ALL.iter().zip(counts) {
            self.record(*outcome, n);
        }
        self.metrics.record_late_acks(late);
        Ok(())
    }

    /// Moves held messages to `target`, a list in another hash slot on Redis
    /// Cluster, each behind its prefix, in two steps: push each one unless
    /// its delivery token is marked as pushed already (so retrying after an
    /// error whose outcome is unknown does not push it again), then forget
    /// it. A crash between the steps leaves a message pushed and still held;
    /// the reaper delivers it again, the duplicate at-least-once allows.
    /// `target` is kept within `max_entries` (0: no bound), oldest trimmed.
    /// Returns, per item, whether this consumer still held it, and how many
    /// entries were trimmed.
    async fn move_in_two_steps(
        &self,
        target: &str,
        max_entries: u64,
        items: &[(u64, &str)],
    ) -> Result<(Vec<bool>, u64), RedisError> {
        /// Long past any retry of one move; markers left by a crash between
        /// the steps are dropped after it.
        const MARKER_TTL_MS: u64 = 3_600_000;
        let ids: Vec<u64> = items.iter().map(|(id, _)| *id).collect();
        let bodies: Vec<Value> = self
            .redis
            .client()
            .hmget(self.keys.inflight(&self.id).as_str(), ids.clone())
            .await?;
        let marker = Keys::moved_marker(target);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut entries = Vec::new();
        for ((id, prefix), body) in items.iter().zip(bodies) {
            if let Some(body) = value_bytes(body) {
                let token = format!("{}:{id}", self.id);
                let mut entry = Vec::with_capacity(prefix.len() + body.len());
                entry.extend_from_slice(prefix.as_bytes());
                entry.extend_from_slice(&body);
                entries.push((token, entry.into()));
            }
        }
        let tokens: Vec<String> = entries.iter().map(|(t, _)| t.clone()).collect();
        let mut trimmed = 0;
        if !entries.is_empty() {
            (_, trimmed) = scripts::push_once(
                &self.redis,
                target,
                &marker,
                now_ms,
                MARKER_TTL_MS,
                max_entries,
                entries,
            )
            .await?;
        }
        let flags = scripts::forget(&self.redis, &self.keys, &self.id, &ids).await?;
        if !tokens.is_empty() {
            // Only tidiness: a marker left behind is dropped after the TTL.
            if let Err(e) = self
                .redis
                .client()
                .zrem::<i64, _, _>(marker.as_str(), tokens)
                .await
            {
                tracing::debug!(error = %e, "could not clear move markers");
            }
        }
        Ok((flags, trimmed))
    }

    /// `n` of the oldest error entries were trimmed by `errors.max_entries`:
    /// counted, and warned about the first time (then the alert
    /// `RedisDsgErrorEntriesTrimmed` speaks for it).
    fn error_entries_trimmed(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics.record_error_entries_trimmed(n);
        if !self
            .warned_trimming
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                trimmed = n,
                max_entries = self.max_error_entries,
                "the error list is full: its oldest entries are being trimmed (errors.max_entries); \
                 drain or requeue it (redis-dsg errors drain), or raise the bound. Counted in \
                 dsg_error_entries_trimmed_total; said once"
            );
        }
    }
}
