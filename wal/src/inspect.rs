//! Read-only inspection of a log directory, for `aerie wal dump` and
//! `aerie wal verify`: every segment, its frames, per-stream entry ranges, and
//! every problem with file and offset. Uses the same parser as recovery, and
//! changes nothing.

use crate::error::{Error, Result};
use crate::format::{self, FrameKind};
use crate::fs::{FileSystem, OpenMode, SyncFs};
use crate::recovery;
use crate::scan;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Entries of one stream within one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRange {
    pub entries: u64,
    pub min_index: u64,
    pub max_index: u64,
    pub hard_states: u64,
    pub compactions: u64,
}

#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub seq: u64,
    pub path: PathBuf,
    pub file_bytes: u64,
    /// Bytes up to the end of the valid data.
    pub used_bytes: u64,
    pub frames: u64,
    pub streams: BTreeMap<u64, StreamRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    /// A torn write at the end of the newest segment: an open cuts it off.
    TornTail,
    /// Anything else: the default open fails on it.
    Corruption,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub severity: Severity,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct DirReport {
    pub segments: Vec<SegmentReport>,
    pub free_files: usize,
    pub problems: Vec<Problem>,
}

impl DirReport {
    pub fn has_corruption(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.severity == Severity::Corruption)
    }
}

/// Inspects every segment in `dir`.
pub fn inspect_dir(dir: &Path) -> Result<DirReport> {
    let fs = SyncFs;
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let mut report = DirReport::default();
    let listing = match recovery::list_dir(&fs, dir) {
        Ok(listing) => listing,
        Err(Error::Corruption {
            path,
            offset,
            reason,
        }) => {
            report.problems.push(Problem {
                path,
                offset,
                severity: Severity::Corruption,
                reason,
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.free_files = listing.free_files.len();
    let count = listing.segments.len();
    for (position, seq) in listing.segments.into_iter().enumerate() {
        let newest = position + 1 == count;
        let (segment, problem) = inspect_segment(&fs, dir, seq, newest)?;
        report.segments.push(segment);
        report.problems.extend(problem);
    }
    Ok(report)
}

fn inspect_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    seq: u64,
    newest: bool,
) -> Result<(SegmentReport, Option<Problem>)> {
    let path = dir.join(format::segment_file_name(seq));
    let file = fs
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io(&path, e))?;
    let data = scan::read_segment(file.as_ref(), &path)?;
    let mut segment = SegmentReport {
        seq,
        path: path.clone(),
        file_bytes: data.len() as u64,
        used_bytes: 0,
        frames: 0,
        streams: BTreeMap::new(),
    };
    let problem = |offset, severity, reason| Problem {
        path: path.clone(),
        offset,
        severity,
        reason,
    };
    if let Err(reason) = format::check_segment_header(&data, seq) {
        let torn =
            newest && format::find_valid_frame(&data, format::SEGMENT_HEADER_BYTES, seq).is_none();
        let severity = if torn {
            Severity::TornTail
        } else {
            Severity::Corruption
        };
        return Ok((segment, Some(problem(0, severity, reason))));
    }
    let scan = scan::scan_frames(&data, seq, |frame| {
        let range = segment.streams.entry(frame.stream).or_default();
        match frame.kind {
            FrameKind::Entry => {
                range.min_index = if range.entries == 0 {
                    frame.index
                } else {
                    range.min_index.min(frame.index)
                };
                range.max_index = range.max_index.max(frame.index);
                range.entries += 1;
            }
            FrameKind::HardState => range.hard_states += 1,
            FrameKind::Compact | FrameKind::Reset => range.compactions += 1,
            FrameKind::StreamState => {}
        }
        Ok(())
    });
    segment.used_bytes = scan.end;
    segment.frames = scan.frames;
    let found = match (scan.bad, scan.valid_after) {
        (Some((offset, reason)), after) => {
            let torn = newest && after.is_none();
            let severity = if torn {
                Severity::TornTail
            } else {
                Severity::Corruption
            };
            Some(problem(offset, severity, reason))
        }
        (None, Some(after)) => Some(problem(
            scan.end,
            Severity::Corruption,
            format!("valid frame at {after} after the end of the data"),
        )),
        (None, None) => None,
    };
    Ok((segment, found))
}
