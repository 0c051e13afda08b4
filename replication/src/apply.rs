//! One apply loop per shard: committed entries in log order into the engine,
//! results back to waiting proposers, and scheduled snapshots taken between
//! two entries (where the engine's view of the shard is exactly at one index).

use crate::lock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerie_engine::{Engine, Outcome};
use aerie_snapshot::{Capture, Retention, ShardMeta, WriteOptions};
use raft::prelude::{Entry, EntryType};

use crate::check::{Checks, Control};
use crate::codec::{Proposal, SnapshotRef};
use crate::error::{Error, Result};
use crate::health::{Gate, Stall};
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

/// A proposal this node made as leader and is waiting on.
pub struct Waiter {
    /// Where it was appended: the index and term this node's raft gave it
    /// (an entry at `index` of another term is not this proposal: it was
    /// overwritten, or replayed from an earlier boot, whatever its proposal
    /// id says).
    pub at: Appended,
    /// The proposer.
    pub reply: Reply,
}

/// Where a waiting proposal was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index.
    pub index: u64,
    /// Term.
    pub term: u64,
}

/// The proposals of one shard in flight on this node, by proposal id.
#[derive(Default)]
pub struct Pending {
    /// Waiting proposers.
    pub by_id: HashMap<u64, Waiter>,
}

impl Pending {
    /// Fails every waiter (leadership lost or the node stopping: their
    /// entries were appended, so their outcome is unknown).
    pub fn fail_all(&mut self, error: impl Fn() -> Error) {
        for (_, waiter) in self.by_id.drain() {
            waiter.reply.send(Err(error()));
        }
    }

    /// Takes the waiter of `proposal_id` if it is the proposal at `(index,
    /// term)`.
    fn take(&mut self, proposal_id: u64, index: u64, term: u64) -> Option<Waiter> {
        let waiter = self.by_id.get(&proposal_id)?;
        if waiter.at != (Appended { index, term }) {
            return None;
        }
        self.by_id.remove(&proposal_id)
    }

    /// Fails waiters whose index is applied without their proposal: another
    /// entry took their place.
    fn drop_overtaken(&mut self, applied: u64, shard: u32) {
        let gone: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.at.index <= applied)
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

/// When to take snapshots. Each trigger bounds the log a shard keeps (the
/// log is compacted only behind a snapshot), so the WAL's disk use stays
/// bounded whatever the write pattern.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// Take one once this many entries were applied since the last (0 = never).
    pub every_entries: u64,
    /// Take one once this many bytes of entries were applied since the last
    /// (0 = never).
    pub every_bytes: u64,
    /// Take one once this long has passed since the last, if anything was
    /// applied meanwhile (0 = never).
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
    /// The term of the entry at the engine's applied index when the loop
    /// starts (0 if unknown: no snapshot is taken before an entry applies).
    pub applied_term: u64,
    /// Where a stalled apply is reported (writes to the shard are refused
    /// meanwhile).
    pub gate: Arc<Gate>,
    /// The replicated clock: the largest `now_ms` applied by any shard, the
    /// clock the engine's expiry runs on.
    pub clock_ms: Arc<AtomicU64>,
    /// Set when the node stops: a retrying apply gives up.
    pub stopping: Arc<AtomicBool>,
    /// Tells the ready loop how far this shard got.
    pub notify: Box<dyn Fn(u32, u64) + Send>,
    /// Where this node's damaged replicas are marked.
    pub damage: Arc<crate::repair::Damage>,
    /// The ready loop's queue, for a check's report.
    pub(crate) control: SyncSender<crate::node::Input>,
}

/// First wait before retrying an entry the engine failed to apply.
const RETRY_FIRST_MS: u64 = 10;
/// Longest wait between two retries.
const RETRY_MAX_MS: u64 = 1000;

struct Progress {
    last_term: u64,
    since_snapshot: u64,
    bytes_since_snapshot: u64,
    snapshot_at: Instant,
    writing: Option<std::thread::JoinHandle<()>>,
    checks: Checks,
}

