//! Bin operations (spec §5):
//! `u32 op_sz (BE, = 4 + name_len + value_len) | op type | particle type | flags | name_len | name | value`.
//!
//! Flags must be 0 (bit 0, "has LUT", is XDR-only); bin names are UTF-8 of at
//! most 15 bytes (else result 21, BIN_NAME). Values are decoded by
//! [`crate::particle::Value`]. CDT, bit, HLL and expression op values are
//! carried opaque (a blob of msgpack, spec §5.4).

use crate::error::{Error, Result};
use crate::particle::{BlobType, Value};
use crate::result::ResultCode;
use crate::wire::{Reader, bounded_capacity, len_u8, len_u32};

/// Op type bytes (spec §5.1).
pub mod op_type {
    /// Read a bin (empty name + GET_ALL: all bins).
    pub const READ: u8 = 1;
    /// Write a bin (particle NULL deletes it).
    pub const WRITE: u8 = 2;
    /// List/map read.
    pub const CDT_READ: u8 = 3;
    /// List/map modify.
    pub const CDT_MODIFY: u8 = 4;
    /// Add to an integer or float.
    pub const INCR: u8 = 5;
    /// Read an expression.
    pub const EXP_READ: u8 = 7;
    /// Write an expression's result.
    pub const EXP_MODIFY: u8 = 8;
    /// String/blob append.
    pub const APPEND: u8 = 9;
    /// String/blob prepend.
    pub const PREPEND: u8 = 10;
    /// Reset the TTL and bump the generation.
    pub const TOUCH: u8 = 11;
    /// Blob bitwise read.
    pub const BIT_READ: u8 = 12;
    /// Blob bitwise modify.
    pub const BIT_MODIFY: u8 = 13;
    /// Delete the whole record.
    pub const DELETE: u8 = 14;
    /// HyperLogLog read.
    pub const HLL_READ: u8 = 15;
    /// HyperLogLog modify.
    pub const HLL_MODIFY: u8 = 16;
    /// String read (8.2+ servers).
    pub const STRING_READ: u8 = 17;
    /// String modify (8.2+ servers).
    pub const STRING_MODIFY: u8 = 18;
    /// To string (8.2+ servers).
    pub const TO_STRING: u8 = 19;
}

/// Bytes of an op before its name: size (4), type, particle, flags, name length.
pub const OP_HEADER_SIZE_BYTES: usize = 8;
/// Bytes of the op header counted by `op_sz` (type, particle, flags, name length).
const OP_SIZED_HEADER_BYTES: usize = 4;
/// Longest bin name.
pub const MAX_BIN_NAME_LEN_BYTES: usize = 15;

macro_rules! op_types {
    ($($(#[$doc:meta])* $name:ident = $value:path,)*) => {
        /// The op types of spec §5.1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpType {
            $($(#[$doc])* $name,)*
        }

        impl OpType {
            /// The op type of a wire byte, if it is one.
            pub fn from_u8(value: u8) -> Option<OpType> {
                match value {
                    $($value => Some(OpType::$name),)*
                    _ => None,
                }
            }

            /// The wire byte.
            pub fn to_u8(self) -> u8 {
                match self {
                    $(OpType::$name => $value,)*
                }
            }
        }
    };
}

op_types! {
    /// 1.
    Read = op_type::READ,
    /// 2.
    Write = op_type::WRITE,
    /// 3.
    CdtRead = op_type::CDT_READ,
    /// 4.
    CdtModify = op_type::CDT_MODIFY,
    /// 5.
    Incr = op_type::INCR,
    /// 7.
    ExpRead = op_type::EXP_READ,
    /// 8.
    ExpModify = op_type::EXP_MODIFY,
    /// 9.
    Append = op_type::APPEND,
    /// 10.
    Prepend = op_type::PREPEND,
    /// 11.
    Touch = op_type::TOUCH,
    /// 12.
    BitRead = op_type::BIT_READ,
    /// 13.
    BitModify = op_type::BIT_MODIFY,
    /// 14.
    Delete = op_type::DELETE,
    /// 15.
    HllRead = op_type::HLL_READ,
    /// 16.
    HllModify = op_type::HLL_MODIFY,
    /// 17.
    StringRead = op_type::STRING_READ,
    /// 18.
    StringModify = op_type::STRING_MODIFY,
    /// 19.
    ToString = op_type::TO_STRING,
}

impl OpType {
    /// True for the ops that change the record (everything but the reads).
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            OpType::Read
                | OpType::CdtRead
                | OpType::ExpRead
                | OpType::BitRead
                | OpType::HllRead
                | OpType::StringRead
        )
    }
}

/// One op: a request op, or a result bin in a response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Op<'a> {
    /// What to do.
    pub op_type: OpType,
    /// Bin name (may be empty).
    pub name: &'a str,
    /// The value (`Nil` for reads, touch, delete).
    pub value: Value<'a>,
}

