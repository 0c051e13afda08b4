//! Forming a cluster from seeds over real sockets (127.0.0.1, ports from
//! binding :0): a node joins through a seed whose id it does not know and
//! gets the seed's member list exactly; a joiner with the wrong secret is
//! refused before its JOIN frame is read; a seed without a handler refuses
//! cleanly; a silent seed cannot hold a join past its timeout; dialers not in
//! the peer book are accepted once authenticated only with
//! `accept_unknown_peers`; member lists travel as envelopes over the fabric
//! and through `LocalNetwork`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerie_replication::cluster::{JoinRequest, MemberInfo, MemberList};
use aerie_replication::fabric::format::{ANY_NODE, kind, lane, refused};
use aerie_replication::fabric::hello::{Challenge, ClusterId, Hello};
use aerie_replication::fabric::{FabricConfig, TcpTransport};
use aerie_replication::transport::{Envelope, Transport};
use aerie_replication::{Error, HandshakeRefusal};
use common::{read_frame, write_frame};
use raft::prelude::{Message, MessageType};

const SECRET: &[u8] = b"the good cluster's shared secret";
const WRONG_SECRET: &[u8] = b"a secret of some other cluster!!";
const CLUSTER: ClusterId = *b"good-cluster-id!";
const WAIT: Duration = Duration::from_secs(10);
const JOIN_MS: u64 = 5_000;

fn config(id: u64, secret: Option<&[u8]>) -> FabricConfig {
    let mut config = FabricConfig::new(id, CLUSTER, "127.0.0.1:0".parse().unwrap());
    config.secret = secret.map(<[u8]>::to_vec);
    config.backoff_min_ms = 10;
    config.backoff_max_ms = 100;
    config.runtime_threads = 1;
    config
}

fn start(id: u64, secret: Option<&[u8]>) -> Arc<TcpTransport> {
    TcpTransport::start(config(id, secret)).unwrap()
}

fn member(transport: &TcpTransport, id: u64) -> MemberInfo {
    MemberInfo {
        node_id: id,
        fabric_addr: transport.local_addr(),
        service_addr: format!("127.0.0.1:{}", 3000 + id),
    }
}

fn list(members: Vec<MemberInfo>) -> MemberList {
    MemberList {
        cluster_id: 0xAE,
        cluster_name: "good".into(),
        shards: 16,
        version: 4,
        members,
    }
}

/// A handler that records who asked and answers `reply` (`None`: refused).
fn answer_with(seed: &TcpTransport, reply: Option<MemberList>) -> Arc<Mutex<Vec<MemberInfo>>> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let sink = asked.clone();
    seed.set_join_handler(Arc::new(move |joiner: JoinRequest| {
        sink.lock().unwrap().push(joiner.member);
        reply.clone().ok_or(HandshakeRefusal::JoinRefused)
    }));
    asked
}

/// A member asking again (not a new data dir).
fn again(member: MemberInfo) -> JoinRequest {
    JoinRequest {
        member,
        incarnation: 0,
    }
}

/// Every envelope a transport delivered.
fn record(transport: &TcpTransport) -> Arc<Mutex<Vec<Envelope>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    transport.set_deliver(Arc::new(move |envelope| {
        sink.lock().unwrap().push(envelope);
        true
    }));
    seen
}

