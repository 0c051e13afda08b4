//! Point-in-time recovery: a snapshot plus archived WAL entries, replayed to an
//! index or a time, equals the model there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use aerie_engine::{Command, Engine};
use aerie_snapshot::pitr::{self, Target};
use aerie_snapshot::{Error, SnapshotInfo, SnapshotReader, WriteOptions, install};
use aerie_wal::archive::ArchivedStream;
use aerie_wal::{EntryRef, HardState, LogBatch, Wal, WalConfig};
use common::*;

const COMMANDS: usize = 3000;
const SNAPSHOT_AT: u64 = 800;
/// Every 50th entry carries no command (like a leader's no-op).
const NOOP_EVERY: u64 = 50;

/// The test's payload: the leader time and the position of the command in the
/// test's list (the real node encodes the command itself; the replay does not
/// care). An empty payload is a no-op.
fn encode(index: u64, command: usize) -> Vec<u8> {
    let mut out = now_of(index).to_le_bytes().to_vec();
    out.extend_from_slice(&(command as u32).to_le_bytes());
    out
}

struct History {
    commands: Vec<Command>,
    /// Per log index (1-based), the command applied there, if any.
    at_index: Vec<Option<usize>>,
}

impl History {
    fn decode<'a>(&'a self) -> impl Fn(&[u8]) -> Result<Option<(u64, Command)>, String> + 'a {
        move |payload: &[u8]| {
            if payload.is_empty() {
                return Ok(None);
            }
            let bytes: [u8; 12] = payload.try_into().map_err(|_| "bad length".to_string())?;
            let now = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            let n = u32::from_le_bytes(bytes[8..].try_into().unwrap()) as usize;
            Ok(Some((
                now,
                self.commands.get(n).ok_or("bad command number")?.clone(),
            )))
        }
    }

    /// The commands applied up to `index`, in order, with their times.
    fn model_at(
        &self,
        index: u64,
    ) -> std::collections::BTreeMap<String, aerie_engine::model::Model> {
        let mut models = models_at(&[], 0);
        for (i, n) in self.at_index.iter().take(index as usize).enumerate() {
            if let Some(n) = n {
                let cmd = &self.commands[*n];
                let _ = models
                    .get_mut(cmd.namespace())
                    .unwrap()
                    .apply(now_of(i as u64 + 1), cmd);
            }
        }
        models
    }
}

/// Writes every entry to a WAL that archives purged segments and applies it to
/// an engine; takes a snapshot at `SNAPSHOT_AT`.
fn record_history(
    wal_dir: &Path,
    archive: &Path,
    engine_dir: &Path,
    snap_dir: &Path,
) -> (History, SnapshotInfo) {
    let mut config = WalConfig::new(wal_dir);
    config.segment_size_bytes = 64 << 10;
    config.max_entry_bytes = 8 << 10;
    config.archive_dir = Some(archive.to_path_buf());
    let wal = Wal::open(config).unwrap();
    let engine = Engine::open(common::config(engine_dir)).unwrap();
    let commands = workload(21, COMMANDS, 40);
    let mut history = History {
        commands,
        at_index: Vec::new(),
    };
    let mut snapshot = None;
    let mut next = 0usize;
    let mut index = 0u64;
    while next < history.commands.len() {
        index += 1;
        let command = (!index.is_multiple_of(NOOP_EVERY)).then(|| {
            next += 1;
            next - 1
        });
        let payload = command.map_or_else(Vec::new, |n| encode(index, n));
        let mut batch = LogBatch::new();
        batch
            .append(
                LOG,
                &[EntryRef {
                    index,
                    term: 1 + index / 1000,
                    payload: &payload,
                }],
            )
            .unwrap();
        batch.set_hard_state(
            LOG,
            HardState {
                term: 1 + index / 1000,
                vote: 1,
                commit: index,
            },
        );
        wal.write(batch).unwrap();
        match command {
            Some(n) => {
                let _ = engine.apply(LOG, index, now_of(index), &history.commands[n]);
            }
            None => engine.note_applied(LOG, index),
        }
        history.at_index.push(command);
        if index == SNAPSHOT_AT {
            snapshot = Some(snapshot_all_at(
                &engine,
                snap_dir,
                WriteOptions::default(),
                now_of(index),
            ));
        }
        if index.is_multiple_of(200) {
            // The raft log is compacted behind the engine: segments go to the archive.
            wal.compact(LOG, index - 100).unwrap();
        }
    }
    (history, snapshot.unwrap())
}

