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
use dsg_testkit::local_redis::LocalRedis;
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

/// One replica as the demo shows it.
struct Slot {
    replica: Replica,
    last: Option<InstanceStatus>,
    done_before: u64,
    generated_before: u64,
    rate_done: f64,
    rate_generated: f64,
    restart_pending: bool,
}

impl Slot {
    fn new(replica: Replica) -> Slot {
        Slot {
            replica,
            last: None,
            done_before: 0,
            generated_before: 0,
            rate_done: 0.0,
            rate_generated: 0.0,
            restart_pending: false,
        }
    }

    /// Its lease epoch as last seen (0 before it answered).
    fn epoch(&self) -> u64 {
        self.last.as_ref().map_or(0, |v| v.lease.epoch)
    }

    /// Whether it was last seen generating.
    fn was_generator(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|v| v.role == Role::Generator)
    }

    /// Its rates since the last draw, `elapsed` seconds ago.
    fn update_rates(&mut self, elapsed: f64) {
        if let Some(v) = &self.last {
            let (done, generated) = (v.counters.done(), v.counters.generated);
            // A restarted replica starts its counters at zero.
            self.rate_done = done.saturating_sub(self.done_before) as f64 / elapsed;
            self.rate_generated = generated.saturating_sub(self.generated_before) as f64 / elapsed;
            self.done_before = done;
            self.generated_before = generated;
        } else {
            self.rate_done = 0.0;
            self.rate_generated = 0.0;
        }
    }
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
    let logs = std::env::temp_dir().join(format!("redis-dsg-demo-{}", std::process::id()));
    let mut demo = match Demo::start(exe, &url, args, &logs) {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("demo: {e}");
            return FAILED;
        }
    };
    demo.say(&format!(
        "redis-dsg demo: {} replicas, redis {url}, queue {:?}; logs in {}; Ctrl-C stops",
        args.replicas,
        args.queue,
        logs.display()
    ));
    demo.watch().await;
    demo.stop();
    if local.is_some() {
        demo.say("stopping the demo's redis-server");
    }
    drop(local);
    let _ = std::fs::remove_dir_all(&logs);
    demo.say("demo stopped; nothing left running");
    0
}

/// The replicas' settings: the demo's lists and interval, a short lease so
/// a takeover after SIGKILL shows quickly, and processing slow enough to
/// watch.
fn replica_env(url: &str, args: &DemoArgs, logs: &Path) -> Result<Vec<(String, String)>, String> {
    let mut config = fleet::quick_config(url);
    config.redis.queue = args.queue.clone();
    config.redis.error_queue = args.error_queue.clone();
    config.generator.interval_ms = args.interval_ms;
    config.lease.ping_interval_seconds = 2;
    fleet::set_lease_ttl(&mut config, args.lease_ttl_ms.max(300));
    config.consumer.heartbeat_ttl_ms = 3_000;
    config.consumer.heartbeat_interval_ms = 1_000;
    config.consumer.reaper_interval_ms = 1_000;
    config.processor.max_ms = 300;
    fleet::env_for(&config, logs, "replica")
}

/// The running demo: its replicas, what happened, and when to kill and
/// draw next.
struct Demo<'a> {
    args: &'a DemoArgs,
    slots: Vec<Slot>,
    events: Vec<String>,
    started: Instant,
    next_kill: Option<Instant>,
    kill_with_sigkill: bool,
    /// After a kill: when, and the epoch of the killed generator.
    takeover_watch: Option<(Instant, u64)>,
    next_draw: Instant,
    last_draw: Instant,
    tty: bool,
    out: std::io::Stdout,
}

