//! The KV service over all shards, one module per part of a request's way:
//! `read` (fan-out ranges merged in key order, linearizable reads),
//! `eval` (a transaction's compares and ops, evaluated against one view),
//! `write` (the coordinator: fence the shards a write touches, take one
//! revision, apply each shard's part, commit them all), `lease` (lease
//! calls), `cluster` (leader start, leader moves, snapshots to other
//! members, backup, compaction, defragmentation). This file: the engine
//! handle, and routing to the cluster leader for what only it serves.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferrokv_mvcc::KeyValue;
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::leader::Leadership;
use crate::sequencer::Sequencer;
use crate::shard::{Shard, ShardMsg, ShardStatus};

mod auth;
mod cluster;
pub mod eval;
mod lease;
mod members;
mod read;
mod write;

pub use eval::is_read_only;
pub use lease::LeaseLife;

/// Handle to the engine from one core: channels to every shard core and the
/// shared sequencer. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Rc<Inner>,
    /// The auth revision this handle's writes were checked at, if they
    /// were ([`Engine::checked_at`]).
    auth_rev: Option<u64>,
}

struct Inner {
    shards: Vec<async_channel::Sender<ShardMsg>>,
    seq: Arc<Sequencer>,
    leadership: Arc<Leadership>,
    /// The peer transport, once core 0 started it (none for one member).
    peers: crate::Peers,
    /// This member is the only voter: no read needs a leader's word.
    single_voter: bool,
    /// The shard whose core this handle lives on.
    local: Rc<Shard>,
    changes: Arc<crate::membership::MemberChanges>,
}

enum Route {
    Here,
    To(u64),
}

/// How long a write waits for a serving leader before it fails with etcd's
/// `request timed out` (etcd: 5 s plus two election timeouts by default).
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(7);

pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    crc32c::crc32c(key) % shards
}

/// The shard owning a lease's table entry.
pub fn lease_shard(id: i64, shards: u32) -> u32 {
    (id as u64 % u64::from(shards)) as u32
}

pub fn to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::from(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::from(kv.value),
        lease: kv.lease,
    }
}

fn header(rev: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

impl Engine {
    /// A handle for the core of shard `local`.
    pub(crate) fn new(
        shards: Vec<async_channel::Sender<ShardMsg>>,
        seq: Arc<Sequencer>,
        leadership: Arc<Leadership>,
        peers: crate::Peers,
        single_voter: bool,
        local: Rc<Shard>,
        changes: Arc<crate::membership::MemberChanges>,
    ) -> Engine {
        Engine {
            inner: Rc::new(Inner {
                shards,
                seq,
                leadership,
                peers,
                single_voter,
                local,
                changes,
            }),
            auth_rev: None,
        }
    }

    /// This member is the only voter, and was at its start (a cluster that
    /// grew from one member asks raft, as one started with many does).
    fn single_voter(&self) -> bool {
        self.inner.single_voter && self.inner.local.log.is_single_voter()
    }

    /// The peer transport's handle, if this member has peers.
    pub fn peers(&self) -> Option<&ferrokv_raft::peer::PeerHandle> {
        self.inner.peers.get()
    }

    /// Where a request that needs the leader goes: here once this member
    /// serves, else the cluster leader; waits (bounded) while there is
    /// none or while this member is starting.
    async fn route(&self) -> Result<Route, Error> {
        let me = self.inner.leadership.member_id();
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        loop {
            if self.inner.leadership.serving() {
                return Ok(Route::Here);
            }
            let leader = self.inner.leadership.cluster_leader();
            if leader != 0 && leader != me && self.inner.peers.get().is_some() {
                return Ok(Route::To(leader));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            let wait = (deadline - now).min(std::time::Duration::from_millis(20));
            self.inner.leadership.wait_serving(wait).await;
        }
    }

    /// A request to the cluster leader over the peer transport.
    async fn forward(&self, to: u64, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let Some(peers) = self.inner.peers.get() else {
            return Err(Error::Timeout);
        };
        use ferrokv_raft::peer::PeerError;
        // A leader that died is replaced within an election timeout, well
        // before the call's own deadline: once another member leads, the
        // outcome is unknown (it may have acted), as etcd says of a
        // request in flight when the leader changes.
        enum Forwarded {
            Reply(Result<Vec<u8>, PeerError>),
            Moved,
        }
        let leadership = self.inner.leadership.clone();
        // A membership change that moves the leadership itself (the leader
        // hands over, then forwards it on) is answered by its first
        // receiver, whoever leads by then.
        let follows_leader = kind != forward::MEMBERS;
        let moved = async move {
            while !follows_leader
                || leadership.cluster_leader() == to
                || leadership.cluster_leader() == 0
            {
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            }
            Forwarded::Moved
        };
        let call = async { Forwarded::Reply(peers.call(to, kind, body).await) };
        match futures_lite::future::or(call, moved).await {
            Forwarded::Reply(Ok(b)) => Ok(b),
            Forwarded::Reply(Err(PeerError::Remote(msg))) => Err(forward::error_from_wire(&msg)),
            Forwarded::Reply(Err(e)) => {
                log::debug!("forward to {to:x}: {e}");
                Err(Error::Timeout)
            }
            Forwarded::Moved => {
                log::debug!("forward to {to:x}: the leadership moved meanwhile");
                Err(Error::LeaderChanged)
            }
        }
    }

    /// After a request forwarded to the leader: waits (bounded) until this
    /// member sees the revision the leader answered, so that a client
    /// reading here next at the header's revision is not told it is in
    /// the future.
    async fn wait_visible_here(&self, rev: i64) {
        futures_lite::future::or(self.inner.seq.wait_visible(rev), async {
            glommio::timer::sleep(LEADER_WAIT).await
        })
        .await;
    }

    /// A forwarded request whose answer is one integer.
    async fn forward_int(&self, to: u64, kind: u8, args: &[i64]) -> Result<i64, Error> {
        let b = self.forward(to, kind, forward::ints(args)).await?;
        Ok(forward::read_ints(&b, 1)?[0])
    }

    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// Waits (bounded) until this member serves writes.
    async fn serving(&self) -> Result<(), Error> {
        if self.inner.leadership.serving() || self.inner.leadership.wait_serving(LEADER_WAIT).await
        {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.inner.shards.len() as u32
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.inner.seq
    }

    fn shard_of(&self, key: &[u8]) -> u32 {
        shard_of(key, self.shard_count())
    }

    pub(crate) async fn send(&self, shard: u32, msg: ShardMsg) -> Result<(), Error> {
        self.inner.shards[shard as usize]
            .send(msg)
            .await
            .map_err(|_| Error::Internal("shard stopped".into()))
    }

    pub async fn status(&self) -> Result<Vec<ShardStatus>, Error> {
        let mut waits = Vec::new();
        for s in 0..self.shard_count() {
            let (tx, rx) = oneshot::channel();
            self.send(s, ShardMsg::Status(tx)).await?;
            waits.push(rx);
        }
        let mut out = Vec::new();
        for w in waits {
            out.push(
                w.await
                    .map_err(|_| Error::Internal("shard stopped".into()))?,
            );
        }
        Ok(out)
    }

    /// One request to one shard core, answered on a oneshot.
    async fn ask<T>(
        &self,
        shard: u32,
        msg: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(shard, msg(tx)).await?;
        rx.await
            .map_err(|_| Error::Internal("shard stopped".into()))
    }
}
