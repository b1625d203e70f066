//! The Kubernetes-style workload (issue 11): traffic shaped like
//! kube-apiserver's use of etcd, recorded from real servers with faults at
//! chosen times, and its checkers.
//!
//! Traffic, all under [`Kubernetes::prefix`] (`/registry/` by default):
//! - **Controllers** (`clients`, client `i` on endpoint `i % n`):
//!   GuaranteedUpdate of a pod `pods/<ns>/<name>` (a Txn comparing the
//!   mod_revision the client last read, put; else get — the failure
//!   branch's kv is what the retry compares, up to [`UPDATE_ATTEMPTS`]; a
//!   get first when the client knows no mod_revision), creates (Txn
//!   create_revision == 0, put; else get), deletes with a precondition (Txn
//!   mod_revision, delete; else get), events `events/<ns>/<name>` attached
//!   to a short-TTL lease that the client reuses for [`LEASE_REUSE`] (as
//!   the apiserver's lease manager does; revoked later, or left to
//!   expire), gets and unpaginated lists of the pods.
//! - **A compactor**, as the apiserver's (`storage/etcd3/compact.go`):
//!   every `compact_every`, a Txn on `compact_rev_key` (compare its version
//!   with the last one known; put the revision; else get), then, if it
//!   succeeded, `Compact` to the revision the previous round's Txn saw.
//! - **Reflectors** (`reflectors`): a list of the whole prefix paginated by
//!   `page_limit` (later pages continue from the last key + `\0` at the
//!   first page's revision R), then a watch from R + 1 with prev_kv, kept
//!   while consistency lists are made every `relist_every`; a watch
//!   canceled by a compaction, or a page refused as compacted, starts a new
//!   epoch (list again), as the reflector's "too old resource version" does.
//!   After [`PROBE_AFTER_LISTS`] lists each reflector also opens a watch
//!   from its first list's revision + 1, by then compacted (a reflector
//!   re-watching from a resource version it kept): it must be canceled
//!   with compact_revision.
//! - **History watchers** (`history_watchers`): the whole prefix from the
//!   run's first revision, so that the union of what was received is the
//!   committed history.
//!
//! A broken watch is resumed from its last revision + 1 as a linked
//! session, on the next endpoint. After the clients stop, each reflector
//! lists once more, a drain put marks the end, and every watch catches up
//! with it (bounded by [`DRAIN_MAX`]).
//!
//! Checks ([`check`]): the history (with each lease's expiry added as an
//! unknown-outcome revoke invoked when its TTL ran out) linearizable
//! against the model, compactions included; the watch validators over all
//! sessions, with the compactions made; the watchers' events against the
//! history's answers ([`workload::watch_vs_history`]); the reflector
//! invariant ([`reflector_problems`]); GuaranteedUpdate never forks or
//! loses an update ([`update_problems`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::history::{Answer, CmpOp, Compare, History, Kv, Op, Outcome, Request, Target};
use super::linearize::{self, Options, Verdict};
use super::model::{self, ModelError};
use super::watch::{self, CommittedEvents, EventKind, Violation, WatchSession};
use super::workload::{
    self, execute, prefix_now, run_faults, secs, watch_response, Call, Clock, Fault, FaultCtx,
    FaultRecord, Rng, ERROR_PAUSE, WATCH_REOPEN_PAUSE,
};
use crate::grpc;

/// Attempts of one GuaranteedUpdate (the first and its retries on conflict).
pub const UPDATE_ATTEMPTS: usize = 3;
/// A controller's event lease is reused this long, then a new one granted.
pub const LEASE_REUSE: Duration = Duration::from_millis(800);
/// A lease's expiry is modelled as a revoke invoked this much before its
/// TTL ran out after its grant was called (the server starts the TTL when
/// it applies the grant, so later; the slack only makes the model more
/// lenient).
pub const EXPIRY_SLACK: Duration = Duration::from_millis(50);
/// Bound on the pages of one list.
pub const PAGES_MAX: usize = 1000;
/// Bound on the watchers catching up with the drain put.
pub const DRAIN_MAX: Duration = Duration::from_secs(15);
/// Bound on the reflectors' final lists after the clients stopped.
pub const FINAL_LIST_MAX: Duration = Duration::from_secs(10);
/// Attempts of the drain put (each bounded by `op_timeout`).
pub const DRAIN_PUT_ATTEMPTS: usize = 10;
/// Bound on one linearizability check, for [`check`].
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// A reflector's late watch from its first list's revision is opened after
/// this many consistency lists.
pub const PROBE_AFTER_LISTS: usize = 3;
/// Watch stream poll: how often a watch loop looks at its stop signals.
const WATCH_POLL: Duration = Duration::from_millis(100);

/// What to run. `Default` is a small run.
#[derive(Clone, Debug)]
pub struct Kubernetes {
    /// Revisions may be skipped around faults (ferrokv's contract, see
    /// `workload::with_voids`); etcd never skips.
    pub voids_at_faults: bool,
    /// Controllers (writers), spread over the endpoints.
    pub clients: usize,
    /// List + watch clients.
    pub reflectors: usize,
    /// Watchers of the whole prefix from the run's start.
    pub history_watchers: usize,
    /// How long the clients run (at least `settle` after the last fault).
    pub duration: Duration,
    pub settle: Duration,
    /// Hard bound on the clients, whatever the faults do.
    pub duration_max: Duration,
    /// Bound on one controller's logical operations.
    pub max_ops: usize,
    pub seed: u64,
    /// Objects live under it.
    pub prefix: String,
    pub namespaces: usize,
    pub pods_per_namespace: usize,
    /// Keys per list page.
    pub page_limit: i64,
    pub compact_every: Duration,
    pub relist_every: Duration,
    /// TTL of the event leases, seconds (short: some expire in the run).
    pub event_ttl: i64,
    /// Lease ids are `lease_id_base + client * 100_000 + n`.
    pub lease_id_base: i64,
    /// Bound on one call; no answer within it is `Unknown`.
    pub op_timeout: Duration,
}

impl Default for Kubernetes {
    fn default() -> Kubernetes {
        Kubernetes {
            voids_at_faults: false,
            clients: 4,
            reflectors: 2,
            history_watchers: 2,
            duration: Duration::from_secs(3),
            settle: Duration::from_secs(1),
            duration_max: Duration::from_secs(60),
            max_ops: 3000,
            seed: 1,
            prefix: "/registry/".to_string(),
            namespaces: 2,
            pods_per_namespace: 4,
            page_limit: 3,
            compact_every: Duration::from_millis(300),
            relist_every: Duration::from_millis(400),
            event_ttl: 2,
            lease_id_base: 0x6b38_0000_0000,
            op_timeout: Duration::from_millis(1500),
        }
    }
}

/// One list a reflector made: the state of the prefix at `revision`.
#[derive(Clone, Debug)]
pub struct ListRecord {
    pub revision: i64,
    pub kvs: Vec<Kv>,
    pub pages: usize,
    /// When its first page was sent.
    pub time: u64,
}

/// A reflector's list, the watch from its revision + 1 (a chain of
/// sessions, indices into [`KubeRecording::sessions`]), and the lists made
/// while that watch ran.
#[derive(Clone, Debug)]
pub struct Epoch {
    pub reflector: usize,
    pub list: ListRecord,
    pub sessions: Vec<usize>,
    pub checks: Vec<ListRecord>,
    /// The watch ended canceled by a compaction (then the next epoch
    /// relists).
    pub compacted: bool,
}

/// Everything a run recorded.
#[derive(Clone, Debug)]
pub struct KubeRecording {
    /// Sorted by invocation time.
    pub history: History,
    pub sessions: Vec<WatchSession>,
    pub epochs: Vec<Epoch>,
    pub faults: Vec<FaultRecord>,
    /// From the workload's `voids_at_faults`.
    pub voids_at_faults: bool,
    pub elapsed: Duration,
    /// The store's revision before the run (the prefix held nothing).
    pub initial_revision: i64,
    /// The drain put's revision, if it was answered.
    pub drain_revision: Option<i64>,
    /// Members serving: with one, a compaction is applied when its call
    /// returns (the watch validators then check every watch created later).
    pub members: usize,
    pub event_ttl: i64,
    /// Client id of the drain put.
    pub drain_client: usize,
}

// ------------------------------------------------------------- text

