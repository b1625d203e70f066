//! ferroctl's `lock` and `elect` against etcdctl's on the same names, on a
//! real etcd (the recipes need leases, which ferrokv does not serve yet;
//! pointing these tests at `FerrokvProcess` is all that is needed then):
//!
//! - a lock held by one client excludes the other until released, in both
//!   directions (etcdctl holds / ferroctl waits, and the reverse);
//! - `ferroctl elect -l` observes the leader etcdctl elected, and a
//!   `ferroctl elect` campaign is not elected while that leader holds.
//!
//! Every wait is bounded; nothing asserts how long anything took.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::etcdctl::Background;
use ferrokv_tests::proxy::{Fault, Proxy};
use ferrokv_tests::server::ferroctl_bin;
use ferrokv_tests::{etcdctl, etcdctl_bin, EtcdProcess};

/// Upper bound on any one wait for a state in these tests.
const STATE_WAIT_MAX: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// A background client is stopped once it printed nothing for this long.
const QUIET: Duration = Duration::from_millis(700);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STATE_WAIT_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Keys under `prefix` (the entrants of a lock or an election).
fn keys_under(endpoint: &str, prefix: &str) -> usize {
    let out = etcdctl(endpoint, &["get", "--prefix", prefix, "--keys-only"], None);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.lines().filter(|l| !l.is_empty()).count()
}

/// One side holds lock `name` with a command that stays until `release`
/// exists; the other asks for the same lock with a command that records
/// when it got it. The second must get it only after the first let go.
fn lock_excludes(holder: &Path, contender: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    let file = |n: &str| dir.path().join(n).display().to_string();
    let (held_a, release_a, done_a, held_b) = (
        file("held_a"),
        file("release_a"),
        file("done_a"),
        file("held_b"),
    );

    let hold_script = format!(
        "touch {held_a}; n=0; while [ ! -e {release_a} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; touch {done_a}"
    );
    let holder_run =
        Background::start_with(holder, &ep, &["lock", "L", "--", "sh", "-c", &hold_script]);
    wait_for("the first client to hold the lock", || {
        Path::new(&held_a).exists()
    });

    let take_script = format!("test -e {done_a} && touch {held_b}");
    let contender_run = Background::start_with(
        contender,
        &ep,
        &["lock", "L", "--", "sh", "-c", &take_script],
    );
    wait_for("the second client to queue on the lock", || {
        keys_under(&ep, "L/") == 2
    });
    assert!(
        !Path::new(&held_b).exists(),
        "the second client ran while the first held the lock"
    );

    std::fs::write(&release_a, b"").expect("create release file");
    // held_b is only created if done_a existed when the contender ran.
    wait_for("the second client to get the lock", || {
        Path::new(&held_b).exists()
    });
    let a = holder_run.stop(QUIET, STATE_WAIT_MAX);
    let b = contender_run.stop(QUIET, STATE_WAIT_MAX);
    assert_eq!(a.code, 0, "holder: {a:?}");
    assert_eq!(b.code, 0, "contender: {b:?}");
    wait_for("both lock keys to be gone", || keys_under(&ep, "L/") == 0);
}

