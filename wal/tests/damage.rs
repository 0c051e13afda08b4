//! Torn tails, bit flips, recovery modes, and injected I/O faults (ENOSPC,
//! fsync failure, short and torn writes) on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_wal::fault::{Faults, FaultyFs};
use aerie_wal::fs::SyncFs;
use aerie_wal::inspect::{self, Severity};
use aerie_wal::{Error, IoBackend, RecoveryMode, Wal, WalConfig};
use common::{all_entries, append, payload, small_config};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const FRAME_HEADER_BYTES: u64 = aerie_wal::format::FRAME_HEADER_BYTES as u64;

/// A log with stream 1 holding entries 1..=`count` (one frame each, one per batch).
fn build_log(dir: &Path, count: u64) -> PathBuf {
    let wal = Wal::open(small_config(dir, IoBackend::Sync)).unwrap();
    for index in 1..=count {
        append(&wal, 1, index, 1, 1).unwrap();
    }
    drop(wal);
    newest_segment(dir)
}

fn newest_segment(dir: &Path) -> PathBuf {
    let report = inspect::inspect_dir(dir).unwrap();
    report.segments.last().unwrap().path.clone()
}

/// Offset and length of each frame of segment 1.
fn frame_offsets(segment: &Path) -> Vec<(u64, u64)> {
    frame_offsets_any(segment, 1)
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

fn segment_in(dir: &Path, original: &Path) -> PathBuf {
    dir.join(original.file_name().unwrap())
}

fn config(dir: &Path, mode: RecoveryMode) -> WalConfig {
    let mut config = small_config(dir, IoBackend::Sync);
    config.recovery_mode = mode;
    config
}

#[test]
fn torn_tail_at_every_byte_recovers_the_previous_frame() {
    let original = tempfile::tempdir().unwrap();
    let segment = build_log(original.path(), 5);
    let &(last_offset, last_len) = frame_offsets(&segment).last().unwrap();
    for cut in last_offset..last_offset + last_len {
        for zero_fill in [false, true] {
            let dir = copy_dir(original.path());
            let path = segment_in(dir.path(), &segment);
            let mut data = std::fs::read(&path).unwrap();
            if zero_fill {
                // A preallocated file: the unwritten rest of the frame reads as zeros.
                data[cut as usize..(last_offset + last_len) as usize].fill(0);
            } else {
                data.truncate(cut as usize);
            }
            std::fs::write(&path, &data).unwrap();
            let wal = Wal::open(config(dir.path(), RecoveryMode::TornTail)).unwrap();
            assert_eq!(wal.last_index(1), 4, "cut at {cut}, zero fill {zero_fill}");
            assert_eq!(all_entries(&wal, 1)[3].payload, payload(1, 4, 1));
            // The log stays writable after the cut, and the cut stays cut.
            append(&wal, 1, 5, 1, 2).unwrap();
            drop(wal);
            let wal = Wal::open(config(dir.path(), RecoveryMode::TornTail)).unwrap();
            assert_eq!(wal.term(1, 5).unwrap(), 2, "cut at {cut}");
            assert!(wal.recovery_report().torn_tail.is_none());
        }
    }
}

#[test]
fn absolute_consistency_refuses_a_torn_tail() {
    let original = tempfile::tempdir().unwrap();
    let segment = build_log(original.path(), 3);
    let &(last_offset, _) = frame_offsets(&segment).last().unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    data[last_offset as usize + 50] ^= 1;
    std::fs::write(&segment, &data).unwrap();
    let error = Wal::open(config(original.path(), RecoveryMode::AbsoluteConsistency)).unwrap_err();
    assert!(
        matches!(&error, Error::Corruption { path, offset, .. } if *path == segment && *offset == last_offset),
        "{error}"
    );
}

/// Regions of a frame, by offset from its start (see FORMAT.md).
const FRAME_REGIONS: [(&str, u64); 9] = [
    ("length", 0),
    ("crc", 4),
    ("sequence", 8),
    ("kind", 16),
    ("reserved", 17),
    ("stream", 20),
    ("index", 28),
    ("term", 36),
    ("payload", FRAME_HEADER_BYTES),
];

#[test]
fn bit_flips_in_any_frame_region_are_detected() {
    let original = tempfile::tempdir().unwrap();
    let segment = build_log(original.path(), 6);
    let frames = frame_offsets(&segment);
    // A middle frame (valid frames follow: corruption) and the last (torn tail).
    for (position, &(frame_offset, _)) in frames.iter().enumerate().skip(3) {
        let is_last = position + 1 == frames.len();
        for (region, region_offset) in FRAME_REGIONS {
            let dir = copy_dir(original.path());
            let path = segment_in(dir.path(), &segment);
            let mut data = std::fs::read(&path).unwrap();
            data[(frame_offset + region_offset) as usize] ^= 0x04;
            std::fs::write(&path, &data).unwrap();
            let report = inspect::inspect_dir(dir.path()).unwrap();
            let problem = &report.problems[0];
            assert_eq!(
                (problem.path.as_path(), problem.offset),
                (path.as_path(), frame_offset),
                "{region}"
            );
            match Wal::open(config(dir.path(), RecoveryMode::TornTail)) {
                Ok(wal) => {
                    assert!(
                        is_last,
                        "{region}: a middle frame's damage must fail the open"
                    );
                    assert_eq!(problem.severity, Severity::TornTail);
                    // The damaged frame is never returned as data.
                    assert_eq!(wal.last_index(1), position as u64);
                }
                Err(Error::Corruption {
                    path: p, offset, ..
                }) => {
                    assert!(!is_last, "{region}: the last frame's damage is a torn tail");
                    assert_eq!((p, offset), (path.clone(), frame_offset));
                    assert_eq!(problem.severity, Severity::Corruption);
                }
                Err(other) => panic!("{region}: {other}"),
            }
        }
    }
}

#[test]
fn bit_flips_in_a_segment_header_are_detected() {
    let original = tempfile::tempdir().unwrap();
    for round in 0..30u64 {
        let wal = Wal::open(small_config(original.path(), IoBackend::Sync)).unwrap();
        append(&wal, 1, round * 20 + 1, 20, 1).unwrap();
    }
    let report = inspect::inspect_dir(original.path()).unwrap();
    assert!(report.segments.len() >= 2);
    let sealed = report.segments[0].path.clone();
    for byte in 0..aerie_wal::format::SEGMENT_HEADER_BYTES {
        if (12..16).contains(&byte) || byte >= 28 {
            continue; // reserved bytes outside the CRC
        }
        let dir = copy_dir(original.path());
        let path = segment_in(dir.path(), &sealed);
        let mut data = std::fs::read(&path).unwrap();
        data[byte] ^= 0x01;
        std::fs::write(&path, &data).unwrap();
        let error = Wal::open(config(dir.path(), RecoveryMode::TornTail)).unwrap_err();
        assert!(
            matches!(&error, Error::Corruption { path: p, offset: 0, .. } if *p == path),
            "byte {byte}: {error}"
        );
    }
}

#[test]
fn reads_of_sealed_segments_check_the_crc() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), IoBackend::Sync)).unwrap();
    for round in 0..30u64 {
        append(&wal, 1, round * 20 + 1, 20, 1).unwrap();
    }
    let first = inspect::inspect_dir(dir.path()).unwrap().segments[0]
        .path
        .clone();
    let frames = frame_offsets(&first);
    // Flip a payload byte of an entry in the sealed first segment, behind the log's back.
    let (offset, _) = frames[5];
    let mut data = std::fs::read(&first).unwrap();
    data[(offset + FRAME_HEADER_BYTES) as usize] ^= 0x80;
    std::fs::write(&first, &data).unwrap();
    let error = wal.entries(1, 1, 601, u64::MAX).unwrap_err();
    assert!(
        matches!(&error, Error::Corruption { path, offset: o, .. } if *path == first && *o == offset),
        "{error}"
    );
}

