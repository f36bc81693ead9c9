//! Production Redis: TLS with a private CA, ACL users, password files,
//! Sentinel and Cluster, each against real redis-server processes these
//! tests start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dsg_testkit::fleet;
use dsg_testkit::local_redis::{LocalRedis, free_port};
use dsg_testkit::local_sentinel::{SentinelTopology, TopologyAuth};
use dsg_testkit::replica::{Census, Replica};
use fred::prelude::*;

use redis_dsg::config::Config;

use crate::helpers::*;

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[tokio::test]
async fn tls_with_a_private_ca_is_verified_and_a_wrong_ca_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path();
    dsg_testkit::local_redis::make_test_certificates(dir).expect("certificates");
    let tls_port = free_port();
    let redis = LocalRedis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path(dir, "server.pem"),
        "--tls-key-file",
        &path(dir, "server.key"),
        "--tls-ca-cert-file",
        &path(dir, "ca.pem"),
        "--tls-auth-clients",
        "yes",
    ])
    .expect("redis with TLS");
    let _ = redis.port();
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let good: Vec<(String, String)> = [
        ("REDIS_URL", url.clone()),
        ("DSG_REDIS__TLS_CA_FILE", path(dir, "ca.pem")),
        ("DSG_REDIS__TLS_CERT_FILE", path(dir, "client.pem")),
        ("DSG_REDIS__TLS_KEY_FILE", path(dir, "client.key")),
        ("DSG_REDIS__TLS_SERVER_NAME", "redis.test".into()),
        ("DSG_REDIS__CONNECT_TIMEOUT_MS", "2000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = run_cli(&good, &["errors", "count"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let with = |name: &str, value: &str| {
        let mut env = good.clone();
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value.to_string()));
        env
    };
    // The wrong CA: the server's certificate is refused.
    let out = run_cli(
        &with("DSG_REDIS__TLS_CA_FILE", &path(dir, "other-ca.pem")),
        &["errors", "count"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // The name in the certificate must match.
    let mut wrong_name = good.clone();
    wrong_name.retain(|(k, _)| k != "DSG_REDIS__TLS_SERVER_NAME");
    let out = run_cli(&wrong_name, &["errors", "count"]);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And an override is checked, not trusted.
    let out = run_cli(
        &with("DSG_REDIS__TLS_SERVER_NAME", "other.test"),
        &["errors", "count"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    // The server requires a client certificate.
    let mut no_client = good.clone();
    no_client.retain(|(k, _)| k != "DSG_REDIS__TLS_CERT_FILE" && k != "DSG_REDIS__TLS_KEY_FILE");
    let out = run_cli(&no_client, &["errors", "count"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS settings with a plain URL are a configuration error.
    let out = run_cli(&with("REDIS_URL", &redis.url()), &["errors", "count"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The service itself, over TLS: a generator and a consumer at work.
    let logs = tempfile::tempdir().expect("tempdir");
    let mut env = good.clone();
    env.extend([
        ("GENERATOR_INTERVAL".to_string(), "20".to_string()),
        ("DSG_PROCESSOR__MAX_MS".to_string(), "1".to_string()),
    ]);
    processing_pair(&env, logs.path(), 10).await;
}

/// Runs an admin command on `redis` (`CONFIG SET`, `ACL SETUSER`, …).
pub async fn admin(url: &str, args: &[&str]) -> fred::types::Value {
    let c = connect(url).await;
    let v = command(&c, args).await;
    c.quit().await;
    v
}

pub async fn acl_setuser(admin_url: &str, user: &str, password: &str, rule: &str) {
    let mut args: Vec<String> = vec![
        "ACL".into(),
        "SETUSER".into(),
        user.into(),
        "reset".into(),
        format!(">{password}"),
    ];
    args.extend(rule.split_whitespace().map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    admin(admin_url, &refs).await;
}

#[tokio::test]
async fn least_privilege_acl_user_runs_the_service_and_its_commands() {
    let env = TestEnv::new().await;
    let keys = redis_dsg::redis::Keys::new(&env.queue, &env.errors);
    // The rule as `redis-dsg acl-rule` prints it for this configuration.
    let printed = run_cli(&env.env(&[]), &["acl-rule"]);
    assert!(printed.status.success());
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    let rule = printed
        .trim_end()
        .strip_prefix("ACL SETUSER dsg ")
        .unwrap_or_else(|| panic!("{printed}"));
    assert_eq!(rule, keys.acl_rule(None));
    acl_setuser(&env.redis.url(), "dsg", "dsg-secret", rule).await;
    let url = format!("redis://dsg:dsg-secret@127.0.0.1:{}", env.redis.port());
    let a = env
        .spawn(
            "a",
            &[
                ("REDIS_URL", &url),
                ("GENERATOR_INTERVAL", "20"),
                ("DSG_PROCESSOR__MAX_MS", "1"),
            ],
        )
        .await;
    let b = env
        .spawn(
            "b",
            &[
                ("REDIS_URL", &url),
                ("GENERATOR_INTERVAL", "20"),
                ("DSG_PROCESSOR__MAX_MS", "1"),
            ],
        )
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.counters().await.processed_ok + b.counters().await.processed_ok > 10
                && a.counters().await.invalid + b.counters().await.invalid > 0
        })
        .await,
        "{}\n{}",
        log(&a),
        log(&b)
    );
    assert_eq!(
        a.counters().await.redis_errors + b.counters().await.redis_errors,
        0,
        "{}\n{}",
        log(&a),
        log(&b)
    );
    let cli_env = env.env(&[("REDIS_URL", &url)]);
    for args in [
        &["status", "--check"][..],
        &["errors", "count"][..],
        &["errors", "list", "--limit", "1"][..],
        &["errors", "requeue", "--limit", "1"][..],
        &["errors", "drain", "--limit", "1"][..],
        &["return-inflight", "--dry-run"][..],
    ] {
        let out = run_cli(&cli_env, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Compatibility mode (issue 15) with its own rule, which may write
    // lock:gen: the generator takes it.
    drop((a, b));
    let rule = keys.acl_rule_with(None, true);
    acl_setuser(&env.redis.url(), "compat", "compat-secret", &rule).await;
    let compat_url = format!(
        "redis://compat:compat-secret@127.0.0.1:{}",
        env.redis.port()
    );
    let c = env
        .spawn(
            "c",
            &[
                ("REDIS_URL", &compat_url),
                ("DSG_COMPAT__ORIGINAL_LOCK", "true"),
            ],
        )
        .await;
    let admin_client = connect(&env.redis.url()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let lock: Option<String> = admin_client.client().get("lock:gen").await.unwrap_or(None);
            c.is_generator().await && lock.is_some_and(|v| v.starts_with("redis-dsg {q}:lease "))
        })
        .await,
        "{}",
        log(&c)
    );
    assert_eq!(c.counters().await.redis_errors, 0, "{}", log(&c));
    // One right less, and the error says which.
    let weak = keys.acl_rule(None).replace(" +llen", "");
    acl_setuser(&env.redis.url(), "weak", "weak-secret", &weak).await;
    let weak_url = format!("redis://weak:weak-secret@127.0.0.1:{}", env.redis.port());
    let out = run_cli(&env.env(&[("REDIS_URL", &weak_url)]), &["errors", "count"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("NOPERM") && stderr.to_lowercase().contains("llen"),
        "{stderr}"
    );
    assert!(!stderr.contains("weak-secret"), "{stderr}");
}

#[tokio::test]
async fn a_rotated_password_file_is_used_at_the_next_reconnect_without_a_restart() {
    let env = TestEnv::new().await;
    let admin_url = env.redis.url();
    admin(
        &admin_url,
        &["CONFIG", "SET", "requirepass", "first-secret"],
    )
    .await;
    let admin_url = format!("redis://:first-secret@127.0.0.1:{}", env.redis.port());
    let dir = tempfile::tempdir().expect("tempdir");
    let file: PathBuf = dir.path().join("password");
    std::fs::write(&file, "first-secret\n").expect("write");
    let c = env
        .spawn(
            "c",
            &[
                ("DSG_REDIS__PASSWORD_FILE", file.to_str().expect("utf-8")),
                ("GENERATOR_INTERVAL", "20"),
                ("DSG_PROCESSOR__MAX_MS", "1"),
            ],
        )
        .await;
    // Rotate: the server's password and the mounted file change; existing
    // connections are cut, as a real rotation eventually does.
    std::fs::write(&file, "second-secret\n").expect("write");
    admin(
        &admin_url,
        &["CONFIG", "SET", "requirepass", "second-secret"],
    )
    .await;
    let admin_url = format!("redis://:second-secret@127.0.0.1:{}", env.redis.port());
    admin(
        &admin_url,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    admin(&admin_url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    let before = c.counters().await.generated;
    assert!(
        eventually(Duration::from_secs(15), || async {
            c.counters().await.generated > before + 10 && c.is_ready().await
        })
        .await,
        "{}",
        log(&c)
    );
    let logs = std::fs::read_to_string(c.log()).unwrap_or_default();
    assert!(
        !logs.contains("first-secret") && !logs.contains("second-secret"),
        "{logs}"
    );
}

/// Three masters created with `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<LocalRedis>,
    /// With TLS: each node's TLS port (the plain ports stay open for the
    /// set-up; CLUSTER SLOTS names the TLS ports to TLS clients).
    tls_ports: Vec<u16>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with_tls(None).await
    }

    /// With `certs` (from `make_test_certificates`): TLS for clients and the
    /// cluster bus, with the `redis.test` server certificate.
    async fn start_with_tls(certs: Option<&Path>) -> Cluster {
        let mut tls_ports = Vec::new();
        let nodes: Vec<LocalRedis> = (0..3)
            .map(|_| {
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(String::from)
                .to_vec();
                if let Some(dir) = certs {
                    let port = free_port();
                    tls_ports.push(port);
                    args.extend([
                        "--tls-port".into(),
                        port.to_string(),
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-cert-file".into(),
                        path(dir, "server.pem"),
                        "--tls-key-file".into(),
                        path(dir, "server.key"),
                        "--tls-ca-cert-file".into(),
                        path(dir, "ca.pem"),
                        "--tls-auth-clients".into(),
                        "no".into(),
                    ]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                LocalRedis::start_with(&args).expect("cluster node")
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.url()));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let url = n.url();
            assert!(
                eventually(Duration::from_secs(20), || {
                    let url = url.clone();
                    async move {
                        let info = Command::new("redis-cli")
                            .args(["-u", &format!("redis://{url}"), "cluster", "info"])
                            .output();
                        info.is_ok_and(|o| {
                            String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")
                        })
                    }
                })
                .await
            );
        }
        Cluster { nodes, tls_ports }
    }

    /// `rediss-cluster://` URL naming every node's TLS port.
    fn tls_url(&self) -> String {
        let ports: Vec<String> = self
            .tls_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "rediss-cluster://{}?node={}",
            ports[0],
            ports[1..].join("&node=")
        )
    }

    fn url(&self) -> String {
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node={}", n.url()))
            .collect();
        format!(
            "redis-cluster://{}?{}",
            self.nodes[0].url(),
            others.join("&")
        )
    }
}

/// The settings of a topology test's fleet on `url`: queue `q`, output list
/// `{q}:out` (same slot), a generator every 10 ms, processing up to 2 ms,
/// short timings; `tune` changes what one test needs. Written to `logs`.
fn fleet_env(logs: &Path, url: &str, tune: impl FnOnce(&mut Config)) -> Vec<(String, String)> {
    let mut c = fleet::quick_config(url);
    c.redis.queue = "q".into();
    c.consumer.output_queue = Some("{q}:out".into());
    c.generator.interval_ms = 10;
    c.consumer.heartbeat_ttl_ms = 1_500;
    c.consumer.heartbeat_interval_ms = 300;
    c.processor.max_ms = 2;
    tune(&mut c);
    fleet::env_for(&c, logs, "fleet").expect("fleet configuration written")
}

#[tokio::test]
async fn redis_cluster_runs_generator_consumers_errors_cli_and_recovery() {
    let cluster = Cluster::start().await;
    let admin_url = cluster.url();
    let client = connect(&admin_url).await;
    assert!(client.is_clustered());
    // Everything runs as a user with only the documented rule, set on
    // every node (ACL users are per node); the cross-slot error list needs
    // its marker set too. Compatibility mode is on (issue 15): lock:gen
    // lives in another slot than the lease, so every script involved must
    // touch one key.
    let rule = redis_dsg::redis::Keys::new("q", "errors").acl_rule_with(Some("{q}:out"), true);
    assert!(rule.contains("~{errors}:moved"), "{rule}");
    for node in &cluster.nodes {
        acl_setuser(
            &format!("redis://{}", node.url()),
            "dsg",
            "dsg-secret",
            &rule,
        )
        .await;
    }
    let url = admin_url.replacen("redis-cluster://", "redis-cluster://dsg:dsg-secret@", 1);
    let logs = tempfile::tempdir().expect("tempdir");
    // The error list "errors" is in another slot than the queue "q": moves
    // to it take the two-step path; the output list shares the slot.
    let env = fleet_env(logs.path(), &url, |c| {
        c.redis.error_queue = "errors".into();
        c.consumer.heartbeat_ttl_ms = 1_000;
        c.consumer.heartbeat_interval_ms = 250;
        c.consumer.reaper_interval_ms = 300;
        c.processor.invalid_ratio = 0.3;
        c.compat.original_lock = true;
    });
    let start = |name: &str, extra: &[(&str, &str)]| {
        Replica::start(
            &exe(),
            free_port(),
            &fleet::with_extra(env.clone(), extra),
            &logs.path().join(format!("{name}.log")),
        )
        .expect("start")
    };
    let mut a = start("a", &[]);
    let mut b = start("b", &[]);
    assert!(a.wait_ready(Duration::from_secs(20)).await, "{}", log(&a));
    assert!(b.wait_ready(Duration::from_secs(20)).await, "{}", log(&b));
    let llen = |key: &'static str| {
        let c = client.clone();
        async move { c.client().llen::<u64, _>(key).await.unwrap_or(0) }
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            llen("{q}:out").await > 20 && llen("errors").await > 5
        })
        .await,
        "{}\n{}",
        log(&a),
        log(&b)
    );
    let entry = redis_dsg::service::error_entry::decode(
        &value_list(&client, "errors")
            .await
            .pop()
            .expect("an error entry"),
    );
    assert_eq!(entry.reason, "invalid");
    assert!(
        redis_dsg::service::message::parse(&entry.payload).is_ok(),
        "the original bytes are kept"
    );
    let lock: Option<String> = client.client().get("lock:gen").await.expect("get");
    assert!(
        lock.as_deref()
            .is_some_and(|v| v.starts_with("redis-dsg {q}:lease ")),
        "the generator holds lock:gen: {lock:?}"
    );

    // Recovery: a slow consumer holding messages is killed; the others get them.
    let mut slow = start(
        "slow",
        &[
            ("MODE", "consumer"),
            ("DSG_PROCESSOR__MIN_MS", "60000"),
            ("DSG_PROCESSOR__MAX_MS", "60000"),
        ],
    );
    assert!(
        slow.wait_ready(Duration::from_secs(20)).await,
        "{}",
        log(&slow)
    );
    let id = slow.status().await.expect("status").id;
    let inflight = format!("{{q}}:inflight:{id}");
    let held = || {
        let (c, k) = (client.clone(), inflight.clone());
        async move {
            c.client()
                .hlen::<u64, _>(k)
                .await
                .unwrap_or(0)
                .saturating_sub(1)
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || async { held().await >= 5 }).await,
        "{}",
        log(&slow)
    );
    slow.signal(libc::SIGKILL);
    let _ = slow.wait_timeout(Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(10), || async { held().await == 0 }).await,
        "the dead consumer's messages come back"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.counters().await.recovered + b.counters().await.recovered >= 5
        })
        .await
    );
    a.stop(Duration::from_secs(5));
    b.stop(Duration::from_secs(5));

    // The errors CLI on the cluster, the two-step requeue included; nothing
    // else writes now, so the lists must change by exactly what it did.
    for args in [
        &["errors", "count"][..],
        &["errors", "list", "--limit", "3"][..],
        &["status"][..],
    ] {
        let out = run_cli(&env, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // An entry of the original go-redis-dsg at the old end: the two-step
    // requeue gives back its Go-quoted message exactly (issue 15).
    let legacy = br#"m:"has \"quotes\" \xff\u00e9" e:"Error code 3""#;
    let _: i64 = client
        .client()
        .rpush("errors", legacy.to_vec())
        .await
        .expect("rpush");
    let errors = value_list(&client, "errors").await;
    assert!(errors.len() > 5, "{}", errors.len());
    assert_eq!(
        cli_ok(&env, &["errors", "requeue", "--limit", "2", "--json"])
            .lines()
            .count(),
        2
    );
    // The two oldest entries (the tail) left, their messages at the queue's head.
    assert_eq!(
        value_list(&client, "errors").await,
        errors[..errors.len() - 2].to_vec()
    );
    let head = value_list(&client, "q").await;
    for raw in &errors[errors.len() - 2..] {
        let payload = redis_dsg::service::error_entry::decode(raw).payload;
        assert!(
            head[..2].contains(&payload.to_vec()),
            "requeued message not at the head"
        );
    }
    assert!(
        head[..2].contains(&b"has \"quotes\" \xff\xc3\xa9".to_vec()),
        "the legacy entry's message, unquoted"
    );
    assert_eq!(
        cli_ok(&env, &["errors", "drain", "--limit", "3"])
            .lines()
            .count(),
        3
    );
    assert_eq!(
        value_list(&client, "errors").await,
        errors[..errors.len() - 5].to_vec()
    );
}

async fn value_list(client: &redis_dsg::redis::Redis, key: &str) -> Vec<Vec<u8>> {
    client.list(key).await.expect("lrange")
}

#[tokio::test]
async fn sentinel_failover_keeps_one_generator_and_loses_nothing_processed() {
    // Waits until the sentinels see each other and the replica.
    let mut topology = SentinelTopology::start(1000).expect("sentinel topology");
    let primary_port = topology.primary_port().expect("a primary");
    let replica_port = topology
        .nodes
        .iter()
        .map(LocalRedis::port)
        .find(|p| *p != primary_port)
        .expect("a replica");
    let url = topology.url();
    let logs = tempfile::tempdir().expect("tempdir");
    let env = fleet_env(logs.path(), &url, |c| {
        c.processor.invalid_ratio = 0.0;
        c.redis.command_timeout_ms = 1_000;
        c.redis.reconnect_max_delay_ms = 200;
    });
    let replicas = Replica::start_ready(&exe(), &env, logs.path(), "r", 3)
        .await
        .expect("replicas");
    let old = connect(&format!("127.0.0.1:{primary_port}")).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            old.client().llen::<u64, _>("{q}:out").await.unwrap_or(0) > 100
        })
        .await,
        "{}",
        log(&replicas[0])
    );
    // What was processed and replicated before the crash must survive it.
    let processed = value_list(&old, "{q}:out").await;
    dsg_testkit::local_sentinel::wait_replicated(&old, "{q}:probe")
        .await
        .expect("replicated");
    let mut epoch_before = 0;
    for r in &replicas {
        if let Some(e) = r.status().await.map(|s| s.lease.epoch) {
            epoch_before = epoch_before.max(e);
        }
    }
    assert!(epoch_before > 0, "no epoch seen before the failover");
    let killed = std::time::Instant::now();
    topology.node_mut(primary_port).expect("primary").kill();

    // Sentinel cuts the clients of the replica it promotes: connect anew,
    // and try again when the cut lands on the connection being made.
    let fresh = || async {
        dsg_testkit::local_redis::connect(
            &format!("127.0.0.1:{replica_port}"),
            Duration::from_secs(5),
        )
        .await
        .ok()
    };
    let recovered = eventually(Duration::from_secs(30), || async {
        let Some(new_primary) = fresh().await else {
            return false;
        };
        let role: Vec<fred::types::Value> = new_primary
            .client()
            .custom(
                fred::types::CustomCommand::new_static("ROLE", None, false),
                Vec::<String>::new(),
            )
            .await
            .unwrap_or_default();
        let is_master = role
            .first()
            .and_then(|v| v.as_str().map(|s| s == "master"))
            .unwrap_or(false);
        is_master
            && new_primary
                .client()
                .llen::<u64, _>("{q}:out")
                .await
                .unwrap_or(0)
                > processed.len() as u64 + 50
    })
    .await;
    let new_primary = connect(&format!("127.0.0.1:{replica_port}")).await;
    if !recovered {
        let role: Vec<fred::types::Value> = new_primary
            .client()
            .custom(
                fred::types::CustomCommand::new_static("ROLE", None, false),
                Vec::<String>::new(),
            )
            .await
            .unwrap_or_default();
        let out: u64 = new_primary.client().llen("{q}:out").await.unwrap_or(0);
        let mut statuses = String::new();
        for r in &replicas {
            statuses.push_str(&format!("{:?}\n", r.status().await));
        }
        panic!(
            "processing did not resume: role {role:?}, output {out} (was {}), sentinels say {}\n{statuses}",
            processed.len(),
            topology.sentinels[0].ask(&["SENTINEL", "get-master-addr-by-name", "m"])
        );
    }
    eprintln!(
        "Sentinel failover to recovery (new primary processing again): {:?}",
        killed.elapsed()
    );
    let after: std::collections::HashSet<Vec<u8>> = value_list(&new_primary, "{q}:out")
        .await
        .into_iter()
        .collect();
    let lost = processed.iter().filter(|m| !after.contains(*m)).count();
    assert_eq!(lost, 0, "processed messages lost in the failover");
    // Exactly one generator, everyone ready, and the epoch went on upwards.
    assert!(
        eventually(Duration::from_secs(10), async || {
            Census::of(&replicas).await.is_settled()
        })
        .await
    );
    for r in &replicas {
        let epoch = r.status().await.map(|s| s.lease.epoch);
        assert!(
            epoch.is_some_and(|e| e >= epoch_before),
            "epochs must never go backwards: {epoch:?} after {epoch_before}"
        );
    }
}