fn ferroctl() -> PathBuf {
    ferroctl_bin().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn etcdctl_lock_excludes_ferroctl_lock() {
    lock_excludes(&etcdctl_bin(), &ferroctl());
}

#[test]
fn ferroctl_lock_excludes_etcdctl_lock() {
    lock_excludes(&ferroctl(), &etcdctl_bin());
}

#[test]
fn ferroctl_elect_observes_and_defers_to_an_etcdctl_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();

    let leader = Background::start(&ep, &["elect", "E", "alice"]);
    wait_for("etcdctl to be elected", || keys_under(&ep, "E/") == 1);

    // "E/<lease id in hex, at most 16 digits>\nalice\n"
    let leader_line_bytes = "E/0\nalice\n".len();
    let observer = Background::start_with(&ferroctl(), &ep, &["elect", "-l", "E"]);
    assert!(
        observer.wait_printed(leader_line_bytes, STATE_WAIT_MAX),
        "ferroctl elect -l printed no leader"
    );
    let out = observer.stop(QUIET, STATE_WAIT_MAX);
    let out_len = out.stdout.len();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "observer printed {out:?}");
    assert!(lines[0].starts_with("E/"), "{out:?}");
    assert_eq!(lines[1], "alice", "{out:?}");

    // A second campaign queues behind the leader and is not elected.
    let campaign = Background::start_with(&ferroctl(), &ep, &["elect", "E", "bob"]);
    wait_for("ferroctl to enter the election", || {
        keys_under(&ep, "E/") == 2
    });
    let out = campaign.stop(QUIET, STATE_WAIT_MAX);
    assert_eq!(
        out.stdout, "",
        "ferroctl was elected while etcdctl led: {out:?}"
    );

    // etcdctl's observer sees the same leader ferroctl saw.
    let etcd_observer = Background::start(&ep, &["elect", "-l", "E"]);
    let printed = etcd_observer.wait_printed(out_len, STATE_WAIT_MAX);
    let seen = etcd_observer.stop(QUIET, STATE_WAIT_MAX);
    assert!(printed, "etcdctl elect -l printed no leader: {seen:?}");
    assert_eq!(seen.stdout, lines.join("\n") + "\n");
    drop(leader);
}

/// Nothing listens on the endpoint: the same warning, error line and exit
/// code as etcdctl (for a call through clientv3's balancer and for a
/// per-endpoint maintenance call, which grpc-go words differently).
#[test]
fn unreachable_endpoint_fails_like_etcdctl() {
    let dead = ferrokv_tests::free_addr().to_string();
    let norm = ferrokv_tests::Normalizer::new();
    // A later --command-timeout overrides the harness's (10s): each run
    // lasts until it.
    for args in [
        &["--command-timeout=2s", "get", "foo"][..],
        &["--command-timeout=2s", "endpoint", "status"][..],
    ] {
        let run = |bin: &Path| {
            norm.normalize_output(&ferrokv_tests::etcdctl::ctl_with_timeout(
                bin,
                &dead,
                args,
                None,
                ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
            ))
        };
        let want = run(&etcdctl_bin());
        let got = run(&ferroctl());
        assert_eq!(want.code, 1, "{want:?}");
        assert_eq!(got, want, "{args:?}");
    }
}

/// With a dead endpoint first in `--endpoints`, a live second one answers.
#[test]
fn a_live_endpoint_is_used_when_the_first_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let dead = ferrokv_tests::free_addr().to_string();
    let both = format!("{dead},{}", etcd.endpoint());
    let put = etcdctl(&etcd.endpoint(), &["put", "k", "v"], None);
    assert_eq!(put.code, 0, "{put:?}");
    let out = ferrokv_tests::etcdctl::ctl_with_timeout(
        &ferroctl(),
        &both,
        &["get", "k"],
        None,
        ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, "k\nv\n"), "{out:?}");
}

