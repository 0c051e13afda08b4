//! Aerie's write-ahead log.
//!
//! One log per node holds many *streams* (one per raft group). Entries are
//! addressed by `(stream, index)`, carry a term and an opaque payload, and live
//! in preallocated segment files (`<dir>/<sequence>.wal`, format in
//! `wal/FORMAT.md` and [`format`]). Each stream also has a hard state (term,
//! vote, commit) saved in the same batches as its entries.
//!
//! Who owns what:
//! * callers encode a [`LogBatch`] on their own thread and submit it to a
//!   bounded queue ([`Wal::write`] blocks, [`Wal::write_async`] is a future);
//! * one writer thread ([`writer`]) owns the active segment: it validates queued
//!   batches in order, writes them as one group with one fdatasync (per the
//!   [`FsyncPolicy`]), then publishes them to the in-memory index ([`state`])
//!   and completes every waiter;
//! * readers use the index: recent entries come from an in-memory copy of the
//!   active segment, older ones from one read of a sealed segment, re-checked
//!   against its CRC;
//! * [`recovery`] rebuilds the index at open, cutting a torn tail or failing
//!   with file and offset per the [`RecoveryMode`];
//! * every file operation goes through the [`fs::FileSystem`] seam, so tests
//!   inject faults ([`fault`]) and the write path is io_uring or
//!   `pwrite`+`fdatasync` ([`IoBackend`]).
//!
//! A segment is deleted (or recycled, or moved to the archive directory) only
//! when it and every older segment hold no live entry of any stream. Each new
//! segment starts with a stream-state frame per stream, so the newest segments
//! always carry every stream's bounds and hard state.

pub mod archive;
mod batch;
mod config;
mod error;
pub mod fault;
pub mod format;
pub mod fs;
pub mod inspect;
mod queue;
mod recovery;
pub mod scan;
mod state;
mod writer;

pub use batch::{EntryRef, LogBatch};
pub use config::{
    DEFAULT_SEGMENT_SIZE_BYTES, FsyncPolicy, MIN_SEGMENT_SIZE_BYTES, RecoveryMode, WalConfig,
};
pub use error::{Error, Result};
pub use format::HardState;
pub use fs::IoBackend;
pub use queue::WriteFuture;
pub use recovery::RecoveryReport;

use queue::{Queue, lock};
use state::State;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

/// One entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// Counters since open.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_micros: AtomicU64,
    pub bytes_written: AtomicU64,
    pub entries: AtomicU64,
}

/// A copy of the WAL's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Group-commit writes.
    pub writes: u64,
    /// fdatasync calls (a linked io_uring write+sync counts as one).
    pub syncs: u64,
    /// Total time spent in fdatasync, µs.
    pub sync_micros: u64,
    pub bytes_written: u64,
    pub entries: u64,
}

/// State shared by the handle and the writer thread.
pub(crate) struct Shared {
    state: RwLock<State>,
    poisoned: Mutex<Option<String>>,
    stats: Stats,
}

