//! Workloads (issue 11): records client histories and watch sessions from
//! real servers over gRPC, with faults injected at chosen times, and
//! checks what was recorded.
//!
//! - [`Workload::run`]: `clients` concurrent clients (tokio tasks on a
//!   runtime of the run's own), client `i` bound to endpoint
//!   `i % endpoints.len()`, each with one request in flight at a time,
//!   etcd-style traffic on `key_count` keys under [`Workload::prefix`] (so
//!   conflicts are frequent): linearizable and serializable gets, prefix
//!   ranges, ranges at a past revision, puts (some asking prev_kv), puts
//!   with a lease, deletes (one key, rarely the whole prefix), the
//!   Kubernetes `GuaranteedUpdate` txn (compare mod_revision == the last one
//!   the client saw; success: put; failure: get), two-key put txns, lease
//!   grants with client-chosen ids from a small shared pool (so `lease
//!   already exists` and `requested lease not found` happen) and revokes.
//!   Every put writes a value no other put writes. Meanwhile `watchers`
//!   watch streams (watcher `w` on endpoint `w % endpoints.len()`, from
//!   revision 1, the whole prefix, prev_kv on the even ones) record every
//!   response into [`WatchSession`]s; a stream that breaks (error, end,
//!   cancel) is resumed from its last covered revision + 1 as a new session
//!   linked by `resumes`. One monotonic clock for everything ([`Clock`]).
//! - Outcomes: `Ok` with the header revision and the answer; `Failed` for
//!   an error that means the request did not take effect (the model's
//!   errors: lease not found, lease exists, compacted, future revision; an
//!   invalid argument; a connection that could not be made, so the request
//!   was never sent: "not sent: ..."); `Unknown` for everything else
//!   (timeout, unavailable, leader changed, a connection cut).
//! - Faults: [`Fault`]s are called on the calling thread (servers must be
//!   spawned from the test's thread, see `src/server.rs`) at their `at`
//!   offsets while the clients run; [`kill_leader`], [`sigstop_leader`] and
//!   [`move_leader`] are the usual ones for a [`ServerCluster`].
//! - [`check`]: the linearizability checker on the history, the watch
//!   validators on the sessions, and a cross-check of the two (see
//!   [`watch_vs_history`]); plus the direct scan for the known defect of
//!   issue 11 (a kv whose mod_revision is above its response's header
//!   revision, [`kvs_above_header`]). [`plant_non_durable_read`] plants
//!   that defect in a recorded history, to show the checker flags it.
//!
//! Committed events: `linearize` returns no linearization (only a
//! verdict), so the events the watchers are checked against are the union
//! of what they received ([`CommittedEvents::from_sessions`]: sessions
//! checked against each other), and that union is tied to the history by
//! [`watch_vs_history`]: every answered write is in it at its revision,
//! every answered read equals the state it replays to, every put event's
//! value comes from an op that may have written it then.
//!
//! Limits: a client stops after `max_ops`, at the run's end, or at
//! `duration_max` whatever happens; every call is bounded by `op_timeout`;
//! a broken watch is reopened at most every [`WATCH_REOPEN_PAUSE`]; the
//! drain of the watchers after the clients stop by [`DRAIN_MAX`]; the
//! final revision probe by [`FINAL_REVISION_MAX`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::history::{Answer, CmpOp, Compare, History, Kv, Op, Outcome, Request, Target};
use super::linearize::{self, Options, Verdict};
use super::model;
use super::watch::{self, CommittedEvents, EventKind, Violation, WatchEvent, WatchSession};
use crate::cluster::{self, LEADER_WAIT_MAX};
use crate::grpc::{self, MAX_MESSAGE};
use crate::server::ServerCluster;

/// Pause after a call that failed at once (a killed member refuses at
/// once; do not spin on it).
pub const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Pause before a broken watch stream is reopened.
pub const WATCH_REOPEN_PAUSE: Duration = Duration::from_millis(100);
/// Bound on the watchers catching up with the final revision after the
/// clients stopped.
pub const DRAIN_MAX: Duration = Duration::from_secs(15);
/// Bound on learning the final revision after the clients stopped.
pub const FINAL_REVISION_MAX: Duration = Duration::from_secs(10);
/// TTL of the leases granted (longer than any run: expiry is not modelled).
pub const LEASE_TTL: i64 = 600;
/// Client-chosen lease ids are `LEASE_ID_BASE + 0..lease_ids`.
pub const LEASE_ID_BASE: i64 = 0x7e57_0000;

// ---------------------------------------------------------------- clock

/// The run's clock: nanoseconds since its start, one for every client and
/// watcher.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Nanoseconds of the run's clock, as seconds (for reports).
pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

// ------------------------------------------------------------------ rng

/// splitmix64: small, seeded, good enough to pick operations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ------------------------------------------------------------- workload

/// What to run. `Default` is a small etcd-style run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients, spread over the endpoints.
    pub clients: usize,
    /// How long the clients run (longer if a fault outlasts it: they stop
    /// `settle` after the last fault ended).
    pub duration: Duration,
    /// Bound on the operations of one client.
    pub max_ops: usize,
    pub seed: u64,
    /// Keys `<prefix>0 .. <prefix><key_count - 1>`.
    pub key_count: usize,
    /// Watch streams, spread over the endpoints.
    pub watchers: usize,
    /// Bound on one call; no answer within it is `Unknown`.
    pub op_timeout: Duration,
    /// Client-chosen lease ids in the shared pool.
    pub lease_ids: usize,
    /// The pool is `lease_id_base + 0..lease_ids` (runs one after another
    /// on one store use disjoint pools).
    pub lease_id_base: i64,
    /// Lease traffic (grant, revoke, put with a lease); off: those picks
    /// become plain puts and gets.
    pub leases: bool,
    /// Every key starts with it (and the watchers watch it).
    pub prefix: String,
    /// Watch progress requests at this interval on every watcher (None:
    /// none; etcd 3.4.23 answers one at once, even while events are still
    /// pending, so only use it where that is not a confound).
    pub progress_every: Option<Duration>,
    /// The clients run at least this long after the last fault ended.
    pub settle: Duration,
    /// Hard bound on a client, whatever the faults do.
    pub duration_max: Duration,
    /// The server may skip revisions across a leader change (ferrokv:
    /// DESIGN 1.2, a new leader voids the revisions never complete in
    /// every shard): the check lets revisions go unused around each fault
    /// (see [`with_voids`]). etcd never skips, so its runs leave this off.
    pub voids_at_faults: bool,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            clients: 6,
            duration: Duration::from_secs(3),
            max_ops: 5000,
            seed: 1,
            key_count: 8,
            watchers: 3,
            op_timeout: Duration::from_millis(1500),
            lease_ids: 3,
            lease_id_base: LEASE_ID_BASE,
            leases: true,
            prefix: "robust/".to_string(),
            progress_every: None,
            settle: Duration::from_secs(1),
            duration_max: Duration::from_secs(60),
            voids_at_faults: false,
        }
    }
}

/// A fault the runner calls on its own thread at `at` after the start.
pub struct Fault<'a, C> {
    pub at: Duration,
    pub name: String,
    /// Injects the fault (and undoes it, if it does), blocking; what it
    /// did, for the report. A fault that acts as a client (a compaction)
    /// records its calls in the [`FaultCtx`].
    pub inject: Inject<'a, C>,
}

/// What a [`Fault`] calls.
pub type Inject<'a, C> = Box<dyn FnOnce(&mut C, &mut FaultCtx) -> String + 'a>;

impl<'a, C> Fault<'a, C> {
    pub fn new(
        at: Duration,
        name: impl Into<String>,
        inject: impl FnOnce(&mut C) -> String + 'a,
    ) -> Self {
        Fault::with_ctx(at, name, move |c: &mut C, _: &mut FaultCtx| inject(c))
    }

    /// A fault that also acts as a client of the run: what it records in
    /// the [`FaultCtx`] enters the run's history and watch sessions.
    pub fn with_ctx(
        at: Duration,
        name: impl Into<String>,
        inject: impl FnOnce(&mut C, &mut FaultCtx) -> String + 'a,
    ) -> Self {
        Fault {
            at,
            name: name.into(),
            inject: Box::new(inject),
        }
    }
}

/// Client ids of the ops and watch sessions faults record (above every
/// workload's own, below the voids of [`with_voids`]).
pub const FAULT_CLIENT_BASE: usize = usize::MAX / 4;

/// What a fault may use and record besides its target: the run's clock
/// and endpoints, the store's revision at the run's start and the run's
/// key prefix; the ops it made as a client (they join the run's history),
/// the watch sessions it opened (they join the run's sessions) and the
/// compactions it made with the time every member had applied each (for
/// the watch validators; `u64::MAX`: not known).
pub struct FaultCtx {
    pub clock: Clock,
    pub endpoints: Vec<String>,
    pub initial_revision: i64,
    /// The run's keys are `[prefix, prefix_end)`.
    pub prefix: Vec<u8>,
    pub prefix_end: Vec<u8>,
    pub ops: Vec<Op>,
    pub sessions: Vec<WatchSession>,
    pub compactions: Vec<watch::Compaction>,
    /// Client ids used so far (from [`FAULT_CLIENT_BASE`]).
    clients: usize,
}

