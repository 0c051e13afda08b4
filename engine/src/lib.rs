//! Aerie's record store: Aerospike's record model on log-structured write
//! blocks, with the primary index in RAM.
//!
//! (Crate documentation is completed in a later step.)

mod blocks;
mod checkpoint;
mod config;
mod engine;
mod error;
pub mod format;
mod index;
pub mod model;
mod namespace;
mod recovery;
mod semantics;
mod types;
mod view;

pub use blocks::BlockState;
pub use config::{EngineConfig, NamespaceConfig, ReadMode};
pub use engine::{BlockStats, CheckpointStats, Engine, NamespaceStats, RecoveryReport};
pub use error::{Error, Result};
pub use namespace::{Counters, DefragProgress};
pub use recovery::NsRecovery;
pub use types::*;
pub use view::{PartitionSummary, ScanPage, View};
