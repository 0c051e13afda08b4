//! Property test: random appends (with conflicting overwrites), hard-state
//! saves, compactions and reopens, against a plain in-memory model. After each
//! operation and each reopen the log must equal the model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aerie_wal::{HardState, IoBackend, LogBatch, Wal};
use common::{append, backends, payload, small_config};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Action {
    /// Append `count` entries starting `back` entries before the end (0 = at the end).
    Append {
        stream: u64,
        back: u64,
        count: u64,
    },
    HardState {
        stream: u64,
        commit: u64,
    },
    /// Compact to first + `ahead` (may pass the end).
    Compact {
        stream: u64,
        ahead: u64,
    },
    /// Reset to `last + 1 + shift - 20` (at least 1): every entry dropped.
    Reset {
        stream: u64,
        shift: u64,
    },
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..3u64, 0..4u64, 1..40u64).prop_map(|(stream, back, count)| Action::Append { stream, back, count }),
        1 => (0..3u64, 0..1000u64).prop_map(|(stream, commit)| Action::HardState { stream, commit }),
        1 => (0..3u64, 0..60u64).prop_map(|(stream, ahead)| Action::Compact { stream, ahead }),
        1 => (0..3u64, 0..40u64).prop_map(|(stream, shift)| Action::Reset { stream, shift }),
        1 => Just(Action::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct ModelStream {
    first: u64,
    /// index -> term
    entries: BTreeMap<u64, u64>,
    hard_state: HardState,
}

impl Default for ModelStream {
    fn default() -> Self {
        Self {
            first: 1,
            entries: BTreeMap::new(),
            hard_state: HardState::default(),
        }
    }
}

impl ModelStream {
    fn last(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.first - 1)
    }
}

fn check(wal: &Wal, model: &BTreeMap<u64, ModelStream>) {
    for (&stream, expected) in model {
        assert_eq!(
            wal.first_index(stream),
            expected.first,
            "first index of {stream}"
        );
        assert_eq!(
            wal.last_index(stream),
            expected.last(),
            "last index of {stream}"
        );
        assert_eq!(
            wal.hard_state(stream),
            expected.hard_state,
            "hard state of {stream}"
        );
        let entries = wal
            .entries(stream, expected.first, expected.last() + 1, u64::MAX)
            .unwrap();
        let got: Vec<(u64, u64)> = entries.iter().map(|e| (e.index, e.term)).collect();
        let want: Vec<(u64, u64)> = expected.entries.iter().map(|(&i, &t)| (i, t)).collect();
        assert_eq!(got, want, "entries of {stream}");
        for entry in entries {
            assert_eq!(entry.payload, payload(stream, entry.index, entry.term));
        }
    }
}

fn run(actions: &[Action], backend: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), backend);
    let mut wal = Wal::open(config.clone()).unwrap();
    let mut model: BTreeMap<u64, ModelStream> = BTreeMap::new();
    let mut term = 1;
    for action in actions {
        match *action {
            Action::Append {
                stream,
                back,
                count,
            } => {
                let m = model.entry(stream).or_default();
                let start = m.last().saturating_sub(back).max(m.first) + 1;
                let start = start.min(m.last() + 1);
                if back > 0 {
                    term += 1; // an overwrite comes from a newer leader
                }
                append(&wal, stream, start, count, term).unwrap();
                m.entries.split_off(&start);
                for index in start..start + count {
                    m.entries.insert(index, term);
                }
            }
            Action::HardState { stream, commit } => {
                let hard_state = HardState {
                    term,
                    vote: stream + 1,
                    commit,
                };
                let mut batch = LogBatch::new();
                batch.set_hard_state(stream, hard_state);
                wal.write(batch).unwrap();
                model.entry(stream).or_default().hard_state = hard_state;
            }
            Action::Compact { stream, ahead } => {
                let m = model.entry(stream).or_default();
                let index = m.first + ahead;
                wal.compact(stream, index).unwrap();
                if index > m.first {
                    m.entries = m.entries.split_off(&index);
                    m.first = index;
                }
            }
            Action::Reset { stream, shift } => {
                let m = model.entry(stream).or_default();
                let index = (m.last() + 1 + shift).saturating_sub(20).max(1);
                let mut batch = LogBatch::new();
                batch.reset(stream, index);
                wal.write(batch).unwrap();
                m.entries.clear();
                m.first = index;
            }
            Action::Reopen => {
                drop(wal);
                wal = Wal::open(config.clone()).unwrap();
                assert!(wal.recovery_report().torn_tail.is_none());
            }
        }
        check(&wal, &model);
    }
    drop(wal);
    let wal = Wal::open(config).unwrap();
    check(&wal, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_equals_model_across_reopens(actions in proptest::collection::vec(action(), 1..120)) {
        for backend in backends() {
            run(&actions, backend);
        }
    }
}
