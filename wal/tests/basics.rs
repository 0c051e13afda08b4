//! Appends, reads, conflicts, compaction, reopen, purge, recycling, archive,
//! concurrency and the async API, on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_wal::{Error, FsyncPolicy, HardState, LogBatch, Wal};
use common::{all_entries, append, backends, payload, small_config};
use std::sync::Arc;

#[test]
fn append_read_reopen() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(small_config(dir.path(), backend)).unwrap();
        let expected_backend = if backend == aerie_wal::IoBackend::Uring {
            "uring"
        } else {
            "sync"
        };
        assert_eq!(wal.io_backend(), expected_backend);
        append(&wal, 1, 1, 10, 1).unwrap();
        append(&wal, 2, 1, 5, 1).unwrap();
        let mut batch = LogBatch::new();
        batch.set_hard_state(
            1,
            HardState {
                term: 1,
                vote: 3,
                commit: 7,
            },
        );
        wal.write(batch).unwrap();
        assert_eq!((wal.first_index(1), wal.last_index(1)), (1, 10));
        assert_eq!(wal.term(1, 4).unwrap(), 1);
        let entries = all_entries(&wal, 1);
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[3].payload, payload(1, 4, 1));
        drop(wal);

        let wal = Wal::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(wal.last_index(1), 10);
        assert_eq!(wal.last_index(2), 5);
        assert_eq!(
            wal.hard_state(1),
            HardState {
                term: 1,
                vote: 3,
                commit: 7
            }
        );
        assert_eq!(all_entries(&wal, 2)[4].payload, payload(2, 5, 1));
        assert!(wal.recovery_report().torn_tail.is_none());
    }
}

#[test]
fn conflicting_append_replaces_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    append(&wal, 1, 1, 10, 1).unwrap();
    append(&wal, 1, 6, 2, 2).unwrap();
    assert_eq!(wal.last_index(1), 7);
    assert_eq!(wal.term(1, 6).unwrap(), 2);
    assert_eq!(wal.term(1, 5).unwrap(), 1);
    drop(wal);
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    assert_eq!(wal.last_index(1), 7);
    assert_eq!(all_entries(&wal, 1)[6].payload, payload(1, 7, 2));
}

#[test]
fn invalid_appends_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    assert!(matches!(
        append(&wal, 1, 5, 1, 1),
        Err(Error::InvalidAppend { .. })
    ));
    wal.compact(1, 3).unwrap();
    assert!(matches!(
        append(&wal, 1, 2, 1, 1),
        Err(Error::InvalidAppend { .. })
    ));
    assert!(matches!(
        wal.entries(1, 1, 2, 100),
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        wal.entries(1, 3, 5, 100),
        Err(Error::Unavailable { .. })
    ));
    assert_eq!((wal.first_index(1), wal.last_index(1)), (3, 3));
    let too_big = vec![0u8; (8 << 10) + 1];
    let mut batch = LogBatch::new();
    batch
        .append(
            1,
            &[aerie_wal::EntryRef {
                index: 4,
                term: 1,
                payload: &too_big,
            }],
        )
        .unwrap();
    assert!(matches!(wal.write(batch), Err(Error::EntryTooLarge { .. })));
}

#[test]
fn max_bytes_limits_reads_but_returns_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    append(&wal, 1, 1, 10, 1).unwrap();
    assert_eq!(wal.entries(1, 1, 11, 0).unwrap().len(), 1);
    let two = payload(1, 1, 1).len() + payload(1, 2, 1).len();
    assert_eq!(wal.entries(1, 1, 11, two as u64).unwrap().len(), 2);
}

