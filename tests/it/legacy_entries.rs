//! Issue 15, point 1 (contract 8): error entries written by the original
//! go-redis-dsg come back byte for byte through `errors list`, `drain`,
//! `--json` and `requeue`. The fixture holds 468 entries made by Go's own
//! `fmt` (`tests/fixtures/README.md`), each with the payload it must give
//! back.

use redis_dsg::service::error_entry::{base64_decode, unescape_payload};

use crate::helpers::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/legacy-error-entries.jsonl"
);

/// One fixture line: the entry as it sits in Redis, the message it must
/// give back, the error text.
struct Legacy {
    entry: Vec<u8>,
    payload: Vec<u8>,
    detail: String,
}

fn fixture() -> Vec<Legacy> {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture readable");
    let field = |v: &serde_json::Value, name: &str| -> String {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("fixture field {name}"))
            .to_string()
    };
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("fixture JSON");
            Legacy {
                entry: base64_decode(&field(&v, "entry_base64")).expect("entry base64"),
                payload: base64_decode(&field(&v, "payload_base64")).expect("payload base64"),
                detail: field(&v, "detail"),
            }
        })
        .collect()
}

/// Pushes the entries so that the first is the oldest (rightmost).
async fn fill(env: &TestEnv, all: &[Legacy]) {
    let entries: Vec<Vec<u8>> = all.iter().map(|l| l.entry.clone()).collect();
    env.push(&env.errors, &entries).await;
    assert_eq!(env.llen(&env.errors).await, all.len() as u64);
}

fn cli_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = run_cli(&env.env(&[]), args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the output is UTF-8")
}

/// Checks `--json` lines against the fixture, in order; returns how many
/// matched exactly.
fn check_json(what: &str, output: &str, all: &[Legacy]) -> usize {
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), all.len(), "{what}: one line per entry");
    let mut exact = 0;
    for (i, (line, want)) in lines.iter().zip(all).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let payload = match (v["payload"].as_str(), v["payload_base64"].as_str()) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64_decode(b64).expect("base64"),
            _ => panic!("{what} #{i}: payload or payload_base64: {line}"),
        };
        assert_eq!(v["reason"], "legacy", "{what} #{i}: {line}");
        assert_eq!(v["detail"], want.detail.as_str(), "{what} #{i}");
        assert_eq!(v["size_bytes"], want.payload.len(), "{what} #{i}");
        assert_eq!(payload, want.payload, "{what} #{i}: {line}");
        exact += 1;
    }
    exact
}

/// Checks text lines (`… payload="<escaped>"`) against the fixture.
fn check_text(what: &str, output: &str, all: &[Legacy]) -> usize {
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), all.len(), "{what}: one line per entry");
    let mut exact = 0;
    for (i, (line, want)) in lines.iter().zip(all).enumerate() {
        assert!(line.contains(" reason=legacy "), "{what} #{i}: {line}");
        let (_, escaped) = line
            .split_once(" payload=")
            .unwrap_or_else(|| panic!("{what} #{i}: {line}"));
        assert_eq!(
            unescape_payload(escaped).as_deref(),
            Some(want.payload.as_slice()),
            "{what} #{i}: {line}"
        );
        exact += 1;
    }
    exact
}

