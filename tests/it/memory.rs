//! Contract 12, memory is bounded everywhere: the generator holds back at
//! its backlog bound and below its share of `maxmemory`; consumers drain a
//! Redis that is past its `maxmemory` without losing or repeating a
//! message; an evicting Redis is named; the error list keeps its bound;
//! a consumer holds no more message bytes than its budget. Each on a
//! private `redis-server`, asserting on counts and states, never on time.

use std::collections::BTreeMap;
use std::time::Duration;

use dsg_testkit::redis_info::CommandStats;
use fred::prelude::*;

use crate::helpers::*;

/// `used_memory` and `maxmemory` of the test's Redis.
async fn memory(env: &TestEnv) -> (u64, u64) {
    (
        info_memory_field(env, "used_memory").await,
        info_memory_field(env, "maxmemory").await,
    )
}

/// One number of the test Redis' `INFO memory`.
async fn info_memory_field(env: &TestEnv, name: &str) -> u64 {
    let info: String = env
        .client
        .client()
        .info(Some(fred::types::InfoKind::Memory))
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("{name}:")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from INFO memory"))
}

fn counted(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test]
async fn contract12_the_generator_holds_back_at_max_backlog_and_resumes_below_90_percent_of_it() {
    let env = TestEnv::new().await;
    let bound = 2_000u64;
    let batch = 500u64;
    let bound_text = bound.to_string();
    let mut g = env
        .spawn(
            "generator",
            &[
                ("MODE", "generator"),
                ("GENERATOR_INTERVAL", "0"),
                ("DSG_GENERATOR__MAX_BACKLOG", &bound_text),
            ],
        )
        .await;
    let held = eventually(Duration::from_secs(20), async || {
        metric(
            &metrics(&g).await,
            "dsg_generator_paused{reason=\"backlog\"}",
        ) == Some(1.0)
    })
    .await;
    assert!(held, "never held back:\n{}", log(&g));
    // Held back, with every writer's batch in flight: the bound plus at
    // most one batch (the script checks the length before it pushes).
    for _ in 0..10 {
        let len = env.llen(&env.queue).await;
        assert!(len >= bound && len < bound + batch, "queue length {len}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body, _) = readyz(&g).await;
    assert_eq!(code, Some(200), "a held-back generator is ready: {body}");
    let m = metrics(&g).await;
    assert_eq!(
        metric(&m, "dsg_redis_errors_total{operation=\"push\"}"),
        Some(0.0)
    );
    // Just below the bound (above 90 % of it) the generator stays held:
    // resuming there made it flap at every batch.
    command(&env.client, &["LTRIM", &env.queue, "0", "1849"]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(env.llen(&env.queue).await, 1_850, "{}", log(&g));
    assert!(!full_log(&g).contains("generator resumed after holding back"));
    // Consumers took most of it: the generator resumes.
    command(&env.client, &["LTRIM", &env.queue, "0", "99"]).await;
    let resumed = eventually(Duration::from_secs(20), async || {
        full_log(&g).contains("generator resumed after holding back")
    })
    .await;
    assert!(resumed, "never resumed:\n{}", log(&g));
    let held_again = eventually(Duration::from_secs(20), async || {
        env.llen(&env.queue).await >= bound
    })
    .await;
    assert!(held_again, "the queue did not refill to the bound");
    let m = metrics(&g).await;
    let seconds = metric(&m, "dsg_generator_paused_seconds_total{reason=\"backlog\"}");
    assert!(seconds.is_some_and(|s| s > 0.0), "{m}");
    let text = full_log(&g);
    assert!(
        counted(&text, "generator holding back") <= 3,
        "said once per hold, not per try:\n{text}"
    );
    g.stop(Duration::from_secs(5));
}

#[tokio::test]
async fn contract12_the_generator_holds_back_below_its_share_of_maxmemory() {
    let env =
        TestEnv::with_redis_args(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]).await;
    let mut g = env
        .spawn(
            "generator",
            &[
                ("MODE", "generator"),
                ("GENERATOR_INTERVAL", "0"),
                ("DSG_GENERATOR__MAX_BACKLOG", "0"),
                ("DSG_GENERATOR__MAX_REDIS_MEMORY_RATIO", "0.5"),
            ],
        )
        .await;
    let mut peak = 0;
    let held = eventually(Duration::from_secs(30), async || {
        peak = peak.max(memory(&env).await.0);
        metric(
            &metrics(&g).await,
            "dsg_generator_paused{reason=\"memory\"}",
        ) == Some(1.0)
    })
    .await;
    assert!(held, "never held back:\n{}", log(&g));
    for _ in 0..20 {
        peak = peak.max(memory(&env).await.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, max) = memory(&env).await;
    assert!(peak < max, "used_memory reached maxmemory: {peak} of {max}");
    // Redis' own peak, not a sample: the generator counts what it pushed
    // since its last reading, so even at interval 0 (it fills 8 MB in a
    // tenth of a second) it stops near its ratio, not at maxmemory.
    let redis_peak = info_memory_field(&env, "used_memory_peak").await;
    assert!(
        redis_peak <= max * 6 / 10,
        "used_memory_peak {redis_peak} of maxmemory {max} (ratio 0.5)"
    );
    // Nothing refused a write of anyone: a plain SET still works.
    let set: Result<(), _> = env
        .client
        .client()
        .set("probe", "x", None, None, false)
        .await;
    assert!(set.is_ok(), "{set:?}");
    let (code, body, _) = readyz(&g).await;
    assert_eq!(code, Some(200), "{body}");
    let m = metrics(&g).await;
    assert_eq!(
        metric(&m, "dsg_redis_errors_total{operation=\"push\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "dsg_redis_memory_max_bytes"), Some(max as f64));
    assert!(full_log(&g).contains("maxmemory"), "{}", log(&g));
    g.stop(Duration::from_secs(5));
}

/// A Redis past its `maxmemory` (`noeviction`): every plain write is
/// refused, yet two consumers take, acknowledge, hand over and heartbeat:
/// every message ends up in the output or the error list exactly once.
#[tokio::test]
async fn contract12_consumers_drain_a_full_redis_losing_and_repeating_nothing() {
    let env = TestEnv::new().await;
    let n = 20_000u64;
    env.push_numbered(n).await;
    let (used, _) = memory(&env).await;
    command(
        &env.client,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    command(
        &env.client,
        &["CONFIG", "SET", "maxmemory", &used.to_string()],
    )
    .await;
    let refused = env
        .client
        .client()
        .set::<(), _, _>("probe", "x", None, None, false)
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.details().contains("OOM")),
        "the test needs a full Redis: {refused:?}"
    );
    let out = "{q}:out";
    let consumers = [
        ("MODE", "consumer"),
        ("DSG_PROCESSOR__MAX_MS", "2"),
        ("DSG_PROCESSOR__INVALID_RATIO", "0.05"),
        ("DSG_CONSUMER__OUTPUT_QUEUE", out),
    ];
    let mut a = env.spawn("a", &consumers).await;
    let mut b = env.spawn("b", &consumers).await;
    let drained = eventually(Duration::from_secs(60), async || {
        env.llen(out).await + env.llen(&env.errors).await >= n
    })
    .await;
    assert!(drained, "not drained:\n{}\n{}", log(&a), log(&b));
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for m in env.all(out).await {
        *seen.entry(number_of(&m).expect("numbered")).or_default() += 1;
    }
    for number in error_numbers(&env).await {
        *seen.entry(number).or_default() += 1;
    }
    let lost = (0..n).filter(|i| !seen.contains_key(i)).count();
    let twice = seen.values().filter(|c| **c > 1).count();
    assert_eq!((lost, twice), (0, 0), "lost and repeated at maxmemory");
    for r in [&a, &b] {
        let m = metrics(r).await;
        for op in ["heartbeat", "fetch", "ack"] {
            let series = format!("dsg_redis_errors_total{{operation=\"{op}\"}}");
            assert_eq!(
                metric(&m, &series),
                Some(0.0),
                "{op} failed at maxmemory:\n{}",
                log(r)
            );
        }
        assert!(!full_log(r).contains("OOM"), "{}", log(r));
    }
    a.stop(Duration::from_secs(5));
    b.stop(Duration::from_secs(5));
}

#[tokio::test]
async fn contract12_an_evicting_redis_is_named_and_refused_with_require_noeviction() {
    let env = TestEnv::with_redis_args(&["--maxmemory-policy", "volatile-lru"]).await;
    let mut plain = env.spawn("plain", &[("MODE", "consumer")]).await;
    let named = eventually(Duration::from_secs(5), async || {
        let text = full_log(&plain);
        text.contains("WARN") && text.contains("maxmemory-policy is volatile-lru")
    })
    .await;
    assert!(
        named,
        "no WARN naming the policy within 5 s:\n{}",
        log(&plain)
    );
    let m = metrics(&plain).await;
    assert_eq!(metric(&m, "dsg_redis_eviction_safe"), Some(0.0), "{m}");
    assert_eq!(readyz(&plain).await.0, Some(200), "warned, not refused");
    let mut strict = env.start(
        "strict",
        &[
            ("MODE", "consumer"),
            ("DSG_REDIS__REQUIRE_NOEVICTION", "true"),
        ],
    );
    let refused = eventually(Duration::from_secs(10), async || {
        let (code, body, _) = readyz(&strict).await;
        code == Some(503) && body.contains("volatile-lru") && body.contains("require_noeviction")
    })
    .await;
    assert!(refused, "{:?}\n{}", readyz(&strict).await, log(&strict));
    // The policy is the operator's to fix; at the next reading the
    // replica is ready again (read at start here: a fresh replica).
    command(
        &env.client,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    let mut fixed = env
        .spawn(
            "fixed",
            &[
                ("MODE", "consumer"),
                ("DSG_REDIS__REQUIRE_NOEVICTION", "true"),
            ],
        )
        .await;
    assert_eq!(
        metric(&metrics(&fixed).await, "dsg_redis_eviction_safe"),
        Some(1.0)
    );
    for r in [&mut plain, &mut strict, &mut fixed] {
        r.stop(Duration::from_secs(5));
    }
}

/// The error list keeps `errors.max_entries`: the oldest entries go, in
/// the step that adds one, counted and warned about once.
#[tokio::test]
async fn contract12_the_error_list_is_trimmed_oldest_first_and_counted() {
    let env = TestEnv::new().await;
    let old: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("old-{i:02}").into_bytes())
        .collect();
    // LPUSH in order: old-00 is the oldest, at the consuming end.
    env.push(&env.errors, &old).await;
    env.push_numbered(10).await;
    let mut c = env
        .spawn(
            "consumer",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
                ("DSG_PROCESSOR__INVALID_RATIO", "1"),
                ("DSG_ERRORS__MAX_ENTRIES", "50"),
            ],
        )
        .await;
    let done = eventually(Duration::from_secs(20), async || {
        metric(&metrics(&c).await, "dsg_error_entries_trimmed_total") == Some(10.0)
    })
    .await;
    assert!(done, "{}\n{}", metrics(&c).await, log(&c));
    let entries = env.all(&env.errors).await;
    assert_eq!(entries.len(), 50);
    let kept_old: Vec<Vec<u8>> = entries
        .iter()
        .filter(|e| e.starts_with(b"old-"))
        .cloned()
        .collect();
    assert_eq!(
        kept_old,
        old[10..].to_vec(),
        "the ten oldest went, in order"
    );
    let mut numbers = error_numbers(&env).await;
    numbers.sort();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>(), "every new entry kept");
    let text = full_log(&c);
    assert_eq!(
        counted(&text, "its oldest entries are being trimmed"),
        1,
        "{text}"
    );
    c.stop(Duration::from_secs(5));
}

/// A consumer never holds more message bytes than its budget, and a
/// message larger than the whole budget still moves, alone.
#[tokio::test]
async fn contract12_a_consumer_holds_no_more_bytes_than_its_budget() {
    for (budget, size, most) in [(262_144u64, 100_000usize, 2u64), (65_536, 100_000, 1)] {
        let env = TestEnv::new().await;
        let n = 30;
        // Not well-formed: each goes to the error list, held until its
        // acknowledgement (error acknowledgements gather up to a second).
        let big: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut m = format!("big-{i:03} ").into_bytes();
                m.resize(size, b'x');
                m
            })
            .collect();
        env.push(&env.queue, &big).await;
        let budget_text = budget.to_string();
        let mut c = env
            .spawn(
                "consumer",
                &[
                    ("MODE", "consumer"),
                    ("DSG_CONSUMER__MAX_IN_FLIGHT_BYTES", &budget_text),
                ],
            )
            .await;
        let inflight = format!("{{{}}}:inflight:", env.queue);
        let mut peak = 0u64;
        let mut peak_bytes = 0f64;
        let drained = eventually(Duration::from_secs(60), async || {
            let keys = bulk_strings(command(&env.client, &["KEYS", &format!("{inflight}*")]).await);
            for k in keys {
                peak = peak.max(env.held(&String::from_utf8_lossy(&k)).await);
            }
            if let Some(b) = metric(&metrics(&c).await, "dsg_in_flight_bytes") {
                peak_bytes = peak_bytes.max(b);
            }
            env.llen(&env.errors).await == n
        })
        .await;
        assert!(drained, "budget {budget}: not drained\n{}", log(&c));
        assert!(
            peak >= 1 && peak <= most,
            "budget {budget}: {peak} held at once"
        );
        assert!(
            peak_bytes <= (budget.max(size as u64)) as f64,
            "{peak_bytes}"
        );
        assert_eq!(env.llen(&env.queue).await, 0);
        let payloads = error_payloads(&env).await;
        let mut names: Vec<Vec<u8>> = payloads.iter().map(|(_, p)| p[..8].to_vec()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n as usize, "each once");
        c.stop(Duration::from_secs(5));
    }
}

