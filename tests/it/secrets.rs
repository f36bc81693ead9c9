//! Contract 11 through the real binary: for Redis addresses of many shapes
//! (with and without a scheme, odd characters in the password, Sentinel
//! passwords, refused, unreachable, wrong password), no part of a password
//! shows in `config`, `status`, `errors count`, the exit messages, the
//! service's log at `trace`, `/status` or `/metrics`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{CustomCommand, Value};

use crate::helpers::*;

/// Two runs of letters that no output has any other reason to hold, around
/// characters that break naive URL handling.
const PW: &str = "Kx7Qv9:@/?#%+ ü\"Zz4Wq2";
const CHUNKS: [&str; 2] = ["Kx7Qv9", "Zz4Wq2"];
const SENTINEL_PW: &str = "Jq8Yx3&=+Vw5Kz7";
const SENTINEL_CHUNKS: [&str; 2] = ["Jq8Yx3", "Vw5Kz7"];

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn assert_hidden(what: &str, text: &str) {
    for c in CHUNKS.iter().chain(&SENTINEL_CHUNKS) {
        assert!(!text.contains(c), "{what}: {c:?} shows in:\n{text}");
    }
}

#[tokio::test]
async fn contract11_no_password_in_any_output_of_the_binary() {
    let env = TestEnv::new().await;
    let port = env.redis.port();
    let cmd = CustomCommand::new("ACL".to_string(), None::<u16>, false);
    let args: Vec<Value> = [
        "SETUSER",
        "dsg",
        "on",
        &format!(">{PW}"),
        "~*",
        "&*",
        "+@all",
    ]
    .iter()
    .map(|s| Value::from(*s))
    .collect();
    let _: Value = env
        .client
        .client()
        .custom(cmd, args)
        .await
        .expect("ACL SETUSER");
    let closed = dsg_testkit::local_redis::free_port();
    let good = format!("redis://dsg:{}@127.0.0.1:{port}", enc(PW));
    // Addresses the service connects with.
    let live = [
        good.clone(),
        format!("{good}/0"),
        format!("REDIS://dsg:{}@127.0.0.1:{port}", enc(PW)),
    ];
    // Addresses that are refused, unreachable or rejected by the server.
    let mut other = vec![
        format!("dsg:{PW}@127.0.0.1:{port}"),
        format!("dsg:{}@127.0.0.1:{port}", enc(PW)),
        format!(":{}@127.0.0.1:{port}", enc(PW)),
        format!("redis://dsg:{PW}@127.0.0.1:{port}"),
        format!("redis://dsg:Kx7Qv9/Zz4Wq2@127.0.0.1:{port}"),
        format!("redis://dsg:Kx7Qv9?Zz4Wq2@127.0.0.1:{port}"),
        format!("redis://dsg:Kx7Qv9#Zz4Wq2@127.0.0.1:{port}"),
        format!("redis://Kx7Qv9Zz4Wq2@127.0.0.1:{port}"),
        format!("redis://dsg:{}@127.0.0.1:{closed}", enc(PW)),
        format!("redis://dsg:{}xx@127.0.0.1:{port}", enc(PW)),
        format!("rediss://dsg:{}@[::1]:{port}/2", enc(PW)),
        format!("redis://dsg:{}@127.0.0.1:{port}/99x", enc(PW)),
        format!(
            "redis-sentinel://dsg:{}@127.0.0.1:{closed}?sentinelServiceName=m&sentinelPassword={}&node=127.0.0.1:{closed}",
            enc(PW),
            enc(SENTINEL_PW)
        ),
        format!(
            "redis-sentinel://127.0.0.1:{closed}?sentinelServiceName=m&sentinelPassword={SENTINEL_PW}"
        ),
        format!(
            "redis-cluster://dsg:{}@127.0.0.1:{closed}?node=127.0.0.1:1",
            enc(PW)
        ),
        format!("http://dsg:{PW}@127.0.0.1:{port}"),
    ];
    other.extend(live.iter().cloned());
    for url in &other {
        for args in [&["config"][..], &["status"][..], &["errors", "count"][..]] {
            let out = run_cli(
                &env.env(&[("REDIS_URL", url), ("DSG_REDIS__CONNECT_TIMEOUT_MS", "500")]),
                args,
            );
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_hidden(&format!("{args:?} with {url:?}"), &text);
        }
    }
    // The password given on its own, and from a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("password");
    std::fs::write(&file, PW).expect("write");
    let plain = format!("redis://127.0.0.1:{port}");
    let file_path = file.display().to_string();
    let separate: [Vec<(&str, &str)>; 2] = [
        vec![
            ("REDIS_URL", &plain),
            ("DSG_REDIS__USERNAME", "dsg"),
            ("DSG_REDIS__PASSWORD", PW),
        ],
        vec![
            ("REDIS_URL", &plain),
            ("DSG_REDIS__USERNAME", "dsg"),
            ("DSG_REDIS__PASSWORD_FILE", &file_path),
        ],
    ];
    let mut services: Vec<Vec<(&str, &str)>> = live
        .iter()
        .map(|u| vec![("REDIS_URL", u.as_str())])
        .collect();
    services.extend(separate);
    for (i, vars) in services.iter().enumerate() {
        let mut vars = vars.clone();
        vars.push(("RUST_LOG", "trace"));
        let mut r = env.start(&format!("svc{i}"), &vars);
        let ok = r.wait_ready(Duration::from_secs(15)).await;
        assert!(ok, "{vars:?} not ready:\n{}", log(&r));
        let mut seen = String::new();
        for path in ["/status", "/metrics", "/readyz"] {
            let got = dsg_testkit::http_client::get(r.port(), path, Duration::from_secs(2)).await;
            seen.push_str(&got.map(|(_, body)| body).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.stop(Duration::from_secs(5));
        seen.push_str(&std::fs::read_to_string(r.log()).unwrap_or_default());
        assert!(seen.contains("redis-dsg starting"), "{seen}");
        assert_hidden(&format!("service with {vars:?}"), &seen);
    }
    // The service refuses a bad address with exit 78, quoting none of it.
    let out = run_cli(
        &env.env(&[("REDIS_URL", &format!("redis://u:Kx7Qv9/Zz4Wq2@h:{port}"))]),
        &["run"],
    );
    assert_eq!(out.status.code(), Some(78));
    assert_hidden(
        "run with a refused URL",
        &String::from_utf8_lossy(&out.stderr),
    );
}
