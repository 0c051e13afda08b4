//! Aerie's write path and read path side by side with RocksDB.
//!
//! ```sh
//! cargo bench --features rocksdb-bench --bench vs_rocksdb
//! ```
//!
//! * `durable_put/<system>/<value>/<writers>`: 1, 16 or 64 threads, each
//!   writing its own keys (20-byte digests) with 100 B or 1 KiB values, 16
//!   puts per thread per iteration; a put returns once durable. Aerie: one
//!   `aerie-wal` entry (digest + value, fsync `always`, group commit) on the
//!   thread's own stream, then `Engine::apply` of the put; `aerie` uses the
//!   default io backend (`auto`: io_uring when the kernel allows it),
//!   `aerie-sync` uses `pwrite`+`fdatasync`. RocksDB: `put_opt` with
//!   `WriteOptions::set_sync(true)` (its WAL fsynced, its own group commit).
//! * `point_read/<system>/100B/<readers>`: `Engine::get` (all bins, decoded)
//!   against RocksDB `get_pinned`, random keys of a data set of
//!   `AERIE_BENCH_READ_KEYS` (default 1,000,000) records of 100 B, each read
//!   once before measuring. `aerie` reads sealed blocks with `pread` (the
//!   default), `aerie-mmap` with `ReadMode::Mmap`. RocksDB's data is flushed
//!   and compacted into sorted files first.
//!
//! Before the criterion benchmarks of each configuration, a paired run (the
//! same work on each system in turn, 7 rounds) prints `paired ...` lines: the
//! median ratio of RocksDB's wall time to Aerie's, robust to the slow spells
//! of a shared machine that shift criterion's back-to-back figures.
//!
//! RocksDB gets its defaults (snappy, no bloom filter, 64 MiB memtable) plus
//! one setting: a 512 MiB LRU block cache, more than the data set, so every
//! read can be served from its cache. Aerie keeps its defaults (8 MiB write
//! blocks, 8 sealed blocks cached, the rest read from the page cache).
//! Data lives under `target/bench-tmp` (the project disk, not a tmpfs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aerie_engine::{Bin, BinSelection, Command, Digest, Engine, EngineConfig, NamespaceConfig};
use aerie_engine::{Put, ReadMode, Value, Write};
use aerie_wal::{EntryRef, FsyncPolicy, IoBackend, LogBatch, Wal, WalConfig};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use rocksdb::{BlockBasedOptions, Cache, DB, Options, WriteBatch, WriteOptions};

const NS: &str = "bench";
/// 2024-01-01T00:00:00Z: the commands' clock.
const T0_MS: u64 = 1_704_067_200_000;
const VALUE_SIZES_BYTES: [usize; 2] = [100, 1024];
const WRITERS: [u64; 3] = [1, 16, 64];
const PUTS_PER_WRITER: u64 = 16;
const READERS: [u64; 2] = [1, 2];
const READS_PER_READER: u64 = 1024;
const ROCKSDB_BLOCK_CACHE_BYTES: usize = 512 << 20;
/// Rounds of the paired comparison, and iterations (of `PUTS_PER_WRITER` or
/// `READS_PER_READER` per thread) in each.
const PAIRED_ROUNDS: usize = 7;
const PAIRED_PUT_ITERATIONS: u64 = 8;
const PAIRED_READ_ITERATIONS: u64 = 200;
/// Most streams (writers) a store serves.
const MAX_STREAMS: usize = 65;

fn bench_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A well-spread 20-byte key for `(stream, n)`.
fn key(stream: u64, n: u64) -> Digest {
    let mut d = [0u8; 20];
    let mut x = (stream << 40 | n).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5151_7070;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

fn put_command(key: &Digest, value: &[u8]) -> Command {
    Command::Put(Put {
        write: Write::new(NS, *key),
        bins: vec![Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: value.to_vec(),
            },
        )],
    })
}

/// What both systems do.
trait Store: Send + Sync {
    fn name(&self) -> &'static str;
    /// Next index of a writer's stream.
    fn next_index(&self, stream: u64) -> u64;
    /// A put that returns once it is durable.
    fn put_durable(&self, stream: u64, index: u64, key: &Digest, value: &[u8]);
    /// Bytes of the value found for `key` (0 if missing).
    fn get(&self, key: &Digest) -> usize;
}

struct Aerie {
    name: &'static str,
    wal: Wal,
    engine: Engine,
}

