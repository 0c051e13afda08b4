//! One decoded frame in, its answer out: info commands, single-record
//! commands (writes through raft, reads on the leader after a read barrier),
//! batch reads and partition scans. Streams (batch, scan) are written in
//! frames of bounded size as they are produced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aerie_engine::{BinSelection, Command, Engine, OpResult, Operate, RecordView, partition_of};
use aerie_protocol::framing::{self, MessageType};
use aerie_protocol::info::{self, InfoRequest, InfoResponseWriter, names};
use aerie_protocol::message::{Info1, Info2, encode_last};
use aerie_protocol::request::{RecordCommand, RecordRequest};
use aerie_protocol::scan::{self, ScanRecordHeader, ScanRequest};
use aerie_protocol::{
    BatchRequest, Frame, Limits, Op, Request, ResultCode, Value, batch, compress,
    encode_error_response, encode_record_response,
};
use aerie_replication::shards::ShardMap;
use aerie_replication::{Node, now_ms};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::convert::{self, engine_code, replication_code, value_out};
use super::metrics::CommandMetrics;

/// Indices into `metrics::COMMANDS`.
const READ: usize = 0;
const WRITE: usize = 1;
const DELETE: usize = 2;
const BATCH: usize = 3;
const SCAN: usize = 4;
const INFO: usize = 5;

/// A stream answer is flushed to the socket once a frame reaches this size.
const STREAM_FRAME_BYTES: usize = 256 << 10;
/// Records read per engine call during a scan.
const SCAN_PAGE_RECORDS: usize = 256;

/// What every connection shares.
pub struct Server {
    pub engine: Arc<Engine>,
    pub node: Arc<Node>,
    pub map: ShardMap,
    pub limits: Limits,
    pub node_id: u64,
    pub cluster_name: String,
    pub service_address: String,
    pub service_port: u16,
    pub namespaces: Vec<String>,
    pub wal: Arc<aerie_wal::Wal>,
    pub metrics: CommandMetrics,
}

type Io = std::io::Result<()>;

fn encode_or_log(result: aerie_protocol::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "encoding an answer failed");
    }
}

