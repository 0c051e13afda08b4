//! Damaged replicas, and how each is rebuilt from a healthy member.
//!
//! Who marks a shard's replica on this node damaged ([`Damage::mark`]):
//! * the shard's apply loop, when a committed entry fails in the engine with
//!   [`aerie_engine::Error::Corruption`] (a record it must read is damaged),
//!   or when a consistency check ([`crate::check`]) finds this copy in the
//!   minority;
//! * a check's summing thread, when a record of the copy fails its CRC;
//! * the node's request handler, when a client read meets a damaged record
//!   ([`crate::Node::report_damage`]).
//!
//! The ready loop then rebuilds it ([`ReadyLoop::repair_damaged`], every
//! tick): a leader hands the shard to its most caught-up other voter first;
//! a follower asks its leader for a snapshot (raft-rs `request_snapshot`:
//! the leader sends one at or past the follower's last index, taking a new
//! one if its newest is older). The follower takes no new entries until the
//! snapshot is installed; the install replaces the shard's partitions
//! wholesale, its log after the snapshot is kept. This is safe whatever was
//! damaged in the engine: the snapshot's index is committed, and the raft
//! log and hard state (the votes) are untouched. Once installed, the mark
//! is cleared and the rebuild counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft::INVALID_INDEX;

use crate::check::Verdict;
use crate::lock;
use crate::ready::{ReadyLoop, most_caught_up_voter};

/// A damaged shard asks again (a transfer, a snapshot) at most this often.
const REPAIR_RETRY_MS: u64 = 1_000;

/// The damaged shards of this node and the counters operators see.
#[derive(Debug)]
pub struct Damage {
    shards: Vec<Mutex<Option<Marked>>>,
    verdicts: Vec<Mutex<Option<Judged>>>,
    found: AtomicU64,
    checks: AtomicU64,
    mismatches: AtomicU64,
    rebuilds: AtomicU64,
}

#[derive(Debug, Clone)]
struct Marked {
    reason: String,
    since: Instant,
}

/// The last consistency check of a shard judged on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The check.
    pub id: u64,
    /// The log index of its `Check` entry.
    pub index: u64,
    /// Its outcome.
    pub verdict: Verdict,
}

/// What [`Damage::counters`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DamageCounters {
    /// Replicas marked damaged since the node started.
    pub found: u64,
    /// Consistency checks judged here.
    pub checks: u64,
    /// Checks whose replicas differed (on any member).
    pub mismatches: u64,
    /// Damaged replicas of this node rebuilt from a snapshot.
    pub rebuilds: u64,
}

impl Damage {
    /// No shard damaged, for `shards` shards.
    pub fn new(shards: u32) -> Damage {
        Damage {
            shards: (0..shards).map(|_| Mutex::new(None)).collect(),
            verdicts: (0..shards).map(|_| Mutex::new(None)).collect(),
            found: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        }
    }

    /// Marks this node's replica of `shard` damaged (the first reason is
    /// kept until it is rebuilt).
    pub fn mark(&self, shard: u32, reason: &str) {
        let Some(slot) = self.shards.get(shard as usize) else {
            return;
        };
        let mut slot = lock(slot);
        if slot.is_none() {
            tracing::error!(
                shard,
                reason,
                "this node's replica of the shard is damaged; rebuilding it from a healthy member"
            );
            self.found.fetch_add(1, Ordering::Relaxed);
            *slot = Some(Marked {
                reason: reason.to_string(),
                since: Instant::now(),
            });
        }
    }

    /// Why `shard`'s replica here is damaged, if it is.
    pub fn reason(&self, shard: u32) -> Option<String> {
        let slot = self.shards.get(shard as usize)?;
        lock(slot).as_ref().map(|m| m.reason.clone())
    }

    /// Whether `shard`'s replica here is damaged.
    pub fn is_damaged(&self, shard: u32) -> bool {
        self.shards
            .get(shard as usize)
            .is_some_and(|slot| lock(slot).is_some())
    }

    /// The damaged shards.
    pub fn damaged(&self) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|s| self.is_damaged(*s))
            .collect()
    }

    /// The replica was rebuilt: clears the mark, counts it; returns how long
    /// it was damaged.
    fn rebuilt(&self, shard: u32) -> Option<Duration> {
        let marked = lock(self.shards.get(shard as usize)?).take()?;
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        Some(marked.since.elapsed())
    }

    /// A consistency check of `shard` was judged here.
    pub fn note_check(&self, shard: u32, judged: Judged) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if judged.verdict != Verdict::Agree {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(slot) = self.verdicts.get(shard as usize) {
            *lock(slot) = Some(judged);
        }
    }

    /// The last check of each shard judged here (`None`: none yet).
    pub fn verdicts(&self) -> Vec<Option<Judged>> {
        self.verdicts.iter().map(|v| lock(v).clone()).collect()
    }

    /// The counters.
    pub fn counters(&self) -> DamageCounters {
        DamageCounters {
            found: self.found.load(Ordering::Relaxed),
            checks: self.checks.load(Ordering::Relaxed),
            mismatches: self.mismatches.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }
}

impl ReadyLoop {
    /// One step toward rebuilding each damaged shard (see the module docs).
    pub(crate) fn repair_damaged(&mut self) {
        let me = self.config.node_id;
        for shard in &mut self.shards {
            if !self.damage.is_damaged(shard.id)
                || shard.is_frozen()
                || shard
                    .repair_asked
                    .is_some_and(|at| at.elapsed() < Duration::from_millis(REPAIR_RETRY_MS))
            {
                continue;
            }
            shard.repair_asked = Some(Instant::now());
            if shard.is_leader() {
                match most_caught_up_voter(&shard.status(), me, |_| true) {
                    Some(to) => shard.raw.transfer_leader(to),
                    None => tracing::warn!(
                        shard = shard.id,
                        "the damaged replica is the shard's only voter: nothing to rebuild it from"
                    ),
                }
            } else if shard.raw.raft.leader_id != 0
                && shard.raw.raft.pending_request_snapshot == INVALID_INDEX
            {
                match shard.raw.request_snapshot() {
                    Ok(()) => tracing::info!(
                        shard = shard.id,
                        leader = shard.raw.raft.leader_id,
                        "asked the leader for a snapshot to rebuild the damaged replica"
                    ),
                    Err(e) => {
                        tracing::debug!(shard = shard.id, error = %e, "snapshot request not sent yet")
                    }
                }
            }
        }
    }

    /// A snapshot was installed into `shard`: if its replica was damaged,
    /// it is whole again.
    pub(crate) fn note_rebuilt(&mut self, shard: u32, index: u64, file_bytes: u64) {
        if let Some(took) = self.damage.rebuilt(shard) {
            tracing::info!(
                shard,
                index,
                file_bytes,
                took_ms = took.as_millis() as u64,
                "the damaged replica was rebuilt from a snapshot"
            );
        }
    }
}
