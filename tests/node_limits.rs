//! What a client cannot do to `aerie node` (a real process, driven by the
//! official `aerospike` Rust client 3.x and by raw sockets): records past
//! the size limit are refused with 13 and the node keeps serving; filter
//! expressions are refused with 16 and change nothing; keys sent with
//! send-key come back from scans, queries and batch reads; a message past
//! the service limit closes only its own connection; a sender trickling a
//! message loses its connection at the whole-message deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use aerospike::expressions::{gt, int_bin, int_val};
use aerospike::{
    BatchOperation, BatchPolicy, BatchReadPolicy, Bins, Client, ClientPolicy, Key, PartitionFilter,
    QueryPolicy, ReadPolicy, ResultCode, Statement, Value, WritePolicy, as_bin, as_key,
};
use common::NodeProcess;
use futures::StreamExt;

async fn client(node: &NodeProcess) -> Client {
    Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap()
}

fn code<T: std::fmt::Debug>(result: aerospike::Result<T>) -> Option<ResultCode> {
    result.unwrap_err().server_result_code()
}

/// A node started with `config` (TOML) on a free port.
fn node_with(dir: &Path, config: &str) -> NodeProcess {
    let file = dir.join("aerie.toml");
    std::fs::write(&file, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    NodeProcess::start_with(&dir.join("data"), port, Some(&file), false)
}

/// A put and a get still work.
async fn serves(client: &Client, what: &str) {
    let key = as_key!("test", "steady", what);
    client
        .put(&WritePolicy::default(), &key, &[as_bin!("n", 7)])
        .await
        .unwrap_or_else(|e| panic!("put after {what}: {e}"));
    let record = client.get(&ReadPolicy::default(), &key, Bins::All).await;
    assert_eq!(
        record.unwrap().bins.get("n"),
        Some(&Value::Int(7)),
        "{what}"
    );
}

/// Every record of `set`, by a query over all partitions.
async fn scan_all(
    client: &Client,
    policy: &QueryPolicy,
    statement: Statement,
) -> Vec<aerospike::Record> {
    let records = client
        .query(policy, PartitionFilter::all(), statement)
        .await
        .unwrap();
    let mut stream = records.into_stream();
    let mut out = Vec::new();
    while let Some(record) = stream.next().await {
        out.push(record.unwrap());
        assert!(out.len() <= 10_000, "scan does not end");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_the_size_limit_answer_13_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let client = client(&node).await;
    let wp = WritePolicy::default();
    serves(&client, "start").await;

    // 20 MiB: larger than a WAL entry may be; refused before it is proposed.
    let huge = as_key!("test", "big", "huge");
    let put = client
        .put(&wp, &huge, &[as_bin!("b", vec![7u8; 20 << 20])])
        .await;
    assert_eq!(code(put), Some(ResultCode::RecordTooBig));
    serves(&client, "a 20 MiB put").await;
    // Just over the 1 MiB default.
    let over = client
        .put(&wp, &huge, &[as_bin!("b", vec![7u8; (1 << 20) + 1])])
        .await;
    assert_eq!(code(over), Some(ResultCode::RecordTooBig));
    let missing = client.get(&ReadPolicy::default(), &huge, Bins::All).await;
    assert_eq!(code(missing), Some(ResultCode::KeyNotFoundError));

    // Appends that are small one by one are refused once the record would
    // pass the limit, and leave it as it was.
    let grown = as_key!("test", "big", "grown");
    let chunk = "x".repeat(600 << 10);
    client
        .put(&wp, &grown, &[as_bin!("s", chunk.as_str())])
        .await
        .unwrap();
    let append = client
        .append(&wp, &grown, &[as_bin!("s", chunk.as_str())])
        .await;
    assert_eq!(code(append), Some(ResultCode::RecordTooBig));
    let record = client
        .get(&ReadPolicy::default(), &grown, Bins::All)
        .await
        .unwrap();
    assert_eq!(record.generation, 1);
    assert_eq!(record.bins.get("s"), Some(&Value::from(chunk.as_str())));
    serves(&client, "a refused append").await;
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sent_with_send_key_come_back_from_scans_queries_and_batch_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let client = client(&node).await;
    let wp = WritePolicy {
        send_key: true,
        ..WritePolicy::default()
    };
    let n = 50i64;
    for i in 0..n {
        let key = as_key!("test", "keys", format!("user-{i}"));
        client
            .put(&wp, &key, &[as_bin!("i", i), as_bin!("other", "x")])
            .await
            .unwrap();
    }
    let expect_key = |record: &aerospike::Record| {
        let key = record.key.as_ref().expect("a key");
        let i = match record.bins.get("i") {
            Some(Value::Int(i)) => *i,
            other => panic!("bin i: {other:?}"),
        };
        assert_eq!(
            key.user_key(),
            Some(&Value::from(format!("user-{i}"))),
            "record {i}"
        );
    };

    // A scan of the set.
    let all = scan_all(
        &client,
        &QueryPolicy::default(),
        Statement::new("test", "keys", Bins::All),
    )
    .await;
    assert_eq!(all.len() as i64, n);
    all.iter().for_each(expect_key);
    // A paged query selecting one bin.
    let paged = QueryPolicy {
        max_records: 20,
        ..QueryPolicy::default()
    };
    let mut filter = PartitionFilter::all();
    let mut seen = 0;
    for _ in 0..(n / 20 + 4097) {
        if filter.done() {
            break;
        }
        let statement = Statement::new("test", "keys", Bins::from(["i"]));
        let records = client
            .query(&paged, filter.clone(), statement)
            .await
            .unwrap();
        let mut stream = records.clone().into_stream();
        while let Some(record) = stream.next().await {
            let record = record.unwrap();
            assert!(record.bins.get("other").is_none(), "bin selection");
            expect_key(&record);
            seen += 1;
        }
        filter = records.partition_filter().unwrap();
    }
    assert_eq!(seen, n);
    // A batch read.
    let read = BatchReadPolicy::default();
    let mut ops: Vec<BatchOperation> = (0..n)
        .map(|i| {
            BatchOperation::read(
                &read,
                as_key!("test", "keys", format!("user-{i}")),
                Bins::All,
            )
        })
        .collect();
    client
        .batch(&BatchPolicy::default(), &mut ops)
        .await
        .unwrap();
    for op in &ops {
        expect_key(op.record().expect("found"));
    }

    // Another key under a stored record's digest is a mismatch.
    let stored = as_key!("test", "keys", "user-1");
    let impostor = Key::with_digest("test", "keys", Some(Value::from("nobody")), stored.digest());
    let put = client.put(&wp, &impostor, &[as_bin!("i", -1)]).await;
    assert_eq!(code(put), Some(ResultCode::KeyMismatch));
    let record = client
        .get(&ReadPolicy::default(), &stored, Bins::All)
        .await
        .unwrap();
    assert_eq!(record.bins.get("i"), Some(&Value::Int(1)));
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_expressions_answer_16_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let client = client(&node).await;
    let keys: Vec<Key> = (0..3).map(|i| as_key!("test", "filtered", i)).collect();
    for key in &keys {
        client
            .put(&WritePolicy::default(), key, &[as_bin!("x", 1)])
            .await
            .unwrap();
    }
    let x_over_5 = || Some(gt(int_bin("x"), int_val(5)));
    let unchanged = |record: aerospike::Record| {
        assert_eq!(record.bins.get("x"), Some(&Value::Int(1)));
        assert_eq!(record.generation, 1);
    };

    // A put whose filter is false must not overwrite the record.
    let mut wp = WritePolicy::default();
    wp.base_policy.filter_expression = x_over_5();
    let put = client.put(&wp, &keys[0], &[as_bin!("x", 100)]).await;
    assert_eq!(code(put), Some(ResultCode::UnsupportedFeature));
    let mut rp = ReadPolicy::default();
    rp.base_policy.filter_expression = x_over_5();
    let get = client.get(&rp, &keys[0], Bins::All).await;
    assert_eq!(code(get), Some(ResultCode::UnsupportedFeature));
    let delete = client.delete(&wp, &keys[0]).await;
    assert_eq!(code(delete), Some(ResultCode::UnsupportedFeature));

    // A filter on one batch row refuses that row; on the batch, the batch.
    let filtered_row = BatchReadPolicy {
        filter_expression: x_over_5(),
        ..BatchReadPolicy::default()
    };
    let plain = BatchReadPolicy::default();
    let mut ops = vec![
        BatchOperation::read(&filtered_row, keys[0].clone(), Bins::All),
        BatchOperation::read(&plain, keys[1].clone(), Bins::All),
        BatchOperation::read(&plain, keys[2].clone(), Bins::All),
    ];
    let _ = client.batch(&BatchPolicy::default(), &mut ops).await;
    assert_eq!(ops[0].result_code(), Some(ResultCode::UnsupportedFeature));
    assert!(ops[0].record().is_none());
    assert!(ops[1].record().is_some() && ops[2].record().is_some());
    let mut batch_policy = BatchPolicy::default();
    batch_policy.base_policy.filter_expression = x_over_5();
    let mut ops: Vec<BatchOperation> = keys
        .iter()
        .map(|k| BatchOperation::read(&plain, k.clone(), Bins::All))
        .collect();
    // The Rust client stamps the batch-level error on the first row only.
    let batch = client.batch(&batch_policy, &mut ops).await;
    let codes: Vec<_> = ops.iter().map(BatchOperation::result_code).collect();
    assert!(
        batch.as_ref().err().and_then(|e| e.server_result_code())
            == Some(ResultCode::UnsupportedFeature)
            || codes.contains(&Some(ResultCode::UnsupportedFeature)),
        "{batch:?} {codes:?}"
    );
    assert!(ops.iter().all(|op| op.record().is_none()));

    // A scan with a filter returns nothing and fails.
    let mut qp = QueryPolicy::default();
    qp.base_policy.filter_expression = x_over_5();
    let records = client
        .query(
            &qp,
            PartitionFilter::all(),
            Statement::new("test", "filtered", Bins::All),
        )
        .await
        .unwrap();
    let mut stream = records.into_stream();
    let mut results = Vec::new();
    while let Some(item) = stream.next().await {
        results.push(item);
        assert!(results.len() <= 10, "a filtered scan keeps going");
    }
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().err().and_then(|e| e.server_result_code())
                == Some(ResultCode::UnsupportedFeature)),
        "{results:?}"
    );
    assert!(
        results.iter().all(Result::is_err),
        "records came back: {results:?}"
    );

    for key in &keys {
        unchanged(
            client
                .get(&ReadPolicy::default(), key, Bins::All)
                .await
                .unwrap(),
        );
    }
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_record_size_bytes_is_a_namespace_setting_checked_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(["node", "--print-default-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("max_record_size_bytes = 1048576"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[namespaces]]\nname = \"test\"\nwrite_block_size_bytes = 65536\nmax_record_size_bytes = 131072\n",
    )
    .unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(["node", "--config", bad.to_str().unwrap()])
        .env("AERIE_DATA_DIR", dir.path().join("bad-data"))
        .env("AERIE_PORT", "0")
        .env("AERIE_FABRIC_PORT", "0")
        .env("AERIE_METRICS_PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("max_record_size_bytes"), "{stderr}");

    let node = node_with(
        dir.path(),
        "[[namespaces]]\nname = \"test\"\nmax_record_size_bytes = 4096\n",
    );
    let client = client(&node).await;
    let key = as_key!("test", "small", 1);
    let put = |n: usize| {
        let bins = [as_bin!("b", vec![1u8; n])];
        let (client, key) = (&client, &key);
        async move { client.put(&WritePolicy::default(), key, &bins).await }
    };
    assert_eq!(code(put(5000).await), Some(ResultCode::RecordTooBig));
    put(3000).await.unwrap();
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

fn frame_header(msg_type: u8, size: u64) -> Vec<u8> {
    let mut out = vec![2, msg_type];
    out.extend_from_slice(&size.to_be_bytes()[2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_limit_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), "[service]\nmax_message_bytes = 1048576\n");
    let client = client(&node).await;
    serves(&client, "start").await;
    // A client connection opened before stays usable.
    let mut bystander = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    bystander
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let mut big = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = frame_header(3, 2 << 20);
    bytes.extend_from_slice(&[0x16; 4096]);
    let _ = big.write_all(&bytes);
    let mut answer = Vec::new();
    let closed = big.read_to_end(&mut answer);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the oversized connection was not closed: {closed:?}"
    );
    assert!(answer.is_empty() || answer[0] == 2, "{answer:?}");

    let mut info = frame_header(1, 5);
    info.extend_from_slice(b"node\n");
    bystander.write_all(&info).unwrap();
    let mut reply = [0u8; 64];
    let n = bystander.read(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..n]).contains("node\t"),
        "{:?}",
        &reply[..n]
    );
    serves(&client, "an oversized message").await;
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[test]
fn a_sender_trickling_a_message_is_cut_off_at_the_message_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // The idle timeout (2 s) never passes between two bytes (1 s apart); the
    // whole message (13 bytes, 13 s) cannot arrive within it.
    let node = node_with(dir.path(), "[service]\nidle_timeout_ms = 2000\n");
    let mut message = frame_header(1, 5);
    message.extend_from_slice(b"node\n");
    let stream = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        let mut stream = stream;
        for byte in message {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let mut buf = [0u8; 64];
    let read = reader.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected the node to close the connection, got {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "closed early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(6), "closed late: {waited:?}");
    trickle.join().unwrap();
    // And the node serves others.
    let mut other = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut info = frame_header(1, 5);
    info.extend_from_slice(b"node\n");
    other.write_all(&info).unwrap();
    let n = other.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("node\t"));
    assert_eq!(node.terminate(), Some(0));
}
