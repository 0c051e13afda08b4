//! A type-4 body: bounded inflation, the inner frame, the request in it.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::framing::Limits;
use aerie_protocol::{Request, compress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_size_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Ok(inflated) = compress::decompress(data, &limits)
        && let Ok(inner) = compress::inner_frame(&inflated, &limits)
    {
        let _ = Request::decode(inner.body, &limits);
    }
});
