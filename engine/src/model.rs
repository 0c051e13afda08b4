//! A reference model of one namespace: a `BTreeMap` from digest to record,
//! applying commands with the same semantics function as the engine and no
//! storage at all. Property and crash tests compare the engine to it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::semantics::{self, Effect};
use crate::types::{Command, Digest, Op, Outcome, Record, is_expired, partition_of};

/// In-memory model of one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    namespace: String,
    default_ttl_secs: u32,
    records: BTreeMap<Digest, Record>,
}

impl Model {
    /// An empty model of namespace `namespace`.
    pub fn new(namespace: &str, default_ttl_secs: u32) -> Model {
        Model {
            namespace: namespace.to_string(),
            default_ttl_secs,
            records: BTreeMap::new(),
        }
    }

    /// Applies a command at `now_ms`.
    pub fn apply(&mut self, now_ms: u64, cmd: &Command) -> Result<Outcome> {
        if cmd.namespace() != self.namespace {
            return Err(Error::NamespaceNotFound(cmd.namespace().to_string()));
        }
        let (write, ops) = match cmd {
            Command::Put(put) => (
                &put.write,
                put.bins.iter().cloned().map(Op::Write).collect(),
            ),
            Command::Touch(write) => (write, vec![Op::Touch]),
            Command::Operate(operate) => (&operate.write, operate.ops.clone()),
            Command::Delete {
                digest, generation, ..
            } => {
                let visible = self.visible_record(digest, now_ms).map(|r| r.generation);
                semantics::execute_delete(*generation, visible)?;
                self.records.remove(digest);
                return Ok(empty());
            }
            Command::Truncate {
                set,
                before_ms,
                partitions,
                ..
            } => {
                let wanted = crate::namespace::valid_partitions(partitions)?;
                let before_ms = (*before_ms).min(now_ms);
                self.records.retain(|d, r| {
                    r.last_update_ms >= before_ms
                        || set.as_ref().is_some_and(|s| *s != r.set)
                        || !wanted.contains(&partition_of(d))
                });
                return Ok(empty());
            }
        };
        let existing = self.visible_record(&write.digest, now_ms).cloned();
        let (effect, outcome) = semantics::execute(
            write,
            &ops,
            existing.as_ref(),
            now_ms,
            self.default_ttl_secs,
        )?;
        match effect {
            Effect::Nothing => {}
            Effect::Delete => {
                self.records.remove(&write.digest);
            }
            Effect::Write(record) => {
                self.records.insert(write.digest, record);
            }
        }
        Ok(outcome)
    }

    fn visible_record(&self, digest: &Digest, now_ms: u64) -> Option<&Record> {
        self.records
            .get(digest)
            .filter(|r| !is_expired(r.void_time, now_ms))
    }

    /// Records visible at `now_ms`.
    pub fn visible(&self, now_ms: u64) -> BTreeMap<Digest, Record> {
        self.records
            .iter()
            .filter(|(_, r)| !is_expired(r.void_time, now_ms))
            .map(|(d, r)| (*d, r.clone()))
            .collect()
    }
}

fn empty() -> Outcome {
    Outcome {
        generation: 0,
        void_time: 0,
        results: Vec::new(),
    }
}
