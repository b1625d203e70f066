//! Three-member clusters, ferrokv's side by side with etcd's, driven by the
//! real `etcdctl` (and, for write loads, the gRPC client of `src/grpc.rs`).
//!
//! - `three_members_answer_as_etcd`: the same etcdctl commands through each
//!   member of a three-member etcd and of a three-member ferrokv
//!   (`--shards 2`, so that prefix deletes and txns cross shards) print the
//!   same once member URLs and ids, terms, raft indexes, versions and sizes
//!   are normalized. Tables are compared cell by cell with their rows
//!   sorted: etcd lists members by id, and ids differ between any two
//!   clusters.
//! - The fault tests run each scenario on etcd first (the reference: a
//!   failure there is a broken test, not a ferrokv bug), then on ferrokv,
//!   both with `--heartbeat-interval 50 --election-timeout 500`: kill -9 of
//!   the leader under a concurrent write load (the time from the kill to
//!   the first write acknowledged after it is printed for both), kill -9
//!   and restart of a follower, kill -9 of all three members mid-load,
//!   SIGSTOP of the leader for three election timeouts, SIGSTOP of both
//!   followers while the leader gets requests that write nothing (each must
//!   wait for the quorum, as etcd's do). After each, every
//!   acknowledged write is on every member (serializable reads through
//!   each) and `endpoint hashkv --cluster` agrees at one revision.
//!
//! `FERROKV_COMPAT_CANDIDATE=etcd` runs the ferrokv half on a second etcd
//! cluster instead: how these tests themselves are checked;
//! `FERROKV_COMPAT_SHOW=1` prints etcd's normalized transcript.
//!
//! The load, the probes and the acknowledged-write check are
//! `ferrokv_tests::cluster`'s (shared with `tests/partition.rs`).
//!
//! Limits: every wait is bounded by a named duration and polls at most
//! `bound / POLL_INTERVAL + 1` times (`cluster::poll`); a write load by
//! `WRITES_PER_WRITER_MAX` and `LOAD_DURATION_MAX`; every etcdctl by the
//! harness's `ETCDCTL_TIMEOUT` (probes of a cluster under faults by
//! `PROBE_TIMEOUT`). Every member is killed when its cluster is dropped,
//! also when a test panics.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::cluster::{
    check_acked_on_every_member, ctl, poll, probe, put_acked, sides, statuses, wait_leader, Ack,
    Load, CATCH_UP_MAX, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX, LOAD_PREFIX,
    WRITE_AFTER_FAULT_MAX,
};
use ferrokv_tests::etcdctl::Background;
use ferrokv_tests::normalize::{json_u64_field, table_rows};
use ferrokv_tests::script::{candidate_is_etcd, compare_steps, StepName};
use ferrokv_tests::server::ServerKind;
use ferrokv_tests::{
    etcdctl, ClusterOptions, EtcdCluster, FerrokvCluster, Normalizer, Output, ServerCluster,
};
use ferrokv_wire::pb::etcdserverpb as pb;

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const TOKEN: &str = "ferrokv-cluster-test";
/// ferrokv's `--shards`: two, so that cross-shard paths run.
const SHARDS: u32 = 2;
/// How long a background `watch` gets to set up before the writes it must
/// see.
const WATCH_SETTLE: Duration = Duration::from_millis(1000);
/// A background `watch` is stopped once it printed nothing for this long.
const WATCH_QUIET: Duration = Duration::from_millis(700);
const WATCH_STOP_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------- scenario sizes

/// A fault is injected once this many puts were acknowledged ...
const ACKS_BEFORE_FAULT: usize = 200;
/// ... or fails the test if they take longer than this.
const ACKS_BEFORE_FAULT_MAX: Duration = Duration::from_secs(20);
/// Puts acknowledged at each recovery stage before the next one.
const ACKS_PER_STAGE: usize = 100;
/// Writes through the survivors while a member is down or stopped.
const WRITES_WHILE_DOWN: usize = 30;

/// A three-member cluster of `kind` under `dir`; short elections for the
/// fault tests.
fn start_cluster(kind: ServerKind, dir: &Path, fast_elections: bool) -> ServerCluster {
    let mut extra_args = Vec::new();
    if fast_elections {
        extra_args.push(format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"));
        extra_args.push(format!("--election-timeout={ELECTION_TIMEOUT_MS}"));
    }
    start_cluster_with(kind, dir, extra_args)
}

/// [`start_cluster`] with these flags after the standard ones.
fn start_cluster_with(kind: ServerKind, dir: &Path, extra_args: Vec<String>) -> ServerCluster {
    start_members(kind, dir, &NAMES, extra_args)
}

/// A cluster of `names` of `kind`, these flags after the standard ones.
fn start_members(
    kind: ServerKind,
    dir: &Path,
    names: &[&str],
    extra_args: Vec<String>,
) -> ServerCluster {
    match kind {
        ServerKind::Etcd => EtcdCluster::start_with(
            dir,
            names,
            TOKEN,
            ClusterOptions {
                shards: None,
                extra_args,
            },
        )
        .into_inner(),
        ServerKind::Ferrokv => FerrokvCluster::start(
            dir,
            names,
            TOKEN,
            ClusterOptions {
                shards: Some(SHARDS),
                extra_args,
            },
        )
        .into_inner(),
    }
}

/// Runs `scenario` on a fresh fast-election cluster of each side in turn;
/// what each returned, by side.
fn on_each_side<T>(
    test: &str,
    mut scenario: impl FnMut(&mut ServerCluster) -> T,
) -> Vec<(ServerKind, T)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ferrokv-{test}-"))
        .tempdir()
        .expect("tempdir");
    sides()
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            eprintln!("=== {test} on {kind}");
            let mut cluster = start_cluster(kind, &dir.path().join(format!("{i}-{kind}")), true);
            let result = scenario(&mut cluster);
            for m in &mut cluster.members {
                assert!(
                    m.is_running(),
                    "{kind} {} exited during {test}:\n{}",
                    m.name(),
                    m.log_tail()
                );
            }
            (kind, result)
        })
        .collect()
}

fn others(member: usize) -> Vec<usize> {
    (0..NAMES.len()).filter(|&i| i != member).collect()
}

fn all_members() -> Vec<usize> {
    (0..NAMES.len()).collect()
}

// ------------------------------------------------- etcdctl side by side

