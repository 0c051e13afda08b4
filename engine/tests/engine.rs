#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behaviour of the engine through its public API: reads, writes, recovery,
//! checkpoints, defrag, expiry, truncation, stop-writes, views and installs.

mod common;

use aerie_engine::{
    Bin, BinSelection, BlockState, Command, Engine, Error, Op, OpResult, Operate, Ttl, Value,
    Write, partition_of,
};
use common::*;

#[test]
fn put_get_exists_delete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 64 << 10)).unwrap();
    let d = digest(1);
    let out = engine
        .apply(
            1,
            1,
            T0_MS,
            &put(
                d,
                vec![
                    Bin::new("a", Value::Int(1)),
                    Bin::new("b", Value::string("x")),
                ],
            ),
        )
        .unwrap();
    assert_eq!(out.generation, 1);
    let all = engine
        .get(NS, &d, &BinSelection::All, T0_MS)
        .unwrap()
        .unwrap();
    assert_eq!(all.bins.len(), 2);
    let named = engine
        .get(
            NS,
            &d,
            &BinSelection::Named(vec!["b".into(), "zz".into()]),
            T0_MS,
        )
        .unwrap()
        .unwrap();
    assert_eq!(named.bins, vec![Bin::new("b", Value::string("x"))]);
    let header = engine
        .get(NS, &d, &BinSelection::None, T0_MS)
        .unwrap()
        .unwrap();
    assert_eq!((header.generation, header.bins.len()), (1, 0));
    assert!(engine.exists(NS, &d, T0_MS).unwrap());
    engine.apply(1, 2, T0_MS, &delete(d)).unwrap();
    assert!(!engine.exists(NS, &d, T0_MS).unwrap());
    assert!(matches!(
        engine.apply(1, 3, T0_MS, &delete(d)),
        Err(Error::NotFound)
    ));
    assert_eq!(
        engine.applied_index(1),
        3,
        "a failed command still counts as applied"
    );
    assert!(matches!(
        engine.apply(1, 3, T0_MS, &delete(d)),
        Err(Error::IndexNotAfterApplied { .. })
    ));
    assert!(matches!(
        engine.get("nope", &d, &BinSelection::All, T0_MS),
        Err(Error::NamespaceNotFound(_))
    ));
}

#[test]
fn expired_records_are_invisible_at_once_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 64 << 10)).unwrap();
    let d = digest(1);
    let mut w = Write::new(NS, d);
    w.ttl = Ttl::Seconds(10);
    let cmd = Command::Operate(Operate {
        write: w,
        ops: vec![Op::Write(Bin::new("a", Value::Int(1)))],
    });
    engine.apply(1, 1, T0_MS, &cmd).unwrap();
    assert!(engine.exists(NS, &d, T0_MS + 9_999).unwrap());
    assert!(!engine.exists(NS, &d, T0_MS + 10_000).unwrap());
    assert!(
        engine
            .get(NS, &d, &BinSelection::All, T0_MS + 10_000)
            .unwrap()
            .is_none()
    );
    let touch = Command::Touch(Write::new(NS, d));
    assert!(matches!(
        engine.apply(1, 2, T0_MS + 10_000, &touch),
        Err(Error::NotFound)
    ));
    // Reclaim decides from the clock it is given, nothing else: a clock
    // before the void time reclaims nothing, even with the record long gone
    // for a reader at a later time.
    assert_eq!(engine.reclaim_expired(T0_MS + 9_999, 100).unwrap(), 0);
    assert_eq!(engine.reclaim_expired(T0_MS + 10_000, 100).unwrap(), 1);
    let stats = &engine.stats()[0];
    assert_eq!((stats.records, stats.tombstones), (0, 1));
}

#[test]
fn operate_results_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 64 << 10)).unwrap();
    let d = digest(5);
    let ops = vec![
        Op::Incr(Bin::new("n", Value::Int(2))),
        Op::Read("n".into()),
        Op::Append(Bin::new("s", Value::string("a"))),
    ];
    let cmd = Command::Operate(Operate {
        write: Write::new(NS, d),
        ops,
    });
    let out = engine.apply(1, 1, T0_MS, &cmd).unwrap();
    assert_eq!(
        out.results,
        vec![
            OpResult::None,
            OpResult::Value(Value::Int(2)),
            OpResult::None
        ]
    );
    let out = engine.apply(1, 2, T0_MS, &cmd).unwrap();
    assert_eq!(out.results[1], OpResult::Value(Value::Int(4)));
    assert_eq!(out.generation, 2);
    let rec = engine
        .get(NS, &d, &BinSelection::All, T0_MS)
        .unwrap()
        .unwrap();
    assert_eq!(rec.bins[1], Bin::new("s", Value::string("aa")));
}

