//! On-disk format: every constant, and the codecs of write blocks and record
//! versions. `engine/FORMAT.md` describes the same bytes in prose; keep them in
//! step. All integers are little-endian.
//!
//! Decoders treat their input as hostile: every length is bounded before use,
//! every record is CRC-checked before any field other than its length is
//! trusted, and every failure names the file and the byte offset.

use std::path::Path;

use crate::error::{Error, Result};
use crate::types::{Bin, Digest, Key, Record, Value, particle};

/// Magic at the start of a write block (segment) file.
pub const BLOCK_MAGIC: [u8; 8] = *b"AERIESEG";
/// Write block format version.
pub const BLOCK_VERSION: u16 = 1;
/// Size of the block header; records start right after it.
pub const BLOCK_HEADER_BYTES: usize = 32;
/// Offset of the header CRC (CRC32 of bytes 0..28).
const BLOCK_HEADER_CRC_AT: usize = 28;

/// Size of the fixed header in front of every record version.
pub const RECORD_HEADER_BYTES: usize = 72;
/// Record format version (byte 9 of a record header).
pub const RECORD_VERSION: u8 = 1;
/// Record kind: a live record with bins.
pub const KIND_LIVE: u8 = 1;
/// Record kind: a tombstone (durable delete), no body.
pub const KIND_TOMBSTONE: u8 = 2;

/// Smallest and largest accepted `write_block_size_bytes`.
pub const MIN_WRITE_BLOCK_BYTES: usize = 4096;
/// Offsets and lengths in the index are u32; 1 GiB keeps far from the edge.
pub const MAX_WRITE_BLOCK_BYTES: usize = 1 << 30;

/// Name limits (Aerospike's).
pub const MAX_NAMESPACE_NAME_BYTES: usize = 31;
/// Set names.
pub const MAX_SET_NAME_BYTES: usize = 63;
/// Bin names.
pub const MAX_BIN_NAME_BYTES: usize = 15;
/// Most distinct sets per namespace (Aerospike's limit is 1023).
pub const MAX_SETS_PER_NAMESPACE: usize = 1023;
/// Largest TTL a write may ask for: 10 years.
pub const MAX_TTL_SECS: u32 = 315_360_000;

/// Magic of the engine manifest file (`<dir>/MANIFEST`).
pub const MANIFEST_MAGIC: [u8; 8] = *b"AERIEMAN";
/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest accepted when reading.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// Manifest file name.
pub const MANIFEST_FILE: &str = "MANIFEST";

/// Magic of an index checkpoint (`<dir>/<ns>/index.ckpt`).
pub const INDEX_MAGIC: [u8; 8] = *b"AERIEIDX";
/// Index checkpoint format version.
pub const INDEX_VERSION: u32 = 1;
/// Index checkpoint file name.
pub const INDEX_FILE: &str = "index.ckpt";
/// One index entry in the checkpoint.
pub const INDEX_ENTRY_BYTES: usize = 40;
/// Entries per CRC-protected chunk of the index checkpoint.
pub const INDEX_CHUNK_ENTRIES: usize = 65_536;

/// Suffix of write block files: `<block id, 10 digits>.seg`.
pub const BLOCK_SUFFIX: &str = ".seg";
/// Suffix of files being written before their atomic rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// File name of a block.
pub fn block_file_name(block_id: u32) -> String {
    format!("{block_id:010}{BLOCK_SUFFIX}")
}

