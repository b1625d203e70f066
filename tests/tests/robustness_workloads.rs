//! The Kubernetes-style and list-append workloads of the robustness suite
//! (issue 11) against real servers: the etcd control (Debian etcd 3.4.23;
//! a failure there is a recorder or checker bug) and ferrokv (`--shards 2`,
//! so that list-append transactions span shards).
//!
//! - `kubernetes_one_member`, `append_one_member`: one member of each, no
//!   fault; and a planted defect per checker (a watch event dropped from a
//!   reflector, a GuaranteedUpdate made to compare a revision it never
//!   read; an append removed from a read, two versions swapped) must be
//!   flagged.
//! - `kubernetes_kill_leader`, `append_kill_leader`: three members,
//!   `--heartbeat-interval 50 --election-timeout 500`, kill -9 of the
//!   leader a third into the run, restarted 1.2 s later.
//!
//! `FERROKV_ROBUST_DIR=<dir>` writes each run's history files there;
//! `FERROKV_COMPAT_CANDIDATE=etcd` runs the ferrokv half on etcd.
//!
//! Limits: each run's clients stop after its `duration` (or `settle` after
//! the fault) or `duration_max`; the linearizability search is bounded by
//! `CHECK_TIMEOUT`; every member is killed when its cluster is dropped,
//! also on panic.

use std::path::Path;
use std::time::Duration;

use ferrokv_tests::cluster::{sides, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS};
use ferrokv_tests::robust::append::{self, Append, AppendRecording};
use ferrokv_tests::robust::elle;
use ferrokv_tests::robust::kubernetes::{self, KubeRecording, Kubernetes};
use ferrokv_tests::robust::workload::{kill_leader, Fault};
use ferrokv_tests::server::ServerKind;
use ferrokv_tests::{
    ClusterOptions, EtcdCluster, EtcdProcess, FerrokvCluster, FerrokvProcess, ServerCluster,
    ServerProcess,
};

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const TOKEN: &str = "ferrokv-robust-workloads";
const SHARDS: u32 = 2;
/// Bound on one linearizability check.
/// (120 s: a history with many unknown outcomes under the full suite's
/// load once took more than 30 s to decide.)
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// A run with fewer answered ops proves nothing.
const OK_OPS_MIN: usize = 100;
/// When the leader is killed, and for how long.
const KILL_AT: Duration = Duration::from_millis(1200);
const DOWN_FOR: Duration = Duration::from_millis(1200);

fn cluster(kind: ServerKind, dir: &Path) -> ServerCluster {
    let opts = |shards| ClusterOptions {
        shards,
        extra_args: vec![
            format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
            format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
        ],
    };
    match kind {
        ServerKind::Etcd => EtcdCluster::start_with(dir, &NAMES, TOKEN, opts(None)).into_inner(),
        ServerKind::Ferrokv => {
            FerrokvCluster::start(dir, &NAMES, TOKEN, opts(Some(SHARDS))).into_inner()
        }
    }
}

fn single(kind: ServerKind, dir: &Path) -> ServerProcess {
    match kind {
        ServerKind::Etcd => EtcdProcess::start(dir).into_inner(),
        ServerKind::Ferrokv => FerrokvProcess::start_with_shards(dir, SHARDS).into_inner(),
    }
}

fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ferrokv-robust-{name}-"))
        .tempdir()
        .expect("tempdir")
}

fn keep(run: &str, write: impl FnOnce(&Path) -> std::io::Result<()>) {
    if let Ok(dir) = std::env::var("FERROKV_ROBUST_DIR") {
        let dir = Path::new(&dir).join(run);
        write(&dir).unwrap_or_else(|e| panic!("write {}: {e}", dir.display()));
    }
}

