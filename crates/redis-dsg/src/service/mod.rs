//! The long-running service: [`Application`] wires the role loop (lease,
//! generator, consumer), the reaper, the HTTP router and the metrics.
//!
//! Identical instances elect one generator through a renewable, fenced
//! Redis lease (`lease`, `generator`); the others consume the list
//! at-least-once (`consumer`, `reaper`); probes, metrics and status come
//! from one HTTP router (`http`, `metrics`); `health` says whether the
//! instance works and why not; `sampler` reads the fleet's gauges, one
//! instance at a time.

mod app;
mod backoff;
mod chores;
mod consumer;
pub mod error_entry;
mod generator;
mod health;
mod http;
mod lease;
pub mod message;
mod metrics;
mod process_stats;
mod processor;
mod reaper;
mod redis_memory;
pub mod registry;
mod role;
mod sampler;
pub mod shutdown;
mod state;
mod status;
mod watcher;

pub use app::{AppError, Application};
pub use lease::LeaseToken;
pub(crate) use lease::original_lock;
pub use lease::original_lock::OriginalLockKind;
pub use state::Role;
pub use status::{Counts, InstanceStatus, LeaseView, OriginalLockView};
