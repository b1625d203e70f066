//! The sans-IO core of one shard group's raft log.
//!
//! raft-rs's `RawNode` plus what ferrokv adds around it: recovery from the
//! WAL's records, proposals matched to their entries by id *and* term,
//! ReadIndex requests expired after a number of ticks, what a `Ready`
//! writes and in which order, compaction planning. It has no clock, no
//! I/O and no executor: inputs are method calls (ticks, peer messages,
//! proposals, reads, the lsn a write got), outputs are an [`Output`]
//! (messages to send, events for the state machine, completed waiters) and
//! the [`Write`] a `Ready` needs durable. Election timeouts are drawn from
//! a seed when one is configured. The glommio shell (`shard_log.rs`) and
//! the deterministic simulation (`tests/src/sim/`) drive this same code.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChange, Entry, EntryType, HardState, Message, MessageType};
use raft::{Config, RawNode, SnapshotStatus, StateRole};

use crate::record::{encode_compaction, encode_entry, encode_hard_state};
use crate::shard_log::{LogConfig, CATCH_UP_ENTRIES, LEGACY_NODE_ID};
use crate::storage::{replay, ShardStorage};
use crate::Error;

/// Whoever waits for a proposal, a read or a compaction: told its outcome
/// once (the shell's completion slots; the simulation's records).
pub trait Waiting {
    fn complete(&self, r: Result<u64, Error>);
}

/// This member's place in the group, as of the last `Ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Role {
    pub leader: bool,
    pub term: u64,
    pub leader_id: u64,
}

/// What recovery found in the WAL.
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
    /// [`Event::ConfChanged`] would have shown them).
    pub conf_changes: Vec<(u64, Vec<u8>)>,
    /// Commit index covered by `entries` (the caller's new applied index;
    /// below the caller's own when the log is behind its snapshot).
    pub commit_index: u64,
    /// The log is its group's only voter, with nothing in it that could
    /// have changed that: every durable entry was committed and returned.
    pub single_voter: bool,
}

/// What the state machine is told, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Leadership or term changed; comes before the committed entries of
    /// the same `Ready`.
    Role(Role),
    /// A committed normal entry with data, in index order, each once. An
    /// entry of the term this member leads was proposed by it.
    Committed {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
    /// A committed conf change took effect in this group: `context` is
    /// what the proposer attached.
    ConfChanged { index: u64, context: Vec<u8> },
    /// Raft needs a snapshot newer than the state machine's newest file.
    SnapshotWanted,
}

/// What one call into the core produced; the driver sends the messages,
/// hands the events to the state machine and completes the waiters, in
/// that order, before calling in again.
pub struct Output<W> {
    pub messages: Vec<Message>,
    pub events: Vec<Event>,
    pub done: Vec<(W, Result<u64, Error>)>,
}

impl<W> Default for Output<W> {
    fn default() -> Self {
        Output {
            messages: Vec::new(),
            events: Vec::new(),
            done: Vec::new(),
        }
    }
}

impl<W> Output<W> {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.events.is_empty() && self.done.is_empty()
    }
}

/// A proposal handed to raft: `term` is the term the proposer saw this
/// member lead; it is proposed only if the member still leads that term.
pub struct Proposal {
    pub id: u64,
    pub term: u64,
    pub data: Vec<u8>,
    pub conf: Option<ConfChange>,
}

/// What a `Ready` needs durable before it can go on: `records` as one WAL
/// append (one fdatasync), in order. If `truncate` is set, the first
/// record is a snapshot's compaction marker and every record before it can
/// go once the append is durable.
pub struct Write {
    pub records: Vec<Vec<u8>>,
    pub truncate: bool,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    restored_hs: Option<HardState>,
    ready: raft::Ready,
}

/// A compaction raft storage allows: the marker record to make durable,
/// then [`LogCore::compacted`].
pub struct Compaction {
    /// The driver may take it out before [`LogCore::compacted`].
    pub record: Vec<u8>,
    index: u64,
}

/// A proposal waiting for its entry. Only this member proposes in a term
/// it leads, so an entry of another term that carries the same id
/// (another leader's, or ours from before a restart) is not it.
struct Waiter<W> {
    term: u64,
    /// A conf change: only a committed conf change completes it.
    conf: bool,
    w: W,
}

