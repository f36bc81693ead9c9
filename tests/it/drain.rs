//! `errors drain` claims what it prints (contract 8): concurrent drains
//! split the list, a reader that goes away makes it put back what the
//! reader may not have kept and exit 1 saying so, and claims of a drain
//! that was killed go back to the list.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};

use fred::prelude::*;

use crate::cli::fill_errors;
use crate::helpers::*;

fn drain_cmd(env: &TestEnv, shell_tail: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "'{}' errors drain --json {shell_tail}",
            exe().display()
        ))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_URL", env.redis.url())
        .env("REDIS_ERROR_QUEUE", &env.errors)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn numbers_in(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter_map(|v| number_of(v["payload"].as_str().expect("payload").as_bytes()))
        .collect()
}

async fn claims_left(env: &TestEnv) -> u64 {
    let keys = redis_dsg::redis::Keys::new(&env.queue, &env.errors);
    env.client
        .client()
        .zcard(keys.drains())
        .await
        .expect("zcard")
}

#[tokio::test]
async fn contract8_concurrent_drains_split_the_list() {
    const N: u64 = 20_000;
    let env = TestEnv::new().await;
    fill_errors(&env, N).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<std::path::PathBuf> = (0..4).map(|i| dir.path().join(format!("d{i}"))).collect();
    // Two straight into files, two through pipes.
    let children: Vec<std::process::Child> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let tail = if i < 2 {
                format!("> '{}'", f.display())
            } else {
                format!("| cat > '{}'", f.display())
            };
            drain_cmd(&env, &tail).spawn().expect("drain")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for f in &files {
        let numbers = numbers_in(&std::fs::read_to_string(f).expect("read"));
        total += numbers.len();
        seen.extend(numbers);
    }
    assert_eq!(total as u64, N, "entries printed twice or missing");
    assert_eq!(seen.len() as u64, N);
    assert_eq!(env.llen(&env.errors).await, 0);
    assert_eq!(claims_left(&env).await, 0);
}

#[tokio::test]
async fn contract8_drain_whose_reader_goes_away_puts_back_and_exits_1() {
    let env = TestEnv::new().await;
    fill_errors(&env, 3_000).await;
    // A reader that takes a few kilobytes and leaves.
    let mut child = Command::new(exe())
        .args(["errors", "drain", "--json"])
        .env_clear()
        .env("REDIS_URL", env.redis.url())
        .env("REDIS_ERROR_QUEUE", &env.errors)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drain");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut got = vec![0u8; 20_000];
    let mut n = 0;
    while n < got.len() {
        match stdout.read(&mut got[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the reader went away") && stderr.contains("put back"),
        "{stderr}"
    );
    // Whole lines the reader got; every other entry is still listed.
    let text = String::from_utf8_lossy(&got[..n]);
    let complete = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    let read: BTreeSet<u64> = numbers_in(complete).into_iter().collect();
    let left: BTreeSet<u64> = error_payloads(&env)
        .await
        .iter()
        .filter_map(|(_, p)| number_of(p))
        .collect();
    for i in 0..3_000 {
        assert!(
            left.contains(&i) || read.contains(&i),
            "entry {i} lost: {stderr}"
        );
    }
    assert_eq!(claims_left(&env).await, 0);
    // `| true`: nothing read, nothing removed.
    let out = drain_cmd(&env, "| true").output().expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the reader went away") && stderr.contains("drained 0 entries"),
        "{stderr}"
    );
    assert_eq!(env.llen(&env.errors).await, left.len() as u64);
}

#[tokio::test]
async fn contract8_claims_of_a_killed_drain_go_back() {
    let env = TestEnv::new().await;
    let entries = fill_errors(&env, 10).await;
    let keys = redis_dsg::redis::Keys::new(&env.queue, &env.errors);
    let c = env.client.client();
    // What a drain killed with entries 0–2 claimed leaves behind (the
    // claim list holds the oldest rightmost, as the list did), its
    // deadline passed; and a live drain's claim of entry 3, not yet due.
    for (member, deadline, n) in [("dead:0", 1i64, 3usize), ("live:0", i64::MAX / 2, 1)] {
        // The oldest `n` entries still listed.
        let claimed: Vec<Vec<u8>> = env.all(&env.errors).await[..n].to_vec();
        let _: () = c
            .ltrim(env.errors.as_str(), 0, -(n as i64) - 1)
            .await
            .expect("ltrim");
        for e in claimed {
            let _: i64 = c.lpush(keys.draining(member), e).await.expect("lpush");
        }
        let _: i64 = c
            .zadd(
                keys.drains(),
                None,
                None,
                false,
                false,
                (deadline as f64, member),
            )
            .await
            .expect("zadd");
    }
    assert_eq!(env.llen(&env.errors).await, 6);
    let out = run_cli(&env.env(&[]), &["errors", "drain", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("put 3 entries of an interrupted drain back"),
        "{stderr}"
    );
    let printed = numbers_in(&String::from_utf8_lossy(&out.stdout));
    // The dead claim's entries come first (they were the oldest), in order.
    assert_eq!(printed, vec![0, 1, 2, 4, 5, 6, 7, 8, 9], "{stderr}");
    // The live claim is left to its drain.
    assert_eq!(claims_left(&env).await, 1);
    assert_eq!(env.llen(&keys.draining("live:0")).await, 1);
    assert_eq!(entries.len(), 10);
}
