//! Membership changes by etcd's runbooks, ferrokv's side by side with
//! etcd's, driven by the real `etcdctl`:
//!
//! - `a_learner_joins_is_promoted_and_removed`: `member add --learner`
//!   (its printed `ETCD_*` lines), the unstarted learner in `member list`,
//!   `member promote` refused before it runs, the learner started with
//!   `--initial-cluster-state existing` and the printed `--initial-cluster`,
//!   listed with its name, serving serializable reads of what was written
//!   before and refusing linearizable reads, writes, `member list` and
//!   `endpoint health`; `member promote` accepted once it is in sync;
//!   `endpoint status --cluster` with four voters; `member remove`, after
//!   which the removed member's process exits by itself.
//! - `membership_refusals_in_etcds_words`: a duplicate peer URL, an unknown
//!   id (remove, update), promoting a voter, a second learner, a voter or a
//!   learner added while a member is down (and a learner never started);
//!   `member update` of a member's peer URL and that member restarted
//!   listening on it (etcd's runbook).
//! - `a_voter_added_to_one_member_blocks_a_second`: in a one-member cluster
//!   with an added voter never started, another voter is refused for want
//!   of started members.
//! - `a_failed_member_is_replaced`: under a concurrent write load, a
//!   follower killed -9, removed, its data dir wiped, added again (same
//!   name and peer URL, a new id) and started with
//!   `--initial-cluster-state existing`; every acknowledged write is then on
//!   every member.
//!
//! Every output is compared normalized: member and cluster ids, URLs and
//! addresses become placeholders naming the member (`<id:m4>`,
//! `<peer-url:m4>`), tables are compared cell by cell with their rows
//! sorted (etcd lists members by id, and ids differ between any two
//! clusters), the members of `ETCD_INITIAL_CLUSTER` sorted, etcdctl's
//! client log lines on stderr reduced to the distinct gRPC errors they
//! name (how often etcdctl retried is not compared). Each step's output is
//! asserted exactly as etcd 3.4 prints it, on every side, and the
//! transcripts of the two sides are compared step by step.
//!
//! etcd (3.4, `--strict-reconfig-check` on by default) refuses a member
//! add with `etcdserver: unhealthy cluster` until the member asked has
//! been connected to every voting member for 5 s: adds that must get past
//! that are repeated while they get that answer (bounded). Other facts of
//! etcd 3.4 the steps assert: a learner answers only serializable reads
//! and `endpoint status`, anything else is `Unavailable: etcdserver: rpc
//! not supported for learner` (which etcdctl retries for ~2.6 s before it
//! gives up); a removed member's process exits by itself, with code 0,
//! within ~0.1 s; `not enough started members` is sent with code
//! `Unknown`; etcdctl prints the ids of `Member <id> added ...` with
//! `%16x` (space-padded), which is etcdctl's doing, so those spaces are
//! collapsed.
//!
//! Sides: etcd (the reference), then ferrokv (or a second etcd with
//! `FERROKV_COMPAT_CANDIDATE=etcd`); `FERRO_SIDES=etcd` (or `ferrokv`, or
//! `etcd,ferrokv`) runs only those. `FERROKV_COMPAT_SHOW=1` prints each
//! side's normalized transcript.
//!
//! Limits: every wait is bounded by a named duration (`poll`); every
//! etcdctl by the harness's `ETCDCTL_TIMEOUT`; the write load by the
//! harness's bounds. Every server is killed when its cluster (or, for a
//! member started here, its [`Joiner`]) is dropped, also when a test
//! panics.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use ferrokv_tests::addr::free_ports;
use ferrokv_tests::cluster::{
    check_acked_on_every_member, poll, printed_initial_cluster, probe, sides, wait_leader, Load,
    ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX, WRITE_AFTER_FAULT_MAX,
};
use ferrokv_tests::normalize::table_rows;
use ferrokv_tests::script::{compare_steps, StepName};
use ferrokv_tests::server::ServerKind;
use ferrokv_tests::{
    etcdctl, free_addr_pair, ClusterOptions, EtcdCluster, FerrokvCluster, Normalizer, Output,
    ServerCluster,
};

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const TOKEN: &str = "ferrokv-membership-test";
/// ferrokv's `--shards`: two, so that a member joining gets several shards.
const SHARDS: u32 = 2;
/// Small enough that the write load of the replacement test outgrows it.
const SNAPSHOT_COUNT: u32 = 100;

/// Bound on a member add being refused with `etcdserver: unhealthy
/// cluster` (etcd: until the member asked has been connected to every
/// voting member for 5 s).
const CONNECTED_WAIT_MAX: Duration = Duration::from_secs(20);
/// Bound on a started learner being listed with its name.
const JOIN_MAX: Duration = Duration::from_secs(20);
/// Bound on the learner serving what was written before it joined.
const LEARNER_CATCH_UP_MAX: Duration = Duration::from_secs(20);
/// Bound on `member promote` being accepted once the learner runs.
const PROMOTE_MAX: Duration = Duration::from_secs(20);
/// Bound on a promoted member serving linearizable reads.
const PROMOTED_SERVES_MAX: Duration = Duration::from_secs(10);
/// Bound on a removed member's process exiting by itself.
const REMOVED_EXIT_MAX: Duration = Duration::from_secs(20);
/// After a member is killed, how long the others get to see its peer
/// connections gone before a change that depends on it is asked.
const PEER_LOSS_SETTLE: Duration = Duration::from_millis(2 * ELECTION_TIMEOUT_MS);

/// Puts acknowledged before the follower is killed (replacement test) ...
const ACKS_BEFORE_FAULT: usize = 200;
const ACKS_BEFORE_FAULT_MAX: Duration = Duration::from_secs(20);
/// ... and at each later stage.
const ACKS_PER_STAGE: usize = 100;

