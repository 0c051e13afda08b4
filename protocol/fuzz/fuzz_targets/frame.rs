//! The incremental frame decoder and the proto header.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::framing::{FrameDecoder, FrameStatus, Limits, ProtoHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Some(header) = data.first_chunk::<8>() {
        let _ = ProtoHeader::decode(header, &limits);
    }
    if let Ok(FrameStatus::Complete {
        frame,
        consumed_bytes,
    }) = FrameDecoder::new(limits).decode(data)
    {
        assert_eq!(consumed_bytes, 8 + frame.body.len());
    }
});
