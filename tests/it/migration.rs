//! Issue 15, point 2 (contract 1 in a mixed fleet): redis-dsg replicas in
//! compatibility mode (`compat.original_lock`) beside stand-ins of the
//! original go-redis-dsg (`dsg_testkit::original`, its `lock:gen` election
//! step by step). Exactly one process generates at every sampled instant,
//! through kills of either side; and compatibility mode off changes
//! nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dsg_testkit::original::{LOCK_NAME, OriginalConfig, OriginalStandIn};
use dsg_testkit::replica::Replica;
use fred::prelude::*;
use futures_util::future::join_all;
use redis_dsg::service::message;

use crate::helpers::*;

/// The mixed fleet: stand-ins and replicas, each with a name for reports.
struct MixedFleet {
    originals: Vec<(String, OriginalStandIn)>,
    replicas: Vec<(String, Replica)>,
}

/// What the sampler saw during one phase.
#[derive(Default)]
struct Phase {
    name: &'static str,
    /// Samples with 0, 1, 2 or more generators.
    by_count: [u64; 3],
    /// Generator name → samples in which it generated.
    generators: BTreeMap<String, u64>,
    /// From the start of the phase to the first sample whose only
    /// generator differs from the one before the phase.
    takeover: Option<Duration>,
    /// The generators of each sample that saw two or more.
    overlaps: Vec<Vec<String>>,
}

impl MixedFleet {
    /// Who generates now: stand-ins read before and after the replicas'
    /// `/status` (fetched concurrently), so a stand-in generating at either
    /// moment counts (an overlap cannot hide between the reads).
    async fn generators(&self) -> Vec<String> {
        let before: Vec<bool> = self
            .originals
            .iter()
            .map(|(_, o)| o.is_generating())
            .collect();
        let roles = join_all(self.replicas.iter().map(|(_, r)| r.role())).await;
        let mut out = Vec::new();
        for ((name, o), was) in self.originals.iter().zip(before) {
            if was || o.is_generating() {
                out.push(name.clone());
            }
        }
        for ((name, _), role) in self.replicas.iter().zip(roles) {
            if role == Some(Role::Generator) {
                out.push(name.clone());
            }
        }
        out
    }

    /// Samples every ~25 ms for `steady` after the takeover (or from the
    /// start when `previous` is `None`), giving up on a takeover after
    /// `max_takeover`.
    async fn sample(
        &self,
        name: &'static str,
        previous: Option<&str>,
        max_takeover: Duration,
        steady: Duration,
    ) -> Phase {
        let mut phase = Phase {
            name,
            ..Phase::default()
        };
        let start = Instant::now();
        let mut end = previous.map_or(start + steady, |_| start + max_takeover);
        while Instant::now() < end {
            let now = self.generators().await;
            phase.by_count[now.len().min(2)] += 1;
            for g in &now {
                *phase.generators.entry(g.clone()).or_default() += 1;
            }
            if now.len() > 1 {
                phase.overlaps.push(now.clone());
            }
            if let Some(prev) = previous
                && phase.takeover.is_none()
                && now.len() == 1
                && now[0] != prev
            {
                phase.takeover = Some(start.elapsed());
                end = Instant::now() + steady;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        phase
    }

    /// The only generator now (waits a little for one).
    async fn generator(&self) -> Option<String> {
        poll(
            Duration::from_secs(1),
            Duration::from_millis(25),
            async || {
                let now = self.generators().await;
                (now.len() == 1).then(|| now[0].clone())
            },
        )
        .await
    }

    fn replica(&mut self, name: &str) -> Option<&mut Replica> {
        self.replicas
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
    }

    /// Kills (aborts) the stand-in `name`; it leaves `lock:gen` to expire.
    async fn kill_original(&mut self, name: &str) {
        if let Some(i) = self.originals.iter().position(|(n, _)| n == name) {
            self.originals.remove(i).1.kill().await;
        }
    }
}

/// Prints the phase (as soon as it ends, so a failure shows what led to
/// it) and keeps it.
fn record(phases: &mut Vec<Phase>, p: Phase) {
    if phases.is_empty() {
        println!("mixed fleet (stand-ins o*, redis-dsg r*), one sample every ~25-40 ms:");
    }
    let samples: u64 = p.by_count.iter().sum();
    println!(
        "  {:<44} samples {samples:>4}  0/1/2+ generators {:?}  takeover {}  generators seen {:?}",
        p.name,
        p.by_count,
        p.takeover
            .map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64())),
        p.generators
    );
    for o in &p.overlaps {
        println!("    overlap: {o:?}");
    }
    phases.push(p);
}

