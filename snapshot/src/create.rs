//! Taking a snapshot of a shard from the engine: capture views (quick, under
//! the engine's locks), then write them out (slow, no lock held).

use std::path::Path;

use aerie_engine::{Engine, NamespaceConfig, View};

use crate::error::{Error, Result};
use crate::format::Header;
use crate::writer::{SnapshotInfo, SnapshotWriter, WriteOptions};

/// Who takes the snapshot and of what: everything in the header the engine
/// does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    /// Cluster name.
    pub cluster_name: String,
    /// This node.
    pub node_id: u64,
    /// The shard.
    pub shard_id: u32,
    /// The engine log the shard applies through.
    pub log_id: u64,
    /// The shard's partitions, ascending.
    pub partitions: Vec<u16>,
}

/// Views of every namespace of the shard's partitions, all at one applied
/// index of the shard's log. Holding it pins the blocks the views read.
#[derive(Debug)]
pub struct Capture {
    index: u64,
    views: Vec<View>,
    namespaces: Vec<NamespaceConfig>,
}

impl Capture {
    /// Takes views of `partitions` in every namespace, consistent at one applied
    /// index of `log_id` (the engine takes them under all namespace locks).
    /// Costs a copy of the partitions' index entries.
    pub fn take(engine: &Engine, log_id: u64, partitions: &[u16]) -> Result<Capture> {
        let namespaces = engine.config().namespaces.clone();
        let views = engine.views_of_every_namespace(partitions)?;
        let index = views
            .first()
            .and_then(|v| v.applied_indices().get(&log_id).copied())
            .unwrap_or(0);
        Ok(Capture {
            index,
            views,
            namespaces,
        })
    }

    /// The applied index the views are consistent at.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Records in the views.
    pub fn records(&self) -> u64 {
        self.views.iter().map(|v| v.len() as u64).sum()
    }

    /// Writes the snapshot file into `dir`. `term` is the raft term of
    /// [`Capture::index`]; `progress` gets the records written so far.
    pub fn write(
        self,
        dir: &Path,
        meta: &ShardMeta,
        term: u64,
        created_ms: u64,
        options: WriteOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<SnapshotInfo> {
        let header = Header {
            cluster_name: meta.cluster_name.clone(),
            node_id: meta.node_id,
            shard_id: meta.shard_id,
            log_id: meta.log_id,
            index: self.index,
            term,
            created_ms,
            partitions: meta.partitions.clone(),
            namespaces: self.namespaces,
            zstd_level: options.zstd_level,
        };
        let mut writer = SnapshotWriter::create(dir, header, options)?;
        let mut written = 0u64;
        for (position, view) in self.views.iter().enumerate() {
            view.for_each_image(|digest, image| {
                writer.push_image(position as u16, digest, image)?;
                written += 1;
                if written.is_multiple_of(4096) {
                    progress(written);
                }
                Ok::<(), Error>(())
            })?;
        }
        progress(written);
        writer.finish()
    }
}
