//! Aerie's fault harness: a seeded test against a cluster of real `aerie`
//! processes on 127.0.0.1. Clients of the official Aerospike client run a
//! workload while the nemesis kills and pauses nodes; after the last fault
//! every node is healed and the workload goes on through a quiet period in
//! which the cluster must recover; then the history is checked for
//! linearizability and every shard's replicas must hold the same records.
//!
//! Who owns what: [`cluster`] the processes, [`nemesis`] the schedule and
//! its execution, [`register`] the register workload and its history,
//! [`check`] its linearizability checker, [`tally`] the counter and set
//! workloads and their final checks, [`proxy`] the network between the nodes (every
//! fabric connection goes through it). Clock faults come from libfaketime,
//! disk faults from the nodes' own fault layers (a `fault-injection` build).

pub mod check;
pub mod cluster;
pub mod nemesis;
pub mod proxy;
pub mod register;
pub mod tally;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::{Client, ClientPolicy};
use serde::Serialize;
use tokio::sync::Mutex;

use check::Verdict;
use cluster::Cluster;
use register::{Call, Op, Outcome, Workload};

/// How long each key's linearizability search may take.
const CHECK_TIMEOUT_PER_KEY: Duration = Duration::from_secs(60);
/// How long all the searches together may take.
const CHECK_TIMEOUT_TOTAL: Duration = Duration::from_secs(300);
/// How long the replicas may take to agree after the run.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Reads, writes, compare-and-set: linearizability per key.
    Register,
    /// Increments: final value between acknowledged and attempted.
    Counter,
    /// Unique adds: every acknowledged one present at the end.
    Set,
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<WorkloadKind, String> {
        match s {
            "register" => Ok(WorkloadKind::Register),
            "counter" => Ok(WorkloadKind::Counter),
            "set" => Ok(WorkloadKind::Set),
            other => Err(format!(
                "unknown workload {other:?} (known: register, counter, set)"
            )),
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `aerie` binary.
    pub aerie: PathBuf,
    pub nodes: usize,
    /// The workload under faults, before the quiet period.
    pub duration_secs: u64,
    /// After the final heal: the cluster must recover in the first half,
    /// and every operation of the second half must succeed.
    pub quiet_secs: u64,
    pub nemeses: Vec<nemesis::Kind>,
    /// Half the kills, pauses and partitions hit several nodes at once: a
    /// minority, or the shards' leaders (up to a minority).
    pub multi: bool,
    /// Run side by side, each with `clients` tasks.
    pub workloads: Vec<WorkloadKind>,
    pub seed: u64,
    pub clients: u32,
    pub keys: i64,
    /// Where the nodes' data dirs, logs and the report go.
    pub work_dir: PathBuf,
}

/// Operation counts of one kind of call.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub cas_failed: u64,
    pub indeterminate: u64,
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub schedule: Vec<nemesis::Fault>,
    pub events: Vec<nemesis::Event>,
    pub counts: BTreeMap<String, Counts>,
    /// Successful operations in each second of the run.
    pub ok_per_second: Vec<u64>,
    pub keys_checked: usize,
    pub violations: Vec<i64>,
    pub unknown: Vec<i64>,
    /// Failed or indeterminate operations in the second half of the quiet
    /// period (must be none).
    pub quiet_errors: u64,
    /// Shards whose replicas differ at the same applied index, or never
    /// reached one (must be none).
    pub diverged: Vec<String>,
    pub counter: Option<tally::CounterReport>,
    pub set: Option<tally::SetReport>,
}

impl Report {
    /// No violation, nothing unknown, recovered, replicas identical.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.unknown.is_empty()
            && self.quiet_errors == 0
            && self.diverged.is_empty()
            && self.counter.as_ref().is_none_or(|c| c.misses.is_empty())
            && self.set.as_ref().is_none_or(tally::SetReport::passed)
    }
}