impl FaultCtx {
    pub fn new(clock: Clock, endpoints: &[String], initial_revision: i64, prefix: &[u8]) -> Self {
        FaultCtx {
            clock,
            endpoints: endpoints.to_vec(),
            initial_revision,
            prefix: prefix.to_vec(),
            prefix_end: grpc::prefix_end(&String::from_utf8_lossy(prefix)).to_vec(),
            ops: Vec::new(),
            sessions: Vec::new(),
            compactions: Vec::new(),
            clients: 0,
        }
    }

    /// A client id no op or session of the run has.
    pub fn client(&mut self) -> usize {
        self.clients += 1;
        FAULT_CLIENT_BASE + self.clients - 1
    }
}

/// A fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub name: String,
    /// When it was called and when it returned (the run's clock).
    pub start: u64,
    pub end: u64,
    pub detail: String,
}

/// Everything a run recorded.
#[derive(Clone, Debug)]
pub struct Recording {
    /// Sorted by invocation time.
    pub history: History,
    /// Every watch session; `resumes` indexes this vector.
    pub sessions: Vec<WatchSession>,
    pub faults: Vec<FaultRecord>,
    /// The clients' run (start to the last client stopped).
    pub elapsed: Duration,
    /// The store's revision after the clients stopped (a linearizable
    /// read), if some member answered.
    pub final_revision: Option<i64>,
    /// Per watcher, the last revision it covered at the end.
    pub watcher_coverage: Vec<Option<i64>>,
    /// The store's revision before the clients started (1: a fresh
    /// store); the run's prefix held no key then.
    pub initial_revision: i64,
    /// From [`Workload::voids_at_faults`]: the check lets revisions go
    /// unused around `faults` ([`with_voids_at`]).
    pub voids_at_faults: bool,
    /// The compactions faults made ([`FaultCtx::compactions`]); the
    /// history holds their `Compact` calls.
    pub compactions: Vec<watch::Compaction>,
}

impl Recording {
    /// (ok, failed, unknown) operations.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for op in &self.history.ops {
            match op.outcome {
                Outcome::Ok { .. } => c.0 += 1,
                Outcome::Failed(_) => c.1 += 1,
                Outcome::Unknown(_) => c.2 += 1,
            }
        }
        c
    }

    /// The watchers that did not catch up with the final revision.
    pub fn lagging_watchers(&self) -> Vec<(usize, Option<i64>)> {
        let Some(fin) = self.final_revision else {
            return Vec::new();
        };
        self.watcher_coverage
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_none_or(|c| c < fin))
            .map(|(w, c)| (w, *c))
            .collect()
    }

    /// The most frequent failure and unknown messages, for the report.
    pub fn error_summary(&self, top: usize) -> String {
        let mut by: HashMap<String, usize> = HashMap::new();
        for op in &self.history.ops {
            let m = match &op.outcome {
                Outcome::Failed(m) => format!("failed: {}", shorten(m)),
                Outcome::Unknown(m) => format!("unknown: {}", shorten(m)),
                Outcome::Ok { .. } => continue,
            };
            *by.entry(m).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .take(top)
            .map(|(m, n)| format!("    {n:5} {m}\n"))
            .collect()
    }

    /// One line per op (`client call ret: request -> outcome`), for a file.
    pub fn history_text(&self) -> String {
        let mut s = String::new();
        for op in &self.history.ops {
            s += &format!(
                "{} {:.6} {:.6}: {} -> {}\n",
                op.client,
                secs(op.call),
                secs(op.ret),
                model::show_request(&op.request),
                model::show_outcome(&op.outcome)
            );
        }
        s
    }

    /// Every watch session and response, for a file.
    pub fn sessions_text(&self) -> String {
        let mut s = String::new();
        for (i, w) in self.sessions.iter().enumerate() {
            s += &format!("session {i}: {} (call {:.6})\n", w.describe(), secs(w.call));
            for r in &w.responses {
                let mut flags = String::new();
                for (on, name) in [
                    (r.created, " created"),
                    (r.canceled, " canceled"),
                    (r.progress_notify, " progress"),
                ] {
                    if on {
                        flags += name;
                    }
                }
                if r.compact_revision != 0 {
                    flags += &format!(" compact_revision={}", r.compact_revision);
                }
                s += &format!(
                    "  {:.6} header={}{flags}\n",
                    secs(r.time),
                    r.header_revision
                );
                for e in &r.events {
                    s += &format!(
                        "    {:?} {}{}\n",
                        e.kind,
                        model::show_kv(&e.kv),
                        e.prev_kv
                            .as_ref()
                            .map_or(String::new(), |p| format!(" prev {}", model::show_kv(p)))
                    );
                }
            }
        }
        s
    }

    /// A short summary: ops, outcomes, faults, watch sessions.
    pub fn summary(&self) -> String {
        let (ok, failed, unknown) = self.counts();
        let events: usize = self.sessions.iter().map(|s| s.events().count()).sum();
        let mut s = format!(
            "{} ops in {:.1}s ({ok} ok, {failed} failed, {unknown} unknown); final revision {:?}; \
             {} watch sessions, {events} events received\n",
            self.history.ops.len(),
            self.elapsed.as_secs_f64(),
            self.final_revision,
            self.sessions.len(),
        );
        for f in &self.faults {
            s += &format!(
                "  fault {} at {:.2}s..{:.2}s: {}\n",
                f.name,
                secs(f.start),
                secs(f.end),
                f.detail
            );
        }
        let errors = self.error_summary(6);
        if !errors.is_empty() {
            s += "  most frequent errors:\n";
            s += &errors;
        }
        s
    }
}

fn shorten(m: &str) -> String {
    let m = m.lines().next().unwrap_or("");
    if m.len() > 120 {
        let mut end = 120;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &m[..end])
    } else {
        m.to_string()
    }
}

impl Workload {
    fn key(&self, i: usize) -> Vec<u8> {
        format!("{}{i}", self.prefix).into_bytes()
    }

    fn prefix_end(&self) -> Vec<u8> {
        grpc::prefix_end(&self.prefix).to_vec()
    }

