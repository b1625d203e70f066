//! State shared between the transport's executor and every core holding a
//! `PeerHandle`: per-peer queues, pending calls, counters. Everything here
//! is `Send + Sync`; nothing touches a socket.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
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
    pub addrs: Vec<PeerAddr>,
    pub queue: async_channel::Sender<OutItem>,
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

impl PeerShared {
    pub fn count_raft_dropped(&self, msg: &Message) {
        self.c.raft_dropped.fetch_add(1, Relaxed);
        if matches!(
            msg.get_msg_type(),
            MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
        ) {
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

/// Configuration and peers, fixed at `start`.
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
    pub peers: BTreeMap<u64, Arc<PeerShared>>,
    pub local_addrs: Vec<SocketAddr>,
    pub raft_dropped_unknown: AtomicU64,
    pub next_call_id: AtomicU64,
}
