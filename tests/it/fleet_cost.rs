//! Contract 9, "cost follows the work": fleets of real consumer processes
//! on one private redis-server, judged by Redis' own command counters
//! (`INFO commandstats`), never by time — except for liveness bounds far
//! above what the design needs.
//!
//! The fleets here are the CI-sized ones (20 idle pods, 20 pods with a
//! kill, 5 pods woken by a plain `LPUSH`); the 100-pod scenarios belong to
//! the benchmark.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dsg_testkit::fleet;
use dsg_testkit::redis_info::{CommandStats, Sent};
use dsg_testkit::replica::Replica;
use dsg_testkit::wait::POLL_EVERY;
use fred::prelude::*;
use redis_dsg::config::{Config, Mode};

use crate::helpers::*;

/// How long the fleet may take to start (20 debug-build processes on two
/// cores, with other tests running).
const FLEET_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// This test's settings for a consumer-only fleet: every consumer setting
/// at its default (the cost an operator gets), Redis timeouts short.
fn consumer_fleet_config(env: &TestEnv) -> Config {
    let mut c = env.config();
    c.mode = Mode::Consumer;
    c.consumer = Config::default().consumer;
    c
}

/// Starts `n` consumers with `config` (all at once) and waits until every
/// one is ready.
async fn start_fleet(env: &TestEnv, config: &Config, n: usize) -> Vec<Replica> {
    let vars = fleet::env_for(config, env.logs.path(), "fleet").expect("fleet configuration");
    let mut pods =
        Replica::start_many(&exe(), &vars, env.logs.path(), "pod", n).expect("fleet starts");
    for pod in &mut pods {
        pod.ready_within(FLEET_READY_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    pods
}

/// The in-flight hashes of the queue that hold messages (found with SCAN,
/// so also those of consumers that died), and how many each holds.
async fn messages_in_flight(env: &TestEnv) -> Vec<(String, u64)> {
    let pattern = format!("{{{}}}:inflight:*", env.queue);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) = env
            .client
            .client()
            .scan_page(cursor, pattern.clone(), Some(100), None)
            .await
            .expect("scan");
        keys.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let held = env.held(&key).await;
        if held > 0 {
            out.push((key, held));
        }
    }
    out
}

/// An idle fleet of 20 consumer pods (every setting default) sends Redis at
/// most one command per pod per second on average, whatever it is for
/// (fallback polls, heartbeats, reaping, gauges): a script call is one
/// command, as Redis receives it (counted with `MONITOR`, which shows what
/// clients sent apart from what scripts ran). What runs inside Redis,
/// scripts' own commands included (`INFO commandstats`), stays within 4 per
/// pod per second. Both budgets are linear in pods, so a chore that every
/// pod does for every other pod (one `EXISTS` per member per reaper,
/// O(pods²)) cannot fit in them: before contract 9 the fleet ran 70
/// commands per pod per second.
#[tokio::test]
async fn contract9_idle_fleet_stays_within_command_budget() {
    const PODS: usize = 20;
    /// Start-up traffic (script loading, registration, the first fetches)
    /// is not idle cost.
    const WARM_UP: Duration = Duration::from_secs(5);
    /// Long enough to hold several heartbeat and reaper periods at their
    /// defaults, and a fallback poll of every pod.
    const WINDOW: Duration = Duration::from_secs(12);

    let env = TestEnv::new().await;
    let config = consumer_fleet_config(&env);
    let _pods = start_fleet(&env, &config, PODS).await;

    // Idle is the condition under test: nothing to wait for but time.
    tokio::time::sleep(WARM_UP).await;
    let before = CommandStats::read(&env.client).await.expect("commandstats");
    let started = Instant::now();
    // Which of the commands were round trips and which ran inside
    // scripts, to explain the figure (the budget counts both, as Redis'
    // counters do).
    let sent = Sent::follow(env.redis.port(), WINDOW, &["info"])
        .await
        .expect("MONITOR");
    let after = CommandStats::read(&env.client).await.expect("commandstats");
    let seconds = started.elapsed().as_secs_f64();

    // The test's own INFO and MONITOR are the only commands that are not
    // the fleet's.
    let fleet_cost = after.since(&before).without(&["info", "monitor"]);
    let executed = fleet_cost.total_calls();
    let sent_total = sent.total();
    let pod_seconds = PODS as f64 * seconds;
    let (sent_rate, executed_rate) = (
        sent_total as f64 / pod_seconds,
        executed as f64 / pod_seconds,
    );
    let report = format!(
        "idle fleet: {PODS} pods over {seconds:.1} s: sent {sent_total} commands \
         ({sent_rate:.2} per pod per second; budget 1), Redis ran {executed} \
         ({executed_rate:.2} per pod per second with scripts' own; budget 4); \
         EXISTS {}, Redis CPU in commands {} µs (MONITOR on)\n{fleet_cost}\n{sent}",
        fleet_cost.calls("exists"),
        fleet_cost.total_usec(),
    );
    eprintln!("{report}");
    assert!(
        sent_total as f64 <= pod_seconds,
        "an idle fleet sent more than one command per pod per second: {report}"
    );
    assert!(
        executed as f64 <= 4.0 * pod_seconds,
        "an idle fleet made Redis run more than four commands per pod per second: {report}"
    );
}

