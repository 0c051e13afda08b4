//! Between the wire (`aerie_protocol`) and the engine (`aerie_engine`):
//! values, keys, ops, policies, and errors to result codes.

use aerie_engine::{self as engine, Bin, ExistsPolicy, GenerationPolicy, Key, Ttl};
use aerie_protocol::particle::{BlobType, GeoJson, UserKey, Value};
use aerie_protocol::request::{self, RecordRequest};
use aerie_protocol::{Op, OpType, ResultCode};

/// A wire value as an engine value (`None`: a particle the engine does not
/// store, answered with PARAMETER).
pub fn value_in(value: &Value<'_>) -> engine::Value {
    match value {
        Value::Nil => engine::Value::Nil,
        Value::Int(i) => engine::Value::Int(*i),
        Value::Float(f) => engine::Value::Float(*f),
        Value::String(s) => engine::Value::String(s.to_vec()),
        Value::Blob(kind, bytes) => engine::Value::Blob {
            particle: kind.to_u8(),
            bytes: bytes.to_vec(),
        },
        Value::Bool(b) => engine::Value::Bool(*b),
        Value::Hll(b) => engine::Value::Hll(b.to_vec()),
        Value::Map(b) => engine::Value::Map(b.to_vec()),
        Value::List(b) => engine::Value::List(b.to_vec()),
        Value::GeoJson(g) => engine::Value::GeoJson(g.json.to_vec()),
    }
}

/// An engine value as a wire value (borrowing it).
pub fn value_out(value: &engine::Value) -> Value<'_> {
    match value {
        engine::Value::Nil => Value::Nil,
        engine::Value::Int(i) => Value::Int(*i),
        engine::Value::Float(f) => Value::Float(*f),
        engine::Value::String(s) => Value::String(s),
        engine::Value::Blob { particle, bytes } => Value::Blob(
            BlobType::from_u8(*particle).unwrap_or(BlobType::Generic),
            bytes,
        ),
        engine::Value::Bool(b) => Value::Bool(*b),
        engine::Value::Hll(b) => Value::Hll(b),
        engine::Value::Map(b) => Value::Map(b),
        engine::Value::List(b) => Value::List(b),
        engine::Value::GeoJson(b) => Value::GeoJson(GeoJson::new(b)),
    }
}

/// The user key to store.
pub fn key_in(key: &UserKey<'_>) -> Key {
    match key {
        UserKey::Int(i) => Key::Int(*i),
        UserKey::Float(f) => Key::Float(*f),
        UserKey::String(s) => Key::String(s.to_vec()),
        UserKey::Blob(kind, bytes) => Key::Blob {
            particle: kind.to_u8(),
            bytes: bytes.to_vec(),
        },
    }
}

/// The write header of a request.
pub fn write_in(req: &RecordRequest<'_>) -> Result<engine::Write, ResultCode> {
    let ttl = match req.ttl().map_err(|_| ResultCode::Parameter)? {
        request::Ttl::NamespaceDefault => Ttl::NamespaceDefault,
        request::Ttl::NeverExpire => Ttl::NeverExpire,
        request::Ttl::DontUpdate => Ttl::KeepCurrent,
        request::Ttl::Seconds(s) => Ttl::Seconds(s),
    };
    Ok(engine::Write {
        namespace: req.namespace.to_string(),
        digest: req.digest,
        set: req.set_name().to_string(),
        key: req.key.as_ref().map(key_in),
        exists: match req.exists_policy() {
            request::ExistsPolicy::Update => ExistsPolicy::Update,
            request::ExistsPolicy::UpdateOnly => ExistsPolicy::UpdateOnly,
            request::ExistsPolicy::CreateOrReplace => ExistsPolicy::Replace,
            request::ExistsPolicy::ReplaceOnly => ExistsPolicy::ReplaceOnly,
            request::ExistsPolicy::CreateOnly => ExistsPolicy::CreateOnly,
        },
        generation: generation_in(req.generation_policy()),
        ttl,
    })
}

/// The generation check (the wire's u32, the engine's u16: clients keep 16
/// bits).
pub fn generation_in(policy: request::GenerationPolicy) -> GenerationPolicy {
    match policy {
        request::GenerationPolicy::None => GenerationPolicy::None,
        request::GenerationPolicy::Equal(g) => GenerationPolicy::Equal(g as u16),
        request::GenerationPolicy::Greater(g) => GenerationPolicy::Greater(g as u16),
    }
}

/// One wire op of a write request as an engine op. `get_all` turns a read with
/// an empty name into "all bins now" (spec §7.2).
pub fn op_in(op: &Op<'_>, get_all: bool) -> Result<engine::Op, ResultCode> {
    let bin = || Bin::new(op.name, value_in(&op.value));
    Ok(match op.op_type {
        OpType::Read if op.name.is_empty() && get_all => engine::Op::ReadAll,
        OpType::Read => engine::Op::Read(op.name.to_string()),
        OpType::Write => engine::Op::Write(bin()),
        OpType::Incr => engine::Op::Incr(bin()),
        OpType::Append => engine::Op::Append(bin()),
        OpType::Prepend => engine::Op::Prepend(bin()),
        OpType::Touch => engine::Op::Touch,
        OpType::Delete => engine::Op::DeleteRecord,
        _ => return Err(ResultCode::UnsupportedFeature),
    })
}

