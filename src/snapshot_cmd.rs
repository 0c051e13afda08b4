//! `aerie snapshot create | list | verify`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aerie_engine::Engine;
use aerie_replication::shards::{log_id, stream_id};
use aerie_snapshot::{
    Capture, Catalog, ShardMeta, SnapshotInfo, SnapshotReader, VerifyReport, WriteOptions,
};
use aerie_wal::archive::ArchivedStream;
use clap::Subcommand;

use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::progress::Progress;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot every shard: of a stopped node's data directory (each at the
    /// engine's durable applied index, what the node would restart from), or
    /// of a running node (`--host`: the node writes them into its own
    /// snapshot directory in the background).
    Create {
        /// The node's data directory (the node must be stopped).
        #[arg(long, required_unless_present = "host", conflicts_with = "host")]
        data_dir: Option<PathBuf>,
        /// A running node (`host:port`).
        #[arg(long)]
        host: Option<String>,
        /// Where to write the files (default: `<data-dir>/snapshots`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// zstd level: 1 is fastest, 3 and 9 compress more (see the README).
        #[arg(long, default_value_t = 1)]
        zstd_level: i32,
    },
    /// List the snapshots in a directory, per shard, oldest first.
    List {
        /// A directory of snapshot files.
        dir: PathBuf,
    },
    /// Check every chunk and the footer of each file and print what it holds.
    /// Exits 1 if any file is damaged.
    Verify {
        /// Snapshot files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Create {
            data_dir: Some(data_dir),
            out,
            zstd_level,
            ..
        } => create(&data_dir, out, zstd_level).map(|_| ()),
        SnapshotCommand::Create { host, .. } => {
            trigger_online(host.as_deref().unwrap_or("127.0.0.1:3000"))
        }
        SnapshotCommand::List { dir } => list(&dir),
        SnapshotCommand::Verify { files } => verify_all(&files),
    }
}

/// Asks a running node for a snapshot of every shard (info `snapshot`).
fn trigger_online(host: &str) -> Result<()> {
    let answer = crate::info_cmd::ask(host, &["snapshot"])?;
    match answer.first() {
        Some((_, value)) if value == "ok" => {
            println!("{host}: snapshot of every shard started");
            Ok(())
        }
        other => Err(Error::Refused(format!("{host} answered {other:?}"))),
    }
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Writes a snapshot of every shard of `data_dir`; returns what it wrote.
pub fn create(data_dir: &Path, out: Option<PathBuf>, zstd_level: i32) -> Result<Vec<SnapshotInfo>> {
    let dd = DataDir::open(data_dir)?;
    let _lock = dd.lock()?;
    let engine = Engine::open(dd.engine_config())?;
    let out = out.unwrap_or_else(|| dd.snapshot_dir());
    let options = WriteOptions {
        zstd_level,
        ..WriteOptions::default()
    };
    let map = dd.shard_map();
    // Offline nothing applies: each shard's capture is at its applied index.
    let indices: Vec<u64> = (0..map.shards())
        .map(|s| engine.applied_index(log_id(s)))
        .collect();
    let terms = terms_at(&dd, &indices)?;
    let mut written = Vec::new();
    for shard in 0..map.shards() {
        let meta = ShardMeta {
            cluster_name: dd.meta().cluster_name.clone(),
            node_id: dd.meta().node_id,
            shard_id: shard,
            log_id: log_id(shard),
            partitions: map.partitions(shard),
        };
        let capture = Capture::take(&engine, meta.log_id, &meta.partitions)?;
        if capture.index() != indices[shard as usize] {
            return Err(Error::Refused(format!(
                "shard {shard} moved while the data dir was locked"
            )));
        }
        let term = terms[shard as usize];
        let mut progress = Progress::new(&format!("shard {shard}"), capture.records(), false);
        let info = capture.write(&out, &meta, term, now_ms(), options, |n| progress.set(n))?;
        progress.finish();
        println!(
            "{}  shard {shard} index {} term {term}  {} records  {} bytes",
            info.path.display(),
            info.header.index,
            info.footer.records,
            info.file_bytes
        );
        written.push(info);
    }
    Ok(written)
}

/// The raft term of `indices[s]` of every shard `s`'s log: from the WAL (live
/// or archived, read once for all shards) when the entry is still there, else
/// from a snapshot at that very index.
fn terms_at(dd: &DataDir, indices: &[u64]) -> Result<Vec<u64>> {
    let dirs: Vec<PathBuf> = [dd.wal_dir(), dd.wal_archive_dir()]
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let wanted: Vec<(u64, u64)> = (0..indices.len() as u32)
        .map(|s| (stream_id(s), indices[s as usize].saturating_sub(1)))
        .collect();
    let logs = if dirs.is_empty() {
        Vec::new()
    } else {
        ArchivedStream::scan_many(&dirs, &wanted)?
    };
    let catalog = if dd.snapshot_dir().is_dir() {
        Catalog::list(&dd.snapshot_dir())?
    } else {
        Catalog::default()
    };
    let term_of = |shard: u32, index: u64| {
        if index == 0 {
            return Ok(0);
        }
        let from_log = logs.get(shard as usize).and_then(|log| log.term(index));
        let from_snapshot = || {
            catalog
                .entries
                .iter()
                .find(|e| e.header.shard_id == shard && e.header.index == index)
                .map(|e| e.header.term)
        };
        from_log.or_else(from_snapshot).ok_or_else(|| {
            Error::Refused(format!(
                "the term of index {index} of shard {shard} is in neither the WAL nor a snapshot"
            ))
        })
    };
    indices
        .iter()
        .enumerate()
        .map(|(shard, &index)| term_of(shard as u32, index))
        .collect()
}

fn list(dir: &Path) -> Result<()> {
    let catalog = Catalog::list(dir)?;
    println!(
        "shard  index                 term  records      bytes  created                   file"
    );
    for e in &catalog.entries {
        println!(
            "{:<5}  {:<20}  {:<4}  {:<10}  {:>9}  {}  {}",
            e.header.shard_id,
            e.header.index,
            e.header.term,
            e.records,
            e.file_bytes,
            format_ms(e.header.created_ms),
            e.path.display()
        );
    }
    for (path, reason) in &catalog.unreadable {
        println!("UNREADABLE  {}: {reason}", path.display());
    }
    Ok(())
}

/// Verifies one file with progress.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    verify_reader(&SnapshotReader::open(path)?)
}

