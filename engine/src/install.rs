//! Installing a shard's partitions (a snapshot) in every namespace at once.
//!
//! An install commits once. [`Engine::begin_install`] marks the partitions
//! as being installed; [`Install::stage`] writes each namespace's records
//! into new block files that no index entry and no `MANIFEST` knows of (a
//! crash leaves files the next open deletes); [`Install::commit`] takes a
//! checkpoint whose cut, under every namespace lock, lists the staged blocks,
//! the partitions' new index entries, the install markers and the log's
//! applied index. Only once that one `MANIFEST` is durable are the partitions
//! swapped in memory, under every namespace lock again, so no reader or
//! checkpoint ever sees a mix. Any error before the `MANIFEST` rename leaves
//! the previous state as it was and deletes the staged files (dropping an
//! uncommitted [`Install`] does the same).
//!
//! Installs commit as a group: each checkpoint writes the whole index, so
//! a rebuild installing many shards at once would write it once per shard
//! (at 1M records over 8 shards, 4.5M entries instead of 1M). A finished
//! install joins a queue before it waits for the checkpoint lock, and
//! whoever takes the lock commits every install queued in one checkpoint.
//!
//! While a partition is being installed, expiry reclaim leaves it alone: a
//! tombstone it wrote there would carry a sequence above the install marker
//! and hide an installed record of the same digest at a cold start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::blocks::{BlockCut, StagedBlock};
use crate::engine::{Engine, lock};
use crate::error::{Error, IoContext, Result};
use crate::format::{self, MAX_BIN_NAME_BYTES, MAX_SET_NAME_BYTES};
use crate::fs::{EngineFs, OpenFor};
use crate::index::Entry;
use crate::namespace::{NsState, SetTable, Stamp, live_header, valid_partitions};
use crate::types::{Bin, Record, Value, partition_of};

/// An install in progress: see the module docs. Dropping it without
/// [`Install::commit`] abandons it and leaves the engine as it was.
#[derive(Debug)]
pub struct Install<'e> {
    engine: &'e Engine,
    /// Shared with the committer of its group while it commits.
    plan: Arc<Mutex<Plan>>,
    /// False once the staged files may be listed by a durable `MANIFEST`
    /// (committed, or an fsync failed during the commit): they must stay.
    discard_on_drop: bool,
    /// Set by a failed `stage`: part of a namespace may be missing, so the
    /// install must not commit.
    spoiled: bool,
}

/// What the commit's checkpoint needs: the log index claimed, the
/// partitions replaced, and every namespace's staged records.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) log_id: u64,
    pub(crate) applied_index: u64,
    pub(crate) partitions: BTreeSet<u16>,
    /// Engine sequence of the install: every older version of the
    /// partitions is hidden at a cold start, every staged one is newer.
    pub(crate) marker: u64,
    pub(crate) namespaces: BTreeMap<String, Staged>,
}

impl Plan {
    /// What the checkpoint cut of namespace `name` takes from the install.
    pub(crate) fn for_namespace(&mut self, name: &str) -> Option<NsInstall<'_>> {
        let staged = self.namespaces.get_mut(name)?;
        Some(NsInstall {
            staged,
            partitions: &self.partitions,
            marker: self.marker,
        })
    }
}

/// One namespace's share of an install, for the checkpoint cut.
pub(crate) struct NsInstall<'a> {
    pub(crate) staged: &'a mut Staged,
    pub(crate) partitions: &'a BTreeSet<u16>,
    pub(crate) marker: u64,
}

/// One namespace's staged records.
#[derive(Debug)]
pub(crate) struct Staged {
    fs: Arc<dyn EngineFs>,
    dir: PathBuf,
    block_size_bytes: u32,
    size_limit_bytes: u64,
    /// Written (not fsynced) staged blocks.
    blocks: Vec<StagedBlock>,
    /// The staged block being filled in RAM.
    current: Option<(StagedBlock, Vec<u8>)>,
    /// Index entries of the staged versions; `set_id` indexes `set_names`
    /// until the commit maps it to the namespace's set table.
    entries: Vec<Entry>,
    set_names: Vec<String>,
    set_ids: HashMap<String, u16>,
    max_lut_ms: u64,
}

