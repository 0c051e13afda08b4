//! Proxying: a write (or delete) that reaches a node not leading its shard
//! is sent on to the leader's service port and the leader's answer relayed,
//! so a client with a stale partition map gets a normal answer.
//!
//! One hop at most: the proxy's connections open with the info command
//! [`PROXY_HELLO`], which marks them on the leader's side; a request on a
//! marked connection that finds no leader there is answered UNAVAILABLE
//! (it surely did not run) instead of being proxied again, and the proxy
//! routes it anew until its deadline. Reads are not proxied: a follower
//! serves them itself after a read barrier.
//!
//! A node that holds no replica of a shard learns its leader from the
//! other nodes: each answers [`LEADS`] with the shards it leads, asked at
//! most every [`HINTS_TTL`] and only while such a request is waiting.
//!
//! Exactness: an answer the leader sent is relayed as is; a failure before
//! the request was sent is definite ([`Relay::NotRun`]); a connection lost
//! or a deadline passed after it was sent is in doubt ([`Relay::InDoubt`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aerie_protocol::ResultCode;
use aerie_protocol::framing::{MessageType, encode_frame};
use aerie_protocol::message::MESSAGE_HEADER_SIZE_BYTES;

use crate::client::Connection;

/// The info command that marks a connection as a proxy's.
pub const PROXY_HELLO: &str = "aerie-proxy";
/// The info command a node answers with the shards it leads ("0,3,5").
pub const LEADS: &str = "aerie-leads";
/// How long the leaders learned from [`LEADS`] are trusted.
const HINTS_TTL: Duration = Duration::from_millis(200);
/// Longest one node is waited on for its [`LEADS`] answer.
const HINT_WAIT: Duration = Duration::from_millis(100);
/// Idle connections kept per leader.
const IDLE_PER_TARGET: usize = 16;
/// An idle connection older than this is closed rather than reused: the
/// leader may have closed it (its idle timeout), and a request sent on a
/// closed connection would be in doubt.
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Offset of `transaction_ttl` in an AS_MSG body (`protocol/src/message.rs`).
const TRANSACTION_TTL_OFFSET: usize = 14;
/// Offset of the result code in an AS_MSG body.
const RESULT_CODE_OFFSET: usize = 5;

/// What became of one proxied request.
#[derive(Debug)]
pub enum Relay {
    /// The leader's whole answer frame, to send to the client as is.
    Answer(Vec<u8>),
    /// Surely not run (not sent, or the leader answered UNAVAILABLE): it may
    /// be routed again.
    NotRun,
    /// Sent, and no answer: it may have run.
    InDoubt,
}

/// Connections to the leaders, shared by every client connection.
#[derive(Default)]
pub struct Proxy {
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    /// Leaders by shard as the other nodes last said, and when (one
    /// refresh at a time: the async lock makes the others wait for it).
    hints: tokio::sync::Mutex<(Option<Instant>, HashMap<u32, u64>)>,
}

