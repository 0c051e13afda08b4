//! The counter and set workloads: what was acknowledged must be there at
//! the end, and nothing that was never attempted.
//!
//! * counter: increments through `operate` (add 1) on a few keys; after the
//!   quiet period each key's value must lie between the increments
//!   acknowledged and those attempted (acknowledged plus indeterminate).
//! * set: unique adds (a new record per element); after the quiet period
//!   every acknowledged element is present, and no element whose add was
//!   definitely refused is (a definite error means it did not run): each
//!   attempted element is read back, and a scan of the whole set must return
//!   every acknowledged element once and nothing never attempted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::{
    Bins, Client, Error as AsError, Key, ReadPolicy, Record, ResultCode, Value, as_bin, as_key,
    operations,
};
use serde::Serialize;

use crate::register::{NAMESPACE, Outcome, classify, write_policy};

const COUNTER_SET: &str = "counter";
const ELEMENT_SET: &str = "set";
const BIN: &str = "n";
/// Tasks reading the set's elements back.
const FINAL_READERS: usize = 8;
/// How long the final read of one key keeps trying.
const FINAL_READ_DEADLINE: Duration = Duration::from_secs(20);
/// How long the final scan keeps trying (a scan that fails starts again).
const FINAL_SCAN_DEADLINE: Duration = Duration::from_secs(60);

/// A counter key whose final value is outside what the history allows.
#[derive(Debug, Clone, Serialize)]
pub struct CounterMiss {
    pub key: i64,
    pub value: Option<i64>,
    pub acknowledged: u64,
    pub indeterminate: u64,
}

/// What the counter workload found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CounterReport {
    pub acknowledged: u64,
    pub failed: u64,
    pub indeterminate: u64,
    pub misses: Vec<CounterMiss>,
}

/// What the set workload found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetReport {
    pub acknowledged: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Acknowledged elements missing at the end (lost writes).
    pub lost: Vec<i64>,
    /// Elements present that were never attempted.
    pub unexpected: Vec<i64>,
    /// Elements whose final read never got an answer.
    pub unread: Vec<i64>,
    /// Records the final scan returned.
    pub scanned: u64,
    /// What the final scan got wrong: acknowledged elements it did not
    /// return, elements it returned twice or that were never attempted or
    /// definitely refused, or its error.
    pub scan_errors: Vec<String>,
}

impl SetReport {
    /// Nothing lost, nothing unexpected, everything read and scanned.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.unread.is_empty()
            && self.scan_errors.is_empty()
    }
}

/// Reads `key` until an answer (a record, or none) or the deadline.
async fn read_final(client: &Client, key: &Key) -> Result<Option<Record>, AsError> {
    let deadline = Instant::now() + FINAL_READ_DEADLINE;
    loop {
        match client.get(&ReadPolicy::default(), key, Bins::All).await {
            Ok(record) => return Ok(Some(record)),
            Err(e) if e.server_result_code() == Some(ResultCode::KeyNotFoundError) => {
                return Ok(None);
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Counts an outcome into (acknowledged, failed, indeterminate).
fn tally(outcome: &Outcome, counts: &mut (u64, u64, u64)) {
    match outcome {
        Outcome::Ok { .. } | Outcome::CasFailed => counts.0 += 1,
        Outcome::Failed { .. } => counts.1 += 1,
        Outcome::Unknown { .. } => counts.2 += 1,
    }
}

fn outcome(result: Result<(), AsError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok { read: None },
        Err(e) => classify(&e),
    }
}

/// Increments `keys` counters from `clients` tasks until `until`, then
/// checks every counter's final value.
pub async fn counter(
    client: Arc<Client>,
    clients: u32,
    keys: i64,
    until: Instant,
) -> CounterReport {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut per_key: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
                let mut i = i64::from(c);
                while Instant::now() < until {
                    i += 1;
                    let key = i % keys;
                    let ops = [operations::add(&as_bin!(BIN, 1))];
                    let result = client
                        .operate(&write_policy(), &as_key!(NAMESPACE, COUNTER_SET, key), &ops)
                        .await
                        .map(|_| ());
                    let outcome = outcome(result);
                    tally(&outcome, per_key.entry(key).or_default());
                    if !matches!(outcome, Outcome::Ok { .. }) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                per_key
            })
        })
        .collect();
    let mut per_key: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for task in tasks {
        for (key, (a, f, u)) in task.await.unwrap_or_default() {
            let c = per_key.entry(key).or_default();
            (c.0, c.1, c.2) = (c.0 + a, c.1 + f, c.2 + u);
        }
    }
    let mut report = CounterReport::default();
    for (&key, &(acknowledged, failed, indeterminate)) in &per_key {
        report.acknowledged += acknowledged;
        report.failed += failed;
        report.indeterminate += indeterminate;
        let value = match read_final(&client, &as_key!(NAMESPACE, COUNTER_SET, key)).await {
            Ok(Some(record)) => match record.bins.get(BIN) {
                Some(Value::Int(v)) => Some(*v),
                _ => None,
            },
            Ok(None) => Some(0),
            Err(_) => None,
        };
        let allowed =
            |v: i64| v >= acknowledged as i64 && v <= (acknowledged + indeterminate) as i64;
        if !value.is_some_and(allowed) {
            report.misses.push(CounterMiss {
                key,
                value,
                acknowledged,
                indeterminate,
            });
        }
    }
    report
}

