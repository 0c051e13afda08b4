//! The in-RAM primary index: per partition, a dense vector of 40-byte entries
//! and an open-addressing table of u32 slots pointing into it.
//!
//! Why not `HashMap<Digest, Entry>`: with 20-byte keys and 24-byte values a
//! hashbrown map costs 45 bytes per bucket and runs between 44% and 87% full,
//! so 52–100 bytes per record. Here an entry is 40 bytes in a vector grown by
//! 1/8 at a time, and a slot is 4 bytes in a table kept 70–87% full (grown by
//! 1/4, positioned by multiply-shift so any size works): about 46 bytes per
//! record. The hash is the digest's own bytes (it is already RIPEMD-160) mixed
//! with a random per-process seed so crafted keys cannot pile into one run.

use crate::types::{Digest, PARTITION_COUNT, partition_of};

/// One record's index entry: where its newest version is and what a header-only
/// read needs. A tombstone has generation 0 (live records never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Digest.
    pub digest: Digest,
    /// Write block holding the version.
    pub block_id: u32,
    /// Byte offset of the version in the block.
    pub offset: u32,
    /// Encoded length of the version.
    pub len_bytes: u32,
    /// Void time (seconds since 2010, 0 = never).
    pub void_time: u32,
    /// Generation; 0 marks a tombstone.
    pub generation: u16,
    /// Set id in the namespace's set table (0 = no set).
    pub set_id: u16,
}

impl Entry {
    /// True if this entry is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.generation == 0
    }
}

const EMPTY: u32 = u32::MAX;
/// Grow the slot table when more than 7/8 full.
const MAX_LOAD_EIGHTHS: usize = 7;

/// One partition's index.
#[derive(Debug, Default, Clone)]
pub struct PartitionIndex {
    entries: Vec<Entry>,
    slots: Vec<u32>,
}

fn hash(digest: &Digest, seed: u64) -> u64 {
    // Bytes 0..2 choose the partition; 4..12 are independent of them.
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[4..12]);
    let h = (u64::from_le_bytes(word) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

fn home(h: u64, slot_count: usize) -> usize {
    ((u128::from(h) * slot_count as u128) >> 64) as usize
}

/// The slot after `pos`, wrapping (a compare, not a division: this is on the
/// read path).
fn next_slot(pos: usize, slot_count: usize) -> usize {
    if pos + 1 == slot_count { 0 } else { pos + 1 }
}

impl PartitionIndex {
    /// Entries, in no particular order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries (live records and tombstones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Slot position holding `digest`, if present.
    fn find(&self, digest: &Digest, seed: u64) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let mut pos = home(hash(digest, seed), n);
        loop {
            let slot = self.slots[pos];
            if slot == EMPTY {
                return None;
            }
            if self.entries[slot as usize].digest == *digest {
                return Some(pos);
            }
            pos = next_slot(pos, n);
        }
    }

    /// The entry for `digest`.
    pub fn get(&self, digest: &Digest, seed: u64) -> Option<&Entry> {
        let pos = self.find(digest, seed)?;
        Some(&self.entries[self.slots[pos] as usize])
    }

    /// Inserts or replaces; returns the previous entry.
    pub fn insert(&mut self, entry: Entry, seed: u64) -> Option<Entry> {
        if let Some(pos) = self.find(&entry.digest, seed) {
            let slot = &mut self.entries[self.slots[pos] as usize];
            return Some(std::mem::replace(slot, entry));
        }
        if (self.entries.len() + 1) * 8 > self.slots.len() * MAX_LOAD_EIGHTHS {
            self.grow_slots(seed);
        }
        if self.entries.len() == self.entries.capacity() {
            // Grow by 1/8: amortised O(1) copies, at most 12.5% slack.
            self.entries.reserve_exact((self.entries.len() / 8).max(4));
        }
        let n = self.slots.len();
        let mut pos = home(hash(&entry.digest, seed), n);
        while self.slots[pos] != EMPTY {
            pos = next_slot(pos, n);
        }
        self.slots[pos] = self.entries.len() as u32;
        self.entries.push(entry);
        None
    }

    fn grow_slots(&mut self, seed: u64) {
        let n = (self.slots.len() + self.slots.len() / 4).max(16);
        self.slots = vec![EMPTY; n];
        for (i, e) in self.entries.iter().enumerate() {
            let mut pos = home(hash(&e.digest, seed), n);
            while self.slots[pos] != EMPTY {
                pos = next_slot(pos, n);
            }
            self.slots[pos] = i as u32;
        }
    }

    /// Removes `digest`; returns its entry.
    pub fn remove(&mut self, digest: &Digest, seed: u64) -> Option<Entry> {
        let mut hole = self.find(digest, seed)?;
        let index = self.slots[hole] as usize;
        let n = self.slots.len();
        // Backward-shift deletion keeps probe runs unbroken without tombstones.
        let mut next = next_slot(hole, n);
        while self.slots[next] != EMPTY {
            let want = home(
                hash(&self.entries[self.slots[next] as usize].digest, seed),
                n,
            );
            let dist_want = (next + n - want) % n;
            let dist_hole = (next + n - hole) % n;
            if dist_want >= dist_hole {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = next_slot(next, n);
        }
        self.slots[hole] = EMPTY;
        // swap_remove moves the last entry into `index`: repoint its slot.
        let last = self.entries.len() - 1;
        if index != last {
            let last_digest = self.entries[last].digest;
            if let Some(pos) = self.find(&last_digest, seed) {
                self.slots[pos] = index as u32;
            }
        }
        Some(self.entries.swap_remove(index))
    }

    /// Bytes of RAM held (capacity, not length).
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.slots.capacity() * std::mem::size_of::<u32>()
            + std::mem::size_of::<Self>()
    }
}