pub struct LogCore<W> {
    node_id: u64,
    election_tick: usize,
    node: RawNode<ShardStorage>,
    /// Ordered maps: whatever completes them all does so in one order
    /// every run (the simulation replays byte for byte).
    waiters: BTreeMap<u64, Waiter<W>>,
    /// ReadIndex id -> (waiter, tick count when raft got it).
    reading: BTreeMap<u64, (W, u64)>,
    /// Part of every ReadIndex request's context, different for every
    /// open of the log: the ids restart at 1, and a leader's answer to a
    /// request of the member's earlier life (delayed in the network, or
    /// queued for it across a reconnect) would otherwise complete a new
    /// request with an old index (a stale read; the simulation found it).
    read_nonce: u64,
    ticks: u64,
    /// Hard state last made durable.
    persisted_hs: HardState,
    proposals_failed: u64,
    role: Role,
    /// Whether this leader has committed an entry of its own term.
    term_committed: bool,
}

impl<W: Waiting> LogCore<W> {
    /// Rebuilds the log from the WAL's `records` (lsn, payload) and
    /// returns the committed entries with index > `applied_index`. A
    /// single voter campaigns at once; its `Ready`s must then be handled
    /// before it leads. `Recovered::term` is this core's term now.
    pub fn recover(
        cfg: &LogConfig,
        records: &[(u64, Vec<u8>)],
        applied_index: u64,
    ) -> Result<(Self, Recovered), Error> {
        let mut storage = replay(records, &cfg.voters).map_err(Error::Corrupt)?;
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
        // The state machine holds a snapshot the leader sent, and the
        // member stopped before its log recorded it.
        let mut behind = false;
        if applied_index > storage.hard_state.commit {
            match storage.term_of(applied_index) {
                // The log has that entry: it restarts after it.
                Some(term) => {
                    let mut cs = storage.conf_state.clone();
                    if let Some((voters, learners)) = &cfg.snapshot_conf {
                        cs.voters = voters.clone();
                        cs.learners = learners.clone();
                    }
                    storage.restore(applied_index, term, cs);
                }
                // It does not, so the entry's term is unknown: the log
                // stays as it is, a follower's log that is behind, and
                // the leader brings it up to date by appends (whose
                // entries up to `applied_index` the state machine already
                // holds and skips) or by its snapshot. A log restored at
                // that index with a made-up term matches no leader's
                // append, and a leader that still has those entries never
                // sends a snapshot to a member that counts them committed:
                // the simulation found such a group stuck for good.
                None => behind = true,
            }
        }
        // A log behind the file offers it once it holds that entry again
        // (raft storage needs its term).
        storage.snapshot_file_index = applied_index;
        let commit = storage.hard_state.commit;
        if applied_index < storage.snap_index {
            return Err(Error::AppliedBelowCompaction {
                applied: applied_index,
                compacted: storage.snap_index,
            });
        }
        if applied_index > commit && !behind {
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
        if let Some(seed) = cfg.seed {
            node.raft.seed_election_timeouts(seed);
        }
        let read_nonce = match cfg.seed {
            Some(seed) => seed.rotate_left(32) ^ 0x7265_6164_5f69_6478,
            None => {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(cfg.node_id);
                h.finish()
            }
        };
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
        let core = LogCore {
            node_id: cfg.node_id,
            election_tick: cfg.election_tick,
            node,
            waiters: BTreeMap::new(),
            reading: BTreeMap::new(),
            read_nonce,
            ticks: 0,
            persisted_hs,
            proposals_failed: 0,
            role: Role::default(),
            term_committed: false,
        };
        let recovered = Recovered {
            entries,
            conf_changes,
            single_voter,
            term: core.node.raft.term,
            commit_index: commit,
        };
        Ok((core, recovered))
    }

    /// Registers the waiter of proposal `id`, made in `term`: completed
    /// when an entry of that term with that id commits, or when the
    /// proposal fails.
    pub fn await_entry(&mut self, id: u64, term: u64, conf: bool, w: W) {
        self.waiters.insert(id, Waiter { term, conf, w });
    }

    /// One tick of the group's clock; fails ReadIndex requests raft has
    /// sat on for two election timeouts (a follower's is dropped silently
    /// while no leader is known, and its waiter would otherwise hold a
    /// place in the bound for ever).
    pub fn tick(&mut self, out: &mut Output<W>) {
        self.ticks += 1;
        let bound = 2 * self.election_tick as u64;
        let old: Vec<u64> = self
            .reading
            .iter()
            .filter(|(_, (_, at))| self.ticks - at > bound)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some((w, _)) = self.reading.remove(&id) {
                out.done.push((w, Err(Error::ProposalDropped)));
            }
        }
        self.node.tick();
    }

