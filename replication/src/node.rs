//! A node's shards: one raft group per shard, all driven by one ready loop
//! that writes every shard's entries and hard states in one WAL group commit,
//! then sends messages and hands committed entries to each shard's apply loop.
//!
//! Threads: the ready loop (owns every `RawNode`), one apply loop per shard,
//! a chunk server for snapshot files, snapshot writers and installers as
//! needed, and an engine maintenance thread (flushes and checkpoints). All
//! queues between them are bounded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aerie_engine::{BackgroundConfig, BackgroundHandle, Command, Engine, Outcome};
use aerie_snapshot::{Catalog, ShardMeta, WriteOptions};
use aerie_wal::{LogBatch, Wal};
use raft::prelude::{Entry, Message, MessageType, Ready};
use raft::{RawNode, ReadOnlyOption, StateRole};
use tokio::sync::oneshot;

use crate::apply::{self, ApplyContext, ApplyTask, Pending, SnapshotPolicy, Waiter};
use crate::codec::{Proposal, SnapshotRef};
use crate::error::{Error, Result};
use crate::install::{self, Fetch};
use crate::meta::{RaftMeta, meta_path};
use crate::shards::{ShardMap, log_id, stream_id};
use crate::storage::{ShardStorage, SnapshotSlot};
use crate::transport::{Deliver, Envelope, Transport};

/// Inputs taken per loop round before the readies are processed.
const MAX_INPUTS_PER_ROUND: usize = 4096;
/// Capacity of the loop's input queue.
const INPUT_QUEUE: usize = 16 * 1024;
/// Capacity of each apply loop's queue (batches of entries).
const APPLY_QUEUE: usize = 256;
/// Attempts at fetching and installing one snapshot.
const INSTALL_ATTEMPTS: usize = 5;

/// Unix ms now (the leader's clock for proposals; snapshot creation times).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node's replication settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node (non-zero, unique in the cluster).
    pub node_id: u64,
    /// Cluster name (written into snapshots).
    pub cluster_name: String,
    /// Shards the 4096 partitions are split into.
    pub shards: u32,
    /// Members of every shard when it first starts.
    pub voters: Vec<u64>,
    /// Where the per-shard raft meta files live.
    pub raft_dir: PathBuf,
    /// Where snapshot files live.
    pub snapshot_dir: PathBuf,
    /// One raft tick.
    pub tick_interval_ms: u64,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Proposals in flight per shard before `Overloaded`.
    pub max_inflight_proposals: usize,
    /// How often the log is compacted behind the engine and the snapshots.
    pub compact_interval_ms: u64,
    /// How often the engine's background driver wakes (block flushes,
    /// checkpoints, expiry, defrag).
    pub engine_tick_interval_ms: u64,
    /// Scheduled snapshots.
    pub snapshot: SnapshotPolicy,
}

impl NodeConfig {
    /// Settings with defaults for a node `node_id` in a cluster of `voters`.
    pub fn new(node_id: u64, voters: Vec<u64>, data_dir: &std::path::Path) -> NodeConfig {
        NodeConfig {
            node_id,
            cluster_name: "aerie".into(),
            shards: 8,
            voters,
            raft_dir: data_dir.join("raft"),
            snapshot_dir: data_dir.join("snapshots"),
            tick_interval_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_inflight_proposals: 4096,
            compact_interval_ms: 1000,
            engine_tick_interval_ms: 200,
            snapshot: SnapshotPolicy {
                every_entries: 100_000,
                every_ms: 0,
                keep: 2,
                options: WriteOptions::default(),
            },
        }
    }
}

/// How a read is made safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// On the leader, once it knows it still is (leader lease; raft-rs
    /// read-index); then the engine has applied every write acknowledged
    /// before the read began.
    Linearizable,
    /// The local engine as it is (possibly stale on a follower).
    Relaxed,
}

