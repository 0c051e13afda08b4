//! The record model and the commands applied to it (plain data: the replication
//! layer serialises commands; the engine does not care how).

use serde::{Deserialize, Serialize};

/// RIPEMD-160 digest of (set, key): the record's identity within a namespace.
pub type Digest = [u8; 20];

/// Number of partitions per namespace (Aerospike's).
pub const PARTITION_COUNT: usize = 4096;

/// Partition of a digest: the first two bytes little-endian, masked to 12 bits.
pub fn partition_of(digest: &Digest) -> u16 {
    u16::from_le_bytes([digest[0], digest[1]]) & 0x0FFF
}

/// Aerospike particle type ids (wire spec §5.2).
pub mod particle {
    /// Integer.
    pub const INTEGER: u8 = 1;
    /// Double.
    pub const FLOAT: u8 = 2;
    /// UTF-8 string.
    pub const STRING: u8 = 3;
    /// Generic blob.
    pub const BLOB: u8 = 4;
    /// First language-specific blob type (Java).
    pub const BLOB_FIRST_LANGUAGE: u8 = 7;
    /// Last language-specific blob type (Erlang).
    pub const BLOB_LAST_LANGUAGE: u8 = 12;
    /// Boolean.
    pub const BOOL: u8 = 17;
    /// HyperLogLog.
    pub const HLL: u8 = 18;
    /// msgpack map.
    pub const MAP: u8 = 19;
    /// msgpack list.
    pub const LIST: u8 = 20;
    /// GeoJSON.
    pub const GEOJSON: u8 = 23;

    /// True for the blob particle types (4 and 7..=12).
    pub fn is_blob(particle: u8) -> bool {
        particle == BLOB || (BLOB_FIRST_LANGUAGE..=BLOB_LAST_LANGUAGE).contains(&particle)
    }
}

/// A bin value. Strings are kept as bytes: the engine stores and echoes what the
/// client sent without validating UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value: writing it deletes the bin.
    Nil,
    /// 64-bit integer.
    Int(i64),
    /// Double.
    Float(f64),
    /// String bytes (UTF-8 as sent).
    String(Vec<u8>),
    /// Blob with its particle type (4 or 7..=12), echoed unchanged.
    Blob {
        /// Particle type.
        particle: u8,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// Boolean.
    Bool(bool),
    /// msgpack list, opaque.
    List(Vec<u8>),
    /// msgpack map, opaque.
    Map(Vec<u8>),
    /// GeoJSON particle bytes, opaque.
    GeoJson(Vec<u8>),
    /// HyperLogLog bytes, opaque.
    Hll(Vec<u8>),
}

impl Value {
    /// A string value from text.
    pub fn string(text: &str) -> Value {
        Value::String(text.as_bytes().to_vec())
    }

    /// The Aerospike particle type id.
    pub fn particle_type(&self) -> u8 {
        match self {
            Value::Nil => 0,
            Value::Int(_) => particle::INTEGER,
            Value::Float(_) => particle::FLOAT,
            Value::String(_) => particle::STRING,
            Value::Blob { particle, .. } => *particle,
            Value::Bool(_) => particle::BOOL,
            Value::List(_) => particle::LIST,
            Value::Map(_) => particle::MAP,
            Value::GeoJson(_) => particle::GEOJSON,
            Value::Hll(_) => particle::HLL,
        }
    }
}

/// A named bin. Names are at most 15 bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Bin name.
    pub name: String,
    /// Value.
    pub value: Value,
}

impl Bin {
    /// A bin from a name and a value.
    pub fn new(name: &str, value: Value) -> Bin {
        Bin {
            name: name.to_string(),
            value,
        }
    }
}

/// A stored user key (wire spec §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Key {
    /// Integer key.
    Int(i64),
    /// Double key.
    Float(f64),
    /// String key bytes.
    String(Vec<u8>),
    /// Blob key with its particle type.
    Blob {
        /// Particle type (4 or 7..=12).
        particle: u8,
        /// Bytes.
        bytes: Vec<u8>,
    },
}

/// What a write does about an existing record (Aerospike's exists policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExistsPolicy {
    /// Create or merge bins into the existing record.
    #[default]
    Update,
    /// Merge bins; the record must exist.
    UpdateOnly,
    /// Create or replace all bins.
    Replace,
    /// Replace all bins; the record must exist.
    ReplaceOnly,
    /// The record must not exist.
    CreateOnly,
}

/// Generation check on writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GenerationPolicy {
    /// No check.
    #[default]
    None,
    /// Apply only if the record's generation equals this.
    Equal(u16),
    /// Apply only if this is greater than the record's generation.
    Greater(u16),
}

/// TTL of a write (wire spec §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Ttl {
    /// The namespace's `default_ttl_secs` (0 there means never expire).
    #[default]
    NamespaceDefault,
    /// Never expire.
    NeverExpire,
    /// Keep the current void time (a new record gets the namespace default).
    KeepCurrent,
    /// Expire this many seconds after the command's `now_ms` (1..=315360000).
    Seconds(u32),
}

/// The header every write carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    /// Namespace.
    pub namespace: String,
    /// Record digest.
    pub digest: Digest,
    /// Set name ("" = no set), at most 63 bytes.
    pub set: String,
    /// User key to store, if the client sent it.
    pub key: Option<Key>,
    /// Exists policy.
    pub exists: ExistsPolicy,
    /// Generation policy.
    pub generation: GenerationPolicy,
    /// TTL.
    pub ttl: Ttl,
}