/// Runs one seeded test and writes `report.json`, `history.json` (every
/// operation) and, on a violation, each offending key's history with the
/// nemesis events into the work dir.
pub async fn run(options: &Options) -> Result<Report, String> {
    std::fs::create_dir_all(&options.work_dir).map_err(|e| e.to_string())?;
    let instruments = cluster::Instruments::for_faults(
        options.nemeses.contains(&nemesis::Kind::Clock),
        options.nemeses.contains(&nemesis::Kind::Disk),
    )?;
    let cluster = Cluster::start(
        &options.aerie,
        &options.work_dir,
        options.nodes,
        instruments,
    )
    .await?;
    let client = Arc::new(connect(&cluster.addresses(), options.nodes).await?);
    let cluster = Arc::new(Mutex::new(cluster));
    let faulty = Duration::from_secs(options.duration_secs);
    let quiet = Duration::from_secs(options.quiet_secs);
    let schedule = nemesis::schedule(
        options.seed,
        faulty.as_millis() as u64,
        &options.nemeses,
        options.nodes,
        options.multi,
    );
    let start = Instant::now();
    let nemesis = tokio::spawn(nemesis::run(cluster.clone(), schedule.clone(), start));
    let workload = Workload {
        clients: options.clients,
        keys: options.keys,
        seed: options.seed,
    };
    let until = start + faulty + quiet;
    let wants = |kind| options.workloads.contains(&kind);
    let history = tokio::spawn({
        let (client, on) = (client.clone(), wants(WorkloadKind::Register));
        async move {
            match on {
                true => register::run(client, &workload, start, until).await,
                false => Vec::new(),
            }
        }
    });
    let counter = wants(WorkloadKind::Counter).then(|| {
        tokio::spawn(tally::counter(
            client.clone(),
            options.clients,
            options.keys,
            until,
        ))
    });
    let set = wants(WorkloadKind::Set)
        .then(|| tokio::spawn(tally::set(client.clone(), options.clients, until)));
    let mut events = nemesis.await.map_err(|e| e.to_string())?;
    tokio::time::sleep_until((start + faulty).into()).await;
    cluster.lock().await.heal_all()?;
    events.push(nemesis::Event {
        at_ms: start.elapsed().as_millis() as u64,
        what: "final heal: every node running".into(),
    });
    let history = history.await.map_err(|e| e.to_string())?;
    let counter = match counter {
        Some(task) => Some(task.await.map_err(|e| e.to_string())?),
        None => None,
    };
    let set = match set {
        Some(task) => Some(task.await.map_err(|e| e.to_string())?),
        None => None,
    };
    client.close().await.map_err(|e| e.to_string())?;
    let (history, verdicts) = tokio::task::spawn_blocking(move || {
        let verdicts = check::check(&history, CHECK_TIMEOUT_PER_KEY, CHECK_TIMEOUT_TOTAL);
        (history, verdicts)
    })
    .await
    .map_err(|e| e.to_string())?;
    let diverged = diverged_shards(&*cluster.lock().await).await;
    let quiet_from_us = (faulty + quiet / 2).as_micros() as i64;
    let report = Report {
        seed: options.seed,
        nodes: options.nodes,
        schedule,
        counts: counts(&history),
        ok_per_second: ok_per_second(&history),
        keys_checked: verdicts.len(),
        violations: keys_with(&verdicts, Verdict::Violation),
        unknown: keys_with(&verdicts, Verdict::Unknown),
        quiet_errors: history
            .iter()
            .filter(|op| op.invoke_us >= quiet_from_us)
            .filter(|op| matches!(op.outcome, Outcome::Failed { .. } | Outcome::Unknown { .. }))
            .count() as u64,
        diverged,
        events,
        counter,
        set,
    };
    write_files(options, &report, &history)?;
    Ok(report)
}

/// The report for people: verdict, faults, counts, availability.
pub fn summary(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verdict = if report.passed() { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        out,
        "verdict: {verdict} (seed {}, {} nodes)",
        report.seed, report.nodes
    );
    for event in &report.events {
        let _ = writeln!(out, "  {:>7} ms  {}", event.at_ms, event.what);
    }
    for (call, c) in &report.counts {
        let _ = writeln!(
            out,
            "{call:>6}: {} ok, {} failed, {} cas-failed, {} indeterminate",
            c.ok, c.failed, c.cas_failed, c.indeterminate
        );
    }
    let _ = writeln!(out, "ok ops per second: {:?}", report.ok_per_second);
    let _ = writeln!(
        out,
        "keys checked: {}, not linearizable: {:?}, unknown: {:?}",
        report.keys_checked, report.violations, report.unknown
    );
    let _ = writeln!(
        out,
        "errors in the second half of the quiet period: {}",
        report.quiet_errors
    );
    let _ = writeln!(out, "diverged shards: {:?}", report.diverged);
    if let Some(c) = &report.counter {
        let _ = writeln!(
            out,
            "counter: {} acknowledged, {} failed, {} indeterminate increments; out of bounds: {:?}",
            c.acknowledged, c.failed, c.indeterminate, c.misses
        );
    }
    if let Some(s) = &report.set {
        let _ = writeln!(
            out,
            "set: {} acknowledged, {} failed, {} indeterminate adds; lost {:?}, refused but present {:?}, unread {}; {} scanned, scan errors {:?}",
            s.acknowledged,
            s.failed,
            s.indeterminate,
            s.lost,
            s.unexpected,
            s.unread.len(),
            s.scanned,
            s.scan_errors
        );
    }
    out
}

