//! Placement: which members should hold each shard, and the next membership
//! change that moves a shard toward it. The shard's leader re-derives the
//! step from what it observes each round (its `ConfState` and its followers'
//! progress), so a leader that changed or restarted mid-move simply goes on.
//!
//! A voter that is no longer placeable (retired, or leaving at an
//! operator's request) is *gone*. The rule, toward
//! `min(replication_factor, placeable members)` voters, none of them gone:
//! 1. a joint configuration is left first;
//! 2. a learner that is not placeable is removed;
//! 3. a caught-up learner replaces a gone voter (one joint change that adds
//!    it and removes the old one), or is promoted while voters are missing;
//! 4. a gone voter the shard has enough voters without is removed;
//! 5. while voters are missing and no learner is on its way, the best-ranked
//!    placeable member not in the configuration is added as a learner
//!    (rendezvous hashing of shard and member: shards spread evenly, and
//!    each shard's choice is stable when members come and go).
//!
//! Never below a majority by our own hand: a voter is removed only once
//! the voters that stay are as many as the shard wants (or in the same
//! joint change that promotes its replacement), and a leader that is gone
//! hands its leadership over before anything else ([`leader_transfer`]).

use crate::membership;
use crate::node::ShardStatus;
use raft::prelude::ConfChangeV2;

/// A learner within this many entries of the leader's commit index counts as
/// caught up (a busy shard's follower is always a little behind).
pub const CAUGHT_UP_ENTRIES: u64 = 64;

/// The cluster as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Voters wanted per shard (capped by the placeable member count).
    pub replication_factor: usize,
    /// The cluster's members, ascending.
    pub members: Vec<u64>,
    /// Members being removed (their replicas move off), ascending.
    pub leaving: Vec<u64>,
    /// A member unheard of for this long is retired when the others can
    /// hold every shard's factor (0 = never): [`dead_to_retire`].
    pub replace_after_ms: u64,
}

impl Placement {
    /// Whether `id` should hold replicas: a member not leaving.
    pub fn holds(&self, id: u64) -> bool {
        self.members.binary_search(&id).is_ok() && self.leaving.binary_search(&id).is_err()
    }

    /// Voters wanted per shard: min(factor, placeable members), at least 1.
    pub fn wanted(&self) -> usize {
        let placeable = self.members.iter().filter(|&&id| self.holds(id)).count();
        self.replication_factor.min(placeable).max(1)
    }
}

/// One membership change toward the placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Leave the joint configuration.
    LeaveJoint,
    /// Make this caught-up learner a voter.
    Promote(u64),
    /// Make caught-up learner `new` a voter in place of gone voter `old`.
    Replace { new: u64, old: u64 },
    /// Start replicating to this member.
    AddLearner(u64),
    /// Stop replicating to this learner or gone voter.
    Remove(u64),
}

