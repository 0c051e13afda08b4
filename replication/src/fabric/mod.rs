//! The TCP fabric between nodes: [`TcpTransport`], the [`Transport`] a
//! cluster member sends through. The bytes are in `replication/FABRIC.md`
//! (constants in [`format`]).
//!
//! * Per peer two lanes, each one outgoing connection with its own queue
//!   bounded in bytes: raft messages, and bulk (snapshot chunk requests and
//!   chunks), so a 1 MiB chunk never waits in front of a heartbeat.
//! * [`Transport::send`] never waits: it encodes the envelope and queues it,
//!   or refuses it at once (queue full, peer unknown or not connected) and
//!   returns false, which the ready loop reports to raft
//!   (`report_unreachable`).
//! * A lane's writer takes every queued frame, of every shard, per wakeup and
//!   writes them buffered (one syscall for many small frames); it reconnects
//!   with capped exponential backoff and jitter.
//! * Peers authenticate (mutual HMAC-SHA256 challenge over the cluster secret,
//!   binding both node ids, the cluster id, the lane and the protocol
//!   version) before any of their bytes reach a decoder other than the
//!   handshake's fixed-size ones: raft messages are parsed (protobuf) only on
//!   authenticated connections.
//! * A node that knows only a seed's address joins through it
//!   ([`TcpTransport::join`]): a one-shot exchange on its own lane, after
//!   the same handshake, answered by the seed's [`JoinHandler`]. Dialers not
//!   in the peer book are accepted once authenticated unless
//!   `accept_unknown_peers` is off.
//! * It runs on its own small tokio runtime, stopped with [`TcpTransport::stop`]
//!   or on drop; the rest of the crate stays std-threaded.

mod accept;
mod config;
mod conn;
mod dial;
mod envelope;
pub mod format;
pub mod frame;
mod handshake;
pub mod hello;
mod join;
mod queue;
mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

pub use config::{FabricConfig, MIN_BULK_QUEUE_BYTES, MIN_SECRET_BYTES};
pub use join::JoinHandler;
pub use stats::FabricStats;

use crate::cluster::{JoinRequest, MemberInfo, MemberList};
use crate::error::{Error, HandshakeRefusal, Result};
use crate::fabric::format::{ANY_NODE, FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, lane};
use crate::fabric::handshake::{Authenticated, Identity};
use crate::fabric::queue::{LaneQueue, Push};
use crate::fabric::stats::{Counters, bump};
use crate::lock;
use crate::transport::{Deliver, Envelope, Transport};

/// How long `stop` lets the runtime's tasks wind down.
const SHUTDOWN_MS: u64 = 1_000;
/// How much longer than its timeout `join` waits for the runtime's answer.
const JOIN_SLACK_MS: u64 = 250;

/// One peer's outgoing lanes.
struct PeerLanes {
    addr: SocketAddr,
    raft: Arc<LaneQueue>,
    bulk: Arc<LaneQueue>,
    tasks: [AbortHandle; 2],
}

impl PeerLanes {
    fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.raft.set_connected(false);
        self.bulk.set_connected(false);
    }
}

/// What the runtime's tasks share.
pub(crate) struct Shared {
    identity: Identity,
    config: FabricConfig,
    peers: Mutex<BTreeMap<u64, PeerLanes>>,
    /// The reader of each authenticated incoming (peer, lane).
    inbound: Mutex<BTreeMap<(u64, u8), AbortHandle>>,
    deliver: Mutex<Option<Deliver>>,
    join_handler: Mutex<Option<JoinHandler>>,
    /// Node ids the cluster retired: refused at every handshake.
    retired: Mutex<BTreeSet<u64>>,
    /// A peer refused this node as retired.
    retired_by_peer: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn is_peer(&self, node_id: u64) -> bool {
        lock(&self.peers).contains_key(&node_id)
    }

