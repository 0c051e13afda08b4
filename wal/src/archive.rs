//! Reading one stream back from archived (and copied live) segment files
//! without opening a writer: the source of point-in-time recovery.
//!
//! The rules differ from [`crate::Wal::open`] on purpose:
//! * compaction frames are ignored: an archive exists to keep what the live
//!   log compacted away;
//! * a later entry at an index already seen replaces it and everything after
//!   it (raft's conflict rule, exactly as the live log applies it);
//! * nothing is repaired: damage in any segment but the newest is an error with
//!   file and offset; in the newest it is accepted only as a torn tail;
//! * only entry locations after `after_index` are kept (about 32 bytes each);
//!   payloads are read one at a time, each re-checked against its CRC.

use crate::error::{Error, Result};
use crate::format::{self, FrameKind, HardState, Parsed};
use crate::fs::{FileSystem, OpenMode, SyncFs, WalFile};
use crate::scan;
use crate::{Entry, batch::Op};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    frame_len: u32,
    term: u64,
}

/// One stream's entries found in a set of segment directories.
pub struct ArchivedStream {
    stream: u64,
    entries: BTreeMap<u64, Loc>,
    /// Lowest index of the stream seen in any segment.
    first_seen: Option<u64>,
    last_seen: u64,
    hard_state: HardState,
    files: BTreeMap<u64, (PathBuf, Arc<dyn WalFile>)>,
}

impl std::fmt::Debug for ArchivedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchivedStream")
            .field("stream", &self.stream)
            .field("entries", &self.entries.len())
            .field("first_seen", &self.first_seen)
            .field("last_seen", &self.last_seen)
            .field("hard_state", &self.hard_state)
            .finish()
    }
}

/// Every segment file in `dirs`, by sequence number. The same sequence number
/// in two directories is refused: which copy is right is not ours to guess.
fn list_segments(dirs: &[PathBuf]) -> Result<BTreeMap<u64, PathBuf>> {
    let mut segments: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let items = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for item in items {
            let item = item.map_err(|e| Error::io(dir, e))?;
            let Some(seq) = format::parse_segment_file_name(&item.file_name().to_string_lossy())
            else {
                continue;
            };
            if let Some(other) = segments.insert(seq, item.path()) {
                return Err(Error::Config(format!(
                    "segment {seq} is in two places: {} and {}",
                    other.display(),
                    item.path().display()
                )));
            }
        }
    }
    Ok(segments)
}

impl ArchivedStream {
    /// Scans every segment in `dirs` (oldest first) for `stream`, keeping the
    /// locations of entries after `after_index`.
    pub fn scan(dirs: &[PathBuf], stream: u64, after_index: u64) -> Result<ArchivedStream> {
        let mut found = ArchivedStream::scan_many(dirs, &[(stream, after_index)])?;
        found
            .pop()
            .ok_or_else(|| Error::Config("no stream asked for".into()))
    }

    /// [`ArchivedStream::scan`] for several `(stream, after_index)` at once,
    /// reading each segment once: one result per request, in order.
    pub fn scan_many(dirs: &[PathBuf], requests: &[(u64, u64)]) -> Result<Vec<ArchivedStream>> {
        let mut found: Vec<ArchivedStream> = requests
            .iter()
            .map(|&(stream, _)| ArchivedStream {
                stream,
                entries: BTreeMap::new(),
                first_seen: None,
                last_seen: 0,
                hard_state: HardState::default(),
                files: BTreeMap::new(),
            })
            .collect();
        let segments = list_segments(dirs)?;
        let newest = segments.keys().next_back().copied();
        for (seq, path) in segments {
            let file = SyncFs
                .open(&path, OpenMode::Read)
                .map_err(|e| Error::io(&path, e))?;
            let data = scan::read_segment(file.as_ref(), &path)?;
            format::check_segment_header(&data, seq)
                .map_err(|reason| Error::corruption(&path, 0, reason))?;
            for (stream, &(_, after_index)) in found.iter_mut().zip(requests) {
                stream.scan_segment(&data, seq, &path, after_index, Some(seq) == newest)?;
                stream.files.insert(seq, (path.clone(), file.clone()));
            }
        }
        Ok(found)
    }

