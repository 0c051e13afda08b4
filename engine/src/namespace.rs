//! One namespace's state: its index, set table, blocks and markers, and the
//! operations on them. The engine wraps each in a `RwLock`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blocks::{BlockState, BlockStore};
use crate::checkpoint::{self, TruncateMarker};
use crate::config::NamespaceConfig;
use crate::error::{Error, Result};
use crate::format::{self, BLOCK_HEADER_BYTES, KIND_LIVE, KIND_TOMBSTONE, VersionHeader};
use crate::index::{Entry, Index};
use crate::semantics::{self, Effect};
use crate::types::{
    BinSelection, Command, Digest, Op, Outcome, PARTITION_COUNT, Record, RecordView, is_expired,
};

/// Who is writing: the log entry being applied and its clock.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Log id (0 is used by the engine's own tombstones for expired records).
    pub log_id: u64,
    /// Log index.
    pub index: u64,
    /// The command's clock, Unix ms.
    pub now_ms: u64,
}

/// Set names ↔ compact ids (0 = no set).
#[derive(Debug, Clone)]
pub struct SetTable {
    names: Vec<String>,
    ids: HashMap<String, u16>,
}

impl SetTable {
    /// A table with only the empty set.
    pub fn new() -> Self {
        SetTable {
            names: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
        }
    }

    /// A table from a checkpoint (position = id).
    pub fn from_names(names: Vec<String>) -> Self {
        let mut table = SetTable::new();
        table.names.clear();
        table.ids.clear();
        for (i, name) in names.into_iter().enumerate() {
            table.ids.insert(name.clone(), i as u16);
            table.names.push(name);
        }
        if table.names.is_empty() {
            return SetTable::new();
        }
        table
    }

    /// The id of a set, adding it if new.
    pub fn id_for(&mut self, name: &str) -> Result<u16> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        if self.names.len() > format::MAX_SETS_PER_NAMESPACE {
            return Err(Error::Parameter(format!(
                "more than {} sets in the namespace",
                format::MAX_SETS_PER_NAMESPACE
            )));
        }
        let id = self.names.len() as u16;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Existing id of a set.
    pub fn get(&self, name: &str) -> Option<u16> {
        self.ids.get(name).copied()
    }

    /// Names by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Progress counters (cumulative since open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Record versions copied by defrag.
    pub defrag_records_moved: u64,
    /// Bytes copied by defrag.
    pub defrag_bytes_moved: u64,
    /// Tombstones dropped by defrag.
    pub defrag_tombstones_dropped: u64,
    /// Blocks defrag finished with.
    pub defrag_blocks_done: u64,
    /// Expired records reclaimed.
    pub expired_reclaimed: u64,
    /// Records removed by truncation.
    pub truncated: u64,
}

/// Result of one `defrag_step`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragProgress {
    /// Bytes of record versions examined.
    pub bytes_examined: u64,
    /// Bytes copied to the current block.
    pub bytes_moved: u64,
    /// Blocks fully processed (they are freed at the next checkpoint).
    pub blocks_done: u64,
}

#[derive(Debug)]
struct DefragCursor {
    block_id: u32,
    data: Arc<Vec<u8>>,
    offset: usize,
}

/// One namespace.
#[derive(Debug)]
pub struct NsState {
    /// Settings.
    pub cfg: NamespaceConfig,
    /// `<engine dir>/<name>`.
    pub dir: PathBuf,
    /// Primary index.
    pub index: Index,
    /// Set names.
    pub sets: SetTable,
    /// Write blocks.
    pub blocks: BlockStore,
    /// Truncations (kept for cold starts).
    pub truncates: Vec<TruncateMarker>,
    /// Partition installs (kept for cold starts).
    pub installs: BTreeMap<u16, u64>,
    /// Partitions an install in progress will replace: expiry reclaim
    /// leaves them alone (see `install.rs`).
    pub installing: BTreeSet<u16>,
    /// Newest last-update time of any version written.
    pub max_lut_ms: u64,
    /// Counters.
    pub counters: Counters,
    /// Index RAM as of the last refresh (refreshed every few thousand writes).
    pub index_bytes: u64,
    writes_since_refresh: u32,
    defrag: Option<DefragCursor>,
    /// Blocks defrag gave up on (a record it cannot parse).
    defrag_skip: BTreeSet<u32>,
    reclaim_partition: usize,
    /// Local time of the last flush, for `flush_interval_ms`.
    pub last_flush_ms: u64,
}

const INDEX_BYTES_REFRESH_WRITES: u32 = 4096;

