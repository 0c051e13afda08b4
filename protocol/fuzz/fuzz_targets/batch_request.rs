//! The batch-index field (41) body.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::{BatchRequest, Field, Info1, Message, MessageHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = MessageHeader {
        info1: Info1::BATCH,
        ..MessageHeader::default()
    };
    let message = Message::new(header, vec![Field::BatchIndex(data)], vec![]);
    if let Ok(batch) = BatchRequest::from_message(message, 5000) {
        for row in batch.resolved_rows() {
            row.unwrap();
        }
        let mut out = Vec::new();
        batch.encode(&mut out).unwrap();
        let again = BatchRequest::from_message(Message::decode(&out).unwrap(), 5000).unwrap();
        assert_eq!(again, batch);
    }
});
