//! TLS between members, as etcd configures it: https peer URLs with
//! `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file` and
//! `--peer-client-cert-auth` (the test CA of `src/tls.rs`).
//!
//! - `members_replicate_over_tls`: three members of etcd (the reference: a
//!   failure there is a broken test) and then of ferrokv: a put through one
//!   member is read through another, and `endpoint status --cluster` shows
//!   three members agreeing on one leader.
//! - `a_member_with_a_certificate_of_another_ca_cannot_join`: a fourth
//!   ferrokv that trusts the cluster's CA but whose certificate is from
//!   another CA dials the three with an https peer URL: every member refuses
//!   it in the TLS handshake (its log names the reason), it never gets as far
//!   as the peer handshake, and the cluster goes on unchanged.
//! - `a_revoked_peer_certificate_is_refused_as_by_etcd`,
//!   `a_peer_of_another_common_name_is_refused_as_by_etcd`: three members
//!   of etcd, then of ferrokv, with `--peer-crl-file` (resp.
//!   `--peer-cert-allowed-cn`); a fourth process of the same kind with a
//!   certificate of the cluster's CA that the CRL lists (resp. of another
//!   common name) dials them: every member logs its refusal with the
//!   reason (etcd's `rejected connection` warning; etcd runs with
//!   `--log-level=warn` for it), and the cluster goes on unchanged.
//! - `cipher_suites_apply_to_the_peer_port_as_etcd`: `--cipher-suites`
//!   limits TLS 1.2 on the peer port as on the client port (openssl
//!   s_client against a member's peer port; TLS 1.3 not limited, as Go).
//!
//! Not checked side by side: `--peer-cert-allowed-cn` on the certificates
//! of the members a member dials (etcd's `baseConfig` sets
//! `VerifyPeerCertificate` for clients too; ferrokv's
//! `wire::tls::server_verifier` does the same, unit-tested there).
//!
//! Every wait is bounded (`LEADER_WAIT_MAX`, `REFUSAL_WAIT_MAX`, and the
//! harness's server start and etcdctl timeouts); every process is killed
//! when its value drops, also when a test panics.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::etcdctl::{tool, Output};
use ferrokv_tests::server::{etcd_bin, ferrokv_bin, ServerKind};
use ferrokv_tests::tls::{self, TlsFiles};
use ferrokv_tests::{etcdctl, ClusterOptions, ServerCluster};
use serde_json::Value;

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const TOKEN: &str = "ferrokv-peer-tls-test";
/// ferrokv's `--shards`: two, so that several groups share each link.
const SHARDS: u32 = 2;
/// Bound on the three members agreeing on one leader.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);
/// Bound on the members logging their refusal of the fourth process.
const REFUSAL_WAIT_MAX: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `probe` every `POLL_INTERVAL` until it returns `Some`, for at most
/// `bound`.
fn poll<T>(bound: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(t) = probe() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Three members of `kind` with TLS between them.
fn start(kind: ServerKind, dir: &Path, pki: &TlsFiles) -> ServerCluster {
    start_with(kind, dir, pki, Vec::new())
}

/// [`start`] with further flags.
fn start_with(
    kind: ServerKind,
    dir: &Path,
    pki: &TlsFiles,
    extra_args: Vec<String>,
) -> ServerCluster {
    let (binary, shards) = match kind {
        ServerKind::Etcd => (etcd_bin(), None),
        ServerKind::Ferrokv => (
            ferrokv_bin().unwrap_or_else(|e| panic!("{e}")),
            Some(SHARDS),
        ),
    };
    let opts = ClusterOptions { shards, extra_args };
    let cluster =
        ServerCluster::start_peer_tls(kind, binary, dir, &NAMES, TOKEN, opts, Some(pki.clone()));
    for m in &cluster.members {
        assert!(m.peer_url().starts_with("https://"), "{}", m.peer_url());
    }
    assert!(cluster.initial_cluster().contains("=https://"));
    cluster
}

/// `(member id, leader id)` of every member `endpoint status --cluster`
/// lists.
fn statuses(cluster: &ServerCluster) -> Vec<(u64, u64)> {
    let out = etcdctl(
        &cluster.members[0].endpoint(),
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
    );
    if out.code != 0 {
        return Vec::new();
    }
    let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&out.stdout) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            let s = &r["Status"];
            Some((s["header"]["member_id"].as_u64()?, s["leader"].as_u64()?))
        })
        .collect()
}

