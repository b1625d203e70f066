//! The glommio shell around the sans-IO [`LogCore`] of one shard group.
//!
//! The core (raft-rs's `RawNode` and ferrokv's bookkeeping around it) has
//! no I/O; this shell feeds it from three queues (proposals, inbound peer
//! messages, ticks), makes every `Ready`'s write durable with one WAL
//! append and one fdatasync, sends its messages through a [`Transport`],
//! and hands committed entries and role changes to the shard's [`Apply`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use ferrokv_wal::{Wal, WalConfig};
use raft::eraftpb::{ConfChange, ConfChangeType, Message, MessageType};

use crate::log_core::{Event, LogCore, Output, Proposal, Recovered, Role, Waiting};
use crate::Error;
use ferrokv_wal::notify::Notify;

/// Bound on peer messages waiting for the driver. Raft tolerates loss (it
/// retransmits), so a message arriving over the bound is dropped.
pub const INBOUND_MESSAGES_PENDING_MAX: usize = 4096;

/// Log entries a leader keeps past its snapshot for voters a little behind
/// (etcd's `SnapshotCatchUpEntries`).
pub const CATCH_UP_ENTRIES: u64 = 5000;

/// The raft node id of every single-voter group before members had ids.
pub(crate) const LEGACY_NODE_ID: u64 = 1;

/// Bound on ReadIndex requests waiting for the leader's confirmation.
pub const READS_PENDING_MAX: usize = 4096;

/// Ticks a stalled driver catches up at most.
pub const TICKS_PENDING_MAX: u32 = 64;

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
    /// Seed of the log's randomness: its randomized election timeouts and
    /// the nonce that tells this open's ReadIndex requests from an earlier
    /// one's. `None` draws both from the OS (a deterministic simulation
    /// sets one, different for every open).
    pub seed: Option<u64>,
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
            seed: None,
        }
    }
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

impl Waiting for Rc<Slot> {
    fn complete(&self, r: Result<u64, Error>) {
        Slot::complete(self, r)
    }
}

struct State {
    /// Proposals not yet handed to raft.
    queue: VecDeque<Proposal>,
    queue_bytes: usize,
    inbound: VecDeque<Message>,
    inbound_dropped: u64,
    /// ReadIndex requests not yet handed to raft.
    reads: VecDeque<(u64, Rc<Slot>)>,
    compactions: VecDeque<(u64, Rc<Slot>)>,
    transfer: Option<u64>,
    campaign: bool,
    next_proposal_id: u64,
    ticks_pending: u32,
    failed: Option<Error>,
    shutdown: bool,
    driver_exited: bool,
    /// Committed entries and conf changes seen before an `Apply` was
    /// attached (recovery).
    unapplied: Vec<Event>,
}

struct Inner {
    cfg: LogConfig,
    core: RefCell<LogCore<Rc<Slot>>>,
    wal: Wal,
    transport: Box<dyn Transport>,
    apply: RefCell<Option<Rc<dyn Apply>>>,
    st: RefCell<State>,
    /// Wakes the driver.
    work: Notify,
    /// Wakes proposers waiting for queue room.
    room: Notify,
    driver_exit: Notify,
}

