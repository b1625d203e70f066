//! The glommio shell around raft-rs's `RawNode` for one shard group.
//!
//! `RawNode` is the sans-IO core: ticks, peer messages and proposals go in,
//! `Ready`s come out. This shell feeds it from three queues (proposals,
//! inbound peer messages, ticks), persists every `Ready` with one WAL append
//! and one fdatasync, sends its messages through a [`Transport`], and hands
//! committed entries and role changes to the shard's [`Apply`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use ferrokv_wal::{Wal, WalConfig};
use raft::eraftpb::{
    ConfChange, ConfChangeType, Entry, EntryType, HardState, Message, MessageType,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole};

use crate::record::{encode_compaction, encode_entry, encode_hard_state};
use crate::storage::{replay, ShardStorage};
use crate::Error;
use ferrokv_wal::notify::Notify;

/// Bound on peer messages waiting for the driver. Raft tolerates loss (it
/// retransmits), so a message arriving over the bound is dropped.
pub const INBOUND_MESSAGES_PENDING_MAX: usize = 4096;

/// Log entries a leader keeps past its snapshot for voters a little behind
/// (etcd's `SnapshotCatchUpEntries`).
pub const CATCH_UP_ENTRIES: u64 = 5000;

/// The raft node id of every single-voter group before members had ids.
const LEGACY_NODE_ID: u64 = 1;

/// Bound on ReadIndex requests waiting for the leader's confirmation.
pub const READS_PENDING_MAX: usize = 4096;

/// Configuration of one shard's raft log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub wal: WalConfig,
    pub node_id: u64,
    /// The group's voters when its log is new (the cluster's members at
    /// bootstrap); a log that has entries keeps the membership it recorded.
    pub voters: Vec<u64>,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub tick_interval: Duration,
    /// The group's membership (voters, learners) at the state machine's
    /// snapshot, when the snapshot records it: the log's if the log never
    /// recorded that snapshot (the member stopped between installing the
    /// leader's file and logging it).
    pub snapshot_conf: Option<(Vec<u64>, Vec<u64>)>,
}