/// Reads are spread over the endpoints as clientv3's round-robin balancer
/// spreads them (each client starts at a random endpoint): two servers
/// holding different values for one key both answer over repeated runs.
#[test]
fn reads_are_balanced_over_the_endpoints() {
    const RUNS: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EtcdProcess::start(&dir.path().join("a"));
    let b = EtcdProcess::start(&dir.path().join("b"));
    for (server, value) in [(&a, "a"), (&b, "b")] {
        let put = etcdctl(&server.endpoint(), &["put", "who", value], None);
        assert_eq!(put.code, 0, "{put:?}");
    }
    let both = format!("{},{}", a.endpoint(), b.endpoint());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..RUNS {
        let out = ferrokv_tests::etcdctl::ctl_with_timeout(
            &ferroctl(),
            &both,
            &["get", "who", "--print-value-only"],
            None,
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        );
        assert_eq!(out.code, 0, "{out:?}");
        seen.insert(out.stdout.trim().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    // Both after at most 30 runs: missing one has probability 2^-29.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["a".to_string(), "b".to_string()]
    );
}

/// `member add --learner`, `update` and `remove` through ferroctl on a
/// one-member etcd (a learner never counts towards quorum), checked with
/// etcdctl's `member list`.
#[test]
fn ferroctl_adds_updates_and_removes_a_learner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    let ctl = |args: &[&str]| {
        ferrokv_tests::etcdctl::ctl_with_timeout(
            &ferroctl(),
            &ep,
            args,
            None,
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        )
    };
    let (cluster_id, _) = etcd.ids().expect("ids");
    let added = ctl(&[
        "member",
        "add",
        "l1",
        "--learner",
        "--peer-urls=http://127.0.0.1:1",
    ]);
    assert_eq!(added.code, 0, "{added:?}");
    let first = added.stdout.lines().next().unwrap_or("");
    let id = first
        .strip_prefix("Member ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{added:?}"))
        .to_string();
    assert_eq!(
        first,
        format!("Member {id:>16} added to cluster {cluster_id:>16x}")
    );
    assert!(added.stdout.contains("ETCD_NAME=\"l1\"\n"), "{added:?}");
    assert!(
        added
            .stdout
            .ends_with("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"),
        "{added:?}"
    );
    let list = etcdctl(&ep, &["member", "list"], None);
    assert!(
        list.stdout
            .contains(&format!("{id}, unstarted, , http://127.0.0.1:1, , true")),
        "{list:?}"
    );

    let updated = ctl(&["member", "update", &id, "--peer-urls=http://127.0.0.1:2"]);
    assert_eq!(
        updated.stdout,
        format!("Member {id:>16} updated in cluster {cluster_id:>16x}\n"),
        "{updated:?}"
    );
    let removed = ctl(&["member", "remove", &id]);
    assert_eq!(
        removed.stdout,
        format!("Member {id:>16} removed from cluster {cluster_id:>16x}\n"),
        "{removed:?}"
    );
    let list = etcdctl(&ep, &["member", "list"], None);
    assert_eq!(list.stdout.lines().count(), 1, "{list:?}");
}

/// `snapshot status` of a snapshot etcd wrote (with enough keys and large
/// enough values for branch pages and overflow pages): ferroctl prints
/// what etcdctl prints, in every format, and the same errors.
#[test]
fn snapshot_status_matches_etcdctl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    let mut txn = String::from("\n");
    for i in 0..100 {
        txn.push_str(&format!("put key{i:04} value-{i}\n"));
    }
    txn.push_str("\n\n");
    for _ in 0..3 {
        let out = etcdctl(&ep, &["txn"], Some(txn.as_bytes()));
        assert_eq!(out.code, 0, "{out:?}");
    }
    let big = vec![b'x'; 10_000];
    for i in 0..5 {
        let out = etcdctl(&ep, &["put", &format!("big{i}")], Some(&big));
        assert_eq!(out.code, 0, "{out:?}");
    }
    let snap = dir.path().join("s.db").display().to_string();
    let saved = etcdctl(&ep, &["snapshot", "save", &snap], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"not a bolt file").expect("write garbage");
    let garbage = garbage.display().to_string();
    let missing = dir.path().join("missing.db").display().to_string();

    for args in [
        vec!["snapshot", "status", snap.as_str()],
        vec!["snapshot", "status", snap.as_str(), "-w", "json"],
        vec!["snapshot", "status", snap.as_str(), "-w", "fields"],
        vec!["snapshot", "status", snap.as_str(), "-w", "table"],
        vec!["snapshot", "status", snap.as_str(), "-w", "protobuf"],
        vec!["snapshot", "status", garbage.as_str()],
        vec!["snapshot", "status", missing.as_str()],
        vec!["snapshot", "status"],
    ] {
        let run = |bin: &Path| {
            ferrokv_tests::etcdctl::ctl_with_timeout(
                bin,
                &ep,
                &args,
                None,
                ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
            )
        };
        let want = run(&etcdctl_bin());
        assert_eq!(run(&ferroctl()), want, "{args:?}");
        // ferroutl, the offline tool, reads snapshots the same way.
        if args.len() > 2 {
            let ferroutl = ferrokv_tests::server::ferroutl_bin().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(run(&ferroutl), want, "ferroutl {args:?}");
        }
    }
}

