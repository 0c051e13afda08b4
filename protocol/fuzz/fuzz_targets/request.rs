//! Typed requests (record, batch, scan): what decodes re-encodes and decodes
//! to the same value.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{Limits, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(request) = Request::decode(data, &limits) {
        let mut out = Vec::new();
        request.encode_frame(&mut out).unwrap();
        assert_eq!(Request::decode(&out[8..], &limits).unwrap(), request);
    }
});
