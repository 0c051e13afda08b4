//! The `aerie` binary's library: the data directory layout and the commands
//! (`aerie wal`, `aerie snapshot`, `aerie restore`). The node arrives with the
//! node issue.

pub mod datadir;
pub mod error;
pub mod progress;
pub mod restore;
pub mod snapshot_cmd;
pub mod wal_cmd;