    fn queue(&self, to: u64, lane_id: u8) -> Option<Arc<LaneQueue>> {
        let peers = lock(&self.peers);
        let lanes = peers.get(&to)?;
        Some(if lane_id == lane::RAFT {
            lanes.raft.clone()
        } else {
            lanes.bulk.clone()
        })
    }

    fn deliver(&self, envelope: Envelope) {
        let deliver = lock(&self.deliver).clone();
        if deliver.is_some_and(|deliver| deliver(envelope)) {
            bump(&self.counters.delivered);
        } else {
            bump(&self.counters.undeliverable);
        }
    }

    fn replace_inbound(&self, peer: Authenticated, reader: AbortHandle) {
        let key = (peer.node_id(), peer.lane());
        if let Some(older) = lock(&self.inbound).insert(key, reader) {
            older.abort();
        }
    }

    fn close_inbound(&self, node_id: u64) {
        let mut inbound = lock(&self.inbound);
        for key in [(node_id, lane::RAFT), (node_id, lane::BULK)] {
            if let Some(reader) = inbound.remove(&key) {
                reader.abort();
            }
        }
    }

    /// Counts and logs a failed connection: refusals always at warn (they
    /// are configuration errors or attacks), I/O failures at warn unless the
    /// lane already said so since it was last up.
    fn note_failure(&self, error: &Error, quiet: bool) {
        let node = self.identity.node_id;
        match error {
            Error::Handshake { reason, .. } => {
                if let HandshakeRefusal::RetiredByMember(_) = reason {
                    self.retired_by_peer.store(true, Ordering::SeqCst);
                }
                self.counters.refused(reason);
                tracing::warn!(node, %error, "fabric handshake refused");
            }
            _ if quiet => {
                bump(&self.counters.io_failures);
                tracing::debug!(node, %error, "fabric peer still unreachable");
            }
            _ => {
                bump(&self.counters.io_failures);
                tracing::warn!(node, %error, "fabric peer unreachable; retrying with backoff");
            }
        }
    }
}

/// The TCP transport of one node. See the module docs.
pub struct TcpTransport {
    shared: Arc<Shared>,
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
    local_addr: SocketAddr,
    stopped: AtomicBool,
}

