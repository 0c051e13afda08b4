//! The engine: namespaces, per-log applied indices, checkpoints and the
//! background work a caller's timer drives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::blocks::{BlockCut, BlockState};
use crate::checkpoint::{self, IndexHeader, Manifest, NsManifest};
use crate::config::EngineConfig;
use crate::error::{Error, IoContext, Result};
use crate::format;
use crate::fs::EngineFs;
use crate::install::{NsInstall, Plan};
use crate::namespace::{Counters, DefragProgress, NsState, Stamp};
use crate::recovery::{self, NsRecovery};
use crate::types::{BinSelection, Command, Digest, Outcome, PARTITION_COUNT, RecordView};

/// A namespace behind its lock.
#[derive(Debug)]
pub(crate) struct Namespace {
    pub(crate) state: RwLock<NsState>,
}

impl Namespace {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, NsState> {
        // A panic while holding the lock is a bug; the state it left is still
        // the best there is, and refusing service would not make it better.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, NsState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub(crate) struct Logs {
    pub(crate) applied: BTreeMap<u64, u64>,
    durable: BTreeMap<u64, u64>,
}

#[derive(Debug)]
pub(crate) struct CheckpointState {
    seq: u64,
    last_ms: Option<u64>,
}

/// What `Engine::open` found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The checkpoint the engine came back to.
    pub checkpoint_seq: u64,
    /// Per namespace: fast or cold start, what was scanned, problems met.
    pub namespaces: BTreeMap<String, NsRecovery>,
}

/// What an operator should see at a glance (`Engine::health`): cheap, no
/// I/O, safe to call on every metrics scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Set once an fsync failed: the error, naming the file. The engine then
    /// refuses writes until it is reopened (reads keep working).
    pub poisoned: Option<String>,
    /// Namespaces past their disk or index-memory stop-writes threshold,
    /// with the reason; writes to them are refused until space is freed.
    pub stop_writes: BTreeMap<String, String>,
}

/// Per-block figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStats {
    /// Block id.
    pub id: u32,
    /// Bytes written into it.
    pub len_bytes: u32,
    /// Bytes of versions the index points at.
    pub live_bytes: u64,
    /// Life stage.
    pub state: BlockState,
}

/// Per-namespace figures.
#[derive(Debug, Clone)]
pub struct NamespaceStats {
    /// Namespace.
    pub name: String,
    /// Live records (expired ones not yet reclaimed included).
    pub records: u64,
    /// Tombstones in the index.
    pub tombstones: u64,
    /// RAM held by the index.
    pub index_bytes: u64,
    /// Disk reserved by blocks.
    pub used_bytes: u64,
    /// The namespace's disk budget.
    pub size_limit_bytes: u64,
    /// Every block.
    pub blocks: Vec<BlockStats>,
    /// Defrag, expiry and truncation counters.
    pub counters: Counters,
}

/// What a checkpoint wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Its number.
    pub checkpoint_seq: u64,
    /// Index entries written.
    pub entries: u64,
    /// Bytes of index checkpoint files written.
    pub index_bytes: u64,
}

/// The record store. All methods take `&self`; share it with `Arc`.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    pub(crate) namespaces: BTreeMap<String, Arc<Namespace>>,
    pub(crate) logs: Mutex<Logs>,
    pub(crate) next_seq: AtomicU64,
    pub(crate) checkpoint: Mutex<CheckpointState>,
    /// Installs waiting to commit: whoever takes `checkpoint` next commits
    /// all of them in one checkpoint (see `install.rs`).
    pub(crate) install_queue: Mutex<Vec<QueuedInstall>>,
    /// Namespaces in the manifest but not configured: kept as they were.
    unconfigured: BTreeMap<String, NsManifest>,
    recovery: RecoveryReport,
    /// Set by a failed fsync: why the engine refuses writes.
    poisoned: Mutex<Option<String>>,
}

/// An install waiting in the queue, and where its commit's outcome goes.
#[derive(Debug)]
pub(crate) struct QueuedInstall {
    plan: Arc<Mutex<Plan>>,
    outcome: Arc<Mutex<Option<Result<()>>>>,
}

