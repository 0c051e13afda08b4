//! A node on a small file system of its own (a tmpfs mounted for the test;
//! tests run as root, and the test is skipped with a message where mounting
//! is refused): writes are refused with out-of-space (8) before the disk is
//! full, every acknowledged record stays readable, deletes go through,
//! SIGTERM ends the node within seconds and exits 0, a restart on the full
//! disk serves reads, and writes resume by themselves once the file system
//! grows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aerospike::{
    Bins, Client, ClientPolicy, ReadPolicy, ResultCode, Value, WritePolicy, as_bin, as_key,
};
use common::NodeProcess;

/// The file system's size at first, and after it is grown.
const SMALL_MIB: u64 = 40;
const GROWN_MIB: u64 = 80;
/// One record's blob.
const RECORD_BYTES: usize = 20_000;
/// Writes tried at most before the refusal must have come.
const MAX_WRITES: usize = 4_000;

/// A tmpfs mounted on a directory; unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, mib: u64) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(out) => {
                eprintln!(
                    "skipping: mounting a tmpfs was refused: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }

    fn grow(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("aerie.toml");
    std::fs::write(
        &path,
        "[wal]\nsegment_size_bytes = 1048576\n\
         [disk]\ncheck_interval_ms = 20\n\
         [[namespaces]]\nname = \"test\"\nwrite_block_size_bytes = 1048576\n",
    )
    .unwrap();
    path
}

fn blob(i: usize) -> Value {
    let mut bytes = vec![(i % 251) as u8; RECORD_BYTES];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Value::Blob(bytes)
}

async fn client(node: &NodeProcess) -> Client {
    Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap()
}

async fn info(node: &NodeProcess, name: &str) -> String {
    let mut conn = aerie::client::Connection::connect(&node.address())
        .await
        .unwrap();
    let answers = conn.info(&[name]).await.unwrap();
    answers.into_iter().map(|(_, v)| v).collect()
}

/// Writes records 0.. until the node refuses one with out-of-space; returns
/// the acknowledged ones.
async fn write_until_refused(client: &Client) -> Vec<usize> {
    let wp = WritePolicy::default();
    let mut acked = Vec::new();
    for i in 0..MAX_WRITES {
        let key = as_key!("test", "full", i as i64);
        match client.put(&wp, &key, &[as_bin!("v", blob(i))]).await {
            Ok(()) => acked.push(i),
            Err(e) => match e.server_result_code() {
                Some(ResultCode::ServerMemError) => return acked,
                // In doubt: neither counted nor checked.
                Some(ResultCode::Timeout) => {}
                other => panic!("write {i}: unexpected {other:?} ({e})"),
            },
        }
    }
    panic!("{MAX_WRITES} writes of {RECORD_BYTES} bytes on {SMALL_MIB} MiB and none refused");
}

async fn check_all(client: &Client, acked: &[usize]) {
    let rp = ReadPolicy::default();
    for &i in acked {
        let key = as_key!("test", "full", i as i64);
        let record = client.get(&rp, &key, Bins::All).await.unwrap();
        assert_eq!(record.bins.get("v"), Some(&blob(i)), "record {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_grown() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&dir.path().join("mnt"), SMALL_MIB) else {
        return;
    };
    let config = config_file(dir.path());
    let data = mount.0.join("data");
    let node = NodeProcess::start_with(&data, common::free_port(), Some(&config), false);
    let client = client(&node).await;
    let acked = write_until_refused(&client).await;
    assert!(acked.len() > 100, "only {} records fit", acked.len());
    eprintln!(
        "{} records of {RECORD_BYTES} bytes acknowledged before the refusal",
        acked.len()
    );
    check_all(&client, &acked).await;
    let stats = info(&node, "namespace/test").await;
    assert!(stats.contains("stop_writes=true"), "{stats}");
    let stats = info(&node, "statistics").await;
    assert!(stats.contains("writes_refused=out_of_space"), "{stats}");
    // Deletes are how an operator makes room: they go through.
    let wp = WritePolicy::default();
    let gone = acked[0];
    assert!(
        client
            .delete(&wp, &as_key!("test", "full", gone as i64))
            .await
            .unwrap()
    );
    let acked: Vec<usize> = acked[1..].to_vec();

    let started = Instant::now();
    let code = node.terminate();
    assert_eq!(code, Some(0), "SIGTERM on a full disk must exit 0");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "SIGTERM took {:?}",
        started.elapsed()
    );

    let node = NodeProcess::start_with(&data, common::free_port(), Some(&config), false);
    let client = self::client(&node).await;
    check_all(&client, &acked).await;

    mount.grow(GROWN_MIB);
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = as_key!("test", "full", "after-growing");
    loop {
        match client.put(&wp, &key, &[as_bin!("v", blob(1))]).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(
                    e.server_result_code(),
                    Some(ResultCode::ServerMemError),
                    "{e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("writes did not resume after the file system grew: {e}"),
        }
    }
    check_all(&client, &acked).await;
    drop(node);
}
