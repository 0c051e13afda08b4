//! A member of an in-process cluster: its own WAL, engine and directories,
//! connected to the others through a `LocalNetwork` (or any `Transport`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerie_engine::{
    Bin, BinSelection, Command, Digest, Engine, EngineConfig, NamespaceConfig, Op, Operate, Value,
    Write, partition_of,
};
use aerie_replication::shards::{ShardMap, log_id};
use aerie_replication::transport::{Deliver, LocalNetwork, Transport};
use aerie_replication::{Node, NodeConfig, NodeParts, SnapshotPolicy};
use aerie_wal::{Wal, WalConfig};

pub const NS: &str = "test";
pub const SHARDS: u32 = 4;

pub fn engine_config(dir: &Path) -> EngineConfig {
    EngineConfig {
        dir: dir.join("engine"),
        namespaces: vec![NamespaceConfig {
            write_block_size_bytes: 64 << 10,
            ..NamespaceConfig::named(NS)
        }],
        checkpoint_interval_ms: 300,
        ..EngineConfig::default()
    }
}

pub fn node_config(id: u64, voters: &[u64], dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(id, voters.to_vec(), dir);
    config.shards = SHARDS;
    config.tick_interval_ms = 20;
    config.compact_interval_ms = 200;
    config.engine_tick_interval_ms = 50;
    config.snapshot = SnapshotPolicy {
        every_entries: 50,
        ..config.snapshot
    };
    config
}

/// One member, stoppable and restartable on the same directory.
pub struct Member {
    pub id: u64,
    pub dir: PathBuf,
    pub voters: Vec<u64>,
    pub node: Option<Node>,
    pub engine: Option<Arc<Engine>>,
    pub wal: Option<Arc<Wal>>,
    /// Changes to the node settings of [`node_config`] (none by default).
    pub tune: fn(&mut NodeConfig),
}

impl Member {
    pub fn start(id: u64, voters: &[u64], dir: &Path, net: &Arc<LocalNetwork>) -> Member {
        let mut member = Member::new(id, voters, dir);
        member.restart(net);
        member
    }

    /// A member not started yet.
    pub fn new(id: u64, voters: &[u64], dir: &Path) -> Member {
        Member {
            id,
            dir: dir.to_path_buf(),
            voters: voters.to_vec(),
            node: None,
            engine: None,
            wal: None,
            tune: |_| {},
        }
    }

    pub fn restart(&mut self, net: &Arc<LocalNetwork>) {
        let deliver = self.open(net.clone());
        net.register(self.id, deliver);
    }

    /// Opens the node sending through `transport`; returns what the
    /// transport delivers this node's envelopes with.
    pub fn open(&mut self, transport: Arc<dyn Transport>) -> Deliver {
        let mut wal_config = WalConfig::new(self.dir.join("wal"));
        wal_config.segment_size_bytes = 256 << 10;
        wal_config.max_entry_bytes = 64 << 10;
        let wal = Arc::new(Wal::open(wal_config).unwrap());
        let engine = Arc::new(Engine::open(engine_config(&self.dir)).unwrap());
        let parts = NodeParts {
            wal: wal.clone(),
            engine: engine.clone(),
            transport,
            on_cluster_change: None,
        };
        let mut config = node_config(self.id, &self.voters, &self.dir);
        (self.tune)(&mut config);
        let (node, deliver) = Node::open(config, parts).unwrap();
        self.node = Some(node);
        self.engine = Some(engine);
        self.wal = Some(wal);
        deliver
    }

    /// Stops without a clean shutdown of the engine (as after a crash of
    /// the process: what the WAL and the last checkpoint hold survives).
    pub fn stop(&mut self, net: &Arc<LocalNetwork>) {
        net.unregister(self.id);
        self.shutdown();
    }

    /// Stops the node (its transport is the caller's).
    pub fn shutdown(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
        self.engine = None;
        self.wal = None;
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }
}

pub const VOTERS: [u64; 3] = [1, 2, 3];
pub const WAIT: Duration = Duration::from_secs(30);
pub const KEYS: u32 = 32;

/// Increments every key `rounds` times; returns the acknowledged count per key
/// and the count of unknown outcomes.
pub fn write(members: &[Member], rounds: u32, acked: &mut [i64]) -> usize {
    let mut unknown = 0;
    for _ in 0..rounds {
        for key in 0..KEYS {
            match incr_anywhere(members, key, WAIT) {
                EventOutcome::Ok(_) => acked[key as usize] += 1,
                EventOutcome::Unknown => unknown += 1,
                EventOutcome::Failed => panic!("no leader for key {key} within {WAIT:?}"),
            }
        }
    }
    unknown
}

pub fn assert_counters(member: &Member, acked: &[i64], unknown: usize) {
    for key in 0..KEYS {
        let value = counter(member.engine(), key);
        let floor = acked[key as usize];
        assert!(
            value >= floor && value <= floor + unknown as i64,
            "member {} key {key}: {value}, acknowledged {floor}, unknown {unknown}",
            member.id
        );
    }
}

/// One data directory per voter.
pub fn dirs() -> Vec<tempfile::TempDir> {
    VOTERS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect()
}

/// A member that leads no shard (the last one if every member leads one).
pub fn follower_of_all(members: &[Member]) -> u64 {
    members
        .iter()
        .map(|m| m.id)
        .find(|&id| (0..SHARDS).all(|s| leader_of(members, s) != id))
        .unwrap_or(VOTERS[2])
}