/// The steps of one cluster's run: each output normalized (or reduced to
/// what is compared), and the invariants that did not hold.
struct Transcript<'a> {
    cluster: &'a ServerCluster,
    norm: Normalizer,
    steps: Vec<StepName>,
    outputs: Vec<Output>,
    violations: Vec<String>,
}

impl<'a> Transcript<'a> {
    fn new(cluster: &'a ServerCluster) -> Self {
        Transcript {
            cluster,
            norm: Normalizer::for_cluster(cluster),
            steps: Vec::new(),
            outputs: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Runs etcdctl through member `via`; the raw output.
    fn exec(&self, via: usize, args: &[&str], stdin: Option<&str>) -> Output {
        etcdctl(
            &self.cluster.members[via].endpoint(),
            args,
            stdin.map(str::as_bytes),
        )
    }

    /// Records `shown` as the output of step `text` through `via`.
    fn push(&mut self, via: usize, role: &str, text: &str, shown: Output) {
        let n = self.steps.len() + 1;
        let text = self.norm.normalize(text);
        self.steps.push(StepName {
            short: format!("{n}"),
            heading: format!(
                "step {n} via {} ({role}): etcdctl {text}",
                self.cluster.members[via].name()
            ),
        });
        self.outputs.push(shown);
    }

    /// Runs, records the normalized output, and returns the raw one.
    fn run(&mut self, via: usize, role: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.exec(via, args, stdin);
        let shown = self.norm.normalize_output(&out);
        self.push(via, role, &args.join(" "), shown);
        out
    }

    fn check(&mut self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            self.violations.push(what());
        }
    }
}

/// A table's rows as `a | b | c` lines, the header first and the others
/// sorted.
fn render_rows(rows: &[Vec<String>]) -> String {
    let mut lines: Vec<String> = rows.iter().map(|r| r.join(" | ")).collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

const MEMBER_LIST_HEADER: [&str; 6] = [
    "ID",
    "STATUS",
    "NAME",
    "PEER ADDRS",
    "CLIENT ADDRS",
    "IS LEARNER",
];
const ENDPOINT_STATUS_HEADER: [&str; 10] = [
    "ENDPOINT",
    "ID",
    "VERSION",
    "DB SIZE",
    "IS LEADER",
    "IS LEARNER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
    "ERRORS",
];
/// `endpoint status` columns that legitimately differ between two
/// clusters: the server's version string, bytes on disk, raft counters
/// (elections, internal entries), and which member won the election
/// (checked to be exactly one, then normalized).
const ENDPOINT_STATUS_NORMALIZED: [&str; 6] = [
    "VERSION",
    "DB SIZE",
    "IS LEADER",
    "RAFT TERM",
    "RAFT INDEX",
    "RAFT APPLIED INDEX",
];

/// `member list -w table`, `endpoint health --cluster` and `endpoint
/// status --cluster -w table` through `via`.
fn cluster_commands(t: &mut Transcript, via: usize, role: &str) {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();

    let out = t.exec(via, &["member", "list", "-w", "table"], None);
    let rows = table_rows(&t.norm.normalize(&out.stdout));
    t.check(
        rows.first().map(Vec::as_slice) == Some(&MEMBER_LIST_HEADER.map(String::from)[..]),
        || format!("member list via {via}: header {:?}", rows.first()),
    );
    let mut listed: Vec<String> = rows
        .iter()
        .skip(1)
        .filter_map(|r| r.get(2).cloned())
        .collect();
    listed.sort();
    t.check(listed == names, || {
        format!("member list via {via}: names {listed:?}, expected {names:?}")
    });
    for r in rows.iter().skip(1) {
        let name = r.get(2).cloned().unwrap_or_default();
        let want = vec![
            format!("<id:{name}>"),
            "started".to_string(),
            name.clone(),
            format!("<peer-url:{name}>"),
            format!("<client-url:{name}>"),
            "false".to_string(),
        ];
        t.check(*r == want, || {
            format!("member list via {via}: row {r:?}, expected {want:?}")
        });
    }
    let shown = Output {
        stdout: render_rows(&rows),
        stderr: t.norm.normalize(&out.stderr),
        code: out.code,
    };
    t.push(via, role, "member list -w table", shown);

    // etcdctl 3.4 prints the health lines on stderr, in answer order.
    let out = t.exec(via, &["endpoint", "health", "--cluster"], None);
    let health = sorted_lines(&t.norm.normalize(&format!("{}{}", out.stdout, out.stderr)));
    let want: String = NAMES
        .iter()
        .map(|n| {
            format!("<client-url:{n}> is healthy: successfully committed proposal: took = <took>\n")
        })
        .collect();
    t.check(out.code == 0 && health == want, || {
        format!(
            "endpoint health --cluster via {via}: exit {}, {health:?}",
            out.code
        )
    });
    let shown = Output {
        stdout: health,
        stderr: String::new(),
        code: out.code,
    };
    t.push(via, role, "endpoint health --cluster", shown);

    let out = t.exec(
        via,
        &["endpoint", "status", "--cluster", "-w", "table"],
        None,
    );
    let mut rows = table_rows(&t.norm.normalize(&out.stdout));
    let header: Vec<String> = rows.first().cloned().unwrap_or_default();
    t.check(header == ENDPOINT_STATUS_HEADER.map(String::from), || {
        format!("endpoint status via {via}: header {header:?}")
    });
    let col = |name: &str| header.iter().position(|h| h == name);
    let cell = |r: &Vec<String>, name: &str| col(name).and_then(|i| r.get(i).cloned());
    let leaders = rows
        .iter()
        .skip(1)
        .filter(|r| cell(r, "IS LEADER").as_deref() == Some("true"))
        .count();
    let learners = rows
        .iter()
        .skip(1)
        .filter(|r| cell(r, "IS LEARNER").as_deref() != Some("false"))
        .count();
    let mut terms: Vec<Option<String>> =
        rows.iter().skip(1).map(|r| cell(r, "RAFT TERM")).collect();
    terms.dedup();
    t.check(
        rows.len() == 4 && leaders == 1 && learners == 0 && terms.len() == 1,
        || {
            format!(
                "endpoint status --cluster via {via}: {} members, {leaders} leaders, \
                 {learners} learners, terms {terms:?}: {rows:?}",
                rows.len().saturating_sub(1)
            )
        },
    );
    for r in rows.iter_mut().skip(1) {
        for name in ENDPOINT_STATUS_NORMALIZED {
            if let Some(i) = col(name) {
                if let Some(c) = r.get_mut(i) {
                    *c = format!("<{name}>");
                }
            }
        }
    }
    let shown = Output {
        stdout: render_rows(&rows),
        stderr: t.norm.normalize(&out.stderr),
        code: out.code,
    };
    t.push(via, role, "endpoint status --cluster -w table", shown);
}

/// `remaining(Ns)` of `lease timetolive` replaced by `remaining(<s>)`,
/// and N (a countdown that may tick between two runs).
fn normalize_remaining(text: &str) -> (String, Option<u64>) {
    let Some(start) = text.find("remaining(") else {
        return (text.to_string(), None);
    };
    let after = &text[start + "remaining(".len()..];
    let Some(end) = after.find("s)") else {
        return (text.to_string(), None);
    };
    let secs = after[..end].parse().ok();
    (
        format!("{}remaining(<s>){}", &text[..start], &after[end + 2..]),
        secs,
    )
}

/// The whole side-by-side scenario on one cluster.
fn answer_as_etcd(cluster: &ServerCluster) -> Transcript<'_> {
    let mut t = Transcript::new(cluster);
    let (leader, _) = wait_leader(cluster, &all_members(), LEADER_WAIT_MAX);
    let followers = others(leader);
    let (f1, f2) = (followers[0], followers[1]);
    let role = |m: usize| if m == leader { "leader" } else { "follower" };

    for via in all_members() {
        cluster_commands(&mut t, via, role(via));
    }

    // Put through member 1; reads through members 2 and 3. The
    // linearizable reads come first: once one answered, the member has
    // applied the put, so the serializable reads after it are
    // deterministic.
    t.run(0, role(0), &["put", "foo", "bar"], None);
    let mut foo_revision = None;
    for via in [1, 2] {
        let out = t.run(via, role(via), &["get", "foo", "-w", "json"], None);
        foo_revision = json_u64_field(&out.stdout, "mod_revision");
    }
    for via in [1, 2] {
        t.run(
            via,
            role(via),
            &["get", "foo", "--consistency=s", "-w", "json"],
            None,
        );
    }
    let foo_revision = foo_revision.unwrap_or(0);

    // Kubernetes' update: compare mod_revision, then put, else get;
    // through a follower, once taken and once (now stale) not.
    let txn = format!("mod(\"foo\") = \"{foo_revision}\"\n\nput foo baz\n\nget foo\n\n");
    for _ in 0..2 {
        let out = t.exec(f1, &["txn", "-w", "json"], Some(&txn));
        let shown = t.norm.normalize_output(&out);
        t.push(
            f1,
            role(f1),
            &format!("txn -w json <<< mod(\"foo\") = \"{foo_revision}\" / put foo baz / get foo"),
            shown,
        );
    }
    t.run(f2, role(f2), &["get", "foo"], None);

    // A prefix delete whose keys lie on several shards (ferrokv).
    for key in ["dir/a", "dir/b", "dir/c", "dir/d"] {
        t.run(0, role(0), &["put", key, "x"], None);
    }
    t.run(f2, role(f2), &["del", "--prefix", "dir/"], None);
    t.run(f1, role(f1), &["get", "--prefix", "dir/"], None);

    // A lease granted through a follower, a key on it, timetolive through
    // another member, revoked through a third.
    let out = t.exec(f1, &["lease", "grant", "60"], None);
    let lease = out
        .stdout
        .split_whitespace()
        .nth(1)
        .filter(|_| out.stdout.starts_with("lease "))
        .map(str::to_string);
    t.check(lease.is_some(), || format!("lease grant 60: {out:?}"));
    let lease = lease.unwrap_or_else(|| "0".to_string());
    if let Ok(decimal) = u64::from_str_radix(&lease, 16) {
        t.norm.add_literal(&lease, "<lease>");
        t.norm.add_literal(&decimal.to_string(), "<lease>");
    }
    let shown = t.norm.normalize_output(&out);
    t.push(f1, role(f1), "lease grant 60", shown);
    t.run(
        0,
        role(0),
        &["put", &format!("--lease={lease}"), "leased", "v"],
        None,
    );
    let out = t.exec(f2, &["lease", "timetolive", "--keys", &lease], None);
    let (stdout, remaining) = normalize_remaining(&t.norm.normalize(&out.stdout));
    t.check(remaining.is_some_and(|s| (50..=60).contains(&s)), || {
        format!("lease timetolive --keys: remaining {remaining:?} not in 50..=60: {out:?}")
    });
    let shown = Output {
        stdout,
        stderr: t.norm.normalize(&out.stderr),
        code: out.code,
    };
    t.push(f2, role(f2), "lease timetolive --keys <lease>", shown);
    t.run(leader, role(leader), &["lease", "revoke", &lease], None);
    t.run(f1, role(f1), &["get", "leased"], None);
    t.run(f2, role(f2), &["lease", "timetolive", &lease], None);

    // A watch on a follower sees puts made through the two other members.
    let mut watch = Some(Background::start(
        &cluster.members[f1].endpoint(),
        &["watch", "--prefix", "watched/"],
    ));
    thread::sleep(WATCH_SETTLE);
    t.run(leader, role(leader), &["put", "watched/a", "1"], None);
    t.run(f2, role(f2), &["put", "watched/b", "2"], None);
    let out = watch
        .take()
        .expect("watch")
        .stop(WATCH_QUIET, WATCH_STOP_TIMEOUT);
    t.check(
        out.stdout == "PUT\nwatched/a\n1\nPUT\nwatched/b\n2\n",
        || format!("watch --prefix watched/ on a follower: {out:?}"),
    );
    let shown = t.norm.normalize_output(&out);
    t.push(
        f1,
        role(f1),
        "watch --prefix watched/ (background, stopped)",
        shown,
    );

    // Compaction through a follower; reads below it fail on every member.
    let out = t.run(leader, role(leader), &["get", "foo", "-w", "json"], None);
    let revision = json_u64_field(&out.stdout, "revision").unwrap_or(0);
    t.run(f2, role(f2), &["compaction", &revision.to_string()], None);
    let below = (revision - 1).to_string();
    for via in all_members() {
        t.run(
            via,
            role(via),
            &["get", "foo", &format!("--rev={below}")],
            None,
        );
    }
    t.run(
        f1,
        role(f1),
        &["get", "foo", &format!("--rev={revision}")],
        None,
    );
    t
}

#[test]
fn three_members_answer_as_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-cluster-answers-")
        .tempdir()
        .expect("tempdir");
    let [reference_kind, candidate_kind] = sides();
    let reference = start_cluster(reference_kind, &dir.path().join("reference"), false);
    let ref_t = answer_as_etcd(&reference);
    let (ref_steps, ref_out, ref_violations) = (ref_t.steps, ref_t.outputs, ref_t.violations);
    drop(reference);
    if std::env::var_os("FERROKV_COMPAT_SHOW").is_some() {
        for (step, out) in ref_steps.iter().zip(&ref_out) {
            eprintln!(
                "$ {}    [exit {}]\n{}{}",
                step.heading, out.code, out.stdout, out.stderr
            );
        }
    }
    assert!(
        ref_violations.is_empty(),
        "the test is wrong: etcd itself does not hold: {ref_violations:#?}"
    );