    /// Runs the workload against `endpoints` (client URLs), calling each
    /// fault with `target` at its time, on this thread. Blocks until the
    /// clients stopped and the watchers caught up (or [`DRAIN_MAX`]).
    pub fn run<C>(
        &self,
        target: &mut C,
        endpoints: &[String],
        faults: Vec<Fault<'_, C>>,
    ) -> Recording {
        assert!(!endpoints.is_empty(), "no endpoint");
        assert!(
            self.key_count > 0 && self.clients > 0,
            "no keys or no clients"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let clock = Clock::start();
        // The model starts from this revision with the prefix empty, so a
        // run may follow others on the same store under a fresh prefix.
        let (initial_revision, held) = runtime
            .block_on(prefix_now(endpoints, &self.prefix))
            .expect("no member answered a range of the run's prefix");
        assert_eq!(
            held, 0,
            "the run's prefix {} already holds keys",
            self.prefix
        );
        let stop = Arc::new(AtomicBool::new(false));
        let drain_to = Arc::new(AtomicI64::new(0));
        let hard_stop = Arc::new(AtomicBool::new(false));

        // Watchers first, so that they are open before the first write
        // (they watch from revision 1 anyway).
        let mut watchers = Vec::new();
        let mut coverage = Vec::new();
        for w in 0..self.watchers {
            let covered = Arc::new(AtomicI64::new(0));
            coverage.push(covered.clone());
            let spec = WatcherSpec {
                client: self.clients + w,
                endpoint: endpoints[w % endpoints.len()].clone(),
                key: self.prefix.as_bytes().to_vec(),
                range_end: self.prefix_end(),
                prev_kv: w % 2 == 0,
                progress_every: self.progress_every,
                // A fresh store: from revision 1, as etcd's robustness
                // watchers do; else from the first revision of this run.
                from: if initial_revision <= 1 {
                    1
                } else {
                    initial_revision + 1
                },
            };
            watchers.push(runtime.spawn(watcher(
                spec,
                clock,
                covered,
                drain_to.clone(),
                hard_stop.clone(),
            )));
        }

        let started = Instant::now();
        let clients: Vec<_> = (0..self.clients)
            .map(|c| {
                let spec = ClientSpec {
                    client: c,
                    endpoint: endpoints[c % endpoints.len()].clone(),
                    keys: (0..self.key_count).map(|i| self.key(i)).collect(),
                    prefix: self.prefix.as_bytes().to_vec(),
                    prefix_end: self.prefix_end(),
                    lease_ids: self.lease_ids.max(1),
                    lease_id_base: self.lease_id_base,
                    first_revision: initial_revision.max(1),
                    leases: self.leases,
                    max_ops: self.max_ops,
                    op_timeout: self.op_timeout,
                    deadline: started + self.duration_max,
                    seed: self.seed ^ (c as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f),
                };
                runtime.spawn(run_client(spec, clock, stop.clone()))
            })
            .collect();

        let mut ctx = FaultCtx::new(clock, endpoints, initial_revision, self.prefix.as_bytes());
        let records = run_faults(faults, target, &mut ctx, started);
        let end_at = match records.last() {
            Some(_) => self.duration.max(started.elapsed() + self.settle),
            None => self.duration,
        };
        if let Some(rest) = end_at.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        stop.store(true, Ordering::SeqCst);
        let mut ops = std::mem::take(&mut ctx.ops);
        for c in clients {
            ops.extend(runtime.block_on(c).expect("client task"));
        }
        let elapsed = started.elapsed();

        // The final revision, then the watchers catch up with it.
        let final_revision = runtime
            .block_on(prefix_now(endpoints, &self.prefix))
            .map(|(r, _)| r);
        if let Some(r) = final_revision {
            drain_to.store(r, Ordering::SeqCst);
            let deadline = Instant::now() + DRAIN_MAX;
            while Instant::now() < deadline && coverage.iter().any(|c| c.load(Ordering::SeqCst) < r)
            {
                thread::sleep(Duration::from_millis(50));
            }
        }
        hard_stop.store(true, Ordering::SeqCst);
        let mut sessions: Vec<WatchSession> = Vec::new();
        let mut watcher_coverage = Vec::new();
        for w in watchers {
            let mine = runtime.block_on(w).expect("watcher task");
            let base = sessions.len();
            watcher_coverage.push(mine.iter().filter_map(|s| s.last_revision()).max());
            sessions.extend(mine.into_iter().map(|mut s| {
                s.resumes = s.resumes.map(|p| p + base);
                s
            }));
        }
        // The faults' watch sessions last (the watchers' indexes stay).
        sessions.append(&mut ctx.sessions);
        runtime.shutdown_timeout(self.op_timeout);
        Recording {
            history: History { ops }.sorted(),
            sessions,
            faults: records,
            elapsed,
            final_revision,
            watcher_coverage,
            initial_revision,
            voids_at_faults: self.voids_at_faults,
            compactions: ctx.compactions,
        }
    }
}

// --------------------------------------------------------------- faults

/// Calls the faults at their times (from `started`) on this thread, each
/// blocking until it is undone; what each did, on the run's clock
/// (`ctx.clock`). What they did as clients is left in `ctx`.
pub fn run_faults<C>(
    faults: Vec<Fault<'_, C>>,
    target: &mut C,
    ctx: &mut FaultCtx,
    started: Instant,
) -> Vec<FaultRecord> {
    let clock = ctx.clock;
    let mut faults = faults;
    faults.sort_by_key(|f| f.at);
    let mut records = Vec::new();
    for f in faults {
        if let Some(rest) = f.at.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        let start = clock.now();
        eprintln!("  [{:.2}s] fault {}", secs(start), f.name);
        let detail = (f.inject)(target, ctx);
        let end = clock.now();
        eprintln!("  [{:.2}s] fault {} done: {detail}", secs(end), f.name);
        records.push(FaultRecord {
            name: f.name,
            start,
            end,
            detail,
        });
    }
    records
}

/// kill -9 of the leader, then after `down_for` its restart (waits until
/// it is healthy).
pub fn kill_leader<'a>(at: Duration, down_for: Duration) -> Fault<'a, ServerCluster> {
    Fault::new(
        at,
        "kill -9 leader, restart",
        move |c: &mut ServerCluster| {
            let all: Vec<usize> = (0..c.members.len()).collect();
            let (leader, st) = cluster::wait_leader(c, &all, LEADER_WAIT_MAX);
            c.members[leader].kill_9();
            let killed = Instant::now();
            thread::sleep(down_for);
            c.members[leader].start_again();
            format!(
                "killed {} (leader in term {}), restarted healthy {:.2}s later",
                c.members[leader].name(),
                st.raft_term,
                killed.elapsed().as_secs_f64()
            )
        },
    )
}

/// SIGSTOP of the leader for `stopped_for` (make it past the election
/// timeout), then SIGCONT.
pub fn sigstop_leader<'a>(at: Duration, stopped_for: Duration) -> Fault<'a, ServerCluster> {
    Fault::new(
        at,
        "SIGSTOP leader, SIGCONT",
        move |c: &mut ServerCluster| {
            let all: Vec<usize> = (0..c.members.len()).collect();
            let (leader, st) = cluster::wait_leader(c, &all, LEADER_WAIT_MAX);
            c.members[leader].sigstop();
            thread::sleep(stopped_for);
            let running = c.members[leader].is_running();
            c.members[leader].sigcont();
            format!(
                "stopped {} (leader in term {}) for {:.2}s{}",
                c.members[leader].name(),
                st.raft_term,
                stopped_for.as_secs_f64(),
                if running { "" } else { " (it exited!)" }
            )
        },
    )
}

/// `etcdctl move-leader` to the next member after the leader.
pub fn move_leader<'a>(at: Duration) -> Fault<'a, ServerCluster> {
    Fault::new(at, "move leader", move |c: &mut ServerCluster| {
        let all: Vec<usize> = (0..c.members.len()).collect();
        let (leader, st) = cluster::wait_leader(c, &all, LEADER_WAIT_MAX);
        let next = (leader + 1) % c.members.len();
        let Some(next_id) = cluster::statuses(c, &all)
            .into_iter()
            .find(|s| s.member == next)
            .map(|s| s.member_id)
        else {
            return format!("no status of {}", c.members[next].name());
        };
        let out = cluster::probe(&c.endpoints(), &["move-leader", &format!("{next_id:x}")]);
        format!(
            "move-leader {} (term {}) -> {}: exit {} {}",
            c.members[leader].name(),
            st.raft_term,
            c.members[next].name(),
            out.code,
            out.stdout.trim()
        )
    })
}

/// How far below the revision it reads the [`compact_recent`] fault
/// compacts.
pub const COMPACT_BACK: i64 = 3;
/// Bound on each call of the [`compact_recent`] fault.
const COMPACT_CALL_MAX: Duration = Duration::from_secs(5);
/// How long a probe watch from below a compaction waits for its cancel.
const COMPACT_PROBE_MAX: Duration = Duration::from_secs(2);

/// Compaction during load, as a client of the run: reads the store's
/// revision R (a linearizable read, not recorded), compacts at
/// `max(R - back, initial revision)` (recorded in `ctx.ops`: the model
/// then knows that ranges below it fail `compacted`), reads the run's
/// prefix on every member at one below it and at it (recorded: the model
/// wants `compacted`, then the state at it), then opens on every
/// member a watch of the run's prefix from one below the compacted
/// revision and records it until canceled (or [`COMPACT_PROBE_MAX`]):
/// etcd cancels it with compact_revision, which the watch validators
/// check against the compactions made. With one member the compaction is
/// applied when its call returns (so the probes must be canceled); with
/// more, when every member applied it is not known (`u64::MAX`: only the
/// cancels sent are checked). What it did, for the report.
pub fn compact_recent(ctx: &mut FaultCtx, back: i64) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let endpoints = ctx.endpoints.clone();
    let Some((now, _)) = runtime.block_on(prefix_now(&endpoints, "\u{1}fault-probe/")) else {
        return "skipped: no member answered a read of the revision".to_string();
    };
    let revision = (now - back).max(ctx.initial_revision).max(1);
    let client = ctx.client();
    let call = Call {
        request: Request::Compact { revision },
        prev_kv: false,
    };
    let t0 = ctx.clock.now();
    let outcome = runtime.block_on(async {
        let ch = grpc::connect_lazy(&endpoints[0]);
        execute(&ch, &call, COMPACT_CALL_MAX).await
    });
    let t1 = ctx.clock.now();
    ctx.ops.push(Op {
        client,
        call: t0,
        ret: t1,
        request: call.request,
        outcome: outcome.clone(),
    });
    let made = match &outcome {
        Outcome::Ok { .. } => Some(if endpoints.len() == 1 { t1 } else { u64::MAX }),
        Outcome::Unknown(_) => Some(u64::MAX),
        Outcome::Failed(_) => None,
    };
    let mut detail = format!(
        "compact {revision} (read {now}) via {}: {}",
        endpoints[0],
        model::show_outcome(&outcome)
    );
    if made.is_none() {
        return detail;
    }
    ctx.compactions.push(watch::Compaction {
        revision,
        done: made.unwrap_or(u64::MAX),
    });
    // On every member, a linearizable range of the run's prefix just
    // below the compaction and at it (recorded: the first must fail
    // `compacted` once the compaction answered, the second answers the
    // state at it).
    let mut reads = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        for at in [revision - 1, revision] {
            if at < 1 {
                continue;
            }
            let call = Call {
                request: Request::Range {
                    key: ctx.prefix.clone(),
                    range_end: ctx.prefix_end.clone(),
                    revision: at,
                    serializable: false,
                },
                prev_kv: false,
            };
            let t0 = ctx.clock.now();
            let outcome = runtime.block_on(async {
                let ch = grpc::connect_lazy(e);
                execute(&ch, &call, COMPACT_CALL_MAX).await
            });
            let t1 = ctx.clock.now();
            reads.push(format!(
                "m{} at {at}: {}",
                i + 1,
                match &outcome {
                    Outcome::Ok { .. } => "answered".to_string(),
                    Outcome::Failed(m) if m.contains("compacted") => "compacted".to_string(),
                    o => shorten(&model::show_outcome(o)),
                }
            ));
            ctx.ops.push(Op {
                client,
                call: t0,
                ret: t1,
                request: call.request,
                outcome,
            });
        }
    }
    detail += &format!("; ranges {}", reads.join(", "));
    // Let the followers apply it before the probes (not relied upon).
    if endpoints.len() > 1 {
        thread::sleep(Duration::from_millis(300));
    }
    let from = (revision - 1).max(1);
    let mut probes = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        let client = ctx.client();
        let s = runtime.block_on(probe_watch(
            e,
            client,
            &ctx.prefix,
            &ctx.prefix_end,
            from,
            ctx.clock,
        ));
        let cancel = s.responses.iter().find(|r| r.canceled);
        probes.push(match cancel {
            Some(r) => format!(
                "m{} canceled compact_revision={}",
                i + 1,
                r.compact_revision
            ),
            None => format!(
                "m{} not canceled ({} events)",
                i + 1,
                s.responses.iter().map(|r| r.events.len()).sum::<usize>()
            ),
        });
        if !s.responses.is_empty() {
            ctx.sessions.push(s);
        }
    }
    detail += &format!("; watches from {from}: {}", probes.join(", "));
    detail
}

