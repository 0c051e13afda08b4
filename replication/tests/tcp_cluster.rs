//! Three members in one process connected through real TCP (`TcpTransport`
//! on 127.0.0.1, authenticated with a cluster secret): election,
//! replication, a leader stopped and replaced, and a follower whose
//! transport is stopped while the leaders compact past it, rebuilt by a
//! snapshot fetched in chunks over the bulk lanes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_replication::fabric::format::refused;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aerie_replication::HandshakeRefusal;
use aerie_replication::fabric::{FabricConfig, TcpTransport};
use aerie_replication::transport::{Deliver, Envelope, Transport};
use common::*;

const SECRET: &[u8] = b"the test cluster's shared secret";
const CLUSTER_ID: [u8; 16] = *b"tcp-cluster-test";

fn fabric_config(id: u64, listen_addr: SocketAddr) -> FabricConfig {
    let mut config = FabricConfig::new(id, CLUSTER_ID, listen_addr);
    config.secret = Some(SECRET.to_vec());
    config.backoff_min_ms = 10;
    config.backoff_max_ms = 200;
    config.runtime_threads = 1;
    config
}

/// Lets a running node move to a new `TcpTransport` (the old one stopped):
/// the node holds this, the test swaps what is inside.
struct Swap(Mutex<Arc<TcpTransport>>);

impl Transport for Swap {
    fn send(&self, from: u64, to: u64, envelope: Envelope) -> bool {
        let current = self.0.lock().unwrap().clone();
        current.send(from, to, envelope)
    }
}

struct TcpCluster {
    members: Vec<Member>,
    transports: Vec<Arc<TcpTransport>>,
    swaps: Vec<Arc<Swap>>,
    delivers: Vec<Deliver>,
    addrs: BTreeMap<u64, SocketAddr>,
}

impl TcpCluster {
    fn start(dirs: &[tempfile::TempDir]) -> TcpCluster {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let transports: Vec<Arc<TcpTransport>> = VOTERS
            .iter()
            .map(|&id| TcpTransport::start(fabric_config(id, any_port)).unwrap())
            .collect();
        let addrs: BTreeMap<u64, SocketAddr> = VOTERS
            .iter()
            .zip(&transports)
            .map(|(&id, t)| (id, t.local_addr()))
            .collect();
        let mut cluster = TcpCluster {
            members: Vec::new(),
            swaps: transports
                .iter()
                .map(|t| Arc::new(Swap(Mutex::new(t.clone()))))
                .collect(),
            transports,
            delivers: Vec::new(),
            addrs,
        };
        // The peer books are set at run time, as membership changes will.
        for (i, &id) in VOTERS.iter().enumerate() {
            cluster.transports[i]
                .set_peers(cluster.peers_of(id))
                .unwrap();
        }
        for (&id, dir) in VOTERS.iter().zip(dirs) {
            let i = cluster.index(id);
            let mut member = Member::new(id, &VOTERS, dir.path());
            let deliver = member.open(cluster.swaps[i].clone());
            cluster.transports[i].set_deliver(deliver.clone());
            cluster.delivers.push(deliver);
            cluster.members.push(member);
        }
        cluster
    }

    fn peers_of(&self, id: u64) -> BTreeMap<u64, SocketAddr> {
        self.addrs
            .iter()
            .filter(|&(&other, _)| other != id)
            .map(|(&other, &addr)| (other, addr))
            .collect()
    }

    fn index(&self, id: u64) -> usize {
        VOTERS.iter().position(|&v| v == id).unwrap()
    }

    /// A fresh transport for member `i` on its old address.
    fn new_transport(&mut self, i: usize) {
        let id = self.members[i].id;
        let mut config = fabric_config(id, self.addrs[&id]);
        config.peers = self.peers_of(id);
        let transport = TcpTransport::start(config).unwrap();
        transport.set_deliver(self.delivers[i].clone());
        *self.swaps[i].0.lock().unwrap() = transport.clone();
        self.transports[i] = transport;
    }

