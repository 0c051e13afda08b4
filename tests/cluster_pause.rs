//! A leader paused with SIGSTOP past the election timeout, while the others
//! elect a new leader and take a write, must not serve the old value once
//! it resumes: reads are confirmed by a heartbeat round (raft's Safe read
//! index), not by a lease the paused node still believes in. Requests go to
//! chosen nodes over raw connections (the official clients route by their
//! own partition map).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use aerie::client::Connection;
use aerie_protocol::{
    Info1, Info2, Message, MessageHeader, Op, OpType, RecordRequest, ResultCode, UserKey, Value,
    compute_digest, partition_id,
};
use aerie_replication::shards::ShardMap;
use common::{NodeProcess, free_port};

const WAIT: Duration = Duration::from_secs(60);
const SET: &str = "p";

fn request(key: i64, write: Option<i64>) -> Vec<u8> {
    let digest = compute_digest(SET.as_bytes(), &UserKey::Int(key));
    let (header, ops) = match write {
        Some(v) => (
            MessageHeader {
                info2: Info2::WRITE,
                ..MessageHeader::default()
            },
            vec![Op::new(OpType::Write, "n", Value::Int(v))],
        ),
        None => (
            MessageHeader {
                info1: Info1::READ | Info1::GET_ALL,
                ..MessageHeader::default()
            },
            Vec::new(),
        ),
    };
    let mut out = Vec::new();
    RecordRequest::new(header, "test", Some(SET), digest, ops)
        .encode_frame(&mut out)
        .unwrap();
    out
}

/// Sends one request to `address`: the result code and the `n` bin.
async fn ask(address: &str, key: i64, write: Option<i64>) -> Option<(ResultCode, Option<i64>)> {
    let exchange = async {
        let mut conn = Connection::connect(address).await.ok()?;
        conn.send(&request(key, write)).await.ok()?;
        let (_, body) = conn.read_frame().await.ok()?;
        let message = Message::decode(&body).ok()?;
        let n = message
            .ops
            .iter()
            .find(|op| op.name == "n")
            .and_then(|op| match op.value {
                Value::Int(v) => Some(v),
                _ => None,
            });
        Some((message.header.result_code, n))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

async fn info(address: &str, name: &str) -> String {
    let mut conn = Connection::connect(address).await.unwrap();
    conn.info(&[name])
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The leader of `shard` as `address` sees it ("-" for none).
async fn leader(address: &str, shard: u32) -> String {
    let status = info(address, "cluster-status").await;
    status
        .split(';')
        .find(|p| p.starts_with(&format!("shard={shard}:")))
        .and_then(|p| p.split(':').find_map(|kv| kv.strip_prefix("leader=")))
        .unwrap_or("-")
        .to_string()
}

async fn write_until_ok(address: &str, key: i64, value: i64) {
    let deadline = Instant::now() + WAIT;
    while ask(address, key, Some(value)).await.map(|(c, _)| c) != Some(ResultCode::Ok) {
        assert!(
            Instant::now() < deadline,
            "the write of {value} never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(node: &NodeProcess, signal: i32) {
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our own
    // child's, not yet waited for.
    unsafe { libc::kill(node.child.id() as i32, signal) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_paused_leader_serves_no_stale_read() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let nodes: Vec<NodeProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, fabric))| {
            let seeds: &[u16] = if i == 0 { &[] } else { &[ports[0].1] };
            NodeProcess::start_member(&dir.path().join(format!("d{i}")), port, fabric, seeds)
        })
        .collect();
    let addresses: Vec<String> = ports
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    let key = 7;
    let digest = compute_digest(SET.as_bytes(), &UserKey::Int(key));
    let shard = ShardMap::new(8).unwrap().shard_of(partition_id(&digest));
    let deadline = Instant::now() + WAIT;
    loop {
        let status = info(&addresses[0], "cluster-status").await;
        let full = status
            .split(';')
            .filter(|p| p.starts_with("shard="))
            .all(|p| {
                p.contains(":learners=-:")
                    && p.split(":voters=").nth(1).is_some_and(|v| {
                        v.split(':')
                            .next()
                            .is_some_and(|v| v.split(',').count() == 3)
                    })
            });
        if full {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not form: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_until_ok(&addresses[0], key, 1).await;
    let old = leader(&addresses[0], shard).await;
    let mut paused = None;
    for (i, address) in addresses.iter().enumerate() {
        if info(address, "node").await == old {
            paused = Some(i);
        }
    }
    let paused = paused.unwrap();
    let other = (paused + 1) % 3;
    signal(&nodes[paused], libc::SIGSTOP);
    // The others elect a new leader and take a newer write.
    let deadline = Instant::now() + WAIT;
    loop {
        let now = leader(&addresses[other], shard).await;
        if now != old && now != "-" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while {old} was paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_until_ok(&addresses[other], key, 2).await;
    signal(&nodes[paused], libc::SIGCONT);
    // Right after it resumes, and for a while, the old leader never answers
    // the overwritten value.
    let until = Instant::now() + Duration::from_secs(2);
    let mut answered = 0;
    while Instant::now() < until {
        if let Some((code, value)) = ask(&addresses[paused], key, None).await {
            assert_ne!(
                value,
                Some(1),
                "a stale read from the resumed leader ({code:?})"
            );
            if code == ResultCode::Ok {
                assert_eq!(value, Some(2));
                answered += 1;
            }
        }
    }
    assert!(answered > 0, "the resumed node never served the read");
}
