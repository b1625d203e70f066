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

use ferrokv_mvcc::{Event, RangeResult, Revision, SnapshotCut, SnapshotImage, Store, WriteOp};
use ferrokv_raft::{Apply, Role, ShardLog};
use futures_channel::oneshot;
use glommio::sync::Semaphore;

use crate::auth::{AuthError, AuthStore};
use crate::auth_view::{AuthRecord, AuthView};
use crate::leader::Leadership;
use crate::lease::LeaseTable;
use crate::membership::{Change, MemberChanges};
use crate::record::Record;
use crate::sequencer::Sequencer;
use crate::state::{Effect, ShardState};
use crate::{Engine, Error};

/// A follower fetches a snapshot file in pieces of this size (one peer
/// call each, well under the transport's frame bound).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A snapshot file larger than this is refused (a damaged or hostile peer
/// cannot fill the disk).
const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

/// How many times a snapshot waits for what its shard holds to become
/// visible before it gives up for this round.
const SNAPSHOT_SETTLE_ROUNDS_MAX: usize = 100;
/// Keys a snapshot copies before it rests and lets this core's other
/// tasks (the shard's writes) run: about half a millisecond of copying.
/// Copied whole, 100,000 keys held the shard's writes (and, through the
/// visible revision, every shard's) for about 200 ms.
const SNAPSHOT_PART_KEYS: usize = 256;
/// The shortest rest between two parts of a snapshot's copy.
const SNAPSHOT_PART_REST_MIN: std::time::Duration = std::time::Duration::from_micros(100);
/// Cuts a snapshot begins before it copies the store whole under the
/// write lock (each began again because a compaction overtook it).
const SNAPSHOT_CUT_ATTEMPTS: usize = 3;

/// How long one settle round waits for visibility, outside the lock.
const SNAPSHOT_SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

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
    /// Take the write lock for one coordinator; its ops follow on the
    /// channel. The reply is the term this member leads the group in (None:
    /// it does not lead it, and the lock is released).
    /// A fence for reading only (`false`: a backup) is granted on any
    /// member, with term 0.
    Fence(async_channel::Receiver<FencedOp>, Reply<Option<u64>>, bool),
    Status(Reply<ShardStatus>),
    /// History for watchers; needs no lock (only visible revisions are asked).
    Events(EventsArgs, Reply<EventsResult>),
    /// Grant a lease owned by this shard; the reply (the TTL granted, and
    /// the last revision assigned when the lease entered the table) comes
    /// once the grant is durable.
    LeaseGrant {
        id: i64,
        ttl: i64,
        reply: Reply<Result<(i64, i64), Error>>,
    },
    /// An auth change or token (shard 0, on the leader): the reply, once
    /// committed and applied here, is the auth revision it left, or the
    /// refusal every member's apply gave.
    Auth(AuthRecord, Reply<Result<u64, Error>>),
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
    /// Leader start: whether this shard's group is led here in `term` with
    /// an entry of that term committed and nothing in flight (every entry
    /// of the log committed and applied, no proposal queued).
    TermCommitted(u64, Reply<bool>),
    /// Leader start: log the marker (in `term`) and reply once committed.
    Marker {
        id: u64,
        cut: i64,
        through: i64,
        term: u64,
        reply: Reply<Result<(), Error>>,
    },
    /// Leader start: every lease gets its full TTL from now.
    PromoteLeases(Reply<()>),
    /// raft's ReadIndex on this group (the commit index a quorum confirmed).
    ReadIndex(Reply<Result<u64, Error>>),
    /// Hand this group's leadership to the member (only a leader acts).
    TransferLeader(u64),
    /// Propose a membership change in this group; the reply comes once it
    /// took effect here.
    ConfChange(Change, Reply<Result<(), Error>>),
    /// The group's voters.
    Voters(Reply<Vec<u64>>),
    /// The group's learners and, on its leader, how far each one's log
    /// matches (matched, last index).
    Learners(Reply<Vec<LearnerProgress>>),
    /// Bytes of this shard's snapshot file at raft index `index` from
    /// `offset` (at most `SNAPSHOT_CHUNK_BYTES`; fewer at the end), for a
    /// follower installing it. Fails once the file is at another index.
    SnapshotChunk {
        index: u64,
        offset: u64,
        reply: Reply<Result<Vec<u8>, Error>>,
    },
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
        /// The term the coordinator writes in (this member leads it).
        term: u64,
        reply: Reply<Result<Vec<Event>, Error>>,
    },
    /// Whether this shard owns the lease now.
    LeaseExists(i64, Reply<bool>),
    /// Keys attached to the lease in the latest state.
    KeysWithLease(i64, Reply<Vec<Vec<u8>>>),
    /// The newest revision this shard holds (its lease revokes included).
    LastRevision(Reply<i64>),
    /// This shard's part of backup number `n`, cut at revision `upto`
    /// (visible), copied whole under the fence if the flag says so.
    Backup(u64, i64, bool, Reply<Result<BackupPart, String>>),
    /// Submit the records and release the lock; the reply comes once
    /// committed. `revoke` leaves the lease table at submission, so no
    /// write fenced after this one can attach a key to it.
    Commit {
        records: Vec<Record>,
        revoke: Option<i64>,
        term: u64,
        reply: Reply<Result<(), Error>>,
    },
    /// Nothing was written here: release the lock.
    Release,
}

/// A learner of a group and, on its leader, (matched, last index).
pub type LearnerProgress = (u64, Option<(u64, u64)>);

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

pub use crate::state::MarkerMeta;

/// A shard snapshot's meta: [`encode_lease_meta`]'s layout with version 3
/// and, before the pairs, the last leader-start marker the shard applied
/// (id u64, cut i64, through i64, little-endian): a marker the snapshot
/// folded in still counts as applied by this shard, void range and all.
pub fn encode_shard_meta(marker: MarkerMeta, leases: &[(i64, i64)]) -> Vec<u8> {
    let mut out = encode_lease_meta(leases);
    out[0] = SHARD_META_V3;
    let mut m = Vec::with_capacity(24);
    m.extend_from_slice(&marker.0.to_le_bytes());
    m.extend_from_slice(&marker.1.to_le_bytes());
    m.extend_from_slice(&marker.2.to_le_bytes());
    out.splice(1..1, m);
    out
}

/// A group's raft membership at a snapshot's index: (voters, learners).
pub type ConfMeta = (Vec<u64>, Vec<u64>);

