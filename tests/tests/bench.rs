//! `ferro-bench` end to end: each workload briefly against a ferrokv started
//! here, checked through its `--json` output (counts add up, histograms
//! non-empty and ordered); runs against an address where nothing listens
//! and against a server that never answers end within their bound and report
//! failures by gRPC status code; the open loop, against a server that
//! answers only after a delay, measures latency from intended send times.
//!
//! The mixed workloads (txn-mixed, watch-get, k8s) are checked per kind of
//! operation too; lease-keepalive and k8s's leases run against ferrokv and
//! the real etcd (k8s's lease grants may fail soft, counted by status, so
//! the workload also runs against a server without the Lease service;
//! against a stalled one every workload ends in bound). A sweep gives one row per
//! point, and its `--hdr-out` log and `--plot` SVG are read back. The watch
//! modes (watch, watch-idle) run briefly too, and `--user` against an etcd
//! with auth enabled.
//!
//! These tests check the tool's accounting, never performance: no assertion
//! here depends on how fast the machine is, beyond generous time bounds.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::proxy::{Fault, Proxy};
use ferrokv_tests::server::ferrokv_bin;
use ferrokv_tests::{free_addr, EtcdProcess, FerrokvProcess};
use serde_json::Value;

/// Slack on top of a run's own bound (process start, runtime shutdown, a
/// loaded 2-core CI machine).
const RUN_SLACK: Duration = Duration::from_secs(20);

