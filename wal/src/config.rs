//! WAL settings.

use crate::error::{Error, Result};
use crate::fs::{FileSystem, IoBackend};
use std::path::PathBuf;
use std::sync::Arc;

/// When the writer calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every group commit is synced before any of it is acknowledged.
    #[default]
    Always,
    /// Acknowledge after the write; sync at most this many ms later. A crash of
    /// the host (not of the process) can lose that window.
    IntervalMs(u64),
    /// Never sync; the page cache decides. For tests and benchmarks.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => other
                .strip_prefix("interval_ms:")
                .and_then(|ms| ms.parse().ok())
                .map(Self::IntervalMs)
                .ok_or_else(|| {
                    format!(
                        "unknown fsync policy {other:?} (expected always, never or interval_ms:N)"
                    )
                }),
        }
    }
}

/// What an open does with damage it finds (the names follow RocksDB's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Any bad frame or header fails the open, torn tails included. Promises
    /// that nothing that was ever written is dropped silently.
    AbsoluteConsistency,
    /// A bad frame at the end of the newest segment with nothing valid after it
    /// is a torn write: it is cut off with a warning. Any other damage fails the
    /// open, naming file and offset. Promises that nothing acknowledged under
    /// `FsyncPolicy::Always` is lost without an error.
    #[default]
    TornTail,
    /// Replay stops at the first bad frame anywhere; that segment is cut there
    /// and later segments are renamed aside (`*.wal.dropped-<ms>`). The log is
    /// then a consistent prefix of what was written; the report lists what was
    /// dropped. For salvaging a damaged log.
    PointInTime,
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "absolute_consistency" => Ok(Self::AbsoluteConsistency),
            "torn_tail" => Ok(Self::TornTail),
            "point_in_time" => Ok(Self::PointInTime),
            other => Err(format!(
                "unknown recovery mode {other:?} (expected absolute_consistency, torn_tail or point_in_time)"
            )),
        }
    }
}

/// Everything [`crate::Wal::open`] needs.
#[derive(Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// Size each segment file is preallocated to.
    pub segment_size_bytes: u64,
    pub fsync: FsyncPolicy,
    pub io_backend: IoBackend,
    pub recovery_mode: RecoveryMode,
    /// Bytes of submitted but not yet written batches; submitters wait beyond it.
    pub queue_capacity_bytes: usize,
    /// Bytes the writer takes from the queue for one group commit.
    pub max_group_bytes: usize,
    /// Largest entry payload; at most a quarter of a segment.
    pub max_entry_bytes: usize,
    /// Freed segment files kept for reuse instead of deleted.
    pub recycle_segments: usize,
    /// Where sealed segments go before they are deleted (for point-in-time recovery).
    pub archive_dir: Option<PathBuf>,
    /// Replaces the real file system (tests inject faults through it).
    pub file_system: Option<Arc<dyn FileSystem>>,
}

impl std::fmt::Debug for WalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalConfig")
            .field("dir", &self.dir)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("fsync", &self.fsync)
            .field("io_backend", &self.io_backend)
            .field("recovery_mode", &self.recovery_mode)
            .field("archive_dir", &self.archive_dir)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;
/// Smallest segment allowed: a segment must hold its header, one stream-state
/// frame per stream and at least one maximal entry.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 64 << 10;

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            fsync: FsyncPolicy::Always,
            io_backend: IoBackend::Auto,
            recovery_mode: RecoveryMode::TornTail,
            queue_capacity_bytes: 64 << 20,
            max_group_bytes: 4 << 20,
            max_entry_bytes: 16 << 20,
            recycle_segments: 2,
            archive_dir: None,
            file_system: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return Err(Error::Config(format!(
                "segment_size_bytes {} is below the minimum {MIN_SEGMENT_SIZE_BYTES}",
                self.segment_size_bytes
            )));
        }
        if self.max_entry_bytes as u64 > self.segment_size_bytes / 4 {
            return Err(Error::Config(format!(
                "max_entry_bytes {} exceeds a quarter of segment_size_bytes {}",
                self.max_entry_bytes, self.segment_size_bytes
            )));
        }
        if self.queue_capacity_bytes == 0 || self.max_group_bytes == 0 {
            return Err(Error::Config(
                "queue and group sizes must be positive".into(),
            ));
        }
        Ok(())
    }
}