impl Shared {
    // The index is only changed in short sections that cannot panic halfway,
    // so a poisoned lock still guards consistent data.
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The write-ahead log. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Wal {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    writer: Mutex<Option<JoinHandle<()>>>,
    report: RecoveryReport,
    io_backend: &'static str,
    max_entry_bytes: usize,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("io_backend", &self.io_backend)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, recovering what is there.
    pub fn open(config: WalConfig) -> Result<Self> {
        config.validate()?;
        let (fs, io_backend) = match &config.file_system {
            Some(fs) => (Arc::clone(fs), "custom"),
            None => fs::file_system_for(config.io_backend)?,
        };
        let recovered = recovery::recover(&config, fs.as_ref())?;
        let active_seq = recovered.state.active_seq;
        let active = recovered
            .state
            .segments
            .get(&active_seq)
            .cloned()
            .ok_or_else(|| Error::corruption(&config.dir, 0, "no active segment after recovery"))?;
        let shared = Arc::new(Shared {
            state: RwLock::new(recovered.state),
            poisoned: Mutex::new(None),
            stats: Stats::default(),
        });
        let max_entry_bytes = config.max_entry_bytes;
        let queue = Arc::new(Queue::new(config.queue_capacity_bytes));
        let writer = writer::Writer::new(
            Arc::clone(&shared),
            fs,
            config.clone(),
            Arc::clone(&queue),
            writer::Start {
                active,
                active_seq,
                write_offset: recovered.write_offset,
                free_files: recovered.free_files,
                new_segment: recovered.start_new_segment,
            },
        );
        let handle = std::thread::Builder::new()
            .name("aerie-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&config.dir, e))?;
        Ok(Self {
            shared,
            queue,
            writer: Mutex::new(Some(handle)),
            report: recovered.report,
            io_backend,
            max_entry_bytes,
        })
    }

    fn check_writable(&self) -> Result<()> {
        match lock(&self.shared.poisoned).as_ref() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Writes a batch and returns once it is acknowledged (durable, under
    /// `FsyncPolicy::Always`). Blocks while the queue is full.
    pub fn write(&self, batch: LogBatch) -> Result<()> {
        self.check_writable()?;
        self.queue.push_blocking(batch)?.wait()
    }

    /// [`Wal::write`] as a future; stays pending while the queue is full.
    pub fn write_async(&self, batch: LogBatch) -> WriteFuture {
        match self.check_writable() {
            Ok(()) => WriteFuture::new(Arc::clone(&self.queue), batch),
            Err(e) => WriteFuture::failed(Arc::clone(&self.queue), e),
        }
    }

    /// Drops the stream's entries below `index`, durably.
    pub fn compact(&self, stream: u64, index: u64) -> Result<()> {
        let mut batch = LogBatch::new();
        batch.compact(stream, index);
        self.write(batch)
    }

    /// Entries `lo..hi` of a stream, stopping before `max_bytes` of payload is
    /// exceeded (but always at least one entry when the range is not empty).
    pub fn entries(&self, stream: u64, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let state = self.shared.read_state();
        let meta = state.meta(stream);
        self.check_range(stream, meta, lo, hi)?;
        let Some(stream_index) = state.streams.get(&stream) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut total_bytes = 0u64;
        for index in lo..hi {
            let Some(loc) = stream_index.loc(index) else {
                break;
            };
            let payload_bytes = u64::from(loc.frame_len) - format::FRAME_HEADER_BYTES as u64;
            if !out.is_empty() && total_bytes + payload_bytes > max_bytes {
                break;
            }
            total_bytes += payload_bytes;
            let payload = state.read_payload(stream, index, loc)?;
            out.push(Entry {
                index,
                term: loc.term,
                payload,
            });
        }
        Ok(out)
    }

    fn check_range(&self, stream: u64, meta: state::Meta, lo: u64, hi: u64) -> Result<()> {
        if lo < meta.first_index {
            return Err(Error::Compacted {
                stream,
                index: lo,
                first_index: meta.first_index,
            });
        }
        if hi > meta.last_index + 1 {
            return Err(Error::Unavailable {
                stream,
                index: hi - 1,
                last_index: meta.last_index,
            });
        }
        Ok(())
    }

    /// The term of one entry.
    pub fn term(&self, stream: u64, index: u64) -> Result<u64> {
        let state = self.shared.read_state();
        let meta = state.meta(stream);
        self.check_range(stream, meta, index, index + 1)?;
        state
            .streams
            .get(&stream)
            .and_then(|s| s.loc(index))
            .map(|loc| loc.term)
            .ok_or(Error::Unavailable {
                stream,
                index,
                last_index: meta.last_index,
            })
    }

    /// The first live index (1 for a new stream).
    pub fn first_index(&self, stream: u64) -> u64 {
        self.shared.read_state().meta(stream).first_index
    }

    /// The last index (`first_index - 1` when the stream has no entries).
    pub fn last_index(&self, stream: u64) -> u64 {
        self.shared.read_state().meta(stream).last_index
    }

    pub fn hard_state(&self, stream: u64) -> HardState {
        self.shared.read_state().meta(stream).hard_state
    }

    /// Every stream the log knows.
    pub fn streams(&self) -> Vec<u64> {
        self.shared.read_state().streams.keys().copied().collect()
    }

    /// Segment sequence numbers currently in the log directory, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.shared.read_state().segments.keys().copied().collect()
    }

    /// Per stream with live entries, the segment its oldest live entry is in:
    /// the streams that pin the oldest segments are the ones whose log must be
    /// compacted (after a snapshot) before those segments can be freed.
    pub fn first_segment_of_streams(&self) -> BTreeMap<u64, u64> {
        let state = self.shared.read_state();
        state
            .streams
            .iter()
            .filter_map(|(id, s)| s.entries.front().map(|e| (*id, e.segment)))
            .collect()
    }

    /// The largest entry payload a write accepts (`WalConfig::max_entry_bytes`).
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    pub fn stats(&self) -> WalStats {
        let stats = &self.shared.stats;
        WalStats {
            writes: stats.writes.load(Ordering::Relaxed),
            syncs: stats.syncs.load(Ordering::Relaxed),
            sync_micros: stats.sync_micros.load(Ordering::Relaxed),
            bytes_written: stats.bytes_written.load(Ordering::Relaxed),
            entries: stats.entries.load(Ordering::Relaxed),
        }
    }

    /// What the open found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// `uring`, `sync`, or `custom` (a caller-supplied file system).
    pub fn io_backend(&self) -> &'static str {
        self.io_backend
    }

    /// Writes what is queued, syncs (unless the policy is `never`) and stops the writer.
    pub fn close(&self) -> Result<()> {
        self.queue.close();
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            handle
                .join()
                .map_err(|_| Error::Poisoned("the WAL writer thread panicked".into()))?;
        }
        self.check_writable()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
