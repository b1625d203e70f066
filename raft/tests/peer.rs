//! Integration tests of the peer transport: real sockets on 127.0.0.1,
//! each member on its own glommio executor thread, every wait bounded.

// raft's protobuf messages carry hidden fields; see lib.rs.
#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use ferrokv_raft::peer::{
    query_members, start, Inbound, IncomingCall, ListenAddr, PeerAddr, PeerConfig, PeerError,
    PeerHandle, PeerStats, PeerTls, MEMBERS_BODY_MAX,
};
use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::{Entry, Message, MessageType};

/// Upper bound of any one test.
const TEST_MAX: Duration = Duration::from_secs(60);
/// Upper bound of any one wait inside a test.
const WAIT_MAX: Duration = Duration::from_secs(15);

const CALL_ECHO: u8 = 1;
const CALL_FAIL: u8 = 2;
const CALL_SILENT: u8 = 3;

// ------------------------------------------------------------------ logging

struct Capture;
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}", r.level(), r.args());
            eprintln!("{line}");
            LOGS.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("logger");
        log::set_max_level(log::LevelFilter::Info);
    });
}

fn logged(needle: &str) -> bool {
    logged_line(&[needle])
}

/// Some one line holds all the needles.
fn logged_line(needles: &[&str]) -> bool {
    LOGS.lock()
        .unwrap()
        .iter()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

// ------------------------------------------------------------------ harness

/// Runs a test body on a glommio executor of the test thread, failing it
/// if it runs longer than `TEST_MAX`.
fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    init_logs();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let body = async {
                f().await;
                true
            };
            let bound = async {
                glommio::timer::sleep(TEST_MAX).await;
                false
            };
            assert!(
                futures_lite::future::or(body, bound).await,
                "test did not finish within {TEST_MAX:?}"
            );
        })
        .expect("spawn executor")
        .join()
        .expect("test executor");
}

async fn sleep_ms(ms: u64) {
    glommio::timer::sleep(Duration::from_millis(ms)).await;
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT_MAX;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        sleep_ms(10).await;
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    let r = futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(WAIT_MAX).await;
        None
    })
    .await;
    r.unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Node {
    id: u64,
    handle: PeerHandle,
    groups: Vec<async_channel::Receiver<Message>>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl Node {
    /// Starts a transport on its own executor thread, with a call handler:
    /// `CALL_ECHO` answers "echo:" + body, `CALL_FAIL` an error, and
    /// `CALL_SILENT` is held unanswered.
    fn start(cfg: PeerConfig) -> Node {
        Self::try_start(cfg).expect("start transport")
    }

    fn try_start(cfg: PeerConfig) -> Result<Node, PeerError> {
        let id = cfg.member_id;
        let (gtx, groups): (Vec<_>, Vec<_>) = (0..cfg.shards)
            .map(|_| async_channel::bounded(1024))
            .unzip();
        let (ctx, crx) = async_channel::bounded::<IncomingCall>(64);
        let (htx, hrx) = std::sync::mpsc::channel();
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .name(&format!("peer-{id}"))
            .spawn(move || async move {
                let (h, t) = match start(
                    cfg,
                    Inbound {
                        groups: gtx,
                        calls: ctx,
                    },
                ) {
                    Ok(x) => x,
                    Err(e) => {
                        htx.send(Err(e)).unwrap();
                        return;
                    }
                };
                htx.send(Ok(h)).unwrap();
                glommio::spawn_local(async move {
                    let mut held = Vec::new();
                    while let Ok(c) = crx.recv().await {
                        match c.kind {
                            CALL_ECHO => {
                                let mut r = b"echo:".to_vec();
                                r.extend_from_slice(&c.body);
                                let _ = c.reply.send(Ok(r));
                            }
                            CALL_FAIL => {
                                let _ = c.reply.send(Err("no such thing".to_string()));
                            }
                            _ => held.push(c),
                        }
                    }
                })
                .detach();
                t.join().await;
            })
            .expect("spawn executor");
        let handle = hrx.recv_timeout(WAIT_MAX).expect("transport started")?;
        Ok(Node {
            id,
            handle,
            groups,
            thread: Some(thread),
        })
    }

    fn stats_of(&self, peer: u64) -> PeerStats {
        self.handle
            .stats()
            .into_iter()
            .find(|s| s.member_id == peer)
            .expect("peer")
    }

    fn connected_to(&self, peer: u64) -> bool {
        self.stats_of(peer).connected
    }

    /// Stops the transport and waits until its sockets are closed.
    fn stop(mut self) {
        self.handle.stop();
        self.thread.take().unwrap().join().expect("executor");
    }
}

fn cfg(id: u64, listen: SocketAddr, peers: &[(u64, SocketAddr)], shards: u32) -> PeerConfig {
    let mut c = PeerConfig::new(0x1000, id, shards);
    c.listen = vec![listen.into()];
    c.peers = peers
        .iter()
        .map(|(id, a)| (*id, vec![(*a).into()]))
        .collect::<BTreeMap<_, _>>();
    c.name = format!("n{id}");
    c.client_urls = vec![format!("http://127.0.0.1:{}", 2379 + id)];
    c.call_timeout = Duration::from_millis(500);
    c
}

fn msg(from: u64, to: u64, group: u32, seq: u64) -> Message {
    let mut m = Message::default();
    // Every third one a heartbeat.
    m.set_msg_type(match seq % 3 {
        0 => MessageType::MsgHeartbeat,
        _ => MessageType::MsgAppend,
    });
    m.from = from;
    m.to = to;
    m.term = seq;
    m.index = group as u64;
    m.commit = from * 100 + to;
    let mut e = Entry::default();
    e.index = seq;
    e.term = seq;
    e.data = format!("{from}->{to} g{group} #{seq}").into_bytes().into();
    m.entries.push(e);
    m
}

/// Everything queued on `rx` within a short quiet period.
async fn drain(rx: &async_channel::Receiver<Message>) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        let next = futures_lite::future::or(async { rx.recv().await.ok() }, async {
            sleep_ms(200).await;
            None
        })
        .await;
        match next {
            Some(m) => out.push(m),
            None => return out,
        }
    }
}

// -------------------------------------------------------------------- tests

