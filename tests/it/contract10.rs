//! Contract 10 at the script level: every Lua script, run against each of
//! its keys holding a value of the wrong type and by an ACL user without
//! each command it runs, loses and duplicates nothing, fails with an error
//! naming the key or the command, and once the fault is gone a retry ends
//! exactly where a clean run ends (no "done" marker without its data, no
//! half-removed batch).
//!
//! Every script in `scripts::all()` must have a case here (the first test
//! fails otherwise): add one when you add a script.

use std::collections::BTreeMap;

use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use redis_dsg::redis::scripts::{self, Script};
use redis_dsg::redis::{Keys, Redis};

use crate::helpers::*;

/// What a key holds when the script finds it as it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    List,
    Hash,
    Set,
    ZSet,
}

/// One way to run one script.
struct Case {
    /// The script, and which of its paths this case takes.
    script: &'static Script,
    path: &'static str,
    /// Its KEYS, each with the type it expects.
    keys: Vec<(String, Kind)>,
    args: Vec<String>,
    /// Commands that seed the state it runs on.
    setup: Vec<Vec<String>>,
    /// Keys whose wrong type the script may survive, and why (the command
    /// it runs there works on a value of any type).
    tolerant: Vec<(String, &'static str)>,
    /// Why the script is not held to the contract yet.
    pending: Option<&'static str>,
}

fn words(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every script, with keys, arguments and a state to run on. Messages and
/// entries carry tokens `m-0001`…, counted wherever they are.
fn cases() -> Vec<Case> {
    use Kind::*;
    let k = Keys::new("q", "errors");
    let (lease, epoch, queue, errors) =
        (k.lease(), k.epoch(), k.queue.clone(), k.error_queue.clone());
    let (inflight, heartbeat, consumers) = (k.inflight("c1"), k.heartbeat("c1"), k.consumers());
    let out = "{q}:out".to_string();
    let (drains, claim) = (k.drains(), k.draining("d1:0"));
    let marker = Keys::moved_marker(&errors);
    let original = redis_dsg::redis::keys::ORIGINAL_LOCK.to_string();
    let sampler = k.sampler();
    let (heartbeats, bell) = (k.heartbeats(), k.bell());
    let best_effort = "ringing the doorbell is best effort (pcall): a bell of the wrong type costs a wake-up, which the fallback poll makes up for";
    let held = vec![format!("HSET {inflight} ~ marker 1 m-0001 2 m-0002")];
    let case = |script: &'static Script,
                path: &'static str,
                keys: Vec<(&String, Kind)>,
                args: &str,
                setup: &[String]| Case {
        script,
        path,
        keys: keys.into_iter().map(|(k, t)| (k.clone(), t)).collect(),
        args: words(args),
        setup: setup.iter().map(|s| words(s)).collect(),
        tolerant: Vec::new(),
        pending: None,
    };
    let tolerate = |mut c: Case, key: &String, why: &'static str| {
        c.tolerant.push((key.clone(), why));
        c
    };
    let entry = |n: u32| format!("DSGERR1 {{\"reason\":\"invalid\"}}\nm-{n:04}");
    vec![
        case(
            &scripts::ACQUIRE_LEASE,
            "free",
            vec![(&lease, Str), (&epoch, Str)],
            "h1 10000 3",
            &[format!("SET {epoch} 5")],
        ),
        tolerate(
            case(
                &scripts::ACQUIRE_LEASE,
                "held",
                vec![(&lease, Str), (&epoch, Str)],
                "h1 10000 3",
                &[format!("SET {lease} m-0001"), format!("SET {epoch} 5")],
            ),
            &epoch,
            "this path does not touch the epoch",
        ),
        case(
            &scripts::RENEW_LEASE,
            "ours",
            vec![(&lease, Str)],
            "h1 10000",
            &[format!("SET {lease} h1")],
        ),
        case(
            &scripts::RELEASE_LEASE,
            "ours",
            vec![(&lease, Str)],
            &format!("h1 {}", k.release_channel()),
            &[format!("SET {lease} h1")],
        ),
        tolerate(
            case(
                &scripts::FENCED_PUSH,
                "holder",
                vec![(&lease, Str), (&queue, List), (&bell, ZSet)],
                "h1 1000 m-0002 m-0003",
                &[format!("SET {lease} h1"), format!("LPUSH {queue} m-0001")],
            ),
            &bell,
            best_effort,
        ),
        tolerate(
            case(
                &scripts::FENCED_PUSH,
                "held back at the backlog bound",
                vec![(&lease, Str), (&queue, List), (&bell, ZSet)],
                "h1 1 m-0002 m-0003",
                &[format!("SET {lease} h1"), format!("LPUSH {queue} m-0001")],
            ),
            &bell,
            "held back, it pushes nothing and rings no bell",
        ),
        tolerate(
            tolerate(
                case(
                    &scripts::FETCH,
                    "batch",
                    vec![
                        (&queue, List),
                        (&inflight, Hash),
                        (&heartbeat, Str),
                        (&consumers, Set),
                        (&heartbeats, ZSet),
                        (&bell, ZSet),
                    ],
                    "3 10000 1048576 c1 hb ~ marker 1 1048576 0",
                    &[format!("LPUSH {queue} m-0001 m-0002 m-0003 m-0004 m-0005")],
                ),
                &heartbeat,
                "SET replaces a value of any type; the heartbeat is this consumer's own key",
            ),
            &bell,
            best_effort,
        ),
        tolerate(
            tolerate(
            case(
                &scripts::FETCH,
                "within a byte budget",
                vec![
                    (&queue, List),
                    (&inflight, Hash),
                    (&heartbeat, Str),
                    (&consumers, Set),
                    (&heartbeats, ZSet),
                    (&bell, ZSet),
                ],
                // 6 bytes a message: a budget of 13 takes two of three.
                "3 10000 1048576 c1 hb ~ marker 1 13 0",
                &[format!("LPUSH {queue} m-0001 m-0002 m-0003 m-0004 m-0005")],
            ),
            &heartbeat,
            "SET replaces a value of any type; the heartbeat is this consumer's own key",
        ),
            &bell,
            "a batch cut short by the budget rings no bell",
        ),
        case(
            &scripts::ADOPT,
            "held",
            vec![(&inflight, Hash)],
            "1048576 1 2 3",
            &held,
        ),
        case(
            &scripts::ACK_OUTPUT,
            "held",
            vec![(&inflight, Hash), (&out, List)],
            "1 2 3",
            &held,
        ),
        case(
            &scripts::ACK_ERROR,
            "held",
            vec![(&inflight, Hash), (&errors, List)],
            "0 1 header1: 2 header2: 3 header3:",
            &held,
        ),
        case(
            &scripts::ACK_ERROR,
            "held, the list at its bound",
            vec![(&inflight, Hash), (&errors, List)],
            "2 1 header1: 2 header2: 3 header3:",
            &[held[0].clone(), format!("LPUSH {errors} m-0008 m-0009")],
        ),
        tolerate(
            case(
                &scripts::RETURN_INFLIGHT,
                "reaper",
                vec![
                    (&heartbeat, Str),
                    (&inflight, Hash),
                    (&queue, List),
                    (&consumers, Set),
                    (&heartbeats, ZSet),
                ],
                "c1 0",
                &[
                    held[0].clone(),
                    format!("SADD {consumers} c1 c2"),
                    format!("LPUSH {queue} m-0003"),
                ],
            ),
            &heartbeat,
            "EXISTS reads a key of any type as alive: nothing is returned",
        ),
        tolerate(
            case(
                &scripts::RETURN_INFLIGHT,
                "own",
                vec![
                    (&heartbeat, Str),
                    (&inflight, Hash),
                    (&queue, List),
                    (&consumers, Set),
                    (&heartbeats, ZSet),
                ],
                "c1 1",
                &[
                    held[0].clone(),
                    format!("SADD {consumers} c1 c2"),
                    format!("LPUSH {queue} m-0003"),
                    format!("SET {heartbeat} hb"),
                ],
            ),
            &heartbeat,
            "its removal is tidying (DEL takes any type; it expires anyway)",
        ),
        tolerate(
            tolerate(
                case(
                    &scripts::HEARTBEAT,
                    "alive",
                    vec![
                        (&heartbeat, Str),
                        (&consumers, Set),
                        (&heartbeats, ZSet),
                        (&sampler, Str),
                    ],
                    "c1 10000 hb",
                    &[format!("SADD {consumers} c0")],
                ),
                &heartbeat,
                "SET replaces a value of any type; the heartbeat is this consumer's own key",
            ),
            &sampler,
            "EXISTS reads a claim of any type as held: the sampler's own script then reports the type",
        ),
        tolerate(
            case(
                &scripts::RING_IF_QUEUED,
                "queued",
                vec![(&queue, List), (&bell, ZSet)],
                "",
                &[format!("LPUSH {queue} m-0001")],
            ),
            &bell,
            best_effort,
        ),
        case(
            &scripts::REAP_SCAN,
            "expired and legacy",
            vec![(&heartbeats, ZSet), (&consumers, Set)],
            "100 1",
            &[
                format!("ZADD {heartbeats} 1 c1"),
                format!("SADD {consumers} c1 c2"),
            ],
        ),
        case(
            &scripts::SAMPLE,
            "free",
            vec![
                (&sampler, Str),
                (&queue, List),
                (&consumers, Set),
                (&lease, Str),
            ],
            "h1 10000 8",
            &[
                format!("LPUSH {queue} m-0002 m-0001"),
                format!("SADD {consumers} c1"),
                format!("SET {lease} h2"),
            ],
        ),
        case(
            &scripts::RELEASE_CLAIM,
            "ours",
            vec![(&sampler, Str)],
            "h1",
            &[format!("SET {sampler} h1")],
        ),
        case(
            &scripts::CONFIRM_DRAINED,
            "printed",
            vec![(&errors, List)],
            &format!("{} {}", sha1_hex(b"m-0001"), sha1_hex(b"m-0002")),
            &[format!("LPUSH {errors} m-0001 m-0002 m-0003")],
        ),
        Case {
            // Entries carry a header and a newline: set up and passed whole.
            setup: vec![vec![
                "LPUSH".into(),
                errors.clone(),
                entry(1),
                entry(2),
                entry(3),
            ]],
            args: vec![
                "2".into(),
                sha1_hex(entry(1).as_bytes()),
                sha1_hex(entry(2).as_bytes()),
                "m-0001".into(),
                "m-0002".into(),
            ],
            ..case(
                &scripts::REQUEUE,
                "entries",
                vec![(&errors, List), (&queue, List)],
                "",
                &[],
            )
        },
        Case {
            // Values with spaces: passed whole.
            args: vec![
                format!("redis-dsg {lease} h1 6"),
                "10000".into(),
                format!("redis-dsg {lease} "),
            ],
            ..case(
                &scripts::ACQUIRE_ORIGINAL_LOCK,
                "free",
                vec![(&original, Str)],
                "",
                &[],
            )
        },
        Case {
            args: vec![
                format!("redis-dsg {lease} h1 6"),
                "10000".into(),
                format!("redis-dsg {lease} "),
            ],
            ..case(
                &scripts::ACQUIRE_ORIGINAL_LOCK,
                "held by an original",
                vec![(&original, Str)],
                "",
                &[format!("SET {original} m-0001 PX 60000")],
            )
        },
        case(
            &scripts::PUSH_ONCE,
            "new",
            vec![(&errors, List), (&marker, ZSet)],
            "100000 60000 0 c1:1 m-0001 c1:2 m-0002",
            &[
                format!("ZADD {marker} 500 c1:9"),
                format!("LPUSH {errors} m-0003"),
            ],
        ),
        case(
            &scripts::PUSH_ONCE,
            "new, the list at its bound",
            vec![(&errors, List), (&marker, ZSet)],
            "100000 60000 2 c1:1 m-0001 c1:2 m-0002",
            &[
                format!("ZADD {marker} 500 c1:9"),
                format!("LPUSH {errors} m-0003"),
            ],
        ),
        case(
            &scripts::FORGET,
            "held",
            vec![(&inflight, Hash)],
            "1 2 3",
            &held,
        ),
        case(
            &scripts::DRAIN_CLAIM,
            "entries",
            vec![(&errors, List), (&drains, ZSet), (&claim, List)],
            "3 d1:0 60000",
            &[
                format!("LPUSH {errors} m-0001 m-0002 m-0003 m-0004"),
                format!("ZADD {drains} 1 other:0"),
            ],
        ),
        case(
            &scripts::DRAIN_ACK,
            "printed",
            vec![(&drains, ZSet), (&claim, List)],
            "d1:0",
            &[
                format!("ZADD {drains} 99999999999999 d1:0"),
                format!("LPUSH {claim} m-0002 m-0001"),
            ],
        ),
        case(
            &scripts::DRAIN_RESTORE,
            "own",
            vec![(&errors, List), (&drains, ZSet), (&claim, List)],
            "d1:0 1",
            &[
                format!("LPUSH {errors} m-0001"),
                format!("ZADD {drains} 99999999999999 d1:0"),
                format!("LPUSH {claim} m-0003 m-0002"),
            ],
        ),
        case(
            &scripts::DRAIN_KEEP,
            "open",
            vec![(&drains, ZSet)],
            "60000 d1:0 d1:1",
            &[format!("ZADD {drains} 1 d1:0 2 other:0")],
        ),
        case(
            &scripts::DRAIN_RESTORE,
            "expired",
            vec![(&errors, List), (&drains, ZSet), (&claim, List)],
            "d1:0 0",
            &[
                format!("LPUSH {errors} m-0001"),
                format!("ZADD {drains} 1 d1:0"),
                format!("LPUSH {claim} m-0003 m-0002"),
            ],
        ),
    ]
    .into_iter()
    .collect()
}

/// Every key: its type and content (TTLs and sorted-set scores left out:
/// they hold times).
async fn snapshot(redis: &Redis) -> BTreeMap<String, (String, Vec<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let keys = bulk_strings(command(redis, &["KEYS", "*"]).await);
    for key in keys {
        let key = String::from_utf8_lossy(&key).into_owned();
        let kind = String::from_utf8_lossy(&bulk_strings(command(redis, &["TYPE", &key]).await)[0])
            .into_owned();
        let mut content = match kind.as_str() {
            "string" => bulk_strings(command(redis, &["GET", &key]).await),
            "list" => bulk_strings(command(redis, &["LRANGE", &key, "0", "-1"]).await),
            "hash" => bulk_strings(command(redis, &["HGETALL", &key]).await),
            "set" => bulk_strings(command(redis, &["SMEMBERS", &key]).await),
            "zset" => bulk_strings(command(redis, &["ZRANGE", &key, "0", "-1"]).await),
            other => panic!("{key}: unexpected type {other}"),
        };
        if matches!(kind.as_str(), "hash" | "set" | "zset") {
            if kind == "hash" {
                let mut pairs: Vec<Vec<u8>> = content.chunks(2).map(|p| p.join(&b'=')).collect();
                pairs.sort();
                content = pairs;
            } else {
                content.sort();
            }
        }
        out.insert(key, (kind, content));
    }
    out
}

/// How often each token `m-NNNN` occurs anywhere.
fn tokens(snap: &BTreeMap<String, (String, Vec<Vec<u8>>)>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, values) in snap.values() {
        for v in values {
            for (i, w) in v.windows(6).enumerate() {
                if w[0] == b'm'
                    && w[1] == b'-'
                    && w[2..].iter().all(u8::is_ascii_digit)
                    && (i == 0 || !v[i - 1].is_ascii_alphanumeric())
                {
                    *counts
                        .entry(String::from_utf8_lossy(w).into_owned())
                        .or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

/// Lost and duplicated tokens between two counts.
fn diff(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> (usize, usize) {
    let (mut lost, mut dup) = (0, 0);
    for (t, n) in before {
        let m = after.get(t).copied().unwrap_or(0);
        lost += n.saturating_sub(m);
        dup += m.saturating_sub(*n);
    }
    for (t, m) in after {
        if !before.contains_key(t) {
            dup += m;
        }
    }
    (lost, dup)
}

/// The fault of one row: a key of the wrong type, or a command denied.
#[derive(Debug, Clone)]
enum Fault {
    WrongType(String),
    Denied(String),
}

struct Row {
    case: String,
    fault: String,
    lost: usize,
    dup: usize,
    outcome: String,
    problem: Option<String>,
}

async fn run(redis: &Redis, c: &Case) -> Result<Value, String> {
    redis
        .run::<Value>(
            c.script,
            c.keys.iter().map(|(k, _)| k.clone()).collect(),
            c.args.iter().map(|a| Value::from(a.as_str())).collect(),
        )
        .await
        .map_err(|e| e.to_string())
}

async fn seed(admin: &Redis, c: &Case) {
    command(admin, &["FLUSHALL"]).await;
    for cmd in &c.setup {
        try_command(admin, cmd)
            .await
            .unwrap_or_else(|e| panic!("{}: {cmd:?}: {e}", c.script.name));
    }
}

/// One row: seed, inject the fault, run, check; then lift the fault, run
/// again and compare with a clean run.
async fn row(
    admin: &Redis,
    weak: Option<&Redis>,
    c: &Case,
    fault: &Fault,
    clean: &BTreeMap<String, (String, Vec<Vec<u8>>)>,
) -> Row {
    seed(admin, c).await;
    let mut saved = None;
    if let Fault::WrongType(key) = fault {
        saved = bulk_strings(command(admin, &["DUMP", key]).await).pop();
        command(admin, &["DEL", key]).await;
        let kind = c.keys.iter().find(|(k, _)| k == key).map(|(_, t)| *t);
        if kind == Some(Kind::Str) {
            command(admin, &["RPUSH", key, "oops"]).await;
        } else {
            command(admin, &["SET", key, "oops"]).await;
        }
    }
    let before = tokens(&snapshot(admin).await);
    let result = run(weak.unwrap_or(admin), c).await;
    let after = tokens(&snapshot(admin).await);
    // A failed run must have changed no message; a run that succeeded must
    // have done to them what a clean run does (moves keep counts; a drain's
    // confirmation removes what it printed).
    let (lost, dup) = match &result {
        Err(_) => diff(&before, &after),
        Ok(_) => diff(&tokens(clean), &after),
    };
    // A command the script runs only through `redis.pcall` (best-effort
    // tidying or a doorbell) may be denied: the script goes on without it.
    let best_effort = |cmd: &str| {
        c.script.lua.contains(&format!("redis.pcall('{cmd}'"))
            && !c.script.lua.contains(&format!("guard('{cmd}'"))
    };
    let tolerated = match fault {
        Fault::WrongType(key) => c.tolerant.iter().any(|(k, _)| k == key),
        Fault::Denied(cmd) => best_effort(cmd),
    };
    // guard() appends `[CMD key…]`: the fault's key or command must be there.
    let names = |e: &str| {
        let Some(bracket) = e.rfind(" [").map(|i| &e[i + 2..]) else {
            return false;
        };
        let words: Vec<&str> = bracket.split(']').next().unwrap_or("").split(' ').collect();
        match fault {
            Fault::WrongType(key) => words[1..].contains(&key.as_str()),
            Fault::Denied(cmd) => words[0] == cmd,
        }
    };
    let mut problem = match &result {
        Err(e) if !names(e) => Some(format!("the error does not name the {fault:?}: {e}")),
        Ok(_) if matches!(fault, Fault::WrongType(_)) && !tolerated => {
            Some("a key of the wrong type was not refused".to_string())
        }
        _ => None,
    };
    if lost + dup > 0 {
        problem = Some(format!("{lost} lost, {dup} duplicated"));
    }
    // Lift the fault and retry: the end state must be a clean run's.
    if problem.is_none() && !(tolerated && result.is_ok()) {
        if let Fault::WrongType(key) = fault {
            command(admin, &["DEL", key]).await;
            if let Some(dump) = &saved {
                let cmd = CustomCommand::new("RESTORE".to_string(), None::<u16>, false);
                let restore: Vec<Value> = vec![
                    key.as_str().into(),
                    0i64.into(),
                    Value::Bytes(dump.clone().into()),
                ];
                admin
                    .client()
                    .custom::<Value, _>(cmd, restore)
                    .await
                    .expect("RESTORE");
            }
        }
        match run(admin, c).await {
            Err(e) => problem = Some(format!("the retry without the fault failed: {e}")),
            Ok(_) => {
                let end = snapshot(admin).await;
                if &end != clean {
                    problem = Some(format!(
                        "the retry without the fault ends elsewhere than a clean run:\n  clean {clean:?}\n  retry {end:?}"
                    ));
                }
            }
        }
    }
    let outcome = match &result {
        Ok(_) if tolerated => "ok (tolerated)".to_string(),
        Ok(_) => "ok".to_string(),
        Err(e) => e
            .split(" script: ")
            .next()
            .unwrap_or(e)
            .trim_start_matches("Redis error: ")
            .to_string(),
    };
    Row {
        case: format!("{} ({})", c.script.name, c.path),
        fault: match fault {
            Fault::WrongType(k) => format!("wrong type {k}"),
            Fault::Denied(cmd) => format!("-{}", cmd.to_ascii_lowercase()),
        },
        lost,
        dup,
        outcome,
        problem,
    }
}

#[test]
fn contract10_every_script_has_a_case() {
    let covered: Vec<&str> = cases().iter().map(|c| c.script.name).collect();
    for s in scripts::all() {
        assert!(
            covered.contains(&s.name),
            "script {} has no case in tests/it/contract10.rs: add one",
            s.name
        );
    }
}

/// Every script × every key of the wrong type, and × every command it runs
/// denied by ACL: nothing lost or duplicated, the key or command named, and
/// a retry without the fault ends where a clean run ends. Prints the table.
#[tokio::test]
async fn contract10_every_script_survives_wrong_types_and_denied_commands() {
    let env = TestEnv::new().await;
    let admin = &env.client;
    let mut rows = Vec::new();
    for c in cases() {
        seed(admin, &c).await;
        run(admin, &c)
            .await
            .unwrap_or_else(|e| panic!("{} ({}) clean run: {e}", c.script.name, c.path));
        let clean = snapshot(admin).await;
        for (key, _) in &c.keys {
            rows.push((
                c.pending,
                row(admin, None, &c, &Fault::WrongType(key.clone()), &clean).await,
            ));
        }
        for cmd in c.script.commands() {
            let user = format!("no-{}", cmd.to_ascii_lowercase());
            command(
                admin,
                &[
                    "ACL",
                    "SETUSER",
                    &user,
                    "reset",
                    "on",
                    ">pw",
                    "~*",
                    "&*",
                    "+@all",
                    &format!("-{}", cmd.to_ascii_lowercase()),
                ],
            )
            .await;
            let weak = connect(&format!("redis://{user}:pw@127.0.0.1:{}", env.redis.port())).await;
            rows.push((
                c.pending,
                row(admin, Some(&weak), &c, &Fault::Denied(cmd.clone()), &clean).await,
            ));
            weak.quit().await;
        }
    }
    println!("\ncontract 10, script level: script (path) | fault | lost | duplicated | outcome");
    let mut failures = Vec::new();
    for (pending, r) in &rows {
        let mark = match (&r.problem, pending) {
            (None, _) => "",
            (Some(_), Some(_)) => "  PENDING",
            (Some(_), None) => "  FAIL",
        };
        println!(
            "{} | {} | {} | {} | {}{mark}",
            r.case, r.fault, r.lost, r.dup, r.outcome
        );
        if let (Some(p), None) = (&r.problem, pending) {
            failures.push(format!("{} / {}: {p}", r.case, r.fault));
        }
    }
    for c in cases()
        .iter()
        .filter_map(|c| c.pending.map(|p| (c.script.name, p)))
    {
        println!("pending: {} — {}", c.0, c.1);
    }
    assert!(
        failures.is_empty(),
        "{} rows fail contract 10:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The OOM column of contract 10 (contract 12): every script run on a
/// Redis past its `maxmemory` (`noeviction`) either does exactly what a
/// clean run does (every script that frees or moves memory: a full Redis
/// must never wedge the fleet) or, for the generator's push alone, is
/// refused whole with nothing changed. Prints the table.
#[tokio::test]
async fn contract12_every_script_at_maxmemory_runs_or_is_refused_with_nothing_changed() {
    let env = TestEnv::new().await;
    let admin = &env.client;
    let mut failures = Vec::new();
    println!("\ncontract 10, OOM column: script (path) | at maxmemory | lost | duplicated");
    for c in cases() {
        seed(admin, &c).await;
        run(admin, &c)
            .await
            .unwrap_or_else(|e| panic!("{} ({}) clean run: {e}", c.script.name, c.path));
        let clean = snapshot(admin).await;
        seed(admin, &c).await;
        let before = snapshot(admin).await;
        // One byte: whatever the seed holds is over it.
        command(admin, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
        command(admin, &["CONFIG", "SET", "maxmemory", "1"]).await;
        let result = run(admin, &c).await;
        command(admin, &["CONFIG", "SET", "maxmemory", "0"]).await;
        let after = snapshot(admin).await;
        let refused = c.script.memory == scripts::Memory::Refused;
        let (lost, dup, problem) = match (&result, refused) {
            (Ok(_), false) => {
                let (lost, dup) = diff(&tokens(&clean), &tokens(&after));
                let ends_clean = after == clean;
                (
                    lost,
                    dup,
                    (!ends_clean).then(|| format!("ends elsewhere than a clean run: {after:?}")),
                )
            }
            (Err(e), true) if e.contains("OOM") => {
                let (lost, dup) = diff(&tokens(&before), &tokens(&after));
                (
                    lost,
                    dup,
                    (after != before).then(|| "refused, yet something changed".to_string()),
                )
            }
            (Err(e), false) => (0, 0, Some(format!("failed at maxmemory: {e}"))),
            (outcome, true) => (
                0,
                0,
                Some(format!(
                    "the push must be refused at maxmemory: {outcome:?}"
                )),
            ),
        };
        let outcome = match &result {
            Ok(_) => "runs".to_string(),
            Err(e) if e.contains("OOM") => "refused (OOM)".to_string(),
            Err(e) => e.clone(),
        };
        println!(
            "{} ({}) | {outcome} | {lost} | {dup}",
            c.script.name, c.path
        );
        if let Some(p) = problem {
            failures.push(format!("{} ({}): {p}", c.script.name, c.path));
        } else if lost + dup > 0 {
            failures.push(format!(
                "{} ({}): {lost} lost, {dup} duplicated",
                c.script.name, c.path
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "at maxmemory:\n{}",
        failures.join("\n")
    );
}

/// Contract 1 through contract 10: a user whose key patterns allow the
/// lease but not the epoch counter cannot take the lease at all. Were the
/// lease written before the counter, it would be held under an epoch the
/// counter never recorded, and the next holder could be given the same
/// epoch (two holders, one fencing token).
#[tokio::test]
async fn contract1_a_refused_epoch_write_leaves_no_lease_held() {
    let env = TestEnv::new().await;
    let k = Keys::new("q", "errors");
    command(&env.client, &["SET", &k.epoch(), "5"]).await;
    command(
        &env.client,
        &[
            "ACL",
            "SETUSER",
            "lease-only",
            "reset",
            "on",
            ">pw",
            &format!("~{}", k.lease()),
            &format!("%R~{}", k.epoch()),
            "+@all",
        ],
    )
    .await;
    let weak = connect(&format!(
        "redis://lease-only:pw@127.0.0.1:{}",
        env.redis.port()
    ))
    .await;
    let refused = weak
        .run::<Value>(
            &scripts::ACQUIRE_LEASE,
            vec![k.lease(), k.epoch()],
            vec!["h1".into(), "10000".into(), "0".into()],
        )
        .await;
    // Redis 7 refuses the call before the script runs (a declared key the
    // user may only read); the script's order keeps it safe where the
    // refusal would come from its own second write.
    assert!(refused.is_err(), "the attempt must fail: {refused:?}");
    let lease: Option<String> = env.client.client().get(k.lease()).await.expect("GET");
    assert_eq!(lease, None, "no lease is held under an unrecorded epoch");
    let epoch: String = env.client.client().get(k.epoch()).await.expect("GET");
    assert_eq!(epoch, "5");
}
