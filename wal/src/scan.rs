//! Reading a whole segment: the one parser behind recovery, `aerie wal dump`
//! and `aerie wal verify`, and archived-segment readers.

use crate::error::{Error, Result};
use crate::format::{self, FrameRef, Parsed, SEGMENT_HEADER_BYTES};
use crate::fs::WalFile;
use std::path::Path;

/// Largest segment file we agree to read into memory.
pub const MAX_SEGMENT_FILE_BYTES: u64 = 4 << 30;

/// What scanning one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Offset just past the last valid frame (where the next frame would go).
    pub end: u64,
    /// A frame that failed its checks (or that the callback rejected), with why.
    pub bad: Option<(u64, String)>,
    /// The first valid frame of this segment found after `end`; its presence
    /// means the damage at `end` is not a torn tail.
    pub valid_after: Option<u64>,
    /// Frames accepted.
    pub frames: u64,
}

impl SegmentScan {
    pub fn is_clean(&self) -> bool {
        self.bad.is_none() && self.valid_after.is_none()
    }
}

/// Reads a whole segment file.
pub fn read_segment(file: &dyn WalFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.size_bytes().map_err(|e| Error::io(path, e))?;
    if len > MAX_SEGMENT_FILE_BYTES {
        return Err(Error::corruption(
            path,
            0,
            format!("segment file of {len} bytes is too large"),
        ));
    }
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, 0)
        .map_err(|e| Error::io(path, e))?;
    Ok(data)
}

/// Walks the frames of segment `seq` after its header, calling `on_frame` for
/// each valid one until the end of the data, a bad frame, or a frame the
/// callback rejects. Never panics.
pub fn scan_frames(
    data: &[u8],
    seq: u64,
    mut on_frame: impl FnMut(&FrameRef<'_>) -> Result<(), String>,
) -> SegmentScan {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut frames = 0;
    let mut bad = None;
    loop {
        match format::parse_frame(data, offset, seq) {
            Parsed::Frame(frame) => {
                if let Err(reason) = on_frame(&frame) {
                    bad = Some((offset as u64, reason));
                    break;
                }
                frames += 1;
                offset += frame.len as usize;
            }
            Parsed::End => break,
            Parsed::Bad(reason) => {
                bad = Some((offset as u64, reason));
                break;
            }
        }
    }
    let valid_after = format::find_valid_frame(data, offset + 1, seq).map(|o| o as u64);
    SegmentScan {
        end: offset as u64,
        bad,
        valid_after,
        frames,
    }
}