/// One namespace's part of a checkpoint, taken under its lock.
struct NsJob {
    dir: PathBuf,
    cut: BlockCut,
    index_bytes: Vec<u8>,
}

/// One namespace's part of the checkpoint cut, under its lock: its manifest
/// entry, its job, and its index entry count. With `installs`, their
/// partitions hold the staged entries instead of their own, the staged
/// blocks are listed (and fsynced), and the partitions carry the install
/// markers.
fn cut_namespace(
    state: &mut NsState,
    seq: u64,
    mut installs: Vec<NsInstall<'_>>,
) -> Result<(NsManifest, NsJob, u64)> {
    for i in &mut installs {
        i.staged.map_sets(&mut state.sets)?;
    }
    let mut cut = state.blocks.cut()?;
    let mut ns_manifest = NsManifest {
        next_block_id: state.blocks.next_block_id(),
        blocks: Vec::new(),
        truncates: state.truncates.clone(),
        installs: state.installs.clone(),
    };
    let mut max_lut_ms = state.max_lut_ms;
    let mut replaced = BTreeSet::new();
    for i in &installs {
        i.staged.add_to_cut(&mut cut);
        let marked = i.partitions.iter().map(|p| (*p, i.marker));
        ns_manifest.installs.extend(marked);
        max_lut_ms = max_lut_ms.max(i.staged.max_lut_ms());
        replaced.extend(i.partitions.iter().copied());
    }
    let staged = installs.iter().flat_map(|i| i.staged.entries().iter());
    let staged_count: u64 = installs
        .iter()
        .map(|i| i.staged.entries().len() as u64)
        .sum();
    ns_manifest.blocks = cut.table.clone();
    let kept = (0..PARTITION_COUNT as u16)
        .filter(|p| !replaced.contains(p))
        .map(|p| state.index.partition(p));
    let count = kept.clone().map(|p| p.len() as u64).sum::<u64>() + staged_count;
    let header = IndexHeader {
        checkpoint_seq: seq,
        max_lut_ms,
        sets: state.sets.names().to_vec(),
        entries: count,
    };
    let all = kept.flat_map(|p| p.entries().iter()).chain(staged);
    let job = NsJob {
        dir: state.dir.clone(),
        cut,
        index_bytes: checkpoint::encode_index(&header, all),
    };
    Ok((ns_manifest, job, count))
}

/// The failure of a group commit, for each install in it (`io::Error` is
/// not `Clone`): the same variant, path and message.
fn copy_of(e: &Error) -> Error {
    let io = |source: &std::io::Error| std::io::Error::new(source.kind(), source.to_string());
    match e {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: io(source),
        },
        Error::SyncFailed { path, source } => Error::SyncFailed {
            path: path.clone(),
            source: io(source),
        },
        Error::Corruption {
            path,
            offset,
            reason,
        } => Error::Corruption {
            path: path.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        Error::Parameter(m) => Error::Parameter(m.clone()),
        Error::StopWrites(m) => Error::StopWrites(m.clone()),
        Error::Poisoned(m) => Error::Poisoned(m.clone()),
        other => Error::Config(other.to_string()),
    }
}

fn has_block_files(fs: &dyn EngineFs, dir: &Path) -> bool {
    fs.list(dir).is_ok_and(|namespaces| {
        namespaces.iter().any(|ns| {
            fs.list(&dir.join(ns)).is_ok_and(|files| {
                files
                    .iter()
                    .any(|f| format::parse_block_file_name(f).is_some())
            })
        })
    })
}

