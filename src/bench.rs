//! `aerie bench`: an asbenchmark/YCSB-like load generator over the lean
//! client. Connections each keep `--in-flight` requests pipelined; latencies
//! go into HDR histograms per operation; a progress line every second; at the
//! end throughput and p50/p90/p99/p99.9/max per operation (or `--json`).
//! With `--hosts` (every node of a cluster) each request goes to the node
//! leading its partition, as the nodes' `replicas` answers say, the way a
//! smart client routes; with `--host` all go to one node (which proxies
//! what it does not lead).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aerie_protocol::info::parse_replicas;
use aerie_protocol::message::{Info1, Info2, Message, MessageHeader};
use aerie_protocol::particle::{BlobType, UserKey, Value};
use aerie_protocol::request::RecordRequest;
use aerie_protocol::{Op, OpType, PARTITION_COUNT, ResultCode, compute_digest, partition_id};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use crate::client::Connection;

/// The operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// YCSB A: 50% reads, 50% updates.
    A,
    /// YCSB B: 95% reads, 5% updates.
    B,
    /// YCSB C: reads only.
    C,
    /// Inserts of keys 0..keys in order (a load phase).
    Insert,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The node.
    #[arg(long, default_value = "127.0.0.1:3000")]
    host: String,
    /// Every node of a cluster, comma-separated: each request goes to the
    /// node leading its key's partition (from their `replicas`, re-read
    /// every second as a smart client does). Needs --in-flight 1.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// Namespace.
    #[arg(long, default_value = "test")]
    namespace: String,
    /// Set.
    #[arg(long, default_value = "bench")]
    set: String,
    /// Distinct keys (integers 0..keys).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value (one blob bin `v`).
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = Workload::A)]
    workload: Workload,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests pipelined per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Stop after this long (s).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop after this many operations (0 = no limit; insert stops at --keys).
    #[arg(long, default_value_t = 0)]
    ops: u64,
    /// Target rate over all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate_ops_per_sec: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Update,
    Insert,
}

const KINDS: [(Kind, &str); 3] = [
    (Kind::Read, "read"),
    (Kind::Update, "update"),
    (Kind::Insert, "insert"),
];

struct Stats {
    histograms: Vec<Histogram<u64>>,
    errors: u64,
    not_found: u64,
}

impl Stats {
    fn new() -> Stats {
        // 1 µs .. 60 s at 3 significant figures: bounded memory per histogram.
        let histogram = || {
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds"))
        };
        Stats {
            histograms: vec![histogram(), histogram(), histogram()],
            errors: 0,
            not_found: 0,
        }
    }

    fn merge(&mut self, other: &Stats) {
        for (a, b) in self.histograms.iter_mut().zip(&other.histograms) {
            let _ = a.add(b);
        }
        self.errors += other.errors;
        self.not_found += other.not_found;
    }
}

struct Shared {
    args: BenchArgs,
    done: AtomicU64,
    stop: AtomicBool,
    next_insert: AtomicU64,
    value: Vec<u8>,
    /// The nodes requests go to.
    targets: Vec<String>,
    /// Per partition, the index in `targets` of the node leading it
    /// (re-read every `ROUTE_REFRESH_MS`, as a smart client tends its map).
    route: Vec<AtomicUsize>,
}

/// How often `--hosts` re-reads the nodes' `replicas` (the official
/// clients tend their partition map every second).
const ROUTE_REFRESH_MS: u64 = 1_000;

/// Per partition, which of `hosts` claims it in column 0 of its `replicas`
/// answer for `namespace` (the first host for a partition none claims).
async fn routes(hosts: &[String], namespace: &str) -> Result<Vec<usize>, String> {
    let mut route = vec![0; usize::from(PARTITION_COUNT)];
    for (i, host) in hosts.iter().enumerate() {
        let mut conn = Connection::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let answers = conn
            .info(&["replicas"])
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let text = answers
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default();
        let entries = parse_replicas(&text).map_err(|e| format!("{host}: replicas: {e}"))?;
        let Some(entry) = entries.iter().find(|e| e.namespace == namespace) else {
            continue;
        };
        let Some(masters) = entry.columns.first() else {
            continue;
        };
        for (pid, slot) in route.iter_mut().enumerate() {
            if masters.contains(pid as u16) {
                *slot = i;
            }
        }
    }
    Ok(route)
}

