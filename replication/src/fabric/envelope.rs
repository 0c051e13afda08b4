//! Envelopes as data frames. The only place the fabric hands peer bytes to
//! protobuf (raft-rs 0.7's codec, protobuf 2.28: RUSTSEC-2024-0437 for
//! untrusted input), and decoding needs an [`Authenticated`] connection,
//! which only a finished handshake makes. A message naming another sender
//! than the connection's peer is refused, so a peer can only speak for
//! itself.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use protobuf::Message as _;
use raft::prelude::Message;

use crate::cluster::{JoinRequest, MAX_MEMBERS, MAX_NAME_BYTES, MemberInfo, MemberList};
use crate::error::WireError;
use crate::fabric::format::{
    CHUNK_ERROR, CHUNK_HEADER_BYTES, CHUNK_OK, CHUNK_REQUEST_HEADER_BYTES, FAMILY_V4, FAMILY_V6,
    MAX_FILE_NAME_BYTES, MAX_JOIN_BYTES, MAX_MEMBER_BYTES, MEMBERS_HEADER_BYTES, RAFT_HEADER_BYTES,
    kind, lane,
};
use crate::fabric::frame::{FrameBuilder, FrameRef};
use crate::fabric::handshake::Authenticated;
use crate::transport::Envelope;

/// The lane an envelope travels on.
pub(crate) fn lane_of(envelope: &Envelope) -> u8 {
    match envelope {
        Envelope::Raft { .. } => lane::RAFT,
        Envelope::ChunkRequest { .. } | Envelope::Chunk { .. } => lane::BULK,
    }
}

fn name_bytes(file_name: &str) -> Result<u16, WireError> {
    match u16::try_from(file_name.len()) {
        Ok(len) if file_name.len() <= MAX_FILE_NAME_BYTES => Ok(len),
        _ => Err(malformed("file name", format!("{} bytes", file_name.len()))),
    }
}

/// The frame carrying `envelope`.
pub(crate) fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    match envelope {
        Envelope::Raft { shard, message } => {
            let mut frame = FrameBuilder::new(
                kind::RAFT,
                RAFT_HEADER_BYTES + message.compute_size() as usize,
            );
            frame.payload().extend_from_slice(&shard.to_le_bytes());
            message
                .write_to_vec(frame.payload())
                .map_err(|e| malformed("raft message", e.to_string()))?;
            frame.finish()
        }
        Envelope::ChunkRequest {
            shard,
            file_name,
            offset,
            ..
        } => {
            let mut frame = FrameBuilder::new(
                kind::CHUNK_REQUEST,
                CHUNK_REQUEST_HEADER_BYTES + file_name.len(),
            );
            let out = frame.payload();
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&name_bytes(file_name)?.to_le_bytes());
            out.extend_from_slice(file_name.as_bytes());
            frame.finish()
        }
        Envelope::Chunk {
            shard,
            file_name,
            offset,
            bytes,
        } => {
            let (status, body) = match bytes {
                Ok(bytes) => (CHUNK_OK, bytes.as_slice()),
                Err(reason) => (CHUNK_ERROR, reason.as_bytes()),
            };
            let mut frame = FrameBuilder::new(
                kind::CHUNK,
                CHUNK_HEADER_BYTES + file_name.len() + body.len(),
            );
            let out = frame.payload();
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&name_bytes(file_name)?.to_le_bytes());
            out.push(status);
            out.extend_from_slice(file_name.as_bytes());
            out.extend_from_slice(body);
            frame.finish()
        }
    }
}

