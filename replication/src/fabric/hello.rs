//! The handshake's payloads and proofs. The dialer sends `HELLO` (its id,
//! the id it dialed, the cluster id, the lane, a nonce); the acceptor answers
//! `CHALLENGE` (its id, its nonce, its tag); the dialer checks that tag and
//! answers `RESPONSE` (its tag); the acceptor checks it and sends `ACCEPTED`.
//! Each tag is HMAC-SHA256 under the cluster secret over a role label, the
//! protocol version, the lane, the cluster id, both node ids and both nonces:
//! fresh on every connection, bound to who talks to whom, and never valid for
//! the other role. Tags are compared in constant time (`Mac::verify_slice`).
//!
//! The decoders are total: any bytes give a value or a refusal.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{HandshakeRefusal, WireError};
use crate::fabric::format::{
    CHALLENGE_BYTES, CLUSTER_ID_BYTES, HELLO_BYTES, HELLO_MAGIC, MAC_BYTES, NONCE_BYTES,
    PROTOCOL_VERSION, REFUSED_BYTES, RESPONSE_BYTES, lane, refused,
};

/// A cluster's identity: a node refuses peers of another cluster.
pub type ClusterId = [u8; CLUSTER_ID_BYTES];
/// A handshake nonce.
pub type Nonce = [u8; NONCE_BYTES];
/// An HMAC-SHA256 tag.
pub type Tag = [u8; MAC_BYTES];

/// The dialer's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// `format::lane`.
    pub lane: u8,
    /// The dialer's cluster.
    pub cluster_id: ClusterId,
    /// The dialer.
    pub dialer: u64,
    /// The node the dialer means to reach.
    pub acceptor: u64,
    /// The dialer's nonce.
    pub nonce: Nonce,
}

/// The acceptor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's node id.
    pub acceptor: u64,
    /// The acceptor's nonce.
    pub nonce: Nonce,
    /// The acceptor's proof.
    pub tag: Tag,
}

/// Everything both tags cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// The lane.
    pub lane: u8,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The dialer.
    pub dialer: u64,
    /// The acceptor.
    pub acceptor: u64,
    /// The dialer's nonce.
    pub dialer_nonce: Nonce,
    /// The acceptor's nonce.
    pub acceptor_nonce: Nonce,
}

/// Which side a tag proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that accepted the connection.
    Acceptor,
    /// The side that dialed.
    Dialer,
}

fn malformed(what: &'static str, reason: String) -> HandshakeRefusal {
    HandshakeRefusal::Malformed(WireError::Malformed { what, reason })
}

fn exact<const N: usize>(payload: &[u8], what: &'static str) -> Result<[u8; N], HandshakeRefusal> {
    payload
        .try_into()
        .map_err(|_| malformed(what, format!("{} bytes, expected {N}", payload.len())))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl Hello {
    /// The `HELLO` payload.
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0; HELLO_BYTES];
        out[0..4].copy_from_slice(&HELLO_MAGIC);
        out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[6] = self.lane;
        out[8..24].copy_from_slice(&self.cluster_id);
        out[24..32].copy_from_slice(&self.dialer.to_le_bytes());
        out[32..40].copy_from_slice(&self.acceptor.to_le_bytes());
        out[40..72].copy_from_slice(&self.nonce);
        out
    }

    /// Decodes a `HELLO` payload. Magic and version come first and keep
    /// their place in every version, so another version is named as such.
    pub fn decode(payload: &[u8]) -> Result<Hello, HandshakeRefusal> {
        if payload.get(..4) != Some(&HELLO_MAGIC[..]) {
            return Err(malformed("HELLO", "no magic".into()));
        }
        let version = payload
            .get(4..6)
            .map(|v| u16::from_le_bytes([v[0], v[1]]))
            .ok_or_else(|| malformed("HELLO", "no version".into()))?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeRefusal::Version {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        let bytes: [u8; HELLO_BYTES] = exact(payload, "HELLO")?;
        if bytes[7] != 0 {
            return Err(malformed("HELLO", format!("reserved byte {}", bytes[7])));
        }
        if ![lane::RAFT, lane::BULK, lane::JOIN].contains(&bytes[6]) {
            return Err(HandshakeRefusal::Lane(bytes[6]));
        }
        let mut cluster_id = [0; CLUSTER_ID_BYTES];
        cluster_id.copy_from_slice(&bytes[8..24]);
        let mut nonce = [0; NONCE_BYTES];
        nonce.copy_from_slice(&bytes[40..72]);
        Ok(Hello {
            lane: bytes[6],
            cluster_id,
            dialer: u64_at(&bytes, 24),
            acceptor: u64_at(&bytes, 32),
            nonce,
        })
    }
}

impl Challenge {
    /// The `CHALLENGE` payload.
    pub fn encode(&self) -> [u8; CHALLENGE_BYTES] {
        let mut out = [0; CHALLENGE_BYTES];
        out[0..8].copy_from_slice(&self.acceptor.to_le_bytes());
        out[8..40].copy_from_slice(&self.nonce);
        out[40..72].copy_from_slice(&self.tag);
        out
    }

    /// Decodes a `CHALLENGE` payload.
    pub fn decode(payload: &[u8]) -> Result<Challenge, HandshakeRefusal> {
        let bytes: [u8; CHALLENGE_BYTES] = exact(payload, "CHALLENGE")?;
        let mut nonce = [0; NONCE_BYTES];
        nonce.copy_from_slice(&bytes[8..40]);
        let mut tag = [0; MAC_BYTES];
        tag.copy_from_slice(&bytes[40..72]);
        Ok(Challenge {
            acceptor: u64_at(&bytes, 0),
            nonce,
            tag,
        })
    }
}

