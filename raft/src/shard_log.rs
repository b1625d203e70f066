//! The glommio shell around raft-rs's `RawNode` for one shard group.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use ferrokv_wal::{Wal, WalConfig};
use raft::eraftpb::{Entry, EntryType, HardState, Message};
use raft::{Config, RawNode, StateRole};

use crate::record::{encode_compaction, encode_entry, encode_hard_state};
use crate::storage::{replay, ShardStorage};
use crate::Error;
use ferrokv_wal::notify::Notify;

/// Configuration of one shard's raft log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub wal: WalConfig,
    pub node_id: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub tick_interval: Duration,
}

impl LogConfig {
    /// etcd's defaults: 100 ms heartbeat, 1 s election timeout.
    pub fn new(wal: WalConfig, node_id: u64) -> Self {
        LogConfig {
            wal,
            node_id,
            election_tick: 10,
            heartbeat_tick: 1,
            tick_interval: Duration::from_millis(100),
        }
    }
}

/// What `ShardLog::open` found in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Committed entries with index > the caller's applied index and
    /// non-empty data, in index order.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Raft term once this member is leader again.
    pub term: u64,
    /// Commit index covered by `entries` (the caller's new applied index).
    pub commit_index: u64,
}

/// Where `Ready::messages` go. Replication to other members plugs in here;
/// a single voter has nobody to talk to.
pub trait Transport {
    fn send(&self, msgs: Vec<Message>);
}

/// Transport of a single-voter group: there are no peers.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, msgs: Vec<Message>) {
        debug_assert!(msgs.is_empty(), "single voter sent {} messages", msgs.len());
    }
}

/// Completion slot of one proposal or compaction request.
#[derive(Default)]
struct Slot {
    result: RefCell<Option<Result<u64, Error>>>,
    done: Notify,
}

impl Slot {
    fn complete(&self, r: Result<u64, Error>) {
        let mut res = self.result.borrow_mut();
        if res.is_none() {
            *res = Some(r);
            drop(res);
            self.done.notify_all();
        }
    }

    async fn wait(&self) -> Result<u64, Error> {
        loop {
            if let Some(r) = self.result.borrow().as_ref() {
                return r.clone();
            }
            let w = self.done.wait();
            w.await;
        }
    }
}

struct State {
    /// Proposals not yet handed to raft: (proposal id, data).
    queue: VecDeque<(u64, Vec<u8>)>,
    queue_bytes: usize,
    compactions: VecDeque<(u64, Rc<Slot>)>,
    /// Proposal id (the entry context) -> waiter.
    waiters: HashMap<u64, Rc<Slot>>,
    next_proposal_id: u64,
    ticks_pending: u32,
    failed: Option<Error>,
    shutdown: bool,
    driver_exited: bool,
}

struct Inner {
    cfg: LogConfig,
    node: RefCell<RawNode<ShardStorage>>,
    wal: Wal,
    transport: Box<dyn Transport>,
    st: RefCell<State>,
    /// Wakes the driver.
    work: Notify,
    /// Wakes proposers waiting for queue room.
    room: Notify,
    driver_exit: Notify,
    /// Hard state last written to the WAL.
    persisted_hs: RefCell<HardState>,
    term: Cell<u64>,
    commit_index: Cell<u64>,
    applied_index: Cell<u64>,
    leader_id: Cell<u64>,
    is_leader: Cell<bool>,
}

/// Raft log of one shard group. Lives on one glommio executor; a background
/// task drives the `RawNode` (ticks, proposals, ready handling).
pub struct ShardLog {
    inner: Rc<Inner>,
}

impl ShardLog {
    /// Opens the WAL in `dir`, rebuilds raft storage from it and returns the
    /// committed entries with index > `applied_index`. Campaigns at once, so
    /// a single voter is leader when this returns.
    pub async fn open(
        dir: &Path,
        cfg: LogConfig,
        applied_index: u64,
    ) -> Result<(Rc<ShardLog>, Recovered), Error> {
        Self::open_with_transport(dir, cfg, applied_index, Box::new(NoopTransport)).await
    }

