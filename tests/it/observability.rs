//! What `/metrics` tells an on-call engineer (issue 14): the fleet's gauges
//! read once for the fleet and never frozen, the backlog's age, the lease
//! epoch only where it is known, implausible ages counted apart.

use std::time::Duration;

use dsg_testkit::replica::Replica;
use fred::prelude::*;

use crate::helpers::*;

/// The replicas (by index) that export the queue's gauges now.
async fn exporters(replicas: &[&Replica], queue: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let text = metrics(r).await;
        if metric(&text, &format!("dsg_queue_length{{queue=\"{queue}\"}}")).is_some() {
            out.push(i);
        }
    }
    out
}

/// Contract 9 (a fleet chore is done once for the fleet) and issue 14: one
/// instance at a time, in any mode, reads and exports the queue's gauges
/// and the lease epoch; another takes over when it stops. A consumer-only
/// instance that does not sample exports no epoch (not a made-up 0).
#[tokio::test]
async fn issue14_contract9_one_instance_at_a_time_exports_the_fleet_gauges() {
    let env = TestEnv::new().await;
    let q = env.queue.clone();
    let mut c1 = env.spawn("c1", &[("MODE", "consumer")]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &metrics(&c1).await,
                &format!("dsg_queue_length{{queue=\"{q}\"}}"),
            )
            .is_some()
        })
        .await,
        "{}",
        log(&c1)
    );
    let g = env
        .spawn(
            "g",
            &[("MODE", "generator"), ("GENERATOR_INTERVAL", "1000")],
        )
        .await;
    let c2 = env.spawn("c2", &[("MODE", "consumer")]).await;
    // The reporting consumer reads the generator's epoch from Redis.
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&metrics(&c1).await, "dsg_lease_epoch") == Some(1.0)
        })
        .await,
        "{}",
        metrics(&c1).await
    );
    for _ in 0..5 {
        assert_eq!(exporters(&[&c1, &g, &c2], &q).await, vec![0]);
        let reporter = metrics(&c1).await;
        assert_eq!(metric(&reporter, "dsg_consumers_live"), Some(2.0));
        assert!(
            metric(
                &reporter,
                &format!("dsg_queue_oldest_message_age_seconds{{queue=\"{q}\"}}")
            )
            .is_some(),
            "{reporter}"
        );
        let other = metrics(&c2).await;
        assert!(!other.contains("dsg_lease_epoch"), "{other}");
        assert!(!other.contains("dsg_consumers_live"), "{other}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let id = c1.status().await.expect("status").id;
    let claim: Option<String> = env
        .client
        .client()
        .get(format!("{{{q}}}:sampler"))
        .await
        .expect("get");
    assert_eq!(claim.as_deref(), Some(id.as_str()));

    // The reporter stops and gives the claim up: another instance takes it
    // at its next try (every 10 s ± 20 %).
    c1.stop(Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(16), || async {
            exporters(&[&g, &c2], &q).await.len() == 1
        })
        .await,
        "{}\n{}",
        log(&g),
        log(&c2)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(exporters(&[&g, &c2], &q).await.len(), 1);
}

/// Issue 14, point 5: while Redis cannot be read the queue's gauges vanish
/// (Prometheus marks them stale) instead of freezing at their last values,
/// `dsg_redis_up` and `dsg_ready` read 0; all comes back with Redis.
#[tokio::test]
async fn issue14_fleet_gauges_vanish_while_redis_is_unreachable_and_come_back() {
    let mut env = TestEnv::new().await;
    let q = env.queue.clone();
    let c = env.spawn("c", &[("MODE", "consumer")]).await;
    let series = format!("dsg_queue_length{{queue=\"{q}\"}}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let text = metrics(&c).await;
            metric(&text, &series).is_some()
                && metric(&text, "dsg_redis_up") == Some(1.0)
                && metric(&text, "dsg_ready") == Some(1.0)
        })
        .await,
        "{}",
        metrics(&c).await
    );
    env.redis.kill();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let text = metrics(&c).await;
            !text.contains("dsg_queue_length")
                && !text.contains("dsg_queue_oldest_message_age_seconds")
                && !text.contains("dsg_consumers_live")
                && metric(&text, "dsg_redis_up") == Some(0.0)
                && metric(&text, "dsg_ready") == Some(0.0)
        })
        .await,
        "{}",
        metrics(&c).await
    );
    env.redis.restart().expect("redis restarts");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let text = metrics(&c).await;
            metric(&text, &series).is_some()
                && metric(&text, "dsg_redis_up") == Some(1.0)
                && metric(&text, "dsg_ready") == Some(1.0)
        })
        .await,
        "{}\n{}",
        metrics(&c).await,
        log(&c)
    );
}

/// Issue 14, point 2: the backlog's age, from the oldest message's own
/// timestamp, whoever wrote it.
#[tokio::test]
async fn issue14_the_oldest_message_age_is_read_from_its_timestamp() {
    let env = TestEnv::new().await;
    let q = env.queue.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let mut old = Vec::new();
    redis_dsg::service::message::MessageWriter::new().write(&mut old, [1; 16], now - 120, 0);
    env.push(&q, &[old, numbered(1)]).await;
    // Nobody consumes: a generator-only instance pushes at the other end.
    let g = env
        .spawn(
            "g",
            &[("MODE", "generator"), ("GENERATOR_INTERVAL", "1000")],
        )
        .await;
    let series = format!("dsg_queue_oldest_message_age_seconds{{queue=\"{q}\"}}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&metrics(&g).await, &series).is_some_and(|age| (120.0..180.0).contains(&age))
        })
        .await,
        "{}",
        metrics(&g).await
    );
    let text = metrics(&g).await;
    assert!(
        metric(&text, &format!("dsg_queue_length{{queue=\"{q}\"}}")).is_some_and(|n| n >= 2.0),
        "{text}"
    );
}

/// Issue 11, item 6: a message stamped in year 0000 is processed like any
/// other, but its age is counted apart instead of adding 6.4e10 s to the
/// age histogram's sum.
#[tokio::test]
async fn issue11_an_implausible_message_age_is_counted_apart_not_observed() {
    let env = TestEnv::new().await;
    let q = env.queue.clone();
    let c = env
        .spawn("c", &[("MODE", "consumer"), ("DSG_PROCESSOR__MAX_MS", "1")])
        .await;
    env.push(
        &q,
        &[b"00000000-0000-4000-8000-000000000001 0000-01-01T00:00:00.000000Z".to_vec()],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(
                &metrics(&c).await,
                "dsg_message_age_implausible_total{reason=\"past\"}",
            ) == Some(1.0)
        })
        .await,
        "{}",
        metrics(&c).await
    );
    let text = metrics(&c).await;
    let sum = format!("dsg_message_age_seconds_sum{{queue=\"{q}\"}}");
    assert!(metric(&text, &sum).is_some_and(|s| s < 1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "dsg_message_age_implausible_total{reason=\"future\"}"
        ),
        Some(0.0)
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.counters().await.done() == 1
        })
        .await
    );
}
