//! Crash test in the style of sled: a child process runs a one-member node
//! and increments counters through raft with fsync `always`, printing every
//! acknowledged increment; the parent SIGKILLs it at a random moment, restarts
//! the node on the same directory and checks every counter: no acknowledged
//! increment lost, none applied twice (at most the one in flight may be there
//! unacknowledged).
//!
//! `cargo test -p aerie-replication --test crash` runs 8 kills;
//! `cargo test -p aerie-replication --test crash -- --ignored` runs 60.
//! A custom harness (no libtest), so the child is this same binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aerie_replication::transport::LocalNetwork;
use common::*;
use rand::Rng;

const CHILD_ENV: &str = "AERIE_RAFT_CRASH_CHILD";
const KEYS: u32 = 16;
const DEFAULT_KILLS: usize = 8;
const IGNORED_KILLS: usize = 60;
const TIME_BOUND: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("crash_kills: test");
        return;
    }
    if args
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"crash_kills".contains(a.as_str()))
    {
        println!("0 passed, 0 failed");
        return;
    }
    let ignored = args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored");
    let kills = if ignored {
        IGNORED_KILLS
    } else {
        DEFAULT_KILLS
    };
    let done = parent(kills);
    println!("raft crash test: {done} kills survived");
    println!("1 passed, 0 failed");
}

/// Increments random counters until killed; one line per acknowledgement.
fn child(dir: &Path) {
    let net = LocalNetwork::new(1);
    let member = Member::start(1, &[1], dir, &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&member), shard);
    }
    println!("ready");
    let mut rng = rand::rng();
    let mut out = std::io::stdout().lock();
    loop {
        let key = rng.random_range(0..KEYS);
        member
            .node()
            .propose_wait(shard_of(key), incr(key, 1), WAIT)
            .unwrap();
        writeln!(out, "{key}").unwrap();
        out.flush().unwrap();
    }
}

fn parent(kills: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked = [0i64; KEYS as usize];
    let mut rng = rand::rng();
    let mut done = 0;
    while done < kills && started.elapsed() < TIME_BOUND {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let reader = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .map(|line| line.parse::<usize>().unwrap())
                .collect::<Vec<usize>>()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for key in reader.join().unwrap() {
            acked[key] += 1;
        }
        check(dir.path(), &mut acked);
        done += 1;
    }
    assert!(done >= kills.min(3), "only {done} kills in {TIME_BOUND:?}");
    done
}

/// Reopens the node: every acknowledged increment is there, at most one more
/// (the one in flight when the child died), which then counts as acknowledged.
fn check(dir: &Path, acked: &mut [i64; KEYS as usize]) {
    let net = LocalNetwork::new(2);
    let member = Member::start(1, &[1], dir, &net);
    for shard in 0..SHARDS {
        leader_of(std::slice::from_ref(&member), shard);
    }
    for key in 0..KEYS {
        member
            .node()
            .read_barrier(
                shard_of(key),
                aerie_replication::ReadConsistency::Linearizable,
                WAIT,
            )
            .unwrap();
    }
    let mut extra = 0;
    for key in 0..KEYS {
        let value = counter(member.engine(), key);
        let floor = acked[key as usize];
        assert!(value >= floor, "key {key}: {value} < acknowledged {floor}");
        assert!(
            value <= floor + 1,
            "key {key}: {value} > acknowledged {floor} + 1 (applied twice?)"
        );
        extra += value - floor;
        acked[key as usize] = value;
    }
    assert!(
        extra <= 1,
        "{extra} unacknowledged increments survived; at most one was in flight"
    );
}
