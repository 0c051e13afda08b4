#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The install API: staged records stay invisible until the commit, an
//! abandoned or refused install leaves the engine exactly as it was and its
//! staged files gone, and expiry reclaim keeps out of partitions being
//! installed. Faults and crashes during installs: `aerie-snapshot`'s
//! `tests/install.rs` and `tests/install_crash.rs`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use aerie_engine::{
    Bin, Command, Engine, EngineConfig, Error, NamespaceConfig, Put, Record, Ttl, Value, Write,
    partition_of,
};
use common::*;

const OTHER: &str = "other";

fn two_namespaces(dir: &Path) -> EngineConfig {
    let mut cfg = config(dir, 8 << 10);
    cfg.namespaces.push(NamespaceConfig {
        write_block_size_bytes: 8 << 10,
        ..NamespaceConfig::named(OTHER)
    });
    cfg
}

fn record(i: u32, value: i64) -> Record {
    Record {
        digest: digest(i),
        set: String::new(),
        key: None,
        bins: vec![Bin::new("v", Value::Int(value))],
        generation: 1,
        void_time: 0,
        last_update_ms: T0_MS,
    }
}

/// The partitions of keys 0..n, and the records for them.
fn batch(n: u32, value: i64) -> (Vec<u16>, Vec<Record>) {
    let records: Vec<Record> = (0..n).map(|i| record(i, value)).collect();
    let partitions: BTreeSet<u16> = records.iter().map(|r| partition_of(&r.digest)).collect();
    (partitions.into_iter().collect(), records)
}

fn block_files(dir: &Path) -> BTreeSet<String> {
    [NS, OTHER]
        .iter()
        .flat_map(|ns| std::fs::read_dir(dir.join(ns)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

/// An engine of both namespaces with 50 records applied through log 1.
fn filled(dir: &std::path::Path) -> Engine {
    let engine = Engine::open(two_namespaces(dir)).unwrap();
    for i in 0..50 {
        engine
            .apply(1, u64::from(i) + 1, T0_MS, &put_int(i, 1))
            .unwrap();
    }
    engine
}

#[test]
fn staged_records_are_invisible_and_an_abandoned_install_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = filled(dir.path());
    engine.checkpoint().unwrap();
    let before = dump(&engine, T0_MS);
    let files = block_files(dir.path());
    let (partitions, records) = batch(200, 2); // several blocks' worth
    let mut install = engine
        .begin_install(&[NS, OTHER], &partitions, 1, 900)
        .unwrap();
    install.stage(NS, records).unwrap();
    assert!(
        block_files(dir.path()).len() > files.len() + 1,
        "staged on disk"
    );
    assert_eq!(dump(&engine, T0_MS), before, "invisible before the commit");
    engine.checkpoint().unwrap(); // a checkpoint meanwhile does not list them
    drop(install);
    assert_eq!(block_files(dir.path()), files, "staged files deleted");
    assert_eq!(dump(&engine, T0_MS), before);
    assert_eq!(engine.applied_index(1), 50);
    drop(engine);
    let engine = Engine::open(two_namespaces(dir.path())).unwrap();
    assert_eq!(dump(&engine, T0_MS), before);
    assert_eq!(engine.durable_applied_index(1), 50);
}

#[test]
fn commit_replaces_every_staged_namespace_and_claims_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let engine = filled(dir.path());
    let other_put = Command::Put(Put {
        write: Write::new(OTHER, digest(7)),
        bins: vec![Bin::new("v", Value::Int(1))],
    });
    engine.apply(1, 51, T0_MS, &other_put).unwrap();
    let (partitions, records) = batch(20, 3);
    let mut expected = dump(&engine, T0_MS);
    expected.retain(|d, _| !partitions.contains(&partition_of(d)));
    expected.extend(records.iter().map(|r| (r.digest, r.clone())));
    let mut install = engine
        .begin_install(&[NS, OTHER], &partitions, 1, 900)
        .unwrap();
    assert_eq!(install.stage(NS, records).unwrap(), 20);
    install.stage(OTHER, Vec::new()).unwrap(); // emptied
    assert_eq!(install.commit().unwrap(), 20);
    assert_eq!(dump(&engine, T0_MS), expected);
    assert!(
        !engine.exists(OTHER, &digest(7), T0_MS).unwrap(),
        "partition of key 7 emptied"
    );
    assert_eq!(
        (engine.applied_index(1), engine.durable_applied_index(1)),
        (900, 900)
    );
}

#[test]
fn a_refused_install_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(two_namespaces(dir.path())).unwrap();
    for i in 0..30 {
        engine
            .apply(1, u64::from(i) + 1, T0_MS, &put_int(i, 1))
            .unwrap();
    }
    let before = dump(&engine, T0_MS);
    let files = block_files(dir.path());
    let (partitions, mut records) = batch(30, 4);
    records.push(records[0].clone());
    let mut install = engine.begin_install(&[NS], &partitions, 1, 900).unwrap();
    install.stage(NS, records).unwrap();
    assert!(
        matches!(install.commit(), Err(Error::Parameter(_))),
        "a digest twice"
    );

    let mut install = engine.begin_install(&[NS], &partitions, 1, 900).unwrap();
    let outside = (0..)
        .map(|i| record(1000 + i, 1))
        .find(|r| !partitions.contains(&partition_of(&r.digest)))
        .unwrap();
    assert!(matches!(
        install.stage(NS, [outside]),
        Err(Error::Parameter(_))
    ));
    assert!(
        matches!(install.stage(OTHER, []), Err(Error::Parameter(_))),
        "not part of it"
    );
    let again = engine.begin_install(&[OTHER, NS], &partitions[..1], 2, 5);
    assert!(
        matches!(again, Err(Error::Parameter(_))),
        "overlapping installs"
    );
    let spoiled = install.commit();
    assert!(
        matches!(spoiled, Err(Error::Parameter(_))),
        "a failed stage spoils it"
    );
    assert!(
        engine.begin_install(&[NS], &partitions, 1, 900).is_ok(),
        "free again"
    );
    assert!(matches!(
        engine.begin_install(&[NS], &[4096], 1, 900),
        Err(Error::Parameter(_))
    ));
    assert_eq!(dump(&engine, T0_MS), before);
    assert_eq!(block_files(dir.path()), files);
    assert_eq!(engine.applied_index(1), 30);
}

#[test]
fn reclaim_leaves_partitions_being_installed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(two_namespaces(dir.path())).unwrap();
    let mut write = Write::new(NS, digest(1));
    write.ttl = Ttl::Seconds(10);
    let expiring = Command::Put(Put {
        write,
        bins: vec![Bin::new("v", Value::Int(1))],
    });
    engine.apply(1, 1, T0_MS, &expiring).unwrap();
    let later = T0_MS + 20_000;
    let partition = partition_of(&digest(1));
    let mut install = engine.begin_install(&[NS], &[partition], 1, 10).unwrap();
    // The snapshot has a live version of the same record. A reclaim
    // tombstone for the expired one, written after it was staged, would
    // carry a higher sequence and hide it at the next cold start.
    install.stage(NS, [record(1, 5)]).unwrap();
    assert_eq!(engine.reclaim_expired(later, 100).unwrap(), 0);
    install.commit().unwrap();
    assert_eq!(
        engine.reclaim_expired(later, 100).unwrap(),
        0,
        "the installed version lives"
    );
    engine.close().unwrap();
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(two_namespaces(dir.path())).unwrap();
    assert_eq!(dump(&engine, later)[&digest(1)], record(1, 5));
}
