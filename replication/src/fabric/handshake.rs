//! Both sides of the handshake over a [`Conn`]: nothing but handshake frames
//! (128 bytes at most each) is read before it ends, and only its success
//! makes the [`Authenticated`] that data frames are decoded with.

use std::time::Duration;

use crate::error::{Error, HandshakeRefusal, Result, WireError};
use crate::fabric::config::hex;
use crate::fabric::conn::Conn;
use crate::fabric::format::{ANY_NODE, MAX_HANDSHAKE_PAYLOAD_BYTES, kind, lane, refused};
use crate::fabric::hello::{
    self, Challenge, ClusterId, Hello, Nonce, Role, Transcript, decode_refused, decode_response,
};

/// What this node proves itself with.
pub(crate) struct Identity {
    pub node_id: u64,
    pub cluster_id: ClusterId,
    /// Empty when the cluster runs without a secret (loopback only).
    pub secret: Vec<u8>,
}

/// A connection whose peer proved who it is. Only a handshake makes one (its
/// fields are private to this module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Authenticated {
    node_id: u64,
    lane: u8,
}

impl Authenticated {
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn lane(&self) -> u8 {
        self.lane
    }

    #[cfg(test)]
    pub fn for_tests(node_id: u64, lane: u8) -> Authenticated {
        Authenticated { node_id, lane }
    }
}

fn nonce() -> Nonce {
    // rand's thread RNG is a CSPRNG seeded from the OS.
    rand::random()
}

/// Refuses: tells the peer why (best effort) and returns the error.
async fn refuse<T>(conn: &mut Conn, reason: HandshakeRefusal, timeout: Duration) -> Result<T> {
    let _ = conn
        .write_frame(kind::REFUSED, &[hello::refusal_code(&reason)], timeout)
        .await;
    Err(Error::Handshake {
        peer: conn.peer.clone(),
        reason,
    })
}