/// The node stopped while an entry was being retried.
struct Stopping;

/// Runs until the task channel closes or the node stops. An entry the engine
/// fails to apply (a system error: I/O, corruption, poison) is retried with
/// backoff, never skipped: the shard must not apply past it. Its proposer
/// keeps waiting (its deadline answers it in-doubt) and new writes to the
/// shard are refused meanwhile.
pub fn run(ctx: ApplyContext, tasks: Receiver<ApplyTask>) {
    let newest = lock(&ctx.snapshots.newest).as_ref().map_or(0, |s| s.0);
    let mut progress = Progress {
        last_term: ctx.applied_term,
        // Entries applied before this boot and not covered by a snapshot
        // count too: otherwise a quiet shard never reaches the trigger.
        since_snapshot: ctx.engine.applied_index(ctx.log_id).saturating_sub(newest),
        bytes_since_snapshot: 0,
        snapshot_at: Instant::now(),
        writing: None,
        checks: Checks::default(),
    };
    for task in tasks {
        match task {
            ApplyTask::Barrier(done) => {
                let _ = done.send(());
            }
            ApplyTask::CheckSnapshot => maybe_snapshot(&ctx, &mut progress),
            ApplyTask::Entries(entries) => {
                if apply_entries(&ctx, &entries, &mut progress).is_err() {
                    break;
                }
                maybe_snapshot(&ctx, &mut progress);
            }
        }
    }
    if let Some(handle) = progress.writing.take() {
        let _ = handle.join();
    }
    progress.checks.finish();
}

fn apply_entries(
    ctx: &ApplyContext,
    entries: &[Entry],
    progress: &mut Progress,
) -> Result<(), Stopping> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    debug_assert!(
        entries.windows(2).all(|w| w[1].index == w[0].index + 1),
        "committed entries handed out of order"
    );
    for entry in entries {
        // Already in the engine (it restarted from a later durable state, or
        // a snapshot covered it).
        let applied = ctx.engine.applied_index(ctx.log_id);
        if entry.index <= applied {
            if entry.index == applied {
                progress.last_term = entry.term;
            }
            continue;
        }
        if let Some(control) = control_of(ctx, entry) {
            progress.checks.apply(ctx, entry.index, control);
            ctx.engine.note_applied(ctx.log_id, entry.index);
        } else {
            apply_with_retry(ctx, entry)?;
        }
        // The term of the engine's applied index, for the next snapshot.
        progress.last_term = entry.term;
        progress.since_snapshot += 1;
        progress.bytes_since_snapshot += entry.data.len() as u64;
    }
    ctx.applied.store(last.index, Ordering::SeqCst);
    lock(&ctx.pending).drop_overtaken(last.index, ctx.shard);
    (ctx.notify)(ctx.shard, last.index);
    Ok(())
}

/// The consistency-check entry `entry` carries, if it is one: an empty
/// normal entry with a context (a leader's no-op has none).
fn control_of(ctx: &ApplyContext, entry: &Entry) -> Option<Control> {
    if entry.get_entry_type() != EntryType::EntryNormal
        || !entry.data.is_empty()
        || entry.context.is_empty()
    {
        return None;
    }
    match Control::decode(&entry.context) {
        Ok(control) => Some(control),
        Err(e) => {
            // Not from this version: it changes no record, so it is skipped.
            tracing::warn!(shard = ctx.shard, index = entry.index, error = %e, "a control entry that does not decode is skipped");
            None
        }
    }
}

