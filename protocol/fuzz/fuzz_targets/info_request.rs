//! An info request body.
#![no_main]
#![allow(clippy::unwrap_used)]

use aerie_protocol::info::InfoRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = InfoRequest::parse(data) {
        for command in &request.commands {
            let _ = command.path_args().count();
            let _ = command.param("value");
        }
    }
});
