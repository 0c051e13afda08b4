//! The AS_MSG (type 3) message: the 22-byte header (spec §3), then `n_fields`
//! fields (§4), then `n_ops` ops (§5).
//!
//! ```text
//! off size
//!  0   1   header_sz (22)
//!  1   1   info1        2 1 info2        3 1 info3        4 1 info4
//!  5   1   result_code
//!  6   4   generation
//! 10   4   record_ttl       (request: TTL / read-touch %; response: void time)
//! 14   4   transaction_ttl  (request: timeout ms; batch response rows: row index)
//! 18   2   n_fields
//! 20   2   n_ops
//! ```
//!
//! A single-record frame body is exactly one message ([`Message::decode`]);
//! batch and scan response frames hold several back to back
//! ([`MessageIter`]). [`MessageWriter`] writes a message field by field and op
//! by op without building a [`Message`] first (what a server streaming records
//! wants).

use crate::error::{Error, Result};
use crate::field::Field;
use crate::framing::{MessageType, write_frame};
use crate::op::Op;
use crate::result::ResultCode;
use crate::wire::{Reader, len_u16};

/// Size of the AS_MSG header, and the value of its first byte.
pub const MESSAGE_HEADER_SIZE_BYTES: usize = 22;
/// Offset of n_fields in the header.
const N_FIELDS_OFFSET: usize = 18;
/// Offset of n_ops in the header.
const N_OPS_OFFSET: usize = 20;

