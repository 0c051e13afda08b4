//! Real `aerie node` processes forming a cluster from seeds, as the README
//! shows, driven by the official `aerospike` Rust client: every shard gets
//! three voters, a client seeded with one node finds them all, column 0 of
//! the nodes' `replicas` covers every partition exactly once, a SIGKILLed
//! node's shards get new leaders and lose no acknowledged increment, the
//! node catches up when it comes back, a graceful stop costs no client
//! error, and every node answers writes for every shard (proxying them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aerie_protocol::info::parse_replicas;
use aerospike::{Bins, Client, ClientPolicy, ReadPolicy, Value, WritePolicy, as_bin, as_key};
use common::{NodeProcess, free_port};

const KEYS: i64 = 40;
const WAIT: Duration = Duration::from_secs(60);

async fn info(address: &str, name: &str) -> String {
    let mut conn = aerie::client::Connection::connect(address).await.unwrap();
    let answers = conn.info(&[name]).await.unwrap();
    answers.into_iter().map(|(_, v)| v).collect()
}

/// Per shard of `cluster-status`: (leader name, voter count, learner count).
async fn shards(address: &str) -> Vec<(String, usize, usize)> {
    let status = info(address, "cluster-status").await;
    status
        .split(';')
        .filter(|part| part.starts_with("shard="))
        .map(|part| {
            let field = |key: &str| {
                part.split(':')
                    .find_map(|kv| kv.strip_prefix(key))
                    .unwrap_or("-")
                    .to_string()
            };
            let count = |names: String| {
                if names == "-" {
                    0
                } else {
                    names.split(',').count()
                }
            };
            (
                field("leader="),
                count(field("voters=")),
                count(field("learners=")),
            )
        })
        .collect()
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Column 0 of every node's `replicas`, counted per partition.
async fn masters(addresses: &[String]) -> Vec<u32> {
    let mut owners = vec![0u32; 4096];
    for address in addresses {
        let text = info(address, "replicas").await;
        let entries = parse_replicas(&text).unwrap();
        let bitmap = &entries[0].columns[0];
        for (p, owner) in owners.iter_mut().enumerate() {
            if bitmap.0[p >> 3] & (0x80 >> (p & 7)) != 0 {
                *owner += 1;
            }
        }
    }
    owners
}

/// Increments every key once through `client`, retrying a refused write;
/// counts what was acknowledged and what is in doubt.
async fn increment_all(client: &Client, acked: &mut BTreeMap<i64, i64>, unknown: &mut i64) {
    let wp = WritePolicy::default();
    for k in 0..KEYS {
        let key = as_key!("test", "c", k);
        let deadline = Instant::now() + WAIT;
        loop {
            match client.add(&wp, &key, &[as_bin!("n", 1)]).await {
                Ok(()) => {
                    *acked.entry(k).or_default() += 1;
                    break;
                }
                Err(e) if e.in_doubt() || e.is_client_timeout() => {
                    eprintln!("key {k}: in doubt: {e}");
                    *unknown += 1;
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "key {k}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn check_counters(client: &Client, acked: &BTreeMap<i64, i64>, unknown: i64) {
    for k in 0..KEYS {
        let record = client
            .get(&ReadPolicy::default(), &as_key!("test", "c", k), Bins::All)
            .await;
        // A key whose only write was in doubt and did not apply is absent.
        let value = match record {
            Err(e) if e.server_result_code() == Some(aerospike::ResultCode::KeyNotFoundError) => 0,
            record => match record.unwrap().bins.get("n") {
                Some(Value::Int(v)) => *v,
                other => panic!("key {k}: {other:?}"),
            },
        };
        let floor = acked.get(&k).copied().unwrap_or(0);
        assert!(
            value >= floor && value <= floor + unknown,
            "key {k}: {value}, acknowledged {floor}, in doubt {unknown}"
        );
    }
}

/// `n` members on free ports: the first forms the cluster, the others join
/// through its fabric port. Returns the processes, their (service, fabric)
/// ports and service addresses.
fn start_cluster(
    dir: &std::path::Path,
    n: usize,
) -> (Vec<NodeProcess>, Vec<(u16, u16)>, Vec<String>) {
    start_cluster_env(dir, n, &[])
}

/// [`start_cluster`] with extra environment for every node.
fn start_cluster_env(
    dir: &std::path::Path,
    n: usize,
    env: &[(&str, String)],
) -> (Vec<NodeProcess>, Vec<(u16, u16)>, Vec<String>) {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let seed = ports[0].1;
    let nodes = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, fabric))| {
            let seeds: &[u16] = if i == 0 { &[] } else { &[seed] };
            NodeProcess::start_member_env(&dir.join(format!("d{i}")), port, fabric, seeds, env)
        })
        .collect();
    let addresses = ports
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    (nodes, ports, addresses)
}

/// Waits until every shard has `voters` voters and no learner as the first
/// node sees it, every node lists every node as a member and sees the
/// cluster group complete (its voters, every other member a learner), and
/// column 0 of all nodes covers each partition once.
async fn wait_complete(addresses: &[String], voters: usize) {
    eventually("every shard at its voters", || async {
        shards(&addresses[0])
            .await
            .iter()
            .all(|&(_, v, learners)| v == voters && learners == 0)
    })
    .await;
    eventually(
        "every node to see every member and the whole cluster group",
        || async {
            for address in addresses {
                let status =
                    aerie::cluster_cmd::parse(&info(address, "cluster-status").await).unwrap();
                let group = status.cluster_group.as_ref().expect("a cluster group");
                if status.members.len() != addresses.len()
                    || group.voters.len() != voters
                    || group.voters.len() + group.learners.len() != addresses.len()
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    eventually("column 0 to cover every partition once", || async {
        masters(addresses).await.iter().all(|&owners| owners == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_from_seeds_replicate_fail_over_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let (started, ports, mut addresses) = start_cluster(dir.path(), 3);
    let seed = ports[0].1;
    let data = |i: usize| dir.path().join(format!("d{i}"));
    let mut nodes: Vec<Option<NodeProcess>> = started.into_iter().map(Some).collect();
    for address in &addresses {
        eventually("every shard at three voters", || async {
            shards(address)
                .await
                .iter()
                .all(|&(_, voters, learners)| voters == 3 && learners == 0)
        })
        .await;
    }
    assert!(
        info(&addresses[0], "namespace/test")
            .await
            .contains("replication-factor=3")
    );
    eventually("column 0 to cover every partition once", || async {
        masters(&addresses).await.iter().all(|&owners| owners == 1)
    })
    .await;

    // A client seeded with the first node reaches all three.
    let client = Client::new(&ClientPolicy::default(), &addresses[0])
        .await
        .unwrap();
    eventually("the client to see every node", || async {
        client.nodes().len() == 3
    })
    .await;
    let mut acked = BTreeMap::new();
    let mut unknown = 0;
    increment_all(&client, &mut acked, &mut unknown).await;
    // Clients seeded with the other nodes read the same.
    for address in &addresses[1..] {
        let other = Client::new(&ClientPolicy::default(), address)
            .await
            .unwrap();
        check_counters(&other, &acked, unknown).await;
    }

    // SIGKILL the node leading shard 0: its shards get new leaders.
    let leader = shards(&addresses[0]).await[0].0.clone();
    let victim = {
        let mut found = None;
        for (i, address) in addresses.iter().enumerate() {
            if info(address, "node").await == leader {
                found = Some(i);
            }
        }
        found.unwrap()
    };
    nodes[victim].take().unwrap().kill();
    let live = (victim + 1) % 3;
    let survivor = Client::new(&ClientPolicy::default(), &addresses[live])
        .await
        .unwrap();
    for _ in 0..3 {
        increment_all(&survivor, &mut acked, &mut unknown).await;
    }
    check_counters(&survivor, &acked, unknown).await;

    // It comes back with its data, on another service port, and catches
    // up; the cluster group spreads its new address to every member.
    let port = free_port();
    addresses[victim] = format!("127.0.0.1:{port}");
    nodes[victim] = Some(NodeProcess::start_member(
        &data(victim),
        port,
        ports[victim].1,
        &[seed],
    ));
    for (_, address) in addresses.iter().enumerate().filter(|&(i, _)| i != victim) {
        eventually("every member to tell clients the new address", || async {
            info(address, "peers-clear-std")
                .await
                .contains(&format!(":{port}]"))
        })
        .await;
    }
    eventually("the restarted node to catch up", || async {
        let mut applied = Vec::new();
        for address in &addresses {
            applied.push(info(address, "cluster-status").await);
        }
        let commits: Vec<Vec<String>> = applied
            .iter()
            .map(|s| {
                s.split(';')
                    .filter_map(|p| {
                        // "applied=N:commit=M", without what only the
                        // leader adds (matched=...).
                        let rest = p.split(":applied=").nth(1)?;
                        let fields: Vec<&str> = rest.split(':').take(2).collect();
                        Some(fields.join(":"))
                    })
                    .collect()
            })
            .collect();
        commits.windows(2).all(|w| w[0] == w[1])
    })
    .await;
    increment_all(&survivor, &mut acked, &mut unknown).await;
    check_counters(&survivor, &acked, unknown).await;
    eventually("column 0 to cover every partition once again", || async {
        masters(&addresses).await.iter().all(|&owners| owners == 1)
    })
    .await;
}

/// Increments keys through `client` until `stop` says so; returns the
/// acknowledged increments and every error seen.
async fn load(
    client: std::sync::Arc<Client>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (BTreeMap<i64, i64>, Vec<String>) {
    let mut acked = BTreeMap::new();
    let mut errors = Vec::new();
    let wp = WritePolicy::default();
    let deadline = Instant::now() + WAIT;
    let mut n = 0i64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        let k = n % KEYS;
        n += 1;
        match client
            .add(&wp, &as_key!("test", "t", k), &[as_bin!("n", 1)])
            .await
        {
            Ok(()) => *acked.entry(k).or_default() += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    (acked, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leaderships_off_and_costs_clients_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _, addresses) = start_cluster(dir.path(), 3);
    wait_complete(&addresses, 3).await;
    let client = std::sync::Arc::new(
        Client::new(&ClientPolicy::default(), &addresses[1])
            .await
            .unwrap(),
    );
    eventually("the client to see every node", || async {
        client.nodes().len() == 3
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(load(client.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The founder leads shards (it led all at first): stop it gracefully.
    let founder = nodes.remove(0);
    let code = tokio::task::spawn_blocking(move || founder.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, errors) = writer.await.unwrap();
    let total: i64 = acked.values().sum();
    assert!(
        total > 50,
        "the load barely ran: {acked:?}, errors {errors:?}"
    );
    // Leaderships handed off, requests on the stopping node proxied to the
    // new leaders until it closes: a rolling restart costs no client error.
    eprintln!("{total} increments acknowledged across the graceful stop");
    assert!(
        errors.is_empty(),
        "client errors across a graceful stop: {errors:?}"
    );
    assert_exact(&client, &acked).await;
}

/// Every key [`load`] incremented holds exactly its acknowledged count.
async fn assert_exact(client: &Client, acked: &BTreeMap<i64, i64>) {
    for (k, n) in acked {
        let record = client
            .get(&ReadPolicy::default(), &as_key!("test", "t", *k), Bins::All)
            .await
            .unwrap();
        let value = match record.bins.get("n") {
            Some(Value::Int(v)) => *v,
            other => panic!("key {k}: {other:?}"),
        };
        assert_eq!(value, *n, "key {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_factor_three_give_every_shard_three_voters_on_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, addresses) = start_cluster(dir.path(), 5);
    eventually("five members everywhere", || async {
        let mut all = true;
        for address in &addresses {
            let peers = info(address, "peers-clear-std").await;
            all &= peers.matches("[127.0.0.1").count() == 4;
        }
        all
    })
    .await;
    wait_complete(&addresses, 3).await;
    let rf = info(&addresses[2], "namespace/test").await;
    assert!(rf.contains("replication-factor=3"), "{rf}");
    // Moves toward each shard's ideal voters may still be in flight: the
    // command says complete once they are done.
    let status_json = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
            .args(["cluster", "status", "--json", "--host", &addresses[0]])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually("aerie cluster status to say complete", || async {
        status_json().contains("\"complete\": true")
    })
    .await;
    assert!(status_json().contains("\"replication_factor\": 3"));
    let client = Client::new(&ClientPolicy::default(), &addresses[3])
        .await
        .unwrap();
    eventually("the client to see every node", || async {
        client.nodes().len() == 5
    })
    .await;
    let mut acked = BTreeMap::new();
    let mut unknown = 0;
    increment_all(&client, &mut acked, &mut unknown).await;
    check_counters(&client, &acked, unknown).await;
    every_node_takes_writes_for_every_shard(&client, &addresses).await;
    drop(nodes);
}

/// `aerie bench` sends every request to the one node it is given, whatever
/// the partition map says: each node must answer writes for shards it does
/// not lead (proxied to their leaders) and for shards it holds no replica of.
async fn every_node_takes_writes_for_every_shard(client: &Client, addresses: &[String]) {
    const BENCH_KEYS: i64 = 200;
    for (i, address) in addresses.iter().enumerate() {
        let set = format!("entry{i}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
            .args([
                "bench",
                "--workload",
                "insert",
                "--connections",
                "4",
                "--host",
                address,
            ])
            .args(["--set", &set, "--keys", &BENCH_KEYS.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(" 0 errors"),
            "writes through {address}: {text}"
        );
        for k in 0..BENCH_KEYS {
            let key = as_key!("test", set.as_str(), k);
            let record = client.get(&ReadPolicy::default(), &key, Bins::All).await;
            assert!(
                record.is_ok(),
                "key {k} written through {address}: {record:?}"
            );
        }
    }
}

/// [`start_cluster_env`], waited on until complete with factor 3.
async fn complete_cluster(
    dir: &std::path::Path,
    n: usize,
    env: &[(&str, String)],
) -> (Vec<Option<NodeProcess>>, Vec<(u16, u16)>, Vec<String>) {
    let (started, ports, addresses) = start_cluster_env(dir, n, env);
    wait_complete(&addresses, 3).await;
    (started.into_iter().map(Some).collect(), ports, addresses)
}

/// The names `node` answers on each address.
async fn names(addresses: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for address in addresses {
        names.push(info(address, "node").await);
    }
    names
}

/// Waits until every node reports the same applied index, record count
/// and checksum for every shard (`aerie-checksums`; every node holds every
/// shard).
async fn wait_checksums_agree(addresses: &[String]) {
    eventually("every replica's checksums to agree", || async {
        let mut answers = Vec::new();
        for address in addresses {
            answers.push(info(address, "aerie-checksums").await);
        }
        !answers[0].is_empty() && answers.windows(2).all(|w| w[0] == w[1])
    })
    .await;
}

/// Waits until no node names `node` in its cluster status: not a member,
/// no shard's voter or learner.
async fn wait_gone(addresses: &[String], node: &str) {
    eventually("the old member to be gone everywhere", || async {
        for address in addresses {
            if info(address, "cluster-status").await.contains(node) {
                return false;
            }
        }
        true
    })
    .await;
}

/// Waits for the process to exit by itself; its exit code.
fn wait_exit(node: &mut NodeProcess) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the node did not exit: {}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_comes_back_as_a_new_member_and_may_not_reuse_its_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, ports, addresses) = complete_cluster(dir.path(), 3, &[]).await;
    let client = Client::new(&ClientPolicy::default(), &addresses[0])
        .await
        .unwrap();
    let (mut acked, mut unknown) = (BTreeMap::new(), 0);
    increment_all(&client, &mut acked, &mut unknown).await;

    // Node 2's disk is replaced: its data dir is gone.
    let old_name = info(&addresses[2], "node").await;
    let data = dir.path().join("d2");
    nodes[2].take().unwrap().kill();
    std::fs::remove_dir_all(&data).unwrap();
    increment_all(&client, &mut acked, &mut unknown).await;

    // Started again with its old id forced: refused, saying why.
    let old_id = u64::from_str_radix(&old_name, 16).unwrap();
    let (port, fabric) = ports[2];
    let seeds = [("AERIE_SEEDS", format!("127.0.0.1:{}", ports[0].1))];
    let forced = [
        ("AERIE_FABRIC_PORT", fabric.to_string()),
        seeds[0].clone(),
        ("AERIE_NODE_ID", old_id.to_string()),
    ];
    let mut refused = NodeProcess::spawn_env(&data, port, None, false, &forced);
    assert_ne!(wait_exit(&mut refused), Some(0));
    let log = refused.log_text();
    assert!(log.contains("belongs to a member"), "{log}");
    drop(refused);

    // Started plainly: a new identity, the old one retired, every shard
    // rebuilt to three voters, no acknowledged increment lost.
    nodes[2] = Some(NodeProcess::start_member(
        &data,
        port,
        fabric,
        &[ports[0].1],
    ));
    wait_gone(&addresses, &old_name).await;
    wait_complete(&addresses, 3).await;
    let now = names(&addresses).await;
    assert_ne!(now[2], old_name);
    let status = aerie::cluster_cmd::parse(&info(&addresses[0], "cluster-status").await).unwrap();
    assert!(!status.members.contains(&old_name), "{:?}", status.members);
    increment_all(&client, &mut acked, &mut unknown).await;
    check_counters(&client, &acked, unknown).await;
    let rebuilt = Client::new(&ClientPolicy::default(), &addresses[2])
        .await
        .unwrap();
    check_counters(&rebuilt, &acked, unknown).await;
    wait_checksums_agree(&addresses).await;
    // The operator's check says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(["cluster", "check", "--host", &addresses[1]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("8 shard(s) agree on every replica"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_a_new_one_takes_its_share_and_the_old_one_rejoins_anew() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("AERIE_REPLACE_AFTER_MS", "4000".to_string())];
    let (mut nodes, ports, addresses) = complete_cluster(dir.path(), 4, &env).await;
    let client = Client::new(&ClientPolicy::default(), &addresses[0])
        .await
        .unwrap();
    let (mut acked, mut unknown) = (BTreeMap::new(), 0);
    increment_all(&client, &mut acked, &mut unknown).await;

    // Node 3 dies for good: after replace_after_ms it is retired and its
    // replicas live on the other three.
    let dead = info(&addresses[3], "node").await;
    nodes[3].take().unwrap().kill();
    let live = addresses[..3].to_vec();
    wait_gone(&live, &dead).await;
    wait_complete(&live, 3).await;
    let status = aerie::cluster_cmd::parse(&info(&addresses[0], "cluster-status").await).unwrap();
    assert!(!status.members.contains(&dead), "{:?}", status.members);
    increment_all(&client, &mut acked, &mut unknown).await;
    check_counters(&client, &acked, unknown).await;

    // A fifth node joins: replicas and leaderships spread to it. (Not on
    // the dead node's ports, which it comes back on: a node joining at a
    // member's fabric address retires that member.)
    let taken: Vec<u16> = ports.iter().flat_map(|&(p, f)| [p, f]).collect();
    let mut fresh = std::iter::repeat_with(free_port).filter(|p| !taken.contains(p));
    let (port, fabric) = (fresh.next().unwrap(), fresh.next().unwrap());
    let fifth =
        NodeProcess::start_member_env(&dir.path().join("d4"), port, fabric, &[ports[0].1], &env);
    let mut four = live.clone();
    four.push(fifth.address());
    eventually("the new node to take its share of replicas", || async {
        let text = info(&fifth.address(), "replicas").await;
        let columns = &parse_replicas(&text).unwrap()[0].columns;
        columns.iter().any(|c| c.0.iter().any(|&b| b != 0))
    })
    .await;
    wait_complete(&four, 3).await;

    // The dead node comes back with its old data: told it was retired, it
    // stops; started again it joins as a new member.
    let old = dir.path().join("d3");
    let (port3, fabric3) = ports[3];
    let back_env = [
        ("AERIE_FABRIC_PORT", fabric3.to_string()),
        ("AERIE_SEEDS", format!("127.0.0.1:{}", ports[0].1)),
        env[0].clone(),
    ];
    let mut back = NodeProcess::spawn_env(&old, port3, None, false, &back_env);
    assert_ne!(wait_exit(&mut back), Some(0));
    assert!(old.join("RETIRED").exists(), "{}", back.log_text());
    drop(back);
    nodes[3] = Some(NodeProcess::start_member_env(
        &old,
        port3,
        fabric3,
        &[ports[0].1],
        &env,
    ));
    let mut five = four.clone();
    five.push(addresses[3].clone());
    wait_complete(&five, 3).await;
    assert_ne!(info(&addresses[3], "node").await, dead);
    assert!(!old.join("RETIRED").exists());
    increment_all(&client, &mut acked, &mut unknown).await;
    check_counters(&client, &acked, unknown).await;
    drop(fifth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_remove_under_load_keeps_a_majority_and_costs_clients_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _, addresses) = complete_cluster(dir.path(), 4, &[]).await;
    let client = std::sync::Arc::new(
        Client::new(&ClientPolicy::default(), &addresses[0])
            .await
            .unwrap(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(load(client.clone(), stop.clone()));
    let staying = names(&addresses[..3]).await;
    let leaving = info(&addresses[3], "node").await;
    let remove = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(["cluster", "remove", &leaving, "--host", &addresses[0]])
        .args(["--timeout-secs", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Sampled on the staying members' leaders while it runs: no shard ever
    // below a majority of three voters.
    let mut samples = 0;
    let deadline = Instant::now() + WAIT;
    let remove = std::sync::Arc::new(std::sync::Mutex::new(remove));
    while remove.lock().unwrap().try_wait().unwrap().is_none() {
        for (address, name) in addresses[..3].iter().zip(&staying) {
            let status = aerie::cluster_cmd::parse(&info(address, "cluster-status").await).unwrap();
            for s in status.shards.iter().filter(|s| s.replicas.leader == *name) {
                assert!(
                    s.replicas.voters.len() >= 2,
                    "shard {} below a majority: {:?}",
                    s.shard,
                    s.replicas
                );
            }
        }
        samples += 1;
        assert!(
            Instant::now() < deadline,
            "aerie cluster remove did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let remove = std::sync::Arc::into_inner(remove)
        .unwrap()
        .into_inner()
        .unwrap();
    let output = remove.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("retired"), "{printed}");
    assert!(samples > 0);
    // The removed node stops by itself; the others hold every shard.
    let mut removed = nodes[3].take().unwrap();
    assert_ne!(wait_exit(&mut removed), Some(0), "{}", removed.log_text());
    wait_complete(&addresses[..3], 3).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, errors) = writer.await.unwrap();
    let log = removed.log_text();
    let tail: Vec<&str> = log.lines().filter(|l| !l.contains("fabric")).collect();
    assert!(
        errors.is_empty(),
        "client errors across a removal: {errors:?}\n{}",
        tail.join("\n")
    );
    assert!(acked.values().sum::<i64>() > 50, "the load barely ran");
    assert_exact(&client, &acked).await;
}

/// A key of `info statistics` as a number (0 if absent).
async fn statistic(address: &str, key: &str) -> u64 {
    let text = info(address, "statistics").await;
    text.split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Flips one byte inside the first record of every block file under `dir`
/// (past the 32-byte block header and the 72-byte record header: in its
/// bins); returns how many files it changed.
fn flip_a_record_byte_in_every_block(dir: &std::path::Path) -> usize {
    const IN_FIRST_RECORD: u64 = 32 + 72 + 3;
    let mut flipped = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "seg")
                && std::fs::metadata(&path).unwrap().len() > IN_FIRST_RECORD + 64
            {
                use std::io::{Read, Seek, SeekFrom, Write};
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let mut byte = [0u8; 1];
                file.seek(SeekFrom::Start(IN_FIRST_RECORD)).unwrap();
                file.read_exact(&mut byte).unwrap();
                byte[0] ^= 0x10;
                file.seek(SeekFrom::Start(IN_FIRST_RECORD)).unwrap();
                file.write_all(&byte).unwrap();
                file.sync_all().unwrap();
                flipped += 1;
            }
        }
    }
    flipped
}

/// `aerie cluster check --deep` against `host`: (success, stdout).
fn deep_check(host: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerie"))
        .args(["cluster", "check", "--deep", "--host", host])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_replica_is_found_reported_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    // No scheduled checks: the operator's deep check finds the damage.
    let env = [("AERIE_CONSISTENCY_CHECK_INTERVAL_MS", "0".to_string())];
    let (mut nodes, ports, addresses) = complete_cluster(dir.path(), 3, &env).await;
    let client = Client::new(&ClientPolicy::default(), &addresses[0])
        .await
        .unwrap();
    let value = |k: i64| format!("{k:0>100}");
    let wp = WritePolicy::default();
    for k in 0..200 {
        let key = as_key!("test", "flip", k);
        client
            .put(&wp, &key, &[as_bin!("v", value(k))])
            .await
            .unwrap();
    }
    wait_checksums_agree(&addresses).await;
    let (ok, text) = deep_check(&addresses[0]);
    assert!(ok, "{text}");

    // Node 2 stops cleanly (a fast start next time reads no record), and a
    // bit of a record in each of its block files flips on disk.
    let (port, fabric) = ports[2];
    let damaged = info(&addresses[2], "node").await;
    assert_eq!(nodes[2].take().unwrap().terminate(), Some(0));
    let flipped = flip_a_record_byte_in_every_block(&dir.path().join("d2"));
    assert!(flipped > 0, "no block file to damage");
    nodes[2] = Some(NodeProcess::start_member_env(
        &dir.path().join("d2"),
        port,
        fabric,
        &[ports[0].1],
        &env,
    ));
    wait_complete(&addresses, 3).await;

    // The deep check reads every record: node 2's copy fails its CRC, the
    // check names it, and node 2 rebuilds the shard from a snapshot.
    let (ok, text) = deep_check(&addresses[0]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("differ:members={damaged}:partitions=")),
        "{text}"
    );
    eventually("the damaged replica to be rebuilt", || async {
        statistic(&addresses[2], "replicas_rebuilt").await >= 1
            && info(&addresses[2], "statistics")
                .await
                .contains("damaged_shards=;")
    })
    .await;
    assert!(statistic(&addresses[2], "replicas_damaged_found").await >= 1);
    assert!(statistic(&addresses[2], "rebuild_installed_snapshots").await >= 1);
    assert!(statistic(&addresses[2], "rebuild_fetched_bytes").await > 0);
    assert!(statistic(&addresses[0], "consistency_mismatches").await >= 1);
    let log = nodes[2].as_ref().unwrap().log_text();
    assert!(log.contains("corruption in"), "{log}");

    // Afterwards every copy reads alike, and every record is intact.
    let (ok, text) = deep_check(&addresses[1]);
    assert!(ok, "{text}");
    assert!(
        text.contains("8 shard(s): every record of every replica read and alike"),
        "{text}"
    );
    wait_checksums_agree(&addresses).await;
    for k in 0..200 {
        let record = client
            .get(
                &ReadPolicy::default(),
                &as_key!("test", "flip", k),
                Bins::All,
            )
            .await
            .unwrap();
        assert_eq!(
            record.bins.get("v"),
            Some(&Value::from(value(k))),
            "key {k}"
        );
    }
}
