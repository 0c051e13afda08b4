//! One apply loop per shard: committed entries in log order into the engine,
//! results back to waiting proposers, and scheduled snapshots taken between
//! two entries (where the engine's view of the shard is exactly at one index).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerie_engine::{Engine, Outcome};
use aerie_snapshot::{Capture, Retention, ShardMeta, WriteOptions};
use raft::prelude::{Entry, EntryType};

use crate::codec::{Proposal, SnapshotRef};
use crate::error::{Error, Result};
use crate::storage::SnapshotSlot;

/// Called exactly once with an answer (a channel send, a future's wake-up:
/// the caller chooses).
pub struct Callback<T>(Box<dyn FnOnce(Result<T>) + Send>);

impl<T> Callback<T> {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce(Result<T>) + Send + 'static) -> Callback<T> {
        Callback(Box::new(f))
    }

    /// Answers.
    pub fn send(self, result: Result<T>) {
        (self.0)(result);
    }
}

/// The answer a proposer waits for: the engine's outcome (record-level
/// errors come as `Error::Engine`) or why there is none.
pub type Reply = Callback<Outcome>;

/// A proposal this node made and is waiting on.
pub struct Waiter {
    /// Where the leader appended it.
    pub index: u64,
    /// The proposer.
    pub reply: Reply,
}

/// The proposals of one shard in flight on this node, by proposal id.
#[derive(Default)]
pub struct Pending {
    /// Waiting proposers.
    pub by_id: HashMap<u64, Waiter>,
}

impl Pending {
    /// Fails every waiter (leadership lost: their outcome is unknown).
    pub fn fail_all(&mut self, error: impl Fn() -> Error) {
        for (_, waiter) in self.by_id.drain() {
            waiter.reply.send(Err(error()));
        }
    }

    /// Fails waiters whose index is applied without their proposal: another
    /// entry took their place.
    fn drop_overtaken(&mut self, applied: u64, shard: u32) {
        let gone: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.index <= applied)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(w) = self.by_id.remove(&id) {
                w.reply.send(Err(Error::Dropped(shard)));
            }
        }
    }
}

/// Work for an apply loop.
pub enum ApplyTask {
    /// Committed entries, in order.
    Entries(Vec<Entry>),
    /// Answered once everything handed before it is applied.
    Barrier(SyncSender<()>),
    /// Take a snapshot now if one is wanted (no entries needed).
    CheckSnapshot,
}

/// When to take snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// Take one once this many entries were applied since the last (0 = never).
    pub every_entries: u64,
    /// Take one once this long has passed since the last (0 = never).
    pub every_ms: u64,
    /// Snapshots kept per shard.
    pub keep: usize,
    /// Compression.
    pub options: WriteOptions,
}

/// What an apply loop needs.
pub struct ApplyContext {
    pub shard: u32,
    pub log_id: u64,
    pub node_id: u64,
    pub engine: Arc<Engine>,
    pub pending: Arc<Mutex<Pending>>,
    pub applied: Arc<AtomicU64>,
    pub snapshots: Arc<SnapshotSlot>,
    pub snapshot_dir: PathBuf,
    pub shard_meta: ShardMeta,
    pub policy: SnapshotPolicy,
    /// Tells the ready loop how far this shard got.
    pub notify: Box<dyn Fn(u32, u64) + Send>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Progress {
    last_term: u64,
    since_snapshot: u64,
    snapshot_at: Instant,
    writing: Option<std::thread::JoinHandle<()>>,
}

/// Runs until the task channel closes. An engine system error stops the loop:
/// the shard must not apply past an entry it failed to apply.
pub fn run(ctx: ApplyContext, tasks: Receiver<ApplyTask>) {
    let mut progress = Progress {
        last_term: 0,
        since_snapshot: 0,
        snapshot_at: Instant::now(),
        writing: None,
    };
    for task in tasks {
        match task {
            ApplyTask::Barrier(done) => {
                let _ = done.send(());
            }
            ApplyTask::CheckSnapshot => maybe_snapshot(&ctx, &mut progress),
            ApplyTask::Entries(entries) => {
                if let Err(e) = apply_entries(&ctx, &entries, &mut progress) {
                    tracing::error!(shard = ctx.shard, error = %e, "apply loop stopped");
                    lock(&ctx.pending).fail_all(|| Error::Stopped);
                    return;
                }
                maybe_snapshot(&ctx, &mut progress);
            }
        }
    }
    if let Some(handle) = progress.writing.take() {
        let _ = handle.join();
    }
}

fn apply_entries(ctx: &ApplyContext, entries: &[Entry], progress: &mut Progress) -> Result<()> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    for entry in entries {
        // Already in the engine (it restarted from a later durable state, or
        // a snapshot covered it).
        if entry.index <= ctx.engine.applied_index(ctx.log_id) {
            continue;
        }
        apply_one(ctx, entry)?;
        progress.since_snapshot += 1;
    }
    progress.last_term = last.term;
    ctx.applied.store(last.index, Ordering::SeqCst);
    lock(&ctx.pending).drop_overtaken(last.index, ctx.shard);
    (ctx.notify)(ctx.shard, last.index);
    Ok(())
}

