//! `aerie cluster status`: the members and, per shard, the leader, voters,
//! learners, applied and commit index, as one node sees them (its
//! `cluster-status` info answer), and whether every shard has its full
//! replication factor. `aerie cluster remove`: a member's replicas and
//! leaderships moved off (watched on every shard's leader), then the member
//! retired.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::node::{CHECK_NOW, CHECK_VERDICTS};

/// `aerie cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members and per-shard replicas as one node sees them.
    Status {
        /// The node to ask.
        #[arg(long, default_value = "127.0.0.1:3000")]
        host: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes a member online: its replicas and leaderships move to the
    /// others (one shard at a time), then it is retired (it stops by
    /// itself, and may come back only as a new member, with an emptied
    /// data dir). Refused when the shards would be left below a majority
    /// of their voters.
    Remove {
        /// The member's name (as `aerie cluster status` lists it).
        node: String,
        /// A node of the cluster to ask.
        #[arg(long, default_value = "127.0.0.1:3000")]
        host: String,
        /// Retire it at once, without waiting for its replicas to move off
        /// (and even below a majority): for a member that is gone for good.
        #[arg(long)]
        force: bool,
        /// How long to wait for the replicas to move off.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Compares every shard's replicas: each voter's record count and
    /// checksum at one applied index (asked again while a busy shard's
    /// replicas are at different indices); a difference is reported with
    /// the shard, the partitions and the members. Exit status 1 when
    /// replicas differ or never reached one index.
    Check {
        /// A node of the cluster to ask.
        #[arg(long, default_value = "127.0.0.1:3000")]
        host: String,
        /// How long to wait for busy shards' replicas to line up (and, with
        /// --deep, for the checks to be judged).
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Then also run a consistency check through every shard's log now:
        /// every replica reads and CRC-checks every record at one index and
        /// the members compare; a copy that differs from the majority, or
        /// cannot be read, is named (and rebuilds itself from a snapshot).
        #[arg(long)]
        deep: bool,
    },
}

/// How often `remove` looks at the shards again.
const REMOVE_POLL_MS: u64 = 500;
/// How long `remove` waits between the last replica moved off and the
/// retirement: two tends of the official clients' partition maps.
const CLIENT_TENDS_MS: u64 = 2_000;

/// One raft group's replicas as `cluster-status` reports them.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Replicas {
    pub leader: String,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub applied: u64,
    pub commit: u64,
    /// From the leader only: each member's highest log index known
    /// replicated to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<(String, u64)>,
    /// A snapshot the answering node is fetching for this group: (bytes
    /// fetched, bytes to fetch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<(u64, u64)>,
}

/// One shard as `cluster-status` reports it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ShardLine {
    pub shard: u32,
    #[serde(flatten)]
    pub replicas: Replicas,
}

/// The whole status.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    pub members: Vec<String>,
    /// Members being removed (`aerie cluster remove`).
    pub leaving: Vec<String>,
    pub replication_factor: usize,
    /// The cluster group (its voters placed as a shard's, every other
    /// member a learner).
    pub cluster_group: Option<Replicas>,
    pub shards: Vec<ShardLine>,
    /// Every shard has `replication_factor` voters and no learner, and the
    /// cluster group has its voters and every other member as a learner.
    pub complete: bool,
}

fn names(text: &str) -> Vec<String> {
    match text {
        "-" | "" => Vec::new(),
        _ => text.split(',').map(str::to_string).collect(),
    }
}

