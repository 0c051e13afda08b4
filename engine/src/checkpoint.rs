//! The two checkpoint files: the engine `MANIFEST` (what is durable: per-log
//! applied indices, each namespace's blocks and their durable lengths, truncate
//! and install markers) and each namespace's `index.ckpt` (the index as of the
//! same checkpoint, so a start need not scan blocks). Both are written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    self, INDEX_CHUNK_ENTRIES, INDEX_ENTRY_BYTES, INDEX_MAGIC, INDEX_VERSION, MANIFEST_MAGIC,
    MANIFEST_VERSION, MAX_MANIFEST_BYTES, Reader, VersionHeader,
};
use crate::fs::{EngineFs, OpenFor, SeqReader};
use crate::index::Entry;
use crate::types::{PARTITION_COUNT, partition_of};

/// A truncation: versions of the namespace (or set) in `partitions`, last
/// updated before `before_ms` and written before `seq`, are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncateMarker {
    /// Set, or the whole namespace.
    pub set: Option<String>,
    /// Partitions covered, as ascending, disjoint inclusive ranges.
    pub partitions: Vec<(u16, u16)>,
    /// Cut-off, Unix ms.
    pub before_ms: u64,
    /// Engine sequence at the truncation.
    pub seq: u64,
}

impl TruncateMarker {
    /// True if the marker hides the version with header `h` in set `set`.
    pub fn hides(&self, h: &VersionHeader, set: &str) -> bool {
        h.seq < self.seq
            && h.last_update_ms < self.before_ms
            && self.set.as_deref().is_none_or(|s| s == set)
            && self.covers(partition_of(&h.digest))
    }

    fn covers(&self, partition: u16) -> bool {
        self.partitions
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&partition))
    }
}

/// Partitions as ascending, disjoint inclusive ranges (a shard's partitions
/// are one range: a marker stays a few bytes).
pub fn partition_ranges(partitions: &BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &p in partitions {
        match ranges.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(p) => *last = p,
            _ => ranges.push((p, p)),
        }
    }
    ranges
}

/// Truncate marker scope byte: bit 0, a set name follows; bit 1, partition
/// ranges follow (without it, as written before per-partition truncation,
/// the marker covers every partition).
const SCOPE_SET: u8 = 1;
const SCOPE_RANGES: u8 = 2;

/// A namespace's part of the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsManifest {
    /// Next block id to hand out (ids are never reused).
    pub next_block_id: u32,
    /// (block id, durable length) of every block that holds durable data.
    pub blocks: Vec<(u32, u32)>,
    /// Truncations.
    pub truncates: Vec<TruncateMarker>,
    /// Partition → engine sequence of its last install: older versions of the
    /// partition are gone.
    pub installs: BTreeMap<u16, u64>,
}

