//! Aerospike's write semantics as a pure function: the visible record before
//! the command, the command and `now_ms` in; the effect and the reply out. No
//! I/O, so every replica that applies the same command to the same record
//! reaches the same result, and every rule is unit-tested here.

use crate::error::{Error, Result};
use crate::format::{MAX_BIN_NAME_BYTES, MAX_SET_NAME_BYTES, MAX_TTL_SECS};
use crate::types::{
    Bin, ExistsPolicy, GenerationPolicy, Op, OpResult, Outcome, Record, Ttl, Value, Write,
    secs_since_2010,
};

/// What the command does to the stored record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Nothing to store (a read-only operate, or deleting bins of a missing
    /// record).
    Nothing,
    /// Store this new version.
    Write(Record),
    /// Delete the record (a tombstone).
    Delete,
}

/// Next generation after a write: wraps at u16 and skips 0.
pub fn next_generation(generation: u16) -> u16 {
    match generation.wrapping_add(1) {
        0 => 1,
        g => g,
    }
}

/// Void time for a TTL of `ttl_secs` at `now_ms` (0 TTL = never expires).
pub fn void_time_after(ttl_secs: u32, now_ms: u64) -> u32 {
    if ttl_secs == 0 {
        return 0;
    }
    let at = secs_since_2010(now_ms).saturating_add(u64::from(ttl_secs));
    u32::try_from(at).unwrap_or(u32::MAX).max(1)
}

fn check_generation(policy: GenerationPolicy, current: u16) -> Result<()> {
    let ok = match policy {
        GenerationPolicy::None => true,
        GenerationPolicy::Equal(g) => g == current,
        GenerationPolicy::Greater(g) => g > current,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::GenerationMismatch)
    }
}

fn check_bin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_BIN_NAME_BYTES {
        return Err(Error::BinNameTooLong(name.len()));
    }
    Ok(())
}

fn is_replace(policy: ExistsPolicy) -> bool {
    matches!(policy, ExistsPolicy::Replace | ExistsPolicy::ReplaceOnly)
}

/// Rejects what Aerospike rejects before looking at the record.
fn validate(write: &Write, ops: &[Op]) -> Result<()> {
    if write.set.len() > MAX_SET_NAME_BYTES {
        return Err(Error::Parameter(format!(
            "set name longer than {MAX_SET_NAME_BYTES} bytes"
        )));
    }
    if let Ttl::Seconds(s) = write.ttl
        && s > MAX_TTL_SECS
    {
        return Err(Error::Parameter(format!(
            "ttl {s} s exceeds {MAX_TTL_SECS}"
        )));
    }
    if ops.is_empty() {
        return Err(Error::Parameter("no ops".into()));
    }
    for op in ops {
        match op {
            Op::Read(name) => {
                if name.len() > MAX_BIN_NAME_BYTES {
                    return Err(Error::BinNameTooLong(name.len()));
                }
            }
            Op::Write(bin) => check_bin_name(&bin.name)?,
            Op::Incr(bin) => {
                check_bin_name(&bin.name)?;
                if !matches!(bin.value, Value::Int(_) | Value::Float(_)) {
                    return Err(Error::Parameter("increment by a non-numeric value".into()));
                }
            }
            Op::Append(bin) | Op::Prepend(bin) => {
                check_bin_name(&bin.name)?;
                if !matches!(bin.value, Value::String(_) | Value::Blob { .. }) {
                    return Err(Error::Parameter("append of a non-string, non-blob".into()));
                }
            }
            Op::ReadAll | Op::Touch | Op::DeleteRecord => {}
        }
        let modifies_in_place = matches!(
            op,
            Op::Touch | Op::Incr(_) | Op::Append(_) | Op::Prepend(_) | Op::DeleteRecord
        ) || matches!(
            op,
            Op::Write(Bin {
                value: Value::Nil,
                ..
            })
        );
        if is_replace(write.exists) && modifies_in_place {
            return Err(Error::Parameter(
                "replace policy with touch, incr, append, prepend or delete".into(),
            ));
        }
    }
    Ok(())
}

