//! Owned models of the wire types with proptest strategies, and a function
//! that runs every decoder on a byte string. The codec's types borrow from
//! their input, so the strategies generate these owned values and the tests
//! borrow from them.
#![allow(dead_code)]

use aerie_protocol::admin::AdminMessage;
use aerie_protocol::field::{Digests, PartitionIds};
use aerie_protocol::framing::{FrameDecoder, FrameStatus, Limits, MessageType, ProtoHeader};
use aerie_protocol::info::{InfoRequest, base64_decode, parse_replicas, parse_response};
use aerie_protocol::message::{Info1, Info2, Info3, Info4, MessageIter};
use aerie_protocol::{
    BatchRequest, BatchResponseItem, BatchRow, BatchRowAttrs, BlobType, Digest, Field, GeoJson,
    Message, MessageHeader, Op, OpType, RecordRequest, Request, ResultCode, ScanRequest,
    ScanResponseItem, UserKey, Value, compress,
};
use proptest::prelude::*;

/// `PROPTEST_CASES` when set (for a long run), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max_len)
}

pub fn blob_type() -> impl Strategy<Value = BlobType> {
    prop::sample::select(vec![
        BlobType::Generic,
        BlobType::Java,
        BlobType::CSharp,
        BlobType::Python,
        BlobType::Ruby,
        BlobType::Php,
        BlobType::Erlang,
    ])
}

#[derive(Debug, Clone)]
pub enum OValue {
    Nil,
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Blob(BlobType, Vec<u8>),
    Bool(bool),
    Hll(Vec<u8>),
    Map(Vec<u8>),
    List(Vec<u8>),
    Geo(u8, Vec<u8>, Vec<u8>),
}

impl OValue {
    pub fn v(&self) -> Value<'_> {
        match self {
            OValue::Nil => Value::Nil,
            OValue::Int(i) => Value::Int(*i),
            OValue::Float(f) => Value::Float(*f),
            OValue::Str(b) => Value::String(b),
            OValue::Blob(t, b) => Value::Blob(*t, b),
            OValue::Bool(b) => Value::Bool(*b),
            OValue::Hll(b) => Value::Hll(b),
            OValue::Map(b) => Value::Map(b),
            OValue::List(b) => Value::List(b),
            OValue::Geo(flags, cells, json) => Value::GeoJson(GeoJson {
                flags: *flags,
                cells,
                json,
            }),
        }
    }
}

pub fn value() -> impl Strategy<Value = OValue> {
    prop_oneof![
        Just(OValue::Nil),
        any::<i64>().prop_map(OValue::Int),
        any::<f64>().prop_map(OValue::Float),
        bytes(40).prop_map(OValue::Str),
        (blob_type(), bytes(40)).prop_map(|(t, b)| OValue::Blob(t, b)),
        any::<bool>().prop_map(OValue::Bool),
        bytes(40).prop_map(OValue::Hll),
        bytes(40).prop_map(OValue::Map),
        bytes(40).prop_map(OValue::List),
        (
            any::<u8>(),
            prop::collection::vec(any::<u64>(), 0..4),
            bytes(40)
        )
            .prop_map(|(f, cells, json)| {
                let cells = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
                OValue::Geo(f, cells, json)
            }),
    ]
}

#[derive(Debug, Clone)]
pub enum OKey {
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Blob(BlobType, Vec<u8>),
}

impl OKey {
    pub fn k(&self) -> UserKey<'_> {
        match self {
            OKey::Int(i) => UserKey::Int(*i),
            OKey::Float(f) => UserKey::Float(*f),
            OKey::Str(b) => UserKey::String(b),
            OKey::Blob(t, b) => UserKey::Blob(*t, b),
        }
    }
}

pub fn key() -> impl Strategy<Value = OKey> {
    prop_oneof![
        any::<i64>().prop_map(OKey::Int),
        any::<f64>().prop_map(OKey::Float),
        bytes(30).prop_map(OKey::Str),
        (blob_type(), bytes(30)).prop_map(|(t, b)| OKey::Blob(t, b)),
    ]
}

/// Bin names: UTF-8 of at most 15 bytes.
pub fn bin_name() -> impl Strategy<Value = String> {
    "[a-z0-9_é]{0,7}"
}

