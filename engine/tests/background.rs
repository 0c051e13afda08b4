#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The background driver thread: checkpoints without explicit calls, defrag
//! that frees blocks, reclaim of expired records on the driver's clock,
//! errors counted instead of raised, and a stop that joins the thread.
//!
//! Waits poll a condition with a generous deadline (a liveness bound, not a
//! timing assertion).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aerie_engine::fault::{Faults, FaultyFs, Target};
use aerie_engine::{
    BackgroundConfig, BinSelection, Engine, EngineConfig, Ttl, Value, Write, format,
};
use common::*;

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

/// Checkpoints every 20 ms of the driver's clock, flushes every 10 ms.
fn busy_config(dir: &Path, block_size_bytes: u32) -> EngineConfig {
    let mut config = config(dir, block_size_bytes);
    config.checkpoint_interval_ms = 20;
    config.namespaces[0].flush_interval_ms = 10;
    config
}

fn fast_driver() -> BackgroundConfig {
    BackgroundConfig {
        tick_interval_ms: 5,
        ..BackgroundConfig::default()
    }
}

fn block_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(NS))
        .unwrap()
        .filter(|f| {
            let name = f.as_ref().unwrap().file_name();
            format::parse_block_file_name(&name.to_string_lossy()).is_some()
        })
        .count()
}

fn blob(i: u32, len: usize) -> aerie_engine::Command {
    put(
        digest(i),
        vec![aerie_engine::Bin::new(
            "v",
            Value::Blob {
                particle: 4,
                bytes: vec![i as u8; len],
            },
        )],
    )
}

#[test]
fn driver_makes_applied_data_durable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(busy_config(dir.path(), 64 << 10)).unwrap());
    let driver = engine.start_background(fast_driver()).unwrap();
    for i in 0..200 {
        engine
            .apply(1, u64::from(i) + 1, T0_MS, &put_int(i, i64::from(i)))
            .unwrap();
    }
    assert!(wait_until(|| engine.durable_applied_index(1) == 200));
    assert!(driver.stats().ticks > 0);
    assert!(driver.stop());
    let want = dump(&engine, T0_MS);
    drop(engine); // crash: no close

    let engine = Engine::open(config(dir.path(), 64 << 10)).unwrap();
    assert_eq!(engine.durable_applied_index(1), 200);
    assert_eq!(dump(&engine, T0_MS), want);
    assert_eq!(want.len(), 200);
}

#[test]
fn driver_defragments_and_frees_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(busy_config(dir.path(), 4096)).unwrap());
    let mut index = 0u64;
    let mut apply = |cmd| {
        index += 1;
        engine.apply(1, index, T0_MS, &cmd).unwrap();
    };
    for i in 0..300 {
        apply(blob(i, 200));
    }
    for i in (0..300).filter(|i| i % 10 != 0) {
        apply(delete(digest(i)));
    }
    engine.checkpoint().unwrap();
    let before = block_files(dir.path());
    let want = dump(&engine, T0_MS);
    assert_eq!(want.len(), 30);

    let driver = engine.start_background(fast_driver()).unwrap();
    assert!(wait_until(|| block_files(dir.path()) < before / 2));
    let stats = driver.stats();
    assert!(stats.defrag_blocks_done > 0 && stats.defrag_bytes_examined > 0);
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert!(driver.stop());
    assert_eq!(dump(&engine, T0_MS), want);
    let durable = engine.durable_applied_index(1);
    drop(engine);

    let engine = Engine::open(config(dir.path(), 4096)).unwrap();
    assert_eq!(engine.durable_applied_index(1), durable);
    assert_eq!(dump(&engine, T0_MS), want);
}

#[test]
fn driver_reclaims_expired_records_on_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(config(dir.path(), 64 << 10)).unwrap());
    for i in 0..50u32 {
        let mut write = Write::new(NS, digest(i));
        write.ttl = if i < 40 {
            Ttl::Seconds(10)
        } else {
            Ttl::NeverExpire
        };
        let cmd = aerie_engine::Command::Put(aerie_engine::Put {
            write,
            bins: vec![aerie_engine::Bin::new("v", Value::Int(1))],
        });
        engine.apply(1, u64::from(i) + 1, T0_MS, &cmd).unwrap();
    }
    let clock = Arc::new(AtomicU64::new(T0_MS + 60_000));
    let driver_clock = clock.clone();
    let driver = engine
        .start_background(BackgroundConfig {
            expiry_clock_ms: Some(Arc::new(move || driver_clock.load(Ordering::SeqCst))),
            defrag_rate_bytes_per_sec: 0,
            ..fast_driver()
        })
        .unwrap();
    assert!(wait_until(|| driver.stats().expired_reclaimed == 40));
    assert!(driver.stop());
    assert_eq!(engine.stats()[0].counters.expired_reclaimed, 40);
    assert_eq!(engine.stats()[0].tombstones, 40);
    // Reclaimed means gone for good: not visible even at a time before expiry.
    for i in 0..50u32 {
        let got = engine
            .get(NS, &digest(i), &BinSelection::None, T0_MS)
            .unwrap();
        assert_eq!(got.is_some(), i >= 40, "record {i}");
    }
}

#[test]
fn stop_and_drop_join_the_thread_and_release_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(busy_config(dir.path(), 64 << 10)).unwrap());
    let driver = engine.start_background(fast_driver()).unwrap();
    assert!(wait_until(|| driver.stats().ticks >= 3));
    assert!(driver.stop());
    let dropped = engine.start_background(fast_driver()).unwrap();
    drop(dropped);
    let engine = Arc::try_unwrap(engine).expect("no thread holds the engine");
    engine.close().unwrap();
}

#[test]
fn driver_counts_errors_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let config = EngineConfig {
        fs: Arc::new(FaultyFs::new(faults.clone())),
        ..busy_config(dir.path(), 64 << 10)
    };
    let engine = Arc::new(Engine::open(config).unwrap());
    engine.apply(1, 1, T0_MS, &put_int(1, 1)).unwrap();
    faults.aim(Target::Blocks);
    faults.set_fsync_eio(true);
    let driver = engine.start_background(fast_driver()).unwrap();
    assert!(wait_until(|| driver.stats().errors >= 3));
    let stats = driver.stats();
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("poisoned")),
        "{stats:?}"
    );
    assert!(driver.stop());
    assert!(engine.poisoned().is_some());
    assert_eq!(engine.durable_applied_index(1), 0);
}
