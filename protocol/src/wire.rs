//! A bounds-checked cursor over input bytes: every read names what it reads and
//! fails with [`Error::Truncated`] instead of panicking. All decoders go through
//! it.

use crate::error::{Error, Result};

/// Reads big-endian integers and byte runs from a slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the caller's buffer (for error offsets).
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, whose first byte is at offset `base` of the
    /// caller's buffer.
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Offset of the next byte in the caller's buffer.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `len` bytes.
    pub(crate) fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(Error::Truncated {
                what,
                offset: self.offset(),
                needed_bytes: len,
                available_bytes: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let bytes = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16_be(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32_be(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
}

/// Capacity to reserve for `count` items of at least `min_item_bytes` each
/// when `remaining_bytes` are left: never more than the bytes can hold, so a
/// lying count cannot make a decoder allocate.
pub(crate) fn bounded_capacity(
    count: usize,
    min_item_bytes: usize,
    remaining_bytes: usize,
) -> usize {
    count.min(remaining_bytes / min_item_bytes.max(1))
}

/// Appends a u32 length placeholder and returns its position for [`patch_u32_be`].
pub(crate) fn reserve_u32(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Writes `value` big-endian at `at` (a position from [`reserve_u32`]).
pub(crate) fn patch_u32_be(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// `len` as a u32 size, or an encode error naming `what`.
pub(crate) fn len_u32(len: usize, what: &'static str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Encode {
        what,
        reason: "longer than a u32 size can say",
    })
}

/// `len` as a u16 count, or an encode error naming `what`.
pub(crate) fn len_u16(len: usize, what: &'static str) -> Result<u16> {
    u16::try_from(len).map_err(|_| Error::Encode {
        what,
        reason: "more than a u16 count can say",
    })
}

/// `len` as a u8 length, or an encode error naming `what`.
pub(crate) fn len_u8(len: usize, what: &'static str) -> Result<u8> {
    u8::try_from(len).map_err(|_| Error::Encode {
        what,
        reason: "longer than a u8 length can say",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut r = Reader::new(&[1, 2, 3], 10);
        assert_eq!(r.u16_be("a").unwrap(), 0x0102);
        assert_eq!(r.offset(), 12);
        let e = r.u16_be("b").unwrap_err();
        assert_eq!(
            e,
            Error::Truncated {
                what: "b",
                offset: 12,
                needed_bytes: 2,
                available_bytes: 1
            }
        );
        assert_eq!(r.u8("c").unwrap(), 3);
        assert!(r.is_empty());
        assert!(r.bytes(usize::MAX, "d").is_err());
    }

    #[test]
    fn capacity_is_bounded_by_bytes() {
        assert_eq!(bounded_capacity(65535, 5, 20), 4);
        assert_eq!(bounded_capacity(3, 5, 100), 3);
        assert_eq!(bounded_capacity(3, 0, 0), 0);
    }
}
