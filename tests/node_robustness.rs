//! Bad input never crashes the node or disturbs other clients; the tools
//! (`aerie info`, `aerie bench`, `aerie snapshot create --host`) work against
//! a real node; an online snapshot restored into a new directory serves the
//! same records from a second node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use aerospike::{Bins, Client, ClientPolicy, ReadPolicy, Value, WritePolicy, as_bin, as_key};
use common::NodeProcess;

fn aerie(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(args)
        .output()
        .unwrap()
}

/// Sends `bytes` on a fresh connection; returns what came back before the
/// server closed it or 2 s passed.
fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn frame(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![2, msg_type];
    out.extend_from_slice(&(body.len() as u64).to_be_bytes()[2..]);
    out.extend_from_slice(body);
    out
}

/// A get of ("test", "", key) with the key field's particle type replaced.
fn message(info1: u8, fields: &[(u8, Vec<u8>)], ops: &[(u8, u8, &str, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![22, info1, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&[0u8; 12]);
    body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    body.extend_from_slice(&(ops.len() as u16).to_be_bytes());
    for (kind, data) in fields {
        body.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
        body.push(*kind);
        body.extend_from_slice(data);
    }
    for (op, particle, name, value) in ops {
        body.extend_from_slice(&((4 + name.len() + value.len()) as u32).to_be_bytes());
        body.extend_from_slice(&[*op, *particle, 0, name.len() as u8]);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(value);
    }
    frame(3, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_answered_or_closed_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let client = Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap();
    let key = as_key!("test", "demo", "steady");
    client
        .put(&WritePolicy::default(), &key, &[as_bin!("n", 1)])
        .await
        .unwrap();

    let ns = (0u8, b"test".to_vec());
    let digest = (4u8, vec![7u8; 20]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"this is not the aerospike protocol at all".to_vec(),
        ),
        ("wrong version", {
            let mut f = frame(1, b"node\n");
            f[0] = 9;
            f
        }),
        ("1 GiB declared size", {
            let mut f = vec![2, 3];
            f.extend_from_slice(&(1u64 << 30).to_be_bytes()[2..]);
            f
        }),
        ("truncated message", {
            let mut f = message(3, &[ns.clone(), digest.clone()], &[]);
            f.truncate(f.len() - 5);
            f
        }),
        ("header size 0", {
            let mut f = message(3, &[ns.clone(), digest.clone()], &[]);
            f[8] = 0;
            f
        }),
        (
            "unknown field type",
            message(3, &[ns.clone(), digest.clone(), (99, vec![1, 2])], &[]),
        ),
        (
            "unknown op type",
            message(1, &[ns.clone(), digest.clone()], &[(77, 0, "a", vec![])]),
        ),
        (
            "key of unknown particle",
            message(3, &[ns.clone(), digest.clone(), (2, vec![99, 1, 2])], &[]),
        ),
        (
            "no namespace",
            message(3, std::slice::from_ref(&digest), &[]),
        ),
        ("unknown message type", frame(7, b"x")),
        ("counts past the body", {
            let mut f = message(3, &[ns.clone(), digest.clone()], &[]);
            f[8 + 18] = 0xff;
            f
        }),
    ];
    for (what, bytes) in cases {
        let answer = send_raw(node.port, &bytes);
        // Answered with a frame, or closed without one: both are fine; the
        // node must still be there and serving.
        assert!(answer.is_empty() || answer[0] == 2, "{what}: {answer:?}");
        let record = client.get(&ReadPolicy::default(), &key, Bins::All).await;
        assert_eq!(
            record.unwrap().bins.get("n"),
            Some(&Value::Int(1)),
            "after {what}"
        );
    }
    // Pipelined requests on one connection are answered in order.
    let mut pipelined = Vec::new();
    for name in ["node", "build", "namespaces"] {
        pipelined.extend(frame(1, format!("{name}\n").as_bytes()));
    }
    let answer = String::from_utf8_lossy(&send_raw(node.port, &pipelined)).to_string();
    let (a, b, c) = (
        answer.find("node\t"),
        answer.find("build\t"),
        answer.find("namespaces\t"),
    );
    assert!(a < b && b < c && a.is_some(), "{answer:?}");
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_an_online_snapshot_restored_on_a_second_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_metrics(&dir.path().join("data"));
    let host = node.address();

    let out = aerie(&["info", "--host", &host, "build", "replicas"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("build\t7.2.0.0") && text.contains("replicas\ttest:0,1,"),
        "{text}"
    );

    let out = aerie(&[
        "bench",
        "--host",
        &host,
        "--workload",
        "insert",
        "--keys",
        "300",
        "--connections",
        "4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        json.contains("\"insert\":{\"count\":300") && json.contains("\"errors\":0"),
        "{json}"
    );

    // Prometheus metrics count what the bench did.
    let mut http = TcpStream::connect(("127.0.0.1", node.metrics_port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    http.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("aerie_ops_total{command=\"write\"} 300"),
        "{page}"
    );
    assert!(
        page.contains("aerie_raft_is_leader{shard=\"0\"} 1"),
        "{page}"
    );
    assert!(page.contains("aerie_wal_syncs_total"), "{page}");
    // A cluster of one: one voter per shard.
    assert!(page.contains("aerie_cluster_members 1"), "{page}");
    assert!(page.contains("aerie_cluster_retired_members 0"), "{page}");
    assert!(page.contains("aerie_shard_voters{shard=\"0\"} 1"), "{page}");

    let client = Client::new(&ClientPolicy::default(), &host).await.unwrap();
    for i in 0..200i64 {
        client
            .put(
                &WritePolicy::default(),
                &as_key!("test", "s", i),
                &[as_bin!("i", i)],
            )
            .await
            .unwrap();
    }
    let out = aerie(&["info", "--host", &host, "sets/test/s"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "objects=200");
    let out = aerie(&["info", "--host", &host, "sets"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ns=test:set=s:objects=200;"));

    // The online snapshot is taken while a client keeps writing.
    let loader = {
        let client = Client::new(&ClientPolicy::default(), &host).await.unwrap();
        tokio::spawn(async move {
            for i in 0..300i64 {
                let key = as_key!("test", "load", i);
                client
                    .put(&WritePolicy::default(), &key, &[as_bin!("i", i)])
                    .await
                    .unwrap();
            }
            client.close().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let out = aerie(&["snapshot", "create", "--host", &host]);
    loader.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Wait for every shard's file (written in the background).
    let snapshots = node.data_dir.join("snapshots");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let files = loop {
        let files: Vec<String> = std::fs::read_dir(&snapshots)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().display().to_string())
                    .filter(|p| p.ends_with(".snap"))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() == 8 {
            break files;
        }
        assert!(std::time::Instant::now() < deadline, "snapshots: {files:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));

    let restored = dir.path().join("restored");
    let mut args = vec![
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = aerie(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = NodeProcess::start(&restored);
    let client = Client::new(&ClientPolicy::default(), &second.address())
        .await
        .unwrap();
    for i in 0..200i64 {
        let record = client
            .get(&ReadPolicy::default(), &as_key!("test", "s", i), Bins::All)
            .await
            .unwrap();
        assert_eq!(record.bins.get("i"), Some(&Value::Int(i)));
    }
    // And it takes writes from there.
    client
        .put(
            &WritePolicy::default(),
            &as_key!("test", "s", 1000),
            &[as_bin!("i", 1)],
        )
        .await
        .unwrap();
    client.close().await.unwrap();
    assert_eq!(second.terminate(), Some(0));
}

#[test]
fn idle_connections_are_closed_and_connections_past_the_limit_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aerie.toml");
    std::fs::write(
        &config,
        "[service]\nidle_timeout_ms = 1500\nmax_connections = 2\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = NodeProcess::start_with(&dir.path().join("data"), port, Some(&config), false);

    // An idle connection is closed by the server after ~1.5 s.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "expected the server to close"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "closed before its idle timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(4500),
        "never closed (read timed out): {waited:?}"
    );

    // Two connections held open; a third is accepted by the kernel and
    // closed at once by the node.
    let first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let answer = send_raw(port, &frame(1, b"node\n"));
    assert!(
        answer.is_empty(),
        "a third connection was served: {answer:?}"
    );
    drop((first, second));
    // Once the node has seen them go, connections are served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = send_raw(port, &frame(1, b"node\n"));
        if String::from_utf8_lossy(&answer).contains("node\t") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(node.terminate(), Some(0));
}
