//! redis-dsg: a distributed message generator and consumer for Redis.
//!
//! Identical instances elect one generator through a renewable, fenced Redis
//! lease ([`lease`], [`generator`]); the others consume the list
//! at-least-once ([`consumer`], [`reaper`]); probes, metrics and status come
//! from one HTTP router ([`http`], [`metrics`]). [`app::Application`] wires
//! it together; `main.rs` only parses the command line and dispatches.

pub mod app;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod cluster_status;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod error_entry;
pub mod error_list;
pub mod exit;
pub mod failover_bench;
pub mod fencing_audit;
pub mod generator;
pub mod http;
pub mod http_client;
pub mod keys;
pub mod lease;
pub mod local_redis;
pub mod local_sentinel;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod output;
pub mod process;
pub mod processor;
pub mod proxy;
pub mod reaper;
pub mod redis;
pub mod replica;
pub mod role;
pub mod shutdown;
pub mod state;
