//! Real `aerie node` processes: a node with the wrong cluster secret, or of
//! another cluster, is refused at the fabric handshake (before any raft
//! message is decoded: the handshake's MAC and cluster id come first) and
//! never becomes a member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{NodeProcess, free_port};

const WAIT: Duration = Duration::from_secs(30);

async fn info(address: &str, name: &str) -> String {
    let mut conn = aerie::client::Connection::connect(address).await.unwrap();
    let answers = conn.info(&[name]).await.unwrap();
    answers.into_iter().map(|(_, v)| v).collect()
}

fn secret(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Waits until `node`'s log says its join was refused for `reason`.
fn wait_refused(node: &NodeProcess, reason: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = node.log_text();
        if log.contains("joining through a seed failed") && log.contains(reason) {
            return;
        }
        assert!(Instant::now() < deadline, "no refusal ({reason}) in: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_secret_or_cluster_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let (port, fabric) = (free_port(), free_port());
    let good = secret(dir.path(), "good", "the cluster's secret\n");
    let founder = NodeProcess::start_env(
        &dir.path().join("founder"),
        port,
        None,
        false,
        &[
            ("AERIE_FABRIC_PORT", fabric.to_string()),
            ("AERIE_CLUSTER_SECRET_FILE", good.clone()),
        ],
    );
    let seeds = format!("127.0.0.1:{fabric}");
    let bad = secret(dir.path(), "bad", "a guess of sixteen bytes or more\n");
    let intruder = NodeProcess::spawn_env(
        &dir.path().join("intruder"),
        free_port(),
        None,
        false,
        &[
            ("AERIE_SEEDS", seeds.clone()),
            ("AERIE_CLUSTER_SECRET_FILE", bad),
        ],
    );
    wait_refused(&intruder, "authentication failed");
    let config = dir.path().join("other.toml");
    std::fs::write(&config, "[node]\ncluster_name = \"another\"\n").unwrap();
    let stranger = NodeProcess::spawn_env(
        &dir.path().join("stranger"),
        free_port(),
        Some(&config),
        false,
        &[("AERIE_SEEDS", seeds), ("AERIE_CLUSTER_SECRET_FILE", good)],
    );
    wait_refused(&stranger, "cluster id");
    // Neither got in: the founder is still a cluster of one.
    let status = info(&founder.address(), "cluster-status").await;
    let members = status
        .split(';')
        .find_map(|part| part.strip_prefix("members="))
        .unwrap();
    assert_eq!(members.split(',').count(), 1, "{status}");
    let peers = info(&founder.address(), "peers-clear-std").await;
    assert!(!peers.contains("127.0.0.1"), "{peers}");
    drop((intruder, stranger, founder));
}
