//! The in-memory index: per stream, where each live entry lives; per segment,
//! its open file; and a copy of the active segment's bytes so recent entries are
//! served from memory. The same [`Meta::apply`] rule is used by the writer (to
//! validate), by the post-sync index update and by recovery, so the index after
//! a reopen equals the index before it.

use crate::batch::Op;
use crate::error::{Error, Result};
use crate::format::{self, FRAME_HEADER_BYTES, HardState, Parsed};
use crate::fs::WalFile;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// Where one entry lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryLoc {
    pub term: u64,
    pub segment: u64,
    /// Offset of the entry's frame in its segment.
    pub offset: u32,
    /// Total bytes of the frame.
    pub frame_len: u32,
}

/// A stream's bounds and hard state, without entry locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub first_index: u64,
    /// `first_index - 1` when the stream has no entries.
    pub last_index: u64,
    pub hard_state: HardState,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            first_index: 1,
            last_index: 0,
            hard_state: HardState::default(),
        }
    }
}

impl Meta {
    /// Applies one op, or says why it is not valid here.
    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Entry { index, .. } => {
                if index < self.first_index {
                    return Err(format!(
                        "append at {index} is below the first index {}",
                        self.first_index
                    ));
                }
                if index > self.last_index + 1 {
                    return Err(format!(
                        "append at {index} leaves a gap after the last index {}",
                        self.last_index
                    ));
                }
                self.last_index = index;
            }
            Op::HardState(hard_state) => self.hard_state = hard_state,
            Op::Reset { index } => {
                self.first_index = index;
                self.last_index = index - 1;
            }
            Op::Compact { index } => {
                if index > self.first_index {
                    self.first_index = index;
                    self.last_index = self.last_index.max(index - 1);
                }
            }
            // Only rotation writes these, and only replay reads them.
            Op::StreamState { .. } => return Err("unexpected stream-state op".into()),
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub meta: Meta,
    /// `entries[i]` holds index `meta.first_index + i`.
    pub entries: VecDeque<EntryLoc>,
}

impl Stream {
    /// Applies one op at `(segment, offset)`; the bounds rule is [`Meta::apply`].
    pub(crate) fn apply(
        &mut self,
        op: &Op,
        segment: u64,
        offset: u32,
        frame_len: u32,
    ) -> Result<(), String> {
        if let Op::Reset { .. } = op {
            self.entries.clear();
            return self.meta.apply(op);
        }
        let old_first = self.meta.first_index;
        let mut meta = self.meta;
        meta.apply(op)?;
        if let Op::Entry { index, term } = *op {
            self.entries.truncate((index - old_first) as usize);
            self.entries.push_back(EntryLoc {
                term,
                segment,
                offset,
                frame_len,
            });
        }
        if meta.first_index < old_first && !self.entries.is_empty() {
            return Err(format!(
                "first index moves back from {old_first} to {}",
                meta.first_index
            ));
        }
        let dropped = meta
            .first_index
            .saturating_sub(old_first)
            .min(self.entries.len() as u64);
        self.entries.drain(..dropped as usize);
        let wanted = meta.last_index + 1 - meta.first_index;
        if (self.entries.len() as u64) < wanted {
            return Err(format!(
                "stream claims entries {}..={} but only {} are in the log",
                meta.first_index,
                meta.last_index,
                self.entries.len()
            ));
        }
        self.entries.truncate(wanted as usize);
        self.meta = meta;
        Ok(())
    }

    /// Replays a stream-state frame. Entries it claims that are not in the
    /// replayed segments were in purged segments, which is only valid if a
    /// later compaction drops them: returns the last such index for the caller
    /// to check at the end of the replay.
    pub(crate) fn apply_stream_state(
        &mut self,
        first_index: u64,
        last_index: u64,
        hard_state: HardState,
    ) -> Result<Option<u64>, String> {
        if first_index == 0 || last_index + 1 < first_index {
            return Err(format!(
                "stream state with first {first_index} and last {last_index}"
            ));
        }
        self.meta.hard_state = hard_state;
        if self.entries.is_empty() {
            let missing = (last_index >= first_index).then_some(last_index);
            self.meta.first_index = last_index + 1;
            self.meta.last_index = last_index;
            return Ok(missing);
        }
        if self.meta.last_index != last_index {
            return Err(format!(
                "stream state says last index {last_index}, the log has {}",
                self.meta.last_index
            ));
        }
        let missing = (first_index < self.meta.first_index).then_some(self.meta.first_index - 1);
        if first_index > self.meta.first_index {
            self.apply(&Op::Compact { index: first_index }, 0, 0, 0)?;
        }
        Ok(missing)
    }

    pub(crate) fn loc(&self, index: u64) -> Option<&EntryLoc> {
        let offset = index.checked_sub(self.meta.first_index)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }
}

/// An open segment file.
#[derive(Clone)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub file: Arc<dyn WalFile>,
}

pub(crate) struct State {
    pub streams: BTreeMap<u64, Stream>,
    pub segments: BTreeMap<u64, SegmentFile>,
    pub active_seq: u64,
    /// Bytes of the active segment, from offset 0 up to its write offset.
    pub mirror: Vec<u8>,
}

impl State {
    pub(crate) fn meta(&self, stream: u64) -> Meta {
        self.streams
            .get(&stream)
            .map(|s| s.meta)
            .unwrap_or_default()
    }

    /// The oldest segment some stream still has a live entry in.
    pub(crate) fn oldest_needed_segment(&self) -> u64 {
        self.streams
            .values()
            .filter_map(|s| s.entries.front().map(|e| e.segment))
            .min()
            .unwrap_or(self.active_seq)
            .min(self.active_seq)
    }

    /// The payload of an entry: from the in-memory copy of the active segment, or
    /// one read of the sealed segment, checked against its CRC and address.
    pub(crate) fn read_payload(&self, stream: u64, index: u64, loc: &EntryLoc) -> Result<Vec<u8>> {
        let start = loc.offset as usize;
        let end = start + loc.frame_len as usize;
        if loc.segment == self.active_seq
            && let Some(payload) = self.mirror.get(start + FRAME_HEADER_BYTES..end)
        {
            return Ok(payload.to_vec());
        }
        let segment = self
            .segments
            .get(&loc.segment)
            .ok_or_else(|| Error::Corruption {
                path: PathBuf::from(format::segment_file_name(loc.segment)),
                offset: u64::from(loc.offset),
                reason: "segment of a live entry is missing".into(),
            })?;
        let mut frame = vec![0u8; loc.frame_len as usize];
        segment
            .file
            .read_exact_at(&mut frame, u64::from(loc.offset))
            .map_err(|e| Error::io(&segment.path, e))?;
        let corrupt =
            |reason: String| Error::corruption(&segment.path, u64::from(loc.offset), reason);
        match format::parse_frame(&frame, 0, loc.segment) {
            Parsed::Frame(f) if f.stream == stream && f.index == index && f.term == loc.term => {
                Ok(f.payload.to_vec())
            }
            Parsed::Frame(f) => Err(corrupt(format!(
                "expected entry {stream}/{index}, found {}/{} term {}",
                f.stream, f.index, f.term
            ))),
            Parsed::Bad(reason) => Err(corrupt(reason)),
            Parsed::End => Err(corrupt("expected an entry, found no frame".into())),
        }
    }
}