fn engine_config(dir: &Path, read_mode: ReadMode) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: vec![NamespaceConfig {
            size_limit_bytes: 200 << 30,
            ..NamespaceConfig::named(NS)
        }],
        checkpoint_interval_ms: 0,
        read_mode,
        ..EngineConfig::default()
    }
}

impl Aerie {
    fn open(name: &'static str, dir: &Path, io_backend: IoBackend, read_mode: ReadMode) -> Aerie {
        let dir = dir.join(name);
        let mut wal_config = WalConfig::new(dir.join("wal"));
        wal_config.fsync = FsyncPolicy::Always;
        wal_config.io_backend = io_backend;
        let wal = Wal::open(wal_config).unwrap();
        eprintln!("{name}: aerie-wal io backend {}", wal.io_backend());
        Aerie {
            name,
            wal,
            engine: Engine::open(engine_config(&dir.join("engine"), read_mode)).unwrap(),
        }
    }
}

impl Store for Aerie {
    fn name(&self) -> &'static str {
        self.name
    }

    fn next_index(&self, stream: u64) -> u64 {
        self.wal.last_index(stream) + 1
    }

    fn put_durable(&self, stream: u64, index: u64, key: &Digest, value: &[u8]) {
        let mut payload = Vec::with_capacity(key.len() + value.len());
        payload.extend_from_slice(key);
        payload.extend_from_slice(value);
        let mut batch = LogBatch::new();
        let entry = EntryRef {
            index,
            term: 1,
            payload: &payload,
        };
        batch.append(stream, &[entry]).unwrap();
        self.wal.write(batch).unwrap();
        self.engine
            .apply(stream, index, T0_MS, &put_command(key, value))
            .unwrap();
    }

    fn get(&self, key: &Digest) -> usize {
        let found = self.engine.get(NS, key, &BinSelection::All, T0_MS).unwrap();
        found.map_or(0, |r| match &r.bins[0].value {
            Value::Blob { bytes, .. } => bytes.len(),
            _ => 0,
        })
    }
}

struct Rocks {
    db: DB,
    sync: WriteOptions,
    next: Vec<AtomicU64>,
}

impl Rocks {
    fn open(dir: &Path) -> Rocks {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(ROCKSDB_BLOCK_CACHE_BYTES));
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_block_based_table_factory(&table);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        Rocks {
            db: DB::open(&options, dir.join("rocksdb")).unwrap(),
            sync,
            next: (0..MAX_STREAMS).map(|_| AtomicU64::new(1)).collect(),
        }
    }
}

impl Store for Rocks {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn next_index(&self, stream: u64) -> u64 {
        self.next[stream as usize].load(Ordering::SeqCst)
    }

    fn put_durable(&self, stream: u64, index: u64, key: &Digest, value: &[u8]) {
        self.db.put_opt(key, value, &self.sync).unwrap();
        self.next[stream as usize].store(index + 1, Ordering::SeqCst);
    }

    fn get(&self, key: &Digest) -> usize {
        self.db.get_pinned(key).unwrap().map_or(0, |v| v.len())
    }
}

/// `threads` threads each run `per_thread(thread)`; returns the wall time.
fn run_threads(threads: u64, per_thread: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let per_thread = Arc::new(per_thread);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = per_thread.clone();
            std::thread::spawn(move || f(t))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    started.elapsed()
}

/// Per thread and sample: `(store, thread, iterations)`.
type Work = Arc<dyn Fn(&dyn Store, u64, u64) + Send + Sync>;

/// One benchmark: `threads` threads each run `work` per sample.
fn bench_threads(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: String,
    store: &Arc<dyn Store>,
    threads: u64,
    work: &Work,
) {
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter_custom(|iterations| {
            let (store, work) = (store.clone(), work.clone());
            run_threads(threads, move |t| work(&*store, t, iterations))
        })
    });
}

/// The same work on every store in turn, `PAIRED_ROUNDS` times, so a slow
/// spell of the shared disk or CPU hits both systems alike; prints each Aerie
/// variant's median ratio of wall times against RocksDB (>1: Aerie faster).
fn paired_ratios(
    label: &str,
    stores: &[Arc<dyn Store>],
    threads: u64,
    iterations: u64,
    work: &Work,
) {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    for _ in 0..PAIRED_ROUNDS {
        for (store, t) in stores.iter().zip(&mut times) {
            let (store, work) = (store.clone(), work.clone());
            let took = run_threads(threads, move |thread| work(&*store, thread, iterations));
            t.push(took.as_secs_f64());
        }
    }
    let Some((rocks, aerie)) = times.split_last() else {
        return;
    };
    for (store, t) in stores.iter().zip(aerie) {
        let mut ratios: Vec<f64> = rocks.iter().zip(t).map(|(r, a)| r / a).collect();
        ratios.sort_by(f64::total_cmp);
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        eprintln!(
            "paired {label} {}: median {:.2}x RocksDB (rounds, sorted: {})",
            store.name(),
            ratios[ratios.len() / 2],
            shown.join(" ")
        );
    }
}