/// Block id from a file name, if it is a block file.
pub fn parse_block_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(BLOCK_SUFFIX)?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The 32-byte block header.
pub fn encode_block_header(block_id: u32, write_block_size_bytes: u32) -> [u8; BLOCK_HEADER_BYTES] {
    let mut h = [0u8; BLOCK_HEADER_BYTES];
    h[0..8].copy_from_slice(&BLOCK_MAGIC);
    h[8..10].copy_from_slice(&BLOCK_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(BLOCK_HEADER_BYTES as u16).to_le_bytes());
    h[12..16].copy_from_slice(&block_id.to_le_bytes());
    h[16..20].copy_from_slice(&write_block_size_bytes.to_le_bytes());
    let crc = crc32fast::hash(&h[..BLOCK_HEADER_CRC_AT]);
    h[BLOCK_HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a block header read from `path`.
pub fn check_block_header(bytes: &[u8], block_id: u32, path: &Path) -> Result<()> {
    let bad = |offset: u64, reason: &str| Err(Error::corruption(path, offset, reason));
    if bytes.len() < BLOCK_HEADER_BYTES {
        return bad(0, "block header truncated");
    }
    let stored = u32::from_le_bytes(le4(&bytes[BLOCK_HEADER_CRC_AT..]));
    if crc32fast::hash(&bytes[..BLOCK_HEADER_CRC_AT]) != stored {
        return bad(0, "block header CRC mismatch");
    }
    if bytes[0..8] != BLOCK_MAGIC {
        return bad(0, "bad block magic");
    }
    if u16::from_le_bytes([bytes[8], bytes[9]]) != BLOCK_VERSION {
        return bad(8, "unsupported block version");
    }
    if u32::from_le_bytes(le4(&bytes[12..])) != block_id {
        return bad(12, "block id does not match the file name");
    }
    Ok(())
}

fn le4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

/// The fixed header of one record version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionHeader {
    /// `KIND_LIVE` or `KIND_TOMBSTONE`.
    pub kind: u8,
    /// Generation (0 for tombstones).
    pub generation: u16,
    /// Digest.
    pub digest: Digest,
    /// Void time, seconds since 2010 (0 = never).
    pub void_time: u32,
    /// Last update, Unix ms.
    pub last_update_ms: u64,
    /// Log that wrote this version.
    pub log_id: u64,
    /// Index in that log.
    pub log_index: u64,
    /// Engine-wide write sequence: the newest valid version of a digest wins.
    pub seq: u64,
    /// Tombstones: the first block id the tombstone was written to; every older
    /// version of the record lives in a block with an id at most this. 0 for
    /// live records.
    pub tomb_bound_block: u32,
}

impl VersionHeader {
    /// True for tombstones.
    pub fn is_tombstone(&self) -> bool {
        self.kind == KIND_TOMBSTONE
    }
}

/// Encodes a record version: header, then (for live records) set, key and bins.
pub fn encode_version(h: &VersionHeader, body: Option<&Record>) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body.map_or(0, body_size_hint));
    out.extend_from_slice(&[0u8; 8]); // length and CRC, filled below
    out.push(h.kind);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&h.generation.to_le_bytes());
    out.extend_from_slice(&h.digest);
    out.extend_from_slice(&h.void_time.to_le_bytes());
    out.extend_from_slice(&h.last_update_ms.to_le_bytes());
    out.extend_from_slice(&h.log_id.to_le_bytes());
    out.extend_from_slice(&h.log_index.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.tomb_bound_block.to_le_bytes());
    if let Some(record) = body {
        encode_body(record, &mut out);
    }
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The exact size of [`encode_version`] for a live record, without encoding
/// it (the record size limit is checked before anything is stored).
pub fn encoded_version_len(record: &Record) -> usize {
    let key = record.key.as_ref().map_or(0, |k| 4 + key_len(k));
    let bins: usize = record
        .bins
        .iter()
        .map(|b| 1 + b.name.len() + 1 + 4 + value_len(&b.value))
        .sum();
    RECORD_HEADER_BYTES + 1 + record.set.len() + 1 + key + 2 + bins
}

fn key_len(key: &Key) -> usize {
    match key {
        Key::Int(_) | Key::Float(_) => 8,
        Key::String(b) | Key::Blob { bytes: b, .. } => b.len(),
    }
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Nil => 0,
        Value::Int(_) | Value::Float(_) => 8,
        Value::Bool(_) => 1,
        Value::String(b)
        | Value::Blob { bytes: b, .. }
        | Value::List(b)
        | Value::Map(b)
        | Value::GeoJson(b)
        | Value::Hll(b) => b.len(),
    }
}

fn body_size_hint(record: &Record) -> usize {
    let bins: usize = record.bins.iter().map(|b| 6 + b.name.len() + 16).sum();
    4 + record.set.len() + 16 + bins
}

