//! The bytes of a shard's log entries: the one place that names `bincode`
//! (pinned at 2.0.1; 3.0.0 is a non-working release).
//!
//! A WAL entry's payload is a [`StoredEntry`]: the raft entry's type, data and
//! context. The data of a normal entry that carries a command is a
//! [`Proposal`]; an empty one is a leader's no-op, or, with a context, a
//! [`crate::check::Control`] entry (a consistency check). All start with a version
//! byte, and decoding is bounded by [`MAX_ENTRY_BYTES`]. The cluster
//! group's entries carry a [`crate::cluster::ClusterCommand`] instead, and
//! its snapshots a [`crate::cluster::ClusterState`].

use aerie_engine::Command;
use serde::{Deserialize, Serialize};

/// Version byte in front of every encoded value.
pub const CODEC_VERSION: u8 = 1;
/// Largest payload decoded.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

const LIMIT: usize = MAX_ENTRY_BYTES;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Raft entry types as stored (raft-rs `EntryType` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A normal entry: a proposal, or empty for a leader's no-op.
    Normal,
    /// A membership change (v1).
    ConfChange,
    /// A membership change (v2).
    ConfChangeV2,
}

/// One raft entry as the WAL stores it (index and term are the WAL's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Entry type.
    pub kind: EntryKind,
    /// Entry data.
    pub data: Vec<u8>,
    /// Entry context.
    pub context: Vec<u8>,
}

/// A client command as proposed by the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Ties the applied result back to the waiting client.
    pub id: u64,
    /// The leader's clock when it proposed (Unix ms): the engine's `now`.
    pub now_ms: u64,
    /// The command.
    pub command: Command,
}

/// A value that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {what}: {reason}")]
pub struct DecodeError {
    what: &'static str,
    reason: String,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![CODEC_VERSION];
    // Encoding plain data into a Vec cannot fail; the limit only bounds decoding.
    if let Err(e) =
        bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
    {
        unreachable!("encoding into a Vec failed: {e}");
    }
    out
}

fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let bad = |reason: String| DecodeError { what, reason };
    match bytes.split_first() {
        Some((&CODEC_VERSION, body)) => {
            let (value, used) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| bad(e.to_string()))?;
            if used != body.len() {
                return Err(bad(format!("{} trailing bytes", body.len() - used)));
            }
            Ok(value)
        }
        Some((v, _)) => Err(bad(format!("codec version {v}"))),
        None => Err(bad("no bytes".into())),
    }
}

impl StoredEntry {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a payload.
    pub fn decode(bytes: &[u8]) -> Result<StoredEntry, DecodeError> {
        decode(bytes, "log entry")
    }
}

impl Proposal {
    /// The data bytes of a normal entry.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a normal entry's data.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        decode(bytes, "proposal")
    }

    /// The WAL payload of a normal entry carrying this proposal.
    pub fn to_payload(&self) -> Vec<u8> {
        StoredEntry {
            kind: EntryKind::Normal,
            data: self.encode(),
            context: Vec::new(),
        }
        .encode()
    }
}

/// What a raft snapshot message carries instead of the data: where the
/// follower fetches the snapshot file from (in chunks, over the transport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The node holding the file.
    pub node_id: u64,
    /// Its file name in that node's snapshot directory.
    pub file_name: String,
    /// Its size.
    pub file_bytes: u64,
}

impl SnapshotRef {
    /// The bytes of a raft snapshot's data field.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a raft snapshot's data field.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotRef, DecodeError> {
        decode(bytes, "snapshot reference")
    }
}

impl crate::check::Control {
    /// The context bytes of the empty normal entry that carries it.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an empty normal entry's context.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "shard control entry")
    }
}

impl crate::cluster::ClusterCommand {
    /// The data bytes of a cluster group entry.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a cluster group entry's data.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "cluster command")
    }
}

impl crate::cluster::ClusterState {
    /// The bytes of the cluster state (a raft snapshot's data field in the
    /// cluster group, and the body of its state file).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes the cluster state.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "cluster state")
    }

    /// Decodes a state in the layout of `cluster.state` version 1.
    pub(crate) fn decode_v1(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode::<crate::cluster::ClusterStateV1>(bytes, "cluster state v1").map(Self::from)
    }
}

/// The command a WAL payload carries, with the leader's clock: `None` for
/// no-ops and membership changes. Point-in-time recovery's decoder.
pub fn command_of(payload: &[u8]) -> Result<Option<(u64, Command)>, DecodeError> {
    let entry = StoredEntry::decode(payload)?;
    if entry.kind != EntryKind::Normal || entry.data.is_empty() {
        return Ok(None);
    }
    let proposal = Proposal::decode(&entry.data)?;
    Ok(Some((proposal.now_ms, proposal.command)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerie_engine::{Bin, Put, Value, Write};

    #[test]
    fn proposals_round_trip_and_damage_is_an_error() {
        let proposal = Proposal {
            id: 9,
            now_ms: 1_700_000_000_000,
            command: Command::Put(Put {
                write: Write::new("test", [3; 20]),
                bins: vec![Bin::new("a", Value::Int(1))],
            }),
        };
        let payload = proposal.to_payload();
        assert_eq!(
            command_of(&payload),
            Ok(Some((proposal.now_ms, proposal.command.clone())))
        );
        for len in 0..payload.len() {
            assert!(command_of(&payload[..len]).is_err(), "{len}");
        }
        let noop = StoredEntry {
            kind: EntryKind::Normal,
            data: Vec::new(),
            context: Vec::new(),
        };
        assert_eq!(command_of(&noop.encode()), Ok(None));
        let mut bad = payload.clone();
        bad[0] = 7;
        assert!(command_of(&bad).is_err());
    }
}