impl Engine {
    /// Starts installing `partitions` of every namespace in `namespaces`
    /// (a snapshot of them as of `applied_index` of `log_id`). Stage each
    /// namespace's records with [`Install::stage`], then [`Install::commit`]:
    /// the commit replaces the partitions in every namespace listed here (one
    /// given no record is emptied there). `partitions` must be every
    /// partition the log owns; one install per partition at a time.
    pub fn begin_install(
        &self,
        namespaces: &[&str],
        partitions: &[u16],
        log_id: u64,
        applied_index: u64,
    ) -> Result<Install<'_>> {
        self.check_healthy()?;
        let wanted = valid_partitions(partitions)?;
        for ns in namespaces {
            self.namespace(ns)?;
        }
        // In the engine's namespace order, as a checkpoint takes the locks.
        let mut guards: Vec<_> = self
            .namespaces
            .iter()
            .filter(|(name, _)| namespaces.contains(&name.as_str()))
            .map(|(name, ns)| (name, ns.write()))
            .collect();
        if guards
            .iter()
            .any(|(_, s)| !s.installing.is_disjoint(&wanted))
        {
            let reason = "install: some partitions are already being installed";
            return Err(Error::Parameter(reason.to_string()));
        }
        let mut staged = BTreeMap::new();
        for (name, state) in &mut guards {
            state.installing.extend(&wanted);
            staged.insert((*name).clone(), Staged::new(self, state));
        }
        let marker = self.next_seq.fetch_add(1, Ordering::SeqCst);
        Ok(Install {
            engine: self,
            plan: Arc::new(Mutex::new(Plan {
                log_id,
                applied_index,
                partitions: wanted,
                marker,
                namespaces: staged,
            })),
            discard_on_drop: true,
            spoiled: false,
        })
    }
}

impl Install<'_> {
    /// Writes `records` (each in the installed partitions) of `ns` into
    /// staged blocks; nothing is visible before the commit. Returns how many
    /// it staged. On error the install is spoiled: `commit` refuses it.
    pub fn stage<I>(&mut self, ns: &str, records: I) -> Result<u64>
    where
        I: IntoIterator<Item = Record>,
    {
        let staged = self.stage_all(ns, records);
        self.spoiled |= staged.is_err();
        staged
    }

    fn stage_all<I>(&mut self, ns: &str, records: I) -> Result<u64>
    where
        I: IntoIterator<Item = Record>,
    {
        self.engine.check_healthy()?;
        let mut plan = lock(&self.plan);
        let Plan {
            log_id,
            applied_index,
            partitions,
            namespaces,
            ..
        } = &mut *plan;
        let staged = namespaces.get_mut(ns).ok_or_else(|| {
            Error::Parameter(format!("install: namespace {ns} is not part of it"))
        })?;
        let mut count = 0u64;
        for record in records {
            validate_install(&record, partitions)?;
            let stamp = Stamp {
                log_id: *log_id,
                index: *applied_index,
                now_ms: record.last_update_ms,
            };
            let seq = self.engine.next_seq.fetch_add(1, Ordering::SeqCst);
            staged.push(self.engine, ns, &record, stamp, seq)?;
            count += 1;
        }
        Ok(count)
    }

    /// Makes the install visible and durable in one step (see the module
    /// docs) and returns the records installed. On error nothing changed,
    /// unless it is [`Error::SyncFailed`]: then the engine is poisoned and
    /// the next open finds either the old or the new state.
    pub fn commit(mut self) -> Result<u64> {
        if self.spoiled {
            let reason = "install: a stage failed, the install is incomplete";
            return Err(Error::Parameter(reason.to_string()));
        }
        self.engine.check_healthy()?;
        let installed: u64 = {
            let mut plan = lock(&self.plan);
            for staged in plan.namespaces.values_mut() {
                staged.finish()?;
                staged.check_unique()?;
            }
            plan.namespaces
                .values()
                .map(|s| s.entries.len() as u64)
                .sum()
        };
        let committed = self.engine.commit_install(&self.plan);
        if matches!(committed, Ok(()) | Err(Error::SyncFailed { .. })) {
            self.discard_on_drop = false;
        }
        committed.map(|()| installed)
    }
}

