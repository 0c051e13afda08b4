//! The fabric's frame decoder, at the handshake's limit (what a stranger
//! can reach) and at the data limit; a decoded frame must re-encode to the
//! same bytes.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_replication::fabric::format::{DEFAULT_MAX_FRAME_BYTES, MAX_HANDSHAKE_PAYLOAD_BYTES};
use aerie_replication::fabric::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode(data, MAX_HANDSHAKE_PAYLOAD_BYTES);
    if let Ok(Some((found, used))) = frame::decode(data, DEFAULT_MAX_FRAME_BYTES) {
        let again = frame::encode(found.kind, found.payload).unwrap();
        assert_eq!(again, &data[..used]);
    }
});
