//! Contract 10 for the whole program: for every command of the
//! least-privilege rule (`redis-dsg acl-rule`), a user with that one
//! command taken away runs the service (a consumer with an output list
//! over known messages, then a generator) and every one-shot command over
//! known error entries. Nothing may be lost or duplicated, and a one-shot
//! command that fails names the command it lacks. Prints the ablation
//! table (run with `--nocapture` to see it when it passes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis_dsg::redis::Keys;
use redis_dsg::service::error_entry::{Reason, decode, header};

use crate::helpers::*;

const MESSAGES: u64 = 300;
/// Numbers of the seeded error entries.
const ENTRIES: std::ops::Range<u64> = 100_000..100_005;
const OUTPUT: &str = "{q}:out";
/// Rows run at once (each has its own redis-server).
const WIDE: usize = 4;

/// How often each numbered message or entry is stored anywhere in Redis.
async fn census(env: &TestEnv) -> BTreeMap<u64, usize> {
    let mut found = BTreeMap::new();
    let mut count = |payload: &[u8]| {
        if let Some(n) = number_of(payload) {
            *found.entry(n).or_insert(0) += 1;
        }
    };
    for list in ["q", OUTPUT] {
        for m in bulk_strings(command(&env.client, &["LRANGE", list, "0", "-1"]).await) {
            count(&m);
        }
    }
    let claims = bulk_strings(command(&env.client, &["KEYS", "{errors}:draining:*"]).await);
    let mut entry_lists = vec![b"errors".to_vec()];
    entry_lists.extend(claims);
    for list in entry_lists {
        let list = String::from_utf8_lossy(&list).into_owned();
        for e in bulk_strings(command(&env.client, &["LRANGE", &list, "0", "-1"]).await) {
            count(&decode(&e).payload);
        }
    }
    for hash in bulk_strings(command(&env.client, &["KEYS", "{q}:inflight:*"]).await) {
        let hash = String::from_utf8_lossy(&hash).into_owned();
        let flat = bulk_strings(command(&env.client, &["HGETALL", &hash]).await);
        for pair in flat.chunks(2) {
            if pair.len() == 2
                && std::str::from_utf8(&pair[0]).is_ok_and(|f| f.parse::<u64>().is_ok())
            {
                count(&pair[1]);
            }
        }
    }
    found
}

/// Lost and duplicated among `expected`, given what was delivered for
/// good (printed by a drain).
fn account(found: &BTreeMap<u64, usize>, expected: &[u64], delivered: &[u64]) -> (usize, usize) {
    let mut lost = 0;
    let mut dup = 0;
    for n in expected {
        let stored = found.get(n).copied().unwrap_or(0);
        if stored == 0 && !delivered.contains(n) {
            lost += 1;
        }
        dup += stored.saturating_sub(1);
    }
    (lost, dup)
}

/// A log's warnings and errors, short.
fn complaints(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // Start-up notes about settings are not complaints.
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("redis_dsg::config"))
        .map(|l| l.chars().take(300).collect())
        .collect()
}

fn names(text: &str, cmd: &str) -> bool {
    let t = text.to_ascii_lowercase();
    cmd.split('|').all(|part| t.contains(part))
}

