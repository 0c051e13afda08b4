//! Every on-disk constant of a snapshot file and the codecs of its three parts
//! (header, chunk frame, footer). `snapshot/FORMAT.md` describes the same bytes;
//! the two must agree. All integers are little-endian; CRC is CRC-32 (IEEE).

use std::collections::BTreeSet;

use aerie_engine::{NamespaceConfig, PARTITION_COUNT};

/// First bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"AERIESNP";
/// Format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest header accepted (it is read whole into memory).
pub const MAX_HEADER_BYTES: u32 = 1 << 20;
/// Smallest header: magic, version, length, the fixed fields, empty lists, CRC.
pub const MIN_HEADER_BYTES: u32 = 16 + 44 + 1 + 2 + 1 + 4;
/// Longest cluster name.
pub const MAX_CLUSTER_NAME_BYTES: usize = 63;
/// Most namespaces one snapshot carries.
pub const MAX_NAMESPACES: usize = 32;

/// Magic of every chunk frame ("SCHK").
pub const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"SCHK");
/// Bytes of a chunk frame header.
pub const CHUNK_HEADER_BYTES: usize = 28;
/// Largest raw (uncompressed) chunk accepted: a reader never holds more.
pub const MAX_CHUNK_RAW_BYTES: u32 = 16 << 20;
/// Largest record image in a chunk.
pub const MAX_RECORD_BYTES: u32 = 8 << 20;

/// Magic at the start of the footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"AERIEEND";
/// Footer bytes before the chunk offset table.
pub const FOOTER_FIXED_BYTES: usize = 40;
/// The trailer closing every file: footer offset (8), CRC of the footer (4),
/// magic (4).
pub const TRAILER_BYTES: usize = 16;
/// Magic of the trailer, the file's last four bytes.
pub const TRAILER_MAGIC: u32 = u32::from_le_bytes(*b"SNPE");

/// Suffix of a finished snapshot file.
pub const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of a file being written (never read as a snapshot).
pub const TMP_SUFFIX: &str = ".snap.tmp";
/// Suffix of a file being received (accepted only after a full verify).
pub const PARTIAL_SUFFIX: &str = ".snap.partial";

/// The file name of the snapshot of `shard_id` at `index`.
pub fn file_name(shard_id: u32, index: u64) -> String {
    format!("shard-{shard_id:05}-{index:020}{SNAPSHOT_SUFFIX}")
}

/// `(shard_id, index)` of a snapshot file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(SNAPSHOT_SUFFIX)?.strip_prefix("shard-")?;
    let (shard, index) = stem.split_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(shard, 5) || !digits(index, 20) {
        return None;
    }
    Some((shard.parse().ok()?, index.parse().ok()?))
}

/// What a snapshot is of: written into the header, checked on restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Cluster the data belongs to.
    pub cluster_name: String,
    /// Node that wrote the file.
    pub node_id: u64,
    /// Shard (raft group) id.
    pub shard_id: u32,
    /// The engine log the shard applies through.
    pub log_id: u64,
    /// The raft index the snapshot is consistent at.
    pub index: u64,
    /// The raft term of that index.
    pub term: u64,
    /// When it was taken, Unix ms.
    pub created_ms: u64,
    /// The shard's partitions, ascending, unique, each below 4096.
    pub partitions: Vec<u16>,
    /// Every namespace with its settings; chunks refer to them by position.
    pub namespaces: Vec<NamespaceConfig>,
    /// zstd level the chunks were compressed with (informational).
    pub zstd_level: i32,
}

