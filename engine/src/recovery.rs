//! Opening a namespace after a clean or unclean stop.
//!
//! The state to rebuild is exactly the one of the last checkpoint: the blocks
//! its manifest lists, cut to their durable lengths. Everything written after
//! it (block tails, newer block files) is deleted first, so a version from a
//! log entry the WAL will replay can never resurface later. Then the index
//! comes from `index.ckpt` when it belongs to that checkpoint (fast start), or
//! from a scan of the listed blocks (cold start).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::blocks::{BlockStore, read_block_file};
use crate::checkpoint::{self, NsManifest};
use crate::config::{NamespaceConfig, ReadMode};
use crate::error::{Error, IoContext, Result};
use crate::format::{self, BLOCK_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::fs::{EngineFs, OpenFor};
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
    /// Every problem met: corruption (file and offset) or a fallback reason.
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
        if let Err(e) = blocks.open_sealed(*id, *durable_len) {
            report.problems.push(e.to_string());
            tracing::error!(error = %e, "a block of the last checkpoint cannot be opened");
        }
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
            cold_scan(&**fs, &mut ns, manifest, &mut report);
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
/// parts of the listed blocks.
fn cold_scan(fs: &dyn EngineFs, ns: &mut NsState, manifest: &NsManifest, report: &mut NsRecovery) {
    let mut best: HashMap<Digest, Candidate> = HashMap::new();
    for (block_id, durable_len) in &manifest.blocks {
        let path = ns.blocks.path_of(*block_id);
        if !ns.blocks.blocks().contains_key(block_id) {
            continue; // could not be opened; already reported
        }
        let Some(data) = read_durable_part(fs, &path, *durable_len, report) else {
            continue;
        };
        report.bytes_scanned += data.len() as u64;
        if let Err(e) = format::check_block_header(&data, *block_id, &path) {
            report.problems.push(e.to_string());
            tracing::error!(error = %e, "skipping a block with a bad header");
            continue;
        }
        scan_block(ns, *block_id, &data, &path, &mut best, report);
    }
    for (_, candidate) in best {
        ns.index.insert(candidate.entry);
    }
}

/// A block's bytes up to its durable length; a short file still holds
/// records up to where it ends.
fn read_durable_part(
    fs: &dyn EngineFs,
    path: &Path,
    durable_len: u32,
    report: &mut NsRecovery,
) -> Option<Vec<u8>> {
    let file = fs.open(path, OpenFor::Read).at(path).ok()?;
    match read_block_file(path, &*file, durable_len) {
        Ok(d) => Some(d),
        Err(e) => {
            report.problems.push(e.to_string());
            tracing::error!(error = %e, "block shorter than its durable length");
            let len = file.len_bytes().ok()?.min(u64::from(durable_len));
            read_block_file(path, &*file, len as u32).ok()
        }
    }
}

fn scan_block(
    ns: &mut NsState,
    block_id: u32,
    data: &[u8],
    path: &Path,
    best: &mut HashMap<Digest, Candidate>,
    report: &mut NsRecovery,
) {
    let mut offset = BLOCK_HEADER_BYTES;
    while offset < data.len() {
        let rest = &data[offset..];
        let decoded = format::version_len(rest)
            .ok_or_else(|| Error::corruption(path, offset as u64, "bad record length"))
            .and_then(|len| {
                format::decode_version(&rest[..len], path, offset as u64).map(|v| (len, v))
            });
        let (len, (h, body)) = match decoded {
            Ok(v) => v,
            Err(e) => {
                // Without a trustworthy length the rest of the block is lost.
                report.problems.push(e.to_string());
                tracing::error!(error = %e, "corrupt record; the rest of the block is skipped");
                return;
            }
        };
        report.versions_scanned += 1;
        let set = body.as_ref().map_or("", |r| r.set.as_str());
        let hidden = ns
            .installs
            .get(&partition_of(&h.digest))
            .is_some_and(|s| h.seq < *s)
            || ns
                .truncates
                .iter()
                .any(|t| t.hides(set, h.last_update_ms, h.seq));
        let newer = best.get(&h.digest).is_none_or(|c| c.seq < h.seq);
        if !hidden && newer {
            let set_id = match ns.sets.id_for(set) {
                Ok(id) => id,
                Err(e) => {
                    report.problems.push(e.to_string());
                    0
                }
            };
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
}