/// Raft log of one shard group. Lives on one glommio executor; a background
/// task drives the core (ticks, peer messages, proposals, ready handling).
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
        let (core, mut recovered) = LogCore::recover(&cfg, &records, applied_index)?;
        drop(records);
        let inner = Rc::new(Inner {
            cfg,
            core: RefCell::new(core),
            wal,
            transport,
            apply: RefCell::new(None),
            st: RefCell::new(State {
                queue: VecDeque::new(),
                queue_bytes: 0,
                inbound: VecDeque::new(),
                inbound_dropped: 0,
                reads: VecDeque::new(),
                compactions: VecDeque::new(),
                transfer: None,
                campaign: false,
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
        });
        // Persist the new term and vote (and the leader's empty entry) before
        // returning, so the caller sees a leader with a durable term.
        while inner.core.borrow().has_ready() {
            inner.handle_ready().await?;
        }
        inner.refresh();
        recovered.term = inner.role().term;
        Ok((Rc::new(ShardLog { inner }), recovered))
    }

    /// Attaches the state machine and starts the driver and the ticker.
    /// Entries committed since `open` are handed to `apply` first.
    pub fn start(&self, apply: Option<Rc<dyn Apply>>) {
        let inner = &self.inner;
        if let Some(a) = apply {
            let pending = std::mem::take(&mut inner.st.borrow_mut().unapplied);
            a.role_changed(inner.role());
            for ev in pending {
                dispatch(&*a, ev);
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
        let role = inner.role();
        {
            let mut st = inner.st.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.shutdown {
                return Err(Error::Shutdown);
            }
            if !role.leader || term.is_some_and(|t| t != role.term) {
                return Err(Error::NotLeader {
                    leader_id: role.leader_id,
                });
            }
            let id = st.next_proposal_id;
            st.next_proposal_id += 1;
            inner
                .core
                .borrow_mut()
                .await_entry(id, role.term, conf.is_some(), slot.clone());
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
        self.inner.core.borrow().proposals_pending()
    }

    /// Proposals that failed: dropped with a lost leadership or a failed
    /// log (etcd's `proposals_failed_total`).
    pub fn proposals_failed(&self) -> u64 {
        self.inner.core.borrow().proposals_failed()
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
            if st.reads.len() + self.inner.core.borrow().reads_pending() >= READS_PENDING_MAX {
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
        self.inner.core.borrow_mut().snapshot_written(index);
    }

    pub fn role(&self) -> Role {
        self.inner.role()
    }
    pub fn term(&self) -> u64 {
        self.inner.role().term
    }
    pub fn commit_index(&self) -> u64 {
        self.inner.core.borrow().commit_index()
    }
    pub fn applied_index(&self) -> u64 {
        self.inner.core.borrow().applied_index()
    }
    /// Why the log stopped for good (a WAL error), if it did: it then
    /// leads nothing and takes nothing until the member restarts.
    pub fn failure(&self) -> Option<Error> {
        self.inner.st.borrow().failed.clone()
    }
    pub fn is_leader(&self) -> bool {
        self.inner.role().leader
    }
    pub fn leader_id(&self) -> u64 {
        self.inner.role().leader_id
    }
    /// A leader that has committed an entry of its own term: everything
    /// committed by earlier leaders is in its log and has been applied.
    pub fn leads_committed_term(&self) -> bool {
        self.inner.role().leader && self.inner.core.borrow().leads_committed_term()
    }
    /// Nothing proposed here is still in flight: no proposal is queued
    /// and every entry of the log has committed and been applied. A
    /// leader that starts again in the same term needs this before it
    /// reads its visible revision, or an entry of its own that commits
    /// afterwards could become visible below the cut it then voids from.
    pub fn settled(&self) -> bool {
        let queued = !self.inner.st.borrow().queue.is_empty();
        !queued && self.inner.core.borrow().log_settled()
    }
    pub fn node_id(&self) -> u64 {
        self.inner.cfg.node_id
    }
    /// The group's voters.
    pub fn voters(&self) -> Vec<u64> {
        self.inner.core.borrow().voters()
    }

    /// Whether this member is the group's only voter.
    pub fn is_single_voter(&self) -> bool {
        self.inner.core.borrow().is_single_voter()
    }

    /// The group's learners.
    pub fn learners(&self) -> Vec<u64> {
        self.inner.core.borrow().learners()
    }

    /// On the leader, how far member `id`'s log is known to match this
    /// one's, and this log's last index: (matched, last). `None` elsewhere
    /// or for a member not in the group.
    pub fn replication_of(&self, id: u64) -> Option<(u64, u64)> {
        self.inner.core.borrow().replication_of(id)
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

/// Hands one event to the state machine.
fn dispatch(a: &dyn Apply, ev: Event) {
    match ev {
        Event::Role(role) => a.role_changed(role),
        Event::Committed { index, term, data } => a.committed(index, term, &data),
        Event::ConfChanged { index, context } => a.conf_changed(index, &context),
        Event::SnapshotWanted => a.snapshot_wanted(),
    }
}

impl Inner {
    /// The core's role; a log whose driver stopped leads nothing.
    fn role(&self) -> Role {
        let mut role = self.core.borrow().role();
        if self.st.borrow().driver_exited {
            role.leader = false;
        }
        role
    }

    /// Sends the core's messages, hands its events to the state machine
    /// (or keeps the entries for it until it is attached) and completes
    /// its waiters. Runs with no borrow of the core held, so the state
    /// machine may call into the log.
    fn deliver(&self, out: Output<Rc<Slot>>) {
        if !out.messages.is_empty() {
            self.transport.send(out.messages);
        }
        let apply = self.apply.borrow().clone();
        for ev in out.events {
            match &apply {
                Some(a) => dispatch(&**a, ev),
                None => {
                    if matches!(ev, Event::Committed { .. } | Event::ConfChanged { .. }) {
                        self.st.borrow_mut().unapplied.push(ev);
                    }
                }
            }
        }
        for (slot, r) in out.done {
            slot.complete(r);
        }
    }

    fn refresh(&self) {
        let mut out = Output::default();
        self.core.borrow_mut().refresh(&mut out);
        self.deliver(out);
    }

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
            st.ticks_pending = (st.ticks_pending + 1).min(TICKS_PENDING_MAX);
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
            if work.is_empty() && !self.core.borrow().has_ready() {
                wait.await;
                continue;
            }
            let compaction = work.compaction.clone();
            self.feed(work);
            let mut res = Ok(());
            while res.is_ok() && self.core.borrow().has_ready() {
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
            self.refresh();
            if let Err(e) = res {
                log::error!("raft: shard log failed: {e}");
                self.st.borrow_mut().failed = Some(e.clone());
                self.fail_all(e);
                break;
            }
        }
        self.st.borrow_mut().driver_exited = true;
        // A failed log leads nothing: the state machine drops what it
        // applied ahead of the log.
        let role = self.role();
        let apply = self.apply.borrow().clone();
        if let Some(a) = apply {
            a.role_changed(role);
        }
        self.driver_exit.notify_all();
        self.room.notify_all();
    }

    /// Hands one round of inputs to the core.
    fn feed(&self, work: Work) {
        let mut out = Output::default();
        {
            let mut core = self.core.borrow_mut();
            for _ in 0..work.ticks {
                core.tick(&mut out);
            }
            for m in work.inbound {
                core.step(m);
            }
            if work.campaign {
                core.campaign();
            }
            if let Some(to) = work.transfer {
                core.transfer_leader(to);
            }
            for p in work.proposals {
                core.propose(p, &mut out);
            }
            for (id, slot) in work.reads {
                core.read_index(id, slot);
            }
        }
        self.deliver(out);
    }

    fn fail_all(&self, e: Error) {
        let (compactions, reads) = {
            let mut st = self.st.borrow_mut();
            st.queue.clear();
            st.queue_bytes = 0;
            (
                std::mem::take(&mut st.compactions),
                std::mem::take(&mut st.reads),
            )
        };
        let mut out = Output::default();
        self.core.borrow_mut().fail_all(&e, &mut out);
        self.deliver(out);
        for (_, slot) in compactions {
            slot.complete(Err(e.clone()));
        }
        for (_, slot) in reads {
            slot.complete(Err(e.clone()));
        }
    }

    /// One `Ready`: send, persist (one WAL append, one fdatasync), advance,
    /// apply.
    async fn handle_ready(&self) -> Result<(), Error> {
        let mut out = Output::default();
        let mut write = self.core.borrow_mut().begin_ready(&mut out);
        self.deliver(out);
        let records = std::mem::take(&mut write.records);
        let mut last_lsn = 0;
        if !records.is_empty() {
            let n = records.len() as u64;
            last_lsn = self.wal.append(records).await?;
            if write.truncate {
                // The first record is the installed snapshot's marker.
                self.wal.truncate_before(last_lsn + 1 - n).await?;
            }
        }
        let mut out = Output::default();
        self.core
            .borrow_mut()
            .finish_ready(write, last_lsn, &mut out)?;
        self.deliver(out);
        Ok(())
    }

    /// Compacts the log to `index` (as far as the core allows). Runs in
    /// the driver, so no entry record is in flight that the core does not
    /// know about.
    async fn compact(&self, index: u64) -> Result<(), Error> {
        let Some(mut plan) = self.core.borrow().plan_compaction(index)? else {
            return Ok(());
        };
        let marker_lsn = self
            .wal
            .append(vec![std::mem::take(&mut plan.record)])
            .await?;
        let keep_from = self.core.borrow_mut().compacted(&plan, marker_lsn)?;
        self.wal.truncate_before(keep_from).await?;
        Ok(())
    }
}
