//! One op.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::Op;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((op, len)) = Op::decode_prefix(data) {
        let mut out = Vec::new();
        op.encode(&mut out).unwrap();
        assert_eq!(out, &data[..len]);
    }
});