    fn stop_member(&mut self, i: usize) {
        self.members[i].shutdown();
        self.transports[i].stop();
    }

    fn restart_member(&mut self, i: usize) {
        self.new_transport(i);
        self.delivers[i] = self.members[i].open(self.swaps[i].clone());
        self.transports[i].set_deliver(self.delivers[i].clone());
    }
}

#[test]
fn replicates_over_tcp_survives_leader_loss_and_rebuilds_a_cut_off_follower_by_snapshot() {
    let dirs = dirs();
    let mut cluster = TcpCluster::start(&dirs);
    let mut acked = vec![0i64; KEYS as usize];

    // Election and replication.
    let mut unknown = write(&cluster.members, 4, &mut acked);
    converge(&cluster.members, WAIT);
    assert_identical(&cluster.members);
    for t in &cluster.transports {
        let stats = t.stats();
        assert_only_startup_refusals(t);
        assert!(stats.raft_sent > 0 && stats.delivered > 0, "{stats:?}");
    }

    // Leader loss: its node and transport stop; a new leader takes over.
    let old = leader_of(&cluster.members, 0);
    let old_index = cluster.index(old);
    cluster.stop_member(old_index);
    let new = leader_of(&cluster.members, 0);
    assert_ne!(new, old);
    unknown += write(&cluster.members, 3, &mut acked);
    converge(&cluster.members, WAIT);
    for m in cluster.members.iter().filter(|m| m.node.is_some()) {
        assert_counters(m, &acked, unknown);
    }
    cluster.restart_member(old_index);
    converge(&cluster.members, WAIT);
    assert_identical(&cluster.members);

    // A follower's transport stops (its node runs on, unreachable) while the
    // leaders write, snapshot and compact past it.
    let cut = follower_of_all(&cluster.members);
    let cut_index = cluster.index(cut);
    cluster.transports[cut_index].stop();
    let before: Vec<u64> = (0..SHARDS)
        .map(|s| applied(cluster.members[cut_index].engine(), s))
        .collect();
    unknown += write(&cluster.members, 12, &mut acked);
    eventually(
        WAIT,
        "the leaders to compact past the cut-off follower",
        || {
            (0..SHARDS).all(|s| {
                cluster
                    .members
                    .iter()
                    .filter(|m| m.id != cut)
                    .all(|m| m.node().status()[s as usize].compacted > before[s as usize])
            })
        },
    );
    let refused_before: u64 = cluster
        .transports
        .iter()
        .map(|t| t.stats().dropped_down)
        .sum();
    assert!(
        refused_before > 0,
        "sends to the cut-off follower were refused"
    );

    // Its transport comes back on the same port; the others redial it.
    cluster.new_transport(cut_index);
    converge(&cluster.members, WAIT);
    assert_identical(&cluster.members);
    let rebuilt = cluster.members[cut_index].node().status();
    assert!(
        (0..SHARDS as usize).all(|s| rebuilt[s].compacted > before[s]),
        "the follower caught up without a snapshot install: {rebuilt:?}, before {before:?}"
    );
    let stats = cluster.transports[cut_index].stats();
    assert!(
        stats.bulk_sent > 0,
        "the snapshot chunks were asked for over TCP: {stats:?}"
    );
    for m in &cluster.members {
        assert_counters(m, &acked, unknown);
    }
    for t in &cluster.transports {
        assert_only_startup_refusals(t);
    }
}

/// While the peer books are being filled, a node may dial one that does not
/// know it yet; nothing else is ever refused here.
fn assert_only_startup_refusals(transport: &TcpTransport) {
    let refusals = transport.recent_refusals();
    assert!(
        refusals.iter().all(|r| matches!(
            r,
            HandshakeRefusal::UnknownPeer(_) | HandshakeRefusal::ByPeer(refused::UNKNOWN_PEER)
        )),
        "{refusals:?}"
    );
}