// ---------------------------------------------------------------- sides

/// The sides to run: [`sides`], or those `FERRO_SIDES` names
/// (comma-separated `etcd`, `ferrokv`; `ferrokv` is the candidate, a
/// second etcd with `FERROKV_COMPAT_CANDIDATE=etcd`).
fn run_sides() -> Vec<ServerKind> {
    let [reference, candidate] = sides();
    match std::env::var("FERRO_SIDES") {
        Err(_) => vec![reference, candidate],
        Ok(list) if list.trim().is_empty() => vec![reference, candidate],
        Ok(list) => list
            .split(',')
            .map(|side| match side.trim() {
                "etcd" => reference,
                "ferrokv" | "candidate" => candidate,
                other => panic!("FERRO_SIDES={list:?}: unknown side {other:?} (etcd, ferrokv)"),
            })
            .collect(),
    }
}

/// The flags after the standard ones, the same on both sides: fast
/// elections, and snapshots often enough that a member added under load
/// is brought up to date with one.
fn member_flags() -> Vec<String> {
    vec![
        format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
        format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
        format!("--snapshot-count={SNAPSHOT_COUNT}"),
    ]
}

/// The extra flags a member of `kind` was started with (the cluster
/// start puts `--shards` first), for a restart with more.
fn member_extra_args(kind: ServerKind) -> Vec<String> {
    let mut args = Vec::new();
    if kind == ServerKind::Ferrokv {
        args.push(format!("--shards={SHARDS}"));
    }
    args.extend(member_flags());
    args
}

fn start_cluster(kind: ServerKind, dir: &Path, names: &[&str]) -> ServerCluster {
    match kind {
        ServerKind::Etcd => EtcdCluster::start_with(
            dir,
            names,
            TOKEN,
            ClusterOptions {
                shards: None,
                extra_args: member_flags(),
            },
        )
        .into_inner(),
        ServerKind::Ferrokv => FerrokvCluster::start(
            dir,
            names,
            TOKEN,
            ClusterOptions {
                shards: Some(SHARDS),
                extra_args: member_flags(),
            },
        )
        .into_inner(),
    }
}

/// Runs `scenario` on each side in turn (each on a cluster of its own,
/// stopped before the next side starts), then compares the transcripts.
fn side_by_side(test: &str, scenario: impl Fn(ServerKind, &Path) -> Side) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ferrokv-membership-{test}-"))
        .tempdir()
        .expect("tempdir");
    let mut runs: Vec<(ServerKind, Transcript)> = Vec::new();
    for (i, kind) in run_sides().into_iter().enumerate() {
        eprintln!("=== {test} on {kind}");
        let started = Instant::now();
        let side = scenario(kind, &dir.path().join(format!("{i}-{kind}")));
        let t = side.finish();
        eprintln!(
            "=== {test} on {kind}: {} steps as etcd answers them, in {:?}",
            t.steps.len(),
            started.elapsed()
        );
        if std::env::var_os("FERROKV_COMPAT_SHOW").is_some() {
            for (step, out) in t.steps.iter().zip(&t.outputs) {
                eprintln!(
                    "$ {}    [exit {}]\n{}{}",
                    step.heading, out.code, out.stdout, out.stderr
                );
            }
        }
        runs.push((kind, t));
    }
    if let [(ref_kind, r), (cand_kind, c)] = &runs[..] {
        let ref_headings: Vec<&str> = r.steps.iter().map(|s| s.heading.as_str()).collect();
        let cand_headings: Vec<&str> = c.steps.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(
            ref_headings, cand_headings,
            "{test}: {ref_kind} and {cand_kind} ran different steps"
        );
        if let Err(report) = compare_steps(
            test,
            &r.steps,
            (&ref_kind.to_string(), &r.outputs),
            (&format!("{cand_kind} (candidate)"), &c.outputs),
        ) {
            panic!("{report}");
        }
        eprintln!(
            "{test}: {} steps identical on {ref_kind} and {cand_kind}",
            r.steps.len()
        );
    }
}

// ------------------------------------------------------------ transcript

/// The steps of one side's run and what each showed, normalized.
struct Transcript {
    norm: Normalizer,
    steps: Vec<StepName>,
    outputs: Vec<Output>,
}

impl Transcript {
    fn push(&mut self, heading: String, shown: Output) {
        let n = self.steps.len() + 1;
        self.steps.push(StepName {
            short: n.to_string(),
            heading: format!("step {n}: {heading}"),
        });
        self.outputs.push(shown);
    }
}

/// etcdctl's stderr with its client log lines (JSON) reduced to the
/// distinct errors they name, in order, as `grpc: <error>`; other lines as
/// they are.
fn summarize_stderr(raw: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in raw.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    let s = format!("grpc: {e}");
                    if !lines.contains(&s) {
                        lines.push(s);
                    }
                }
                continue;
            }
        }
        lines.push(trimmed.to_string());
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// `ETCD_INITIAL_CLUSTER="a=..,b=.."` with its members sorted (etcdctl
/// prints them in member id order).
fn sort_initial_cluster(text: &str) -> String {
    text.lines()
        .map(|line| {
            let sorted = line
                .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
                .and_then(|rest| rest.strip_suffix('"'))
                .map(|members| {
                    let mut members: Vec<&str> = members.split(',').collect();
                    members.sort_unstable();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", members.join(","))
                });
            format!("{}\n", sorted.unwrap_or_else(|| line.to_string()))
        })
        .collect()
}