    /// A message from a peer. One raft refuses (from a member no longer in
    /// the group, a local message type from the network) is dropped: it
    /// must not stop the group.
    pub fn step(&mut self, msg: Message) {
        if let Some(why) = self.breaks_protocol(&msg) {
            log::warn!(
                "raft: dropped {:?} from {} (term {}): {why}",
                msg.get_msg_type(),
                msg.from,
                msg.term
            );
            return;
        }
        if let Err(e) = self.node.step(msg) {
            log::debug!("raft: dropped peer message: {e}");
        }
    }

    /// A peer message raft-rs would stop the process on (its `fatal!`s):
    /// no correct leader sends one, a faulty or confused peer might, and
    /// this member drops it instead. A heartbeat commits at most what the
    /// leader knows this member holds, so one past the last index means
    /// the sender's view of this log is wrong; an append's entries follow
    /// its index one by one (raft-rs appends them assuming so, and a gap
    /// or a step back lands on committed entries).
    fn breaks_protocol(&self, msg: &Message) -> Option<String> {
        match msg.get_msg_type() {
            MessageType::MsgHeartbeat => {
                let last = self.node.raft.raft_log.last_index();
                (msg.commit > last)
                    .then(|| format!("commit {} is past this log's last index {last}", msg.commit))
            }
            MessageType::MsgAppend => msg
                .entries
                .iter()
                .enumerate()
                .find(|(i, e)| e.index != msg.index + 1 + *i as u64)
                .map(|(i, e)| {
                    format!(
                        "entry {i} has index {}, not {} (appended after {})",
                        e.index,
                        msg.index + 1 + i as u64,
                        msg.index
                    )
                }),
            _ => None,
        }
    }

    /// Starts an election now (pre-vote first), if this member may lead:
    /// raft-rs's campaign does not check (etcd's does), and a learner or a
    /// member outside the group that won the voters' votes would panic
    /// becoming leader (the simulation found it).
    pub fn campaign(&mut self) {
        if self.node.raft.promotable() {
            let _ = self.node.campaign();
        }
    }

    /// Hands the leadership to `to` (only a leader acts on it).
    pub fn transfer_leader(&mut self, to: u64) {
        if self.node.raft.state == StateRole::Leader && to != self.node_id {
            self.node.transfer_leader(to);
        }
    }