impl Server {
    /// Answers one frame into `out` (streams are flushed to `writer` as they
    /// grow). `Err` only for socket errors: the connection then closes.
    pub async fn handle<W: AsyncWrite + Unpin>(
        &self,
        frame: Frame<'_>,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        match frame.header.msg_type {
            MessageType::Info => {
                let started = std::time::Instant::now();
                self.info(frame.body, out).await;
                self.metrics.record(INFO, started.elapsed(), false);
                Ok(())
            }
            MessageType::Admin => {
                let command = aerie_protocol::admin::AdminMessage::decode(frame.body)
                    .map_or(0, |m| m.command);
                encode_or_log(aerie_protocol::admin::encode_security_not_enabled(
                    out, command,
                ));
                Ok(())
            }
            MessageType::AsMsg => self.as_msg(frame.body, out, writer).await,
            MessageType::Compressed => {
                let inflated = match compress::decompress(frame.body, &self.limits) {
                    Ok(inflated) => inflated,
                    Err(e) => return self.error(out, e.result_code()),
                };
                match compress::inner_frame(&inflated, &self.limits) {
                    Ok(inner) if inner.header.msg_type == MessageType::AsMsg => {
                        Box::pin(self.as_msg(inner.body, out, writer)).await
                    }
                    Ok(_) => self.error(out, ResultCode::Parameter),
                    Err(e) => self.error(out, e.result_code()),
                }
            }
        }
    }

    fn error(&self, out: &mut Vec<u8>, code: ResultCode) -> Io {
        encode_or_log(encode_error_response(out, code));
        Ok(())
    }

    async fn as_msg<W: AsyncWrite + Unpin>(
        &self,
        body: &[u8],
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        match Request::decode(body, &self.limits) {
            Ok(Request::Record(request)) => {
                self.record(&request, out).await;
                Ok(())
            }
            Ok(Request::Batch(request)) => {
                let started = std::time::Instant::now();
                let result = self.batch(&request, out, writer).await;
                self.metrics
                    .record(BATCH, started.elapsed(), result.is_err());
                result
            }
            Ok(Request::Scan(request)) => {
                let started = std::time::Instant::now();
                let result = self.scan(&request, out, writer).await;
                self.metrics
                    .record(SCAN, started.elapsed(), result.is_err());
                result
            }
            Err(e) => self.error(out, e.result_code()),
        }
    }

    fn has_namespace(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == ns)
    }

    fn shard_of(&self, digest: &[u8; 20]) -> u32 {
        self.map.shard_of(partition_of(digest))
    }

    /// Waits until a read of `shard` here is linearizable.
    async fn read_barrier(&self, shard: u32) -> Result<(), ResultCode> {
        let (tx, rx) = oneshot::channel();
        self.node
            .read_barrier_with(shard, move |r| {
                let _ = tx.send(r);
            })
            .map_err(|e| replication_code(&e))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(replication_code(&e)),
            Err(_) => Err(ResultCode::ServerError),
        }
    }

    /// Proposes a command to its shard and waits for the engine's outcome.
    async fn propose(
        &self,
        shard: u32,
        command: Command,
    ) -> Result<aerie_engine::Outcome, ResultCode> {
        let outcome = self
            .node
            .propose(shard, command)
            .map_err(|e| replication_code(&e))?;
        match outcome.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(replication_code(&e)),
            Err(_) => Err(ResultCode::ServerError),
        }
    }

    async fn record(&self, req: &RecordRequest<'_>, out: &mut Vec<u8>) {
        let started = std::time::Instant::now();
        let command = req.command();
        let kind = match command {
            Ok(RecordCommand::Write) => WRITE,
            Ok(RecordCommand::Delete) => DELETE,
            _ => READ,
        };
        let result = if self.has_namespace(req.namespace) {
            match command {
                Ok(RecordCommand::Read) => self.read(req, out).await,
                Ok(RecordCommand::Write) => self.write(req, out).await,
                Ok(RecordCommand::Delete) => self.delete(req, out).await,
                Err(e) => Err(e.result_code()),
            }
        } else {
            Err(ResultCode::Namespace)
        };
        // A missing record is an answer, not a failure of the server.
        let failed = result.is_err_and(|c| c != ResultCode::NotFound);
        self.metrics.record(kind, started.elapsed(), failed);
        if let Err(code) = result {
            encode_or_log(encode_record_response(out, code, 0, 0, &[]));
        }
    }

    async fn read(&self, req: &RecordRequest<'_>, out: &mut Vec<u8>) -> Result<(), ResultCode> {
        let info1 = req.header.info1;
        let selection = if info1.contains(Info1::GET_NO_BINS) {
            BinSelection::None
        } else if info1.contains(Info1::GET_ALL) {
            BinSelection::All
        } else if req.ops.is_empty() {
            return Err(ResultCode::Parameter);
        } else {
            BinSelection::Named(req.ops.iter().map(|op| op.name.to_string()).collect())
        };
        self.read_barrier(self.shard_of(&req.digest)).await?;
        let view = self
            .engine
            .get(req.namespace, &req.digest, &selection, now_ms())
            .map_err(|e| engine_code(&e))?
            .ok_or(ResultCode::NotFound)?;
        let respond_all = req.header.info2.contains(Info2::RESPOND_ALL_OPS);
        let ops = read_result_ops(req, &selection, &view, respond_all);
        encode_or_log(encode_record_response(
            out,
            ResultCode::Ok,
            u32::from(view.generation),
            view.void_time,
            &ops,
        ));
        Ok(())
    }

    async fn write(&self, req: &RecordRequest<'_>, out: &mut Vec<u8>) -> Result<(), ResultCode> {
        let get_all = req.header.info1.contains(Info1::GET_ALL);
        let respond_all = req.header.info2.contains(Info2::RESPOND_ALL_OPS);
        if req.ops.is_empty() || (get_all && respond_all) {
            return Err(ResultCode::Parameter);
        }
        let ops = req
            .ops
            .iter()
            .map(|op| convert::op_in(op, get_all))
            .collect::<Result<Vec<_>, _>>()?;
        let command = Command::Operate(Operate {
            write: convert::write_in(req)?,
            ops,
        });
        let outcome = self.propose(self.shard_of(&req.digest), command).await?;
        let mut answer = Vec::new();
        for (op, result) in req.ops.iter().zip(&outcome.results) {
            match result {
                OpResult::None if respond_all => answer.push(Op::result(op.name, Value::Nil)),
                OpResult::None => {}
                OpResult::Value(v) => answer.push(Op::result(op.name, value_out(v))),
                OpResult::Bins(bins) => {
                    answer.extend(
                        bins.iter()
                            .map(|b| Op::result(&b.name, value_out(&b.value))),
                    );
                }
            }
        }
        encode_or_log(encode_record_response(
            out,
            ResultCode::Ok,
            u32::from(outcome.generation),
            outcome.void_time,
            &answer,
        ));
        Ok(())
    }

    async fn delete(&self, req: &RecordRequest<'_>, out: &mut Vec<u8>) -> Result<(), ResultCode> {
        let command = Command::Delete {
            namespace: req.namespace.to_string(),
            digest: req.digest,
            generation: convert::generation_in(req.generation_policy()),
        };
        self.propose(self.shard_of(&req.digest), command).await?;
        encode_or_log(encode_record_response(out, ResultCode::Ok, 0, 0, &[]));
        Ok(())
    }

    /// Batch reads (and exists): one row message per key, in frames flushed
    /// as they fill, then LAST. Writes in a batch are answered per row with
    /// UNSUPPORTED_FEATURE.
    async fn batch<W: AsyncWrite + Unpin>(
        &self,
        req: &BatchRequest<'_>,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        let mut checked: BTreeMap<u32, Result<(), ResultCode>> = BTreeMap::new();
        let mut frame_start = framing::begin_frame(out, MessageType::AsMsg);
        for row in req.resolved_rows() {
            let Ok((index, digest, attrs)) = row else {
                let code = row.err().map_or(ResultCode::Parameter, |e| e.result_code());
                out.truncate(frame_start);
                return self.error(out, code);
            };
            let shard = self.shard_of(&digest);
            let barrier = match checked.get(&shard) {
                Some(barrier) => *barrier,
                None => {
                    let barrier = self.read_barrier(shard).await;
                    checked.insert(shard, barrier);
                    barrier
                }
            };
            self.batch_row(index, &digest, attrs, barrier, out);
            frame_start = flush_full_frame(out, frame_start, writer).await?;
        }
        encode_last(out, ResultCode::Ok);
        encode_or_log(framing::finish_frame(out, frame_start));
        Ok(())
    }

    fn batch_row(
        &self,
        index: u32,
        digest: &[u8; 20],
        attrs: &aerie_protocol::BatchRowAttrs<'_>,
        barrier: Result<(), ResultCode>,
        out: &mut Vec<u8>,
    ) {
        let row = |out: &mut Vec<u8>, code, generation, void_time, ops: &[Op<'_>]| {
            encode_or_log(batch::encode_batch_row(
                out, index, code, generation, void_time, ops,
            ));
        };
        if let Err(code) = barrier {
            return row(out, code, 0, 0, &[]);
        }
        if attrs.info2().contains(Info2::WRITE) {
            return row(out, ResultCode::UnsupportedFeature, 0, 0, &[]);
        }
        if !self.has_namespace(attrs.namespace) {
            return row(out, ResultCode::Namespace, 0, 0, &[]);
        }
        let selection = if attrs.info1.contains(Info1::GET_NO_BINS) {
            BinSelection::None
        } else if attrs.info1.contains(Info1::GET_ALL) || attrs.ops.is_empty() {
            BinSelection::All
        } else {
            BinSelection::Named(attrs.ops.iter().map(|op| op.name.to_string()).collect())
        };
        match self
            .engine
            .get(attrs.namespace, digest, &selection, now_ms())
        {
            Ok(Some(view)) => {
                let ops: Vec<Op<'_>> = view
                    .bins
                    .iter()
                    .map(|b| Op::result(&b.name, value_out(&b.value)))
                    .collect();
                row(
                    out,
                    ResultCode::Ok,
                    u32::from(view.generation),
                    view.void_time,
                    &ops,
                );
            }
            Ok(None) => row(out, ResultCode::NotFound, 0, 0, &[]),
            Err(e) => row(out, engine_code(&e), 0, 0, &[]),
        }
    }

    /// A partition scan: records of the asked partitions (resuming after the
    /// given digests), at most `max_records`, each partition finished with a
    /// PARTITION_DONE message, then LAST.
    async fn scan<W: AsyncWrite + Unpin>(
        &self,
        req: &ScanRequest<'_>,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        if !self.has_namespace(req.namespace) {
            return self.error(out, ResultCode::Namespace);
        }
        let mut work: BTreeMap<u16, Option<[u8; 20]>> = BTreeMap::new();
        for p in req.partition_ids.iter().flatten() {
            work.insert(*p, None);
        }
        for d in req.resume_digests.iter().flatten() {
            work.insert(partition_of(d), Some(*d));
        }
        if work.is_empty() {
            work = (0..aerie_engine::PARTITION_COUNT as u16)
                .map(|p| (p, None))
                .collect();
        }
        let mut budget = req.max_records.filter(|&m| m > 0).unwrap_or(u64::MAX);
        let mut frame_start = framing::begin_frame(out, MessageType::AsMsg);
        for (partition, resume) in work {
            let done = self.scan_partition(req, partition, resume, &mut budget, out);
            match done {
                Ok(true) => scan::encode_partition_done(out, partition, ResultCode::Ok),
                Ok(false) => break,
                Err(code) => {
                    scan::encode_partition_done(out, partition, code);
                }
            }
            frame_start = flush_full_frame(out, frame_start, writer).await?;
        }
        encode_last(out, ResultCode::Ok);
        encode_or_log(framing::finish_frame(out, frame_start));
        Ok(())
    }

    /// Scans one partition into `out`; true when it was finished, false when
    /// the record budget ran out first.
    fn scan_partition(
        &self,
        req: &ScanRequest<'_>,
        partition: u16,
        resume: Option<[u8; 20]>,
        budget: &mut u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, ResultCode> {
        let set = req.set.filter(|s| !s.is_empty());
        let no_bins = req.header.info1.contains(Info1::GET_NO_BINS);
        let names: Vec<&str> = req.ops.iter().map(|op| op.name).collect();
        let mut after = resume;
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            let page = self
                .engine
                .scan_partition(
                    req.namespace,
                    partition,
                    after.as_ref(),
                    SCAN_PAGE_RECORDS,
                    now_ms(),
                )
                .map_err(|e| engine_code(&e))?;
            for record in &page.records {
                if set.is_some_and(|s| s != record.set) {
                    continue;
                }
                if *budget == 0 {
                    return Ok(false);
                }
                *budget -= 1;
                let header = ScanRecordHeader {
                    namespace: req.namespace,
                    digest: record.digest,
                    set: Some(record.set.as_str()),
                    key: None,
                    generation: u32::from(record.generation),
                    void_time_secs: record.void_time,
                    no_bins,
                };
                let bins: Vec<Op<'_>> = if no_bins {
                    Vec::new()
                } else {
                    record
                        .bins
                        .iter()
                        .filter(|b| names.is_empty() || names.contains(&b.name.as_str()))
                        .map(|b| Op::result(&b.name, value_out(&b.value)))
                        .collect()
                };
                encode_or_log(scan::encode_scan_record(out, &header, &bins));
            }
            match page.resume_after {
                Some(d) => after = Some(d),
                None => return Ok(true),
            }
        }
    }

    async fn info(&self, body: &[u8], out: &mut Vec<u8>) {
        let request = match InfoRequest::parse(body) {
            Ok(request) => request,
            Err(_) => {
                let _ = self.error(out, ResultCode::Parameter);
                return;
            }
        };
        let mut answers = Vec::with_capacity(request.commands.len());
        for command in &request.commands {
            answers.push((command.line, self.info_answer(command).await));
        }
        let mut writer = InfoResponseWriter::new(out);
        for (line, answer) in &answers {
            encode_or_log(writer.entry(line, answer));
        }
        encode_or_log(writer.finish());
    }

    async fn info_answer(&self, command: &info::InfoCommand<'_>) -> String {
        let ns_list = || self.namespaces.join(";");
        match command.name {
            names::NODE => info::node_name(self.node_id),
            names::BUILD => info::BUILD_VERSION.to_string(),
            names::PARTITION_GENERATION | names::PEERS_GENERATION | names::REBALANCE_GENERATION => "1".into(),
            names::CLUSTER_NAME => self.cluster_name.clone(),
            names::PEERS_CLEAR_STD | names::PEERS_CLEAR_ALT | names::PEERS_TLS_STD | names::PEERS_TLS_ALT => {
                info::format_peers(1, self.service_port, &[])
            }
            names::SERVICE_CLEAR_STD | names::SERVICE_CLEAR_ALT => {
                format!("{}:{}", self.service_address, self.service_port)
            }
            names::SERVICE_TLS_STD | names::SERVICE_TLS_ALT => String::new(),
            names::REPLICAS => self.replicas(),
            names::USER_AGENT_SET => info::USER_AGENT_SET_OK.into(),
            names::PARTITIONS => info::PARTITIONS_ANSWER.into(),
            names::NAMESPACES => ns_list(),
            names::NAMESPACE => self.namespace_stats(command.rest.unwrap_or("")),
            names::STATISTICS => self.statistics(),
            names::SETS => self.sets(command.rest.unwrap_or("")),
            names::VERSION => info::version_answer("Aerie", info::BUILD_VERSION),
            names::EDITION => "Aerie".into(),
            "features" => "batch-any;batch-index;float;geo;peers;pipelining;pscans;replicas;truncate-namespace".into(),
            "truncate" | "truncate-namespace" => self.truncate(command).await,
            "snapshot" => {
                self.node.request_snapshots();
                "ok".into()
            }
            _ => info::ERROR_UNRECOGNIZED_COMMAND.into(),
        }
    }

    fn replicas(&self) -> String {
        let entries: Vec<info::ReplicasEntry<'_>> = self
            .namespaces
            .iter()
            .map(|ns| info::ReplicasEntry {
                namespace: ns,
                regime: 0,
                columns: vec![info::PartitionBitmap::all()],
            })
            .collect();
        info::format_replicas(&entries)
            .unwrap_or_else(|e| info::format_error(Some(e.result_code()), "replicas"))
    }

    fn namespace_stats(&self, ns: &str) -> String {
        let Some(stats) = self.engine.stats().into_iter().find(|s| s.name == ns) else {
            return "type=unknown".into();
        };
        info::format_key_values([
            ("objects", stats.records.to_string()),
            ("tombstones", stats.tombstones.to_string()),
            ("index_used_bytes", stats.index_bytes.to_string()),
            ("device_used_bytes", stats.used_bytes.to_string()),
            ("device_total_bytes", stats.size_limit_bytes.to_string()),
            ("replication-factor", "1".to_string()),
        ])
    }

    /// `sets`, `sets/<ns>`, `sets/<ns>/<set>` (spec §2.3): per set
    /// `ns=..:set=..:objects=N;`, or for one set only `objects=N`.
    fn sets(&self, path: &str) -> String {
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let (ns_filter, set_filter) = (parts.next(), parts.next());
        let mut out = String::new();
        for ns in self
            .namespaces
            .iter()
            .filter(|n| ns_filter.is_none_or(|f| f == n.as_str()))
        {
            let Ok(counts) = self.engine.set_counts(ns, now_ms()) else {
                continue;
            };
            for (set, objects) in counts.iter().filter(|(s, _)| !s.is_empty()) {
                // Info text is split on these; a set name cannot carry them.
                let set = set.replace([':', ';', '\n', '\t', '='], "_");
                match set_filter {
                    Some(wanted) if wanted == set.as_str() => return format!("objects={objects}"),
                    Some(_) => {}
                    None => out.push_str(&format!("ns={ns}:set={set}:objects={objects};")),
                }
            }
        }
        if set_filter.is_some() {
            return "objects=0".into();
        }
        out
    }

    fn statistics(&self) -> String {
        let ops = |i: usize| self.metrics.ops[i].load(Ordering::Relaxed).to_string();
        let errors: u64 = self
            .metrics
            .errors
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum();
        let objects: u64 = self.engine.stats().iter().map(|s| s.records).sum();
        info::format_key_values([
            ("objects", objects.to_string()),
            ("client_reads", ops(READ)),
            ("client_writes", ops(WRITE)),
            ("client_deletes", ops(DELETE)),
            ("batch_index_initiate", ops(BATCH)),
            ("scans", ops(SCAN)),
            ("info_requests", ops(INFO)),
            ("client_errors", errors.to_string()),
        ])
    }

    /// `truncate:namespace=<ns>[;set=<set>][;lut=<ns since epoch>]` and
    /// `truncate-namespace:namespace=<ns>`: through every shard's log, each
    /// shard truncating only its own partitions, so every replica removes the
    /// same records. A `lut` later than this node's clock is refused (the
    /// engine would clamp it to the leader's clock anyway).
    async fn truncate(&self, command: &info::InfoCommand<'_>) -> String {
        let Some(ns) = command
            .param("namespace")
            .filter(|ns| self.has_namespace(ns))
        else {
            return info::format_error(Some(ResultCode::Parameter), "namespace required");
        };
        let set = command
            .param("set")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let now = now_ms();
        let before_ms = match command.param("lut").map(str::parse::<u64>) {
            Some(Ok(nanos)) if nanos / 1_000_000 > now => {
                return info::format_error(Some(ResultCode::Parameter), "lut is in the future");
            }
            Some(Ok(nanos)) => nanos / 1_000_000,
            Some(Err(_)) => return info::format_error(Some(ResultCode::Parameter), "bad lut"),
            None => now,
        };
        for shard in 0..self.map.shards() {
            let cmd = Command::Truncate {
                namespace: ns.to_string(),
                set: set.clone(),
                before_ms,
                partitions: self.map.partitions(shard),
            };
            if let Err(code) = self.propose(shard, cmd).await {
                return info::format_error(Some(code), "truncate failed");
            }
        }
        "ok".into()
    }
}

