//! What a consumer does with a message. The built-in processor simulates
//! work as the original did: a random delay per message (drawn per message;
//! the original drew it once per worker) and a random share declared
//! invalid.

use std::time::Duration;

use crate::config::ProcessorConfig;
use crate::service::message::Message;

/// The verdict of a processor on a well-formed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Processed.
    Ok,
    /// Rejected, with a reason for the error entry.
    Invalid(String),
}

/// Simulated processing: sleeps a random time in `[min_ms, max_ms]`, then
/// declares the message invalid with probability `invalid_ratio`.
#[derive(Debug, Clone)]
pub(super) struct SimulatedProcessor {
    cfg: ProcessorConfig,
}

impl SimulatedProcessor {
    /// A processor with these settings.
    pub(super) fn new(cfg: ProcessorConfig) -> SimulatedProcessor {
        SimulatedProcessor { cfg }
    }

    /// Processes one message.
    pub(super) async fn process(&self, _message: &Message) -> Verdict {
        let ms = if self.cfg.max_ms == 0 {
            0
        } else {
            rand::random_range(self.cfg.min_ms..=self.cfg.max_ms)
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.cfg.invalid_ratio > 0.0 && rand::random_bool(self.cfg.invalid_ratio) {
            Verdict::Invalid("the simulated processor declared it invalid".into())
        } else {
            Verdict::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_share_follows_the_setting() {
        let p = SimulatedProcessor::new(ProcessorConfig {
            min_ms: 0,
            max_ms: 0,
            invalid_ratio: 0.05,
        });
        let m = crate::service::message::parse(
            b"0f8fad5b-d9cb-469f-a165-70867728950e 2026-01-01T00:00:00Z",
        )
        .expect("well-formed");
        let mut invalid = 0;
        for _ in 0..20_000 {
            if p.process(&m).await != Verdict::Ok {
                invalid += 1;
            }
        }
        // 5 % of 20,000 = 1,000; six standard deviations (≈ 185) of slack.
        assert!((815..=1185).contains(&invalid), "{invalid}");
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_drawn_per_message_within_range() {
        let p = SimulatedProcessor::new(ProcessorConfig {
            min_ms: 100,
            max_ms: 300,
            invalid_ratio: 0.0,
        });
        let m = crate::service::message::parse(
            b"0f8fad5b-d9cb-469f-a165-70867728950e 2026-01-01T00:00:00Z",
        )
        .expect("well-formed");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let start = tokio::time::Instant::now();
            p.process(&m).await;
            let ms = start.elapsed().as_millis();
            assert!((100..=301).contains(&ms), "{ms}");
            seen.insert(ms);
        }
        assert!(seen.len() > 10, "delays should vary per message: {seen:?}");
    }
}
