//! Particle types and values (spec §5.2) and the user key (spec §4.1).
//!
//! Values borrow their bytes from the input buffer. Strings are kept as bytes
//! (the server stores and echoes what the client sent); lists and maps are
//! opaque msgpack (spec §5.3); HLL is opaque; GeoJSON is split into its flags,
//! cell ids and JSON text. Blobs keep their language particle type (4, 7..=12).

use crate::error::{Error, Result};

/// Particle type bytes (spec §5.2).
pub mod particle_type {
    /// No value (a WRITE with it deletes the bin).
    pub const NULL: u8 = 0;
    /// 8-byte big-endian signed integer.
    pub const INTEGER: u8 = 1;
    /// 8-byte big-endian IEEE-754 double.
    pub const FLOAT: u8 = 2;
    /// Raw UTF-8.
    pub const STRING: u8 = 3;
    /// Raw bytes.
    pub const BLOB: u8 = 4;
    /// Java blob.
    pub const JAVA_BLOB: u8 = 7;
    /// C# blob.
    pub const CSHARP_BLOB: u8 = 8;
    /// Python blob.
    pub const PYTHON_BLOB: u8 = 9;
    /// Ruby blob.
    pub const RUBY_BLOB: u8 = 10;
    /// PHP blob.
    pub const PHP_BLOB: u8 = 11;
    /// Erlang blob.
    pub const ERLANG_BLOB: u8 = 12;
    /// Vector (newer servers; not used by the clients the spec covers).
    pub const VECTOR: u8 = 16;
    /// One byte, 0 or 1.
    pub const BOOL: u8 = 17;
    /// HyperLogLog, opaque.
    pub const HLL: u8 = 18;
    /// msgpack map.
    pub const MAP: u8 = 19;
    /// msgpack array.
    pub const LIST: u8 = 20;
    /// Flags, cell ids and JSON text.
    pub const GEOJSON: u8 = 23;
}

/// Size of an integer or float value.
pub const NUMBER_SIZE_BYTES: usize = 8;
/// Size of the GeoJSON prefix: flags (1) and cell count (2).
pub const GEOJSON_PREFIX_SIZE_BYTES: usize = 3;
/// Size of one GeoJSON cell id.
pub const GEOJSON_CELL_SIZE_BYTES: usize = 8;

/// The blob particle types: generic and the language-specific ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobType {
    /// 4: generic bytes.
    Generic,
    /// 7: Java serialized.
    Java,
    /// 8: C# serialized.
    CSharp,
    /// 9: Python pickled.
    Python,
    /// 10: Ruby marshalled.
    Ruby,
    /// 11: PHP serialized.
    Php,
    /// 12: Erlang term.
    Erlang,
}

impl BlobType {
    /// The blob type of a particle type byte, if it is one.
    pub fn from_u8(value: u8) -> Option<BlobType> {
        Some(match value {
            particle_type::BLOB => BlobType::Generic,
            particle_type::JAVA_BLOB => BlobType::Java,
            particle_type::CSHARP_BLOB => BlobType::CSharp,
            particle_type::PYTHON_BLOB => BlobType::Python,
            particle_type::RUBY_BLOB => BlobType::Ruby,
            particle_type::PHP_BLOB => BlobType::Php,
            particle_type::ERLANG_BLOB => BlobType::Erlang,
            _ => return None,
        })
    }

    /// The particle type byte.
    pub fn to_u8(self) -> u8 {
        match self {
            BlobType::Generic => particle_type::BLOB,
            BlobType::Java => particle_type::JAVA_BLOB,
            BlobType::CSharp => particle_type::CSHARP_BLOB,
            BlobType::Python => particle_type::PYTHON_BLOB,
            BlobType::Ruby => particle_type::RUBY_BLOB,
            BlobType::Php => particle_type::PHP_BLOB,
            BlobType::Erlang => particle_type::ERLANG_BLOB,
        }
    }
}

/// A GeoJSON particle: `flags (1) | ncells (u16 BE) | ncells × u64 BE | JSON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeoJson<'a> {
    /// Flags byte (clients send 0).
    pub flags: u8,
    /// The cell ids, `8 × ncells` bytes, each a big-endian u64.
    pub cells: &'a [u8],
    /// The JSON text.
    pub json: &'a [u8],
}

