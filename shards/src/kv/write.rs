//! The write coordinator: one code path for Put, DeleteRange and Txn (see
//! docs/revisions-and-shards.md, "A write").

use std::collections::BTreeMap;

use ferrokv_mvcc::WriteOp;
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::record::Record;
use crate::shard::{FencedOp, Shard, ShardMsg};

use super::eval::{self, is_read_only, View, WriteState};
use super::{header, Engine, Route};
use super::{lease_shard, shard_of};

/// Bound on ops one coordinator may have queued for a fenced shard. A
/// coordinator awaits each op's reply before the next one to that shard,
/// so one is enough, and a one-slot channel needs no slot array (a fence
/// per write made the array's allocation a visible cost).
const FENCED_OPS_PENDING_MAX: usize = 1;

/// Fenced shards: the channel to each one's fenced task and the term its
/// group is led in here (the coordinator writes in that term).
pub(super) type Fences = BTreeMap<u32, (async_channel::Sender<FencedOp>, u64)>;

/// Where reads go: the visible state at a revision, or the latest state of
/// shards fenced by this coordinator (which includes its own earlier writes).
pub(super) enum Via<'a> {
    Visible(i64),
    Fenced(&'a Fences),
    /// This core's own shard, its write lock held by this coordinator:
    /// reads and applies are direct calls, no message and no task switch.
    /// The term is the one this member leads the shard's group in.
    Local(&'a Shard, u64),
}

/// The engine's view of the shards for a transaction's evaluation: `Via`
/// with the engine that routes and sequences.
pub(super) struct Shards<'a> {
    pub(super) engine: &'a Engine,
    pub(super) via: Via<'a>,
}

