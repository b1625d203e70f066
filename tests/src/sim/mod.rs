//! Deterministic simulation of ferrokv's replicated shard logs.
//!
//! The real code, driven by one seeded scheduler: every member's shard
//! groups are the real sans-IO raft log core (`ferrokv_raft::log_core`:
//! raft-rs's `RawNode` with ferrokv's proposal matching, recovery and
//! write ordering), writing the real WAL records into a simulated disk
//! and recovering with the WAL's real scan. Around them, simulated:
//!
//! - **network**: every message is in flight until the scheduler delivers
//!   it, in any order; messages are dropped, duplicated, and cut by
//!   partitions (one member from the rest, or a minority from a majority);
//! - **disk**: a `Ready`'s write is unsynced until the scheduler completes
//!   its fdatasync; a crash loses, tears or garbles what was unsynced
//!   (`disk::Damage`);
//! - **time**: ticks per member, so members' clocks drift apart;
//! - **clients**: proposals to whichever member they guess leads, and
//!   linearizable reads (ReadIndex) on any member;
//! - **faults**: crashes and restarts (recovery from the disk and the state
//!   machine's snapshot file), leader transfers, campaigns, snapshots with
//!   log compaction (a member behind a compacted log installs another's
//!   snapshot file, as the shard fetches it), membership changes (spare
//!   members added as learners, promoted; voters removed).
//!
//! Checked at every step (`check::Checker`): one leader per group and
//! term; committed entries never diverge; every member applies the same
//! entry at an index, across crashes; an acknowledged proposal is the
//! entry committed at its index; a read answers an index at or past every
//! proposal acknowledged before it was made. At the
//! end the faults stop, partitions heal and crashed members restart, and
//! every group must converge: one leader, every member applied the same
//! log, every acknowledged proposal in it.
//!
//! What commits is applied to the shard's real state machine
//! (`ferrokv_shards::state::ShardState`, the mvcc store inside) and feeds
//! each member's real `Sequencer`; a leader start's marker and its
//! serving are decided by the real `leader::Start`, and client
//! transactions (puts, compare-and-swap, deletes) by the real evaluator
//! (`kv::eval`, see `txn.rs`). Around them, modelled on the shard code:
//! one member leads every group (leader transfers), its leader start
//! writes the marker in every group, a transaction's writes take one
//! revision and are applied ahead of the log in each group they touch,
//! and one that writes nothing waits for a ReadIndex. Members crash,
//! restart, and are stopped (SIGSTOP) and resumed. At the end the stores
//! agree, every write at or below the visible revision is whole or void,
//! every acknowledged write is there, and every acknowledged answer agrees
//! with the history (its branch, its reads, never older than what was
//! acknowledged before it).
//!
//! A run is a function of its seed and options: the same seed replays the
//! same steps byte for byte (`Outcome::trace_hash`; `ferro-sim --seed N
//! --trace` prints them). Leases (grants, keep-alives, revokes, expiry on
//! the leader's tick clock) and store compaction are real shard records
//! through the same state machine, checked against an uncompacted replay
//! of the converged log (`history`). Not simulated yet:
//! membership changes are raft's, one group at a time
//! (ferrokv makes one change in every group; that coordination is shard
//! code).

mod check;
pub mod disk;
pub mod rng;
mod txn;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ferrokv_mvcc::{Store, WriteOp};
use ferrokv_raft::log_core::{Event, LogCore, Output, Proposal, Waiting, Write};
use ferrokv_raft::{Error, LogConfig, Role, INBOUND_MESSAGES_PENDING_MAX, TICKS_PENDING_MAX};
use ferrokv_shards::kv::eval;
use ferrokv_shards::kv::lease_shard;
use ferrokv_shards::leader::Start;
use ferrokv_shards::lease::{self, LeaseTable};
use ferrokv_shards::record::{Part, Record};
use ferrokv_shards::sequencer::{Sequencer, Voided};
use ferrokv_shards::state::{Effect, ShardState};
use ferrokv_wal::WalConfig;
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_lite::future;
use raft::eraftpb::{ConfChange, ConfChangeType, Message, MessageType};

use check::Checker;
use disk::{Damage, Disk};
use rng::Rng;

/// What a run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    pub members: usize,
    /// Members that exist but are not in the cluster at first: membership
    /// changes add them (as learners, then voters).
    pub spares: usize,
    pub groups: usize,
    /// Scheduler steps before the faults stop and the run converges.
    pub steps: usize,
    /// Crashes, partitions, loss, duplication, leader transfers.
    pub faults: bool,
    /// The only fault is a stopped member (SIGSTOP, of a leader most
    /// often), rare enough that leaders serve in between: what a leader
    /// that resumes believing it still leads answers.
    pub pauses_only: bool,
    /// Keep every step's line in `Outcome::trace`.
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            members: 3,
            spares: 2,
            groups: 2,
            steps: 5_000,
            faults: true,
            pauses_only: false,
            trace: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seed: u64,
    pub steps: usize,
    pub proposals: usize,
    pub acked: usize,
    pub elections: usize,
    pub crashes: usize,
    pub torn_tails: usize,
    pub messages: usize,
    pub compactions: usize,
    /// Snapshots a member installed from another's file.
    pub snapshots: usize,
    /// Linearizable reads answered.
    pub reads: usize,
    /// Membership changes that took effect (counted in every group).
    pub changes: usize,
    /// Writes a leader's store dropped after applying them ahead of the
    /// log (a step-down's rollback), or a marker voided in a store.
    pub rolled_back: usize,
    /// Transactions acknowledged (one revision each, in one or two
    /// groups, or none if their branch wrote nothing).
    pub writes: usize,
    /// Of those, the ones whose branch wrote nothing (answered once a
    /// ReadIndex confirmed their leader).
    pub empty_writes: usize,
    /// Shard logs that failed on a full disk.
    pub disk_fulls: usize,
    /// Store compactions acknowledged (`Record::Compact` in every group).
    pub store_compactions: usize,
    /// Lease grants, client revokes, and revokes of leases whose TTL ran
    /// out on their leader's clock, acknowledged.
    pub lease_grants: usize,
    pub lease_revokes: usize,
    pub lease_expiries: usize,
    /// FNV-1a over every step's line: equal for equal runs.
    pub trace_hash: u64,
    pub trace: Vec<String>,
}

/// A run that broke an invariant (or did not converge).
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub what: String,
    /// The last steps before it.
    pub tail: Vec<String>,
    /// Every step, with `Options::trace`.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} step {}: {}", self.seed, self.step, self.what)?;
        writeln!(f, "last steps:")?;
        for l in &self.tail {
            writeln!(f, "  {l}")?;
        }
        write!(
            f,
            "replay: cargo run -p ferrokv-tests --bin ferro-sim -- --seed {} --trace",
            self.seed
        )
    }
}

/// Runs one simulation.
pub fn run(seed: u64, opts: &Options) -> Result<Outcome, Failure> {
    let mut w = World::new(seed, opts.clone());
    // A panic in the code under test is a failure of this seed like any
    // other (its report names the seed and the steps before it).
    let res = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run())) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    let out = w.outcome();
    res.map(|()| out.clone()).map_err(|what| Failure {
        seed,
        step: w.step,
        what,
        tail: w.recent.iter().cloned().collect(),
        trace: out.trace,
    })
}

/// A waiter: a proposal's place in `World::proposals`, or a ReadIndex
/// request's in `World::reads`.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    Proposal(usize),
    Read(usize),
    /// The ReadIndex a write that wrote nothing waits for (its place in
    /// `World::txns`), as `Engine::read_settled` does.
    Confirm(usize),
    /// A membership change (its description).
    Conf(usize),
}

/// A linearizable read (raft's ReadIndex) a client made.
#[derive(Debug, Clone, Copy)]
struct Read {
    /// The highest index of a proposal acknowledged before the read was
    /// made: the index the read answers must be at least this.
    floor: u64,
}

impl Waiting for Ticket {
    // The simulation reads outcomes from `Output::done`.
    fn complete(&self, _: Result<u64, Error>) {}
}

/// One shard group's log on one member.
struct Log {
    core: Option<LogCore<Ticket>>,
    disk: Disk,
    /// Inputs waiting for the driver, as the shell queues them.
    inbox: VecDeque<Message>,
    ticks: u32,
    queue: Vec<Proposal>,
    /// ReadIndex requests not yet handed to raft (id, waiter).
    reading: Vec<(u64, Ticket)>,
    /// Raft asked for a snapshot file newer than the newest.
    snapshot_wanted: bool,
    transfer: Option<u64>,
    campaign: bool,
    next_proposal_id: u64,
    /// A `Ready` whose write awaits its fdatasync.
    writing: Option<Writing>,
    /// What the state machine applied, over every life of the member.
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    /// The last index applied in this life.
    applied_index: u64,
    /// Committed entries up to here were checked against the others'.
    checked_commit: u64,
    /// The state machine's snapshot file (durable once written): its
    /// index and the entries it holds.
    snapshot: Option<Snapshot>,
    /// The shard's real state machine (`ShardState`): its store, rebuilt
    /// in each life from the snapshot file and the log, as a shard's is.
    state: Option<ShardState>,
    /// A write found the disk full: the log failed, as the shell's driver
    /// does on any WAL error (it stops, fails every waiter, leads
    /// nothing) until the member restarts.
    failed: bool,
}

/// A state machine snapshot: what was applied up to `index`, and the
/// group's membership (voters, learners) it records, as the shard's file
/// meta does.
#[derive(Debug, Clone)]
struct Snapshot {
    index: u64,
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    conf: (Vec<u64>, Vec<u64>),
}

/// A `Ready`'s write in flight: its `n` records end at lsn `last`.
struct Writing {
    write: Write,
    last: u64,
    n: u64,
}

struct Member {
    id: u64,
    up: bool,
    lives: u64,
    logs: Vec<Log>,
    /// Which revisions are visible here (the real `Visibility`), fed by
    /// every group's state machine; rebuilt in each life.
    seq: Sequencer,
    /// The highest visible revision seen in this life.
    visible_max: i64,
    /// Leader starts made, for marker ids.
    starts: u64,
    /// This member's leader start, while it leads every group.
    leading: Option<Leading>,
    /// Stopped (SIGSTOP) until this step: it keeps its memory, takes no
    /// ticks and runs nothing, and what peers send waits in its inboxes.
    paused_until: Option<usize>,
    /// Ticks taken, over every life: the member's own clock (leases
    /// expire by it), drifting from the others'.
    clock: u64,
    /// The clock when its leader start last began serving (and promoted
    /// every lease).
    serving_since: u64,
    /// When this life's table last gave a lease its full TTL (a grant
    /// or a keep-alive here).
    renewed: BTreeMap<i64, u64>,
}

/// A leader start (`shards/src/leader.rs`): once every group has settled
/// in the terms it leads, a marker voiding `cut+1..=through` goes into
/// every group; the member serves once `through` is visible.
#[derive(Debug, Clone)]
struct Leading {
    /// The term it leads each group in.
    terms: Vec<u64>,
    /// The marker and its void range (`leader::Start`, the real code).
    plan: Start,
    /// The marker's proposals, one per group, and how many committed (and
    /// were applied here): the start waits for all (`write_markers`).
    markers: Vec<usize>,
    marked: usize,
    serving: bool,
}

/// A client transaction as a cluster leader evaluates it (the real
/// evaluator): one revision if it wrote, a part in each group it wrote,
/// one proposal per part.
#[derive(Debug, Clone)]
struct Txn {
    /// The member that made it, and in which of its lives.
    member: usize,
    life: u64,
    /// How many void ranges that member knew when it was evaluated.
    voids: u64,
    /// Its revision; `None` if its branch wrote nothing.
    rev: Option<i64>,
    /// Its answer's header revision.
    header: i64,
    request: pb::TxnRequest,
    succeeded: bool,
    responses: Vec<pb::ResponseOp>,
    parts: Vec<Part>,
    /// The groups it wrote in, each proposed one record.
    groups: Vec<usize>,
    /// Parts whose proposal committed.
    oks: usize,
    failed: bool,
    /// The highest revision acknowledged to any client before it was made:
    /// its answer must not be older.
    floor: i64,
    /// Wrote nothing: the member's start count when it was evaluated (one
    /// stretch of serving must cover it), and whether a ReadIndex in group
    /// 0 confirmed the lead after the evaluation.
    starts: u64,
    confirmed: bool,
    /// A client transaction, or another call made through the
    /// coordinator's paths.
    op: Op,
    /// Proposals it made: it completes once all committed.
    expected: usize,
    /// The terms its member led each group in.
    terms: Vec<u64>,
    /// (group, index) of each of its proposals acknowledged.
    committed_at: Vec<(usize, u64)>,
}