#[test]
fn three_members_exchange_raft_messages_of_many_groups() {
    run(|| async {
        const SHARDS: u32 = 4;
        const PER_GROUP: u64 = 50;
        let addrs = [free_addr(), free_addr(), free_addr()];
        let ids = [1u64, 2, 3];
        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                let peers: Vec<_> = (0..3)
                    .filter(|&j| j != i)
                    .map(|j| (ids[j], addrs[j]))
                    .collect();
                Node::start(cfg(ids[i], addrs[i], &peers, SHARDS))
            })
            .collect();
        eventually("all members connected", || {
            nodes
                .iter()
                .all(|n| n.handle.stats().iter().all(|s| s.connected))
        })
        .await;
        for n in &nodes {
            for to in ids.iter().filter(|&&t| t != n.id) {
                for g in 0..SHARDS {
                    let batch: Vec<_> = (1..=PER_GROUP).map(|s| msg(n.id, *to, g, s)).collect();
                    n.handle.send_raft(g, batch);
                }
            }
        }
        for n in &nodes {
            for g in 0..SHARDS {
                let got = within("messages", drain(&n.groups[g as usize])).await;
                for from in ids.iter().filter(|&&f| f != n.id) {
                    let mine: Vec<_> = got.iter().filter(|m| m.from == *from).cloned().collect();
                    let want: Vec<_> = (1..=PER_GROUP).map(|s| msg(*from, n.id, g, s)).collect();
                    assert_eq!(mine, want, "group {g} at {} from {from}", n.id);
                }
                assert_eq!(got.len() as u64, 2 * PER_GROUP);
            }
        }
        // Peers learned each other's names and client URLs from handshakes;
        // counters moved; the ping measured a round trip.
        eventually("round trips measured", || {
            nodes
                .iter()
                .all(|n| n.handle.stats().iter().all(|s| s.round_trip.is_some()))
        })
        .await;
        for n in &nodes {
            for p in n.handle.peers() {
                assert_eq!(p.name, format!("n{}", p.member_id));
                assert_eq!(
                    p.client_urls,
                    vec![format!("http://127.0.0.1:{}", 2379 + p.member_id)]
                );
                assert!(p.connected);
            }
            for s in n.handle.stats() {
                assert_eq!(s.raft_sent, SHARDS as u64 * PER_GROUP, "{s:?}");
                // Coalesced: many messages (of all groups) per frame.
                assert!(s.frames_sent < s.raft_sent / 2, "{s:?}");
                assert_eq!(s.raft_received, SHARDS as u64 * PER_GROUP, "{s:?}");
                assert_eq!(s.raft_dropped, 0);
                assert_eq!(s.raft_inbound_dropped, 0);
                assert!(s.sent_bytes > 0 && s.received_bytes > 0);
                assert!(s.round_trip.unwrap() < Duration::from_secs(1));
            }
        }
        // A message to a member that is not a peer is dropped and counted.
        nodes[0].handle.send_raft(0, vec![msg(1, 9, 0, 1)]);
        nodes[0]
            .handle
            .send_raft(SHARDS, vec![msg(1, 2, SHARDS, 1)]);
        assert_eq!(nodes[0].handle.raft_dropped_unknown(), 2);
        for n in nodes {
            n.stop();
        }
    });
}

#[test]
fn calls_replies_errors_and_timeouts() {
    run(|| async {
        let (a1, a2, down) = (free_addr(), free_addr(), free_addr());
        let n1 = Node::start(cfg(1, a1, &[(2, a2), (3, down)], 1));
        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 1));
        eventually("connected", || n1.connected_to(2)).await;

        let r = within("call", n1.handle.call(2, CALL_ECHO, b"hi".to_vec())).await;
        assert_eq!(r.unwrap(), b"echo:hi");

        // Many calls at once: each reply goes to its own call.
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let h = n1.handle.clone();
                glommio::spawn_local(async move {
                    let body = i.to_le_bytes().to_vec();
                    let r = h.call(2, CALL_ECHO, body.clone()).await.unwrap();
                    assert_eq!(r[5..], body[..]);
                })
            })
            .collect();
        for t in tasks {
            within("concurrent calls", t).await;
        }

        // The handler's error string comes back as the error.
        let r = within("failing call", n1.handle.call(2, CALL_FAIL, vec![])).await;
        assert_eq!(r, Err(PeerError::Remote("no such thing".into())));

        // A handler that never answers: the caller times out.
        let t0 = Instant::now();
        let r = within("silent call", n1.handle.call(2, CALL_SILENT, vec![])).await;
        assert!(
            matches!(r, Err(PeerError::Timeout { member: 2, .. })),
            "{r:?}"
        );
        assert!(t0.elapsed() >= Duration::from_millis(450));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        // A peer that is down: unreachable, within the timeout.
        let t0 = Instant::now();
        let r = within("call to a down peer", n1.handle.call(3, CALL_ECHO, vec![])).await;
        match r {
            Err(PeerError::Unreachable { member: 3, reason }) => {
                assert!(reason.contains(&down.to_string()), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        // Not a peer at all; too large for a frame.
        assert_eq!(
            n1.handle.call(9, CALL_ECHO, vec![]).await,
            Err(PeerError::UnknownMember(9))
        );
        assert!(matches!(
            n1.handle.call(2, CALL_ECHO, vec![0; 5 << 20]).await,
            Err(PeerError::TooLarge { .. })
        ));
        // A large call that fits does arrive.
        let big = vec![7u8; 3 << 20];
        let r = within("large call", n1.handle.call(2, CALL_ECHO, big.clone())).await;
        assert_eq!(r.unwrap()[5..], big[..]);

        // A call in flight when the peer's transport stops fails, promptly.
        let h = n1.handle.clone();
        let pending = glommio::spawn_local(async move { h.call(2, CALL_SILENT, vec![]).await });
        sleep_ms(100).await;
        n2.stop();
        let r = within("call across a stop", pending).await;
        assert!(
            matches!(
                r,
                Err(PeerError::ConnectionLost { member: 2, .. } | PeerError::Timeout { .. })
            ),
            "{r:?}"
        );
        assert_eq!(n1.stats_of(2).calls_in_flight, 0);
        n1.stop();
    });
}

#[test]
fn stopped_transport_fails_calls_and_drops_messages() {
    run(|| async {
        let (a1, a2) = (free_addr(), free_addr());
        let n1 = Node::start(cfg(1, a1, &[(2, a2)], 1));
        let h = n1.handle.clone();
        n1.stop();
        assert_eq!(h.call(2, CALL_ECHO, vec![]).await, Err(PeerError::Stopped));
        h.send_raft(0, vec![msg(1, 2, 0, 3)]);
        assert_eq!(h.stats()[0].raft_dropped, 1);
        assert_eq!(h.stats()[0].heartbeat_send_failures, 1);
        // The port is free again, at once.
        Node::start(cfg(1, a1, &[(2, a2)], 1)).stop();
    });
}

/// Starts n1 (cluster 0x1000, 2 shards, knows 2) against a member 2
/// configured with `b`, and checks nothing gets through and both sides say
/// why.
async fn refused(b: PeerConfig, acceptor_says: &str) {
    let a1 = free_addr();
    let a2 = b.listen[0].addr;
    let n1 = Node::start(cfg(1, a1, &[(2, a2)], 2));
    let n2 = Node::start(b);
    eventually("refusal seen by the dialer", || {
        n1.stats_of(2)
            .last_error
            .is_some_and(|e| e.contains(acceptor_says))
    })
    .await;
    let e = n1.stats_of(2).last_error.unwrap();
    assert!(e.contains("refused our connection"), "{e}");
    eventually("refusal logged by the acceptor", || {
        logged_line(&["refused connection from 127.0.0.1", acceptor_says])
    })
    .await;
    assert!(!n1.connected_to(2));
    n1.handle
        .send_raft(0, vec![msg(1, 2, 0, 1), msg(1, 2, 1, 2)]);
    let r = n1.handle.call(2, CALL_ECHO, vec![]).await;
    assert!(matches!(r, Err(PeerError::Unreachable { .. })), "{r:?}");
    for g in &n2.groups {
        assert!(drain(g).await.is_empty());
    }
    eventually("drops counted", || n1.stats_of(2).raft_dropped == 2).await;
    n1.stop();
    n2.stop();
}