/// A shard snapshot's meta, version 4: version 3's layout with, after the
/// marker, the group's membership at the snapshot's index, as
/// `len u32 | voters (u32 count, u64s) | learners (u32 count, u64s) |
/// change`: raft's configuration (a member that stops between installing
/// the file and logging it starts with it) and the last membership change
/// the group applied, if any (a member brought up to date by the snapshot
/// learns the members it folded in).
pub fn encode_shard_meta_v4(
    marker: MarkerMeta,
    conf: &ConfMeta,
    change: Option<&Change>,
    leases: &[(i64, i64)],
) -> Vec<u8> {
    let mut out = encode_shard_meta(marker, leases);
    out[0] = SHARD_META_V4;
    let mut section = Vec::new();
    for ids in [&conf.0, &conf.1] {
        section.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            section.extend_from_slice(&id.to_le_bytes());
        }
    }
    section.extend_from_slice(&change.map(Change::encode).unwrap_or_default());
    let mut m = Vec::with_capacity(4 + section.len());
    m.extend_from_slice(&(section.len() as u32).to_le_bytes());
    m.extend_from_slice(&section);
    out.splice(25..25, m);
    out
}

/// A shard snapshot's meta, version 5: version 4's layout with, after the
/// membership section, `len u32 | auth store` (len 0: none, every shard
/// but 0): the auth store as of the snapshot's index, which shard 0's log
/// builds ([`crate::auth_view`]).
pub fn encode_shard_meta_v5(
    marker: MarkerMeta,
    conf: &ConfMeta,
    change: Option<&Change>,
    auth: Option<&AuthStore>,
    leases: &[(i64, i64)],
) -> Vec<u8> {
    let mut out = encode_shard_meta_v4(marker, conf, change, leases);
    out[0] = SHARD_META_V5;
    let at = 29 + meta_section_len(&out[1..]).unwrap_or(0);
    let auth = auth.map(AuthStore::encode).unwrap_or_default();
    let mut a = Vec::with_capacity(4 + auth.len());
    a.extend_from_slice(&(auth.len() as u32).to_le_bytes());
    a.extend_from_slice(&auth);
    out.splice(at..at, a);
    out
}

/// Where a version 5 meta's auth section starts in `body` (the meta
/// past its version byte) and how long it is (checked to fit).
fn auth_section(body: &[u8]) -> Result<(usize, usize), String> {
    let at = 28 + meta_section_len(body)?;
    let cut = || "snapshot meta: auth store cut short".to_string();
    let len = body.get(at..at + 4).ok_or_else(cut)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if body.len() - (at + 4) < len {
        return Err(cut());
    }
    Ok((at + 4, len))
}

/// The auth store in a snapshot's meta (none before version 5, and in
/// every shard but 0).
pub fn decode_auth(meta: &[u8]) -> Result<Option<AuthStore>, String> {
    let Some((&SHARD_META_V5, body)) = meta.split_first() else {
        return Ok(None);
    };
    match auth_section(body)? {
        (_, 0) => Ok(None),
        (at, len) => AuthStore::decode(&body[at..at + len])
            .map(Some)
            .map_err(|e| format!("snapshot meta: auth store: {e}")),
    }
}

/// The membership section of a version 4 meta: (voters, learners) and the
/// change bytes (empty for none). None before version 4.
fn membership_meta(meta: &[u8]) -> Result<Option<(ConfMeta, &[u8])>, String> {
    let Some((&(SHARD_META_V4 | SHARD_META_V5), body)) = meta.split_first() else {
        return Ok(None);
    };
    let len = meta_section_len(body)?;
    let mut rest = &body[28..28 + len];
    let cut = || "snapshot meta: membership cut short".to_string();
    let mut lists = Vec::with_capacity(2);
    for _ in 0..2 {
        if rest.len() < 4 {
            return Err(cut());
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < n.saturating_mul(8) {
            return Err(cut());
        }
        let ids = rest[..n * 8]
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect::<Vec<u64>>();
        rest = &rest[n * 8..];
        lists.push(ids);
    }
    let learners = lists.pop().unwrap_or_default();
    let voters = lists.pop().unwrap_or_default();
    Ok(Some(((voters, learners), rest)))
}

/// The membership change in a snapshot's meta (none before version 4).
pub fn decode_change(meta: &[u8]) -> Result<Option<Change>, String> {
    match membership_meta(meta)? {
        Some((_, c)) if !c.is_empty() => Change::decode(c).map(Some),
        _ => Ok(None),
    }
}

/// The group's raft membership in a snapshot's meta (none before
/// version 4).
pub fn decode_conf(meta: &[u8]) -> Result<Option<ConfMeta>, String> {
    Ok(membership_meta(meta)?.map(|(conf, _)| conf))
}

/// Length of a version 4 meta's membership section (checked to fit).
fn meta_section_len(body: &[u8]) -> Result<usize, String> {
    if body.len() < 28 {
        return Err("snapshot meta cut short".to_string());
    }
    let len = u32::from_le_bytes([body[24], body[25], body[26], body[27]]) as usize;
    if body.len() < 28 + len {
        return Err("snapshot meta: membership cut short".to_string());
    }
    Ok(len)
}

/// The marker in a snapshot's meta ((0, 0, 0) for older layouts; version 2
/// kept only the id).
pub fn decode_marker(meta: &[u8]) -> MarkerMeta {
    let int = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        a
    };
    match meta.split_first() {
        Some((&SHARD_META_V3 | &SHARD_META_V4 | &SHARD_META_V5, body)) if body.len() >= 24 => (
            u64::from_le_bytes(int(body)),
            i64::from_le_bytes(int(&body[8..])),
            i64::from_le_bytes(int(&body[16..])),
        ),
        Some((&SHARD_META_V2, body)) if body.len() >= 8 => (u64::from_le_bytes(int(body)), 0, 0),
        _ => (0, 0, 0),
    }
}

const SHARD_META_V2: u8 = 2;
const SHARD_META_V3: u8 = 3;
const SHARD_META_V4: u8 = 4;
const SHARD_META_V5: u8 = 5;

