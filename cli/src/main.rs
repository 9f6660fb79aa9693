//! `tidings`: the operator CLI. Configured exactly like an application (tidings.toml, TIDINGS_*, the cloud's
//! environment); works on every backend whose state lives outside a process.

mod args;
mod connect;
mod cost;
mod dashboard;
mod dlq;
mod doctor;
mod exit;
mod ls;
mod progress;
mod publish;
mod select;
mod signal;
mod table;
mod tail;

use std::io::IsTerminal;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Outcome;

/// What is logged without RUST_LOG: warnings and errors, and the dashboard's actions.
pub const DEFAULT_LOG: &str = "warn,tidings::dashboard=info";

/// Logs to stderr (stdout stays the command's output, JSON included), filtered by RUST_LOG, else [`DEFAULT_LOG`].
fn logs() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("tidings: RUST_LOG {v:?} is not a log filter such as info or tidings=debug ({e}); using {DEFAULT_LOG:?}");
            EnvFilter::new(DEFAULT_LOG)
        }),
        _ => EnvFilter::new(DEFAULT_LOG),
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // A write to a closed stderr (`tidings dashboard 2>&1 | head -1`) is dropped, not reported with eprintln!, which
    // would panic inside whatever logged.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .init();
}

fn main() {
    let cli = Cli::parse();
    logs();
    let verbose = cli.verbose;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let outcome = runtime.block_on(run(cli));
    // Background tasks of the cloud clients (streams, lease loops) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => std::process::exit(exit::OK),
        Err(f) => {
            eprintln!("tidings: {}", exit::detail(&f.message, verbose));
            std::process::exit(f.code);
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "tidings", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Doctor(d) = &cli.command {
        return doctor::run(&cli, d, cli.json).await;
    }
    // Needs the application's metrics only, not a backend.
    if let Command::Cost(c) = cli.command {
        return cost::run(c, cli.json).await;
    }
    let (bus, op) = connect::connect(&cli).await?;
    let json = cli.json;
    let outcome = match cli.command {
        Command::Ls => ls::run(&op, json).await,
        Command::Dlq(d) => dlq::run(&op, d, json).await,
        Command::Publish(p) => publish::run(&bus, &op, p, json).await,
        Command::Tail(t) => tail::run(&bus, &op, t, json).await,
        Command::Dashboard(d) => dashboard::run(&bus, d).await,
        Command::Doctor(_) | Command::Completions { .. } | Command::Cost(_) => {
            unreachable!("these run before connecting")
        }
    };
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    outcome
}
