//! What `GET /status` returns: one typed value that the service serialises
//! and the tools and tests deserialise, so the seam between them is checked
//! by the compiler rather than by string keys.

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::service::lease::original_lock::OriginalLockKind;
use crate::service::state::Role;

/// One instance as it sees itself; secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance id (consumer id and lease holder id).
    pub id: String,
    /// The configured mode.
    pub mode: Mode,
    /// What it does now.
    pub role: Role,
    /// Whether `/readyz` would answer 200 (not stopping, role loop running,
    /// Redis answering, no essential operation failing for long).
    pub ready: bool,
    /// The Redis address, password redacted.
    pub redis_url: String,
    /// The message list.
    pub queue: String,
    /// The error list.
    pub error_queue: String,
    /// The queue's length, while this instance reads the fleet's gauges
    /// (one instance at a time does); `None` on the others (`redis-dsg
    /// status` reads it from Redis).
    pub queue_length: Option<u64>,
    /// The error list's length, like `queue_length`.
    pub error_queue_length: Option<u64>,
    /// The lease as this instance last saw it.
    pub lease: LeaseView,
    /// go-redis-dsg's election key `lock:gen` as this instance last saw it
    /// (compatibility mode only; `None` otherwise or when it was not set).
    #[serde(default)]
    pub original_lock: Option<OriginalLockView>,
    /// Messages held now (fetched, not yet acknowledged).
    pub in_flight: i64,
    /// What this instance has done since it started.
    pub counters: Counts,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The program's version.
    pub version: String,
}

/// The lease as an instance last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The holder's id, or the lease key's raw value when it is not a
    /// redis-dsg token; `None` when nobody holds it.
    pub holder: Option<String>,
    /// The highest epoch this instance has held or seen.
    pub epoch: u64,
    /// Whether this instance holds it.
    pub is_holder: bool,
}

/// `lock:gen`, the election key of the original go-redis-dsg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalLockView {
    /// Its value: an original's uuid, `redis-dsg <lease key> <token>`, …
    pub value: String,
    /// Whose it is, judged from the value.
    pub kind: OriginalLockKind,
    /// Milliseconds before it expires, when it has a TTL.
    pub ttl_ms: Option<u64>,
}

/// Counters of one instance since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages written by its generator.
    pub generated: u64,
    /// Messages processed `ok`.
    pub processed_ok: u64,
    /// Messages moved to the error list as invalid.
    pub invalid: u64,
    /// Messages moved to the error list as malformed.
    pub malformed: u64,
    /// Messages moved to the error list as oversized.
    pub oversized: u64,
    /// Messages it returned to the queue from dead consumers.
    pub recovered: u64,
    /// Acknowledgements that found their message reclaimed.
    pub late_acks: u64,
    /// Generator writes Redis refused after the lease was lost.
    pub fenced_writes_rejected: u64,
    /// Lease acquisitions, releases and losses.
    pub lease_transitions: u64,
    /// Failed Redis operations.
    pub redis_errors: u64,
}

impl Counts {
    /// Messages whose processing finished, whatever the outcome.
    pub fn done(&self) -> u64 {
        self.processed_ok + self.invalid + self.malformed + self.oversized
    }
}