impl<'a> GeoJson<'a> {
    /// A GeoJSON value as clients send it: flags 0, no cells.
    pub fn new(json: &'a [u8]) -> GeoJson<'a> {
        GeoJson {
            flags: 0,
            cells: &[],
            json,
        }
    }

    /// The cell ids.
    pub fn cell_ids(&self) -> impl Iterator<Item = u64> + 'a {
        self.cells.chunks_exact(GEOJSON_CELL_SIZE_BYTES).map(|c| {
            let mut id = [0u8; 8];
            id.copy_from_slice(c);
            u64::from_be_bytes(id)
        })
    }
}

/// A bin value as carried by an op (spec §5.2).
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Particle 0: no value.
    Nil,
    /// Particle 1.
    Int(i64),
    /// Particle 2.
    Float(f64),
    /// Particle 3: bytes as sent (UTF-8 is not checked).
    String(&'a [u8]),
    /// Particles 4 and 7..=12.
    Blob(BlobType, &'a [u8]),
    /// Particle 17.
    Bool(bool),
    /// Particle 18: opaque.
    Hll(&'a [u8]),
    /// Particle 19: opaque msgpack map.
    Map(&'a [u8]),
    /// Particle 20: opaque msgpack array.
    List(&'a [u8]),
    /// Particle 23.
    GeoJson(GeoJson<'a>),
}

/// Floats compare by bits, so a NaN equals itself and `-0.0 != 0.0`: two values
/// are equal exactly when they encode to the same particle type and bytes.
impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b))
            | (Value::Hll(a), Value::Hll(b))
            | (Value::Map(a), Value::Map(b))
            | (Value::List(a), Value::List(b)) => a == b,
            (Value::Blob(ta, a), Value::Blob(tb, b)) => ta == tb && a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::GeoJson(a), Value::GeoJson(b)) => a == b,
            _ => false,
        }
    }
}

impl<'a> Value<'a> {
    /// Decodes the value bytes of an op with particle type `particle`.
    /// `offset` is where `bytes` start, for errors.
    pub fn decode(particle: u8, bytes: &'a [u8], offset: usize) -> Result<Value<'a>> {
        let value = match particle {
            particle_type::NULL if bytes.is_empty() => Value::Nil,
            particle_type::NULL => {
                return Err(Error::malformed("nil value", offset, "has bytes"));
            }
            particle_type::INTEGER => Value::Int(i64::from_be_bytes(number(bytes, offset)?)),
            particle_type::FLOAT => Value::Float(f64::from_be_bytes(number(bytes, offset)?)),
            particle_type::STRING => Value::String(bytes),
            particle_type::BOOL => match bytes {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                _ => {
                    return Err(Error::malformed(
                        "bool value",
                        offset,
                        "not one byte 0 or 1",
                    ));
                }
            },
            particle_type::HLL => Value::Hll(bytes),
            particle_type::MAP => Value::Map(bytes),
            particle_type::LIST => Value::List(bytes),
            particle_type::GEOJSON => Value::GeoJson(decode_geojson(bytes, offset)?),
            other => match BlobType::from_u8(other) {
                Some(blob) => Value::Blob(blob, bytes),
                None => {
                    return Err(Error::UnknownParticleType {
                        particle_type: other,
                        what: "op value",
                        offset,
                    });
                }
            },
        };
        Ok(value)
    }

    /// The particle type byte.
    pub fn particle_type(&self) -> u8 {
        match self {
            Value::Nil => particle_type::NULL,
            Value::Int(_) => particle_type::INTEGER,
            Value::Float(_) => particle_type::FLOAT,
            Value::String(_) => particle_type::STRING,
            Value::Blob(blob, _) => blob.to_u8(),
            Value::Bool(_) => particle_type::BOOL,
            Value::Hll(_) => particle_type::HLL,
            Value::Map(_) => particle_type::MAP,
            Value::List(_) => particle_type::LIST,
            Value::GeoJson(_) => particle_type::GEOJSON,
        }
    }

    /// Size of the encoded value bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Nil => 0,
            Value::Int(_) | Value::Float(_) => NUMBER_SIZE_BYTES,
            Value::Bool(_) => 1,
            Value::String(b)
            | Value::Blob(_, b)
            | Value::Hll(b)
            | Value::Map(b)
            | Value::List(b) => b.len(),
            Value::GeoJson(g) => GEOJSON_PREFIX_SIZE_BYTES + g.cells.len() + g.json.len(),
        }
    }

    /// Appends the value bytes (not the particle type).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Value::Nil => {}
            Value::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
            Value::Float(f) => out.extend_from_slice(&f.to_be_bytes()),
            Value::Bool(b) => out.push(u8::from(*b)),
            Value::String(b)
            | Value::Blob(_, b)
            | Value::Hll(b)
            | Value::Map(b)
            | Value::List(b) => out.extend_from_slice(b),
            Value::GeoJson(g) => {
                if !g.cells.len().is_multiple_of(GEOJSON_CELL_SIZE_BYTES) {
                    return Err(Error::Encode {
                        what: "geojson",
                        reason: "cell bytes not a multiple of 8",
                    });
                }
                let ncells =
                    u16::try_from(g.cells.len() / GEOJSON_CELL_SIZE_BYTES).map_err(|_| {
                        Error::Encode {
                            what: "geojson",
                            reason: "more than 65535 cells",
                        }
                    })?;
                out.push(g.flags);
                out.extend_from_slice(&ncells.to_be_bytes());
                out.extend_from_slice(g.cells);
                out.extend_from_slice(g.json);
            }
        }
        Ok(())
    }
}

