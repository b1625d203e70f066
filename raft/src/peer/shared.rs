//! State shared between the transport's executor and every core holding a
//! `PeerHandle`: the peer table, per-peer queues, pending calls, counters.
//! Everything here is `Send + Sync`; nothing touches a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use raft::eraftpb::{Message, MessageType};

use super::{PeerAddr, PeerError, PeerTls};

/// What a core queues for one peer.
pub(crate) enum OutItem {
    Raft { group: u32, msg: Message },
    Call { id: u64, kind: u8, body: Vec<u8> },
}

pub(crate) type CallResult = Result<Vec<u8>, PeerError>;

pub(crate) struct PendingCall {
    pub deadline: Instant,
    pub reply: oneshot::Sender<CallResult>,
    /// The connection (generation) the request was written to, if any.
    pub sent_on: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub sent_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    pub raft_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    pub raft_received: AtomicU64,
    pub raft_dropped: AtomicU64,
    pub heartbeat_dropped: AtomicU64,
    pub raft_inbound_dropped: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Smoothed round trip in ns; 0 before the first sample.
    pub rtt_ns: AtomicU64,
}

#[derive(Default, Clone)]
pub(crate) struct Learned {
    pub name: String,
    pub client_urls: Vec<String>,
}

pub(crate) struct PeerShared {
    pub id: u64,
    /// The peer URLs, tried in turn. A member update replaces them (and
    /// signals `redial`); the loop reads them at every dial round.
    pub addrs: Mutex<Vec<PeerAddr>>,
    pub queue: async_channel::Sender<OutItem>,
    /// The loop's end of `queue`, kept here too so that a removal drops
    /// (and counts) what is queued at once, from any core.
    pub rx: async_channel::Receiver<OutItem>,
    /// Closed, never sent on, when the member is removed: its loop and its
    /// accepted connection end.
    halt: async_channel::Sender<()>,
    halt_rx: async_channel::Receiver<()>,
    /// "The addresses changed": one pending notice at most (a second one
    /// would say nothing more).
    redial: async_channel::Sender<()>,
    redial_rx: async_channel::Receiver<()>,
    /// Claimed once, by the task that spawns the peer's loop or, if the
    /// transport stops first, by the one that fails its calls instead.
    pub started: AtomicBool,
    /// Set before the queue closes: what was refused after it says
    /// `Removed` rather than `Stopped`.
    pub removed: AtomicBool,
    pub calls: Mutex<HashMap<u64, PendingCall>>,
    pub learned: Mutex<Learned>,
    pub last_error: Mutex<Option<String>>,
    pub connected: AtomicBool,
    pub c: Counters,
}

/// A panic elsewhere while holding one of these locks leaves plain data
/// behind that is still consistent (every critical section is a single
/// insert/remove/assign), so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `lock` for the peer table, reading.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

