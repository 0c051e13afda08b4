//! Helpers shared by the WAL's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aerie_wal::{EntryRef, IoBackend, LogBatch, Wal, WalConfig};
use std::path::Path;

/// The payload every test writes for `(stream, index, term)`: its length and
/// bytes depend on all three, so a misplaced or half-written entry shows.
pub fn payload(stream: u64, index: u64, term: u64) -> Vec<u8> {
    let len = ((stream * 31 + index * 7 + term) % 200) as usize + 1;
    let seed = stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ term;
    (0..len)
        .map(|i| (seed.wrapping_add(i as u64 * 0x94d0_49bb) >> 24) as u8)
        .collect()
}

/// Small segments so tests rotate, purge and recycle.
pub fn small_config(dir: &Path, backend: IoBackend) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.segment_size_bytes = 64 << 10;
    config.max_entry_bytes = 8 << 10;
    config.io_backend = backend;
    config
}

/// The backends to test: sync always; io_uring when this kernel allows it.
pub fn backends() -> Vec<IoBackend> {
    let mut backends = vec![IoBackend::Sync];
    if aerie_wal::fs::UringFs::probe().is_ok() {
        backends.push(IoBackend::Uring);
    } else {
        eprintln!("io_uring is not usable here: testing the sync backend only");
    }
    backends
}

/// Appends `count` entries from `first` in `term`.
pub fn append(wal: &Wal, stream: u64, first: u64, count: u64, term: u64) -> aerie_wal::Result<()> {
    let payloads: Vec<Vec<u8>> = (first..first + count)
        .map(|i| payload(stream, i, term))
        .collect();
    let entries: Vec<EntryRef<'_>> = payloads
        .iter()
        .zip(first..)
        .map(|(p, index)| EntryRef {
            index,
            term,
            payload: p,
        })
        .collect();
    let mut batch = LogBatch::new();
    batch.append(stream, &entries)?;
    wal.write(batch)
}

/// Every entry of a stream.
pub fn all_entries(wal: &Wal, stream: u64) -> Vec<aerie_wal::Entry> {
    let (first, last) = (wal.first_index(stream), wal.last_index(stream));
    wal.entries(stream, first, last + 1, u64::MAX).unwrap()
}
