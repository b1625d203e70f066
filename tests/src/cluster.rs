//! What the fault tests of three-member clusters share, etcd's and
//! ferrokv's alike (`tests/cluster.rs`, `tests/partition.rs`): the sides a
//! scenario runs on, bounded polling, etcdctl probes, the leader as the
//! members see it, a concurrent gRPC write load that records every
//! acknowledged put, and the check that every acknowledged put is on every
//! member afterwards.
//!
//! Everything talks to members by their client URLs from the calling
//! thread (and, for the load, from a tokio runtime's threads it starts):
//! for members in network namespaces, call these from a thread inside the
//! bridge namespace ([`crate::netns::Net::enter_bridge`]).
//!
//! Limits: every wait is bounded by a named duration and polls at most
//! `bound / POLL_INTERVAL + 1` times ([`poll`]); a write load by
//! `WRITES_PER_WRITER_MAX` and `LOAD_DURATION_MAX`; every etcdctl by the
//! harness's `ETCDCTL_TIMEOUT` (probes of a cluster under faults by
//! `PROBE_TIMEOUT`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{PutRequest, PutResponse};
use serde_json::Value;

use crate::etcdctl::{etcdctl, etcdctl_with_timeout, parse_get_fields, Output};
use crate::grpc;
use crate::normalize::json_u64_field;
use crate::script::candidate_is_etcd;
use crate::server::{ServerCluster, ServerKind};

/// Short elections for the fault tests, the same for etcd and ferrokv.
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MS: u64 = 500;

/// Bound on the members agreeing on a leader, at start and after a fault.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);
/// Bound from a fault until a write is acknowledged again.
pub const WRITE_AFTER_FAULT_MAX: Duration = Duration::from_secs(15);
/// Bound on a (re)started or resumed member serving what the others wrote.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(20);
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// etcdctl's `--command-timeout` for probes of a cluster under faults (a
/// stopped member must not cost the harness's 10 s), and the wall-clock
/// bound on one probe.
pub const PROBE_COMMAND_TIMEOUT: &str = "--command-timeout=2s";
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

// ------------------------------------------------------------ write load

/// Concurrent writers per member (each writes through its own member).
pub const WRITERS_PER_MEMBER: usize = 2;
/// Bound on the puts one writer attempts.
pub const WRITES_PER_WRITER_MAX: usize = 1500;
/// Bound on a whole load, whatever happens to the cluster.
pub const LOAD_DURATION_MAX: Duration = Duration::from_secs(60);
/// Bound on one put; a put without an answer counts as not acknowledged.
pub const PUT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one put of the probe that measures when writes are taken again.
pub const PROBE_PUT_TIMEOUT: Duration = Duration::from_millis(250);
/// Pause after a failed put (a killed member refuses at once).
pub const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Keys of the writes checked after a fault; every value is
/// [`value_of`] its key, so a value never written shows.
pub const LOAD_PREFIX: &str = "load/";

pub fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Some`, for at
/// most `bound` (and so at most `bound / POLL_INTERVAL + 1` times).
pub fn poll<T>(bound: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    let polls_max = bound.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..polls_max {
        if let Some(t) = probe() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    None
}

/// The servers each test runs on, in order: etcd (the reference), then the
/// candidate (ferrokv, or a second etcd with `FERROKV_COMPAT_CANDIDATE=etcd`).
pub fn sides() -> [ServerKind; 2] {
    let candidate = if candidate_is_etcd() {
        ServerKind::Etcd
    } else {
        ServerKind::Ferrokv
    };
    [ServerKind::Etcd, candidate]
}

/// etcdctl through `m`, which must succeed; its stdout.
pub fn ctl(c: &ServerCluster, m: usize, args: &[&str]) -> String {
    let member = &c.members[m];
    let out = etcdctl(&member.endpoint(), args, None);
    assert_eq!(
        out.code,
        0,
        "{} via {}: etcdctl {}\nexpected exit 0, got {out:?}\n{}",
        c.kind(),
        member.name(),
        args.join(" "),
        c.log_tails()
    );
    out.stdout
}

/// etcdctl through `endpoints` (one URL, or several comma-separated) with
/// the probe bounds.
pub fn probe(endpoints: &str, args: &[&str]) -> Output {
    let mut all = vec![PROBE_COMMAND_TIMEOUT];
    all.extend_from_slice(args);
    etcdctl_with_timeout(endpoints, &all, None, PROBE_TIMEOUT)
}

/// One member's `endpoint status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// Index of the member in the cluster.
    pub member: usize,
    pub member_id: u64,
    /// The leader's member id; 0 when it knows none.
    pub leader: u64,
    pub raft_term: u64,
}

