//! Prometheus metrics on their own port (`GET /metrics`, text format 0.0.4):
//! operations and errors by command, latency histograms, WAL fsyncs and group
//! sizes, engine figures per namespace, raft state per shard.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use aerie_replication::health::Refusal;

use super::handler::Server;

/// Upper bounds of the latency buckets, µs.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// Commands measured.
pub const COMMANDS: [&str; 6] = ["read", "write", "delete", "batch", "scan", "info"];

/// A latency histogram with fixed buckets (cumulative when rendered).
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Per-command counters and latencies.
#[derive(Debug, Default)]
pub struct CommandMetrics {
    pub ops: [AtomicU64; COMMANDS.len()],
    pub errors: [AtomicU64; COMMANDS.len()],
    pub latency: [Latency; COMMANDS.len()],
}

impl CommandMetrics {
    /// Records one command by its index in [`COMMANDS`].
    pub fn record(&self, command: usize, elapsed: Duration, failed: bool) {
        self.ops[command].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors[command].fetch_add(1, Ordering::Relaxed);
        }
        self.latency[command].record(elapsed);
    }
}

fn render_commands(out: &mut String, m: &CommandMetrics) {
    let _ = writeln!(
        out,
        "# TYPE aerie_ops_total counter\n# TYPE aerie_errors_total counter"
    );
    for (i, name) in COMMANDS.iter().enumerate() {
        let _ = writeln!(
            out,
            "aerie_ops_total{{command=\"{name}\"}} {}",
            m.ops[i].load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "aerie_errors_total{{command=\"{name}\"}} {}",
            m.errors[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE aerie_latency_seconds histogram");
    for (i, name) in COMMANDS.iter().enumerate() {
        let latency = &m.latency[i];
        let mut cumulative = 0;
        for (b, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += latency.buckets[b].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "aerie_latency_seconds_bucket{{command=\"{name}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = latency.count.load(Ordering::Relaxed);
        let sum = latency.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "aerie_latency_seconds_bucket{{command=\"{name}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "aerie_latency_seconds_sum{{command=\"{name}\"}} {sum}");
        let _ = writeln!(
            out,
            "aerie_latency_seconds_count{{command=\"{name}\"}} {count}"
        );
    }
}

/// Write refusals in force: one gauge per kind (node-wide or any shard), and
/// per shard whether its apply loop is stalled.
fn render_refusals(out: &mut String, server: &Server) {
    let refusals = server.node.refusals();
    let _ = writeln!(out, "# TYPE aerie_writes_refused gauge");
    for kind in Refusal::KINDS {
        let on = refusals.iter().any(|(_, r)| r.kind() == kind);
        let _ = writeln!(
            out,
            "aerie_writes_refused{{reason=\"{kind}\"}} {}",
            u8::from(on)
        );
    }
    let _ = writeln!(out, "# TYPE aerie_shard_apply_stalled gauge");
    for s in server.node.status() {
        let stalled = refusals.iter().any(|(shard, _)| *shard == Some(s.shard));
        let _ = writeln!(
            out,
            "aerie_shard_apply_stalled{{shard=\"{}\"}} {}",
            s.shard,
            u8::from(stalled)
        );
    }
}

/// Damaged replicas and consistency checks (see `aerie_replication::repair`).
fn render_damage(out: &mut String, server: &Server) {
    let damage = server.node.damage();
    let c = damage.counters();
    let damaged = damage.damaged().len();
    let _ = writeln!(
        out,
        "# TYPE aerie_replicas_damaged gauge\naerie_replicas_damaged {damaged}"
    );
    for (name, value) in [
        ("aerie_replicas_damaged_found_total", c.found),
        ("aerie_replicas_rebuilt_total", c.rebuilds),
        ("aerie_consistency_checks_total", c.checks),
        ("aerie_consistency_mismatches_total", c.mismatches),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
    }
    let rebuilds = server.node.rebuilds();
    let totals = rebuilds.totals();
    for (name, value) in [
        ("aerie_rebuild_fetched_bytes_total", totals.bytes),
        ("aerie_rebuild_installed_records_total", totals.records),
        ("aerie_rebuild_installed_snapshots_total", totals.installed),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(out, "# TYPE aerie_rebuild_in_flight_bytes gauge");
    let _ = writeln!(out, "# TYPE aerie_rebuild_in_flight_fetched_bytes gauge");
    let _ = writeln!(out, "# TYPE aerie_rebuild_in_flight_seconds_left gauge");
    for (shard, f) in rebuilds.in_flight() {
        let _ = writeln!(
            out,
            "aerie_rebuild_in_flight_bytes{{shard=\"{shard}\"}} {}",
            f.file_bytes
        );
        let _ = writeln!(
            out,
            "aerie_rebuild_in_flight_fetched_bytes{{shard=\"{shard}\"}} {}",
            f.fetched_bytes
        );
        if let Some(left) = f.time_left() {
            let _ = writeln!(
                out,
                "aerie_rebuild_in_flight_seconds_left{{shard=\"{shard}\"}} {:.1}",
                left.as_secs_f64()
            );
        }
    }
}

/// The whole exposition.
pub fn render(server: &Server) -> String {
    let mut out = String::with_capacity(8 << 10);
    render_commands(&mut out, &server.metrics);
    let wal = server.wal.stats();
    let _ = writeln!(
        out,
        "# TYPE aerie_wal_syncs_total counter\naerie_wal_syncs_total {}",
        wal.syncs
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_wal_sync_seconds_total counter\naerie_wal_sync_seconds_total {}",
        wal.sync_micros as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_wal_writes_total counter\naerie_wal_writes_total {}",
        wal.writes
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_wal_entries_total counter\naerie_wal_entries_total {}",
        wal.entries
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_wal_bytes_total counter\naerie_wal_bytes_total {}",
        wal.bytes_written
    );
    let health = server.engine.health();
    for ns in server.engine.stats() {
        let n = &ns.name;
        let _ = writeln!(
            out,
            "aerie_namespace_stop_writes{{namespace=\"{n}\"}} {}",
            u8::from(health.stop_writes.contains_key(n))
        );
        let _ = writeln!(
            out,
            "aerie_namespace_objects{{namespace=\"{n}\"}} {}",
            ns.records
        );
        let _ = writeln!(
            out,
            "aerie_namespace_tombstones{{namespace=\"{n}\"}} {}",
            ns.tombstones
        );
        let _ = writeln!(
            out,
            "aerie_namespace_index_bytes{{namespace=\"{n}\"}} {}",
            ns.index_bytes
        );
        let _ = writeln!(
            out,
            "aerie_namespace_device_used_bytes{{namespace=\"{n}\"}} {}",
            ns.used_bytes
        );
    }
    render_refusals(&mut out, server);
    render_damage(&mut out, server);
    let me = server.node_id;
    for s in server.node.status() {
        let shard = s.shard;
        let _ = writeln!(out, "aerie_raft_term{{shard=\"{shard}\"}} {}", s.term);
        let _ = writeln!(
            out,
            "aerie_raft_commit_index{{shard=\"{shard}\"}} {}",
            s.commit
        );
        let _ = writeln!(
            out,
            "aerie_raft_applied_index{{shard=\"{shard}\"}} {}",
            s.applied
        );
        let _ = writeln!(
            out,
            "aerie_raft_compacted_index{{shard=\"{shard}\"}} {}",
            s.compacted
        );
        let _ = writeln!(
            out,
            "aerie_raft_is_leader{{shard=\"{shard}\"}} {}",
            u8::from(s.leader == me)
        );
        let _ = writeln!(
            out,
            "aerie_shard_voters{{shard=\"{shard}\"}} {}",
            s.voters.len()
        );
        let _ = writeln!(
            out,
            "aerie_shard_learners{{shard=\"{shard}\"}} {}",
            s.learners.len()
        );
        let _ = writeln!(
            out,
            "aerie_shard_apply_lag_entries{{shard=\"{shard}\"}} {}",
            s.commit.saturating_sub(s.applied)
        );
    }
    let _ = writeln!(
        out,
        "# TYPE aerie_cluster_members gauge\naerie_cluster_members {}",
        server.cluster.members().len()
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_cluster_replication_factor gauge\naerie_cluster_replication_factor {}",
        server.cluster.effective_replication_factor()
    );
    let (leaving, retired) = server.cluster.leaving_and_retired();
    let _ = writeln!(
        out,
        "# TYPE aerie_cluster_leaving_members gauge\naerie_cluster_leaving_members {leaving}"
    );
    let _ = writeln!(
        out,
        "# TYPE aerie_cluster_retired_members gauge\naerie_cluster_retired_members {retired}"
    );
    out
}

/// Serves `/metrics` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            let Ok(Ok(n)) = n else { return };
            let answer = if request[..n].starts_with(b"GET /metrics") {
                let body = render(&server);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}
