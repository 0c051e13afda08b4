//! One decoded frame in, its answer out: info commands, single-record
//! commands (writes through raft, reads on the leader after a read barrier),
//! batch reads and partition scans (`stream.rs`). What Aerie does not
//! implement is refused before anything runs (`support.rs`). Every wait has
//! a deadline ([`Deadline`]): a request that runs out of time is answered
//! TIMEOUT.

mod stream;
mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aerie_engine::{BinSelection, Command, Engine, OpResult, Operate, RecordView, partition_of};
use aerie_protocol::framing::MessageType;
use aerie_protocol::info::{self, InfoRequest, InfoResponseWriter, names};
use aerie_protocol::message::{Info1, Info2};
use aerie_protocol::request::{RecordCommand, RecordRequest};
use aerie_protocol::{
    Frame, Limits, Op, Request, ResultCode, Value, compress, compute_digest, encode_error_response,
    encode_record_response,
};
use aerie_replication::shards::ShardMap;
use aerie_replication::{Node, now_ms};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

use super::convert::{self, Queued, engine_code, replication_code, value_out};
use super::metrics::CommandMetrics;
use super::proxy::{self, Relay};

/// Indices into `metrics::COMMANDS`.
/// The info command answering per-shard checksums of this node's replicas.
pub const CHECKSUMS: &str = "aerie-checksums";
/// One shard's per-partition record counts and checksums.
pub const PARTITION_CHECKSUMS: &str = "aerie-partition-checksums";
/// Has every shard this node leads compare its replicas now.
pub const CHECK_NOW: &str = "aerie-check-now";
/// The last consistency check of each shard judged on this node.
pub const CHECK_VERDICTS: &str = "aerie-check-verdicts";
const READ: usize = 0;
const WRITE: usize = 1;
const DELETE: usize = 2;
const BATCH: usize = 3;
const SCAN: usize = 4;
const INFO: usize = 5;

/// The deadline of a single-record or batch request whose transaction_ttl
/// is 0 (Aerospike's `transaction-max-ms` default).
const DEFAULT_TRANSACTION_MS: u32 = 1_000;
/// The longest a truncate may take through all shards' logs.
const TRUNCATE_MS: u32 = 10_000;

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
    /// Large-message buffers shared by all connections.
    pub budget: super::budget::Budget,
    /// The members, and what clients are told of them.
    pub cluster: std::sync::Arc<super::cluster::Cluster>,
    /// Connections to the shard leaders, for requests that reach a follower.
    pub proxy: proxy::Proxy,
}

/// Longest a compressed message waits for room to inflate; then it is
/// refused with DEVICE_OVERLOAD (it did not run).
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

type Io = std::io::Result<()>;

/// What a client connection is.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Opened by another node's proxy ([`proxy::PROXY_HELLO`]): a request
    /// this node cannot run is answered, never proxied again.
    pub from_proxy: bool,
}

/// Why a single-record command was not answered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The answer, an error code.
    Code(ResultCode),
    /// This node does not lead the shard; this node does. Nothing ran.
    LeaderElsewhere(u64),
}

impl Refused {
    /// The code for a request that cannot be proxied (a batch row, a scan
    /// partition): not run here, to be asked of its leader.
    fn code(self) -> ResultCode {
        match self {
            Refused::Code(code) => code,
            Refused::LeaderElsewhere(_) => ResultCode::Unavailable,
        }
    }
}

impl From<ResultCode> for Refused {
    fn from(code: ResultCode) -> Refused {
        Refused::Code(code)
    }
}

fn encode_or_log(result: aerie_protocol::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "encoding an answer failed");
    }
}

/// When a request must be answered by, and how long any one wait of it may
/// take (a scan without a total deadline is bounded wait by wait).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    at: Option<Instant>,
    step: Duration,
}

impl Deadline {
    /// `transaction_ttl` ms from now (0: [`DEFAULT_TRANSACTION_MS`]).
    fn total(transaction_ttl_ms: u32) -> Deadline {
        let ms = match transaction_ttl_ms {
            0 => DEFAULT_TRANSACTION_MS,
            ms => ms,
        };
        let step = Duration::from_millis(u64::from(ms));
        Deadline {
            at: Some(Instant::now() + step),
            step,
        }
    }

