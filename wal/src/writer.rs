//! The single writer thread: takes a group of queued batches, validates them in
//! order, places their frames in the active segment (rotating when full), writes
//! the group with one write and one fdatasync, then updates the index and
//! completes every waiter. Any write or sync failure poisons the log: after a
//! failed fdatasync the page cache state is unknown, so nothing more is written
//! or acknowledged until the log is reopened and recovered.

use crate::batch::{LogBatch, Op};
use crate::config::{FsyncPolicy, WalConfig};
use crate::error::{Error, Result};
use crate::format::{self, FRAME_PREFIX_BYTES, SEGMENT_HEADER_BYTES};
use crate::fs::{FileSystem, OpenMode};
use crate::queue::{Completion, Popped, Queue, Request, lock};
use crate::recovery;
use crate::state::{Meta, SegmentFile, State};
use crate::{Shared, Stats};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// A frame placed in a segment, to be applied to the index once durable.
struct Placed {
    stream: u64,
    op: Op,
    segment: u64,
    offset: u64,
    frame_len: u32,
}

/// One group commit in progress.
#[derive(Default)]
struct Group {
    /// Bytes for the active segment, to be written at `pending_offset`.
    pending: Vec<u8>,
    pending_offset: u64,
    placed: Vec<Placed>,
    /// Segments started during this group.
    started: Vec<(u64, SegmentFile)>,
    /// Stream bounds as of the frames placed so far.
    overlay: HashMap<u64, Meta>,
    accepted: Vec<Completion>,
    entries: u64,
    compacts: bool,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    fs: Arc<dyn FileSystem>,
    config: WalConfig,
    queue: Arc<Queue>,
    active: SegmentFile,
    active_seq: u64,
    write_offset: u64,
    free_files: Vec<PathBuf>,
    last_sync: Instant,
    unsynced: bool,
    /// Recovery cut the active segment; continue in a fresh one.
    cut_at_open: bool,
}

