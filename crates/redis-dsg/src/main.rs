//! The `redis-dsg` binary: parses the command line, loads configuration,
//! starts logging and dispatches to the library. Errors are printed once,
//! here, and become the exit code ([`CliError::exit_code`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use redis_dsg::cli::{self, Cli, Command};
use redis_dsg::ops::{self, CliError};
use redis_dsg::service::{Application, shutdown};
use redis_dsg::{config, logging};

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print to stdout and succeed; a bad
            // flag is bad configuration.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(ops::exit_codes::CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    return_large_frees_to_the_system();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redis-dsg: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Background connection tasks must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis-dsg: {e}");
            e.exit_code()
        }
    }
}

/// glibc raises its mmap threshold to the size of each large block freed,
/// so after the first few 900 KiB messages every later one came from the
/// heap arenas, which keep freed memory: a consumer at its 64 MiB byte
/// budget stayed 15–20 MiB above its live set (peak RSS 104–116 MiB).
/// A fixed threshold keeps blocks of 128 KiB and more (large messages,
/// large replies) in mappings of their own that go back to the system when
/// freed; smaller ones, the common case, are untouched.
fn return_large_frees_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only tunes
    // the allocator and reports failure by its return value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let loaded = config::load(&cli.overrides())?;
    let log_format = loaded.config.log_format;
    match cli.command.unwrap_or_default() {
        Command::Config => print!("{}", loaded.render_toml()?),
        Command::AclRule(args) => print!("{}", ops::acl_rule_command(&loaded.config, &args)?),
        Command::Errors(cmd) => {
            logging::init(log_format, "warn");
            ops::errors_command(&loaded.config, &cmd).await?;
        }
        Command::ReturnInflight(args) => {
            logging::init(log_format, "warn");
            ops::return_inflight_command(&loaded.config, &args).await?;
        }
        Command::Status(args) => {
            logging::init(log_format, "warn");
            ops::status_command(&loaded.config, &args).await?;
        }
        Command::Run(_) => {
            logging::init(log_format, "info");
            for note in loaded.migration_notes() {
                note.log();
            }
            let app = Application::build(loaded.config).await?;
            if !app.run_until_stopped(shutdown::signal()).await {
                return Err(CliError::ShutdownTimedOut);
            }
        }
    }
    Ok(())
}