fn fill(engine: &Engine, from_index: u64, n: u32, now_ms: u64) -> u64 {
    let mut index = from_index;
    for i in 0..n {
        index += 1;
        engine
            .apply(
                1,
                index,
                now_ms,
                &put(
                    digest(i),
                    vec![Bin::new(
                        "v",
                        Value::Blob {
                            particle: 4,
                            bytes: vec![i as u8; 200],
                        },
                    )],
                ),
            )
            .unwrap();
    }
    index
}

#[test]
fn crash_before_checkpoint_returns_to_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    let index = fill(&engine, 0, 100, T0_MS);
    engine.checkpoint().unwrap();
    let durable_state = dump(&engine, T0_MS);
    assert_eq!(engine.durable_applied_index(1), index);
    // Newer writes, flushed to disk but not checkpointed, then a crash.
    for i in 0..50u32 {
        engine
            .apply(1, index + 1 + u64::from(i), T0_MS, &put_int(i, 7))
            .unwrap();
    }
    engine
        .apply(1, index + 51, T0_MS, &delete(digest(60)))
        .unwrap();
    engine.tick(T0_MS + 10_000_000).unwrap(); // flush the current block
    drop(engine);
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    assert_eq!(engine.durable_applied_index(1), index);
    assert!(!engine.recovery_report().namespaces[NS].cold_start);
    assert_eq!(dump(&engine, T0_MS), durable_state);
}

#[test]
fn cold_start_equals_fast_start() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    let mut index = fill(&engine, 0, 200, T0_MS);
    for i in 0..50 {
        index += 1;
        engine
            .apply(1, index, T0_MS, &delete(digest(i * 3)))
            .unwrap();
    }
    engine.defrag_step(u64::MAX).unwrap();
    engine.checkpoint().unwrap();
    let expected = dump(&engine, T0_MS);
    engine.close().unwrap();
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    let report = &engine.recovery_report().namespaces[NS];
    assert!(report.cold_start);
    assert!(report.versions_scanned > 0);
    assert_eq!(dump(&engine, T0_MS), expected);
    for i in 0..50 {
        assert!(
            !engine.exists(NS, &digest(i * 3), T0_MS).unwrap(),
            "a deleted record came back"
        );
    }
}

#[test]
fn defrag_frees_blocks_only_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    let mut index = fill(&engine, 0, 300, T0_MS);
    // Overwrite most records: old blocks become sparse.
    for i in 0..270 {
        index += 1;
        engine.apply(1, index, T0_MS, &put_int(i, 1)).unwrap();
    }
    engine.checkpoint().unwrap();
    let expected = dump(&engine, T0_MS);
    let files = |dir: &std::path::Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.join(NS))
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let files_before = files(dir.path());
    let progress = engine.defrag_step(u64::MAX).unwrap();
    assert!(progress.blocks_done > 0, "{progress:?}");
    let stats = &engine.stats()[0];
    assert!(stats.blocks.iter().any(|b| b.state == BlockState::Freeing));
    // Nothing deleted yet: the durable checkpoint still needs those blocks.
    assert!(files(dir.path()).is_superset(&files_before));
    // A crash now must find everything in the old blocks.
    drop(engine);
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    assert_eq!(dump(&engine, T0_MS), expected);
    engine.defrag_step(u64::MAX).unwrap();
    engine.checkpoint().unwrap();
    assert!(
        !files(dir.path()).is_superset(&files_before),
        "no block was deleted"
    );
    assert_eq!(dump(&engine, T0_MS), expected);
    drop(engine);
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    assert_eq!(dump(&engine, T0_MS), expected);
    let c = engine.stats()[0].counters;
    assert_eq!(c.defrag_records_moved, 0, "counters restart at open");
}

