//! A real `aerie node` process on 127.0.0.1, for end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A node process on a free loopback port; killed when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl NodeProcess {
    /// Starts `aerie node` on `data_dir` (the embedded default config, with
    /// the data dir and port overridden) and waits until it accepts.
    pub fn start(data_dir: &Path) -> NodeProcess {
        Self::start_on(data_dir, free_port())
    }

    pub fn start_on(data_dir: &Path, port: u16) -> NodeProcess {
        Self::start_with(data_dir, port, None, false)
    }

    /// Starts with Prometheus metrics on a free port (off otherwise: nodes
    /// of tests running in parallel would race for ports).
    pub fn start_with_metrics(data_dir: &Path) -> NodeProcess {
        Self::start_with(data_dir, free_port(), None, true)
    }

    /// Starts with a config file (the environment still sets the data dir
    /// and ports).
    pub fn start_with(
        data_dir: &Path,
        port: u16,
        config: Option<&Path>,
        metrics: bool,
    ) -> NodeProcess {
        Self::start_env(data_dir, port, config, metrics, &[])
    }

    /// A member of a cluster: its fabric on `fabric_port`, joining through
    /// the fabric ports in `seeds` (none: it forms the cluster).
    pub fn start_member(
        data_dir: &Path,
        port: u16,
        fabric_port: u16,
        seeds: &[u16],
    ) -> NodeProcess {
        Self::start_member_env(data_dir, port, fabric_port, seeds, &[])
    }

    /// [`NodeProcess::start_member`] with extra environment variables.
    pub fn start_member_env(
        data_dir: &Path,
        port: u16,
        fabric_port: u16,
        seeds: &[u16],
        extra: &[(&str, String)],
    ) -> NodeProcess {
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut env = vec![
            ("AERIE_FABRIC_PORT", fabric_port.to_string()),
            ("AERIE_SEEDS", seeds.join(",")),
        ];
        env.extend(extra.iter().cloned());
        Self::start_env(data_dir, port, None, false, &env)
    }

    /// Starts with extra environment variables.
    pub fn start_env(
        data_dir: &Path,
        port: u16,
        config: Option<&Path>,
        metrics: bool,
        env: &[(&str, String)],
    ) -> NodeProcess {
        let node = Self::spawn_env(data_dir, port, config, metrics, env);
        node.wait_ready();
        node
    }

    /// Starts with extra environment variables; does not wait for the
    /// service port.
    pub fn spawn_env(
        data_dir: &Path,
        port: u16,
        config: Option<&Path>,
        metrics: bool,
        env: &[(&str, String)],
    ) -> NodeProcess {
        let log = data_dir.with_extension(format!("{port}.log"));
        // Another port than the service's (a freed ephemeral port can be
        // handed out again at once).
        let metrics_port = if metrics {
            std::iter::repeat_with(free_port)
                .find(|&p| p != port)
                .unwrap()
        } else {
            0
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_aerie"));
        command.arg("node");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .env("AERIE_DATA_DIR", data_dir)
            .env("AERIE_PORT", port.to_string())
            // A free fabric port unless the test picks one.
            .env("AERIE_FABRIC_PORT", "0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AERIE_METRICS_PORT", metrics_port.to_string())
            // AERIE_TEST_RUST_LOG=aerie=debug to see more of a failing test.
            .env(
                "RUST_LOG",
                std::env::var("AERIE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        NodeProcess {
            child,
            port,
            metrics_port,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our
        // own child's, not yet waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        status.code()
    }

    /// SIGKILL, then waits.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
