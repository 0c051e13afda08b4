//! The handshake's payload decoders (HELLO, CHALLENGE, RESPONSE, REFUSED),
//! and the frame decoder in front of them; a decoded HELLO or CHALLENGE must
//! re-encode to the same bytes.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_replication::fabric::format::MAX_HANDSHAKE_PAYLOAD_BYTES;
use aerie_replication::fabric::frame;
use aerie_replication::fabric::hello::{Challenge, Hello, decode_refused, decode_response};
use libfuzzer_sys::fuzz_target;

fn payloads(bytes: &[u8]) {
    if let Ok(hello) = Hello::decode(bytes) {
        assert_eq!(&hello.encode()[..], bytes);
    }
    if let Ok(challenge) = Challenge::decode(bytes) {
        assert_eq!(&challenge.encode()[..], bytes);
    }
    let _ = decode_response(bytes);
    let _ = decode_refused(bytes);
}

fuzz_target!(|data: &[u8]| {
    payloads(data);
    if let Ok(Some((found, _))) = frame::decode(data, MAX_HANDSHAKE_PAYLOAD_BYTES) {
        payloads(found.payload);
    }
});
