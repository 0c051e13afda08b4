#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Engine benchmarks. Quick run of everything:
//! `CARGO_TARGET_DIR=/work/target-engine cargo bench -p aerie-engine -- --quick`

use std::path::Path;
use std::time::{Duration, Instant};

use aerie_engine::{
    Bin, BinSelection, Command, Digest, Engine, EngineConfig, NamespaceConfig, Op, Operate, Put,
    ReadMode, Value, Write,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const NS: &str = "bench";
const T0_MS: u64 = 1_704_067_200_000;
const SIZES: [usize; 3] = [100, 1024, 10 * 1024];

fn config(dir: &Path, read_mode: ReadMode, cache_blocks: usize) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: vec![NamespaceConfig {
            size_limit_bytes: 200 << 30,
            post_write_cache_blocks: cache_blocks,
            ..NamespaceConfig::named(NS)
        }],
        read_mode,
        checkpoint_interval_ms: 0,
        ..EngineConfig::default()
    }
}

fn digest(i: u64) -> Digest {
    let mut d = [0u8; 20];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

fn put(i: u64, size: usize) -> Command {
    Command::Put(Put {
        write: Write::new(NS, digest(i)),
        bins: vec![Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: vec![i as u8; size],
            },
        )],
    })
}

/// Applies puts for records `from..to` as log 1 indices `from+1..`.
fn load(engine: &Engine, from: u64, to: u64, size: usize) {
    for i in from..to {
        engine.apply(1, i + 1, T0_MS, &put(i, size)).unwrap();
    }
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("write");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for size in SIZES {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("put", size), &size, |b, &size| {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(config(dir.path(), ReadMode::Pread, 8)).unwrap();
            let mut next = 0u64;
            b.iter_custom(|n| {
                let start = Instant::now();
                load(&engine, next, next + n, size);
                next += n;
                start.elapsed()
            });
        });
        g.bench_with_input(BenchmarkId::new("delete", size), &size, |b, &size| {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(config(dir.path(), ReadMode::Pread, 8)).unwrap();
            let mut next = 0u64;
            b.iter_custom(|n| {
                load(&engine, next, next + n, size);
                let start = Instant::now();
                for i in next..next + n {
                    let cmd = Command::Delete {
                        namespace: NS.into(),
                        digest: digest(i),
                        generation: Default::default(),
                    };
                    engine.apply(1, n + i + 1, T0_MS, &cmd).unwrap();
                }
                next += 2 * n;
                start.elapsed()
            });
        });
        g.bench_with_input(
            BenchmarkId::new("operate_incr_read", size),
            &size,
            |b, &size| {
                let dir = tempfile::tempdir().unwrap();
                let engine = Engine::open(config(dir.path(), ReadMode::Pread, 8)).unwrap();
                load(&engine, 0, 1000, size);
                let mut index = 1000u64;
                b.iter(|| {
                    index += 1;
                    let ops = vec![Op::Incr(Bin::new("n", Value::Int(1))), Op::Read("n".into())];
                    let cmd = Command::Operate(Operate {
                        write: Write::new(NS, digest(index % 1000)),
                        ops,
                    });
                    engine.apply(1, index, T0_MS, &cmd).unwrap()
                });
            },
        );
    }
    g.finish();
}

/// Point reads of 20k records from sealed, uncached blocks (page cache warm).
fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap();
        let records = 20_000u64;
        load(&engine, 0, records, size);
        engine.close().unwrap();
        for mode in [ReadMode::Pread, ReadMode::Mmap] {
            let engine = Engine::open(config(dir.path(), mode, 0)).unwrap();
            let name = format!("get_{mode:?}").to_lowercase();
            let mut i = 0u64;
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    i = (i + 7919) % records;
                    engine
                        .get(NS, &digest(i), &BinSelection::All, T0_MS)
                        .unwrap()
                        .unwrap()
                });
            });
        }
    }
    g.finish();
}

fn scan_and_defrag(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let records = 50_000u64;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap();
    load(&engine, 0, records, 1024);
    g.throughput(Throughput::Elements(records));
    g.bench_function("scan_all_partitions_50k_x_1KiB", |b| {
        b.iter(|| {
            let mut n = 0;
            for p in 0..4096u16 {
                n += engine
                    .scan_partition(NS, p, None, usize::MAX, T0_MS)
                    .unwrap()
                    .records
                    .len();
            }
            assert_eq!(n as u64, records);
        });
    });
    drop(engine);
    g.throughput(Throughput::Bytes(64 << 20));
    g.bench_function("defrag_64MiB_third_live", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let engine = Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap();
                let n = 64_000u64; // 64 MiB of 1 KiB records
                load(&engine, 0, n, 1000);
                // Delete 2 of 3: every block falls to ~1/3 live, below the 50% mark.
                for i in (0..n).filter(|i| i % 3 != 0) {
                    let cmd = Command::Delete {
                        namespace: NS.into(),
                        digest: digest(i),
                        generation: Default::default(),
                    };
                    engine.apply(1, n + i + 1, T0_MS, &cmd).unwrap();
                }
                let start = Instant::now();
                let progress = engine.defrag_step(u64::MAX).unwrap();
                total += start.elapsed();
                assert!(progress.bytes_examined >= 60 << 20, "{progress:?}");
            }
            total
        });
    });
    g.finish();
}

fn starts(c: &mut Criterion) {
    let mut g = c.benchmark_group("start");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let records = 200_000u64;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap();
    load(&engine, 0, records, 100);
    engine.close().unwrap();
    let index = dir.path().join(NS).join("index.ckpt");
    let saved = std::fs::read(&index).unwrap();
    g.throughput(Throughput::Elements(records));
    g.bench_function("fast_start_200k_x_100B", |b| {
        b.iter(|| Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap());
    });
    g.bench_function("cold_start_200k_x_100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::fs::remove_file(&index).unwrap();
                let start = Instant::now();
                let engine = Engine::open(config(dir.path(), ReadMode::Pread, 0)).unwrap();
                total += start.elapsed();
                assert!(engine.recovery_report().namespaces[NS].cold_start);
                drop(engine);
                std::fs::write(&index, &saved).unwrap();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, writes, reads, scan_and_defrag, starts);
criterion_main!(benches);
