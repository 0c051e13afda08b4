//! Aerie's snapshots: one self-describing file per shard, consistent at exactly
//! one raft index, serving backups, restores, point-in-time recovery and
//! replica installation. The bytes are described in `snapshot/FORMAT.md`
//! beside [`format`].
//!
//! # Who owns what
//!
//! * [`format`]: every constant and the header, chunk-frame and footer codecs.
//!   Records inside chunks use the engine's record image
//!   (`aerie_engine::format::encode_record_image`).
//! * [`SnapshotWriter`] streams records into zstd chunks (memory: one raw chunk
//!   and its compressed copy) and makes the file appear under its final name
//!   only once complete: `.snap.tmp`, fsync, rename, directory fsync.
//! * [`SnapshotReader`] reads one chunk at a time, bounding every length before
//!   allocating and naming the file and offset of any failure;
//!   [`SnapshotReader::verify`] checks every chunk, the record order and the
//!   footer's counts and checksum.
//! * [`Capture`] takes engine read views of a shard's partitions in every
//!   namespace at one applied index (the engine copies 40 bytes of index per
//!   record and pins the blocks); [`Capture::write`] then writes the file
//!   without holding any engine lock, so writes go on meanwhile.
//! * [`install()`] verifies a file in full and then replaces the shard's
//!   partitions in every namespace in one engine commit
//!   (`Engine::begin_install`): the engine holds the old or the new state of
//!   all of them, never a mix, even after a crash; its durable applied index
//!   becomes the snapshot's index.
//! * [`transfer`]: [`ChunkSource`] and [`Receiver`] move a file between nodes
//!   in resumable pieces; a received file is accepted only after a full verify.
//! * [`catalog`]: listing and retention.
//! * [`pitr`]: replaying archived WAL entries after an installed snapshot up to
//!   an index or a time.
//!
//! # Consistency
//!
//! A snapshot holds every record as of its index and nothing written after it:
//! the engine takes the views of every namespace under all their locks, so no
//! entry of any log is applied between them, and a view reads the record
//! versions its copied index entries point at, in blocks pinned until the view
//! is dropped.

pub mod catalog;
mod create;
mod error;
pub mod format;
mod install;
pub mod pitr;
mod reader;
pub mod transfer;
mod writer;

pub use catalog::{Catalog, CatalogEntry, Retention, apply_retention};
pub use create::{Capture, ShardMeta};
pub use error::{Error, Result};
pub use format::Header;
pub use install::{install, install_verified};
pub use reader::{Chunk, SnapshotReader, VerifyReport};
pub use transfer::{ChunkSource, Receiver};
pub use writer::{SnapshotInfo, SnapshotWriter, WriteOptions};
