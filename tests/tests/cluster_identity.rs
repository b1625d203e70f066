//! Member and cluster ids as etcd derives them, and etcd's bootstrap checks,
//! compared with the real etcd:
//!
//! - a live three-member etcd cluster's `member list` against ferrokv's
//!   derivation (`ferrokv::cluster`) for the same `--initial-cluster` and
//!   token (ferrokv cannot form that cluster yet: replication lands
//!   separately; then this compares two live clusters);
//! - one-member etcd and ferrokv started with the same identity flags
//!   report the same ids, also after a restart told other flags;
//! - flags etcd refuses to bootstrap with are refused by ferrokv in the
//!   same words, with the same exit code.

use std::path::Path;
use std::time::Duration;

use ferrokv::cluster::{self, BootstrapFlags, ClusterState};
use ferrokv_tests::server::{etcd_bin, ferrokv_bin, run_to_exit};
use ferrokv_tests::{
    etcdctl, free_addr_pair, http_get, EtcdCluster, EtcdProcess, FerrokvProcess, ServerOptions,
    ServerProcess,
};
use serde_json::Value;

/// Bound on a start that must be refused: both servers refuse in well
/// under a second.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// `member list -w json` as (header cluster_id, header member_id,
/// [(ID, name, peerURLs, clientURLs, isLearner)]).
type MemberRow = (u64, String, Vec<String>, Vec<String>, bool);

fn member_list(server: &ServerProcess) -> (u64, u64, Vec<MemberRow>) {
    let out = etcdctl(&server.endpoint(), &["member", "list", "-w", "json"], None);
    assert_eq!(out.code, 0, "{}: {out:?}", server.kind());
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let members = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().unwrap(),
                m["name"].as_str().unwrap_or("").to_string(),
                strings(&m["peerURLs"]),
                strings(&m["clientURLs"]),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    (
        v["header"]["cluster_id"].as_u64().unwrap(),
        v["header"]["member_id"].as_u64().unwrap(),
        members,
    )
}

/// etcd's `etcd_server_id{server_id="..."}` label from `/metrics`.
fn server_id_metric(server: &ServerProcess) -> String {
    let (_, body) = http_get(server.client_addr(), "/metrics");
    let line = body
        .lines()
        .find(|l| l.starts_with("etcd_server_id{"))
        .unwrap_or_else(|| panic!("{}: no etcd_server_id in /metrics", server.kind()));
    line.to_string()
}

#[test]
fn three_member_etcd_cluster_has_the_ids_ferrokv_derives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "ferrokv-identity";
    let etcd = EtcdCluster::start(dir.path(), &["m1", "m2", "m3"], token);
    let (cluster_id, _, members) = member_list(&etcd.members[0]);
    assert_eq!(members.len(), 3, "{members:?}");
    for m in &etcd.members {
        let advertised = cluster::normalize_urls(&[m.peer_url()]).unwrap();
        let ours = cluster::bootstrap(
            &BootstrapFlags {
                name: m.name(),
                initial_cluster: etcd.initial_cluster(),
                initial_cluster_state: ClusterState::New,
                initial_cluster_token: etcd.token(),
                advertise_peer_urls: &advertised,
                advertise_client_urls: &[],
            },
            &cluster::resolve_system,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", m.name()));
        assert_eq!(ours.cluster_id(), cluster_id, "cluster id");
        // Each member's own header, and its row in the list.
        let (cid, member_id, _) = member_list(m);
        assert_eq!(
            (cid, member_id),
            (ours.cluster_id(), ours.local_id()),
            "{}",
            m.name()
        );
        let row = members.iter().find(|r| r.1 == m.name()).expect("listed");
        assert_eq!(row.0, ours.local_id(), "{}", m.name());
        // Every member's id, in etcd's order (by id).
        let ids: Vec<u64> = members.iter().map(|r| r.0).collect();
        let our_ids: Vec<u64> = ours.members().iter().map(|m| m.id).collect();
        assert_eq!(our_ids, ids);
        assert_eq!(ours.voter_ids(), ids);
        assert_eq!(
            server_id_metric(m),
            format!("etcd_server_id{{server_id=\"{:x}\"}} 1", ours.local_id())
        );
    }
}

/// etcd and ferrokv with the same name, advertised peer URLs and token
/// (each listening on its own ports: the advertised URLs are only hashed
/// in a one-member cluster).
fn start_both(
    dir: &Path,
    name: &str,
    peer_urls: &str,
    token: &str,
) -> (EtcdProcess, FerrokvProcess) {
    let initial_cluster = peer_urls
        .split(',')
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let opts = ServerOptions {
        name: Some(name.to_string()),
        extra_args: vec![
            format!("--initial-advertise-peer-urls={peer_urls}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-token={token}"),
        ],
        ..ServerOptions::default()
    };
    (
        EtcdProcess::start_with(&dir.join("etcd"), opts.clone()),
        FerrokvProcess::start_with(&dir.join("ferrokv"), opts),
    )
}