/// `ferro-bench` next to the ferrokv binary the harness uses
/// (`cargo build --workspace --bins` builds both), or `FERRO_BENCH_BIN`.
fn bench_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRO_BENCH_BIN") {
        return PathBuf::from(p);
    }
    let server = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let bin = server.with_file_name("ferro-bench");
    assert!(
        bin.is_file(),
        "{} not found; build it with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

struct Run {
    code: Option<i32>,
    json: Value,
    elapsed: Duration,
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs ferro-bench with `--json`, killing it if it outlives `bound` (which
/// fails the test: the tool must end on its own).
fn bench(args: &[&str], bound: Duration) -> Run {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench_raw(&all, bound);
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ferro-bench {args:?} ({:?}) printed no JSON ({e}):\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    Run {
        code: out.code,
        json,
        elapsed: out.elapsed,
    }
}

/// Runs ferro-bench with stdout and stderr piped, within `bound`.
fn bench_raw(args: &[&str], bound: Duration) -> Output {
    let start = Instant::now();
    let mut child = Command::new(bench_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferro-bench");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferro-bench {args:?} still running after {bound:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let stdout = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    Output {
        code: status.code(),
        stdout,
        stderr,
        elapsed,
    }
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v:#}"))
}

/// sent = succeeded + failed; failures by code add up to failed; one
/// latency sample per success, percentiles ordered.
fn check_accounting(v: &Value) {
    let (sent, ok, failed) = (
        u(v, &["requests", "sent"]),
        u(v, &["requests", "succeeded"]),
        u(v, &["requests", "failed"]),
    );
    assert_eq!(sent, ok + failed, "{v:#}");
    let by_code: u64 = v["errors"]
        .as_object()
        .expect("errors object")
        .values()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(by_code, failed, "{v:#}");
    let lat = &v["latency_us"];
    assert_eq!(u(lat, &["count"]), ok, "{v:#}");
    if ok > 0 {
        let order: Vec<u64> = ["min", "p50", "p90", "p99", "p99_9", "max"]
            .iter()
            .map(|k| u(lat, &[k]))
            .collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{v:#}");
        assert!(order[0] >= 1, "{v:#}");
    }
    check_ops(v);
}

/// The per-operation table adds up to the totals: each kind's sent =
/// succeeded + failed, its errors add up to its failures, and the kinds
/// together account for every finished request (only requests cut off by
/// the run bound have no kind: they are `Cancelled` in the totals).
fn check_ops(v: &Value) {
    let ops = v["ops"].as_object().expect("ops object");
    let (mut ok, mut failed) = (0, 0);
    for (kind, o) in ops {
        let (s, k, f) = (u(o, &["sent"]), u(o, &["succeeded"]), u(o, &["failed"]));
        assert_eq!(s, k + f, "{kind}: {v:#}");
        let by_code: u64 = o["errors"]
            .as_object()
            .unwrap()
            .values()
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        assert_eq!(by_code, f, "{kind}: {v:#}");
        assert_eq!(u(o, &["latency_us", "count"]), k, "{kind}: {v:#}");
        if k > 0 {
            let lat = &o["latency_us"];
            let order: Vec<u64> = ["min", "p50", "p99", "max"]
                .iter()
                .map(|q| u(lat, &[q]))
                .collect();
            assert!(order.windows(2).all(|w| w[0] <= w[1]), "{kind}: {v:#}");
        }
        ok += k;
        failed += f;
    }
    assert_eq!(ok, u(v, &["requests", "succeeded"]), "{v:#}");
    let cancelled = v["errors"]["Cancelled"]["count"].as_u64().unwrap_or(0);
    assert!(
        failed <= u(v, &["requests", "failed"])
            && u(v, &["requests", "failed"]) <= failed + cancelled,
        "{v:#}"
    );
}

fn op_kinds(v: &Value) -> Vec<String> {
    v["ops"].as_object().unwrap().keys().cloned().collect()
}

/// A run against a healthy local server: everything succeeded.
fn check_clean(run: &Run, what: &str) {
    check_accounting(&run.json);
    assert_eq!(run.code, Some(0), "{what}: {:#}", run.json);
    assert_eq!(
        u(&run.json, &["requests", "failed"]),
        0,
        "{what}: {:#}",
        run.json
    );
    assert!(u(&run.json, &["requests", "succeeded"]) > 0, "{what}");
    assert!(run.json["throughput_rps"].as_f64().unwrap() > 0.0, "{what}");
}

#[test]
fn every_workload_reports_consistent_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let ep = server.endpoint();
    let common = [
        "--endpoints",
        ep.as_str(),
        "--key-space",
        "200",
        "--timeout",
        "10s",
    ];
    let bound = Duration::from_secs(30) + RUN_SLACK;
    let cases: &[(&str, &[&str])] = &[
        (
            "put total",
            &["put", "--clients", "4", "--conns", "2", "--total", "150"],
        ),
        (
            "put sequential, warm-up",
            &[
                "put",
                "--clients",
                "2",
                "--duration",
                "1s",
                "--warmup",
                "300ms",
                "--sequential-keys",
                "--val-size",
                "1000",
            ],
        ),
        (
            "range linearizable",
            &["range", "--clients", "4", "--duration", "1s"],
        ),
        (
            "range serializable",
            &[
                "range",
                "--clients",
                "4",
                "--duration",
                "1s",
                "--consistency",
                "s",
            ],
        ),
        (
            "range prefix page",
            &[
                "range",
                "--clients",
                "2",
                "--total",
                "50",
                "--prefix",
                "--limit",
                "10",
                "--preload",
                "0",
            ],
        ),
        (
            "txn-put",
            &["txn-put", "--clients", "4", "--duration", "1s"],
        ),
        (
            "put open loop",
            &["put", "--rate", "100", "--clients", "8", "--duration", "1s"],
        ),
    ];
    for (what, args) in cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&common);
        let run = bench(&all, bound);
        check_clean(&run, what);
        let v = &run.json;
        assert_eq!(v["workload"], args[0], "{what}");
        if let Some(i) = args.iter().position(|a| *a == "--total") {
            let total: u64 = args[i + 1].parse().unwrap();
            assert_eq!(u(v, &["requests", "sent"]), total, "{what}: {v:#}");
        }
        match *what {
            "range linearizable" | "range serializable" => {
                assert_eq!(u(v, &["preload", "written"]), 200, "{what}: {v:#}");
            }
            "txn-put" => {
                // Each client owns its keys, so after the first write of a
                // key (which may find it from an earlier case) compares hold.
                let cf = u(v, &["txn", "compare_failed"]);
                assert!(cf <= 200, "{what}: {v:#}");
            }
            "put open loop" => {
                assert_eq!(v["mode"], "open");
                // 100/s for 1 s on a fixed schedule; the server keeps up.
                assert_eq!(u(v, &["requests", "sent"]), 100, "{what}: {v:#}");
            }
            _ => {}
        }
    }
}

#[test]
fn unreachable_endpoint_ends_in_bound_and_reports_unavailable() {
    let addr = free_addr();
    let ep = format!("http://{addr}");
    for shape in [
        &["--clients", "4"][..],
        &["--rate", "200", "--clients", "4"][..],
    ] {
        let mut args = vec![
            "put",
            "--endpoints",
            &ep,
            "--duration",
            "1s",
            "--timeout",
            "1s",
        ];
        args.extend_from_slice(shape);
        let run = bench(&args, Duration::from_secs(3) + RUN_SLACK);
        check_accounting(&run.json);
        assert_eq!(run.code, Some(1), "{:#}", run.json);
        assert_eq!(u(&run.json, &["requests", "succeeded"]), 0);
        assert!(u(&run.json, &["requests", "failed"]) > 0, "{:#}", run.json);
        assert!(
            u(&run.json, &["errors", "Unavailable", "count"]) > 0,
            "{:#}",
            run.json
        );
    }
}

/// Accepts connections and never answers (nor closes them) until dropped.
struct SilentServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SilentServer { addr, stop }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn stalled_server_ends_in_bound_and_reports_deadline_exceeded() {
    let server = SilentServer::start();
    let ep = format!("http://{}", server.addr);
    for shape in [
        &["put", "--clients", "4"][..],
        &["put", "--rate", "50", "--clients", "2"][..],
        &["lease-keepalive", "--clients", "2", "--leases", "10"][..],
        &["k8s", "--clients", "2", "--key-space", "1000"][..],
        &["watch-get", "--clients", "2", "--key-space", "1000"][..],
    ] {
        let mut args = vec!["--endpoints", &ep, "--duration", "1s", "--timeout", "500ms"];
        args.extend_from_slice(shape);
        let run = bench(&args, Duration::from_secs(3) + RUN_SLACK);
        check_accounting(&run.json);
        assert_eq!(run.code, Some(1));
        // Setup (keys, leases) gives up after a round of failures; then
        // duration + grace (timeout + 1 s) is the tool's own bound.
        assert!(
            run.elapsed < Duration::from_millis(2500) + RUN_SLACK / 2,
            "{:?}",
            run.elapsed
        );
        let failed = u(&run.json, &["requests", "failed"]);
        assert!(failed > 0);
        assert_eq!(
            u(&run.json, &["errors", "DeadlineExceeded", "count"]),
            failed,
            "{:#}",
            run.json
        );
    }
}

#[test]
fn open_loop_measures_from_intended_send_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let delay = Duration::from_millis(200);
    let proxy = Proxy::start(server.client_addr(), Fault::Delay(delay));
    let ep = proxy.endpoint();
    let common = [
        "--endpoints",
        ep.as_str(),
        "--clients",
        "1",
        "--timeout",
        "20s",
    ];

    // Closed loop, one client: every request takes about `delay`.
    let mut args = vec!["put", "--total", "5"];
    args.extend_from_slice(&common);
    let closed = bench(&args, Duration::from_secs(30) + RUN_SLACK);
    check_clean(&closed, "closed loop via the delaying proxy");
    let closed_p50 = u(&closed.json, &["latency_us", "p50"]);
    assert!(closed_p50 >= 200_000, "{:#}", closed.json);

    // Open loop at 10/s with one request in flight, so the service time
    // (>= 200 ms) is twice the schedule's interval: request k waits behind
    // k earlier ones. Measured from intended send times, latency grows to
    // seconds; measured from actual send times it would stay near 200 ms.
    let mut args = vec!["put", "--rate", "10", "--duration", "2s"];
    args.extend_from_slice(&common);
    let open = bench(&args, Duration::from_secs(30) + RUN_SLACK);
    check_clean(&open, "open loop via the delaying proxy");
    assert_eq!(u(&open.json, &["requests", "sent"]), 20, "{:#}", open.json);
    let max = u(&open.json, &["latency_us", "max"]);
    // The last request is due at 1.9 s and cannot finish before 20 x 200 ms.
    assert!(max >= 1_800_000, "{:#}", open.json);
    assert!(max > 4 * closed_p50, "{:#}", open.json);
}

