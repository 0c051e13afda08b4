//! Partition scans and queries (spec §9): the request, and the response stream
//! of record messages, partition-done markers and the LAST message.
//!
//! A scan request is a type-3 message without a digest field and with info3
//! PARTITION_DONE (required: without it the real server answers 16). Its
//! fields, in the C client's order: namespace, set, records/sec, socket
//! timeout, task id, filter, PID array (little-endian u16s), digest array
//! (resume after these), max records. Its ops are READ ops naming the bins to
//! return (none = all bins).

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::field::{Field, encode_digest_array, encode_pid_array};
use crate::framing::{MessageType, write_frame};
use crate::message::{Info1, Info3, Message, MessageHeader, MessageWriter};
use crate::op::Op;
use crate::particle::UserKey;
use crate::request::{CommonFields, put_once};
use crate::result::ResultCode;

/// A partition scan or query request.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRequest<'a> {
    /// The header (info1 READ [+GET_NO_BINS], info3 PARTITION_DONE,
    /// transaction_ttl = total timeout ms).
    pub header: MessageHeader,
    /// Namespace.
    pub namespace: &'a str,
    /// Set; `None` scans the whole namespace.
    pub set: Option<&'a str>,
    /// Throttle (field 10).
    pub records_per_second: Option<u32>,
    /// Socket timeout in ms (field 9).
    pub socket_timeout_ms: Option<u32>,
    /// Task id (field 7).
    pub task_id: Option<u64>,
    /// Filter expression (field 43).
    pub filter: Option<&'a [u8]>,
    /// Partitions to scan in full (field 11).
    pub partition_ids: Option<Vec<u16>>,
    /// Partially done partitions: resume strictly after each digest (field 12).
    pub resume_digests: Option<Vec<Digest>>,
    /// Page size (field 13).
    pub max_records: Option<u64>,
    /// Other fields (secondary-index, UDF, unknown), in wire order.
    pub other_fields: Vec<Field<'a>>,
    /// Bin selection: READ ops (empty = all bins).
    pub ops: Vec<Op<'a>>,
}

/// The fields a scan picks out beyond the common ones.
#[derive(Default)]
struct ScanFields<'a> {
    records_per_second: Option<u32>,
    socket_timeout_ms: Option<u32>,
    task_id: Option<u64>,
    pids: Option<crate::field::PartitionIds<'a>>,
    digests: Option<crate::field::Digests<'a>>,
    max_records: Option<u64>,
}

