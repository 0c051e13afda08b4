//! Opening a log directory: scan the segments in order, rebuild the index, and
//! decide what to do with damage according to the [`RecoveryMode`].

use crate::batch::Op;
use crate::config::{RecoveryMode, WalConfig};
use crate::error::{Error, Result};
use crate::format::{self, FREE_SUFFIX, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX};
use crate::fs::{FileSystem, OpenMode};
use crate::scan::{self, SegmentScan};
use crate::state::{SegmentFile, State, Stream};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an open found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub frames: u64,
    pub entries: u64,
    pub bytes_scanned: u64,
    /// A torn write cut off the newest segment: file and offset.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// What `point_in_time` recovery dropped, one line per damaged place or file.
    pub dropped: Vec<String>,
    pub duration: Duration,
}

pub(crate) struct Recovered {
    pub state: State,
    pub write_offset: u64,
    pub free_files: Vec<PathBuf>,
    /// Recovery cut the active segment: writing continues in a new one.
    pub start_new_segment: bool,
    pub report: RecoveryReport,
}

/// Segment and free-file names found in a directory.
pub(crate) struct Listing {
    pub segments: Vec<u64>,
    pub free_files: Vec<PathBuf>,
}

pub(crate) fn list_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Listing> {
    let mut segments = Vec::new();
    let mut free_files = Vec::new();
    for name in fs.list(dir).map_err(|e| Error::io(dir, e))? {
        if let Some(seq) = format::parse_segment_file_name(&name) {
            segments.push(seq);
        } else if name.ends_with(&format!(".{SEGMENT_SUFFIX}.{FREE_SUFFIX}")) {
            free_files.push(dir.join(name));
        }
    }
    segments.sort_unstable();
    for pair in segments.windows(2) {
        if pair[1] != pair[0] + 1 {
            let path = dir.join(format::segment_file_name(pair[0] + 1));
            return Err(Error::corruption(
                path,
                0,
                "segment is missing from the sequence",
            ));
        }
    }
    Ok(Listing {
        segments,
        free_files,
    })
}

/// What replaying one segment left.
enum Replayed {
    /// Valid data up to `end`; `cut` when damage after it was cut off.
    Data { end: u64, cut: bool },
    /// A torn segment creation: the file is to be removed.
    Discarded,
}

struct Recovery<'a> {
    config: &'a WalConfig,
    fs: &'a dyn FileSystem,
    streams: BTreeMap<u64, Stream>,
    /// Per stream, the last index a stream-state frame claimed but whose entry
    /// was in a purged segment; a later compaction must have dropped it.
    purged_through: BTreeMap<u64, (u64, PathBuf)>,
    segments: BTreeMap<u64, SegmentFile>,
    report: RecoveryReport,
    start_new_segment: bool,
}

/// Entries a stream-state frame claimed but whose segments were purged are
/// not in the index, so the stream starts after them. A later append into that
/// range (raft's conflict rule: the writer saw those entries) is valid: the
/// stream restarts at the append and the missing range ends before it.
fn reopen_purged_range(
    stream: &mut Stream,
    purged: Option<&mut (u64, PathBuf)>,
    index: u64,
    seq: u64,
) -> Result<(), String> {
    let Some((purged_index, _)) = purged else {
        return Ok(());
    };
    if index >= stream.meta.first_index || index > *purged_index + 1 {
        return Ok(());
    }
    stream.apply(&Op::Reset { index }, seq, 0, 0)?;
    *purged_index = index - 1;
    Ok(())
}

pub(crate) fn recover(config: &WalConfig, fs: &dyn FileSystem) -> Result<Recovered> {
    let started = Instant::now();
    let dir = &config.dir;
    fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let listing = list_dir(fs, dir)?;
    let mut recovery = Recovery {
        config,
        fs,
        streams: BTreeMap::new(),
        purged_through: BTreeMap::new(),
        segments: BTreeMap::new(),
        report: RecoveryReport::default(),
        start_new_segment: false,
    };
    let (active_seq, mirror) = match recovery.replay(&listing.segments)? {
        Some(tail) => tail,
        None => recovery.create_first_segment()?,
    };
    recovery.check_purged_entries()?;
    let mut report = recovery.report;
    report.duration = started.elapsed();
    let write_offset = mirror.len() as u64;
    Ok(Recovered {
        state: State {
            streams: recovery.streams,
            segments: recovery.segments,
            active_seq,
            mirror,
        },
        write_offset,
        free_files: listing.free_files,
        start_new_segment: recovery.start_new_segment,
        report,
    })
}