/// Every failure of a run is one of the `allowed` (operation, status code)
/// pairs.
fn only_failures(v: &Value, allowed: &[(&str, &str)]) {
    for (kind, o) in v["ops"].as_object().unwrap() {
        for code in o["errors"].as_object().unwrap().keys() {
            assert!(
                allowed.contains(&(kind.as_str(), code.as_str())),
                "{kind} failed with {code}: {v:#}"
            );
        }
    }
}

#[test]
fn mixed_workloads_report_consistent_counts_per_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let ep = server.endpoint();
    let bound = Duration::from_secs(30) + RUN_SLACK;
    let plot = dir.path().join("k8s.svg");
    let plot_arg = plot.to_str().unwrap();
    let hdr = dir.path().join("k8s.hlog");
    let hdr_arg = hdr.to_str().unwrap();

    let run = bench(
        &[
            "txn-mixed",
            "--endpoints",
            &ep,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--key-space",
            "100",
            "--read-ratio",
            "0.7",
        ],
        bound,
    );
    check_clean(&run, "txn-mixed");
    assert_eq!(op_kinds(&run.json), ["read", "write"], "{:#}", run.json);
    assert_eq!(u(&run.json, &["preload", "written"]), 100);
    let write = &run.json["ops"]["write"];
    assert!(u(write, &["compare_failed"]) <= u(write, &["succeeded"]));

    // 20 watchers replaying 200 preloaded revisions each, while gets run.
    let run = bench(
        &[
            "watch-get",
            "--endpoints",
            &ep,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--key-space",
            "200",
            "--key-prefix",
            "/wg/",
            "--watchers",
            "20",
            "--streams",
            "4",
        ],
        bound,
    );
    check_clean(&run, "watch-get");
    assert_eq!(op_kinds(&run.json), ["get"]);
    let w = &run.json["watch"];
    assert_eq!((u(w, &["watchers"]), u(w, &["streams"])), (20, 4), "{w:#}");
    assert_eq!(u(w, &["created"]), 20, "{:#}", run.json);
    // Events come from the preload only (gets write nothing).
    assert!(u(w, &["events"]) <= 20 * 200, "{w:#}");
    assert!(u(w, &["events"]) > 0, "{w:#}");
    assert!(w["stream_errors"].as_object().unwrap().is_empty(), "{w:#}");

    let run = bench(
        &[
            "k8s",
            "--endpoints",
            &ep,
            "--clients",
            "4",
            "--duration",
            "2s",
            "--key-space",
            "200",
            "--limit",
            "10",
            "--compact-interval",
            "300ms",
            "--events-per-lease",
            "5",
            "--plot",
            plot_arg,
            "--hdr-out",
            hdr_arg,
        ],
        bound,
    );
    check_accounting(&run.json);
    assert_eq!(run.code, Some(0), "{:#}", run.json);
    // The Lease service may or may not be served: lease grants may fail as
    // Unimplemented. A list whose revision the compactor (every 300 ms)
    // passed before its last page fails as etcd's clients see it.
    only_failures(
        &run.json,
        &[("lease-grant", "Unimplemented"), ("list", "OutOfRange")],
    );
    let kinds = op_kinds(&run.json);
    for kind in ["get", "list", "update", "event", "compact"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing: {:#}",
            run.json
        );
    }
    let w = &run.json["watch"];
    assert_eq!(u(w, &["created"]), 4, "{:#}", run.json);
    let svg = std::fs::read_to_string(&plot).unwrap();
    check_svg(&svg, &["all", "get", "list", "update"]);
    // The interval log has the run's histograms and one per kind.
    let tags = hdr_tags(&std::fs::read_to_string(&hdr).unwrap());
    for tag in ["k8s", "k8s/get", "k8s/update"] {
        assert!(tags.iter().any(|t| t == tag), "{tag} missing from {tags:?}");
    }

    // ferrokv serves the Lease service (since main's 026e8f6): keep-alives
    // over streams and grant/revoke churn all succeed.
    let run = bench(
        &[
            "lease-keepalive",
            "--endpoints",
            &ep,
            "--clients",
            "2",
            "--duration",
            "1s",
            "--leases",
            "10",
            "--churn",
            "0.2",
        ],
        bound,
    );
    check_clean(&run, "lease-keepalive against ferrokv");
    assert_eq!(u(&run.json, &["preload", "granted"]), 10, "{:#}", run.json);
    assert!(
        u(&run.json, &["ops", "keepalive", "succeeded"]) > 0,
        "{:#}",
        run.json
    );
}

