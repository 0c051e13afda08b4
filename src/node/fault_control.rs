//! Disk faults switched on from outside a running node, for the fault
//! harness (`aerie-faults --nemesis disk`). Built only with the
//! `fault-injection` cargo feature: a release binary without it has none of
//! this, and a binary with it does nothing unless `AERIE_FAULT_CONTROL_FILE`
//! names a file.
//!
//! When it does, the node's WAL and engine run on the fault-injecting file
//! layers (`aerie_wal::fault`, `aerie_engine::fault`) and a thread reads the
//! file every [`POLL_INTERVAL_MS`]: its first word is the fault in force,
//! one of [`DiskFault`]'s names (`none`, a missing file or an unknown word
//! switch every fault off). What the node then does is what it does on a
//! real disk fault (README, the failure envelope).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use aerie_engine::fault::{Faults as EngineFaults, FaultyFs as FaultyEngineFs};
use aerie_wal::fault::{Faults as WalFaults, FaultyFs as FaultyWalFs};

use super::Hooks;

/// The environment variable naming the control file.
pub const CONTROL_FILE_ENV: &str = "AERIE_FAULT_CONTROL_FILE";
/// How often the control file is read.
const POLL_INTERVAL_MS: u64 = 100;

/// The faults the control file can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    None,
    /// Every WAL fdatasync fails with EIO (the WAL poisons itself).
    WalFsyncEio,
    /// Every WAL write fails with ENOSPC.
    WalEnospc,
    /// Every engine write fails with ENOSPC (apply stalls and retries).
    EngineEnospc,
    /// Every engine fsync fails with EIO (the engine poisons itself).
    EngineFsyncEio,
}

impl DiskFault {
    /// The fault a control file's text names.
    pub fn parse(text: &str) -> DiskFault {
        match text.split_whitespace().next() {
            Some("wal-fsync-eio") => DiskFault::WalFsyncEio,
            Some("wal-enospc") => DiskFault::WalEnospc,
            Some("engine-enospc") => DiskFault::EngineEnospc,
            Some("engine-fsync-eio") => DiskFault::EngineFsyncEio,
            _ => DiskFault::None,
        }
    }
}

/// The switches of both file layers.
struct Switches {
    wal: Arc<WalFaults>,
    engine: Arc<EngineFaults>,
}

impl Switches {
    fn set(&self, fault: DiskFault) {
        self.wal
            .fail_sync
            .store(fault == DiskFault::WalFsyncEio, SeqCst);
        let wal_budget = match fault {
            DiskFault::WalEnospc => 0,
            _ => u64::MAX,
        };
        self.wal.enospc_after_bytes.store(wal_budget, SeqCst);
        self.engine.set_enospc(fault == DiskFault::EngineEnospc);
        self.engine
            .set_fsync_eio(fault == DiskFault::EngineFsyncEio);
    }
}

/// The hooks for a node: the fault layers and their control thread when
/// `AERIE_FAULT_CONTROL_FILE` is set, none otherwise.
pub fn hooks_from_env() -> Hooks {
    let Some(file) = std::env::var_os(CONTROL_FILE_ENV).map(PathBuf::from) else {
        return Hooks::default();
    };
    let switches = Switches {
        wal: Arc::new(WalFaults::default()),
        engine: EngineFaults::new(),
    };
    let hooks = Hooks {
        engine_fs: Some(Arc::new(FaultyEngineFs::new(switches.engine.clone()))),
        wal_fs: Some(Arc::new(FaultyWalFs::new(
            Arc::new(aerie_wal::fs::SyncFs),
            switches.wal.clone(),
        ))),
        stop: None,
    };
    tracing::warn!(file = %file.display(), "disk fault control file armed (fault-injection build)");
    let spawned = std::thread::Builder::new()
        .name("fault-control".into())
        .spawn(move || poll(&file, &switches));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the fault control thread did not start");
    }
    hooks
}

/// Reads the control file until the process ends, applying each change.
fn poll(file: &Path, switches: &Switches) {
    let mut current = DiskFault::None;
    loop {
        let wanted =
            std::fs::read_to_string(file).map_or(DiskFault::None, |t| DiskFault::parse(&t));
        if wanted != current {
            tracing::warn!(fault = ?wanted, "injected disk fault switched");
            switches.set(wanted);
            current = wanted;
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_names_the_fault_and_anything_else_is_none() {
        assert_eq!(DiskFault::parse("wal-fsync-eio\n"), DiskFault::WalFsyncEio);
        assert_eq!(
            DiskFault::parse(" engine-enospc x"),
            DiskFault::EngineEnospc
        );
        assert_eq!(
            DiskFault::parse("engine-fsync-eio"),
            DiskFault::EngineFsyncEio
        );
        assert_eq!(DiskFault::parse("wal-enospc"), DiskFault::WalEnospc);
        assert_eq!(DiskFault::parse("none"), DiskFault::None);
        assert_eq!(DiskFault::parse(""), DiskFault::None);
        assert_eq!(DiskFault::parse("wal-fsync"), DiskFault::None);
    }
}
