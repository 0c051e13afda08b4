//! Type-4 compressed messages (spec §11).
//!
//! ```text
//! proto header (version 2, type 4, size = 8 + compressed length)
//! u64 BE   uncompressed size: the whole inner frame, its own 8-byte header included
//! ...      zlib stream (RFC 1950) of the inner frame: a complete type-3 frame
//! ```
//!
//! Inflating is bounded: the declared size must be within
//! [`Limits::max_message_size_bytes`] and within what zlib can possibly
//! expand the compressed bytes to; the output buffer never grows past the
//! declared size (plus one byte, to detect a stream that inflates further).
//! The declared size is never trusted for an allocation: the buffer starts
//! small and doubles only as the stream actually inflates.

use std::io::Write as _;

use flate2::{Compression, Decompress, FlushDecompress, Status};

use crate::error::{Error, Result};
use crate::framing::{
    Frame, FrameDecoder, Limits, MessageType, PROTO_HEADER_SIZE_BYTES, begin_frame, finish_frame,
};

/// Size of the uncompressed-size prefix of a type-4 body.
pub const UNCOMPRESSED_SIZE_PREFIX_BYTES: usize = 8;
/// Deflate's largest expansion ratio (a 258-byte match per 2 bits is ~1032:1).
pub const MAX_ZLIB_EXPANSION_RATIO: u64 = 1032;
/// Slack added to the ratio bound for tiny streams.
const EXPANSION_SLACK_BYTES: u64 = 1024;
/// The zlib level the clients use.
pub const CLIENT_COMPRESSION_LEVEL: u32 = 1;
/// First output buffer size; it doubles as the stream inflates.
const FIRST_OUTPUT_BYTES: usize = 16 << 10;

fn fail(reason: impl Into<String>) -> Error {
    Error::Decompress {
        reason: reason.into(),
    }
}

/// The uncompressed size a type-4 body declares (unchecked: `decompress`
/// checks it against the limits and the stream).
pub fn declared_size(body: &[u8]) -> Option<u64> {
    body.first_chunk::<UNCOMPRESSED_SIZE_PREFIX_BYTES>()
        .map(|size| u64::from_be_bytes(*size))
}

/// Inflates a type-4 body and returns the inner frame's bytes (header
/// included). Decode them with [`inner_frame`].
pub fn decompress(body: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let Some((size, compressed)) = body.split_first_chunk::<UNCOMPRESSED_SIZE_PREFIX_BYTES>()
    else {
        return Err(Error::Truncated {
            what: "uncompressed size",
            offset: 0,
            needed_bytes: UNCOMPRESSED_SIZE_PREFIX_BYTES,
            available_bytes: body.len(),
        });
    };
    let declared = u64::from_be_bytes(*size);
    if declared > limits.max_message_size_bytes {
        return Err(Error::TooLarge {
            what: "inflated message",
            size_bytes: declared,
            max_bytes: limits.max_message_size_bytes,
        });
    }
    let possible = (compressed.len() as u64)
        .saturating_mul(MAX_ZLIB_EXPANSION_RATIO)
        .saturating_add(EXPANSION_SLACK_BYTES);
    if declared > possible {
        return Err(fail(format!(
            "declares {declared} bytes, more than {} compressed bytes can inflate to",
            compressed.len()
        )));
    }
    if declared < PROTO_HEADER_SIZE_BYTES as u64 {
        return Err(fail("declared size below a proto header"));
    }
    let declared = usize::try_from(declared).map_err(|_| fail("declared size too large"))?;
    // One byte past the declared size shows a stream that inflates further.
    let cap = declared + 1;
    let mut out = Vec::with_capacity(cap.min(FIRST_OUTPUT_BYTES));
    let mut inflater = Decompress::new(true);
    loop {
        if out.len() == out.capacity() {
            out.reserve_exact(out.len().min(cap - out.len()));
        }
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let input = compressed.get(consumed..).unwrap_or_default();
        let before = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Finish)
            .map_err(|e| fail(format!("zlib: {e}")))?;
        if out.len() > declared {
            return Err(fail("inflates past its declared size"));
        }
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                if before == (inflater.total_in(), out.len()) {
                    return Err(fail("zlib stream ends early"));
                }
            }
        }
    }
    if inflater.total_in() != compressed.len() as u64 {
        return Err(fail("bytes after the zlib stream"));
    }
    if out.len() != declared {
        return Err(fail(format!(
            "inflated to {} bytes, declared {declared}",
            out.len()
        )));
    }
    Ok(out)
}

