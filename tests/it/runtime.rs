//! The core runtime against a real redis-server and the real binary:
//! generation, consumption, crash safety, shutdown, probes and metrics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::helpers::*;
use fred::prelude::*;

#[tokio::test]
async fn generator_writes_well_formed_messages_at_the_interval() {
    let env = TestEnv::new().await;
    let mut g = env
        .spawn(
            "gen",
            &[("MODE", "generator"), ("GENERATOR_INTERVAL", "100")],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.queue).await >= 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g.stop(Duration::from_secs(5));
    let messages = env.all(&env.queue).await;
    assert!(
        (8..=25).contains(&messages.len()),
        "{} messages in ~1.5 s at 100 ms",
        messages.len()
    );
    let mut times = Vec::new();
    for m in &messages {
        let parsed = redis_dsg::service::message::parse(m)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(m)));
        assert_eq!(m.len(), redis_dsg::service::message::GENERATED_LEN);
        assert!(String::from_utf8_lossy(m).ends_with('Z'));
        times.push(parsed.created_at);
    }
    // Oldest first: timestamps ascend, about 100 ms apart.
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_seconds_f64())
        .collect();
    assert!(gaps.iter().all(|g| *g >= 0.0), "{gaps:?}");
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!((0.07..=0.2).contains(&median), "median gap {median}");
}

#[tokio::test]
async fn generator_interval_zero_batches_messages() {
    let env = TestEnv::new().await;
    let mut g = env
        .spawn("gen", &[("MODE", "generator"), ("GENERATOR_INTERVAL", "0")])
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.queue).await >= 5_000
        })
        .await
    );
    g.stop(Duration::from_secs(5));
    let generated = env.llen(&env.queue).await;
    let sample = env.all(&env.queue).await;
    assert!(
        sample
            .iter()
            .all(|m| redis_dsg::service::message::parse(m).is_ok())
    );
    assert!(generated >= 5_000);
}

#[tokio::test]
async fn contract4_consumer_routes_invalid_and_malformed_with_reasons() {
    let env = TestEnv::new().await;
    let good: Vec<Vec<u8>> = (0..200).map(numbered).collect();
    let bad: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        vec![0xff, 0x00, 0xfe, b'\n', b' '],
        b"not-a-uuid 2026-01-01T00:00:00Z".to_vec(),
        b"0f8fad5b-d9cb-469f-a165-70867728950e yesterday".to_vec(),
        Vec::new(),
    ];
    env.push(&env.queue, &good).await;
    env.push(&env.queue, &bad).await;
    // The original's format is well-formed too.
    env.push(
        &env.queue,
        &[
            b"0f8fad5b-d9cb-469f-a165-70867728950e at 2017-03-01 12:34:56.789 +0300 MSK m=+0.01"
                .to_vec(),
        ],
    )
    .await;
    let c = env
        .spawn(
            "consumer",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "5"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0.3"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            env.llen(&env.queue).await == 0
                && c.counters().await.processed_ok
                    + c.counters().await.invalid
                    + c.counters().await.malformed
                    == 206
        })
        .await,
        "{}",
        log(&c)
    );
    let errors = error_payloads(&env).await;
    let malformed: BTreeSet<Vec<u8>> = errors
        .iter()
        .filter(|(r, _)| r == "malformed")
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(
        malformed,
        bad.iter().cloned().collect::<BTreeSet<_>>(),
        "malformed payloads kept byte for byte"
    );
    let invalid = errors.iter().filter(|(r, _)| r == "invalid").count() as u64;
    assert_eq!(invalid, c.counters().await.invalid);
    // 30 % of 201 well-formed: far from 0 and from all.
    assert!((20..=120).contains(&invalid), "{invalid}");
    assert_eq!(c.counters().await.processed_ok + invalid, 201);
    let entry = redis_dsg::service::error_entry::decode(&env.all(&env.errors).await[0]);
    assert!(entry.consumer.is_some_and(|id| !id.is_empty()));
    assert!(entry.failed_at.is_some());
    assert!(!entry.detail.is_empty());
}