#[test]
fn lease_workloads_against_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let server = EtcdProcess::start(dir.path());
    let ep = server.endpoint();
    let bound = Duration::from_secs(30) + RUN_SLACK;

    let run = bench(
        &[
            "lease-keepalive",
            "--endpoints",
            &ep,
            "--clients",
            "4",
            "--conns",
            "2",
            "--duration",
            "1s",
            "--leases",
            "40",
            "--lease-ttl",
            "30",
            "--churn",
            "0.2",
        ],
        bound,
    );
    check_clean(&run, "lease-keepalive");
    assert_eq!(u(&run.json, &["preload", "granted"]), 40, "{:#}", run.json);
    assert_eq!(
        op_kinds(&run.json),
        ["grant", "keepalive", "revoke"],
        "{:#}",
        run.json
    );
    // Churn alternates grant and revoke per client.
    let (g, r) = (
        u(&run.json, &["ops", "grant", "succeeded"]),
        u(&run.json, &["ops", "revoke", "succeeded"]),
    );
    assert!(g.abs_diff(r) <= 4, "{:#}", run.json);

    // Open loop works for streams too: 50/s for 1 s.
    let run = bench(
        &[
            "lease-keepalive",
            "--endpoints",
            &ep,
            "--clients",
            "2",
            "--rate",
            "50",
            "--duration",
            "1s",
            "--leases",
            "4",
            "--churn",
            "0",
        ],
        bound,
    );
    check_clean(&run, "lease-keepalive open loop");
    assert_eq!(u(&run.json, &["requests", "sent"]), 50, "{:#}", run.json);

    let run = bench(
        &[
            "k8s",
            "--endpoints",
            &ep,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--key-space",
            "200",
            "--mix",
            "event=5,get=1,list=1",
            "--events-per-lease",
            "3",
        ],
        bound,
    );
    check_clean(&run, "k8s against etcd");
    assert!(
        u(&run.json, &["ops", "lease-grant", "succeeded"]) > 0,
        "{:#}",
        run.json
    );
    assert!(
        u(&run.json, &["ops", "event", "succeeded"]) > 0,
        "{:#}",
        run.json
    );
}