    let candidate = start_cluster(candidate_kind, &dir.path().join("candidate"), false);
    let cand_t = answer_as_etcd(&candidate);
    let (cand_out, cand_violations) = (cand_t.outputs, cand_t.violations);
    let mut report = String::new();
    if !cand_violations.is_empty() {
        report.push_str(&format!(
            "{candidate_kind}: invariants that etcd holds did not: {cand_violations:#?}\n"
        ));
    }
    if cand_out.len() != ref_out.len() {
        report.push_str(&format!(
            "{candidate_kind} ran {} steps, etcd {}\n",
            cand_out.len(),
            ref_out.len()
        ));
    } else if let Err(diff) = compare_steps(
        "three-member cluster",
        &ref_steps,
        (&reference_kind.to_string(), &ref_out),
        (&format!("{candidate_kind} (candidate)"), &cand_out),
    ) {
        report.push_str(&diff);
    }
    if !report.is_empty() {
        panic!("{report}\n{}", candidate.log_tails());
    }
    eprintln!(
        "{} steps identical on {reference_kind} and {candidate_kind}",
        ref_out.len()
    );
}

// ------------------------------------------------------------------ auth

/// root (with the root role), role app (readwrite under /app/) and alice
/// holding it: what the auth scenarios set up before `auth enable`.
const AUTH_SETUP: [&[&str]; 7] = [
    &["user", "add", "root", "--new-user-password=rootpw"],
    &["role", "add", "root"],
    &["user", "grant-role", "root", "root"],
    &["role", "add", "app"],
    &[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "/app/",
        "--prefix",
    ],
    &["user", "add", "alice", "--new-user-password=alicepw"],
    &["user", "grant-role", "alice", "app"],
];

