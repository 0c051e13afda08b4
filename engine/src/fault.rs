//! A fault-injecting [`EngineFs`] for tests: ENOSPC on writes, EIO on fsync,
//! short writes (some bytes stored, then ENOSPC) and torn writes (some bytes
//! stored, success reported, as a lying disk would), aimed at one kind of
//! engine file and switched at run time through a shared [`Faults`].
//! [`Faults::pass_next`] delays them by a number of operations, so a test
//! can interrupt a procedure at each of its writes and fsyncs in turn.
//!
//! ```
//! use std::sync::Arc;
//! use aerie_engine::EngineConfig;
//! use aerie_engine::fault::{FaultyFs, Faults, Target};
//!
//! let faults = Faults::new();
//! let config = EngineConfig {
//!     fs: Arc::new(FaultyFs::new(faults.clone())),
//!     ..EngineConfig::default()
//! };
//! faults.aim(Target::Blocks);
//! faults.set_fsync_eio(true); // the next checkpoint fails and poisons the engine
//! # drop(config);
//! ```

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};

use crate::format;
use crate::fs::{EngineFile, EngineFs, OpenFor, StdFs};

/// The engine files a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every file and directory.
    Any,
    /// Write blocks (`*.seg`).
    Blocks,
    /// `index.ckpt` and its temporary file.
    IndexCheckpoint,
    /// `MANIFEST` and its temporary file.
    Manifest,
}

/// Kind of a file by its name; `None` for anything else (directories).
fn kind_of(path: &Path) -> Option<Target> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(format::TMP_SUFFIX).unwrap_or(name);
    match name {
        format::MANIFEST_FILE => Some(Target::Manifest),
        format::INDEX_FILE => Some(Target::IndexCheckpoint),
        _ => format::parse_block_file_name(name).map(|_| Target::Blocks),
    }
}

const OFF: u64 = u64::MAX;

/// Faults to inject; every switch may flip while the engine runs.
#[derive(Debug)]
pub struct Faults {
    target: AtomicU8,
    enospc: AtomicBool,
    fsync_eio: AtomicBool,
    short_next_bytes: AtomicU64,
    torn_next_bytes: AtomicU64,
    /// Operations on the target still let through before any fault applies.
    pass_ops: AtomicU64,
    injected: AtomicU64,
}

impl Faults {
    /// No faults, aimed at every file.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults {
            target: AtomicU8::new(Target::Any as u8),
            enospc: AtomicBool::new(false),
            fsync_eio: AtomicBool::new(false),
            short_next_bytes: AtomicU64::new(OFF),
            torn_next_bytes: AtomicU64::new(OFF),
            pass_ops: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        })
    }

    /// Limits every fault to files of `target`.
    pub fn aim(&self, target: Target) {
        self.target.store(target as u8, SeqCst);
    }

    /// While on, every write fails with ENOSPC and stores nothing.
    pub fn set_enospc(&self, on: bool) {
        self.enospc.store(on, SeqCst);
    }

    /// While on, every fsync (files, and directories when aimed at `Any`)
    /// fails with EIO.
    pub fn set_fsync_eio(&self, on: bool) {
        self.fsync_eio.store(on, SeqCst);
    }

    /// The next write stores its first `keep_bytes` bytes, then fails with
    /// ENOSPC.
    pub fn short_next_write(&self, keep_bytes: u64) {
        self.short_next_bytes.store(keep_bytes, SeqCst);
    }

    /// The next write stores its first `keep_bytes` bytes and reports success.
    pub fn tear_next_write(&self, keep_bytes: u64) {
        self.torn_next_bytes.store(keep_bytes, SeqCst);
    }

    /// Lets the next `ops` writes and fsyncs of the target through untouched
    /// before the armed faults apply: aims a fault at the n-th operation of
    /// a procedure, to interrupt it at every step in turn.
    pub fn pass_next(&self, ops: u64) {
        self.pass_ops.store(ops, SeqCst);
    }

    /// Turns every fault off.
    pub fn heal(&self) {
        self.set_enospc(false);
        self.set_fsync_eio(false);
        self.short_next_write(OFF);
        self.tear_next_write(OFF);
        self.pass_next(0);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(SeqCst)
    }

    /// True if a fault may strike this operation on a file of `kind`: it is
    /// aimed there and no pass-through operation is left.
    fn hits(&self, kind: Option<Target>) -> bool {
        let target = self.target.load(SeqCst);
        let aimed = target == Target::Any as u8 || kind.is_some_and(|k| k as u8 == target);
        let passed = || {
            self.pass_ops
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        aimed && !passed()
    }

    /// Takes a one-shot byte count if it is armed.
    fn take(&self, slot: &AtomicU64, len: usize) -> Option<usize> {
        let keep = slot.swap(OFF, SeqCst);
        (keep != OFF).then(|| usize::try_from(keep).unwrap_or(len).min(len))
    }

    fn injected_error(&self, errno: i32) -> io::Error {
        self.injected.fetch_add(1, SeqCst);
        io::Error::from_raw_os_error(errno)
    }
}

/// An [`EngineFs`] that injects [`Faults`] into another one.
#[derive(Debug)]
pub struct FaultyFs {
    inner: Arc<dyn EngineFs>,
    faults: Arc<Faults>,
}

impl FaultyFs {
    /// Faults over the real file system ([`StdFs`]).
    pub fn new(faults: Arc<Faults>) -> FaultyFs {
        FaultyFs::over(Arc::new(StdFs), faults)
    }

    /// Faults over `inner`.
    pub fn over(inner: Arc<dyn EngineFs>, faults: Arc<Faults>) -> FaultyFs {
        FaultyFs { inner, faults }
    }
}

impl EngineFs for FaultyFs {
    fn open(&self, path: &Path, how: OpenFor) -> io::Result<Arc<dyn EngineFile>> {
        let inner = self.inner.open(path, how)?;
        let faults = self.faults.clone();
        let kind = kind_of(path);
        Ok(Arc::new(FaultyFile {
            inner,
            kind,
            faults,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.faults.hits(None) && self.faults.fsync_eio.load(SeqCst) {
            return Err(self.faults.injected_error(libc::EIO));
        }
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn EngineFile>,
    kind: Option<Target>,
    faults: Arc<Faults>,
}

impl EngineFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let f = &self.faults;
        if !f.hits(self.kind) {
            return self.inner.write_all_at(buf, offset);
        }
        if f.enospc.load(SeqCst) {
            return Err(f.injected_error(libc::ENOSPC));
        }
        if let Some(keep) = f.take(&f.short_next_bytes, buf.len()) {
            self.inner.write_all_at(&buf[..keep], offset)?;
            return Err(f.injected_error(libc::ENOSPC));
        }
        if let Some(keep) = f.take(&f.torn_next_bytes, buf.len()) {
            f.injected.fetch_add(1, SeqCst);
            return self.inner.write_all_at(&buf[..keep], offset);
        }
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.faults.hits(self.kind) && self.faults.fsync_eio.load(SeqCst) {
            return Err(self.faults.injected_error(libc::EIO));
        }
        self.inner.sync_data()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }

    fn std_file(&self) -> &File {
        self.inner.std_file()
    }
}