fn raft(from: u64, to: u64) -> Envelope {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.from = from;
    message.to = to;
    Envelope::Raft { shard: 0, message }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_node_joins_through_a_seed_and_gets_its_list_exactly_without_disturbing_its_lanes() {
    let seed = start(1, Some(SECRET));
    let joiner = start(2, Some(SECRET));
    let seen_by_seed = record(&seed);
    // The two already talk on raft lanes: the join must not replace them.
    seed.set_peers([(2, joiner.local_addr())].into()).unwrap();
    joiner.set_peers([(1, seed.local_addr())].into()).unwrap();
    eventually("the raft lanes", || joiner.send(2, 1, raft(2, 1)));
    let me = member(&joiner, 2);
    let reply = list(vec![member(&seed, 1), me.clone()]);
    let asked = answer_with(&seed, Some(reply.clone()));

    let got = joiner
        .join(seed.local_addr(), again(me.clone()), JOIN_MS)
        .unwrap();
    assert_eq!(got, reply, "the list round-trips exactly");
    assert_eq!(*asked.lock().unwrap(), vec![me]);

    let delivered = seen_by_seed.lock().unwrap().len();
    assert!(joiner.send(2, 1, raft(2, 1)), "the raft lane is still up");
    eventually("a raft message after the join", || {
        seen_by_seed.lock().unwrap().len() > delivered
    });
    assert!(
        seed.recent_refusals().is_empty(),
        "{:?}",
        seed.recent_refusals()
    );
    assert_eq!(seed.stats().frames_refused, 0);
}

#[test]
fn a_join_with_the_wrong_secret_is_refused_before_its_join_frame_is_decoded() {
    let seed = start(1, Some(SECRET));
    let asked = answer_with(&seed, Some(list(vec![])));
    let stranger = start(2, Some(WRONG_SECRET));
    match stranger.join(seed.local_addr(), again(member(&stranger, 2)), JOIN_MS) {
        Err(Error::Handshake {
            reason: HandshakeRefusal::BadMac,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // A forged proof followed at once by a JOIN frame: refused on the
    // proof; the JOIN frame is never read, the handler never asked.
    let mut forged = TcpStream::connect(seed.local_addr()).unwrap();
    forged.set_read_timeout(Some(WAIT)).unwrap();
    let hello = Hello {
        lane: lane::JOIN,
        cluster_id: CLUSTER,
        dialer: 3,
        acceptor: ANY_NODE,
        nonce: [9; 32],
    };
    write_frame(&mut forged, kind::HELLO, &hello.encode());
    let (challenge_kind, challenge) = read_frame(&mut forged).unwrap();
    assert_eq!(challenge_kind, kind::CHALLENGE);
    assert_eq!(Challenge::decode(&challenge).unwrap().acceptor, 1);
    write_frame(&mut forged, kind::RESPONSE, &[0; 32]);
    write_frame(&mut forged, kind::JOIN, &[0xFF; 40]);
    assert_eq!(
        read_frame(&mut forged),
        Some((kind::REFUSED, vec![refused::BAD_MAC]))
    );
    assert_eq!(read_frame(&mut forged), None);
    assert!(asked.lock().unwrap().is_empty());
    assert_eq!(seed.stats().frames_refused, 0, "no JOIN byte was decoded");

    // ANY_NODE is for join connections only.
    let mut raft_lane = TcpStream::connect(seed.local_addr()).unwrap();
    raft_lane.set_read_timeout(Some(WAIT)).unwrap();
    let hello = Hello {
        lane: lane::RAFT,
        ..hello
    };
    write_frame(&mut raft_lane, kind::HELLO, &hello.encode());
    assert_eq!(
        read_frame(&mut raft_lane),
        Some((kind::REFUSED, vec![refused::WRONG_NODE]))
    );
}

#[test]
fn a_seed_without_a_handler_or_whose_handler_says_no_refuses_cleanly() {
    let seed = start(1, None);
    let joiner = start(2, None);
    let refused_join = |result: Result<MemberList, Error>| {
        matches!(
            result,
            Err(Error::Handshake {
                reason: HandshakeRefusal::ByPeer(refused::JOIN_REFUSED),
                ..
            })
        )
    };
    let me = member(&joiner, 2);
    assert!(refused_join(joiner.join(
        seed.local_addr(),
        again(me.clone()),
        JOIN_MS
    )));
    let asked = answer_with(&seed, None);
    assert!(refused_join(joiner.join(
        seed.local_addr(),
        again(me.clone()),
        JOIN_MS
    )));
    assert_eq!(*asked.lock().unwrap(), vec![me.clone()]);
    eventually("the seed to count both", || {
        seed.recent_refusals()
            .iter()
            .filter(|r| **r == HandshakeRefusal::JoinRefused)
            .count()
            == 2
    });

    // Joining as another node than the transport's is refused locally.
    let mut someone_else = me;
    someone_else.node_id = 5;
    assert!(matches!(
        joiner.join(seed.local_addr(), again(someone_else), JOIN_MS),
        Err(Error::Config(_))
    ));
}

#[test]
fn a_silent_seed_cannot_hold_a_join_past_its_timeout() {
    // Connects (the backlog takes it) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let joiner = start(2, None);
    let started = Instant::now();
    let result = joiner.join(silent.local_addr().unwrap(), again(member(&joiner, 2)), 300);
    assert!(
        matches!(result, Err(Error::NetTimeout { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn unknown_but_authenticated_dialers_are_accepted_only_with_accept_unknown_peers() {
    let open = start(1, Some(SECRET));
    let seen = record(&open);
    let dialer = start(2, Some(SECRET));
    dialer.set_peers([(1, open.local_addr())].into()).unwrap();
    eventually("the unknown dialer's lane", || {
        dialer.send(2, 1, raft(2, 1))
    });
    eventually("its delivery", || !seen.lock().unwrap().is_empty());

    let mut strict = config(3, Some(SECRET));
    strict.accept_unknown_peers = false;
    let strict = TcpTransport::start(strict).unwrap();
    answer_with(&strict, Some(list(vec![])));
    let refused_dialer = start(4, Some(SECRET));
    refused_dialer
        .set_peers([(3, strict.local_addr())].into())
        .unwrap();
    eventually("both sides to see the refusal", || {
        strict
            .recent_refusals()
            .contains(&HandshakeRefusal::UnknownPeer(4))
            && refused_dialer
                .recent_refusals()
                .contains(&HandshakeRefusal::ByPeer(refused::UNKNOWN_PEER))
    });
    assert!(!refused_dialer.send(4, 3, raft(4, 3)));
    assert!(matches!(
        refused_dialer.join(
            strict.local_addr(),
            again(member(&refused_dialer, 4)),
            JOIN_MS
        ),
        Err(Error::Handshake {
            reason: HandshakeRefusal::ByPeer(refused::UNKNOWN_PEER),
            ..
        })
    ));
}

#[test]
fn a_retired_node_is_refused_after_both_sides_proved_the_secret_and_believes_it() {
    let member_node = start(1, Some(SECRET));
    let retired = start(2, Some(SECRET));
    let seen = record(&member_node);
    member_node.set_retired([2].into());
    retired
        .set_peers([(1, member_node.local_addr())].into())
        .unwrap();
    eventually("the retired node to learn it", || {
        retired.retired_by_a_peer()
    });
    assert!(
        retired
            .recent_refusals()
            .contains(&HandshakeRefusal::RetiredByMember(1))
    );
    assert!(
        member_node
            .recent_refusals()
            .contains(&HandshakeRefusal::Retired(2))
    );
    assert!(!retired.send(2, 1, raft(2, 1)));
    // Its joins are refused too, and nothing of it was delivered.
    answer_with(&member_node, Some(list(vec![])));
    assert!(matches!(
        retired.join(
            member_node.local_addr(),
            again(member(&retired, 2)),
            JOIN_MS
        ),
        Err(Error::Handshake {
            reason: HandshakeRefusal::RetiredByMember(1),
            ..
        })
    ));
    assert!(seen.lock().unwrap().is_empty());

    // A node refused as retired by someone who did not prove the secret
    // does not believe it.
    let impostor = start(3, Some(b"another secret of 16+ bytes"));
    impostor.set_retired([4].into());
    let other = start(4, Some(SECRET));
    other
        .set_peers([(3, impostor.local_addr())].into())
        .unwrap();
    eventually("the failed handshake", || {
        !impostor.recent_refusals().is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!other.retired_by_a_peer());
}
