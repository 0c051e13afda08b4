//! The `aerie` binary. Today it carries the WAL tools; `aerie node` arrives
//! with the node issue.

mod wal_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "aerie",
    version,
    about = "Aerie: a replicated, Aerospike-compatible key-value database for SSD hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a write-ahead log directory (read-only).
    Wal {
        #[command(subcommand)]
        command: wal_cmd::WalCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Wal { command } => wal_cmd::run(command),
    }
}