/// Why a header is not valid, with the offset of the bad field.
pub type HeaderError = (u64, String);

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn name(&mut self, s: &str) {
        self.u8(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Bounds-checked little-endian reader that knows its offset for errors.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| (self.pos as u64, format!("{n} bytes past the end")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, HeaderError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, HeaderError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn name(&mut self, max: usize, what: &str) -> Result<String, HeaderError> {
        let at = self.pos as u64;
        let len = usize::from(self.u8()?);
        if len > max {
            return Err((at, format!("{what} of {len} bytes (at most {max})")));
        }
        String::from_utf8(self.bytes(len)?.to_vec()).map_err(|_| (at, format!("{what} not UTF-8")))
    }
}

fn encode_namespace(w: &mut Writer, ns: &NamespaceConfig) {
    w.name(&ns.name);
    w.u64(ns.size_limit_bytes);
    w.u32(ns.default_ttl_secs);
    w.u8(ns.stop_writes_used_pct);
    w.u64(ns.memory_limit_bytes);
    w.u32(ns.write_block_size_bytes);
    w.u64(ns.flush_interval_ms);
    w.u8(ns.defrag_lwm_pct);
    w.u32(ns.post_write_cache_blocks.min(u32::MAX as usize) as u32);
}

fn decode_namespace(r: &mut Reader<'_>) -> Result<NamespaceConfig, HeaderError> {
    Ok(NamespaceConfig {
        name: r.name(
            aerie_engine::format::MAX_NAMESPACE_NAME_BYTES,
            "namespace name",
        )?,
        size_limit_bytes: r.u64()?,
        default_ttl_secs: r.u32()?,
        stop_writes_used_pct: r.u8()?,
        memory_limit_bytes: r.u64()?,
        write_block_size_bytes: r.u32()?,
        flush_interval_ms: r.u64()?,
        defrag_lwm_pct: r.u8()?,
        post_write_cache_blocks: r.u32()? as usize,
        // Not in the header (format version 1): the node's config sets it.
        ..NamespaceConfig::default()
    })
}

impl Header {
    /// Checks the invariants a header must hold before it is written or after
    /// it is read.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_name.len() > MAX_CLUSTER_NAME_BYTES {
            return Err("cluster name longer than 63 bytes".into());
        }
        if self.partitions.is_empty() || self.partitions.len() > PARTITION_COUNT {
            return Err(format!("{} partitions", self.partitions.len()));
        }
        let ascending = self.partitions.windows(2).all(|w| w[0] < w[1]);
        let in_range = self
            .partitions
            .iter()
            .all(|&p| usize::from(p) < PARTITION_COUNT);
        if !ascending || !in_range {
            return Err("partitions not ascending, unique and below 4096".into());
        }
        if self.namespaces.is_empty() || self.namespaces.len() > MAX_NAMESPACES {
            return Err(format!("{} namespaces", self.namespaces.len()));
        }
        let names: BTreeSet<&str> = self.namespaces.iter().map(|n| n.name.as_str()).collect();
        if names.len() != self.namespaces.len() {
            return Err("a namespace is listed twice".into());
        }
        Ok(())
    }

    /// The header's bytes, CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256 + 2 * self.partitions.len()));
        w.0.extend_from_slice(&MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0); // total length, filled below
        w.u64(self.index);
        w.u64(self.term);
        w.u64(self.created_ms);
        w.u64(self.node_id);
        w.u32(self.shard_id);
        w.u64(self.log_id);
        w.name(&self.cluster_name);
        w.u16(self.partitions.len() as u16);
        for p in &self.partitions {
            w.u16(*p);
        }
        w.u8(self.namespaces.len() as u8);
        for ns in &self.namespaces {
            encode_namespace(&mut w, ns);
        }
        w.u32(self.zstd_level as u32);
        let total = (w.0.len() + 4) as u32;
        w.0[12..16].copy_from_slice(&total.to_le_bytes());
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.0
    }

    /// The total header length announced by its first 16 bytes.
    pub fn announced_len(prefix: &[u8; 16]) -> Result<u32, HeaderError> {
        if prefix[0..8] != MAGIC {
            return Err((0, "not a snapshot file (bad magic)".into()));
        }
        let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if version != FORMAT_VERSION {
            return Err((
                8,
                format!("format version {version}, expected {FORMAT_VERSION}"),
            ));
        }
        let len = u32::from_le_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&len) {
            return Err((12, format!("header length {len} out of bounds")));
        }
        Ok(len)
    }

    /// Decodes and checks a whole header (`bytes` is exactly its length).
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let prefix: &[u8; 16] = bytes
            .get(..16)
            .and_then(|b| b.try_into().ok())
            .ok_or((0, "file shorter than a header".to_string()))?;
        let len = Header::announced_len(prefix)? as usize;
        if bytes.len() != len {
            return Err((12, "header length does not match".into()));
        }
        let crc_at = len - 4;
        let stored = u32::from_le_bytes([
            bytes[crc_at],
            bytes[crc_at + 1],
            bytes[crc_at + 2],
            bytes[crc_at + 3],
        ]);
        if crc32fast::hash(&bytes[..crc_at]) != stored {
            return Err((crc_at as u64, "header CRC mismatch".into()));
        }
        let mut r = Reader::new(&bytes[..crc_at]);
        r.bytes(16)?;
        let header = Header::decode_fields(&mut r)?;
        if r.remaining() != 0 {
            return Err((r.pos() as u64, "trailing bytes in the header".into()));
        }
        header.validate().map_err(|reason| (16, reason))?;
        Ok(header)
    }

    fn decode_fields(r: &mut Reader<'_>) -> Result<Header, HeaderError> {
        let index = r.u64()?;
        let term = r.u64()?;
        let created_ms = r.u64()?;
        let node_id = r.u64()?;
        let shard_id = r.u32()?;
        let log_id = r.u64()?;
        let cluster_name = r.name(MAX_CLUSTER_NAME_BYTES, "cluster name")?;
        let partition_count = usize::from(r.u16()?);
        let partitions = (0..partition_count)
            .map(|_| r.u16())
            .collect::<Result<Vec<_>, _>>()?;
        let namespace_count = usize::from(r.u8()?);
        let namespaces = (0..namespace_count)
            .map(|_| decode_namespace(r))
            .collect::<Result<Vec<_>, _>>()?;
        let zstd_level = r.u32()? as i32;
        Ok(Header {
            cluster_name,
            node_id,
            shard_id,
            log_id,
            index,
            term,
            created_ms,
            partitions,
            namespaces,
            zstd_level,
        })
    }
}

