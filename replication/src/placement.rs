//! Placement: which members should hold each shard, and the next membership
//! change that moves a shard toward it. The shard's leader re-derives the
//! step from what it observes each round (its `ConfState` and its followers'
//! progress), so a leader that changed or restarted mid-move simply goes on.
//!
//! The rule, toward `min(replication_factor, members)` voters:
//! 1. a joint configuration is left first;
//! 2. a learner that has caught up is promoted while voters are missing;
//! 3. while voters are missing and no learner is on its way, the best-ranked
//!    member not in the configuration is added as a learner (rendezvous
//!    hashing of shard and member: shards spread evenly, and each shard's
//!    choice is stable when members come and go);
//! 4. a learner that is no longer a member is removed.
//!
//! Never below a majority by our own hand: voters are only added (through a
//! caught-up learner), never removed here (replacing dead members is the
//! self-healing issue's).

use crate::membership;
use crate::node::ShardStatus;
use raft::prelude::ConfChangeV2;

/// A learner within this many entries of the leader's commit index counts as
/// caught up (a busy shard's follower is always a little behind).
pub const CAUGHT_UP_ENTRIES: u64 = 64;

/// The cluster as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Voters wanted per shard (capped by the member count).
    pub replication_factor: usize,
    /// The cluster's members.
    pub members: Vec<u64>,
}

/// One membership change toward the placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Leave the joint configuration.
    LeaveJoint,
    /// Make this caught-up learner a voter.
    Promote(u64),
    /// Start replicating to this member.
    AddLearner(u64),
    /// Stop replicating to this learner (not a member any more).
    RemoveLearner(u64),
}

impl Step {
    /// The change to propose.
    pub fn change(&self) -> ConfChangeV2 {
        match *self {
            Step::LeaveJoint => membership::leave_joint(),
            Step::Promote(id) => membership::promote(id),
            Step::AddLearner(id) => membership::add_learner(id),
            Step::RemoveLearner(id) => membership::remove(id),
        }
    }
}