/// What `member list` shows of the member, its client URL aside (each
/// server has its own).
fn identity(server: &ServerProcess) -> (u64, u64, Vec<MemberRow>) {
    let (cid, mid, mut members) = member_list(server);
    for m in &mut members {
        assert_eq!(m.3, vec![server.client_url()], "{}", server.kind());
        m.3.clear();
    }
    (cid, mid, members)
}

#[test]
fn one_member_ids_match_etcd_started_with_the_same_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    // etcd without arguments: name default, http://localhost:2380,
    // etcd-cluster (not bound: both listen on their own peer ports).
    let (etcd, ferrokv) = start_both(
        &dir.path().join("default"),
        "default",
        "http://localhost:2380",
        "etcd-cluster",
    );
    let want = identity(&etcd);
    assert_eq!(
        (want.0, want.1),
        (0xcdf818194e3a8c32, 0x8e9e05c52164694d),
        "etcd's default ids"
    );
    assert_eq!(identity(&ferrokv), want);
    assert_eq!(server_id_metric(&ferrokv), server_id_metric(&etcd));
    drop((etcd, ferrokv));

    // Two peer URLs given unsorted, another token; an empty token.
    for (case, peers, token) in [
        (
            "two-urls",
            "http://127.0.0.1:41002,http://127.0.0.1:41001",
            "identity-test",
        ),
        ("empty-token", "http://127.0.0.1:41003", ""),
    ] {
        let (etcd, ferrokv) = start_both(&dir.path().join(case), "m1", peers, token);
        let want = identity(&etcd);
        assert_eq!(identity(&ferrokv), want, "{case}");
        let derived = cluster::Membership::from_urls_map(
            &cluster::UrlsMap::parse(&format!(
                "m1={}",
                peers.split(',').collect::<Vec<_>>().join(",m1=")
            ))
            .unwrap(),
            token,
            "m1",
        )
        .unwrap();
        assert_eq!(
            (want.0, want.1),
            (derived.cluster_id(), derived.local_id()),
            "{case}"
        );
    }
}

#[test]
fn a_restarted_member_keeps_its_ids_whatever_its_initial_cluster_flags_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut etcd, mut ferrokv) = start_both(dir.path(), "m1", "http://127.0.0.1:41010", "before");
    let want = identity(&etcd);
    assert_eq!(identity(&ferrokv), want);
    for server in [&mut *etcd, &mut *ferrokv] {
        server.kill_9();
        // Another token and cluster, consistent in themselves: ignored
        // once the member has data, as etcd ignores them.
        server.set_extra_args(vec![
            "--initial-advertise-peer-urls=http://127.0.0.1:41011".to_string(),
            "--initial-cluster=m1=http://127.0.0.1:41011".to_string(),
            "--initial-cluster-token=after".to_string(),
        ]);
        server.start_again();
    }
    assert_eq!(identity(&etcd), want, "etcd");
    assert_eq!(identity(&ferrokv), want, "ferrokv");
    assert!(
        ferrokv.data_dir().join("member").join("cluster").is_file(),
        "membership kept in <data-dir>/member/cluster"
    );
}

/// etcd's message in its log line (`... C | etcdmain: <message>`, or a
/// flag error on the first line).
fn etcd_message(stderr: &str) -> String {
    if let Some(line) = stderr.lines().find(|l| l.contains(" C | ")) {
        let (_, msg) = line.split_once(" C | ").unwrap();
        return msg.split_once(": ").map_or(msg, |(_, m)| m).to_string();
    }
    stderr.lines().next().unwrap_or("").to_string()
}

/// The flags of a start that must be refused: `data_dir`, free client and
/// peer ports, then `flags`.
fn refused_start_args(data_dir: &Path, flags: &[String]) -> Vec<String> {
    let (client, peer) = free_addr_pair();
    let mut args = vec![
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls=http://{client}"),
        format!("--advertise-client-urls=http://{client}"),
        format!("--listen-peer-urls=http://{peer}"),
    ];
    args.extend(flags.iter().cloned());
    args
}