/// Opens a Watch stream on `channel` whose requests are what `rx`
/// receives; a failed open as `status` words it.
pub async fn open_watch(
    channel: Channel,
    rx: mpsc::Receiver<pb::WatchRequest>,
    status: fn(&tonic::Status) -> String,
) -> Result<tonic::Streaming<pb::WatchResponse>, String> {
    let mut g = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
    g.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<pb::WatchRequest, pb::WatchResponse>::default();
    g.streaming(
        tonic::Request::new(ReceiverStream::new(rx)),
        PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
    .map_err(|st| status(&st))
}

/// A watch of `[key, range_end)` from `from` on `endpoint`, recorded until
/// it is canceled, its stream ends, or [`COMPACT_PROBE_MAX`].
async fn probe_watch(
    endpoint: &str,
    client: usize,
    key: &[u8],
    range_end: &[u8],
    from: i64,
    clock: Clock,
) -> WatchSession {
    let mut s = WatchSession::new(client, key, range_end, from);
    s.call = clock.now();
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b(key),
                range_end: b(range_end),
                start_revision: from,
                ..Default::default()
            },
        )),
    };
    let (tx, rx) = mpsc::channel::<pb::WatchRequest>(1);
    let _ = tx.send(create).await;
    let channel = grpc::connect_lazy(endpoint);
    let deadline = tokio::time::Instant::now() + COMPACT_PROBE_MAX;
    let open = open_watch(channel, rx, status_text);
    let Ok(Ok(mut stream)) = tokio::time::timeout_at(deadline, open).await else {
        return s;
    };
    while let Ok(Ok(Some(resp))) = tokio::time::timeout_at(deadline, stream.message()).await {
        let r = watch_response(&resp, clock.now());
        let canceled = r.canceled;
        s.responses.push(r);
        if canceled {
            break;
        }
    }
    drop(tx);
    s
}

// --------------------------------------------------------------- client

struct ClientSpec {
    client: usize,
    endpoint: String,
    keys: Vec<Vec<u8>>,
    prefix: Vec<u8>,
    prefix_end: Vec<u8>,
    lease_ids: usize,
    lease_id_base: i64,
    /// The store's revision when the run began: no range goes below it
    /// (the model knows nothing older).
    first_revision: i64,
    leases: bool,
    max_ops: usize,
    op_timeout: Duration,
    deadline: Instant,
    seed: u64,
}

/// What one client knows, to make its next request.
struct ClientState {
    rng: Rng,
    /// The last mod_revision seen per key (0: absent), for the CAS txns.
    last_mod: HashMap<Vec<u8>, i64>,
    /// The highest header revision seen.
    last_revision: i64,
    /// Puts made (for unique values).
    n: u64,
}

/// One call: the request as the history records it, and whether a put asks
/// prev_kv.
pub struct Call {
    pub request: Request,
    pub prev_kv: bool,
}

fn range(key: &[u8], range_end: &[u8], revision: i64, serializable: bool) -> Request {
    Request::Range {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        revision,
        serializable,
    }
}

impl ClientSpec {
    fn value(&self, st: &mut ClientState) -> Vec<u8> {
        st.n += 1;
        format!("c{}.{}", self.client, st.n).into_bytes()
    }

    fn lease(&self, st: &mut ClientState) -> i64 {
        self.lease_id_base + st.rng.below(self.lease_ids as u64) as i64
    }

    /// The next request, from the etcd-style mix (weights out of 100).
    fn next(&self, st: &mut ClientState) -> Call {
        let key = self.keys[st.rng.below(self.keys.len() as u64) as usize].clone();
        let mut roll = st.rng.below(100);
        if !self.leases {
            roll = match roll {
                57..=61 => 37 + roll % 20,
                94..=99 => roll % 21,
                r => r,
            };
        }
        let request = match roll {
            0..=20 => range(&key, &[], 0, false),
            21..=28 => range(&key, &[], 0, true),
            29..=33 => range(&self.prefix, &self.prefix_end, 0, false),
            34..=36 => {
                let back = st.rng.below(4) as i64;
                range(
                    &key,
                    &[],
                    (st.last_revision - back).max(self.first_revision),
                    false,
                )
            }
            37..=56 => {
                let value = self.value(st);
                return Call {
                    request: Request::Put {
                        key,
                        value,
                        lease: 0,
                    },
                    prev_kv: roll % 3 == 0,
                };
            }
            57..=61 => {
                let (value, lease) = (self.value(st), self.lease(st));
                Request::Put { key, value, lease }
            }
            62..=68 => Request::Delete {
                key,
                range_end: Vec::new(),
            },
            69 => Request::Delete {
                key: self.prefix.clone(),
                range_end: self.prefix_end.clone(),
            },
            70..=89 => {
                // Kubernetes' GuaranteedUpdate.
                let seen = st.last_mod.get(&key).copied().unwrap_or(0);
                let value = self.value(st);
                Request::Txn {
                    compares: vec![Compare {
                        key: key.clone(),
                        op: CmpOp::Equal,
                        target: Target::Mod(seen),
                    }],
                    success: vec![Request::Put {
                        key: key.clone(),
                        value,
                        lease: 0,
                    }],
                    failure: vec![range(&key, &[], 0, false)],
                }
            }
            90..=93 => {
                // Two keys in one revision (across shards, likely).
                let mut other = self.keys[st.rng.below(self.keys.len() as u64) as usize].clone();
                if other == key {
                    other = self.keys
                        [(self.keys.iter().position(|k| *k == key).unwrap() + 1) % self.keys.len()]
                    .clone();
                }
                let (v1, v2) = (self.value(st), self.value(st));
                let mut success = vec![Request::Put {
                    key: key.clone(),
                    value: v1,
                    lease: 0,
                }];
                if other != key {
                    success.push(Request::Put {
                        key: other,
                        value: v2,
                        lease: 0,
                    });
                }
                Request::Txn {
                    compares: Vec::new(),
                    success,
                    failure: Vec::new(),
                }
            }
            94..=96 => Request::LeaseGrant {
                id: self.lease(st),
                ttl: LEASE_TTL,
            },
            _ => Request::LeaseRevoke { id: self.lease(st) },
        };
        Call {
            request,
            prev_kv: false,
        }
    }
}

/// What a client learns from an answer: revisions seen, mod_revisions of
/// the keys it read or wrote.
fn learn(st: &mut ClientState, request: &Request, outcome: &Outcome) {
    let Outcome::Ok { revision, answer } = outcome else {
        return;
    };
    st.last_revision = st.last_revision.max(*revision);
    fn walk(st: &mut ClientState, request: &Request, answer: &Answer, revision: i64) {
        match (request, answer) {
            (Request::Range { key, range_end, .. }, Answer::Range { kvs, .. }) => {
                if range_end.is_empty() {
                    st.last_mod
                        .insert(key.clone(), kvs.first().map_or(0, |kv| kv.mod_revision));
                } else {
                    for kv in kvs {
                        st.last_mod.insert(kv.key.clone(), kv.mod_revision);
                    }
                }
            }
            (Request::Put { key, .. }, Answer::Put { .. }) => {
                st.last_mod.insert(key.clone(), revision);
            }
            (Request::Delete { key, range_end }, Answer::Delete { .. }) if range_end.is_empty() => {
                st.last_mod.insert(key.clone(), 0);
            }
            (
                Request::Txn {
                    success, failure, ..
                },
                Answer::Txn { succeeded, results },
            ) => {
                let branch = if *succeeded { success } else { failure };
                for (r, a) in branch.iter().zip(results) {
                    walk(st, r, a, revision);
                }
            }
            _ => {}
        }
    }
    walk(st, request, answer, *revision);
}

