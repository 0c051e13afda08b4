//! The 8-byte proto header every message starts with (spec §1), size limits,
//! and a sans-I/O frame decoder that says how many bytes it still needs.
//!
//! ```text
//! byte 0     version (2)
//! byte 1     message type: 1 info, 2 admin, 3 AS_MSG, 4 compressed AS_MSG
//! bytes 2..8 body size in bytes, 48-bit big-endian (the 8 header bytes excluded)
//! ```
//!
//! A server reads incrementally with [`FrameDecoder::decode`]: it returns
//! [`FrameStatus::Incomplete`] with the total number of bytes the buffer must
//! hold, or a complete [`Frame`] borrowing the body. The declared size is
//! checked against [`Limits::max_message_size_bytes`] as soon as the 8 header
//! bytes are there, before anything is allocated.

use crate::error::{Error, Result};

/// The only proto version clients send and accept.
pub const PROTO_VERSION: u8 = 2;
/// The version the real server also accepts on admin (type 2) messages.
pub const PROTO_VERSION_ADMIN_LEGACY: u8 = 0;
/// Size of the proto header.
pub const PROTO_HEADER_SIZE_BYTES: usize = 8;
/// The largest body size the 48-bit size field can declare.
pub const MAX_WIRE_BODY_SIZE_BYTES: u64 = (1 << 48) - 1;
/// Default limit on a body: 128 MiB, as the real server and the C client.
pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: u64 = 128 << 20;
/// Default limit on batch rows (the real server's `batch-max-requests`).
pub const DEFAULT_MAX_BATCH_ROWS: u32 = 5000;

/// Message type bytes (spec §1).
pub mod msg_type {
    /// Info text protocol (§2).
    pub const INFO: u8 = 1;
    /// Admin / security (§10).
    pub const ADMIN: u8 = 2;
    /// Data commands (§3–§9).
    pub const AS_MSG: u8 = 3;
    /// zlib-wrapped AS_MSG (§11).
    pub const COMPRESSED: u8 = 4;
    /// Server-to-server XDR; clients never send it.
    pub const XDR: u8 = 5;
}

/// The message types a client may send and this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Type 1: info text.
    Info,
    /// Type 2: admin / security.
    Admin,
    /// Type 3: AS_MSG.
    AsMsg,
    /// Type 4: compressed AS_MSG.
    Compressed,
}

impl MessageType {
    /// The type for a wire byte; types outside 1..=4 are rejected.
    pub fn from_u8(value: u8) -> Result<MessageType> {
        match value {
            msg_type::INFO => Ok(MessageType::Info),
            msg_type::ADMIN => Ok(MessageType::Admin),
            msg_type::AS_MSG => Ok(MessageType::AsMsg),
            msg_type::COMPRESSED => Ok(MessageType::Compressed),
            other => Err(Error::BadMessageType { msg_type: other }),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            MessageType::Info => msg_type::INFO,
            MessageType::Admin => msg_type::ADMIN,
            MessageType::AsMsg => msg_type::AS_MSG,
            MessageType::Compressed => msg_type::COMPRESSED,
        }
    }
}

/// Decoder limits. Every declared size and count is checked against these (or
/// against the bytes actually present) before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body a frame may declare; also the largest inflated size of a
    /// type-4 message (its inner frame, header included).
    pub max_message_size_bytes: u64,
    /// Largest batch row count; more is answered with 151 (spec §8).
    pub max_batch_rows: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size_bytes: DEFAULT_MAX_MESSAGE_SIZE_BYTES,
            max_batch_rows: DEFAULT_MAX_BATCH_ROWS,
        }
    }
}

/// A decoded proto header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoHeader {
    /// Version byte: 2 (0 is tolerated on admin messages).
    pub version: u8,
    /// Message type.
    pub msg_type: MessageType,
    /// Body size (the bytes after the header).
    pub body_size_bytes: u64,
}

impl ProtoHeader {
    /// A version-2 header.
    pub fn new(msg_type: MessageType, body_size_bytes: u64) -> ProtoHeader {
        ProtoHeader {
            version: PROTO_VERSION,
            msg_type,
            body_size_bytes,
        }
    }