/// Parses a `cluster-status` answer (see `src/node/cluster.rs`).
pub fn parse(answer: &str) -> Result<Status> {
    let bad = |part: &str| Error::Refused(format!("unexpected cluster-status part {part:?}"));
    let mut members = Vec::new();
    let mut leaving = Vec::new();
    let mut wanted = 1;
    let mut cluster_group = None;
    let mut shards = Vec::new();
    for part in answer.split(';').filter(|p| !p.is_empty()) {
        if let Some(list) = part.strip_prefix("members=") {
            members = names(list);
        } else if let Some(list) = part.strip_prefix("leaving=") {
            leaving = names(list);
        } else if let Some(factor) = part.strip_prefix("replication-factor=") {
            wanted = factor.parse().map_err(|_| bad(part))?;
        } else if part.starts_with("group=cluster:") {
            cluster_group = Some(parse_replicas(part).ok_or_else(|| bad(part))?);
        } else {
            let shard = field(part, "shard=")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(part))?;
            let replicas = parse_replicas(part).ok_or_else(|| bad(part))?;
            shards.push(ShardLine { shard, replicas });
        }
    }
    let group_complete = cluster_group.as_ref().is_none_or(|g| {
        g.voters.len() == wanted
            && g.voters.len() + g.learners.len() == members.len()
            && g.leader != "-"
    });
    let complete = group_complete
        && shards.iter().all(|s| {
            let r = &s.replicas;
            r.voters.len() == wanted && r.learners.is_empty() && r.leader != "-"
        });
    Ok(Status {
        members,
        leaving,
        replication_factor: wanted,
        cluster_group,
        shards,
        complete,
    })
}

fn field<'a>(part: &'a str, key: &str) -> Option<&'a str> {
    part.split(':').find_map(|kv| kv.strip_prefix(key))
}

fn parse_replicas(part: &str) -> Option<Replicas> {
    let number = |key: &str| field(part, key)?.parse::<u64>().ok();
    Some(Replicas {
        leader: field(part, "leader=")?.to_string(),
        matched: field(part, "matched=")
            .map(names)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let (name, index) = m.split_once('/')?;
                Some((name.to_string(), index.parse().ok()?))
            })
            .collect(),
        rebuild: field(part, "rebuild=").and_then(|r| {
            let (fetched, total) = r.split_once('/')?;
            Some((fetched.parse().ok()?, total.parse().ok()?))
        }),
        voters: names(field(part, "voters=")?),
        learners: names(field(part, "learners=")?),
        applied: number("applied=")?,
        commit: number("commit=")?,
    })
}

/// Per shard copying to a learner, how far each copy got: the log index
/// its leader knows replicated to it, of the leader's commit, and the
/// snapshot bytes fetched where one is being fetched. Asks every member.
fn move_progress(host: &str, status: &Status) -> BTreeMap<u32, Vec<String>> {
    let mut progress: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    if status.shards.iter().all(|s| s.replicas.learners.is_empty()) {
        return progress;
    }
    let Ok(members) = members(host) else {
        return progress;
    };
    for (name, address) in members {
        let Ok(seen) = ask_one(&address, "cluster-status").and_then(|a| parse(&a)) else {
            continue;
        };
        for line in seen.shards {
            let r = &line.replicas;
            let notes = progress.entry(line.shard).or_default();
            if let Some((fetched, total)) = r.rebuild {
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                notes.push(format!(
                    "{name} fetching a snapshot: {:.1} of {:.1} MiB",
                    mib(fetched),
                    mib(total)
                ));
            }
            if r.leader != name {
                continue;
            }
            for (learner, index) in r.matched.iter().filter(|(m, _)| r.learners.contains(m)) {
                notes.push(format!("{learner} has the log to {index} of {}", r.commit));
            }
        }
    }
    progress.retain(|_, notes| !notes.is_empty());
    progress
}

fn print_table(status: &Status, moves: &BTreeMap<u32, Vec<String>>) {
    println!(
        "members ({}): {}",
        status.members.len(),
        status.members.join(" ")
    );
    if !status.leaving.is_empty() {
        println!(
            "leaving (replicas moving off): {}",
            status.leaving.join(" ")
        );
    }
    println!(
        "{:>5}  {:<17} {:>8} {:>8}  voters / learners",
        "shard", "leader", "applied", "commit"
    );
    if let Some(group) = &status.cluster_group {
        print_row("group", group);
    }
    for s in &status.shards {
        print_row(&s.shard.to_string(), &s.replicas);
    }
    for s in status
        .shards
        .iter()
        .filter(|s| !s.replicas.learners.is_empty())
    {
        let progress = moves.get(&s.shard).map(|notes| notes.join("; "));
        println!(
            "moving: shard {} is copying to {} (learner){}",
            s.shard,
            s.replicas.learners.join(","),
            progress.map(|p| format!(": {p}")).unwrap_or_default()
        );
    }
    match status.complete {
        true => println!(
            "every shard has its replication factor ({})",
            status.replication_factor
        ),
        false => println!(
            "NOT every shard has its replication factor ({}) yet",
            status.replication_factor
        ),
    }
}

