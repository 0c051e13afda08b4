//! The point-in-time property: snapshots taken while writers keep changing
//! records restore to exactly the model's state at the snapshot's index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aerie_engine::Engine;
use aerie_snapshot::{Capture, SnapshotReader, WriteOptions, install};
use common::*;

const COMMANDS: usize = 6000;
const MAX_SNAPSHOTS: usize = 12;

/// Shard 0 owns the lower half of the partitions: the snapshot must hold
/// exactly those.
fn shard_partitions() -> Vec<u16> {
    (0..2048).collect()
}

#[test]
fn snapshots_taken_under_load_restore_to_the_model_at_their_index() {
    let source_dir = tempfile::tempdir().unwrap();
    let snap_dir = tempfile::tempdir().unwrap();
    let commands = Arc::new(workload(7, COMMANDS, 64));
    let engine = Arc::new(Engine::open(config(source_dir.path())).unwrap());
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let (engine, commands, done) = (engine.clone(), commands.clone(), done.clone());
        std::thread::spawn(move || {
            for (i, cmd) in commands.iter().enumerate() {
                let index = i as u64 + 1;
                let _ = engine.apply(LOG, index, now_of(index), cmd);
                // Checkpoints and defrag run under the views: pinned blocks
                // must survive them.
                if index.is_multiple_of(700) {
                    engine.checkpoint().unwrap();
                    engine.defrag_step(1 << 20).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let options = WriteOptions {
        chunk_raw_bytes: 8 << 10,
        ..WriteOptions::default()
    };
    let mut snapshots = Vec::new();
    while !done.load(Ordering::SeqCst) && snapshots.len() < MAX_SNAPSHOTS {
        let capture = Capture::take(&engine, LOG, &shard_partitions()).unwrap();
        let index = capture.index();
        let info = capture
            .write(
                snap_dir.path(),
                &meta(0, shard_partitions()),
                1,
                now_of(index),
                options,
                |_| {},
            )
            .unwrap();
        snapshots.push(info);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    writer.join().unwrap();
    snapshots.push(snapshot_after_all(&engine, snap_dir.path(), options));
    let distinct: std::collections::BTreeSet<u64> =
        snapshots.iter().map(|s| s.header.index).collect();
    assert!(
        distinct.len() >= 2,
        "snapshots at {distinct:?}: the load was not concurrent"
    );

    for info in &snapshots {
        let restored_dir = tempfile::tempdir().unwrap();
        let restored = Engine::open(config(restored_dir.path())).unwrap();
        let reader = SnapshotReader::open(&info.path).unwrap();
        install(&restored, &reader, |_| {}).unwrap();
        let models = models_at(&commands, info.header.index);
        assert_matches(&restored, &models, &shard_partitions());
        assert_eq!(restored.durable_applied_index(LOG), info.header.index);
        let others: Vec<u16> = (2048..4096).collect();
        assert!(
            scan(&restored, "test", &others).is_empty(),
            "foreign partitions"
        );
    }
}

fn snapshot_after_all(
    engine: &Engine,
    dir: &std::path::Path,
    options: WriteOptions,
) -> aerie_snapshot::SnapshotInfo {
    let capture = Capture::take(engine, LOG, &shard_partitions()).unwrap();
    assert_eq!(capture.index(), COMMANDS as u64);
    capture
        .write(dir, &meta(0, shard_partitions()), 1, T0_MS, options, |_| {})
        .unwrap()
}

#[test]
fn install_replaces_existing_partitions_and_survives_a_reopen() {
    let source_dir = tempfile::tempdir().unwrap();
    let snap_dir = tempfile::tempdir().unwrap();
    let commands = workload(11, 1500, 32);
    let source = engine_with(source_dir.path(), &commands);
    let info = snapshot_all(&source, snap_dir.path(), WriteOptions::default());

    // The target already holds other data in the same partitions, at a later index.
    let target_dir = tempfile::tempdir().unwrap();
    let other = workload(99, 3000, 50);
    let target = engine_with(target_dir.path(), &other);
    let reader = SnapshotReader::open(&info.path).unwrap();
    let installed = install(&target, &reader, |_| {}).unwrap();
    assert_eq!(installed, reader.footer().records);
    let all: Vec<u16> = (0..4096).collect();
    let models = models_at(&commands, commands.len() as u64);
    assert_matches(&target, &models, &all);
    drop(target);

    let reopened = Engine::open(config(target_dir.path())).unwrap();
    assert_eq!(reopened.durable_applied_index(LOG), commands.len() as u64);
    assert_matches(&reopened, &models, &all);
    // Transfers keep the total: a whole-state check on top of the record one.
    let total: i64 = scan(&reopened, "test", &all)
        .values()
        .filter(|r| r.set == "accounts")
        .map(|r| match r.bins[0].value {
            aerie_engine::Value::Int(v) => v,
            _ => 0,
        })
        .sum();
    assert_eq!(total, ACCOUNT_TOTAL);
}
