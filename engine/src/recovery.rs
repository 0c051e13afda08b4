//! Opening a namespace after a clean or unclean stop.
//!
//! The state to rebuild is exactly the one of the last checkpoint: the blocks
//! its manifest lists, cut to their durable lengths. Everything written after
//! it (block tails, newer block files) is deleted first, so a version from a
//! log entry the WAL will replay can never resurface later. Then the index
//! comes from `index.ckpt` when it belongs to that checkpoint (fast start), or
//! from a scan of the listed blocks (cold start).
//!
//! Damage inside the durable part of a listed block is never skipped: those
//! bytes were fsynced before the manifest that lists them, the WAL will not
//! replay what they hold, and a skipped tombstone would bring a deleted record
//! back. A missing or short block file, a bad block header, or (on a cold
//! start) any record that fails its checks fails the open with
//! [`Error::Corruption`] naming the file and offset.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::blocks::BlockStore;
use crate::checkpoint::{self, NsManifest};
use crate::config::{NamespaceConfig, ReadMode};
use crate::error::{Error, IoContext, Result};
use crate::format::{self, BLOCK_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::fs::EngineFs;
use crate::index::{Entry, Index};
use crate::namespace::{NsState, SetTable};
use crate::types::{Digest, partition_of};

/// How a namespace came back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsRecovery {
    /// True if the index was rebuilt by scanning blocks.
    pub cold_start: bool,
    /// Record versions scanned (cold start).
    pub versions_scanned: u64,
    /// Bytes of blocks scanned (cold start).
    pub bytes_scanned: u64,
    /// Why `index.ckpt` could not be used, if it could not (damage in a
    /// block fails the open instead).
    pub problems: Vec<String>,
}

/// Opens one namespace as of `manifest` (`None`: nothing durable yet).
pub fn open_namespace(
    fs: &Arc<dyn EngineFs>,
    cfg: &NamespaceConfig,
    dir: &Path,
    manifest: Option<&NsManifest>,
    checkpoint_seq: u64,
    read_mode: ReadMode,
) -> Result<(NsState, NsRecovery)> {
    fs.create_dir_all(dir).at(dir)?;
    let empty = NsManifest::default();
    let manifest = manifest.unwrap_or(&empty);
    remove_undurable_files(&**fs, dir, manifest)?;
    let mut report = NsRecovery::default();
    let mut blocks = BlockStore::new(
        fs.clone(),
        dir,
        cfg.write_block_size_bytes,
        cfg.post_write_cache_blocks,
        read_mode,
        manifest.next_block_id,
    );
    for (id, durable_len) in &manifest.blocks {
        blocks.open_sealed(*id, *durable_len)?;
    }
    let mut ns = NsState::new(cfg.clone(), dir.to_path_buf(), blocks);
    ns.truncates = manifest.truncates.clone();
    ns.installs = manifest.installs.clone();
    let index_path = dir.join(format::INDEX_FILE);
    match load_index(&**fs, &index_path, manifest, checkpoint_seq) {
        Ok((index, sets, max_lut_ms)) => {
            ns.index = index;
            ns.sets = sets;
            ns.max_lut_ms = max_lut_ms;
        }
        Err(e) => {
            tracing::warn!(path = %index_path.display(), reason = %e,
                "index checkpoint unusable; cold start (scanning all blocks)");
            report
                .problems
                .push(format!("index checkpoint unusable: {e}"));
            report.cold_start = true;
            cold_scan(&mut ns, manifest, &mut report)?;
        }
    }
    let live: Vec<(u32, u32)> = ns.index.iter().map(|e| (e.block_id, e.len_bytes)).collect();
    for (block_id, len) in live {
        ns.blocks.add_live(block_id, len);
    }
    ns.blocks.mark_empty_blocks_freeing();
    ns.refresh_index_bytes();
    Ok((ns, report))
}

