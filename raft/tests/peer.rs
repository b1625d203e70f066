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
    start, Inbound, IncomingCall, ListenAddr, PeerConfig, PeerError, PeerHandle, PeerStats, PeerTls,
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
            "member 1 is not a member of this cluster (unknown or removed member)",
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
