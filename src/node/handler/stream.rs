//! Streamed answers: batch reads (one row message per key) and partition
//! scans (record messages, partition-done markers), sent in frames of
//! bounded size as they are produced, then LAST. Engine reads of a scan run
//! on the blocking pool, a page at a time, each under a short lock.

use std::collections::BTreeMap;
use std::time::Duration;

use aerie_engine::{BinSelection, Digest, Engine, Record, RecordView, partition_of};
use aerie_protocol::batch::{self, BatchRowAttrs};
use aerie_protocol::framing::{self, MessageType};
use aerie_protocol::message::{Info1, Info2, encode_last};
use aerie_protocol::scan::{self, ScanRecordHeader, ScanRequest};
use aerie_protocol::{BatchRequest, Op, ResultCode};
use aerie_replication::now_ms;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Deadline, Io, Refused, Server, encode_or_log, support};
use crate::node::convert::{engine_code, key_out, value_out};

/// A stream answer is flushed to the socket once a frame reaches this size.
const STREAM_FRAME_BYTES: usize = 256 << 10;
/// Most records read per engine call during a scan.
const SCAN_PAGE_RECORDS: usize = 256;
/// A scan page stops once its records reach this many bytes as stored (so a
/// page holds at most this plus one record).
const SCAN_PAGE_BYTES: usize = 1 << 20;
/// How long one wait of a scan may take when the client sends no socket
/// timeout (the C client's default socket timeout for scans).
const DEFAULT_SCAN_SOCKET_TIMEOUT_MS: u32 = 30_000;

/// A response stream: messages appended to `out`, sent in frames once they
/// reach [`STREAM_FRAME_BYTES`], every socket write within the deadline.
struct Stream<'a, W> {
    out: &'a mut Vec<u8>,
    writer: &'a mut W,
    frame_start: usize,
    deadline: Deadline,
}

impl<'a, W: AsyncWrite + Unpin> Stream<'a, W> {
    fn new(out: &'a mut Vec<u8>, writer: &'a mut W, deadline: Deadline) -> Self {
        let frame_start = framing::begin_frame(out, MessageType::AsMsg);
        Stream {
            out,
            writer,
            frame_start,
            deadline,
        }
    }

    /// Sends the frame being built once it is full and starts the next. A
    /// client that does not read within the deadline loses its connection
    /// (its answer cannot be finished any more).
    async fn flush_if_full(&mut self) -> Io {
        if self.out.len() - self.frame_start < STREAM_FRAME_BYTES {
            return Ok(());
        }
        encode_or_log(framing::finish_frame(self.out, self.frame_start));
        let sent = self.deadline.wait(self.writer.write_all(self.out)).await;
        sent.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        self.out.clear();
        self.frame_start = framing::begin_frame(self.out, MessageType::AsMsg);
        Ok(())
    }

    /// Ends the stream with LAST carrying `code` (the caller sends it).
    fn finish(self, code: ResultCode) {
        encode_last(self.out, code);
        encode_or_log(framing::finish_frame(self.out, self.frame_start));
    }
}

/// How a partition's part of a scan ended.
enum Scanned {
    /// Every record was sent.
    Done,
    /// The record budget ran out first.
    OutOfBudget,
    /// The partition could not be read.
    Failed(ResultCode),
}

