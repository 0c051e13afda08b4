//! Membership changes of a shard's raft group (raft-rs `ConfChangeV2`):
//! what a caller proposes, and how a committed membership entry is applied
//! by the ready loop.
//!
//! The safe sequence for adding or replacing a member (raft's joint
//! consensus, explicit transition, as CLUSTER-NOTES.md says):
//! 1. [`add_learner`]: the new member receives the log (or a snapshot) and
//!    votes in nothing;
//! 2. once it has caught up, [`promote`] it (or [`replace`] an old voter by
//!    it in one joint change);
//! 3. after a joint change, [`leave_joint`] until the configuration has no
//!    outgoing voters (a change proposed while another is pending becomes an
//!    empty entry, so a caller re-derives what to do from
//!    [`crate::ShardStatus`] each round).
//!
//! A single change applies at once; several (a replacement) enter a joint
//! configuration.
//!
//! A membership entry is applied when the ready loop hands it to the apply
//! loop: `RawNode::apply_conf_change`, then the new `ConfState` is stored in
//! the shard's meta file at the entry's index before raft goes on. After a
//! restart, entries at or below the stored index are not applied again.

use protobuf::Message as _;
use raft::prelude::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType,
};

use crate::error::{Error, Result};
use crate::storage::ShardStorage;
use raft::RawNode;

fn single(node: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    let mut change = ConfChangeSingle::default();
    change.set_change_type(change_type);
    change.node_id = node;
    change
}

fn change(changes: Vec<ConfChangeSingle>) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    // One change is applied at once; several go through a joint
    // configuration, left by an explicit empty change (auto-leave is known
    // to get stuck).
    if changes.len() > 1 {
        cc.set_transition(ConfChangeTransition::Explicit);
    }
    cc.set_changes(changes.into());
    cc
}

/// Adds `node` as a learner (no vote).
pub fn add_learner(node: u64) -> ConfChangeV2 {
    change(vec![single(node, ConfChangeType::AddLearnerNode)])
}

/// Makes `node` (a learner) a voter.
pub fn promote(node: u64) -> ConfChangeV2 {
    change(vec![single(node, ConfChangeType::AddNode)])
}

/// Replaces voter `old` by `new` (a caught-up learner) in one joint change.
pub fn replace(new: u64, old: u64) -> ConfChangeV2 {
    change(vec![
        single(new, ConfChangeType::AddNode),
        single(old, ConfChangeType::RemoveNode),
    ])
}

/// Removes `node` (a learner, or a voter when the others stay a majority).
pub fn remove(node: u64) -> ConfChangeV2 {
    change(vec![single(node, ConfChangeType::RemoveNode)])
}

/// Leaves a joint configuration.
pub fn leave_joint() -> ConfChangeV2 {
    ConfChangeV2::default()
}

/// The membership change an entry carries, if it is one.
fn decode(entry: &Entry) -> Result<Option<ConfChangeV2>> {
    let bad = |e: protobuf::ProtobufError| {
        Error::Config(format!(
            "membership entry {} does not decode: {e}",
            entry.index
        ))
    };
    match entry.get_entry_type() {
        EntryType::EntryNormal => Ok(None),
        // Aerie proposes only v2 changes.
        EntryType::EntryConfChange => Err(Error::Config(format!(
            "membership entry {} is a v1 change, which Aerie never proposes",
            entry.index
        ))),
        EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&entry.data)
            .map(Some)
            .map_err(bad),
    }
}

/// Applies the membership entries among `entries` (committed, in order)
/// that the group's meta file does not have yet, storing each new
/// configuration before the next. A change raft refuses (e.g. leaving a
/// configuration that is not joint) changes nothing. `group` names the
/// group in logs (a shard, or the cluster group).
pub fn apply_committed(raw: &mut RawNode<ShardStorage>, group: u32, entries: &[Entry]) {
    for entry in entries {
        if entry.index <= raw.store().meta().conf_index() {
            continue;
        }
        let cc = match decode(entry) {
            Ok(Some(cc)) => cc,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(group, error = %e, "skipping a membership entry");
                continue;
            }
        };
        match raw.apply_conf_change(&cc) {
            Ok(conf) => {
                tracing::info!(group, index = entry.index, voters = ?conf.voters, learners = ?conf.learners, outgoing = ?conf.voters_outgoing, "membership changed");
                if let Err(e) = raw.mut_store().apply_membership(entry.index, conf) {
                    tracing::error!(group, error = %e, "storing the membership failed");
                }
            }
            Err(e) => {
                tracing::warn!(group, index = entry.index, error = %e, "membership change refused by raft");
            }
        }
    }
}
