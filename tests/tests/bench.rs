//! `ferro-bench` end to end: each workload briefly against a ferrokv started
//! here, checked through its `--json` output (counts add up, histograms
//! non-empty and ordered); runs against an address where nothing listens
//! and against a server that never answers end within their bound and report
//! failures by gRPC status code; the open loop, against a server that
//! answers only after a delay, measures latency from intended send times.
//!
//! These tests check the tool's accounting, never performance: no assertion
//! here depends on how fast the machine is, beyond generous time bounds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::server::ferrokv_bin;
use ferrokv_tests::{free_addr, FerrokvProcess};
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

/// Runs ferro-bench with `--json`, killing it if it outlives `bound` (which
/// fails the test: the tool must end on its own).
fn bench(args: &[&str], bound: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bench_bin())
        .args(args)
        .arg("--json")
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
    let out = reader.join().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("ferro-bench {args:?} ({status}) printed no JSON ({e}):\n{out}\nstderr:\n{err}")
    });
    Run {
        code: status.code(),
        json,
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
        &["--clients", "4"][..],
        &["--rate", "50", "--clients", "2"][..],
    ] {
        let mut args = vec![
            "put",
            "--endpoints",
            &ep,
            "--duration",
            "1s",
            "--timeout",
            "500ms",
        ];
        args.extend_from_slice(shape);
        let run = bench(&args, Duration::from_secs(3) + RUN_SLACK);
        check_accounting(&run.json);
        assert_eq!(run.code, Some(1));
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

/// Forwards client bytes to `upstream` after holding each chunk for
/// `delay`, so every request is answered no sooner than `delay` after it
/// was sent: a server that sleeps.
fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let pipe = |mut from: TcpStream, mut to: TcpStream, hold: Duration| {
                thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        thread::sleep(hold);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                delay,
            );
            pipe(server, client, Duration::ZERO);
        }
    });
    addr
}

#[test]
fn open_loop_measures_from_intended_send_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = FerrokvProcess::start(dir.path());
    let delay = Duration::from_millis(200);
    let proxy = delaying_proxy(server.client_addr(), delay);
    let ep = format!("http://{proxy}");
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