enum Input {
    Net(Envelope),
    Propose {
        shard: u32,
        command: Command,
        reply: apply::Reply,
    },
    Read {
        shard: u32,
        reply: apply::Callback<()>,
    },
    Applied(u32),
    Installed {
        shard: u32,
        result: Result<PathBuf>,
    },
    Campaign(u32),
    SnapshotNow,
    Stop,
}

/// What callers see of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStatus {
    /// The shard.
    pub shard: u32,
    /// The leader this node knows (0 = none).
    pub leader: u64,
    /// This node's term.
    pub term: u64,
    /// Highest index applied to the engine.
    pub applied: u64,
    /// Highest index known committed.
    pub commit: u64,
    /// Where the log starts after compaction (the raft snapshot index).
    pub compacted: u64,
}

/// A running node: its shards, their loops, and the API to propose and read.
pub struct Node {
    config: Arc<NodeConfig>,
    input: SyncSender<Input>,
    status: Arc<Mutex<Vec<ShardStatus>>>,
    threads: Vec<JoinHandle<()>>,
    background: Option<BackgroundHandle>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Installing {
    ready: Ready,
    chunks: mpsc::Sender<Envelope>,
    reference: SnapshotRef,
}

struct Shard {
    id: u32,
    log_id: u64,
    raw: RawNode<ShardStorage>,
    apply: SyncSender<ApplyTask>,
    pending: Arc<Mutex<Pending>>,
    applied: Arc<AtomicU64>,
    snapshots: Arc<SnapshotSlot>,
    reads: HashMap<Vec<u8>, apply::Callback<()>>,
    waiting_reads: Vec<(u64, apply::Callback<()>)>,
    installing: Option<Installing>,
    was_leader: bool,
    /// The commit index moved after the last hard state written.
    commit_unsaved: bool,
}

impl Shard {
    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn status(&self) -> ShardStatus {
        ShardStatus {
            shard: self.id,
            leader: self.raw.raft.leader_id,
            term: self.raw.raft.term,
            applied: self.applied.load(Ordering::SeqCst),
            commit: self.raw.raft.raft_log.committed,
            compacted: self.raw.store().meta().snapshot_index,
        }
    }

    /// Fails what waits on leadership once it is lost.
    fn note_role(&mut self) {
        let leader = self.is_leader();
        if self.was_leader && !leader {
            lock(&self.pending).fail_all(|| Error::InDoubt(self.id));
            let not_leader = || Error::NotLeader {
                shard: self.id,
                leader: self.raw.raft.leader_id,
            };
            for (_, reply) in self.reads.drain() {
                reply.send(Err(not_leader()));
            }
            for (_, reply) in self.waiting_reads.drain(..) {
                reply.send(Err(not_leader()));
            }
        }
        self.was_leader = leader;
    }

