//! Reading a snapshot file back, one chunk at a time, trusting nothing: every
//! length is bounded before it is used, every checksum checked, and every
//! failure names the file and the offset.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aerie_engine::{Record, partition_of};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    CHUNK_HEADER_BYTES, ChunkHeader, Footer, Header, HeaderError, MAX_RECORD_BYTES, Reader,
    TRAILER_BYTES,
};
use crate::writer::RecordKey;

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of its namespace in the header.
    pub namespace: u16,
    /// Its records, in order.
    pub records: Vec<Record>,
    /// Raw (uncompressed) bytes.
    pub raw_bytes: u32,
    /// Data CRC (feeds the footer's checksum).
    pub data_crc: u32,
}

/// What a full verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Records per namespace position.
    pub records_per_namespace: Vec<u64>,
    /// The footer (counts match the chunks).
    pub footer: Footer,
    /// Size of the file.
    pub file_bytes: u64,
}

/// An open snapshot file whose header and footer passed their checks.
#[derive(Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    file: File,
    file_bytes: u64,
    header: Header,
    header_bytes: u64,
    footer: Footer,
    footer_offset: u64,
}

impl SnapshotReader {
    /// Opens `path` and checks its header, trailer and footer.
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        let file = File::open(path).at(path)?;
        let file_bytes = file.metadata().at(path)?.len();
        let at = |base: u64| {
            move |(offset, reason): HeaderError| Error::corruption(path, base + offset, reason)
        };
        let mut prefix = [0u8; 16];
        read_at(&file, path, &mut prefix, 0, file_bytes)?;
        let header_bytes = u64::from(Header::announced_len(&prefix).map_err(at(0))?);
        let mut header = vec![0u8; header_bytes as usize];
        read_at(&file, path, &mut header, 0, file_bytes)?;
        let header = Header::decode(&header).map_err(at(0))?;