#[test]
fn readme_documents_the_exact_acl_rule() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let rule = redis_dsg::redis::Keys::new("a", "errors").acl_rule(None);
    assert!(
        readme.contains(&format!("ACL SETUSER dsg >password {rule}")),
        "README's ACL rule is out of date:\n{rule}"
    );
}

/// The awkward Sentinel case: the URL names the sentinels differently from
/// how they announce themselves (like a Kubernetes Service name), the
/// sentinels have their own password, and the data nodes take an ACL user
/// with only the documented rule whose password comes from a file. The
/// sentinels must get the sentinel password, never the file's, also after
/// a failover, when fred reconnects through the announced addresses.
#[tokio::test]
async fn sentinel_with_password_file_acl_user_and_sentinel_password_survives_a_failover() {
    let auth = TopologyAuth {
        data: "admin-secret".into(),
        sentinel: "sentinel-secret".into(),
    };
    let mut topology = SentinelTopology::start_with(1000, Some(auth)).expect("sentinel topology");
    let keys = redis_dsg::redis::Keys::new("s", "{s}:errors");
    let rule = keys.acl_rule(Some("{s}:out"));
    // ACL users are not replicated: both data nodes get one.
    for node in &topology.nodes {
        acl_setuser(
            &format!("redis://:admin-secret@127.0.0.1:{}", node.port()),
            "dsg",
            "file-secret",
            &rule,
        )
        .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "file-secret\n").expect("write");
    let url = format!(
        "{}&sentinelPassword=sentinel-secret",
        topology.url_via("127.0.0.2")
    );
    let env: Vec<(String, String)> = [
        ("REDIS_URL", url.as_str()),
        ("DSG_REDIS__USERNAME", "dsg"),
        (
            "DSG_REDIS__PASSWORD_FILE",
            &password_file.display().to_string(),
        ),
        ("REDIS_QUEUE", "s"),
        ("REDIS_ERROR_QUEUE", "{s}:errors"),
        ("DSG_CONSUMER__OUTPUT_QUEUE", "{s}:out"),
        ("GENERATOR_INTERVAL", "10"),
        ("DSG_PROCESSOR__MAX_MS", "1"),
        ("DSG_REDIS__RECONNECT_MAX_DELAY_MS", "250"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let replicas = Replica::start_ready(&exe(), &env, dir.path(), "r", 2)
        .await
        .expect("replicas");
    let out_len = |port: u16| async move {
        let c = connect(&format!("redis://:admin-secret@127.0.0.1:{port}")).await;
        let n: u64 = c.client().llen("{s}:out").await.unwrap_or(0);
        c.quit().await;
        n
    };
    let primary = topology.primary_port().expect("a primary");
    assert!(
        eventually(Duration::from_secs(10), || async {
            out_len(primary).await > 20
        })
        .await,
        "{}",
        log(&replicas[0])
    );
    topology.node_mut(primary).expect("primary").kill();
    let new = poll(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || topology.primary_port().filter(|p| *p != primary),
    )
    .await
    .expect("no promotion");
    let before = out_len(new).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            out_len(new).await > before + 20
        })
        .await,
        "processing did not resume on the new primary\n{}\n{}",
        log(&replicas[0]),
        log(&replicas[1])
    );
    for r in &replicas {
        let logs = std::fs::read_to_string(r.log()).unwrap_or_default();
        for secret in ["admin-secret", "sentinel-secret", "file-secret"] {
            assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
        }
    }
    // Sentinels never saw the data password: their logs would not say, but
    // a sentinel refusing it would have failed every reconnect above.
    let status = replicas[0].status().await.expect("status");
    let text = serde_json::to_string(&status).expect("status serializes");
    assert!(!text.contains("sentinel-secret"), "{text}");
}

