//! The file-system seam. The WAL does all its file I/O through [`FileSystem`] and
//! [`WalFile`], so tests can inject faults ([`crate::fault`]) and the write path
//! can be served by `pwrite`+`fdatasync` or by io_uring.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Read,
    ReadWrite,
    /// Create a new file; fail if it exists.
    CreateNew,
}

/// One open file.
pub trait WalFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves `len` bytes so later writes inside them do not change the file
    /// size (and so an fdatasync need not update metadata).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// The file size in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
    /// Writes `buf` at `offset` and, when `sync` is set, makes it durable before
    /// returning. Backends may do both in one submission.
    fn write_and_sync(&self, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
        self.write_all_at(buf, offset)?;
        if sync { self.sync_data() } else { Ok(()) }
    }
}

/// File opening and directory operations. The directory operations default to
/// the real file system; a fault-injecting layer overrides what it needs.
pub trait FileSystem: Send + Sync {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>>;

    /// The names of the entries in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

fn open_std(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut options = OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::ReadWrite => options.read(true).write(true),
        OpenMode::CreateNew => options.read(true).write(true).create_new(true),
    };
    options.open(path)
}

/// A plain file: `pread`, `pwrite`, `fdatasync`, `fallocate`.
#[derive(Debug)]
struct StdFile {
    file: File,
}

impl WalFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by
        // `self.file` and open for writing.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // Some file systems (tmpfs on old kernels) cannot preallocate.
            return self.file.set_len(len as u64);
        }
        Err(err)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// The portable backend: `pwrite` then `fdatasync`.
#[derive(Debug, Default)]
pub struct SyncFs;

impl FileSystem for SyncFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>> {
        Ok(Arc::new(StdFile {
            file: open_std(path, mode)?,
        }))
    }
}

/// The io_uring backend: a write and an fdatasync linked in one submission, so a
/// group commit costs one system call. Reads and directory operations are the
/// same as [`SyncFs`].
pub struct UringFs {
    ring: Arc<Mutex<io_uring::IoUring>>,
}

impl std::fmt::Debug for UringFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UringFs")
    }
}

impl UringFs {
    /// Creates a ring and checks that the kernel runs a request on it (seccomp
    /// profiles and `kernel.io_uring_disabled` can forbid either step).
    pub fn probe() -> io::Result<Self> {
        let mut ring = io_uring::IoUring::new(8)?;
        let nop = io_uring::opcode::Nop::new().build().user_data(0);
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&nop) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("no completion for NOP"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        Ok(Self {
            ring: Arc::new(Mutex::new(ring)),
        })
    }
}

impl FileSystem for UringFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn WalFile>> {
        Ok(Arc::new(UringFile {
            inner: StdFile {
                file: open_std(path, mode)?,
            },
            ring: Arc::clone(&self.ring),
        }))
    }
}

struct UringFile {
    inner: StdFile,
    ring: Arc<Mutex<io_uring::IoUring>>,
}

const WRITE_USER_DATA: u64 = 1;
const SYNC_USER_DATA: u64 = 2;

impl UringFile {
    /// One linked write (+ fdatasync) submission; returns the bytes written.
    fn submit(&self, buf: &[u8], offset: u64, sync: bool) -> io::Result<usize> {
        use io_uring::{opcode, squeue, types};
        let fd = types::Fd(self.inner.file.as_raw_fd());
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let mut write = opcode::Write::new(fd, buf.as_ptr(), len)
            .offset(offset)
            .build()
            .user_data(WRITE_USER_DATA);
        if sync {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(SYNC_USER_DATA);
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let expected = if sync { 2 } else { 1 };
        {
            let mut queue = ring.submission();
            // SAFETY: `buf` outlives the submission: we wait below for every
            // completion of these entries before returning.
            unsafe {
                queue
                    .push(&write)
                    .map_err(|_| io::Error::other("submission queue full"))?;
                if sync {
                    queue
                        .push(&fsync)
                        .map_err(|_| io::Error::other("submission queue full"))?;
                }
            }
        }
        ring.submit_and_wait(expected)?;
        let (mut written, mut sync_result) = (None, None);
        for cqe in ring.completion() {
            match cqe.user_data() {
                WRITE_USER_DATA => written = Some(cqe.result()),
                SYNC_USER_DATA => sync_result = Some(cqe.result()),
                _ => {}
            }
        }
        let written = written.ok_or_else(|| io::Error::other("missing write completion"))?;
        if written < 0 {
            return Err(io::Error::from_raw_os_error(-written));
        }
        let written = written as usize;
        if sync && written == buf.len() {
            match sync_result {
                Some(0) => {}
                Some(code) if code < 0 => return Err(io::Error::from_raw_os_error(-code)),
                _ => return Err(io::Error::other("missing fdatasync completion")),
            }
        }
        Ok(written)
    }
}

impl WalFile for UringFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_and_sync(buf, offset, false)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.inner.size_bytes()
    }

    fn write_and_sync(&self, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            // A short write cancels the linked fsync; go round until all is out.
            let written = self.submit(&buf[done..], offset + done as u64, sync)?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring wrote 0 bytes",
                ));
            }
            done += written;
        }
        Ok(())
    }
}

/// Which write path the WAL uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring when the probe succeeds, else `pwrite`+`fdatasync` (logged).
    #[default]
    Auto,
    /// io_uring, or fail to open.
    Uring,
    /// `pwrite`+`fdatasync`.
    Sync,
}

impl std::str::FromStr for IoBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" => Ok(Self::Uring),
            "sync" => Ok(Self::Sync),
            other => Err(format!(
                "unknown io backend {other:?} (expected auto, uring or sync)"
            )),
        }
    }
}

/// Resolves a backend to a file system and the name of what was chosen.
pub fn file_system_for(backend: IoBackend) -> crate::Result<(Arc<dyn FileSystem>, &'static str)> {
    match backend {
        IoBackend::Sync => Ok((Arc::new(SyncFs), "sync")),
        IoBackend::Uring => UringFs::probe()
            .map(|fs| (Arc::new(fs) as Arc<dyn FileSystem>, "uring"))
            .map_err(|e| crate::Error::UringUnavailable(e.to_string())),
        IoBackend::Auto => match UringFs::probe() {
            Ok(fs) => Ok((Arc::new(fs), "uring")),
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable, using pwrite+fdatasync");
                Ok((Arc::new(SyncFs), "sync"))
            }
        },
    }
}
