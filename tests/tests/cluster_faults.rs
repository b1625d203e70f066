//! Faults of one member of a three-member ferrokv cluster (`--shards 2`,
//! `--heartbeat-interval 50 --election-timeout 500`), each under a
//! concurrent write load: the puts of `ferrokv_tests::cluster::Load`
//! through every member, and cross-shard transactions of four keys
//! ([`TxnLoad`], which `Load` does not do) through every member.
//!
//! - `a_follower_with_a_full_disk_fails_alone_and_catches_up`: a
//!   follower's data dir on a small tmpfs, filled while the load runs
//!   (then 1 MiB puts through the leader, until its WAL needs a new
//!   segment): the other two go on acknowledging writes; the full member
//!   does not panic, logs `no space left on device`, keeps running and
//!   serving serializable reads; space freed and the member restarted, it
//!   catches up.
//! - `a_leader_with_a_full_disk_hands_over_and_catches_up`: the same with
//!   the leader's data dir (moved back to lead after its restart onto the
//!   tmpfs): once its log fails it hands every group it still leads to
//!   another member, and the other two go on acknowledging writes.
//! - `a_members_wall_clock_jumps_and_leases_hold`: every member under
//!   libfaketime (`LD_PRELOAD`, each with its own `FAKETIME_TIMESTAMP_FILE`,
//!   re-read every second, `FAKETIME_DONT_FAKE_MONOTONIC=1`: the wall clock
//!   steps as NTP would step it, the monotonic clock does not); a
//!   follower's clock jumps 2 h ahead, leadership is moved to it, then its
//!   clock jumps a day ahead and then back 25 h while it leads. The preload
//!   is checked to take effect (libfaketime in the process's maps, the
//!   member's log timestamps ahead by the offset). No election happens
//!   but the one asked for, a lease of 30 s is not expired early (its key
//!   stays on every member, its remaining TTL is never below what real
//!   time allows), a lease of 8 s granted by the jumped leader just before
//!   its clock jumps back expires neither early nor late.
//! - `a_leader_killed_mid_member_add_leaves_one_member_list`: `member add
//!   --learner` started in the background through a follower and the
//!   leader killed -9 right after (0, 5 and 20 ms after etcdctl was
//!   spawned, and as soon as the leader logged that it proposes the
//!   change): once the new leader takes writes (and has had a moment to
//!   finish a change its predecessor left half made), the live members list
//!   the same members (the learner on all or on none, and on all if the add
//!   answered OK), and still the same once the killed member is back (its
//!   restart watched: a member that is slow to become healthy gets its
//!   revision and raft indexes reported); the add repeated succeeds if the
//!   learner is absent and says `Peer URLs already exists` if present; the
//!   learner started with `--initial-cluster-state existing` catches up
//!   (then is removed and exits, so that the next attempt may add one; the
//!   last one stays, and the final checks include it).
//! - `membership_changes_under_load_with_a_watcher`: a watch of every key
//!   from revision 1 on a follower through the whole test; a learner added,
//!   started, promoted, and another follower removed (which exits by
//!   itself), while the load runs: the watcher saw every acknowledged
//!   write once, at its revision, in revision order, each transaction's
//!   four keys in one response. Then every member is killed -9 (their
//!   logs hold the changes) and restarted: every acknowledged write is
//!   still on each, the member list unchanged.
//!
//! - `leadership_moved_round_the_members_under_load`: `move-leader` round
//!   the three members [`LEADER_MOVES`] times while both loads run, each
//!   move after [`ACKS_PER_MOVE`] more acknowledged puts. A move makes the
//!   old leader's in-flight writes fail and its start run again in the
//!   terms it still holds, with its own proposals still committing: a cut
//!   taken then (before they settle) voided writes already acknowledged.
//!
//! Each ends with every acknowledged put and transaction on every live
//! member (serializable reads through each), `endpoint hashkv` agreeing at
//! one revision, and one leader that every member names.
//!
//! Needs root (tmpfs) and libfaketime (Debian's `faketime`;
//! `FERROKV_TEST_LIBFAKETIME` points at another `libfaketime.so.1`).
//!
//! Limits: every wait is bounded by a named duration (`poll`); the loads
//! by the harness's bounds and `TXNS_PER_WRITER_MAX`; every etcdctl by the
//! harness's `ETCDCTL_TIMEOUT` (probes by `PROBE_TIMEOUT`). Every server
//! is killed when its cluster (or, for a member the test started itself,
//! its [`Joiner`]) is dropped, also when a test panics.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrokv_tests::clock::{faketime_wrapper, libfaketime, set_clock};
use ferrokv_tests::cluster::{
    check_acked_on_every_member, check_acked_on_members, member_endpoints, poll, probe, put_acked,
    statuses, value_of, wait_leader, Ack, Load, MemberEndpoint, CATCH_UP_MAX, ELECTION_TIMEOUT_MS,
    HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX, PUT_CALL_TIMEOUT, WRITE_AFTER_FAULT_MAX,
    WRITE_RETRY_PAUSE,
};
use ferrokv_tests::etcdctl::{parse_get_fields, Background};
use ferrokv_tests::grpc::{self, BidiStream};
use ferrokv_tests::server::{ferrokv_bin, ServerKind, SERVER_READY_TIMEOUT};
use ferrokv_tests::tmpfs::{self, Tmpfs};
use ferrokv_tests::{etcdctl, free_addr_pair, ClusterOptions, Output, ServerCluster};
use ferrokv_wire::pb::etcdserverpb::{
    alarm_request::AlarmAction, request_op, watch_request::RequestUnion, AlarmRequest,
    AlarmResponse, AlarmType, PutRequest, PutResponse, RequestOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use serde_json::Value;

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
/// Two shards, so that transactions and prefix reads cross shards.
const SHARDS: u32 = 2;

/// Puts acknowledged before a fault ...
const ACKS_BEFORE_FAULT: usize = 200;
const ACKS_BEFORE_FAULT_MAX: Duration = Duration::from_secs(20);
/// ... and at each later stage.
const ACKS_PER_STAGE: usize = 100;

/// A three-member cluster of `binary` (ferrokv, or a wrapper that execs
/// it) under `dir`, `--shards 2`, fast elections.
fn start_cluster(binary: PathBuf, dir: &Path, token: &str) -> ServerCluster {
    ServerCluster::start(
        ServerKind::Ferrokv,
        binary,
        dir,
        &NAMES,
        token,
        ClusterOptions {
            shards: Some(SHARDS),
            extra_args: vec![
                format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
                format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
            ],
        },
    )
}

fn ferrokv() -> PathBuf {
    ferrokv_bin().unwrap_or_else(|e| panic!("{e}"))
}

fn tempdir(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ferrokv-faults-{test}-"))
        .disable_cleanup(std::env::var_os("FERRO_KEEP_DIRS").is_some())
        .tempdir()
        .expect("tempdir")
}

fn all_members() -> Vec<usize> {
    (0..NAMES.len()).collect()
}

fn others(member: usize) -> Vec<usize> {
    (0..NAMES.len()).filter(|&i| i != member).collect()
}

/// Every member of `c` in `members` still runs (none panicked or exited).
fn assert_running(c: &mut ServerCluster, members: &[usize], when: &str) {
    for &i in members {
        let m = &mut c.members[i];
        if !m.is_running() {
            let status = m.exit_status();
            panic!("{} exited {when}: {status:?}\n{}", m.name(), m.log_tail());
        }
    }
}

/// What no member may log: a panic, and a marker voiding revisions that
/// were visible already (`Sequencer::marker`: acknowledged writes lost).
const LOG_ALARMS: [(&str, &str); 2] = [
    ("panicked", "panicked"),
    ("is visible here already", "voided visible revisions"),
];

/// No member's whole log has any of [`LOG_ALARMS`] in it.
fn assert_logs_clean(logs: &[(&str, &Path)]) {
    for (name, path) in logs {
        let text = fs::read_to_string(path).unwrap_or_default();
        for (needle, what) in LOG_ALARMS {
            if let Some(at) = text.find(needle) {
                let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                panic!(
                    "{name} {what} ({}):\n{}",
                    path.display(),
                    text[from..].chars().take(3000).collect::<String>()
                );
            }
        }
    }
}

fn cluster_logs(c: &ServerCluster) -> Vec<(&str, &Path)> {
    c.members.iter().map(|m| (m.name(), m.log_path())).collect()
}

// ------------------------------------------------------ member probes

/// One member's `endpoint status`: `(member id, leader id, raft term)`.
fn status_of(url: &str) -> Option<(u64, u64, u64)> {
    let out = probe(url, &["endpoint", "status", "-w", "json"]);
    let rows: Value = serde_json::from_str(&out.stdout).ok()?;
    let s = &rows.as_array()?.first()?["Status"];
    Some((
        s["header"]["member_id"].as_u64()?,
        s["leader"].as_u64().unwrap_or(0),
        s["raftTerm"].as_u64()?,
    ))
}

/// A member as `member list -w json` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    id: u64,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    learner: bool,
}