    fn complete_reads(&mut self) {
        let applied = self.applied.load(Ordering::SeqCst);
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .waiting_reads
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        self.waiting_reads = waiting;
        for (_, reply) in ready {
            reply.send(Ok(()));
        }
    }
}

/// Everything `Node::open` needs besides the settings.
pub struct NodeParts {
    /// The node's WAL (one stream per shard).
    pub wal: Arc<Wal>,
    /// The node's engine.
    pub engine: Arc<Engine>,
    /// How envelopes reach other nodes.
    pub transport: Arc<dyn Transport>,
}

impl Node {
    /// Opens every shard (raft state from the WAL and meta files, the engine
    /// at its durable applied index; raft re-delivers the committed entries
    /// after it) and starts the loops. Returns the node and the function the
    /// transport delivers this node's envelopes with.
    pub fn open(config: NodeConfig, parts: NodeParts) -> Result<(Node, Deliver)> {
        if config.node_id == 0 || !config.voters.contains(&config.node_id) {
            return Err(Error::Config(format!(
                "node_id {} must be non-zero and one of the voters {:?}",
                config.node_id, config.voters
            )));
        }
        let map = ShardMap::new(config.shards).map_err(Error::Config)?;
        std::fs::create_dir_all(&config.snapshot_dir)
            .map_err(|e| Error::io(&config.snapshot_dir, e))?;
        let config = Arc::new(config);
        let (input, inputs) = mpsc::sync_channel(INPUT_QUEUE);
        let mut threads = Vec::new();
        let mut shards = Vec::new();
        for shard in 0..map.shards() {
            let (shard, worker) = open_shard(&config, &parts, &map, shard, &input)?;
            shards.push(shard);
            threads.push(worker);
        }
        let status = Arc::new(Mutex::new(shards.iter().map(Shard::status).collect()));
        let (chunk_requests, chunk_server) = spawn_chunk_server(&config, parts.transport.clone())?;
        threads.push(chunk_server);
        // Block flushes, periodic checkpoints (which advance the durable
        // applied index the log is compacted behind), expiry and defrag.
        let background = parts.engine.start_background(BackgroundConfig {
            tick_interval_ms: config.engine_tick_interval_ms,
            ..BackgroundConfig::default()
        })?;
        let single = config.voters.len() == 1;
        let ready_loop = ReadyLoop {
            config: config.clone(),
            wal: parts.wal,
            engine: parts.engine,
            transport: parts.transport,
            shards,
            inputs,
            input: input.clone(),
            chunk_requests,
            status: status.clone(),
            next_proposal: 0,
            next_read: 0,
            last_tick: Instant::now(),
            last_compact: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("raft-loop-{}", config.node_id))
            .spawn(move || ready_loop.run())
            .map_err(|e| Error::io(&config.raft_dir, e))?;
        threads.push(handle);
        let deliver_to = input.clone();
        let deliver: Deliver =
            Arc::new(move |envelope| deliver_to.try_send(Input::Net(envelope)).is_ok());
        let node = Node {
            config,
            input,
            status,
            threads,
            background: Some(background),
        };
        if single {
            // A lone member need not wait out an election timeout.
            for shard in 0..map.shards() {
                node.campaign(shard);
            }
        }
        Ok((node, deliver))
    }

    /// The settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn send(&self, input: Input) -> Result<()> {
        match self.input.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::Overloaded {
                shard: u32::MAX,
                limit: INPUT_QUEUE,
            }),
            Err(TrySendError::Disconnected(_)) => Err(Error::Stopped),
        }
    }

    /// Proposes `command` to `shard` (this node must lead it); `done` gets the
    /// outcome once the entry is applied here, or why there is none.
    pub fn propose_with(
        &self,
        shard: u32,
        command: Command,
        done: impl FnOnce(Result<Outcome>) + Send + 'static,
    ) -> Result<()> {
        self.send(Input::Propose {
            shard,
            command,
            reply: apply::Callback::new(done),
        })
    }

    /// Proposes; the receiver (usable from async code) gets the outcome.
    pub fn propose(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Outcome>>> {
        let (reply, outcome) = oneshot::channel();
        self.propose_with(shard, command, move |result| {
            let _ = reply.send(result);
        })?;
        Ok(outcome)
    }

    /// Proposes and waits up to `timeout` for the outcome.
    pub fn propose_wait(&self, shard: u32, command: Command, timeout: Duration) -> Result<Outcome> {
        let (reply, outcome) = mpsc::sync_channel(1);
        self.propose_with(shard, command, move |result| {
            let _ = reply.send(result);
        })?;
        wait(&outcome, timeout, shard)?
    }

    /// `done` is called once a read of `shard` on this node's engine is
    /// linearizable (the caller then reads the engine).
    pub fn read_barrier_with(
        &self,
        shard: u32,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.send(Input::Read {
            shard,
            reply: apply::Callback::new(done),
        })
    }

    /// Returns once a read of `shard` on this node's engine is safe at the
    /// asked consistency (the caller then reads the engine).
    pub fn read_barrier(
        &self,
        shard: u32,
        consistency: ReadConsistency,
        timeout: Duration,
    ) -> Result<()> {
        if consistency == ReadConsistency::Relaxed {
            return Ok(());
        }
        let (reply, done) = mpsc::sync_channel(1);
        self.read_barrier_with(shard, move |result| {
            let _ = reply.send(result);
        })?;
        wait(&done, timeout, shard)?
    }

    /// Asks every shard for a snapshot now (written in the background).
    pub fn request_snapshots(&self) {
        let _ = self.send(Input::SnapshotNow);
    }

    /// Starts an election for `shard` on this node.
    pub fn campaign(&self, shard: u32) {
        let _ = self.send(Input::Campaign(shard));
    }

    /// Every shard's state as of the last loop round.
    pub fn status(&self) -> Vec<ShardStatus> {
        lock(&self.status).clone()
    }

    /// The leader of `shard` this node knows (0 = none).
    pub fn leader(&self, shard: u32) -> u64 {
        lock(&self.status)
            .get(shard as usize)
            .map_or(0, |s| s.leader)
    }

    /// Stops the loops and waits for them; the engine and WAL stay open for
    /// the caller to close.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(background) = self.background.take() {
            background.stop();
        }
        let _ = self.input.send(Input::Stop);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wait<T>(receiver: &Receiver<T>, timeout: Duration, shard: u32) -> Result<T> {
    receiver.recv_timeout(timeout).map_err(|e| match e {
        RecvTimeoutError::Timeout => Error::Timeout(shard),
        RecvTimeoutError::Disconnected => Error::Stopped,
    })
}

