//! An info response body, and the answers a client parses out of it.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::info::{
    PartitionBitmap, UserAgent, base64_decode, parse_replicas, parse_response,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_response(data) {
        for (_, value) in pairs {
            let _ = parse_replicas(value);
            let _ = base64_decode(value);
            let _ = PartitionBitmap::from_base64(value);
            let _ = UserAgent::decode(value);
        }
    }
});