/// `check perf` runs its load, removes its keys, compacts as etcdctl's
/// helper does (its two lines first) and prints etcdctl's verdict lines.
/// (Shortened by ferroctl's test knob; the verdict itself depends on the
/// machine, so only the form is checked.)
#[test]
fn check_perf_prints_verdicts_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    // Each nextest test is its own process: this reaches only ferroctl.
    std::env::set_var("FERROCTL_CHECK_PERF_DURATION", "2s");
    let out = ferrokv_tests::etcdctl::ctl_with_timeout(
        &ferroctl(),
        &ep,
        &["check", "perf", "--auto-compact"],
        None,
        ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
    );
    let all: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(all.len(), 6, "{out:?}");
    assert!(all[0].starts_with("Compacting with revision "), "{out:?}");
    assert!(all[1].starts_with("Compacted with revision "), "{out:?}");
    let lines = &all[2..];
    assert!(lines[0].contains("Throughput"), "{out:?}");
    assert!(lines[1].contains("Slowest request took"), "{out:?}");
    assert!(lines[2].contains("Stddev"), "{out:?}");
    assert!(lines[3] == "PASS" || lines[3] == "FAIL", "{out:?}");
    assert_eq!(out.code, if lines[3] == "PASS" { 0 } else { 1 }, "{out:?}");
    assert_eq!(keys_under(&ep, "/etcdctl-check-perf/"), 0);
}

/// A watch outlives a restart of its server: ferroctl reconnects and
/// resumes after the last revision it printed, as etcdctl does.
#[test]
fn watch_resumes_after_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    let watch = Background::start_with(&ferroctl(), &ep, &["watch", "k"]);
    // The watch is set up once a put shows up in it.
    let event = "PUT\nk\n1\n";
    let deadline = Instant::now() + STATE_WAIT_MAX;
    while !watch.wait_printed(event.len(), POLL * 4) {
        assert!(Instant::now() < deadline, "the watch never saw a put");
        let put = etcdctl(&ep, &["put", "k", "1"], None);
        assert_eq!(put.code, 0, "{put:?}");
    }
    etcd.restart();
    let put = etcdctl(&ep, &["put", "k", "2"], None);
    assert_eq!(put.code, 0, "{put:?}");
    let two = watch.wait_printed(event.len() + "PUT\nk\n2\n".len(), STATE_WAIT_MAX);
    let out = watch.stop(QUIET, STATE_WAIT_MAX);
    assert!(two, "no event after the restart: {out:?}");
    assert!(out.stdout.ends_with("PUT\nk\n2\n"), "{out:?}");
    assert!(
        !out.stdout.contains("PUT\nk\n2\nPUT\nk\n2\n"),
        "an event twice: {out:?}"
    );
}

/// `-w protobuf` on one server for read-only commands: ferroctl writes the
/// same bytes as etcdctl (values with `%` included: etcdctl writes the
/// message as is, not through a format string).
#[test]
fn protobuf_output_matches_etcdctl_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ep = etcd.endpoint();
    for (k, v) in [
        ("p1", "100%d of %% and %"),
        ("p2", "plain"),
        ("p3", "%5.2f %s"),
    ] {
        let put = etcdctl(&ep, &["put", k, v], None);
        assert_eq!(put.code, 0, "{put:?}");
    }
    for args in [
        &["get", "p1", "-w", "protobuf"][..],
        &["get", "p", "--prefix", "-w", "protobuf"][..],
        &["member", "list", "-w", "protobuf"][..],
        &["get", "p3", "-w", "protobuf", "--hex"][..],
    ] {
        let run = |bin: &Path| {
            ferrokv_tests::etcdctl::ctl_with_timeout(
                bin,
                &ep,
                args,
                None,
                ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
            )
        };
        let want = run(&etcdctl_bin());
        assert_eq!(want.code, 0, "{want:?}");
        assert_eq!(run(&ferroctl()), want, "{args:?}");
    }
}

