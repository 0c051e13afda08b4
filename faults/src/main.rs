//! `aerie-faults`: one seeded fault test against a cluster of real `aerie`
//! processes on 127.0.0.1; prints the verdict and writes `report.json` (and
//! the history of any key that is not linearizable) into the work dir.
//! Exit status 0 when it passed, 1 when it found something, 2 when it could
//! not run.

use std::path::PathBuf;

use aerie_faults::{Options, WorkloadKind, nemesis};
use clap::Parser;

/// Runs a seeded fault test: a register workload (reads, writes,
/// compare-and-set by generation) through the official Aerospike client
/// while nodes are killed and paused, then a final heal and a quiet period;
/// checks linearizability per key (porcupine), recovery, and that every
/// shard's replicas hold the same records. The same seed replays the same
/// schedule of faults.
#[derive(Debug, Parser)]
#[command(name = "aerie-faults", version)]
struct Args {
    /// Nodes in the cluster (replication factor 3).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Seconds of workload after the final heal.
    #[arg(long, default_value_t = 10)]
    quiet_secs: u64,
    /// Faults to draw from, comma-separated: kill (SIGKILL, restart), pause
    /// (SIGSTOP, SIGCONT), partition (through the fault proxy: one node
    /// isolated, a minority split off, or the overlapping ring; links cut
    /// or black-holed), delay (every link of one node held 50–400 ms per
    /// chunk), wipe (SIGKILL, data dir deleted, started again: it joins as
    /// a new member and its replicas are rebuilt), throttle (every link of
    /// one node limited to 16 KiB/s–1 MiB/s each way), oneway (one node's
    /// inbound or outbound links cut or black-holed), clock (one node's
    /// wall clock stepped 1 min–2 h forward or back while it runs; needs
    /// libfaketime), disk (WAL or engine ENOSPC or fsync EIO on one node,
    /// then off and, if it poisoned the node, a restart; needs an aerie
    /// built with `--features fault-injection`).
    #[arg(
        long,
        default_value = "kill,pause,partition,delay",
        value_delimiter = ','
    )]
    nemesis: Vec<nemesis::Kind>,
    /// Half the kills and pauses hit a minority of the nodes at once (two
    /// of five) or the nodes leading shards (up to a minority), and half the
    /// partitions split the leaders off. Off: the schedule each seed always
    /// had.
    #[arg(long)]
    multi: bool,
    /// Workloads run side by side, comma-separated: register (reads,
    /// writes, compare-and-set; linearizability), counter (increments;
    /// final value between acknowledged and attempted), set (unique adds;
    /// every acknowledged one present, no refused one).
    #[arg(long, default_value = "register", value_delimiter = ',')]
    workload: Vec<WorkloadKind>,
    /// Seeds the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent clients per workload.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Keys (registers). More keys make each key's history shorter and its
    /// linearizability search cheaper.
    #[arg(long, default_value_t = 64)]
    keys: i64,
    /// The `aerie` binary (default: beside this one).
    #[arg(long)]
    aerie: Option<PathBuf>,
    /// Where data dirs, logs and the report go (default: a new temp dir,
    /// kept).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() {
    std::process::exit(match run(Args::parse()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("aerie-faults: {e}");
            2
        }
    });
}

fn run(args: Args) -> Result<bool, String> {
    let aerie = match args.aerie {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("aerie"),
    };
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("aerie-faults-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep(),
    };
    let options = Options {
        aerie,
        nodes: args.nodes,
        duration_secs: args.duration_secs,
        quiet_secs: args.quiet_secs,
        nemeses: args.nemesis,
        multi: args.multi,
        workloads: args.workload,
        seed: args.seed,
        clients: args.clients,
        keys: args.keys,
        work_dir,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let report = runtime.block_on(aerie_faults::run(&options))?;
    print!("{}", aerie_faults::summary(&report));
    println!("report: {}", options.work_dir.join("report.json").display());
    Ok(report.passed())
}