/// Reads an HdrHistogram interval log as text: header comments, then
/// `Tag=T,start,length,max,histogram` lines in time order, the V2
/// compressed histograms being base64 of a payload whose cookie encodes as
/// "HISTF". Returns the tags in order of first appearance.
fn hdr_tags(log: &str) -> Vec<String> {
    assert!(log.contains("#[StartTime: "), "{log}");
    let mut tags: Vec<String> = Vec::new();
    let mut last_start = -1.0f64;
    for line in log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('"'))
    {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "{line}");
        let tag = fields[0].strip_prefix("Tag=").expect("tagged");
        let start: f64 = fields[1].parse().unwrap();
        let length: f64 = fields[2].parse().unwrap();
        let max: f64 = fields[3].parse().unwrap();
        assert!(start >= last_start && length >= 0.0 && max >= 0.0, "{line}");
        last_start = start;
        assert!(fields[4].starts_with("HISTF"), "{line}");
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

/// Minimal XML well-formedness: tags nest and close, attribute quotes pair
/// up, the root is `<svg>`. Returns the `data-series` names in order.
fn check_svg(svg: &str, expect_series: &[&str]) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut series = Vec::new();
    let mut rest = svg.trim();
    let mut root = None;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(!text.contains('>'), "stray '>' in text {text:?}");
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            let name = tag.split_whitespace().next().unwrap_or("").to_string();
            root.get_or_insert_with(|| name.clone());
            if let Some(i) = tag.find("data-series=\"") {
                let v = &tag[i + 13..];
                series.push(v[..v.find('"').unwrap()].to_string());
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(root.as_deref(), Some("svg"));
    for s in expect_series {
        assert!(
            series.iter().any(|x| x == s),
            "series {s} missing from {series:?}"
        );
    }
    series
}