impl LogConfig {
    /// etcd's defaults: 100 ms heartbeat, 1 s election timeout; this member
    /// the only voter.
    pub fn new(wal: WalConfig, node_id: u64) -> Self {
        LogConfig {
            wal,
            node_id,
            voters: vec![node_id],
            election_tick: 10,
            heartbeat_tick: 1,
            tick_interval: Duration::from_millis(100),
            snapshot_conf: None,
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
    /// Committed conf changes with index > the caller's applied index:
    /// (index, the change's context), in index order. Raft has applied
    /// them already; the state machine sees them again (as
    /// [`Apply::conf_changed`] would have shown them).
    pub conf_changes: Vec<(u64, Vec<u8>)>,
    /// Commit index covered by `entries` (the caller's new applied index).
    pub commit_index: u64,
    /// The log is its group's only voter, with nothing in it that could
    /// have changed that: every durable entry was committed and returned.
    pub single_voter: bool,
}

/// Where `Ready::messages` go: the peer transport, or nowhere for a single
/// voter.
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

/// This member's place in the group, as of the last `Ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Role {
    pub leader: bool,
    pub term: u64,
    pub leader_id: u64,
}

/// The state machine fed by the log (the shard). Called on the log's
/// executor from the driver, never re-entered.
pub trait Apply {
    /// A committed normal entry with data, in index order, each once.
    /// `term` is the entry's term: an entry of the term this member leads
    /// was proposed by it.
    fn committed(&self, index: u64, term: u64, data: &[u8]);
    /// Leadership or term changed. Called before the committed entries of
    /// the same `Ready`.
    fn role_changed(&self, role: Role);
    /// The leader sent a snapshot (`MsgSnapshot`, its data the index of the
    /// leader's snapshot file): this log needs entries the leader no longer
    /// has. The state machine fetches and installs the file, then hands the
    /// message back with [`ShardLog::step_installed`]; if it cannot, it drops
    /// the message and the leader offers it again.
    fn snapshot_offered(&self, msg: Message);
    /// A committed conf change took effect in this group (raft applied
    /// it): `context` is what the proposer attached. In index order with
    /// the committed entries; each once (and again after a restart, in
    /// [`Recovered::conf_changes`], if the state machine's snapshot does
    /// not cover it).
    fn conf_changed(&self, index: u64, context: &[u8]);
    /// Raft needs a snapshot newer than the state machine's newest file
    /// (a member was added since): write one, then call
    /// [`ShardLog::snapshot_written`].
    fn snapshot_wanted(&self);
}

/// Completion slot of one proposal, read or compaction request.
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

/// A proposal waiting for its entry to commit. The entry is matched by
/// its context (the proposal id) *and* its term: only this member proposes
/// in a term it leads, so an entry of another term that happens to carry
/// the same id (another leader's, or ours from before a restart) is not it.
struct Waiter {
    term: u64,
    /// A conf change: only a committed conf change entry completes it.
    conf: bool,
    slot: Rc<Slot>,
}

struct Proposal {
    id: u64,
    /// The term the proposer saw this member lead; proposed only if the
    /// member still leads that term when raft gets it.
    term: u64,
    data: Vec<u8>,
    conf: Option<ConfChange>,
}

struct State {
    /// Proposals not yet handed to raft.
    queue: VecDeque<Proposal>,
    queue_bytes: usize,
    inbound: VecDeque<Message>,
    inbound_dropped: u64,
    /// Proposals that failed (dropped, leadership lost, log failed).
    proposals_failed: u64,
    reads: VecDeque<(u64, Rc<Slot>)>,
    /// ReadIndex id -> waiter, until raft reports its read state.
    /// ReadIndex id -> (waiter, when it was handed to raft).
    reading: HashMap<u64, (Rc<Slot>, std::time::Instant)>,
    compactions: VecDeque<(u64, Rc<Slot>)>,
    transfer: Option<u64>,
    campaign: bool,
    waiters: HashMap<u64, Waiter>,
    next_proposal_id: u64,
    ticks_pending: u32,
    failed: Option<Error>,
    shutdown: bool,
    driver_exited: bool,
    /// Committed entries seen before an `Apply` was attached (recovery).
    unapplied: Vec<Entry>,
}

struct Inner {
    cfg: LogConfig,
    node: RefCell<RawNode<ShardStorage>>,
    wal: Wal,
    transport: Box<dyn Transport>,
    apply: RefCell<Option<Rc<dyn Apply>>>,
    st: RefCell<State>,
    /// Wakes the driver.
    work: Notify,
    /// Wakes proposers waiting for queue room.
    room: Notify,
    driver_exit: Notify,
    /// Hard state last written to the WAL.
    persisted_hs: RefCell<HardState>,
    role: Cell<Role>,
    commit_index: Cell<u64>,
    applied_index: Cell<u64>,
    /// Whether this leader has committed an entry of its own term (so
    /// everything committed before it is in its log and applied).
    term_committed: Cell<bool>,
}

/// Raft log of one shard group. Lives on one glommio executor; a background
/// task drives the `RawNode` (ticks, peer messages, proposals, ready
/// handling).
pub struct ShardLog {
    inner: Rc<Inner>,
}

impl ShardLog {
    /// Opens a single-voter log (no transport) and starts it.
    pub async fn open(
        dir: &Path,
        cfg: LogConfig,
        applied_index: u64,
    ) -> Result<(Rc<ShardLog>, Recovered), Error> {
        let (log, rec) =
            Self::open_with_transport(dir, cfg, applied_index, Box::new(NoopTransport)).await?;
        log.start(None);
        Ok((log, rec))
    }

