//! Lease calls: grant, renew and time-to-live on the lease's shard (on the
//! leader: leases expire there), and revoke as a write across every shard.

use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::shard::{FencedOp, ShardMsg};

use super::eval::{self, View, WriteState};
use super::lease_shard;
use super::write::{release, Via};
use super::{Engine, Route};

/// A lease's granted TTL, seconds remaining, and attached keys (sorted when
/// asked for).
pub type LeaseLife = (i64, i64, Vec<Vec<u8>>);

impl Engine {
    pub(super) fn lease_shard(&self, id: i64) -> u32 {
        lease_shard(id, self.shard_count())
    }

    /// LeaseGrant: the TTL granted (raised to the minimum), and the
    /// revision of the state it took effect in (for the header; visible
    /// here once this returns).
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64), Error> {
        match self.route().await? {
            Route::Here => self.lease_grant_here(id, ttl).await,
            Route::To(l) => {
                let b = self
                    .forward(l, forward::LEASE_GRANT, forward::ints(&[id, ttl]))
                    .await?;
                let v = forward::read_ints(&b, 2)?;
                self.wait_visible_here(v[1]).await;
                Ok((v[0], v[1]))
            }
        }
    }

    pub(crate) async fn lease_grant_here(&self, id: i64, ttl: i64) -> Result<(i64, i64), Error> {
        self.serving().await?;
        let epoch = self.inner.leadership.serving_epoch();
        let voids = self.inner.seq.voids();
        let granted = self
            .ask(self.lease_shard(id), |reply| ShardMsg::LeaseGrant {
                id,
                ttl,
                reply,
            })
            .await?;
        // The lease table holds revokes whose revisions may not be visible
        // yet: a grant (or its refusal) is answered only once the state it
        // took effect in is visible and kept, and its header names it.
        match granted {
            Ok((ttl, at)) => {
                self.inner
                    .seq
                    .wait_committed(at, voids)
                    .await
                    .map_err(|_| Error::LeaderChanged)?;
                if epoch.is_none() || self.inner.leadership.serving_epoch() != epoch {
                    return Err(Error::LeaderChanged);
                }
                Ok((ttl, at))
            }
            Err(e) => Err(self.settle_refusal(e, voids, epoch).await),
        }
    }

    /// KeepAlive: the lease's TTL, renewed from now.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.lease_renew_here(id).await,
            Route::To(l) => self.forward_int(l, forward::LEASE_RENEW, &[id]).await,
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
            Route::To(l) => self.forward_int(l, forward::LEASE_REVOKE, &[id]).await,
        }
    }

    pub(crate) async fn lease_revoke_here(&self, id: i64) -> Result<i64, Error> {
        self.serving().await?;
        let epoch = self.inner.leadership.serving_epoch();
        let voids = self.inner.seq.voids();
        let fences = self.fence(0..self.shard_count()).await?;
        let view = self.view(Via::Fenced(&fences));
        // Every shard is fenced: no revision is handed out until the
        // revoke commits, so the writes ordered before it are those up to
        // the last one assigned (some perhaps not visible yet).
        let before = self.inner.seq.last_assigned().max(self.inner.seq.visible());
        let keys = async {
            if !view.lease_exists(id).await? {
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
                return Err(self.settle_refusal(e, voids, epoch).await);
            }
        };
        let mut st = WriteState::new(before, self.inner.seq.voids());
        let ls = self.lease_shard(id);
        if let Err(e) = eval::revoke_deletes(&view, keys.iter(), ls, &mut st).await {
            // Dropping the fences makes a shard that applied a delete
            // drop it again.
            drop(fences);
            return Err(e);
        }
        self.commit(fences, &st, Some((ls, id))).await?;
        if st.rev.is_none() {
            // It deleted nothing, so it took no revision: its header is the
            // state it took effect in, which holds every write ordered
            // before it; answered once that is visible (and kept).
            self.inner
                .seq
                .wait_committed(before, st.voids)
                .await
                .map_err(|_| Error::LeaderChanged)?;
            if epoch.is_none() || self.inner.leadership.serving_epoch() != epoch {
                return Err(Error::LeaderChanged);
            }
        }
        Ok(st.header_rev())
    }
}