/// The payload of the next handshake frame, which must be `expected`.
async fn expect(conn: &mut Conn, expected: u8, timeout: Duration) -> Result<Vec<u8>> {
    let frame = match conn.read_frame(MAX_HANDSHAKE_PAYLOAD_BYTES, timeout).await {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            return Err(Error::Net {
                peer: conn.peer.clone(),
                what: "handshake",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Err(Error::Wire { source, .. }) => {
            return refuse(conn, HandshakeRefusal::Malformed(source), timeout).await;
        }
        Err(e) => return Err(e),
    };
    if frame.kind == kind::REFUSED {
        return Err(Error::Handshake {
            peer: conn.peer.clone(),
            reason: decode_refused(frame.payload()),
        });
    }
    if frame.kind != expected {
        let unexpected = WireError::Unexpected {
            got: kind::name(frame.kind),
            expected: kind::name(expected),
        };
        return refuse(conn, HandshakeRefusal::Malformed(unexpected), timeout).await;
    }
    Ok(frame.payload().to_vec())
}

/// The dialer's side: proves `me` on `lane` to node `expected`, or to
/// whichever node answers when `None` (a join: the acceptor's id is then
/// learned from its proof), and returns the acceptor's proven id. `timeout`
/// bounds each step; the caller bounds the whole.
pub(crate) async fn dial(
    conn: &mut Conn,
    me: &Identity,
    expected: Option<u64>,
    lane: u8,
    timeout: Duration,
) -> Result<u64> {
    let hello = Hello {
        lane,
        cluster_id: me.cluster_id,
        dialer: me.node_id,
        acceptor: expected.unwrap_or(ANY_NODE),
        nonce: nonce(),
    };
    conn.write_frame(kind::HELLO, &hello.encode(), timeout)
        .await?;
    let payload = expect(conn, kind::CHALLENGE, timeout).await?;
    let challenge = match Challenge::decode(&payload) {
        Ok(challenge) => challenge,
        Err(reason) => return refuse(conn, reason, timeout).await,
    };
    let acceptor = challenge.acceptor;
    if let Some(expected) = expected.filter(|&id| id != acceptor) {
        let reason = HandshakeRefusal::WrongNode {
            expected,
            found: acceptor,
        };
        return refuse(conn, reason, timeout).await;
    }
    let transcript = Transcript {
        lane,
        cluster_id: me.cluster_id,
        dialer: me.node_id,
        acceptor,
        dialer_nonce: hello.nonce,
        acceptor_nonce: challenge.nonce,
    };
    if !hello::verify(&me.secret, Role::Acceptor, &transcript, &challenge.tag) {
        return refuse(conn, HandshakeRefusal::BadMac, timeout).await;
    }
    let proof = hello::tag(&me.secret, Role::Dialer, &transcript);
    conn.write_frame(kind::RESPONSE, &proof, timeout).await?;
    // The acceptor proved itself a member above: its word that this node
    // was retired can be acted on.
    let accepted = match expect(conn, kind::ACCEPTED, timeout).await {
        Err(Error::Handshake {
            peer,
            reason: HandshakeRefusal::ByPeer(refused::RETIRED),
        }) => {
            return Err(Error::Handshake {
                peer,
                reason: HandshakeRefusal::RetiredByMember(acceptor),
            });
        }
        other => other?,
    };
    if !accepted.is_empty() {
        let reason = HandshakeRefusal::Malformed(WireError::Malformed {
            what: "ACCEPTED",
            reason: format!("{} bytes, expected none", accepted.len()),
        });
        return refuse(conn, reason, timeout).await;
    }
    Ok(acceptor)
}

/// The acceptor's side: the dialer must be of our cluster, have dialed us
/// (or anyone, on a join connection), be accepted by `known` (the peer book,
/// or anyone with `accept_unknown_peers`) and prove the secret. A dialer
/// `retired` says the cluster retired is refused once both sides have
/// proven the secret, so that it can believe the refusal.
pub(crate) async fn accept(
    conn: &mut Conn,
    me: &Identity,
    known: impl Fn(u64) -> bool,
    retired: impl Fn(u64) -> bool,
    timeout: Duration,
) -> Result<Authenticated> {
    let payload = expect(conn, kind::HELLO, timeout).await?;
    let hello = match Hello::decode(&payload) {
        Ok(hello) => hello,
        Err(reason) => return refuse(conn, reason, timeout).await,
    };
    // Claimed, not yet proven: the log says so.
    conn.peer = format!("{}, claiming to be node {}", conn.peer, hello.dialer);
    if let Some(reason) = hello_refusal(&hello, me, known) {
        return refuse(conn, reason, timeout).await;
    }
    let transcript = Transcript {
        lane: hello.lane,
        cluster_id: me.cluster_id,
        dialer: hello.dialer,
        acceptor: me.node_id,
        dialer_nonce: hello.nonce,
        acceptor_nonce: nonce(),
    };
    let challenge = Challenge {
        acceptor: me.node_id,
        nonce: transcript.acceptor_nonce,
        tag: hello::tag(&me.secret, Role::Acceptor, &transcript),
    };
    conn.write_frame(kind::CHALLENGE, &challenge.encode(), timeout)
        .await?;
    let payload = expect(conn, kind::RESPONSE, timeout).await?;
    let proof = match decode_response(&payload) {
        Ok(proof) => proof,
        Err(reason) => return refuse(conn, reason, timeout).await,
    };
    if !hello::verify(&me.secret, Role::Dialer, &transcript, &proof) {
        return refuse(conn, HandshakeRefusal::BadMac, timeout).await;
    }
    if retired(hello.dialer) {
        return refuse(conn, HandshakeRefusal::Retired(hello.dialer), timeout).await;
    }
    conn.write_frame(kind::ACCEPTED, &[], timeout).await?;
    Ok(Authenticated {
        node_id: hello.dialer,
        lane: hello.lane,
    })
}

fn hello_refusal(
    hello: &Hello,
    me: &Identity,
    known: impl Fn(u64) -> bool,
) -> Option<HandshakeRefusal> {
    if hello.cluster_id != me.cluster_id {
        return Some(HandshakeRefusal::Cluster {
            ours: hex(&me.cluster_id),
            theirs: hex(&hello.cluster_id),
        });
    }
    let joining_anyone = hello.lane == lane::JOIN && hello.acceptor == ANY_NODE;
    if hello.acceptor != me.node_id && !joining_anyone {
        return Some(HandshakeRefusal::WrongNode {
            expected: hello.acceptor,
            found: me.node_id,
        });
    }
    if !known(hello.dialer) {
        return Some(HandshakeRefusal::UnknownPeer(hello.dialer));
    }
    None
}
