//! One shard: its MVCC store and raft log, owned by one core. Other cores
//! reach it only through `ShardMsg`s. Writers take the shard's write lock
//! (a fence) for the span of evaluating and submitting one write, so each
//! shard's log is in revision order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ferrokv_mvcc::{Event, RangeResult, Revision, Store, WriteOp};
use ferrokv_raft::ShardLog;
use futures_channel::oneshot;
use glommio::sync::Semaphore;

use crate::lease::LeaseTable;
use crate::record::Record;
use crate::sequencer::Sequencer;
use crate::{Engine, Error};

/// Bound on messages queued for one shard core.
pub const SHARD_MESSAGES_PENDING_MAX: usize = 4096;

pub struct RangeArgs {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub rev: i64,
    pub limit: usize,
    pub keys_only: bool,
    pub count_only: bool,
}

pub type Reply<T> = oneshot::Sender<T>;

/// A history read for the watch hub: events with main revision in
/// `from..=to` on keys in `key..range_end` (etcd range form).
pub struct EventsArgs {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub from: i64,
    pub to: i64,
    pub prev_kv: bool,
    /// Stop after the first whole revision that reaches this many events.
    pub events_max: usize,
}

/// Events in (main, sub) order and the last revision they fully cover
/// (`to`, or less when `events_max` cut the read short).
pub type EventsResult = Result<(Vec<(Revision, Event)>, i64), ferrokv_mvcc::Error>;

pub enum ShardMsg {
    /// A read at a visible revision: needs no lock.
    Range(RangeArgs, Reply<Result<RangeResult, ferrokv_mvcc::Error>>),
    /// Take the write lock for one coordinator; its ops follow on the channel.
    Fence(async_channel::Receiver<FencedOp>, Reply<()>),
    Compact(i64, Reply<Result<(), String>>),
    Status(Reply<ShardStatus>),
    /// History for watchers; needs no lock (only visible revisions are asked).
    Events(EventsArgs, Reply<EventsResult>),
    /// Grant a lease owned by this shard; the reply (the TTL granted) comes
    /// once the grant is durable.
    LeaseGrant {
        id: i64,
        ttl: i64,
        reply: Reply<Result<i64, Error>>,
    },
    /// KeepAlive: the lease's TTL, or `LeaseNotFound` (also once expired).
    LeaseRenew(i64, Reply<Result<i64, Error>>),
    /// A lease of this shard: (granted TTL, whole seconds remaining).
    LeaseGet(i64, Reply<Option<(i64, i64)>>),
    /// Every lease this shard owns.
    LeaseIds(Reply<Vec<i64>>),
    /// This shard's keys attached to a lease (for TimeToLive).
    KeysWithLease(i64, Reply<Vec<Vec<u8>>>),
    /// Write a fresh snapshot (compacted history folded in) and let the
    /// log drop what it covers: etcd's Defragment.
    Defragment(Reply<Result<(), String>>),
    /// A write touching only this shard, coordinated on its core.
    Txn(
        ferrokv_wire::pb::etcdserverpb::TxnRequest,
        Reply<Result<ferrokv_wire::pb::etcdserverpb::TxnResponse, Error>>,
    ),
}

pub enum FencedOp {
    /// Latest state including writes made earlier under this fence.
    Range(RangeArgs, Reply<Result<RangeResult, ferrokv_mvcc::Error>>),
    Apply {
        rev: i64,
        first_sub: i64,
        ops: Vec<WriteOp>,
        reply: Reply<Vec<Event>>,
    },
    /// Whether this shard owns the lease now.
    LeaseExists(i64, Reply<bool>),
    /// Keys attached to the lease in the latest state.
    KeysWithLease(i64, Reply<Vec<Vec<u8>>>),
    /// Write this shard's part of backup number `n`; its path.
    Backup(u64, Reply<Result<PathBuf, String>>),
    /// Submit the records and release the lock; the reply comes once
    /// durable. `revoke` leaves the lease table at submission, so no write
    /// fenced after this one can attach a key to it.
    Commit {
        records: Vec<Record>,
        revoke: Option<i64>,
        reply: Reply<Result<(), String>>,
    },
    /// Nothing was written here: release the lock.
    Release,
}