impl Drop for Install<'_> {
    fn drop(&mut self) {
        let plan = lock(&self.plan);
        for (name, staged) in &plan.namespaces {
            if let Ok(ns) = self.engine.namespace(name) {
                let mut state = ns.write();
                for p in &plan.partitions {
                    state.installing.remove(p);
                }
            }
            if self.discard_on_drop {
                staged.discard();
            }
        }
    }
}

impl Staged {
    fn new(engine: &Engine, state: &NsState) -> Staged {
        Staged {
            fs: engine.config().fs.clone(),
            dir: state.dir.clone(),
            block_size_bytes: state.cfg.write_block_size_bytes,
            size_limit_bytes: state.cfg.size_limit_bytes,
            blocks: Vec::new(),
            current: None,
            entries: Vec::new(),
            set_names: Vec::new(),
            set_ids: HashMap::new(),
            max_lut_ms: 0,
        }
    }

    fn push(
        &mut self,
        engine: &Engine,
        ns: &str,
        record: &Record,
        stamp: Stamp,
        seq: u64,
    ) -> Result<()> {
        let header = live_header(record, stamp, seq);
        let bytes = format::encode_version(&header, Some(record));
        let max_bytes = self.block_size_bytes as usize - format::BLOCK_HEADER_BYTES;
        if bytes.len() > max_bytes {
            return Err(Error::RecordTooBig {
                size_bytes: bytes.len(),
                max_bytes,
            });
        }
        let (block_id, offset) = self.append(engine, ns, &bytes)?;
        let set_id = self.local_set_id(&record.set)?;
        self.max_lut_ms = self.max_lut_ms.max(record.last_update_ms);
        self.entries.push(Entry {
            digest: record.digest,
            block_id,
            offset,
            len_bytes: bytes.len() as u32,
            void_time: record.void_time,
            generation: record.generation,
            set_id,
        });
        Ok(())
    }

    fn local_set_id(&mut self, set: &str) -> Result<u16> {
        if let Some(id) = self.set_ids.get(set) {
            return Ok(*id);
        }
        if self.set_names.len() > format::MAX_SETS_PER_NAMESPACE {
            return Err(Error::Parameter(format!(
                "install: more than {} sets",
                format::MAX_SETS_PER_NAMESPACE
            )));
        }
        let id = self.set_names.len() as u16;
        self.set_names.push(set.to_string());
        self.set_ids.insert(set.to_string(), id);
        Ok(id)
    }

