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

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SIGKILL, then a restart on the same data dir when healed.
    Kill,
    /// SIGSTOP (longer than the election timeout), then SIGCONT.
    Pause,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "kill" => Ok(Kind::Kill),
            "pause" => Ok(Kind::Pause),
            other => Err(format!(
                "unknown nemesis {other:?} (known: kill, pause; partitions need the fault proxy, not built yet)"
            )),
        }
    }
}

/// Whom a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// This node.
    Node(usize),
    /// Whoever leads shard 0 when the fault starts.
    Leader,
}

/// One fault of the schedule, in ms from the start of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub at_ms: u64,
    pub kind: Kind,
    pub target: Target,
    pub hold_ms: u64,
}

/// What the executor did, in ms from the start of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub what: String,
}

/// The faults of a run of `duration_ms`: the first after 2 s, each held 1–4
/// s (a pause at least 3 election timeouts), then 1–3 s of calm before the
/// next.
pub fn schedule(seed: u64, duration_ms: u64, kinds: &[Kind], nodes: usize) -> Vec<Fault> {
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
        faults.push(Fault {
            at_ms,
            kind,
            target,
            hold_ms,
        });
        at_ms += hold_ms + rng.random_range(1_000..3_000);
    }
    faults
}

/// Applies `faults` to `cluster` on time (measured from `start`), healing
/// each before the next; returns the log of what was done.
pub async fn run(cluster: Arc<Mutex<Cluster>>, faults: Vec<Fault>, start: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let now_ms = || start.elapsed().as_millis() as u64;
    for fault in faults {
        let at = start + Duration::from_millis(fault.at_ms);
        tokio::time::sleep_until(at.into()).await;
        let victim = match fault.target {
            Target::Node(i) => Some(i),
            Target::Leader => cluster.lock().await.leader_of_shard_0().await,
        };
        let Some(victim) = victim else {
            events.push(Event {
                at_ms: now_ms(),
                what: format!("{:?} of the leader skipped: no leader known", fault.kind),
            });
            continue;
        };
        {
            let mut c = cluster.lock().await;
            match fault.kind {
                Kind::Kill => c.kill(victim),
                Kind::Pause => c.pause(victim),
            }
        }
        events.push(Event {
            at_ms: now_ms(),
            what: format!("{:?} node {victim} ({:?})", fault.kind, fault.target),
        });
        tokio::time::sleep(Duration::from_millis(fault.hold_ms)).await;
        let healed = {
            let mut c = cluster.lock().await;
            match fault.kind {
                Kind::Kill => c.restart(victim).map(|()| "restart"),
                Kind::Pause => {
                    c.resume(victim);
                    Ok("resume")
                }
            }
        };
        events.push(Event {
            at_ms: now_ms(),
            what: match healed {
                Ok(how) => format!("{how} node {victim}"),
                Err(e) => format!("healing node {victim} failed: {e}"),
            },
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_of_faults_that_do_not_overlap() {
        let kinds = [Kind::Kill, Kind::Pause];
        let a = schedule(7, 60_000, &kinds, 3);
        let b = schedule(7, 60_000, &kinds, 3);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.len() >= 8, "{a:?}");
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", schedule(8, 60_000, &kinds, 3))
        );
        for pair in a.windows(2) {
            assert!(pair[0].at_ms + pair[0].hold_ms < pair[1].at_ms);
        }
        assert!(a.iter().all(|f| f.at_ms + f.hold_ms < 60_000));
        assert!(schedule(7, 60_000, &[], 3).is_empty());
    }
}
