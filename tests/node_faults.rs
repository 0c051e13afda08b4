//! Disk faults under a running node: the node runs in this process (so the
//! engine's and the WAL's fault-injecting file layers can be switched while
//! it serves), on a real loopback port, driven by the official `aerospike`
//! client. Each fault is checked for the code clients see, reads going on,
//! and no acknowledged write lost across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerie::node::config::NodeFileConfig;
use aerie::node::{Hooks, run_with};
use aerie_engine::fault::{Faults as EngineFaults, FaultyFs as EngineFaultyFs, Target};
use aerie_engine::{EngineFs, NamespaceConfig};
use aerie_wal::fault::{Faults as WalFaults, FaultyFs as WalFaultyFs};
use aerie_wal::fs::{FileSystem, SyncFs};
use aerospike::{
    Bins, Client, ClientPolicy, ReadPolicy, ResultCode, Value, WritePolicy, as_bin, as_key,
};

/// Writes tried at most while waiting for a fault to show.
const MAX_WRITES: usize = 3_000;
/// Writes made before a fault is switched on.
const FIRST_WRITES: usize = 50;
/// One record's value.
const VALUE_BYTES: usize = 8_000;

/// A node running on a thread of this process; stopped when dropped.
struct InProcessNode {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<aerie::error::Result<()>>>,
}

