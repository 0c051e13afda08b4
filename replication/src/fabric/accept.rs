//! Incoming connections: at most `max_handshakes` unauthenticated ones at a
//! time, each handshake under its deadline; an authenticated connection is
//! read frame by frame (idle deadline, keepalives expected), each data frame
//! decoded and handed to the node. A newer connection of the same peer and
//! lane replaces the older one, so a peer holds two connections here at most.
//! A join connection is answered and closed (`join.rs`), never registered.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, HandshakeRefusal};
use crate::fabric::Shared;
use crate::fabric::conn::Conn;
use crate::fabric::dial::ms;
use crate::fabric::envelope;
use crate::fabric::format::lane;
use crate::fabric::handshake::{self, Authenticated};
use crate::fabric::join;
use crate::fabric::stats::bump;
use crate::lock;

/// Waits after a failed `accept` (out of descriptors): the error usually
/// persists for a while and retrying at once would spin.
const ACCEPT_RETRY_MS: u64 = 100;

pub(crate) async fn listen(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(shared.config.max_handshakes));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(node = shared.identity.node_id, error = %e, "fabric accept failed");
                tokio::time::sleep(ms(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.counters.refused(&HandshakeRefusal::Busy);
            tracing::warn!(node = shared.identity.node_id, %addr, "fabric: too many handshakes in progress; connection closed");
            continue;
        };
        tokio::spawn(serve(shared.clone(), stream, addr, permit));
    }
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let mut conn = Conn::new(stream, addr.to_string());
    let deadline = ms(shared.config.handshake_timeout_ms);
    // The peer book is whom we dial; with `accept_unknown_peers` anyone who
    // proves the secret (or, without one, reaches our loopback listener) may
    // dial us.
    let known = |id| shared.config.accept_unknown_peers || shared.is_peer(id);
    let retired = |id| lock(&shared.retired).contains(&id);
    let result = match tokio::time::timeout(
        deadline,
        handshake::accept(&mut conn, &shared.identity, known, retired, deadline),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Error::NetTimeout {
            peer: conn.peer.clone(),
            what: "handshake",
            timeout_ms: shared.config.handshake_timeout_ms,
        }),
    };
    let peer = match result {
        Ok(peer) => peer,
        Err(error) => return shared.note_failure(&error, false),
    };
    bump(&shared.counters.accepted);
    tracing::debug!(node = shared.identity.node_id, peer = %conn.peer, lane = peer.lane(), "fabric peer accepted");
    if peer.lane() == lane::JOIN {
        // A join keeps its handshake permit to its end (it is short and
        // bounded): that bounds the joins in progress at once too.
        join::answer(shared, conn, peer).await;
        drop(permit);
        return;
    }
    drop(permit);
    let reader = tokio::spawn(read_loop(shared.clone(), conn, peer));
    shared.replace_inbound(peer, reader.abort_handle());
}

async fn read_loop(shared: Arc<Shared>, mut conn: Conn, peer: Authenticated) {
    let idle = ms(shared.config.idle_timeout_ms);
    loop {
        let frame = match conn.read_frame(shared.config.max_frame_bytes, idle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                if matches!(error, Error::Wire { .. }) {
                    bump(&shared.counters.frames_refused);
                } else {
                    bump(&shared.counters.io_failures);
                }
                tracing::warn!(node = shared.identity.node_id, %error, "fabric connection closed");
                return;
            }
        };
        match envelope::decode(&peer, frame.as_ref()) {
            Ok(Some(envelope)) => shared.deliver(envelope),
            Ok(None) => {}
            Err(source) => {
                bump(&shared.counters.frames_refused);
                let error = Error::Wire {
                    peer: conn.peer.clone(),
                    source,
                };
                tracing::warn!(node = shared.identity.node_id, %error, "fabric connection closed");
                return;
            }
        }
    }
}
