//! The per-shard raft metadata the WAL does not hold: the compaction point (or
//! installed snapshot) with its term, the membership, and whether a log reset
//! (after a snapshot install) still has to be written. One small file per
//! shard, `<raft-dir>/shard-<id:05>.meta`, replaced atomically (temp file,
//! fsync, rename, directory fsync).
//!
//! Layout (little-endian): magic `AERIERFT` (8), version u32 = 1, snapshot
//! index u64, snapshot term u64, reset pending u8 (0/1), voter count u32 then
//! u64 ids, learner count u32 then u64 ids, CRC-32 of everything before (4).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"AERIERFT";
const VERSION: u32 = 1;
/// Largest membership a file may list.
const MAX_MEMBERS: usize = 1024;

/// What one shard's meta file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftMeta {
    /// Entries up to here are gone from the log (compacted, or replaced by an
    /// installed snapshot); the raft log starts after it.
    pub snapshot_index: u64,
    /// The term of `snapshot_index`.
    pub snapshot_term: u64,
    /// An installed snapshot whose log reset has not been written yet.
    pub reset_pending: bool,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
}

/// The meta file of `shard` in `dir`.
pub fn meta_path(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("shard-{shard:05}.meta"))
}

impl RaftMeta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 8 * (self.voters.len() + self.learners.len()));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.snapshot_index.to_le_bytes());
        out.extend_from_slice(&self.snapshot_term.to_le_bytes());
        out.push(u8::from(self.reset_pending));
        for ids in [&self.voters, &self.learners] {
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(&id.to_le_bytes());
            }
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
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(bad(0, "bad magic"));
        }
        let u64_at = |at: usize| take::<8>(bytes, at).map(u64::from_le_bytes);
        let u32_at = |at: usize| take::<4>(bytes, at).map(u32::from_le_bytes);
        if u32_at(8) != Some(VERSION) {
            return Err(bad(8, "unsupported version"));
        }
        let short = || bad(12, "file too short");
        let mut meta = RaftMeta {
            snapshot_index: u64_at(12).ok_or_else(short)?,
            snapshot_term: u64_at(20).ok_or_else(short)?,
            reset_pending: *bytes.get(28).ok_or_else(short)? == 1,
            ..RaftMeta::default()
        };
        let mut at = 29;
        for ids in [&mut meta.voters, &mut meta.learners] {
            let count = u32_at(at).ok_or_else(short)? as usize;
            if count > MAX_MEMBERS || at + 4 + 8 * count > body_len {
                return Err(bad(at, "member count out of bounds"));
            }
            at += 4;
            for _ in 0..count {
                ids.push(u64_at(at).ok_or_else(short)?);
                at += 8;
            }
        }
        if at != body_len {
            return Err(bad(at, "trailing bytes"));
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
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = path.with_extension("meta.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&self.encode())
            .map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
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
        let meta = RaftMeta {
            snapshot_index: 77,
            snapshot_term: 4,
            reset_pending: true,
            voters: vec![1, 2, 3],
            learners: vec![9],
        };
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
}