macro_rules! flags {
    ($(#[$tdoc:meta])* $name:ident { $($(#[$doc:meta])* $flag:ident = $value:literal,)* }) => {
        $(#[$tdoc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$doc])* pub const $flag: $name = $name($value);)*

            /// True when every bit of `flag` is set.
            pub fn contains(self, flag: $name) -> bool {
                self.0 & flag.0 == flag.0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }
    };
}

flags! {
    /// info1: read-side flags (spec §3).
    Info1 {
        /// The command reads.
        READ = 0x01,
        /// Return all bins.
        GET_ALL = 0x02,
        /// Short query.
        SHORT_QUERY = 0x04,
        /// Batch-index request (field 41).
        BATCH = 0x08,
        /// Write from XDR.
        XDR = 0x10,
        /// Metadata only (exists / header read; scan records without bins).
        GET_NO_BINS = 0x20,
        /// Duplicate-resolve reads.
        READ_MODE_AP_ALL = 0x40,
        /// The client asks for a type-4 response.
        COMPRESS_RESPONSE = 0x80,
    }
}

flags! {
    /// info2: write-side flags (spec §3).
    Info2 {
        /// Write path.
        WRITE = 0x01,
        /// Delete the record (with WRITE).
        DELETE = 0x02,
        /// Apply only if the generation is equal.
        GENERATION = 0x04,
        /// Apply only if the request generation is greater.
        GENERATION_GT = 0x08,
        /// Leave a tombstone.
        DURABLE_DELETE = 0x10,
        /// Fail with 5 if the record exists.
        CREATE_ONLY = 0x20,
        /// Query consistency relaxation.
        RELAX_AP_LONG_QUERY = 0x40,
        /// One result per op, in order.
        RESPOND_ALL_OPS = 0x80,
    }
}

flags! {
    /// info3: misc and stream flags (spec §3).
    Info3 {
        /// Last message of a stream.
        LAST = 0x01,
        /// Don't wait for replica writes.
        COMMIT_LEVEL_MASTER = 0x02,
        /// Request: understands partition-done; response: partition status.
        PARTITION_DONE = 0x04,
        /// Fail with 2 if missing; merge bins.
        UPDATE_ONLY = 0x08,
        /// Replace all bins; create if missing.
        CREATE_OR_REPLACE = 0x10,
        /// Replace all bins; fail with 2 if missing.
        REPLACE_ONLY = 0x20,
        /// Strong-consistency read type bit.
        SC_READ_TYPE = 0x40,
        /// Strong-consistency read relax bit.
        SC_READ_RELAX = 0x80,
    }
}

flags! {
    /// info4: transaction flags and error-detail verbosity (spec §3).
    Info4 {
        /// Transaction verify read.
        TXN_VERIFY_READ = 0x01,
        /// Transaction roll forward.
        TXN_ROLL_FORWARD = 0x02,
        /// Transaction roll back.
        TXN_ROLL_BACK = 0x04,
        /// Server-internal (monitor-driven).
        TXN_MONITOR = 0x08,
        /// Transaction on locking only.
        TXN_ON_LOCKING_ONLY = 0x10,
        /// Error-detail verbosity bits.
        ERROR_DETAIL_VERBOSITY = 0x60,
    }
}

/// The 22-byte header without its counts (those come from the fields and ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Read-side flags.
    pub info1: Info1,
    /// Write-side flags.
    pub info2: Info2,
    /// Misc and stream flags.
    pub info3: Info3,
    /// Transaction flags.
    pub info4: Info4,
    /// 0 in requests; the status in responses.
    pub result_code: ResultCode,
    /// Request: expected generation; response: record generation; partition
    /// status messages: the partition id.
    pub generation: u32,
    /// Request: TTL seconds or special (§7.3), or read-touch percent;
    /// response: void time (seconds since 2010-01-01 UTC, 0 = never).
    pub record_ttl: u32,
    /// Request: server-side timeout in ms; batch response rows: the row index.
    pub transaction_ttl: u32,
}

impl Default for MessageHeader {
    fn default() -> MessageHeader {
        MessageHeader {
            info1: Info1::default(),
            info2: Info2::default(),
            info3: Info3::default(),
            info4: Info4::default(),
            result_code: ResultCode::Ok,
            generation: 0,
            record_ttl: 0,
            transaction_ttl: 0,
        }
    }
}

impl MessageHeader {
    /// A response header: status, generation and void time, flags 0.
    pub fn response(result_code: ResultCode, generation: u32, void_time_secs: u32) -> Self {
        MessageHeader {
            result_code,
            generation,
            record_ttl: void_time_secs,
            ..MessageHeader::default()
        }
    }

    /// Reads a header; returns it with its field and op counts.
    pub(crate) fn read_from(reader: &mut Reader<'_>) -> Result<(MessageHeader, u16, u16)> {
        let start = reader.offset();
        let bytes: [u8; MESSAGE_HEADER_SIZE_BYTES] = reader.array("message header")?;
        if usize::from(bytes[0]) != MESSAGE_HEADER_SIZE_BYTES {
            return Err(Error::malformed(
                "message header",
                start,
                "header_sz is not 22",
            ));
        }
        let u32_at = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let header = MessageHeader {
            info1: Info1(bytes[1]),
            info2: Info2(bytes[2]),
            info3: Info3(bytes[3]),
            info4: Info4(bytes[4]),
            result_code: ResultCode::from_u8(bytes[5]),
            generation: u32_at(6),
            record_ttl: u32_at(10),
            transaction_ttl: u32_at(14),
        };
        Ok((header, u16_at(N_FIELDS_OFFSET), u16_at(N_OPS_OFFSET)))
    }

    /// Appends the 22 header bytes.
    pub fn encode(&self, out: &mut Vec<u8>, n_fields: u16, n_ops: u16) {
        out.push(MESSAGE_HEADER_SIZE_BYTES as u8);
        out.extend_from_slice(&[
            self.info1.0,
            self.info2.0,
            self.info3.0,
            self.info4.0,
            self.result_code.to_u8(),
        ]);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.record_ttl.to_be_bytes());
        out.extend_from_slice(&self.transaction_ttl.to_be_bytes());
        out.extend_from_slice(&n_fields.to_be_bytes());
        out.extend_from_slice(&n_ops.to_be_bytes());
    }
}