/// Namespace names: at most 31 bytes.
pub fn namespace() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,31}"
}

/// Set names: at most 63 bytes (may be empty).
pub fn set_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]{0,63}"
}

pub fn op_type() -> impl Strategy<Value = OpType> {
    prop::sample::select((0..=255u8).filter_map(OpType::from_u8).collect::<Vec<_>>())
}

#[derive(Debug, Clone)]
pub struct OOp {
    pub op_type: OpType,
    pub name: String,
    pub value: OValue,
}

impl OOp {
    pub fn o(&self) -> Op<'_> {
        Op::new(self.op_type, &self.name, self.value.v())
    }
}

pub fn op() -> impl Strategy<Value = OOp> {
    (op_type(), bin_name(), value()).prop_map(|(op_type, name, value)| OOp {
        op_type,
        name,
        value,
    })
}

pub fn ops(max: usize) -> impl Strategy<Value = Vec<OOp>> {
    prop::collection::vec(op(), 0..max)
}

/// Field types that have no typed variant.
const OTHER_FIELD_TYPES: [u8; 15] = [8, 14, 21, 22, 23, 24, 26, 30, 31, 32, 40, 42, 45, 99, 255];

#[derive(Debug, Clone)]
pub enum OField {
    Namespace(String),
    Set(String),
    Key(OKey),
    RecordVersion(u64),
    Digest(Digest),
    TxnId(u64),
    TxnDeadline(u32),
    TaskId(u64),
    SocketTimeoutMs(u32),
    RecordsPerSecond(u32),
    Pids(Vec<u8>),
    Digests(Vec<u8>),
    MaxRecords(u64),
    Bvals(Vec<u8>),
    UdfOp(u8),
    BatchIndex(Vec<u8>),
    Filter(Vec<u8>),
    Other(u8, Vec<u8>),
}

impl OField {
    pub fn f(&self) -> Field<'_> {
        match self {
            OField::Namespace(s) => Field::Namespace(s),
            OField::Set(s) => Field::Set(s),
            OField::Key(k) => Field::Key(k.k()),
            OField::RecordVersion(v) => Field::RecordVersion(*v),
            OField::Digest(d) => Field::Digest(*d),
            OField::TxnId(v) => Field::TxnId(*v),
            OField::TxnDeadline(v) => Field::TxnDeadline(*v),
            OField::TaskId(v) => Field::TaskId(*v),
            OField::SocketTimeoutMs(v) => Field::SocketTimeoutMs(*v),
            OField::RecordsPerSecond(v) => Field::RecordsPerSecond(*v),
            OField::Pids(b) => Field::PidArray(PartitionIds::from_bytes(b, 0).unwrap()),
            OField::Digests(b) => Field::DigestArray(Digests::from_bytes(b, 0).unwrap()),
            OField::MaxRecords(v) => Field::MaxRecords(*v),
            OField::Bvals(b) => Field::BvalArray(b),
            OField::UdfOp(v) => Field::UdfOp(*v),
            OField::BatchIndex(b) => Field::BatchIndex(b),
            OField::Filter(b) => Field::Filter(b),
            OField::Other(t, b) => Field::Other {
                field_type: *t,
                data: b,
            },
        }
    }
}

pub fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 20]>()
}

/// Fields a request keeps among its "other" fields.
pub fn extra_field() -> impl Strategy<Value = OField> {
    prop_oneof![
        (0..1u64 << 56).prop_map(OField::RecordVersion),
        any::<u64>().prop_map(OField::TxnId),
        any::<u32>().prop_map(OField::TxnDeadline),
        prop::collection::vec(any::<u64>(), 0..3)
            .prop_map(|v| OField::Bvals(v.iter().flat_map(|x| x.to_le_bytes()).collect())),
        any::<u8>().prop_map(OField::UdfOp),
        (prop::sample::select(OTHER_FIELD_TYPES.to_vec()), bytes(20))
            .prop_map(|(t, b)| OField::Other(t, b)),
    ]
}