#[tokio::test]
async fn contract4_oversized_messages_go_to_the_error_list_unprocessed() {
    let env = TestEnv::new().await;
    let big = vec![b'x'; 5000];
    env.push(&env.queue, &[big.clone(), numbered(1)]).await;
    let c = env
        .spawn(
            "consumer",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0"),
                ("DSG_CONSUMER__MAX_MESSAGE_BYTES", "1024"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.counters().await.oversized == 1 && c.counters().await.processed_ok == 1
        })
        .await
    );
    let errors = error_payloads(&env).await;
    assert_eq!(errors, vec![("oversized".to_string(), big)]);
}

/// Every message the consumer held when it was SIGKILLed comes back and is
/// processed by another consumer. The processor declares every message
/// invalid, so each processed message lands in the error list, and the ids
/// there can be counted.
#[tokio::test]
async fn contract3_consumer_killed_with_sigkill_loses_no_message() {
    let env = TestEnv::new().await;
    let n = 300;
    env.push_numbered(n).await;
    let slow = [
        ("MODE", "consumer"),
        ("DSG_PROCESSOR__MIN_MS", "3000"),
        ("DSG_PROCESSOR__MAX_MS", "3000"),
        ("DSG_PROCESSOR__INVALID_RATIO", "1"),
        ("CONSUMER_MAX_GOROUTINES", "100"),
    ];
    let mut a = env.spawn("a", &slow).await;
    let a_id = a.status().await.expect("status").id;
    let inflight_key = format!("{{{}}}:inflight:{a_id}", env.queue);
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.held(&inflight_key).await == 100
        })
        .await
    );
    a.signal(libc::SIGKILL);
    a.wait_timeout(Duration::from_secs(5)).expect("killed");
    assert_eq!(
        env.held(&inflight_key).await,
        100,
        "a dead consumer's messages wait in its hash"
    );

    let b = env
        .spawn(
            "b",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
                ("DSG_PROCESSOR__INVALID_RATIO", "1"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            env.llen(&env.errors).await >= n
        })
        .await,
        "{}",
        log(&b)
    );
    let ids: Vec<u64> = error_numbers(&env).await;
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        unique,
        (0..n).collect::<BTreeSet<_>>(),
        "every message processed"
    );
    assert_eq!(
        ids.len() as u64,
        n,
        "the killed consumer acknowledged nothing, so nothing twice"
    );
    assert_eq!(b.counters().await.recovered, 100);
    assert_eq!(env.held(&inflight_key).await, 0);
}

#[tokio::test]
async fn contract7_sigterm_exits_zero_within_timeout_and_loses_nothing() {
    let env = TestEnv::new().await;
    let n = 400;
    env.push_numbered(n).await;
    let mut c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MIN_MS", "200"),
                ("DSG_PROCESSOR__MAX_MS", "600"),
                ("DSG_PROCESSOR__INVALID_RATIO", "1"),
                ("CONSUMER_MAX_GOROUTINES", "50"),
                ("DSG_SHUTDOWN__TIMEOUT_MS", "4000"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.errors).await >= 20
        })
        .await
    );
    let sent = Instant::now();
    c.signal(libc::SIGTERM);
    let status = c
        .wait_timeout(Duration::from_secs(6))
        .expect("exits within the timeout");
    assert!(status.success(), "{status}\n{}", log(&c));
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "{:?}",
        sent.elapsed()
    );
    // Finished messages are in the error list, the rest back in the queue.
    let mut ids: Vec<u64> = error_numbers(&env).await;
    ids.extend(
        env.all(&env.queue)
            .await
            .iter()
            .filter_map(|p| number_of(p)),
    );
    ids.sort();
    assert_eq!(
        ids,
        (0..n).collect::<Vec<_>>(),
        "each message exactly once, in errors or back in the queue"
    );
    let consumers: Vec<String> = fred::prelude::SetsInterface::smembers(
        env.client.client(),
        format!("{{{}}}:consumers", env.queue),
    )
    .await
    .expect("smembers");
    assert!(
        consumers.is_empty(),
        "a stopped consumer unregisters: {consumers:?}"
    );
}

