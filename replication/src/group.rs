//! The cluster group: a raft group of its own whose state machine is the
//! cluster's metadata ([`ClusterState`]: the members and their addresses).
//! Its voters are placed as a shard's are; every other member is a learner,
//! so every node applies the same metadata in the same order and none has
//! to be told it by gossip. The ready loop drives it beside the shards (its
//! entries share the shards' WAL group commit) and applies its entries
//! itself: they are few and small.
//!
//! Files: its log is WAL stream [`CLUSTER_STREAM`]; its compaction point and
//! membership are in `raft/cluster-group.meta` (the shards' meta format);
//! the state is in `raft/cluster.state`, replaced atomically after every
//! applied batch, so the log is compacted right behind it and a lagging
//! member is sent the state itself in the snapshot message.
//!
//! `cluster.state` (little-endian): magic `AERIECST` (8), version u32 = 2
//! (1, read but no longer written, lacks the leaving and retired lists),
//! the term of the state's applied index u64, body length u32 (at most
//! [`MAX_STATE_BYTES`]), the body (`ClusterState` in the codec's bytes:
//! version byte 1, then bincode 2 standard), CRC-32 of everything before (4).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aerie_wal::Wal;
use raft::RawNode;
use raft::prelude::{Entry, EntryType, Snapshot};

use crate::cluster::{ClusterCommand, ClusterState};
use crate::error::{Error, Result};
use crate::lock;
use crate::meta::{RaftMeta, write_atomically};
use crate::node::{NodeConfig, ShardStatus};
use crate::shard::{raft_config, raft_status};
use crate::storage::{InlineSnapshot, ShardStorage, SnapshotSource};

/// The cluster group's id where a shard id goes (`Envelope::Raft`).
pub const CLUSTER_GROUP: u32 = u32::MAX;
/// The WAL stream of its log (shards use `shard + 1`, at most 4096).
pub const CLUSTER_STREAM: u64 = 1 << 32;
/// Its meta file in the raft directory.
pub const META_FILE: &str = "cluster-group.meta";
/// Its state file in the raft directory.
pub const STATE_FILE: &str = "cluster.state";
/// Largest state body a file may hold.
pub const MAX_STATE_BYTES: usize = 1 << 20;

const STATE_MAGIC: [u8; 8] = *b"AERIECST";
const STATE_VERSION: u32 = 2;
/// The version before leaving and retired members.
const STATE_VERSION_V1: u32 = 1;
/// Magic, version, term, body length.
const STATE_HEADER_BYTES: usize = 8 + 4 + 8 + 4;

/// Told every new [`ClusterState`] whose members changed (on the ready
/// loop's thread: it must not block).
pub type OnChange = Arc<dyn Fn(&ClusterState) + Send + Sync>;

/// The cluster group as the ready loop holds it.
pub struct ClusterGroup {
    pub raw: RawNode<ShardStorage>,
    state: ClusterState,
    state_path: PathBuf,
    inline: Arc<Mutex<InlineSnapshot>>,
    published: Arc<Mutex<Arc<ClusterState>>>,
    on_change: OnChange,
    /// The commit index moved after the last hard state written.
    pub commit_unsaved: bool,
}

impl ClusterGroup {
    /// Opens the group from its meta file (created with `config.voters` on
    /// the node's first start), its WAL stream and its state file.
    pub fn open(
        config: &NodeConfig,
        wal: &Arc<Wal>,
        published: Arc<Mutex<Arc<ClusterState>>>,
        on_change: OnChange,
    ) -> Result<ClusterGroup> {
        let meta_path = config.raft_dir.join(META_FILE);
        let meta = RaftMeta::load_or_create(&meta_path, &config.voters)?;
        let state_path = config.raft_dir.join(STATE_FILE);
        let (term, state) = load_state(&state_path)?.unwrap_or_default();
        if state.applied < meta.snapshot_index {
            return Err(Error::Config(format!(
                "{}: the cluster state (at {}) is behind the cluster group's compaction point \
                 ({}); wipe this node's data directory to rebuild it from the cluster",
                state_path.display(),
                state.applied,
                meta.snapshot_index
            )));
        }
        let compacted = meta.snapshot_index;
        let inline = Arc::new(Mutex::new(InlineSnapshot {
            index: state.applied,
            term,
            data: state.encode(),
        }));
        let storage = ShardStorage::open(
            CLUSTER_GROUP,
            CLUSTER_STREAM,
            wal.clone(),
            meta,
            meta_path,
            SnapshotSource::Inline(inline.clone()),
        )?;
        let commit = wal.hard_state(CLUSTER_STREAM).commit;
        let last = raft::Storage::last_index(&storage)?;
        // The commit index in the WAL's hard state may lag the compaction
        // point (a commit move is written lazily, and a crash can lose the
        // last one): what was compacted was applied, so raft starts there
        // at least (as a shard does).
        let applied = state.applied.min(commit).min(last).max(compacted);
        let raw = RawNode::new(
            &raft_config(config, applied),
            storage,
            &crate::logging::raft_logger(config.node_id, CLUSTER_GROUP),
        )?;
        *lock(&published) = Arc::new(state.clone());
        on_change(&state);
        Ok(ClusterGroup {
            raw,
            state,
            state_path,
            inline,
            published,
            on_change,
            commit_unsaved: false,
        })
    }

    /// The group as callers see it (`shard` is [`CLUSTER_GROUP`]).
    pub fn status(&self) -> ShardStatus {
        raft_status(&self.raw, CLUSTER_GROUP, self.state.applied)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == raft::StateRole::Leader
    }