/// Where the writer starts, as recovery left the log.
pub(crate) struct Start {
    pub active: SegmentFile,
    pub active_seq: u64,
    pub write_offset: u64,
    pub free_files: Vec<PathBuf>,
    pub new_segment: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        fs: Arc<dyn FileSystem>,
        config: WalConfig,
        queue: Arc<Queue>,
        start: Start,
    ) -> Self {
        Self {
            shared,
            fs,
            config,
            queue,
            active: start.active,
            active_seq: start.active_seq,
            write_offset: start.write_offset,
            free_files: start.free_files,
            last_sync: Instant::now(),
            unsynced: false,
            cut_at_open: start.new_segment,
        }
    }

    /// Seals a segment recovery cut, and starts a fresh one with complete
    /// stream-state frames.
    fn start_new_segment(&mut self) -> Result<()> {
        let mut group = Group {
            pending_offset: self.write_offset,
            ..Group::default()
        };
        self.rotate(&mut group)?;
        self.flush(&mut group, self.config.fsync != FsyncPolicy::Never)?;
        self.apply(&mut group);
        Ok(())
    }

    pub(crate) fn run(mut self) {
        let started = if self.cut_at_open {
            self.start_new_segment()
        } else {
            Ok(())
        };
        if let Err(e) = started.and_then(|()| self.purge()) {
            self.poison(&e);
        }
        loop {
            match self
                .queue
                .pop_group(self.config.max_group_bytes, self.sync_timeout())
            {
                Popped::Requests(requests) => self.commit_group(requests),
                Popped::TimedOut => {}
                Popped::Closed => break,
            }
            if let Err(e) = self.sync_if_due() {
                self.poison(&e);
            }
        }
        if self.unsynced
            && self.config.fsync != FsyncPolicy::Never
            && let Err(e) = self.sync_active()
        {
            self.poison(&e);
        }
    }

    fn sync_timeout(&self) -> Option<Duration> {
        match self.config.fsync {
            FsyncPolicy::IntervalMs(ms) if self.unsynced => {
                Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    fn sync_if_due(&mut self) -> Result<()> {
        match self.config.fsync {
            FsyncPolicy::IntervalMs(ms)
                if self.unsynced && self.last_sync.elapsed() >= Duration::from_millis(ms) =>
            {
                self.sync_active()
            }
            _ => Ok(()),
        }
    }

    fn sync_active(&mut self) -> Result<()> {
        let started = Instant::now();
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io(&self.active.path, e))?;
        self.shared.stats.record_sync(started.elapsed());
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn poison(&self, error: &Error) {
        tracing::error!(%error, "WAL write failed; refusing writes until reopened");
        let mut poisoned = lock(&self.shared.poisoned);
        poisoned.get_or_insert_with(|| error.to_string());
    }

    fn poisoned(&self) -> Option<String> {
        lock(&self.shared.poisoned).clone()
    }

    fn commit_group(&mut self, requests: Vec<Request>) {
        if let Some(reason) = self.poisoned() {
            for request in requests {
                request.done.complete(Err(Error::Poisoned(reason.clone())));
            }
            return;
        }
        let mut group = Group {
            pending_offset: self.write_offset,
            ..Group::default()
        };
        let mut outcome = Ok(());
        for request in requests {
            if outcome.is_err() {
                group.accepted.push(request.done);
                continue;
            }
            match self.validate(&request.batch, &mut group) {
                Err(e) => request.done.complete(Err(e)),
                Ok(()) => {
                    outcome = self.place(request.batch, &mut group);
                    group.accepted.push(request.done);
                }
            }
        }
        let outcome =
            outcome.and_then(|()| self.flush(&mut group, self.config.fsync == FsyncPolicy::Always));
        if let Err(e) = outcome {
            self.poison(&e);
            for done in group.accepted {
                done.complete(Err(e.clone()));
            }
            return;
        }
        self.apply(&mut group);
        // Purge before completing, so a compaction's caller sees its effect.
        if group.compacts
            && let Err(e) = self.purge()
        {
            self.poison(&e);
        }
        for done in group.accepted.drain(..) {
            done.complete(Ok(()));
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.read_state()
    }

    /// Checks a batch against the stream bounds as of everything placed before it.
    fn validate(&self, batch: &LogBatch, group: &mut Group) -> Result<()> {
        let mut metas: HashMap<u64, Meta> = HashMap::new();
        for frame in &batch.frames {
            if frame.payload_len as usize > self.config.max_entry_bytes {
                return Err(Error::EntryTooLarge {
                    bytes: frame.payload_len as usize,
                    limit: self.config.max_entry_bytes,
                });
            }
            let meta = metas.entry(frame.stream).or_insert_with(|| {
                group
                    .overlay
                    .get(&frame.stream)
                    .copied()
                    .unwrap_or_else(|| self.state().meta(frame.stream))
            });
            meta.apply(&frame.op)
                .map_err(|reason| Error::InvalidAppend {
                    stream: frame.stream,
                    reason,
                })?;
        }
        Ok(())
    }

    fn place(&mut self, mut batch: LogBatch, group: &mut Group) -> Result<()> {
        for frame in &batch.frames {
            let len = frame.unsealed.len as u64;
            if self.write_offset + len > self.config.segment_size_bytes {
                self.rotate(group)?;
            }
            let bytes =
                &mut batch.buf[frame.unsealed.start..frame.unsealed.start + frame.unsealed.len];
            format::seal_frame(bytes, &frame.unsealed.body_crc, self.active_seq);
            group.pending.extend_from_slice(bytes);
            group.placed.push(Placed {
                stream: frame.stream,
                op: frame.op,
                segment: self.active_seq,
                offset: self.write_offset,
                frame_len: frame.unsealed.len as u32,
            });
            self.write_offset += len;
            let meta = group
                .overlay
                .entry(frame.stream)
                .or_insert_with(|| self.shared.read_state().meta(frame.stream));
            // Validated above against the same bounds, so this cannot fail.
            let _ = meta.apply(&frame.op);
            group.entries += u64::from(matches!(frame.op, Op::Entry { .. }));
            group.compacts |= matches!(frame.op, Op::Compact { .. } | Op::Reset { .. });
        }
        Ok(())
    }

    /// Writes the group's pending bytes, plus a zero terminator so a recycled
    /// file's old bytes after them read as the end of the data.
    fn flush(&mut self, group: &mut Group, sync: bool) -> Result<()> {
        if group.pending.is_empty() {
            return if sync && self.unsynced {
                self.sync_active()
            } else {
                Ok(())
            };
        }
        let terminator_fits =
            self.write_offset + FRAME_PREFIX_BYTES as u64 <= self.config.segment_size_bytes;
        let data_len = group.pending.len();
        if terminator_fits {
            group.pending.extend_from_slice(&[0u8; FRAME_PREFIX_BYTES]);
        }
        let started = Instant::now();
        let result = self
            .active
            .file
            .write_and_sync(&group.pending, group.pending_offset, sync)
            .map_err(|e| Error::io(&self.active.path, e));
        group.pending.truncate(data_len);
        result?;
        self.shared.stats.record_write(data_len as u64);
        if sync {
            self.shared.stats.record_sync(started.elapsed());
            self.last_sync = Instant::now();
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one, whose first frames
    /// record every stream's bounds and hard state.
    fn rotate(&mut self, group: &mut Group) -> Result<()> {
        self.flush(group, self.config.fsync != FsyncPolicy::Never)?;
        let seq = self.active_seq + 1;
        let segment = self.obtain_segment(seq)?;
        self.fs
            .sync_dir(&self.config.dir)
            .map_err(|e| Error::io(&self.config.dir, e))?;
        let mut states = LogBatch::new();
        {
            let state = self.state();
            let mut streams: Vec<u64> = state.streams.keys().copied().collect();
            streams.extend(group.overlay.keys().copied());
            streams.sort_unstable();
            streams.dedup();
            for stream in streams {
                let meta = group
                    .overlay
                    .get(&stream)
                    .copied()
                    .unwrap_or_else(|| state.meta(stream));
                states.push_stream_state(
                    stream,
                    meta.first_index,
                    meta.last_index,
                    meta.hard_state,
                );
            }
        }
        group.pending.clear();
        group
            .pending
            .extend_from_slice(&format::encode_segment_header(seq));
        group.pending_offset = 0;
        self.active = segment.clone();
        self.active_seq = seq;
        self.write_offset = SEGMENT_HEADER_BYTES as u64;
        group.started.push((seq, segment));
        if self.write_offset + states.size_bytes() as u64 > self.config.segment_size_bytes {
            return Err(Error::Config(
                "segment_size_bytes is too small for the stream-state frames".into(),
            ));
        }
        for frame in &states.frames {
            let bytes =
                &mut states.buf[frame.unsealed.start..frame.unsealed.start + frame.unsealed.len];
            format::seal_frame(bytes, &frame.unsealed.body_crc, seq);
            group.pending.extend_from_slice(bytes);
            self.write_offset += frame.unsealed.len as u64;
        }
        Ok(())
    }

    /// A recycled free file renamed to `seq`, or a new preallocated file.
    fn obtain_segment(&mut self, seq: u64) -> Result<SegmentFile> {
        let path = self.config.dir.join(format::segment_file_name(seq));
        if let Some(free) = self.free_files.pop() {
            self.fs
                .rename(&free, &path)
                .map_err(|e| Error::io(&free, e))?;
            let file = self
                .fs
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(&path, e))?;
            return Ok(SegmentFile { path, file });
        }
        recovery::create_segment(
            self.fs.as_ref(),
            &self.config.dir,
            seq,
            self.config.segment_size_bytes,
        )
    }

    /// Publishes a durable group to readers.
    fn apply(&self, group: &mut Group) {
        let mut state: RwLockWriteGuard<'_, State> = self.shared.write_state();
        for (seq, segment) in group.started.drain(..) {
            state.segments.insert(seq, segment);
            state.active_seq = seq;
            state.mirror.clear();
        }
        state.mirror.extend_from_slice(&group.pending);
        for placed in &group.placed {
            let stream = state.streams.entry(placed.stream).or_default();
            // Validated before placement by the same rule, so this cannot fail;
            // if it ever did, the index would disagree with recovery.
            let applied = stream.apply(
                &placed.op,
                placed.segment,
                placed.offset as u32,
                placed.frame_len,
            );
            debug_assert!(applied.is_ok(), "{applied:?}");
        }
        debug_assert_eq!(state.mirror.len() as u64, self.write_offset);
        drop(state);
        self.shared
            .stats
            .entries
            .fetch_add(group.entries, Ordering::Relaxed);
    }

    /// Deletes, archives or recycles sealed segments no stream needs any more,
    /// oldest first (a later segment may depend on an earlier one's frames).
    fn purge(&mut self) -> Result<()> {
        let victims: Vec<SegmentFile> = {
            let mut state = self.shared.write_state();
            let oldest_needed = state.oldest_needed_segment();
            let seqs: Vec<u64> = state
                .segments
                .range(..oldest_needed)
                .map(|(&seq, _)| seq)
                .collect();
            seqs.iter()
                .filter_map(|seq| state.segments.remove(seq))
                .collect()
        };
        if victims.is_empty() {
            return Ok(());
        }
        for victim in victims {
            self.retire(&victim.path)?;
        }
        self.fs
            .sync_dir(&self.config.dir)
            .map_err(|e| Error::io(&self.config.dir, e))
    }

    fn retire(&mut self, path: &Path) -> Result<()> {
        if let Some(archive) = self.config.archive_dir.clone() {
            return archive_segment(self.fs.as_ref(), path, &archive);
        }
        if self.free_files.len() < self.config.recycle_segments {
            let free = path.with_extension(format!(
                "{}.{}",
                format::SEGMENT_SUFFIX,
                format::FREE_SUFFIX
            ));
            self.fs
                .rename(path, &free)
                .map_err(|e| Error::io(path, e))?;
            self.free_files.push(free);
            return Ok(());
        }
        self.fs.remove(path).map_err(|e| Error::io(path, e))
    }
}

/// Moves a sealed segment into the archive directory (copying when it is on
/// another file system), durably, before it leaves the log directory.
fn archive_segment(fs: &dyn FileSystem, path: &Path, archive: &Path) -> Result<()> {
    fs.create_dir_all(archive)
        .map_err(|e| Error::io(archive, e))?;
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    let target = archive.join(name);
    if fs.rename(path, &target).is_err() {
        copy_file(fs, path, &target)?;
        fs.remove(path).map_err(|e| Error::io(path, e))?;
    }
    fs.sync_dir(archive).map_err(|e| Error::io(archive, e))
}

fn copy_file(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let source = fs
        .open(from, OpenMode::Read)
        .map_err(|e| Error::io(from, e))?;
    let target = fs
        .open(to, OpenMode::CreateNew)
        .map_err(|e| Error::io(to, e))?;
    let len = source.size_bytes().map_err(|e| Error::io(from, e))?;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK_BYTES) as usize;
        source
            .read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io(from, e))?;
        target
            .write_all_at(&buf[..n], at)
            .map_err(|e| Error::io(to, e))?;
        at += n as u64;
    }
    target.sync_data().map_err(|e| Error::io(to, e))
}

impl Stats {
    fn record_sync(&self, elapsed: Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn record_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }
}