/// `endpoint status -w json` of the members `alive` that answer: with
/// `--cluster` when every member is alive, else of their URLs (`--cluster`
/// would also dial a killed or stopped member and wait out the timeout).
pub fn statuses(c: &ServerCluster, alive: &[usize]) -> Vec<Status> {
    let out = if alive.len() == c.members.len() {
        probe(
            &c.members[alive[0]].endpoint(),
            &["endpoint", "status", "--cluster", "-w", "json"],
        )
    } else {
        let endpoints = alive
            .iter()
            .map(|&i| c.members[i].endpoint())
            .collect::<Vec<_>>()
            .join(",");
        probe(&endpoints, &["endpoint", "status", "-w", "json"])
    };
    // stdout lists the members that answered, also when others did not.
    let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&out.stdout) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let url = row["Endpoint"].as_str()?;
            let member = c.members.iter().position(|m| m.endpoint() == url)?;
            let s = &row["Status"];
            Some(Status {
                member,
                member_id: s["header"]["member_id"].as_u64()?,
                // etcdctl's JSON leaves out a zero leader (none known).
                leader: s["leader"].as_u64().unwrap_or(0),
                raft_term: s["raftTerm"].as_u64()?,
            })
        })
        .filter(|s| alive.contains(&s.member))
        .collect()
}

/// Waits until every member of `alive` answers `endpoint status` and all
/// name the same leader, one of them: `(its index, its status)`.
pub fn wait_leader(c: &ServerCluster, alive: &[usize], bound: Duration) -> (usize, Status) {
    let mut last = Vec::new();
    let found = poll(bound, || {
        let st = statuses(c, alive);
        let leader = st.first()?.leader;
        let agreed = st.len() == alive.len() && st.iter().all(|s| s.leader == leader);
        last = st.clone();
        let s = st.into_iter().find(|s| agreed && s.member_id == leader)?;
        Some((s.member, s))
    });
    found.unwrap_or_else(|| {
        panic!(
            "{}: members {alive:?} did not agree on a leader among them within {bound:?}; \
             last statuses: {last:?}\n{}",
            c.kind(),
            c.log_tails()
        )
    })
}

/// What the members `alive` answer now to `endpoint status`, to a
/// serializable and a linearizable read, and to a put with etcdctl's
/// default timeouts (to see the server's error), for a failure report.
pub fn diagnose(c: &ServerCluster, alive: &[usize]) -> String {
    let mut report = String::from("members now:\n");
    for &i in alive {
        let m = &c.members[i];
        // /proc state: R/S running or sleeping, T stopped, Z exited (not
        // yet reaped).
        let state = m
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| {
                let after_name = stat.rsplit_once(") ")?.1;
                after_name.split_whitespace().next().map(str::to_string)
            })
            .unwrap_or_else(|| "gone".to_string());
        report.push_str(&format!(
            "  {} pid {:?} process state {state}\n",
            m.name(),
            m.pid()
        ));
        for args in [
            &["endpoint", "status", "-w", "json"][..],
            &["get", "diagnose", "--consistency=s", "-w", "json"][..],
            &["get", "diagnose", "-w", "json"][..],
            &["put", "diagnose", "x", "-w", "json"][..],
        ] {
            let out = if args[0] == "put" {
                etcdctl(&m.endpoint(), args, None)
            } else {
                probe(&m.endpoint(), args)
            };
            report.push_str(&format!(
                "  {} $ etcdctl {}: exit {}: {}{}\n",
                m.name(),
                args.join(" "),
                out.code,
                out.stdout.trim(),
                out.stderr.lines().last().unwrap_or("")
            ));
        }
    }
    report
}

/// A put acknowledged by the cluster.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub revision: u64,
    pub acked: Instant,
}

