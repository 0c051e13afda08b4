//! One shard as the ready loop holds it: its `RawNode`, the queue to its
//! apply loop, the reads waiting on it; and how a shard is opened from the
//! WAL, its meta file, the engine and the snapshot directory.

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use aerie_engine::Engine;
use aerie_snapshot::{Catalog, ShardMeta};
use aerie_wal::Wal;
use raft::prelude::{Entry, Ready};
use raft::{RawNode, ReadOnlyOption, StateRole};

use crate::apply::{self, ApplyContext, ApplyTask, Pending};
use crate::codec::SnapshotRef;
use crate::error::{Error, Result};
use crate::health::Gate;
use crate::meta::{RaftMeta, meta_path};
use crate::node::{Input, NodeConfig, ShardStatus};
use crate::shards::{ShardMap, log_id, stream_id};
use crate::storage::{ShardStorage, SnapshotSlot, SnapshotSource};
use crate::transport::Envelope;

/// Capacity of each apply loop's queue (batches of entries).
const APPLY_QUEUE: usize = 256;
/// Committed entries held for an apply loop whose queue is full, in bytes,
/// before the shard's readies wait (its raft group stops taking new work
/// until the apply loop catches up; other shards go on).
pub const MAX_BACKLOG_BYTES: u64 = 64 << 20;
/// Committed entries handed over per ready, in bytes (raft-rs
/// `max_committed_size_per_ready`).
const MAX_COMMITTED_BYTES_PER_READY: u64 = 4 << 20;

/// A snapshot being fetched and installed: raft's ready that carried it is
/// held open until the engine has it.
pub struct Installing {
    pub ready: Ready,
    pub chunks: SyncSender<Envelope>,
    pub reference: SnapshotRef,
}

/// A read waiting for its read index, and then for the apply loop.
pub struct PendingRead {
    pub since: Instant,
    pub reply: apply::Callback<()>,
}

pub struct Shard {
    pub id: u32,
    pub log_id: u64,
    pub raw: RawNode<ShardStorage>,
    pub apply: SyncSender<ApplyTask>,
    /// Committed entries the apply queue had no room for, oldest first.
    pub backlog: VecDeque<Vec<Entry>>,
    pub backlog_bytes: u64,
    pub pending: Arc<Mutex<Pending>>,
    pub applied: Arc<AtomicU64>,
    pub snapshots: Arc<SnapshotSlot>,
    /// Reads waiting for raft's read state, by request context.
    pub reads: HashMap<Vec<u8>, PendingRead>,
    /// Reads with a read index, waiting for the apply loop to reach it.
    pub waiting_reads: Vec<(u64, PendingRead)>,
    pub installing: Option<Installing>,
    /// When a failed install may be tried again (raft rebuilt from disk).
    pub retry_install_at: Option<Instant>,
    pub was_leader: bool,
    /// The commit index moved after the last hard state written.
    pub commit_unsaved: bool,
    /// The last leadership transfer the placement asked for here: to whom,
    /// and when.
    pub last_transfer: Option<(u64, Instant)>,
    /// The ready loop wants `Input::Applied` after each applied batch: reads
    /// or a backlog are waiting on the apply loop. Otherwise the apply loop
    /// does not wake the ready loop (a wake-up per batch was a large share
    /// of a node's context switches under writes).
    pub wants_applied: Arc<AtomicBool>,
    /// When the repair of a damaged replica last asked for something (a
    /// leadership transfer, a snapshot).
    pub repair_asked: Option<Instant>,
    /// When this node, leading the shard, proposes its next consistency
    /// check.
    pub next_check_at: Instant,
    /// Learners this node, leading the shard, already sent a snapshot
    /// because they were far behind (see `rebuild::snapshot_far_learners`).
    pub snapshot_forced: Vec<u64>,
}

impl Shard {
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Raft is not to be stepped, ticked or asked for readies: a snapshot is
    /// installing, or a failed install waits to be retried.
    pub fn is_frozen(&self) -> bool {
        self.installing.is_some() || self.retry_install_at.is_some()
    }

    pub fn status(&self) -> ShardStatus {
        let mut status = raft_status(&self.raw, self.id, 0);
        self.refresh_status(&mut status);
        status
    }

    /// Updates the indices, leader and term of a published status in place
    /// (no allocation; the membership lists are refreshed by `status`).
    pub fn refresh_status(&self, status: &mut ShardStatus) {
        status.leader = self.raw.raft.leader_id;
        status.term = self.raw.raft.term;
        status.applied = self.applied.load(Ordering::SeqCst);
        status.commit = self.raw.raft.raft_log.committed;
        status.compacted = self.raw.store().meta().snapshot_index;
    }

