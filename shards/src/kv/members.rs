//! Membership changes through the engine: one at a time, on the serving
//! leader, proposed in every group (see `crate::membership`).

use std::collections::BTreeSet;

use futures_channel::oneshot;
use raft::eraftpb::ConfChangeType;

use crate::error::Error;
use crate::forward;
use crate::membership::{Change, ClusterView};
use crate::shard::ShardMsg;

use super::{Engine, Route, LEADER_WAIT};

/// etcd promotes a learner whose log has reached this share of the
/// leader's (its `readyPercent`).
const PROMOTE_READY_PERCENT: u64 = 90;

impl Engine {
    /// A membership change (the server's request, which its planner reads)
    /// made by the serving leader; from a follower it is forwarded there.
    /// Resolves with the change once every group of the member that made
    /// it applied it.
    pub async fn change_members(&self, request: Vec<u8>) -> Result<Change, Error> {
        // A leader that hands over (the change would cut it off) has made
        // nothing: ask the new one, once.
        for _ in 0..2 {
            let r = match self.route().await? {
                Route::Here => self.change_members_here(&request, false).await,
                Route::To(l) => match self.forward(l, forward::MEMBERS, request.clone()).await {
                    Ok(b) => Change::decode(&b).map_err(Error::Internal),
                    Err(e) => Err(e),
                },
            };
            match r {
                Err(Error::HandedOver) => continue,
                other => return other,
            }
        }
        Err(Error::LeaderChanged)
    }

    /// A change some groups of this member applied and others not yet is
    /// about this member as a voter (it adds, promotes or removes it).
    pub(crate) fn subject_of_pending_change(&self) -> bool {
        let me = self.inner.leadership.member_id();
        self.inner
            .changes
            .pending()
            .is_some_and(|(c, _)| c.id == me && c.conf != ConfChangeType::AddLearnerNode)
    }

    /// The membership as this member shows it: the last change every one
    /// of its groups applied.
    pub fn members(&self) -> Change {
        self.inner.changes.completed()
    }

    /// On this member (it leads, or is about to): `forwarded` says another
    /// member sent the request, and gets [`Error::HandedOver`] back if this
    /// one hands its leadership over instead of making the change.
    pub(crate) async fn change_members_here(
        &self,
        request: &[u8],
        forwarded: bool,
    ) -> Result<Change, Error> {
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        let _turn = loop {
            if let Some(t) = self.inner.changes.begin() {
                break t;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout);
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        };
        futures_lite::future::or(self.change_members_now(request, forwarded), async {
            glommio::timer::sleep(LEADER_WAIT).await;
            Err(Error::Timeout)
        })
        .await
    }

    async fn change_members_now(&self, request: &[u8], forwarded: bool) -> Result<Change, Error> {
        // A request forwarded by a leader that just handed over (removing
        // itself) may arrive before this member's start is done.
        self.serving().await?;
        self.finish_member_change().await?;
        let changes = &self.inner.changes;
        let current = changes.completed();
        let view = self.cluster_view().await?;
        let planned = changes.planner().plan(&current.members, request, &view)?;
        let me = self.inner.leadership.member_id();
        if planned.not_by_leader {
            // A leader does not remove itself nor move its own URLs: it
            // hands the leadership to another member that is up, which
            // makes the change.
            let to = self
                .voters()
                .await?
                .into_iter()
                .find(|v| *v != me && view.active.contains(v))
                .ok_or_else(|| Error::Membership(crate::membership::UNHEALTHY.to_string()))?;
            self.move_leader(to).await?;
            if forwarded {
                // The member that forwarded it asks the new leader itself:
                // a call to this one may be cut by the change.
                return Err(Error::HandedOver);
            }
            let b = self.forward(to, forward::MEMBERS, request.to_vec()).await?;
            return Change::decode(&b).map_err(Error::Internal);
        }
        let change = Change {
            version: current.version + 1,
            conf: planned.conf,
            id: planned.id,
            members: planned.members,
        };
        log::info!(
            "membership: proposing change {} (member {:x}, {:?}) in every group",
            change.version,
            change.id,
            change.conf
        );
        let all: Vec<u32> = (0..self.shard_count()).collect();
        self.propose_member_change(&change, &all).await?;
        Ok(change)
    }

    /// At a leader's start: [`Engine::finish_member_change`], unless a
    /// change is being made already (which finishes it first).
    pub(crate) async fn settle_member_change(&self) -> Result<(), Error> {
        let Some(_turn) = self.inner.changes.begin() else {
            return Ok(());
        };
        futures_lite::future::or(self.finish_member_change(), async {
            glommio::timer::sleep(LEADER_WAIT).await;
            Err(Error::Timeout)
        })
        .await
    }

    /// A change some groups applied and others lack (its leader failed
    /// midway) is proposed in the others: a leader does this before it
    /// makes a change of its own, and at its start.
    async fn finish_member_change(&self) -> Result<(), Error> {
        if let Some((change, lacking)) = self.inner.changes.pending() {
            log::info!(
                "membership: finishing change {} (member {:x}) in groups {lacking:?}",
                change.version,
                change.id
            );
            self.propose_member_change(&change, &lacking).await?;
        }
        Ok(())
    }

    async fn propose_member_change(&self, change: &Change, groups: &[u32]) -> Result<(), Error> {
        let mut waits = Vec::with_capacity(groups.len());
        for g in groups {
            let (tx, rx) = oneshot::channel();
            self.send(*g, ShardMsg::ConfChange(change.clone(), tx))
                .await?;
            waits.push(rx);
        }
        for w in waits {
            w.await
                .map_err(|_| Error::Internal("shard stopped".into()))??;
        }
        Ok(())
    }

    /// The voters of group 0 (every group has the same once no change is
    /// half made).
    async fn voters(&self) -> Result<Vec<u64>, Error> {
        self.ask(0, ShardMsg::Voters).await
    }

    /// What the planner needs to know of the members now.
    async fn cluster_view(&self) -> Result<ClusterView, Error> {
        let me = self.inner.leadership.member_id();
        let mut view = ClusterView {
            me,
            active: BTreeSet::from([me]),
            started: BTreeSet::from([me]),
            in_sync: BTreeSet::new(),
            names: Default::default(),
        };
        if let Some(p) = self.inner.peers.get() {
            for info in p.peers() {
                if info.connected {
                    view.active.insert(info.member_id);
                }
                if !info.name.is_empty() {
                    view.started.insert(info.member_id);
                    view.names
                        .insert(info.member_id, (info.name, info.client_urls));
                }
            }
        }
        // A learner is in sync when every group's log on it is close to
        // the leader's.
        let mut in_sync: Option<BTreeSet<u64>> = None;
        for s in 0..self.shard_count() {
            let progress = self.ask(s, ShardMsg::Learners).await?;
            let here: BTreeSet<u64> = progress
                .into_iter()
                .filter(|(_, p)| {
                    p.is_some_and(|(matched, last)| matched * 100 >= last * PROMOTE_READY_PERCENT)
                })
                .map(|(id, _)| id)
                .collect();
            in_sync = Some(match in_sync {
                None => here,
                Some(all) => all.intersection(&here).copied().collect(),
            });
        }
        view.in_sync = in_sync.unwrap_or_default();
        Ok(view)
    }
}
