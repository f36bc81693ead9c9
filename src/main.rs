//! The `redis-dsg` binary: parses the command line, loads configuration,
//! starts logging and dispatches to the library.

use clap::Parser;
use redis_dsg::cli::{self, Cli, Command, RunArgs};
use redis_dsg::{app::Application, exit, logging, shutdown};

fn main() {
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redis-dsg: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Background connection tasks must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> i32 {
    let loaded = match &cli.command {
        Some(Command::Demo(_)) | Some(Command::Bench(_)) | Some(Command::Chaos(_)) => None,
        _ => match cli::load_config(&cli) {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
    };
    match (&cli.command, loaded) {
        (Some(Command::Config), Some(loaded)) => {
            print!("{}", loaded.render_toml());
            exit::OK
        }
        (Some(Command::AclRule(args)), Some(loaded)) => {
            print!("{}", cli::acl_rule_command(&loaded.config, args));
            exit::OK
        }
        (Some(Command::Errors(cmd)), Some(loaded)) => {
            logging::init(loaded.config.log_format, "warn");
            cli::errors_command(&loaded.config, cmd).await
        }
        (Some(Command::Status(args)), Some(loaded)) => {
            logging::init(loaded.config.log_format, "warn");
            cli::status_command(&loaded.config, args).await
        }
        (Some(Command::Demo(args)), _) => {
            logging::init(redis_dsg::config::LogFormat::Text, "warn");
            redis_dsg::demo::run(&cli, args).await
        }
        (Some(Command::Chaos(args)), _) => {
            logging::init(redis_dsg::config::LogFormat::Text, "warn,fred=error");
            redis_dsg::chaos::run(args).await
        }
        (Some(Command::Bench(args)), _) => {
            logging::init(redis_dsg::config::LogFormat::Text, "warn");
            redis_dsg::bench::run(&cli, args).await
        }
        (None | Some(Command::Run(RunArgs { .. })), Some(loaded)) => {
            logging::init(loaded.config.log_format, "info");
            let app = match Application::build(loaded.config).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    return exit::FAILURE;
                }
            };
            if app.run_until_stopped(shutdown::signal()).await {
                exit::OK
            } else {
                exit::FAILURE
            }
        }
        (_, None) => exit::FAILURE,
    }
}