/// A digest for key `i`, spread over partitions.
pub fn digest(i: u32) -> Digest {
    let mut d = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

pub fn shard_of(key: u32) -> u32 {
    ShardMap::new(SHARDS)
        .unwrap()
        .shard_of(partition_of(&digest(key)))
}

/// Adds `by` to key `key`'s counter.
pub fn incr(key: u32, by: i64) -> Command {
    Command::Operate(Operate {
        write: Write::new(NS, digest(key)),
        ops: vec![Op::Incr(Bin::new("n", Value::Int(by)))],
    })
}

/// The counter of `key` on this member's engine (0 if absent).
pub fn counter(engine: &Engine, key: u32) -> i64 {
    let record = engine
        .get(
            NS,
            &digest(key),
            &BinSelection::All,
            aerie_replication::now_ms(),
        )
        .unwrap();
    match record.and_then(|r| r.bins.into_iter().find(|b| b.name == "n")) {
        Some(bin) => match bin.value {
            Value::Int(v) => v,
            other => panic!("counter is {other:?}"),
        },
        None => 0,
    }
}

/// Waits until `f` holds, or panics after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The leader of `shard` among `members`, once every live member agrees.
pub fn leader_of(members: &[Member], shard: u32) -> u64 {
    let mut leader = 0;
    eventually(Duration::from_secs(20), "a leader", || {
        let seen: Vec<u64> = members
            .iter()
            .filter(|m| m.node.is_some())
            .map(|m| m.node().leader(shard))
            .collect();
        leader = seen[0];
        leader != 0
            && seen.iter().all(|&l| l == leader)
            && members.iter().any(|m| m.id == leader && m.node.is_some())
    });
    leader
}

/// Per-partition summaries of this member's engine for `shard`.
pub fn checksums(engine: &Engine, shard: u32) -> Vec<aerie_engine::PartitionSummary> {
    let map = ShardMap::new(SHARDS).unwrap();
    map.partitions(shard)
        .into_iter()
        .map(|p| {
            engine
                .partition_summary(NS, p, aerie_replication::now_ms())
                .unwrap()
        })
        .collect()
}

pub fn applied(engine: &Engine, shard: u32) -> u64 {
    engine.applied_index(log_id(shard))
}

/// What a client saw of one operation: the history format a linearizability
/// checker reads (one record per operation, times in ns since the test began).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The client (thread) that ran it.
    pub client: usize,
    /// The key.
    pub key: u32,
    /// Increment by 1, or read the counter.
    pub op: EventOp,
    /// When the client invoked it.
    pub invoke_ns: u64,
    /// When the client saw the outcome.
    pub complete_ns: u64,
    /// The outcome.
    pub outcome: EventOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOp {
    Incr,
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Acknowledged (for a read: the value read).
    Ok(i64),
    /// Known not to have happened (not leader, dropped, overloaded).
    Failed,
    /// May or may not have happened (in doubt, timeout).
    Unknown,
}

/// Proposes to whichever member leads the key's shard, retrying while
/// leadership moves; returns the outcome kind.
pub fn incr_anywhere(members: &[Member], key: u32, timeout: Duration) -> EventOutcome {
    let shard = shard_of(key);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let leader = members
            .iter()
            .filter(|m| m.node.is_some())
            .find(|m| m.node().leader(shard) == m.id);
        let Some(leader) = leader else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match leader
            .node()
            .propose_wait(shard, incr(key, 1), Duration::from_secs(5))
        {
            Ok(_) => return EventOutcome::Ok(1),
            Err(aerie_replication::Error::NotLeader { .. })
            | Err(aerie_replication::Error::Dropped(_)) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return EventOutcome::Unknown,
        }
    }
    EventOutcome::Failed
}

/// Waits until every live member has applied what the shard's leader has.
pub fn converge(members: &[Member], timeout: Duration) {
    for shard in 0..SHARDS {
        let leader = leader_of(members, shard);
        eventually(timeout, "followers to catch up", || {
            let lead = members.iter().find(|m| m.id == leader).unwrap();
            let target = applied(lead.engine(), shard);
            members
                .iter()
                .filter(|m| m.node.is_some())
                .all(|m| applied(m.engine(), shard) >= target)
        });
    }
}

/// Asserts every live member has the same per-partition checksums.
pub fn assert_identical(members: &[Member]) {
    let live: Vec<&Member> = members.iter().filter(|m| m.node.is_some()).collect();
    for shard in 0..SHARDS {
        let first = checksums(live[0].engine(), shard);
        for m in &live[1..] {
            assert_eq!(
                checksums(m.engine(), shard),
                first,
                "member {} shard {shard}",
                m.id
            );
        }
    }
}

/// Writes one frame on a plain socket (a peer that speaks the fabric by hand).
pub fn write_frame(stream: &mut std::net::TcpStream, frame_kind: u8, payload: &[u8]) {
    use std::io::Write as _;
    let bytes = aerie_replication::fabric::frame::encode(frame_kind, payload).unwrap();
    stream.write_all(&bytes).unwrap();
}

/// Reads one frame off a plain socket (`None` at EOF).
pub fn read_frame(stream: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use aerie_replication::fabric::{format, frame};
    use std::io::Read as _;
    let mut header = [0u8; format::FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).ok()?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut rest = vec![0u8; length + format::FRAME_TRAILER_BYTES];
    stream.read_exact(&mut rest).ok()?;
    let bytes = [&header[..], &rest].concat();
    let (found, _) = frame::decode(&bytes, format::FRAME_LIMIT_BYTES)
        .unwrap()
        .unwrap();
    Some((found.kind, found.payload.to_vec()))
}