/// A stable pseudo-random rank of `member` for `shard` (splitmix64 of both).
fn rank(shard: u32, member: u64) -> u64 {
    let mut x = member ^ (u64::from(shard) << 32 | u64::from(shard));
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn caught_up(status: &ShardStatus, member: u64) -> bool {
    status
        .progress
        .iter()
        .any(|&(id, matched)| id == member && matched + CAUGHT_UP_ENTRIES >= status.commit)
}

/// The voter that should lead the shard: the best-ranked (the same
/// rendezvous rank), so leaders spread evenly over the members.
pub fn preferred_leader(status: &ShardStatus) -> Option<u64> {
    status
        .voters
        .iter()
        .copied()
        .max_by_key(|&id| rank(status.shard, id))
}

/// Whom the leader should hand the shard to, if anyone: the preferred
/// leader, once that voter has every entry the leader has. Ask only when
/// [`next_step`] has nothing to do (the configuration is complete).
pub fn leader_transfer(status: &ShardStatus, last_index: u64) -> Option<u64> {
    let preferred = preferred_leader(status)?;
    let caught_up = status
        .progress
        .iter()
        .any(|&(id, matched)| id == preferred && matched >= last_index);
    (preferred != status.leader && caught_up).then_some(preferred)
}

/// What comes before growing any group: leaving a joint configuration, then
/// dropping a learner that is no longer a member.
fn tidy_step(status: &ShardStatus, placement: &Placement) -> Option<Step> {
    if !status.voters_outgoing.is_empty() {
        return Some(Step::LeaveJoint);
    }
    status
        .learners
        .iter()
        .find(|id| !placement.members.contains(id))
        .map(|&gone| Step::RemoveLearner(gone))
}

/// The next change for `status` (the leader's view of its shard), if any.
pub fn next_step(status: &ShardStatus, placement: &Placement) -> Option<Step> {
    if let Some(step) = tidy_step(status, placement) {
        return Some(step);
    }
    let wanted = placement.replication_factor.min(placement.members.len());
    if status.voters.len() >= wanted {
        return None;
    }
    if let Some(&ready) = status.learners.iter().find(|&&id| caught_up(status, id)) {
        return Some(Step::Promote(ready));
    }
    if !status.learners.is_empty() {
        return None;
    }
    placement
        .members
        .iter()
        .filter(|id| !status.voters.contains(id))
        .max_by_key(|&&id| rank(status.shard, id))
        .map(|&id| Step::AddLearner(id))
}

/// The next change for the cluster group (`status` is its leader's view):
/// voters toward `min(replication_factor, members)` as for a shard, and
/// every other member a learner, so every member applies the metadata.
pub fn next_group_step(status: &ShardStatus, placement: &Placement) -> Option<Step> {
    if let Some(step) = tidy_step(status, placement) {
        return Some(step);
    }
    let wanted = placement.replication_factor.min(placement.members.len());
    let best_ready = status
        .learners
        .iter()
        .copied()
        .filter(|&id| caught_up(status, id))
        .max_by_key(|&id| rank(status.shard, id));
    if status.voters.len() < wanted
        && let Some(ready) = best_ready
    {
        return Some(Step::Promote(ready));
    }
    placement
        .members
        .iter()
        .find(|id| !status.voters.contains(id) && !status.learners.contains(id))
        .map(|&id| Step::AddLearner(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(voters: &[u64], learners: &[u64], progress: &[(u64, u64)]) -> ShardStatus {
        ShardStatus {
            shard: 3,
            leader: 1,
            term: 2,
            applied: 500,
            commit: 500,
            compacted: 0,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            voters_outgoing: Vec::new(),
            progress: progress.to_vec(),
        }
    }

    fn placement(rf: usize, members: &[u64]) -> Placement {
        Placement {
            replication_factor: rf,
            members: members.to_vec(),
        }
    }

    #[test]
    fn a_shard_grows_to_its_factor_one_caught_up_learner_at_a_time() {
        let p = placement(3, &[1, 2, 3, 4]);
        let Some(Step::AddLearner(first)) = next_step(&status(&[1], &[], &[]), &p) else {
            panic!("a learner should be added");
        };
        assert_ne!(first, 1);
        // Behind: wait. Caught up: promote.
        let behind = status(&[1], &[first], &[(1, 500), (first, 100)]);
        assert_eq!(next_step(&behind, &p), None);
        let ready = status(&[1], &[first], &[(1, 500), (first, 480)]);
        assert_eq!(next_step(&ready, &p), Some(Step::Promote(first)));
        let full = status(&[1, 2, 3], &[], &[]);
        assert_eq!(next_step(&full, &p), None);
    }

    #[test]
    fn leaders_move_to_the_preferred_voter_once_it_has_everything() {
        let mut s = status(&[1, 2, 3], &[], &[(1, 500), (2, 500), (3, 500)]);
        let preferred = preferred_leader(&s).unwrap();
        s.leader = preferred;
        assert_eq!(leader_transfer(&s, 500), None, "already there");
        s.leader = if preferred == 1 { 2 } else { 1 };
        assert_eq!(leader_transfer(&s, 500), Some(preferred));
        // Not while it lacks entries.
        s.progress = vec![(1, 500), (2, 500), (3, 500)];
        s.progress.retain(|(id, _)| *id != preferred);
        s.progress.push((preferred, 499));
        assert_eq!(leader_transfer(&s, 500), None);
        // Spread: over many shards each member is preferred for some.
        let mut preferred = std::collections::BTreeSet::new();
        for shard in 0..32 {
            let mut s = status(&[1, 2, 3], &[], &[]);
            s.shard = shard;
            preferred.insert(preferred_leader(&s).unwrap());
        }
        assert_eq!(preferred.len(), 3);
    }

    #[test]
    fn joint_configurations_are_left_and_strangers_removed() {
        let p = placement(3, &[1, 2, 3]);
        let mut joint = status(&[1, 2, 3], &[], &[]);
        joint.voters_outgoing = vec![1, 2, 4];
        assert_eq!(next_step(&joint, &p), Some(Step::LeaveJoint));
        let stranger = status(&[1, 2], &[9], &[]);
        assert_eq!(next_step(&stranger, &p), Some(Step::RemoveLearner(9)));
    }

    #[test]
    fn the_factor_is_capped_by_the_members_and_shards_spread() {
        assert_eq!(
            next_step(&status(&[1, 2], &[], &[]), &placement(3, &[1, 2])),
            None
        );
        let p = placement(3, &[1, 2, 3, 4, 5]);
        let mut picked = std::collections::BTreeMap::new();
        for shard in 0..64 {
            let mut s = status(&[1], &[], &[]);
            s.shard = shard;
            if let Some(Step::AddLearner(id)) = next_step(&s, &p) {
                *picked.entry(id).or_insert(0) += 1;
            }
        }
        // Every other member is picked for some shard.
        assert_eq!(picked.len(), 4, "{picked:?}");
    }

    #[test]
    fn the_cluster_group_makes_every_member_a_learner_and_promotes_to_the_factor() {
        let placement = Placement {
            replication_factor: 3,
            members: vec![1, 2, 3, 4, 5],
        };
        let step = |voters: &[u64], learners: &[u64], progress: &[(u64, u64)]| {
            next_group_step(&status(voters, learners, progress), &placement)
        };
        assert_eq!(step(&[1], &[], &[]), Some(Step::AddLearner(2)));
        assert_eq!(step(&[1], &[2, 3, 4, 5], &[]), None, "nobody caught up yet");
        assert_eq!(
            step(&[1], &[2, 3, 4, 5], &[(1, 500), (4, 499)]),
            Some(Step::Promote(4))
        );
        assert_eq!(step(&[1, 2, 4], &[3, 5], &[(3, 500), (5, 500)]), None);
        assert_eq!(step(&[1, 2, 4], &[3, 9], &[]), Some(Step::RemoveLearner(9)));
        assert_eq!(step(&[1, 2, 4], &[3], &[]), Some(Step::AddLearner(5)));
    }
}
