//! Taking messages: the fetch loops move batches from the queue into this
//! consumer's in-flight hash ([`crate::redis::scripts::FETCH`]) and hand
//! each batch to a task that processes its messages; a fetch whose reply was
//! lost is re-read from the hash ([`crate::redis::scripts::ADOPT`]).
//!
//! Contract 9: an idle consumer does not poll. The lead loop, when a fetch
//! comes back thin or empty, blocks on the doorbell (`BZPOPMIN {q}:bell`)
//! on a connection of its own, which a push rings; after
//! `idle_poll_max_ms` without a ring it polls once anyway (a push the bell
//! missed). The extra loop fetches only while batches come back full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ack::AckSender;
use super::{Body, Consumer, Delivery, HeldBytes};
use crate::redis::scripts::{self, ADOPT, FETCH};
use crate::redis::{Operation, RedisError, value_bytes};
use crate::service::backoff::Backoff;

/// What the fetch loops of one consumer share.
#[derive(Debug)]
pub(super) struct FetchShared {
    /// Delivery ids only need to be unique within this consumer's hash; a
    /// local counter that never goes back saves a round trip.
    pub(super) next_id: AtomicU64,
    /// Ids of fetches whose reply never arrived: the script may have run,
    /// leaving messages in our hash that no task processes. They are
    /// re-read and processed (even while paused).
    pub(super) unknown: Mutex<Vec<u64>>,
    /// Notified when the lead loop fetched a full batch: the extra loop
    /// fetches too while the backlog lasts.
    pub(super) full: Notify,
    /// Bytes of its budget the next fetch waits for: the size of the
    /// message a fetch had to leave in the queue because it did not fit
    /// what was left (0: none).
    pub(super) need: AtomicU64,
}

impl FetchShared {
    /// The list of unknown fetches. A panic while the lock is held cannot
    /// leave the `Vec` half-changed (`extend` and `drain` either finish or
    /// unwind before touching it), so a poisoned lock is taken over as is:
    /// losing the ids would leave messages in our hash unprocessed until we
    /// stop.
    fn unknown(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.unknown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn no_unknown(&self) -> bool {
        self.unknown().is_empty()
    }

    fn take_unknown(&self, n: usize) -> Vec<u64> {
        let mut unknown = self.unknown();
        let n = n.min(unknown.len());
        unknown.drain(..n).collect()
    }

    fn add_unknown(&self, ids: impl IntoIterator<Item = u64>) {
        self.unknown().extend(ids);
    }
}

/// Which fetch loop of a consumer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Fetches whenever there may be work, and waits on the doorbell when
    /// the queue is thin: one fetch in flight per consumer while idle or
    /// under a trickle.
    Lead,
    /// Fetches only while batches come back full (a backlog), so a second
    /// fetch is in flight while the reply of the first is handed out.
    Extra,
}

/// How a fetch went.
#[derive(Debug, PartialEq, Eq)]
enum Fetched {
    /// As many messages as asked for: more are likely waiting.
    Full,
    /// Fewer, or none: the queue is thin.
    Thin,
    /// Fewer because the byte budget was spent: more is waiting, and the
    /// next fetch waits for its budget, not for a ring.
    BudgetSpent,
    /// Messages of a lost reply were re-read (no fresh fetch ran).
    Adopted,
    /// Stopped while waiting for permits.
    Stopped,
}

/// One fetch loop: everything it uses, so the loop reads as steps.
#[derive(Debug)]
pub(super) struct FetchLoop {
    pub(super) consumer: Arc<Consumer>,
    pub(super) lane: Lane,
    pub(super) gate: watch::Receiver<bool>,
    pub(super) stop: CancellationToken,
    pub(super) permits: Arc<Semaphore>,
    /// The byte budget (`consumer.max_in_flight_bytes`, one permit a byte).
    pub(super) bytes: Arc<Semaphore>,
    pub(super) ack_tx: AckSender,
    pub(super) shared: Arc<FetchShared>,
    /// The tasks processing fetched batches, handed back at the end.
    pub(super) tasks: JoinSet<()>,
}