    /// Opens the WAL in `dir`, rebuilds raft storage from it and returns the
    /// committed entries with index > `applied_index`. A single voter
    /// campaigns at once and is leader when this returns; a member of a
    /// larger group waits for an election. Call [`ShardLog::start`] next.
    pub async fn open_with_transport(
        dir: &Path,
        cfg: LogConfig,
        applied_index: u64,
        transport: Box<dyn Transport>,
    ) -> Result<(Rc<ShardLog>, Recovered), Error> {
        let (wal, records) = Wal::open(dir, cfg.wal.clone()).await?;
        let mut storage = replay(&records, &cfg.voters).map_err(Error::Corrupt)?;
        drop(records);
        if storage.conf_state.voters == [LEGACY_NODE_ID]
            && cfg.voters == [cfg.node_id]
            && cfg.node_id != LEGACY_NODE_ID
        {
            // Logs of versions that ran every group with node id 1: the
            // member (its only voter) is now named by its member id.
            storage.conf_state.voters = vec![cfg.node_id];
        }
        // A conf change in the log past the recorded membership may have
        // added voters: then only raft can tell what is committed.
        let conf_pending = storage.entries.iter().any(|e| {
            e.index > storage.conf_index && e.get_entry_type() == EntryType::EntryConfChange
        });
        let single_voter = storage.conf_state.voters == [cfg.node_id]
            && storage.conf_state.learners.is_empty()
            && !conf_pending;
        if single_voter {
            // With one voter an entry is committed once it is in this
            // member's durable log: the quorum is this member. (Raft would
            // also commit them all with the first entry of the next term.)
            storage.hard_state.commit = storage.last_index();
        }
        if applied_index > storage.hard_state.commit {
            // The state machine holds a snapshot the leader sent, and the
            // member stopped before its log recorded it: the log restarts
            // after it. The entry's term is known only if the log has it;
            // otherwise 0, and the leader's next append will not match, so
            // it sends the snapshot again.
            let term = storage.term_of(applied_index).unwrap_or(0);
            let mut cs = storage.conf_state.clone();
            if let Some((voters, learners)) = &cfg.snapshot_conf {
                cs.voters = voters.clone();
                cs.learners = learners.clone();
            }
            storage.restore(applied_index, term, cs);
        }
        storage.snapshot_file_index = applied_index;
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
        // Raft is told everything up to `commit` is applied, so the conf
        // changes among them must be in its configuration already; those
        // after the marker's `conf_index` are not yet.
        let mut conf_entries = Vec::new();
        for e in &storage.entries {
            if e.index > commit {
                break;
            }
            if e.get_entry_type() == EntryType::EntryConfChange {
                let cc = decode_conf_change(e)?;
                conf_entries.push((e.index, cc));
            }
        }
        let conf_changes: Vec<(u64, Vec<u8>)> = conf_entries
            .iter()
            .filter(|(i, _)| *i > applied_index)
            .map(|(i, cc)| (*i, cc.context.to_vec()))
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
            // A leader that cannot hear a quorum steps down instead of
            // holding leases and accepting writes it cannot commit.
            check_quorum: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let conf_index = storage.conf_index;
        let mut node = RawNode::new(&raft_cfg, storage, &logger)?;
        for (index, cc) in conf_entries {
            if index <= conf_index {
                continue;
            }
            match node.apply_conf_change(&cc) {
                Ok(cs) => {
                    let store = node.mut_store();
                    store.conf_state = cs;
                    store.conf_index = index;
                }
                // It was refused when it committed too: no effect then.
                Err(e) => log::debug!("raft: conf change {index} refused at replay: {e}"),
            }
        }
        if single_voter {
            node.campaign()?;
        }

        let inner = Rc::new(Inner {
            cfg,
            node: RefCell::new(node),
            wal,
            transport,
            apply: RefCell::new(None),
            st: RefCell::new(State {
                queue: VecDeque::new(),
                queue_bytes: 0,
                inbound: VecDeque::new(),
                inbound_dropped: 0,
                proposals_failed: 0,
                reads: VecDeque::new(),
                reading: HashMap::new(),
                compactions: VecDeque::new(),
                transfer: None,
                campaign: false,
                waiters: HashMap::new(),
                next_proposal_id: 1,
                ticks_pending: 0,
                failed: None,
                shutdown: false,
                driver_exited: false,
                unapplied: Vec::new(),
            }),
            work: Notify::default(),
            room: Notify::default(),
            driver_exit: Notify::default(),
            persisted_hs: RefCell::new(persisted_hs),
            role: Cell::new(Role::default()),
            commit_index: Cell::new(commit),
            applied_index: Cell::new(commit),
            term_committed: Cell::new(false),
        });
        // Persist the new term and vote (and the leader's empty entry) before
        // returning, so the caller sees a leader with a durable term.
        while inner.node.borrow().has_ready() {
            inner.handle_ready().await?;
        }
        inner.refresh_status();
        let recovered = Recovered {
            entries,
            conf_changes,
            single_voter,
            term: inner.role.get().term,
            commit_index: commit,
        };
        Ok((Rc::new(ShardLog { inner }), recovered))
    }

    /// Attaches the state machine and starts the driver and the ticker.
    /// Entries committed since `open` are handed to `apply` first.
    pub fn start(&self, apply: Option<Rc<dyn Apply>>) {
        let inner = &self.inner;
        if let Some(a) = apply {
            let pending = std::mem::take(&mut inner.st.borrow_mut().unapplied);
            a.role_changed(inner.role.get());
            for e in pending {
                if e.get_entry_type() == EntryType::EntryConfChange {
                    a.conf_changed(e.index, &e.data);
                } else {
                    a.committed(e.index, e.term, &e.data);
                }
            }
            *inner.apply.borrow_mut() = Some(a);
        }
        glommio::spawn_local(Inner::drive(inner.clone())).detach();
        glommio::spawn_local(Inner::tick_loop(Rc::downgrade(inner))).detach();
    }