/// A whole AS_MSG message, borrowing from its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// The header.
    pub header: MessageHeader,
    /// The fields, in wire order.
    pub fields: Vec<Field<'a>>,
    /// The ops, in wire order.
    pub ops: Vec<Op<'a>>,
}

impl<'a> Message<'a> {
    /// A message.
    pub fn new(header: MessageHeader, fields: Vec<Field<'a>>, ops: Vec<Op<'a>>) -> Message<'a> {
        Message {
            header,
            fields,
            ops,
        }
    }

    /// Decodes a buffer that holds exactly one message (a type-3 frame body).
    pub fn decode(body: &'a [u8]) -> Result<Message<'a>> {
        let mut reader = Reader::new(body, 0);
        let message = Message::read_from(&mut reader)?;
        if !reader.is_empty() {
            return Err(Error::malformed(
                "message",
                reader.offset(),
                "bytes after the last op",
            ));
        }
        Ok(message)
    }

    /// Reads one message from a stream.
    pub(crate) fn read_from(reader: &mut Reader<'a>) -> Result<Message<'a>> {
        let (header, n_fields, n_ops) = MessageHeader::read_from(reader)?;
        let fields = Field::read_many(reader, usize::from(n_fields))?;
        let ops = Op::read_many(reader, usize::from(n_ops))?;
        Ok(Message {
            header,
            fields,
            ops,
        })
    }

    /// Size of the encoded message (without a proto header).
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_SIZE_BYTES
            + self.fields.iter().map(Field::encoded_len).sum::<usize>()
            + self.ops.iter().map(Op::encoded_len).sum::<usize>()
    }

    /// Appends the message (without a proto header).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut writer = MessageWriter::begin(out, &self.header);
        for field in &self.fields {
            writer.field(out, field)?;
        }
        writer.finish_with_ops(out, &self.ops)
    }

    /// Appends the message as a whole type-3 frame.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<()> {
        write_frame(out, MessageType::AsMsg, |out| self.encode(out))
    }

    /// The first field of a type.
    pub fn field(&self, field_type: u8) -> Option<&Field<'a>> {
        crate::field::find(&self.fields, field_type)
    }
}

/// Writes one message in place: header first, then fields, then ops; the
/// counts are patched by [`MessageWriter::finish`].
#[derive(Debug)]
#[must_use = "call finish to write the counts"]
pub struct MessageWriter {
    start: usize,
    n_fields: u16,
    n_ops: u16,
}

impl MessageWriter {
    /// Appends `header` (with zero counts) to `out`.
    pub fn begin(out: &mut Vec<u8>, header: &MessageHeader) -> MessageWriter {
        let start = out.len();
        header.encode(out, 0, 0);
        MessageWriter {
            start,
            n_fields: 0,
            n_ops: 0,
        }
    }

    /// Appends a field; fields must come before ops.
    pub fn field(&mut self, out: &mut Vec<u8>, field: &Field<'_>) -> Result<()> {
        if self.n_ops != 0 {
            return Err(Error::Encode {
                what: "message",
                reason: "a field after an op",
            });
        }
        self.n_fields = bump(self.n_fields, "fields")?;
        field.encode(out)
    }

    /// Appends an op.
    pub fn op(&mut self, out: &mut Vec<u8>, op: &Op<'_>) -> Result<()> {
        self.n_ops = bump(self.n_ops, "ops")?;
        op.encode(out)
    }

    /// Counts a field the caller appended itself (e.g. with
    /// [`crate::field::encode_pid_array`]).
    pub fn raw_field_written(&mut self) -> Result<()> {
        self.n_fields = bump(self.n_fields, "fields")?;
        Ok(())
    }

