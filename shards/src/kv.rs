//! The KV service over all shards: fan-out reads merged in key order, and
//! the write coordinator that fences the shards a request touches, takes
//! one revision, applies each shard's part and commits them all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use ferrokv_mvcc::{KeyValue, RangeResult, WriteOp};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::leader::Leadership;
use crate::record::{Part, Record};
use crate::sequencer::Sequencer;
use crate::shard::{FencedOp, RangeArgs, Shard, ShardMsg, ShardStatus};

/// Bound on ops one coordinator may have queued for a fenced shard. A
/// coordinator awaits each op's reply before the next one to that shard,
/// so one is enough, and a one-slot channel needs no slot array (a fence
/// per write made the array's allocation a visible cost).
const FENCED_OPS_PENDING_MAX: usize = 1;

/// Handle to the engine from one core: channels to every shard core and the
/// shared sequencer. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Rc<Inner>,
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
}

/// A lease's granted TTL, seconds remaining, and attached keys (sorted when
/// asked for).
pub type LeaseLife = (i64, i64, Vec<Vec<u8>>);

enum Route {
    Here,
    To(u64),
}

/// How long a write waits for a serving leader before it fails with etcd's
/// `request timed out` (etcd: 5 s plus two election timeouts by default).
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(7);

/// Fenced shards: the channel to each one's fenced task and the term its
/// group is led in here (the coordinator writes in that term).
type Fences = BTreeMap<u32, (async_channel::Sender<FencedOp>, u64)>;