/// Verifies an open file with progress.
pub fn verify_reader(reader: &SnapshotReader) -> Result<VerifyReport> {
    let path = reader.path();
    let mut progress = Progress::new(
        &format!("verify {}", path.display()),
        reader.footer().chunk_bytes,
        true,
    );
    let report = reader.verify(|bytes| progress.set(bytes))?;
    progress.finish();
    Ok(report)
}

fn verify_all(files: &[PathBuf]) -> Result<()> {
    let mut first_error = None;
    for path in files {
        match verify(path) {
            Ok(report) => print_report(&report),
            Err(e) => {
                println!("{}: DAMAGED: {e}", path.display());
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Ascending partitions as ranges: `0-2047,3000`.
pub fn ranges(partitions: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < partitions.len() {
        let start = partitions[i];
        let mut end = start;
        while i + 1 < partitions.len() && partitions[i + 1] == end + 1 {
            i += 1;
            end = partitions[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn print_report(r: &VerifyReport) {
    let h = &r.header;
    println!("{}: OK", r.path.display());
    println!(
        "  cluster {}  node {}  shard {}  log {}",
        h.cluster_name, h.node_id, h.shard_id, h.log_id
    );
    println!(
        "  index {}  term {}  created {}",
        h.index,
        h.term,
        format_ms(h.created_ms)
    );
    println!(
        "  partitions {} ({})",
        ranges(&h.partitions),
        h.partitions.len()
    );
    for (ns, count) in h.namespaces.iter().zip(&r.records_per_namespace) {
        println!("  namespace {}: {count} records", ns.name);
    }
    let ratio = r.footer.raw_bytes as f64 / r.footer.chunk_bytes.max(1) as f64;
    println!(
        "  {} records, {} raw bytes in {} chunks, {} bytes on disk (zstd level {}, ratio {ratio:.2})",
        r.footer.records,
        r.footer.raw_bytes,
        r.footer.chunk_offsets.len(),
        r.file_bytes,
        h.zstd_level
    );
}
