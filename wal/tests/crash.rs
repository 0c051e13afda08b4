//! Crash test in the style of sled: a child process appends with fsync
//! `always` and prints every acknowledged (stream, index); the parent kills it
//! with SIGKILL at a random moment, reopens the log, and checks that every
//! acknowledged entry is there with its payload and that nothing is half there.
//!
//! `cargo test -p aerie-wal --test crash` runs 50 kills (bounded to ~60 s);
//! `cargo test -p aerie-wal --test crash -- --ignored` runs 500.
//! A custom harness (no libtest), so the child is this same binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_wal::{IoBackend, Wal};
use common::{all_entries, append, payload, small_config};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "AERIE_WAL_CRASH_CHILD";
const STREAMS: u64 = 4;
const DEFAULT_KILLS: usize = 50;
const IGNORED_KILLS: usize = 500;
const TIME_BOUND: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let kills = if args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        IGNORED_KILLS
    } else {
        DEFAULT_KILLS
    };
    if args.iter().any(|a| a == "--list") {
        println!("crash_kills: test");
        return;
    }
    let filtered_out = args
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"crash_kills".contains(a.as_str()));
    if filtered_out {
        println!("0 passed, 0 failed");
        return;
    }
    let done = parent(kills);
    println!("crash test: {done} kills survived");
    println!("1 passed, 0 failed");
}

fn config(dir: &Path) -> aerie_wal::WalConfig {
    small_config(dir, IoBackend::Auto)
}

/// Appends forever from several threads, printing each acknowledgement; now
/// and then compacts, so segments rotate, purge and get recycled under kills.
fn child(dir: &Path) {
    let wal = std::sync::Arc::new(Wal::open(config(dir)).expect("child open"));
    let threads: Vec<_> = (0..STREAMS)
        .map(|stream| {
            let wal = std::sync::Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                let stdout = std::io::stdout();
                loop {
                    let next = wal.last_index(stream) + 1;
                    let count = rng.random_range(1..8);
                    append(&wal, stream, next, count, 1).expect("child append");
                    let mut out = stdout.lock();
                    writeln!(out, "ack {stream} {}", next + count - 1).expect("stdout");
                    out.flush().expect("stdout");
                    drop(out);
                    if next > 300 && rng.random_range(0..20) == 0 {
                        wal.compact(stream, next - 200).expect("child compact");
                        writeln!(stdout.lock(), "compact {stream} {}", next - 200).expect("stdout");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn parent(kills: usize) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut done = 0;
    while done < kills && started.elapsed() < TIME_BOUND {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(rng.random_range(5..120)));
        child.kill().expect("kill"); // SIGKILL
        let stdout = child.stdout.take().expect("stdout");
        child.wait().expect("wait");
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            let mut words = line.split(' ');
            if words.next() == Some("ack") {
                let stream: u64 = words.next().and_then(|w| w.parse().ok()).expect("stream");
                let index: u64 = words.next().and_then(|w| w.parse().ok()).expect("index");
                let slot = acked.entry(stream).or_default();
                *slot = (*slot).max(index);
            }
        }
        check(dir.path(), &acked);
        done += 1;
    }
    assert!(
        done >= kills.min(20),
        "only {done} kills within {TIME_BOUND:?}"
    );
    done
}

/// Every acknowledged entry is present with its payload; nothing is half there.
fn check(dir: &Path, acked: &BTreeMap<u64, u64>) {
    let wal = Wal::open(config(dir)).expect("reopen after SIGKILL");
    for stream in 0..STREAMS {
        let last = wal.last_index(stream);
        let acked_last = acked.get(&stream).copied().unwrap_or(0);
        assert!(
            last >= acked_last,
            "stream {stream}: acknowledged {acked_last}, log ends at {last}"
        );
        for entry in all_entries(&wal, stream) {
            assert_eq!(
                entry.payload,
                payload(stream, entry.index, 1),
                "stream {stream} index {}",
                entry.index
            );
        }
    }
}
