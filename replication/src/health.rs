//! Why writes are refused, node-wide or for one shard: the one place the
//! proposal path asks before anything is appended, so a refusal is always a
//! definite answer (the command surely did not run).
//!
//! Who sets what:
//! * the node's disk watcher sets [`Gate::set_disk_full`] from the free space
//!   of the WAL's and the engine's file systems;
//! * the ready loop sets [`Gate::set_wal_failed`] when a WAL write fails (the
//!   WAL is then poisoned until the node restarts);
//! * each shard's apply loop sets its [`Stall`] while a committed entry keeps
//!   failing in the engine (it retries with backoff) and clears it once the
//!   entry applied;
//! * the engine's own poison (a failed fsync) is read from the engine.

use crate::lock;
use std::sync::Mutex;

use aerie_engine::{Command, Engine};

/// Why a write is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A file system the node writes to is (nearly) full: writes wait for
    /// space, deletes still go through.
    OutOfSpace(String),
    /// The shard's apply loop is retrying an entry the engine failed to
    /// apply (an I/O error); `out_of_space` when that error was ENOSPC.
    Stalled {
        /// The engine's error.
        reason: String,
        /// The error was ENOSPC.
        out_of_space: bool,
    },
    /// The engine is poisoned (a failed fsync): writes need a restart.
    EnginePoisoned(String),
    /// The WAL failed a write or an fdatasync: writes need a restart.
    WalFailed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OutOfSpace(why) => write!(f, "out of disk space: {why}"),
            Refusal::Stalled { reason, .. } => {
                write!(f, "applying a committed entry keeps failing: {reason}")
            }
            Refusal::EnginePoisoned(why) => {
                write!(f, "the engine is poisoned (restart the node): {why}")
            }
            Refusal::WalFailed(why) => write!(f, "the WAL failed (restart the node): {why}"),
        }
    }
}

impl Refusal {
    /// Every kind, as [`Refusal::kind`] names them.
    pub const KINDS: [&'static str; 4] = [
        "out_of_space",
        "apply_stalled",
        "engine_poisoned",
        "wal_failed",
    ];

    /// A short name for metrics and statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::OutOfSpace(_) => "out_of_space",
            Refusal::Stalled { .. } => "apply_stalled",
            Refusal::EnginePoisoned(_) => "engine_poisoned",
            Refusal::WalFailed(_) => "wal_failed",
        }
    }

    /// Out of space, as opposed to a failure that needs a restart.
    pub fn is_out_of_space(&self) -> bool {
        matches!(
            self,
            Refusal::OutOfSpace(_)
                | Refusal::Stalled {
                    out_of_space: true,
                    ..
                }
        )
    }
}

/// A shard's apply loop failing to apply a committed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The entry being retried.
    pub index: u64,
    /// The engine's error.
    pub reason: String,
    /// The error was ENOSPC.
    pub out_of_space: bool,
}

/// Node-wide and per-shard write refusals.
#[derive(Debug)]
pub struct Gate {
    disk_full: Mutex<Option<String>>,
    wal_failed: Mutex<Option<String>>,
    stalls: Vec<Mutex<Option<Stall>>>,
}

/// Commands that free space or change nothing are let through a full disk:
/// deleting is how an operator makes room.
fn frees_space(command: &Command) -> bool {
    matches!(command, Command::Delete { .. } | Command::Truncate { .. })
}

impl Gate {
    /// A gate for `shards` shards, refusing nothing.
    pub fn new(shards: u32) -> Gate {
        Gate {
            disk_full: Mutex::new(None),
            wal_failed: Mutex::new(None),
            stalls: (0..shards).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Sets or clears the node-wide out-of-space refusal.
    pub fn set_disk_full(&self, reason: Option<String>) {
        *lock(&self.disk_full) = reason;
    }

    /// Records that the WAL failed (never cleared: the WAL stays poisoned).
    pub fn set_wal_failed(&self, reason: String) {
        lock(&self.wal_failed).get_or_insert(reason);
    }

    /// Sets or clears `shard`'s stall.
    pub fn set_stall(&self, shard: u32, stall: Option<Stall>) {
        if let Some(slot) = self.stalls.get(shard as usize) {
            *lock(slot) = stall;
        }
    }

    /// `shard`'s stall, if its apply loop is retrying an entry.
    pub fn stall(&self, shard: u32) -> Option<Stall> {
        self.stalls
            .get(shard as usize)
            .and_then(|s| lock(s).clone())
    }

    /// Why `command` must not be proposed to `shard` now, if it must not.
    pub fn refusal(&self, engine: &Engine, shard: u32, command: &Command) -> Option<Refusal> {
        if let Some(why) = lock(&self.wal_failed).clone() {
            return Some(Refusal::WalFailed(why));
        }
        if let Some(why) = engine.poisoned() {
            return Some(Refusal::EnginePoisoned(why));
        }
        if let Some(stall) = self.stall(shard) {
            return Some(Refusal::Stalled {
                reason: stall.reason,
                out_of_space: stall.out_of_space,
            });
        }
        match lock(&self.disk_full).clone() {
            Some(why) if !frees_space(command) => Some(Refusal::OutOfSpace(why)),
            _ => None,
        }
    }

    /// Every refusal in force, for operators (`info statistics`, `/metrics`):
    /// node-wide ones first, then one per stalled shard.
    pub fn report(&self, engine: &Engine) -> Vec<(Option<u32>, Refusal)> {
        let mut out = Vec::new();
        if let Some(why) = lock(&self.wal_failed).clone() {
            out.push((None, Refusal::WalFailed(why)));
        }
        if let Some(why) = engine.poisoned() {
            out.push((None, Refusal::EnginePoisoned(why)));
        }
        if let Some(why) = lock(&self.disk_full).clone() {
            out.push((None, Refusal::OutOfSpace(why)));
        }
        for (shard, slot) in self.stalls.iter().enumerate() {
            if let Some(stall) = lock(slot).clone() {
                let refusal = Refusal::Stalled {
                    reason: format!("entry {}: {}", stall.index, stall.reason),
                    out_of_space: stall.out_of_space,
                };
                out.push((Some(shard as u32), refusal));
            }
        }
        out
    }
}
