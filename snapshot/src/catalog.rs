//! The snapshots in a directory, and retention: keep the newest N per shard
//! and/or those younger than an age; never the newest of a shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format;
use crate::reader::SnapshotReader;
use crate::writer::sync_parent;

/// One snapshot file found in a directory (header and footer checked, chunks
/// not: use `verify` for that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: format::Header,
    /// Records it holds.
    pub records: u64,
    /// Size of the file.
    pub file_bytes: u64,
}

/// What listing a directory found.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Readable snapshots by (shard, index), oldest first.
    pub entries: Vec<CatalogEntry>,
    /// Files named like snapshots that failed to open, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Catalog {
    /// Lists `dir` (`.snap.tmp` and `.snap.partial` files are not snapshots).
    pub fn list(dir: &Path) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        for item in std::fs::read_dir(dir).at(dir)? {
            let path = item.at(dir)?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().and_then(format::parse_file_name).is_none() {
                continue;
            }
            match SnapshotReader::open(&path) {
                Ok(reader) => catalog.entries.push(CatalogEntry {
                    header: reader.header().clone(),
                    records: reader.footer().records,
                    file_bytes: reader.file_bytes(),
                    path,
                }),
                Err(e) => catalog.unreadable.push((path, e.to_string())),
            }
        }
        catalog
            .entries
            .sort_by_key(|e| (e.header.shard_id, e.header.index, e.header.created_ms));
        Ok(catalog)
    }

    /// Per shard, its snapshots oldest first.
    pub fn by_shard(&self) -> BTreeMap<u32, Vec<&CatalogEntry>> {
        let mut shards: BTreeMap<u32, Vec<&CatalogEntry>> = BTreeMap::new();
        for entry in &self.entries {
            shards.entry(entry.header.shard_id).or_default().push(entry);
        }
        shards
    }
}

/// Which snapshots to keep. A snapshot is kept if any set rule keeps it; with
/// no rule set, everything is kept. The newest of each shard is always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many per shard.
    pub keep_newest: Option<usize>,
    /// Keep those created less than this long ago.
    pub keep_younger_than_ms: Option<u64>,
}

impl Retention {
    fn keeps(&self, rank_from_newest: usize, entry: &CatalogEntry, now_ms: u64) -> bool {
        if rank_from_newest == 0
            || (self.keep_newest.is_none() && self.keep_younger_than_ms.is_none())
        {
            return true;
        }
        let by_count = self.keep_newest.is_some_and(|n| rank_from_newest < n);
        let by_age = self
            .keep_younger_than_ms
            .is_some_and(|age| now_ms.saturating_sub(entry.header.created_ms) < age);
        by_count || by_age
    }
}

/// Deletes the snapshots of `dir` that `retention` does not keep; returns
/// them. Unreadable files are left alone (a person should look at them).
pub fn apply_retention(dir: &Path, retention: Retention, now_ms: u64) -> Result<Vec<PathBuf>> {
    let catalog = Catalog::list(dir)?;
    let mut deleted = Vec::new();
    for entries in catalog.by_shard().values() {
        for (rank, entry) in entries.iter().rev().enumerate() {
            if !retention.keeps(rank, entry, now_ms) {
                std::fs::remove_file(&entry.path).at(&entry.path)?;
                deleted.push(entry.path.clone());
            }
        }
    }
    if !deleted.is_empty() {
        sync_parent(&dir.join("x"))?;
    }
    Ok(deleted)
}
