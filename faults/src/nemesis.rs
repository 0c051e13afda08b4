//! The faults: a schedule drawn from the seed (the same seed gives the same
//! schedule), one fault at a time, each paired with its heal, and the
//! executor that applies them to the cluster and logs what it did.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::proxy::Rule;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SIGKILL, then a restart on the same data dir when healed.
    Kill,
    /// SIGSTOP (longer than the election timeout), then SIGCONT.
    Pause,
    /// The network split (cut, or black-holed) through the fault proxy,
    /// then every link healed.
    Partition,
    /// Every link to and from the target delayed (50–400 ms per chunk),
    /// then healed.
    Delay,
    /// SIGKILL and the data dir deleted, then a start that joins as a new
    /// member (the cluster retires the old id and rebuilds its replicas).
    Wipe,
    /// Every link to and from the target throttled (16 KiB/s–1 MiB/s each
    /// direction), then healed.
    Throttle,
    /// The target's links in one direction only cut or black-holed: it
    /// hears the others but is not heard, or is heard but hears nothing.
    OneWay,
    /// The target's wall clock stepped 1 min–2 h forward or back while it
    /// runs (libfaketime, monotonic clock untouched), then set right.
    Clock,
    /// A disk fault switched on in the target's WAL or engine file layer
    /// (ENOSPC or fsync EIO; a `fault-injection` build), then off, and the
    /// node restarted when the fault poisoned its WAL or engine.
    Disk,
}

/// The disk faults a `Disk` fault draws from, as the node's fault control
/// file names them (`src/node/fault_control.rs`), and whether each leaves
/// the WAL or engine poisoned until a restart.
pub const DISK_FAULTS: [(&str, bool); 4] = [
    ("wal-fsync-eio", true),
    ("wal-enospc", true),
    ("engine-enospc", false),
    ("engine-fsync-eio", true),
];

/// How a partition splits the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The fault's target alone on one side.
    Isolate,
    /// These nodes (a minority) on one side, the rest on the other.
    Halves(Vec<usize>),
    /// Every node reaches its ring neighbours within a majority: each sees
    /// a majority, no two the same one (5 nodes or more).
    Ring,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "kill" => Ok(Kind::Kill),
            "pause" => Ok(Kind::Pause),
            "partition" => Ok(Kind::Partition),
            "delay" => Ok(Kind::Delay),
            "wipe" => Ok(Kind::Wipe),
            "throttle" => Ok(Kind::Throttle),
            "oneway" => Ok(Kind::OneWay),
            "clock" => Ok(Kind::Clock),
            "disk" => Ok(Kind::Disk),
            other => Err(format!(
                "unknown nemesis {other:?} (known: kill, pause, partition, delay, wipe, throttle, oneway, clock, disk)"
            )),
        }
    }
}

/// Whom a fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// This node.
    Node(usize),
    /// Whoever leads shard 0 when the fault starts (or, while shard 0 has
    /// none, the first shard that has one).
    Leader,
    /// These nodes at once, a minority (kills and pauses, `--multi`).
    Nodes(Vec<usize>),
    /// The nodes leading shards when the fault starts, in shard order, up
    /// to a minority of the nodes: killed or paused at once, or split off
    /// from the rest (`--multi`).
    Leaders,
}

/// Most nodes a fault may hit at once: a minority.
pub fn minority(nodes: usize) -> usize {
    (nodes.saturating_sub(1) / 2).max(1)
}

/// One fault of the schedule, in ms from the start of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub at_ms: u64,
    pub kind: Kind,
    pub target: Target,
    pub hold_ms: u64,
    /// For a partition: the split, and whether the cut links black-hole
    /// (accept and drop) instead of refusing.
    pub split: Option<Split>,
    pub blackhole: bool,
    /// For a delay: how long each chunk is held.
    pub delay_ms: u64,
    /// For a throttle: bytes a second each way (0 for other faults; drawn
    /// only for throttles, so the other kinds' schedules stay as they were).
    pub throttle_bytes_per_sec: u64,
    /// For a one-way fault: the target's inbound links fail (else its
    /// outbound ones).
    pub inbound: bool,
    /// For a clock fault: the step of the target's wall clock, seconds.
    pub clock_offset_secs: i64,
    /// For a disk fault: an index into [`DISK_FAULTS`].
    pub disk_fault: usize,
}

