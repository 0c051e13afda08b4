//! A node's shards: the public API (propose, read barriers, status) over
//! one raft group per shard. The groups are driven by one ready loop
//! (`ready.rs`) that writes every shard's entries and hard states in one WAL
//! group commit, then sends messages and hands committed entries to each
//! shard's apply loop (`apply.rs`); `shard.rs` opens them.
//!
//! Threads: the ready loop (owns every `RawNode`), one apply loop per shard,
//! a chunk server for snapshot files, snapshot writers and installers as
//! needed, and the engine's background driver (flushes, checkpoints, expiry,
//! defrag). All queues between them are bounded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aerie_engine::{BackgroundConfig, BackgroundHandle, Command, Engine, Outcome};
use aerie_snapshot::WriteOptions;
use aerie_wal::Wal;
use tokio::sync::oneshot;

use crate::apply::{self, SnapshotPolicy};
use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::group::{CLUSTER_GROUP, ClusterGroup, OnChange};
use crate::health::{Gate, Refusal};
use crate::lock;
use crate::ready::ReadyLoop;
use crate::rebuild::Rebuilds;
use crate::repair::Damage;
use crate::shard::{OpenContext, open_shard};
use crate::shards::ShardMap;
use crate::transport::{Deliver, Envelope, Transport};

/// Capacity of the loop's input queue.
pub(crate) const INPUT_QUEUE: usize = 16 * 1024;

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
    /// Once the WAL holds more segments than this, every shard whose log
    /// still has an entry in the oldest segment takes a snapshot, so the log
    /// can be compacted and the segment freed (an idle shard would otherwise
    /// pin every newer segment). 0 = off.
    pub wal_segments_before_snapshot: usize,
    /// Longest a read barrier waits (for the read index, then for the apply
    /// loop) before it is answered `Timeout`.
    pub max_read_wait_ms: u64,
    /// A snapshot fetched to rebuild a replica comes at most this fast
    /// (bytes per second; 0 = no limit). The log tail is not paced.
    pub rebuild_rate_bytes_per_sec: u64,
    /// How often the leader of each shard has its replicas compared (see
    /// [`crate::check`]; the shards spread over the interval). 0 = never.
    pub consistency_check_interval_ms: u64,
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
                every_bytes: 256 << 20,
                every_ms: 3_600_000,
                keep: 2,
                options: WriteOptions::default(),
            },
            wal_segments_before_snapshot: 4,
            max_read_wait_ms: 10_000,
            consistency_check_interval_ms: 3_600_000,
            rebuild_rate_bytes_per_sec: 256 << 20,
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

pub(crate) enum Input {
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
    Membership {
        shard: u32,
        change: raft::prelude::ConfChangeV2,
        reply: apply::Callback<()>,
    },
    Placement(crate::placement::Placement),
    ClusterPropose(crate::cluster::ClusterCommand),
    HandOff,
    SnapshotNow,
    /// Check every shard this node leads now.
    CheckNow,
    /// A consistency check's entry to append to a shard's log.
    Control {
        shard: u32,
        control: crate::check::Control,
    },
    Stop,
}

/// What callers see of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Voting members (the incoming set while the configuration is joint).
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// The outgoing voters of a joint configuration (empty otherwise).
    pub voters_outgoing: Vec<u64>,
    /// On the leader, each member's highest index known replicated to it
    /// (empty elsewhere).
    pub progress: Vec<(u64, u64)>,
}

/// A running node: its shards, their loops, and the API to propose and read.
pub struct Node {
    config: Arc<NodeConfig>,
    input: SyncSender<Input>,
    status: Arc<Mutex<Vec<ShardStatus>>>,
    cluster_state: Arc<Mutex<Arc<ClusterState>>>,
    cluster_status: Arc<Mutex<Option<ShardStatus>>>,
    gate: Arc<Gate>,
    damage: Arc<Damage>,
    rebuilds: Arc<Rebuilds>,
    engine: Arc<Engine>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    background: Option<BackgroundHandle>,
}

/// Everything `Node::open` needs besides the settings.
pub struct NodeParts {
    /// The node's WAL (one stream per shard).
    pub wal: Arc<Wal>,
    /// The node's engine.
    pub engine: Arc<Engine>,
    /// How envelopes reach other nodes.
    pub transport: Arc<dyn Transport>,
    /// Runs the cluster group (see [`crate::group`]) and is told each new
    /// member list it applies; `None` runs no cluster group (shards are then
    /// placed with [`Node::set_placement`] alone).
    pub on_cluster_change: Option<OnChange>,
}

