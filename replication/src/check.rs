//! Consistency checks between a shard's replicas, carried by the shard's own
//! log so that every replica sums exactly the same state.
//!
//! 1. The shard's leader proposes a [`Control::Check`] entry (every
//!    `consistency_check_interval_ms`, staggered over the shards) naming the
//!    voters it expects an answer from.
//! 2. Every member's apply loop, on applying it, takes views of the shard's
//!    partitions (at exactly that index: nothing else of the shard applies
//!    meanwhile) and sums them on a thread of its own, reading and
//!    CRC-checking every record at a bounded rate ([`CHECK_READ_BYTES_PER_SEC`]).
//! 3. Each member proposes its sums as a [`Control::Report`] (a follower's
//!    proposal is forwarded to the leader by raft).
//! 4. Every member applies the same reports in the same order; once all the
//!    named voters reported, each judges them the same way ([`judge`]): a
//!    member that differs from a majority, or could not read its copy, is
//!    damaged, and the one that finds itself so rebuilds its replica from a
//!    healthy member's snapshot (see [`crate::repair`]).
//!
//! The sums are the engine's content summaries: per partition, the record
//! count and a checksum over every record's digest, generation, void time,
//! last update and bins. Records that expire within [`STABLE_HORIZON_MS`]
//! of the check are left out: each replica reclaims expired records on its
//! own clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aerie_engine::PartitionSummary;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyContext;
use crate::node::Input;
use crate::ready::ReadyLoop;
use crate::rebuild::Pace;
use crate::shard::Shard;

/// Records read per second by one check's summing thread.
pub const CHECK_READ_BYTES_PER_SEC: u64 = 64 << 20;
/// Records expiring within this long of a check's clock are left out of it.
pub const STABLE_HORIZON_MS: u64 = 24 * 3_600_000;
/// Checks whose reports a shard's apply loop keeps waiting for at once
/// (a member that never reports leaves its check open until newer ones
/// push it out).
pub const MAX_OPEN_CHECKS: usize = 4;

/// One partition's sums in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSum {
    /// Partition.
    pub partition: u16,
    /// Live records.
    pub records: u64,
    /// Order-independent checksum of their contents.
    pub checksum: u64,
}

/// What an empty normal entry of a shard's log carries in its context
/// (encoded by [`crate::codec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Every member sums its copy of the shard as of this entry.
    Check {
        /// Names the check (unique: a proposal id of the leader).
        id: u64,
        /// The voters expected to report.
        voters: Vec<u64>,
        /// The leader's clock when it proposed (Unix ms): records expiring
        /// within [`STABLE_HORIZON_MS`] of it are left out.
        now_ms: u64,
    },
    /// One member's sums for check `id`: per partition with records, in
    /// partition order, or why its copy could not be read.
    Report {
        /// The check.
        id: u64,
        /// The member.
        member: u64,
        /// Its sums.
        sums: Result<Vec<PartitionSum>, String>,
    },
}

/// A check's outcome, the same on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every voter's copy is the same.
    Agree,
    /// `members` differ from a majority that agrees (or could not read
    /// their copy), in `partitions` (empty when unreadable).
    Minority {
        /// The damaged members.
        members: Vec<u64>,
        /// The partitions where they differ.
        partitions: Vec<u16>,
    },
    /// No majority of the voters agrees: nothing can be rebuilt from it.
    NoMajority,
}

/// A check this member waits on: the voters named and the reports so far.
#[derive(Debug, Clone)]
pub struct OpenCheck {
    /// The check.
    pub id: u64,
    /// The log index of its `Check` entry.
    pub index: u64,
    /// Who must report.
    pub voters: Vec<u64>,
    /// Reports applied so far, by member.
    pub reports: BTreeMap<u64, Result<Vec<PartitionSum>, String>>,
}

impl OpenCheck {
    /// True once every named voter reported.
    pub fn complete(&self) -> bool {
        self.voters.iter().all(|v| self.reports.contains_key(v))
    }
}

