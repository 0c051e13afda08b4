#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bit flips and truncation in blocks, `index.ckpt` and `MANIFEST`: detected
//! with file and offset, a bad index checkpoint falls back to a cold start,
//! and a corrupt record is never served.

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

#[test]
fn bit_flip_in_a_block_on_cold_start_drops_the_rest_of_that_block_with_a_report() {
    let (dir, expected) = setup();
    let block = block_path(dir.path(), 1);
    flip(&block, aerie_engine::format::BLOCK_HEADER_BYTES + 100);
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let report = &engine.recovery_report().namespaces[NS];
    assert!(report.cold_start);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("0000000001.seg") && p.contains("offset 36")),
        "{report:?}"
    );
    let (ok, bad) = read_all(&engine);
    assert!(bad.is_empty());
    assert!(ok < expected.len());
    let got = dump(&engine, T0_MS);
    assert!(
        got.iter().all(|(d, r)| expected[d] == *r),
        "only intact records are served"
    );
}

#[test]
fn truncated_block_is_detected() {
    let (dir, expected) = setup();
    let block = block_path(dir.path(), 1);
    let len = std::fs::metadata(&block).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&block)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let (ok, bad) = read_all(&engine);
    assert!(!bad.is_empty());
    assert_eq!(ok + bad.len(), expected.len());
    for e in &bad {
        assert!(
            matches!(e, Error::Corruption { path, .. } if path == &block),
            "{e:?}"
        );
    }
    drop(engine);
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let engine = Engine::open(config(dir.path(), BLOCK_BYTES)).unwrap();
    let report = &engine.recovery_report().namespaces[NS];
    assert!(
        report.problems.iter().any(|p| p.contains("truncated")),
        "{report:?}"
    );
    let got = dump(&engine, T0_MS);
    assert!(got.len() < expected.len());
    assert!(got.iter().all(|(d, r)| expected[d] == *r));
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