/// The id (hex, as printed) in `Member <id> added to cluster <cid>`.
fn added_id(stdout: &str) -> Option<String> {
    let rest = stdout.lines().next()?.strip_prefix("Member ")?;
    let (id, tail) = rest.trim_start().split_once(' ')?;
    tail.starts_with("added to cluster ")
        .then(|| id.to_string())
}

/// etcdctl prints the ids of `Member <id> added to cluster <cid>` (and
/// removed, updated, promoted) with `%16x`: space-padded to 16 digits, so
/// an id with a leading zero digit shows as `Member  <id>`. The padding is
/// etcdctl's, not the server's: those lines' runs of spaces become one.
fn collapse_member_lines(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("Member ") {
                format!(
                    "{}\n",
                    line.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// Rows rendered `a | b | c`, one a line, the header first and the
/// others sorted.
fn render_rows(rows: &[Vec<String>]) -> String {
    let mut lines: Vec<String> = rows.iter().map(|r| r.join(" | ")).collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

// ----------------------------------------------------- expected outputs

const MEMBER_LIST_HEADER: &str = "ID | STATUS | NAME | PEER ADDRS | CLIENT ADDRS | IS LEARNER";
const ENDPOINT_STATUS_HEADER: &str = "ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER \
     | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS";
/// `endpoint status` columns that legitimately differ between two
/// clusters (IS LEADER is counted first: exactly one).
const ENDPOINT_STATUS_NORMALIZED: [&str; 6] = [
    "VERSION",
    "DB SIZE",
    "IS LEADER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
];

/// How a member shows in `member list -w table`.
#[derive(Clone, Copy)]
enum Listed<'a> {
    /// Started (it published its name and client URLs): name, learner.
    Started(&'a str, bool),
    /// Added, never started: name (not shown), learner.
    Unstarted(&'a str, bool),
    /// Started, with this peer-URL placeholder.
    StartedAt(&'a str, &'a str),
}

/// `member list -w table` as [`Side::member_list`] shows it.
fn member_table(members: &[Listed]) -> String {
    let mut rows = vec![MEMBER_LIST_HEADER.to_string()];
    for m in members {
        rows.push(match *m {
            Listed::Started(n, learner) => {
                format!("<id:{n}> | started | {n} | <peer-url:{n}> | <client-url:{n}> | {learner}")
            }
            Listed::Unstarted(n, learner) => {
                format!("<id:{n}> | unstarted |  | <peer-url:{n}> |  | {learner}")
            }
            Listed::StartedAt(n, peer) => {
                format!("<id:{n}> | started | {n} | {peer} | <client-url:{n}> | false")
            }
        });
    }
    rows[1..].sort();
    rows.iter().map(|l| format!("{l}\n")).collect()
}

/// `endpoint status --cluster -w table` as [`Side::endpoint_status`]
/// shows it: `(name, is learner)` for each member.
fn status_table(members: &[(&str, bool)]) -> String {
    let mut rows = vec![ENDPOINT_STATUS_HEADER.to_string()];
    for (n, learner) in members {
        rows.push(format!(
            "<client-url:{n}> | <id:{n}> | <VERSION> | <DB SIZE> | <IS LEADER> | {learner} | \
             <RAFT TERM> | <RAFT INDEX> | <RAFT APPLIED INDEX> | "
        ));
    }
    rows[1..].sort();
    rows.iter().map(|l| format!("{l}\n")).collect()
}

/// `Member <id:name> added to cluster <cluster_id>` and the `ETCD_*`
/// lines, `initial` the sorted `name=<peer-url:name>` members.
fn added(name: &str, initial: &[&str]) -> String {
    let mut initial: Vec<String> = initial
        .iter()
        .map(|m| {
            if m.is_empty() {
                String::new()
            } else {
                format!("{m}=<peer-url:{m}>")
            }
        })
        .collect();
    initial.sort();
    format!(
        "Member <id:{name}> added to cluster <cluster_id>\n\n\
         ETCD_NAME=\"{name}\"\n\
         ETCD_INITIAL_CLUSTER=\"{}\"\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=\"<peer-url:{name}>\"\n\
         ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        initial.join(",")
    )
}

/// What etcdctl prints on stderr when a call fails with this gRPC code and
/// message (summarized as [`summarize_stderr`] does).
fn refused(code: &str, message: &str) -> String {
    format!("grpc: rpc error: code = {code} desc = {message}\nError: {message}\n")
}

const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const NOT_SUPPORTED_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";

// ----------------------------------------------------------- one side

/// A member started by the test itself (not one of the cluster's): a
/// member added with `member add`, started with `--initial-cluster-state
/// existing`, not waited for (a learner never answers `endpoint health`).
/// Killed when dropped; its process dies with the test's thread too.
struct Joiner {
    name: String,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    command_line: String,
    child: Option<Child>,
}

impl Joiner {
    fn client_url(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    fn peer_url(&self) -> String {
        format!("http://{}", self.peer_addr)
    }

    fn spawn(&mut self, binary: &Path, args: Vec<String>) {
        assert!(self.child.is_none(), "{} already started", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let log_err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(binary);
        // Both servers read ETCD_* variables as flags.
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
        self.command_line = format!("{} {}", binary.display(), args.join(" "));
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())),
        );
    }

    /// Its exit status once it exited, waiting at most `bound`.
    fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        poll(bound, || child.try_wait().ok().flatten())
    }

    fn log_tail(&self) -> String {
        let text = fs::read(&self.log_path).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(4096)..];
        String::from_utf8_lossy(tail).into_owned()
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One side's cluster, the members the test started itself, and what
/// the steps showed.
struct Side {
    kind: ServerKind,
    c: ServerCluster,
    joiners: Vec<Joiner>,
    dir: PathBuf,
    /// Member name -> id in hex, as etcdctl prints it.
    ids: HashMap<String, String>,
    t: Transcript,
}

impl Side {
    fn start(kind: ServerKind, dir: &Path, names: &[&str]) -> Side {
        let c = start_cluster(kind, dir, names);
        let all: Vec<usize> = (0..names.len()).collect();
        wait_leader(&c, &all, LEADER_WAIT_MAX);
        let ids = c
            .members
            .iter()
            .map(|m| {
                let (_, id) = m
                    .ids()
                    .unwrap_or_else(|| panic!("{kind} {}: no member id", m.name()));
                (m.name().to_string(), format!("{id:x}"))
            })
            .collect();
        let t = Transcript {
            norm: Normalizer::for_cluster(&c),
            steps: Vec::new(),
            outputs: Vec::new(),
        };
        Side {
            kind,
            c,
            joiners: Vec::new(),
            dir: dir.to_path_buf(),
            ids,
            t,
        }
    }

    /// Every cluster member still runs; the transcript.
    fn finish(mut self) -> Transcript {
        for i in 0..self.c.members.len() {
            if !self.c.members[i].is_running() {
                self.fail(&format!(
                    "{} exited during the test",
                    self.c.members[i].name()
                ));
            }
        }
        std::mem::replace(
            &mut self.t,
            Transcript {
                norm: Normalizer::new(),
                steps: Vec::new(),
                outputs: Vec::new(),
            },
        )
    }

    fn logs(&self) -> String {
        let mut logs = self.c.log_tails();
        for j in self.joiners.iter().filter(|j| !j.command_line.is_empty()) {
            logs.push_str(&format!(
                "\n--- {} {} (started as: {}) log {} (tail):\n{}",
                self.kind,
                j.name,
                j.command_line,
                j.log_path.display(),
                j.log_tail()
            ));
        }
        logs
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{}: {what}\n{}", self.kind, self.logs())
    }

    fn check(&self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            self.fail(&what());
        }
    }

    fn id(&self, name: &str) -> String {
        self.ids
            .get(name)
            .unwrap_or_else(|| panic!("no id known for {name}"))
            .clone()
    }

    fn index(&self, name: &str) -> usize {
        self.c
            .members
            .iter()
            .position(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name} is not a cluster member"))
    }

    fn endpoint(&self, who: &str) -> String {
        if let Some(m) = self.c.members.iter().find(|m| m.name() == who) {
            return m.endpoint();
        }
        if let Some(j) = self.joiners.iter().find(|j| j.name == who) {
            return j.client_url();
        }
        panic!("no member {who}")
    }

    fn joiner(&mut self, name: &str) -> &mut Joiner {
        self.joiners
            .iter_mut()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no joiner {name}"))
    }

    /// Addresses and a directory for a member to add, `name`; its URLs
    /// and addresses normalized from now on. Not started.
    fn new_joiner(&mut self, name: &str) -> String {
        let (client_addr, peer_addr) = free_addr_pair();
        let member_dir = self.dir.join(format!(
            "{}-{name}-{}-{}",
            self.kind,
            client_addr.ip(),
            client_addr.port()
        ));
        fs::create_dir_all(&member_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", member_dir.display()));
        let j = Joiner {
            name: name.to_string(),
            client_addr,
            peer_addr,
            data_dir: member_dir.join("data"),
            log_path: member_dir.join("server.log"),
            command_line: String::new(),
            child: None,
        };
        let peer_url = j.peer_url();
        self.t
            .norm
            .add_literal(&j.client_url(), &format!("<client-url:{name}>"));
        self.t
            .norm
            .add_literal(&peer_url, &format!("<peer-url:{name}>"));
        self.t
            .norm
            .add_literal(&client_addr.to_string(), &format!("<client-addr:{name}>"));
        self.t
            .norm
            .add_literal(&peer_addr.to_string(), &format!("<peer-addr:{name}>"));
        self.joiners.push(j);
        peer_url
    }

    /// Starts the joiner `name` with the cluster's binary and common
    /// flags (token, logging, `--shards`, elections), its own addresses,
    /// `--initial-cluster=initial_cluster` and
    /// `--initial-cluster-state=existing`.
    fn spawn_joiner(&mut self, name: &str, initial_cluster: &str) {
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
        let first = &self.c.members[0];
        let binary = first.binary().to_path_buf();
        let common: Vec<String> = first
            .args()
            .into_iter()
            .filter(|a| !PER_MEMBER.iter().any(|p| a.starts_with(p)))
            .collect();
        let j = self
            .joiners
            .iter_mut()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no joiner {name}"));
        let (client, peer) = (j.client_url(), j.peer_url());
        let mut args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", j.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={initial_cluster}"),
            "--initial-cluster-state=existing".to_string(),
        ];
        args.extend(common);
        j.spawn(&binary, args);
    }

    /// Adds `literal` (an id in hex) and its decimal form as `<id:name>`.
    fn learn_id(&mut self, name: &str, hex: &str) {
        self.t.norm.add_literal(hex, &format!("<id:{name}>"));
        if let Ok(decimal) = u64::from_str_radix(hex, 16) {
            self.t
                .norm
                .add_literal(&decimal.to_string(), &format!("<id:{name}>"));
        }
        self.ids.insert(name.to_string(), hex.to_string());
    }

    fn shape(&self, out: &Output) -> Output {
        Output {
            stdout: collapse_member_lines(&sort_initial_cluster(
                &self.t.norm.normalize(&out.stdout),
            )),
            stderr: self.t.norm.normalize(&summarize_stderr(&out.stderr)),
            code: out.code,
        }
    }

    fn heading(&self, who: &str, args: &[&str], note: &str) -> String {
        format!(
            "etcdctl {} (via {who}){note}",
            self.t.norm.normalize(&args.join(" "))
        )
    }

    fn record(&mut self, who: &str, args: &[&str], note: &str, out: &Output) {
        let heading = self.heading(who, args, note);
        let shown = self.shape(out);
        self.t.push(heading, shown);
    }

    /// etcdctl through `who` (a member or a joiner), recorded.
    fn run(&mut self, who: &str, args: &[&str]) -> Output {
        let out = etcdctl(&self.endpoint(who), args, None);
        self.record(who, args, "", &out);
        out
    }

    /// etcdctl through `who`, repeated while `again` holds of its output
    /// (at most `bound`); the last output, not yet recorded, and how long
    /// it took.
    fn repeat(
        &self,
        who: &str,
        args: &[&str],
        bound: Duration,
        again: impl Fn(&Output) -> bool,
    ) -> (Output, Duration) {
        let endpoint = self.endpoint(who);
        let started = Instant::now();
        let mut last = None;
        poll(bound, || {
            let out = etcdctl(&endpoint, args, None);
            let repeat = again(&out);
            last = Some(out);
            (!repeat).then_some(())
        });
        (last.expect("ran at least once"), started.elapsed())
    }

    /// [`repeat`](Self::repeat), recorded; prints how long it took.
    fn run_until(
        &mut self,
        who: &str,
        args: &[&str],
        bound: Duration,
        until: &str,
        again: impl Fn(&Output) -> bool,
    ) -> Output {
        let (out, took) = self.repeat(who, args, bound, again);
        eprintln!(
            "{}: `etcdctl {}` via {who}: {until} after {took:?}",
            self.kind,
            args.join(" ")
        );
        self.record(
            who,
            args,
            &format!(" [repeated until {until}, at most {bound:?}]"),
            &out,
        );
        out
    }

    /// `member add <name> [flags] --peer-urls=<peer_url>` through `via`,
    /// repeated while refused with `etcdserver: unhealthy cluster`; the
    /// added member's id is normalized as `<id:name>`.
    fn add_member(&mut self, via: &str, name: &str, peer_url: &str, flags: &[&str]) -> Output {
        let peer_flag = format!("--peer-urls={peer_url}");
        let mut args = vec!["member", "add", name];
        args.extend_from_slice(flags);
        args.push(&peer_flag);
        let (out, took) = self.repeat(via, &args, CONNECTED_WAIT_MAX, |o| {
            o.code != 0 && o.stderr.contains(UNHEALTHY)
        });
        eprintln!(
            "{}: `etcdctl {}` via {via}: answered {} after {took:?}",
            self.kind,
            args.join(" "),
            if out.code == 0 { "ok" } else { "an error" }
        );
        if let Some(id) = added_id(&out.stdout) {
            self.learn_id(name, &id);
        }
        self.record(
            via,
            &args,
            &format!(" [repeated while `{UNHEALTHY}`, at most {CONNECTED_WAIT_MAX:?}]"),
            &out,
        );
        out
    }

    /// `member list -w table` through `who`, rows sorted.
    /// `member list` through `who` and `endpoint status` through m3: the
    /// three original members, started voters.
    fn three_voters(&mut self, who: &str) {
        self.member_list(who);
        self.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::Started("m3", false),
            ]),
            "",
        );
        self.endpoint_status("m3");
        self.expect(
            0,
            &status_table(&[("m1", false), ("m2", false), ("m3", false)]),
            "",
        );
    }

    fn member_list(&mut self, who: &str) {
        let args = ["member", "list", "-w", "table"];
        let out = etcdctl(&self.endpoint(who), &args, None);
        let rows = table_rows(&self.t.norm.normalize(&out.stdout));
        let shown = Output {
            stdout: render_rows(&rows),
            stderr: self.t.norm.normalize(&summarize_stderr(&out.stderr)),
            code: out.code,
        };
        let heading = self.heading(who, &args, "");
        self.t.push(heading, shown);
    }

    /// `endpoint status --cluster -w table` through `who`, rows sorted,
    /// the columns that differ between clusters normalized; checks that
    /// exactly one member leads.
    fn endpoint_status(&mut self, who: &str) {
        let args = ["endpoint", "status", "--cluster", "-w", "table"];
        let out = etcdctl(&self.endpoint(who), &args, None);
        let mut rows = table_rows(&self.t.norm.normalize(&out.stdout));
        let header = rows.first().cloned().unwrap_or_default();
        let col = |name: &str| header.iter().position(|h| h == name);
        let leaders = rows
            .iter()
            .skip(1)
            .filter(|r| col("IS LEADER").and_then(|i| r.get(i)).map(String::as_str) == Some("true"))
            .count();
        self.check(out.code != 0 || leaders == 1, || {
            format!(
                "endpoint status --cluster: {leaders} leaders: {}",
                out.stdout
            )
        });
        for r in rows.iter_mut().skip(1) {
            for name in ENDPOINT_STATUS_NORMALIZED {
                if let Some(cell) = col(name).and_then(|i| r.get_mut(i)) {
                    *cell = format!("<{name}>");
                }
            }
        }
        let shown = Output {
            stdout: render_rows(&rows),
            stderr: self.t.norm.normalize(&summarize_stderr(&out.stderr)),
            code: out.code,
        };
        let heading = self.heading(who, &args, "");
        self.t.push(heading, shown);
    }

    /// The last step showed exactly this.
    fn expect(&self, code: i32, stdout: &str, stderr: &str) {
        let got = self.t.outputs.last().expect("a step ran");
        let want = Output {
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            code,
        };
        if *got != want {
            let heading = &self.t.steps.last().expect("a step ran").heading;
            self.fail(&format!(
                "{heading}: not what etcd answers\n\
                 expected: exit {}\n--- stdout\n{}--- stderr\n{}\
                 got: exit {}\n--- stdout\n{}--- stderr\n{}---",
                want.code, want.stdout, want.stderr, got.code, got.stdout, got.stderr
            ));
        }
    }

    /// An action of the test (a kill, a start), in the transcript.
    fn note(&mut self, what: &str) {
        self.t.push(
            format!("({what})"),
            Output {
                stdout: String::new(),
                stderr: String::new(),
                code: 0,
            },
        );
    }

    /// `put <key> <value>` through `who`, which must answer OK.
    fn put(&mut self, who: &str, key: &str, value: &str) {
        self.run(who, &["put", key, value]);
        self.expect(0, "OK\n", "");
    }

    /// If member `m` leads, leadership moves to the next member: the
    /// member the test kills must be a follower on every side.
    /// Moves the leadership to member `m` (`etcdctl move-leader`).
    fn make_leader(&mut self, m: usize) {
        let all: Vec<usize> = (0..self.c.members.len()).collect();
        let (leader, _) = wait_leader(&self.c, &all, LEADER_WAIT_MAX);
        if leader == m {
            return;
        }
        let id = self.id(self.c.members[m].name());
        let out = probe(&self.c.endpoints(), &["move-leader", &id]);
        self.check(out.code == 0, || format!("move-leader {id}: {out:?}"));
        let (now, _) = wait_leader(&self.c, &all, LEADER_WAIT_MAX);
        self.check(now == m, || "leadership did not move".to_string());
    }

    fn make_follower(&mut self, m: usize) {
        let all: Vec<usize> = (0..self.c.members.len()).collect();
        let (leader, _) = wait_leader(&self.c, &all, LEADER_WAIT_MAX);
        if leader != m {
            return;
        }
        let to = (m + 1) % all.len();
        let id = self.id(self.c.members[to].name());
        let out = probe(&self.c.endpoints(), &["move-leader", &id]);
        self.check(out.code == 0, || format!("move-leader {id}: {out:?}"));
        let (now, _) = wait_leader(&self.c, &all, LEADER_WAIT_MAX);
        self.check(now != m, || "leadership did not move".to_string());
    }
}

