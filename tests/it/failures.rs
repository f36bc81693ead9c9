//! Failures are loud (issue 11, item 3; contract 6): the first failure is
//! logged at WARN naming its cause, then throttled; an instance that cannot
//! do its job says so on `/readyz` (at once, whatever Redis does); a lost
//! subscription to lease notices is made again.

use std::time::{Duration, Instant};

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, free_port};
use dsg_testkit::replica::Replica;
use fred::prelude::*;

use crate::helpers::*;

/// Lines of `r`'s log at WARN that contain every one of `words`.
fn warnings(r: &Replica, words: &[&str]) -> usize {
    full_log(r)
        .lines()
        .filter(|l| l.contains("WARN") && words.iter().all(|w| l.contains(w)))
        .count()
}

/// Contract 6 and issue 11: `/readyz` answers from the instance's state,
/// within 100 ms, while Redis is frozen (SIGSTOP: connections stay open,
/// nothing answers, no RST), with the reason in its body.
#[tokio::test]
async fn issue11_readyz_answers_within_100_ms_with_the_reason_while_redis_is_stopped() {
    let env = TestEnv::new().await;
    let c = env.spawn("c", &[("MODE", "consumer")]).await;
    let pid = env.redis.pid().expect("redis runs");
    signal_pid(pid, libc::SIGSTOP);
    // Commands time out after the command timeout (1 s here).
    let unready = eventually(Duration::from_secs(10), || async {
        let (code, body, _) = readyz(&c).await;
        code == Some(503) && body.contains("Redis unreachable")
    })
    .await;
    let mut took = Vec::new();
    let mut answers = Vec::new();
    if unready {
        for _ in 0..20 {
            let (code, body, t) = readyz(&c).await;
            took.push(t);
            answers.push((code, body));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let healthz = dsg_testkit::http_client::get(c.port(), "/healthz", Duration::from_secs(1)).await;
    signal_pid(pid, libc::SIGCONT);
    assert!(unready, "{}", log(&c));
    took.sort();
    println!(
        "/readyz while Redis is stopped: median {:?}, max {:?}, body {:?}",
        took[took.len() / 2],
        took[took.len() - 1],
        answers[0].1
    );
    assert!(
        answers.iter().all(|(code, _)| *code == Some(503)),
        "{answers:?}"
    );
    assert!(
        took[took.len() / 2] < Duration::from_millis(100),
        "{took:?}"
    );
    assert!(took[took.len() - 1] < Duration::from_secs(1), "{took:?}");
    assert_eq!(healthz.map(|(code, _)| code), Some(200));
    assert!(
        eventually(Duration::from_secs(15), || async {
            readyz(&c).await.0 == Some(200)
        })
        .await,
        "{}",
        log(&c)
    );
}

/// Issue 11: a wrong password, a refused connection, an unknown host and a
/// database index the server does not have are each logged at WARN within
/// 5 s naming the cause, once (not once per retry), and `/readyz` says it;
/// the password is never printed.
#[tokio::test]
async fn issue11_the_first_failure_is_logged_at_warn_within_5_s_naming_the_cause() {
    let redis = LocalRedis::start().expect("redis");
    let admin = connect(&redis.url()).await;
    let _: Value = admin
        .client()
        .custom(
            fred::cmd!("ACL"),
            vec!["SETUSER", "dsg", "on", ">RightPw77", "~*", "&*", "+@all"],
        )
        .await
        .expect("acl setuser");
    let logs = tempfile::tempdir().expect("tempdir");
    let port = redis.port();
    let cases = [
        (
            "wrong password",
            format!("redis://dsg:WrongPw88@127.0.0.1:{port}"),
            "authentication failed",
        ),
        (
            "refused",
            format!("redis://127.0.0.1:{}", free_port()),
            "connection refused",
        ),
        (
            "unknown host",
            "redis://no-such-host.invalid:6379".to_string(),
            "unknown host",
        ),
        (
            "database index",
            format!("redis://127.0.0.1:{port}/16"),
            "database index out of range",
        ),
    ];
    let started = Instant::now();
    let replicas: Vec<Replica> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, url, _))| {
            let mut config = fleet::quick_config(url);
            config.mode = redis_dsg::config::Mode::Consumer;
            let env = fleet::env_for(&config, logs.path(), &format!("case{i}")).expect("env");
            Replica::start(
                &exe(),
                free_port(),
                &env,
                &logs.path().join(format!("case{i}.log")),
            )
            .expect("replica starts")
        })
        .collect();
    for ((name, _, cause), r) in cases.iter().zip(&replicas) {
        let seen = eventually(
            Duration::from_secs(5).saturating_sub(started.elapsed()),
            || async { warnings(r, &["cannot reach Redis", cause]) > 0 },
        )
        .await;
        assert!(
            seen,
            "{name}: no WARN naming {cause:?} within 5 s:\n{}",
            log(r)
        );
    }
    // Retries (every 200 ms here) are not logged again within the minute.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ((name, _, cause), r) in cases.iter().zip(&replicas) {
        assert_eq!(warnings(r, &["Redis"]), 1, "{name}:\n{}", log(r));
        let (code, body, _) = readyz(r).await;
        assert_eq!(code, Some(503), "{name}");
        assert!(body.contains(cause), "{name}: {body}");
        assert!(
            !full_log(r).contains("WrongPw88"),
            "{name}: password in the log"
        );
    }
}