#[test]
fn handshake_refuses_another_cluster() {
    run(|| async {
        let a2 = free_addr();
        let mut b = cfg(2, a2, &[(1, free_addr())], 2);
        b.cluster_id = 0x2000;
        refused(b, "request cluster ID mismatch (got 1000 want 2000)").await;
    });
}

#[test]
fn handshake_refuses_an_unknown_member() {
    run(|| async {
        let a2 = free_addr();
        let b = cfg(2, a2, &[(3, free_addr())], 2);
        refused(
            b,
            "member 1 is not a member of this cluster (unknown member)",
        )
        .await;
    });
}

#[test]
fn handshake_refuses_another_shard_count() {
    run(|| async {
        let a2 = free_addr();
        let b = cfg(2, a2, &[(1, free_addr())], 3);
        refused(
            b,
            "peer 1 has --shards 2, this member has 3; a cluster has one shard count",
        )
        .await;
    });
}

#[test]
fn reconnects_after_a_peer_restarts_on_the_same_port() {
    run(|| async {
        let (a1, a2) = (free_addr(), free_addr());
        let n1 = Node::start(cfg(1, a1, &[(2, a2)], 2));
        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 2));
        eventually("connected", || n1.connected_to(2) && n2.connected_to(1)).await;
        n1.handle.send_raft(1, vec![msg(1, 2, 1, 1)]);
        let got = within("first message", n2.groups[1].recv()).await.unwrap();
        assert_eq!(got, msg(1, 2, 1, 1));

        n2.stop();
        eventually("disconnect noticed", || !n1.connected_to(2)).await;
        // Sent while the peer is down: dropped and counted, not replayed.
        n1.handle
            .send_raft(1, vec![msg(1, 2, 1, 2), msg(1, 2, 1, 3)]);
        eventually("drops counted", || n1.stats_of(2).raft_dropped == 2).await;
        assert_eq!(n1.stats_of(2).heartbeat_send_failures, 1);

        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 2));
        eventually("reconnected", || n1.connected_to(2) && n2.connected_to(1)).await;
        assert!(n1.stats_of(2).connects >= 2);
        n1.handle.send_raft(1, vec![msg(1, 2, 1, 4)]);
        n2.handle.send_raft(0, vec![msg(2, 1, 0, 5)]);
        let got = within("message after restart", n2.groups[1].recv())
            .await
            .unwrap();
        assert_eq!(got, msg(1, 2, 1, 4));
        let got = within("message back", n1.groups[0].recv()).await.unwrap();
        assert_eq!(got, msg(2, 1, 0, 5));
        let r = within(
            "call after restart",
            n1.handle.call(2, CALL_ECHO, b"x".to_vec()),
        )
        .await;
        assert_eq!(r.unwrap(), b"echo:x");
        n1.stop();
        n2.stop();
    });
}

// -------------------------------------------- raw sockets speaking the wire

fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// A HELLO as the module doc lays it out.
fn raw_hello(cluster_id: u64, from: u64, to: u64, shards: u32) -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend_from_slice(b"FKVPEER\0");
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&cluster_id.to_le_bytes());
    p.extend_from_slice(&from.to_le_bytes());
    p.extend_from_slice(&to.to_le_bytes());
    p.extend_from_slice(&shards.to_le_bytes());
    p.extend_from_slice(&3u16.to_le_bytes());
    p.extend_from_slice(b"raw");
    p.extend_from_slice(&0u16.to_le_bytes());
    raw_frame(&p)
}

fn raw_welcome(cluster_id: u64, member: u64, shards: u32) -> Vec<u8> {
    let mut p = vec![2u8];
    p.extend_from_slice(b"FKVPEER\0");
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&cluster_id.to_le_bytes());
    p.extend_from_slice(&member.to_le_bytes());
    p.extend_from_slice(&shards.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    raw_frame(&p)
}

fn raw_read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr).expect("frame header");
    let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
    let mut p = vec![0; len];
    s.read_exact(&mut p).expect("frame payload");
    assert_eq!(
        crc32c::crc32c(&p),
        u32::from_le_bytes(hdr[4..8].try_into().unwrap())
    );
    p
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A raw connection that completed the handshake as member `from`.
fn raw_peer(addr: SocketAddr, from: u64) -> TcpStream {
    let mut s = raw_connect(addr);
    s.write_all(&raw_hello(0x1000, from, 1, 1)).unwrap();
    let p = raw_read_frame(&mut s);
    assert_eq!(p[0], 2, "welcome expected, got {p:?}");
    s
}

/// The transport closed `s`: reads end (EOF or reset) rather than time out.
fn assert_closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return
            }
            Err(e) => panic!("{what}: connection not closed: {e}"),
        }
    }
}

#[test]
fn garbage_and_oversized_frames_close_only_that_connection() {
    run(|| async {
        let (a1, a2, a3) = (free_addr(), free_addr(), free_addr());
        // Member 3 is known to n1 but played by raw sockets below.
        let n1 = Node::start(cfg(1, a1, &[(2, a2), (3, a3)], 1));
        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 1));
        eventually("connected", || n1.connected_to(2) && n2.connected_to(1)).await;

        // Not our protocol at all (an HTTP request: its "length" is huge).
        let mut s = raw_connect(a1);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_closed(s, "http request");

        // Random bytes.
        let mut s = raw_connect(a1);
        let junk: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        s.write_all(&junk).unwrap();
        assert_closed(s, "junk");

        // After a good handshake: a frame announcing more than frame_bytes_max.
        let mut s = raw_peer(a1, 3);
        let mut hdr = ((5u32) << 20).to_le_bytes().to_vec();
        hdr.extend_from_slice(&[0; 4]);
        s.write_all(&hdr).unwrap();
        assert_closed(s, "oversized frame");

        // A checksum mismatch.
        let mut s = raw_peer(a1, 3);
        let mut f = raw_frame(&[4, 5, 1, 2, 3, 4, 5, 6, 7, 8]);
        f[4] ^= 0xff;
        s.write_all(&f).unwrap();
        assert_closed(s, "bad crc");

        // A valid frame whose raft item is not protobuf.
        let mut s = raw_peer(a1, 3);
        let mut p = vec![4u8, 1];
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&4u32.to_le_bytes());
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        s.write_all(&raw_frame(&p)).unwrap();
        assert_closed(s, "undecodable raft item");

        // A raft item for a group this member does not have.
        let mut s = raw_peer(a1, 3);
        let mut p = vec![4u8, 1];
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        s.write_all(&raw_frame(&p)).unwrap();
        assert_closed(s, "unknown group");

        // A frame cut short by the end of the stream.
        let mut s = raw_peer(a1, 3);
        let mut p = vec![4u8, 5];
        p.extend_from_slice(&9u64.to_le_bytes());
        let f = raw_frame(&p);
        s.write_all(&f[..f.len() - 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_closed(s, "truncated frame");

        // A well-behaved raw peer gets its ping answered.
        let mut s = raw_peer(a1, 3);
        let mut p = vec![4u8, 5];
        p.extend_from_slice(&42u64.to_le_bytes());
        s.write_all(&raw_frame(&p)).unwrap();
        let pong = raw_read_frame(&mut s);
        assert_eq!(pong[..2], [4, 6]);
        assert_eq!(pong[2..10], 42u64.to_le_bytes());
        drop(s);

        eventually("reasons logged", || {
            logged("exceeds the limit of 4194304 bytes")
                && logged("frame checksum mismatch")
                && logged("raft message does not decode")
                && logged("raft message for group 7")
                && logged("connection ended inside a frame")
        })
        .await;

        // Both directions between the real members still work.
        n1.handle.send_raft(0, vec![msg(1, 2, 0, 1)]);
        n2.handle.send_raft(0, vec![msg(2, 1, 0, 2)]);
        assert_eq!(
            within("n1 -> n2", n2.groups[0].recv()).await.unwrap(),
            msg(1, 2, 0, 1)
        );
        assert_eq!(
            within("n2 -> n1", n1.groups[0].recv()).await.unwrap(),
            msg(2, 1, 0, 2)
        );
        assert!(n1.connected_to(2) && n2.connected_to(1));
        n1.stop();
        n2.stop();
    });
}

