//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the WAL. Cloneable, so one failed group
/// commit can fail every waiter in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the log refuses writes after an I/O failure ({0}); reopen it")]
    Poisoned(String),
    #[error("stream {stream}: {reason}")]
    InvalidAppend { stream: u64, reason: String },
    #[error("stream {stream}: index {index} is compacted (first index is {first_index})")]
    Compacted {
        stream: u64,
        index: u64,
        first_index: u64,
    },
    #[error("stream {stream}: index {index} is past the last index {last_index}")]
    Unavailable {
        stream: u64,
        index: u64,
        last_index: u64,
    },
    #[error("a {bytes}-byte entry exceeds max_entry_bytes ({limit})")]
    EntryTooLarge { bytes: usize, limit: usize },
    #[error("the log is closed")]
    Closed,
    #[error("invalid WAL configuration: {0}")]
    Config(String),
    #[error("io_uring is not usable here: {0}")]
    UringUnavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
