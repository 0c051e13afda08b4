//! Aerie's record store: Aerospike's record model on log-structured write
//! blocks, with the primary index in RAM. It knows nothing of raft or the
//! network: raft groups ("logs", one per shard) apply committed commands with
//! [`Engine::apply`]`(log_id, index, now_ms, &Command)`.
//!
//! # Who owns what
//!
//! * [`Engine`] owns the namespaces, the per-log applied and durable indices,
//!   the engine write sequence and the checkpoint procedure (`engine.rs`).
//! * Each namespace (`namespace.rs`, behind one `RwLock`) owns its index
//!   (`index.rs`: 4096 partitions of 40-byte entries), its set table, its
//!   truncate/install markers and its write blocks (`blocks.rs`).
//! * `install.rs` stages and commits installs ([`Install`]).
//! * `semantics.rs` is Aerospike's write semantics as a pure function (exists
//!   and generation policies, TTLs, operate ops); [`model::Model`] is the same
//!   function over a `BTreeMap`, the reference the tests compare against.
//! * `format.rs` holds every on-disk constant and the block/record codecs,
//!   `checkpoint.rs` the `MANIFEST` and `index.ckpt` codecs, `recovery.rs` the
//!   open path. The bytes are described in `engine/FORMAT.md`.
//!
//! # Durability: checkpoints and `durable_applied_index`
//!
//! The engine never fsyncs per record: the WAL provides durability. Records are
//! appended to the namespace's current block in RAM, written to its file when
//! the block is full or `tick` finds it older than `flush_interval_ms`.
//! [`Engine::checkpoint`] takes a consistent cut (all namespace locks): it
//! writes out the current blocks, notes every block's length, the applied index
//! of every log and the next write sequence, and copies the index into a
//! buffer; then, without locks, it fsyncs the blocks, writes each
//! `index.ckpt`, and finally the `MANIFEST` (temp file, fsync, rename, dir
//! fsync). Only then does [`Engine::durable_applied_index`] advance.
//!
//! # Recovery: the invariant
//!
//! After any crash the engine comes back in exactly the state as of its durable
//! applied indices. The rule that gives this: **the durable state is the
//! blocks the last `MANIFEST` lists, each cut to the length it records.** At
//! open, block tails past those lengths and block files the manifest does not
//! list are deleted before anything else, so a version written by a log entry
//! after the checkpoint (which the WAL will replay, and which may be an
//! increment or an append) can never resurface, not even after a later
//! checkpoint. Then the index is loaded from `index.ckpt` when it belongs to
//! that same checkpoint (fast start, no block is read), or rebuilt by scanning
//! the listed blocks (cold start: per digest the valid version with the highest
//! engine write sequence; tombstones honoured; versions hidden by a truncate or
//! install marker skipped). A corrupt or stale `index.ckpt` only costs a cold
//! start (logged with path and reason, and listed in
//! [`Engine::recovery_report`]); a corrupt or missing `MANIFEST` is fatal.
//!
//! **Damage is never skipped.** The durable part of a listed block was
//! fsynced before the `MANIFEST` that lists it, and the WAL replays only what
//! came after that checkpoint, so nothing else holds what those bytes hold:
//! skipping them would drop records silently, and skipping a tombstone would
//! bring a deleted record back. The one repair is the torn tail above (bytes
//! past the durable length, which the WAL replays, are cut). Everything else
//! fails the open with [`Error::Corruption`] naming the file and offset: on
//! every start, a listed block file that is missing, shorter than its durable
//! length, or with a bad header; on a cold start also any record version in
//! the durable part that fails its length, CRC or decoding checks. A fast
//! start reads no record, so damage inside a record is found when the record
//! is read (see Reads) or by the next cold start. Such a node needs its
//! engine rebuilt from a replica or a snapshot.
//!
//! # Installs
//!
//! [`Engine::begin_install`] → [`Install::stage`] per namespace →
//! [`Install::commit`] replaces a shard's partitions in several namespaces
//! and claims the log's applied index in one step: staged records go to new
//! block files that no index entry and no `MANIFEST` knows of; the commit is
//! one checkpoint whose cut (under every namespace lock) already holds the
//! new partitions, and only once its `MANIFEST` is durable are they swapped
//! in memory (under every lock again). Before that rename any error leaves
//! the previous state and deletes the staged files; after a crash anywhere
//! the engine reopens with the old or the new contents of every namespace.
//! An install marker per partition hides every older version at a cold
//! start; expiry reclaim keeps out of partitions being installed (its
//! tombstones would be newer than the staged records).
//!
//! # Truncation
//!
//! A `Truncate` command names its partitions (the proposing shard's own):
//! only their index entries are walked, and a truncate marker (kept in the
//! `MANIFEST` as partition ranges) hides their older versions at a cold
//! start. The cut-off is at most the command's `now_ms`, the leader's clock
//! every replica applies with; a later one is clamped to it.
//!
//! # Block freeing rule
//!
//! A block is freed only when nothing can need it after a crash:
//!
//! 1. a sealed block whose live bytes (versions the index points at) reach zero
//!    becomes `Freeing`; defrag gets it there by copying its live versions,
//!    unchanged, into the current block;
//! 2. the next checkpoint leaves it out of the `MANIFEST` (`Dropped`); its
//!    index no longer points into it, and every version that replaced its
//!    contents is in blocks that checkpoint fsyncs;
//! 3. once that `MANIFEST` is durable the file is deleted (`Released`), unless a
//!    [`View`] still pins it, in which case it is deleted when the last view is
//!    dropped.
//!
//! Until step 3, a crash recovers from the previous manifest, which still lists
//! the block, so the older version is found. Tombstones: a tombstone records
//! the block it was first written to; every older version of its record is in
//! a block with an id at most that. Defrag drops a tombstone (instead of copying
//! it) only when every such block except the one being defragmented is already
//! `Freeing`, `Dropped` or `Released`. Expired records are reclaimed by writing
//! a tombstone (log 0) for the same reason: once the expired version's block is
//! freed, an older version must not come back.
//!
//! # Reads
//!
//! A read is an index lookup (RAM) and at most one device read: the record
//! comes from the current block's buffer, one of the `post_write_cache_blocks`
//! most recently sealed blocks kept in RAM, or one `pread` of exactly the
//! record's bytes. `ReadMode::Mmap` maps sealed blocks instead; the figures that
//! chose `Pread` as the default are below. Every record read is CRC-checked and
//! its digest compared with the index; a failure is [`Error::Corruption`] with
//! the block file and offset, never data.
//!
//! Measured (`cargo bench -p aerie-engine -- --quick read`, 20k records in
//! sealed uncached blocks, page cache warm, 2-core VM): `get` of a 100 B /
//! 1 KiB / 10 KiB record took 0.97 / 1.16 / 2.50 µs with `pread` and 0.30 /
//! 0.69 / 1.57 µs with `mmap` (after the index probe lost its division; two
//! back-to-back runs differed by up to 40 %). `Pread` stays the default anyway: with `mmap` a
//! device error or a file cut short by someone else is a SIGBUS that kills the
//! node instead of an [`Error`] naming the file and offset, and every block
//! costs a mapping (`vm.max_map_count` is 65 530 by default: 512 GiB of 8 MiB
//! blocks). The ~0.6 µs is a syscall; reads from a real device (not measured
//! here: no dedicated SSD) cost the same I/O either way.
//!
//! # Index RAM
//!
//! 40 bytes per entry (digest 20, block 4, offset 4, length 4, void time 4,
//! generation 2, set id 2) in a dense vector grown by 1/8, plus a u32 slot in an
//! open-addressing table kept 70–87% full: about 46 bytes per record with all
//! overheads (target 48; Aerospike uses 64). Tombstones stay in the index.
//!
//! Measured at 10M records of 100 B (`cargo test -p aerie-engine --release
//! --test scale -- --ignored --nocapture`): 46.9 B per record of index RAM;
//! checkpoint 2.3 s (400 MB `index.ckpt`); fast start 1.15 s; cold start
//! 15.6 s (641k records/s, 117 MB/s). Files were in the page cache.
//!
//! # Time
//!
//! Commands carry the leader's clock (`now_ms`, Unix ms); the engine never reads
//! the wall clock, so replicas agree. Void times are Aerospike's: seconds since
//! 2010-01-01, 0 = never. Reads take `now_ms` too; an expired record is
//! invisible at once and reclaimed later by [`Engine::reclaim_expired`].
//!
//! # Background work
//!
//! Driven by the caller's timer, deterministic and testable: [`Engine::tick`]
//! (flush interval, periodic checkpoint), [`Engine::defrag_step`] (rate limit:
//! bytes examined per call), [`Engine::reclaim_expired`] (records per call).
//! [`Engine::start_background`] runs them on a thread ([`BackgroundConfig`]:
//! `tick_interval_ms`, `defrag_rate_bytes_per_sec` as a token bucket,
//! `reclaim_max_records_per_tick`, and the clock); it logs and counts errors
//! ([`BackgroundStats`]) and never panics; [`BackgroundHandle::stop`] or
//! dropping the handle joins it (waiting at most `stop_timeout_ms`).
//!
//! # Disk faults
//!
//! Every block-file, `index.ckpt` and `MANIFEST` operation goes through the
//! [`EngineFs`] in [`EngineConfig::fs`] ([`StdFs`] by default);
//! [`fault::FaultyFs`] injects ENOSPC, fsync EIO, short and torn writes for
//! tests. `ReadMode::Mmap` maps the OS file under an [`EngineFile`], so
//! mapped reads bypass the seam. What a failure does:
//!
//! * A failed **write** (ENOSPC, EIO, short write) of a block, `index.ckpt`
//!   or `MANIFEST` returns [`Error::Io`] naming the file. Nothing is claimed
//!   durable and the bytes are still in RAM, so the next attempt (same
//!   offsets) is safe. A write that fails inside `apply` is not applied (a
//!   system error: the apply loop retries it); ENOSPC maps to Aerospike's
//!   stop-writes result code for the client. Reads keep working.
//! * A failed **fsync** (block, temporary checkpoint file, directory) returns
//!   [`Error::SyncFailed`] and poisons the engine: `apply`, `checkpoint`,
//!   `tick`, `defrag_step`, `reclaim_expired` and installs then fail with
//!   [`Error::Poisoned`]; reads keep working. After a failed fsync the kernel
//!   may have dropped the dirty pages and cleared the error, so a later fsync
//!   that succeeds proves nothing. Reopening recovers the last durable
//!   checkpoint and the WAL replays the rest.
//! * `durable_applied_index` advances only after the `MANIFEST` is renamed
//!   into place and its directory fsynced.
//! * [`Engine::health`] is what an operator needs: the poisoning fsync error
//!   (naming the file) and the namespaces at their stop-writes threshold; it
//!   does no I/O, so metrics can read it on every scrape.
//!
//! # Concurrency
//!
//! All methods take `&self`. A namespace's writes are serialised by its lock;
//! reads share it (the `pread` happens under the read lock). A checkpoint holds
//! every namespace lock only while it copies the index into a buffer (about
//! 40 bytes per record).

mod blocks;
mod checkpoint;
mod config;
mod driver;
mod engine;
mod error;
pub mod fault;
pub mod format;
pub mod fs;
mod index;
mod install;
pub mod model;
mod namespace;
mod recovery;
mod semantics;
mod types;
mod view;

pub use blocks::BlockState;
pub use config::{EngineConfig, NamespaceConfig, ReadMode};
pub use driver::{
    BackgroundConfig, BackgroundHandle, BackgroundStats, ClockMs, monotonic_ms, wall_clock_ms,
};
pub use engine::{BlockStats, CheckpointStats, Engine, Health, NamespaceStats, RecoveryReport};
pub use error::{Error, Result};
pub use fs::{EngineFile, EngineFs, OpenFor, StdFs};
pub use install::Install;
pub use namespace::{Counters, DefragProgress};
pub use recovery::NsRecovery;
pub use types::*;
pub use view::{PartitionSummary, ScanPage, View};
