#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Disk faults injected through `aerie_engine::fault::FaultyFs`: ENOSPC on
//! block writes, EIO on fsync during a checkpoint, short and torn writes.
//! Each test checks the error names the file, `durable_applied_index` does
//! not advance past what is on disk, and after a crash and a reopen on a
//! healthy file system the engine equals the model as of its durable index
//! (and as of the whole log once the rest is replayed).

mod common;

use std::path::Path;
use std::sync::Arc;

use aerie_engine::fault::{Faults, FaultyFs, Target};
use aerie_engine::model::Model;
use aerie_engine::{
    Bin, BinSelection, Command, Engine, EngineConfig, Error, Health, Op, Operate, Outcome,
    ReadMode, Result, Value, Write,
};
use common::*;

const BLOCK_BYTES: u32 = 4096;

fn faulty_config(dir: &Path, faults: &Arc<Faults>) -> EngineConfig {
    EngineConfig {
        fs: Arc::new(FaultyFs::new(faults.clone())),
        ..config(dir, BLOCK_BYTES)
    }
}

/// Puts (about 200 bytes) and increments, which are not idempotent, over 20
/// keys: a replay of an entry already on disk would show.
fn command(i: u32) -> Command {
    let key = i % 20;
    if i.is_multiple_of(3) {
        return Command::Operate(Operate {
            write: Write::new(NS, digest(key)),
            ops: vec![Op::Incr(Bin::new("n", Value::Int(1)))],
        });
    }
    put(
        digest(key),
        vec![
            Bin::new(
                "v",
                Value::Blob {
                    particle: 4,
                    bytes: vec![i as u8; 180],
                },
            ),
            Bin::new("n", Value::Int(i64::from(i))),
        ],
    )
}

/// The commands the engine applied (log 1, index = position + 1).
#[derive(Default)]
struct Log(Vec<Command>);

impl Log {
    fn apply(&mut self, engine: &Engine, cmd: Command) -> Result<Outcome> {
        let index = self.0.len() as u64 + 1;
        let result = engine.apply(1, index, T0_MS, &cmd);
        if result
            .as_ref()
            .map_or_else(Error::is_record_error, |_| true)
        {
            self.0.push(cmd);
        }
        result
    }

    fn apply_many(&mut self, engine: &Engine, n: u32) {
        for _ in 0..n {
            let i = self.0.len() as u32;
            self.apply(engine, command(i)).unwrap();
        }
    }

    fn model_at(&self, index: u64) -> Model {
        let mut model = Model::new(NS, 0);
        for cmd in &self.0[..index as usize] {
            let _ = model.apply(T0_MS, cmd);
        }
        model
    }
}

/// Reopens on a healthy file system after a crash; checks the state at the
/// durable index, replays the rest, checks the final state.
fn reopen_and_check(dir: &Path, log: &Log) -> Engine {
    let engine = Engine::open(config(dir, BLOCK_BYTES)).unwrap();
    let durable = engine.durable_applied_index(1);
    assert_eq!(
        dump(&engine, T0_MS),
        log.model_at(durable).visible(T0_MS),
        "state at durable index {durable}"
    );
    for (i, cmd) in log.0.iter().enumerate().skip(durable as usize) {
        let _ = engine.apply(1, i as u64 + 1, T0_MS, cmd);
    }
    assert_eq!(
        dump(&engine, T0_MS),
        log.model_at(log.0.len() as u64).visible(T0_MS),
        "state after replaying from {durable}"
    );
    engine
}

/// An engine over a faulty file system with `n` commands applied and
/// checkpointed.
fn checkpointed(n: u32) -> (tempfile::TempDir, Arc<Faults>, Engine, Log) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let engine = Engine::open(faulty_config(dir.path(), &faults)).unwrap();
    let mut log = Log::default();
    log.apply_many(&engine, n);
    engine.checkpoint().unwrap();
    (dir, faults, engine, log)
}

