//! Issue 15, point 3 (contracts 3 and 10): `redis-dsg return-inflight`,
//! the rollback tool, returns every message held in any consumer's
//! in-flight hash to the queue exactly once: dead consumers, an
//! unregistered hash, live ones with `--force`; refusing without it;
//! nothing more when run again; nothing removed when the push fails.

use std::collections::BTreeMap;
use std::time::Duration;

use dsg_testkit::replica::Replica;
use fred::prelude::*;

use crate::helpers::*;

/// Each message's number → how often it is in the queue.
async fn queue_counts(env: &TestEnv) -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for m in env.all(&env.queue).await {
        *counts
            .entry(number_of(&m).expect("a numbered message"))
            .or_default() += 1;
    }
    counts
}

/// Messages held in every in-flight hash.
async fn held_total(env: &TestEnv, ids: &[&str]) -> u64 {
    let mut n = 0;
    for id in ids {
        n += env.held(&format!("{{q}}:inflight:{id}")).await;
    }
    n
}

fn run(env: &TestEnv, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = run_cli(&env.env(&[]), args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_default();
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn returned(report: &serde_json::Value) -> u64 {
    report["returned"].as_u64().expect("returned")
}

/// A consumer that takes up to 40 messages and holds them for a minute.
async fn holding_consumer(env: &TestEnv, name: &str) -> (Replica, String) {
    let r = env
        .spawn(
            name,
            &[
                ("MODE", "consumer"),
                ("CONSUMER_MAX_GOROUTINES", "40"),
                ("DSG_PROCESSOR__MIN_MS", "60000"),
                ("DSG_PROCESSOR__MAX_MS", "60000"),
                ("DSG_PROCESSOR__INVALID_RATIO", "0"),
                // No reaper in time: only the command returns what the
                // dead held.
                ("DSG_CONSUMER__REAPER_INTERVAL_MS", "600000"),
            ],
        )
        .await;
    let id = r.status().await.expect("status").id;
    (r, id)
}

#[tokio::test]
async fn issue15_contract3_return_inflight_returns_every_held_message_exactly_once() {
    let env = TestEnv::new().await;
    let total = 200u64;
    env.push(&env.queue, &(0..total).map(numbered).collect::<Vec<_>>())
        .await;
    let (mut r1, id1) = holding_consumer(&env, "r1").await;
    let (mut r2, id2) = holding_consumer(&env, "r2").await;
    let (mut r3, id3) = holding_consumer(&env, "r3").await;
    let ids = [id1.as_str(), id2.as_str(), id3.as_str(), "ghost"];
    assert!(
        eventually(Duration::from_secs(15), || async {
            held_total(&env, &ids).await == 120
        })
        .await,
        "{}",
        log(&r1)
    );
    // A hash nobody registered (an older version, a hand-made SREM): found
    // by its key, returned too.
    let c = env.client.client();
    let ghost: Vec<(String, Vec<u8>)> = (total..total + 5)
        .map(|n| (n.to_string(), numbered(n)))
        .chain([("~".to_string(), b"marker".to_vec())])
        .collect();
    let _: () = c.hset("{q}:inflight:ghost", ghost).await.expect("hset");
    r1.signal(libc::SIGKILL);
    r2.signal(libc::SIGKILL);
    let _ = (
        r1.wait_timeout(Duration::from_secs(5)),
        r2.wait_timeout(Duration::from_secs(5)),
    );
    // Their heartbeats expire (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.llen(&env.queue).await, total - 120);

    // r3 is alive: refused, nothing moved.
    let (code, _, stderr) = run(&env, &["return-inflight"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("alive") && stderr.contains(&id3),
        "{stderr}"
    );
    assert_eq!(held_total(&env, &ids).await, 125);
    let (code, dry, _) = run(&env, &["return-inflight", "--dry-run", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(dry["consumers"].as_array().map(Vec::len), Some(4), "{dry}");
    assert_eq!(returned(&dry), 0);
    assert_eq!(
        held_total(&env, &ids).await,
        125,
        "a dry run changes nothing"
    );

    // --force: the dead, the unregistered and the live one, once each.
    let (code, report, stderr) = run(&env, &["return-inflight", "--force", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let first = returned(&report);
    assert_eq!(held_total(&env, &ids).await, 0);
    let (code, report, stderr) = run(&env, &["return-inflight", "--force", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let second = returned(&report);
    let counts = queue_counts(&env).await;
    println!(
        "return-inflight: held 40 + 40 (dead) + 40 (alive) + 5 (unregistered); first run returned {first}, second {second}"
    );
    assert_eq!((first, second), (125, 0));
    // A run that returned nothing says how to wake an original stuck in
    // `BRPOP` on the empty queue (a rollback's routine kick).
    let kick = |r: &serde_json::Value| r["notes"].to_string().contains("LPUSH q kick");
    assert!(kick(&report), "{report}");
    let (_, dry, _) = run(&env, &["return-inflight", "--dry-run", "--json"]);
    assert!(!kick(&dry), "a dry run returns nothing by design: {dry}");
    assert_eq!(counts.len() as u64, total + 5, "every message is back");
    assert!(counts.values().all(|&n| n == 1), "each once");

    // The live consumer stops: what it was processing was taken from it, so
    // nothing of it comes back twice.
    let status = r3.stop(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", log(&r3));
    let counts = queue_counts(&env).await;
    assert_eq!(counts.len() as u64, total + 5);
    assert!(
        counts.values().all(|&n| n == 1),
        "each once after r3 stopped"
    );
    let (code, report, _) = run(&env, &["return-inflight", "--json"]);
    assert_eq!((code, returned(&report)), (Some(0), 0));

    // Without --force, once no consumer is alive: a dead consumer's 40
    // come back. First with a queue key of the wrong type: the push fails
    // before anything is removed (contract 10).
    let (mut r4, id4) = holding_consumer(&env, "r4").await;
    let held4 = format!("{{q}}:inflight:{id4}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.held(&held4).await == 40
        })
        .await
    );
    r4.signal(libc::SIGKILL);
    let _ = r4.wait_timeout(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _: () = c
        .rename(env.queue.as_str(), "q-saved")
        .await
        .expect("rename");
    let _: () = c
        .set(env.queue.as_str(), "not a list", None, None, false)
        .await
        .expect("set");
    let (code, _, stderr) = run(&env, &["return-inflight"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nothing removed"), "{stderr}");
    assert_eq!(env.held(&held4).await, 40, "the hash is intact");
    let _: () = c.del(env.queue.as_str()).await.expect("del");
    let _: () = c
        .rename("q-saved", env.queue.as_str())
        .await
        .expect("rename");
    let (code, report, stderr) = run(&env, &["return-inflight", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, again, _) = run(&env, &["return-inflight", "--json"]);
    println!(
        "return-inflight without --force: a dead consumer held 40; returned {}, then {}",
        returned(&report),
        returned(&again)
    );
    assert_eq!((returned(&report), returned(&again)), (40, 0));
    let counts = queue_counts(&env).await;
    assert_eq!(counts.len() as u64, total + 5);
    assert!(counts.values().all(|&n| n == 1), "each once");
}
