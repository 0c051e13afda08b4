//! Batch-index requests and responses (spec §8).
//!
//! Request: a type-3 message with info1 BATCH, an optional filter field (43)
//! and field 41, whose data is
//!
//! ```text
//! u32 row count | u8 parent flags | rows
//! row: u32 index | 20-byte digest | u8 row flags
//!      REPEAT: nothing more (reuse the previous full row's namespace, set, flags, fields, ops)
//!      else:   info1 | [info2 info3 if 0x02] | [info4 if 0x10] | [u16 generation if 0x04]
//!              | [u32 record ttl if 0x08] | u16 n_fields | u16 n_ops | fields (namespace first) | ops
//! ```
//!
//! Response: a stream of type-3 frames of per-row messages whose
//! transaction_ttl is the row index, ended by a LAST message
//! ([`crate::message::encode_last`]).

use crate::digest::{DIGEST_SIZE_BYTES, Digest};
use crate::error::{Error, Result};
use crate::field::{Field, field_type};
use crate::framing::{MessageType, write_frame};
use crate::message::{Info1, Info2, Info3, Info4, Message, MessageHeader, MessageWriter};
use crate::op::Op;
use crate::particle::UserKey;
use crate::request::{CommonFields, put_once};
use crate::result::ResultCode;
use crate::wire::{Reader, bounded_capacity, len_u16, len_u32, patch_u32_be, reserve_u32};

/// Parent flag bits (the byte after the row count).
pub mod parent_flags {
    /// Allow inline processing (in-memory namespaces).
    pub const ALLOW_INLINE: u8 = 0x01;
    /// Allow inline processing on SSD namespaces.
    pub const ALLOW_INLINE_SSD: u8 = 0x02;
    /// Answer every key / report all errors.
    pub const RESPOND_ALL_KEYS: u8 = 0x04;
    /// Report an error per record (the C client always sets it).
    pub const REPORT_ERROR_PER_RECORD: u8 = 0x08;
}

/// Row flag bits.
pub mod row_flags {
    /// Reuse the previous full row.
    pub const REPEAT: u8 = 0x01;
    /// info2 and info3 follow info1.
    pub const HAS_EXTRA_INFO: u8 = 0x02;
    /// A u16 generation follows.
    pub const HAS_GENERATION: u8 = 0x04;
    /// A u32 record ttl follows.
    pub const HAS_RECORD_TTL: u8 = 0x08;
    /// info4 follows.
    pub const HAS_INFO4: u8 = 0x10;
    /// Every bit this crate knows.
    pub const KNOWN: u8 = REPEAT | HAS_EXTRA_INFO | HAS_GENERATION | HAS_RECORD_TTL | HAS_INFO4;
}

/// The smallest row: index, digest, flags (a repeat).
pub const MIN_ROW_SIZE_BYTES: usize = 4 + DIGEST_SIZE_BYTES + 1;

/// What a full (non-repeat) row says about its record.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRowAttrs<'a> {
    /// info1 (READ, GET_ALL, GET_NO_BINS...).
    pub info1: Info1,
    /// info2 and info3, when the row carries them (row flag 0x02).
    pub info2_info3: Option<(Info2, Info3)>,
    /// info4 (row flag 0x10).
    pub info4: Option<Info4>,
    /// Expected generation (row flag 0x04).
    pub generation: Option<u16>,
    /// Record TTL / read-touch percent (row flag 0x08).
    pub record_ttl: Option<u32>,
    /// Namespace: the row's first field.
    pub namespace: &'a str,
    /// Set, when the row carries the field (C always does, maybe empty).
    pub set: Option<&'a str>,
    /// User key.
    pub key: Option<UserKey<'a>>,
    /// Row filter expression.
    pub filter: Option<&'a [u8]>,
    /// Other fields (transaction, UDF...), in wire order.
    pub other_fields: Vec<Field<'a>>,
    /// The ops.
    pub ops: Vec<Op<'a>>,
}

impl<'a> BatchRowAttrs<'a> {
    /// A read row as clients send it: row flags 0x0a (info1/2/3 and ttl 0).
    pub fn read(info1: Info1, namespace: &'a str, set: &'a str, ops: Vec<Op<'a>>) -> Self {
        BatchRowAttrs {
            info1,
            info2_info3: Some((Info2(0), Info3(0))),
            info4: None,
            generation: None,
            record_ttl: Some(0),
            namespace,
            set: Some(set),
            key: None,
            filter: None,
            other_fields: Vec::new(),
            ops,
        }
    }

