//! The consumer role: at-least-once processing of the queue.
//!
//! A message is moved atomically from the queue into this consumer's
//! in-flight hash ([`crate::keys::FETCH`]) before it is processed, and
//! removed from it only after processing finished: `ok` → `HDEL` (or the
//! hand-off to the output list, [`crate::keys::ACK_OUTPUT`]); invalid,
//! malformed or oversized → moved to the error list in the same step
//! ([`crate::keys::ACK_ERROR`]). Acknowledgements are batched and cost
//! O(batch), never O(messages in flight). A consumer that dies leaves its
//! messages in its hash; once its heartbeat expires a reaper returns them to
//! the queue ([`crate::reaper`]).
//!
//! Back-pressure: a semaphore of `max_concurrency` permits; a permit is taken
//! before a message is fetched and given back only after its
//! acknowledgement reached Redis, so the consumer never holds more than the
//! limit, whatever the backlog.
//!
//! An empty queue is polled, with a pause that starts at 1 ms and grows to
//! `idle_poll_max_ms`, instead of waited on with a blocking pop: a blocking
//! pop returns the whole message to the client, and an oversized message
//! must never be read into memory. An empty poll writes nothing in Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::error_entry::{self, Reason};
use crate::keys::{
    ACK_ERROR, ACK_OUTPUT, ADOPT, FETCH, FORGET, HEARTBEAT, INFLIGHT_MARKER_FIELD,
    INFLIGHT_MARKER_VALUE, Keys, PUSH_ONCE, RETURN_INFLIGHT,
};
use crate::message;
use crate::metrics::{Metrics, Outcome};
use crate::processor::{SimulatedProcessor, Verdict};
use crate::redis::{Redis, RedisError, int, value_bytes};

/// A message taken from the queue.
#[derive(Debug)]
struct Delivery {
    id: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Bytes(Bytes),
    /// Too large: only its size crossed the network.
    Oversized(u64),
}

/// A finished message waiting for its acknowledgement.
#[derive(Debug)]
struct Ack {
    id: u64,
    outcome: Outcome,
    /// For error outcomes: the error entry's header.
    header: Option<String>,
    _permit: OwnedSemaphorePermit,
}

/// Fetch loops per consumer.
const FETCHERS: usize = 2;

/// What the fetch loops of one consumer share.
#[derive(Debug)]
struct FetchShared {
    /// Delivery ids only need to be unique within this consumer's hash; a
    /// local counter that never goes back saves a round trip.
    next_id: AtomicU64,
    /// Ids of fetches whose reply never arrived: the script may have run,
    /// leaving messages in our hash that no task processes. They are
    /// re-read and processed (even while paused).
    unknown: Mutex<Vec<u64>>,
}

impl FetchShared {
    fn no_unknown(&self) -> bool {
        self.unknown.lock().map(|u| u.is_empty()).unwrap_or(true)
    }

