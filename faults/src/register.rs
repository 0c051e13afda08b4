//! The register workload: clients of the official Aerospike Rust client
//! read, write and compare-and-set (through the generation policy) a few
//! keys, and every operation is recorded with its invoke and completion
//! times and its outcome: ok, a definite failure (the server said it did
//! not run), or indeterminate (a timeout or an in-doubt answer: it may have
//! run). Writes carry unique values, so a read names the write it saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::{
    Bins, Client, Error as AsError, GenerationPolicy, Key, ReadPolicy, ResultCode, Value,
    WritePolicy, as_bin, as_key,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The namespace and set the workload writes.
pub const NAMESPACE: &str = "test";
const SET: &str = "register";
const BIN: &str = "v";
/// A client's deadline per operation (the server gets it as the
/// transaction's time to live).
const OP_TIMEOUT_MS: u32 = 1_000;

/// A register's value and generation (none: the record does not exist).
pub type Version = Option<(i64, u32)>;

/// What an operation asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Call {
    Read,
    Write {
        value: i64,
    },
    /// Write `value` if the generation is `expected`.
    Cas {
        expected: u32,
        value: i64,
    },
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// It ran; a read saw this version.
    Ok { read: Version },
    /// It surely did not run (a compare-and-set whose generation did not
    /// match counts as run: `CasFailed`).
    Failed { code: String },
    /// A compare-and-set that ran and found another generation.
    CasFailed,
    /// It may or may not have run.
    Unknown { error: String },
}

/// One operation of the history, times in µs from the start.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: u32,
    pub key: i64,
    pub call: Call,
    pub outcome: Outcome,
    pub invoke_us: i64,
    pub complete_us: i64,
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: u32,
    pub keys: i64,
    pub seed: u64,
}

pub(crate) fn write_policy() -> WritePolicy {
    let mut policy = WritePolicy::default();
    policy.base_policy.total_timeout = OP_TIMEOUT_MS;
    // A retried write could run twice; a write not retried is in doubt or not.
    policy.base_policy.max_retries = 0;
    policy
}

fn read_policy() -> ReadPolicy {
    let mut policy = ReadPolicy::default();
    policy.base_policy.total_timeout = OP_TIMEOUT_MS;
    policy
}

/// Runs the workload until `until`; returns every operation, in no order.
pub async fn run(
    client: Arc<Client>,
    workload: &Workload,
    start: Instant,
    until: Instant,
) -> Vec<Op> {
    let tasks: Vec<_> = (0..workload.clients)
        .map(|c| {
            let client = client.clone();
            let w = workload.clone();
            tokio::spawn(async move { client_loop(&client, c, &w, start, until).await })
        })
        .collect();
    let mut history = Vec::new();
    for task in tasks {
        if let Ok(ops) = task.await {
            history.extend(ops);
        }
    }
    history
}

async fn client_loop(
    client: &Client,
    id: u32,
    w: &Workload,
    start: Instant,
    until: Instant,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(w.seed ^ (u64::from(id) << 40));
    let mut last_seen: HashMap<i64, u32> = HashMap::new();
    let mut ops = Vec::new();
    let mut next_value = 0i64;
    let us = |at: Instant| at.duration_since(start).as_micros() as i64;
    while Instant::now() < until {
        let key = rng.random_range(0..w.keys);
        next_value += 1;
        let value = (i64::from(id) << 32) | next_value;
        let call = match (rng.random_range(0..4), last_seen.get(&key)) {
            (0 | 1, _) => Call::Read,
            (2, Some(&expected)) => Call::Cas { expected, value },
            _ => Call::Write { value },
        };
        let invoke = Instant::now();
        let outcome = execute(client, &as_key!(NAMESPACE, SET, key), &call).await;
        let complete = Instant::now();
        if let Outcome::Ok {
            read: Some((_, generation)),
        } = &outcome
        {
            last_seen.insert(key, *generation);
        }
        let unavailable = matches!(outcome, Outcome::Failed { .. } | Outcome::Unknown { .. });
        ops.push(Op {
            client: id,
            key,
            call,
            outcome,
            invoke_us: us(invoke),
            complete_us: us(complete),
        });
        if unavailable {
            // Not a hot loop against a node that is down.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ops
}

async fn execute(client: &Client, key: &Key, call: &Call) -> Outcome {
    match call {
        Call::Read => match client.get(&read_policy(), key, Bins::All).await {
            Ok(record) => match record.bins.get(BIN) {
                Some(Value::Int(v)) => Outcome::Ok {
                    read: Some((*v, record.generation)),
                },
                other => Outcome::Unknown {
                    error: format!("a record without an integer {BIN:?}: {other:?}"),
                },
            },
            Err(e) if e.server_result_code() == Some(ResultCode::KeyNotFoundError) => {
                Outcome::Ok { read: None }
            }
            Err(e) => classify(&e),
        },
        Call::Write { value } => written(
            client
                .put(&write_policy(), key, &[as_bin!(BIN, *value)])
                .await,
        ),
        Call::Cas { expected, value } => {
            let mut policy = write_policy();
            policy.generation_policy = GenerationPolicy::ExpectGenEqual;
            policy.generation = *expected;
            match client.put(&policy, key, &[as_bin!(BIN, *value)]).await {
                Err(e) if e.server_result_code() == Some(ResultCode::GenerationError) => {
                    Outcome::CasFailed
                }
                other => written(other),
            }
        }
    }
}

fn written(result: Result<(), AsError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok { read: None },
        Err(e) => classify(&e),
    }
}

/// A server's answer that the operation did not run is a definite failure;
/// everything else (timeouts, in-doubt answers, a connection lost after the
/// request may have left) is indeterminate.
pub(crate) fn classify(e: &AsError) -> Outcome {
    match e.server_result_code() {
        Some(code) if !e.in_doubt() && code != ResultCode::Timeout => Outcome::Failed {
            code: format!("{code:?}"),
        },
        _ => Outcome::Unknown {
            error: e.to_string(),
        },
    }
}
