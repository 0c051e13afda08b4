//! The cluster as this node sees it: the member list (kept in the data dir
//! as `members.toml`), joining through seeds, spreading the list to every
//! member (pushed on every change and every `GOSSIP_INTERVAL_MS`), and what
//! clients are told: `peers-clear-std`, `replicas` and the generations.
//!
//! Who owns what: the member list decides the fabric's peer book and the
//! placement every shard leader drives (`aerie_replication::placement`);
//! raft decides who leads and who votes in each shard. Members are only
//! added here (removing and replacing them is the self-healing issue's).
//!
//! The list is merged by union (highest version wins a member's addresses),
//! not agreed by consensus: two members may briefly see different lists,
//! which only delays placement. A list from another cluster (its id differs)
//! is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aerie_protocol::info::{self, PartitionBitmap, Peer, PeerAddress};
use aerie_replication::cluster::{MemberInfo, MemberList};
use aerie_replication::fabric::TcpTransport;
use aerie_replication::placement::Placement;
use aerie_replication::shards::ShardMap;
use aerie_replication::transport::{Envelope, Transport};
use aerie_replication::{Node, ShardStatus};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The member list file in a data dir.
pub const MEMBERS_FILE: &str = "members.toml";
/// How often the list is pushed to every member even when nothing changed
/// (a member that missed a push, or restarted, catches up).
const GOSSIP_INTERVAL_MS: u64 = 2_000;

use super::lock;

/// `members.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersFile {
    version: u64,
    members: Vec<MemberEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberEntry {
    node_id: u64,
    fabric_addr: String,
    service_addr: String,
}

/// The cluster state of one node.
pub struct Cluster {
    me: MemberInfo,
    replication_factor: usize,
    map: ShardMap,
    list: Mutex<MemberList>,
    path: PathBuf,
    transport: Arc<TcpTransport>,
    node: OnceLock<Arc<Node>>,
    /// Per shard: this node led it when a leader was last known (so column
    /// 0 keeps claiming it mid-election).
    led: Mutex<Vec<bool>>,
    partition_generation: AtomicU64,
    last_replicas: Mutex<String>,
    /// One writer of `members.toml` at a time (they share its temp file).
    storing: Mutex<()>,
}

impl Cluster {
    /// The cluster of `list`, as node `me`.
    pub fn new(
        me: MemberInfo,
        replication_factor: usize,
        map: ShardMap,
        list: MemberList,
        data_dir: &Path,
        transport: Arc<TcpTransport>,
    ) -> Result<Arc<Cluster>> {
        let cluster = Arc::new(Cluster {
            me,
            replication_factor,
            led: Mutex::new(vec![false; map.shards() as usize]),
            map,
            list: Mutex::new(list),
            path: data_dir.join(MEMBERS_FILE),
            transport,
            node: OnceLock::new(),
            partition_generation: AtomicU64::new(1),
            last_replicas: Mutex::new(String::new()),
            storing: Mutex::new(()),
        });
        cluster.store()?;
        Ok(cluster)
    }