impl<'a> ScanRequest<'a> {
    /// A full scan of `partition_ids` as the C client sends it (info1 READ,
    /// info3 PARTITION_DONE, socket timeout 30000).
    pub fn new(namespace: &'a str, set: Option<&'a str>, partition_ids: Vec<u16>) -> Self {
        ScanRequest {
            header: MessageHeader {
                info1: Info1::READ,
                info3: Info3::PARTITION_DONE,
                ..MessageHeader::default()
            },
            namespace,
            set,
            records_per_second: None,
            socket_timeout_ms: Some(30_000),
            task_id: None,
            filter: None,
            partition_ids: Some(partition_ids),
            resume_digests: None,
            max_records: None,
            other_fields: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// Interprets a decoded message without a digest field.
    pub fn from_message(message: Message<'a>) -> Result<ScanRequest<'a>> {
        if !message.header.info3.contains(Info3::PARTITION_DONE) {
            return Err(Error::ScanWithoutPartitionDone);
        }
        let mut s = ScanFields::default();
        let c = CommonFields::split(message.fields, |f| {
            match f {
                Field::RecordsPerSecond(v) => put_once(&mut s.records_per_second, v, "records/s")?,
                Field::SocketTimeoutMs(v) => put_once(&mut s.socket_timeout_ms, v, "timeout")?,
                Field::TaskId(v) => put_once(&mut s.task_id, v, "task id")?,
                Field::PidArray(v) => put_once(&mut s.pids, v, "pid array")?,
                Field::DigestArray(v) => put_once(&mut s.digests, v, "digest array")?,
                Field::MaxRecords(v) => put_once(&mut s.max_records, v, "max records")?,
                other => return Ok(Some(other)),
            }
            Ok(None)
        })?;
        if c.key.is_some() || c.digest.is_some() {
            return Err(Error::malformed("scan request", 0, "a key or digest field"));
        }
        Ok(ScanRequest {
            header: message.header,
            namespace: c.namespace()?,
            set: c.set,
            records_per_second: s.records_per_second,
            socket_timeout_ms: s.socket_timeout_ms,
            task_id: s.task_id,
            filter: c.filter,
            partition_ids: s.pids.map(|p| p.iter().collect()),
            resume_digests: s.digests.map(|d| d.iter().collect()),
            max_records: s.max_records,
            other_fields: c.other,
            ops: message.ops,
        })
    }

    /// The set name, "" for the whole namespace.
    pub fn set_name(&self) -> &'a str {
        self.set.unwrap_or("")
    }

    /// True when the client wants metadata only (info1 GET_NO_BINS).
    pub fn no_bins(&self) -> bool {
        self.header.info1.contains(Info1::GET_NO_BINS)
    }

    /// Appends the request (no proto header), fields in the C client's order.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut w = MessageWriter::begin(out, &self.header);
        w.field(out, &Field::Namespace(self.namespace))?;
        if let Some(set) = self.set {
            w.field(out, &Field::Set(set))?;
        }
        if let Some(v) = self.records_per_second {
            w.field(out, &Field::RecordsPerSecond(v))?;
        }
        if let Some(v) = self.socket_timeout_ms {
            w.field(out, &Field::SocketTimeoutMs(v))?;
        }
        if let Some(v) = self.task_id {
            w.field(out, &Field::TaskId(v))?;
        }
        for f in &self.other_fields {
            w.field(out, f)?;
        }
        if let Some(filter) = self.filter {
            w.field(out, &Field::Filter(filter))?;
        }
        if let Some(ids) = &self.partition_ids {
            encode_pid_array(out, ids)?;
            w.raw_field_written()?;
        }
        if let Some(digests) = &self.resume_digests {
            encode_digest_array(out, digests)?;
            w.raw_field_written()?;
        }
        if let Some(v) = self.max_records {
            w.field(out, &Field::MaxRecords(v))?;
        }
        w.finish_with_ops(out, &self.ops)
    }

    /// Appends the request as a type-3 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        write_frame(out, MessageType::AsMsg, |out| self.encode(out))
    }
}

/// Size of a secondary-index filter's fixed parts: count, name length,
/// particle type and the two u32 lengths.
const INDEX_FILTER_FIXED_SIZE_BYTES: usize = 1 + 1 + 1 + 4 + 4;

/// A secondary-index filter (field 22, INDEX_RANGE, spec §9.4):
/// `count (1) | name_len | bin name | particle type | u32 begin_len | begin | u32 end_len | end`.
/// Clients always send one filter; an equality filter has begin = end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFilter<'a> {
    /// The indexed bin.
    pub bin_name: &'a [u8],
    /// 1 integer, 3 string, 4 blob, 23 geojson.
    pub particle_type: u8,
    /// Range start (integers: 8 bytes big-endian).
    pub begin: &'a [u8],
    /// Range end.
    pub end: &'a [u8],
}

