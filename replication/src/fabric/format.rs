//! The fabric's bytes: named constants. `replication/FABRIC.md` describes
//! the same bytes in prose; change both together.
//!
//! All integers are little-endian. CRC32 is the IEEE polynomial
//! (`crc32fast`), as in the WAL and snapshot files.

/// Bumped on any incompatible change of the handshake or the frames.
pub const PROTOCOL_VERSION: u16 = 1;
/// The first bytes of a `HELLO` payload.
pub const HELLO_MAGIC: [u8; 4] = *b"AERF";

/// Frame header: payload length (u32) then the frame type (u8).
pub const FRAME_HEADER_BYTES: usize = 5;
/// Frame trailer: CRC32 of the header and the payload.
pub const FRAME_TRAILER_BYTES: usize = 4;
/// Offset of the frame type in the header.
pub const TYPE_OFFSET: usize = 4;
/// Largest payload accepted before the peer is authenticated: a handshake
/// frame never needs more, so a stranger cannot make us allocate more.
pub const MAX_HANDSHAKE_PAYLOAD_BYTES: usize = 128;
/// The highest `max_frame_bytes` a node may be configured with.
pub const FRAME_LIMIT_BYTES: usize = 64 << 20;
/// The default `max_frame_bytes`: a WAL entry at its default limit (16 MiB)
/// in a raft append, with room for the message around it.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (16 << 20) + (64 << 10);

/// Frame types. Handshake frames come first on every connection; data
/// frames only after the acceptor sent `ACCEPTED`.
pub mod kind {
    /// Dialer to acceptor: who it is, whom it dialed, its nonce.
    pub const HELLO: u8 = 0x01;
    /// Acceptor to dialer: its id, its nonce, its proof.
    pub const CHALLENGE: u8 = 0x02;
    /// Dialer to acceptor: its proof.
    pub const RESPONSE: u8 = 0x03;
    /// Acceptor to dialer: the dialer is authenticated; data frames follow.
    pub const ACCEPTED: u8 = 0x04;
    /// Either side, then it closes: why the handshake was refused.
    pub const REFUSED: u8 = 0x05;
    /// A raft message of a shard.
    pub const RAFT: u8 = 0x10;
    /// A follower asks for bytes of a snapshot file.
    pub const CHUNK_REQUEST: u8 = 0x11;
    /// Bytes of a snapshot file, or why not.
    pub const CHUNK: u8 = 0x12;
    /// Nothing: keeps an idle connection from being closed by the acceptor.
    pub const KEEPALIVE: u8 = 0x13;
    /// The cluster's member list: the answer to `JOIN` (not a data frame).
    pub const MEMBERS: u8 = 0x14;
    /// A node asks a seed to join, on a join connection: who it is.
    pub const JOIN: u8 = 0x15;

    /// A name for logs and errors.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            HELLO => "HELLO",
            CHALLENGE => "CHALLENGE",
            RESPONSE => "RESPONSE",
            ACCEPTED => "ACCEPTED",
            REFUSED => "REFUSED",
            RAFT => "RAFT",
            CHUNK_REQUEST => "CHUNK_REQUEST",
            CHUNK => "CHUNK",
            KEEPALIVE => "KEEPALIVE",
            MEMBERS => "MEMBERS",
            JOIN => "JOIN",
            _ => "unknown",
        }
    }

    /// Whether this version knows the type.
    pub fn is_known(kind: u8) -> bool {
        name(kind) != "unknown"
    }
}

/// Bytes of a cluster id.
pub const CLUSTER_ID_BYTES: usize = 16;
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;
/// `HELLO` payload: magic 4, version 2, lane 1, reserved 1, cluster id 16,
/// dialer id 8, acceptor id 8, nonce 32.
pub const HELLO_BYTES: usize = 4 + 2 + 1 + 1 + CLUSTER_ID_BYTES + 8 + 8 + NONCE_BYTES;
/// `CHALLENGE` payload: acceptor id 8, nonce 32, tag 32.
pub const CHALLENGE_BYTES: usize = 8 + NONCE_BYTES + MAC_BYTES;
/// `RESPONSE` payload: the dialer's tag.
pub const RESPONSE_BYTES: usize = MAC_BYTES;
/// `REFUSED` payload: one reason code.
pub const REFUSED_BYTES: usize = 1;

/// Domain-separation labels in front of the MAC input, one per role, so
/// neither side's tag can be replayed as the other's.
pub const ACCEPTOR_LABEL: &[u8; 16] = b"aerie-fabric-acc";
/// The dialer's label.
pub const DIALER_LABEL: &[u8; 16] = b"aerie-fabric-dia";

