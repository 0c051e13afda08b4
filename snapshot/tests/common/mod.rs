//! Helpers shared by the snapshot integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use aerie_engine::model::Model;
use aerie_engine::{
    Bin, Command, Digest, Engine, EngineConfig, NamespaceConfig, Op, Operate, Put, Record, Value,
    Write, partition_of,
};
use aerie_snapshot::{Capture, ShardMeta, SnapshotInfo, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const NAMESPACES: [&str; 2] = ["test", "bar"];
/// 2024-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_704_067_200_000;
/// The log every test applies through.
pub const LOG: u64 = 1;
/// Total of the transfer accounts, constant after every whole transfer.
pub const ACCOUNT_TOTAL: i64 = 1_000_000;

pub fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: NAMESPACES
            .iter()
            .map(|ns| NamespaceConfig {
                write_block_size_bytes: 64 << 10,
                post_write_cache_blocks: 1,
                ..NamespaceConfig::named(ns)
            })
            .collect(),
        checkpoint_interval_ms: 0,
        ..EngineConfig::default()
    }
}

/// A digest for key `i`, spread over partitions.
pub fn digest(i: u32) -> Digest {
    let mut d = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

fn incr(ns: &str, key: u32, by: i64) -> Command {
    Command::Operate(Operate {
        write: Write::new(ns, digest(key)),
        ops: vec![Op::Incr(Bin::new("v", Value::Int(by)))],
    })
}

/// Commands of two kinds: counter increments (in both namespaces), and
/// transfers between accounts of `test` (a debit then a credit: the total is
/// `ACCOUNT_TOTAL` after every whole transfer). Padding bins make chunks and
/// blocks fill.
pub fn workload(seed: u64, count: usize, keys: u32) -> Vec<Command> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut commands: Vec<Command> = (0..keys)
        .map(|k| {
            let mut write = Write::new("test", digest(k));
            write.set = "accounts".into();
            Command::Put(Put {
                write,
                bins: vec![
                    Bin::new("v", Value::Int(if k == 0 { ACCOUNT_TOTAL } else { 0 })),
                    Bin::new(
                        "pad",
                        Value::Blob {
                            particle: 4,
                            bytes: vec![k as u8; 200],
                        },
                    ),
                ],
            })
        })
        .collect();
    while commands.len() < count {
        if rng.random_bool(0.5) {
            let (from, to) = (rng.random_range(0..keys), rng.random_range(0..keys));
            let amount = rng.random_range(1..100);
            commands.push(incr("test", from, -amount));
            commands.push(incr("test", to, amount));
        } else {
            commands.push(incr("bar", 1000 + rng.random_range(0..keys), 1));
        }
    }
    commands
}

/// Leader time of the command at log index `index` (one second apart).
pub fn now_of(index: u64) -> u64 {
    T0_MS + index * 1000
}

/// The models of both namespaces after the first `upto` commands.
pub fn models_at(commands: &[Command], upto: u64) -> BTreeMap<String, Model> {
    let mut models: BTreeMap<String, Model> = NAMESPACES
        .iter()
        .map(|ns| (ns.to_string(), Model::new(ns, 0)))
        .collect();
    for (i, cmd) in commands.iter().take(upto as usize).enumerate() {
        let model = models.get_mut(cmd.namespace()).unwrap();
        let _ = model.apply(now_of(i as u64 + 1), cmd);
    }
    models
}

/// Every record of `partitions` in `ns`, through partition scans.
pub fn scan(engine: &Engine, ns: &str, partitions: &[u16]) -> BTreeMap<Digest, Record> {
    let mut out = BTreeMap::new();
    for &p in partitions {
        let mut after = None;
        loop {
            let page = engine
                .scan_partition(ns, p, after.as_ref(), 100, T0_MS)
                .unwrap();
            out.extend(page.records.into_iter().map(|r| (r.digest, r)));
            match page.resume_after {
                Some(d) => after = Some(d),
                None => break,
            }
        }
    }
    out
}

/// Asserts the engine's `partitions` equal the models' there, record by record.
pub fn assert_matches(engine: &Engine, models: &BTreeMap<String, Model>, partitions: &[u16]) {
    for (ns, model) in models {
        let expected: BTreeMap<Digest, Record> = model
            .visible(T0_MS)
            .into_iter()
            .filter(|(d, _)| partitions.binary_search(&partition_of(d)).is_ok())
            .collect();
        let actual = scan(engine, ns, partitions);
        assert_eq!(actual.len(), expected.len(), "{ns}: record count");
        assert_eq!(actual, expected, "{ns}: records");
    }
}

