//! The faults of the soak: which kinds there are, the schedule (shuffled
//! rounds at random gaps, half the replica faults aimed at the generator),
//! and how each is done.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::seq::SliceRandom;

use crate::replica::generators;

use super::soak::Soak;
use super::{now_unix, say};

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL a replica, then start it again.
    Kill,
    /// SIGSTOP a replica past the lease TTL, then SIGCONT.
    Stop,
    /// SIGTERM a replica, then start it again.
    Term,
    /// SIGKILL redis-server, then start it again (AOF reload).
    RedisRestart,
    /// Drop every connection through the proxy.
    Cut,
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Term => "term",
            Fault::RedisRestart => "redis_restart",
            Fault::Cut => "cut",
        }
    }

    /// Whether it stops the replica it hits (and so, when that replica
    /// generates, forces a takeover).
    fn stops_a_replica(self) -> bool {
        matches!(self, Fault::Kill | Fault::Stop | Fault::Term)
    }
}

const FAULTS: [Fault; 5] = [
    Fault::Kill,
    Fault::Stop,
    Fault::Term,
    Fault::RedisRestart,
    Fault::Cut,
];

/// What the fault phase did.
#[derive(Debug, Default)]
pub(super) struct FaultLog {
    /// Faults injected, by kind.
    pub(super) counts: HashMap<String, u64>,
    /// When (Unix seconds) a fault stopped the generator: the takeovers
    /// after these are timed from the audit.
    pub(super) generator_faults: Vec<f64>,
}

impl Soak<'_> {
    /// Injects faults for the soak's duration, in shuffled rounds so every
    /// kind occurs.
    pub(super) async fn inject_faults(&mut self) -> Result<FaultLog, String> {
        say(&format!(
            "{} replicas ready; injecting faults for {} s",
            self.args.replicas, self.args.duration
        ));
        let mut log = FaultLog::default();
        let started = Instant::now();
        let mut round: Vec<Fault> = Vec::new();
        let gap_ms = self.args.fault_gap_ms / 2..=self.args.fault_gap_ms * 3 / 2;
        while started.elapsed() < Duration::from_secs(self.args.duration) {
            let gap = self.rng.random_range(gap_ms.clone());
            tokio::time::sleep(Duration::from_millis(gap)).await;
            self.late_acks.collect(&self.replicas).await;
            if round.is_empty() {
                round = FAULTS.to_vec();
                round.shuffle(&mut self.rng);
            }
            let Some(fault) = round.pop() else { continue };
            let generator = generators(&self.replicas).await.first().copied();
            let target = match generator {
                Some(g) if self.rng.random_bool(0.5) => g,
                _ => self.rng.random_range(0..self.replicas.len()),
            };
            let at = now_unix();
            self.inject(fault, target).await?;
            if generator == Some(target) && fault.stops_a_replica() {
                log.generator_faults.push(at);
            }
            *log.counts.entry(fault.as_str().to_string()).or_default() += 1;
        }
        Ok(log)
    }

    /// Does `fault`, to replica `target` where it hits a replica.
    async fn inject(&mut self, fault: Fault, target: usize) -> Result<(), String> {
        let replica = &mut self.replicas[target];
        match fault {
            Fault::Kill => {
                replica.signal(libc::SIGKILL);
                let _ = replica.wait_timeout(Duration::from_secs(5));
                replica.restart().map_err(|e| e.to_string())?;
            }
            Fault::Stop => {
                replica.signal(libc::SIGSTOP);
                let paused = Duration::from_millis(self.rng.random_range(1200..2500));
                tokio::time::sleep(paused).await;
                replica.signal(libc::SIGCONT);
            }
            Fault::Term => {
                replica.signal(libc::SIGTERM);
                if replica.wait_timeout(Duration::from_secs(8)).is_none() {
                    replica.signal(libc::SIGKILL);
                    let _ = replica.wait_timeout(Duration::from_secs(5));
                }
                replica.restart().map_err(|e| e.to_string())?;
            }
            Fault::RedisRestart => {
                self.redis.kill();
                let down = Duration::from_millis(self.rng.random_range(300..1500));
                tokio::time::sleep(down).await;
                self.redis.restart()?;
            }
            Fault::Cut => self.proxy.cut(),
        }
        Ok(())
    }
}