    /// Proposes `data` and resolves with its raft index once it is committed
    /// (durable on a quorum). Proposals made while a WAL flush is running
    /// are batched into one raft `Ready`, one WAL append and one fdatasync.
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
    /// revision order). Refused unless this member leads the group; the
    /// proposal is dropped (its future fails with `ProposalDropped`) if the
    /// member no longer leads the same term when raft gets it. The queue
    /// bound is honoured by calling `reserve` first; `submit` itself never
    /// waits. The returned future resolves once the entry is committed.
    pub fn submit(
        &self,
        data: Vec<u8>,
    ) -> Result<impl std::future::Future<Output = Result<u64, Error>> + 'static, Error> {
        self.submit_in(None, data)
    }

    /// [`ShardLog::submit`], refused unless this member leads `term` (the
    /// term in which the caller applied the proposal's effects).
    pub fn submit_in(
        &self,
        term: Option<u64>,
        data: Vec<u8>,
    ) -> Result<impl std::future::Future<Output = Result<u64, Error>> + 'static, Error> {
        self.enqueue(term, data, None)
    }

    /// Proposes a membership change of this group (a simple one: one
    /// member added as voter or learner, promoted, or removed), carrying
    /// `context` to every member's [`Apply::conf_changed`]. Resolves with
    /// its index once it committed and took effect here; fails with
    /// [`Error::ConfChangeRefused`] if raft committed it without effect.
    pub async fn propose_conf_change(
        &self,
        change: ConfChangeType,
        node_id: u64,
        context: Vec<u8>,
    ) -> Result<u64, Error> {
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = node_id;
        cc.context = context.into();
        self.reserve().await;
        self.enqueue(None, Vec::new(), Some(cc))?.await
    }

    fn enqueue(
        &self,
        term: Option<u64>,
        data: Vec<u8>,
        conf: Option<ConfChange>,
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
            let role = inner.role.get();
            if !role.leader || term.is_some_and(|t| t != role.term) {
                return Err(Error::NotLeader {
                    leader_id: role.leader_id,
                });
            }
            let id = st.next_proposal_id;
            st.next_proposal_id += 1;
            st.waiters.insert(
                id,
                Waiter {
                    term: role.term,
                    conf: conf.is_some(),
                    slot: slot.clone(),
                },
            );
            st.queue_bytes += data.len().max(1);
            st.queue.push_back(Proposal {
                id,
                term: role.term,
                data,
                conf,
            });
        }
        inner.work.notify_all();
        Ok(async move { slot.wait().await })
    }

    /// A message from a peer of this group. Dropped (and counted) when the
    /// inbound queue is full: raft retransmits.
    pub fn step(&self, msg: Message) {
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            let apply = self.inner.apply.borrow().clone();
            if let Some(a) = apply {
                a.snapshot_offered(msg);
            }
            return;
        }
        self.push_inbound(msg);
    }

    /// The `MsgSnapshot` of [`Apply::snapshot_offered`], once the state
    /// machine holds the snapshot it describes.
    pub fn step_installed(&self, msg: Message) {
        self.push_inbound(msg);
    }

    fn push_inbound(&self, msg: Message) {
        let mut st = self.inner.st.borrow_mut();
        if st.inbound.len() >= INBOUND_MESSAGES_PENDING_MAX {
            st.inbound_dropped += 1;
            return;
        }
        st.inbound.push_back(msg);
        drop(st);
        self.inner.work.notify_all();
    }

    /// Proposals waiting for their commit (etcd's `proposals_pending`).
    pub fn proposals_pending(&self) -> usize {
        self.inner.st.borrow().waiters.len()
    }

    /// Proposals that failed: dropped with a lost leadership or a failed
    /// log (etcd's `proposals_failed_total`).
    pub fn proposals_failed(&self) -> u64 {
        self.inner.st.borrow().proposals_failed
    }

    /// Messages dropped because the inbound queue was full.
    pub fn inbound_dropped(&self) -> u64 {
        self.inner.st.borrow().inbound_dropped
    }

    /// raft's ReadIndex: resolves with a commit index once a quorum has
    /// confirmed this member still leads (on a follower: the leader's
    /// commit index as the leader confirmed it). A read that then waits
    /// until that index is applied is linearizable.
    pub async fn read_index(&self) -> Result<u64, Error> {
        let slot = Rc::new(Slot::default());
        {
            let mut st = self.inner.st.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.shutdown {
                return Err(Error::Shutdown);
            }
            if st.reads.len() + st.reading.len() >= READS_PENDING_MAX {
                return Err(Error::Busy);
            }
            let id = st.next_proposal_id;
            st.next_proposal_id += 1;
            st.reads.push_back((id, slot.clone()));
        }
        self.inner.work.notify_all();
        slot.wait().await
    }

    /// Asks raft to hand this group's leadership to `to` (only a leader
    /// acts on it).
    pub fn transfer_leader(&self, to: u64) {
        self.inner.st.borrow_mut().transfer = Some(to);
        self.inner.work.notify_all();
    }

    /// Starts an election now (pre-vote first), instead of waiting for the
    /// election timeout.
    pub fn campaign(&self) {
        self.inner.st.borrow_mut().campaign = true;
        self.inner.work.notify_all();
    }

    /// The caller's state machine durably covers entries <= `index`: write a
    /// compaction marker, drop those entries from raft storage and delete the
    /// WAL segments that only hold records no longer needed. A leader keeps
    /// what a voter has not acknowledged yet, up to [`CATCH_UP_ENTRIES`];
    /// a voter further behind is sent the state machine's snapshot.
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

    /// The state machine wrote a snapshot file at `index`: a follower that
    /// needs compacted entries is offered it from now on.
    pub fn snapshot_written(&self, index: u64) {
        let mut node = self.inner.node.borrow_mut();
        let store = node.mut_store();
        store.snapshot_file_index = store.snapshot_file_index.max(index);
    }

    pub fn role(&self) -> Role {
        self.inner.role.get()
    }
    pub fn term(&self) -> u64 {
        self.inner.role.get().term
    }
    pub fn commit_index(&self) -> u64 {
        self.inner.commit_index.get()
    }
    pub fn applied_index(&self) -> u64 {
        self.inner.applied_index.get()
    }
    pub fn is_leader(&self) -> bool {
        self.inner.role.get().leader
    }
    pub fn leader_id(&self) -> u64 {
        self.inner.role.get().leader_id
    }
    /// A leader that has committed an entry of its own term: everything
    /// committed by earlier leaders is in its log and has been applied.
    pub fn leads_committed_term(&self) -> bool {
        self.inner.role.get().leader && self.inner.term_committed.get()
    }
    /// Nothing proposed here is still in flight: no proposal is queued
    /// and every entry of the log has committed and been applied. A
    /// leader that starts again in the same term needs this before it
    /// reads its visible revision, or an entry of its own that commits
    /// afterwards could become visible below the cut it then voids from.
    pub fn settled(&self) -> bool {
        let queued = !self.inner.st.borrow().queue.is_empty();
        let node = self.inner.node.borrow();
        let log = &node.raft.raft_log;
        !queued && log.last_index() == log.committed && log.applied == log.committed
    }
    pub fn node_id(&self) -> u64 {
        self.inner.cfg.node_id
    }
    /// The group's voters.
    pub fn voters(&self) -> Vec<u64> {
        let node = self.inner.node.borrow();
        let mut v: Vec<u64> = node.raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        v
    }

    /// Whether this member is the group's only voter.
    pub fn is_single_voter(&self) -> bool {
        let node = self.inner.node.borrow();
        let voters = node.raft.prs().conf().voters();
        voters.is_singleton() && voters.contains(self.inner.cfg.node_id)
    }

    /// The group's learners.
    pub fn learners(&self) -> Vec<u64> {
        let node = self.inner.node.borrow();
        let mut v: Vec<u64> = node.raft.prs().conf().learners().iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// On the leader, how far member `id`'s log is known to match this
    /// one's, and this log's last index: (matched, last). `None` elsewhere
    /// or for a member not in the group.
    pub fn replication_of(&self, id: u64) -> Option<(u64, u64)> {
        let node = self.inner.node.borrow();
        if node.raft.state != StateRole::Leader {
            return None;
        }
        let pr = node.raft.prs().get(id)?;
        Some((pr.matched, node.raft.raft_log.last_index()))
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
        // The shard holds this log and the log its `Apply`: break the cycle.
        inner.apply.borrow_mut().take();
        inner.wal.close().await;
    }
}

