//! Listing snapshots and retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_snapshot::{Capture, Catalog, Retention, WriteOptions, apply_retention};
use common::*;

const HOUR_MS: u64 = 3_600_000;

#[test]
fn retention_keeps_the_newest_n_or_the_young_and_always_the_newest() {
    let source_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let commands = workload(5, 400, 20);
    let engine = engine_with(source_dir.path(), &commands[..100]);
    let shards: [(u32, Vec<u16>); 2] = [(0, (0..2048).collect()), (1, (2048..4096).collect())];
    // Five snapshots per shard, one an hour apart (created at hours 0..5).
    for (hour, upto) in [100u64, 150, 200, 250, 300].into_iter().enumerate() {
        for i in engine.applied_index(LOG)..upto {
            let _ = engine.apply(LOG, i + 1, now_of(i + 1), &commands[i as usize]);
        }
        for (shard, partitions) in &shards {
            let capture = Capture::take(&engine, LOG, partitions).unwrap();
            let created = T0_MS + hour as u64 * HOUR_MS;
            capture
                .write(
                    dir.path(),
                    &meta(*shard, partitions.clone()),
                    1,
                    created,
                    WriteOptions::default(),
                    |_| {},
                )
                .unwrap();
        }
    }
    std::fs::write(
        dir.path().join("shard-00009-00000000000000000001.snap"),
        b"junk",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a snapshot").unwrap();
    let catalog = Catalog::list(dir.path()).unwrap();
    assert_eq!(catalog.entries.len(), 10);
    assert_eq!(catalog.unreadable.len(), 1);
    let indexes: Vec<u64> = catalog.by_shard()[&1]
        .iter()
        .map(|e| e.header.index)
        .collect();
    assert_eq!(indexes, vec![100, 150, 200, 250, 300]);

    // No rule: nothing goes.
    let now = T0_MS + 10 * HOUR_MS;
    assert!(
        apply_retention(dir.path(), Retention::default(), now)
            .unwrap()
            .is_empty()
    );
    // Younger than 7.5 hours at hour 10: hours 3 and 4 stay; or the newest 3.
    let retention = Retention {
        keep_newest: Some(3),
        keep_younger_than_ms: Some(7 * HOUR_MS + HOUR_MS / 2),
    };
    let deleted = apply_retention(dir.path(), retention, now).unwrap();
    assert_eq!(deleted.len(), 4, "{deleted:?}");
    let left = Catalog::list(dir.path()).unwrap();
    for entries in left.by_shard().values() {
        let kept: Vec<u64> = entries.iter().map(|e| e.header.index).collect();
        assert_eq!(kept, vec![200, 250, 300]);
    }
    // Everything is old and N = 0: still the newest of each shard stays.
    let retention = Retention {
        keep_newest: Some(0),
        keep_younger_than_ms: Some(1),
    };
    apply_retention(dir.path(), retention, now).unwrap();
    let left = Catalog::list(dir.path()).unwrap();
    let kept: Vec<(u32, u64)> = left
        .entries
        .iter()
        .map(|e| (e.header.shard_id, e.header.index))
        .collect();
    assert_eq!(kept, vec![(0, 300), (1, 300)]);
    assert!(dir.path().join("notes.txt").exists());
}
