//! A secondary-index filter (field 22).
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::IndexFilter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(filter) = IndexFilter::decode(data) {
        let mut out = Vec::new();
        filter.encode(&mut out).unwrap();
        assert_eq!(out, data);
    }
});