/// Adds unique elements from `clients` tasks until `until`, then reads
/// every attempted element back.
pub async fn set(client: Arc<Client>, clients: u32, until: Instant) -> SetReport {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0i64;
                while Instant::now() < until {
                    n += 1;
                    let element = (i64::from(c) << 32) | n;
                    let key = as_key!(NAMESPACE, ELEMENT_SET, element);
                    let result = client
                        .put(&write_policy(), &key, &[as_bin!(BIN, element)])
                        .await;
                    let outcome = outcome(result);
                    let pause = !matches!(outcome, Outcome::Ok { .. });
                    outcomes.push((element, outcome));
                    if pause {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap_or_default());
    }
    let mut report = SetReport::default();
    let mut counts = (0, 0, 0);
    for (_, outcome) in &outcomes {
        tally(outcome, &mut counts);
    }
    (report.acknowledged, report.failed, report.indeterminate) = counts;
    let chunk = outcomes.len().div_ceil(FINAL_READERS).max(1);
    let readers: Vec<_> = outcomes
        .chunks(chunk)
        .map(|part| {
            let (client, part) = (client.clone(), part.to_vec());
            tokio::spawn(async move { check_elements(&client, &part).await })
        })
        .collect();
    for reader in readers {
        if let Ok((lost, unexpected, unread)) = reader.await {
            report.lost.extend(lost);
            report.unexpected.extend(unexpected);
            report.unread.extend(unread);
        }
    }
    let outcomes: BTreeMap<i64, Outcome> = outcomes.into_iter().collect();
    match scan_final(&client).await {
        Ok(scanned) => {
            report.scanned = scanned.len() as u64;
            report.scan_errors = judge_scan(&outcomes, &scanned);
        }
        Err(e) => report
            .scan_errors
            .push(format!("the final scan failed: {e}")),
    }
    report
}

/// Every element a scan of the whole set returns, in order (a repeat
/// appears twice), trying again from the start until the deadline.
async fn scan_final(client: &Client) -> Result<Vec<i64>, AsError> {
    use futures::StreamExt as _;
    let deadline = Instant::now() + FINAL_SCAN_DEADLINE;
    loop {
        let statement = aerospike::Statement::new(NAMESPACE, ELEMENT_SET, Bins::All);
        let policy = aerospike::QueryPolicy::default();
        let attempt = async {
            let records = client
                .query(&policy, aerospike::PartitionFilter::all(), statement)
                .await?;
            let mut stream = records.into_stream();
            let mut elements = Vec::new();
            while let Some(record) = stream.next().await {
                if let Some(Value::Int(element)) = record?.bins.get(BIN) {
                    elements.push(*element);
                }
            }
            Ok::<Vec<i64>, AsError>(elements)
        };
        match attempt.await {
            Ok(elements) => return Ok(elements),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// What a scan returning `scanned` got wrong against the adds' `outcomes`.
fn judge_scan(outcomes: &BTreeMap<i64, Outcome>, scanned: &[i64]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    for element in scanned {
        *seen.entry(*element).or_default() += 1;
    }
    for (element, times) in &seen {
        match outcomes.get(element) {
            None => errors.push(format!("scanned {element}, never attempted")),
            Some(Outcome::Failed { .. }) => {
                errors.push(format!("scanned {element}, whose add was refused"))
            }
            Some(_) if *times > 1 => errors.push(format!("scanned {element} {times} times")),
            Some(_) => {}
        }
    }
    for (element, outcome) in outcomes {
        if matches!(outcome, Outcome::Ok { .. }) && !seen.contains_key(element) {
            errors.push(format!("acknowledged {element} missing from the scan"));
        }
    }
    errors
}

/// The elements of `part` that are lost (acknowledged, absent), unexpected
/// (refused, present) and unread.
async fn check_elements(
    client: &Client,
    part: &[(i64, Outcome)],
) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let (mut lost, mut unexpected, mut unread) = (Vec::new(), Vec::new(), Vec::new());
    for (element, outcome) in part {
        let key = as_key!(NAMESPACE, ELEMENT_SET, *element);
        match (read_final(client, &key).await, outcome) {
            (Err(_), _) => unread.push(*element),
            (Ok(None), Outcome::Ok { .. }) => lost.push(*element),
            (Ok(Some(_)), Outcome::Failed { .. }) => unexpected.push(*element),
            _ => {}
        }
    }
    (lost, unexpected, unread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_must_return_each_acknowledged_element_once_and_nothing_else() {
        let ok = || Outcome::Ok { read: None };
        let outcomes: BTreeMap<i64, Outcome> = [
            (1, ok()),
            (2, ok()),
            (3, Outcome::Failed { code: "x".into() }),
            (4, Outcome::Unknown { error: "t".into() }),
        ]
        .into_iter()
        .collect();
        assert!(judge_scan(&outcomes, &[2, 1]).is_empty());
        assert!(
            judge_scan(&outcomes, &[1, 2, 4]).is_empty(),
            "in doubt may be there"
        );
        let errors = judge_scan(&outcomes, &[1, 1, 3, 9]);
        assert_eq!(
            errors,
            [
                "scanned 1 2 times",
                "scanned 3, whose add was refused",
                "scanned 9, never attempted",
                "acknowledged 2 missing from the scan",
            ]
        );
    }
}
