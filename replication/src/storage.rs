//! raft-rs `Storage` for one raft group (a shard, or the cluster group),
//! answered from the node's WAL (entries and hard state of the group's
//! stream) and the group's meta file (compaction point, membership). The
//! ready loop owns it inside the group's `RawNode` and is the only writer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aerie_wal::{EntryRef, LogBatch, Wal};
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::codec::{EntryKind, SnapshotRef, StoredEntry};
use crate::error::{Error, Result};
use crate::meta::RaftMeta;

/// The newest snapshot file of a shard this node can send, shared between the
/// storage (which answers raft) and the apply loop (which makes them).
#[derive(Debug, Default)]
pub struct SnapshotSlot {
    /// Metadata and reference of the newest snapshot file.
    pub newest: Mutex<Option<(u64, u64, SnapshotRef)>>,
    /// Raft asked for a snapshot and none was recent enough.
    pub wanted: AtomicBool,
}

/// The cluster group's state as raft sends it in a snapshot message (it is
/// small: the member list), kept current by the ready loop as it applies.
#[derive(Debug, Default)]
pub struct InlineSnapshot {
    /// The index the state is at (applied, and durable in the state file).
    pub index: u64,
    /// The term of that index.
    pub term: u64,
    /// The encoded `ClusterState`.
    pub data: Vec<u8>,
}

/// Where a group's raft snapshots come from.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    /// A shard's snapshot files: the message names one, the follower fetches
    /// it in chunks.
    Files(Arc<SnapshotSlot>),
    /// The cluster group's state, carried in the message itself.
    Inline(Arc<Mutex<InlineSnapshot>>),
}

/// One raft group's storage (a shard's, or the cluster group's).
pub struct ShardStorage {
    shard: u32,
    stream: u64,
    wal: Arc<Wal>,
    meta: RaftMeta,
    meta_path: PathBuf,
    snapshots: SnapshotSource,
}