    /// info2 (0 when the row does not carry it).
    pub fn info2(&self) -> Info2 {
        self.info2_info3.map_or(Info2(0), |(i2, _)| i2)
    }

    /// info3 (0 when the row does not carry it).
    pub fn info3(&self) -> Info3 {
        self.info2_info3.map_or(Info3(0), |(_, i3)| i3)
    }

    /// The set name, "" when there is none.
    pub fn set_name(&self) -> &'a str {
        self.set.unwrap_or("")
    }

    fn row_flags(&self) -> u8 {
        let mut flags = 0;
        if self.info2_info3.is_some() {
            flags |= row_flags::HAS_EXTRA_INFO;
        }
        if self.info4.is_some() {
            flags |= row_flags::HAS_INFO4;
        }
        if self.generation.is_some() {
            flags |= row_flags::HAS_GENERATION;
        }
        if self.record_ttl.is_some() {
            flags |= row_flags::HAS_RECORD_TTL;
        }
        flags
    }

    fn read_from(reader: &mut Reader<'a>, flags: u8) -> Result<BatchRowAttrs<'a>> {
        let info1 = Info1(reader.u8("batch row info1")?);
        let info2_info3 = if flags & row_flags::HAS_EXTRA_INFO != 0 {
            let i2 = Info2(reader.u8("batch row info2")?);
            Some((i2, Info3(reader.u8("batch row info3")?)))
        } else {
            None
        };
        let info4 = if flags & row_flags::HAS_INFO4 != 0 {
            Some(Info4(reader.u8("batch row info4")?))
        } else {
            None
        };
        let generation = if flags & row_flags::HAS_GENERATION != 0 {
            Some(reader.u16_be("batch row generation")?)
        } else {
            None
        };
        let record_ttl = if flags & row_flags::HAS_RECORD_TTL != 0 {
            Some(reader.u32_be("batch row record ttl")?)
        } else {
            None
        };
        let n_fields = usize::from(reader.u16_be("batch row field count")?);
        let n_ops = usize::from(reader.u16_be("batch row op count")?);
        let fields_offset = reader.offset();
        let mut fields = Field::read_many(reader, n_fields)?.into_iter();
        let Some(Field::Namespace(namespace)) = fields.next() else {
            return Err(Error::malformed(
                "batch row",
                fields_offset,
                "first field is not the namespace",
            ));
        };
        let c = CommonFields::split(fields.collect(), |f| Ok(Some(f)))?;
        if c.namespace.is_some() || c.digest.is_some() {
            return Err(Error::malformed(
                "batch row",
                fields_offset,
                "a second namespace or a digest field",
            ));
        }
        let ops = Op::read_many(reader, n_ops)?;
        Ok(BatchRowAttrs {
            info1,
            info2_info3,
            info4,
            generation,
            record_ttl,
            namespace,
            set: c.set,
            key: c.key,
            filter: c.filter,
            other_fields: c.other,
            ops,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(self.info1.0);
        if let Some((i2, i3)) = self.info2_info3 {
            out.extend_from_slice(&[i2.0, i3.0]);
        }
        if let Some(i4) = self.info4 {
            out.push(i4.0);
        }
        if let Some(g) = self.generation {
            out.extend_from_slice(&g.to_be_bytes());
        }
        if let Some(t) = self.record_ttl {
            out.extend_from_slice(&t.to_be_bytes());
        }
        let n_fields = 1
            + usize::from(self.set.is_some())
            + usize::from(self.key.is_some())
            + usize::from(self.filter.is_some())
            + self.other_fields.len();
        out.extend_from_slice(&len_u16(n_fields, "batch row fields")?.to_be_bytes());
        out.extend_from_slice(&len_u16(self.ops.len(), "batch row ops")?.to_be_bytes());
        Field::Namespace(self.namespace).encode(out)?;
        if let Some(set) = self.set {
            Field::Set(set).encode(out)?;
        }
        if let Some(key) = self.key {
            Field::Key(key).encode(out)?;
        }
        if let Some(filter) = self.filter {
            Field::Filter(filter).encode(out)?;
        }
        for f in &self.other_fields {
            f.encode(out)?;
        }
        for op in &self.ops {
            op.encode(out)?;
        }
        Ok(())
    }
}

/// One row of a batch request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRow<'a> {
    /// Position in the client's key list; echoed in the response row.
    pub index: u32,
    /// The record.
    pub digest: Digest,
    /// Its attributes, or `None` for a REPEAT row (the previous full row's).
    pub attrs: Option<BatchRowAttrs<'a>>,
}

/// A batch-index request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest<'a> {
    /// The outer header (info1 BATCH; transaction_ttl = total timeout ms).
    pub header: MessageHeader,
    /// Batch-level filter expression (field 43, written before field 41).
    pub filter: Option<&'a [u8]>,
    /// Other outer fields, in wire order.
    pub other_fields: Vec<Field<'a>>,
    /// Parent flags ([`parent_flags`]); clients send 0x0d.
    pub parent_flags: u8,
    /// The rows, in request order. The first is never a repeat.
    pub rows: Vec<BatchRow<'a>>,
}

