//! Membership changes in process: a member with no configuration joins every
//! shard as a learner (rebuilt by snapshot plus log tail), is promoted, and
//! later replaces another member in one joint change; counters stay exact,
//! the configuration survives restarts, and the shards keep a majority
//! throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_replication::membership;
use aerie_replication::transport::LocalNetwork;
use common::*;

fn running(members: &[Member]) -> Vec<&Member> {
    members.iter().filter(|m| m.node.is_some()).collect()
}

fn member(members: &[Member], id: u64) -> &Member {
    members.iter().find(|m| m.id == id).unwrap()
}

/// A running member that leads `shard` (members not in the configuration
/// yet know no leader, so the common helper's agreement check cannot be used).
fn leader(members: &[Member], shard: u32) -> u64 {
    let mut found = 0;
    eventually(WAIT, "a leader", || {
        found = running(members)
            .iter()
            .find(|m| m.node().leader(shard) == m.id)
            .map_or(0, |m| m.id);
        found != 0
    });
    found
}

/// Proposes `change` on `shard`'s leader, retrying while leadership moves.
fn propose(members: &[Member], shard: u32, change: &raft::prelude::ConfChangeV2) {
    eventually(WAIT, "a leader to take the membership change", || {
        member(members, leader(members, shard))
            .node()
            .change_membership(shard, change.clone(), WAIT)
            .is_ok()
    });
}

/// The shard's status on its current leader.
fn leader_status(members: &[Member], shard: u32) -> aerie_replication::ShardStatus {
    member(members, leader(members, shard)).node().status()[shard as usize].clone()
}

fn wait_config(members: &[Member], shard: u32, voters: &[u64], learners: &[u64]) {
    let mut want_voters = voters.to_vec();
    want_voters.sort_unstable();
    eventually(WAIT, "the configuration", || {
        let status = leader_status(members, shard);
        let mut got = status.voters.clone();
        got.sort_unstable();
        got == want_voters && status.learners == learners && status.voters_outgoing.is_empty()
    });
}

/// Adds `node` as a learner of every shard and waits until it has caught up.
fn add_learner_everywhere(members: &[Member], voters: &[u64], node: u64) {
    for shard in 0..SHARDS {
        propose(members, shard, &membership::add_learner(node));
        wait_config(members, shard, voters, &[node]);
        eventually(WAIT, "the learner to catch up", || {
            let status = leader_status(members, shard);
            let matched = status.progress.iter().find(|(id, _)| *id == node);
            matched.is_some_and(|(_, m)| *m >= status.commit)
        });
    }
}

#[test]
fn a_new_member_joins_as_learner_is_promoted_and_replaces_another() {
    let net = LocalNetwork::new(21);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = vec![
        Member::start(1, &[1, 2], dirs[0].path(), &net),
        Member::start(2, &[1, 2], dirs[1].path(), &net),
    ];
    let mut acked = vec![0i64; KEYS as usize];
    // Enough writes that the log is compacted: the learner needs a snapshot.
    let mut unknown = write(&members, 10, &mut acked);
    eventually(WAIT, "compaction", || {
        (0..SHARDS).all(|s| leader_status(&members, s).compacted > 0)
    });

    // 3 starts with no configuration, joins as a learner, is promoted.
    members.push(Member::start(3, &[], dirs[2].path(), &net));
    add_learner_everywhere(&members, &[1, 2], 3);
    for shard in 0..SHARDS {
        propose(&members, shard, &membership::promote(3));
        wait_config(&members, shard, &[1, 2, 3], &[]);
    }
    unknown += write(&members, 2, &mut acked);
    converge(&members, WAIT);
    assert_identical(&members);

    // With three voters, one down leaves a majority.
    members[0].stop(&net);
    unknown += write(&members, 2, &mut acked);
    members[0].restart(&net);
    converge(&members, WAIT);

    // 4 replaces 1 in one joint change, then the joint config is left.
    members.push(Member::start(4, &[], dirs[3].path(), &net));
    add_learner_everywhere(&members, &[1, 2, 3], 4);
    for shard in 0..SHARDS {
        propose(&members, shard, &membership::replace(4, 1));
        eventually(WAIT, "the joint configuration to be left", || {
            let status = leader_status(&members, shard);
            if !status.voters_outgoing.is_empty() {
                let _ = member(&members, leader(&members, shard))
                    .node()
                    .change_membership(shard, membership::leave_joint(), WAIT);
                return false;
            }
            let mut voters = status.voters.clone();
            voters.sort_unstable();
            voters == [2, 3, 4]
        });
    }
    members[0].stop(&net);
    unknown += write(&members, 2, &mut acked);

    // The configuration is durable: a restarted member starts from it.
    let third = members.iter().position(|m| m.id == 3).unwrap();
    members[third].stop(&net);
    members[third].restart(&net);
    for shard in 0..SHARDS {
        let mut voters = members[third].node().status()[shard as usize]
            .voters
            .clone();
        voters.sort_unstable();
        assert_eq!(voters, [2, 3, 4], "shard {shard} after a restart");
    }
    // 2 down: 3 and 4 are still a majority of [2, 3, 4].
    let second = members.iter().position(|m| m.id == 2).unwrap();
    members[second].stop(&net);
    unknown += write(&members, 2, &mut acked);
    members[second].restart(&net);
    let live: Vec<Member> = members.into_iter().filter(|m| m.id != 1).collect();
    converge(&live, WAIT);
    assert_identical(&live);
    for m in running(&live) {
        assert_counters(m, &acked, unknown);
    }
}

