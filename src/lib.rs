//! The `aerie` binary's library: the data directory layout and the commands
//! (`aerie node`, `aerie wal`, `aerie snapshot`, `aerie restore`).

pub mod bench;
pub mod client;
pub mod cluster_cmd;
pub mod datadir;
pub mod error;
pub mod info_cmd;
pub mod node;
pub mod progress;
pub mod restore;
pub mod snapshot_cmd;
pub mod wal_cmd;