/// Issue 11: a consumer whose fetches keep failing (here the queue is a
/// string) says so at WARN once, backs off further and further instead of
/// retrying several times a second, reports itself unready after a bound,
/// and recovers by itself once the key is fixed.
#[tokio::test]
async fn issue11_a_consumer_whose_fetches_keep_failing_warns_backs_off_and_turns_unready() {
    let env = TestEnv::new().await;
    let q = env.queue.clone();
    let _: () = env
        .client
        .client()
        .set(&q, "oops", None, None, false)
        .await
        .expect("set");
    let c = env.spawn("c", &[("MODE", "consumer")]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            warnings(&c, &["fetching messages", "wrong type"]) > 0
        })
        .await,
        "{}",
        log(&c)
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            let (code, body, _) = readyz(&c).await;
            code == Some(503) && body.contains("fetching messages from the queue has failed")
        })
        .await,
        "{}",
        log(&c)
    );
    let text = metrics(&c).await;
    let attempts = metric(&text, "dsg_redis_errors_total{operation=\"fetch\"}").unwrap_or(0.0);
    println!("fetch attempts in the first ~16 s of a wrong-type queue: {attempts}");
    // Two fetch loops retrying at a 2 s cap would make ≥ 20 by now; a
    // back-off reset after every attempt, hundreds.
    assert!(attempts < 30.0, "{attempts} fetch attempts\n{text}");
    // One line when it started, one when it turned unready.
    assert!(warnings(&c, &["fetching messages"]) <= 3, "{}", log(&c));
    let _: i64 = env.client.client().del(&q).await.expect("del");
    env.push(&q, &[numbered(1)]).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            readyz(&c).await.0 == Some(200) && c.counters().await.done() == 1
        })
        .await,
        "{}",
        log(&c)
    );
}

/// Issue 11: a lease attempt that fails for another reason than "held by
/// another instance" (here the lease key is a hash) is logged at WARN and,
/// if it goes on, makes the instance unready, instead of every replica
/// reporting ready with no generator.
#[tokio::test]
async fn issue11_a_lease_attempt_failing_for_another_reason_is_loud() {
    let env = TestEnv::new().await;
    let lease = format!("{{{}}}:lease", env.queue);
    let _: i64 = env
        .client
        .client()
        .hset(&lease, ("x", "y"))
        .await
        .expect("hset");
    let g = env.start("g", &[("MODE", "generator")]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            warnings(&g, &["generator lease", "wrong type"]) > 0
        })
        .await,
        "{}",
        log(&g)
    );
    // Unready once failures span 15 s; with the lease's growing pause
    // (from the 2 s retry period up to 10 s) that is 15–25 s in: the bound
    // leaves room for a loaded machine.
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (code, body, _) = readyz(&g).await;
            code == Some(503) && body.contains("generator lease")
        })
        .await,
        "{}",
        log(&g)
    );
}

/// Contract 2 and issue 11: a standby whose subscription to release
/// notices is cut (`CLIENT KILL TYPE pubsub`) subscribes again, counts it,
/// and still takes over at once on a graceful handover, not after the TTL.
#[tokio::test]
async fn issue11_contract2_a_lost_notice_subscription_is_made_again_and_counted() {
    let env = TestEnv::new().await;
    // A TTL far above the handover time, so a missed notice would show.
    let lease = [
        ("DSG_LEASE__TTL_MS", "10000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "7000"),
        ("DSG_LEASE__RETRY_PERIOD_MS", "2000"),
        ("DSG_LEASE__PING_INTERVAL_SECONDS", "10"),
        ("GENERATOR_INTERVAL", "100"),
    ];
    let mut a = env.spawn("a", &lease).await;
    assert!(
        eventually(Duration::from_secs(5), || async { a.is_generator().await }).await,
        "{}",
        log(&a)
    );
    let b = env.spawn("b", &lease).await;
    let resubscribed = "dsg_lease_notice_resubscriptions_total";
    assert_eq!(metric(&metrics(&b).await, resubscribed), Some(0.0));
    // Both subscribed (the subscription is made in the background).
    let channel = format!("{{{}}}:lease:released", env.queue);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let n: Vec<Value> = env
                .client
                .client()
                .custom(fred::cmd!("PUBSUB"), vec!["NUMSUB", channel.as_str()])
                .await
                .unwrap_or_default();
            n.get(1).and_then(Value::as_i64) == Some(2)
        })
        .await
    );
    let killed: Value = env
        .client
        .client()
        .custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", "pubsub"])
        .await
        .expect("client kill");
    println!("pub/sub connections killed: {killed:?}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&metrics(&b).await, resubscribed) == Some(1.0)
        })
        .await,
        "{}",
        log(&b)
    );
    let sent = Instant::now();
    a.signal(libc::SIGTERM);
    assert!(
        eventually(Duration::from_secs(15), || async { b.is_generator().await }).await,
        "{}",
        log(&b)
    );
    let took = sent.elapsed();
    println!("handover after the subscription was made again: {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}\n{}", log(&b));
    let _ = a.wait_timeout(Duration::from_secs(10));
}
