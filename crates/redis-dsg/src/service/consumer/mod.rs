//! The consumer role: at-least-once processing of the queue.
//!
//! A message is moved atomically from the queue into this consumer's
//! in-flight hash ([`crate::redis::scripts::FETCH`]) before it is processed, and
//! removed from it only after processing finished: `ok` → `HDEL` (or the
//! hand-off to the output list, [`crate::redis::scripts::ACK_OUTPUT`]); invalid,
//! malformed or oversized → moved to the error list in the same step
//! ([`crate::redis::scripts::ACK_ERROR`]). Acknowledgements are batched and cost
//! O(batch), never O(messages in flight). A consumer that dies leaves its
//! messages in its hash; once its heartbeat expires a reaper returns them to
//! the queue ([`crate::service::reaper`]).
//!
//! Back-pressure: a semaphore of `max_concurrency` permits; a permit is taken
//! before a message is fetched and given back only after its
//! acknowledgement reached Redis, so the consumer never holds more than the
//! limit, whatever the backlog.
//!
//! An empty queue is waited on, not polled (contract 9): the consumer
//! blocks on a doorbell that pushes ring ([`fetch`]), then fetches with the
//! script. It never blocks on the queue itself: a blocking pop returns the
//! whole message to the client, and an oversized message must never be
//! read into memory. Its heartbeat is a score in `{q}:heartbeats`, so one
//! reaper for the fleet finds the dead without reading every consumer.

mod ack;
mod fetch;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::interfaces::ClientLike;
use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::redis::scripts;
use crate::redis::{Keys, Operation, Redis, RedisError};
use crate::service::chores::Chores;
use crate::service::error_entry::{self, Reason};
use crate::service::health::Health;
use crate::service::message;
use crate::service::metrics::{Metrics, Outcome};
use crate::service::processor::{SimulatedProcessor, Verdict};
use crate::service::role::RoleContext;
use ack::AckSender;
use fetch::{FetchLoop, FetchShared, Lane};

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

impl Body {
    /// What it holds of this pod's memory, against the byte budget: an
    /// oversized message's bytes never came.
    fn held_bytes(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Oversized(_) => 0,
        }
    }
}

