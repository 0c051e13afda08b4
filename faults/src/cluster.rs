//! A cluster of real `aerie node` processes on 127.0.0.1, each in its own
//! data dir under the run's work dir, with what the nemeses do to them:
//! SIGKILL and restart (same data dir and ports), SIGSTOP and SIGCONT. All
//! fabric traffic goes through the fault proxy (`proxy.rs`): each node
//! advertises its proxy listener, and joins through node 0's.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::Proxy;

/// How long the cluster may take to form, and a restarted node to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node: its ports, data dir, log, and process (none while killed).
pub struct NodeProc {
    pub port: u16,
    pub fabric_port: u16,
    /// The proxy's listener for this node: what it advertises.
    pub advertised: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The cluster under test.
pub struct Cluster {
    aerie: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub proxy: Proxy,
    /// Each node's name as `node` answers it (its id in hex).
    names: Vec<String>,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Cluster {
    /// Starts `n` nodes: the first forms the cluster, the others join
    /// through its fabric port; returns once every shard and the cluster
    /// group have their replication factor.
    pub async fn start(aerie: &Path, work: &Path, n: usize) -> Result<Cluster, String> {
        let proxy = Proxy::default();
        let mut nodes = Vec::new();
        for i in 0..n {
            let fabric_port = free_port()?;
            let target = SocketAddr::from(([127, 0, 0, 1], fabric_port));
            nodes.push(NodeProc {
                port: free_port()?,
                fabric_port,
                advertised: proxy.listen(i, target).await?,
                data_dir: work.join(format!("n{i}")),
                log: work.join(format!("n{i}.log")),
                child: None,
                paused: false,
            });
        }
        let mut cluster = Cluster {
            aerie: aerie.to_path_buf(),
            nodes,
            proxy,
            names: Vec::new(),
        };
        for i in 0..n {
            // The first forms the cluster; every later start may join.
            cluster.spawn(i, i != 0)?;
        }
        cluster.wait_complete(READY_TIMEOUT).await?;
        cluster.name_nodes().await?;
        Ok(cluster)
    }

    /// Learns every node's name and tells the proxy its id (the name is
    /// the id in hex).
    async fn name_nodes(&mut self) -> Result<(), String> {
        self.names = vec![String::new(); self.nodes.len()];
        for i in 0..self.nodes.len() {
            self.name_node(i).await?;
        }
        Ok(())
    }

    async fn name_node(&mut self, i: usize) -> Result<(), String> {
        let name = info(&self.addresses()[i], "node").await?.trim().to_string();
        let id = u64::from_str_radix(&name, 16).map_err(|e| format!("node name {name:?}: {e}"))?;
        self.proxy.name(id, i);
        self.names[i] = name;
        Ok(())
    }

    /// Learns the new name of node `i` (back from a wipe under a new id),
    /// asking until it serves, for up to `READY_TIMEOUT`.
    pub async fn rename(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.name_node(i).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The service addresses, "127.0.0.1:port".
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Starts node `i`; `join` gives it every other node as a seed (a node
    /// with data ignores them; one wiped joins through them).
    fn spawn(&mut self, i: usize, join: bool) -> Result<(), String> {
        let seeds: Vec<String> = match join {
            false => Vec::new(),
            true => self
                .nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, n)| n.advertised.to_string())
                .collect(),
        };
        let node = &mut self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.aerie)
            .arg("node")
            .env("AERIE_DATA_DIR", &node.data_dir)
            .env("AERIE_PORT", node.port.to_string())
            .env("AERIE_FABRIC_PORT", node.fabric_port.to_string())
            .env("AERIE_FABRIC_ADVERTISE", node.advertised.to_string())
            .env("AERIE_METRICS_PORT", "0")
            .env("AERIE_SEEDS", seeds.join(","))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.aerie.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill(2) with the pid of a child this process started
            // and has not reaped (it is reaped only in `kill` below).
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGKILL (a paused node is killed too).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Starts a killed node again on its data dir and ports.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].child.is_none() {
            self.spawn(i, true)?;
        }
        Ok(())
    }

    /// SIGKILL, then the data dir deleted: the node's next start joins as
    /// a new member (and retires its old id).
    pub fn wipe(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        match std::fs::remove_dir_all(&self.nodes[i].data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", self.nodes[i].data_dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = self.nodes[i].child.is_some();
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Every node running and resumed, every link passing.
    pub fn heal_all(&mut self) -> Result<(), String> {
        self.proxy.heal();
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.restart(i)?;
        }
        Ok(())
    }

    /// Whether node `i` is running and not paused.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].paused
    }

    /// Waits until a running node reports every node a member and every
    /// shard and the cluster group complete.
    pub async fn wait_complete(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, address) in self.addresses().iter().enumerate() {
                if self.is_up(i)
                    && let Ok(answer) = info(address, "cluster-status").await
                    && aerie::cluster_cmd::parse(&answer)
                        .is_ok_and(|s| s.complete && s.members.len() == self.nodes.len())
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the cluster did not become complete within {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the node that `cluster-status` of a running node names
    /// as the leader of shard 0, if one is known.
    pub async fn leader_of_shard_0(&self) -> Option<usize> {
        let addresses = self.addresses();
        for (_, address) in addresses.iter().enumerate().filter(|(i, _)| self.is_up(*i)) {
            let Ok(answer) = info(address, "cluster-status").await else {
                continue;
            };
            let status = aerie::cluster_cmd::parse(&answer).ok()?;
            let leader = &status.shards.first()?.replicas.leader;
            return self.names.iter().position(|name| name == leader);
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// One info command's answer, within 2 s.
pub async fn info(address: &str, name: &str) -> Result<String, String> {
    let ask = async {
        let mut conn = aerie::client::Connection::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let answers = conn.info(&[name]).await.map_err(|e| e.to_string())?;
        Ok::<String, String>(answers.into_iter().map(|(_, v)| v).collect())
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .map_err(|_| format!("{address}: info {name} timed out"))?
}
