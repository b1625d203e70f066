//! Reads: ranges fanned out to the shards and merged in key order, etcd's
//! filters and sorting, and what makes a read linearizable.

use ferrokv_mvcc::RangeResult;
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::shard::{FencedOp, RangeArgs, ShardMsg};

use super::write::Via;
use super::{header, to_pb, Engine, Route, LEADER_WAIT};

impl Engine {
    /// Makes the next read at this member's visible revision linearizable:
    /// on the leader, raft's ReadIndex confirms it still leads; on a
    /// follower, the leader's visible revision (after its ReadIndex) is
    /// waited for here.
    pub(super) async fn linearizable(&self) -> Result<(), Error> {
        if self.single_voter() {
            return Ok(());
        }
        let target = match self.route().await? {
            Route::Here => return self.read_index_here().await.map(|_| ()),
            Route::To(l) => {
                let b = self
                    .forward(l, forward::READ_INDEX, forward::ints(&[]))
                    .await?;
                let v = forward::read_ints(&b, 1)?;
                if let Ok(c) = forward::read_ints(&b, 2) {
                    // A compaction is not ordered with the revisions in the
                    // shard logs: at the leader's visible revision this
                    // member may not have applied a compaction the leader
                    // answered before the read. Its point counts here from
                    // now on (etcd's is raft-ordered; the robustness
                    // workloads found a read at a compacted revision served
                    // by a follower). The store compacts when the record
                    // arrives.
                    self.inner.seq.compacted(c[1]);
                }
                if let Ok(a) = forward::read_ints(&b, 3) {
                    // Auth changes acknowledged before this read hold for
                    // it here too: the permission check that follows the
                    // read sees them.
                    if !self.auth().wait_revision(a[2] as u64, LEADER_WAIT).await {
                        return Err(Error::Timeout);
                    }
                }
                v[0]
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

    /// Waits until this member's state is at least as new as every write
    /// acknowledged before the call, anywhere (a linearizable read's
    /// ReadIndex, auth revision included).
    pub async fn read_barrier(&self) -> Result<(), Error> {
        self.linearizable().await
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

    /// Range across shards, merged by key. `rev` 0 means latest for fenced
    /// reads; for visible reads the caller resolved it already.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn range_raw(
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
    pub(super) async fn range_at(
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
            // A stable sort on top of key order, with the comparator
            // reversed for DESCEND (etcd's `sort.Reverse`): keys that tie
            // on the target stay in ascending key order either way, as
            // etcd answers them (reversing the ascending result would
            // reverse the ties too).
            let by = |a: &ferrokv_mvcc::KeyValue, b: &ferrokv_mvcc::KeyValue| match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                kvs.sort_by(|a, b| by(b, a));
            } else {
                kvs.sort_by(by);
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

    pub(super) fn check_revision(&self, rev: i64, current: i64) -> Result<(), Error> {
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
}
