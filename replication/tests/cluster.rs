//! Three members in one process over the fault-injecting transport: election,
//! replication, leader loss, a follower rebuilt by snapshot plus log tail, a
//! wiped member rejoining, and a history check of what clients saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aerie_replication::ReadConsistency;
use aerie_replication::transport::{Faults, LocalNetwork};
use common::*;

fn cluster(net: &Arc<LocalNetwork>, dirs: &[tempfile::TempDir]) -> Vec<Member> {
    VOTERS
        .iter()
        .zip(dirs)
        .map(|(&id, dir)| Member::start(id, &VOTERS, dir.path(), net))
        .collect()
}

#[test]
fn replicates_survives_leader_loss_and_rebuilds_a_cut_off_follower() {
    let net = LocalNetwork::new(7);
    let dirs = dirs();
    let mut members = cluster(&net, &dirs);
    let mut acked = vec![0i64; KEYS as usize];

    // Election and replication, with drops and reordering.
    net.set_faults(Faults {
        drop_ratio: 0.05,
        max_delay_ms: 3,
        ..Faults::default()
    });
    let mut unknown = write(&members, 4, &mut acked);
    net.set_faults(Faults::default());
    converge(&members, WAIT);
    assert_identical(&members);

    // Leader loss: stop whoever leads shard 0; a new leader takes over.
    let old = leader_of(&members, 0);
    let old_index = members.iter().position(|m| m.id == old).unwrap();
    members[old_index].stop(&net);
    let new = leader_of(&members, 0);
    assert_ne!(new, old);
    unknown += write(&members, 3, &mut acked);
    for m in members.iter().filter(|m| m.node.is_some()) {
        converge(&members, WAIT);
        assert_counters(m, &acked, unknown);
    }
    members[old_index].restart(&net);
    converge(&members, WAIT);
    assert_identical(&members);

    // A follower cut off while the leaders write, snapshot and compact past it.
    let cut = follower_of_all(&members);
    let cut_index = members.iter().position(|m| m.id == cut).unwrap();
    let others: Vec<u64> = VOTERS.iter().copied().filter(|&id| id != cut).collect();
    net.isolate(cut, &others);
    let before: Vec<u64> = (0..SHARDS)
        .map(|s| applied(members[cut_index].engine(), s))
        .collect();
    unknown += write(&members, 12, &mut acked);
    let compacted_past = |members: &[Member]| {
        (0..SHARDS).all(|s| {
            members
                .iter()
                .filter(|m| m.id != cut)
                .all(|m| m.node().status()[s as usize].compacted > before[s as usize])
        })
    };
    eventually(
        WAIT,
        "the leaders to compact past the cut-off follower",
        || compacted_past(&members),
    );
    net.heal();
    converge(&members, WAIT);
    assert_identical(&members);
    let rebuilt = members[cut_index].node().status();
    assert!(
        (0..SHARDS as usize).all(|s| rebuilt[s].compacted > before[s]),
        "the follower caught up without a snapshot install: {rebuilt:?}, before {before:?}"
    );
    for m in &members {
        assert_counters(m, &acked, unknown);
    }
}

#[test]
fn a_wiped_member_rejoins_from_a_snapshot_and_the_log_tail() {
    let net = LocalNetwork::new(11);
    let dirs = dirs();
    let mut members = cluster(&net, &dirs);
    let mut acked = vec![0i64; KEYS as usize];
    let mut unknown = write(&members, 10, &mut acked);
    converge(&members, WAIT);
    // Wait for compaction so the log alone cannot rebuild the member.
    eventually(WAIT, "compaction", || {
        members
            .iter()
            .all(|m| m.node().status().iter().all(|s| s.compacted > 0))
    });

    let wiped = 2;
    members[wiped].stop(&net);
    std::fs::remove_dir_all(&members[wiped].dir).unwrap();
    std::fs::create_dir_all(&members[wiped].dir).unwrap();
    unknown += write(&members, 2, &mut acked);
    members[wiped].restart(&net);
    unknown += write(&members, 2, &mut acked);
    converge(&members, WAIT);
    assert_identical(&members);
    assert_counters(&members[wiped], &acked, unknown);
}