/// A fetch stopped by its share of the budget leaves the next message
/// behind; the fetch after it must take a share again, not that message
/// alone (it once did: a backlog of 8 KiB messages moved one per round
/// trip). Counted in Redis: each fetch runs `LTRIM` twice (probe, trim).
#[tokio::test]
async fn contract12_a_backlog_of_larger_messages_moves_a_budget_share_per_fetch() {
    let env = TestEnv::new().await;
    let n = 2_000u64;
    let size = 10 * 1024;
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut m = format!("mid-{i:05} ").into_bytes();
            m.resize(size, b'x');
            m
        })
        .collect();
    env.push(&env.queue, &messages).await;
    let before = CommandStats::read(&env.client).await.expect("commandstats");
    let mut c = env
        .spawn(
            "consumer",
            &[
                ("MODE", "consumer"),
                ("DSG_PROCESSOR__MIN_MS", "0"),
                ("DSG_PROCESSOR__MAX_MS", "0"),
            ],
        )
        .await;
    let drained = eventually(Duration::from_secs(60), async || {
        env.llen(&env.errors).await == n
    })
    .await;
    assert!(drained, "not drained\n{}", log(&c));
    let after = CommandStats::read(&env.client).await.expect("commandstats");
    let fetches = after.since(&before).calls("ltrim") / 2;
    // 2 MiB shares carry about 200 of these; one lane's thin fetches and
    // the other's share of the tail add a few.
    assert!(
        fetches <= n / 50,
        "{fetches} fetches for {n} messages of {size} bytes"
    );
    c.stop(Duration::from_secs(5));
}
