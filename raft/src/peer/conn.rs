//! The transport's tasks on its glommio executor: accepting, dialing,
//! handshakes, and the reader and writer of each connection. Everything
//! past the socket edges (`dial_addr`, `serve_inbound`, where TLS wraps the
//! socket) is generic over the stream.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::future::or;
use futures_lite::io::{split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use raft::eraftpb::Message;

use super::frame::{
    self, decode_frame, decode_payload, FrameBuf, Hello, Item, Payload, Welcome, BATCH_OVERHEAD,
    CALL_ITEM_OVERHEAD, HANDSHAKE_BYTES_MAX, HEADER_BYTES, PING_ITEM_BYTES, REPLY_ITEM_OVERHEAD,
};
use super::shared::{lock, read, write, Learned, OutItem, PeerShared, Shared};
use super::tls::{server_name, Stream};
use super::{IncomingCall, ListenAddr, PeerAddr, PeerError, PeerTls};

/// Bound on one TCP connect.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the whole handshake, either side.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Accepted connections that have not finished their handshake.
pub(crate) const HANDSHAKES_PENDING_MAX: usize = 32;
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A connection on which no frame arrives for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Pause after a failed accept (EMFILE and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Buffers grown by one large frame are shrunk back to this when empty.
const BUFFER_KEEP_BYTES: usize = 256 * 1024;
/// Error texts on the wire are cut to this.
const ERROR_TEXT_BYTES_MAX: usize = 4096;
/// Control items (pongs, error replies) that may wait, beyond one reply per
/// inbound call in flight, before the peer is judged not to read.
const CONTROL_SLACK: usize = 64;

/// The time left until `deadline` (zero once it passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Resolves to `None` if `f` does not finish within `d`.
async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    or(async { Some(f.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

/// A bound peer listener and its descriptor (glommio's listener does not
/// lend it out), needed to shut it down cleanly.
pub(crate) struct Listener {
    inner: glommio::net::TcpListener,
    fd: std::os::fd::RawFd,
    /// TLS on every connection accepted here (an https URL).
    tls: bool,
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

/// Binds a peer listener. SO_REUSEADDR lets a restarted member rebind while
/// old connections sit in TIME_WAIT; no SO_REUSEPORT, so a second process
/// on the same peer port fails instead of stealing half the connections.
pub(crate) fn listen(la: ListenAddr) -> std::io::Result<Listener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    let addr = la.addr;
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    let fd = sk.as_raw_fd();
    // SAFETY: the descriptor is a listening TCP socket we own and hand over.
    let inner = unsafe { glommio::net::TcpListener::from_raw_fd(sk.into_raw_fd()) };
    Ok(Listener {
        inner,
        fd,
        tls: la.tls,
    })
}

/// State of the transport on its executor.
pub(crate) struct Local {
    shared: Arc<Shared>,
    groups: Vec<async_channel::Sender<Message>>,
    calls: async_channel::Sender<IncomingCall>,
    epoch: Instant,
    stop: async_channel::Receiver<()>,
    /// Closed when the last task holding `Local` ends: `join` returns.
    _done: async_channel::Sender<()>,
    handshakes_pending: Cell<usize>,
    /// The accepted connection of each peer: its token and its closer.
    inbound: RefCell<HashMap<u64, (u64, async_channel::Sender<()>)>>,
    next_token: Cell<u64>,
}

impl Local {
    async fn stopped(&self) {
        let _ = self.stop.recv().await;
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The peer a HELLO comes from, or why it is refused.
    fn check_hello(&self, h: &Hello) -> Result<Arc<PeerShared>, Refusal> {
        let s = &self.shared;
        let no = |reason: String| Err(Refusal::No(reason));
        if h.cluster_id != s.cluster_id {
            return no(format!(
                "request cluster ID mismatch (got {:x} want {:x})",
                h.cluster_id, s.cluster_id
            ));
        }
        if h.to != s.member_id {
            return no(format!(
                "request is for member {:x}, this is member {:x}",
                h.to, s.member_id
            ));
        }
        let p = {
            let t = read(&s.table);
            match t.peers.get(&h.from) {
                Some(p) => p.clone(),
                // After the cluster id check: only a member of this
                // cluster is told it was removed from it.
                None if t.removed.contains(&h.from) => {
                    return Err(Refusal::Removed(format!(
                        "member {:x} has been permanently removed from the cluster",
                        h.from
                    )))
                }
                None => {
                    return no(format!(
                        "member {:x} is not a member of this cluster (unknown member)",
                        h.from
                    ))
                }
            }
        };
        if h.shards != s.shards {
            return no(format!(
                "peer {:x} has --shards {}, this member has {}; a cluster has one shard count",
                h.from, h.shards, s.shards
            ));
        }
        Ok(p)
    }

    fn check_welcome(&self, p: &PeerShared, w: &Welcome) -> Result<(), String> {
        let s = &self.shared;
        if w.cluster_id != s.cluster_id {
            return Err(format!(
                "cluster ID mismatch (got {:x} want {:x})",
                w.cluster_id, s.cluster_id
            ));
        }
        if w.member_id != p.id {
            return Err(format!(
                "the member at that address is {:x}, not {:x}",
                w.member_id, p.id
            ));
        }
        if w.shards != s.shards {
            return Err(format!(
                "peer {:x} has --shards {}, this member has {}; a cluster has one shard count",
                p.id, w.shards, s.shards
            ));
        }
        Ok(())
    }
}

/// Why a HELLO is refused.
enum Refusal {
    /// Answered with REFUSED and the reason.
    No(String),
    /// The dialer was removed from the cluster: answered with REMOVED.
    Removed(String),
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    inbound: super::Inbound,
    stop: async_channel::Receiver<()>,
    done: async_channel::Sender<()>,
    listeners: Vec<Listener>,
    wake: async_channel::Receiver<()>,
) {
    let t = Rc::new(Local {
        shared,
        groups: inbound.groups,
        calls: inbound.calls,
        epoch: Instant::now(),
        stop,
        _done: done,
        handshakes_pending: Cell::new(0),
        inbound: RefCell::new(HashMap::new()),
        next_token: Cell::new(0),
    });
    for l in listeners {
        glommio::spawn_local(accept_loop(t.clone(), l)).detach();
    }
    glommio::spawn_local(start_peers(t, wake)).detach();
}

/// Starts the loop of every peer in the table that has none: those of the
/// configuration at once, those added later (`add_peer`) when woken. On
/// stop, fails the calls of peers whose loop never started, and closes the
/// table to additions.
async fn start_peers(t: Rc<Local>, wake: async_channel::Receiver<()>) {
    let serve = async {
        loop {
            let new: Vec<Arc<PeerShared>> = read(&t.shared.table)
                .peers
                .values()
                .filter(|p| !p.started.swap(true, Relaxed))
                .cloned()
                .collect();
            for p in new {
                glommio::spawn_local(peer_loop(t.clone(), p)).detach();
            }
            if wake.recv().await.is_err() {
                // Every handle is gone: the stop below follows.
                futures_lite::future::pending::<()>().await
            }
        }
    };
    or(t.stopped(), serve).await;
    let unstarted: Vec<Arc<PeerShared>> = {
        let mut table = write(&t.shared.table);
        table.stopped = true;
        table
            .peers
            .values()
            .filter(|p| !p.started.swap(true, Relaxed))
            .cloned()
            .collect()
    };
    for p in unstarted {
        p.finish();
    }
}

/// Reads whole frames off a stream into one reusable buffer.
pub(crate) struct FrameReader<R> {
    r: R,
    /// `buf[start..end]` holds bytes read and not yet returned.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R, max: usize) -> Self {
        FrameReader {
            r,
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// The payload of the next frame; `Err` with a reason when the stream
    /// ends (cleanly or inside a frame), fails, or the frame is bad.
    pub async fn next(&mut self) -> Result<&[u8], String> {
        loop {
            let avail = &self.buf[self.start..self.end];
            match decode_frame(avail, self.max) {
                Ok(Some((payload, used))) => {
                    let from = self.start + HEADER_BYTES;
                    let to = from + payload.len();
                    self.start += used;
                    return Ok(&self.buf[from..to]);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let need = if avail.len() >= HEADER_BYTES {
                HEADER_BYTES + u32::from_le_bytes(avail[0..4].try_into().expect("4")) as usize
            } else {
                HEADER_BYTES
            };
            // Move the partial frame to the front (at most one frame).
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == 0 && self.buf.len() > BUFFER_KEEP_BYTES {
                self.buf = Vec::new();
            }
            let target = need.max(self.end + READ_CHUNK_BYTES);
            if self.buf.len() < target {
                self.buf.resize(target, 0);
            }
            let n = match self.r.read(&mut self.buf[self.end..]).await {
                Ok(n) => n,
                // A TLS stream closed without close_notify. Frames carry
                // their length and checksum, so this is the end of the
                // stream like any other (a cut frame is still noticed).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(format!("read failed: {e}")),
            };
            if n == 0 {
                return Err(match frame::check_eof(&self.buf[..self.end], self.max) {
                    Ok(()) => "connection closed by the peer".to_string(),
                    Err(e) => e.to_string(),
                });
            }
            self.end += n;
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The unread bytes start like a TLS record (an alert or a handshake,
    /// TLS 1.x): a plain dialer reached a TLS listener.
    fn looks_like_tls(&self) -> bool {
        matches!(self.buf[self.start..self.end], [0x15 | 0x16, 0x03, ..])
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(frame).await?;
    // A no-op on TCP; TLS streams buffer.
    w.flush().await
}

fn cut_text(s: &str) -> &str {
    let mut end = s.len().min(ERROR_TEXT_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------- accepting

async fn accept_loop(t: Rc<Local>, l: Listener) {
    let at = l
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".to_string());
    let stopping = Cell::new(false);
    let work = async {
        loop {
            match l.inner.accept().await {
                Ok(_) if stopping.get() => return,
                Ok(s) => {
                    let remote = s
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| "?".to_string());
                    if t.handshakes_pending.get() >= HANDSHAKES_PENDING_MAX {
                        log::warn!(
                            "peer transport: closing connection from {remote}: {HANDSHAKES_PENDING_MAX} connections are already in handshake"
                        );
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    t.handshakes_pending.set(t.handshakes_pending.get() + 1);
                    glommio::spawn_local(serve_inbound(t.clone(), s, remote, l.tls)).detach();
                }
                Err(_) if stopping.get() => return,
                Err(e) => {
                    log::warn!("peer transport: accept on {at} failed: {e}");
                    glommio::timer::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    };
    // On stop, shut the socket down rather than drop a pending accept: a
    // dropped io_uring accept keeps the socket listening until the ring
    // processes its cancellation, which may be after the executor ended,
    // and the port could not be bound again at once. Shutdown ends the
    // accept with an error; the fallback bounds the wait regardless.
    let on_stop = async {
        t.stopped().await;
        stopping.set(true);
        // SAFETY: `l` owns the descriptor and outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(l.fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        glommio::timer::sleep(Duration::from_secs(1)).await;
    };
    or(work, on_stop).await;
}

/// Decrements the handshake count once, however the handshake ends.
struct HandshakeSlot<'a>(&'a Local, bool);

impl HandshakeSlot<'_> {
    fn release(&mut self) {
        if self.1 {
            self.1 = false;
            self.0
                .handshakes_pending
                .set(self.0.handshakes_pending.get() - 1);
        }
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

enum Control {
    Reply { id: u64, r: Result<Vec<u8>, String> },
    Pong(u64),
}

fn control_bytes(c: &Control) -> usize {
    match c {
        Control::Reply { r: Ok(b), .. } => REPLY_ITEM_OVERHEAD + b.len(),
        Control::Reply { r: Err(e), .. } => REPLY_ITEM_OVERHEAD + cut_text(e).len(),
        Control::Pong(_) => PING_ITEM_BYTES,
    }
}

fn put_control(fb: &mut FrameBuf, c: &Control) {
    match c {
        Control::Reply { id, r: Ok(b) } => fb.put_reply(*id, Ok(b)),
        Control::Reply { id, r: Err(e) } => fb.put_reply(*id, Err(cut_text(e))),
        Control::Pong(n) => fb.put_pong(*n),
    }
}

/// One accepted connection: handshake (TLS first on a TLS listener), then
/// serve until it breaks, a newer connection of the same member replaces
/// it, or the transport stops.
pub(crate) async fn serve_inbound(
    t: Rc<Local>,
    tcp: glommio::net::TcpStream,
    remote: String,
    tls: bool,
) {
    let mut slot = HandshakeSlot(&t, true);
    // One bound for the whole handshake, TLS and HELLO together.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let stream = match (tls, &t.shared.tls) {
        (false, _) => Stream::Tcp(tcp),
        (true, Some(config)) => {
            let accepted = or(
                async { within(left(deadline), config.accept(tcp)).await },
                async {
                    t.stopped().await;
                    None
                },
            )
            .await;
            match accepted {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    log::warn!("peer transport: rejected connection from {remote}: {e}");
                    return;
                }
                None => {
                    log::debug!("peer transport: no TLS handshake from {remote}; closing");
                    return;
                }
            }
        }
        (true, None) => {
            // `validate` refuses a TLS listener without a TLS config.
            log::warn!("peer transport: closing connection from {remote}: no peer TLS configured");
            return;
        }
    };
    let (r, mut w) = split(stream);
    let mut reader = FrameReader::new(r, HANDSHAKE_BYTES_MAX);
    let mut fb = FrameBuf::new();
    let hello = match or(
        async { within(left(deadline), reader.next()).await },
        async {
            t.stopped().await;
            None
        },
    )
    .await
    {
        None => {
            log::debug!("peer transport: no handshake from {remote}; closing");
            return;
        }
        Some(Err(e)) => {
            let hint = if reader.looks_like_tls() {
                " (a TLS handshake: the peer dials this member's peer URL as https)"
            } else {
                ""
            };
            log::warn!(
                "peer transport: closing connection from {remote} before its handshake: {e}{hint}"
            );
            return;
        }
        Some(Ok(payload)) => match decode_payload(payload) {
            Ok(Payload::Hello(h)) => Ok(h),
            Ok(Payload::MembersQuery { shards }) => {
                answer_members_query(&t, &mut w, &remote, shards, deadline).await;
                return;
            }
            Ok(_) => Err("the first frame is not a handshake".to_string()),
            // A version mismatch included: refused with the reason.
            Err(e) => Err(e.to_string()),
        },
    };
    let s = &t.shared;
    let checked = match hello {
        Ok(h) => t.check_hello(&h).map(|p| (h, p)),
        Err(reason) => Err(Refusal::No(reason)),
    };
    let (hello, p) = match checked {
        Ok(hp) => hp,
        Err(Refusal::No(reason)) => {
            log::warn!("peer transport: refused connection from {remote}: {reason}");
            let _ = within(left(deadline), write_frame(&mut w, fb.refused(&reason))).await;
            return;
        }
        Err(Refusal::Removed(reason)) => {
            log::warn!("peer transport: refused connection from {remote}: {reason}");
            let frame = fb.removed(s.cluster_id, s.member_id, &reason);
            let _ = within(left(deadline), write_frame(&mut w, frame)).await;
            return;
        }
    };
    let welcome = Welcome {
        cluster_id: s.cluster_id,
        member_id: s.member_id,
        shards: s.shards,
        name: s.name.clone(),
        client_urls: s.client_urls.clone(),
    };
    match within(left(deadline), write_frame(&mut w, fb.welcome(&welcome))).await {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            log::warn!("peer transport: handshake with {remote} failed: {e}");
            return;
        }
        None => {
            log::warn!("peer transport: handshake with {remote} timed out");
            return;
        }
    }
    slot.release();
    drop(slot);
    *lock(&p.learned) = Learned {
        name: hello.name.clone(),
        client_urls: hello.client_urls.clone(),
    };
    reader.set_max(s.frame_bytes_max);

    let (close_tx, close_rx) = async_channel::bounded::<()>(1);
    let token = t.next_token.get();
    t.next_token.set(token + 1);
    if let Some((_, older)) = t.inbound.borrow_mut().insert(p.id, (token, close_tx)) {
        older.close();
    }
    log::info!(
        "peer transport: member {:x} ({}) connected from {remote}",
        p.id,
        hello.name
    );
    let (ctl_tx, ctl_rx) = async_channel::bounded::<Control>(s.calls_in_flight_max + CONTROL_SLACK);
    let reason = or(
        or(
            read_inbound(&t, &p, &mut reader, ctl_tx),
            write_control(&p, &mut w, ctl_rx, s.frame_bytes_max),
        ),
        or(
            async {
                let _ = close_rx.recv().await;
                "replaced by a newer connection from the same member".to_string()
            },
            or(
                async {
                    t.stopped().await;
                    "transport stopped".to_string()
                },
                // Also when it was removed between its check and here.
                async {
                    p.halted().await;
                    "the member was removed from the cluster".to_string()
                },
            ),
        ),
    )
    .await;
    {
        let mut conns = t.inbound.borrow_mut();
        if conns.get(&p.id).is_some_and(|(tok, _)| *tok == token) {
            conns.remove(&p.id);
        }
    }
    log::info!(
        "peer transport: connection from member {:x} closed: {reason}",
        p.id
    );
}

/// The acceptor's side of a MEMBERS_QUERY (within the handshake's bounds,
/// still holding its slot): MEMBERS with the body the application set, or
/// REFUSED; then the connection closes.
async fn answer_members_query<W: AsyncWrite + Unpin>(
    t: &Local,
    w: &mut W,
    remote: &str,
    shards: u32,
    deadline: Instant,
) {
    let s = &t.shared;
    let mut fb = FrameBuf::new();
    let body = if shards != s.shards {
        Err(format!(
            "peer at {remote} has --shards {shards}, this member has {}; a cluster has one shard count",
            s.shards
        ))
    } else {
        lock(&s.members)
            .clone()
            .ok_or_else(|| "membership not known yet".to_string())
    };
    let frame = match &body {
        Ok(body) => fb.members(s.cluster_id, body),
        Err(reason) => {
            log::warn!(
                "peer transport: refused connection from {remote} (a member list query): {reason}"
            );
            fb.refused(reason)
        }
    };
    match within(left(deadline), write_frame(w, frame)).await {
        Some(Ok(())) => {
            if body.is_ok() {
                log::info!("peer transport: sent the member list to {remote}");
            }
            // A clean end (TLS: close_notify), so the answer is read whole.
            let _ = within(left(deadline), w.close()).await;
        }
        Some(Err(e)) => {
            log::warn!("peer transport: answering {remote}'s member list query failed: {e}")
        }
        None => log::warn!("peer transport: answering {remote}'s member list query timed out"),
    }
}

/// Reads the dialer's frames: raft messages to their groups, calls to the
/// handler, pings answered. Returns why the connection ends.
async fn read_inbound<R: AsyncRead + Unpin>(
    t: &Local,
    p: &Arc<PeerShared>,
    reader: &mut FrameReader<R>,
    ctl: async_channel::Sender<Control>,
) -> String {
    let s = &t.shared;
    let in_flight = Rc::new(Cell::new(0usize));
    loop {
        let payload = match within(IDLE_TIMEOUT, reader.next()).await {
            None => return format!("nothing received for {IDLE_TIMEOUT:?}"),
            Some(Err(e)) => {
                if !e.starts_with("connection closed") {
                    log::warn!(
                        "peer transport: closing connection from member {:x}: {e}",
                        p.id
                    );
                }
                return e;
            }
            Some(Ok(b)) => b,
        };
        let items = match batch_of(p, payload) {
            Ok(items) => items,
            Err(e) => return e,
        };
        for item in items {
            match item {
                Err(e) => return protocol_error(p.id, &e.to_string()),
                Ok(Item::Raft { group, msg }) => {
                    let Some(tx) = t.groups.get(group as usize) else {
                        return protocol_error(
                            p.id,
                            &format!(
                                "raft message for group {group}; this member has {} groups",
                                t.groups.len()
                            ),
                        );
                    };
                    let msg = match frame::parse_raft(msg) {
                        Ok(m) => m,
                        Err(e) => return protocol_error(p.id, &e.to_string()),
                    };
                    p.c.raft_received.fetch_add(1, Relaxed);
                    if msg.from != p.id || msg.to != s.member_id {
                        log::debug!(
                            "peer transport: dropping raft message from {:x} to {:x} that came from member {:x}",
                            msg.from,
                            msg.to,
                            p.id
                        );
                        p.c.raft_inbound_dropped.fetch_add(1, Relaxed);
                    } else if tx.try_send(msg).is_err() {
                        p.c.raft_inbound_dropped.fetch_add(1, Relaxed);
                    }
                }
                Ok(Item::Call { id, kind, body }) => {
                    if in_flight.get() >= s.calls_in_flight_max {
                        let r = Err(format!(
                            "peer transport: {} calls from member {:x} are already in flight",
                            s.calls_in_flight_max, p.id
                        ));
                        if ctl.try_send(Control::Reply { id, r }).is_err() {
                            return protocol_error(p.id, "the peer does not read its replies");
                        }
                        continue;
                    }
                    in_flight.set(in_flight.get() + 1);
                    glommio::spawn_local(answer_call(
                        t.calls.clone(),
                        ctl.clone(),
                        in_flight.clone(),
                        p.id,
                        s.call_timeout,
                        s.frame_bytes_max,
                        id,
                        kind,
                        body.to_vec(),
                    ))
                    .detach();
                }
                Ok(Item::Ping(n)) => {
                    if ctl.try_send(Control::Pong(n)).is_err() {
                        return protocol_error(p.id, "the peer does not read its pongs");
                    }
                }
                Ok(Item::Reply { .. }) | Ok(Item::Pong(_)) => {
                    return protocol_error(p.id, "a reply item on a connection it dialed")
                }
            }
        }
    }
}

fn protocol_error(member: u64, what: &str) -> String {
    log::warn!("peer transport: closing connection with member {member:x}: {what}");
    what.to_string()
}

/// Hands one call to the handler and queues its answer (an error if there
/// is no handler; nothing if it does not answer within `call_timeout`).
#[allow(clippy::too_many_arguments)]
async fn answer_call(
    calls: async_channel::Sender<IncomingCall>,
    ctl: async_channel::Sender<Control>,
    in_flight: Rc<Cell<usize>>,
    from: u64,
    call_timeout: Duration,
    frame_bytes_max: usize,
    id: u64,
    kind: u8,
    body: Vec<u8>,
) {
    let (tx, rx) = oneshot::channel();
    let call = IncomingCall {
        from,
        kind,
        body,
        reply: tx,
    };
    // Waiting for room in the handler's queue is this task's alone (the
    // reader goes on), and bounded by the call's timeout like the answer.
    let handled = within(call_timeout, async {
        if calls.send(call).await.is_err() {
            return Err("peer transport: this member takes no calls".to_string());
        }
        rx.await
            .unwrap_or_else(|_| Err("peer transport: the call's handler dropped it".to_string()))
    })
    .await;
    let Some(r) = handled else {
        // No reply: the caller's own deadline answers it with a timeout
        // (an error reply here would race with that and say less).
        log::debug!(
            "peer transport: a call from member {from:x} was not answered within {call_timeout:?}"
        );
        in_flight.set(in_flight.get() - 1);
        return;
    };
    let r = match r {
        Ok(b) if BATCH_OVERHEAD + REPLY_ITEM_OVERHEAD + b.len() > frame_bytes_max => Err(format!(
            "peer transport: a reply of {} bytes exceeds the frame limit of {frame_bytes_max} bytes",
            b.len()
        )),
        r => r,
    };
    let _ = ctl.send(Control::Reply { id, r }).await;
    in_flight.set(in_flight.get() - 1);
}

/// Writes replies and pongs, as many per frame as fit.
async fn write_control<W: AsyncWrite + Unpin>(
    p: &PeerShared,
    w: &mut W,
    rx: async_channel::Receiver<Control>,
    frame_bytes_max: usize,
) -> String {
    let mut fb = FrameBuf::new();
    let mut carry = None;
    loop {
        let first = match carry.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Ok(c) => c,
                Err(_) => return "reader ended".to_string(),
            },
        };
        fb.begin_batch();
        put_control(&mut fb, &first);
        while let Ok(c) = rx.try_recv() {
            if fb.len() + control_bytes(&c) > frame_bytes_max {
                carry = Some(c);
                break;
            }
            put_control(&mut fb, &c);
        }
        let frame = fb.finish();
        let n = frame.len();
        if let Err(e) = write_frame(w, frame).await {
            return format!("write failed: {e}");
        }
        p.c.sent_bytes.fetch_add(n as u64, Relaxed);
        fb.shrink(BUFFER_KEEP_BYTES);
    }
}

// ------------------------------------------------------------------ dialing

/// Reconnect delays: `BACKOFF_MIN` doubling to `BACKOFF_MAX`, each a random
/// 50-100 % of the step.
pub(crate) struct Backoff {
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Self {
        Backoff {
            step: BACKOFF_MIN,
            rng: seed,
        }
    }

    pub fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }

    pub fn next_delay(&mut self) -> Duration {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let step = self.step;
        self.step = (step * 2).min(BACKOFF_MAX);
        let half = step.as_nanos() as u64 / 2;
        Duration::from_nanos(half + z % (half + 1))
    }
}

type Dialed<S> = (
    FrameReader<futures_lite::io::ReadHalf<S>>,
    futures_lite::io::WriteHalf<S>,
    Welcome,
);

/// Our side of the handshake on a fresh stream.
pub(crate) async fn handshake_dial<S>(
    t: &Local,
    p: &PeerShared,
    stream: S,
) -> Result<Dialed<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (r, mut w) = split(stream);
    let mut reader = FrameReader::new(r, HANDSHAKE_BYTES_MAX);
    let mut fb = FrameBuf::new();
    let s = &t.shared;
    let hello = Hello {
        cluster_id: s.cluster_id,
        from: s.member_id,
        to: p.id,
        shards: s.shards,
        name: s.name.clone(),
        client_urls: s.client_urls.clone(),
    };
    let exchange = async {
        write_frame(&mut w, fb.hello(&hello))
            .await
            .map_err(|e| format!("handshake write failed: {e}"))?;
        let payload = reader.next().await?;
        match decode_payload(payload).map_err(|e| e.to_string())? {
            Payload::Welcome(w) => Ok(w),
            Payload::Refused(reason) => Err(format!("refused our connection: {reason}")),
            Payload::Removed {
                cluster_id,
                member_id,
                reason,
            } => {
                // Only the member we meant, of our cluster, can tell us we
                // were removed from it (over TLS, authenticated).
                if cluster_id == s.cluster_id
                    && member_id == p.id
                    && s.removed_by
                        .compare_exchange(0, p.id, Relaxed, Relaxed)
                        .is_ok()
                {
                    log::error!(
                        "peer transport: member {:x} says this member has been permanently removed from the cluster",
                        p.id
                    );
                }
                Err(format!("refused our connection: {reason}"))
            }
            _ => Err("answered the handshake with another frame".to_string()),
        }
    };
    let welcome = within(HANDSHAKE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|| Err(format!("no handshake answer within {HANDSHAKE_TIMEOUT:?}")))
        .map_err(|e| {
            if reader.looks_like_tls() {
                format!("{e} (the peer answered with TLS: its peer URL is https)")
            } else {
                e
            }
        })?;
    t.check_welcome(p, &welcome)?;
    reader.set_max(s.frame_bytes_max);
    Ok((reader, w, welcome))
}

async fn dial_addr(t: &Local, p: &PeerShared, addr: &PeerAddr) -> Result<Dialed<Stream>, String> {
    let tcp = glommio::net::TcpStream::connect_timeout(addr.addr, DIAL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let stream = match (&addr.tls_name, &t.shared.tls) {
        (None, _) => Stream::Tcp(tcp),
        (Some(name), Some(config)) => {
            let name = server_name(name)?;
            within(HANDSHAKE_TIMEOUT, config.connect(name, tcp))
                .await
                .unwrap_or_else(|| Err(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")))?
        }
        // `validate` refuses a TLS peer without a TLS config.
        (Some(_), None) => return Err("https peer, but no peer TLS configured".to_string()),
    };
    handshake_dial(t, p, stream).await
}

/// One round over the peer's addresses, starting with the last that worked.
/// The addresses are read afresh each round (a member update changes them).
async fn dial(t: &Local, p: &PeerShared, first: &mut usize) -> Result<Dialed<Stream>, String> {
    let addrs = lock(&p.addrs).clone();
    let n = addrs.len();
    let mut errors = Vec::new();
    for i in 0..n {
        let k = (*first + i) % n;
        match dial_addr(t, p, &addrs[k]).await {
            Ok(d) => {
                *first = k;
                return Ok(d);
            }
            Err(e) => errors.push(format!("{}: {e}", addrs[k].addr)),
        }
    }
    Err(errors.join("; "))
}

/// While no connection is up: raft messages are dropped (and counted),
/// calls wait for the next connection. Runs until cancelled.
async fn drain_disconnected(
    t: &Local,
    p: &PeerShared,
    rx: &async_channel::Receiver<OutItem>,
    waiting: &mut VecDeque<OutItem>,
) {
    while let Ok(item) = rx.recv().await {
        match item {
            OutItem::Raft { msg, .. } => p.count_raft_dropped(&msg),
            OutItem::Call { id, .. } => {
                if waiting.len() >= t.shared.calls_in_flight_max {
                    // Calls that expired meanwhile leave stale entries.
                    waiting.retain(|c| matches!(c, OutItem::Call { id, .. } if p.is_pending(*id)));
                }
                if p.is_pending(id) {
                    waiting.push_back(item);
                }
            }
        }
    }
    futures_lite::future::pending::<()>().await
}

/// Fails calls whose deadline passed, wherever they are.
async fn sweep_calls(t: &Local, p: &PeerShared) {
    let every =
        (t.shared.call_timeout / 10).clamp(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        glommio::timer::sleep(every).await;
        p.expire_calls(Instant::now(), t.shared.call_timeout);
    }
}

/// How a dial round ended.
enum DialEnd {
    Up(Dialed<Stream>),
    Failed(String),
    /// The peer's addresses changed meanwhile: dial the new ones now.
    Redial,
}

/// Everything for one peer: dial, carry its queue, reconnect (at once when
/// its addresses change), until the transport stops or the peer is removed.
async fn peer_loop(t: Rc<Local>, p: Arc<PeerShared>) {
    let rx = &p.rx;
    let seed = t.shared.member_id.rotate_left(32) ^ p.id ^ 0x6665_7272_6f6b_7600;
    let main = async {
        let mut backoff = Backoff::new(seed);
        let mut waiting: VecDeque<OutItem> = VecDeque::new();
        let mut carry: Option<OutItem> = None;
        let mut first_addr = 0usize;
        let mut generation = 0u64;
        let mut logged: Option<String> = None;
        // Raft messages of a frame being written, lost if the write is not
        // finished.
        let unsent = Cell::new(0u64);
        let redial = || async {
            p.redialed().await;
            log::info!(
                "peer transport: redialing member {:x} at its new peer URLs",
                p.id
            );
        };
        loop {
            let dialed = or(
                or(
                    async {
                        // Never ends (it pends once the queue closes, and
                        // then the loop is being stopped anyway).
                        drain_disconnected(&t, &p, rx, &mut waiting).await;
                        DialEnd::Redial
                    },
                    async {
                        redial().await;
                        DialEnd::Redial
                    },
                ),
                async {
                    match dial(&t, &p, &mut first_addr).await {
                        Ok(d) => DialEnd::Up(d),
                        Err(e) => DialEnd::Failed(e),
                    }
                },
            )
            .await;
            let mut urls_changed = false;
            match dialed {
                DialEnd::Up((reader, mut w, welcome)) => {
                    generation += 1;
                    *lock(&p.learned) = Learned {
                        name: welcome.name.clone(),
                        client_urls: welcome.client_urls.clone(),
                    };
                    p.set_error(None);
                    p.connected.store(true, Relaxed);
                    p.c.connects.fetch_add(1, Relaxed);
                    backoff.reset();
                    logged = None;
                    log::info!(
                        "peer transport: connected to member {:x} ({})",
                        p.id,
                        welcome.name
                    );
                    let mut reader = reader;
                    let reason = or(
                        or(
                            read_dialed(&t, &p, &mut reader),
                            write_dialed(
                                &t,
                                &p,
                                &mut w,
                                Queue {
                                    rx,
                                    waiting: &mut waiting,
                                    carry: &mut carry,
                                    unsent: &unsent,
                                },
                                generation,
                            ),
                        ),
                        async {
                            redial().await;
                            urls_changed = true;
                            "its peer URLs were updated".to_string()
                        },
                    )
                    .await;
                    p.connected.store(false, Relaxed);
                    p.c.raft_dropped.fetch_add(unsent.replace(0), Relaxed);
                    p.fail_sent_on(generation, &reason);
                    match carry.take() {
                        Some(OutItem::Raft { msg, .. }) => p.count_raft_dropped(&msg),
                        Some(call) => waiting.push_front(call),
                        None => {}
                    }
                    log::warn!(
                        "peer transport: connection to member {:x} lost: {reason}",
                        p.id
                    );
                    p.set_error(Some(format!("connection lost: {reason}")));
                }
                DialEnd::Failed(e) => {
                    p.c.connect_failures.fetch_add(1, Relaxed);
                    if logged.as_deref() != Some(e.as_str()) {
                        log::warn!("peer transport: cannot reach member {:x}: {e}", p.id);
                        logged = Some(e.clone());
                    } else {
                        log::debug!("peer transport: cannot reach member {:x}: {e}", p.id);
                    }
                    p.set_error(Some(e));
                }
                DialEnd::Redial => urls_changed = true,
            }
            if !urls_changed {
                let delay = backoff.next_delay();
                urls_changed = or(
                    async {
                        drain_disconnected(&t, &p, rx, &mut waiting).await;
                        false
                    },
                    or(
                        async {
                            glommio::timer::sleep(delay).await;
                            false
                        },
                        async {
                            redial().await;
                            true
                        },
                    ),
                )
                .await;
            }
            if urls_changed {
                // New addresses: from the first, without waiting.
                first_addr = 0;
                backoff.reset();
                logged = None;
            }
        }
    };
    // Stop and removal first: once either is signalled, nothing else of
    // the loop runs.
    or(or(t.stopped(), p.halted()), or(main, sweep_calls(&t, &p))).await;
    p.finish();
}

/// Reads what the peer we dialed sends back: replies and pongs.
/// A frame read after the handshake, counted: its batch of items, or the
/// reason to close the connection.
fn batch_of<'a>(p: &PeerShared, payload: &'a [u8]) -> Result<super::frame::Items<'a>, String> {
    p.c.received_bytes
        .fetch_add((HEADER_BYTES + payload.len()) as u64, Relaxed);
    match decode_payload(payload) {
        Ok(Payload::Batch(items)) => Ok(items),
        Ok(_) => Err(protocol_error(
            p.id,
            "a handshake frame after the handshake",
        )),
        Err(e) => Err(protocol_error(p.id, &e.to_string())),
    }
}

async fn read_dialed<R: AsyncRead + Unpin>(
    t: &Local,
    p: &PeerShared,
    reader: &mut FrameReader<R>,
) -> String {
    loop {
        let payload = match within(IDLE_TIMEOUT, reader.next()).await {
            None => return format!("nothing received for {IDLE_TIMEOUT:?}"),
            Some(Err(e)) => return e,
            Some(Ok(b)) => b,
        };
        let items = match batch_of(p, payload) {
            Ok(items) => items,
            Err(e) => return e,
        };
        for item in items {
            match item {
                Err(e) => return protocol_error(p.id, &e.to_string()),
                Ok(Item::Reply { id, ok, body }) => {
                    let r = if ok {
                        Ok(body.to_vec())
                    } else {
                        Err(PeerError::Remote(
                            String::from_utf8_lossy(body).into_owned(),
                        ))
                    };
                    p.resolve(id, r);
                }
                Ok(Item::Pong(nonce)) => {
                    let now = t.nanos(Instant::now());
                    if nonce <= now {
                        p.observe_rtt(Duration::from_nanos(now - nonce));
                    }
                }
                Ok(_) => return protocol_error(p.id, "a request item on a connection we dialed"),
            }
        }
    }
}

/// What the writer of a dialed connection takes from, and leaves behind
/// when the connection ends.
struct Queue<'a> {
    rx: &'a async_channel::Receiver<OutItem>,
    /// Calls that waited for a connection: sent first.
    waiting: &'a mut VecDeque<OutItem>,
    /// An item that did not fit the last frame: first in the next.
    carry: &'a mut Option<OutItem>,
    /// Raft messages in the frame being written.
    unsent: &'a Cell<u64>,
}

/// Writes the peer's queue (and pings), everything queued in one frame up
/// to `frame_bytes_max`. Returns why it stopped.
async fn write_dialed<W: AsyncWrite + Unpin>(
    t: &Local,
    p: &PeerShared,
    w: &mut W,
    q: Queue<'_>,
    generation: u64,
) -> String {
    let Queue {
        rx,
        waiting,
        carry,
        unsent,
    } = q;
    let max = t.shared.frame_bytes_max;
    let mut fb = FrameBuf::new();
    let mut next_ping = Instant::now();
    loop {
        if carry.is_none() && waiting.is_empty() {
            let now = Instant::now();
            if now < next_ping {
                let wait = next_ping - now;
                let got = or(async { Some(rx.recv().await) }, async {
                    glommio::timer::sleep(wait).await;
                    None
                })
                .await;
                match got {
                    Some(Ok(item)) => *carry = Some(item),
                    Some(Err(_)) => return "transport stopped".to_string(),
                    None => {}
                }
            }
        }
        fb.begin_batch();
        let now = Instant::now();
        if now >= next_ping {
            fb.put_ping(t.nanos(now));
            next_ping = now + PING_INTERVAL;
        }
        let mut raft_n = 0u64;
        loop {
            let item = if let Some(i) = carry.take() {
                i
            } else if let Some(i) = waiting.pop_front() {
                i
            } else if let Ok(i) = rx.try_recv() {
                i
            } else {
                break;
            };
            match item {
                OutItem::Raft { group, msg } => {
                    let need = frame::raft_item_bytes(&msg);
                    if BATCH_OVERHEAD + PING_ITEM_BYTES + need > max {
                        log::warn!(
                            "peer transport: dropping a raft message of {need} bytes to member {:x}: over the frame limit of {max} bytes",
                            p.id
                        );
                        p.count_raft_dropped(&msg);
                        continue;
                    }
                    if fb.len() + need > max {
                        *carry = Some(OutItem::Raft { group, msg });
                        break;
                    }
                    let before = fb.len();
                    if let Err(e) = fb.put_raft(group, &msg) {
                        log::warn!(
                            "peer transport: dropping a raft message to member {:x}: {e}",
                            p.id
                        );
                        fb.truncate(before);
                        p.count_raft_dropped(&msg);
                        continue;
                    }
                    raft_n += 1;
                }
                OutItem::Call { id, kind, body } => {
                    if !p.is_pending(id) {
                        continue;
                    }
                    if fb.len() + CALL_ITEM_OVERHEAD + body.len() > max {
                        *carry = Some(OutItem::Call { id, kind, body });
                        break;
                    }
                    if p.mark_sent(id, generation) {
                        fb.put_call(id, kind, &body);
                    }
                }
            }
        }
        if fb.is_empty() {
            continue;
        }
        let frame = fb.finish();
        let n = frame.len();
        unsent.set(raft_n);
        if let Err(e) = write_frame(w, frame).await {
            return format!("write failed: {e}");
        }
        unsent.set(0);
        p.c.sent_bytes.fetch_add(n as u64, Relaxed);
        p.c.raft_sent.fetch_add(raft_n, Relaxed);
        p.c.frames_sent.fetch_add(1, Relaxed);
        fb.shrink(BUFFER_KEEP_BYTES);
    }
}

// ------------------------------------------------- member list query

/// A std socket whose every read and write is bounded by one deadline
/// (set before each call), so a peer trickling bytes, or a TLS handshake
/// of many reads, cannot stretch the query past its timeout.
struct Deadlined {
    tcp: std::net::TcpStream,
    deadline: Instant,
}

impl Deadlined {
    fn left(&self) -> std::io::Result<Duration> {
        let l = left(self.deadline);
        if l.is_zero() {
            Err(std::io::ErrorKind::TimedOut.into())
        } else {
            Ok(l)
        }
    }
}

impl std::io::Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf)
    }
}

impl std::io::Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// An I/O error of the query, in words (the deadline's own included).
fn query_io_error(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {timeout:?}")
        }
        std::io::ErrorKind::UnexpectedEof => "the connection closed before the answer".to_string(),
        _ => e.to_string(),
    }
}

/// See [`super::query_members`]; errors without the address (the caller
/// adds it).
pub(crate) fn query_members(
    addr: &PeerAddr,
    tls: Option<&PeerTls>,
    shards: u32,
    timeout: Duration,
) -> Result<(u64, Vec<u8>), String> {
    let client = match (&addr.tls_name, tls) {
        (None, _) => None,
        (Some(name), Some(tls)) => match tls.client() {
            Some(c) => Some((c.clone(), server_name(name)?)),
            None => {
                return Err(
                    "the address is https: verifying its certificate needs --peer-trusted-ca-file"
                        .to_string(),
                )
            }
        },
        (Some(_), None) => {
            return Err(
                "the address is https: no peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)"
                    .to_string(),
            )
        }
    };
    let deadline = Instant::now() + timeout;
    if timeout.is_zero() {
        return Err(format!("no answer within {timeout:?}"));
    }
    let tcp = std::net::TcpStream::connect_timeout(&addr.addr, timeout)
        .map_err(|e| query_io_error(&e, timeout))?;
    let _ = tcp.set_nodelay(true);
    let sock = Deadlined { tcp, deadline };
    match client {
        None => exchange_members_query(sock, shards).map_err(|e| {
            let plain_eof =
                matches!(&e, QueryError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
            let e = e.into_text(timeout);
            if plain_eof {
                // What a TLS listener does with a plain query.
                format!("{e} (if its peer URL is https, query it with TLS)")
            } else {
                e
            }
        }),
        Some((config, name)) => {
            let conn =
                rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
            let mut stream = rustls::StreamOwned::new(conn, sock);
            let r = exchange_members_query(&mut stream, shards);
            r.map_err(|e| {
                // TLS 1.3 ends the client's handshake before the server
                // checked its certificate: the server's alert comes after.
                let alert = matches!(&e, QueryError::Io(io) if io
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_))));
                let text = e.into_text(timeout);
                if stream.conn.is_handshaking() || alert {
                    format!("TLS handshake failed: {text}")
                } else {
                    text
                }
            })
        }
    }
}

/// What went wrong in the exchange: I/O (worded with the timeout) or the
/// answer.
enum QueryError {
    Io(std::io::Error),
    Answer(String),
}

impl QueryError {
    fn into_text(self, timeout: Duration) -> String {
        match self {
            QueryError::Io(e) => query_io_error(&e, timeout),
            QueryError::Answer(s) => s,
        }
    }
}

impl From<std::io::Error> for QueryError {
    fn from(e: std::io::Error) -> Self {
        QueryError::Io(e)
    }
}

/// MEMBERS_QUERY out, one frame (at most `HANDSHAKE_BYTES_MAX`) back.
fn exchange_members_query<S: std::io::Read + std::io::Write>(
    mut s: S,
    shards: u32,
) -> Result<(u64, Vec<u8>), QueryError> {
    let mut fb = FrameBuf::new();
    s.write_all(fb.members_query(shards))?;
    s.flush()?;
    let mut buf = vec![0u8; HEADER_BYTES];
    s.read_exact(&mut buf)?;
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let total = HEADER_BYTES.saturating_add(len);
    if total > HANDSHAKE_BYTES_MAX {
        // Before reading (or allocating) the announced bytes.
        return Err(QueryError::Answer(
            frame::FrameError::TooLarge {
                len: total,
                max: HANDSHAKE_BYTES_MAX,
            }
            .to_string(),
        ));
    }
    buf.resize(total, 0);
    s.read_exact(&mut buf[HEADER_BYTES..])?;
    let bad = |e: frame::FrameError| QueryError::Answer(e.to_string());
    let Some((payload, _)) = decode_frame(&buf, HANDSHAKE_BYTES_MAX).map_err(bad)? else {
        // The whole frame was read above.
        return Err(QueryError::Answer("incomplete answer".to_string()));
    };
    match decode_payload(payload).map_err(bad)? {
        Payload::Members { cluster_id, body } => Ok((cluster_id, body.to_vec())),
        Payload::Refused(reason) => Err(QueryError::Answer(format!("refused: {reason}"))),
        _ => Err(QueryError::Answer(
            "answered the member list query with another frame".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(42);
        let mut step = BACKOFF_MIN;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} for step {step:?}");
            step = (step * 2).min(BACKOFF_MAX);
        }
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
        // Different seeds, different sequences.
        let mut a = Backoff::new(1);
        let mut c = Backoff::new(2);
        let xs: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let ys: Vec<_> = (0..5).map(|_| c.next_delay()).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn frame_reader_reads_frames_split_anywhere() {
        let mut fb = FrameBuf::new();
        let mut stream = Vec::new();
        for i in 0..50u64 {
            fb.begin_batch();
            fb.put_call(i, 1, &vec![i as u8; (i * 997 % 70_000) as usize]);
            stream.extend_from_slice(fb.finish());
        }
        // A reader handing out bytes in odd-sized pieces.
        struct Trickle(Vec<u8>, usize);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let at = self.1;
                let n = buf.len().min(self.0.len() - at).min(7919);
                buf[..n].copy_from_slice(&self.0[at..at + n]);
                self.1 += n;
                std::task::Poll::Ready(Ok(n))
            }
        }
        futures_lite::future::block_on(async {
            let mut r = FrameReader::new(Trickle(stream.clone(), 0), 1 << 20);
            for i in 0..50u64 {
                let p = r.next().await.unwrap();
                let Payload::Batch(mut items) = decode_payload(p).unwrap() else {
                    panic!()
                };
                match items.next().unwrap().unwrap() {
                    Item::Call { id, body, .. } => {
                        assert_eq!(id, i);
                        assert_eq!(body.len(), (i * 997 % 70_000) as usize);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(r.next().await.unwrap_err(), "connection closed by the peer");
            // Cut inside the last frame.
            let cut = stream.len() - 3;
            let mut r = FrameReader::new(Trickle(stream[..cut].to_vec(), 0), 1 << 20);
            for _ in 0..49 {
                r.next().await.unwrap();
            }
            assert!(r.next().await.unwrap_err().contains("inside a frame"));
        });
    }
}
