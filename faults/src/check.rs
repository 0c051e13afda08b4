//! The register checker: each key's history must be linearizable against a
//! register with Aerospike's generations (a write sets the value and adds
//! one to the generation; a compare-and-set does so only at the expected
//! generation). Checked per key with `porcupine-rs`, each search bounded in
//! time: a search that runs out says "unknown", never hangs.

use std::collections::BTreeMap;
use std::time::Duration;

use porcupine_rs::{CheckResult, Model, Operation};
use serde::Serialize;

use crate::register::{Call, Op, Outcome, Version};

/// One operation as the model sees it.
#[derive(Debug, Clone)]
pub struct RegOp {
    call: Call,
    outcome: Outcome,
}

/// A register with generations.
#[derive(Debug, Clone, Copy)]
pub struct Register;

fn generation(state: &Version) -> u32 {
    state.map_or(0, |(_, generation)| generation)
}

impl Model for Register {
    type State = Version;
    type Op = RegOp;
    type Metadata = ();

    fn init() -> Version {
        None
    }

    fn step(state: &Version, op: &RegOp) -> (bool, Version) {
        let next = |value: i64| Some((value, generation(state) + 1));
        match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Ok { read }) => (read == state, *state),
            // A write that may not have run is linearized last if it did not.
            (Call::Write { value }, _) => (true, next(*value)),
            (Call::Cas { expected, value }, Outcome::Ok { .. }) => {
                (generation(state) == *expected, next(*value))
            }
            (Call::Cas { expected, .. }, Outcome::CasFailed) => {
                (generation(state) != *expected, *state)
            }
            (Call::Cas { expected, value }, _) if generation(state) == *expected => {
                (true, next(*value))
            }
            _ => (true, *state),
        }
    }
}

/// One key's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Linearizable,
    Violation,
    Unknown,
}

/// The operations the model needs, as porcupine takes them: definite
/// failures and reads without an answer did nothing and are left out; an
/// operation that may have run completes at `end_us` (any time after its
/// invocation).
fn operations(ops: &[&Op], end_us: i64) -> Vec<Operation<Register>> {
    ops.iter()
        .filter(|op| {
            !matches!(
                (&op.call, &op.outcome),
                (_, Outcome::Failed { .. }) | (Call::Read, Outcome::Unknown { .. })
            )
        })
        .map(|op| Operation {
            client_id: Some(op.client),
            call_time: op.invoke_us,
            return_time: match op.outcome {
                Outcome::Unknown { .. } => end_us,
                _ => op.complete_us,
            },
            op: RegOp {
                call: op.call.clone(),
                outcome: op.outcome.clone(),
            },
            metadata: None,
        })
        .collect()
}

/// Checks every key's history, each search bounded by `timeout_per_key`
/// and all of them by `total` (keys left when it is spent are unknown);
/// returns the verdict per key.
pub fn check(history: &[Op], timeout_per_key: Duration, total: Duration) -> BTreeMap<i64, Verdict> {
    let deadline = std::time::Instant::now() + total;
    let end_us = history.iter().map(|op| op.complete_us).max().unwrap_or(0) + 1;
    let mut by_key: BTreeMap<i64, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let verdict = match porcupine_rs::check_operations_timeout(
                &operations(&ops, end_us),
                timeout_per_key.min(left).max(Duration::from_millis(1)),
            ) {
                CheckResult::Ok => Verdict::Linearizable,
                CheckResult::Illegal => Verdict::Violation,
                CheckResult::Unknown => Verdict::Unknown,
            };
            (key, verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, call: Call, outcome: Outcome, invoke_us: i64, complete_us: i64) -> Op {
        Op {
            client,
            key: 1,
            call,
            outcome,
            invoke_us,
            complete_us,
        }
    }

    fn ok(read: Version) -> Outcome {
        Outcome::Ok { read }
    }

    fn verdict(history: &[Op]) -> Verdict {
        check(history, Duration::from_secs(5), Duration::from_secs(10))[&1]
    }

    #[test]
    fn reads_must_see_the_latest_write_and_generations_count_writes() {
        let write = |c, v, a, b| op(c, Call::Write { value: v }, ok(None), a, b);
        let read = |c, r, a, b| op(c, Call::Read, ok(r), a, b);
        let good = [
            write(0, 10, 0, 10),
            read(1, Some((10, 1)), 20, 30),
            write(0, 11, 40, 50),
            read(1, Some((11, 2)), 60, 70),
        ];
        assert_eq!(verdict(&good), Verdict::Linearizable);
        let stale = [
            write(0, 10, 0, 10),
            write(0, 11, 20, 30),
            read(1, Some((10, 1)), 40, 50),
        ];
        assert_eq!(verdict(&stale), Verdict::Violation, "a stale read");
        let lost = [write(0, 10, 0, 10), read(1, None, 20, 30)];
        assert_eq!(
            verdict(&lost),
            Verdict::Violation,
            "an acknowledged write lost"
        );
        let wrong_generation = [write(0, 10, 0, 10), read(1, Some((10, 2)), 20, 30)];
        assert_eq!(verdict(&wrong_generation), Verdict::Violation);
    }

    #[test]
    fn in_doubt_writes_may_or_may_not_have_run_and_cas_obeys_generations() {
        let unknown = || Outcome::Unknown {
            error: "timeout".into(),
        };
        let maybe = [
            op(0, Call::Write { value: 10 }, ok(None), 0, 10),
            op(0, Call::Write { value: 11 }, unknown(), 20, 30),
            op(1, Call::Read, ok(Some((10, 1))), 40, 50),
        ];
        assert_eq!(verdict(&maybe), Verdict::Linearizable, "it did not run");
        let ran = [
            op(0, Call::Write { value: 10 }, ok(None), 0, 10),
            op(0, Call::Write { value: 11 }, unknown(), 20, 30),
            op(1, Call::Read, ok(Some((11, 2))), 40, 50),
        ];
        assert_eq!(verdict(&ran), Verdict::Linearizable, "it ran");
        let cas =
            |expected, value, outcome, a, b| op(0, Call::Cas { expected, value }, outcome, a, b);
        let good = [
            op(0, Call::Write { value: 10 }, ok(None), 0, 10),
            cas(1, 12, ok(None), 20, 30),
            cas(1, 13, Outcome::CasFailed, 40, 50),
            op(1, Call::Read, ok(Some((12, 2))), 60, 70),
        ];
        assert_eq!(verdict(&good), Verdict::Linearizable);
        let double = [
            op(0, Call::Write { value: 10 }, ok(None), 0, 10),
            cas(1, 12, ok(None), 20, 30),
            cas(1, 13, ok(None), 40, 50),
        ];
        assert_eq!(
            verdict(&double),
            Verdict::Violation,
            "two CAS at one generation"
        );
        let refused = [
            op(
                0,
                Call::Write { value: 10 },
                Outcome::Failed { code: "x".into() },
                0,
                10,
            ),
            op(1, Call::Read, ok(None), 20, 30),
        ];
        assert_eq!(
            verdict(&refused),
            Verdict::Linearizable,
            "a definite failure did nothing"
        );
    }
}