/// Deletes temp files and block files the manifest does not list.
fn remove_undurable_files(fs: &dyn EngineFs, dir: &Path, manifest: &NsManifest) -> Result<()> {
    let listed: std::collections::BTreeSet<u32> =
        manifest.blocks.iter().map(|(id, _)| *id).collect();
    let mut removed = 0usize;
    for name in fs.list(dir).at(dir)? {
        let path = dir.join(&name);
        let stale_block =
            format::parse_block_file_name(&name).is_some_and(|id| !listed.contains(&id));
        if stale_block || name.ends_with(format::TMP_SUFFIX) {
            fs.remove(&path).at(&path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed files written after the last checkpoint");
        checkpoint::sync_dir(fs, dir)?;
    }
    Ok(())
}

/// Fast start: loads `index.ckpt` if it belongs to this checkpoint and every
/// entry points inside a durable block.
fn load_index(
    fs: &dyn EngineFs,
    path: &Path,
    manifest: &NsManifest,
    checkpoint_seq: u64,
) -> Result<(Index, SetTable, u64)> {
    let durable: HashMap<u32, u32> = manifest.blocks.iter().copied().collect();
    let mut index = Index::new();
    let mut entry_no = 0u64;
    let header = checkpoint::read_index(fs, path, |e| {
        let fits = durable.get(&e.block_id).is_some_and(|len| {
            e.offset as usize >= BLOCK_HEADER_BYTES
                && e.len_bytes as usize >= RECORD_HEADER_BYTES
                && u64::from(e.offset) + u64::from(e.len_bytes) <= u64::from(*len)
        });
        if !fits {
            let reason = format!("entry {entry_no} points outside the durable blocks");
            return Err(Error::corruption(path, 0, reason));
        }
        entry_no += 1;
        index.insert(e);
        Ok(())
    })?;
    if header.checkpoint_seq != checkpoint_seq {
        let reason = format!(
            "index is from checkpoint {}, the manifest from {checkpoint_seq}",
            header.checkpoint_seq
        );
        return Err(Error::corruption(path, 12, reason));
    }
    if let Some(bad) = index
        .iter()
        .find(|e| usize::from(e.set_id) >= header.sets.len())
    {
        return Err(Error::corruption(
            path,
            0,
            format!("entry with unknown set id {}", bad.set_id),
        ));
    }
    Ok((index, SetTable::from_names(header.sets), header.max_lut_ms))
}

struct Candidate {
    seq: u64,
    entry: Entry,
}

/// Cold start: the newest visible version of each digest across the durable
/// parts of the listed blocks. Any version that fails its checks fails the
/// scan: without it the index could miss a record or a tombstone.
fn cold_scan(ns: &mut NsState, manifest: &NsManifest, report: &mut NsRecovery) -> Result<()> {
    let mut best: HashMap<Digest, Candidate> = HashMap::new();
    for (block_id, _) in &manifest.blocks {
        let data = ns.blocks.read_block(*block_id)?;
        report.bytes_scanned += data.len() as u64;
        let path = ns.blocks.path_of(*block_id);
        format::check_block_header(&data, *block_id, &path)?;
        scan_block(ns, *block_id, &data, &path, &mut best, report)?;
    }
    for (_, candidate) in best {
        ns.index.insert(candidate.entry);
    }
    Ok(())
}

fn scan_block(
    ns: &mut NsState,
    block_id: u32,
    data: &[u8],
    path: &Path,
    best: &mut HashMap<Digest, Candidate>,
    report: &mut NsRecovery,
) -> Result<()> {
    let mut offset = BLOCK_HEADER_BYTES;
    while offset < data.len() {
        let rest = &data[offset..];
        let len = format::version_len(rest)
            .ok_or_else(|| Error::corruption(path, offset as u64, "bad record length"))?;
        let (h, body) = format::decode_version(&rest[..len], path, offset as u64)?;
        report.versions_scanned += 1;
        let set = body.as_ref().map_or("", |r| r.set.as_str());
        let hidden = ns
            .installs
            .get(&partition_of(&h.digest))
            .is_some_and(|s| h.seq < *s)
            || ns.truncates.iter().any(|t| t.hides(&h, set));
        let newer = best.get(&h.digest).is_none_or(|c| c.seq < h.seq);
        if !hidden && newer {
            // The running engine never held more sets than the table takes,
            // so a full table means the blocks are not what it wrote.
            let set_id = ns
                .sets
                .id_for(set)
                .map_err(|e| Error::corruption(path, offset as u64, e.to_string()))?;
            ns.max_lut_ms = ns.max_lut_ms.max(h.last_update_ms);
            let entry = Entry {
                digest: h.digest,
                block_id,
                offset: offset as u32,
                len_bytes: len as u32,
                void_time: h.void_time,
                generation: h.generation,
                set_id,
            };
            best.insert(h.digest, Candidate { seq: h.seq, entry });
        }
        offset += len;
    }
    Ok(())
}