    /// Fails what waits on leadership once it is lost: proposals are in the
    /// log, so their outcome is unknown; reads did nothing, so they are
    /// definitely refused.
    pub fn note_role(&mut self) {
        let leader = self.is_leader();
        if self.was_leader && !leader {
            lock(&self.pending).fail_all(|| Error::InDoubt(self.id));
            let not_leader = || Error::NotLeader {
                shard: self.id,
                leader: self.raw.raft.leader_id,
            };
            for (_, read) in self.reads.drain() {
                read.reply.send(Err(not_leader()));
            }
            for (_, read) in self.waiting_reads.drain(..) {
                read.reply.send(Err(not_leader()));
            }
        }
        self.was_leader = leader;
    }

    /// Completes reads whose read index is applied. While the apply loop is
    /// stalled on an entry, a read is also served at the applied state if
    /// every later entry is of this leader's own term: those entries were
    /// all proposed here and none has been answered (answers come only from
    /// this node's apply loop), so no completed write is missing.
    pub fn complete_reads(&mut self, gate: &Gate) {
        self.complete_reads_once(gate);
        if self.note_waiters() {
            // The apply loop may have moved on before it saw the flag: look
            // once more (both sides are SeqCst, so one of them sees the other).
            self.complete_reads_once(gate);
            self.note_waiters();
        }
    }

    /// Sets `wants_applied`; returns it.
    fn note_waiters(&self) -> bool {
        let wants = !self.waiting_reads.is_empty() || !self.backlog.is_empty();
        self.wants_applied.store(wants, Ordering::SeqCst);
        wants
    }

    fn complete_reads_once(&mut self, gate: &Gate) {
        let applied = self.applied.load(Ordering::SeqCst);
        let stalled_but_safe = gate.stall(self.id).is_some()
            && self.is_leader()
            && self.raw.raft.raft_log.term(applied + 1).ok() == Some(self.raw.raft.term);
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .waiting_reads
            .drain(..)
            .partition(|(index, _)| *index <= applied || stalled_but_safe);
        self.waiting_reads = waiting;
        for (_, read) in ready {
            read.reply.send(Ok(()));
        }
    }

    /// Answers reads waiting longer than `max_wait` with `Timeout`, and asks
    /// raft again for those still without a read state (raft drops a
    /// read-index request a new leader gets before it committed in its term).
    pub fn expire_reads(
        &mut self,
        max_wait: std::time::Duration,
        retry_after: std::time::Duration,
    ) {
        let shard = self.id;
        for ctx in self.reads_older_than(max_wait) {
            if let Some(read) = self.reads.remove(&ctx) {
                read.reply.send(Err(Error::Timeout(shard)));
            }
        }
        let (late, waiting): (Vec<_>, Vec<_>) = self
            .waiting_reads
            .drain(..)
            .partition(|(_, r)| r.since.elapsed() >= max_wait);
        self.waiting_reads = waiting;
        for (_, read) in late {
            read.reply.send(Err(Error::Timeout(shard)));
        }
        if self.raw.raft.leader_id != 0 {
            for ctx in self.reads_older_than(retry_after) {
                self.raw.read_index(ctx);
            }
        }
    }

    /// The request contexts of reads without a read state for `age` or more.
    fn reads_older_than(&self, age: std::time::Duration) -> Vec<Vec<u8>> {
        self.reads
            .iter()
            .filter(|(_, r)| r.since.elapsed() >= age)
            .map(|(ctx, _)| ctx.clone())
            .collect()
    }

    /// Hands committed entries to the apply loop, or keeps them in the
    /// backlog when its queue is full (the ready loop never blocks on one
    /// slow shard).
    pub fn hand_committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        crate::membership::apply_committed(&mut self.raw, self.id, &entries);
        self.backlog_bytes += entries_bytes(&entries);
        self.backlog.push_back(entries);
        self.flush_backlog();
        self.raw.advance_apply();
    }

    /// Moves what the apply queue has room for out of the backlog.
    pub fn flush_backlog(&mut self) {
        self.flush_backlog_once();
        if self.note_waiters() {
            // As for reads: the apply loop may have emptied its queue
            // before it saw the flag.
            self.flush_backlog_once();
            self.note_waiters();
        }
    }

    fn flush_backlog_once(&mut self) {
        while let Some(entries) = self.backlog.pop_front() {
            let bytes = entries_bytes(&entries);
            match self.apply.try_send(ApplyTask::Entries(entries)) {
                Ok(()) => self.backlog_bytes -= bytes,
                Err(TrySendError::Full(ApplyTask::Entries(entries))) => {
                    self.backlog.push_front(entries);
                    return;
                }
                Err(_) => {
                    tracing::error!(shard = self.id, "apply loop is gone");
                    self.backlog.clear();
                    self.backlog_bytes = 0;
                    return;
                }
            }
        }
    }

    /// The apply loop is this far behind: take no new readies until it
    /// catches up.
    pub fn backlog_full(&self) -> bool {
        self.backlog_bytes >= MAX_BACKLOG_BYTES
    }
}