const LEASE_META_V1: u8 = 1;

/// The lease table in a snapshot's meta bytes: a version byte, then
/// (id, TTL) pairs as little-endian i64s.
pub fn encode_lease_meta(leases: &[(i64, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + leases.len() * 16);
    out.push(LEASE_META_V1);
    for (id, ttl) in leases {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&ttl.to_le_bytes());
    }
    out
}

/// Reads [`encode_lease_meta`]; empty meta (a snapshot without leases) is
/// no leases.
pub fn decode_lease_meta(meta: &[u8]) -> Result<Vec<(i64, i64)>, String> {
    let Some((&version, body)) = meta.split_first() else {
        return Ok(Vec::new());
    };
    if version != LEASE_META_V1 || body.len() % 16 != 0 {
        return Err(format!(
            "snapshot lease table: unknown layout (version {version}, {} bytes)",
            body.len()
        ));
    }
    Ok(body
        .chunks_exact(16)
        .map(|c| {
            let mut id = [0u8; 8];
            let mut ttl = [0u8; 8];
            id.copy_from_slice(&c[..8]);
            ttl.copy_from_slice(&c[8..]);
            (i64::from_le_bytes(id), i64::from_le_bytes(ttl))
        })
        .collect())
}

#[derive(Clone, Debug, Default)]
pub struct ShardStatus {
    pub raft_term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub db_size_bytes: u64,
    pub keys: usize,
    pub leader: bool,
}

pub struct Shard {
    pub id: u32,
    pub store: RefCell<Store>,
    pub log: Rc<ShardLog>,
    lock: Semaphore,
    /// Held for a whole snapshot, whose file write runs after `lock` is
    /// released.
    snapshot_lock: Semaphore,
    seq: Arc<Sequencer>,
    snapshot_path: PathBuf,
    snapshot_count: u64,
    entries_since_snapshot: Cell<u64>,
    snapshotting: Cell<bool>,
    /// The leases this shard owns (id mod shard count).
    pub leases: RefCell<LeaseTable>,
    /// Grants in the log but not yet durable (id -> TTL): a second grant of
    /// the id is refused, and a snapshot includes them.
    granting: RefCell<HashMap<i64, i64>>,
    /// The highest revision a lease revoke of this shard deleted keys at: a
    /// snapshot waits for it to be visible, since the deletes may all live
    /// in other shards.
    revoke_rev: Cell<i64>,
}

