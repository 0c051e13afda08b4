//! The per-shard raft metadata the WAL does not hold: the compaction point (or
//! installed snapshot) with its term, the membership history, and whether a
//! log reset (after a snapshot install) still has to be written. One small
//! file per shard, `<raft-dir>/shard-<id:05>.meta`, replaced atomically (temp
//! file, fsync, rename, directory fsync).
//!
//! The membership is kept as a short history of `(index, ConfState)`: the
//! configuration in force from each membership entry on (index 0: the one the
//! shard was created with). The newest is what raft starts with; a snapshot
//! sent at index `i` carries the newest at or below `i` (raft requires the
//! configuration *at* the snapshot's index, and a membership entry may sit
//! between the snapshot and the last applied entry). Entries older than the
//! newest at or below the compaction point are dropped: no snapshot below the
//! compaction point is ever sent.
//!
//! Layout v2 (little-endian): magic `AERIERFT` (8), version u32 = 2, snapshot
//! index u64, snapshot term u64, reset pending u8 (0/1), membership count u32,
//! then per membership: index u64, four id lists (voters, learners,
//! outgoing voters, next learners) each a u32 count then u64 ids, auto-leave
//! u8 (0/1); then CRC-32 of everything before (4). Version 1 (one voter and
//! one learner list after reset pending) is still read, as a history of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use raft::prelude::ConfState;

use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"AERIERFT";
const VERSION_1: u32 = 1;
const VERSION: u32 = 2;
/// Largest id list a file may hold.
const MAX_MEMBERS: usize = 1024;
/// Most memberships a history keeps (membership changes are rare and the
/// history is trimmed at every compaction; past this the oldest go).
pub const MAX_MEMBERSHIPS: usize = 64;

/// A configuration and the index of the entry it took effect at.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// The membership entry's index (0: the shard's first configuration).
    pub index: u64,
    /// The configuration from then on.
    pub conf: ConfState,
}

/// What one shard's meta file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftMeta {
    /// Entries up to here are gone from the log (compacted, or replaced by an
    /// installed snapshot); the raft log starts after it.
    pub snapshot_index: u64,
    /// The term of `snapshot_index`.
    pub snapshot_term: u64,
    /// An installed snapshot whose log reset has not been written yet.
    pub reset_pending: bool,
    /// Configurations by the index they took effect at, oldest first; never
    /// empty once stored.
    pub memberships: Vec<Membership>,
}

/// The meta file of `shard` in `dir`.
pub fn meta_path(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("shard-{shard:05}.meta"))
}

