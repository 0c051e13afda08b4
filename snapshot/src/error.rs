//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that fail their checks: the file is not installed.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// The engine failed (reading a view, or installing).
    #[error("engine: {0}")]
    Engine(#[from] aerie_engine::Error),
    /// The WAL archive failed (point-in-time recovery).
    #[error("WAL: {0}")]
    Wal(#[from] aerie_wal::Error),
    /// A restore or install that would be wrong, refused before it starts.
    #[error("refused: {0}")]
    Refused(String),
    /// A received chunk out of order.
    #[error("transfer of {path}: chunk at offset {offset}, expected {expected}")]
    OutOfOrder {
        /// The partial file.
        path: PathBuf,
        /// Offset of the chunk offered.
        offset: u64,
        /// The only offset accepted next.
        expected: u64,
    },
    /// A bad argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
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

    pub(crate) fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Attaches a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
