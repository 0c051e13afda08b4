//! WAL disk use stays bounded under a one-shard write pattern: every shard
//! gets one early entry (then goes idle), one shard keeps writing for many
//! segments. With only the segment-pinning snapshot trigger on (no entry,
//! byte or time trigger), the idle shards' early entries must not pin every
//! newer segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aerie_engine::{Bin, Command, Engine, Put, Value, Write};
use aerie_replication::transport::LocalNetwork;
use aerie_replication::{Node, NodeParts, SnapshotPolicy};
use aerie_wal::{Wal, WalConfig};
use common::*;

const SEGMENT_BYTES: u64 = 256 << 10;
const SEGMENTS_BEFORE_SNAPSHOT: usize = 4;
/// Segments written in all: several times the trigger.
const SEGMENTS_WRITTEN: u64 = 24;
const VALUE_BYTES: usize = 2 << 10;
/// The documented bound for this test's write rate: the trigger, plus what
/// is written while the snapshot, the engine's next checkpoint (300 ms here)
/// and the next compaction (200 ms) catch up, plus the active segment.
const BOUND_SEGMENTS: usize = SEGMENTS_BEFORE_SNAPSHOT + 6;

fn put(key: u32) -> Command {
    Command::Put(Put {
        write: Write::new(NS, digest(key)),
        bins: vec![Bin::new("v", Value::String(vec![b'x'; VALUE_BYTES]))],
    })
}

#[test]
fn one_busy_shard_and_idle_ones_keep_the_wal_under_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new(1);
    let mut wal_config = WalConfig::new(dir.path().join("wal"));
    wal_config.segment_size_bytes = SEGMENT_BYTES;
    wal_config.max_entry_bytes = 64 << 10;
    wal_config.recycle_segments = 0;
    let wal = Arc::new(Wal::open(wal_config).unwrap());
    let engine = Arc::new(Engine::open(engine_config(dir.path())).unwrap());
    let mut config = node_config(1, &[1], dir.path());
    config.wal_segments_before_snapshot = SEGMENTS_BEFORE_SNAPSHOT;
    config.snapshot = SnapshotPolicy {
        every_entries: 0,
        every_bytes: 0,
        every_ms: 0,
        ..config.snapshot
    };
    let parts = NodeParts {
        wal: wal.clone(),
        engine: engine.clone(),
        transport: net.clone(),
        on_cluster_change: None,
    };
    let (node, deliver) = Node::open(config, parts).unwrap();
    net.register(1, deliver);
    let wait = Duration::from_secs(10);
    eventually(wait, "leaders", || (0..SHARDS).all(|s| node.leader(s) == 1));
    // One early entry in every shard, then only shard 0 writes.
    for shard in 0..SHARDS {
        let key = (0..).find(|&k| shard_of(k) == shard).unwrap();
        node.propose_wait(shard, put(key), wait).unwrap();
    }
    let busy: Vec<u32> = (0..).filter(|&k| shard_of(k) == 0).take(64).collect();
    let writes = SEGMENTS_WRITTEN * SEGMENT_BYTES / VALUE_BYTES as u64;
    let mut most = 0;
    for i in 0..writes {
        let key = busy[(i % busy.len() as u64) as usize];
        node.propose_wait(0, put(key), wait).unwrap();
        most = most.max(wal.segments().len());
    }
    assert!(
        most <= BOUND_SEGMENTS,
        "{most} WAL segments at most while writing {SEGMENTS_WRITTEN} segments' worth; the bound is {BOUND_SEGMENTS}"
    );
    // Once quiet, the log shrinks back to the trigger.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.segments().len() > SEGMENTS_BEFORE_SNAPSHOT + 1 {
        assert!(
            Instant::now() < deadline,
            "{} segments after going quiet",
            wal.segments().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("at most {most} segments of {SEGMENT_BYTES} bytes while writing {writes} entries");
    node.stop();
}