#[tokio::test]
async fn issue15_contract8_legacy_fixture_round_trips_through_list_drain_json_and_requeue() {
    let env = TestEnv::new().await;
    let all = fixture();
    assert_eq!(all.len(), 468, "the fixture");
    fill(&env, &all).await;

    let json = check_json(
        "list --json",
        &cli_ok(&env, &["errors", "list", "--json"]),
        &all,
    );
    let text = check_text("list", &cli_ok(&env, &["errors", "list"]), &all);
    assert_eq!(env.llen(&env.errors).await, 468, "list removes nothing");

    let drained_text = check_text("drain", &cli_ok(&env, &["errors", "drain"]), &all);
    assert_eq!(env.llen(&env.errors).await, 0);
    fill(&env, &all).await;
    let drained_json = check_json(
        "drain --json",
        &cli_ok(&env, &["errors", "drain", "--json"]),
        &all,
    );
    assert_eq!(env.llen(&env.errors).await, 0);

    fill(&env, &all).await;
    let printed = check_json(
        "requeue --json",
        &cli_ok(&env, &["errors", "requeue", "--json"]),
        &all,
    );
    assert_eq!(env.llen(&env.errors).await, 0);
    // What lands in the queue: each payload exactly, the oldest entry's
    // the oldest message (consumed first).
    let queue = env.all(&env.queue).await;
    assert_eq!(queue.len(), all.len());
    let requeued = queue
        .iter()
        .zip(&all)
        .filter(|(got, want)| **got == want.payload)
        .count();
    println!(
        "legacy fixture, entries exact of {}: list --json {json}, list {text}, drain {drained_text}, \
         drain --json {drained_json}, requeue --json printed {printed}, requeued into the queue {requeued}",
        all.len()
    );
    assert_eq!(requeued, all.len(), "requeue puts back the exact bytes");
}

/// Contract 10 for the requeue script: the push, the only write that can
/// fail, comes before the removal, so a failing push loses no entry.
#[tokio::test]
async fn contract10_requeue_that_cannot_push_removes_no_entry() {
    let env = TestEnv::new().await;
    let all = fixture();
    fill(&env, &all[..50]).await;
    let before = env.all(&env.errors).await;

    // The queue key holds a string: LPUSH fails with WRONGTYPE.
    crate::topologies::admin(&env.redis.url(), &["SET", &env.queue, "not a list"]).await;
    let out = run_cli(&env.env(&[]), &["errors", "requeue"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WRONGTYPE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.all(&env.errors).await, before, "nothing removed");
    crate::topologies::admin(&env.redis.url(), &["DEL", &env.queue]).await;

    // An ACL user without +lpush.
    let keys = redis_dsg::redis::Keys::new(&env.queue, &env.errors);
    let rule = keys.acl_rule(None).replace(" +lpush", "");
    crate::topologies::acl_setuser(&env.redis.url(), "nopush", "secret", &rule).await;
    let url = format!("redis://nopush:secret@127.0.0.1:{}", env.redis.port());
    let out = run_cli(&env.env(&[("REDIS_URL", &url)]), &["errors", "requeue"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Redis 7.0 words a refusal inside a script without "NOPERM".
    assert!(
        stderr.contains("NOPERM") || stderr.contains("can't run this command"),
        "{stderr}"
    );
    assert_eq!(env.all(&env.errors).await, before, "nothing removed");
    assert_eq!(env.llen(&env.queue).await, 0, "nothing pushed");
}

/// `list` and `requeue` read an entry the same way, also one whose
/// structured header is corrupt: both keep the whole entry as the message.
#[tokio::test]
async fn contract8_list_and_requeue_agree_on_an_entry_with_a_corrupt_header() {
    let env = TestEnv::new().await;
    let corrupt = b"DSGERR1 {\"reason\":\"invalid\"\nthe message".to_vec();
    env.push(&env.errors, std::slice::from_ref(&corrupt)).await;
    let listed = cli_ok(&env, &["errors", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(listed.trim()).expect("JSON");
    assert_eq!(v["reason"], "unknown");
    assert_eq!(v["payload"].as_str().map(str::as_bytes), Some(&corrupt[..]));
    cli_ok(&env, &["errors", "requeue"]);
    assert_eq!(env.all(&env.queue).await, vec![corrupt]);
}

/// The test-side stand-in of the original (`dsg_testkit::original`) writes
/// error entries byte for byte as Go's `fmt` does.
#[test]
fn the_original_stand_in_writes_entries_like_go() {
    let all = fixture();
    let same = all
        .iter()
        .filter(|l| dsg_testkit::original::go_error_entry(&l.payload, &l.detail) == l.entry)
        .count();
    assert_eq!(same, all.len(), "entries byte-identical to Go's");
}
