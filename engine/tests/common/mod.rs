//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use aerie_engine::{
    Bin, Command, Digest, Engine, EngineConfig, NamespaceConfig, Put, Record, Value, Write,
    is_expired,
};

pub const NS: &str = "test";
/// 2024-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_704_067_200_000;

pub fn config(dir: &Path, block_size_bytes: u32) -> EngineConfig {
    EngineConfig {
        dir: dir.to_path_buf(),
        namespaces: vec![NamespaceConfig {
            write_block_size_bytes: block_size_bytes,
            post_write_cache_blocks: 2,
            ..NamespaceConfig::named(NS)
        }],
        checkpoint_interval_ms: 0,
        ..EngineConfig::default()
    }
}

/// A digest for `i`, spread over partitions.
pub fn digest(i: u32) -> Digest {
    let mut d = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB);
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    d
}

pub fn put(d: Digest, bins: Vec<Bin>) -> Command {
    Command::Put(Put {
        write: Write::new(NS, d),
        bins,
    })
}

pub fn put_int(i: u32, v: i64) -> Command {
    put(digest(i), vec![Bin::new("v", Value::Int(v))])
}

pub fn delete(d: Digest) -> Command {
    Command::Delete {
        namespace: NS.into(),
        digest: d,
        generation: Default::default(),
    }
}

/// Every record visible at `now_ms`, through a view of all partitions.
pub fn dump(engine: &Engine, now_ms: u64) -> BTreeMap<Digest, Record> {
    let partitions: Vec<u16> = (0..4096).collect();
    let view = engine.view(NS, &partitions).unwrap();
    view.records()
        .map(|r| r.unwrap())
        .filter(|r| !is_expired(r.void_time, now_ms))
        .map(|r| (r.digest, r))
        .collect()
}
