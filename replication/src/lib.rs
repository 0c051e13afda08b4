//! Aerie's shards: the 4096 partitions split into raft groups whose logs live
//! in the node's WAL and whose state machine is the engine.

mod apply;
pub mod codec;
mod error;
mod install;
mod logging;
pub mod meta;
mod node;
pub mod shards;
pub mod storage;
pub mod transport;

pub use error::{Error, Result};

pub use apply::SnapshotPolicy;
pub use node::{Node, NodeConfig, NodeParts, ReadConsistency, ShardStatus, now_ms};