// ------------------------------------------------------------- learner

#[test]
fn a_learner_joins_is_promoted_and_removed() {
    side_by_side("learner", |kind, dir| {
        let mut s = Side::start(kind, dir, &NAMES);
        for i in 0..3 {
            s.put("m1", &format!("before/{i}"), &format!("v{i}"));
        }
        let before = "before/0\nv0\nbefore/1\nv1\nbefore/2\nv2\n";

        let peer = s.new_joiner("m4");
        let out = s.add_member("m1", "m4", &peer, &["--learner"]);
        s.expect(0, &added("m4", &["m1", "m2", "m3", "m4"]), "");
        let initial_cluster = printed_initial_cluster(&out.stdout).expect("ETCD_INITIAL_CLUSTER");
        s.member_list("m1");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::Started("m3", false),
                Listed::Unstarted("m4", true),
            ]),
            "",
        );
        let m4 = s.id("m4");
        s.run("m1", &["member", "promote", &m4]);
        s.expect(1, "", &refused("FailedPrecondition", LEARNER_NOT_READY));

        s.spawn_joiner("m4", &initial_cluster);
        s.note(
            "m4 started with --initial-cluster-state=existing and the printed --initial-cluster",
        );
        let listed = format!(", started, m4, {peer}, ");
        let (_, took) = s.repeat("m1", &["member", "list"], JOIN_MAX, |o| {
            !o.stdout.contains(&listed)
        });
        eprintln!("{kind}: m4 is listed started {took:?} after its start");
        s.member_list("m2");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::Started("m3", false),
                Listed::Started("m4", true),
            ]),
            "",
        );

        // What a learner serves, and what it refuses.
        s.run_until(
            "m4",
            &["get", "--prefix", "before/", "--consistency=s"],
            LEARNER_CATCH_UP_MAX,
            "the learner serves the keys written before it joined",
            |o| o.stdout != before,
        );
        s.expect(0, before, "");
        for args in [
            &["get", "before/0"][..],
            &["put", "by-learner", "x"][..],
            &["member", "list"][..],
        ] {
            s.run("m4", args);
            s.expect(1, "", &refused("Unavailable", NOT_SUPPORTED_FOR_LEARNER));
        }
        s.run("m4", &["endpoint", "health"]);
        s.expect(
            1,
            "",
            &format!(
                "grpc: rpc error: code = Unavailable desc = {NOT_SUPPORTED_FOR_LEARNER}\n\
                 <client-url:m4> is unhealthy: failed to commit proposal: \
                 {NOT_SUPPORTED_FOR_LEARNER}\nError: unhealthy cluster\n"
            ),
        );
        s.endpoint_status("m1");
        s.expect(
            0,
            &status_table(&[("m1", false), ("m2", false), ("m3", false), ("m4", true)]),
            "",
        );

        // Promoted once in sync.
        s.run_until(
            "m1",
            &["member", "promote", &m4],
            PROMOTE_MAX,
            "promote is accepted",
            |o| o.code != 0 && o.stderr.contains(LEARNER_NOT_READY),
        );
        s.expect(0, "Member <id:m4> promoted in cluster <cluster_id>\n", "");
        s.run("m2", &["member", "promote", &m4]);
        s.expect(
            1,
            "",
            &refused(
                "FailedPrecondition",
                "etcdserver: can only promote a learner member",
            ),
        );
        s.member_list("m3");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::Started("m3", false),
                Listed::Started("m4", false),
            ]),
            "",
        );
        s.endpoint_status("m1");
        s.expect(
            0,
            &status_table(&[("m1", false), ("m2", false), ("m3", false), ("m4", false)]),
            "",
        );
        s.run_until(
            "m4",
            &["get", "--prefix", "before/"],
            PROMOTED_SERVES_MAX,
            "the promoted member serves linearizable reads",
            |o| o.code != 0,
        );
        s.expect(0, before, "");
        s.put("m4", "by-m4", "x");

        // Removed: the cluster is three again, the removed member exits.
        s.run("m1", &["member", "remove", &m4]);
        s.expect(0, "Member <id:m4> removed from cluster <cluster_id>\n", "");
        let removed = Instant::now();
        let status = s.joiner("m4").wait_exit(REMOVED_EXIT_MAX);
        let shown = match status {
            Some(st) => {
                eprintln!(
                    "{kind}: the removed member exited {:?} after its removal: {st}",
                    removed.elapsed()
                );
                match st.code() {
                    Some(code) => format!("exited by itself with code {code}\n"),
                    None => format!("exited by itself: {st}\n"),
                }
            }
            None => format!("still running {REMOVED_EXIT_MAX:?} after its removal\n"),
        };
        s.t.push(
            format!("the removed member m4's process [waited for at most {REMOVED_EXIT_MAX:?}]"),
            Output {
                stdout: shown,
                stderr: String::new(),
                code: 0,
            },
        );
        s.expect(0, "exited by itself with code 0\n", "");
        s.three_voters("m2");
        s.put("m2", "after-removal", "y");
        s.run("m3", &["get", "--prefix", "after-removal"]);
        s.expect(0, "after-removal\ny\n", "");

        // Restarted after the changes, a member replays its log through
        // them and has every write (before, between and after them).
        let i3 = s.index("m3");
        s.make_follower(i3);
        s.c.members[i3].kill_9();
        s.c.members[i3].start_again();
        s.note("kill -9 m3 (a follower) and start it again");
        s.run("m3", &["get", "--prefix", "before/", "--consistency=s"]);
        s.expect(0, before, "");
        s.run("m3", &["get", "by-m4", "--consistency=s"]);
        s.expect(0, "by-m4\nx\n", "");
        s.run("m3", &["get", "after-removal", "--consistency=s"]);
        s.expect(0, "after-removal\ny\n", "");
        s
    });
}