/// Auth on a cluster: every management call and every check through a
/// different member than the last, so that what one member acknowledged
/// holds for the very next request on another (a follower forwards
/// writes with the auth revision it checked them at, and its linearizable
/// reads wait for the leader's auth revision); then, after every member
/// was killed and restarted, the same answers (the auth store is shard
/// 0's log and snapshot). Steps and outputs, and the invariants that did
/// not hold.
fn auth_as_etcd(cluster: &mut ServerCluster) -> (Vec<StepName>, Vec<Output>, Vec<String>) {
    let alice = ["--user", "alice:alicepw"];
    let root = ["--user", "root:rootpw"];
    let with = |who: &[&str], args: &[&str]| -> Vec<String> {
        who.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let run = |t: &mut Transcript, via: usize, role: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        t.run(via, role, &args, None);
    };
    let (leader, _) = wait_leader(cluster, &all_members(), LEADER_WAIT_MAX);
    let (mut steps, mut outputs, mut violations) = (Vec::new(), Vec::new(), Vec::new());
    {
        let mut t = Transcript::new(cluster);
        let role = |m: usize| if m == leader { "leader" } else { "follower" };
        let then: [&[&str]; 2] = [&["auth", "enable"], &["role", "get", "app"]];
        for (i, args) in AUTH_SETUP.iter().chain(then.iter()).enumerate() {
            let via = i % NAMES.len();
            let who: &[&str] = if i >= 8 { &root } else { &[] };
            run(&mut t, via, role(via), with(who, args));
        }
        for via in all_members() {
            run(&mut t, via, role(via), with(&[], &["get", "/app/x"]));
            run(
                &mut t,
                via,
                role(via),
                with(&alice, &["put", "/app/x", &format!("v{via}")]),
            );
            run(
                &mut t,
                via,
                role(via),
                with(&alice, &["put", "/other", "x"]),
            );
        }
        // A revoke through one member holds on the next request through
        // each other one, reads and writes alike; so does the grant back.
        for via in all_members() {
            let next = (via + 1) % NAMES.len();
            let revoke = ["role", "revoke-permission", "app", "/app/", "--prefix"];
            run(&mut t, via, role(via), with(&root, &revoke));
            run(&mut t, next, role(next), with(&alice, &["get", "/app/x"]));
            run(
                &mut t,
                next,
                role(next),
                with(&alice, &["put", "/app/y", "1"]),
            );
            let grant = [
                "role",
                "grant-permission",
                "app",
                "readwrite",
                "/app/",
                "--prefix",
            ];
            run(&mut t, next, role(next), with(&root, &grant));
            let after = (next + 1) % NAMES.len();
            run(&mut t, after, role(after), with(&alice, &["get", "/app/x"]));
        }
        steps.append(&mut t.steps);
        outputs.append(&mut t.outputs);
        violations.append(&mut t.violations);
    }
    cluster.kill_9_all();
    cluster.start_again_all();
    let (leader, _) = wait_leader(cluster, &all_members(), LEADER_WAIT_MAX);
    let mut t = Transcript::new(cluster);
    let role = |m: usize| if m == leader { "leader" } else { "follower" };
    for via in all_members() {
        run(&mut t, via, role(via), with(&[], &["get", "/app/x"]));
        run(&mut t, via, role(via), with(&alice, &["get", "/app/x"]));
        run(
            &mut t,
            via,
            role(via),
            with(&alice, &["put", "/other", "x"]),
        );
        run(&mut t, via, role(via), with(&root, &["user", "list"]));
    }
    run(
        &mut t,
        leader,
        role(leader),
        with(&root, &["auth", "disable"]),
    );
    for via in all_members() {
        run(&mut t, via, role(via), with(&[], &["get", "/app/x"]));
    }
    for (n, mut step) in t.steps.into_iter().enumerate() {
        step.heading = format!("after the restart: {}", step.heading);
        step.short = format!("{}", steps.len() + n + 1);
        steps.push(step);
    }
    outputs.append(&mut t.outputs);
    violations.append(&mut t.violations);
    (steps, outputs, violations)
}