/// Read-only commands whose output depends on the server's addresses
/// (`-w table` column widths) or ids, compared on one server, etcd and
/// ferrokv: the golden suite's two servers cannot compare these.
#[test]
fn read_only_tables_match_etcdctl_on_one_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let ferrokv = ferrokv_tests::FerrokvProcess::start(dir.path());
    for ep in [etcd.endpoint(), ferrokv.endpoint()] {
        let put = etcdctl(&ep, &["put", "k", "v"], None);
        assert_eq!(put.code, 0, "{put:?}");
        for args in [
            &["member", "list", "-w", "table"][..],
            &["member", "list", "-w", "json", "--hex"][..],
            &["endpoint", "status", "-w", "table"][..],
            &["endpoint", "status", "--cluster", "-w", "table"][..],
            &["endpoint", "hashkv", "-w", "table"][..],
            &["get", "k", "-w", "protobuf"][..],
            &["alarm", "list", "-w", "protobuf"][..],
        ] {
            let run = |bin: &Path| {
                ferrokv_tests::etcdctl::ctl_with_timeout(
                    bin,
                    &ep,
                    args,
                    None,
                    ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
                )
            };
            let norm = ferrokv_tests::Normalizer::new();
            let want = norm.normalize_output(&run(&etcdctl_bin()));
            assert_eq!(
                norm.normalize_output(&run(&ferroctl())),
                want,
                "{ep} {args:?}"
            );
        }
    }
}

/// A request whose connection is cut after the client sent it (the server
/// never saw it) is retried as clientv3 retries: reads and the other
/// repeatable calls again until they succeed, each failed attempt logged
/// with its number; writes not (they may have been applied), which fail
/// with etcdctl's error and exit code. Same output as etcdctl's, against
/// etcd and against ferrokv; the cut write is not applied.
#[test]
fn requests_cut_in_flight_are_retried_only_when_repeatable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(&dir.path().join("etcd"));
    let ferrokv = ferrokv_tests::FerrokvProcess::start(&dir.path().join("ferrokv"));
    let cases: [(&[&str], usize); 9] = [
        (&["get", "k"], 1),
        (&["get", "k", "-w", "json"], 3),
        (&["put", "k", "w"], 1),
        (&["del", "k"], 1),
        (&["txn"], 1),
        (&["member", "list"], 2),
        (&["lease", "grant", "100", "-w", "json"], 1),
        (&["endpoint", "status"], 1),
        (&["user", "list"], 1),
    ];
    for (server, upstream) in [
        (etcd.endpoint(), etcd.client_addr()),
        (ferrokv.endpoint(), ferrokv.client_addr()),
    ] {
        let put = etcdctl(&server, &["put", "k", "v"], None);
        assert_eq!(put.code, 0, "{put:?}");
        for (args, cuts) in cases {
            let stdin = (args == ["txn"]).then_some(&b"\nput k w\n\n\n"[..]);
            let run = |bin: &Path| {
                let proxy = Proxy::start(upstream, Fault::CutFirstRequests(cuts));
                let out = ferrokv_tests::etcdctl::ctl_with_timeout(
                    bin,
                    &proxy.endpoint(),
                    args,
                    stdin,
                    ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
                );
                assert_eq!(proxy.cuts(), cuts, "{bin:?} {args:?}: {out:?}");
                let mut norm = ferrokv_tests::Normalizer::new();
                norm.add_literal(&proxy.addr().to_string(), "<proxy>");
                norm.add_keys(&["ID"]);
                norm.normalize_output(&out)
            };
            let want = run(&etcdctl_bin());
            let got = run(&ferroctl());
            assert_eq!(got, want, "{args:?} on {server}");
            // Nothing that was cut reached the server.
            let now = etcdctl(&server, &["get", "k", "--print-value-only"], None);
            assert_eq!(now.stdout, "v\n", "{args:?} on {server}");
        }
    }
}

