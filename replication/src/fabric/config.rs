//! The fabric's settings, their defaults and the start-up checks (the
//! secret rule: a cluster without a secret must keep every fabric address on
//! loopback).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::fabric::format::{DEFAULT_MAX_FRAME_BYTES, FRAME_LIMIT_BYTES};
use crate::fabric::hello::ClusterId;

/// Shortest cluster secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;
/// Smallest bulk queue: one snapshot chunk with its frame.
pub const MIN_BULK_QUEUE_BYTES: usize = crate::install::CHUNK_BYTES + (64 << 10);

/// A node's fabric: who it is, where it listens, whom it talks to, and the
/// bounds. `FabricConfig::new` gives the defaults documented per field.
#[derive(Clone)]
pub struct FabricConfig {
    /// This node (non-zero).
    pub node_id: u64,
    /// The cluster: peers with another id are refused.
    pub cluster_id: ClusterId,
    /// The shared cluster secret (the bytes of `secret_file`), at least
    /// [`MIN_SECRET_BYTES`]. `None` is allowed only when the listen address
    /// and every peer address are loopback.
    pub secret: Option<Vec<u8>>,
    /// Where to accept peers (`127.0.0.1:0` picks a free port; see
    /// `TcpTransport::local_addr`).
    pub listen_addr: SocketAddr,
    /// Node id to fabric address; replaced at run time with `set_peers`.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Raft frames queued (and being written) per peer before sends are
    /// refused; at least `max_frame_bytes`. Default 32 MiB.
    pub raft_queue_bytes: usize,
    /// Snapshot-chunk frames queued per peer, on their own connection; at
    /// least [`MIN_BULK_QUEUE_BYTES`] (1 MiB + 64 KiB). Default 16 MiB.
    pub bulk_queue_bytes: usize,
    /// Largest frame payload sent or accepted (at most 64 MiB). Default
    /// 16 MiB + 64 KiB: a WAL entry at its default limit in a raft append.
    pub max_frame_bytes: usize,
    /// Deadline of one TCP connect. Default 1 000 ms.
    pub connect_timeout_ms: u64,
    /// Deadline of a whole handshake, either side. Default 2 000 ms.
    pub handshake_timeout_ms: u64,
    /// Deadline of one batch written to a socket; past it the connection is
    /// dropped and dialed again. Default 5 000 ms.
    pub write_timeout_ms: u64,
    /// An idle outgoing connection sends a keepalive this often. Default
    /// 1 000 ms.
    pub keepalive_interval_ms: u64,
    /// An incoming connection silent this long is closed. Default 10 000 ms.
    pub idle_timeout_ms: u64,
    /// First wait before dialing again after a failure. Default 50 ms.
    pub backoff_min_ms: u64,
    /// Cap of the doubling wait (each wait is drawn between half and all of
    /// it). Default 2 000 ms.
    pub backoff_max_ms: u64,
    /// Incoming connections still in their handshake at once; more are
    /// closed at once. Default 64.
    pub max_handshakes: usize,
    /// Threads of the fabric's own tokio runtime. Default 2.
    pub runtime_threads: usize,
    /// Whether a dialer not in the peer book is accepted once it proves the
    /// cluster secret (without a secret: reaches the loopback listener).
    /// The peer book is then only whom this node dials; nodes joining from
    /// seeds need it. `false` refuses them ("unknown peer"). Default true.
    pub accept_unknown_peers: bool,
}

impl std::fmt::Debug for FabricConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("FabricConfig")
            .field("node_id", &self.node_id)
            .field("cluster_id", &hex(&self.cluster_id))
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("listen_addr", &self.listen_addr)
            .field("peers", &self.peers)
            .field("accept_unknown_peers", &self.accept_unknown_peers)
            .finish_non_exhaustive()
    }
}

/// A cluster id in hex, for logs and errors.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FabricConfig {
    /// Defaults for node `node_id` of cluster `cluster_id` listening on
    /// `listen_addr`, with no peers and no secret yet.
    pub fn new(node_id: u64, cluster_id: ClusterId, listen_addr: SocketAddr) -> FabricConfig {
        FabricConfig {
            node_id,
            cluster_id,
            secret: None,
            listen_addr,
            peers: BTreeMap::new(),
            raft_queue_bytes: 32 << 20,
            bulk_queue_bytes: 16 << 20,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 2_000,
            write_timeout_ms: 5_000,
            keepalive_interval_ms: 1_000,
            idle_timeout_ms: 10_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            max_handshakes: 64,
            runtime_threads: 2,
            accept_unknown_peers: true,
        }
    }

    /// The checks `TcpTransport::start` makes.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("fabric: {what}")));
        if self.node_id == 0 {
            return bad("node_id must be non-zero".into());
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes > FRAME_LIMIT_BYTES {
            return bad(format!(
                "max_frame_bytes {} must be 1..={FRAME_LIMIT_BYTES}",
                self.max_frame_bytes
            ));
        }
        if self.raft_queue_bytes < self.max_frame_bytes
            || self.bulk_queue_bytes < MIN_BULK_QUEUE_BYTES
        {
            // A frame its queue can never hold would be refused forever: raft
            // would resend the same append and never get past it.
            return bad(format!(
                "raft_queue_bytes {} must hold a frame of max_frame_bytes {}, bulk_queue_bytes {} at least {MIN_BULK_QUEUE_BYTES}",
                self.raft_queue_bytes, self.max_frame_bytes, self.bulk_queue_bytes
            ));
        }
        if self.keepalive_interval_ms == 0 || self.idle_timeout_ms <= self.keepalive_interval_ms {
            return bad(format!(
                "idle_timeout_ms {} must exceed keepalive_interval_ms {} (non-zero)",
                self.idle_timeout_ms, self.keepalive_interval_ms
            ));
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return bad("backoff_min_ms must be non-zero and at most backoff_max_ms".into());
        }
        if self.runtime_threads == 0 || self.max_handshakes == 0 {
            return bad("runtime_threads and max_handshakes must be non-zero".into());
        }
        if let Some(secret) = &self.secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return bad(format!(
                "the cluster secret has {} bytes, at least {MIN_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        if self.peers.contains_key(&self.node_id) || self.peers.contains_key(&0) {
            return bad("the peer book must not name this node or node 0".into());
        }
        check_secret_rule(self.secret.is_some(), self.listen_addr, &self.peers)
    }
}

/// Without a secret every address must be loopback: anyone who can reach a
/// non-loopback port could otherwise speak raft to this node.
pub(crate) fn check_secret_rule(
    has_secret: bool,
    listen_addr: SocketAddr,
    peers: &BTreeMap<u64, SocketAddr>,
) -> Result<()> {
    let all_loopback =
        listen_addr.ip().is_loopback() && peers.values().all(|a| a.ip().is_loopback());
    if has_secret || all_loopback {
        return Ok(());
    }
    Err(Error::Config(
        "a cluster secret is required for non-loopback fabric addresses".into(),
    ))
}