impl Server {
    /// Batch reads (and exists): one row message per key, then LAST. Writes
    /// in a batch are answered per row with UNSUPPORTED_FEATURE.
    pub(super) async fn batch<W: AsyncWrite + Unpin>(
        &self,
        req: &BatchRequest<'_>,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        if let Err(code) = support::batch(req) {
            return self.error(out, code);
        }
        if let Some(Err(e)) = req.resolved_rows().find(Result::is_err) {
            return self.error(out, e.result_code());
        }
        let deadline = Deadline::total(req.header.transaction_ttl);
        let mut barriers: BTreeMap<u32, Result<(), ResultCode>> = BTreeMap::new();
        let mut stream = Stream::new(out, writer, deadline);
        for (index, digest, attrs) in req.resolved_rows().flatten() {
            if deadline.passed() {
                stream.finish(ResultCode::Timeout);
                return Ok(());
            }
            let answer = match self.batch_row_check(attrs) {
                Ok(()) => self.batch_barrier(&digest, &deadline, &mut barriers).await,
                Err(code) => Err(code),
            };
            self.batch_row(index, &digest, attrs, answer, stream.out);
            stream.flush_if_full().await?;
        }
        stream.finish(ResultCode::Ok);
        Ok(())
    }

    fn batch_row_check(&self, attrs: &BatchRowAttrs<'_>) -> Result<(), ResultCode> {
        if attrs.info2().contains(Info2::WRITE) {
            return Err(ResultCode::UnsupportedFeature);
        }
        if !self.has_namespace(attrs.namespace) {
            return Err(ResultCode::Namespace);
        }
        support::batch_row(attrs)
    }

    /// The read barrier of the row's shard, waited for once per batch.
    async fn batch_barrier(
        &self,
        digest: &Digest,
        deadline: &Deadline,
        barriers: &mut BTreeMap<u32, Result<(), ResultCode>>,
    ) -> Result<(), ResultCode> {
        self.barrier_once(self.shard_of(digest), deadline, barriers)
            .await
    }

    /// `shard`'s read barrier, waited for once per batch or scan: what it
    /// reads then reflects every write acknowledged before the request.
    async fn barrier_once(
        &self,
        shard: u32,
        deadline: &Deadline,
        barriers: &mut BTreeMap<u32, Result<(), ResultCode>>,
    ) -> Result<(), ResultCode> {
        if let Some(barrier) = barriers.get(&shard) {
            return *barrier;
        }
        let barrier = self
            .read_barrier(shard, deadline)
            .await
            .map_err(Refused::code);
        barriers.insert(shard, barrier);
        barrier
    }

    fn batch_row(
        &self,
        index: u32,
        digest: &Digest,
        attrs: &BatchRowAttrs<'_>,
        checked: Result<(), ResultCode>,
        out: &mut Vec<u8>,
    ) {
        let empty = |out: &mut Vec<u8>, code| {
            encode_or_log(batch::encode_batch_row(out, index, code, 0, 0, &[]));
        };
        if let Err(code) = checked {
            return empty(out, code);
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
            Ok(Some(view)) => encode_or_log(found_row(out, index, digest, attrs, &view)),
            Ok(None) => empty(out, ResultCode::NotFound),
            Err(e) => empty(out, self.read_failed(digest, &e)),
        }
    }

    /// A partition scan: records of the asked partitions (resuming after the
    /// given digests), at most `max_records`, each partition finished with a
    /// PARTITION_DONE message, then LAST (TIMEOUT when the deadline passed).
    pub(super) async fn scan<W: AsyncWrite + Unpin>(
        &self,
        req: &ScanRequest<'_>,
        out: &mut Vec<u8>,
        writer: &mut W,
    ) -> Io {
        if !self.has_namespace(req.namespace) {
            return self.error(out, ResultCode::Namespace);
        }
        if let Err(code) = support::scan(req) {
            return self.error(out, code);
        }
        let step = match req.socket_timeout_ms {
            Some(ms) if ms > 0 => ms,
            _ => DEFAULT_SCAN_SOCKET_TIMEOUT_MS,
        };
        let deadline = Deadline::scan(
            req.header.transaction_ttl,
            Duration::from_millis(u64::from(step)),
        );
        let mut budget = req.max_records.filter(|&m| m > 0).unwrap_or(u64::MAX);
        let mut stream = Stream::new(out, writer, deadline);
        let mut barriers = BTreeMap::new();
        for (partition, resume) in scan_work(req) {
            if deadline.passed() {
                stream.finish(ResultCode::Timeout);
                return Ok(());
            }
            let shard = self.map.shard_of(partition);
            let scanned = match self.barrier_once(shard, &deadline, &mut barriers).await {
                Ok(()) => {
                    self.scan_partition(req, partition, resume, &mut budget, &mut stream)
                        .await?
                }
                Err(code) => Scanned::Failed(code),
            };
            let code = match scanned {
                Scanned::Done => ResultCode::Ok,
                Scanned::OutOfBudget => break,
                Scanned::Failed(code) => code,
            };
            scan::encode_partition_done(stream.out, partition, code);
            stream.flush_if_full().await?;
        }
        stream.finish(ResultCode::Ok);
        Ok(())
    }

    /// Streams one partition: its digests taken once, then its records read
    /// a page at a time.
    async fn scan_partition<W: AsyncWrite + Unpin>(
        &self,
        req: &ScanRequest<'_>,
        partition: u16,
        resume: Option<Digest>,
        budget: &mut u64,
        stream: &mut Stream<'_, W>,
    ) -> std::io::Result<Scanned> {
        if *budget == 0 {
            return Ok(Scanned::OutOfBudget);
        }
        let (ns, set) = (req.namespace.to_string(), req.set.filter(|s| !s.is_empty()));
        let set = set.map(str::to_string);
        let digests = self
            .blocking(&stream.deadline, move |e| {
                e.partition_digests(&ns, partition, set.as_deref(), resume.as_ref(), now_ms())
            })
            .await;
        let digests = match digests {
            Ok(digests) => digests,
            Err(code) => return Ok(Scanned::Failed(code)),
        };
        let mut done = 0;
        while done < digests.len() {
            let take = (digests.len() - done)
                .min(SCAN_PAGE_RECORDS)
                .min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let page = digests[done..done + take].to_vec();
            let ns = req.namespace.to_string();
            let read = self
                .blocking(&stream.deadline, move |e| {
                    e.read_records(&ns, &page, now_ms(), SCAN_PAGE_BYTES)
                })
                .await;
            let (records, consumed) = match read {
                Ok(read) => read,
                Err(code) => return Ok(Scanned::Failed(code)),
            };
            done += consumed;
            for record in &records {
                encode_or_log(scan_record(stream.out, req, record));
                *budget -= 1;
                stream.flush_if_full().await?;
            }
            if *budget == 0 && done < digests.len() {
                return Ok(Scanned::OutOfBudget);
            }
        }
        Ok(Scanned::Done)
    }

    /// Runs an engine read on the blocking pool (it may read the device),
    /// within the deadline.
    async fn blocking<T: Send + 'static>(
        &self,
        deadline: &Deadline,
        read: impl FnOnce(&Engine) -> aerie_engine::Result<T> + Send + 'static,
    ) -> Result<T, ResultCode> {
        let engine = self.engine.clone();
        match deadline
            .wait(tokio::task::spawn_blocking(move || read(&engine)))
            .await?
        {
            Ok(result) => result.map_err(|e| engine_code(&e)),
            Err(_) => Err(ResultCode::ServerError),
        }
    }
}