#[test]
fn point_in_time_keeps_the_prefix_before_damage() {
    let original = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(original.path(), IoBackend::Sync)).unwrap();
    for batch in 0..200 {
        append(&wal, 1, batch * 10 + 1, 10, 1).unwrap();
    }
    drop(wal);
    let report = inspect::inspect_dir(original.path()).unwrap();
    assert!(report.segments.len() >= 3);
    let damaged = report.segments[1].path.clone();
    let frames = frame_offsets_any(&damaged, report.segments[1].seq);
    let (offset, _) = frames[frames.len() / 2];
    let mut data = std::fs::read(&damaged).unwrap();
    data[(offset + FRAME_HEADER_BYTES) as usize] ^= 0x01;
    std::fs::write(&damaged, &data).unwrap();

    assert!(matches!(
        Wal::open(config(original.path(), RecoveryMode::TornTail)),
        Err(Error::Corruption { .. })
    ));
    let wal = Wal::open(config(original.path(), RecoveryMode::PointInTime)).unwrap();
    let report = wal.recovery_report().clone();
    assert!(!report.dropped.is_empty());
    let last = wal.last_index(1);
    assert!(last > 10 && last < 2000, "{last}");
    assert!(
        all_entries(&wal, 1)
            .iter()
            .all(|e| e.payload == payload(1, e.index, 1))
    );
    append(&wal, 1, last + 1, 5, 2).unwrap();
    drop(wal);
    let wal = Wal::open(config(original.path(), RecoveryMode::TornTail)).unwrap();
    assert_eq!(wal.last_index(1), last + 5);
}

fn frame_offsets_any(segment: &Path, seq: u64) -> Vec<(u64, u64)> {
    let data = std::fs::read(segment).unwrap();
    let mut frames = Vec::new();
    aerie_wal::scan::scan_frames(&data, seq, |f| {
        frames.push((f.offset, u64::from(f.len)));
        Ok(())
    });
    frames
}

fn faulty_config(dir: &Path) -> (WalConfig, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let mut config = small_config(dir, IoBackend::Sync);
    config.file_system = Some(Arc::new(FaultyFs::new(
        Arc::new(SyncFs),
        Arc::clone(&faults),
    )));
    (config, faults)
}

