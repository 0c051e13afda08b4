//! The record digest and partition id (spec §6).
//!
//! `digest = RIPEMD-160(set name bytes | key particle type byte | key value bytes)`;
//! the namespace is not hashed. `partition = (digest[0] | digest[1] << 8) & 0x0FFF`.

use ripemd::{Digest as _, Ripemd160};

use crate::particle::UserKey;

/// A record digest: the record's identity within a namespace.
pub type Digest = [u8; DIGEST_SIZE_BYTES];

/// Size of a digest.
pub const DIGEST_SIZE_BYTES: usize = 20;
/// Number of partitions per namespace.
pub const PARTITION_COUNT: u16 = 4096;
/// Mask applied to the little-endian first two digest bytes.
pub const PARTITION_MASK: u16 = PARTITION_COUNT - 1;

/// The digest of a key in a set (`set` empty when there is no set).
pub fn compute_digest(set: &[u8], key: &UserKey<'_>) -> Digest {
    let mut hasher = Ripemd160::new();
    hasher.update(set);
    hasher.update([key.particle_type()]);
    key.with_value_bytes(|value| hasher.update(value));
    hasher.finalize().into()
}

/// The partition a digest belongs to.
pub fn partition_id(digest: &Digest) -> u16 {
    u16::from_le_bytes([digest[0], digest[1]]) & PARTITION_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Digest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn spec_test_vectors() {
        let cases: [(&[u8], UserKey<'_>, &str, u16); 4] = [
            (
                b"demo",
                UserKey::String(b"k1"),
                "b747f5854d0b33259928d0cfab7fad81d6abfbf6",
                1975,
            ),
            (
                b"demo",
                UserKey::Int(42),
                "cf5a1365effa4dc53333f2166d103358f8711096",
                2767,
            ),
            (
                b"",
                UserKey::String(b"k1"),
                "50149955959c2fef0a83613ae80c78bb9c96b269",
                1104,
            ),
            (
                b"demo",
                UserKey::String(b"user1"),
                "03161f352c8ab85448952c896ecdaa122b3c4e71",
                1539,
            ),
        ];
        for (set, key, digest, pid) in cases {
            let d = compute_digest(set, &key);
            assert_eq!(hex(&d), digest, "{key:?}");
            assert_eq!(partition_id(&d), pid, "{key:?}");
        }
    }

    #[test]
    fn the_key_type_is_hashed() {
        assert_ne!(
            compute_digest(b"s", &UserKey::String(b"ab")),
            compute_digest(
                b"s",
                &UserKey::Blob(crate::particle::BlobType::Generic, b"ab")
            )
        );
    }

    #[test]
    fn partition_id_masks_to_12_bits() {
        let mut d = [0u8; 20];
        d[0] = 0xff;
        d[1] = 0xff;
        assert_eq!(partition_id(&d), 4095);
        d[1] = 0x10;
        assert_eq!(partition_id(&d), 0xff);
    }
}
