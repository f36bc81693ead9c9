//! The short chaos soak CI runs (the long one is `cargo dsg chaos
//! --duration 900`, see the README).

use dsg_testkit::chaos::{ChaosArgs, soak};

use crate::helpers::exe;

#[tokio::test(flavor = "multi_thread")]
async fn chaos_soak_loses_nothing_duplicates_nothing_and_fences_every_write() {
    let seconds = std::env::var("DSG_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let args = ChaosArgs {
        duration: seconds,
        ..ChaosArgs::default()
    };
    let summary = soak(&exe(), &args).await.expect("the soak runs");
    let report = serde_json::to_string_pretty(&summary).expect("the summary serializes");
    assert!(summary.violations.is_empty(), "{report}");
    assert_eq!(summary.lost, 0, "{report}");
    assert_eq!(summary.duplicates, 0, "{report}");
    assert_eq!(summary.fencing_violations, 0, "{report}");
    assert_eq!(summary.generators_at_end, 1, "{report}");
    assert_eq!(summary.stuck_replicas, 0, "{report}");
    for kind in ["kill", "stop", "term", "redis_restart", "cut"] {
        assert!(
            summary.faults.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} fault: {report}"
        );
    }
    assert!(summary.produced > 1000, "{report}");
    assert!(summary.generated > 100, "{report}");
}