/// What the executor did, in ms from the start of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub what: String,
}

/// The faults of a run of `duration_ms`: the first after 2 s, each held 1–4
/// s (a pause at least 3 election timeouts), then 1–3 s of calm before the
/// next. With `multi`, half the kills, pauses and partitions hit several
/// nodes at once ([`Target::Nodes`], [`Target::Leaders`]); without it the
/// schedule is what it always was for the seed.
pub fn schedule(
    seed: u64,
    duration_ms: u64,
    kinds: &[Kind],
    nodes: usize,
    multi: bool,
) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    let mut at_ms = 2_000;
    while !kinds.is_empty() {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let hold_ms = rng.random_range(1_200..4_000);
        if at_ms + hold_ms >= duration_ms {
            break;
        }
        let target = if rng.random_bool(0.5) {
            Target::Leader
        } else {
            Target::Node(rng.random_range(0..nodes))
        };
        let split = (kind == Kind::Partition).then(|| draw_split(&mut rng, nodes));
        let mut fault = Fault {
            at_ms,
            kind,
            target,
            hold_ms,
            split,
            blackhole: rng.random_bool(0.5),
            delay_ms: rng.random_range(50..400),
            throttle_bytes_per_sec: match kind {
                Kind::Throttle => rng.random_range(16 << 10..1 << 20),
                _ => 0,
            },
            // Drawn only for their own kinds, like the throttle's rate.
            inbound: kind == Kind::OneWay && rng.random_bool(0.5),
            clock_offset_secs: match kind {
                Kind::Clock => draw_clock_step(&mut rng),
                _ => 0,
            },
            disk_fault: match kind {
                Kind::Disk => rng.random_range(0..DISK_FAULTS.len()),
                _ => 0,
            },
        };
        if multi
            && matches!(kind, Kind::Kill | Kind::Pause | Kind::Partition)
            && rng.random_bool(0.5)
        {
            fault.target = draw_several(&mut rng, kind, nodes);
        }
        faults.push(fault);
        at_ms += hold_ms + rng.random_range(1_000..3_000);
    }
    faults
}

/// A target of several nodes: the leaders (split off, for a partition), or
/// a random minority (for a kill or a pause) as often as the leaders.
fn draw_several(rng: &mut StdRng, kind: Kind, nodes: usize) -> Target {
    if kind == Kind::Partition || rng.random_bool(0.5) {
        return Target::Leaders;
    }
    let mut all: Vec<usize> = (0..nodes).collect();
    let mut some: Vec<usize> = (0..minority(nodes))
        .map(|_| all.remove(rng.random_range(0..all.len())))
        .collect();
    some.sort_unstable();
    Target::Nodes(some)
}

/// A wall-clock step of 1 min to 2 h, forward or back.
fn draw_clock_step(rng: &mut StdRng) -> i64 {
    let secs = rng.random_range(60..7_200);
    if rng.random_bool(0.5) { secs } else { -secs }
}

fn draw_split(rng: &mut StdRng, nodes: usize) -> Split {
    match rng.random_range(0..3) {
        0 => Split::Isolate,
        1 if nodes >= 5 => Split::Ring,
        _ => {
            let mut all: Vec<usize> = (0..nodes).collect();
            let mut side = Vec::new();
            for _ in 0..minority(nodes) {
                side.push(all.remove(rng.random_range(0..all.len())));
            }
            side.sort_unstable();
            Split::Halves(side)
        }
    }
}