impl<'a> BatchRequest<'a> {
    /// Interprets a decoded message with info1 BATCH. More than `max_rows`
    /// rows is [`Error::TooManyBatchRows`] (answer 151).
    pub fn from_message(message: Message<'a>, max_rows: u32) -> Result<BatchRequest<'a>> {
        let mut batch_index = None;
        let c = CommonFields::split(message.fields, |f| match f {
            Field::BatchIndex(data) => {
                put_once(&mut batch_index, data, "batch index").map(|()| None)
            }
            other => Ok(Some(other)),
        })?;
        if c.namespace.is_some() || c.set.is_some() || c.digest.is_some() || c.key.is_some() {
            return Err(Error::malformed(
                "batch request",
                0,
                "record fields outside the batch rows",
            ));
        }
        if !message.ops.is_empty() {
            return Err(Error::malformed(
                "batch request",
                0,
                "ops outside the batch rows",
            ));
        }
        let data = batch_index.ok_or(Error::MissingField {
            what: "batch index",
        })?;
        let (parent_flags, rows) = decode_rows(data, max_rows)?;
        Ok(BatchRequest {
            header: message.header,
            filter: c.filter,
            other_fields: c.other,
            parent_flags,
            rows,
        })
    }

    /// The rows with repeats resolved: (index, digest, attributes).
    pub fn resolved_rows(&self) -> impl Iterator<Item = Result<(u32, Digest, &BatchRowAttrs<'a>)>> {
        let mut previous: Option<&BatchRowAttrs<'a>> = None;
        self.rows.iter().map(move |row| {
            if let Some(attrs) = &row.attrs {
                previous = Some(attrs);
            }
            previous
                .map(|attrs| (row.index, row.digest, attrs))
                .ok_or_else(|| Error::malformed("batch row", 0, "first row is a repeat"))
        })
    }

    /// Appends the request (no proto header): filter, other fields, field 41.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut w = MessageWriter::begin(out, &self.header);
        if let Some(filter) = self.filter {
            w.field(out, &Field::Filter(filter))?;
        }
        for f in &self.other_fields {
            w.field(out, f)?;
        }
        let size_at = reserve_u32(out);
        out.push(field_type::BATCH_INDEX);
        let data_start = out.len();
        out.extend_from_slice(&len_u32(self.rows.len(), "batch rows")?.to_be_bytes());
        out.push(self.parent_flags);
        for row in &self.rows {
            out.extend_from_slice(&row.index.to_be_bytes());
            out.extend_from_slice(&row.digest);
            match &row.attrs {
                None => out.push(row_flags::REPEAT),
                Some(attrs) => {
                    out.push(attrs.row_flags());
                    attrs.encode(out)?;
                }
            }
        }
        let size = len_u32(1 + out.len() - data_start, "batch index field")?;
        patch_u32_be(out, size_at, size);
        w.raw_field_written()?;
        w.finish(out);
        Ok(())
    }

    /// Appends the request as a type-3 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        write_frame(out, MessageType::AsMsg, |out| self.encode(out))
    }
}

