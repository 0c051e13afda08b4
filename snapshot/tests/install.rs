//! A snapshot install commits once across namespaces: interrupted by an
//! injected disk fault at every write and fsync it makes (ENOSPC, EIO on
//! fsync, short and torn writes, aimed at blocks, `index.ckpt`, `MANIFEST`
//! and everything), the engine holds exactly the old or exactly the new
//! state of both namespaces, record by record, before and after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use aerie_engine::fault::{Faults, FaultyFs, Target};
use aerie_engine::{Engine, EngineConfig};
use aerie_snapshot::{SnapshotReader, install};
use common::*;

/// Block files on disk the engine does not know of (a staged block left
/// behind).
fn stray_blocks(engine: &Engine, dir: &Path) -> Vec<String> {
    let mut stray = Vec::new();
    for stats in engine.stats() {
        for entry in std::fs::read_dir(dir.join(&stats.name)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let id = aerie_engine::format::parse_block_file_name(&name);
            if id.is_some_and(|id| !stats.blocks.iter().any(|b| b.id == id)) {
                stray.push(format!("{}/{name}", stats.name));
            }
        }
    }
    stray
}

struct Fixture {
    _tmp: tempfile::TempDir,
    old_dir: std::path::PathBuf,
    snapshot: std::path::PathBuf,
    old: State,
    new: State,
}

/// An engine directory with both namespaces filled and checkpointed, and a
/// snapshot of the shard's partitions of another engine with other data.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let old_dir = tmp.path().join("old");
    let old = old_engine_dir(&old_dir);
    let (snapshot, new) = shard_snapshot(tmp.path(), &old, 2, 1300);
    Fixture {
        _tmp: tmp,
        old_dir,
        snapshot,
        old,
        new,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Enospc,
    FsyncEio,
    Short,
    Torn,
}

fn arm(faults: &Faults, fault: Fault) {
    match fault {
        Fault::Enospc => faults.set_enospc(true),
        Fault::FsyncEio => faults.set_fsync_eio(true),
        Fault::Short => faults.short_next_write(10),
        Fault::Torn => faults.tear_next_write(10),
    }
}

/// One install with `fault` aimed at `target` after `pass` operations; checks
/// the engine before and after a reopen. Returns false once the install ran
/// to its end without meeting the fault.
fn interrupted_install(fx: &Fixture, target: Target, fault: Fault, pass: u64) -> bool {
    let what = format!("{fault:?} on {target:?} after {pass} operations");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("engine");
    copy_dir(&fx.old_dir, &dir);
    let faults = Faults::new();
    let engine = Engine::open(EngineConfig {
        fs: Arc::new(FaultyFs::new(faults.clone())),
        ..small_blocks(&dir)
    })
    .unwrap();
    faults.aim(target);
    faults.pass_next(pass);
    arm(&faults, fault);
    let reader = SnapshotReader::open(&fx.snapshot).unwrap();
    let result = install(&engine, &reader, |_| {});
    let met = faults.injected() > 0;
    faults.heal();
    let sync_failed = matches!(
        &result,
        Err(aerie_snapshot::Error::Engine(
            aerie_engine::Error::SyncFailed { .. }
        ))
    );
    match &result {
        // A torn block write is found when the record is read, never served.
        Ok(_) if fault == Fault::Torn => match read_state(&engine) {
            Ok(state) => assert_eq!(state, fx.new, "{what}: in memory"),
            Err(e) => assert!(matches!(e, aerie_engine::Error::Corruption { .. }), "{e}"),
        },
        Ok(_) => assert_eq!(state_of(&engine), fx.new, "{what}: in memory"),
        Err(e) => {
            assert_eq!(state_of(&engine), fx.old, "{what}: {e}: in memory");
            assert_eq!(engine.poisoned().is_some(), sync_failed, "{what}: {e}");
            if !sync_failed {
                assert_eq!(stray_blocks(&engine, &dir), Vec::<String>::new(), "{what}");
            }
        }
    }
    drop(engine);
    let reopened = Engine::open(small_blocks(&dir));
    match (&result, reopened) {
        // A torn write is a disk that lied: the next open may refuse, naming
        // the damaged file, but never serves a mix.
        (Ok(_), Err(aerie_engine::Error::Corruption { .. })) if fault == Fault::Torn => {}
        (Ok(_), reopened) => assert_eq!(state_of(&reopened.unwrap()), fx.new, "{what}"),
        (Err(_), reopened) if sync_failed => {
            let got = state_of(&reopened.unwrap());
            assert!(
                got == fx.old || got == fx.new,
                "{what}: a mix after a reopen"
            );
        }
        (Err(e), reopened) => {
            let engine = reopened.unwrap();
            assert_eq!(state_of(&engine), fx.old, "{what}: {e}: after a reopen");
            // And the same install then goes through.
            install(&engine, &reader, |_| {}).unwrap();
            assert_eq!(state_of(&engine), fx.new, "{what}: retried");
        }
    }
    met
}

fn sweep(target: Target, fault: Fault) {
    let fx = fixture();
    let mut pass = 0;
    while interrupted_install(&fx, target, fault, pass) {
        pass += 1;
        assert!(pass < 500, "{fault:?} on {target:?}: no end");
    }
    assert!(pass > 0, "{fault:?} on {target:?} never struck");
    eprintln!("{fault:?} on {target:?}: interrupted at each of {pass} operations");
}

#[test]
fn enospc_at_every_step_leaves_old_or_new() {
    for target in [
        Target::Blocks,
        Target::IndexCheckpoint,
        Target::Manifest,
        Target::Any,
    ] {
        sweep(target, Fault::Enospc);
    }
}

#[test]
fn short_writes_at_every_step_leave_old_or_new() {
    for target in [
        Target::Blocks,
        Target::IndexCheckpoint,
        Target::Manifest,
        Target::Any,
    ] {
        sweep(target, Fault::Short);
    }
}

#[test]
fn fsync_failure_at_every_step_leaves_old_or_new() {
    for target in [
        Target::Blocks,
        Target::IndexCheckpoint,
        Target::Manifest,
        Target::Any,
    ] {
        sweep(target, Fault::FsyncEio);
    }
}

#[test]
fn torn_writes_at_every_step_never_leave_a_mix() {
    for target in [
        Target::Blocks,
        Target::IndexCheckpoint,
        Target::Manifest,
        Target::Any,
    ] {
        sweep(target, Fault::Torn);
    }
}

#[test]
fn install_replaces_both_namespaces_and_survives_fast_and_cold_starts() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("engine");
    copy_dir(&fx.old_dir, &dir);
    let engine = Engine::open(small_blocks(&dir)).unwrap();
    let reader = SnapshotReader::open(&fx.snapshot).unwrap();
    let installed = install(&engine, &reader, |_| {}).unwrap();
    assert_eq!(installed, reader.footer().records);
    assert_eq!(state_of(&engine), fx.new);
    drop(engine);
    let engine = Engine::open(small_blocks(&dir)).unwrap();
    assert!(!engine.recovery_report().namespaces["test"].cold_start);
    assert_eq!(state_of(&engine), fx.new, "fast start");
    drop(engine);
    for ns in NAMESPACES {
        std::fs::remove_file(dir.join(ns).join("index.ckpt")).unwrap();
    }
    let engine = Engine::open(small_blocks(&dir)).unwrap();
    assert!(engine.recovery_report().namespaces["test"].cold_start);
    assert_eq!(state_of(&engine), fx.new, "cold start");
}