/// A raft group's status: its configuration, and on the leader each
/// member's progress; `applied` is the group's applied index.
pub fn raft_status(raw: &RawNode<ShardStorage>, group: u32, applied: u64) -> ShardStatus {
    let conf = raw.store().meta().conf_state();
    let progress = if raw.raft.state == StateRole::Leader {
        raw.raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect()
    } else {
        Vec::new()
    };
    ShardStatus {
        shard: group,
        leader: raw.raft.leader_id,
        term: raw.raft.term,
        applied,
        commit: raw.raft.raft_log.committed,
        compacted: raw.store().meta().snapshot_index,
        voters: conf.voters,
        learners: conf.learners,
        voters_outgoing: conf.voters_outgoing,
        progress,
    }
}

fn entries_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.data.len() as u64 + 32).sum()
}

pub fn raft_config(config: &NodeConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        check_quorum: true,
        pre_vote: true,
        // Read-index confirmed by a heartbeat round, not a lease: a leader
        // paused past its lease (SIGSTOP, a VM stall) keeps counting its
        // lease in ticks that did not run, and would serve stale reads.
        read_only_option: ReadOnlyOption::Safe,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        max_committed_size_per_ready: MAX_COMMITTED_BYTES_PER_READY,
        ..raft::Config::default()
    }
}

/// The newest snapshot of `shard` in the node's snapshot directory.
fn newest_snapshot(config: &NodeConfig, shard: u32) -> Result<Option<(u64, u64, SnapshotRef)>> {
    let catalog = Catalog::list(&config.snapshot_dir)?;
    Ok(catalog
        .entries
        .iter()
        .filter(|e| e.header.shard_id == shard)
        .max_by_key(|e| e.header.index)
        .map(|e| {
            let reference = SnapshotRef {
                node_id: config.node_id,
                file_name: apply::file_name(&e.path),
                file_bytes: e.file_bytes,
            };
            (e.header.index, e.header.term, reference)
        }))
}

/// An engine ahead of the raft log (restored by `aerie restore`, or a
/// snapshot installed just before a crash) starts the log after the snapshot
/// it came from, which must be in the snapshot directory at exactly that
/// index: raft then counts from there, and nothing it appends is mistaken for
/// an entry the engine already has.
fn bootstrap_from_snapshot(
    storage: &mut ShardStorage,
    durable: u64,
    slot: &SnapshotSlot,
) -> Result<()> {
    let last = raft::Storage::last_index(storage)?;
    if durable <= last {
        return Ok(());
    }
    let newest = lock(&slot.newest).clone();
    let Some((index, term, _)) = newest.filter(|(index, _, _)| *index == durable) else {
        return Err(Error::Config(format!(
            "shard {}: the engine is at index {durable}, past the raft log ({last}), and no \
             snapshot at that index is in the snapshot directory",
            storage.shard()
        )));
    };
    let mut snapshot = raft::prelude::Snapshot::default();
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.set_conf_state(storage.meta().conf_state_at(index));
    storage.apply_snapshot(&snapshot)
}

/// What opening a shard needs from the node.
pub struct OpenContext<'a> {
    pub config: &'a Arc<NodeConfig>,
    pub wal: &'a Arc<Wal>,
    pub engine: &'a Arc<Engine>,
    pub map: &'a ShardMap,
    pub gate: &'a Arc<Gate>,
    pub clock_ms: &'a Arc<AtomicU64>,
    pub stopping: &'a Arc<AtomicBool>,
    pub input: &'a SyncSender<Input>,
    pub damage: &'a Arc<crate::repair::Damage>,
}