impl Recovery<'_> {
    /// Replays every segment; returns the active segment and its valid bytes.
    fn replay(&mut self, seqs: &[u64]) -> Result<Option<(u64, Vec<u8>)>> {
        let mut tail = None;
        for (position, &seq) in seqs.iter().enumerate() {
            let newest = position + 1 == seqs.len();
            let path = self.config.dir.join(format::segment_file_name(seq));
            let file = self
                .fs
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(&path, e))?;
            let segment = SegmentFile { path, file };
            let data = scan::read_segment(segment.file.as_ref(), &segment.path)?;
            self.report.segments += 1;
            self.report.bytes_scanned += data.len() as u64;
            match self.replay_segment(&segment, seq, &data, newest)? {
                Replayed::Discarded => self.discard(&segment)?,
                Replayed::Data { end, cut } => {
                    self.segments.insert(seq, segment);
                    tail = Some((seq, data[..end as usize].to_vec()));
                    // A cut segment may end inside its stream-state frames, so
                    // the writer continues in a fresh segment.
                    self.start_new_segment |= cut;
                    if cut && !newest {
                        self.drop_segments_after(seqs, position)?;
                        break;
                    }
                }
            }
        }
        Ok(tail)
    }

    /// Replays one segment; says where its valid data ends and whether it was cut.
    fn replay_segment(
        &mut self,
        segment: &SegmentFile,
        seq: u64,
        data: &[u8],
        newest: bool,
    ) -> Result<Replayed> {
        if let Err(reason) = format::check_segment_header(data, seq) {
            return self.bad_header(segment, seq, data, newest, reason);
        }
        let streams = &mut self.streams;
        let purged_through = &mut self.purged_through;
        let mut entries = 0u64;
        let scan = scan::scan_frames(data, seq, |frame| {
            let op = Op::from_frame(frame).ok_or("malformed payload")?;
            entries += u64::from(matches!(op, Op::Entry { .. }));
            let stream = streams.entry(frame.stream).or_default();
            let Op::StreamState {
                first_index,
                last_index,
                hard_state,
            } = op
            else {
                match op {
                    // A reset drops every entry, the purged ones included.
                    Op::Reset { .. } => {
                        purged_through.remove(&frame.stream);
                    }
                    Op::Entry { index, .. } => {
                        reopen_purged_range(
                            stream,
                            purged_through.get_mut(&frame.stream),
                            index,
                            seq,
                        )?;
                    }
                    _ => {}
                }
                return stream.apply(&op, seq, frame.offset as u32, frame.len);
            };
            if let Some(index) = stream.apply_stream_state(first_index, last_index, hard_state)? {
                purged_through
                    .entry(frame.stream)
                    .or_insert_with(|| (index, segment.path.clone()))
                    .0 = index;
            }
            Ok(())
        });
        self.report.frames += scan.frames;
        self.report.entries += entries;
        if scan.is_clean() {
            return Ok(Replayed::Data {
                end: scan.end,
                cut: false,
            });
        }
        let end = self.damaged(segment, &scan, newest)?;
        Ok(Replayed::Data { end, cut: true })
    }

    /// Entries claimed by stream-state frames but found in no segment must have
    /// been compacted away later; otherwise segments were lost.
    fn check_purged_entries(&self) -> Result<()> {
        for (stream, (index, path)) in &self.purged_through {
            let first_index = self
                .streams
                .get(stream)
                .map(|s| s.meta.first_index)
                .unwrap_or(1);
            if first_index <= *index {
                return Err(Error::corruption(
                    path,
                    0,
                    format!("stream {stream}: entries {first_index}..={index} are in no segment"),
                ));
            }
        }
        Ok(())
    }

    /// Decides what a damaged segment means under the recovery mode.
    fn damaged(&mut self, segment: &SegmentFile, scan: &SegmentScan, newest: bool) -> Result<u64> {
        let (offset, reason) = match (&scan.bad, scan.valid_after) {
            (Some((offset, reason)), _) => (*offset, reason.clone()),
            (None, Some(after)) => (
                scan.end,
                format!("valid frame at {after} after the end of the data"),
            ),
            (None, None) => return Ok(scan.end),
        };
        let torn = newest && scan.valid_after.is_none();
        match self.config.recovery_mode {
            RecoveryMode::TornTail if torn => {
                tracing::warn!(path = %segment.path.display(), offset, %reason, "cutting a torn write off the log tail");
                self.report.torn_tail = Some((segment.path.clone(), offset));
            }
            RecoveryMode::PointInTime => {
                tracing::warn!(path = %segment.path.display(), offset, %reason, "point-in-time recovery stops here");
                self.report.dropped.push(format!(
                    "{} from offset {offset}: {reason}",
                    segment.path.display()
                ));
            }
            _ => return Err(Error::corruption(&segment.path, offset, reason)),
        }
        zero_from(segment, offset)?;
        Ok(offset)
    }

    /// A segment whose header is bad: in the newest segment with no valid frame
    /// after it, a crash while a new (or recycled) segment was being started.
    /// Such a file holds nothing acknowledged; it is removed and the previous
    /// segment stays active.
    fn bad_header(
        &mut self,
        segment: &SegmentFile,
        seq: u64,
        data: &[u8],
        newest: bool,
        reason: String,
    ) -> Result<Replayed> {
        let has_frames = format::find_valid_frame(data, SEGMENT_HEADER_BYTES, seq).is_some();
        if !newest || has_frames || self.config.recovery_mode == RecoveryMode::AbsoluteConsistency {
            return Err(Error::corruption(&segment.path, 0, reason));
        }
        tracing::warn!(path = %segment.path.display(), %reason, "removing a segment whose creation was cut short");
        self.report.torn_tail = Some((segment.path.clone(), 0));
        Ok(Replayed::Discarded)
    }

    fn discard(&mut self, segment: &SegmentFile) -> Result<()> {
        self.fs
            .remove(&segment.path)
            .map_err(|e| Error::io(&segment.path, e))?;
        self.fs
            .sync_dir(&self.config.dir)
            .map_err(|e| Error::io(&self.config.dir, e))
    }

    /// `point_in_time`: segments after a damaged one are set aside, not replayed.
    fn drop_segments_after(&mut self, seqs: &[u64], position: usize) -> Result<()> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        for &seq in &seqs[position + 1..] {
            let path = self.config.dir.join(format::segment_file_name(seq));
            let aside = path.with_extension(format!("{SEGMENT_SUFFIX}.dropped-{stamp}"));
            self.fs
                .rename(&path, &aside)
                .map_err(|e| Error::io(&path, e))?;
            self.report
                .dropped
                .push(format!("{} renamed to {}", path.display(), aside.display()));
        }
        self.fs
            .sync_dir(&self.config.dir)
            .map_err(|e| Error::io(&self.config.dir, e))
    }

    fn create_first_segment(&mut self) -> Result<(u64, Vec<u8>)> {
        let seq = 1;
        let segment = create_segment(
            self.fs,
            &self.config.dir,
            seq,
            self.config.segment_size_bytes,
        )?;
        write_header(&segment, seq)?;
        self.fs
            .sync_dir(&self.config.dir)
            .map_err(|e| Error::io(&self.config.dir, e))?;
        self.segments.insert(seq, segment);
        Ok((seq, format::encode_segment_header(seq).to_vec()))
    }
}