impl View for Shards<'_> {
    fn at(&self) -> Option<i64> {
        match self.via {
            Via::Visible(v) => Some(v),
            Via::Fenced(_) | Via::Local(..) => None,
        }
    }

    fn seq(&self) -> &crate::Sequencer {
        &self.engine.inner.seq
    }

    fn shard_of(&self, key: &[u8]) -> u32 {
        self.engine.shard_of(key)
    }

    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<ferrokv_mvcc::RangeResult, Error> {
        self.engine
            .range_raw(&self.via, key, range_end, rev, limit, keys_only, count_only)
            .await
    }

    async fn lease_exists(&self, id: i64) -> Result<bool, Error> {
        let s = self.engine.lease_shard(id);
        let fences = match &self.via {
            Via::Local(local, _) if local.id == s => return Ok(local.lease_exists(id)),
            Via::Fenced(fences) => fences,
            _ => return Err(Error::Internal("lease check outside a fence".into())),
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

    async fn apply(
        &self,
        shard: u32,
        rev: i64,
        first_sub: i64,
        ops: &[WriteOp],
    ) -> Result<(), Error> {
        match &self.via {
            Via::Local(local, term) if local.id == shard => {
                local.apply(rev, first_sub, ops, *term).map(|_| ())
            }
            Via::Fenced(fences) => {
                let (ch, term) = fences
                    .get(&shard)
                    .ok_or_else(|| Error::Internal(format!("shard {shard} not fenced")))?;
                let (tx, rx) = oneshot::channel();
                ch.send(FencedOp::Apply {
                    rev,
                    first_sub,
                    ops: ops.to_vec(),
                    term: *term,
                    reply: tx,
                })
                .await
                .map_err(|_| Error::Internal("shard stopped".into()))?;
                rx.await
                    .map_err(|_| Error::Internal("shard stopped".into()))?
                    .map(|_| ())
            }
            Via::Local(..) => Err(Error::Internal(format!("shard {shard} not locked"))),
            Via::Visible(_) => Err(Error::Internal("write outside a fence".into())),
        }
    }
}

impl Engine {
    pub(super) fn view<'a>(&'a self, via: Via<'a>) -> Shards<'a> {
        Shards { engine: self, via }
    }
}

impl Engine {
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
                let b = match self.auth_rev {
                    Some(rev) => {
                        let mut body = forward::ints(&[rev as i64]);
                        body.extend_from_slice(&t.encode_to_vec());
                        self.forward(l, forward::TXN_CHECKED, body).await?
                    }
                    None => self.forward(l, forward::TXN, t.encode_to_vec()).await?,
                };
                let resp = pb::TxnResponse::decode(b.as_slice())
                    .map_err(|e| Error::Internal(format!("forwarded txn reply: {e}")))?;
                // A client reading here next at the header's revision must
                // not be told it is in the future: wait (bounded) until this
                // member sees it too.
                self.wait_visible_here(resp.header.as_ref().map_or(0, |h| h.revision))
                    .await;
                Ok(resp)
            }
        }
    }

    /// A transaction evaluated by this member (the leader, for a write).
    pub(crate) async fn txn_here(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        if is_read_only(&t) {
            let visible = self.inner.seq.visible();
            let (path, responses) =
                eval::read_only(&self.view(Via::Visible(visible)), &t, visible).await?;
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
    pub(super) async fn spawn_write(
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
    pub(super) async fn fence(
        &self,
        involved: impl IntoIterator<Item = u32>,
    ) -> Result<Fences, Error> {
        self.fence_for(involved, true).await
    }

    pub(super) async fn fence_for(
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
    pub(super) async fn commit(
        &self,
        fences: Fences,
        st: &WriteState,
        revoke: Option<(u32, i64)>,
    ) -> Result<(), Error> {
        let mut waits = Vec::new();
        let mut failed = None;
        for (s, (ch, term)) in &fences {
            let records = eval::records(st, *s, revoke);
            let revoke = revoke.filter(|(ls, _)| ls == s).map(|(_, id)| id);
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

    pub(super) async fn write_txn(
        &self,
        t: pb::TxnRequest,
        involved: std::collections::BTreeSet<u32>,
    ) -> Result<pb::TxnResponse, Error> {
        let epoch = self.inner.leadership.serving_epoch();
        let voids = self.inner.seq.voids();
        let local = &self.inner.local;
        if involved.len() == 1 && involved.contains(&local.id) {
            // This core's shard alone: take its lock here and work on it
            // directly instead of through a fenced task.
            let Some(permit) = local.lock().await else {
                return Err(Error::Internal("shard stopped".into()));
            };
            let term = local.leading_term().ok_or(Error::LeaderChanged)?;
            let (path, st, responses) =
                match eval::evaluate(&self.view(Via::Local(local, term)), &t).await {
                    Ok(done) => done,
                    Err((e, applied)) => {
                        if let Some(rev) = applied {
                            local.abandon(rev, term);
                        }
                        drop(permit);
                        return Err(self.settle_refusal(e, voids, epoch).await);
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
                    self.read_settled(st.base_rev, st.voids, epoch).await?
                }
            };
            return Ok(pb::TxnResponse {
                header: header(header_rev),
                succeeded: path.succeeded,
                responses,
            });
        }
        let fences = self.fence(involved).await?;
        let (path, st, responses) = match eval::evaluate(&self.view(Via::Fenced(&fences)), &t).await
        {
            Ok(done) => done,
            Err((e, _)) => {
                // Dropping the fences tells each fenced task; one that
                // applied something drops it (`Shard::abandon`).
                drop(fences);
                return Err(self.settle_refusal(e, voids, epoch).await);
            }
        };
        let wrote = st.rev.is_some();
        self.commit(fences, &st, None).await?;
        let header_rev = if wrote {
            st.header_rev()
        } else {
            self.read_settled(st.base_rev, st.voids, epoch).await?
        };
        Ok(pb::TxnResponse {
            header: header(header_rev),
            succeeded: path.succeeded,
            responses,
        })
    }

    /// A write transaction that wrote nothing read (and compared against)
    /// the latest state of its shards, which may hold writes not yet
    /// visible: the state after revision `seen` (the last one assigned
    /// while it held its locks). Its reply waits until that is visible and
    /// kept, and its header names it (not a later revision: a write
    /// assigned after it could have changed what it read).
    ///
    /// It also waits for a quorum to confirm this member still leads, as a
    /// linearizable read does: nothing went through the log, so without
    /// that a leader paused past an election (SIGSTOP, a long stall) could
    /// answer from the state it had before another leader took writes. The
    /// confirmation comes after the evaluation, so no leader of a later
    /// term committed anything before the state read here was the latest
    /// (group 0 suffices: only a member leading every group, group 0 among
    /// them, assigns revisions).
    pub(super) async fn read_settled(
        &self,
        seen: i64,
        voids: u64,
        epoch: Option<u64>,
    ) -> Result<i64, Error> {
        self.inner
            .seq
            .wait_committed(seen, voids)
            .await
            .map_err(|_| Error::LeaderChanged)?;
        if !self.single_voter() {
            self.read_index_here().await?;
        }
        // What it read may have been voided by a marker counted before `voids`
        // was taken; a marker is only written by a new start, so one stretch
        // of serving around the whole request rules that out.
        if epoch.is_none() || self.inner.leadership.serving_epoch() != epoch {
            return Err(Error::LeaderChanged);
        }
        Ok(seen)
    }

    /// A refusal decided against the latest state of fenced shards or of a
    /// lease table (a lease missing or already there, a key missing) may
    /// rest on writes and revokes that are not visible yet: it is answered
    /// only once everything assigned before it is visible and kept, as a
    /// write that wrote nothing is ([`Engine::read_settled`]). Otherwise a
    /// client told "lease not found" could then read a state in which the
    /// revoke has not happened (found by the robustness suite). Other
    /// errors pass unchanged.
    pub(super) async fn settle_refusal(&self, e: Error, voids: u64, epoch: Option<u64>) -> Error {
        if !matches!(
            e,
            Error::LeaseNotFound | Error::LeaseExists | Error::KeyNotFound
        ) {
            return e;
        }
        match self
            .read_settled(
                self.inner.seq.last_assigned().max(self.inner.seq.visible()),
                voids,
                epoch,
            )
            .await
        {
            Ok(_) => e,
            Err(changed) => changed,
        }
    }
}

pub(super) async fn release(fences: &Fences) {
    for (ch, _) in fences.values() {
        let _ = ch.send(FencedOp::Release).await;
    }
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
