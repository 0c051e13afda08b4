//! `aerie wal dump` and `aerie wal verify`, run as real processes on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aerie_wal::{EntryRef, IoBackend, LogBatch, Wal, WalConfig};
use std::path::Path;
use std::process::{Command, Output};

fn aerie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(args)
        .output()
        .unwrap()
}

fn write_log(dir: &Path) {
    let mut config = WalConfig::new(dir);
    config.segment_size_bytes = 64 << 10;
    config.max_entry_bytes = 8 << 10;
    config.io_backend = IoBackend::Sync;
    let wal = Wal::open(config).unwrap();
    let payload = vec![7u8; 300];
    for n in 0..400u64 {
        let mut batch = LogBatch::new();
        batch
            .append(
                n % 3,
                &[EntryRef {
                    index: n / 3 + 1,
                    term: 1,
                    payload: &payload,
                }],
            )
            .unwrap();
        wal.write(batch).unwrap();
    }
}

#[test]
fn verify_passes_a_clean_log_and_dump_lists_streams() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let dir_arg = dir.path().to_str().unwrap();
    let verify = aerie(&["wal", "verify", dir_arg]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let dump = aerie(&["wal", "dump", dir_arg]);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success());
    assert!(text.contains("segment 1 "), "{text}");
    assert!(text.contains("stream 2:"), "{text}");
    assert!(text.contains("0 problems"), "{text}");
}

#[test]
fn verify_names_file_and_offset_of_corruption_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let segment = dir.path().join(aerie_wal::format::segment_file_name(1));
    let mut data = std::fs::read(&segment).unwrap();
    let offset = aerie_wal::format::SEGMENT_HEADER_BYTES + 2000;
    data[offset] ^= 0x40;
    std::fs::write(&segment, &data).unwrap();
    let verify = aerie(&["wal", "verify", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(text.contains("CORRUPTION"), "{text}");
    assert!(text.contains(segment.to_str().unwrap()), "{text}");
    assert!(text.contains("at offset "), "{text}");
}

#[test]
fn verify_reports_a_missing_directory_clearly() {
    let output = aerie(&["wal", "verify", "/nonexistent/aerie-wal"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/aerie-wal"));
}