fn print_row(name: &str, r: &Replicas) {
    let learners = match r.learners.is_empty() {
        true => "-".to_string(),
        false => r.learners.join(","),
    };
    println!(
        "{:>5}  {:<17} {:>8} {:>8}  {} / {learners}",
        name,
        r.leader,
        r.applied,
        r.commit,
        r.voters.join(",")
    );
}

/// One info command's answer from `host`; an `ERROR:` answer is an error.
fn ask_one(host: &str, command: &str) -> Result<String> {
    let answers = crate::info_cmd::ask(host, &[command])?;
    let answer: String = answers.into_iter().map(|(_, v)| v).collect();
    match answer.strip_prefix("ERROR:") {
        Some(error) => Err(Error::Refused(format!("{host}: {command}: {error}"))),
        None => Ok(answer),
    }
}

/// The members' (name, service address), from `cluster-members`.
fn members(host: &str) -> Result<Vec<(String, String)>> {
    Ok(ask_one(host, "cluster-members")?
        .split(';')
        .filter_map(|m| m.split_once('='))
        .map(|(name, address)| (name.to_string(), address.to_string()))
        .collect())
}

/// Per shard, its leader's line (from the member that leads it), and the
/// cluster group's; members that do not answer are skipped.
fn leader_lines(host: &str) -> Result<(Vec<ShardLine>, Option<Replicas>)> {
    let mut shards: Vec<ShardLine> = Vec::new();
    let mut group = None;
    for (name, address) in members(host)? {
        let Ok(status) = ask_one(&address, "cluster-status").and_then(|a| parse(&a)) else {
            continue;
        };
        if let Some(g) = status.cluster_group.filter(|g| g.leader == name) {
            group = Some(g);
        }
        for line in status
            .shards
            .into_iter()
            .filter(|s| s.replicas.leader == name)
        {
            if !shards.iter().any(|s| s.shard == line.shard) {
                shards.push(line);
            }
        }
    }
    Ok((shards, group))
}

/// How many groups still hold `node` (every shard must have a leader
/// answering), or `None` while some shard's leader is unknown.
fn still_holding(host: &str, node: &str, shard_count: usize) -> Result<Option<usize>> {
    let (shards, group) = leader_lines(host)?;
    if shards.len() < shard_count {
        return Ok(None);
    }
    let holds = |r: &Replicas| r.voters.iter().chain(&r.learners).any(|n| n == node);
    let group_votes = group.is_some_and(|g| g.voters.iter().any(|n| n == node));
    Ok(Some(
        shards.iter().filter(|s| holds(&s.replicas)).count() + usize::from(group_votes),
    ))
}

/// Waits until no group holds `node`, or fails at `deadline`.
fn wait_drained(host: &str, node: &str, shard_count: usize, deadline: Instant) -> Result<()> {
    let mut last = None;
    loop {
        // A proposal made while the cluster group had no leader is lost:
        // asked again until the state shows it (it is idempotent).
        if !parse(&ask_one(host, "cluster-status")?)?
            .leaving
            .iter()
            .any(|l| l == node)
        {
            ask_one(host, &format!("cluster-leave:node={node}"))?;
        }
        let holding = still_holding(host, node, shard_count)?;
        if holding == Some(0) {
            return Ok(());
        }
        if let Some(count) = holding.filter(|_| holding != last) {
            println!("  {count} group(s) still hold a replica of {node}");
            last = holding;
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "{node} still holds replicas; it stays leaving \
                 (run this again to wait more, or with --force to retire it now)"
            )));
        }
        std::thread::sleep(Duration::from_millis(REMOVE_POLL_MS));
    }
}