#[tokio::test]
async fn contract7_sigterm_returns_unfinished_work_when_processing_outlasts_the_timeout() {
    let env = TestEnv::new().await;
    let n = 50;
    env.push_numbered(n).await;
    let mut c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MIN_MS", "60000"),
                ("DSG_PROCESSOR__MAX_MS", "60000"),
                ("DSG_SHUTDOWN__TIMEOUT_MS", "2000"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.llen(&env.queue).await == 0
        })
        .await
    );
    let sent = Instant::now();
    c.signal(libc::SIGTERM);
    let status = c.wait_timeout(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status}\n{}", log(&c));
    assert!(
        sent.elapsed() < Duration::from_millis(3000),
        "{:?}",
        sent.elapsed()
    );
    let back: Vec<u64> = env
        .all(&env.queue)
        .await
        .iter()
        .filter_map(|p| number_of(p))
        .collect();
    // Returned in their original order: the oldest is taken next.
    assert_eq!(back, (0..n).collect::<Vec<_>>());
}

#[tokio::test]
async fn contract6_healthz_stays_up_while_redis_is_down_and_readyz_follows() {
    let mut env = TestEnv::new().await;
    let c = env.spawn("c", &[("MODE", "consumer")]).await;
    let code = |path: &'static str| {
        let port = c.port();
        async move {
            dsg_testkit::http_client::get(port, path, Duration::from_secs(3))
                .await
                .map(|(code, _)| code)
        }
    };
    assert_eq!(code("/readyz").await, Some(200));
    env.redis.kill();
    assert!(
        eventually(Duration::from_secs(10), || async {
            code("/readyz").await == Some(503)
        })
        .await
    );
    assert_eq!(code("/healthz").await, Some(200));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(code("/healthz").await, Some(200));
    env.redis.restart().expect("redis restarts");
    assert!(
        eventually(Duration::from_secs(15), || async {
            code("/readyz").await == Some(200)
        })
        .await,
        "{}",
        log(&c)
    );
    // And it works again: it consumes what is pushed now.
    env.client = connect(&env.redis.url()).await;
    env.push(&env.queue, &[numbered(7)]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.llen(&env.queue).await == 0
        })
        .await,
        "{}",
        log(&c)
    );
}