    fn scan_segment(
        &mut self,
        data: &[u8],
        seq: u64,
        path: &Path,
        after_index: u64,
        newest: bool,
    ) -> Result<()> {
        let scan = scan::scan_frames(data, seq, |frame| {
            if frame.stream != self.stream {
                return Ok(());
            }
            match frame.kind {
                FrameKind::Entry => self.note_entry(frame, seq, after_index),
                FrameKind::HardState => match Op::from_frame(frame) {
                    Some(Op::HardState(hs)) => {
                        self.hard_state = hs;
                        Ok(())
                    }
                    _ => Err("malformed hard state".into()),
                },
                FrameKind::Reset => {
                    // The node installed a snapshot at `index - 1`: the next
                    // entry is `index`, whatever came before.
                    self.entries.split_off(&frame.index);
                    self.last_seen = frame.index - 1;
                    Ok(())
                }
                FrameKind::Compact | FrameKind::StreamState => Ok(()),
            }
        });
        match scan.bad {
            Some((offset, reason)) if !newest || scan.valid_after.is_some() => {
                Err(Error::corruption(path, offset, reason))
            }
            _ => Ok(()),
        }
    }

    fn note_entry(
        &mut self,
        frame: &format::FrameRef<'_>,
        seq: u64,
        after_index: u64,
    ) -> Result<(), String> {
        let index = frame.index;
        if self.first_seen.is_some() && index > self.last_seen + 1 {
            return Err(format!(
                "stream {} jumps from index {} to {index}: a segment is missing",
                self.stream, self.last_seen
            ));
        }
        self.first_seen = Some(self.first_seen.map_or(index, |f| f.min(index)));
        // Raft's conflict rule: a rewrite at `index` drops it and all after.
        self.entries.split_off(&index);
        self.last_seen = index;
        if index > after_index {
            self.entries.insert(
                index,
                Loc {
                    segment: seq,
                    offset: frame.offset,
                    frame_len: frame.len,
                    term: frame.term,
                },
            );
        }
        Ok(())
    }

    /// The newest hard state found (its `commit` bounds what may be replayed).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Lowest index of the stream in any scanned segment.
    pub fn first_index(&self) -> Option<u64> {
        self.first_seen
    }

    /// Highest index of the stream after conflict resolution (0 if none).
    pub fn last_index(&self) -> u64 {
        if self.first_seen.is_some() {
            self.last_seen
        } else {
            0
        }
    }

    /// Reads the entry at `index` (kept only if after `after_index`).
    pub fn read(&self, index: u64) -> Result<Entry> {
        let loc = self.entries.get(&index).ok_or(Error::Unavailable {
            stream: self.stream,
            index,
            last_index: self.last_index(),
        })?;
        let (path, file) = self.files.get(&loc.segment).ok_or_else(|| {
            Error::corruption(
                format::segment_file_name(loc.segment),
                loc.offset,
                "segment closed",
            )
        })?;
        let mut frame = vec![0u8; loc.frame_len as usize];
        file.read_exact_at(&mut frame, loc.offset)
            .map_err(|e| Error::io(path, e))?;
        match format::parse_frame(&frame, 0, loc.segment) {
            Parsed::Frame(f) if f.stream == self.stream && f.index == index => Ok(Entry {
                index,
                term: f.term,
                payload: f.payload.to_vec(),
            }),
            Parsed::Bad(reason) => Err(Error::corruption(path, loc.offset, reason)),
            _ => Err(Error::corruption(
                path,
                loc.offset,
                "the entry changed since the scan",
            )),
        }
    }

    /// The term of the entry at `index`, if kept.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.entries.get(&index).map(|loc| loc.term)
    }
}
