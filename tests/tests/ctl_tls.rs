//! TLS on the client port, side by side: ferroctl and etcdctl against an
//! etcd and against a ferrokv that serve https and want client
//! certificates: the same output and exit code with `--cacert/--cert/--key`
//! (a bare host:port becomes https, as etcdctl does) and with
//! `--insecure-skip-tls-verify`; both refuse to work without a client
//! certificate; curl reads `/health` over https with one and is refused
//! without; and a plain-text client gets nothing from the https port.

use std::time::Duration;

use ferrokv_tests::etcdctl::{ctl_with_timeout, etcdctl_bin};
use ferrokv_tests::server::{ferroctl_bin, ServerKind};
use ferrokv_tests::{EtcdProcess, FerrokvProcess, ServerOptions};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn ferroctl_and_etcdctl_agree_over_tls_on_etcd() {
    agree_over_tls(ServerKind::Etcd);
}

#[test]
fn ferroctl_and_etcdctl_agree_over_tls_on_ferrokv() {
    agree_over_tls(ServerKind::Ferrokv);
}

fn agree_over_tls(kind: ServerKind) {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let opts = ServerOptions {
        tls: Some(tls.clone()),
        ..ServerOptions::default()
    };
    let server = match kind {
        ServerKind::Etcd => EtcdProcess::start_with(dir.path(), opts).into_inner(),
        ServerKind::Ferrokv => FerrokvProcess::start_with(dir.path(), opts).into_inner(),
    };
    let bare = server.client_addr().to_string();
    let ferroctl = ferroctl_bin().unwrap_or_else(|e| panic!("{e}"));
    let etcdctl = etcdctl_bin();
    let flags = tls.client_flags();
    // Steps whose output is the same whichever client runs first.
    let steps: [&[&str]; 4] = [
        &["put", "tls-key", "v1"],
        &["get", "tls-key"],
        &["get", "tls-key", "-w", "json"],
        &["put", "tls-key", "v1", "--prev-kv"],
    ];
    for step in steps {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(step);
        let want = ctl_with_timeout(&etcdctl, &bare, &args, None, RUN_TIMEOUT);
        let got = ctl_with_timeout(&ferroctl, &bare, &args, None, RUN_TIMEOUT);
        assert_eq!(want.code, 0, "etcdctl {step:?}: {want:?}");
        assert_eq!(
            (got.code, &got.stdout),
            (want.code, &want.stdout),
            "ferroctl {step:?} (left) vs etcdctl (right); stderr {:?}",
            got.stderr
        );
    }
    // Without the client certificate both fail (the server requires one).
    let ca_only = format!("--cacert={}", tls.ca.display());
    for bin in [&etcdctl, &ferroctl] {
        let out = ctl_with_timeout(
            bin,
            &bare,
            &[
                ca_only.as_str(),
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "get",
                "tls-key",
            ],
            None,
            RUN_TIMEOUT,
        );
        assert_ne!(
            out.code,
            0,
            "{} without a client cert: {out:?}",
            bin.display()
        );
    }
    // Not checking the server (a CA nobody passed), with the client's
    // certificate: both work and agree; ferroctl makes this connection
    // itself (ctl/src/insecure_tls.rs).
    let cert = format!("--cert={}", tls.cert.display());
    let key = format!("--key={}", tls.key.display());
    let skip = [
        "--insecure-skip-tls-verify",
        cert.as_str(),
        key.as_str(),
        "get",
        "tls-key",
    ];
    let want = ctl_with_timeout(&etcdctl, &bare, &skip, None, RUN_TIMEOUT);
    let got = ctl_with_timeout(&ferroctl, &bare, &skip, None, RUN_TIMEOUT);
    assert_eq!(want.code, 0, "{want:?}");
    assert_eq!(
        (got.code, &got.stdout),
        (want.code, &want.stdout),
        "{got:?}"
    );
    assert_eq!(got.stdout, "tls-key\nv1\n");
    // HTTP endpoints over the same TLS port (curl offers h2 and http/1.1).
    let url = format!("https://{bare}/health");
    let curl = |with_cert: bool| {
        let mut args = vec![
            "-s".to_string(),
            "--max-time".to_string(),
            "10".to_string(),
            "--cacert".to_string(),
            tls.ca.display().to_string(),
        ];
        if with_cert {
            args.extend([
                "--cert".to_string(),
                tls.cert.display().to_string(),
                "--key".to_string(),
                tls.key.display().to_string(),
            ]);
        }
        args.push(url.clone());
        ferrokv_tests::etcdctl::tool(std::path::Path::new("curl"), &args, RUN_TIMEOUT)
    };
    let health = curl(true);
    assert_eq!(health.code, 0, "{health:?}");
    assert!(health.stdout.contains("\"health\":\"true\""), "{health:?}");
    assert_ne!(curl(false).code, 0, "no client certificate, no answer");
    // A plain-text client on the TLS port gets no answer.
    let plain = ctl_with_timeout(
        &etcdctl,
        &format!("http://{bare}"),
        &[
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "get",
            "tls-key",
        ],
        None,
        RUN_TIMEOUT,
    );
    assert_ne!(plain.code, 0, "{plain:?}");
}

