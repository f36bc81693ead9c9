//! `redis-dsg demo`: the whole system on one machine. Starts a throwaway
//! `redis-server` (unless `REDIS_URL`/`--redis-url` points at one), launches
//! N replicas of this binary in `auto` mode, shows a live table, and every
//! K seconds kills the current generator (SIGKILL and SIGTERM alternately)
//! so takeover can be watched; the killed replica is started again. Ctrl-C
//! stops everything and leaves nothing running.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, free_port};
use dsg_testkit::replica::Replica;
use redis_dsg::service::{InstanceStatus, Role};

/// Flags of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Seconds between kills of the generator (SIGKILL and SIGTERM
    /// alternately); 0 = never.
    #[arg(long, default_value_t = 10)]
    pub kill_every: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Milliseconds between generated messages.
    #[arg(long, default_value_t = 20)]
    pub interval_ms: u64,
    /// Lease TTL of the replicas in milliseconds (short, so a takeover after
    /// SIGKILL shows quickly).
    #[arg(long, default_value_t = 3000)]
    pub lease_ttl_ms: u64,
    /// The message list.
    #[arg(long, default_value = "a")]
    pub queue: String,
    /// The error list.
    #[arg(long, default_value = "errors")]
    pub error_queue: String,
}

struct Slot {
    replica: Replica,
    last: Option<InstanceStatus>,
    done_before: u64,
    generated_before: u64,
    rate_done: f64,
    rate_generated: f64,
    restart_pending: bool,
}

/// Exit codes of the demo (as the product's: 78 bad flags, 69 no Redis).
const BAD_FLAGS: u8 = 78;
const NO_REDIS: u8 = 69;
const FAILED: u8 = 1;

/// Runs the demo with the redis-dsg binary `exe`; returns the exit code.
pub(crate) async fn run(exe: &Path, redis_url: Option<&str>, args: &DemoArgs) -> u8 {
    if args.replicas == 0 {
        eprintln!("demo: --replicas must be at least 1");
        return BAD_FLAGS;
    }
    let (local, url) = match redis_url {
        Some(url) => (None, url.to_string()),
        None => match LocalRedis::start() {
            Ok(r) => {
                let url = r.url();
                (Some(r), url)
            }
            Err(e) => {
                eprintln!("demo: {e}");
                return NO_REDIS;
            }
        },
    };
    let queue = args.queue.clone();
    let error_queue = args.error_queue.clone();
    let logs = std::env::temp_dir().join(format!("redis-dsg-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("demo: cannot create {}: {e}", logs.display());
        return FAILED;
    }
    let mut config = fleet::quick_config(&url);
    config.redis.queue = queue.clone();
    config.redis.error_queue = error_queue;
    config.generator.interval_ms = args.interval_ms;
    config.lease.ping_interval_seconds = 2;
    fleet::set_lease_ttl(&mut config, args.lease_ttl_ms.max(300));
    config.consumer.heartbeat_ttl_ms = 3_000;
    config.consumer.heartbeat_interval_ms = 1_000;
    config.consumer.reaper_interval_ms = 1_000;
    config.processor.max_ms = 300;
    let env = match fleet::env_for(&config, &logs, "replica") {
        Ok(env) => env,
        Err(e) => {
            eprintln!("demo: {e}");
            return FAILED;
        }
    };

    let mut slots = Vec::new();
    for i in 0..args.replicas {
        let log = logs.join(format!("replica-{}.log", i + 1));
        match Replica::start(exe, free_port(), &env, &log) {
            Ok(replica) => slots.push(Slot {
                replica,
                last: None,
                done_before: 0,
                generated_before: 0,
                rate_done: 0.0,
                rate_generated: 0.0,
                restart_pending: false,
            }),
            Err(e) => {
                eprintln!("demo: cannot start a replica: {e}");
                return FAILED;
            }
        }
    }

    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "redis-dsg demo: {} replicas, redis {url}, queue {queue:?}; logs in {}; Ctrl-C stops",
        args.replicas,
        logs.display()
    );
    let started = Instant::now();
    let mut events: Vec<String> = Vec::new();
    let mut next_kill =
        (args.kill_every > 0).then(|| started + Duration::from_secs(args.kill_every));
    let mut kill_with_sigkill = true;
    // (killed at, epoch of the killed generator)
    let mut takeover_watch: Option<(Instant, u64)> = None;
    let mut next_draw = started;
    let mut last_draw = started;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();

    loop {
        let tick = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            _ = &mut stop => break,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break,
            _ = tick => {}
        }
        let now = Instant::now();
        let t = now.duration_since(started).as_secs_f64();
        if let Some(d) = args.duration
            && t >= d as f64
        {
            break;
        }
        for s in slots.iter_mut() {
            s.last = s.replica.status().await;
        }
        // Restart replicas whose kill has taken effect.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.restart_pending && s.replica.try_wait().is_some() {
                s.restart_pending = false;
                match s.replica.restart() {
                    Ok(()) => events.push(format!("t={t:6.1}s  replica {} started again", i + 1)),
                    Err(e) => events.push(format!(
                        "t={t:6.1}s  replica {} could not restart: {e}",
                        i + 1
                    )),
                }
            }
        }
        if let Some((killed_at, old_epoch)) = takeover_watch {
            let taker = slots.iter().enumerate().find(|(_, s)| {
                s.last
                    .as_ref()
                    .is_some_and(|v| v.role == Role::Generator && v.lease.epoch > old_epoch)
            });
            if let Some((i, s)) = taker {
                let epoch = s.last.as_ref().map_or(0, |v| v.lease.epoch);
                events.push(format!(
                    "t={t:6.1}s  replica {} took over as generator (epoch {epoch}) {:.2} s after the kill",
                    i + 1,
                    now.duration_since(killed_at).as_secs_f64()
                ));
                takeover_watch = None;
            }
        }
        if let Some(at) = next_kill
            && now >= at
        {
            next_kill = Some(at + Duration::from_secs(args.kill_every));
            let generator = slots.iter().enumerate().find(|(_, s)| {
                !s.restart_pending && s.last.as_ref().is_some_and(|v| v.role == Role::Generator)
            });
            if let Some((i, s)) = generator {
                let epoch = s.last.as_ref().map_or(0, |v| v.lease.epoch);
                let (sig, name) = if kill_with_sigkill {
                    (libc::SIGKILL, "SIGKILL")
                } else {
                    (libc::SIGTERM, "SIGTERM")
                };
                kill_with_sigkill = !kill_with_sigkill;
                s.replica.signal(sig);
                events.push(format!(
                    "t={t:6.1}s  sent {name} to replica {} (generator, epoch {epoch})",
                    i + 1
                ));
                takeover_watch = Some((now, epoch));
                slots[i].restart_pending = true;
            }
        }
        if now >= next_draw {
            let elapsed = now.duration_since(last_draw).as_secs_f64().max(0.001);
            last_draw = now;
            next_draw = now + Duration::from_secs(1);
            for s in slots.iter_mut() {
                if let Some(v) = &s.last {
                    let (done, generated) = (v.counters.done(), v.counters.generated);
                    // A restarted replica starts its counters at zero.
                    s.rate_done = done.saturating_sub(s.done_before) as f64 / elapsed;
                    s.rate_generated =
                        generated.saturating_sub(s.generated_before) as f64 / elapsed;
                    s.done_before = done;
                    s.generated_before = generated;
                } else {
                    s.rate_done = 0.0;
                    s.rate_generated = 0.0;
                }
            }
            let text = if tty {
                render_table(&slots, t, &queue, &events)
            } else {
                render_line(&slots, t)
            };
            let _ = out.write_all(text.as_bytes());
            if !tty {
                for e in events.drain(..) {
                    let _ = writeln!(out, "{e}");
                }
            }
            let _ = out.flush();
        }
    }

    let _ = writeln!(out, "\nstopping {} replicas …", slots.len());
    for s in slots.iter_mut() {
        s.replica.signal(libc::SIGTERM);
    }
    for (i, s) in slots.iter_mut().enumerate() {
        match s.replica.stop(Duration::from_secs(10)) {
            Some(st) => {
                let _ = writeln!(out, "replica {} exited ({st})", i + 1);
            }
            None => {
                let _ = writeln!(out, "replica {} did not exit", i + 1);
            }
        }
    }
    drop(slots);
    if local.is_some() {
        let _ = writeln!(out, "stopping the demo's redis-server");
    }
    drop(local);
    let _ = std::fs::remove_dir_all(&logs);
    let _ = writeln!(out, "demo stopped; nothing left running");
    0
}

