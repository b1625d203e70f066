//! Reads: ranges fanned out to the shards and merged in key order, etcd's
//! filters and sorting, and what makes a read linearizable.

use ferrokv_mvcc::RangeResult;
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::shard::{FencedOp, RangeArgs, ShardMsg};

use super::eval;
use super::write::Via;
use super::{Engine, Route, LEADER_WAIT};

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
        let mut results = Vec::with_capacity(waits.len());
        for w in waits {
            results.push(
                w.await
                    .map_err(|_| Error::Internal("shard stopped".into()))??,
            );
        }
        Ok(eval::merge(results, limit))
    }

    /// A linearizable (or serializable: one member, the same) read at the
    /// visible revision or an older one.
    pub async fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, Error> {
        if !r.serializable {
            self.linearizable().await?;
        }
        let visible = self.inner.seq.visible();
        let rev = if r.revision <= 0 { visible } else { r.revision };
        eval::check_revision(&self.inner.seq, rev, visible)?;
        eval::range_at(&self.view(Via::Visible(visible)), r, rev, visible).await
    }
}