/// A namespace's index: 4096 partitions.
#[derive(Debug, Clone)]
pub struct Index {
    partitions: Vec<PartitionIndex>,
    seed: u64,
}

impl Index {
    /// An empty index with a random hash seed.
    pub fn new() -> Index {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Index {
            partitions: vec![PartitionIndex::default(); PARTITION_COUNT],
            seed,
        }
    }

    /// Entry for a digest.
    pub fn get(&self, digest: &Digest) -> Option<&Entry> {
        self.partitions[usize::from(partition_of(digest))].get(digest, self.seed)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let p = usize::from(partition_of(&entry.digest));
        self.partitions[p].insert(entry, self.seed)
    }

    /// Removes.
    pub fn remove(&mut self, digest: &Digest) -> Option<Entry> {
        self.partitions[usize::from(partition_of(digest))].remove(digest, self.seed)
    }

    /// One partition.
    pub fn partition(&self, partition: u16) -> &PartitionIndex {
        &self.partitions[usize::from(partition) % PARTITION_COUNT]
    }

    /// All entries, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.partitions.iter().flat_map(|p| p.entries.iter())
    }

    /// Total entries.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(PartitionIndex::len).sum()
    }

    /// RAM held by the index.
    pub fn memory_bytes(&self) -> usize {
        self.partitions
            .iter()
            .map(PartitionIndex::memory_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn digest(i: u32) -> Digest {
        let mut d = [0u8; 20];
        d[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_le_bytes());
        d[4..8].copy_from_slice(&i.to_le_bytes());
        d[8..12].copy_from_slice(&(i ^ 0x5555).to_le_bytes());
        d
    }

    fn entry(i: u32) -> Entry {
        Entry {
            digest: digest(i),
            block_id: i,
            offset: i * 2,
            len_bytes: 100,
            void_time: 0,
            generation: 1,
            set_id: 0,
        }
    }

    #[test]
    fn entry_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn matches_hashmap_under_random_inserts_and_removes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut p = PartitionIndex::default();
        let mut model = HashMap::new();
        for step in 0..20_000u32 {
            let i = rng.random_range(0..2_000u32);
            if rng.random_bool(0.6) {
                let mut e = entry(i);
                e.offset = step;
                assert_eq!(p.insert(e, 99), model.insert(e.digest, e));
            } else {
                assert_eq!(p.remove(&digest(i), 99), model.remove(&digest(i)));
            }
        }
        assert_eq!(p.len(), model.len());
        for (d, e) in &model {
            assert_eq!(p.get(d, 99), Some(e));
        }
        for i in 0..2_000 {
            assert_eq!(
                p.get(&digest(i), 99).is_some(),
                model.contains_key(&digest(i))
            );
        }
    }
}
