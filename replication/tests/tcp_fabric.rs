//! `TcpTransport` on real sockets (127.0.0.1, ports from binding :0): peers
//! with the wrong secret, another cluster, the wrong node id, garbage bytes
//! or a forged proof are refused before any raft byte of theirs is decoded,
//! while good peers go on; full queues refuse at once and never block the
//! caller; bulk chunks never hold up raft messages; the secret rule; and
//! property tests of the frame and handshake decoders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerie_replication::fabric::format::{kind, lane, refused};
use aerie_replication::fabric::hello::{
    self, Challenge, ClusterId, Hello, Role, Transcript, decode_refused, decode_response,
};
use aerie_replication::fabric::{FabricConfig, TcpTransport, frame};
use aerie_replication::transport::{Envelope, Transport};
use aerie_replication::{Error, HandshakeRefusal};
use common::{read_frame, write_frame};
use proptest::prelude::*;
use raft::prelude::{Entry, Message, MessageType};

const SECRET: &[u8] = b"the good cluster's shared secret";
const WRONG_SECRET: &[u8] = b"a secret of some other cluster!!";
const CLUSTER: ClusterId = *b"good-cluster-id!";
const OTHER_CLUSTER: ClusterId = *b"other-cluster-id";
const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(id: u64, secret: Option<&[u8]>, cluster: ClusterId) -> FabricConfig {
    let mut config = FabricConfig::new(id, cluster, any_port());
    config.secret = secret.map(<[u8]>::to_vec);
    config.backoff_min_ms = 10;
    config.backoff_max_ms = 100;
    config.runtime_threads = 1;
    config
}

fn start(id: u64, secret: Option<&[u8]>, cluster: ClusterId) -> Arc<TcpTransport> {
    TcpTransport::start(config(id, secret, cluster)).unwrap()
}

/// The senders of every envelope a transport delivered.
fn record(transport: &TcpTransport) -> Arc<Mutex<Vec<u64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    transport.set_deliver(Arc::new(move |envelope| {
        let from = match envelope {
            Envelope::Raft { message, .. } => message.from,
            Envelope::ChunkRequest { from, .. } => from,
            Envelope::Chunk { .. } => 0,
        };
        sink.lock().unwrap().push(from);
        true
    }));
    seen
}

fn raft(from: u64, to: u64, data_bytes: usize) -> Envelope {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgAppend);
    message.from = from;
    message.to = to;
    message.entries = vec![Entry {
        data: vec![7; data_bytes].into(),
        ..Entry::default()
    }]
    .into();
    Envelope::Raft { shard: 0, message }
}

