//! A crash loop: `aerie node` SIGKILLed within a second of start, again and
//! again, while clients write and read back their own writes. Every write
//! carries a value no other request ever carries and reads it back in the
//! same operation, so a reply that belonged to another request (an entry
//! replayed after a crash completing a new client's waiter) shows at once.
//! After each restart every key holds its last acknowledged value or a later
//! in-doubt one of the same client.
//!
//! `AERIE_CRASH_ROUNDS=100 cargo test --test node_crash_loop -- --ignored`
//! for a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aerospike::operations;
use aerospike::{
    Bins, Client, ClientPolicy, ReadPolicy, ResultCode, Value, WritePolicy, as_bin, as_key,
};
use common::NodeProcess;
use rand::{Rng, SeedableRng};

const CLIENTS: u64 = 3;
const KEYS_PER_CLIENT: u64 = 16;

/// What one client knows of its keys.
#[derive(Default, Clone)]
struct History {
    /// Per key: the last acknowledged value, then the values written after
    /// it whose outcome is unknown.
    keys: HashMap<u64, (Option<i64>, Vec<i64>)>,
    /// Writes acknowledged (and checked) over all rounds.
    acked: u64,
}

impl History {
    fn allowed(&self, key: u64) -> Vec<Option<i64>> {
        let (acked, doubtful) = self.keys.get(&key).cloned().unwrap_or_default();
        let mut allowed = vec![acked];
        allowed.extend(doubtful.into_iter().map(Some));
        allowed
    }
}

fn key(client: u64, k: u64) -> aerospike::Key {
    as_key!("test", "crash", format!("c{client}-k{k}"))
}

fn as_int(value: Option<&Value>) -> Option<i64> {
    match value {
        Some(Value::Int(v)) => Some(*v),
        // put then get of one bin: [put's Nil, the value read].
        Some(Value::MultiResult(results)) => as_int(results.last()),
        None => None,
        other => panic!("unexpected value {other:?}"),
    }
}

/// Checks that every key holds what its history allows.
async fn check(client: &Client, id: u64, history: &History) {
    for k in 0..KEYS_PER_CLIENT {
        let record = client
            .get(&ReadPolicy::default(), &key(id, k), Bins::All)
            .await;
        let found = match record {
            Ok(record) => as_int(record.bins.get("v")),
            Err(e) if e.server_result_code() == Some(ResultCode::KeyNotFoundError) => None,
            Err(e) => panic!("client {id} key {k}: read failed after restart: {e}"),
        };
        let allowed = history.allowed(k);
        assert!(
            allowed.contains(&found),
            "client {id} key {k}: found {found:?}, allowed {allowed:?}"
        );
    }
}

/// Writes until the node goes away; every reply is checked against the
/// request it answers.
async fn write_loop(client: &Client, id: u64, round: u64, history: &mut History) {
    let wp = WritePolicy::default();
    for n in 0u64.. {
        let k = n % KEYS_PER_CLIENT;
        let value = ((round << 40) | (id << 32) | n) as i64;
        let bin = as_bin!("v", value);
        let ops = [operations::put(&bin), operations::get_bin("v")];
        let entry = history.keys.entry(k).or_default();
        match client.operate(&wp, &key(id, k), &ops).await {
            Ok(record) => {
                let got = as_int(record.bins.get("v"));
                assert_eq!(
                    got,
                    Some(value),
                    "client {id}: a reply carried another request's result"
                );
                *entry = (Some(value), Vec::new());
                history.acked += 1;
                let read = client
                    .get(&ReadPolicy::default(), &key(id, k), Bins::All)
                    .await;
                match read {
                    Ok(record) => assert_eq!(as_int(record.bins.get("v")), Some(value)),
                    Err(_) => return,
                }
            }
            Err(e) => {
                let code = e.server_result_code();
                let definite = !e.in_doubt() && code.is_some_and(|c| c != ResultCode::Timeout);
                if !definite {
                    // The node may have applied it before it died.
                    entry.1.push(value);
                }
                match code {
                    // No leader yet (the node just started): surely not run.
                    Some(ResultCode::PartitionUnavailable) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Some(ResultCode::Timeout) | None => return,
                    Some(other) => panic!("client {id}: unexpected answer {other:?}: {e}"),
                }
            }
        }
    }
}

fn rounds(default: u64) -> u64 {
    std::env::var("AERIE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn crash_loop(rounds: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut histories: Vec<History> = vec![History::default(); CLIENTS as usize];
    let started = Instant::now();
    for round in 0..rounds {
        let node = NodeProcess::start(&data);
        let client = std::sync::Arc::new(
            Client::new(&ClientPolicy::default(), &node.address())
                .await
                .unwrap(),
        );
        for (id, history) in histories.iter().enumerate() {
            check(&client, id as u64, history).await;
        }
        let mut tasks = Vec::new();
        for (id, history) in histories.drain(..).enumerate() {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut history = history;
                write_loop(&client, id as u64, round, &mut history).await;
                history
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1000))).await;
        node.kill();
        for task in tasks {
            histories.push(task.await.unwrap());
        }
        client.close().await.ok();
    }
    let node = NodeProcess::start(&data);
    let client = Client::new(&ClientPolicy::default(), &node.address())
        .await
        .unwrap();
    for (id, history) in histories.iter().enumerate() {
        check(&client, id as u64, history).await;
    }
    let acked: u64 = histories.iter().map(|h| h.acked).sum();
    eprintln!(
        "{rounds} SIGKILLs in {:?}, {acked} writes acknowledged and read back",
        started.elapsed()
    );
    assert!(acked >= rounds, "the clients barely wrote: {acked} writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_no_reply_belongs_to_another_request() {
    crash_loop(rounds(6), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: AERIE_CRASH_ROUNDS=100 cargo test --test node_crash_loop -- --ignored"]
async fn sigkill_loop_long() {
    crash_loop(rounds(50), 11).await;
}