/// Sends the stream frame being built once it reaches `STREAM_FRAME_BYTES`
/// and starts the next; returns where the current frame starts.
async fn flush_full_frame<W: AsyncWrite + Unpin>(
    out: &mut Vec<u8>,
    frame_start: usize,
    writer: &mut W,
) -> std::io::Result<usize> {
    if out.len() - frame_start < STREAM_FRAME_BYTES {
        return Ok(frame_start);
    }
    encode_or_log(framing::finish_frame(out, frame_start));
    writer.write_all(out).await?;
    out.clear();
    Ok(framing::begin_frame(out, MessageType::AsMsg))
}

/// The result ops of a pure read: all bins (GET_ALL), none (header only), or
/// the named bins in request order, a missing one omitted or (RESPOND_ALL_OPS)
/// answered with a NULL placeholder.
fn read_result_ops<'v>(
    req: &'v RecordRequest<'_>,
    selection: &BinSelection,
    view: &'v RecordView,
    respond_all: bool,
) -> Vec<Op<'v>> {
    match selection {
        BinSelection::None => Vec::new(),
        BinSelection::All => view
            .bins
            .iter()
            .map(|b| Op::result(&b.name, value_out(&b.value)))
            .collect(),
        BinSelection::Named(_) => req
            .ops
            .iter()
            .filter_map(|op| match view.bins.iter().find(|b| b.name == op.name) {
                Some(bin) => Some(Op::result(&bin.name, value_out(&bin.value))),
                None => respond_all.then(|| Op::result(op.name, Value::Nil)),
            })
            .collect(),
    }
}