fn store_error(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

fn to_wal_hard_state(hs: &HardState) -> aerie_wal::HardState {
    aerie_wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// The payload of a raft entry in the WAL.
pub fn entry_payload(entry: &Entry) -> Vec<u8> {
    let kind = match entry.get_entry_type() {
        EntryType::EntryNormal => EntryKind::Normal,
        EntryType::EntryConfChange => EntryKind::ConfChange,
        EntryType::EntryConfChangeV2 => EntryKind::ConfChangeV2,
    };
    StoredEntry {
        kind,
        data: entry.data.to_vec(),
        context: entry.context.to_vec(),
    }
    .encode()
}

fn decode_entry(wal_entry: aerie_wal::Entry) -> Result<Entry> {
    let stored = StoredEntry::decode(&wal_entry.payload)?;
    let mut entry = Entry {
        index: wal_entry.index,
        term: wal_entry.term,
        data: stored.data.into(),
        context: stored.context.into(),
        ..Entry::default()
    };
    entry.set_entry_type(match stored.kind {
        EntryKind::Normal => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
        EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    });
    Ok(entry)
}

impl ShardStorage {
    /// Opens a shard's storage, finishing a log reset a crash interrupted and
    /// bringing the WAL stream in line with the compaction point.
    pub fn open(
        shard: u32,
        stream: u64,
        wal: Arc<Wal>,
        meta: RaftMeta,
        meta_path: PathBuf,
        snapshots: SnapshotSource,
    ) -> Result<ShardStorage> {
        let mut storage = ShardStorage {
            shard,
            stream,
            wal,
            meta,
            meta_path,
            snapshots,
        };
        if storage.meta.reset_pending {
            storage.write_reset()?;
        } else if storage.wal.first_index(stream) <= storage.meta.snapshot_index {
            storage
                .wal
                .compact(stream, storage.meta.snapshot_index + 1)?;
        }
        Ok(storage)
    }

    /// The shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The persisted metadata.
    pub fn meta(&self) -> &RaftMeta {
        &self.meta
    }

    /// Adds the ready's entries and hard state to `batch` (written by the loop
    /// for all shards at once).
    pub fn stage(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        batch: &mut LogBatch,
    ) -> Result<()> {
        let payloads: Vec<Vec<u8>> = entries.iter().map(entry_payload).collect();
        let refs: Vec<EntryRef<'_>> = entries
            .iter()
            .zip(&payloads)
            .map(|(e, p)| EntryRef {
                index: e.index,
                term: e.term,
                payload: p,
            })
            .collect();
        if !refs.is_empty() {
            batch.append(self.stream, &refs)?;
        }
        if let Some(hs) = hard_state {
            batch.set_hard_state(self.stream, to_wal_hard_state(hs));
        }
        Ok(())
    }

    /// Adds the hard state alone to `batch` (a commit index that moved
    /// without a ready carrying it).
    pub fn stage_hard_state(&self, hard_state: &HardState, batch: &mut LogBatch) {
        batch.set_hard_state(self.stream, to_wal_hard_state(hard_state));
    }

    /// Persists the configuration a membership entry at `index` made
    /// (before raft goes on: a restart must start from it).
    pub fn apply_membership(&mut self, index: u64, conf_state: ConfState) -> Result<()> {
        self.meta.push_membership(index, conf_state);
        self.meta.store(&self.meta_path)
    }

    /// Drops log entries up to `index` (which must be applied and covered by
    /// the engine's durable state and a snapshot): the meta file first, so the
    /// term of `index` is never lost.
    pub fn compact_to(&mut self, index: u64) -> Result<()> {
        if index <= self.meta.snapshot_index || index > self.wal.last_index(self.stream) {
            return Ok(());
        }
        let term = self.wal.term(self.stream, index)?;
        self.meta.snapshot_index = index;
        self.meta.snapshot_term = term;
        self.meta.trim_memberships(index);
        self.meta.store(&self.meta_path)?;
        self.wal.compact(self.stream, index + 1)?;
        Ok(())
    }

    /// Records an installed snapshot: the log restarts after its index. The
    /// meta file says so first (with the reset pending), then the WAL is reset,
    /// then the meta file is marked done: a crash anywhere is finished at open.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let metadata = snapshot.get_metadata();
        self.meta.snapshot_index = metadata.index;
        self.meta.snapshot_term = metadata.term;
        self.meta
            .reset_memberships(metadata.index, metadata.get_conf_state().clone());
        self.meta.reset_pending = true;
        self.meta.store(&self.meta_path)?;
        self.write_reset()
    }

    fn write_reset(&mut self) -> Result<()> {
        let mut batch = LogBatch::new();
        batch.reset(self.stream, self.meta.snapshot_index + 1);
        let mut hs = self.wal.hard_state(self.stream);
        hs.commit = hs.commit.max(self.meta.snapshot_index);
        hs.term = hs.term.max(self.meta.snapshot_term);
        batch.set_hard_state(self.stream, hs);
        self.wal.write(batch)?;
        self.meta.reset_pending = false;
        self.meta.store(&self.meta_path)
    }
}

impl raft::Storage for ShardStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let wal_hs = self.wal.hard_state(self.stream);
        let hs = HardState {
            term: wal_hs.term,
            vote: wal_hs.vote,
            // Compacted entries were applied, so committed, even if the hard
            // state with that commit index was not written yet.
            commit: wal_hs.commit.max(self.meta.snapshot_index),
            ..HardState::default()
        };
        Ok(RaftState::new(hs, self.meta.conf_state()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.meta.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let max_bytes = max_size.into().unwrap_or(u64::MAX);
        let found = self
            .wal
            .entries(self.stream, low, high, max_bytes)
            .map_err(store_error)?;
        found
            .into_iter()
            .map(|e| decode_entry(e).map_err(store_error))
            .collect()
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.meta.snapshot_index {
            return Ok(self.meta.snapshot_term);
        }
        if idx < self.meta.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.wal.last_index(self.stream) {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.wal.term(self.stream, idx).map_err(store_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.meta.snapshot_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self
            .wal
            .last_index(self.stream)
            .max(self.meta.snapshot_index))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let newest = match &self.snapshots {
            SnapshotSource::Files(slot) => crate::lock(&slot.newest)
                .as_ref()
                .map(|(index, term, reference)| (*index, *term, reference.encode())),
            SnapshotSource::Inline(state) => {
                let state = crate::lock(state);
                Some((state.index, state.term, state.data.clone()))
            }
        };
        let wanted_from = request_index.max(self.meta.snapshot_index);
        // raft refuses a snapshot whose configuration lacks the receiver (a
        // learner added after it was taken): a newer one is needed then.
        let includes = |index: u64| {
            let conf = self.meta.conf_state_at(index);
            [&conf.voters, &conf.learners, &conf.voters_outgoing]
                .iter()
                .any(|ids| ids.contains(&to))
        };
        match newest {
            Some((index, term, data)) if index >= wanted_from && includes(index) => {
                let mut snapshot = Snapshot {
                    data: data.into(),
                    ..Snapshot::default()
                };
                let metadata = snapshot.mut_metadata();
                metadata.index = index;
                metadata.term = term;
                // The configuration at the snapshot's own index, not now's.
                metadata.set_conf_state(self.meta.conf_state_at(index));
                Ok(snapshot)
            }
            _ => {
                if let SnapshotSource::Files(slot) = &self.snapshots {
                    slot.wanted.store(true, Ordering::SeqCst);
                }
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

impl From<Error> for raft::Error {
    fn from(e: Error) -> raft::Error {
        store_error(e)
    }
}