fn raft_config(config: &NodeConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::LeaseBased,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
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
    metadata.mut_conf_state().voters = storage.meta().voters.clone();
    metadata.mut_conf_state().learners = storage.meta().learners.clone();
    storage.apply_snapshot(&snapshot)
}

fn open_shard(
    config: &Arc<NodeConfig>,
    parts: &NodeParts,
    map: &ShardMap,
    shard: u32,
    input: &SyncSender<Input>,
) -> Result<(Shard, JoinHandle<()>)> {
    let path = meta_path(&config.raft_dir, shard);
    let meta = match RaftMeta::load(&path)? {
        Some(meta) => meta,
        None => {
            let meta = RaftMeta {
                voters: config.voters.clone(),
                ..RaftMeta::default()
            };
            meta.store(&path)?;
            meta
        }
    };
    let slot = Arc::new(SnapshotSlot::default());
    *lock(&slot.newest) = newest_snapshot(config, shard)?;
    let mut storage = ShardStorage::open(
        shard,
        stream_id(shard),
        parts.wal.clone(),
        meta,
        path,
        slot.clone(),
    )?;
    let log = log_id(shard);
    let durable = parts.engine.durable_applied_index(log);
    bootstrap_from_snapshot(&mut storage, durable, &slot)?;
    if durable < storage.meta().snapshot_index {
        return Err(Error::Config(format!(
            "shard {shard}: the engine (at {durable}) is behind the log's compaction point ({}); \
             wipe this node's data directory to rebuild it from a replica",
            storage.meta().snapshot_index
        )));
    }
    let commit = parts.wal.hard_state(stream_id(shard)).commit;
    let last = raft::Storage::last_index(&storage)?;
    // raft re-delivers committed entries after `applied`; the apply loop skips
    // those the engine already has.
    let applied = durable
        .min(commit)
        .min(last)
        .max(storage.meta().snapshot_index);
    let raw = RawNode::new(
        &raft_config(config, applied),
        storage,
        &crate::logging::raft_logger(config.node_id, shard),
    )?;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let applied_index = Arc::new(AtomicU64::new(parts.engine.applied_index(log)));
    let (apply_tx, apply_rx) = mpsc::sync_channel(APPLY_QUEUE);
    let notify_input = input.clone();
    let ctx = ApplyContext {
        shard,
        log_id: log,
        node_id: config.node_id,
        engine: parts.engine.clone(),
        pending: pending.clone(),
        applied: applied_index.clone(),
        snapshots: slot.clone(),
        snapshot_dir: config.snapshot_dir.clone(),
        shard_meta: ShardMeta {
            cluster_name: config.cluster_name.clone(),
            node_id: config.node_id,
            shard_id: shard,
            log_id: log,
            partitions: map.partitions(shard),
        },
        policy: config.snapshot.clone(),
        notify: Box::new(move |shard, _index| {
            let _ = notify_input.try_send(Input::Applied(shard));
        }),
    };
    let worker = std::thread::Builder::new()
        .name(format!("apply-{shard}"))
        .spawn(move || apply::run(ctx, apply_rx))
        .map_err(|e| Error::io(&config.raft_dir, e))?;
    let shard = Shard {
        id: shard,
        log_id: log,
        raw,
        apply: apply_tx,
        pending,
        applied: applied_index,
        snapshots: slot,
        reads: HashMap::new(),
        waiting_reads: Vec::new(),
        installing: None,
        was_leader: false,
        commit_unsaved: false,
    };
    Ok((shard, worker))
}