#[tokio::test]
async fn metrics_expose_every_documented_name() {
    let env = TestEnv::new().await;
    let g = env
        .spawn("g", &[("MODE", "generator"), ("GENERATOR_INTERVAL", "10")])
        .await;
    let c = env
        .spawn("c", &[("MODE", "consumer"), ("DSG_PROCESSOR__MAX_MS", "1")])
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.counters().await.processed_ok > 0
        })
        .await
    );
    let (code, body) = dsg_testkit::http_client::get(c.port(), "/metrics", Duration::from_secs(2))
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "dsg_messages_generated_total",
        "dsg_messages_processed_total{outcome=\"ok\"}",
        "dsg_messages_processed_total{outcome=\"invalid\"}",
        "dsg_messages_processed_total{outcome=\"malformed\"}",
        "dsg_in_flight_messages",
        "dsg_processing_duration_seconds_bucket",
        "dsg_message_age_seconds_bucket",
        "dsg_message_age_implausible_total",
        "dsg_messages_recovered_total",
        "dsg_redis_errors_total",
        "dsg_redis_up 1",
        "dsg_ready 1",
        "dsg_build_info{version=",
        "process_start_time_seconds",
        "dsg_processor_invalid_ratio",
        "dsg_is_generator",
        "dsg_lease_transitions_total",
        "dsg_lease_notice_resubscriptions_total",
        "dsg_generator_fenced_writes_rejected_total",
        "dsg_generator_paused{reason=\"memory\"}",
        "dsg_generator_paused_seconds_total",
        "dsg_error_entries_trimmed_total",
        "dsg_in_flight_bytes",
        // Read from INFO memory at start by every replica.
        "dsg_redis_eviction_safe 1",
        "dsg_redis_memory_max_bytes",
        "dsg_redis_memory_used_bytes",
    ] {
        assert!(body.contains(name), "{name} missing from\n{body}");
    }
    // The fleet's gauges come from one of the two (issue 14); the
    // generator shows its epoch.
    let generator = metrics(&g).await;
    for name in [
        "dsg_queue_length{queue=\"q\"}",
        "dsg_queue_length{queue=\"errors\"}",
        "dsg_queue_oldest_message_age_seconds{queue=\"q\"}",
        "dsg_consumers_live",
    ] {
        let exporters = [&body, &generator]
            .iter()
            .filter(|text| metric(text, name).is_some())
            .count();
        assert_eq!(exporters, 1, "{name} in\n{body}\n{generator}");
    }
    assert_eq!(
        metric(&generator, "dsg_lease_epoch"),
        Some(1.0),
        "{generator}"
    );
    if let Some(promtool) = dsg_testkit::local_redis::find_on_path("promtool") {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `/status` parses as the typed status the tools read.
    let status = c.status().await.expect("status");
    assert!(!status.id.is_empty(), "{status:?}");
    assert_eq!(status.queue, env.queue, "{status:?}");
}

