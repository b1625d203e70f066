//! What concerns the members as a whole: a new leader's start (terms
//! committed, markers), moving the leadership, snapshot pieces for another
//! member, backups cut at one revision, compaction and defragmentation.

use std::path::PathBuf;

use futures_channel::oneshot;

use crate::error::Error;
use crate::forward;
use crate::record::Record;
use crate::shard::{FencedOp, ShardMsg};

use super::write::release;
use super::{Engine, Route, LEADER_WAIT};

/// Backups begun again because a compaction overtook a part's copy,
/// before the last attempt copies every part whole under its fence.
const BACKUP_CUT_ATTEMPTS: usize = 3;

impl Engine {
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
    /// all shards are fenced while each begins its cut, so the parts hold
    /// exactly the writes up to one revision; they are copied and written
    /// after the fences are released. A cut that a compaction overtook
    /// makes the backup begin again; the last attempt copies each part
    /// whole under its fence. Returns the header and the part files, in
    /// shard order; the caller streams and then removes them.
    pub async fn backup(&self) -> Result<(crate::backup::Header, Vec<PathBuf>), Error> {
        static BACKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for attempt in 0..=BACKUP_CUT_ATTEMPTS {
            let n = BACKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.backup_once(n, attempt == BACKUP_CUT_ATTEMPTS).await {
                Err(Some(e)) => return Err(e),
                Err(None) => log::info!("backup {n}: a compaction overtook its copy; again"),
                Ok(done) => return Ok(done),
            }
        }
        Err(Error::Internal("backup: overtaken by compactions".into()))
    }

    /// One attempt of [`Engine::backup`]; `Err(None)`: overtaken, again.
    async fn backup_once(
        &self,
        n: u64,
        whole: bool,
    ) -> Result<(crate::backup::Header, Vec<PathBuf>), Option<Error>> {
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
                return Err(Some(Error::Internal("shard stopped".into())));
            };
            last = last.max(held);
        }
        let upto = last.max(self.inner.seq.visible());
        // Bounded: the fences hold back a marker that a hole may need.
        let settled = futures_lite::future::or(
            async {
                self.inner.seq.wait_visible(upto).await;
                true
            },
            async {
                glommio::timer::sleep(LEADER_WAIT).await;
                false
            },
        )
        .await;
        if !settled {
            release(&fences).await;
            return Err(Some(Error::Timeout));
        }
        let mut waits = Vec::with_capacity(fences.len());
        for (ch, _) in fences.values() {
            let (tx, rx) = oneshot::channel();
            if ch.send(FencedOp::Backup(n, upto, whole, tx)).await.is_err() {
                release(&fences).await;
                return Err(Some(Error::Internal("shard stopped".into())));
            }
            waits.push(rx);
        }
        let mut begun = Vec::with_capacity(waits.len());
        let mut failed = None;
        for w in waits {
            match w.await {
                Ok(Ok(part)) => begun.push(part),
                Ok(Err(e)) => failed = Some(Error::Internal(e)),
                Err(_) => failed = Some(Error::Internal("shard stopped".into())),
            }
        }
        let header = crate::backup::Header {
            shards: self.shard_count(),
            revision: upto,
            compact_revision: self.inner.seq.compact_revision(),
        };
        // The cuts hold the revision: writes go on while the parts are
        // copied (on their shards' cores) and written (on glommio's
        // blocking thread, not a shard core).
        release(&fences).await;
        if let Some(e) = failed {
            return Err(Some(e));
        }
        let mut parts: Vec<PathBuf> = Vec::with_capacity(begun.len());
        let remove = |parts: &[PathBuf]| {
            for p in parts {
                let _ = std::fs::remove_file(p);
            }
        };
        for part in begun {
            let image = match part.image.await {
                Ok(Ok(image)) => image,
                Ok(Err(ferrokv_mvcc::Error::Overtaken(_))) => {
                    remove(&parts);
                    return Err(None);
                }
                Ok(Err(e)) => {
                    remove(&parts);
                    return Err(Some(Error::Internal(e.to_string())));
                }
                Err(_) => {
                    remove(&parts);
                    return Err(Some(Error::Internal("shard stopped".into())));
                }
            };
            let at = part.path.clone();
            let written = glommio::executor()
                .spawn_blocking(move || image.write(&at))
                .await;
            parts.push(part.path);
            if let Err(e) = written {
                remove(&parts);
                return Err(Some(Error::Internal(e.to_string())));
            }
        }
        Ok((header, parts))
    }

    /// Compact every shard at `rev`; returns the revision for the header.
    pub async fn compact(&self, rev: i64) -> Result<i64, Error> {
        match self.route().await? {
            Route::Here => self.compact_here(rev).await,
            Route::To(l) => self.forward_int(l, forward::COMPACT, &[rev]).await,
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
        // Every shard's lock: each revision handed out so far is in its
        // shards' logs (a write holds its shards' locks from its revision
        // to its submission), and none is handed out until the records
        // are in too. So in every shard's log each write above `at` comes
        // after the record, and a member is never past `at` without it.
        let fences = self.fence(0..self.shard_count()).await?;
        let at = self.inner.seq.last_assigned();
        let mut waits = Vec::new();
        for (ch, term) in fences.values() {
            let (tx, rx) = oneshot::channel();
            let op = FencedOp::Commit {
                records: vec![Record::Compact { rev, at }],
                revoke: None,
                term: *term,
                reply: tx,
            };
            if ch.send(op).await.is_ok() {
                waits.push(rx);
            }
        }
        let fenced = fences.len();
        drop(fences);
        if waits.len() < fenced {
            return Err(Error::Internal("shard stopped".into()));
        }
        for w in waits {
            w.await
                .map_err(|_| Error::Internal("shard stopped".into()))??;
        }
        // In effect here before the answer (etcd answers once applied):
        // a read made after it is refused on every member. The revisions
        // up to `at` commit or a new leader's marker voids them, so this
        // ends; bounded all the same.
        let effect = async {
            self.inner.seq.wait_compacted(rev).await;
            true
        };
        let bound = async {
            glommio::timer::sleep(LEADER_WAIT).await;
            false
        };
        if !futures_lite::future::or(effect, bound).await {
            return Err(Error::Timeout);
        }
        Ok(self.inner.seq.visible())
    }
}