#[test]
fn tombstones_survive_defrag_while_older_versions_may_exist() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 4096)).unwrap();
    // Record 0 lives in the first block, which stays dense (others never change).
    let mut index = fill(&engine, 0, 15, T0_MS);
    index += 1;
    engine.apply(1, index, T0_MS, &delete(digest(0))).unwrap();
    // Fill more blocks, then delete their records so the tombstone's block is sparse.
    for i in 100..140 {
        index += 1;
        engine.apply(1, index, T0_MS, &put_int(i, 1)).unwrap();
    }
    for i in 100..140 {
        index += 1;
        engine.apply(1, index, T0_MS, &delete(digest(i))).unwrap();
    }
    for _ in 0..5 {
        engine.defrag_step(u64::MAX).unwrap();
        engine.checkpoint().unwrap();
    }
    engine.close().unwrap();
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir.path(), 4096)).unwrap();
    assert!(engine.recovery_report().namespaces[NS].cold_start);
    assert!(
        !engine.exists(NS, &digest(0), T0_MS).unwrap(),
        "record 0 resurrected"
    );
    assert!(!engine.exists(NS, &digest(100), T0_MS).unwrap());
    assert!(engine.exists(NS, &digest(1), T0_MS).unwrap());
}

#[test]
fn truncate_is_durable_across_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    let mut index = 0;
    for i in 0..20u32 {
        index += 1;
        let mut w = Write::new(NS, digest(i));
        w.set = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        let cmd = Command::Put(aerie_engine::Put {
            write: w,
            bins: vec![Bin::new("v", Value::Int(1))],
        });
        engine.apply(1, index, T0_MS + u64::from(i), &cmd).unwrap();
    }
    index += 1;
    let truncate = Command::Truncate {
        namespace: NS.into(),
        set: Some("even".into()),
        before_ms: T0_MS + 10,
        partitions: (0..4096).collect(),
    };
    engine.apply(1, index, T0_MS + 100, &truncate).unwrap();
    let visible = dump(&engine, T0_MS + 100);
    assert_eq!(
        visible.len(),
        15,
        "evens 0..=8 gone, 10..=18 and all odds stay"
    );
    index += 1;
    engine.apply(1, index, T0_MS + 200, &put_int(0, 5)).unwrap(); // written after: stays
    let expected = dump(&engine, T0_MS + 200);
    engine.close().unwrap();
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir.path(), 8 << 10)).unwrap();
    assert_eq!(dump(&engine, T0_MS + 200), expected);
    index += 1;
    let all = Command::Truncate {
        namespace: NS.into(),
        set: None,
        before_ms: T0_MS + 1_000,
        partitions: (0..4096).collect(),
    };
    engine.apply(1, index, T0_MS + 1_000, &all).unwrap();
    assert!(dump(&engine, T0_MS + 1_000).is_empty());
}

#[test]
fn stop_writes_when_disk_use_passes_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 4096);
    cfg.namespaces[0].size_limit_bytes = 10 * 4096;
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(engine.health(), aerie_engine::Health::default());
    let mut index = 0;
    let err = loop {
        index += 1;
        let cmd = put(
            digest(index as u32),
            vec![Bin::new(
                "v",
                Value::Blob {
                    particle: 4,
                    bytes: vec![1; 500],
                },
            )],
        );
        if let Err(e) = engine.apply(1, index, T0_MS, &cmd) {
            break e;
        }
        assert!(index < 1000);
    };
    assert!(matches!(err, Error::StopWrites(_)));
    assert_eq!(err.result_code(), 8);
    assert_eq!(engine.stats()[0].used_bytes, 7 * 4096);
    let health = engine.health();
    assert_eq!(health.poisoned, None);
    assert!(health.stop_writes[NS].contains("disk use"), "{health:?}");
    // Reads and deletes still work.
    assert!(engine.exists(NS, &digest(1), T0_MS).unwrap());
    index += 1;
    engine.apply(1, index, T0_MS, &delete(digest(1))).unwrap();
}

#[test]
fn record_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 4096)).unwrap();
    let cmd = put(
        digest(1),
        vec![Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: vec![0; 5000],
            },
        )],
    );
    let err = engine.apply(1, 1, T0_MS, &cmd).unwrap_err();
    assert_eq!(err.result_code(), 13);
    assert!(!engine.exists(NS, &digest(1), T0_MS).unwrap());
}