/// Reads [`encode_lease_meta`] and [`encode_shard_meta`]; empty meta (a
/// snapshot without leases) is no leases.
pub fn decode_lease_meta(meta: &[u8]) -> Result<Vec<(i64, i64)>, String> {
    let Some((&version, body)) = meta.split_first() else {
        return Ok(Vec::new());
    };
    let body = match version {
        SHARD_META_V2 if body.len() >= 8 => &body[8..],
        SHARD_META_V3 if body.len() >= 24 => &body[24..],
        SHARD_META_V4 => &body[28 + meta_section_len(body)?..],
        SHARD_META_V5 => {
            let (at, len) = auth_section(body)?;
            &body[at + len..]
        }
        _ => body,
    };
    let known = matches!(
        version,
        LEASE_META_V1 | SHARD_META_V2 | SHARD_META_V3 | SHARD_META_V4 | SHARD_META_V5
    );
    if !known || body.len() % 16 != 0 {
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
    pub proposals_pending: usize,
    pub proposals_failed: u64,
}

pub struct Shard {
    pub id: u32,
    /// The store and leases, and how the log changes them.
    pub state: RefCell<ShardState>,
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
    /// Grants in the log but not yet durable (id -> TTL): a second grant of
    /// the id waits for the first, and a snapshot includes them.
    granting: RefCell<HashMap<i64, i64>>,
    /// Per grant in flight whose record applied: the last revision
    /// assigned when the lease entered the table (what the grant answers).
    granted_at: RefCell<HashMap<i64, i64>>,
    /// Notified when a grant in `granting` is done (committed or not).
    granted: event_listener::Event,
    leadership: Arc<Leadership>,
    /// Raft index of the snapshot file at `snapshot_path` (0: none).
    snapshot_index: Cell<u64>,
    /// A snapshot from the leader is being fetched.
    fetching: Cell<bool>,
    peers: crate::Peers,
    /// The member changes every group of this member applies.
    changes: Arc<MemberChanges>,
    /// A `catch_up` of this shard is running.
    pub(crate) catching_up: Cell<bool>,
    /// The member's auth state, which shard 0's log builds.
    pub(crate) auth: Arc<AuthView>,
    /// One auth proposal at a time: each is checked against the store the
    /// ones before it left.
    auth_turn: Semaphore,
    /// What applying recent auth records gave, by raft index, for their
    /// proposers (bounded: see [`AUTH_RESULTS_MAX`]).
    auth_results: RefCell<std::collections::VecDeque<(u64, Result<(), AuthError>)>>,
}

/// Auth results kept for proposers: one is in flight at a time, so a
/// few suffice to cover records of earlier leaders committed alongside.
const AUTH_RESULTS_MAX: usize = 64;

/// The shard as its raft log's state machine.
pub struct Applier(pub std::rc::Weak<Shard>);

impl Apply for Applier {
    fn committed(&self, index: u64, term: u64, data: &[u8]) {
        if let Some(s) = self.0.upgrade() {
            s.apply_committed(index, term, data);
        }
    }
    fn role_changed(&self, role: Role) {
        if let Some(s) = self.0.upgrade() {
            s.role_changed(role);
        }
    }
    fn snapshot_offered(&self, msg: raft::eraftpb::Message) {
        if let Some(s) = self.0.upgrade() {
            s.snapshot_offered(msg);
        }
    }
    fn conf_changed(&self, index: u64, context: &[u8]) {
        if let Some(s) = self.0.upgrade() {
            s.conf_changed(index, context);
        }
    }
    fn snapshot_wanted(&self) {
        if let Some(s) = self.0.upgrade() {
            s.snapshot_soon();
        }
    }
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        store: Store,
        log: Rc<ShardLog>,
        seq: Arc<Sequencer>,
        snapshot_path: PathBuf,
        snapshot_count: u64,
        leases: LeaseTable,
        leadership: Arc<Leadership>,
        peers: crate::Peers,
        changes: Arc<MemberChanges>,
        auth: Arc<AuthView>,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            state: RefCell::new(ShardState::new(id, store, leases)),
            log,
            lock: Semaphore::new(1),
            snapshot_lock: Semaphore::new(1),
            seq,
            snapshot_path,
            snapshot_count,
            entries_since_snapshot: Cell::new(0),
            snapshotting: Cell::new(false),
            granting: RefCell::new(HashMap::new()),
            granted_at: RefCell::new(HashMap::new()),
            granted: event_listener::Event::new(),
            leadership,
            snapshot_index: Cell::new(0),
            fetching: Cell::new(false),
            peers,
            changes,
            catching_up: Cell::new(false),
            auth,
            auth_turn: Semaphore::new(1),
            auth_results: RefCell::new(std::collections::VecDeque::new()),
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
                ShardMsg::TermCommitted(term, reply) => {
                    let ok = self.log.leads_committed_term()
                        && self.log.term() == term
                        && self.log.settled();
                    let _ = reply.send(ok);
                }
                ShardMsg::Marker {
                    id,
                    cut,
                    through,
                    term,
                    reply,
                } => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(me.marker(id, cut, through, term).await);
                    })
                    .detach();
                }
                ShardMsg::ReadIndex(reply) => {
                    let log = self.log.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(log.read_index().await.map_err(log_error));
                    })
                    .detach();
                }
                ShardMsg::TransferLeader(to) => self.log.transfer_leader(to),
                ShardMsg::Voters(reply) => {
                    let _ = reply.send(self.log.voters());
                }
                ShardMsg::Learners(reply) => {
                    let progress = self
                        .log
                        .learners()
                        .into_iter()
                        .map(|id| (id, self.log.replication_of(id)))
                        .collect();
                    let _ = reply.send(progress);
                }
                ShardMsg::ConfChange(change, reply) => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let r = me
                            .log
                            .propose_conf_change(change.conf, change.id, change.encode())
                            .await
                            .map(|_| ())
                            .map_err(log_error);
                        let _ = reply.send(r);
                    })
                    .detach();
                }
                ShardMsg::SnapshotChunk {
                    index,
                    offset,
                    reply,
                } => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let _ = reply.send(me.snapshot_chunk(index, offset).await);
                    })
                    .detach();
                }
                ShardMsg::PromoteLeases(reply) => {
                    self.state.borrow_mut().leases.promote(Instant::now());
                    let _ = reply.send(());
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
                ShardMsg::Fence(ops, ack, write) => {
                    let me = self.clone();
                    glommio::spawn_local(async move { me.fenced(ops, ack, write).await }).detach();
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
                ShardMsg::Auth(rec, reply) => {
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let r = me.auth_propose(rec).await;
                        let _ = reply.send(r);
                    })
                    .detach();
                }
                ShardMsg::LeaseRenew(id, reply) => {
                    let r = self.state.borrow_mut().leases.renew(id, Instant::now());
                    let _ = reply.send(r);
                }
                ShardMsg::LeaseGet(id, reply) => {
                    let now = Instant::now();
                    let r = self
                        .state
                        .borrow()
                        .leases
                        .get(id)
                        .map(|l| (l.ttl, l.remaining_secs(now)));
                    let _ = reply.send(r);
                }
                ShardMsg::LeaseIds(reply) => {
                    let _ = reply.send(self.state.borrow().leases.ids());
                }
                ShardMsg::KeysWithLease(id, reply) => {
                    let _ = reply.send(self.state.borrow().store.keys_with_lease(id));
                }
                ShardMsg::Status(reply) => {
                    let state = self.state.borrow();
                    let store = &state.store;
                    let _ = reply.send(ShardStatus {
                        raft_term: self.log.term(),
                        raft_index: self.log.commit_index(),
                        applied_index: self.log.applied_index(),
                        db_size_bytes: store.size_bytes(),
                        keys: store.key_count(),
                        leader: self.log.is_leader(),
                        proposals_pending: self.log.proposals_pending(),
                        proposals_failed: self.log.proposals_failed(),
                    });
                }
            }
        }
    }

    pub(crate) fn range(&self, a: &RangeArgs) -> Result<RangeResult, ferrokv_mvcc::Error> {
        // At an old revision the store must answer as of the compaction in
        // effect (its tombstones gone), not only refuse below it.
        self.settle_compaction();
        self.state.borrow().store.range(
            &a.key,
            &a.range_end,
            a.rev,
            a.limit,
            a.keys_only,
            a.count_only,
        )
    }

    fn events(&self, a: &EventsArgs) -> EventsResult {
        // History as of the compaction in effect (a tombstone at it is gone).
        self.settle_compaction();
        let mut evs = self.state.borrow().store.events_with_rev(
            &a.key,
            &a.range_end,
            a.from,
            a.to,
            a.prev_kv,
        )?;
        debug_assert!(evs.windows(2).all(|w| w[0].0 < w[1].0));
        if evs.len() <= a.events_max.max(1) {
            return Ok((evs, a.to));
        }
        // Cut at a revision boundary: a revision's events stay together.
        let last = evs[a.events_max.max(1) - 1].0.main;
        evs.retain(|(r, _)| r.main <= last);
        Ok((evs, last))
    }

    async fn fenced(
        self: Rc<Self>,
        ops: async_channel::Receiver<FencedOp>,
        ack: Reply<Option<u64>>,
        write: bool,
    ) {
        let Some(permit) = self.lock().await else {
            return;
        };
        let term = if write { self.leading_term() } else { Some(0) };
        if ack.send(term).is_err() || term.is_none() {
            return;
        }
        let mut wrote: Option<(i64, u64)> = None;
        while let Ok(op) = ops.recv().await {
            match op {
                FencedOp::Range(a, reply) => {
                    let _ = reply.send(self.range(&a));
                }
                FencedOp::Apply {
                    rev,
                    first_sub,
                    ops,
                    term,
                    reply,
                } => {
                    let r = self.apply(rev, first_sub, &ops, term);
                    if r.is_ok() {
                        wrote = Some((rev, term));
                    }
                    let _ = reply.send(r);
                }
                FencedOp::LeaseExists(id, reply) => {
                    let _ = reply.send(self.lease_exists(id));
                }
                FencedOp::KeysWithLease(id, reply) => {
                    let _ = reply.send(self.keys_with_lease(id));
                }
                FencedOp::LastRevision(reply) => {
                    let _ = reply.send(self.state.borrow().last_held());
                }
                FencedOp::Backup(n, upto, whole, reply) => {
                    let _ = reply.send(self.clone().backup_part(n, upto, whole));
                }
                FencedOp::Commit {
                    records,
                    revoke,
                    term,
                    reply,
                } => {
                    let _ = reply.send(self.commit(records, revoke, term, permit).await);
                    return;
                }
                FencedOp::Release => return,
            }
        }
        if let Some((rev, term)) = wrote {
            // The coordinator vanished between applying and committing.
            self.abandon(rev, term);
        }
    }

    /// A write applied here at `rev` in `term` will never be submitted (its
    /// coordinator failed; the lock is still held, so nothing above it was
    /// applied since). Drop it from the store; if the log moved on, the
    /// step-down already did. Its revision is a hole that only a marker
    /// voids, so the leader starts again.
    pub(crate) fn abandon(&self, rev: i64, term: u64) {
        let out = self.state.borrow_mut().abandon(rev, term);
        self.effects(out);
    }

    /// The write lock: held from a write's first read to its log
    /// submission, so each shard's log is in revision order.
    pub(crate) async fn lock(&self) -> Option<glommio::sync::Permit<'_>> {
        self.lock.acquire_permit(1).await.ok()
    }

    /// Applies one part of a write at `rev` ahead of its commit (under the
    /// lock), as the leader of `term`. Refused once this member no longer
    /// leads that term: a step-down has rolled the store back, and nothing
    /// may be applied on top of that.
    pub(crate) fn apply(
        &self,
        rev: i64,
        first_sub: i64,
        ops: &[WriteOp],
        term: u64,
    ) -> Result<Vec<Event>, Error> {
        self.check_term(term)?;
        Ok(self.state.borrow_mut().apply(rev, first_sub, ops, term))
    }

    /// The store covers the log up to raft index `index` (its snapshot, or
    /// the entries replayed at open).
    pub fn covers(&self, index: u64) {
        self.state.borrow_mut().covers(index);
    }

    /// The store was opened from the snapshot file at raft index `index`.
    pub fn opened_snapshot(&self, index: u64) {
        self.snapshot_index.set(index);
        self.covers(index);
    }

    /// The snapshot the store was opened from folded in marker `id`.
    pub fn opened_after_marker(&self, marker: MarkerMeta) {
        let out = self.state.borrow_mut().opened_after_marker(marker);
        self.effects(out);
    }

    /// Whether this shard may apply and submit writes of `term` now.
    pub(crate) fn check_term(&self, term: u64) -> Result<(), Error> {
        let role = self.log.role();
        let spec_ok = self.state.borrow().may_write_in(term);
        if role.leader && role.term == term && spec_ok && self.leadership.serving() {
            Ok(())
        } else {
            Err(Error::LeaderChanged)
        }
    }

    /// The term this shard's group is led in by this member, if it is.
    pub(crate) fn leading_term(&self) -> Option<u64> {
        let role = self.log.role();
        role.leader.then_some(role.term)
    }

    pub(crate) fn lease_exists(&self, id: i64) -> bool {
        self.state.borrow().leases.contains(id)
    }

    /// Keys attached to a lease, latest state.
    pub(crate) fn keys_with_lease(&self, id: i64) -> Vec<Vec<u8>> {
        self.state.borrow().store.keys_with_lease(id)
    }

    /// Submits `records` (in `term`, whose leader applied them) while
    /// `permit` is held, releases it, and returns once they are committed.
    /// The proposals are queued under the lock, so the log order is the
    /// revision order; the commit is awaited after releasing it, letting
    /// later writes share the fsync. `revoke` leaves the lease table at
    /// submission, so no write after this one can attach a key to it.
    pub(crate) async fn commit(
        self: &Rc<Self>,
        records: Vec<Record>,
        revoke: Option<i64>,
        term: u64,
        permit: glommio::sync::Permit<'_>,
    ) -> Result<(), Error> {
        self.check_term(term)?;
        let mut futs = Vec::with_capacity(records.len());
        for r in &records {
            match self.log.submit_in(Some(term), r.encode()) {
                Ok(f) => futs.push(f),
                Err(e) if futs.is_empty() => {
                    // Nothing of this write reached the log.
                    if let Some(rev) = records.iter().find_map(|r| match r {
                        Record::Write { rev, .. } => Some(*rev),
                        _ => None,
                    }) {
                        self.abandon(rev, term);
                    }
                    return Err(log_error(e));
                }
                Err(e) => {
                    // Part of it did: only a new leader's marker can sort
                    // that out.
                    self.leadership
                        .break_member(&format!("shard {}: write half submitted: {e}", self.id));
                    return Err(log_error(e));
                }
            }
        }
        if let Some(id) = revoke {
            let visible = self.seq.visible();
            self.state
                .borrow_mut()
                .revoke_submitted(id, &records, visible, term);
        }
        drop(permit);
        let mut result = Ok(());
        for (r, fut) in records.iter().zip(futs) {
            if let Err(e) = fut.await {
                if let (Some(id), Record::LeaseRevoke { rev, .. }) = (revoke, r) {
                    self.state.borrow_mut().revoke_dropped(id, *rev, term);
                }
                result = Err(log_error(e));
            }
        }
        result
    }

    /// A committed entry of this shard's log, in log order, on every
    /// member (and at restart); see [`ShardState::apply_committed`].
    pub fn apply_committed(self: &Rc<Self>, index: u64, term: u64, data: &[u8]) {
        if index <= self.state.borrow().applied_index() {
            // In the snapshot the store was installed from.
            return;
        }
        let rec = match Record::decode(data) {
            Ok(r) => r,
            Err(e) => {
                // Applying around it would diverge from the other members.
                self.leadership.break_member(&format!(
                    "shard {}: committed log entry {index} is undecodable: {e}",
                    self.id
                ));
                return;
            }
        };
        if let Record::Auth(a) = &rec {
            // Applied at commit on every member alike (never ahead of
            // the log), so a refusal is every member's.
            let r = self.auth.apply(a);
            let mut results = self.auth_results.borrow_mut();
            if results.len() >= AUTH_RESULTS_MAX {
                results.pop_front();
            }
            results.push_back((index, r));
        }
        let visible = self.seq.visible();
        let (out, applied) = {
            let mut st = self.state.borrow_mut();
            let out = st.apply_committed(index, term, &rec, visible);
            (out, st.applied_index() == index)
        };
        self.effects(out);
        if let Record::LeaseGrant { id, .. } = &rec {
            if self.granting.borrow().contains_key(id) {
                // Writes assigned from now on may attach keys to it.
                let at = self.seq.last_assigned().max(self.seq.visible());
                self.granted_at.borrow_mut().insert(*id, at);
            }
        }
        if applied {
            self.after_commit();
        }
    }

    /// Carries out what the state asked of the member-wide parts.
    fn effects(&self, out: Vec<Effect>) {
        for e in out {
            match e {
                Effect::Written { rev, participants } => {
                    self.seq.written(self.id, rev, &participants)
                }
                Effect::Compacted { rev } => self.seq.compacted(rev),
                Effect::CompactionApplied { rev, at } => {
                    self.seq.compaction_applied(self.id, rev, at)
                }
                Effect::Marker { id, cut, through } => self.seq.marker(self.id, id, cut, through),
                Effect::MarkerFolded { id, cut, through } => {
                    self.seq.marker_folded(self.id, id, cut, through)
                }
                Effect::Installed { rev } => self.seq.shard_snapshot(self.id, rev),
                Effect::Broken(why) => self.leadership.break_member(&why),
                Effect::Restart(why) => self.leadership.restart(&why),
            }
        }
        self.settle_compaction();
    }

    /// Compacts the store for an applied compaction once this member has
    /// it in effect; whether none is left pending.
    fn settle_compaction(&self) -> bool {
        let in_effect = self.seq.compact_revision();
        self.state.borrow_mut().settle_compaction(in_effect)
    }

    /// This member's role in the group changed. A leader that lost its
    /// term drops what it applied ahead of the log; committed entries of
    /// that term then arrive like anyone else's.
    pub fn role_changed(&self, role: Role) {
        let out = self.state.borrow_mut().role_changed(role.leader, role.term);
        self.effects(out);
        self.leadership.publish(self.id, role);
        if let Some(e) = self.log.failure() {
            // A member with a dead log can never lead every group again
            // (until restarted): it must hand over what it still leads,
            // or no member would lead them all and writes would stop.
            self.leadership
                .break_member(&format!("shard {}: log failed: {e}", self.id));
        }
        if role.leader {
            let leader = self.leadership.cluster_leader();
            if self.id != 0 && leader != 0 && leader != self.log.node_id() {
                // One member leads every group: hand this one over.
                self.log.transfer_leader(leader);
            }
        }
    }

    /// A piece of this shard's snapshot file for a follower (see
    /// `ShardMsg::SnapshotChunk`).
    async fn snapshot_chunk(&self, index: u64, offset: u64) -> Result<Vec<u8>, Error> {
        if self.snapshot_index.get() != index || index == 0 {
            return Err(Error::Internal(format!(
                "shard {}: snapshot {index} is gone (now {})",
                self.id,
                self.snapshot_index.get()
            )));
        }
        let path = self.snapshot_path.clone();
        glommio::executor()
            .spawn_blocking(move || {
                use std::io::{Read, Seek};
                let mut f = std::fs::File::open(&path)?;
                f.seek(std::io::SeekFrom::Start(offset))?;
                let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                f.take(SNAPSHOT_CHUNK_BYTES as u64).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(|e| Error::Internal(format!("shard {}: snapshot read: {e}", self.id)))
    }

    /// The leader offered its snapshot (raft's `MsgSnapshot`): fetch the
    /// file in chunks, install it as this shard's store, then let raft
    /// have the message. One fetch at a time; a failed one drops the
    /// message (the leader offers it again).
    fn snapshot_offered(self: &Rc<Self>, msg: raft::eraftpb::Message) {
        let data = msg.get_snapshot().get_data();
        if data.len() == 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(data);
            if u64::from_le_bytes(b) <= self.state.borrow().applied_index() {
                // Nothing to fetch: raft only moves its commit forward.
                self.log.step_installed(msg);
                return;
            }
        }
        if self.fetching.replace(true) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            let data = msg.get_snapshot().get_data();
            let index = if data.len() == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                u64::from_le_bytes(b)
            } else {
                0
            };
            match me.fetch_snapshot(msg.from, index).await {
                Ok(()) => me.log.step_installed(msg),
                Err(e) => log::warn!(
                    "shard {}: snapshot {index} from {:x} not installed: {e}",
                    me.id,
                    msg.from
                ),
            }
            me.fetching.set(false);
        })
        .detach();
    }

    async fn fetch_snapshot(self: &Rc<Self>, from: u64, index: u64) -> Result<(), String> {
        if index == 0 || index <= self.state.borrow().applied_index() {
            return Err(format!("nothing to install at index {index}"));
        }
        let peers = self.peers.get().ok_or("no peer transport")?.clone();
        let part = self.snapshot_path.with_extension("recv");
        let _ = std::fs::remove_file(&part);
        let mut offset = 0u64;
        loop {
            let body = crate::forward::ints(&[i64::from(self.id), index as i64, offset as i64]);
            let chunk = peers
                .call(from, crate::forward::SNAPSHOT_CHUNK, body)
                .await
                .map_err(|e| e.to_string())?;
            let n = chunk.len();
            let path = part.clone();
            glommio::executor()
                .spawn_blocking(move || {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    f.write_all(&chunk)
                })
                .await
                .map_err(|e| format!("{}: {e}", part.display()))?;
            offset += n as u64;
            if n < SNAPSHOT_CHUNK_BYTES {
                break;
            }
            if offset > SNAPSHOT_BYTES_MAX {
                return Err(format!("snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"));
            }
        }
        // Checked as any snapshot file is (checksums, structure) before it
        // replaces the store; durable before the log forgets the entries.
        let (store, got, meta) = Store::open_snapshot(&part).map_err(|e| e.to_string())?;
        if got != index {
            return Err(format!("the file is at index {got}, not {index}"));
        }
        let leases = decode_lease_meta(&meta)?;
        // The fetch took a while: entries past it may have been applied
        // meanwhile (a new leader still had them). Installing now would
        // roll them back; and the file must not race a local snapshot.
        let _one = self
            .snapshot_lock
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        if index <= self.state.borrow().applied_index() {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "applied {} meanwhile: no longer needed",
                self.state.borrow().applied_index()
            ));
        }
        let (from_path, to_path) = (part.clone(), self.snapshot_path.clone());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::File::open(&from_path)?.sync_all()?;
                std::fs::rename(&from_path, &to_path)?;
                if let Some(dir) = to_path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| e.to_string())?;
        // Reopen from its final path: the mapping must not outlive a name.
        let (store, _, _) = match Store::open_snapshot(&self.snapshot_path) {
            Ok(s) => s,
            Err(e) => {
                drop(store);
                return Err(e.to_string());
            }
        };
        if index <= self.state.borrow().applied_index() {
            // Applied past it while the file was made durable: keep the
            // store (the renamed file is just an older snapshot).
            return Err(format!(
                "applied {} meanwhile: no longer needed",
                self.state.borrow().applied_index()
            ));
        }
        let change = decode_change(&meta)?;
        let auth = decode_auth(&meta)?;
        self.install(store, index, decode_marker(&meta), &leases);
        if self.id == 0 {
            self.auth.restore(auth.unwrap_or_default());
        }
        if let Some(c) = change {
            self.member_change(c);
        }
        log::info!(
            "shard {}: installed the leader's snapshot at raft index {index} (revision {})",
            self.id,
            self.state.borrow().store.last_revision()
        );
        Ok(())
    }

    /// A committed conf change took effect in this group: the member
    /// change it carries is recorded for this group.
    pub fn conf_changed(&self, index: u64, context: &[u8]) {
        // The store is unchanged by it, so it covers this index too (a
        // snapshot taken now must be at or past the membership it sends).
        self.covers(index);
        self.record_conf_change(index, context);
    }

    /// The member change a conf change carries, recorded for this group.
    pub fn record_conf_change(&self, index: u64, context: &[u8]) {
        match Change::decode(context) {
            Ok(c) => self.member_change(c),
            // Raft applied it: only the member records are lost, and the
            // next change carries the whole list again.
            Err(e) => log::error!("shard {}: conf change at {index}: {e}", self.id),
        }
    }

    /// This group has applied `change` (a conf change, or a snapshot that
    /// folded it in).
    pub fn member_change(&self, change: Change) {
        if let Err(e) = self.changes.applied(self.id, change, self.peers.get()) {
            // The disk refuses: this member cannot keep its own state.
            log::error!("shard {}: {e}", self.id);
            self.leadership.break_member(&e);
        }
    }

    /// Raft needs a snapshot newer than the newest file: write one now.
    pub fn snapshot_soon(self: &Rc<Self>) {
        if self.snapshotting.replace(true) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = me.snapshot().await {
                log::warn!("shard {}: snapshot failed: {e}", me.id);
            }
            me.snapshotting.set(false);
        })
        .detach();
    }

    /// The store is now the snapshot at raft index `index`.
    fn install(&self, store: Store, index: u64, marker: MarkerMeta, leases: &[(i64, i64)]) {
        let out = self
            .state
            .borrow_mut()
            .install(store, index, marker, leases);
        self.snapshot_index.set(index);
        self.entries_since_snapshot.set(0);
        self.effects(out);
    }

    /// Leader start: the marker of `id`, committed in `term`.
    async fn marker(&self, id: u64, cut: i64, through: i64, term: u64) -> Result<(), Error> {
        let _permit = self.lock().await.ok_or(Error::LeaderChanged)?;
        let fut = self
            .log
            .submit_in(Some(term), Record::Marker { id, cut, through }.encode())
            .map_err(log_error)?;
        fut.await.map_err(log_error)?;
        Ok(())
    }

    /// Proposes an auth record in this (shard 0's) group and waits until it
    /// is applied here. A change is checked first against the store every
    /// earlier proposal left; the apply decides (a record of an earlier
    /// leader committed meanwhile may have changed the store).
    async fn auth_propose(&self, rec: AuthRecord) -> Result<u64, Error> {
        let _turn = self
            .auth_turn
            .acquire_permit(1)
            .await
            .map_err(|_| Error::LeaderChanged)?;
        if let AuthRecord::Change(op) = &rec {
            self.auth.current().check(op).map_err(Error::Auth)?;
        }
        if self.leading_term().is_none() || !self.leadership.serving() {
            return Err(Error::LeaderChanged);
        }
        let index = self
            .log
            .submit(Record::Auth(rec).encode())
            .map_err(log_error)?
            .await
            .map_err(log_error)?;
        let result = self
            .auth_results
            .borrow()
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, r)| r.clone());
        match result {
            Some(Ok(())) => Ok(self.auth.revision()),
            Some(Err(e)) => Err(Error::Auth(e)),
            // Committed but not applied here (a snapshot installed past
            // it): it took effect, whatever it gave.
            None => Ok(self.auth.revision()),
        }
    }

    /// A grant is in the table only once durable, so nothing can attach a
    /// key to a lease a crash could still lose.
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64), Error> {
        // A grant of the same id in flight decides this one: "already
        // exists" only once it committed (a put meanwhile finds no lease:
        // it is not granted before it commits), and a grant if it failed.
        while self.granting.borrow().contains_key(&id) {
            let done = self.granted.listen();
            if !self.granting.borrow().contains_key(&id) {
                break;
            }
            done.await;
        }
        let ttl = self.state.borrow().leases.check_grant(id, ttl)?;
        let term = self.leading_term().ok_or(Error::LeaderChanged)?;
        self.check_term(term)?;
        self.state.borrow_mut().take_term(term);
        let fut = self
            .log
            .submit_in(Some(term), Record::LeaseGrant { id, ttl }.encode())
            .map_err(log_error)?;
        self.granting.borrow_mut().insert(id, ttl);
        let committed = fut.await;
        self.granting.borrow_mut().remove(&id);
        let entered = self.granted_at.borrow_mut().remove(&id);
        self.granted.notify(usize::MAX);
        committed.map_err(log_error)?;
        // Applying the committed entry put the lease in the table (before
        // its waiter completed); its deadline runs from now, on the leader
        // (a revoke since, or a step-down's next start, decides otherwise).
        let _ = self.state.borrow_mut().leases.renew(id, Instant::now());
        // The grant comes after every revision assigned before the lease
        // entered the table and before every later one, which may use it.
        let at = entered.unwrap_or_else(|| self.seq.last_assigned().max(self.seq.visible()));
        Ok((ttl, at))
    }

    /// The leases a snapshot must hold: granted ones and durable-pending
    /// grants whose log entries the snapshot may let go.
    fn lease_meta(&self) -> Vec<u8> {
        let change = self.changes.of_group(self.id);
        let conf = (self.log.voters(), self.log.learners());
        // Shard 0's log builds the auth store: its snapshot holds it.
        let auth = (self.id == 0).then(|| self.auth.current());
        encode_shard_meta_v5(
            self.state.borrow().last_marker(),
            &conf,
            change.as_ref(),
            auth.as_deref(),
            &self.lease_list(),
        )
    }

    fn lease_list(&self) -> Vec<(i64, i64)> {
        let state = self.state.borrow();
        let table = &state.leases;
        let mut leases: Vec<(i64, i64)> = table
            .ids()
            .into_iter()
            .filter_map(|id| table.get(id).map(|l| (id, l.ttl)))
            .collect();
        // A grant that committed is in the table before its task leaves
        // `granting`.
        leases.extend(
            self.granting
                .borrow()
                .iter()
                .filter(|(id, _)| !table.contains(**id))
                .map(|(id, ttl)| (*id, *ttl)),
        );
        leases
    }

    /// Counts committed entries and, every `--snapshot-count`, writes a
    /// snapshot and lets the log drop what it covers.
    fn after_commit(self: &Rc<Self>) {
        let n = self.entries_since_snapshot.get() + 1;
        self.entries_since_snapshot.set(n);
        if self.snapshot_count == 0 || n < self.snapshot_count {
            return;
        }
        self.snapshot_soon();
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
        let Some((index, image)) = self.snapshot_image().await? else {
            // Writes kept coming faster than they became visible (or a
            // hole waits for a new leader's marker); the next round tries
            // again.
            return Ok(());
        };
        let path = self.snapshot_path.clone();
        let written = glommio::executor()
            .spawn_blocking(move || image.write(&path))
            .await
            .map_err(|e| e.to_string())?;
        self.snapshot_index.set(index);
        self.log.snapshot_written(index);
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

    /// The store's image at the applied index of a settled moment, and
    /// that index. Only beginning the cut holds the write lock: the copy
    /// goes a part at a time on this core with this shard's writes (all
    /// above the cut) in between. A cut that a compaction overtook begins
    /// again; after [`SNAPSHOT_CUT_ATTEMPTS`] such, the copy is made whole
    /// under the lock. None if the shard did not settle.
    async fn snapshot_image(&self) -> Result<Option<(u64, SnapshotImage)>, String> {
        for _ in 0..SNAPSHOT_CUT_ATTEMPTS {
            let Some(permit) = self.settled_lock().await else {
                return Ok(None);
            };
            let index = self.state.borrow().applied_index();
            let mut cut = self
                .state
                .borrow()
                .store
                .snapshot_cut(&self.snapshot_path, index, &self.lease_meta(), i64::MAX)
                .map_err(|e| e.to_string())?;
            let since = self.entries_since_snapshot.replace(0);
            drop(permit);
            match self.copy_cut(&mut cut).await {
                Ok(()) => return Ok(Some((index, cut.image()))),
                Err(e) => {
                    let more = self.entries_since_snapshot.get();
                    self.entries_since_snapshot.set(since + more);
                    log::info!("shard {}: snapshot begun again: {e}", self.id);
                }
            }
        }
        let Some(permit) = self.settled_lock().await else {
            return Ok(None);
        };
        let index = self.state.borrow().applied_index();
        let image = self
            .state
            .borrow()
            .store
            .snapshot_image(&self.snapshot_path, index, &self.lease_meta())
            .map_err(|e| e.to_string())?;
        self.entries_since_snapshot.set(0);
        drop(permit);
        Ok(Some((index, image)))
    }

    /// Copies the rest of `cut` out of this shard's store, a part at a time
    /// with this core's other tasks (the writes) in between. A rest as long
    /// as each part: a yield alone gives the writes only the tasks ready at
    /// that moment, and each hop of a write would wait a part
    /// (perf/stalls.sh). [`ferrokv_mvcc::Error::Overtaken`] if a compaction
    /// or a new store came between two parts.
    async fn copy_cut(&self, cut: &mut SnapshotCut) -> Result<(), ferrokv_mvcc::Error> {
        loop {
            let began = Instant::now();
            let done = self
                .state
                .borrow()
                .store
                .snapshot_cut_step(cut, SNAPSHOT_PART_KEYS)?;
            if done {
                return Ok(());
            }
            glommio::timer::sleep(began.elapsed().max(SNAPSHOT_PART_REST_MIN)).await;
        }
    }

    /// The write lock, once everything this shard holds is visible
    /// (complete in every shard, never to be voided), so that the image
    /// copied next, without an await in between, is exactly that. It never
    /// waits while holding the lock: a marker that must fill a hole needs
    /// it. None if it did not settle within its rounds.
    async fn settled_lock(&self) -> Option<glommio::sync::Permit<'_>> {
        for _ in 0..SNAPSHOT_SETTLE_ROUNDS_MAX {
            let permit = self.lock.acquire_permit(1).await.ok()?;
            let last = self.state.borrow().last_held();
            // The log's compaction record must not be folded into a
            // snapshot whose store does not hold it yet.
            let compacted = self.settle_compaction();
            if self.seq.visible() >= last && compacted {
                return Some(permit);
            }
            drop(permit);
            let pending = self.state.borrow().pending_compaction().unwrap_or(0);
            let wait = futures_lite::future::zip(
                self.seq.wait_visible(last),
                self.seq.wait_compacted(pending),
            );
            futures_lite::future::or(
                async {
                    wait.await;
                },
                glommio::timer::sleep(SNAPSHOT_SETTLE_WAIT),
            )
            .await;
        }
        None
    }

    /// This shard's part of a backup, begun under a fence: the image of a
    /// snapshot file next to its own, cut at `upto` (visible on this
    /// member), with applied index 0 so that a restore starts a fresh log.
    /// Leases revoked above the cut are still in it, as they were at the
    /// cut. Unless `whole`, only the cut begins here: it is copied after
    /// the fences are released, a part at a time (writes then are above
    /// the cut), and the image comes on the part's channel.
    fn backup_part(self: Rc<Self>, n: u64, upto: i64, whole: bool) -> Result<BackupPart, String> {
        let path = self
            .snapshot_path
            .with_file_name(format!("backup-{n}.rkyv"));
        let mut leases = self.lease_list();
        let state = self.state.borrow();
        for r in state.revoked_above(upto) {
            if !leases.iter().any(|(l, _)| *l == r.id) {
                leases.push((r.id, r.ttl_s));
            }
        }
        let meta = encode_shard_meta(state.last_marker(), &leases);
        let (tx, image) = oneshot::channel();
        if whole {
            let _ = tx.send(state.store.snapshot_image_upto(&path, 0, &meta, upto));
        } else {
            let mut cut = state
                .store
                .snapshot_cut(&path, 0, &meta, upto)
                .map_err(|e| e.to_string())?;
            drop(state);
            let me = self.clone();
            glommio::spawn_local(async move {
                let copied = me.copy_cut(&mut cut).await;
                let _ = tx.send(copied.map(|()| cut.image()));
            })
            .detach();
        }
        Ok(BackupPart { path, image })
    }
}