fn spawn_chunk_server(
    config: &Arc<NodeConfig>,
    transport: Arc<dyn Transport>,
) -> Result<(SyncSender<Envelope>, JoinHandle<()>)> {
    let (sender, requests) = mpsc::sync_channel::<Envelope>(64);
    let dir = config.snapshot_dir.clone();
    let me = config.node_id;
    let handle = std::thread::Builder::new()
        .name(format!("chunks-{me}"))
        .spawn(move || {
            for request in requests {
                install::serve_chunk(&dir, me, transport.as_ref(), request);
            }
        })
        .map_err(|e| Error::io(&config.snapshot_dir, e))?;
    Ok((sender, handle))
}

struct ReadyLoop {
    config: Arc<NodeConfig>,
    wal: Arc<Wal>,
    engine: Arc<Engine>,
    transport: Arc<dyn Transport>,
    shards: Vec<Shard>,
    inputs: Receiver<Input>,
    input: SyncSender<Input>,
    chunk_requests: SyncSender<Envelope>,
    status: Arc<Mutex<Vec<ShardStatus>>>,
    next_proposal: u64,
    next_read: u64,
    last_tick: Instant,
    last_compact: Instant,
}

impl ReadyLoop {
    fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_interval_ms.max(1));
        loop {
            let timeout = tick.saturating_sub(self.last_tick.elapsed());
            let first = match self.inputs.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let more =
                std::iter::from_fn(|| self.inputs.try_recv().ok()).take(MAX_INPUTS_PER_ROUND);
            let inputs: Vec<Input> = first.into_iter().chain(more).collect();
            let mut stop = false;
            for input in inputs {
                stop |= !self.handle(input);
            }
            if stop {
                break;
            }
            if self.last_tick.elapsed() >= tick {
                self.last_tick = Instant::now();
                for shard in self.shards.iter_mut().filter(|s| s.installing.is_none()) {
                    shard.raw.tick();
                }
                self.maybe_compact();
            }
            if let Err(e) = self.process_readies() {
                tracing::error!(node = self.config.node_id, error = %e, "ready loop stopped");
                break;
            }
            *lock(&self.status) = self.shards.iter().map(Shard::status).collect();
        }
        self.close();
    }

    fn close(&mut self) {
        for shard in &mut self.shards {
            lock(&shard.pending).fail_all(|| Error::Stopped);
            for (_, reply) in shard.reads.drain() {
                reply.send(Err(Error::Stopped));
            }
            for (_, reply) in shard.waiting_reads.drain(..) {
                reply.send(Err(Error::Stopped));
            }
        }
        // Dropping the shards closes the apply queues; their threads end.
        self.shards.clear();
    }

    fn shard(&mut self, id: u32) -> Option<&mut Shard> {
        self.shards.get_mut(id as usize)
    }

    /// Handles one input; false means stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Stop => return false,
            Input::Net(envelope) => self.handle_net(envelope),
            Input::Propose {
                shard,
                command,
                reply,
            } => self.propose(shard, command, reply),
            Input::Read { shard, reply } => self.read(shard, reply),
            Input::Applied(shard) => {
                if let Some(shard) = self.shard(shard) {
                    shard.complete_reads();
                }
            }
            Input::Installed { shard, result } => self.installed(shard, result),
            Input::SnapshotNow => {
                for shard in &self.shards {
                    shard.snapshots.wanted.store(true, Ordering::SeqCst);
                    let _ = shard.apply.try_send(ApplyTask::CheckSnapshot);
                }
            }
            Input::Campaign(shard) => {
                if let Some(shard) = self.shard(shard) {
                    let _ = shard.raw.campaign();
                }
            }
        }
        true
    }

    fn handle_net(&mut self, envelope: Envelope) {
        match envelope {
            Envelope::Raft { shard, message } => {
                // While a snapshot installs, raft holds a ready open: stepping
                // it then is not allowed (the leader resends later).
                if let Some(shard) = self.shard(shard).filter(|s| s.installing.is_none()) {
                    step(shard, message);
                }
            }
            request @ Envelope::ChunkRequest { .. } => {
                let _ = self.chunk_requests.try_send(request);
            }
            chunk @ Envelope::Chunk { shard, .. } => {
                if let Some(installing) = self.shard(shard).and_then(|s| s.installing.as_ref()) {
                    let _ = installing.chunks.send(chunk);
                }
            }
        }
    }

    fn propose(&mut self, shard_id: u32, command: Command, reply: apply::Reply) {
        let node_id = self.config.node_id;
        let limit = self.config.max_inflight_proposals;
        self.next_proposal += 1;
        let id = (node_id << 40) | (self.next_proposal & ((1 << 40) - 1));
        let Some(shard) = self.shard(shard_id) else {
            reply.send(Err(Error::NoShard(shard_id)));
            return;
        };
        if !shard.is_leader() || shard.installing.is_some() {
            let leader = shard.raw.raft.leader_id;
            reply.send(Err(Error::NotLeader {
                shard: shard_id,
                leader,
            }));
            return;
        }
        let mut pending = lock(&shard.pending);
        if pending.by_id.len() >= limit {
            reply.send(Err(Error::Overloaded {
                shard: shard_id,
                limit,
            }));
            return;
        }
        let data = Proposal {
            id,
            now_ms: now_ms(),
            command,
        }
        .encode();
        if let Err(e) = shard.raw.propose(Vec::new(), data) {
            reply.send(Err(Error::Raft(e)));
            return;
        }
        let index = shard.raw.raft.raft_log.last_index();
        pending.by_id.insert(id, Waiter { index, reply });
    }

    fn read(&mut self, shard_id: u32, reply: apply::Callback<()>) {
        self.next_read += 1;
        let ctx = self.next_read.to_le_bytes().to_vec();
        let Some(shard) = self.shard(shard_id) else {
            reply.send(Err(Error::NoShard(shard_id)));
            return;
        };
        if !shard.is_leader() {
            let leader = shard.raw.raft.leader_id;
            reply.send(Err(Error::NotLeader {
                shard: shard_id,
                leader,
            }));
            return;
        }
        shard.raw.read_index(ctx.clone());
        shard.reads.insert(ctx, reply);
    }

    /// One round: every shard's ready, one WAL write for all of them, then
    /// messages and committed entries.
    fn process_readies(&mut self) -> Result<()> {
        let mut batch = LogBatch::new();
        let mut readies = Vec::new();
        for i in 0..self.shards.len() {
            let shard = &mut self.shards[i];
            if shard.installing.is_some() || !shard.raw.has_ready() {
                continue;
            }
            let mut ready = shard.raw.ready();
            let messages = ready.take_messages();
            send_messages(
                self.transport.as_ref(),
                self.config.node_id,
                shard.id,
                messages,
            );
            if !ready.snapshot().is_empty() {
                self.start_install(i, ready);
                continue;
            }
            self.stage(i, &mut ready, &mut batch)?;
            readies.push((i, ready));
        }
        if !batch.is_empty() {
            self.stage_commit_indices(&mut batch);
            self.wal.write(batch)?;
        }
        for (i, ready) in readies {
            self.finish_ready(i, ready);
        }
        Ok(())
    }

    /// Commit indices that moved since their last hard state ride along with
    /// a write that happens anyway: they need no fsync of their own (after a
    /// restart raft learns the commit index again; the apply loop skips what
    /// the engine already has).
    fn stage_commit_indices(&mut self, batch: &mut LogBatch) {
        for shard in self
            .shards
            .iter_mut()
            .filter(|s| s.commit_unsaved && s.installing.is_none())
        {
            shard.commit_unsaved = false;
            let hs = shard.raw.raft.hard_state();
            shard.raw.store().stage_hard_state(&hs, batch);
        }
    }

    /// The part of a ready that comes before the WAL write.
    fn stage(&mut self, i: usize, ready: &mut Ready, batch: &mut LogBatch) -> Result<()> {
        let shard = &mut self.shards[i];
        shard.note_role();
        for state in ready.take_read_states() {
            if let Some(reply) = shard.reads.remove(&state.request_ctx) {
                shard.waiting_reads.push((state.index, reply));
            }
        }
        shard.complete_reads();
        hand_committed(shard, ready.take_committed_entries());
        shard.raw.store().stage(ready.entries(), ready.hs(), batch)
    }

    /// The part of a ready after its entries are durable.
    fn finish_ready(&mut self, i: usize, mut ready: Ready) {
        let (transport, me) = (self.transport.as_ref(), self.config.node_id);
        let shard = &mut self.shards[i];
        send_messages(transport, me, shard.id, ready.take_persisted_messages());
        let mut light = shard.raw.advance(ready);
        shard.commit_unsaved |= light.commit_index().is_some();
        send_messages(transport, me, shard.id, light.take_messages());
        hand_committed(shard, light.take_committed_entries());
        shard.note_role();
    }

    fn start_install(&mut self, i: usize, ready: Ready) {
        let shard = &mut self.shards[i];
        let reference = match SnapshotRef::decode(&ready.snapshot().data) {
            Ok(reference) => reference,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "snapshot message without a file reference");
                return;
            }
        };
        let (chunks_tx, chunks) = mpsc::channel();
        let (barrier_tx, barrier) = mpsc::sync_channel(1);
        let _ = shard.apply.send(ApplyTask::Barrier(barrier_tx));
        let fetch = Fetch {
            me: self.config.node_id,
            shard: shard.id,
            reference: reference.clone(),
            dir: self.config.snapshot_dir.clone(),
            transport: self.transport.clone(),
            chunks,
        };
        let engine = self.engine.clone();
        let input = self.input.clone();
        let shard_id = shard.id;
        tracing::info!(shard = shard_id, from = reference.node_id, file = %reference.file_name, "installing a snapshot");
        let spawned = std::thread::Builder::new()
            .name(format!("install-{shard_id}"))
            .spawn(move || {
                let _ = barrier.recv();
                let result = fetch_and_install(&fetch, &engine);
                let _ = input.send(Input::Installed {
                    shard: shard_id,
                    result,
                });
            });
        if spawned.is_err() {
            tracing::error!(shard = shard_id, "could not start the snapshot installer");
        }
        shard.installing = Some(Installing {
            ready,
            chunks: chunks_tx,
            reference,
        });
    }

    fn installed(&mut self, shard_id: u32, result: Result<PathBuf>) {
        let Some(installing) = self.shard(shard_id).and_then(|s| s.installing.take()) else {
            return;
        };
        let path = match result {
            Ok(path) => path,
            Err(e) => {
                tracing::error!(shard = shard_id, error = %e, "snapshot install failed; this shard stays behind until restart");
                return;
            }
        };
        if let Err(e) = self.after_install(shard_id as usize, installing, &path) {
            tracing::error!(shard = shard_id, error = %e, "recording an installed snapshot failed");
        }
    }

    /// The snapshot is in the engine: record it in the raft log, then finish
    /// the ready that carried it.
    fn after_install(
        &mut self,
        i: usize,
        installing: Installing,
        path: &std::path::Path,
    ) -> Result<()> {
        let mut ready = installing.ready;
        let shard = &mut self.shards[i];
        shard.raw.mut_store().apply_snapshot(ready.snapshot())?;
        let metadata = ready.snapshot().get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        shard.applied.store(index, Ordering::SeqCst);
        let reference = SnapshotRef {
            node_id: self.config.node_id,
            file_name: apply::file_name(path),
            file_bytes: installing.reference.file_bytes,
        };
        *lock(&shard.snapshots.newest) = Some((index, term, reference));
        let mut batch = LogBatch::new();
        self.stage(i, &mut ready, &mut batch)?;
        if !batch.is_empty() {
            self.wal.write(batch)?;
        }
        self.finish_ready(i, ready);
        Ok(())
    }

    /// Compacts each shard's log up to what both the engine's durable state
    /// and the newest snapshot cover.
    fn maybe_compact(&mut self) {
        if self.last_compact.elapsed() < Duration::from_millis(self.config.compact_interval_ms) {
            return;
        }
        self.last_compact = Instant::now();
        for shard in &mut self.shards {
            let durable = self.engine.durable_applied_index(shard.log_id);
            let snapshot = lock(&shard.snapshots.newest).as_ref().map_or(0, |s| s.0);
            let applied = shard.applied.load(Ordering::SeqCst);
            let upto = durable.min(snapshot).min(applied);
            if let Err(e) = shard.raw.mut_store().compact_to(upto) {
                tracing::warn!(shard = shard.id, error = %e, "log compaction failed");
            }
        }
    }
}

