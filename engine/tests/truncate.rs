#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Truncation per shard: a `Truncate` removes only the records of the
//! partitions it names that are older than its cut-off, reads nothing outside
//! them, and never uses a cut-off later than the command's own clock; the
//! same holds after a fast and a cold start.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aerie_engine::model::Model;
use aerie_engine::{Command, Digest, Engine, Error, Record, partition_of};
use common::*;

const BLOCK_BYTES: u32 = 16 << 10;
const RECORDS: u32 = 600;
/// Shard 1 of 8: partitions 512..1024.
const SHARD: std::ops::Range<u16> = 512..1024;

fn truncate(set: Option<&str>, before_ms: u64, partitions: Vec<u16>) -> Command {
    Command::Truncate {
        namespace: NS.into(),
        set: set.map(str::to_string),
        before_ms,
        partitions,
    }
}

/// `RECORDS` records, record `i` written at `T0_MS + i`, applied to the
/// engine and the model alike; returns the next log index.
fn fill(engine: &Engine, model: &mut Model) -> u64 {
    for i in 0..RECORDS {
        let now = T0_MS + u64::from(i);
        let cmd = put_int(i, i64::from(i));
        engine.apply(1, u64::from(i) + 1, now, &cmd).unwrap();
        model.apply(now, &cmd).unwrap();
    }
    u64::from(RECORDS) + 1
}

fn in_shard(d: &Digest) -> bool {
    SHARD.contains(&partition_of(d))
}

fn reopen_both_ways(dir: &Path, expected: &BTreeMap<Digest, Record>, now_ms: u64) {
    let engine = Engine::open(config(dir, BLOCK_BYTES)).unwrap();
    assert!(!engine.recovery_report().namespaces[NS].cold_start);
    assert_eq!(&dump(&engine, now_ms), expected, "fast start");
    drop(engine);
    std::fs::remove_file(dir.join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir, BLOCK_BYTES)).unwrap();
    assert!(engine.recovery_report().namespaces[NS].cold_start);
    assert_eq!(&dump(&engine, now_ms), expected, "cold start");
}

#[test]
fn truncate_removes_exactly_its_partitions_records_older_than_the_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let mut model = Model::new(NS, 0);
    let index = fill(&engine, &mut model);
    let before = dump(&engine, T0_MS + 1_000);
    let cut_off = T0_MS + 300;
    let cmd = truncate(None, cut_off, SHARD.collect());
    engine.apply(1, index, T0_MS + 1_000, &cmd).unwrap();
    model.apply(T0_MS + 1_000, &cmd).unwrap();

    let after = dump(&engine, T0_MS + 1_000);
    let gone: Vec<&Digest> = before.keys().filter(|d| !after.contains_key(*d)).collect();
    assert!(
        gone.len() > 10,
        "the test must remove something: {}",
        gone.len()
    );
    for (d, r) in &before {
        let should_go = in_shard(d) && r.last_update_ms < cut_off;
        assert_eq!(!after.contains_key(d), should_go, "{r:?}");
    }
    assert!(
        after.keys().any(in_shard),
        "newer records of the shard stay"
    );
    assert_eq!(after, model.visible(T0_MS + 1_000));
    assert_eq!(engine.stats()[0].counters.truncated, gone.len() as u64);
    engine.close().unwrap();
    reopen_both_ways(dir.path(), &after, T0_MS + 1_000);
}

