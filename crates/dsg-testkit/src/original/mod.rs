//! A stand-in for the original go-redis-dsg process, for tests of a mixed
//! fleet: its election through the global key `lock:gen`, its generator and
//! (optionally) its consumer, following the original's code (`main.go`,
//! `generator.go`, `util.go`, `consumer.go` of ekhabarov/go-redis-dsg) step
//! by step:
//!
//! - start: `SET lock:gen <uuid> EX <ping+5> NX`; `OK` → generator, else
//!   consumer.
//! - every `GENERATOR_PING_INTERVAL` seconds (a ticker: the first tick one
//!   interval after start, missed ticks dropped), by what it is doing:
//!   - generator: `SET … NX`; when that fails, the renewal `WATCH lock:gen`,
//!     `GET lock:gen`, and if it holds our uuid `MULTI`, `SET lock:gen
//!     <uuid> EX <ping+5> XX`, `EXEC` (else `UNWATCH`). Only "not refreshed"
//!     (another value, or none) stops the generator and starts the
//!     consumer; a connection problem, which includes an `EXEC` aborted by
//!     `WATCH` (redigo turns its nil reply into an error), keeps it
//!     generating.
//!   - consumer: `SET … NX`; `OK` → stop the consumer (its `Stop` sleeps
//!     1 s), start the generator.
//!   - neither: `SET … NX`; `OK` → generator, else consumer.
//! - the generator's start runs the renewal and ignores its outcome, then
//!   pushes `<uuid> at <Go time.Time.String()>` with `LPUSH` every
//!   `GENERATOR_INTERVAL` ms; a failed push ends it.
//! - after 300 s the process exits, without releasing `lock:gen`.
//!
//! So, like the original, it generates between checks whatever happened to
//! `lock:gen` meanwhile, and never deletes the key: a successor waits for
//! the TTL.
//!
//! One deviation, on purpose: the original's consumer blocks in `BRPOP q 0`,
//! so its `Stop` waits until a message arrives (it deadlocks on an empty
//! queue). The stand-in pops with a 1 s timeout unless
//! [`OriginalConfig::blocking_consumer`] is set.

mod go_format;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use go_format::{go_error_entry, go_message, go_quote, go_time_string};

/// The original's lock key: one for the whole database, whatever the queue.
pub const LOCK_NAME: &str = "lock:gen";

/// What an original process reads from its environment.
#[derive(Debug, Clone)]
pub struct OriginalConfig {
    /// `REDIS_URL`, as a `redis://` URL.
    pub redis_url: String,
    /// `REDIS_QUEUE`.
    pub queue: String,
    /// `REDIS_ERROR_QUEUE`.
    pub error_queue: String,
    /// `GENERATOR_PING_INTERVAL`, seconds (default 10). The lock's TTL is
    /// this plus 5 s.
    pub ping_interval_seconds: u64,
    /// `GENERATOR_INTERVAL`, milliseconds (default 500; the original panics
    /// on 0).
    pub interval_ms: u64,
    /// The hard exit (300 s in the original).
    pub exit_after: Duration,
    /// Whether to consume while not generating.
    pub consume: bool,
    /// Pop with `BRPOP q 0` like the original (its consumer's `Stop` then
    /// waits for a message), instead of a 1 s timeout.
    pub blocking_consumer: bool,
    /// Share of consumed messages written to the error list (the original's
    /// `n <= 5` of 0..99: 6 %).
    pub error_share: f64,
}

impl OriginalConfig {
    /// The original's defaults for a Redis at `redis_url`, queue `a`, error
    /// list `errors`.
    pub fn new(redis_url: impl Into<String>) -> OriginalConfig {
        OriginalConfig {
            redis_url: redis_url.into(),
            queue: "a".into(),
            error_queue: "errors".into(),
            ping_interval_seconds: 10,
            interval_ms: 500,
            exit_after: Duration::from_secs(300),
            consume: true,
            blocking_consumer: false,
            error_share: 0.06,
        }
    }

    /// The lock's TTL in seconds: ping interval + 5.
    pub fn lock_ttl_seconds(&self) -> i64 {
        i64::try_from(self.ping_interval_seconds).unwrap_or(i64::MAX - 5) + 5
    }
}

/// What a test can observe of a running stand-in.
#[derive(Debug, Default)]
struct Shared {
    generating: AtomicBool,
    consuming: AtomicBool,
    exited: AtomicBool,
    pushed: AtomicU64,
    consumed: AtomicU64,
    errors_written: AtomicU64,
    generator_starts: AtomicU64,
}