#[tokio::test]
async fn status_config_and_logs_never_show_secrets() {
    let redis =
        dsg_testkit::local_redis::LocalRedis::start_with(&["--requirepass", "hunter2-secret"])
            .expect("redis");
    let url = format!("redis://:hunter2-secret@127.0.0.1:{}", redis.port());
    let logs = tempfile::tempdir().expect("tempdir");
    let env = vec![
        ("REDIS_URL".to_string(), url.clone()),
        ("RUST_LOG".to_string(), "debug".to_string()),
    ];
    let mut c = dsg_testkit::replica::Replica::start(
        &exe(),
        dsg_testkit::local_redis::free_port(),
        &env,
        &logs.path().join("c.log"),
    )
    .expect("start");
    assert!(c.wait_ready(Duration::from_secs(15)).await, "{}", log(&c));
    let (_, body) = dsg_testkit::http_client::get(c.port(), "/status", Duration::from_secs(2))
        .await
        .expect("status");
    assert!(!body.contains("hunter2"), "{body}");
    assert!(body.contains(":***@"), "{body}");
    let out = run_cli(&env, &["config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !text.contains("hunter2") && text.contains(":***@"),
        "{text}"
    );
    let out = run_cli(&env, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.stop(Duration::from_secs(5));
    let logs = std::fs::read_to_string(c.log()).unwrap_or_default();
    assert!(!logs.is_empty());
    assert!(!logs.contains("hunter2"), "{logs}");
    // A wrong password is refused with a message that does not echo it.
    let bad = vec![(
        "REDIS_URL".to_string(),
        format!("redis://:wrong-pw@127.0.0.1:{}", redis.port()),
    )];
    let out = run_cli(&bad, &["errors", "count"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-pw"));
}

/// A crash-free batched run: every message reaches the output list exactly
/// once (ids counted), with two consumers fetching in batches.
#[tokio::test]
async fn contract3_batched_consumption_of_a_million_messages_loses_and_duplicates_none() {
    let env = TestEnv::new().await;
    let n: u64 = std::env::var("DSG_TEST_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    env.push_numbered(n).await;
    let fast = [
        ("MODE", "consumer"),
        ("DSG_PROCESSOR__MAX_MS", "0"),
        ("DSG_PROCESSOR__INVALID_RATIO", "0"),
        ("DSG_CONSUMER__OUTPUT_QUEUE", "{q}:out"),
        ("RUST_LOG", "warn"),
    ];
    let a = env.spawn("a", &fast).await;
    let b = env.spawn("b", &fast).await;
    assert!(
        eventually(Duration::from_secs(600), || async {
            env.llen("{q}:out").await >= n
        })
        .await,
        "{}\n{}",
        log(&a),
        log(&b)
    );
    let out = env.all("{q}:out").await;
    let mut seen = vec![false; n as usize];
    for m in &out {
        let i = number_of(m).expect("numbered") as usize;
        assert!(!seen[i], "message {i} delivered twice");
        seen[i] = true;
    }
    assert_eq!(out.len() as u64, n);
    assert_eq!(env.llen(&env.queue).await, 0);
    assert_eq!(env.llen(&env.errors).await, 0);
    assert_eq!(
        a.counters().await.processed_ok + b.counters().await.processed_ok,
        n
    );
}

/// An oversized message reaching an idle consumer is never read into
/// memory: only its size crosses the network.
#[tokio::test]
async fn contract4_an_oversized_message_is_never_read_into_memory() {
    let env = TestEnv::new().await;
    let c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_CONSUMER__MAX_MESSAGE_BYTES", "1024"),
                // Moving 64 MB inside Redis takes a while on a loaded
                // machine; the test's short 1 s timeout would retry it
                // forever.
                ("DSG_REDIS__COMMAND_TIMEOUT_MS", "10000"),
            ],
        )
        .await;
    let pid = c.pid().expect("pid").to_string();
    let before = dsg_testkit::process::peak_rss_of(&pid).expect("rss");
    let size = 64 * 1024 * 1024;
    env.push(&env.queue, &[vec![b'x'; size]]).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            c.counters().await.oversized == 1
        })
        .await,
        "{}",
        log(&c)
    );
    let after = dsg_testkit::process::peak_rss_of(&pid).expect("rss");
    assert!(
        after < before + 16 * 1024 * 1024,
        "peak RSS grew from {before} to {after} bytes"
    );
    let entry = redis_dsg::service::error_entry::decode(&env.all(&env.errors).await[0]);
    assert_eq!(entry.reason, "oversized");
    assert_eq!(
        entry.payload.len(),
        size,
        "the error list keeps the whole message"
    );
}

/// A fetch whose reply does not arrive in time may still have moved
/// messages into the consumer's hash; the consumer finds and processes
/// them while it keeps running (not only at shutdown).
#[tokio::test]
async fn contract3_messages_of_a_fetch_whose_reply_was_lost_are_processed() {
    let env = TestEnv::new().await;
    let n = 2000;
    let c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0"),
                ("DSG_CONSUMER__OUTPUT_QUEUE", "{q}:out"),
                ("DSG_CONSUMER__FETCH_BATCH", "50"),
            ],
        )
        .await;
    // Pause every client longer than the consumer's command timeout (1 s):
    // the fetch it sends meanwhile runs after the pause, too late for its
    // caller.
    let _: String = env
        .client
        .client()
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["PAUSE", "1800", "ALL"],
        )
        .await
        .expect("client pause");
    env.push_numbered(n).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            env.llen("{q}:out").await == n
        })
        .await,
        "{}",
        log(&c)
    );
    let id = c.status().await.expect("status").id;
    assert_eq!(
        env.held(&format!("{{q}}:inflight:{id}")).await,
        0,
        "nothing left stranded in the hash"
    );
    assert!(
        c.counters().await.redis_errors >= 1,
        "the pause should have failed a call"
    );
}