/// The `MEMBERS` frame carrying `list`; more than [`MAX_MEMBERS`] members
/// or a name longer than [`MAX_NAME_BYTES`] is refused, as the decoder would.
pub(crate) fn encode_members(list: &MemberList) -> Result<Vec<u8>, WireError> {
    let count = match u16::try_from(list.members.len()) {
        Ok(count) if list.members.len() <= MAX_MEMBERS => count,
        _ => {
            return Err(malformed(
                "MEMBERS",
                format!("{} members", list.members.len()),
            ));
        }
    };
    let mut frame = FrameBuilder::new(
        kind::MEMBERS,
        MEMBERS_HEADER_BYTES + list.cluster_name.len() + 2 + list.members.len() * MAX_MEMBER_BYTES,
    );
    let out = frame.payload();
    out.extend_from_slice(&list.cluster_id.to_le_bytes());
    out.extend_from_slice(&list.shards.to_le_bytes());
    out.extend_from_slice(&list.version.to_le_bytes());
    put_text(out, "cluster name", &list.cluster_name)?;
    out.extend_from_slice(&count.to_le_bytes());
    for member in &list.members {
        put_member(out, member)?;
    }
    frame.finish()
}

/// The `JOIN` frame: the joiner's own entry and its incarnation.
pub(crate) fn encode_join(request: &JoinRequest) -> Result<Vec<u8>, WireError> {
    let mut frame = FrameBuilder::new(kind::JOIN, MAX_JOIN_BYTES);
    put_member(frame.payload(), &request.member)?;
    frame
        .payload()
        .extend_from_slice(&request.incarnation.to_le_bytes());
    frame.finish()
}

fn put_text(out: &mut Vec<u8>, what: &'static str, text: &str) -> Result<(), WireError> {
    match u8::try_from(text.len()) {
        Ok(len) if text.len() <= MAX_NAME_BYTES => {
            out.push(len);
            out.extend_from_slice(text.as_bytes());
            Ok(())
        }
        _ => Err(malformed(what, format!("{} bytes", text.len()))),
    }
}

fn put_member(out: &mut Vec<u8>, member: &MemberInfo) -> Result<(), WireError> {
    out.extend_from_slice(&member.node_id.to_le_bytes());
    match member.fabric_addr {
        SocketAddr::V4(addr) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&addr.ip().octets());
            out.extend_from_slice(&addr.port().to_le_bytes());
        }
        SocketAddr::V6(addr) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&addr.ip().octets());
            out.extend_from_slice(&addr.port().to_le_bytes());
            out.extend_from_slice(&addr.flowinfo().to_le_bytes());
            out.extend_from_slice(&addr.scope_id().to_le_bytes());
        }
    }
    put_text(out, "service address", &member.service_addr)
}

fn malformed(what: &'static str, reason: String) -> WireError {
    WireError::Malformed { what, reason }
}

/// Reads little-endian fields off the front of a payload.
struct Fields<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(malformed(
                self.what,
                format!("{} bytes left, {n} needed", self.rest.len()),
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A u8 length, then that many bytes of UTF-8: at most 255 by its type.
    fn text(&mut self, what: &'static str) -> Result<String, WireError> {
        let [len] = self.array()?;
        String::from_utf8(self.take(len as usize)?.to_vec())
            .map_err(|_| malformed(self.what, format!("a {what} that is not UTF-8")))
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        match self.array()? {
            [FAMILY_V4] => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                Ok(SocketAddrV4::new(ip, self.u16()?).into())
            }
            [FAMILY_V6] => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                Ok(SocketAddrV6::new(ip, port, self.u32()?, self.u32()?).into())
            }
            [other] => Err(malformed(self.what, format!("address family {other}"))),
        }
    }

    fn member(&mut self) -> Result<MemberInfo, WireError> {
        let node_id = self.u64()?;
        if node_id == 0 {
            return Err(malformed(self.what, "a member with node id 0".into()));
        }
        Ok(MemberInfo {
            node_id,
            fabric_addr: self.addr()?,
            service_addr: self.text("service address")?,
        })
    }

    fn end(&self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(malformed(self.what, format!("{n} trailing bytes"))),
        }
    }

    fn name(&mut self, len: u16) -> Result<String, WireError> {
        let bytes = self.take(len as usize)?;
        if bytes.len() > MAX_FILE_NAME_BYTES {
            return Err(malformed(self.what, format!("a {len}-byte file name")));
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|_| malformed(self.what, "a file name that is not UTF-8".into()))
    }
}

