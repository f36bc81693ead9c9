//! The chaos soak (`cargo dsg chaos`, and the CI test): real faults, and a check that nothing is lost.
//!
//! It runs a `redis-server` with `appendonly yes` and `appendfsync always`,
//! N replicas in `auto` mode with an output list, connected through a TCP
//! proxy, and an external producer pushing numbered messages at a steady
//! rate (each number exactly once, with an idempotent script) beside the
//! built-in generator. For the given duration it injects faults at random
//! times, in shuffled rounds so every kind occurs: SIGKILL of a replica
//! (then a restart), SIGSTOP longer than the lease TTL (then SIGCONT),
//! SIGTERM (then a restart), a Redis crash and restart, and a cut of every
//! connection through the proxy. Half the replica faults hit the generator.
//!
//! Then it stops the faults and checks: exactly one generator and every
//! replica ready; then it stops generation, drains with consumers only, and
//! checks every numbered message and every generated message (known from
//! Redis' own `MONITOR` stream, see [`crate::fencing_audit`]) is in the
//! output or error list exactly once, and that no generator wrote after it
//! lost its lease. It prints a summary and exits 1 on any violation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use fred::prelude::*;
use fred::types::Value;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use redis_dsg::config::{Config, RedisUrl};
use redis_dsg::redis::{Keys, Redis, Script, int};
use redis_dsg::service::error_entry;

use crate::fencing_audit::{self, Audit};
use crate::local_redis::{LocalRedis, free_port};
use crate::proxy::Proxy;
use crate::replica::Replica;

/// Flags of `chaos` (the defaults are the long soak's).
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seconds of faults.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Replicas in `auto` mode.
    #[arg(long, default_value_t = 5)]
    pub replicas: usize,
    /// Numbered messages per second from the external producer.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Mean pause between faults, milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub fault_gap_ms: u64,
    /// Seed of the fault schedule (random when omitted).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Default for ChaosArgs {
    fn default() -> ChaosArgs {
        ChaosArgs {
            duration: 120,
            replicas: 5,
            rate: 200,
            fault_gap_ms: 1500,
            seed: None,
            json: false,
        }
    }
}

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL a replica, then start it again.
    Kill,
    /// SIGSTOP a replica past the lease TTL, then SIGCONT.
    Stop,
    /// SIGTERM a replica, then start it again.
    Term,
    /// SIGKILL redis-server, then start it again (AOF reload).
    RedisRestart,
    /// Drop every connection through the proxy.
    Cut,
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Term => "term",
            Fault::RedisRestart => "redis_restart",
            Fault::Cut => "cut",
        }
    }
}

const FAULTS: [Fault; 5] = [
    Fault::Kill,
    Fault::Stop,
    Fault::Term,
    Fault::RedisRestart,
    Fault::Cut,
];

/// The outcome of a soak.
#[derive(Debug, Default, Serialize)]
pub struct ChaosSummary {
    /// The seed of the fault schedule.
    pub seed: u64,
    /// Seconds of faults.
    pub duration_seconds: u64,
    /// Faults injected, by kind.
    pub faults: HashMap<String, u64>,
    /// Numbered messages the producer pushed.
    pub produced: u64,
    /// Messages the generators wrote (from MONITOR).
    pub generated: u64,
    /// Entries in the output list.
    pub processed: u64,
    /// Entries in the error list.
    pub errored: u64,
    /// Messages found more than once (numbered or generated).
    pub duplicates: u64,
    /// Messages found nowhere.
    pub lost: u64,
    /// Late acknowledgements reported by the replicas.
    pub late_acks: u64,
    /// Fenced writes Redis refused (from MONITOR).
    pub fenced_rejections: u64,
    /// Writes under a lost lease (from MONITOR); must be 0.
    pub fencing_violations: u64,
    /// Generators at the end; must be 1.
    pub generators_at_end: usize,
    /// Replicas not ready at the end; must be 0.
    pub stuck_replicas: usize,
    /// Takeover after a fault that hit the generator, p99, ms.
    pub takeover_p99_ms: f64,
    /// Takeover after a fault that hit the generator, max, ms.
    pub takeover_max_ms: f64,
    /// Each violated invariant, in words.
    pub violations: Vec<String>,
}

