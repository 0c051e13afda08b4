//! The `aerie` binary: one command line over the library's commands.

use aerie::{bench, info_cmd, restore, snapshot_cmd, wal_cmd};
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
    /// Run a node: the Aerospike wire protocol on 127.0.0.1:3000 with an
    /// embedded default config (data in ./aerie-data, namespace `test`).
    Node {
        /// TOML settings (see --print-default-config); environment variables
        /// AERIE_DATA_DIR, AERIE_NODE_ID, AERIE_ADDRESS, AERIE_PORT,
        /// AERIE_FSYNC, AERIE_FABRIC_ADDRESS, AERIE_FABRIC_PORT, AERIE_SEEDS,
        /// AERIE_REPLICATION_FACTOR and AERIE_CLUSTER_SECRET_FILE override it.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Print every setting with its default and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Ask a node info names, like asinfo (`aerie info namespaces`).
    Info {
        /// The node.
        #[arg(long, default_value = "127.0.0.1:3000")]
        host: String,
        /// Info names (default: node, build, namespaces, statistics).
        names: Vec<String>,
    },
    /// A cluster's state: `aerie cluster status [--host H:P] [--json]`.
    Cluster {
        #[command(subcommand)]
        command: aerie::cluster_cmd::ClusterCommand,
    },
    /// Load generator: YCSB A/B/C or inserts over N connections, HDR latency
    /// percentiles per operation.
    Bench(bench::BenchArgs),
    /// Inspect a write-ahead log directory (read-only).
    Wal {
        #[command(subcommand)]
        command: wal_cmd::WalCommand,
    },
    /// Create, list and verify snapshot files (backups).
    Snapshot {
        #[command(subcommand)]
        command: snapshot_cmd::SnapshotCommand,
    },
    /// Build a new data directory from snapshot files, optionally rolled
    /// forward through archived WAL segments to an index or a time.
    Restore(restore::RestoreArgs),
}

/// Exit codes: 0 success, 1 damaged data, 2 anything else (usage, refusals,
/// I/O).
fn exit_code(result: aerie::error::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_corruption() { 1 } else { 2 })
        }
    }
}

fn run_node(config: Option<&std::path::Path>, print_default: bool) -> ExitCode {
    if print_default {
        print!("{}", aerie::node::config::default_config_text());
        return ExitCode::SUCCESS;
    }
    match aerie::node::config::NodeFileConfig::load(config) {
        Ok(config) => exit_code(aerie::node::run(config)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
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
        Command::Node {
            config,
            print_default_config,
        } => run_node(config.as_deref(), print_default_config),
        Command::Info { host, names } => {
            let names = if names.is_empty() {
                ["node", "build", "namespaces", "statistics"]
                    .map(String::from)
                    .to_vec()
            } else {
                names
            };
            exit_code(info_cmd::run(&host, &names))
        }
        Command::Bench(args) => match bench::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cluster { command } => exit_code(aerie::cluster_cmd::run(command)),
        Command::Wal { command } => wal_cmd::run(command),
        Command::Snapshot { command } => exit_code(snapshot_cmd::run(command)),
        Command::Restore(args) => exit_code(restore::run(args)),
    }
}