#[test]
fn view_is_consistent_and_pins_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 4096)).unwrap();
    let mut index = fill(&engine, 0, 60, T0_MS);
    let before = dump(&engine, T0_MS);
    let all: Vec<u16> = (0..4096).collect();
    let view = engine.view(NS, &all).unwrap();
    assert_eq!(view.applied_indices()[&1], index);
    // Overwrite everything, defrag, checkpoint: old blocks are released but pinned.
    for i in 0..60 {
        index += 1;
        engine.apply(1, index, T0_MS, &put_int(i, 9)).unwrap();
    }
    engine.defrag_step(u64::MAX).unwrap();
    engine.checkpoint().unwrap();
    assert!(
        engine.stats()[0]
            .blocks
            .iter()
            .any(|b| b.state == BlockState::Released)
    );
    let seen: std::collections::BTreeMap<_, _> = view
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r.digest, r))
        .collect();
    assert_eq!(seen, before);
    drop(view);
    assert!(
        engine.stats()[0]
            .blocks
            .iter()
            .all(|b| b.state != BlockState::Released)
    );
}

#[test]
fn install_replaces_partitions_durably_and_scans_resume() {
    let dir = tempfile::tempdir().unwrap();
    let src = Engine::open(config(&dir.path().join("a"), 8 << 10)).unwrap();
    let dst = Engine::open(config(&dir.path().join("b"), 8 << 10)).unwrap();
    fill(&src, 0, 300, T0_MS);
    fill(&dst, 0, 100, T0_MS + 1); // different contents to be replaced
    let all: Vec<u16> = (0..4096).collect();
    let view = src.view(NS, &all).unwrap();
    let records: Vec<_> = view.records().map(|r| r.unwrap()).collect();
    let n = dst.install(NS, &all, records, 7, 500).unwrap();
    assert_eq!(n, 300);
    assert_eq!(dst.durable_applied_index(7), 500);
    assert_eq!(dump(&dst, T0_MS), dump(&src, T0_MS));
    for p in [partition_of(&digest(3)), partition_of(&digest(77))] {
        assert_eq!(
            dst.partition_summary(NS, p, T0_MS).unwrap(),
            src.partition_summary(NS, p, T0_MS).unwrap()
        );
    }
    drop(dst);
    std::fs::remove_file(dir.path().join("b").join(NS).join("index.ckpt")).unwrap();
    let dst = Engine::open(config(&dir.path().join("b"), 8 << 10)).unwrap();
    assert_eq!(
        dump(&dst, T0_MS),
        dump(&src, T0_MS),
        "install survives a cold start"
    );
    // Scan one partition in pages of 1.
    let p = partition_of(&digest(3));
    let mut after = None;
    let mut scanned = Vec::new();
    loop {
        let page = dst.scan_partition(NS, p, after.as_ref(), 1, T0_MS).unwrap();
        scanned.extend(page.records.iter().map(|r| r.digest));
        match page.resume_after {
            Some(d) => after = Some(d),
            None => break,
        }
    }
    assert_eq!(
        scanned.len() as u64,
        dst.partition_summary(NS, p, T0_MS).unwrap().records
    );
    assert!(scanned.windows(2).all(|w| w[0] < w[1]));
}

fn with_key(d: aerie_engine::Digest, key: aerie_engine::Key, bins: Vec<Bin>) -> Command {
    let mut write = Write::new(NS, d);
    write.key = Some(key);
    Command::Put(aerie_engine::Put { write, bins })
}

#[test]
fn the_record_size_limit_is_checked_on_the_final_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 64 << 10);
    cfg.namespaces[0].max_record_size_bytes = 1000;
    let engine = Engine::open(cfg).unwrap();
    let d = digest(1);
    let bin = |n: usize| vec![Bin::new("s", Value::String(vec![b'x'; n]))];
    engine.apply(1, 1, T0_MS, &put(d, bin(600))).unwrap();
    // Each append is small; the record it would make is not.
    let append = Command::Operate(Operate {
        write: Write::new(NS, d),
        ops: vec![Op::Append(Bin::new("s", Value::String(vec![b'y'; 600])))],
    });
    let refused = engine.apply(1, 2, T0_MS, &append).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::RecordTooBig {
                max_bytes: 1000,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.result_code(), 13);
    assert!(
        refused.is_record_error(),
        "applied as a refusal, deterministically"
    );
    assert_eq!(engine.applied_index(1), 2);
    let kept = engine
        .get(NS, &d, &BinSelection::All, T0_MS)
        .unwrap()
        .unwrap();
    assert_eq!((kept.generation, kept.bins), (1, bin(600)));
    assert!(
        engine
            .apply(1, 3, T0_MS, &put(digest(2), bin(2000)))
            .is_err()
    );
    assert!(!engine.exists(NS, &digest(2), T0_MS).unwrap());
}

