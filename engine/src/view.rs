//! Snapshot support: consistent views, installs, partition scans and
//! per-partition summaries for replica comparison.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::engine::{Engine, Namespace, lock};
use crate::error::{Error, Result};
use crate::index::Entry;
use crate::namespace::NsState;
use crate::types::{Digest, Record, is_expired, partition_of};

/// A read view of some partitions as of the moment it was taken. It copies the
/// partitions' index entries (40 bytes per record) and pins the blocks they
/// point into; the apply loop goes on meanwhile. Dropping it unpins.
#[derive(Debug)]
pub struct View {
    ns: Arc<Namespace>,
    applied: BTreeMap<u64, u64>,
    entries: Vec<Entry>,
    pinned: Vec<u32>,
}

impl View {
    /// Applied index of every log at the moment the view was taken.
    pub fn applied_indices(&self) -> &BTreeMap<u64, u64> {
        &self.applied
    }

    /// Records in the view (expired ones included: their void time travels
    /// with them).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the view holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records, by partition then digest. Each is read and CRC-checked.
    pub fn records(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.entries.iter().map(|e| self.ns.read().read_entry(e))
    }

    /// Per partition (those with records), the count and an order-independent
    /// checksum of the records' whole contents, each record read and
    /// CRC-checked: what a shard's replicas compare in a consistency check
    /// (a flipped bit anywhere in a record is a [`Error::Corruption`] here).
    /// Records that expire before `stable_until_ms` are left out: each
    /// replica reclaims expired records on its own clock, so near their
    /// expiry replicas may rightly differ. `pace` gets each record's bytes
    /// (the caller throttles there).
    pub fn content_summaries(
        &self,
        stable_until_ms: u64,
        mut pace: impl FnMut(usize),
    ) -> Result<BTreeMap<u16, PartitionSummary>> {
        let mut out: BTreeMap<u16, PartitionSummary> = BTreeMap::new();
        let mut image = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.void_time == 0 || !is_expired(e.void_time, stable_until_ms))
        {
            image.clear();
            self.ns.read().read_image(e, &mut image)?;
            pace(image.len());
            let contents = (u64::from(crc32fast::hash(&image)) << 32) | image.len() as u64;
            let summary = out
                .entry(partition_of(&e.digest))
                .or_insert(PartitionSummary {
                    records: 0,
                    checksum: 0,
                });
            summary.records += 1;
            summary.checksum = summary
                .checksum
                .wrapping_add(mix64(record_hash(e) ^ contents));
        }
        Ok(out)
    }

    /// Calls `f` with each record's digest and image
    /// (`format::encode_record_image` bytes), by partition then digest,
    /// without decoding the bins (each version is CRC-checked): what a
    /// snapshot copies.
    pub fn for_each_image<E: From<Error>>(
        &self,
        mut f: impl FnMut(&Digest, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut image = Vec::new();
        for e in &self.entries {
            image.clear();
            self.ns.read().read_image(e, &mut image)?;
            f(&e.digest, &image)?;
        }
        Ok(())
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let mut state = self.ns.write();
        for block in &self.pinned {
            if let Err(e) = state.blocks.unpin(*block) {
                tracing::warn!(error = %e, "deleting a released block after a view failed");
            }
        }
    }
}

/// One page of a partition scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// Records, by digest.
    pub records: Vec<Record>,
    /// Pass this as `after` to continue; `None` when the partition is done.
    pub resume_after: Option<Digest>,
}

/// Count and order-independent checksum of a partition's live records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Live, unexpired records.
    pub records: u64,
    /// Wrapping sum of a 64-bit hash of (digest, generation, void time) per
    /// record: equal on replicas that applied the same commands.
    pub checksum: u64,
}

fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn record_hash(e: &Entry) -> u64 {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&e.digest[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let tail = u64::from(u32::from_le_bytes([
        e.digest[16],
        e.digest[17],
        e.digest[18],
        e.digest[19],
    ]));
    let meta = (u64::from(e.generation) << 32) | u64::from(e.void_time);
    mix64(word(0) ^ mix64(word(8) ^ mix64(tail ^ mix64(meta))))
}

/// The live entries of `wanted` partitions, by partition then digest, with
/// the blocks they point into pinned.
fn pin_entries(state: &mut NsState, wanted: &BTreeSet<u16>) -> (Vec<Entry>, Vec<u32>) {
    let mut entries: Vec<Entry> = wanted
        .iter()
        .flat_map(|p| state.index.partition(*p).entries().iter())
        .filter(|e| !e.is_tombstone())
        .copied()
        .collect();
    entries.sort_unstable_by_key(|e| (partition_of(&e.digest), e.digest));
    let pinned: BTreeSet<u32> = entries.iter().map(|e| e.block_id).collect();
    for block in &pinned {
        state.blocks.pin(*block);
    }
    (entries, pinned.into_iter().collect())
}

impl Engine {
    /// A consistent view of `partitions` of `ns` as of now.
    pub fn view(&self, ns: &str, partitions: &[u16]) -> Result<View> {
        let mut views = self.views(&[ns], partitions)?;
        views
            .pop()
            .ok_or_else(|| Error::NamespaceNotFound(ns.to_string()))
    }

    /// Views of `partitions` in each of `namespaces` (in that order), all at
    /// one instant: every namespace's lock is held while they are taken (in
    /// the engine's namespace order, as a checkpoint takes them), so no
    /// command of any log lands between two of them.
    pub fn views(&self, namespaces: &[&str], partitions: &[u16]) -> Result<Vec<View>> {
        for ns in namespaces {
            self.namespace(ns)?;
        }
        let wanted: BTreeSet<u16> = partitions.iter().copied().collect();
        let handles: Vec<(&String, &Arc<Namespace>)> = self
            .namespaces
            .iter()
            .filter(|(name, _)| namespaces.contains(&name.as_str()))
            .collect();
        let mut guards: Vec<_> = handles.iter().map(|(_, h)| h.write()).collect();
        let applied = lock(&self.logs).applied.clone();
        let mut by_name: BTreeMap<&str, View> = BTreeMap::new();
        for ((name, handle), state) in handles.iter().zip(guards.iter_mut()) {
            let (entries, pinned) = pin_entries(state, &wanted);
            let view = View {
                ns: Arc::clone(handle),
                applied: applied.clone(),
                entries,
                pinned,
            };
            by_name.insert(name.as_str(), view);
        }
        drop(guards);
        Ok(namespaces
            .iter()
            .filter_map(|ns| by_name.remove(ns))
            .collect())
    }

    /// [`Engine::views`] of `partitions` in every namespace, in the
    /// engine's configured order.
    pub fn views_of_every_namespace(&self, partitions: &[u16]) -> Result<Vec<View>> {
        let names: Vec<&str> = self
            .config()
            .namespaces
            .iter()
            .map(|ns| ns.name.as_str())
            .collect();
        self.views(&names, partitions)
    }

    /// Replaces the contents of `partitions` of `ns` by `records` (a snapshot
    /// of them as of `applied_index` of `log_id`) and sets that log's applied
    /// index, durably, in one step: [`Engine::begin_install`] for one
    /// namespace. `partitions` must be every partition the log owns. On error
    /// the partitions are as they were (see [`crate::Install::commit`]).
    pub fn install<I>(
        &self,
        ns: &str,
        partitions: &[u16],
        records: I,
        log_id: u64,
        applied_index: u64,
    ) -> Result<u64>
    where
        I: IntoIterator<Item = Record>,
    {
        let mut install = self.begin_install(&[ns], partitions, log_id, applied_index)?;
        install.stage(ns, records)?;
        install.commit()
    }

    /// Up to `max_records` live records of a partition with digests after
    /// `after`, in digest order. Each call sorts the partition's digests:
    /// a scan that pages through a whole partition should take
    /// [`Engine::partition_digests`] once and read pages with
    /// [`Engine::read_records`].
    pub fn scan_partition(
        &self,
        ns: &str,
        partition: u16,
        after: Option<&Digest>,
        max_records: usize,
        now_ms: u64,
    ) -> Result<ScanPage> {
        let digests = self.partition_digests(ns, partition, None, after, now_ms)?;
        let page = &digests[..digests.len().min(max_records)];
        let (records, _) = self.read_records(ns, page, now_ms, usize::MAX)?;
        Ok(ScanPage {
            records,
            resume_after: if digests.len() > page.len() {
                page.last().copied()
            } else {
                None
            },
        })
    }

    /// The digests of a partition's records live at `now_ms` (of one set,
    /// or all) that sort after `after`, in digest order. RAM only, one
    /// short read lock.
    pub fn partition_digests(
        &self,
        ns: &str,
        partition: u16,
        set: Option<&str>,
        after: Option<&Digest>,
        now_ms: u64,
    ) -> Result<Vec<Digest>> {
        let handle = self.namespace(ns)?;
        let mut digests: Vec<Digest> = {
            let state = handle.read();
            let set_id = match set {
                Some(name) => match state.sets.get(name) {
                    Some(id) => Some(id),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            state
                .index
                .partition(partition)
                .entries()
                .iter()
                .filter(|e| !e.is_tombstone() && !is_expired(e.void_time, now_ms))
                .filter(|e| set_id.is_none_or(|id| e.set_id == id))
                .filter(|e| after.is_none_or(|a| e.digest > *a))
                .map(|e| e.digest)
                .collect()
        };
        digests.sort_unstable();
        Ok(digests)
    }

    /// The records of a prefix of `digests` still live at `now_ms`, in that
    /// order (those deleted or expired since the digests were taken are left
    /// out), and the length of that prefix: reading stops once the records
    /// read reach `max_bytes` as stored (at least one is read). One read lock
    /// for the call.
    pub fn read_records(
        &self,
        ns: &str,
        digests: &[Digest],
        now_ms: u64,
        max_bytes: usize,
    ) -> Result<(Vec<Record>, usize)> {
        let handle = self.namespace(ns)?;
        let state = handle.read();
        let (mut records, mut bytes) = (Vec::new(), 0usize);
        for (consumed, digest) in digests.iter().enumerate() {
            if bytes >= max_bytes {
                return Ok((records, consumed));
            }
            if let Some(e) = state.visible(digest, now_ms) {
                bytes = bytes.saturating_add(e.len_bytes as usize);
                records.push(state.read_entry(&e)?);
            }
        }
        Ok((records, digests.len()))
    }

    /// Live, unexpired records per set at `now_ms` (sets with none left out;
    /// "" is records without a set). RAM only: one pass over the index.
    pub fn set_counts(&self, ns: &str, now_ms: u64) -> Result<Vec<(String, u64)>> {
        let handle = self.namespace(ns)?;
        let state = handle.read();
        let names = state.sets.names();
        let mut counts = vec![0u64; names.len().max(1)];
        for e in state.index.iter() {
            if !e.is_tombstone()
                && !is_expired(e.void_time, now_ms)
                && let Some(count) = counts.get_mut(usize::from(e.set_id))
            {
                *count += 1;
            }
        }
        Ok(names
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.clone(), n))
            .collect())
    }

    /// Count and checksum of a partition's records live at `now_ms`. RAM only.
    pub fn partition_summary(
        &self,
        ns: &str,
        partition: u16,
        now_ms: u64,
    ) -> Result<PartitionSummary> {
        let handle = self.namespace(ns)?;
        let state = handle.read();
        let mut summary = PartitionSummary {
            records: 0,
            checksum: 0,
        };
        for e in state.index.partition(partition).entries() {
            if !e.is_tombstone() && !is_expired(e.void_time, now_ms) {
                summary.records += 1;
                summary.checksum = summary.checksum.wrapping_add(record_hash(e));
            }
        }
        Ok(summary)
    }
}
