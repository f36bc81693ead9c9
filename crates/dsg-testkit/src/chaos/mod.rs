//! The chaos soak (`cargo dsg chaos`, and the CI test): real faults, and a check that nothing is lost.
//!
//! It runs a `redis-server` with `appendonly yes` and `appendfsync always`,
//! N replicas in `auto` mode with an output list, connected through a TCP
//! proxy, and an external producer pushing numbered messages at a steady
//! rate (each number exactly once, with an idempotent script) beside the
//! built-in generator. For the given duration it injects faults at random
//! times, in shuffled rounds so every kind occurs: SIGKILL of a replica
//! (then a restart), SIGSTOP longer than the lease TTL (then SIGCONT),
//! SIGTERM (then a restart), a Redis crash and restart, and a cut of every
//! connection through the proxy. Half the replica faults hit the generator.
//!
//! Then it stops the faults and checks: exactly one generator and every
//! replica ready; then it stops generation, drains with consumers only, and
//! checks every numbered message and every generated message (known from
//! Redis' own `MONITOR` stream, see [`crate::fencing_audit`]) is in the
//! output or error list exactly once, and that no generator wrote after it
//! lost its lease. It prints a summary and exits 1 on any violation.
//!
//! The phases, in the order [`soak`] runs them, and where they live:
//! set up and settle, drain, collect the evidence, clean up (`soak.rs`);
//! the producer (`producer.rs`); the faults (`faults.rs`); what the
//! append-only file says was pushed (`aof.rs`); exactly once and the
//! verdict (`reconcile.rs`); the summary and its table (`summary.rs`).

mod aof;
mod faults;
mod producer;
mod reconcile;
mod soak;
mod summary;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

pub use faults::Fault;
pub use producer::{number_of, numbered};
pub use summary::ChaosSummary;

use producer::Producer;
use soak::Soak;

/// Flags of `chaos` (the defaults are the long soak's).
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seconds of faults.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Replicas in `auto` mode.
    #[arg(long, default_value_t = 5)]
    pub replicas: usize,
    /// Numbered messages per second from the external producer.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Mean pause between faults, milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub fault_gap_ms: u64,
    /// Seed of the fault schedule (random when omitted).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Default for ChaosArgs {
    fn default() -> ChaosArgs {
        ChaosArgs {
            duration: 120,
            replicas: 5,
            rate: 200,
            fault_gap_ms: 1500,
            seed: None,
            json: false,
        }
    }
}

/// Runs the soak with the redis-dsg binary `exe` and prints its summary;
/// returns the exit code (0 when every invariant held, 1 otherwise).
pub async fn run(exe: &Path, args: &ChaosArgs) -> u8 {
    match soak(exe, args).await {
        Ok(summary) => {
            if args.json {
                // A struct of numbers, strings and maps always serializes.
                let json = serde_json::to_string_pretty(&summary).expect("the summary serializes");
                println!("{json}");
            } else {
                print!("{}", summary.render());
            }
            u8::from(!summary.violations.is_empty())
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            1
        }
    }
}

/// Runs the soak with the redis-dsg binary `exe` and returns its summary
/// (an `Err` only when it could not run at all).
pub async fn soak(exe: &Path, args: &ChaosArgs) -> Result<ChaosSummary, String> {
    let mut soak = Soak::set_up(exe, args).await?;
    let producer = Producer::start(
        soak.client.clone(),
        &soak.keys.queue,
        soak::PRODUCED_SET,
        args.rate,
    );
    let faults = soak.inject_faults().await?;
    let mut summary = ChaosSummary {
        seed: soak.seed,
        duration_seconds: args.duration,
        faults: faults.counts.clone(),
        ..Default::default()
    };
    soak.settle(&mut summary).await?;
    summary.produced = producer.stop().await;
    soak.drain(&mut summary).await?;
    let evidence = soak.collect_evidence(&faults, &mut summary).await?;
    reconcile::exactly_once(&evidence, &mut summary);
    reconcile::verdict(&mut summary);
    soak.clean_up(&summary).await;
    Ok(summary)
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn say(what: &str) {
    eprintln!("chaos: {what}");
}