/// `put <key> <value_of(key)> -w json` through `m`, which must succeed.
pub fn put_acked(c: &ServerCluster, m: usize, key: &str) -> Ack {
    let out = ctl(c, m, &["put", key, &value_of(key), "-w", "json"]);
    let revision = json_u64_field(&out, "revision")
        .unwrap_or_else(|| panic!("{}: put {key}: no revision in {out}", c.kind()));
    Ack {
        key: key.to_string(),
        revision,
        acked: Instant::now(),
    }
}

/// Concurrent puts of distinct keys through every member, over gRPC on a
/// runtime of its own (the test's thread stays free to kill and restart
/// members: servers must be spawned from it, see `src/server.rs`). Each key
/// is tried once; a put that fails or times out is not acknowledged (it
/// may or may not have been applied).
pub struct Load {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    acked: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(c: &ServerCluster) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicUsize::new(0));
        let writers = (0..c.members.len() * WRITERS_PER_MEMBER)
            .map(|w| {
                let endpoint = c.members[w % c.members.len()].endpoint();
                let (stop, acks, acked) = (stop.clone(), acks.clone(), acked.clone());
                runtime.spawn(write_keys(endpoint, w, stop, acks, acked))
            })
            .collect();
        Load {
            runtime: Some(runtime),
            stop,
            acks,
            acked,
            writers,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// The puts acknowledged so far (the load goes on), e.g. to check a
    /// member that joins midway.
    pub fn acks_so_far(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// Waits until `n` puts in all were acknowledged; panics after `bound`.
    pub fn wait_acked(&self, c: &ServerCluster, n: usize, bound: Duration, stage: &str) {
        let reached = poll(bound, || (self.acked() >= n).then_some(()));
        assert!(
            reached.is_some(),
            "{} {stage}: only {} of {n} puts acknowledged within {bound:?}\n{}",
            c.kind(),
            self.acked(),
            c.log_tails()
        );
    }

    /// Puts fresh keys through the members `through`, in turn, each bounded
    /// by `PROBE_PUT_TIMEOUT`, until one is acknowledged: the time from
    /// `fault` to that acknowledgement (the load's own puts in flight at the
    /// fault may hang until their timeout, so they cannot tell). Panics
    /// after `WRITE_AFTER_FAULT_MAX`.
    pub fn first_write_after(
        &self,
        c: &ServerCluster,
        fault: Instant,
        through: &[usize],
    ) -> Duration {
        let endpoints: Vec<String> = through.iter().map(|&i| c.members[i].endpoint()).collect();
        let attempts_max =
            (WRITE_AFTER_FAULT_MAX.as_millis() / WRITE_RETRY_PAUSE.as_millis()) as usize;
        let probe = async {
            let deadline = Instant::now() + WRITE_AFTER_FAULT_MAX;
            // What the failed attempts got, for the report.
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            for n in 0..attempts_max {
                if Instant::now() >= deadline {
                    break;
                }
                let key = format!("{LOAD_PREFIX}probe/{n:05}");
                let req = PutRequest {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(value_of(&key)),
                    ..Default::default()
                };
                let via = n % endpoints.len();
                let channel = grpc::connect_lazy(&endpoints[via]);
                let result = grpc::try_unary_within::<PutRequest, PutResponse>(
                    &channel,
                    "/etcdserverpb.KV/Put",
                    req,
                    PROBE_PUT_TIMEOUT,
                )
                .await;
                let outcome = match result {
                    Some(Ok(resp)) => {
                        return Ok(Ack {
                            key,
                            revision: resp.header.map_or(0, |h| h.revision) as u64,
                            acked: Instant::now(),
                        })
                    }
                    Some(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    None => format!("no answer within {PROBE_PUT_TIMEOUT:?}"),
                };
                *outcomes
                    .entry(format!("via {}: {outcome}", c.members[through[via]].name()))
                    .or_default() += 1;
                tokio::time::sleep(WRITE_RETRY_PAUSE).await;
            }
            Err(outcomes)
        };
        let runtime = self.runtime.as_ref().expect("runtime");
        let ack = runtime.block_on(probe).unwrap_or_else(|outcomes| {
            let load_acked = self
                .acks
                .lock()
                .expect("acks")
                .iter()
                .filter(|a| a.acked >= fault)
                .count();
            panic!(
                "{}: no put through {through:?} acknowledged within {WRITE_AFTER_FAULT_MAX:?} \
                 of the fault (the load's writers: {load_acked} acknowledged since); the \
                 probe's attempts got: {outcomes:#?}\n{}\n{}",
                c.kind(),
                diagnose(c, through),
                c.log_tails()
            )
        });
        let took = ack.acked.duration_since(fault);
        self.acks.lock().expect("acks").push(ack);
        took
    }

    /// Stops the writers (each ends within `PUT_CALL_TIMEOUT`); every
    /// acknowledged put.
    pub fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        let runtime = self.runtime.take().expect("runtime");
        for w in self.writers.drain(..) {
            runtime.block_on(w).expect("writer task");
        }
        let acks = std::mem::take(&mut *self.acks.lock().expect("acks"));
        acks
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(PUT_CALL_TIMEOUT);
        }
    }
}

