//! Peer transport (port 2380): the raft messages of every shard group, and
//! request/response calls (a follower forwarding a write, a ReadIndex
//! query, ...), between the members of one cluster.
//!
//! # Shape
//!
//! One TCP connection per *ordered* pair of members: A dials B and carries
//! everything A originates for B on it (raft messages of all groups, call
//! requests, pings); B answers on that same connection (call replies,
//! pongs) and sends nothing else there. B's own traffic for A rides on the
//! connection B dials. All groups' messages for one peer share one queue
//! and one connection, and a writer drains everything queued into one frame
//! and one write: the heartbeats of all groups travel together (coalesced
//! per pair), so the per-tick cost of an idle cluster is one small frame
//! per peer, whatever the shard count.
//!
//! Every socket lives on the glommio executor that called [`start`]
//! (glommio streams are `!Send`). Other cores reach it through
//! [`PeerHandle`] (`Send + Sync + Clone`), whose methods only touch bounded
//! channels, the peer table (a read-write lock), mutex-guarded tables of
//! pending calls, and atomics; the future of [`PeerHandle::call`] is `Send`
//! and runs on any executor.
//!
//! The connection code is generic over `AsyncRead + AsyncWrite + Unpin`
//! streams; only dialing and accepting name glommio's `TcpStream`, which is
//! where TLS wraps it.
//!
//! # The peer set
//!
//! `PeerConfig::peers` (possibly empty: the member of a one-member cluster,
//! listening for members added later) starts a table that follows the
//! membership: [`PeerHandle::add_peer`] (etcd's `member add`, and `member
//! update` when the member exists with other addresses) and
//! [`PeerHandle::remove_peer`] (`member remove`), from any core. The table
//! changes before they return, so the next `send_raft`, `call` or handshake
//! sees the change; the sockets being the executor's, an added peer's loop
//! is started there (the handle wakes, through a one-slot channel, a task
//! that starts every peer of the table without a loop).
//!
//! - Update: the peer keeps its queue, waiting calls and counters; its
//!   connection (or dial round, or back-off) ends at once, the calls
//!   written on it fail with [`PeerError::ConnectionLost`], and the new
//!   addresses are dialed without waiting.
//! - Removal: the loop stops and closes the connection we dialed, the
//!   connection the member dialed to us closes, its queued raft messages
//!   are dropped (counted in `raft_dropped_unknown`, as later sends to it
//!   are), its pending and later calls fail with [`PeerError::Removed`].
//!   The id is kept as removed: `add_peer` refuses it, and its HELLO is
//!   answered REMOVED, which makes that member's
//!   [`PeerHandle::removed_by_peer`] say who removed it (the application
//!   then stops, as etcd does: "the member has been permanently removed
//!   from the cluster").
//!
//! # Joining an existing cluster
//!
//! A member started with etcd's `--initial-cluster-state existing` has no
//! member id yet; it asks a running member for the member list with the
//! blocking [`query_members`] (std sockets, before any executor runs; TLS
//! for an https address, with the dialer's certificate and verification).
//! The answer is the cluster id and an opaque body, set by the application
//! with [`PeerHandle::set_members`] (refused, until then, with "membership
//! not known yet").
//!
//! # TLS
//!
//! A link is TLS when its URL is `https`: every connection accepted on an
//! https listener ([`ListenAddr::tls`]), every connection dialed to an
//! https peer address ([`PeerAddr::tls_name`]), with this member's
//! [`PeerTls`] (etcd's `--peer-cert-file`, `--peer-key-file`,
//! `--peer-trusted-ca-file`, `--peer-client-cert-auth`; see [`PeerTls::load`]).
//! The dialer verifies the peer's certificate against the trusted CA for the
//! host of the peer URL (a DNS name, or an IP against the certificate's IP
//! SANs) and presents this member's certificate; the acceptor, given a
//! trusted CA, requires a client certificate that chains to it (as etcd
//! does). The TLS handshake comes before HELLO (or MEMBERS_QUERY) and within the handshake's
//! bounds (an acceptor gives TLS and HELLO together 5 s, and counts it among
//! the 32 connections in handshake; a dialer gives each 5 s): a peer whose
//! certificate does not verify, or that does not speak TLS, is refused there
//! (a warning naming the remote address and rustls' reason, the connection
//! closed) and never gets a frame read. A TLS connection adds rustls' own
//! buffers (bounded by rustls: a record, 64 KiB of pending output) to the
//! memory per connection below.
//!
//! # Wire format
//!
//! Integers are little-endian.
//!
//! ```text
//! frame    = len u32 | crc32c(payload) u32 | payload        (len = payload bytes)
//! payload  = HELLO   (1) | magic "FKVPEER\0" | version u16 (= 1) | cluster_id u64
//!                        | from u64 | to u64 | shards u32 | name str | client_urls
//!          | WELCOME (2) | magic | version u16 | cluster_id u64 | member_id u64
//!                        | shards u32 | name str | client_urls
//!          | REFUSED (3) | reason str
//!          | BATCH   (4) | item*                               (items fill the payload)
//!          | MEMBERS_QUERY (5) | magic | version u16 | shards u32
//!          | MEMBERS (6) | cluster_id u64 | len u32 | body      (at most MEMBERS_BODY_MAX)
//!          | REMOVED (7) | cluster_id u64 | member_id u64 | reason str   (the acceptor's ids)
//! str         = len u16 | UTF-8 bytes
//! client_urls = count u16 (at most 64) | str*
//! item     = RAFT      (1) | group u32 | len u32 | protobuf raft::eraftpb::Message
//!          | CALL      (2) | call_id u64 | kind u8 | len u32 | body
//!          | REPLY_OK  (3) | call_id u64 | len u32 | body
//!          | REPLY_ERR (4) | call_id u64 | len u32 | UTF-8 error message
//!          | PING      (5) | nonce u64
//!          | PONG      (6) | nonce u64                           (the ping's, echoed)
//! ```
//!
//! The dialer sends HELLO and waits; the acceptor answers WELCOME, or
//! REFUSED (or REMOVED) and closes. The acceptor refuses, logging the
//! reason, when the magic or version is wrong, the cluster id differs
//! (`request cluster ID mismatch (got X want Y)`), `to` is not itself,
//! `from` is not a peer (`member X is not a member of this cluster (unknown
//! member)`), or the shard count differs (`peer X has --shards N, this
//! member has M; a cluster has one shard count`). A `from` that was
//! removed is answered REMOVED (`member X has been permanently removed
//! from the cluster`), its own frame type so that the dialer need not
//! parse prose; it is sent only after the cluster id matched, and carries
//! the acceptor's cluster and member ids: a dialer takes it as its removal
//! (and sets [`PeerHandle::removed_by_peer`]) only from the member it
//! meant, of its cluster; either way it is a refusal, and the dialer goes
//! on dialing with back-off until the application stops it. The dialer
//! logs the reason it got,
//! and checks the WELCOME the same way (cluster id, that the member at
//! that address is the one it meant, shard count). After the handshake
//! only BATCH frames flow: RAFT, CALL and PING from dialer to acceptor;
//! REPLY_OK, REPLY_ERR and PONG back.
//!
//! Instead of HELLO, the first frame may be MEMBERS_QUERY
//! ([`query_members`]): the acceptor answers MEMBERS (its cluster id and
//! the body of [`PeerHandle::set_members`]) or REFUSED (wrong magic or
//! version; another shard count, `peer at ADDR has --shards N, this member
//! has M; a cluster has one shard count`; `membership not known yet`), and
//! closes. It is a handshake like HELLO, within the same bounds.
//!
//! A frame over its bound, a checksum mismatch, a frame cut short by the
//! end of the stream, an undecodable item, an item sent the wrong way, or a
//! raft item for a group this member does not have: one warning naming the
//! peer and the reason, and the connection closes (the dialer reconnects).
//! Nothing a peer sends can panic the transport.
//!
//! # Bounds, and what happens at each
//!
//! | bound | at the bound |
//! |---|---|
//! | `queue_messages_max` items queued per peer (raft messages and calls) | a raft message is dropped and counted (`raft_dropped`, and `heartbeat_send_failures` for heartbeats): raft retransmits. A call fails at once with [`PeerError::QueueFull`] (no back-pressure: a full queue means the peer is far behind, and the caller is better served by a quick error) |
//! | `calls_in_flight_max` calls per peer (queued, waiting for a connection or for their reply) | [`PeerError::TooManyCalls`] at once. Inbound, the same number per connection may be with the handler; more get an error reply |
//! | `call_timeout` from `call` | [`PeerError::Timeout`] (sent, or queued behind a connected peer) or [`PeerError::Unreachable`] (no connection came up; carries the last dial error). Deadlines are swept every `call_timeout / 10` (5 to 100 ms). Inbound, a handler that has not answered within this member's `call_timeout` is given up on: no reply is sent (the caller's deadline answers), the in-flight slot is freed |
//! | `frame_bytes_max` bytes per frame, header included | outbound batches are cut there. A raft message that cannot fit one frame alone is dropped and counted (keep raft's `max_size_per_msg` well below it); a call that cannot is [`PeerError::TooLarge`]; a reply that cannot becomes an error reply. An inbound frame announcing more closes the connection before its payload is read |
//! | 64 KiB and 5 s for the handshake (HELLO or MEMBERS_QUERY and its answer, TLS included); 32 connections in handshake at once | closed (extra connections at accept) |
//! | [`MEMBERS_BODY_MAX`] bytes of member list (a MEMBERS frame fits the handshake's 64 KiB) | [`PeerHandle::set_members`] refuses a larger one ([`PeerError::MembersTooLarge`]) |
//! | `timeout` of [`query_members`], for connect, TLS and exchange together (every socket read and write gets what is left) | an error saying so; an answer announcing more than 64 KiB is refused from its header |
//! | one pending wake of the task starting added peers | none needed: a pending wake starts every peer added before it runs |
//! | removed member ids: one `u64` per removal, for the transport's life (etcd's member store keeps them too) | — |
//! | one accepted connection per peer | a newer handshake from the same member closes the older connection |
//! | 10 s without a frame (the dialer pings every second, so a live connection never idles) | closed; the dialer reconnects |
//! | `Inbound::groups[g]` full | the raft message is dropped and counted (`raft_inbound_dropped`) |
//! | `Inbound::calls` full | the call waits for room (in its own task: the connection goes on), within its `call_timeout` |
//!
//! Memory per peer is therefore at most `queue_messages_max` messages plus,
//! per connection (two per pair), a read buffer and a write buffer of at
//! most `frame_bytes_max` each (shrunk back after a large frame).
//!
//! # Reconnection and drop policy
//!
//! The dialer tries the peer's addresses in turn (1 s connect timeout, 5 s
//! handshake timeout), then sleeps before the next round: 50 ms doubling
//! to 1 s, each sleep a random 50-100 % of the step (splitmix64 seeded by
//! the member pair, so the two members of a pair do not dial in lockstep),
//! back to 50 ms after a successful handshake. The same failure is logged
//! once, not every round. When the peer's addresses are updated, the
//! current connection, dial round or sleep ends and the new addresses are
//! dialed at once, from the first.
//!
//! While no connection to a peer is up (dialing, handshaking, backing off),
//! its queue is drained continuously: raft messages are dropped and
//! counted, so a new connection never replays traffic older than itself
//! (raft retransmits: the next heartbeat, an append after the probe);
//! calls keep waiting for a connection until their deadline. When a
//! connection breaks, the calls written on it fail with
//! [`PeerError::ConnectionLost`] (the peer may or may not have acted on
//! them). A partitioned peer thus costs an empty queue.
//!
//! # Stopping
//!
//! [`PeerHandle::stop`], or dropping the last `PeerHandle`, closes the
//! listeners and connections and fails pending calls with
//! [`PeerError::Stopped`] (also those of a peer added just before, whose
//! loop never started); later sends are dropped and counted, later calls
//! and `add_peer` get `Stopped`. [`PeerTransport::join`] resolves once
//! every socket of the transport is closed (so its port can be bound
//! again). Removing a peer stops only that peer (see "The peer set").