/// What a `Txn` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Txn,
    /// `Engine::lease_revoke_here`: the attached keys deleted at one
    /// revision, the lease's `LeaseRevoke` in its group; `expiry`: the
    /// leader's expiry timer made it (`lease_expiry`).
    Revoke {
        id: i64,
        expiry: bool,
    },
    /// `Shard::lease_grant`: in the table once committed.
    Grant {
        id: i64,
        ttl: i64,
    },
    /// `Engine::compact_here`: a `Record::Compact` in every group, the
    /// leader's own store compacted once it committed.
    Compact {
        rev: i64,
    },
}

struct Envelope {
    group: usize,
    msg: Message,
}

struct World {
    seed: u64,
    opts: Options,
    rng: Rng,
    mix: Mix,
    members: Vec<Member>,
    net: Vec<Envelope>,
    /// Links cut by a partition, both directions listed.
    cut: BTreeSet<(u64, u64)>,
    check: Checker,
    /// (group, data) of every proposal handed to a member.
    proposals: Vec<(usize, Vec<u8>)>,
    /// The write each proposal carries a part of (markers: none).
    part_of: Vec<Option<usize>>,
    txns: Vec<Txn>,
    /// Grants' and compactions' proposals that committed, with the step
    /// they did: the proposing shard's task resumes after its commit
    /// (member, life, group, call, step), not in the same driver round.
    resumed: Vec<(usize, u64, usize, usize, usize)>,
    /// Writes every part of which committed, waiting until their revision
    /// is visible and kept on their member (`Sequencer::wait_committed`).
    settling: Vec<usize>,
    /// Writes acknowledged to their client.
    acked_txns: Vec<usize>,
    /// The highest revision (or header) acknowledged so far.
    acked_max: i64,
    /// Writes a leader applied ahead of the log and then dropped (its
    /// term ended, or raft refused the proposal).
    rolled_back: usize,
    reads: Vec<Read>,
    /// Reads answered, and answered below an acknowledged write.
    reads_answered: usize,
    /// Membership changes proposed (what each does), and how many took
    /// effect.
    changes: Vec<String>,
    changes_applied: usize,
    step: usize,
    faults: bool,
    hash: u64,
    trace: Vec<String>,
    recent: VecDeque<String>,
    crashes: usize,
    torn_tails: usize,
    disk_fulls: usize,
    messages: usize,
    compactions: usize,
    snapshots: usize,
    /// What a member's clock counts from (lease deadlines are `Instant`s).
    epoch: Instant,
    /// Lease ids handed out (each granted at most once), in order.
    leases: Vec<i64>,
}

/// Clock time per tick (the heartbeat), and the expiry timer's period in
/// ticks (`lease::REVOKE_TICK`).
const TICK_MS: u64 = 100;
const EXPIRY_TICKS: u64 = lease::REVOKE_TICK.as_millis() as u64 / TICK_MS;

/// The seed's own mix of faults (swarm testing): each run weights crashes,
/// partitions, loss and the rest differently, so a rare combination is
/// frequent in some seeds instead of rare in all of them.
#[derive(Debug, Clone)]
struct Mix {
    /// Steps in a thousand that inject a fault.
    faults: usize,
    /// Weights of the fault kinds: crash, partition, heal, leader
    /// transfer, campaign, restart, compaction, membership change, pause,
    /// full disk.
    weights: [usize; 10],
    /// Percent of deliveries lost, duplicated.
    loss: u32,
    dup: u32,
}

impl Mix {
    fn pauses(rng: &mut Rng) -> Mix {
        Mix {
            faults: 2 + rng.below(4),
            weights: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            loss: 0,
            dup: 0,
        }
    }

    fn draw(rng: &mut Rng) -> Mix {
        Mix {
            faults: 5 + rng.below(40),
            weights: [
                rng.below(10),
                rng.below(10),
                rng.below(10),
                rng.below(4),
                rng.below(4),
                1 + rng.below(10),
                rng.below(6),
                rng.below(6),
                rng.below(6),
                rng.below(3),
            ],
            loss: rng.below(8) as u32,
            dup: rng.below(4) as u32,
        }
    }
}

/// Steps kept for a failure's report.
const RECENT_STEPS: usize = 40;

/// Rounds the convergence phase may take (each: one tick per member, then
/// everything delivered and synced).
const CONVERGE_ROUNDS_MAX: usize = 400;

impl World {
    fn new(seed: u64, opts: Options) -> World {
        let members = (1..=(opts.members + opts.spares) as u64)
            .map(|id| Member {
                id,
                up: false,
                lives: 0,
                seq: Sequencer::new(opts.groups as u32),
                visible_max: 0,
                starts: 0,
                leading: None,
                paused_until: None,
                clock: 0,
                serving_since: 0,
                renewed: BTreeMap::new(),
                logs: (0..opts.groups)
                    .map(|_| Log {
                        core: None,
                        disk: Disk::new(),
                        inbox: VecDeque::new(),
                        ticks: 0,
                        queue: Vec::new(),
                        reading: Vec::new(),
                        snapshot_wanted: false,
                        transfer: None,
                        campaign: false,
                        next_proposal_id: 1,
                        writing: None,
                        applied: BTreeMap::new(),
                        applied_index: 0,
                        checked_commit: 0,
                        snapshot: None,
                        state: None,
                        failed: false,
                    })
                    .collect(),
            })
            .collect();
        let mut rng = Rng::new(seed);
        let mix = if opts.pauses_only {
            Mix::pauses(&mut rng)
        } else {
            Mix::draw(&mut rng)
        };
        World {
            seed,
            faults: opts.faults,
            opts,
            rng,
            mix,
            members,
            net: Vec::new(),
            cut: BTreeSet::new(),
            check: Checker::default(),
            proposals: Vec::new(),
            part_of: Vec::new(),
            txns: Vec::new(),
            resumed: Vec::new(),
            settling: Vec::new(),
            acked_txns: Vec::new(),
            acked_max: 0,
            rolled_back: 0,
            reads: Vec::new(),
            reads_answered: 0,
            changes: Vec::new(),
            changes_applied: 0,
            step: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            trace: Vec::new(),
            recent: VecDeque::new(),
            crashes: 0,
            torn_tails: 0,
            disk_fulls: 0,
            messages: 0,
            compactions: 0,
            snapshots: 0,
            epoch: Instant::now(),
            leases: Vec::new(),
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            seed: self.seed,
            steps: self.step,
            proposals: self.proposals.len(),
            acked: self.check.acked.len(),
            elections: self.check.elections,
            crashes: self.crashes,
            torn_tails: self.torn_tails,
            messages: self.messages,
            compactions: self.compactions,
            snapshots: self.snapshots,
            reads: self.reads_answered,
            changes: self.changes_applied,
            rolled_back: self.rolled_back,
            writes: self.acked(|op| op == Op::Txn),
            empty_writes: self
                .acked_txns
                .iter()
                .filter(|t| self.txns[**t].op == Op::Txn && self.txns[**t].rev.is_none())
                .count(),
            disk_fulls: self.disk_fulls,
            store_compactions: self.acked(|op| matches!(op, Op::Compact { .. })),
            lease_grants: self.acked(|op| matches!(op, Op::Grant { .. })),
            lease_revokes: self.acked(|op| matches!(op, Op::Revoke { expiry: false, .. })),
            lease_expiries: self.acked(|op| matches!(op, Op::Revoke { expiry: true, .. })),
            trace_hash: self.hash,
            trace: self.trace.clone(),
        }
    }

    /// Acknowledged calls of a kind.
    fn acked(&self, kind: impl Fn(Op) -> bool) -> usize {
        self.acked_txns
            .iter()
            .filter(|t| kind(self.txns[**t].op))
            .count()
    }

    /// Member `m`'s clock as the lease table reads it.
    fn now(&self, m: usize) -> Instant {
        self.epoch + Duration::from_millis(self.members[m].clock * TICK_MS)
    }