fn row(i: usize, s: &Slot) -> (String, String, String, String, String) {
    let pid = s.replica.pid().map_or("-".into(), |p| p.to_string());
    match &s.last {
        Some(v) => (
            format!("{}", i + 1),
            pid,
            v.role.as_str().to_string(),
            v.lease.epoch.to_string(),
            v.in_flight.to_string(),
        ),
        None => (
            format!("{}", i + 1),
            pid,
            if s.restart_pending {
                "killed".into()
            } else {
                "starting".into()
            },
            "-".into(),
            "-".into(),
        ),
    }
}

fn render_table(slots: &[Slot], t: f64, queue: &str, events: &[String]) -> String {
    let mut s = String::from("\x1b[H\x1b[2J");
    s.push_str(&format!("redis-dsg demo   t={t:.0}s   (Ctrl-C stops)\n\n"));
    s.push_str(&format!(
        " {:>2}  {:>7}  {:>5}  {:<10} {:>5}  {:>9}  {:>9}  {:>9}\n",
        "#", "PID", "PORT", "ROLE", "EPOCH", "GEN/s", "DONE/s", "IN-FLIGHT"
    ));
    for (i, slot) in slots.iter().enumerate() {
        let (n, pid, role, epoch, in_flight) = row(i, slot);
        s.push_str(&format!(
            " {n:>2}  {pid:>7}  {:>5}  {role:<10} {epoch:>5}  {:>9.1}  {:>9.1}  {in_flight:>9}\n",
            slot.replica.port(),
            slot.rate_generated,
            slot.rate_done
        ));
    }
    let lengths = slots
        .iter()
        .find_map(|s| s.last.as_ref())
        .map(|v| (v.queue_length, v.error_queue_length));
    if let Some((q, e)) = lengths {
        s.push_str(&format!(
            "\nqueue {queue:?}: {q} messages   error list: {e} entries\n"
        ));
    }
    s.push_str("\nevents:\n");
    for e in events.iter().rev().take(12).rev() {
        s.push_str(&format!("  {e}\n"));
    }
    s
}

fn render_line(slots: &[Slot], t: f64) -> String {
    let mut parts = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let (n, _, role, epoch, _) = row(i, slot);
        parts.push(format!(
            "{n}:{role}/e{epoch}/gen {:.0}/s/done {:.0}/s",
            slot.rate_generated, slot.rate_done
        ));
    }
    let q = slots
        .iter()
        .find_map(|s| s.last.as_ref())
        .map_or(0, |v| v.queue_length);
    format!("t={t:5.1}s queue={q} {}\n", parts.join(" "))
}
