//! The Redis failure type: every Redis call of the service and its commands
//! returns [`RedisError`], classified so callers can tell an outage (retry,
//! exit 69) from a refusal by the server (report it).

use fred::prelude::*;

use super::link::{Cause, Failure};

/// A Redis failure, classified for metrics and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The server could not be reached or the connection broke.
    #[error("Redis unavailable: {0}")]
    Unavailable(#[source] fred::error::Error),
    /// The server answered with an error, or an answer had the wrong shape.
    #[error("Redis error: {0}")]
    Command(#[source] fred::error::Error),
    /// The connection could not be set up (TLS material, URL).
    #[error("cannot set up the Redis connection: {0}")]
    Setup(String),
    /// No answer within a deadline the caller set on top of the command
    /// timeout (a release at shutdown waits 2 s, not the full timeout).
    #[error("no answer from Redis to {what} within {} ms", within.as_millis())]
    NoAnswer {
        /// What was asked.
        what: &'static str,
        /// How long the caller waited.
        within: std::time::Duration,
    },
    /// A reply did not have the shape a script promises.
    #[error("unexpected reply from Redis script {script}: {detail}")]
    Reply {
        /// The script's name.
        script: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl RedisError {
    /// The failure, classified for logs, readiness and back-off.
    pub fn failure(&self) -> Failure {
        match self {
            RedisError::Unavailable(e) | RedisError::Command(e) => Failure::of(e),
            RedisError::Setup(detail) => Failure {
                cause: Cause::Other,
                detail: detail.clone(),
            },
            RedisError::NoAnswer { what, within } => Failure {
                cause: Cause::Timeout,
                detail: format!("no answer to {what} within {} ms", within.as_millis()),
            },
            RedisError::Reply { script, detail } => Failure {
                cause: Cause::Other,
                detail: format!("unexpected reply from script {script}: {detail}"),
            },
        }
    }
}

impl From<fred::error::Error> for RedisError {
    fn from(e: fred::error::Error) -> Self {
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
                RedisError::Unavailable(e)
            }
            _ if e.details().contains("connection") || e.details().contains("Connection") => {
                RedisError::Unavailable(e)
            }
            _ => RedisError::Command(e),
        }
    }
}

/// What the service was doing when a Redis call failed: the `operation`
/// label of `dsg_redis_errors_total`. Every variant is exported from start
/// (at zero), so the list here is the list of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Moving messages from the queue into in-flight storage.
    Fetch,
    /// Acknowledging processed messages (removal, error list, output list).
    Ack,
    /// A consumer's heartbeat.
    Heartbeat,
    /// Looking for dead consumers and returning their messages.
    Reap,
    /// The generator's fenced write.
    Push,
    /// Taking, renewing or releasing the lease.
    Lease,
    /// Reading the fleet's gauges (queue lengths, oldest message age, live
    /// consumers): one replica at a time.
    Sample,
    /// A stopping consumer returning what it holds.
    Return,
    /// Watching the queue for pushes by other clients (`CLIENT TRACKING`):
    /// one replica at a time.
    Watch,
    /// Reading Redis' memory use and eviction policy (`INFO memory`).
    Memory,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 10] = [
        Operation::Fetch,
        Operation::Ack,
        Operation::Heartbeat,
        Operation::Reap,
        Operation::Push,
        Operation::Lease,
        Operation::Sample,
        Operation::Return,
        Operation::Watch,
        Operation::Memory,
    ];

    /// What the service was doing, for logs and `/readyz`.
    pub fn describe(self) -> &'static str {
        match self {
            Operation::Fetch => "fetching messages from the queue",
            Operation::Ack => "acknowledging processed messages",
            Operation::Heartbeat => "the consumer heartbeat",
            Operation::Reap => "recovering dead consumers' messages",
            Operation::Push => "the generator's write to the queue",
            Operation::Lease => "taking or renewing the generator lease",
            Operation::Sample => "reading the queue's gauges",
            Operation::Return => "returning in-flight messages to the queue",
            Operation::Watch => "watching the queue for pushes by other clients",
            Operation::Memory => "reading Redis' memory use and eviction policy",
        }
    }

    /// The metric label value.
    pub fn metric_label(self) -> &'static str {
        match self {
            Operation::Fetch => "fetch",
            Operation::Ack => "ack",
            Operation::Heartbeat => "heartbeat",
            Operation::Reap => "reap",
            Operation::Push => "push",
            Operation::Lease => "lease",
            Operation::Sample => "sample",
            Operation::Return => "return",
            Operation::Watch => "watch",
            Operation::Memory => "memory",
        }
    }
}