// ------------------------------------------------------------ refusals

#[test]
fn membership_refusals_in_etcds_words() {
    side_by_side("refusals", |kind, dir| {
        let mut s = Side::start(kind, dir, &NAMES);
        let (m1, m2, m3) = (s.id("m1"), s.id("m2"), s.id("m3"));
        let m1_peer = s.c.members[0].peer_url();
        let m2_peer = s.c.members[1].peer_url();

        s.add_member("m1", "mx", &m2_peer, &[]);
        s.expect(
            1,
            "",
            &refused("FailedPrecondition", "etcdserver: Peer URLs already exists"),
        );
        s.run("m2", &["member", "remove", "1234"]);
        s.expect(1, "", &refused("NotFound", "etcdserver: member not found"));
        s.run("m3", &["member", "promote", &m1]);
        s.expect(
            1,
            "",
            &refused(
                "FailedPrecondition",
                "etcdserver: can only promote a learner member",
            ),
        );
        let unused_peer = format!("http://{}", free_addr_pair().1);
        s.t.norm.add_literal(&unused_peer, "<peer-url:unused>");
        s.run(
            "m1",
            &[
                "member",
                "update",
                "1234",
                &format!("--peer-urls={unused_peer}"),
            ],
        );
        s.expect(1, "", &refused("NotFound", "etcdserver: member not found"));
        s.run(
            "m1",
            &["member", "update", &m2, &format!("--peer-urls={m1_peer}")],
        );
        s.expect(
            1,
            "",
            &refused("FailedPrecondition", "etcdserver: Peer URLs already exists"),
        );

        // One learner at most.
        let m4_peer = s.new_joiner("m4");
        s.add_member("m1", "m4", &m4_peer, &["--learner"]);
        s.expect(0, &added("m4", &["m1", "m2", "m3", "m4"]), "");
        let m5_peer = s.new_joiner("m5");
        s.add_member("m2", "m5", &m5_peer, &["--learner"]);
        s.expect(
            1,
            "",
            &refused(
                "FailedPrecondition",
                "etcdserver: too many learner members in cluster",
            ),
        );

        // etcd's runbook for a member's peer URL: update it, then restart
        // the member listening on it. m3 leads meanwhile: the members
        // redial it at a URL where nothing listens yet.
        let i3 = s.index("m3");
        s.make_leader(i3);
        let ip = match s.c.members[i3].peer_addr().ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => panic!("loopback v4 expected, got {ip}"),
        };
        let moved_addr = free_ports(ip, 1)[0];
        let moved = format!("http://{moved_addr}");
        s.t.norm.add_literal(&moved, "<peer-url:m3-moved>");
        s.t.norm
            .add_literal(&moved_addr.to_string(), "<peer-addr:m3-moved>");
        s.run(
            "m1",
            &["member", "update", &m3, &format!("--peer-urls={moved}")],
        );
        s.expect(0, "Member <id:m3> updated in cluster <cluster_id>\n", "");
        s.member_list("m2");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::StartedAt("m3", "<peer-url:m3-moved>"),
                Listed::Unstarted("m4", true),
            ]),
            "",
        );
        let mut args = member_extra_args(kind);
        args.push(format!("--listen-peer-urls={moved}"));
        args.push(format!("--initial-advertise-peer-urls={moved}"));
        s.c.members[i3].set_extra_args(args);
        s.c.members[i3].restart();
        s.note("m3 restarted listening on <peer-url:m3-moved>");
        wait_leader(&s.c, &[0, 1, 2], LEADER_WAIT_MAX);
        s.put("m3", "after-move", "z");
        s.run("m1", &["get", "after-move"]);
        s.expect(0, "after-move\nz\n", "");

        // A member down (and a learner never started): no member add.
        s.make_follower(i3);
        s.c.members[i3].kill_9();
        s.note("kill -9 m3 (a follower); m4 never started");
        wait_leader(&s.c, &[0, 1], LEADER_WAIT_MAX);
        thread::sleep(PEER_LOSS_SETTLE);
        let m6_peer = s.new_joiner("m6");
        s.run(
            "m1",
            &["member", "add", "m6", &format!("--peer-urls={m6_peer}")],
        );
        s.expect(1, "", &refused("Unavailable", UNHEALTHY));
        s.run(
            "m2",
            &[
                "member",
                "add",
                "m6",
                "--learner",
                &format!("--peer-urls={m6_peer}"),
            ],
        );
        s.expect(1, "", &refused("Unavailable", UNHEALTHY));
        let m4 = s.id("m4");
        s.run("m1", &["member", "remove", &m4]);
        s.expect(0, "Member <id:m4> removed from cluster <cluster_id>\n", "");
        s.c.members[i3].start_again();
        s.note("m3 started again");
        wait_leader(&s.c, &[0, 1, 2], LEADER_WAIT_MAX);
        s.member_list("m3");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::StartedAt("m3", "<peer-url:m3-moved>"),
            ]),
            "",
        );
        s
    });
}