async fn run_client(spec: ClientSpec, clock: Clock, stop: Arc<AtomicBool>) -> Vec<Op> {
    let mut st = ClientState {
        rng: Rng::new(spec.seed),
        last_mod: HashMap::new(),
        last_revision: spec.first_revision,
        n: 0,
    };
    let mut ops = Vec::new();
    let mut channel: Option<Channel> = None;
    for _ in 0..spec.max_ops {
        if stop.load(Ordering::SeqCst) || Instant::now() >= spec.deadline {
            break;
        }
        let call = spec.next(&mut st);
        let ch = channel
            .get_or_insert_with(|| grpc::connect_lazy(&spec.endpoint))
            .clone();
        let t0 = clock.now();
        let outcome = execute(&ch, &call, spec.op_timeout).await;
        let t1 = clock.now();
        learn(&mut st, &call.request, &outcome);
        let failed_fast = !matches!(outcome, Outcome::Ok { .. })
            && t1 - t0 < (spec.op_timeout.as_nanos() as u64) / 2;
        if matches!(outcome, Outcome::Unknown(_)) || (failed_fast && !is_model_error(&outcome)) {
            // A fresh connection: the member may have been restarted.
            channel = None;
        }
        ops.push(Op {
            client: spec.client,
            call: t0,
            ret: t1,
            request: call.request,
            outcome: outcome.clone(),
        });
        if failed_fast && !is_model_error(&outcome) {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    ops
}

fn is_model_error(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed(m) if model::ModelError::classify(m).is_some())
}

// ------------------------------------------------------ request mapping

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

fn pb_range(key: &[u8], range_end: &[u8], revision: i64, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: b(key),
        range_end: b(range_end),
        revision,
        serializable,
        ..Default::default()
    }
}

fn pb_compare(c: &Compare) -> pb::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match c.op {
        CmpOp::Equal => R::Equal,
        CmpOp::NotEqual => R::NotEqual,
        CmpOp::Greater => R::Greater,
        CmpOp::Less => R::Less,
    };
    let (target, union) = match &c.target {
        Target::Version(v) => (T::Version, U::Version(*v)),
        Target::Create(v) => (T::Create, U::CreateRevision(*v)),
        Target::Mod(v) => (T::Mod, U::ModRevision(*v)),
        Target::Value(v) => (T::Value, U::Value(b(v))),
        Target::Lease(v) => (T::Lease, U::Lease(*v)),
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: b(&c.key),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

fn pb_op(r: &Request) -> pb::RequestOp {
    use pb::request_op::Request as R;
    let request = match r {
        Request::Range {
            key,
            range_end,
            revision,
            serializable,
        } => R::RequestRange(pb_range(key, range_end, *revision, *serializable)),
        Request::Put { key, value, lease } => R::RequestPut(pb::PutRequest {
            key: b(key),
            value: b(value),
            lease: *lease,
            ..Default::default()
        }),
        Request::Delete { key, range_end } => R::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b(key),
            range_end: b(range_end),
            ..Default::default()
        }),
        Request::Txn { .. } => R::RequestTxn(pb_txn(r)),
        Request::LeaseGrant { .. } | Request::LeaseRevoke { .. } | Request::Compact { .. } => {
            panic!("a lease call or a compaction cannot be a txn op")
        }
        Request::RangeLimit {
            key,
            range_end,
            revision,
            limit,
        } => R::RequestRange(pb::RangeRequest {
            limit: *limit,
            ..pb_range(key, range_end, *revision, false)
        }),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn pb_txn(r: &Request) -> pb::TxnRequest {
    let Request::Txn {
        compares,
        success,
        failure,
    } = r
    else {
        unreachable!()
    };
    pb::TxnRequest {
        compare: compares.iter().map(pb_compare).collect(),
        success: success.iter().map(pb_op).collect(),
        failure: failure.iter().map(pb_op).collect(),
    }
}

pub fn kv_of(kv: &mvccpb::KeyValue) -> Kv {
    Kv {
        key: kv.key.to_vec(),
        value: kv.value.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn range_answer(resp: &pb::RangeResponse) -> Answer {
    Answer::Range {
        kvs: resp.kvs.iter().map(kv_of).collect(),
        count: resp.count,
    }
}

fn txn_answer(resp: &pb::TxnResponse) -> Answer {
    use pb::response_op::Response as R;
    Answer::Txn {
        succeeded: resp.succeeded,
        results: resp
            .responses
            .iter()
            .map(|r| match &r.response {
                Some(R::ResponseRange(x)) => range_answer(x),
                Some(R::ResponsePut(x)) => Answer::Put {
                    prev: x.prev_kv.as_ref().map(kv_of),
                },
                Some(R::ResponseDeleteRange(x)) => Answer::Delete { deleted: x.deleted },
                Some(R::ResponseTxn(x)) => txn_answer(x),
                // Shows as a mismatch in the checker's report.
                None => Answer::Range {
                    kvs: Vec::new(),
                    count: -1,
                },
            })
            .collect(),
    }
}

fn rev(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// A status and its sources, one text.
fn status_text(s: &tonic::Status) -> String {
    let mut t = format!("{:?}: {}", s.code(), s.message());
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        t += &format!(": {e}");
        src = e.source();
    }
    t
}

/// How a refused call ends in the history.
pub fn classify(s: &tonic::Status) -> Outcome {
    let text = status_text(s);
    if model::ModelError::classify(s.message()).is_some() {
        return Outcome::Failed(s.message().to_string());
    }
    if s.code() == tonic::Code::InvalidArgument {
        return Outcome::Failed(text);
    }
    // No connection could be made: the request was never sent.
    let lower = text.to_ascii_lowercase();
    if lower.contains("tcp connect error")
        || lower.contains("connection refused")
        || lower.contains("error trying to connect")
    {
        return Outcome::Failed(format!("not sent: {text}"));
    }
    Outcome::Unknown(text)
}

async fn unary<Req, Resp>(
    ch: &Channel,
    path: &'static str,
    req: Req,
    bound: Duration,
    answer: impl FnOnce(&Resp) -> (i64, Answer),
) -> Outcome
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    match grpc::try_unary_within::<Req, Resp>(ch, path, req, bound).await {
        None => Outcome::Unknown(format!("no answer within {bound:?}")),
        Some(Err(status)) => classify(&status),
        Some(Ok(resp)) => {
            let (revision, answer) = answer(&resp);
            Outcome::Ok { revision, answer }
        }
    }
}

/// Sends one call on `ch`, bounded by `bound`; how it ended.
pub async fn execute(ch: &Channel, call: &Call, bound: Duration) -> Outcome {
    match &call.request {
        Request::RangeLimit {
            key,
            range_end,
            revision,
            limit,
        } => {
            let req = pb::RangeRequest {
                limit: *limit,
                ..pb_range(key, range_end, *revision, false)
            };
            unary(
                ch,
                "/etcdserverpb.KV/Range",
                req,
                bound,
                |r: &pb::RangeResponse| (rev(&r.header), range_answer(r)),
            )
            .await
        }
        Request::Compact { revision } => {
            let req = pb::CompactionRequest {
                revision: *revision,
                physical: false,
            };
            unary(
                ch,
                "/etcdserverpb.KV/Compact",
                req,
                bound,
                |r: &pb::CompactionResponse| (rev(&r.header), Answer::Compact),
            )
            .await
        }
        Request::Range {
            key,
            range_end,
            revision,
            serializable,
        } => {
            let req = pb_range(key, range_end, *revision, *serializable);
            unary(
                ch,
                "/etcdserverpb.KV/Range",
                req,
                bound,
                |r: &pb::RangeResponse| (rev(&r.header), range_answer(r)),
            )
            .await
        }
        Request::Put { key, value, lease } => {
            let req = pb::PutRequest {
                key: b(key),
                value: b(value),
                lease: *lease,
                prev_kv: call.prev_kv,
                ..Default::default()
            };
            unary(
                ch,
                "/etcdserverpb.KV/Put",
                req,
                bound,
                |r: &pb::PutResponse| {
                    (
                        rev(&r.header),
                        Answer::Put {
                            prev: r.prev_kv.as_ref().map(kv_of),
                        },
                    )
                },
            )
            .await
        }
        Request::Delete { key, range_end } => {
            let req = pb::DeleteRangeRequest {
                key: b(key),
                range_end: b(range_end),
                ..Default::default()
            };
            unary(
                ch,
                "/etcdserverpb.KV/DeleteRange",
                req,
                bound,
                |r: &pb::DeleteRangeResponse| {
                    (rev(&r.header), Answer::Delete { deleted: r.deleted })
                },
            )
            .await
        }
        Request::Txn { .. } => {
            let req = pb_txn(&call.request);
            unary(
                ch,
                "/etcdserverpb.KV/Txn",
                req,
                bound,
                |r: &pb::TxnResponse| (rev(&r.header), txn_answer(r)),
            )
            .await
        }
        Request::LeaseGrant { id, ttl } => {
            let req = pb::LeaseGrantRequest { ttl: *ttl, id: *id };
            let out = unary(
                ch,
                "/etcdserverpb.Lease/LeaseGrant",
                req,
                bound,
                |r: &pb::LeaseGrantResponse| {
                    // The legacy `error` field: a refusal without a status.
                    let rv = if r.error.is_empty() {
                        rev(&r.header)
                    } else {
                        -1
                    };
                    (rv, Answer::LeaseGrant)
                },
            )
            .await;
            match out {
                Outcome::Ok { revision: -1, .. } => {
                    Outcome::Unknown("LeaseGrant answered with an error field".into())
                }
                o => o,
            }
        }
        Request::LeaseRevoke { id } => {
            let req = pb::LeaseRevokeRequest { id: *id };
            unary(
                ch,
                "/etcdserverpb.Lease/LeaseRevoke",
                req,
                bound,
                |r: &pb::LeaseRevokeResponse| (rev(&r.header), Answer::LeaseRevoke),
            )
            .await
        }
    }
}

/// The store's revision now and the keys `prefix` holds: a linearizable
/// count-only range of it through the endpoints in turn, until one
/// answers.
pub async fn prefix_now(endpoints: &[String], prefix: &str) -> Option<(i64, i64)> {
    let deadline = Instant::now() + FINAL_REVISION_MAX;
    let mut i = 0;
    while Instant::now() < deadline {
        let ch = grpc::connect_lazy(&endpoints[i % endpoints.len()]);
        let req = pb::RangeRequest {
            key: Bytes::from(prefix.to_string()),
            range_end: grpc::prefix_end(prefix),
            count_only: true,
            ..Default::default()
        };
        if let Some(Ok(r)) = grpc::try_unary_within::<pb::RangeRequest, pb::RangeResponse>(
            &ch,
            "/etcdserverpb.KV/Range",
            req,
            Duration::from_secs(2),
        )
        .await
        {
            return Some((rev(&r.header), r.count));
        }
        i += 1;
        tokio::time::sleep(ERROR_PAUSE).await;
    }
    None
}

// -------------------------------------------------------------- watcher

struct WatcherSpec {
    client: usize,
    endpoint: String,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    progress_every: Option<Duration>,
    /// The first session's start revision.
    from: i64,
}

/// A watch response as the validators take it, received at `time`.
pub fn watch_response(r: &pb::WatchResponse, time: u64) -> watch::WatchResponse {
    let events: Vec<WatchEvent> = r
        .events
        .iter()
        .map(|e| WatchEvent {
            kind: if e.r#type == mvccpb::event::EventType::Delete as i32 {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            kv: e.kv.as_ref().map(kv_of).unwrap_or_else(|| Kv {
                key: Vec::new(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            }),
            prev_kv: e.prev_kv.as_ref().map(kv_of),
        })
        .collect();
    watch::WatchResponse {
        header_revision: rev(&r.header),
        progress_notify: !r.created && !r.canceled && events.is_empty() && r.compact_revision == 0,
        events,
        compact_revision: r.compact_revision,
        canceled: r.canceled,
        created: r.created,
        time,
    }
}

fn chain_last(sessions: &[WatchSession], current: &WatchSession) -> Option<i64> {
    current
        .last_revision()
        .or_else(|| sessions.iter().filter_map(|s| s.last_revision()).max())
}

/// One watcher: sessions from revision 1, each resuming the last one that
/// received something, until it covered `drain_to` (once set) or
/// `hard_stop`.
async fn watcher(
    spec: WatcherSpec,
    clock: Clock,
    covered: Arc<AtomicI64>,
    drain_to: Arc<AtomicI64>,
    hard_stop: Arc<AtomicBool>,
) -> Vec<WatchSession> {
    let mut sessions: Vec<WatchSession> = Vec::new();
    let done = |covered_now: i64| {
        let d = drain_to.load(Ordering::SeqCst);
        hard_stop.load(Ordering::SeqCst) || (d > 0 && covered_now >= d)
    };
    'reopen: loop {
        let prev = sessions.len().checked_sub(1);
        let start = match prev.map(|p| &sessions[p]) {
            None => spec.from,
            Some(p) => p.last_revision().map_or(p.start_revision, |l| l + 1),
        };
        let mut s = WatchSession::new(spec.client, &spec.key, &spec.range_end, start);
        s.prev_kv = spec.prev_kv;
        s.resumes = prev;
        s.call = clock.now();
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b(&spec.key),
                    range_end: b(&spec.range_end),
                    start_revision: start,
                    prev_kv: spec.prev_kv,
                    ..Default::default()
                },
            )),
        };
        let (tx, rx) = mpsc::channel::<pb::WatchRequest>(16);
        let _ = tx.send(create).await;
        let channel = grpc::connect_lazy(&spec.endpoint);
        let open = open_watch(channel, rx, status_text);
        // A member that is stopped may take long to answer: give up on the
        // open only when the run ends.
        let wait_done = async {
            while !done(chain_last(&sessions, &s).unwrap_or(0)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let mut stream = tokio::select! {
            r = open => match r {
                Ok(stream) => stream,
                Err(_) => {
                    if done(chain_last(&sessions, &s).unwrap_or(0)) {
                        break 'reopen;
                    }
                    tokio::time::sleep(WATCH_REOPEN_PAUSE).await;
                    continue 'reopen;
                }
            },
            _ = wait_done => break 'reopen,
        };
        let mut last_progress = Instant::now();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(100), stream.message()).await;
            match next {
                Ok(Ok(Some(resp))) => {
                    let r = watch_response(&resp, clock.now());
                    let canceled = r.canceled;
                    s.responses.push(r);
                    if let Some(l) = s.last_revision() {
                        covered.fetch_max(l, Ordering::SeqCst);
                    }
                    if canceled {
                        break;
                    }
                }
                // The stream ended or broke.
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => {}
            }
            if done(covered.load(Ordering::SeqCst)) {
                if !s.responses.is_empty() {
                    sessions.push(s);
                }
                break 'reopen;
            }
            if let Some(every) = spec.progress_every {
                if last_progress.elapsed() >= every {
                    last_progress = Instant::now();
                    let req = pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                            pb::WatchProgressRequest {},
                        )),
                    };
                    let _ = tx.try_send(req);
                }
            }
        }
        if !s.responses.is_empty() {
            sessions.push(s);
        }
        if done(covered.load(Ordering::SeqCst)) {
            break;
        }
        tokio::time::sleep(WATCH_REOPEN_PAUSE).await;
    }
    sessions
}

