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
