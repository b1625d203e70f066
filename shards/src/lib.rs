//! The thread-per-core runtime: one glommio executor per shard, pinned to a
//! core; key -> shard routing; the revision sequencer; cross-shard writes.
//! See `docs/revisions-and-shards.md` for the protocol and its invariants.

pub mod auth;
pub mod auth_view;
pub mod backup;
pub mod error;
pub mod forward;
pub mod inspect;
pub mod kv;
pub mod leader;
pub mod lease;
pub mod membership;
pub mod record;
pub mod recovery;
pub mod sequencer;
pub mod shard;
pub mod state;
pub mod visibility;
pub mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};

use ferrokv_mvcc::Store;
use ferrokv_raft::{LogConfig, ShardLog};
use ferrokv_wal::{WalConfig, WalMetrics};
use glommio::{LocalExecutorBuilder, Placement};

pub use error::Error;
pub use kv::Engine;
pub use sequencer::Sequencer;
pub use shard::ShardStatus;

use leader::Leadership;
use lease::LeaseTable;
use record::Record;
use shard::{Applier, Shard, ShardMsg, SHARD_MESSAGES_PENDING_MAX};

/// glommio's registered I/O buffer memory per shard core.
const IO_MEMORY_BYTES_PER_CORE: usize = 1 << 20;

/// The peer transport once core 0 has started it; shared by every core.
pub type Peers = Arc<std::sync::OnceLock<ferrokv_raft::peer::PeerHandle>>;

/// Who this member is among whom.
#[derive(Clone, Debug)]
pub struct Members {
    /// This member's id (its raft node id in every group).
    pub member_id: u64,
    /// The voters now (the member list in force).
    pub voters: Vec<u64>,
    /// The voters every group's log starts from when it is new: the
    /// bootstrap members (a member that joins later replays the groups'
    /// conf changes from there, as the others did).
    pub bootstrap_voters: Vec<u64>,
    /// The peer transport's configuration; None for a one-member cluster.
    pub peer: Option<ferrokv_raft::peer::PeerConfig>,
}

impl Members {
    /// A one-member cluster (tests, offline tools).
    pub fn alone(member_id: u64) -> Members {
        Members {
            member_id,
            voters: vec![member_id],
            bootstrap_voters: vec![member_id],
            peer: None,
        }
    }
}

pub struct Config {
    pub members: Members,
    /// The member's data directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// Separate WAL directory (`--wal-dir`), if any.
    pub wal_dir: Option<PathBuf>,
    pub shards: usize,
    pub snapshot_count: u64,
    pub wal_metrics: Arc<WalMetrics>,
    pub heartbeat_interval_ms: u64,
    pub election_ticks: usize,
    /// This member's membership state (see `membership`).
    pub changes: Arc<membership::MemberChanges>,
    /// This member's auth state (see `auth_view`), built by shard 0.
    pub auth: Arc<auth_view::AuthView>,
}

impl Config {
    /// etcd's minimum lease TTL: 3/2 of the election timeout, in whole
    /// seconds rounded up.
    pub fn min_lease_ttl(&self) -> i64 {
        LeaseTable::min_ttl_for(self.heartbeat_interval_ms * self.election_ticks as u64)
    }
}

