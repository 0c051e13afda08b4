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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterCommand {
    /// The member joins, or (already a member) now has these addresses.
    Join(MemberInfo),
}

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
}

impl ClusterState {
    /// Applies the command of entry `index`. Deterministic: every member
    /// turns the same log into the same state. A command that cannot be
    /// applied (a node id 0, an address too long, a full list) changes
    /// nothing and says why.
    pub fn apply(&mut self, index: u64, command: &ClusterCommand) -> Result<bool, String> {
        self.applied = self.applied.max(index);
        match command {
            ClusterCommand::Join(member) => self.join(index, member),
        }
    }

    fn join(&mut self, index: u64, member: &MemberInfo) -> Result<bool, String> {
        if member.node_id == 0 || member.service_addr.len() > MAX_NAME_BYTES {
            return Err(format!("an invalid member {member:?}"));
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
    fn a_full_list_refuses_new_members_but_takes_new_addresses() {
        let mut state = ClusterState::default();
        for id in 1..=MAX_MEMBERS as u64 {
            state
                .apply(id, &ClusterCommand::Join(member(id, 1)))
                .unwrap();
        }
        let next = MAX_MEMBERS as u64 + 1;
        assert!(
            state
                .apply(next, &ClusterCommand::Join(member(next, 1)))
                .is_err()
        );
        assert_eq!(
            state.apply(next + 1, &ClusterCommand::Join(member(1, 2))),
            Ok(true)
        );
        assert_eq!(state.members.len(), MAX_MEMBERS);
    }
}