#[test]
fn compaction_purges_recycles_and_survives_reopen() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(small_config(dir.path(), backend)).unwrap();
        for round in 0..40u64 {
            append(&wal, 1, round * 50 + 1, 50, 1).unwrap();
            append(&wal, 2, round * 50 + 1, 50, 1).unwrap();
        }
        assert!(wal.segments().len() > 4, "{:?}", wal.segments());
        wal.compact(1, 1900).unwrap();
        assert!(wal.segments().len() > 4, "stream 2 still pins old segments");
        wal.compact(2, 1800).unwrap();
        let kept = wal.segments();
        assert!(kept.len() <= 3, "{kept:?}");
        // Reads of entries in sealed and active segments still work.
        assert_eq!(all_entries(&wal, 2).len(), 201);
        // More appends rotate into recycled files.
        for round in 40..60u64 {
            append(&wal, 1, round * 50 + 1, 50, 1).unwrap();
        }
        drop(wal);
        let wal = Wal::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!((wal.first_index(1), wal.last_index(1)), (1900, 3000));
        assert_eq!((wal.first_index(2), wal.last_index(2)), (1800, 2000));
        let entries = all_entries(&wal, 1);
        assert!(entries.iter().all(|e| e.payload == payload(1, e.index, 1)));
        assert!(
            wal.recovery_report().torn_tail.is_none(),
            "{:?}",
            wal.recovery_report()
        );
    }
}

#[test]
fn compacting_past_the_end_empties_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    append(&wal, 1, 1, 5, 1).unwrap();
    wal.compact(1, 100).unwrap();
    assert_eq!((wal.first_index(1), wal.last_index(1)), (100, 99));
    append(&wal, 1, 100, 1, 3).unwrap();
    drop(wal);
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    assert_eq!((wal.first_index(1), wal.last_index(1)), (100, 100));
}

#[test]
fn archive_receives_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), aerie_wal::IoBackend::Sync);
    config.archive_dir = Some(archive.path().to_path_buf());
    let wal = Wal::open(config).unwrap();
    for round in 0..20u64 {
        append(&wal, 1, round * 50 + 1, 50, 1).unwrap();
    }
    wal.compact(1, 1000).unwrap();
    drop(wal);
    let archived = aerie_wal::inspect::inspect_dir(archive.path()).unwrap();
    assert!(!archived.segments.is_empty());
    let archived_entries: u64 = archived
        .segments
        .iter()
        .filter_map(|s| s.streams.get(&1))
        .map(|r| r.entries)
        .sum();
    assert!(archived_entries >= 900, "{archived_entries}");
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|stream| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for index in 1..=50 {
                    append(&wal, stream, index, 1, 1).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.entries, 400);
    assert!(stats.syncs <= 400, "{stats:?}");
    for stream in 0..8 {
        assert_eq!(all_entries(&wal, stream).len(), 50);
    }
}

#[test]
fn async_writes_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), aerie_wal::IoBackend::Sync);
    config.queue_capacity_bytes = 512; // forces async submitters to wait for room
    let wal = Arc::new(Wal::open(config).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for stream in 0..16u64 {
            let wal = Arc::clone(&wal);
            tasks.push(tokio::spawn(async move {
                for index in 1..=20u64 {
                    let data = payload(stream, index, 1);
                    let mut batch = LogBatch::new();
                    batch
                        .append(
                            stream,
                            &[aerie_wal::EntryRef {
                                index,
                                term: 1,
                                payload: &data,
                            }],
                        )
                        .unwrap();
                    wal.write_async(batch).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    for stream in 0..16 {
        assert_eq!(wal.last_index(stream), 20);
    }
}

#[test]
fn interval_and_never_policies_write_without_per_batch_sync() {
    for policy in [FsyncPolicy::IntervalMs(5), FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path(), aerie_wal::IoBackend::Sync);
        config.fsync = policy;
        let wal = Wal::open(config.clone()).unwrap();
        for index in 1..=20 {
            append(&wal, 1, index, 1, 1).unwrap();
        }
        assert!(wal.stats().syncs < 20, "{policy:?}: {:?}", wal.stats());
        wal.close().unwrap();
        let wal = Wal::open(config).unwrap();
        assert_eq!(wal.last_index(1), 20);
    }
}

#[test]
fn closed_log_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), aerie_wal::IoBackend::Sync)).unwrap();
    wal.close().unwrap();
    assert!(matches!(append(&wal, 1, 1, 1, 1), Err(Error::Closed)));
}
