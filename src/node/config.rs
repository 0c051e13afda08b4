//! `aerie node`'s settings: a TOML file (every setting has a default, so an
//! empty file or none at all runs a laptop node), then environment overrides
//! for the common ones. `aerie node --print-default-config` prints the
//! defaults with their units.

use std::path::PathBuf;

use aerie_engine::NamespaceConfig;
use aerie_wal::{FsyncPolicy, IoBackend};
use serde::{Deserialize, Serialize};

/// Environment variables that override the file.
pub const ENV_OVERRIDES: [(&str, &str); 14] = [
    ("AERIE_METRICS_PORT", "metrics.port"),
    ("AERIE_DATA_DIR", "node.data_dir"),
    ("AERIE_NODE_ID", "node.node_id"),
    ("AERIE_ADDRESS", "service.address"),
    ("AERIE_PORT", "service.port"),
    ("AERIE_FSYNC", "wal.fsync"),
    ("AERIE_FABRIC_ADDRESS", "cluster.fabric_address"),
    ("AERIE_FABRIC_PORT", "cluster.fabric_port"),
    ("AERIE_FABRIC_ADVERTISE", "cluster.fabric_advertise_address"),
    ("AERIE_SEEDS", "cluster.seeds (comma-separated)"),
    ("AERIE_REPLICATION_FACTOR", "cluster.replication_factor"),
    ("AERIE_REPLACE_AFTER_MS", "cluster.replace_after_ms"),
    ("AERIE_CLUSTER_SECRET_FILE", "cluster.secret_file"),
    (
        "AERIE_CONSISTENCY_CHECK_INTERVAL_MS",
        "cluster.consistency_check_interval_ms",
    ),
];

/// The shortest `cluster.replace_after_ms` (besides 0): a member must be
/// able to miss a few election timeouts without being replaced.
const MIN_REPLACE_AFTER_MS: u64 = 2_000;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFileConfig {
    /// Identity and data.
    pub node: NodeSection,
    /// The Aerospike service port.
    pub service: ServiceSection,
    /// The write-ahead log.
    pub wal: WalSection,
    /// Raft.
    pub raft: RaftSection,
    /// Prometheus metrics.
    pub metrics: MetricsSection,
    /// The cluster: node-to-node traffic, seeds, replication factor.
    pub cluster: ClusterSection,
    /// Free-space limits.
    pub disk: DiskSection,
    /// The storage engine.
    pub engine: EngineSection,
    /// Namespaces (as Aerospike ships: one, `test`).
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Only seeds a new data dir: 0 (the default) picks a random id at the
    /// first start, which the data dir keeps for good. The node name clients
    /// see is its uppercase hex.
    pub node_id: u64,
    /// Cluster name (1..=63 bytes).
    pub cluster_name: String,
    /// Where everything is stored.
    pub data_dir: PathBuf,
    /// Shards the 4096 partitions are split into (fixed at first start).
    pub shards: u32,
}

/// `[service]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSection {
    /// Listen address.
    pub address: String,
    /// Listen port.
    pub port: u16,
    /// Largest message accepted, bytes.
    pub max_message_bytes: u64,
    /// A connection idle this long is closed, ms.
    pub idle_timeout_ms: u64,
    /// Connections beyond this are refused.
    pub max_connections: usize,
    /// Memory for large messages shared by all connections: each keeps
    /// 256 KiB of buffers on its own, a message needing more reserves the
    /// rest here first (waiting at most the whole-message deadline), bytes.
    pub max_buffered_bytes: u64,
}

