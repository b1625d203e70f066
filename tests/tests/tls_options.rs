//! etcd's further TLS options on the client port, side by side: the same
//! openssl/curl/etcdctl steps against an etcd and a ferrokv given the same
//! files and flags, and the same outcome asked of both.
//! - `--cipher-suites`: a TLS 1.2 client offering a listed suite gets it,
//!   one offering only another is refused; TLS 1.3 is not limited (Go);
//!   an unknown name refuses the start in etcd's words.
//! - `--client-crl-file`: a revoked client certificate is refused, others
//!   served; a CRL rewritten on disk takes effect without a restart.
//! - Certificate reload: replacing `--cert-file`/`--key-file` on disk makes
//!   a new connection see the new certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrokv_tests::etcdctl::{tool, Output};
use ferrokv_tests::server::{etcd_bin, ferrokv_bin, ServerKind};
use ferrokv_tests::tls::TlsFiles;
use ferrokv_tests::{EtcdProcess, FerrokvProcess, ServerOptions, ServerProcess};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const KINDS: [ServerKind; 2] = [ServerKind::Etcd, ServerKind::Ferrokv];

fn start(kind: ServerKind, dir: &Path, tls: &TlsFiles, extra_args: Vec<String>) -> ServerProcess {
    let opts = ServerOptions {
        tls: Some(tls.clone()),
        extra_args,
        ..ServerOptions::default()
    };
    match kind {
        ServerKind::Etcd => EtcdProcess::start_with(dir, opts).into_inner(),
        ServerKind::Ferrokv => FerrokvProcess::start_with(dir, opts).into_inner(),
    }
}

/// `openssl s_client` to `server` with `client`'s certificate, and `args`.
fn s_client(server: &ServerProcess, client: &TlsFiles, args: &[&str]) -> Output {
    let mut all: Vec<String> = [
        "s_client",
        "-connect",
        &server.client_addr().to_string(),
        "-CAfile",
        &client.ca.display().to_string(),
        "-cert",
        &client.cert.display().to_string(),
        "-key",
        &client.key.display().to_string(),
        "-verify_return_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    tool(Path::new("openssl"), &all, RUN_TIMEOUT)
}

/// The negotiated "Protocol, Cipher" of a successful s_client, `None` if
/// the handshake failed.
fn negotiated(out: &Output) -> Option<String> {
    if out.code != 0 {
        return None;
    }
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("New, "))
        .unwrap_or_else(|| panic!("no 'New, ' line: {out:?}"));
    Some(line.to_string())
}

/// curl's `/health` over https with `client`'s certificate: whether the
/// server answered healthy.
fn healthy(server: &ServerProcess, client: &TlsFiles) -> bool {
    let args = [
        "-s".to_string(),
        "--max-time".to_string(),
        "10".to_string(),
        "--cacert".to_string(),
        client.ca.display().to_string(),
        "--cert".to_string(),
        client.cert.display().to_string(),
        "--key".to_string(),
        client.key.display().to_string(),
        format!("https://{}/health", server.client_addr()),
    ];
    let out = tool(Path::new("curl"), &args, RUN_TIMEOUT);
    out.code == 0 && out.stdout.contains("\"health\":\"true\"")
}