#[test]
fn sweep_gives_a_row_per_point_an_hdr_log_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let ep = server.endpoint();
    let hdr = dir.path().join("sweep.hlog");
    let svg = dir.path().join("sweep.svg");
    let bound = Duration::from_secs(30) + RUN_SLACK;
    let run = bench(
        &[
            "put",
            "--endpoints",
            &ep,
            "--sweep",
            "clients=1,2,4",
            "--duration",
            "700ms",
            "--key-space",
            "100",
            "--hdr-out",
            hdr.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        bound,
    );
    assert_eq!(run.code, Some(0), "{:#}", run.json);
    let v = &run.json;
    assert_eq!(v["sweep"]["param"], "clients", "{v:#}");
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{v:#}");
    for (p, clients) in points.iter().zip([1, 2, 4]) {
        check_accounting(p);
        assert_eq!(u(p, &["point"]), clients);
        assert_eq!(u(p, &["clients"]), clients);
        assert_eq!(u(p, &["requests", "failed"]), 0, "{p:#}");
    }

    let log = std::fs::read_to_string(&hdr).unwrap();
    assert_eq!(
        hdr_tags(&log),
        ["clients=1", "clients=2", "clients=4"],
        "{log}"
    );

    let svg = std::fs::read_to_string(&svg).unwrap();
    check_svg(
        &svg,
        &["clients=1", "clients=2", "clients=4", "throughput-p99"],
    );

    // The text summary: a header, a column line, one row per point; no
    // progress line when stderr is not a terminal.
    let out = bench_raw(
        &[
            "range",
            "--endpoints",
            &ep,
            "--sweep",
            "clients=1,3",
            "--duration",
            "300ms",
            "--key-space",
            "50",
            "--consistency",
            "s",
        ],
        bound,
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(rows[0].trim_start().starts_with("1 "), "{}", out.stdout);
    assert!(rows[1].trim_start().starts_with("3 "), "{}", out.stdout);
}

#[test]
fn watch_modes_report_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let ep = server.endpoint();
    let pid = server.pid().expect("running").to_string();
    let bound = Duration::from_secs(30) + RUN_SLACK;

    let run = bench(
        &[
            "watch-idle",
            "--endpoints",
            &ep,
            "--watchers",
            "100",
            "--streams",
            "4",
            "--conns",
            "2",
            "--hold",
            "200ms",
            "--server-pid",
            &pid,
            "--timeout",
            "20s",
        ],
        bound,
    );
    assert_eq!(run.code, Some(0), "{:#}", run.json);
    let v = &run.json;
    assert_eq!((u(v, &["watchers"]), u(v, &["streams"])), (100, 4), "{v:#}");
    assert!(u(v, &["rss_held"]) > 0, "{v:#}");

    let run = bench(
        &[
            "watch",
            "--endpoints",
            &ep,
            "--watchers",
            "10",
            "--streams",
            "2",
            "--conns",
            "1",
            "--total",
            "10",
            "--rate",
            "50",
            "--timeout",
            "20s",
        ],
        bound,
    );
    assert_eq!(run.code, Some(0), "{:#}", run.json);
    let v = &run.json;
    assert_eq!(u(v, &["puts_acked"]) + u(v, &["puts_failed"]), 10, "{v:#}");
    let (expected, received) = (u(v, &["events_expected"]), u(v, &["events_received"]));
    assert_eq!(expected, u(v, &["puts_acked"]) * 10, "{v:#}");
    assert!(received > 0 && received <= expected, "{v:#}");
    assert_eq!(u(v, &["events_unknown"]), 0, "{v:#}");
    assert_eq!(u(v, &["latency_from_send_us", "count"]), received, "{v:#}");
}

#[test]
fn user_flag_authenticates_against_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let server = EtcdProcess::start(dir.path());
    let ep = server.endpoint();
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"][..]] {
        let out = ferrokv_tests::etcdctl(&ep, args, None);
        assert_eq!(
            out.code, 0,
            "etcdctl {args:?}: {}{}",
            out.stdout, out.stderr
        );
    }
    let bound = Duration::from_secs(30) + RUN_SLACK;

    let run = bench(
        &[
            "put",
            "--endpoints",
            &ep,
            "--clients",
            "2",
            "--total",
            "20",
            "--user",
            "root:rootpw",
        ],
        bound,
    );
    check_clean(&run, "put --user");
    // Streams (LeaseKeepAlive) carry the token too.
    let run = bench(
        &[
            "lease-keepalive",
            "--endpoints",
            &ep,
            "--clients",
            "2",
            "--duration",
            "500ms",
            "--leases",
            "4",
            "--user",
            "root",
            "--password",
            "rootpw",
        ],
        bound,
    );
    check_clean(&run, "lease-keepalive --user");

    // No token, or a wrong password: every request fails, counted by
    // status, and the failed authentication is reported.
    for user in [None, Some("root:wrong")] {
        let mut args = vec!["put", "--endpoints", &ep, "--total", "5"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        let run = bench(&args, bound);
        check_accounting(&run.json);
        assert_eq!(run.code, Some(1), "{:#}", run.json);
        assert_eq!(u(&run.json, &["requests", "failed"]), 5, "{:#}", run.json);
        if user.is_some() {
            let e = run.json["auth_error"].as_str().unwrap_or_default();
            assert!(e.contains("authentication failed"), "{:#}", run.json);
        }
    }
}

