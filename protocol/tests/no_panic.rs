#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: every decoder is total. Arbitrary bytes, and valid frames
//! cut short or with bits flipped, give values or errors, never a panic; and
//! whatever decodes re-encodes consistently (see `common::decode_everything`).

mod common;

use aerie_protocol::framing::{FrameDecoder, FrameStatus};
use aerie_protocol::{MessageType, compress};
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes(data in bytes(600)) {
        decode_everything(&data);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header(msg_type in 1..=4u8, data in bytes(600)) {
        let mut frame = vec![2, msg_type];
        frame.extend_from_slice(&(data.len() as u64).to_be_bytes()[2..]);
        frame.extend_from_slice(&data);
        decode_everything(&frame);
    }

    #[test]
    fn truncated_frames(frame in request_frame(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(frame.len() + 1);
        decode_everything(&frame[..cut]);
        decode_everything(&frame[8.min(cut)..cut]);
        // A stream reader sees a truncated frame as incomplete, never as garbage.
        if cut < frame.len() {
            let status = FrameDecoder::new(test_limits()).decode(&frame[..cut]).unwrap();
            let is_incomplete = matches!(status, FrameStatus::Incomplete { .. });
            prop_assert!(is_incomplete);
        }
    }

    #[test]
    fn bit_flips(
        frame in request_frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..6),
    ) {
        let mut frame = frame;
        for (at, bit) in flips {
            let at = at.index(frame.len());
            frame[at] ^= 1 << bit;
        }
        decode_everything(&frame);
        decode_everything(&frame[8..]);
    }

    #[test]
    fn damaged_compressed_frames(
        frame in request_frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0..8u8), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut outer = encode(|out| compress::encode_compressed_frame(out, &frame, 1));
        for (at, bit) in flips {
            let at = 8 + at.index(outer.len() - 8);
            outer[at] ^= 1 << bit;
        }
        let cut = 8 + cut.index(outer.len() - 7);
        let body = &outer[8..cut];
        let mut reframed = vec![2, MessageType::Compressed.to_u8()];
        reframed.extend_from_slice(&(body.len() as u64).to_be_bytes()[2..]);
        reframed.extend_from_slice(body);
        decode_everything(&reframed);
    }
}