/// The engine manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Checkpoint number; `index.ckpt` files carry the one they belong to.
    pub checkpoint_seq: u64,
    /// Next engine write sequence.
    pub next_seq: u64,
    /// Log id → durable applied index.
    pub logs: BTreeMap<u64, u64>,
    /// Namespace name → its part.
    pub namespaces: BTreeMap<String, NsManifest>,
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_name(out: &mut Vec<u8>, name: &str) {
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

fn encode_truncate(out: &mut Vec<u8>, t: &TruncateMarker) {
    match &t.set {
        None => out.push(SCOPE_RANGES),
        Some(set) => {
            out.push(SCOPE_RANGES | SCOPE_SET);
            put_name(out, set);
        }
    }
    put_u16(out, t.partitions.len() as u16);
    for (first, last) in &t.partitions {
        put_u16(out, *first);
        put_u16(out, *last);
    }
    put_u64(out, t.before_ms);
    put_u64(out, t.seq);
}

impl Manifest {
    /// Encodes the manifest, CRC last.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MANIFEST_MAGIC);
        put_u32(&mut out, MANIFEST_VERSION);
        put_u64(&mut out, self.checkpoint_seq);
        put_u64(&mut out, self.next_seq);
        put_u32(&mut out, self.logs.len() as u32);
        for (log, index) in &self.logs {
            put_u64(&mut out, *log);
            put_u64(&mut out, *index);
        }
        put_u32(&mut out, self.namespaces.len() as u32);
        for (name, ns) in &self.namespaces {
            put_name(&mut out, name);
            put_u32(&mut out, ns.next_block_id);
            put_u32(&mut out, ns.blocks.len() as u32);
            for (id, len) in &ns.blocks {
                put_u32(&mut out, *id);
                put_u32(&mut out, *len);
            }
            put_u32(&mut out, ns.truncates.len() as u32);
            for t in &ns.truncates {
                encode_truncate(&mut out, t);
            }
            put_u32(&mut out, ns.installs.len() as u32);
            for (partition, seq) in &ns.installs {
                put_u16(&mut out, *partition);
                put_u64(&mut out, *seq);
            }
        }
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Reads and verifies `path`; `Ok(None)` if it does not exist.
    pub fn read(fs: &dyn EngineFs, path: &Path) -> Result<Option<Manifest>> {
        let file = match fs.open(path, OpenFor::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut bytes = Vec::new();
        SeqReader {
            file: &*file,
            pos: 0,
        }
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .at(path)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::corruption(
                path,
                MAX_MANIFEST_BYTES,
                "manifest too large",
            ));
        }
        Self::decode(&bytes, path).map(Some)
    }

    /// Decodes manifest bytes read from `path`.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        if bytes.len() < 16 {
            return Err(Error::corruption(path, 0, "manifest truncated"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != stored {
            return Err(Error::corruption(
                path,
                body.len() as u64,
                "manifest CRC mismatch",
            ));
        }
        let mut r = Reader::new(body);
        let parsed = decode_manifest_body(&mut r);
        let at = r.pos as u64;
        let manifest = parsed.map_err(|reason| Error::corruption(path, at, reason))?;
        if r.remaining() != 0 {
            return Err(Error::corruption(path, at, "trailing bytes in manifest"));
        }
        Ok(manifest)
    }
}

fn name(r: &mut Reader<'_>, max: usize) -> Result<String, &'static str> {
    let len = r.u8().ok_or("short name")? as usize;
    if len > max {
        return Err("name too long");
    }
    String::from_utf8(r.bytes(len).ok_or("short name")?.to_vec()).map_err(|_| "name not UTF-8")
}

/// A count that each element needs at least `min_bytes` for: bounded by what
/// is left, so a flipped count cannot make us allocate gigabytes.
fn count(r: &mut Reader<'_>, min_bytes: usize) -> Result<usize, &'static str> {
    let n = r.u32().ok_or("short count")? as usize;
    if n.saturating_mul(min_bytes) > r.remaining() {
        return Err("count larger than the data");
    }
    Ok(n)
}

fn decode_truncate(r: &mut Reader<'_>) -> Result<TruncateMarker, &'static str> {
    let short = "manifest truncated";
    let scope = r.u8().ok_or(short)?;
    if scope & !(SCOPE_SET | SCOPE_RANGES) != 0 {
        return Err("bad truncate marker");
    }
    let set = match scope & SCOPE_SET {
        0 => None,
        _ => Some(name(r, format::MAX_SET_NAME_BYTES)?),
    };
    let partitions = if scope & SCOPE_RANGES == 0 {
        vec![(0, (PARTITION_COUNT - 1) as u16)]
    } else {
        decode_ranges(r)?
    };
    Ok(TruncateMarker {
        set,
        partitions,
        before_ms: r.u64().ok_or(short)?,
        seq: r.u64().ok_or(short)?,
    })
}

fn decode_ranges(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, &'static str> {
    let n = usize::from(r.u16().ok_or("short range count")?);
    if n.saturating_mul(4) > r.remaining() {
        return Err("range count larger than the data");
    }
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let (first, last) = (r.u16().ok_or("short range")?, r.u16().ok_or("short range")?);
        let after_previous = ranges.last().is_none_or(|(_, prev)| first > *prev);
        if first > last || usize::from(last) >= PARTITION_COUNT || !after_previous {
            return Err("bad partition range in a truncate marker");
        }
        ranges.push((first, last));
    }
    Ok(ranges)
}

fn decode_manifest_body(r: &mut Reader<'_>) -> Result<Manifest, &'static str> {
    if r.array::<8>() != Some(MANIFEST_MAGIC) {
        return Err("bad manifest magic");
    }
    if r.u32() != Some(MANIFEST_VERSION) {
        return Err("unsupported manifest version");
    }
    let short = "manifest truncated";
    let mut m = Manifest {
        checkpoint_seq: r.u64().ok_or(short)?,
        next_seq: r.u64().ok_or(short)?,
        ..Manifest::default()
    };
    for _ in 0..count(r, 16)? {
        let log = r.u64().ok_or(short)?;
        m.logs.insert(log, r.u64().ok_or(short)?);
    }
    for _ in 0..count(r, 17)? {
        let ns_name = name(r, format::MAX_NAMESPACE_NAME_BYTES)?;
        let mut ns = NsManifest {
            next_block_id: r.u32().ok_or(short)?,
            ..NsManifest::default()
        };
        for _ in 0..count(r, 8)? {
            let id = r.u32().ok_or(short)?;
            ns.blocks.push((id, r.u32().ok_or(short)?));
        }
        for _ in 0..count(r, 17)? {
            ns.truncates.push(decode_truncate(r)?);
        }
        for _ in 0..count(r, 10)? {
            let partition = r.u16().ok_or(short)?;
            ns.installs.insert(partition, r.u64().ok_or(short)?);
        }
        m.namespaces.insert(ns_name, ns);
    }
    Ok(m)
}

/// Header of an index checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHeader {
    /// The checkpoint this index belongs to.
    pub checkpoint_seq: u64,
    /// Newest last-update time of any version in the namespace.
    pub max_lut_ms: u64,
    /// Set table (id = position).
    pub sets: Vec<String>,
    /// Number of entries that follow.
    pub entries: u64,
}

/// Encodes an index checkpoint: header, then CRC-protected chunks of entries.
pub fn encode_index<'a>(header: &IndexHeader, entries: impl Iterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + header.entries as usize * (INDEX_ENTRY_BYTES + 1));
    out.extend_from_slice(&INDEX_MAGIC);
    put_u32(&mut out, INDEX_VERSION);
    put_u64(&mut out, header.checkpoint_seq);
    put_u64(&mut out, header.max_lut_ms);
    put_u16(&mut out, header.sets.len() as u16);
    for set in &header.sets {
        put_name(&mut out, set);
    }
    put_u64(&mut out, header.entries);
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    let mut chunk_start = out.len();
    let mut in_chunk = 0usize;
    put_u32(&mut out, 0);
    for e in entries {
        out.extend_from_slice(&e.digest);
        put_u32(&mut out, e.block_id);
        put_u32(&mut out, e.offset);
        put_u32(&mut out, e.len_bytes);
        put_u32(&mut out, e.void_time);
        put_u16(&mut out, e.generation);
        put_u16(&mut out, e.set_id);
        in_chunk += 1;
        if in_chunk == INDEX_CHUNK_ENTRIES {
            close_chunk(&mut out, chunk_start, in_chunk);
            chunk_start = out.len();
            in_chunk = 0;
            put_u32(&mut out, 0);
        }
    }
    if in_chunk > 0 {
        close_chunk(&mut out, chunk_start, in_chunk);
    } else {
        out.truncate(chunk_start);
    }
    out
}

fn close_chunk(out: &mut Vec<u8>, start: usize, n: usize) {
    out[start..start + 4].copy_from_slice(&(n as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    put_u32(out, crc);
}

/// Streams an index checkpoint: the header, then each entry to `sink`.
pub fn read_index(
    fs: &dyn EngineFs,
    path: &Path,
    mut sink: impl FnMut(Entry) -> Result<()>,
) -> Result<IndexHeader> {
    let file = fs.open(path, OpenFor::Read).at(path)?;
    let file_len = file.len_bytes().at(path)?;
    let mut r = BufReader::with_capacity(
        1 << 20,
        SeqReader {
            file: &*file,
            pos: 0,
        },
    );
    let mut pos = 0u64;
    let mut read = |buf: &mut [u8], pos: &mut u64| -> Result<()> {
        r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::corruption(path, *pos, "index checkpoint truncated")
            }
            _ => Error::io(path, e),
        })?;
        *pos += buf.len() as u64;
        Ok(())
    };
    // Fixed part, then the set table, then the entry count and CRC.
    let mut head = vec![0u8; 8 + 4 + 8 + 8 + 2];
    read(&mut head, &mut pos)?;
    let n_sets = u16::from_le_bytes([head[28], head[29]]) as usize;
    if n_sets > format::MAX_SETS_PER_NAMESPACE + 1 {
        return Err(Error::corruption(path, 28, "too many sets"));
    }
    for _ in 0..n_sets {
        let mut len = [0u8; 1];
        read(&mut len, &mut pos)?;
        head.push(len[0]);
        let mut set = vec![0u8; len[0] as usize];
        read(&mut set, &mut pos)?;
        head.extend_from_slice(&set);
    }
    let mut tail = [0u8; 12];
    read(&mut tail, &mut pos)?;
    head.extend_from_slice(&tail[..8]);
    let stored = u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]);
    if crc32fast::hash(&head) != stored {
        return Err(Error::corruption(
            path,
            pos - 4,
            "index header CRC mismatch",
        ));
    }
    let header = decode_index_header(&head).map_err(|reason| Error::corruption(path, 0, reason))?;
    let max_entries = file_len.saturating_sub(pos) / INDEX_ENTRY_BYTES as u64;
    if header.entries > max_entries {
        return Err(Error::corruption(
            path,
            pos - 12,
            "entry count larger than the file",
        ));
    }
    let mut left = header.entries;
    let mut chunk = Vec::new();
    while left > 0 {
        let chunk_at = pos;
        let mut n = [0u8; 4];
        read(&mut n, &mut pos)?;
        let count = u32::from_le_bytes(n) as u64;
        if count == 0 || count > left || count > INDEX_CHUNK_ENTRIES as u64 {
            return Err(Error::corruption(path, chunk_at, "bad chunk entry count"));
        }
        chunk.resize(count as usize * INDEX_ENTRY_BYTES + 4, 0);
        read(&mut chunk, &mut pos)?;
        let (data, crc) = chunk.split_at(chunk.len() - 4);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&n);
        hasher.update(data);
        if hasher.finalize() != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(Error::corruption(
                path,
                chunk_at,
                "index chunk CRC mismatch",
            ));
        }
        for raw in data.chunks_exact(INDEX_ENTRY_BYTES) {
            sink(decode_entry(raw))?;
        }
        left -= count;
    }
    if pos != file_len {
        return Err(Error::corruption(
            path,
            pos,
            "trailing bytes in index checkpoint",
        ));
    }
    Ok(header)
}