/// Re-reads the routes every `ROUTE_REFRESH_MS` until the run stops (a
/// failed read keeps the old routes).
async fn refresh_routes(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(ROUTE_REFRESH_MS)).await;
        if let Ok(route) = routes(&shared.args.hosts, &shared.args.namespace).await {
            for (slot, target) in shared.route.iter().zip(route) {
                slot.store(target, Ordering::Relaxed);
            }
        }
    }
}

/// The index in `shared.targets` of the node to send `key` to.
fn target_of(shared: &Shared, key: u64) -> usize {
    let digest = compute_digest(shared.args.set.as_bytes(), &UserKey::Int(key as i64));
    shared.route[usize::from(partition_id(&digest))].load(Ordering::Relaxed)
}
fn encode_request(shared: &Shared, kind: Kind, key: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    let args = &shared.args;
    let user_key = UserKey::Int(key as i64);
    let digest = compute_digest(args.set.as_bytes(), &user_key);
    let (header, ops) = match kind {
        Kind::Read => (
            MessageHeader {
                info1: Info1::READ | Info1::GET_ALL,
                ..MessageHeader::default()
            },
            Vec::new(),
        ),
        Kind::Update | Kind::Insert => (
            MessageHeader {
                info2: Info2::WRITE,
                ..MessageHeader::default()
            },
            vec![Op::new(
                OpType::Write,
                "v",
                Value::Blob(BlobType::Generic, &shared.value),
            )],
        ),
    };
    let request = RecordRequest::new(header, &args.namespace, Some(&args.set), digest, ops);
    request
        .encode_frame(out)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn pick(shared: &Shared, rng: &mut impl Rng) -> Option<(Kind, u64)> {
    let args = &shared.args;
    let read_share = match args.workload {
        Workload::A => 0.5,
        Workload::B => 0.95,
        Workload::C => 1.0,
        Workload::Insert => {
            let key = shared.next_insert.fetch_add(1, Ordering::Relaxed);
            return (key < args.keys).then_some((Kind::Insert, key));
        }
    };
    let kind = if rng.random_bool(read_share) {
        Kind::Read
    } else {
        Kind::Update
    };
    Some((kind, rng.random_range(0..args.keys.max(1))))
}

/// One connection's loop: a batch of `in_flight` requests, then their answers.
async fn connection(shared: Arc<Shared>, seed: u64) -> std::io::Result<Stats> {
    let mut conns: Vec<Option<Connection>> = shared.targets.iter().map(|_| None).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stats = Stats::new();
    let per_connection_rate =
        shared.args.rate_ops_per_sec as f64 / shared.args.connections.max(1) as f64;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut out = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(shared.args.in_flight);
        let mut target = 0;
        out.clear();
        for _ in 0..shared.args.in_flight.max(1) {
            let Some((kind, key)) = pick(&shared, &mut rng) else {
                break;
            };
            // --hosts takes one request in flight: the batch is that one.
            target = target_of(&shared, key);
            encode_request(&shared, kind, key, &mut out)?;
            batch.push(kind);
        }
        if batch.is_empty() {
            break;
        }
        let conn = match &mut conns[target] {
            Some(conn) => conn,
            slot => slot.insert(Connection::connect(&shared.targets[target]).await?),
        };
        if per_connection_rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / per_connection_rate);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        let issued = Instant::now();
        conn.send(&out).await?;
        let batch_len = batch.len() as u64;
        for kind in batch {
            let (_, body) = conn.read_frame().await?;
            let micros = issued.elapsed().as_micros().max(1) as u64;
            let code =
                Message::decode(&body).map_or(ResultCode::ServerError, |m| m.header.result_code);
            match code {
                ResultCode::Ok => {}
                ResultCode::NotFound if kind == Kind::Read => stats.not_found += 1,
                _ => stats.errors += 1,
            }
            let slot = KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
            let _ = stats.histograms[slot].record(micros);
            sent += 1;
        }
        let done = shared.done.fetch_add(batch_len, Ordering::Relaxed) + batch_len;
        if shared.args.ops > 0 && done >= shared.args.ops {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    Ok(stats)
}

/// Runs the benchmark and prints the report.
pub fn run(args: BenchArgs) -> Result<(), String> {
    if args.connections == 0 || args.in_flight == 0 || args.in_flight > 1024 {
        return Err("--connections must be > 0 and --in-flight 1..=1024".into());
    }
    if !args.hosts.is_empty() && args.in_flight != 1 {
        return Err("--hosts routes each request on its own: use --in-flight 1".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> Result<(), String> {
    let json = args.json;
    let duration = Duration::from_secs(args.duration_secs.max(1));
    let value = (0..args.value_bytes)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let (targets, route) = if args.hosts.is_empty() {
        (
            vec![args.host.clone()],
            vec![0; usize::from(PARTITION_COUNT)],
        )
    } else {
        (
            args.hosts.clone(),
            routes(&args.hosts, &args.namespace).await?,
        )
    };
    let shared = Arc::new(Shared {
        args,
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        next_insert: AtomicU64::new(0),
        value,
        targets,
        route: route.into_iter().map(AtomicUsize::new).collect(),
    });
    if !shared.args.hosts.is_empty() {
        tokio::spawn(refresh_routes(shared.clone()));
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..shared.args.connections)
        .map(|i| tokio::spawn(connection(shared.clone(), i as u64 + 1)))
        .collect();
    let progress = tokio::spawn(progress_line(shared.clone(), started, duration, json));
    let mut total = Stats::new();
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => return Err(format!("connection to {:?}: {e}", shared.targets)),
            Err(e) => return Err(e.to_string()),
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    report(&total, started.elapsed(), json);
    Ok(())
}

async fn progress_line(shared: Arc<Shared>, started: Instant, duration: Duration, quiet: bool) {
    let mut last = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = shared.done.load(Ordering::Relaxed);
        if !quiet {
            eprintln!(
                "{:>4.0}s  {:>9} ops/s  {:>10} total",
                started.elapsed().as_secs_f64(),
                done - last,
                done
            );
        }
        last = done;
        if started.elapsed() >= duration {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn report(stats: &Stats, elapsed: Duration, json: bool) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rows: Vec<(String, u64, f64, [u64; 5])> = KINDS
        .iter()
        .zip(&stats.histograms)
        .filter(|(_, h)| !h.is_empty())
        .map(|((_, name), h)| {
            let q = |p: f64| h.value_at_quantile(p);
            (
                name.to_string(),
                h.len(),
                h.len() as f64 / secs,
                [q(0.5), q(0.9), q(0.99), q(0.999), h.max()],
            )
        })
        .collect();
    if json {
        let ops: Vec<String> = rows
            .iter()
            .map(|(name, n, rate, p)| {
                format!(
                    "\"{name}\":{{\"count\":{n},\"ops_per_sec\":{rate:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
                    p[0], p[1], p[2], p[3], p[4]
                )
            })
            .collect();
        println!(
            "{{\"seconds\":{secs:.3},\"errors\":{},\"not_found\":{},\"ops\":{{{}}}}}",
            stats.errors,
            stats.not_found,
            ops.join(",")
        );
        return;
    }
    println!(
        "{:<7} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "ops/s", "p50µs", "p90µs", "p99µs", "p99.9µs", "maxµs"
    );
    for (name, n, rate, p) in &rows {
        println!(
            "{name:<7} {n:>10} {rate:>11.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            p[0], p[1], p[2], p[3], p[4]
        );
    }
    println!(
        "{:.1} s, {} errors, {} reads of missing keys",
        secs, stats.errors, stats.not_found
    );
}