impl<'a> Op<'a> {
    /// An op.
    pub fn new(op_type: OpType, name: &'a str, value: Value<'a>) -> Op<'a> {
        Op {
            op_type,
            name,
            value,
        }
    }

    /// READ of one bin (empty name with GET_ALL: every bin).
    pub fn read(name: &'a str) -> Op<'a> {
        Op::new(OpType::Read, name, Value::Nil)
    }

    /// WRITE of one bin.
    pub fn write(name: &'a str, value: Value<'a>) -> Op<'a> {
        Op::new(OpType::Write, name, value)
    }

    /// A result bin as the server answers a read: op READ with the value.
    pub fn result(name: &'a str, value: Value<'a>) -> Op<'a> {
        Op::new(OpType::Read, name, value)
    }

    /// TOUCH (no name, no value).
    pub fn touch() -> Op<'a> {
        Op::new(OpType::Touch, "", Value::Nil)
    }

    /// Size of the encoded op.
    pub fn encoded_len(&self) -> usize {
        OP_HEADER_SIZE_BYTES + self.name.len() + self.value.encoded_len()
    }

    /// Appends the op. Names over 15 bytes are an encode error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.name.len() > MAX_BIN_NAME_LEN_BYTES {
            return Err(Error::Encode {
                what: "bin name",
                reason: "longer than 15 bytes",
            });
        }
        let size = len_u32(self.encoded_len() - 4, "op")?;
        out.extend_from_slice(&size.to_be_bytes());
        out.push(self.op_type.to_u8());
        out.push(self.value.particle_type());
        out.push(0);
        out.push(len_u8(self.name.len(), "bin name")?);
        out.extend_from_slice(self.name.as_bytes());
        self.value.encode(out)
    }

    /// Decodes the op at the start of `bytes`; returns it and its encoded
    /// size.
    pub fn decode_prefix(bytes: &'a [u8]) -> Result<(Op<'a>, usize)> {
        let mut reader = Reader::new(bytes, 0);
        let op = Op::read_from(&mut reader)?;
        Ok((op, reader.offset()))
    }

    /// Reads one op.
    pub(crate) fn read_from(reader: &mut Reader<'a>) -> Result<Op<'a>> {
        let start = reader.offset();
        let size = reader.u32_be("op size")? as usize;
        let Some(after_header) = size.checked_sub(OP_SIZED_HEADER_BYTES) else {
            return Err(Error::malformed("op", start, "size below 4"));
        };
        let type_byte = reader.u8("op type")?;
        let particle = reader.u8("op particle type")?;
        let flags = reader.u8("op flags")?;
        let name_len = usize::from(reader.u8("op name length")?);
        let op_type = OpType::from_u8(type_byte).ok_or(Error::UnknownOpType {
            op_type: type_byte,
            offset: start,
        })?;
        if flags != 0 {
            return Err(Error::malformed("op flags", start + 6, "not 0"));
        }
        let Some(value_len) = after_header.checked_sub(name_len) else {
            return Err(Error::malformed("op", start, "name longer than the op"));
        };
        let name_offset = reader.offset();
        let name = bin_name(reader.bytes(name_len, "bin name")?, name_offset)?;
        let value_offset = reader.offset();
        let value = Value::decode(particle, reader.bytes(value_len, "op value")?, value_offset)?;
        Ok(Op {
            op_type,
            name,
            value,
        })
    }

    /// Reads `count` ops, never reserving more than the bytes left can hold.
    pub(crate) fn read_many(reader: &mut Reader<'a>, count: usize) -> Result<Vec<Op<'a>>> {
        let mut ops = Vec::with_capacity(bounded_capacity(
            count,
            OP_HEADER_SIZE_BYTES,
            reader.remaining(),
        ));
        for _ in 0..count {
            ops.push(Op::read_from(reader)?);
        }
        Ok(ops)
    }
}

fn bin_name(bytes: &[u8], offset: usize) -> Result<&str> {
    let bad = |reason| Error::Malformed {
        what: "bin name",
        offset,
        reason,
        code: ResultCode::BinName,
    };
    if bytes.len() > MAX_BIN_NAME_LEN_BYTES {
        return Err(bad("longer than 15 bytes"));
    }
    std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))
}

