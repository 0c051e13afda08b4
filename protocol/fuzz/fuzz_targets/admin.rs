//! An admin (type 2) body.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::admin::AdminMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = AdminMessage::decode(data) {
        let mut out = Vec::new();
        m.encode_frame(&mut out).unwrap();
        assert_eq!(AdminMessage::decode(&out[8..]).unwrap(), m);
    }
});