/// A held message's share of the byte budget (`consumer.max_in_flight_bytes`),
/// counted in `dsg_in_flight_bytes`. Dropping it gives the share back: with
/// its acknowledgement once that reached Redis, or with an aborted task.
#[derive(Debug)]
struct HeldBytes {
    permit: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl HeldBytes {
    fn new(permit: OwnedSemaphorePermit, metrics: &Metrics) -> HeldBytes {
        metrics.add_in_flight_bytes(permit.num_permits() as i64);
        HeldBytes {
            permit,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.metrics
            .add_in_flight_bytes(-(self.permit.num_permits() as i64));
    }
}

impl Ack {
    /// The error entry's header of a failed message. [`AckSender`] routes
    /// exactly the acks that have one to the error acker, the only caller.
    fn error_header(&self) -> &str {
        self.header
            .as_deref()
            .expect("the error acker only receives acks with a header")
    }
}

/// A finished message waiting for its acknowledgement.
#[derive(Debug)]
struct Ack {
    id: u64,
    outcome: Outcome,
    /// For error outcomes: the error entry's header.
    header: Option<String>,
    _permit: OwnedSemaphorePermit,
    _bytes: HeldBytes,
}

/// One consumer instance.
#[derive(Debug)]
pub(super) struct Consumer {
    redis: Redis,
    keys: Keys,
    id: String,
    cfg: ConsumerConfig,
    metrics: Metrics,
    /// Where fetch, heartbeat and acknowledgement outcomes are reported:
    /// fetches that keep failing make the instance unready.
    health: Health,
    /// The chores claim: a heartbeat that finds it free says so.
    chores: Chores,
    processor: SimulatedProcessor,
    /// The connection the doorbell is waited on (a blocking command holds
    /// its connection); `None` if it could not be built, then idle
    /// consumers poll every `idle_poll_max_ms`.
    waiter: Option<fred::clients::Client>,
    heartbeat_value: String,
    /// On Redis Cluster, lists outside the queue's hash slot cannot be
    /// written by the same script as the in-flight hash: moves to them take
    /// two steps.
    split_errors: bool,
    split_output: bool,
    /// `errors.max_entries` (0: unbounded).
    max_error_entries: u64,
    /// Whether trimming the error list was warned about (once a process).
    warned_trimming: AtomicBool,
}

impl Consumer {
    /// The consumer of this instance (its id is the instance's, unique per
    /// process start).
    pub(super) fn new(ctx: &RoleContext) -> Consumer {
        let (redis, keys, id) = (ctx.redis.clone(), ctx.keys.clone(), ctx.state.id.clone());
        let cfg = ctx.config.consumer.clone();
        let (metrics, health, chores) =
            (ctx.metrics.clone(), ctx.health.clone(), ctx.chores.clone());
        let processor = SimulatedProcessor::new(ctx.config.processor.clone());
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
        let waiter = redis
            .dedicated(false, Duration::from_millis(cfg.idle_poll_max_ms))
            .inspect_err(|e| tracing::warn!(error = %e, "no connection for the doorbell; idle polling instead"))
            .ok();
        Consumer {
            redis,
            keys,
            id,
            cfg,
            metrics,
            health,
            chores,
            processor,
            waiter,
            heartbeat_value,
            split_errors,
            split_output,
            max_error_entries: ctx.config.errors.max_entries,
            warned_trimming: AtomicBool::new(false),
        }
    }

    /// Consumes while `gate` is true, until `stop` fires; then finishes
    /// in-flight work within `drain_budget` (counted from `stop`), returns
    /// what is left to the queue within `return_budget` more, and
    /// unregisters.
    pub(super) async fn run(
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
        // Bounded (65536 to 64 GiB), within what a semaphore can hold.
        let bytes = Arc::new(Semaphore::new(self.cfg.max_in_flight_bytes as usize));
        let shared = Arc::new(FetchShared {
            next_id: AtomicU64::new(1),
            unknown: Mutex::new(Vec::new()),
            full: Notify::new(),
            need: AtomicU64::new(0),
        });
        if let Some(waiter) = &self.waiter {
            drop(waiter.connect());
        }
        // While batches come back full, two fetch loops keep a fetch in
        // flight while the reply of the other is being handed out (one
        // alone left Redis idle half the time while draining a backlog);
        // otherwise only the lead fetches.
        let loops = [Lane::Lead, Lane::Extra].map(|lane| {
            FetchLoop {
                consumer: self.clone(),
                lane,
                gate: gate.clone(),
                stop: stop.clone(),
                permits: permits.clone(),
                bytes: bytes.clone(),
                ack_tx: ack_tx.clone(),
                shared: shared.clone(),
                tasks: JoinSet::new(),
            }
            .run()
        });
        let mut sets = futures_util::future::join_all(loops).await;
        drop(gate);
        if let Some(waiter) = &self.waiter {
            // A wait still blocked in Redis ends with its connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), waiter.quit()).await;
        }

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

    /// Processes one message and says how it ended.
    async fn handle(&self, d: Delivery, permit: OwnedSemaphorePermit, bytes: HeldBytes) -> Ack {
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
            _bytes: bytes,
        }
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
                    self.health.failed(Operation::Return, &e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {
                    self.metrics.record_redis_error(Operation::Return);
                    tracing::warn!(
                        "could not return in-flight messages in time; a reaper will once the heartbeat expires"
                    );
                    return;
                }
            }
        }
    }

    async fn return_once(&self) -> Result<u64, RedisError> {
        // Forced: its own heartbeat is alive; `None` cannot come back.
        let returned = scripts::return_inflight(&self.redis, &self.keys, &self.id, true).await?;
        Ok(returned.unwrap_or(0))
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let interval = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        loop {
            let beat = scripts::heartbeat(
                &self.redis,
                &self.keys,
                &self.id,
                self.cfg.heartbeat_ttl_ms,
                &self.heartbeat_value,
            )
            .await;
            match beat {
                Ok(beat) => {
                    self.health.succeeded(Operation::Heartbeat);
                    if !beat.was_alive {
                        tracing::debug!("heartbeat (re)registered");
                    }
                    if !beat.chores_claimed {
                        self.chores.claim_seen_free();
                    }
                }
                Err(e) => self.health.failed(Operation::Heartbeat, &e),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