#[test]
fn queue_is_bounded_while_the_peer_is_down_or_not_reading() {
    run(|| async {
        const QUEUE_MAX: usize = 64;
        let (a1, a2) = (free_addr(), free_addr());
        let mut c = cfg(1, a1, &[(2, a2)], 1);
        c.queue_messages_max = QUEUE_MAX;
        let n1 = Node::start(c);

        // Down: everything is dropped and counted; the queue never grows
        // past its bound.
        let mut sent = 0u64;
        for round in 0..200u64 {
            let batch: Vec<_> = (0..500)
                .map(|i| msg(1, 2, 0, round * 500 + i + 1))
                .collect();
            sent += batch.len() as u64;
            n1.handle.send_raft(0, batch);
            assert!(n1.stats_of(2).queued <= QUEUE_MAX);
        }
        eventually("all dropped", || n1.stats_of(2).raft_dropped == sent).await;
        assert!(n1.stats_of(2).heartbeat_send_failures > 0);

        // Connected to a "member 2" that answers the handshake and then
        // never reads: the socket buffers fill, then the queue, then drops.
        let l = std::net::TcpListener::bind(a2).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let slow = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut hdr = [0u8; 8];
            s.read_exact(&mut hdr).unwrap();
            let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
            let mut p = vec![0; len];
            s.read_exact(&mut p).unwrap();
            s.write_all(&raw_welcome(0x1000, 2, 1)).unwrap();
            let _ = done_rx.recv_timeout(WAIT_MAX);
        });
        eventually("connected to the slow peer", || n1.connected_to(2)).await;
        let before = n1.stats_of(2).raft_dropped;
        let mut sent = 0u64;
        // Large messages fill the socket buffers quickly.
        let mut big = msg(1, 2, 0, 1);
        big.entries[0].data = vec![0u8; 64 * 1024].into();
        for _ in 0..400 {
            n1.handle.send_raft(0, vec![big.clone(); 10]);
            sent += 10;
            assert!(n1.stats_of(2).queued <= QUEUE_MAX);
            sleep_ms(1).await;
        }
        let s = n1.stats_of(2);
        assert!(s.raft_dropped > before, "{s:?}");
        assert!(s.raft_sent + (s.raft_dropped - before) <= sent);
        // A call to a peer whose queue is full fails at once.
        if n1.stats_of(2).queued == QUEUE_MAX {
            let t0 = Instant::now();
            let r = n1.handle.call(2, CALL_ECHO, vec![]).await;
            assert_eq!(r, Err(PeerError::QueueFull { member: 2 }));
            assert!(t0.elapsed() < Duration::from_millis(100));
        }
        done_tx.send(()).unwrap();
        slow.join().unwrap();
        n1.stop();
    });
}

#[test]
fn bad_configuration_is_refused() {
    run(|| async {
        let a = free_addr();
        let mut c = cfg(1, a, &[(1, free_addr())], 1);
        assert!(matches!(
            Node::try_start(c.clone()),
            Err(PeerError::Config(_))
        ));
        c.peers.clear();
        c.frame_bytes_max = 100;
        assert!(matches!(
            Node::try_start(c.clone()),
            Err(PeerError::Config(_))
        ));
        // TLS links without TLS, or dialing TLS without a CA to verify with.
        let mut c = cfg(1, a, &[], 1);
        c.listen[0].tls = true;
        match Node::try_start(c) {
            Err(PeerError::Config(e)) => assert!(e.contains("cannot listen on TLS"), "{e}"),
            other => panic!("{:?}", other.err()),
        }
        let pki = Pki::new("config CA");
        let member = pki.issue("n1", &["127.0.0.1"]);
        let accept_only = PeerTls::load(&member.cert, &member.key, None, false).unwrap();
        assert!(!accept_only.can_dial());
        for tls in [None, Some(accept_only)] {
            let mut c = tls_cfg(1, a, &[(2, free_addr())], 1, pki.tls("n1"));
            c.tls = tls;
            c.listen[0].tls = false;
            match Node::try_start(c) {
                Err(PeerError::Config(e)) => assert!(e.contains("is https"), "{e}"),
                other => panic!("{:?}", other.err()),
            }
        }
        // A port that is taken.
        let _held = std::net::TcpListener::bind(a).unwrap();
        let c = cfg(1, a, &[], 1);
        assert!(matches!(Node::try_start(c), Err(PeerError::Listen { .. })));
    });
}

// ------------------------------------------------------------------ TLS

/// A test CA in a temporary directory, issuing member certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A member certificate and its key: PEM files, and DER for configurations
/// built by hand.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for server and client use, valid for `sans`.
    fn issue(&self, name: &str, sans: &[&str]) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            cert_der: cert.der().clone(),
            key_der: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// etcd's flags for a member: its certificate for 127.0.0.1, this CA,
    /// `--peer-client-cert-auth`.
    fn tls(&self, name: &str) -> PeerTls {
        let m = self.issue(name, &["127.0.0.1"]);
        PeerTls::load(&m.cert, &m.key, Some(&self.ca()), true).unwrap()
    }
}

/// `cfg` with every link TLS: an https listener, https peers verified for
/// their IP.
fn tls_cfg(
    id: u64,
    listen: SocketAddr,
    peers: &[(u64, SocketAddr)],
    shards: u32,
    tls: PeerTls,
) -> PeerConfig {
    let mut c = cfg(id, listen, peers, shards);
    c.listen = vec![ListenAddr {
        addr: listen,
        tls: true,
    }];
    for a in c.peers.values_mut().flatten() {
        a.tls_name = Some(a.addr.ip().to_string());
    }
    c.tls = Some(tls);
    c
}