/// Judges a complete check: the largest group of identical reports is the
/// reference if it is a majority of the voters; an unreadable copy never is.
pub fn judge(check: &OpenCheck) -> Verdict {
    let mut groups: Vec<(&Vec<PartitionSum>, Vec<u64>)> = Vec::new();
    for (member, sums) in &check.reports {
        let Ok(sums) = sums else { continue };
        match groups.iter_mut().find(|(s, _)| *s == sums) {
            Some((_, members)) => members.push(*member),
            None => groups.push((sums, vec![*member])),
        }
    }
    let majority = check.voters.len() / 2 + 1;
    let Some((reference, agreeing)) = groups.into_iter().max_by_key(|(_, m)| m.len()) else {
        return Verdict::NoMajority;
    };
    if agreeing.len() < majority {
        return Verdict::NoMajority;
    }
    let members: Vec<u64> = check
        .reports
        .keys()
        .filter(|m| !agreeing.contains(m))
        .copied()
        .collect();
    if members.is_empty() {
        return Verdict::Agree;
    }
    let mut partitions: Vec<u16> = members
        .iter()
        .filter_map(|m| check.reports.get(m).and_then(|r| r.as_ref().ok()))
        .flat_map(|sums| differing(reference, sums))
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    Verdict::Minority {
        members,
        partitions,
    }
}

/// The partitions where two reports differ (in count or checksum, or
/// present in one only).
fn differing(a: &[PartitionSum], b: &[PartitionSum]) -> Vec<u16> {
    let index = |sums: &[PartitionSum]| -> BTreeMap<u16, (u64, u64)> {
        sums.iter()
            .map(|s| (s.partition, (s.records, s.checksum)))
            .collect()
    };
    let (a, b) = (index(a), index(b));
    let mut keys: Vec<u16> = a.keys().chain(b.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().filter(|p| a.get(p) != b.get(p)).collect()
}

/// Sums `partitions` of every namespace from views taken at one index,
/// reading at most [`CHECK_READ_BYTES_PER_SEC`].
pub fn sum_views(
    views: &[aerie_engine::View],
    clock_ms: u64,
) -> Result<Vec<PartitionSum>, aerie_engine::Error> {
    let stable_until_ms = clock_ms.saturating_add(STABLE_HORIZON_MS);
    let mut rate = Pace::new(CHECK_READ_BYTES_PER_SEC);
    let mut pace = |bytes: usize| std::thread::sleep(rate.after(bytes as u64));
    let mut total: BTreeMap<u16, PartitionSummary> = BTreeMap::new();
    for view in views {
        for (partition, summary) in view.content_summaries(stable_until_ms, &mut pace)? {
            let sum = total.entry(partition).or_insert(PartitionSummary {
                records: 0,
                checksum: 0,
            });
            sum.records += summary.records;
            sum.checksum = sum.checksum.wrapping_add(summary.checksum);
        }
    }
    Ok(total
        .into_iter()
        .map(|(partition, s)| PartitionSum {
            partition,
            records: s.records,
            checksum: s.checksum,
        })
        .collect())
}

/// How long a summing thread tries to hand its report to a full ready-loop
/// queue before it gives the report up (the check then stays open).
const REPORT_HANDOFF_MS: u64 = 5_000;

/// The apply loop's side of the checks of one shard.
#[derive(Default)]
pub(crate) struct Checks {
    open: VecDeque<OpenCheck>,
    summing: Option<JoinHandle<()>>,
}

impl Checks {
    /// Applies a control entry at `index` (the engine is at `index - 1`
    /// for this shard: nothing after it has applied).
    pub fn apply(&mut self, ctx: &ApplyContext, index: u64, control: Control) {
        match control {
            Control::Check { id, voters, now_ms } => {
                if voters.contains(&ctx.node_id) {
                    self.start(ctx, index, id, voters, now_ms);
                }
            }
            Control::Report { id, member, sums } => self.note_report(ctx, id, member, sums),
        }
    }

    fn start(&mut self, ctx: &ApplyContext, index: u64, id: u64, voters: Vec<u64>, now_ms: u64) {
        if self.summing.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::debug!(
                shard = ctx.shard,
                id,
                "a check is still summing; this one is skipped here"
            );
            return;
        }
        self.open.push_back(OpenCheck {
            id,
            index,
            voters,
            reports: BTreeMap::new(),
        });
        while self.open.len() > MAX_OPEN_CHECKS {
            self.open.pop_front();
        }
        let views = ctx
            .engine
            .views_of_every_namespace(&ctx.shard_meta.partitions);
        let job = SumJob {
            shard: ctx.shard,
            member: ctx.node_id,
            id,
            now_ms,
            damage: ctx.damage.clone(),
            input: ctx.control.clone(),
        };
        self.summing = std::thread::Builder::new()
            .name(format!("check-{}", ctx.shard))
            .spawn(move || job.run(views))
            .map_err(|e| tracing::warn!(shard = ctx.shard, error = %e, "cannot start a check's summing thread"))
            .ok();
    }

    fn note_report(
        &mut self,
        ctx: &ApplyContext,
        id: u64,
        member: u64,
        sums: Result<Vec<PartitionSum>, String>,
    ) {
        let Some(at) = self.open.iter().position(|c| c.id == id) else {
            return;
        };
        let check = &mut self.open[at];
        if !check.voters.contains(&member) {
            return;
        }
        check.reports.insert(member, sums);
        if !check.complete() {
            return;
        }
        if let Some(check) = self.open.remove(at) {
            act_on(ctx, &check, judge(&check));
        }
    }

    /// Waits for a summing thread still running (the node is stopping).
    pub fn finish(&mut self) {
        if let Some(handle) = self.summing.take() {
            let _ = handle.join();
        }
    }
}