    /// Appends a version to the current staged block, starting a new one
    /// (and writing out the full one) when it does not fit.
    fn append(&mut self, engine: &Engine, ns: &str, bytes: &[u8]) -> Result<(u32, u32)> {
        let fits = self
            .current
            .as_ref()
            .is_some_and(|(_, buf)| buf.len() + bytes.len() <= self.block_size_bytes as usize);
        if !fits {
            self.finish()?;
            self.start_block(engine, ns)?;
        }
        let (block, buf) = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Config("no staged block after starting one".to_string()))?;
        let offset = buf.len() as u32;
        buf.extend_from_slice(bytes);
        block.len_bytes = buf.len() as u32;
        Ok((block.id, offset))
    }

    fn start_block(&mut self, engine: &Engine, ns: &str) -> Result<()> {
        let staged_bytes = (self.blocks.len() as u64 + 1) * u64::from(self.block_size_bytes);
        let id = engine
            .namespace(ns)?
            .write()
            .blocks
            .reserve_block_id(staged_bytes, self.size_limit_bytes)?;
        let path = self.dir.join(format::block_file_name(id));
        let file = self.fs.open(&path, OpenFor::NewBlock).at(&path)?;
        let mut buf = Vec::with_capacity(self.block_size_bytes as usize);
        buf.extend_from_slice(&format::encode_block_header(id, self.block_size_bytes));
        let block = StagedBlock {
            id,
            path,
            file,
            len_bytes: buf.len() as u32,
        };
        self.current = Some((block, buf));
        Ok(())
    }

    /// Writes the block being filled to its file (the commit's checkpoint
    /// fsyncs it).
    fn finish(&mut self) -> Result<()> {
        if let Some((block, buf)) = self.current.take() {
            let written = block.file.write_all_at(&buf, 0).at(&block.path);
            // Kept either way, so an abandoned install deletes the file.
            self.blocks.push(block);
            written?;
        }
        Ok(())
    }

    fn discard(&self) {
        let current = self.current.as_ref().map(|(block, _)| block);
        for block in self.blocks.iter().chain(current) {
            if let Err(e) = self.fs.remove(&block.path) {
                tracing::warn!(path = %block.path.display(), error = %e,
                    "a staged block of an abandoned install could not be deleted; the next open will");
            }
        }
    }

    /// Refuses a digest staged twice (which version would win is not
    /// something a snapshot leaves open).
    fn check_unique(&mut self) -> Result<()> {
        self.entries.sort_unstable_by_key(|e| e.digest);
        if self.entries.windows(2).any(|w| w[0].digest == w[1].digest) {
            let reason = "install: the same record was given twice";
            return Err(Error::Parameter(reason.to_string()));
        }
        Ok(())
    }

    /// Under the namespace's lock, at the commit's cut: maps the staged set
    /// ids to the namespace's set table (adding the names it lacks).
    pub(crate) fn map_sets(&mut self, sets: &mut SetTable) -> Result<()> {
        let ids = self
            .set_names
            .iter()
            .map(|name| sets.id_for(name))
            .collect::<Result<Vec<u16>>>()?;
        for e in &mut self.entries {
            // Invariant: a staged set id is a position in `set_names`
            // (`local_set_id` hands them out), so it indexes `ids`.
            e.set_id = ids[usize::from(e.set_id)];
        }
        self.set_names.clear();
        self.set_ids.clear();
        Ok(())
    }

    /// Lists the staged blocks in the checkpoint's table and its fsyncs.
    pub(crate) fn add_to_cut(&self, cut: &mut BlockCut) {
        for block in &self.blocks {
            cut.table.push((block.id, block.len_bytes));
            cut.files.push((block.path.clone(), block.file.clone()));
        }
        cut.table.sort_unstable();
    }

    /// The staged index entries.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Newest last-update time of a staged version.
    pub(crate) fn max_lut_ms(&self) -> u64 {
        self.max_lut_ms
    }

    /// Once the commit's `MANIFEST` is durable, under the namespace's lock:
    /// the partitions' old entries go, the staged blocks and entries come in.
    pub(crate) fn swap_in(
        &mut self,
        state: &mut NsState,
        plan_partitions: &BTreeSet<u16>,
        marker: u64,
    ) {
        for p in plan_partitions {
            let digests: Vec<_> = state
                .index
                .partition(*p)
                .entries()
                .iter()
                .map(|e| e.digest)
                .collect();
            for digest in &digests {
                state.remove_entry(digest);
            }
            state.installs.insert(*p, marker);
            state.installing.remove(p);
        }
        for block in self.blocks.drain(..) {
            state.blocks.adopt_sealed(block);
        }
        for e in self.entries.drain(..) {
            state.blocks.add_live(e.block_id, e.len_bytes);
            if let Some(prev) = state.index.insert(e) {
                state.blocks.sub_live(prev.block_id, prev.len_bytes);
            }
        }
        state.max_lut_ms = state.max_lut_ms.max(self.max_lut_ms);
        state.refresh_index_bytes();
    }
}