/// The only way etcd's `re-configuration failed due to not enough started
/// members` shows through member add: a one-member cluster with an added
/// voter that never started (the cluster has lost its quorum: one of two).
#[test]
fn a_voter_added_to_one_member_blocks_a_second() {
    side_by_side("one-member", |kind, dir| {
        let mut s = Side::start(kind, dir, &["s1"]);
        let s2_peer = s.new_joiner("s2");
        let s3_peer = s.new_joiner("s3");
        s.add_member("s1", "s2", &s2_peer, &[]);
        s.expect(0, &added("s2", &["s1", "s2"]), "");
        s.member_list("s1");
        s.expect(
            0,
            &member_table(&[Listed::Started("s1", false), Listed::Unstarted("s2", false)]),
            "",
        );
        s.run(
            "s1",
            &["member", "add", "s3", &format!("--peer-urls={s3_peer}")],
        );
        // etcd 3.4 sends this one with code Unknown.
        s.expect(
            1,
            "",
            &refused(
                "Unknown",
                "etcdserver: re-configuration failed due to not enough started members",
            ),
        );
        s.run(
            "s1",
            &[
                "member",
                "add",
                "s3",
                "--learner",
                &format!("--peer-urls={s3_peer}"),
            ],
        );
        s.expect(1, "", &refused("Unavailable", UNHEALTHY));
        s
    });
}