/// Counts a verdict, logs a difference, and marks this node's copy damaged
/// if it is in the minority.
fn act_on(ctx: &ApplyContext, check: &OpenCheck, verdict: Verdict) {
    let (shard, id, index) = (ctx.shard, check.id, check.index);
    let judged = crate::repair::Judged {
        id,
        index,
        verdict: verdict.clone(),
    };
    ctx.damage.note_check(shard, judged);
    match verdict {
        Verdict::Agree => tracing::debug!(shard, id, index, "replicas agree"),
        Verdict::Minority {
            members,
            partitions,
        } => {
            tracing::warn!(
                shard,
                id,
                index,
                ?members,
                ?partitions,
                "replicas differ from the majority; the differing ones are rebuilt"
            );
            if members.contains(&ctx.node_id) {
                let reason = format!(
                    "consistency check {id} at index {index}: this copy differs from the \
                     majority in partitions {partitions:?} (empty: unreadable)"
                );
                ctx.damage.mark(shard, &reason);
            }
        }
        Verdict::NoMajority => tracing::error!(
            shard,
            id,
            index,
            "no majority of the replicas agrees; nothing can be rebuilt from them"
        ),
    }
}

/// One member's summing of its copy for one check.
struct SumJob {
    shard: u32,
    member: u64,
    id: u64,
    now_ms: u64,
    damage: Arc<crate::repair::Damage>,
    input: SyncSender<Input>,
}

impl SumJob {
    fn run(self, views: Result<Vec<aerie_engine::View>, aerie_engine::Error>) {
        let sums = views.and_then(|views| sum_views(&views, self.now_ms));
        if let Err(e @ aerie_engine::Error::Corruption { .. }) = &sums {
            self.damage.mark(self.shard, &e.to_string());
        }
        let control = Control::Report {
            id: self.id,
            member: self.member,
            sums: sums.map_err(|e| e.to_string()),
        };
        let mut input = Input::Control {
            shard: self.shard,
            control,
        };
        let deadline = Instant::now() + Duration::from_millis(REPORT_HANDOFF_MS);
        loop {
            match self.input.try_send(input) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    input = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        shard = self.shard,
                        id = self.id,
                        "a check's report was given up: the node is overloaded"
                    );
                    return;
                }
            }
        }
    }
}

impl ReadyLoop {
    /// Every shard this node leads is checked at the next tick.
    pub(crate) fn check_now(&mut self) {
        let now = Instant::now();
        for shard in &mut self.shards {
            shard.next_check_at = now;
        }
    }

    /// Proposes a check on each shard this node leads whose turn came: one
    /// per `consistency_check_interval_ms`, with at least two voters and no
    /// joint configuration.
    pub(crate) fn propose_checks(&mut self) {
        let interval = schedule(self.config.consistency_check_interval_ms);
        let now = Instant::now();
        for shard in &mut self.shards {
            if now < shard.next_check_at {
                continue;
            }
            shard.next_check_at = now + interval;
            let conf = shard.raw.store().meta().conf_state();
            if !shard.is_leader()
                || shard.is_frozen()
                || conf.voters.len() < 2
                || !conf.voters_outgoing.is_empty()
            {
                continue;
            }
            let control = Control::Check {
                id: self.next_proposal,
                voters: conf.voters,
                now_ms: crate::node::now_ms(),
            };
            self.next_proposal += 1;
            propose_control(shard, &control);
        }
    }
}