mod conn;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod shared;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use raft::eraftpb::Message;

pub use error::PeerError;
pub use tls::PeerTls;

use shared::{lock, read, write, OutItem, PeerShared, PeerTable, PendingCall, Shared};

pub const QUEUE_MESSAGES_MAX_DEFAULT: usize = 4096;
pub const FRAME_BYTES_MAX_DEFAULT: usize = 4 << 20;
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
pub const CALLS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// The smallest `frame_bytes_max` accepted: room for a handshake.
pub const FRAME_BYTES_MAX_MIN: usize = frame::HANDSHAKE_BYTES_MAX;
/// The largest member list [`PeerHandle::set_members`] takes: a MEMBERS
/// answer is a handshake frame.
pub const MEMBERS_BODY_MAX: usize = frame::MEMBERS_BODY_MAX;

/// One `--listen-peer-urls` entry, resolved: where to listen, and whether
/// the URL is `https` (TLS on every connection accepted there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl From<SocketAddr> for ListenAddr {
    /// A plain TCP listener (an `http` URL).
    fn from(addr: SocketAddr) -> Self {
        ListenAddr { addr, tls: false }
    }
}

/// One peer URL of a member, resolved: where to dial it and, for an
/// `https` URL, the name its certificate must carry (the URL's host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub tls_name: Option<String>,
}