fn remove(host: &str, node: &str, force: bool, timeout_secs: u64) -> Result<()> {
    let status = parse(&ask_one(host, "cluster-status")?)?;
    if !status.members.iter().any(|m| m == node) {
        return Err(Error::Refused(format!("{node} is not a member")));
    }
    let force_param = if force { ";force=true" } else { "" };
    ask_one(host, &format!("cluster-leave:node={node}{force_param}"))?;
    println!("{node} is leaving: moving its replicas and leaderships to the others");
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    if !force {
        wait_drained(host, node, status.shards.len(), deadline)?;
        // Clients tend their partition maps every second: after two tends
        // none sends the node a request any more, and requests still on
        // their way are served (proxied) while it is a member.
        std::thread::sleep(Duration::from_millis(CLIENT_TENDS_MS));
    }
    loop {
        ask_one(host, &format!("cluster-retire:node={node}"))?;
        std::thread::sleep(Duration::from_millis(REMOVE_POLL_MS));
        if !parse(&ask_one(host, "cluster-status")?)?
            .members
            .iter()
            .any(|m| m == node)
        {
            println!("{node} retired: it stops by itself");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "{node} was not retired within {timeout_secs} s"
            )));
        }
    }
}

/// Per member name, per shard ("shard=N"), its `aerie-checksums` part
/// split into the applied index and the rest (records and checksum).
type Checksums = BTreeMap<String, BTreeMap<String, (String, String)>>;

fn checksums(host: &str) -> Result<Checksums> {
    let mut all = Checksums::new();
    for (name, address) in members(host)? {
        let Ok(answer) = ask_one(&address, "aerie-checksums") else {
            continue;
        };
        let shards = answer
            .split(';')
            .filter_map(|part| {
                let mut fields = part.splitn(3, ':');
                let shard = fields.next()?.to_string();
                let applied = fields.next()?.to_string();
                Some((shard, (applied, fields.next()?.to_string())))
            })
            .collect();
        all.insert(name, shards);
    }
    Ok(all)
}

/// One shard's replicas: `Some(agree)` once every voter reported it at one
/// applied index, `None` while they are not.
fn compare(line: &ShardLine, sums: &Checksums) -> Option<bool> {
    let key = format!("shard={}", line.shard);
    let reported: Vec<&(String, String)> = line
        .replicas
        .voters
        .iter()
        .map(|v| sums.get(v).and_then(|m| m.get(&key)))
        .collect::<Option<_>>()?;
    let one_index = reported.windows(2).all(|w| w[0].0 == w[1].0);
    one_index.then(|| reported.windows(2).all(|w| w[0].1 == w[1].1))
}

/// The partitions of `shard` whose records differ between its voters.
fn differing_partitions(host: &str, line: &ShardLine) -> Result<Vec<String>> {
    let addresses: BTreeMap<String, String> = members(host)?.into_iter().collect();
    let mut by_partition: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for voter in &line.replicas.voters {
        let Some(address) = addresses.get(voter) else {
            continue;
        };
        let answer = ask_one(
            address,
            &format!("aerie-partition-checksums:shard={}", line.shard),
        )?;
        for part in answer.split(';').filter(|p| !p.starts_with("applied=")) {
            if let Some((partition, sum)) = part.split_once('=') {
                by_partition
                    .entry(partition.to_string())
                    .or_default()
                    .push(format!("{voter}:{sum}"));
            }
        }
    }
    Ok(by_partition
        .into_iter()
        .filter(|(_, sums)| {
            let values: Vec<&str> = sums.iter().filter_map(|s| s.split(':').nth(1)).collect();
            values.windows(2).any(|w| w[0] != w[1])
        })
        .map(|(partition, sums)| format!("partition {partition}: {}", sums.join(" ")))
        .collect())
}