fn encode_body(record: &Record, out: &mut Vec<u8>) {
    out.push(record.set.len() as u8);
    out.extend_from_slice(record.set.as_bytes());
    match &record.key {
        None => out.push(0),
        Some(key) => {
            let (kind, bytes) = key_bytes(key);
            out.push(kind);
            put_bytes(out, &bytes);
        }
    }
    out.extend_from_slice(&(record.bins.len() as u16).to_le_bytes());
    for bin in &record.bins {
        out.push(bin.name.len() as u8);
        out.extend_from_slice(bin.name.as_bytes());
        out.push(bin.value.particle_type());
        put_value(out, &bin.value);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Nil => put_bytes(out, &[]),
        Value::Int(i) => put_bytes(out, &i.to_le_bytes()),
        Value::Float(f) => put_bytes(out, &f.to_bits().to_le_bytes()),
        Value::Bool(b) => put_bytes(out, &[u8::from(*b)]),
        Value::String(b)
        | Value::Blob { bytes: b, .. }
        | Value::List(b)
        | Value::Map(b)
        | Value::GeoJson(b)
        | Value::Hll(b) => put_bytes(out, b),
    }
}

fn key_bytes(key: &Key) -> (u8, Vec<u8>) {
    match key {
        Key::Int(i) => (particle::INTEGER, i.to_le_bytes().to_vec()),
        Key::Float(f) => (particle::FLOAT, f.to_bits().to_le_bytes().to_vec()),
        Key::String(s) => (particle::STRING, s.clone()),
        Key::Blob { particle, bytes } => (*particle, bytes.clone()),
    }
}

/// Bytes of a record image before its body: digest 20, generation 2, void
/// time 4, last-update ms 8.
pub const RECORD_IMAGE_FIXED_BYTES: usize = 34;

/// Encodes a record on its own, outside any block (what snapshots carry): the
/// fixed fields, then the same body as a live version. See `FORMAT.md`.
pub fn encode_record_image(record: &Record, out: &mut Vec<u8>) {
    put_image_prefix(
        record.digest,
        record.generation,
        record.void_time,
        record.last_update_ms,
        out,
    );
    encode_body(record, out);
}

/// The fixed fields of the image of a stored version (its body follows as is).
pub fn encode_image_prefix(h: &VersionHeader, out: &mut Vec<u8>) {
    put_image_prefix(h.digest, h.generation, h.void_time, h.last_update_ms, out);
}

fn put_image_prefix(
    digest: Digest,
    generation: u16,
    void_time: u32,
    last_update_ms: u64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&digest);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&void_time.to_le_bytes());
    out.extend_from_slice(&last_update_ms.to_le_bytes());
}

/// Decodes a record image that fills `bytes` exactly; says why not.
pub fn decode_record_image(bytes: &[u8]) -> Result<Record, &'static str> {
    let mut r = Reader::new(bytes);
    let short = "record image shorter than its fixed fields";
    let header = VersionHeader {
        kind: KIND_LIVE,
        digest: r.array::<20>().ok_or(short)?,
        generation: r.u16().ok_or(short)?,
        void_time: r.u32().ok_or(short)?,
        last_update_ms: r.u64().ok_or(short)?,
        log_id: 0,
        log_index: 0,
        seq: 0,
        tomb_bound_block: 0,
    };
    if header.generation == 0 {
        return Err("record image with generation 0");
    }
    let record = decode_body(&mut r, &header)?;
    if r.remaining() != 0 {
        return Err("trailing bytes after a record image");
    }
    Ok(record)
}

/// Size of the record version starting at `bytes[0]`, if the length field is
/// plausible (header-sized at least, and within `bytes`). Does not check the CRC.
pub fn version_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let len = u32::from_le_bytes(le4(bytes)) as usize;
    (RECORD_HEADER_BYTES..=bytes.len())
        .contains(&len)
        .then_some(len)
}