/// Lanes: each peer gets one connection per lane, so bulk bytes never wait
/// in front of raft messages.
pub mod lane {
    /// Raft messages.
    pub const RAFT: u8 = 0;
    /// Snapshot chunk requests and chunks.
    pub const BULK: u8 = 1;
    /// A one-shot join exchange (`JOIN`, then `MEMBERS` or `REFUSED`): never
    /// registered as a peer's lane, so it cannot replace its raft or bulk one.
    pub const JOIN: u8 = 2;
}

/// The acceptor id a join dialer puts in its `HELLO`: it does not know the
/// seed's id yet and learns it from the `CHALLENGE`. Refused on other lanes.
pub const ANY_NODE: u64 = 0;

/// `REFUSED` reason codes.
pub mod refused {
    /// Not a handshake of this protocol.
    pub const MALFORMED: u8 = 1;
    /// Another protocol version.
    pub const VERSION: u8 = 2;
    /// Another cluster.
    pub const CLUSTER: u8 = 3;
    /// Not the node expected.
    pub const WRONG_NODE: u8 = 4;
    /// A dialer not in the peer book.
    pub const UNKNOWN_PEER: u8 = 5;
    /// A tag that does not verify.
    pub const BAD_MAC: u8 = 6;
    /// An unknown lane.
    pub const LANE: u8 = 7;
    /// Too many handshakes in progress.
    pub const BUSY: u8 = 8;
    /// The seed has no join handler, or its handler refused the joiner.
    pub const JOIN_REFUSED: u8 = 9;
    /// The dialer's node id was retired from the cluster (for good).
    pub const RETIRED: u8 = 10;
    /// A joiner with a new data dir claims the id of a member.
    pub const ID_IN_USE: u8 = 11;

    /// A name for logs; unknown codes are reported as such.
    pub fn name(code: u8) -> &'static str {
        match code {
            MALFORMED => "malformed handshake",
            VERSION => "protocol version",
            CLUSTER => "cluster id",
            WRONG_NODE => "wrong node id",
            UNKNOWN_PEER => "unknown peer",
            BAD_MAC => "wrong cluster secret",
            LANE => "unknown lane",
            BUSY => "busy",
            JOIN_REFUSED => "join refused",
            RETIRED => "this node id was retired from the cluster",
            ID_IN_USE => "this node id belongs to a member",
            _ => "unknown reason",
        }
    }
}

/// Data payloads.
/// `RAFT`: shard u32, then the protobuf-encoded raft `Message`.
pub const RAFT_HEADER_BYTES: usize = 4;
/// `CHUNK_REQUEST`: shard u32, offset u64, name length u16, then the name.
pub const CHUNK_REQUEST_HEADER_BYTES: usize = 4 + 8 + 2;
/// `CHUNK`: shard u32, offset u64, name length u16, status u8, then the name,
/// then the bytes (status 0) or a UTF-8 error text (status 1) to the end.
pub const CHUNK_HEADER_BYTES: usize = 4 + 8 + 2 + 1;
/// `CHUNK` status: the rest are the file's bytes.
pub const CHUNK_OK: u8 = 0;
/// `CHUNK` status: the rest is why the source refused.
pub const CHUNK_ERROR: u8 = 1;
/// Longest snapshot file name carried.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// `MEMBERS`: cluster id u64, shards u32, version u64, name length u8, then
/// the name, then the member count u16, then the members.
pub const MEMBERS_HEADER_BYTES: usize = 8 + 4 + 8 + 1;
/// A member (in `MEMBERS` and as the whole `JOIN` payload): node id u64,
/// address family u8 (4 or 6), the address, service address length u8, then
/// the service address.
/// An IPv4 address: 4 bytes of IP, port u16.
pub const IPV4_ADDR_BYTES: usize = 4 + 2;
/// An IPv6 address: 16 bytes of IP, port u16, flow info u32, scope id u32.
pub const IPV6_ADDR_BYTES: usize = 16 + 2 + 4 + 4;
/// Address family byte of an IPv4 address.
pub const FAMILY_V4: u8 = 4;
/// Address family byte of an IPv6 address.
pub const FAMILY_V6: u8 = 6;
/// The largest member: IPv6, a service address of the longest name.
pub const MAX_MEMBER_BYTES: usize = 8 + 1 + IPV6_ADDR_BYTES + 1 + crate::cluster::MAX_NAME_BYTES;
/// The `JOIN` payload: a member, then the joiner's incarnation (u64; 0 for
/// a member asking again, else a random number of a new data dir's start).
pub const MAX_JOIN_BYTES: usize = MAX_MEMBER_BYTES + 8;
/// The largest `MEMBERS` payload; a join reply is read with this limit.
pub const MAX_MEMBERS_BYTES: usize = MEMBERS_HEADER_BYTES
    + crate::cluster::MAX_NAME_BYTES
    + 2
    + crate::cluster::MAX_MEMBERS * MAX_MEMBER_BYTES;
