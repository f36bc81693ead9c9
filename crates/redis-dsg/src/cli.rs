//! The command line of the product binary: its subcommands and their flags
//! (clap). `main.rs` parses it and dispatches to [`crate::service`] and
//! [`crate::ops`]. Exit codes: 0 ok, 78 bad configuration (including bad
//! flags), 69 Redis unavailable for a one-shot command, 1 anything else
//! ([`crate::ops::CliError`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// Distributed message generator and consumer for Redis.
///
/// A replicated set of identical instances: one holds a fenced Redis lease
/// and generates messages into a list; the others consume them reliably
/// (at-least-once), sending failures to an error list.
#[derive(Debug, Parser)]
#[command(
    name = "redis-dsg",
    version,
    after_help = "Exit codes: 0 ok, 78 bad configuration, 69 Redis unavailable (one-shot commands), 1 anything else.\n\
                  Settings come from defaults, a TOML file, DSG_* and the original variables (MPORT, REDIS_URL, …), then flags.\n\
                  `redis-dsg -getErrors` is an alias of `redis-dsg errors drain`."
)]
pub struct Cli {
    /// TOML configuration file (also DSG_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis address: host:port or redis://[user:password@]host:port[/db] (REDIS_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The message list (REDIS_QUEUE).
    #[arg(long, global = true, value_name = "NAME")]
    pub queue: Option<String>,
    /// The error list (REDIS_ERROR_QUEUE).
    #[arg(long, global = true, value_name = "NAME")]
    pub error_queue: Option<String>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    #[command(
        after_help = "Examples:\n  redis-dsg run\n  MODE=consumer MPORT=8081 redis-dsg\n  redis-dsg run --mode generator --interval-ms 0"
    )]
    Run(RunArgs),
    /// Inspect, drain or requeue the error list.
    #[command(subcommand)]
    Errors(ErrorsCommand),
    /// Print the effective configuration (TOML, secrets redacted, with sources).
    #[command(
        after_help = "Examples:\n  redis-dsg config\n  REDIS_URL=redis://:pw@redis:6379 redis-dsg config"
    )]
    Config,
    /// Print the least-privilege `ACL SETUSER` command for the configured
    /// queue, error list and output list (every command and key the service
    /// and its one-shot commands use, nothing else).
    #[command(
        name = "acl-rule",
        after_help = "Examples:\n  redis-dsg acl-rule\n  REDIS_QUEUE=orders redis-dsg acl-rule --user orders-dsg   # add >password, paste into redis-cli on every Redis node\n\nNames with * ? [ ] \\ are escaped; names with whitespace or control characters cannot be written in a rule (exit 78)."
    )]
    AclRule(AclRuleArgs),
    /// Show the fleet as Redis records it: lease, lists, consumers.
    #[command(
        after_help = "Examples:\n  redis-dsg status\n  redis-dsg status --json\n  redis-dsg status --check   # exit 1 without a generator or a live consumer"
    )]
    Status(StatusArgs),
    /// Return every message held by any consumer (in-flight) to the queue,
    /// exactly once: for a rollback to go-redis-dsg, which knows nothing
    /// of in-flight storage. Refuses while a redis-dsg consumer is alive,
    /// unless --force.
    #[command(
        name = "return-inflight",
        after_help = "Each consumer's in-flight hash ({queue}:inflight:<id>) goes back to the consuming end of\n\
                      the queue in one atomic step; running it again returns nothing more.\n\n\
                      Examples:\n  \
                      redis-dsg return-inflight --dry-run        # who holds what; changes nothing\n  \
                      redis-dsg return-inflight                  # once no redis-dsg consumer is alive\n  \
                      redis-dsg return-inflight --force --json   # live consumers' too (redelivered)\n  \
                      kubectl scale deploy/redis-dsg --replicas=0 && sleep 15\n  \
                      kubectl run dsg-rollback --rm -i --restart=Never --image=IMAGE -- redis-dsg return-inflight"
    )]
    ReturnInflight(ReturnInflightArgs),
}

impl Default for Command {
    /// A bare `redis-dsg` runs the service (the container's command is `run`).
    fn default() -> Command {
        Command::Run(RunArgs::default())
    }
}

/// Flags of `acl-rule`.
#[derive(Debug, Args)]
pub struct AclRuleArgs {
    /// The ACL user name.
    #[arg(long, default_value = "dsg")]
    pub user: String,
}

/// Flags of `run`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// auto, generator or consumer (MODE).
    #[arg(long)]
    pub mode: Option<String>,
    /// HTTP port (MPORT).
    #[arg(long)]
    pub port: Option<String>,
    /// Milliseconds between generated messages; 0 = as fast as possible (GENERATOR_INTERVAL).
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<String>,
}

/// `errors` subcommands.
#[derive(Debug, Subcommand)]
pub enum ErrorsCommand {
    /// Print the number of entries.
    #[command(after_help = "Example:\n  redis-dsg errors count")]
    Count(CountArgs),
    /// Print entries, oldest first, without removing them.
    #[command(
        after_help = "Examples:\n  redis-dsg errors list --limit 20\n  redis-dsg errors list --json | jq .reason"
    )]
    List(EntryArgs),
    /// Print entries, oldest first, and remove them once their reader has
    /// them. Safe to interrupt or pipe into `head`: what the reader may not
    /// have kept goes back to the list (exit 1, saying how many were
    /// drained); concurrent drains print different entries.
    #[command(
        after_help = "Examples:\n  redis-dsg errors drain > errors.txt\n  redis-dsg errors drain --json --limit 100 | head -1\n  kubectl exec deploy/redis-dsg -- redis-dsg errors drain --json > errors.jsonl"
    )]
    Drain(EntryArgs),
    /// Move entries, oldest first, back to the queue with their original
    /// bytes (to the head of the queue, like new messages).
    #[command(
        after_help = "Examples:\n  redis-dsg errors requeue\n  redis-dsg errors requeue --limit 10 --json"
    )]
    Requeue(EntryArgs),
}

/// Flags of `errors count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    /// Print `{"count": N}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `errors list|drain|requeue`.
#[derive(Debug, Args)]
pub struct EntryArgs {
    /// At most this many entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per line (payload as text, or base64 in payload_base64).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when no instance generates or no consumer is alive.
    #[arg(long)]
    pub check: bool,
}

/// Flags of `return-inflight`.
#[derive(Debug, Args)]
pub struct ReturnInflightArgs {
    /// Also take what live consumers hold (they deliver it again).
    #[arg(long)]
    pub force: bool,
    /// Show consumers, heartbeats and what each holds; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Rewrites the original `-getErrors` flag as `errors drain`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    for a in args {
        if a == "-getErrors" || a == "--getErrors" {
            out.push("errors".into());
            out.push("drain".into());
        } else {
            out.push(a);
        }
    }
    out
}

impl Cli {
    /// The configuration sources given on the command line.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::with_config_file(self.config.clone());
        o.set("redis.url", "--redis-url", self.redis_url.as_ref());
        o.set("redis.queue", "--queue", self.queue.as_ref());
        o.set(
            "redis.error_queue",
            "--error-queue",
            self.error_queue.as_ref(),
        );
        if let Some(Command::Run(r)) = &self.command {
            o.set("mode", "--mode", r.mode.as_ref());
            o.set("http.port", "--port", r.port.as_ref());
            o.set(
                "generator.interval_ms",
                "--interval-ms",
                r.interval_ms.as_ref(),
            );
        }
        o
    }
}