pub fn field() -> impl Strategy<Value = OField> {
    prop_oneof![
        namespace().prop_map(OField::Namespace),
        set_name().prop_map(OField::Set),
        key().prop_map(OField::Key),
        digest().prop_map(OField::Digest),
        any::<u64>().prop_map(OField::TaskId),
        any::<u32>().prop_map(OField::SocketTimeoutMs),
        any::<u32>().prop_map(OField::RecordsPerSecond),
        prop::collection::vec(0..4096u16, 0..10)
            .prop_map(|v| OField::Pids(v.iter().flat_map(|x| x.to_le_bytes()).collect())),
        prop::collection::vec(digest(), 0..3)
            .prop_map(|v| OField::Digests(v.iter().flatten().copied().collect())),
        any::<u64>().prop_map(OField::MaxRecords),
        bytes(30).prop_map(OField::BatchIndex),
        bytes(30).prop_map(OField::Filter),
        extra_field(),
    ]
}

pub fn header() -> impl Strategy<Value = MessageHeader> {
    (any::<[u8; 5]>(), any::<[u32; 3]>()).prop_map(|(b, w)| MessageHeader {
        info1: Info1(b[0]),
        info2: Info2(b[1]),
        info3: Info3(b[2]),
        info4: Info4(b[3]),
        result_code: ResultCode::from_u8(b[4]),
        generation: w[0],
        record_ttl: w[1],
        transaction_ttl: w[2],
    })
}

#[derive(Debug, Clone)]
pub struct OMessage {
    pub header: MessageHeader,
    pub fields: Vec<OField>,
    pub ops: Vec<OOp>,
}

impl OMessage {
    pub fn m(&self) -> Message<'_> {
        Message::new(
            self.header,
            self.fields.iter().map(OField::f).collect(),
            self.ops.iter().map(OOp::o).collect(),
        )
    }
}

pub fn message() -> impl Strategy<Value = OMessage> {
    (header(), prop::collection::vec(field(), 0..5), ops(5)).prop_map(|(header, fields, ops)| {
        OMessage {
            header,
            fields,
            ops,
        }
    })
}

#[derive(Debug, Clone)]
pub struct ORecord {
    pub header: MessageHeader,
    pub namespace: String,
    pub set: Option<String>,
    pub digest: Digest,
    pub key: Option<OKey>,
    pub filter: Option<Vec<u8>>,
    pub other: Vec<OField>,
    pub ops: Vec<OOp>,
}

impl ORecord {
    pub fn r(&self) -> RecordRequest<'_> {
        RecordRequest {
            header: self.header,
            namespace: &self.namespace,
            set: self.set.as_deref(),
            digest: self.digest,
            key: self.key.as_ref().map(OKey::k),
            filter: self.filter.as_deref(),
            other_fields: self.other.iter().map(OField::f).collect(),
            ops: self.ops.iter().map(OOp::o).collect(),
        }
    }
}

pub fn record_request() -> impl Strategy<Value = ORecord> {
    (
        header(),
        namespace(),
        prop::option::of(set_name()),
        digest(),
        prop::option::of(key()),
        prop::option::of(bytes(20)),
        prop::collection::vec(extra_field(), 0..3),
        ops(5),
    )
        .prop_map(
            |(mut header, namespace, set, digest, key, filter, other, ops)| {
                header.info1 = Info1(header.info1.0 & !Info1::BATCH.0);
                ORecord {
                    header,
                    namespace,
                    set,
                    digest,
                    key,
                    filter,
                    other,
                    ops,
                }
            },
        )
}

#[derive(Debug, Clone)]
pub struct OAttrs {
    pub info1: u8,
    pub info2_info3: Option<(u8, u8)>,
    pub info4: Option<u8>,
    pub generation: Option<u16>,
    pub record_ttl: Option<u32>,
    pub namespace: String,
    pub set: Option<String>,
    pub key: Option<OKey>,
    pub filter: Option<Vec<u8>>,
    pub other: Vec<OField>,
    pub ops: Vec<OOp>,
}

impl OAttrs {
    pub fn a(&self) -> BatchRowAttrs<'_> {
        BatchRowAttrs {
            info1: Info1(self.info1),
            info2_info3: self.info2_info3.map(|(a, b)| (Info2(a), Info3(b))),
            info4: self.info4.map(Info4),
            generation: self.generation,
            record_ttl: self.record_ttl,
            namespace: &self.namespace,
            set: self.set.as_deref(),
            key: self.key.as_ref().map(OKey::k),
            filter: self.filter.as_deref(),
            other_fields: self.other.iter().map(OField::f).collect(),
            ops: self.ops.iter().map(OOp::o).collect(),
        }
    }
}