// ------------------------------------------------------------- checking

/// What [`check`] found.
#[derive(Debug)]
pub struct Checked {
    pub verdict: Verdict,
    /// Time the linearizability check took.
    pub check_time: Duration,
    /// Watch validators, against the sessions' own union.
    pub watch: Vec<Violation>,
    /// [`watch_vs_history`]'s findings.
    pub crosscheck: Vec<String>,
    /// Ops whose answer shows a kv above its header revision.
    pub above_header: Vec<usize>,
    /// Answered ops the cross-check could compare with the watch.
    pub crosschecked: usize,
}

impl Checked {
    pub fn passed(&self) -> bool {
        self.verdict.is_linearizable()
            && self.watch.is_empty()
            && self.crosscheck.is_empty()
            && self.above_header.is_empty()
    }

    /// Why the run does not pass, one line each (none: it passes): a
    /// checker's finding, a watcher left behind, fewer than
    /// `ok_ops_min` answered ops or no watch event at all (a run that
    /// proves nothing).
    pub fn problems(&self, rec: &Recording, ok_ops_min: usize) -> Vec<String> {
        let mut out = Vec::new();
        if !self.verdict.is_linearizable() {
            out.push(match &self.verdict {
                Verdict::Violation(r) => format!("not linearizable: {}", r.summary),
                _ => "linearizability undecided (the search timed out)".to_string(),
            });
        }
        if !self.watch.is_empty() {
            out.push(format!("{} watch guarantee violation(s)", self.watch.len()));
        }
        if !self.crosscheck.is_empty() {
            out.push(format!(
                "{} watch/history disagreement(s)",
                self.crosscheck.len()
            ));
        }
        if !self.above_header.is_empty() {
            out.push(format!(
                "{} answer(s) with a kv above the header revision",
                self.above_header.len()
            ));
        }
        let lag = rec.lagging_watchers();
        if !lag.is_empty() {
            out.push(format!("watchers behind the final revision: {lag:?}"));
        }
        let (ok, _, _) = rec.counts();
        if ok < ok_ops_min {
            out.push(format!("only {ok} answered ops (< {ok_ops_min})"));
        }
        if rec.sessions.iter().all(|s| s.events().next().is_none()) {
            out.push("no watch events received".to_string());
        }
        out
    }