/// The 28-byte frame in front of each chunk's compressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Bytes of compressed data after the frame header.
    pub compressed_len: u32,
    /// Bytes after decompression.
    pub raw_len: u32,
    /// Records in the chunk.
    pub records: u32,
    /// Position of the chunk's namespace in the header's list.
    pub namespace: u16,
    /// CRC of the compressed bytes.
    pub data_crc: u32,
}

impl ChunkHeader {
    /// The frame header's bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_BYTES] {
        let mut out = [0u8; CHUNK_HEADER_BYTES];
        out[0..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.compressed_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.records.to_le_bytes());
        out[16..18].copy_from_slice(&self.namespace.to_le_bytes());
        out[20..24].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32fast::hash(&out[..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a frame header; the error carries the offset within it.
    pub fn decode(b: &[u8; CHUNK_HEADER_BYTES]) -> Result<ChunkHeader, HeaderError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u32_at(0) != CHUNK_MAGIC {
            return Err((0, "bad chunk magic".into()));
        }
        if crc32fast::hash(&b[..24]) != u32_at(24) {
            return Err((24, "chunk header CRC mismatch".into()));
        }
        let h = ChunkHeader {
            compressed_len: u32_at(4),
            raw_len: u32_at(8),
            records: u32_at(12),
            namespace: u16::from_le_bytes([b[16], b[17]]),
            data_crc: u32_at(20),
        };
        if h.raw_len > MAX_CHUNK_RAW_BYTES || h.compressed_len == 0 || h.records == 0 {
            return Err((4, "chunk lengths or record count out of bounds".into()));
        }
        Ok(h)
    }
}

/// Counts and the chunk offset table, at the end of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footer {
    /// Records in the file.
    pub records: u64,
    /// Bytes of record data before compression.
    pub raw_bytes: u64,
    /// Bytes of chunks (frames and compressed data).
    pub chunk_bytes: u64,
    /// CRC-32 over every chunk's data CRC (4 bytes LE each), in file order.
    pub checksum: u32,
    /// File offset of every chunk frame, in order.
    pub chunk_offsets: Vec<u64>,
}