fn sorted_voters(members: &[Member], shard: u32) -> Vec<u64> {
    let mut voters = leader_status(members, shard).voters;
    voters.sort_unstable();
    voters
}

#[test]
fn placement_grows_every_shard_to_the_replication_factor() {
    let net = LocalNetwork::new(23);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = vec![Member::start(1, &[1], dirs[0].path(), &net)];
    let mut acked = vec![0i64; KEYS as usize];
    let mut unknown = write(&members, 4, &mut acked);
    for id in 2..=4 {
        members.push(Member::start(id, &[], dirs[id as usize - 1].path(), &net));
    }
    // Factor 3 of 4 members: every shard gets three voters, spread out.
    let placement = aerie_replication::placement::Placement {
        replication_factor: 3,
        members: vec![1, 2, 3, 4],
        leaving: Vec::new(),
        replace_after_ms: 0,
    };
    members[0].node().set_placement(placement.clone()).unwrap();
    eventually(WAIT, "every shard at the replication factor", || {
        (0..SHARDS).all(|s| {
            let status = leader_status(&members, s);
            status.voters.len() == 3 && status.learners.is_empty()
        })
    });
    let mut holders = std::collections::BTreeSet::new();
    for shard in 0..SHARDS {
        let voters = sorted_voters(&members, shard);
        assert!(voters.contains(&1), "shard {shard}: {voters:?}");
        holders.extend(voters);
    }
    assert!(
        holders.len() > 3,
        "every shard on the same three members: {holders:?}"
    );
    // Every member that holds a shard can lead it: tell them all.
    for m in &members[1..] {
        m.node().set_placement(placement.clone()).unwrap();
    }
    unknown += write(&members, 2, &mut acked);
    // The bootstrap member goes down: every shard keeps a majority.
    members[0].stop(&net);
    unknown += write(&members, 2, &mut acked);
    members[0].restart(&net);
    assert_replicas_agree(&members, &acked, unknown);
    // Member 1 is lost for good (retired): every shard it held is rebuilt
    // on the other three (a learner, then one joint change that promotes it
    // and removes member 1), with no step below a majority.
    members[0].stop(&net);
    let without = aerie_replication::placement::Placement {
        members: vec![2, 3, 4],
        ..placement
    };
    for m in &members[1..] {
        m.node().set_placement(without.clone()).unwrap();
    }
    unknown += write(&members, 2, &mut acked);
    eventually(WAIT, "every shard rebuilt off member 1", || {
        (0..SHARDS).all(|s| {
            let status = leader_status(&members, s);
            sorted_voters(&members, s) == [2, 3, 4]
                && status.learners.is_empty()
                && status.voters_outgoing.is_empty()
        })
    });
    unknown += write(&members, 2, &mut acked);
    assert_replicas_agree(&members, &acked, unknown);
}

/// Every shard's voters caught up with its leader hold the same data, and
/// every counter lies between its acknowledged and attempted increments.
fn assert_replicas_agree(members: &[Member], acked: &[i64], unknown: usize) {
    for shard in 0..SHARDS {
        let voters = sorted_voters(members, shard);
        let holding: Vec<&Member> = members
            .iter()
            .filter(|m| m.node.is_some() && voters.contains(&m.id))
            .collect();
        eventually(WAIT, "the shard's members to catch up", || {
            let target = applied(member(members, leader(members, shard)).engine(), shard);
            holding.iter().all(|m| applied(m.engine(), shard) >= target)
        });
        let first = checksums(holding[0].engine(), shard);
        for m in &holding[1..] {
            assert_eq!(
                checksums(m.engine(), shard),
                first,
                "member {} shard {shard}",
                m.id
            );
        }
        for m in &holding {
            for key in (0..KEYS).filter(|&k| shard_of(k) == shard) {
                let value = counter(m.engine(), key);
                let floor = acked[key as usize];
                assert!(value >= floor && value <= floor + unknown as i64);
            }
        }
    }
}