    /// Starts driving `node`: the peer book, the placement, the join handler
    /// and the gossip thread.
    pub fn attach(self: &Arc<Cluster>, node: Arc<Node>) -> Result<()> {
        let _ = self.node.set(node);
        let me = self.clone();
        self.transport
            .set_join_handler(Arc::new(move |joiner| me.on_join(joiner)));
        self.apply();
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cluster-gossip".into())
            .spawn(move || {
                while let Some(cluster) = me.upgrade() {
                    cluster.push_list();
                    drop(cluster);
                    std::thread::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS));
                }
            })
            .map_err(|e| Error::Refused(format!("cannot start the gossip thread: {e}")))?;
        Ok(())
    }

    /// The member list now.
    pub fn members(&self) -> MemberList {
        lock(&self.list).clone()
    }

    /// A member list arrived from a peer: merged, and if it changed,
    /// stored, applied and passed on.
    pub fn on_members(&self, other: &MemberList) {
        if !self.merge(other) {
            return;
        }
        self.apply();
        self.push_list();
    }

    /// A node asks to join through this one.
    fn on_join(&self, joiner: MemberInfo) -> Option<MemberList> {
        tracing::info!(node = %info::node_name(joiner.node_id), fabric = %joiner.fabric_addr, service = %joiner.service_addr, "a node joins the cluster");
        let mut theirs = self.members();
        theirs.members = vec![joiner];
        self.on_members(&theirs);
        Some(self.members())
    }

    fn merge(&self, other: &MemberList) -> bool {
        let mut list = lock(&self.list);
        if other.cluster_id != list.cluster_id {
            tracing::warn!(
                theirs = other.cluster_id,
                ours = list.cluster_id,
                "a member list of another cluster refused"
            );
            return false;
        }
        let changed = list.merge(other);
        drop(list);
        if changed && let Err(e) = self.store() {
            tracing::error!(error = %e, "storing the member list failed");
        }
        changed
    }

    /// The peer book and the placement follow the list.
    fn apply(&self) {
        let list = self.members();
        let peers: BTreeMap<u64, SocketAddr> = list
            .members
            .iter()
            .filter(|m| m.node_id != self.me.node_id)
            .map(|m| (m.node_id, m.fabric_addr))
            .collect();
        if let Err(e) = self.transport.set_peers(peers) {
            tracing::error!(error = %e, "updating the fabric's peers failed");
        }
        if let Some(node) = self.node.get() {
            let placement = Placement {
                replication_factor: self.replication_factor,
                members: list.members.iter().map(|m| m.node_id).collect(),
            };
            if let Err(e) = node.set_placement(placement) {
                tracing::warn!(error = %e, "handing the placement to the shards failed");
            }
        }
    }

    fn push_list(&self) {
        let list = self.members();
        for member in list.members.iter().filter(|m| m.node_id != self.me.node_id) {
            let _ = self.transport.send(
                self.me.node_id,
                member.node_id,
                Envelope::Members(list.clone()),
            );
        }
    }

    fn store(&self) -> Result<()> {
        let _one_writer = lock(&self.storing);
        let list = self.members();
        let file = MembersFile {
            version: list.version,
            members: list
                .members
                .iter()
                .map(|m| MemberEntry {
                    node_id: m.node_id,
                    fabric_addr: m.fabric_addr.to_string(),
                    service_addr: m.service_addr.clone(),
                })
                .collect(),
        };
        let text = toml::to_string_pretty(&file)
            .map_err(|e| Error::Refused(format!("{}: {e}", self.path.display())))?;
        crate::datadir::write_atomically(&self.path, text.as_bytes())
            .map_err(|e| Error::Refused(e.to_string()))
    }

    /// Voters per shard the cluster aims at: min(factor, members).
    pub fn effective_replication_factor(&self) -> usize {
        self.replication_factor
            .min(lock(&self.list).members.len())
            .max(1)
    }

    /// `peers-generation`: the member list's version.
    pub fn peers_generation(&self) -> u64 {
        lock(&self.list).version
    }

    /// Where member `node_id` serves clients, if it is a member.
    pub fn service_address(&self, node_id: u64) -> Option<String> {
        lock(&self.list)
            .members
            .iter()
            .find(|m| m.node_id == node_id)
            .map(|m| m.service_addr.clone())
    }

    /// `peers-clear-std`: every other member's service address.
    pub fn peers(&self, default_port: u16) -> String {
        let list = self.members();
        let peers: Vec<Peer> = list
            .members
            .iter()
            .filter(|m| m.node_id != self.me.node_id)
            .filter_map(|m| {
                let (host, port) = m.service_addr.rsplit_once(':')?;
                Some(Peer {
                    node_name: info::node_name(m.node_id),
                    tls_name: String::new(),
                    addresses: vec![PeerAddress {
                        host: host.trim_matches(['[', ']']).to_string(),
                        port: port.parse().ok()?,
                    }],
                })
            })
            .collect();
        info::format_peers(list.version, default_port, &peers)
    }

    /// `replicas`: per namespace, the partitions of the shards this node
    /// leads in column 0 (and of those it led while no new leader is known),
    /// its follower positions in the next columns.
    pub fn replicas(&self, namespaces: &[String]) -> String {
        let columns = self.columns();
        let entries: Vec<info::ReplicasEntry<'_>> = namespaces
            .iter()
            .map(|ns| info::ReplicasEntry {
                namespace: ns,
                regime: 0,
                columns: columns.clone(),
            })
            .collect();
        info::format_replicas(&entries)
            .unwrap_or_else(|e| info::format_error(Some(e.result_code()), "replicas"))
    }

    /// `partition-generation`: bumped whenever the `replicas` answer changes.
    pub fn partition_generation(&self, namespaces: &[String]) -> u64 {
        let answer = self.replicas(namespaces);
        let mut last = lock(&self.last_replicas);
        if *last != answer {
            *last = answer;
            self.partition_generation.fetch_add(1, Ordering::SeqCst);
        }
        self.partition_generation.load(Ordering::SeqCst)
    }

    /// `cluster-status`: the members (`members=<name>,...`), the effective
    /// replication factor (`replication-factor=N`), then per shard
    /// `shard=N:leader=<name>:voters=<names>:learners=<names>:applied=N:commit=N`,
    /// joined by `;` (names as `node` answers them; `-` for none).
    pub fn status(&self) -> String {
        let names = |ids: &[u64]| {
            let names: Vec<String> = ids.iter().map(|&id| info::node_name(id)).collect();
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(",")
            }
        };
        let members: Vec<u64> = self.members().members.iter().map(|m| m.node_id).collect();
        let mut parts = vec![
            format!("members={}", names(&members)),
            format!("replication-factor={}", self.effective_replication_factor()),
        ];
        for s in self.node.get().map(|n| n.status()).unwrap_or_default() {
            let leader = if s.leader == 0 {
                "-".to_string()
            } else {
                info::node_name(s.leader)
            };
            parts.push(format!(
                "shard={}:leader={leader}:voters={}:learners={}:applied={}:commit={}",
                s.shard,
                names(&s.voters),
                names(&s.learners),
                s.applied,
                s.commit
            ));
        }
        parts.join(";")
    }

    fn columns(&self) -> Vec<PartitionBitmap> {
        let count = self.effective_replication_factor();
        let statuses = self.node.get().map(|n| n.status()).unwrap_or_default();
        let mut led = lock(&self.led);
        let mut by_column: Vec<Vec<u32>> = vec![Vec::new(); count];
        for status in &statuses {
            let shard = status.shard as usize;
            if status.leader != 0 {
                led[shard] = status.leader == self.me.node_id;
            }
            if let Some(column) = column_of(status, self.me.node_id, led[shard])
                && column < count
            {
                by_column[column].push(status.shard);
            }
        }
        by_column
            .iter()
            .map(|shards| {
                let mut bitmap = PartitionBitmap::default();
                for &shard in shards {
                    self.map
                        .partitions(shard)
                        .into_iter()
                        .for_each(|p| bitmap.set(p));
                }
                bitmap
            })
            .collect()
    }
}

