//! `aerie restore`: builds a data directory a node can start from, out of a
//! set of snapshot files (one per shard, covering every partition), optionally
//! rolled forward through archived WAL segments to an index or a time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aerie_engine::{Engine, PARTITION_COUNT};
use aerie_replication::codec;
use aerie_replication::shards::{ShardMap, stream_id};
use aerie_snapshot::pitr::{self, Target};
use aerie_snapshot::{
    Capture, Header, ShardMeta, SnapshotReader, VerifyReport, WriteOptions, install_verified,
};
use aerie_wal::archive::ArchivedStream;
use clap::Args;

use crate::datadir::{self, ClusterMeta, DataDir};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::snapshot_cmd::{self, now_ms, ranges};

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot files, one per shard, covering all 4096 partitions.
    #[arg(long, required = true, num_args = 1..)]
    from: Vec<PathBuf>,
    /// The new data directory (must not exist or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// Directories of archived (or copied live) WAL segments to roll forward
    /// from; needs --to-index or --to-time.
    #[arg(long, requires = "target")]
    wal_archive: Vec<PathBuf>,
    /// Roll forward to this log index (single-shard snapshot sets only: each
    /// shard has its own log).
    #[arg(long, group = "target", requires = "wal_archive")]
    to_index: Option<u64>,
    /// Roll forward to this time: RFC 3339 (`2026-11-22T05:00:00Z`) or Unix ms.
    /// Applies every command the leader stamped at or before it.
    #[arg(long, group = "target", requires = "wal_archive")]
    to_time: Option<String>,
    /// Node id of the new directory (default: the node that took the snapshots).
    #[arg(long)]
    node_id: Option<u64>,
}

fn parse_time(text: &str) -> Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| Error::Refused(format!("--to-time {text:?}: {e}")))?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::Refused(format!("--to-time {text:?} is before 1970")))?;
    Ok(since.as_millis() as u64)
}

