//! Point-in-time recovery: after a snapshot is installed, replay the shard's
//! archived log entries up to a target index or time, and stop exactly there.
//!
//! The entries' payload format belongs to the replication layer; it passes a
//! decoder that turns a payload into the command it carries and the leader's
//! clock (`None` for entries without a command: leader no-ops, membership
//! changes).

use aerie_engine::{Command, Engine};
use aerie_wal::archive::ArchivedStream;

use crate::error::{Error, Result};
use crate::format::Header;

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Apply every entry up to and including this index.
    Index(u64),
    /// Apply every entry whose command was stamped at or before this time
    /// (Unix ms); stop at the first one stamped later.
    TimeMs(u64),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The last index applied (the snapshot's index if none was).
    pub last_index: u64,
    /// Its term.
    pub last_term: u64,
    /// Entries applied.
    pub entries: u64,
}

/// A time target must not be older than the snapshot's own state: the entry
/// at the snapshot's index (when `log` kept it: scan from `index - 1`) must
/// be stamped at or before it; when that entry is gone or carries no command,
/// the snapshot's creation time must be.
fn check_snapshot_before(
    snapshot: &Header,
    log: &ArchivedStream,
    t: u64,
    decode: Decode<'_>,
) -> Result<()> {
    let stamped = log
        .read(snapshot.index)
        .ok()
        .and_then(|entry| decode(&entry.payload).ok().flatten())
        .map_or(snapshot.created_ms, |(now_ms, _)| now_ms);
    if stamped > t {
        return Err(Error::Refused(format!(
            "target time {t} is before the snapshot's state (index {}, stamped {stamped}): \
             restore from an older snapshot",
            snapshot.index
        )));
    }
    Ok(())
}

/// A payload decoder: `Ok(Some((now_ms, command)))`, `Ok(None)` for an entry
/// with no command, or why the payload is not valid.
pub type Decode<'a> = &'a dyn Fn(&[u8]) -> Result<Option<(u64, Command)>, String>;

/// Replays `log`'s entries after the installed snapshot `snapshot` into
/// `engine` (through the snapshot's log), up to `target`. Only entries the
/// archive knows to be committed are replayed; a target the archive cannot
/// reach, or one before the snapshot, is refused before anything is applied.
pub fn replay(
    engine: &Engine,
    snapshot: &Header,
    log: &ArchivedStream,
    target: Target,
    decode: Decode<'_>,
) -> Result<Replayed> {
    let (log_id, from, from_term) = (snapshot.log_id, snapshot.index, snapshot.term);
    if let Target::TimeMs(t) = target {
        check_snapshot_before(snapshot, log, t, decode)?;
    }
    let committed = log.hard_state().commit.min(log.last_index());
    let last = match target {
        Target::Index(index) if index < from => {
            return Err(Error::Refused(format!(
                "target index {index} is before the snapshot's index {from}"
            )));
        }
        Target::Index(index) if index > committed => {
            return Err(Error::Refused(format!(
                "target index {index} is past what the archive holds as committed ({committed})"
            )));
        }
        Target::Index(index) => index,
        Target::TimeMs(t) => {
            check_reaches_time(log, from, committed, t, decode)?;
            committed
        }
    };
    let mut done = Replayed {
        last_index: from,
        last_term: from_term,
        entries: 0,
    };
    for index in from + 1..=last {
        let entry = log.read(index)?;
        let decoded = decode(&entry.payload).map_err(|reason| {
            Error::Refused(format!(
                "entry {index} of log {log_id} does not decode: {reason}"
            ))
        })?;
        match decoded {
            Some((now_ms, _)) if matches!(target, Target::TimeMs(t) if now_ms > t) => {
                return Ok(done);
            }
            Some((now_ms, command)) => apply(engine, log_id, index, now_ms, &command)?,
            None => engine.note_applied(log_id, index),
        }
        done = Replayed {
            last_index: index,
            last_term: entry.term,
            entries: done.entries + 1,
        };
    }
    Ok(done)
}

/// A time target is reachable only if some committed command after `from` is
/// stamped later than it: otherwise the archive may simply end too early. The
/// newest command is the one checked (leader clocks move forward).
fn check_reaches_time(
    log: &ArchivedStream,
    from: u64,
    committed: u64,
    t: u64,
    decode: Decode<'_>,
) -> Result<()> {
    for index in (from + 1..=committed).rev() {
        let payload = log.read(index)?.payload;
        if let Ok(Some((now_ms, _))) = decode(&payload) {
            if now_ms > t {
                return Ok(());
            }
            break;
        }
    }
    Err(Error::Refused(format!(
        "the archive ends at index {committed} with no command stamped after {t}: it cannot \
         show the state at that time; restore --to-index {committed} for everything it holds"
    )))
}

/// Applies one command; record-level outcomes (not found, generation
/// mismatch...) are part of the history and count as applied.
fn apply(engine: &Engine, log_id: u64, index: u64, now_ms: u64, command: &Command) -> Result<()> {
    match engine.apply(log_id, index, now_ms, command) {
        Ok(_) => Ok(()),
        Err(e) if e.is_record_error() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
