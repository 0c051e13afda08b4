//! Engine and namespace settings.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format;
use crate::fs::{EngineFs, StdFs};

/// How sealed blocks that are no longer cached are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// One `pread` per record (the default; see the crate docs for the figures).
    #[default]
    Pread,
    /// Map sealed blocks with `mmap` and copy the record out.
    Mmap,
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Engine directory: `<dir>/MANIFEST` and `<dir>/<namespace>/`.
    pub dir: PathBuf,
    /// Namespaces.
    pub namespaces: Vec<NamespaceConfig>,
    /// Read path for sealed, uncached blocks.
    pub read_mode: ReadMode,
    /// `tick` writes a checkpoint when this long has passed since the last one
    /// (0 = only explicit `checkpoint` calls).
    pub checkpoint_interval_ms: u64,
    /// Every block, `index.ckpt` and `MANIFEST` file operation goes through
    /// this ([`StdFs`] by default; tests put a [`crate::fault::FaultyFs`] here).
    pub fs: Arc<dyn EngineFs>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dir: PathBuf::from("engine"),
            namespaces: vec![NamespaceConfig::default()],
            read_mode: ReadMode::Pread,
            checkpoint_interval_ms: 60_000,
            fs: Arc::new(StdFs),
        }
    }
}

/// Aerospike's default `max-record-size`.
pub const DEFAULT_MAX_RECORD_SIZE_BYTES: u32 = 1 << 20;

/// One namespace's settings (serde: the node's config file and the cluster
/// metadata use them; missing fields take the defaults).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Name (1..=31 bytes, no `/`, not `.` or `..`).
    pub name: String,
    /// Disk budget: write blocks beyond it are refused (stop-writes).
    pub size_limit_bytes: u64,
    /// TTL for writes with `Ttl::NamespaceDefault` (0 = never expire).
    pub default_ttl_secs: u32,
    /// Writes fail with stop-writes once block use passes this share of
    /// `size_limit_bytes`.
    pub stop_writes_used_pct: u8,
    /// Writes fail with stop-writes once the index uses this much RAM (0 = no
    /// limit).
    pub memory_limit_bytes: u64,
    /// Size of one write block (segment file).
    pub write_block_size_bytes: u32,
    /// Largest record, as stored (its encoded version: header, set, key and
    /// bins); a write whose result would be larger is refused with
    /// RECORD_TOO_BIG (13). At most `write_block_size_bytes`; the default
    /// (Aerospike's 1 MiB) is lowered to the block size when blocks are
    /// smaller.
    pub max_record_size_bytes: u32,
    /// `tick` writes the current block's new bytes to its file when they are
    /// this old (not an fsync: durability comes from checkpoints).
    pub flush_interval_ms: u64,
    /// A sealed block whose live bytes fall below this share of the block size
    /// is defragmented.
    pub defrag_lwm_pct: u8,
    /// Sealed blocks kept in RAM after they are written, for reads.
    pub post_write_cache_blocks: usize,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            name: "test".to_string(),
            size_limit_bytes: 16 << 30,
            default_ttl_secs: 0,
            stop_writes_used_pct: 70,
            memory_limit_bytes: 0,
            write_block_size_bytes: 8 << 20,
            max_record_size_bytes: DEFAULT_MAX_RECORD_SIZE_BYTES,
            flush_interval_ms: 1_000,
            defrag_lwm_pct: 50,
            post_write_cache_blocks: 8,
        }
    }
}

impl NamespaceConfig {
    /// A namespace with default settings.
    pub fn named(name: &str) -> NamespaceConfig {
        NamespaceConfig {
            name: name.to_string(),
            ..NamespaceConfig::default()
        }
    }

    /// The largest record this namespace stores, bytes.
    pub fn record_size_limit_bytes(&self) -> u32 {
        self.max_record_size_bytes.min(self.write_block_size_bytes)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > format::MAX_NAMESPACE_NAME_BYTES
            || name.contains(['/', '\0'])
            || name == "."
            || name == ".."
        {
            return Err(Error::Config(format!("bad namespace name {name:?}")));
        }
        let block = self.write_block_size_bytes as usize;
        if !(format::MIN_WRITE_BLOCK_BYTES..=format::MAX_WRITE_BLOCK_BYTES).contains(&block) {
            return Err(Error::Config(format!(
                "{name}: write_block_size_bytes {block} outside {}..={}",
                format::MIN_WRITE_BLOCK_BYTES,
                format::MAX_WRITE_BLOCK_BYTES
            )));
        }
        if self.max_record_size_bytes == 0
            || (self.max_record_size_bytes > self.write_block_size_bytes
                && self.max_record_size_bytes != DEFAULT_MAX_RECORD_SIZE_BYTES)
        {
            return Err(Error::Config(format!(
                "{name}: max_record_size_bytes {} must be 1..=write_block_size_bytes ({block})",
                self.max_record_size_bytes
            )));
        }
        if self.stop_writes_used_pct == 0 || self.stop_writes_used_pct > 100 {
            return Err(Error::Config(format!(
                "{name}: stop_writes_used_pct must be 1..=100"
            )));
        }
        if self.defrag_lwm_pct > 99 {
            return Err(Error::Config(format!(
                "{name}: defrag_lwm_pct must be 0..=99"
            )));
        }
        Ok(())
    }
}

impl EngineConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for ns in &self.namespaces {
            ns.validate()?;
            if !names.insert(ns.name.as_str()) {
                return Err(Error::Config(format!(
                    "namespace {} configured twice",
                    ns.name
                )));
            }
        }
        Ok(())
    }
}