impl FetchLoop {
    /// Fetches until `stop` fires; returns the tasks still processing.
    pub(super) async fn run(mut self) -> JoinSet<()> {
        let mut backoff = Backoff::for_redis();
        let mut bell_backoff = Backoff::for_redis();
        loop {
            while self.tasks.try_join_next().is_some() {}
            if self.stop.is_cancelled() {
                break;
            }
            if !*self.gate.borrow() && self.shared.no_unknown() {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    changed = self.gate.changed() => if changed.is_err() { break },
                }
                continue;
            }
            match self.fetch_once().await {
                Ok(Fetched::Full) => {
                    backoff.reset();
                    if self.lane == Lane::Lead {
                        self.shared.full.notify_one();
                    }
                }
                // Re-reading a lost reply says nothing of whether fetching
                // works (it succeeds while every fetch fails): no reset.
                Ok(Fetched::Adopted) => {}
                // A backlog too, of larger messages: the extra loop helps.
                Ok(Fetched::BudgetSpent) => {
                    backoff.reset();
                    if self.lane == Lane::Lead {
                        self.shared.full.notify_one();
                    }
                }
                Ok(Fetched::Thin) => {
                    backoff.reset();
                    if !self.wait_for_work(&mut bell_backoff).await {
                        break;
                    }
                }
                Ok(Fetched::Stopped) => break,
                Err(e) => {
                    // Health logs it (throttled) and, if it goes on,
                    // reports the instance unready.
                    self.consumer.health.failed(Operation::Fetch, &e);
                    if backoff.fail_and_wait(&e, &self.stop).await {
                        break;
                    }
                }
            }
        }
        self.tasks
    }

    /// Waits until there may be work: the lead on the doorbell (at most
    /// `idle_poll_max_ms`, then a fallback poll), the extra loop until the
    /// lead fetches a full batch. False when stopped.
    async fn wait_for_work(&mut self, bell_backoff: &mut Backoff) -> bool {
        if !*self.gate.borrow() {
            return !self.stop.is_cancelled();
        }
        match self.lane {
            Lane::Extra => tokio::select! {
                _ = self.stop.cancelled() => false,
                _ = self.gate.changed() => true,
                _ = self.shared.full.notified() => true,
            },
            Lane::Lead => {
                // Not cut short by the gate: a wait given up here would go
                // on in Redis and could take the next ring for nobody
                // (the reply of a dropped call is thrown away), while the
                // next wait queues behind it on the connection.
                let rung = tokio::select! {
                    _ = self.stop.cancelled() => return false,
                    r = self.consumer.wait_for_bell() => r,
                };
                match rung {
                    Ok(()) => {
                        bell_backoff.reset();
                        true
                    }
                    // A bell that cannot be waited on (no `+bzpopmin`, a
                    // key of the wrong type, a dropped connection): poll,
                    // more slowly while it goes on.
                    Err(e) => {
                        self.consumer.health.failed(Operation::Fetch, &e);
                        !bell_backoff.fail_and_wait(&e, &self.stop).await
                    }
                }
            }
        }
    }

    /// Takes permits and fetches once (or re-reads a lost reply), handing
    /// what came to a processing task.
    async fn fetch_once(&mut self) -> Result<Fetched, RedisError> {
        let cfg = &self.consumer.cfg;
        let want = cfg.fetch_batch.min(self.permits.available_permits()).max(1);
        let mut permit = tokio::select! {
            _ = self.stop.cancelled() => return Ok(Fetched::Stopped),
            p = self.permits.clone().acquire_many_owned(want as u32) => match p {
                Ok(p) => p,
                Err(_) => return Ok(Fetched::Stopped),
            },
        };
        let Some(mut budget) = self.reserve_bytes().await else {
            return Ok(Fetched::Stopped);
        };
        let adopting = self.shared.take_unknown(want);
        let (deliveries, fetched) = if adopting.is_empty() {
            let first = self
                .shared
                .next_id
                .fetch_add(want as u64, Ordering::Relaxed);
            let alone = budget.num_permits() as u64 >= cfg.max_in_flight_bytes;
            let (deliveries, need) = self
                .consumer
                .fetch(want, first, budget.num_permits() as u64, alone)
                .await
                .inspect_err(|_| {
                    self.shared.add_unknown(first..first + want as u64);
                })?;
            // Only a fetch proper says fetching works: re-reading a lost
            // reply succeeds even while every fetch fails (a queue of the
            // wrong type).
            self.consumer.health.succeeded(Operation::Fetch);
            let fetched = if deliveries.len() == want {
                Fetched::Full
            } else if need > 0 {
                self.shared.need.store(need, Ordering::Relaxed);
                Fetched::BudgetSpent
            } else {
                Fetched::Thin
            };
            (deliveries, fetched)
        } else {
            // A lost reply's messages are ours already: they are processed
            // whatever the budget holds (the shares below take what there
            // is), a rare excess bounded by one fetch.
            let deliveries = self.consumer.adopt(&adopting).await.inspect_err(|_| {
                self.shared.add_unknown(adopting.iter().copied());
            })?;
            (deliveries, Fetched::Adopted)
        };
        // Each message takes its share of the budget (the first may hold
        // all of it and still be larger: one message alone always moves);
        // what the fetch did not use goes back now.
        let shares: Vec<HeldBytes> = deliveries
            .iter()
            .map(|d| {
                let cost = d.body.held_bytes().min(budget.num_permits());
                // `cost` ≤ what `budget` holds, so the split succeeds.
                let permit = budget.split(cost).unwrap_or_else(|| unreachable!());
                HeldBytes::new(permit, &self.consumer.metrics)
            })
            .collect();
        drop(budget);
        if deliveries.is_empty() {
            return Ok(fetched);
        }
        self.consumer.metrics.add_in_flight(deliveries.len() as i64);
        // One task per fetched batch, processing its messages
        // concurrently: a task per message cost more than the processing
        // of a small one.
        let tx = self.ack_tx.clone();
        let this = self.consumer.clone();
        self.tasks.spawn(async move {
            let mut batch = FuturesUnordered::new();
            for (d, bytes) in deliveries.into_iter().zip(shares) {
                // `permit` holds `want` ≥ number of deliveries.
                let Some(one) = permit.split(1) else { break };
                batch.push(this.handle(d, one, bytes));
            }
            while let Some(ack) = batch.next().await {
                tx.send(ack);
            }
        });
        Ok(fetched)
    }
}

