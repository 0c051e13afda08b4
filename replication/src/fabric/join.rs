//! The one-shot join exchange on its own lane (`lane::JOIN`): a node that
//! knows only a seed's address dials it without knowing its node id, proves
//! the cluster secret like any peer, sends `JOIN` (its own member entry and
//! whether its data dir is new) and reads one `MEMBERS` (the seed's list)
//! or `REFUSED` (why), then closes. The seed asks the node layer's handler.
//! A join connection is never registered as a peer's lane, so it cannot
//! replace one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{JoinRequest, MemberList};
use crate::error::{Error, HandshakeRefusal, Result, WireError};
use crate::fabric::Shared;
use crate::fabric::conn::{Conn, OwnedFrame, write_all};
use crate::fabric::dial::{self, ms};
use crate::fabric::envelope;
use crate::fabric::format::{MAX_JOIN_BYTES, MAX_MEMBERS_BYTES, kind, lane};
use crate::fabric::handshake::Authenticated;
use crate::fabric::hello::{decode_refused, refusal_code};
use crate::fabric::stats::bump;
use crate::lock;

/// What a seed answers a joiner with: the member list to send back, or why
/// it is refused (`JoinRefused`, `Retired`, `IdInUse`). Called on a
/// blocking thread, within the seed's `handshake_timeout_ms`.
pub type JoinHandler =
    Arc<dyn Fn(JoinRequest) -> std::result::Result<MemberList, HandshakeRefusal> + Send + Sync>;

fn wire(conn: &Conn, source: WireError) -> Error {
    Error::Wire {
        peer: conn.peer.clone(),
        source,
    }
}

fn closed(conn: &Conn, what: &'static str) -> Error {
    Error::Net {
        peer: conn.peer.clone(),
        what,
        source: std::io::ErrorKind::UnexpectedEof.into(),
    }
}

/// The joiner's side; the caller bounds the whole by its timeout.
pub(crate) async fn ask(
    shared: &Shared,
    seed: SocketAddr,
    me: &JoinRequest,
    timeout: Duration,
) -> Result<MemberList> {
    let label = format!("seed {seed}");
    let (mut conn, seed_id) = dial::open(shared, label, seed, None, lane::JOIN).await?;
    conn.peer = format!("node {seed_id} (seed {seed})");
    let frame = envelope::encode_join(me).map_err(|e| wire(&conn, e))?;
    let write_timeout = ms(shared.config.write_timeout_ms);
    write_all(&mut conn.writer, &conn.peer, &[frame], write_timeout).await?;
    let Some(reply) = conn.read_frame(MAX_MEMBERS_BYTES, timeout).await? else {
        return Err(closed(&conn, "waiting for the member list"));
    };
    match reply.kind {
        kind::MEMBERS => envelope::decode_members(reply.payload()).map_err(|e| wire(&conn, e)),
        kind::REFUSED => Err(Error::Handshake {
            peer: conn.peer.clone(),
            reason: decode_refused(reply.payload()),
        }),
        other => Err(wire(
            &conn,
            WireError::Unexpected {
                got: kind::name(other),
                expected: "MEMBERS",
            },
        )),
    }
}

/// The seed's side, on an authenticated join connection: failures are
/// counted and logged naming the joiner.
pub(crate) async fn answer(shared: Arc<Shared>, mut conn: Conn, peer: Authenticated) {
    let Err(error) = exchange(&shared, &mut conn, peer).await else {
        return;
    };
    if let Error::Wire { .. } = error {
        bump(&shared.counters.frames_refused);
        tracing::warn!(node = shared.identity.node_id, %error, "fabric join connection closed");
    } else {
        shared.note_failure(&error, false);
    }
}

async fn exchange(shared: &Arc<Shared>, conn: &mut Conn, peer: Authenticated) -> Result<()> {
    let timeout = ms(shared.config.handshake_timeout_ms);
    let Some(frame) = conn.read_frame(MAX_JOIN_BYTES, timeout).await? else {
        return Err(closed(conn, "waiting for JOIN"));
    };
    let joiner = decode_joiner(conn, &frame, peer)?;
    let list = match ask_handler(shared, conn, joiner, timeout).await? {
        Ok(list) => list,
        Err(reason) => {
            let _ = conn
                .write_frame(kind::REFUSED, &[refusal_code(&reason)], timeout)
                .await;
            return Err(Error::Handshake {
                peer: conn.peer.clone(),
                reason,
            });
        }
    };
    let reply = envelope::encode_members(&list).map_err(|e| wire(conn, e))?;
    let write_timeout = ms(shared.config.write_timeout_ms);
    write_all(&mut conn.writer, &conn.peer, &[reply], write_timeout).await
}

/// The `JOIN` frame's request, whose member must be the authenticated peer.
fn decode_joiner(conn: &Conn, frame: &OwnedFrame, peer: Authenticated) -> Result<JoinRequest> {
    if frame.kind != kind::JOIN {
        let unexpected = WireError::Unexpected {
            got: kind::name(frame.kind),
            expected: "JOIN",
        };
        return Err(wire(conn, unexpected));
    }
    let joiner = envelope::decode_join(frame.payload()).map_err(|e| wire(conn, e))?;
    if joiner.member.node_id != peer.node_id() {
        let impersonation = WireError::Impersonation {
            what: "JOIN",
            claimed: joiner.member.node_id,
            peer: peer.node_id(),
        };
        return Err(wire(conn, impersonation));
    }
    Ok(joiner)
}

/// The handler's answer (refused without a handler). It runs on a blocking
/// thread, since node code may wait on locks, and under `timeout` so that a
/// stuck handler cannot hold the connection (or its handshake permit) open.
async fn ask_handler(
    shared: &Shared,
    conn: &Conn,
    joiner: JoinRequest,
    timeout: Duration,
) -> Result<std::result::Result<MemberList, HandshakeRefusal>> {
    let Some(handler) = lock(&shared.join_handler).clone() else {
        return Ok(Err(HandshakeRefusal::JoinRefused));
    };
    let call = tokio::task::spawn_blocking(move || handler(joiner));
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(panicked)) => {
            tracing::error!(node = shared.identity.node_id, peer = %conn.peer, error = %panicked, "fabric: the join handler failed; join refused");
            Ok(Err(HandshakeRefusal::JoinRefused))
        }
        Err(_) => Err(Error::NetTimeout {
            peer: conn.peer.clone(),
            what: "the join handler",
            timeout_ms: timeout.as_millis() as u64,
        }),
    }
}
