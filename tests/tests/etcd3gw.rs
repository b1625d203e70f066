//! The python etcd3gw client (PyPI; OpenStack's client, which speaks only
//! the JSON gateway) side by side: `tests/python/etcd3gw_scenario.py`
//! runs against a fresh etcd 3.4.23 and a fresh ferrokv (default shards,
//! and `--shards 4`, where the keys, leases and transactions of the
//! scenario spread over several shards), and the outputs must be the same
//! line for line after the normalizer removes what differs between two
//! correct servers: the header's ids and term, addresses, and the status
//! fields a different storage engine computes differently
//! (docs/compatibility.md). What differs by timing (lease ids, remaining
//! TTLs, random lock values) the script itself prints deterministically.
//!
//! Needs `python3` with `etcd3gw` (`scripts/test` installs it with pip
//! when missing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrokv_tests::diff::line_diff;
use ferrokv_tests::etcdctl::tool;
use ferrokv_tests::server::{ServerOptions, ServerProcess};
use ferrokv_tests::{EtcdProcess, FerrokvProcess, Normalizer};

/// Bound on one run of the scenario (it takes a few seconds; a lease of
/// one second is waited out in it).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// The scenario's last step: a run against etcd that stopped early would
/// compare only what it printed.
const SCENARIO_LAST_STEP: &str = "status at the end:";

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/etcd3gw_scenario.py")
}

/// The scenario's output against `server`, normalized.
fn run_scenario(server: &ServerProcess) -> String {
    let addr = server.client_addr();
    let out = tool(
        Path::new("python3"),
        &[
            scenario().display().to_string(),
            addr.ip().to_string(),
            addr.port().to_string(),
        ],
        SCENARIO_TIMEOUT,
    );
    // stderr may hold a library's warnings (requests about its urllib3);
    // what counts is the exit and the steps printed.
    assert!(
        out.code == 0,
        "{}: etcd3gw scenario failed (exit {}; is etcd3gw installed? \
         `python3 -m pip install etcd3gw`)\nstdout:\n{}\nstderr:\n{}",
        server.kind(),
        out.code,
        out.stdout,
        out.stderr
    );
    let mut n = Normalizer::for_server(server);
    // Computed differently by design (docs/compatibility.md): sizes and
    // raft indexes of a different storage engine; the leader is the
    // member's own id, which the literal rules already cover.
    n.add_keys(&[
        "dbSize",
        "dbSizeInUse",
        "raftIndex",
        "raftAppliedIndex",
        "raftTerm",
    ]);
    n.normalize(&out.stdout)
}

fn assert_same_as_etcd(want: &str, ferrokv: &ServerProcess, what: &str) {
    let got = run_scenario(ferrokv);
    assert!(
        got == want,
        "etcd3gw against ferrokv ({what}) differs from etcd (- etcd, + ferrokv):\n{}",
        line_diff(want, &got)
    );
}

#[test]
fn etcd3gw_scenario_answers_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    // One name for both, so the member lists compare equal.
    let opts = ServerOptions {
        name: Some("gw".into()),
        ..Default::default()
    };
    let etcd = EtcdProcess::start_with(&dir.path().join("etcd"), opts.clone());
    let want = run_scenario(&etcd);
    drop(etcd);
    assert!(
        want.lines()
            .last()
            .is_some_and(|l| l.starts_with(SCENARIO_LAST_STEP)),
        "the scenario did not run to its end against etcd:\n{want}"
    );

    let ferrokv = FerrokvProcess::start_with(&dir.path().join("ferrokv"), opts.clone());
    assert_same_as_etcd(&want, &ferrokv, "default shards");
    drop(ferrokv);

    let sharded = FerrokvProcess::start_with(
        &dir.path().join("ferrokv-4"),
        ServerOptions {
            shards: Some(4),
            ..opts
        },
    );
    assert_same_as_etcd(&want, &sharded, "--shards 4");
}