fn fetch_and_install(fetch: &Fetch, engine: &Engine) -> Result<PathBuf> {
    let mut attempt = 1;
    loop {
        let result = fetch
            .run()
            .and_then(|verified| install::install_file(engine, &verified).map(|_| verified.path));
        match result {
            Ok(path) => return Ok(path),
            Err(e) if attempt >= INSTALL_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(shard = fetch.shard, attempt, error = %e, "snapshot fetch failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
                attempt += 1;
            }
        }
    }
}

/// Steps a raft message into a shard. A heartbeat's commit index is capped at
/// the follower's last index: a member whose data was wiped comes back with an
/// empty log while the leader still remembers what it had matched, and raft
/// must then probe it (and send a snapshot), not fail on the commit index.
///
/// On the leader, a rejection showing a follower's log ends below what the
/// leader had matched means the follower lost its data: its progress restarts
/// from what it has, so raft probes it down to a snapshot. (raft itself takes
/// such a rejection for a stale message and would wait forever.) Lowering a
/// match only makes the commit rule more careful.
fn step(shard: &mut Shard, mut message: Message) {
    match message.get_msg_type() {
        MessageType::MsgHeartbeat => {
            message.commit = message.commit.min(shard.raw.raft.raft_log.last_index());
        }
        MessageType::MsgAppendResponse if message.reject && shard.is_leader() => {
            let hint = message.reject_hint;
            if let Some(pr) = shard.raw.raft.mut_prs().get_mut(message.from)
                && hint < pr.matched
            {
                tracing::warn!(
                    shard = shard.id,
                    follower = message.from,
                    had = pr.matched,
                    has = hint,
                    "a follower lost its log; rebuilding it"
                );
                pr.matched = hint;
                pr.become_probe();
            }
        }
        _ => {}
    }
    if let Err(e) = shard.raw.step(message) {
        tracing::debug!(shard = shard.id, error = %e, "raft message refused");
    }
}

fn send_messages(transport: &dyn Transport, me: u64, shard: u32, messages: Vec<Message>) {
    for message in messages {
        let to = message.to;
        transport.send(me, to, Envelope::Raft { shard, message });
    }
}

/// Hands committed entries to the shard's apply loop (blocking when it is
/// behind: that is the back-pressure).
fn hand_committed(shard: &mut Shard, entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    if shard.apply.send(ApplyTask::Entries(entries)).is_err() {
        tracing::error!(shard = shard.id, "apply loop is gone");
    }
    shard.raw.advance_apply();
}