impl<'a> Demo<'a> {
    /// Starts the replicas (without waiting: the table shows them start).
    fn start(exe: &Path, url: &str, args: &'a DemoArgs, logs: &Path) -> Result<Demo<'a>, String> {
        std::fs::create_dir_all(logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let env = replica_env(url, args, logs)?;
        let replicas = Replica::start_many(exe, &env, logs, "replica", args.replicas)?;
        let started = Instant::now();
        Ok(Demo {
            args,
            slots: replicas.into_iter().map(Slot::new).collect(),
            events: Vec::new(),
            started,
            next_kill: (args.kill_every > 0)
                .then(|| started + Duration::from_secs(args.kill_every)),
            kill_with_sigkill: true,
            takeover_watch: None,
            next_draw: started,
            last_draw: started,
            tty: std::io::stdout().is_terminal(),
            out: std::io::stdout(),
        })
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    /// Steps every 100 ms until Ctrl-C, SIGTERM or the end of `--duration`.
    async fn watch(&mut self) {
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let tick = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = &mut stop => break,
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break,
                _ = tick => {}
            }
            let now = Instant::now();
            let t = now.duration_since(self.started).as_secs_f64();
            if self.args.duration.is_some_and(|d| t >= d as f64) {
                break;
            }
            for s in self.slots.iter_mut() {
                s.last = s.replica.status().await;
            }
            self.restart_killed(t);
            self.watch_takeover(now, t);
            self.kill_generator_when_due(now, t);
            if now >= self.next_draw {
                self.draw(now, t);
            }
        }
    }

    /// Starts again the replicas whose kill has taken effect.
    fn restart_killed(&mut self, t: f64) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.restart_pending && s.replica.try_wait().is_some() {
                s.restart_pending = false;
                self.events.push(match s.replica.restart() {
                    Ok(()) => format!("t={t:6.1}s  replica {} started again", i + 1),
                    Err(e) => format!("t={t:6.1}s  replica {} could not restart: {e}", i + 1),
                });
            }
        }
    }

    /// After a kill, reports the replica that took over with a newer epoch.
    fn watch_takeover(&mut self, now: Instant, t: f64) {
        let Some((killed_at, old_epoch)) = self.takeover_watch else {
            return;
        };
        let taker = self
            .slots
            .iter()
            .position(|s| s.was_generator() && s.epoch() > old_epoch);
        if let Some(i) = taker {
            self.events.push(format!(
                "t={t:6.1}s  replica {} took over as generator (epoch {}) {:.2} s after the kill",
                i + 1,
                self.slots[i].epoch(),
                now.duration_since(killed_at).as_secs_f64()
            ));
            self.takeover_watch = None;
        }
    }

    /// Every `--kill-every` seconds, kills the generator (SIGKILL and
    /// SIGTERM alternately) and starts watching for the takeover.
    fn kill_generator_when_due(&mut self, now: Instant, t: f64) {
        let Some(at) = self.next_kill.filter(|at| now >= *at) else {
            return;
        };
        self.next_kill = Some(at + Duration::from_secs(self.args.kill_every));
        let Some(i) = self
            .slots
            .iter()
            .position(|s| !s.restart_pending && s.was_generator())
        else {
            return;
        };
        let (sig, name) = if self.kill_with_sigkill {
            (libc::SIGKILL, "SIGKILL")
        } else {
            (libc::SIGTERM, "SIGTERM")
        };
        self.kill_with_sigkill = !self.kill_with_sigkill;
        let slot = &mut self.slots[i];
        let epoch = slot.epoch();
        slot.replica.signal(sig);
        slot.restart_pending = true;
        self.events.push(format!(
            "t={t:6.1}s  sent {name} to replica {} (generator, epoch {epoch})",
            i + 1
        ));
        self.takeover_watch = Some((now, epoch));
    }

    /// Redraws the table (a terminal) or prints a line and the new events
    /// (a pipe), once a second.
    fn draw(&mut self, now: Instant, t: f64) {
        let elapsed = now.duration_since(self.last_draw).as_secs_f64().max(0.001);
        self.last_draw = now;
        self.next_draw = now + Duration::from_secs(1);
        for s in self.slots.iter_mut() {
            s.update_rates(elapsed);
        }
        let text = if self.tty {
            render_table(&self.slots, t, &self.args.queue, &self.events)
        } else {
            render_line(&self.slots, t)
        };
        let _ = self.out.write_all(text.as_bytes());
        if !self.tty {
            for e in self.events.drain(..) {
                let _ = writeln!(self.out, "{e}");
            }
        }
        let _ = self.out.flush();
    }

    /// SIGTERM to every replica at once, then waits for each in turn.
    fn stop(&mut self) {
        let _ = writeln!(self.out, "\nstopping {} replicas …", self.slots.len());
        for s in self.slots.iter_mut() {
            s.replica.signal(libc::SIGTERM);
        }
        for (i, s) in self.slots.iter_mut().enumerate() {
            let _ = match s.replica.stop(Duration::from_secs(10)) {
                Some(st) => writeln!(self.out, "replica {} exited ({st})", i + 1),
                None => writeln!(self.out, "replica {} did not exit", i + 1),
            };
        }
        self.slots.clear();
    }
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
    // One replica at a time reads the lists' lengths.
    let lengths = slots
        .iter()
        .filter_map(|s| s.last.as_ref())
        .find_map(|v| v.queue_length.zip(v.error_queue_length));
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
        .filter_map(|s| s.last.as_ref())
        .find_map(|v| v.queue_length)
        .unwrap_or(0);
    format!("t={t:5.1}s queue={q} {}\n", parts.join(" "))
}