/// Long work shows progress on a terminal (a pseudo-terminal made by
/// util-linux's `script`) and nothing of it when piped: defrag names the
/// member it works on, snapshot save counts bytes, check perf draws its
/// bar.
#[test]
fn long_work_shows_progress_only_on_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ferrokv_tests::FerrokvProcess::start(&dir.path().join("ferrokv"));
    let ep = server.endpoint();
    let db = dir.path().join("backup.db");
    let db = db.to_str().expect("utf-8 path");
    let ctl = ferroctl();
    let ctl = ctl.to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 2] = [
        (&["defrag"], "] (1/1)..."),
        (&["snapshot", "save", db], "downloading snapshot: "),
    ];
    for (args, shown) in cases {
        let line = format!("{ctl} --endpoints={ep} {}", args.join(" "));
        let on_tty = ferrokv_tests::etcdctl::tool(
            std::path::Path::new("script"),
            &["-qec", &line, "/dev/null"],
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        );
        assert_eq!(on_tty.code, 0, "{on_tty:?}");
        assert!(on_tty.stdout.contains(shown), "{args:?}: {on_tty:?}");
        let piped = ferrokv_tests::etcdctl::ctl_with_timeout(
            &ferroctl(),
            &ep,
            args,
            None,
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        );
        assert_eq!(piped.code, 0, "{piped:?}");
        assert!(
            !piped.stdout.contains(shown) && !piped.stderr.contains(shown),
            "{args:?}: {piped:?}"
        );
    }
}

/// Keys under `prefix` with their values (`get --prefix`, simple format).
fn dump_prefix(endpoint: &str, prefix: &str) -> String {
    let out = etcdctl(endpoint, &["get", "--prefix", prefix], None);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
}