/// Appends a control entry to `shard`'s log (a follower forwards it to the
/// leader). A dropped one leaves its check open until newer ones push it out.
pub(crate) fn propose_control(shard: &mut Shard, control: &Control) {
    if shard.is_frozen() {
        return;
    }
    if let Err(e) = shard.raw.propose(control.encode(), Vec::new()) {
        tracing::debug!(shard = shard.id, error = %e, "a check entry was not proposed");
    }
}

/// When a shard's first check is due: the shards spread over one interval.
pub(crate) fn first_check_at(interval_ms: u64, shard: u32, shards: u32) -> Instant {
    let offset = schedule(interval_ms).mul_f64(f64::from(shard + 1) / f64::from(shards.max(1)));
    Instant::now() + offset
}

/// The time between two scheduled checks of a shard; with the schedule off
/// (0), a year: checks asked for now ([`ReadyLoop::check_now`]) still run.
fn schedule(interval_ms: u64) -> Duration {
    match interval_ms {
        0 => Duration::from_secs(365 * 24 * 3600),
        ms => Duration::from_millis(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(pairs: &[(u16, u64)]) -> Vec<PartitionSum> {
        pairs
            .iter()
            .map(|&(partition, checksum)| PartitionSum {
                partition,
                records: 1,
                checksum,
            })
            .collect()
    }

    fn check(voters: &[u64], reports: Vec<(u64, Result<Vec<PartitionSum>, String>)>) -> OpenCheck {
        OpenCheck {
            id: 1,
            index: 10,
            voters: voters.to_vec(),
            reports: reports.into_iter().collect(),
        }
    }

    #[test]
    fn equal_copies_agree() {
        let same = sums(&[(1, 5), (2, 6)]);
        let c = check(
            &[1, 2, 3],
            vec![(1, Ok(same.clone())), (2, Ok(same.clone())), (3, Ok(same))],
        );
        assert!(c.complete());
        assert_eq!(judge(&c), Verdict::Agree);
    }

    #[test]
    fn the_odd_copy_is_named_with_its_partitions() {
        let good = sums(&[(1, 5), (2, 6), (3, 7)]);
        let bad = sums(&[(1, 5), (2, 9)]);
        let c = check(
            &[1, 2, 3],
            vec![(1, Ok(good.clone())), (2, Ok(bad)), (3, Ok(good))],
        );
        assert_eq!(
            judge(&c),
            Verdict::Minority {
                members: vec![2],
                partitions: vec![2, 3]
            }
        );
    }

    #[test]
    fn an_unreadable_copy_is_damaged_and_never_the_reference() {
        let good = sums(&[(1, 5)]);
        let c = check(
            &[1, 2, 3],
            vec![
                (1, Err("corrupt".into())),
                (2, Ok(good.clone())),
                (3, Ok(good)),
            ],
        );
        assert_eq!(
            judge(&c),
            Verdict::Minority {
                members: vec![1],
                partitions: vec![]
            }
        );
        let c = check(
            &[1, 2, 3],
            vec![
                (1, Err("a".into())),
                (2, Err("a".into())),
                (3, Ok(sums(&[]))),
            ],
        );
        assert_eq!(judge(&c), Verdict::NoMajority);
    }

    #[test]
    fn without_a_majority_nothing_is_rebuilt() {
        let c = check(
            &[1, 2, 3],
            vec![
                (1, Ok(sums(&[(1, 1)]))),
                (2, Ok(sums(&[(1, 2)]))),
                (3, Ok(sums(&[(1, 3)]))),
            ],
        );
        assert_eq!(judge(&c), Verdict::NoMajority);
        let c = check(
            &[1, 2],
            vec![(1, Ok(sums(&[(1, 1)]))), (2, Ok(sums(&[(1, 2)])))],
        );
        assert_eq!(judge(&c), Verdict::NoMajority);
    }

    #[test]
    fn a_check_waits_for_every_named_voter() {
        let c = check(&[1, 2, 3], vec![(1, Ok(sums(&[]))), (2, Ok(sums(&[])))]);
        assert!(!c.complete());
    }
}
