//! Aerie's shards: the 4096 partitions split into raft groups whose logs live
//! in the node's WAL and whose state machine is the engine.
//!
//! What is here so far:
//! * [`codec`]: the bytes of a log entry (the only module that names
//!   `bincode`); point-in-time recovery decodes archived entries with it.
//! * [`shards`]: which partitions a shard owns, and its log and stream ids.

pub mod codec;
pub mod shards;