fn refuse_non_empty(dir: &Path) -> Result<()> {
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut items| items.next().is_some());
    if non_empty {
        return Err(Error::Refused(format!(
            "{} is not empty: restore only builds a new data directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Everything the set of files must agree on, checked before anything is
/// written; returns the shard map they form.
fn check_set(readers: &[SnapshotReader]) -> Result<ShardMap> {
    let first = readers[0].header();
    for r in readers {
        let h = r.header();
        if h.cluster_name != first.cluster_name {
            return Err(Error::Refused(format!(
                "the snapshots come from different clusters: {:?} ({}) and {:?} ({})",
                first.cluster_name,
                readers[0].path().display(),
                h.cluster_name,
                r.path().display()
            )));
        }
        let names = |h: &Header| {
            h.namespaces
                .iter()
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
        };
        if names(h) != names(first) {
            return Err(Error::Refused(format!(
                "{} has namespaces {:?}, {} has {:?}",
                r.path().display(),
                names(h),
                readers[0].path().display(),
                names(first)
            )));
        }
    }
    check_coverage(readers)?;
    let map = ShardMap::new(readers.len() as u32).map_err(Error::Refused)?;
    for r in readers {
        let h = r.header();
        if h.partitions != map.partitions(h.shard_id) {
            return Err(Error::Refused(format!(
                "{} is shard {} with partitions {}, but shard {} of {} owns {}",
                r.path().display(),
                h.shard_id,
                ranges(&h.partitions),
                h.shard_id,
                map.shards(),
                ranges(&map.partitions(h.shard_id))
            )));
        }
    }
    Ok(map)
}

fn check_coverage(readers: &[SnapshotReader]) -> Result<()> {
    let mut covered = BTreeSet::new();
    for r in readers {
        for p in &r.header().partitions {
            if !covered.insert(*p) {
                return Err(Error::Refused(format!(
                    "partition {p} is in more than one snapshot ({} among them): give one snapshot per shard",
                    r.path().display()
                )));
            }
        }
    }
    if covered.len() != PARTITION_COUNT {
        let missing: Vec<u16> = (0..PARTITION_COUNT as u16)
            .filter(|p| !covered.contains(p))
            .collect();
        return Err(Error::Refused(format!(
            "the snapshots do not cover every partition: {} of {PARTITION_COUNT} missing ({})",
            missing.len(),
            ranges(&missing)
        )));
    }
    Ok(())
}

/// Runs a restore; prints what it did.
pub fn run(args: RestoreArgs) -> Result<()> {
    refuse_non_empty(&args.data_dir)?;
    let target = match (args.to_index, &args.to_time) {
        (Some(index), _) => Some(Target::Index(index)),
        (None, Some(time)) => Some(Target::TimeMs(parse_time(time)?)),
        (None, None) => None,
    };
    if matches!(target, Some(Target::Index(_))) && args.from.len() != 1 {
        return Err(Error::Refused(
            "--to-index names an index of one shard's log: use it with a single snapshot, or use --to-time".into(),
        ));
    }
    let readers = args
        .from
        .iter()
        .map(|path| SnapshotReader::open(path).map_err(Error::from))
        .collect::<Result<Vec<_>>>()?;
    let reports = readers
        .iter()
        .map(snapshot_cmd::verify_reader)
        .collect::<Result<Vec<_>>>()?;
    let map = check_set(&readers)?;
    let first = readers[0].header().clone();
    let meta = ClusterMeta {
        cluster_name: first.cluster_name.clone(),
        node_id: args.node_id.unwrap_or(first.node_id),
        // A restored directory starts a cluster of its own.
        cluster_id: datadir::random_id(),
        shards: map.shards(),
        incarnation: 0,
        namespaces: first.namespaces.clone(),
    };
    let engine_dir = args.data_dir.join("engine");
    let engine = Engine::open(datadir::engine_config(&engine_dir, &meta.namespaces))?;
    let snapshot_dir = args.data_dir.join("snapshots");
    // Every shard's stream from one read of the archive.
    let logs = match target {
        Some(_) => {
            let wanted: Vec<(u64, u64)> = readers
                .iter()
                .map(|r| {
                    (
                        stream_id(r.header().shard_id),
                        r.header().index.saturating_sub(1),
                    )
                })
                .collect();
            ArchivedStream::scan_many(&args.wal_archive, &wanted)?
        }
        None => Vec::new(),
    };
    for (i, (reader, report)) in readers.iter().zip(&reports).enumerate() {
        let pitr = target.zip(logs.get(i));
        restore_shard(&engine, reader, report, pitr, &snapshot_dir, &meta)?;
    }
    engine.close()?;
    let dd = DataDir::create(&args.data_dir, meta)?;
    println!(
        "restored into {}: {} shards",
        dd.root().display(),
        dd.meta().shards
    );
    Ok(())
}

fn restore_shard(
    engine: &Engine,
    reader: &SnapshotReader,
    report: &VerifyReport,
    pitr: Option<(Target, &ArchivedStream)>,
    snapshot_dir: &Path,
    meta: &ClusterMeta,
) -> Result<()> {
    let h = reader.header();
    let mut progress = Progress::new(
        &format!("install shard {}", h.shard_id),
        reader.footer().records,
        false,
    );
    install_verified(engine, reader, report, |n| progress.set(n))?;
    progress.finish();
    let Some((target, log)) = pitr else {
        std::fs::create_dir_all(snapshot_dir).map_err(|source| io(snapshot_dir, source))?;
        let copy = snapshot_dir.join(reader.path().file_name().unwrap_or_default());
        std::fs::copy(reader.path(), &copy).map_err(|source| io(&copy, source))?;
        println!(
            "shard {}: at index {} (term {}) from {}",
            h.shard_id,
            h.index,
            h.term,
            reader.path().display()
        );
        return Ok(());
    };
    let decode = |payload: &[u8]| codec::command_of(payload).map_err(|e| e.to_string());
    let replayed = pitr::replay(engine, h, log, target, &decode)?;
    println!(
        "shard {}: snapshot at index {}, {} entries replayed, now at index {} (term {})",
        h.shard_id, h.index, replayed.entries, replayed.last_index, replayed.last_term
    );
    // The node starts its raft log from a snapshot at exactly the restored
    // index, so one is written for it.
    let shard = ShardMeta {
        cluster_name: meta.cluster_name.clone(),
        node_id: meta.node_id,
        shard_id: h.shard_id,
        log_id: h.log_id,
        partitions: h.partitions.clone(),
    };
    let capture = Capture::take(engine, h.log_id, &h.partitions)?;
    capture.write(
        snapshot_dir,
        &shard,
        replayed.last_term,
        now_ms(),
        WriteOptions::default(),
        |_| {},
    )?;
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
