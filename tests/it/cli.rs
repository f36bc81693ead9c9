//! The command line: bad configuration, the errors commands, `status`.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::*;
use redis_dsg::service::error_entry::{Reason, header};

/// A listener standing in for Redis that records whether anyone connected.
fn tripwire() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hit = Arc::new(AtomicBool::new(false));
    let h = hit.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.store(true, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, hit)
}

#[test]
fn contract5_bad_configuration_exits_78_naming_the_setting_before_touching_redis() {
    let (port, hit) = tripwire();
    let redis = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("GENERATOR_INTERVAL", "fast")], "GENERATOR_INTERVAL"),
        (vec![("MODE", "leader")], "MODE"),
        (vec![("REDIS_POOL_SIZE", "-4")], "REDIS_POOL_SIZE"),
        (
            vec![("DSG_CONSUMER__MAX_MESSAGE_BYTES", "-1")],
            "DSG_CONSUMER__MAX_MESSAGE_BYTES",
        ),
        (
            vec![("CONSUMER_MAX_GOROUTINES", "0")],
            "consumer.max_concurrency",
        ),
        (
            vec![
                ("DSG_LEASE__TTL_MS", "1000"),
                ("DSG_LEASE__RENEW_DEADLINE_MS", "2000"),
            ],
            "lease.ttl_ms",
        ),
        (
            vec![("DSG_LEASE__RETRY_PERIOD_MS", "9000")],
            "lease.renew_deadline_ms",
        ),
        (
            vec![
                ("DSG_PROCESSOR__MIN_MS", "10"),
                ("DSG_PROCESSOR__MAX_MS", "5"),
            ],
            "processor.min_ms",
        ),
        (vec![("DSG_GENRATOR__INTERVAL_MS", "5")], "genrator"),
        (vec![("MPORT", "http")], "MPORT"),
    ];
    for (vars, needle) in cases {
        let mut env: Vec<(String, String)> = vec![("REDIS_URL".into(), redis.clone())];
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let started = Instant::now();
        let out = run_cli(&env, &["run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{vars:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{vars:?}: message should name {needle}: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    for url in [
        "http://example.com:6379",
        "localhost:notaport",
        "redis://",
        "redis://:pw@:6379",
    ] {
        let out = run_cli(&[("REDIS_URL".into(), url.into())], &["run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{url}: {stderr}");
        assert!(stderr.contains("REDIS_URL"), "{url}: {stderr}");
        assert!(!stderr.contains(":pw@"), "{stderr}");
    }
    let out = run_cli(
        &[("REDIS_URL".into(), redis.clone())],
        &["run", "--port", "99999"],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !hit.load(Ordering::SeqCst),
        "bad configuration must fail before any Redis connection"
    );
}

#[test]
fn one_shot_commands_exit_69_when_redis_is_unreachable() {
    let port = dsg_testkit::local_redis::free_port();
    let env = vec![
        ("REDIS_URL".to_string(), format!("127.0.0.1:{port}")),
        (
            "DSG_REDIS__CONNECT_TIMEOUT_MS".to_string(),
            "500".to_string(),
        ),
    ];
    for args in [
        &["errors", "count"][..],
        &["status"][..],
        &["errors", "drain"][..],
    ] {
        let out = run_cli(&env, args);
        assert_eq!(
            out.status.code(),
            Some(69),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub async fn fill_errors(env: &TestEnv, n: u64) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    for i in 0..n {
        let mut e = header(
            Reason::Invalid,
            "test",
            "tester",
            time::OffsetDateTime::now_utc(),
        )
        .into_bytes();
        e.extend_from_slice(&numbered(i));
        entries.push(e);
    }
    // LPUSH in order: entry 0 is the oldest (rightmost).
    env.push(&env.errors, &entries).await;
    entries
}

/// `drain | head -N`: head prints N entries and goes away; drain removes
/// only entries its reader dealt with (at most the printed ones), puts the
/// rest back, and says so.
#[tokio::test]
async fn contract8_errors_drain_piped_into_head_loses_no_entry() {
    let env = TestEnv::new().await;
    fill_errors(&env, 50).await;
    let bin = exe();
    for take in [1u64, 3] {
        let before = error_numbers(&env).await;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' errors drain --json | head -{take}",
                bin.display()
            ))
            .env("REDIS_URL", env.redis.url())
            .env("REDIS_ERROR_QUEUE", &env.errors)
            .output()
            .expect("sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let printed: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .filter_map(|v| number_of(v["payload"].as_str().expect("payload").as_bytes()))
            .collect();
        assert_eq!(printed.len() as u64, take, "{stderr}");
        assert!(stderr.contains("the reader went away"), "{stderr}");
        // Nothing lost: every entry is still there or was printed.
        let after = error_numbers(&env).await;
        for n in &before {
            assert!(
                after.contains(n) || printed.contains(n),
                "entry {n} lost: {stderr}"
            );
        }
        assert!(before.len() - after.len() <= take as usize, "{stderr}");
    }
    // A full drain prints all the rest, oldest first, and empties the list.
    let left = env.llen(&env.errors).await as usize;
    let out = run_cli(&env.env(&[]), &["errors", "drain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, left);
    assert_eq!(env.llen(&env.errors).await, 0);
}

#[tokio::test]
async fn contract8_errors_drain_interrupted_keeps_unread_entries() {
    let env = TestEnv::new().await;
    fill_errors(&env, 30).await;
    // A reader that never reads: drain writes one entry and waits for it
    // to be taken; killing drain then must remove nothing.
    let mut child = std::process::Command::new(exe())
        .args(["errors", "drain"])
        .env("REDIS_URL", env.redis.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("drain");
    // Wait until drain has written its first entry into the pipe.
    let fd = std::os::fd::AsRawFd::as_raw_fd(child.stdout.as_ref().expect("stdout"));
    let wrote = eventually(Duration::from_secs(20), async || {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int into `unread`.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
        unread > 0
    })
    .await;
    assert!(wrote, "drain wrote nothing");
    // Give it time to (wrongly) go on, then interrupt it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM rather than SIGINT: a shell starting CI in the background
    // makes its children ignore SIGINT.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = eventually(Duration::from_secs(5), async || {
        child.try_wait().expect("wait").is_some()
    })
    .await;
    assert!(stopped, "drain did not stop on SIGTERM");
    let mut rest = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut rest);
    assert_eq!(rest.lines().count(), 1, "one entry was written, unread");
    assert_eq!(
        env.llen(&env.errors).await,
        30,
        "nothing removed that was not read"
    );
}

#[tokio::test]
async fn contract8_errors_list_count_and_the_original_alias() {
    let env = TestEnv::new().await;
    fill_errors(&env, 5).await;
    let e = env.env(&[]);
    let out = run_cli(&e, &["errors", "count"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    let out = run_cli(&e, &["errors", "count", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{\"count\":5}");
    let out = run_cli(&e, &["errors", "list", "--limit", "2", "--json"]);
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        number_of(listed[0]["payload"].as_str().expect("payload").as_bytes()),
        Some(0),
        "oldest first"
    );
    assert_eq!(listed[0]["reason"], "invalid");
    assert_eq!(env.llen(&env.errors).await, 5, "list removes nothing");
    let out = run_cli(&e, &["-getErrors"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    assert_eq!(env.llen(&env.errors).await, 0);
}

#[tokio::test]
async fn contract8_requeue_round_trips_arbitrary_binary_bytes() {
    let env = TestEnv::new().await;
    let payloads: Vec<Vec<u8>> = vec![
        (0..=255u8).collect(),
        b"line one\nline two\r\n\0".to_vec(),
        "DSGERR1 {\"looks\":\"like a header\"}\nbut is a message"
            .as_bytes()
            .to_vec(),
        "m:\"quoted\" e:\"Error code 3\"".as_bytes().to_vec(),
        Vec::new(),
    ];
    // Through the real path: the consumer finds them malformed and moves
    // them to the error list; requeue puts them back byte for byte.
    env.push(&env.queue, &payloads).await;
    let mut c = env
        .spawn("c", &[("MODE", "consumer"), ("DSG_PROCESSOR__MAX_MS", "0")])
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.llen(&env.errors).await == payloads.len() as u64
        })
        .await
    );
    c.stop(Duration::from_secs(5));
    let out = run_cli(&env.env(&[]), &["errors", "requeue", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        payloads.len()
    );
    assert_eq!(env.llen(&env.errors).await, 0);
    // Concurrent processing may reorder them; the bytes are what matter.
    let mut back = env.all(&env.queue).await;
    let mut expected = payloads.clone();
    back.sort();
    expected.sort();
    assert_eq!(back, expected, "the same bytes");

    // An entry written by the original go-redis-dsg gives back its message.
    env.push(
        &env.errors,
        &[b"m:\"0f8fad5b-d9cb-469f-a165-70867728950e 1\" e:\"Error code 6\"".to_vec()],
    )
    .await;
    let out = run_cli(&env.env(&[]), &["errors", "requeue"]);
    assert!(out.status.success());
    let newest = env.all(&env.queue).await.pop().expect("requeued");
    assert_eq!(newest, b"0f8fad5b-d9cb-469f-a165-70867728950e 1".to_vec());
}

#[tokio::test]
async fn status_command_shows_the_fleet() {
    let env = TestEnv::new().await;
    let _a = env.spawn("a", &[("GENERATOR_INTERVAL", "1000")]).await;
    let _b = env.spawn("b", &[("GENERATOR_INTERVAL", "1000")]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let out = run_cli(&env.env(&[]), &["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["holder"].is_string()
                && v["epoch"] == 1
                && v["consumers"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await
    );
    let out = run_cli(&env.env(&[]), &["status", "--check"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("generator:") && text.contains("epoch 1"),
        "{text}"
    );
}

/// The image ships only the product: its command line has the service and
/// the operator commands, none of the development tools (DESIGN.md,
/// "Command line").
#[test]
fn product_binary_has_only_the_service_and_operator_commands() {
    let out = run_cli(&[], &["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Continuation lines of a wrapped description are indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "run",
            "errors",
            "config",
            "acl-rule",
            "status",
            "return-inflight",
            "help"
        ],
        "{help}"
    );
    for tool in ["demo", "bench", "chaos"] {
        let out = run_cli(&[], &[tool]);
        assert_eq!(
            out.status.code(),
            Some(78),
            "`redis-dsg {tool}` must not exist"
        );
    }
}

/// `acl-rule` escapes what Redis' patterns treat specially, quotes for
/// redis-cli, and refuses names no rule can hold.
#[tokio::test]
async fn acl_rule_escapes_names_and_refuses_what_no_rule_can_hold() {
    let env = TestEnv::new().await;
    let run = |queue: &str, user: &str| {
        run_cli(
            &env.env(&[("REDIS_QUEUE", queue)]),
            &["acl-rule", "--user", user],
        )
    };
    for (queue, user, setting) in [
        ("my queue", "dsg", "redis.queue"),
        ("q", "ops dsg", "--user"),
        ("q", "evil on >hacked ~* +@all", "--user"),
    ] {
        let out = run(queue, user);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{queue:?} {user:?}: {stderr}");
        assert!(stderr.contains(setting), "{stderr}");
    }
    for (queue, user) in [("q*", "dsg"), ("a\"b[1]", "it's")] {
        let out = run(queue, user);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).replacen(" on ", " on >pw ", 1);
        // Fed to redis-cli as an operator would paste it.
        let mut cli = std::process::Command::new("redis-cli")
            .args(["-p", &env.redis.port().to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli");
        use std::io::Write;
        cli.stdin
            .take()
            .expect("stdin")
            .write_all(line.as_bytes())
            .expect("write");
        let reply = cli.wait_with_output().expect("redis-cli");
        assert_eq!(
            String::from_utf8_lossy(&reply.stdout).trim(),
            "OK",
            "{line}"
        );
        let user = connect(&format!(
            "redis://{}:pw@127.0.0.1:{}",
            user.replace('\'', "%27"),
            env.redis.port()
        ))
        .await;
        use fred::interfaces::ListInterface;
        let own: Result<i64, _> = user.client().llen(queue).await;
        assert!(own.is_ok(), "{queue}: {own:?}");
        let other: Result<i64, _> = user.client().llen("qother").await;
        assert!(other.is_err(), "{queue} must not grant qother");
    }
}
