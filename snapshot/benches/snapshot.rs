#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Snapshot create, verify and restore with 1M records of 100 B and of 1 KiB,
//! zstd levels 1, 3 and 9, and the device's sequential write bandwidth in the
//! same run. `cargo bench -p aerie-snapshot --bench snapshot` (about 10
//! minutes on 2 cores); `AERIE_BENCH_RECORDS` changes the record count.
//!
//! Values are half random bytes and half a repeated 16-byte pattern, so zstd
//! has something to do without the data being trivially compressible.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aerie_engine::{
    Bin, Command, Digest, Engine, EngineConfig, NamespaceConfig, Put, Value, Write,
};
use aerie_snapshot::{Capture, ShardMeta, SnapshotReader, WriteOptions, install};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

const NS: &str = "bench";
const T0_MS: u64 = 1_704_067_200_000;
const SIZES: [usize; 2] = [100, 1024];
const LEVELS: [i32; 3] = [1, 3, 9];
const DEVICE_PROBE_BYTES: usize = 1 << 30;

fn records() -> u64 {
    std::env::var("AERIE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: vec![NamespaceConfig {
            size_limit_bytes: 200 << 30,
            ..NamespaceConfig::named(NS)
        }],
        checkpoint_interval_ms: 0,
        ..EngineConfig::default()
    }
}

fn digest(i: u64) -> Digest {
    let mut d = [0u8; 20];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A17;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

fn value(rng: &mut rand::rngs::StdRng, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes[..size / 2]);
    for (i, b) in bytes[size / 2..].iter_mut().enumerate() {
        *b = b"aerie-snapshots!"[i % 16];
    }
    bytes
}

fn loaded_engine(dir: &Path, size: usize) -> Engine {
    let engine = Engine::open(config(dir)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(size as u64);
    for i in 0..records() {
        let cmd = Command::Put(Put {
            write: Write::new(NS, digest(i)),
            bins: vec![Bin::new(
                "v",
                Value::Blob {
                    particle: 4,
                    bytes: value(&mut rng, size),
                },
            )],
        });
        engine.apply(1, i + 1, T0_MS, &cmd).unwrap();
    }
    engine.checkpoint().unwrap();
    engine
}

fn meta() -> ShardMeta {
    ShardMeta {
        cluster_name: "bench".into(),
        node_id: 1,
        shard_id: 0,
        log_id: 1,
        partitions: (0..4096).collect(),
    }
}

/// Sequential write bandwidth: 1 MiB writes and one fdatasync, like a snapshot.
fn device(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("device");
    group
        .sample_size(10)
        .throughput(Throughput::Bytes(DEVICE_PROBE_BYTES as u64));
    let block = vec![0x5Au8; 1 << 20];
    group.bench_function("sequential_write_1GiB", |b| {
        b.iter(|| {
            let path = dir.join("probe");
            let mut file = std::fs::File::create(&path).unwrap();
            for _ in 0..DEVICE_PROBE_BYTES / block.len() {
                file.write_all(&block).unwrap();
            }
            file.sync_data().unwrap();
            drop(file);
            std::fs::remove_file(&path).unwrap();
        });
    });
    group.finish();
}

fn create_verify_restore(c: &mut Criterion, size: usize) {
    let engine_dir = tempfile::tempdir().unwrap();
    let engine = loaded_engine(engine_dir.path(), size);
    let out = tempfile::tempdir().unwrap();
    let label = if size == 100 { "100B" } else { "1KiB" };
    let mut group = c.benchmark_group(format!("snapshot_{label}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let mut files = Vec::new();
    for level in LEVELS {
        let options = WriteOptions {
            zstd_level: level,
            ..WriteOptions::default()
        };
        let info = Capture::take(&engine, 1, &meta().partitions)
            .unwrap()
            .write(out.path(), &meta(), 1, T0_MS, options, |_| {})
            .unwrap();
        let ratio = info.footer.raw_bytes as f64 / info.file_bytes as f64;
        eprintln!(
            "{label} level {level}: {} records, {} raw bytes, {} bytes on disk (ratio {ratio:.2})",
            info.footer.records, info.footer.raw_bytes, info.file_bytes
        );
        group.throughput(Throughput::Bytes(info.footer.raw_bytes));
        group.bench_function(BenchmarkId::new("create", format!("zstd{level}")), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir_in(out.path()).unwrap();
                    let started = Instant::now();
                    let capture = Capture::take(&engine, 1, &meta().partitions).unwrap();
                    capture
                        .write(dir.path(), &meta(), 1, T0_MS, options, |_| {})
                        .unwrap();
                    total += started.elapsed();
                }
                total
            });
        });
        files.push((level, info));
    }
    for (level, info) in &files {
        group.throughput(Throughput::Bytes(info.footer.raw_bytes));
        group.bench_function(BenchmarkId::new("verify", format!("zstd{level}")), |b| {
            b.iter(|| {
                SnapshotReader::open(&info.path)
                    .unwrap()
                    .verify(|_| {})
                    .unwrap()
            });
        });
    }
    let (_, info) = &files[0];
    group.throughput(Throughput::Bytes(info.footer.raw_bytes));
    group.bench_function(BenchmarkId::new("restore", "zstd1"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let target = Engine::open(config(dir.path())).unwrap();
                let started = Instant::now();
                let reader = SnapshotReader::open(&info.path).unwrap();
                install(&target, &reader, |_| {}).unwrap();
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let probe_dir = tempfile::tempdir().unwrap();
    device(c, probe_dir.path());
    for size in SIZES {
        create_verify_restore(c, size);
    }
}

criterion_group!(snapshot, benches);
criterion_main!(snapshot);