/// The envelope in a data frame from `peer`; `None` for a keepalive.
pub(crate) fn decode(
    peer: &Authenticated,
    frame: FrameRef<'_>,
) -> Result<Option<Envelope>, WireError> {
    let expected_lane = match frame.kind {
        kind::KEEPALIVE => return Ok(None),
        kind::RAFT => lane::RAFT,
        kind::CHUNK_REQUEST | kind::CHUNK => lane::BULK,
        other => {
            return Err(WireError::Unexpected {
                got: kind::name(other),
                expected: "a data frame",
            });
        }
    };
    if expected_lane != peer.lane() {
        return Err(WireError::Unexpected {
            got: kind::name(frame.kind),
            expected: "a frame of the connection's lane",
        });
    }
    let mut fields = Fields {
        what: kind::name(frame.kind),
        rest: frame.payload,
    };
    let envelope = match frame.kind {
        kind::RAFT => decode_raft(peer, &mut fields)?,
        kind::CHUNK_REQUEST => decode_chunk_request(peer, &mut fields)?,
        _ => decode_chunk(&mut fields)?,
    };
    Ok(Some(envelope))
}

fn decode_raft(peer: &Authenticated, fields: &mut Fields<'_>) -> Result<Envelope, WireError> {
    let shard = fields.u32()?;
    let message = Message::parse_from_bytes(fields.rest)
        .map_err(|e| malformed("raft message", e.to_string()))?;
    if message.from != peer.node_id() {
        return Err(WireError::Impersonation {
            what: "raft message",
            claimed: message.from,
            peer: peer.node_id(),
        });
    }
    Ok(Envelope::Raft { shard, message })
}

fn decode_chunk_request(
    peer: &Authenticated,
    fields: &mut Fields<'_>,
) -> Result<Envelope, WireError> {
    let shard = fields.u32()?;
    let offset = fields.u64()?;
    let len = u16::from_le_bytes(fields.array()?);
    let file_name = fields.name(len)?;
    if !fields.rest.is_empty() {
        return Err(malformed(
            "CHUNK_REQUEST",
            format!("{} trailing bytes", fields.rest.len()),
        ));
    }
    // The sender is the authenticated peer: the frame does not carry it.
    Ok(Envelope::ChunkRequest {
        from: peer.node_id(),
        shard,
        file_name,
        offset,
    })
}

/// A `MEMBERS` payload: at most [`MAX_MEMBERS`] members (the count is
/// checked before any member is read), distinct non-zero node ids, names of
/// at most 255 bytes by their u8 lengths, nothing after the last member.
pub(crate) fn decode_members(payload: &[u8]) -> Result<MemberList, WireError> {
    let mut fields = Fields {
        what: "MEMBERS",
        rest: payload,
    };
    let cluster_id = fields.u64()?;
    let shards = fields.u32()?;
    let version = fields.u64()?;
    let cluster_name = fields.text("cluster name")?;
    let count = fields.u16()? as usize;
    if count > MAX_MEMBERS {
        return Err(malformed("MEMBERS", format!("{count} members")));
    }
    let mut members = Vec::with_capacity(count);
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        let member = fields.member()?;
        if !ids.insert(member.node_id) {
            return Err(malformed(
                "MEMBERS",
                format!("node {} listed twice", member.node_id),
            ));
        }
        members.push(member);
    }
    fields.end()?;
    Ok(MemberList {
        cluster_id,
        cluster_name,
        shards,
        version,
        members,
    })
}

/// A `JOIN` payload: exactly one member, then its incarnation.
pub(crate) fn decode_join(payload: &[u8]) -> Result<JoinRequest, WireError> {
    let mut fields = Fields {
        what: "JOIN",
        rest: payload,
    };
    let member = fields.member()?;
    let incarnation = fields.u64()?;
    fields.end()?;
    Ok(JoinRequest {
        member,
        incarnation,
    })
}

