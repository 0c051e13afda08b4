//! Writing a snapshot file: records in, zstd chunks out, with bounded memory
//! (one raw chunk and its compressed copy). The file appears under its final
//! name only once it is complete and durable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use aerie_engine::{Digest, Record, partition_of};

use crate::error::{Error, IoContext, Result};
use crate::format::{
    self, CHUNK_HEADER_BYTES, ChunkHeader, Footer, Header, MAX_CHUNK_RAW_BYTES, MAX_RECORD_BYTES,
};

/// How a snapshot is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// zstd level (1 is fastest; see the README's figures for 1, 3 and 9).
    pub zstd_level: i32,
    /// A chunk is compressed and written once its raw records reach this size.
    pub chunk_raw_bytes: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 1,
            chunk_raw_bytes: 1 << 20,
        }
    }
}

/// What a finished snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Records, raw bytes and chunk table.
    pub footer: Footer,
    /// Size of the file.
    pub file_bytes: u64,
}

/// Sort key of a record in a snapshot: namespace position, partition, digest.
pub(crate) type RecordKey = (u16, u16, [u8; 20]);

/// A snapshot being written. Records must come in ascending (namespace,
/// partition, digest) order; dropping it unfinished deletes the temporary file.
pub struct SnapshotWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    header: Header,
    options: WriteOptions,
    raw: Vec<u8>,
    raw_records: u32,
    raw_namespace: u16,
    last_key: Option<RecordKey>,
    /// Full raw chunks go to the compressor thread through this bounded
    /// channel, so encoding and compression overlap (memory: at most
    /// `COMPRESS_QUEUE_CHUNKS + 2` raw chunks).
    chunks: Option<SyncSender<RawChunk>>,
    compressor: Option<JoinHandle<Result<ChunkFile>>>,
    finished: bool,
}

/// Raw chunks waiting for the compressor.
const COMPRESS_QUEUE_CHUNKS: usize = 2;

struct RawChunk {
    raw: Vec<u8>,
    records: u32,
    namespace: u16,
}

/// The file side of a snapshot being written: owned by the compressor thread.
struct ChunkFile {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    level: i32,
    footer: Footer,
    checksum: crc32fast::Hasher,
}

impl ChunkFile {
    fn write_chunk(&mut self, chunk: &RawChunk) -> Result<()> {
        let data = zstd::bulk::compress(&chunk.raw, self.level).at(&self.path)?;
        let frame = ChunkHeader {
            compressed_len: data.len() as u32,
            raw_len: chunk.raw.len() as u32,
            records: chunk.records,
            namespace: chunk.namespace,
            data_crc: crc32fast::hash(&data),
        };
        self.out.write_all(&frame.encode()).at(&self.path)?;
        self.out.write_all(&data).at(&self.path)?;
        self.checksum.update(&frame.data_crc.to_le_bytes());
        self.footer.chunk_offsets.push(self.offset);
        let chunk_bytes = (CHUNK_HEADER_BYTES + data.len()) as u64;
        self.offset += chunk_bytes;
        self.footer.chunk_bytes += chunk_bytes;
        self.footer.records += u64::from(chunk.records);
        self.footer.raw_bytes += chunk.raw.len() as u64;
        Ok(())
    }

    /// Compresses and writes chunks until the sender is dropped.
    fn run(mut self, chunks: Receiver<RawChunk>) -> Result<ChunkFile> {
        for chunk in chunks {
            self.write_chunk(&chunk)?;
        }
        Ok(self)
    }

    /// Writes the footer and makes the file durable.
    fn finish(mut self) -> Result<(Footer, u64)> {
        self.footer.checksum = self.checksum.clone().finalize();
        let footer = self.footer.encode(self.offset);
        self.out.write_all(&footer).at(&self.path)?;
        self.out.flush().at(&self.path)?;
        self.out.get_ref().sync_all().at(&self.path)?;
        Ok((self.footer, self.offset + footer.len() as u64))
    }
}

