//! The `fulcrum` command: parse the CLI, load the configuration, run until SIGTERM/SIGINT.
//! The only place that picks concrete backends for the telemetry interfaces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum::balance::Algorithm;
use fulcrum::config::{BackendConfig, Config, IoDriverChoice};
use fulcrum::telemetry::{self, Level, StderrSink};
use fulcrum::{error, info};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Fulcrum: a thread-per-core HTTP/1.1 load balancer on io_uring.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file; the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data-plane listen address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin API listen address.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Backend URL (http://host:port); repeatable; replaces the file's backends.
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
    /// Balancing algorithm: round_robin, random, least_connections, response_time.
    #[arg(long, value_name = "NAME")]
    algorithm: Option<Algorithm>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// io driver: auto, io_uring or epoll.
    #[arg(long, value_name = "DRIVER")]
    io_driver: Option<IoDriverChoice>,
    /// Also start three demo backends on loopback and balance over them.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    telemetry::install(Box::new(StderrSink::new(Level::Info)));
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => match run(cli.run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("fatal", error = format!("{e}"));
                ExitCode::FAILURE
            }
        },
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::from_file(file) {
        Ok(config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    if !args.backends.is_empty() {
        config.backends = args.backends.into_iter().map(|url| BackendConfig { url }).collect();
    }
    if let Some(algorithm) = args.algorithm {
        config.algorithm = algorithm;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(driver) = args.io_driver {
        config.io_driver = driver;
    }
    if args.demo {
        for url in fulcrum::demo::start_backends(3)? {
            info!("demo backend started", url = url);
            config.backends.push(BackendConfig { url });
        }
    }
    if config.backends.is_empty() {
        info!("no backends configured: every request gets 503 until one is added");
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let running = fulcrum::start(config)?;
    if let Some(signal) = signals.forever().next() {
        info!("signal received, draining", signal = signal);
    }
    running.shutdown();
    Ok(())
}
