//! The fault proxy: every node's fabric is reached through it (the nodes
//! advertise the proxy's address, `AERIE_FABRIC_ADVERTISE`), so the network
//! between each directed pair of nodes can be cut, black-holed (bytes
//! accepted and never delivered), delayed or throttled. This kernel has no `netem`
//! qdisc; the proxy is how the harness makes network faults.
//!
//! A fabric connection carries its dialer's traffic to the acceptor (and the
//! acceptor's handshake answers back), so the direction "from → to" is the
//! connection's dialer and target. The proxy learns the dialer from the
//! first frame, the fabric `HELLO` (its node id at payload offset 24, see
//! `replication/FABRIC.md`), which it forwards untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of a `HELLO` frame up to and including the dialer's node id:
/// length (4), type (1), then the payload's magic, version, lane, reserved,
/// cluster id (24) and the dialer id (8).
const HELLO_PREFIX_BYTES: usize = 5 + 32;
const DIALER_ID_AT: usize = 5 + 24;
/// How often an idle pump looks at its link's rule again.
const RULE_POLL: Duration = Duration::from_millis(50);

/// What happens to the bytes from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Pass,
    /// Connections closed, new ones refused.
    Cut,
    /// Bytes read and dropped: the sender sees a working connection.
    Blackhole,
    /// Every chunk held this long first.
    Delay {
        ms: u64,
    },
    /// At most this many bytes a second pass.
    Throttle {
        bytes_per_sec: u64,
    },
}

/// One end of a proxied connection: the target node, or the dialer by
/// its node id, resolved to an index each time a rule is looked up (a wiped
/// node comes back under a new id, named after its first connections).
#[derive(Debug, Clone, Copy)]
enum End {
    Node(usize),
    Dialer(u64),
}

#[derive(Default)]
struct Links {
    /// Node index by node id.
    index_of: HashMap<u64, usize>,
    /// (from, to) → rule; absent: pass.
    rules: HashMap<(usize, usize), Rule>,
}

/// The proxy for a cluster: one listener per node.
#[derive(Clone, Default)]
pub struct Proxy {
    links: Arc<Mutex<Links>>,
}

fn lock(links: &Mutex<Links>) -> std::sync::MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Listens for node `to`, forwarding to its fabric at `target`; returns
    /// the address the node advertises.
    pub async fn listen(&self, to: usize, target: SocketAddr) -> Result<SocketAddr, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("fault proxy: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let proxy = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let proxy = proxy.clone();
                tokio::spawn(async move { proxy.connection(stream, to, target).await });
            }
        });
        Ok(address)
    }

    /// Names node `index`'s id, so its connections are told apart.
    pub fn name(&self, node_id: u64, index: usize) {
        lock(&self.links).index_of.insert(node_id, index);
    }

    /// Sets the rule from one node to another.
    pub fn set(&self, from: usize, to: usize, rule: Rule) {
        let mut links = lock(&self.links);
        if rule == Rule::Pass {
            links.rules.remove(&(from, to));
        } else {
            links.rules.insert((from, to), rule);
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        lock(&self.links).rules.clear();
    }

    /// The rule of `from → to`; pass while either end is unnamed.
    fn rule(&self, from: End, to: End) -> Rule {
        let links = lock(&self.links);
        let index = |end: End| match end {
            End::Node(i) => Some(i),
            End::Dialer(id) => links.index_of.get(&id).copied(),
        };
        index(from)
            .zip(index(to))
            .and_then(|pair| links.rules.get(&pair).copied())
            .unwrap_or(Rule::Pass)
    }

    async fn connection(&self, mut inbound: TcpStream, to: usize, target: SocketAddr) {
        let mut hello = [0u8; HELLO_PREFIX_BYTES];
        let read =
            tokio::time::timeout(Duration::from_secs(5), inbound.read_exact(&mut hello)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&hello[DIALER_ID_AT..DIALER_ID_AT + 8]);
        let from = End::Dialer(u64::from_le_bytes(id));
        if self.rule(from, End::Node(to)) == Rule::Cut {
            return;
        }
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        if outbound.write_all(&hello).await.is_err() {
            return;
        }
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        let forward = self.pump(in_read, out_write, from, End::Node(to));
        let backward = self.pump(out_read, in_write, End::Node(to), from);
        // Either direction ending (or cut) ends the connection.
        tokio::select! {
            () = forward => {}
            () = backward => {}
        }
    }

    /// Copies `from → to` under the link's rule until either side closes or
    /// the link is cut.
    async fn pump(
        &self,
        mut reader: OwnedReadHalf,
        mut writer: OwnedWriteHalf,
        from: End,
        to: End,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let rule = self.rule(from, to);
            if rule == Rule::Cut {
                return;
            }
            let n = match tokio::time::timeout(RULE_POLL, reader.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            match rule {
                Rule::Blackhole => continue,
                Rule::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                Rule::Throttle { bytes_per_sec } => {
                    let micros = n as u64 * 1_000_000 / bytes_per_sec.max(1);
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                }
                Rule::Pass | Rule::Cut => {}
            }
            if writer.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