/// Acknowledgements of successes go on while the error list cannot be
/// written (here: a key of the wrong type), and the failures land once it
/// can.
#[tokio::test]
async fn contract4_a_failing_error_list_does_not_hold_up_successes() {
    let env = TestEnv::new().await;
    let _: () = env
        .client
        .client()
        .set(&env.errors, "not a list", None, None, false)
        .await
        .expect("set");
    let n = 400;
    env.push_numbered(n).await;
    let c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0.5"),
                ("DSG_CONSUMER__OUTPUT_QUEUE", "{q}:out"),
                ("CONSUMER_MAX_GOROUTINES", "1000"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.llen("{q}:out").await > 100 && env.llen(&env.queue).await == 0
        })
        .await,
        "{}",
        log(&c)
    );
    let _: u64 = env.client.client().del(&env.errors).await.expect("del");
    // Successes still in flight when the queue emptied may land after this
    // point too: count both lists each time.
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.llen(&env.errors).await + env.llen("{q}:out").await == n
        })
        .await,
        "errors {} + output {} != {n}\n{}",
        env.llen(&env.errors).await,
        env.llen("{q}:out").await,
        log(&c)
    );
}

#[tokio::test]
async fn contract7_sigterm_while_redis_is_down_still_exits_zero_in_time() {
    let mut env = TestEnv::new().await;
    env.push_numbered(100).await;
    let slow = [
        ("DSG_PROCESSOR__MIN_MS", "300"),
        ("DSG_PROCESSOR__MAX_MS", "300"),
        ("GENERATOR_INTERVAL", "10"),
    ];
    let mut a = env.spawn("a", &slow).await;
    let mut b = env.spawn("b", &slow).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    a.signal(libc::SIGTERM);
    b.signal(libc::SIGTERM);
    for r in [&mut a, &mut b] {
        let status = r.wait_timeout(Duration::from_secs(8)).expect("exits");
        assert!(status.success(), "{status}\n{}", log(r));
    }
    // The shutdown timeout in these tests is 5 s.
    assert!(
        sent.elapsed() < Duration::from_millis(5500),
        "{:?}",
        sent.elapsed()
    );
}

/// Back-pressure: with a 2 M backlog and slow processing the consumer holds
/// at most its concurrency limit and its memory stays bounded.
#[tokio::test]
async fn contract3_memory_stays_bounded_under_a_two_million_backlog() {
    let env = TestEnv::new().await;
    let n: u64 = std::env::var("DSG_TEST_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    env.push_numbered(n).await;
    let c = env
        .spawn(
            "c",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MIN_MS", "100"),
                ("DSG_PROCESSOR__MAX_MS", "100"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0"),
                ("CONSUMER_MAX_GOROUTINES", "5000"),
            ],
        )
        .await;
    let pid = c.pid().expect("pid").to_string();
    let mut peak_in_flight = 0;
    let mut samples = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = c.status().await.expect("status");
        peak_in_flight = peak_in_flight.max(s.in_flight);
        samples.push(dsg_testkit::process::rss_of(&pid).expect("rss"));
    }
    let processed = c.counters().await.processed_ok;
    assert!(
        processed > 5_000,
        "it works through the backlog: {processed}"
    );
    assert!(peak_in_flight <= 5_000, "held {peak_in_flight} > the limit");
    let id = c.status().await.expect("status").id;
    assert!(env.held(&format!("{{q}}:inflight:{id}")).await <= 5_000);
    // A debug build with 5,000 messages in flight; generous on purpose.
    let peak = *samples.iter().max().expect("samples");
    assert!(peak < 64 * 1024 * 1024, "RSS peaked at {peak} bytes");
    // Bounded, not growing with the backlog: the last second is no higher
    // than the first second after warm-up plus slack.
    let early = samples[10..20].iter().max().copied().unwrap_or(0);
    let late = samples[30..].iter().max().copied().unwrap_or(0);
    assert!(
        late < early + 8 * 1024 * 1024,
        "RSS grew from {early} to {late}"
    );
}
