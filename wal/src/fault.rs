//! A fault-injecting [`FileSystem`] for tests: fdatasync failures, ENOSPC,
//! short writes, torn (silently partial) writes and bit flips, switched on and
//! off at run time through a shared [`Faults`].

use crate::fs::{FileSystem, OpenMode, WalFile};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The faults to inject. Every field may be changed while the log runs.
#[derive(Debug)]
pub struct Faults {
    /// While set, every fdatasync fails with EIO.
    pub fail_sync: AtomicBool,
    /// While set, preallocating a new segment fails with ENOSPC.
    pub fail_allocate: AtomicBool,
    /// Writes fail with ENOSPC once this many more bytes have been written.
    pub enospc_after_bytes: AtomicU64,
    /// The next write stores half of its bytes, then fails (a short write).
    pub short_write_next: AtomicBool,
    /// The next write stores only this many bytes and reports success, as if
    /// the rest were lost in a crash. `u64::MAX` = off.
    pub torn_write_next_bytes: AtomicU64,
    /// The next write silently flips one bit in the middle of its bytes.
    pub flip_bit_next_write: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            fail_sync: AtomicBool::new(false),
            fail_allocate: AtomicBool::new(false),
            enospc_after_bytes: AtomicU64::new(u64::MAX),
            short_write_next: AtomicBool::new(false),
            torn_write_next_bytes: AtomicU64::new(u64::MAX),
            flip_bit_next_write: AtomicBool::new(false),
        }
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Wraps another file system and injects [`Faults`] into its files.
pub struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    faults: Arc<Faults>,
}

impl FaultyFs {
    pub fn new(inner: Arc<dyn FileSystem>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl FileSystem for FaultyFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>> {
        Ok(Arc::new(FaultyFile {
            inner: self.inner.open(path, mode)?,
            faults: Arc::clone(&self.faults),
        }))
    }
}

struct FaultyFile {
    inner: Arc<dyn WalFile>,
    faults: Arc<Faults>,
}

impl FaultyFile {
    /// Charges `len` bytes against the ENOSPC budget.
    fn charge(&self, len: u64) -> io::Result<()> {
        let budget = &self.faults.enospc_after_bytes;
        let mut current = budget.load(Ordering::SeqCst);
        loop {
            if current == u64::MAX {
                return Ok(());
            }
            let Some(left) = current.checked_sub(len) else {
                return Err(enospc());
            };
            match budget.compare_exchange(current, left, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }
}

impl WalFile for FaultyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.faults.short_write_next.swap(false, Ordering::SeqCst) {
            self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "injected short write",
            ));
        }
        let keep = self
            .faults
            .torn_write_next_bytes
            .swap(u64::MAX, Ordering::SeqCst);
        if keep != u64::MAX {
            let keep = usize::try_from(keep).unwrap_or(usize::MAX).min(buf.len());
            return self.inner.write_all_at(&buf[..keep], offset);
        }
        self.charge(buf.len() as u64)?;
        if self
            .faults
            .flip_bit_next_write
            .swap(false, Ordering::SeqCst)
            && !buf.is_empty()
        {
            let mut damaged = buf.to_vec();
            damaged[buf.len() / 2] ^= 0x10;
            return self.inner.write_all_at(&damaged, offset);
        }
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.faults.fail_allocate.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.allocate(len)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.inner.size_bytes()
    }
}
