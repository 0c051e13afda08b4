//! One outgoing lane to one peer: dial (connect deadline), authenticate,
//! then write every queued frame per wakeup until the connection fails; then
//! dial again after a capped exponential backoff with jitter. The queue is
//! open only while a connection is authenticated, so sends to an unreachable
//! peer are refused at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::error::{Error, Result, WireError};
use crate::fabric::Shared;
use crate::fabric::conn::{Conn, write_all};
use crate::fabric::format::kind;
use crate::fabric::frame;
use crate::fabric::handshake;
use crate::fabric::queue::LaneQueue;
use crate::fabric::stats::bump;

pub(crate) fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Doubling waits between `min` and `max`, each drawn between half and all
/// of the current step so that peers restarted together do not dial in step.
struct Backoff {
    min_ms: u64,
    max_ms: u64,
    step_ms: u64,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min_ms,
            max_ms,
            step_ms: min_ms,
        }
    }

    fn next(&mut self) -> Duration {
        let step = self.step_ms;
        self.step_ms = step.saturating_mul(2).min(self.max_ms);
        ms(rand::random_range(step / 2..=step).max(1))
    }

    fn reset(&mut self) {
        self.step_ms = self.min_ms;
    }
}

/// The lane's task; it ends only when aborted (peer removed, transport
/// stopped).
pub(crate) async fn run_lane(
    shared: Arc<Shared>,
    peer: u64,
    addr: SocketAddr,
    lane: u8,
    queue: Arc<LaneQueue>,
) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_min_ms, config.backoff_max_ms);
    let mut quiet = false;
    loop {
        match connect(&shared, peer, addr, lane).await {
            Ok(conn) => {
                backoff.reset();
                bump(&shared.counters.connected);
                tracing::info!(node = shared.identity.node_id, peer, lane, %addr, "fabric connected");
                queue.set_connected(true);
                let error = write_loop(&shared, &queue, conn).await;
                queue.set_connected(false);
                bump(&shared.counters.io_failures);
                tracing::warn!(node = shared.identity.node_id, peer, lane, %error, "fabric connection lost; dialing again");
                quiet = false;
            }
            Err(error) => {
                shared.note_failure(&error, quiet);
                quiet = true;
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn connect(shared: &Shared, peer: u64, addr: SocketAddr, lane: u8) -> Result<Conn> {
    let label = format!("node {peer} ({addr})");
    open(shared, label, addr, Some(peer), lane)
        .await
        .map(|(conn, _)| conn)
}

/// Connects to `addr` and authenticates on `lane` to node `expected` (any
/// node if `None`), each step under its deadline; returns the connection and
/// the acceptor's proven node id. `label` names the peer in errors.
pub(crate) async fn open(
    shared: &Shared,
    label: String,
    addr: SocketAddr,
    expected: Option<u64>,
    lane: u8,
) -> Result<(Conn, u64)> {
    let connect_timeout = ms(shared.config.connect_timeout_ms);
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(Error::NetTimeout {
                peer: label,
                what: "connecting",
                timeout_ms: shared.config.connect_timeout_ms,
            });
        }
        Ok(Err(source)) => {
            return Err(Error::Net {
                peer: label,
                what: "connecting",
                source,
            });
        }
        Ok(Ok(stream)) => stream,
    };
    let mut conn = Conn::new(stream, label);
    let deadline = ms(shared.config.handshake_timeout_ms);
    let handshake = handshake::dial(&mut conn, &shared.identity, expected, lane, deadline);
    match tokio::time::timeout(deadline, handshake).await {
        Err(_) => Err(Error::NetTimeout {
            peer: conn.peer.clone(),
            what: "handshake",
            timeout_ms: shared.config.handshake_timeout_ms,
        }),
        Ok(result) => result.map(|acceptor| (conn, acceptor)),
    }
}

/// Writes until the connection fails; returns why. The acceptor never sends
/// after `ACCEPTED`, so anything readable means it closed (or misbehaves).
async fn write_loop(shared: &Shared, queue: &LaneQueue, conn: Conn) -> Error {
    let peer = conn.peer.clone();
    let (mut reader, mut writer) = conn.into_parts();
    let keepalive_interval = ms(shared.config.keepalive_interval_ms);
    let write_timeout = ms(shared.config.write_timeout_ms);
    let keepalive = match frame::encode(kind::KEEPALIVE, &[]) {
        Ok(frame) => vec![frame],
        Err(e) => return Error::Wire { peer, source: e },
    };
    loop {
        let mut probe = [0u8; 1];
        let woken = tokio::select! {
            woken = queue.wait(keepalive_interval) => woken,
            read = reader.read(&mut probe) => return closed(peer, read),
        };
        let batch = queue.take();
        if batch.is_empty() && woken {
            continue;
        }
        let bytes: usize = batch.iter().map(Vec::len).sum();
        let frames = if batch.is_empty() { &keepalive } else { &batch };
        let result = write_all(&mut writer, &peer, frames, write_timeout).await;
        queue.written(bytes);
        if let Err(error) = result {
            return error;
        }
    }
}

fn closed(peer: String, read: std::io::Result<usize>) -> Error {
    match read {
        Ok(0) => Error::Net {
            peer,
            what: "the peer closed the connection",
            source: std::io::ErrorKind::UnexpectedEof.into(),
        },
        Ok(_) => Error::Wire {
            peer,
            source: WireError::Unexpected {
                got: "bytes",
                expected: "nothing after ACCEPTED",
            },
        },
        Err(source) => Error::Net {
            peer,
            what: "reading",
            source,
        },
    }
}