impl NsState {
    /// An empty namespace over `blocks`.
    pub fn new(cfg: NamespaceConfig, dir: PathBuf, blocks: BlockStore) -> Self {
        let index = Index::new();
        let index_bytes = index.memory_bytes() as u64;
        NsState {
            cfg,
            dir,
            index,
            sets: SetTable::new(),
            blocks,
            truncates: Vec::new(),
            installs: BTreeMap::new(),
            installing: BTreeSet::new(),
            max_lut_ms: 0,
            counters: Counters::default(),
            index_bytes,
            writes_since_refresh: 0,
            defrag: None,
            defrag_skip: BTreeSet::new(),
            reclaim_partition: 0,
            last_flush_ms: 0,
        }
    }

    /// The entry of a record visible at `now_ms` (not deleted, not expired).
    pub fn visible(&self, digest: &Digest, now_ms: u64) -> Option<Entry> {
        self.index
            .get(digest)
            .filter(|e| !e.is_tombstone() && !is_expired(e.void_time, now_ms))
            .copied()
    }

    /// Reads and verifies the record an entry points at.
    pub fn read_entry(&self, e: &Entry) -> Result<Record> {
        let bytes = self.blocks.read(e.block_id, e.offset, e.len_bytes)?;
        let path = self.blocks.block_path(e.block_id);
        let (h, body) = format::decode_version(&bytes, &path, u64::from(e.offset))?;
        let mismatch = |reason: &str| Error::corruption(&path, u64::from(e.offset), reason);
        if h.digest != e.digest {
            return Err(mismatch("record digest differs from the index"));
        }
        body.ok_or_else(|| mismatch("index expects a live record, found a tombstone"))
    }

    /// Appends the record image (see `format::encode_record_image`) of a live
    /// entry to `out` without decoding its bins: the body of a stored version
    /// is the image's body byte for byte. The version's CRC and digest are
    /// checked.
    pub fn read_image(&self, e: &Entry, out: &mut Vec<u8>) -> Result<()> {
        let bytes = self.blocks.read(e.block_id, e.offset, e.len_bytes)?;
        let path = self.blocks.block_path(e.block_id);
        let h = format::decode_header(&bytes, &path, u64::from(e.offset))?;
        if h.digest != e.digest || h.is_tombstone() {
            let reason = "index expects this live record, the block holds another version";
            return Err(Error::corruption(&path, u64::from(e.offset), reason));
        }
        format::encode_image_prefix(&h, out);
        out.extend_from_slice(&bytes[format::RECORD_HEADER_BYTES..]);
        Ok(())
    }

    /// Point read.
    pub fn get(
        &self,
        digest: &Digest,
        bins: &BinSelection,
        now_ms: u64,
    ) -> Result<Option<RecordView>> {
        let Some(e) = self.visible(digest, now_ms) else {
            return Ok(None);
        };
        let (key, bins) = match bins {
            BinSelection::None => (None, Vec::new()),
            BinSelection::All => {
                let record = self.read_entry(&e)?;
                (record.key, record.bins)
            }
            BinSelection::Named(names) => {
                let record = self.read_entry(&e)?;
                let named = names
                    .iter()
                    .filter_map(|n| record.bins.iter().find(|b| &b.name == n).cloned())
                    .collect();
                (record.key, named)
            }
        };
        Ok(Some(RecordView {
            generation: e.generation,
            void_time: e.void_time,
            key,
            bins,
        }))
    }

    /// Applies a record command.
    pub fn apply(&mut self, stamp: Stamp, seq: &AtomicU64, cmd: &Command) -> Result<Outcome> {
        match cmd {
            Command::Put(put) => {
                let ops: Vec<Op> = put.bins.iter().cloned().map(Op::Write).collect();
                self.apply_ops(stamp, seq, &put.write, &ops)
            }
            Command::Touch(write) => self.apply_ops(stamp, seq, write, &[Op::Touch]),
            Command::Operate(operate) => self.apply_ops(stamp, seq, &operate.write, &operate.ops),
            Command::Delete {
                digest, generation, ..
            } => {
                let visible = self.visible(digest, stamp.now_ms).map(|e| e.generation);
                semantics::execute_delete(*generation, visible)?;
                self.check_memory()?;
                self.store_tombstone(stamp, seq, *digest)?;
                Ok(empty_outcome())
            }
            Command::Truncate {
                set,
                before_ms,
                partitions,
                ..
            } => {
                let wanted = valid_partitions(partitions)?;
                let marker_seq = seq.fetch_add(1, Ordering::SeqCst);
                // The leader's clock, which every replica sees, bounds the
                // cut-off: a node's own clock never decides what goes.
                let before_ms = (*before_ms).min(stamp.now_ms);
                self.truncate(set.as_deref(), &wanted, before_ms, marker_seq)?;
                Ok(empty_outcome())
            }
        }
    }