#[test]
fn three_members_enforce_auth_as_etcd() {
    let runs = on_each_side("auth", auth_as_etcd);
    let [(ref_kind, (ref_steps, ref_out, ref_violations)), (cand_kind, (_, cand_out, cand_violations))] =
        &runs[..]
    else {
        panic!("two sides expected");
    };
    assert!(
        ref_violations.is_empty(),
        "the test is wrong: etcd itself does not hold: {ref_violations:#?}"
    );
    assert!(
        cand_violations.is_empty(),
        "{cand_kind}: invariants that etcd holds did not: {cand_violations:#?}"
    );
    assert_eq!(cand_out.len(), ref_out.len(), "steps run");
    if let Err(diff) = compare_steps(
        "three-member auth",
        ref_steps,
        (&ref_kind.to_string(), ref_out),
        (&format!("{cand_kind} (candidate)"), cand_out),
    ) {
        panic!("{diff}");
    }
    eprintln!(
        "{} steps identical on {ref_kind} and {cand_kind}",
        ref_out.len()
    );
}

/// Writers per member in [`auth_changes_hold_under_concurrent_writes`].
const AUTH_WRITERS_PER_MEMBER: usize = 2;
/// How long the writers run before the revoke, between it and the grant
/// back, and after that.
const AUTH_PHASE: Duration = Duration::from_millis(700);
/// Bound on one writer's puts (the phases end it well before).
const AUTH_PUTS_PER_WRITER_MAX: usize = 5_000;

/// One writer's put: when it was called and returned, and how it ended
/// (Ok(true) acknowledged, Ok(false) permission denied, Err otherwise).
struct AuthPut {
    key: String,
    call: Instant,
    ret: Instant,
    outcome: Result<bool, String>,
}

async fn authenticate(endpoint: &str, name: &str, password: &str) -> String {
    let channel = ferrokv_tests::grpc::connect_lazy(endpoint);
    let r: pb::AuthenticateResponse = ferrokv_tests::grpc::unary(
        &channel,
        "/etcdserverpb.Auth/Authenticate",
        pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        },
    )
    .await;
    r.token
}

/// Puts of fresh keys under /app/ as the token's user until `stop`.
async fn auth_writer(
    endpoint: String,
    token: String,
    w: usize,
    stop: Arc<AtomicBool>,
) -> Vec<AuthPut> {
    let channel = ferrokv_tests::grpc::connect_lazy(&endpoint);
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && i < AUTH_PUTS_PER_WRITER_MAX {
        let key = format!("/app/w{w}-{i}");
        i += 1;
        let call = Instant::now();
        let r: Option<Result<pb::PutResponse, tonic::Status>> = ferrokv_tests::grpc::try_unary_as(
            &channel,
            "/etcdserverpb.KV/Put",
            pb::PutRequest {
                key: key.clone().into(),
                value: "v".into(),
                ..Default::default()
            },
            Some(&token),
            Duration::from_secs(5),
        )
        .await;
        let outcome = match r {
            Some(Ok(_)) => Ok(true),
            Some(Err(s)) if s.message() == "etcdserver: permission denied" => Ok(false),
            Some(Err(s)) => Err(s.message().to_string()),
            None => Err("no answer".into()),
        };
        out.push(AuthPut {
            key,
            call,
            ret: Instant::now(),
            outcome,
        });
    }
    out
}

