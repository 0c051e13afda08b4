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

/// One shard as `cluster-status` reports it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ShardLine {
    pub shard: u32,
    pub leader: String,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub applied: u64,
    pub commit: u64,
}

/// The whole status.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    pub members: Vec<String>,
    pub replication_factor: usize,
    pub shards: Vec<ShardLine>,
    /// Every shard has `replication_factor` voters and no learner.
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
    let mut shards = Vec::new();
    for part in answer.split(';').filter(|p| !p.is_empty()) {
        if let Some(list) = part.strip_prefix("members=") {
            members = names(list);
            continue;
        }
        if let Some(factor) = part.strip_prefix("replication-factor=") {
            wanted = factor.parse().map_err(|_| bad(part))?;
            continue;
        }
        let field = |key: &str| {
            part.split(':')
                .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
                .ok_or_else(|| bad(part))
        };
        let number = |key: &str| field(key)?.parse::<u64>().map_err(|_| bad(part));
        shards.push(ShardLine {
            shard: u32::try_from(number("shard=")?).map_err(|_| bad(part))?,
            leader: field("leader=")?,
            voters: names(&field("voters=")?),
            learners: names(&field("learners=")?),
            applied: number("applied=")?,
            commit: number("commit=")?,
        });
    }
    let complete = shards
        .iter()
        .all(|s| s.voters.len() == wanted && s.learners.is_empty() && s.leader != "-");
    Ok(Status {
        members,
        replication_factor: wanted,
        shards,
        complete,
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
    for s in &status.shards {
        println!(
            "{:>5}  {:<17} {:>8} {:>8}  {} / {}",
            s.shard,
            s.leader,
            s.applied,
            s.commit,
            s.voters.join(","),
            if s.learners.is_empty() {
                "-".to_string()
            } else {
                s.learners.join(",")
            }
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
        assert_eq!(status.shards[1].learners, ["C"]);
        assert!(!status.complete);
        let full = parse(
            "members=A;replication-factor=1;shard=0:leader=A:voters=A:learners=-:applied=1:commit=1",
        )
        .unwrap();
        assert!(full.complete);
        assert!(parse("shard=x:leader=A").is_err());
    }
}
