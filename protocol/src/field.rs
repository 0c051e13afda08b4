//! AS_MSG fields (spec §4): `u32 size (BE, = 1 + data length) | u8 type | data`.
//!
//! Fields a server acts on get typed variants with their widths and byte
//! orders checked (the partition-id array, bval array and transaction fields
//! are little-endian); the rest (secondary-index, UDF and legacy fields, and
//! any unknown type) are kept as [`Field::Other`] with their raw data.

use crate::digest::{DIGEST_SIZE_BYTES, Digest, PARTITION_COUNT};
use crate::error::{Error, Result};
use crate::particle::UserKey;
use crate::result::ResultCode;
use crate::wire::{Reader, bounded_capacity, len_u32};

/// Field type bytes (spec §4).
pub mod field_type {
    /// Namespace name.
    pub const NAMESPACE: u8 = 0;
    /// Set name (may be empty).
    pub const SET: u8 = 1;
    /// User key (§4.1).
    pub const KEY: u8 = 2;
    /// Record version, 7 bytes little-endian (transactions).
    pub const RECORD_VERSION: u8 = 3;
    /// 20-byte digest.
    pub const DIGEST: u8 = 4;
    /// Transaction id, u64 little-endian.
    pub const TXN_ID: u8 = 5;
    /// Transaction deadline, u32 little-endian.
    pub const TXN_DEADLINE: u8 = 6;
    /// Scan/query task id, u64 big-endian.
    pub const TASK_ID: u8 = 7;
    /// Scan/query socket timeout, u32 ms.
    pub const SOCKET_TIMEOUT: u8 = 9;
    /// Scan/query throttle, u32.
    pub const RECORDS_PER_SECOND: u8 = 10;
    /// Partition ids, u16 little-endian each.
    pub const PID_ARRAY: u8 = 11;
    /// Resume digests, 20 bytes each.
    pub const DIGEST_ARRAY: u8 = 12;
    /// Scan/query page size, u64.
    pub const MAX_RECORDS: u8 = 13;
    /// XDR last-update time.
    pub const LUT: u8 = 14;
    /// Secondary-index resume values, u64 little-endian each.
    pub const BVAL_ARRAY: u8 = 15;
    /// Secondary index name.
    pub const INDEX_NAME: u8 = 21;
    /// Secondary index filter (§9.4).
    pub const INDEX_RANGE: u8 = 22;
    /// CDT context (msgpack).
    pub const INDEX_CONTEXT: u8 = 23;
    /// Expression index.
    pub const INDEX_EXPRESSION: u8 = 24;
    /// Collection index type, 1 byte.
    pub const INDEX_TYPE: u8 = 26;
    /// UDF package.
    pub const UDF_PACKAGE_NAME: u8 = 30;
    /// UDF function.
    pub const UDF_FUNCTION: u8 = 31;
    /// UDF arguments (msgpack list).
    pub const UDF_ARGLIST: u8 = 32;
    /// UDF kind, 1 byte: 0 record, 1 aggregate, 2 background.
    pub const UDF_OP: u8 = 33;
    /// Legacy query bin list.
    pub const QUERY_BINLIST: u8 = 40;
    /// Batch-index body (§8).
    pub const BATCH_INDEX: u8 = 41;
    /// Legacy batch with set.
    pub const BATCH_WITH_SET: u8 = 42;
    /// Filter expression (msgpack).
    pub const FILTER: u8 = 43;
    /// Error details (response only, msgpack map).
    pub const ERROR_DETAILS: u8 = 45;
}

/// Bytes before a field's data: the u32 size and the type byte.
pub const FIELD_HEADER_SIZE_BYTES: usize = 5;
/// Longest namespace name.
pub const MAX_NAMESPACE_LEN_BYTES: usize = 31;
/// Longest set name.
pub const MAX_SET_LEN_BYTES: usize = 63;
/// Size of a record version field.
pub const RECORD_VERSION_SIZE_BYTES: usize = 7;
/// Size of one partition id in the PID array.
pub const PID_SIZE_BYTES: usize = 2;
/// Size of one bval.
pub const BVAL_SIZE_BYTES: usize = 8;

/// A validated partition-id array: little-endian u16s, each below 4096.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionIds<'a>(&'a [u8]);

