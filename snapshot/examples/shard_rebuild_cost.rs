#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Times one shard's rebuild steps in isolation: a snapshot of N records
//! (default 125 000 of 100 B, one shard of the 1M rebuild benchmark) taken,
//! verified, then installed into an empty engine. For profiling:
//! `cargo run --release -p aerie-snapshot --example shard_rebuild_cost [N]`.

use std::time::Instant;

use aerie_engine::{Bin, Command, Engine, EngineConfig, NamespaceConfig, Put, Value, Write};
use aerie_snapshot::{Capture, ShardMeta, SnapshotReader, WriteOptions, install_verified};

const NS: &str = "test";

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: vec![NamespaceConfig::named(NS)],
        checkpoint_interval_ms: 0,
        ..EngineConfig::default()
    }
}

/// The engine holds this many shards' records; one is snapshotted
/// (`SHARDS`, default 1).
fn shards() -> u16 {
    std::env::var("SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Rounds of create, verify and install (`REPEAT`, default 1).
fn repeat() -> usize {
    std::env::var("REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .map_or(125_000, |a| a.parse().unwrap())
        * u64::from(shards());
    let root = tempfile::tempdir_in(".").unwrap();
    let source = Engine::open(config(&root.path().join("source"))).unwrap();
    for i in 0..records {
        let mut digest = [0u8; 20];
        digest[..8].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
        let cmd = Command::Put(Put {
            write: Write::new(NS, digest),
            bins: vec![Bin::new(
                "v",
                Value::Blob {
                    particle: 4,
                    bytes: vec![(i % 251) as u8; 100],
                },
            )],
        });
        source.apply(1, i + 1, 1_704_067_200_000, &cmd).unwrap();
    }
    source.checkpoint().unwrap();
    let meta = ShardMeta {
        cluster_name: "cost".into(),
        node_id: 1,
        shard_id: 0,
        log_id: 1,
        partitions: (0..4096).filter(|p| p % shards() == 0).collect(),
    };
    for round in 0..repeat() {
        let out = root.path().join(format!("snapshots-{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let t = Instant::now();
        let info = Capture::take(&source, 1, &meta.partitions)
            .unwrap()
            .write(
                &out,
                &meta,
                1,
                1_704_067_200_000,
                WriteOptions::default(),
                |_| {},
            )
            .unwrap();
        let create = t.elapsed();
        let t = Instant::now();
        let reader = SnapshotReader::open(&info.path).unwrap();
        let report = reader.verify(|_| {}).unwrap();
        let verify = t.elapsed();
        let target = Engine::open(config(&root.path().join(format!("target-{round}")))).unwrap();
        let t = Instant::now();
        let installed = install_verified(&target, &reader, &report, |_| {}).unwrap();
        let install = t.elapsed();
        println!(
            "{records} records, file {} bytes: create {create:?}, verify {verify:?}, install {install:?} ({installed} records)",
            info.file_bytes
        );
    }
}