fn push_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// A bounds-checked reader over a meta file's body.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn bad(&self, reason: &str) -> Error {
        Error::corruption(self.path, self.at as u64, reason)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let value = take::<N>(self.bytes, self.at).ok_or_else(|| self.bad("file too short"))?;
        self.at += N;
        Ok(value)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn flag(&mut self) -> Result<bool> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(self.bad("flag is neither 0 nor 1")),
        }
    }

    fn ids(&mut self) -> Result<Vec<u64>> {
        let count = self.u32()? as usize;
        if count > MAX_MEMBERS || self.at + 8 * count > self.bytes.len() {
            return Err(self.bad("member count out of bounds"));
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

impl RaftMeta {
    /// A meta file for a new shard whose first configuration is `voters`.
    pub fn new(voters: Vec<u64>) -> RaftMeta {
        RaftMeta {
            memberships: vec![Membership {
                index: 0,
                conf: ConfState {
                    voters,
                    ..ConfState::default()
                },
            }],
            ..RaftMeta::default()
        }
    }

    /// The meta file at `path`, or (on a group's first start) a new one
    /// whose first configuration is `voters`, stored there.
    pub fn load_or_create(path: &Path, voters: &[u64]) -> Result<RaftMeta> {
        if let Some(meta) = RaftMeta::load(path)? {
            return Ok(meta);
        }
        let meta = RaftMeta::new(voters.to_vec());
        meta.store(path)?;
        Ok(meta)
    }

    /// The configuration in force now (the newest).
    pub fn conf_state(&self) -> ConfState {
        self.memberships
            .last()
            .map(|m| m.conf.clone())
            .unwrap_or_default()
    }

    /// The index of the newest membership entry applied.
    pub fn conf_index(&self) -> u64 {
        self.memberships.last().map_or(0, |m| m.index)
    }

    /// The configuration in force at `index`.
    pub fn conf_state_at(&self, index: u64) -> ConfState {
        self.memberships
            .iter()
            .rev()
            .find(|m| m.index <= index)
            .or_else(|| self.memberships.first())
            .map(|m| m.conf.clone())
            .unwrap_or_default()
    }

    /// Records the configuration `conf` taking effect at `index`.
    pub fn push_membership(&mut self, index: u64, conf: ConfState) {
        self.memberships.retain(|m| m.index < index);
        self.memberships.push(Membership { index, conf });
        if self.memberships.len() > MAX_MEMBERSHIPS {
            let extra = self.memberships.len() - MAX_MEMBERSHIPS;
            self.memberships.drain(..extra);
        }
    }

    /// Replaces the history with one configuration (an installed snapshot's).
    pub fn reset_memberships(&mut self, index: u64, conf: ConfState) {
        self.memberships = vec![Membership { index, conf }];
    }

    /// Drops memberships no snapshot at or above `index` needs.
    pub fn trim_memberships(&mut self, index: u64) {
        let keep_from = self
            .memberships
            .iter()
            .rposition(|m| m.index <= index)
            .unwrap_or(0);
        self.memberships.drain(..keep_from);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 64 * self.memberships.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.snapshot_index.to_le_bytes());
        out.extend_from_slice(&self.snapshot_term.to_le_bytes());
        out.push(u8::from(self.reset_pending));
        out.extend_from_slice(&(self.memberships.len() as u32).to_le_bytes());
        for m in &self.memberships {
            out.extend_from_slice(&m.index.to_le_bytes());
            for ids in [
                &m.conf.voters,
                &m.conf.learners,
                &m.conf.voters_outgoing,
                &m.conf.learners_next,
            ] {
                push_ids(&mut out, ids);
            }
            out.push(u8::from(m.conf.auto_leave));
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<RaftMeta> {
        let bad = |offset: usize, reason: &str| Error::corruption(path, offset as u64, reason);
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or_else(|| bad(0, "file too short"))?;
        let stored = u32::from_le_bytes(take::<4>(bytes, body_len).ok_or_else(|| bad(0, "short"))?);
        if crc32fast::hash(&bytes[..body_len]) != stored {
            return Err(bad(body_len, "CRC mismatch"));
        }
        let mut cursor = Cursor {
            bytes: &bytes[..body_len],
            at: 0,
            path,
        };
        if cursor.array::<8>()? != MAGIC {
            return Err(bad(0, "bad magic"));
        }
        let version = cursor.u32()?;
        let mut meta = RaftMeta {
            snapshot_index: cursor.u64()?,
            snapshot_term: cursor.u64()?,
            reset_pending: cursor.flag()?,
            memberships: Vec::new(),
        };
        match version {
            VERSION_1 => {
                let conf = ConfState {
                    voters: cursor.ids()?,
                    learners: cursor.ids()?,
                    ..ConfState::default()
                };
                meta.memberships.push(Membership { index: 0, conf });
            }
            VERSION => meta.memberships = decode_memberships(&mut cursor)?,
            _ => return Err(bad(8, "unsupported version")),
        }
        if cursor.at != body_len {
            return Err(bad(cursor.at, "trailing bytes"));
        }
        Ok(meta)
    }

    /// Reads the file, or `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<RaftMeta>> {
        match std::fs::read(path) {
            Ok(bytes) => RaftMeta::decode(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Replaces the file atomically and durably.
    pub fn store(&self, path: &Path) -> Result<()> {
        debug_assert!(
            !self.memberships.is_empty(),
            "a meta file without membership"
        );
        write_atomically(path, &self.encode())
    }
}

/// Replaces `path` with `bytes`: a temp file beside it, fsync, rename,
/// directory fsync (a crash leaves the old file or the new one).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn decode_memberships(cursor: &mut Cursor<'_>) -> Result<Vec<Membership>> {
    let count = cursor.u32()? as usize;
    if count == 0 || count > MAX_MEMBERSHIPS {
        return Err(cursor.bad("membership count out of bounds"));
    }
    let mut memberships = Vec::with_capacity(count);
    for _ in 0..count {
        let index = cursor.u64()?;
        if memberships
            .last()
            .is_some_and(|m: &Membership| m.index >= index)
        {
            return Err(cursor.bad("memberships out of order"));
        }
        let conf = ConfState {
            voters: cursor.ids()?,
            learners: cursor.ids()?,
            voters_outgoing: cursor.ids()?,
            learners_next: cursor.ids()?,
            auto_leave: cursor.flag()?,
            ..ConfState::default()
        };
        memberships.push(Membership { index, conf });
    }
    Ok(memberships)
}

fn take<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = meta_path(dir.path(), 3);
        assert_eq!(RaftMeta::load(&path).unwrap(), None);
        let mut meta = RaftMeta {
            snapshot_index: 77,
            snapshot_term: 4,
            reset_pending: true,
            ..RaftMeta::new(vec![1, 2, 3])
        };
        meta.push_membership(
            80,
            ConfState {
                voters: vec![1, 2, 4],
                learners: vec![9],
                voters_outgoing: vec![1, 2, 3],
                learners_next: vec![3],
                auto_leave: false,
                ..ConfState::default()
            },
        );
        meta.store(&path).unwrap();
        assert_eq!(RaftMeta::load(&path).unwrap(), Some(meta));
        let bytes = std::fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(RaftMeta::decode(&bad, &path).is_err(), "{i}");
            assert!(RaftMeta::decode(&bytes[..i], &path).is_err(), "cut {i}");
        }
    }

    #[test]
    fn the_membership_at_an_index_and_trimming() {
        let conf = |v: &[u64]| ConfState {
            voters: v.to_vec(),
            ..ConfState::default()
        };
        let mut meta = RaftMeta::new(vec![1]);
        meta.push_membership(10, conf(&[1, 2]));
        meta.push_membership(20, conf(&[1, 2, 3]));
        assert_eq!(meta.conf_state_at(5).voters, vec![1]);
        assert_eq!(meta.conf_state_at(10).voters, vec![1, 2]);
        assert_eq!(meta.conf_state_at(19).voters, vec![1, 2]);
        assert_eq!(meta.conf_state().voters, vec![1, 2, 3]);
        meta.trim_memberships(15);
        assert_eq!(meta.memberships.len(), 2);
        assert_eq!(meta.conf_state_at(15).voters, vec![1, 2]);
        // A membership entry replayed after a crash replaces what follows it.
        meta.push_membership(20, conf(&[1, 2, 4]));
        assert_eq!(meta.memberships.len(), 2);
        assert_eq!(meta.conf_state().voters, vec![1, 2, 4]);
    }

    #[test]
    fn version_1_files_are_read_as_one_membership() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&MAGIC);
        v1.extend_from_slice(&VERSION_1.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&2u64.to_le_bytes());
        v1.push(0);
        push_ids(&mut v1, &[1, 2]);
        push_ids(&mut v1, &[]);
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let meta = RaftMeta::decode(&v1, Path::new("v1.meta")).unwrap();
        assert_eq!(meta.snapshot_index, 5);
        assert_eq!(meta.conf_state().voters, vec![1, 2]);
        assert_eq!(meta.conf_index(), 0);
    }
}