    fn take_unknown(&self, n: usize) -> Vec<u64> {
        match self.unknown.lock() {
            Ok(mut u) => {
                let n = n.min(u.len());
                u.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn add_unknown(&self, ids: impl IntoIterator<Item = u64>) {
        if let Ok(mut u) = self.unknown.lock() {
            u.extend(ids);
        }
    }
}

/// Routes each acknowledgement to the acker of its kind.
#[derive(Debug, Clone)]
struct AckSender {
    ok: mpsc::UnboundedSender<Ack>,
    err: mpsc::UnboundedSender<Ack>,
}

impl AckSender {
    fn send(&self, ack: Ack) {
        let tx = if ack.header.is_some() {
            &self.err
        } else {
            &self.ok
        };
        // The ackers live until every sender is gone.
        let _ = tx.send(ack);
    }
}

/// How long after the last message the consumer keeps polling fast.
const HOT_WINDOW: Duration = Duration::from_millis(100);
/// The longest pause between polls within the hot window.
const HOT_POLL_MAX: Duration = Duration::from_millis(2);

/// One consumer instance.
#[derive(Debug)]
pub struct Consumer {
    redis: Redis,
    keys: Keys,
    id: String,
    cfg: ConsumerConfig,
    metrics: Metrics,
    processor: SimulatedProcessor,
    heartbeat_value: String,
    /// On Redis Cluster, lists outside the queue's hash slot cannot be
    /// written by the same script as the in-flight hash: moves to them take
    /// two steps.
    split_errors: bool,
    split_output: bool,
}

impl Consumer {
    /// A consumer with id `id` (unique per process start).
    pub fn new(
        redis: Redis,
        keys: Keys,
        id: String,
        cfg: ConsumerConfig,
        metrics: Metrics,
        processor: SimulatedProcessor,
    ) -> Consumer {
        let heartbeat_value = serde_json::json!({
            "id": id,
            "pid": std::process::id(),
            "started_at": OffsetDateTime::now_utc().unix_timestamp(),
        })
        .to_string();
        let clustered = redis.is_clustered();
        let split_errors = clustered && !keys.error_queue_shares_slot();
        let split_output = clustered
            && cfg
                .output_queue
                .as_deref()
                .is_some_and(|o| !keys.shares_slot(o));
        if split_errors || split_output {
            tracing::warn!(
                "the error or output list is in another hash slot than the queue: moves to it take two steps \
                 (loss-free, but a crash between them repeats a message); name it with the queue's hash tag, \
                 e.g. {{{}}}:errors, for one atomic step",
                keys.queue
            );
        }
        Consumer {
            redis,
            keys,
            id,
            cfg,
            metrics,
            processor,
            heartbeat_value,
            split_errors,
            split_output,
        }
    }

    /// Consumes while `gate` is true, until `stop` fires; then finishes
    /// in-flight work within `drain_budget` (counted from `stop`), returns
    /// what is left to the queue within `return_budget` more, and
    /// unregisters.
    pub async fn run(
        self: Arc<Self>,
        gate: watch::Receiver<bool>,
        stop: CancellationToken,
        drain_budget: Duration,
        return_budget: Duration,
    ) {
        // The drain deadline counts from the stop signal, not from when the
        // fetch loop noticed it (a fetch may be waiting on a slow Redis).
        let stopped_at = Arc::new(OnceLock::new());
        {
            let (stop, stopped_at) = (stop.clone(), stopped_at.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                let _ = stopped_at.set(Instant::now());
            });
        }
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(heartbeat_stop.clone()));
        // Successes and failures are acknowledged by separate tasks, so a
        // failing error list never holds up successes. They give up
        // retrying only once the drain budget is spent.
        let give_up = CancellationToken::new();
        let (ok_tx, ok_rx) = mpsc::unbounded_channel();
        let (err_tx, err_rx) = mpsc::unbounded_channel();
        let ok_acker = tokio::spawn(self.clone().acker(ok_rx, give_up.clone()));
        let err_acker = tokio::spawn(self.clone().acker(err_rx, give_up.clone()));
        let ack_tx = AckSender {
            ok: ok_tx,
            err: err_tx,
        };
        let permits = Arc::new(Semaphore::new(self.cfg.max_concurrency));
        let shared = Arc::new(FetchShared {
            next_id: AtomicU64::new(1),
            unknown: Mutex::new(Vec::new()),
        });
        // Two fetch loops keep a fetch in flight while the reply of the
        // other is being handed out (one alone left Redis idle half the
        // time while draining a backlog).
        let loops = (0..FETCHERS).map(|_| {
            let (this, mut gate, stop, permits, ack_tx, shared) = (
                self.clone(),
                gate.clone(),
                stop.clone(),
                permits.clone(),
                ack_tx.clone(),
                shared.clone(),
            );
            async move {
                let mut tasks = JoinSet::new();
                this.fetch_loop(&mut gate, &stop, &permits, &mut tasks, &ack_tx, &shared)
                    .await;
                tasks
            }
        });
        let mut sets = futures_util::future::join_all(loops).await;
        drop(gate);

        let start = stopped_at.get().copied().unwrap_or_else(Instant::now);
        let deadline = start + drain_budget;
        let held: usize = sets.iter().map(JoinSet::len).sum();
        if held > 0 {
            tracing::info!(held, "finishing in-flight messages before stopping");
        }
        let finished = tokio::time::timeout_at(deadline.into(), async {
            for tasks in sets.iter_mut() {
                while tasks.join_next().await.is_some() {}
            }
        })
        .await;
        if finished.is_err() {
            let unfinished: usize = sets.iter().map(JoinSet::len).sum();
            tracing::warn!(
                unfinished,
                "drain budget spent; returning unfinished messages to the queue"
            );
            for tasks in sets.iter_mut() {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
            // Aborted tasks never reach the acker.
            self.metrics.add_in_flight(-(unfinished as i64));
        }
        drop(ack_tx);
        // Acks already queued get until the deadline to reach Redis.
        let give_up_at = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            give_up_at.cancel();
        });
        let _ = tokio::join!(ok_acker, err_acker);
        // Stop the heartbeat first, without waiting for a call in flight
        // (Redis may be down): a heartbeat landing after the return only
        // registers an empty consumer, which the reapers remove.
        heartbeat_stop.cancel();
        heartbeat.abort();
        let _ = heartbeat.await;
        self.return_all(deadline + return_budget).await;
    }