impl TcpTransport {
    /// Checks `config` (a config error names what is wrong, e.g. "a cluster
    /// secret is required for non-loopback fabric addresses"), binds the
    /// listen address, and starts dialing every peer. Envelopes received
    /// before [`TcpTransport::set_deliver`] are dropped (counted
    /// `undeliverable`).
    pub fn start(config: FabricConfig) -> Result<Arc<TcpTransport>> {
        config.validate()?;
        if config.secret.is_none() {
            tracing::warn!(
                node = config.node_id,
                "no cluster secret: fabric peers are not authenticated (allowed because every fabric address is loopback)"
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads)
            .thread_name(format!("fabric-{}", config.node_id))
            .enable_all()
            .build()
            .map_err(|e| io_error(&config, "starting the runtime", e))?;
        let listener = runtime
            .block_on(TcpListener::bind(config.listen_addr))
            .map_err(|e| io_error(&config, "binding the listen address", e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| io_error(&config, "reading the bound address", e))?;
        let peers = config.peers.clone();
        let shared = Arc::new(Shared {
            identity: Identity {
                node_id: config.node_id,
                cluster_id: config.cluster_id,
                secret: config.secret.clone().unwrap_or_default(),
            },
            config,
            peers: Mutex::new(BTreeMap::new()),
            inbound: Mutex::new(BTreeMap::new()),
            deliver: Mutex::new(None),
            join_handler: Mutex::new(None),
            retired: Mutex::new(BTreeSet::new()),
            retired_by_peer: AtomicBool::new(false),
            counters: Counters::default(),
        });
        runtime.spawn(accept::listen(shared.clone(), listener));
        let transport = TcpTransport {
            shared,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            local_addr,
            stopped: AtomicBool::new(false),
        };
        transport.set_peers(peers)?;
        Ok(Arc::new(transport))
    }

    /// The address actually bound (its port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where received envelopes go: the `Deliver` that `Node::open` returns.
    pub fn set_deliver(&self, deliver: Deliver) {
        *lock(&self.shared.deliver) = Some(deliver);
    }

    /// How this node answers nodes joining through it as their seed
    /// ([`TcpTransport::join`]); until it is set joins are refused.
    pub fn set_join_handler(&self, handler: JoinHandler) {
        *lock(&self.shared.join_handler) = Some(handler);
    }

    /// Joins through `seed`, whose node id need not be known: dials it on a
    /// join connection, authenticates (taking whatever node id the seed
    /// proves), sends `me` and returns the seed's member list, all within
    /// `timeout_ms` (and each step within its own deadline). A seed without
    /// a handler, or whose handler says no, answers
    /// `Error::Handshake { reason: ByPeer(refused::JOIN_REFUSED), .. }` (or
    /// `RETIRED`, `ID_IN_USE`: why). Blocks the calling thread;
    /// `me.member.node_id` must be this node's.
    pub fn join(&self, seed: SocketAddr, me: JoinRequest, timeout_ms: u64) -> Result<MemberList> {
        self.check_join(seed, &me.member)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let shared = self.shared.clone();
        self.handle.spawn(async move {
            let timeout = Duration::from_millis(timeout_ms);
            let asked = tokio::time::timeout(timeout, join::ask(&shared, seed, &me, timeout)).await;
            let _ = sender.send(asked.unwrap_or_else(|_| Err(join_timeout(seed, timeout_ms))));
        });
        // The runtime's timer answers first; this bounds a runtime too busy
        // to. A stopped runtime drops the task and with it the sender.
        match receiver.recv_timeout(Duration::from_millis(
            timeout_ms.saturating_add(JOIN_SLACK_MS),
        )) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(join_timeout(seed, timeout_ms)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::Stopped),
        }
    }

    /// What `join` refuses before dialing: another node's entry, a
    /// non-loopback seed without a secret, a stopped transport.
    fn check_join(&self, seed: SocketAddr, me: &MemberInfo) -> Result<()> {
        let config = &self.shared.config;
        if me.node_id != config.node_id {
            return Err(Error::Config(format!(
                "fabric: joining as node {} from the transport of node {}",
                me.node_id, config.node_id
            )));
        }
        config::check_secret_rule(
            config.secret.is_some(),
            config.listen_addr,
            &BTreeMap::from([(ANY_NODE, seed)]),
        )?;
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    /// Replaces the set of retired node ids (refused at every handshake);
    /// their connections are closed.
    pub fn set_retired(&self, retired: BTreeSet<u64>) {
        for &id in &retired {
            self.shared.close_inbound(id);
        }
        *lock(&self.shared.retired) = retired;
    }

    /// Whether a member (one that proved the cluster secret) refused this
    /// node because the cluster retired it.
    pub fn retired_by_a_peer(&self) -> bool {
        self.shared.retired_by_peer.load(Ordering::SeqCst)
    }

    /// Replaces the peer book: lanes of removed peers, and of peers whose
    /// address changed, are closed (with their incoming connections); new
    /// ones are dialed. Without a secret every address must be loopback.
    pub fn set_peers(&self, peers: BTreeMap<u64, SocketAddr>) -> Result<()> {
        let config = &self.shared.config;
        config::check_secret_rule(config.secret.is_some(), config.listen_addr, &peers)?;
        if peers.contains_key(&config.node_id) || peers.contains_key(&0) {
            return Err(Error::Config(
                "fabric: the peer book must not name this node or node 0".into(),
            ));
        }
        let mut current = lock(&self.shared.peers);
        let gone: Vec<u64> = current
            .iter()
            .filter(|(id, lanes)| peers.get(id) != Some(&lanes.addr))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(lanes) = current.remove(&id) {
                lanes.close();
            }
            self.shared.close_inbound(id);
        }
        for (id, addr) in peers {
            if !current.contains_key(&id) && !self.stopped.load(Ordering::SeqCst) {
                current.insert(id, self.spawn_lanes(id, addr));
            }
        }
        Ok(())
    }

    fn spawn_lanes(&self, peer: u64, addr: SocketAddr) -> PeerLanes {
        let config = &self.shared.config;
        let raft = Arc::new(LaneQueue::new(config.raft_queue_bytes));
        let bulk = Arc::new(LaneQueue::new(config.bulk_queue_bytes));
        let spawn = |lane_id: u8, queue: &Arc<LaneQueue>| {
            self.handle
                .spawn(dial::run_lane(
                    self.shared.clone(),
                    peer,
                    addr,
                    lane_id,
                    queue.clone(),
                ))
                .abort_handle()
        };
        let tasks = [spawn(lane::RAFT, &raft), spawn(lane::BULK, &bulk)];
        PeerLanes {
            addr,
            raft,
            bulk,
            tasks,
        }
    }

    /// Counters since the start.
    pub fn stats(&self) -> FabricStats {
        self.shared.counters.snapshot()
    }

    /// The last handshake refusals (ours and the peers'), oldest first.
    pub fn recent_refusals(&self) -> Vec<HandshakeRefusal> {
        self.shared.counters.recent()
    }

    /// Closes every connection and the listener, and stops the runtime
    /// (waiting up to a second for its tasks). Sends are refused from then
    /// on. Must not be called from inside an async task.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for (_, lanes) in std::mem::take(&mut *lock(&self.shared.peers)) {
            lanes.close();
        }
        for (_, reader) in std::mem::take(&mut *lock(&self.shared.inbound)) {
            reader.abort();
        }
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_MS));
        }
    }

    fn refuse(&self, counter: &std::sync::atomic::AtomicU64) -> bool {
        bump(counter);
        false
    }
}