fn decode_rows(data: &[u8], max_rows: u32) -> Result<(u8, Vec<BatchRow<'_>>)> {
    let mut reader = Reader::new(data, 0);
    let count = reader.u32_be("batch row count")?;
    let parent_flags = reader.u8("batch parent flags")?;
    if count > max_rows {
        return Err(Error::TooManyBatchRows {
            rows: count,
            max_rows,
        });
    }
    let count = count as usize;
    if count.saturating_mul(MIN_ROW_SIZE_BYTES) > reader.remaining() {
        return Err(Error::malformed(
            "batch row count",
            0,
            "more rows than the field can hold",
        ));
    }
    let mut rows = Vec::with_capacity(bounded_capacity(
        count,
        MIN_ROW_SIZE_BYTES,
        reader.remaining(),
    ));
    for _ in 0..count {
        let start = reader.offset();
        let index = reader.u32_be("batch row index")?;
        let digest = reader.array::<DIGEST_SIZE_BYTES>("batch row digest")?;
        let flags = reader.u8("batch row flags")?;
        if flags & !row_flags::KNOWN != 0 {
            return Err(Error::malformed(
                "batch row flags",
                start + 24,
                "unknown bits",
            ));
        }
        let attrs = if flags & row_flags::REPEAT != 0 {
            if rows.is_empty() {
                return Err(Error::malformed(
                    "batch row",
                    start,
                    "first row is a repeat",
                ));
            }
            None
        } else {
            Some(BatchRowAttrs::read_from(&mut reader, flags)?)
        };
        rows.push(BatchRow {
            index,
            digest,
            attrs,
        });
    }
    if !reader.is_empty() {
        return Err(Error::malformed(
            "batch index",
            reader.offset(),
            "bytes after the last row",
        ));
    }
    Ok((parent_flags, rows))
}

/// Appends one response row message (no proto header): the row's status,
/// generation, void time and bins, with the row index in transaction_ttl.
pub fn encode_batch_row(
    out: &mut Vec<u8>,
    index: u32,
    result_code: ResultCode,
    generation: u32,
    void_time_secs: u32,
    ops: &[Op<'_>],
) -> Result<()> {
    begin_batch_row(out, index, result_code, generation, void_time_secs).finish_with_ops(out, ops)
}

/// Starts a response row message: add fields (a stored key: namespace,
/// digest, set and key, as scan records carry them) and ops with the
/// writer, then finish it.
pub fn begin_batch_row(
    out: &mut Vec<u8>,
    index: u32,
    result_code: ResultCode,
    generation: u32,
    void_time_secs: u32,
) -> MessageWriter {
    let header = MessageHeader {
        transaction_ttl: index,
        ..MessageHeader::response(result_code, generation, void_time_secs)
    };
    MessageWriter::begin(out, &header)
}

/// One message of a batch response stream, as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchResponseItem<'a> {
    /// A row's answer.
    Row {
        /// The request row index.
        index: u32,
        /// The row status (0, 2 not found, 27 filtered out, ...).
        result_code: ResultCode,
        /// Record generation.
        generation: u32,
        /// Void time (seconds since 2010, 0 = never).
        void_time_secs: u32,
        /// The bins.
        ops: Vec<Op<'a>>,
    },
    /// The end of the stream, with the batch-level status.
    Last {
        /// 0, or the error that ended the batch.
        result_code: ResultCode,
    },
}

