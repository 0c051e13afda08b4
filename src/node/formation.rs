//! How a starting node finds its cluster: a data dir that already belongs to
//! one rejoins it (seeds ignored); a new data dir with seeds joins theirs
//! (the seed answers with the cluster's id, name, shard count and members);
//! a new data dir without seeds forms a new cluster of one. A data dir whose
//! node the cluster retired (`RETIRED`) is emptied and joins as a new
//! member, through the members the marker names and the seeds. The fabric
//! is started first, since joining goes over it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerie_replication::cluster::{JoinRequest, MemberInfo, MemberList};
use aerie_replication::fabric::format::refused;
use aerie_replication::fabric::{FabricConfig, TcpTransport};
use aerie_replication::{Error as ReplicationError, HandshakeRefusal};
use sha2::{Digest as _, Sha256};

use super::config::NodeFileConfig;
use crate::datadir::{self, CLUSTER_FILE, ClusterMeta, DataDir, random_id};
use crate::error::{Error, Result};

/// How long a joining node keeps trying its seeds.
const JOIN_DEADLINE_MS: u64 = 60_000;
/// One join attempt's deadline.
const JOIN_ATTEMPT_MS: u64 = 3_000;
/// Pause between rounds over the seeds.
const JOIN_RETRY_MS: u64 = 500;

/// What a starting node found.
pub struct Formed {
    pub dd: DataDir,
    pub transport: Arc<TcpTransport>,
    pub members: MemberList,
    pub me: MemberInfo,
    /// A new member: its shards start with no configuration and learn it
    /// from their leaders.
    pub joining: bool,
}

/// The seeds to join through: the configured ones, and for a directory
/// the cluster retired the members its marker names (then emptied).
fn seeds_of(config: &NodeFileConfig) -> Result<Vec<String>> {
    let mut seeds = config.cluster.seeds.clone();
    if let Some(members) = datadir::clear_retired(&config.node.data_dir)? {
        tracing::warn!(data_dir = %config.node.data_dir.display(), ?members, "the cluster retired this node: its data dir was emptied; joining again as a new member");
        for member in members {
            if !seeds.contains(&member) {
                seeds.push(member);
            }
        }
    }
    Ok(seeds)
}