impl FetchLoop {
    /// Takes what the next fetch may fill of the byte budget: up to its
    /// [`FetchLoop::share`] (2 MiB of the default), waiting for at least a
    /// byte; after a fetch that had to leave a message for lack of budget,
    /// waiting for at least that message's size (at most the whole budget,
    /// which is free only when nothing else is held). `None`: stopped.
    ///
    /// A share is small because a reply costs more than its messages while
    /// it is read: the connection's read buffer grows to about twice the
    /// reply and keeps that size, and large messages are then copied out
    /// of it. With a 16th of the budget per fetch, 400 messages of 900 KiB
    /// peaked at 96–99 MiB of RSS; with a 32nd, at 78–81 MiB. Batches of
    /// messages under 4 KiB are bounded by their count long before this.
    async fn reserve_bytes(&self) -> Option<OwnedSemaphorePermit> {
        let total = self.consumer.cfg.max_in_flight_bytes;
        // A semaphore takes at most u32::MAX permits per call: a fetch's
        // share of a budget over 4 GiB is capped there.
        let cap = |n: u64| n.min(u64::from(u32::MAX)) as u32;
        let need = self.shared.need.swap(0, Ordering::Relaxed).min(total);
        let mut reserved = tokio::select! {
            _ = self.stop.cancelled() => return None,
            p = self.bytes.clone().acquire_many_owned(cap(need.max(1))) => p.ok()?,
        };
        // Topped up to the share: a fetch after one that left a message
        // behind must not carry that message alone, or a backlog of 8 KiB
        // messages would move one per round trip from then on.
        let more = self.share().saturating_sub(need.max(1));
        let free = self.bytes.available_permits() as u64;
        if more > 0
            && let Ok(more) = self
                .bytes
                .clone()
                .try_acquire_many_owned(cap(free.min(more)))
        {
            reserved.merge(more);
        }
        Some(reserved)
    }

    /// A fetch's share of the byte budget: a 32nd of it, yet room for one
    /// message of the largest size where the budget allows (at most half
    /// of it), so a small budget does not spend an empty round trip
    /// learning that the next message needs more.
    fn share(&self) -> u64 {
        let cfg = &self.consumer.cfg;
        let total = cfg.max_in_flight_bytes;
        (total / 32).max((total / 2).min(cfg.max_message_bytes as u64))
    }
}

