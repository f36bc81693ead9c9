//! Test helpers: a private `redis-server` per test, the real binary as child
//! processes, and assertions read straight from Redis.

use std::time::{Duration, Instant};

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, free_port};
use dsg_testkit::replica::Replica;
use fred::bytes::Bytes;
use fred::prelude::*;
use redis_dsg::config::Config;
use redis_dsg::redis::Redis;
pub use redis_dsg::service::Role;

/// The binary under test.
pub fn exe() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_redis-dsg").into()
}

/// One test's world: its own redis-server and a client to inspect it.
pub struct TestEnv {
    pub redis: LocalRedis,
    pub client: Redis,
    pub queue: String,
    pub errors: String,
    pub logs: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::with_redis_args(&[]).await
    }

    /// A world whose redis-server runs with `args` (`--maxmemory 8mb`, …).
    pub async fn with_redis_args(args: &[&str]) -> TestEnv {
        let redis = LocalRedis::start_with(args).expect("redis-server starts");
        let client = connect(&redis.url()).await;
        TestEnv {
            redis,
            client,
            queue: "q".into(),
            errors: "errors".into(),
            logs: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The typed settings of this test's replicas: this Redis, its lists,
    /// short timings ([`dsg_testkit::fleet::quick_config`]).
    pub fn config(&self) -> Config {
        let mut c = fleet::quick_config(&self.redis.url());
        c.redis.queue = self.queue.clone();
        c.redis.error_queue = self.errors.clone();
        c
    }

    /// Environment for a replica: [`TestEnv::config`] as its file, plus
    /// `extra` variables (which win, as in a pod).
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let base = fleet::env_for(&self.config(), self.logs.path(), "replica")
            .expect("replica configuration written");
        fleet::with_extra(base, extra)
    }

    /// Starts a replica (not waiting for readiness).
    pub fn start(&self, name: &str, extra: &[(&str, &str)]) -> Replica {
        Replica::start(
            &exe(),
            free_port(),
            &self.env(extra),
            &self.logs.path().join(format!("{name}.log")),
        )
        .expect("replica starts")
    }

    /// Starts a replica and waits until it is ready.
    pub async fn spawn(&self, name: &str, extra: &[(&str, &str)]) -> Replica {
        let mut r = self.start(name, extra);
        assert!(
            r.wait_ready(Duration::from_secs(15)).await,
            "{name} not ready:\n{}",
            log(&r)
        );
        r
    }

    pub async fn push(&self, key: &str, messages: &[Vec<u8>]) {
        for chunk in messages.chunks(1000) {
            let values: Vec<Value> = chunk
                .iter()
                .map(|m| Value::Bytes(Bytes::from(m.clone())))
                .collect();
            let _: u64 = self
                .client
                .client()
                .lpush(key, values)
                .await
                .expect("lpush");
        }
    }

    /// Pushes [`numbered`] messages 0 to `n - 1` onto this test's queue.
    pub async fn push_numbered(&self, n: u64) {
        self.push(&self.queue, &(0..n).map(numbered).collect::<Vec<_>>())
            .await;
    }

    pub async fn llen(&self, key: &str) -> u64 {
        self.client.client().llen(key).await.expect("llen")
    }

    /// All elements, oldest (rightmost) first.
    pub async fn all(&self, key: &str) -> Vec<Vec<u8>> {
        let mut out = self.client.list(key).await.expect("lrange");
        out.reverse();
        out
    }

    /// Messages held in the in-flight hash `key` (its marker field, see
    /// `keys::INFLIGHT_MARKER_FIELD`, is not a message).
    pub async fn held(&self, key: &str) -> u64 {
        let fields: Vec<String> = self.client.client().hkeys(key).await.expect("hkeys");
        fields.iter().filter(|f| f.parse::<u64>().is_ok()).count() as u64
    }
}

/// A client for the test's own commands (the product's default command
/// timeout).
pub async fn connect(url: &str) -> Redis {
    dsg_testkit::local_redis::connect(url, Duration::from_secs(5))
        .await
        .expect("test client connects")
}

pub use dsg_testkit::chaos::{number_of, numbered};

pub use dsg_testkit::wait::{eventually, poll};

/// The last lines of a replica's log, for failure messages.
pub fn log(r: &Replica) -> String {
    r.log_tail(dsg_testkit::replica::LOG_TAIL_LINES)
}

/// Payloads in the error list, decoded, oldest first.
pub async fn error_payloads(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    env.all(&env.errors)
        .await
        .iter()
        .map(|e| {
            let d = redis_dsg::service::error_entry::decode(e);
            (d.reason, d.payload)
        })
        .collect()
}

/// The numbers of the [`numbered`] messages in the error list, oldest
/// first.
pub async fn error_numbers(env: &TestEnv) -> Vec<u64> {
    error_payloads(env)
        .await
        .iter()
        .filter_map(|(_, p)| number_of(p))
        .collect()
}

/// Runs the binary to completion with `env` and `args`.
pub fn run_cli(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(exe())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("binary runs")
}

/// Its `/metrics` exposition (empty while it does not answer).
pub async fn metrics(r: &Replica) -> String {
    dsg_testkit::http_client::get(r.port(), "/metrics", Duration::from_secs(2))
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of `series` (name and labels exactly as exported, e.g.
/// `dsg_queue_length{queue="q"}`) in an exposition.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Its `/readyz` answer: status code, body, and how long it took.
pub async fn readyz(r: &Replica) -> (Option<u16>, String, Duration) {
    let started = Instant::now();
    let answer = dsg_testkit::http_client::get(r.port(), "/readyz", Duration::from_secs(3)).await;
    let took = started.elapsed();
    match answer {
        Some((code, body)) => (Some(code), body, took),
        None => (None, String::new(), took),
    }
}

/// Sends `signal` to a process (SIGSTOP/SIGCONT to freeze a redis-server
/// without closing its connections).
pub fn signal_pid(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions; pid is a child of the test.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// The whole log of a replica.
pub fn full_log(r: &Replica) -> String {
    std::fs::read_to_string(r.log()).unwrap_or_default()
}

/// Runs one command given as words (`["CONFIG", "SET", …]`) on `redis`.
pub async fn try_command<S: AsRef<str>>(
    redis: &Redis,
    args: &[S],
) -> Result<fred::types::Value, fred::error::Error> {
    let cmd = fred::types::CustomCommand::new(args[0].as_ref().to_string(), None::<u16>, false);
    let rest: Vec<String> = args[1..].iter().map(|a| a.as_ref().to_string()).collect();
    redis
        .client()
        .custom::<fred::types::Value, _>(cmd, rest)
        .await
}

/// [`try_command`] that must succeed (the test's own set-up and reads).
pub async fn command<S: AsRef<str> + std::fmt::Debug>(
    redis: &Redis,
    args: &[S],
) -> fred::types::Value {
    try_command(redis, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The bulk strings of a reply (an array's, or a single one).
pub fn bulk_strings(v: fred::types::Value) -> Vec<Vec<u8>> {
    match v {
        fred::types::Value::Array(items) => items
            .into_iter()
            .filter_map(redis_dsg::redis::value_bytes)
            .map(|b| b.to_vec())
            .collect(),
        other => redis_dsg::redis::value_bytes(other)
            .map(|b| vec![b.to_vec()])
            .unwrap_or_default(),
    }
}