/// Checks an inflated inner frame: version 2, type 3, and its size exactly
/// filling the inflated bytes.
pub fn inner_frame<'a>(inflated: &'a [u8], limits: &Limits) -> Result<Frame<'a>> {
    let frame = FrameDecoder::new(*limits).decode_exact(inflated)?;
    if frame.header.msg_type != MessageType::AsMsg {
        return Err(fail("inner message is not type 3"));
    }
    Ok(frame)
}

/// Appends a type-4 frame wrapping `inner_frame` (a complete type-3 frame)
/// at zlib `level` (0..=9; the clients use 1).
pub fn encode_compressed_frame(out: &mut Vec<u8>, inner_frame: &[u8], level: u32) -> Result<()> {
    let start = begin_frame(out, MessageType::Compressed);
    out.extend_from_slice(&(inner_frame.len() as u64).to_be_bytes());
    let mut encoder = flate2::write::ZlibEncoder::new(&mut *out, Compression::new(level.min(9)));
    let written = encoder
        .write_all(inner_frame)
        .and_then(|()| encoder.finish());
    if written.is_err() {
        return Err(Error::Encode {
            what: "compressed frame",
            reason: "zlib failed",
        });
    }
    finish_frame(out, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{FrameStatus, encode_frame};

    fn inner() -> Vec<u8> {
        let mut f = Vec::new();
        let mut body = vec![0x16, 1, 0, 0, 0, 0];
        body.extend_from_slice(&[0; 16]);
        body.extend(std::iter::repeat_n(b'x', 1000));
        encode_frame(&mut f, MessageType::AsMsg, &body).unwrap();
        f
    }

    fn compressed_body(inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_compressed_frame(&mut out, inner, CLIENT_COMPRESSION_LEVEL).unwrap();
        let FrameStatus::Complete { frame, .. } = FrameDecoder::default().decode(&out).unwrap()
        else {
            panic!("incomplete");
        };
        assert_eq!(frame.header.msg_type, MessageType::Compressed);
        frame.body.to_vec()
    }

    #[test]
    fn round_trip() {
        let inner = inner();
        let body = compressed_body(&inner);
        assert!(body.len() < inner.len());
        let limits = Limits::default();
        let inflated = decompress(&body, &limits).unwrap();
        assert_eq!(inflated, inner);
        let f = inner_frame(&inflated, &limits).unwrap();
        assert_eq!(f.body, &inner[8..]);
    }

    #[test]
    fn size_checks() {
        let inner = inner();
        let mut body = compressed_body(&inner);
        let limits = Limits::default();
        // Declared one byte short: the stream inflates past it.
        body[7] -= 1;
        assert!(decompress(&body, &limits).is_err());
        // Declared one byte long: the stream ends short.
        body[7] += 2;
        assert!(decompress(&body, &limits).is_err());
        body[7] -= 1;
        // Over the configured limit.
        let small = Limits {
            max_message_size_bytes: 100,
            ..limits
        };
        assert!(matches!(
            decompress(&body, &small),
            Err(Error::TooLarge { .. })
        ));
        // Trailing garbage, truncation.
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(decompress(&trailing, &limits).is_err());
        assert!(decompress(&body[..body.len() - 1], &limits).is_err());
        assert!(decompress(&body[..5], &limits).is_err());
    }

    #[test]
    fn a_zip_bomb_declaration_is_refused_before_inflating() {
        // 1 GiB of zeros compresses to about 1 MiB; here 100 bytes declare 100 MiB.
        let mut body = (100u64 << 20).to_be_bytes().to_vec();
        body.extend_from_slice(&[0x78, 0x01]);
        body.extend_from_slice(&[0; 98]);
        let err = decompress(&body, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("can inflate to"), "{err}");
    }

    #[test]
    fn inner_frame_must_be_type_3() {
        let mut info = Vec::new();
        encode_frame(&mut info, MessageType::Info, b"node\n").unwrap();
        let body = compressed_body(&info);
        let inflated = decompress(&body, &Limits::default()).unwrap();
        assert!(inner_frame(&inflated, &Limits::default()).is_err());
    }
}