    fn apply_ops(
        &mut self,
        stamp: Stamp,
        seq: &AtomicU64,
        write: &crate::types::Write,
        ops: &[Op],
    ) -> Result<Outcome> {
        if ops.iter().any(Op::writes) {
            self.check_stop_writes()?;
        }
        let existing = match self.visible(&write.digest, stamp.now_ms) {
            Some(e) => Some(self.read_entry(&e)?),
            None => None,
        };
        let default_ttl = self.cfg.default_ttl_secs;
        let (effect, outcome) =
            semantics::execute(write, ops, existing.as_ref(), stamp.now_ms, default_ttl)?;
        match effect {
            Effect::Nothing => {}
            Effect::Delete => self.store_tombstone(stamp, seq, write.digest)?,
            Effect::Write(record) => {
                self.check_record_size(&record)?;
                let set_id = self.sets.id_for(&record.set)?;
                let header = live_header(&record, stamp, seq.fetch_add(1, Ordering::SeqCst));
                self.store_version(&header, Some(&record), set_id)?;
            }
        }
        Ok(outcome)
    }

    /// Refuses a record image above the namespace's limit: a record error,
    /// so every replica refuses the same command the same way.
    fn check_record_size(&self, record: &Record) -> Result<()> {
        let size_bytes = format::encoded_version_len(record);
        let max_bytes = self.cfg.record_size_limit_bytes() as usize;
        if size_bytes > max_bytes {
            return Err(Error::RecordTooBig {
                size_bytes,
                max_bytes,
            });
        }
        Ok(())
    }

    fn store_tombstone(&mut self, stamp: Stamp, seq: &AtomicU64, digest: Digest) -> Result<()> {
        let header = VersionHeader {
            kind: KIND_TOMBSTONE,
            generation: 0,
            digest,
            void_time: 0,
            last_update_ms: stamp.now_ms,
            log_id: stamp.log_id,
            log_index: stamp.index,
            seq: seq.fetch_add(1, Ordering::SeqCst),
            tomb_bound_block: self.blocks.append_target(format::RECORD_HEADER_BYTES),
        };
        self.store_version(&header, None, 0)
    }

    /// Appends a version and points the index at it.
    fn store_version(
        &mut self,
        h: &VersionHeader,
        body: Option<&Record>,
        set_id: u16,
    ) -> Result<()> {
        let bytes = format::encode_version(h, body);
        let (block_id, offset) = self.blocks.append(&bytes, self.cfg.size_limit_bytes)?;
        let len_bytes = bytes.len() as u32;
        self.blocks.add_live(block_id, len_bytes);
        let entry = Entry {
            digest: h.digest,
            block_id,
            offset,
            len_bytes,
            void_time: h.void_time,
            generation: h.generation,
            set_id,
        };
        if let Some(prev) = self.index.insert(entry) {
            self.blocks.sub_live(prev.block_id, prev.len_bytes);
        }
        self.max_lut_ms = self.max_lut_ms.max(h.last_update_ms);
        self.writes_since_refresh += 1;
        if self.writes_since_refresh >= INDEX_BYTES_REFRESH_WRITES {
            self.refresh_index_bytes();
        }
        Ok(())
    }

    /// Recomputes `index_bytes`.
    pub fn refresh_index_bytes(&mut self) {
        self.index_bytes = self.index.memory_bytes() as u64;
        self.writes_since_refresh = 0;
    }

    /// Removes an entry and its live bytes.
    pub fn remove_entry(&mut self, digest: &Digest) -> Option<Entry> {
        let e = self.index.remove(digest)?;
        self.blocks.sub_live(e.block_id, e.len_bytes);
        Some(e)
    }

    /// Fails with stop-writes past the disk or memory threshold.
    pub fn check_stop_writes(&self) -> Result<()> {
        let used = self.blocks.used_bytes();
        let limit = self.cfg.size_limit_bytes;
        let pct = u64::from(self.cfg.stop_writes_used_pct);
        if used.saturating_mul(100) >= limit.saturating_mul(pct) {
            return Err(Error::StopWrites(format!(
                "{}: disk use {used} of {limit} bytes reached {pct}%",
                self.cfg.name
            )));
        }
        self.check_memory()
    }

