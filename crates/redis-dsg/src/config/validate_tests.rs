//! Bounds, checked arithmetic and every problem at once (contract 5).

use super::*;
use crate::config::{Overrides, RedisUrl, load_from};

fn env_name(path: &str) -> String {
    format!("DSG_{}", path.to_ascii_uppercase().replace('.', "__"))
}

fn load_one(name: &str, value: &str) -> Result<String, String> {
    let env = vec![(name.to_string(), value.to_string())];
    match load_from(&env, &Overrides::default()) {
        Ok(loaded) => loaded.render_toml().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether loading `path = value` reports the bound of `path`.
fn out_of_bounds(path: &str, value: &str) -> bool {
    match load_one(&env_name(path), value) {
        Ok(_) => false,
        Err(msg) => msg
            .lines()
            .any(|l| l.contains(&format!("{path} (from")) && l.contains("must be between")),
    }
}

#[test]
fn contract5_every_number_setting_is_bounded() {
    for b in BOUNDS {
        assert!(b.min <= b.max && b.max <= i64::MAX as u64, "{}", b.path);
        for v in [b.min, b.max] {
            assert!(
                !out_of_bounds(b.path, &v.to_string()),
                "{} = {v} is in range",
                b.path
            );
        }
        for v in [b.max + 1, u64::MAX] {
            assert!(
                out_of_bounds(b.path, &v.to_string()),
                "{} = {v} must be refused",
                b.path
            );
        }
        if b.min > 0 {
            assert!(
                out_of_bounds(b.path, &(b.min - 1).to_string()),
                "{} below {}",
                b.path,
                b.min
            );
        }
    }
}

#[test]
fn contract5_rules_do_not_wrap() {
    // 2 × 2^63 wraps to 0 in u64: the heartbeat rule must still refuse it.
    let mut c = Config::default();
    c.consumer.heartbeat_interval_ms = 1 << 63;
    let found = validate(&c);
    assert!(
        found
            .iter()
            .any(|(p, r)| *p == "consumer.heartbeat_ttl_ms" && r.contains("twice")),
        "{found:?}"
    );
    c.consumer.heartbeat_interval_ms = 5_000;
    c.consumer.heartbeat_ttl_ms = 9_999;
    assert!(
        validate(&c)
            .iter()
            .any(|(p, _)| *p == "consumer.heartbeat_ttl_ms")
    );
    c.consumer.heartbeat_ttl_ms = 10_000;
    assert!(validate(&c).is_empty(), "{:?}", validate(&c));
    // A lease TTL Redis would refuse in PX never gets that far.
    let msg = load_one("DSG_LEASE__TTL_MS", "18446744073709551615").expect_err("refused");
    assert!(
        msg.contains("lease.ttl_ms") && msg.contains("600000"),
        "{msg}"
    );
}

#[test]
fn contract5_config_renders_every_valid_configuration() {
    // The largest value of every bound at once still renders as TOML.
    let mut env = Vec::new();
    for b in BOUNDS {
        env.push((env_name(b.path), b.max.to_string()));
    }
    // Cross-field rules want a sensible relation between the largest ones.
    env.push(("DSG_LEASE__RENEW_DEADLINE_MS".into(), "500000".into()));
    env.push(("DSG_LEASE__RETRY_PERIOD_MS".into(), "100000".into()));
    env.push(("DSG_PROCESSOR__MIN_MS".into(), "0".into()));
    let loaded = load_from(&env, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let text = loaded.render_toml().expect("renders");
    assert!(text.contains("ttl_ms = 600000"), "{text}");
}

#[test]
fn contract5_every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dsg.toml");
    std::fs::write(
        &path,
        "foo = 1\nbar = 2\n[consumer]\nfetch_batchx = 1\nheartbeat_ttlx = 2\nfetch_batch = \"many\"\n[lease]\nttlx = 3\nttl_ms = \"long\"\n[nosuch]\nx = 1\n",
    )
    .expect("write");
    let env = vec![
        ("DSG_CONFIG".to_string(), path.display().to_string()),
        ("GENERATOR_INTERVAL".to_string(), "fast".to_string()),
    ];
    let msg = load_from(&env, &Overrides::default())
        .expect_err("invalid")
        .to_string();
    for needle in [
        "foo (from",
        "bar (from",
        "consumer.fetch_batchx (from",
        "consumer.heartbeat_ttlx (from",
        "lease.ttlx (from",
        "nosuch (from",
        "consumer.fetch_batch (from",
        "lease.ttl_ms (from",
        "generator.interval_ms (from environment variable GENERATOR_INTERVAL",
    ] {
        assert!(msg.contains(needle), "{needle} missing:\n{msg}");
    }
    assert!(msg.contains("dsg.toml"), "{msg}");
}

#[test]
fn contract5_long_input_is_not_echoed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dsg.toml");
    let long = "A".repeat(3 * 1024 * 1024);
    for text in [
        format!("x = {long}\n"),
        format!("x = \"{long}\n"),
        format!("[consumer]\nfetch_batch = \"{long}\"\n"),
    ] {
        std::fs::write(&path, &text).expect("write");
        let env = vec![("DSG_CONFIG".to_string(), path.display().to_string())];
        let msg = load_from(&env, &Overrides::default())
            .expect_err("invalid")
            .to_string();
        assert!(msg.len() <= 5 * 1024, "{} bytes", msg.len());
        assert!(msg.lines().all(|l| l.chars().count() < 400), "{msg}");
    }
    let msg = load_one("DSG_CONSUMER__FETCH_BATCH", &"9".repeat(100_000)).expect_err("invalid");
    assert!(msg.len() < 1024, "{} bytes", msg.len());
}

#[test]
fn readme_names_every_bound() {
    let readme = include_str!("../../../../README.md");
    for b in BOUNDS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", b.path)))
            .unwrap_or_else(|| panic!("README has no settings row for {}", b.path));
        let range = format!("{}–{}", b.min, b.max);
        assert!(
            row.contains(&range),
            "README row of {} should say {range}: {row}",
            b.path
        );
    }
}

fn compat() -> Config {
    let mut c = Config::default();
    c.compat.original_lock = true;
    c
}

fn settings(c: &Config) -> Vec<&'static str> {
    validate(c).into_iter().map(|(path, _)| path).collect()
}

#[test]
fn compatibility_mode_is_off_by_default_and_valid_with_the_defaults() {
    assert!(!Config::default().compat.original_lock);
    assert!(validate(&compat()).is_empty(), "{:?}", validate(&compat()));
}

#[test]
fn compatibility_mode_needs_database_0_and_a_lease_within_the_lock_ttl() {
    let mut c = compat();
    c.redis.url = RedisUrl::new("redis://h:6379/3");
    assert_eq!(settings(&c), ["compat.original_lock"]);
    let (_, rule) = &validate(&c)[0];
    assert!(rule.contains("database 3"), "{rule}");
    c.compat.original_lock = false;
    assert!(validate(&c).is_empty(), "only compatibility mode cares");

    let mut c = compat();
    // GENERATOR_PING_INTERVAL=1: lock:gen lives 6 s, the lease 10 s.
    c.lease.ping_interval_seconds = 1;
    assert_eq!(settings(&c), ["lease.ttl_ms"]);
    let (_, rule) = &validate(&c)[0];
    assert!(rule.contains("10000 > 6000"), "{rule}");
    c.lease.ttl_ms = 6_000;
    c.lease.renew_deadline_ms = 4_000;
    assert!(validate(&c).is_empty());
}