fn apply_one(ctx: &ApplyContext, entry: &Entry) -> Result<()> {
    let proposal = match entry.get_entry_type() {
        EntryType::EntryNormal if !entry.data.is_empty() => Some(Proposal::decode(&entry.data)?),
        _ => None,
    };
    let Some(proposal) = proposal else {
        ctx.engine.note_applied(ctx.log_id, entry.index);
        return Ok(());
    };
    let result = ctx
        .engine
        .apply(ctx.log_id, entry.index, proposal.now_ms, &proposal.command);
    let system_error = result
        .as_ref()
        .err()
        .filter(|e| !e.is_record_error())
        .map(|e| e.to_string());
    if let Some(waiter) = lock(&ctx.pending).by_id.remove(&proposal.id) {
        waiter.reply.send(result.map_err(Error::Engine));
    }
    match system_error {
        Some(reason) => Err(Error::ApplyFailed {
            index: entry.index,
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether a snapshot is due: by entries, by time, or because raft wants one
/// for a follower.
fn snapshot_due(ctx: &ApplyContext, progress: &Progress) -> bool {
    let policy = &ctx.policy;
    let by_entries = policy.every_entries > 0 && progress.since_snapshot >= policy.every_entries;
    let by_time = policy.every_ms > 0
        && progress.since_snapshot > 0
        && progress.snapshot_at.elapsed() >= Duration::from_millis(policy.every_ms);
    by_entries || by_time || ctx.snapshots.wanted.load(Ordering::SeqCst)
}

fn maybe_snapshot(ctx: &ApplyContext, progress: &mut Progress) {
    if progress.writing.as_ref().is_some_and(|h| !h.is_finished()) || !snapshot_due(ctx, progress) {
        return;
    }
    if let Some(handle) = progress.writing.take() {
        let _ = handle.join();
    }
    // Between two entries of this shard: the views are at exactly one index.
    let capture = match Capture::take(&ctx.engine, ctx.log_id, &ctx.shard_meta.partitions) {
        Ok(capture) => capture,
        Err(e) => {
            tracing::warn!(shard = ctx.shard, error = %e, "snapshot capture failed");
            return;
        }
    };
    ctx.snapshots.wanted.store(false, Ordering::SeqCst);
    progress.since_snapshot = 0;
    progress.snapshot_at = Instant::now();
    let term = progress.last_term;
    let job = SnapshotJob {
        dir: ctx.snapshot_dir.clone(),
        meta: ctx.shard_meta.clone(),
        node_id: ctx.node_id,
        slot: ctx.snapshots.clone(),
        keep: ctx.policy.keep,
        options: ctx.policy.options,
    };
    progress.writing = std::thread::Builder::new()
        .name(format!("snapshot-{}", ctx.shard))
        .spawn(move || job.write(capture, term))
        .ok();
}

struct SnapshotJob {
    dir: PathBuf,
    meta: ShardMeta,
    node_id: u64,
    slot: Arc<SnapshotSlot>,
    keep: usize,
    options: WriteOptions,
}

impl SnapshotJob {
    fn write(self, capture: Capture, term: u64) {
        let now_ms = crate::node::now_ms();
        match capture.write(&self.dir, &self.meta, term, now_ms, self.options, |_| {}) {
            Ok(info) => {
                let reference = SnapshotRef {
                    node_id: self.node_id,
                    file_name: file_name(&info.path),
                    file_bytes: info.file_bytes,
                };
                *lock(&self.slot.newest) = Some((info.header.index, term, reference));
                let retention = Retention {
                    keep_newest: Some(self.keep.max(1)),
                    keep_younger_than_ms: None,
                };
                if let Err(e) = aerie_snapshot::apply_retention(&self.dir, retention, now_ms) {
                    tracing::warn!(error = %e, "snapshot retention failed");
                }
            }
            Err(e) => tracing::warn!(shard = self.meta.shard_id, error = %e, "snapshot failed"),
        }
    }
}

/// The file name part of a path.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