#[test]
fn set_truncate_stays_inside_its_partitions_and_its_set() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let mut model = Model::new(NS, 0);
    let mut index = 1;
    for i in 0..RECORDS {
        let mut write = aerie_engine::Write::new(NS, digest(i));
        write.set = if i % 2 == 0 { "even" } else { "odd" }.into();
        let cmd = Command::Put(aerie_engine::Put {
            write,
            bins: vec![aerie_engine::Bin::new("v", aerie_engine::Value::Int(1))],
        });
        engine.apply(1, index, T0_MS, &cmd).unwrap();
        model.apply(T0_MS, &cmd).unwrap();
        index += 1;
    }
    let cmd = truncate(Some("even"), T0_MS + 1, SHARD.collect());
    engine.apply(1, index, T0_MS + 5, &cmd).unwrap();
    model.apply(T0_MS + 5, &cmd).unwrap();
    let after = dump(&engine, T0_MS + 5);
    assert_eq!(after, model.visible(T0_MS + 5));
    assert!(
        after
            .values()
            .all(|r| r.set == "odd" || !in_shard(&r.digest))
    );
    assert!(after.values().any(|r| r.set == "even"));
    engine.close().unwrap();
    reopen_both_ways(dir.path(), &after, T0_MS + 5);
}

#[test]
fn a_cut_off_after_the_command_clock_is_clamped_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let mut model = Model::new(NS, 0);
    let index = fill(&engine, &mut model);
    // Written at T0+0..T0+599; the command says "everything before the far
    // future" but carries the clock T0+250: only records older than that go.
    let now = T0_MS + 250;
    let cmd = truncate(None, u64::MAX, (0..4096).collect());
    engine.apply(1, index, now, &cmd).unwrap();
    model.apply(now, &cmd).unwrap();
    let after = dump(&engine, T0_MS + 1_000);
    assert_eq!(after.len(), RECORDS as usize - 250);
    assert!(after.values().all(|r| r.last_update_ms >= now));
    assert_eq!(after, model.visible(T0_MS + 1_000));
    // A record written after it with an older clock (another leader's) stays,
    // across restarts too: the marker hides only what came before it.
    let late = put_int(RECORDS + 1, 7);
    engine.apply(1, index + 1, T0_MS + 100, &late).unwrap();
    model.apply(T0_MS + 100, &late).unwrap();
    let after = dump(&engine, T0_MS + 1_000);
    assert_eq!(after, model.visible(T0_MS + 1_000));
    assert_eq!(after.len(), RECORDS as usize - 249);
    engine.close().unwrap();
    reopen_both_ways(dir.path(), &after, T0_MS + 1_000);
}

#[test]
fn truncate_never_reads_records_outside_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let mut model = Model::new(NS, 0);
    let index = fill(&engine, &mut model);
    engine.close().unwrap();
    // Damage record 0, the first of block 1 and outside the shard (its reads
    // now fail), and reopen from index.ckpt, so nothing is cached.
    assert!(!in_shard(&digest(0)));
    let block = dir
        .path()
        .join(NS)
        .join(aerie_engine::format::block_file_name(1));
    let mut bytes = std::fs::read(&block).unwrap();
    let at = aerie_engine::format::BLOCK_HEADER_BYTES;
    bytes[at + 80] ^= 0x01;
    std::fs::write(&block, bytes).unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();

    // The shard's truncate needs every header of its partitions (the
    // cut-off is inside the data) and none of the others.
    let cmd = truncate(None, T0_MS + 300, SHARD.collect());
    engine.apply(1, index, T0_MS + 1_000, &cmd).unwrap();
    // A truncate of every partition reads the damaged record and says so.
    let all = truncate(None, T0_MS + 300, (0..4096).collect());
    match engine.apply(1, index + 1, T0_MS + 1_000, &all) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (block, at as u64 + 4));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_partition_out_of_range_is_a_parameter_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let mut model = Model::new(NS, 0);
    let index = fill(&engine, &mut model);
    let before = dump(&engine, T0_MS + 1_000);
    let cmd = truncate(None, T0_MS + 1_000, vec![3, 4096]);
    let got = engine.apply(1, index, T0_MS + 1_000, &cmd);
    assert!(matches!(got, Err(Error::Parameter(_))), "{got:?}");
    assert!(matches!(
        model.apply(T0_MS + 1_000, &cmd),
        Err(Error::Parameter(_))
    ));
    assert_eq!(engine.applied_index(1), index, "a record error is applied");
    assert_eq!(dump(&engine, T0_MS + 1_000), before);
}