/// The ids of a process's connections, so killing it can close them all.
type ConnectionIds = Arc<Mutex<Vec<i64>>>;

fn take_ids(ids: &ConnectionIds) -> Vec<i64> {
    std::mem::take(&mut *ids.lock().unwrap_or_else(PoisonError::into_inner))
}

/// One original process.
#[derive(Debug)]
pub struct OriginalStandIn {
    name: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    consumer: Arc<tokio::sync::Mutex<Option<ConsumerHandle>>>,
    admin: Client,
    connection_ids: ConnectionIds,
}

/// The renewal's outcome (`RefreshLock`'s return values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `LOCK_REFRESHED`.
    Refreshed,
    /// `LOCK_NOT_REFRESHED`: the key holds another value or is gone.
    NotRefreshed,
    /// `CONNECTION_PROBLEM`, including an `EXEC` aborted by `WATCH`.
    ConnectionProblem,
}

impl OriginalStandIn {
    /// Starts a process (like running the binary).
    pub async fn start(cfg: OriginalConfig) -> Result<OriginalStandIn, Error> {
        let name = uuid::Uuid::new_v4().to_string();
        let shared = Arc::new(Shared::default());
        let connection_ids = ConnectionIds::default();
        let election = connect(&cfg.redis_url, &connection_ids).await?;
        let generator = connect(&cfg.redis_url, &connection_ids).await?;
        let admin = connect(&cfg.redis_url, &ConnectionIds::default()).await?;
        let consumer = Arc::new(tokio::sync::Mutex::new(None));
        let process = Process {
            cfg,
            name: name.clone(),
            shared: shared.clone(),
            election,
            generator,
            consumer: consumer.clone(),
            connection_ids: connection_ids.clone(),
            started: Instant::now(),
        };
        let task = tokio::spawn(process.run());
        Ok(OriginalStandIn {
            name,
            shared,
            task,
            consumer,
            admin,
            connection_ids,
        })
    }

    /// Its uuid, the value it writes to `lock:gen`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its generator loop runs at this instant (`isActive`).
    pub fn is_generating(&self) -> bool {
        self.shared.generating.load(Ordering::SeqCst)
    }

    /// Whether its consumer runs at this instant.
    pub fn is_consuming(&self) -> bool {
        self.shared.consuming.load(Ordering::SeqCst)
    }

    /// Whether it reached its hard exit.
    pub fn has_exited(&self) -> bool {
        self.shared.exited.load(Ordering::SeqCst)
    }

    /// Messages pushed so far.
    pub fn pushed(&self) -> u64 {
        self.shared.pushed.load(Ordering::SeqCst)
    }

    /// Messages consumed so far.
    pub fn consumed(&self) -> u64 {
        self.shared.consumed.load(Ordering::SeqCst)
    }

    /// Entries written to the error list so far.
    pub fn errors_written(&self) -> u64 {
        self.shared.errors_written.load(Ordering::SeqCst)
    }

    /// How often its generator started.
    pub fn generator_starts(&self) -> u64 {
        self.shared.generator_starts.load(Ordering::SeqCst)
    }

    /// Ends the process at once, like SIGKILL: nothing is released, its
    /// connections are closed (a blocked `BRPOP` ends with them), and
    /// `lock:gen` stays until its TTL runs out.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(c) = self.consumer.lock().await.take() {
            c.task.abort();
        }
        self.shared.generating.store(false, Ordering::SeqCst);
        self.shared.consuming.store(false, Ordering::SeqCst);
        for id in take_ids(&self.connection_ids) {
            client_kill(&self.admin, id).await;
        }
        let _ = self.admin.quit().await;
    }
}

/// A fred client of its own (one connection, like one pooled redigo
/// connection per goroutine), never re-sending a command after a drop and
/// never reconnecting: a dropped connection is a dead process here.
async fn connect(url: &str, ids: &ConnectionIds) -> Result<Client, Error> {
    let client = Builder::from_config(Config::from_url(url)?)
        .with_connection_config(|c| c.max_command_attempts = 1)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(0))
        .build()?;
    client.init().await?;
    let id: i64 = client.custom(cmd("CLIENT"), vec!["ID"]).await?;
    ids.lock().unwrap_or_else(PoisonError::into_inner).push(id);
    Ok(client)
}

