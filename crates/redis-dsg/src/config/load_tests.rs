//! Loading: sources, priorities, every problem at once, capped echoes.

use super::*;
use crate::config::Mode;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load_from(&env(pairs), &Overrides::default())
}

fn problems(pairs: &[(&str, &str)]) -> String {
    match load_env(pairs) {
        Ok(_) => panic!("expected a configuration error for {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_match_the_original_program() {
    let c = load_env(&[]).expect("defaults are valid").config;
    assert_eq!(c.mode, Mode::Auto);
    assert_eq!(c.http.port, 8080);
    assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(c.redis.queue, "a");
    assert_eq!(c.redis.error_queue, "errors");
    assert_eq!(c.redis.pool_size, 100);
    assert_eq!(c.generator.interval_ms, 500);
    assert_eq!(c.lease.ping_interval_seconds, 10);
    assert_eq!(c.consumer.max_concurrency, 10_000);
    assert_eq!(c.processor.max_ms, 999);
    assert!((c.processor.invalid_ratio - 0.05).abs() < f64::EPSILON);
}

#[test]
fn legacy_names_are_read_exactly() {
    let c = load_env(&[
        ("MPORT", "9090"),
        ("MODE", "consumer"),
        ("GENERATOR_INTERVAL", "0"),
        ("REDIS_QUEUE", "123"),
        ("REDIS_PORT", "tcp://10.0.0.1:6379"),
        ("DSG_PORT", "tcp://10.0.0.1:8080"),
    ])
    .expect("valid")
    .config;
    assert_eq!(c.http.port, 9090);
    assert_eq!(c.mode, Mode::Consumer);
    assert_eq!(c.generator.interval_ms, 0);
    // A numeric-looking queue name stays a string.
    assert_eq!(c.redis.queue, "123");
}

#[test]
fn prefixed_env_beats_legacy_and_flags_beat_both() {
    let mut o = Overrides::default();
    let e = env(&[("MPORT", "9090"), ("DSG_HTTP__PORT", "9091")]);
    assert_eq!(load_from(&e, &o).expect("valid").config.http.port, 9091);
    o.set("http.port", "--port", Some(9092));
    let loaded = load_from(&e, &o).expect("valid");
    assert_eq!(loaded.config.http.port, 9092);
    assert_eq!(loaded.source_of("http.port"), "command-line flag --port");
}

#[test]
fn bad_config_names_setting_and_source() {
    let msg = problems(&[("GENERATOR_INTERVAL", "fast")]);
    assert!(msg.contains("generator.interval_ms"), "{msg}");
    assert!(
        msg.contains("environment variable GENERATOR_INTERVAL"),
        "{msg}"
    );

    let msg = problems(&[("MODE", "leader")]);
    assert!(msg.contains("mode") && msg.contains("MODE"), "{msg}");
    assert!(msg.contains("auto"), "{msg}");

    let msg = problems(&[("REDIS_POOL_SIZE", "-3")]);
    assert!(
        msg.contains("redis.pool_size") && msg.contains("REDIS_POOL_SIZE"),
        "{msg}"
    );

    let msg = problems(&[("DSG_CONSUMER__MAX_MESSAGE_BYTES", "-1")]);
    assert!(msg.contains("DSG_CONSUMER__MAX_MESSAGE_BYTES"), "{msg}");

    let msg = problems(&[("DSG_CONSUMER__FECH_BATCH", "5")]);
    assert!(msg.contains("fech_batch"), "{msg}");

    // An unknown section is reported once, under the variable that set it
    // (it said `foo (from environment variable foo)`).
    let msg = problems(&[("DSG_FOO__BAR", "1")]);
    assert!(
        msg.contains("foo (from environment variable DSG_FOO__BAR)"),
        "{msg}"
    );
    let msg = problems(&[("DSG_FOO__A", "1"), ("DSG_FOO__B", "2")]);
    assert!(msg.contains("DSG_FOO__A, DSG_FOO__B"), "{msg}");
}

#[test]
fn conflicting_lease_timings_are_rejected() {
    let msg = problems(&[
        ("DSG_LEASE__TTL_MS", "5000"),
        ("DSG_LEASE__RENEW_DEADLINE_MS", "6000"),
    ]);
    assert!(msg.contains("lease.ttl_ms"), "{msg}");
    assert!(msg.contains("DSG_LEASE__TTL_MS"), "{msg}");
    let msg = problems(&[("DSG_LEASE__RETRY_PERIOD_MS", "8000")]);
    assert!(msg.contains("lease.renew_deadline_ms"), "{msg}");
}

#[test]
fn contract5_inconsistent_auth_and_tls_settings_are_rejected() {
    let file = tempfile::NamedTempFile::new().expect("file");
    let path = file.path().display().to_string();
    // A password given twice.
    let msg = problems(&[
        ("DSG_REDIS__PASSWORD", "x"),
        ("DSG_REDIS__PASSWORD_FILE", &path),
    ]);
    assert!(msg.contains("redis.password_file"), "{msg}");
    // A file that cannot be read.
    let msg = problems(&[("DSG_REDIS__PASSWORD_FILE", "/nonexistent/password")]);
    assert!(
        msg.contains("redis.password_file") && msg.contains("cannot be read"),
        "{msg}"
    );
    // A client certificate without its key.
    let msg = problems(&[
        ("REDIS_URL", "rediss://h:1"),
        ("DSG_REDIS__TLS_CERT_FILE", &path),
    ]);
    assert!(msg.contains("redis.tls_cert_file"), "{msg}");
    // TLS settings with a plain URL.
    let msg = problems(&[
        ("REDIS_URL", "redis://h:1"),
        ("DSG_REDIS__TLS_SERVER_NAME", "redis.test"),
    ]);
    assert!(msg.contains("redis.url") && msg.contains("rediss"), "{msg}");
    // And a consistent set passes.
    let ok = load_env(&[
        ("REDIS_URL", "rediss://h:1"),
        ("DSG_REDIS__TLS_CA_FILE", &path),
        ("DSG_REDIS__PASSWORD_FILE", &path),
    ]);
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
}

#[test]
fn bad_redis_url_is_rejected() {
    for url in ["http://example.com", "localhost:notaport", "redis://", ""] {
        let msg = problems(&[("REDIS_URL", url)]);
        assert!(
            msg.contains("redis.url") && msg.contains("REDIS_URL"),
            "{url}: {msg}"
        );
    }
}

#[test]
fn render_redacts_secrets_and_names_sources() {
    let loaded = load_env(&[
        ("REDIS_URL", "redis://app:hunter2@redis:6380/2"),
        ("DSG_REDIS__PASSWORD", "s3cret"),
    ])
    .expect("valid");
    let text = loaded.render_toml().expect("renders");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(text.contains("redis://app:***@redis:6380/2"), "{text}");
    assert!(text.contains("# environment variable REDIS_URL"), "{text}");
    assert!(text.contains("interval_ms = 500  # default"), "{text}");
    // What is rendered parses back as TOML.
    toml::from_str::<toml::Table>(&text).expect("valid TOML");
}

#[test]
fn toml_file_is_read_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dsg.toml");
    std::fs::write(&path, "[generator]\ninterval_ms = \"x\"\n").expect("write");
    let msg = problems(&[("DSG_CONFIG", path.to_str().expect("utf-8"))]);
    assert!(
        msg.contains("generator.interval_ms") && msg.contains("dsg.toml"),
        "{msg}"
    );

    std::fs::write(&path, "mode = \"consumer\"\n[generator]\ninterval_ms = 5\n").expect("write");
    let loaded = load_env(&[("DSG_CONFIG", path.to_str().expect("utf-8"))]).expect("valid");
    assert_eq!(loaded.config.generator.interval_ms, 5);
    assert!(
        loaded
            .source_of("generator.interval_ms")
            .contains("dsg.toml")
    );
}