/// The result code of an engine error (the engine names the code).
pub fn engine_code(error: &engine::Error) -> ResultCode {
    ResultCode::from_u8(error.result_code())
}

/// A refused write surely did not run: out of space is Aerospike's
/// stop-writes (8); a shard retrying a failing entry is a device that does
/// not keep up (18, retry later); a poisoned engine or WAL needs a restart,
/// so the partition is unavailable here (11).
fn refusal_code(refusal: &aerie_replication::health::Refusal) -> ResultCode {
    use aerie_replication::health::Refusal as R;
    match refusal {
        r if r.is_out_of_space() => ResultCode::OutOfSpace,
        R::Stalled { .. } => ResultCode::DeviceOverload,
        _ => ResultCode::Unavailable,
    }
}

/// How far a request got before a replication error came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Nothing can take effect: handing the command to the shard failed, or
    /// the request is a read.
    Nothing,
    /// A write was handed to its shard: unless the error says it was surely
    /// not applied, it may still be (it may be in the log).
    Write,
}

/// The result code of a replication error: exact when the error says what
/// happened, TIMEOUT (which clients report as "in doubt" for writes) when a
/// queued write may still take effect. Retriable conditions use the codes
/// clients retry on (§7.5).
pub fn replication_code(error: &aerie_replication::Error, queued: Queued) -> ResultCode {
    use aerie_replication::Error as E;
    match error {
        // Applied as a refusal: the engine's answer, on every replica.
        E::Engine(e) if e.is_record_error() => engine_code(e),
        // Surely not applied.
        E::NotLeader { .. } | E::Dropped(_) | E::NoShard(_) => ResultCode::Unavailable,
        E::Overloaded { .. } => ResultCode::DeviceOverload,
        E::TooLarge { .. } => ResultCode::RecordTooBig,
        E::WritesRefused { refusal, .. } => refusal_code(refusal),
        // The ready loop stopped before it took the command: never proposed
        // (a stop with the command in the log answers InDoubt).
        E::Stopped => ResultCode::Unavailable,
        // Unknown by definition.
        E::InDoubt(_) | E::Timeout(_) => ResultCode::Timeout,
        // Anything else (a WAL or engine failure...) once a write is queued:
        // its entry may be in the log and applied later.
        _ if queued == Queued::Write => ResultCode::Timeout,
        _ => ResultCode::ServerError,
    }
}

/// A stored key as a wire key (borrowing it).
pub fn key_out(key: &Key) -> UserKey<'_> {
    match key {
        Key::Int(i) => UserKey::Int(*i),
        Key::Float(f) => UserKey::Float(*f),
        Key::String(s) => UserKey::String(s),
        Key::Blob { particle, bytes } => UserKey::Blob(
            BlobType::from_u8(*particle).unwrap_or(BlobType::Generic),
            bytes,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerie_replication::Error as E;
    use aerie_replication::health::Refusal;

    #[test]
    fn a_queued_write_is_in_doubt_unless_the_error_says_otherwise() {
        let definite = [
            (
                E::NotLeader {
                    shard: 0,
                    leader: 0,
                },
                ResultCode::Unavailable,
            ),
            (E::Dropped(0), ResultCode::Unavailable),
            (
                E::Overloaded { shard: 0, limit: 1 },
                ResultCode::DeviceOverload,
            ),
            (
                E::Engine(engine::Error::RecordTooBig {
                    size_bytes: 2,
                    max_bytes: 1,
                }),
                ResultCode::RecordTooBig,
            ),
            (E::InDoubt(0), ResultCode::Timeout),
            // The ready loop stopped before taking it: never proposed.
            (E::Stopped, ResultCode::Unavailable),
            (
                E::TooLarge {
                    shard: 0,
                    bytes: 2,
                    limit: 1,
                },
                ResultCode::RecordTooBig,
            ),
            (
                E::WritesRefused {
                    shard: 0,
                    refusal: Refusal::OutOfSpace(String::new()),
                },
                ResultCode::OutOfSpace,
            ),
            (
                E::WritesRefused {
                    shard: 0,
                    refusal: Refusal::Stalled {
                        reason: String::new(),
                        out_of_space: false,
                    },
                },
                ResultCode::DeviceOverload,
            ),
            (
                E::WritesRefused {
                    shard: 0,
                    refusal: Refusal::WalFailed(String::new()),
                },
                ResultCode::Unavailable,
            ),
        ];
        for (error, code) in definite {
            assert_eq!(replication_code(&error, Queued::Write), code, "{error}");
            assert_eq!(replication_code(&error, Queued::Nothing), code, "{error}");
        }
        let unknown = [E::Engine(engine::Error::Poisoned(String::new()))];
        for error in unknown {
            assert_eq!(
                replication_code(&error, Queued::Write),
                ResultCode::Timeout,
                "{error}"
            );
            assert_ne!(
                replication_code(&error, Queued::Nothing),
                ResultCode::Timeout,
                "{error}"
            );
        }
    }

    #[test]
    fn stored_keys_go_back_as_sent() {
        let keys = [
            Key::Int(-5),
            Key::Float(1.5),
            Key::String(b"k1".to_vec()),
            Key::Blob {
                particle: 4,
                bytes: vec![1, 2],
            },
        ];
        for key in keys {
            assert_eq!(key_in(&key_out(&key)), key);
        }
    }
}