    /// Scans: `transaction_ttl` when the client gives one (0 = none, as in
    /// Aerospike), and every wait within `step`.
    fn scan(transaction_ttl_ms: u32, step: Duration) -> Deadline {
        let at = (transaction_ttl_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(transaction_ttl_ms)));
        Deadline { at, step }
    }

    /// When to stop asking again: the request's deadline, or one step from
    /// now for a request without one.
    fn give_up(&self) -> Instant {
        self.at.unwrap_or_else(|| Instant::now() + self.step)
    }

    /// True once the request's time is up.
    fn passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Awaits `f` until the deadline or `step`, whichever comes first.
    async fn wait<F: Future>(&self, f: F) -> Result<F::Output, ResultCode> {
        let step = Instant::now() + self.step;
        let until = self.at.map_or(step, |at| at.min(step));
        tokio::time::timeout_at(until.into(), f)
            .await
            .map_err(|_| ResultCode::Timeout)
    }
}

/// Pause before asking a shard again that had no leader.
const NO_LEADER_RETRY_MS: u64 = 20;

/// Whether `error` says the command surely did not run because the shard
/// has no leader here right now, and the deadline leaves time to ask again
/// (after a short pause, taken here).
async fn retry_later(error: &aerie_replication::Error, give_up: Instant) -> bool {
    use aerie_replication::Error as E;
    matches!(error, E::NotLeader { .. } | E::Dropped(_)) && pause_before_retry(give_up).await
}

/// Pauses before a request is tried again, if the deadline leaves time for
/// the pause; returns whether it did.
async fn pause_before_retry(give_up: Instant) -> bool {
    let pause = Duration::from_millis(NO_LEADER_RETRY_MS);
    let time_left = Instant::now() + pause < give_up;
    if time_left {
        tokio::time::sleep(pause).await;
    }
    time_left
}