/// The op value of a CDT/bit/HLL op: a blob of msgpack (spec §5.4).
pub fn cdt_value(msgpack: &[u8]) -> Value<'_> {
    Value::Blob(BlobType::Generic, msgpack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::particle::particle_type;

    fn decode(bytes: &[u8]) -> Result<Op<'_>> {
        let mut r = Reader::new(bytes, 0);
        let op = Op::read_from(&mut r)?;
        assert!(r.is_empty());
        Ok(op)
    }

    fn encode(op: &Op<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        op.encode(&mut out).unwrap();
        assert_eq!(out.len(), op.encoded_len());
        out
    }

    #[test]
    fn spec_op_examples_round_trip() {
        let cases: [(&[u8], Op<'_>); 6] = [
            // §14.4: WRITE "a" = 1.
            (
                &[0, 0, 0, 0x0d, 2, 1, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1],
                Op::write("a", Value::Int(1)),
            ),
            // §14.6 select(key, ["name"]).
            (
                &[0, 0, 0, 8, 1, 0, 0, 4, b'n', b'a', b'm', b'e'],
                Op::read("name"),
            ),
            // §14.6 touch.
            (&[0, 0, 0, 4, 0x0b, 0, 0, 0], Op::touch()),
            // §14.6 increment(key, "age", 5).
            (
                &[
                    0, 0, 0, 0x0f, 5, 1, 0, 3, b'a', b'g', b'e', 0, 0, 0, 0, 0, 0, 0, 5,
                ],
                Op::new(OpType::Incr, "age", Value::Int(5)),
            ),
            // §14.6 append(key, "name", "!").
            (
                &[0, 0, 0, 9, 9, 3, 0, 4, b'n', b'a', b'm', b'e', 0x21],
                Op::new(OpType::Append, "name", Value::String(b"!")),
            ),
            // §5.4 list_append("l", 7): op 4, value 92 01 07 as a blob.
            (
                &[0, 0, 0, 8, 4, 4, 0, 1, b'l', 0x92, 0x01, 0x07],
                Op::new(OpType::CdtModify, "l", cdt_value(&[0x92, 0x01, 0x07])),
            ),
        ];
        for (bytes, op) in cases {
            assert_eq!(decode(bytes).unwrap(), op);
            assert_eq!(encode(&op), bytes);
        }
    }

    #[test]
    fn bad_ops_are_errors() {
        // op_sz below 4.
        assert!(decode(&[0, 0, 0, 3, 1, 0, 0, 0]).is_err());
        // unknown op type 6.
        assert!(matches!(
            decode(&[0, 0, 0, 4, 6, 0, 0, 0]),
            Err(Error::UnknownOpType { op_type: 6, .. })
        ));
        // flags set.
        assert!(decode(&[0, 0, 0, 4, 1, 0, 1, 0]).is_err());
        // name longer than the op.
        assert!(decode(&[0, 0, 0, 4, 1, 0, 0, 1, b'a']).is_err());
        // 16-byte bin name → BIN_NAME.
        let mut long = vec![0, 0, 0, 20, 1, 0, 0, 16];
        long.extend_from_slice(&[b'x'; 16]);
        assert_eq!(
            decode(&long).unwrap_err().result_code(),
            ResultCode::BinName
        );
        // unknown particle type.
        assert!(matches!(
            decode(&[0, 0, 0, 5, 2, 99, 0, 0, 1]),
            Err(Error::UnknownParticleType {
                particle_type: 99,
                ..
            })
        ));
        // truncated value.
        assert!(decode(&[0, 0, 0, 13, 2, particle_type::INTEGER, 0, 1, b'a', 0]).is_err());
        assert!(
            Op::write("sixteen-bytes-xx", Value::Nil)
                .encode(&mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn write_ops_are_classified() {
        assert!(!OpType::Read.is_write());
        assert!(!OpType::CdtRead.is_write());
        assert!(OpType::Touch.is_write());
        assert!(OpType::CdtModify.is_write());
        for b in 0..=255u8 {
            if let Some(t) = OpType::from_u8(b) {
                assert_eq!(t.to_u8(), b);
            }
        }
    }
}