impl From<SocketAddr> for PeerAddr {
    /// A plain TCP peer (an `http` URL).
    fn from(addr: SocketAddr) -> Self {
        PeerAddr {
            addr,
            tls_name: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Shard (group) count of this member: a peer with another count is
    /// refused with a clear message.
    pub shards: u32,
    /// `--listen-peer-urls`.
    pub listen: Vec<ListenAddr>,
    /// The other members: id -> peer addresses (tried in turn).
    pub peers: BTreeMap<u64, Vec<PeerAddr>>,
    /// Peer TLS, needed when a listener or a peer address is TLS.
    pub tls: Option<PeerTls>,
    /// Sent in the handshake so peers learn our name and client URLs (etcd
    /// shows them in member list).
    pub name: String,
    pub client_urls: Vec<String>,
    /// Per peer outbound queue bound (raft messages and calls together).
    pub queue_messages_max: usize,
    /// Max bytes of one frame, header included; larger inbound frames are
    /// refused (the connection closes).
    pub frame_bytes_max: usize,
    pub call_timeout: Duration,
    /// Calls per peer queued, waiting or awaiting their reply.
    pub calls_in_flight_max: usize,
}

impl PeerConfig {
    /// A member with no listeners and no peers yet, and the default bounds.
    pub fn new(cluster_id: u64, member_id: u64, shards: u32) -> Self {
        PeerConfig {
            cluster_id,
            member_id,
            shards,
            listen: Vec::new(),
            peers: BTreeMap::new(),
            tls: None,
            name: String::new(),
            client_urls: Vec::new(),
            queue_messages_max: QUEUE_MESSAGES_MAX_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            call_timeout: CALL_TIMEOUT_DEFAULT,
            calls_in_flight_max: CALLS_IN_FLIGHT_MAX_DEFAULT,
        }
    }

    fn validate(&self, inbound: &Inbound) -> Result<(), PeerError> {
        let bad = |s: String| Err(PeerError::Config(s));
        if self.member_id == 0 {
            return bad("member id 0 is raft's \"none\"".into());
        }
        if self.shards == 0 {
            return bad("--shards must be at least 1".into());
        }
        if inbound.groups.len() != self.shards as usize {
            return bad(format!(
                "{} inbound group channels for {} shards",
                inbound.groups.len(),
                self.shards
            ));
        }
        if self.queue_messages_max == 0 || self.calls_in_flight_max == 0 {
            return bad("queue_messages_max and calls_in_flight_max must be at least 1".into());
        }
        if self.frame_bytes_max < FRAME_BYTES_MAX_MIN || self.frame_bytes_max > u32::MAX as usize {
            return bad(format!(
                "frame_bytes_max {} is outside {FRAME_BYTES_MAX_MIN}..={}",
                self.frame_bytes_max,
                u32::MAX
            ));
        }
        if self.call_timeout.is_zero() {
            return bad("call_timeout must not be zero".into());
        }
        if let Some(l) = self.listen.iter().find(|l| l.tls) {
            if self.tls.is_none() {
                return bad(format!(
                    "cannot listen on TLS for {}: no peer certificate and key (--peer-cert-file, --peer-key-file)",
                    l.addr
                ));
            }
        }
        for (id, addrs) in &self.peers {
            check_peer(self.member_id, self.tls.as_ref(), *id, addrs).map_err(PeerError::Config)?;
        }
        Ok(())
    }
}

/// Whether member `member_id` (with `tls`) can have peer `id` at `addrs`:
/// the checks of `PeerConfig::validate` and of `PeerHandle::add_peer`.
fn check_peer(
    member_id: u64,
    tls: Option<&PeerTls>,
    id: u64,
    addrs: &[PeerAddr],
) -> Result<(), String> {
    if id == member_id {
        return Err(format!("member {id:x} is listed among its own peers"));
    }
    if id == 0 {
        return Err("peer id 0 is raft's \"none\"".into());
    }
    if addrs.is_empty() {
        return Err(format!("peer {id:x} has no address"));
    }
    for a in addrs {
        let Some(name) = &a.tls_name else { continue };
        match tls {
            None => {
                return Err(format!(
                    "peer {id:x} at {} is https: no peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
                    a.addr
                ))
            }
            Some(t) if !t.can_dial() => {
                return Err(format!(
                    "peer {id:x} at {} is https: verifying its certificate needs --peer-trusted-ca-file",
                    a.addr
                ))
            }
            Some(_) => {}
        }
        tls::server_name(name).map_err(|e| format!("peer {id:x} at {}: {e}", a.addr))?;
    }
    Ok(())
}

/// Inbound side: where messages arriving from peers go.
pub struct Inbound {
    /// One sender per group; an inbound raft message for group g goes to
    /// `groups[g]` with `try_send` (dropped and counted when full).
    pub groups: Vec<async_channel::Sender<Message>>,
    /// Inbound calls; the handler answers on `reply`.
    pub calls: async_channel::Sender<IncomingCall>,
}

/// A call from a peer. Answer on `reply` within `call_timeout` (after that
/// the caller has been told the call timed out).
#[derive(Debug)]
pub struct IncomingCall {
    pub from: u64,
    pub kind: u8,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<Vec<u8>, String>>,
}

/// What we know of a peer, from configuration and handshakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub member_id: u64,
    /// Empty until a handshake with the peer (either direction) succeeded.
    pub name: String,
    pub peer_addrs: Vec<SocketAddr>,
    pub client_urls: Vec<String>,
    /// Our connection to the peer is up (handshake done).
    pub connected: bool,
}

/// Counters of one peer, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub member_id: u64,
    pub connected: bool,
    /// Bytes written to the peer, both connections (etcd's
    /// `etcd_network_peer_sent_bytes_total{To=..}`).
    pub sent_bytes: u64,
    /// Bytes read from the peer, both connections
    /// (`etcd_network_peer_received_bytes_total{From=..}`).
    pub received_bytes: u64,
    /// Smoothed ping round trip (`etcd_network_peer_round_trip_time_seconds`).
    pub round_trip: Option<Duration>,
    /// Raft messages written to the peer.
    pub raft_sent: u64,
    /// Batch frames written on our connection to the peer: `raft_sent /
    /// frames_sent` is how well messages are coalesced.
    pub frames_sent: u64,
    /// Raft messages received from the peer.
    pub raft_received: u64,
    /// Raft messages to the peer dropped: queue full, peer unreachable,
    /// connection lost, too large, transport stopped.
    pub raft_dropped: u64,
    /// The heartbeats (and heartbeat responses) among `raft_dropped`
    /// (`etcd_server_heartbeat_send_failures_total`).
    pub heartbeat_send_failures: u64,
    /// Raft messages from the peer dropped because their group's channel was
    /// full or closed, or they were not addressed from that peer to us.
    pub raft_inbound_dropped: u64,
    pub calls_in_flight: usize,
    /// Items in the peer's outbound queue now (at most `queue_messages_max`).
    pub queued: usize,
    /// Successful handshakes of our connection to the peer.
    pub connects: u64,
    /// Dial rounds that failed (connect, handshake, refusal).
    pub connect_failures: u64,
    /// Why the last dial failed or the connection was lost; `None` while up.
    pub last_error: Option<String>,
}