/// `[wal]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalSection {
    /// `always`, `never`, or `interval_ms:N`.
    pub fsync: String,
    /// `auto`, `uring` or `sync`.
    pub io_backend: String,
    /// Size of each segment file, bytes.
    pub segment_size_bytes: u64,
    /// Keep sealed segments in `<data_dir>/wal-archive` (for point-in-time
    /// recovery) instead of deleting them.
    pub archive: bool,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Address other nodes reach this one at for node-to-node traffic
    /// (empty: the service address).
    pub fabric_address: String,
    /// Port of node-to-node traffic (Aerospike's fabric port).
    pub fabric_port: u16,
    /// "host:port" other nodes dial to reach this node's fabric, when that
    /// is not where it listens (a NAT or a proxy in between, e.g. the fault
    /// harness's); empty: `fabric_address:fabric_port`.
    pub fabric_advertise_address: String,
    /// `host:fabric_port` of nodes already in a cluster: a node with a new
    /// data dir joins their cluster; with none it forms a new one. A node
    /// that already belongs to a cluster ignores them.
    pub seeds: Vec<String>,
    /// Voters per shard wanted (the effective factor is min(this, members)).
    pub replication_factor: usize,
    /// A member no other node has heard from for this long is retired and
    /// its replicas rebuilt on the others, if enough members are left to
    /// hold every shard's factor (else the shards stay degraded until a node
    /// joins); ms (0 = never). Long enough that a restarting host costs no
    /// full copy.
    pub replace_after_ms: u64,
    /// A snapshot fetched to rebuild a replica (a new, wiped or damaged
    /// one) comes at most this fast, bytes per second (0 = no limit); the
    /// log tail after it is not paced.
    pub rebuild_rate_bytes_per_sec: u64,
    /// Each shard's leader has its replicas compare their copies (every
    /// record read and CRC-checked, at one log index) this often; a copy
    /// that differs from the majority, or cannot be read, is rebuilt from a
    /// snapshot. The shards spread over the interval; ms (0 = only when
    /// `aerie cluster check --deep` asks).
    pub consistency_check_interval_ms: u64,
    /// A file holding the shared cluster secret peers authenticate with
    /// (required unless every fabric address is loopback).
    pub secret_file: Option<PathBuf>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            fabric_address: String::new(),
            fabric_port: 3001,
            fabric_advertise_address: String::new(),
            seeds: Vec::new(),
            replication_factor: 3,
            replace_after_ms: 300_000,
            rebuild_rate_bytes_per_sec: 256 << 20,
            consistency_check_interval_ms: 3_600_000,
            secret_file: None,
        }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// How often the engine writes its index checkpoint and fsyncs its
    /// blocks (the WAL keeps what is newer; a shorter interval means a
    /// shorter replay after a crash), ms (0 = only at shutdown).
    pub checkpoint_interval_ms: u64,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            checkpoint_interval_ms: 60_000,
        }
    }
}

/// `[disk]`: writes are refused (out of space, code 8) before a file
/// system the node writes to is full; deletes and reads go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskSection {
    /// Refuse writes once a file system has less than this share free
    /// (beyond it the node also keeps room for one WAL segment, two write
    /// blocks and one index checkpoint), %.
    pub min_avail_pct: u8,
    /// How often free space is read, ms.
    pub check_interval_ms: u64,
}

impl Default for DiskSection {
    fn default() -> Self {
        DiskSection {
            min_avail_pct: 5,
            check_interval_ms: 50,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address of `/metrics`.
    pub address: String,
    /// Listen port (0 = no metrics).
    pub port: u16,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            address: "127.0.0.1".into(),
            port: 9145,
        }
    }
}

/// `[raft]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// One raft tick, ms.
    pub tick_interval_ms: u64,
    /// A follower that heard nothing from its leader for this long (raft
    /// randomizes it up to twice as long) starts an election; a leader that
    /// heard from no majority for this long steps down. A multiple of the tick.
    pub election_timeout_ms: u64,
    /// A leader's heartbeat period; a multiple of the tick, below the
    /// election timeout.
    pub heartbeat_interval_ms: u64,
    /// Snapshot a shard every this many applied entries (0 = never).
    pub snapshot_every_entries: u64,
    /// Snapshot a shard after this many bytes of applied entries (0 = never).
    pub snapshot_every_bytes: u64,
    /// Snapshot a shard every this many ms if it applied anything (0 = never).
    pub snapshot_every_ms: u64,
    /// Once the WAL holds more segments than this, snapshot the shards that
    /// pin the oldest one so it can be freed (0 = never).
    pub wal_segments_before_snapshot: usize,
    /// Snapshots kept per shard.
    pub snapshots_kept: usize,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            node_id: 0,
            cluster_name: "aerie".into(),
            data_dir: PathBuf::from("./aerie-data"),
            shards: 8,
        }
    }
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection {
            address: "127.0.0.1".into(),
            port: 3000,
            max_message_bytes: 128 << 20,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_buffered_bytes: 1 << 30,
        }
    }
}