/// TLS as etcdctl: against an etcd serving https with client certificates,
/// `--cacert/--cert/--key` (a bare host:port becomes https) work for unary
/// calls, streams and the watch modes; without the client certificate, or
/// trusting the wrong CA, every request fails and is counted.
#[test]
fn tls_flags_against_etcd_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let server = EtcdProcess::start_with(
        dir.path(),
        ferrokv_tests::ServerOptions {
            tls: Some(tls.clone()),
            ..ferrokv_tests::ServerOptions::default()
        },
    );
    let bare = server.client_addr().to_string();
    let flags = tls.client_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let bound = Duration::from_secs(30) + RUN_SLACK;

    let mut args = vec![
        "put",
        "--endpoints",
        &bare,
        "--clients",
        "2",
        "--total",
        "20",
    ];
    args.extend(&flags);
    check_clean(&bench(&args, bound), "put over TLS");
    let mut args = vec![
        "lease-keepalive",
        "--endpoints",
        &bare,
        "--clients",
        "2",
        "--duration",
        "500ms",
        "--leases",
        "4",
    ];
    args.extend(&flags);
    check_clean(&bench(&args, bound), "lease-keepalive over TLS");
    let mut args = vec![
        "watch-idle",
        "--endpoints",
        &bare,
        "--watchers",
        "10",
        "--streams",
        "2",
        "--conns",
        "1",
        "--hold",
        "0s",
    ];
    args.extend(&flags);
    let out = bench_raw(&args, bound);
    assert_eq!(
        out.code,
        Some(0),
        "watch-idle over TLS: {}{}",
        out.stdout,
        out.stderr
    );

    // The server wants a client certificate; another CA is not trusted.
    let other = ferrokv_tests::tls::generate(&dir.path().join("other"));
    let ca_only = format!("--cacert={}", tls.ca.display());
    let wrong_ca = format!("--cacert={}", other.ca.display());
    for extra in [
        vec![ca_only.as_str()],
        other
            .client_flags()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec![wrong_ca.as_str()],
    ] {
        let mut args = vec![
            "put",
            "--endpoints",
            &bare,
            "--total",
            "3",
            "--timeout",
            "2s",
        ];
        args.extend(&extra);
        let run = bench(&args, bound);
        check_accounting(&run.json);
        assert_eq!(run.code, Some(1), "{extra:?}: {:#}", run.json);
        assert_eq!(
            u(&run.json, &["requests", "failed"]),
            3,
            "{extra:?}: {:#}",
            run.json
        );
    }
}