/// One line per op (`client call ret: request -> outcome`), for a file.
pub fn history_text(h: &History) -> String {
    let mut s = String::new();
    for op in &h.ops {
        let _ = writeln!(
            s,
            "{} {:.6} {:.6}: {} -> {}",
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
pub fn sessions_text(sessions: &[WatchSession]) -> String {
    let mut s = String::new();
    for (i, w) in sessions.iter().enumerate() {
        let _ = writeln!(
            s,
            "session {i}: {} (call {:.6})",
            w.describe(),
            secs(w.call)
        );
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
            let _ = writeln!(
                s,
                "  {:.6} header={}{flags}",
                secs(r.time),
                r.header_revision
            );
            for e in &r.events {
                let _ = writeln!(
                    s,
                    "    {:?} {}{}",
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

/// (ok, failed, unknown) of a history.
pub fn counts(h: &History) -> (usize, usize, usize) {
    let mut c = (0, 0, 0);
    for op in &h.ops {
        match op.outcome {
            Outcome::Ok { .. } => c.0 += 1,
            Outcome::Failed(_) => c.1 += 1,
            Outcome::Unknown(_) => c.2 += 1,
        }
    }
    c
}

/// Writes `files` (name, text) into `dir` (created if needed).
pub fn write_files(dir: &Path, files: &[(&str, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The faults of a run, one line each.
pub fn faults_text(faults: &[FaultRecord]) -> String {
    faults
        .iter()
        .map(|f| {
            format!(
                "  fault {} at {:.2}s..{:.2}s: {}\n",
                f.name,
                secs(f.start),
                secs(f.end),
                f.detail
            )
        })
        .collect()
}

impl KubeRecording {
    pub fn history_text(&self) -> String {
        history_text(&self.history)
    }

    pub fn sessions_text(&self) -> String {
        sessions_text(&self.sessions)
    }

    /// Every reflector epoch: its list, sessions and consistency lists.
    pub fn epochs_text(&self) -> String {
        let mut s = String::new();
        for (i, e) in self.epochs.iter().enumerate() {
            let _ = writeln!(
                s,
                "epoch {i}: reflector {} list at {} ({} kvs, {} pages, {:.6}); sessions {:?}{}",
                e.reflector,
                e.list.revision,
                e.list.kvs.len(),
                e.list.pages,
                secs(e.list.time),
                e.sessions,
                if e.compacted { "; ended compacted" } else { "" }
            );
            for l in std::iter::once(&e.list).chain(&e.checks) {
                let _ = writeln!(s, "  list at {} ({:.6}):", l.revision, secs(l.time));
                for kv in &l.kvs {
                    let _ = writeln!(s, "    {}", model::show_kv(kv));
                }
            }
        }
        s
    }

    /// `history.txt`, `watch.txt`, `lists.txt` into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        write_files(
            dir,
            &[
                ("history.txt", self.history_text()),
                ("watch.txt", self.sessions_text()),
                ("lists.txt", self.epochs_text()),
            ],
        )
    }

    /// The compactions made or maybe made: (revision, when known applied
    /// everywhere: the call's return with one member, else never).
    pub fn compactions(&self) -> Vec<(i64, u64)> {
        self.history
            .ops
            .iter()
            .filter_map(|op| match (&op.request, &op.outcome) {
                (Request::Compact { revision }, Outcome::Ok { .. }) => {
                    Some((*revision, if self.members == 1 { op.ret } else { u64::MAX }))
                }
                (Request::Compact { revision }, Outcome::Unknown(_)) => Some((*revision, u64::MAX)),
                _ => None,
            })
            .collect()
    }
}

// ----------------------------------------------------------- connection

/// One client's connection, bound to one endpoint; records every call.
pub struct Conn {
    pub client: usize,
    endpoint: String,
    channel: Option<Channel>,
    clock: Clock,
    op_timeout: Duration,
    pub ops: Vec<Op>,
}

impl Conn {
    pub fn new(client: usize, endpoint: &str, clock: Clock, op_timeout: Duration) -> Conn {
        Conn {
            client,
            endpoint: endpoint.to_string(),
            channel: None,
            clock,
            op_timeout,
            ops: Vec::new(),
        }
    }

    /// Sends `request` and records it; a fresh connection after an unknown
    /// outcome or a quick failure (the member may have been restarted),
    /// and a pause after a quick failure (do not spin on a dead member).
    pub async fn call(&mut self, request: Request) -> Outcome {
        let endpoint = &self.endpoint;
        let ch = self
            .channel
            .get_or_insert_with(|| grpc::connect_lazy(endpoint))
            .clone();
        let call = Call {
            request,
            prev_kv: false,
        };
        let t0 = self.clock.now();
        let outcome = execute(&ch, &call, self.op_timeout).await;
        let t1 = self.clock.now();
        let model_error =
            matches!(&outcome, Outcome::Failed(m) if ModelError::classify(m).is_some());
        let failed_fast = !matches!(outcome, Outcome::Ok { .. })
            && t1 - t0 < (self.op_timeout.as_nanos() as u64) / 2;
        if matches!(outcome, Outcome::Unknown(_)) || (failed_fast && !model_error) {
            self.channel = None;
        }
        self.ops.push(Op {
            client: self.client,
            call: t0,
            ret: t1,
            request: call.request,
            outcome: outcome.clone(),
        });
        if failed_fast && !model_error {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
        outcome
    }
}

/// The end of the range of keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn range(key: &[u8]) -> Request {
    Request::Range {
        key: key.to_vec(),
        range_end: Vec::new(),
        revision: 0,
        serializable: false,
    }
}

fn put(key: &[u8], value: Vec<u8>, lease: i64) -> Request {
    Request::Put {
        key: key.to_vec(),
        value,
        lease,
    }
}

fn cmp(key: &[u8], target: Target) -> Compare {
    Compare {
        key: key.to_vec(),
        op: CmpOp::Equal,
        target,
    }
}

/// The kv (or its absence) a txn's single failure-branch get answered, or
/// a lone get.
fn read_one(outcome: &Outcome) -> Option<Option<Kv>> {
    match outcome {
        Outcome::Ok {
            answer: Answer::Range { kvs, .. },
            ..
        } => Some(kvs.first().cloned()),
        Outcome::Ok {
            answer: Answer::Txn { results, .. },
            ..
        } => match results.as_slice() {
            [Answer::Range { kvs, .. }] => Some(kvs.first().cloned()),
            _ => None,
        },
        _ => None,
    }
}

fn succeeded(outcome: &Outcome) -> Option<(bool, i64)> {
    match outcome {
        Outcome::Ok {
            revision,
            answer: Answer::Txn { succeeded, .. },
        } => Some((*succeeded, *revision)),
        _ => None,
    }
}

// -------------------------------------------------------------- watches

/// Where a watch chain stands, for the runner's drain.
struct Coverage {
    covered: AtomicI64,
    active: AtomicBool,
}

#[derive(Clone)]
struct Signals {
    /// Set: the drain put's revision; chains stop once they covered it.
    drain_to: Arc<AtomicI64>,
    hard_stop: Arc<AtomicBool>,
    chains: Arc<Mutex<Vec<Arc<Coverage>>>>,
}

impl Signals {
    fn done(&self, covered: i64) -> bool {
        let d = self.drain_to.load(Ordering::SeqCst);
        self.hard_stop.load(Ordering::SeqCst) || (d > 0 && covered >= d)
    }
}

struct ChainSpec {
    client: usize,
    endpoints: Vec<String>,
    first_endpoint: usize,
    key: Vec<u8>,
    range_end: Vec<u8>,
    from: i64,
}

/// How a chain ended.
struct Chain {
    sessions: Vec<WatchSession>,
    /// Canceled by a compaction.
    compacted: bool,
}

/// A watch from `spec.from` with prev_kv, resumed after every break from
/// its last revision + 1 on the next endpoint as a linked session, until a
/// compaction cancels it or the signals stop it.
async fn watch_chain(spec: ChainSpec, clock: Clock, signals: Signals) -> Chain {
    let cov = Arc::new(Coverage {
        covered: AtomicI64::new(spec.from - 1),
        active: AtomicBool::new(true),
    });
    signals.chains.lock().unwrap().push(cov.clone());
    let mut sessions: Vec<WatchSession> = Vec::new();
    let mut endpoint = spec.first_endpoint;
    let mut compacted = false;
    let last = |sessions: &[WatchSession]| sessions.iter().filter_map(|s| s.last_revision()).max();
    'reopen: loop {
        if signals.done(cov.covered.load(Ordering::SeqCst)) {
            break;
        }
        let prev = sessions.len().checked_sub(1);
        let start = match prev.map(|p| &sessions[p]) {
            None => spec.from,
            Some(p) => p.last_revision().map_or(p.start_revision, |l| l + 1),
        };
        let mut s = WatchSession::new(spec.client, &spec.key, &spec.range_end, start);
        s.prev_kv = true;
        s.resumes = prev;
        s.call = clock.now();
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: Bytes::copy_from_slice(&spec.key),
                    range_end: Bytes::copy_from_slice(&spec.range_end),
                    start_revision: start,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let (tx, rx) = mpsc::channel::<pb::WatchRequest>(4);
        let _ = tx.send(create).await;
        let channel = grpc::connect_lazy(&spec.endpoints[endpoint % spec.endpoints.len()]);
        let open = workload::open_watch(channel, rx, |st| st.to_string());
        let wait_done = async {
            while !signals.done(cov.covered.load(Ordering::SeqCst)) {
                tokio::time::sleep(WATCH_POLL).await;
            }
        };
        let mut stream = tokio::select! {
            r = open => match r {
                Ok(stream) => stream,
                Err(_) => {
                    endpoint += 1;
                    tokio::time::sleep(WATCH_REOPEN_PAUSE).await;
                    continue 'reopen;
                }
            },
            _ = wait_done => break 'reopen,
        };
        loop {
            match tokio::time::timeout(WATCH_POLL, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    let r = watch_response(&resp, clock.now());
                    let (canceled, compact) = (r.canceled, r.compact_revision);
                    s.responses.push(r);
                    if let Some(l) = s.last_revision() {
                        cov.covered.fetch_max(l, Ordering::SeqCst);
                    }
                    if canceled {
                        if compact != 0 {
                            compacted = true;
                            sessions.push(s);
                            break 'reopen;
                        }
                        break;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => {}
            }
            if signals.done(cov.covered.load(Ordering::SeqCst)) {
                sessions.push(s);
                break 'reopen;
            }
        }
        if !s.responses.is_empty() {
            sessions.push(s);
        }
        endpoint += 1;
        if signals.done(last(&sessions).unwrap_or(0)) {
            break;
        }
        tokio::time::sleep(WATCH_REOPEN_PAUSE).await;
    }
    cov.active.store(false, Ordering::SeqCst);
    sessions.retain(|s| !s.responses.is_empty());
    // `resumes` must name the kept sessions.
    for (i, s) in sessions.iter_mut().enumerate() {
        s.resumes = i.checked_sub(1);
    }
    Chain {
        sessions,
        compacted,
    }
}

// ----------------------------------------------------------- controllers

struct Controller {
    conn: Conn,
    rng: Rng,
    pods: Vec<Vec<u8>>,
    pods_prefix: Vec<u8>,
    events_prefix: Vec<u8>,
    namespaces: usize,
    /// Last known mod_revision per key (0: absent).
    known: HashMap<Vec<u8>, i64>,
    n: u64,
    lease: Option<(i64, Instant)>,
    old_leases: Vec<i64>,
    leases_granted: i64,
    lease_id_base: i64,
    event_ttl: i64,
}

impl Controller {
    fn value(&mut self, kind: &str) -> Vec<u8> {
        self.n += 1;
        format!("{kind}:c{}.{}", self.conn.client, self.n).into_bytes()
    }

    fn learn(&mut self, key: &[u8], kv: Option<&Kv>) {
        self.known
            .insert(key.to_vec(), kv.map_or(0, |kv| kv.mod_revision));
    }

    /// The mod_revision to compare for `key`: the known one, else a get's.
    async fn mod_of(&mut self, key: &[u8]) -> Option<i64> {
        if let Some(&m) = self.known.get(key) {
            return Some(m);
        }
        let got = read_one(&self.conn.call(range(key)).await)?;
        self.learn(key, got.as_ref());
        Some(got.map_or(0, |kv| kv.mod_revision))
    }

    /// Kubernetes' GuaranteedUpdate of an existing object.
    async fn update(&mut self, key: &[u8]) {
        let Some(mut m) = self.mod_of(key).await else {
            return;
        };
        for _ in 0..UPDATE_ATTEMPTS {
            if m == 0 {
                return; // NotFound
            }
            let value = self.value("pod");
            let out = self
                .conn
                .call(Request::Txn {
                    compares: vec![cmp(key, Target::Mod(m))],
                    success: vec![put(key, value, 0)],
                    failure: vec![range(key)],
                })
                .await;
            match succeeded(&out) {
                Some((true, r)) => {
                    self.known.insert(key.to_vec(), r);
                    return;
                }
                Some((false, _)) => {
                    let kv = read_one(&out).flatten();
                    self.learn(key, kv.as_ref());
                    m = kv.map_or(0, |kv| kv.mod_revision);
                }
                None => {
                    self.known.remove(key);
                    return;
                }
            }
        }
    }

    async fn create(&mut self, key: &[u8], value: Vec<u8>, lease: i64) {
        let out = self
            .conn
            .call(Request::Txn {
                compares: vec![cmp(key, Target::Create(0))],
                success: vec![put(key, value, lease)],
                failure: vec![range(key)],
            })
            .await;
        match succeeded(&out) {
            Some((true, r)) => {
                self.known.insert(key.to_vec(), r);
            }
            Some((false, _)) => {
                let kv = read_one(&out).flatten();
                self.learn(key, kv.as_ref());
            }
            None => {
                self.known.remove(key);
            }
        }
    }

    /// A delete with a precondition on the mod_revision read (one retry on
    /// conflict).
    async fn delete(&mut self, key: &[u8]) {
        let Some(mut m) = self.mod_of(key).await else {
            return;
        };
        for _ in 0..2 {
            if m == 0 {
                return;
            }
            let out = self
                .conn
                .call(Request::Txn {
                    compares: vec![cmp(key, Target::Mod(m))],
                    success: vec![Request::Delete {
                        key: key.to_vec(),
                        range_end: Vec::new(),
                    }],
                    failure: vec![range(key)],
                })
                .await;
            match succeeded(&out) {
                Some((true, _)) => {
                    self.known.insert(key.to_vec(), 0);
                    return;
                }
                Some((false, _)) => {
                    let kv = read_one(&out).flatten();
                    self.learn(key, kv.as_ref());
                    m = kv.map_or(0, |kv| kv.mod_revision);
                }
                None => {
                    self.known.remove(key);
                    return;
                }
            }
        }
    }

    /// An event object attached to the current lease (a new one when the
    /// current one is older than [`LEASE_REUSE`]).
    async fn event(&mut self) {
        let fresh = self.lease.is_some_and(|(_, at)| at.elapsed() < LEASE_REUSE);
        if !fresh {
            if let Some((old, _)) = self.lease.take() {
                self.old_leases.push(old);
            }
            self.leases_granted += 1;
            let id = self.lease_id_base + self.conn.client as i64 * 100_000 + self.leases_granted;
            let out = self
                .conn
                .call(Request::LeaseGrant {
                    id,
                    ttl: self.event_ttl,
                })
                .await;
            match out {
                Outcome::Ok { .. } => self.lease = Some((id, Instant::now())),
                _ => return,
            }
        }
        let Some((lease, _)) = self.lease else {
            return;
        };
        let ns = self.rng.below(self.namespaces as u64);
        self.n += 1;
        let key = [
            self.events_prefix.as_slice(),
            format!("ns{ns}/ev-c{}.{}", self.conn.client, self.n).as_bytes(),
        ]
        .concat();
        let value = self.value("event");
        self.create(&key, value, lease).await;
    }

    async fn revoke(&mut self) {
        if self.old_leases.is_empty() {
            return;
        }
        let i = self.rng.below(self.old_leases.len() as u64) as usize;
        let id = self.old_leases.swap_remove(i);
        self.conn.call(Request::LeaseRevoke { id }).await;
    }

    async fn step(&mut self) {
        let key = self.pods[self.rng.below(self.pods.len() as u64) as usize].clone();
        match self.rng.below(100) {
            0..=34 => self.update(&key).await,
            35..=46 => {
                let value = self.value("pod");
                self.create(&key, value, 0).await
            }
            47..=54 => self.delete(&key).await,
            55..=69 => self.event().await,
            70..=72 => self.revoke().await,
            73..=89 => {
                let out = self.conn.call(range(&key)).await;
                if let Some(kv) = read_one(&out) {
                    self.learn(&key, kv.as_ref());
                }
            }
            _ => {
                let end = prefix_end(&self.pods_prefix);
                let out = self
                    .conn
                    .call(Request::Range {
                        key: self.pods_prefix.clone(),
                        range_end: end,
                        revision: 0,
                        serializable: false,
                    })
                    .await;
                if let Outcome::Ok {
                    answer: Answer::Range { kvs, .. },
                    ..
                } = &out
                {
                    let seen: Vec<(Vec<u8>, i64)> = kvs
                        .iter()
                        .map(|kv| (kv.key.clone(), kv.mod_revision))
                        .collect();
                    for p in &self.pods {
                        self.known.insert(p.clone(), 0);
                    }
                    self.known.extend(seen);
                }
            }
        }
    }
}

// ------------------------------------------------------------ compactor

/// The apiserver's compactor loop.
async fn compactor(
    mut conn: Conn,
    key: Vec<u8>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let (mut version, mut last_rev, mut round) = (0i64, 0i64, 0u64);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        round += 1;
        let out = conn
            .call(Request::Txn {
                compares: vec![cmp(&key, Target::Version(version))],
                success: vec![put(&key, format!("{last_rev}@{round}").into_bytes(), 0)],
                failure: vec![range(&key)],
            })
            .await;
        match succeeded(&out) {
            Some((true, r)) => {
                version += 1;
                if last_rev > 0 {
                    conn.call(Request::Compact { revision: last_rev }).await;
                }
                last_rev = r;
            }
            Some((false, r)) => {
                version = read_one(&out).flatten().map_or(0, |kv| kv.version);
                last_rev = r;
            }
            None => {}
        }
    }
    conn.ops
}

// ------------------------------------------------------------ reflectors

/// A paginated list of [key, end): Ok((revision, kvs, pages)); Err: a page
/// failed (the list is to be made again).
async fn list(conn: &mut Conn, key: &[u8], end: &[u8], limit: i64) -> Result<ListRecord, ()> {
    let time = conn.clock.now();
    let (mut from, mut at, mut kvs) = (key.to_vec(), 0i64, Vec::new());
    for pages in 1..=PAGES_MAX {
        let out = conn
            .call(Request::RangeLimit {
                key: from.clone(),
                range_end: end.to_vec(),
                revision: at,
                limit,
            })
            .await;
        let Outcome::Ok {
            revision,
            answer: Answer::Range { kvs: page, count },
        } = out
        else {
            return Err(());
        };
        if at == 0 {
            at = revision;
        }
        let more = count > page.len() as i64;
        let Some(last) = page.last() else {
            return Ok(ListRecord {
                revision: at,
                kvs,
                pages,
                time,
            });
        };
        from = [last.key.as_slice(), &[0]].concat();
        kvs.extend(page);
        if !more {
            return Ok(ListRecord {
                revision: at,
                kvs,
                pages,
                time,
            });
        }
    }
    Err(())
}

struct ReflectorSpec {
    index: usize,
    client: usize,
    endpoints: Vec<String>,
    endpoint: usize,
    prefix: Vec<u8>,
    page_limit: i64,
    relist_every: Duration,
    op_timeout: Duration,
}

struct ReflectorOut {
    ops: Vec<Op>,
    /// Epochs with their sessions (indices local to `sessions`).
    epochs: Vec<Epoch>,
    sessions: Vec<WatchSession>,
}

async fn reflector(
    spec: ReflectorSpec,
    clock: Clock,
    stop: Arc<AtomicBool>,
    final_listed: Arc<AtomicUsize>,
    signals: Signals,
    deadline: Instant,
) -> ReflectorOut {
    let end = prefix_end(&spec.prefix);
    let mut conn = Conn::new(
        spec.client,
        &spec.endpoints[spec.endpoint % spec.endpoints.len()],
        clock,
        spec.op_timeout,
    );
    let mut out = ReflectorOut {
        ops: Vec::new(),
        epochs: Vec::new(),
        sessions: Vec::new(),
    };
    let mut final_done = false;
    // A watch from the first list's revision, opened late (as a reflector
    // re-watching from a resource version it kept): by then compacted, it
    // must be canceled with compact_revision.
    let mut probe = None;
    while !final_done && Instant::now() < deadline {
        let Ok(first) = list(&mut conn, &spec.prefix, &end, spec.page_limit).await else {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        let chain = tokio::spawn(watch_chain(
            ChainSpec {
                client: spec.client,
                endpoints: spec.endpoints.clone(),
                first_endpoint: spec.endpoint,
                key: spec.prefix.clone(),
                range_end: end.to_vec(),
                from: first.revision + 1,
            },
            clock,
            signals.clone(),
        ));
        let mut checks = Vec::new();
        loop {
            let stopping = stop.load(Ordering::SeqCst) || Instant::now() >= deadline;
            if !stopping {
                tokio::time::sleep(spec.relist_every).await;
            }
            if chain.is_finished() && !stopping {
                break; // compacted: list again
            }
            if let Ok(l) = list(&mut conn, &spec.prefix, &end, spec.page_limit).await {
                checks.push(l);
                if stopping {
                    final_done = true;
                }
            }
            if probe.is_none() && checks.len() == PROBE_AFTER_LISTS {
                probe = Some(tokio::spawn(watch_chain(
                    ChainSpec {
                        client: spec.client,
                        endpoints: spec.endpoints.clone(),
                        first_endpoint: spec.endpoint,
                        key: spec.prefix.clone(),
                        range_end: end.to_vec(),
                        from: first.revision + 1,
                    },
                    clock,
                    signals.clone(),
                )));
            }
            if stopping {
                break;
            }
        }
        if final_done || stop.load(Ordering::SeqCst) {
            final_listed.fetch_add(1, Ordering::SeqCst);
            final_done = true;
        }
        let c = chain.await.expect("watch chain task");
        let base = out.sessions.len();
        out.epochs.push(Epoch {
            reflector: spec.index,
            list: first,
            sessions: (base..base + c.sessions.len()).collect(),
            checks,
            compacted: c.compacted,
        });
        out.sessions.extend(c.sessions.into_iter().map(|mut s| {
            s.resumes = s.resumes.map(|p| p + base);
            s
        }));
    }
    if let Some(p) = probe {
        let c = p.await.expect("probe watch task");
        let base = out.sessions.len();
        out.sessions.extend(c.sessions.into_iter().map(|mut s| {
            s.resumes = s.resumes.map(|p| p + base);
            s
        }));
    }
    out.ops = conn.ops;
    out
}

// ------------------------------------------------------------------ run

impl Kubernetes {
    fn pods(&self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for ns in 0..self.namespaces {
            for p in 0..self.pods_per_namespace {
                v.push(format!("{}pods/ns{ns}/pod-{p}", self.prefix).into_bytes());
            }
        }
        v
    }

    /// Runs the workload against `endpoints`, calling each fault with
    /// `target` at its time on this thread (as [`workload::Workload::run`]).
    pub fn run<C>(
        &self,
        target: &mut C,
        endpoints: &[String],
        faults: Vec<Fault<'_, C>>,
    ) -> KubeRecording {
        assert!(!endpoints.is_empty(), "no endpoint");
        assert!(self.clients > 0 && self.namespaces * self.pods_per_namespace > 0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let clock = Clock::start();
        let (initial_revision, held) = runtime
            .block_on(prefix_now(endpoints, &self.prefix))
            .expect("no member answered a range of the run's prefix");
        assert_eq!(
            held, 0,
            "the run's prefix {} already holds keys",
            self.prefix
        );
        let prefix = self.prefix.as_bytes().to_vec();
        let prefix_end = prefix_end(&prefix);
        let stop = Arc::new(AtomicBool::new(false));
        let signals = Signals {
            drain_to: Arc::new(AtomicI64::new(0)),
            hard_stop: Arc::new(AtomicBool::new(false)),
            chains: Arc::new(Mutex::new(Vec::new())),
        };
        let started = Instant::now();
        let deadline = started + self.duration_max;
        let n_ctl = self.clients;
        let compactor_id = n_ctl;
        let reflector_base = n_ctl + 1;
        let watcher_base = reflector_base + self.reflectors;
        let drain_client = watcher_base + self.history_watchers;

        let watchers: Vec<_> = (0..self.history_watchers)
            .map(|w| {
                runtime.spawn(watch_chain(
                    ChainSpec {
                        client: watcher_base + w,
                        endpoints: endpoints.to_vec(),
                        first_endpoint: w,
                        key: prefix.clone(),
                        range_end: prefix_end.clone(),
                        from: initial_revision + 1,
                    },
                    clock,
                    signals.clone(),
                ))
            })
            .collect();
        let final_listed = Arc::new(AtomicUsize::new(0));
        let reflectors: Vec<_> = (0..self.reflectors)
            .map(|r| {
                runtime.spawn(reflector(
                    ReflectorSpec {
                        index: r,
                        client: reflector_base + r,
                        endpoints: endpoints.to_vec(),
                        endpoint: r,
                        prefix: prefix.clone(),
                        page_limit: self.page_limit,
                        relist_every: self.relist_every,
                        op_timeout: self.op_timeout,
                    },
                    clock,
                    stop.clone(),
                    final_listed.clone(),
                    signals.clone(),
                    deadline,
                ))
            })
            .collect();
        let controllers: Vec<_> = (0..n_ctl)
            .map(|c| {
                let mut ctl = Controller {
                    conn: Conn::new(c, &endpoints[c % endpoints.len()], clock, self.op_timeout),
                    rng: Rng::new(self.seed ^ (c as u64 + 1).wrapping_mul(0x9fb2_1c65_1e98_df25)),
                    pods: self.pods(),
                    pods_prefix: format!("{}pods/", self.prefix).into_bytes(),
                    events_prefix: format!("{}events/", self.prefix).into_bytes(),
                    namespaces: self.namespaces,
                    known: HashMap::new(),
                    n: 0,
                    lease: None,
                    old_leases: Vec::new(),
                    leases_granted: 0,
                    lease_id_base: self.lease_id_base,
                    event_ttl: self.event_ttl,
                };
                let (stop, max_ops) = (stop.clone(), self.max_ops);
                runtime.spawn(async move {
                    for _ in 0..max_ops {
                        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                            break;
                        }
                        ctl.step().await;
                    }
                    ctl.conn.ops
                })
            })
            .collect();
        let compactor_task = runtime.spawn(compactor(
            Conn::new(
                compactor_id,
                &endpoints[compactor_id % endpoints.len()],
                clock,
                self.op_timeout,
            ),
            format!("{}compact_rev_key", self.prefix).into_bytes(),
            self.compact_every,
            stop.clone(),
        ));

        let mut fault_ctx = FaultCtx::new(clock, endpoints, initial_revision, &prefix);
        let records = run_faults(faults, target, &mut fault_ctx, started);
        let end_at = match records.last() {
            Some(_) => self.duration.max(started.elapsed() + self.settle),
            None => self.duration,
        };
        if let Some(rest) = end_at.checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        stop.store(true, Ordering::SeqCst);
        // What faults did as clients (a compaction) is history too.
        let mut ops = std::mem::take(&mut fault_ctx.ops);
        for c in controllers {
            ops.extend(runtime.block_on(c).expect("controller task"));
        }
        ops.extend(runtime.block_on(compactor_task).expect("compactor task"));
        let elapsed = started.elapsed();
        let waited = Instant::now();
        while final_listed.load(Ordering::SeqCst) < self.reflectors
            && waited.elapsed() < FINAL_LIST_MAX
        {
            thread::sleep(Duration::from_millis(20));
        }
        // The drain put: every watch covers the run once it saw it.
        let mut drain = Conn::new(drain_client, &endpoints[0], clock, self.op_timeout);
        let drain_key = format!("{}drain", self.prefix).into_bytes();
        let mut drain_revision = None;
        for a in 0..DRAIN_PUT_ATTEMPTS {
            drain.endpoint = endpoints[a % endpoints.len()].clone();
            drain.channel = None;
            let out =
                runtime.block_on(drain.call(put(&drain_key, format!("drain.{a}").into_bytes(), 0)));
            if let Outcome::Ok { revision, .. } = out {
                drain_revision = Some(revision);
                break;
            }
        }
        let drain_to = drain_revision.or_else(|| {
            runtime
                .block_on(prefix_now(endpoints, &self.prefix))
                .map(|(r, _)| r)
        });
        if let Some(d) = drain_to {
            signals.drain_to.store(d, Ordering::SeqCst);
            let until = Instant::now() + DRAIN_MAX;
            while Instant::now() < until
                && signals.chains.lock().unwrap().iter().any(|c| {
                    c.active.load(Ordering::SeqCst) && c.covered.load(Ordering::SeqCst) < d
                })
            {
                thread::sleep(Duration::from_millis(50));
            }
        }
        signals.hard_stop.store(true, Ordering::SeqCst);
        ops.extend(drain.ops);
        let mut sessions = Vec::new();
        let mut epochs = Vec::new();
        for w in watchers {
            let c = runtime.block_on(w).expect("watch task");
            let base = sessions.len();
            sessions.extend(c.sessions.into_iter().map(|mut s| {
                s.resumes = s.resumes.map(|p| p + base);
                s
            }));
        }
        for r in reflectors {
            let out = runtime.block_on(r).expect("reflector task");
            ops.extend(out.ops);
            let base = sessions.len();
            sessions.extend(out.sessions.into_iter().map(|mut s| {
                s.resumes = s.resumes.map(|p| p + base);
                s
            }));
            epochs.extend(out.epochs.into_iter().map(|mut e| {
                e.sessions.iter_mut().for_each(|s| *s += base);
                e
            }));
        }
        sessions.append(&mut fault_ctx.sessions);
        runtime.shutdown_timeout(self.op_timeout);
        KubeRecording {
            history: History { ops }.sorted(),
            sessions,
            epochs,
            faults: records,
            voids_at_faults: self.voids_at_faults,
            elapsed,
            initial_revision,
            drain_revision,
            members: endpoints.len(),
            event_ttl: self.event_ttl,
            drain_client,
        }
    }
}

// -------------------------------------------------------------- checking

/// What [`check`] found.
#[derive(Debug)]
pub struct KubeVerdicts {
    pub verdict: Verdict,
    pub check_time: Duration,
    pub watch: Vec<Violation>,
    pub crosscheck: Vec<String>,
    pub crosschecked: usize,
    /// The reflector invariant's findings.
    pub reflector: Vec<String>,
    /// Consistency lists compared with list + events.
    pub lists_compared: usize,
    pub lists_not_covered: usize,
    /// GuaranteedUpdate's findings.
    pub updates: Vec<String>,
    pub updates_checked: usize,
    /// Revisions of the run no watch covered (the committed history is
    /// then incomplete, and the checks relying on it are weaker).
    pub uncovered: Vec<(i64, i64)>,
    /// Run figures, for the report.
    pub ops: usize,
    pub counts: (usize, usize, usize),
    pub faults: String,
    pub compactions: usize,
    pub epochs: usize,
    pub events: usize,
    /// Watches canceled with a compact_revision.
    pub compact_cancels: usize,
    pub elapsed: Duration,
}

impl KubeVerdicts {
    pub fn passed(&self) -> bool {
        self.verdict.is_linearizable()
            && self.watch.is_empty()
            && self.crosscheck.is_empty()
            && self.reflector.is_empty()
            && self.updates.is_empty()
            && self.uncovered.is_empty()
    }

    /// A short report: ops, outcomes, faults, each checker's verdict (and
    /// the first findings of each).
    pub fn report(&self) -> String {
        let (ok, failed, unknown) = self.counts;
        let mut s = format!(
            "kubernetes: {} ops in {:.1}s ({ok} ok, {failed} failed, {unknown} unknown), \
             {} compactions, {} reflector epochs, {} watch events, {} watches canceled by \
             compaction\n{}",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.compactions,
            self.epochs,
            self.events,
            self.compact_cancels,
            self.faults
        );
        let _ = writeln!(
            s,
            "linearizability: {} (checked in {:.2}s)",
            match &self.verdict {
                Verdict::Linearizable => "linearizable".to_string(),
                Verdict::Violation(r) => r.summary.clone(),
                Verdict::Timeout(_) => "undecided (timeout)".to_string(),
            },
            self.check_time.as_secs_f64()
        );
        if !self.verdict.is_linearizable() {
            let _ = writeln!(s, "{}", self.verdict);
        }
        s += &watch::report(&self.watch, 5);
        let mut list = |name: &str, what: String, items: &[String]| {
            let _ = writeln!(s, "{name}: {what}, {} problem(s)", items.len());
            for p in items.iter().take(8) {
                let _ = writeln!(s, "  {p}");
            }
        };
        list(
            "watch vs history",
            format!("{} answered ops compared", self.crosschecked),
            &self.crosscheck,
        );
        list(
            "reflector invariant",
            format!(
                "{} epochs, {} lists compared with list + watch ({} beyond their watch)",
                self.epochs, self.lists_compared, self.lists_not_covered
            ),
            &self.reflector,
        );
        list(
            "GuaranteedUpdate",
            format!("{} successful conditional writes", self.updates_checked),
            &self.updates,
        );
        if !self.uncovered.is_empty() {
            let _ = writeln!(s, "revisions no watch covered: {:?}", self.uncovered);
        }
        s
    }
}

/// Each lease's expiry, as an unknown-outcome revoke invoked when its TTL
/// had run out since its grant was called (it may happen then or later,
/// or never within the run: as the model reads an unknown outcome).
/// Leases in `never` get none (known not to have expired in the run).
/// Leases in `pinned` (lease → revision, [`expiry_revisions`]) expire at
/// that revision: the revoke is answered there, at any time after its TTL.
pub fn with_expiries(
    h: &History,
    ttl_secs: i64,
    client: usize,
    never: &HashSet<i64>,
    pinned: &HashMap<i64, i64>,
) -> History {
    let ttl = Duration::from_secs(ttl_secs.max(0) as u64).saturating_sub(EXPIRY_SLACK);
    let mut out = h.clone();
    for op in &h.ops {
        if let (Request::LeaseGrant { id, .. }, Outcome::Ok { .. } | Outcome::Unknown(_)) =
            (&op.request, &op.outcome)
        {
            if never.contains(id) {
                continue;
            }
            let at = op.call + ttl.as_nanos() as u64;
            let (ret, outcome) = match pinned.get(id) {
                Some(&revision) => (
                    u64::MAX,
                    Outcome::Ok {
                        revision,
                        answer: Answer::LeaseRevoke,
                    },
                ),
                None => (
                    at,
                    Outcome::Unknown(format!("lease expiry ({ttl_secs}s TTL)")),
                ),
            };
            out.ops.push(Op {
                client,
                call: at,
                ret,
                request: Request::LeaseRevoke { id: *id },
                outcome,
            });
        }
    }
    out.sorted()
}

/// The revision at which each lease expired, where the committed history
/// (complete over the run) shows it beyond doubt: a revision whose events
/// are exactly the deletes of every key the lease held then, that no
/// client op can claim (an answered op at that header that may delete, an
/// unknown-outcome one that may delete one of those keys or revokes the
/// lease). Pinning them spares the linearizability search one choice per
/// lease, which is what makes long runs with leader changes decidable.
pub fn expiry_revisions(h: &History, committed: &CommittedEvents) -> HashMap<i64, i64> {
    fn deletes<'a>(r: &'a Request, out: &mut Vec<(&'a [u8], &'a [u8])>) {
        match r {
            Request::Delete { key, range_end } => out.push((key, range_end)),
            Request::Txn {
                success, failure, ..
            } => success.iter().chain(failure).for_each(|r| deletes(r, out)),
            _ => {}
        }
    }
    let covers = |(key, end): (&[u8], &[u8]), k: &[u8]| {
        if end.is_empty() {
            key == k
        } else {
            k >= key && (end == [0] || k < end)
        }
    };
    let mut answered_deletes = HashSet::new();
    let mut open_deletes = Vec::new();
    let mut open_revokes = HashSet::new();
    for op in &h.ops {
        let mut d = Vec::new();
        deletes(&op.request, &mut d);
        match (&op.outcome, &op.request) {
            (Outcome::Ok { revision, .. }, _) if !d.is_empty() => {
                answered_deletes.insert(*revision);
            }
            (Outcome::Unknown(_), Request::LeaseRevoke { id }) => {
                open_revokes.insert(*id);
            }
            (Outcome::Unknown(_), _) => open_deletes.extend(d),
            _ => {}
        }
    }
    let mut revisions: BTreeMap<i64, Vec<&watch::CommittedEvent>> = BTreeMap::new();
    for (r, e) in committed.iter() {
        revisions.entry(r).or_default().push(e);
    }
    let mut lease_of: HashMap<&[u8], i64> = HashMap::new();
    let mut held: HashMap<i64, HashSet<&[u8]>> = HashMap::new();
    let mut out = HashMap::new();
    for (r, events) in revisions {
        let leases: HashSet<i64> = events
            .iter()
            .map(|e| match e.kind {
                EventKind::Delete => lease_of.get(e.kv.key.as_slice()).copied().unwrap_or(0),
                EventKind::Put => 0,
            })
            .collect();
        if let [lease] = leases.into_iter().collect::<Vec<_>>()[..] {
            let exact = lease != 0
                && held.get(&lease).map_or(0, HashSet::len) == events.len()
                && !answered_deletes.contains(&r)
                && !open_revokes.contains(&lease)
                && !events
                    .iter()
                    .any(|e| open_deletes.iter().any(|&d| covers(d, e.kv.key.as_slice())));
            if exact {
                out.insert(lease, r);
            }
        }
        for e in events {
            let key = e.kv.key.as_slice();
            if let Some(l) = lease_of.remove(key) {
                if let Some(keys) = held.get_mut(&l) {
                    keys.remove(key);
                }
            }
            if e.kind == EventKind::Put && e.kv.lease != 0 {
                lease_of.insert(key, e.kv.lease);
                held.entry(e.kv.lease).or_default().insert(key);
            }
        }
    }
    out
}

/// Leases that cannot have expired during the run (each expiry is a choice
/// for the linearizability search, so leaving out the impossible ones
/// keeps it fast): one an answered revoke removed (it existed until then,
/// and not after), and one still holding a key when the committed history
/// (complete to the end of the run) ends (an expiry deletes every key
/// attached).
pub fn never_expired(h: &History, committed: &CommittedEvents) -> HashSet<i64> {
    let mut out: HashSet<i64> = h
        .ops
        .iter()
        .filter_map(|op| match (&op.request, &op.outcome) {
            (Request::LeaseRevoke { id }, Outcome::Ok { .. }) => Some(*id),
            _ => None,
        })
        .collect();
    let mut last: HashMap<&[u8], (EventKind, i64)> = HashMap::new();
    for (_, e) in committed.iter() {
        last.insert(&e.kv.key, (e.kind, e.kv.lease));
    }
    out.extend(
        last.values()
            .filter(|(kind, lease)| *kind == EventKind::Put && *lease != 0)
            .map(|(_, lease)| *lease),
    );
    out
}

/// Runs every check with [`CHECK_TIMEOUT`].
pub fn check(rec: &KubeRecording) -> KubeVerdicts {
    check_with(rec, CHECK_TIMEOUT)
}

/// Runs every check; the linearizability search is bounded by `timeout`.
pub fn check_with(rec: &KubeRecording, timeout: Duration) -> KubeVerdicts {
    let (mut committed, mut watch) = CommittedEvents::from_sessions(&rec.sessions);
    let compactions = rec.compactions();
    for &(revision, done) in &compactions {
        committed = committed.with_compaction(revision, done);
    }
    if compactions.is_empty() {
        // Known: none made. (`with_compaction` is what makes them known.)
        committed = committed.with_compaction(0, u64::MAX);
    }
    watch.extend(watch::validate(&rec.sessions, &committed));
    let watched_to = rec
        .sessions
        .iter()
        .filter_map(|s| s.last_revision())
        .max()
        .unwrap_or(0);
    let end = rec.drain_revision.unwrap_or(watched_to);
    let gaps = watch::uncovered(&rec.sessions, rec.initial_revision, end);
    let (crosscheck, crosschecked) = if gaps.is_empty() {
        workload::watch_vs_history(&rec.history, &committed, watched_to)
    } else {
        (Vec::new(), 0)
    };
    let committed_puts = gaps.is_empty().then(|| committed.puts());
    let (never, pinned) = if gaps.is_empty() {
        (
            never_expired(&rec.history, &committed),
            expiry_revisions(&rec.history, &committed),
        )
    } else {
        (HashSet::new(), HashMap::new())
    };
    let started = Instant::now();
    let mut history = with_expiries(
        &rec.history,
        rec.event_ttl,
        rec.drain_client + 1,
        &never,
        &pinned,
    );
    if rec.voids_at_faults {
        history = if gaps.is_empty() {
            workload::with_voids_pinned(
                &history,
                &committed,
                (rec.initial_revision, end),
                &rec.faults,
            )
        } else {
            workload::with_voids_at(&history, &rec.faults)
        };
    }
    let verdict = linearize::check_with(
        &history,
        &Options {
            timeout,
            initial: model::State::with_contents(
                rec.initial_revision.max(1),
                Vec::new(),
                Vec::new(),
            ),
            committed_puts,
            watched: committed.watched().map(<[_]>::to_vec),
            ..Options::default()
        },
    );
    let check_time = started.elapsed();
    let (reflector, lists_compared, lists_not_covered) = reflector_problems(rec, &compactions);
    let (updates, updates_checked) = if gaps.is_empty() {
        update_problems(&rec.history, &committed)
    } else {
        (Vec::new(), 0)
    };
    KubeVerdicts {
        verdict,
        check_time,
        watch,
        crosscheck,
        crosschecked,
        reflector,
        lists_compared,
        lists_not_covered,
        updates,
        updates_checked,
        uncovered: gaps,
        ops: rec.history.ops.len(),
        counts: counts(&rec.history),
        faults: faults_text(&rec.faults),
        compactions: compactions.len(),
        epochs: rec.epochs.len(),
        events: rec.sessions.iter().map(|s| s.events().count()).sum(),
        compact_cancels: rec
            .sessions
            .iter()
            .filter(|s| {
                s.responses
                    .iter()
                    .any(|r| r.canceled && r.compact_revision != 0)
            })
            .count(),
        elapsed: rec.elapsed,
    }
}

/// The reflector invariant, per epoch: no event at or below the list's
/// revision R; applying the watch's events in order to the list's state,
/// every event's prev_kv is the object's state before it (absent for a
/// create; missing only where a compaction may have removed it), a delete
/// is of an object the cache holds; and at every later list of the epoch
/// (at R' within what the watch covered) the cache equals that list.
/// Problems, lists compared, lists beyond the watch.
pub fn reflector_problems(
    rec: &KubeRecording,
    compactions: &[(i64, u64)],
) -> (Vec<String>, usize, usize) {
    let mut out = Vec::new();
    let (mut compared, mut beyond) = (0, 0);
    let may_lack_prev = |rev: i64| compactions.iter().any(|&(c, _)| c >= rev);
    for (ei, ep) in rec.epochs.iter().enumerate() {
        let r0 = ep.list.revision;
        let mut cache: BTreeMap<Vec<u8>, Kv> = ep
            .list
            .kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.clone()))
            .collect();
        let events: Vec<(usize, &watch::WatchEvent)> = ep
            .sessions
            .iter()
            .flat_map(|&si| rec.sessions[si].events().map(move |(_, _, e)| (si, e)))
            .collect();
        let covered = ep
            .sessions
            .iter()
            .filter_map(|&si| rec.sessions[si].last_revision())
            .max()
            .unwrap_or(r0);
        let mut checks: Vec<&ListRecord> = ep.checks.iter().collect();
        checks.sort_by_key(|l| l.revision);
        let mut next_check = 0;
        let mut list_out = Vec::new();
        let here = |what: String| {
            format!(
                "epoch {ei} (reflector {}, list at {r0}): {what}",
                ep.reflector
            )
        };
        let mut compare = |cache: &BTreeMap<Vec<u8>, Kv>, upto: i64, next_check: &mut usize| {
            while *next_check < checks.len() && checks[*next_check].revision <= upto {
                let l = checks[*next_check];
                *next_check += 1;
                if l.revision > covered {
                    beyond += 1;
                    continue;
                }
                compared += 1;
                let want: Vec<&Kv> = l.kvs.iter().collect();
                let have: Vec<&Kv> = cache.values().collect();
                if want != have {
                    let show = |v: &[&Kv]| {
                        v.iter()
                            .map(|kv| model::show_kv(kv))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    list_out.push(here(format!(
                        "the list at {} shows [{}], but the list at {r0} plus the watch's events \
                         up to it give [{}]",
                        l.revision,
                        show(&want),
                        show(&have)
                    )));
                }
            }
        };
        for (si, e) in events {
            let rev = e.revision();
            if rev <= r0 {
                out.push(here(format!(
                    "session {si} delivered {:?} {} at {rev}, at or below the list's revision",
                    e.kind,
                    model::show_kv(&e.kv)
                )));
                continue;
            }
            compare(&cache, rev - 1, &mut next_check);
            let before = cache.get(&e.kv.key).cloned();
            let ev = format!("session {si}: {:?} {}@{rev}", e.kind, model::show_kv(&e.kv));
            match (&e.prev_kv, &before) {
                (None, None) => {}
                (None, Some(_)) if may_lack_prev(rev) => {}
                (p, b) if p.as_ref() != b.as_ref() => out.push(here(format!(
                    "{ev} has prev_kv {}, the cache held {}",
                    p.as_ref().map_or("none".into(), model::show_kv),
                    b.as_ref().map_or("nothing".into(), model::show_kv)
                ))),
                _ => {}
            }
            match e.kind {
                EventKind::Put => {
                    let (create, version) = match &before {
                        Some(b) => (b.create_revision, b.version + 1),
                        None => (rev, 1),
                    };
                    if e.kv.create_revision != create || e.kv.version != version {
                        out.push(here(format!(
                            "{ev} does not follow the cache's {}",
                            before.as_ref().map_or("nothing".into(), model::show_kv)
                        )));
                    }
                    cache.insert(e.kv.key.clone(), e.kv.clone());
                }
                EventKind::Delete => {
                    if cache.remove(&e.kv.key).is_none() {
                        out.push(here(format!(
                            "{ev} deletes an object the cache does not hold"
                        )));
                    }
                }
            }
        }
        compare(&cache, i64::MAX, &mut next_check);
        out.extend(list_out);
    }
    (out, compared, beyond)
}

/// GuaranteedUpdate (and the other conditional writes) never lose an
/// update: every answered successful txn comparing a key's mod_revision
/// (or create_revision == 0) wrote where the key's last committed change
/// before it had that mod_revision (was absent); no two successful
/// conditional writes compared one key against the same mod_revision (a
/// fork). Problems and the writes checked.
pub fn update_problems(h: &History, committed: &CommittedEvents) -> (Vec<String>, usize) {
    let mut by_key: BTreeMap<&[u8], Vec<(i64, bool, i64)>> = BTreeMap::new();
    for (r, e) in committed.iter() {
        by_key
            .entry(&e.kv.key)
            .or_default()
            .push((r, e.kind == EventKind::Put, e.kv.mod_revision));
    }
    let mut out = Vec::new();
    let mut checked = 0;
    let mut forks: HashMap<(&[u8], i64), usize> = HashMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let (
            Request::Txn {
                compares, success, ..
            },
            Some((true, rev)),
        ) = (&op.request, succeeded(&op.outcome))
        else {
            continue;
        };
        let [Compare {
            key,
            op: CmpOp::Equal,
            target,
        }] = compares.as_slice()
        else {
            continue;
        };
        if !success.iter().any(|r| !matches!(r, Request::Range { .. })) {
            continue;
        }
        let want_mod = match target {
            Target::Mod(m) => *m,
            Target::Create(0) => 0,
            _ => continue,
        };
        checked += 1;
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
        if want_mod > 0 {
            if let Some(j) = forks.insert((key, want_mod), i) {
                out.push(format!(
                    "fork: two successful updates compared mod_revision {want_mod}: {} and {}",
                    show(j),
                    show(i)
                ));
            }
        }
        let changes = by_key.get(key.as_slice()).map_or(&[][..], |v| v.as_slice());
        let before = changes.iter().rev().find(|(r, _, _)| *r < rev);
        let had = match before {
            Some((_, true, m)) => *m,
            _ => 0,
        };
        if had != want_mod {
            out.push(format!(
                "lost update: {} compared mod_revision {want_mod}, but the key's last change \
                 before revision {rev} left {}",
                show(i),
                if had == 0 {
                    "it absent".to_string()
                } else {
                    format!("mod_revision {had}")
                }
            ));
        }
    }
    (out, checked)
}

/// Plants a defect in a recording: the first event (above its epoch's
/// list) delivered to a reflector's watch is dropped. The recording and a
/// description; None if no reflector got an event.
pub fn plant_dropped_event(rec: &KubeRecording) -> Option<(KubeRecording, String)> {
    let mut planted = rec.clone();
    for ep in &rec.epochs {
        for &si in &ep.sessions {
            let s = &mut planted.sessions[si];
            for (ri, r) in s.responses.iter_mut().enumerate() {
                if let Some(e) = r.events.first().cloned() {
                    r.events.remove(0);
                    let what = format!(
                        "dropped {:?} {} from session {si} response {ri}",
                        e.kind,
                        model::show_kv(&e.kv)
                    );
                    return Some((planted, what));
                }
            }
        }
    }
    None
}

/// Plants a lost update: the first successful GuaranteedUpdate whose key
/// was changed again later is made to compare an older mod_revision (as
/// if it had overwritten a change it never read). None if there is none.
pub fn plant_lost_update(rec: &KubeRecording) -> Option<(KubeRecording, String)> {
    let mut planted = rec.clone();
    for (i, op) in rec.history.ops.iter().enumerate() {
        let (
            Request::Txn {
                compares,
                success,
                failure,
            },
            Some((true, _)),
        ) = (&op.request, succeeded(&op.outcome))
        else {
            continue;
        };
        let [Compare {
            target: Target::Mod(m),
            ..
        }] = compares.as_slice()
        else {
            continue;
        };
        if *m <= 1 || !matches!(success.as_slice(), [Request::Put { .. }]) {
            continue;
        }
        let mut c = compares.clone();
        c[0].target = Target::Mod(m - 1);
        planted.history.ops[i].request = Request::Txn {
            compares: c,
            success: success.clone(),
            failure: failure.clone(),
        };
        return Some((
            planted,
            format!("op #{i} made to compare mod_revision {}", m - 1),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::robust::watch::{WatchEvent, WatchResponse};

    fn kv(k: &str, v: &str, c: i64, m: i64, ver: i64) -> Kv {
        Kv {
            key: k.into(),
            value: v.into(),
            create_revision: c,
            mod_revision: m,
            version: ver,
            lease: 0,
        }
    }

    fn del(k: &str, m: i64) -> Kv {
        Kv {
            key: k.into(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: m,
            version: 0,
            lease: 0,
        }
    }

    fn session(from: i64, events: Vec<WatchEvent>) -> WatchSession {
        let mut s = WatchSession::new(0, b"/r/", b"/r0", from);
        s.prev_kv = true;
        s.responses = events
            .into_iter()
            .map(|e| WatchResponse {
                header_revision: e.kv.mod_revision,
                events: vec![e],
                ..Default::default()
            })
            .collect();
        s
    }

    fn put_ev(kv: Kv, prev: Option<Kv>) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        }
    }

    fn recording(
        list: Vec<Kv>,
        events: Vec<WatchEvent>,
        checks: Vec<(i64, Vec<Kv>)>,
    ) -> KubeRecording {
        KubeRecording {
            history: History::default(),
            sessions: vec![session(3, events)],
            epochs: vec![Epoch {
                reflector: 0,
                list: ListRecord {
                    revision: 2,
                    kvs: list,
                    pages: 1,
                    time: 0,
                },
                sessions: vec![0],
                checks: checks
                    .into_iter()
                    .map(|(revision, kvs)| ListRecord {
                        revision,
                        kvs,
                        pages: 1,
                        time: 0,
                    })
                    .collect(),
                compacted: false,
            }],
            faults: Vec::new(),
            voids_at_faults: false,
            elapsed: Duration::ZERO,
            initial_revision: 1,
            drain_revision: None,
            members: 1,
            event_ttl: 2,
            drain_client: 9,
        }
    }

    #[test]
    fn reflector_invariant() {
        let a2 = kv("/r/a", "1", 2, 2, 1);
        let a3 = kv("/r/a", "2", 2, 3, 2);
        let b4 = kv("/r/b", "1", 4, 4, 1);
        let events = vec![
            put_ev(a3.clone(), Some(a2.clone())),
            put_ev(b4.clone(), None),
            WatchEvent {
                kind: EventKind::Delete,
                kv: del("/r/a", 5),
                prev_kv: Some(a3.clone()),
            },
        ];
        let good = recording(
            vec![a2.clone()],
            events.clone(),
            vec![(4, vec![a3.clone(), b4.clone()]), (5, vec![b4.clone()])],
        );
        let (p, compared, beyond) = reflector_problems(&good, &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((compared, beyond), (2, 0));
        // A list beyond what the watch covered is not compared.
        let later = recording(vec![a2.clone()], events.clone(), vec![(9, vec![])]);
        assert_eq!(reflector_problems(&later, &[]).2, 1);

        // A dropped event: the later list differs from list + events.
        let mut dropped = events.clone();
        dropped.remove(1);
        let bad = recording(vec![a2.clone()], dropped, vec![(5, vec![b4.clone()])]);
        let (p, _, _) = reflector_problems(&bad, &[]);
        assert!(p.iter().any(|m| m.contains("the list at 5")), "{p:?}");

        // A wrong prev_kv.
        let mut wrong = events.clone();
        wrong[0].prev_kv = Some(kv("/r/a", "0", 2, 1, 1));
        let (p, _, _) = reflector_problems(&recording(vec![a2.clone()], wrong, vec![]), &[]);
        assert!(p.iter().any(|m| m.contains("prev_kv")), "{p:?}");

        // An event at the list's revision.
        let mut old = events.clone();
        old.insert(0, put_ev(a2.clone(), None));
        let (p, _, _) = reflector_problems(&recording(vec![a2.clone()], old, vec![]), &[]);
        assert!(p.iter().any(|m| m.contains("at or below")), "{p:?}");

        // A missing prev_kv only where a compaction may have removed it.
        let mut missing = events.clone();
        missing[0].prev_kv = None;
        let rec = recording(vec![a2.clone()], missing, vec![]);
        assert!(!reflector_problems(&rec, &[]).0.is_empty());
        assert!(reflector_problems(&rec, &[(3, u64::MAX)]).0.is_empty());
    }

    fn op(client: usize, call: u64, request: Request, outcome: Outcome) -> Op {
        Op {
            client,
            call,
            ret: call + 1,
            request,
            outcome,
        }
    }

    fn gu(m: i64, v: &str, rev: i64) -> Op {
        op(
            0,
            rev as u64 * 10,
            Request::Txn {
                compares: vec![cmp(b"/r/a", Target::Mod(m))],
                success: vec![put(b"/r/a", v.into(), 0)],
                failure: vec![range(b"/r/a")],
            },
            Outcome::Ok {
                revision: rev,
                answer: Answer::Txn {
                    succeeded: true,
                    results: vec![Answer::Put { prev: None }],
                },
            },
        )
    }

    #[test]
    fn updates_never_fork_nor_lose() {
        let committed = CommittedEvents::from_changes([
            (
                2,
                vec![watch::Change::Put {
                    key: "/r/a".into(),
                    value: "1".into(),
                    lease: 0,
                }],
            ),
            (
                3,
                vec![watch::Change::Put {
                    key: "/r/a".into(),
                    value: "2".into(),
                    lease: 0,
                }],
            ),
            (
                4,
                vec![watch::Change::Put {
                    key: "/r/a".into(),
                    value: "3".into(),
                    lease: 0,
                }],
            ),
        ])
        .unwrap();
        let good = History {
            ops: vec![gu(2, "2", 3), gu(3, "3", 4)],
        };
        let (p, n) = update_problems(&good, &committed);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(n, 2);
        // The second update compared a revision it could not have read.
        let lost = History {
            ops: vec![gu(2, "2", 3), gu(2, "3", 4)],
        };
        let (p, _) = update_problems(&lost, &committed);
        assert!(p.iter().any(|m| m.starts_with("fork")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("lost update")), "{p:?}");
    }

    #[test]
    fn expiries_are_unknown_revokes_after_the_ttl() {
        let h = History {
            ops: vec![op(
                0,
                1_000,
                Request::LeaseGrant { id: 7, ttl: 2 },
                Outcome::Ok {
                    revision: 1,
                    answer: Answer::LeaseGrant,
                },
            )],
        };
        let none = HashMap::new();
        assert_eq!(
            with_expiries(&h, 2, 5, &HashSet::from([7]), &none)
                .ops
                .len(),
            1
        );
        let pinned = with_expiries(&h, 2, 5, &HashSet::new(), &HashMap::from([(7, 9)]));
        assert_eq!(
            pinned.ops[1].outcome,
            Outcome::Ok {
                revision: 9,
                answer: Answer::LeaseRevoke
            }
        );
        let x = with_expiries(&h, 2, 5, &HashSet::new(), &none);
        assert_eq!(x.ops.len(), 2);
        let e = &x.ops[1];
        assert_eq!(e.request, Request::LeaseRevoke { id: 7 });
        assert!(matches!(e.outcome, Outcome::Unknown(_)));
        assert_eq!(
            e.call,
            1_000 + (Duration::from_secs(2) - EXPIRY_SLACK).as_nanos() as u64
        );
    }

    /// Revision 2 puts /r/a and /r/b with lease 7, 3 puts /r/c with lease
    /// 8, 4 deletes /r/a and /r/b (7's expiry), 5 deletes /r/c.
    fn leased_history() -> CommittedEvents {
        let leased = |k, m, lease| Kv {
            lease,
            ..kv(k, "v", m, m, 1)
        };
        let del_ev = |k, m| WatchEvent {
            kind: EventKind::Delete,
            kv: del(k, m),
            prev_kv: None,
        };
        let s = session(
            2,
            vec![
                put_ev(leased("/r/a", 2, 7), None),
                put_ev(leased("/r/b", 2, 7), None),
                put_ev(leased("/r/c", 3, 8), None),
                del_ev("/r/a", 4),
                del_ev("/r/b", 4),
                del_ev("/r/c", 5),
            ],
        );
        CommittedEvents::from_sessions(&[s]).0
    }

    #[test]
    fn expiries_pinned_where_the_committed_history_shows_them() {
        let committed = leased_history();
        let none = History::default();
        assert_eq!(
            expiry_revisions(&none, &committed),
            HashMap::from([(7, 4), (8, 5)])
        );
        // A client delete answered at 5 may be what deleted /r/c, and an
        // unknown-outcome one of /r/a may be part of revision 4.
        let h = History {
            ops: vec![
                op(
                    0,
                    10,
                    Request::Delete {
                        key: b"/r/c".to_vec(),
                        range_end: Vec::new(),
                    },
                    Outcome::Ok {
                        revision: 5,
                        answer: Answer::Delete { deleted: 1 },
                    },
                ),
                op(
                    1,
                    10,
                    Request::Delete {
                        key: b"/r/".to_vec(),
                        range_end: b"/r0".to_vec(),
                    },
                    Outcome::Unknown("timeout".into()),
                ),
            ],
        };
        assert_eq!(expiry_revisions(&h, &committed), HashMap::new());
    }

    #[test]
    fn skipped_revisions_pinned_inside_the_fault_windows() {
        // Puts answered at 2, 3 and 5: revision 4 was voided.
        let put = |client, call, k: &str, r| {
            op(
                client,
                call,
                Request::Put {
                    key: k.into(),
                    value: format!("v{r}").into(),
                    lease: 0,
                },
                Outcome::Ok {
                    revision: r,
                    answer: Answer::Put { prev: None },
                },
            )
        };
        let h = History {
            ops: vec![
                put(0, 10, "/r/a", 2),
                put(0, 20, "/r/b", 3),
                put(0, 40, "/r/c", 5),
            ],
        };
        let s = session(
            2,
            vec![
                put_ev(kv("/r/a", "v2", 2, 2, 1), None),
                put_ev(kv("/r/b", "v3", 3, 3, 1), None),
                put_ev(kv("/r/c", "v5", 5, 5, 1), None),
            ],
        );
        let committed = CommittedEvents::from_sessions(&[s]).0;
        let fault = FaultRecord {
            name: "kill".into(),
            start: 25,
            end: 30,
            detail: String::new(),
        };
        let check = |faults: &[FaultRecord]| {
            let h = workload::with_voids_pinned(&h, &committed, (1, 5), faults);
            linearize::check_with(&h, &Options::default())
        };
        let pinned = workload::with_voids_pinned(&h, &committed, (1, 5), &[]);
        assert_eq!(pinned.ops.len(), 4);
        assert!(matches!(check(&[fault]), Verdict::Linearizable));
        assert!(matches!(check(&[]), Verdict::Violation(_)));
    }

    #[test]
    fn uncovered_revisions() {
        let s = |from, to| session(from, vec![put_ev(kv("/r/a", "1", from, to, 1), None)]);
        assert_eq!(watch::uncovered(&[s(2, 5), s(6, 9)], 1, 9), vec![]);
        assert_eq!(
            watch::uncovered(&[s(2, 5), s(8, 9)], 1, 10),
            vec![(6, 7), (10, 10)]
        );
    }
}