/// Where reads go: the visible state at a revision, or the latest state of
/// shards fenced by this coordinator (which includes its own earlier writes).
enum Via<'a> {
    Visible(i64),
    Fenced(&'a Fences),
    /// This core's own shard, its write lock held by this coordinator:
    /// reads and applies are direct calls, no message and no task switch.
    /// The term is the one this member leads the shard's group in.
    Local(&'a Shard, u64),
}

/// Which branch each (nested) transaction takes, decided before any write.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

struct WriteState {
    rev: Option<i64>,
    /// The void count when the revision was taken (see `wait_committed`).
    voids: u64,
    base_rev: i64,
    next_sub: i64,
    parts: Vec<Part>,
}

impl WriteState {
    fn header_rev(&self) -> i64 {
        self.rev.unwrap_or(self.base_rev)
    }
}

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
    ) -> Engine {
        Engine {
            inner: Rc::new(Inner {
                shards,
                seq,
                leadership,
                peers,
                single_voter,
                local,
            }),
        }
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
        match peers.call(to, kind, body).await {
            Ok(b) => Ok(b),
            Err(PeerError::Remote(msg)) => Err(forward::error_from_wire(&msg)),
            Err(e) => {
                log::debug!("forward to {to:x}: {e}");
                Err(Error::Timeout)
            }
        }
    }

    /// Makes the next read at this member's visible revision linearizable:
    /// on the leader, raft's ReadIndex confirms it still leads; on a
    /// follower, the leader's visible revision (after its ReadIndex) is
    /// waited for here.
    async fn linearizable(&self) -> Result<(), Error> {
        if self.inner.single_voter {
            return Ok(());
        }
        let target = match self.route().await? {
            Route::Here => return self.read_index_here().await.map(|_| ()),
            Route::To(l) => {
                forward::read_ints(&self.forward(l, forward::READ_INDEX, Vec::new()).await?, 1)?[0]
            }
        };
        let wait = self.inner.seq.wait_visible(target);
        futures_lite::future::or(
            async {
                wait.await;
                Ok(())
            },
            async {
                glommio::timer::sleep(LEADER_WAIT).await;
                Err(Error::Timeout)
            },
        )
        .await
    }

    /// etcd's MoveLeader, on the serving leader: group 0's leadership goes
    /// to `to` and the other groups follow it there (every group's leader
    /// hands over to group 0's). Resolves once `to` leads group 0, or fails
    /// with etcd's words after etcd's request timeout.
    pub async fn move_leader(&self, to: u64) -> Result<(), Error> {
        if !self.inner.leadership.serving() {
            return Err(Error::NotLeader);
        }
        if to == self.inner.leadership.member_id() {
            return Ok(());
        }
        self.send(0, ShardMsg::TransferLeader(to)).await?;
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        while self.inner.leadership.cluster_leader() != to {
            if std::time::Instant::now() > deadline {
                return Err(Error::LeaderTransferTimeout);
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A piece of shard `shard`'s snapshot file at raft index `index`.
    pub(crate) async fn snapshot_chunk(
        &self,
        shard: u32,
        index: u64,
        offset: u64,
    ) -> Result<Vec<u8>, Error> {
        if shard >= self.shard_count() {
            return Err(Error::Internal(format!("no shard {shard}")));
        }
        self.ask(shard, |reply| ShardMsg::SnapshotChunk {
            index,
            offset,
            reply,
        })
        .await?
    }

    /// ReadIndex on the leader: the visible revision once group 0's quorum
    /// confirmed this member still leads.
    pub(crate) async fn read_index_here(&self) -> Result<i64, Error> {
        self.serving().await?;
        self.ask(0, ShardMsg::ReadIndex).await??;
        if !self.inner.leadership.serving() {
            return Err(Error::LeaderChanged);
        }
        Ok(self.inner.seq.visible())
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

    /// Leader start: every group led here in its term in `terms`, with an
    /// entry of that term committed and all committed entries applied.
    pub(crate) async fn wait_terms_committed(&self, terms: &[u64]) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        for (s, term) in terms.iter().enumerate() {
            loop {
                let term = *term;
                if self
                    .ask(s as u32, |r| ShardMsg::TermCommitted(term, r))
                    .await?
                {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(Error::Timeout);
                }
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Leader start: the marker in every group, committed.
    pub(crate) async fn write_markers(
        &self,
        id: u64,
        cut: i64,
        through: i64,
        terms: &[u64],
    ) -> Result<(), Error> {
        let mut waits = Vec::with_capacity(terms.len());
        for (s, term) in terms.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            self.send(
                s as u32,
                ShardMsg::Marker {
                    id,
                    cut,
                    through,
                    term: *term,
                    reply: tx,
                },
            )
            .await?;
            waits.push(rx);
        }
        for w in waits {
            w.await
                .map_err(|_| Error::Internal("shard stopped".into()))??;
        }
        Ok(())
    }

    /// Leader start: leases get their full TTL from now (etcd's promote).
    pub(crate) async fn promote_leases(&self) -> Result<(), Error> {
        for s in 0..self.shard_count() {
            self.ask(s, ShardMsg::PromoteLeases).await?;
        }
        Ok(())
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

    /// Range across shards, merged by key. `rev` 0 means latest for fenced
    /// reads; for visible reads the caller resolved it already.
    #[allow(clippy::too_many_arguments)]
    async fn range_raw(
        &self,
        via: &Via<'_>,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<RangeResult, Error> {
        let targets: Vec<u32> = if range_end.is_empty() {
            vec![self.shard_of(key)]
        } else {
            (0..self.shard_count()).collect()
        };
        let mut waits = Vec::with_capacity(targets.len());
        for s in targets {
            let args = RangeArgs {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                rev,
                limit,
                keys_only,
                count_only,
            };
            let (tx, rx) = oneshot::channel();
            match via {
                Via::Visible(_) => self.send(s, ShardMsg::Range(args, tx)).await?,
                Via::Local(shard, _) if shard.id == s => {
                    let _ = tx.send(shard.range(&args));
                }
                Via::Local(..) => return Err(Error::Internal(format!("shard {s} not locked"))),
                Via::Fenced(f) => {
                    let (ch, _) = f
                        .get(&s)
                        .ok_or_else(|| Error::Internal(format!("shard {s} not fenced")))?;
                    ch.send(FencedOp::Range(args, tx))
                        .await
                        .map_err(|_| Error::Internal("shard stopped".into()))?;
                }
            }
            waits.push(rx);
        }
        let mut merged = RangeResult::default();
        for w in waits {
            let r = w
                .await
                .map_err(|_| Error::Internal("shard stopped".into()))??;
            merged.count += r.count;
            merged.kvs.extend(r.kvs);
        }
        if merged.kvs.len() > 1 {
            merged.kvs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        if limit > 0 {
            merged.kvs.truncate(limit);
        }
        Ok(merged)
    }

    /// etcd's Range: limit pushed down to the shards unless sorting or
    /// filtering needs every key first.
    async fn range_at(
        &self,
        via: &Via<'_>,
        r: &pb::RangeRequest,
        rev: i64,
        header_rev: i64,
    ) -> Result<pb::RangeResponse, Error> {
        use pb::range_request::{SortOrder, SortTarget};
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let mut limit = r.limit.max(0) as usize;
        if r.sort_order != SortOrder::None as i32 || filtered {
            limit = 0;
        }
        if limit > 0 {
            // One extra tells whether there is more.
            limit += 1;
        }
        let rr = self
            .range_raw(via, &r.key, &r.range_end, rev, limit, false, r.count_only)
            .await?;
        let mut kvs = rr.kvs;
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        let mut order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
        let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            // Stable sort on top of key order, as Go's sort.Sort gives for
            // these inputs in practice for distinct keys.
            match target {
                SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        Ok(pb::RangeResponse {
            header: header(header_rev),
            kvs: kvs
                .into_iter()
                .map(|mut kv| {
                    if r.keys_only {
                        kv.value.clear();
                    }
                    to_pb(kv)
                })
                .collect(),
            more,
            count: rr.count as i64,
        })
    }

    fn check_revision(&self, rev: i64, current: i64) -> Result<(), Error> {
        if rev > current {
            return Err(Error::FutureRevision);
        }
        if rev > 0 && rev < self.inner.seq.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    /// A linearizable (or serializable: one member, the same) read at the
    /// visible revision or an older one.
    pub async fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, Error> {
        if !r.serializable {
            self.linearizable().await?;
        }
        let visible = self.inner.seq.visible();
        let rev = if r.revision <= 0 { visible } else { r.revision };
        self.check_revision(rev, visible)?;
        self.range_at(&Via::Visible(visible), r, rev, visible).await
    }

    pub async fn put(&self, p: pb::PutRequest) -> Result<pb::PutResponse, Error> {
        let t = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(p)),
            }],
            ..Default::default()
        };
        let mut resp = self.txn(t).await?;
        match resp.responses.pop().and_then(|r| r.response) {
            Some(pb::response_op::Response::ResponsePut(mut p)) => {
                p.header = resp.header;
                Ok(p)
            }
            _ => Err(Error::Internal("put produced no response".into())),
        }
    }

    pub async fn delete_range(
        &self,
        d: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Error> {
        let t = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(d)),
            }],
            ..Default::default()
        };
        let mut resp = self.txn(t).await?;
        match resp.responses.pop().and_then(|r| r.response) {
            Some(pb::response_op::Response::ResponseDeleteRange(mut d)) => {
                d.header = resp.header;
                Ok(d)
            }
            _ => Err(Error::Internal("delete produced no response".into())),
        }
    }

    pub async fn txn(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        if is_read_only(&t) {
            self.linearizable().await?;
            return self.txn_here(t).await;
        }
        match self.route().await? {
            Route::Here => self.txn_here(t).await,
            Route::To(l) => {
                use prost::Message as _;
                let b = self.forward(l, forward::TXN, t.encode_to_vec()).await?;
                pb::TxnResponse::decode(b.as_slice())
                    .map_err(|e| Error::Internal(format!("forwarded txn reply: {e}")))
            }
        }
    }

    /// A transaction evaluated by this member (the leader, for a write).
    pub(crate) async fn txn_here(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        if is_read_only(&t) {
            let visible = self.inner.seq.visible();
            let via = Via::Visible(visible);
            let path = self.compare_path(&via, &t).await?;
            self.check_ranges(&t, &path, visible)?;
            let mut st = WriteState {
                rev: None,
                voids: 0,
                base_rev: visible,
                next_sub: 0,
                parts: Vec::new(),
            };
            let responses = self.exec(&via, &t, &path, &mut st).await?;
            return Ok(pb::TxnResponse {
                header: header(visible),
                succeeded: path.succeeded,
                responses,
            });
        }
        self.serving().await?;
        let mut involved = std::collections::BTreeSet::new();
        collect_shards(&t, self.shard_count(), &mut involved);
        if let [only] = involved.iter().copied().collect::<Vec<_>>()[..] {
            if only != self.inner.local.id {
                // A write of one shard runs on that shard's core: one hop
                // there and one back, instead of a cross-core round trip
                // for the fence, each read, apply and commit.
                return self.ask(only, |reply| ShardMsg::Txn(t, reply)).await?;
            }
        }
        self.spawn_write(t, involved).await
    }

    /// Runs a write coordinator on this core. It runs detached: once it
    /// has applied anything it must reach its commit even if the client
    /// goes away meanwhile.
    async fn spawn_write(
        &self,
        t: pb::TxnRequest,
        involved: std::collections::BTreeSet<u32>,
    ) -> Result<pb::TxnResponse, Error> {
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        glommio::spawn_local(async move {
            let r = me.write_txn(t, involved).await;
            let _ = tx.send(r);
        })
        .detach();
        rx.await
            .map_err(|_| Error::Internal("write coordinator stopped".into()))?
    }

    /// A write another core routed here (`ShardMsg::Txn`).
    pub(crate) async fn write_routed(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        let mut involved = std::collections::BTreeSet::new();
        collect_shards(&t, self.shard_count(), &mut involved);
        self.spawn_write(t, involved).await
    }

    /// Fences the shards in shard order, so coordinators never deadlock.
    /// A shard whose group is not led here refuses (`leader changed`).
    async fn fence(&self, involved: impl IntoIterator<Item = u32>) -> Result<Fences, Error> {
        self.fence_for(involved, true).await
    }

    async fn fence_for(
        &self,
        involved: impl IntoIterator<Item = u32>,
        write: bool,
    ) -> Result<Fences, Error> {
        let mut fences: Fences = BTreeMap::new();
        for s in involved {
            let (tx, rx) = async_channel::bounded(FENCED_OPS_PENDING_MAX);
            let (ack_tx, ack_rx) = oneshot::channel();
            if let Err(e) = self.send(s, ShardMsg::Fence(rx, ack_tx, write)).await {
                release(&fences).await;
                return Err(e);
            }
            match ack_rx.await {
                Ok(Some(term)) => {
                    fences.insert(s, (tx, term));
                }
                Ok(None) => {
                    let _ = tx.send(FencedOp::Release).await;
                    release(&fences).await;
                    return Err(Error::LeaderChanged);
                }
                Err(_) => {
                    release(&fences).await;
                    return Err(Error::Internal("shard stopped".into()));
                }
            }
        }
        Ok(fences)
    }

    /// Submits what the coordinator applied (and, for a lease revoke, the
    /// lease shard's `LeaseRevoke`) in every fenced shard, releases the
    /// fences, and waits until the revision is visible and kept. A failure
    /// leaves the outcome unknown to the client (`leader changed`): the
    /// next leader's marker decides it.
    async fn commit(
        &self,
        fences: Fences,
        st: &WriteState,
        revoke: Option<(u32, i64)>,
    ) -> Result<(), Error> {
        let mut waits = Vec::new();
        let mut failed = None;
        for (s, (ch, term)) in &fences {
            let mut records = Vec::new();
            if let Some(rev) = st.rev.filter(|_| st.parts.iter().any(|p| p.shard == *s)) {
                records.push(Record::Write {
                    rev,
                    parts: st.parts.clone(),
                });
            }
            let revoke = revoke.filter(|(ls, _)| ls == s).map(|(_, id)| id);
            if let Some(id) = revoke {
                records.push(Record::LeaseRevoke {
                    id,
                    rev: st.rev.unwrap_or(0),
                });
            }
            if records.is_empty() || failed.is_some() {
                // A shard whose part is not submitted after an earlier
                // failure drops its applied part when its fence goes away.
                let _ = ch.send(FencedOp::Release).await;
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let op = FencedOp::Commit {
                records,
                revoke,
                term: *term,
                reply: tx,
            };
            if ch.send(op).await.is_err() {
                failed = Some(Error::Internal(format!("shard {s} stopped")));
                continue;
            }
            waits.push(rx);
        }
        drop(fences);
        for w in waits {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(Error::Internal("shard stopped".into())),
            }
        }
        if let Some(e) = failed {
            if st.rev.is_some() {
                self.inner
                    .leadership
                    .restart(&format!("write at revision {:?} failed: {e}", st.rev));
            }
            return Err(e);
        }
        if let Some(rev) = st.rev {
            self.inner
                .seq
                .wait_committed(rev, st.voids)
                .await
                .map_err(|_| Error::LeaderChanged)?;
        }
        Ok(())
    }

    async fn write_txn(
        &self,
        t: pb::TxnRequest,
        involved: std::collections::BTreeSet<u32>,
    ) -> Result<pb::TxnResponse, Error> {
        let local = &self.inner.local;
        if involved.len() == 1 && involved.contains(&local.id) {
            // This core's shard alone: take its lock here and work on it
            // directly instead of through a fenced task.
            let Some(permit) = local.lock().await else {
                return Err(Error::Internal("shard stopped".into()));
            };
            let term = local.leading_term().ok_or(Error::LeaderChanged)?;
            let (path, st, responses) = match self.evaluate(&Via::Local(local, term), &t).await {
                Ok(done) => done,
                Err((e, applied)) => {
                    if let Some(rev) = applied {
                        local.abandon(rev, term);
                    }
                    drop(permit);
                    return Err(e);
                }
            };
            let header_rev = match st.rev {
                Some(rev) => {
                    let records = vec![Record::Write {
                        rev,
                        parts: st.parts.clone(),
                    }];
                    if let Err(e) = local.commit(records, None, term, permit).await {
                        self.inner
                            .leadership
                            .restart(&format!("write at revision {rev} failed: {e}"));
                        return Err(e);
                    }
                    self.inner
                        .seq
                        .wait_committed(rev, st.voids)
                        .await
                        .map_err(|_| Error::LeaderChanged)?;
                    rev
                }
                None => {
                    drop(permit);
                    self.read_settled(st.base_rev).await?
                }
            };
            return Ok(pb::TxnResponse {
                header: header(header_rev),
                succeeded: path.succeeded,
                responses,
            });
        }
        let fences = self.fence(involved).await?;
        let (path, st, responses) = match self.evaluate(&Via::Fenced(&fences), &t).await {
            Ok(done) => done,
            Err((e, _)) => {
                // Dropping the fences tells each fenced task; one that
                // applied something drops it (`Shard::abandon`).
                drop(fences);
                return Err(e);
            }
        };
        let wrote = st.rev.is_some();
        self.commit(fences, &st, None).await?;
        let header_rev = if wrote {
            st.header_rev()
        } else {
            self.read_settled(st.base_rev).await?
        };
        Ok(pb::TxnResponse {
            header: header(header_rev),
            succeeded: path.succeeded,
            responses,
        })
    }

    /// A write transaction that wrote nothing read (and compared against)
    /// the latest state of its shards, which may hold writes not yet
    /// visible. Its reply waits until everything it could have read is
    /// visible and kept, and its header covers it.
    async fn read_settled(&self, base: i64) -> Result<i64, Error> {
        let seen = self.inner.seq.last_assigned().max(base);
        let voids = self.inner.seq.voids();
        self.inner
            .seq
            .wait_committed(seen, voids)
            .await
            .map_err(|_| Error::LeaderChanged)?;
        Ok(seen)
    }

    /// Decides the branches, checks them and executes the chosen one under
    /// the held locks. An error carries the revision if something was
    /// already applied at it.
    async fn evaluate(
        &self,
        via: &Via<'_>,
        t: &pb::TxnRequest,
    ) -> Result<(Path, WriteState, Vec<pb::ResponseOp>), (Error, Option<i64>)> {
        let visible = self.inner.seq.visible();
        let path = self.compare_path(via, t).await.map_err(|e| (e, None))?;
        self.check_puts(via, t, &path)
            .await
            .map_err(|e| (e, None))?;
        self.check_ranges(t, &path, visible)
            .map_err(|e| (e, None))?;
        let mut st = WriteState {
            rev: None,
            voids: self.inner.seq.voids(),
            base_rev: visible,
            next_sub: 0,
            parts: Vec::new(),
        };
        match self.exec(via, t, &path, &mut st).await {
            Ok(responses) => Ok((path, st, responses)),
            Err(e) => Err((e, st.rev)),
        }
    }

    /// etcd decides every (nested) branch against the state before the
    /// transaction's own writes.
    async fn compare_path(&self, via: &Via<'_>, t: &pb::TxnRequest) -> Result<Path, Error> {
        let mut succeeded = true;
        for c in &t.compare {
            if !self.compare(via, c).await? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut nested = Vec::new();
        for op in ops {
            if let Some(pb::request_op::Request::RequestTxn(n)) = &op.request {
                nested.push(Box::pin(self.compare_path(via, n)).await?);
            }
        }
        Ok(Path { succeeded, nested })
    }

    async fn compare(&self, via: &Via<'_>, c: &pb::Compare) -> Result<bool, Error> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let rev = match via {
            Via::Visible(v) => *v,
            Via::Fenced(_) | Via::Local(..) => 0,
        };
        let rr = self
            .range_raw(via, &c.key, &c.range_end, rev, 0, false, false)
            .await?;
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
        let check = |kv: &KeyValue| -> bool {
            let ord = match (&target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v),
                (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
                (CompareTarget::Create, u) => kv.create_revision.cmp(&int_of(u, target)),
                (CompareTarget::Mod, u) => kv.mod_revision.cmp(&int_of(u, target)),
                (CompareTarget::Version, u) => kv.version.cmp(&int_of(u, target)),
                (CompareTarget::Lease, u) => kv.lease.cmp(&int_of(u, target)),
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => !ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if rr.kvs.is_empty() {
            // A missing key never matches a value compare; for the others it
            // compares as all zeros.
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(check(&KeyValue::default()));
        }
        Ok(rr.kvs.iter().all(check))
    }

    /// Put preconditions along the chosen path: the lease exists, and
    /// ignore_value/ignore_lease have a key to take them from.
    fn check_puts<'a>(
        &'a self,
        via: &'a Via<'_>,
        t: &'a pb::TxnRequest,
        path: &'a Path,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + 'a>> {
        Box::pin(async move {
            let ops = if path.succeeded {
                &t.success
            } else {
                &t.failure
            };
            let mut nested = path.nested.iter();
            for op in ops {
                match &op.request {
                    Some(pb::request_op::Request::RequestPut(p)) => {
                        if p.ignore_value || p.ignore_lease {
                            let rr = self.range_raw(via, &p.key, &[], 0, 1, true, false).await?;
                            if rr.kvs.is_empty() {
                                return Err(Error::KeyNotFound);
                            }
                        }
                        if p.lease != 0 && !self.lease_exists(via, p.lease).await? {
                            return Err(Error::LeaseNotFound);
                        }
                    }
                    Some(pb::request_op::Request::RequestTxn(n)) => {
                        if let Some(np) = nested.next() {
                            self.check_puts(via, n, np).await?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    fn check_ranges(&self, t: &pb::TxnRequest, path: &Path, current: i64) -> Result<(), Error> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(pb::request_op::Request::RequestRange(r)) if r.revision > 0 => {
                    self.check_revision(r.revision, current)?;
                }
                Some(pb::request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        self.check_ranges(n, np, current)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec<'a>(
        &'a self,
        via: &'a Via<'_>,
        t: &'a pb::TxnRequest,
        path: &'a Path,
        st: &'a mut WriteState,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<pb::ResponseOp>, Error>> + 'a>>
    {
        Box::pin(async move {
            use pb::response_op::Response;
            let ops = if path.succeeded {
                &t.success
            } else {
                &t.failure
            };
            let mut nested = path.nested.iter();
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                let resp = match &op.request {
                    Some(pb::request_op::Request::RequestRange(r)) => {
                        let rev = match via {
                            Via::Visible(v) if r.revision <= 0 => *v,
                            _ => r.revision.max(0),
                        };
                        let hdr = st.header_rev();
                        Some(Response::ResponseRange(
                            self.range_at(via, r, rev, hdr).await?,
                        ))
                    }
                    Some(pb::request_op::Request::RequestPut(p)) => {
                        Some(Response::ResponsePut(self.exec_put(via, p, st).await?))
                    }
                    Some(pb::request_op::Request::RequestDeleteRange(d)) => Some(
                        Response::ResponseDeleteRange(self.exec_delete(via, d, st).await?),
                    ),
                    Some(pb::request_op::Request::RequestTxn(n)) => {
                        let np = nested
                            .next()
                            .ok_or_else(|| Error::Internal("txn path mismatch".into()))?;
                        let responses = self.exec(via, n, np, st).await?;
                        Some(Response::ResponseTxn(pb::TxnResponse {
                            header: header(st.header_rev()),
                            succeeded: np.succeeded,
                            responses,
                        }))
                    }
                    None => None,
                };
                out.push(pb::ResponseOp { response: resp });
            }
            Ok(out)
        })
    }

    async fn ensure_rev(&self, st: &mut WriteState) -> i64 {
        match st.rev {
            Some(r) => r,
            None => {
                let r = self.inner.seq.assign().await;
                st.rev = Some(r);
                r
            }
        }
    }

    async fn apply(
        &self,
        via: &Via<'_>,
        shard: u32,
        ops: Vec<WriteOp>,
        st: &mut WriteState,
    ) -> Result<(), Error> {
        if matches!(via, Via::Visible(_)) {
            return Err(Error::Internal("write outside a fence".into()));
        }
        let rev = self.ensure_rev(st).await;
        let first_sub = st.next_sub;
        st.next_sub += ops.len() as i64;
        if let Via::Local(local, term) = via {
            if local.id != shard {
                return Err(Error::Internal(format!("shard {shard} not locked")));
            }
            local.apply(rev, first_sub, &ops, *term)?;
            st.parts.push(Part {
                shard,
                first_sub,
                ops,
            });
            return Ok(());
        }
        let Via::Fenced(fences) = via else {
            return Err(Error::Internal("write outside a fence".into()));
        };
        let (ch, term) = fences
            .get(&shard)
            .ok_or_else(|| Error::Internal(format!("shard {shard} not fenced")))?;
        let (tx, rx) = oneshot::channel();
        let part = Part {
            shard,
            first_sub,
            ops: ops.clone(),
        };
        ch.send(FencedOp::Apply {
            rev,
            first_sub,
            ops,
            term: *term,
            reply: tx,
        })
        .await
        .map_err(|_| Error::Internal("shard stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("shard stopped".into()))??;
        st.parts.push(part);
        Ok(())
    }

    async fn exec_put(
        &self,
        via: &Via<'_>,
        p: &pb::PutRequest,
        st: &mut WriteState,
    ) -> Result<pb::PutResponse, Error> {
        let mut prev = None;
        if p.prev_kv || p.ignore_value || p.ignore_lease {
            let rr = self.range_raw(via, &p.key, &[], 0, 1, false, false).await?;
            prev = rr.kvs.into_iter().next();
        }
        let mut value = p.value.to_vec();
        let mut lease = p.lease;
        if p.ignore_value || p.ignore_lease {
            let Some(prev) = &prev else {
                return Err(Error::KeyNotFound);
            };
            if p.ignore_value {
                value = prev.value.clone();
            }
            if p.ignore_lease {
                lease = prev.lease;
            }
        }
        let shard = self.shard_of(&p.key);
        let op = WriteOp::Put {
            key: p.key.to_vec(),
            value,
            lease,
        };
        self.apply(via, shard, vec![op], st).await?;
        Ok(pb::PutResponse {
            header: header(st.header_rev()),
            prev_kv: if p.prev_kv { prev.map(to_pb) } else { None },
        })
    }

    async fn exec_delete(
        &self,
        via: &Via<'_>,
        d: &pb::DeleteRangeRequest,
        st: &mut WriteState,
    ) -> Result<pb::DeleteRangeResponse, Error> {
        let rr = self
            .range_raw(via, &d.key, &d.range_end, 0, 0, !d.prev_kv, false)
            .await?;
        let deleted = rr.kvs.len() as i64;
        self.apply_deletes(via, rr.kvs.iter().map(|kv| &kv.key), st)
            .await?;
        Ok(pb::DeleteRangeResponse {
            header: header(st.header_rev()),
            deleted,
            prev_kvs: if d.prev_kv {
                rr.kvs.into_iter().map(to_pb).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Deletes `keys` (in key order) at the write's revision. Sub revisions
    /// follow key order, as etcd's do; consecutive keys of one shard go in
    /// one message.
    async fn apply_deletes<'k>(
        &self,
        via: &Via<'_>,
        keys: impl Iterator<Item = &'k Vec<u8>>,
        st: &mut WriteState,
    ) -> Result<(), Error> {
        let mut run: Vec<WriteOp> = Vec::new();
        let mut run_shard = None;
        for key in keys {
            let s = self.shard_of(key);
            if let Some(r) = run_shard.filter(|r| *r != s) {
                let ops = std::mem::take(&mut run);
                self.apply(via, r, ops, st).await?;
            }
            run_shard = Some(s);
            run.push(WriteOp::Delete { key: key.clone() });
        }
        if let Some(s) = run_shard {
            self.apply(via, s, run, st).await?;
        }
        Ok(())
    }

    fn lease_shard(&self, id: i64) -> u32 {
        lease_shard(id, self.shard_count())
    }

    async fn lease_exists(&self, via: &Via<'_>, id: i64) -> Result<bool, Error> {
        let s = self.lease_shard(id);
        if let Via::Local(local, _) = via {
            if local.id == s {
                return Ok(local.lease_exists(id));
            }
        }
        let Via::Fenced(fences) = via else {
            return Err(Error::Internal("lease check outside a fence".into()));
        };
        let (ch, _) = fences
            .get(&s)
            .ok_or_else(|| Error::Internal(format!("lease shard {s} not fenced")))?;
        let (tx, rx) = oneshot::channel();
        ch.send(FencedOp::LeaseExists(id, tx))
            .await
            .map_err(|_| Error::Internal("shard stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("shard stopped".into()))
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

    /// LeaseGrant: the TTL granted (raised to the minimum).
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.lease_grant_here(id, ttl).await,
            Route::To(l) => Ok(forward::read_ints(
                &self
                    .forward(l, forward::LEASE_GRANT, forward::ints(&[id, ttl]))
                    .await?,
                1,
            )?[0]),
        }
    }

    pub(crate) async fn lease_grant_here(&self, id: i64, ttl: i64) -> Result<i64, Error> {
        self.serving().await?;
        self.ask(self.lease_shard(id), |reply| ShardMsg::LeaseGrant {
            id,
            ttl,
            reply,
        })
        .await?
    }

    /// KeepAlive: the lease's TTL, renewed from now.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.lease_renew_here(id).await,
            Route::To(l) => Ok(forward::read_ints(
                &self
                    .forward(l, forward::LEASE_RENEW, forward::ints(&[id]))
                    .await?,
                1,
            )?[0]),
        }
    }

    pub(crate) async fn lease_renew_here(&self, id: i64) -> Result<i64, Error> {
        self.serving().await?;
        self.ask(self.lease_shard(id), |r| ShardMsg::LeaseRenew(id, r))
            .await?
    }

    /// TimeToLive: (granted TTL, seconds remaining, attached keys sorted
    /// when asked for), or None for an unknown lease.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<LeaseLife>, Error> {
        // Remaining time is known where leases expire: on the leader.
        match self.route().await? {
            Route::Here => self.lease_time_to_live_here(id, keys).await,
            Route::To(l) => forward::read_ttl(
                &self
                    .forward(l, forward::LEASE_TTL, forward::ints(&[id, keys as i64]))
                    .await?,
            ),
        }
    }

    pub(crate) async fn lease_time_to_live_here(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<LeaseLife>, Error> {
        let Some((granted, remaining)) = self
            .ask(self.lease_shard(id), |r| ShardMsg::LeaseGet(id, r))
            .await?
        else {
            return Ok(None);
        };
        let mut attached = Vec::new();
        if keys {
            for s in 0..self.shard_count() {
                attached.extend(self.ask(s, |r| ShardMsg::KeysWithLease(id, r)).await?);
            }
            attached.sort_unstable();
        }
        Ok(Some((granted, remaining, attached)))
    }

    /// Every lease, ascending by id.
    pub async fn lease_ids(&self) -> Result<Vec<i64>, Error> {
        let mut ids = Vec::new();
        for s in 0..self.shard_count() {
            ids.extend(self.ask(s, ShardMsg::LeaseIds).await?);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Revokes a lease: every attached key, in any shard, is deleted at one
    /// revision (watchers see one transaction), and the lease leaves its
    /// shard's table in the same commit. All shards are fenced, so no put
    /// can attach a key meanwhile. Returns the revision for the header.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.lease_revoke_here(id).await,
            Route::To(l) => Ok(forward::read_ints(
                &self
                    .forward(l, forward::LEASE_REVOKE, forward::ints(&[id]))
                    .await?,
                1,
            )?[0]),
        }
    }

    pub(crate) async fn lease_revoke_here(&self, id: i64) -> Result<i64, Error> {
        self.serving().await?;
        let fences = self.fence(0..self.shard_count()).await?;
        let via = Via::Fenced(&fences);
        let visible = self.inner.seq.visible();
        let keys = async {
            if !self.lease_exists(&via, id).await? {
                return Err(Error::LeaseNotFound);
            }
            let mut waits = Vec::with_capacity(fences.len());
            for (ch, _) in fences.values() {
                let (tx, rx) = oneshot::channel();
                ch.send(FencedOp::KeysWithLease(id, tx))
                    .await
                    .map_err(|_| Error::Internal("shard stopped".into()))?;
                waits.push(rx);
            }
            let mut keys = Vec::new();
            for w in waits {
                keys.extend(
                    w.await
                        .map_err(|_| Error::Internal("shard stopped".into()))?,
                );
            }
            keys.sort_unstable();
            Ok(keys)
        }
        .await;
        let keys = match keys {
            Ok(k) => k,
            Err(e) => {
                release(&fences).await;
                return Err(e);
            }
        };
        let mut st = WriteState {
            rev: None,
            voids: self.inner.seq.voids(),
            base_rev: visible,
            next_sub: 0,
            parts: Vec::new(),
        };
        if let Err(e) = self.apply_deletes(&via, keys.iter(), &mut st).await {
            // Dropping the fences makes a shard that applied a delete
            // drop it again.
            drop(fences);
            return Err(e);
        }
        self.commit(fences, &st, Some((self.lease_shard(id), id)))
            .await?;
        Ok(st.header_rev())
    }

    /// etcd's Defragment: every shard writes a fresh snapshot (compacted
    /// history dropped) and truncates its log, online.
    pub async fn defragment(&self) -> Result<(), Error> {
        for s in 0..self.shard_count() {
            self.ask(s, ShardMsg::Defragment)
                .await?
                .map_err(Error::Internal)?;
        }
        Ok(())
    }

    /// Writes every shard's part of one consistent backup (`backup.rs`):
    /// all shards are fenced, so the parts hold exactly the writes up to
    /// one revision. Returns the header and the part files, in shard order;
    /// the caller streams and then removes them.
    pub async fn backup(&self) -> Result<(crate::backup::Header, Vec<PathBuf>), Error> {
        static BACKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BACKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // On any member: the fences stop this member's writes, and the
        // parts are cut at one revision whatever a follower applies meanwhile.
        let fences = self.fence_for(0..self.shard_count(), false).await?;
        let mut last = 0;
        for (ch, _) in fences.values() {
            let (tx, rx) = oneshot::channel();
            let held = match ch.send(FencedOp::LastRevision(tx)).await {
                Ok(()) => rx.await.ok(),
                Err(_) => None,
            };
            let Some(held) = held else {
                release(&fences).await;
                return Err(Error::Internal("shard stopped".into()));
            };
            last = last.max(held);
        }
        let upto = last.max(self.inner.seq.visible());
        self.inner.seq.wait_visible(upto).await;
        let mut waits = Vec::with_capacity(fences.len());
        for (ch, _) in fences.values() {
            let (tx, rx) = oneshot::channel();
            if ch.send(FencedOp::Backup(n, upto, tx)).await.is_err() {
                release(&fences).await;
                return Err(Error::Internal("shard stopped".into()));
            }
            waits.push(rx);
        }
        let mut parts = Vec::with_capacity(waits.len());
        let mut failed = None;
        for w in waits {
            match w.await {
                Ok(Ok(path)) => parts.push(path),
                Ok(Err(e)) => failed = Some(Error::Internal(e)),
                Err(_) => failed = Some(Error::Internal("shard stopped".into())),
            }
        }
        let header = crate::backup::Header {
            shards: self.shard_count(),
            revision: upto,
            compact_revision: self.inner.seq.compact_revision(),
        };
        release(&fences).await;
        if let Some(e) = failed {
            for p in &parts {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok((header, parts))
    }

    /// Compact every shard at `rev`; returns the revision for the header.
    pub async fn compact(&self, rev: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.compact_here(rev).await,
            Route::To(l) => Ok(forward::read_ints(
                &self
                    .forward(l, forward::COMPACT, forward::ints(&[rev]))
                    .await?,
                1,
            )?[0]),
        }
    }

    pub(crate) async fn compact_here(&self, rev: i64) -> Result<i64, Error> {
        self.serving().await?;
        let visible = self.inner.seq.visible();
        if rev > visible {
            return Err(Error::FutureRevision);
        }
        if !self.inner.seq.try_compact(rev) {
            return Err(Error::Compacted);
        }
        let mut waits = Vec::new();
        for s in 0..self.shard_count() {
            let (tx, rx) = oneshot::channel();
            self.send(s, ShardMsg::Compact(rev, tx)).await?;
            waits.push(rx);
        }
        for w in waits {
            w.await
                .map_err(|_| Error::Internal("shard stopped".into()))?
                .map_err(Error::Internal)?;
        }
        Ok(visible)
    }
}

async fn release(fences: &Fences) {
    for (ch, _) in fences.values() {
        let _ = ch.send(FencedOp::Release).await;
    }
}

fn int_of(u: &Option<pb::compare::TargetUnion>, target: pb::compare::CompareTarget) -> i64 {
    use pb::compare::{CompareTarget as T, TargetUnion as U};
    match (target, u) {
        (T::Create, Some(U::CreateRevision(v))) => *v,
        (T::Mod, Some(U::ModRevision(v))) => *v,
        (T::Version, Some(U::Version(v))) => *v,
        (T::Lease, Some(U::Lease(v))) => *v,
        _ => 0,
    }
}

/// etcd's isTxnReadonly: no put or delete anywhere, in either branch.
pub fn is_read_only(t: &pb::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(_))
            | Some(pb::request_op::Request::RequestDeleteRange(_)) => false,
            Some(pb::request_op::Request::RequestTxn(n)) => is_read_only(n),
            _ => true,
        })
}

/// Every shard any compare or op of either branch can touch.
fn collect_shards(t: &pb::TxnRequest, n: u32, out: &mut std::collections::BTreeSet<u32>) {
    let mut add = |key: &[u8], end: &[u8]| {
        if end.is_empty() {
            out.insert(shard_of(key, n));
        } else {
            out.extend(0..n);
        }
    };
    for c in &t.compare {
        add(&c.key, &c.range_end);
    }
    let mut nested = Vec::new();
    let mut leases = Vec::new();
    for op in t.success.iter().chain(t.failure.iter()) {
        match &op.request {
            Some(pb::request_op::Request::RequestRange(r)) => add(&r.key, &r.range_end),
            Some(pb::request_op::Request::RequestPut(p)) => {
                add(&p.key, &[]);
                if p.lease != 0 {
                    // The lease's existence is checked under its fence, so
                    // it cannot be revoked between check and write.
                    leases.push(p.lease);
                }
            }
            Some(pb::request_op::Request::RequestDeleteRange(d)) => add(&d.key, &d.range_end),
            Some(pb::request_op::Request::RequestTxn(t)) => nested.push(t),
            None => {}
        }
    }
    out.extend(leases.into_iter().map(|l| lease_shard(l, n)));
    for t in nested {
        collect_shards(t, n, out);
    }
}