    /// Decodes and checks a header: version 2 (or 0 on admin), type 1..=4,
    /// body size within `limits`.
    pub fn decode(bytes: &[u8; PROTO_HEADER_SIZE_BYTES], limits: &Limits) -> Result<ProtoHeader> {
        let version = bytes[0];
        let type_byte = bytes[1];
        let msg_type = MessageType::from_u8(type_byte)?;
        let version_ok = version == PROTO_VERSION
            || (version == PROTO_VERSION_ADMIN_LEGACY && msg_type == MessageType::Admin);
        if !version_ok {
            return Err(Error::BadVersion {
                version,
                msg_type: type_byte,
            });
        }
        let mut size = [0u8; 8];
        size[2..].copy_from_slice(&bytes[2..]);
        let body_size_bytes = u64::from_be_bytes(size);
        if body_size_bytes > limits.max_message_size_bytes {
            return Err(Error::TooLarge {
                what: "message body",
                size_bytes: body_size_bytes,
                max_bytes: limits.max_message_size_bytes,
            });
        }
        Ok(ProtoHeader {
            version,
            msg_type,
            body_size_bytes,
        })
    }

    /// The 8 header bytes. Sizes above 48 bits are an encode error.
    pub fn encode(&self) -> Result<[u8; PROTO_HEADER_SIZE_BYTES]> {
        if self.body_size_bytes > MAX_WIRE_BODY_SIZE_BYTES {
            return Err(Error::Encode {
                what: "proto header",
                reason: "body larger than 48 bits",
            });
        }
        let mut out = self.body_size_bytes.to_be_bytes();
        out[0] = self.version;
        out[1] = self.msg_type.to_u8();
        Ok(out)
    }
}

/// One complete frame, borrowing its body from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The checked header.
    pub header: ProtoHeader,
    /// The body (`header.body_size_bytes` long).
    pub body: &'a [u8],
}

/// What [`FrameDecoder::decode`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus<'a> {
    /// The buffer must hold at least `needed_bytes` (in total, from its start)
    /// before the next call can make progress.
    Incomplete {
        /// Total bytes needed.
        needed_bytes: usize,
    },
    /// A whole frame; drop `consumed_bytes` from the buffer afterwards.
    Complete {
        /// The frame.
        frame: Frame<'a>,
        /// Header plus body.
        consumed_bytes: usize,
    },
}

/// A stateless incremental frame decoder: call it on whatever the connection
/// has buffered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameDecoder {
    /// The limits every frame is checked against.
    pub limits: Limits,
}

impl FrameDecoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder { limits }
    }

    /// Looks at the start of `buf`: a complete frame, or how many bytes are
    /// needed. A bad header is an error as soon as its 8 bytes are present.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<FrameStatus<'a>> {
        let Some(header_bytes) = buf.first_chunk::<PROTO_HEADER_SIZE_BYTES>() else {
            return Ok(FrameStatus::Incomplete {
                needed_bytes: PROTO_HEADER_SIZE_BYTES,
            });
        };
        let header = ProtoHeader::decode(header_bytes, &self.limits)?;
        let body_len = usize::try_from(header.body_size_bytes).map_err(|_| Error::TooLarge {
            what: "message body",
            size_bytes: header.body_size_bytes,
            max_bytes: usize::MAX as u64,
        })?;
        let total = PROTO_HEADER_SIZE_BYTES.saturating_add(body_len);
        match buf.get(PROTO_HEADER_SIZE_BYTES..total) {
            Some(body) => Ok(FrameStatus::Complete {
                frame: Frame { header, body },
                consumed_bytes: total,
            }),
            None => Ok(FrameStatus::Incomplete {
                needed_bytes: total,
            }),
        }
    }

    /// Decodes a buffer that must be exactly one frame.
    pub fn decode_exact<'a>(&self, buf: &'a [u8]) -> Result<Frame<'a>> {
        match self.decode(buf)? {
            FrameStatus::Complete {
                frame,
                consumed_bytes,
            } if consumed_bytes == buf.len() => Ok(frame),
            FrameStatus::Complete { consumed_bytes, .. } => Err(Error::malformed(
                "frame",
                consumed_bytes,
                "bytes after the end of the frame",
            )),
            FrameStatus::Incomplete { needed_bytes } => Err(Error::Truncated {
                what: "frame",
                offset: 0,
                needed_bytes,
                available_bytes: buf.len(),
            }),
        }
    }
}

/// Starts a frame in `out`: writes a header with size 0 and returns its
/// position, for [`finish_frame`] once the body is written.
pub fn begin_frame(out: &mut Vec<u8>, msg_type: MessageType) -> usize {
    let at = out.len();
    out.extend_from_slice(&[PROTO_VERSION, msg_type.to_u8(), 0, 0, 0, 0, 0, 0]);
    at
}