/// n1 cannot reach n2: whatever it sends never arrives, its calls find n2
/// unreachable.
async fn nothing_gets_through(n1: &Node, n2: &Node) {
    eventually("a failed dial round", || {
        n1.stats_of(2).connect_failures > 0
    })
    .await;
    assert!(!n1.connected_to(2));
    n1.handle
        .send_raft(0, vec![msg(1, 2, 0, 1), msg(1, 2, 0, 2)]);
    let r = n1.handle.call(2, CALL_ECHO, b"x".to_vec()).await;
    assert!(matches!(r, Err(PeerError::Unreachable { .. })), "{r:?}");
    assert!(!n1.connected_to(2));
    for g in &n2.groups {
        assert!(drain(g).await.is_empty());
    }
    assert_eq!(n2.stats_of(1).raft_received, 0);
}

#[test]
fn tls_members_exchange_raft_messages_and_calls() {
    run(|| async {
        const SHARDS: u32 = 2;
        const PER_GROUP: u64 = 30;
        let pki = Pki::new("cluster CA");
        let addrs = [free_addr(), free_addr(), free_addr()];
        let ids = [1u64, 2, 3];
        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                let peers: Vec<_> = (0..3)
                    .filter(|&j| j != i)
                    .map(|j| (ids[j], addrs[j]))
                    .collect();
                let tls = pki.tls(&format!("n{}", ids[i]));
                Node::start(tls_cfg(ids[i], addrs[i], &peers, SHARDS, tls))
            })
            .collect();
        eventually("all members connected over TLS", || {
            nodes
                .iter()
                .all(|n| n.handle.stats().iter().all(|s| s.connected))
        })
        .await;
        for n in &nodes {
            for to in ids.iter().filter(|&&t| t != n.id) {
                for g in 0..SHARDS {
                    let batch: Vec<_> = (1..=PER_GROUP).map(|s| msg(n.id, *to, g, s)).collect();
                    n.handle.send_raft(g, batch);
                }
            }
        }
        for n in &nodes {
            for g in 0..SHARDS {
                let got = within("messages", drain(&n.groups[g as usize])).await;
                for from in ids.iter().filter(|&&f| f != n.id) {
                    let mine: Vec<_> = got.iter().filter(|m| m.from == *from).cloned().collect();
                    let want: Vec<_> = (1..=PER_GROUP).map(|s| msg(*from, n.id, g, s)).collect();
                    assert_eq!(mine, want, "group {g} at {} from {from}", n.id);
                }
            }
        }
        let r = within("call", nodes[0].handle.call(2, CALL_ECHO, b"tls".to_vec())).await;
        assert_eq!(r.unwrap(), b"echo:tls");
        // Larger than a TLS record (16 KiB) many times over.
        let big = vec![9u8; 3 << 20];
        let r = within(
            "large call",
            nodes[2].handle.call(1, CALL_ECHO, big.clone()),
        )
        .await;
        assert_eq!(r.unwrap()[5..], big[..]);
        for n in &nodes {
            for p in n.handle.peers() {
                assert_eq!(p.name, format!("n{}", p.member_id));
            }
        }
        for n in nodes {
            n.stop();
        }
    });
}

#[test]
fn tls_refuses_a_member_certificate_from_another_ca() {
    run(|| async {
        let pki = Pki::new("cluster CA");
        let other = Pki::new("another CA");
        let (a1, a2) = (free_addr(), free_addr());
        // n1 trusts the cluster's CA (so it could verify n2) but its own
        // certificate is from another CA: n2 refuses it as a client, and
        // as a server when n2 dials it.
        let m = other.issue("impostor", &["127.0.0.1"]);
        let impostor = PeerTls::load(&m.cert, &m.key, Some(&pki.ca()), true).unwrap();
        let n1 = Node::start(tls_cfg(1, a1, &[(2, a2)], 1, impostor));
        let n2 = Node::start(tls_cfg(2, a2, &[(1, a1)], 1, pki.tls("n2")));
        nothing_gets_through(&n1, &n2).await;
        eventually("the client certificate refusal logged", || {
            logged_line(&[
                "rejected connection from 127.0.0.1",
                "TLS handshake failed: invalid peer certificate: UnknownIssuer",
            ])
        })
        .await;
        eventually("n2's dial refused", || {
            n2.stats_of(1).last_error.is_some_and(|e| {
                e.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer")
            })
        })
        .await;
        let e = n1.stats_of(2).last_error.unwrap();
        assert!(e.contains("alert"), "{e}");
        // Neither learned the other from a handshake.
        assert!(n1.handle.peers()[0].name.is_empty());
        assert!(n2.handle.peers()[0].name.is_empty());
        for g in &n1.groups {
            assert!(drain(g).await.is_empty());
        }
        n1.stop();
        n2.stop();
    });
}

#[test]
fn tls_checks_the_peer_url_host_against_the_certificate() {
    run(|| async {
        let pki = Pki::new("cluster CA");
        let (a1, a2) = (free_addr(), free_addr());
        let mut c1 = tls_cfg(1, a1, &[(2, a2)], 1, pki.tls("n1"));
        // n2's certificate names 127.0.0.1 only.
        c1.peers.get_mut(&2).unwrap()[0].tls_name = Some("localhost".to_string());
        let n1 = Node::start(c1);
        let n2 = Node::start(tls_cfg(2, a2, &[(1, a1)], 1, pki.tls("n2")));
        nothing_gets_through(&n1, &n2).await;
        let e = n1.stats_of(2).last_error.unwrap();
        assert!(
            e.contains("TLS handshake failed: invalid peer certificate") && e.contains("localhost"),
            "{e}"
        );
        // The other way the names match.
        eventually("n2 connected to n1", || n2.connected_to(1)).await;
        n1.stop();
        n2.stop();
    });
}

#[test]
fn tls_and_plain_peers_refuse_each_other() {
    run(|| async {
        let pki = Pki::new("cluster CA");
        let (a1, a2) = (free_addr(), free_addr());
        // n1 speaks plain TCP only; n2 listens and dials with TLS.
        let n1 = Node::start(cfg(1, a1, &[(2, a2)], 1));
        let n2 = Node::start(tls_cfg(2, a2, &[(1, a1)], 1, pki.tls("n2")));
        nothing_gets_through(&n1, &n2).await;
        eventually("the plain dialer refused by the TLS listener", || {
            logged_line(&[
                "rejected connection from 127.0.0.1",
                "TLS handshake failed",
                "the peer does not speak TLS",
            ])
        })
        .await;
        eventually("the TLS dialer refused by the plain listener", || {
            n2.stats_of(1)
                .last_error
                .is_some_and(|e| e.contains("TLS handshake failed"))
        })
        .await;
        assert!(!n2.connected_to(1));
        for g in &n1.groups {
            assert!(drain(g).await.is_empty());
        }
        assert_eq!(n1.stats_of(2).raft_received, 0);
        n1.stop();
        n2.stop();
    });
}