#[test]
fn bootstrap_refusals_are_etcds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = "http://127.0.0.1:41020";
    let q = "http://127.0.0.1:41021";
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "name not in --initial-cluster",
            vec![
                "--name=m2".into(),
                format!("--initial-cluster=m1={p}"),
                format!("--initial-advertise-peer-urls={p}"),
            ],
        ),
        (
            "advertised URL not the cluster's (default cluster)",
            vec![format!("--initial-advertise-peer-urls={p}")],
        ),
        (
            "--initial-cluster has more URLs",
            vec![
                format!("--initial-cluster=default={p},default={q}"),
                format!("--initial-advertise-peer-urls={p}"),
            ],
        ),
        (
            "--initial-advertise-peer-urls has more URLs",
            vec![
                format!("--initial-cluster=default={p}"),
                format!("--initial-advertise-peer-urls={p},{q}"),
            ],
        ),
        (
            "duplicate URL",
            vec![
                format!("--initial-cluster=default={p},b={p}"),
                format!("--initial-advertise-peer-urls={p}"),
            ],
        ),
        (
            "URL without a scheme",
            vec![
                "--initial-cluster=default=127.0.0.1:41020".into(),
                format!("--initial-advertise-peer-urls={p}"),
            ],
        ),
        (
            "unknown cluster state",
            vec!["--initial-cluster-state=foo".into()],
        ),
    ];
    let ferrokv = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    for (i, (case, flags)) in cases.iter().enumerate() {
        let run = |bin: &Path, kind: &str| {
            let data_dir = dir.path().join(format!("{kind}-{i}"));
            let args = refused_start_args(&data_dir, flags);
            (run_to_exit(bin, &args, REFUSAL_TIMEOUT), data_dir)
        };
        let (etcd_out, _) = run(&etcd_bin(), "etcd");
        let (ours, data_dir) = run(&ferrokv, "ferrokv");
        assert_ne!(etcd_out.code, 0, "{case}: etcd started: {etcd_out:?}");
        let want = etcd_message(&etcd_out.stderr);
        assert!(!want.is_empty(), "{case}: {etcd_out:?}");
        assert_eq!(
            ours.code, etcd_out.code,
            "{case}: exit code; ferrokv {ours:?}"
        );
        assert!(
            ours.stderr.lines().any(|l| l == want),
            "{case}: etcd says {want:?}; ferrokv: {ours:?}"
        );
        assert!(
            !data_dir.join("member").join("cluster").exists(),
            "{case}: a refused start writes no membership"
        );
    }
}

/// Flags that parse but that etcd's verification refuses: the same words
/// after "error verifying flags, ", the same exit code (1, not a usage
/// error's 2), nothing written.
#[test]
fn flag_verification_refusals_are_etcds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[&str]); 3] = [
        ("election timeout too long", &["--election-timeout=50001"]),
        (
            "election timeout under 5 heartbeats",
            &["--election-timeout=400"],
        ),
        (
            "heartbeat above the election timeout",
            &["--heartbeat-interval=300", "--election-timeout=1000"],
        ),
    ];
    let ferrokv = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let said = |stderr: &str| -> Option<String> {
        let (_, rest) = stderr.split_once("error verifying flags, ")?;
        let line = rest.lines().next()?;
        Some(
            line.split_once(". See '")
                .map_or(line, |(m, _)| m)
                .to_string(),
        )
    };
    for (i, (case, flags)) in cases.iter().enumerate() {
        let mut seen = Vec::new();
        for (kind, bin) in [("etcd", etcd_bin()), ("ferrokv", ferrokv.clone())] {
            let data_dir = dir.path().join(format!("{kind}-{i}"));
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            let args = refused_start_args(&data_dir, &flags);
            let out = run_to_exit(&bin, &args, REFUSAL_TIMEOUT);
            assert!(
                !data_dir.join("member").exists(),
                "{case}: {kind} wrote its data dir"
            );
            seen.push((
                out.code,
                said(&out.stderr).unwrap_or_else(|| out.stderr.clone()),
            ));
        }
        assert_eq!(seen[0].0, 1, "{case}: etcd {seen:?}");
        assert_eq!(seen[0], seen[1], "{case}: etcd, then ferrokv");
    }
}

#[test]
fn joining_with_no_member_reachable_fails_as_etcd_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = free_addr_pair();
    let data_dir = dir.path().join("data");
    let args = vec![
        "--name=m2".to_string(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls=http://{client}"),
        format!("--advertise-client-urls=http://{client}"),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster=m1=http://127.0.0.1:41030,m2=http://{peer}"),
        "--initial-cluster-state=existing".to_string(),
    ];
    let ferrokv = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
    let out = run_to_exit(&ferrokv, &args, REFUSAL_TIMEOUT);
    assert_eq!(out.code, 1, "{out:?}");
    // etcd's words (its `GetClusterFromRemotePeers`); joining a running
    // cluster is checked in membership.rs.
    assert!(
        out.stderr.contains(
            "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs"
        ),
        "{out:?}"
    );
    assert!(!data_dir.join("member").exists(), "nothing written");
}