fn check(host: &str, timeout_secs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let (mut agree, mut differ) = (Vec::new(), Vec::new());
    let total = parse(&ask_one(host, "cluster-status")?)?.shards.len();
    let mut pending: Vec<ShardLine> = leader_lines(host)?.0;
    let leaderless = total.saturating_sub(pending.len());
    while !pending.is_empty() && Instant::now() < deadline {
        let sums = checksums(host)?;
        let mut busy = Vec::new();
        for line in pending {
            match compare(&line, &sums) {
                Some(true) => agree.push(line.shard),
                Some(false) => differ.push(line),
                None => busy.push(line),
            }
        }
        pending = busy;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(REMOVE_POLL_MS));
            // Voters may have changed meanwhile: take the leaders' lines again.
            let fresh = leader_lines(host)?.0;
            pending = fresh
                .into_iter()
                .filter(|l| pending.iter().any(|p| p.shard == l.shard))
                .collect();
        }
    }
    for line in &differ {
        println!(
            "shard {} DIFFERS between {}:",
            line.shard,
            line.replicas.voters.join(",")
        );
        for partition in differing_partitions(host, line)? {
            println!("  {partition}");
        }
    }
    for line in &pending {
        println!(
            "shard {}: its replicas were never at one applied index within {timeout_secs} s (busy)",
            line.shard
        );
    }
    if leaderless > 0 {
        println!("{leaderless} shard(s) had no leader answering: not checked");
    }
    println!("{} shard(s) agree on every replica", agree.len());
    if differ.is_empty() && pending.is_empty() && leaderless == 0 {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{} shard(s) differ, {} never settled, {leaderless} not checked",
            differ.len(),
            pending.len()
        )))
    }
}

/// Per shard, the newest consistency check any member judged: its log
/// index and verdict (`aerie-check-verdicts`).
fn newest_verdicts(host: &str) -> Result<BTreeMap<u32, (u64, String)>> {
    let mut newest: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for (_, address) in members(host)? {
        let Ok(answer) = ask_one(&address, CHECK_VERDICTS) else {
            continue;
        };
        for part in answer.split(';') {
            let shard = field(part, "shard=").and_then(|v| v.parse().ok());
            let index = field(part, "index=").and_then(|v| v.parse().ok());
            let verdict = part.split_once(":verdict=").map(|(_, v)| v.to_string());
            if let (Some(shard), Some(index), Some(verdict)) = (shard, index, verdict)
                && newest.get(&shard).is_none_or(|(at, _)| *at < index)
            {
                newest.insert(shard, (index, verdict));
            }
        }
    }
    Ok(newest)
}

/// `check --deep`: every member's leaders propose a check of their shards
/// now; waits until every shard with two voters or more has a verdict newer
/// than before, and prints those that are not `agree`.
fn deep_check(host: &str, timeout_secs: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let before = newest_verdicts(host)?;
    let mut waiting: Vec<u32> = leader_lines(host)?
        .0
        .iter()
        .filter(|l| l.replicas.voters.len() > 1)
        .map(|l| l.shard)
        .collect();
    for (_, address) in members(host)? {
        // A member that does not answer leads nothing a client can reach:
        // its shards show as never checked.
        let _ = ask_one(&address, CHECK_NOW);
    }
    let mut judged: BTreeMap<u32, String> = BTreeMap::new();
    while !waiting.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(REMOVE_POLL_MS));
        let now = newest_verdicts(host)?;
        waiting.retain(|shard| match now.get(shard) {
            Some((index, verdict)) if before.get(shard).is_none_or(|(at, _)| at < index) => {
                judged.insert(*shard, verdict.clone());
                false
            }
            _ => true,
        });
    }
    let bad: Vec<(&u32, &String)> = judged.iter().filter(|(_, v)| *v != "agree").collect();
    for (shard, verdict) in &bad {
        println!("shard {shard}: deep check: {verdict}");
    }
    for shard in &waiting {
        println!("shard {shard}: deep check not judged within {timeout_secs} s");
    }
    println!(
        "{} shard(s): every record of every replica read and alike",
        judged.len() - bad.len()
    );
    if bad.is_empty() && waiting.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "deep check: {} shard(s) differ, {} not judged",
            bad.len(),
            waiting.len()
        )))
    }
}