/// A shard's part of a backup: its file's path, and its image once copied.
pub struct BackupPart {
    pub path: PathBuf,
    pub image: oneshot::Receiver<Result<SnapshotImage, ferrokv_mvcc::Error>>,
}

/// A log error as the client hears it: a lost leadership is etcd's
/// `leader changed`; anything else is internal.
fn log_error(e: ferrokv_raft::Error) -> Error {
    match e {
        ferrokv_raft::Error::NotLeader { .. } | ferrokv_raft::Error::ProposalDropped => {
            Error::LeaderChanged
        }
        other => Error::Internal(other.to_string()),
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
    fn shard_meta_carries_the_marker() {
        let leases = vec![(7, 60), (9, 5)];
        let enc = encode_shard_meta((0x1234_5678_9abc, 7, 9), &leases);
        assert_eq!(decode_lease_meta(&enc), Ok(leases.clone()));
        assert_eq!(decode_marker(&enc), (0x1234_5678_9abc, 7, 9));
        assert_eq!(decode_marker(&encode_lease_meta(&leases)), (0, 0, 0));
    }

    #[test]
    fn shard_meta_v4_carries_the_membership() {
        let leases = vec![(7, 60)];
        let conf = (vec![1, 2, 3], vec![4]);
        let change = Change {
            version: 3,
            conf: raft::eraftpb::ConfChangeType::AddLearnerNode,
            id: 4,
            members: b"[]".to_vec(),
        };
        let enc = encode_shard_meta_v4((5, 6, 7), &conf, Some(&change), &leases);
        assert_eq!(decode_lease_meta(&enc), Ok(leases.clone()));
        assert_eq!(decode_marker(&enc), (5, 6, 7));
        assert_eq!(decode_change(&enc), Ok(Some(change)));
        assert_eq!(decode_conf(&enc), Ok(Some(conf.clone())));
        let bare = encode_shard_meta_v4((5, 6, 7), &conf, None, &leases);
        assert_eq!(decode_change(&bare), Ok(None));
        assert_eq!(decode_conf(&bare), Ok(Some(conf)));
        // A damaged section is refused, never misread.
        for cut in [3, 26, 30, 40] {
            assert!(decode_change(&enc[..cut]).is_err() || decode_lease_meta(&enc[..cut]).is_err());
        }
        assert_eq!(decode_conf(&encode_lease_meta(&leases)), Ok(None));
    }

    #[test]
    fn shard_meta_v5_carries_the_auth_store() {
        use crate::auth::AuthOp;
        let leases = vec![(7, 60), (9, 5)];
        let conf = (vec![1, 2, 3], vec![]);
        let mut auth = AuthStore::default();
        for op in [
            AuthOp::RoleAdd { name: "r".into() },
            AuthOp::UserAdd {
                name: "u".into(),
                hash: String::new(),
                no_password: true,
            },
        ] {
            auth.apply(&op).unwrap();
        }
        let enc = encode_shard_meta_v5((5, 6, 7), &conf, None, Some(&auth), &leases);
        assert_eq!(decode_lease_meta(&enc), Ok(leases.clone()));
        assert_eq!(decode_marker(&enc), (5, 6, 7));
        assert_eq!(decode_conf(&enc), Ok(Some(conf.clone())));
        assert_eq!(decode_auth(&enc), Ok(Some(auth)));
        // Other shards carry none; older layouts have none.
        let bare = encode_shard_meta_v5((5, 6, 7), &conf, None, None, &leases);
        assert_eq!(decode_auth(&bare), Ok(None));
        assert_eq!(decode_lease_meta(&bare), Ok(leases.clone()));
        let v4 = encode_shard_meta_v4((5, 6, 7), &conf, None, &leases);
        assert_eq!(decode_auth(&v4), Ok(None));
        // Every cut is refused by some decoder, never misread or a panic.
        for cut in 1..enc.len() {
            let m = &enc[..cut];
            assert!(decode_auth(m).is_err() || decode_lease_meta(m) != Ok(leases.clone()));
        }
    }

    #[test]
    fn empty_meta_is_no_leases() {
        assert_eq!(decode_lease_meta(&[]), Ok(Vec::new()));
        assert!(decode_lease_meta(&[9]).is_err());
    }
}
