#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property test: the engine against the `BTreeMap` model, with TTLs and
//! advancing time, defrag, expiry reclaim, checkpoints, crashes (drop without
//! a clean shutdown, sometimes also losing `index.ckpt`) and reopens. After
//! each reopen the engine must equal the model as of `durable_applied_index`,
//! and replaying the rest of the log must give the model's final state.

mod common;

use aerie_engine::model::Model;
use aerie_engine::{
    Bin, Command, Engine, ExistsPolicy, GenerationPolicy, Op, Operate, Put, Ttl, Value, Write,
};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Apply(Command),
    AdvanceSecs(u64),
    Checkpoint,
    Defrag(u64),
    Reclaim,
    Crash,
    CrashLosingIndex,
    Reopen,
}

fn write_strategy() -> impl Strategy<Value = Write> {
    (
        0u32..10,
        0usize..5,
        prop_oneof![Just(None), (0u16..4).prop_map(Some)],
        0usize..4,
    )
        .prop_map(|(k, exists, generation, ttl)| {
            let mut w = Write::new(NS, digest(k));
            w.set = if k % 3 == 0 {
                "a".into()
            } else {
                String::new()
            };
            w.exists = [
                ExistsPolicy::Update,
                ExistsPolicy::Update,
                ExistsPolicy::UpdateOnly,
                ExistsPolicy::Replace,
                ExistsPolicy::CreateOnly,
            ][exists];
            w.generation = generation.map_or(GenerationPolicy::None, GenerationPolicy::Equal);
            w.ttl = [
                Ttl::NamespaceDefault,
                Ttl::Seconds(2),
                Ttl::KeepCurrent,
                Ttl::Seconds(5),
            ][ttl];
            w
        })
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (write_strategy(), 1usize..400, any::<u8>()).prop_map(|(write, len, b)| Command::Put(Put {
            write,
            bins: vec![Bin::new("v", Value::Blob { particle: 4, bytes: vec![b; len] }), Bin::new("n", Value::Int(1))],
        })),
        2 => (write_strategy(), -5i64..5).prop_map(|(write, d)| Command::Operate(Operate {
            write,
            ops: vec![Op::Incr(Bin::new("n", Value::Int(d))), Op::Append(Bin::new("s", Value::string("x"))), Op::Read("n".into())],
        })),
        1 => (0u32..10).prop_map(|k| delete(digest(k))),
        1 => write_strategy().prop_map(Command::Touch),
        1 => write_strategy().prop_map(|write| Command::Operate(Operate { write, ops: vec![Op::Write(Bin::new("v", Value::Nil)), Op::Write(Bin::new("n", Value::Nil)), Op::Write(Bin::new("s", Value::Nil))] })),
    ]
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop_oneof![
        20 => command_strategy().prop_map(Action::Apply),
        3 => (0u64..4).prop_map(Action::AdvanceSecs),
        2 => Just(Action::Checkpoint),
        2 => prop_oneof![Just(1_000u64), Just(u64::MAX)].prop_map(Action::Defrag),
        1 => Just(Action::Reclaim),
        1 => Just(Action::Crash),
        1 => Just(Action::CrashLosingIndex),
        1 => Just(Action::Reopen),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    engine: Option<Engine>,
    log: Vec<(u64, Command)>,
    model: Model,
    now_ms: u64,
}

impl Harness {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn apply(&mut self, cmd: Command) {
        let index = self.log.len() as u64 + 1;
        let got = self.engine().apply(1, index, self.now_ms, &cmd);
        let want = self.model.apply(self.now_ms, &cmd);
        match (&got, &want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{cmd:?}"),
            (Err(a), Err(b)) => assert_eq!(a.result_code(), b.result_code(), "{cmd:?}"),
            _ => panic!("engine {got:?} vs model {want:?} for {cmd:?}"),
        }
        self.log.push((self.now_ms, cmd));
    }

    fn reopen(&mut self, lose_index: bool) {
        if lose_index {
            let _ = std::fs::remove_file(self.dir.path().join(NS).join("index.ckpt"));
        }
        let engine = Engine::open(config(self.dir.path(), 4096)).unwrap();
        let durable = engine.durable_applied_index(1) as usize;
        let mut at_durable = Model::new(NS, 0);
        for (now_ms, cmd) in &self.log[..durable] {
            let _ = at_durable.apply(*now_ms, cmd);
        }
        assert_eq!(
            dump(&engine, self.now_ms),
            at_durable.visible(self.now_ms),
            "state at durable index {durable}"
        );
        // The WAL's job: replay every entry after the durable index exactly once.
        for (i, (now_ms, cmd)) in self.log.iter().enumerate().skip(durable) {
            let _ = engine.apply(1, i as u64 + 1, *now_ms, cmd);
        }
        assert_eq!(
            dump(&engine, self.now_ms),
            self.model.visible(self.now_ms),
            "state after replay"
        );
        self.engine = Some(engine);
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::Apply(cmd) => self.apply(cmd),
            Action::AdvanceSecs(s) => self.now_ms += s * 1000,
            Action::Checkpoint => {
                self.engine().checkpoint().unwrap();
            }
            Action::Defrag(max) => {
                self.engine().defrag_step(max).unwrap();
            }
            Action::Reclaim => {
                self.engine().reclaim_expired(self.now_ms, 100).unwrap();
            }
            Action::Crash | Action::CrashLosingIndex => {
                drop(self.engine.take());
                self.reopen(matches!(action, Action::CrashLosingIndex));
            }
            Action::Reopen => {
                self.engine.take().unwrap().close().unwrap();
                self.reopen(false);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model_across_crashes(actions in prop::collection::vec(action_strategy(), 1..150)) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(config(dir.path(), 4096)).unwrap();
        let mut h = Harness { dir, engine: Some(engine), log: Vec::new(), model: Model::new(NS, 0), now_ms: T0_MS };
        for action in actions {
            h.run(action);
        }
        assert_eq!(dump(h.engine(), h.now_ms), h.model.visible(h.now_ms));
        h.run(Action::Crash);
    }
}
