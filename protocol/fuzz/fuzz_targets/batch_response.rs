//! A batch response frame body: rows and LAST.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{BatchResponseItem, MessageIter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in MessageIter::new(data) {
        let Ok(m) = m else { break };
        let _ = BatchResponseItem::from_message(m);
    }
});