#[test]
fn history_of_concurrent_clients_loses_no_acknowledged_write_and_reads_never_go_back() {
    let net = LocalNetwork::new(23);
    let dirs = dirs();
    let members = Arc::new(std::sync::Mutex::new(cluster(&net, &dirs)));
    for shard in 0..SHARDS {
        leader_of(&members.lock().unwrap(), shard);
    }
    net.set_faults(Faults {
        drop_ratio: 0.02,
        max_delay_ms: 2,
        ..Faults::default()
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let members = members.clone();
            std::thread::spawn(move || run_client(client, &members, start))
        })
        .collect();
    // Halfway, the leader of shard 0 steps down (its member restarts).
    std::thread::sleep(Duration::from_millis(400));
    {
        let mut guard = members.lock().unwrap();
        let leader = guard.iter().position(|m| m.node().leader(0) == m.id);
        if let Some(i) = leader {
            guard[i].stop(&net);
            guard[i].restart(&net);
        }
    }
    let history: Vec<Event> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    net.set_faults(Faults::default());
    let guard = members.lock().unwrap();
    converge(&guard, WAIT);
    check_history(&history, &guard);
}

const OPS_PER_CLIENT: usize = 150;

fn run_client(
    client: usize,
    members: &std::sync::Mutex<Vec<Member>>,
    start: Instant,
) -> Vec<Event> {
    let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    let mut events = Vec::with_capacity(OPS_PER_CLIENT);
    for i in 0..OPS_PER_CLIENT {
        let key = ((client * 7 + i) % 8) as u32;
        let read = i % 3 == 2;
        let invoke = Instant::now();
        let outcome = {
            let guard = members.lock().unwrap();
            if read {
                read_counter(&guard, key)
            } else {
                incr_anywhere(&guard, key, Duration::from_secs(5))
            }
        };
        events.push(Event {
            client,
            key,
            op: if read { EventOp::Read } else { EventOp::Incr },
            invoke_ns: ns(invoke),
            complete_ns: ns(Instant::now()),
            outcome,
        });
    }
    events
}

fn read_counter(members: &[Member], key: u32) -> EventOutcome {
    let shard = shard_of(key);
    let Some(leader) = members
        .iter()
        .filter(|m| m.node.is_some())
        .find(|m| m.node().leader(shard) == m.id)
    else {
        return EventOutcome::Failed;
    };
    match leader
        .node()
        .read_barrier(shard, ReadConsistency::Linearizable, Duration::from_secs(2))
    {
        Ok(()) => EventOutcome::Ok(counter(leader.engine(), key)),
        Err(_) => EventOutcome::Failed,
    }
}

/// Every acknowledged increment is in the final counters; a read that began
/// after another read of the same key completed never sees a smaller value;
/// a read never sees more increments than were invoked before it completed.
fn check_history(history: &[Event], members: &[Member]) {
    let acked_reads = history
        .iter()
        .filter(|e| e.op == EventOp::Read && matches!(e.outcome, EventOutcome::Ok(_)))
        .count();
    assert!(acked_reads > 20, "only {acked_reads} reads succeeded");
    for key in 0..8u32 {
        let of_key: Vec<&Event> = history.iter().filter(|e| e.key == key).collect();
        let acked = of_key
            .iter()
            .filter(|e| e.op == EventOp::Incr && e.outcome == EventOutcome::Ok(1))
            .count() as i64;
        let unknown = of_key
            .iter()
            .filter(|e| e.op == EventOp::Incr && e.outcome == EventOutcome::Unknown)
            .count() as i64;
        for m in members {
            let value = counter(m.engine(), key);
            assert!(
                value >= acked && value <= acked + unknown,
                "key {key} member {}: {value} vs acked {acked} (+{unknown})",
                m.id
            );
        }
        let reads: Vec<(&Event, i64)> = of_key
            .iter()
            .filter_map(|e| match (e.op, e.outcome) {
                (EventOp::Read, EventOutcome::Ok(v)) => Some((*e, v)),
                _ => None,
            })
            .collect();
        for (a, va) in &reads {
            for (b, vb) in &reads {
                if b.invoke_ns > a.complete_ns {
                    assert!(
                        vb >= va,
                        "key {key}: a read saw {vb} after an earlier read saw {va}"
                    );
                }
            }
            let invoked_before = of_key
                .iter()
                .filter(|e| e.op == EventOp::Incr && e.invoke_ns < a.complete_ns)
                .count() as i64;
            assert!(
                *va <= invoked_before,
                "key {key}: read {va} with only {invoked_before} increments invoked"
            );
        }
    }
}

