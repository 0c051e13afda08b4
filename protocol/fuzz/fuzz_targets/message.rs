//! A whole AS_MSG body: what decodes re-encodes to the same bytes.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        assert_eq!(out, data);
    }
});