impl Node {
    /// Opens every shard (raft state from the WAL and meta files, the engine
    /// at its durable applied index; raft re-delivers the committed entries
    /// after it) and starts the loops. Returns the node and the function the
    /// transport delivers this node's envelopes with.
    pub fn open(config: NodeConfig, parts: NodeParts) -> Result<(Node, Deliver)> {
        // No voters: the node joins shards that exist elsewhere and learns
        // their membership from their leaders.
        if config.node_id == 0
            || !(config.voters.is_empty() || config.voters.contains(&config.node_id))
        {
            return Err(Error::Config(format!(
                "node_id {} must be non-zero and one of the voters {:?} (or none, to join)",
                config.node_id, config.voters
            )));
        }
        let map = ShardMap::new(config.shards).map_err(Error::Config)?;
        std::fs::create_dir_all(&config.snapshot_dir)
            .map_err(|e| Error::io(&config.snapshot_dir, e))?;
        let config = Arc::new(config);
        let (input, inputs) = mpsc::sync_channel(INPUT_QUEUE);
        let gate = Arc::new(Gate::new(map.shards()));
        let clock_ms = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let damage = Arc::new(Damage::new(map.shards()));
        let rebuilds = Arc::new(Rebuilds::default());
        let ctx = OpenContext {
            config: &config,
            wal: &parts.wal,
            engine: &parts.engine,
            map: &map,
            gate: &gate,
            clock_ms: &clock_ms,
            stopping: &stopping,
            input: &input,
            damage: &damage,
        };
        let mut threads = Vec::new();
        let mut shards = Vec::new();
        for shard in 0..map.shards() {
            let (shard, worker) = open_shard(&ctx, shard)?;
            shards.push(shard);
            threads.push(worker);
        }
        let status = Arc::new(Mutex::new(shards.iter().map(|s| s.status()).collect()));
        let cluster_state = Arc::new(Mutex::new(Arc::new(ClusterState::default())));
        let cluster = parts
            .on_cluster_change
            .map(|on_change| {
                ClusterGroup::open(&config, &parts.wal, cluster_state.clone(), on_change)
            })
            .transpose()?;
        let cluster_status = Arc::new(Mutex::new(cluster.as_ref().map(ClusterGroup::status)));
        let (chunk_requests, chunk_server) = spawn_chunk_server(&config, parts.transport.clone())?;
        threads.push(chunk_server);
        let background = start_background(&config, &parts.engine, &clock_ms)?;
        let ready_loop = ReadyLoop {
            config: config.clone(),
            wal: parts.wal,
            engine: parts.engine.clone(),
            transport: parts.transport,
            shards,
            inputs,
            input: input.clone(),
            chunk_requests,
            status: status.clone(),
            gate: gate.clone(),
            stopping: stopping.clone(),
            next_proposal: first_proposal_id(config.node_id),
            next_read: 0,
            wal_failed: false,
            placement: None,
            last_placement: Instant::now(),
            handing_off: false,
            last_tick: Instant::now(),
            last_compact: Instant::now(),
            published_confs: Vec::new(),
            last_published: Instant::now(),
            cluster,
            cluster_status: cluster_status.clone(),
            heard: HashMap::new(),
            group_leader_since: None,
            damage: damage.clone(),
            rebuilds: rebuilds.clone(),
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
            cluster_state,
            cluster_status,
            gate,
            damage,
            rebuilds,
            engine: parts.engine,
            stopping,
            threads,
            background: Some(background),
        };
        // A lone voter need not wait out an election timeout.
        let me = [node.config.node_id];
        for status in node.status().iter().filter(|s| s.voters == me) {
            node.campaign(status.shard);
        }
        if node.cluster_group_status().is_some_and(|s| s.voters == me) {
            node.campaign(CLUSTER_GROUP);
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

    /// Proposes a membership change of `shard` (this node must lead it; see
    /// [`crate::membership`] for the changes and their order). `Ok` once the
    /// change is appended: whether it took effect shows in
    /// [`Node::status`] (raft turns a change proposed while another is
    /// pending into an empty entry).
    pub fn change_membership(
        &self,
        shard: u32,
        change: raft::prelude::ConfChangeV2,
        timeout: Duration,
    ) -> Result<()> {
        let (reply, done) = mpsc::sync_channel(1);
        self.send(Input::Membership {
            shard,
            change,
            reply: apply::Callback::new(move |result| {
                let _ = reply.send(result);
            }),
        })?;
        wait(&done, timeout, shard)?
    }

    /// Tells the node the cluster's members and replication factor: each
    /// shard it leads is then moved toward `min(factor, members)` voters,
    /// one membership change at a time (see [`crate::placement`]).
    pub fn set_placement(&self, placement: crate::placement::Placement) -> Result<()> {
        self.send(Input::Placement(placement))
    }

    /// Proposes a change of the cluster's metadata to the cluster group
    /// (forwarded to its leader from a follower). Fire and forget: whether
    /// it took shows in [`Node::cluster_state`]; propose again if not.
    pub fn propose_cluster(&self, command: crate::cluster::ClusterCommand) -> Result<()> {
        self.send(Input::ClusterPropose(command))
    }

    /// The cluster's metadata as this node last applied it (empty on a node
    /// without a cluster group, or before its first entry).
    pub fn cluster_state(&self) -> Arc<ClusterState> {
        lock(&self.cluster_state).clone()
    }

    /// The cluster group's raft state as of the last loop round (`shard` is
    /// [`CLUSTER_GROUP`]), on a node that runs one.
    pub fn cluster_group_status(&self) -> Option<ShardStatus> {
        lock(&self.cluster_status).clone()
    }

    /// Hands every shard this node leads to another voter and waits until
    /// it leads none (or `timeout` passed): what a stopping node does first,
    /// so its clients see no error. Returns the shards it still leads.
    pub fn hand_off(&self, timeout: Duration) -> Vec<u32> {
        let me = self.config.node_id;
        let leading = || -> Vec<u32> {
            self.status()
                .iter()
                .filter(|s| s.leader == me && s.voters.len() > 1)
                .map(|s| s.shard)
                .collect()
        };
        if self.send(Input::HandOff).is_err() {
            return leading();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let still = leading();
            if still.is_empty() || Instant::now() >= deadline {
                return still;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Whether this node holds a replica of `shard` (voter or learner): a
    /// node that does not cannot know its leader from raft.
    pub fn is_member(&self, shard: u32) -> bool {
        let me = self.config.node_id;
        lock(&self.status).get(shard as usize).is_some_and(|s| {
            s.voters.contains(&me) || s.learners.contains(&me) || s.voters_outgoing.contains(&me)
        })
    }

    /// The write refusals: the node's disk watcher sets the out-of-space one.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// This node's damaged replicas and the consistency-check counters.
    pub fn damage(&self) -> &Arc<Damage> {
        &self.damage
    }

    /// The snapshot installs (replica rebuilds) in flight here and their
    /// totals.
    pub fn rebuilds(&self) -> &Arc<Rebuilds> {
        &self.rebuilds
    }

    /// Has every shard this node leads compare its replicas now (see
    /// [`crate::check`]); the verdicts show in [`Node::damage`].
    pub fn check_now(&self) -> Result<()> {
        self.send(Input::CheckNow)
    }

    /// A read of `shard` on this node met damaged data (`reason`): the
    /// replica is rebuilt from a healthy member (see [`crate::repair`]).
    pub fn report_damage(&self, shard: u32, reason: &str) {
        self.damage.mark(shard, reason);
    }

    /// Every write refusal in force (node-wide ones with `None`, then one per
    /// stalled shard), for operators.
    pub fn refusals(&self) -> Vec<(Option<u32>, Refusal)> {
        self.gate.report(&self.engine)
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
        // Apply loops retrying a failing entry give up; the ready loop
        // answers everything still waiting.
        self.stopping.store(true, Ordering::SeqCst);
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

/// Bits of a proposal id that count proposals (from the boot time in µs);
/// the bits above name the node.
const PROPOSAL_COUNTER_BITS: u32 = 44;

/// The first proposal id of this boot: a hash of the node id in the top 20
/// bits, the boot time in µs (mod 2^44, about 203 days) below, counting up
/// from there. Unique across restarts (unless the clock goes back) and,
/// barring a 20-bit hash collision, across nodes. Waiters also check the
/// entry's index and term.
fn first_proposal_id(node_id: u64) -> u64 {
    let boot_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let node_bits = node_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> PROPOSAL_COUNTER_BITS;
    (node_bits << PROPOSAL_COUNTER_BITS) | (boot_us & ((1 << PROPOSAL_COUNTER_BITS) - 1))
}

/// The engine's background driver: block flushes, periodic checkpoints
/// (which advance the durable applied index the log is compacted behind) on
/// the monotonic clock; expiry reclaimed at the replicated clock.
fn start_background(
    config: &NodeConfig,
    engine: &Arc<Engine>,
    clock_ms: &Arc<AtomicU64>,
) -> Result<BackgroundHandle> {
    let clock = clock_ms.clone();
    Ok(engine.start_background(BackgroundConfig {
        tick_interval_ms: config.engine_tick_interval_ms,
        expiry_clock_ms: Some(Arc::new(move || clock.load(Ordering::SeqCst))),
        ..BackgroundConfig::default()
    })?)
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
                crate::install::serve_chunk(&dir, me, transport.as_ref(), request);
            }
        })
        .map_err(|e| Error::io(&config.snapshot_dir, e))?;
    Ok((sender, handle))
}