/// A user's writes through every member while root revokes the user's
/// permission through one member and grants it back through another.
/// Checked: no write invoked after the revoke was acknowledged and
/// answered before the grant back was invoked succeeded; every
/// acknowledged write is there and no refused one is (a root read at the
/// end); and each phase saw its answer at least once (else the check
/// says nothing). The problems found.
fn auth_revoke_under_writes(c: &mut ServerCluster) -> Vec<String> {
    let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    wait_leader(c, &all_members(), LEADER_WAIT_MAX);
    for (i, args) in AUTH_SETUP.iter().enumerate() {
        let out = etcdctl(&endpoints[i % endpoints.len()], args, None);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }
    let out = etcdctl(&endpoints[0], &["auth", "enable"], None);
    assert_eq!(out.code, 0, "auth enable: {out:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..endpoints.len() * AUTH_WRITERS_PER_MEMBER)
        .map(|w| {
            let endpoint = endpoints[w % endpoints.len()].clone();
            let token = rt.block_on(authenticate(&endpoint, "alice", "alicepw"));
            rt.spawn(auth_writer(endpoint, token, w, stop.clone()))
        })
        .collect();
    let root = |via: usize, args: &[&str]| {
        let mut all = vec!["--user", "root:rootpw"];
        all.extend_from_slice(args);
        let out = etcdctl(&endpoints[via], &all, None);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    };
    thread::sleep(AUTH_PHASE);
    root(
        1,
        &["role", "revoke-permission", "app", "/app/", "--prefix"],
    );
    let revoked = Instant::now();
    thread::sleep(AUTH_PHASE);
    let granting = Instant::now();
    root(
        2,
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
    );
    let granted = Instant::now();
    thread::sleep(AUTH_PHASE);
    stop.store(true, Ordering::Relaxed);
    let puts: Vec<AuthPut> = writers
        .into_iter()
        .flat_map(|w| rt.block_on(w).expect("writer"))
        .collect();
    let mut problems = Vec::new();
    let during = |p: &AuthPut| p.call > revoked && p.ret < granting;
    for p in puts.iter().filter(|p| during(p) && p.outcome == Ok(true)) {
        problems.push(format!(
            "{} was acknowledged, invoked {:?} after the revoke's acknowledgment",
            p.key,
            p.call - revoked
        ));
    }
    let seen = |f: &dyn Fn(&AuthPut) -> bool| puts.iter().any(f);
    if !seen(&|p| p.ret < revoked && p.outcome == Ok(true)) {
        problems.push("no write acknowledged before the revoke".into());
    }
    if !seen(&|p| during(p) && p.outcome == Ok(false)) {
        problems.push("no write refused between the revoke and the grant".into());
    }
    if !seen(&|p| p.call > granted && p.outcome == Ok(true)) {
        problems.push("no write acknowledged after the grant".into());
    }
    let out = etcdctl(
        &endpoints[0],
        &[
            "--user",
            "root:rootpw",
            "get",
            "/app/",
            "--prefix",
            "--keys-only",
        ],
        None,
    );
    let present: std::collections::HashSet<&str> =
        out.stdout.lines().filter(|l| !l.is_empty()).collect();
    for p in &puts {
        match p.outcome {
            Ok(true) if !present.contains(p.key.as_str()) => {
                problems.push(format!("acknowledged {} is missing", p.key))
            }
            Ok(false) if present.contains(p.key.as_str()) => {
                problems.push(format!("refused {} was written", p.key))
            }
            _ => {}
        }
    }
    let count = |f: &dyn Fn(&AuthPut) -> bool| puts.iter().filter(|p| f(p)).count();
    eprintln!(
        "{}: {} puts ({} acknowledged, {} refused, {} other), {} problem(s)",
        c.kind(),
        puts.len(),
        count(&|p| p.outcome == Ok(true)),
        count(&|p| p.outcome == Ok(false)),
        count(&|p| p.outcome.is_err()),
        problems.len()
    );
    problems
}

#[test]
fn auth_changes_hold_under_concurrent_writes() {
    let runs = on_each_side("auth-load", auth_revoke_under_writes);
    for (kind, problems) in &runs {
        assert!(problems.is_empty(), "{kind}: {problems:#?}");
    }
}

// ----------------------------------------------------------------- faults

#[test]
fn writes_survive_killing_the_leader() {
    let results = on_each_side("kill-leader", |c| {
        let kind = c.kind();
        let (leader, before) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let load = Load::start(c);
        load.wait_acked(
            c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the kill",
        );
        c.members[leader].kill_9();
        let killed = Instant::now();
        let acked_at_kill = load.acked();
        let first_write = load.first_write_after(c, killed, &others(leader));
        let (new_leader, after) = wait_leader(c, &others(leader), LEADER_WAIT_MAX);
        let elected = killed.elapsed();
        assert!(
            new_leader != leader && after.raft_term > before.raft_term,
            "{kind}: after killing {} (term {}), leader {} in term {}",
            c.members[leader].name(),
            before.raft_term,
            c.members[new_leader].name(),
            after.raft_term
        );
        eprintln!(
            "{kind}: leader {} killed after {acked_at_kill} acknowledged puts; {} leads \
             (term {}), seen {elected:?} after the kill; first write acknowledged {first_write:?} \
             after the kill",
            c.members[leader].name(),
            c.members[new_leader].name(),
            after.raft_term
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "with two members",
        );
        c.members[leader].start_again();
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the restart",
        );
        let acks = load.finish();
        check_acked_on_every_member(c, &acks);
        first_write
    });
    for (kind, first_write) in results {
        eprintln!("kill -9 of the leader to the first acknowledged write: {kind} {first_write:?}");
    }
}

#[test]
fn a_follower_restart_catches_up() {
    on_each_side("follower-restart", |c| {
        let kind = c.kind();
        let (leader, _) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let follower = others(leader)[0];
        let mut acks = vec![put_acked(c, follower, "load/before/0")];
        c.members[follower].kill_9();
        let alive = others(follower);
        for i in 0..WRITES_WHILE_DOWN {
            acks.push(put_acked(c, alive[i % 2], &format!("load/down/{i:03}")));
        }
        c.members[follower].start_again();
        let restarted = Instant::now();
        let name = c.members[follower].name().to_string();
        let endpoint = c.members[follower].endpoint();
        let want = format!("load/down/{:03}", WRITES_WHILE_DOWN - 1);
        let served = poll(CATCH_UP_MAX, || {
            let out = probe(
                &endpoint,
                &["get", &want, "--consistency=s", "-w", "fields"],
            );
            (out.code == 0 && out.stdout.contains(&format!("\"Key\" : \"{want}\""))).then_some(())
        });
        assert!(
            served.is_some(),
            "{kind} {name}: restarted follower did not serve {want} (serializable) within \
             {CATCH_UP_MAX:?}\n{}",
            c.log_tails()
        );
        eprintln!(
            "{kind}: follower {name} restarted serves the {WRITES_WHILE_DOWN} writes made \
             while it was down {:?} after its restart",
            restarted.elapsed()
        );
        check_acked_on_every_member(c, &acks);
    });
}

/// `--snapshot-count` for the snapshot catch-up test: small, so that a
/// follower's log is compacted well past what a member that was down has.
const SNAPSHOT_COUNT_SMALL: usize = 20;
/// Writes while that member is down: several snapshots' worth.
const WRITES_PAST_SNAPSHOTS: usize = 120;

/// A member down while the others wrote and compacted their logs (every
/// `--snapshot-count` entries) comes back after leadership moved to a
/// member whose log no longer has what it lacks: it catches up (ferrokv:
/// by the shard snapshot files the new leader sends) and serves everything.
#[test]
fn a_member_behind_the_compacted_log_catches_up() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-snapshot-catch-up-")
        .tempdir()
        .expect("tempdir");
    for (i, kind) in sides().into_iter().enumerate() {
        eprintln!("=== snapshot catch-up on {kind}");
        let extra = vec![
            format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
            format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
            format!("--snapshot-count={SNAPSHOT_COUNT_SMALL}"),
        ];
        let mut c = start_cluster_with(kind, &dir.path().join(format!("{i}-{kind}")), extra);
        let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let down = others(leader)[0];
        let next = others(leader)[1];
        let mut acks = vec![put_acked(&c, down, "load/before/0")];
        c.members[down].kill_9();
        for i in 0..WRITES_PAST_SNAPSHOTS {
            acks.push(put_acked(&c, leader, &format!("load/past/{i:03}")));
        }
        // Leadership to the member that compacted its log as a follower.
        let alive = [leader, next];
        let next_id = statuses(&c, &[next])
            .first()
            .map(|s| s.member_id)
            .expect("status of the next leader");
        let endpoints = alive
            .iter()
            .map(|&m| c.members[m].endpoint())
            .collect::<Vec<_>>()
            .join(",");
        let moved = probe(&endpoints, &["move-leader", &format!("{next_id:x}")]);
        assert_eq!(
            moved.code,
            0,
            "{kind}: move-leader: {moved:?}\n{}",
            c.log_tails()
        );
        let (now, _) = wait_leader(&c, &alive, LEADER_WAIT_MAX);
        assert_eq!(now, next, "{kind}: leadership did not move");
        for i in 0..5 {
            acks.push(put_acked(&c, next, &format!("load/after/{i}")));
        }
        c.members[down].start_again();
        let endpoint = c.members[down].endpoint();
        let want = "load/after/4";
        let served = poll(CATCH_UP_MAX, || {
            let out = probe(&endpoint, &["get", want, "--consistency=s", "-w", "fields"]);
            (out.code == 0 && out.stdout.contains(&format!("\"Key\" : \"{want}\""))).then_some(())
        });
        assert!(
            served.is_some(),
            "{kind}: the member that was down did not serve {want} within {CATCH_UP_MAX:?}\n{}",
            c.log_tails()
        );
        if kind == ServerKind::Ferrokv && !candidate_is_etcd() {
            // The path under test: the log it needed was gone.
            let log = c.members[down].log_tail();
            assert!(
                log.contains("installed the leader's snapshot"),
                "ferrokv caught up without a snapshot:\n{log}"
            );
        }
        check_acked_on_every_member(&c, &acks);
        for m in &mut c.members {
            assert!(
                m.is_running(),
                "{kind} {} exited:\n{}",
                m.name(),
                m.log_tail()
            );
        }
    }
}

