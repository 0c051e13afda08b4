//! The cluster's metadata: who is in the cluster and where to reach them.
//! It is the state machine of the cluster group (`group.rs`), a raft group
//! of its own that every member replicates (voters as for a shard, every
//! other member a learner), so every node applies the same member list in
//! the same order. A node joining from a seed gets a [`MemberList`] from it
//! over the fabric (`TcpTransport::join`; bytes in `replication/FABRIC.md`),
//! enough to reach the members until the group's log reaches it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Most members a list may hold: a decoder refuses longer lists, and a
/// merge never grows one past it.
pub const MAX_MEMBERS: usize = 1024;
/// Longest cluster name and service address, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 255;

/// One member and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its node id (non-zero).
    pub node_id: u64,
    /// Where its fabric listens.
    pub fabric_addr: SocketAddr,
    /// Where clients reach it, "host:port" (at most [`MAX_NAME_BYTES`]).
    pub service_addr: String,
}

/// A node asking a seed to let it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Who it is and where it is reached.
    pub member: MemberInfo,
    /// Non-zero when its data dir is new: a random number of this start,
    /// so that a retried join is told apart from another node (a data dir
    /// wiped and started with the same forced id) that must not be let in
    /// under a member's id. Zero for a member asking again.
    pub incarnation: u64,
}

/// What a seed tells a joining node: the cluster and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    /// The application-level cluster id the node layer checks (the fabric's
    /// 16-byte `ClusterId` is separate).
    pub cluster_id: u64,
    /// The cluster's name (at most [`MAX_NAME_BYTES`]).
    pub cluster_name: String,
    /// Shards of the cluster.
    pub shards: u32,
    /// The cluster group's index of the last change the list reflects.
    pub version: u64,
    /// The members (at most [`MAX_MEMBERS`]), sorted by id.
    pub members: Vec<MemberInfo>,
}

/// A change to the cluster's metadata, proposed to the cluster group.
/// (New variants go at the end: an entry's bytes name the variant by its
/// position.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterCommand {
    /// The member joins, or (already a member) now has these addresses. A
    /// member at the same fabric address under another id is retired: that
    /// is a node whose data dir was wiped, back under a new identity.
    Join(MemberInfo),
    /// The member is gone for good (dead past `replace_after_ms`, or
    /// removed by an operator): it leaves the members, its id is never
    /// accepted again, and the shards it held are rebuilt elsewhere.
    Retire(u64),
    /// The member is being removed by an operator: its replicas and
    /// leaderships move off it, then it is retired.
    Leave(u64),
    /// A node with a new data dir joins, as start `incarnation` of it: a
    /// member of that id from another start (or from before incarnations
    /// were recorded) is refused.
    JoinNew(MemberInfo, u64),
}

/// Most retired ids the state keeps (the oldest are forgotten first; a
/// retired node is also refused by its stale raft state, this is the
/// clear message).
pub const MAX_RETIRED: usize = 4096;

/// The cluster's metadata as of one index of the cluster group's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The group's last applied index this state includes.
    pub applied: u64,
    /// The index of the last entry that changed the members (the
    /// `peers-generation` clients see).
    pub changed_at: u64,
    /// The members, sorted by node id, at most [`MAX_MEMBERS`].
    pub members: Vec<MemberInfo>,
    /// Members an operator is removing (sorted): placement moves their
    /// replicas off before they are retired.
    pub leaving: Vec<u64>,
    /// Retired node ids, oldest first, at most [`MAX_RETIRED`]: refused at
    /// the fabric handshake and at joins, forever.
    pub retired: Vec<u64>,
    /// (node id, incarnation) of the members that joined with a new data
    /// dir, sorted by id.
    pub incarnations: Vec<(u64, u64)>,
}

/// The state as version 1 of `cluster.state` held it (before leaving and
/// retired members existed): read, never written.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClusterStateV1 {
    applied: u64,
    changed_at: u64,
    members: Vec<MemberInfo>,
}

impl From<ClusterStateV1> for ClusterState {
    fn from(old: ClusterStateV1) -> ClusterState {
        ClusterState {
            applied: old.applied,
            changed_at: old.changed_at,
            members: old.members,
            ..ClusterState::default()
        }
    }
}

impl ClusterState {
    /// Applies the command of entry `index`. Deterministic: every member
    /// turns the same log into the same state. A command that cannot be
    /// applied (a node id 0, an address too long, a full list) changes
    /// nothing and says why.
    pub fn apply(&mut self, index: u64, command: &ClusterCommand) -> Result<bool, String> {
        self.applied = self.applied.max(index);
        match *command {
            ClusterCommand::Join(ref member) => self.join(index, member),
            ClusterCommand::Retire(id) => Ok(self.retire(index, id)),
            ClusterCommand::Leave(id) => self.leave(index, id),
            ClusterCommand::JoinNew(ref member, incarnation) => {
                self.join_new(index, member, incarnation)
            }
        }
    }