fn durable_put(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_put");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for value_bytes in VALUE_SIZES_BYTES {
        for writers in WRITERS {
            let dir = bench_dir();
            let stores: [Arc<dyn Store>; 3] = [
                Arc::new(Aerie::open(
                    "aerie",
                    dir.path(),
                    IoBackend::Auto,
                    ReadMode::Pread,
                )),
                Arc::new(Aerie::open(
                    "aerie-sync",
                    dir.path(),
                    IoBackend::Sync,
                    ReadMode::Pread,
                )),
                Arc::new(Rocks::open(dir.path())),
            ];
            let value = vec![0xa5u8; value_bytes];
            let work: Work = Arc::new(move |store, t, iterations| {
                let stream = t + 1;
                let first = store.next_index(stream);
                for index in first..first + iterations * PUTS_PER_WRITER {
                    store.put_durable(stream, index, &key(stream, index), &value);
                }
            });
            let label = format!("durable_put/{value_bytes}B/{writers}writers");
            paired_ratios(&label, &stores, writers, PAIRED_PUT_ITERATIONS, &work);
            group.throughput(Throughput::Elements(writers * PUTS_PER_WRITER));
            for store in &stores {
                let id = format!("{}/{value_bytes}B/{writers}writers", store.name());
                bench_threads(&mut group, id, store, writers, &work);
            }
        }
    }
    group.finish();
}

fn read_keys() -> u64 {
    std::env::var("AERIE_BENCH_READ_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Loads `n` records of 100 B into both systems, settled and warmed.
fn load_for_reads(dir: &Path, n: u64) -> [Arc<dyn Store>; 3] {
    let value = vec![0x3cu8; 100];
    let aerie = |name, read_mode| {
        let aerie = Aerie::open(name, dir, IoBackend::Auto, read_mode);
        for i in 0..n {
            aerie
                .engine
                .apply(1, i + 1, T0_MS, &put_command(&key(0, i), &value))
                .unwrap();
        }
        aerie.engine.checkpoint().unwrap();
        aerie
    };
    let (pread, mmap) = (
        aerie("aerie", ReadMode::Pread),
        aerie("aerie-mmap", ReadMode::Mmap),
    );
    let rocks = Rocks::open(dir);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut batch = WriteBatch::default();
        for i in chunk {
            batch.put(key(0, *i), &value);
        }
        rocks.db.write(batch).unwrap();
    }
    rocks.db.flush().unwrap();
    rocks.db.compact_range(None::<&[u8]>, None::<&[u8]>);
    let stores: [Arc<dyn Store>; 3] = [Arc::new(pread), Arc::new(mmap), Arc::new(rocks)];
    for store in &stores {
        let started = Instant::now();
        let found: usize = (0..n).map(|i| store.get(&key(0, i))).sum();
        assert_eq!(found as u64, n * 100, "{} lost records", store.name());
        eprintln!(
            "{}: warm-up read of {n} keys took {:?}",
            store.name(),
            started.elapsed()
        );
    }
    stores
}

fn point_read(c: &mut Criterion) {
    let n = read_keys();
    let dir = bench_dir();
    let stores = load_for_reads(dir.path(), n);
    let work: Work = Arc::new(move |store, t, iterations| {
        let mut x = 0x2545_F491_4F6C_DD1D ^ (t + 1);
        for _ in 0..iterations * READS_PER_READER {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::hint::black_box(store.get(&key(0, x % n)));
        }
    });
    let mut group = c.benchmark_group("point_read");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for readers in READERS {
        let label = format!("point_read/100B/{readers}readers");
        paired_ratios(&label, &stores, readers, PAIRED_READ_ITERATIONS, &work);
        group.throughput(Throughput::Elements(readers * READS_PER_READER));
        for store in &stores {
            let id = format!("{}/100B/{readers}readers", store.name());
            bench_threads(&mut group, id, store, readers, &work);
        }
    }
    group.finish();
}

criterion_group!(benches, durable_put, point_read);
criterion_main!(benches);