pub fn row_attrs() -> impl Strategy<Value = OAttrs> {
    (
        (
            any::<u8>(),
            prop::option::of(any::<(u8, u8)>()),
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u32>()),
        ),
        (
            namespace(),
            prop::option::of(set_name()),
            prop::option::of(key()),
            prop::option::of(bytes(10)),
            prop::collection::vec(extra_field(), 0..2),
            ops(3),
        ),
    )
        .prop_map(
            |(
                (info1, info2_info3, info4, generation, record_ttl),
                (namespace, set, key, filter, other, ops),
            )| OAttrs {
                info1,
                info2_info3,
                info4,
                generation,
                record_ttl,
                namespace,
                set,
                key,
                filter,
                other,
                ops,
            },
        )
}

#[derive(Debug, Clone)]
pub struct OBatch {
    pub header: MessageHeader,
    pub filter: Option<Vec<u8>>,
    pub other: Vec<OField>,
    pub parent_flags: u8,
    pub rows: Vec<(u32, Digest, Option<OAttrs>)>,
}

impl OBatch {
    pub fn b(&self) -> BatchRequest<'_> {
        BatchRequest {
            header: self.header,
            filter: self.filter.as_deref(),
            other_fields: self.other.iter().map(OField::f).collect(),
            parent_flags: self.parent_flags,
            rows: self
                .rows
                .iter()
                .map(|(index, digest, attrs)| BatchRow {
                    index: *index,
                    digest: *digest,
                    attrs: attrs.as_ref().map(OAttrs::a),
                })
                .collect(),
        }
    }
}

pub fn batch_request() -> impl Strategy<Value = OBatch> {
    (
        header(),
        prop::option::of(bytes(10)),
        prop::collection::vec(extra_field(), 0..2),
        any::<u8>(),
        (any::<u32>(), digest(), row_attrs()),
        prop::collection::vec(
            (any::<u32>(), digest(), prop::option::of(row_attrs())),
            0..4,
        ),
    )
        .prop_map(|(mut header, filter, other, parent_flags, first, more)| {
            header.info1 = header.info1 | Info1::BATCH;
            let mut rows = vec![(first.0, first.1, Some(first.2))];
            rows.extend(more);
            OBatch {
                header,
                filter,
                other,
                parent_flags,
                rows,
            }
        })
}

#[derive(Debug, Clone)]
pub struct OScan {
    pub header: MessageHeader,
    pub namespace: String,
    pub set: Option<String>,
    pub numbers: (Option<u32>, Option<u32>, Option<u64>, Option<u64>),
    pub filter: Option<Vec<u8>>,
    pub pids: Option<Vec<u16>>,
    pub digests: Option<Vec<Digest>>,
    pub other: Vec<OField>,
    pub ops: Vec<OOp>,
}

impl OScan {
    pub fn s(&self) -> ScanRequest<'_> {
        let (rps, timeout, task, max) = self.numbers;
        ScanRequest {
            header: self.header,
            namespace: &self.namespace,
            set: self.set.as_deref(),
            records_per_second: rps,
            socket_timeout_ms: timeout,
            task_id: task,
            filter: self.filter.as_deref(),
            partition_ids: self.pids.clone(),
            resume_digests: self.digests.clone(),
            max_records: max,
            other_fields: self.other.iter().map(OField::f).collect(),
            ops: self.ops.iter().map(OOp::o).collect(),
        }
    }
}

pub fn scan_request() -> impl Strategy<Value = OScan> {
    (
        header(),
        namespace(),
        prop::option::of(set_name()),
        any::<(Option<u32>, Option<u32>, Option<u64>, Option<u64>)>(),
        prop::option::of(bytes(10)),
        prop::option::of(prop::collection::vec(0..4096u16, 0..20)),
        prop::option::of(prop::collection::vec(digest(), 0..3)),
        prop::collection::vec(extra_field(), 0..2),
        ops(3),
    )
        .prop_map(
            |(mut header, namespace, set, numbers, filter, pids, digests, other, ops)| {
                header.info1 = Info1(header.info1.0 & !Info1::BATCH.0);
                header.info3 = header.info3 | Info3::PARTITION_DONE;
                OScan {
                    header,
                    namespace,
                    set,
                    numbers,
                    filter,
                    pids,
                    digests,
                    other,
                    ops,
                }
            },
        )
}

