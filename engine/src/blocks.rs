//! A namespace's write blocks: the current block being filled in RAM, sealed
//! blocks on disk (some still cached), live-byte accounting, and the states a
//! block goes through until its file is deleted.
//!
//! Block life: `Current` (appended to, in RAM, written out by `flush` or when
//! full) → `Sealed` (immutable file) → `Freeing` (no index entry points into it
//! any more) → `Dropped` (left out of the checkpoint being written) → deleted
//! once that checkpoint's manifest is durable and no view pins the block.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use crate::config::ReadMode;
use crate::error::{Error, IoContext, Result};
use crate::format::{self, BLOCK_HEADER_BYTES};
use crate::fs::{EngineFile, EngineFs, OpenFor};

/// Where a block is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Being filled.
    Current,
    /// Full or closed; immutable.
    Sealed,
    /// No live data; will be left out of the next checkpoint.
    Freeing,
    /// Left out of a checkpoint in progress; deleted when it completes.
    Dropped,
    /// Out of the durable manifest; kept only while a view pins it.
    Released,
}

/// One block.
#[derive(Debug)]
pub struct Block {
    path: PathBuf,
    file: Arc<dyn EngineFile>,
    /// Bytes in the block (header included).
    pub len_bytes: u32,
    /// Bytes written to the file so far.
    flushed_bytes: u32,
    /// Bytes known to be fsynced by a completed checkpoint.
    synced_bytes: u32,
    /// Bytes of record versions the index points at.
    pub live_bytes: u64,
    /// Life stage.
    pub state: BlockState,
    /// Views holding this block.
    pins: u32,
    /// RAM copy: the current block's buffer, or a recently sealed block.
    cache: Option<Arc<Vec<u8>>>,
    mmap: OnceLock<Arc<Mmap>>,
}

impl Block {
    /// A sealed block whose `len_bytes` are on disk and fsynced.
    fn sealed(path: PathBuf, file: Arc<dyn EngineFile>, len_bytes: u32) -> Block {
        Block {
            path,
            file,
            len_bytes,
            flushed_bytes: len_bytes,
            synced_bytes: len_bytes,
            live_bytes: 0,
            state: BlockState::Sealed,
            pins: 0,
            cache: None,
            mmap: OnceLock::new(),
        }
    }
}

/// What a checkpoint needs from the block store, taken under the lock.
#[derive(Debug, Default)]
pub struct BlockCut {
    /// (block id, durable length) of every block the checkpoint keeps.
    pub table: Vec<(u32, u32)>,
    /// Files to fsync.
    pub files: Vec<(PathBuf, Arc<dyn EngineFile>)>,
}

/// A block an install wrote outside the store; it joins the store as
/// sealed once the install's checkpoint is durable.
#[derive(Debug)]
pub struct StagedBlock {
    /// Block id (reserved from the store).
    pub id: u32,
    /// Its file.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn EngineFile>,
    /// Bytes in it, header included.
    pub len_bytes: u32,
}

/// The blocks of one namespace.
#[derive(Debug)]
pub struct BlockStore {
    fs: Arc<dyn EngineFs>,
    dir: PathBuf,
    block_size_bytes: u32,
    cache_blocks: usize,
    read_mode: ReadMode,
    blocks: BTreeMap<u32, Block>,
    /// Id and buffer of the block being filled.
    current: Option<(u32, Vec<u8>)>,
    /// Sealed blocks with a RAM copy, oldest first.
    cached: VecDeque<u32>,
    next_block_id: u32,
}

impl BlockStore {
    /// An empty store; `open_sealed` adds recovered blocks.
    pub fn new(
        fs: Arc<dyn EngineFs>,
        dir: &Path,
        block_size_bytes: u32,
        cache_blocks: usize,
        read_mode: ReadMode,
        next_block_id: u32,
    ) -> Self {
        BlockStore {
            fs,
            dir: dir.to_path_buf(),
            block_size_bytes,
            cache_blocks,
            read_mode,
            blocks: BTreeMap::new(),
            current: None,
            cached: VecDeque::new(),
            next_block_id: next_block_id.max(1),
        }
    }

    /// Path of a block file.
    pub fn path_of(&self, block_id: u32) -> PathBuf {
        self.dir.join(format::block_file_name(block_id))
    }