/// Drops the engine without a clean shutdown, reopens, checks, and expects
/// the durable index `durable`.
fn crash_and_check(dir: &Path, engine: Engine, log: &Log, durable: u64) -> Engine {
    drop(engine);
    let engine = reopen_and_check(dir, log);
    assert_eq!(engine.durable_applied_index(1), durable);
    engine
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every record the model holds reads back with the same bins.
fn assert_reads_match(engine: &Engine, model: &Model) {
    for (d, record) in model.visible(T0_MS) {
        let got = engine.get(NS, &d, &BinSelection::All, T0_MS).unwrap();
        assert_eq!(got.map(|r| r.bins), Some(record.bins));
    }
}

#[test]
fn failed_fsync_at_checkpoint_poisons_until_reopen() {
    // The first fsync each target meets: a block file, index.ckpt's temporary
    // file, MANIFEST's temporary file.
    for (target, want_file) in [
        (Target::Blocks, ".seg"),
        (Target::IndexCheckpoint, "index.ckpt.tmp"),
        (Target::Manifest, "MANIFEST.tmp"),
        (Target::Any, ".seg"),
    ] {
        let (dir, faults, engine, mut log) = checkpointed(60);
        log.apply_many(&engine, 60);

        faults.aim(target);
        faults.set_fsync_eio(true);
        let err = engine.checkpoint().unwrap_err();
        let Error::SyncFailed { path, .. } = &err else {
            panic!("{target:?}: expected SyncFailed, got {err}");
        };
        assert!(file_name(path).ends_with(want_file), "{target:?}: {err}");
        assert_eq!(engine.durable_applied_index(1), 60, "{target:?}");
        // What an operator sees: the fsync error, naming the file.
        let health = engine.health();
        let reason = health.poisoned.expect("poisoned");
        assert!(reason.contains(&path.display().to_string()), "{reason}");
        assert_eq!(engine.poisoned().as_ref(), Some(&reason));

        // Refuses every write, even with the disk healthy again.
        faults.heal();
        let next = engine.apply(1, 121, T0_MS, &command(120));
        assert!(matches!(next, Err(Error::Poisoned(_))), "{next:?}");
        assert!(matches!(engine.checkpoint(), Err(Error::Poisoned(_))));
        assert!(matches!(engine.tick(T0_MS), Err(Error::Poisoned(_))));
        assert!(matches!(
            engine.defrag_step(1 << 20),
            Err(Error::Poisoned(_))
        ));
        assert_eq!(engine.applied_index(1), 120);
        // Reads keep working and see everything applied.
        assert_reads_match(&engine, &log.model_at(120));

        let engine = crash_and_check(dir.path(), engine, &log, 60);
        assert_eq!(engine.health(), Health::default(), "{target:?}");
    }
}

#[test]
fn failed_block_write_at_checkpoint_is_reported_and_retried() {
    let (dir, faults, engine, mut log) = checkpointed(40);
    log.apply_many(&engine, 5); // in the current block, not written yet

    faults.aim(Target::Blocks);
    faults.set_enospc(true);
    let err = engine.checkpoint().unwrap_err();
    let Error::Io { path, source } = &err else {
        panic!("expected an I/O error, got {err}");
    };
    assert!(file_name(path).ends_with(".seg"), "{err}");
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(engine.durable_applied_index(1), 40);
    assert!(
        engine.poisoned().is_none(),
        "a failed write does not poison"
    );

    // A short write leaves part of the bytes in the file; the retry rewrites
    // them at the same offsets.
    faults.set_enospc(false);
    faults.short_next_write(30);
    assert!(matches!(engine.checkpoint(), Err(Error::Io { .. })));
    assert_eq!(engine.durable_applied_index(1), 40);
    assert_eq!(faults.injected(), 2);

    faults.heal();
    engine.checkpoint().unwrap();
    assert_eq!(engine.durable_applied_index(1), 45);
    log.apply_many(&engine, 10);
    crash_and_check(dir.path(), engine, &log, 45);
}

#[test]
fn enospc_on_block_write_stops_writes_while_reads_work() {
    // Several sealed blocks, more than the two kept in RAM: reads use pread.
    let (dir, faults, engine, mut log) = checkpointed(100);

    faults.aim(Target::Blocks);
    faults.set_enospc(true);
    let mut failed = None;
    for _ in 0..100 {
        let i = log.0.len() as u32;
        if let Err(e) = log.apply(&engine, command(i)) {
            failed = Some((i, e));
            break;
        }
    }
    let (i, err) = failed.expect("filling a block must write it");
    assert!(matches!(&err, Error::Io { path, .. } if file_name(path).ends_with(".seg")));
    assert_eq!(err.result_code(), 8, "stop-writes for the client");
    assert!(
        !err.is_record_error(),
        "not applied: the apply loop retries it"
    );
    assert_eq!(engine.applied_index(1), u64::from(i));
    assert!(
        engine
            .apply(1, u64::from(i) + 1, T0_MS, &command(i))
            .is_err()
    );
    assert_reads_match(&engine, &log.model_at(u64::from(i)));

    faults.heal();
    log.apply(&engine, command(i)).unwrap();
    log.apply_many(&engine, 30);
    engine.checkpoint().unwrap();
    log.apply_many(&engine, 7);
    drop(engine);
    reopen_and_check(dir.path(), &log);
}

#[test]
fn torn_block_write_after_the_checkpoint_is_cut_at_recovery() {
    let (dir, faults, engine, mut log) = checkpointed(50);
    faults.aim(Target::Blocks);
    faults.tear_next_write(7);
    log.apply_many(&engine, 60); // seals blocks: the first write is torn
    assert_eq!(faults.injected(), 1);
    crash_and_check(dir.path(), engine, &log, 50);
}

#[test]
fn torn_block_write_under_a_checkpoint_is_detected_never_served() {
    // A disk that reports a write done but kept part of it, and then an fsync
    // that succeeds: the manifest lists bytes that are not there.
    let (dir, faults, engine, mut log) = checkpointed(0);
    log.apply_many(&engine, 5);
    faults.aim(Target::Blocks);
    faults.tear_next_write(40); // the block header and nothing else
    engine.checkpoint().unwrap();
    drop(engine);

    // The block file ends before the length the manifest lists: the open
    // refuses, naming the file and where it ends, instead of serving less.
    match Engine::open(config(dir.path(), BLOCK_BYTES)) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert!(file_name(&path).ends_with(".seg"), "{path:?}");
            assert_eq!(offset, 40);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(!log.model_at(5).visible(T0_MS).is_empty());
}

#[test]
fn torn_index_checkpoint_falls_back_to_a_cold_start() {
    let (dir, faults, engine, mut log) = checkpointed(0);
    log.apply_many(&engine, 80);
    faults.aim(Target::IndexCheckpoint);
    faults.tear_next_write(100);
    engine.checkpoint().unwrap();
    log.apply_many(&engine, 10);
    let engine = crash_and_check(dir.path(), engine, &log, 80);
    let report = &engine.recovery_report().namespaces[NS];
    assert!(report.cold_start);
    assert!(
        report.problems.iter().any(|p| p.contains("index.ckpt")),
        "{report:?}"
    );
}

#[test]
fn mmap_reads_work_over_the_file_seam() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let config = EngineConfig {
        read_mode: ReadMode::Mmap,
        ..faulty_config(dir.path(), &faults)
    };
    let engine = Engine::open(config.clone()).unwrap();
    let mut log = Log::default();
    log.apply_many(&engine, 100);
    engine.close().unwrap();
    let engine = Engine::open(config).unwrap();
    assert_reads_match(&engine, &log.model_at(100));
}
