//! A user key field's data, and its digest.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{UserKey, compute_digest, partition_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = UserKey::decode(data, 0) {
        let mut out = Vec::new();
        key.encode(&mut out);
        assert_eq!(out, data);
        assert!(partition_id(&compute_digest(b"set", &key)) < 4096);
    }
});