    /// Path of a block file, borrowed when the block is open (no allocation
    /// on the read path).
    pub fn block_path(&self, block_id: u32) -> Cow<'_, Path> {
        match self.blocks.get(&block_id) {
            Some(block) => Cow::Borrowed(&block.path),
            None => Cow::Owned(self.path_of(block_id)),
        }
    }

    /// Adds a recovered block as sealed, cutting its file to `durable_len`
    /// (bytes past it were written after the checkpoint and do not count).
    /// A missing file, one shorter than `durable_len`, or a bad header is
    /// [`Error::Corruption`]: the checkpoint fsynced those bytes.
    pub fn open_sealed(&mut self, block_id: u32, durable_len: u32) -> Result<()> {
        let path = self.path_of(block_id);
        let file = match self.fs.open(&path, OpenFor::Update) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let reason = "block file listed in the MANIFEST is missing";
                return Err(Error::corruption(&path, 0, reason));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let file_len = file.len_bytes().at(&path)?;
        if file_len < u64::from(durable_len) {
            let reason = format!("block file ends before its durable length {durable_len}");
            return Err(Error::corruption(&path, file_len, reason));
        }
        if file_len > u64::from(durable_len) {
            file.set_len(u64::from(durable_len)).at(&path)?;
        }
        let header = read_file_range(
            &path,
            &*file,
            0,
            BLOCK_HEADER_BYTES.min(durable_len as usize) as u32,
        )?;
        format::check_block_header(&header, block_id, &path)?;
        self.next_block_id = self.next_block_id.max(block_id + 1);
        self.blocks
            .insert(block_id, Block::sealed(path, file, durable_len));
        Ok(())
    }

    /// Hands out a block id for an install to write outside the store,
    /// refused with stop-writes if the store plus `staged_bytes` would pass
    /// `size_limit_bytes`.
    pub fn reserve_block_id(&mut self, staged_bytes: u64, size_limit_bytes: u64) -> Result<u32> {
        if self.used_bytes() + staged_bytes > size_limit_bytes {
            return Err(Error::StopWrites(format!(
                "namespace size limit of {size_limit_bytes} bytes reached by an install"
            )));
        }
        let id = self.next_block_id;
        self.next_block_id += 1;
        Ok(id)
    }

    /// Adds an install's staged block as sealed; its bytes were fsynced by
    /// the install's checkpoint.
    pub fn adopt_sealed(&mut self, staged: StagedBlock) {
        let block = Block::sealed(staged.path, staged.file, staged.len_bytes);
        self.blocks.insert(staged.id, block);
    }

    /// Next id to hand out.
    pub fn next_block_id(&self) -> u32 {
        self.next_block_id
    }

    /// All blocks.
    pub fn blocks(&self) -> &BTreeMap<u32, Block> {
        &self.blocks
    }

    /// Bytes of disk reserved by blocks not yet deleted (whole blocks, as
    /// Aerospike counts).
    pub fn used_bytes(&self) -> u64 {
        let live = self
            .blocks
            .values()
            .filter(|b| b.state != BlockState::Released);
        live.count() as u64 * u64::from(self.block_size_bytes)
    }

    /// Largest record version a block holds.
    pub fn max_version_bytes(&self) -> usize {
        self.block_size_bytes as usize - BLOCK_HEADER_BYTES
    }

    /// The block the next `len`-byte append lands in.
    pub fn append_target(&self, len: usize) -> u32 {
        match &self.current {
            Some((id, buf)) if buf.len() + len <= self.block_size_bytes as usize => *id,
            _ => self.next_block_id,
        }
    }

    /// Appends a record version; returns (block id, offset). `size_limit_bytes`
    /// bounds the disk use when a new block is needed.
    pub fn append(&mut self, bytes: &[u8], size_limit_bytes: u64) -> Result<(u32, u32)> {
        if bytes.len() > self.max_version_bytes() {
            return Err(Error::RecordTooBig {
                size_bytes: bytes.len(),
                max_bytes: self.max_version_bytes(),
            });
        }
        if self.append_target(bytes.len()) == self.next_block_id {
            self.seal_current()?;
            self.start_block(size_limit_bytes)?;
        }
        let (id, buf) = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Config("no current block after starting one".to_string()))?;
        let offset = buf.len() as u32;
        buf.extend_from_slice(bytes);
        let id = *id;
        if let Some(block) = self.blocks.get_mut(&id) {
            block.len_bytes = offset + bytes.len() as u32;
        }
        Ok((id, offset))
    }

    fn start_block(&mut self, size_limit_bytes: u64) -> Result<()> {
        if self.used_bytes() + u64::from(self.block_size_bytes) > size_limit_bytes {
            return Err(Error::StopWrites(format!(
                "namespace size limit of {size_limit_bytes} bytes reached"
            )));
        }
        let id = self.next_block_id;
        let path = self.path_of(id);
        let file = self.fs.open(&path, OpenFor::NewBlock).at(&path)?;
        let mut buf = Vec::with_capacity(self.block_size_bytes as usize);
        buf.extend_from_slice(&format::encode_block_header(id, self.block_size_bytes));
        self.next_block_id += 1;
        self.blocks.insert(
            id,
            Block {
                path,
                file,
                len_bytes: buf.len() as u32,
                flushed_bytes: 0,
                synced_bytes: 0,
                live_bytes: 0,
                state: BlockState::Current,
                pins: 0,
                cache: None,
                mmap: OnceLock::new(),
            },
        );
        self.current = Some((id, buf));
        Ok(())
    }

    /// Writes the current block's unwritten bytes to its file (no fsync).
    pub fn flush(&mut self) -> Result<()> {
        let Some((id, buf)) = &self.current else {
            return Ok(());
        };
        let Some(block) = self.blocks.get_mut(id) else {
            return Ok(());
        };
        let from = block.flushed_bytes as usize;
        if from < buf.len() {
            block
                .file
                .write_all_at(&buf[from..], from as u64)
                .at(&block.path)?;
            block.flushed_bytes = buf.len() as u32;
        }
        Ok(())
    }

    /// Writes out and seals the current block; it stays cached for reads.
    pub fn seal_current(&mut self) -> Result<()> {
        self.flush()?;
        let Some((id, buf)) = self.current.take() else {
            return Ok(());
        };
        if let Some(block) = self.blocks.get_mut(&id) {
            block.state = if block.live_bytes == 0 {
                BlockState::Freeing
            } else {
                BlockState::Sealed
            };
            if self.cache_blocks > 0 {
                block.cache = Some(Arc::new(buf));
                self.cached.push_back(id);
            }
        }
        while self.cached.len() > self.cache_blocks {
            if let Some(old) = self.cached.pop_front()
                && let Some(block) = self.blocks.get_mut(&old)
            {
                block.cache = None;
            }
        }
        Ok(())
    }

    /// Adds live bytes to a block.
    pub fn add_live(&mut self, block_id: u32, len: u32) {
        if let Some(block) = self.blocks.get_mut(&block_id) {
            block.live_bytes += u64::from(len);
        }
    }

    /// Removes live bytes; a sealed block left with none becomes `Freeing`.
    pub fn sub_live(&mut self, block_id: u32, len: u32) {
        if let Some(block) = self.blocks.get_mut(&block_id) {
            block.live_bytes = block.live_bytes.saturating_sub(u64::from(len));
            if block.live_bytes == 0 && block.state == BlockState::Sealed {
                block.state = BlockState::Freeing;
            }
        }
    }

    /// After recovery: sealed blocks without live data can go.
    pub fn mark_empty_blocks_freeing(&mut self) {
        for block in self.blocks.values_mut() {
            if block.live_bytes == 0 && block.state == BlockState::Sealed {
                block.state = BlockState::Freeing;
            }
        }
    }

    /// Reads `len` bytes at `offset` of a block: from RAM if cached, else one
    /// `pread` or a copy out of the block's mapping.
    pub fn read(&self, block_id: u32, offset: u32, len: u32) -> Result<Vec<u8>> {
        let path = || self.path_of(block_id);
        let block = self.blocks.get(&block_id).ok_or_else(|| {
            Error::corruption(
                &path(),
                u64::from(offset),
                "the index points at a missing block",
            )
        })?;
        let start = offset as usize;
        let end = start + len as usize;
        if end > block.len_bytes as usize {
            return Err(Error::corruption(
                &block.path,
                u64::from(offset),
                "record runs past the block end",
            ));
        }
        if let Some((id, buf)) = &self.current
            && *id == block_id
        {
            return Ok(buf[start..end].to_vec());
        }
        if let Some(cache) = &block.cache {
            return Ok(cache[start..end].to_vec());
        }
        match self.read_mode {
            ReadMode::Pread => read_file_range(&block.path, &*block.file, offset, len),
            ReadMode::Mmap => {
                let map = self.mapping(block)?;
                map.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
                    Error::corruption(&block.path, u64::from(offset), "block file truncated")
                })
            }
        }
    }

    fn mapping(&self, block: &Block) -> Result<Arc<Mmap>> {
        if let Some(map) = block.mmap.get() {
            return Ok(map.clone());
        }
        // SAFETY: only sealed blocks reach here (the current block is served
        // from its buffer), and the engine never writes to or truncates a sealed
        // block's file while it is open; recovery cuts files before this store
        // exists. Another process modifying the file is outside the contract.
        // The map is of the OS file under the `EngineFile`: mapped reads
        // bypass the file seam (and injected faults).
        let map = Arc::new(unsafe { Mmap::map(block.file.std_file()) }.at(&block.path)?);
        Ok(block.mmap.get_or_init(|| map).clone())
    }

    /// The whole content of a block (for defrag and scans).
    pub fn read_block(&self, block_id: u32) -> Result<Arc<Vec<u8>>> {
        let block = self
            .blocks
            .get(&block_id)
            .ok_or_else(|| Error::corruption(&self.path_of(block_id), 0, "block missing"))?;
        if let Some(cache) = &block.cache {
            return Ok(cache.clone());
        }
        if let Some((id, buf)) = &self.current
            && *id == block_id
        {
            return Ok(Arc::new(buf.clone()));
        }
        read_block_file(&block.path, &*block.file, block.len_bytes).map(Arc::new)
    }

    /// Flushes the current block and lists what a checkpoint keeps; blocks that
    /// were `Freeing` become `Dropped`.
    pub fn cut(&mut self) -> Result<BlockCut> {
        self.flush()?;
        let mut cut = BlockCut::default();
        for (id, block) in &mut self.blocks {
            match block.state {
                BlockState::Current | BlockState::Sealed => {
                    cut.table.push((*id, block.flushed_bytes));
                    if block.synced_bytes < block.flushed_bytes {
                        cut.files.push((block.path.clone(), block.file.clone()));
                    }
                }
                BlockState::Freeing => block.state = BlockState::Dropped,
                BlockState::Dropped | BlockState::Released => {}
            }
        }
        Ok(cut)
    }

    /// After a checkpoint: the lengths it fsynced need no fsync again.
    pub fn mark_synced(&mut self, table: &[(u32, u32)]) {
        for (id, len) in table {
            if let Some(block) = self.blocks.get_mut(id) {
                block.synced_bytes = block.synced_bytes.max(*len);
            }
        }
    }

    /// After a checkpoint's manifest is durable: `Dropped` blocks are released
    /// and deleted unless pinned.
    pub fn release_dropped(&mut self) -> Result<()> {
        for block in self.blocks.values_mut() {
            if block.state == BlockState::Dropped {
                block.state = BlockState::Released;
            }
        }
        self.delete_released()
    }

    fn delete_released(&mut self) -> Result<()> {
        let gone: Vec<u32> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.state == BlockState::Released && b.pins == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(block) = self.blocks.remove(&id) {
                self.cached.retain(|c| *c != id);
                // A file left behind is not listed in the manifest: the next
                // open deletes it.
                self.fs.remove(&block.path).at(&block.path)?;
            }
        }
        Ok(())
    }

    /// Pins a block for a view.
    pub fn pin(&mut self, block_id: u32) {
        if let Some(block) = self.blocks.get_mut(&block_id) {
            block.pins += 1;
        }
    }

    /// Unpins; deletes the file if it was released meanwhile.
    pub fn unpin(&mut self, block_id: u32) -> Result<()> {
        if let Some(block) = self.blocks.get_mut(&block_id) {
            block.pins = block.pins.saturating_sub(1);
        }
        self.delete_released()
    }
}

/// Reads the first `len` bytes of a block file; a short file is corruption.
pub fn read_block_file(path: &Path, file: &dyn EngineFile, len: u32) -> Result<Vec<u8>> {
    read_file_range(path, file, 0, len)
}

/// Reads `len` bytes at `offset`; a file ending before is corruption.
fn read_file_range(path: &Path, file: &dyn EngineFile, offset: u32, len: u32) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0usize;
    while done < buf.len() {
        let at = u64::from(offset) + done as u64;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => return Err(Error::corruption(path, at, "block file truncated")),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(buf)
}