/// Creates and preallocates a new segment file.
pub(crate) fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    seq: u64,
    size_bytes: u64,
) -> Result<SegmentFile> {
    let path = dir.join(format::segment_file_name(seq));
    let file = fs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io(&path, e))?;
    if let Err(e) = file.allocate(size_bytes) {
        let _ = fs.remove(&path);
        return Err(Error::io(&path, e));
    }
    Ok(SegmentFile { path, file })
}

fn write_header(segment: &SegmentFile, seq: u64) -> Result<()> {
    let header = format::encode_segment_header(seq);
    segment
        .file
        .write_and_sync(&header, 0, true)
        .map_err(|e| Error::io(&segment.path, e))
}

/// Zeroes a segment from `offset` to its end, so nothing after a cut can be
/// mistaken for data by a later recovery.
fn zero_from(segment: &SegmentFile, offset: u64) -> Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let len = segment
        .file
        .size_bytes()
        .map_err(|e| Error::io(&segment.path, e))?;
    let zeros = vec![0u8; CHUNK_BYTES as usize];
    let mut at = offset;
    while at < len {
        let n = (len - at).min(CHUNK_BYTES) as usize;
        segment
            .file
            .write_all_at(&zeros[..n], at)
            .map_err(|e| Error::io(&segment.path, e))?;
        at += n as u64;
    }
    segment
        .file
        .sync_data()
        .map_err(|e| Error::io(&segment.path, e))
}