    pub async fn open_with_transport(
        dir: &Path,
        cfg: LogConfig,
        applied_index: u64,
        transport: Box<dyn Transport>,
    ) -> Result<(Rc<ShardLog>, Recovered), Error> {
        let (wal, records) = Wal::open(dir, cfg.wal.clone()).await?;
        let mut storage = replay(&records, cfg.node_id).map_err(Error::Corrupt)?;
        drop(records);
        let single_voter =
            storage.conf_state.voters == [cfg.node_id] && storage.conf_state.learners.is_empty();
        if single_voter {
            // With one voter an entry is committed once it is in this
            // member's durable log: the quorum is this member. (Raft would
            // also commit them all with the first entry of the next term.)
            storage.hard_state.commit = storage.last_index();
        }
        let commit = storage.hard_state.commit;
        if applied_index < storage.snap_index {
            return Err(Error::AppliedBelowCompaction {
                applied: applied_index,
                compacted: storage.snap_index,
            });
        }
        if applied_index > commit {
            return Err(Error::Corrupt(format!(
                "state machine applied {applied_index} but the log is committed only to {commit}"
            )));
        }
        let entries: Vec<(u64, Vec<u8>)> = storage
            .entries
            .iter()
            .filter(|e| {
                e.index > applied_index
                    && e.index <= commit
                    && e.get_entry_type() == EntryType::EntryNormal
                    && !e.data.is_empty()
            })
            .map(|e| (e.index, e.data.to_vec()))
            .collect();
        let persisted_hs = storage.hard_state.clone();

        let raft_cfg = Config {
            id: cfg.node_id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            // Everything up to `commit` is handed to the caller in `Recovered`.
            applied: commit,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&raft_cfg, storage, &logger)?;
        node.campaign()?;

        let inner = Rc::new(Inner {
            cfg,
            node: RefCell::new(node),
            wal,
            transport,
            st: RefCell::new(State {
                queue: VecDeque::new(),
                queue_bytes: 0,
                compactions: VecDeque::new(),
                waiters: HashMap::new(),
                next_proposal_id: 1,
                ticks_pending: 0,
                failed: None,
                shutdown: false,
                driver_exited: false,
            }),
            work: Notify::default(),
            room: Notify::default(),
            driver_exit: Notify::default(),
            persisted_hs: RefCell::new(persisted_hs),
            term: Cell::new(0),
            commit_index: Cell::new(commit),
            applied_index: Cell::new(commit),
            leader_id: Cell::new(0),
            is_leader: Cell::new(false),
        });
        // Persist the new term and vote (and the leader's empty entry) before
        // returning, so the caller sees a leader with a durable term.
        while inner.node.borrow().has_ready() {
            inner.handle_ready().await?;
        }
        inner.refresh_status();
        glommio::spawn_local(Inner::drive(inner.clone())).detach();
        glommio::spawn_local(Inner::tick_loop(Rc::downgrade(&inner))).detach();
        let recovered = Recovered {
            entries,
            term: inner.term.get(),
            commit_index: commit,
        };
        Ok((Rc::new(ShardLog { inner }), recovered))
    }

    /// Proposes `data` and resolves with its raft index once it is committed
    /// (durable in the WAL). Proposals made while a WAL flush is running are
    /// batched into one raft `Ready`, one WAL append and one fdatasync.
    pub async fn propose(&self, data: Vec<u8>) -> Result<u64, Error> {
        self.reserve().await;
        self.submit(data)?.await
    }

    /// Waits until the proposal queue has room (back-pressure for `submit`).
    pub async fn reserve(&self) {
        loop {
            {
                let st = self.inner.st.borrow();
                if st.queue_bytes < self.inner.cfg.wal.batch_bytes_max
                    || st.failed.is_some()
                    || st.shutdown
                {
                    return;
                }
            }
            let w = self.inner.room.wait();
            w.await;
        }
    }

    /// Enqueues a proposal synchronously, so proposals submitted inside one
    /// critical section reach the log in submission order (the shard's
    /// revision order). The queue bound is honoured by calling `reserve`
    /// first; `submit` itself never waits. The returned future resolves
    /// once the entry is committed.
    pub fn submit(
        &self,
        data: Vec<u8>,
    ) -> Result<impl std::future::Future<Output = Result<u64, Error>> + 'static, Error> {
        let inner = &self.inner;
        let slot = Rc::new(Slot::default());
        {
            let mut st = inner.st.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.shutdown {
                return Err(Error::Shutdown);
            }
            if !inner.is_leader.get() {
                return Err(Error::NotLeader {
                    leader_id: inner.leader_id.get(),
                });
            }
            let id = st.next_proposal_id;
            st.next_proposal_id += 1;
            st.waiters.insert(id, slot.clone());
            st.queue_bytes += data.len().max(1);
            st.queue.push_back((id, data));
        }
        inner.work.notify_all();
        Ok(async move { slot.wait().await })
    }

    /// The caller's state machine durably covers entries <= `index`: write a
    /// compaction marker, drop those entries from raft storage and delete the
    /// WAL segments that only hold records no longer needed.
    pub async fn compact_to(&self, index: u64) -> Result<(), Error> {
        let inner = &self.inner;
        let slot = Rc::new(Slot::default());
        {
            let mut st = inner.st.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.shutdown {
                return Err(Error::Shutdown);
            }
            st.compactions.push_back((index, slot.clone()));
        }
        inner.work.notify_all();
        slot.wait().await.map(|_| ())
    }

    pub fn term(&self) -> u64 {
        self.inner.term.get()
    }
    pub fn commit_index(&self) -> u64 {
        self.inner.commit_index.get()
    }
    pub fn applied_index(&self) -> u64 {
        self.inner.applied_index.get()
    }
    pub fn is_leader(&self) -> bool {
        self.inner.is_leader.get()
    }
    pub fn leader_id(&self) -> u64 {
        self.inner.leader_id.get()
    }

    /// Number of fdatasyncs the shared WAL histogram has seen (for tests and
    /// diagnostics).
    pub fn wal_fsync_count(&self) -> u64 {
        self.inner.cfg.wal.metrics.fsync.count()
    }

    /// Stops the driver, fails outstanding requests with `Error::Shutdown`
    /// and closes the WAL after flushing what was already handed to it.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.st.borrow_mut().shutdown = true;
        inner.work.notify_all();
        inner.room.notify_all();
        loop {
            if inner.st.borrow().driver_exited {
                break;
            }
            let w = inner.driver_exit.wait();
            w.await;
        }
        inner.wal.close().await;
    }
}