async fn client_kill(admin: &Client, id: i64) {
    let _: Result<Value, _> = admin
        .custom(
            cmd("CLIENT"),
            vec![Value::from("KILL"), "ID".into(), id.into()],
        )
        .await;
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// The running consumer: its task and the way to stop it.
#[derive(Debug)]
struct ConsumerHandle {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

/// The process: the pinger and the generator loop run in this one task
/// (the original runs them as goroutines; the pinger's checks and the
/// pushes are short, so the order of events is the same).
struct Process {
    cfg: OriginalConfig,
    name: String,
    shared: Arc<Shared>,
    election: Client,
    generator: Client,
    consumer: Arc<tokio::sync::Mutex<Option<ConsumerHandle>>>,
    connection_ids: ConnectionIds,
    started: Instant,
}

/// The generator's next tick; never while it does not run.
async fn next_push(generating: &mut Option<tokio::time::Interval>) {
    match generating {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Process {
    async fn run(self) {
        let ping = Duration::from_secs(self.cfg.ping_interval_seconds);
        let exit = tokio::time::sleep(self.cfg.exit_after);
        tokio::pin!(exit);
        // main(): AcquireLock → go g.Start(), else c.Start().
        let mut generating = None;
        if self.acquire_lock().await {
            generating = Some(self.generator_start().await);
        } else {
            self.consumer_start().await;
        }
        // Go's ticker fires first one period after creation and drops ticks
        // a slow receiver missed.
        let mut pinger = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
        pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut exit => break,
                _ = pinger.tick() => self.ping(&mut generating).await,
                _ = next_push(&mut generating) => self.push(&mut generating).await,
            }
        }
        self.hard_exit().await;
    }

    /// `StartPing`'s body, once per tick.
    async fn ping(&self, generating: &mut Option<tokio::time::Interval>) {
        if self.shared.generating.load(Ordering::SeqCst) {
            if !self.acquire_lock().await && self.refresh_lock().await == Refresh::NotRefreshed {
                self.generator_stop(generating);
                self.consumer_start().await;
            }
        } else if self.shared.consuming.load(Ordering::SeqCst) {
            if self.acquire_lock().await {
                self.consumer_stop().await;
                *generating = Some(self.generator_start().await);
            }
        } else if self.acquire_lock().await {
            *generating = Some(self.generator_start().await);
        } else {
            self.consumer_start().await;
        }
    }

    /// One message, `<uuid> at <time>`; a failed push ends the generator
    /// ("messages: unable to push to redis").
    async fn push(&self, generating: &mut Option<tokio::time::Interval>) {
        let message = go_message(self.started);
        let pushed: Result<i64, _> = self.generator.lpush(self.cfg.queue.as_str(), message).await;
        match pushed {
            Ok(_) => {
                self.shared.pushed.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => self.generator_stop(generating),
        }
    }

    /// The 300 s exit: like a kill, nothing is released.
    async fn hard_exit(&self) {
        self.shared.generating.store(false, Ordering::SeqCst);
        if let Some(c) = self.consumer.lock().await.take() {
            c.task.abort();
        }
        self.shared.consuming.store(false, Ordering::SeqCst);
        let own: Option<i64> = self.election.custom(cmd("CLIENT"), vec!["ID"]).await.ok();
        for id in take_ids(&self.connection_ids) {
            if Some(id) != own {
                client_kill(&self.election, id).await;
            }
        }
        let _ = self.election.quit().await;
        self.shared.exited.store(true, Ordering::SeqCst);
    }

    /// `AcquireLock`: `SET lock:gen <uuid> EX <ping+5> NX`; an error is
    /// "not acquired".
    async fn acquire_lock(&self) -> bool {
        let reply: Result<Option<String>, _> = self
            .election
            .set(
                LOCK_NAME,
                self.name.as_str(),
                Some(Expiration::EX(self.cfg.lock_ttl_seconds())),
                Some(SetOptions::NX),
                false,
            )
            .await;
        matches!(reply.as_ref().map(|r| r.as_deref()), Ok(Some("OK")))
    }

    /// `RefreshLock`: `WATCH`, `GET`, then `MULTI`/`SET … XX`/`EXEC` when
    /// the key holds our uuid, else `UNWATCH`.
    async fn refresh_lock(&self) -> Refresh {
        let c = &self.election;
        if c.watch(LOCK_NAME).await.is_err() {
            return Refresh::ConnectionProblem;
        }
        let current: Option<String> = match c.get(LOCK_NAME).await {
            Ok(v) => v,
            Err(_) => return Refresh::ConnectionProblem,
        };
        if current.as_deref() != Some(self.name.as_str()) {
            return match c.unwatch().await {
                Ok(()) => Refresh::NotRefreshed,
                Err(_) => Refresh::ConnectionProblem,
            };
        }
        // redigo's Send only buffers MULTI and SET; Do("EXEC") flushes all
        // three. Their replies (OK, QUEUED) are read and dropped. (No
        // `transactions` feature in the workspace's fred: custom commands on
        // this dedicated connection, awaited in order.)
        let multi: Result<Value, _> = c.custom(cmd("MULTI"), Vec::<Value>::new()).await;
        let set: Result<Value, _> = c
            .custom(
                cmd("SET"),
                vec![
                    Value::from(LOCK_NAME),
                    self.name.as_str().into(),
                    "EX".into(),
                    self.cfg.lock_ttl_seconds().into(),
                    "XX".into(),
                ],
            )
            .await;
        let exec: Result<Value, _> = c.custom(cmd("EXEC"), Vec::<Value>::new()).await;
        if multi.is_err() || set.is_err() {
            return Refresh::ConnectionProblem;
        }
        match exec {
            // redis.Values(nil) is ErrNil: "unable to execute EXEC".
            Ok(Value::Null) | Err(_) => Refresh::ConnectionProblem,
            Ok(Value::Array(replies)) if matches!(replies.first(), Some(v) if v.as_str().as_deref() == Some("OK")) => {
                Refresh::Refreshed
            }
            Ok(_) => Refresh::NotRefreshed,
        }
    }

    /// `g.Start()`: the renewal (its result is ignored), then the loop.
    async fn generator_start(&self) -> tokio::time::Interval {
        let _ = self.refresh_lock().await;
        self.shared.generator_starts.fetch_add(1, Ordering::SeqCst);
        self.shared.generating.store(true, Ordering::SeqCst);
        let interval = Duration::from_millis(self.cfg.interval_ms.max(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    fn generator_stop(&self, generating: &mut Option<tokio::time::Interval>) {
        *generating = None;
        self.shared.generating.store(false, Ordering::SeqCst);
    }

    /// `c.Start()`: a consumer task popping the queue.
    async fn consumer_start(&self) {
        if !self.cfg.consume {
            return;
        }
        let mut slot = self.consumer.lock().await;
        if slot.as_ref().is_some_and(|c| !c.task.is_finished()) {
            return;
        }
        // c.Ping() failed: the consumer is not active.
        let Ok(client) = connect(&self.cfg.redis_url, &self.connection_ids).await else {
            return;
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        self.shared.consuming.store(true, Ordering::SeqCst);
        let task = tokio::spawn(consume(
            self.cfg.clone(),
            client,
            self.shared.clone(),
            stop_rx,
        ));
        *slot = Some(ConsumerHandle {
            task,
            stop: Some(stop_tx),
        });
    }

    /// `c.Stop()`: asks the consumer to stop and waits until it did (after
    /// its current pop returns, plus the original's 1 s sleep).
    async fn consumer_stop(&self) {
        let Some(mut c) = self.consumer.lock().await.take() else {
            return;
        };
        if let Some(stop) = c.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        self.shared.consuming.store(false, Ordering::SeqCst);
    }
}

/// The consumer loop: `BRPOP`, 6 % of messages to the error list as
/// `m:%q e:%q`.
async fn consume(
    cfg: OriginalConfig,
    client: Client,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let timeout = if cfg.blocking_consumer { 0.0 } else { 1.0 };
    loop {
        if let Ok(done) = stop.try_recv() {
            // "dirty hack, should wait before closing c.out"
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client.quit().await;
            let _ = done.send(());
            return;
        }
        let popped: Result<Option<(String, fred::bytes::Bytes)>, _> =
            client.brpop(cfg.queue.as_str(), timeout).await;
        match popped {
            Ok(Some((_, msg))) => {
                shared.consumed.fetch_add(1, Ordering::SeqCst);
                if rand::random::<f64>() < cfg.error_share {
                    let code = rand::random_range(0..1000u32);
                    let entry = go_error_entry(&msg, &format!("Error code {code}"));
                    let pushed: Result<i64, _> =
                        client.lpush(cfg.error_queue.as_str(), entry).await;
                    if pushed.is_ok() {
                        shared.errors_written.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            // A server-side timeout comes back as an error of kind Timeout.
            Ok(None) => {}
            Err(e) if *e.kind() == ErrorKind::Timeout => {}
            Err(_) => {
                shared.consuming.store(false, Ordering::SeqCst);
                return;
            }
        }
    }
}