/// A consumer SIGKILLed in a 20-pod fleet while it holds messages: the fleet
/// returns them (heartbeat TTL, then a reaper) and every message reaches the
/// output list exactly once — none lost, none handed off twice — and
/// nothing is left in the queue or in any in-flight hash.
#[tokio::test]
async fn contract9_killed_consumer_in_a_20_pod_fleet_returns_every_message_once() {
    const PODS: usize = 20;
    const MESSAGES: u64 = 200;

    let env = TestEnv::new().await;
    let output = "out";
    let mut config = consumer_fleet_config(&env);
    config.consumer.output_queue = Some(output.into());
    // Small batches, so the messages spread over the fleet and a killed
    // pod holds only some of them.
    config.consumer.fetch_batch = 5;
    config.consumer.max_concurrency = 5;
    // Processing long enough that a pod still holds messages when it is
    // killed; no message declared invalid, so every one ends in `out`.
    config.processor.min_ms = 1_000;
    config.processor.max_ms = 2_000;
    config.processor.invalid_ratio = 0.0;
    // A dead pod is noticed within seconds (TTL ≥ 2 × interval).
    config.consumer.heartbeat_ttl_ms = 3_000;
    config.consumer.heartbeat_interval_ms = 1_000;
    config.consumer.reaper_interval_ms = 1_000;
    let mut pods = start_fleet(&env, &config, PODS).await;

    env.push_numbered(MESSAGES).await;
    let inflight_key = |id: &str| format!("{{{}}}:inflight:{id}", env.queue);
    let mut ids = Vec::with_capacity(PODS);
    for pod in &pods {
        ids.push(pod.status().await.expect("status").id);
    }
    let (victim, held) = poll(Duration::from_secs(10), POLL_EVERY, async || {
        for (i, id) in ids.iter().enumerate() {
            let held = env.held(&inflight_key(id)).await;
            if held > 0 {
                return Some((i, held));
            }
        }
        None
    })
    .await
    .expect("some pod holds messages in flight");
    pods[victim].signal(libc::SIGKILL);
    let killed_at = Instant::now();
    pods[victim]
        .wait_timeout(Duration::from_secs(5))
        .expect("the victim exits on SIGKILL");
    let held_at_death = env.held(&inflight_key(&ids[victim])).await;
    assert!(
        held_at_death > 0,
        "the victim still held messages when it died (it held {held} just before)"
    );
    eprintln!(
        "killed pod {} while it held {held_at_death} messages",
        victim + 1
    );

    let done = poll(Duration::from_secs(30), POLL_EVERY, async || {
        (env.llen(output).await >= MESSAGES).then_some(())
    })
    .await;
    let out = env.all(output).await;
    assert!(
        done.is_some(),
        "only {} of {MESSAGES} messages reached the output list within 30 s of the kill; \
         queue {}, in flight {:?}",
        out.len(),
        env.llen(&env.queue).await,
        messages_in_flight(&env).await
    );
    eprintln!(
        "all {MESSAGES} messages in the output list {:?} after the kill",
        killed_at.elapsed()
    );

    let numbers: Vec<u64> = out.iter().filter_map(|m| number_of(m)).collect();
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        unique,
        (0..MESSAGES).collect::<BTreeSet<_>>(),
        "every message reached the output list"
    );
    assert_eq!(
        numbers.len(),
        out.len(),
        "the output list holds only the pushed messages"
    );
    assert_eq!(
        out.len() as u64,
        MESSAGES,
        "every message reached the output list exactly once"
    );
    assert_eq!(env.llen(&env.queue).await, 0, "nothing left in the queue");
    let left = messages_in_flight(&env).await;
    assert!(left.is_empty(), "messages left in flight: {left:?}");
    assert_eq!(
        env.llen(&env.errors).await,
        0,
        "no message is invalid, so none in the error list"
    );
}