struct HandleInner {
    shared: Arc<Shared>,
    /// Closing it (or dropping the last handle) stops the transport.
    stop: async_channel::Sender<()>,
    /// Wakes the transport's executor to start the loops of added peers
    /// (one pending wake at most: the executor looks at the whole table).
    wake: async_channel::Sender<()>,
}

/// `Send + Sync + Clone` handle to the transport, usable from every core.
#[derive(Clone)]
pub struct PeerHandle {
    inner: Arc<HandleInner>,
}

/// Removes an abandoned call (its future dropped) from the pending table.
struct CallGuard<'a> {
    peer: &'a PeerShared,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        lock(&self.peer.calls).remove(&self.id);
    }
}

impl PeerHandle {
    pub fn member_id(&self) -> u64 {
        self.inner.shared.member_id
    }

    /// The addresses the listeners are bound to (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.shared.local_addrs.clone()
    }

    /// Queues raft messages of shard group `group` (`msg.to` is the
    /// destination member, `msg.from` us). Never blocks: when the peer's
    /// queue is full the message is dropped and counted, as it is while the
    /// peer is unreachable; raft retransmits. Messages to an unknown member,
    /// of a group this member does not have, or not from us are dropped and
    /// counted (`raft_dropped_unknown`).
    pub fn send_raft(&self, group: u32, msgs: Vec<Message>) {
        let s = &self.inner.shared;
        // One read of the table per batch; `try_send` does not block, so
        // holding it is short.
        let table = read(&s.table);
        for msg in msgs {
            let peer = match table.peers.get(&msg.to) {
                Some(p) if group < s.shards && msg.from == s.member_id => p,
                _ => {
                    log::debug!(
                        "peer transport: dropping raft message of group {group} from {:x} to {:x}: no such peer or group",
                        msg.from,
                        msg.to
                    );
                    s.raft_dropped_unknown.fetch_add(1, Relaxed);
                    continue;
                }
            };
            if let Err(e) = peer.queue.try_send(OutItem::Raft { group, msg }) {
                if let OutItem::Raft { msg, .. } = e.into_inner() {
                    peer.count_raft_dropped(&msg);
                }
            }
        }
    }

    /// A request to member `to`: resolves with its reply body, or an error
    /// if the peer is unreachable, the call times out (`call_timeout`), the
    /// connection breaks, the bounds are hit, or the handler answered an
    /// error ([`PeerError::Remote`]). The future is `Send` and needs no
    /// particular executor (the transport enforces the deadline).
    pub async fn call(&self, to: u64, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, PeerError> {
        let s = &self.inner.shared;
        let peer = s.peer(to)?;
        let peer = &*peer;
        let bytes =
            frame::BATCH_OVERHEAD + frame::PING_ITEM_BYTES + frame::CALL_ITEM_OVERHEAD + body.len();
        if bytes > s.frame_bytes_max {
            return Err(PeerError::TooLarge {
                bytes,
                max: s.frame_bytes_max,
            });
        }
        let id = s.next_call_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = lock(&peer.calls);
            if calls.len() >= s.calls_in_flight_max {
                return Err(PeerError::TooManyCalls {
                    member: to,
                    max: s.calls_in_flight_max,
                });
            }
            calls.insert(
                id,
                PendingCall {
                    deadline: Instant::now() + s.call_timeout,
                    reply: tx,
                    sent_on: None,
                },
            );
        }
        let _guard = CallGuard { peer, id };
        // The entry is in the table before the item is queued, and the
        // transport closes the queue before failing the table on stop or
        // removal, so every call is answered.
        match peer.queue.try_send(OutItem::Call { id, kind, body }) {
            Ok(()) => {}
            Err(async_channel::TrySendError::Full(_)) => {
                return Err(PeerError::QueueFull { member: to })
            }
            Err(async_channel::TrySendError::Closed(_)) => return Err(peer.end_error()),
        }
        rx.await.unwrap_or_else(|_| Err(peer.end_error()))
    }

    /// Adds member `id` at `addrs` (tried in turn), as etcd's `member add`
    /// does once applied: from when this returns, `send_raft` and `call`
    /// queue for it and its handshakes are welcome; its dialing starts on
    /// the transport's executor. The checks are `PeerConfig`'s (not this
    /// member, not 0, an address, https needs peer TLS with a trusted CA).
    /// An existing member with the same addresses is left alone; with
    /// other addresses they are replaced (etcd's `member update`): the
    /// connection to the old ones closes (calls written on it fail with
    /// `ConnectionLost`, queued messages and waiting calls go to the next)
    /// and the new ones are dialed at once. A removed member cannot come
    /// back ([`PeerError::Removed`]); after `stop`, [`PeerError::Stopped`].
    pub fn add_peer(&self, id: u64, addrs: Vec<PeerAddr>) -> Result<(), PeerError> {
        let s = &self.inner.shared;
        check_peer(s.member_id, s.tls.as_ref(), id, &addrs).map_err(PeerError::Config)?;
        if self.inner.stop.is_closed() {
            return Err(PeerError::Stopped);
        }
        let mut t = write(&s.table);
        // Set by the executor, under this lock, once it no longer starts
        // loops: a peer inserted before that is failed by it, after that
        // is refused here, so no call ever waits on a loop that never runs.
        if t.stopped {
            return Err(PeerError::Stopped);
        }
        if t.removed.contains(&id) {
            return Err(PeerError::Removed { member: id });
        }
        if let Some(p) = t.peers.get(&id) {
            let mut current = lock(&p.addrs);
            if *current != addrs {
                log::info!(
                    "peer transport: peer URLs of member {id:x} updated: {:?} -> {:?}",
                    current.iter().map(|a| a.addr).collect::<Vec<_>>(),
                    addrs.iter().map(|a| a.addr).collect::<Vec<_>>()
                );
                *current = addrs;
                p.notify_redial();
            }
            return Ok(());
        }
        t.peers
            .insert(id, PeerShared::new(id, addrs, s.queue_messages_max));
        drop(t);
        log::info!("peer transport: member {id:x} added");
        // Full: a wake is pending, and the executor reads the whole table.
        let _ = self.inner.wake.try_send(());
        Ok(())
    }

    /// Removes member `id` (etcd's `member remove`, once applied): its loop
    /// stops and its connections close (the one we dialed, and the one it
    /// dialed to us), the raft messages queued for it are dropped (counted
    /// in `raft_dropped_unknown`), its pending calls and later ones fail
    /// with [`PeerError::Removed`], and from now on its handshakes are
    /// refused as removed, which tells it so (see
    /// [`PeerHandle::removed_by_peer`]). Effective for `send_raft` and
    /// `call` when this returns. Removing an id that is not a peer still
    /// marks it removed.
    pub fn remove_peer(&self, id: u64) {
        if id == 0 {
            return;
        }
        let s = &self.inner.shared;
        let p = {
            let mut t = write(&s.table);
            t.removed.insert(id);
            t.peers.remove(&id)
        };
        // Outside the table lock: failing calls wakes their tasks.
        if let Some(p) = p {
            let dropped = p.remove();
            s.raft_dropped_unknown.fetch_add(dropped, Relaxed);
            log::info!(
                "peer transport: member {id:x} removed from the cluster ({dropped} queued raft messages dropped)"
            );
        }
    }

    /// The member that refused our connection because it considers this
    /// member removed from the cluster; the application should stop, as
    /// etcd does ("the member has been permanently removed from the
    /// cluster"). `None` while no member said so.
    pub fn removed_by_peer(&self) -> Option<u64> {
        let id = self.inner.shared.removed_by.load(Relaxed);
        (id != 0).then_some(id)
    }

    /// Sets the member list a joining member's [`query_members`] gets: an
    /// opaque body (the application's encoding), at most
    /// [`MEMBERS_BODY_MAX`] bytes. Until it is set, queries are refused
    /// with "membership not known yet".
    pub fn set_members(&self, body: Vec<u8>) -> Result<(), PeerError> {
        if body.len() > MEMBERS_BODY_MAX {
            return Err(PeerError::MembersTooLarge {
                bytes: body.len(),
                max: MEMBERS_BODY_MAX,
            });
        }
        *lock(&self.inner.shared.members) = Some(Arc::new(body));
        Ok(())
    }

    /// What we know of each peer, in member id order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner
            .shared
            .peers()
            .iter()
            .map(|p| {
                let l = lock(&p.learned).clone();
                PeerInfo {
                    member_id: p.id,
                    name: l.name,
                    peer_addrs: lock(&p.addrs).iter().map(|a| a.addr).collect(),
                    client_urls: l.client_urls,
                    connected: p.connected.load(Relaxed),
                }
            })
            .collect()
    }

    /// Counters of each peer, in member id order.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.inner
            .shared
            .peers()
            .iter()
            .map(|p| {
                let c = &p.c;
                let rtt = c.rtt_ns.load(Relaxed);
                PeerStats {
                    member_id: p.id,
                    connected: p.connected.load(Relaxed),
                    sent_bytes: c.sent_bytes.load(Relaxed),
                    received_bytes: c.received_bytes.load(Relaxed),
                    round_trip: (rtt > 0).then(|| Duration::from_nanos(rtt)),
                    raft_sent: c.raft_sent.load(Relaxed),
                    frames_sent: c.frames_sent.load(Relaxed),
                    raft_received: c.raft_received.load(Relaxed),
                    raft_dropped: c.raft_dropped.load(Relaxed),
                    heartbeat_send_failures: c.heartbeat_dropped.load(Relaxed),
                    raft_inbound_dropped: c.raft_inbound_dropped.load(Relaxed),
                    calls_in_flight: lock(&p.calls).len(),
                    queued: p.queue.len(),
                    connects: c.connects.load(Relaxed),
                    connect_failures: c.connect_failures.load(Relaxed),
                    last_error: lock(&p.last_error).clone(),
                }
            })
            .collect()
    }

    /// Raft messages dropped because their destination is not a peer (or
    /// their group is not one of ours), and those still queued for a
    /// member when it was removed.
    pub fn raft_dropped_unknown(&self) -> u64 {
        self.inner.shared.raft_dropped_unknown.load(Relaxed)
    }

    /// Stops the transport (as dropping the last handle does).
    pub fn stop(&self) {
        self.inner.stop.close();
    }
}

