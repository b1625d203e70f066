//! The client port beyond gRPC KV: HTTP/1.1 endpoints side by side with
//! etcd, hostile bytes that must not disturb other clients, and systemd
//! readiness.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrokv_tests::{etcdctl, http_get, EtcdProcess, FerrokvProcess};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn health_and_version_answer_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let ferrokv = FerrokvProcess::start(dir.path());
    for path in ["/health", "/version"] {
        let want = http_get(etcd.client_addr(), path);
        let got = http_get(ferrokv.client_addr(), path);
        assert_eq!(got, want, "GET {path}");
    }
    let (status, _) = http_get(ferrokv.client_addr(), "/no-such-page");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn metrics_carry_etcds_names_and_count_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let ferrokv = FerrokvProcess::start(dir.path());
    for server in [&*etcd, &*ferrokv] {
        let out = etcdctl(&server.endpoint(), &["put", "k", "v"], None);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let (_, etcd_metrics) = http_get(etcd.client_addr(), "/metrics");
    let (status, ours) = http_get(ferrokv.client_addr(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for name in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
        "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_current_revision",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_virtual_memory_bytes gauge",
    ] {
        assert!(etcd_metrics.contains(name), "etcd itself lacks {name:?}");
        assert!(
            ours.contains(name),
            "ferrokv /metrics lacks {name:?}:\n{ours}"
        );
    }
    let fsyncs: u64 = ours
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("fsync count");
    assert!(
        fsyncs >= 1,
        "a put was acknowledged without any fsync: {fsyncs}"
    );
    let rss: f64 = ours
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("resident memory");
    assert!(rss > 1e6, "a running server holds more than 1 MB: {rss}");
}

/// gRPC by curl (HTTP/2 prior knowledge): a request whose body is not a
/// protobuf; returns the grpc-status the server sent.
fn grpc_status_of_garbage(addr: SocketAddr) -> String {
    let body: &[u8] = &[0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
    let mut child = Command::new("curl")
        .args(["-s", "-i", "--http2-prior-knowledge", "--max-time", "5"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["--data-binary", "@-"])
        .arg(format!("http://{addr}/etcdserverpb.KV/Put"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("grpc-status: "))
        .unwrap_or("<none>")
        .trim()
        .to_string()
}

#[test]
fn hostile_bytes_on_the_client_port_leave_other_clients_served() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let ferrokv = FerrokvProcess::start(dir.path());
    let addr = ferrokv.client_addr();
    let ok = etcdctl(&ferrokv.endpoint(), &["put", "before", "1"], None);
    assert_eq!(ok.code, 0, "{ok:?}");

    // Garbage, a truncated HTTP/2 preface, a preface then garbage frames,
    // and idle half-closed connections.
    let payloads: [&[u8]; 4] = [
        b"\x16\x03\x01\x02\x00garbage that is not http at all\r\n\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"",
    ];
    let mut idle = Vec::new();
    for p in payloads {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
        s.write_all(p).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        idle.push(s);
    }
    // A gRPC call whose message is not a protobuf fails as it does on etcd
    // (Internal), on a stream of its own.
    assert_eq!(grpc_status_of_garbage(etcd.client_addr()), "13");
    assert_eq!(grpc_status_of_garbage(addr), "13");

    let put = etcdctl(&ferrokv.endpoint(), &["put", "after", "2"], None);
    assert_eq!(put.code, 0, "{put:?}");
    let get = etcdctl(
        &ferrokv.endpoint(),
        &["get", "--from-key", "", "--keys-only"],
        None,
    );
    assert_eq!(get.stdout, "after\n\nbefore\n\n");
    drop(idle);
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn systemd_notify_ready_once_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr = ferrokv_tests::free_addr();
    let bin = ferrokv_tests::server::ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{addr}");
    let child = Command::new(bin)
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard(child);
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Ready means serving.
    let out = etcdctl(&addr.to_string(), &["put", "k", "v"], None);
    assert_eq!(out.code, 0, "{out:?}");
}
