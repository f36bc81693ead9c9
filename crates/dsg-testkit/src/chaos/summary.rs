//! The outcome of a soak, as the CI test reads it and as a table.

use std::collections::HashMap;

use serde::Serialize;

/// The outcome of a soak.
#[derive(Debug, Default, Serialize)]
pub struct ChaosSummary {
    /// The seed of the fault schedule.
    pub seed: u64,
    /// Seconds of faults.
    pub duration_seconds: u64,
    /// Faults injected, by kind.
    pub faults: HashMap<String, u64>,
    /// Numbered messages the producer pushed.
    pub produced: u64,
    /// Messages the generators wrote (from MONITOR).
    pub generated: u64,
    /// Entries in the output list.
    pub processed: u64,
    /// Entries in the error list.
    pub errored: u64,
    /// Messages found more than once (numbered or generated).
    pub duplicates: u64,
    /// Messages found nowhere.
    pub lost: u64,
    /// Late acknowledgements reported by the replicas.
    pub late_acks: u64,
    /// Fenced writes Redis refused (from MONITOR).
    pub fenced_rejections: u64,
    /// Writes under a lost lease (from MONITOR); must be 0.
    pub fencing_violations: u64,
    /// Generators at the end; must be 1.
    pub generators_at_end: usize,
    /// Replicas not ready at the end; must be 0.
    pub stuck_replicas: usize,
    /// Why each of them was not ready (its `/readyz` answer).
    pub stuck_reasons: Vec<String>,
    /// Takeover after a fault that hit the generator, p99, ms.
    pub takeover_p99_ms: f64,
    /// Takeover after a fault that hit the generator, max, ms.
    pub takeover_max_ms: f64,
    /// Each violated invariant, in words.
    pub violations: Vec<String>,
}

impl ChaosSummary {
    /// The summary as a table for a terminal.
    pub fn render(&self) -> String {
        let s = self;
        let mut faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        faults.sort();
        let rows = [
            (
                "duration",
                format!("{} s (seed {})", s.duration_seconds, s.seed),
            ),
            ("faults injected", faults.join(", ")),
            ("messages produced (numbered)", s.produced.to_string()),
            ("messages generated", s.generated.to_string()),
            ("processed (output list)", s.processed.to_string()),
            ("errored (error list)", s.errored.to_string()),
            ("duplicates", s.duplicates.to_string()),
            ("lost", s.lost.to_string()),
            ("late acks", s.late_acks.to_string()),
            ("fenced writes rejected", s.fenced_rejections.to_string()),
            (
                "writes under a lost lease",
                s.fencing_violations.to_string(),
            ),
            ("generators at the end", s.generators_at_end.to_string()),
            (
                "replicas not ready at the end",
                s.stuck_replicas.to_string(),
            ),
            (
                "takeover p99 / max",
                format!("{:.0} ms / {:.0} ms", s.takeover_p99_ms, s.takeover_max_ms),
            ),
        ];
        let mut out = String::from("\nredis-dsg chaos soak\n");
        for (k, v) in rows {
            out.push_str(&format!("  {k:<32} {v}\n"));
        }
        if s.violations.is_empty() {
            out.push_str("  result                           every invariant held\n");
        } else {
            for v in &s.violations {
                out.push_str(&format!("  VIOLATION                        {v}\n"));
            }
        }
        out
    }
}