impl Proxy {
    /// Sends the AS_MSG `body` to the node serving clients at `address` and
    /// waits for its answer until `give_up`. The request's own timeout is
    /// cut to the time left, so the leader gives up first.
    pub async fn forward(&self, address: &str, body: &[u8], give_up: Instant) -> Relay {
        let Some(frame) = request_frame(body, give_up) else {
            return Relay::NotRun;
        };
        let mut connection = match self.connection(address, give_up).await {
            Some(connection) => connection,
            None => return Relay::NotRun,
        };
        let exchange = async {
            connection.send(&frame).await?;
            connection.read_frame().await
        };
        match tokio::time::timeout_at(give_up.into(), exchange).await {
            Ok(Ok((MessageType::AsMsg, answer))) => {
                let not_run = answer.get(RESULT_CODE_OFFSET).copied()
                    == Some(ResultCode::Unavailable.to_u8());
                self.put_back(address, connection);
                if not_run {
                    return Relay::NotRun;
                }
                let mut out = Vec::with_capacity(answer.len() + 8);
                match encode_frame(&mut out, MessageType::AsMsg, &answer) {
                    Ok(()) => Relay::Answer(out),
                    Err(_) => Relay::InDoubt,
                }
            }
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!(%address, "a proxied request got no answer: in doubt");
                Relay::InDoubt
            }
        }
    }

    /// Asks the node serving clients at `address` the info command `line`
    /// on a proxy connection; its answer, or `None` when none came before
    /// `give_up`.
    pub async fn info(&self, address: &str, line: &str, give_up: Instant) -> Option<String> {
        let mut connection = self.connection(address, give_up).await?;
        let asked = tokio::time::timeout_at(give_up.into(), connection.info(&[line])).await;
        let answer = asked.ok()?.ok()?.into_iter().next()?.1;
        self.put_back(address, connection);
        Some(answer)
    }

    /// The leader of `shard` as the other nodes say (`peers`: their ids and
    /// service addresses), asked again once the last answers are older
    /// than [`HINTS_TTL`].
    pub async fn leader_hint(
        &self,
        shard: u32,
        peers: &[(u64, String)],
        give_up: Instant,
    ) -> Option<u64> {
        let mut hints = self.hints.lock().await;
        if hints.0.is_none_or(|at| at.elapsed() >= HINTS_TTL) {
            let mut leaders = HashMap::new();
            for (node_id, address) in peers {
                let wait = give_up.min(Instant::now() + HINT_WAIT);
                let Some(answer) = self.info(address, LEADS, wait).await else {
                    continue;
                };
                for led in answer.split(',').filter_map(|s| s.parse::<u32>().ok()) {
                    leaders.insert(led, *node_id);
                }
            }
            *hints = (Some(Instant::now()), leaders);
        }
        hints.1.get(&shard).copied()
    }

    /// An idle connection to `address` that still looks open, or a new one
    /// marked with [`PROXY_HELLO`].
    async fn connection(&self, address: &str, give_up: Instant) -> Option<Connection> {
        while let Some(connection) = self.take_idle(address) {
            if connection.looks_open() {
                return Some(connection);
            }
        }
        let open = async {
            let mut connection = Connection::connect(address).await?;
            connection.info(&[PROXY_HELLO]).await?;
            Ok::<_, std::io::Error>(connection)
        };
        match tokio::time::timeout_at(give_up.into(), open).await {
            Ok(Ok(connection)) => Some(connection),
            Ok(Err(e)) => {
                tracing::debug!(%address, error = %e, "cannot reach the leader to proxy");
                None
            }
            Err(_) => None,
        }
    }

    fn take_idle(&self, address: &str) -> Option<Connection> {
        let mut idle = super::lock(&self.idle);
        let pool = idle.get_mut(address)?;
        pool.retain(|(_, since)| since.elapsed() < MAX_IDLE);
        pool.pop().map(|(connection, _)| connection)
    }

    fn put_back(&self, address: &str, connection: Connection) {
        let mut idle = super::lock(&self.idle);
        let pool = idle.entry(address.to_string()).or_default();
        if pool.len() < IDLE_PER_TARGET {
            pool.push((connection, Instant::now()));
        }
    }
}

/// `body` framed as an AS_MSG with its `transaction_ttl` cut to the time
/// left before `give_up` (at least 1 ms: 0 would mean the leader's default).
/// `None` when no time is left or the body is too short to be a message.
fn request_frame(body: &[u8], give_up: Instant) -> Option<Vec<u8>> {
    let left_ms = give_up.checked_duration_since(Instant::now())?.as_millis();
    if left_ms == 0 || body.len() < MESSAGE_HEADER_SIZE_BYTES {
        return None;
    }
    let left_ms = u32::try_from(left_ms).unwrap_or(u32::MAX);
    let mut body = body.to_vec();
    let ttl = &mut body[TRANSACTION_TTL_OFFSET..TRANSACTION_TTL_OFFSET + 4];
    let asked = u32::from_be_bytes([ttl[0], ttl[1], ttl[2], ttl[3]]);
    let cut = if asked == 0 {
        left_ms
    } else {
        asked.min(left_ms)
    };
    ttl.copy_from_slice(&cut.to_be_bytes());
    let mut frame = Vec::with_capacity(body.len() + 8);
    encode_frame(&mut frame, MessageType::AsMsg, &body).ok()?;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_timeout_is_cut_to_the_time_left() {
        let mut body = vec![0u8; MESSAGE_HEADER_SIZE_BYTES];
        body[TRANSACTION_TTL_OFFSET..TRANSACTION_TTL_OFFSET + 4]
            .copy_from_slice(&5_000u32.to_be_bytes());
        let frame = request_frame(&body, Instant::now() + Duration::from_millis(300)).unwrap();
        let at = 8 + TRANSACTION_TTL_OFFSET;
        let ttl = u32::from_be_bytes(frame[at..at + 4].try_into().unwrap());
        assert!((250..=300).contains(&ttl), "{ttl}");
        assert!(request_frame(&body, Instant::now()).is_none());
        assert!(request_frame(&body[..10], Instant::now() + Duration::from_secs(1)).is_none());
    }
}