    async fn fetch_loop(
        self: &Arc<Self>,
        gate: &mut watch::Receiver<bool>,
        stop: &CancellationToken,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        ack_tx: &AckSender,
        shared: &FetchShared,
    ) {
        let mut errors = 0u32;
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
            let result = if adopting.is_empty() {
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
                    errors = 0;
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
                    self.metrics.record_redis_error("fetch");
                    errors += 1;
                    if errors == 1 || errors % 50 == 0 {
                        tracing::warn!(error = %e, "fetch failed; retrying");
                    }
                    let delay =
                        Duration::from_millis(50u64 << errors.min(5)).min(Duration::from_secs(2));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
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
        Ok(reply
            .into_iter()
            .zip(first_id..)
            .map(|(body, id)| Delivery {
                id,
                body: body_of(body),
            })
            .collect())
    }

    /// Re-reads what the hash holds under `ids` (see [`crate::keys::ADOPT`]).
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

    /// Processes one message and says how it ended.
    async fn handle(&self, d: Delivery, permit: OwnedSemaphorePermit) -> Ack {
        let started = Instant::now();
        let failure = match &d.body {
            Body::Oversized(size) => Some((
                Reason::Oversized,
                format!(
                    "message is {size} bytes; consumer.max_message_bytes is {}",
                    self.cfg.max_message_bytes
                ),
            )),
            Body::Bytes(bytes) => match message::parse(bytes) {
                Err(why) => Some((Reason::Malformed, why.to_string())),
                Ok(m) => {
                    let age = OffsetDateTime::now_utc() - m.created_at;
                    self.metrics.record_message_age(age.as_seconds_f64());
                    match self.processor.process(&m).await {
                        Verdict::Ok => None,
                        Verdict::Invalid(why) => Some((Reason::Invalid, why)),
                    }
                }
            },
        };
        self.metrics.record_processing_time(started.elapsed());
        let (outcome, header) = match failure {
            None => (Outcome::Ok, None),
            Some((reason, detail)) => (
                match reason {
                    Reason::Invalid => Outcome::Invalid,
                    Reason::Malformed => Outcome::Malformed,
                    Reason::Oversized => Outcome::Oversized,
                },
                Some(error_entry::header(
                    reason,
                    &detail,
                    &self.id,
                    OffsetDateTime::now_utc(),
                )),
            ),
        };
        Ack {
            id: d.id,
            outcome,
            header,
            _permit: permit,
        }
    }

    /// Sends acknowledgements (all successes or all failures) in batches;
    /// permits go back when their acknowledgement reached Redis.
    async fn acker(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Ack>,
        give_up: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(1024);
        while rx.recv_many(&mut batch, 1024).await > 0 {
            let errors = batch[0].header.is_some();
            let (this, acks) = (&self, &batch);
            self.retry_ack("ack", acks, &give_up, |attempt| async move {
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
        operation: &'static str,
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
        let mut n = 0u32;
        loop {
            n += 1;
            // Past the deadline nothing is tried or awaited any more: the
            // messages stay in our hash and go back with our return.
            let result = tokio::select! {
                _ = give_up.cancelled() => return,
                r = attempt(n) => r,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.record_redis_error(operation);
                    if n == 1 || n % 20 == 0 {
                        tracing::warn!(error = %e, pending = acks.len(), attempts = n, "acknowledgement failed; retrying");
                    }
                    let delay =
                        Duration::from_millis(50u64 << n.min(5)).min(Duration::from_secs(2));
                    tokio::select! {
                        _ = give_up.cancelled() => {
                            // They stay in our hash; our return (or a
                            // reaper) puts them back in the queue.
                            tracing::warn!(pending = acks.len(), "giving up on acknowledgements");
                            return;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Acknowledges successes (idempotent). After a failed attempt whose
    /// outcome is unknown, a message found gone was most likely removed by
    /// that attempt, so it counts as processed rather than late.
    async fn ack_oks(&self, acks: &[Ack], attempt: u32) -> Result<(), RedisError> {
        let inflight = self.keys.inflight(&self.id);
        let ids: Vec<String> = acks.iter().map(|a| a.id.to_string()).collect();
        let removed: u64 = match &self.cfg.output_queue {
            Some(output) if self.split_output => {
                let moved = self
                    .move_in_two_steps(output, &acks.iter().map(|a| (a.id, "")).collect::<Vec<_>>())
                    .await?;
                moved.iter().filter(|m| **m).count() as u64
            }
            // The hand-off and the acknowledgement are one step.
            Some(output) => {
                self.redis
                    .run(
                        &ACK_OUTPUT,
                        vec![inflight, output.clone()],
                        ids.iter().map(|id| Value::from(id.as_str())).collect(),
                    )
                    .await?
            }
            None => self.redis.client().hdel(inflight.as_str(), ids).await?,
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
        let flags: Vec<i64> = if self.split_errors {
            let items: Vec<(u64, &str)> = acks
                .iter()
                .map(|a| (a.id, a.header.as_deref().unwrap_or_default()))
                .collect();
            self.move_in_two_steps(&self.keys.error_queue, &items)
                .await?
                .into_iter()
                .map(i64::from)
                .collect()
        } else {
            let mut args = Vec::with_capacity(acks.len() * 2);
            for a in acks {
                args.push(int(a.id));
                args.push(Value::from(a.header.as_deref().unwrap_or_default()));
            }
            self.redis
                .run(
                    &ACK_ERROR,
                    vec![self.keys.inflight(&self.id), self.keys.error_queue.clone()],
                    args,
                )
                .await?
        };
        let mut late = 0;
        let mut counts = [0u64; Outcome::ALL.len()];
        for (flag, a) in flags.iter().zip(acks) {
            if *flag == 1 || attempt > 1 {
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
    /// Returns, per item, whether this consumer still held it.
    async fn move_in_two_steps(
        &self,
        target: &str,
        items: &[(u64, &str)],
    ) -> Result<Vec<bool>, RedisError> {
        /// Long past any retry of one move; markers left by a crash between
        /// the steps are dropped after it.
        const MARKER_TTL_MS: u64 = 3_600_000;
        let inflight = self.keys.inflight(&self.id);
        let ids: Vec<String> = items.iter().map(|(id, _)| id.to_string()).collect();
        let bodies: Vec<Value> = self
            .redis
            .client()
            .hmget(inflight.as_str(), ids.clone())
            .await?;
        let marker = Keys::moved_marker(target);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut args = vec![int(now_ms), int(MARKER_TTL_MS)];
        let mut tokens = Vec::new();
        for ((id, prefix), body) in items.iter().zip(bodies) {
            if let Some(body) = value_bytes(body) {
                let token = format!("{}:{id}", self.id);
                let mut entry = Vec::with_capacity(prefix.len() + body.len());
                entry.extend_from_slice(prefix.as_bytes());
                entry.extend_from_slice(&body);
                args.push(Value::from(token.as_str()));
                args.push(Value::Bytes(entry.into()));
                tokens.push(token);
            }
        }
        if !tokens.is_empty() {
            let _: i64 = self
                .redis
                .run(&PUSH_ONCE, vec![target.to_string(), marker.clone()], args)
                .await?;
        }
        let flags: Vec<i64> = self
            .redis
            .run(
                &FORGET,
                vec![inflight],
                ids.into_iter().map(Value::from).collect(),
            )
            .await?;
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
        Ok(flags.iter().map(|f| *f == 1).collect())
    }

    fn record(&self, outcome: Outcome, n: u64) {
        self.metrics.record_processed(outcome, n);
    }

    /// Returns everything this consumer still holds to the queue and
    /// unregisters it; retried until `deadline`.
    async fn return_all(&self, deadline: Instant) {
        loop {
            let attempt = tokio::time::timeout_at(deadline.into(), self.return_once()).await;
            match attempt {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    tracing::info!(returned = n, "returned unfinished messages to the queue");
                    return;
                }
                Ok(Err(e)) if Instant::now() + Duration::from_millis(200) < deadline => {
                    self.metrics.record_redis_error("return");
                    tracing::debug!(error = %e, "return failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {
                    self.metrics.record_redis_error("return");
                    tracing::warn!(
                        "could not return in-flight messages in time; a reaper will once the heartbeat expires"
                    );
                    return;
                }
            }
        }
    }

    async fn return_once(&self) -> Result<i64, RedisError> {
        self.redis
            .run(
                &RETURN_INFLIGHT,
                vec![
                    self.keys.heartbeat(&self.id),
                    self.keys.inflight(&self.id),
                    self.keys.queue.clone(),
                    self.keys.consumers(),
                ],
                vec![self.id.as_str().into(), "1".into()],
            )
            .await
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        loop {
            let alive: Result<i64, _> = self
                .redis
                .run(
                    &HEARTBEAT,
                    vec![self.keys.heartbeat(&self.id), self.keys.consumers()],
                    vec![
                        self.id.as_str().into(),
                        int(self.cfg.heartbeat_ttl_ms),
                        self.heartbeat_value.as_str().into(),
                    ],
                )
                .await;
            match alive {
                Ok(1) => {}
                Ok(_) => tracing::debug!("heartbeat (re)registered"),
                Err(e) => {
                    self.metrics.record_redis_error("heartbeat");
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
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
            body: body_of(body),
        });
    }
    Ok(out)
}

/// A message's bytes, or its size when it was too large to be sent.
fn body_of(v: Value) -> Body {
    match v {
        Value::Integer(size) => Body::Oversized(size.max(0) as u64),
        other => Body::Bytes(value_bytes(other).unwrap_or_default()),
    }
}
