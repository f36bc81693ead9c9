//! Generator election with real processes: one generator, fast handover,
//! fencing of a paused ex-generator, Redis outages, and the original's
//! failover deadlock.

use std::time::{Duration, Instant};

use crate::helpers::*;
use dsg_testkit::replica::{Replica, generators};

async fn epoch_of(r: &Replica) -> u64 {
    r.status().await.map(|s| s.lease.epoch).unwrap_or(0)
}

/// Waits for a generator other than `not`; returns its index and the time.
async fn next_generator(
    replicas: &[Replica],
    not: usize,
    timeout: Duration,
) -> Option<(usize, Instant)> {
    poll(timeout, Duration::from_millis(5), async || {
        for (i, r) in replicas.iter().enumerate() {
            if i != not && r.is_generator().await {
                return Some((i, Instant::now()));
            }
        }
        None
    })
    .await
}

#[tokio::test]
async fn contract1_exactly_one_generator_among_five_started_together() {
    let env = TestEnv::new().await;
    let mut replicas: Vec<Replica> = (0..5)
        .map(|i| {
            env.start(
                &format!("r{i}"),
                &[
                    ("GENERATOR_INTERVAL", "20"),
                    ("DSG_PROCESSOR__MAX_MS", "5"),
                    // Lease timings that a loaded CI machine cannot starve:
                    // any change of holder would be a real election bug.
                    ("DSG_LEASE__TTL_MS", "5000"),
                    ("DSG_LEASE__RENEW_DEADLINE_MS", "3500"),
                    ("DSG_LEASE__RETRY_PERIOD_MS", "500"),
                ],
            )
        })
        .collect();
    for r in replicas.iter_mut() {
        assert!(r.wait_ready(Duration::from_secs(15)).await, "{}", log(r));
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await.len() == 1
        })
        .await
    );
    let observe_until = Instant::now() + Duration::from_secs(30);
    let mut samples = 0;
    while Instant::now() < observe_until {
        let g = generators(&replicas).await;
        assert_eq!(g.len(), 1, "generators at sample {samples}: {g:?}");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No election churn: one acquisition for the whole run.
    for r in &replicas {
        assert_eq!(epoch_of(r).await, 1);
    }
    let total_generated: u64 = {
        let mut t = 0;
        for r in &replicas {
            t += r.counters().await.generated;
        }
        t
    };
    assert!(total_generated > 500, "{total_generated}");
}

#[tokio::test]
async fn contract2_sigterm_of_the_generator_hands_over_at_once() {
    let env = TestEnv::new().await;
    // A long TTL: only the release notice can explain a fast takeover.
    let slow_ttl = [
        ("GENERATOR_INTERVAL", "50"),
        ("DSG_LEASE__TTL_MS", "10000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "7000"),
        ("DSG_LEASE__RETRY_PERIOD_MS", "2000"),
        ("GENERATOR_PING_INTERVAL", "10"),
    ];
    let mut replicas = vec![
        env.spawn("a", &slow_ttl).await,
        env.spawn("b", &slow_ttl).await,
        env.spawn("c", &slow_ttl).await,
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await.len() == 1
        })
        .await
    );
    let g = generators(&replicas).await[0];
    let sent = Instant::now();
    replicas[g].signal(libc::SIGTERM);
    let (next, at) = next_generator(&replicas, g, Duration::from_secs(5))
        .await
        .expect("a standby takes over");
    let handover = at - sent;
    eprintln!("handover after SIGTERM: {handover:?}");
    assert!(
        handover < Duration::from_secs(2),
        "{handover:?} (TTL 10 s: the notice did not work)"
    );
    assert!(
        replicas[g]
            .wait_timeout(Duration::from_secs(5))
            .expect("exits")
            .success()
    );
    assert_eq!(epoch_of(&replicas[next]).await, 2);
}

#[tokio::test]
async fn contract2_sigkill_of_the_generator_is_taken_over_within_the_ttl() {
    let env = TestEnv::new().await;
    let replicas = vec![
        env.spawn("a", &[("GENERATOR_INTERVAL", "50")]).await,
        env.spawn("b", &[("GENERATOR_INTERVAL", "50")]).await,
        env.spawn("c", &[("GENERATOR_INTERVAL", "50")]).await,
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await.len() == 1
        })
        .await
    );
    let g = generators(&replicas).await[0];
    let killed = Instant::now();
    replicas[g].signal(libc::SIGKILL);
    let (next, at) = next_generator(&replicas, g, Duration::from_secs(10))
        .await
        .expect("takeover");
    let takeover = at - killed;
    eprintln!("takeover after SIGKILL with TTL 1 s: {takeover:?}");
    // TTL 1 s; a retry period (0.2 s) and polling slack on top.
    assert!(takeover < Duration::from_millis(2500), "{takeover:?}");
    let before = replicas[next].counters().await.generated;
    assert!(
        eventually(Duration::from_secs(3), || async {
            replicas[next].counters().await.generated > before + 5
        })
        .await
    );
}

