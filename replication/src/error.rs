//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Everything a shard can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file outside the WAL and the engine (raft meta, snapshots dir).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of ours that fails its checks.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// The WAL.
    #[error("WAL: {0}")]
    Wal(#[from] aerie_wal::Error),
    /// The engine (a system error: the command was not applied).
    #[error("engine: {0}")]
    Engine(#[from] aerie_engine::Error),
    /// A snapshot.
    #[error("snapshot: {0}")]
    Snapshot(#[from] aerie_snapshot::Error),
    /// raft-rs.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A log entry that does not decode.
    #[error("log entry: {0}")]
    Codec(#[from] crate::codec::DecodeError),
    /// This node is not the shard's leader; `leader` is a hint (0 = unknown).
    #[error("shard {shard}: not the leader (leader hint {leader})")]
    NotLeader {
        /// The shard.
        shard: u32,
        /// The leader this node believes in, 0 if none.
        leader: u64,
    },
    /// Leadership was lost after the command was proposed and before it was
    /// applied: it may or may not take effect (Aerospike's "in doubt").
    #[error("shard {0}: outcome unknown (leadership changed before the command was applied)")]
    InDoubt(u32),
    /// The command was proposed but another entry took its place: it will
    /// never be applied and may be retried.
    #[error("shard {0}: the proposal was dropped by a new leader; it was not applied")]
    Dropped(u32),
    /// Too many proposals in flight on the shard.
    #[error("shard {shard}: {limit} proposals in flight; try again")]
    Overloaded {
        /// The shard.
        shard: u32,
        /// The in-flight limit.
        limit: usize,
    },
    /// No answer in time.
    #[error("shard {0}: timed out")]
    Timeout(u32),
    /// The node is shutting down or its shard loop stopped.
    #[error("the node is stopped")]
    Stopped,
    /// A shard id this node does not have.
    #[error("no shard {0}")]
    NoShard(u32),
    /// Writes to the shard are refused for now (nothing was proposed).
    #[error("shard {shard}: writes refused: {refusal}")]
    WritesRefused {
        /// The shard.
        shard: u32,
        /// Why.
        refusal: crate::health::Refusal,
    },
    /// A command too large for one log entry (nothing was proposed).
    #[error("shard {shard}: a {bytes}-byte command exceeds the {limit}-byte log entry limit")]
    TooLarge {
        /// The shard.
        shard: u32,
        /// The encoded command.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Bytes from a fabric peer that fail a check (the connection is closed).
    #[error("fabric peer {peer}: {source}")]
    Wire {
        /// The peer: node id if authenticated, else its address.
        peer: String,
        /// What failed.
        #[source]
        source: WireError,
    },
    /// A fabric handshake refused, by us or by the peer.
    #[error("fabric peer {peer}: handshake refused: {reason}")]
    Handshake {
        /// The peer's address, and the node id it claimed if it got that far.
        peer: String,
        /// Why.
        reason: HandshakeRefusal,
    },
    /// A fabric connection's I/O failed.
    #[error("fabric peer {peer}: {what}: {source}")]
    Net {
        /// The peer.
        peer: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A fabric connection's step did not finish in time.
    #[error("fabric peer {peer}: {what} timed out after {timeout_ms} ms")]
    NetTimeout {
        /// The peer.
        peer: String,
        /// What was being done.
        what: &'static str,
        /// The deadline.
        timeout_ms: u64,
    },
}

/// Why bytes from a fabric peer were rejected (`replication/FABRIC.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame longer than the receiver accepts (checked before reading it).
    #[error("a frame of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// Declared payload bytes.
        bytes: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// The frame's CRC32 does not match its bytes.
    #[error("frame checksum {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The CRC the frame carries.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// A frame type this version does not know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A known frame where the protocol does not allow it.
    #[error("unexpected {got} frame (expected {expected})")]
    Unexpected {
        /// The frame type received.
        got: &'static str,
        /// What the protocol expected.
        expected: &'static str,
    },
    /// A payload that does not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which payload.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An authenticated peer sent a message claiming another sender.
    #[error("a {what} from node {claimed} on the connection of node {peer}")]
    Impersonation {
        /// The message kind.
        what: &'static str,
        /// The sender the message names.
        claimed: u64,
        /// The node the connection authenticated as.
        peer: u64,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
}

/// Why a fabric handshake was refused (`replication/FABRIC.md`, the
/// `REFUSED` reason codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeRefusal {
    /// Bytes that are not a handshake of this protocol (wrong magic, a bad
    /// frame, a malformed payload).
    #[error("not a fabric handshake: {0}")]
    Malformed(WireError),
    /// Another protocol version.
    #[error("protocol version {theirs}, this node speaks {ours}")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A peer of another cluster.
    #[error("cluster id {theirs}, this node is in cluster {ours}")]
    Cluster {
        /// Ours (hex).
        ours: String,
        /// Theirs (hex).
        theirs: String,
    },
    /// The node answering is not the one dialed, or the dialer expected
    /// another node here.
    #[error("expected node {expected}, found node {found}")]
    WrongNode {
        /// The node id that should be there.
        expected: u64,
        /// The node id there.
        found: u64,
    },
    /// A dialer whose node id is not in this node's peer book.
    #[error("node {0} is not a known peer")]
    UnknownPeer(u64),
    /// The peer does not know the cluster secret (or we do not share it).
    #[error("authentication failed: wrong cluster secret")]
    BadMac,
    /// A lane number this version does not know.
    #[error("unknown lane {0}")]
    Lane(u8),
    /// Too many handshakes in progress on this node.
    #[error("too many connections in handshake")]
    Busy,
    /// A join this node has no handler for, or whose handler said no.
    #[error("join refused")]
    JoinRefused,
    /// A node the cluster retired: it may never come back under its id.
    #[error("node {0} was retired from this cluster")]
    Retired(u64),
    /// A member, having proven the cluster secret, says the cluster
    /// retired this node.
    #[error("member {0} says this node was retired from the cluster")]
    RetiredByMember(u64),
    /// A node with a new data dir claims the id of a member: a member that
    /// forgot its votes and log could elect a leader lacking committed
    /// writes.
    #[error("node id {0} belongs to a member; a new data dir may not reuse it")]
    IdInUse(u64),
    /// The other side refused us, with this reason code
    /// (`fabric::format::refused`).
    #[error("the peer refused us: {}", crate::fabric::format::refused::name(*.0))]
    ByPeer(u8),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corruption(path: &Path, offset: u64, reason: &str) -> Error {
        Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: reason.to_string(),
        }
    }
}