/// `make-mirror` copies a prefix at one revision (more keys than one page)
/// and then follows every change, renamed to `--dest-prefix`: etcdctl
/// mirrors etcd into a second etcd, ferroctl the same etcd into ferrokv;
/// both destinations end with the same keys and values, a source
/// transaction lands as one destination revision, keys outside the prefix
/// stay behind, and ferroctl reports its running total.
#[test]
fn make_mirror_copies_and_follows_like_etcdctl() {
    const BASE_KEYS: usize = 1_200;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = EtcdProcess::start(&dir.path().join("source"));
    let to_etcd = EtcdProcess::start(&dir.path().join("to-etcd"));
    let to_ferrokv = ferrokv_tests::FerrokvProcess::start_with_shards(&dir.path().join("to-f"), 4);
    let src = source.endpoint();
    // The base, in txns of 100 puts (etcd's default op limit is 128).
    for chunk in 0..BASE_KEYS / 100 {
        let mut lines = String::from("\n");
        for i in chunk * 100..(chunk + 1) * 100 {
            lines.push_str(&format!("put /m/{i:04} v{i}\n"));
        }
        lines.push_str("\n\n");
        let out = etcdctl(&src, &["txn"], Some(lines.as_bytes()));
        assert_eq!(out.code, 0, "{out:?}");
    }
    let args = ["make-mirror", "--prefix", "/m/", "--dest-prefix", "/copy/"];
    let with_dest = |dest: &str| {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push(dest.to_string());
        a
    };
    let by_etcdctl = Background::start(&src, &with_dest(&to_etcd.endpoint()));
    let by_ferroctl = Background::start_with_env(
        &ferroctl(),
        &src,
        &with_dest(&to_ferrokv.endpoint()),
        &[("FERROCTL_MIRROR_REPORT_MS", "300")],
    );
    let count = |ep: &str| {
        let out = etcdctl(
            ep,
            &["get", "--prefix", "/copy/", "--limit", "1", "-w", "json"],
            None,
        );
        ferrokv_tests::normalize::json_u64_field(&out.stdout, "count").unwrap_or(0)
    };
    for dest in [to_etcd.endpoint(), to_ferrokv.endpoint()] {
        wait_for("the base copied", || count(&dest) == BASE_KEYS as u64);
    }
    // Changes after the base: single puts, a txn of three puts, a delete,
    // a ranged delete of ten keys, and a key outside the prefix.
    for step in [
        &["put", "/m/new", "n"][..],
        &["del", "/m/0001"][..],
        &["del", "/m/002", "--prefix"][..],
        &["put", "/elsewhere", "x"][..],
    ] {
        let out = etcdctl(&src, step, None);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = etcdctl(
        &src,
        &["txn"],
        Some(b"\nput /m/t1 a\nput /m/t2 b\nput /m/t3 c\n\n\n"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let want_count = (BASE_KEYS + 1 - 1 - 10 + 3) as u64;
    for dest in [to_etcd.endpoint(), to_ferrokv.endpoint()] {
        wait_for("the changes mirrored", || {
            count(&dest) == want_count && dump_prefix(&dest, "/copy/t3") == "/copy/t3\nc\n"
        });
    }
    assert_eq!(
        dump_prefix(&to_ferrokv.endpoint(), "/copy/"),
        dump_prefix(&to_etcd.endpoint(), "/copy/")
    );
    assert_eq!(dump_prefix(&to_ferrokv.endpoint(), "/elsewhere"), "");
    // The source txn is one destination revision.
    let mod_revs: std::collections::BTreeSet<u64> = ["/copy/t1", "/copy/t2", "/copy/t3"]
        .iter()
        .map(|k| {
            let out = etcdctl(&to_ferrokv.endpoint(), &["get", k, "-w", "json"], None);
            ferrokv_tests::normalize::json_u64_field(&out.stdout, "mod_revision").unwrap_or(0)
        })
        .collect();
    assert_eq!(mod_revs.len(), 1, "{mod_revs:?}");
    let mirrored = by_ferroctl.stop(QUIET, STATE_WAIT_MAX);
    let _ = by_etcdctl.stop(Duration::ZERO, STATE_WAIT_MAX);
    // Base keys, 1 put, 1 + 10 deletes, 3 txn puts.
    let last = mirrored.stdout.lines().last().unwrap_or_default();
    assert_eq!(last, (BASE_KEYS + 1 + 11 + 3).to_string(), "{mirrored:?}");
}

/// make-mirror's argument errors, as etcdctl words them.
#[test]
fn make_mirror_argument_errors_match_etcdctl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(dir.path());
    let other = etcd.endpoint();
    for args in [
        &["make-mirror"][..],
        &["make-mirror", "a", "b"][..],
        &[
            "make-mirror",
            "--dest-prefix",
            "x",
            "--no-dest-prefix",
            other.as_str(),
        ][..],
    ] {
        let run = |bin: &Path| {
            ferrokv_tests::etcdctl::ctl_with_timeout(
                bin,
                &etcd.endpoint(),
                args,
                None,
                ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
            )
        };
        assert_eq!(run(&ferroctl()), run(&etcdctl_bin()), "{args:?}");
    }
}

/// `ferroctl completion bash`, sourced by a real bash, completes command
/// groups, subcommands after global flags with values, and each command's
/// own flags.
#[test]
fn bash_completion_knows_commands_and_flags() {
    let ctl = ferroctl();
    let script = format!(
        r#"source <("{}" completion bash)
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _ferroctl; echo "${{COMPREPLY[*]}}"; }}
t ferroctl le
t ferroctl --endpoints 127.0.0.1:2379 lease keep
t ferroctl get --pre
t ferroctl endpoint status --cl
t ferroctl make-mirror --dest-p
"#,
        ctl.display()
    );
    let out = ferrokv_tests::etcdctl::tool(
        Path::new("bash"),
        &["-c", &script],
        ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "lease\nkeep-alive\n--prefix\n--cluster\n--dest-prefix\n"),
        "{out:?}"
    );
}

