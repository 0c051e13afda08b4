//! WAL benchmarks. `cargo bench -p aerie-wal` runs them all; each group can be
//! selected by name (`cargo bench -p aerie-wal -- concurrent`).
//!
//! * `append`: entry size × batch size × fsync policy × io backend, one writer.
//! * `concurrent`: 1, 4, 16, 64 writers with fsync `always`, next to the raw
//!   fdatasync rate of the same disk (`raw_fdatasync`); entries per fdatasync
//!   is printed per configuration.
//! * `recovery`: opening a 1 GiB log (`AERIE_BENCH_RECOVERY_MIB` to change).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aerie_wal::{EntryRef, FsyncPolicy, IoBackend, LogBatch, Wal, WalConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench_dir() -> tempfile::TempDir {
    // Under target/ so the benchmark hits the project's disk, not a tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn open(dir: &std::path::Path, fsync: FsyncPolicy, backend: IoBackend) -> Wal {
    let mut config = WalConfig::new(dir);
    config.fsync = fsync;
    config.io_backend = backend;
    Wal::open(config).unwrap()
}

fn batch(stream: u64, first: u64, count: u64, payload: &[u8]) -> LogBatch {
    let entries: Vec<EntryRef<'_>> = (first..first + count)
        .map(|index| EntryRef {
            index,
            term: 1,
            payload,
        })
        .collect();
    let mut batch = LogBatch::new();
    batch.append(stream, &entries).unwrap();
    batch
}

fn backends() -> Vec<(IoBackend, &'static str)> {
    let mut list = vec![(IoBackend::Sync, "sync")];
    if aerie_wal::fs::UringFs::probe().is_ok() {
        list.push((IoBackend::Uring, "uring"));
    }
    list
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for (backend, backend_name) in backends() {
        for (fsync, fsync_name) in [
            (FsyncPolicy::Always, "always"),
            (FsyncPolicy::Never, "never"),
        ] {
            for entry_bytes in [128usize, 1024, 16 << 10] {
                for batch_size in [1u64, 16, 256] {
                    let dir = bench_dir();
                    let wal = open(dir.path(), fsync, backend);
                    let payload = vec![0x5au8; entry_bytes];
                    let mut next = 1;
                    group.throughput(Throughput::Elements(batch_size));
                    let id =
                        format!("{backend_name}/{fsync_name}/{entry_bytes}B/batch{batch_size}");
                    group.bench_function(BenchmarkId::from_parameter(id), |b| {
                        b.iter(|| {
                            wal.write(batch(1, next, batch_size, &payload)).unwrap();
                            next += batch_size;
                            // Keep the log bounded: a few segments at most.
                            if next % 65536 < batch_size {
                                wal.compact(1, next).unwrap();
                            }
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

/// fdatasync after a small overwrite on a preallocated file: the disk's bound
/// on single-writer durable commits.
fn raw_fdatasync_per_second(dir: &std::path::Path, seconds: f64) -> f64 {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(dir.join("raw")).unwrap();
    file.set_len(1 << 20).unwrap();
    file.write_all_at(&[0u8; 1 << 20], 0).unwrap();
    file.sync_all().unwrap();
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all_at(&[1u8; 128], (syncs % 8192) * 128)
            .unwrap();
        file.sync_data().unwrap();
        syncs += 1;
    }
    syncs as f64 / started.elapsed().as_secs_f64()
}

fn concurrent(c: &mut Criterion) {
    let dir = bench_dir();
    let raw = raw_fdatasync_per_second(dir.path(), 2.0);
    eprintln!(
        "raw_fdatasync: {raw:.0} fdatasync/s on {}",
        dir.path().display()
    );
    let mut group = c.benchmark_group("concurrent");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    for (backend, backend_name) in backends() {
        for entry_bytes in [128usize, 16 << 10] {
            for writers in [1u64, 4, 16, 64] {
                let wal = Arc::new(open(
                    dir.path()
                        .join(format!("{backend_name}-{entry_bytes}-{writers}"))
                        .as_path(),
                    FsyncPolicy::Always,
                    backend,
                ));
                let payload = Arc::new(vec![0xa5u8; entry_bytes]);
                let id = format!("{backend_name}/{entry_bytes}B/{writers}writers");
                group.throughput(Throughput::Elements(writers * 16));
                let before = wal.stats();
                group.bench_function(BenchmarkId::from_parameter(id.clone()), |b| {
                    b.iter_custom(|iterations| run_writers(&wal, &payload, writers, iterations))
                });
                let after = wal.stats();
                let per_sync = (after.entries - before.entries) as f64
                    / (after.syncs - before.syncs).max(1) as f64;
                eprintln!("{id}: {per_sync:.1} entries per fdatasync");
            }
        }
    }
    group.finish();
}

/// Each of `writers` threads appends 16 single-entry batches per iteration to its own stream.
fn run_writers(wal: &Arc<Wal>, payload: &Arc<Vec<u8>>, writers: u64, iterations: u64) -> Duration {
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|stream| {
            let (wal, payload) = (Arc::clone(wal), Arc::clone(payload));
            std::thread::spawn(move || {
                let mut next = wal.last_index(stream) + 1;
                for _ in 0..iterations * 16 {
                    wal.write(batch(stream, next, 1, &payload)).unwrap();
                    next += 1;
                }
                wal.compact(stream, next).unwrap();
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    started.elapsed()
}

fn recovery(c: &mut Criterion) {
    let mib: u64 = std::env::var("AERIE_BENCH_RECOVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = bench_dir();
    {
        let wal = open(dir.path(), FsyncPolicy::Never, IoBackend::Sync);
        let payload = vec![0x33u8; 4096];
        let batches = mib * 1024 * 1024 / (4096 * 64);
        for b in 0..batches {
            wal.write(batch(b % 8, b / 8 * 64 + 1, 64, &payload))
                .unwrap();
        }
        wal.close().unwrap();
    }
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(mib << 20));
    group.bench_function(BenchmarkId::from_parameter(format!("{mib}MiB")), |b| {
        b.iter(|| {
            let mut config = WalConfig::new(dir.path());
            config.io_backend = IoBackend::Sync;
            Wal::open(config).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, append, concurrent, recovery);
criterion_main!(benches);
