//! How members of a shard talk: raft messages and snapshot-file chunks.
//! [`Transport`] is what a node sends through; the in-process
//! [`LocalNetwork`] connects nodes of one process for tests and benchmarks,
//! and can drop, delay, reorder and partition messages; the TCP transport
//! between processes is [`crate::fabric::TcpTransport`].

use crate::lock;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::prelude::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What travels between nodes.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// A raft message of a shard.
    Raft {
        /// The shard.
        shard: u32,
        /// The message (its `from` and `to` are node ids).
        message: Message,
    },
    /// A follower asks for bytes of a snapshot file.
    ChunkRequest {
        /// Asking node.
        from: u64,
        /// The shard.
        shard: u32,
        /// The file.
        file_name: String,
        /// From where.
        offset: u64,
    },
    /// The answer: bytes from `offset` (empty at the end of the file), or why
    /// not.
    Chunk {
        /// The shard.
        shard: u32,
        /// The file.
        file_name: String,
        /// Where the bytes start.
        offset: u64,
        /// The bytes, or an error text.
        bytes: Result<Vec<u8>, String>,
    },
}

impl Envelope {
    fn is_raft(&self) -> bool {
        matches!(self, Envelope::Raft { .. })
    }
}

/// Sends envelopes to other nodes. Delivery is best effort: raft retries.
pub trait Transport: Send + Sync {
    /// Sends `envelope` from node `from` to node `to`, never waiting. Returns
    /// false if it was not queued (peer unknown or unreachable, queue full):
    /// the ready loop then tells raft the peer is unreachable. True means
    /// queued, not delivered.
    fn send(&self, from: u64, to: u64, envelope: Envelope) -> bool;
}

/// Envelopes held for delayed delivery at most; more are dropped.
const MAX_DELAYED: usize = 64 * 1024;

/// Faults a [`LocalNetwork`] applies to raft messages (snapshot chunks are
/// only cut by partitions: their requests are retried by the follower).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of messages dropped (0.0..=1.0).
    pub drop_ratio: f64,
    /// Every message waits a random time up to this (which also reorders).
    pub max_delay_ms: u64,
    /// Pairs of nodes that cannot reach each other (both directions).
    pub cut: BTreeSet<(u64, u64)>,
}

impl Faults {
    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }
}

struct Delayed {
    at: Instant,
    seq: u64,
    to: u64,
    envelope: Envelope,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Hands an envelope to a node; false if it could not take it (full or gone).
pub type Deliver = Arc<dyn Fn(Envelope) -> bool + Send + Sync>;

struct NetState {
    inboxes: BTreeMap<u64, Deliver>,
    faults: Faults,
    rng: StdRng,
    seq: u64,
    dropped: u64,
}

/// Nodes of one process, connected through fault-injecting queues.
pub struct LocalNetwork {
    state: Arc<Mutex<NetState>>,
    delayed: Mutex<Option<SyncSender<Delayed>>>,
    delivery: Mutex<Option<JoinHandle<()>>>,
}

impl LocalNetwork {
    /// A network with no faults; `seed` makes drops and delays repeatable.
    pub fn new(seed: u64) -> Arc<LocalNetwork> {
        let state = Arc::new(Mutex::new(NetState {
            inboxes: BTreeMap::new(),
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            dropped: 0,
        }));
        let (sender, receiver) = mpsc::sync_channel(MAX_DELAYED);
        let delivery_state = state.clone();
        let delivery = std::thread::Builder::new()
            .name("local-net".into())
            .spawn(move || deliver_delayed(&delivery_state, &receiver))
            .ok();
        Arc::new(LocalNetwork {
            state,
            delayed: Mutex::new(Some(sender)),
            delivery: Mutex::new(delivery),
        })
    }

    /// Connects node `id`: envelopes for it go to `inbox` (one it refuses is
    /// dropped, like on a congested link).
    pub fn register(&self, id: u64, inbox: Deliver) {
        lock(&self.state).inboxes.insert(id, inbox);
    }

    /// Disconnects node `id` (it is down).
    pub fn unregister(&self, id: u64) {
        lock(&self.state).inboxes.remove(&id);
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// Cuts node `id` off from every node in `others`.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        let mut state = lock(&self.state);
        for &o in others {
            state.faults.cut.insert((id.min(o), id.max(o)));
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        lock(&self.state).faults.cut.clear();
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        lock(&self.delayed).take();
        if let Some(handle) = lock(&self.delivery).take() {
            let _ = handle.join();
        }
    }
}

/// Hands `envelope` to node `to`; false if it is not registered (down).
fn deliver_now(state: &Mutex<NetState>, to: u64, envelope: Envelope) -> bool {
    let inbox = lock(state).inboxes.get(&to).cloned();
    let Some(inbox) = inbox else {
        return false;
    };
    if !inbox(envelope) {
        lock(state).dropped += 1;
    }
    true
}

/// The delivery thread: holds delayed envelopes until their time.
fn deliver_delayed(state: &Mutex<NetState>, receiver: &Receiver<Delayed>) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    loop {
        let timeout = heap.peek().map_or(Duration::from_millis(50), |d| {
            d.at.saturating_duration_since(Instant::now())
        });
        match receiver.recv_timeout(timeout) {
            Ok(d) => heap.push(d),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = heap.pop() {
                let _ = deliver_now(state, d.to, d.envelope);
            }
        }
    }
}

/// Like a TCP connection, a cut link, a node that is down and a congested
/// link are known to the sender (`send` returns false); a random drop is not
/// (the message is lost after it was sent).
impl Transport for LocalNetwork {
    fn send(&self, from: u64, to: u64, envelope: Envelope) -> bool {
        let delay_ms = {
            let mut state = lock(&self.state);
            if state.faults.is_cut(from, to) {
                state.dropped += 1;
                return false;
            }
            let drop_ratio = state.faults.drop_ratio;
            if envelope.is_raft() && drop_ratio > 0.0 && state.rng.random_bool(drop_ratio.min(1.0))
            {
                state.dropped += 1;
                return true;
            }
            let max_delay_ms = state.faults.max_delay_ms;
            state.seq += 1;
            (max_delay_ms > 0).then(|| state.rng.random_range(0..=max_delay_ms))
        };
        let Some(delay_ms) = delay_ms else {
            return deliver_now(&self.state, to, envelope);
        };
        let seq = lock(&self.state).seq;
        let delayed = Delayed {
            at: Instant::now() + Duration::from_millis(delay_ms),
            seq,
            to,
            envelope,
        };
        let queued = lock(&self.delayed)
            .as_ref()
            .is_some_and(|sender| sender.try_send(delayed).is_ok());
        if !queued {
            // A link this congested drops.
            lock(&self.state).dropped += 1;
        }
        queued
    }
}