    /// The verdicts, and every violation report (shortened lists).
    pub fn report(&self, rec: &Recording) -> String {
        let mut s = format!(
            "linearizability: {} (checked in {:.2}s)\n",
            match &self.verdict {
                Verdict::Linearizable => "linearizable".to_string(),
                Verdict::Violation(r) => r.summary.clone(),
                Verdict::Timeout(_) => "undecided (timeout)".to_string(),
            },
            self.check_time.as_secs_f64()
        );
        if !self.verdict.is_linearizable() {
            s += &format!("{}\n", self.verdict);
            if let Verdict::Timeout(p) = &self.verdict {
                s += &format!("deepest branch:\n{}\n", p.deepest);
            }
        }
        s += &format!(
            "watch (committed events: the sessions' union; {} sessions): {}",
            rec.sessions.len(),
            watch::report(&self.watch, 5)
        );
        s += &format!(
            "watch vs history: {} answered ops compared, {} problem(s)\n",
            self.crosschecked,
            self.crosscheck.len()
        );
        for p in self.crosscheck.iter().take(10) {
            s += &format!("  {p}\n");
        }
        s += &format!(
            "kv above its header revision (issue 11's defect): {} op(s)\n",
            self.above_header.len()
        );
        for &i in self.above_header.iter().take(5) {
            let op = &rec.history.ops[i];
            s += &format!(
                "  op #{i} client {} {:.3}s..{:.3}s: {} -> {}\n",
                op.client,
                secs(op.call),
                secs(op.ret),
                model::show_request(&op.request),
                model::show_outcome(&op.outcome)
            );
        }
        let lag = rec.lagging_watchers();
        if !lag.is_empty() {
            s += &format!(
                "watchers behind the final revision {:?} after the drain: {lag:?}\n",
                rec.final_revision
            );
        }
        s
    }
}

/// How long after a fault ended a leader start may still void revisions
/// (an election after the fault, then the start).
const VOID_AFTER_FAULT: Duration = Duration::from_secs(5);
/// Revisions one leader start may void, per client: each client has one
/// request in flight, and a fault may bring more than one start.
const VOIDS_PER_CLIENT: usize = 2;
/// The key of the ops that stand for voided revisions: outside every
/// workload's prefix, so no client reads it.
pub const VOID_KEY: &[u8] = b"\xffvoided-revision";

/// The stretches around `faults` in which a leader start may void
/// revisions: from each fault's start to [`VOID_AFTER_FAULT`] after its end.
fn void_windows(faults: &[FaultRecord]) -> Vec<(u64, u64)> {
    faults
        .iter()
        .map(|f| (f.start, f.end + VOID_AFTER_FAULT.as_nanos() as u64))
        .collect()
}

/// Revisions a window may void with `clients` clients.
fn voids_per_window(clients: usize) -> usize {
    VOIDS_PER_CLIENT * clients
}

/// `h` with voids for `faults` ([`with_voids`]), its clients counted from
/// the history itself.
pub fn with_voids_at(h: &History, faults: &[FaultRecord]) -> History {
    let clients: std::collections::BTreeSet<usize> = h.ops.iter().map(|o| o.client).collect();
    with_voids(h, &void_windows(faults), voids_per_window(clients.len()))
}

/// `h` with one void pinned at each revision in (from, to] that the
/// committed history (complete over them) holds no event of: every
/// revision but a voided one has one (a write that changes nothing takes
/// none). Each must take effect inside the fault windows (from the first
/// one's start to the last one's end): with no fault, none can, and a
/// skipped revision is a violation. Exact where [`with_voids_at`] guesses,
/// so the search has no choice to make.
pub fn with_voids_pinned(
    h: &History,
    committed: &CommittedEvents,
    (from, to): (i64, i64),
    faults: &[FaultRecord],
) -> History {
    let windows = void_windows(faults);
    let start = windows.iter().map(|w| w.0).min().unwrap_or(0);
    let end = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let mut held: HashSet<i64> = committed.iter().map(|(r, _)| r).collect();
    // A put no watcher could see (a fault's, outside the run's prefix)
    // holds the revision it answered.
    held.extend(
        h.ops
            .iter()
            .filter_map(|op| match (&op.request, &op.outcome) {
                (Request::Put { key, .. }, Outcome::Ok { revision, .. })
                    if !committed.watches(key) =>
                {
                    Some(*revision)
                }
                _ => None,
            }),
    );
    let mut ops = h.ops.clone();
    let voided = (from + 1..=to).filter(|r| !held.contains(r));
    for (client, revision) in (usize::MAX / 2..).zip(voided) {
        let outcome = Outcome::Ok {
            revision,
            answer: Answer::Put { prev: None },
        };
        ops.push(void_op(client, (start, end), outcome));
    }
    History { ops }.sorted()
}

/// One op standing for a voided revision: a put of [`VOID_KEY`] by its own
/// `client`, between `call` and `ret`.
fn void_op(client: usize, (call, ret): (u64, u64), outcome: Outcome) -> Op {
    Op {
        client,
        call,
        ret,
        request: Request::Put {
            key: VOID_KEY.to_vec(),
            value: b"void".to_vec(),
            lease: 0,
        },
        outcome,
    }
}

/// `h` with `per_window` optional ops per window, each taking one
/// revision and changing nothing a client reads (a put of [`VOID_KEY`],
/// outcome unknown, invoked when the window opens). The checker places an
/// unknown op only where a revision gap needs one, so these let
/// revisions go unused inside a window and nowhere else: ferrokv's
/// contract (revisions skip only across a leader change), checked as
/// closely as the history allows.
pub fn with_voids(h: &History, windows: &[(u64, u64)], per_window: usize) -> History {
    let mut ops = h.ops.clone();
    let mut client = usize::MAX / 2;
    for &window in windows {
        for _ in 0..per_window {
            let outcome = Outcome::Unknown("a revision a leader start may void".to_string());
            ops.push(void_op(client, window, outcome));
            client += 1;
        }
    }
    History { ops }.sorted()
}

/// Runs every check on `rec`; the linearizability search is bounded by
/// `timeout`.
pub fn check(rec: &Recording, timeout: Duration) -> Checked {
    let (committed, mut watch) = CommittedEvents::from_sessions(&rec.sessions);
    // Where the watchers saw every revision of the run, the committed
    // history decides what the history leaves open: unknown-outcome puts
    // and the revisions a leader start voided.
    let complete = rec
        .final_revision
        .filter(|&end| watch::uncovered(&rec.sessions, rec.initial_revision, end).is_empty());
    let started = Instant::now();
    let history = match (rec.voids_at_faults, complete) {
        (true, Some(end)) => with_voids_pinned(
            &rec.history,
            &committed,
            (rec.initial_revision, end),
            &rec.faults,
        ),
        (true, None) => with_voids_at(&rec.history, &rec.faults),
        (false, _) => rec.history.clone(),
    };
    let verdict = linearize::check_with(
        &history,
        &Options {
            timeout,
            initial: model::State::with_contents(
                rec.initial_revision.max(1),
                Vec::new(),
                Vec::new(),
            ),
            committed_puts: complete.map(|_| committed.puts()),
            watched: committed.watched().map(<[_]>::to_vec),
            ..Options::default()
        },
    );
    let check_time = started.elapsed();
    // A history that compacts: the compactions are known (those of the
    // faults with when they were applied, any other call's as unknown).
    let mut committed = committed;
    for c in compactions_made(rec) {
        committed = committed.with_compaction(c.revision, c.done);
    }
    watch.extend(watch::validate(&rec.sessions, &committed));
    let watched_to = rec
        .sessions
        .iter()
        .filter_map(|s| s.last_revision())
        .max()
        .unwrap_or(0);
    let (crosscheck, crosschecked) = watch_vs_history(&rec.history, &committed, watched_to);
    Checked {
        verdict,
        check_time,
        watch,
        crosscheck,
        above_header: kvs_above_header(&rec.history),
        crosschecked,
    }
}

/// The compactions of a run: every `Compact` call of its history that
/// answered or whose outcome is unknown, with the time every member had
/// applied it where a fault knew it (else `u64::MAX`).
pub fn compactions_made(rec: &Recording) -> Vec<watch::Compaction> {
    rec.history
        .ops
        .iter()
        .filter_map(|op| match (&op.request, &op.outcome) {
            (Request::Compact { revision }, Outcome::Ok { .. } | Outcome::Unknown(_)) => {
                let done = rec
                    .compactions
                    .iter()
                    .filter(|c| c.revision == *revision)
                    .map(|c| c.done)
                    .min()
                    .unwrap_or(u64::MAX);
                Some(watch::Compaction {
                    revision: *revision,
                    done,
                })
            }
            _ => None,
        })
        .collect()
}

fn answer_kvs<'a>(a: &'a Answer, out: &mut Vec<&'a Kv>) {
    match a {
        Answer::Range { kvs, .. } => out.extend(kvs),
        Answer::Put { prev: Some(p) } => out.push(p),
        Answer::Txn { results, .. } => results.iter().for_each(|r| answer_kvs(r, out)),
        _ => {}
    }
}

/// The ops whose answer holds a kv with a mod_revision above the
/// response's header revision (never possible: the header is the store's
/// revision when the answer was made). Issue 11's known defect shows as
/// this (and as a linearizability violation).
pub fn kvs_above_header(h: &History) -> Vec<usize> {
    let mut out = Vec::new();
    let mut kvs = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if let Outcome::Ok { revision, answer } = &op.outcome {
            kvs.clear();
            answer_kvs(answer, &mut kvs);
            if kvs.iter().any(|kv| kv.mod_revision > *revision) {
                out.push(i);
            }
        }
    }
    out
}

