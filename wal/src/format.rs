//! The on-disk format of WAL segments: named constants, frame encoding and a
//! total (panic-free) frame parser. `wal/FORMAT.md` describes the same bytes in
//! prose; change both together.
//!
//! All integers are little-endian.

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"AERIEWAL";
/// Bumped on any incompatible change of this module.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; frames start right after it.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Offset of the header's CRC32, which covers bytes `0..HEADER_CRC_OFFSET`.
const HEADER_CRC_OFFSET: usize = 24;

/// Bytes of a frame before its payload.
pub const FRAME_HEADER_BYTES: usize = 44;
/// The frame's `body_len` counts everything after this prefix (len + crc).
pub const FRAME_PREFIX_BYTES: usize = 8;
/// Frame field offsets, relative to the frame start.
const LEN_OFFSET: usize = 0;
const CRC_OFFSET: usize = 4;
const SEQ_OFFSET: usize = 8;
const KIND_OFFSET: usize = 16;
const STREAM_OFFSET: usize = 20;
const INDEX_OFFSET: usize = 28;
const TERM_OFFSET: usize = 36;

/// Payload bytes of a hard-state frame: term, vote, commit.
pub const HARD_STATE_PAYLOAD_BYTES: usize = 24;
/// Payload bytes of a stream-state frame: last index, then a hard state.
pub const STREAM_STATE_PAYLOAD_BYTES: usize = 8 + HARD_STATE_PAYLOAD_BYTES;

/// Segment files are named `<sequence, 20 digits>.wal`.
pub const SEGMENT_SUFFIX: &str = "wal";
/// Freed segments kept for reuse are named `<old sequence>.wal.free`.
pub const FREE_SUFFIX: &str = "free";

/// What a frame records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One log entry: stream, index, term, payload.
    Entry = 1,
    /// The stream's raft hard state (payload: term, vote, commit).
    HardState = 2,
    /// Entries of the stream below `index` are dropped.
    Compact = 3,
    /// Written for every stream at the start of each segment, so a segment can be
    /// deleted once no stream has live entries in it: `index` is the first index,
    /// the payload holds the last index and the hard state.
    StreamState = 4,
    /// Every entry of the stream is dropped and its next append must be at
    /// `index` (a raft snapshot was installed at `index - 1`).
    Reset = 5,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Entry),
            2 => Some(Self::HardState),
            3 => Some(Self::Compact),
            4 => Some(Self::StreamState),
            5 => Some(Self::Reset),
            _ => None,
        }
    }
}