/// `member list -w json` through `url`, sorted by id.
fn member_list(url: &str) -> Result<Vec<Listed>, Output> {
    let out = probe(url, &["member", "list", "-w", "json"]);
    let parsed: Option<Vec<Listed>> = (|| {
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                Some(Listed {
                    id: m["ID"].as_u64()?,
                    name: m["name"].as_str().unwrap_or("").to_string(),
                    peer_urls: strings(&m["peerURLs"]),
                    client_urls: strings(&m["clientURLs"]),
                    learner: m["isLearner"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    })();
    match parsed {
        Some(mut list) if out.code == 0 => {
            list.sort();
            Ok(list)
        }
        _ => Err(out),
    }
}

/// Waits until `member list` through every one of `urls` answers the same
/// list (within `bound`); that list, or what each answered last.
fn same_member_list(urls: &[String], bound: Duration) -> Result<Vec<Listed>, String> {
    let mut last = Vec::new();
    let agreed = poll(bound, || {
        let lists: Vec<Result<Vec<Listed>, Output>> = urls.iter().map(|u| member_list(u)).collect();
        let first = lists.first()?.as_ref().ok()?.clone();
        let same = lists.iter().all(|l| l.as_ref().is_ok_and(|l| *l == first));
        last = lists;
        same.then_some(first)
    });
    agreed.ok_or_else(|| {
        urls.iter()
            .zip(&last)
            .map(|(u, l)| format!("  {u}: {l:?}\n"))
            .collect()
    })
}

/// Waits until every one of `urls` answers `endpoint status` naming the
/// same leader, one of them (at most `LEADER_WAIT_MAX`): its member id;
/// panics otherwise.
fn one_leader(urls: &[String], logs: &dyn Fn() -> String) -> u64 {
    let mut last = Vec::new();
    let agreed = poll(LEADER_WAIT_MAX, || {
        let st: Vec<Option<(u64, u64, u64)>> = urls.iter().map(|u| status_of(u)).collect();
        last = st.clone();
        let leader = st.first()?.as_ref()?.1;
        let all = st.iter().all(|s| s.is_some_and(|(_, l, _)| l == leader));
        let among = st.iter().any(|s| s.is_some_and(|(id, _, _)| id == leader));
        (leader != 0 && all && among).then_some(leader)
    });
    agreed.unwrap_or_else(|| {
        panic!(
            "the members do not name one leader among them within {LEADER_WAIT_MAX:?}: \
             (member, leader, term) {:?}\n{}",
            urls.iter().zip(&last).collect::<Vec<_>>(),
            logs()
        )
    })
}

// ------------------------------------------------- transaction load

/// Keys of the cross-shard transactions; each transaction puts
/// `txn/<writer>/<n>/{a,b,c,d}`, each to [`value_of`] its key (with two
/// shards, four keys all in one shard in 1 of 8 transactions).
const TXN_PREFIX: &str = "txn/";
const TXN_KEYS: [&str; 4] = ["a", "b", "c", "d"];
/// Bound on the transactions one writer attempts.
const TXNS_PER_WRITER_MAX: usize = 1000;
/// Bound on a whole transaction load.
const TXN_LOAD_DURATION_MAX: Duration = Duration::from_secs(60);

/// An acknowledged transaction: its keys and its one revision.
#[derive(Clone, Debug)]
struct TxnAck {
    keys: Vec<String>,
    revision: u64,
}

/// One writer per member, each committing transactions of [`TXN_KEYS`]
/// through its member over gRPC; as `Load`, a transaction that fails or
/// times out is not acknowledged.
struct TxnLoad {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<TxnAck>>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl TxnLoad {
    fn start(c: &ServerCluster) -> TxnLoad {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let writers = c
            .members
            .iter()
            .enumerate()
            .map(|(w, m)| {
                let endpoint = m.endpoint();
                let (stop, acks) = (stop.clone(), acks.clone());
                runtime.spawn(async move {
                    let started = Instant::now();
                    let mut channel = None;
                    for n in 0..TXNS_PER_WRITER_MAX {
                        if stop.load(Ordering::SeqCst) || started.elapsed() > TXN_LOAD_DURATION_MAX
                        {
                            break;
                        }
                        let keys: Vec<String> = TXN_KEYS
                            .iter()
                            .map(|k| format!("{TXN_PREFIX}{w}/{n:05}/{k}"))
                            .collect();
                        let success = keys
                            .iter()
                            .map(|k| RequestOp {
                                request: Some(request_op::Request::RequestPut(PutRequest {
                                    key: Bytes::from(k.clone()),
                                    value: Bytes::from(value_of(k)),
                                    ..Default::default()
                                })),
                            })
                            .collect();
                        let req = TxnRequest {
                            success,
                            ..Default::default()
                        };
                        let ch = channel.get_or_insert_with(|| grpc::connect_lazy(&endpoint));
                        let result = grpc::try_unary_within::<TxnRequest, TxnResponse>(
                            ch,
                            "/etcdserverpb.KV/Txn",
                            req,
                            PUT_CALL_TIMEOUT,
                        )
                        .await;
                        match result {
                            Some(Ok(resp)) if resp.succeeded => {
                                let revision = resp.header.map_or(0, |h| h.revision) as u64;
                                acks.lock().expect("acks").push(TxnAck { keys, revision });
                            }
                            _ => {
                                channel = None;
                                tokio::time::sleep(WRITE_RETRY_PAUSE).await;
                            }
                        }
                    }
                })
            })
            .collect();
        TxnLoad {
            runtime: Some(runtime),
            stop,
            acks,
            writers,
        }
    }

    fn finish(mut self) -> Vec<TxnAck> {
        self.stop.store(true, Ordering::SeqCst);
        let runtime = self.runtime.take().expect("runtime");
        for w in self.writers.drain(..) {
            runtime.block_on(w).expect("txn writer task");
        }
        std::mem::take(&mut *self.acks.lock().expect("acks"))
    }
}

impl Drop for TxnLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(PUT_CALL_TIMEOUT);
        }
    }
}

/// Through every one of `members` (serializable): every acknowledged
/// transaction's keys at its revision; every transaction held whole (all
/// four keys, one revision: never a part of one) with the values written;
/// the same on all.
fn check_txns_on_members(members: &[MemberEndpoint], acks: &[TxnAck], logs: &dyn Fn() -> String) {
    assert!(!acks.is_empty(), "no transaction was acknowledged");
    let mut first: Option<(String, BTreeMap<String, ferrokv_tests::etcdctl::FieldsKv>)> = None;
    for m in members {
        let out = etcdctl(
            &m.url,
            &[
                "get",
                "--prefix",
                TXN_PREFIX,
                "--consistency=s",
                "-w",
                "fields",
            ],
            None,
        );
        assert_eq!(
            out.code, 0,
            "{}: get --prefix {TXN_PREFIX}: {out:?}",
            m.name
        );
        let (_, kvs) = parse_get_fields(&out.stdout);
        let missing: Vec<String> = acks
            .iter()
            .flat_map(|a| a.keys.iter().map(move |k| (k, a.revision)))
            .filter(|(k, rev)| {
                kvs.get(*k)
                    .is_none_or(|kv| kv.value != value_of(k) || kv.mod_revision != *rev)
            })
            .map(|(k, rev)| format!("{k} at {rev} (got {:?})", kvs.get(k)))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: {} keys of acknowledged transactions missing or changed, e.g. {:?}\n{}",
            m.name,
            missing.len(),
            &missing[..missing.len().min(10)],
            logs()
        );
        // Every transaction held is whole.
        let mut held: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for (k, kv) in &kvs {
            assert_eq!(
                kv.value,
                value_of(k),
                "{}: {k} holds a value never written",
                m.name
            );
            let (txn, key) = k.rsplit_once('/').expect("txn/<w>/<n>/<k>");
            held.entry(txn).or_default().push((key, kv.mod_revision));
        }
        let partial: Vec<String> = held
            .iter()
            .filter(|(_, keys)| {
                keys.len() != TXN_KEYS.len() || keys.iter().any(|(_, r)| *r != keys[0].1)
            })
            .map(|(txn, keys)| format!("{txn}: {keys:?}"))
            .collect();
        assert!(
            partial.is_empty(),
            "{}: transactions held in part (a cross-shard transaction not atomic): {:?}\n{}",
            m.name,
            &partial[..partial.len().min(10)],
            logs()
        );
        match &first {
            None => first = Some((m.name.clone(), kvs)),
            Some((first_name, first_kvs)) => assert!(
                *first_kvs == kvs,
                "{first_name} and {} hold different {TXN_PREFIX} keys ({} and {})",
                m.name,
                first_kvs.len(),
                kvs.len()
            ),
        }
    }
    eprintln!(
        "{} acknowledged cross-shard transactions on each of {} members",
        acks.len(),
        members.len()
    );
}

// ------------------------------------------------- a member joining

/// A member the test adds with `member add` and starts itself, with
/// `--initial-cluster-state existing` (a learner never answers `endpoint
/// health`, so it is not waited for). Killed when dropped; dies with the
/// test's thread too.
struct Joiner {
    name: String,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// The binary and flags it was started with, for a restart.
    command: Option<(PathBuf, Vec<String>)>,
    child: Option<Child>,
}

