//! redis-dsg: a distributed message generator and consumer for Redis.
//!
//! Identical instances elect one generator through a renewable, fenced Redis
//! lease; the others consume the list at-least-once; probes, metrics and
//! status come from one HTTP router. The layers, each importing only from
//! the ones listed before it:
//!
//! - [`config`]: settings, their sources, validation, URL parsing and
//!   redaction; knows no connection.
//! - [`cli`]: the command line that `main.rs` parses and dispatches (its
//!   flags are configuration overrides).
//! - [`redis`]: connections, TLS, credentials, key names, Lua scripts;
//!   knows no role.
//! - [`service`]: the application: role loop, lease, generator, consumer,
//!   reaper, processor, HTTP, metrics.
//! - [`ops`]: the operator's one-shot commands, taking their arguments
//!   from [`cli`].
//!
//! ([`logging`] stands apart: it imports only [`config`]'s log format.)

pub mod cli;
pub mod config;
pub mod logging;
pub mod ops;
pub mod redis;
pub mod service;