        let trailer_at = file_bytes.saturating_sub(TRAILER_BYTES as u64);
        let mut trailer = [0u8; TRAILER_BYTES];
        read_at(&file, path, &mut trailer, trailer_at, file_bytes)?;
        let (footer_offset, crc) =
            Footer::decode_trailer(&trailer, file_bytes).map_err(at(trailer_at))?;
        if footer_offset < header_bytes {
            return Err(Error::corruption(
                path,
                trailer_at,
                "footer offset inside the header",
            ));
        }
        let mut footer = vec![0u8; (trailer_at - footer_offset) as usize];
        read_at(&file, path, &mut footer, footer_offset, file_bytes)?;
        let footer = Footer::decode(&footer, crc).map_err(at(footer_offset))?;
        let reader = SnapshotReader {
            path: path.to_path_buf(),
            file,
            file_bytes,
            header,
            header_bytes,
            footer,
            footer_offset,
        };
        reader.check_chunk_table()?;
        Ok(reader)
    }

    /// Chunk offsets must tile the body exactly: first right after the header,
    /// ascending, all before the footer.
    fn check_chunk_table(&self) -> Result<()> {
        let offsets = &self.footer.chunk_offsets;
        let first_ok = offsets
            .first()
            .map_or(self.footer_offset == self.header_bytes, |&first| {
                first == self.header_bytes
            });
        let tiles = offsets
            .windows(2)
            .all(|w| w[1] >= w[0] + CHUNK_HEADER_BYTES as u64);
        let inside = offsets
            .last()
            .is_none_or(|&last| last + CHUNK_HEADER_BYTES as u64 <= self.footer_offset);
        if !(first_ok && tiles && inside) {
            return Err(self.bad(
                self.footer_offset,
                "chunk offset table does not tile the body",
            ));
        }
        Ok(())
    }

    fn bad(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corruption(&self.path, offset, reason)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// Size of the file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.footer.chunk_offsets.len()
    }

    /// Where chunk `i` ends: the next chunk or the footer.
    fn chunk_end(&self, i: usize) -> u64 {
        self.footer
            .chunk_offsets
            .get(i + 1)
            .copied()
            .unwrap_or(self.footer_offset)
    }

    /// The frame header of chunk `i` (cheap: 28 bytes).
    pub fn chunk_header(&self, i: usize) -> Result<ChunkHeader> {
        let offset = *self
            .footer
            .chunk_offsets
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("chunk {i} of {}", self.chunk_count())))?;
        let mut frame = [0u8; CHUNK_HEADER_BYTES];
        read_at(&self.file, &self.path, &mut frame, offset, self.file_bytes)?;
        let chunk =
            ChunkHeader::decode(&frame).map_err(|(at, reason)| self.bad(offset + at, reason))?;
        let end = offset + (CHUNK_HEADER_BYTES as u64) + u64::from(chunk.compressed_len);
        if end != self.chunk_end(i) {
            return Err(self.bad(offset + 4, "chunk length does not reach the next chunk"));
        }
        if usize::from(chunk.namespace) >= self.header.namespaces.len() {
            return Err(self.bad(offset + 16, "chunk of an unknown namespace"));
        }
        Ok(chunk)
    }

    /// Reads, checks and decodes chunk `i`.
    pub fn chunk(&self, i: usize) -> Result<Chunk> {
        let header = self.chunk_header(i)?;
        let offset = self.footer.chunk_offsets[i];
        let data_at = offset + CHUNK_HEADER_BYTES as u64;
        let mut data = vec![0u8; header.compressed_len as usize];
        read_at(&self.file, &self.path, &mut data, data_at, self.file_bytes)?;
        if crc32fast::hash(&data) != header.data_crc {
            return Err(self.bad(data_at, "chunk data CRC mismatch"));
        }
        let raw = zstd::bulk::decompress(&data, header.raw_len as usize)
            .map_err(|e| self.bad(data_at, format!("chunk does not decompress: {e}")))?;
        if raw.len() != header.raw_len as usize {
            return Err(self.bad(offset + 8, "chunk raw length does not match"));
        }
        let records = self.decode_records(&raw, &header, data_at)?;
        Ok(Chunk {
            namespace: header.namespace,
            records,
            raw_bytes: header.raw_len,
            data_crc: header.data_crc,
        })
    }

    fn decode_records(&self, raw: &[u8], chunk: &ChunkHeader, data_at: u64) -> Result<Vec<Record>> {
        // Offsets inside decompressed data are reported at the chunk's data.
        let bad = |reason: String| self.bad(data_at, reason);
        let mut r = Reader::new(raw);
        let mut records = Vec::with_capacity((chunk.records as usize).min(raw.len() / 38));
        while r.remaining() > 0 {
            let at = r.pos();
            let len = r
                .u32()
                .map_err(|_| bad(format!("record length cut at raw byte {at}")))?;
            if len > MAX_RECORD_BYTES {
                return Err(bad(format!("record of {len} bytes at raw byte {at}")));
            }
            let image = r
                .bytes(len as usize)
                .map_err(|_| bad(format!("record cut at raw byte {at}")))?;
            let record = aerie_engine::format::decode_record_image(image)
                .map_err(|reason| bad(format!("record at raw byte {at}: {reason}")))?;
            if self
                .header
                .partitions
                .binary_search(&partition_of(&record.digest))
                .is_err()
            {
                return Err(bad(format!(
                    "record at raw byte {at} of a foreign partition"
                )));
            }
            records.push(record);
        }
        if records.len() != chunk.records as usize {
            return Err(bad(format!(
                "{} records, the frame says {}",
                records.len(),
                chunk.records
            )));
        }
        Ok(records)
    }

    /// Every chunk in order.
    pub fn chunks(&self) -> impl Iterator<Item = Result<Chunk>> + '_ {
        (0..self.chunk_count()).map(|i| self.chunk(i))
    }

    /// Checks every chunk, the order of all records and the footer's counts
    /// and checksum. Memory: one chunk.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport> {
        let mut records_per_namespace = vec![0u64; self.header.namespaces.len()];
        let mut totals = Footer::default();
        let mut checksum = crc32fast::Hasher::new();
        let mut last_key: Option<RecordKey> = None;
        for (i, chunk) in self.chunks().enumerate() {
            let chunk = chunk?;
            for record in &chunk.records {
                let key = (chunk.namespace, partition_of(&record.digest), record.digest);
                if last_key.is_some_and(|last| last >= key) {
                    let at = self.footer.chunk_offsets[i];
                    return Err(self.bad(at, "records out of order or repeated"));
                }
                last_key = Some(key);
            }
            records_per_namespace[usize::from(chunk.namespace)] += chunk.records.len() as u64;
            totals.records += chunk.records.len() as u64;
            totals.raw_bytes += u64::from(chunk.raw_bytes);
            totals.chunk_bytes += self.chunk_end(i) - self.footer.chunk_offsets[i];
            checksum.update(&chunk.data_crc.to_le_bytes());
            progress(totals.chunk_bytes);
        }
        totals.checksum = checksum.finalize();
        totals.chunk_offsets = self.footer.chunk_offsets.clone();
        if totals != self.footer {
            return Err(self.bad(
                self.footer_offset,
                "footer counts or checksum do not match the chunks",
            ));
        }
        Ok(VerifyReport {
            path: self.path.clone(),
            header: self.header.clone(),
            records_per_namespace,
            footer: totals,
            file_bytes: self.file_bytes,
        })
    }
}

/// `pread` of exactly `buf.len()` bytes at `offset`, with a corruption error
/// (not an I/O one) when the file is too short.
fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64, file_bytes: u64) -> Result<()> {
    if offset
        .checked_add(buf.len() as u64)
        .is_none_or(|end| end > file_bytes)
    {
        return Err(Error::corruption(
            path,
            offset,
            format!("file ends before {} more bytes", buf.len()),
        ));
    }
    file.read_exact_at(buf, offset).at(path)
}