#[test]
fn fsync_failure_acknowledges_nothing_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    assert!(matches!(append(&wal, 1, 4, 1, 1), Err(Error::Io { .. })));
    faults.fail_sync.store(false, Ordering::SeqCst);
    // Refuses further writes even though syncs work again: the page cache is unknown.
    assert!(matches!(append(&wal, 1, 4, 1, 1), Err(Error::Poisoned(_))));
    // Still readable, and the failed append is not visible.
    assert_eq!(wal.last_index(1), 3);
    assert_eq!(all_entries(&wal, 1).len(), 3);
    drop(wal);
    let wal = Wal::open(config).unwrap();
    assert!(wal.last_index(1) >= 3);
    append(&wal, 1, wal.last_index(1) + 1, 1, 2).unwrap();
}

#[test]
fn enospc_acknowledges_nothing_and_keeps_the_log_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    faults.enospc_after_bytes.store(10, Ordering::SeqCst);
    let error = append(&wal, 1, 4, 5, 1).unwrap_err();
    assert!(
        matches!(&error, Error::Io { source, .. } if source.raw_os_error() == Some(libc_enospc())),
        "{error}"
    );
    assert_eq!(wal.last_index(1), 3);
    assert_eq!(all_entries(&wal, 1)[2].payload, payload(1, 3, 1));
    faults.enospc_after_bytes.store(u64::MAX, Ordering::SeqCst);
    drop(wal);
    let wal = Wal::open(config).unwrap();
    assert_eq!(wal.last_index(1), 3);
}

fn libc_enospc() -> i32 {
    28
}

#[test]
fn enospc_when_starting_a_segment_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    faults.fail_allocate.store(true, Ordering::SeqCst);
    let mut acknowledged = 0;
    for index in 1..=1000 {
        match append(&wal, 1, index, 1, 1) {
            Ok(()) => acknowledged = index,
            Err(_) => break,
        }
    }
    assert!(acknowledged > 0 && acknowledged < 1000);
    assert_eq!(wal.last_index(1), acknowledged);
    faults.fail_allocate.store(false, Ordering::SeqCst);
    drop(wal);
    let wal = Wal::open(config).unwrap();
    assert_eq!(wal.last_index(1), acknowledged);
    append(&wal, 1, acknowledged + 1, 1, 1).unwrap();
}

#[test]
fn short_write_is_cut_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    faults.short_write_next.store(true, Ordering::SeqCst);
    assert!(append(&wal, 1, 4, 4, 1).is_err());
    drop(wal);
    let wal = Wal::open(config).unwrap();
    // Whole frames of the unacknowledged batch may survive; half a frame never does.
    let last = wal.last_index(1);
    assert!((3..7).contains(&last), "{last}");
    assert!(
        all_entries(&wal, 1)
            .iter()
            .all(|e| e.payload == payload(1, e.index, 1))
    );
}

#[test]
fn silent_bit_flip_on_write_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    faults.flip_bit_next_write.store(true, Ordering::SeqCst);
    append(&wal, 1, 4, 1, 1).unwrap();
    append(&wal, 1, 5, 1, 1).unwrap();
    drop(wal);
    // The flipped frame has a valid frame after it: corruption, named by file and offset.
    match Wal::open(config) {
        Err(Error::Corruption { offset, .. }) => assert!(offset > 0),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn lost_write_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (config, faults) = faulty_config(dir.path());
    let wal = Wal::open(config.clone()).unwrap();
    append(&wal, 1, 1, 3, 1).unwrap();
    faults.torn_write_next_bytes.store(0, Ordering::SeqCst);
    append(&wal, 1, 4, 1, 1).unwrap();
    append(&wal, 1, 5, 1, 1).unwrap();
    drop(wal);
    assert!(matches!(Wal::open(config), Err(Error::Corruption { .. })));
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_config(dir.path(), IoBackend::Sync)).unwrap();
    for round in 0..20u64 {
        append(&wal, 1, round * 20 + 1, 20, 1).unwrap();
    }
    drop(wal);
    let newest = inspect::inspect_dir(dir.path())
        .unwrap()
        .segments
        .last()
        .unwrap()
        .seq;
    // A crash right after the next segment file was created, before its header.
    let torn = dir
        .path()
        .join(aerie_wal::format::segment_file_name(newest + 1));
    std::fs::write(&torn, vec![0u8; 64 << 10]).unwrap();
    let wal = Wal::open(small_config(dir.path(), IoBackend::Sync)).unwrap();
    assert_eq!(wal.recovery_report().torn_tail, Some((torn.clone(), 0)));
    assert_eq!(wal.last_index(1), 400);
    // Writing goes on; compacting everything old and reopening still works.
    for round in 20..40u64 {
        append(&wal, 1, round * 20 + 1, 20, 1).unwrap();
    }
    wal.compact(1, 790).unwrap();
    drop(wal);
    let wal = Wal::open(small_config(dir.path(), IoBackend::Sync)).unwrap();
    assert_eq!((wal.first_index(1), wal.last_index(1)), (790, 800));
    assert!(
        all_entries(&wal, 1)
            .iter()
            .all(|e| e.payload == payload(1, e.index, 1))
    );
}