impl Engine {
    /// Opens (or creates) the engine in `config.dir` and recovers the state of
    /// the last checkpoint. See the crate docs for the recovery rule.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        config.validate()?;
        let fs = &*config.fs;
        fs.create_dir_all(&config.dir).at(&config.dir)?;
        let manifest_path = config.dir.join(format::MANIFEST_FILE);
        let manifest = match Manifest::read(fs, &manifest_path)? {
            Some(m) => m,
            None if has_block_files(fs, &config.dir) => {
                return Err(Error::corruption(
                    &manifest_path,
                    0,
                    "MANIFEST is missing but block files exist",
                ));
            }
            None => {
                let fresh = Manifest::default();
                checkpoint::write_atomically(fs, &manifest_path, &fresh.encode())?;
                fresh
            }
        };
        let mut namespaces = BTreeMap::new();
        let mut recovery = RecoveryReport {
            checkpoint_seq: manifest.checkpoint_seq,
            ..RecoveryReport::default()
        };
        for cfg in &config.namespaces {
            let (state, report) = recovery::open_namespace(
                &config.fs,
                cfg,
                &config.dir.join(&cfg.name),
                manifest.namespaces.get(&cfg.name),
                manifest.checkpoint_seq,
                config.read_mode,
            )?;
            recovery.namespaces.insert(cfg.name.clone(), report);
            namespaces.insert(
                cfg.name.clone(),
                Arc::new(Namespace {
                    state: RwLock::new(state),
                }),
            );
        }
        let unconfigured = manifest
            .namespaces
            .iter()
            .filter(|(name, _)| !namespaces.contains_key(*name))
            .map(|(name, ns)| (name.clone(), ns.clone()))
            .collect();
        Ok(Engine {
            config,
            namespaces,
            logs: Mutex::new(Logs {
                applied: manifest.logs.clone(),
                durable: manifest.logs.clone(),
            }),
            next_seq: AtomicU64::new(manifest.next_seq.max(1)),
            checkpoint: Mutex::new(CheckpointState {
                seq: manifest.checkpoint_seq,
                last_ms: None,
            }),
            install_queue: Mutex::new(Vec::new()),
            unconfigured,
            recovery,
            poisoned: Mutex::new(None),
        })
    }

    /// Why the engine refuses writes (a failed fsync), if it does.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.poisoned).clone()
    }

    /// Whether the engine is poisoned (and why) and which namespaces refuse
    /// writes at their thresholds. Takes each namespace's read lock briefly.
    pub fn health(&self) -> Health {
        let stop_writes = self
            .namespaces
            .iter()
            .filter_map(|(name, ns)| match ns.read().check_stop_writes() {
                Err(e) => Some((name.clone(), e.to_string())),
                Ok(()) => None,
            })
            .collect();
        Health {
            poisoned: self.poisoned(),
            stop_writes,
        }
    }

    pub(crate) fn check_healthy(&self) -> Result<()> {
        match lock(&self.poisoned).as_ref() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// A failed fsync poisons the engine: the kernel may have dropped the
    /// unsynced pages and cleared the error, so a retry that succeeds would
    /// report data durable that is not. Failed writes do not poison: the
    /// bytes are still in RAM and a positional write can be retried.
    fn poison_on_sync_failure<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e @ Error::SyncFailed { .. }) = &result {
            tracing::error!(error = %e, "fsync failed; the engine refuses writes until reopened");
            lock(&self.poisoned).get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// What recovery found at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The settings the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The engine directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    pub(crate) fn namespace(&self, name: &str) -> Result<&Arc<Namespace>> {
        self.namespaces
            .get(name)
            .ok_or_else(|| Error::NamespaceNotFound(name.to_string()))
    }

    /// Applies the command at `index` of log `log_id`, with the leader's clock
    /// `now_ms`. Record errors count as applied; system errors do not.
    pub fn apply(&self, log_id: u64, index: u64, now_ms: u64, cmd: &Command) -> Result<Outcome> {
        self.check_healthy()?;
        let applied = self.applied_index(log_id);
        if index <= applied {
            return Err(Error::IndexNotAfterApplied {
                log_id,
                index,
                applied,
            });
        }
        let Ok(ns) = self.namespace(cmd.namespace()) else {
            self.note_applied(log_id, index);
            return Err(Error::NamespaceNotFound(cmd.namespace().to_string()));
        };
        let mut state = ns.write();
        let stamp = Stamp {
            log_id,
            index,
            now_ms,
        };
        let result = state.apply(stamp, &self.next_seq, cmd);
        if result
            .as_ref()
            .map_or_else(Error::is_record_error, |_| true)
        {
            // Under the namespace lock, so a checkpoint sees state and index
            // together.
            lock(&self.logs).applied.insert(log_id, index);
        }
        result
    }

    /// Advances a log's applied index past entries that carry no engine command.
    pub fn note_applied(&self, log_id: u64, index: u64) {
        let mut logs = lock(&self.logs);
        let applied = logs.applied.entry(log_id).or_insert(0);
        *applied = (*applied).max(index);
    }

    /// Highest index applied for a log (0 if none).
    pub fn applied_index(&self, log_id: u64) -> u64 {
        lock(&self.logs).applied.get(&log_id).copied().unwrap_or(0)
    }

    /// Every command of the log up to this index is on disk in the engine and
    /// survives a crash; the WAL must replay from the next one.
    pub fn durable_applied_index(&self, log_id: u64) -> u64 {
        lock(&self.logs).durable.get(&log_id).copied().unwrap_or(0)
    }

    /// Point read at `now_ms` (expired records are invisible).
    pub fn get(
        &self,
        ns: &str,
        digest: &Digest,
        bins: &BinSelection,
        now_ms: u64,
    ) -> Result<Option<RecordView>> {
        self.namespace(ns)?.read().get(digest, bins, now_ms)
    }

    /// True if the record exists at `now_ms`. RAM only.
    pub fn exists(&self, ns: &str, digest: &Digest, now_ms: u64) -> Result<bool> {
        Ok(self.namespace(ns)?.read().visible(digest, now_ms).is_some())
    }

    /// Makes everything applied so far durable: writes out and fsyncs blocks,
    /// writes each namespace's `index.ckpt` and then the `MANIFEST`, advances
    /// `durable_applied_index`, and deletes blocks the checkpoint no longer
    /// needs. Writers wait only while the index is copied into a buffer.
    ///
    /// On error `durable_applied_index` stays where it was. A failed write
    /// can be retried by the next checkpoint; a failed fsync poisons the
    /// engine ([`Error::SyncFailed`], then [`Error::Poisoned`]).
    pub fn checkpoint(&self) -> Result<CheckpointStats> {
        self.check_healthy()?;
        let mut ck = lock(&self.checkpoint);
        let (stats, jobs) = self.checkpoint_with(&mut ck, &mut [])?;
        self.release_after_checkpoint(&jobs)?;
        Ok(stats)
    }

    /// Commits an install: one checkpoint whose cut holds the staged
    /// records, swapped in once its `MANIFEST` is durable (see `install.rs`),
    /// together with every other install queued meanwhile.
    pub(crate) fn commit_install(&self, plan: &Arc<Mutex<Plan>>) -> Result<()> {
        self.check_healthy()?;
        let outcome = Arc::new(Mutex::new(None));
        lock(&self.install_queue).push(QueuedInstall {
            plan: plan.clone(),
            outcome: outcome.clone(),
        });
        {
            let mut ck = lock(&self.checkpoint);
            let queued = std::mem::take(&mut *lock(&self.install_queue));
            if !queued.is_empty() {
                self.commit_queued(&mut ck, &queued);
            }
        }
        // Queued before the checkpoint lock was taken, and whoever empties
        // the queue answers every install in it before letting that lock go:
        // the outcome is there.
        lock(&outcome).take().unwrap_or_else(|| {
            Err(Error::Config(
                "an install's commit was never answered".to_string(),
            ))
        })
    }

    /// One checkpoint holding every `queued` install; each gets the outcome.
    fn commit_queued(&self, ck: &mut CheckpointState, queued: &[QueuedInstall]) {
        let mut guards: Vec<_> = queued.iter().map(|q| lock(&q.plan)).collect();
        let mut plans: Vec<&mut Plan> = guards.iter_mut().map(|g| &mut **g).collect();
        let committed = self.checkpoint_with(ck, &mut plans);
        if let Ok((_, jobs)) = &committed {
            // The installs are durable and visible: a freed block whose file
            // could not be deleted (logged) is deleted by the next open, and
            // failing the installs for it would tell their callers a lie.
            let _ = self.release_after_checkpoint(jobs);
        }
        for q in queued {
            let outcome = match &committed {
                Ok(_) => Ok(()),
                Err(e) => Err(copy_of(e)),
            };
            *lock(&q.outcome) = Some(outcome);
        }
    }

    /// One checkpoint under the checkpoint lock, with the staged records of
    /// `installs` in it; `durable_applied_index` (and the installs) are
    /// published once the `MANIFEST` is durable.
    fn checkpoint_with(
        &self,
        ck: &mut CheckpointState,
        installs: &mut [&mut Plan],
    ) -> Result<(CheckpointStats, Vec<NsJob>)> {
        let seq = ck.seq + 1;
        let (manifest, jobs, entries) = self.cut_for_checkpoint(seq, installs)?;
        let written = self.write_checkpoint(&manifest, &jobs);
        let index_bytes = self.poison_on_sync_failure(written)?;
        ck.seq = seq;
        if installs.is_empty() {
            lock(&self.logs).durable = manifest.logs.clone();
        } else {
            self.swap_in_installs(&manifest, installs);
        }
        let stats = CheckpointStats {
            checkpoint_seq: seq,
            entries,
            index_bytes,
        };
        Ok((stats, jobs))
    }

    /// Under every namespace lock: the installed partitions' contents, the
    /// logs' applied indices and the durable indices change together.
    fn swap_in_installs(&self, manifest: &Manifest, installs: &mut [&mut Plan]) {
        let mut guards = self.lock_all();
        for (name, state) in &mut guards {
            for plan in installs.iter_mut() {
                if let Some(staged) = plan.namespaces.get_mut(*name) {
                    staged.swap_in(state, &plan.partitions, plan.marker);
                }
            }
        }
        let mut logs = lock(&self.logs);
        for plan in installs.iter() {
            logs.applied.insert(plan.log_id, plan.applied_index);
        }
        logs.durable = manifest.logs.clone();
    }

    /// Every namespace's write lock, in the engine's order (the only order
    /// anyone takes several in).
    fn lock_all(&self) -> Vec<(&String, RwLockWriteGuard<'_, NsState>)> {
        self.namespaces
            .iter()
            .map(|(n, ns)| (n, ns.write()))
            .collect()
    }

    /// The consistent cut, under every namespace lock: the manifest to write,
    /// each namespace's blocks and index bytes, and the entry count. With
    /// `installs`, as if their partitions were already swapped in.
    fn cut_for_checkpoint(
        &self,
        seq: u64,
        installs: &mut [&mut Plan],
    ) -> Result<(Manifest, Vec<NsJob>, u64)> {
        let mut manifest = Manifest {
            checkpoint_seq: seq,
            namespaces: self.unconfigured.clone(),
            ..Manifest::default()
        };
        let mut jobs = Vec::new();
        let mut entries = 0u64;
        let mut guards = self.lock_all();
        manifest.logs = lock(&self.logs).applied.clone();
        for plan in installs.iter() {
            manifest.logs.insert(plan.log_id, plan.applied_index);
        }
        manifest.next_seq = self.next_seq.load(Ordering::SeqCst);
        for (name, state) in &mut guards {
            let ns_installs = installs
                .iter_mut()
                .filter_map(|plan| plan.for_namespace(name))
                .collect();
            let (ns_manifest, job, n) = cut_namespace(state, seq, ns_installs)?;
            entries += n;
            manifest.namespaces.insert((*name).clone(), ns_manifest);
            jobs.push(job);
        }
        Ok((manifest, jobs, entries))
    }

    /// Without locks: fsyncs the blocks, writes every `index.ckpt`, then the
    /// `MANIFEST`. Returns the index bytes written.
    fn write_checkpoint(&self, manifest: &Manifest, jobs: &[NsJob]) -> Result<u64> {
        let fs = &*self.config.fs;
        let mut index_bytes = 0u64;
        for job in jobs {
            for (path, file) in &job.cut.files {
                file.sync_data().synced_at(path)?;
            }
            checkpoint::sync_dir(fs, &job.dir)?;
            let index_path = job.dir.join(format::INDEX_FILE);
            checkpoint::write_atomically(fs, &index_path, &job.index_bytes)?;
            index_bytes += job.index_bytes.len() as u64;
        }
        checkpoint::write_atomically(fs, &self.manifest_path(), &manifest.encode())?;
        Ok(index_bytes)
    }

    /// After the manifest is durable: notes what is synced and deletes the
    /// blocks it left out, in every namespace even if one fails.
    fn release_after_checkpoint(&self, jobs: &[NsJob]) -> Result<()> {
        let mut first_error = None;
        for (ns, job) in self.namespaces.values().zip(jobs) {
            let mut state = ns.write();
            state.blocks.mark_synced(&job.cut.table);
            if let Err(e) = state.blocks.release_dropped() {
                tracing::warn!(error = %e, "a freed block could not be deleted; the next open will");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Clean shutdown: a final checkpoint, so the next open is a fast start
    /// with nothing to replay.
    pub fn close(self) -> Result<()> {
        self.checkpoint().map(|_| ())
    }

    /// Periodic work for a caller's timer, with the local clock `now_ms`:
    /// writes out current blocks older than `flush_interval_ms` and takes a
    /// checkpoint every `checkpoint_interval_ms`.
    pub fn tick(&self, now_ms: u64) -> Result<()> {
        self.check_healthy()?;
        for ns in self.namespaces.values() {
            let mut state = ns.write();
            if now_ms.saturating_sub(state.last_flush_ms) >= state.cfg.flush_interval_ms {
                state.blocks.flush()?;
                state.last_flush_ms = now_ms;
            }
            state.refresh_index_bytes();
        }
        let due = {
            let mut ck = lock(&self.checkpoint);
            let interval = self.config.checkpoint_interval_ms;
            match ck.last_ms {
                None => {
                    ck.last_ms = Some(now_ms);
                    false
                }
                Some(last) => interval > 0 && now_ms.saturating_sub(last) >= interval,
            }
        };
        if due {
            self.checkpoint()?;
            lock(&self.checkpoint).last_ms = Some(now_ms);
        }
        Ok(())
    }

    /// Defragments sparse blocks, examining at most about `max_bytes` of record
    /// versions in all (the rate limit: call it from a timer).
    pub fn defrag_step(&self, max_bytes: u64) -> Result<DefragProgress> {
        self.check_healthy()?;
        let mut total = DefragProgress::default();
        for ns in self.namespaces.values() {
            let left = max_bytes.saturating_sub(total.bytes_examined);
            if left == 0 {
                break;
            }
            let p = ns.write().defrag_step(left)?;
            total.bytes_examined += p.bytes_examined;
            total.bytes_moved += p.bytes_moved;
            total.blocks_done += p.blocks_done;
        }
        Ok(total)
    }

    /// Reclaims up to `max_records` records expired at `now_ms` (pass a clock
    /// no later than the `now_ms` of the commands being applied).
    pub fn reclaim_expired(&self, now_ms: u64, max_records: usize) -> Result<usize> {
        self.check_healthy()?;
        let mut done = 0;
        for ns in self.namespaces.values() {
            if done >= max_records {
                break;
            }
            done += ns
                .write()
                .reclaim_expired(now_ms, max_records - done, &self.next_seq)?;
        }
        Ok(done)
    }

    /// RAM of every namespace's primary index, bytes (what one index
    /// checkpoint writes, about): cheap, unlike [`Engine::stats`], which
    /// walks every index.
    pub fn index_bytes(&self) -> u64 {
        self.namespaces
            .values()
            .map(|ns| ns.read().index.memory_bytes() as u64)
            .sum()
    }

    /// Figures per namespace.
    pub fn stats(&self) -> Vec<NamespaceStats> {
        self.namespaces
            .iter()
            .map(|(name, ns)| {
                let state = ns.read();
                let tombstones = state.index.iter().filter(|e| e.is_tombstone()).count() as u64;
                NamespaceStats {
                    name: name.clone(),
                    records: state.index.len() as u64 - tombstones,
                    tombstones,
                    index_bytes: state.index.memory_bytes() as u64,
                    used_bytes: state.blocks.used_bytes(),
                    size_limit_bytes: state.cfg.size_limit_bytes,
                    blocks: state
                        .blocks
                        .blocks()
                        .iter()
                        .map(|(id, b)| BlockStats {
                            id: *id,
                            len_bytes: b.len_bytes,
                            live_bytes: b.live_bytes,
                            state: b.state,
                        })
                        .collect(),
                    counters: state.counters,
                }
            })
            .collect()
    }

    /// Path of the engine's manifest.
    pub fn manifest_path(&self) -> PathBuf {
        self.config.dir.join(format::MANIFEST_FILE)
    }
}
