//! A cluster of real `aerie node` processes on 127.0.0.1, each in its own
//! data dir under the run's work dir, with what the nemeses do to them:
//! SIGKILL and restart (same data dir and ports), SIGSTOP and SIGCONT. All
//! fabric traffic goes through the fault proxy (`proxy.rs`): each node
//! advertises its proxy listener, and joins through node 0's. With clock
//! faults every node runs under libfaketime, its wall-clock offset read from
//! a file beside its data dir each second; with disk faults every node runs
//! on its fault layers, switched through its fault control file.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::Proxy;

/// How long the cluster may take to form, and a restarted node to accept.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Where libfaketime is looked for (`AERIE_FAULTS_LIBFAKETIME` overrides):
/// Debian's package `libfaketime`, the multi-threaded build.
const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];
/// What a `fault-injection` build of `aerie` logs when it runs on its fault
/// layers (`src/node/fault_control.rs`).
const FAULT_LAYERS_ARMED: &str = "disk fault control file armed";

/// What the nodes run under besides the proxy.
#[derive(Debug, Clone, Default)]
pub struct Instruments {
    /// libfaketime, preloaded into every node (clock faults).
    pub libfaketime: Option<PathBuf>,
    /// Every node on its fault layers (disk faults).
    pub disk_faults: bool,
}

impl Instruments {
    /// What the nemeses need: libfaketime for clock faults (an error when
    /// it is not installed), the fault layers for disk faults.
    pub fn for_faults(clock: bool, disk: bool) -> Result<Instruments, String> {
        let libfaketime = match clock {
            false => None,
            true => Some(find_libfaketime()?),
        };
        Ok(Instruments {
            libfaketime,
            disk_faults: disk,
        })
    }
}

/// Where libfaketime is, or an error saying how to install it.
pub fn find_libfaketime() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("AERIE_FAULTS_LIBFAKETIME") {
        return Ok(PathBuf::from(path));
    }
    LIBFAKETIME
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "clock faults need libfaketime (Debian: apt-get install libfaketime), \
             or AERIE_FAULTS_LIBFAKETIME naming libfaketimeMT.so.1"
                .to_string()
        })
}

/// The environment that runs a process under libfaketime `lib` with its
/// wall clock offset by what `clock_file` says (re-read each second), its
/// monotonic clock untouched.
pub fn faketime_env(lib: &Path, clock_file: &Path) -> [(&'static str, String); 4] {
    [
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", clock_file.display().to_string()),
        ("FAKETIME_CACHE_DURATION", "1".to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

/// One node: its ports, data dir, log, and process (none while killed).
pub struct NodeProc {
    pub port: u16,
    pub fabric_port: u16,
    /// The proxy's listener for this node: what it advertises.
    pub advertised: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// libfaketime's timestamp file: the wall-clock offset, e.g. "-90".
    clock_file: PathBuf,
    /// The fault control file: the disk fault in force, e.g. "none".
    disk_file: PathBuf,
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
    instruments: Instruments,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Cluster {
    /// Starts `n` nodes: the first forms the cluster, the others join
    /// through its fabric port; returns once every shard and the cluster
    /// group have their replication factor.
    pub async fn start(
        aerie: &Path,
        work: &Path,
        n: usize,
        instruments: Instruments,
    ) -> Result<Cluster, String> {
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
                clock_file: work.join(format!("n{i}.clock")),
                disk_file: work.join(format!("n{i}.disk")),
                child: None,
                paused: false,
            });
        }
        let mut cluster = Cluster {
            aerie: aerie.to_path_buf(),
            nodes,
            proxy,
            names: Vec::new(),
            instruments,
        };
        for i in 0..n {
            cluster.set_clock_offset(i, 0)?;
            cluster.set_disk_fault(i, "none")?;
            // The first forms the cluster; every later start may join.
            cluster.spawn(i, i != 0)?;
        }
        cluster.wait_complete(READY_TIMEOUT).await?;
        cluster.name_nodes().await?;
        cluster.check_fault_layers()?;
        Ok(cluster)
    }

    /// Steps node `i`'s wall clock to `offset_secs` from the true time
    /// (libfaketime reads the file within a second).
    pub fn set_clock_offset(&self, i: usize, offset_secs: i64) -> Result<(), String> {
        let file = &self.nodes[i].clock_file;
        std::fs::write(file, format!("{offset_secs:+}\n"))
            .map_err(|e| format!("{}: {e}", file.display()))
    }

    /// Switches node `i`'s disk fault (a name of `nemesis::DISK_FAULTS`, or
    /// "none"); the node reads the file every 100 ms.
    pub fn set_disk_fault(&self, i: usize, fault: &str) -> Result<(), String> {
        let file = &self.nodes[i].disk_file;
        std::fs::write(file, format!("{fault}\n")).map_err(|e| format!("{}: {e}", file.display()))
    }

    /// With disk faults: an error unless every node said it runs on its
    /// fault layers (an `aerie` built without `fault-injection` ignores the
    /// control file, and its disk faults would silently do nothing).
    fn check_fault_layers(&self) -> Result<(), String> {
        if !self.instruments.disk_faults {
            return Ok(());
        }
        for node in &self.nodes {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if !log.contains(FAULT_LAYERS_ARMED) {
                return Err(format!(
                    "disk faults need an aerie built with `--features fault-injection` \
                     ({} does not say {FAULT_LAYERS_ARMED:?})",
                    node.log.display()
                ));
            }
        }
        Ok(())
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
        let mut command = Command::new(&self.aerie);
        if let Some(lib) = &self.instruments.libfaketime {
            command.envs(faketime_env(lib, &node.clock_file));
        }
        if self.instruments.disk_faults {
            command.env("AERIE_FAULT_CONTROL_FILE", &node.disk_file);
        }
        let child = command
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

    /// The index of each shard's leader, in shard order, as `cluster-status`
    /// of the first running node that answers names them (shards whose
    /// leader is unknown left out), or why none is known.
    pub async fn shard_leaders(&self) -> Result<Vec<usize>, String> {
        let mut why = String::from("no node is up");
        for (i, address) in self.addresses().iter().enumerate() {
            if !self.is_up(i) {
                continue;
            }
            let status = match info(address, "cluster-status").await {
                Ok(answer) => aerie::cluster_cmd::parse(&answer).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match status {
                Ok(status) => {
                    let leaders: Vec<usize> = status
                        .shards
                        .iter()
                        .filter_map(|s| self.names.iter().position(|n| *n == s.replicas.leader))
                        .collect();
                    if !leaders.is_empty() {
                        return Ok(leaders);
                    }
                    why = format!("node {i} names no leader among {:?}", self.names);
                }
                Err(e) => why = format!("node {i}: {e}"),
            }
        }
        Err(why)
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