impl Write {
    /// A write header with default policies.
    pub fn new(namespace: &str, digest: Digest) -> Write {
        Write {
            namespace: namespace.to_string(),
            digest,
            set: String::new(),
            key: None,
            exists: ExistsPolicy::Update,
            generation: GenerationPolicy::None,
            ttl: Ttl::NamespaceDefault,
        }
    }
}

/// Put: write bins (a `Nil` value deletes the bin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Put {
    /// Header.
    pub write: Write,
    /// Bins, in order.
    pub bins: Vec<Bin>,
}

/// One op of an operate command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Read one bin.
    Read(String),
    /// Read all bins (at this point of the op list).
    ReadAll,
    /// Write a bin; `Nil` deletes it.
    Write(Bin),
    /// Add an Int or Float to a bin (a missing bin counts as 0).
    Incr(Bin),
    /// Append a String or Blob.
    Append(Bin),
    /// Prepend a String or Blob.
    Prepend(Bin),
    /// Reset the TTL and bump the generation.
    Touch,
    /// Delete all bins (later ops may add some back).
    DeleteRecord,
}

impl Op {
    /// True for ops that modify the record.
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Read(_) | Op::ReadAll)
    }
}

/// Operate: ordered ops applied atomically on a working copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operate {
    /// Header.
    pub write: Write,
    /// Ops, in order.
    pub ops: Vec<Op>,
}

impl Operate {
    /// True if any op modifies the record.
    pub fn writes(&self) -> bool {
        self.ops.iter().any(Op::writes)
    }
}

/// A command applied through a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Put.
    Put(Put),
    /// Durable delete (leaves a tombstone).
    Delete {
        /// Namespace.
        namespace: String,
        /// Record digest.
        digest: Digest,
        /// Generation check.
        generation: GenerationPolicy,
    },
    /// Touch: reset the TTL from `write.ttl`, bump the generation.
    Touch(Write),
    /// Operate.
    Operate(Operate),
    /// Remove every record of `partitions` of the namespace (or set) last
    /// updated before `before_ms` (ms since the Unix epoch), durably. A shard
    /// proposes it with its own partitions, so each shard's log truncates
    /// only what it owns.
    Truncate {
        /// Namespace.
        namespace: String,
        /// Set, or the whole namespace.
        set: Option<String>,
        /// Cut-off. The engine uses at most the command's `now_ms` (the
        /// leader's clock): a later cut-off is clamped to it.
        before_ms: u64,
        /// The partitions it covers (each below `PARTITION_COUNT`).
        partitions: Vec<u16>,
    },
}

impl Command {
    /// The namespace the command addresses.
    pub fn namespace(&self) -> &str {
        match self {
            Command::Put(put) => &put.write.namespace,
            Command::Touch(write) => &write.namespace,
            Command::Operate(operate) => &operate.write.namespace,
            Command::Delete { namespace, .. } | Command::Truncate { namespace, .. } => namespace,
        }
    }
}

/// The result of one operate op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    /// A write op, or a read of a missing bin (the protocol's NULL placeholder).
    None,
    /// The value read.
    Value(Value),
    /// All bins (ReadAll).
    Bins(Vec<Bin>),
}

/// The result of an applied command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The record's generation after the command (0 when deleted or absent).
    pub generation: u16,
    /// The record's void time after the command (seconds since 2010-01-01, 0 =
    /// never expires).
    pub void_time: u32,
    /// One result per op for operate (empty for other commands).
    pub results: Vec<OpResult>,
}

/// Which bins a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinSelection {
    /// Every bin.
    All,
    /// These bins (missing ones are omitted).
    Named(Vec<String>),
    /// Header only (generation and void time; no device read).
    None,
}

/// What a point read returns.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    /// Generation.
    pub generation: u16,
    /// Void time (seconds since 2010-01-01, 0 = never).
    pub void_time: u32,
    /// The stored user key (`None` without one, and for header-only reads,
    /// which read no record bytes).
    pub key: Option<Key>,
    /// Selected bins, in record order.
    pub bins: Vec<Bin>,
}

/// A whole stored record: what scans, views and installs carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Digest.
    pub digest: Digest,
    /// Set ("" = none).
    pub set: String,
    /// Stored user key.
    pub key: Option<Key>,
    /// Bins (never empty for a live record).
    pub bins: Vec<Bin>,
    /// Generation (1.., wraps, never 0).
    pub generation: u16,
    /// Void time (seconds since 2010-01-01, 0 = never).
    pub void_time: u32,
    /// Last update, ms since the Unix epoch.
    pub last_update_ms: u64,
}

/// Aerospike's epoch for void times: 2010-01-01T00:00:00Z in Unix seconds.
pub const CITRUSLEAF_EPOCH_UNIX_SECS: u64 = 1_262_304_000;

/// `now_ms` (Unix ms) as seconds since 2010-01-01 (0 before 2010).
pub fn secs_since_2010(now_ms: u64) -> u64 {
    (now_ms / 1000).saturating_sub(CITRUSLEAF_EPOCH_UNIX_SECS)
}

/// True if a record with this void time is expired at `now_ms`.
pub fn is_expired(void_time: u32, now_ms: u64) -> bool {
    void_time != 0 && u64::from(void_time) <= secs_since_2010(now_ms)
}