/// Patches the body size of the frame started at `start` by [`begin_frame`]:
/// everything written since the header is its body.
pub fn finish_frame(out: &mut [u8], start: usize) -> Result<()> {
    let body_len = out.len() - start - PROTO_HEADER_SIZE_BYTES;
    let body_len = u64::try_from(body_len).unwrap_or(u64::MAX);
    if body_len > MAX_WIRE_BODY_SIZE_BYTES {
        return Err(Error::Encode {
            what: "frame",
            reason: "body larger than 48 bits",
        });
    }
    out[start + 2..start + PROTO_HEADER_SIZE_BYTES].copy_from_slice(&body_len.to_be_bytes()[2..]);
    Ok(())
}

/// Appends a whole frame: header and `body`.
pub fn encode_frame(out: &mut Vec<u8>, msg_type: MessageType, body: &[u8]) -> Result<()> {
    write_frame(out, msg_type, |out| {
        out.extend_from_slice(body);
        Ok(())
    })
}

/// Appends a frame whose body `write_body` appends.
pub fn write_frame(
    out: &mut Vec<u8>,
    msg_type: MessageType,
    write_body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = begin_frame(out, msg_type);
    write_body(out)?;
    finish_frame(out, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: [u8; 8]) -> Result<ProtoHeader> {
        ProtoHeader::decode(&bytes, &Limits::default())
    }

    #[test]
    fn decodes_the_put_header_from_the_spec() {
        let h = header([0x02, 0x03, 0, 0, 0, 0, 0, 0x52]).unwrap();
        assert_eq!(h, ProtoHeader::new(MessageType::AsMsg, 82));
        assert_eq!(h.encode().unwrap(), [0x02, 0x03, 0, 0, 0, 0, 0, 0x52]);
    }

    #[test]
    fn rejects_bad_versions_and_types() {
        assert!(matches!(
            header([1, 3, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadVersion { version: 1, .. })
        ));
        assert!(matches!(
            header([0, 3, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadVersion { version: 0, .. })
        ));
        assert!(header([0, 2, 0, 0, 0, 0, 0, 0]).is_ok());
        for t in [0u8, 5, 6, 255] {
            assert_eq!(
                header([2, t, 0, 0, 0, 0, 0, 0]),
                Err(Error::BadMessageType { msg_type: t })
            );
        }
    }

    #[test]
    fn rejects_a_1_gib_declared_size_before_the_body_arrives() {
        let mut buf = vec![2, 3];
        buf.extend_from_slice(&(1u64 << 30).to_be_bytes()[2..]);
        let err = FrameDecoder::default().decode(&buf).unwrap_err();
        assert!(matches!(
            err,
            Error::TooLarge {
                size_bytes: 1_073_741_824,
                ..
            }
        ));
        // The largest 48-bit size is rejected the same way.
        let err = header([2, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }));
    }

    #[test]
    fn the_limit_is_configurable() {
        let limits = Limits {
            max_message_size_bytes: 10,
            ..Limits::default()
        };
        assert!(ProtoHeader::decode(&[2, 1, 0, 0, 0, 0, 0, 10], &limits).is_ok());
        assert!(ProtoHeader::decode(&[2, 1, 0, 0, 0, 0, 0, 11], &limits).is_err());
    }

    #[test]
    fn streaming_decode_asks_for_more_then_completes() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, MessageType::Info, b"node\n").unwrap();
        frame.extend_from_slice(b"\x02\x01"); // the start of the next frame
        let d = FrameDecoder::default();
        for cut in 0..8 {
            assert_eq!(
                d.decode(&frame[..cut]).unwrap(),
                FrameStatus::Incomplete { needed_bytes: 8 }
            );
        }
        for cut in 8..13 {
            assert_eq!(
                d.decode(&frame[..cut]).unwrap(),
                FrameStatus::Incomplete { needed_bytes: 13 }
            );
        }
        let FrameStatus::Complete {
            frame: f,
            consumed_bytes,
        } = d.decode(&frame).unwrap()
        else {
            panic!("expected a frame");
        };
        assert_eq!(consumed_bytes, 13);
        assert_eq!(f.body, b"node\n");
        assert_eq!(f.header.msg_type, MessageType::Info);
        assert_eq!(
            d.decode(&frame[13..]).unwrap(),
            FrameStatus::Incomplete { needed_bytes: 8 }
        );
        assert!(d.decode_exact(&frame).is_err());
        assert!(d.decode_exact(&frame[..13]).is_ok());
        assert!(d.decode_exact(&frame[..12]).is_err());
    }

    #[test]
    fn begin_and_finish_patch_the_size() {
        let mut out = vec![0xaa];
        let start = begin_frame(&mut out, MessageType::AsMsg);
        out.extend_from_slice(&[1; 300]);
        finish_frame(&mut out, start).unwrap();
        assert_eq!(&out[1..9], &[2, 3, 0, 0, 0, 0, 1, 44]);
    }
}