    /// Hands a proposal to raft, or fails its waiter.
    pub fn propose(&mut self, p: Proposal, out: &mut Output<W>) {
        let node = &mut self.node;
        let leading = (node.raft.state == StateRole::Leader).then_some(node.raft.term);
        let refused = if leading != Some(p.term) {
            // Leadership changed since the proposer looked: its effects
            // were rolled back with the old term, so the entry must not
            // appear under a new one.
            Some(Error::ProposalDropped)
        } else if p.conf.is_some() && node.raft.has_pending_conf() {
            // Raft would turn it into an empty entry (one change at a time
            // per group), which no waiter could recognise.
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
        if let Some(err) = refused {
            self.proposals_failed += 1;
            if let Some(w) = self.waiters.remove(&p.id) {
                out.done.push((w.w, Err(err)));
            }
        }
    }

    /// raft's ReadIndex for request `id`: `w` gets a commit index once a
    /// quorum confirmed the leadership.
    pub fn read_index(&mut self, id: u64, w: W) {
        let mut ctx = self.read_nonce.to_le_bytes().to_vec();
        ctx.extend_from_slice(&id.to_le_bytes());
        self.node.read_index(ctx);
        self.reading.insert(id, (w, self.ticks));
    }

    pub fn has_ready(&self) -> bool {
        self.node.has_ready()
    }

    /// The first half of a `Ready`: messages to send before the write (a
    /// leader's appends go out before its own fsync, so the followers'
    /// run in parallel), the role, the committed entries, the read
    /// states; and what must be made durable before
    /// [`LogCore::finish_ready`].
    pub fn begin_ready(&mut self, out: &mut Output<W>) -> Write {
        let mut ready = self.node.ready();
        self.send(ready.take_messages(), out);
        let mut records = Vec::new();
        let mut restored_hs = None;
        if !ready.snapshot().is_empty() {
            // The state machine installed it before raft saw the message
            // (`step_installed`): the log now starts after it.
            let meta = ready.snapshot().get_metadata().clone();
            let (index, term) = (meta.index, meta.term);
            let store = self.node.mut_store();
            store.restore(index, term, meta.get_conf_state().clone());
            let hs = store.hard_state.clone();
            records.push(encode_compaction(
                index,
                term,
                &hs,
                meta.get_conf_state(),
                index,
            ));
            restored_hs = Some(hs);
        }
        // A role change must reach the state machine before the entries
        // committed in the same `Ready` (a new leader applies them as
        // another leader's, not as its own).
        if ready.ss().is_some() || ready.hs().is_some() {
            self.refresh(out);
        }
        self.commit_entries(ready.take_committed_entries(), out);
        self.read_states(ready.take_read_states(), out);
        let entries = ready.take_entries();
        let mut hs = ready.hs().cloned();
        if hs.is_none() {
            // A commit advanced through LightReady is not repeated by raft
            // in a later Ready; write it with the next batch.
            let cur = &self.node.store().hard_state;
            if !entries.is_empty() && *cur != self.persisted_hs {
                hs = Some(cur.clone());
            }
        }
        // Entries first, the hard state after them (as etcd's WAL saves
        // them): a hard state's commit may cover entries of this very
        // write, and a torn tail that kept it without them would make a
        // member believe entries committed that it does not hold, or older
        // conflicting ones it still holds at those indexes. The
        // simulation found that order (hard state first) losing committed
        // entries.
        for e in &entries {
            records.push(encode_entry(e));
        }
        if let Some(hs) = &hs {
            records.push(encode_hard_state(hs));
        }
        Write {
            truncate: restored_hs.is_some(),
            records,
            entries,
            hs,
            restored_hs,
            ready,
        }
    }

    /// The second half of a `Ready`, once `write.records` are durable (the
    /// driver may take them out of `write`), the last of them at
    /// `last_lsn` (anything when there were none).
    pub fn finish_ready(
        &mut self,
        write: Write,
        last_lsn: u64,
        out: &mut Output<W>,
    ) -> Result<(), Error> {
        let Write {
            entries,
            hs,
            restored_hs,
            mut ready,
            ..
        } = write;
        if let Some(hs) = restored_hs {
            self.persisted_hs = hs;
        }
        if !entries.is_empty() || hs.is_some() {
            let hs_records = u64::from(hs.is_some());
            let first_entry_lsn = last_lsn + 1 - hs_records - entries.len() as u64;
            let lsns: Vec<u64> = (0..entries.len() as u64)
                .map(|i| first_entry_lsn + i)
                .collect();
            let store = self.node.mut_store();
            store.append(&entries, &lsns).map_err(Error::Corrupt)?;
            if let Some(hs) = hs {
                store.hard_state = hs.clone();
                self.persisted_hs = hs;
            }
        }
        self.send(ready.take_persisted_messages(), out);
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().hard_state.commit = commit;
        }
        self.send(light.take_messages(), out);
        self.commit_entries(light.take_committed_entries(), out);
        self.node.advance_apply();
        self.refresh(out);
        Ok(())
    }