/// Runs the soak with the redis-dsg binary `exe` and prints its summary;
/// returns the exit code (0 when every invariant held, 1 otherwise).
pub async fn run(exe: &Path, args: &ChaosArgs) -> u8 {
    match soak(exe, args).await {
        Ok(summary) => {
            if args.json {
                // A struct of numbers, strings and maps always serializes.
                let json = serde_json::to_string_pretty(&summary).expect("the summary serializes");
                println!("{json}");
            } else {
                print!("{}", render(&summary));
            }
            u8::from(!summary.violations.is_empty())
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            1
        }
    }
}

/// The soak's external producer: pushes message number N only once,
/// however often a push is retried after an error whose outcome is unknown.
///
/// KEYS: queue, set of numbers pushed. ARGV: N, message.
/// Returns 1 when pushed, 0 when N was pushed before.
static PRODUCE_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "produce_once",
        r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn say(what: &str) {
    eprintln!("chaos: {what}");
}

/// Numbered message `n`: well-formed, its number readable back.
pub fn numbered(n: u64) -> Vec<u8> {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("00000000-0000-4000-8000-{n:012} {ts}").into_bytes()
}

/// The number of a [`numbered`] message.
pub fn number_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .strip_prefix("00000000-0000-4000-8000-")?
        .get(..12)?
        .parse()
        .ok()
}

struct World {
    exe: std::path::PathBuf,
    logs: std::path::PathBuf,
    env: Vec<(String, String)>,
    replicas: Vec<Replica>,
}

impl World {
    fn start_replica(&self, i: usize, mode: &str) -> Result<Replica, String> {
        let mut env = self.env.clone();
        env.push(("MODE".into(), mode.into()));
        Replica::start(
            &self.exe,
            free_port(),
            &env,
            &self.logs.join(format!("replica-{i}.log")),
        )
        .map_err(|e| format!("cannot start a replica: {e}"))
    }
}

