//! Frames: `length u32 | type u8 | payload | crc32 u32`, the CRC over the
//! header and the payload. The decoder is total: any bytes give a frame,
//! "need more", or an error, never a panic. It rejects an oversized length
//! and an unknown type from the 5-byte header, before the payload arrives.

use crate::error::WireError;
use crate::fabric::format::{FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, TYPE_OFFSET, kind};

/// A frame at the start of a buffer, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The frame type (`format::kind`).
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// Builds one frame in place: the payload is written straight after the
/// header, so large payloads (raft appends, chunks) are not copied again.
pub struct FrameBuilder {
    bytes: Vec<u8>,
}

impl FrameBuilder {
    /// A frame of type `kind` with room for `payload_bytes`.
    pub fn new(kind: u8, payload_bytes: usize) -> FrameBuilder {
        let mut bytes =
            Vec::with_capacity(FRAME_HEADER_BYTES + payload_bytes + FRAME_TRAILER_BYTES);
        bytes.extend_from_slice(&[0; 4]);
        bytes.push(kind);
        FrameBuilder { bytes }
    }

    /// The payload written so far; append to it.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The frame's bytes: length patched in, CRC appended.
    pub fn finish(mut self) -> Result<Vec<u8>, WireError> {
        let payload_bytes = self.bytes.len() - FRAME_HEADER_BYTES;
        let length = u32::try_from(payload_bytes).map_err(|_| WireError::TooLong {
            bytes: payload_bytes as u64,
            limit: u32::MAX as usize,
        })?;
        self.bytes[..4].copy_from_slice(&length.to_le_bytes());
        let crc = crc32fast::hash(&self.bytes);
        self.bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(self.bytes)
    }
}

/// One frame of `kind` around `payload`.
pub fn encode(kind: u8, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut builder = FrameBuilder::new(kind, payload.len());
    builder.payload().extend_from_slice(payload);
    builder.finish()
}

/// The frame at the start of `buf` and the bytes it takes, `None` if `buf`
/// holds only part of it. A payload longer than `max_payload_bytes` or an
/// unknown type is an error as soon as the header is in.
pub fn decode(
    buf: &[u8],
    max_payload_bytes: usize,
) -> Result<Option<(FrameRef<'_>, usize)>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let frame_kind = header[TYPE_OFFSET];
    if length > max_payload_bytes {
        return Err(WireError::TooLong {
            bytes: length as u64,
            limit: max_payload_bytes,
        });
    }
    if !kind::is_known(frame_kind) {
        return Err(WireError::UnknownType(frame_kind));
    }
    let end = FRAME_HEADER_BYTES + length;
    let Some(trailer) = buf.get(end..end + FRAME_TRAILER_BYTES) else {
        return Ok(None);
    };
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(&buf[..end]);
    if stored != computed {
        return Err(WireError::Checksum { stored, computed });
    }
    let frame = FrameRef {
        kind: frame_kind,
        payload: &buf[FRAME_HEADER_BYTES..end],
    };
    Ok(Some((frame, end + FRAME_TRAILER_BYTES)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_every_damage_is_caught() {
        let bytes = encode(kind::RAFT, b"hello raft").unwrap();
        let (frame, used) = decode(&bytes, 64).unwrap().unwrap();
        assert_eq!(
            (frame.kind, frame.payload, used),
            (kind::RAFT, &b"hello raft"[..], bytes.len())
        );
        for len in 0..bytes.len() {
            assert_eq!(decode(&bytes[..len], 64), Ok(None), "{len}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(decode(&bad, 64), Ok(Some(_))), "flip at {i}");
        }
        assert!(matches!(decode(&bytes, 4), Err(WireError::TooLong { .. })));
    }
}
