//! What operators see of the replica rebuilds on this node (each a snapshot
//! fetched chunk by chunk, then installed): per shard in flight, the bytes
//! fetched of the file's size, the rate and the time left, in log lines
//! (every [`LOG_EVERY_MS`]) and through [`Rebuilds::in_flight`] (for
//! `/metrics` and `cluster-status`); totals since the node started. The
//! fetch is paced to `rebuild_rate_bytes_per_sec` here ([`Pace`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft::{INVALID_INDEX, ProgressState};

use crate::lock;
use crate::ready::ReadyLoop;

/// A rebuild in flight logs its progress this often.
const LOG_EVERY_MS: u64 = 1_000;
/// A learner more entries than this behind its leader's log is sent a
/// snapshot of the leader's committed state instead of the entries: one
/// install of the records costs far less than applying each entry.
pub const FAR_BEHIND_ENTRIES: u64 = 5_000;

/// One snapshot fetch in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InFlight {
    /// Bytes of the file received so far.
    pub fetched_bytes: u64,
    /// The file's size.
    pub file_bytes: u64,
    /// Since when (this attempt).
    pub started: Instant,
}

impl InFlight {
    /// Bytes per second so far.
    pub fn rate_bytes_per_sec(&self) -> f64 {
        self.fetched_bytes as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// The time left at the rate so far (`None` before any byte arrived).
    pub fn time_left(&self) -> Option<Duration> {
        let rate = self.rate_bytes_per_sec();
        (self.fetched_bytes > 0).then(|| {
            Duration::from_secs_f64(
                self.file_bytes.saturating_sub(self.fetched_bytes) as f64 / rate,
            )
        })
    }
}

/// Totals since the node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildTotals {
    /// Snapshot bytes fetched.
    pub bytes: u64,
    /// Records installed.
    pub records: u64,
    /// Snapshots installed.
    pub installed: u64,
}

/// The rebuilds of one node.
#[derive(Debug, Default)]
pub struct Rebuilds {
    in_flight: Mutex<BTreeMap<u32, InFlight>>,
    bytes: AtomicU64,
    records: AtomicU64,
    installed: AtomicU64,
}

impl Rebuilds {
    /// A fetch of `file_bytes` into `shard` starts.
    pub(crate) fn start(&self, shard: u32, file_bytes: u64) {
        let started = Instant::now();
        lock(&self.in_flight).insert(
            shard,
            InFlight {
                fetched_bytes: 0,
                file_bytes,
                started,
            },
        );
    }

    /// `bytes` more of `shard`'s file arrived.
    pub(crate) fn fetched(&self, shard: u32, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(f) = lock(&self.in_flight).get_mut(&shard) {
            f.fetched_bytes += bytes;
        }
    }

    /// `shard`'s fetch ended: `Some(records)` once installed.
    pub(crate) fn finish(&self, shard: u32, installed_records: Option<u64>) {
        lock(&self.in_flight).remove(&shard);
        if let Some(records) = installed_records {
            self.records.fetch_add(records, Ordering::Relaxed);
            self.installed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The fetches in flight, by shard.
    pub fn in_flight(&self) -> BTreeMap<u32, InFlight> {
        lock(&self.in_flight).clone()
    }

    /// The totals.
    pub fn totals(&self) -> RebuildTotals {
        RebuildTotals {
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            installed: self.installed.load(Ordering::Relaxed),
        }
    }

    /// Logs `shard`'s progress if the last line is older than
    /// [`LOG_EVERY_MS`].
    pub(crate) fn log_progress(&self, shard: u32, last_logged: &mut Instant) {
        if last_logged.elapsed() < Duration::from_millis(LOG_EVERY_MS) {
            return;
        }
        *last_logged = Instant::now();
        let Some(f) = lock(&self.in_flight).get(&shard).copied() else {
            return;
        };
        tracing::info!(
            shard,
            fetched_bytes = f.fetched_bytes,
            file_bytes = f.file_bytes,
            rate_mib_per_sec = format!("{:.1}", f.rate_bytes_per_sec() / f64::from(1 << 20)),
            secs_left = f.time_left().map(|t| format!("{:.1}", t.as_secs_f64())),
            "rebuilding a replica from a snapshot"
        );
    }
}

impl ReadyLoop {
    /// On every shard this node leads, a learner far behind
    /// ([`FAR_BEHIND_ENTRIES`]) is sent a snapshot at the commit index
    /// (raft-rs sends one whenever a follower's progress holds a snapshot
    /// request; the storage has the apply loop take a fresh one if the
    /// newest is older). Once per learner and shard, so a learner that falls
    /// behind again under load gets the log, never a loop of snapshots.
    pub(crate) fn snapshot_far_learners(&mut self) {
        for shard in self
            .shards
            .iter_mut()
            .filter(|s| s.is_leader() && !s.is_frozen())
        {
            let learners = shard.raw.store().meta().conf_state().learners;
            shard.snapshot_forced.retain(|id| learners.contains(id));
            let last = shard.raw.raft.raft_log.last_index();
            let committed = shard.raw.raft.raft_log.committed;
            for &learner in &learners {
                if shard.snapshot_forced.contains(&learner) {
                    continue;
                }
                let Some(pr) = shard.raw.raft.mut_prs().get_mut(learner) else {
                    continue;
                };
                if pr.state != ProgressState::Snapshot
                    && pr.pending_request_snapshot == INVALID_INDEX
                    && last.saturating_sub(pr.matched) > FAR_BEHIND_ENTRIES
                    && committed > pr.matched
                {
                    pr.pending_request_snapshot = committed;
                    shard.snapshot_forced.push(learner);
                    tracing::info!(
                        shard = shard.id,
                        learner,
                        matched = pr.matched,
                        last,
                        "a learner far behind is sent a snapshot instead of the log"
                    );
                }
            }
        }
    }
}

/// Paces a fetch to a rate: after each chunk, sleeps as long as the bytes so
/// far are ahead of `bytes_per_sec` (0 = no limit).
#[derive(Debug)]
pub(crate) struct Pace {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub(crate) fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// `bytes` more went by; how long to wait before the next chunk.
    pub(crate) fn after(&mut self, bytes: u64) -> Duration {
        self.bytes += bytes;
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_holds_a_fetch_to_its_rate() {
        let mut pace = Pace::new(1 << 20);
        let wait = pace.after(1 << 20);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert_eq!(Pace::new(0).after(u64::MAX / 2), Duration::ZERO);
    }

    #[test]
    fn progress_is_tracked_until_the_install() {
        let rebuilds = Rebuilds::default();
        rebuilds.start(3, 1000);
        rebuilds.fetched(3, 400);
        let f = rebuilds.in_flight()[&3];
        assert_eq!((f.fetched_bytes, f.file_bytes), (400, 1000));
        assert!(f.time_left().is_some());
        rebuilds.finish(3, Some(12));
        assert!(rebuilds.in_flight().is_empty());
        assert_eq!(
            rebuilds.totals(),
            RebuildTotals {
                bytes: 400,
                records: 12,
                installed: 1
            }
        );
    }
}
