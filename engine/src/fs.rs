//! The engine's file seam: every block-file, `index.ckpt` and `MANIFEST`
//! operation goes through [`EngineFs`] (held in `EngineConfig::fs`), so tests
//! can inject disk faults ([`crate::fault`]). [`StdFs`], the default, is plain
//! `std::fs` with positional reads and writes.
//!
//! `ReadMode::Mmap` maps the std file underneath an [`EngineFile`]
//! ([`EngineFile::std_file`]): mapped reads bypass the seam, so faults are not
//! injected into them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`EngineFs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFor {
    /// Reading only (checkpoint files, cold-start scans).
    Read,
    /// Reading and writing an existing file (a recovered block).
    Update,
    /// A new block file; fails if the name exists (ids are never reused).
    NewBlock,
    /// A temporary checkpoint file: created, or emptied if a crash left one.
    Scratch,
}

/// One open file. Offsets are absolute: no call depends on a file position,
/// so a failed write can be retried at the same offset.
pub trait EngineFile: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (no fsync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts or extends the file.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// The file's size.
    fn len_bytes(&self) -> io::Result<u64>;
    /// The OS file underneath, for `ReadMode::Mmap`.
    fn std_file(&self) -> &File;
}

/// File creation and directory operations.
pub trait EngineFs: Send + Sync + std::fmt::Debug {
    /// Opens `path`.
    fn open(&self, path: &Path, how: OpenFor) -> io::Result<Arc<dyn EngineFile>>;
    /// Renames `from` over `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes names created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// `std::fs`: `pread`, `pwrite`, `fdatasync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl EngineFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.0.set_len(len_bytes)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn std_file(&self) -> &File {
        &self.0
    }
}

impl EngineFs for StdFs {
    fn open(&self, path: &Path, how: OpenFor) -> io::Result<Arc<dyn EngineFile>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match how {
            OpenFor::Read => &mut options,
            OpenFor::Update => options.write(true),
            OpenFor::NewBlock => options.write(true).create_new(true),
            OpenFor::Scratch => options.write(true).create(true).truncate(true),
        };
        Ok(Arc::new(StdFile(options.open(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}

/// A sequential reader over an [`EngineFile`] (checkpoint files are read
/// front to back).
#[derive(Debug)]
pub(crate) struct SeqReader<'a> {
    pub(crate) file: &'a dyn EngineFile,
    pub(crate) pos: u64,
}

impl io::Read for SeqReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