    /// Why start `incarnation` of a new data dir may not join as node
    /// `node_id`, if it may not.
    pub fn refuse_new(&self, node_id: u64, incarnation: u64) -> Option<String> {
        if self.is_retired(node_id) {
            return Some(format!("node {node_id} was retired from the cluster"));
        }
        let recorded = self.incarnation(node_id);
        (self.member(node_id).is_some() && recorded != Some(incarnation)).then(|| {
            format!("node {node_id} is a member already: a new data dir may not take a member's id")
        })
    }

    fn incarnation(&self, node_id: u64) -> Option<u64> {
        self.incarnations
            .binary_search_by_key(&node_id, |&(id, _)| id)
            .ok()
            .map(|at| self.incarnations[at].1)
    }

    fn join_new(
        &mut self,
        index: u64,
        member: &MemberInfo,
        incarnation: u64,
    ) -> Result<bool, String> {
        if let Some(reason) = self.refuse_new(member.node_id, incarnation) {
            return Err(reason);
        }
        let changed = self.join(index, member)?;
        if let Err(at) = self
            .incarnations
            .binary_search_by_key(&member.node_id, |&(id, _)| id)
        {
            self.incarnations.insert(at, (member.node_id, incarnation));
        }
        Ok(changed)
    }

    fn join(&mut self, index: u64, member: &MemberInfo) -> Result<bool, String> {
        if member.node_id == 0 || member.service_addr.len() > MAX_NAME_BYTES {
            return Err(format!("an invalid member {member:?}"));
        }
        if self.is_retired(member.node_id) {
            return Err(format!("node {} was retired", member.node_id));
        }
        // The old identity of a node that came back wiped, at the same
        // address: it can never be reached again.
        let wiped: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.fabric_addr == member.fabric_addr && m.node_id != member.node_id)
            .map(|m| m.node_id)
            .collect();
        for old in wiped {
            self.retire(index, old);
        }
        match self
            .members
            .binary_search_by_key(&member.node_id, |m| m.node_id)
        {
            Ok(at) if self.members[at] == *member => return Ok(false),
            Ok(at) => self.members[at] = member.clone(),
            Err(_) if self.members.len() >= MAX_MEMBERS => {
                return Err(format!("the cluster already has {MAX_MEMBERS} members"));
            }
            Err(at) => self.members.insert(at, member.clone()),
        }
        self.changed_at = index;
        Ok(true)
    }

    fn retire(&mut self, index: u64, id: u64) -> bool {
        if self.is_retired(id) || id == 0 {
            return false;
        }
        self.members.retain(|m| m.node_id != id);
        self.leaving.retain(|&l| l != id);
        self.incarnations.retain(|&(node, _)| node != id);
        if self.retired.len() >= MAX_RETIRED {
            self.retired.remove(0);
        }
        self.retired.push(id);
        self.changed_at = index;
        true
    }

    fn leave(&mut self, index: u64, id: u64) -> Result<bool, String> {
        if self.member(id).is_none() {
            return Err(format!("node {id} is not a member"));
        }
        match self.leaving.binary_search(&id) {
            Ok(_) => Ok(false),
            Err(at) => {
                self.leaving.insert(at, id);
                self.changed_at = index;
                Ok(true)
            }
        }
    }

    /// Whether `node_id` was retired (it may never come back under it).
    pub fn is_retired(&self, node_id: u64) -> bool {
        self.retired.contains(&node_id)
    }

    /// The members that should hold replicas: every member not leaving.
    pub fn placeable_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| m.node_id)
            .filter(|id| self.leaving.binary_search(id).is_err())
            .collect()
    }

    /// The member `node_id`, if it is one.
    pub fn member(&self, node_id: u64) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    /// The members' node ids, ascending.
    pub fn member_ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.node_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: u64, port: u16) -> MemberInfo {
        MemberInfo {
            node_id,
            fabric_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            service_addr: format!("127.0.0.1:{}", port + 1),
        }
    }

    #[test]
    fn joins_add_in_id_order_update_addresses_and_refuse_nonsense() {
        let mut state = ClusterState::default();
        assert_eq!(
            state.apply(3, &ClusterCommand::Join(member(9, 100))),
            Ok(true)
        );
        assert_eq!(
            state.apply(4, &ClusterCommand::Join(member(2, 200))),
            Ok(true)
        );
        assert_eq!(state.member_ids(), vec![2, 9]);
        assert_eq!((state.applied, state.changed_at), (4, 4));
        // The same member again changes nothing but the applied index.
        assert_eq!(
            state.apply(5, &ClusterCommand::Join(member(9, 100))),
            Ok(false)
        );
        assert_eq!((state.applied, state.changed_at), (5, 4));
        // New addresses replace the old ones.
        assert_eq!(
            state.apply(6, &ClusterCommand::Join(member(9, 700))),
            Ok(true)
        );
        assert_eq!(state.member(9), Some(&member(9, 700)));
        assert!(state.apply(7, &ClusterCommand::Join(member(0, 1))).is_err());
        let mut long = member(5, 1);
        long.service_addr = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(state.apply(8, &ClusterCommand::Join(long)).is_err());
        assert_eq!(state.member_ids(), vec![2, 9]);
        assert_eq!(state.applied, 8);
    }

    #[test]
    fn a_node_back_wiped_at_the_same_address_retires_its_old_identity() {
        let mut state = ClusterState::default();
        state
            .apply(1, &ClusterCommand::Join(member(1, 100)))
            .unwrap();
        state
            .apply(2, &ClusterCommand::Join(member(2, 200)))
            .unwrap();
        // Node 2's data dir was wiped: it comes back as node 7, same address.
        assert_eq!(
            state.apply(3, &ClusterCommand::Join(member(7, 200))),
            Ok(true)
        );
        assert_eq!(state.member_ids(), vec![1, 7]);
        assert!(state.is_retired(2));
        // The old id is refused for good, and retiring twice changes nothing.
        assert!(
            state
                .apply(4, &ClusterCommand::Join(member(2, 300)))
                .is_err()
        );
        assert_eq!(state.apply(5, &ClusterCommand::Retire(2)), Ok(false));
        assert_eq!(state.changed_at, 3);
    }

    #[test]
    fn a_new_data_dir_may_not_take_a_members_id_but_may_retry_its_join() {
        let mut state = ClusterState::default();
        state
            .apply(1, &ClusterCommand::Join(member(1, 100)))
            .unwrap();
        assert_eq!(
            state.apply(2, &ClusterCommand::JoinNew(member(2, 200), 77)),
            Ok(true)
        );
        // The same start asking again (its answer was lost): let in.
        assert_eq!(
            state.apply(3, &ClusterCommand::JoinNew(member(2, 200), 77)),
            Ok(false)
        );
        // Another start under the same id (a wiped dir, the id forced),
        // and a founder's id: refused, and nothing changes.
        assert!(state.refuse_new(2, 78).is_some());
        assert!(
            state
                .apply(4, &ClusterCommand::JoinNew(member(2, 200), 78))
                .is_err()
        );
        assert!(state.refuse_new(1, 5).is_some());
        assert_eq!(state.refuse_new(3, 5), None);
        assert_eq!(state.changed_at, 2);
    }

    #[test]
    fn a_leaving_member_is_not_placeable_until_it_is_retired() {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state
                .apply(id, &ClusterCommand::Join(member(id, id as u16 * 100)))
                .unwrap();
        }
        assert!(state.apply(4, &ClusterCommand::Leave(9)).is_err());
        assert_eq!(state.apply(5, &ClusterCommand::Leave(2)), Ok(true));
        assert_eq!(state.apply(6, &ClusterCommand::Leave(2)), Ok(false));
        assert_eq!(state.placeable_ids(), vec![1, 3]);
        assert_eq!(state.member_ids(), vec![1, 2, 3]);
        assert_eq!(state.apply(7, &ClusterCommand::Retire(2)), Ok(true));
        assert_eq!(
            (state.member_ids(), state.leaving.clone()),
            (vec![1, 3], vec![])
        );
        assert_eq!(state.retired, vec![2]);
    }

    #[test]
    fn a_full_list_refuses_new_members_but_takes_new_addresses() {
        let mut state = ClusterState::default();
        for id in 1..=MAX_MEMBERS as u64 {
            state
                .apply(id, &ClusterCommand::Join(member(id, 2 * id as u16)))
                .unwrap();
        }
        let next = MAX_MEMBERS as u64 + 1;
        assert!(
            state
                .apply(next, &ClusterCommand::Join(member(next, 2 * next as u16)))
                .is_err()
        );
        assert_eq!(
            state.apply(next + 1, &ClusterCommand::Join(member(1, 9))),
            Ok(true)
        );
        assert_eq!(state.members.len(), MAX_MEMBERS);
    }
}
