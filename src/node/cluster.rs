//! The cluster as this node sees it: the members (the cluster group's
//! state, `aerie_replication::group`, replicated to every member), joining
//! through seeds, and what clients are told: `peers-clear-std`, `replicas`
//! and the generations.
//!
//! Who owns what: the cluster group decides who the members are and where
//! they are reached; this module turns that into the fabric's peer book and
//! the placement every shard leader drives (`aerie_replication::placement`);
//! raft decides who leads and who votes in each shard. Members are only
//! added (removing and replacing them is the self-healing issue's).
//!
//! A node not yet in the group's state (a joiner whose first entries have
//! not arrived, a founder before its first election) uses the provisional
//! list it started with (the seed's answer, or itself), and asks to be
//! added every `JOIN_INTERVAL_MS` until it sees itself with its current
//! addresses: through its own group (raft forwards the proposal to the
//! leader) once it knows a leader, else through another member's fabric
//! join.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use aerie_protocol::info::{self, PartitionBitmap, Peer, PeerAddress};
use aerie_replication::HandshakeRefusal;
use aerie_replication::cluster::{
    ClusterCommand, ClusterState, JoinRequest, MemberInfo, MemberList,
};
use aerie_replication::fabric::TcpTransport;
use aerie_replication::group::OnChange;
use aerie_replication::placement::Placement;
use aerie_replication::shards::ShardMap;
use aerie_replication::{Node, ShardStatus};

use crate::error::{Error, Result};

/// How often a node not (or not correctly) in the cluster's state asks to
/// be added.
const JOIN_INTERVAL_MS: u64 = 1_000;
/// One join attempt through another member's fabric.
const JOIN_ATTEMPT_MS: u64 = 2_000;

use super::lock;

/// What the node does once it learns that the cluster retired it (it must
/// stop: no member will talk to it again).
pub type OnRetired = Box<dyn Fn(&[SocketAddr]) + Send + Sync>;

/// The cluster state of one node.
pub struct Cluster {
    me: MemberInfo,
    replace_after_ms: u64,
    /// `ClusterMeta::incarnation`: non-zero for a node that joined with a
    /// new data dir, which asks again as that start.
    incarnation: u64,
    on_retired: OnRetired,
    replication_factor: usize,
    map: ShardMap,
    cluster_id: u64,
    cluster_name: String,
    /// Who this node started out knowing, until the group's state has
    /// members.
    provisional: Vec<MemberInfo>,
    transport: Arc<TcpTransport>,
    node: OnceLock<Arc<Node>>,
    /// Per shard: this node led it when a leader was last known (so column
    /// 0 keeps claiming it mid-election).
    led: Mutex<Vec<bool>>,
    partition_generation: AtomicU64,
    last_replicas: Mutex<String>,
}

