//! The binary's error type: the crates' errors plus refusals.

use std::path::PathBuf;

use crate::datadir::DataDirError;

/// Everything an `aerie` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A snapshot file or operation.
    #[error(transparent)]
    Snapshot(#[from] aerie_snapshot::Error),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] aerie_engine::Error),
    /// The WAL.
    #[error(transparent)]
    Wal(#[from] aerie_wal::Error),
    /// An operation that would be wrong, refused before it starts.
    #[error("refused: {0}")]
    Refused(String),
    /// A file outside the crates' own.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// True if the failure is damaged data (exit code 1) rather than a usage
    /// or environment problem (exit code 2).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Snapshot(aerie_snapshot::Error::Corruption { .. })
                | Error::Engine(aerie_engine::Error::Corruption { .. })
                | Error::Wal(aerie_wal::Error::Corruption { .. })
        )
    }
}

/// The binary's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