    fn check_memory(&self) -> Result<()> {
        let limit = self.cfg.memory_limit_bytes;
        if limit > 0 && self.index_bytes >= limit {
            return Err(Error::StopWrites(format!(
                "{}: index uses {} of {limit} bytes of RAM",
                self.cfg.name, self.index_bytes
            )));
        }
        Ok(())
    }

    /// Removes every record of `partitions` of the namespace (or set) last
    /// updated before `before_ms`, walking only those partitions, and keeps a
    /// marker so a cold start hides them too.
    fn truncate(
        &mut self,
        set: Option<&str>,
        partitions: &BTreeSet<u16>,
        before_ms: u64,
        marker_seq: u64,
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let set_id = set.map(|name| self.sets.get(name));
        let everything = before_ms > self.max_lut_ms;
        let mut doomed = Vec::new();
        for p in partitions {
            for e in self.index.partition(*p).entries() {
                let in_scope = set_id.is_none_or(|id| id == Some(e.set_id));
                if in_scope && (everything || self.last_update_ms(e)? < before_ms) {
                    doomed.push(e.digest);
                }
            }
        }
        for digest in &doomed {
            self.remove_entry(digest);
        }
        self.counters.truncated += doomed.len() as u64;
        self.truncates.push(TruncateMarker {
            set: set.map(str::to_string),
            partitions: checkpoint::partition_ranges(partitions),
            before_ms,
            seq: marker_seq,
        });
        Ok(())
    }

    fn last_update_ms(&self, e: &Entry) -> Result<u64> {
        let bytes = self.blocks.read(e.block_id, e.offset, e.len_bytes)?;
        let path = self.blocks.block_path(e.block_id);
        Ok(format::decode_header(&bytes, &path, u64::from(e.offset))?.last_update_ms)
    }

    /// Replaces expired records by tombstones, at most `max_records`, resuming
    /// where the previous call stopped. Returns how many it reclaimed. Whether
    /// a record has expired is decided from `now_ms` alone.
    ///
    /// The tombstone (log 0, index 0) keeps an older version of the record from
    /// coming back once the expired version's block is freed. Partitions being
    /// installed are skipped (see `install.rs`).
    pub fn reclaim_expired(
        &mut self,
        now_ms: u64,
        max_records: usize,
        seq: &AtomicU64,
    ) -> Result<usize> {
        let mut done = 0usize;
        for _ in 0..PARTITION_COUNT {
            let p = self.reclaim_partition as u16;
            if !self.installing.contains(&p) {
                done += self.reclaim_in(p, now_ms, max_records - done, seq)?;
                if done >= max_records {
                    break;
                }
            }
            self.reclaim_partition = (self.reclaim_partition + 1) % PARTITION_COUNT;
        }
        Ok(done)
    }

    fn reclaim_in(
        &mut self,
        partition: u16,
        now_ms: u64,
        max_records: usize,
        seq: &AtomicU64,
    ) -> Result<usize> {
        let expired: Vec<Digest> = self
            .index
            .partition(partition)
            .entries()
            .iter()
            .filter(|e| !e.is_tombstone() && is_expired(e.void_time, now_ms))
            .take(max_records)
            .map(|e| e.digest)
            .collect();
        let stamp = Stamp {
            log_id: 0,
            index: 0,
            now_ms,
        };
        for digest in &expired {
            self.store_tombstone(stamp, seq, *digest)?;
        }
        self.counters.expired_reclaimed += expired.len() as u64;
        Ok(expired.len())
    }

    /// Sealed blocks below the low-water mark, emptiest first.
    fn defrag_target(&self) -> Option<u32> {
        if let Some(c) = &self.defrag
            && self
                .blocks
                .blocks()
                .get(&c.block_id)
                .is_some_and(|b| b.state == BlockState::Sealed)
        {
            return Some(c.block_id);
        }
        let threshold =
            u64::from(self.cfg.write_block_size_bytes) * u64::from(self.cfg.defrag_lwm_pct) / 100;
        self.blocks
            .blocks()
            .iter()
            .filter(|(id, b)| {
                b.state == BlockState::Sealed
                    && b.live_bytes < threshold
                    && !self.defrag_skip.contains(id)
            })
            .min_by_key(|(_, b)| b.live_bytes)
            .map(|(id, _)| *id)
    }

    /// A tombstone can go when every block that may hold an older version of
    /// its record (ids up to its bound) is on its way out, except the block
    /// being defragmented, which goes at the same checkpoint.
    fn tombstone_droppable(&self, bound_block: u32, defrag_block: u32) -> bool {
        self.blocks.blocks().range(..=bound_block).all(|(id, b)| {
            *id == defrag_block
                || matches!(
                    b.state,
                    BlockState::Freeing | BlockState::Dropped | BlockState::Released
                )
        })
    }