/// The first step of a cross-slot move, retried after an unknown outcome,
/// pushes each delivery once; the second reports what a reaper took back.
#[tokio::test]
async fn two_step_moves_push_each_delivery_once_and_report_what_was_taken_back() {
    use redis_dsg::redis::{
        Keys,
        scripts::{FORGET, PUSH_ONCE},
    };
    let redis = LocalRedis::start().expect("redis");
    let client = connect(&redis.url()).await;
    let marker = Keys::moved_marker("errors");
    let args = |now: i64, entries: &[(&str, &str)]| {
        let mut a = vec![
            fred::types::Value::from(now),
            fred::types::Value::from(60_000i64),
            fred::types::Value::from(0i64),
        ];
        for (token, entry) in entries {
            a.push(fred::types::Value::from(*token));
            a.push(fred::types::Value::from(*entry));
        }
        a
    };
    let keys = vec!["errors".to_string(), marker.clone()];
    let (first, _): (i64, i64) = client
        .run(
            &PUSH_ONCE,
            keys.clone(),
            args(1_000, &[("c:1", "m1"), ("c:2", "m2")]),
        )
        .await
        .expect("push");
    let (retry, _): (i64, i64) = client
        .run(
            &PUSH_ONCE,
            keys.clone(),
            args(2_000, &[("c:1", "m1"), ("c:2", "m2")]),
        )
        .await
        .expect("retry");
    assert_eq!((first, retry), (2, 0));
    assert_eq!(value_list(&client, "errors").await.len(), 2);
    let ttl: i64 = client.client().pttl(marker.as_str()).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    // Markers older than the TTL are dropped by the next push, whatever
    // the traffic.
    let _: (i64, i64) = client
        .run(&PUSH_ONCE, keys.clone(), args(62_000, &[("c:3", "m3")]))
        .await
        .expect("later push");
    let markers: Vec<String> = client
        .client()
        .zrange(marker.as_str(), 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert_eq!(markers, vec!["c:3".to_string()]);

    let _: i64 = client
        .client()
        .hset("{q}:inflight:c", ("1", "m1"))
        .await
        .expect("hset");
    let flags: Vec<i64> = client
        .run(
            &FORGET,
            vec!["{q}:inflight:c".into()],
            vec!["1".into(), "2".into()],
        )
        .await
        .expect("forget");
    assert_eq!(flags, vec![1, 0]);
}

/// Cluster nodes found through CLUSTER SLOTS are dialled by IP address: the
/// server-name override must hold for them too, and a wrong one is refused.
#[tokio::test]
async fn redis_cluster_over_tls_verifies_every_node_against_the_server_name() {
    let certs = tempfile::tempdir().expect("tempdir");
    dsg_testkit::local_redis::make_test_certificates(certs.path()).expect("certificates");
    let cluster = Cluster::start_with_tls(Some(certs.path())).await;
    let tls_url = cluster.tls_url();
    let logs = tempfile::tempdir().expect("tempdir");
    let (env, _replicas) = processing_tls_fleet(certs.path(), logs.path(), &tls_url, |c| {
        c.redis.error_queue = "{q}:errors".into();
    })
    .await;
    // The one-shot commands reach the node owning each key, over TLS.
    let out = run_cli(&env, &["status", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_a_wrong_server_name_is_refused(&env);
}

/// Sentinel over TLS: sentinels name the primary by IP address, so the
/// server-name override must hold for it too, before and after a failover.
#[tokio::test]
async fn sentinel_over_tls_verifies_the_primary_named_by_ip_through_a_failover() {
    let certs = tempfile::tempdir().expect("tempdir");
    dsg_testkit::local_redis::make_test_certificates(certs.path()).expect("certificates");
    let mut topology =
        SentinelTopology::start_with_tls(1000, certs.path()).expect("sentinel topology");
    let url = topology.url();
    assert!(url.starts_with("rediss-sentinel://"), "{url}");
    let logs = tempfile::tempdir().expect("tempdir");
    let (env, replicas) = processing_tls_fleet(certs.path(), logs.path(), &url, |c| {
        c.redis.reconnect_max_delay_ms = 250;
    })
    .await;
    let primary = topology.primary_port().expect("a primary");
    topology.node_mut(primary).expect("primary").kill();
    let promoted = poll(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || topology.primary_port().filter(|p| *p != primary),
    )
    .await;
    assert!(promoted.is_some(), "no promotion");
    let before = processed_ok(&replicas).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            processed_ok(&replicas).await > before + 20
        })
        .await,
        "processing did not resume over TLS on the new primary\n{}",
        log(&replicas[0])
    );
    assert_a_wrong_server_name_is_refused(&env);
}

