//! `aerie node` as a real process, driven by the official `aerospike` Rust
//! client (3.x): every single-record command and policy, error codes, TTLs,
//! batch reads with missing keys, scans, truncate, and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use aerospike::operations;
use aerospike::{
    Bins, Client, ClientPolicy, Expiration, GenerationPolicy, ReadPolicy, RecordExistsAction,
    ResultCode, Value, WritePolicy, as_bin, as_key,
};
use common::NodeProcess;

async fn client(node: &NodeProcess) -> Client {
    Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap()
}

fn code(result: aerospike::Result<impl std::fmt::Debug>) -> Option<ResultCode> {
    result.unwrap_err().server_result_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_record_commands_policies_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let client = client(&node).await;
    let wp = WritePolicy::default();
    let rp = ReadPolicy::default();
    let key = as_key!("test", "demo", "k1");

    client
        .put(&wp, &key, &[as_bin!("a", 1), as_bin!("s", "hello")])
        .await
        .unwrap();
    let record = client.get(&rp, &key, Bins::All).await.unwrap();
    assert_eq!(record.bins.get("a"), Some(&Value::Int(1)));
    assert_eq!(record.bins.get("s"), Some(&Value::from("hello")));
    assert_eq!(record.generation, 1);
    let only = client.get(&rp, &key, ["s"]).await.unwrap();
    assert_eq!(only.bins.len(), 1);
    let header = client.get(&rp, &key, Bins::None).await.unwrap();
    assert!(header.bins.is_empty());
    assert_eq!(header.generation, 1);
    assert!(client.exists(&rp, &key).await.unwrap());

    // Increment, append, prepend, operate with per-op results.
    client.add(&wp, &key, &[as_bin!("a", 41)]).await.unwrap();
    client
        .append(&wp, &key, &[as_bin!("s", "!")])
        .await
        .unwrap();
    client
        .prepend(&wp, &key, &[as_bin!("s", ">")])
        .await
        .unwrap();
    let bin = as_bin!("a", 1);
    let ops = [
        operations::add(&bin),
        operations::get_bin("a"),
        operations::get_bin("s"),
    ];
    let record = client.operate(&wp, &key, &ops).await.unwrap();
    assert_eq!(
        record.bins.get("a"),
        Some(&Value::MultiResult(vec![Value::Nil, Value::Int(43)]))
    );
    assert_eq!(record.bins.get("s"), Some(&Value::from(">hello!")));

    // Errors with their codes.
    let create_only = WritePolicy {
        record_exists_action: RecordExistsAction::CreateOnly,
        ..WritePolicy::default()
    };
    assert_eq!(
        code(client.put(&create_only, &key, &[as_bin!("a", 0)]).await),
        Some(ResultCode::KeyExistsError)
    );
    let gen_policy = WritePolicy {
        generation_policy: GenerationPolicy::ExpectGenEqual,
        generation: 1,
        ..WritePolicy::default()
    };
    assert_eq!(
        code(client.put(&gen_policy, &key, &[as_bin!("a", 0)]).await),
        Some(ResultCode::GenerationError)
    );
    assert_eq!(
        code(client.append(&wp, &key, &[as_bin!("a", "x")]).await),
        Some(ResultCode::BinTypeError)
    );
    let missing = as_key!("test", "demo", "nope");
    assert_eq!(
        code(client.get(&rp, &missing, Bins::All).await),
        Some(ResultCode::KeyNotFoundError)
    );
    let update_only = WritePolicy {
        record_exists_action: RecordExistsAction::UpdateOnly,
        ..WritePolicy::default()
    };
    assert_eq!(
        code(client.put(&update_only, &missing, &[as_bin!("a", 0)]).await),
        Some(ResultCode::KeyNotFoundError)
    );
    assert!(!client.exists(&rp, &missing).await.unwrap());

    // Replace drops other bins; touch bumps the generation.
    let replace = WritePolicy {
        record_exists_action: RecordExistsAction::Replace,
        ..WritePolicy::default()
    };
    client
        .put(&replace, &key, &[as_bin!("only", 7)])
        .await
        .unwrap();
    let before = client.get(&rp, &key, Bins::All).await.unwrap();
    assert_eq!(before.bins.keys().collect::<Vec<_>>(), vec!["only"]);
    client.touch(&wp, &key).await.unwrap();
    let after = client.get(&rp, &key, Bins::None).await.unwrap();
    assert_eq!(after.generation, before.generation + 1);

    // TTL: a 1-second record expires; never-expire has no expiration.
    let short = WritePolicy {
        expiration: Expiration::Seconds(1),
        ..WritePolicy::default()
    };
    let ttl_key = as_key!("test", "demo", "ttl");
    client
        .put(&short, &ttl_key, &[as_bin!("a", 1)])
        .await
        .unwrap();
    let record = client.get(&rp, &ttl_key, Bins::All).await.unwrap();
    assert!(
        record.time_to_live().is_some_and(|t| t.as_secs() <= 1),
        "{:?}",
        record.time_to_live()
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        code(client.get(&rp, &ttl_key, Bins::All).await),
        Some(ResultCode::KeyNotFoundError)
    );

    // Durable delete.
    assert!(client.delete(&wp, &key).await.unwrap());
    assert!(!client.delete(&wp, &key).await.unwrap());
    assert_eq!(
        code(client.get(&rp, &key, Bins::All).await),
        Some(ResultCode::KeyNotFoundError)
    );
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_scan_truncate_and_restarts_keep_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProcess::start(&data);
    let client = client(&node).await;
    let wp = WritePolicy::default();
    for i in 0..500i64 {
        let key = as_key!("test", "batch", i);
        client.put(&wp, &key, &[as_bin!("i", i)]).await.unwrap();
    }
    // A batch of 1000 keys, half of them missing.
    let policy = aerospike::BatchPolicy::default();
    let read = aerospike::BatchReadPolicy::default();
    let mut ops: Vec<aerospike::BatchOperation> = (0..1000i64)
        .map(|i| aerospike::BatchOperation::read(&read, as_key!("test", "batch", i), Bins::All))
        .collect();
    client.batch(&policy, &mut ops).await.unwrap();
    for (i, op) in ops.iter().enumerate() {
        let found = op.record().map(|r| r.bins.get("i").cloned());
        if i < 500 {
            assert_eq!(found, Some(Some(Value::Int(i as i64))), "key {i}");
        } else {
            assert!(found.is_none(), "key {i}: {found:?}");
        }
    }

    // A scan over every partition sees every record exactly once.
    let statement = aerospike::Statement::new("test", "batch", Bins::All);
    let records = client
        .query(
            &aerospike::QueryPolicy::default(),
            aerospike::PartitionFilter::all(),
            statement,
        )
        .await
        .unwrap();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    let mut stream = records.into_stream();
    use futures::StreamExt;
    while let Some(record) = stream.next().await {
        let record = record.unwrap();
        if let Some(Value::Int(i)) = record.bins.get("i") {
            *seen.entry(*i).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 500);
    assert!(seen.values().all(|&n| n == 1));

    // Restart with SIGTERM, then with SIGKILL: everything acknowledged stays.
    client.close().await.unwrap();
    assert_eq!(node.terminate(), Some(0));
    let node = NodeProcess::start(&data);
    let client = self::client(&node).await;
    for i in (0..500i64).step_by(7) {
        let bin = as_bin!("i", 1);
        client
            .add(&wp, &as_key!("test", "batch", i), &[bin])
            .await
            .unwrap();
    }
    client.close().await.unwrap();
    node.kill();
    let node = NodeProcess::start(&data);
    let client = self::client(&node).await;
    for i in 0..500i64 {
        let record = client
            .get(
                &ReadPolicy::default(),
                &as_key!("test", "batch", i),
                Bins::All,
            )
            .await
            .unwrap();
        let expected = if i % 7 == 0 { i + 1 } else { i };
        assert_eq!(record.bins.get("i"), Some(&Value::Int(expected)), "key {i}");
    }

    // Truncate the set: everything in it disappears.
    client
        .truncate(&aerospike::AdminPolicy::default(), "test", "batch", 0)
        .await
        .unwrap();
    let gone = client
        .get(
            &ReadPolicy::default(),
            &as_key!("test", "batch", 3),
            Bins::All,
        )
        .await;
    assert_eq!(code(gone), Some(ResultCode::KeyNotFoundError));

    // A cut-off later than the node's clock is refused with PARAMETER_ERROR.
    let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    let since_epoch = tomorrow.duration_since(std::time::UNIX_EPOCH).unwrap();
    let refused = client
        .truncate(
            &aerospike::AdminPolicy::default(),
            "test",
            "batch",
            i64::try_from(since_epoch.as_nanos()).unwrap(),
        )
        .await;
    assert_eq!(code(refused), Some(ResultCode::ParameterError));
    client.close().await.unwrap();
}

/// Records written with `aerie bench --workload insert` (keys 0..n in set
/// `bench`), then scanned in pages of `max_records` resumed from the client's
/// partition filter: every record exactly once.
async fn paged_scan_sees_every_record_once(records: u64, page: u64) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args([
            "bench",
            "--host",
            &node.address(),
            "--workload",
            "insert",
            "--connections",
            "32",
        ])
        .args([
            "--keys",
            &records.to_string(),
            "--duration-secs",
            "600",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = client(&node).await;
    let mut filter = aerospike::PartitionFilter::all();
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    use futures::StreamExt;
    while !filter.done() {
        let policy = aerospike::QueryPolicy {
            max_records: page,
            ..aerospike::QueryPolicy::default()
        };
        let statement = aerospike::Statement::new("test", "bench", Bins::None);
        let recordset = client
            .query(&policy, filter.clone(), statement)
            .await
            .unwrap();
        let mut stream = recordset.clone().into_stream();
        let mut in_page = 0;
        while let Some(record) = stream.next().await {
            let record = record.unwrap();
            assert!(
                seen.insert(record.key.unwrap().digest()),
                "a record came back twice"
            );
            in_page += 1;
        }
        assert!(in_page <= page, "page of {in_page} > {page}");
        filter = recordset.partition_filter().unwrap();
        pages += 1;
        assert!(pages <= records / page + 4097, "scan does not finish");
    }
    assert_eq!(seen.len() as u64, records);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_scan_of_10k_records_resumes_to_every_record_once() {
    paged_scan_sees_every_record_once(10_000, 3_000).await;
}

/// The size: `cargo test --release --test node_client -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_paged_scan_of_100k_records_resumes_to_every_record_once() {
    paged_scan_sees_every_record_once(100_000, 30_000).await;
}