/// Applies one entry, retrying a system error with backoff until it applies,
/// a snapshot installed past it (a damaged replica rebuilt), or the node
/// stops.
fn apply_with_retry(ctx: &ApplyContext, entry: &Entry) -> Result<(), Stopping> {
    let mut wait_ms = RETRY_FIRST_MS;
    let mut failures = 0u64;
    loop {
        if failures > 0 && ctx.engine.applied_index(ctx.log_id) >= entry.index {
            break;
        }
        match apply_one(ctx, entry) {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                note_stall(ctx, entry.index, &e, failures);
            }
        }
        if ctx.stopping.load(Ordering::SeqCst) {
            return Err(Stopping);
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        wait_ms = (wait_ms * 2).min(RETRY_MAX_MS);
    }
    if failures > 0 {
        tracing::info!(
            shard = ctx.shard,
            index = entry.index,
            failures,
            "a stalled entry applied; writes resume"
        );
        ctx.gate.set_stall(ctx.shard, None);
    }
    Ok(())
}

/// Reports a failed attempt: the shard's stall (refusing new writes), and a
/// log line on the first failure and then every hundredth.
fn note_stall(ctx: &ApplyContext, index: u64, error: &aerie_engine::Error, failures: u64) {
    let out_of_space = matches!(
        error,
        aerie_engine::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull
    );
    if let aerie_engine::Error::Corruption { .. } = error {
        ctx.damage.mark(ctx.shard, &error.to_string());
    }
    if failures == 1 || failures.is_multiple_of(100) {
        tracing::error!(shard = ctx.shard, index, failures, error = %error, "applying a committed entry failed; retrying, writes to this shard are refused meanwhile");
    }
    ctx.gate.set_stall(
        ctx.shard,
        Some(Stall {
            index,
            reason: error.to_string(),
            out_of_space,
        }),
    );
}

/// Applies one entry. `Err` is a system error: nothing was applied and the
/// waiter, if any, keeps waiting. A record error counts as applied and is
/// the waiter's answer.
fn apply_one(ctx: &ApplyContext, entry: &Entry) -> Result<(), aerie_engine::Error> {
    let proposal = match entry.get_entry_type() {
        EntryType::EntryNormal if !entry.data.is_empty() => match Proposal::decode(&entry.data) {
            Ok(proposal) => Some(proposal),
            Err(e) => {
                return Err(aerie_engine::Error::Corruption {
                    path: PathBuf::from(format!("raft log of shard {}", ctx.shard)),
                    offset: entry.index,
                    reason: e.to_string(),
                });
            }
        },
        _ => None,
    };
    let Some(proposal) = proposal else {
        ctx.engine.note_applied(ctx.log_id, entry.index);
        return Ok(());
    };
    let result = ctx
        .engine
        .apply(ctx.log_id, entry.index, proposal.now_ms, &proposal.command);
    match result {
        Err(e) if !e.is_record_error() => Err(e),
        result => {
            ctx.clock_ms.fetch_max(proposal.now_ms, Ordering::SeqCst);
            let waiter = lock(&ctx.pending).take(proposal.id, entry.index, entry.term);
            if let Some(waiter) = waiter {
                waiter.reply.send(result.map_err(Error::Engine));
            }
            Ok(())
        }
    }
}

/// Whether a snapshot is due: by entries, by time, or because raft wants one
/// for a follower.
fn snapshot_due(ctx: &ApplyContext, progress: &Progress) -> bool {
    let policy = &ctx.policy;
    let by_entries = policy.every_entries > 0 && progress.since_snapshot >= policy.every_entries;
    let by_bytes = policy.every_bytes > 0 && progress.bytes_since_snapshot >= policy.every_bytes;
    let by_time = policy.every_ms > 0
        && progress.since_snapshot > 0
        && progress.snapshot_at.elapsed() >= Duration::from_millis(policy.every_ms);
    by_entries || by_bytes || by_time || ctx.snapshots.wanted.load(Ordering::SeqCst)
}

fn maybe_snapshot(ctx: &ApplyContext, progress: &mut Progress) {
    if progress.writing.as_ref().is_some_and(|h| !h.is_finished()) || !snapshot_due(ctx, progress) {
        return;
    }
    // A snapshot's term must be its index's: unknown until an entry applied.
    if progress.last_term == 0 && ctx.engine.applied_index(ctx.log_id) > 0 {
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
    progress.bytes_since_snapshot = 0;
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
