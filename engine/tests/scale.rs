#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Figures at 10M records: index RAM per record, fast and cold start. Prints,
//! asserts nothing about speed. Run in release (about 2 minutes, ~2.5 GB disk):
//! `CARGO_TARGET_DIR=/work/target-engine cargo test -p aerie-engine --release --test scale -- --ignored --nocapture`

mod common;

use std::time::Instant;

use aerie_engine::{Bin, Engine, Value};
use common::*;

#[test]
#[ignore = "10M records: run in release, see the file docs"]
fn ten_million_records() {
    let n: u32 = std::env::var("AERIE_SCALE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir =
        tempfile::tempdir_in(std::env::var("AERIE_SCALE_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    let mut cfg = config(dir.path(), 8 << 20);
    cfg.namespaces[0].size_limit_bytes = 1 << 40;
    let engine = Engine::open(cfg.clone()).unwrap();
    let start = Instant::now();
    for i in 0..n {
        let cmd = put(
            digest(i),
            vec![Bin::new(
                "v",
                Value::Blob {
                    particle: 4,
                    bytes: vec![i as u8; 100],
                },
            )],
        );
        engine.apply(1, u64::from(i) + 1, T0_MS, &cmd).unwrap();
    }
    let load_s = start.elapsed().as_secs_f64();
    let stats = &engine.stats()[0];
    println!(
        "records {n}: load {load_s:.1} s ({:.0} puts/s)",
        f64::from(n) / load_s
    );
    println!(
        "index RAM {} bytes = {:.1} B/record",
        stats.index_bytes,
        stats.index_bytes as f64 / f64::from(n)
    );
    let start = Instant::now();
    let ck = engine.checkpoint().unwrap();
    println!(
        "checkpoint {:.2} s, index.ckpt {} bytes",
        start.elapsed().as_secs_f64(),
        ck.index_bytes
    );
    drop(engine);
    let start = Instant::now();
    let engine = Engine::open(cfg.clone()).unwrap();
    println!("fast start {:.2} s", start.elapsed().as_secs_f64());
    assert_eq!(engine.stats()[0].records, u64::from(n));
    drop(engine);
    std::fs::remove_file(dir.path().join(NS).join("index.ckpt")).unwrap();
    let start = Instant::now();
    let engine = Engine::open(cfg).unwrap();
    let cold_s = start.elapsed().as_secs_f64();
    let report = &engine.recovery_report().namespaces[NS];
    println!(
        "cold start {cold_s:.2} s: {} versions, {:.0} records/s, {:.0} MB/s",
        report.versions_scanned,
        report.versions_scanned as f64 / cold_s,
        report.bytes_scanned as f64 / cold_s / 1e6
    );
    assert_eq!(engine.stats()[0].records, u64::from(n));
}
