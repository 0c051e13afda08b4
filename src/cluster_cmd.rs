//! `aerie cluster status`: the members and, per shard, the leader, voters,
//! learners, applied and commit index, as one node sees them (its
//! `cluster-status` info answer), and whether every shard has its full
//! replication factor.

use clap::Subcommand;
use serde::Serialize;

use crate::error::{Error, Result};

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
}

/// One raft group's replicas as `cluster-status` reports them.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Replicas {
    pub leader: String,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub applied: u64,
    pub commit: u64,
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
    let mut wanted = 1;
    let mut cluster_group = None;
    let mut shards = Vec::new();
    for part in answer.split(';').filter(|p| !p.is_empty()) {
        if let Some(list) = part.strip_prefix("members=") {
            members = names(list);
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
        voters: names(field(part, "voters=")?),
        learners: names(field(part, "learners=")?),
        applied: number("applied=")?,
        commit: number("commit=")?,
    })
}

fn print_table(status: &Status) {
    println!(
        "members ({}): {}",
        status.members.len(),
        status.members.join(" ")
    );
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

/// Runs the command.
pub fn run(command: ClusterCommand) -> Result<()> {
    let ClusterCommand::Status { host, json } = command;
    let answers = crate::info_cmd::ask(&host, &["cluster-status"])?;
    let answer: String = answers.into_iter().map(|(_, v)| v).collect();
    let status = parse(&answer)?;
    if json {
        let text =
            serde_json::to_string_pretty(&status).map_err(|e| Error::Refused(e.to_string()))?;
        println!("{text}");
    } else {
        print_table(&status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_parses_and_completeness_is_judged() {
        let answer = "members=A,B,C;replication-factor=3;\
                      shard=0:leader=A:voters=A,B,C:learners=-:applied=8:commit=8;\
                      shard=1:leader=-:voters=A,B:learners=C:applied=3:commit=4";
        let status = parse(answer).unwrap();
        assert_eq!(status.members, ["A", "B", "C"]);
        assert_eq!(status.shards.len(), 2);
        assert_eq!(status.shards[1].replicas.learners, ["C"]);
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
}