struct Row {
    removed: String,
    consumer: (usize, usize),
    service_says: String,
    generated: u64,
    exits: Vec<(&'static str, i32, String)>,
    entries: (usize, usize),
    requeue: (usize, usize),
    problems: Vec<String>,
}

async fn ablate(removed: Option<String>) -> Row {
    let env = TestEnv::new().await;
    let keys = Keys::new(&env.queue, &env.errors);
    let mut rule: Vec<String> = keys
        .acl_rule(Some(OUTPUT))
        .split(' ')
        .map(String::from)
        .collect();
    if let Some(cmd) = &removed {
        rule.retain(|t| *t != format!("+{cmd}"));
    }
    let mut setuser = vec!["ACL", "SETUSER", "dsg", "reset", ">pw"];
    setuser.extend(rule.iter().map(String::as_str));
    command(&env.client, &setuser).await;
    // Scripts must be sent with EVAL too, so that `-eval` is exercised.
    command(&env.client, &["SCRIPT", "FLUSH"]).await;
    let messages: Vec<Vec<u8>> = (0..MESSAGES).map(numbered).collect();
    env.push("q", &messages).await;
    let entries: Vec<Vec<u8>> = ENTRIES
        .map(|n| {
            let mut e = header(
                Reason::Invalid,
                "seeded",
                "tester",
                time::OffsetDateTime::now_utc(),
            )
            .into_bytes();
            e.extend(numbered(n));
            e
        })
        .collect();
    env.push("errors", &entries).await;
    let url = format!("redis://dsg:pw@127.0.0.1:{}", env.redis.port());
    let common = [
        ("REDIS_URL", url.as_str()),
        ("DSG_CONSUMER__OUTPUT_QUEUE", OUTPUT),
        ("DSG_PROCESSOR__MAX_MS", "5"),
        ("DSG_PROCESSOR__INVALID_RATIO", "0.2"),
        ("DSG_CONSUMER__FETCH_BATCH", "50"),
        ("DSG_SHUTDOWN__TIMEOUT_MS", "2000"),
    ];
    let with = |mode: &'static str| {
        let mut v: Vec<(&str, &str)> = common.to_vec();
        v.push(("MODE", mode));
        v
    };
    // The service: a consumer over the known messages, stopped with SIGTERM.
    let mut consumer = env.start("consumer", &with("consumer"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    consumer.stop(Duration::from_secs(6));
    let all: Vec<u64> = (0..MESSAGES).chain(ENTRIES).collect();
    let consumer_account = account(&census(&env).await, &all, &[]);
    let mut service_says = complaints(consumer.log());
    // Then a generator.
    let before = env.llen("q").await;
    let mut generator = env.start("generator", &with("generator"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    generator.stop(Duration::from_secs(6));
    let generated = env.llen("q").await.saturating_sub(before);
    service_says.extend(complaints(generator.log()));
    // The one-shot commands over the error entries.
    let cli_env = env.env(&[("REDIS_URL", url.as_str())]);
    let mut exits = Vec::new();
    let mut delivered = Vec::new();
    for (name, args) in [
        ("count", &["errors", "count"][..]),
        ("list", &["errors", "list"][..]),
        ("status", &["status"][..]),
        ("drain", &["errors", "drain", "--json", "--limit", "2"][..]),
    ] {
        let out = run_cli(&cli_env, args);
        if name == "drain" {
            delivered = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["payload"].as_str().and_then(|p| number_of(p.as_bytes())))
                .collect();
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        exits.push((name, out.status.code().unwrap_or(-1), stderr));
    }
    let entries_account = account(&census(&env).await, &all, &delivered);
    let out = run_cli(&cli_env, &["errors", "requeue", "--limit", "2"]);
    exits.push((
        "requeue",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ));
    let after = census(&env).await;
    let requeue_account = account(&after, &all, &delivered);
    let requeue_account = (
        requeue_account.0.saturating_sub(entries_account.0),
        requeue_account.1.saturating_sub(entries_account.1),
    );
    let mut problems = Vec::new();
    if requeue_account != (0, 0) {
        problems.push(format!(
            "errors requeue: {} lost, {} duplicated",
            requeue_account.0, requeue_account.1
        ));
    }
    if consumer_account != (0, 0) {
        problems.push(format!(
            "service: {} lost, {} duplicated",
            consumer_account.0, consumer_account.1
        ));
    }
    if entries_account != (0, 0) {
        problems.push(format!(
            "one-shot commands: {} lost, {} duplicated",
            entries_account.0, entries_account.1
        ));
    }
    for (name, code, stderr) in &exits {
        if let Some(cmd) = &removed
            && *code != 0
            && !names(stderr, cmd)
        {
            problems.push(format!(
                "{name} exits {code} without naming {cmd}: {stderr}"
            ));
        }
    }
    // The complaint that names the missing command, if any does.
    let named = service_says
        .iter()
        .find(|l| removed.as_deref().is_some_and(|c| names(l, c)))
        .or(service_says.first())
        .cloned()
        .unwrap_or_default();
    Row {
        removed: removed.map_or("(none)".into(), |c| format!("-{c}")),
        consumer: consumer_account,
        service_says: named,
        generated,
        exits,
        entries: entries_account,
        requeue: requeue_account,
        problems,
    }
}

/// See the module comment. Rows run [`WIDE`] at a time.
#[tokio::test]
async fn contract10_acl_ablation_of_the_service_and_every_command() {
    let rule = Keys::new("q", "errors").acl_rule(Some(OUTPUT));
    let mut removals: Vec<Option<String>> = vec![None];
    removals.extend(
        rule.split(' ')
            .filter_map(|t| t.strip_prefix('+'))
            .map(|c| Some(c.to_string())),
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(WIDE));
    let mut rows = tokio::task::JoinSet::new();
    for (i, removed) in removals.into_iter().enumerate() {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        rows.spawn(async move {
            let row = ablate(removed).await;
            drop(permit);
            (i, row)
        });
    }
    let mut done: Vec<(usize, Row)> = rows.join_all().await;
    done.sort_by_key(|(i, _)| *i);
    println!(
        "\nACL ablation: removed | service lost/dup | generated | exits count list status drain requeue | entries lost/dup | requeue lost/dup | first complaint"
    );
    let mut failures = Vec::new();
    for (_, r) in &done {
        let codes: Vec<String> = r.exits.iter().map(|(_, c, _)| c.to_string()).collect();
        let said = r
            .exits
            .iter()
            .find(|(_, c, _)| *c != 0)
            .map(|(n, _, e)| format!("{n}: {}", e.lines().last().unwrap_or("")))
            .unwrap_or_else(|| r.service_says.clone());
        println!(
            "{} | {}/{} | {} | {} | {}/{} | {}/{} | {}",
            r.removed,
            r.consumer.0,
            r.consumer.1,
            r.generated,
            codes.join(" "),
            r.entries.0,
            r.entries.1,
            r.requeue.0,
            r.requeue.1,
            said.chars().take(200).collect::<String>()
        );
        for p in &r.problems {
            failures.push(format!("{}: {p}", r.removed));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