/// An idle fleet is woken by a message pushed with a plain `LPUSH` from a
/// client that is not the generator (there is none): each of several
/// messages, pushed after the fleet has been idle for a while, is processed
/// long before the fleet's fallback poll could have found it. Every pod
/// polls at most every `idle_poll_max_ms` (10 s: the doorbell design's
/// default, and the most that releases before it accepted), so
/// 5 pods poll about every 2 s between them; the bound of 500 ms is a
/// liveness bound far above the few milliseconds a wake-up needs, and a
/// fleet that only polls meets it for all samples with a probability of
/// well under 1 %.
#[tokio::test]
async fn contract9_plain_lpush_wakes_an_idle_fleet() {
    const PODS: usize = 5;
    const SAMPLES: u64 = 5;
    /// Long enough for every pod to fall back to its slowest wait.
    const IDLE: Duration = Duration::from_secs(3);
    const WAKE_UP_BOUND: Duration = Duration::from_millis(500);

    let env = TestEnv::new().await;
    let output = "out";
    let mut config = consumer_fleet_config(&env);
    config.consumer.output_queue = Some(output.into());
    config.consumer.idle_poll_max_ms = 10_000;
    config.processor.max_ms = 0;
    config.processor.invalid_ratio = 0.0;
    let _pods = start_fleet(&env, &config, PODS).await;

    // A client of its own, like redis-cli or the original program: the
    // fleet learns of its push only through Redis.
    let producer = connect(&env.redis.url()).await;
    let mut latencies = Vec::with_capacity(SAMPLES as usize);
    for n in 0..SAMPLES {
        // Idle is the condition under test: nothing to wait for but time.
        tokio::time::sleep(IDLE).await;
        let _: u64 = producer
            .client()
            .lpush(&env.queue, numbered(n))
            .await
            .expect("lpush");
        let pushed = Instant::now();
        let processed = poll(
            Duration::from_secs(15),
            Duration::from_millis(1),
            async || (env.llen(output).await > n).then(|| pushed.elapsed()),
        )
        .await;
        let latency = processed.unwrap_or_else(|| {
            panic!(
                "message {n}, pushed with LPUSH into an idle fleet, was not processed within 15 s"
            )
        });
        eprintln!("wake-up {n}: processed {latency:?} after a plain LPUSH");
        latencies.push(latency);
    }
    eprintln!("wake-up latencies: {latencies:?}");
    let slow: Vec<&Duration> = latencies.iter().filter(|l| **l > WAKE_UP_BOUND).collect();
    assert!(
        slow.is_empty(),
        "a plain LPUSH into an idle fleet of {PODS} pods took longer than {WAKE_UP_BOUND:?} \
         to be processed in {} of {SAMPLES} samples ({latencies:?}): the fleet found the \
         message by polling, it was not woken",
        slow.len()
    );
    let numbers: Vec<u64> = env
        .all(output)
        .await
        .iter()
        .filter_map(|m| number_of(m))
        .collect();
    assert_eq!(numbers, (0..SAMPLES).collect::<Vec<_>>());
}
