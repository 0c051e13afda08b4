//! A scan response frame body: records, partition-done markers and LAST.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{MessageIter, ScanResponseItem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in MessageIter::new(data) {
        let Ok(m) = m else { break };
        let _ = ScanResponseItem::from_message(m);
    }
});