impl<'a> IndexFilter<'a> {
    /// Decodes field 22's data (exactly one filter).
    pub fn decode(data: &'a [u8]) -> Result<IndexFilter<'a>> {
        let mut r = crate::wire::Reader::new(data, 0);
        let count = r.u8("index filter count")?;
        if count != 1 {
            return Err(Error::malformed("index filter", 0, "filter count is not 1"));
        }
        let name_len = usize::from(r.u8("index filter name length")?);
        let bin_name = r.bytes(name_len, "index filter bin name")?;
        let particle_type = r.u8("index filter particle type")?;
        let begin_len = r.u32_be("index filter begin length")? as usize;
        let begin = r.bytes(begin_len, "index filter begin")?;
        let end_len = r.u32_be("index filter end length")? as usize;
        let end = r.bytes(end_len, "index filter end")?;
        if !r.is_empty() {
            return Err(Error::malformed(
                "index filter",
                r.offset(),
                "bytes after the filter",
            ));
        }
        Ok(IndexFilter {
            bin_name,
            particle_type,
            begin,
            end,
        })
    }

    /// Size of the encoded field data.
    pub fn encoded_len(&self) -> usize {
        INDEX_FILTER_FIXED_SIZE_BYTES + self.bin_name.len() + self.begin.len() + self.end.len()
    }

    /// Appends field 22's data.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(1);
        out.push(crate::wire::len_u8(
            self.bin_name.len(),
            "index filter bin name",
        )?);
        out.extend_from_slice(self.bin_name);
        out.push(self.particle_type);
        for part in [self.begin, self.end] {
            out.extend_from_slice(&crate::wire::len_u32(part.len(), "index filter")?.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(())
    }
}

/// The metadata of one scan record message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanRecordHeader<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Digest (the client tracks per-partition progress with it).
    pub digest: Digest,
    /// Set, when the record has one.
    pub set: Option<&'a str>,
    /// The stored user key, if any.
    pub key: Option<UserKey<'a>>,
    /// Record generation.
    pub generation: u32,
    /// Void time (seconds since 2010, 0 = never).
    pub void_time_secs: u32,
    /// No bin data was asked for (info1 0x20 on the message).
    pub no_bins: bool,
}

/// Starts a record message of a scan response: header and the namespace,
/// digest, set and key fields. Add the bins with [`MessageWriter::op`] (op
/// READ, see [`Op::result`]) and call [`MessageWriter::finish`].
pub fn begin_scan_record(
    out: &mut Vec<u8>,
    record: &ScanRecordHeader<'_>,
) -> Result<MessageWriter> {
    let header = MessageHeader {
        info1: if record.no_bins {
            Info1::GET_NO_BINS
        } else {
            Info1(0)
        },
        ..MessageHeader::response(ResultCode::Ok, record.generation, record.void_time_secs)
    };
    let mut w = MessageWriter::begin(out, &header);
    write_record_fields(&mut w, out, record)?;
    Ok(w)
}

/// Writes the fields that name a record in a response message: namespace
/// and digest, then the set and the stored key when there are (what scan
/// records carry, and batch rows of records with a stored key).
pub fn write_record_fields(
    w: &mut MessageWriter,
    out: &mut Vec<u8>,
    record: &ScanRecordHeader<'_>,
) -> Result<()> {
    w.field(out, &Field::Namespace(record.namespace))?;
    w.field(out, &Field::Digest(record.digest))?;
    if let Some(set) = record.set {
        w.field(out, &Field::Set(set))?;
    }
    if let Some(key) = record.key {
        w.field(out, &Field::Key(key))?;
    }
    Ok(())
}

/// Appends a whole record message with these bins.
pub fn encode_scan_record(
    out: &mut Vec<u8>,
    record: &ScanRecordHeader<'_>,
    bins: &[Op<'_>],
) -> Result<()> {
    let w = begin_scan_record(out, record)?;
    w.finish_with_ops(out, bins)
}

/// Appends a partition status message: info3 PARTITION_DONE, the partition id
/// in generation, the status (11 for a partition this node does not own).
pub fn encode_partition_done(out: &mut Vec<u8>, partition_id: u16, result_code: ResultCode) {
    let header = MessageHeader {
        info3: Info3::PARTITION_DONE,
        result_code,
        generation: u32::from(partition_id),
        ..MessageHeader::default()
    };
    header.encode(out, 0, 0);
}

/// One message of a scan response stream, as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanResponseItem<'a> {
    /// A record and its bins.
    Record {
        /// Its metadata.
        record: ScanRecordHeader<'a>,
        /// Its bins.
        bins: Vec<Op<'a>>,
    },
    /// A partition status (a non-zero status: retry that partition).
    PartitionDone {
        /// The partition.
        partition_id: u16,
        /// Its status.
        result_code: ResultCode,
    },
    /// The end of this node's stream.
    Last {
        /// 0, or the error that ended the scan.
        result_code: ResultCode,
    },
}

impl<'a> ScanResponseItem<'a> {
    /// Reads a response message the way the C client does: a partition
    /// status first; then a non-zero status or info3 LAST ends the stream
    /// (NOT_FOUND counts as a clean end, as the C client takes it); anything
    /// else is a record, which needs namespace and digest fields.
    pub fn from_message(message: Message<'a>) -> Result<ScanResponseItem<'a>> {
        let h = message.header;
        if h.info3.contains(Info3::PARTITION_DONE) {
            let partition_id = u16::try_from(h.generation)
                .ok()
                .filter(|p| *p < crate::digest::PARTITION_COUNT)
                .ok_or(Error::malformed(
                    "partition done",
                    6,
                    "partition id >= 4096",
                ))?;
            return Ok(ScanResponseItem::PartitionDone {
                partition_id,
                result_code: h.result_code,
            });
        }
        if h.info3.contains(Info3::LAST) || h.result_code != ResultCode::Ok {
            let result_code = match h.result_code {
                ResultCode::NotFound => ResultCode::Ok,
                other => other,
            };
            return Ok(ScanResponseItem::Last { result_code });
        }
        let c = CommonFields::split(message.fields, |f| Ok(Some(f)))?;
        let record = ScanRecordHeader {
            namespace: c.namespace()?,
            digest: c.digest.ok_or(Error::MissingField { what: "digest" })?,
            set: c.set,
            key: c.key,
            generation: h.generation,
            void_time_secs: h.record_ttl,
            no_bins: h.info1.contains(Info1::GET_NO_BINS),
        };
        Ok(ScanResponseItem::Record {
            record,
            bins: message.ops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{FrameDecoder, Limits};
    use crate::message::{MessageIter, encode_last};
    use crate::particle::Value;
    use crate::request::Request;

    /// §9.3: the Python full scan of set `demo` on one node.
    fn python_scan() -> ScanRequest<'static> {
        let mut s = ScanRequest::new("test", Some("demo"), (0..4096).collect());
        s.header.record_ttl = 0xffff_ffff;
        s.header.transaction_ttl = 2000;
        s.task_id = Some(0x1234_5678_9abc_def0);
        s
    }

    #[test]
    fn spec_scan_header_and_field_layout() {
        let mut out = Vec::new();
        python_scan().encode_frame(&mut out).unwrap();
        // header `16 01 00 04 00 00 00000000 ffffffff 000007d0 0005 0000`
        assert_eq!(
            &out[8..30],
            &[
                0x16, 0x01, 0, 0x04, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x07, 0xd0, 0,
                5, 0, 0
            ]
        );
        // fields 0, 1, 9 = 30000, 7, 11 with 4096 ids (size 8193).
        let m = Message::decode(&out[8..]).unwrap();
        let types: Vec<u8> = m.fields.iter().map(Field::field_type).collect();
        assert_eq!(types, vec![0, 1, 9, 7, 11]);
        assert_eq!(m.fields[2], Field::SocketTimeoutMs(30_000));
        let pid_field_start = out.len() - 8193 - 4;
        assert_eq!(
            &out[pid_field_start..pid_field_start + 5],
            &[0, 0, 0x20, 0x01, 11]
        );
        // little-endian ids: 0, 1, ...
        assert_eq!(
            &out[pid_field_start + 5..pid_field_start + 9],
            &[0, 0, 1, 0]
        );

        let f = FrameDecoder::default().decode_exact(&out).unwrap();
        let Request::Scan(back) = Request::decode(f.body, &Limits::default()).unwrap() else {
            panic!("not a scan");
        };
        assert_eq!(back, python_scan());
        assert_eq!(back.set_name(), "demo");
        assert!(!back.no_bins());
    }

    #[test]
    fn scans_need_partition_done() {
        let mut s = python_scan();
        s.header.info3 = Info3(0);
        let mut out = Vec::new();
        s.encode(&mut out).unwrap();
        let err = Request::decode(&out, &Limits::default()).unwrap_err();
        assert_eq!(err, Error::ScanWithoutPartitionDone);
        assert_eq!(err.result_code(), ResultCode::UnsupportedFeature);
    }

    #[test]
    fn resume_paging_and_bin_selection_round_trip() {
        let mut s = ScanRequest::new("test", None, vec![5, 4095]);
        s.resume_digests = Some(vec![[7; 20], [8; 20]]);
        s.max_records = Some(1000);
        s.records_per_second = Some(50);
        s.filter = Some(&[0x93, 1, 2, 3]);
        s.other_fields = vec![Field::Other {
            field_type: 21,
            data: b"idx",
        }];
        s.ops = vec![Op::read("a"), Op::read("b")];
        s.header.info1 = Info1::READ | Info1::GET_NO_BINS;
        let mut out = Vec::new();
        s.encode(&mut out).unwrap();
        let back = ScanRequest::from_message(Message::decode(&out).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(back.no_bins());
        assert_eq!(back.set_name(), "");
    }

    #[test]
    fn response_stream_round_trip() {
        let rec = ScanRecordHeader {
            namespace: "test",
            digest: [3; 20],
            set: Some("demo"),
            key: Some(UserKey::Int(42)),
            generation: 2,
            void_time_secs: 533_014_765,
            no_bins: false,
        };
        let bins = [Op::result("a", Value::String(b"x"))];
        let mut body = Vec::new();
        encode_scan_record(&mut body, &rec, &bins).unwrap();
        encode_partition_done(&mut body, 4095, ResultCode::Unavailable);
        encode_last(&mut body, ResultCode::Ok);
        let items: Vec<_> = MessageIter::new(&body)
            .map(|m| m.and_then(ScanResponseItem::from_message))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            items,
            vec![
                ScanResponseItem::Record {
                    record: rec,
                    bins: bins.to_vec()
                },
                ScanResponseItem::PartitionDone {
                    partition_id: 4095,
                    result_code: ResultCode::Unavailable
                },
                ScanResponseItem::Last {
                    result_code: ResultCode::Ok
                },
            ]
        );
        // The record message's fields: namespace, digest, set, key.
        let m = Message::decode(&body[..body.len() - 44]).unwrap();
        let types: Vec<u8> = m.fields.iter().map(Field::field_type).collect();
        assert_eq!(types, vec![0, 4, 1, 2]);
    }

    #[test]
    fn index_filters() {
        let eq = 42i64.to_be_bytes();
        let f = IndexFilter {
            bin_name: b"age",
            particle_type: 1,
            begin: &eq,
            end: &eq,
        };
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        assert_eq!(out.len(), f.encoded_len());
        assert_eq!(&out[..6], &[1, 3, b'a', b'g', b'e', 1]);
        assert_eq!(IndexFilter::decode(&out).unwrap(), f);
        for cut in 0..out.len() {
            assert!(IndexFilter::decode(&out[..cut]).is_err());
        }
        out[0] = 2;
        assert!(IndexFilter::decode(&out).is_err());
    }

    #[test]
    fn bad_partition_done_is_an_error() {
        let mut body = Vec::new();
        MessageHeader {
            info3: Info3::PARTITION_DONE,
            generation: 4096,
            ..MessageHeader::default()
        }
        .encode(&mut body, 0, 0);
        let m = Message::decode(&body).unwrap();
        assert!(ScanResponseItem::from_message(m).is_err());
    }
}