/// Runs the command.
pub fn run(command: ClusterCommand) -> Result<()> {
    let (host, json) = match command {
        ClusterCommand::Status { host, json } => (host, json),
        ClusterCommand::Check {
            host,
            timeout_secs,
            deep,
        } => {
            let quick = check(&host, timeout_secs);
            let deep = if deep {
                deep_check(&host, timeout_secs)
            } else {
                Ok(())
            };
            return quick.and(deep);
        }
        ClusterCommand::Remove {
            node,
            host,
            force,
            timeout_secs,
        } => return remove(&host, &node, force, timeout_secs),
    };
    let status = parse(&ask_one(&host, "cluster-status")?)?;
    if json {
        let text =
            serde_json::to_string_pretty(&status).map_err(|e| Error::Refused(e.to_string()))?;
        println!("{text}");
    } else {
        print_table(&status, &move_progress(&host, &status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_parses_and_completeness_is_judged() {
        let answer = "members=A,B,C;leaving=C;replication-factor=3;\
                      shard=0:leader=A:voters=A,B,C:learners=-:applied=8:commit=8;\
                      shard=1:leader=-:voters=A,B:learners=C:applied=3:commit=4:matched=A/4,C/2:rebuild=10/40";
        let status = parse(answer).unwrap();
        assert_eq!(status.members, ["A", "B", "C"]);
        assert_eq!(status.leaving, ["C"]);
        assert_eq!(status.shards.len(), 2);
        assert_eq!(status.shards[1].replicas.learners, ["C"]);
        let moving = &status.shards[1].replicas;
        assert_eq!(moving.matched, [("A".to_string(), 4), ("C".to_string(), 2)]);
        assert_eq!(moving.rebuild, Some((10, 40)));
        assert!(status.shards[0].replicas.matched.is_empty());
        assert!(!status.complete);
        let with_group = |group: &str| {
            parse(&format!(
                "members=A,B,C,D;replication-factor=3;group=cluster:{group};\
                 shard=0:leader=A:voters=A,B,C:learners=-:applied=8:commit=8"
            ))
            .unwrap()
        };
        let whole = with_group("leader=B:voters=A,B,C:learners=D:applied=4:commit=4");
        assert_eq!(whole.cluster_group.as_ref().unwrap().learners, ["D"]);
        assert!(whole.complete);
        let d_missing = with_group("leader=B:voters=A,B,C:learners=-:applied=4:commit=4");
        assert!(
            !d_missing.complete,
            "every member replicates the cluster group"
        );
        let full = parse(
            "members=A;replication-factor=1;shard=0:leader=A:voters=A:learners=-:applied=1:commit=1",
        )
        .unwrap();
        assert!(full.complete);
        assert!(parse("shard=x:leader=A").is_err());
    }

    #[test]
    fn replicas_are_compared_only_at_one_applied_index() {
        let line = parse("shard=3:leader=A:voters=A,B:learners=-:applied=9:commit=9")
            .unwrap()
            .shards
            .remove(0);
        let sums = |a: &str, b: &str| -> Checksums {
            [("A", a), ("B", b)]
                .into_iter()
                .map(|(name, part)| {
                    let (applied, rest) = part.split_once(':').unwrap();
                    let shard = [("shard=3".to_string(), (applied.into(), rest.into()))];
                    (name.to_string(), shard.into_iter().collect())
                })
                .collect()
        };
        let same = "applied=9:records=4:checksum=00ff";
        assert_eq!(compare(&line, &sums(same, same)), Some(true));
        assert_eq!(
            compare(&line, &sums(same, "applied=9:records=4:checksum=00fe")),
            Some(false)
        );
        assert_eq!(
            compare(&line, &sums(same, "applied=8:records=3:checksum=0001")),
            None,
            "not at one index yet"
        );
        let mut missing = sums(same, same);
        missing.remove("B");
        assert_eq!(compare(&line, &missing), None);
    }
}
