//! The disk watcher: refuses writes (Aerospike's out-of-space, code 8)
//! *before* a file system the node writes to is full, and lets them through
//! again once space is back. Like Aerospike's `min-avail-pct`, plus the room
//! the node needs to go on working on a full disk: the WAL's next segment,
//! the engine's write blocks (flushes, defrag, durable deletes) and one index
//! checkpoint. Deletes and truncates still go through, so an operator can
//! make room.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aerie_engine::Engine;
use aerie_replication::health::Gate;

/// WAL segments kept free: the next one the active segment rolls over to.
const WAL_SEGMENTS_RESERVED: u64 = 1;
/// Engine write blocks kept free: the next one to fill, and one for defrag.
const ENGINE_BLOCKS_RESERVED: u64 = 2;

/// One watched directory and the room its components need.
#[derive(Debug, Clone)]
pub struct Watched {
    /// A directory on the file system.
    pub dir: PathBuf,
    /// Bytes to keep free there beyond `min_avail_pct`.
    pub reserve_bytes: u64,
}

/// What the watcher checks.
#[derive(Debug, Clone)]
pub struct DiskPolicy {
    /// Refuse writes once free space is below this share of a file system.
    pub min_avail_pct: u8,
    /// How often free space is read.
    pub check_interval_ms: u64,
}

/// The directories to watch: the WAL's and the engine's, merged when they
/// share a file system (their reserves add up).
pub fn watched(
    wal_dir: &Path,
    wal_segment_bytes: u64,
    engine: &Engine,
    engine_dir: &Path,
) -> Vec<Watched> {
    let block_bytes = engine
        .config()
        .namespaces
        .iter()
        .map(|n| u64::from(n.write_block_size_bytes))
        .max()
        .unwrap_or(0);
    let wal = Watched {
        dir: wal_dir.to_path_buf(),
        reserve_bytes: WAL_SEGMENTS_RESERVED * wal_segment_bytes,
    };
    let engine = Watched {
        dir: engine_dir.to_path_buf(),
        reserve_bytes: ENGINE_BLOCKS_RESERVED * block_bytes,
    };
    if same_file_system(&wal.dir, &engine.dir) {
        return vec![Watched {
            dir: wal.dir,
            reserve_bytes: wal.reserve_bytes + engine.reserve_bytes,
        }];
    }
    vec![wal, engine]
}

fn same_file_system(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// Why writes must wait for space, if they must: the first watched file
/// system whose free space is below `min_avail_pct` of its size plus its
/// reserve (and the index checkpoint's size, which every checkpoint writes
/// anew before it replaces the old one).
pub fn shortage(policy: &DiskPolicy, dirs: &[Watched], checkpoint_bytes: u64) -> Option<String> {
    for watched in dirs {
        let stats = match fs4::statvfs(&watched.dir) {
            Ok(stats) => stats,
            Err(e) => {
                return Some(format!(
                    "cannot read free space of {}: {e}",
                    watched.dir.display()
                ));
            }
        };
        let floor = stats.total_space() / 100 * u64::from(policy.min_avail_pct);
        let needed = floor + watched.reserve_bytes + checkpoint_bytes;
        if stats.available_space() < needed {
            return Some(format!(
                "{}: {} bytes free of {}, below the {} kept free ({}% plus room for the WAL, \
                 write blocks and a checkpoint)",
                watched.dir.display(),
                stats.available_space(),
                stats.total_space(),
                needed,
                policy.min_avail_pct
            ));
        }
    }
    None
}

/// Checks free space every `check_interval_ms` until `stop` is dropped or
/// set, telling the gate; logs each change.
pub fn spawn_watcher(
    policy: DiskPolicy,
    dirs: Vec<Watched>,
    engine: Arc<Engine>,
    gate: Arc<Gate>,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let interval = Duration::from_millis(policy.check_interval_ms.max(10));
    std::thread::Builder::new()
        .name("disk-watcher".into())
        .spawn(move || {
            let mut refused = false;
            loop {
                let checkpoint_bytes = engine.index_bytes();
                let shortage = shortage(&policy, &dirs, checkpoint_bytes);
                match (&shortage, refused) {
                    (Some(why), false) => tracing::warn!(reason = %why, "disk nearly full: writes refused (out of space, code 8); reads and deletes go on"),
                    (None, true) => tracing::info!("disk space is back: writes accepted again"),
                    _ => {}
                }
                refused = shortage.is_some();
                gate.set_disk_full(shortage);
                match stop.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
}
