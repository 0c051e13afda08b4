#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Propose-to-applied throughput with fsync `always`: one member with 1, 16,
//! 64 and 256 concurrent proposers spread over all shards (and 64 proposers
//! at several shard counts, which chose the default), and three in-process
//! members at 64 proposers. Prints entries per fdatasync.
//! `cargo bench -p aerie-replication --bench propose`

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aerie_engine::{
    Bin, Command, Digest, Engine, EngineConfig, NamespaceConfig, Op, Operate, Value, Write,
    partition_of,
};
use aerie_replication::shards::ShardMap;
use aerie_replication::transport::LocalNetwork;
use aerie_replication::{Node, NodeConfig, NodeParts};
use aerie_wal::{Wal, WalConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const NS: &str = "bench";
/// Operations per measured iteration.
const OPS: u64 = 4096;

struct Member {
    node: Node,
    wal: Arc<Wal>,
}

fn start(id: u64, voters: &[u64], shards: u32, dir: &Path, net: &Arc<LocalNetwork>) -> Member {
    let wal = Arc::new(Wal::open(WalConfig::new(dir.join("wal"))).unwrap());
    let engine = Arc::new(
        Engine::open(EngineConfig {
            dir: dir.join("engine"),
            namespaces: vec![NamespaceConfig::named(NS)],
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let mut config = NodeConfig::new(id, voters.to_vec(), dir);
    config.shards = shards;
    config.snapshot.every_entries = 0;
    let parts = NodeParts {
        wal: wal.clone(),
        engine,
        transport: net.clone(),
        on_cluster_change: None,
    };
    let (node, deliver) = Node::open(config, parts).unwrap();
    net.register(id, deliver);
    Member { node, wal }
}

fn digest(i: u64) -> Digest {
    let mut d = [0u8; 20];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xBE7C;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

fn command(i: u64) -> Command {
    Command::Operate(Operate {
        write: Write::new(NS, digest(i)),
        ops: vec![Op::Write(Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: vec![i as u8; 100],
            },
        ))],
    })
}

fn wait_leaders(leader: &Node, shards: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..shards).any(|s| leader.leader(s) != leader.config().node_id) {
        for s in 0..shards {
            if leader.leader(s) == 0 {
                leader.campaign(s);
            }
        }
        assert!(Instant::now() < deadline, "no leaders");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `OPS` proposals from `proposers` threads; returns the elapsed time.
fn run(node: &Arc<Node>, shards: u32, proposers: u64, base: &AtomicU64) -> Duration {
    let map = ShardMap::new(shards).unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..proposers)
        .map(|p| {
            let node = node.clone();
            let first = base.fetch_add(OPS, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut i = p;
                while i < OPS {
                    let key = first + i;
                    let shard = map.shard_of(partition_of(&digest(key)));
                    node.propose_wait(shard, command(key), Duration::from_secs(30))
                        .unwrap();
                    i += proposers;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    started.elapsed()
}

fn bench_group(c: &mut Criterion, name: &str, cases: &[(u32, u64)], members: usize) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(OPS));
    for &(shards, proposers) in cases {
        let net = LocalNetwork::new(1);
        let dirs: Vec<_> = (0..members).map(|_| tempfile::tempdir().unwrap()).collect();
        let voters: Vec<u64> = (1..=members as u64).collect();
        let started: Vec<Member> = dirs
            .iter()
            .zip(&voters)
            .map(|(d, &id)| start(id, &voters, shards, d.path(), &net))
            .collect();
        let mut started = started.into_iter();
        let leader = started.next().unwrap();
        let _followers: Vec<Member> = started.collect();
        wait_leaders(&leader.node, shards);
        let wal = leader.wal.clone();
        let node = Arc::new(leader.node);
        let base = AtomicU64::new(0);
        let before = wal.stats();
        let id = BenchmarkId::new(format!("shards{shards}"), format!("{proposers}proposers"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(&node, shards, proposers, &base))
                    .sum()
            })
        });
        let after = wal.stats();
        let syncs = after.syncs.saturating_sub(before.syncs).max(1);
        let entries = after.entries.saturating_sub(before.entries);
        eprintln!(
            "{name} shards {shards} proposers {proposers}: {:.1} entries per fdatasync",
            entries as f64 / syncs as f64
        );
        drop(node);
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let one = [
        (8, 1),
        (8, 16),
        (8, 64),
        (8, 256),
        (1, 64),
        (4, 64),
        (16, 64),
    ];
    bench_group(c, "one_member", &one, 1);
    bench_group(c, "three_members", &[(8, 64)], 3);
}

criterion_group!(propose, benches);
criterion_main!(propose);