impl Inner {
    async fn tick_loop(weak: std::rc::Weak<Inner>) {
        loop {
            let interval = match weak.upgrade() {
                Some(inner) => inner.cfg.tick_interval,
                None => return,
            };
            glommio::timer::sleep(interval).await;
            let Some(inner) = weak.upgrade() else { return };
            let mut st = inner.st.borrow_mut();
            if st.shutdown || st.driver_exited {
                return;
            }
            // Bounded: a stalled driver catches up at most this many ticks.
            st.ticks_pending = (st.ticks_pending + 1).min(64);
            drop(st);
            inner.work.notify_all();
        }
    }

    async fn drive(self: Rc<Inner>) {
        loop {
            let wait = self.work.wait();
            let (shutdown, ticks, proposals, compaction) = {
                let mut st = self.st.borrow_mut();
                let ticks = std::mem::take(&mut st.ticks_pending);
                let proposals: Vec<(u64, Vec<u8>)> = st.queue.drain(..).collect();
                st.queue_bytes = 0;
                (st.shutdown, ticks, proposals, st.compactions.pop_front())
            };
            if !proposals.is_empty() {
                self.room.notify_all();
            }
            if shutdown {
                self.fail_all(Error::Shutdown);
                break;
            }
            let idle = ticks == 0
                && proposals.is_empty()
                && compaction.is_none()
                && !self.node.borrow().has_ready();
            if idle {
                wait.await;
                continue;
            }
            {
                let mut node = self.node.borrow_mut();
                for _ in 0..ticks {
                    node.tick();
                }
                for (id, data) in proposals {
                    if let Err(e) = node.propose(id.to_le_bytes().to_vec(), data) {
                        let err = match e {
                            raft::Error::ProposalDropped => Error::NotLeader {
                                leader_id: node.raft.leader_id,
                            },
                            e => Error::from(e),
                        };
                        if let Some(slot) = self.st.borrow_mut().waiters.remove(&id) {
                            slot.complete(Err(err));
                        }
                    }
                }
            }
            let mut res = Ok(());
            while res.is_ok() && self.node.borrow().has_ready() {
                res = self.handle_ready().await;
            }
            if res.is_ok() {
                if let Some((index, slot)) = compaction {
                    let r = self.compact(index).await;
                    if let Err(e) = &r {
                        if matches!(e, Error::Wal(_)) {
                            res = Err(e.clone());
                        }
                    }
                    slot.complete(r.map(|_| index));
                }
            } else if let Some((_, slot)) = compaction {
                slot.complete(Err(Error::Shutdown));
            }
            self.refresh_status();
            if let Err(e) = res {
                log::error!("raft: shard log failed: {e}");
                self.st.borrow_mut().failed = Some(e.clone());
                self.fail_all(e);
                break;
            }
        }
        self.st.borrow_mut().driver_exited = true;
        self.is_leader.set(false);
        self.driver_exit.notify_all();
        self.room.notify_all();
    }

    fn fail_all(&self, e: Error) {
        let (waiters, compactions) = {
            let mut st = self.st.borrow_mut();
            st.queue.clear();
            st.queue_bytes = 0;
            (
                std::mem::take(&mut st.waiters),
                std::mem::take(&mut st.compactions),
            )
        };
        for (_, slot) in waiters {
            slot.complete(Err(e.clone()));
        }
        for (_, slot) in compactions {
            slot.complete(Err(e.clone()));
        }
    }