/// Whether `a` and `b` still reach each other under `split` (`victim` is
/// the isolated node of `Split::Isolate`).
pub fn connected(split: &Split, victim: usize, nodes: usize, a: usize, b: usize) -> bool {
    match split {
        Split::Isolate => a != victim && b != victim,
        Split::Halves(side) => side.contains(&a) == side.contains(&b),
        Split::Ring => {
            let distance = a.abs_diff(b).min(nodes - a.abs_diff(b));
            distance <= (nodes / 2).div_ceil(2)
        }
    }
}

fn delay(cluster: &Cluster, fault: &Fault, victim: usize) {
    let rule = match fault.kind {
        Kind::Throttle => Rule::Throttle {
            bytes_per_sec: fault.throttle_bytes_per_sec,
        },
        _ => Rule::Delay { ms: fault.delay_ms },
    };
    for other in (0..cluster.nodes.len()).filter(|&n| n != victim) {
        cluster.proxy.set(victim, other, rule);
        cluster.proxy.set(other, victim, rule);
    }
}

fn cut_rule(blackhole: bool) -> Rule {
    if blackhole {
        Rule::Blackhole
    } else {
        Rule::Cut
    }
}

/// The victim's links in one direction fail.
fn one_way(cluster: &Cluster, fault: &Fault, victim: usize) {
    for other in (0..cluster.nodes.len()).filter(|&n| n != victim) {
        match fault.inbound {
            true => cluster.proxy.set(other, victim, cut_rule(fault.blackhole)),
            false => cluster.proxy.set(victim, other, cut_rule(fault.blackhole)),
        }
    }
}

fn partition(cluster: &Cluster, split: &Split, blackhole: bool, victim: usize) {
    let nodes = cluster.nodes.len();
    let rule = cut_rule(blackhole);
    for a in 0..nodes {
        for b in (0..nodes).filter(|&b| b != a) {
            if !connected(split, victim, nodes, a, b) {
                cluster.proxy.set(a, b, rule);
            }
        }
    }
}

/// Applies `faults` to `cluster` on time (measured from `start`), healing
/// each before the next; returns the log of what was done.
pub async fn run(cluster: Arc<Mutex<Cluster>>, faults: Vec<Fault>, start: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let now_ms = || start.elapsed().as_millis() as u64;
    for fault in faults {
        let at = start + Duration::from_millis(fault.at_ms);
        tokio::time::sleep_until(at.into()).await;
        let victims = match victims(&*cluster.lock().await, &fault.target).await {
            Ok(victims) => victims,
            Err(why) => {
                events.push(Event {
                    at_ms: now_ms(),
                    what: format!("{:?} of {:?} skipped: {why}", fault.kind, fault.target),
                });
                continue;
            }
        };
        let struck = strike(&mut *cluster.lock().await, &fault, &victims);
        events.push(Event {
            at_ms: now_ms(),
            what: match struck {
                Ok(()) => describe(&fault, &victims),
                Err(e) => format!("{:?} of nodes {victims:?} failed: {e}", fault.kind),
            },
        });
        tokio::time::sleep(Duration::from_millis(fault.hold_ms)).await;
        let healed = heal(&mut *cluster.lock().await, &fault, &victims).await;
        events.push(Event {
            at_ms: now_ms(),
            what: match healed {
                Ok(how) => how,
                Err(e) => format!("healing nodes {victims:?} failed: {e}"),
            },
        });
    }
    events
}

/// The nodes `target` names now (never empty).
async fn victims(cluster: &Cluster, target: &Target) -> Result<Vec<usize>, String> {
    match target {
        Target::Node(i) => Ok(vec![*i]),
        Target::Nodes(nodes) => Ok(nodes.clone()),
        Target::Leader => Ok(vec![
            *cluster.shard_leaders().await?.first().ok_or("no shard")?,
        ]),
        Target::Leaders => {
            let mut leaders = Vec::new();
            for leader in cluster.shard_leaders().await? {
                if !leaders.contains(&leader) && leaders.len() < minority(cluster.nodes.len()) {
                    leaders.push(leader);
                }
            }
            leaders.sort_unstable();
            Ok(leaders)
        }
    }
}