impl Footer {
    /// The footer and trailer bytes, for a footer that starts at `offset`.
    pub fn encode(&self, offset: u64) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.encoded_len()));
        w.0.extend_from_slice(&FOOTER_MAGIC);
        w.u64(self.records);
        w.u64(self.raw_bytes);
        w.u64(self.chunk_bytes);
        w.u32(self.chunk_offsets.len() as u32);
        w.u32(self.checksum);
        for o in &self.chunk_offsets {
            w.u64(*o);
        }
        let crc = crc32fast::hash(&w.0);
        w.u64(offset);
        w.u32(crc);
        w.u32(TRAILER_MAGIC);
        w.0
    }

    fn encoded_len(&self) -> usize {
        FOOTER_FIXED_BYTES + 8 * self.chunk_offsets.len() + TRAILER_BYTES
    }

    /// Reads the trailer (the file's last 16 bytes): `(footer offset, CRC)`.
    pub fn decode_trailer(
        b: &[u8; TRAILER_BYTES],
        file_len: u64,
    ) -> Result<(u64, u32), HeaderError> {
        let offset = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if u32::from_le_bytes([b[12], b[13], b[14], b[15]]) != TRAILER_MAGIC {
            return Err((
                12,
                "bad trailer magic: the file is cut short or not a snapshot".into(),
            ));
        }
        let max = file_len.saturating_sub((FOOTER_FIXED_BYTES + TRAILER_BYTES) as u64);
        if offset > max {
            return Err((0, format!("footer offset {offset} out of bounds")));
        }
        Ok((offset, crc))
    }

    /// Decodes the footer bytes (from its start up to the trailer).
    pub fn decode(bytes: &[u8], crc: u32) -> Result<Footer, HeaderError> {
        if crc32fast::hash(bytes) != crc {
            return Err((0, "footer CRC mismatch".into()));
        }
        let mut r = Reader::new(bytes);
        if r.bytes(8)? != FOOTER_MAGIC {
            return Err((0, "bad footer magic".into()));
        }
        let records = r.u64()?;
        let raw_bytes = r.u64()?;
        let chunk_bytes = r.u64()?;
        let count = r.u32()? as usize;
        let checksum = r.u32()?;
        if count != r.remaining() / 8 || !r.remaining().is_multiple_of(8) {
            return Err((32, format!("{count} chunk offsets do not fill the footer")));
        }
        let chunk_offsets = (0..count).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        Ok(Footer {
            records,
            raw_bytes,
            chunk_bytes,
            checksum,
            chunk_offsets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            cluster_name: "prod".into(),
            node_id: 7,
            shard_id: 3,
            log_id: 4,
            index: 1234,
            term: 5,
            created_ms: 1_700_000_000_000,
            partitions: (0..64).collect(),
            namespaces: vec![
                NamespaceConfig::named("test"),
                NamespaceConfig::named("bar"),
            ],
            zstd_level: 3,
        }
    }

    #[test]
    fn header_round_trips_and_every_bit_flip_is_caught() {
        let bytes = header().encode();
        assert_eq!(Header::decode(&bytes), Ok(header()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(Header::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn chunk_header_and_footer_round_trip() {
        let chunk = ChunkHeader {
            compressed_len: 10,
            raw_len: 20,
            records: 2,
            namespace: 1,
            data_crc: 99,
        };
        assert_eq!(ChunkHeader::decode(&chunk.encode()), Ok(chunk));
        let footer = Footer {
            records: 3,
            raw_bytes: 4,
            chunk_bytes: 5,
            checksum: 6,
            chunk_offsets: vec![100, 200],
        };
        let bytes = footer.encode(1000);
        let body = &bytes[..bytes.len() - TRAILER_BYTES];
        let trailer: &[u8; TRAILER_BYTES] = bytes[body.len()..].try_into().unwrap();
        let (offset, crc) = Footer::decode_trailer(trailer, 2000).unwrap();
        assert_eq!(offset, 1000);
        assert_eq!(Footer::decode(body, crc), Ok(footer));
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(12, 345)), Some((12, 345)));
        assert_eq!(parse_file_name("shard-1-2.snap"), None);
        assert_eq!(parse_file_name("x.snap.tmp"), None);
    }
}
