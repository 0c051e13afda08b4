//! A node's data directory and the cluster metadata in it.
//!
//! ```text
//! <data-dir>/
//!   cluster.toml   cluster name and id, node id, shard count, namespaces (written
//!                  last when a directory is made: without it the directory is
//!                  not a usable data dir)
//!   wal/           the write-ahead log
//!   wal-archive/   WAL segments no shard needs any more (the PITR source)
//!   engine/        the record store
//!   snapshots/     snapshot files of this node's shards
//!   raft/          one meta file per shard (compaction point, membership),
//!                  the cluster group's meta file and its state
//!                  (`cluster.state`: the members and their addresses)
//!   LOCK           locked (flock) by the node or tool using the directory
//!   RETIRED        only in a directory whose node the cluster retired: the
//!                  members' fabric addresses, one per line; the next start
//!                  empties the directory and joins through them as a new
//!                  member
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use aerie_engine::{EngineConfig, NamespaceConfig};
use aerie_replication::shards::ShardMap;
use serde::{Deserialize, Serialize};

/// File holding the cluster metadata.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// File locked by whoever uses the directory.
pub const LOCK_FILE: &str = "LOCK";
/// The marker of a directory whose node the cluster retired.
pub const RETIRED_FILE: &str = "RETIRED";
/// What a retired directory's next start removes (`cluster.toml` first: a
/// start cut short then finds no data dir, only the marker).
const RETIRED_CONTENTS: [&str; 6] = [
    CLUSTER_FILE,
    "wal",
    "wal-archive",
    "engine",
    "snapshots",
    "raft",
];

/// What every node of a cluster and every snapshot of it agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMeta {
    /// Cluster name (at most 63 bytes).
    pub cluster_name: String,
    /// This node's id (non-zero, never reused: picked at random when the
    /// directory is made unless the config seeded it).
    pub node_id: u64,
    /// The cluster's id (picked at random when a cluster is formed; a node
    /// refuses peers of another cluster). 0 in directories made before
    /// clusters existed.
    #[serde(default)]
    pub cluster_id: u64,
    /// Number of shards the 4096 partitions are split into.
    pub shards: u32,
    /// 0 for a node that formed its cluster (or was restored); else the
    /// random number of the start that joined with this new directory
    /// (`JoinRequest::incarnation`), which it joins again with.
    #[serde(default)]
    pub incarnation: u64,
    /// Namespaces and their settings.
    pub namespaces: Vec<NamespaceConfig>,
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The metadata is malformed or inconsistent.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An opened data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    meta: ClusterMeta,
    shard_map: ShardMap,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically and durably: a temp file beside
/// it, fsync, rename, directory fsync.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A random non-zero id (node and cluster ids: never reused, so nobody has
/// to pick them).
pub fn random_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

impl ClusterMeta {
    fn validate(&self) -> Result<ShardMap, String> {
        if self.cluster_name.is_empty() || self.cluster_name.len() > 63 {
            return Err("cluster_name must be 1..=63 bytes".into());
        }
        if self.node_id == 0 {
            return Err("node_id must not be 0".into());
        }
        if self.namespaces.is_empty() {
            return Err("at least one namespace is needed".into());
        }
        ShardMap::new(self.shards)
    }
}

impl DataDir {
    /// Opens an existing data directory (reads and checks `cluster.toml`).
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let path = root.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let invalid = |reason: String| DataDirError::Invalid {
            path: path.clone(),
            reason,
        };
        let meta: ClusterMeta = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let shard_map = meta.validate().map_err(invalid)?;
        Ok(DataDir {
            root: root.to_path_buf(),
            meta,
            shard_map,
        })
    }

    /// Writes `cluster.toml` into `root` (temp file, fsync, rename, directory
    /// fsync): the step that makes a directory a data dir.
    pub fn create(root: &Path, meta: ClusterMeta) -> Result<DataDir, DataDirError> {
        let path = root.join(CLUSTER_FILE);
        let shard_map = meta.validate().map_err(|reason| DataDirError::Invalid {
            path: path.clone(),
            reason,
        })?;
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let text = toml::to_string_pretty(&meta).map_err(|e| DataDirError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, text.as_bytes())?;
        Ok(DataDir {
            root: root.to_path_buf(),
            meta,
            shard_map,
        })
    }

    /// Takes the directory's lock (`LOCK`, an exclusive `flock`) for as long
    /// as the returned file lives: a node and the offline tools never share
    /// a data directory.
    pub fn lock(&self) -> Result<std::fs::File, DataDirError> {
        let path = self.root.join(LOCK_FILE);
        let file = std::fs::File::create(&path).map_err(io_err(&path))?;
        file.try_lock().map_err(|e| DataDirError::Invalid {
            path: path.clone(),
            reason: format!("the data directory is in use by another process ({e})"),
        })?;
        Ok(file)
    }

    /// The metadata.
    pub fn meta(&self) -> &ClusterMeta {
        &self.meta
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The partition-to-shard map (validated at open).
    pub fn shard_map(&self) -> ShardMap {
        self.shard_map
    }

    /// `wal/`.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// `wal-archive/`.
    pub fn wal_archive_dir(&self) -> PathBuf {
        self.root.join("wal-archive")
    }

    /// `engine/`.
    pub fn engine_dir(&self) -> PathBuf {
        self.root.join("engine")
    }

    /// `snapshots/`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Engine settings for this directory's namespaces.
    pub fn engine_config(&self) -> EngineConfig {
        engine_config(&self.root.join("engine"), &self.meta.namespaces)
    }
}

/// Marks `root` as retired by its cluster, naming `seeds` to join again
/// through.
pub fn mark_retired(root: &Path, seeds: &[std::net::SocketAddr]) -> Result<(), DataDirError> {
    let text: String = seeds.iter().map(|s| format!("{s}\n")).collect();
    write_atomically(&root.join(RETIRED_FILE), text.as_bytes())
}

/// If `root` is marked retired: empties it (all but the marker) and
/// returns the seeds the marker names; `None` when it is not marked.
pub fn clear_retired(root: &Path) -> Result<Option<Vec<String>>, DataDirError> {
    let marker = root.join(RETIRED_FILE);
    let text = match std::fs::read_to_string(&marker) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&marker)(e)),
    };
    for name in RETIRED_CONTENTS {
        let path = root.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
            _ => {}
        }
    }
    Ok(Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// Removes the retired marker once the directory belongs to a new member.
pub fn forget_retired(root: &Path) -> Result<(), DataDirError> {
    let marker = root.join(RETIRED_FILE);
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&marker)(e)),
        _ => Ok(()),
    }
}

/// Engine settings for `dir` and `namespaces`, the rest at their defaults.
pub fn engine_config(dir: &Path, namespaces: &[NamespaceConfig]) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: namespaces.to_vec(),
        ..EngineConfig::default()
    }
}