impl Shard {
    pub fn new(
        id: u32,
        store: Store,
        log: Rc<ShardLog>,
        seq: Arc<Sequencer>,
        snapshot_path: PathBuf,
        snapshot_count: u64,
        leases: LeaseTable,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            store: RefCell::new(store),
            log,
            lock: Semaphore::new(1),
            snapshot_lock: Semaphore::new(1),
            seq,
            snapshot_path,
            snapshot_count,
            entries_since_snapshot: Cell::new(0),
            snapshotting: Cell::new(false),
            leases: RefCell::new(leases),
            granting: RefCell::new(HashMap::new()),
            revoke_rev: Cell::new(0),
        })
    }

    /// Serve messages until every sender is gone; `engine` is this core's
    /// handle, for the writes routed here.
    pub async fn run(self: Rc<Self>, rx: async_channel::Receiver<ShardMsg>, engine: Engine) {
        while let Ok(msg) = rx.recv().await {
            match msg {
                ShardMsg::Defragment(reply) => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(me.snapshot().await);
                    })
                    .detach();
                }
                ShardMsg::Txn(t, reply) => {
                    let engine = engine.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(engine.write_routed(t).await);
                    })
                    .detach();
                }
                ShardMsg::Range(a, reply) => {
                    let r = self.range(&a);
                    let _ = reply.send(r);
                }
                ShardMsg::Fence(ops, ack) => {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.fenced(ops, ack).await }).detach();
                }
                ShardMsg::Compact(rev, reply) => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let r = me.compact(rev).await;
                        let _ = reply.send(r);
                    })
                    .detach();
                }
                ShardMsg::Events(a, reply) => {
                    let _ = reply.send(self.events(&a));
                }
                ShardMsg::LeaseGrant { id, ttl, reply } => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let r = me.lease_grant(id, ttl).await;
                        let _ = reply.send(r);
                    })
                    .detach();
                }
                ShardMsg::LeaseRenew(id, reply) => {
                    let r = self.leases.borrow_mut().renew(id, Instant::now());
                    let _ = reply.send(r);
                }
                ShardMsg::LeaseGet(id, reply) => {
                    let now = Instant::now();
                    let r = self
                        .leases
                        .borrow()
                        .get(id)
                        .map(|l| (l.ttl, l.remaining_secs(now)));
                    let _ = reply.send(r);
                }
                ShardMsg::LeaseIds(reply) => {
                    let _ = reply.send(self.leases.borrow().ids());
                }
                ShardMsg::KeysWithLease(id, reply) => {
                    let _ = reply.send(self.store.borrow().keys_with_lease(id));
                }
                ShardMsg::Status(reply) => {
                    let store = self.store.borrow();
                    let _ = reply.send(ShardStatus {
                        raft_term: self.log.term(),
                        raft_index: self.log.commit_index(),
                        applied_index: self.log.applied_index(),
                        db_size_bytes: store.size_bytes(),
                        keys: store.key_count(),
                        leader: self.log.is_leader(),
                    });
                }
            }
        }
    }

    pub(crate) fn range(&self, a: &RangeArgs) -> Result<RangeResult, ferrokv_mvcc::Error> {
        self.store.borrow().range(
            &a.key,
            &a.range_end,
            a.rev,
            a.limit,
            a.keys_only,
            a.count_only,
        )
    }

    fn events(&self, a: &EventsArgs) -> EventsResult {
        let mut evs =
            self.store
                .borrow()
                .events_with_rev(&a.key, &a.range_end, a.from, a.to, a.prev_kv)?;
        debug_assert!(evs.windows(2).all(|w| w[0].0 < w[1].0));
        if evs.len() <= a.events_max.max(1) {
            return Ok((evs, a.to));
        }
        // Cut at a revision boundary: a revision's events stay together.
        let last = evs[a.events_max.max(1) - 1].0.main;
        evs.retain(|(r, _)| r.main <= last);
        Ok((evs, last))
    }

    async fn fenced(self: Rc<Self>, ops: async_channel::Receiver<FencedOp>, ack: Reply<()>) {
        let Some(permit) = self.lock().await else {
            return;
        };
        if ack.send(()).is_err() {
            return;
        }
        let mut wrote = false;
        while let Ok(op) = ops.recv().await {
            match op {
                FencedOp::Range(a, reply) => {
                    let _ = reply.send(self.range(&a));
                }
                FencedOp::Apply {
                    rev,
                    first_sub,
                    ops,
                    reply,
                } => {
                    wrote = true;
                    let _ = reply.send(self.apply(rev, first_sub, &ops));
                }
                FencedOp::LeaseExists(id, reply) => {
                    let _ = reply.send(self.lease_exists(id));
                }
                FencedOp::KeysWithLease(id, reply) => {
                    let _ = reply.send(self.keys_with_lease(id));
                }
                FencedOp::Backup(n, reply) => {
                    let _ = reply.send(self.backup_part(n).await);
                }
                FencedOp::Commit {
                    records,
                    revoke,
                    reply,
                } => {
                    self.commit(records, revoke, permit).await;
                    let _ = reply.send(Ok(()));
                    return;
                }
                FencedOp::Release => return,
            }
        }
        if wrote {
            // A coordinator vanished between applying and committing: the
            // store is ahead of the log, which must never be served.
            log::error!(
                "shard {}: fenced write abandoned after apply, stopping",
                self.id
            );
            std::process::exit(2);
        }
    }

    /// The write lock: held from a write's first read to its log
    /// submission, so each shard's log is in revision order.
    pub(crate) async fn lock(&self) -> Option<glommio::sync::Permit<'_>> {
        self.lock.acquire_permit(1).await.ok()
    }

    /// Applies one part of a write at `rev` (under the lock).
    pub(crate) fn apply(&self, rev: i64, first_sub: i64, ops: &[WriteOp]) -> Vec<Event> {
        self.store.borrow_mut().apply_at_sub(rev, first_sub, ops)
    }

    pub(crate) fn lease_exists(&self, id: i64) -> bool {
        self.leases.borrow().contains(id)
    }

    /// Keys attached to a lease, latest state.
    pub(crate) fn keys_with_lease(&self, id: i64) -> Vec<Vec<u8>> {
        self.store.borrow().keys_with_lease(id)
    }

    /// Submits `records` while `permit` is held, releases it, and returns
    /// once they are durable. The proposals are queued under the lock, so
    /// the log order is the revision order; durability is awaited after
    /// releasing it, letting later writes share the fsync. `revoke` leaves
    /// the lease table at submission, so no write after this one can
    /// attach a key to it. A log failure stops the member: the store
    /// already holds the write, and serving on would expose a write the log
    /// does not have.
    pub(crate) async fn commit(
        self: &Rc<Self>,
        records: Vec<Record>,
        revoke: Option<i64>,
        permit: glommio::sync::Permit<'_>,
    ) {
        if let Some(id) = revoke {
            let _ = self.leases.borrow_mut().revoke(id);
            for r in &records {
                if let Record::LeaseRevoke { rev, .. } = r {
                    self.revoke_rev.set(self.revoke_rev.get().max(*rev));
                }
            }
        }
        let submitted: Result<Vec<_>, _> = records
            .iter()
            .map(|r| self.log.submit(r.encode()))
            .collect();
        drop(permit);
        let result = match submitted {
            Ok(futs) => {
                let mut r = Ok(());
                for fut in futs {
                    if let Err(e) = fut.await {
                        r = Err(e.to_string());
                    }
                }
                r
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            log::error!("shard {}: log write failed, stopping: {e}", self.id);
            std::process::exit(2);
        }
        self.after_commit();
    }

    async fn compact(self: Rc<Self>, rev: i64) -> Result<(), String> {
        let _permit = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        let fut = self
            .log
            .submit(Record::Compact { rev }.encode())
            .map_err(|e| e.to_string())?;
        fut.await.map_err(|e| e.to_string())?;
        let r = self.store.borrow_mut().compact(rev);
        // Another compaction may have reached this shard first; the global
        // check already ordered them, so an older point is simply done.
        match r {
            Ok(()) | Err(ferrokv_mvcc::Error::Compacted) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Apply a recovered record (restart replay or roll-forward).
    pub fn apply_recovered(&self, rec: &Record) {
        let mut store = self.store.borrow_mut();
        match rec {
            Record::Write { rev, parts } => {
                if *rev <= store.last_revision() {
                    return;
                }
                for p in parts.iter().filter(|p| p.shard == self.id) {
                    store.apply_at_sub(*rev, p.first_sub, &p.ops);
                }
            }
            Record::Compact { rev } => {
                let _ = store.compact(*rev);
            }
            Record::TruncateAbove { .. } => {}
            Record::LeaseGrant { id, ttl } => self.leases.borrow_mut().restore(*id, *ttl),
            Record::LeaseRevoke { id, .. } => {
                let _ = self.leases.borrow_mut().revoke(*id);
            }
        }
    }

    /// A grant is in the table only once durable, so nothing can attach a
    /// key to a lease a crash could still lose.
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<i64, Error> {
        if self.granting.borrow().contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let ttl = self.leases.borrow().check_grant(id, ttl)?;
        let fut = self
            .log
            .submit(Record::LeaseGrant { id, ttl }.encode())
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.granting.borrow_mut().insert(id, ttl);
        let durable = fut.await;
        self.granting.borrow_mut().remove(&id);
        if let Err(e) = durable {
            log::error!("shard {}: log write failed, stopping: {e}", self.id);
            std::process::exit(2);
        }
        self.leases.borrow_mut().grant(id, ttl, Instant::now())
    }

    /// The leases a snapshot must hold: granted ones and durable-pending
    /// grants whose log entries the snapshot may let go.
    fn lease_meta(&self) -> Vec<u8> {
        let table = self.leases.borrow();
        let mut leases: Vec<(i64, i64)> = table
            .ids()
            .into_iter()
            .filter_map(|id| table.get(id).map(|l| (id, l.ttl)))
            .collect();
        leases.extend(self.granting.borrow().iter().map(|(id, ttl)| (*id, *ttl)));
        encode_lease_meta(&leases)
    }

    /// Counts committed entries and, every `--snapshot-count`, writes a
    /// snapshot and lets the log drop what it covers.
    fn after_commit(self: &Rc<Self>) {
        let n = self.entries_since_snapshot.get() + 1;
        self.entries_since_snapshot.set(n);
        if self.snapshot_count == 0 || n < self.snapshot_count || self.snapshotting.get() {
            return;
        }
        self.snapshotting.set(true);
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = me.snapshot().await {
                log::warn!("shard {}: snapshot failed: {e}", me.id);
            }
            me.snapshotting.set(false);
        })
        .detach();
    }

    /// A snapshot must hold exactly committed state, and no part of a
    /// cross-shard write whose other parts might still be lost: so it is
    /// taken under the write lock once everything this shard holds is
    /// visible (durable in every shard).
    pub async fn snapshot(&self) -> Result<(), String> {
        // One snapshot at a time: an older one finishing last would replace
        // a newer file after the log was cut to the newer one's index.
        let _one = self
            .snapshot_lock
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        let permit = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        self.wait_all_visible().await;
        let index = self.log.commit_index();
        // Only copying the store out needs the lock (and this core); the
        // serialization and the file write of what can be 100 MB run on
        // glommio's blocking thread, so writes to this shard go on.
        let image = self
            .store
            .borrow()
            .snapshot_image(&self.snapshot_path, index, &self.lease_meta())
            .map_err(|e| e.to_string())?;
        self.entries_since_snapshot.set(0);
        drop(permit);
        let path = self.snapshot_path.clone();
        let written = glommio::executor()
            .spawn_blocking(move || image.write(&path))
            .await
            .map_err(|e| e.to_string())?;
        self.log
            .compact_to(index)
            .await
            .map_err(|e| e.to_string())?;
        log::info!(
            "shard {}: snapshot at raft index {index} ({written} bytes)",
            self.id
        );
        Ok(())
    }

    /// Waits until everything this shard holds is visible (durable in
    /// every shard), so that what is written next is exactly committed
    /// state; called under the lock.
    async fn wait_all_visible(&self) {
        let last = self.store.borrow().last_revision();
        self.seq.wait_visible(last.max(self.revoke_rev.get())).await;
    }

    /// The store and lease table as a snapshot file; its size.
    fn write_store(&self, path: &std::path::Path, index: u64) -> Result<u64, String> {
        let meta = self.lease_meta();
        self.store
            .borrow()
            .write_snapshot(path, index, &meta)
            .map_err(|e| e.to_string())
    }

    /// This shard's part of a backup (under a fence): a snapshot file next
    /// to its own, with applied index 0 so that a restore starts a fresh log.
    async fn backup_part(&self, n: u64) -> Result<PathBuf, String> {
        self.wait_all_visible().await;
        let path = self
            .snapshot_path
            .with_file_name(format!("backup-{n}.rkyv"));
        self.write_store(&path, 0)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lease_meta_round_trips(leases in proptest::collection::vec((any::<i64>(), any::<i64>()), 0..20)) {
            let enc = encode_lease_meta(&leases);
            prop_assert_eq!(decode_lease_meta(&enc), Ok(leases));
            // A torn table is refused, never misread.
            if enc.len() > 1 {
                prop_assert!(decode_lease_meta(&enc[..enc.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn empty_meta_is_no_leases() {
        assert_eq!(decode_lease_meta(&[]), Ok(Vec::new()));
        assert!(decode_lease_meta(&[9]).is_err());
    }
}
