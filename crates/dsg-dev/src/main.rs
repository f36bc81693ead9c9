//! `dsg-dev`: the development tools of redis-dsg — the demo, the
//! benchmarks and the chaos soak. They start the product binary
//! (`redis-dsg`) as child processes; nothing of them ships in the image.
//!
//! ```sh
//! cargo demo --replicas 5         # = cargo run --release -p dsg-dev -- demo --replicas 5
//! cargo dsg bench                 # throughput, latency, memory
//! cargo dsg bench --fleet         # what fleets of pods cost Redis
//! cargo dsg bench --memory        # Redis full or evicting, large messages
//! cargo dsg chaos --duration 900  # the long soak
//! ```

mod bench;
mod demo;
mod product;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Development tools of redis-dsg: demo, benchmarks, chaos soak.
#[derive(Debug, Parser)]
#[command(name = "dsg-dev", version)]
struct Cli {
    /// The redis-dsg binary to run (default: built from this workspace, or
    /// found next to this program).
    #[arg(long, global = true, env = "DSG_BINARY", value_name = "PATH")]
    binary: Option<std::path::PathBuf>,
    /// Use this Redis instead of a private redis-server (never read from
    /// REDIS_URL, so a tool cannot touch a production Redis by accident).
    #[arg(long, global = true, value_name = "URL")]
    redis_url: Option<String>,
    #[command(subcommand)]
    command: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Run a local demo: a throwaway redis-server, N replicas, a live table,
    /// and the generator killed every few seconds.
    #[command(
        after_help = "Examples:\n  cargo demo\n  cargo demo --replicas 5 --kill-every 8\n  cargo demo --redis-url 127.0.0.1:6379 --duration 60"
    )]
    Demo(demo::DemoArgs),
    /// Measure throughput, latency and memory against a private redis-server
    /// (also --failover, --fleet, --memory).
    #[command(
        after_help = "Examples:\n  cargo dsg bench\n  cargo dsg bench --json\n  cargo dsg bench --messages 200000\n  cargo dsg bench --fleet --with-bulk\n  cargo dsg bench --fleet --against /path/to/older/redis-dsg --scenarios empty,idle --idle-pods 10\n  cargo dsg bench --memory --against /path/to/older/redis-dsg\n  cargo dsg bench --memory --memory-scenarios full --fill-seconds 10 --consume-seconds 10"
    )]
    // Boxed: the bench flags are many times the size of the others.
    Bench(Box<bench::BenchArgs>),
    /// Run a soak under faults (kills, pauses, Redis restarts, cut
    /// connections) and check that nothing is lost or duplicated and that
    /// no generator writes after losing its lease.
    #[command(
        after_help = "Examples:\n  cargo dsg chaos                  # 120 s of faults\n  cargo dsg chaos --duration 900   # the long soak\n  cargo dsg chaos --seed 42 --json"
    )]
    Chaos(dsg_testkit::chaos::ChaosArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dsg-dev: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let binary = match product::binary(cli.binary.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dsg-dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match &cli.command {
            Tool::Demo(args) => {
                redis_dsg::logging::init(redis_dsg::config::LogFormat::Text, "warn");
                demo::run(&binary, cli.redis_url.as_deref(), args).await
            }
            Tool::Bench(args) => {
                redis_dsg::logging::init(redis_dsg::config::LogFormat::Text, "warn");
                bench::run(&binary, cli.redis_url.as_deref(), args).await
            }
            Tool::Chaos(args) => {
                redis_dsg::logging::init(redis_dsg::config::LogFormat::Text, "warn,fred=error");
                dsg_testkit::chaos::run(&binary, args).await
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}