impl<'a> PartitionIds<'a> {
    /// Checks the bytes of a PID array field.
    pub fn from_bytes(bytes: &'a [u8], offset: usize) -> Result<PartitionIds<'a>> {
        if !bytes.len().is_multiple_of(PID_SIZE_BYTES) {
            return Err(Error::malformed("pid array", offset, "odd length"));
        }
        let ids = PartitionIds(bytes);
        if ids.iter().any(|pid| pid >= PARTITION_COUNT) {
            return Err(Error::malformed(
                "pid array",
                offset,
                "partition id >= 4096",
            ));
        }
        Ok(ids)
    }

    /// The partition ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(PID_SIZE_BYTES)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len() / PID_SIZE_BYTES
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw field data.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// A validated digest array: 20 bytes per digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests<'a>(&'a [u8]);

impl<'a> Digests<'a> {
    /// Checks the bytes of a digest array field.
    pub fn from_bytes(bytes: &'a [u8], offset: usize) -> Result<Digests<'a>> {
        if !bytes.len().is_multiple_of(DIGEST_SIZE_BYTES) {
            return Err(Error::malformed(
                "digest array",
                offset,
                "length not a multiple of 20",
            ));
        }
        Ok(Digests(bytes))
    }

    /// The digests, in order.
    pub fn iter(&self) -> impl Iterator<Item = Digest> + 'a {
        self.0.chunks_exact(DIGEST_SIZE_BYTES).map(|c| {
            let mut d = [0u8; DIGEST_SIZE_BYTES];
            d.copy_from_slice(c);
            d
        })
    }

    /// Number of digests.
    pub fn len(&self) -> usize {
        self.0.len() / DIGEST_SIZE_BYTES
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw field data.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// One field.
///
/// [`Field::Other`] is for types without a variant here; encoding an `Other`
/// whose type has a variant decodes back as that variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// 0: namespace, UTF-8, at most 31 bytes.
    Namespace(&'a str),
    /// 1: set, UTF-8, at most 63 bytes; empty means no set.
    Set(&'a str),
    /// 2: the user key.
    Key(UserKey<'a>),
    /// 3: record version (56 bits, 7 bytes little-endian).
    RecordVersion(u64),
    /// 4: digest.
    Digest(Digest),
    /// 5: transaction id (u64 little-endian).
    TxnId(u64),
    /// 6: transaction deadline (u32 little-endian).
    TxnDeadline(u32),
    /// 7: task id (u64 big-endian).
    TaskId(u64),
    /// 9: socket timeout in ms.
    SocketTimeoutMs(u32),
    /// 10: records per second.
    RecordsPerSecond(u32),
    /// 11: partition ids.
    PidArray(PartitionIds<'a>),
    /// 12: resume digests.
    DigestArray(Digests<'a>),
    /// 13: max records.
    MaxRecords(u64),
    /// 15: bvals, 8 bytes little-endian each (the length is checked).
    BvalArray(&'a [u8]),
    /// 33: UDF kind.
    UdfOp(u8),
    /// 41: batch-index body, decoded by [`crate::batch`].
    BatchIndex(&'a [u8]),
    /// 43: filter expression (msgpack, opaque).
    Filter(&'a [u8]),
    /// Any other field type, raw.
    Other {
        /// The type byte.
        field_type: u8,
        /// The data.
        data: &'a [u8],
    },
}

fn fixed<const N: usize>(data: &[u8], what: &'static str, offset: usize) -> Result<[u8; N]> {
    data.try_into()
        .map_err(|_| Error::malformed(what, offset, "wrong size"))
}

fn text<'a>(
    data: &'a [u8],
    what: &'static str,
    offset: usize,
    max_len_bytes: usize,
    code: ResultCode,
) -> Result<&'a str> {
    if data.len() > max_len_bytes {
        return Err(Error::Malformed {
            what,
            offset,
            reason: "too long",
            code,
        });
    }
    std::str::from_utf8(data).map_err(|_| Error::Malformed {
        what,
        offset,
        reason: "not UTF-8",
        code,
    })
}

impl<'a> Field<'a> {
    /// Decodes one field's data. `offset` is where `data` starts.
    pub fn decode(type_byte: u8, data: &'a [u8], offset: usize) -> Result<Field<'a>> {
        use self::field_type as t;
        Ok(match type_byte {
            t::NAMESPACE => Field::Namespace(text(
                data,
                "namespace",
                offset,
                MAX_NAMESPACE_LEN_BYTES,
                ResultCode::Namespace,
            )?),
            t::SET => Field::Set(text(
                data,
                "set",
                offset,
                MAX_SET_LEN_BYTES,
                ResultCode::Parameter,
            )?),
            t::KEY => Field::Key(UserKey::decode(data, offset)?),
            t::RECORD_VERSION => {
                let v: [u8; RECORD_VERSION_SIZE_BYTES] = fixed(data, "record version", offset)?;
                let mut le = [0u8; 8];
                le[..RECORD_VERSION_SIZE_BYTES].copy_from_slice(&v);
                Field::RecordVersion(u64::from_le_bytes(le))
            }
            t::DIGEST => Field::Digest(fixed(data, "digest", offset)?),
            t::TXN_ID => Field::TxnId(u64::from_le_bytes(fixed(data, "txn id", offset)?)),
            t::TXN_DEADLINE => {
                Field::TxnDeadline(u32::from_le_bytes(fixed(data, "txn deadline", offset)?))
            }
            t::TASK_ID => Field::TaskId(u64::from_be_bytes(fixed(data, "task id", offset)?)),
            t::SOCKET_TIMEOUT => {
                Field::SocketTimeoutMs(u32::from_be_bytes(fixed(data, "socket timeout", offset)?))
            }
            t::RECORDS_PER_SECOND => Field::RecordsPerSecond(u32::from_be_bytes(fixed(
                data,
                "records per second",
                offset,
            )?)),
            t::PID_ARRAY => Field::PidArray(PartitionIds::from_bytes(data, offset)?),
            t::DIGEST_ARRAY => Field::DigestArray(Digests::from_bytes(data, offset)?),
            t::MAX_RECORDS => {
                Field::MaxRecords(u64::from_be_bytes(fixed(data, "max records", offset)?))
            }
            t::BVAL_ARRAY if !data.len().is_multiple_of(BVAL_SIZE_BYTES) => {
                return Err(Error::malformed(
                    "bval array",
                    offset,
                    "length not a multiple of 8",
                ));
            }
            t::BVAL_ARRAY => Field::BvalArray(data),
            t::UDF_OP => Field::UdfOp(u8::from_be_bytes(fixed(data, "udf op", offset)?)),
            t::BATCH_INDEX => Field::BatchIndex(data),
            t::FILTER => Field::Filter(data),
            other => Field::Other {
                field_type: other,
                data,
            },
        })
    }

    /// The type byte.
    pub fn field_type(&self) -> u8 {
        use self::field_type as t;
        match self {
            Field::Namespace(_) => t::NAMESPACE,
            Field::Set(_) => t::SET,
            Field::Key(_) => t::KEY,
            Field::RecordVersion(_) => t::RECORD_VERSION,
            Field::Digest(_) => t::DIGEST,
            Field::TxnId(_) => t::TXN_ID,
            Field::TxnDeadline(_) => t::TXN_DEADLINE,
            Field::TaskId(_) => t::TASK_ID,
            Field::SocketTimeoutMs(_) => t::SOCKET_TIMEOUT,
            Field::RecordsPerSecond(_) => t::RECORDS_PER_SECOND,
            Field::PidArray(_) => t::PID_ARRAY,
            Field::DigestArray(_) => t::DIGEST_ARRAY,
            Field::MaxRecords(_) => t::MAX_RECORDS,
            Field::BvalArray(_) => t::BVAL_ARRAY,
            Field::UdfOp(_) => t::UDF_OP,
            Field::BatchIndex(_) => t::BATCH_INDEX,
            Field::Filter(_) => t::FILTER,
            Field::Other { field_type, .. } => *field_type,
        }
    }

    /// Size of the encoded field, header included.
    pub fn encoded_len(&self) -> usize {
        FIELD_HEADER_SIZE_BYTES
            + match self {
                Field::Namespace(s) | Field::Set(s) => s.len(),
                Field::Key(k) => k.encoded_len(),
                Field::RecordVersion(_) => RECORD_VERSION_SIZE_BYTES,
                Field::Digest(_) => DIGEST_SIZE_BYTES,
                Field::TxnId(_) | Field::TaskId(_) | Field::MaxRecords(_) => 8,
                Field::TxnDeadline(_) | Field::SocketTimeoutMs(_) | Field::RecordsPerSecond(_) => 4,
                Field::PidArray(p) => p.as_bytes().len(),
                Field::DigestArray(d) => d.as_bytes().len(),
                Field::UdfOp(_) => 1,
                Field::BvalArray(b)
                | Field::BatchIndex(b)
                | Field::Filter(b)
                | Field::Other { data: b, .. } => b.len(),
            }
    }

    /// Appends the field: size, type, data.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let size = len_u32(self.encoded_len() - 4, "field")?;
        out.extend_from_slice(&size.to_be_bytes());
        out.push(self.field_type());
        match self {
            Field::Namespace(s) | Field::Set(s) => out.extend_from_slice(s.as_bytes()),
            Field::Key(k) => k.encode(out),
            Field::RecordVersion(v) => {
                if *v >> 56 != 0 {
                    return Err(Error::Encode {
                        what: "record version",
                        reason: "wider than 56 bits",
                    });
                }
                out.extend_from_slice(&v.to_le_bytes()[..RECORD_VERSION_SIZE_BYTES]);
            }
            Field::Digest(d) => out.extend_from_slice(d),
            Field::TxnId(v) => out.extend_from_slice(&v.to_le_bytes()),
            Field::TxnDeadline(v) => out.extend_from_slice(&v.to_le_bytes()),
            Field::TaskId(v) | Field::MaxRecords(v) => out.extend_from_slice(&v.to_be_bytes()),
            Field::SocketTimeoutMs(v) | Field::RecordsPerSecond(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Field::PidArray(p) => out.extend_from_slice(p.as_bytes()),
            Field::DigestArray(d) => out.extend_from_slice(d.as_bytes()),
            Field::UdfOp(v) => out.push(*v),
            Field::BvalArray(b)
            | Field::BatchIndex(b)
            | Field::Filter(b)
            | Field::Other { data: b, .. } => out.extend_from_slice(b),
        }
        Ok(())
    }

    /// Decodes the field at the start of `bytes`; returns it and its
    /// encoded size.
    pub fn decode_prefix(bytes: &'a [u8]) -> Result<(Field<'a>, usize)> {
        let mut reader = Reader::new(bytes, 0);
        let field = Field::read(&mut reader)?;
        Ok((field, reader.offset()))
    }

    /// Reads one field from `reader`.
    pub(crate) fn read(reader: &mut Reader<'a>) -> Result<Field<'a>> {
        let start = reader.offset();
        let size = reader.u32_be("field size")? as usize;
        if size == 0 {
            return Err(Error::malformed("field", start, "size 0 (no type byte)"));
        }
        let field_type = reader.u8("field type")?;
        let data_offset = reader.offset();
        let data = reader.bytes(size - 1, "field data")?;
        Field::decode(field_type, data, data_offset)
    }

    /// Reads `count` fields, never reserving more than the bytes left can hold.
    pub(crate) fn read_many(reader: &mut Reader<'a>, count: usize) -> Result<Vec<Field<'a>>> {
        let mut fields = Vec::with_capacity(bounded_capacity(
            count,
            FIELD_HEADER_SIZE_BYTES,
            reader.remaining(),
        ));
        for _ in 0..count {
            fields.push(Field::read(reader)?);
        }
        Ok(fields)
    }
}

/// Appends `ids` as a PID array field (little-endian u16s).
pub fn encode_pid_array(out: &mut Vec<u8>, ids: &[u16]) -> Result<()> {
    let size = len_u32(1 + ids.len() * PID_SIZE_BYTES, "pid array")?;
    out.extend_from_slice(&size.to_be_bytes());
    out.push(field_type::PID_ARRAY);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(())
}

/// Appends `digests` as a digest array field.
pub fn encode_digest_array(out: &mut Vec<u8>, digests: &[Digest]) -> Result<()> {
    let size = len_u32(1 + digests.len() * DIGEST_SIZE_BYTES, "digest array")?;
    out.extend_from_slice(&size.to_be_bytes());
    out.push(field_type::DIGEST_ARRAY);
    for d in digests {
        out.extend_from_slice(d);
    }
    Ok(())
}

/// The first field of a type in a list.
pub fn find<'f, 'a>(fields: &'f [Field<'a>], field_type: u8) -> Option<&'f Field<'a>> {
    fields.iter().find(|f| f.field_type() == field_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(field: Field<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        field.encode(&mut out).unwrap();
        assert_eq!(out.len(), field.encoded_len());
        let mut r = Reader::new(&out, 0);
        assert_eq!(Field::read(&mut r).unwrap(), field);
        assert!(r.is_empty());
        out
    }

    #[test]
    fn spec_bytes() {
        assert_eq!(
            round_trip(Field::Namespace("test")),
            [0, 0, 0, 5, 0, b't', b'e', b's', b't']
        );
        assert_eq!(
            round_trip(Field::Set("demo")),
            [0, 0, 0, 5, 1, b'd', b'e', b'm', b'o']
        );
        // §14.6: key 42 with POLICY_KEY_SEND.
        assert_eq!(
            round_trip(Field::Key(UserKey::Int(42))),
            [0, 0, 0, 0x0a, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0x2a]
        );
        // An empty set field (size 1), as C sends without a set.
        assert_eq!(round_trip(Field::Set("")), [0, 0, 0, 1, 1]);
    }

    #[test]
    fn little_endian_fields() {
        let out = round_trip(Field::TxnId(1));
        assert_eq!(&out[5..], &[1, 0, 0, 0, 0, 0, 0, 0]);
        let out = round_trip(Field::TxnDeadline(2));
        assert_eq!(&out[5..], &[2, 0, 0, 0]);
        let out = round_trip(Field::RecordVersion(0x01_0203));
        assert_eq!(&out[5..], &[3, 2, 1, 0, 0, 0, 0]);
        let mut pids = Vec::new();
        encode_pid_array(&mut pids, &[1, 4095, 256]).unwrap();
        assert_eq!(&pids[5..], &[1, 0, 0xff, 0x0f, 0, 1]);
        let Field::PidArray(ids) = Field::read(&mut Reader::new(&pids, 0)).unwrap() else {
            panic!("not a pid array");
        };
        assert_eq!(ids.iter().collect::<Vec<_>>(), vec![1, 4095, 256]);
        round_trip(Field::PidArray(ids));
    }

    #[test]
    fn bad_fields_are_errors() {
        let mut r = Reader::new(&[0, 0, 0, 0, 0], 0);
        assert!(Field::read(&mut r).is_err());
        let mut r = Reader::new(&[0, 0, 0, 9, 0, b'x'], 0);
        assert!(matches!(Field::read(&mut r), Err(Error::Truncated { .. })));
        assert!(Field::decode(field_type::DIGEST, &[0; 19], 0).is_err());
        assert!(Field::decode(field_type::PID_ARRAY, &[0; 3], 0).is_err());
        assert!(Field::decode(field_type::PID_ARRAY, &[0x00, 0x10], 0).is_err());
        assert!(Field::decode(field_type::DIGEST_ARRAY, &[0; 21], 0).is_err());
        assert!(Field::decode(field_type::BVAL_ARRAY, &[0; 9], 0).is_err());
        assert!(Field::decode(field_type::NAMESPACE, &[0xff], 0).is_err());
        let long = [b'a'; 32];
        let err = Field::decode(field_type::NAMESPACE, &long, 0).unwrap_err();
        assert_eq!(err.result_code(), ResultCode::Namespace);
        assert!(Field::decode(field_type::SET, &[b'a'; 64], 0).is_err());
        assert!(Field::encode(&Field::RecordVersion(1 << 56), &mut Vec::new()).is_err());
        // Unknown types are kept raw.
        assert_eq!(
            Field::decode(99, b"xy", 0).unwrap(),
            Field::Other {
                field_type: 99,
                data: b"xy"
            }
        );
    }

    #[test]
    fn a_lying_field_count_does_not_allocate() {
        let mut r = Reader::new(&[0, 0, 0, 1, 0], 0);
        assert!(Field::read_many(&mut r, 65535).is_err());
    }
}