/// etcdctl's and ferroctl's `check datascale` (with compaction and
/// defragmentation), on etcd and on ferrokv: the same lines but for
/// etcdctl's progress bar, the revision and the memory figure (which
/// comes from each server's `process_resident_memory_bytes`); the keys
/// are gone afterwards.
#[test]
fn check_datascale_matches_etcdctl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProcess::start(&dir.path().join("etcd"));
    let ferrokv = ferrokv_tests::FerrokvProcess::start(&dir.path().join("ferrokv"));
    const MEMORY: &str = "PASS: Approximate system memory used : ";
    let shape = |out: &ferrokv_tests::Output| -> Vec<String> {
        out.stdout
            .split(['\n', '\r'])
            .filter(|l| !l.is_empty() && !l.contains(" / 10000"))
            .map(|l| {
                if l.starts_with(MEMORY) && l.ends_with(" MB.") {
                    format!("{MEMORY}<figure> MB.")
                } else if l.starts_with("Compact") {
                    l.trim_end_matches(|c: char| c.is_ascii_digit()).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect()
    };
    for server in [etcd.endpoint(), ferrokv.endpoint()] {
        let args = ["check", "datascale", "--auto-compact", "--auto-defrag"];
        let mut outputs = Vec::new();
        for bin in [etcdctl_bin(), ferroctl()] {
            let out = ferrokv_tests::etcdctl::ctl_with_timeout(
                &bin,
                &server,
                &args,
                None,
                ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
            );
            assert_eq!(out.code, 0, "{bin:?} on {server}: {out:?}");
            assert_eq!(keys_under(&server, "/etcdctl-check-datascale/"), 0);
            outputs.push(shape(&out));
        }
        assert_eq!(outputs[1], outputs[0], "on {server}");
        assert_eq!(outputs[0].len(), 6, "{outputs:?}");
    }
}

/// A token that expires while a command runs is renewed as clientv3 does:
/// `lock` outlives etcd's token TTL (1 s here) and still releases its lock
/// with the same output as etcdctl (the refused attempt logged).
#[test]
fn an_expired_token_is_renewed_like_etcdctl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ferrokv_tests::ServerOptions {
        extra_args: vec!["--auth-token-ttl".into(), "1".into()],
        ..Default::default()
    };
    let etcd = EtcdProcess::start_with(&dir.path().join("etcd"), opts.clone());
    let ferrokv = ferrokv_tests::FerrokvProcess::start_with(&dir.path().join("ferrokv"), opts);
    for server in [&*etcd, &*ferrokv] {
        expired_token_renewed_on(server);
    }
}

/// [`an_expired_token_is_renewed_like_etcdctl`] against one server.
fn expired_token_renewed_on(server: &ferrokv_tests::ServerProcess) {
    let ep = server.endpoint();
    for step in [
        &["user", "add", "root:pw"][..],
        &["user", "grant-role", "root", "root"][..],
        &["auth", "enable"][..],
    ] {
        let out = etcdctl(&ep, step, None);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let norm = ferrokv_tests::Normalizer::new();
    let args = [
        "--user",
        "root:pw",
        "lock",
        "expiring",
        "--",
        "sh",
        "-c",
        "sleep 2.5; echo held",
    ];
    let run = |bin: &Path| {
        let out = ferrokv_tests::etcdctl::ctl_with_timeout(
            bin,
            &ep,
            &args,
            None,
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        );
        let left = etcdctl(
            &ep,
            &[
                "--user",
                "root:pw",
                "get",
                "--prefix",
                "expiring",
                "--keys-only",
            ],
            None,
        );
        assert_eq!(left.stdout, "", "the lock was released: {out:?}");
        norm.normalize_output(&out)
    };
    let want = run(&etcdctl_bin());
    assert!(
        want.stderr.contains("invalid auth token"),
        "{}: {want:?}",
        server.kind()
    );
    assert_eq!(run(&ferroctl()), want, "{}", server.kind());
}