fn chunk(bytes: usize) -> Envelope {
    Envelope::Chunk {
        shard: 0,
        file_name: "shard-0.snap".into(),
        offset: 0,
        bytes: Ok(vec![1; bytes]),
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn book(peers: &[(u64, &TcpTransport)]) -> BTreeMap<u64, SocketAddr> {
    peers.iter().map(|(id, t)| (*id, t.local_addr())).collect()
}

fn has(transport: &TcpTransport, f: impl Fn(&HandshakeRefusal) -> bool) -> bool {
    transport.recent_refusals().iter().any(f)
}

#[test]
fn strangers_are_refused_before_any_of_their_raft_bytes_are_decoded_and_good_peers_go_on() {
    let a = start(1, Some(SECRET), CLUSTER);
    let b = start(2, Some(SECRET), CLUSTER);
    let wrong_secret = start(3, Some(WRONG_SECRET), CLUSTER);
    let other_cluster = start(4, Some(SECRET), OTHER_CLUSTER);
    // Node 6 answers where node 1 believes node 5 is.
    let impostor = start(6, Some(SECRET), CLUSTER);
    let seen_by_a = record(&a);
    let seen_by_b = record(&b);
    a.set_peers(book(&[(2, &b), (3, &wrong_secret), (5, &impostor)]))
        .unwrap();
    b.set_peers(book(&[(1, &a)])).unwrap();
    wrong_secret.set_peers(book(&[(1, &a)])).unwrap();
    other_cluster.set_peers(book(&[(1, &a)])).unwrap();

    // Garbage: refused from its 5-byte header, told why, closed.
    let mut garbage = TcpStream::connect(a.local_addr()).unwrap();
    garbage.write_all(&[0xA5; 64]).unwrap();
    assert_eq!(
        read_frame(&mut garbage),
        Some((kind::REFUSED, vec![refused::MALFORMED]))
    );
    assert_eq!(read_frame(&mut garbage), None);

    // A forged proof for node 3, followed at once by a raft frame from it:
    // refused on the proof; the raft frame is never read.
    let mut forged = TcpStream::connect(a.local_addr()).unwrap();
    let hello = Hello {
        lane: lane::RAFT,
        cluster_id: CLUSTER,
        dialer: 3,
        acceptor: 1,
        nonce: [9; 32],
    };
    write_frame(&mut forged, kind::HELLO, &hello.encode());
    let (challenge_kind, _) = read_frame(&mut forged).unwrap();
    assert_eq!(challenge_kind, kind::CHALLENGE);
    write_frame(&mut forged, kind::RESPONSE, &[0; 32]);
    let Envelope::Raft { message, .. } = raft(3, 1, 16) else {
        unreachable!()
    };
    let raft_payload = [
        &0u32.to_le_bytes()[..],
        &protobuf::Message::write_to_bytes(&message).unwrap(),
    ]
    .concat();
    write_frame(&mut forged, kind::RAFT, &raft_payload);
    assert_eq!(
        read_frame(&mut forged),
        Some((kind::REFUSED, vec![refused::BAD_MAC]))
    );

    eventually("every refusal", || {
        has(&a, |r| *r == HandshakeRefusal::BadMac)
            && has(&a, |r| matches!(r, HandshakeRefusal::Cluster { .. }))
            && has(&a, |r| matches!(r, HandshakeRefusal::Malformed(_)))
            && has(&a, |r| *r == HandshakeRefusal::ByPeer(refused::WRONG_NODE))
            && has(&wrong_secret, |r| *r == HandshakeRefusal::BadMac)
            && has(&impostor, |r| {
                *r == HandshakeRefusal::WrongNode {
                    expected: 5,
                    found: 6,
                }
            })
    });
    assert!(!a.send(1, 3, raft(1, 3, 16)), "no lane to a refused peer");
    assert!(!wrong_secret.send(3, 1, raft(3, 1, 16)));
    assert!(!other_cluster.send(4, 1, raft(4, 1, 16)));

    // The good pair talks on.
    eventually("a and b to connect", || a.send(1, 2, raft(1, 2, 16)));
    eventually("b to reach a", || b.send(2, 1, raft(2, 1, 16)));
    eventually("both deliveries", || {
        !seen_by_a.lock().unwrap().is_empty() && !seen_by_b.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(seen_by_a.lock().unwrap().iter().all(|&from| from == 2));
    assert!(seen_by_b.lock().unwrap().iter().all(|&from| from == 1));
    let stats = a.stats();
    assert_eq!(
        stats.frames_refused, 0,
        "no data frame got past a handshake: {stats:?}"
    );
    assert!(stats.handshakes_refused >= 4, "{stats:?}");
}

/// A peer that completes the acceptor's side of the handshake and then
/// reads its raft lane (counting frames) or not, and never reads its bulk
/// lane.
struct RawPeer {
    addr: SocketAddr,
    raft_frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RawPeer {
    fn start(id: u64, read_raft: bool) -> RawPeer {
        let listener = TcpListener::bind(any_port()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let peer = RawPeer {
            addr: listener.local_addr().unwrap(),
            raft_frames: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (frames, stop) = (peer.raft_frames.clone(), peer.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (frames, stop) = (frames.clone(), stop.clone());
                        std::thread::spawn(move || {
                            serve_raw(stream, id, read_raft, &frames, &stop)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        peer
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_raw(
    mut stream: TcpStream,
    id: u64,
    read_raft: bool,
    frames: &AtomicU64,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    let (_, payload) = read_frame(&mut stream).unwrap();
    let hello = Hello::decode(&payload).unwrap();
    let transcript = Transcript {
        lane: hello.lane,
        cluster_id: hello.cluster_id,
        dialer: hello.dialer,
        acceptor: id,
        dialer_nonce: hello.nonce,
        acceptor_nonce: [4; 32],
    };
    let challenge = Challenge {
        acceptor: id,
        nonce: transcript.acceptor_nonce,
        tag: hello::tag(b"", Role::Acceptor, &transcript),
    };
    write_frame(&mut stream, kind::CHALLENGE, &challenge.encode());
    let (_, proof) = read_frame(&mut stream).unwrap();
    assert!(hello::verify(
        b"",
        Role::Dialer,
        &transcript,
        &decode_response(&proof).unwrap()
    ));
    write_frame(&mut stream, kind::ACCEPTED, &[]);
    if hello.lane == lane::RAFT && read_raft {
        while let Some((frame_kind, _)) = read_frame(&mut stream) {
            if frame_kind == kind::RAFT {
                frames.fetch_add(1, Ordering::SeqCst);
            }
        }
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `make()` until the transport refuses `refusals` of them (at most
/// `limit` sends); each send must return at once. Returns the refusals.
fn fill(transport: &TcpTransport, to: u64, limit: usize, make: impl Fn() -> Envelope) -> usize {
    let mut refused = 0;
    for _ in 0..limit {
        let started = Instant::now();
        if !transport.send(1, to, make()) {
            refused += 1;
        }
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a send waited {:?}",
            started.elapsed()
        );
        if refused == 3 {
            break;
        }
    }
    refused
}

#[test]
fn full_queues_refuse_at_once_and_bulk_chunks_never_hold_up_raft_messages() {
    // Loopback only, so no secret is needed (the tags use an empty key).
    let mut fabric = config(1, None, CLUSTER);
    fabric.max_frame_bytes = 2 << 20;
    fabric.raft_queue_bytes = 4 << 20;
    fabric.bulk_queue_bytes = 4 << 20;
    fabric.write_timeout_ms = 60_000;
    let reads_raft = RawPeer::start(9, true);
    let reads_nothing = RawPeer::start(8, false);
    fabric.peers = BTreeMap::from([(9, reads_raft.addr), (8, reads_nothing.addr)]);
    let a = TcpTransport::start(fabric).unwrap();
    eventually("four lanes up", || a.stats().connected == 4);

    // Node 9's bulk lane is never read: its socket buffers and then its
    // queue fill, and sends are refused without waiting.
    let refused = fill(&a, 9, 400, || chunk(1 << 20));
    assert_eq!(refused, 3, "{:?}", a.stats());
    assert!(a.stats().dropped_full >= 3);
    // Its raft lane is read: raft messages still arrive, all of them.
    for _ in 0..100 {
        assert!(a.send(1, 9, raft(1, 9, 64)));
    }
    eventually("the raft messages behind the stuck bulk lane", || {
        reads_raft.raft_frames.load(Ordering::SeqCst) == 100
    });

    // Node 8 reads nothing: its raft lane fills too, and is refused at once.
    let refused = fill(&a, 8, 400, || raft(1, 8, 1 << 20));
    assert_eq!(refused, 3, "{:?}", a.stats());
    assert!(a.stats().dropped_full >= 6, "{:?}", a.stats());
    let started = Instant::now();
    a.stop();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!a.send(1, 9, raft(1, 9, 64)), "a stopped transport refuses");
}

#[test]
fn without_a_secret_every_fabric_address_must_be_loopback() {
    // A documentation address (TEST-NET-1): refused before anything dials it.
    let outside: SocketAddr = "192.0.2.1:3002".parse().unwrap();
    let mut with_outside_peer = config(1, None, CLUSTER);
    with_outside_peer.peers.insert(2, outside);
    let mut listening_everywhere = config(1, None, CLUSTER);
    listening_everywhere.listen_addr = "0.0.0.0:0".parse().unwrap();
    for bad in [with_outside_peer, listening_everywhere] {
        match TcpTransport::start(bad) {
            Err(Error::Config(message)) => assert_eq!(
                message,
                "a cluster secret is required for non-loopback fabric addresses"
            ),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("started without a secret on a non-loopback address"),
        }
    }
    let short = config(1, Some(b"short"), CLUSTER);
    assert!(matches!(TcpTransport::start(short), Err(Error::Config(_))));
    let mut tiny_queue = config(1, Some(SECRET), CLUSTER);
    tiny_queue.raft_queue_bytes = 1 << 20;
    assert!(matches!(
        TcpTransport::start(tiny_queue),
        Err(Error::Config(_))
    ));
    let a = start(1, None, CLUSTER);
    assert!(matches!(
        a.set_peers(BTreeMap::from([(2, outside)])),
        Err(Error::Config(_))
    ));
    let b = start(2, Some(SECRET), CLUSTER);
    b.set_peers(BTreeMap::from([(3, outside)]))
        .expect("with a secret any address may be a peer");
    b.set_peers(BTreeMap::new()).unwrap();
}

const KINDS: [u8; 9] = [
    kind::HELLO,
    kind::CHALLENGE,
    kind::RESPONSE,
    kind::ACCEPTED,
    kind::REFUSED,
    kind::RAFT,
    kind::CHUNK_REQUEST,
    kind::CHUNK,
    kind::KEEPALIVE,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_frame_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), max in 0usize..1024) {
        let _ = frame::decode(&bytes, max);
    }

    #[test]
    fn frames_round_trip_and_every_prefix_asks_for_more(
        frame_kind in prop::sample::select(KINDS.to_vec()),
        payload in prop::collection::vec(any::<u8>(), 0..2048),
        cut in any::<prop::sample::Index>(),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let bytes = frame::encode(frame_kind, &payload).unwrap();
        let with_more = [&bytes[..], &trailing].concat();
        let (found, used) = frame::decode(&with_more, 4096).unwrap().unwrap();
        prop_assert_eq!((found.kind, found.payload, used), (frame_kind, &payload[..], bytes.len()));
        let prefix = &bytes[..cut.index(bytes.len())];
        prop_assert_eq!(frame::decode(prefix, 4096), Ok(None));
    }

    #[test]
    fn the_handshake_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Hello::decode(&bytes);
        let _ = Challenge::decode(&bytes);
        let _ = decode_response(&bytes);
        let _ = decode_refused(&bytes);
    }

    #[test]
    fn hellos_and_challenges_round_trip(
        lane_id in 0u8..2,
        cluster_id in any::<[u8; 16]>(),
        dialer in any::<u64>(),
        acceptor in any::<u64>(),
        nonce in any::<[u8; 32]>(),
        tag in any::<[u8; 32]>(),
    ) {
        let hello = Hello { lane: lane_id, cluster_id, dialer, acceptor, nonce };
        prop_assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let challenge = Challenge { acceptor, nonce, tag };
        prop_assert_eq!(Challenge::decode(&challenge.encode()), Ok(challenge));
    }
}