    /// Publishes raft's role; when leadership or term changed, fails what
    /// the change makes unanswerable and tells the state machine.
    pub fn refresh(&mut self, out: &mut Output<W>) {
        let r = &self.node.raft;
        let role = Role {
            leader: r.state == StateRole::Leader,
            term: r.term,
            leader_id: r.leader_id,
        };
        self.term_committed = r.commit_to_current_term();
        let old = std::mem::replace(&mut self.role, role);
        if old == role {
            return;
        }
        if old.leader && (!role.leader || role.term != old.term) {
            // Proposals in flight may or may not commit under the new
            // leader; their callers learn the outcome is unknown. Reads
            // waiting for this leader's confirmation will not get it.
            let waiters = std::mem::take(&mut self.waiters);
            self.proposals_failed += waiters.len() as u64;
            for (_, w) in waiters {
                out.done.push((w.w, Err(Error::ProposalDropped)));
            }
            for (_, (w, _)) in std::mem::take(&mut self.reading) {
                out.done.push((w, Err(Error::ProposalDropped)));
            }
        }
        out.events.push(Event::Role(role));
    }

    /// Fails every proposal and read waiting here with `e`.
    pub fn fail_all(&mut self, e: &Error, out: &mut Output<W>) {
        let waiters = std::mem::take(&mut self.waiters);
        self.proposals_failed += waiters.len() as u64;
        for (_, w) in waiters {
            out.done.push((w.w, Err(e.clone())));
        }
        for (_, (w, _)) in std::mem::take(&mut self.reading) {
            out.done.push((w, Err(e.clone())));
        }
    }

    /// The compaction to `index` raft storage allows (`None`: nothing to
    /// drop). A leader keeps what a voter has not acknowledged yet, up to
    /// etcd's catch-up margin; one further behind gets the state machine's
    /// snapshot (and a member that is down costs bounded memory and disk).
    pub fn plan_compaction(&self, index: u64) -> Result<Option<Compaction>, Error> {
        let node = &self.node;
        let store = node.store();
        let applied = node.raft.raft_log.applied;
        if index > applied {
            return Err(Error::CompactBeyondApplied { index, applied });
        }
        let mut index = index;
        if node.raft.state == StateRole::Leader {
            let floor = index.saturating_sub(CATCH_UP_ENTRIES);
            for (id, pr) in node.raft.prs().iter() {
                if *id != self.node_id {
                    index = index.min(pr.matched.max(floor));
                }
            }
        }
        if index <= store.snap_index {
            return Ok(None);
        }
        let term = store.term_of(index).ok_or_else(|| {
            Error::Corrupt(format!("no term for index {index} below applied {applied}"))
        })?;
        let record = encode_compaction(
            index,
            term,
            &store.hard_state,
            &store.conf_state,
            store.conf_index,
        );
        Ok(Some(Compaction { record, index }))
    }

    /// The compaction's marker is durable at `marker_lsn`: drops the
    /// entries from storage and returns the first lsn still needed (the
    /// marker's and every record of entries above the compacted index;
    /// entry lsns increase with the index). No append may run between
    /// the plan and this call.
    pub fn compacted(&mut self, c: &Compaction, marker_lsn: u64) -> Result<u64, Error> {
        let store = self.node.mut_store();
        let next_lsn = store.lsn_of(c.index + 1);
        store.compact(c.index).map_err(Error::Corrupt)?;
        Ok(next_lsn.map_or(marker_lsn, |l| l.min(marker_lsn)))
    }