/// Opens a shard's raft state from its meta file and WAL stream, the engine
/// at its durable applied index (raft re-delivers the committed entries
/// after it), and starts its apply loop.
pub fn open_shard(ctx: &OpenContext<'_>, shard: u32) -> Result<(Shard, JoinHandle<()>)> {
    let config = ctx.config;
    let slot = Arc::new(SnapshotSlot::default());
    *lock(&slot.newest) = newest_snapshot(config, shard)?;
    let raw = open_raw(config, ctx.wal, ctx.engine, shard, &slot)?;
    let log = log_id(shard);
    // The term of the entry the engine is at: what a snapshot taken before
    // the next entry is applied must carry.
    let applied_term = raft::Storage::term(raw.store(), ctx.engine.applied_index(log)).unwrap_or(0);
    let pending = Arc::new(Mutex::new(Pending::default()));
    let applied_index = Arc::new(AtomicU64::new(ctx.engine.applied_index(log)));
    let (apply_tx, apply_rx) = mpsc::sync_channel(APPLY_QUEUE);
    let notify_input = ctx.input.clone();
    let wants_applied = Arc::new(AtomicBool::new(false));
    let wanted = wants_applied.clone();
    let apply_ctx = ApplyContext {
        shard,
        log_id: log,
        node_id: config.node_id,
        engine: ctx.engine.clone(),
        pending: pending.clone(),
        applied: applied_index.clone(),
        snapshots: slot.clone(),
        snapshot_dir: config.snapshot_dir.clone(),
        shard_meta: ShardMeta {
            cluster_name: config.cluster_name.clone(),
            node_id: config.node_id,
            shard_id: shard,
            log_id: log,
            partitions: ctx.map.partitions(shard),
        },
        policy: config.snapshot.clone(),
        applied_term,
        gate: ctx.gate.clone(),
        clock_ms: ctx.clock_ms.clone(),
        stopping: ctx.stopping.clone(),
        notify: Box::new(move |shard, _index| {
            if wanted.load(Ordering::SeqCst) {
                let _ = notify_input.try_send(Input::Applied(shard));
            }
        }),
        damage: ctx.damage.clone(),
        control: ctx.input.clone(),
    };
    let worker = std::thread::Builder::new()
        .name(format!("apply-{shard}"))
        .spawn(move || apply::run(apply_ctx, apply_rx))
        .map_err(|e| Error::io(&config.raft_dir, e))?;
    let shard = Shard {
        id: shard,
        log_id: log,
        raw,
        apply: apply_tx,
        backlog: VecDeque::new(),
        backlog_bytes: 0,
        pending,
        applied: applied_index,
        snapshots: slot,
        reads: HashMap::new(),
        waiting_reads: Vec::new(),
        installing: None,
        retry_install_at: None,
        was_leader: false,
        commit_unsaved: false,
        last_transfer: None,
        wants_applied,
        repair_asked: None,
        snapshot_forced: Vec::new(),
        next_check_at: crate::check::first_check_at(
            config.consistency_check_interval_ms,
            shard,
            ctx.map.shards(),
        ),
    };
    Ok((shard, worker))
}

/// The shard's `RawNode` from what is durable: its meta file (created with
/// the configured voters on first start), its WAL stream and the engine's
/// durable applied index. Also how a shard whose snapshot install failed
/// starts over: raft forgets the snapshot it was told about and learns it
/// again from the leader.
pub fn open_raw(
    config: &NodeConfig,
    wal: &Arc<Wal>,
    engine: &Engine,
    shard: u32,
    slot: &Arc<SnapshotSlot>,
) -> Result<RawNode<ShardStorage>> {
    let path = meta_path(&config.raft_dir, shard);
    let meta = RaftMeta::load_or_create(&path, &config.voters)?;
    let mut storage = ShardStorage::open(
        shard,
        stream_id(shard),
        wal.clone(),
        meta,
        path,
        SnapshotSource::Files(slot.clone()),
    )?;
    let durable = engine.durable_applied_index(log_id(shard));
    bootstrap_from_snapshot(&mut storage, durable, slot)?;
    if durable < storage.meta().snapshot_index {
        return Err(Error::Config(format!(
            "shard {shard}: the engine (at {durable}) is behind the log's compaction point ({}); \
             wipe this node's data directory to rebuild it from a replica",
            storage.meta().snapshot_index
        )));
    }
    let commit = wal.hard_state(stream_id(shard)).commit;
    let last = raft::Storage::last_index(&storage)?;
    // raft re-delivers committed entries after `applied`; the apply loop skips
    // those the engine already has.
    let applied = durable
        .min(commit)
        .min(last)
        .max(storage.meta().snapshot_index);
    Ok(RawNode::new(
        &raft_config(config, applied),
        storage,
        &crate::logging::raft_logger(config.node_id, shard),
    )?)
}