fn decode_chunk(fields: &mut Fields<'_>) -> Result<Envelope, WireError> {
    let shard = fields.u32()?;
    let offset = fields.u64()?;
    let len = u16::from_le_bytes(fields.array()?);
    let [status] = fields.array()?;
    let file_name = fields.name(len)?;
    let body = fields.rest;
    let bytes = match status {
        CHUNK_OK => Ok(body.to_vec()),
        CHUNK_ERROR => Err(String::from_utf8_lossy(body).into_owned()),
        other => return Err(malformed("CHUNK", format!("status {other}"))),
    };
    Ok(Envelope::Chunk {
        shard,
        file_name,
        offset,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::frame;
    use proptest::prelude::*;
    use raft::prelude::{Entry, MessageType};

    fn from(node: u64, lane: u8) -> Authenticated {
        Authenticated::for_tests(node, lane)
    }

    fn round_trip(peer: &Authenticated, envelope: &Envelope) -> Envelope {
        let bytes = encode(envelope).unwrap();
        let (frame, used) = frame::decode(&bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        decode(peer, frame).unwrap().unwrap()
    }

    #[test]
    fn envelopes_round_trip_and_peers_speak_only_for_themselves() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.from = 2;
        message.to = 1;
        message.entries = vec![Entry {
            data: vec![7; 100].into(),
            ..Entry::default()
        }]
        .into();
        let raft = Envelope::Raft {
            shard: 3,
            message: message.clone(),
        };
        match round_trip(&from(2, lane::RAFT), &raft) {
            Envelope::Raft {
                shard: 3,
                message: got,
            } => assert_eq!(got, message),
            other => panic!("{other:?}"),
        }
        let bytes = encode(&raft).unwrap();
        let (frame, _) = frame::decode(&bytes, 1 << 20).unwrap().unwrap();
        assert!(matches!(
            decode(&from(5, lane::RAFT), frame),
            Err(WireError::Impersonation {
                claimed: 2,
                peer: 5,
                ..
            })
        ));
        assert!(matches!(
            decode(&from(2, lane::BULK), frame),
            Err(WireError::Unexpected { .. })
        ));

        let request = Envelope::ChunkRequest {
            from: 99,
            shard: 1,
            file_name: "shard-1.snap".into(),
            offset: 42,
        };
        match round_trip(&from(2, lane::BULK), &request) {
            Envelope::ChunkRequest {
                from: 2,
                shard: 1,
                file_name,
                offset: 42,
            } => assert_eq!(file_name, "shard-1.snap"),
            other => panic!("{other:?}"),
        }
        for bytes in [Ok(vec![1, 2, 3]), Err("gone".to_string())] {
            let chunk = Envelope::Chunk {
                shard: 1,
                file_name: "f".into(),
                offset: 9,
                bytes: bytes.clone(),
            };
            match round_trip(&from(2, lane::BULK), &chunk) {
                Envelope::Chunk {
                    shard: 1,
                    offset: 9,
                    bytes: got,
                    ..
                } => assert_eq!(got, bytes),
                other => panic!("{other:?}"),
            }
        }
    }

    fn members() -> MemberList {
        MemberList {
            cluster_id: 0xC1,
            cluster_name: "prod-east".into(),
            shards: 64,
            version: 9,
            members: vec![
                MemberInfo {
                    node_id: 3,
                    fabric_addr: "10.0.0.3:3002".parse().unwrap(),
                    service_addr: "db3.example:3000".into(),
                },
                MemberInfo {
                    node_id: 1,
                    fabric_addr: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 3002, 7, 2).into(),
                    service_addr: "[::1]:3000".into(),
                },
            ],
        }
    }

    #[test]
    fn member_lists_and_joins_round_trip_and_their_bounds_hold() {
        let list = members();
        let encoded = encode_members(&list).unwrap();
        let (frame, _) = frame::decode(&encoded, 1 << 20).unwrap().unwrap();
        assert_eq!(decode_members(frame.payload), Ok(list.clone()));
        assert!(
            decode(&from(2, lane::RAFT), frame).is_err(),
            "MEMBERS answers a join only: it is not a data frame"
        );
        let request = JoinRequest {
            member: list.members[1].clone(),
            incarnation: 0x0102_0304_0506_0708,
        };
        let join = encode_join(&request).unwrap();
        let (frame, _) = frame::decode(&join, 1 << 20).unwrap().unwrap();
        assert_eq!(decode_join(frame.payload), Ok(request));
        let payload = frame.payload.to_vec();
        assert!(decode_join(&payload[..payload.len() - 1]).is_err());
        assert!(
            decode(&from(1, lane::RAFT), frame).is_err(),
            "JOIN is not a data frame"
        );

        let mut long_name = list.clone();
        long_name.cluster_name = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(encode_members(&long_name).is_err());
        let mut crowded = list.clone();
        crowded.members = vec![list.members[0].clone(); MAX_MEMBERS + 1];
        assert!(encode_members(&crowded).is_err());

        let encoded = encode_members(&list).unwrap();
        let (frame, _) = frame::decode(&encoded, 1 << 20).unwrap().unwrap();
        let payload = frame.payload.to_vec();
        let count_at = MEMBERS_HEADER_BYTES + list.cluster_name.len();
        let mut too_many = payload.clone();
        too_many[count_at..count_at + 2].copy_from_slice(&(MAX_MEMBERS as u16 + 1).to_le_bytes());
        assert!(decode_members(&too_many).is_err());
        let mut twice = list.clone();
        twice.members[1].node_id = 3;
        let twice = encode_members(&twice).unwrap();
        let (frame, _) = frame::decode(&twice, 1 << 20).unwrap().unwrap();
        assert!(
            decode_members(frame.payload).is_err(),
            "a node listed twice"
        );
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(decode_members(&trailing).is_err());
        assert!(decode_members(&payload[..payload.len() - 1]).is_err());
    }

    #[test]
    fn the_member_bounds_are_those_in_fabric_md() {
        use crate::fabric::format::{FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, MAX_MEMBERS_BYTES};
        assert_eq!((MAX_MEMBER_BYTES, MAX_MEMBERS_BYTES), (291, 298_262));
        let longest = MemberInfo {
            node_id: 1,
            fabric_addr: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 0).into(),
            service_addr: "s".repeat(MAX_NAME_BYTES),
        };
        let join = encode_join(&JoinRequest {
            member: longest,
            incarnation: 0,
        })
        .unwrap();
        let framing = FRAME_HEADER_BYTES + FRAME_TRAILER_BYTES;
        assert_eq!(join.len() - framing, MAX_JOIN_BYTES, "the longest member");
        assert_eq!(MAX_JOIN_BYTES, 299);
    }

    proptest! {
        #[test]
        fn member_and_join_payloads_of_any_bytes_decode_without_panicking(payload in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_members(&payload);
            let _ = decode_join(&payload);
        }

        #[test]
        fn damaged_member_lists_decode_without_panicking(flip in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let encoded = encode_members(&members()).unwrap();
            let (frame, _) = frame::decode(&encoded, 1 << 20).unwrap().unwrap();
            let mut payload = frame.payload.to_vec();
            let at = flip.index(payload.len());
            payload[at] = byte;
            let _ = decode_members(&payload[..cut.index(payload.len() + 1)]);
        }

        #[test]
        fn data_payloads_of_any_bytes_decode_without_panicking(kind in prop::sample::select(vec![kind::RAFT, kind::CHUNK_REQUEST, kind::CHUNK, kind::KEEPALIVE, kind::HELLO, kind::MEMBERS, kind::JOIN]), payload in prop::collection::vec(any::<u8>(), 0..300)) {
            let lane = if kind == kind::RAFT || kind == kind::MEMBERS { lane::RAFT } else { lane::BULK };
            let _ = decode(&from(2, lane), FrameRef { kind, payload: &payload });
        }
    }
}