/// Waits until the three members name one leader, one of them; its id.
fn one_leader(cluster: &ServerCluster) -> u64 {
    let mut last = Vec::new();
    poll(LEADER_WAIT_MAX, || {
        last = statuses(cluster);
        let members: BTreeSet<u64> = last.iter().map(|(m, _)| *m).collect();
        let leaders: BTreeSet<u64> = last.iter().map(|(_, l)| *l).collect();
        match leaders.iter().next() {
            Some(&l) if last.len() == 3 && leaders.len() == 1 && members.contains(&l) => Some(l),
            _ => None,
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "no single leader within {LEADER_WAIT_MAX:?}: {last:?}\n{}",
            cluster.log_tails()
        )
    })
}

/// A put through `from` read (linearizably) through `to`.
fn put_then_get(cluster: &ServerCluster, from: usize, to: usize, key: &str, value: &str) {
    let put = etcdctl(
        &cluster.members[from].endpoint(),
        &["put", key, value],
        None,
    );
    assert_eq!(
        (put.code, put.stdout.trim()),
        (0, "OK"),
        "put through {}: {put:?}\n{}",
        cluster.members[from].name(),
        cluster.log_tails()
    );
    let get = etcdctl(&cluster.members[to].endpoint(), &["get", key], None);
    assert_eq!(
        (get.code, get.stdout.as_str()),
        (0, format!("{key}\n{value}\n").as_str()),
        "get through {}: {get:?}",
        cluster.members[to].name()
    );
}

#[test]
fn members_replicate_over_tls() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-peer-tls-")
        .tempdir()
        .expect("tempdir");
    let pki = tls::generate(&dir.path().join("pki"));
    for kind in [ServerKind::Etcd, ServerKind::Ferrokv] {
        let cluster = start(kind, &dir.path().join(kind.to_string()), &pki);
        one_leader(&cluster);
        put_then_get(&cluster, 0, 1, "tls/k1", "v1");
        put_then_get(&cluster, 2, 0, "tls/k2", "v2");
        let members = etcdctl(&cluster.members[1].endpoint(), &["member", "list"], None);
        assert_eq!(members.code, 0, "{members:?}");
        assert_eq!(
            members.stdout.matches("https://").count(),
            3,
            "{kind}: {members:?}"
        );
    }
}

#[test]
fn a_member_with_a_certificate_of_another_ca_cannot_join() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-peer-tls-outsider-")
        .tempdir()
        .expect("tempdir");
    let pki = tls::generate(&dir.path().join("pki"));
    let other = tls::generate(&dir.path().join("other-pki"));
    let cluster = start(ServerKind::Ferrokv, &dir.path().join("ferrokv"), &pki);
    let leader = one_leader(&cluster);
    // It trusts the cluster's CA (so it could verify the members), but
    // presents a certificate the members cannot verify.
    let outsider_files = TlsFiles {
        ca: pki.ca.clone(),
        cert: other.cert.clone(),
        key: other.key.clone(),
    };
    let mut outsider = cluster.spawn_outsider("m4", Some(outsider_files));
    assert!(outsider.peer_url().starts_with("https://"));
    let refused_by_all = poll(REFUSAL_WAIT_MAX, || {
        cluster
            .members
            .iter()
            .all(|m| {
                m.log_tail().lines().any(|l| {
                    l.contains("peer transport: rejected connection from")
                        // BadSignature: both test CAs have the same name.
                        && l.contains("TLS handshake failed: invalid peer certificate")
                })
            })
            .then_some(())
    });
    assert!(
        refused_by_all.is_some(),
        "not every member logged the refusal within {REFUSAL_WAIT_MAX:?}\n{}\n--- outsider log:\n{}",
        cluster.log_tails(),
        outsider.log_tail()
    );
    assert!(outsider.is_running(), "{}", outsider.log_tail());
    // Refused in the TLS handshake, before the peer handshake would have
    // told it its cluster id is not theirs.
    for m in &cluster.members {
        let log = m.log_tail();
        assert!(!log.contains("cluster ID mismatch"), "{}:\n{log}", m.name());
    }
    let log = outsider.log_tail();
    assert!(
        log.contains("cannot reach member") && log.contains("alert"),
        "{log}"
    );
    outsider.kill_9();
    // The cluster did not notice anything else.
    assert_eq!(one_leader(&cluster), leader);
    put_then_get(&cluster, 1, 2, "tls/after", "still");
    let members = etcdctl(&cluster.members[0].endpoint(), &["member", "list"], None);
    assert_eq!(members.stdout.lines().count(), 3, "{members:?}");
}

