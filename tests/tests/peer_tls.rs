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
//!
//! Every wait is bounded (`LEADER_WAIT_MAX`, `REFUSAL_WAIT_MAX`, and the
//! harness's server start and etcdctl timeouts); every process is killed
//! when its value drops, also when a test panics.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

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
    let (binary, shards) = match kind {
        ServerKind::Etcd => (etcd_bin(), None),
        ServerKind::Ferrokv => (
            ferrokv_bin().unwrap_or_else(|e| panic!("{e}")),
            Some(SHARDS),
        ),
    };
    let opts = ClusterOptions {
        shards,
        ..ClusterOptions::default()
    };
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