    /// Proposes `command`; a follower's raft forwards it to the leader (a
    /// command is idempotent and its proposer watches the state for it, so
    /// one lost on the way is simply proposed again).
    pub fn propose(&mut self, command: &ClusterCommand) {
        if self.raw.raft.leader_id == 0 {
            return;
        }
        if let Err(e) = self.raw.propose(Vec::new(), command.encode()) {
            tracing::debug!(error = %e, "cluster group: proposal dropped");
        }
    }

    /// Applies committed entries: membership changes to raft, commands to
    /// the state, which is stored before raft is told they are applied.
    pub fn hand_committed(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let (last_index, last_term) = (last.index, last.term);
        crate::membership::apply_committed(&mut self.raw, CLUSTER_GROUP, &entries);
        let mut changed = false;
        let applied = self.state.applied;
        for entry in entries.iter().filter(|e| e.index > applied) {
            changed |= self.apply_entry(entry);
        }
        self.state.applied = self.state.applied.max(last_index);
        self.store(last_term, changed)?;
        self.raw.advance_apply();
        Ok(())
    }

    fn apply_entry(&mut self, entry: &Entry) -> bool {
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return false;
        }
        let outcome = ClusterCommand::decode(&entry.data)
            .map_err(|e| e.to_string())
            .and_then(|command| self.state.apply(entry.index, &command));
        match outcome {
            Ok(changed) => changed,
            Err(reason) => {
                tracing::warn!(index = entry.index, %reason, "cluster group: entry not applied");
                false
            }
        }
    }

    /// Installs a snapshot a leader sent: the state it carries replaces
    /// this node's, then raft's log restarts after it.
    pub fn install(&mut self, snapshot: &Snapshot) -> Result<()> {
        let metadata = snapshot.get_metadata();
        let mut state = ClusterState::decode(&snapshot.data).map_err(|e| {
            Error::Config(format!("cluster group snapshot at {}: {e}", metadata.index))
        })?;
        state.applied = metadata.index;
        tracing::info!(
            index = metadata.index,
            members = state.members.len(),
            "cluster group: installing the leader's state"
        );
        self.state = state;
        self.store(metadata.term, true)?;
        self.raw.mut_store().apply_snapshot(snapshot)
    }

    /// Drops the log up to the stored state (a member behind it is sent
    /// the state itself).
    pub fn compact(&mut self) -> Result<()> {
        let applied = self.state.applied;
        self.raw.mut_store().compact_to(applied)
    }

    fn store(&mut self, term: u64, changed: bool) -> Result<()> {
        let data = self.state.encode();
        store_state(&self.state_path, term, &data)?;
        *lock(&self.inline) = InlineSnapshot {
            index: self.state.applied,
            term,
            data,
        };
        *lock(&self.published) = Arc::new(self.state.clone());
        if changed {
            (self.on_change)(&self.state);
        }
        Ok(())
    }
}

fn store_state(path: &Path, term: u64, body: &[u8]) -> Result<()> {
    assert!(
        body.len() <= MAX_STATE_BYTES,
        "a cluster state of {} bytes: at most 1024 members of bounded size fit in {MAX_STATE_BYTES}",
        body.len()
    );
    let mut out = Vec::with_capacity(STATE_HEADER_BYTES + body.len() + 4);
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    write_atomically(path, &out)
}

/// The state file's term and state, or `None` when there is none.
fn load_state(path: &Path) -> Result<Option<(u64, ClusterState)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let bad = |offset: usize, reason: &str| Error::corruption(path, offset as u64, reason);
    if bytes.len() < STATE_HEADER_BYTES + 4 || bytes[..8] != STATE_MAGIC {
        return Err(bad(0, "not a cluster state file"));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = u32_at(8);
    if version != STATE_VERSION && version != STATE_VERSION_V1 {
        return Err(bad(8, &format!("unknown version {version}")));
    }
    let mut term = [0u8; 8];
    term.copy_from_slice(&bytes[12..20]);
    let body_len = u32_at(20) as usize;
    if body_len > MAX_STATE_BYTES || STATE_HEADER_BYTES + body_len + 4 != bytes.len() {
        return Err(bad(20, "body length does not match the file"));
    }
    let crc_at = STATE_HEADER_BYTES + body_len;
    if crc32fast::hash(&bytes[..crc_at]) != u32_at(crc_at) {
        return Err(bad(crc_at, "checksum mismatch"));
    }
    let body = &bytes[STATE_HEADER_BYTES..crc_at];
    let state = if version == STATE_VERSION_V1 {
        ClusterState::decode_v1(body)
    } else {
        ClusterState::decode(body)
    }
    .map_err(|e| bad(STATE_HEADER_BYTES, &e.to_string()))?;
    Ok(Some((u64::from_le_bytes(term), state)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemberInfo;

    #[test]
    fn the_state_file_round_trips_and_every_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert!(load_state(&path).unwrap().is_none());
        let mut state = ClusterState::default();
        let member = MemberInfo {
            node_id: 7,
            fabric_addr: "127.0.0.1:3001".parse().unwrap(),
            service_addr: "127.0.0.1:3000".into(),
        };
        state.apply(5, &ClusterCommand::Join(member)).unwrap();
        store_state(&path, 3, &state.encode()).unwrap();
        assert_eq!(load_state(&path).unwrap(), Some((3, state)));
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(load_state(&path).is_err(), "flipped byte {at}");
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(load_state(&path).is_err(), "cut at {len}");
        }
    }
}
