//! A type-4 message declaring a huge inflated size costs only what it
//! actually inflates to: the declared size is never allocated up front.
//! (Its own test binary: the allocator below counts every allocation.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use aerie_protocol::compress::{self, CLIENT_COMPRESSION_LEVEL};
use aerie_protocol::framing::{FrameDecoder, FrameStatus, Limits, MessageType, encode_frame};

/// Remembers the largest single allocation.
struct Largest;

static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to `System` for every call; only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_BYTES.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[test]
fn a_huge_declared_size_is_refused_without_allocating_it() {
    let mut inner = Vec::new();
    encode_frame(&mut inner, MessageType::AsMsg, &[0x16; 1000]).unwrap();
    let mut frame = Vec::new();
    compress::encode_compressed_frame(&mut frame, &inner, CLIENT_COMPRESSION_LEVEL).unwrap();
    let FrameStatus::Complete { frame, .. } = FrameDecoder::default().decode(&frame).unwrap()
    else {
        panic!("incomplete");
    };
    // Declare 100 MiB and pad the stream so that the expansion-ratio check
    // lets it through: only inflating can show the lie.
    let declared: u64 = 100 << 20;
    let mut body = declared.to_be_bytes().to_vec();
    body.extend_from_slice(&frame.body[8..]);
    body.resize(body.len() + (128 << 10), 0);
    let limits = Limits::default();
    assert!(declared <= limits.max_message_size_bytes);

    LARGEST_BYTES.store(0, Ordering::Relaxed);
    let refused = compress::decompress(&body, &limits);
    let largest = LARGEST_BYTES.load(Ordering::Relaxed);
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        largest < 1 << 20,
        "a {declared}-byte declaration allocated {largest} bytes"
    );
}
