//! One field.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::Field;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((field, len)) = Field::decode_prefix(data) {
        let mut out = Vec::new();
        field.encode(&mut out).unwrap();
        assert_eq!(out, &data[..len]);
    }
});