    fn refresh_status(&self) {
        let node = self.node.borrow();
        self.term.set(node.raft.term);
        self.commit_index.set(node.raft.raft_log.committed);
        self.applied_index.set(node.raft.raft_log.applied);
        self.leader_id.set(node.raft.leader_id);
        self.is_leader.set(node.raft.state == StateRole::Leader);
    }

    /// One `Ready`: send, persist (one WAL append, one fdatasync), advance,
    /// apply.
    async fn handle_ready(&self) -> Result<(), Error> {
        let mut ready = self.node.borrow_mut().ready();
        self.transport.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            return Err(Error::Raft(
                "installing a snapshot from the leader is not supported yet".to_string(),
            ));
        }
        self.apply(ready.take_committed_entries());
        let entries = ready.take_entries();
        if let Some(ss) = ready.ss() {
            if ss.raft_state != StateRole::Leader {
                // Proposals in flight may or may not commit under the new
                // leader; tell their callers the outcome is unknown.
                let waiters = std::mem::take(&mut self.st.borrow_mut().waiters);
                for (_, slot) in waiters {
                    slot.complete(Err(Error::ProposalDropped));
                }
            }
        }
        let mut hs = ready.hs().cloned();
        if hs.is_none() {
            // A commit advanced through LightReady is not repeated by raft in
            // a later Ready; write it with the next batch.
            let cur = self.node.borrow().store().hard_state.clone();
            if !entries.is_empty() && cur != *self.persisted_hs.borrow() {
                hs = Some(cur);
            }
        }
        let mut records = Vec::with_capacity(entries.len() + 1);
        // Hard state first: a torn tail can then only lose entries after it.
        if let Some(hs) = &hs {
            records.push(encode_hard_state(hs));
        }
        for e in &entries {
            records.push(encode_entry(e));
        }
        if !records.is_empty() {
            let n = records.len() as u64;
            let last_lsn = self.wal.append(records).await?;
            let first_entry_lsn = last_lsn + 1 - entries.len() as u64;
            debug_assert!(last_lsn >= n);
            let lsns: Vec<u64> = (0..entries.len() as u64)
                .map(|i| first_entry_lsn + i)
                .collect();
            let mut node = self.node.borrow_mut();
            let store = node.mut_store();
            store.append(&entries, &lsns).map_err(Error::Corrupt)?;
            if let Some(hs) = hs {
                store.hard_state = hs.clone();
                *self.persisted_hs.borrow_mut() = hs;
            }
        }
        self.transport.send(ready.take_persisted_messages());
        let mut light = self.node.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.borrow_mut().mut_store().hard_state.commit = commit;
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.node.borrow_mut().advance_apply();
        self.refresh_status();
        Ok(())
    }

    /// Hands committed entries back to their proposers.
    fn apply(&self, committed: Vec<Entry>) {
        if committed.is_empty() {
            return;
        }
        let mut st = self.st.borrow_mut();
        for e in committed {
            if e.context.len() == 8 {
                let mut id = [0u8; 8];
                id.copy_from_slice(&e.context);
                if let Some(slot) = st.waiters.remove(&u64::from_le_bytes(id)) {
                    slot.complete(Ok(e.index));
                }
            }
        }
    }

    async fn compact(&self, index: u64) -> Result<(), Error> {
        let (term, hs, cs, applied) = {
            let node = self.node.borrow();
            let store = node.store();
            let applied = node.raft.raft_log.applied;
            if index > applied {
                return Err(Error::CompactBeyondApplied { index, applied });
            }
            if index <= store.snap_index {
                return Ok(());
            }
            let term = store.term_of(index).ok_or_else(|| {
                Error::Corrupt(format!("no term for index {index} below applied {applied}"))
            })?;
            (
                term,
                store.hard_state.clone(),
                store.conf_state.clone(),
                applied,
            )
        };
        debug_assert!(index <= applied);
        let marker_lsn = self
            .wal
            .append(vec![encode_compaction(index, term, &hs, &cs)])
            .await?;
        // Records still needed: the marker and every record of entries above
        // `index`. Entry lsns increase with the index, so the first retained
        // entry's record bounds them all. Runs in the driver, so no entry
        // record is in flight that storage does not know about yet.
        let keep_from = {
            let mut node = self.node.borrow_mut();
            let store = node.mut_store();
            let next_lsn = store.lsn_of(index + 1);
            store.compact(index).map_err(Error::Corrupt)?;
            next_lsn.map_or(marker_lsn, |l| l.min(marker_lsn))
        };
        self.wal.truncate_before(keep_from).await?;
        Ok(())
    }
}
