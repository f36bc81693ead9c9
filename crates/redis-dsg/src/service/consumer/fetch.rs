//! Taking messages: the fetch loops move batches from the queue into this
//! consumer's in-flight hash ([`crate::redis::scripts::FETCH`]) and hand
//! each batch to a task that processes its messages; a fetch whose reply was
//! lost is re-read from the hash ([`crate::redis::scripts::ADOPT`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::types::Value;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ack::AckSender;
use super::{Body, Consumer, Delivery};
use crate::redis::scripts::{ADOPT, FETCH, INFLIGHT_MARKER_FIELD, INFLIGHT_MARKER_VALUE};
use crate::redis::{Operation, RedisError, int, value_bytes};
use crate::service::backoff::Backoff;

/// Fetch loops per consumer.
pub(super) const FETCHERS: usize = 2;

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

/// How long after the last message the consumer keeps polling fast.
const HOT_WINDOW: Duration = Duration::from_millis(100);
/// The longest pause between polls within the hot window.
const HOT_POLL_MAX: Duration = Duration::from_millis(2);

impl Consumer {
    pub(super) async fn fetch_loop(
        self: &Arc<Self>,
        gate: &mut watch::Receiver<bool>,
        stop: &CancellationToken,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        ack_tx: &AckSender,
        shared: &FetchShared,
    ) {
        let mut backoff = Backoff::for_redis();
        let mut idle_wait = Duration::ZERO;
        let mut last_message = Instant::now();
        let idle_max = Duration::from_millis(self.cfg.idle_poll_max_ms);
        loop {
            while tasks.try_join_next().is_some() {}
            if stop.is_cancelled() {
                return;
            }
            if !*gate.borrow() && shared.no_unknown() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = gate.changed() => {
                        if changed.is_err() { return; }
                        continue;
                    }
                }
            }
            let want = self.cfg.fetch_batch.min(permits.available_permits()).max(1);
            let mut permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = permits.clone().acquire_many_owned(want as u32) => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let adopting = shared.take_unknown(want);
            // Only a fetch proper says fetching works: re-reading a lost
            // reply succeeds even while every fetch fails (a queue of the
            // wrong type), and must not reset the back-off.
            let fresh = adopting.is_empty();
            let result = if fresh {
                let first = shared.next_id.fetch_add(want as u64, Ordering::Relaxed);
                let r = self.fetch(want, first).await;
                if r.is_err() {
                    shared.add_unknown(first..first + want as u64);
                }
                r
            } else {
                let r = self.adopt(&adopting).await;
                if r.is_err() {
                    shared.add_unknown(adopting);
                }
                r
            };
            match result {
                Ok(deliveries) => {
                    if fresh {
                        backoff.reset();
                        self.health.succeeded(Operation::Fetch);
                    }
                    if deliveries.is_empty() {
                        drop(permit);
                        if !*gate.borrow() {
                            continue;
                        }
                        // Fast polls right after traffic, slower when idle.
                        let cap = if last_message.elapsed() < HOT_WINDOW {
                            HOT_POLL_MAX
                        } else {
                            idle_max
                        };
                        idle_wait = (idle_wait * 2)
                            .clamp(Duration::from_millis(1), cap.max(Duration::from_millis(1)));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = gate.changed() => {}
                            _ = tokio::time::sleep(idle_wait) => {}
                        }
                        continue;
                    }
                    idle_wait = Duration::ZERO;
                    last_message = Instant::now();
                    self.metrics.add_in_flight(deliveries.len() as i64);
                    // One task per fetched batch, processing its messages
                    // concurrently: a task per message cost more than the
                    // processing of a small one.
                    let tx = ack_tx.clone();
                    let this = self.clone();
                    tasks.spawn(async move {
                        let mut batch = FuturesUnordered::new();
                        for d in deliveries {
                            // `permit` holds `want` ≥ number of deliveries.
                            let Some(one) = permit.split(1) else { break };
                            batch.push(this.handle(d, one));
                        }
                        while let Some(ack) = batch.next().await {
                            tx.send(ack);
                        }
                    });
                }
                Err(e) => {
                    drop(permit);
                    // Health logs it (throttled) and, if it goes on,
                    // reports the instance unready.
                    self.health.failed(Operation::Fetch, &e);
                    if backoff.fail_and_wait(&e, stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Moves up to `n` messages into the in-flight hash.
    async fn fetch(&self, n: usize, first_id: u64) -> Result<Vec<Delivery>, RedisError> {
        let reply: Vec<Value> = self
            .redis
            .run(
                &FETCH,
                vec![
                    self.keys.queue.clone(),
                    self.keys.inflight(&self.id),
                    self.keys.heartbeat(&self.id),
                    self.keys.consumers(),
                ],
                [
                    int(n as u64),
                    int(self.cfg.heartbeat_ttl_ms),
                    int(self.cfg.max_message_bytes as u64),
                    self.id.as_str().into(),
                    self.heartbeat_value.as_str().into(),
                    INFLIGHT_MARKER_FIELD.into(),
                    INFLIGHT_MARKER_VALUE.into(),
                ]
                .into_iter()
                .chain((first_id..first_id + n as u64).map(int))
                .collect(),
            )
            .await?;
        reply
            .into_iter()
            .zip(first_id..)
            .map(|(body, id)| {
                Ok(Delivery {
                    id,
                    body: body_of(body, FETCH.name)?,
                })
            })
            .collect()
    }

    /// Re-reads what the hash holds under `ids` (see [`crate::redis::scripts::ADOPT`]).
    async fn adopt(&self, ids: &[u64]) -> Result<Vec<Delivery>, RedisError> {
        let mut args = Vec::with_capacity(ids.len() + 1);
        args.push(int(self.cfg.max_message_bytes as u64));
        args.extend(ids.iter().map(|&id| int(id)));
        let reply: Vec<Value> = self
            .redis
            .run(&ADOPT, vec![self.keys.inflight(&self.id)], args)
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

/// Parses `{id, message or size, …}` replies of ADOPT.
fn deliveries(reply: Vec<Value>, script: &'static str) -> Result<Vec<Delivery>, RedisError> {
    let mut out = Vec::with_capacity(reply.len() / 2);
    let mut it = reply.into_iter();
    while let (Some(id), Some(body)) = (it.next(), it.next()) {
        let id = id.as_u64().ok_or_else(|| RedisError::Reply {
            script,
            detail: "delivery id is not a number".into(),
        })?;
        out.push(Delivery {
            id,
            body: body_of(body, script)?,
        });
    }
    Ok(out)
}

/// A message's bytes, or its size when it was too large to be sent; any
/// other reply breaks the scripts' contract and is an error, never an empty
/// message.
fn body_of(v: Value, script: &'static str) -> Result<Body, RedisError> {
    match v {
        Value::Integer(size) => Ok(Body::Oversized(size.max(0) as u64)),
        other => value_bytes(other)
            .map(Body::Bytes)
            .ok_or_else(|| RedisError::Reply {
                script,
                detail: "a message is neither bytes nor a size".into(),
            }),
    }
}