/// Decodes a `RESPONSE` payload: the dialer's tag.
pub fn decode_response(payload: &[u8]) -> Result<Tag, HandshakeRefusal> {
    exact::<RESPONSE_BYTES>(payload, "RESPONSE")
}

/// The `REFUSED` code for a refusal (a refusal by the peer is not sent on).
pub fn refusal_code(refusal: &HandshakeRefusal) -> u8 {
    match refusal {
        HandshakeRefusal::Malformed(_) | HandshakeRefusal::ByPeer(_) => refused::MALFORMED,
        HandshakeRefusal::Version { .. } => refused::VERSION,
        HandshakeRefusal::Cluster { .. } => refused::CLUSTER,
        HandshakeRefusal::WrongNode { .. } => refused::WRONG_NODE,
        HandshakeRefusal::UnknownPeer(_) => refused::UNKNOWN_PEER,
        HandshakeRefusal::BadMac => refused::BAD_MAC,
        HandshakeRefusal::Lane(_) => refused::LANE,
        HandshakeRefusal::Busy => refused::BUSY,
        HandshakeRefusal::JoinRefused => refused::JOIN_REFUSED,
        HandshakeRefusal::Retired(_) | HandshakeRefusal::RetiredByMember(_) => refused::RETIRED,
        HandshakeRefusal::IdInUse(_) => refused::ID_IN_USE,
    }
}

/// Decodes a `REFUSED` payload into the refusal it reports.
pub fn decode_refused(payload: &[u8]) -> HandshakeRefusal {
    match exact::<REFUSED_BYTES>(payload, "REFUSED") {
        Ok([code]) => HandshakeRefusal::ByPeer(code),
        Err(refusal) => refusal,
    }
}

fn keyed(secret: &[u8], role: Role, t: &Transcript) -> Hmac<Sha256> {
    // HMAC takes keys of any length (an empty one when the cluster runs
    // without a secret on loopback), so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(e) => unreachable!("HMAC refused a key: {e}"),
    };
    let label = match role {
        Role::Acceptor => crate::fabric::format::ACCEPTOR_LABEL,
        Role::Dialer => crate::fabric::format::DIALER_LABEL,
    };
    mac.update(label);
    mac.update(&PROTOCOL_VERSION.to_le_bytes());
    mac.update(&[t.lane]);
    mac.update(&t.cluster_id);
    mac.update(&t.dialer.to_le_bytes());
    mac.update(&t.acceptor.to_le_bytes());
    mac.update(&t.dialer_nonce);
    mac.update(&t.acceptor_nonce);
    mac
}

/// The tag `role` sends for `transcript`.
pub fn tag(secret: &[u8], role: Role, transcript: &Transcript) -> Tag {
    keyed(secret, role, transcript)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `tag` proves `role` knows the secret, compared in constant time.
pub fn verify(secret: &[u8], role: Role, transcript: &Transcript, tag: &Tag) -> bool {
    keyed(secret, role, transcript).verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            lane: lane::RAFT,
            cluster_id: [7; 16],
            dialer: 1,
            acceptor: 2,
            dialer_nonce: [1; 32],
            acceptor_nonce: [2; 32],
        }
    }

    #[test]
    fn tags_bind_the_secret_the_role_and_every_field() {
        let t = transcript();
        let good = tag(b"secret", Role::Dialer, &t);
        assert!(verify(b"secret", Role::Dialer, &t, &good));
        assert!(!verify(b"other", Role::Dialer, &t, &good));
        assert!(!verify(b"secret", Role::Acceptor, &t, &good));
        let changed = [
            Transcript {
                lane: lane::BULK,
                ..t
            },
            Transcript {
                cluster_id: [8; 16],
                ..t
            },
            Transcript {
                dialer: 2,
                acceptor: 1,
                ..t
            },
            Transcript {
                dialer_nonce: [3; 32],
                ..t
            },
            Transcript {
                acceptor_nonce: [3; 32],
                ..t
            },
        ];
        for other in changed {
            assert!(!verify(b"secret", Role::Dialer, &other, &good), "{other:?}");
        }
    }

    #[test]
    fn hello_and_challenge_round_trip_and_refuse_damage() {
        let hello = Hello {
            lane: lane::BULK,
            cluster_id: [9; 16],
            dialer: 3,
            acceptor: 4,
            nonce: [5; 32],
        };
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes), Ok(hello));
        let mut v2 = bytes;
        v2[4] = 2;
        assert!(matches!(
            Hello::decode(&v2),
            Err(HandshakeRefusal::Version { theirs: 2, .. })
        ));
        let mut bad_lane = bytes;
        bad_lane[6] = 9;
        assert_eq!(Hello::decode(&bad_lane), Err(HandshakeRefusal::Lane(9)));
        assert!(Hello::decode(&bytes[..71]).is_err());
        let challenge = Challenge {
            acceptor: 4,
            nonce: [6; 32],
            tag: [7; 32],
        };
        assert_eq!(Challenge::decode(&challenge.encode()), Ok(challenge));
        assert!(Challenge::decode(&[0; 71]).is_err());
        assert_eq!(
            decode_refused(&[refused::CLUSTER]),
            HandshakeRefusal::ByPeer(refused::CLUSTER)
        );
    }
}