impl InProcessNode {
    fn start(data: &Path, hooks: Hooks) -> InProcessNode {
        let port = common::free_port();
        let mut config = NodeFileConfig::default();
        config.node.data_dir = data.to_path_buf();
        config.service.port = port;
        config.metrics.port = 0;
        config.cluster.fabric_port = 0;
        config.wal.segment_size_bytes = 4 << 20;
        config.disk.check_interval_ms = 50;
        config.engine.checkpoint_interval_ms = 300;
        config.namespaces = vec![NamespaceConfig {
            write_block_size_bytes: 1 << 20,
            ..NamespaceConfig::named("test")
        }];
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let hooks = Hooks {
            stop: Some(stopped),
            ..hooks
        };
        let thread = std::thread::spawn(move || run_with(config, hooks));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the node did not start");
            assert!(!thread.is_finished(), "the node stopped at start");
            std::thread::sleep(Duration::from_millis(20));
        }
        InProcessNode {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    async fn client(&self) -> Client {
        Client::new(
            &ClientPolicy::default(),
            &format!("127.0.0.1:{}", self.port),
        )
        .await
        .unwrap()
    }

    async fn statistics(&self) -> String {
        let mut conn = aerie::client::Connection::connect(&format!("127.0.0.1:{}", self.port))
            .await
            .unwrap();
        let answers = conn.info(&["statistics"]).await.unwrap();
        answers.into_iter().map(|(_, v)| v).collect()
    }

    /// Stops the node and returns how `run_with` ended.
    fn stop(mut self) -> aerie::error::Result<()> {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn value(i: usize) -> Value {
    let mut bytes = vec![(i % 253) as u8; VALUE_BYTES];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Value::Blob(bytes)
}

/// What one write came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Acked,
    /// It may or may not have been applied.
    InDoubt,
    Refused(ResultCode),
}

async fn put(client: &Client, i: usize) -> Outcome {
    let key = as_key!("test", "f", i as i64);
    match client
        .put(&WritePolicy::default(), &key, &[as_bin!("v", value(i))])
        .await
    {
        Ok(()) => Outcome::Acked,
        // The server's code first: the client flags a retried write in
        // doubt even when the server's last answer was a definite refusal.
        Err(e) => match e.server_result_code() {
            Some(ResultCode::Timeout) => Outcome::InDoubt,
            Some(code) => Outcome::Refused(code),
            None if e.in_doubt() || e.is_client_timeout() => Outcome::InDoubt,
            None => panic!("write {i}: {e}"),
        },
    }
}

/// Writes `from..` until one is refused; returns the acknowledged ones and
/// the refusal's code.
async fn write_until_refused(client: &Client, from: usize, acked: &mut Vec<usize>) -> ResultCode {
    for i in from..from + MAX_WRITES {
        match put(client, i).await {
            Outcome::Acked => acked.push(i),
            Outcome::InDoubt => {}
            Outcome::Refused(code) => return code,
        }
    }
    panic!("{MAX_WRITES} writes and the fault never showed");
}

/// Writes records 0..FIRST_WRITES, each of which must be acknowledged.
async fn write_first(client: &Client) -> Vec<usize> {
    for i in 0..FIRST_WRITES {
        assert_eq!(put(client, i).await, Outcome::Acked, "write {i}");
    }
    (0..FIRST_WRITES).collect()
}

async fn check_all(client: &Client, acked: &[usize]) {
    let rp = ReadPolicy::default();
    for &i in acked {
        let record = client
            .get(&rp, &as_key!("test", "f", i as i64), Bins::All)
            .await;
        let record = record.unwrap_or_else(|e| panic!("acknowledged record {i}: {e}"));
        assert_eq!(record.bins.get("v"), Some(&value(i)), "record {i}");
    }
}

fn engine_hooks(faults: &Arc<EngineFaults>) -> Hooks {
    let fs: Arc<dyn EngineFs> = Arc::new(EngineFaultyFs::new(faults.clone()));
    Hooks {
        engine_fs: Some(fs),
        ..Hooks::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_enospc_stalls_the_shard_reads_go_on_and_writes_resume_when_healed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faults = EngineFaults::new();
    faults.aim(Target::Blocks);
    let node = InProcessNode::start(&data, engine_hooks(&faults));
    let client = node.client().await;
    let mut acked = write_first(&client).await;
    faults.set_enospc(true);
    // Block writes fail once the write block in RAM is full: the apply loop
    // retries, the shard refuses new writes with out-of-space.
    let code = write_until_refused(&client, FIRST_WRITES, &mut acked).await;
    assert_eq!(code, ResultCode::ServerMemError);
    assert!(node.statistics().await.contains("apply_stalled"));
    check_all(&client, &acked).await;
    faults.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = 10_000;
    while put(&client, next).await != Outcome::Acked {
        assert!(
            Instant::now() < deadline,
            "writes did not resume once healed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        next += 1;
    }
    acked.push(next);
    // Every shard's retry (at most a second apart) gets through.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.statistics().await.contains("writes_refused=none") {
        assert!(Instant::now() < deadline, "{}", node.statistics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    node.stop().unwrap();
    let node = InProcessNode::start(&data, Hooks::default());
    check_all(&node.client().await, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_fsync_failure_poisons_writes_but_reads_go_on_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faults = EngineFaults::new();
    let node = InProcessNode::start(&data, engine_hooks(&faults));
    let client = node.client().await;
    let mut acked = write_first(&client).await;
    // The next checkpoint's fsync fails.
    faults.set_fsync_eio(true);
    let code = write_until_refused(&client, FIRST_WRITES, &mut acked).await;
    assert_eq!(code, ResultCode::PartitionUnavailable);
    assert!(node.statistics().await.contains("engine_poisoned"));
    check_all(&client, &acked).await;
    faults.heal();
    drop(client);
    // The shutdown checkpoint fails (poisoned): logged, not fatal.
    node.stop().unwrap();
    let node = InProcessNode::start(&data, Hooks::default());
    let client = node.client().await;
    check_all(&client, &acked).await;
    assert_eq!(put(&client, 20_000).await, Outcome::Acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_fsync_failure_refuses_writes_keeps_reads_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let faults = Arc::new(WalFaults::default());
    let fs: Arc<dyn FileSystem> = Arc::new(WalFaultyFs::new(Arc::new(SyncFs), faults.clone()));
    let hooks = Hooks {
        wal_fs: Some(fs),
        ..Hooks::default()
    };
    let node = InProcessNode::start(&data, hooks);
    let client = node.client().await;
    let mut acked = write_first(&client).await;
    faults
        .fail_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The write whose group commit failed is in doubt; the next is refused.
    let code = write_until_refused(&client, FIRST_WRITES, &mut acked).await;
    assert_eq!(code, ResultCode::PartitionUnavailable);
    assert!(node.statistics().await.contains("wal_failed"));
    check_all(&client, &acked).await;
    faults
        .fail_sync
        .store(false, std::sync::atomic::Ordering::SeqCst);
    drop(client);
    node.stop().unwrap();
    let node = InProcessNode::start(&data, Hooks::default());
    let client = node.client().await;
    check_all(&client, &acked).await;
    assert_eq!(put(&client, 30_000).await, Outcome::Acked);
}