#[test]
fn tls_client_cert_auth_refuses_a_dialer_without_a_certificate() {
    run(|| async {
        let pki = Pki::new("cluster CA");
        let (a1, a2) = (free_addr(), free_addr());
        // n1 verifies the peers it dials but presents no certificate; its
        // own listener asks none.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let m = pki.issue("n1", &["127.0.0.1"]);
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![m.cert_der.clone()], m.key_der.clone_key())
            .unwrap();
        let anonymous = PeerTls::from_configs(Arc::new(server), Some(Arc::new(client)));
        let n1 = Node::start(tls_cfg(1, a1, &[(2, a2)], 1, anonymous));
        let n2 = Node::start(tls_cfg(2, a2, &[(1, a1)], 1, pki.tls("n2")));
        nothing_gets_through(&n1, &n2).await;
        eventually("the refusal logged", || {
            logged_line(&[
                "rejected connection from 127.0.0.1",
                "TLS handshake failed: peer sent no certificates",
            ])
        })
        .await;
        // n2, with its certificate, reaches n1 (which asks for none).
        eventually("n2 connected to n1", || n2.connected_to(1)).await;
        n2.handle.send_raft(0, vec![msg(2, 1, 0, 7)]);
        assert_eq!(
            within("n2 -> n1", n1.groups[0].recv()).await.unwrap(),
            msg(2, 1, 0, 7)
        );
        n1.stop();
        n2.stop();
    });
}

// ------------------------------------------------------ membership changes

/// The bytes `n` has read from member `from` stop growing: the connection
/// `from` dialed to `n` (pinged every second while up) is gone.
async fn nothing_more_from(n: &Node, from: u64, what: &str) {
    // Let a close in progress finish, then watch for longer than a ping.
    sleep_ms(300).await;
    let before = n.stats_of(from).received_bytes;
    sleep_ms(1500).await;
    assert_eq!(n.stats_of(from).received_bytes, before, "{what}");
}

#[test]
fn a_peer_added_after_start_exchanges_raft_messages_and_calls_both_ways() {
    run(|| async {
        let (a1, a2) = (free_addr(), free_addr());
        // n1 is a one-member cluster: listening, no peers yet.
        let n1 = Node::start(cfg(1, a1, &[], 2));
        assert!(n1.handle.peers().is_empty() && n1.handle.stats().is_empty());
        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 2));
        eventually("n2 refused as an unknown member", || {
            n2.stats_of(1)
                .last_error
                .is_some_and(|e| e.contains("is not a member of this cluster (unknown member)"))
        })
        .await;
        assert_eq!(
            n1.handle.call(2, CALL_ECHO, vec![]).await,
            Err(PeerError::UnknownMember(2))
        );
        // The checks of the configuration.
        let https = PeerAddr {
            addr: a2,
            tls_name: Some("127.0.0.1".into()),
        };
        for (id, addrs, says) in [
            (1, vec![a2.into()], "listed among its own peers"),
            (0, vec![a2.into()], "raft's \"none\""),
            (2, vec![], "has no address"),
            (2, vec![https], "is https"),
        ] {
            match n1.handle.add_peer(id, addrs) {
                Err(PeerError::Config(e)) => assert!(e.contains(says), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(n1.handle.peers().is_empty());

        n1.handle.add_peer(2, vec![a2.into()]).unwrap();
        // In the table when add_peer returns: the call is queued at once
        // and waits for the connection being dialed.
        let r = within(
            "call to the added peer",
            n1.handle.call(2, CALL_ECHO, b"new".to_vec()),
        )
        .await;
        assert_eq!(r.unwrap(), b"echo:new");
        // n2's dialer, backing off, gets in too.
        eventually("connected both ways", || {
            n1.connected_to(2) && n2.connected_to(1)
        })
        .await;
        n1.handle.send_raft(1, vec![msg(1, 2, 1, 1)]);
        n2.handle.send_raft(0, vec![msg(2, 1, 0, 2)]);
        assert_eq!(
            within("n1 -> n2", n2.groups[1].recv()).await.unwrap(),
            msg(1, 2, 1, 1)
        );
        assert_eq!(
            within("n2 -> n1", n1.groups[0].recv()).await.unwrap(),
            msg(2, 1, 0, 2)
        );
        let r = within(
            "call n2 -> n1",
            n2.handle.call(1, CALL_ECHO, b"old".to_vec()),
        )
        .await;
        assert_eq!(r.unwrap(), b"echo:old");

        // Added again with the same address: nothing changes.
        let connects = n1.stats_of(2).connects;
        n1.handle.add_peer(2, vec![a2.into()]).unwrap();
        sleep_ms(300).await;
        assert_eq!(n1.stats_of(2).connects, connects);
        assert!(n1.connected_to(2));
        let peers = n1.handle.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].peer_addrs, vec![a2]);
        assert_eq!(peers[0].name, "n2");
        n1.stop();
        n2.stop();
        // Stopped: no more peers.
    });
}

