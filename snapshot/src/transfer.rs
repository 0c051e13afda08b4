//! Moving a snapshot file between nodes in chunks (the replication layer owns
//! the channel): the sender reads byte ranges of a finished file; the receiver
//! appends them to a `.snap.partial` file, can resume after a restart at the
//! offset it reports, and accepts the file only once it verifies in full.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::{self, PARTIAL_SUFFIX, SNAPSHOT_SUFFIX};
use crate::reader::{SnapshotReader, VerifyReport};
use crate::writer::sync_parent;

/// Largest piece the sender hands out at once.
pub const MAX_TRANSFER_CHUNK_BYTES: usize = 4 << 20;

/// The sending side: a finished snapshot file read by offset.
#[derive(Debug)]
pub struct ChunkSource {
    path: PathBuf,
    file: File,
    len: u64,
}

impl ChunkSource {
    /// Opens a finished snapshot (its header and footer are checked first).
    pub fn open(path: &Path) -> Result<ChunkSource> {
        let reader = SnapshotReader::open(path)?;
        let file = File::open(path).at(path)?;
        Ok(ChunkSource {
            path: path.to_path_buf(),
            file,
            len: reader.file_bytes(),
        })
    }

    /// The file name the receiver must use.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Size of the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file (never for a valid snapshot).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max_bytes` (at most [`MAX_TRANSFER_CHUNK_BYTES`]) from `offset`;
    /// empty at the end of the file.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        if offset > self.len {
            return Err(Error::Invalid(format!(
                "offset {offset} past the end ({})",
                self.len
            )));
        }
        let n = (self.len - offset).min(max_bytes.min(MAX_TRANSFER_CHUNK_BYTES) as u64);
        let mut buf = vec![0u8; n as usize];
        self.file.read_exact_at(&mut buf, offset).at(&self.path)?;
        Ok(buf)
    }
}

/// The receiving side: a `.snap.partial` file filled in order.
#[derive(Debug)]
pub struct Receiver {
    partial: PathBuf,
    target: PathBuf,
    file: File,
    received: u64,
}

impl Receiver {
    /// Starts receiving `file_name` into `dir`, or resumes a partial file left by
    /// an earlier attempt (see [`Receiver::offset`]).
    pub fn open(dir: &Path, file_name: &str) -> Result<Receiver> {
        if format::parse_file_name(file_name).is_none() {
            return Err(Error::Invalid(format!(
                "{file_name:?} is not a snapshot file name"
            )));
        }
        std::fs::create_dir_all(dir).at(dir)?;
        let target = dir.join(file_name);
        let partial = dir.join(file_name.replace(SNAPSHOT_SUFFIX, PARTIAL_SUFFIX));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&partial)
            .at(&partial)?;
        let received = file.metadata().at(&partial)?.len();
        Ok(Receiver {
            partial,
            target,
            file,
            received,
        })
    }

    /// Bytes received so far: the offset the sender must continue from.
    pub fn offset(&self) -> u64 {
        self.received
    }

    /// Appends the piece that starts at `offset` (must equal [`Receiver::offset`]).
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset != self.received {
            return Err(Error::OutOfOrder {
                path: self.partial.clone(),
                offset,
                expected: self.received,
            });
        }
        self.file.write_all(bytes).at(&self.partial)?;
        self.received += bytes.len() as u64;
        Ok(())
    }

    /// Fsyncs the partial file, verifies it in full, and only then renames it
    /// to its final name. A file that fails is deleted, never accepted.
    pub fn finish(self) -> Result<VerifyReport> {
        self.file.sync_all().at(&self.partial)?;
        let verified = SnapshotReader::open(&self.partial).and_then(|r| r.verify(|_| {}));
        let report = match verified {
            Ok(report) => report,
            Err(e) => {
                std::fs::remove_file(&self.partial).at(&self.partial)?;
                return Err(e);
            }
        };
        std::fs::rename(&self.partial, &self.target).at(&self.target)?;
        sync_parent(&self.target)?;
        Ok(VerifyReport {
            path: self.target,
            ..report
        })
    }

    /// Gives up: deletes the partial file.
    pub fn abort(self) -> Result<()> {
        std::fs::remove_file(&self.partial).at(&self.partial)
    }
}