// --------------------------------------------------------- replacement

#[test]
fn a_failed_member_is_replaced() {
    side_by_side("replace", |kind, dir| {
        let mut s = Side::start(kind, dir, &NAMES);
        let i3 = s.index("m3");
        s.make_follower(i3);
        let load = Load::start(&s.c);
        load.wait_acked(
            &s.c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the kill",
        );
        let old_id = s.id("m3");
        s.c.members[i3].kill_9();
        s.note("kill -9 m3 (a follower) under the write load");
        load.wait_acked(
            &s.c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "with m3 killed",
        );
        s.run("m1", &["member", "remove", &old_id]);
        s.expect(0, "Member <id:m3> removed from cluster <cluster_id>\n", "");
        s.member_list("m2");
        s.expect(
            0,
            &member_table(&[Listed::Started("m1", false), Listed::Started("m2", false)]),
            "",
        );

        let data_dir = s.c.members[i3].data_dir().to_path_buf();
        fs::remove_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("remove {}: {e}", data_dir.display()));
        s.note("m3's data dir removed");
        let peer = s.c.members[i3].peer_url();
        let out = s.add_member("m1", "m3", &peer, &[]);
        s.expect(0, &added("m3", &["m1", "m2", "m3"]), "");
        let new_id = s.id("m3");
        s.check(new_id != old_id, || {
            format!("m3 added again got its old id {old_id}")
        });
        s.member_list("m1");
        s.expect(
            0,
            &member_table(&[
                Listed::Started("m1", false),
                Listed::Started("m2", false),
                Listed::Unstarted("m3", false),
            ]),
            "",
        );
        let initial_cluster = printed_initial_cluster(&out.stdout).expect("ETCD_INITIAL_CLUSTER");
        let mut args = member_extra_args(kind);
        args.push(format!("--initial-cluster={initial_cluster}"));
        args.push("--initial-cluster-state=existing".to_string());
        s.c.members[i3].set_extra_args(args);
        let restarted = Instant::now();
        s.c.members[i3].start_again();
        s.note(
            "m3 started with --initial-cluster-state=existing and the printed --initial-cluster",
        );
        eprintln!(
            "{kind}: the new m3 answers `endpoint health` {:?} after its start",
            restarted.elapsed()
        );
        load.wait_acked(
            &s.c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the replacement",
        );
        let acks = load.finish();
        check_acked_on_every_member(&s.c, &acks);
        if kind == ServerKind::Ferrokv {
            // Its log was compacted past what the new member lacks: it
            // was sent the shards' snapshot files.
            let log = fs::read_to_string(s.c.members[i3].member_dir().join("server.log"))
                .unwrap_or_default();
            s.check(log.contains("installed the leader's snapshot"), || {
                "the new m3 was not brought up to date by snapshot".to_string()
            });
        }

        s.three_voters("m3");
        s
    });
}
