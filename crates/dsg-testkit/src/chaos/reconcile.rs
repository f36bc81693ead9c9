//! Exactly once, checked: every message that went in (numbered by the
//! producer, or generated and made durable) is in the output or the error
//! list exactly once; then the verdict on the fleet's end state.

use std::collections::HashMap;

use redis_dsg::service::error_entry;

use super::number_of;
use super::summary::ChaosSummary;

/// What went in and what came out, read from Redis after the drain.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    /// Generated messages pushed durably, with how often each was pushed.
    pub(super) generated: HashMap<Vec<u8>, u32>,
    /// The numbers Redis recorded as produced.
    pub(super) produced_numbers: Vec<u64>,
    /// Payloads in the output list.
    pub(super) outputs: Vec<Vec<u8>>,
    /// Raw entries of the error list.
    pub(super) errors: Vec<Vec<u8>>,
}

/// Counts what came out against what went in: processed, errored, lost and
/// duplicated messages, with a violation for each kind of mismatch.
pub(super) fn exactly_once(evidence: &Evidence, summary: &mut ChaosSummary) {
    summary.processed = evidence.outputs.len() as u64;
    summary.errored = evidence.errors.len() as u64;
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    for p in evidence.outputs.iter().cloned().chain(
        evidence
            .errors
            .iter()
            .map(|e| error_entry::decode(e).payload),
    ) {
        *seen.entry(p).or_default() += 1;
    }
    let mut by_number: HashMap<u64, u32> = HashMap::new();
    for (p, n) in &seen {
        if let Some(num) = number_of(p) {
            *by_number.entry(num).or_default() += n;
        }
    }
    if evidence.produced_numbers.len() as u64 != summary.produced {
        summary.violations.push(format!(
            "the producer counted {} messages, Redis recorded {}",
            summary.produced,
            evidence.produced_numbers.len()
        ));
    }
    let mut lost_examples = Vec::new();
    for n in &evidence.produced_numbers {
        match by_number.get(n).copied().unwrap_or(0) {
            0 => {
                summary.lost += 1;
                lost_examples.push(format!("numbered message {n}"));
            }
            1 => {}
            k => summary.duplicates += u64::from(k - 1),
        }
    }
    for (m, pushed) in &evidence.generated {
        match seen.get(m).copied().unwrap_or(0) {
            0 => {
                summary.lost += u64::from(*pushed);
                lost_examples.push(format!(
                    "generated message {:?}",
                    String::from_utf8_lossy(m)
                ));
            }
            k if k > *pushed => summary.duplicates += u64::from(k - pushed),
            k if k < *pushed => summary.lost += u64::from(pushed - k),
            _ => {}
        }
    }
    if summary.lost > 0 {
        let examples: Vec<String> = lost_examples.into_iter().take(5).collect();
        summary.violations.push(format!(
            "{} messages lost, e.g. {}",
            summary.lost,
            examples.join("; ")
        ));
    }
    if summary.duplicates > 0 {
        summary
            .violations
            .push(format!("{} duplicate deliveries", summary.duplicates));
    }
}

/// The invariants of the end state: one generator, every replica ready,
/// and a soak that did something.
pub(super) fn verdict(summary: &mut ChaosSummary) {
    if summary.generators_at_end != 1 {
        summary.violations.push(format!(
            "{} generators at the end",
            summary.generators_at_end
        ));
    }
    if summary.stuck_replicas > 0 {
        summary.violations.push(format!(
            "{} replicas not ready at the end: {}",
            summary.stuck_replicas,
            summary.stuck_reasons.join("; ")
        ));
    }
    if summary.generated == 0 || summary.produced == 0 {
        summary
            .violations
            .push("nothing was generated or produced".into());
    }
}

/// Milliseconds from each fault that stopped the generator to the next
/// acquisition of the lease (`acquisitions` as the audit reports them:
/// Unix seconds and holder, in order).
pub(super) fn takeover_times_ms(
    generator_faults: &[f64],
    acquisitions: &[(f64, String)],
) -> Vec<f64> {
    generator_faults
        .iter()
        .filter_map(|&at| {
            acquisitions
                .iter()
                .find(|(t, _)| *t > at)
                .map(|(t, _)| (t - at) * 1000.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::numbered;

    fn error_entry_for(payload: &[u8]) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc();
        let mut bytes =
            error_entry::header(error_entry::Reason::Invalid, "test", "c", now).into_bytes();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_lost_and_a_duplicated_message_are_both_violations() {
        let (m0, m1, m2) = (numbered(0), numbered(1), numbered(2));
        let generated = b"0f8fad5b-d9cb-469f-a165-70867728950e 2026-01-01T00:00:00Z".to_vec();
        let evidence = Evidence {
            generated: HashMap::from([(generated.clone(), 1)]),
            produced_numbers: vec![0, 1, 2],
            outputs: vec![m0, m1.clone(), m1, generated],
            errors: vec![error_entry_for(&m2)],
        };
        let mut summary = ChaosSummary {
            produced: 3,
            ..Default::default()
        };
        exactly_once(&evidence, &mut summary);
        assert_eq!((summary.processed, summary.errored), (4, 1));
        assert_eq!((summary.lost, summary.duplicates), (0, 1));
        assert_eq!(summary.violations, vec!["1 duplicate deliveries"]);

        let evidence = Evidence {
            outputs: evidence.outputs[..2].to_vec(),
            ..evidence
        };
        let mut summary = ChaosSummary {
            produced: 3,
            ..Default::default()
        };
        exactly_once(&evidence, &mut summary);
        assert_eq!((summary.lost, summary.duplicates), (1, 0));
        assert_eq!(summary.violations.len(), 1, "{:?}", summary.violations);
    }

    #[test]
    fn a_takeover_is_timed_to_the_next_acquisition() {
        let acquisitions = vec![(10.0, "a".to_string()), (12.5, "b".to_string())];
        assert_eq!(
            takeover_times_ms(&[11.0, 13.0], &acquisitions),
            vec![1500.0]
        );
    }
}