fn join_timeout(seed: SocketAddr, timeout_ms: u64) -> Error {
    Error::NetTimeout {
        peer: format!("seed {seed}"),
        what: "joining",
        timeout_ms,
    }
}

fn io_error(config: &FabricConfig, what: &'static str, source: std::io::Error) -> Error {
    Error::Net {
        peer: format!("listen address {}", config.listen_addr),
        what,
        source,
    }
}

impl Transport for TcpTransport {
    fn send(&self, _from: u64, to: u64, envelope: Envelope) -> bool {
        let counters = &self.shared.counters;
        let lane_id = envelope::lane_of(&envelope);
        let Some(queue) = self.shared.queue(to, lane_id) else {
            return self.refuse(&counters.dropped_down);
        };
        let frame = match envelope::encode(&envelope) {
            Ok(frame)
                if frame.len() - FRAME_HEADER_BYTES - FRAME_TRAILER_BYTES
                    <= self.shared.config.max_frame_bytes =>
            {
                frame
            }
            Ok(frame) => {
                tracing::warn!(
                    node = self.shared.identity.node_id,
                    to,
                    bytes = frame.len(),
                    limit = self.shared.config.max_frame_bytes,
                    "fabric: envelope larger than max_frame_bytes dropped"
                );
                return self.refuse(&counters.dropped_down);
            }
            Err(error) => {
                tracing::warn!(node = self.shared.identity.node_id, to, %error, "fabric: envelope not encodable; dropped");
                return self.refuse(&counters.dropped_down);
            }
        };
        match queue.push(frame) {
            Push::Queued if lane_id == lane::RAFT => {
                bump(&counters.raft_sent);
                true
            }
            Push::Queued => {
                bump(&counters.bulk_sent);
                true
            }
            Push::Full => self.refuse(&counters.dropped_full),
            Push::Down => self.refuse(&counters.dropped_down),
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.stop();
    }
}