async fn connect(addresses: &[String], nodes: usize) -> Result<Client, String> {
    let client = Client::new(&ClientPolicy::default(), &addresses.join(","))
        .await
        .map_err(|e| format!("the client cannot connect: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.nodes().len() < nodes {
        if Instant::now() >= deadline {
            return Err(format!(
                "the client found {} of {nodes} nodes",
                client.nodes().len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(client)
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Read => "read",
        Call::Write { .. } => "write",
        Call::Cas { .. } => "cas",
    }
}

fn counts(history: &[Op]) -> BTreeMap<String, Counts> {
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for op in history {
        let c = counts.entry(call_name(&op.call).to_string()).or_default();
        match op.outcome {
            Outcome::Ok { .. } => c.ok += 1,
            Outcome::Failed { .. } => c.failed += 1,
            Outcome::CasFailed => c.cas_failed += 1,
            Outcome::Unknown { .. } => c.indeterminate += 1,
        }
    }
    counts
}

fn ok_per_second(history: &[Op]) -> Vec<u64> {
    let mut per_second = Vec::new();
    for op in history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. } | Outcome::CasFailed))
    {
        let second = (op.complete_us / 1_000_000) as usize;
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }
    per_second
}

fn keys_with(verdicts: &BTreeMap<i64, Verdict>, wanted: Verdict) -> Vec<i64> {
    verdicts
        .iter()
        .filter(|(_, v)| **v == wanted)
        .map(|(k, _)| *k)
        .collect()
}

/// Per shard, every node's `aerie-checksums` line, until for every shard
/// all replicas report one applied index; the shards that then differ (or
/// never got there).
async fn diverged_shards(cluster: &Cluster) -> Vec<String> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut by_shard: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for address in cluster.addresses() {
            let answer = cluster::info(&address, "aerie-checksums")
                .await
                .unwrap_or_default();
            for part in answer.split(';').filter(|p| p.starts_with("shard=")) {
                let mut fields = part.split(':');
                let shard = fields.next().unwrap_or_default().to_string();
                let applied = fields.next().unwrap_or_default().to_string();
                let rest: Vec<&str> = fields.collect();
                by_shard
                    .entry(shard)
                    .or_default()
                    .push((applied, rest.join(":")));
            }
        }
        let settled = |lines: &Vec<(String, String)>| lines.windows(2).all(|w| w[0].0 == w[1].0);
        let all_settled = !by_shard.is_empty() && by_shard.values().all(settled);
        if by_shard.is_empty() && Instant::now() >= deadline {
            return vec!["no node answered aerie-checksums".into()];
        }
        if all_settled || Instant::now() >= deadline {
            return by_shard
                .into_iter()
                .filter(|(_, lines)| !settled(lines) || lines.windows(2).any(|w| w[0].1 != w[1].1))
                .map(|(shard, lines)| format!("{shard}: {lines:?}"))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn write_files(options: &Options, report: &Report, history: &[Op]) -> Result<(), String> {
    write_json(options, "report.json", report)?;
    write_json(options, "history.json", &history)?;
    for key in &report.violations {
        let ops: Vec<&Op> = history.iter().filter(|op| op.key == *key).collect();
        let file = serde_json::json!({ "key": key, "history": ops, "events": report.events });
        write_json(options, &format!("violation-key-{key}.json"), &file)?;
    }
    Ok(())
}

fn write_json<T: Serialize>(options: &Options, name: &str, value: &T) -> Result<(), String> {
    let path = options.work_dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}
