//! `aerie snapshot create | list | verify` and `aerie restore`, run as real
//! processes on a data directory written the way a node writes it: every
//! command through its shard's WAL stream (with the replication codec), then
//! applied to the engine; segments the log no longer needs go to the archive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aerie::datadir::{ClusterMeta, DataDir};
use aerie_engine::model::Model;
use aerie_engine::{
    Bin, Command as Cmd, Digest, Engine, NamespaceConfig, Op, Operate, Record, Value, Write,
    partition_of,
};
use aerie_replication::codec::Proposal;
use aerie_replication::shards::{log_id, stream_id};
use aerie_wal::{EntryRef, HardState, LogBatch, Wal, WalConfig};

const COMMANDS: usize = 2000;
const CHECKPOINT_AFTER: usize = 1200;

fn aerie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn digest(i: u32) -> Digest {
    let mut d = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE;
    for chunk in d.chunks_mut(8) {
        x = x
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(0x94D0_49BB);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    d
}

/// Counter increments over 100 keys, each with a padding bin.
fn command(n: usize) -> Cmd {
    let key = (n * 7919 % 100) as u32;
    Cmd::Operate(Operate {
        write: Write::new("test", digest(key)),
        ops: vec![
            Op::Incr(Bin::new("n", Value::Int(1))),
            Op::Write(Bin::new("last", Value::Int(n as i64))),
            Op::Write(Bin::new("pad", Value::String(vec![b'x'; 100]))),
        ],
    })
}

/// Leader times: an hour ago, one second apart (so a snapshot taken now is
/// younger than every command).
struct Clock {
    base_ms: u64,
}

impl Clock {
    fn new() -> Clock {
        let now = aerie::snapshot_cmd::now_ms();
        Clock {
            base_ms: now - 3_600_000,
        }
    }
    fn at(&self, n: usize) -> u64 {
        self.base_ms + n as u64 * 1000
    }
}

fn meta(cluster: &str) -> ClusterMeta {
    ClusterMeta {
        cluster_name: cluster.into(),
        node_id: 1,
        cluster_id: 7,
        shards: 2,
        incarnation: 0,
        namespaces: vec![NamespaceConfig {
            write_block_size_bytes: 64 << 10,
            ..NamespaceConfig::named("test")
        }],
    }
}

/// Writes `COMMANDS` commands like a node does; the engine checkpoints after
/// `CHECKPOINT_AFTER` and is then dropped without one (a stop at any moment).
fn write_node(root: &Path, cluster: &str, clock: &Clock) -> DataDir {
    let dd = DataDir::create(root, meta(cluster)).unwrap();
    let mut config = WalConfig::new(dd.wal_dir());
    config.segment_size_bytes = 64 << 10;
    config.max_entry_bytes = 8 << 10;
    config.archive_dir = Some(dd.wal_archive_dir());
    let wal = Wal::open(config).unwrap();
    let engine = Engine::open(dd.engine_config()).unwrap();
    let map = dd.shard_map();
    let mut next_index = [0u64; 2];
    for n in 0..COMMANDS {
        let cmd = command(n);
        let Cmd::Operate(op) = &cmd else {
            unreachable!()
        };
        let shard = map.shard_of(partition_of(&op.write.digest));
        next_index[shard as usize] += 1;
        let index = next_index[shard as usize];
        let payload = Proposal {
            id: n as u64,
            now_ms: clock.at(n),
            command: cmd.clone(),
        }
        .to_payload();
        let mut batch = LogBatch::new();
        batch
            .append(
                stream_id(shard),
                &[EntryRef {
                    index,
                    term: 3,
                    payload: &payload,
                }],
            )
            .unwrap();
        batch.set_hard_state(
            stream_id(shard),
            HardState {
                term: 3,
                vote: 1,
                commit: index,
            },
        );
        wal.write(batch).unwrap();
        engine
            .apply(log_id(shard), index, clock.at(n), &cmd)
            .unwrap();
        if n + 1 == CHECKPOINT_AFTER {
            engine.checkpoint().unwrap();
            for shard in 0..2 {
                let durable = engine.durable_applied_index(log_id(shard));
                wal.compact(stream_id(shard), durable).unwrap();
            }
        }
    }
    dd
}

fn model_after(clock: &Clock, commands: usize) -> BTreeMap<Digest, Record> {
    let mut model = Model::new("test", 0);
    for n in 0..commands {
        model.apply(clock.at(n), &command(n)).unwrap();
    }
    model.visible(clock.at(COMMANDS))
}

fn engine_records(data_dir: &Path) -> BTreeMap<Digest, Record> {
    let dd = DataDir::open(data_dir).unwrap();
    let engine = Engine::open(dd.engine_config()).unwrap();
    let all: Vec<u16> = (0..4096).collect();
    let view = engine.view("test", &all).unwrap();
    view.records()
        .map(|r| r.unwrap())
        .map(|r| (r.digest, r))
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_verify_restore_and_point_in_time_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let node = write_node(&tmp.path().join("node"), "alpha", &clock);

    let out = aerie(&["snapshot", "create", "--data-dir", s(node.root())]);
    assert!(out.status.success(), "{}", text(&out));
    let files = snapshot_files(&node.snapshot_dir());
    assert_eq!(files.len(), 2, "{}", text(&out));

    let out = aerie(&["snapshot", "list", s(&node.snapshot_dir())]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches(".snap").count(), 2, "{}", text(&out));

    let mut verify = vec!["snapshot", "verify"];
    verify.extend(files.iter().map(|f| s(f)));
    let out = aerie(&verify);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("partitions 0-2047"), "{}", text(&out));

    // Restore: the state the engine had made durable (the checkpoint).
    let restored = tmp.path().join("restored");
    let mut restore = vec!["restore", "--data-dir", s(&restored), "--from"];
    restore.extend(files.iter().map(|f| s(f)));
    let out = aerie(&restore);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        engine_records(&restored),
        model_after(&clock, CHECKPOINT_AFTER)
    );
    assert_eq!(snapshot_files(&restored.join("snapshots")).len(), 2);

    // Point in time: half a second after command 1700 was stamped.
    let pitr = tmp.path().join("pitr");
    let to_time = (clock.at(1700) + 500).to_string();
    let mut args = vec!["restore", "--data-dir", s(&pitr), "--to-time", &to_time];
    let (archive, wal) = (node.wal_archive_dir(), node.wal_dir());
    args.extend([
        "--wal-archive",
        s(&archive),
        "--wal-archive",
        s(&wal),
        "--from",
    ]);
    args.extend(files.iter().map(|f| s(f)));
    let out = aerie(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(engine_records(&pitr), model_after(&clock, 1701));

    // The restored directories are usable data dirs whose snapshots verify.
    let mut verify = vec!["snapshot", "verify"];
    let pitr_files = snapshot_files(&pitr.join("snapshots"));
    verify.extend(pitr_files.iter().map(|f| s(f)));
    let out = aerie(&verify);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn restore_refuses_what_would_be_wrong_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::new();
    let alpha = write_node(&tmp.path().join("alpha"), "alpha", &clock);
    let beta = write_node(&tmp.path().join("beta"), "beta", &clock);
    for dd in [&alpha, &beta] {
        let out = aerie(&["snapshot", "create", "--data-dir", s(dd.root())]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let a = snapshot_files(&alpha.snapshot_dir());
    let b = snapshot_files(&beta.snapshot_dir());
    let target = tmp.path().join("target");
    let refused = |from: &[&PathBuf], extra: &[&str], expect: &str| {
        let mut args = vec!["restore", "--data-dir", s(&target)];
        args.extend_from_slice(extra);
        args.push("--from");
        args.extend(from.iter().map(|f| s(f)));
        let out = aerie(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(expect),
            "expected {expect:?} in {}",
            text(&out)
        );
    };
    refused(
        &[&a[0]],
        &[],
        "do not cover every partition: 2048 of 4096 missing (2048-4095)",
    );
    refused(&[&a[0], &b[1]], &[], "different clusters");
    refused(&[&a[0], &a[0]], &[], "more than one snapshot");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    refused(&[&a[0], &a[1]], &[], "is not empty");
    std::fs::remove_file(target.join("something")).unwrap();
    let archive = s(&alpha.wal_archive_dir()).to_string();
    refused(
        &[&a[0], &a[1]],
        &["--wal-archive", &archive, "--to-index", "5"],
        "single snapshot",
    );
    assert!(
        std::fs::read_dir(&target).unwrap().next().is_none(),
        "a refused restore wrote files"
    );

    // A damaged file: exit code 1, the file and offset named, nothing restored.
    let mut bytes = std::fs::read(&a[1]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&a[1], &bytes).unwrap();
    let out = aerie(&[
        "restore",
        "--data-dir",
        s(&target),
        "--from",
        s(&a[0]),
        s(&a[1]),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(s(&a[1])) && text(&out).contains("offset"),
        "{}",
        text(&out)
    );
    let out = aerie(&["snapshot", "verify", s(&a[0]), s(&a[1])]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