/// The running transport; [`PeerTransport::join`] waits for it to end.
/// Dropping this does not stop it (stop through the handle).
pub struct PeerTransport {
    done: async_channel::Receiver<()>,
}

impl PeerTransport {
    /// Resolves once the transport stopped and closed every socket.
    pub async fn join(self) {
        let _ = self.done.recv().await;
    }
}

/// Starts the transport on the current glommio executor (call it from
/// inside one; core 0 of the member): binds the listeners now (errors are
/// returned), then dials every peer (there may be none yet: see
/// [`PeerHandle::add_peer`]) and serves in tasks of this executor until
/// [`PeerHandle::stop`] is called or the last handle is dropped.
pub fn start(cfg: PeerConfig, inbound: Inbound) -> Result<(PeerHandle, PeerTransport), PeerError> {
    cfg.validate(&inbound)?;
    let mut listeners = Vec::new();
    let mut local_addrs = Vec::new();
    for la in &cfg.listen {
        let l = conn::listen(*la).map_err(|e| PeerError::Listen {
            addr: la.addr,
            reason: e.to_string(),
        })?;
        local_addrs.push(l.local_addr().unwrap_or(la.addr));
        listeners.push(l);
    }
    let peers = cfg
        .peers
        .iter()
        .map(|(id, addrs)| {
            (
                *id,
                PeerShared::new(*id, addrs.clone(), cfg.queue_messages_max),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        cluster_id: cfg.cluster_id,
        member_id: cfg.member_id,
        shards: cfg.shards,
        name: cfg.name,
        client_urls: cfg.client_urls,
        tls: cfg.tls,
        frame_bytes_max: cfg.frame_bytes_max,
        call_timeout: cfg.call_timeout,
        calls_in_flight_max: cfg.calls_in_flight_max,
        queue_messages_max: cfg.queue_messages_max,
        table: RwLock::new(PeerTable {
            peers,
            ..PeerTable::default()
        }),
        members: Mutex::new(None),
        removed_by: AtomicU64::new(0),
        local_addrs,
        raft_dropped_unknown: AtomicU64::new(0),
        next_call_id: AtomicU64::new(1),
    });
    let (stop_tx, stop_rx) = async_channel::bounded(1);
    let (done_tx, done_rx) = async_channel::bounded(1);
    let (wake_tx, wake_rx) = async_channel::bounded(1);
    conn::spawn(
        shared.clone(),
        inbound,
        stop_rx,
        done_tx,
        listeners,
        wake_rx,
    );
    Ok((
        PeerHandle {
            inner: Arc::new(HandleInner {
                shared,
                stop: stop_tx,
                wake: wake_tx,
            }),
        },
        PeerTransport { done: done_rx },
    ))
}

/// Asks the member at `addr` for the cluster's member list, as a member
/// joining an existing cluster does before it has a member id (etcd's
/// `--initial-cluster-state existing`): a MEMBERS_QUERY with this member's
/// shard count, answered by the cluster id and the body the application
/// set there with [`PeerHandle::set_members`]. Blocking (std sockets, no
/// executor needed), bounded by `timeout` as a whole (connect, TLS,
/// exchange). An `https` address needs `tls` with a trusted CA (the
/// dialer's configuration: our certificate, the peer's verified for the
/// URL's host). The error names the address and says why: refused (with
/// the member's reason, e.g. another shard count or "membership not known
/// yet"), unreachable, timed out, or not a ferrokv peer.
pub fn query_members(
    addr: &PeerAddr,
    tls: Option<&PeerTls>,
    shards: u32,
    timeout: Duration,
) -> Result<(u64, Vec<u8>), String> {
    conn::query_members(addr, tls, shards, timeout)
        .map_err(|e| format!("member list query to {}: {e}", addr.addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn add_peer_checks_are_the_configurations() {
        let a: PeerAddr = "127.0.0.1:2380".parse::<SocketAddr>().unwrap().into();
        let https = PeerAddr {
            addr: a.addr,
            tls_name: Some("127.0.0.1".into()),
        };
        let bad_name = PeerAddr {
            addr: a.addr,
            tls_name: Some("not a name!".into()),
        };
        let check = |id, addrs: &[PeerAddr]| check_peer(1, None, id, addrs);
        assert!(check(2, std::slice::from_ref(&a)).is_ok());
        assert!(check(1, std::slice::from_ref(&a))
            .unwrap_err()
            .contains("its own peers"));
        assert!(check(0, std::slice::from_ref(&a))
            .unwrap_err()
            .contains("\"none\""));
        assert!(check(2, &[]).unwrap_err().contains("no address"));
        assert!(check(2, &[a.clone(), https])
            .unwrap_err()
            .contains("is https: no peer TLS"));
        // The same through `validate`, which `start` runs.
        let mut c = PeerConfig::new(7, 1, 1);
        c.peers.insert(2, vec![bad_name]);
        let (tx, _rx) = async_channel::bounded(1);
        let (ctx, _crx) = async_channel::bounded(1);
        let inbound = Inbound {
            groups: vec![tx],
            calls: ctx,
        };
        assert!(
            matches!(c.validate(&inbound), Err(PeerError::Config(e)) if e.contains("is https"))
        );
        c.peers.clear();
        assert!(c.validate(&inbound).is_ok(), "no peers is a valid start");
    }

    #[test]
    fn handle_is_send_sync_clone_and_call_is_send() {
        assert_send_sync_clone::<PeerHandle>();
        // Type-level only: the future is built, never polled.
        fn check(h: &PeerHandle) {
            let f = h.call(2, 0, Vec::new());
            assert_send(&f);
        }
        let _ = check;
    }
}