/// Encoded frames of every request kind (valid input to mutate).
pub fn request_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        record_request().prop_map(|r| encode(|out| r.r().encode_frame(out))),
        batch_request().prop_map(|b| encode(|out| b.b().encode_frame(out))),
        scan_request().prop_map(|s| encode(|out| s.s().encode_frame(out))),
        message().prop_map(|m| encode(|out| m.m().encode_frame(out))),
    ]
}

pub fn encode(f: impl FnOnce(&mut Vec<u8>) -> aerie_protocol::Result<()>) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    out
}

/// Small limits so that hostile input cannot make the tests slow.
pub fn test_limits() -> Limits {
    Limits {
        max_message_size_bytes: 1 << 20,
        max_batch_rows: 1000,
    }
}

/// Runs every decoder on `bytes`, as a frame and as a bare body. Whatever
/// decodes must re-encode, and the re-encoding must decode to the same value.
pub fn decode_everything(bytes: &[u8]) {
    let limits = test_limits();
    if let Some(h) = bytes.first_chunk::<8>() {
        let _ = ProtoHeader::decode(h, &limits);
    }
    if let Ok(FrameStatus::Complete { frame, .. }) = FrameDecoder::new(limits).decode(bytes) {
        match frame.header.msg_type {
            MessageType::Info => {
                let _ = InfoRequest::parse(frame.body);
            }
            MessageType::Admin => admin(frame.body),
            MessageType::AsMsg => as_msg_body(frame.body),
            MessageType::Compressed => {
                if let Ok(inflated) = compress::decompress(frame.body, &limits)
                    && let Ok(inner) = compress::inner_frame(&inflated, &limits)
                {
                    as_msg_body(inner.body);
                }
            }
        }
    }
    as_msg_body(bytes);
    admin(bytes);
    let _ = compress::decompress(bytes, &limits);
    let _ = InfoRequest::parse(bytes);
    let _ = parse_response(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = parse_replicas(&text);
    let _ = base64_decode(&text);
    let _ = aerie_protocol::info::UserAgent::decode(&text);
    if let Ok((field, len)) = Field::decode_prefix(bytes) {
        let again = encode(|out| field.encode(out));
        assert_eq!(again, &bytes[..len]);
    }
    if let Ok((op, len)) = Op::decode_prefix(bytes) {
        let again = encode(|out| op.encode(out));
        assert_eq!(again, &bytes[..len]);
    }
    if let Some((&particle, rest)) = bytes.split_first()
        && let Ok(value) = Value::decode(particle, rest, 1)
    {
        assert_eq!(encode(|out| value.encode(out)), rest);
    }
    if let Ok(filter) = aerie_protocol::IndexFilter::decode(bytes) {
        assert_eq!(encode(|out| filter.encode(out)), bytes);
    }
    if let Ok(key) = UserKey::decode(bytes, 0) {
        let mut out = Vec::new();
        key.encode(&mut out);
        assert_eq!(out, bytes);
        let _ = aerie_protocol::compute_digest(b"set", &key);
    }
}

fn admin(body: &[u8]) {
    // The admin header's unused bytes are not kept, so compare values.
    if let Ok(m) = AdminMessage::decode(body) {
        let again = encode(|out| m.encode_frame(out));
        assert_eq!(AdminMessage::decode(&again[8..]).unwrap(), m);
    }
}

fn as_msg_body(body: &[u8]) {
    let limits = test_limits();
    if let Ok(m) = Message::decode(body) {
        // Decoding is exact: the message re-encodes to the same bytes.
        assert_eq!(encode(|out| m.encode(out)), body);
    }
    if let Ok(request) = Request::decode(body, &limits) {
        let frame = encode(|out| request.encode_frame(out));
        let again = Request::decode(&frame[8..], &limits).unwrap();
        assert_eq!(again, request);
        if let Request::Batch(b) = &request {
            for row in b.resolved_rows() {
                row.unwrap();
            }
        }
    }
    for m in MessageIter::new(body).take(64) {
        let Ok(m) = m else { break };
        let _ = BatchResponseItem::from_message(m.clone());
        let _ = ScanResponseItem::from_message(m);
    }
}