/// What the driver takes from the queues in one round.
struct Work {
    shutdown: bool,
    ticks: u32,
    proposals: Vec<Proposal>,
    inbound: Vec<Message>,
    reads: Vec<(u64, Rc<Slot>)>,
    compaction: Option<(u64, Rc<Slot>)>,
    transfer: Option<u64>,
    campaign: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.ticks == 0
            && self.proposals.is_empty()
            && self.inbound.is_empty()
            && self.reads.is_empty()
            && self.compaction.is_none()
            && self.transfer.is_none()
            && !self.campaign
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

    fn take_work(&self) -> Work {
        let mut st = self.st.borrow_mut();
        st.queue_bytes = 0;
        Work {
            shutdown: st.shutdown,
            ticks: std::mem::take(&mut st.ticks_pending),
            proposals: st.queue.drain(..).collect(),
            inbound: st.inbound.drain(..).collect(),
            reads: st.reads.drain(..).collect(),
            compaction: st.compactions.pop_front(),
            transfer: st.transfer.take(),
            campaign: std::mem::take(&mut st.campaign),
        }
    }

    async fn drive(self: Rc<Inner>) {
        loop {
            let wait = self.work.wait();
            let work = self.take_work();
            if !work.proposals.is_empty() {
                self.room.notify_all();
            }
            if work.shutdown {
                self.fail_all(Error::Shutdown);
                break;
            }
            if work.is_empty() && !self.node.borrow().has_ready() {
                wait.await;
                continue;
            }
            let compaction = work.compaction.clone();
            self.feed(work);
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
        let mut role = self.role.get();
        role.leader = false;
        self.role.set(role);
        // A failed log leads nothing: the state machine drops what it
        // applied ahead of the log.
        let apply = self.apply.borrow().clone();
        if let Some(a) = apply {
            a.role_changed(role);
        }
        self.driver_exit.notify_all();
        self.room.notify_all();
    }

    /// Fails ReadIndex requests raft has sat on for two election timeouts:
    /// a follower's is dropped silently while no leader is known, and its
    /// waiter would otherwise hold a place in the bound for ever.
    fn expire_reads(&self) {
        let bound = self.cfg.tick_interval * (2 * self.cfg.election_tick) as u32;
        let now = std::time::Instant::now();
        let expired: Vec<Rc<Slot>> = {
            let mut st = self.st.borrow_mut();
            let old: Vec<u64> = st
                .reading
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) > bound)
                .map(|(id, _)| *id)
                .collect();
            old.iter()
                .filter_map(|id| st.reading.remove(id).map(|(s, _)| s))
                .collect()
        };
        for slot in expired {
            slot.complete(Err(Error::ProposalDropped));
        }
    }

    /// Hands one round of inputs to raft.
    fn feed(&self, work: Work) {
        if work.ticks > 0 {
            self.expire_reads();
        }
        let mut node = self.node.borrow_mut();
        for _ in 0..work.ticks {
            node.tick();
        }
        for m in work.inbound {
            // A message raft refuses (from a member no longer in the group,
            // a local message type from the network) is dropped: it must not
            // stop the group.
            if let Err(e) = node.step(m) {
                log::debug!("raft: dropped peer message: {e}");
            }
        }
        if work.campaign {
            let _ = node.campaign();
        }
        if let Some(to) = work.transfer {
            if node.raft.state == StateRole::Leader && to != self.cfg.node_id {
                node.transfer_leader(to);
            }
        }
        let leading = (node.raft.state == StateRole::Leader).then_some(node.raft.term);
        for p in work.proposals {
            let dropped = if leading != Some(p.term) {
                // Leadership changed since the proposer looked: its effects
                // were rolled back with the old term, so the entry must not
                // appear under a new one.
                Some(Error::ProposalDropped)
            } else if p.conf.is_some() && node.raft.has_pending_conf() {
                // Raft would turn it into an empty entry (one change at a
                // time per group), which no waiter could recognise.
                Some(Error::ConfChangeRefused(
                    "another membership change is pending in this group".into(),
                ))
            } else {
                let ctx = p.id.to_le_bytes().to_vec();
                let proposed = match p.conf {
                    Some(cc) => node.propose_conf_change(ctx, cc),
                    None => node.propose(ctx, p.data),
                };
                match proposed {
                    Ok(()) => None,
                    Err(raft::Error::ProposalDropped) => Some(Error::NotLeader {
                        leader_id: node.raft.leader_id,
                    }),
                    Err(e) => Some(Error::from(e)),
                }
            };
            if let Some(err) = dropped {
                let mut st = self.st.borrow_mut();
                st.proposals_failed += 1;
                if let Some(w) = st.waiters.remove(&p.id) {
                    drop(st);
                    w.slot.complete(Err(err));
                }
            }
        }
        for (id, slot) in work.reads {
            node.read_index(id.to_le_bytes().to_vec());
            self.st
                .borrow_mut()
                .reading
                .insert(id, (slot, std::time::Instant::now()));
        }
    }

    fn fail_all(&self, e: Error) {
        let (waiters, compactions, reads) = {
            let mut st = self.st.borrow_mut();
            st.queue.clear();
            st.queue_bytes = 0;
            let mut reads: Vec<Rc<Slot>> = st.reading.drain().map(|(_, (s, _))| s).collect();
            reads.extend(st.reads.drain(..).map(|(_, s)| s));
            (
                std::mem::take(&mut st.waiters),
                std::mem::take(&mut st.compactions),
                reads,
            )
        };
        self.st.borrow_mut().proposals_failed += waiters.len() as u64;
        for (_, w) in waiters {
            w.slot.complete(Err(e.clone()));
        }
        for (_, slot) in compactions {
            slot.complete(Err(e.clone()));
        }
        for slot in reads {
            slot.complete(Err(e.clone()));
        }
    }

    /// Publishes raft's state; tells the state machine when the role or
    /// term changed, and fails what the change makes unanswerable.
    fn refresh_status(&self) {
        let (role, commit, applied, term_committed) = {
            let node = self.node.borrow();
            let r = &node.raft;
            (
                Role {
                    leader: r.state == StateRole::Leader,
                    term: r.term,
                    leader_id: r.leader_id,
                },
                r.raft_log.committed,
                r.raft_log.applied,
                r.commit_to_current_term(),
            )
        };
        self.commit_index.set(commit);
        self.applied_index.set(applied);
        self.term_committed.set(term_committed);
        let old = self.role.replace(role);
        if old == role {
            return;
        }
        if old.leader && (!role.leader || role.term != old.term) {
            // Proposals in flight may or may not commit under the new
            // leader; their callers learn the outcome is unknown. Reads
            // waiting for this leader's confirmation will not get it.
            let (waiters, reads) = {
                let mut st = self.st.borrow_mut();
                let reads: Vec<Rc<Slot>> = st.reading.drain().map(|(_, (s, _))| s).collect();
                (std::mem::take(&mut st.waiters), reads)
            };
            self.st.borrow_mut().proposals_failed += waiters.len() as u64;
            for (_, w) in waiters {
                w.slot.complete(Err(Error::ProposalDropped));
            }
            for slot in reads {
                slot.complete(Err(Error::ProposalDropped));
            }
        }
        let apply = self.apply.borrow().clone();
        if let Some(a) = apply {
            a.role_changed(role);
        }
    }

    /// Sends raft's messages. A snapshot message carries only the index of
    /// the snapshot file (the follower fetches it), so once it is handed to
    /// the transport it is reported done: if the follower could not use it,
    /// its next answers make the leader offer it again.
    fn send(&self, msgs: Vec<Message>) {
        let snapshots: Vec<u64> = msgs
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect();
        self.transport.send(msgs);
        let wanted = self.node.borrow().store().snapshot_wanted.replace(false);
        if wanted {
            let apply = self.apply.borrow().clone();
            if let Some(a) = apply {
                a.snapshot_wanted();
            }
        }
        if !snapshots.is_empty() {
            let mut node = self.node.borrow_mut();
            for to in snapshots {
                node.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
    }

    /// One `Ready`: send, persist (one WAL append, one fdatasync), advance,
    /// apply.
    async fn handle_ready(&self) -> Result<(), Error> {
        let mut ready = self.node.borrow_mut().ready();
        // A leader's appends go out before its own write: the followers'
        // fsyncs run in parallel with this one.
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // The state machine installed it before raft saw the message
            // (`step_installed`): the log now starts after it.
            let meta = ready.snapshot().get_metadata().clone();
            let (index, term) = (meta.index, meta.term);
            let hs = {
                let mut node = self.node.borrow_mut();
                let store = node.mut_store();
                store.restore(index, term, meta.get_conf_state().clone());
                store.hard_state.clone()
            };
            let marker = encode_compaction(index, term, &hs, meta.get_conf_state(), index);
            let lsn = self.wal.append(vec![marker]).await?;
            *self.persisted_hs.borrow_mut() = hs;
            self.wal.truncate_before(lsn).await?;
        }
        self.refresh_role_from_ready(&ready);
        self.commit_entries(ready.take_committed_entries());
        self.read_states(ready.take_read_states());
        let entries = ready.take_entries();
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
        self.send(ready.take_persisted_messages());
        let mut light = self.node.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.borrow_mut().mut_store().hard_state.commit = commit;
        }
        self.send(light.take_messages());
        self.commit_entries(light.take_committed_entries());
        self.node.borrow_mut().advance_apply();
        self.refresh_status();
        Ok(())
    }

    /// A role change must reach the state machine before the entries
    /// committed in the same `Ready` (a new leader applies them as another
    /// leader's, not as its own).
    fn refresh_role_from_ready(&self, ready: &raft::Ready) {
        if ready.ss().is_some() || ready.hs().is_some() {
            self.refresh_status();
        }
    }

    /// Hands committed entries to the state machine and to their proposers.
    fn commit_entries(&self, committed: Vec<Entry>) {
        if committed.is_empty() {
            return;
        }
        let apply = self.apply.borrow().clone();
        for e in committed {
            // What completes the entry's proposer: its index, or why a conf
            // change took no effect.
            let mut outcome = Ok(e.index);
            let mut conf_applied = false;
            match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => match &apply {
                    Some(a) => a.committed(e.index, e.term, &e.data),
                    None => self.st.borrow_mut().unapplied.push(e.clone()),
                },
                EntryType::EntryConfChange => match self.apply_conf_change(&e) {
                    Ok(context) => {
                        conf_applied = true;
                        match &apply {
                            Some(a) => a.conf_changed(e.index, &context),
                            None => {
                                let mut held = e.clone();
                                held.data = context.into();
                                self.st.borrow_mut().unapplied.push(held);
                            }
                        }
                    }
                    Err(why) => {
                        log::warn!("raft: conf change at index {} refused: {why}", e.index);
                        outcome = Err(Error::ConfChangeRefused(why));
                    }
                },
                _ => {}
            }
            if e.context.len() == 8 {
                let mut id = [0u8; 8];
                id.copy_from_slice(&e.context);
                let id = u64::from_le_bytes(id);
                let mut st = self.st.borrow_mut();
                if st.waiters.get(&id).is_some_and(|w| w.term == e.term) {
                    if let Some(w) = st.waiters.remove(&id) {
                        drop(st);
                        if w.conf && !conf_applied && outcome.is_ok() {
                            // A conf change waiter matched a plain entry:
                            // nothing took effect.
                            outcome = Err(Error::ConfChangeRefused(
                                "the entry committed without the change".into(),
                            ));
                        }
                        w.slot.complete(outcome);
                    }
                }
            }
        }
    }

    /// Applies a committed conf change to raft and to the membership the
    /// log records; returns its context.
    fn apply_conf_change(&self, e: &Entry) -> Result<Vec<u8>, String> {
        let cc = decode_conf_change(e).map_err(|e| e.to_string())?;
        let mut node = self.node.borrow_mut();
        let cs = node.apply_conf_change(&cc).map_err(|e| e.to_string())?;
        let store = node.mut_store();
        store.conf_state = cs;
        store.conf_index = e.index;
        Ok(cc.context.to_vec())
    }

    fn read_states(&self, states: Vec<raft::ReadState>) {
        for rs in states {
            if rs.request_ctx.len() != 8 {
                continue;
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&rs.request_ctx);
            let slot = self.st.borrow_mut().reading.remove(&u64::from_le_bytes(id));
            if let Some((slot, _)) = slot {
                slot.complete(Ok(rs.index));
            }
        }
    }

    async fn compact(&self, index: u64) -> Result<(), Error> {
        let (index, term, hs, cs, conf_index) = {
            let node = self.node.borrow();
            let store = node.store();
            let applied = node.raft.raft_log.applied;
            if index > applied {
                return Err(Error::CompactBeyondApplied { index, applied });
            }
            let mut index = index;
            if node.raft.state == StateRole::Leader {
                // Keep what a voter that is a little behind still needs,
                // up to etcd's catch-up margin; one further behind gets the
                // snapshot file (and a member that is down costs bounded
                // memory and disk).
                let floor = index.saturating_sub(CATCH_UP_ENTRIES);
                for (id, pr) in node.raft.prs().iter() {
                    if *id != self.cfg.node_id {
                        index = index.min(pr.matched.max(floor));
                    }
                }
            }
            if index <= store.snap_index {
                return Ok(());
            }
            let term = store.term_of(index).ok_or_else(|| {
                Error::Corrupt(format!("no term for index {index} below applied {applied}"))
            })?;
            (
                index,
                term,
                store.hard_state.clone(),
                store.conf_state.clone(),
                store.conf_index,
            )
        };
        let marker_lsn = self
            .wal
            .append(vec![encode_compaction(index, term, &hs, &cs, conf_index)])
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

/// The conf change a committed entry carries; one that does not decode
/// means the log is corrupt.
fn decode_conf_change(e: &Entry) -> Result<ConfChange, Error> {
    <ConfChange as protobuf::Message>::parse_from_bytes(&e.data).map_err(|err| {
        Error::Corrupt(format!(
            "conf change entry {} does not decode: {err}",
            e.index
        ))
    })
}