    /// Appends `ops` and patches the counts.
    pub fn finish_with_ops(mut self, out: &mut Vec<u8>, ops: &[Op<'_>]) -> Result<()> {
        for op in ops {
            self.op(out, op)?;
        }
        self.finish(out);
        Ok(())
    }

    /// Patches the counts.
    pub fn finish(self, out: &mut [u8]) {
        let at = self.start + N_FIELDS_OFFSET;
        out[at..at + 2].copy_from_slice(&self.n_fields.to_be_bytes());
        let at = self.start + N_OPS_OFFSET;
        out[at..at + 2].copy_from_slice(&self.n_ops.to_be_bytes());
    }
}

fn bump(count: u16, what: &'static str) -> Result<u16> {
    len_u16(usize::from(count) + 1, what)
}

/// The messages of a stream frame body (batch or scan responses), in order.
/// Yields an error once and then stops.
#[derive(Debug, Clone)]
pub struct MessageIter<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> MessageIter<'a> {
    /// Iterates over the messages in `body`.
    pub fn new(body: &'a [u8]) -> MessageIter<'a> {
        MessageIter {
            reader: Reader::new(body, 0),
            failed: false,
        }
    }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let item = Message::read_from(&mut self.reader);
        self.failed = item.is_err();
        Some(item)
    }
}

/// Appends the LAST message that ends a batch or scan stream (spec §8, §9.2):
/// info3 LAST, the status, everything else 0.
pub fn encode_last(out: &mut Vec<u8>, result_code: ResultCode) {
    let header = MessageHeader {
        info3: Info3::LAST,
        result_code,
        ..MessageHeader::default()
    };
    header.encode(out, 0, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::particle::Value;

    #[test]
    fn header_round_trip_and_checks() {
        let h = MessageHeader {
            info1: Info1::READ | Info1::GET_ALL,
            info2: Info2::WRITE,
            info3: Info3::LAST,
            info4: Info4(0x60),
            result_code: ResultCode::NotFound,
            generation: 7,
            record_ttl: 0xffff_ffff,
            transaction_ttl: 1000,
        };
        let mut out = Vec::new();
        h.encode(&mut out, 3, 4);
        assert_eq!(out.len(), MESSAGE_HEADER_SIZE_BYTES);
        let mut r = Reader::new(&out, 0);
        assert_eq!(MessageHeader::read_from(&mut r).unwrap(), (h, 3, 4));
        out[0] = 21;
        assert!(MessageHeader::read_from(&mut Reader::new(&out, 0)).is_err());
        assert!(MessageHeader::read_from(&mut Reader::new(&out[..21], 0)).is_err());
    }

    #[test]
    fn flags() {
        let f = Info1::READ | Info1::GET_NO_BINS;
        assert_eq!(f, Info1(0x21));
        assert!(f.contains(Info1::READ));
        assert!(!f.contains(Info1::GET_ALL));
        assert!(!f.contains(Info1::READ | Info1::GET_ALL));
    }

    #[test]
    fn lying_counts_are_errors_not_allocations() {
        let mut out = Vec::new();
        MessageHeader::default().encode(&mut out, u16::MAX, u16::MAX);
        assert!(matches!(
            Message::decode(&out),
            Err(Error::Truncated { .. })
        ));
        let mut out = Vec::new();
        MessageHeader::default().encode(&mut out, 0, 0);
        out.push(0);
        assert!(Message::decode(&out).is_err());
    }

    #[test]
    fn writer_rejects_fields_after_ops() {
        let mut out = Vec::new();
        let mut w = MessageWriter::begin(&mut out, &MessageHeader::default());
        w.op(&mut out, &Op::read("a")).unwrap();
        assert!(w.field(&mut out, &Field::Namespace("test")).is_err());
    }

    #[test]
    fn stream_iteration() {
        let mut body = Vec::new();
        let row = Message::new(
            MessageHeader::response(ResultCode::Ok, 1, 0),
            vec![],
            vec![Op::result("a", Value::Int(1))],
        );
        row.encode(&mut body).unwrap();
        row.encode(&mut body).unwrap();
        encode_last(&mut body, ResultCode::Ok);
        let all: Vec<_> = MessageIter::new(&body).collect::<Result<_>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], row);
        assert!(all[2].header.info3.contains(Info3::LAST));
        let mut it = MessageIter::new(&body[..body.len() - 1]);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