/// `--client-cert-auth` with auth enabled: a client certificate's common
/// name is the user when no token is sent (etcd's `AuthInfoFromTLS`), and
/// a `--user` token wins over it; the same etcdctl answers from etcd and
/// ferrokv step by step.
#[test]
fn the_client_certificates_common_name_is_the_user_as_with_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let opts = ServerOptions {
        tls: Some(tls.clone()),
        ..ServerOptions::default()
    };
    let etcd = EtcdProcess::start_with(&dir.path().join("etcd"), opts.clone()).into_inner();
    let ferrokv = FerrokvProcess::start_with(&dir.path().join("ferrokv"), opts).into_inner();
    // The harness's certificate has CN "ferrokv test": that is the user.
    let steps: &[&[&str]] = &[
        &["user", "add", "root", "--new-user-password=rootpw"],
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
        &["user", "add", "ferrokv test", "--no-password"],
        &["user", "grant-role", "ferrokv test", "app"],
        &["auth", "enable"],
        &["put", "/app/x", "1"],
        &["get", "/app/x"],
        &["put", "/other", "1"],
        &["user", "list"],
        &["user", "get", "ferrokv test"],
        &["--user", "root:rootpw", "put", "/other", "1"],
        &[
            "--user",
            "root:rootpw",
            "user",
            "revoke-role",
            "ferrokv test",
            "app",
        ],
        &["get", "/app/x"],
        &["--user", "root:rootpw", "auth", "disable"],
        &["get", "/app/x"],
    ];
    let steps: Vec<Step> = steps.iter().map(|step| (&tls, *step, None)).collect();
    let run = |server| run_steps(server, &steps);
    let want = run(&etcd);
    assert!(
        want[7].contains("OK"),
        "etcd: the CN user may write: {want:#?}"
    );
    let got = run(&ferrokv);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w);
    }
}

/// Lockout recovery (`docs/auth.md`): root's password is lost while auth is
/// enabled; a client certificate with common name `root`, issued by the
/// cluster's CA, is root without a password (`--client-cert-auth`), and
/// sets a new password or disables auth. etcd and ferrokv answer alike.
#[test]
fn a_lost_root_password_is_recovered_with_a_root_certificate_as_with_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ferrokv_tests::tls::generate(&dir.path().join("tls"));
    let root_cert = ferrokv_tests::tls::client_cert(&tls, "root");
    let opts = ServerOptions {
        tls: Some(tls.clone()),
        ..ServerOptions::default()
    };
    let etcd = EtcdProcess::start_with(&dir.path().join("etcd"), opts.clone()).into_inner();
    let ferrokv = FerrokvProcess::start_with(&dir.path().join("ferrokv"), opts).into_inner();
    // (certificate, etcdctl arguments, stdin)
    type Step<'a> = (
        &'a ferrokv_tests::tls::TlsFiles,
        &'a [&'a str],
        Option<&'a str>,
    );
    let steps: &[Step] = &[
        (
            &tls,
            &["user", "add", "root", "--new-user-password=forgotten"],
            None,
        ),
        (&tls, &["user", "grant-role", "root", "root"], None),
        (&tls, &["put", "k", "v"], None),
        (&tls, &["auth", "enable"], None),
        // Locked out: the password is lost, the usual certificate's user
        // does not exist.
        (&tls, &["--user", "root:guess", "get", "k"], None),
        (&tls, &["get", "k"], None),
        (
            &tls,
            &["user", "passwd", "root", "--interactive=false"],
            Some("x\n"),
        ),
        // The root certificate is root.
        (&root_cert, &["get", "k"], None),
        (
            &root_cert,
            &["user", "passwd", "root", "--interactive=false"],
            Some("newpw\n"),
        ),
        (&root_cert, &["--user", "root:newpw", "get", "k"], None),
        (&root_cert, &["--user", "root:forgotten", "get", "k"], None),
        (&root_cert, &["auth", "disable"], None),
        (&tls, &["get", "k"], None),
    ];
    let run = |server| run_steps(server, steps);
    let want = run(&etcd);
    assert!(
        want[8].contains("Password updated"),
        "etcd: the root certificate resets the password: {want:#?}"
    );
    let got = run(&ferrokv);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w);
    }
}

/// One etcdctl step over TLS: (certificate, arguments, stdin).
type Step<'a> = (
    &'a ferrokv_tests::tls::TlsFiles,
    &'a [&'a str],
    Option<&'a str>,
);

/// Each step run with etcdctl against `server`, its exit code and
/// normalized output, for comparing two servers step by step.
fn run_steps(server: &ferrokv_tests::ServerProcess, steps: &[Step]) -> Vec<String> {
    let etcdctl = etcdctl_bin();
    let bare = server.client_addr().to_string();
    let norm = ferrokv_tests::Normalizer::for_server(server);
    steps
        .iter()
        .map(|(cert, step, stdin)| {
            let flags = cert.client_flags();
            let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
            args.extend_from_slice(step);
            let out = norm.normalize_output(&ctl_with_timeout(
                &etcdctl,
                &bare,
                &args,
                stdin.map(str::as_bytes),
                RUN_TIMEOUT,
            ));
            format!("{step:?}: exit {}\n{}{}", out.code, out.stdout, out.stderr)
        })
        .collect()
}