    /// Mixes a number into the trace hash (steps too frequent to print).
    fn mix(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn note(&mut self, line: String) {
        for b in line.as_bytes() {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        if self.opts.trace {
            self.trace.push(format!("{:>6} {line}", self.step));
        }
        if self.recent.len() == RECENT_STEPS {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{:>6} {line}", self.step));
    }

    fn run(&mut self) -> Result<(), String> {
        for m in 0..self.opts.members {
            self.start(m)?;
        }
        while self.step < self.opts.steps {
            self.step += 1;
            self.one_step()?;
            self.resume()?;
            self.settle();
        }
        self.converge()
    }

    /// A write whose parts all committed is acknowledged once its revision
    /// is visible on its member and no marker there voided it; its client
    /// learns nothing if the member crashed first, nor if it was voided
    /// (`etcdserver: leader changed`).
    fn settle(&mut self) {
        let mut keep = Vec::new();
        for t in std::mem::take(&mut self.settling) {
            let w = &self.txns[t];
            let member = &self.members[w.member];
            if member.lives != w.life || !member.up {
                continue;
            }
            if w.failed {
                self.note(format!("t{t} failed"));
                continue;
            }
            if let Op::Compact { rev } = w.op {
                // `compact_here` answers once every shard's record
                // committed, with the visible revision it checked against.
                let header = w.header;
                self.note(format!("t{t}: compaction at {rev} acknowledged"));
                self.acked_max = self.acked_max.max(header);
                self.acked_txns.push(t);
                continue;
            }
            if w.rev.is_none() || matches!(w.op, Op::Grant { .. }) {
                // Still the stretch of serving it was evaluated in
                // (`read_settled`, and the epoch checks of a grant and of a
                // revoke that deleted nothing), and for a transaction its
                // lead confirmed after it (the others went through the log).
                let same =
                    member.starts == w.starts && member.leading.as_ref().is_some_and(|l| l.serving);
                if !same {
                    self.note(format!("t{t}: leader changed"));
                    continue;
                }
                if w.op == Op::Txn && !w.confirmed {
                    keep.push(t);
                    continue;
                }
            }
            // The sequencer's own answer, as the write's waiter gets it.
            let at = w.header;
            match future::block_on(future::poll_once(member.seq.wait_committed(at, w.voids))) {
                Some(Err(Voided)) => self.note(format!("t{t} at revision {at} voided")),
                Some(Ok(())) => {
                    self.note(format!("t{t} at revision {at} acknowledged"));
                    self.acked_max = self.acked_max.max(at);
                    self.acked_txns.push(t);
                }
                None => keep.push(t),
            }
        }
        self.settling = keep;
    }

    /// One scheduler step: one action drawn by weight (per mille).
    fn one_step(&mut self) -> Result<(), String> {
        for m in 0..self.members.len() {
            if self.members[m]
                .paused_until
                .is_some_and(|until| self.step >= until)
            {
                self.members[m].paused_until = None;
                self.note(format!("SIGCONT member {}", self.members[m].id));
            }
        }
        let roll = self.rng.below(1000);
        if self.faults && roll < self.mix.faults {
            return self.fault();
        }
        match roll {
            0..=349 => self.deliver(),
            350..=469 => {
                let m = self.rng.below(self.members.len());
                self.tick(m)
            }
            470..=699 => {
                let m = self.rng.below(self.members.len());
                let g = self.rng.below(self.opts.groups);
                self.drive(m, g)
            }
            700..=849 => {
                let m = self.rng.below(self.members.len());
                let g = self.rng.below(self.opts.groups);
                self.sync(m, g)
            }
            850..=949 => self.propose(),
            _ => self.read(),
        }
    }

    /// Opens every log of member `m` from its disk, as a restart does.
    fn start(&mut self, m: usize) -> Result<(), String> {
        let seed = self.seed;
        let member = &mut self.members[m];
        member.up = true;
        member.lives += 1;
        let (id, lives) = (member.id, member.lives);
        // The member's memory: visibility is rebuilt from what the logs
        // replay, and nothing is led yet.
        member.seq = Sequencer::new(self.opts.groups as u32);
        member.visible_max = 0;
        member.leading = None;
        member.renewed.clear();
        let voters: Vec<u64> = (1..=self.opts.members as u64).collect();
        let mut lines = Vec::new();
        for g in 0..self.opts.groups {
            let log = &mut self.members[m].logs[g];
            let records = log
                .disk
                .recover()
                .map_err(|e| format!("member {id} group {g}: recovery refused the disk: {e}"))?;
            let mut cfg = LogConfig::new(WalConfig::default(), id);
            // A member that joins later starts from the bootstrap voters
            // too, and learns the changes from the log (as ferrokv's
            // joiner does).
            cfg.voters = voters.clone();
            cfg.snapshot_conf = log.snapshot.as_ref().map(|s| s.conf.clone());
            cfg.seed = Some(Rng::derive(seed, id, g as u64, lives));
            // The state machine restarts from its snapshot file.
            let from = log.snapshot.as_ref().map_or(0, |s| s.index);
            let (core, rec) = LogCore::recover(&cfg, &records, from)
                .map_err(|e| format!("member {id} group {g}: recovery failed: {e}"))?;
            lines.push(format!(
                "start member {id} group {g}: {} records, commit {}, term {}",
                records.len(),
                rec.commit_index,
                rec.term
            ));
            log.core = Some(core);
            log.inbox.clear();
            log.ticks = 0;
            log.queue.clear();
            log.reading.clear();
            log.transfer = None;
            log.campaign = false;
            log.next_proposal_id = 1;
            log.writing = None;
            // The operator freed the space before the restart.
            log.disk.full = false;
            log.failed = false;
            log.applied_index = from;
            log.checked_commit = 0;
            // The store opens from the snapshot file (here: its entries
            // applied again), then the log replays past it.
            let mut state = ShardState::new(g as u32, Store::new(), LeaseTable::new(1));
            let held: Vec<(u64, u64, Vec<u8>)> = log.snapshot.as_ref().map_or(Vec::new(), |s| {
                s.applied
                    .iter()
                    .map(|(i, (t, d))| (*i, *t, d.clone()))
                    .collect()
            });
            let member = &mut self.members[m];
            for (index, term, data) in held {
                apply_state(&mut state, member, g, index, term, &data)?;
            }
            state.covers(from);
            let log = &mut self.members[m].logs[g];
            log.state = Some(state);
            for (index, data) in rec.entries {
                let term = self.members[m].logs[g]
                    .core
                    .as_ref()
                    .and_then(|c| c.term_at(index))
                    .unwrap_or(0);
                self.apply(m, g, index, term, data)?;
            }
            // What the log committed is covered, conf changes and empty
            // entries included (as the shard's `covers` after replay).
            let log = &mut self.members[m].logs[g];
            log.applied_index = log.applied_index.max(rec.commit_index);
            if let Some(st) = log.state.as_mut() {
                st.covers(rec.commit_index);
            }
        }
        for l in lines {
            self.note(l);
        }
        // The shell makes the first `Ready`s durable before it serves.
        for g in 0..self.opts.groups {
            while self.core(m, g).has_ready() {
                self.begin(m, g)?;
                self.sync(m, g)?;
            }
            self.refresh(m, g)?;
        }
        Ok(())
    }

    /// Up and not stopped: it ticks, drives its logs and serves clients.
    fn running(&self, m: usize) -> bool {
        self.members[m].up && self.members[m].paused_until.is_none()
    }

    /// The group's role here as the shell reports it: a failed log leads
    /// nothing.
    fn role(&self, m: usize, g: usize) -> Role {
        let mut role = self.core_ref(m, g).role();
        if self.members[m].logs[g].failed {
            role.leader = false;
        }
        role
    }

    /// A member whose log failed stops serving writes until it restarts
    /// (`Leadership::break_member`).
    fn broken(&self, m: usize) -> bool {
        self.members[m].logs.iter().any(|l| l.failed)
    }

    fn core_ref(&self, m: usize, g: usize) -> &LogCore<Ticket> {
        self.members[m].logs[g]
            .core
            .as_ref()
            .expect("a member that is up has its logs open")
    }

    fn core(&mut self, m: usize, g: usize) -> &mut LogCore<Ticket> {
        self.members[m].logs[g]
            .core
            .as_mut()
            .expect("a member that is up has its logs open")
    }

    fn crash(&mut self, m: usize) {
        let id = self.members[m].id;
        self.members[m].up = false;
        self.members[m].paused_until = None;
        self.crashes += 1;
        let mut damage = Vec::new();
        for g in 0..self.opts.groups {
            let log = &mut self.members[m].logs[g];
            log.core = None;
            log.writing = None;
            log.inbox.clear();
            log.queue.clear();
            log.state = None;
            let d = log.disk.crash(&mut self.rng);
            if matches!(d, Damage::Torn | Damage::Garbage) {
                self.torn_tails += 1;
            }
            damage.push(format!("{d:?}"));
        }
        self.note(format!("crash member {id}: unsynced tails {damage:?}"));
    }

    fn tick(&mut self, m: usize) -> Result<(), String> {
        if !self.running(m) {
            return Ok(());
        }
        self.members[m].clock += 1;
        for log in &mut self.members[m].logs {
            // The shell's ticker is bounded the same way: a stalled
            // driver catches up at most this many ticks. A failed log's
            // driver is gone.
            if !log.failed {
                log.ticks = (log.ticks + 1).min(TICKS_PENDING_MAX);
            }
        }
        // One member leads every group: a group led here while group 0
        // is led elsewhere goes to group 0's leader (as the shard's
        // `follow_cluster_leader` checks on its own tick).
        let id = self.members[m].id;
        let leader0 = self.role(m, 0).leader_id;
        let broken = self.broken(m);
        for g in 0..self.opts.groups {
            if !self.role(m, g).leader {
                continue;
            }
            if g != 0 && leader0 != 0 && leader0 != id {
                self.members[m].logs[g].transfer = Some(leader0);
            } else if broken {
                // A broken member hands every group it still leads to
                // another voter that is up (its group 0 may be what broke,
                // and then it still names itself the leader).
                let to = self
                    .core_ref(m, g)
                    .voters()
                    .into_iter()
                    .find(|v| *v != id && self.members.iter().any(|x| x.id == *v && x.up));
                if let Some(to) = to {
                    self.members[m].logs[g].transfer = Some(to);
                }
            }
        }
        if self.members[m].clock % EXPIRY_TICKS == 0 {
            self.expire(m)?;
        }
        Ok(())
    }

    /// The expiry timer (`lease_expiry`): on the serving leader only, the
    /// leases past their deadline on its clock are revoked, each as its
    /// own revoke; one whose revoke does not complete is handed out again
    /// later. None may expire before its full TTL has passed on this
    /// member's clock since it began serving (a leader change extends
    /// leases) or since its last grant or keep-alive here.
    fn expire(&mut self, m: usize) -> Result<(), String> {
        let Some(terms) = self.serving_terms(m) else {
            return Ok(());
        };
        let now = self.now(m);
        for g in 0..self.opts.groups {
            let member = &mut self.members[m];
            let Some(st) = member.logs[g].state.as_mut() else {
                continue;
            };
            for id in st.leases.expired(now, lease::REVOKE_BATCH) {
                let member = &self.members[m];
                let ttl = member.logs[g]
                    .state
                    .as_ref()
                    .and_then(|st| st.leases.get(id))
                    .map_or(0, |l| l.ttl);
                let from = member
                    .serving_since
                    .max(member.renewed.get(&id).copied().unwrap_or(0));
                let lived = member.clock - from;
                if lived * TICK_MS < ttl as u64 * 1000 {
                    return Err(format!(
                        "member {}: lease {id:x} (ttl {ttl}s) expired after {lived} ticks",
                        member.id
                    ));
                }
                self.revoke(m, &terms, id, true)?;
            }
        }
        Ok(())
    }

    /// The terms member `m` serves in, if it does (leads every group, its
    /// start done).
    fn serving_terms(&self, m: usize) -> Option<Vec<u64>> {
        let l = self.members[m].leading.as_ref()?;
        (self.running(m)
            && l.serving
            && (0..self.opts.groups).all(|g| {
                let r = self.role(m, g);
                r.leader && l.terms.get(g) == Some(&r.term)
            }))
        .then(|| l.terms.clone())
    }

    /// The shell's driver round: a `Ready` pending is handled first; else
    /// the queued inputs go in and the next `Ready` starts.
    fn drive(&mut self, m: usize, g: usize) -> Result<(), String> {
        let log = &self.members[m].logs[g];
        if !self.running(m) || log.writing.is_some() || log.failed {
            return Ok(());
        }
        if std::mem::take(&mut self.members[m].logs[g].snapshot_wanted) {
            self.compact(m, g)?;
        }
        if !self.core(m, g).has_ready() {
            let log = &mut self.members[m].logs[g];
            let ticks = std::mem::take(&mut log.ticks);
            let inbox: Vec<Message> = log.inbox.drain(..).collect();
            let queue: Vec<Proposal> = std::mem::take(&mut log.queue);
            let reading: Vec<(u64, Ticket)> = std::mem::take(&mut log.reading);
            let transfer = log.transfer.take();
            let campaign = std::mem::take(&mut log.campaign);
            let mut out = Output::default();
            let core = self.core(m, g);
            for _ in 0..ticks {
                core.tick(&mut out);
            }
            for msg in inbox {
                core.step(msg);
            }
            if campaign {
                core.campaign();
            }
            if let Some(to) = transfer {
                core.transfer_leader(to);
            }
            for p in queue {
                core.propose(p, &mut out);
            }
            for (id, t) in reading {
                core.read_index(id, t);
            }
            self.output(m, g, out)?;
        }
        if self.core(m, g).has_ready() {
            self.begin(m, g)?;
        }
        self.refresh(m, g)
    }

    /// The first half of a `Ready`; its write is unsynced until `sync`.
    fn begin(&mut self, m: usize, g: usize) -> Result<(), String> {
        let mut out = Output::default();
        let mut write = self.core(m, g).begin_ready(&mut out);
        self.output(m, g, out)?;
        let records = std::mem::take(&mut write.records);
        if !records.is_empty() && self.members[m].logs[g].disk.full {
            // The WAL finds no room for the segment this batch needs
            // (`wal::Error::NoSpace`, before any byte of it is written).
            return self.fail(m, g, Error::Wal(ferrokv_wal::Error::NoSpace));
        }
        let log = &mut self.members[m].logs[g];
        let n = records.len() as u64;
        let last = if records.is_empty() {
            0
        } else {
            log.disk.append(&records)
        };
        log.writing = Some(Writing { write, last, n });
        if n == 0 {
            return self.sync(m, g);
        }
        Ok(())
    }

    /// The log of group `g` failed (as the shell's driver on a WAL error):
    /// every waiter fails, the log stops and leads nothing, the state
    /// machine drops what it applied ahead of the log, and the member is
    /// broken until it restarts.
    fn fail(&mut self, m: usize, g: usize, e: Error) -> Result<(), String> {
        let id = self.members[m].id;
        self.note(format!("member {id} group {g}: shard log failed: {e}"));
        self.disk_fulls += 1;
        let mut out = Output::default();
        self.core(m, g).fail_all(&e, &mut out);
        let log = &mut self.members[m].logs[g];
        log.failed = true;
        log.writing = None;
        log.queue.clear();
        log.inbox.clear();
        for (_, t) in log.reading.drain(..) {
            out.done.push((t, Err(e.clone())));
        }
        let role = self.role(m, g);
        out.events.push(Event::Role(role));
        self.output(m, g, out)
    }

    /// The fdatasync of the write in flight returned: the second half of
    /// its `Ready`.
    fn sync(&mut self, m: usize, g: usize) -> Result<(), String> {
        if !self.running(m) {
            return Ok(());
        }
        let id = self.members[m].id;
        let log = &mut self.members[m].logs[g];
        let Some(Writing { write, last, n }) = log.writing.take() else {
            return Ok(());
        };
        log.disk.sync();
        if write.truncate {
            // The first record is an installed snapshot's marker.
            log.disk
                .truncate_before(last + 1 - n)
                .map_err(|e| format!("member {id} group {g}: {e}"))?;
        }
        let mut out = Output::default();
        self.core(m, g)
            .finish_ready(write, last, &mut out)
            .map_err(|e| format!("member {id} group {g}: finish_ready: {e}"))?;
        self.output(m, g, out)?;
        self.refresh(m, g)
    }

    fn refresh(&mut self, m: usize, g: usize) -> Result<(), String> {
        let mut out = Output::default();
        self.core(m, g).refresh(&mut out);
        self.output(m, g, out)?;
        let id = self.members[m].id;
        let commit = self.core(m, g).commit_index();
        let from = self.members[m].logs[g].checked_commit + 1;
        for index in from..=commit {
            if let Some(term) = self.core(m, g).term_at(index) {
                self.check.committed_term(g, id, index, term)?;
            }
        }
        self.members[m].logs[g].checked_commit = commit.max(from - 1);
        Ok(())
    }

    /// What the core produced: messages into the network, events to the
    /// state machine and the checker, completions to the clients.
    fn output(&mut self, m: usize, g: usize, out: Output<Ticket>) -> Result<(), String> {
        let id = self.members[m].id;
        for msg in out.messages {
            self.messages += 1;
            self.net.push(Envelope { group: g, msg });
        }
        for ev in out.events {
            match ev {
                Event::Role(role) => {
                    self.note(format!(
                        "member {id} group {g}: term {} leader {}{}",
                        role.term,
                        role.leader_id,
                        if role.leader { " (self)" } else { "" }
                    ));
                    if role.leader {
                        self.check.leader(g, role.term, id)?;
                    }
                    let member = &mut self.members[m];
                    if member
                        .leading
                        .as_ref()
                        .is_some_and(|l| !role.leader || l.terms.get(g) != Some(&role.term))
                    {
                        member.leading = None;
                    }
                    if let Some(mut st) = member.logs[g].state.take() {
                        let before = st.store.last_revision();
                        let out = st.role_changed(role.leader, role.term);
                        if before != st.store.last_revision() {
                            self.rolled_back += 1;
                        }
                        let r = effects(&out, member, g);
                        member.logs[g].state = Some(st);
                        r?;
                    }
                    if role.leader && g != 0 {
                        // One member leads every group: a group led here
                        // while group 0 is led elsewhere is handed to
                        // group 0's leader (as the shard's role_changed).
                        let leader0 = self.role(m, 0).leader_id;
                        if leader0 != 0 && leader0 != id {
                            self.members[m].logs[g].transfer = Some(leader0);
                        }
                    }
                }
                Event::Committed { index, term, data } => self.apply(m, g, index, term, data)?,
                Event::ConfChanged { index, context } => {
                    // The store is unchanged by it, so it covers this
                    // index too (as the shard's `conf_changed`): a
                    // snapshot taken now is at or past the membership.
                    let log = &mut self.members[m].logs[g];
                    log.applied_index = log.applied_index.max(index);
                    if let Some(st) = log.state.as_mut() {
                        st.covers(index);
                    }
                    self.changes_applied += 1;
                    self.note(format!(
                        "member {id} group {g}: conf change {index} in effect: {}",
                        String::from_utf8_lossy(&context)
                    ));
                }
                // Written at the next driver round, as the shard writes
                // one soon after.
                Event::SnapshotWanted => self.members[m].logs[g].snapshot_wanted = true,
            }
        }
        for (t, r) in out.done {
            let p = match t {
                Ticket::Proposal(p) => p,
                Ticket::Conf(c) => {
                    let what = &self.changes[c];
                    let line = match r {
                        Ok(index) => format!("member {id} group {g}: {what} committed at {index}"),
                        Err(e) => format!("member {id} group {g}: {what} failed: {e}"),
                    };
                    self.note(line);
                    continue;
                }
                Ticket::Confirm(t) => {
                    match r {
                        Ok(_) => self.txns[t].confirmed = true,
                        Err(e) => {
                            self.note(format!("member {id}: t{t}'s ReadIndex failed: {e}"));
                            self.txns[t].failed = true;
                        }
                    }
                    continue;
                }
                Ticket::Read(i) => {
                    let read = self.reads[i];
                    match r {
                        Ok(index) if index < read.floor => {
                            return Err(format!(
                                "member {id} group {g}: read r{i} answered index {index}, \
                                 below {} acknowledged before it was made",
                                read.floor
                            ))
                        }
                        Ok(index) => {
                            self.reads_answered += 1;
                            self.note(format!(
                                "member {id} group {g}: read r{i} at {index} (floor {})",
                                read.floor
                            ));
                        }
                        Err(e) => {
                            self.note(format!("member {id} group {g}: read r{i} failed: {e}"))
                        }
                    }
                    continue;
                }
            };
            let (pg, data) = self.proposals[p].clone();
            debug_assert_eq!(pg, g);
            let txn = self.part_of[p];
            match r {
                Ok(index) => {
                    self.note(format!(
                        "member {id} group {g}: acknowledged p{p} at {index}"
                    ));
                    self.check.acknowledged(g, index, &data)?;
                    if txn.is_none() {
                        if let Some(l) = self.members[m].leading.as_mut() {
                            if l.markers.contains(&p) {
                                l.marked += 1;
                            }
                        }
                    }
                    if let Some(t) = txn {
                        self.txns[t].committed_at.push((g, index));
                        if matches!(self.txns[t].op, Op::Grant { .. } | Op::Compact { .. }) {
                            let life = self.members[m].lives;
                            self.resumed.push((m, life, g, t, self.step));
                        } else {
                            self.part_done(t);
                        }
                    }
                }
                Err(e) => {
                    self.note(format!("member {id} group {g}: p{p} failed: {e}"));
                    let member = &mut self.members[m];
                    // The start starts again (a failed marker, or a write
                    // whose revision is now a hole only a marker voids).
                    member.leading = None;
                    // Its part stays in the store, as a shard's does when
                    // raft drops a submitted proposal: the next start's
                    // marker voids its revision (and a step-down rolls it
                    // back first).
                    if let Some(t) = txn {
                        self.txns[t].failed = true;
                        // `Shard::commit`: a revoke raft refused puts its
                        // lease back.
                        if let (Op::Revoke { id, .. }, Ok(Record::LeaseRevoke { rev, .. })) =
                            (self.txns[t].op, Record::decode(&data))
                        {
                            let term = self.txns[t].terms[g];
                            if let Some(st) = self.members[m].logs[g].state.as_mut() {
                                st.revoke_dropped(id, rev, term);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One more of call `t`'s proposals is done.
    fn part_done(&mut self, t: usize) {
        let w = &mut self.txns[t];
        w.oks += 1;
        if w.oks == w.expected && !w.failed {
            self.settling.push(t);
        }
    }

    /// The proposing shards' tasks whose proposal committed in an earlier
    /// step go on (`Shard::lease_grant`, `Shard::compact` after their
    /// await): a role change may have come in between, as the shell's
    /// driver runs on before the task does. A crash loses them; a stopped
    /// member runs none.
    fn resume(&mut self) -> Result<(), String> {
        let mut keep = Vec::new();
        for (m, life, g, t, step) in std::mem::take(&mut self.resumed) {
            if self.members[m].lives != life || !self.members[m].up {
                continue;
            }
            if step >= self.step || !self.running(m) {
                keep.push((m, life, g, t, step));
                continue;
            }
            self.committed_part(m, g, t);
            self.part_done(t);
        }
        self.resumed.extend(keep);
        Ok(())
    }

    /// What the proposing shard does once a proposal of call `t` in group
    /// `g` committed: a grant's lease, in the table since its entry was
    /// applied, gets its deadline from now (`Shard::lease_grant`); a
    /// compaction has nothing left to do (`Shard::compact`).
    fn committed_part(&mut self, m: usize, g: usize, t: usize) {
        let now = self.now(m);
        let member = &mut self.members[m];
        if let (Op::Grant { id, .. }, Some(st)) = (self.txns[t].op, member.logs[g].state.as_mut()) {
            if st.leases.renew(id, now).is_ok() {
                member.renewed.insert(id, member.clock);
            }
        }
        if matches!(self.txns[t].op, Op::Grant { .. }) {
            // The grant comes after every revision assigned so far.
            self.txns[t].header = member.seq.last_assigned().max(member.seq.visible());
        }
    }

    fn apply(
        &mut self,
        m: usize,
        g: usize,
        index: u64,
        term: u64,
        data: Vec<u8>,
    ) -> Result<(), String> {
        let id = self.members[m].id;
        let log = &mut self.members[m].logs[g];
        if index <= log.applied_index {
            // Raft may still hand over entries an installed snapshot
            // holds (committed before it stepped the snapshot message);
            // the shard skips them. Any other entry at or below what was
            // applied is one applied twice.
            if log.snapshot.as_ref().is_some_and(|s| s.index >= index) {
                return self.check.applied(g, id, index, term, &data);
            }
            return Err(format!(
                "member {id} group {g}: entry {index} applied after {}",
                log.applied_index
            ));
        }
        log.applied_index = index;
        if let Some((t, d)) = log.applied.get(&index) {
            if *t != term || *d != data {
                return Err(format!(
                    "member {id} group {g}: index {index} applied again as another entry \
                     (term {t} then {term}) after a restart"
                ));
            }
        }
        log.applied.insert(index, (term, data.clone()));
        let member = &mut self.members[m];
        if let Some(mut st) = member.logs[g].state.take() {
            let before = st.store.last_revision();
            let r = apply_state(&mut st, member, g, index, term, &data);
            if st.store.last_revision() < before {
                // A marker voided what this store held.
                self.rolled_back += 1;
            }
            member.logs[g].state = Some(st);
            r?;
        }
        self.check.applied(g, id, index, term, &data)
    }

    /// Delivers some messages in flight, each any of them (the network
    /// reorders), or loses or duplicates them. A share of the backlog per
    /// step keeps it bounded: a network that only ever slows down starves
    /// every leader's check-quorum.
    fn deliver(&mut self) -> Result<(), String> {
        for _ in 0..1 + self.net.len() / 8 {
            self.deliver_one()?;
        }
        Ok(())
    }

    fn deliver_one(&mut self) -> Result<(), String> {
        if self.net.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.net.len());
        let env = self.net.swap_remove(i);
        let (from, to) = (env.msg.from, env.msg.to);
        if self.faults && self.rng.chance(self.mix.loss) {
            self.note(format!("lost {:?} {from}->{to}", env.msg.get_msg_type()));
            return Ok(());
        }
        if self.faults && self.rng.chance(self.mix.dup) {
            self.net.push(Envelope {
                group: env.group,
                msg: env.msg.clone(),
            });
        }
        self.hand(env);
        Ok(())
    }

    /// Puts a message into its member's inbox, unless the member is down
    /// or the link is cut.
    fn hand(&mut self, env: Envelope) {
        let (from, to) = (env.msg.from, env.msg.to);
        self.mix(from << 40 | to << 32 | env.msg.get_msg_type() as u64);
        if self.opts.trace {
            self.note(format!(
                "deliver group {} {:?} {from}->{to} term {} index {} log term {} commit {} \
                 entries {} reject {} hint {}",
                env.group,
                env.msg.get_msg_type(),
                env.msg.term,
                env.msg.index,
                env.msg.log_term,
                env.msg.commit,
                env.msg.entries.len(),
                env.msg.reject,
                env.msg.reject_hint
            ));
        }
        if self.cut.contains(&(from, to)) {
            return;
        }
        let Some(m) = self.members.iter().position(|x| x.id == to) else {
            return;
        };
        if !self.members[m].up || self.members[m].logs[env.group].failed {
            return;
        }
        if env.msg.get_msg_type() == MessageType::MsgSnapshot {
            // As the shard does: fetch the sender's file and install it,
            // then let raft see the message.
            if let Err(e) = self.install(m, env.group, &env.msg) {
                self.note(format!(
                    "member {to} group {}: snapshot not installed: {e}",
                    env.group
                ));
                return;
            }
        }
        let inbox = &mut self.members[m].logs[env.group].inbox;
        // The shell's inbound bound: over it a message is dropped (raft
        // retransmits).
        if inbox.len() < INBOUND_MESSAGES_PENDING_MAX {
            inbox.push_back(env.msg);
        }
    }

    /// Member `m` installs the snapshot file `msg` offers from its sender
    /// (nothing to do if it applied that far already).
    fn install(&mut self, m: usize, g: usize, msg: &Message) -> Result<(), String> {
        let index = msg.get_snapshot().get_metadata().index;
        if index <= self.members[m].logs[g].applied_index {
            return Ok(());
        }
        let Some(from) = self.members.iter().position(|x| x.id == msg.from) else {
            return Err("no such sender".into());
        };
        let file = match &self.members[from].logs[g].snapshot {
            Some(f) if f.index == index => f.clone(),
            other => {
                return Err(format!(
                    "the sender's file is at {:?}, not {index}",
                    other.as_ref().map(|f| f.index)
                ))
            }
        };
        let id = self.members[m].id;
        self.snapshots += 1;
        self.note(format!(
            "member {id} group {g}: installs snapshot {index} from {}",
            msg.from
        ));
        let after = self.members[m].logs[g].applied_index;
        for (i, (term, data)) in file.applied.range(after + 1..) {
            self.apply(m, g, *i, *term, data.clone())?;
        }
        let cs = msg.get_snapshot().get_metadata().get_conf_state();
        let log = &mut self.members[m].logs[g];
        log.applied_index = index;
        if let Some(st) = log.state.as_mut() {
            st.covers(index);
        }
        log.snapshot = Some(Snapshot {
            conf: (cs.voters.clone(), cs.learners.clone()),
            ..file
        });
        Ok(())
    }

    /// The state machine writes a snapshot file at what it applied, and
    /// the log is compacted to it (as far as raft storage allows), in the
    /// driver: never with a `Ready`'s write in flight.
    fn compact(&mut self, m: usize, g: usize) -> Result<(), String> {
        let id = self.members[m].id;
        let log = &mut self.members[m].logs[g];
        if log.writing.is_some() || log.applied_index == 0 {
            return Ok(());
        }
        let index = log.applied_index;
        let applied = log
            .applied
            .range(..=index)
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        let core = log
            .core
            .as_ref()
            .expect("a member that is up has its logs open");
        let conf = (core.voters(), core.learners());
        log.snapshot = Some(Snapshot {
            index,
            applied,
            conf,
        });
        self.core(m, g).snapshot_written(index);
        let plan = match self.core(m, g).plan_compaction(index) {
            Ok(p) => p,
            // An installed snapshot raft has not stepped yet: as the
            // shard's snapshot, this compaction waits for the next one.
            Err(Error::CompactBeyondApplied { .. }) => None,
            Err(e) => return Err(format!("member {id} group {g}: compaction: {e}")),
        };
        let Some(mut plan) = plan else {
            self.note(format!("member {id} group {g}: snapshot at {index}"));
            return Ok(());
        };
        let log = &mut self.members[m].logs[g];
        let lsn = log.disk.append(&[std::mem::take(&mut plan.record)]);
        log.disk.sync();
        let keep = self
            .core(m, g)
            .compacted(&plan, lsn)
            .map_err(|e| format!("member {id} group {g}: compaction: {e}"))?;
        self.members[m].logs[g]
            .disk
            .truncate_before(keep)
            .map_err(|e| format!("member {id} group {g}: {e}"))?;
        self.compactions += 1;
        self.note(format!(
            "member {id} group {g}: snapshot at {index}, log compacted"
        ));
        Ok(())
    }

    /// A client write to the member it guesses leads: a member that leads
    /// every group makes its leader start first (as `leader::start`), and
    /// once it serves, each write takes the next revision, is applied ahead
    /// of the log in every group it touches (one or two) and proposed
    /// there, as the coordinator (`kv/write.rs`) does.
    fn propose(&mut self) -> Result<(), String> {
        let m = self.rng.below(self.members.len());
        if let Some(terms) = self.lead(m) {
            match self.rng.below(100) {
                0..=9 => self.grant(m, &terms)?,
                10..=15 => {
                    if let Some(id) = self.known_lease() {
                        self.revoke(m, &terms, id, false)?;
                    }
                }
                16..=19 => self.renew(m),
                20..=27 => self.compact_store(m, &terms),
                _ => self.write(m, &terms)?,
            }
        }
        Ok(())
    }

    /// A lease a client knows of: one of the last few granted (perhaps
    /// revoked or expired since, or never granted at all).
    fn known_lease(&mut self) -> Option<i64> {
        let n = self.leases.len();
        if n == 0 {
            return None;
        }
        let back = self.rng.below(n.min(4));
        Some(self.leases[n - 1 - back])
    }

    /// A call other than a transaction at serving member `m`, with no
    /// proposals yet.
    fn call(&mut self, m: usize, terms: &[u64], op: Op, header: i64, voids: u64) -> usize {
        let member = &self.members[m];
        self.txns.push(Txn {
            member: m,
            life: member.lives,
            voids,
            rev: None,
            header,
            request: pb::TxnRequest::default(),
            succeeded: true,
            responses: Vec::new(),
            parts: Vec::new(),
            groups: Vec::new(),
            oks: 0,
            failed: false,
            floor: self.acked_max,
            starts: member.starts,
            confirmed: false,
            op,
            expected: 0,
            terms: terms.to_vec(),
            committed_at: Vec::new(),
        });
        self.txns.len() - 1
    }

    /// LeaseGrant at serving member `m` (`Shard::lease_grant`): the
    /// `LeaseGrant` record proposed in the lease's group; the lease enters
    /// the table once it committed (`committed_part`), and the answer
    /// waits until the state it took effect in is visible and kept.
    fn grant(&mut self, m: usize, terms: &[u64]) -> Result<(), String> {
        let groups = self.opts.groups;
        let id = self.leases.len() as i64 + 1;
        let g = lease_shard(id, groups as u32) as usize;
        let asked = 1 + self.rng.below(6) as i64;
        let member = &mut self.members[m];
        let mid = member.id;
        let voids = member.seq.voids();
        let st = member.logs[g]
            .state
            .as_mut()
            .ok_or("a serving member has every group's state")?;
        let ttl = st
            .leases
            .check_grant(id, asked)
            .map_err(|e| format!("member {mid}: grant of a new lease {id:x}: {e}"))?;
        if !st.may_write_in(terms[g]) {
            return Ok(());
        }
        st.take_term(terms[g]);
        self.leases.push(id);
        let t = self.call(m, terms, Op::Grant { id, ttl }, 0, voids);
        self.txns[t].groups = vec![g];
        self.txns[t].expected = 1;
        self.note(format!("member {mid}: t{t} grants lease {id:x} ttl {ttl}s"));
        self.submit(
            m,
            g,
            terms[g],
            Record::LeaseGrant { id, ttl }.encode(),
            Some(t),
        );
        Ok(())
    }

    /// LeaseRevoke at serving member `m`, or the expiry of a lease whose
    /// TTL ran out there (`Engine::lease_revoke_here`): under every shard's
    /// fence, the keys attached to it in the latest state are deleted at
    /// one revision (none taken if there are none), each group proposes
    /// its part and the lease's group its `LeaseRevoke` too, and the lease
    /// leaves the table at submission (`Shard::commit`).
    fn revoke(&mut self, m: usize, terms: &[u64], id: i64, expiry: bool) -> Result<(), String> {
        let groups = self.opts.groups;
        let ls = lease_shard(id, groups as u32);
        let member = &mut self.members[m];
        let mid = member.id;
        if member
            .logs
            .iter()
            .enumerate()
            .any(|(g, l)| l.state.as_ref().is_none_or(|st| !st.may_write_in(terms[g])))
        {
            return Ok(());
        }
        let seq = &member.seq;
        let before = seq.last_assigned().max(seq.visible());
        let exists = member.logs[ls as usize]
            .state
            .as_ref()
            .is_some_and(|st| st.leases.contains(id));
        if !exists {
            self.note(format!("member {mid}: revoke of lease {id:x}: not found"));
            return Ok(());
        }
        let mut keys: Vec<Vec<u8>> = member
            .logs
            .iter()
            .filter_map(|l| l.state.as_ref())
            .flat_map(|st| st.store.keys_with_lease(id))
            .collect();
        keys.sort_unstable();
        let mut st = eval::WriteState::new(before, seq.voids());
        let states = leader_states(&mut member.logs, terms)?;
        txn::revoke_deletes(&txn::SimView::leader(states, seq), &keys, ls, &mut st)
            .map_err(|e| format!("member {mid}: revoke of lease {id:x}: {e}"))?;
        let visible = seq.visible();
        let records: Vec<(usize, Vec<Record>)> = (0..groups)
            .map(|g| (g, eval::records(&st, g as u32, Some((ls, id)))))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let t = self.call(
            m,
            terms,
            Op::Revoke { id, expiry },
            st.header_rev(),
            st.voids,
        );
        let w = &mut self.txns[t];
        w.rev = st.rev;
        w.parts = st.parts.clone();
        w.groups = records.iter().map(|(g, _)| *g).collect();
        w.expected = records.iter().map(|(_, r)| r.len()).sum();
        self.note(format!(
            "member {mid}: t{t} {} lease {id:x}: {} keys deleted at {:?}",
            if expiry { "expires" } else { "revokes" },
            keys.len(),
            st.rev
        ));
        for (g, recs) in records {
            for rec in &recs {
                self.submit(m, g, terms[g], rec.encode(), Some(t));
            }
            if g == ls as usize {
                if let Some(state) = self.members[m].logs[g].state.as_mut() {
                    state.revoke_submitted(id, &recs, visible, terms[g]);
                }
            }
        }
        Ok(())
    }

    /// LeaseKeepAlive at serving member `m`: the lease's deadline moves to
    /// its full TTL from now on the leader's clock (no log entry).
    fn renew(&mut self, m: usize) {
        let Some(id) = self.known_lease() else {
            return;
        };
        let now = self.now(m);
        let ls = lease_shard(id, self.opts.groups as u32) as usize;
        let member = &mut self.members[m];
        let Some(st) = member.logs[ls].state.as_mut() else {
            return;
        };
        if st.leases.renew(id, now).is_ok() {
            member.renewed.insert(id, member.clock);
            let mid = member.id;
            self.note(format!("member {mid}: keep-alive of lease {id:x}"));
        }
    }

    /// Compact at serving member `m` (`Engine::compact_here`), at a
    /// revision above the compaction point and at or below the visible
    /// one: accepted by the sequencer, then every group proposes
    /// `Record::Compact` with `at` the last revision handed out (a step
    /// is atomic, as the engine's fences of every shard are); every member
    /// has it in effect once its visible revision is past `at`, and its
    /// stores compact then.
    fn compact_store(&mut self, m: usize, terms: &[u64]) {
        let member = &self.members[m];
        let (visible, cur) = (member.seq.visible(), member.seq.compact_revision());
        if visible <= cur
            || member
                .logs
                .iter()
                .enumerate()
                .any(|(g, l)| l.state.as_ref().is_none_or(|st| !st.may_write_in(terms[g])))
        {
            return;
        }
        let rev = cur + 1 + self.rng.below((visible - cur) as usize) as i64;
        let member = &mut self.members[m];
        if !member.seq.try_compact(rev) {
            return;
        }
        for (g, l) in member.logs.iter_mut().enumerate() {
            if let Some(st) = l.state.as_mut() {
                st.take_term(terms[g]);
            }
        }
        let mid = member.id;
        let voids = member.seq.voids();
        let groups = self.opts.groups;
        let t = self.call(m, terms, Op::Compact { rev }, visible, voids);
        self.txns[t].groups = (0..groups).collect();
        self.txns[t].expected = groups;
        self.note(format!(
            "member {mid}: t{t} compacts at {rev} (visible {visible})"
        ));
        let at = self.members[m].seq.last_assigned();
        self.note(format!(
            "member {mid}: t{t}'s compaction is in effect past {at}"
        ));
        for (g, term) in terms.iter().enumerate() {
            self.submit(m, g, *term, Record::Compact { rev, at }.encode(), Some(t));
        }
    }

    /// Member `m`'s leader loop (`leader::lead`): while it leads every
    /// group, the start, then serving. The terms it serves in, if it does.
    fn lead(&mut self, m: usize) -> Option<Vec<u64>> {
        if !self.running(m) {
            return None;
        }
        let groups = self.opts.groups;
        let roles: Vec<_> = (0..groups).map(|g| self.role(m, g)).collect();
        if !roles.iter().all(|r| r.leader) {
            return None;
        }
        let terms: Vec<u64> = roles.iter().map(|r| r.term).collect();
        let id = self.members[m].id;
        match self.members[m].leading.clone() {
            Some(l) if l.terms == terms && l.serving => Some(terms),
            Some(l) if l.terms == terms => {
                // Serving once every group applied the marker: the void
                // range is done, and revisions go on after it.
                let member = &mut self.members[m];
                if l.marked == l.markers.len() && l.plan.serve(&member.seq) {
                    if let Some(l) = member.leading.as_mut() {
                        l.serving = true;
                    }
                    // Every lease gets its full TTL from now
                    // (`promote_leases`): a leader change never expires
                    // one early.
                    member.serving_since = member.clock;
                    let now = self.epoch + Duration::from_millis(member.clock * TICK_MS);
                    for log in &mut member.logs {
                        if let Some(st) = log.state.as_mut() {
                            st.leases.promote(now);
                        }
                    }
                    self.note(format!(
                        "member {id}: serves from revision {} (terms {terms:?})",
                        l.plan.through + 1
                    ));
                }
                None
            }
            _ => {
                // Every group has committed an entry of its term and
                // applied all it holds, with nothing of ours in flight.
                let settled = (0..groups).all(|g| {
                    let c = self.core_ref(m, g);
                    c.leads_committed_term()
                        && c.log_settled()
                        && self.members[m].logs[g].queue.is_empty()
                });
                if !settled {
                    return None;
                }
                let member = &mut self.members[m];
                member.starts += 1;
                let plan = match Start::plan(&terms, member.starts, &member.seq) {
                    Ok(plan) => plan,
                    Err(why) => {
                        self.note(format!("member {id}: start not yet: {why}"));
                        return None;
                    }
                };
                let first = self.proposals.len();
                member.leading = Some(Leading {
                    terms: terms.clone(),
                    plan,
                    markers: (first..first + groups).collect(),
                    marked: 0,
                    serving: false,
                });
                self.note(format!(
                    "member {id}: starts as leader, marker {} voids {}..={}",
                    plan.id,
                    plan.cut + 1,
                    plan.through
                ));
                let data = Record::Marker {
                    id: plan.id,
                    cut: plan.cut,
                    through: plan.through,
                }
                .encode();
                for (g, term) in terms.iter().enumerate() {
                    self.submit(m, g, *term, data.clone(), None);
                }
                None
            }
        }
    }

    /// A client transaction at serving member `m` (leading every group in
    /// `terms`), evaluated by the real evaluator against the member's latest
    /// state: what it writes is applied ahead of the log in each group and
    /// proposed there under one revision, as the coordinator
    /// (`kv/write.rs`) does; one that writes nothing waits for a ReadIndex
    /// in group 0 and for what it read to be visible (`read_settled`).
    fn write(&mut self, m: usize, terms: &[u64]) -> Result<(), String> {
        let groups = self.opts.groups;
        let t = self.txns.len();
        // Under the shard locks only the term it leads may write.
        if self.members[m]
            .logs
            .iter()
            .enumerate()
            .any(|(g, l)| l.state.as_ref().is_none_or(|st| !st.may_write_in(terms[g])))
        {
            return Ok(());
        }
        // A quarter of them attach their keys to a lease the client knows.
        let lease = if self.rng.chance(25) {
            self.known_lease().unwrap_or(0)
        } else {
            0
        };
        let mut request = txn::request(&mut self.rng, groups, t, 0, lease);
        let key = txn::first_key(&request);
        let latest = self.members[m].logs[txn::group_of(&key)]
            .state
            .as_ref()
            .and_then(|st| st.store.range(&key, &[], 0, 1, false, false).ok())
            .and_then(|r| r.kvs.first().map(|kv| kv.mod_revision))
            .unwrap_or(0);
        if let Some(c) = request.compare.first_mut() {
            if c.target == pb::compare::CompareTarget::Mod as i32 {
                // The client is right about the key half the time.
                let guess = if self.rng.chance(50) {
                    latest
                } else {
                    self.rng.below(latest as usize + 1) as i64
                };
                c.target_union = Some(pb::compare::TargetUnion::ModRevision(guess));
            }
        }
        let member = &mut self.members[m];
        let seq = &member.seq;
        let states = leader_states(&mut member.logs, terms)?;
        let id = member.id;
        let ev = match txn::evaluate(&txn::SimView::leader(states, seq), &request)
            .map_err(|e| format!("member {id}: t{t}: {e}"))?
        {
            Ok(ev) => ev,
            Err(e) => {
                // Refused before it applied anything (its lease is not in
                // the table): answered as an error, nothing to check.
                self.note(format!("member {id}: a transaction refused: {e}"));
                return Ok(());
            }
        };
        let member = &mut self.members[m];
        let mut touched: Vec<usize> = ev.st.parts.iter().map(|p| p.shard as usize).collect();
        touched.sort_unstable();
        touched.dedup();
        self.txns.push(Txn {
            member: m,
            life: member.lives,
            voids: ev.st.voids,
            rev: ev.st.rev,
            header: ev.st.header_rev(),
            request,
            succeeded: ev.succeeded,
            responses: ev.responses,
            parts: ev.st.parts.clone(),
            groups: touched.clone(),
            oks: 0,
            failed: false,
            floor: self.acked_max,
            starts: member.starts,
            confirmed: false,
            op: Op::Txn,
            expected: touched.len(),
            terms: terms.to_vec(),
            committed_at: Vec::new(),
        });
        match ev.st.rev {
            Some(rev) => {
                self.note(format!(
                    "member {id}: t{t} (succeeded: {}) at revision {rev} in groups \
                     {touched:?}{}",
                    ev.succeeded,
                    if lease != 0 {
                        format!(", lease {lease:x}")
                    } else {
                        String::new()
                    }
                ));
                for g in touched {
                    // The coordinator's own records for each group.
                    for rec in eval::records(&ev.st, g as u32, None) {
                        self.submit(m, g, terms[g], rec.encode(), Some(t));
                    }
                }
            }
            None => {
                self.note(format!(
                    "member {id}: t{t} (succeeded: {}) wrote nothing, read at {}",
                    ev.succeeded,
                    ev.st.header_rev()
                ));
                let log = &mut self.members[m].logs[0];
                let rid = log.next_proposal_id;
                log.next_proposal_id += 1;
                log.reading.push((rid, Ticket::Confirm(t)));
                self.settling.push(t);
            }
        }
        Ok(())
    }

    /// Queues a proposal of `data` in group `g` of member `m`, in `term`.
    fn submit(&mut self, m: usize, g: usize, term: u64, data: Vec<u8>, txn: Option<usize>) {
        let p = self.proposals.len();
        self.proposals.push((g, data.clone()));
        self.part_of.push(txn);
        let log = &mut self.members[m].logs[g];
        let id = log.next_proposal_id;
        log.next_proposal_id += 1;
        self.core(m, g)
            .await_entry(id, term, false, Ticket::Proposal(p));
        self.members[m].logs[g].queue.push(Proposal {
            id,
            term,
            data,
            conf: None,
        });
    }

    /// A membership change of one group, proposed on its leader: a member
    /// outside the group added as a learner (started if it never was), a
    /// learner promoted, or a voter removed while more than three remain.
    fn change_members(&mut self) -> Result<(), String> {
        let g = self.rng.below(self.opts.groups);
        let Some(l) =
            (0..self.members.len()).find(|m| self.members[*m].up && self.role(*m, g).leader)
        else {
            return Ok(());
        };
        let (voters, learners) = (self.core(l, g).voters(), self.core(l, g).learners());
        let outside: Vec<usize> = (0..self.members.len())
            .filter(|m| {
                let id = self.members[*m].id;
                !voters.contains(&id) && !learners.contains(&id)
            })
            .collect();
        let mut choices = Vec::new();
        if !outside.is_empty() {
            choices.push(ConfChangeType::AddLearnerNode);
        }
        if !learners.is_empty() {
            choices.push(ConfChangeType::AddNode);
        }
        if voters.len() > 3 {
            choices.push(ConfChangeType::RemoveNode);
        }
        if choices.is_empty() {
            return Ok(());
        }
        let kind = choices[self.rng.below(choices.len())];
        let target = match kind {
            ConfChangeType::AddLearnerNode => {
                let m = outside[self.rng.below(outside.len())];
                if !self.members[m].up && self.members[m].lives == 0 {
                    self.note(format!("member {} joins", self.members[m].id));
                    self.start(m)?;
                }
                self.members[m].id
            }
            ConfChangeType::AddNode => learners[self.rng.below(learners.len())],
            _ => voters[self.rng.below(voters.len())],
        };
        let c = self.changes.len();
        let what = format!("{kind:?} {target}");
        self.changes.push(what.clone());
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = target;
        cc.context = what.clone().into_bytes().into();
        let role = self.role(l, g);
        let log = &mut self.members[l].logs[g];
        let id = log.next_proposal_id;
        log.next_proposal_id += 1;
        self.core(l, g)
            .await_entry(id, role.term, true, Ticket::Conf(c));
        self.members[l].logs[g].queue.push(Proposal {
            id,
            term: role.term,
            data: Vec::new(),
            conf: Some(cc),
        });
        let lid = self.members[l].id;
        self.note(format!("member {lid} group {g}: propose {what}"));
        Ok(())
    }

    /// A linearizable read on any member (a follower asks its leader).
    fn read(&mut self) -> Result<(), String> {
        let m = self.rng.below(self.members.len());
        let g = self.rng.below(self.opts.groups);
        if !self.running(m) || self.members[m].logs[g].failed {
            return Ok(());
        }
        let i = self.reads.len();
        let floor = self.check.max_acked(g);
        self.reads.push(Read { floor });
        let log = &mut self.members[m].logs[g];
        // Proposals and reads draw ids from one counter, as in the shell.
        let id = log.next_proposal_id;
        log.next_proposal_id += 1;
        log.reading.push((id, Ticket::Read(i)));
        let mid = self.members[m].id;
        self.note(format!(
            "read r{i} on member {mid} group {g} (floor {floor})"
        ));
        Ok(())
    }

    fn fault(&mut self) -> Result<(), String> {
        let n = self.members.len();
        let m = self.rng.below(n);
        let id = self.members[m].id;
        let total: usize = self.mix.weights.iter().sum();
        let mut pick = self.rng.below(total.max(1));
        let kind = self
            .mix
            .weights
            .iter()
            .position(|w| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(5);
        match kind {
            0 => {
                // Most crashes hit a member with a write in flight: what
                // a crash can damage is what was not yet synced.
                let writing: Vec<usize> = (0..n)
                    .filter(|i| {
                        self.members[*i].up
                            && self.members[*i].logs.iter().any(|l| l.writing.is_some())
                    })
                    .collect();
                let m = if !writing.is_empty() && self.rng.chance(70) {
                    writing[self.rng.below(writing.len())]
                } else {
                    m
                };
                if self.members[m].up {
                    self.crash(m);
                }
            }
            1 => {
                // The members split in two sides at random (one member
                // alone, a minority, or none).
                self.cut.clear();
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(50)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.cut.insert((self.members[a].id, self.members[b].id));
                        }
                    }
                }
                let ids: Vec<u64> = (0..n)
                    .filter(|i| side[*i])
                    .map(|i| self.members[i].id)
                    .collect();
                self.note(format!("partition: {ids:?} from the rest"));
            }
            2 => {
                self.cut.clear();
                self.note("heal".into());
            }
            3 => {
                if self.members[m].up {
                    let g = self.rng.below(self.opts.groups);
                    let to = 1 + self.rng.below(n) as u64;
                    self.members[m].logs[g].transfer = Some(to);
                    self.note(format!(
                        "member {id} group {g}: transfer leadership to {to}"
                    ));
                }
            }
            4 => {
                if self.members[m].up {
                    let g = self.rng.below(self.opts.groups);
                    self.members[m].logs[g].campaign = true;
                    self.note(format!("member {id} group {g}: campaign"));
                }
            }
            6 => {
                let g = self.rng.below(self.opts.groups);
                if self.members[m].up && !self.members[m].logs[g].failed {
                    self.compact(m, g)?;
                }
            }
            7 => self.change_members()?,
            9 => {
                // The member's disk fills up (every shard's WAL is on it);
                // one at a time, so the others keep a quorum.
                let full = self
                    .members
                    .iter()
                    .any(|x| x.logs.iter().any(|l| l.disk.full));
                if self.members[m].up && !full {
                    for log in &mut self.members[m].logs {
                        log.disk.full = true;
                    }
                    self.note(format!("member {id}: disk full"));
                }
            }
            8 => {
                // SIGSTOP, of the member leading group 0 most often: past
                // an election, it resumes believing it still leads.
                let leader = (0..n).find(|i| self.running(*i) && self.role(*i, 0).leader);
                let m = match leader {
                    Some(l) if self.rng.chance(70) => l,
                    _ => m,
                };
                // One member stopped at a time: the others keep a quorum.
                let stopped = self.members.iter().any(|x| x.paused_until.is_some());
                if self.running(m) && !stopped {
                    // Long enough, when pauses are all there is, for the others
                    // to elect a leader that serves.
                    let steps = if self.opts.pauses_only {
                        1_500 + self.rng.below(3_000)
                    } else {
                        50 + self.rng.below(400)
                    };
                    self.members[m].paused_until = Some(self.step + steps);
                    self.note(format!(
                        "SIGSTOP member {} for {steps} steps",
                        self.members[m].id
                    ));
                }
            }
            _ => {
                if let Some(down) = self.members.iter().position(|x| !x.up && x.lives > 0) {
                    let did = self.members[down].id;
                    self.note(format!("restart member {did}"));
                    self.start(down)?;
                }
            }
        }
        Ok(())
    }

    /// Faults stop, partitions heal, every member is up; the groups must
    /// then agree.
    fn converge(&mut self) -> Result<(), String> {
        self.faults = false;
        self.cut.clear();
        self.note("converge: faults stop, partitions heal".into());
        for m in 0..self.members.len() {
            self.members[m].paused_until = None;
            if !self.members[m].up && self.members[m].lives > 0 {
                self.note(format!("restart member {}", self.members[m].id));
                self.start(m)?;
            }
        }
        // A member whose disk filled up is broken until restarted: the
        // others must still elect a leader that serves.
        if let Some(b) = (0..self.members.len()).find(|m| self.broken(*m)) {
            let id = self.members[b].id;
            let serves = |w: &World| {
                (0..w.members.len())
                    .any(|m| w.members[m].leading.as_ref().is_some_and(|l| l.serving))
            };
            // Past the first rounds, a leader that was cut off has heard
            // of the newer terms.
            let mut round = 0;
            while round < 20 || !serves(self) {
                if round == CONVERGE_ROUNDS_MAX && !self.same_voters() {
                    // The simulation changes members one group at a time
                    // (ferrokv changes every group): no member may be a
                    // voter of every group, so none can lead them all.
                    self.note(format!(
                        "no member serves with member {id} broken; the groups' voters differ"
                    ));
                    break;
                }
                if round == CONVERGE_ROUNDS_MAX {
                    return Err(format!(
                        "no member serves after {CONVERGE_ROUNDS_MAX} rounds with member \
                         {id}'s log failed (disk full) and every other member up"
                    ));
                }
                round += 1;
                self.converge_round()?;
            }
            self.note(format!("a member serves with member {id} broken"));
        }
        for m in 0..self.members.len() {
            if self.broken(m) || self.members[m].logs.iter().any(|l| l.disk.full) {
                // The operator frees the space and restarts it.
                self.crash(m);
                self.note(format!("restart member {}", self.members[m].id));
                self.start(m)?;
            }
        }
        for round in 0..CONVERGE_ROUNDS_MAX {
            self.converge_round()?;
            if round >= 20 && self.agreed() {
                return self.check_final();
            }
        }
        let mut state = String::new();
        for g in 0..self.opts.groups {
            for m in 0..self.members.len() {
                if !self.members[m].up {
                    continue;
                }
                let id = self.members[m].id;
                let c = self.core(m, g);
                state += &format!(
                    "\n  group {g} member {id}: {:?} commit {} applied {} last {} voters {:?} \
                     learners {:?}",
                    c.role(),
                    c.commit_index(),
                    c.applied_index(),
                    c.last_index(),
                    c.voters(),
                    c.learners()
                );
            }
        }
        Err(format!(
            "no agreement after {CONVERGE_ROUNDS_MAX} rounds with every member up and \
             connected:{state}"
        ))
    }

    /// One round of convergence: a tick per member, then everything in
    /// flight arrives and every write syncs, until quiet.
    fn converge_round(&mut self) -> Result<(), String> {
        self.step += 1;
        for m in 0..self.members.len() {
            self.tick(m)?;
        }
        // Everything in flight arrives, every write syncs, until quiet.
        for _ in 0..50 {
            let envs: Vec<Envelope> = std::mem::take(&mut self.net);
            let quiet = envs.is_empty();
            for env in envs {
                self.hand(env);
            }
            let mut busy = false;
            for m in 0..self.members.len() {
                for g in 0..self.opts.groups {
                    let log = &self.members[m].logs[g];
                    busy |= !log.inbox.is_empty() || log.writing.is_some() || log.ticks > 0;
                    self.drive(m, g)?;
                    self.sync(m, g)?;
                }
            }
            // Leaders start (no new writes): a write raft dropped
            // leaves a hole only a marker voids.
            for m in 0..self.members.len() {
                busy |= self.members[m].up
                    && self.members[m].leading.as_ref().is_none_or(|l| !l.serving)
                    && (0..self.opts.groups).all(|g| self.role(m, g).leader);
                self.lead(m);
            }
            self.resume()?;
            self.settle();
            if quiet && !busy {
                break;
            }
        }
        Ok(())
    }

    /// Every group has the same voters (as its newest leader sees them).
    fn same_voters(&self) -> bool {
        let sets: Vec<Option<Vec<u64>>> = (0..self.opts.groups)
            .map(|g| {
                self.configuration(g).map(|(l, _)| {
                    let mut v = self.core_ref(l, g).voters();
                    v.sort_unstable();
                    v
                })
            })
            .collect();
        sets.iter().all(|s| s.is_some() && *s == sets[0])
    }

    /// The member leading group `g` (the newest term's, if an old leader
    /// has not heard of it yet), and the group's members as it sees them.
    fn configuration(&self, g: usize) -> Option<(usize, Vec<usize>)> {
        let l = (0..self.members.len())
            .filter(|m| self.members[*m].up && self.role(*m, g).leader)
            .max_by_key(|m| self.role(*m, g).term)?;
        let mut ids = self.core_ref(l, g).voters();
        ids.extend(self.core_ref(l, g).learners());
        let ms = (0..self.members.len())
            .filter(|m| ids.contains(&self.members[*m].id))
            .collect();
        Some((l, ms))
    }

    /// Every group has one leader all its members follow, and every member
    /// has applied everything committed. Members outside a group's
    /// configuration (removed from it) do not count for it.
    fn agreed(&mut self) -> bool {
        (0..self.opts.groups).all(|g| {
            let Some((l, ms)) = self.configuration(g) else {
                return false;
            };
            let lead = self.core(l, g).role();
            let commit = self.core(l, g).commit_index();
            ms.iter().all(|m| {
                if !self.members[*m].up {
                    return false;
                }
                let c = self.core(*m, g);
                let r = c.role();
                r.term == lead.term
                    && r.leader_id == lead.leader_id
                    && (r.leader == (*m == l))
                    && c.commit_index() == commit
                    && c.applied_index() == commit
            })
        })
    }

    /// Every member in every group's configuration sees the same visible
    /// revision; at or below it every write is whole in every group it
    /// touched or in none (a void one), and every acknowledged write is
    /// there at its revision with its value. `hist` and `logs`: each
    /// group's uncompacted history and applied log.
    fn check_writes(
        &self,
        hist: &[ShardState],
        logs: &[BTreeMap<u64, (u64, Vec<u8>)>],
    ) -> Result<(), String> {
        let mut everywhere: Option<BTreeSet<usize>> = None;
        for g in 0..self.opts.groups {
            let (_, ms) = self
                .configuration(g)
                .ok_or(format!("group {g}: no leader after agreement"))?;
            let ms: BTreeSet<usize> = ms.into_iter().collect();
            everywhere = Some(match everywhere {
                None => ms,
                Some(e) => e.intersection(&ms).copied().collect(),
            });
        }
        let everywhere = everywhere.unwrap_or_default();
        let mut visible = None;
        for m in &everywhere {
            let v = self.members[*m].seq.visible();
            match visible {
                None => visible = Some((v, *m)),
                Some((w, o)) if w != v => {
                    return Err(format!(
                        "members {} and {} see revisions visible up to {w} and {v}",
                        self.members[o].id, self.members[*m].id
                    ))
                }
                Some(_) => {}
            }
        }
        let Some((visible, _)) = visible else {
            return Ok(());
        };
        let acked: BTreeSet<usize> = self.acked_txns.iter().copied().collect();
        let states: Vec<&ShardState> = hist.iter().collect();
        // Reads at a revision use no sequencer state.
        let seq = Sequencer::new(self.opts.groups as u32);
        // Writes known to be in the history (whole, at or below the visible
        // revision).
        let mut kept = Vec::new();
        // Each revision's last write record in each group's log: a later
        // one at the same revision follows a marker that voided the first.
        let written: Vec<BTreeMap<i64, (u64, &[u8])>> = logs
            .iter()
            .map(|l| {
                l.iter()
                    .filter_map(|(i, (_, d))| match Record::decode(d) {
                        Ok(Record::Write { rev, .. }) => Some((rev, (*i, d.as_slice()))),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        for (t, w) in self.txns.iter().enumerate() {
            if let Some(rev) = w.rev {
                // Its own record, not another's at the same revision (a
                // stale leader's, voided, may look alike), and in the store.
                // A revoke's empty part in its lease's group leaves no trace
                // in a store (the lease tables are checked instead).
                let record = Record::Write {
                    rev,
                    parts: w.parts.clone(),
                }
                .encode();
                let held = w
                    .parts
                    .iter()
                    .filter(|p| !p.ops.is_empty())
                    .map(|p| {
                        let g = p.shard as usize;
                        Ok(written[g].get(&rev).map(|w| w.1) == Some(record.as_slice())
                            && txn::held(states[g], p, rev)?)
                    })
                    .collect::<Result<Vec<bool>, String>>()?;
                let whole = held.iter().all(|h| *h);
                if acked.contains(&t) && !(whole && rev <= visible) {
                    return Err(format!(
                        "t{t} at revision {rev} was acknowledged, but its parts held are \
                         {held:?} with {visible} visible"
                    ));
                }
                if rev <= visible && !whole && held.iter().any(|h| *h) {
                    return Err(format!(
                        "t{t} at revision {rev} (visible: {visible}) is in some of its groups \
                         only: {held:?}"
                    ));
                }
                // Known to be this one's (an identical write of another
                // leader's at the same revision is not): each group's part
                // acknowledged at the index of that revision's last write.
                let known = w.groups.iter().all(|g| {
                    written[*g]
                        .get(&rev)
                        .is_some_and(|(i, _)| w.committed_at.contains(&(*g, *i)))
                });
                if whole && known && rev <= visible {
                    kept.push(t);
                }
            }
            if !acked.contains(&t) {
                continue;
            }
            if w.header < w.floor {
                return Err(format!(
                    "t{t} answered at revision {}, below {} acknowledged before it was made",
                    w.header, w.floor
                ));
            }
            if w.op != Op::Txn {
                continue;
            }
            // Ordered right after the revision before its own, or at the
            // state its header names.
            let at = w.rev.map_or(w.header, |r| r - 1);
            let view = txn::SimView::at(states.clone(), &seq, at);
            txn::check_answer(
                &view,
                &w.request,
                w.succeeded,
                &w.responses,
                w.rev.is_some(),
            )
            .map_err(|e| format!("t{t} {:?}: {e}", w.request))?;
        }
        self.check_leases(hist, logs, visible, &acked, &kept)
    }

    /// Leases against the converged history: a revoke deleted, at its one
    /// revision, exactly the keys attached to its lease before it, and
    /// after it no key is attached to the lease (nor later put with it); no
    /// live key is attached to a lease outside its table; an acknowledged
    /// grant is in its group's log, and its lease still in the table
    /// unless a revoke of it is there too; an acknowledged revoke's lease
    /// is in no table.
    fn check_leases(
        &self,
        hist: &[ShardState],
        logs: &[BTreeMap<u64, (u64, Vec<u8>)>],
        visible: i64,
        acked: &BTreeSet<usize>,
        kept: &[usize],
    ) -> Result<(), String> {
        let n = self.opts.groups as u32;
        let table = |id: i64| &hist[lease_shard(id, n) as usize].leases;
        let attached = |id: i64, at: i64| -> Result<Vec<String>, String> {
            let mut keys = Vec::new();
            if at <= 0 {
                return Ok(keys);
            }
            for st in hist {
                let rs = rows(&st.store, at).map_err(|e| format!("history at {at}: {e}"))?;
                keys.extend(rs.into_iter().filter(|r| r.5 == id).map(|r| r.0));
            }
            keys.sort_unstable();
            Ok(keys)
        };
        // The revision from which each lease is revoked for good.
        let mut gone: BTreeMap<i64, i64> = BTreeMap::new();
        for &t in kept {
            let w = &self.txns[t];
            let (Op::Revoke { id, .. }, Some(rev)) = (w.op, w.rev) else {
                continue;
            };
            let mut deleted: Vec<String> = w
                .parts
                .iter()
                .flat_map(|p| &p.ops)
                .filter_map(|op| match op {
                    WriteOp::Delete { key } => Some(String::from_utf8_lossy(key).into_owned()),
                    WriteOp::Put { .. } => None,
                })
                .collect();
            deleted.sort_unstable();
            let before = attached(id, rev - 1)?;
            if before != deleted {
                return Err(format!(
                    "t{t}: the revoke of lease {id:x} at {rev} deleted {deleted:?}, but \
                     {before:?} were attached to it"
                ));
            }
            let after = attached(id, rev)?;
            if !after.is_empty() {
                return Err(format!(
                    "t{t}: {after:?} still attached to lease {id:x} after its revoke at {rev}"
                ));
            }
            gone.insert(id, rev);
        }
        for &t in acked {
            let w = &self.txns[t];
            match w.op {
                Op::Revoke { id, .. } => {
                    if table(id).contains(id) {
                        return Err(format!(
                            "t{t}: lease {id:x} was revoked (acknowledged), but it is in the table"
                        ));
                    }
                    if w.rev.is_none() {
                        if !attached(id, w.header)?.is_empty() {
                            return Err(format!(
                                "t{t}: the revoke of lease {id:x} deleted nothing, but keys \
                                 were attached to it at {}",
                                w.header
                            ));
                        }
                        gone.entry(id).or_insert(w.header);
                    }
                }
                Op::Grant { id, ttl } => {
                    let g = lease_shard(id, n) as usize;
                    let mut recs = records(&logs[g]);
                    if !recs.any(|r| r == Record::LeaseGrant { id, ttl }) {
                        return Err(format!(
                            "t{t}: the grant of lease {id:x} was acknowledged, but group {g}'s \
                             log does not hold it"
                        ));
                    }
                    let revoked = records(&logs[g])
                        .any(|r| matches!(r, Record::LeaseRevoke { id: r, .. } if r == id));
                    if !table(id).contains(id) && !revoked {
                        return Err(format!(
                            "t{t}: lease {id:x} was granted (acknowledged) and never revoked, \
                             but it is not in the table"
                        ));
                    }
                }
                _ => {}
            }
        }
        for &t in kept {
            let w = &self.txns[t];
            let Some(rev) = w.rev else { continue };
            for op in w.parts.iter().flat_map(|p| &p.ops) {
                if let WriteOp::Put { key, lease, .. } = op {
                    if gone.get(lease).is_some_and(|g| *g < rev) {
                        return Err(format!(
                            "t{t}: {} put at {rev} with lease {lease:x}, revoked at {}",
                            String::from_utf8_lossy(key),
                            gone[lease]
                        ));
                    }
                }
            }
        }
        for st in hist {
            let rs = if visible > 0 {
                rows(&st.store, visible).map_err(|e| format!("history at {visible}: {e}"))?
            } else {
                Vec::new()
            };
            for r in rs {
                // A revoke above the visible revision is undone by the next
                // start's marker (none may come: the groups' voters may
                // differ at the end).
                let pending = |id: i64| {
                    hist[lease_shard(id, n) as usize]
                        .revoked_above(visible)
                        .any(|r| r.id == id)
                };
                if r.5 != 0 && !table(r.5).contains(r.5) && !pending(r.5) {
                    return Err(format!(
                        "{} is attached to lease {:x}, which is in no table",
                        r.0, r.5
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_final(&mut self) -> Result<(), String> {
        // Converged, every member has its logs' compactions in effect; a
        // shard compacts its store at its next apply or snapshot after
        // that (`Shard::settle_compaction`), which may not have come.
        for m in 0..self.members.len() {
            let member = &mut self.members[m];
            let in_effect = member.seq.compact_revision();
            for l in member.logs.iter_mut() {
                if let Some(st) = l.state.as_mut() {
                    st.settle_compaction(in_effect);
                }
            }
        }
        let mut hists = Vec::new();
        let mut logs = Vec::new();
        for g in 0..self.opts.groups {
            let Some((l, ms)) = self.configuration(g) else {
                return Err(format!("group {g}: no leader after agreement"));
            };
            let first = self.members[l].logs[g].applied.clone();
            // Above what is visible a leader may still hold a write raft
            // dropped, until a start's marker voids it (no member may
            // lead every group by now: their memberships differ).
            let at = ms
                .iter()
                .map(|m| self.members[*m].seq.visible())
                .min()
                .unwrap_or(0);
            let hist = history(g, &first)?;
            // The newest compaction and the revision past which it is in
            // effect.
            let (compact, compact_at) = records(&first)
                .filter_map(|r| match r {
                    Record::Compact { rev, at } => Some((rev, at)),
                    _ => None,
                })
                .max()
                .unwrap_or((0, 0));
            // At and above the compaction point every member answers as
            // the uncompacted history (sampled revisions, the visible one
            // always); below it every member refuses.
            // A member outside another group's configuration may see
            // less visible than the compaction, which was visible on its
            // leader (so nothing at or below it is held ahead of the log).
            let from = compact.max(1);
            let to = at.max(compact);
            let stride = ((to - from) / 16).max(1);
            let mut revs: Vec<i64> = (from..to).step_by(stride as usize).collect();
            revs.push(to);
            let mut want = Vec::new();
            for r in &revs {
                want.push(if *r > 0 {
                    rows(&hist.store, *r).map_err(|e| format!("group {g} history at {r}: {e}"))?
                } else {
                    Vec::new()
                });
            }
            let leases = lease_table(&hist);
            for m in ms {
                let member = &self.members[m];
                self.check
                    .all_acked_in(g, member.id, &member.logs[g].applied)?;
                if member.logs[g].applied != first {
                    return Err(format!(
                        "group {g}: members {} and {} applied different logs",
                        self.members[l].id, member.id
                    ));
                }
                let st = member.logs[g]
                    .state
                    .as_ref()
                    .ok_or("a member that is up has its state")?;
                // Not in effect only on a member that has not passed its
                // `at` (one outside another group's configuration sees
                // less): then it still holds the history.
                let pending = member.seq.compact_revision() < compact;
                if pending && member.seq.visible() > compact_at {
                    return Err(format!(
                        "group {g}: member {} is at {}, past {compact_at}, without the \
                         compaction at {compact} in effect",
                        member.id,
                        member.seq.visible()
                    ));
                }
                let compact = if pending {
                    st.store.compact_revision()
                } else {
                    compact
                };
                if st.store.compact_revision() != compact {
                    return Err(format!(
                        "group {g}: member {}'s store is compacted at {}, its log at {compact} \
                         (in effect here: {}, pending {:?}, its log's compactions {:?})",
                        member.id,
                        st.store.compact_revision(),
                        member.seq.compact_revision(),
                        st.pending_compaction(),
                        records(&member.logs[g].applied)
                            .filter(|r| matches!(r, Record::Compact { .. }))
                            .collect::<Vec<_>>()
                    ));
                }
                for r in 1..compact {
                    if st.store.range(b"\0", b"\0", r, 0, false, false)
                        != Err(ferrokv_mvcc::Error::Compacted)
                    {
                        return Err(format!(
                            "group {g}: member {} answers at {r}, below its compaction at \
                             {compact}",
                            member.id
                        ));
                    }
                }
                for (r, want) in revs.iter().zip(&want) {
                    let mine = if *r > 0 {
                        rows(&st.store, *r)
                            .map_err(|e| format!("group {g}: member {} at {r}: {e}", member.id))?
                    } else {
                        Vec::new()
                    };
                    if mine != *want {
                        return Err(format!(
                            "group {g}: at revision {r} the store of member {} differs from \
                             the history (compacted at {compact}):\n{want:?}\n{mine:?}",
                            member.id
                        ));
                    }
                }
                let mine = lease_table(st);
                if mine != leases {
                    return Err(format!(
                        "group {g}: member {}'s lease table {mine:?}, the log's {leases:?}",
                        member.id
                    ));
                }
            }
            hists.push(hist);
            logs.push(first);
        }
        self.check_writes(&hists, &logs)?;
        self.note(format!(
            "converged: {} proposals, {} acknowledged, {} writes acknowledged, {} elections, \
             {} writes rolled back",
            self.proposals.len(),
            self.check.acked.len(),
            self.acked_txns.len(),
            self.check.elections,
            self.rolled_back
        ));
        Ok(())
    }
}

/// Every group's state of a serving member, each with the term it leads.
fn leader_states<'a>(
    logs: &'a mut [Log],
    terms: &[u64],
) -> Result<Vec<(&'a mut ShardState, u64)>, String> {
    logs.iter_mut()
        .enumerate()
        .map(|(g, l)| l.state.as_mut().map(|st| (st, terms[g])))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "a serving member has every group's state".to_string())
}

/// A committed entry into the shard's real state machine; what it asks of
/// the member must not be that it cannot keep its state.
fn apply_state(
    st: &mut ShardState,
    member: &mut Member,
    g: usize,
    index: u64,
    term: u64,
    data: &[u8],
) -> Result<(), String> {
    let rec = Record::decode(data).map_err(|e| {
        format!(
            "member {} group {g}: entry {index} is undecodable: {e}",
            member.id
        )
    })?;
    let visible = member.seq.visible();
    let out = st.apply_committed(index, term, &rec, visible);
    effects(&out, member, g)?;
    settle(st, member, g)
}

/// The store compacts once the member has the compaction in effect, as
/// the shard does after its effects (`Shard::settle_compaction`); it must
/// keep the latest state and the state at the compaction.
fn settle(st: &mut ShardState, member: &Member, g: usize) -> Result<(), String> {
    let Some(rev) = st.pending_compaction() else {
        return Ok(());
    };
    let in_effect = member.seq.compact_revision();
    keeps_reads(st, rev, |st| st.settle_compaction(in_effect))
        .map(|_| ())
        .map_err(|e| format!("member {} group {g}: {e}", member.id))
}

/// Carries out what a group's state machine asks of its member (as the
/// shard actor does): visibility, a restart of the leader start; a member
/// asked to stop because it cannot keep its state fails the run.
fn effects(out: &[Effect], member: &mut Member, g: usize) -> Result<(), String> {
    let shard = g as u32;
    for e in out {
        match e {
            Effect::Written { rev, participants } => {
                member.seq.written(shard, *rev, participants);
            }
            Effect::Marker { id, cut, through } => {
                member.seq.marker(shard, *id, *cut, *through);
            }
            Effect::MarkerFolded { id, cut, through } => {
                member.seq.marker_folded(shard, *id, *cut, *through);
            }
            Effect::Installed { rev } => member.seq.shard_snapshot(shard, *rev),
            Effect::Compacted { rev } => member.seq.compacted(*rev),
            Effect::CompactionApplied { rev, at } => {
                member.seq.compaction_applied(shard, *rev, *at)
            }
            Effect::Restart(_) => member.leading = None,
            Effect::Broken(why) => return Err(format!("member {} group {g}: {why}", member.id)),
        }
    }
    let v = member.seq.visible();
    if v < member.visible_max {
        return Err(format!(
            "member {}: the visible revision went back from {} to {v}",
            member.id, member.visible_max
        ));
    }
    member.visible_max = v;
    Ok(())
}

/// A key of a store: key, value, create and mod revisions, version,
/// lease.
type Row = (String, String, i64, i64, i64, i64);

/// Every key of `store` at revision `at` (0: latest; a revision past the
/// store's last is its latest state, as revisions are global).
fn rows(store: &Store, at: i64) -> Result<Vec<Row>, ferrokv_mvcc::Error> {
    Ok(store
        .range(b"\0", b"\0", at, 0, false, false)?
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
        })
        .collect())
}

/// Runs `f` (a compaction at `rev`), checking that it removed nothing a
/// read sees at or after `rev`: the latest version of every live key, and
/// the state at `rev` itself.
fn keeps_reads<T>(
    st: &mut ShardState,
    rev: i64,
    f: impl FnOnce(&mut ShardState) -> T,
) -> Result<T, String> {
    let before = (rows(&st.store, 0), rows(&st.store, rev));
    let out = f(st);
    let after = (rows(&st.store, 0), rows(&st.store, rev));
    if before.0 != after.0 {
        return Err(format!(
            "compaction at {rev} changed the latest state: {:?} became {:?}",
            before.0, after.0
        ));
    }
    if before.1.is_ok() && before.1 != after.1 {
        return Err(format!(
            "compaction at {rev} changed the state at {rev}: {:?} became {:?}",
            before.1, after.1
        ));
    }
    Ok(out)
}

/// The group's committed history without its compactions: a fresh state
/// machine fed the applied log with every `Record::Compact` left out, so
/// answers and revokes are checked at any revision, and the members'
/// compacted stores against it at and above their compaction point.
fn history(g: usize, applied: &BTreeMap<u64, (u64, Vec<u8>)>) -> Result<ShardState, String> {
    let mut st = ShardState::new(g as u32, Store::new(), LeaseTable::new(1));
    for (index, (term, data)) in applied {
        let rec = Record::decode(data).map_err(|e| format!("group {g} entry {index}: {e}"))?;
        if matches!(rec, Record::Compact { .. }) {
            st.covers(*index);
            continue;
        }
        for e in st.apply_committed(*index, *term, &rec, 0) {
            if let Effect::Broken(why) = e {
                return Err(format!(
                    "group {g}: the history refused entry {index}: {why}"
                ));
            }
        }
    }
    Ok(st)
}

/// The records of an applied log.
fn records(applied: &BTreeMap<u64, (u64, Vec<u8>)>) -> impl Iterator<Item = Record> + '_ {
    applied.values().filter_map(|(_, d)| Record::decode(d).ok())
}

/// A lease table as (id, TTL), ascending.
fn lease_table(st: &ShardState) -> Vec<(i64, i64)> {
    st.leases
        .ids()
        .into_iter()
        .map(|id| (id, st.leases.get(id).map_or(0, |l| l.ttl)))
        .collect()
}