/// An installed record must be one the engine could have written.
fn validate_install(record: &Record, partitions: &BTreeSet<u16>) -> Result<()> {
    let bad = |what: &str| Err(Error::Parameter(format!("install: {what}")));
    if !partitions.contains(&partition_of(&record.digest)) {
        return bad("record outside the installed partitions");
    }
    if record.bins.is_empty() || record.generation == 0 || record.set.len() > MAX_SET_NAME_BYTES {
        return bad("record without bins, with generation 0, or with a long set name");
    }
    let bad_bin =
        |b: &Bin| b.name.is_empty() || b.name.len() > MAX_BIN_NAME_BYTES || b.value == Value::Nil;
    if record.bins.iter().any(bad_bin) {
        return bad("bad bin name or nil value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{EngineConfig, NamespaceConfig};
    use crate::types::{BinSelection, Digest};

    const NS: &str = "test";
    const T0_MS: u64 = 1_704_067_200_000;

    fn config(dir: &std::path::Path) -> EngineConfig {
        EngineConfig {
            dir: dir.to_path_buf(),
            namespaces: vec![NamespaceConfig::named(NS)],
            checkpoint_interval_ms: 0,
            ..EngineConfig::default()
        }
    }

    /// A digest in partition `p` (the partition is the low 12 bits of the
    /// first two bytes).
    fn digest_in(p: u16, i: u8) -> Digest {
        let mut d = [i; 20];
        d[0] = (p & 0xff) as u8;
        d[1] = (p >> 8) as u8;
        d
    }

    fn record(p: u16, i: u8) -> Record {
        Record {
            digest: digest_in(p, i),
            set: String::new(),
            key: None,
            bins: vec![Bin::new("v", Value::Int(i64::from(i)))],
            generation: 1,
            void_time: 0,
            last_update_ms: T0_MS,
        }
    }

    #[test]
    fn installs_queued_behind_a_checkpoint_commit_together_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(config(dir.path())).unwrap();
        let before = engine.checkpoint().unwrap().checkpoint_seq;
        // Three installs of different logs and partitions, each staged.
        let installs: Vec<(u64, u16)> = vec![(11, 100), (12, 200), (13, 300)];
        std::thread::scope(|scope| {
            // Held here, so every commit queues up behind it.
            let held = lock(&engine.checkpoint);
            let handles: Vec<_> = installs
                .iter()
                .map(|&(log_id, p)| {
                    let engine = &engine;
                    assert_eq!(partition_of(&digest_in(p, 1)), p);
                    scope.spawn(move || {
                        let mut install = engine.begin_install(&[NS], &[p], log_id, 50).unwrap();
                        install.stage(NS, (1..=3).map(|i| record(p, i))).unwrap();
                        install.commit()
                    })
                })
                .collect();
            while lock(&engine.install_queue).len() < installs.len() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(held);
            for handle in handles {
                assert_eq!(handle.join().unwrap().unwrap(), 3);
            }
        });
        // One checkpoint took all three: the next one is the second since.
        assert_eq!(engine.checkpoint().unwrap().checkpoint_seq, before + 2);
        for &(log_id, p) in &installs {
            assert_eq!(engine.durable_applied_index(log_id), 50);
            let got = engine
                .get(NS, &digest_in(p, 2), &BinSelection::All, T0_MS)
                .unwrap();
            assert!(
                got.is_some(),
                "partition {p}: an installed record is missing"
            );
        }
        // And all of it is what a reopen finds.
        drop(engine);
        let engine = Engine::open(config(dir.path())).unwrap();
        for &(log_id, p) in &installs {
            assert_eq!(engine.durable_applied_index(log_id), 50);
            for i in 1..=3 {
                let got = engine
                    .get(NS, &digest_in(p, i), &BinSelection::All, T0_MS)
                    .unwrap();
                assert!(
                    got.is_some(),
                    "after a reopen, partition {p} lacks record {i}"
                );
            }
        }
    }
}