/// Verifies and decodes the header of the record version that fills `bytes`
/// exactly. `offset` is its position in `path`, for errors.
pub fn decode_header(bytes: &[u8], path: &Path, offset: u64) -> Result<VersionHeader> {
    let bad = |at: usize, reason: &str| Error::corruption(path, offset + at as u64, reason);
    if version_len(bytes) != Some(bytes.len()) {
        return Err(bad(0, "record length field does not match"));
    }
    let stored = u32::from_le_bytes(le4(&bytes[4..]));
    if crc32fast::hash(&bytes[8..]) != stored {
        return Err(bad(4, "record CRC mismatch"));
    }
    let mut r = Reader::new(&bytes[8..RECORD_HEADER_BYTES]);
    let kind = r.u8().ok_or_else(|| bad(8, "short header"))?;
    let version = r.u8().ok_or_else(|| bad(9, "short header"))?;
    if version != RECORD_VERSION {
        return Err(bad(9, "unsupported record version"));
    }
    if kind != KIND_LIVE && kind != KIND_TOMBSTONE {
        return Err(bad(8, "unknown record kind"));
    }
    let short = || bad(10, "short header");
    let generation = r.u16().ok_or_else(short)?;
    let digest = r.array::<20>().ok_or_else(short)?;
    let h = VersionHeader {
        kind,
        generation,
        digest,
        void_time: r.u32().ok_or_else(short)?,
        last_update_ms: r.u64().ok_or_else(short)?,
        log_id: r.u64().ok_or_else(short)?,
        log_index: r.u64().ok_or_else(short)?,
        seq: r.u64().ok_or_else(short)?,
        tomb_bound_block: r.u32().ok_or_else(short)?,
    };
    if h.is_tombstone() != (bytes.len() == RECORD_HEADER_BYTES) {
        return Err(bad(0, "tombstone with a body, or live record without one"));
    }
    Ok(h)
}

/// Verifies and decodes a whole record version (header and body).
pub fn decode_version(
    bytes: &[u8],
    path: &Path,
    offset: u64,
) -> Result<(VersionHeader, Option<Record>)> {
    let h = decode_header(bytes, path, offset)?;
    if h.is_tombstone() {
        return Ok((h, None));
    }
    let body_at = offset + RECORD_HEADER_BYTES as u64;
    let mut r = Reader::new(&bytes[RECORD_HEADER_BYTES..]);
    let record = decode_body(&mut r, &h)
        .map_err(|reason| Error::corruption(path, body_at + r.pos as u64, reason))?;
    if r.pos != r.buf.len() {
        return Err(Error::corruption(
            path,
            body_at + r.pos as u64,
            "trailing bytes in record",
        ));
    }
    Ok((h, Some(record)))
}

fn decode_body(r: &mut Reader<'_>, h: &VersionHeader) -> Result<Record, &'static str> {
    let set_len = r.u8().ok_or("short set name")? as usize;
    if set_len > MAX_SET_NAME_BYTES {
        return Err("set name too long");
    }
    let set = String::from_utf8(r.bytes(set_len).ok_or("short set name")?.to_vec())
        .map_err(|_| "set name is not UTF-8")?;
    let key_type = r.u8().ok_or("short key")?;
    let key = match key_type {
        0 => None,
        _ => Some(decode_key(key_type, r.len_prefixed().ok_or("short key")?)?),
    };
    let n_bins = r.u16().ok_or("short bin count")?;
    let mut bins = Vec::with_capacity(usize::from(n_bins).min(r.remaining() / 6));
    for _ in 0..n_bins {
        let name_len = r.u8().ok_or("short bin name")? as usize;
        if name_len > MAX_BIN_NAME_BYTES {
            return Err("bin name too long");
        }
        let name = String::from_utf8(r.bytes(name_len).ok_or("short bin name")?.to_vec())
            .map_err(|_| "bin name is not UTF-8")?;
        let particle = r.u8().ok_or("short bin")?;
        let value = decode_value(particle, r.len_prefixed().ok_or("short bin value")?)?;
        bins.push(Bin { name, value });
    }
    if bins.is_empty() {
        return Err("live record without bins");
    }
    Ok(Record {
        digest: h.digest,
        set,
        key,
        bins,
        generation: h.generation,
        void_time: h.void_time,
        last_update_ms: h.last_update_ms,
    })
}

fn eight(bytes: &[u8]) -> Result<[u8; 8], &'static str> {
    bytes.try_into().map_err(|_| "numeric value is not 8 bytes")
}