/// Raft's durable vote state for one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl HardState {
    pub(crate) fn encode(&self) -> [u8; HARD_STATE_PAYLOAD_BYTES] {
        let mut out = [0u8; HARD_STATE_PAYLOAD_BYTES];
        out[0..8].copy_from_slice(&self.term.to_le_bytes());
        out[8..16].copy_from_slice(&self.vote.to_le_bytes());
        out[16..24].copy_from_slice(&self.commit.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            term: read_u64(bytes, 0)?,
            vote: read_u64(bytes, 8)?,
            commit: read_u64(bytes, 16)?,
        })
    }
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}.{SEGMENT_SUFFIX}")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(&format!(".{SEGMENT_SUFFIX}"))?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header for segment `seq`.
pub fn encode_segment_header(seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..HEADER_CRC_OFFSET]);
    out[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header; returns why it is not a valid header of segment `seq`.
pub fn check_segment_header(bytes: &[u8], seq: u64) -> Result<(), String> {
    let header = bytes
        .get(..SEGMENT_HEADER_BYTES)
        .ok_or_else(|| format!("file is shorter than the {SEGMENT_HEADER_BYTES}-byte header"))?;
    if header[0..8] != SEGMENT_MAGIC {
        return Err("bad magic".into());
    }
    let stored_crc = read_u32(header, HEADER_CRC_OFFSET).unwrap_or_default();
    if stored_crc != crc32fast::hash(&header[..HEADER_CRC_OFFSET]) {
        return Err("header checksum mismatch".into());
    }
    let version = read_u32(header, 8).unwrap_or_default();
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let stored_seq = read_u64(header, 16).unwrap_or_default();
    if stored_seq != seq {
        return Err(format!(
            "header says segment {stored_seq}, file name says {seq}"
        ));
    }
    Ok(())
}

/// A frame encoded by a caller before the writer knows which segment it lands in:
/// the sequence field is zero and the CRC is not final. `body_crc` covers the bytes
/// after the sequence field, so the writer finishes the CRC cheaply with
/// [`seal_frame`].
#[derive(Debug, Clone)]
pub struct UnsealedFrame {
    pub start: usize,
    pub len: usize,
    pub body_crc: crc32fast::Hasher,
}

/// Appends an unsealed frame to `buf`.
pub fn encode_frame(
    buf: &mut Vec<u8>,
    kind: FrameKind,
    stream: u64,
    index: u64,
    term: u64,
    payload: &[u8],
) -> UnsealedFrame {
    let start = buf.len();
    let body_len = (FRAME_HEADER_BYTES - FRAME_PREFIX_BYTES + payload.len()) as u32;
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]); // crc, set by seal_frame
    buf.extend_from_slice(&[0u8; 8]); // segment sequence, set by seal_frame
    buf.extend_from_slice(&[kind as u8, 0, 0, 0]);
    buf.extend_from_slice(&stream.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&term.to_le_bytes());
    buf.extend_from_slice(payload);
    let mut body_crc = crc32fast::Hasher::new();
    body_crc.update(&buf[start + KIND_OFFSET..]);
    UnsealedFrame {
        start,
        len: buf.len() - start,
        body_crc,
    }
}

/// Writes the segment sequence into an encoded frame and finishes its CRC, which
/// covers the length field and everything after the CRC field.
pub fn seal_frame(frame_bytes: &mut [u8], body_crc: &crc32fast::Hasher, seq: u64) {
    debug_assert!(frame_bytes.len() >= FRAME_HEADER_BYTES);
    frame_bytes[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame_bytes[LEN_OFFSET..LEN_OFFSET + 4]);
    crc.update(&frame_bytes[SEQ_OFFSET..KIND_OFFSET]);
    crc.combine(body_crc);
    frame_bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// A valid frame found in a segment.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub kind: FrameKind,
    pub stream: u64,
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
    /// Offset of the frame in its segment file.
    pub offset: u64,
    /// Total bytes of the frame.
    pub len: u32,
}

/// What lies at an offset of a segment.
#[derive(Debug)]
pub enum Parsed<'a> {
    Frame(FrameRef<'a>),
    /// Zeroes, a stale frame from an earlier use of a recycled file, or too few
    /// bytes left for a frame: the clean end of the segment's data.
    End,
    /// Bytes that are not a valid frame of this segment.
    Bad(String),
}