fn number(bytes: &[u8], offset: usize) -> Result<[u8; NUMBER_SIZE_BYTES]> {
    bytes
        .try_into()
        .map_err(|_| Error::malformed("number value", offset, "not 8 bytes"))
}

fn decode_geojson(bytes: &[u8], offset: usize) -> Result<GeoJson<'_>> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<GEOJSON_PREFIX_SIZE_BYTES>() else {
        return Err(Error::Truncated {
            what: "geojson prefix",
            offset,
            needed_bytes: GEOJSON_PREFIX_SIZE_BYTES,
            available_bytes: bytes.len(),
        });
    };
    let ncells = usize::from(u16::from_be_bytes([prefix[1], prefix[2]]));
    let cells_len = ncells * GEOJSON_CELL_SIZE_BYTES;
    if cells_len > rest.len() {
        return Err(Error::Truncated {
            what: "geojson cells",
            offset: offset + GEOJSON_PREFIX_SIZE_BYTES,
            needed_bytes: cells_len,
            available_bytes: rest.len(),
        });
    }
    let (cells, json) = rest.split_at(cells_len);
    Ok(GeoJson {
        flags: prefix[0],
        cells,
        json,
    })
}

/// A user key (spec §4.1): field 2's data is the particle type byte then these
/// value bytes. Lists and maps cannot be keys.
#[derive(Debug, Clone, Copy)]
pub enum UserKey<'a> {
    /// Particle 1: 8 bytes big-endian.
    Int(i64),
    /// Particle 2: 8 bytes big-endian IEEE-754.
    Float(f64),
    /// Particle 3: raw bytes, no length prefix.
    String(&'a [u8]),
    /// Particles 4 and 7..=12: raw bytes.
    Blob(BlobType, &'a [u8]),
}

/// Floats compare by bits, as for [`Value`].
impl PartialEq for UserKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (UserKey::Int(a), UserKey::Int(b)) => a == b,
            (UserKey::Float(a), UserKey::Float(b)) => a.to_bits() == b.to_bits(),
            (UserKey::String(a), UserKey::String(b)) => a == b,
            (UserKey::Blob(ta, a), UserKey::Blob(tb, b)) => ta == tb && a == b,
            _ => false,
        }
    }
}