fn assert_all(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} run(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------ kubernetes

fn kube(seed: u64) -> Kubernetes {
    Kubernetes {
        seed,
        ..Kubernetes::default()
    }
}

/// Checks a Kubernetes-style recording; the report, and Err when it fails.
fn judge_kube(run: &str, rec: &KubeRecording) -> Result<String, String> {
    keep(run, |d| rec.write_to(d));
    let v = kubernetes::check_with(rec, CHECK_TIMEOUT);
    let mut report = format!("--- {run}\n{}", v.report());
    let mut ok = v.passed();
    if v.counts.0 < OK_OPS_MIN {
        report += &format!("only {} answered ops (< {OK_OPS_MIN})\n", v.counts.0);
        ok = false;
    }
    if v.compactions == 0 || v.events == 0 || v.lists_compared == 0 || v.compact_cancels == 0 {
        report += "no compaction, watch event, compared list or watch canceled by compaction: \
                   the run proves too little\n";
        ok = false;
    }
    eprintln!("{report}");
    if ok {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Each planted defect must make the check fail.
fn kube_plants(run: &str, rec: &KubeRecording, failures: &mut Vec<String>) {
    type Plant = fn(&KubeRecording) -> Option<(KubeRecording, String)>;
    let plants: [(&str, Plant); 2] = [
        ("dropped watch event", kubernetes::plant_dropped_event),
        ("lost update", kubernetes::plant_lost_update),
    ];
    for (name, plant) in plants {
        match plant(rec) {
            None => failures.push(format!("{run}: nowhere to plant a {name}")),
            Some((planted, what)) => {
                let v = kubernetes::check_with(&planted, CHECK_TIMEOUT);
                if v.passed() {
                    failures.push(format!("{run}: planted {name} ({what}) not flagged"));
                } else {
                    eprintln!(
                        "{run}: planted {name} ({what}) flagged: reflector {}, updates {}, \
                         watch {}, linearizable {}",
                        v.reflector.len(),
                        v.updates.len(),
                        v.watch.len(),
                        v.verdict.is_linearizable()
                    );
                }
            }
        }
    }
}

#[test]
fn kubernetes_one_member() {
    let dir = tempdir("kube-one");
    let mut failures = Vec::new();
    for (i, kind) in sides().into_iter().enumerate() {
        let mut server = single(kind, &dir.path().join(format!("{i}-{kind}")));
        let run = format!("kube-one-member-{kind}");
        let endpoints = vec![server.endpoint()];
        let rec =
            kube(21 + i as u64).run(&mut server, &endpoints, Vec::<Fault<ServerProcess>>::new());
        server.kill_9();
        if let Err(r) = judge_kube(&run, &rec) {
            failures.push(r);
        }
        kube_plants(&run, &rec, &mut failures);
    }
    assert_all(failures);
}

#[test]
fn kubernetes_kill_leader() {
    let dir = tempdir("kube-kill");
    let mut failures = Vec::new();
    for (i, kind) in sides().into_iter().enumerate() {
        let mut c = cluster(kind, &dir.path().join(format!("{i}-{kind}")));
        let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
        let run = format!("kube-kill-leader-{kind}");
        let w = Kubernetes {
            clients: 6,
            voids_at_faults: kind == ServerKind::Ferrokv,
            ..kube(201 + i as u64)
        };
        let rec = w.run(&mut c, &endpoints, vec![kill_leader(KILL_AT, DOWN_FOR)]);
        if let Err(r) = judge_kube(&run, &rec) {
            failures.push(r);
        }
        c.kill_9_all();
    }
    assert_all(failures);
}

// ----------------------------------------------------------- list-append

fn append_run(seed: u64) -> Append {
    Append {
        seed,
        ..Append::default()
    }
}

/// Checks a list-append recording; the report, and Err when it fails.
fn judge_append(run: &str, rec: &AppendRecording) -> Result<String, String> {
    keep(run, |d| rec.write_to(d));
    let v = append::check_with(rec, CHECK_TIMEOUT);
    let mut report = format!("--- {run}\n{}", v.report());
    let mut ok = v.passed();
    if v.txns.0 < OK_OPS_MIN {
        report += &format!(
            "only {} committed transactions (< {OK_OPS_MIN})\n",
            v.txns.0
        );
        ok = false;
    }
    eprintln!("{report}");
    if ok {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Each planted defect must be flagged by the Elle check.
fn append_plants(run: &str, rec: &AppendRecording, failures: &mut Vec<String>) {
    type Plant = fn(&[elle::Txn]) -> Option<(Vec<elle::Txn>, String)>;
    let plants: [(&str, Plant); 2] = [
        ("dropped append", append::plant_dropped_append),
        ("swapped versions", append::plant_swapped_versions),
    ];
    let txns = append::elle_txns(rec);
    for (name, plant) in plants {
        match plant(&txns) {
            None => failures.push(format!("{run}: nowhere to plant {name}")),
            Some((planted, what)) => {
                let r = elle::check(&planted);
                if r.passed() {
                    failures.push(format!("{run}: planted {name} ({what}) not flagged"));
                } else {
                    let first = r.report();
                    eprintln!(
                        "{run}: planted {name} ({what}) flagged: {}",
                        first.lines().next().unwrap_or("")
                    );
                }
            }
        }
    }
}

/// The keys land on both of ferrokv's shards (ferrokv's own routing).
fn assert_both_shards(w: &Append) {
    let shards: std::collections::BTreeSet<u32> = w
        .keys()
        .iter()
        .map(|k| ferrokv_shards::kv::shard_of(k, SHARDS))
        .collect();
    assert_eq!(
        shards.len(),
        SHARDS as usize,
        "keys on shards {shards:?} only"
    );
}

#[test]
fn append_one_member() {
    let dir = tempdir("append-one");
    let mut failures = Vec::new();
    for (i, kind) in sides().into_iter().enumerate() {
        let mut server = single(kind, &dir.path().join(format!("{i}-{kind}")));
        let run = format!("append-one-member-{kind}");
        let w = append_run(31 + i as u64);
        assert_both_shards(&w);
        let endpoints = vec![server.endpoint()];
        let rec = w.run(&mut server, &endpoints, Vec::<Fault<ServerProcess>>::new());
        server.kill_9();
        if let Err(r) = judge_append(&run, &rec) {
            failures.push(r);
        }
        append_plants(&run, &rec, &mut failures);
    }
    assert_all(failures);
}

#[test]
fn append_kill_leader() {
    let dir = tempdir("append-kill");
    let mut failures = Vec::new();
    for (i, kind) in sides().into_iter().enumerate() {
        let mut c = cluster(kind, &dir.path().join(format!("{i}-{kind}")));
        let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
        let run = format!("append-kill-leader-{kind}");
        let w = Append {
            clients: 6,
            voids_at_faults: kind == ServerKind::Ferrokv,
            ..append_run(301 + i as u64)
        };
        let rec = w.run(&mut c, &endpoints, vec![kill_leader(KILL_AT, DOWN_FOR)]);
        if let Err(r) = judge_append(&run, &rec) {
            failures.push(r);
        }
        c.kill_9_all();
    }
    assert_all(failures);
}