impl<'a> BatchResponseItem<'a> {
    /// Reads a response message.
    pub fn from_message(message: Message<'a>) -> BatchResponseItem<'a> {
        let h = message.header;
        if h.info3.contains(Info3::LAST) {
            BatchResponseItem::Last {
                result_code: h.result_code,
            }
        } else {
            BatchResponseItem::Row {
                index: h.transaction_ttl,
                result_code: h.result_code,
                generation: h.generation,
                void_time_secs: h.record_ttl,
                ops: message.ops,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{FrameDecoder, Limits};
    use crate::message::{MessageIter, encode_last};
    use crate::particle::Value;
    use crate::request::Request;

    fn digest(n: u8) -> Digest {
        [n; 20]
    }

    /// The spec's Python batch_read of 3 keys, digests replaced by [n; 20].
    fn spec_batch_bytes() -> Vec<u8> {
        let mut b = vec![2, 3, 0, 0, 0, 0, 0, 0x88];
        b.extend_from_slice(&[0x16, 0x08, 0, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, 0xd0, 0, 1, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 0x6e, 0x29]);
        b.extend_from_slice(&[0, 0, 0, 3, 0x0d]);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&digest(1));
        b.extend_from_slice(&[0x0a, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 5, 0, b't', b'e', b's', b't']);
        b.extend_from_slice(&[0, 0, 0, 5, 1, b'd', b'e', b'm', b'o']);
        for (i, n) in [(1u8, 2u8), (2, 3)] {
            b.extend_from_slice(&[0, 0, 0, i]);
            b.extend_from_slice(&digest(n));
            b.push(0x01);
        }
        b
    }

    #[test]
    fn spec_batch_read_decodes_and_re_encodes_byte_for_byte() {
        let bytes = spec_batch_bytes();
        assert_eq!(bytes.len(), 8 + 0x88);
        let f = FrameDecoder::default().decode_exact(&bytes).unwrap();
        let Request::Batch(batch) = Request::decode(f.body, &Limits::default()).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(batch.parent_flags, 0x0d);
        assert_eq!(batch.header.transaction_ttl, 2000);
        assert_eq!(batch.rows.len(), 3);
        let resolved: Vec<_> = batch.resolved_rows().collect::<Result<_>>().unwrap();
        let attrs = BatchRowAttrs::read(Info1::READ | Info1::GET_ALL, "test", "demo", vec![]);
        for (i, (index, d, a)) in resolved.iter().enumerate() {
            assert_eq!(*index as usize, i);
            assert_eq!(*d, digest(i as u8 + 1));
            assert_eq!(**a, attrs);
        }
        let mut out = Vec::new();
        batch.encode_frame(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn row_limits_and_bad_rows() {
        let bytes = spec_batch_bytes();
        let body = &bytes[8..];
        let limits = Limits {
            max_batch_rows: 2,
            ..Limits::default()
        };
        let err = Request::decode(body, &limits).unwrap_err();
        assert_eq!(err.result_code(), ResultCode::BatchMaxRequests);

        // A row count of 4 billion with a few bytes of rows: PARAMETER, no allocation.
        assert!(decode_rows(&[0, 0, 0, 1, 0, 0, 0, 0, 0], 10).is_err());
        let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0x0d];
        huge.extend_from_slice(&[0; 25]);
        assert_eq!(
            decode_rows(&huge, u32::MAX).unwrap_err().result_code(),
            ResultCode::Parameter
        );
        // First row a repeat.
        let mut repeat = vec![0, 0, 0, 1, 0x0d, 0, 0, 0, 0];
        repeat.extend_from_slice(&digest(1));
        repeat.push(row_flags::REPEAT);
        assert!(decode_rows(&repeat, 10).is_err());
        // Unknown row flag bits.
        let last = repeat.len() - 1;
        repeat[last] = 0x20;
        assert!(decode_rows(&repeat, 10).is_err());
    }

    #[test]
    fn full_rows_with_every_optional_part_round_trip() {
        let attrs = BatchRowAttrs {
            info1: Info1(0),
            info2_info3: Some((Info2::WRITE | Info2::RESPOND_ALL_OPS, Info3(0))),
            info4: Some(Info4(0x20)),
            generation: Some(7),
            record_ttl: Some(100),
            namespace: "test",
            set: Some("demo"),
            key: Some(UserKey::String(b"k")),
            filter: Some(&[0x93]),
            other_fields: vec![Field::TxnId(5)],
            ops: vec![Op::write("a", Value::Int(1))],
        };
        let batch = BatchRequest {
            header: MessageHeader {
                info1: Info1::BATCH,
                ..MessageHeader::default()
            },
            filter: Some(&[0x91]),
            other_fields: vec![],
            parent_flags: 0x0d,
            rows: vec![
                BatchRow {
                    index: 9,
                    digest: digest(4),
                    attrs: Some(attrs),
                },
                BatchRow {
                    index: 3,
                    digest: digest(5),
                    attrs: None,
                },
            ],
        };
        let mut out = Vec::new();
        batch.encode(&mut out).unwrap();
        let m = Message::decode(&out).unwrap();
        assert_eq!(BatchRequest::from_message(m, 10).unwrap(), batch);
    }

    #[test]
    fn response_rows_and_last() {
        let mut body = Vec::new();
        encode_batch_row(
            &mut body,
            2,
            ResultCode::Ok,
            1,
            0,
            &[Op::result("a", Value::Int(1))],
        )
        .unwrap();
        encode_batch_row(&mut body, 0, ResultCode::NotFound, 0, 0, &[]).unwrap();
        encode_last(&mut body, ResultCode::Ok);
        let items: Vec<_> = MessageIter::new(&body)
            .map(|m| m.map(BatchResponseItem::from_message))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            items,
            vec![
                BatchResponseItem::Row {
                    index: 2,
                    result_code: ResultCode::Ok,
                    generation: 1,
                    void_time_secs: 0,
                    ops: vec![Op::result("a", Value::Int(1))],
                },
                BatchResponseItem::Row {
                    index: 0,
                    result_code: ResultCode::NotFound,
                    generation: 0,
                    void_time_secs: 0,
                    ops: vec![],
                },
                BatchResponseItem::Last {
                    result_code: ResultCode::Ok
                },
            ]
        );
    }
}