impl Consumer {
    /// Waits on the doorbell until a push rings it or `idle_poll_max_ms`
    /// passed (both mean: fetch now). The wait runs on this consumer's own
    /// connection: it blocks it.
    async fn wait_for_bell(&self) -> Result<(), RedisError> {
        let wait = Duration::from_millis(self.cfg.idle_poll_max_ms);
        let Some(waiter) = &self.waiter else {
            tokio::time::sleep(wait).await;
            return Ok(());
        };
        let opts = Options {
            max_attempts: Some(1),
            timeout: Some(wait + self.redis.command_timeout()),
            ..Default::default()
        };
        // Sent as a custom command: fred's own `bzpopmin` turns the
        // server's "nobody rang in time" (a nil) into the same Timeout
        // error as a reply that never came, so every quiet
        // `idle_poll_max_ms` counted as a failed fetch and paused the
        // fallback poll behind a back-off. A nil here is simply no ring.
        let bzpopmin = CustomCommand::new_static("BZPOPMIN", ClusterHash::FirstKey, true);
        let rung: Value = waiter
            .with_options(&opts)
            .custom(
                bzpopmin,
                vec![
                    Value::from(self.keys.bell()),
                    Value::from(wait.as_secs_f64()),
                ],
            )
            .await?;
        tracing::trace!(?rung, "doorbell");
        Ok(())
    }

    /// Moves up to `n` messages into the in-flight hash, as many as fit in
    /// `budget` bytes (one at least when `alone`). Returns them and the
    /// bytes the next one needs when the budget stopped the fetch (else 0).
    async fn fetch(
        &self,
        n: usize,
        first_id: u64,
        budget: u64,
        alone: bool,
    ) -> Result<(Vec<Delivery>, u64), RedisError> {
        let fetched = scripts::fetch(
            &self.redis,
            &self.keys,
            &scripts::Fetch {
                consumer: &self.id,
                heartbeat_value: &self.heartbeat_value,
                max: n as u64,
                heartbeat_ttl_ms: self.cfg.heartbeat_ttl_ms,
                max_message_bytes: self.cfg.max_message_bytes as u64,
                first_id,
                budget,
                alone,
            },
        )
        .await?;
        let need = fetched.need;
        let deliveries = fetched
            .bodies
            .into_iter()
            .zip(first_id..)
            .map(|(body, id)| {
                Ok(Delivery {
                    id,
                    body: body_of(body, FETCH.name)?,
                })
            })
            .collect::<Result<_, RedisError>>()?;
        Ok((deliveries, need))
    }

    /// Re-reads what the hash holds under `ids` (see [`crate::redis::scripts::ADOPT`]).
    async fn adopt(&self, ids: &[u64]) -> Result<Vec<Delivery>, RedisError> {
        let reply = scripts::adopt(
            &self.redis,
            &self.keys,
            &self.id,
            self.cfg.max_message_bytes as u64,
            ids,
        )
        .await?;
        let found = deliveries(reply, ADOPT.name)?;
        if !found.is_empty() {
            tracing::info!(
                adopted = found.len(),
                "processing messages of a fetch whose reply was lost"
            );
        }
        Ok(found)
    }
}

/// The deliveries of ADOPT's (id, message or size) pairs.
fn deliveries(reply: Vec<(u64, Value)>, script: &'static str) -> Result<Vec<Delivery>, RedisError> {
    reply
        .into_iter()
        .map(|(id, body)| {
            Ok(Delivery {
                id,
                body: body_of(body, script)?,
            })
        })
        .collect()
}

/// Messages this large get an allocation of their own.
const OWN_ALLOCATION_FROM: usize = 4096;

/// A reply's messages are slices of the connection's read buffer, which
/// grows to about twice the reply and lives as long as any slice of it: a
/// batch of large messages then pinned twice its bytes until its last
/// message was done (RSS 170 MiB for a 64 MiB budget). A large message is
/// copied out, so the buffer goes as soon as the reply is read; small ones
/// stay slices (a copy each would cost the drain more than it saves).
fn own_large(b: fred::bytes::Bytes) -> fred::bytes::Bytes {
    if b.len() >= OWN_ALLOCATION_FROM {
        fred::bytes::Bytes::copy_from_slice(&b)
    } else {
        b
    }
}

/// A message's bytes, or its size when it was too large to be sent; any
/// other reply breaks the scripts' contract and is an error, never an empty
/// message.
fn body_of(v: Value, script: &'static str) -> Result<Body, RedisError> {
    match v {
        Value::Integer(size) => Ok(Body::Oversized(size.max(0) as u64)),
        other => value_bytes(other)
            .map(own_large)
            .map(Body::Bytes)
            .ok_or_else(|| RedisError::Reply {
                script,
                detail: "a message is neither bytes nor a size".into(),
            }),
    }
}
