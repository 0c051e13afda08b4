//! The crate's one error type: Aerospike record errors (a command that had no
//! effect) and system errors (I/O, corruption, configuration).

use std::path::{Path, PathBuf};

/// Every error the engine returns.
///
/// The first group are the Aerospike record-level outcomes: the command was
/// applied (the log's applied index advanced) but had no effect. The second group
/// are system errors: the command was *not* applied and the caller must treat the
/// engine (for I/O) or the record (for corruption) as failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not exist (or has expired).
    #[error("record not found")]
    NotFound,
    /// Create-only write on an existing record.
    #[error("record already exists")]
    RecordExists,
    /// The generation policy rejected the write.
    #[error("generation mismatch")]
    GenerationMismatch,
    /// Increment/append on a bin of another type.
    #[error("incompatible bin type")]
    BinTypeMismatch,
    /// The encoded record does not fit in one write block.
    #[error("record too big: {size_bytes} bytes, the limit is {max_bytes}")]
    RecordTooBig {
        /// Encoded size of the record.
        size_bytes: usize,
        /// Largest record a write block holds.
        max_bytes: usize,
    },
    /// Malformed command (bad TTL, bad op combination, name too long...).
    #[error("parameter error: {0}")]
    Parameter(String),
    /// Disk or memory use passed its stop-writes threshold.
    #[error("stop writes: {0}")]
    StopWrites(String),
    /// The command names a namespace this engine does not have.
    #[error("namespace not found: {0}")]
    NamespaceNotFound(String),
    /// A bin name longer than 15 bytes.
    #[error("bin name too long: {0} bytes (at most 15)")]
    BinNameTooLong(usize),
    /// The stored user key differs from the key sent with the write.
    #[error("stored key differs from the key sent")]
    KeyMismatch,
    /// A command for a log index at or below the log's applied index: a caller
    /// bug (the WAL replays each entry after `durable_applied_index` once).
    #[error("log {log_id}: index {index} is not after the applied index {applied}")]
    IndexNotAfterApplied {
        /// The log.
        log_id: u64,
        /// The index the caller tried to apply.
        index: u64,
        /// The log's applied index.
        applied: u64,
    },
    /// An I/O error on a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An fsync (of a file or a directory) failed. The engine is poisoned:
    /// after a failed fsync the kernel may have dropped the dirty pages and
    /// cleared the error, so retrying could report data durable that is not.
    #[error("fsync failed on {path}: {source}; the engine refuses writes until reopened")]
    SyncFailed {
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An earlier fsync failed (the reason): writes, checkpoints and
    /// background work are refused until the engine is reopened, which
    /// recovers the last durable checkpoint. Reads keep working.
    #[error("engine poisoned by an earlier failure, reopen it: {0}")]
    Poisoned(String),
    /// Bytes on disk failed a check (checksum, bound, magic).
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// File.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The background driver's thread could not be started.
    #[error("cannot start the engine background thread: {0}")]
    Spawn(std::io::Error),
    /// An invalid `EngineConfig`.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// The Aerospike result code (wire spec §7.5) for this error.
    pub fn result_code(&self) -> u8 {
        match self {
            Error::NotFound => 2,
            Error::GenerationMismatch => 3,
            Error::Parameter(_) => 4,
            Error::RecordExists => 5,
            Error::StopWrites(_) => 8,
            // A full device is Aerospike's stop-writes for the client, though
            // the command was not applied (the apply loop retries it).
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => 8,
            Error::BinTypeMismatch => 12,
            Error::RecordTooBig { .. } => 13,
            Error::KeyMismatch => 19,
            Error::NamespaceNotFound(_) => 20,
            Error::BinNameTooLong(_) => 21,
            Error::IndexNotAfterApplied { .. }
            | Error::Io { .. }
            | Error::SyncFailed { .. }
            | Error::Poisoned(_)
            | Error::Spawn(_)
            | Error::Corruption { .. }
            | Error::Config(_) => 1,
        }
    }

    /// True for record-level outcomes: the command counts as applied (the log's
    /// applied index advances) though it changed nothing.
    pub fn is_record_error(&self) -> bool {
        !matches!(
            self,
            Error::IndexNotAfterApplied { .. }
                | Error::Io { .. }
                | Error::SyncFailed { .. }
                | Error::Poisoned(_)
                | Error::Spawn(_)
                | Error::Corruption { .. }
                | Error::Config(_)
        )
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the file path to an `std::io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
    /// For fsyncs: a failure is [`Error::SyncFailed`].
    fn synced_at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }

    fn synced_at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::SyncFailed {
            path: path.to_path_buf(),
            source,
        })
    }
}