/// Checks (or records, on first start) the shard count of a data dir:
/// keys are placed by hash modulo the count, so it cannot change later.
fn check_layout(data_dir: &Path, shards: usize) -> Result<(), String> {
    let member = data_dir.join("member");
    std::fs::create_dir_all(&member)
        .map_err(|e| format!("cannot create data dir {}: {e}", member.display()))?;
    let meta = member.join("shards");
    match std::fs::read_to_string(&meta) {
        Ok(s) => {
            let n: usize = s
                .trim()
                .parse()
                .map_err(|_| format!("{} is corrupt: {s:?}", meta.display()))?;
            if n != shards {
                return Err(format!(
                    "data dir {} was created with --shards {n}; it cannot be opened with --shards {shards}",
                    data_dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&meta, format!("{shards}\n"))
                .map_err(|e| format!("cannot write {}: {e}", meta.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", meta.display())),
    }
}

/// Starts every shard core, recovers them, then runs `serve` on each core
/// with an engine handle. Returns when every core has finished.
pub fn run<F, Fut>(cfg: Config, serve: F) -> Result<(), String>
where
    F: Fn(Engine, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let n = cfg.shards.max(1);
    let mut cfg = cfg;
    // glommio's directory open does not take relative paths reliably.
    cfg.data_dir = std::path::absolute(&cfg.data_dir)
        .map_err(|e| format!("data dir {}: {e}", cfg.data_dir.display()))?;
    if let Some(w) = &cfg.wal_dir {
        cfg.wal_dir =
            Some(std::path::absolute(w).map_err(|e| format!("wal dir {}: {e}", w.display()))?);
    }
    check_layout(&cfg.data_dir, n)?;
    let seq = Arc::new(Sequencer::new(n as u32));
    // Revision 1 is the empty store every member starts from (as in etcd).
    seq.snapshot(1);
    let leadership = Arc::new(Leadership::new(cfg.members.member_id, n as u32));
    let peers: Peers = Arc::default();
    // Peer messages for each group wait here for its core.
    let mut inbound_tx = Vec::with_capacity(n);
    let mut inbound_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = async_channel::bounded(ferrokv_raft::INBOUND_MESSAGES_PENDING_MAX);
        inbound_tx.push(tx);
        inbound_rx.push(rx);
    }
    let (calls_tx, calls_rx) = async_channel::bounded(forward::CALLS_PENDING_MAX);
    let peer_cfg = cfg.members.peer.clone();
    let inbound = Arc::new(Mutex::new(Some(ferrokv_raft::peer::Inbound {
        groups: inbound_tx,
        calls: calls_tx,
    })));
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = async_channel::bounded::<ShardMsg>(SHARD_MESSAGES_PENDING_MAX);
        senders.push(tx);
        receivers.push(rx);
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let barrier = Arc::new(Barrier::new(n));
    let cfg = Arc::new(cfg);
    let mut handles = Vec::with_capacity(n);
    for (i, (rx, peer_rx)) in receivers.into_iter().zip(inbound_rx).enumerate() {
        let placement = if n <= cores {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        };
        let (senders, seq, leadership, barrier, cfg, serve) = (
            senders.clone(),
            seq.clone(),
            leadership.clone(),
            barrier.clone(),
            cfg.clone(),
            serve.clone(),
        );
        let (peers, peer_cfg, inbound, calls_rx) = (
            peers.clone(),
            peer_cfg.clone(),
            inbound.clone(),
            calls_rx.clone(),
        );
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            // Registered I/O memory counts against RLIMIT_MEMLOCK (often
            // 8 MiB for all cores together); the WAL needs little of it.
            .io_memory(IO_MEMORY_BYTES_PER_CORE)
            // No spinning before parking: the WAL's sync thread (and the
            // kernel's workers) often wake on this core's CPU, and a
            // spinning executor keeps them off it. With io_uring doing the
            // WAL's writes, spinning 100 us had taken put at 64 clients
            // from 0.7x to etcd's; since the sync thread it costs 0.1 ms
            // at 1 client's median (`perf sched`: the thread waits out
            // the spin) and gains nothing at 64 or 1024 (perf/README.md).
            .spawn(move || async move {
                if let (0, Some(pc)) = (i, peer_cfg) {
                    // The transport lives on core 0; the other cores reach
                    // it through its handle.
                    let taken = inbound.lock().ok().and_then(|mut g| g.take());
                    if let Some(ib) = taken {
                        match start_peers(pc, ib).await {
                            Ok((handle, transport)) => {
                                // Set first: a change applied meanwhile on
                                // another core then finds the transport.
                                let _ = peers.set(handle.clone());
                                cfg.changes.peers_started(&handle);
                                glommio::spawn_local(transport.join()).detach();
                            }
                            Err(e) => {
                                // Startup configuration: nothing served yet.
                                log::error!("peer transport: {e}");
                                eprintln!("ferrokv: peer transport: {e}");
                                std::process::exit(1);
                            }
                        }
                    }
                }
                let shard =
                    match open_shard(i as u32, &cfg, &seq, &leadership, &peers, &barrier).await {
                        Ok(s) => s,
                        Err(e) => {
                            // A member that cannot read its own data refuses to
                            // start (nothing is served yet).
                            log::error!("{e}");
                            eprintln!("ferrokv: {e}");
                            std::process::exit(1);
                        }
                    };
                let log = shard.log.clone();
                barrier.wait();
                // Messages other cores send meanwhile wait in the channel.
                let single_voter = cfg.members.voters == [cfg.members.member_id];
                let engine = Engine::new(
                    senders,
                    seq,
                    leadership,
                    peers,
                    single_voter,
                    shard.clone(),
                    cfg.changes.clone(),
                );
                glommio::spawn_local(shard.clone().run(rx, engine.clone())).detach();
                glommio::spawn_local(deliver(peer_rx, shard.log.clone())).detach();
                glommio::spawn_local(follow_cluster_leader(shard.clone(), engine.clone())).detach();
                if i == 0 {
                    let engine = engine.clone();
                    glommio::spawn_local(async move {
                        while let Ok(call) = calls_rx.recv().await {
                            let engine = engine.clone();
                            glommio::spawn_local(
                                async move { forward::serve(&engine, call).await },
                            )
                            .detach();
                        }
                    })
                    .detach();
                }
                glommio::spawn_local(lease_expiry(shard, engine.clone())).detach();
                if i == 0 {
                    glommio::spawn_local(leader::lead(engine.clone())).detach();
                }
                serve(engine, i).await;
                // The executor ends with this future and drops its other
                // tasks unpolled, which leaks the WAL's open segment files
                // (64 MiB preallocated each) for the life of the process:
                // close the log first.
                log.shutdown().await;
            })
            .map_err(|e| format!("cannot start shard executor {i}: {e}"))?;
        handles.push(h);
    }
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            return Err(format!("shard executor {i} failed: {e}"));
        }
    }
    Ok(())
}

/// Opens one shard's snapshot and log and replays the log's committed
/// entries through the apply path every committed entry takes; what was
/// never complete everywhere is voided by the leader's start marker.
async fn open_shard(
    id: u32,
    cfg: &Config,
    seq: &Arc<Sequencer>,
    leadership: &Arc<Leadership>,
    peers: &Peers,
    barrier: &Barrier,
) -> Result<Rc<Shard>, String> {
    let dir = cfg.data_dir.join("member").join(format!("shard-{id}"));
    let wal_dir = match &cfg.wal_dir {
        Some(w) => w.join(format!("shard-{id}")),
        None => dir.join("wal"),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::create_dir_all(&wal_dir).map_err(|e| format!("{}: {e}", wal_dir.display()))?;
    let snap_path = dir.join("snapshot.rkyv");
    let mut leases = LeaseTable::new(cfg.min_lease_ttl());
    let (store, applied, marker) = if snap_path.exists() {
        let (s, idx, meta) = Store::open_snapshot(&snap_path).map_err(|e| e.to_string())?;
        for (lease, ttl) in shard::decode_lease_meta(&meta)
            .map_err(|e| format!("shard {id}: {}: {e}", snap_path.display()))?
        {
            leases.restore(lease, ttl);
        }
        let bad = |e: String| format!("shard {id}: {}: {e}", snap_path.display());
        let change = shard::decode_change(&meta).map_err(bad)?;
        let conf = shard::decode_conf(&meta).map_err(bad)?;
        if id == 0 {
            if let Some(a) = shard::decode_auth(&meta).map_err(bad)? {
                cfg.auth.restore(a);
            }
        }
        (s, idx, (shard::decode_marker(&meta), change, conf))
    } else {
        (Store::new(), 0, ((0, 0, 0), None, None))
    };
    let (marker, snapshot_change, snapshot_conf) = marker;
    // Another shard of this member may have replayed less than this
    // snapshot holds: a floor for this shard, not visibility for all.
    seq.shard_snapshot(id, store.last_revision());
    seq.compacted(store.compact_revision());
    let wal = WalConfig {
        metrics: cfg.wal_metrics.clone(),
        ..WalConfig::default()
    };
    let mut log_cfg = LogConfig::new(wal, cfg.members.member_id);
    log_cfg.voters = cfg.members.bootstrap_voters.clone();
    log_cfg.tick_interval = std::time::Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    log_cfg.election_tick = cfg.election_ticks.max(2);
    log_cfg.snapshot_conf = snapshot_conf;
    let transport: Box<dyn ferrokv_raft::Transport> = if cfg.members.peer.is_some() {
        Box::new(PeerLink {
            peers: peers.clone(),
            group: id,
        })
    } else {
        Box::new(ferrokv_raft::NoopTransport)
    };
    let (log, recovered) = ShardLog::open_with_transport(&wal_dir, log_cfg, applied, transport)
        .await
        .map_err(|e| format!("shard {id}: cannot open log in {}: {e}", wal_dir.display()))?;
    let mut records = Vec::with_capacity(recovered.entries.len());
    for (index, data) in &recovered.entries {
        let rec = Record::decode(data).map_err(|e| {
            format!(
                "shard {id}: log entry {index} in {}: {e}",
                wal_dir.display()
            )
        })?;
        records.push((*index, rec));
    }
    // Logs of older versions carry `TruncateAbove` markers: resolve them
    // before the replay.
    let records = recovery::resolve_truncations(records);
    let shard = Shard::new(
        id,
        store,
        log.clone(),
        seq.clone(),
        snap_path,
        cfg.snapshot_count,
        leases,
        leadership.clone(),
        peers.clone(),
        cfg.changes.clone(),
        cfg.auth.clone(),
    );
    shard.opened_after_marker(marker);
    if let Some(c) = snapshot_change {
        shard.member_change(c);
    }
    // Recorded for the membership only: the store's replay below covers
    // their indexes with the entries around them.
    for (index, context) in &recovered.conf_changes {
        shard.record_conf_change(*index, context);
    }
    shard.opened_snapshot(applied);
    // Every shard's snapshot is known to the sequencer before any replay.
    barrier.wait();
    for (index, rec) in &records {
        shard.apply_committed(*index, 0, &rec.encode());
    }
    shard.covers(recovered.commit_index);
    // An offline tool (no peers) opens a stopped member's data whatever
    // its members: what its logs committed is all there is to replay.
    if recovered.single_voter || cfg.members.peer.is_none() {
        // One voter: every entry of its log is committed and replayed, and
        // its snapshots were taken here once visible: it holds its parts up
        // to every other shard's snapshot (registered before the barrier).
        seq.raise_high(id, seq.floor_max());
    }
    // etcd's Promote: restored leases get their full TTL from now, so a
    // restart never expires one early.
    shard
        .state
        .borrow_mut()
        .leases
        .promote(std::time::Instant::now());
    log.start(Some(Rc::new(Applier(Rc::downgrade(&shard)))));
    Ok(shard)
}

/// How long a start waits for its peer port: a member killed with -9 keeps
/// its listeners a moment after it exits (io_uring tears its ring down
/// asynchronously), so an immediate restart may find the port taken.
const PEER_LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn start_peers(
    pc: ferrokv_raft::peer::PeerConfig,
    inbound: ferrokv_raft::peer::Inbound,
) -> Result<
    (
        ferrokv_raft::peer::PeerHandle,
        ferrokv_raft::peer::PeerTransport,
    ),
    String,
> {
    let deadline = std::time::Instant::now() + PEER_LISTEN_WAIT;
    let mut inbound = Some(inbound);
    loop {
        let ib = inbound
            .take()
            .ok_or("peer transport: inbound channels gone")?;
        let groups = ib.groups.clone();
        let calls = ib.calls.clone();
        match ferrokv_raft::peer::start(pc.clone(), ib) {
            Ok(started) => return Ok(started),
            Err(e @ ferrokv_raft::peer::PeerError::Listen { .. })
                if std::time::Instant::now() < deadline =>
            {
                log::debug!("peer transport: {e}; retrying");
                inbound = Some(ferrokv_raft::peer::Inbound { groups, calls });
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A group's raft messages to the peer transport (dropped until core 0 has
/// started it: raft retransmits).
struct PeerLink {
    peers: Peers,
    group: u32,
}

impl ferrokv_raft::Transport for PeerLink {
    fn send(&self, msgs: Vec<raft::eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        if let Some(p) = self.peers.get() {
            p.send_raft(self.group, msgs);
        }
    }
}

/// Peer messages of this core's group into its raft log.
async fn deliver(rx: async_channel::Receiver<raft::eraftpb::Message>, log: Rc<ShardLog>) {
    while let Ok(m) = rx.recv().await {
        log.step(m);
    }
}

/// How often a group led here checks that the cluster leader leads it.
const FOLLOW_LEADER_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Every tick: one member leads every group (a group led here while group
/// 0 is led by another member is handed to that member), and a shard
/// confirms it holds its parts up to the newest snapshot on this member
/// (see `catch_up`).
async fn follow_cluster_leader(shard: Rc<Shard>, engine: Engine) {
    loop {
        glommio::timer::sleep(FOLLOW_LEADER_TICK).await;
        let leader = engine.leadership().cluster_leader();
        let me = shard.log.node_id();
        // A group led here while group 0 is led elsewhere goes to group
        // 0's leader. Else, a member that cannot take writes must not hold
        // the cluster's leadership, nor one that a half-made membership
        // change adds or removes (it is not a voter of every group, so it
        // could never lead them all and finish the change): it hands it
        // to another voter that is up (the other groups follow). A broken
        // member hands over every group it leads: its group 0 may be what
        // broke, and then it still names itself the cluster leader.
        let broken = engine.leadership().is_broken();
        if shard.id != 0 && shard.log.is_leader() && leader != 0 && leader != me {
            shard.log.transfer_leader(leader);
        } else if shard.log.is_leader()
            && (broken || (shard.id == 0 && engine.subject_of_pending_change()))
        {
            let up: Vec<u64> = engine
                .peers()
                .map(|p| {
                    p.peers()
                        .into_iter()
                        .filter(|i| i.connected)
                        .map(|i| i.member_id)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(to) = shard
                .log
                .voters()
                .into_iter()
                .find(|v| *v != me && up.contains(v))
            {
                shard.log.transfer_leader(to);
            }
        }
        if engine.sequencer().behind_floor(shard.id) && !shard.catching_up.replace(true) {
            // In its own task: it may wait seconds for a leader, and the
            // leadership checks above must go on meanwhile.
            let (shard, engine) = (shard.clone(), engine.clone());
            glommio::spawn_local(async move {
                catch_up(&shard, engine.sequencer()).await;
                shard.catching_up.set(false);
            })
            .detach();
        }
    }
}

/// How long a shard waits to apply what its group's ReadIndex named.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A snapshot on this member (installed from the leader, or one this shard
/// restarted from) holds revisions up to `floor`, complete in the cluster
/// when it was taken. This shard holds its own parts of them once it has
/// applied everything its group had committed by then: raft's ReadIndex
/// names an index at least that, so applying up to it suffices.
async fn catch_up(shard: &Shard, seq: &Sequencer) {
    let floor = seq.floor_max();
    // Raft drops a follower's ReadIndex while it knows no leader: bounded.
    let asked = futures_lite::future::or(async { shard.log.read_index().await.ok() }, async {
        glommio::timer::sleep(CATCH_UP_WAIT).await;
        None
    });
    let Some(index) = asked.await else {
        // No leader now: the next tick tries again.
        return;
    };
    let deadline = std::time::Instant::now() + CATCH_UP_WAIT;
    while shard.log.applied_index() < index {
        if std::time::Instant::now() > deadline {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    seq.raise_high(shard.id, floor);
}

/// The expiry timer of one lease-owning shard: every `REVOKE_TICK` at most
/// `REVOKE_BATCH` expired leases are revoked (etcd's rate of 1000/s), each
/// as its own cross-shard write; one not revoked is handed out again later.
async fn lease_expiry(shard: Rc<Shard>, engine: Engine) {
    loop {
        glommio::timer::sleep(lease::REVOKE_TICK).await;
        if !engine.leadership().serving() {
            // Leases expire only on the serving leader.
            continue;
        }
        let expired = shard
            .state
            .borrow_mut()
            .leases
            .expired(std::time::Instant::now(), lease::REVOKE_BATCH);
        for id in expired {
            let engine = engine.clone();
            glommio::spawn_local(async move {
                match engine.lease_revoke(id).await {
                    Ok(_) | Err(Error::LeaseNotFound) => {}
                    Err(e) => log::warn!("lease {id:x}: expiry revoke failed: {e}"),
                }
            })
            .detach();
        }
    }
}

/// The shard count a data dir was created with (`--shards`).
pub fn data_dir_shards(data_dir: &Path) -> Result<usize, String> {
    let meta = data_dir.join("member").join("shards");
    let s = std::fs::read_to_string(&meta).map_err(|e| format!("{}: {e}", meta.display()))?;
    s.trim()
        .parse()
        .map_err(|_| format!("{} is corrupt: {s:?}", meta.display()))
}

/// Offline defragmentation (`ferroutl defrag --data-dir`): opens the member
/// as the server would (recovery included), writes a fresh snapshot of
/// every shard, which truncates its log, and stops. The member must not be
/// running.
pub fn defrag_offline(data_dir: &Path, wal_dir: Option<&Path>) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let shards = data_dir_shards(data_dir)?;
    let cfg = Config {
        members: Members::alone(1),
        data_dir: data_dir.to_path_buf(),
        wal_dir: wal_dir.map(Path::to_path_buf),
        shards,
        snapshot_count: 0,
        wal_metrics: Arc::default(),
        heartbeat_interval_ms: 100,
        election_ticks: 10,
        changes: Arc::new(membership::MemberChanges::offline(data_dir, shards as u32)?),
        auth: Arc::new(auth_view::AuthView::new(auth_view::TOKEN_TTL_DEFAULT)),
    };
    let done = Arc::new(AtomicBool::new(false));
    let result: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
    let (d, r) = (done.clone(), result.clone());
    run(cfg, move |engine, core| {
        let (done, result) = (d.clone(), r.clone());
        async move {
            if core == 0 {
                let r = engine.defragment().await.map_err(|e| e.to_string());
                if let Ok(mut slot) = result.lock() {
                    *slot = Some(r);
                }
                done.store(true, Ordering::SeqCst);
            } else {
                // The other cores keep their shards served until core 0 is
                // done with them.
                while !done.load(Ordering::SeqCst) {
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    })?;
    let outcome = result
        .lock()
        .map_err(|_| "defrag state poisoned".to_string())?
        .take();
    outcome.unwrap_or_else(|| Err("defrag did not run".into()))
}
