//! The short chaos soak CI runs (the long one is `redis-dsg chaos
//! --duration 900`, see the README).

use crate::helpers::*;

#[test]
fn chaos_soak_loses_nothing_duplicates_nothing_and_fences_every_write() {
    let seconds = std::env::var("DSG_CHAOS_SECONDS").unwrap_or_else(|_| "90".into());
    let out = run_cli(
        &[("RUST_LOG".into(), "error".into())],
        &["chaos", "--duration", &seconds, "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(out.status.success(), "{summary:#}\n{stderr}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicates"], 0, "{summary:#}");
    assert_eq!(summary["fencing_violations"], 0, "{summary:#}");
    assert_eq!(summary["generators_at_end"], 1, "{summary:#}");
    assert_eq!(summary["stuck_replicas"], 0, "{summary:#}");
    for kind in ["kill", "stop", "term", "redis_restart", "cut"] {
        assert!(
            summary["faults"][kind].as_u64().unwrap_or(0) >= 1,
            "no {kind} fault: {summary:#}"
        );
    }
    assert!(
        summary["produced"].as_u64().unwrap_or(0) > 1000,
        "{summary:#}"
    );
    assert!(
        summary["generated"].as_u64().unwrap_or(0) > 100,
        "{summary:#}"
    );
}