fn strike(c: &mut Cluster, fault: &Fault, victims: &[usize]) -> Result<(), String> {
    let victim = victims[0];
    match fault.kind {
        Kind::Kill => victims.iter().for_each(|&v| c.kill(v)),
        Kind::Pause => victims.iter().for_each(|&v| c.pause(v)),
        Kind::Partition if fault.target == Target::Leaders => {
            let split = Split::Halves(victims.to_vec());
            partition(c, &split, fault.blackhole, victim);
        }
        Kind::Partition => {
            if let Some(split) = &fault.split {
                partition(c, split, fault.blackhole, victim);
            }
        }
        Kind::Delay | Kind::Throttle => delay(c, fault, victim),
        Kind::OneWay => one_way(c, fault, victim),
        Kind::Wipe => c.wipe(victim)?,
        Kind::Clock => c.set_clock_offset(victim, fault.clock_offset_secs)?,
        Kind::Disk => c.set_disk_fault(victim, DISK_FAULTS[fault.disk_fault].0)?,
    }
    Ok(())
}

/// What a fault did, for the log.
fn describe(fault: &Fault, victims: &[usize]) -> String {
    let how = if fault.blackhole {
        "black-holed"
    } else {
        "cut"
    };
    let (victim, target) = (victims[0], &fault.target);
    match (&fault.kind, &fault.split) {
        (Kind::Partition, _) if *target == Target::Leaders => {
            format!("Partition splitting off the leaders {victims:?}, {how}")
        }
        (Kind::Partition, Some(Split::Isolate)) | (Kind::Partition, None) => {
            format!("Partition isolating node {victim} ({target:?}), {how}")
        }
        (Kind::Partition, Some(split)) => format!("Partition {split:?}, {how}"),
        (Kind::Delay, _) => format!(
            "Delay {} ms on every link of node {victim} ({target:?})",
            fault.delay_ms
        ),
        (Kind::Throttle, _) => format!(
            "Throttle every link of node {victim} to {} B/s ({target:?})",
            fault.throttle_bytes_per_sec
        ),
        (Kind::OneWay, _) => format!(
            "One-way: every link {} node {victim} {how} ({target:?})",
            if fault.inbound { "into" } else { "out of" }
        ),
        (Kind::Clock, _) => format!(
            "Clock of node {victim} stepped {:+} s ({target:?})",
            fault.clock_offset_secs
        ),
        (Kind::Disk, _) => format!(
            "Disk fault {} on node {victim} ({target:?})",
            DISK_FAULTS[fault.disk_fault].0
        ),
        (Kind::Kill | Kind::Pause, _) if victims.len() > 1 => {
            format!("{:?} nodes {victims:?} ({target:?})", fault.kind)
        }
        _ => format!("{:?} node {victim} ({target:?})", fault.kind),
    }
}

