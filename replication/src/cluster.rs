//! The cluster's member list: who is in the cluster and where to reach
//! them, as nodes exchange it when one joins from a seed
//! (`TcpTransport::join`) and as `Envelope::Members` between members. The
//! node layer owns the list and decides who may join; this crate only
//! carries and merges it. Its bytes are in `replication/FABRIC.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Most members a list may hold: a decoder refuses longer lists, and a
/// merge never grows one past it.
pub const MAX_MEMBERS: usize = 1024;
/// Longest cluster name and service address, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 255;

/// One member and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its node id (non-zero).
    pub node_id: u64,
    /// Where its fabric listens.
    pub fabric_addr: SocketAddr,
    /// Where clients reach it, "host:port" (at most [`MAX_NAME_BYTES`]).
    pub service_addr: String,
}

/// The cluster's members as one node knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    /// The application-level cluster id the node layer checks (the fabric's
    /// 16-byte `ClusterId` is separate).
    pub cluster_id: u64,
    /// The cluster's name (at most [`MAX_NAME_BYTES`]).
    pub cluster_name: String,
    /// Shards of the cluster.
    pub shards: u32,
    /// Grows whenever the membership changes, so a newer list wins.
    pub version: u64,
    /// The members (at most [`MAX_MEMBERS`]); merges keep them sorted by id.
    pub members: Vec<MemberInfo>,
}

impl MemberList {
    /// Takes `other`'s members in: the union by node id, a member on both
    /// sides keeping the addresses of the list with the higher version (on
    /// equal versions the greater addresses, so that the result does not
    /// depend on which side merges). The version becomes the higher of the
    /// two if the union equals the members of a list with that version (the
    /// newest list is adopted as it is), else one more, since the union is
    /// a list nobody had. Returns whether `self` changed.
    ///
    /// Cluster id, name and shards stay `self`'s: the caller checks that the
    /// lists are of one cluster before merging. Past [`MAX_MEMBERS`] the
    /// lowest node ids are kept (the node layer refuses joins before that).
    pub fn merge(&mut self, other: &MemberList) -> bool {
        let before = self.clone();
        let mut union: BTreeMap<u64, (u64, &MemberInfo)> = BTreeMap::new();
        for (list, member) in self
            .members
            .iter()
            .map(|m| (self.version, m))
            .chain(other.members.iter().map(|m| (other.version, m)))
        {
            let entry = union.entry(member.node_id).or_insert((list, member));
            if (list, addresses(member)) > (entry.0, addresses(entry.1)) {
                *entry = (list, member);
            }
        }
        let members: Vec<MemberInfo> = union
            .into_values()
            .take(MAX_MEMBERS)
            .map(|(_, m)| m.clone())
            .collect();
        let newest = self.version.max(other.version);
        let adopted = [&before, other]
            .iter()
            .any(|list| list.version == newest && sorted(&list.members) == members);
        self.version = if adopted {
            newest
        } else {
            newest.saturating_add(1)
        };
        self.members = members;
        *self != before
    }
}

fn addresses(member: &MemberInfo) -> (SocketAddr, &str) {
    (member.fabric_addr, member.service_addr.as_str())
}

fn sorted(members: &[MemberInfo]) -> Vec<MemberInfo> {
    let mut members = members.to_vec();
    members.sort_by_key(|m| m.node_id);
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(node_id: u64, port: u16) -> MemberInfo {
        MemberInfo {
            node_id,
            fabric_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            service_addr: format!("127.0.0.1:{}", port + 1),
        }
    }

    fn list(version: u64, members: Vec<MemberInfo>) -> MemberList {
        MemberList {
            cluster_id: 7,
            cluster_name: "c".into(),
            shards: 16,
            version,
            members,
        }
    }

    fn merged(a: &MemberList, b: &MemberList) -> MemberList {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    #[test]
    fn the_newer_list_gives_the_addresses_and_a_new_union_a_new_version() {
        let old = list(3, vec![member(1, 100), member(2, 200)]);
        let new = list(5, vec![member(2, 900), member(3, 300)]);
        let mut a = old.clone();
        assert!(a.merge(&new));
        assert_eq!(a.version, 6, "a union nobody had");
        assert_eq!(
            a.members,
            vec![member(1, 100), member(2, 900), member(3, 300)]
        );
        let grown = list(5, vec![member(1, 100), member(2, 900), member(3, 300)]);
        let mut b = old.clone();
        assert!(b.merge(&grown));
        assert_eq!(b, grown, "the newest list is adopted as it is");
        assert!(!b.merge(&old), "nothing new from an older subset");
        assert_eq!(b, grown);
    }

    fn arb_list() -> impl Strategy<Value = MemberList> {
        let members = prop::collection::vec((1u64..8, 1u16..4), 0..6)
            .prop_map(|ms| ms.into_iter().map(|(id, p)| member(id, p)).collect());
        (0u64..4, members).prop_map(|(version, members)| list(version, members))
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_idempotent(a in arb_list(), b in arb_list()) {
            let ab = merged(&a, &b);
            let ba = merged(&b, &a);
            prop_assert_eq!(&ab.members, &ba.members);
            prop_assert_eq!(ab.version, ba.version);
            prop_assert!(ab.version >= a.version.max(b.version));
            let mut again = ab.clone();
            prop_assert!(!again.merge(&b), "merging the same list twice changes nothing");
            prop_assert!(!again.merge(&ab.clone()));
            prop_assert_eq!(again, ab);
        }
    }
}