#[test]
fn record_size_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    for (max_record, ok) in [(0, false), (4096, true), (8192, true), (8193, false)] {
        let mut cfg = config(&dir.path().join(max_record.to_string()), 8 << 10);
        cfg.namespaces[0].max_record_size_bytes = max_record;
        match Engine::open(cfg) {
            Ok(_) => assert!(ok, "{max_record} accepted"),
            Err(e) => {
                assert!(!ok, "{max_record}: {e}");
                assert!(e.to_string().contains("max_record_size_bytes"), "{e}");
            }
        }
    }
    // The default (1 MiB) follows smaller blocks down.
    let ns = aerie_engine::NamespaceConfig {
        write_block_size_bytes: 8 << 10,
        ..aerie_engine::NamespaceConfig::named(NS)
    };
    assert_eq!(ns.record_size_limit_bytes(), 8 << 10);
    assert_eq!(
        aerie_engine::NamespaceConfig::default().record_size_limit_bytes(),
        1 << 20
    );
}

#[test]
fn stored_keys_survive_views_installs_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    let src = Engine::open(config(&dir.path().join("a"), 64 << 10)).unwrap();
    let dst = Engine::open(config(&dir.path().join("b"), 64 << 10)).unwrap();
    let d = digest(9);
    let key = aerie_engine::Key::String(b"user-9".to_vec());
    let bins = vec![Bin::new("a", Value::Int(1))];
    src.apply(1, 1, T0_MS, &with_key(d, key.clone(), bins.clone()))
        .unwrap();
    let view = src.get(NS, &d, &BinSelection::All, T0_MS).unwrap().unwrap();
    assert_eq!(view.key.as_ref(), Some(&key));
    // Another key with the same digest is a mismatch; no key at all is not.
    let other = with_key(d, aerie_engine::Key::Int(9), bins.clone());
    assert!(matches!(
        src.apply(1, 2, T0_MS, &other),
        Err(Error::KeyMismatch)
    ));
    src.apply(1, 3, T0_MS, &put(d, bins)).unwrap();
    let all: Vec<u16> = (0..4096).collect();
    let records: Vec<_> = src
        .view(NS, &all)
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect();
    dst.install(NS, &all, records, 1, 3).unwrap();
    let p = partition_of(&d);
    let digests = dst.partition_digests(NS, p, None, None, T0_MS).unwrap();
    let (scanned, consumed) = dst.read_records(NS, &digests, T0_MS, usize::MAX).unwrap();
    assert_eq!((scanned.len(), consumed), (1, 1));
    assert_eq!(scanned[0].key.as_ref(), Some(&key));
}

#[test]
fn paged_reads_skip_records_deleted_after_the_digests_were_taken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 64 << 10)).unwrap();
    // Same partition: digests that differ only after the first two bytes.
    let ds: Vec<_> = (0..5u8)
        .map(|i| {
            let mut d = [0u8; 20];
            d[19] = i;
            d
        })
        .collect();
    for (i, d) in ds.iter().enumerate() {
        engine
            .apply(
                1,
                i as u64 + 1,
                T0_MS,
                &put(*d, vec![Bin::new("v", Value::Int(1))]),
            )
            .unwrap();
    }
    let digests = engine
        .partition_digests(NS, 0, None, Some(&ds[0]), T0_MS)
        .unwrap();
    assert_eq!(digests, ds[1..].to_vec());
    assert!(
        engine
            .partition_digests(NS, 0, Some("other"), None, T0_MS)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        engine
            .partition_digests(NS, 0, Some(""), None, T0_MS)
            .unwrap(),
        ds
    );
    engine.apply(1, 10, T0_MS, &delete(ds[2])).unwrap();
    let (read, consumed) = engine
        .read_records(NS, &digests, T0_MS, usize::MAX)
        .unwrap();
    let read: Vec<_> = read.into_iter().map(|r| r.digest).collect();
    assert_eq!((read, consumed), (vec![ds[1], ds[3], ds[4]], 4));
    // A byte budget stops after the record that reaches it.
    let (page, consumed) = engine.read_records(NS, &digests, T0_MS, 1).unwrap();
    assert_eq!((page.len(), consumed), (1, 1));
}
