//! Damage anywhere in a snapshot file is detected with the file and offset and
//! never installed; a half-received transfer is never accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use aerie_engine::Engine;
use aerie_snapshot::transfer::{ChunkSource, Receiver};
use aerie_snapshot::{Error, SnapshotInfo, SnapshotReader, WriteOptions, install};
use common::*;

fn small_chunks() -> WriteOptions {
    WriteOptions {
        chunk_raw_bytes: 16 << 10,
        ..WriteOptions::default()
    }
}

fn snapshot(dir: &Path) -> SnapshotInfo {
    let source_dir = tempfile::tempdir().unwrap();
    let engine = engine_with(source_dir.path(), &workload(3, 1200, 300));
    let info = snapshot_all(&engine, dir, small_chunks());
    assert!(info.footer.chunk_offsets.len() >= 6, "{:?}", info.footer);
    info
}

/// Verifying and installing `path` must both fail with a corruption error on
/// that file, and leave the (empty) engine empty.
fn assert_rejected(engine: &Engine, path: &Path, what: &str) {
    let verified = SnapshotReader::open(path).and_then(|r| r.verify(|_| {}));
    match verified {
        Err(Error::Corruption {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!(p, path, "{what}");
            assert!(
                offset <= std::fs::metadata(path).unwrap().len(),
                "{what}: offset {offset}"
            );
            assert!(!reason.is_empty());
        }
        other => panic!("{what}: expected corruption, got {other:?}"),
    }
    let installed = SnapshotReader::open(path).and_then(|r| install(engine, &r, |_| {}));
    assert!(installed.is_err(), "{what}: installed");
    assert_eq!(engine.applied_index(LOG), 0, "{what}");
    let all: Vec<u16> = (0..4096).collect();
    for ns in NAMESPACES {
        assert!(
            scan(engine, ns, &all).is_empty(),
            "{what}: records installed"
        );
    }
}

fn with_bytes(original: &[u8], path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = original.to_vec();
    edit(&mut bytes);
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn bit_flips_in_header_chunks_and_footer_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let info = snapshot(dir.path());
    let original = std::fs::read(&info.path).unwrap();
    let engine_dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(engine_dir.path())).unwrap();
    let offsets = &info.footer.chunk_offsets;
    let header_len = offsets[0] as usize;
    let footer_at = (info.file_bytes - 16) as usize - 40 - 8 * offsets.len();
    let mut positions: Vec<(usize, String)> = (0..header_len)
        .step_by(7)
        .map(|i| (i, format!("header byte {i}")))
        .collect();
    for (n, &o) in offsets.iter().enumerate() {
        let o = o as usize;
        positions.push((o + 5, format!("chunk {n} frame header")));
        positions.push((o + 40, format!("chunk {n} data")));
    }
    positions.extend(
        (footer_at..original.len())
            .step_by(5)
            .map(|i| (i, format!("footer byte {i}"))),
    );
    for (at, what) in positions {
        with_bytes(&original, &info.path, |b| b[at] ^= 0x20);
        assert_rejected(&engine, &info.path, &what);
    }
}

#[test]
fn truncation_at_chunk_boundaries_and_inside_chunks_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let info = snapshot(dir.path());
    let original = std::fs::read(&info.path).unwrap();
    let engine_dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(engine_dir.path())).unwrap();
    let mut cuts: Vec<usize> = vec![0, 10, info.footer.chunk_offsets[0] as usize - 1];
    for &o in &info.footer.chunk_offsets {
        cuts.push(o as usize);
        cuts.push(o as usize + 100);
    }
    cuts.push(original.len() - 20);
    cuts.push(original.len() - 1);
    for cut in cuts {
        with_bytes(&original, &info.path, |b| b.truncate(cut));
        assert_rejected(&engine, &info.path, &format!("cut at {cut}"));
    }
}

#[test]
fn a_transfer_resumes_at_its_offset_and_only_a_whole_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let info = snapshot(dir.path());
    let source = ChunkSource::open(&info.path).unwrap();
    let target = tempfile::tempdir().unwrap();
    let name = source.file_name();
    let half = source.len() / 2;

    // Half of it, then the receiver is dropped (the node restarts).
    let mut receiver = Receiver::open(target.path(), &name).unwrap();
    let mut offset = 0;
    while offset < half {
        let piece = source.read(offset, 1000).unwrap();
        receiver.write(offset, &piece).unwrap();
        offset += piece.len() as u64;
    }
    drop(receiver);

    let mut receiver = Receiver::open(target.path(), &name).unwrap();
    assert_eq!(receiver.offset(), offset);
    let err = receiver.write(0, b"again").unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrder { expected, .. } if expected == offset),
        "{err}"
    );
    loop {
        let piece = source.read(offset, 64 << 10).unwrap();
        if piece.is_empty() {
            break;
        }
        receiver.write(offset, &piece).unwrap();
        offset += piece.len() as u64;
    }
    let report = receiver.finish().unwrap();
    assert_eq!(report.path, target.path().join(&name));
    assert_eq!(report.footer, info.footer);
    assert_eq!(
        std::fs::read(&report.path).unwrap(),
        std::fs::read(&info.path).unwrap()
    );
}

#[test]
fn a_half_received_transfer_is_never_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let info = snapshot(dir.path());
    let source = ChunkSource::open(&info.path).unwrap();
    let target = tempfile::tempdir().unwrap();
    let name = source.file_name();
    let mut receiver = Receiver::open(target.path(), &name).unwrap();
    let piece = source.read(0, (source.len() / 2) as usize).unwrap();
    receiver.write(0, &piece).unwrap();
    let err = receiver.finish().unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing may remain: {left:?}");
    assert!(Receiver::open(target.path(), "../evil.snap").is_err());
}