#[test]
fn a_follower_whose_snapshot_install_fails_keeps_its_state_and_retries() {
    let net = LocalNetwork::new(13);
    let dirs = dirs();
    let members = cluster(&net, &dirs);
    let mut acked = vec![0i64; KEYS as usize];
    let mut unknown = write(&members, 2, &mut acked);
    converge(&members, WAIT);
    let cut = follower_of_all(&members);
    let cut_index = members.iter().position(|m| m.id == cut).unwrap();
    let others: Vec<u64> = VOTERS.iter().copied().filter(|&id| id != cut).collect();
    net.isolate(cut, &others);
    let before: Vec<Vec<aerie_engine::PartitionSummary>> = (0..SHARDS)
        .map(|s| checksums(members[cut_index].engine(), s))
        .collect();
    unknown += write(&members, 12, &mut acked);
    eventually(WAIT, "the leaders to compact past the follower", || {
        (0..SHARDS).all(|s| {
            members.iter().filter(|m| m.id != cut).all(|m| {
                m.node().status()[s as usize].compacted
                    > members[cut_index].node().status()[s as usize].applied
            })
        })
    });
    // The follower cannot store a fetched file: its snapshot directory is a
    // plain file now. Every install fails.
    let snapshots = members[cut_index].dir.join("snapshots");
    let aside = members[cut_index].dir.join("snapshots-aside");
    std::fs::rename(&snapshots, &aside).unwrap();
    std::fs::write(&snapshots, b"not a directory").unwrap();
    net.heal();
    std::thread::sleep(Duration::from_secs(6));
    for s in 0..SHARDS {
        assert_eq!(
            checksums(members[cut_index].engine(), s),
            before[s as usize],
            "shard {s}: a failed install changed the engine"
        );
    }
    // The directory comes back: the retried install succeeds.
    std::fs::remove_file(&snapshots).unwrap();
    std::fs::rename(&aside, &snapshots).unwrap();
    converge(&members, WAIT);
    assert_identical(&members);
    for m in &members {
        assert_counters(m, &acked, unknown);
    }
}

#[test]
fn a_copy_that_differs_silently_is_found_by_a_check_and_rebuilt() {
    let net = LocalNetwork::new(11);
    let dirs = dirs();
    let mut members: Vec<Member> = VOTERS
        .iter()
        .zip(&dirs)
        .map(|(&id, dir)| Member::new(id, &VOTERS, dir.path()))
        .collect();
    for m in &mut members {
        m.tune = |config| config.consistency_check_interval_ms = 300;
        m.restart(&net);
    }
    let mut acked = vec![0i64; KEYS as usize];
    let unknown = write(&members, 3, &mut acked);
    converge(&members, WAIT);

    // One follower's engine changes a record outside the log (a bug, a
    // bad sector the CRC missed): every record still reads cleanly there.
    let victim = follower_of_all(&members);
    let victim = members.iter().find(|m| m.id == victim).unwrap();
    let bogus = aerie_engine::Command::Put(aerie_engine::Put {
        write: aerie_engine::Write::new(NS, digest(0)),
        bins: vec![aerie_engine::Bin::new("n", aerie_engine::Value::Int(-7))],
    });
    let stray_log = 999;
    victim
        .engine()
        .apply(stray_log, 1, aerie_replication::now_ms(), &bogus)
        .unwrap();
    assert_eq!(counter(victim.engine(), 0), -7);

    // A check finds the copy in the minority; it is rebuilt from a snapshot.
    eventually(WAIT, "the differing copy to be rebuilt", || {
        victim.node().damage().counters().rebuilds >= 1
    });
    let healthy = members.iter().find(|m| m.id != victim.id).unwrap();
    assert!(healthy.node().damage().counters().mismatches >= 1);
    assert_eq!(healthy.node().damage().counters().rebuilds, 0);
    assert!(victim.node().damage().damaged().is_empty());
    converge(&members, WAIT);
    assert_identical(&members);
    for m in &members {
        assert_counters(m, &acked, unknown);
    }
}