impl Step {
    /// The change to propose.
    pub fn change(&self) -> ConfChangeV2 {
        match *self {
            Step::LeaveJoint => membership::leave_joint(),
            Step::Promote(id) => membership::promote(id),
            Step::Replace { new, old } => membership::replace(new, old),
            Step::AddLearner(id) => membership::add_learner(id),
            Step::Remove(id) => membership::remove(id),
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

/// The voter that should lead the shard: the best-ranked placeable one
/// (the same rendezvous rank), so leaders spread evenly over the members.
pub fn preferred_leader(status: &ShardStatus, placement: &Placement) -> Option<u64> {
    status
        .voters
        .iter()
        .copied()
        .filter(|&id| placement.holds(id))
        .max_by_key(|&id| rank(status.shard, id))
}

/// Whom the leader should hand the shard to, if anyone: the preferred
/// leader, once that voter has every entry the leader has. Ask only when
/// [`next_step`] has nothing to do, or the leader itself is gone.
///
/// Not while a learner is still catching up: a new leader would start its
/// copy over, taking a snapshot of its own (seen in the rebuild benchmark:
/// a second at 125k records). Once the learner is caught up its move
/// completes, or the leader hands over if it is the voter to replace.
pub fn leader_transfer(
    status: &ShardStatus,
    placement: &Placement,
    last_index: u64,
) -> Option<u64> {
    if status.learners.iter().any(|&id| !caught_up(status, id)) {
        return None;
    }
    let preferred = preferred_leader(status, placement)?;
    let caught_up = status
        .progress
        .iter()
        .any(|&(id, matched)| id == preferred && matched >= last_index);
    (preferred != status.leader && caught_up).then_some(preferred)
}

/// The member to retire as dead, if one is: silent for at least
/// `replace_after_ms` by `silent_ms` (the cluster group leader's view:
/// every member answers its heartbeats), while the members heard from
/// within `live_ms` can hold `min(replication_factor, members)` voters
/// without it. One at a time: the next is judged once this one is out.
pub fn dead_to_retire(
    placement: &Placement,
    me: u64,
    silent_ms: impl Fn(u64) -> u64,
    live_ms: u64,
) -> Option<u64> {
    if placement.replace_after_ms == 0 {
        return None;
    }
    let live = placement
        .members
        .iter()
        .filter(|&&id| id == me || silent_ms(id) < live_ms)
        .count();
    let wanted = placement.replication_factor.min(placement.members.len());
    placement
        .members
        .iter()
        .copied()
        .filter(|&id| id != me && silent_ms(id) >= placement.replace_after_ms)
        .find(|_| live >= wanted)
}

/// What comes before growing any group: leaving a joint configuration, then
/// dropping a learner that `keep` says no.
fn tidy_step(status: &ShardStatus, keep: impl Fn(u64) -> bool) -> Option<Step> {
    if !status.voters_outgoing.is_empty() {
        return Some(Step::LeaveJoint);
    }
    status
        .learners
        .iter()
        .find(|&&id| !keep(id))
        .map(|&gone| Step::Remove(gone))
}

/// Replacing, promoting and removing voters (rules 3 and 4).
fn voter_step(status: &ShardStatus, placement: &Placement) -> Option<Step> {
    let wanted = placement.wanted();
    let gone = status
        .voters
        .iter()
        .copied()
        .find(|&id| !placement.holds(id));
    let ready = status
        .learners
        .iter()
        .copied()
        .filter(|&id| placement.holds(id) && caught_up(status, id))
        .max_by_key(|&id| rank(status.shard, id));
    if let Some(new) = ready {
        if let Some(old) = gone {
            return Some(Step::Replace { new, old });
        }
        if status.voters.len() < wanted {
            return Some(Step::Promote(new));
        }
    }
    let kept = status
        .voters
        .iter()
        .filter(|&&id| placement.holds(id))
        .count();
    match gone {
        Some(old) if kept >= wanted => Some(Step::Remove(old)),
        _ => None,
    }
}

/// Whether the shard lacks placeable voters (a learner is wanted).
fn short_of_voters(status: &ShardStatus, placement: &Placement) -> bool {
    let kept = status
        .voters
        .iter()
        .filter(|&&id| placement.holds(id))
        .count();
    kept < placement.wanted()
}

/// The voters the shard should end with: the `wanted` best-ranked
/// placeable members.
fn ideal_voters(status: &ShardStatus, placement: &Placement) -> Vec<u64> {
    let mut ranked: Vec<u64> = placement
        .members
        .iter()
        .copied()
        .filter(|&id| placement.holds(id))
        .collect();
    ranked.sort_by_key(|&id| std::cmp::Reverse(rank(status.shard, id)));
    ranked.truncate(placement.wanted());
    ranked
}

/// Rule 6, rebalancing a shard at its factor toward its ideal voters (a
/// member that joined takes its share): the best-ranked missing member is
/// added as a learner (only when `may_start_move`: the caller moves one
/// shard at a time), then replaces the worst-ranked voter outside the
/// ideal set in one joint change. The leader is never the one replaced:
/// it hands over first ([`leader_transfer`] prefers the best-ranked voter).
fn rebalance_step(
    status: &ShardStatus,
    placement: &Placement,
    may_start_move: bool,
) -> Option<Step> {
    let ideal = ideal_voters(status, placement);
    let incoming = ideal
        .iter()
        .copied()
        .find(|id| !status.voters.contains(id))?;
    let old = status
        .voters
        .iter()
        .copied()
        .filter(|id| !ideal.contains(id))
        .min_by_key(|&id| rank(status.shard, id))?;
    if old == status.leader {
        return None;
    }
    if status.learners.contains(&incoming) {
        return caught_up(status, incoming).then_some(Step::Replace { new: incoming, old });
    }
    (may_start_move && status.learners.is_empty()).then_some(Step::AddLearner(incoming))
}

/// The next change for `status` (the leader's view of its shard), if any;
/// `may_start_move` allows a rebalancing move to begin.
pub fn next_step(
    status: &ShardStatus,
    placement: &Placement,
    may_start_move: bool,
) -> Option<Step> {
    if let Some(step) =
        tidy_step(status, |id| placement.holds(id)).or_else(|| voter_step(status, placement))
    {
        return Some(step);
    }
    if !short_of_voters(status, placement) {
        return rebalance_step(status, placement, may_start_move);
    }
    if !status.learners.is_empty() {
        return None;
    }
    placement
        .members
        .iter()
        .filter(|&&id| placement.holds(id) && !status.voters.contains(&id))
        .max_by_key(|&&id| rank(status.shard, id))
        .map(|&id| Step::AddLearner(id))
}

/// The next change for the cluster group (`status` is its leader's view):
/// voters toward `min(replication_factor, members)` as for a shard, and
/// every other member (a leaving one too, until it is retired) a learner,
/// so every member applies the metadata.
pub fn next_group_step(status: &ShardStatus, placement: &Placement) -> Option<Step> {
    let member = |id: u64| placement.members.binary_search(&id).is_ok();
    if let Some(step) = tidy_step(status, member).or_else(|| voter_step(status, placement)) {
        return Some(step);
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

    fn next_step_for_test(status: &ShardStatus, placement: &Placement) -> Option<Step> {
        next_step(status, placement, true)
    }

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
            leaving: Vec::new(),
            replace_after_ms: 0,
        }
    }

    #[test]
    fn a_shard_grows_to_its_factor_one_caught_up_learner_at_a_time() {
        let p = placement(3, &[1, 2, 3, 4]);
        let Some(Step::AddLearner(first)) = next_step_for_test(&status(&[1], &[], &[]), &p) else {
            panic!("a learner should be added");
        };
        assert_ne!(first, 1);
        // Behind: wait. Caught up: promote.
        let behind = status(&[1], &[first], &[(1, 500), (first, 100)]);
        assert_eq!(next_step_for_test(&behind, &p), None);
        let ready = status(&[1], &[first], &[(1, 500), (first, 480)]);
        assert_eq!(next_step_for_test(&ready, &p), Some(Step::Promote(first)));
        let full = status(&[1, 2, 3], &[], &[]);
        assert_eq!(next_step_for_test(&full, &p), None);
    }

    #[test]
    fn leaders_move_to_the_preferred_voter_once_it_has_everything() {
        let p = placement(3, &[1, 2, 3]);
        let mut s = status(&[1, 2, 3], &[], &[(1, 500), (2, 500), (3, 500)]);
        let preferred = preferred_leader(&s, &p).unwrap();
        s.leader = preferred;
        assert_eq!(leader_transfer(&s, &p, 500), None, "already there");
        s.leader = if preferred == 1 { 2 } else { 1 };
        assert_eq!(leader_transfer(&s, &p, 500), Some(preferred));
        // Not while it lacks entries.
        s.progress = vec![(1, 500), (2, 500), (3, 500)];
        s.progress.retain(|(id, _)| *id != preferred);
        s.progress.push((preferred, 499));
        assert_eq!(leader_transfer(&s, &p, 500), None);
        // Not while a learner is catching up; once it has caught up, yes.
        s.progress.retain(|(id, _)| *id != preferred);
        s.progress.push((preferred, 500));
        s.learners = vec![4];
        s.progress.push((4, 100));
        assert_eq!(leader_transfer(&s, &p, 500), None);
        s.progress.retain(|(id, _)| *id != 4);
        s.progress.push((4, 490));
        assert_eq!(leader_transfer(&s, &p, 500), Some(preferred));
        // Spread: over many shards each member is preferred for some.
        let mut preferred = std::collections::BTreeSet::new();
        for shard in 0..32 {
            let mut s = status(&[1, 2, 3], &[], &[]);
            s.shard = shard;
            preferred.insert(preferred_leader(&s, &p).unwrap());
        }
        assert_eq!(preferred.len(), 3);
    }

    #[test]
    fn joint_configurations_are_left_and_strangers_removed() {
        let p = placement(3, &[1, 2, 3]);
        let mut joint = status(&[1, 2, 3], &[], &[]);
        joint.voters_outgoing = vec![1, 2, 4];
        assert_eq!(next_step_for_test(&joint, &p), Some(Step::LeaveJoint));
        let stranger = status(&[1, 2], &[9], &[]);
        assert_eq!(next_step_for_test(&stranger, &p), Some(Step::Remove(9)));
    }

    #[test]
    fn the_factor_is_capped_by_the_members_and_shards_spread() {
        assert_eq!(
            next_step_for_test(&status(&[1, 2], &[], &[]), &placement(3, &[1, 2])),
            None
        );
        let p = placement(3, &[1, 2, 3, 4, 5]);
        let mut picked = std::collections::BTreeMap::new();
        for shard in 0..64 {
            let mut s = status(&[1], &[], &[]);
            s.shard = shard;
            if let Some(Step::AddLearner(id)) = next_step_for_test(&s, &p) {
                *picked.entry(id).or_insert(0) += 1;
            }
        }
        // Every other member is picked for some shard.
        assert_eq!(picked.len(), 4, "{picked:?}");
    }

    #[test]
    fn the_cluster_group_makes_every_member_a_learner_and_promotes_to_the_factor() {
        let placement = placement(3, &[1, 2, 3, 4, 5]);
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
        assert_eq!(step(&[1, 2, 4], &[3, 9], &[]), Some(Step::Remove(9)));
        assert_eq!(step(&[1, 2, 4], &[3], &[]), Some(Step::AddLearner(5)));
    }

    #[test]
    fn a_gone_voter_is_replaced_by_a_caught_up_learner_in_one_joint_change() {
        // Node 3 was retired; 4 is the only candidate.
        let p = placement(3, &[1, 2, 4]);
        let voters = [1, 2, 3];
        assert_eq!(
            next_step_for_test(&status(&voters, &[], &[]), &p),
            Some(Step::AddLearner(4))
        );
        let behind = status(&voters, &[4], &[(1, 500), (2, 500), (4, 10)]);
        assert_eq!(
            next_step_for_test(&behind, &p),
            None,
            "never below a majority"
        );
        let ready = status(&voters, &[4], &[(1, 500), (2, 500), (4, 500)]);
        assert_eq!(
            next_step_for_test(&ready, &p),
            Some(Step::Replace { new: 4, old: 3 })
        );
        assert_eq!(
            Step::Replace { new: 4, old: 3 }
                .change()
                .get_changes()
                .len(),
            2,
            "both in one joint change"
        );
    }

    #[test]
    fn without_a_spare_member_a_gone_voter_is_only_removed() {
        // Two members left of three: the shard keeps the two it has.
        let p = placement(3, &[1, 2]);
        assert_eq!(
            next_step_for_test(&status(&[1, 2, 3], &[], &[]), &p),
            Some(Step::Remove(3))
        );
        // With only one placeable voter it is not removed (no majority
        // would be left by our hand): it waits for a member to join.
        let p = placement(3, &[1, 4]);
        assert_eq!(
            next_step_for_test(&status(&[1, 2, 3], &[], &[]), &p),
            Some(Step::AddLearner(4))
        );
    }

    #[test]
    fn a_member_that_joins_takes_its_share_one_move_at_a_time() {
        let p = placement(3, &[1, 2, 3, 4]);
        let mut moved = 0;
        for shard in 0..32 {
            let mut s = status(&[1, 2, 3], &[], &[(1, 500), (2, 500), (3, 500), (4, 500)]);
            s.shard = shard;
            s.leader = preferred_leader(&s, &p).unwrap();
            let Some(Step::AddLearner(4)) = next_step(&s, &p, true) else {
                continue;
            };
            moved += 1;
            assert_eq!(next_step(&s, &p, false), None, "one move at a time");
            s.learners = vec![4];
            let Some(Step::Replace { new: 4, old }) = next_step(&s, &p, false) else {
                panic!("shard {shard}: the caught-up learner should replace a voter");
            };
            assert_ne!(old, s.leader);
            s.voters.retain(|&v| v != old);
            s.voters.push(4);
            s.learners.clear();
            assert_eq!(next_step(&s, &p, true), None, "shard {shard}: settled");
        }
        // Three voters of four members: about three shards in four are
        // the new member's share.
        assert!((16..=30).contains(&moved), "{moved} of 32 shards moved");
    }

    #[test]
    fn a_dead_member_is_retired_only_when_the_rest_can_hold_the_factor() {
        let mut p = placement(3, &[1, 2, 3, 4]);
        p.replace_after_ms = 10_000;
        let silent = |dead: u64, ms: u64| move |id: u64| if id == dead { ms } else { 10 };
        assert_eq!(dead_to_retire(&p, 1, silent(4, 9_999), 3_000), None);
        assert_eq!(dead_to_retire(&p, 1, silent(4, 10_000), 3_000), Some(4));
        // Three members, one dead: nobody to rebuild on, the shards stay
        // degraded.
        let mut small = placement(3, &[1, 2, 3]);
        small.replace_after_ms = 10_000;
        assert_eq!(dead_to_retire(&small, 1, silent(3, 60_000), 3_000), None);
        // Never this node itself, and never with the setting off.
        assert_eq!(dead_to_retire(&p, 4, silent(4, 60_000), 3_000), None);
        p.replace_after_ms = 0;
        assert_eq!(dead_to_retire(&p, 1, silent(4, 60_000), 3_000), None);
    }

    #[test]
    fn a_leaving_member_loses_its_replicas_and_leaderships() {
        let mut p = placement(3, &[1, 2, 3, 4]);
        p.leaving = vec![2];
        let mut s = status(&[1, 2, 3], &[], &[(1, 500), (2, 500), (3, 500)]);
        assert_eq!(next_step_for_test(&s, &p), Some(Step::AddLearner(4)));
        assert_ne!(preferred_leader(&s, &p), Some(2));
        s.leader = 2;
        assert!(leader_transfer(&s, &p, 500).is_some_and(|to| to != 2));
        // Its learner replicas go at once.
        let learner = status(&[1, 3, 4], &[2], &[]);
        assert_eq!(next_step_for_test(&learner, &p), Some(Step::Remove(2)));
        // The cluster group keeps it a learner until it is retired.
        assert_eq!(next_group_step(&learner, &p), None);
    }
}
