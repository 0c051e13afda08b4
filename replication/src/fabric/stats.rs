//! What the fabric counts, for operators and tests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::HandshakeRefusal;
use crate::lock;

/// Refusals remembered for `TcpTransport::recent_refusals`.
const RECENT_REFUSALS: usize = 32;

/// Counters since the transport started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// Envelopes queued on a raft lane.
    pub raft_sent: u64,
    /// Envelopes queued on a bulk lane.
    pub bulk_sent: u64,
    /// Envelopes refused because the lane's queue was full.
    pub dropped_full: u64,
    /// Envelopes refused because the lane had no connection (or the peer is
    /// unknown, or the envelope is larger than a frame may be).
    pub dropped_down: u64,
    /// Envelopes received and handed to the node.
    pub delivered: u64,
    /// Envelopes received that the node could not take (its queue full).
    pub undeliverable: u64,
    /// Outgoing connections authenticated.
    pub connected: u64,
    /// Incoming connections authenticated.
    pub accepted: u64,
    /// Handshakes refused, by us or by the peer.
    pub handshakes_refused: u64,
    /// Authenticated connections closed for a bad frame.
    pub frames_refused: u64,
    /// Connections that failed on I/O or a deadline.
    pub io_failures: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub raft_sent: AtomicU64,
    pub bulk_sent: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_down: AtomicU64,
    pub delivered: AtomicU64,
    pub undeliverable: AtomicU64,
    pub connected: AtomicU64,
    pub accepted: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub frames_refused: AtomicU64,
    pub io_failures: AtomicU64,
    recent: Mutex<VecDeque<HandshakeRefusal>>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn refused(&self, refusal: &HandshakeRefusal) {
        bump(&self.handshakes_refused);
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(refusal.clone());
    }

    pub fn recent(&self) -> Vec<HandshakeRefusal> {
        lock(&self.recent).iter().cloned().collect()
    }

    pub fn snapshot(&self) -> FabricStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FabricStats {
            raft_sent: get(&self.raft_sent),
            bulk_sent: get(&self.bulk_sent),
            dropped_full: get(&self.dropped_full),
            dropped_down: get(&self.dropped_down),
            delivered: get(&self.delivered),
            undeliverable: get(&self.undeliverable),
            connected: get(&self.connected),
            accepted: get(&self.accepted),
            handshakes_refused: get(&self.handshakes_refused),
            frames_refused: get(&self.frames_refused),
            io_failures: get(&self.io_failures),
        }
    }
}
