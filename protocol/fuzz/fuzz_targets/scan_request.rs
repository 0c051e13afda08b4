//! A scan request message.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{Message, ScanRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let _ = ScanRequest::from_message(m);
    }
});