pub fn meta(shard_id: u32, partitions: Vec<u16>) -> ShardMeta {
    ShardMeta {
        cluster_name: "test-cluster".into(),
        node_id: 1,
        shard_id,
        log_id: LOG,
        partitions,
    }
}

/// Applies `commands` to a fresh engine in `dir` through `LOG` (index = position + 1).
pub fn engine_with(dir: &Path, commands: &[Command]) -> Engine {
    let engine = Engine::open(config(dir)).unwrap();
    for (i, cmd) in commands.iter().enumerate() {
        let index = i as u64 + 1;
        let _ = engine.apply(LOG, index, now_of(index), cmd);
    }
    engine
}

/// Snapshot of every partition of `engine` into `dir`.
pub fn snapshot_all(engine: &Engine, dir: &Path, options: WriteOptions) -> SnapshotInfo {
    snapshot_all_at(engine, dir, options, T0_MS)
}

/// Snapshot of every partition, stamped as created at `created_ms`.
pub fn snapshot_all_at(
    engine: &Engine,
    dir: &Path,
    options: WriteOptions,
    created_ms: u64,
) -> SnapshotInfo {
    let partitions: Vec<u16> = (0..4096).collect();
    let capture = Capture::take(engine, LOG, &partitions).unwrap();
    capture
        .write(dir, &meta(0, partitions), 1, created_ms, options, |_| {})
        .unwrap()
}

/// Shard 1 of 4.
pub fn shard_partitions() -> Vec<u16> {
    (1024..2048).collect()
}

/// Small blocks, so an install stages several.
pub fn small_blocks(dir: &Path) -> EngineConfig {
    let mut cfg = config(dir);
    for ns in &mut cfg.namespaces {
        ns.write_block_size_bytes = 16 << 10;
    }
    cfg
}

/// Every record of every namespace, and the log's applied and durable index.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub records: BTreeMap<String, BTreeMap<Digest, Record>>,
    pub applied: u64,
    pub durable: u64,
}

pub fn state_of(engine: &Engine) -> State {
    read_state(engine).unwrap()
}

/// The state, or the first record that failed to read.
pub fn read_state(engine: &Engine) -> aerie_engine::Result<State> {
    let all: Vec<u16> = (0..4096).collect();
    let views = engine.views(&NAMESPACES, &all)?;
    let mut records = BTreeMap::new();
    for (ns, view) in NAMESPACES.iter().zip(views) {
        let ns_records = view
            .records()
            .map(|r| r.map(|r| (r.digest, r)))
            .collect::<aerie_engine::Result<_>>()?;
        records.insert(ns.to_string(), ns_records);
    }
    Ok(State {
        records,
        applied: engine.applied_index(LOG),
        durable: engine.durable_applied_index(LOG),
    })
}

/// `old` with the shard's partitions replaced by `source`'s, at `index`.
pub fn installed_over(old: &State, source: &State, index: u64) -> State {
    let shard = shard_partitions();
    let inside = |d: &Digest| shard.binary_search(&partition_of(d)).is_ok();
    let mut new = old.clone();
    for (ns, records) in &mut new.records {
        records.retain(|d, _| !inside(d));
        let theirs = source.records[ns].iter().filter(|(d, _)| inside(d));
        records.extend(theirs.map(|(d, r)| (*d, r.clone())));
    }
    new.applied = index;
    new.durable = index;
    new
}

/// A checkpointed engine in `dir` with both namespaces filled; its state.
pub fn old_engine_dir(dir: &Path) -> State {
    let engine = engine_with(dir, &workload(1, 900, 300));
    engine.checkpoint().unwrap();
    state_of(&engine)
}

/// A snapshot (in `dir`) of the shard's partitions of an engine fed with
/// `commands` commands of workload `seed`, and the state installing it over
/// `old` gives.
pub fn shard_snapshot(
    dir: &Path,
    old: &State,
    seed: u64,
    commands: usize,
) -> (std::path::PathBuf, State) {
    let source = engine_with(
        &dir.join(format!("source-{seed}")),
        &workload(seed, commands, 300),
    );
    let capture = Capture::take(&source, LOG, &shard_partitions()).unwrap();
    let info = capture
        .write(
            dir,
            &meta(1, shard_partitions()),
            1,
            T0_MS,
            WriteOptions::default(),
            |_| {},
        )
        .unwrap();
    let new = installed_over(old, &state_of(&source), info.header.index);
    assert_ne!(old.records, new.records);
    (info.path, new)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
