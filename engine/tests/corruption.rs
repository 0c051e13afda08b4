#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bit flips and truncation in blocks, `index.ckpt` and `MANIFEST`: detected
//! with file and offset, a bad index checkpoint falls back to a cold start,
//! damage in the durable part of a block fails the open (never a silent
//! skip), and a corrupt record is never served.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aerie_engine::{Bin, BinSelection, Engine, Error, Record, Value};
use common::*;

const BLOCK_BYTES: u32 = 8 << 10;
const RECORDS: u32 = 40;

/// 40 records of ~300 bytes over a few blocks, closed cleanly.
fn setup() -> (tempfile::TempDir, BTreeMap<[u8; 20], Record>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    for i in 0..RECORDS {
        let bins = vec![Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: vec![i as u8; 300],
            },
        )];
        engine
            .apply(1, u64::from(i) + 1, T0_MS, &put(digest(i), bins))
            .unwrap();
    }
    let expected = dump(&engine, T0_MS);
    engine.close().unwrap();
    (dir, expected)
}

fn block_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(NS).join(aerie_engine::format::block_file_name(id))
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Reads every record; returns the ones that failed, with the error.
fn read_all(engine: &Engine) -> (usize, Vec<Error>) {
    let mut ok = 0;
    let mut bad = Vec::new();
    for i in 0..RECORDS {
        match engine.get(NS, &digest(i), &BinSelection::All, T0_MS) {
            Ok(Some(_)) => ok += 1,
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

#[test]
fn bit_flip_in_a_block_is_reported_on_read_and_never_served() {
    let (dir, expected) = setup();
    let block = block_path(dir.path(), 1);
    let first_record = aerie_engine::format::BLOCK_HEADER_BYTES;
    flip(&block, first_record + 100); // inside the first record's body
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let (ok, bad) = read_all(&engine);
    assert_eq!((ok, bad.len()), (expected.len() - 1, 1));
    match &bad[0] {
        Error::Corruption { path, offset, .. } => {
            assert_eq!(path, &block);
            assert_eq!(*offset, first_record as u64 + 4, "the record's CRC field");
        }
        other => panic!("{other:?}"),
    }
    // A view reports it too instead of yielding bad data.
    let all: Vec<u16> = (0..4096).collect();
    let view = engine.view(NS, &all).unwrap();
    assert_eq!(view.records().filter(Result::is_err).count(), 1);
}

/// Opening must fail with a corruption error naming `path` at `offset`.
fn assert_open_fails_at(dir: &Path, path: &Path, offset: u64) {
    match Engine::open(config(dir, BLOCK_BYTES)) {
        Err(Error::Corruption {
            path: p, offset: o, ..
        }) => assert_eq!((p.as_path(), o), (path, offset)),
        Err(other) => panic!("expected corruption in {path:?} at {offset}, got {other}"),
        Ok(_) => panic!("opened over corruption in {path:?} at {offset}"),
    }
}

fn remove_index_checkpoint(dir: &Path) {
    std::fs::remove_file(dir.join(NS).join("index.ckpt")).unwrap();
}

/// Offsets of the record versions in a block file.
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut at = aerie_engine::format::BLOCK_HEADER_BYTES;
    while at < bytes.len() {
        offsets.push(at);
        at += aerie_engine::format::version_len(&bytes[at..]).unwrap();
    }
    offsets
}

#[test]
fn bit_flip_in_any_record_fails_a_cold_start_naming_file_and_offset() {
    let (dir, _) = setup();
    let block = block_path(dir.path(), 1);
    let original = std::fs::read(&block).unwrap();
    let offsets = record_offsets(&block);
    assert!(offsets.len() > 10, "{offsets:?}");
    remove_index_checkpoint(dir.path());
    // The first, a middle and the last record of the block; inside the body
    // and inside the header (the generation field).
    let last = offsets[offsets.len() - 1];
    for (record, inside) in [
        (offsets[0], 100),
        (offsets[offsets.len() / 2], 10),
        (last, 200),
    ] {
        let mut bytes = original.clone();
        bytes[record + inside] ^= 0x04;
        std::fs::write(&block, &bytes).unwrap();
        assert_open_fails_at(dir.path(), &block, record as u64 + 4); // its CRC field
    }
    // Repaired, the same files open again with every record.
    std::fs::write(&block, &original).unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    assert_eq!(read_all(&engine).0, RECORDS as usize);
}

#[test]
fn a_short_or_missing_block_or_a_bad_block_header_fails_fast_and_cold_starts() {
    for cold in [false, true] {
        let (dir, _) = setup();
        if cold {
            remove_index_checkpoint(dir.path());
        }
        let block = block_path(dir.path(), 1);
        let original = std::fs::read(&block).unwrap();
        let half = original.len() / 2;
        std::fs::write(&block, &original[..half]).unwrap();
        assert_open_fails_at(dir.path(), &block, half as u64);

        std::fs::remove_file(&block).unwrap();
        assert_open_fails_at(dir.path(), &block, 0);

        let mut bytes = original.clone();
        bytes[13] ^= 0x01; // block id
        std::fs::write(&block, &bytes).unwrap();
        assert_open_fails_at(dir.path(), &block, 0); // the header's CRC covers it

        std::fs::write(&block, &original).unwrap();
        let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
        assert_eq!(read_all(&engine).0, RECORDS as usize, "cold: {cold}");
    }
}

#[test]
fn bytes_past_the_durable_length_are_cut_like_a_torn_tail() {
    let (dir, expected) = setup();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let last = engine.stats()[0].blocks.last().unwrap().clone();
    drop(engine);
    let block = block_path(dir.path(), last.id);
    let mut bytes = std::fs::read(&block).unwrap();
    assert_eq!(bytes.len(), last.len_bytes as usize);
    bytes.extend_from_slice(&[0xA5; 500]); // written after the checkpoint, torn
    std::fs::write(&block, &bytes).unwrap();
    remove_index_checkpoint(dir.path());
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    assert_eq!(dump(&engine, T0_MS), expected);
    assert_eq!(
        std::fs::metadata(&block).unwrap().len(),
        u64::from(last.len_bytes)
    );
}

#[test]
fn a_damaged_tombstone_never_resurrects_the_deleted_record() {
    let (dir, _) = setup();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let gone = digest(3); // written in block 1
    engine.apply(1, 1000, T0_MS, &delete(gone)).unwrap();
    engine.close().unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let last = engine.stats()[0].blocks.last().unwrap().clone();
    drop(engine);
    let block = block_path(dir.path(), last.id);
    let tombstone = last.len_bytes as usize - aerie_engine::format::RECORD_HEADER_BYTES;
    assert_eq!(record_offsets(&block).last(), Some(&tombstone));
    flip(&block, tombstone + 20); // inside its digest

    // Fast start: the index says deleted, and it stays deleted.
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    assert!(!engine.exists(NS, &gone, T0_MS).unwrap());
    assert_eq!(
        engine.get(NS, &gone, &BinSelection::All, T0_MS).unwrap(),
        None
    );
    drop(engine);
    // Cold start: the scan cannot tell what the tombstone hid, so it refuses.
    remove_index_checkpoint(dir.path());
    assert_open_fails_at(dir.path(), &block, tombstone as u64 + 4);
}

#[test]
fn any_bit_flip_or_truncation_of_the_index_checkpoint_falls_back_to_a_cold_start() {
    let (dir, expected) = setup();
    let index = dir.path().join(NS).join("index.ckpt");
    let original = std::fs::read(&index).unwrap();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for offset in (0..original.len()).step_by(7) {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x01;
        cases.push(bytes);
    }
    for len in [0, 10, 40, original.len() / 2, original.len() - 1] {
        cases.push(original[..len].to_vec());
    }
    for bytes in cases {
        std::fs::write(&index, &bytes).unwrap();
        let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
        let report = &engine.recovery_report().namespaces[NS];
        assert!(report.cold_start, "corrupt index accepted");
        assert!(
            report.problems[0].contains("index.ckpt"),
            "{:?}",
            report.problems
        );
        assert_eq!(dump(&engine, T0_MS), expected);
        drop(engine); // no checkpoint: the next case starts from the same files
    }
}

#[test]
fn corrupt_manifest_refuses_to_open() {
    let (dir, _) = setup();
    let manifest = dir.path().join("MANIFEST");
    flip(&manifest, 20);
    match Engine::open(config(dir.path(), BLOCK_BYTES)) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, manifest),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&manifest).unwrap();
    assert!(matches!(
        Engine::open(config(dir.path(), BLOCK_BYTES)),
        Err(Error::Corruption { .. })
    ));
}
