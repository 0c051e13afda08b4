//! raft-rs logs through `slog`; this drain forwards its records to `tracing`
//! (raft's chatter at debug, its warnings and errors as such).

use slog::{Drain, Level, OwnedKVList, Record};

/// A `slog` drain that writes into `tracing`.
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{}", record.msg()),
            Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            Level::Info | Level::Debug | Level::Trace => {
                tracing::debug!(target: "raft", "{}", record.msg());
            }
        }
        Ok(())
    }
}

/// A logger for one shard's raft group.
pub fn raft_logger(node_id: u64, shard: u32) -> slog::Logger {
    slog::Logger::root(
        TracingDrain.fuse(),
        slog::o!("node" => node_id, "shard" => shard),
    )
}