fn is_original(name: &str) -> bool {
    name.starts_with('o')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue15_contract1_one_generator_in_a_mixed_fleet_through_kills_of_either_side() {
    let env = TestEnv::new().await;
    let client = env.client.client();
    let mut original = OriginalConfig::new(format!("redis://127.0.0.1:{}", env.redis.port()));
    original.queue = env.queue.clone();
    original.error_queue = env.errors.clone();
    original.ping_interval_seconds = 1; // lock:gen TTL 6 s
    original.interval_ms = 50;
    // Every message passes through redis-dsg's consumers to the output
    // list, so the check by message order below sees them all.
    original.consume = false;
    let start_original = || async {
        OriginalStandIn::start(original.clone())
            .await
            .expect("stand-in starts")
    };
    let replica_env: &[(&str, &str)] = &[
        ("DSG_COMPAT__ORIGINAL_LOCK", "true"),
        ("GENERATOR_PING_INTERVAL", "1"),
        ("GENERATOR_INTERVAL", "50"),
        ("DSG_PROCESSOR__MAX_MS", "1"),
        ("DSG_CONSUMER__OUTPUT_QUEUE", "{q}:out"),
        // Timings a loaded CI machine cannot starve (a lost renewal would
        // be a handover, not an error, but would blur the phases).
        ("DSG_LEASE__TTL_MS", "3000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "2000"),
        ("DSG_LEASE__RETRY_PERIOD_MS", "500"),
    ];

    // An original generates; redis-dsg replicas join and stay consumers.
    let mut fleet = MixedFleet {
        originals: vec![("o1".into(), start_original().await)],
        replicas: Vec::new(),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.originals.push(("o2".into(), start_original().await));
    for i in 1..=3 {
        let name = format!("r{i}");
        let r = env.spawn(&name, replica_env).await;
        fleet.replicas.push((name, r));
    }
    let mut phases = Vec::new();
    let mut kills = Vec::new();
    record(
        &mut phases,
        fleet
            .sample(
                "1 steady: an original generates",
                None,
                Duration::ZERO,
                Duration::from_secs(2),
            )
            .await,
    );
    let first = fleet.generator().await.expect("one generator");
    assert_eq!(first, "o1", "the original that started first generates");
    // Every generator in turn, for the check by message order.
    let mut holders = vec![first.clone()];

    // Kill originals until redis-dsg generates (the other original may win
    // the expired lock:gen at its tick, rarely: then it is killed too).
    let mut holder = first;
    while is_original(&holder) {
        fleet.kill_original(&holder).await;
        kills.push(format!("abort {holder}"));
        let p = fleet
            .sample(
                "2 original holder killed",
                Some(&holder),
                Duration::from_secs(10),
                Duration::from_millis(1500),
            )
            .await;
        assert!(
            p.takeover.is_some(),
            "no takeover after {holder} was killed"
        );
        record(&mut phases, p);
        holder = fleet.generator().await.expect("one generator");
        holders.push(holder.clone());
    }
    let value: Option<String> = client.get(LOCK_NAME).await.expect("get");
    assert!(
        value
            .as_deref()
            .is_some_and(|v| v.starts_with("redis-dsg {q}:lease ")),
        "the redis-dsg holder holds lock:gen: {value:?}"
    );

    // A new original beside a redis-dsg generator stays a consumer.
    fleet.originals.push(("o3".into(), start_original().await));
    record(
        &mut phases,
        fleet
            .sample(
                "3 steady: redis-dsg generates, new original",
                None,
                Duration::ZERO,
                Duration::from_secs(2),
            )
            .await,
    );

    // SIGKILL, then SIGTERM, of the redis-dsg holder: another replica takes
    // over; lock:gen never becomes free, so no original can.
    for (signal, name) in [
        (libc::SIGKILL, "4 redis-dsg holder SIGKILLed"),
        (libc::SIGTERM, "5 redis-dsg holder SIGTERMed"),
    ] {
        let r = fleet.replica(&holder).expect("the holder is a replica");
        r.signal(signal);
        kills.push(format!(
            "{} {holder}",
            if signal == libc::SIGKILL {
                "SIGKILL"
            } else {
                "SIGTERM"
            }
        ));
        let p = fleet
            .sample(
                name,
                Some(&holder),
                Duration::from_secs(10),
                Duration::from_millis(1500),
            )
            .await;
        assert!(p.takeover.is_some(), "no takeover after {holder}: {name}");
        record(&mut phases, p);
        let r = fleet.replica(&holder).expect("the old holder");
        let _ = r.wait_timeout(Duration::from_secs(10));
        r.restart().expect("restarts");
        assert!(r.wait_ready(Duration::from_secs(15)).await, "{}", log(r));
        holder = fleet.generator().await.expect("one generator");
        holders.push(holder.clone());
        assert!(!is_original(&holder), "{name}: {holder} took over");
    }

    // The rollback direction: every redis-dsg replica stops; lock:gen
    // expires and an original takes over.
    for (name, r) in &mut fleet.replicas {
        r.signal(libc::SIGTERM);
        kills.push(format!("SIGTERM {name}"));
    }
    let p = fleet
        .sample(
            "6 every redis-dsg stopped (rollback)",
            Some(&holder),
            Duration::from_secs(12),
            Duration::from_millis(1500),
        )
        .await;
    assert!(p.takeover.is_some(), "no original took over");
    record(&mut phases, p);
    holders.push(fleet.generator().await.expect("an original generates"));
    for (_, o) in fleet.originals.drain(..) {
        o.kill().await;
    }
    for (name, r) in &mut fleet.replicas {
        let status = r.wait_timeout(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name}: {status:?}\n{}",
            log(r)
        );
    }
    println!("kills: {kills:?}; generators in turn: {holders:?}");
    let overlaps: u64 = phases.iter().map(|p| p.by_count[2]).sum();
    assert_eq!(overlaps, 0, "two generators at once");
    for p in phases.iter().filter(|p| p.name.contains("steady")) {
        assert_eq!(
            p.by_count[0], 0,
            "{}: no generator outside a takeover",
            p.name
        );
    }

    // Independently of sampling: in the order of their timestamps, the
    // messages of the two formats never interleave; the format changes
    // once per handover between an original and redis-dsg.
    let switches = format_switches(&env).await;
    let cross = holders
        .windows(2)
        .filter(|w| is_original(&w[0]) != is_original(&w[1]))
        .count();
    println!(
        "messages by timestamp: the format changed {switches} times, handovers between kinds {cross}"
    );
    assert_eq!(switches, cross, "generation of the two kinds interleaved");
}

/// How often the generator's kind changes, judged from every message in
/// Redis (output list, error list, queue, in-flight hashes) in the order
/// of its timestamp: `<uuid> at <Go time>` for originals, RFC 3339 for
/// redis-dsg.
async fn format_switches(env: &TestEnv) -> usize {
    let mut all = env.all("{q}:out").await;
    all.extend(env.all(&env.queue).await);
    all.extend(
        error_payloads(env)
            .await
            .into_iter()
            .map(|(_, payload)| payload),
    );
    let c = env.client.client();
    let hashes: Vec<String> = c
        .custom(
            fred::types::CustomCommand::new_static("KEYS", None, false),
            vec!["{q}:inflight:*"],
        )
        .await
        .expect("keys");
    for h in hashes {
        let values: Vec<fred::types::Value> = c.hvals(&h).await.expect("hvals");
        all.extend(
            values
                .into_iter()
                .filter_map(redis_dsg::redis::value_bytes)
                .map(|b| b.to_vec()),
        );
    }
    let mut stamped: Vec<(time::OffsetDateTime, bool)> = all
        .iter()
        .filter_map(|m| {
            let parsed = message::parse(m).ok()?;
            let original = std::str::from_utf8(m).is_ok_and(|t| t.contains(" at "));
            Some((parsed.created_at, original))
        })
        .collect();
    assert!(stamped.len() > 100, "{} messages", stamped.len());
    stamped.sort();
    stamped.windows(2).filter(|w| w[0].1 != w[1].1).count()
}

/// Compatibility mode is off by default: a redis-dsg fleet never touches
/// `lock:gen` (it only reads it once at start), so an original beside it
/// is not excluded — which is why the mode exists, and why the start-up
/// log and `status` warn about it.
#[tokio::test]
async fn issue15_compatibility_mode_off_by_default_never_writes_lock_gen() {
    let env = TestEnv::new().await;
    let a = env.spawn("a", &[("GENERATOR_INTERVAL", "50")]).await;
    let _b = env.spawn("b", &[("GENERATOR_INTERVAL", "50")]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.counters().await.generated + _b.counters().await.generated > 5
        })
        .await
    );
    let c = env.client.client();
    let exists: i64 = c.exists(LOCK_NAME).await.expect("exists");
    assert_eq!(exists, 0, "nothing wrote lock:gen");
    assert_eq!(a.status().await.and_then(|s| s.original_lock), None);
    // An original's lock:gen is left alone, and the start-up check of a
    // new replica warns about it; status --check reports two generators.
    let _: () = c
        .set(
            LOCK_NAME,
            "3f2b6c0e-7d1a-4c55-9a0e-0d6c1b0c2f7a",
            Some(Expiration::EX(60)),
            None,
            false,
        )
        .await
        .expect("set");
    let late = env.spawn("late", &[("GENERATOR_INTERVAL", "50")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let value: Option<String> = c.get(LOCK_NAME).await.expect("get");
    assert_eq!(
        value.as_deref(),
        Some("3f2b6c0e-7d1a-4c55-9a0e-0d6c1b0c2f7a")
    );
    let log_text = std::fs::read_to_string(late.log()).expect("log");
    assert!(log_text.contains("lock:gen is held"), "{log_text}");
    let out = run_cli(&env.env(&[]), &["status", "--check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("two generators"), "{stderr}");
}

/// The pause of the rolling upgrade (README, step 3) with plain
/// `redis-cli`: an operator's value in `lock:gen` stops the redis-dsg
/// generator within a renewal and keeps every replica from generating;
/// deleting it resumes generation within a ping interval.
#[tokio::test]
async fn issue15_an_operators_pause_in_lock_gen_stops_generation_until_removed() {
    let env = TestEnv::new().await;
    let extra = [
        ("DSG_COMPAT__ORIGINAL_LOCK", "true"),
        ("GENERATOR_INTERVAL", "20"),
        ("DSG_PROCESSOR__MAX_MS", "1"),
    ];
    let a = env.spawn("a", &extra).await;
    let b = env.spawn("b", &extra).await;
    let c = env.client.client();
    let generating = || async { a.is_generator().await || b.is_generator().await };
    assert!(eventually(Duration::from_secs(10), generating).await);
    let _: () = c
        .set(
            LOCK_NAME,
            "redis-dsg-pause",
            Some(Expiration::EX(60)),
            None,
            false,
        )
        .await
        .expect("set");
    assert!(
        eventually(Duration::from_secs(5), || async { !generating().await }).await,
        "the holder stops at its next renewal"
    );
    let generated = a.counters().await.generated + b.counters().await.generated;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        a.counters().await.generated + b.counters().await.generated,
        generated,
        "nothing generated while paused"
    );
    let out = run_cli(&env.env(&[]), &["status", "--check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("paused by an operator"), "{text}");
    let _: i64 = c.del(LOCK_NAME).await.expect("del");
    assert!(
        eventually(Duration::from_secs(5), generating).await,
        "resumes"
    );
    let value: Option<String> = c.get(LOCK_NAME).await.expect("get");
    assert!(value.is_some_and(|v| v.starts_with("redis-dsg {q}:lease ")));
}