/// Runs a one-shot command that must succeed; returns its standard output.
fn cli_ok(env: &[(String, String)], args: &[&str]) -> String {
    let out = run_cli(env, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Messages processed successfully by all of `replicas`, by their counters.
async fn processed_ok(replicas: &[Replica]) -> u64 {
    let mut total = 0;
    for r in replicas {
        total += r.counters().await.processed_ok;
    }
    total
}

/// With `env` but another `tls_server_name`, a command cannot connect: the
/// certificates name `redis.test` (exit 69; through Sentinel, fred reports
/// only that no sentinel could be reached, not why).
fn assert_a_wrong_server_name_is_refused(env: &[(String, String)]) {
    let mut wrong = env.to_vec();
    wrong.retain(|(k, _)| k != "DSG_REDIS__TLS_SERVER_NAME");
    wrong.push(("DSG_REDIS__TLS_SERVER_NAME".into(), "other.test".into()));
    let out = run_cli(&wrong, &["errors", "count"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
}

/// Two replicas trusting the test CA and expecting `redis.test`, with
/// `extra` on top, once they have processed some messages.
async fn processing_tls_fleet(
    certs: &Path,
    logs: &Path,
    url: &str,
    tune: impl FnOnce(&mut Config),
) -> (Vec<(String, String)>, Vec<Replica>) {
    let env = fleet_env(logs, url, |c| {
        c.redis.tls_ca_file = Some(certs.join("ca.pem"));
        c.redis.tls_server_name = Some("redis.test".into());
        c.processor.invalid_ratio = 0.0;
        tune(c);
    });
    let replicas = processing_pair(&env, logs, 20).await;
    (env, replicas)
}

/// Two replicas on `env`, once together they have processed more than
/// `at_least` messages (within 15 s).
async fn processing_pair(env: &[(String, String)], logs: &Path, at_least: u64) -> Vec<Replica> {
    let replicas = Replica::start_ready(&exe(), env, logs, "r", 2)
        .await
        .expect("replicas");
    assert!(
        eventually(Duration::from_secs(15), async || {
            processed_ok(&replicas).await > at_least
        })
        .await,
        "{}",
        log(&replicas[0])
    );
    replicas
}