async fn write_keys(
    endpoint: String,
    writer: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    acked: Arc<AtomicUsize>,
) {
    let started = Instant::now();
    let mut channel = None;
    for i in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_DURATION_MAX {
            break;
        }
        let key = format!("{LOAD_PREFIX}{writer}/{i:05}");
        let req = PutRequest {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value_of(&key)),
            ..Default::default()
        };
        let ch = channel.get_or_insert_with(|| grpc::connect_lazy(&endpoint));
        let result = grpc::try_unary_within::<PutRequest, PutResponse>(
            ch,
            "/etcdserverpb.KV/Put",
            req,
            PUT_CALL_TIMEOUT,
        )
        .await;
        match result {
            Some(Ok(resp)) => {
                let revision = resp.header.map_or(0, |h| h.revision) as u64;
                acks.lock().expect("acks").push(Ack {
                    key,
                    revision,
                    acked: Instant::now(),
                });
                acked.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                // A fresh connection for the next put: the member may have
                // been killed and restarted.
                channel = None;
                tokio::time::sleep(WRITE_RETRY_PAUSE).await;
            }
        }
    }
}

/// After a fault: a last write through the leader is served by every
/// member (serializable read) within `CATCH_UP_MAX`; then every member's
/// serializable `get --prefix load/` holds every acknowledged key with its
/// value and revision, nothing with a value never written, all members the
/// same; `endpoint hashkv --cluster --rev R` agrees. Prints each member's
/// catch-up time.
pub fn check_acked_on_every_member(c: &ServerCluster, acks: &[Ack]) {
    let kind = c.kind();
    let mut revisions: Vec<u64> = acks.iter().map(|a| a.revision).collect();
    revisions.sort_unstable();
    let total = revisions.len();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        total,
        "{kind}: one revision acknowledged for two puts"
    );

    let all: Vec<usize> = (0..c.members.len()).collect();
    let (leader, _) = wait_leader(c, &all, LEADER_WAIT_MAX);
    let last = put_acked(c, leader, "sentinel/last");
    let started = Instant::now();
    for (i, m) in c.members.iter().enumerate() {
        let caught_up = poll(CATCH_UP_MAX, || {
            let out = probe(
                &m.endpoint(),
                &["get", &last.key, "--consistency=s", "-w", "fields"],
            );
            (out.code == 0 && out.stdout.contains("\"Key\" : \"sentinel/last\"")).then_some(())
        });
        assert!(
            caught_up.is_some(),
            "{kind} {}: `get sentinel/last --consistency=s` through it did not find the write \
             acknowledged at revision {} within {CATCH_UP_MAX:?}\n{}",
            m.name(),
            last.revision,
            c.log_tails()
        );
        eprintln!(
            "{kind} {}{}: serves the last write {:?} after it was acknowledged",
            m.name(),
            if i == leader { " (leader)" } else { "" },
            started.elapsed()
        );
    }

    let mut first: Option<(String, _)> = None;
    for m in 0..c.members.len() {
        let name = c.members[m].name().to_string();
        let (_, kvs) = parse_get_fields(&ctl(
            c,
            m,
            &[
                "get",
                "--prefix",
                LOAD_PREFIX,
                "--consistency=s",
                "-w",
                "fields",
            ],
        ));
        let missing: Vec<String> = acks
            .iter()
            .filter(|a| {
                kvs.get(&a.key)
                    .is_none_or(|kv| kv.value != value_of(&a.key) || kv.mod_revision != a.revision)
            })
            .map(|a| format!("{} at {} (got {:?})", a.key, a.revision, kvs.get(&a.key)))
            .collect();
        assert!(
            missing.is_empty(),
            "{kind} {name}: {} of {} acknowledged puts missing or changed, e.g. {:?}\n{}",
            missing.len(),
            acks.len(),
            &missing[..missing.len().min(10)],
            c.log_tails()
        );
        let wrong: Vec<&String> = kvs
            .iter()
            .filter(|(k, kv)| kv.value != value_of(k))
            .map(|(k, _)| k)
            .collect();
        assert!(
            wrong.is_empty(),
            "{kind} {name}: values never written: {wrong:?}"
        );
        match &first {
            None => first = Some((name, kvs)),
            Some((first_name, first_kvs)) => assert!(
                *first_kvs == kvs,
                "{kind}: {first_name} and {name} hold different {LOAD_PREFIX} keys ({} and {})",
                first_kvs.len(),
                kvs.len()
            ),
        }
    }
    let held = first.map_or(0, |(_, kvs)| kvs.len());
    eprintln!(
        "{kind}: {} acknowledged puts on every member ({held} keys held, the rest were \
         never acknowledged)",
        acks.len()
    );

    let rev = last.revision.to_string();
    let out = ctl(
        c,
        leader,
        &[
            "endpoint",
            "hashkv",
            "--cluster",
            "--rev",
            &rev,
            "-w",
            "json",
        ],
    );
    let rows: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{kind}: {e}: {out}"));
    let hashes: Vec<(String, u64)> = rows
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["Endpoint"].as_str().unwrap_or("?").to_string(),
                        r["HashKV"]["hash"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(hashes.len(), c.members.len(), "{kind}: hashkv: {out}");
    assert!(
        hashes.iter().all(|(_, h)| *h == hashes[0].1),
        "{kind}: `endpoint hashkv --cluster --rev {rev}` differs between members: {hashes:?}\n{}",
        c.log_tails()
    );
}