impl Default for WalSection {
    fn default() -> Self {
        WalSection {
            fsync: "always".into(),
            // Measured faster than io_uring here in most configurations
            // (README: the engine's RocksDB figures); `auto` to probe.
            io_backend: "sync".into(),
            segment_size_bytes: 64 << 20,
            archive: false,
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_interval_ms: 50,
            // 400 to 800 ms to a new election: the failover bench's p99 of
            // kill to first write stays under 1 s (README, failover).
            election_timeout_ms: 400,
            heartbeat_interval_ms: 50,
            snapshot_every_entries: 100_000,
            snapshot_every_bytes: 256 << 20,
            snapshot_every_ms: 3_600_000,
            wal_segments_before_snapshot: 4,
            snapshots_kept: 2,
        }
    }
}

impl Default for NodeFileConfig {
    fn default() -> Self {
        NodeFileConfig {
            node: NodeSection::default(),
            service: ServiceSection::default(),
            wal: WalSection::default(),
            raft: RaftSection::default(),
            metrics: MetricsSection::default(),
            cluster: ClusterSection::default(),
            disk: DiskSection::default(),
            engine: EngineSection::default(),
            namespaces: vec![NamespaceConfig::default()],
        }
    }
}

/// The default file, commented.
pub fn default_config_text() -> String {
    let body = toml::to_string_pretty(&NodeFileConfig::default()).unwrap_or_default();
    format!(
        "# aerie node configuration: every setting with its default.\n\
         # Units are in the names (_ms, _bytes, _pct, _secs). Environment overrides:\n{}\n\n{body}",
        ENV_OVERRIDES
            .iter()
            .map(|(var, key)| format!("#   {var} -> {key}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

impl NodeFileConfig {
    /// Reads `path` (or the defaults), then applies the environment.
    pub fn load(path: Option<&std::path::Path>) -> Result<NodeFileConfig, String> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => NodeFileConfig::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let parse = |name: &str, value: &str| format!("{name}={value:?} is not valid");
        if let Some(v) = var("AERIE_DATA_DIR") {
            self.node.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("AERIE_NODE_ID") {
            self.node.node_id = v.parse().map_err(|_| parse("AERIE_NODE_ID", &v))?;
        }
        if let Some(v) = var("AERIE_ADDRESS") {
            self.service.address = v;
        }
        if let Some(v) = var("AERIE_PORT") {
            self.service.port = v.parse().map_err(|_| parse("AERIE_PORT", &v))?;
        }
        if let Some(v) = var("AERIE_METRICS_PORT") {
            self.metrics.port = v.parse().map_err(|_| parse("AERIE_METRICS_PORT", &v))?;
        }
        if let Some(v) = var("AERIE_FSYNC") {
            self.wal.fsync = v;
        }
        if let Some(v) = var("AERIE_CONSISTENCY_CHECK_INTERVAL_MS") {
            self.cluster.consistency_check_interval_ms = v
                .parse()
                .map_err(|_| parse("AERIE_CONSISTENCY_CHECK_INTERVAL_MS", &v))?;
        }
        self.apply_cluster_env(var, parse)
    }

    fn apply_cluster_env(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
        parse: impl Fn(&str, &str) -> String,
    ) -> Result<(), String> {
        let cluster = &mut self.cluster;
        if let Some(v) = var("AERIE_FABRIC_ADDRESS") {
            cluster.fabric_address = v;
        }
        if let Some(v) = var("AERIE_FABRIC_PORT") {
            cluster.fabric_port = v.parse().map_err(|_| parse("AERIE_FABRIC_PORT", &v))?;
        }
        if let Some(v) = var("AERIE_FABRIC_ADVERTISE") {
            cluster.fabric_advertise_address = v;
        }
        if let Some(v) = var("AERIE_SEEDS") {
            cluster.seeds = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = var("AERIE_REPLICATION_FACTOR") {
            cluster.replication_factor = v
                .parse()
                .map_err(|_| parse("AERIE_REPLICATION_FACTOR", &v))?;
        }
        if let Some(v) = var("AERIE_REPLACE_AFTER_MS") {
            cluster.replace_after_ms =
                v.parse().map_err(|_| parse("AERIE_REPLACE_AFTER_MS", &v))?;
        }
        if let Some(v) = var("AERIE_CLUSTER_SECRET_FILE") {
            cluster.secret_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.cluster.replication_factor == 0 {
            return Err("cluster.replication_factor must be at least 1".into());
        }
        let replace_after_ms = self.cluster.replace_after_ms;
        if replace_after_ms != 0 && replace_after_ms < MIN_REPLACE_AFTER_MS {
            return Err(format!(
                "cluster.replace_after_ms must be 0 (never) or at least {MIN_REPLACE_AFTER_MS} (a few election timeouts), not {replace_after_ms}"
            ));
        }
        if self.namespaces.is_empty() {
            return Err("at least one [[namespaces]] is needed".into());
        }
        if self.disk.min_avail_pct > 50 {
            return Err("disk.min_avail_pct must be at most 50".into());
        }
        self.raft_ticks()?;
        self.fsync()?;
        self.io_backend()?;
        Ok(())
    }

    /// (election, heartbeat) in ticks of `raft.tick_interval_ms`.
    pub fn raft_ticks(&self) -> Result<(usize, usize), String> {
        let raft = &self.raft;
        if raft.tick_interval_ms == 0 {
            return Err("raft.tick_interval_ms must be at least 1".into());
        }
        let ticks = |ms: u64| usize::try_from(ms / raft.tick_interval_ms).unwrap_or(usize::MAX);
        let (election, heartbeat) = (
            ticks(raft.election_timeout_ms),
            ticks(raft.heartbeat_interval_ms),
        );
        if heartbeat == 0 || election <= heartbeat {
            return Err(format!(
                "raft: heartbeat_interval_ms {} must be at least one tick ({} ms) and election_timeout_ms {} more than one heartbeat",
                raft.heartbeat_interval_ms, raft.tick_interval_ms, raft.election_timeout_ms
            ));
        }
        Ok((election, heartbeat))
    }

    /// The address other nodes reach this one at.
    pub fn fabric_address(&self) -> String {
        let host = if self.cluster.fabric_address.is_empty() {
            &self.service.address
        } else {
            &self.cluster.fabric_address
        };
        format!("{host}:{}", self.cluster.fabric_port)
    }

    /// The WAL fsync policy.
    pub fn fsync(&self) -> Result<FsyncPolicy, String> {
        match self.wal.fsync.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => other
                .strip_prefix("interval_ms:")
                .and_then(|ms| ms.parse().ok())
                .map(FsyncPolicy::IntervalMs)
                .ok_or_else(|| format!("wal.fsync {other:?}: use always, never or interval_ms:N")),
        }
    }

    /// The WAL I/O backend.
    pub fn io_backend(&self) -> Result<IoBackend, String> {
        match self.wal.io_backend.as_str() {
            "auto" => Ok(IoBackend::Auto),
            "uring" => Ok(IoBackend::Uring),
            "sync" => Ok(IoBackend::Sync),
            other => Err(format!("wal.io_backend {other:?}: use auto, uring or sync")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_parses_back_to_the_default() {
        let text = default_config_text();
        let parsed: NodeFileConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed, NodeFileConfig::default());
        let empty: NodeFileConfig = toml::from_str("").unwrap();
        assert_eq!(empty, NodeFileConfig::default());
    }

    #[test]
    fn environment_overrides_and_bad_values_are_named() {
        let mut config = NodeFileConfig::default();
        let env = |name: &str| match name {
            "AERIE_PORT" => Some("3100".to_string()),
            "AERIE_FSYNC" => Some("interval_ms:5".to_string()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.service.port, 3100);
        assert_eq!(config.fsync(), Ok(FsyncPolicy::IntervalMs(5)));
        let bad = |name: &str| (name == "AERIE_PORT").then(|| "lots".to_string());
        let err = NodeFileConfig::default().apply_env(bad).unwrap_err();
        assert!(err.contains("AERIE_PORT"), "{err}");
        assert!(toml::from_str::<NodeFileConfig>("[node]\nbogus = 1").is_err());
    }

    #[test]
    fn replace_after_ms_is_never_or_a_few_election_timeouts() {
        let mut config = NodeFileConfig::default();
        let env = |name: &str| (name == "AERIE_REPLACE_AFTER_MS").then(|| "4000".to_string());
        config.apply_env(env).unwrap();
        assert_eq!(config.cluster.replace_after_ms, 4000);
        assert!(config.validate().is_ok());
        config.cluster.replace_after_ms = 0;
        assert!(config.validate().is_ok(), "0 = never");
        config.cluster.replace_after_ms = 500;
        let err = config.validate().unwrap_err();
        assert!(err.contains("replace_after_ms"), "{err}");
    }
}