/// Runs the soak with the redis-dsg binary `exe` and returns its summary
/// (an `Err` only when it could not run at all).
pub async fn soak(exe: &Path, args: &ChaosArgs) -> Result<ChaosSummary, String> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let exe = exe.to_path_buf();
    let logs = std::env::temp_dir().join(format!("redis-dsg-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    say(&format!("seed {seed}; logs in {}", logs.display()));

    // Durable Redis: every acknowledged write survives a crash. No AOF
    // rewrite, so the file keeps the whole history of pushes.
    let mut redis = LocalRedis::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--auto-aof-rewrite-percentage",
        "0",
    ])?;
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into())
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let keys = Keys::new("chaos", "{chaos}:errors");
    let output = "{chaos}:out".to_string();
    let produced_set = "{chaos}:produced".to_string();

    let stop_all = CancellationToken::new();
    let audit = Arc::new(Mutex::new(Audit::new(&keys.lease(), &keys.queue)));
    let monitor = tokio::spawn(fencing_audit::follow(
        redis.port(),
        audit.clone(),
        stop_all.clone(),
    ));

    let mut cfg = Config::default();
    cfg.redis.url = RedisUrl::new(redis.url());
    cfg.redis.command_timeout_ms = 1000;
    cfg.redis.reconnect_max_delay_ms = 200;
    let client = Redis::for_service(&cfg.redis).map_err(|e| e.to_string())?;
    client.connect();
    client.wait_connected().await.map_err(|e| e.to_string())?;

    let mut config = crate::fleet::quick_config(&format!("127.0.0.1:{}", proxy.port()));
    config.redis.queue = keys.queue.clone();
    config.redis.error_queue = keys.error_queue.clone();
    config.consumer.output_queue = Some(output.clone());
    config.generator.interval_ms = 20;
    config.consumer.heartbeat_ttl_ms = 1_500;
    config.consumer.heartbeat_interval_ms = 300;
    config.processor.max_ms = 20;
    config.shutdown.timeout_ms = 4_000;
    let env = crate::fleet::env_for(&config, &logs, "replica")?;
    let mut world = World {
        exe,
        logs: logs.clone(),
        env,
        replicas: Vec::new(),
    };
    for i in 0..args.replicas {
        let r = world.start_replica(i, "auto")?;
        world.replicas.push(r);
    }
    for r in world.replicas.iter_mut() {
        if !r.wait_ready(Duration::from_secs(20)).await {
            return Err(format!(
                "a replica did not become ready; see {}",
                r.log().display()
            ));
        }
    }

    // The external producer: each number exactly once, whatever fails.
    let produced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer_stop = CancellationToken::new();
    let producer = {
        let (client, keys, set, produced, stop) = (
            client.clone(),
            keys.clone(),
            produced_set.clone(),
            produced.clone(),
            producer_stop.clone(),
        );
        let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut n = 0u64;
            while !stop.is_cancelled() {
                tick.tick().await;
                loop {
                    let pushed = client
                        .run::<i64>(
                            &PRODUCE_ONCE,
                            vec![keys.queue.clone(), set.clone()],
                            vec![int(n), Value::Bytes(numbered(n).into())],
                        )
                        .await;
                    if pushed.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                n += 1;
                produced.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };

    // Faults, in shuffled rounds so every kind occurs.
    say(&format!(
        "{} replicas ready; injecting faults for {} s",
        args.replicas, args.duration
    ));
    let mut faults: HashMap<String, u64> = HashMap::new();
    let mut generator_faults: Vec<f64> = Vec::new();
    let mut late_acks_by_pid: HashMap<u32, u64> = HashMap::new();
    let started = Instant::now();
    let mut round: Vec<Fault> = Vec::new();
    while started.elapsed() < Duration::from_secs(args.duration) {
        let gap = rng.random_range(args.fault_gap_ms / 2..=args.fault_gap_ms * 3 / 2);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        collect_late_acks(&world.replicas, &mut late_acks_by_pid).await;
        if round.is_empty() {
            round = FAULTS.to_vec();
            round.shuffle(&mut rng);
        }
        let Some(fault) = round.pop() else { continue };
        let generator = find_generator(&world.replicas).await;
        let target = match generator {
            Some(g) if rng.random_bool(0.5) => g,
            _ => rng.random_range(0..world.replicas.len()),
        };
        let hits_generator =
            generator == Some(target) && matches!(fault, Fault::Kill | Fault::Stop | Fault::Term);
        let at = now_unix();
        match fault {
            Fault::Kill => {
                world.replicas[target].signal(libc::SIGKILL);
                let _ = world.replicas[target].wait_timeout(Duration::from_secs(5));
                world.replicas[target]
                    .restart()
                    .map_err(|e| e.to_string())?;
            }
            Fault::Stop => {
                world.replicas[target].signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1200..2500))).await;
                world.replicas[target].signal(libc::SIGCONT);
            }
            Fault::Term => {
                world.replicas[target].signal(libc::SIGTERM);
                if world.replicas[target]
                    .wait_timeout(Duration::from_secs(8))
                    .is_none()
                {
                    world.replicas[target].signal(libc::SIGKILL);
                    let _ = world.replicas[target].wait_timeout(Duration::from_secs(5));
                }
                world.replicas[target]
                    .restart()
                    .map_err(|e| e.to_string())?;
            }
            Fault::RedisRestart => {
                redis.kill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
                redis.restart()?;
            }
            Fault::Cut => proxy.cut(),
        }
        if hits_generator {
            generator_faults.push(at);
        }
        *faults.entry(fault.as_str().to_string()).or_default() += 1;
    }
    say("faults stopped; checking the fleet");
    for r in world.replicas.iter_mut() {
        r.signal(libc::SIGCONT);
        if r.try_wait().is_some() {
            r.restart().map_err(|e| e.to_string())?;
        }
    }
    let mut summary = ChaosSummary {
        seed,
        duration_seconds: args.duration,
        faults,
        ..Default::default()
    };

    // Exactly one generator and every replica ready, once things settle.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let generators = count_generators(&world.replicas).await;
        let mut not_ready = 0;
        for r in &world.replicas {
            if !matches!(
                crate::http_client::get(r.port(), "/readyz", Duration::from_secs(2)).await,
                Some((200, _))
            ) {
                not_ready += 1;
            }
        }
        summary.generators_at_end = generators;
        summary.stuck_replicas = not_ready;
        if (generators == 1 && not_ready == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    collect_late_acks(&world.replicas, &mut late_acks_by_pid).await;

    // Stop producing and generating, then drain with consumers only.
    producer_stop.cancel();
    let _ = producer.await;
    summary.produced = produced.load(std::sync::atomic::Ordering::Relaxed);
    say("draining with consumers only");
    for r in world.replicas.iter_mut() {
        r.stop(Duration::from_secs(8));
    }
    collect_late_acks(&world.replicas, &mut late_acks_by_pid).await;
    let mut drainers = Vec::new();
    for i in 0..args.replicas.min(2) {
        drainers.push(world.start_replica(100 + i, "consumer")?);
    }
    let drained = drain(&client, &keys).await;
    collect_late_acks(&drainers, &mut late_acks_by_pid).await;
    for d in drainers.iter_mut() {
        d.stop(Duration::from_secs(8));
    }
    if !drained {
        summary
            .violations
            .push("the queue did not drain within 120 s".into());
    }

    // Redis-side evidence.
    stop_all.cancel();
    let _ = monitor.await;
    let report = audit
        .lock()
        .map(|mut a| a.report())
        .map_err(|_| "audit lock poisoned")?;
    // What the generators wrote durably: the pushes in the append-only
    // file. MONITOR also shows pushes Redis executed just before a crash
    // and never made durable (nor acknowledged).
    let mut generated = durable_pushes(redis.dir(), &keys.queue)?;
    generated.retain(|m, _| number_of(m).is_none() && report.generated.contains_key(m));
    summary.generated = generated.values().map(|&n| u64::from(n)).sum();
    summary.fenced_rejections = report.rejected_pushes;
    summary.fencing_violations = report.violations.len() as u64;
    for v in report.violations.iter().take(5) {
        summary.violations.push(format!("fencing: {v}"));
    }
    summary.late_acks = late_acks_by_pid.values().sum();
    let takeovers: Vec<f64> = generator_faults
        .iter()
        .filter_map(|&at| {
            report
                .acquisitions
                .iter()
                .find(|(t, _)| *t > at)
                .map(|(t, _)| (t - at) * 1000.0)
        })
        .collect();
    summary.takeover_p99_ms = percentile(&takeovers, 0.99);
    summary.takeover_max_ms = takeovers.iter().copied().fold(0.0, f64::max);

    // Every message exactly once in the output or the error list.
    let outputs = client.list(&output).await.map_err(|e| e.to_string())?;
    let errors = client
        .list(&keys.error_queue)
        .await
        .map_err(|e| e.to_string())?;
    summary.processed = outputs.len() as u64;
    summary.errored = errors.len() as u64;
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    for p in outputs
        .into_iter()
        .chain(errors.iter().map(|e| error_entry::decode(e).payload))
    {
        *seen.entry(p).or_default() += 1;
    }
    let mut by_number: HashMap<u64, u32> = HashMap::new();
    for (p, n) in &seen {
        if let Some(num) = number_of(p) {
            *by_number.entry(num).or_default() += n;
        }
    }
    let produced_numbers: Vec<u64> = client
        .client()
        .smembers::<Vec<String>, _>(produced_set.as_str())
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if produced_numbers.len() as u64 != summary.produced {
        summary.violations.push(format!(
            "the producer counted {} messages, Redis recorded {}",
            summary.produced,
            produced_numbers.len()
        ));
    }
    let mut lost_examples = Vec::new();
    for n in &produced_numbers {
        match by_number.get(n).copied().unwrap_or(0) {
            0 => {
                summary.lost += 1;
                lost_examples.push(format!("numbered message {n}"));
            }
            1 => {}
            k => summary.duplicates += u64::from(k - 1),
        }
    }
    for (m, pushed) in &generated {
        match seen.get(m).copied().unwrap_or(0) {
            0 => {
                summary.lost += u64::from(*pushed);
                lost_examples.push(format!(
                    "generated message {:?}",
                    String::from_utf8_lossy(m)
                ));
            }
            k if k > *pushed => summary.duplicates += u64::from(k - pushed),
            k if k < *pushed => summary.lost += u64::from(pushed - k),
            _ => {}
        }
    }
    if summary.lost > 0 {
        summary.violations.push(format!(
            "{} messages lost, e.g. {}",
            summary.lost,
            lost_examples
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if summary.duplicates > 0 {
        summary
            .violations
            .push(format!("{} duplicate deliveries", summary.duplicates));
    }
    if summary.generators_at_end != 1 {
        summary.violations.push(format!(
            "{} generators at the end",
            summary.generators_at_end
        ));
    }
    if summary.stuck_replicas > 0 {
        summary.violations.push(format!(
            "{} replicas not ready at the end",
            summary.stuck_replicas
        ));
    }
    if summary.generated == 0 || summary.produced == 0 {
        summary
            .violations
            .push("nothing was generated or produced".into());
    }

    proxy.stop();
    client.quit().await;
    drop(world);
    if summary.violations.is_empty() {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        // Keep the evidence: replica logs and Redis' append-only file.
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(redis.dir())
            .arg(logs.join("redis"))
            .status();
        say(&format!(
            "violations found; replica logs and the AOF kept in {}",
            logs.display()
        ));
    }
    drop(redis);
    Ok(summary)
}

async fn find_generator(replicas: &[Replica]) -> Option<usize> {
    for (i, r) in replicas.iter().enumerate() {
        if r.is_generator().await {
            return Some(i);
        }
    }
    None
}

async fn count_generators(replicas: &[Replica]) -> usize {
    let mut n = 0;
    for r in replicas {
        if r.is_generator().await {
            n += 1;
        }
    }
    n
}

/// Remembers each process's latest late-ack count (a restart starts a new
/// process with its own counters).
async fn collect_late_acks(replicas: &[Replica], by_pid: &mut HashMap<u32, u64>) {
    for r in replicas {
        if let (Some(pid), Some(s)) = (r.pid(), r.status().await) {
            let late = s.counters.late_acks;
            by_pid.insert(pid, late);
        }
    }
}

/// Waits until the queue is empty and no consumer holds a message.
async fn drain(client: &Redis, keys: &Keys) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let queued: u64 = client.client().llen(keys.queue.as_str()).await.unwrap_or(1);
        let held = held_messages(client, keys).await.unwrap_or(1);
        if queued == 0 && held == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                return true;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Messages held in any in-flight hash (registered or not).
async fn held_messages(client: &Redis, keys: &Keys) -> Result<u64, fred::error::Error> {
    let pattern = keys.inflight("*");
    let found: Vec<String> = client
        .client()
        .custom(
            fred::types::CustomCommand::new_static("KEYS", None, false),
            vec![pattern],
        )
        .await?;
    let mut held = 0;
    for k in found {
        let fields: Vec<String> = client.client().hkeys(k).await?;
        held += fields.iter().filter(|f| f.parse::<u64>().is_ok()).count() as u64;
    }
    Ok(held)
}

/// Every `LPUSH` to `queue` in Redis' append-only files under `dir`, by
/// message, with how often it was pushed.
fn durable_pushes(dir: &std::path::Path, queue: &str) -> Result<HashMap<Vec<u8>, u32>, String> {
    let aof_dir = dir.join("appendonlydir");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&aof_dir)
        .map_err(|e| format!("cannot read {}: {e}", aof_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    files.sort();
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| e.to_string())?;
        for cmd in parse_resp_commands(&bytes) {
            if cmd.len() > 2 && cmd[0].eq_ignore_ascii_case(b"LPUSH") && cmd[1] == queue.as_bytes()
            {
                for m in &cmd[2..] {
                    *out.entry(m.clone()).or_default() += 1;
                }
            }
        }
    }
    Ok(out)
}

/// The commands of an append-only file (RESP arrays of bulk strings); a
/// truncated last command (a crash mid-write) is left out.
fn parse_resp_commands(b: &[u8]) -> Vec<Vec<Vec<u8>>> {
    fn line(b: &[u8], i: &mut usize) -> Option<Vec<u8>> {
        let end = b.get(*i..)?.windows(2).position(|w| w == b"\r\n")? + *i;
        let l = b[*i..end].to_vec();
        *i = end + 2;
        Some(l)
    }
    let mut out = Vec::new();
    let mut i = 0;
    'commands: while i < b.len() {
        let Some(head) = line(b, &mut i) else { break };
        let Some(n) = head
            .strip_prefix(b"*")
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        else {
            break;
        };
        let mut cmd = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(len) = line(b, &mut i)
                .and_then(|l| l.strip_prefix(b"$").map(<[u8]>::to_vec))
                .and_then(|l| std::str::from_utf8(&l).ok()?.parse::<usize>().ok())
            else {
                break 'commands;
            };
            let Some(arg) = b.get(i..i + len) else {
                break 'commands;
            };
            cmd.push(arg.to_vec());
            i += len + 2;
        }
        out.push(cmd);
    }
    out
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn render(s: &ChaosSummary) -> String {
    let mut faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    faults.sort();
    let rows = [
        (
            "duration",
            format!("{} s (seed {})", s.duration_seconds, s.seed),
        ),
        ("faults injected", faults.join(", ")),
        ("messages produced (numbered)", s.produced.to_string()),
        ("messages generated", s.generated.to_string()),
        ("processed (output list)", s.processed.to_string()),
        ("errored (error list)", s.errored.to_string()),
        ("duplicates", s.duplicates.to_string()),
        ("lost", s.lost.to_string()),
        ("late acks", s.late_acks.to_string()),
        ("fenced writes rejected", s.fenced_rejections.to_string()),
        (
            "writes under a lost lease",
            s.fencing_violations.to_string(),
        ),
        ("generators at the end", s.generators_at_end.to_string()),
        (
            "replicas not ready at the end",
            s.stuck_replicas.to_string(),
        ),
        (
            "takeover p99 / max",
            format!("{:.0} ms / {:.0} ms", s.takeover_p99_ms, s.takeover_max_ms),
        ),
    ];
    let mut out = String::from("\nredis-dsg chaos soak\n");
    for (k, v) in rows {
        out.push_str(&format!("  {k:<32} {v}\n"));
    }
    if s.violations.is_empty() {
        out.push_str("  result                           every invariant held\n");
    } else {
        for v in &s.violations {
            out.push_str(&format!("  VIOLATION                        {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_only_file_commands_are_parsed_and_a_torn_tail_dropped() {
        let aof = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$4\r\na\r\nb\r\n*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$10\r\ntrunc";
        let cmds = parse_resp_commands(aof);
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            cmds[1],
            vec![b"LPUSH".to_vec(), b"q".to_vec(), b"a\r\nb".to_vec()]
        );
    }

    #[test]
    fn numbered_messages_are_well_formed_and_read_back() {
        let m = numbered(42);
        assert!(redis_dsg::service::message::parse(&m).is_ok());
        assert_eq!(number_of(&m), Some(42));
        assert_eq!(
            number_of(b"0f8fad5b-d9cb-469f-a165-70867728950e 2026-01-01T00:00:00Z"),
            None
        );
    }
}
