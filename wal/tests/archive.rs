//! Reading a stream back from archived and live segments (the PITR source).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_wal::archive::ArchivedStream;
use aerie_wal::{HardState, LogBatch, Wal};
use common::{append, payload, small_config};

fn hard_state(wal: &Wal, stream: u64, commit: u64) {
    let mut batch = LogBatch::new();
    batch.set_hard_state(
        stream,
        HardState {
            term: 1,
            vote: 1,
            commit,
        },
    );
    wal.write(batch).unwrap();
}

#[test]
fn archived_and_live_segments_give_back_every_entry_with_conflicts_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), aerie_wal::IoBackend::Sync);
    config.archive_dir = Some(archive.path().to_path_buf());
    let wal = Wal::open(config).unwrap();
    for round in 0..20u64 {
        append(&wal, 1, round * 50 + 1, 50, 1).unwrap();
        append(&wal, 2, round * 50 + 1, 50, 1).unwrap();
    }
    // A new leader rewrites 990.. in term 2: the archive must follow it.
    append(&wal, 1, 990, 5, 2).unwrap();
    hard_state(&wal, 1, 994);
    wal.compact(1, 995).unwrap();
    wal.compact(2, 1001).unwrap();
    drop(wal);

    let dirs = [archive.path().to_path_buf(), dir.path().to_path_buf()];
    let found = ArchivedStream::scan(&dirs, 1, 100).unwrap();
    assert_eq!(found.first_index(), Some(1));
    assert_eq!(found.last_index(), 994);
    assert_eq!(found.hard_state().commit, 994);
    assert!(
        found.read(100).is_err(),
        "entries up to after_index are not kept"
    );
    for index in 101..=994 {
        let term = if index >= 990 { 2 } else { 1 };
        let entry = found.read(index).unwrap();
        assert_eq!((entry.index, entry.term), (index, term));
        assert_eq!(entry.payload, payload(1, index, term));
    }
    assert!(found.read(995).is_err());

    // Without the archive, the live directory alone has lost the beginning.
    let live_only = ArchivedStream::scan(&[dir.path().to_path_buf()], 1, 0).unwrap();
    assert!(live_only.first_index().unwrap() > 1);
}

#[test]
fn a_missing_segment_is_a_gap_error_and_damage_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), aerie_wal::IoBackend::Sync);
    config.archive_dir = Some(archive.path().to_path_buf());
    let wal = Wal::open(config).unwrap();
    for round in 0..40u64 {
        append(&wal, 1, round * 50 + 1, 50, 1).unwrap();
    }
    wal.compact(1, 2001).unwrap();
    drop(wal);
    let mut archived: Vec<_> = std::fs::read_dir(archive.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archived.sort();
    assert!(archived.len() >= 3, "{archived:?}");
    let dirs = [archive.path().to_path_buf(), dir.path().to_path_buf()];

    // A bit flip inside the first archived segment's first frame.
    let original = std::fs::read(&archived[0]).unwrap();
    let mut bytes = original.clone();
    bytes[100] ^= 0x10;
    std::fs::write(&archived[0], &bytes).unwrap();
    let err = ArchivedStream::scan(&dirs, 1, 0).unwrap_err().to_string();
    assert!(err.contains(&archived[0].display().to_string()), "{err}");
    assert!(err.contains("offset"), "{err}");

    std::fs::write(&archived[0], &original).unwrap();
    assert_eq!(
        ArchivedStream::scan(&dirs, 1, 0).unwrap().last_index(),
        2000
    );

    // A middle segment removed: the entries jump.
    std::fs::remove_file(&archived[1]).unwrap();
    let err = ArchivedStream::scan(&dirs, 1, 0).unwrap_err().to_string();
    assert!(err.contains("a segment is missing"), "{err}");
}