#[test]
fn all_members_killed_and_restarted_keep_every_acknowledged_write() {
    on_each_side("kill-all", |c| {
        let kind = c.kind();
        wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let load = Load::start(c);
        load.wait_acked(
            c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the kill",
        );
        c.kill_9_all();
        let killed = Instant::now();
        let acked_at_kill = load.acked();
        c.start_again_all();
        let restarted = killed.elapsed();
        let first_write = load.first_write_after(c, killed, &all_members());
        let (leader, status) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        eprintln!(
            "{kind}: all members killed after {acked_at_kill} acknowledged puts, healthy again \
             {restarted:?} after the kill, {} leads (term {}); first write acknowledged \
             {first_write:?} after the kill",
            c.members[leader].name(),
            status.raft_term
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the restart",
        );
        let acks = load.finish();
        check_acked_on_every_member(c, &acks);
    });
}

#[test]
fn sigstop_leader_past_election_timeout() {
    let stopped_for = Duration::from_millis(3 * ELECTION_TIMEOUT_MS);
    let results = on_each_side("sigstop-leader", |c| {
        let kind = c.kind();
        let (leader, before) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let name = c.members[leader].name().to_string();
        let load = Load::start(c);
        load.wait_acked(
            c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before SIGSTOP",
        );
        c.members[leader].sigstop();
        let stopped = Instant::now();
        let alive = others(leader);
        let first_write = load.first_write_after(c, stopped, &alive);
        let (new_leader, after) = wait_leader(c, &alive, LEADER_WAIT_MAX);
        assert!(
            new_leader != leader && after.raft_term > before.raft_term,
            "{kind}: with {name} stopped (term {}), leader {} in term {}",
            before.raft_term,
            c.members[new_leader].name(),
            after.raft_term
        );
        eprintln!(
            "{kind}: leader {name} stopped; first write acknowledged {first_write:?} after \
             SIGSTOP; {} leads (term {})",
            c.members[new_leader].name(),
            after.raft_term
        );
        let mut acks: Vec<Ack> = (0..WRITES_WHILE_DOWN)
            .map(|i| put_acked(c, alive[i % 2], &format!("{LOAD_PREFIX}stopped/{i:03}")))
            .collect();
        if let Some(rest) = stopped_for.checked_sub(stopped.elapsed()) {
            thread::sleep(rest);
        }
        for m in &mut c.members {
            assert!(
                m.is_running(),
                "{kind} {} exited:\n{}",
                m.name(),
                m.log_tail()
            );
        }
        c.members[leader].sigcont();
        let resumed = Instant::now();

        // The old leader follows the new one (in its term or a later one).
        let mut last = Vec::new();
        let follows = poll(CATCH_UP_MAX, || {
            let st = statuses(c, &[leader]);
            last = st.clone();
            st.into_iter().find(|s| {
                s.leader != 0 && s.leader != s.member_id && s.raft_term >= after.raft_term
            })
        });
        let follows = follows.unwrap_or_else(|| {
            panic!(
                "{kind} {name}: after SIGCONT not a follower within {CATCH_UP_MAX:?}; last \
                 status {last:?}\n{}",
                c.log_tails()
            )
        });
        eprintln!(
            "{kind}: {name} resumed follows {:x} in term {} {:?} after SIGCONT",
            follows.leader,
            follows.raft_term,
            resumed.elapsed()
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after SIGCONT",
        );
        acks.extend(load.finish());
        check_acked_on_every_member(c, &acks);
        first_write
    });
    for (kind, first_write) in results {
        eprintln!("SIGSTOP of the leader to the first acknowledged write: {kind} {first_write:?}");
    }
}

/// Election timeout of [`a_leader_cut_off_answers_nothing_from_its_own_state`]:
/// long, so that the leader still believes it leads (check-quorum steps it
/// down only after one to two of these) while the requests run.
const CUT_OFF_ELECTION_TIMEOUT_MS: u64 = 6000;
/// etcdctl's bound on each request to the cut-off leader.
const CUT_OFF_COMMAND_TIMEOUT: &str = "--command-timeout=500ms";