#[test]
fn add_peer_after_stop_is_refused_and_a_stop_fails_calls_to_a_just_added_peer() {
    run(|| async {
        let a1 = free_addr();
        let n1 = Node::start(cfg(1, a1, &[], 1));
        let h = n1.handle.clone();
        // A peer that is never reachable: its call waits for a connection
        // (call_timeout 500 ms) and the stop answers it first.
        h.add_peer(2, vec![free_addr().into()]).unwrap();
        let h2 = h.clone();
        let pending = glommio::spawn_local(async move { h2.call(2, CALL_ECHO, vec![]).await });
        sleep_ms(20).await;
        let t0 = Instant::now();
        n1.stop();
        assert_eq!(
            within("call across stop", pending).await,
            Err(PeerError::Stopped)
        );
        assert!(
            t0.elapsed() < Duration::from_millis(450),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(
            h.add_peer(3, vec![free_addr().into()]),
            Err(PeerError::Stopped)
        );
        assert_eq!(h.call(2, CALL_ECHO, vec![]).await, Err(PeerError::Stopped));
    });
}

#[test]
fn a_removed_member_is_cut_off_and_told_so() {
    run(|| async {
        let (a1, a2) = (free_addr(), free_addr());
        let mut c1 = cfg(1, a1, &[(2, a2)], 1);
        // Long enough that the pending call below ends by the removal.
        c1.call_timeout = Duration::from_secs(5);
        let n1 = Node::start(c1);
        let n2 = Node::start(cfg(2, a2, &[(1, a1)], 1));
        eventually("connected both ways", || {
            n1.connected_to(2) && n2.connected_to(1)
        })
        .await;
        assert_eq!(n2.handle.removed_by_peer(), None);
        let h = n1.handle.clone();
        let pending = glommio::spawn_local(async move { h.call(2, CALL_SILENT, vec![]).await });
        eventually("the call in flight", || n1.stats_of(2).calls_in_flight == 1).await;

        let t0 = Instant::now();
        n1.handle.remove_peer(2);
        assert_eq!(
            within("the pending call", pending).await,
            Err(PeerError::Removed { member: 2 })
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(
            PeerError::Removed { member: 2 }.to_string(),
            "peer transport: member 2 has been permanently removed from the cluster"
        );
        // Effective when remove_peer returned.
        assert_eq!(
            n1.handle.call(2, CALL_ECHO, vec![]).await,
            Err(PeerError::Removed { member: 2 })
        );
        let dropped = n1.handle.raft_dropped_unknown();
        n1.handle.send_raft(0, vec![msg(1, 2, 0, 1)]);
        assert_eq!(n1.handle.raft_dropped_unknown(), dropped + 1);
        assert!(n1.handle.peers().is_empty() && n1.handle.stats().is_empty());
        // A removed member does not come back.
        assert_eq!(
            n1.handle.add_peer(2, vec![a2.into()]),
            Err(PeerError::Removed { member: 2 })
        );

        // n1 closed the connection n2 had dialed; n2's next handshake is
        // answered "removed", and n2 knows who said so.
        eventually("n2 told it was removed", || {
            n2.handle.removed_by_peer() == Some(1)
        })
        .await;
        let e = n2.stats_of(1).last_error.unwrap();
        assert!(
            e.contains(
                "refused our connection: member 2 has been permanently removed from the cluster"
            ),
            "{e}"
        );
        assert!(!n2.connected_to(1));
        eventually("the refusal logged", || {
            logged_line(&[
                "refused connection from 127.0.0.1",
                "member 2 has been permanently removed from the cluster",
            ])
        })
        .await;
        // n1 dials n2 no more.
        nothing_more_from(&n2, 1, "n1's connection to n2 closed").await;
        // n2's calls to n1 find it unreachable, with the reason.
        match within(
            "n2 -> n1 after removal",
            n2.handle.call(1, CALL_ECHO, vec![]),
        )
        .await
        {
            Err(PeerError::Unreachable { member: 1, reason }) => {
                assert!(reason.contains("permanently removed"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A raw HELLO as member 2 gets REMOVED with n1's cluster and member
        // ids; from another cluster, a plain refusal (the cluster id).
        let mut s = raw_connect(a1);
        s.write_all(&raw_hello(0x1000, 2, 1, 1)).unwrap();
        let p = raw_read_frame(&mut s);
        assert_eq!(p[0], 7, "{p:?}");
        assert_eq!(p[1..9], 0x1000u64.to_le_bytes());
        assert_eq!(p[9..17], 1u64.to_le_bytes());
        assert_closed(s, "removed member's handshake");
        let mut s = raw_connect(a1);
        s.write_all(&raw_hello(0x2000, 2, 1, 1)).unwrap();
        let p = raw_read_frame(&mut s);
        assert_eq!(p[0], 3, "{p:?}");
        assert_closed(s, "another cluster's handshake");
        n1.stop();
        n2.stop();
    });
}

#[test]
fn removing_a_member_drops_its_queue_and_counts_it() {
    run(|| async {
        const QUEUE_MAX: usize = 64;
        let (a1, a2) = (free_addr(), free_addr());
        let mut c = cfg(1, a1, &[(2, a2)], 1);
        c.queue_messages_max = QUEUE_MAX;
        let n1 = Node::start(c);
        // A "member 2" that answers the handshake and never reads: the
        // socket buffers fill, then the queue.
        let l = std::net::TcpListener::bind(a2).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let slow = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut hdr = [0u8; 8];
            s.read_exact(&mut hdr).unwrap();
            let len = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
            let mut p = vec![0; len];
            s.read_exact(&mut p).unwrap();
            s.write_all(&raw_welcome(0x1000, 2, 1)).unwrap();
            let _ = done_rx.recv_timeout(WAIT_MAX);
        });
        eventually("connected to the slow peer", || n1.connected_to(2)).await;
        let mut big = msg(1, 2, 0, 1);
        big.entries[0].data = vec![0u8; 64 * 1024].into();
        // Full and stuck: a full queue alone may be one the writer is about
        // to drain into a frame while the socket buffers still take bytes,
        // so also wait until the bytes written stop moving.
        let end = Instant::now() + WAIT_MAX;
        loop {
            assert!(Instant::now() < end, "the queue never filled and stuck");
            n1.handle.send_raft(0, vec![big.clone(); 10]);
            let sent = n1.stats_of(2).sent_bytes;
            sleep_ms(50).await;
            let s = n1.stats_of(2);
            if s.queued >= QUEUE_MAX && s.sent_bytes == sent {
                break;
            }
        }
        let before = n1.handle.raft_dropped_unknown();
        n1.handle.remove_peer(2);
        // Dropped and counted by remove_peer itself (the writer is stuck
        // on the full socket meanwhile: at most a frame's worth moves).
        let dropped = n1.handle.raft_dropped_unknown() - before;
        assert!(dropped > 0 && dropped <= QUEUE_MAX as u64, "{dropped}");
        done_tx.send(()).unwrap();
        slow.join().unwrap();
        n1.stop();
    });
}

#[test]
fn updating_a_members_peer_urls_reconnects_to_the_new_address() {
    run(|| async {
        let (a1, a2, a2_new) = (free_addr(), free_addr(), free_addr());
        let n1 = Node::start(cfg(1, a1, &[(2, a2)], 1));
        // Both processes of member 2 know member 1 at an address where
        // nothing listens: they accept n1 and never dial it.
        let nowhere = free_addr();
        let old = Node::start(cfg(2, a2, &[(1, nowhere)], 1));
        eventually("connected to the old address", || n1.connected_to(2)).await;
        n1.handle.send_raft(0, vec![msg(1, 2, 0, 1)]);
        assert_eq!(
            within("to the old address", old.groups[0].recv())
                .await
                .unwrap(),
            msg(1, 2, 0, 1)
        );
        // Member 2 moved: it runs at the new address, the old process
        // still up (so a message going there would show).
        let new = Node::start(cfg(2, a2_new, &[(1, nowhere)], 1));
        let connects = n1.stats_of(2).connects;
        n1.handle.add_peer(2, vec![a2_new.into()]).unwrap();
        assert_eq!(n1.handle.peers()[0].peer_addrs, vec![a2_new]);
        eventually("reconnected to the new address", || {
            n1.stats_of(2).connects > connects && n1.connected_to(2)
        })
        .await;
        n1.handle.send_raft(0, vec![msg(1, 2, 0, 2)]);
        assert_eq!(
            within("to the new address", new.groups[0].recv())
                .await
                .unwrap(),
            msg(1, 2, 0, 2)
        );
        let r = within(
            "call to the new address",
            n1.handle.call(2, CALL_ECHO, b"moved".to_vec()),
        )
        .await;
        assert_eq!(r.unwrap(), b"echo:moved");
        assert!(new.stats_of(1).raft_received == 1);
        // The old connection is closed, and stays so.
        nothing_more_from(&old, 1, "n1's connection to the old address closed").await;
        assert!(drain(&old.groups[0]).await.is_empty());
        assert_eq!(old.stats_of(1).raft_received, 1);
        // Counters went on across the update.
        assert!(n1.stats_of(2).raft_sent >= 2);
        n1.stop();
        old.stop();
        new.stop();
    });
}

// ------------------------------------------------------ member list query

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn query_members_returns_the_member_list_or_says_why_not() {
    run(|| async {
        let a1 = free_addr();
        let n1 = Node::start(cfg(1, a1, &[], 2));
        let at: PeerAddr = a1.into();
        let e = query_members(&at, None, 2, QUERY_TIMEOUT).unwrap_err();
        assert!(e.contains(&a1.to_string()), "{e}");
        assert!(e.contains("refused: membership not known yet"), "{e}");

        let body = b"{\"members\":[1]}".to_vec();
        n1.handle.set_members(body.clone()).unwrap();
        assert_eq!(
            query_members(&at, None, 2, QUERY_TIMEOUT).unwrap(),
            (0x1000, body)
        );
        let e = query_members(&at, None, 3, QUERY_TIMEOUT).unwrap_err();
        assert!(
            e.contains("has --shards 3, this member has 2; a cluster has one shard count"),
            "{e}"
        );
        eventually("the refusal logged", || {
            logged_line(&[
                "refused connection from 127.0.0.1",
                "a member list query",
                "has --shards 3",
            ])
        })
        .await;

        // The largest body there is; a larger one is refused when set.
        let big = vec![7u8; MEMBERS_BODY_MAX];
        n1.handle.set_members(big.clone()).unwrap();
        assert_eq!(
            query_members(&at, None, 2, QUERY_TIMEOUT).unwrap(),
            (0x1000, big)
        );
        assert_eq!(
            n1.handle.set_members(vec![0; MEMBERS_BODY_MAX + 1]),
            Err(PeerError::MembersTooLarge {
                bytes: MEMBERS_BODY_MAX + 1,
                max: MEMBERS_BODY_MAX
            })
        );

        // On the wire: MEMBERS_QUERY of another version is refused with
        // the version; then the connection closes.
        let mut p = vec![5u8];
        p.extend_from_slice(b"FKVPEER\0");
        p.extend_from_slice(&9u16.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        let mut s = raw_connect(a1);
        s.write_all(&raw_frame(&p)).unwrap();
        let r = raw_read_frame(&mut s);
        assert_eq!(r[0], 3);
        assert!(String::from_utf8_lossy(&r).contains("protocol version 9"));
        assert_closed(s, "query of another version");
        // And a good one, by hand: MEMBERS, then the end.
        p[9..11].copy_from_slice(&1u16.to_le_bytes());
        let mut s = raw_connect(a1);
        s.write_all(&raw_frame(&p)).unwrap();
        let r = raw_read_frame(&mut s);
        assert_eq!(r[0], 6);
        assert_eq!(r[1..9], 0x1000u64.to_le_bytes());
        assert_eq!(r[9..13], (MEMBERS_BODY_MAX as u32).to_le_bytes());
        assert_closed(s, "answered query");
        n1.stop();
    });
}

/// A listener that answers one connection with `answer` (after reading
/// what the client sends first), then keeps it open until the client
/// closes it, or closes at once when `close`.
fn fake_member(answer: Vec<u8>, close: bool) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT_MAX)).unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let _ = s.write_all(&answer);
        if !close {
            // Until the client gives up (EOF) or WAIT_MAX.
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    (addr, t)
}

#[test]
fn query_members_fails_cleanly_and_in_time() {
    init_logs();
    let timeout = Duration::from_millis(500);
    let q = |addr: SocketAddr| {
        let t0 = Instant::now();
        let r = query_members(&addr.into(), None, 1, timeout);
        let took = t0.elapsed();
        assert!(took < timeout + Duration::from_millis(500), "{took:?}");
        (r.unwrap_err(), took)
    };
    // Nothing listens.
    let (e, _) = q(free_addr());
    assert!(e.contains("refused"), "{e}");
    // Accepts and never answers: the timeout, as a whole.
    let (addr, t) = fake_member(Vec::new(), false);
    let (e, took) = q(addr);
    assert!(e.contains("no answer within 500ms"), "{e}");
    assert!(took >= timeout, "{took:?}");
    t.join().unwrap();
    // Trickles a frame it never finishes: still the one timeout.
    let mut cut = raw_welcome(0x1000, 2, 1);
    cut.truncate(12);
    let (addr, t) = fake_member(cut, false);
    let (e, _) = q(addr);
    assert!(e.contains("no answer within"), "{e}");
    t.join().unwrap();
    // Garbage of every kind.
    let mut bad_crc = raw_frame(&[6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    bad_crc[5] ^= 1;
    let answers: Vec<(Vec<u8>, bool, &str)> = vec![
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            false,
            "exceeds the limit",
        ),
        (b"ab".to_vec(), true, "closed before the answer"),
        (bad_crc, false, "checksum mismatch"),
        (raw_welcome(0x1000, 2, 1), false, "another frame"),
        (raw_frame(&[6, 1, 2]), false, "truncated"),
        (raw_frame(&[99]), false, "unknown frame type"),
    ];
    for (answer, close, says) in answers {
        let (addr, t) = fake_member(answer, close);
        let (e, _) = q(addr);
        assert!(e.contains(says), "{says}: {e}");
        assert!(
            e.starts_with(&format!("member list query to {addr}: ")),
            "{e}"
        );
        t.join().unwrap();
    }
    // No time at all.
    let (addr, t) = fake_member(Vec::new(), true);
    let e = query_members(&addr.into(), None, 1, Duration::ZERO).unwrap_err();
    assert!(e.contains("no answer within"), "{e}");
    // The fake member waits for a connection that never comes.
    drop(std::net::TcpStream::connect(addr));
    t.join().unwrap();
}

#[test]
fn tls_query_members() {
    run(|| async {
        let pki = Pki::new("cluster CA");
        let a1 = free_addr();
        let n1 = Node::start(tls_cfg(1, a1, &[], 1, pki.tls("n1")));
        n1.handle.set_members(b"tls members".to_vec()).unwrap();
        let https = PeerAddr {
            addr: a1,
            tls_name: Some("127.0.0.1".into()),
        };
        // A joiner with its certificate of the cluster's CA.
        let joiner = pki.tls("joiner");
        assert_eq!(
            query_members(&https, Some(&joiner), 1, QUERY_TIMEOUT).unwrap(),
            (0x1000, b"tls members".to_vec())
        );
        let e = query_members(&https, Some(&joiner), 2, QUERY_TIMEOUT).unwrap_err();
        assert!(e.contains("has --shards 2, this member has 1"), "{e}");
        // An https address needs TLS with a CA to verify it with.
        let e = query_members(&https, None, 1, QUERY_TIMEOUT).unwrap_err();
        assert!(e.contains("is https"), "{e}");
        // The certificate is checked for the URL's host.
        let localhost = PeerAddr {
            addr: a1,
            tls_name: Some("localhost".into()),
        };
        let e = query_members(&localhost, Some(&joiner), 1, QUERY_TIMEOUT).unwrap_err();
        assert!(
            e.contains("TLS handshake failed") && e.contains("invalid peer certificate"),
            "{e}"
        );
        // A certificate of another CA is refused by the member.
        let other = Pki::new("another CA");
        let m = other.issue("impostor", &["127.0.0.1"]);
        let impostor = PeerTls::load(&m.cert, &m.key, Some(&pki.ca()), true).unwrap();
        let t0 = Instant::now();
        let e = query_members(&https, Some(&impostor), 1, QUERY_TIMEOUT).unwrap_err();
        assert!(
            e.contains("TLS handshake failed: received fatal alert"),
            "{e}"
        );
        assert!(t0.elapsed() < QUERY_TIMEOUT, "{:?}", t0.elapsed());
        // A plain query to the TLS listener: an error, not a hang.
        let t0 = Instant::now();
        let e = query_members(&a1.into(), None, 1, QUERY_TIMEOUT).unwrap_err();
        assert!(t0.elapsed() < QUERY_TIMEOUT, "{e} after {:?}", t0.elapsed());
        assert!(e.contains("query it with TLS"), "{e}");
        n1.stop();
    });
}