/// `lock` for the peer table, writing.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl PeerShared {
    pub fn new(id: u64, addrs: Vec<PeerAddr>, queue_messages_max: usize) -> Arc<PeerShared> {
        let (queue, rx) = async_channel::bounded(queue_messages_max);
        let (halt, halt_rx) = async_channel::bounded(1);
        let (redial, redial_rx) = async_channel::bounded(1);
        Arc::new(PeerShared {
            id,
            addrs: Mutex::new(addrs),
            queue,
            rx,
            halt,
            halt_rx,
            redial,
            redial_rx,
            started: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            calls: Mutex::new(Default::default()),
            learned: Mutex::new(Learned::default()),
            last_error: Mutex::new(None),
            connected: AtomicBool::new(false),
            c: Counters::default(),
        })
    }

    /// Resolves once the member is removed.
    pub async fn halted(&self) {
        let _ = self.halt_rx.recv().await;
    }

    /// Tells the loop its addresses changed.
    pub fn notify_redial(&self) {
        // Full: a notice is pending already, which says the same.
        let _ = self.redial.try_send(());
    }

    /// Resolves when the addresses changed (never, otherwise).
    pub async fn redialed(&self) {
        // Both ends live in `self`: the channel never closes under us.
        if self.redial_rx.recv().await.is_err() {
            futures_lite::future::pending::<()>().await
        }
    }

    /// What a call refused by a closed queue is told.
    pub fn end_error(&self) -> PeerError {
        if self.removed.load(Relaxed) {
            PeerError::Removed { member: self.id }
        } else {
            PeerError::Stopped
        }
    }

    /// The member was removed: its loop and accepted connection are told
    /// to end, the queue closes, what it held is dropped, pending calls
    /// fail with `Removed`. Returns the raft messages dropped.
    pub fn remove(&self) -> u64 {
        self.removed.store(true, Relaxed);
        self.halt.close();
        let n = self.close_and_drain();
        self.fail_all(PeerError::Removed { member: self.id });
        n
    }

    /// The end of the peer's loop (or of a loop that never started):
    /// nothing more is queued, and every pending call is answered.
    pub fn finish(&self) {
        self.connected.store(false, Relaxed);
        let n = self.close_and_drain();
        self.c.raft_dropped.fetch_add(n, Relaxed);
        self.fail_all(self.end_error());
    }

    /// Closes the queue first, then drains it: a call racing with this
    /// either sees the queue closed or is in the table before it is failed
    /// (see `PeerHandle::call`). Returns the raft messages dropped
    /// (heartbeats counted as such).
    fn close_and_drain(&self) -> u64 {
        self.queue.close();
        let mut n = 0;
        while let Ok(item) = self.rx.try_recv() {
            if let OutItem::Raft { msg, .. } = item {
                if is_heartbeat(&msg) {
                    self.c.heartbeat_dropped.fetch_add(1, Relaxed);
                }
                n += 1;
            }
        }
        n
    }

    pub fn count_raft_dropped(&self, msg: &Message) {
        self.c.raft_dropped.fetch_add(1, Relaxed);
        if is_heartbeat(msg) {
            self.c.heartbeat_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Marks call `id` as written on connection `generation`; false when
    /// it is no longer pending (timed out, or its caller went away).
    pub fn mark_sent(&self, id: u64, generation: u64) -> bool {
        match lock(&self.calls).get_mut(&id) {
            Some(p) => {
                p.sent_on = Some(generation);
                true
            }
            None => false,
        }
    }

    pub fn is_pending(&self, id: u64) -> bool {
        lock(&self.calls).contains_key(&id)
    }

    pub fn resolve(&self, id: u64, r: CallResult) {
        // An unknown id is a reply that came after its call's deadline.
        if let Some(p) = lock(&self.calls).remove(&id) {
            let _ = p.reply.send(r);
        }
    }

    /// Fails the calls written on connection `generation`, which broke.
    pub fn fail_sent_on(&self, generation: u64, reason: &str) {
        let failed: Vec<PendingCall> = {
            let mut calls = lock(&self.calls);
            let ids: Vec<u64> = calls
                .iter()
                .filter(|(_, p)| p.sent_on == Some(generation))
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| calls.remove(id)).collect()
        };
        for p in failed {
            let _ = p.reply.send(Err(PeerError::ConnectionLost {
                member: self.id,
                reason: reason.to_string(),
            }));
        }
    }

    /// Fails the calls whose deadline has passed.
    pub fn expire_calls(&self, now: Instant, timeout: Duration) {
        let expired: Vec<PendingCall> = {
            let mut calls = lock(&self.calls);
            if calls.is_empty() {
                return;
            }
            let ids: Vec<u64> = calls
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| calls.remove(id)).collect()
        };
        if expired.is_empty() {
            return;
        }
        let connected = self.connected.load(Relaxed);
        let reason = lock(&self.last_error)
            .clone()
            .unwrap_or_else(|| "not connected yet".to_string());
        for p in expired {
            let err = if p.sent_on.is_some() || connected {
                PeerError::Timeout {
                    member: self.id,
                    timeout,
                }
            } else {
                PeerError::Unreachable {
                    member: self.id,
                    reason: reason.clone(),
                }
            };
            let _ = p.reply.send(Err(err));
        }
    }

    pub fn fail_all(&self, err: PeerError) {
        let all: Vec<PendingCall> = lock(&self.calls).drain().map(|(_, p)| p).collect();
        for p in all {
            let _ = p.reply.send(Err(err.clone()));
        }
    }

    pub fn observe_rtt(&self, sample: Duration) {
        let s = sample.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.c.rtt_ns.load(Relaxed);
        // TCP's smoothing (RFC 6298): 7/8 old + 1/8 new.
        let new = if old == 0 {
            s.max(1)
        } else {
            (old / 8 * 7 + s / 8).max(1)
        };
        self.c.rtt_ns.store(new, Relaxed);
    }

    pub fn set_error(&self, e: Option<String>) {
        *lock(&self.last_error) = e;
    }
}

fn is_heartbeat(msg: &Message) -> bool {
    matches!(
        msg.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    )
}

/// The peer set: changed by `add_peer`/`remove_peer` from any core, read
/// by every send, call and handshake.
#[derive(Default)]
pub(crate) struct PeerTable {
    pub peers: BTreeMap<u64, Arc<PeerShared>>,
    /// Members removed from the cluster: their handshakes are refused as
    /// removed, they cannot be added back (etcd never reuses a member id).
    /// One id per removal, as etcd's member store keeps them.
    pub removed: BTreeSet<u64>,
    /// The transport stopped: no peer may be added any more (its loop
    /// would never run).
    pub stopped: bool,
}

/// Configuration, fixed at `start`, and the peer table.
pub(crate) struct Shared {
    pub cluster_id: u64,
    pub member_id: u64,
    pub shards: u32,
    pub name: String,
    pub client_urls: Vec<String>,
    pub tls: Option<PeerTls>,
    pub frame_bytes_max: usize,
    pub call_timeout: Duration,
    pub calls_in_flight_max: usize,
    pub queue_messages_max: usize,
    pub table: RwLock<PeerTable>,
    /// The member list body a MEMBERS_QUERY is answered with; `None`
    /// until the application sets it.
    pub members: Mutex<Option<Arc<Vec<u8>>>>,
    /// The member that refused us as removed from the cluster; 0 (raft's
    /// "none") while none did.
    pub removed_by: AtomicU64,
    pub local_addrs: Vec<SocketAddr>,
    pub raft_dropped_unknown: AtomicU64,
    pub next_call_id: AtomicU64,
}

impl Shared {
    /// The peer `id`, or why there is none.
    pub fn peer(&self, id: u64) -> Result<Arc<PeerShared>, PeerError> {
        let t = read(&self.table);
        match t.peers.get(&id) {
            Some(p) => Ok(p.clone()),
            None if t.removed.contains(&id) => Err(PeerError::Removed { member: id }),
            None => Err(PeerError::UnknownMember(id)),
        }
    }

    /// A snapshot of the peers, in member id order.
    pub fn peers(&self) -> Vec<Arc<PeerShared>> {
        read(&self.table).peers.values().cloned().collect()
    }
}