/// This node's replica column of a shard: 0 when it leads (or, while no
/// leader is known, when it led it last or is its only voter), 1 + its rank
/// among the other voters otherwise.
fn column_of(status: &ShardStatus, me: u64, led: bool) -> Option<usize> {
    let sole_voter = status.voters == [me];
    if status.leader == me || (status.leader == 0 && (led || sole_voter)) {
        return Some(0);
    }
    let mut others: Vec<u64> = status
        .voters
        .iter()
        .copied()
        .filter(|&v| v != status.leader)
        .collect();
    others.sort_unstable();
    others.iter().position(|&v| v == me).map(|rank| rank + 1)
}

/// Reads `members.toml` of `data_dir` into a list of cluster `cluster_id`,
/// or `None` when there is none.
pub fn load_members(
    data_dir: &Path,
    cluster_id: u64,
    cluster_name: &str,
    shards: u32,
) -> Result<Option<MemberList>> {
    let path = data_dir.join(MEMBERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    let bad = |reason: String| Error::Refused(format!("{}: {reason}", path.display()));
    let file: MembersFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let members = file
        .members
        .into_iter()
        .map(|m| {
            let fabric_addr = m
                .fabric_addr
                .parse()
                .map_err(|e| bad(format!("fabric address {:?}: {e}", m.fabric_addr)))?;
            Ok(MemberInfo {
                node_id: m.node_id,
                fabric_addr,
                service_addr: m.service_addr,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(MemberList {
        cluster_id,
        cluster_name: cluster_name.to_string(),
        shards,
        version: file.version,
        members,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64, voters: &[u64]) -> ShardStatus {
        ShardStatus {
            shard: 0,
            leader,
            term: 1,
            applied: 0,
            commit: 0,
            compacted: 0,
            voters: voters.to_vec(),
            learners: Vec::new(),
            voters_outgoing: Vec::new(),
            progress: Vec::new(),
        }
    }

    #[test]
    fn each_voter_gets_one_column_and_the_last_leader_keeps_column_0() {
        let s = status(2, &[3, 1, 2]);
        assert_eq!(column_of(&s, 2, false), Some(0));
        assert_eq!(column_of(&s, 1, false), Some(1));
        assert_eq!(column_of(&s, 3, false), Some(2));
        assert_eq!(column_of(&s, 4, false), None);
        // Mid-election the old leader keeps claiming column 0, nobody else.
        let electing = status(0, &[1, 2, 3]);
        assert_eq!(column_of(&electing, 2, true), Some(0));
        assert_eq!(column_of(&electing, 1, false), Some(1));
        // A lone voter claims its shard before its first election ends.
        assert_eq!(column_of(&status(0, &[7]), 7, false), Some(0));
    }
}