async fn heal(c: &mut Cluster, fault: &Fault, victims: &[usize]) -> Result<String, String> {
    let victim = victims[0];
    match fault.kind {
        Kind::Kill => {
            for &v in victims {
                c.restart(v)?;
            }
            Ok(format!("restart nodes {victims:?}"))
        }
        Kind::Wipe => {
            c.restart(victim)?;
            c.rename(victim).await?;
            Ok(format!("restart node {victim} empty, as a new member"))
        }
        Kind::Pause => {
            victims.iter().for_each(|&v| c.resume(v));
            Ok(format!("resume nodes {victims:?}"))
        }
        Kind::Partition | Kind::Delay | Kind::Throttle | Kind::OneWay => {
            c.proxy.heal();
            Ok("heal every link".to_string())
        }
        Kind::Clock => {
            c.set_clock_offset(victim, 0)?;
            Ok(format!("set the clock of node {victim} right"))
        }
        Kind::Disk => {
            let (name, poisons) = DISK_FAULTS[fault.disk_fault];
            c.set_disk_fault(victim, "none")?;
            if !poisons {
                return Ok(format!("disk fault {name} off on node {victim}"));
            }
            c.kill(victim);
            c.restart(victim)?;
            Ok(format!("disk fault {name} off, node {victim} restarted"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_of_faults_that_do_not_overlap() {
        let kinds = [Kind::Kill, Kind::Pause];
        let a = schedule(7, 60_000, &kinds, 3, false);
        let b = schedule(7, 60_000, &kinds, 3, false);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.len() >= 8, "{a:?}");
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", schedule(8, 60_000, &kinds, 3, false))
        );
        for pair in a.windows(2) {
            assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms);
        }
        assert!(a.iter().all(|f| f.at_ms + f.hold_ms < 60_000));
        assert!(schedule(7, 60_000, &[], 3, false).is_empty());
    }

    #[test]
    fn splits_leave_a_majority_somewhere_and_the_ring_overlaps() {
        let reach = |split: &Split, n: usize, a: usize| {
            (0..n).filter(|&b| connected(split, 1, n, a, b)).count()
        };
        assert_eq!(reach(&Split::Isolate, 3, 1), 0);
        assert_eq!(reach(&Split::Isolate, 3, 0), 2, "itself and node 2");
        assert_eq!(reach(&Split::Halves(vec![0, 3]), 5, 3), 2);
        assert_eq!(reach(&Split::Halves(vec![0, 3]), 5, 1), 3);
        for n in [5, 7] {
            for a in 0..n {
                let seen = reach(&Split::Ring, n, a);
                assert!(seen > n / 2 && seen < n, "n={n} a={a}: a majority, not all");
            }
        }
        let partitions = schedule(3, 60_000, &[Kind::Partition], 5, false);
        assert!(partitions.iter().all(|f| f.split.is_some()));
    }

    #[test]
    fn multi_node_faults_hit_a_minority_or_the_leaders_and_only_kill_pause_or_split() {
        let kinds = [Kind::Kill, Kind::Pause, Kind::Partition, Kind::Wipe];
        let faults = schedule(5, 600_000, &kinds, 5, true);
        let several = |f: &&Fault| matches!(f.target, Target::Nodes(_) | Target::Leaders);
        assert!(faults.iter().filter(several).count() >= 10, "{faults:?}");
        for f in faults.iter().filter(several) {
            assert_ne!(f.kind, Kind::Wipe, "a wipe stays one node: {f:?}");
            if let Target::Nodes(nodes) = &f.target {
                assert_eq!(nodes.len(), minority(5), "{f:?}");
                assert_ne!(f.kind, Kind::Partition, "{f:?}");
            }
        }
        assert!(faults.iter().any(|f| matches!(f.target, Target::Nodes(_))));
        assert!(
            faults
                .iter()
                .any(|f| f.kind == Kind::Partition && f.target == Target::Leaders)
        );
        assert_eq!(minority(3), 1);
        assert_eq!(minority(7), 3);
    }

    #[test]
    fn clock_and_disk_faults_draw_their_own_parameters_only() {
        let kinds = [Kind::Clock, Kind::Disk, Kind::OneWay, Kind::Kill];
        let faults = schedule(11, 600_000, &kinds, 3, false);
        for kind in kinds {
            assert!(faults.iter().any(|f| f.kind == kind), "{kind:?} drawn");
        }
        for f in &faults {
            let step = f.clock_offset_secs.unsigned_abs();
            assert_eq!(f.kind == Kind::Clock, (60..7_200).contains(&step), "{f:?}");
            assert!(f.disk_fault < DISK_FAULTS.len());
            assert!(f.kind == Kind::Disk || f.disk_fault == 0, "{f:?}");
            assert!(f.kind == Kind::OneWay || !f.inbound, "{f:?}");
        }
        let disk: Vec<usize> = faults
            .iter()
            .filter(|f| f.kind == Kind::Disk)
            .map(|f| f.disk_fault)
            .collect();
        assert!(
            disk.windows(2).any(|w| w[0] != w[1]),
            "more than one disk fault: {disk:?}"
        );
    }
}