/// Two generator-only instances and no consumer, so the queue only grows
/// and nothing can hide an extra write. The holder (lease TTL 1 s) is
/// frozen past its TTL, the other (TTL 10 s) takes over, then the new holder
/// is frozen too (its lease stays valid in Redis for seconds), and the first
/// is resumed: the queue must not grow by a single message.
#[tokio::test]
async fn contract1_sigstopped_generator_cannot_append_after_losing_the_lease() {
    let env = TestEnv::new().await;
    let only_generate = [
        ("MODE", "generator"),
        ("GENERATOR_INTERVAL", "0"),
        ("DSG_GENERATOR__RATE", "20000"),
    ];
    let a = 0;
    let b = 1;
    let replicas = vec![env.spawn("a", &only_generate).await];
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await == vec![a]
        })
        .await
    );
    let long_lease = [
        ("MODE", "generator"),
        ("GENERATOR_INTERVAL", "0"),
        ("DSG_GENERATOR__RATE", "20000"),
        ("DSG_LEASE__TTL_MS", "10000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "7000"),
        ("DSG_LEASE__RETRY_PERIOD_MS", "2000"),
    ];
    let replicas = vec![
        replicas.into_iter().next().expect("a"),
        env.spawn("b", &long_lease).await,
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.queue).await > 1000
        })
        .await
    );
    replicas[a].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // b takes over once a's lease expires in Redis (TTL 1 s).
    assert!(
        eventually(Duration::from_secs(10), || async {
            replicas[b].is_generator().await
        })
        .await,
        "{}",
        log(&replicas[b])
    );
    eprintln!("takeover from a frozen holder: {:?}", stopped.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicas[b].signal(libc::SIGSTOP);
    // Let b's last in-flight writes land before taking the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = env.llen(&env.queue).await;
    replicas[a].signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.llen(&env.queue).await,
        baseline,
        "the deposed generator appended after losing the lease"
    );
    let status = replicas[a].status().await.expect("a answers");
    assert_ne!(status.role, Role::Generator);
    replicas[b].signal(libc::SIGCONT);
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.queue).await > baseline
        })
        .await
    );
    assert_eq!(generators(&replicas).await, vec![b]);
}

#[tokio::test]
async fn contract6_redis_down_longer_than_the_ttl_then_exactly_one_generator_again() {
    let mut env = TestEnv::new().await;
    let timings = [
        ("GENERATOR_INTERVAL", "20"),
        ("DSG_LEASE__TTL_MS", "2000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "1400"),
        ("DSG_LEASE__RETRY_PERIOD_MS", "400"),
    ];
    let replicas = vec![
        env.spawn("a", &timings).await,
        env.spawn("b", &timings).await,
        env.spawn("c", &timings).await,
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await.len() == 1
        })
        .await
    );
    let epoch_before = epoch_of(&replicas[generators(&replicas).await[0]]).await;
    env.redis.kill();
    // Past the TTL: every holder must have stepped down.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        generators(&replicas).await.is_empty(),
        "a generator kept its role without Redis"
    );
    env.redis.restart().expect("restart");
    assert!(
        eventually(Duration::from_secs(15), || async {
            generators(&replicas).await.len() == 1
        })
        .await,
        "{}",
        log(&replicas[0])
    );
    for r in &replicas {
        assert!(
            eventually(Duration::from_secs(10), || async { r.is_ready().await }).await,
            "{}",
            log(r)
        );
    }
    env.client = connect(&env.redis.url()).await;
    // Redis kept nothing (no persistence), yet the epoch goes on upwards.
    let g = generators(&replicas).await[0];
    assert!(
        epoch_of(&replicas[g]).await > epoch_before,
        "epochs must never go backwards"
    );
    for _ in 0..20 {
        let g = generators(&replicas).await;
        assert_eq!(
            g.len(),
            1,
            "{g:?}\n{}\n{}\n{}",
            log(&replicas[0]),
            log(&replicas[1]),
            log(&replicas[2])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The work goes on: messages flow through the new Redis.
    assert!(
        eventually(Duration::from_secs(5), || async {
            replicas[0].counters().await.processed_ok
                + replicas[1].counters().await.processed_ok
                + replicas[2].counters().await.processed_ok
                > 0
        })
        .await
    );
}

/// go-redis-dsg never generated again after its generator was killed while
/// the queue was empty and every consumer sat in a blocking pop.
#[tokio::test]
async fn original_failover_deadlock_with_an_empty_queue_recovers() {
    let env = TestEnv::new().await;
    // One message every 5 s: the queue is empty nearly always and the
    // consumers wait in BLMOVE.
    let sparse = [
        ("GENERATOR_INTERVAL", "5000"),
        ("DSG_PROCESSOR__MAX_MS", "0"),
    ];
    let mut replicas = vec![
        env.spawn("a", &sparse).await,
        env.spawn("b", &sparse).await,
        env.spawn("c", &sparse).await,
    ];
    assert!(
        eventually(Duration::from_secs(5), || async {
            generators(&replicas).await.len() == 1
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(8), || async {
            env.llen(&env.queue).await == 0
        })
        .await
    );
    let g = generators(&replicas).await[0];
    replicas[g].signal(libc::SIGKILL);
    let (next, _) = next_generator(&replicas, g, Duration::from_secs(5))
        .await
        .expect("takeover with an empty queue");
    assert!(
        eventually(Duration::from_secs(8), || async {
            replicas[next].counters().await.generated >= 1
        })
        .await,
        "the new generator generates"
    );
    let _ = replicas[g].wait_timeout(Duration::from_secs(1));
}