/// The fabric's 16-byte cluster id: derived from the cluster *name*, so a
/// joining node can prove it before it knows anything else. (The data dir's
/// random `cluster_id` is the one member lists are checked against.)
fn fabric_cluster_id(cluster_name: &str) -> [u8; 16] {
    let digest = Sha256::digest(cluster_name.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // A secret written with `echo` ends with a newline that is not part of it.
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

fn parse_addr(what: &str, text: &str) -> Result<SocketAddr> {
    text.parse()
        .map_err(|e| Error::Refused(format!("{what} {text:?} is not an ip:port address: {e}")))
}

fn start_fabric(config: &NodeFileConfig, node_id: u64) -> Result<Arc<TcpTransport>> {
    let listen = parse_addr("cluster.fabric_address", &config.fabric_address())?;
    let mut fabric = FabricConfig::new(
        node_id,
        fabric_cluster_id(&config.node.cluster_name),
        listen,
    );
    fabric.secret = config
        .cluster
        .secret_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    TcpTransport::start(fabric).map_err(|e| Error::Refused(format!("fabric: {e}")))
}

/// Finds (or forms, or joins) the node's cluster.
pub fn form(config: &NodeFileConfig) -> Result<Formed> {
    let root = &config.node.data_dir;
    let seeds = seeds_of(config)?;
    let existing = if root.join(CLUSTER_FILE).exists() {
        Some(super::open_data_dir(config)?)
    } else {
        None
    };
    let node_id = match (&existing, config.node.node_id) {
        (Some(dd), _) => dd.meta().node_id,
        (None, 0) => random_id(),
        (None, id) => id,
    };
    let transport = start_fabric(config, node_id)?;
    let fabric_addr = match (
        config.cluster.fabric_port,
        &config.cluster.fabric_advertise_address,
    ) {
        (_, advertised) if !advertised.is_empty() => {
            parse_addr("cluster.fabric_advertise_address", advertised)?
        }
        // Port 0 picks a free one (tests): advertise the one bound.
        (0, _) => transport.local_addr(),
        _ => parse_addr("cluster.fabric_address", &config.fabric_address())?,
    };
    let me = MemberInfo {
        node_id,
        fabric_addr,
        service_addr: format!("{}:{}", config.service.address, config.service.port),
    };
    let (dd, members, joining) = match existing {
        Some(dd) => {
            // The members it knew are in its cluster group's state, which
            // the group loads as it opens.
            let members = alone(dd.meta(), &me);
            (dd, members, false)
        }
        None if seeds.is_empty() => {
            let dd = super::create_data_dir(config, node_id, random_id(), config.node.shards, 0)?;
            let members = alone(dd.meta(), &me);
            tracing::info!(cluster_id = members.cluster_id, "formed a new cluster");
            (dd, members, false)
        }
        None => {
            let request = JoinRequest {
                member: me.clone(),
                incarnation: random_id(),
            };
            let members = join(config, &seeds, &transport, &request)?;
            let dd = super::create_data_dir(
                config,
                node_id,
                members.cluster_id,
                members.shards,
                request.incarnation,
            )?;
            datadir::forget_retired(root)?;
            (dd, members, true)
        }
    };
    Ok(Formed {
        dd,
        transport,
        members,
        me,
        joining,
    })
}

/// A cluster of one: this node.
fn alone(meta: &ClusterMeta, me: &MemberInfo) -> MemberList {
    MemberList {
        cluster_id: meta.cluster_id,
        cluster_name: meta.cluster_name.clone(),
        shards: meta.shards,
        version: 1,
        members: vec![me.clone()],
    }
}

/// Why no seed will ever let this node in under its id, if a seed said so.
fn refused_for_good(error: &ReplicationError, node_id: u64) -> Option<String> {
    let ReplicationError::Handshake { reason, .. } = error else {
        return None;
    };
    let why = match reason {
        HandshakeRefusal::RetiredByMember(_) => "was retired from the cluster",
        HandshakeRefusal::ByPeer(refused::ID_IN_USE) => {
            "belongs to a member (a new data dir must not take a member's id: a \
             member that forgot its votes and log could elect a leader lacking \
             committed writes)"
        }
        _ => return None,
    };
    Some(format!(
        "node id {} {why}; remove node.node_id from the config so that a new id is picked",
        aerie_protocol::info::node_name(node_id)
    ))
}

/// Asks the seeds in turn until one lets this node in.
fn join(
    config: &NodeFileConfig,
    seeds: &[String],
    transport: &TcpTransport,
    request: &JoinRequest,
) -> Result<MemberList> {
    let seeds = seeds
        .iter()
        .map(|s| parse_addr("seed", s))
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_millis(JOIN_DEADLINE_MS);
    loop {
        for seed in &seeds {
            match transport.join(*seed, request.clone(), JOIN_ATTEMPT_MS) {
                Ok(list) if list.cluster_name == config.node.cluster_name => {
                    tracing::info!(%seed, cluster_id = list.cluster_id, members = list.members.len(), "joined the cluster");
                    return Ok(list);
                }
                Ok(list) => {
                    return Err(Error::Refused(format!(
                        "seed {seed} belongs to cluster {:?}, this node is configured for {:?}",
                        list.cluster_name, config.node.cluster_name
                    )));
                }
                Err(e) => {
                    if let Some(why) = refused_for_good(&e, request.member.node_id) {
                        return Err(Error::Refused(format!(
                            "seed {seed} refused this node: {why}"
                        )));
                    }
                    tracing::warn!(%seed, error = %e, "joining through a seed failed");
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused(format!(
                "no seed of {seeds:?} let this node join within {JOIN_DEADLINE_MS} ms"
            )));
        }
        std::thread::sleep(Duration::from_millis(JOIN_RETRY_MS));
    }
}