fn decode_entry(raw: &[u8]) -> Entry {
    let u32_at = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let mut digest = [0u8; 20];
    digest.copy_from_slice(&raw[..20]);
    Entry {
        digest,
        block_id: u32_at(20),
        offset: u32_at(24),
        len_bytes: u32_at(28),
        void_time: u32_at(32),
        generation: u16::from_le_bytes([raw[36], raw[37]]),
        set_id: u16::from_le_bytes([raw[38], raw[39]]),
    }
}

fn decode_index_header(head: &[u8]) -> Result<IndexHeader, &'static str> {
    let mut r = Reader::new(head);
    if r.array::<8>() != Some(INDEX_MAGIC) {
        return Err("bad index magic");
    }
    if r.u32() != Some(INDEX_VERSION) {
        return Err("unsupported index version");
    }
    let short = "index header truncated";
    let checkpoint_seq = r.u64().ok_or(short)?;
    let max_lut_ms = r.u64().ok_or(short)?;
    let n_sets = r.u16().ok_or(short)?;
    let sets = (0..n_sets)
        .map(|_| name(&mut r, format::MAX_SET_NAME_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IndexHeader {
        checkpoint_seq,
        max_lut_ms,
        sets,
        entries: r.u64().ok_or(short)?,
    })
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, dir fsync.
/// A failed fsync is [`Error::SyncFailed`].
pub fn write_atomically(fs: &dyn EngineFs, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}{}", path.display(), format::TMP_SUFFIX));
    let file = fs.open(&tmp, OpenFor::Scratch).at(&tmp)?;
    file.write_all_at(bytes, 0).at(&tmp)?;
    // fdatasync also writes the size of a file that grew, which is all the
    // metadata a reader needs.
    file.sync_data().synced_at(&tmp)?;
    drop(file);
    fs.rename(&tmp, path).at(path)?;
    sync_dir(fs, path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so created, renamed and deleted names are durable.
pub fn sync_dir(fs: &dyn EngineFs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).synced_at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_markers_without_ranges_cover_every_partition_and_bad_ranges_are_refused() {
        let tail = [5u64.to_le_bytes(), 9u64.to_le_bytes()].concat();
        let legacy_set = [&[SCOPE_SET, 1, b's'][..], &tail].concat();
        let marker = decode_truncate(&mut Reader::new(&legacy_set)).unwrap();
        assert_eq!(marker.partitions, vec![(0, 4095)]);
        assert_eq!(
            (marker.set.as_deref(), marker.before_ms, marker.seq),
            (Some("s"), 5, 9)
        );
        let range = |first: u16, last: u16| {
            let mut b = vec![SCOPE_RANGES, 1, 0];
            b.extend_from_slice(&first.to_le_bytes());
            b.extend_from_slice(&last.to_le_bytes());
            b.extend_from_slice(&tail);
            b
        };
        let ok = decode_truncate(&mut Reader::new(&range(512, 1023))).unwrap();
        assert_eq!(ok.partitions, vec![(512, 1023)]);
        for (first, last) in [(10, 9), (0, 4096)] {
            assert!(decode_truncate(&mut Reader::new(&range(first, last))).is_err());
        }
        assert!(
            decode_truncate(&mut Reader::new(&[4, 0, 0])).is_err(),
            "unknown scope bit"
        );
    }

    #[test]
    fn manifest_round_trips_and_rejects_every_bit_flip() {
        let mut m = Manifest {
            checkpoint_seq: 3,
            next_seq: 99,
            ..Manifest::default()
        };
        m.logs.insert(1, 50);
        m.namespaces.insert(
            "test".into(),
            NsManifest {
                next_block_id: 7,
                blocks: vec![(1, 4096), (6, 100)],
                truncates: vec![TruncateMarker {
                    set: Some("s".into()),
                    partitions: vec![(0, 3), (512, 1023)],
                    before_ms: 5,
                    seq: 9,
                }],
                installs: BTreeMap::from([(3, 11)]),
            },
        );
        let bytes = m.encode();
        let path = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(&bytes, path).unwrap(), m);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                Manifest::decode(&bad, path),
                Err(Error::Corruption { .. })
            ));
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len], path).is_err());
        }
    }
}
