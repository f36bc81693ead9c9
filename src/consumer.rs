//! The consumer role: at-least-once processing of the queue.
//!
//! A message is moved atomically from the queue into this consumer's
//! in-flight hash ([`crate::keys::FETCH`]) before it is processed, and
//! removed from it only after processing finished: `ok` → `HDEL`; invalid,
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use fred::types::lists::LMoveDirection;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::error_entry::{self, Reason};
use crate::keys::{ACK_ERROR, ACK_OUTPUT, FETCH, HEARTBEAT, Keys, RETURN_INFLIGHT};
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
        Consumer {
            redis,
            keys,
            id,
            cfg,
            metrics,
            processor,
            heartbeat_value,
        }
    }

    /// Consumes while `gate` is true, until `stop` fires; then finishes
    /// in-flight work within `drain_budget`, returns what is left to the
    /// queue, and unregisters.
    pub async fn run(
        self: Arc<Self>,
        mut gate: watch::Receiver<bool>,
        stop: CancellationToken,
        drain_budget: Duration,
    ) {
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(heartbeat_stop.clone()));
        // The acker gives up retrying only once the drain budget is spent.
        let give_up = CancellationToken::new();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(self.clone().acker(ack_rx, give_up.clone()));
        let permits = Arc::new(Semaphore::new(self.cfg.max_concurrency));
        let mut tasks = JoinSet::new();

        self.fetch_loop(&mut gate, &stop, &permits, &mut tasks, &ack_tx)
            .await;

        let deadline = tokio::time::Instant::now() + drain_budget;
        let held = tasks.len();
        if held > 0 {
            tracing::info!(held, "finishing in-flight messages before stopping");
        }
        let finished = tokio::time::timeout_at(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "drain budget spent; returning unfinished messages to the queue"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(ack_tx);
        // Acks already queued get until the deadline to reach Redis.
        let give_up_at = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            give_up_at.cancel();
        });
        let _ = acker.await;
        // Stop the heartbeat first: one arriving after the return would
        // register this consumer again.
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        self.return_all(deadline.into_std()).await;
    }

    async fn fetch_loop(
        self: &Arc<Self>,
        gate: &mut watch::Receiver<bool>,
        stop: &CancellationToken,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        ack_tx: &mpsc::UnboundedSender<Ack>,
    ) {
        // Delivery ids only need to be unique within this consumer's hash;
        // a local counter that never goes back saves a round trip.
        let mut next_id: u64 = 1;
        let mut errors = 0u32;
        // A blocking wait may have parked one message in the landing list;
        // it is adopted even while paused, or it would wait for the pause.
        let mut landing_pending = false;
        loop {
            while tasks.try_join_next().is_some() {}
            if stop.is_cancelled() {
                return;
            }
            if !*gate.borrow() && !landing_pending {
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
            let first = next_id;
            next_id += want as u64;
            match self.fetch(want, first).await {
                Ok(deliveries) => {
                    errors = 0;
                    landing_pending = false;
                    if deliveries.is_empty() {
                        drop(permit);
                        if *gate.borrow() {
                            landing_pending = self.block_wait(stop).await;
                        }
                        continue;
                    }
                    self.metrics.add_in_flight(deliveries.len() as i64);
                    for d in deliveries {
                        // `permit` holds `want` ≥ number of deliveries.
                        let Some(one) = permit.split(1) else { break };
                        let this = self.clone();
                        let tx = ack_tx.clone();
                        tasks.spawn(async move {
                            let ack = this.handle(d, one).await;
                            // The acker lives until every sender is gone.
                            let _ = tx.send(ack);
                        });
                    }
                }
                Err(e) => {
                    drop(permit);
                    self.metrics.record_redis_error("fetch");
                    errors += 1;
                    if errors == 1 || errors % 50 == 0 {
                        tracing::warn!(error = %e, "fetch failed; retrying");
                    }
                    // The fetch may have run without its reply reaching us:
                    // what it moved is in our hash and comes back through
                    // the reaper or our own return at shutdown, never lost.
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
                    self.keys.landing(&self.id),
                    self.keys.heartbeat(&self.id),
                    self.keys.consumers(),
                ],
                vec![
                    int(n as u64),
                    int(first_id),
                    int(self.cfg.heartbeat_ttl_ms),
                    int(self.cfg.max_message_bytes as u64),
                    self.id.as_str().into(),
                    self.heartbeat_value.as_str().into(),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(reply.len() / 2);
        let mut it = reply.into_iter();
        while let (Some(id), Some(body)) = (it.next(), it.next()) {
            let id = id.as_u64().ok_or_else(|| RedisError::Reply {
                script: FETCH.name,
                detail: "delivery id is not a number".into(),
            })?;
            let body = match body {
                Value::Integer(size) => Body::Oversized(size.max(0) as u64),
                other => Body::Bytes(value_bytes(other).unwrap_or_default()),
            };
            out.push(Delivery { id, body });
        }
        Ok(out)
    }

    /// Waits on the empty queue with `BLMOVE` into the landing list (a Lua
    /// script cannot block). Returns whether a message landed.
    async fn block_wait(&self, stop: &CancellationToken) -> bool {
        if stop.is_cancelled() {
            return false;
        }
        let block = Duration::from_millis(self.cfg.block_timeout_ms);
        let opts = Options {
            max_attempts: Some(1),
            // The client timeout must outlast the server-side block.
            timeout: Some(block + self.redis.command_timeout()),
            ..Default::default()
        };
        let moved = self
            .redis
            .blocking()
            .with_options(&opts)
            .blmove::<Option<Bytes>, _, _>(
                self.keys.queue.as_str(),
                self.keys.landing(&self.id),
                LMoveDirection::Right,
                LMoveDirection::Left,
                block.as_secs_f64(),
            )
            .await;
        match moved {
            Ok(Some(_)) => true,
            Ok(None) => false,
            // A server-side block timeout arrives as an error of kind Timeout.
            Err(e) if *e.kind() == ErrorKind::Timeout => false,
            Err(e) => {
                self.metrics.record_redis_error("block");
                tracing::debug!(error = %e, "blocking wait failed");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                // It may have moved a message before failing.
                true
            }
        }
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

    /// Sends acknowledgements in batches; permits go back when their
    /// acknowledgement reached Redis.
    async fn acker(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Ack>,
        give_up: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(1024);
        while rx.recv_many(&mut batch, 1024).await > 0 {
            let mut errors = 0u32;
            loop {
                match self.flush(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.metrics.record_redis_error("ack");
                        errors += 1;
                        if errors == 1 {
                            tracing::warn!(error = %e, pending = batch.len(), "acknowledgement failed; retrying");
                        }
                        let delay = Duration::from_millis(50u64 << errors.min(5))
                            .min(Duration::from_secs(2));
                        tokio::select! {
                            _ = give_up.cancelled() => {
                                // Unacknowledged messages stay in our hash;
                                // our return (or a reaper) puts them back.
                                tracing::warn!(pending = batch.len(), "giving up on acknowledgements");
                                break;
                            }
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            self.metrics.add_in_flight(-(batch.len() as i64));
            batch.clear();
        }
    }

    /// Acknowledges a batch; idempotent, so a retry after an unknown
    /// outcome is safe.
    async fn flush(&self, batch: &[Ack]) -> Result<(), RedisError> {
        let inflight = self.keys.inflight(&self.id);
        let ok_ids: Vec<String> = batch
            .iter()
            .filter(|a| a.header.is_none())
            .map(|a| a.id.to_string())
            .collect();
        let mut error_args = Vec::new();
        let mut error_outcomes = Vec::new();
        for a in batch {
            if let Some(h) = &a.header {
                error_args.push(int(a.id));
                error_args.push(Value::from(h.as_str()));
                error_outcomes.push(a.outcome);
            }
        }
        let oks = async {
            if ok_ids.is_empty() {
                return Ok(0);
            }
            match &self.cfg.output_queue {
                // The hand-off and the acknowledgement are one step.
                Some(output) => {
                    self.redis
                        .run::<u64>(
                            &ACK_OUTPUT,
                            vec![inflight.clone(), output.clone()],
                            ok_ids.iter().map(|id| Value::from(id.as_str())).collect(),
                        )
                        .await
                }
                None => self
                    .redis
                    .client()
                    .hdel::<u64, _, _>(inflight.as_str(), ok_ids.clone())
                    .await
                    .map_err(RedisError::from),
            }
        };
        let errs = async {
            if error_args.is_empty() {
                return Ok(Vec::new());
            }
            self.redis
                .run::<Vec<i64>>(
                    &ACK_ERROR,
                    vec![inflight.clone(), self.keys.error_queue.clone()],
                    error_args.clone(),
                )
                .await
        };
        let (oks, errs) = tokio::join!(oks, errs);
        // Count each part once it succeeded, even if the other failed: a
        // retry of the succeeded part finds nothing and counts nothing.
        let mut late = 0u64;
        let mut failed = None;
        match oks {
            Ok(removed) => {
                for _ in 0..removed {
                    self.metrics.record_processed(Outcome::Ok);
                }
                late += ok_ids.len() as u64 - removed.min(ok_ids.len() as u64);
            }
            Err(e) => failed = Some(e),
        }
        match errs {
            Ok(flags) => {
                for (flag, outcome) in flags.iter().zip(&error_outcomes) {
                    if *flag == 1 {
                        self.metrics.record_processed(*outcome);
                    } else {
                        late += 1;
                    }
                }
            }
            Err(e) => failed = Some(e),
        }
        if late > 0 {
            self.metrics.record_late_acks(late);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Returns everything this consumer still holds to the queue and
    /// unregisters it; retried until `deadline`.
    async fn return_all(&self, deadline: Instant) {
        loop {
            match self.return_once().await {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(returned = n, "returned unfinished messages to the queue");
                    return;
                }
                Err(e) => {
                    self.metrics.record_redis_error("return");
                    if Instant::now() + Duration::from_millis(200) >= deadline {
                        tracing::warn!(error = %e, "could not return in-flight messages; a reaper will once the heartbeat expires");
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
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
                    self.keys.landing(&self.id),
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
