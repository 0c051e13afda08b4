//! `aerie node`: opens (or creates) the data directory, the WAL, the engine
//! and the shards, serves the Aerospike wire protocol, and on SIGTERM or
//! SIGINT stops accepting, finishes the requests in flight (for at most
//! `SHUTDOWN_GRACE_MS`), checkpoints the engine, syncs and exits 0. After a
//! SIGKILL the next start recovers on its own (WAL replay past the engine's
//! last checkpoint).

mod budget;
mod cluster;
pub mod config;
mod convert;
mod disk;
#[cfg(feature = "fault-injection")]
pub mod fault_control;
mod formation;
mod handler;
mod metrics;
mod proxy;
mod service;

pub use handler::{CHECK_NOW, CHECK_VERDICTS};

use std::sync::Arc;
use std::time::Duration;

use aerie_engine::{Engine, EngineConfig, EngineFs};
use aerie_protocol::Limits;
use aerie_replication::{Node, NodeConfig, NodeParts, SnapshotPolicy};
use aerie_snapshot::WriteOptions;
use aerie_wal::{Wal, WalConfig};

use crate::datadir::{ClusterMeta, DataDir};
use crate::error::{Error, Result};
use config::NodeFileConfig;
use handler::Server;

/// Locks `m`, poisoned or not: every value behind these locks is valid after
/// any panic (they are replaced whole, never left half-updated).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a stopping node waits for the requests in flight (each bounded
/// by its own deadline) before it stops the shards anyway.
const SHUTDOWN_GRACE_MS: u64 = 10_000;

/// How long a stopping node waits for its shards' leaderships to move.
const HAND_OFF_MS: u64 = 3_000;
/// A stopping member serves this long after handing off: a little more
/// than the official clients' 1 s tend, in which they fetch the new map.
const CLIENT_TEND_MS: u64 = 1_500;