impl SnapshotWriter {
    /// Starts `dir/<file_name(shard, index)>` (written as `.snap.tmp`).
    pub fn create(dir: &Path, header: Header, options: WriteOptions) -> Result<SnapshotWriter> {
        header.validate().map_err(Error::Invalid)?;
        if options.chunk_raw_bytes == 0 || options.chunk_raw_bytes > MAX_CHUNK_RAW_BYTES / 2 {
            return Err(Error::Invalid("chunk_raw_bytes must be 1..=8 MiB".into()));
        }
        std::fs::create_dir_all(dir).at(dir)?;
        let name = format::file_name(header.shard_id, header.index);
        let final_path = dir.join(&name);
        let tmp_path = dir.join(name.replace(format::SNAPSHOT_SUFFIX, format::TMP_SUFFIX));
        let file = File::create(&tmp_path).at(&tmp_path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bytes = header.encode();
        out.write_all(&bytes).at(&tmp_path)?;
        let chunk_file = ChunkFile {
            path: tmp_path.clone(),
            out,
            offset: bytes.len() as u64,
            level: options.zstd_level,
            footer: Footer::default(),
            checksum: crc32fast::Hasher::new(),
        };
        let (sender, receiver) = sync_channel(COMPRESS_QUEUE_CHUNKS);
        let compressor = std::thread::Builder::new()
            .name("snapshot-zstd".into())
            .spawn(move || chunk_file.run(receiver))
            .at(&tmp_path)?;
        Ok(SnapshotWriter {
            final_path,
            tmp_path,
            raw_namespace: 0,
            header,
            options,
            raw: Vec::with_capacity(options.chunk_raw_bytes as usize + (64 << 10)),
            raw_records: 0,
            last_key: None,
            chunks: Some(sender),
            compressor: Some(compressor),
            finished: false,
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Adds a record of the namespace at position `namespace` of the header.
    pub fn push(&mut self, namespace: u16, record: &Record) -> Result<()> {
        self.append(namespace, &record.digest, |raw| {
            aerie_engine::format::encode_record_image(record, raw);
        })
    }

    /// Adds a record already encoded as an image (what the engine's views
    /// hand out without decoding).
    pub fn push_image(&mut self, namespace: u16, digest: &Digest, image: &[u8]) -> Result<()> {
        self.append(namespace, digest, |raw| raw.extend_from_slice(image))
    }

    fn append(
        &mut self,
        namespace: u16,
        digest: &Digest,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<()> {
        self.check_order(namespace, digest)?;
        if namespace != self.raw_namespace && self.raw_records > 0 {
            self.write_chunk()?;
        }
        self.raw_namespace = namespace;
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; 4]);
        write(&mut self.raw);
        let len = self.raw.len() - start - 4;
        if len > MAX_RECORD_BYTES as usize {
            self.raw.truncate(start);
            return Err(Error::Invalid(format!("a record image of {len} bytes")));
        }
        self.raw[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        self.raw_records += 1;
        if self.raw.len() >= self.options.chunk_raw_bytes as usize {
            self.write_chunk()?;
        }
        Ok(())
    }

    /// Rejects records out of order, of unknown namespaces or foreign
    /// partitions: what a reader would reject must never be written.
    fn check_order(&mut self, namespace: u16, digest: &Digest) -> Result<()> {
        if usize::from(namespace) >= self.header.namespaces.len() {
            return Err(Error::Invalid(format!("namespace position {namespace}")));
        }
        let partition = partition_of(digest);
        if self.header.partitions.binary_search(&partition).is_err() {
            return Err(Error::Invalid(format!(
                "record of partition {partition}, not in the snapshot"
            )));
        }
        let key = (namespace, partition, *digest);
        if self.last_key.is_some_and(|last| last >= key) {
            return Err(Error::Invalid("records out of order or repeated".into()));
        }
        self.last_key = Some(key);
        Ok(())
    }

    /// Hands the raw chunk to the compressor thread.
    fn write_chunk(&mut self) -> Result<()> {
        let capacity = self.raw.capacity();
        let chunk = RawChunk {
            raw: std::mem::replace(&mut self.raw, Vec::with_capacity(capacity)),
            records: self.raw_records,
            namespace: self.raw_namespace,
        };
        self.raw_records = 0;
        let sent = self.chunks.as_ref().is_some_and(|c| c.send(chunk).is_ok());
        if !sent {
            // The compressor stopped: its error says why.
            self.join_compressor()?;
            return Err(Error::Invalid("the snapshot compressor stopped".into()));
        }
        Ok(())
    }

    fn join_compressor(&mut self) -> Result<ChunkFile> {
        self.chunks = None;
        let handle = self
            .compressor
            .take()
            .ok_or_else(|| Error::Invalid("snapshot writer already finished".into()))?;
        handle
            .join()
            .map_err(|_| Error::Invalid("the snapshot compressor panicked".into()))?
    }

    /// Writes the last chunk and the footer, fsyncs, renames the file to its
    /// final name and fsyncs the directory.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        if self.raw_records > 0 {
            self.write_chunk()?;
        }
        let (footer, file_bytes) = self.join_compressor()?.finish()?;
        std::fs::rename(&self.tmp_path, &self.final_path).at(&self.final_path)?;
        sync_parent(&self.final_path)?;
        self.finished = true;
        Ok(SnapshotInfo {
            path: self.final_path.clone(),
            header: self.header.clone(),
            footer,
            file_bytes,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Stop the compressor first, so the file is closed before removal.
            let _ = self.join_compressor();
            // Best effort: a leftover `.snap.tmp` is never read as a snapshot.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Fsyncs the directory holding `path`, so a rename or unlink in it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