fn decode_key(kind: u8, bytes: &[u8]) -> Result<Key, &'static str> {
    Ok(match kind {
        particle::INTEGER => Key::Int(i64::from_le_bytes(eight(bytes)?)),
        particle::FLOAT => Key::Float(f64::from_bits(u64::from_le_bytes(eight(bytes)?))),
        particle::STRING => Key::String(bytes.to_vec()),
        p if particle::is_blob(p) => Key::Blob {
            particle: p,
            bytes: bytes.to_vec(),
        },
        _ => return Err("unknown key type"),
    })
}

fn decode_value(kind: u8, bytes: &[u8]) -> Result<Value, &'static str> {
    Ok(match kind {
        particle::INTEGER => Value::Int(i64::from_le_bytes(eight(bytes)?)),
        particle::FLOAT => Value::Float(f64::from_bits(u64::from_le_bytes(eight(bytes)?))),
        particle::STRING => Value::String(bytes.to_vec()),
        particle::BOOL => match bytes {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return Err("bad bool"),
        },
        particle::LIST => Value::List(bytes.to_vec()),
        particle::MAP => Value::Map(bytes.to_vec()),
        particle::GEOJSON => Value::GeoJson(bytes.to_vec()),
        particle::HLL => Value::Hll(bytes.to_vec()),
        p if particle::is_blob(p) => Value::Blob {
            particle: p,
            bytes: bytes.to_vec(),
        },
        _ => return Err("unknown particle type"),
    })
}

/// Bounds-checked little-endian reader; every getter returns `None` past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// Bytes consumed so far.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    /// u8.
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    /// u16.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    /// u32.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    /// u64.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// A u32 length, then that many bytes.
    pub fn len_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_image_round_trips_and_rejects_every_truncation() {
        let record = Record {
            digest: [7; 20],
            set: "users".into(),
            key: Some(Key::String(b"k1".to_vec())),
            bins: vec![
                Bin::new("n", Value::Int(-5)),
                Bin::new("s", Value::string("hello")),
                Bin::new("f", Value::Float(1.5)),
            ],
            generation: 3,
            void_time: 12345,
            last_update_ms: 1_700_000_000_000,
        };
        let mut bytes = Vec::new();
        encode_record_image(&record, &mut bytes);
        assert_eq!(decode_record_image(&bytes), Ok(record));
        for len in 0..bytes.len() {
            assert!(decode_record_image(&bytes[..len]).is_err(), "{len}");
        }
        bytes.push(0);
        assert!(decode_record_image(&bytes).is_err());
    }

    #[test]
    fn encoded_version_len_is_the_encoded_size() {
        let header = VersionHeader {
            kind: KIND_LIVE,
            generation: 1,
            digest: [1; 20],
            void_time: 0,
            last_update_ms: 0,
            log_id: 1,
            log_index: 1,
            seq: 1,
            tomb_bound_block: 0,
        };
        let keys = [
            None,
            Some(Key::Int(5)),
            Some(Key::Float(0.5)),
            Some(Key::String(b"k1".to_vec())),
            Some(Key::Blob {
                particle: particle::BLOB,
                bytes: vec![1, 2, 3],
            }),
        ];
        for key in keys {
            let record = Record {
                digest: [1; 20],
                set: "s".into(),
                key,
                bins: vec![
                    Bin::new("i", Value::Int(1)),
                    Bin::new("b", Value::Bool(true)),
                    Bin::new("l", Value::List(vec![0x91, 1])),
                    Bin::new("s", Value::string("hello")),
                ],
                generation: 1,
                void_time: 0,
                last_update_ms: 0,
            };
            let encoded = encode_version(&header, Some(&record)).len();
            assert_eq!(encoded_version_len(&record), encoded);
        }
    }
}