impl Joiner {
    fn new(dir: &Path, name: &str) -> Joiner {
        let (client_addr, peer_addr) = free_addr_pair();
        let member_dir = dir.join(format!(
            "joiner-{name}-{}-{}",
            client_addr.ip(),
            client_addr.port()
        ));
        fs::create_dir_all(&member_dir).expect("joiner dir");
        Joiner {
            name: name.to_string(),
            client_addr,
            peer_addr,
            data_dir: member_dir.join("data"),
            log_path: member_dir.join("server.log"),
            command: None,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    fn peer_url(&self) -> String {
        format!("http://{}", self.peer_addr)
    }

    fn endpoint(&self, learner: bool) -> MemberEndpoint {
        MemberEndpoint {
            name: self.name.clone(),
            url: self.url(),
            learner,
        }
    }

    /// Starts it with the cluster's binary and common flags, its own
    /// addresses, `--initial-cluster` the members of `c` in `members` and
    /// itself, `--initial-cluster-state existing`.
    fn spawn(&mut self, c: &ServerCluster, members: &[usize]) {
        const PER_MEMBER: [&str; 8] = [
            "--name=",
            "--data-dir=",
            "--listen-client-urls=",
            "--advertise-client-urls=",
            "--listen-peer-urls=",
            "--initial-advertise-peer-urls=",
            "--initial-cluster=",
            "--initial-cluster-state=",
        ];
        assert!(self.child.is_none(), "{} already started", self.name);
        let mut initial: Vec<String> = members
            .iter()
            .map(|&i| format!("{}={}", c.members[i].name(), c.members[i].peer_url()))
            .collect();
        initial.push(format!("{}={}", self.name, self.peer_url()));
        let (client, peer) = (self.url(), self.peer_url());
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=existing".to_string(),
        ];
        args.extend(
            c.members[0]
                .args()
                .into_iter()
                .filter(|a| !PER_MEMBER.iter().any(|p| a.starts_with(p))),
        );
        self.command = Some((c.members[0].binary().to_path_buf(), args));
        self.spawn_again();
    }

    /// Starts it (again) with the binary and flags of its first start.
    fn spawn_again(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let (binary, args) = self.command.clone().expect("started before");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("joiner log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(&binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("test process exited during spawn"));
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start joiner"));
    }

    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        poll(bound, || child.try_wait().ok().flatten())
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn log_tail(&self) -> String {
        joiner_log_tail(&self.name, &self.log_path)
    }
}

fn joiner_log_tail(name: &str, log_path: &Path) -> String {
    let text = fs::read(log_path).unwrap_or_default();
    let tail = &text[text.len().saturating_sub(4096)..];
    format!(
        "--- joiner {name} log {} (tail):\n{}",
        log_path.display(),
        String::from_utf8_lossy(tail)
    )
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bound on a member add refused with `etcdserver: unhealthy cluster`
/// (a member just restarted is not connected to the leader yet).
const CONNECTED_WAIT_MAX: Duration = Duration::from_secs(20);
/// Bound on `member promote` being accepted once the learner runs.
const PROMOTE_MAX: Duration = Duration::from_secs(20);
/// Bound on a removed member's process exiting by itself.
const REMOVED_EXIT_MAX: Duration = Duration::from_secs(20);
/// Bound on the members agreeing on one member list after a change.
const MEMBERS_AGREE_MAX: Duration = Duration::from_secs(10);

/// etcdctl through `url` repeated while it is refused with `unhealthy
/// cluster` or `not enough started members` (at most `bound`); the last
/// answer.
fn ctl_while_unready(url: &str, args: &[&str], bound: Duration) -> Output {
    let mut last = None;
    poll(bound, || {
        let out = etcdctl(url, args, None);
        let again = out.code != 0
            && (out.stderr.contains("unhealthy cluster")
                || out.stderr.contains("not enough started members"));
        last = Some(out);
        (!again).then_some(())
    });
    last.expect("ran at least once")
}

/// The joiner serves (serializable) a put made through the leader after
/// it started within `CATCH_UP_MAX`, and then every put `load` had
/// acknowledged before that put (all at lower revisions).
fn joiner_catches_up(c: &ServerCluster, leader: usize, j: &Joiner, load: &Load, stage: &str) {
    let acks = load.acks_so_far();
    let mark = put_acked(c, leader, &format!("sentinel/{}-{stage}", j.name));
    let started = Instant::now();
    let served = poll(CATCH_UP_MAX, || {
        let out = probe(
            &j.url(),
            &["get", &mark.key, "--consistency=s", "-w", "fields"],
        );
        (out.code == 0 && out.stdout.contains(&format!("\"Key\" : \"{}\"", mark.key))).then_some(())
    });
    assert!(
        served.is_some(),
        "{} ({stage}) did not serve {} within {CATCH_UP_MAX:?}\n{}\n{}",
        j.name,
        mark.key,
        c.log_tails(),
        j.log_tail()
    );
    let out = etcdctl(
        &j.url(),
        &[
            "get",
            "--prefix",
            "load/",
            "--consistency=s",
            "-w",
            "fields",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}: {out:?}", j.name);
    let (revision, kvs) = parse_get_fields(&out.stdout);
    let missing: Vec<String> = acks
        .iter()
        .filter(|a| {
            kvs.get(&a.key)
                .is_none_or(|kv| kv.mod_revision != a.revision)
        })
        .map(|a| format!("{} at {} (got {:?})", a.key, a.revision, kvs.get(&a.key)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} ({stage}): serving {} (at {}) at revision {revision}, it lacks {} of the {} puts \
         acknowledged before it, e.g. {:?}\n{}",
        j.name,
        mark.key,
        mark.revision,
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(10)],
        j.log_tail()
    );
    eprintln!(
        "{} ({stage}) serves a put made after its start {:?} later, and all {} acknowledged so far",
        j.name,
        started.elapsed(),
        acks.len()
    );
}

// -------------------------------------------------------------- disk full

/// Size of the full follower's tmpfs: its data dir (two shards, each with
/// a 64 MiB WAL segment in use and the next one preallocated) with room.
const TMPFS_MIB: u64 = 512;
/// The puts that make the full member's WAL need new segments: values of
/// 1 MiB, all to one key (one shard), through the leader.
const BIG_KEY: &str = "fill/big";
const BIG_VALUE_BYTES: usize = 1 << 20;
/// Two segments of one shard (the first rotation takes the segment
/// preallocated before the disk filled up), with room.
const BIG_PUTS_MAX: usize = 300;
const BIG_PUTS_DURATION_MAX: Duration = Duration::from_secs(60);
const BIG_PUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries of the serializable read through the full member.
const SERIALIZABLE_READ_TRIES: usize = 3;

fn big_value(n: usize) -> Vec<u8> {
    let mut v = format!("big-{n:05}-").into_bytes();
    v.resize(BIG_VALUE_BYTES, b'a' + (n % 26) as u8);
    v
}

/// The part of a log file after byte `from`.
fn log_since(path: &Path, from: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let _ = f.seek(SeekFrom::Start(from));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_follower_with_a_full_disk_fails_alone_and_catches_up() {
    full_disk(false);
}

/// The leader's disk fills up: its log fails, it hands every group it
/// still leads to another member (without that, no member leads every
/// group and the cluster takes no write until it restarts), and the
/// others go on.
#[test]
fn a_leader_with_a_full_disk_hands_over_and_catches_up() {
    full_disk(true);
}

/// A member's data dir on a small tmpfs, filled under load (the leader's
/// if `leader_fills`, else a follower's); see the module's notes.
fn full_disk(leader_fills: bool) {
    let dir = tempdir("disk-full");
    let mut c = start_cluster(
        ferrokv(),
        &dir.path().join("cluster"),
        "ferrokv-faults-disk",
    );
    let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let full = if leader_fills {
        leader
    } else {
        others(leader)[0]
    };
    let name = c.members[full].name().to_string();

    // The follower's data dir onto a tmpfs of its own (same path).
    c.members[full].kill_9();
    let data = c.members[full].data_dir().to_path_buf();
    let tmpfs = Tmpfs::move_onto(&data, TMPFS_MIB).unwrap_or_else(|e| panic!("{e}"));
    c.members[full].start_again();
    let (now, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    if leader_fills && now != full {
        // Its restart cost it the lead: move it back.
        let (id, _, _) = status_of(&c.members[full].endpoint()).expect("status of the full member");
        let moved = probe(&c.endpoints(), &["move-leader", &format!("{id:x}")]);
        assert_eq!(moved.code, 0, "move-leader to {name}: {moved:?}");
        let (now, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        assert_eq!(now, full, "leadership did not move back to {name}");
    }
    eprintln!(
        "{name}'s data dir on a tmpfs of {TMPFS_MIB} MiB:\n{}",
        tmpfs.df()
    );

    let load = Load::start(&c);
    let txns = TxnLoad::start(&c);
    load.wait_acked(
        &c,
        ACKS_BEFORE_FAULT,
        ACKS_BEFORE_FAULT_MAX,
        "before the fill",
    );
    let log_from = log_len(c.members[full].log_path());
    let filled_bytes = tmpfs::fill(&data).unwrap_or_else(|e| panic!("{e}"));
    let filled = Instant::now();
    let acked_at_fill = load.acked();
    eprintln!(
        "{name}'s tmpfs filled with {} MiB:\n{}",
        filled_bytes >> 20,
        tmpfs.df()
    );

    // 1 MiB puts until the full member's WAL fails.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Through a member whose disk is not full (forwarded to the leader).
    let via_url = c.members[others(full)[0]].endpoint();
    let log_path = c.members[full].log_path().to_path_buf();
    let failed = |text: &str| text.contains("shard log failed");
    let (big_acks, big_tries) = runtime.block_on(async {
        let channel = grpc::connect_lazy(&via_url);
        let mut acks: Vec<(usize, u64)> = Vec::new();
        let started = Instant::now();
        let mut n = 0;
        while n < BIG_PUTS_MAX && started.elapsed() < BIG_PUTS_DURATION_MAX {
            if n % 8 == 0 && failed(&log_since(&log_path, log_from)) {
                break;
            }
            let req = PutRequest {
                key: Bytes::from_static(BIG_KEY.as_bytes()),
                value: Bytes::from(big_value(n)),
                ..Default::default()
            };
            let r = grpc::try_unary_within::<PutRequest, PutResponse>(
                &channel,
                "/etcdserverpb.KV/Put",
                req,
                BIG_PUT_TIMEOUT,
            )
            .await;
            if let Some(Ok(resp)) = r {
                acks.push((n, resp.header.map_or(0, |h| h.revision) as u64));
            }
            n += 1;
        }
        (acks, n)
    });
    let full_log = log_since(c.members[full].log_path(), log_from);
    let failed_at = Instant::now();
    let acked_at_failure = load.acked();
    assert!(
        failed(&full_log),
        "{name}'s WAL never failed after {big_tries} puts of 1 MiB on a full disk \
         ({} acknowledged):\n{}\n{}",
        big_acks.len(),
        tmpfs.df(),
        c.members[full].log_tail()
    );
    let error_lines: Vec<&str> = full_log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    eprintln!(
        "{name}: WAL failed after {big_tries} puts of 1 MiB ({} acknowledged) since the fill \
         {:?} ago; its error lines:\n{}",
        big_acks.len(),
        filled.elapsed(),
        error_lines[..error_lines.len().min(10)].join("\n")
    );
    assert!(
        full_log
            .to_ascii_lowercase()
            .contains("no space left on device"),
        "{name}'s log does not say `no space left on device`:\n{full_log}"
    );

    // The other two go on; the full member runs and serves reads.
    assert!(
        acked_at_failure > acked_at_fill,
        "no put acknowledged between the fill and {name}'s WAL failure"
    );
    let first_write = load.first_write_after(&c, failed_at, &others(full));
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "with a member's disk full",
    );
    assert_running(&mut c, &all_members(), "with its disk full");
    assert_logs_clean(&cluster_logs(&c));
    let before = load.acks_so_far();
    let early = &before[0];
    // A few tries: on a loaded machine one read can miss etcdctl's 5 s.
    let serves = |out: &ferrokv_tests::etcdctl::Output| {
        out.code == 0 && out.stdout.contains(&format!("\"Key\" : \"{}\"", early.key))
    };
    let mut out = probe(
        &c.members[full].endpoint(),
        &["get", &early.key, "--consistency=s", "-w", "fields"],
    );
    for _ in 0..SERIALIZABLE_READ_TRIES {
        if serves(&out) {
            break;
        }
        out = probe(
            &c.members[full].endpoint(),
            &["get", &early.key, "--consistency=s", "-w", "fields"],
        );
    }
    assert!(
        serves(&out),
        "{name} with its disk full does not serve a serializable read of {}: {out:?}",
        early.key
    );
    let lin = probe(&c.members[full].endpoint(), &["get", &early.key]);
    let put = probe(
        &c.members[full].endpoint(),
        &["put", "through-the-full-member", "x"],
    );
    let health = probe(&c.members[full].endpoint(), &["endpoint", "health"]);
    eprintln!(
        "{name} with its disk full: runs, serves serializable reads; a linearizable get \
         through it: exit {} {}; a put through it: exit {} {}; `endpoint health` through \
         it: exit {} {}; the others acknowledged {} puts between the fill and its WAL \
         failure, a probe put through them {first_write:?} after the failure was seen",
        lin.code,
        lin.stderr.lines().last().unwrap_or(""),
        put.code,
        put.stderr.lines().last().unwrap_or(""),
        health.code,
        health
            .stdout
            .trim()
            .lines()
            .chain(health.stderr.lines())
            .last()
            .unwrap_or(""),
        acked_at_failure - acked_at_fill,
    );

    // Space freed, the member restarted: it catches up.
    tmpfs::free(&data).unwrap_or_else(|e| panic!("{e}"));
    c.members[full].kill_9();
    let restarted = Instant::now();
    restart_watched(&mut c, full);
    eprintln!(
        "{name} restarted with space freed: healthy {:?} after its start",
        restarted.elapsed()
    );
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "after the restart",
    );
    let acks = load.finish();
    let txn_acks = txns.finish();
    check_acked_on_every_member(&c, &acks);
    let everyone = member_endpoints(&c, &all_members());
    let logs = || String::new();
    check_txns_on_members(&everyone, &txn_acks, &logs);
    // The last acknowledged big put (or a later one) on every member.
    let &(last_n, last_rev) = big_acks.last().expect("a big put was acknowledged");
    for m in &everyone {
        let out = etcdctl(
            &m.url,
            &["get", BIG_KEY, "--consistency=s", "-w", "fields"],
            None,
        );
        let (_, kvs) = parse_get_fields(&out.stdout);
        let kv = kvs
            .get(BIG_KEY)
            .unwrap_or_else(|| panic!("{}: {BIG_KEY} missing", m.name));
        let n: usize = kv.value[4..9].parse().expect("big value number");
        assert!(
            kv.mod_revision >= last_rev && n >= last_n && kv.value.len() == BIG_VALUE_BYTES,
            "{}: {BIG_KEY} at {} (put {n}), the last acknowledged put {last_n} was at {last_rev}",
            m.name,
            kv.mod_revision
        );
    }
    wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let urls: Vec<String> = everyone.iter().map(|m| m.url.clone()).collect();
    one_leader(&urls, &logs);
    assert_running(&mut c, &all_members(), "after the restart");
    assert_logs_clean(&cluster_logs(&c));
    drop(c);
    drop(tmpfs);
}

// ---------------------------------------------------------- clock jump

/// Bound on a changed clock file taking effect (libfaketime re-reads it
/// when its cache of FAKETIME_CACHE_DURATION=1 s, counted in whole
/// seconds, expired: observed 1 to 4 s).
const CLOCK_TAKES_EFFECT_MAX: Duration = Duration::from_secs(10);
/// How long the cluster runs with a clock jumped before it is checked.
const AFTER_JUMP: Duration = Duration::from_secs(3);
const LONG_LEASE_TTL: u64 = 30;
const SHORT_LEASE_TTL: u64 = 8;
/// A lease expires at most this long after its TTL ran out.
const LEASE_EXPIRY_LATE_MAX: Duration = Duration::from_secs(10);

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The timestamps (unix seconds, the logger's first field) of the log
/// lines after byte `from`.
fn log_times(path: &Path, from: u64) -> Vec<(f64, String)> {
    log_since(path, from)
        .lines()
        .filter_map(|l| {
            let t: f64 = l.split_whitespace().next()?.parse().ok()?;
            Some((t, l.to_string()))
        })
        .collect()
}

/// How far ahead of the real clock (seconds; negative: behind) the member
/// at `url` logs: it is made to log a line (an Alarm deactivate of
/// NOSPACE, which changes nothing when no alarm is raised and which it
/// logs), whose timestamp is compared with the real clock.
fn logged_clock_offset(url: &str, log: &Path) -> (f64, String) {
    let from = log_len(log);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let channel = grpc::connect_lazy(url);
        let req = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 0,
            alarm: AlarmType::Nospace as i32,
        };
        let _: AlarmResponse = grpc::unary(&channel, "/etcdserverpb.Maintenance/Alarm", req).await;
    });
    let real = now_unix();
    let (t, line) = poll(Duration::from_secs(5), || {
        log_times(log, from)
            .into_iter()
            .find(|(_, l)| l.contains("alarm disarm requested"))
    })
    .unwrap_or_else(|| {
        panic!(
            "{url} did not log the alarm deactivate:\n{}",
            log_since(log, from)
        )
    });
    (t - real, line)
}

/// Slack on a logged clock offset (the clock file is re-read every
/// second; the line is logged before the real clock is read).
const OFFSET_SLACK_SECS: f64 = 60.0;

/// Waits until the member at `url` logs `expected` seconds off the real
/// clock (its clock file took effect; libfaketime re-reads it within a
/// few seconds), at most `CLOCK_TAKES_EFFECT_MAX`.
fn wait_clock_offset(name: &str, url: &str, log: &Path, expected: f64, when: &str) {
    let mut last = None;
    let took = poll(CLOCK_TAKES_EFFECT_MAX, || {
        let (offset, line) = logged_clock_offset(url, log);
        let ok = (offset - expected).abs() < OFFSET_SLACK_SECS;
        last = Some((offset, line));
        ok.then_some(())
    });
    let (offset, line) = last.expect("probed once");
    assert!(
        took.is_some(),
        "{when}: {name} logs {offset:.0}s off the real clock, not {expected:.0}s, \
         {CLOCK_TAKES_EFFECT_MAX:?} after its clock file changed: libfaketime's clock file \
         did not take effect (`{line}`)"
    );
    eprintln!("{when}: {name} logs {offset:.0}s off the real clock: `{line}`");
}

/// `lease grant <ttl>` through `url`: the lease id in hex.
fn grant(url: &str, ttl: u64) -> String {
    let out = etcdctl(url, &["lease", "grant", &ttl.to_string()], None);
    assert_eq!(out.code, 0, "lease grant: {out:?}");
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {out:?}"))
        .to_string()
}

/// `lease timetolive <id>` through `url`: the remaining TTL in seconds, or
/// None if the lease is gone (etcdctl prints TTL -1).
fn remaining_ttl(url: &str, id: &str) -> Option<i64> {
    let out = etcdctl(url, &["lease", "timetolive", id, "-w", "json"], None);
    assert_eq!(out.code, 0, "lease timetolive {id}: {out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("timetolive json");
    let ttl = v["ttl"].as_i64().expect("ttl");
    (ttl >= 0).then_some(ttl)
}

/// Whether `key` exists, read serializably through `url`.
fn exists(url: &str, key: &str) -> bool {
    let out = probe(url, &["get", key, "--consistency=s", "--keys-only"]);
    assert_eq!(out.code, 0, "get {key} via {url}: {out:?}");
    out.stdout.lines().any(|l| l == key)
}

/// The long lease: its key on every member; its remaining TTL not below
/// what real time since its grant allows (1 s of slack for rounding).
fn check_long_lease(c: &ServerCluster, id: &str, key: &str, granted: Instant, when: &str) {
    for m in &c.members {
        assert!(
            exists(&m.endpoint(), key),
            "{when}: {key} (lease {id}, TTL {LONG_LEASE_TTL}s, granted {:?} ago) gone on {}\n{}",
            granted.elapsed(),
            m.name(),
            c.log_tails()
        );
    }
    let ttl = remaining_ttl(&c.members[0].endpoint(), id).unwrap_or_else(|| {
        panic!(
            "{when}: lease {id} gone {:?} after its grant",
            granted.elapsed()
        )
    });
    let allowed = LONG_LEASE_TTL as i64 - granted.elapsed().as_secs() as i64 - 1;
    assert!(
        ttl >= allowed && ttl <= LONG_LEASE_TTL as i64,
        "{when}: lease {id} has {ttl}s left {:?} after its grant with TTL {LONG_LEASE_TTL}s",
        granted.elapsed()
    );
    eprintln!(
        "{when}: {key} on every member, lease {id} has {ttl}s left {:?} after its grant",
        granted.elapsed()
    );
}

/// The raft term every member reports now (they must agree).
fn term_now(c: &ServerCluster) -> u64 {
    let st = statuses(c, &all_members());
    assert_eq!(st.len(), NAMES.len(), "statuses: {st:?}");
    st.iter().map(|s| s.raft_term).max().unwrap_or(0)
}

#[test]
fn a_members_wall_clock_jumps_and_leases_hold() {
    let dir = tempdir("clock");
    let clocks = dir.path().to_path_buf();
    let lib = libfaketime();
    for name in NAMES {
        set_clock(&clocks, name, "+0");
    }
    let wrapper = faketime_wrapper(&clocks, &lib, &ferrokv());
    let mut c = start_cluster(wrapper, &dir.path().join("cluster"), "ferrokv-faults-clock");
    // The preload took: libfaketime is mapped in every member (ferrokv is
    // linked dynamically against libc; mimalloc is only its allocator).
    for m in &c.members {
        let pid = m.pid().expect("running");
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(
            maps.contains("libfaketime"),
            "{}: libfaketime not mapped in pid {pid} (LD_PRELOAD had no effect)",
            m.name()
        );
    }
    let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let jumper = others(leader)[0];
    let jname = c.members[jumper].name().to_string();
    let jurl = c.members[jumper].endpoint();
    let jlog = c.members[jumper].log_path().to_path_buf();
    wait_clock_offset(&jname, &jurl, &jlog, 0.0, "before the jumps");

    let load = Load::start(&c);
    let txns = TxnLoad::start(&c);
    load.wait_acked(
        &c,
        ACKS_BEFORE_FAULT,
        ACKS_BEFORE_FAULT_MAX,
        "before the jump",
    );
    let lease_key = "lease/long";
    let long_granted = Instant::now();
    let long = grant(&c.members[leader].endpoint(), LONG_LEASE_TTL);
    let out = etcdctl(
        &jurl,
        &["put", lease_key, "x", &format!("--lease={long}")],
        None,
    );
    assert_eq!(out.code, 0, "put with the lease: {out:?}");

    // 1. A follower's clock jumps 2 h ahead.
    let term = term_now(&c);
    set_clock(&clocks, &jname, "+2h");
    wait_clock_offset(&jname, &jurl, &jlog, 7200.0, "a follower +2h");
    let jumped = Instant::now();
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "after a follower's clock jumped",
    );
    if let Some(rest) = AFTER_JUMP.checked_sub(jumped.elapsed()) {
        thread::sleep(rest);
    }
    assert_eq!(
        term_now(&c),
        term,
        "an election after {jname}'s clock jumped 2 h (a follower)\n{}",
        c.log_tails()
    );
    check_long_lease(
        &c,
        &long,
        lease_key,
        long_granted,
        &format!("{jname} (a follower) +2h"),
    );

    // 2. Leadership to the member whose clock jumped; its log shows the
    // offset (the preload took effect).
    let log_from = log_len(&jlog);
    let (jid, _, _) = status_of(&jurl).expect("status of the jumped member");
    let moved = probe(&c.endpoints(), &["move-leader", &format!("{jid:x}")]);
    assert_eq!(
        moved.code,
        0,
        "move-leader to {jname}: {moved:?}\n{}",
        c.log_tails()
    );
    let (now, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    assert_eq!(now, jumper, "leadership did not move to {jname}");
    // (`endpoint status` names it before it logs that it serves.)
    let (t, line) = poll(LEADER_WAIT_MAX, || {
        log_times(&jlog, log_from)
            .into_iter()
            .find(|(_, l)| l.contains("serving as cluster leader"))
    })
    .unwrap_or_else(|| {
        panic!(
            "{jname} did not log that it serves as the leader:\n{}",
            log_since(&jlog, log_from)
        )
    });
    let ahead = t - now_unix();
    assert!(
        (7000.0..7400.0).contains(&ahead),
        "{jname}'s log is {ahead:.0}s off the real clock, not +2h: libfaketime did not take \
         effect (`{line}`)"
    );
    eprintln!(
        "{jname} leads (largest group term {term} -> {}); its log runs {ahead:.0}s ahead of \
         the real clock: `{line}`",
        term_now(&c)
    );

    // 3. The leader's clock jumps a day ahead.
    let term = term_now(&c);
    set_clock(&clocks, &jname, "+1d");
    wait_clock_offset(&jname, &jurl, &jlog, 86400.0, "the leader +1d");
    let jumped = Instant::now();
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "after the leader's clock jumped a day ahead",
    );
    if let Some(rest) = AFTER_JUMP.checked_sub(jumped.elapsed()) {
        thread::sleep(rest);
    }
    check_long_lease(
        &c,
        &long,
        lease_key,
        long_granted,
        &format!("{jname} (the leader) +1d"),
    );

    // 4. A short lease granted by that leader, then its clock jumps back
    // 25 h: the lease expires on time, neither early nor late.
    let short_key = "lease/short";
    let short_granted = Instant::now();
    let short = grant(&jurl, SHORT_LEASE_TTL);
    let out = etcdctl(
        &jurl,
        &["put", short_key, "x", &format!("--lease={short}")],
        None,
    );
    assert_eq!(out.code, 0, "put with the short lease: {out:?}");
    set_clock(&clocks, &jname, "-1h");
    wait_clock_offset(&jname, &jurl, &jlog, -3600.0, "the leader -1h");
    let jumped_back = Instant::now();
    assert!(
        jumped_back.duration_since(short_granted) < Duration::from_secs(SHORT_LEASE_TTL - 2),
        "the clock jump back took effect only {:?} after the short lease's grant (TTL \
         {SHORT_LEASE_TTL}s): too late for the test",
        jumped_back.duration_since(short_granted)
    );
    let back_at = log_len(&jlog);
    let early_bound = Duration::from_secs(SHORT_LEASE_TTL - 1);
    let mut gone_at = None;
    let expired = poll(
        Duration::from_secs(SHORT_LEASE_TTL) + LEASE_EXPIRY_LATE_MAX,
        || {
            let present = c.members.iter().all(|m| exists(&m.endpoint(), short_key));
            let none = c.members.iter().all(|m| !exists(&m.endpoint(), short_key));
            if none {
                gone_at = Some(short_granted.elapsed());
            }
            // Gone on one member and not yet on another is fine briefly.
            (!present && none).then_some(())
        },
    );
    let gone_after = gone_at.unwrap_or_default();
    assert!(
        expired.is_some(),
        "{short_key} (lease {short}, TTL {SHORT_LEASE_TTL}s granted by {jname} at +1d, whose \
         clock then jumped back 25 h) still there {:?} after its grant\n{}",
        short_granted.elapsed(),
        c.log_tails()
    );
    assert!(
        gone_after >= early_bound,
        "{short_key} (lease TTL {SHORT_LEASE_TTL}s) expired early: gone {gone_after:?} after \
         its grant"
    );
    eprintln!(
        "{short_key} (TTL {SHORT_LEASE_TTL}s, granted by {jname} at +1d; its clock jumped back \
         25 h {:?} after the grant) gone on every member {gone_after:?} after its grant",
        jumped_back.duration_since(short_granted)
    );
    check_long_lease(
        &c,
        &long,
        lease_key,
        long_granted,
        &format!("{jname} (the leader) -1h"),
    );
    assert_eq!(
        term_now(&c),
        term,
        "an election after the leader's clock jumped\n{}",
        c.log_tails()
    );
    // Whatever it logged since the jump back is an hour behind (the
    // expiry poll above ran with the clock jumped back).
    let back = log_times(&jlog, back_at);
    assert!(
        back.iter().all(|(t, _)| *t < now_unix() - 3000.0),
        "{jname} logged with its clock not jumped back: {back:?}"
    );
    wait_clock_offset(&jname, &jurl, &jlog, -3600.0, "at the end");

    let acks = load.finish();
    let txn_acks = txns.finish();
    check_acked_on_every_member(&c, &acks);
    let everyone = member_endpoints(&c, &all_members());
    let logs = || String::new();
    check_txns_on_members(&everyone, &txn_acks, &logs);
    wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let urls: Vec<String> = everyone.iter().map(|m| m.url.clone()).collect();
    one_leader(&urls, &logs);
    assert_running(&mut c, &all_members(), "after the clock jumps");
    assert_logs_clean(&cluster_logs(&c));
}

// ------------------------------------------------- leadership moved round

/// Moves of the leadership in `leadership_moved_round_the_members_under_load`.
const LEADER_MOVES: usize = 30;
/// Acknowledged puts between two moves.
const ACKS_PER_MOVE: usize = 30;

#[test]
fn leadership_moved_round_the_members_under_load() {
    let dir = tempdir("moves");
    let mut c = start_cluster(ferrokv(), dir.path(), "ferrokv-faults-moves");
    let (mut leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let load = Load::start(&c);
    let txns = TxnLoad::start(&c);
    load.wait_acked(
        &c,
        ACKS_BEFORE_FAULT,
        ACKS_BEFORE_FAULT_MAX,
        "before the first move",
    );
    for n in 0..LEADER_MOVES {
        let next = (leader + 1) % NAMES.len();
        let url = c.members[next].endpoint();
        let (id, _, _) = status_of(&url).expect("status of the next leader");
        let moved = probe(&c.endpoints(), &["move-leader", &format!("{id:x}")]);
        assert_eq!(
            moved.code,
            0,
            "move {n}: move-leader to {}: {moved:?}\n{}",
            c.members[next].name(),
            c.log_tails()
        );
        let (now, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        assert_eq!(
            now,
            next,
            "move {n}: leadership did not move to {}",
            c.members[next].name()
        );
        leader = now;
        load.wait_acked(
            &c,
            load.acked() + ACKS_PER_MOVE,
            WRITE_AFTER_FAULT_MAX,
            &format!("after move {n}"),
        );
    }
    let acks = load.finish();
    let txn_acks = txns.finish();
    check_acked_on_every_member(&c, &acks);
    let everyone = member_endpoints(&c, &all_members());
    let logs = || c.log_tails();
    check_txns_on_members(&everyone, &txn_acks, &logs);
    let urls: Vec<String> = everyone.iter().map(|m| m.url.clone()).collect();
    one_leader(&urls, &logs);
    assert_running(&mut c, &all_members(), "after the moves");
    assert_logs_clean(&cluster_logs(&c));
}

// ------------------------------------------------- a watched restart

/// How often [`restart_watched`] reports the members while one restarts.
const RESTART_REPORT_EVERY: Duration = Duration::from_secs(2);

/// `start_again` of member `m` (which panics with the logs if it is not
/// healthy within the harness's bound); meanwhile, every
/// `RESTART_REPORT_EVERY` that it is not healthy yet, what each member
/// reports (revision, raft index and applied index) and what a
/// serializable and a linearizable read through `m` answer, for the
/// failure report.
fn restart_watched(c: &mut ServerCluster, m: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let stop = stop.clone();
        let name = c.members[m].name().to_string();
        let url = c.members[m].endpoint();
        let urls = c.endpoints();
        thread::spawn(move || {
            let started = Instant::now();
            let rounds = SERVER_READY_TIMEOUT.as_millis() / RESTART_REPORT_EVERY.as_millis();
            for _ in 0..rounds {
                thread::sleep(RESTART_REPORT_EVERY);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let st = probe(&urls, &["endpoint", "status", "-w", "json"]);
                let rows: Vec<String> = serde_json::from_str::<Value>(&st.stdout)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|r| {
                        let s = &r["Status"];
                        format!(
                            "{} revision {} raft index {} applied {}",
                            r["Endpoint"].as_str().unwrap_or("?"),
                            s["header"]["revision"],
                            s["raftIndex"],
                            s["raftAppliedIndex"]
                        )
                    })
                    .collect();
                let ser = probe(
                    &url,
                    &["get", "restart-probe", "--consistency=s", "-w", "json"],
                );
                let lin = probe(&url, &["get", "restart-probe", "-w", "json"]);
                eprintln!(
                    "{name} restarting, not healthy {:?} after its start: {rows:?}; through it a \
                     serializable get: exit {} {}{}, a linearizable get: exit {} {}",
                    started.elapsed(),
                    ser.code,
                    ser.stdout.trim(),
                    ser.stderr.lines().last().unwrap_or(""),
                    lin.code,
                    lin.stderr.lines().last().unwrap_or("")
                );
            }
        })
    };
    c.members[m].start_again();
    stop.store(true, Ordering::SeqCst);
    let _ = reporter.join();
}

// ---------------------------------------- leader killed mid member add

/// When the leader is killed, relative to the `member add` in flight.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after etcdctl was spawned.
    AfterSpawn(Duration),
    /// As soon as the leader logged that it proposes the change.
    OnProposal,
}

const KILL_TIMINGS: [KillAt; 4] = [
    KillAt::AfterSpawn(Duration::from_millis(0)),
    KillAt::AfterSpawn(Duration::from_millis(5)),
    KillAt::AfterSpawn(Duration::from_millis(20)),
    KillAt::OnProposal,
];
/// Once a new leader serves, how long it gets to finish a change its
/// predecessor left half made (it does so right after it starts serving).
const HALF_MADE_CHANGE_SETTLE: Duration = Duration::from_millis(1000);
/// Bound on the leader logging the proposal of a member add.
const PROPOSAL_WAIT_MAX: Duration = Duration::from_secs(10);
/// etcdctl's command timeout for the add in flight, and the bound on it.
const ADD_COMMAND_TIMEOUT: &str = "--command-timeout=5s";
const ADD_WAIT_MAX: Duration = Duration::from_secs(10);

#[test]
fn a_leader_killed_mid_member_add_leaves_one_member_list() {
    let dir = tempdir("add-kill");
    let mut c = start_cluster(ferrokv(), &dir.path().join("cluster"), "ferrokv-faults-add");
    wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let load = Load::start(&c);
    let txns = TxnLoad::start(&c);
    load.wait_acked(
        &c,
        ACKS_BEFORE_FAULT,
        ACKS_BEFORE_FAULT_MAX,
        "before the first kill",
    );
    let mut kept: Option<Joiner> = None;
    let mut outcomes = Vec::new();
    for (k, at) in KILL_TIMINGS.iter().enumerate() {
        let last_attempt = k + 1 == KILL_TIMINGS.len();
        let (leader, before) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let via = others(leader)[0];
        let alive = others(leader);
        let lname = c.members[leader].name().to_string();
        let mut j = Joiner::new(dir.path(), &format!("m{}", 4 + k));
        let peer = j.peer_url();
        let leader_log = c.members[leader].log_path().to_path_buf();
        let log_from = log_len(&leader_log);
        let alive_log_from: Vec<u64> = alive
            .iter()
            .map(|&i| log_len(c.members[i].log_path()))
            .collect();

        let spawned = Instant::now();
        let add = Background::start(
            &c.members[via].endpoint(),
            &[
                ADD_COMMAND_TIMEOUT,
                "member",
                "add",
                &j.name,
                "--learner",
                &format!("--peer-urls={peer}"),
            ],
        );
        match at {
            KillAt::AfterSpawn(d) => thread::sleep(*d),
            KillAt::OnProposal => {
                let deadline = Instant::now() + PROPOSAL_WAIT_MAX;
                while !log_since(&leader_log, log_from).contains("membership: proposing change") {
                    assert!(
                        Instant::now() < deadline,
                        "{lname} did not log the proposal within {PROPOSAL_WAIT_MAX:?}\n{}",
                        c.log_tails()
                    );
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        c.members[leader].kill_9();
        let killed_at = Instant::now();
        let killed = spawned.elapsed();
        let proposed = log_since(&leader_log, log_from).contains("membership: proposing change");
        let answer = add.stop(ADD_WAIT_MAX, ADD_WAIT_MAX);
        let (new_leader, after) = wait_leader(&c, &alive, LEADER_WAIT_MAX);
        // (`raft_term` is the largest of the groups' terms: it need not
        // grow at once.)
        assert_ne!(new_leader, leader, "{lname} killed and still the leader");
        let _ = (before, after);
        // The new leader serves (a write is taken) ...
        let alive_urls: Vec<String> = alive.iter().map(|&i| c.members[i].endpoint()).collect();
        let mut tries = 0;
        let served = poll(WRITE_AFTER_FAULT_MAX, || {
            tries += 1;
            let key = format!("probe/after-kill-{k}");
            let out = probe(&alive_urls[tries % alive_urls.len()], &["put", &key, "x"]);
            (out.code == 0).then_some(())
        });
        assert!(
            served.is_some(),
            "attempt {k}: no write taken within {WRITE_AFTER_FAULT_MAX:?} after {lname} was \
             killed\n{}",
            c.log_tails()
        );
        let serving_after = killed_at.elapsed();
        // ... and has finished, right after it started serving, a change
        // that some groups committed and others lack.
        thread::sleep(HALF_MADE_CHANGE_SETTLE);
        let list = same_member_list(&alive_urls, MEMBERS_AGREE_MAX).unwrap_or_else(|last| {
            panic!(
                "attempt {k} ({at:?}): the live members list different members after {lname} \
                 was killed mid member add:\n{last}\n{}",
                c.log_tails()
            )
        });
        let present = list.iter().any(|m| m.peer_urls.contains(&peer));
        let finishing = alive.iter().zip(&alive_log_from).any(|(&i, &from)| {
            log_since(c.members[i].log_path(), from).contains("membership: finishing change")
        });
        let outcome = format!(
            "attempt {k}: {lname} killed {killed:?} after etcdctl was spawned ({at:?}; proposal \
             logged before the kill: {proposed}); etcdctl exit {} {:?}; a write taken \
             {serving_after:?} after the kill; {} on the live members (leader {}); the new \
             leader finished a half-made change: {finishing}",
            answer.code,
            answer
                .stdout
                .lines()
                .next()
                .or(answer.stderr.lines().last())
                .unwrap_or(""),
            if present { "listed" } else { "not listed" },
            c.members[new_leader].name()
        );
        eprintln!("{outcome}");
        outcomes.push(outcome);
        if answer.code == 0 {
            assert!(
                present,
                "attempt {k}: `member add` answered OK but the live members do not list it: \
                 {list:?}\n{}",
                c.log_tails()
            );
        }

        // The killed member back: all three list the same.
        restart_watched(&mut c, leader);
        wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let urls: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
        let list3 = same_member_list(&urls, MEMBERS_AGREE_MAX).unwrap_or_else(|last| {
            panic!(
                "attempt {k}: with {lname} back the members list different members:\n{last}\n{}",
                c.log_tails()
            )
        });
        assert_eq!(
            list3,
            list,
            "attempt {k}: the member list changed when {lname} came back\n{}",
            c.log_tails()
        );

        // The add again: accepted if the learner is absent, a duplicate
        // if present.
        let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let again = ctl_while_unready(
            &c.members[leader].endpoint(),
            &[
                "member",
                "add",
                &j.name,
                "--learner",
                &format!("--peer-urls={peer}"),
            ],
            CONNECTED_WAIT_MAX,
        );
        if present {
            assert!(
                again.code != 0 && again.stderr.contains("Peer URLs already exists"),
                "attempt {k}: the add repeated for a listed learner: {again:?}"
            );
        } else {
            assert!(
                again.code == 0 && again.stdout.contains("added to cluster"),
                "attempt {k}: the add repeated for an absent learner: {again:?}\n{}",
                c.log_tails()
            );
        }
        let list = same_member_list(&urls, MEMBERS_AGREE_MAX)
            .unwrap_or_else(|last| panic!("attempt {k}: after the repeated add:\n{last}"));
        let listed = list
            .iter()
            .find(|m| m.peer_urls.contains(&peer))
            .unwrap_or_else(|| panic!("attempt {k}: {} not listed after the add: {list:?}", j.name))
            .clone();
        assert!(
            listed.learner,
            "attempt {k}: {} is not a learner: {listed:?}",
            j.name
        );

        // The learner started with `existing` joins and catches up.
        j.spawn(&c, &all_members());
        joiner_catches_up(&c, leader, &j, &load, &format!("attempt-{k}"));
        let started = poll(MEMBERS_AGREE_MAX, || {
            let list = member_list(&c.members[leader].endpoint()).ok()?;
            list.iter()
                .any(|m| m.id == listed.id && m.name == j.name)
                .then_some(())
        });
        assert!(
            started.is_some(),
            "attempt {k}: {} never listed by its name",
            j.name
        );
        assert!(j.is_running(), "{} exited\n{}", j.name, j.log_tail());

        if !last_attempt {
            // Removed again, so that the next attempt may add a learner.
            let out = etcdctl(
                &c.members[leader].endpoint(),
                &["member", "remove", &format!("{:x}", listed.id)],
                None,
            );
            assert_eq!(out.code, 0, "attempt {k}: remove {}: {out:?}", j.name);
            let exit = j.wait_exit(REMOVED_EXIT_MAX);
            assert!(
                exit.is_some(),
                "attempt {k}: removed {} did not exit within {REMOVED_EXIT_MAX:?}\n{}",
                j.name,
                j.log_tail()
            );
            let list = same_member_list(&urls, MEMBERS_AGREE_MAX)
                .unwrap_or_else(|last| panic!("attempt {k}: after the remove:\n{last}"));
            assert_eq!(
                list.len(),
                NAMES.len(),
                "attempt {k}: after the remove: {list:?}"
            );
        } else {
            kept = Some(j);
        }
        assert_running(&mut c, &all_members(), &format!("in attempt {k}"));
    }
    // (The load may have ended by its bounds by now: the last stage's
    // writes were checked by the joiner's catch-up.)
    let j = kept.expect("the last attempt's learner");
    let acks = load.finish();
    let txn_acks = txns.finish();
    wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let mut everyone = member_endpoints(&c, &all_members());
    everyone.push(j.endpoint(true));
    let logs = || j.log_tail();
    check_acked_on_members(&c, &everyone, &acks, &logs);
    check_txns_on_members(&everyone, &txn_acks, &logs);
    let urls: Vec<String> = everyone.iter().map(|m| m.url.clone()).collect();
    one_leader(&urls, &logs);
    assert_running(&mut c, &all_members(), "at the end");
    let mut logs_of = cluster_logs(&c);
    logs_of.push((&j.name, &j.log_path));
    assert_logs_clean(&logs_of);
    eprintln!("outcomes:\n{}", outcomes.join("\n"));
}

// ------------------------------------ membership changes with a watcher

/// One event a watcher saw: `(response index, type, key, value, mod rev)`.
#[derive(Clone, Debug)]
struct Seen {
    response: usize,
    put: bool,
    key: String,
    value: String,
    revision: u64,
}

/// A gRPC watch of every key from revision 1, on its own runtime,
/// recording every event.
struct Watcher {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// How often a watcher looks at its stop flag.
const WATCH_POLL: Duration = Duration::from_millis(200);

impl Watcher {
    fn start(url: &str) -> Watcher {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                start_revision: 1,
                ..Default::default()
            })),
        };
        let channel = runtime.block_on(async { grpc::connect_lazy(url) });
        let mut stream = runtime.block_on(BidiStream::<WatchRequest, WatchResponse>::open(
            &channel,
            "/etcdserverpb.Watch/Watch",
            create,
        ));
        let created = runtime
            .block_on(stream.next_within(grpc::CALL_TIMEOUT))
            .expect("watch created");
        assert!(created.created, "first watch response: {created:?}");
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let task = runtime.spawn(async move {
            let mut responses = 0;
            while !stop2.load(Ordering::SeqCst) {
                let Some(resp) = stream.next_within(WATCH_POLL).await else {
                    continue;
                };
                if resp.canceled || resp.compact_revision != 0 {
                    return Err(format!("watch ended: {resp:?}"));
                }
                responses += 1;
                let mut seen = seen2.lock().expect("seen");
                for e in resp.events {
                    let kv = e.kv.unwrap_or_default();
                    seen.push(Seen {
                        response: responses,
                        put: e.r#type == 0,
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        value: String::from_utf8_lossy(&kv.value).into_owned(),
                        revision: kv.mod_revision as u64,
                    });
                }
            }
            Ok(())
        });
        Watcher {
            runtime: Some(runtime),
            stop,
            seen,
            task: Some(task),
        }
    }

    fn saw_revision(&self, revision: u64) -> bool {
        self.seen
            .lock()
            .expect("seen")
            .last()
            .is_some_and(|s| s.revision >= revision)
    }

    /// Stops the watch: every event seen, or how the stream failed.
    fn finish(mut self) -> Result<Vec<Seen>, String> {
        self.stop.store(true, Ordering::SeqCst);
        let runtime = self.runtime.take().expect("runtime");
        let task = self.task.take().expect("task");
        match runtime.block_on(task) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                let why = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                return Err(format!("watch task failed: {why}"));
            }
        }
        Ok(std::mem::take(&mut *self.seen.lock().expect("seen")))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(WATCH_POLL * 5);
        }
    }
}