#[test]
fn cipher_suites_limit_tls12_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let mut seen = Vec::new();
    for kind in KINDS {
        let server = start(
            kind,
            dir.path(),
            &tls,
            vec!["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()],
        );
        let listed = s_client(
            &server,
            &tls,
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        );
        let other = s_client(
            &server,
            &tls,
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
        );
        // Go's list does not apply to TLS 1.3, nor does ferrokv's.
        let tls13 = s_client(
            &server,
            &tls,
            &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
        );
        let got = (negotiated(&listed), negotiated(&other), negotiated(&tls13));
        assert_eq!(
            got,
            (
                Some("New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256".to_string()),
                None,
                Some("New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384".to_string()),
            ),
            "{kind}: listed {listed:?}\nother {other:?}\ntls13 {tls13:?}"
        );
        // And the gRPC clients still work (they speak TLS 1.3).
        assert!(healthy(&server, &tls), "{kind}: /health");
        seen.push(got);
        drop(server);
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn unknown_cipher_suite_refuses_the_start_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let ferrokv = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    for (i, bin) in [etcd_bin(), ferrokv].into_iter().enumerate() {
        // Nothing listens: the check comes first (ports are unused ones).
        let args: Vec<String> = vec![
            format!("--data-dir={}", dir.path().join(format!("d{i}")).display()),
            "--listen-client-urls=http://127.0.0.1:1".to_string(),
            "--advertise-client-urls=http://127.0.0.1:1".to_string(),
            "--listen-peer-urls=http://127.0.0.1:2".to_string(),
            "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_FOO".to_string(),
        ];
        let out = tool(&bin, &args, RUN_TIMEOUT);
        assert!(
            out.stderr
                .contains("unexpected TLS cipher suite \"TLS_FOO\""),
            "{}: {out:?}",
            bin.display()
        );
        seen.push(out.code);
    }
    assert_eq!(seen, [1, 1]);
}

/// A copy of `files`' certificate and key at fixed paths in `dir`, to be
/// replaced later by [`replace`].
fn live_copy(files: &TlsFiles, dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let live = TlsFiles {
        ca: files.ca.clone(),
        cert: dir.join("live.pem"),
        key: dir.join("live.key"),
    };
    replace(&live, files);
    live
}

/// Puts `new`'s certificate and key at `live`'s paths, each by renaming a
/// written copy over it, as rotation tools do.
fn replace(live: &TlsFiles, new: &TlsFiles) {
    for (from, to) in [(&new.cert, &live.cert), (&new.key, &live.key)] {
        let tmp: PathBuf = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

fn subject(out: &Output) -> String {
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no subject= line: {out:?}"))
        .to_string()
}

#[test]
fn replaced_certificate_files_serve_new_connections_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let rotated = ferrokv_tests::tls::client_cert(&tls, "ferrokv rotated");
    let mut seen = Vec::new();
    for kind in KINDS {
        let live = live_copy(&tls, &dir.path().join(format!("live-{kind}")));
        let server = start(kind, dir.path(), &live, Vec::new());
        let before = subject(&s_client(&server, &tls, &[]));
        replace(&live, &rotated);
        let after = subject(&s_client(&server, &tls, &[]));
        seen.push((before, after));
        assert!(healthy(&server, &tls), "{kind}: /health after rotation");
        drop(server);
    }
    assert_eq!(
        seen[0],
        (
            "CN = ferrokv test".to_string(),
            "CN = ferrokv rotated".to_string()
        )
    );
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn revoked_client_certificates_are_refused_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let good = ferrokv_tests::tls::client_cert(&tls, "good");
    let revoked = ferrokv_tests::tls::client_cert(&tls, "revoked");
    let later = ferrokv_tests::tls::client_cert(&tls, "later");
    let crl = ferrokv_tests::tls::revoke(&tls, &revoked.cert);
    let first_crl = std::fs::read(&crl).unwrap();
    // Each server reads its own copy, rewritten by rename mid-test.
    let mut seen = Vec::new();
    for kind in KINDS {
        let own = dir.path().join(format!("crl-{kind}.pem"));
        std::fs::write(&own, &first_crl).unwrap();
        let server = start(
            kind,
            dir.path(),
            &tls,
            vec![format!("--client-crl-file={}", own.display())],
        );
        let mut got = vec![
            healthy(&server, &good),
            healthy(&server, &revoked),
            healthy(&server, &later),
        ];
        seen.push((kind, got.clone()));
        // Revoke one more: the new CRL applies to new connections.
        if kind == ServerKind::Etcd {
            ferrokv_tests::tls::revoke(&tls, &later.cert);
        }
        let tmp = own.with_extension("tmp");
        std::fs::copy(&crl, &tmp).unwrap();
        std::fs::rename(&tmp, &own).unwrap();
        got = vec![
            healthy(&server, &good),
            healthy(&server, &revoked),
            healthy(&server, &later),
        ];
        seen.push((kind, got));
        drop(server);
    }
    // good, revoked, later: before and after `later` is revoked.
    let want = [vec![true, false, true], vec![true, false, false]];
    let outcomes: Vec<_> = seen.iter().map(|(_, g)| g.clone()).collect();
    assert_eq!(outcomes[..2], want[..], "etcd: {seen:?}");
    assert_eq!(outcomes[2..], want[..], "ferrokv vs etcd: {seen:?}");
}

/// A server started by hand (the harness waits over plain or CA-checked
/// TLS), killed when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn auto_tls_serves_self_signed_certificates_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let ferrokv = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    for (i, bin) in [etcd_bin(), ferrokv].into_iter().enumerate() {
        let (client, peer) = ferrokv_tests::free_addr_pair();
        let data = dir.path().join(format!("d{i}"));
        let (c, p) = (format!("https://{client}"), format!("https://{peer}"));
        let args: Vec<String> = vec![
            "--name=auto".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={c}"),
            format!("--advertise-client-urls={c}"),
            format!("--listen-peer-urls={p}"),
            format!("--initial-advertise-peer-urls={p}"),
            format!("--initial-cluster=auto={p}"),
            "--auto-tls".to_string(),
            "--peer-auto-tls".to_string(),
        ];
        let log = std::fs::File::create(dir.path().join(format!("log{i}"))).unwrap();
        let child = std::process::Command::new(&bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let _server = Spawned(child);
        // Self-signed: curl cannot verify it, only skip verifying.
        let curl = |insecure: bool| {
            let mut a = vec!["-s".to_string(), "--max-time".to_string(), "5".to_string()];
            if insecure {
                a.push("-k".to_string());
            }
            a.push(format!("{c}/health"));
            tool(Path::new("curl"), &a, RUN_TIMEOUT)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !curl(true).stdout.contains("\"health\":\"true\"") {
            assert!(
                std::time::Instant::now() < deadline,
                "{} not healthy: {}",
                bin.display(),
                std::fs::read_to_string(dir.path().join(format!("log{i}"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let verified = curl(false).code == 0;
        let files: Vec<bool> = [
            "client/cert.pem",
            "client/key.pem",
            "peer/cert.pem",
            "peer/key.pem",
        ]
        .iter()
        .map(|f| data.join("fixtures").join(f).exists())
        .collect();
        let subject = tool(
            Path::new("openssl"),
            &[
                "x509",
                "-noout",
                "-subject",
                "-in",
                &data.join("fixtures/client/cert.pem").display().to_string(),
            ],
            RUN_TIMEOUT,
        );
        seen.push((verified, files, subject.stdout.trim().to_string()));
    }
    assert_eq!(
        seen[0],
        (false, vec![true; 4], "subject=O = etcd".to_string()),
        "etcd"
    );
    assert_eq!(seen[1], seen[0], "ferrokv (left) vs etcd (right)");
}