/// What tests swap in: the file layers (to inject disk faults into a running
/// node) and the stop signal (instead of SIGTERM).
#[derive(Default)]
pub struct Hooks {
    /// The engine's file layer (`aerie_engine::fault::FaultyFs` in tests).
    pub engine_fs: Option<Arc<dyn EngineFs>>,
    /// The WAL's file layer (`aerie_wal::fault` in tests).
    pub wal_fs: Option<Arc<dyn aerie_wal::fs::FileSystem>>,
    /// Stops the node when it completes; `None`: SIGTERM or SIGINT.
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Opens an existing data directory: it keeps the cluster name and id,
/// node id and shard count it recorded; the configured namespaces must be
/// among its own.
fn open_data_dir(config: &NodeFileConfig) -> Result<DataDir> {
    let root = &config.node.data_dir;
    let dd = DataDir::open(root)?;
    for ns in &config.namespaces {
        if !dd.meta().namespaces.iter().any(|n| n.name == ns.name) {
            return Err(Error::Refused(format!(
                "namespace {} is configured but {} was created without it",
                ns.name,
                root.display()
            )));
        }
    }
    Ok(dd)
}

/// Creates the data directory of node `node_id` in cluster `cluster_id`
/// of `shards` shards.
fn create_data_dir(
    config: &NodeFileConfig,
    node_id: u64,
    cluster_id: u64,
    shards: u32,
    incarnation: u64,
) -> Result<DataDir> {
    let meta = ClusterMeta {
        cluster_name: config.node.cluster_name.clone(),
        node_id,
        cluster_id,
        shards,
        incarnation,
        namespaces: config.namespaces.clone(),
    };
    Ok(DataDir::create(&config.node.data_dir, meta)?)
}

fn open_wal(
    config: &NodeFileConfig,
    dd: &DataDir,
    fs: Option<Arc<dyn aerie_wal::fs::FileSystem>>,
) -> Result<Wal> {
    let mut wal = WalConfig::new(dd.wal_dir());
    wal.file_system = fs;
    wal.segment_size_bytes = config.wal.segment_size_bytes;
    // The WAL takes entries of at most a quarter of a segment.
    let quarter = usize::try_from(wal.segment_size_bytes / 4).unwrap_or(usize::MAX);
    wal.max_entry_bytes = wal.max_entry_bytes.min(quarter);
    wal.fsync = config.fsync().map_err(Error::Refused)?;
    wal.io_backend = config.io_backend().map_err(Error::Refused)?;
    if config.wal.archive {
        wal.archive_dir = Some(dd.wal_archive_dir());
    }
    Ok(Wal::open(wal)?)
}

/// `voters`: the first configuration of shards created now (this node
/// alone when it forms a cluster, none when it joins one).
fn node_config(config: &NodeFileConfig, dd: &DataDir, voters: Vec<u64>) -> Result<NodeConfig> {
    let (election_ticks, heartbeat_ticks) = config.raft_ticks().map_err(Error::Refused)?;
    let meta = dd.meta();
    let mut node = NodeConfig::new(meta.node_id, voters, dd.root());
    node.cluster_name = meta.cluster_name.clone();
    node.shards = meta.shards;
    node.tick_interval_ms = config.raft.tick_interval_ms;
    node.election_ticks = election_ticks;
    node.heartbeat_ticks = heartbeat_ticks;
    node.wal_segments_before_snapshot = config.raft.wal_segments_before_snapshot;
    node.consistency_check_interval_ms = config.cluster.consistency_check_interval_ms;
    node.rebuild_rate_bytes_per_sec = config.cluster.rebuild_rate_bytes_per_sec;
    node.snapshot = SnapshotPolicy {
        every_entries: config.raft.snapshot_every_entries,
        every_bytes: config.raft.snapshot_every_bytes,
        every_ms: config.raft.snapshot_every_ms,
        keep: config.raft.snapshots_kept,
        options: WriteOptions::default(),
    };
    Ok(node)
}

/// Runs a node until SIGTERM or SIGINT (in a `fault-injection` build, on
/// the fault layers when `AERIE_FAULT_CONTROL_FILE` is set).
pub fn run(config: NodeFileConfig) -> Result<()> {
    #[cfg(feature = "fault-injection")]
    let hooks = fault_control::hooks_from_env();
    #[cfg(not(feature = "fault-injection"))]
    let hooks = Hooks::default();
    run_with(config, hooks)
}

/// Runs a node until SIGTERM, SIGINT or `hooks.stop`.
pub fn run_with(config: NodeFileConfig, mut hooks: Hooks) -> Result<()> {
    let formed = formation::form(&config)?;
    let dd = formed.dd;
    let _lock = dd.lock()?;
    let wal = Arc::new(open_wal(&config, &dd, hooks.wal_fs.take())?);
    let mut engine_config = EngineConfig {
        dir: dd.engine_dir(),
        namespaces: config.namespaces.clone(),
        checkpoint_interval_ms: config.engine.checkpoint_interval_ms,
        ..EngineConfig::default()
    };
    if let Some(fs) = hooks.engine_fs.take() {
        engine_config.fs = fs;
    }
    let engine = Arc::new(Engine::open(engine_config)?);
    let transport = formed.transport;
    let retired = Arc::new(tokio::sync::Notify::new());
    let cluster = cluster::Cluster::new(
        aerie_replication::cluster::JoinRequest {
            member: formed.me,
            incarnation: dd.meta().incarnation,
        },
        (
            config.cluster.replication_factor,
            config.cluster.replace_after_ms,
        ),
        dd.shard_map(),
        formed.members,
        transport.clone(),
        on_retired(dd.root(), retired.clone()),
    );
    let parts = NodeParts {
        wal: wal.clone(),
        engine: engine.clone(),
        transport: transport.clone(),
        on_cluster_change: Some(cluster.on_change()),
    };
    let voters = if formed.joining {
        Vec::new()
    } else {
        vec![dd.meta().node_id]
    };
    let (node, deliver) = Node::open(node_config(&config, &dd, voters)?, parts)
        .map_err(|e| Error::Refused(e.to_string()))?;
    let node = Arc::new(node);
    transport.set_deliver(deliver);
    cluster.attach(node.clone())?;
    // Dropping the sender stops the watcher.
    let (stop_watcher, watcher_stopped) = std::sync::mpsc::sync_channel(1);
    let watcher = start_disk_watcher(&config, &dd, &engine, &node, watcher_stopped)?;
    let server = Arc::new(Server {
        engine: engine.clone(),
        node: node.clone(),
        map: dd.shard_map(),
        limits: Limits {
            max_message_size_bytes: config.service.max_message_bytes,
            ..Limits::default()
        },
        node_id: dd.meta().node_id,
        cluster_name: dd.meta().cluster_name.clone(),
        service_address: config.service.address.clone(),
        service_port: config.service.port,
        namespaces: config.namespaces.iter().map(|n| n.name.clone()).collect(),
        wal: wal.clone(),
        metrics: metrics::CommandMetrics::default(),
        budget: budget::Budget::new(config.service.max_buffered_bytes),
        cluster,
        proxy: proxy::Proxy::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: dd.root().to_path_buf(),
            source: e,
        })?;
    let stop = Stop {
        hook: hooks.stop,
        retired,
    };
    let served = runtime.block_on(serve_until_signal(&config, &dd, &wal, server, stop));
    // Requests still running past the grace period end with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(1000));
    drop(stop_watcher);
    let _ = watcher.join();
    let retired = served?;
    let stopped = shutdown(node, engine, wal);
    transport.stop();
    stopped?;
    if retired {
        return Err(Error::Refused(format!(
            "the cluster retired node {} (it was replaced or removed): start it again \
             and it joins as a new member, with an emptied data dir",
            aerie_protocol::info::node_name(dd.meta().node_id)
        )));
    }
    Ok(())
}

/// Marks the data dir retired (once) and stops the node.
fn on_retired(root: &std::path::Path, stop: Arc<tokio::sync::Notify>) -> cluster::OnRetired {
    let root = root.to_path_buf();
    let marked = std::sync::atomic::AtomicBool::new(false);
    Box::new(move |members| {
        if marked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tracing::error!(data_dir = %root.display(), "the cluster retired this node; stopping");
        if let Err(e) = crate::datadir::mark_retired(&root, members) {
            tracing::error!(error = %e, "marking the data dir retired failed");
        }
        stop.notify_one();
    })
}

/// What ends serving: SIGTERM/SIGINT (or a test's hook), or the cluster
/// retiring this node.
struct Stop {
    hook: Option<tokio::sync::oneshot::Receiver<()>>,
    retired: Arc<tokio::sync::Notify>,
}

fn start_disk_watcher(
    config: &NodeFileConfig,
    dd: &DataDir,
    engine: &Arc<Engine>,
    node: &Arc<Node>,
    stopped: std::sync::mpsc::Receiver<()>,
) -> Result<std::thread::JoinHandle<()>> {
    let dirs = disk::watched(
        &dd.wal_dir(),
        config.wal.segment_size_bytes,
        engine,
        &dd.engine_dir(),
    );
    let policy = disk::DiskPolicy {
        min_avail_pct: config.disk.min_avail_pct,
        check_interval_ms: config.disk.check_interval_ms,
    };
    disk::spawn_watcher(policy, dirs, engine.clone(), node.gate().clone(), stopped).map_err(|e| {
        Error::Io {
            path: dd.root().to_path_buf(),
            source: e,
        }
    })
}

async fn serve_until_signal(
    config: &NodeFileConfig,
    dd: &DataDir,
    wal: &Wal,
    server: Arc<Server>,
    stop_on: Stop,
) -> Result<bool> {
    let address = format!("{}:{}", config.service.address, config.service.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::Refused(format!("cannot listen on {address}: {e}")))?;
    tracing::info!(
        data_dir = %dd.root().display(),
        service = %address,
        io_backend = ?wal.io_backend(),
        fsync = %config.wal.fsync,
        shards = dd.meta().shards,
        namespaces = ?server.namespaces,
        "aerie node {} serving",
        aerie_protocol::info::node_name(dd.meta().node_id)
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let idle = Duration::from_millis(config.service.idle_timeout_ms.max(1));
    if config.metrics.port != 0 {
        let address = format!("{}:{}", config.metrics.address, config.metrics.port);
        let metrics = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::Refused(format!("cannot listen on {address} for metrics: {e}")))?;
        tracing::info!(metrics = %address, "prometheus metrics at /metrics");
        tokio::spawn(metrics::serve(metrics, server.clone(), stopped.clone()));
    }
    let node = server.node.clone();
    let serving = tokio::spawn(service::serve(
        listener,
        server,
        config.service.max_connections,
        idle,
        stopped,
    ));
    let asked = async {
        match stop_on.hook {
            Some(hook) => {
                let _ = hook.await;
            }
            None => wait_for_signal().await,
        }
    };
    let retired = tokio::select! {
        _ = asked => false,
        _ = stop_on.retired.notified() => true,
    };
    // Leaderships first, while requests are still served (proxied to the
    // new leaders): a rolling restart costs clients no errors. (A retired
    // node leads nothing any member follows; it still serves a client tend,
    // proxying over the service ports.)
    let members = node.status().iter().any(|s| s.voters.len() > 1);
    let kept = if retired {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(move || node.hand_off(Duration::from_millis(HAND_OFF_MS)))
            .await
            .unwrap_or_default()
    };
    if !kept.is_empty() {
        tracing::warn!(shards = ?kept, "stopping while still leading these shards (no other voter took them in time)");
    }
    if members {
        // Clients learn the new leaders at their next tend (every second):
        // serve (and proxy) until then.
        tokio::time::sleep(Duration::from_millis(CLIENT_TEND_MS)).await;
    }
    tracing::info!("shutting down: finishing requests in flight");
    let _ = stop.send(true);
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    if tokio::time::timeout(grace, serving).await.is_err() {
        tracing::warn!(
            grace_ms = SHUTDOWN_GRACE_MS,
            "requests still in flight after the grace period; stopping anyway"
        );
    }
    Ok(retired)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Stops the shards, checkpoints the engine (its index file makes the next
/// start fast) and closes the WAL. A checkpoint or WAL close that fails (a
/// full disk, a poisoned engine) loses nothing acknowledged: the next start
/// replays the WAL past the last good checkpoint. It is logged, not fatal.
fn shutdown(node: Arc<Node>, engine: Arc<Engine>, wal: Arc<Wal>) -> Result<()> {
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop(),
        Err(_) => tracing::warn!("the shards were still referenced at shutdown"),
    }
    let mut clean = true;
    if let Err(e) = engine.checkpoint() {
        tracing::error!(error = %e, "the shutdown checkpoint failed; the next start replays the WAL instead");
        clean = false;
    }
    drop(engine);
    match Arc::try_unwrap(wal) {
        Ok(wal) => {
            if let Err(e) = wal.close() {
                tracing::error!(error = %e, "closing the WAL failed; the next start recovers it");
                clean = false;
            }
        }
        Err(_) => tracing::warn!("the WAL was still referenced at shutdown"),
    }
    if clean {
        tracing::info!("stopped cleanly");
    }
    Ok(())
}