/// A leader whose followers are stopped answers no request that needs the
/// latest state without a quorum, also when nothing is written: a txn whose
/// chosen branch only reads, a delete of a key that is not there, a revoke
/// of a lease that does not exist. etcd sends each through raft, so each
/// waits for a quorum that cannot answer; answered from the leader's own
/// state, a leader paused past an election would have served what another
/// leader had already changed (a stale read, seen once under SIGSTOP by the
/// robustness suite). After SIGCONT the cluster serves them again.
#[test]
fn a_leader_cut_off_answers_nothing_from_its_own_state() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-cut-off-")
        .tempdir()
        .expect("tempdir");
    let key = "cut-off/k";
    let txn = format!("value(\"{key}\") = \"other\"\n\n\nget {key}\n\n");
    // The txn last: etcdctl's txn ignores --command-timeout, so etcd holds
    // it until its own request timeout (5 s + two election timeouts), and
    // the leader steps down meanwhile.
    let requests: [(&str, Vec<&str>, Option<&str>); 3] = [
        (
            "delete of a missing key",
            vec!["del", "cut-off/absent"],
            None,
        ),
        (
            "revoke of a missing lease",
            vec!["lease", "revoke", "1234abcd"],
            None,
        ),
        ("txn reading only", vec!["txn"], Some(&txn)),
    ];
    for (i, kind) in sides().into_iter().enumerate() {
        eprintln!("=== a cut-off leader on {kind}");
        let extra_args = vec![
            "--heartbeat-interval=100".to_string(),
            format!("--election-timeout={CUT_OFF_ELECTION_TIMEOUT_MS}"),
        ];
        let c = start_cluster_with(kind, &dir.path().join(format!("{i}-{kind}")), extra_args);
        let (leader, _) = wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let name = c.members[leader].name().to_string();
        ctl(&c, leader, &["put", key, "v1"]);
        // Each request once with the quorum there: its answer (the revoke's
        // is "lease not found").
        let answers: Vec<Output> = requests
            .iter()
            .map(|(_, args, stdin)| {
                etcdctl(
                    &c.members[leader].endpoint(),
                    args,
                    stdin.map(str::as_bytes),
                )
            })
            .collect();
        let followers = others(leader);
        for &f in &followers {
            c.members[f].sigstop();
        }
        let stopped = Instant::now();
        for ((what, args, stdin), answer) in requests.iter().zip(&answers) {
            // Had the leader stepped down before a request ran, the request
            // would have failed for that reason alone.
            let st = statuses(&c, &[leader]);
            assert!(
                st.iter().any(|s| s.leader == s.member_id),
                "{kind} {name}: no longer leads before the {what} ({st:?}); the test would \
                 prove nothing\n{}",
                c.log_tails()
            );
            let mut all = vec![CUT_OFF_COMMAND_TIMEOUT];
            all.extend(args.iter().copied());
            let out = etcdctl(
                &c.members[leader].endpoint(),
                &all,
                stdin.map(str::as_bytes),
            );
            assert!(
                out.code != 0 && out.stderr.lines().last() != answer.stderr.lines().last(),
                "{kind} {name}: with both followers stopped, a {what} was answered: {out:?} \
                 (with a quorum: {answer:?})\n{}",
                c.log_tails()
            );
            eprintln!(
                "{kind}: cut-off leader, {what}: {} ({:?} after SIGSTOP)",
                out.stderr.lines().last().unwrap_or(""),
                stopped.elapsed()
            );
        }
        for &f in &followers {
            c.members[f].sigcont();
        }
        wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let got = poll(CATCH_UP_MAX, || {
            let out = etcdctl(&c.members[leader].endpoint(), &["get", key], None);
            (out.code == 0).then_some(out.stdout)
        });
        assert_eq!(
            got.as_deref(),
            Some(format!("{key}\nv1\n").as_str()),
            "{kind} {name}: after SIGCONT\n{}",
            c.log_tails()
        );
    }
}

/// Five members, as large control planes run them: with the leader and a
/// follower killed -9 under a write load, the other three elect a leader
/// and take writes; both come back and every acknowledged write is on all
/// five, with `hashkv` agreeing.
#[test]
fn five_members_survive_two_failures() {
    const FIVE: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-five-")
        .tempdir()
        .expect("tempdir");
    for (i, kind) in sides().into_iter().enumerate() {
        eprintln!("=== five members on {kind}");
        let extra_args = vec![
            format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
            format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
        ];
        let path = dir.path().join(format!("{i}-{kind}"));
        let mut c = start_members(kind, &path, &FIVE, extra_args);
        let all: Vec<usize> = (0..FIVE.len()).collect();
        let (leader, _) = wait_leader(&c, &all, LEADER_WAIT_MAX);
        let follower = (leader + 1) % FIVE.len();
        let load = Load::start(&c);
        load.wait_acked(
            &c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the kills",
        );
        c.members[leader].kill_9();
        c.members[follower].kill_9();
        let killed = Instant::now();
        let rest: Vec<usize> = all
            .iter()
            .copied()
            .filter(|m| *m != leader && *m != follower)
            .collect();
        let first_write = load.first_write_after(&c, killed, &rest);
        wait_leader(&c, &rest, LEADER_WAIT_MAX);
        eprintln!("{kind}: five members, two killed: first write acknowledged {first_write:?} after the kills");
        load.wait_acked(
            &c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "with three members",
        );
        c.members[leader].start_again();
        c.members[follower].start_again();
        load.wait_acked(
            &c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the restarts",
        );
        let acks = load.finish();
        check_acked_on_every_member(&c, &acks);
        for m in &mut c.members {
            assert!(
                m.is_running(),
                "{kind} {} exited:\n{}",
                m.name(),
                m.log_tail()
            );
        }
    }
}

/// How long members get to refuse an outsider.
const OUTSIDER_WAIT_MAX: Duration = Duration::from_secs(15);

/// A member started with another member list (so another cluster id) than
/// the running members is refused, never joined: the members go on as
/// three, and (ferrokv) each logs etcd's `cluster ID mismatch`.
#[test]
fn a_member_with_another_member_list_is_refused() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-outsider-")
        .tempdir()
        .expect("tempdir");
    for (i, kind) in sides().into_iter().enumerate() {
        eprintln!("=== outsider on {kind}");
        let mut c = start_cluster(kind, &dir.path().join(format!("{i}-{kind}")), true);
        wait_leader(&c, &all_members(), LEADER_WAIT_MAX);
        let mut outsider = c.spawn_outsider("m4", None);
        if kind == ServerKind::Ferrokv && !candidate_is_etcd() {
            let refused = poll(OUTSIDER_WAIT_MAX, || {
                c.members
                    .iter()
                    .all(|m| m.log_tail().contains("cluster ID mismatch"))
                    .then_some(())
            });
            assert!(
                refused.is_some(),
                "not every member refused the outsider within {OUTSIDER_WAIT_MAX:?}\n{}\n--- outsider:\n{}",
                c.log_tails(),
                outsider.log_tail()
            );
        }
        let members = ctl(&c, 0, &["member", "list"]);
        assert_eq!(members.lines().count(), 3, "{kind}: {members}");
        put_acked(&c, 1, "load/after-outsider");
        for m in &mut c.members {
            assert!(
                m.is_running(),
                "{kind} {} exited:\n{}",
                m.name(),
                m.log_tail()
            );
        }
        outsider.kill_9();
    }
}