impl<'a> UserKey<'a> {
    /// Decodes a key field's data. `offset` is where `data` starts.
    pub fn decode(data: &'a [u8], offset: usize) -> Result<UserKey<'a>> {
        let Some((&particle, value)) = data.split_first() else {
            return Err(Error::Truncated {
                what: "user key",
                offset,
                needed_bytes: 1,
                available_bytes: 0,
            });
        };
        let value_offset = offset + 1;
        Ok(match particle {
            particle_type::INTEGER => {
                UserKey::Int(i64::from_be_bytes(number(value, value_offset)?))
            }
            particle_type::FLOAT => {
                UserKey::Float(f64::from_be_bytes(number(value, value_offset)?))
            }
            particle_type::STRING => UserKey::String(value),
            other => match BlobType::from_u8(other) {
                Some(blob) => UserKey::Blob(blob, value),
                None => {
                    return Err(Error::UnknownParticleType {
                        particle_type: other,
                        what: "user key",
                        offset,
                    });
                }
            },
        })
    }

    /// The particle type byte.
    pub fn particle_type(&self) -> u8 {
        match self {
            UserKey::Int(_) => particle_type::INTEGER,
            UserKey::Float(_) => particle_type::FLOAT,
            UserKey::String(_) => particle_type::STRING,
            UserKey::Blob(blob, _) => blob.to_u8(),
        }
    }

    /// Calls `f` with the value bytes (as hashed by the digest and sent on the
    /// wire after the particle type byte).
    pub fn with_value_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            UserKey::Int(i) => f(&i.to_be_bytes()),
            UserKey::Float(x) => f(&x.to_be_bytes()),
            UserKey::String(b) | UserKey::Blob(_, b) => f(b),
        }
    }

    /// Size of the encoded key field data (type byte included).
    pub fn encoded_len(&self) -> usize {
        1 + self.with_value_bytes(<[u8]>::len)
    }

    /// Appends the key field data: the particle type byte, then the value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.particle_type());
        self.with_value_bytes(|b| out.extend_from_slice(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value<'_>) {
        let mut out = Vec::new();
        value.encode(&mut out).unwrap();
        assert_eq!(out.len(), value.encoded_len());
        assert_eq!(
            Value::decode(value.particle_type(), &out, 0).unwrap(),
            value
        );
    }

    #[test]
    fn values_round_trip() {
        round_trip(Value::Nil);
        round_trip(Value::Int(-5));
        round_trip(Value::Float(f64::NAN));
        round_trip(Value::String(b"abc"));
        round_trip(Value::Blob(BlobType::Python, b"\x80\x04"));
        round_trip(Value::Bool(true));
        round_trip(Value::Hll(b"hll"));
        round_trip(Value::Map(&[0x81, 0xa2, 0x03, 0x6b, 0x01]));
        round_trip(Value::List(&[0x92, 0x01, 0xa2, 0x03, 0x61]));
        round_trip(Value::GeoJson(GeoJson {
            flags: 0,
            cells: &[0, 0, 0, 0, 0, 0, 0, 7],
            json: b"{}",
        }));
    }

    #[test]
    fn python_bin_type_examples_from_the_spec() {
        // §14.6: list → 20 (9201a20361), dict → 19 (81a2036b01), bool → 17 (01).
        assert_eq!(
            Value::decode(20, &[0x92, 0x01, 0xa2, 0x03, 0x61], 0).unwrap(),
            Value::List(&[0x92, 0x01, 0xa2, 0x03, 0x61])
        );
        assert_eq!(
            Value::decode(19, &[0x81, 0xa2, 0x03, 0x6b, 0x01], 0)
                .unwrap()
                .particle_type(),
            19
        );
        assert_eq!(Value::decode(17, &[1], 0).unwrap(), Value::Bool(true));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Value::decode(particle_type::INTEGER, &[1, 2, 3], 0).is_err());
        assert!(Value::decode(particle_type::FLOAT, &[0; 9], 0).is_err());
        assert!(Value::decode(particle_type::BOOL, &[2], 0).is_err());
        assert!(Value::decode(particle_type::BOOL, &[], 0).is_err());
        assert!(Value::decode(particle_type::NULL, &[0], 0).is_err());
        assert!(Value::decode(particle_type::GEOJSON, &[0, 0], 0).is_err());
        assert!(Value::decode(particle_type::GEOJSON, &[0, 0, 2, 1, 2, 3], 0).is_err());
        for t in [5u8, 6, 13, 14, 15, 16, 21, 22, 24, 255] {
            assert!(matches!(
                Value::decode(t, &[], 7),
                Err(Error::UnknownParticleType { offset: 7, .. })
            ));
        }
    }

    #[test]
    fn geojson_cells_are_read_big_endian() {
        let bytes = [
            0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, b'{', b'}',
        ];
        let Value::GeoJson(g) = Value::decode(23, &bytes, 0).unwrap() else {
            panic!("not geojson");
        };
        assert_eq!(g.cell_ids().collect::<Vec<_>>(), vec![1, 256]);
        assert_eq!(g.json, b"{}");
    }

    #[test]
    fn user_key_examples_from_the_spec() {
        // §4.1: `03 6b 31` ("k1"), `04 61 62` (bytes "ab"), `01 ff..fb` (-5).
        assert_eq!(
            UserKey::decode(&[3, 0x6b, 0x31], 0).unwrap(),
            UserKey::String(b"k1")
        );
        assert_eq!(
            UserKey::decode(&[4, 0x61, 0x62], 0).unwrap(),
            UserKey::Blob(BlobType::Generic, b"ab")
        );
        let neg = [1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb];
        assert_eq!(UserKey::decode(&neg, 0).unwrap(), UserKey::Int(-5));
        let mut out = Vec::new();
        UserKey::Int(-5).encode(&mut out);
        assert_eq!(out, neg);
        assert!(UserKey::decode(&[], 0).is_err());
        assert!(UserKey::decode(&[19, 0x80], 0).is_err());
        assert!(UserKey::decode(&[1, 0], 0).is_err());
    }
}