/// Parses the frame at `offset` of segment `seq` (whose bytes are `data`).
/// Never panics, whatever the bytes.
pub fn parse_frame(data: &[u8], offset: usize, seq: u64) -> Parsed<'_> {
    let Some(rest) = data.get(offset..) else {
        return Parsed::End;
    };
    if rest.len() < FRAME_HEADER_BYTES || rest[..FRAME_PREFIX_BYTES].iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let body_len = read_u32(rest, LEN_OFFSET).unwrap_or_default() as usize;
    let Some(total) = body_len.checked_add(FRAME_PREFIX_BYTES) else {
        return Parsed::Bad("frame length overflows".into());
    };
    if total < FRAME_HEADER_BYTES || total > rest.len() {
        return Parsed::Bad(format!("frame length {total} out of bounds"));
    }
    let frame = &rest[..total];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame[LEN_OFFSET..LEN_OFFSET + 4]);
    crc.update(&frame[SEQ_OFFSET..]);
    if read_u32(frame, CRC_OFFSET).unwrap_or_default() != crc.finalize() {
        return Parsed::Bad("frame checksum mismatch".into());
    }
    if read_u64(frame, SEQ_OFFSET).unwrap_or_default() != seq {
        // A whole, checksummed frame of an earlier use of a recycled file.
        return Parsed::End;
    }
    let Some(kind) = FrameKind::from_u8(frame[KIND_OFFSET]) else {
        return Parsed::Bad(format!("unknown frame kind {}", frame[KIND_OFFSET]));
    };
    let payload = &frame[FRAME_HEADER_BYTES..];
    let payload_ok = match kind {
        FrameKind::Entry => true,
        FrameKind::Compact | FrameKind::Reset => payload.is_empty(),
        FrameKind::HardState => payload.len() == HARD_STATE_PAYLOAD_BYTES,
        FrameKind::StreamState => payload.len() == STREAM_STATE_PAYLOAD_BYTES,
    };
    if !payload_ok {
        return Parsed::Bad(format!(
            "{kind:?} frame with a {}-byte payload",
            payload.len()
        ));
    }
    Parsed::Frame(FrameRef {
        kind,
        stream: read_u64(frame, STREAM_OFFSET).unwrap_or_default(),
        index: read_u64(frame, INDEX_OFFSET).unwrap_or_default(),
        term: read_u64(frame, TERM_OFFSET).unwrap_or_default(),
        payload,
        offset: offset as u64,
        len: total as u32,
    })
}

/// The first offset at or after `from` where a valid frame of segment `seq` starts.
/// Used to tell a torn tail (nothing valid after the damage) from corruption.
/// The cheap sequence-field check comes first, so scanning zeroes is fast.
pub fn find_valid_frame(data: &[u8], from: usize, seq: u64) -> Option<usize> {
    let seq_bytes = seq.to_le_bytes();
    let last_start = data.len().checked_sub(FRAME_HEADER_BYTES)?;
    (from..=last_start).find(|&offset| {
        data[offset + SEQ_OFFSET..offset + SEQ_OFFSET + 8] == seq_bytes
            && matches!(parse_frame(data, offset, seq), Parsed::Frame(_))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(kind: FrameKind, payload: &[u8], seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let frame = encode_frame(&mut buf, kind, 7, 9, 3, payload);
        seal_frame(&mut buf[frame.start..], &frame.body_crc, seq);
        buf
    }

    #[test]
    fn frame_round_trips() {
        let buf = sealed(FrameKind::Entry, b"hello", 5);
        let Parsed::Frame(frame) = parse_frame(&buf, 0, 5) else {
            panic!("not a frame")
        };
        assert_eq!(
            (frame.stream, frame.index, frame.term, frame.payload),
            (7, 9, 3, &b"hello"[..])
        );
        assert_eq!(frame.len as usize, buf.len());
    }

    #[test]
    fn stale_sequence_is_the_end() {
        let buf = sealed(FrameKind::Entry, b"x", 5);
        assert!(matches!(parse_frame(&buf, 0, 6), Parsed::End));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let buf = sealed(FrameKind::Entry, b"payload", 5);
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse_frame(&damaged, 0, 5), Parsed::Frame(_)),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_segment_header(42);
        assert_eq!(check_segment_header(&header, 42), Ok(()));
        assert!(check_segment_header(&header, 43).is_err());
        for bit in 0..HEADER_CRC_OFFSET * 8 {
            let mut damaged = header;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(check_segment_header(&damaged, 42).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn parser_is_total_on_garbage() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = vec![0u8; 64];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let _ = parse_frame(&bytes, 0, state);
            let _ = find_valid_frame(&bytes, 0, state);
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(12)), Some(12));
        assert_eq!(parse_segment_file_name("12.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000012.wal.free"),
            None
        );
    }
}
