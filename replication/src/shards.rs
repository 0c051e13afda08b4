//! Partitions to shards: shard `s` of `n` owns a contiguous range of the 4096
//! partitions, the ranges differing in size by at most one. The mapping is a
//! pure function of `n`, so it is stable across restarts as long as `n` (kept
//! in the cluster metadata) is.

use aerie_engine::PARTITION_COUNT;

/// Most shards a node can split the partitions into.
pub const MAX_SHARDS: u32 = PARTITION_COUNT as u32;

/// The partition-to-shard mapping of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    shards: u32,
}

impl ShardMap {
    /// A map into `shards` shards (1..=4096).
    pub fn new(shards: u32) -> Result<ShardMap, String> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(format!("shards must be 1..={MAX_SHARDS}, not {shards}"));
        }
        Ok(ShardMap { shards })
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    fn start(&self, shard: u32) -> u32 {
        // Exact: shard * 4096 fits in u64 and the division spreads remainders.
        ((u64::from(shard) * PARTITION_COUNT as u64) / u64::from(self.shards)) as u32
    }

    /// The partitions of `shard`, ascending (empty for a shard out of range).
    pub fn partitions(&self, shard: u32) -> Vec<u16> {
        if shard >= self.shards {
            return Vec::new();
        }
        (self.start(shard)..self.start(shard + 1))
            .map(|p| p as u16)
            .collect()
    }

    /// The shard owning `partition` (below 4096).
    pub fn shard_of(&self, partition: u16) -> u32 {
        let p = u64::from(partition);
        // The largest s with start(s) <= p.
        (((p + 1) * u64::from(self.shards)).div_ceil(PARTITION_COUNT as u64) as u32)
            .saturating_sub(1)
            .min(self.shards - 1)
    }
}

/// The engine log a shard applies through (log 0 is the engine's own).
pub fn log_id(shard: u32) -> u64 {
    u64::from(shard) + 1
}

/// The WAL stream holding a shard's raft log.
pub fn stream_id(shard: u32) -> u64 {
    u64::from(shard) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_belongs_to_exactly_the_shard_that_lists_it() {
        for n in [1, 2, 3, 7, 16, 100, 4095, 4096] {
            let map = ShardMap::new(n).unwrap();
            let mut seen = 0usize;
            for shard in 0..n {
                let parts = map.partitions(shard);
                assert!(!parts.is_empty());
                for p in &parts {
                    assert_eq!(map.shard_of(*p), shard, "n={n} p={p}");
                }
                seen += parts.len();
            }
            assert_eq!(seen, PARTITION_COUNT);
        }
        assert!(ShardMap::new(0).is_err());
        assert!(ShardMap::new(4097).is_err());
    }
}