/// A member reached by its client URL: one of a [`ServerCluster`]'s
/// ([`member_endpoints`]) or one a test started itself (e.g. added with
/// `member add` and started with `--initial-cluster-state existing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEndpoint {
    pub name: String,
    pub url: String,
    /// A learner serves serializable reads but not `HashKV`.
    pub learner: bool,
}

/// The members `members` of `c`, by name and client URL.
pub fn member_endpoints(c: &ServerCluster, members: &[usize]) -> Vec<MemberEndpoint> {
    members
        .iter()
        .map(|&i| MemberEndpoint {
            name: c.members[i].name().to_string(),
            url: c.members[i].endpoint(),
            learner: false,
        })
        .collect()
}

/// [`check_acked_on_every_member`] for a cluster whose membership changed
/// (or with members down): a last write through the first voter of
/// `members` is served (serializable read) by every one of them within
/// `CATCH_UP_MAX`; then each one's serializable `get --prefix load/` holds
/// every acknowledged key with its value and revision, nothing with a value
/// never written, all the same; `endpoint hashkv --rev R` through each of
/// them but learners agrees. `logs` is added to a failure's message (the
/// log tails of the members the test started itself). The revision of the
/// last write.
pub fn check_acked_on_members(
    c: &ServerCluster,
    members: &[MemberEndpoint],
    acks: &[Ack],
    logs: &dyn Fn() -> String,
) -> u64 {
    let kind = c.kind();
    let report = || format!("{}\n{}", c.log_tails(), logs());
    let mut revisions: Vec<u64> = acks.iter().map(|a| a.revision).collect();
    revisions.sort_unstable();
    let total = revisions.len();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        total,
        "{kind}: one revision acknowledged for two puts"
    );

    let via = members
        .iter()
        .find(|m| !m.learner)
        .expect("a voter among the members");
    let key = "sentinel/last";
    let out = etcdctl(&via.url, &["put", key, &value_of(key), "-w", "json"], None);
    assert_eq!(
        out.code,
        0,
        "{kind} via {}: put {key}: {out:?}\n{}",
        via.name,
        report()
    );
    let last = Ack {
        key: key.to_string(),
        revision: json_u64_field(&out.stdout, "revision")
            .unwrap_or_else(|| panic!("{kind}: put {key}: no revision in {out:?}")),
        acked: Instant::now(),
    };
    let started = Instant::now();
    for m in members {
        let caught_up = poll(CATCH_UP_MAX, || {
            let out = probe(
                &m.url,
                &["get", &last.key, "--consistency=s", "-w", "fields"],
            );
            (out.code == 0 && out.stdout.contains("\"Key\" : \"sentinel/last\"")).then_some(())
        });
        assert!(
            caught_up.is_some(),
            "{kind} {}: `get sentinel/last --consistency=s` through it did not find the write \
             acknowledged at revision {} within {CATCH_UP_MAX:?}\n{}",
            m.name,
            last.revision,
            report()
        );
        eprintln!(
            "{kind} {}: serves the last write {:?} after it was acknowledged",
            m.name,
            started.elapsed()
        );
    }

    let mut first: Option<(String, BTreeMap<String, crate::etcdctl::FieldsKv>)> = None;
    for m in members {
        let args = [
            "get",
            "--prefix",
            LOAD_PREFIX,
            "--consistency=s",
            "-w",
            "fields",
        ];
        let out = etcdctl(&m.url, &args, None);
        assert_eq!(
            out.code,
            0,
            "{kind} via {}: etcdctl {}: {out:?}\n{}",
            m.name,
            args.join(" "),
            report()
        );
        let (_, kvs) = parse_get_fields(&out.stdout);
        let missing: Vec<String> = acks
            .iter()
            .filter(|a| {
                kvs.get(&a.key)
                    .is_none_or(|kv| kv.value != value_of(&a.key) || kv.mod_revision != a.revision)
            })
            .map(|a| format!("{} at {} (got {:?})", a.key, a.revision, kvs.get(&a.key)))
            .collect();
        assert!(
            missing.is_empty(),
            "{kind} {}: {} of {} acknowledged puts missing or changed, e.g. {:?}\n{}",
            m.name,
            missing.len(),
            acks.len(),
            &missing[..missing.len().min(10)],
            report()
        );
        let wrong: Vec<&String> = kvs
            .iter()
            .filter(|(k, kv)| kv.value != value_of(k))
            .map(|(k, _)| k)
            .collect();
        assert!(
            wrong.is_empty(),
            "{kind} {}: values never written: {wrong:?}",
            m.name
        );
        match &first {
            None => first = Some((m.name.clone(), kvs)),
            Some((first_name, first_kvs)) => assert!(
                *first_kvs == kvs,
                "{kind}: {first_name} and {} hold different {LOAD_PREFIX} keys ({} and {})",
                m.name,
                first_kvs.len(),
                kvs.len()
            ),
        }
    }
    let held = first.map_or(0, |(_, kvs)| kvs.len());
    eprintln!(
        "{kind}: {} acknowledged puts on each of {} members ({held} keys held, the rest were \
         never acknowledged)",
        acks.len(),
        members.len()
    );

    let rev = last.revision.to_string();
    let voters: Vec<&MemberEndpoint> = members.iter().filter(|m| !m.learner).collect();
    let urls = voters
        .iter()
        .map(|m| m.url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let out = etcdctl(
        &urls,
        &["endpoint", "hashkv", "--rev", &rev, "-w", "json"],
        None,
    );
    let rows: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{kind}: hashkv: {e}: {out:?}\n{}", report()));
    let hashes: Vec<(String, u64)> = rows
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["Endpoint"].as_str().unwrap_or("?").to_string(),
                        r["HashKV"]["hash"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        hashes.len(),
        voters.len(),
        "{kind}: hashkv through {urls}: {out:?}"
    );
    assert!(
        hashes.iter().all(|(_, h)| *h == hashes[0].1),
        "{kind}: `endpoint hashkv --rev {rev}` differs between members: {hashes:?}\n{}",
        report()
    );
    last.revision
}

/// The value of the `ETCD_INITIAL_CLUSTER` line member add printed.
pub fn printed_initial_cluster(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        line.strip_prefix("ETCD_INITIAL_CLUSTER=\"")
            .and_then(|rest| rest.strip_suffix('"'))
            .map(str::to_string)
    })
}