/// Applies a put/touch/operate (as an op list) to the visible record.
pub fn execute(
    write: &Write,
    ops: &[Op],
    existing: Option<&Record>,
    now_ms: u64,
    default_ttl_secs: u32,
) -> Result<(Effect, Outcome)> {
    validate(write, ops)?;
    if let (Some(record), Some(sent)) = (existing, &write.key)
        && record.key.as_ref().is_some_and(|stored| stored != sent)
    {
        return Err(Error::KeyMismatch);
    }
    if !ops.iter().any(Op::writes) {
        return read_only(ops, existing);
    }
    match existing {
        None => {
            if matches!(
                write.exists,
                ExistsPolicy::UpdateOnly | ExistsPolicy::ReplaceOnly
            ) || ops.contains(&Op::Touch)
            {
                return Err(Error::NotFound);
            }
        }
        Some(record) => {
            if write.exists == ExistsPolicy::CreateOnly {
                return Err(Error::RecordExists);
            }
            check_generation(write.generation, record.generation)?;
        }
    }
    let mut bins = match existing {
        Some(record) if !is_replace(write.exists) => record.bins.clone(),
        _ => Vec::new(),
    };
    let results = run_ops(ops, &mut bins)?;
    if bins.is_empty() {
        let effect = if existing.is_some() {
            Effect::Delete
        } else {
            Effect::Nothing
        };
        return Ok((effect, outcome(0, 0, results)));
    }
    let ttl_secs = match write.ttl {
        Ttl::NamespaceDefault | Ttl::Seconds(0) => Some(default_ttl_secs),
        Ttl::NeverExpire => Some(0),
        Ttl::KeepCurrent => existing.is_none().then_some(default_ttl_secs),
        Ttl::Seconds(s) => Some(s),
    };
    let void_time = match (ttl_secs, existing) {
        (Some(secs), _) => void_time_after(secs, now_ms),
        (None, Some(record)) => record.void_time,
        (None, None) => 0,
    };
    let record = Record {
        digest: write.digest,
        set: existing.map_or_else(|| write.set.clone(), |r| r.set.clone()),
        key: existing
            .and_then(|r| r.key.clone())
            .or_else(|| write.key.clone()),
        bins,
        generation: existing.map_or(1, |r| next_generation(r.generation)),
        void_time,
        last_update_ms: now_ms,
    };
    let reply = outcome(record.generation, record.void_time, results);
    Ok((Effect::Write(record), reply))
}

fn outcome(generation: u16, void_time: u32, results: Vec<OpResult>) -> Outcome {
    Outcome {
        generation,
        void_time,
        results,
    }
}

fn read_only(ops: &[Op], existing: Option<&Record>) -> Result<(Effect, Outcome)> {
    let record = existing.ok_or(Error::NotFound)?;
    let mut bins = record.bins.clone();
    let results = run_ops(ops, &mut bins)?;
    Ok((
        Effect::Nothing,
        outcome(record.generation, record.void_time, results),
    ))
}

fn run_ops(ops: &[Op], bins: &mut Vec<Bin>) -> Result<Vec<OpResult>> {
    ops.iter().map(|op| run_op(op, bins)).collect()
}

fn run_op(op: &Op, bins: &mut Vec<Bin>) -> Result<OpResult> {
    let position = |bins: &[Bin], name: &str| bins.iter().position(|b| b.name == name);
    match op {
        Op::Read(name) => Ok(match position(bins, name) {
            Some(i) => OpResult::Value(bins[i].value.clone()),
            None => OpResult::None,
        }),
        Op::ReadAll => Ok(OpResult::Bins(bins.clone())),
        Op::Touch => Ok(OpResult::None),
        Op::DeleteRecord => {
            bins.clear();
            Ok(OpResult::None)
        }
        Op::Write(bin) => {
            let at = position(bins, &bin.name);
            match (at, &bin.value) {
                (Some(i), Value::Nil) => {
                    bins.remove(i);
                }
                (None, Value::Nil) => {}
                (Some(i), value) => bins[i].value = value.clone(),
                (None, _) => bins.push(bin.clone()),
            }
            Ok(OpResult::None)
        }
        Op::Incr(bin) | Op::Append(bin) | Op::Prepend(bin) => {
            match position(bins, &bin.name) {
                Some(i) => bins[i].value = combine(op, &bins[i].value, &bin.value)?,
                None => bins.push(bin.clone()),
            }
            Ok(OpResult::None)
        }
    }
}