/// The partitions a scan asks for, each with the digest to resume after.
fn scan_work(req: &ScanRequest<'_>) -> BTreeMap<u16, Option<Digest>> {
    let mut work: BTreeMap<u16, Option<Digest>> = BTreeMap::new();
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
    work
}

/// One record message of a scan: identity, stored key, selected bins.
fn scan_record(
    out: &mut Vec<u8>,
    req: &ScanRequest<'_>,
    record: &Record,
) -> aerie_protocol::Result<()> {
    let no_bins = req.no_bins();
    let header = ScanRecordHeader {
        namespace: req.namespace,
        digest: record.digest,
        set: Some(record.set.as_str()).filter(|s| !s.is_empty()),
        key: record.key.as_ref().map(key_out),
        generation: u32::from(record.generation),
        void_time_secs: record.void_time,
        no_bins,
    };
    let names: Vec<&str> = req.ops.iter().map(|op| op.name).collect();
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
    scan::encode_scan_record(out, &header, &bins)
}

/// A found batch row: its bins, and the record's identity and stored key
/// when it has one (the KEY field, as scan records carry it).
fn found_row(
    out: &mut Vec<u8>,
    index: u32,
    digest: &Digest,
    attrs: &BatchRowAttrs<'_>,
    view: &RecordView,
) -> aerie_protocol::Result<()> {
    let generation = u32::from(view.generation);
    let mut w = batch::begin_batch_row(out, index, ResultCode::Ok, generation, view.void_time);
    if let Some(key) = &view.key {
        let identity = ScanRecordHeader {
            namespace: attrs.namespace,
            digest: *digest,
            set: Some(attrs.set_name()).filter(|s| !s.is_empty()),
            key: Some(key_out(key)),
            generation,
            void_time_secs: view.void_time,
            no_bins: false,
        };
        scan::write_record_fields(&mut w, out, &identity)?;
    }
    let ops: Vec<Op<'_>> = view
        .bins
        .iter()
        .map(|b| Op::result(&b.name, value_out(&b.value)))
        .collect();
    w.finish_with_ops(out, &ops)
}
