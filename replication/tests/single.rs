//! One member: every write through propose/apply; restarts lose nothing
//! acknowledged and apply nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use aerie_engine::{Bin, Command, Error as EngineError, ExistsPolicy, Put, Value, Write};
use aerie_replication::transport::LocalNetwork;
use aerie_replication::{Error, ReadConsistency};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn commands_go_through_raft_and_survive_restarts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new(1);
    let mut member = Member::start(1, &[1], dir.path(), &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&member), shard);
    }
    let mut expected = vec![0i64; 40];
    for round in 0..3 {
        for i in 0..400u32 {
            let key = i % 40;
            let outcome = member
                .node()
                .propose_wait(shard_of(key), incr(key, 1), WAIT)
                .unwrap();
            expected[key as usize] += 1;
            assert!(outcome.generation > 0);
        }
        // Record errors come back as the engine's error, applied in order.
        let mut write = Write::new(NS, digest(0));
        write.exists = ExistsPolicy::CreateOnly;
        let put = Command::Put(Put {
            write,
            bins: vec![Bin::new("x", Value::Int(1))],
        });
        let err = member
            .node()
            .propose_wait(shard_of(0), put, WAIT)
            .unwrap_err();
        assert!(
            matches!(err, Error::Engine(EngineError::RecordExists)),
            "{err}"
        );
        for key in 0..40u32 {
            member
                .node()
                .read_barrier(shard_of(key), ReadConsistency::Linearizable, WAIT)
                .unwrap();
            assert_eq!(
                counter(member.engine(), key),
                expected[key as usize],
                "round {round} key {key}"
            );
        }
        // Restart: what the engine had not checkpointed is replayed from the
        // WAL, exactly once (the counters would be off otherwise).
        member.stop(&net);
        member.restart(&net);
        for shard in 0..SHARDS {
            leader_of(std::slice::from_ref(&member), shard);
        }
        for key in 0..40u32 {
            eventually(WAIT, "replay", || {
                counter(member.engine(), key) == expected[key as usize]
            });
        }
    }
    // Snapshots every 50 entries and engine checkpoints let the log be
    // compacted behind them.
    eventually(WAIT, "log compaction", || {
        member.node().status().iter().all(|s| s.compacted > 0)
    });
    member.stop(&net);
    member.restart(&net);
    for key in 0..40u32 {
        eventually(WAIT, "state after compaction", || {
            counter(member.engine(), key) == expected[key as usize]
        });
    }
}

#[test]
fn a_follower_refuses_proposals_and_overload_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new(2);
    // Voters 1 and 2, but only 1 runs: no quorum, no leader.
    let member = Member::start(1, &[1, 2], dir.path(), &net);
    std::thread::sleep(Duration::from_millis(300));
    let err = member.node().propose_wait(0, incr(1, 1), WAIT).unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    let err = member
        .node()
        .read_barrier(0, ReadConsistency::Linearizable, WAIT)
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    member
        .node()
        .read_barrier(0, ReadConsistency::Relaxed, WAIT)
        .unwrap();
}

#[test]
fn a_node_starts_from_an_engine_restored_from_its_snapshots() {
    let source = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new(3);
    let mut member = Member::start(1, &[1], source.path(), &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&member), shard);
    }
    for i in 0..600u32 {
        let key = i % 16;
        member
            .node()
            .propose_wait(shard_of(key), incr(key, 1), WAIT)
            .unwrap();
    }
    // Wait for every shard's snapshot to cover all of it, then stop.
    let applied_now: Vec<u64> = (0..SHARDS).map(|s| applied(member.engine(), s)).collect();
    let snapshots = member.dir.join("snapshots");
    let covered = || {
        let catalog = aerie_snapshot::Catalog::list(&snapshots).unwrap();
        (0..SHARDS).all(|s| {
            catalog
                .entries
                .iter()
                .any(|e| e.header.shard_id == s && e.header.index >= applied_now[s as usize])
        })
    };
    // A few more writes per shard make the apply loops take snapshots at
    // the final index.
    eventually(WAIT, "snapshots", || {
        if !covered() {
            for key in 0..16 {
                member
                    .node()
                    .propose_wait(shard_of(key), incr(key, 1), WAIT)
                    .unwrap();
            }
        }
        covered()
    });
    member.stop(&net);

    // What `aerie restore` builds: the newest snapshot of each shard installed
    // into a fresh engine, the files beside it, and no raft log at all.
    let restored = tempfile::tempdir().unwrap();
    let engine = aerie_engine::Engine::open(engine_config(restored.path())).unwrap();
    let catalog = aerie_snapshot::Catalog::list(&snapshots).unwrap();
    let target = restored.path().join("snapshots");
    std::fs::create_dir_all(&target).unwrap();
    for (_, entries) in catalog.by_shard() {
        let newest = entries.last().unwrap();
        let reader = aerie_snapshot::SnapshotReader::open(&newest.path).unwrap();
        aerie_snapshot::install(&engine, &reader, |_| {}).unwrap();
        std::fs::copy(&newest.path, target.join(newest.path.file_name().unwrap())).unwrap();
    }
    drop(engine);
    let mut restored_member = Member::start(1, &[1], restored.path(), &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&restored_member), shard);
    }
    let before: Vec<i64> = (0..16)
        .map(|k| counter(restored_member.engine(), k))
        .collect();
    for key in 0..16u32 {
        restored_member
            .node()
            .propose_wait(shard_of(key), incr(key, 1), WAIT)
            .unwrap();
        assert_eq!(
            counter(restored_member.engine(), key),
            before[key as usize] + 1,
            "key {key}"
        );
        // Every key had at least its 600 / 16 increments snapshotted.
        assert!(
            before[key as usize] >= 600 / 16,
            "key {key}: {}",
            before[key as usize]
        );
    }
    restored_member.stop(&net);
}

#[test]
fn a_command_past_the_wal_entry_limit_is_refused_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new(1);
    let member = Member::start(1, &[1], dir.path(), &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&member), shard);
    }
    // The test WAL takes entries of 64 KiB at most.
    let huge = Command::Put(Put {
        write: Write::new(NS, digest(1)),
        bins: vec![Bin::new("v", Value::String(vec![b'x'; 128 << 10]))],
    });
    let err = member
        .node()
        .propose_wait(shard_of(1), huge, WAIT)
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    // Nothing stopped: the same shard and the others take writes and reads.
    for key in 0..16u32 {
        member
            .node()
            .propose_wait(shard_of(key), incr(key, 1), WAIT)
            .unwrap();
        member
            .node()
            .read_barrier(shard_of(key), ReadConsistency::Linearizable, WAIT)
            .unwrap();
        assert_eq!(counter(member.engine(), key), 1);
    }
}
