//! Aerie's shards: the 4096 partitions split into raft groups (tikv `raft`
//! 0.7, `RawNode`) whose logs live in the node's one WAL and whose state
//! machine is the engine. Every write goes through a group, even on one node.
//!
//! # Who owns what
//!
//! * [`Node`] (`node.rs`): the public API (propose, read barriers, status,
//!   snapshots now, write refusals) and the threads it starts.
//! * `ready.rs`: **the ready loop**, one thread that owns every shard's
//!   `RawNode`: it takes the queued inputs, ticks, collects every shard's
//!   `Ready`, writes all their entries and hard states in one WAL group commit,
//!   then sends messages and hands committed entries on. It never blocks on
//!   one shard and never stops on one request.
//! * `shard.rs`: one shard as the ready loop holds it (its `RawNode`, the
//!   backlog for its apply loop, its waiting reads) and how it is opened.
//! * [`health`]: why writes are refused (full disk, a stalled apply loop, a
//!   poisoned engine or WAL): asked before anything is proposed, so a refusal
//!   is a definite answer.
//! * `apply.rs`: **one apply loop per shard** applying committed entries in
//!   order to the engine (an entry the engine fails on is retried with
//!   backoff, never skipped), answering proposers, and taking scheduled
//!   snapshots between two entries (where the engine's views are at exactly
//!   one index).
//! * [`storage`]: raft-rs `Storage` answered from the WAL stream of the shard
//!   and its [`meta`] file (compaction point with its term, membership, a log
//!   reset still to write).
//! * `install.rs`: a follower told to install a snapshot fetches the file in
//!   chunks (resumable), verifies it, installs it into the engine; the other
//!   side serves chunks.
//! * [`transport`]: the [`transport::Transport`] trait (`send` never waits
//!   and says whether it queued; the ready loop reports a refused raft
//!   message with `report_unreachable`) and the in-process
//!   [`transport::LocalNetwork`] with drops, delays, reordering and partitions.
//! * [`membership`]: the `ConfChangeV2`s a caller proposes (learner, promote,
//!   replace in one joint change, leave joint) and how the ready loop applies
//!   a committed one (the new `ConfState` stored in the meta file at the
//!   entry's index, kept as a short history so a snapshot carries the
//!   configuration at its own index).
//! * [`placement`]: which members should hold each shard and the next
//!   change toward it, re-derived each round by the shard's leader (the
//!   ready loop drives it once the node knows the cluster's members).
//! * [`fabric`]: [`fabric::TcpTransport`], the transport between processes:
//!   its own small tokio runtime; per peer a raft lane and a bulk lane
//!   (snapshot chunks), each one dialed connection with a queue bounded in
//!   bytes; reconnects with backoff; peers authenticate (HMAC-SHA256
//!   challenge over the cluster secret, cluster id and node ids) before any
//!   of their bytes reach the raft (protobuf) decoder. The bytes are in
//!   `replication/FABRIC.md`, the constants in [`fabric::format`].
//! * [`cluster`]: the cluster's metadata (members and their addresses) and
//!   the commands that change it; the list a seed answers a joining node.
//! * [`group`]: the cluster group, the raft group whose state machine is
//!   that metadata: every member replicates it (voters as for a shard, the
//!   rest learners), the ready loop drives and applies it beside the
//!   shards; its state file and the inline snapshots its leader sends.
//! * [`check`]: consistency checks carried by each shard's log (a check
//!   entry every voter sums its copy at, reports judged alike everywhere).
//! * [`repair`]: which replicas of this node are damaged (a check's
//!   minority, a corrupt record met by a check, an apply or a read) and how
//!   the ready loop rebuilds each (hand leadership away, ask the leader for
//!   a snapshot).
//! * [`rebuild`]: snapshot fetches in flight (progress, rate, time left) and
//!   their pace.
//! * [`codec`]: the bytes of a log entry — the only module naming `bincode`
//!   (layouts in `replication/ENTRIES.md`).
//! * [`shards`]: partitions to shards; shard `s` uses WAL stream and engine
//!   log `s + 1`.
//!
//! # The invariants
//!
//! * A proposal is answered only once its entry is applied here; if
//!   leadership is lost first, the WAL fails or the node stops, the answer is
//!   `InDoubt`; if another entry took its index it is `Dropped` (never
//!   applied). A proposal refused before `RawNode::propose` (not the leader,
//!   writes refused, too large, overloaded) surely did not run. A waiter is
//!   matched by proposal id *and* the entry's index and term, so an entry
//!   replayed from an earlier boot never answers a new request.
//! * Every wait is bounded: read barriers give up after `max_read_wait_ms`,
//!   proposers bound their own wait (the node's handler uses the request's
//!   deadline), and every queue between threads is bounded.
//! * Nothing is applied twice: after a restart raft re-delivers committed
//!   entries after `min(engine durable applied index, commit)` and the apply
//!   loop skips those the engine already has.
//! * The log is compacted only up to what both the engine's durable state and
//!   the newest snapshot cover, so a lagging follower can always be rebuilt
//!   from a snapshot plus the log tail.
//! * A shard whose snapshot is installing is neither stepped nor ticked:
//!   raft holds that ready open until the engine has the snapshot.

mod apply;
pub mod check;
pub mod cluster;
pub mod codec;
mod error;
pub mod fabric;
pub mod group;
pub mod health;
mod install;
mod logging;
pub mod membership;
pub mod meta;
mod node;
pub mod placement;
mod ready;
pub mod rebuild;
pub mod repair;
mod shard;
pub mod shards;
pub mod storage;
pub mod transport;

pub use apply::SnapshotPolicy;

/// Locks a mutex whose holders never leave its data half-changed (every
/// critical section is short and panic-free), so a poisoned lock still
/// guards consistent data.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub use error::{Error, HandshakeRefusal, Result, WireError};
pub use node::{Node, NodeConfig, NodeParts, ReadConsistency, ShardStatus, now_ms};