/// The keys' states, replayed from the committed events: per key, its
/// (revision, kv or deleted) changes in revision order.
struct Replay {
    changes: BTreeMap<Vec<u8>, Vec<(i64, Option<Kv>)>>,
}

impl Replay {
    fn new(committed: &CommittedEvents) -> Replay {
        let mut changes: BTreeMap<Vec<u8>, Vec<(i64, Option<Kv>)>> = BTreeMap::new();
        for (rev, e) in committed.iter() {
            let kv = match e.kind {
                EventKind::Put => Some(e.kv.clone()),
                EventKind::Delete => None,
            };
            changes.entry(e.kv.key.clone()).or_default().push((rev, kv));
        }
        Replay { changes }
    }

    fn at(&self, key: &[u8], revision: i64) -> Option<&Kv> {
        let ch = self.changes.get(key)?;
        let i = ch.partition_point(|(r, _)| *r <= revision);
        i.checked_sub(1).and_then(|i| ch[i].1.as_ref())
    }

    fn range(&self, key: &[u8], range_end: &[u8], revision: i64) -> Vec<Kv> {
        if range_end.is_empty() {
            return self.at(key, revision).cloned().into_iter().collect();
        }
        self.changes
            .range(key.to_vec()..)
            .take_while(|(k, _)| range_end == [0] || k.as_slice() < range_end)
            .filter_map(|(k, _)| self.at(k, revision).cloned())
            .collect()
    }
}

/// Ties the watchers' committed events to the history, over the revisions
/// the watchers covered (up to `watched_to`):
/// - every answered put (alone or in a succeeded txn) is a put event of its
///   key with its value and lease at the op's header revision, and every
///   answered delete that deleted is delete events at its revision;
/// - every answered range (alone or in a txn's branch; linearizable or
///   serializable; at a revision or the latest) equals the state the
///   committed events replay to at the revision it read (count included);
/// - every put event's value was written by an op that answered with that
///   revision or whose outcome is unknown (values are unique per put).
///
/// Problems, and how many answered ops were compared.
pub fn watch_vs_history(
    h: &History,
    committed: &CommittedEvents,
    watched_to: i64,
) -> (Vec<String>, usize) {
    let replay = Replay::new(committed);
    let mut out = Vec::new();
    let mut compared = 0;
    let mut writer: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
    fn puts<'a>(r: &'a Request, out: &mut Vec<(&'a [u8], &'a [u8], i64)>) {
        match r {
            Request::Put { key, value, lease } => out.push((key, value, *lease)),
            Request::Txn {
                success, failure, ..
            } => success.iter().chain(failure).for_each(|r| puts(r, out)),
            _ => {}
        }
    }
    let mut buf = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        buf.clear();
        puts(&op.request, &mut buf);
        for &(k, v, _) in &buf {
            writer.insert((k, v), i);
        }
    }
    let show = |i: usize| {
        let op = &h.ops[i];
        format!(
            "op #{i} (client {}, {:.3}s..{:.3}s) {} -> {}",
            op.client,
            secs(op.call),
            secs(op.ret),
            model::show_request(&op.request),
            model::show_outcome(&op.outcome)
        )
    };
    // Answered ops.
    for (i, op) in h.ops.iter().enumerate() {
        let Outcome::Ok { revision, answer } = &op.outcome else {
            continue;
        };
        if *revision > watched_to {
            continue;
        }
        if matches!(&op.request, Request::Put { key, .. } if !committed.watches(key)) {
            continue;
        }
        let mut problems = Vec::new();
        check_answer(
            &replay,
            committed,
            &op.request,
            answer,
            *revision,
            &mut problems,
        );
        compared += 1;
        for p in problems {
            out.push(format!("{}: {p}", show(i)));
        }
    }
    // Put events come from ops that may have made them then.
    for (rev, e) in committed.iter() {
        if e.kind != EventKind::Put {
            continue;
        }
        match writer.get(&(e.kv.key.as_slice(), e.kv.value.as_slice())) {
            None => out.push(format!(
                "watch event put {}@{rev}: a value no operation wrote",
                model::show_kv(&e.kv)
            )),
            Some(&w) => match &h.ops[w].outcome {
                Outcome::Ok { revision, .. } if *revision != rev => out.push(format!(
                    "watch event put {}@{rev}, but its writer answered revision {revision}: {}",
                    model::show_kv(&e.kv),
                    show(w)
                )),
                Outcome::Failed(_) => out.push(format!(
                    "watch event put {}@{rev}, but its writer failed: {}",
                    model::show_kv(&e.kv),
                    show(w)
                )),
                _ => {}
            },
        }
    }
    (out, compared)
}

fn check_answer(
    replay: &Replay,
    committed: &CommittedEvents,
    request: &Request,
    answer: &Answer,
    revision: i64,
    problems: &mut Vec<String>,
) {
    match (request, answer) {
        (
            Request::Range {
                key,
                range_end,
                revision: at,
                ..
            },
            Answer::Range { kvs, count },
        ) => {
            let read_at = if *at > 0 { *at } else { revision };
            let want = replay.range(key, range_end, read_at);
            if *kvs != want || *count != want.len() as i64 {
                let show = |v: &[Kv]| v.iter().map(model::show_kv).collect::<Vec<_>>().join(", ");
                problems.push(format!(
                    "read at {read_at} answered [{}] count {count}; the watched events replay to [{}]",
                    show(kvs),
                    show(&want)
                ));
            }
        }
        (Request::Put { key, value, lease }, Answer::Put { .. }) => match committed
            .get(revision, key)
        {
            Some(e) if e.kind == EventKind::Put && e.kv.value == *value && e.kv.lease == *lease => {
            }
            other => problems.push(format!(
                "no watch event put of it at revision {revision} (there: {})",
                other.map_or("nothing".to_string(), |e| format!(
                    "{:?} {}",
                    e.kind,
                    model::show_kv(&e.kv)
                ))
            )),
        },
        (Request::Delete { key, range_end }, Answer::Delete { deleted }) if *deleted > 0 => {
            let n = committed
                .at(revision)
                .iter()
                .filter(|e| {
                    e.kind == EventKind::Delete
                        && if range_end.is_empty() {
                            e.kv.key == *key
                        } else {
                            e.kv.key >= *key && (range_end == &[0] || e.kv.key < *range_end)
                        }
                })
                .count() as i64;
            if n != *deleted {
                problems.push(format!(
                    "deleted {deleted}, but the watchers saw {n} delete event(s) at revision {revision}"
                ));
            }
        }
        (
            Request::Txn {
                success, failure, ..
            },
            Answer::Txn { succeeded, results },
        ) => {
            let branch = if *succeeded { success } else { failure };
            // Reads inside a txn that also writes see its earlier writes at
            // the new revision: the replay has them (same revision).
            for (r, a) in branch.iter().zip(results) {
                check_answer(replay, committed, r, a, revision, problems);
            }
        }
        _ => {}
    }
}

/// Plants issue 11's defect in a recorded history: a CAS txn that took its
/// failure branch (a get of key k at header revision H) is made to show
/// the state written by the first acknowledged put of k at a revision R > H
/// (mod_revision R above the header H, as the defect answers). Also needs
/// that put to be concurrent with the txn or later. The history with the
/// plant and the index of the changed op; None if the history has no such
/// pair.
pub fn plant_non_durable_read(h: &History) -> Option<(History, usize)> {
    for (i, op) in h.ops.iter().enumerate() {
        let (
            Request::Txn { failure, .. },
            Outcome::Ok {
                revision,
                answer:
                    Answer::Txn {
                        succeeded: false,
                        results,
                    },
            },
        ) = (&op.request, &op.outcome)
        else {
            continue;
        };
        let [Request::Range { key, .. }] = failure.as_slice() else {
            continue;
        };
        let [Answer::Range { kvs, .. }] = results.as_slice() else {
            continue;
        };
        let Some(old) = kvs.first() else { continue };
        let later =
            h.ops
                .iter()
                .filter(|o| o.ret > op.call)
                .find_map(|o| match (&o.request, &o.outcome) {
                    (
                        Request::Put {
                            key: k,
                            value,
                            lease,
                        },
                        Outcome::Ok { revision: r, .. },
                    ) if k == key && *r > *revision => Some((value.clone(), *lease, *r)),
                    _ => None,
                });
        let Some((value, lease, r)) = later else {
            continue;
        };
        let mut planted = h.clone();
        planted.ops[i].outcome = Outcome::Ok {
            revision: *revision,
            answer: Answer::Txn {
                succeeded: false,
                results: vec![Answer::Range {
                    kvs: vec![Kv {
                        key: key.clone(),
                        value,
                        create_revision: old.create_revision,
                        mod_revision: r,
                        version: old.version + 1,
                        lease,
                    }],
                    count: 1,
                }],
            },
        };
        return Some((planted, i));
    }
    None
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {} watch violation(s); {} cross-check problem(s); {} kv(s) above header",
            if self.verdict.is_linearizable() {
                "linearizable"
            } else {
                "NOT linearizable"
            },
            self.watch.len(),
            self.crosscheck.len(),
            self.above_header.len()
        )
    }
}
