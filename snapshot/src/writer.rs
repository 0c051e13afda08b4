//! Writing a snapshot file: records in, zstd chunks out, with bounded memory
//! (one raw chunk and its compressed copy). The file appears under its final
//! name only once it is complete and durable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use aerie_engine::{Record, partition_of};

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
    out: BufWriter<File>,
    offset: u64,
    header: Header,
    options: WriteOptions,
    footer: Footer,
    checksum: crc32fast::Hasher,
    raw: Vec<u8>,
    raw_records: u32,
    raw_namespace: u16,
    last_key: Option<RecordKey>,
    finished: bool,
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
        Ok(SnapshotWriter {
            final_path,
            tmp_path,
            out,
            offset: bytes.len() as u64,
            raw_namespace: 0,
            header,
            options,
            footer: Footer::default(),
            checksum: crc32fast::Hasher::new(),
            raw: Vec::with_capacity(options.chunk_raw_bytes as usize + (64 << 10)),
            raw_records: 0,
            last_key: None,
            finished: false,
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Adds a record of the namespace at position `namespace` of the header.
    pub fn push(&mut self, namespace: u16, record: &Record) -> Result<()> {
        self.check_order(namespace, record)?;
        if namespace != self.raw_namespace && self.raw_records > 0 {
            self.write_chunk()?;
        }
        self.raw_namespace = namespace;
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; 4]);
        aerie_engine::format::encode_record_image(record, &mut self.raw);
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
    fn check_order(&mut self, namespace: u16, record: &Record) -> Result<()> {
        if usize::from(namespace) >= self.header.namespaces.len() {
            return Err(Error::Invalid(format!("namespace position {namespace}")));
        }
        let partition = partition_of(&record.digest);
        if self.header.partitions.binary_search(&partition).is_err() {
            return Err(Error::Invalid(format!(
                "record of partition {partition}, not in the snapshot"
            )));
        }
        let key = (namespace, partition, record.digest);
        if self.last_key.is_some_and(|last| last >= key) {
            return Err(Error::Invalid("records out of order or repeated".into()));
        }
        self.last_key = Some(key);
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<()> {
        let data = zstd::bulk::compress(&self.raw, self.options.zstd_level).at(&self.tmp_path)?;
        let chunk = ChunkHeader {
            compressed_len: data.len() as u32,
            raw_len: self.raw.len() as u32,
            records: self.raw_records,
            namespace: self.raw_namespace,
            data_crc: crc32fast::hash(&data),
        };
        self.out.write_all(&chunk.encode()).at(&self.tmp_path)?;
        self.out.write_all(&data).at(&self.tmp_path)?;
        self.checksum.update(&chunk.data_crc.to_le_bytes());
        self.footer.chunk_offsets.push(self.offset);
        let chunk_bytes = (CHUNK_HEADER_BYTES + data.len()) as u64;
        self.offset += chunk_bytes;
        self.footer.chunk_bytes += chunk_bytes;
        self.footer.records += u64::from(self.raw_records);
        self.footer.raw_bytes += self.raw.len() as u64;
        self.raw.clear();
        self.raw_records = 0;
        Ok(())
    }

    /// Writes the last chunk and the footer, fsyncs, renames the file to its
    /// final name and fsyncs the directory.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        if self.raw_records > 0 {
            self.write_chunk()?;
        }
        self.footer.checksum = self.checksum.clone().finalize();
        let footer = self.footer.encode(self.offset);
        self.out.write_all(&footer).at(&self.tmp_path)?;
        self.out.flush().at(&self.tmp_path)?;
        self.out.get_ref().sync_all().at(&self.tmp_path)?;
        std::fs::rename(&self.tmp_path, &self.final_path).at(&self.final_path)?;
        sync_parent(&self.final_path)?;
        self.finished = true;
        Ok(SnapshotInfo {
            path: self.final_path.clone(),
            header: self.header.clone(),
            footer: std::mem::take(&mut self.footer),
            file_bytes: self.offset + footer.len() as u64,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
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