/// A fourth process of the cluster's kind, dialing the members with
/// `outsider_files`, is refused by every member with a log line naming
/// `reason`; the cluster goes on as it was.
fn outsider_is_refused(
    kind: ServerKind,
    dir: &Path,
    pki: &TlsFiles,
    flag: String,
    outsider_files: TlsFiles,
    reason: &str,
) {
    let mut extra_args = vec![flag];
    if kind == ServerKind::Etcd {
        // etcd logs the refusal as a warning; the harness quiets it to
        // errors (the last --log-level wins).
        extra_args.push("--log-level=warn".to_string());
    }
    let cluster = start_with(kind, dir, pki, extra_args);
    let leader = one_leader(&cluster);
    put_then_get(&cluster, 0, 1, "tls/before", "v");
    let mut outsider = cluster.spawn_outsider("m4", Some(outsider_files));
    let refused_by_all = poll(REFUSAL_WAIT_MAX, || {
        cluster
            .members
            .iter()
            .all(|m| {
                m.log_tail()
                    .lines()
                    .any(|l| l.contains("rejected connection") && l.contains(reason))
            })
            .then_some(())
    });
    assert!(
        refused_by_all.is_some(),
        "{kind}: not every member logged the refusal ({reason}) within {REFUSAL_WAIT_MAX:?}\n{}\n--- outsider log:\n{}",
        cluster.log_tails(),
        outsider.log_tail()
    );
    outsider.kill_9();
    assert_eq!(one_leader(&cluster), leader, "{kind}");
    put_then_get(&cluster, 1, 2, "tls/after", "still");
    let members = etcdctl(&cluster.members[0].endpoint(), &["member", "list"], None);
    assert_eq!(members.stdout.lines().count(), 3, "{kind}: {members:?}");
}

#[test]
fn a_revoked_peer_certificate_is_refused_as_by_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-peer-crl-")
        .tempdir()
        .expect("tempdir");
    let pki = tls::generate(&dir.path().join("pki"));
    // The members' own CA and common name: only the CRL tells it apart.
    let revoked = tls::client_cert(&pki, "ferrokv test");
    let crl = tls::revoke(&pki, &revoked.cert);
    for kind in [ServerKind::Etcd, ServerKind::Ferrokv] {
        // etcd: "transport: certificate serial ... revoked"; ferrokv
        // (webpki): "invalid peer certificate: Revoked".
        let reason = match kind {
            ServerKind::Etcd => "revoked",
            ServerKind::Ferrokv => "Revoked",
        };
        outsider_is_refused(
            kind,
            &dir.path().join(kind.to_string()),
            &pki,
            format!("--peer-crl-file={}", crl.display()),
            revoked.clone(),
            reason,
        );
    }
}

#[test]
fn a_peer_of_another_common_name_is_refused_as_by_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-peer-cn-")
        .tempdir()
        .expect("tempdir");
    let pki = tls::generate(&dir.path().join("pki"));
    // Of the members' CA, but not of their common name.
    let intruder = tls::client_cert(&pki, "intruder");
    for kind in [ServerKind::Etcd, ServerKind::Ferrokv] {
        outsider_is_refused(
            kind,
            &dir.path().join(kind.to_string()),
            &pki,
            "--peer-cert-allowed-cn=ferrokv test".to_string(),
            intruder.clone(),
            "client certificate authentication failed",
        );
    }
}

/// `openssl s_client` to `addr` with `client`'s certificate, and `args`.
fn s_client(addr: std::net::SocketAddr, client: &TlsFiles, args: &[&str]) -> Output {
    let mut all: Vec<String> = vec![
        "s_client".to_string(),
        "-connect".to_string(),
        addr.to_string(),
        "-CAfile".to_string(),
        client.ca.display().to_string(),
        "-cert".to_string(),
        client.cert.display().to_string(),
        "-key".to_string(),
        client.key.display().to_string(),
        "-verify_return_error".to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tool(Path::new("openssl"), &all, Duration::from_secs(30))
}

/// The negotiated "New, Protocol, Cipher" line of a successful s_client,
/// `None` if the handshake failed.
fn negotiated(out: &Output) -> Option<String> {
    if out.code != 0 {
        return None;
    }
    out.stdout
        .lines()
        .find(|l| l.starts_with("New, "))
        .map(str::to_string)
}

#[test]
fn cipher_suites_apply_to_the_peer_port_as_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("ferrokv-peer-ciphers-")
        .tempdir()
        .expect("tempdir");
    let pki = tls::generate(&dir.path().join("pki"));
    let mut seen = Vec::new();
    for kind in [ServerKind::Etcd, ServerKind::Ferrokv] {
        let cluster = start_with(
            kind,
            &dir.path().join(kind.to_string()),
            &pki,
            vec!["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()],
        );
        // The members replicate with the one suite.
        one_leader(&cluster);
        put_then_get(&cluster, 0, 2, "tls/ciphers", "v");
        let peer = cluster.members[1].peer_addr();
        let listed = s_client(
            peer,
            &pki,
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        );
        let other = s_client(
            peer,
            &pki,
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
        );
        let tls13 = s_client(
            peer,
            &pki,
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
            "{kind}: {listed:?}\n{other:?}\n{tls13:?}"
        );
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1]);
}