/// The watcher's events in revision order, each (key, revision) once, the
/// events of one revision in one response; every acknowledged put at its
/// revision with its value; every acknowledged transaction's keys at its
/// revision in one response.
fn check_watched(seen: &[Seen], acks: &[Ack], txn_acks: &[TxnAck]) {
    let mut problems = Vec::new();
    let mut last: Option<&Seen> = None;
    let mut by_key_rev: BTreeMap<(&str, u64), &Seen> = BTreeMap::new();
    let mut revisions = BTreeSet::new();
    for s in seen {
        if let Some(l) = last {
            if s.revision < l.revision {
                problems.push(format!("out of order: {l:?} then {s:?}"));
            } else if s.revision == l.revision && s.response != l.response {
                problems.push(format!("revision {} split over two responses", s.revision));
            }
        }
        if by_key_rev.insert((s.key.as_str(), s.revision), s).is_some() {
            problems.push(format!("seen twice: {} at {}", s.key, s.revision));
        }
        revisions.insert(s.revision);
        last = Some(s);
    }
    for a in acks {
        match by_key_rev.get(&(a.key.as_str(), a.revision)) {
            Some(s) if s.put && s.value == value_of(&a.key) => {}
            other => problems.push(format!(
                "acknowledged put {} at {}: watcher saw {other:?}",
                a.key, a.revision
            )),
        }
    }
    for t in txn_acks {
        let got: Vec<Option<&&Seen>> = t
            .keys
            .iter()
            .map(|k| by_key_rev.get(&(k.as_str(), t.revision)))
            .collect();
        let whole = got
            .iter()
            .all(|s| s.is_some_and(|s| s.put && s.value == value_of(&s.key)));
        let responses: BTreeSet<usize> = got.iter().flatten().map(|s| s.response).collect();
        if !whole || responses.len() != 1 {
            problems.push(format!(
                "acknowledged transaction at {} ({:?}): watcher saw {got:?}",
                t.revision, t.keys
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the watcher: {} problems, e.g. {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    eprintln!(
        "the watcher saw {} events at {} revisions, in order, once each: all {} acknowledged \
         puts and {} transactions",
        seen.len(),
        revisions.len(),
        acks.len(),
        txn_acks.len()
    );
}

#[test]
fn membership_changes_under_load_with_a_watcher() {
    let dir = tempdir("watch-members");
    let mut c = start_cluster(
        ferrokv(),
        &dir.path().join("cluster"),
        "ferrokv-faults-watch",
    );
    let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
    let watched = others(leader)[0];
    let removed = others(leader)[1];
    let watcher = Watcher::start(&c.members[watched].endpoint());
    let load = Load::start(&c);
    let txns = TxnLoad::start(&c);
    load.wait_acked(
        &c,
        ACKS_BEFORE_FAULT,
        ACKS_BEFORE_FAULT_MAX,
        "before the changes",
    );
    let lurl = c.members[leader].endpoint();

    // A learner added and started.
    let mut j = Joiner::new(dir.path(), "m4");
    let added = ctl_while_unready(
        &lurl,
        &[
            "member",
            "add",
            "m4",
            "--learner",
            &format!("--peer-urls={}", j.peer_url()),
        ],
        CONNECTED_WAIT_MAX,
    );
    assert_eq!(added.code, 0, "member add m4: {added:?}\n{}", c.log_tails());
    let id = member_list(&lurl)
        .expect("member list")
        .into_iter()
        .find(|m| m.peer_urls.contains(&j.peer_url()))
        .expect("m4 listed")
        .id;
    j.spawn(&c, &all_members());
    joiner_catches_up(&c, leader, &j, &load, "learner");

    // Promoted, under load.
    let promote_started = Instant::now();
    let mut last = None;
    let promoted = poll(PROMOTE_MAX, || {
        let out = etcdctl(&lurl, &["member", "promote", &format!("{id:x}")], None);
        let ok = out.code == 0;
        last = Some(out);
        ok.then_some(())
    });
    assert!(
        promoted.is_some(),
        "m4 not promoted within {PROMOTE_MAX:?}: {last:?}\n{}\n{}",
        c.log_tails(),
        j.log_tail()
    );
    eprintln!(
        "m4 promoted {:?} after the first try",
        promote_started.elapsed()
    );
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "after the promotion",
    );

    // An original follower removed, under load: it exits by itself.
    let rname = c.members[removed].name().to_string();
    let (rid, _, _) = status_of(&c.members[removed].endpoint()).expect("status");
    let out = etcdctl(&lurl, &["member", "remove", &format!("{rid:x}")], None);
    assert_eq!(
        out.code,
        0,
        "member remove {rname}: {out:?}\n{}",
        c.log_tails()
    );
    let exited = poll(REMOVED_EXIT_MAX, || c.members[removed].exit_status());
    let exited = exited.unwrap_or_else(|| {
        panic!(
            "removed {rname} did not exit within {REMOVED_EXIT_MAX:?}\n{}",
            c.members[removed].log_tail()
        )
    });
    eprintln!("removed {rname} exited by itself: {exited}");
    assert!(
        exited.success(),
        "removed {rname} exited with {exited}\n{}",
        c.members[removed].log_tail()
    );
    let live = [leader, watched];
    load.wait_acked(
        &c,
        load.acked() + ACKS_PER_STAGE,
        WRITE_AFTER_FAULT_MAX,
        "after the removal",
    );
    let acks = load.finish();
    let txn_acks = txns.finish();

    let mut members = member_endpoints(&c, &live);
    members.push(j.endpoint(false));
    let (jname, jlog) = (j.name.clone(), j.log_path.clone());
    let logs = move || joiner_log_tail(&jname, &jlog);
    let urls: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    one_leader(&urls, &logs);
    let last_rev = check_acked_on_members(&c, &members, &acks, &logs);
    check_txns_on_members(&members, &txn_acks, &logs);
    one_leader(&urls, &logs);
    let list = same_member_list(&urls, MEMBERS_AGREE_MAX)
        .unwrap_or_else(|last| panic!("the members list different members:\n{last}"));
    let names: Vec<(&str, bool)> = list.iter().map(|m| (m.name.as_str(), m.learner)).collect();
    assert_eq!(list.len(), 3, "member list: {list:?}");
    assert!(
        names.contains(&("m4", false)) && !list.iter().any(|m| m.id == rid),
        "member list: {list:?}"
    );

    // The watcher saw everything up to the last write, once each.
    let caught_up = poll(CATCH_UP_MAX, || {
        watcher.saw_revision(last_rev).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "the watcher on {} did not see revision {last_rev} within {CATCH_UP_MAX:?}",
        c.members[watched].name()
    );
    let seen = watcher
        .finish()
        .unwrap_or_else(|e| panic!("the watch on a follower failed: {e}\n{}", c.log_tails()));
    check_watched(&seen, &acks, &txn_acks);
    assert_running(&mut c, &live, "before the kill of every member");
    assert!(j.is_running(), "m4 exited\n{}", j.log_tail());

    // Every member killed -9 (their logs hold the changes) and restarted:
    // m4 first (not waited for), then the others, each healthy once it
    // and m4 make a quorum.
    for &i in &live {
        c.members[i].kill_9();
    }
    j.kill_9();
    let killed = Instant::now();
    j.spawn_again();
    for &i in &live {
        restart_watched(&mut c, i);
    }
    eprintln!(
        "every member killed -9 and restarted, healthy {:?} after the kill",
        killed.elapsed()
    );
    let leader_id = one_leader(&urls, &logs);
    eprintln!("after the restart of every member, {leader_id:x} leads");
    check_acked_on_members(&c, &members, &acks, &logs);
    check_txns_on_members(&members, &txn_acks, &logs);
    one_leader(&urls, &logs);
    let again = same_member_list(&urls, MEMBERS_AGREE_MAX)
        .unwrap_or_else(|last| panic!("after the restart of every member:\n{last}"));
    assert_eq!(
        again, list,
        "the member list changed with the restart of every member"
    );
    assert_running(&mut c, &live, "at the end");
    assert!(j.is_running(), "m4 exited\n{}", j.log_tail());
    let mut logs_of = cluster_logs(&c);
    logs_of.push((&j.name, &j.log_path));
    assert_logs_clean(&logs_of);
}