fn restore(
    info: &SnapshotInfo,
    log: &ArchivedStream,
    target: Target,
    history: &History,
) -> Result<(Engine, tempfile::TempDir, pitr::Replayed), Error> {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::config(dir.path())).unwrap();
    let reader = SnapshotReader::open(&info.path).unwrap();
    install(&engine, &reader, |_| {}).unwrap();
    let decode = history.decode();
    let replayed = pitr::replay(&engine, &info.header, log, target, &decode)?;
    Ok((engine, dir, replayed))
}

/// A recorded history with its snapshot and the archived stream after it.
struct Fixture {
    history: History,
    info: SnapshotInfo,
    log: ArchivedStream,
    archived_segments: usize,
    _dirs: [tempfile::TempDir; 4],
}

fn fixture() -> Fixture {
    let dirs = [(); 4].map(|_| tempfile::tempdir().unwrap());
    let [wal_dir, archive, engine_dir, snap_dir] = &dirs;
    let (history, info) = record_history(
        wal_dir.path(),
        archive.path(),
        engine_dir.path(),
        snap_dir.path(),
    );
    let segments = [archive.path().to_path_buf(), wal_dir.path().to_path_buf()];
    // From the snapshot's own index: its entry's time bounds a time target.
    let log = ArchivedStream::scan(&segments, LOG, SNAPSHOT_AT - 1).unwrap();
    let archived_segments = std::fs::read_dir(archive.path()).unwrap().count();
    Fixture {
        history,
        info,
        log,
        archived_segments,
        _dirs: dirs,
    }
}

#[test]
fn restore_to_an_index_and_to_a_time_equals_the_model_there() {
    let fx = fixture();
    let (history, info, log, archived_segments) =
        (&fx.history, &fx.info, &fx.log, fx.archived_segments);
    assert_eq!(info.header.index, SNAPSHOT_AT);
    assert!(
        archived_segments >= 3,
        "only {archived_segments} archived segments"
    );
    let last = history.at_index.len() as u64;
    let all: Vec<u16> = (0..4096).collect();

    for target_index in [SNAPSHOT_AT, SNAPSHOT_AT + 1, 1234, 2000, last] {
        let (engine, _dir, replayed) =
            restore(info, log, Target::Index(target_index), history).unwrap();
        assert_eq!(replayed.last_index, target_index);
        let term = if target_index == SNAPSHOT_AT {
            info.header.term
        } else {
            1 + target_index / 1000
        };
        assert_eq!(replayed.last_term, term);
        assert_eq!(engine.applied_index(LOG), target_index);
        assert_matches(&engine, &history.model_at(target_index), &all);
    }

    // Half a second after entry 1500's time: the state at 1500, whatever the
    // entries after it hold.
    let (engine, _dir, replayed) =
        restore(info, log, Target::TimeMs(now_of(1500) + 500), history).unwrap();
    assert_eq!(replayed.last_index, 1500);
    assert_matches(&engine, &history.model_at(1500), &all);
}

#[test]
fn targets_the_archive_cannot_reach_are_refused() {
    let fx = fixture();
    let (history, info, log) = (&fx.history, &fx.info, &fx.log);
    let last = history.at_index.len() as u64;
    let refusals = [
        (Target::Index(last + 1), "past what the archive holds"),
        (Target::Index(SNAPSHOT_AT - 1), "before the snapshot"),
        (Target::TimeMs(now_of(last) + 1), "no command stamped after"),
        (
            Target::TimeMs(now_of(SNAPSHOT_AT - 1)),
            "before the snapshot's state",
        ),
    ];
    for (target, expected) in refusals {
        let Err(Error::Refused(message)) = restore(info, log, target, history).map(|_| ()) else {
            panic!("{target:?} was not refused");
        };
        assert!(message.contains(expected), "{target:?}: {message}");
    }
}