    /// Moves live versions out of sparse blocks, examining at most about
    /// `max_bytes` of versions (the rate limit).
    pub fn defrag_step(&mut self, max_bytes: u64) -> Result<DefragProgress> {
        let mut progress = DefragProgress::default();
        while progress.bytes_examined < max_bytes {
            let Some(block_id) = self.defrag_target() else {
                break;
            };
            let mut cursor = match self.defrag.take() {
                Some(c) if c.block_id == block_id => c,
                _ => DefragCursor {
                    block_id,
                    data: self.blocks.read_block(block_id)?,
                    offset: BLOCK_HEADER_BYTES,
                },
            };
            let finished = self.defrag_some(&mut cursor, max_bytes, &mut progress)?;
            if finished {
                progress.blocks_done += 1;
                self.counters.defrag_blocks_done += 1;
            } else {
                self.defrag = Some(cursor);
            }
        }
        Ok(progress)
    }

    /// Works through one block from the cursor; true when the block is done.
    fn defrag_some(
        &mut self,
        c: &mut DefragCursor,
        max_bytes: u64,
        progress: &mut DefragProgress,
    ) -> Result<bool> {
        let path = self.blocks.path_of(c.block_id);
        let data = c.data.clone();
        while c.offset < data.len() {
            if progress.bytes_examined >= max_bytes {
                return Ok(false);
            }
            let rest = &data[c.offset..];
            let header = format::version_len(rest)
                .ok_or_else(|| Error::corruption(&path, c.offset as u64, "bad record length"))
                .and_then(|len| format::decode_header(&rest[..len], &path, c.offset as u64));
            let h = match header {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "defrag skips the rest of a block it cannot parse");
                    self.defrag_skip.insert(c.block_id);
                    return Ok(true);
                }
            };
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            self.defrag_version(
                c.block_id,
                c.offset as u32,
                &h,
                &rest[..len as usize],
                progress,
            )?;
            c.offset += len as usize;
            progress.bytes_examined += u64::from(len);
        }
        Ok(true)
    }

    fn defrag_version(
        &mut self,
        block_id: u32,
        offset: u32,
        h: &VersionHeader,
        bytes: &[u8],
        progress: &mut DefragProgress,
    ) -> Result<()> {
        let Some(e) = self.index.get(&h.digest).copied() else {
            return Ok(());
        };
        if e.block_id != block_id || e.offset != offset {
            return Ok(()); // a dead version
        }
        if h.is_tombstone() && self.tombstone_droppable(h.tomb_bound_block, block_id) {
            self.remove_entry(&h.digest);
            self.counters.defrag_tombstones_dropped += 1;
            return Ok(());
        }
        // The bytes are copied unchanged: nothing in a version depends on where
        // it lives, so a copy and its original are interchangeable at recovery.
        let (new_block, new_offset) = self.blocks.append(bytes, self.cfg.size_limit_bytes)?;
        self.blocks.add_live(new_block, e.len_bytes);
        self.index.insert(Entry {
            block_id: new_block,
            offset: new_offset,
            ..e
        });
        self.blocks.sub_live(block_id, e.len_bytes);
        progress.bytes_moved += u64::from(e.len_bytes);
        self.counters.defrag_records_moved += 1;
        self.counters.defrag_bytes_moved += u64::from(e.len_bytes);
        Ok(())
    }
}

/// The partitions a command names, refused if any is out of range.
pub fn valid_partitions(partitions: &[u16]) -> Result<BTreeSet<u16>> {
    if let Some(bad) = partitions
        .iter()
        .find(|p| usize::from(**p) >= PARTITION_COUNT)
    {
        return Err(Error::Parameter(format!("partition {bad} out of range")));
    }
    Ok(partitions.iter().copied().collect())
}

fn empty_outcome() -> Outcome {
    Outcome {
        generation: 0,
        void_time: 0,
        results: Vec::new(),
    }
}

/// The header of a live version of `record` written under `stamp`.
pub fn live_header(record: &Record, stamp: Stamp, seq: u64) -> VersionHeader {
    VersionHeader {
        kind: KIND_LIVE,
        generation: record.generation,
        digest: record.digest,
        void_time: record.void_time,
        last_update_ms: record.last_update_ms,
        log_id: stamp.log_id,
        log_index: stamp.index,
        seq,
        tomb_bound_block: 0,
    }
}