impl Server {
    /// Answers one frame into `out` (streams are flushed to `writer` as they
    /// grow). `Err` only for socket errors: the connection then closes.
    pub async fn handle<W: AsyncWrite + Unpin>(
        &self,
        frame: Frame<'_>,
        conn: &mut ConnState,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        match frame.header.msg_type {
            MessageType::Info => {
                let started = Instant::now();
                self.info(frame.body, conn, out).await;
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
            MessageType::AsMsg => self.as_msg(frame.body, conn, out, writer).await,
            MessageType::Compressed => {
                // The inflated copy is reserved from the budget first.
                let mut held = self.budget.holder();
                let declared = compress::declared_size(frame.body).unwrap_or(0);
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                let wait = std::time::Instant::now() + BUDGET_WAIT;
                if held.cover(declared, wait).await.is_err() {
                    return self.error(out, ResultCode::DeviceOverload);
                }
                let inflated = match compress::decompress(frame.body, &self.limits) {
                    Ok(inflated) => inflated,
                    Err(e) => return self.error(out, e.result_code()),
                };
                match compress::inner_frame(&inflated, &self.limits) {
                    Ok(inner) if inner.header.msg_type == MessageType::AsMsg => {
                        Box::pin(self.as_msg(inner.body, conn, out, writer)).await
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
        conn: &ConnState,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        match Request::decode(body, &self.limits) {
            Ok(Request::Record(request)) => {
                self.record(&request, body, conn, out).await;
                Ok(())
            }
            Ok(Request::Batch(request)) => {
                let started = Instant::now();
                let result = self.batch(&request, out, writer).await;
                self.metrics
                    .record(BATCH, started.elapsed(), result.is_err());
                result
            }
            Ok(Request::Scan(request)) => {
                let started = Instant::now();
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

    /// The namespace's largest record, bytes.
    fn record_size_limit_bytes(&self, ns: &str) -> usize {
        self.engine
            .config()
            .namespaces
            .iter()
            .find(|n| n.name == ns)
            .map_or(0, |n| n.record_size_limit_bytes() as usize)
    }

    /// Waits until a read of `shard` here is linearizable. Reads change
    /// nothing, so every failure is exact.
    async fn read_barrier(&self, shard: u32, deadline: &Deadline) -> Result<(), Refused> {
        use aerie_replication::Error as E;
        let give_up = deadline.give_up();
        loop {
            match self.read_barrier_once(shard, deadline).await {
                Err(E::NotLeader { leader: 0, .. }) if !self.holds_replica(shard) => {
                    self.ask_the_others(shard, give_up).await?;
                }
                Err(e) if retry_later(&e, give_up).await => continue,
                Err(e) => return Err(replication_code(&e, Queued::Nothing).into()),
                Ok(answer) => return Ok(answer?),
            }
        }
    }

    /// One read barrier: the replication error (to retry or map), or the
    /// answer.
    async fn read_barrier_once(
        &self,
        shard: u32,
        deadline: &Deadline,
    ) -> Result<Result<(), ResultCode>, aerie_replication::Error> {
        let (tx, rx) = oneshot::channel();
        self.node.read_barrier_with(shard, move |r| {
            let _ = tx.send(r);
        })?;
        Ok(match deadline.wait(rx).await {
            Err(code) => Err(code),
            Ok(Ok(result)) => return result.map(Ok),
            // The shard went away without answering: retry elsewhere.
            Ok(Err(_)) => Err(ResultCode::Unavailable),
        })
    }

    /// Proposes a command to its shard and waits for the engine's outcome.
    /// A proposal that surely did not run because the shard has no leader
    /// right now (an election, a hand-off) is tried again until the
    /// deadline: the client gets an answer, not a retryable error. One that
    /// finds another node leading is handed back to be proxied there.
    async fn propose(
        &self,
        shard: u32,
        command: Command,
        deadline: &Deadline,
    ) -> Result<aerie_engine::Outcome, Refused> {
        use aerie_replication::Error as E;
        let give_up = deadline.give_up();
        loop {
            let (result, queued) = match self.node.propose(shard, command.clone()) {
                Ok(outcome) => match deadline.wait(outcome).await? {
                    Ok(result) => (result, Queued::Write),
                    // Dropped without an answer: the entry may be in the log.
                    Err(_) => return Err(ResultCode::Timeout.into()),
                },
                Err(e) => (Err(e), Queued::Nothing),
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(E::NotLeader { leader, .. }) if leader != 0 && leader != self.node_id => {
                    return Err(Refused::LeaderElsewhere(leader));
                }
                Err(E::NotLeader { leader: 0, .. }) if !self.holds_replica(shard) => {
                    self.ask_the_others(shard, give_up).await?;
                }
                Err(e) if retry_later(&e, give_up).await => continue,
                Err(e) => return Err(replication_code(&e, queued).into()),
            }
        }
    }

    /// Whether this node holds a replica of `shard` it can trust to learn
    /// the leader from: not one of a node being removed or retired, whose
    /// raft group may have been left without telling it.
    fn holds_replica(&self, shard: u32) -> bool {
        self.node.is_member(shard) && self.cluster.holds_replicas()
    }

    /// For a shard this node holds no replica of: its leader as the others
    /// say (to proxy to), or, with none known, a short pause before the
    /// caller asks again; UNAVAILABLE once the deadline leaves no time.
    async fn ask_the_others(&self, shard: u32, give_up: Instant) -> Result<(), Refused> {
        if let Some(leader) = self.hinted_leader(shard, give_up).await {
            return Err(Refused::LeaderElsewhere(leader));
        }
        if pause_before_retry(give_up).await {
            Ok(())
        } else {
            tracing::debug!(
                shard,
                "no node knows a leader before the deadline: unavailable"
            );
            Err(ResultCode::Unavailable.into())
        }
    }

    /// The leader of a shard this node holds no replica of, as the other
    /// members say (not this node itself: it would loop).
    async fn hinted_leader(&self, shard: u32, give_up: Instant) -> Option<u64> {
        let peers: Vec<(u64, String)> = self
            .cluster
            .members()
            .iter()
            .filter(|m| m.node_id != self.node_id)
            .map(|m| (m.node_id, m.service_addr.clone()))
            .collect();
        self.proxy
            .leader_hint(shard, &peers, give_up)
            .await
            .filter(|&leader| leader != self.node_id)
    }

    async fn record(
        &self,
        req: &RecordRequest<'_>,
        body: &[u8],
        conn: &ConnState,
        out: &mut Vec<u8>,
    ) {
        let started = Instant::now();
        let deadline = Deadline::total(req.timeout_ms());
        let command = req.command();
        let kind = match command {
            Ok(RecordCommand::Write) => WRITE,
            Ok(RecordCommand::Delete) => DELETE,
            _ => READ,
        };
        let result = self
            .record_here_or_there(req, body, conn, &deadline, out)
            .await;
        // A missing record is an answer, not a failure of the server.
        let failed = result.is_err_and(|c| c != ResultCode::NotFound);
        self.metrics.record(kind, started.elapsed(), failed);
        if let Err(code) = result {
            encode_or_log(encode_record_response(out, code, 0, 0, &[]));
        }
    }

    /// Runs the command here, or, while another node leads its shard,
    /// proxies it there (one hop: not for a proxy's own requests), until
    /// it is answered or the deadline passes.
    async fn record_here_or_there(
        &self,
        req: &RecordRequest<'_>,
        body: &[u8],
        conn: &ConnState,
        deadline: &Deadline,
        out: &mut Vec<u8>,
    ) -> Result<(), ResultCode> {
        let give_up = deadline.give_up();
        // Set once the leader this node's raft names refused a proxied
        // request: its view may be stale (a node being removed is cut off
        // from its groups), so the others are asked who leads.
        let mut refused_by = None;
        loop {
            let leader = match self.run_record(req, req.command(), deadline, out).await {
                Ok(()) => return Ok(()),
                Err(Refused::Code(code)) => return Err(code),
                // The proxy routes it again: this answer says it did not run.
                Err(Refused::LeaderElsewhere(_)) if conn.from_proxy => {
                    return Err(ResultCode::Unavailable);
                }
                Err(Refused::LeaderElsewhere(leader)) if refused_by == Some(leader) => self
                    .hinted_leader(self.shard_of(&req.digest), give_up)
                    .await
                    .unwrap_or(leader),
                Err(Refused::LeaderElsewhere(leader)) => leader,
            };
            let Some(address) = self.cluster.service_address(leader) else {
                tracing::debug!(leader, "no service address for the leader: unavailable");
                return Err(ResultCode::Unavailable);
            };
            match self.proxy.forward(&address, body, give_up).await {
                Relay::Answer(answer) => {
                    out.extend_from_slice(&answer);
                    return Ok(());
                }
                Relay::InDoubt => return Err(ResultCode::Timeout),
                Relay::NotRun if pause_before_retry(give_up).await => refused_by = Some(leader),
                Relay::NotRun => {
                    tracing::debug!(leader, %address, "proxying found no leader before the deadline: unavailable");
                    return Err(ResultCode::Unavailable);
                }
            }
        }
    }

    async fn run_record(
        &self,
        req: &RecordRequest<'_>,
        command: aerie_protocol::Result<RecordCommand>,
        deadline: &Deadline,
        out: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        if !self.has_namespace(req.namespace) {
            return Err(ResultCode::Namespace.into());
        }
        let command = command.map_err(|e| e.result_code())?;
        key_matches_digest(req)?;
        match command {
            RecordCommand::Read => self.read(req, deadline, out).await,
            RecordCommand::Write => self.write(req, deadline, out).await,
            RecordCommand::Delete => self.delete(req, deadline, out).await,
        }
    }

    async fn read(
        &self,
        req: &RecordRequest<'_>,
        deadline: &Deadline,
        out: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        support::read(req)?;
        let info1 = req.header.info1;
        let selection = if info1.contains(Info1::GET_NO_BINS) {
            BinSelection::None
        } else if info1.contains(Info1::GET_ALL) {
            BinSelection::All
        } else if req.ops.is_empty() {
            return Err(ResultCode::Parameter.into());
        } else {
            BinSelection::Named(req.ops.iter().map(|op| op.name.to_string()).collect())
        };
        self.read_barrier(self.shard_of(&req.digest), deadline)
            .await?;
        // One index probe and at most one read of a record of bounded size:
        // cheap enough for the async worker.
        let view = self
            .engine
            .get(req.namespace, &req.digest, &selection, now_ms())
            .map_err(|e| self.read_failed(&req.digest, &e))?
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

    /// The result code of a failed record read; damaged data also marks
    /// this node's replica of the record's shard for a rebuild.
    fn read_failed(
        &self,
        digest: &aerie_engine::Digest,
        error: &aerie_engine::Error,
    ) -> ResultCode {
        if let aerie_engine::Error::Corruption { .. } = error {
            self.node
                .report_damage(self.shard_of(digest), &error.to_string());
        }
        engine_code(error)
    }

    async fn write(
        &self,
        req: &RecordRequest<'_>,
        deadline: &Deadline,
        out: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        support::write(req)?;
        let get_all = req.header.info1.contains(Info1::GET_ALL);
        let respond_all = req.header.info2.contains(Info2::RESPOND_ALL_OPS);
        if req.ops.is_empty() || (get_all && respond_all) {
            return Err(ResultCode::Parameter.into());
        }
        // Bins this large cannot make a record under the limit; refusing
        // here keeps them out of the log (and the WAL's entry limit).
        if write_size_bytes(req) > self.record_size_limit_bytes(req.namespace) {
            return Err(ResultCode::RecordTooBig.into());
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
        let outcome = self
            .propose(self.shard_of(&req.digest), command, deadline)
            .await?;
        let answer = write_result_ops(req, &outcome.results, respond_all);
        encode_or_log(encode_record_response(
            out,
            ResultCode::Ok,
            u32::from(outcome.generation),
            outcome.void_time,
            &answer,
        ));
        Ok(())
    }

    async fn delete(
        &self,
        req: &RecordRequest<'_>,
        deadline: &Deadline,
        out: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        support::delete(req)?;
        let command = Command::Delete {
            namespace: req.namespace.to_string(),
            digest: req.digest,
            generation: convert::generation_in(req.generation_policy()),
        };
        self.propose(self.shard_of(&req.digest), command, deadline)
            .await?;
        encode_or_log(encode_record_response(out, ResultCode::Ok, 0, 0, &[]));
        Ok(())
    }

    async fn info(&self, body: &[u8], conn: &mut ConnState, out: &mut Vec<u8>) {
        let request = match InfoRequest::parse(body) {
            Ok(request) => request,
            Err(_) => {
                let _ = self.error(out, ResultCode::Parameter);
                return;
            }
        };
        let mut answers = Vec::with_capacity(request.commands.len());
        for command in &request.commands {
            let answer = if command.name == proxy::PROXY_HELLO {
                conn.from_proxy = true;
                "ok".to_string()
            } else if command.name == proxy::LEADS {
                self.led_shards()
            } else {
                self.info_answer(command, conn).await
            };
            answers.push((command.line, answer));
        }
        let mut writer = InfoResponseWriter::new(out);
        for (line, answer) in &answers {
            encode_or_log(writer.entry(line, answer));
        }
        encode_or_log(writer.finish());
    }

    async fn info_answer(&self, command: &info::InfoCommand<'_>, conn: &ConnState) -> String {
        let ns_list = || self.namespaces.join(";");
        match command.name {
            names::NODE => info::node_name(self.node_id),
            names::BUILD => info::BUILD_VERSION.to_string(),
            names::PARTITION_GENERATION => self.cluster.partition_generation(&self.namespaces).to_string(),
            names::PEERS_GENERATION => self.cluster.peers_generation().to_string(),
            names::REBALANCE_GENERATION => "1".into(),
            names::CLUSTER_NAME => self.cluster_name.clone(),
            names::PEERS_CLEAR_STD | names::PEERS_CLEAR_ALT => self.cluster.peers(self.service_port),
            names::PEERS_TLS_STD | names::PEERS_TLS_ALT => {
                info::format_peers(self.cluster.peers_generation(), self.service_port, &[])
            }
            names::SERVICE_CLEAR_STD | names::SERVICE_CLEAR_ALT => {
                format!("{}:{}", self.service_address, self.service_port)
            }
            names::SERVICE_TLS_STD | names::SERVICE_TLS_ALT => String::new(),
            names::REPLICAS => self.cluster.replicas(&self.namespaces),
            names::USER_AGENT_SET => info::USER_AGENT_SET_OK.into(),
            names::PARTITIONS => info::PARTITIONS_ANSWER.into(),
            names::NAMESPACES => ns_list(),
            names::NAMESPACE => self.namespace_stats(command.rest.unwrap_or("")),
            names::STATISTICS => self.statistics(),
            names::SETS => self.sets(command.rest.unwrap_or("")),
            names::VERSION => info::version_answer("Aerie", info::BUILD_VERSION),
            names::EDITION => "Aerie".into(),
            "features" => "batch-any;batch-index;float;geo;peers;pipelining;pscans;replicas;truncate-namespace".into(),
            "truncate" | "truncate-namespace" => self.truncate(command, conn).await,
            "cluster-status" => self.cluster.status(),
            "cluster-members" => self.cluster.members_answer(),
            "cluster-leave" | "cluster-retire" => self.cluster_change(command),
            CHECKSUMS => self.shard_checksums().await,
            PARTITION_CHECKSUMS => self.partition_checksums(command).await,
            CHECK_NOW => match self.node.check_now() {
                Ok(()) => "ok".into(),
                Err(e) => info::format_error(None, &e.to_string()),
            },
            CHECK_VERDICTS => self.check_verdicts(),
            "snapshot" => {
                self.node.request_snapshots();
                "ok".into()
            }
            _ => info::ERROR_UNRECOGNIZED_COMMAND.into(),
        }
    }

    /// `cluster-leave:node=<name>[;force=true]` and
    /// `cluster-retire:node=<name>`: "ok" once proposed to the cluster
    /// group (the caller watches `cluster-status` for the change).
    fn cluster_change(&self, command: &info::InfoCommand<'_>) -> String {
        let Some(name) = command.param("node") else {
            return info::format_error(Some(ResultCode::Parameter), "node=<name> is required");
        };
        let done = match command.name {
            "cluster-leave" => self
                .cluster
                .leave(name, command.param("force") == Some("true")),
            _ => self.cluster.retire(name),
        };
        match done {
            Ok(()) => "ok".into(),
            Err(e) => info::format_error(Some(ResultCode::Parameter), &e),
        }
    }

    /// [`CHECKSUMS`]: per shard this node holds a replica of,
    /// `shard=N:applied=N:records=N:checksum=<hex>`, joined by `;`: the
    /// records of every namespace in the shard's partitions and a checksum
    /// of their digests, generations and void times (equal on replicas at
    /// the same applied index; the fault harness compares them). RAM only,
    /// on the blocking pool.
    async fn shard_checksums(&self) -> String {
        let (node, map) = (self.node.clone(), self.map);
        self.summarize_blocking(move |sum| {
            let mut parts = Vec::new();
            for status in node.status().iter().filter(|s| node.is_member(s.shard)) {
                let (mut records, mut checksum) = (0u64, 0u64);
                for p in map.partitions(status.shard) {
                    let (r, c) = sum(p)?;
                    records += r;
                    checksum = checksum.wrapping_add(c);
                }
                parts.push(format!(
                    "shard={}:applied={}:records={records}:checksum={checksum:016x}",
                    status.shard, status.applied
                ));
            }
            Some(parts.join(";"))
        })
        .await
    }

    /// [`PARTITION_CHECKSUMS`]`:shard=N`: the shard's applied index, then
    /// per partition `<partition>=<records>/<checksum hex>`, joined by `;`
    /// (`applied=N;12=40/00ab…;13=…`), for `aerie cluster check` to name
    /// the partitions where replicas differ.
    async fn partition_checksums(&self, command: &info::InfoCommand<'_>) -> String {
        let Some(shard) = command.param("shard").and_then(|s| s.parse::<u32>().ok()) else {
            return info::format_error(Some(ResultCode::Parameter), "shard=<number> is required");
        };
        let (node, map) = (self.node.clone(), self.map);
        self.summarize_blocking(move |sum| {
            let status = node.status().into_iter().find(|s| s.shard == shard)?;
            let mut parts = vec![format!("applied={}", status.applied)];
            for p in map.partitions(shard) {
                let (records, checksum) = sum(p)?;
                parts.push(format!("{p}={records}/{checksum:016x}"));
            }
            Some(parts.join(";"))
        })
        .await
    }

    /// [`CHECK_VERDICTS`]: per shard with a check judged here,
    /// `shard=N:id=N:index=N:verdict=agree`, or `verdict=differ` with
    /// `:members=<names>:partitions=<list>` (the copies in the minority,
    /// rebuilt by themselves; no partitions: unreadable), or
    /// `verdict=no-majority`; joined by `;`.
    fn check_verdicts(&self) -> String {
        use aerie_replication::check::Verdict;
        let join = |items: Vec<String>| items.join(",");
        let verdicts = self.node.damage().verdicts();
        let parts = verdicts.iter().enumerate().filter_map(|(shard, judged)| {
            let judged = judged.as_ref()?;
            let verdict = match &judged.verdict {
                Verdict::Agree => "agree".to_string(),
                Verdict::NoMajority => "no-majority".to_string(),
                Verdict::Minority {
                    members,
                    partitions,
                } => format!(
                    "differ:members={}:partitions={}",
                    join(members.iter().map(|m| info::node_name(*m)).collect()),
                    join(partitions.iter().map(u16::to_string).collect())
                ),
            };
            Some(format!(
                "shard={shard}:id={}:index={}:verdict={verdict}",
                judged.id, judged.index
            ))
        });
        parts.collect::<Vec<_>>().join(";")
    }

    /// Runs `summarize` on a blocking thread (it reads every record of the
    /// partitions it sums), handing it each partition's (records, checksum)
    /// over every namespace; `None` becomes an error answer.
    async fn summarize_blocking(
        &self,
        summarize: impl FnOnce(&dyn Fn(u16) -> Option<(u64, u64)>) -> Option<String> + Send + 'static,
    ) -> String {
        let (engine, namespaces) = (self.engine.clone(), self.namespaces.clone());
        let run = move || {
            let now = aerie_replication::now_ms();
            let sum = |p: u16| {
                let (mut records, mut checksum) = (0u64, 0u64);
                for ns in &namespaces {
                    let summary = engine.partition_summary(ns, p, now).ok()?;
                    records += summary.records;
                    checksum = checksum.wrapping_add(summary.checksum);
                }
                Some((records, checksum))
            };
            summarize(&sum)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Some(answer)) => answer,
            _ => info::format_error(None, "checksums unavailable"),
        }
    }

    /// The shards this node leads, for [`proxy::LEADS`].
    fn led_shards(&self) -> String {
        let me = self.node_id;
        let status = self.node.status();
        let led = status
            .iter()
            .filter(|s| s.leader == me)
            .map(|s| s.shard.to_string());
        led.collect::<Vec<_>>().join(",")
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
            (
                "replication-factor",
                self.cluster.effective_replication_factor().to_string(),
            ),
            // Aerospike's name: the namespace refuses writes (out of space).
            ("stop_writes", self.stops_writes(ns).to_string()),
        ])
    }

    /// The namespace refuses writes: past its own stop-writes threshold, or
    /// the node's disk is nearly full.
    fn stops_writes(&self, ns: &str) -> bool {
        self.engine.health().stop_writes.contains_key(ns)
            || self
                .node
                .refusals()
                .iter()
                .any(|(_, r)| r.is_out_of_space())
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
        let damage = self.node.damage().counters();
        let damaged = self.node.damage().damaged();
        let damaged = damaged.iter().map(u32::to_string).collect::<Vec<_>>();
        let rebuilt = self.node.rebuilds().totals();
        info::format_key_values([
            ("objects", objects.to_string()),
            ("client_reads", ops(READ)),
            ("client_writes", ops(WRITE)),
            ("client_deletes", ops(DELETE)),
            ("batch_index_initiate", ops(BATCH)),
            ("scans", ops(SCAN)),
            ("info_requests", ops(INFO)),
            ("client_errors", errors.to_string()),
            ("writes_refused", self.refusal_summary()),
            ("damaged_shards", damaged.join(",")),
            ("replicas_damaged_found", damage.found.to_string()),
            ("replicas_rebuilt", damage.rebuilds.to_string()),
            ("consistency_checks", damage.checks.to_string()),
            ("consistency_mismatches", damage.mismatches.to_string()),
            ("rebuild_fetched_bytes", rebuilt.bytes.to_string()),
            ("rebuild_installed_records", rebuilt.records.to_string()),
            ("rebuild_installed_snapshots", rebuilt.installed.to_string()),
        ])
    }

    /// `none`, or every write refusal in force as `kind[/shard]:reason`
    /// joined by `|` (info values cannot hold `;`, `:` is kept readable).
    fn refusal_summary(&self) -> String {
        let refusals = self.node.refusals();
        if refusals.is_empty() {
            return "none".into();
        }
        refusals
            .iter()
            .map(|(shard, refusal)| {
                let at = shard.map(|s| format!("/shard-{s}")).unwrap_or_default();
                let reason = refusal.to_string().replace([';', '\n', '\t', '='], " ");
                format!("{}{at}: {reason}", refusal.kind())
            })
            .collect::<Vec<_>>()
            .join("|")
    }

    /// `truncate:namespace=<ns>[;set=<set>][;lut=<ns since epoch>]` and
    /// `truncate-namespace:namespace=<ns>`: through every shard's log, each
    /// shard truncating only its own partitions, so every replica removes the
    /// same records. A shard led elsewhere is asked of its leader, as
    /// `truncate:...;shard=<n>` on a proxy connection. A `lut` later than
    /// this node's clock is refused from a client and clamped from a proxy
    /// (the engine clamps it to the leader's clock anyway).
    async fn truncate(&self, command: &info::InfoCommand<'_>, conn: &ConnState) -> String {
        let Some(ns) = command
            .param("namespace")
            .filter(|ns| self.has_namespace(ns))
        else {
            return info::format_error(Some(ResultCode::Parameter), "namespace required");
        };
        let set = command.param("set").filter(|s| !s.is_empty());
        let now = now_ms();
        let before_ms = match command.param("lut").map(str::parse::<u64>) {
            Some(Ok(nanos)) if nanos / 1_000_000 > now && !conn.from_proxy => {
                return info::format_error(Some(ResultCode::Parameter), "lut is in the future");
            }
            Some(Ok(nanos)) => (nanos / 1_000_000).min(now),
            Some(Err(_)) => return info::format_error(Some(ResultCode::Parameter), "bad lut"),
            None => now,
        };
        let shards = match command.param("shard").map(str::parse::<u32>) {
            Some(Ok(shard)) if shard < self.map.shards() => shard..shard + 1,
            Some(_) => return info::format_error(Some(ResultCode::Parameter), "bad shard"),
            None => 0..self.map.shards(),
        };
        let deadline = Deadline::total(TRUNCATE_MS);
        for shard in shards {
            let cut = Cut {
                namespace: ns,
                set,
                before_ms,
                shard,
            };
            if let Err(code) = self.truncate_shard(&cut, conn, &deadline).await {
                return info::format_error(Some(code), "truncate failed");
            }
        }
        "ok".into()
    }

    /// Truncates one shard here, or asks its leader to (a repeated truncate
    /// with the same cut-off removes nothing more, so asking again is safe).
    async fn truncate_shard(
        &self,
        cut: &Cut<'_>,
        conn: &ConnState,
        deadline: &Deadline,
    ) -> Result<(), ResultCode> {
        loop {
            let command = Command::Truncate {
                namespace: cut.namespace.to_string(),
                set: cut.set.map(str::to_string),
                before_ms: cut.before_ms,
                partitions: self.map.partitions(cut.shard),
            };
            let leader = match self.propose(cut.shard, command, deadline).await {
                Ok(_) => return Ok(()),
                Err(Refused::Code(code)) => return Err(code),
                Err(Refused::LeaderElsewhere(_)) if conn.from_proxy => {
                    return Err(ResultCode::Unavailable);
                }
                Err(Refused::LeaderElsewhere(leader)) => leader,
            };
            let address = self
                .cluster
                .service_address(leader)
                .ok_or(ResultCode::Unavailable)?;
            let answer = self
                .proxy
                .info(&address, &cut.line(), deadline.give_up())
                .await;
            match answer {
                Some(answer) if !info::is_error(&answer) => return Ok(()),
                _ if pause_before_retry(deadline.give_up()).await => {}
                _ => return Err(ResultCode::Timeout),
            }
        }
    }
}

/// One shard's part of a truncate.
struct Cut<'a> {
    namespace: &'a str,
    set: Option<&'a str>,
    before_ms: u64,
    shard: u32,
}

impl Cut<'_> {
    /// The info command that asks a shard's leader for this cut.
    fn line(&self) -> String {
        let set = self.set.map(|s| format!(";set={s}")).unwrap_or_default();
        format!(
            "truncate:namespace={}{set};lut={};shard={}",
            self.namespace,
            self.before_ms.saturating_mul(1_000_000),
            self.shard
        )
    }
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

/// The result ops of a write: one per op with RESPOND_ALL_OPS (a NULL
/// placeholder for ops without a value), else only the values read.
fn write_result_ops<'v>(
    req: &'v RecordRequest<'_>,
    results: &'v [OpResult],
    respond_all: bool,
) -> Vec<Op<'v>> {
    let mut answer = Vec::new();
    for (op, result) in req.ops.iter().zip(results) {
        match result {
            OpResult::None if respond_all => answer.push(Op::result(op.name, Value::Nil)),
            OpResult::None => {}
            OpResult::Value(v) => answer.push(Op::result(op.name, value_out(v))),
            OpResult::Bins(bins) => answer.extend(
                bins.iter()
                    .map(|b| Op::result(&b.name, value_out(&b.value))),
            ),
        }
    }
    answer
}

/// What a write carries into the record: its ops' bin names and values,
/// and the key. The record it makes is at least this large unless ops
/// overwrite each other.
fn write_size_bytes(req: &RecordRequest<'_>) -> usize {
    let ops: usize = req
        .ops
        .iter()
        .map(|op| op.name.len() + op.value.encoded_len())
        .sum();
    ops + req.key.as_ref().map_or(0, |k| k.encoded_len())
}

/// A key sent with a request must be the one its digest was computed from:
/// otherwise it would be stored (and returned by scans) for another record.
fn key_matches_digest(req: &RecordRequest<'_>) -> Result<(), ResultCode> {
    match &req.key {
        Some(key) if compute_digest(req.set_name().as_bytes(), key) != req.digest => {
            Err(ResultCode::KeyMismatch)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_past_its_deadline_is_a_timeout() {
        let deadline = Deadline::total(20);
        let never = std::future::pending::<()>();
        assert_eq!(deadline.wait(never).await, Err(ResultCode::Timeout));
        assert!(deadline.passed());
        assert_eq!(Deadline::total(1_000).wait(async { 5 }).await, Ok(5));
        // 0 is the server default, not "no deadline".
        assert!(Deadline::total(0).at.is_some());
    }

    #[tokio::test]
    async fn a_scan_without_a_total_deadline_bounds_each_wait() {
        let deadline = Deadline::scan(0, Duration::from_millis(20));
        assert!(!deadline.passed());
        let never = std::future::pending::<()>();
        assert_eq!(deadline.wait(never).await, Err(ResultCode::Timeout));
        assert!(!deadline.passed(), "a slow step does not end the scan");
        let total = Deadline::scan(10, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(total.passed());
    }
}