impl Cluster {
    /// The cluster of `start` (its id, name and members until the group's
    /// state has some), as node `me`.
    pub fn new(
        me: JoinRequest,
        (replication_factor, replace_after_ms): (usize, u64),
        map: ShardMap,
        start: MemberList,
        transport: Arc<TcpTransport>,
        on_retired: OnRetired,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            me: me.member,
            replace_after_ms,
            incarnation: me.incarnation,
            on_retired,
            replication_factor,
            led: Mutex::new(vec![false; map.shards() as usize]),
            map,
            cluster_id: start.cluster_id,
            cluster_name: start.cluster_name,
            provisional: start.members,
            transport,
            node: OnceLock::new(),
            partition_generation: AtomicU64::new(1),
            last_replicas: Mutex::new(String::new()),
        })
    }

    /// What `Node::open` calls with every new state of the cluster group.
    pub fn on_change(self: &Arc<Cluster>) -> OnChange {
        let me: Weak<Cluster> = Arc::downgrade(self);
        Arc::new(move |state: &ClusterState| {
            if let Some(cluster) = me.upgrade() {
                cluster.apply(state);
            }
        })
    }

    /// Starts driving `node`: the placement, the join handler and the
    /// thread that asks for this node's membership.
    pub fn attach(self: &Arc<Cluster>, node: Arc<Node>) -> Result<()> {
        let _ = self.node.set(node);
        let me = Arc::downgrade(self);
        self.transport.set_join_handler(Arc::new(move |joiner| {
            me.upgrade()
                .map_or(Err(HandshakeRefusal::JoinRefused), |cluster| {
                    cluster.on_join(joiner)
                })
        }));
        let state = self.state();
        self.apply(&state);
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cluster-join".into())
            .spawn(move || {
                while let Some(cluster) = me.upgrade() {
                    cluster.ask_for_membership();
                    drop(cluster);
                    std::thread::sleep(Duration::from_millis(JOIN_INTERVAL_MS));
                }
            })
            .map_err(|e| Error::Refused(format!("cannot start the join thread: {e}")))?;
        Ok(())
    }

    fn state(&self) -> Arc<ClusterState> {
        self.node
            .get()
            .map(|n| n.cluster_state())
            .unwrap_or_default()
    }

    /// The members now: the group's, or the provisional list before it has
    /// any.
    pub fn members(&self) -> Vec<MemberInfo> {
        members_or(&self.state(), &self.provisional).to_vec()
    }

    /// A node asks to join through this one: refused if its id was
    /// retired, or (a new data dir) is a member's from another start; else
    /// its membership is proposed to the cluster group, and it is told the
    /// members it can reach meanwhile.
    fn on_join(&self, request: JoinRequest) -> Result<MemberList, HandshakeRefusal> {
        let joiner = request.member.clone();
        tracing::info!(node = %info::node_name(joiner.node_id), fabric = %joiner.fabric_addr, service = %joiner.service_addr, new = request.incarnation != 0, "a node asks to join the cluster");
        let state = self.state();
        if state.is_retired(joiner.node_id) {
            return Err(HandshakeRefusal::Retired(joiner.node_id));
        }
        if request.incarnation != 0
            && let Some(reason) = state.refuse_new(joiner.node_id, request.incarnation)
        {
            tracing::warn!(node = %info::node_name(joiner.node_id), %reason, "join refused");
            return Err(HandshakeRefusal::IdInUse(joiner.node_id));
        }
        if let Some(node) = self.node.get() {
            // A founder not yet in the state it leads writes itself in
            // first: members reach each other by the state's addresses.
            if node.cluster_state().member(self.me.node_id).is_none() {
                let _ = node.propose_cluster(self.join_command());
            }
            if let Err(e) = node.propose_cluster(join_command(&request)) {
                tracing::warn!(error = %e, "proposing a joining node failed; it will ask again");
            }
        }
        let mut members = self.members();
        members.retain(|m| m.node_id != joiner.node_id);
        members.push(joiner);
        members.sort_by_key(|m| m.node_id);
        Ok(MemberList {
            cluster_id: self.cluster_id,
            cluster_name: self.cluster_name.clone(),
            shards: self.map.shards(),
            version: state.changed_at,
            members,
        })
    }

    fn join_command(&self) -> ClusterCommand {
        join_command(&self.request())
    }

    /// This node's own join request.
    fn request(&self) -> JoinRequest {
        JoinRequest {
            member: self.me.clone(),
            incarnation: self.incarnation,
        }
    }

    /// Proposes this node's membership if the group's state lacks it (or
    /// has other addresses): through the group once it knows a leader,
    /// else through another member's join handler.
    fn ask_for_membership(&self) {
        let Some(node) = self.node.get() else {
            return;
        };
        let state = node.cluster_state();
        if state.is_retired(self.me.node_id) || self.transport.retired_by_a_peer() {
            let members: Vec<SocketAddr> = self
                .members()
                .iter()
                .filter(|m| m.node_id != self.me.node_id)
                .map(|m| m.fabric_addr)
                .collect();
            (self.on_retired)(&members);
            return;
        }
        if state.member(self.me.node_id) == Some(&self.me) {
            return;
        }
        let command = self.join_command();
        if node.cluster_group_status().is_some_and(|s| s.leader != 0) {
            let _ = node.propose_cluster(command);
            return;
        }
        for other in self
            .members()
            .iter()
            .filter(|m| m.node_id != self.me.node_id)
        {
            match self
                .transport
                .join(other.fabric_addr, self.request(), JOIN_ATTEMPT_MS)
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(through = other.node_id, error = %e, "asking to join failed")
                }
            }
        }
    }

    /// The peer book and the placement follow the members.
    fn apply(&self, state: &ClusterState) {
        // The provisional addresses stay in the book (the group's state
        // wins where both name a node): a founder is a voter of the group
        // before its own join is applied, and must stay reachable. Not a
        // retired member, nor one at this node's own fabric address: a
        // wiped node's provisional list names its old self there, and it
        // would dial itself forever.
        let peers: BTreeMap<u64, SocketAddr> = self
            .provisional
            .iter()
            .chain(&state.members)
            .filter(|m| {
                m.node_id != self.me.node_id
                    && m.fabric_addr != self.me.fabric_addr
                    && !state.is_retired(m.node_id)
            })
            .map(|m| (m.node_id, m.fabric_addr))
            .collect();
        if let Err(e) = self.transport.set_peers(peers) {
            tracing::error!(error = %e, "updating the fabric's peers failed");
        }
        self.transport
            .set_retired(state.retired.iter().copied().collect());
        // Placement only from the group's own state (a provisional list may
        // lack members a leader must keep), and only once this node is in
        // it: nobody is added before the founder is.
        if let Some(node) = self.node.get()
            && state.member(self.me.node_id).is_some()
        {
            let placement = Placement {
                replication_factor: self.replication_factor,
                members: state.member_ids(),
                leaving: state.leaving.clone(),
                replace_after_ms: self.replace_after_ms,
            };
            if let Err(e) = node.set_placement(placement) {
                tracing::warn!(error = %e, "handing the placement to the shards failed");
            }
        }
    }

    /// `cluster-leave:node=<name>[;force=true]`: starts removing a member
    /// (its replicas and leaderships move off; `aerie cluster remove`
    /// retires it once none is left). Refused, unless forced, when the
    /// shards would be left with fewer voters than a majority of what they
    /// have now.
    pub fn leave(&self, name: &str, force: bool) -> std::result::Result<(), String> {
        let id = self.member_id(name)?;
        let state = self.state();
        if state.leaving.contains(&id) {
            return Ok(());
        }
        let placeable = state.placeable_ids().len();
        if let Some((after, now)) = below_majority(self.replication_factor, placeable)
            && !force
        {
            return Err(format!(
                "removing {name} would leave the shards {after} voter(s) of the {now} they have: below a majority (add a node first, or force it)"
            ));
        }
        self.propose(ClusterCommand::Leave(id))
    }

    /// `cluster-retire:node=<name>`: the member is gone for good (its
    /// remaining replicas are rebuilt elsewhere; it is refused from now on).
    pub fn retire(&self, name: &str) -> std::result::Result<(), String> {
        let id = self.member_id(name)?;
        self.propose(ClusterCommand::Retire(id))
    }

    fn member_id(&self, name: &str) -> std::result::Result<u64, String> {
        let id = u64::from_str_radix(name, 16)
            .map_err(|_| format!("{name:?} is not a node name (hex, as `node` answers)"))?;
        if self.state().member(id).is_none() {
            return Err(format!("{name} is not a member of this cluster"));
        }
        Ok(id)
    }

    fn propose(&self, command: ClusterCommand) -> std::result::Result<(), String> {
        let node = self.node.get().ok_or("the node is still starting")?;
        node.propose_cluster(command).map_err(|e| e.to_string())
    }

    /// Members being removed, and ids retired so far (`/metrics`).
    pub fn leaving_and_retired(&self) -> (usize, usize) {
        let state = self.state();
        (state.leaving.len(), state.retired.len())
    }

    /// Whether this node is a member that should hold replicas (not one
    /// leaving or retired).
    pub fn holds_replicas(&self) -> bool {
        let state = self.state();
        state.members.is_empty() || state.placeable_ids().contains(&self.me.node_id)
    }

    /// `cluster-members`: `<name>=<service address>` per member, joined by
    /// `;`.
    pub fn members_answer(&self) -> String {
        self.members()
            .iter()
            .map(|m| format!("{}={}", info::node_name(m.node_id), m.service_addr))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Voters per shard the cluster aims at: min(factor, members).
    pub fn effective_replication_factor(&self) -> usize {
        self.replication_factor.min(self.members().len()).max(1)
    }

    /// `peers-generation`: the group's index of the last change of the
    /// members.
    pub fn peers_generation(&self) -> u64 {
        self.state().changed_at
    }

    /// Where member `node_id` serves clients, if it is a member.
    pub fn service_address(&self, node_id: u64) -> Option<String> {
        let state = self.state();
        members_or(&state, &self.provisional)
            .iter()
            .find(|m| m.node_id == node_id)
            .map(|m| m.service_addr.clone())
    }

    /// `peers-clear-std`: every other member's service address.
    pub fn peers(&self, default_port: u16) -> String {
        let peers: Vec<Peer> = self
            .members()
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
        info::format_peers(self.peers_generation(), default_port, &peers)
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

    /// `cluster-status`: the members (`members=<name>,...`), those being
    /// removed (`leaving=<names>`), the effective
    /// replication factor (`replication-factor=N`), the cluster group
    /// (`group=cluster:<replicas>`), then per shard `shard=N:<replicas>`,
    /// joined by `;`, where `<replicas>` is
    /// `leader=<name>:voters=<names>:learners=<names>:applied=N:commit=N`
    /// (names as `node` answers them; `-` for none).
    pub fn status(&self) -> String {
        let members: Vec<u64> = self.members().iter().map(|m| m.node_id).collect();
        let mut parts = vec![
            format!("members={}", names(&members)),
            format!("leaving={}", names(&self.state().leaving)),
            format!("replication-factor={}", self.effective_replication_factor()),
        ];
        let node = self.node.get();
        if let Some(group) = node.and_then(|n| n.cluster_group_status()) {
            parts.push(format!("group=cluster:{}", replicas_part(&group)));
        }
        let rebuilding = node.map(|n| n.rebuilds().in_flight()).unwrap_or_default();
        for s in node.map(|n| n.status()).unwrap_or_default() {
            let rebuild = match rebuilding.get(&s.shard) {
                Some(f) => format!(":rebuild={}/{}", f.fetched_bytes, f.file_bytes),
                None => String::new(),
            };
            parts.push(format!("shard={}:{}{rebuild}", s.shard, replicas_part(&s)));
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

/// (voters after, voters now) when one placeable member fewer would leave
/// the shards below a majority of the voters they have.
fn below_majority(replication_factor: usize, placeable: usize) -> Option<(usize, usize)> {
    let now = replication_factor.min(placeable);
    let after = replication_factor.min(placeable.saturating_sub(1));
    (after < now / 2 + 1).then_some((after, now))
}

/// The command that adds `request`'s member: a new data dir's start joins
/// as itself (`JoinNew`), a founder or a member asking again as before.
fn join_command(request: &JoinRequest) -> ClusterCommand {
    match request.incarnation {
        0 => ClusterCommand::Join(request.member.clone()),
        incarnation => ClusterCommand::JoinNew(request.member.clone(), incarnation),
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

fn names(ids: &[u64]) -> String {
    let names: Vec<String> = ids.iter().map(|&id| info::node_name(id)).collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(",")
    }
}

fn replicas_part(s: &ShardStatus) -> String {
    let leader = match s.leader {
        0 => "-".to_string(),
        id => info::node_name(id),
    };
    let matched = s
        .progress
        .iter()
        .map(|(id, index)| format!("{}/{index}", info::node_name(*id)))
        .collect::<Vec<_>>();
    let matched = match matched.is_empty() {
        true => String::new(),
        false => format!(":matched={}", matched.join(",")),
    };
    format!(
        "leader={leader}:voters={}:learners={}:applied={}:commit={}{matched}",
        names(&s.voters),
        names(&s.learners),
        s.applied,
        s.commit
    )
}

/// The group's members, or `provisional` while it has none.
fn members_or<'a>(state: &'a ClusterState, provisional: &'a [MemberInfo]) -> &'a [MemberInfo] {
    if state.members.is_empty() {
        provisional
    } else {
        &state.members
    }
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
    fn removing_a_member_is_refused_only_below_a_majority() {
        assert_eq!(below_majority(3, 4), None, "3 voters stay 3");
        assert_eq!(below_majority(3, 3), None, "3 voters become 2: a majority");
        assert_eq!(below_majority(3, 2), Some((1, 2)));
        assert_eq!(below_majority(5, 5), None);
        assert_eq!(below_majority(1, 1), Some((0, 1)));
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