/// Increment, append or prepend `delta` onto `current`.
fn combine(op: &Op, current: &Value, delta: &Value) -> Result<Value> {
    let joined = |a: &[u8], b: &[u8]| [a, b].concat();
    let (first, second) = match op {
        Op::Prepend(_) => (delta, current),
        _ => (current, delta),
    };
    match (op, first, second) {
        (Op::Incr(_), Value::Int(a), Value::Int(b)) => Ok(Value::Int(a.wrapping_add(*b))),
        (Op::Incr(_), Value::Float(a), Value::Float(b)) => Ok(Value::Float(a + b)),
        (Op::Append(_) | Op::Prepend(_), Value::String(a), Value::String(b)) => {
            Ok(Value::String(joined(a, b)))
        }
        (
            Op::Append(_) | Op::Prepend(_),
            Value::Blob {
                particle: p,
                bytes: a,
            },
            Value::Blob {
                particle: q,
                bytes: b,
            },
        ) if p == q => Ok(Value::Blob {
            particle: *p,
            bytes: joined(a, b),
        }),
        _ => Err(Error::BinTypeMismatch),
    }
}

/// Applies a delete to the visible record's generation.
pub fn execute_delete(policy: GenerationPolicy, existing_generation: Option<u16>) -> Result<()> {
    let generation = existing_generation.ok_or(Error::NotFound)?;
    check_generation(policy, generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Key;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn w() -> Write {
        Write::new("test", [7; 20])
    }

    fn rec(bins: Vec<Bin>, generation: u16) -> Record {
        Record {
            digest: [7; 20],
            set: "s".into(),
            key: None,
            bins,
            generation,
            void_time: 500,
            last_update_ms: 1,
        }
    }

    fn int(name: &str, i: i64) -> Bin {
        Bin::new(name, Value::Int(i))
    }

    fn put_ops(bins: &[Bin]) -> Vec<Op> {
        bins.iter().cloned().map(Op::Write).collect()
    }

    fn written(r: Result<(Effect, Outcome)>) -> Record {
        match r {
            Ok((Effect::Write(record), _)) => record,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn err(r: Result<(Effect, Outcome)>) -> Error {
        match r {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn create_starts_at_generation_one_and_update_merges() {
        let r = written(execute(&w(), &put_ops(&[int("a", 1)]), None, NOW_MS, 0));
        assert_eq!(r.generation, 1);
        assert_eq!(r.last_update_ms, NOW_MS);
        let r2 = written(execute(&w(), &put_ops(&[int("b", 2)]), Some(&r), NOW_MS, 0));
        assert_eq!(r2.generation, 2);
        assert_eq!(r2.bins, vec![int("a", 1), int("b", 2)]);
    }

    #[test]
    fn generation_wraps_and_skips_zero() {
        assert_eq!(next_generation(u16::MAX), 1);
        assert_eq!(next_generation(1), 2);
        let r = written(execute(
            &w(),
            &put_ops(&[int("a", 1)]),
            Some(&rec(vec![int("a", 0)], u16::MAX)),
            NOW_MS,
            0,
        ));
        assert_eq!(r.generation, 1);
    }

    #[test]
    fn exists_policies() {
        let existing = rec(vec![int("a", 1), int("b", 1)], 3);
        let ops = put_ops(&[int("b", 2)]);
        let mut write = w();
        write.exists = ExistsPolicy::CreateOnly;
        assert!(matches!(
            err(execute(&write, &ops, Some(&existing), NOW_MS, 0)),
            Error::RecordExists
        ));
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 0)).bins,
            vec![int("b", 2)]
        );
        write.exists = ExistsPolicy::UpdateOnly;
        assert!(matches!(
            err(execute(&write, &ops, None, NOW_MS, 0)),
            Error::NotFound
        ));
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 0))
                .bins
                .len(),
            2
        );
        write.exists = ExistsPolicy::ReplaceOnly;
        assert!(matches!(
            err(execute(&write, &ops, None, NOW_MS, 0)),
            Error::NotFound
        ));
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 0)).bins,
            vec![int("b", 2)]
        );
        write.exists = ExistsPolicy::Replace;
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 0)).bins,
            vec![int("b", 2)]
        );
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 0)).generation,
            1
        );
    }

    #[test]
    fn generation_policies() {
        let existing = rec(vec![int("a", 1)], 5);
        let ops = put_ops(&[int("a", 2)]);
        let mut write = w();
        write.generation = GenerationPolicy::Equal(4);
        assert!(matches!(
            err(execute(&write, &ops, Some(&existing), NOW_MS, 0)),
            Error::GenerationMismatch
        ));
        write.generation = GenerationPolicy::Equal(5);
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 0)).generation,
            6
        );
        write.generation = GenerationPolicy::Greater(5);
        assert!(matches!(
            err(execute(&write, &ops, Some(&existing), NOW_MS, 0)),
            Error::GenerationMismatch
        ));
        write.generation = GenerationPolicy::Greater(6);
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 0)).generation,
            6
        );
        // A missing record has no generation to check: the write creates it.
        write.generation = GenerationPolicy::Equal(9);
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 0)).generation,
            1
        );
        assert!(matches!(
            execute_delete(GenerationPolicy::Equal(4), Some(5)),
            Err(Error::GenerationMismatch)
        ));
        assert!(execute_delete(GenerationPolicy::Equal(5), Some(5)).is_ok());
        assert!(matches!(
            execute_delete(GenerationPolicy::None, None),
            Err(Error::NotFound)
        ));
    }

    #[test]
    fn ttl_rules() {
        let now_2010 = secs_since_2010(NOW_MS) as u32;
        let existing = rec(vec![int("a", 1)], 1);
        let ops = put_ops(&[int("a", 2)]);
        let mut write = w();
        assert_eq!(written(execute(&write, &ops, None, NOW_MS, 0)).void_time, 0);
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 100)).void_time,
            now_2010 + 100
        );
        write.ttl = Ttl::NeverExpire;
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 100)).void_time,
            0
        );
        write.ttl = Ttl::KeepCurrent;
        assert_eq!(
            written(execute(&write, &ops, Some(&existing), NOW_MS, 100)).void_time,
            500
        );
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 100)).void_time,
            now_2010 + 100
        );
        write.ttl = Ttl::Seconds(60);
        assert_eq!(
            written(execute(&write, &ops, None, NOW_MS, 100)).void_time,
            now_2010 + 60
        );
        write.ttl = Ttl::Seconds(MAX_TTL_SECS + 1);
        assert!(matches!(
            err(execute(&write, &ops, None, NOW_MS, 0)),
            Error::Parameter(_)
        ));
    }

    #[test]
    fn touch_needs_a_record_and_bumps_generation() {
        let mut write = w();
        write.ttl = Ttl::Seconds(10);
        assert!(matches!(
            err(execute(&write, &[Op::Touch], None, NOW_MS, 0)),
            Error::NotFound
        ));
        let existing = rec(vec![int("a", 1)], 1);
        let r = written(execute(&write, &[Op::Touch], Some(&existing), NOW_MS, 0));
        assert_eq!(r.generation, 2);
        assert_eq!(r.bins, existing.bins);
        assert_eq!(r.void_time, secs_since_2010(NOW_MS) as u32 + 10);
        // A write list with a touch never creates a record.
        let ops = vec![Op::Write(int("a", 1)), Op::Touch];
        assert!(matches!(
            err(execute(&w(), &ops, None, NOW_MS, 0)),
            Error::NotFound
        ));
    }

    #[test]
    fn operate_reads_see_earlier_writes_and_results_are_positional() {
        let existing = rec(vec![int("n", 5)], 1);
        let ops = vec![
            Op::Incr(int("n", 1)),
            Op::Read("n".into()),
            Op::Write(Bin::new("s", Value::string("x"))),
            Op::Read("s".into()),
            Op::Read("missing".into()),
            Op::ReadAll,
        ];
        let (effect, out) = execute(&w(), &ops, Some(&existing), NOW_MS, 0).unwrap();
        assert_eq!(out.results[0], OpResult::None);
        assert_eq!(out.results[1], OpResult::Value(Value::Int(6)));
        assert_eq!(out.results[2], OpResult::None);
        assert_eq!(out.results[3], OpResult::Value(Value::string("x")));
        assert_eq!(out.results[4], OpResult::None);
        assert_eq!(
            out.results[5],
            OpResult::Bins(vec![int("n", 6), Bin::new("s", Value::string("x"))])
        );
        assert!(matches!(effect, Effect::Write(r) if r.generation == 2));
    }

    #[test]
    fn incr_append_prepend_types() {
        let existing = rec(
            vec![
                int("i", 1),
                Bin::new("f", Value::Float(1.5)),
                Bin::new("s", Value::string("mid")),
                Bin::new(
                    "b",
                    Value::Blob {
                        particle: 4,
                        bytes: vec![2],
                    },
                ),
            ],
            1,
        );
        let ops = vec![
            Op::Incr(Bin::new("f", Value::Float(1.0))),
            Op::Append(Bin::new("s", Value::string(">"))),
            Op::Prepend(Bin::new("s", Value::string("<"))),
            Op::Append(Bin::new(
                "b",
                Value::Blob {
                    particle: 4,
                    bytes: vec![3],
                },
            )),
            Op::Incr(int("new", 7)),
            Op::Incr(int("i", i64::MAX)),
        ];
        let r = written(execute(&w(), &ops, Some(&existing), NOW_MS, 0));
        assert_eq!(r.bins[0], int("i", i64::MIN)); // wraps like Aerospike's int64 add
        assert_eq!(r.bins[1].value, Value::Float(2.5));
        assert_eq!(r.bins[2].value, Value::string("<mid>"));
        assert_eq!(
            r.bins[3].value,
            Value::Blob {
                particle: 4,
                bytes: vec![2, 3]
            }
        );
        assert_eq!(r.bins[4], int("new", 7));
        let wrong = [
            Op::Incr(int("s", 1)),
            Op::Incr(Bin::new("i", Value::Float(1.0))),
            Op::Append(Bin::new("i", Value::string("x"))),
            Op::Append(Bin::new(
                "s",
                Value::Blob {
                    particle: 4,
                    bytes: vec![],
                },
            )),
            Op::Append(Bin::new(
                "b",
                Value::Blob {
                    particle: 9,
                    bytes: vec![],
                },
            )),
        ];
        for op in wrong {
            let e = err(execute(
                &w(),
                std::slice::from_ref(&op),
                Some(&existing),
                NOW_MS,
                0,
            ));
            assert!(matches!(e, Error::BinTypeMismatch), "{op:?}: {e:?}");
            assert_eq!(e.result_code(), 12);
        }
        let bad = [
            Op::Incr(Bin::new("i", Value::string("x"))),
            Op::Append(int("s", 1)),
        ];
        for op in bad {
            assert!(matches!(
                err(execute(&w(), &[op], Some(&existing), NOW_MS, 0)),
                Error::Parameter(_)
            ));
        }
    }

    #[test]
    fn replace_with_in_place_ops_is_a_parameter_error() {
        let mut write = w();
        write.exists = ExistsPolicy::Replace;
        let existing = rec(vec![int("a", 1)], 1);
        for op in [
            Op::Touch,
            Op::Incr(int("a", 1)),
            Op::Append(Bin::new("a", Value::string("x"))),
            Op::Prepend(Bin::new("a", Value::string("x"))),
            Op::DeleteRecord,
            Op::Write(Bin::new("a", Value::Nil)),
        ] {
            let e = err(execute(&write, &[op], Some(&existing), NOW_MS, 0));
            assert_eq!(e.result_code(), 4);
        }
    }

    #[test]
    fn removing_every_bin_deletes_the_record() {
        let existing = rec(vec![int("a", 1)], 1);
        let (effect, out) = execute(
            &w(),
            &[Op::Write(Bin::new("a", Value::Nil))],
            Some(&existing),
            NOW_MS,
            0,
        )
        .unwrap();
        assert_eq!(effect, Effect::Delete);
        assert_eq!(out.generation, 0);
        let (effect, _) = execute(&w(), &[Op::DeleteRecord], Some(&existing), NOW_MS, 0).unwrap();
        assert_eq!(effect, Effect::Delete);
        // Delete then write again in the same operate: the record survives.
        let ops = vec![Op::DeleteRecord, Op::Write(int("b", 2))];
        let r = written(execute(&w(), &ops, Some(&existing), NOW_MS, 0));
        assert_eq!(r.bins, vec![int("b", 2)]);
        // Deleting bins of a missing record does nothing.
        let (effect, _) = execute(
            &w(),
            &[Op::Write(Bin::new("a", Value::Nil))],
            None,
            NOW_MS,
            0,
        )
        .unwrap();
        assert_eq!(effect, Effect::Nothing);
    }

    #[test]
    fn read_only_operate_and_names() {
        assert!(matches!(
            err(execute(&w(), &[Op::Read("a".into())], None, NOW_MS, 0)),
            Error::NotFound
        ));
        let existing = rec(vec![int("a", 1)], 4);
        let (effect, out) =
            execute(&w(), &[Op::Read("a".into())], Some(&existing), NOW_MS, 0).unwrap();
        assert_eq!(effect, Effect::Nothing);
        assert_eq!(out.generation, 4);
        let e = err(execute(
            &w(),
            &put_ops(&[int("sixteen_bytes_xx", 1)]),
            None,
            NOW_MS,
            0,
        ));
        assert!(matches!(e, Error::BinNameTooLong(16)));
        assert_eq!(e.result_code(), 21);
        assert!(matches!(
            err(execute(&w(), &[], None, NOW_MS, 0)),
            Error::Parameter(_)
        ));
        let mut write = w();
        write.set = "x".repeat(64);
        assert!(matches!(
            err(execute(&write, &put_ops(&[int("a", 1)]), None, NOW_MS, 0)),
            Error::Parameter(_)
        ));
    }

    #[test]
    fn stored_key_must_match() {
        let mut existing = rec(vec![int("a", 1)], 1);
        existing.key = Some(Key::Int(1));
        let mut write = w();
        write.key = Some(Key::Int(2));
        let e = err(execute(
            &write,
            &put_ops(&[int("a", 2)]),
            Some(&existing),
            NOW_MS,
            0,
        ));
        assert_eq!(e.result_code(), 19);
        write.key = Some(Key::Int(1));
        assert_eq!(
            written(execute(
                &write,
                &put_ops(&[int("a", 2)]),
                Some(&existing),
                NOW_MS,
                0
            ))
            .key,
            Some(Key::Int(1))
        );
        write.key = Some(Key::String(b"k".to_vec()));
        assert_eq!(
            written(execute(&write, &put_ops(&[int("a", 2)]), None, NOW_MS, 0)).key,
            Some(Key::String(b"k".to_vec()))
        );
    }

    #[test]
    fn result_codes() {
        let codes = [
            (Error::NotFound, 2),
            (Error::RecordExists, 5),
            (Error::GenerationMismatch, 3),
            (Error::BinTypeMismatch, 12),
            (
                Error::RecordTooBig {
                    size_bytes: 1,
                    max_bytes: 0,
                },
                13,
            ),
            (Error::Parameter(String::new()), 4),
            (Error::StopWrites(String::new()), 8),
            (Error::NamespaceNotFound(String::new()), 20),
            (Error::BinNameTooLong(16), 21),
        ];
        for (e, code) in codes {
            assert_eq!(e.result_code(), code, "{e:?}");
            assert!(e.is_record_error());
        }
    }
}
