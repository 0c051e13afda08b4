//! A particle value: the first byte is the particle type.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&particle, bytes)) = data.split_first()
        && let Ok(value) = Value::decode(particle, bytes, 1)
    {
        let mut out = Vec::new();
        value.encode(&mut out).unwrap();
        assert_eq!(out, bytes);
    }
});