    /// The state machine wrote a snapshot file at `index`: a follower that
    /// needs compacted entries is offered it from now on.
    pub fn snapshot_written(&mut self, index: u64) {
        let store = self.node.mut_store();
        store.snapshot_file_index = store.snapshot_file_index.max(index);
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }
    pub fn applied_index(&self) -> u64 {
        self.node.raft.raft_log.applied
    }
    /// The last index of the log (durable or not).
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }
    /// A leader that has committed an entry of its own term.
    pub fn leads_committed_term(&self) -> bool {
        self.role.leader && self.term_committed
    }
    /// Every entry of the log has committed and been applied.
    pub fn log_settled(&self) -> bool {
        let log = &self.node.raft.raft_log;
        log.last_index() == log.committed && log.applied == log.committed
    }
    /// The group's voters, sorted.
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        v
    }
    /// The group's learners, sorted.
    pub fn learners(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .node
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }
    /// Whether this member is the group's only voter.
    pub fn is_single_voter(&self) -> bool {
        let voters = self.node.raft.prs().conf().voters();
        voters.is_singleton() && voters.contains(self.node_id)
    }
    /// On the leader, how far member `id`'s log is known to match this
    /// one's, and this log's last index.
    pub fn replication_of(&self, id: u64) -> Option<(u64, u64)> {
        if self.node.raft.state != StateRole::Leader {
            return None;
        }
        let pr = self.node.raft.prs().get(id)?;
        Some((pr.matched, self.node.raft.raft_log.last_index()))
    }
    pub fn proposals_pending(&self) -> usize {
        self.waiters.len()
    }
    pub fn proposals_failed(&self) -> u64 {
        self.proposals_failed
    }
    pub fn reads_pending(&self) -> usize {
        self.reading.len()
    }
    /// The term of the log's entry at `index` (durable or not), while the
    /// log still holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        let log = &self.node.raft.raft_log;
        if index <= log.first_index().saturating_sub(1) || index > log.last_index() {
            return None;
        }
        log.term(index).ok()
    }

    /// Emits raft's messages. A snapshot message carries only the index of
    /// the snapshot file (the follower fetches it), so once it is handed
    /// on it is reported done: if the follower could not use it, its next
    /// answers make the leader offer it again.
    fn send(&mut self, msgs: Vec<Message>, out: &mut Output<W>) {
        for m in &msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.node.report_snapshot(m.to, SnapshotStatus::Finish);
            }
        }
        out.messages.extend(msgs);
        if self.node.store().snapshot_wanted.replace(false) {
            out.events.push(Event::SnapshotWanted);
        }
    }

    /// Committed entries become events and complete their proposers.
    fn commit_entries(&mut self, committed: Vec<Entry>, out: &mut Output<W>) {
        for e in committed {
            // What completes the entry's proposer: its index, or why a conf
            // change took no effect.
            let mut outcome = Ok(e.index);
            let mut conf_applied = false;
            match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => out.events.push(Event::Committed {
                    index: e.index,
                    term: e.term,
                    data: e.data.to_vec(),
                }),
                EntryType::EntryConfChange => match self.apply_conf_change(&e) {
                    Ok(context) => {
                        conf_applied = true;
                        out.events.push(Event::ConfChanged {
                            index: e.index,
                            context,
                        });
                    }
                    Err(why) => {
                        log::warn!("raft: conf change at index {} refused: {why}", e.index);
                        outcome = Err(Error::ConfChangeRefused(why));
                    }
                },
                _ => {}
            }
            let Ok(id) = <[u8; 8]>::try_from(&e.context[..]) else {
                continue;
            };
            let id = u64::from_le_bytes(id);
            if self.waiters.get(&id).is_some_and(|w| w.term == e.term) {
                if let Some(w) = self.waiters.remove(&id) {
                    if w.conf && !conf_applied && outcome.is_ok() {
                        // A conf change waiter matched a plain entry:
                        // nothing took effect.
                        outcome = Err(Error::ConfChangeRefused(
                            "the entry committed without the change".into(),
                        ));
                    }
                    out.done.push((w.w, outcome));
                }
            }
        }
    }

    /// Applies a committed conf change to raft and to the membership the
    /// log records; returns its context.
    fn apply_conf_change(&mut self, e: &Entry) -> Result<Vec<u8>, String> {
        let cc = decode_conf_change(e).map_err(|e| e.to_string())?;
        let cs = self
            .node
            .apply_conf_change(&cc)
            .map_err(|e| e.to_string())?;
        let removed = !cs.voters.contains(&self.node_id);
        let store = self.node.mut_store();
        store.conf_state = cs;
        store.conf_index = e.index;
        if removed && self.node.raft.state != StateRole::Follower {
            // A leader or candidate that applied its own removal steps
            // down at once. raft-rs leaves a removed leader leading (an
            // untested branch upstream) and panics when it next persists
            // one of its own entries, which no longer have a progress to
            // count on; a removed candidate that then wins the votes of the
            // new configuration panics becoming leader, for the same
            // reason (the simulation found both). Proposals in flight get
            // an unknown outcome.
            let term = self.node.raft.term;
            self.node.raft.become_follower(term, raft::INVALID_ID);
        }
        Ok(cc.context.to_vec())
    }

    fn read_states(&mut self, states: Vec<raft::ReadState>, out: &mut Output<W>) {
        for rs in states {
            let Ok(ctx) = <[u8; 16]>::try_from(&rs.request_ctx[..]) else {
                continue;
            };
            let (nonce, id) = ctx.split_at(8);
            let (Ok(nonce), Ok(id)) = (<[u8; 8]>::try_from(nonce), <[u8; 8]>::try_from(id)) else {
                continue;
            };
            if u64::from_le_bytes(nonce) != self.read_nonce {
                // An answer to an earlier open's request.
                continue;
            }
            if let Some((w, _)) = self.reading.remove(&u64::from_le_bytes(id)) {
                out.done.push((w, Ok(rs.index)));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode, Record};
    use ferrokv_wal::WalConfig;

    struct Nobody;
    impl Waiting for Nobody {
        fn complete(&self, _: Result<u64, Error>) {}
    }

    fn cfg(id: u64) -> LogConfig {
        let mut c = LogConfig::new(WalConfig::default(), id);
        c.voters = vec![1, 2, 3];
        c.seed = Some(id);
        c
    }

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
        let mut e = Entry::default();
        e.term = term;
        e.index = index;
        e.data = data.to_vec().into();
        e
    }

    #[test]
    fn a_ready_writes_its_entries_before_the_hard_state_that_commits_them() {
        let (mut core, _) = LogCore::<Nobody>::recover(&cfg(2), &[], 0).unwrap();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 1;
        m.entries = vec![entry(1, 1, b"a"), entry(1, 2, b"b")].into();
        m.commit = 2;
        core.step(m);
        let mut out = Output::default();
        let write = core.begin_ready(&mut out);
        let kinds: Vec<&str> = write
            .records
            .iter()
            .map(|r| match decode(r).unwrap() {
                Record::Entry(_) => "entry",
                Record::HardState(hs) => {
                    assert_eq!(hs.commit, 2, "the hard state commits this write's entries");
                    "hard state"
                }
                Record::Compaction { .. } => "compaction",
            })
            .collect();
        // A torn tail can then only lose the hard state with them, never
        // keep a commit without the entries it covers.
        assert_eq!(kinds, ["entry", "entry", "hard state"]);
    }

    #[test]
    fn an_answer_to_an_earlier_opens_read_completes_no_read_of_this_one() {
        let mut c = cfg(2);
        let (mut before, _) = LogCore::<Nobody>::recover(&c, &[], 0).unwrap();
        c.seed = Some(99);
        let (mut now, _) = LogCore::<Nobody>::recover(&c, &[], 0).unwrap();
        // Both opens number their requests from 1.
        before.read_index(1, Nobody);
        now.read_index(1, Nobody);
        // What a leader answers the earlier open's request 1 with.
        let mut old_ctx = before.read_nonce.to_le_bytes().to_vec();
        old_ctx.extend_from_slice(&1u64.to_le_bytes());
        let stale = raft::ReadState {
            index: 1,
            request_ctx: old_ctx,
        };
        let mut out = Output::default();
        now.read_states(vec![stale.clone()], &mut out);
        assert!(
            out.done.is_empty(),
            "an earlier open's answer completed a read"
        );
        let mut out = Output::default();
        before.read_states(vec![stale], &mut out);
        assert_eq!(out.done.len(), 1);
    }

    #[test]
    fn peer_messages_raft_rs_would_abort_on_are_dropped() {
        let (mut core, _) = LogCore::<Nobody>::recover(&cfg(2), &[], 0).unwrap();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 1;
        m.entries = vec![entry(1, 1, b"a"), entry(1, 2, b"b")].into();
        m.commit = 2;
        core.step(m);
        let mut out = Output::default();
        let w = core.begin_ready(&mut out);
        core.finish_ready(w, 3, &mut out).unwrap();
        assert_eq!(core.commit_index(), 2);
        // A heartbeat committing past the last index ("to_commit 9 is out
        // of range"), and an append whose entries step back onto committed
        // ones ("entry 1 conflict with committed entry 2").
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        hb.from = 1;
        hb.to = 2;
        hb.term = 1;
        hb.commit = 9;
        assert!(core.breaks_protocol(&hb).is_some());
        core.step(hb);
        let mut app = Message::default();
        app.set_msg_type(MessageType::MsgAppend);
        app.from = 1;
        app.to = 2;
        app.term = 2;
        app.index = 2;
        app.log_term = 1;
        app.entries = vec![entry(2, 1, b"x")].into();
        app.commit = 2;
        assert!(core.breaks_protocol(&app).is_some());
        core.step(app);
        assert_eq!(core.commit_index(), 2);
        // A well-formed append still goes in.
        let mut ok = Message::default();
        ok.set_msg_type(MessageType::MsgAppend);
        ok.from = 1;
        ok.to = 2;
        ok.term = 1;
        ok.index = 2;
        ok.log_term = 1;
        ok.entries = vec![entry(1, 3, b"c")].into();
        ok.commit = 3;
        assert!(core.breaks_protocol(&ok).is_none());
        core.step(ok);
        let mut out = Output::default();
        let w = core.begin_ready(&mut out);
        core.finish_ready(w, 5, &mut out).unwrap();
        assert_eq!(core.commit_index(), 3);
    }

    /// Runs three cores' `Ready`s and delivers their messages until quiet
    /// (no disk: a write is durable as soon as it is made).
    fn pump(cores: &mut [LogCore<Nobody>], lsn: &mut u64) {
        for _ in 0..100 {
            let mut msgs = Vec::new();
            for c in cores.iter_mut() {
                while c.has_ready() {
                    let mut out = Output::default();
                    let w = c.begin_ready(&mut out);
                    *lsn += w.records.len() as u64;
                    c.finish_ready(w, *lsn, &mut out).unwrap();
                    c.refresh(&mut out);
                    msgs.extend(out.messages);
                }
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if let Some(c) = cores.iter_mut().find(|c| c.node_id == m.to) {
                    c.step(m);
                }
            }
        }
    }

    #[test]
    fn a_leader_that_applies_its_own_removal_steps_down() {
        let mut cores: Vec<LogCore<Nobody>> = (1..=3)
            .map(|id| LogCore::recover(&cfg(id), &[], 0).unwrap().0)
            .collect();
        let mut lsn = 0;
        cores[0].campaign();
        pump(&mut cores, &mut lsn);
        assert!(cores[0].role().leader);
        let mut cc = ConfChange::default();
        cc.set_change_type(raft::eraftpb::ConfChangeType::RemoveNode);
        cc.node_id = 1;
        let term = cores[0].role().term;
        cores[0].await_entry(1, term, true, Nobody);
        let mut out = Output::default();
        cores[0].propose(
            Proposal {
                id: 1,
                term,
                data: Vec::new(),
                conf: Some(cc),
            },
            &mut out,
        );
        cores[0].propose(
            Proposal {
                id: 2,
                term,
                data: b"after".to_vec(),
                conf: None,
            },
            &mut out,
        );
        // raft-rs would panic here, persisting the leader's own entries
        // once it no longer counts itself.
        pump(&mut cores, &mut lsn);
        assert!(!cores[0].role().leader, "the removed member still leads");
        assert_eq!(cores[1].voters(), vec![2, 3]);
    }

    #[test]
    fn a_snapshot_file_past_what_the_log_holds_leaves_the_log_behind() {
        // The log holds entries 1..=3 (commit 2); the state machine
        // installed a snapshot at 9 and stopped before the log recorded it.
        let mut hs = HardState::default();
        hs.term = 1;
        hs.commit = 2;
        let records: Vec<(u64, Vec<u8>)> = vec![
            encode_entry(&entry(1, 1, b"a")),
            encode_entry(&entry(1, 2, b"b")),
            encode_entry(&entry(1, 3, b"c")),
            encode_hard_state(&hs),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64 + 1, r))
        .collect();
        let (core, rec) = LogCore::<Nobody>::recover(&cfg(3), &records, 9).unwrap();
        // Not restored at 9 with a made-up term: a leader's appends from
        // 3 on match, and the state machine skips what it holds.
        assert_eq!(rec.commit_index, 2);
        assert!(rec.entries.is_empty());
        assert_eq!(core.last_index(), 3);
        assert_eq!(core.term_at(3), Some(1));
        // Where the log does hold the entry, it restarts after it.
        let (core, rec) = LogCore::<Nobody>::recover(&cfg(3), &records, 3).unwrap();
        assert_eq!(rec.commit_index, 3);
        assert_eq!(core.last_index(), 3);
    }
}
