//! `ferroutl` against files made by a real ferrokv: `snapshot status` of a
//! backup saved with the real `etcdctl snapshot save` (the same output as
//! `ferroctl snapshot status`), `snapshot restore` into a member that then
//! serves the same keys, refusal of a damaged backup (and
//! `--skip-hash-check`), `defrag --data-dir` and `wal --data-dir` on a
//! stopped member, and usage errors.
//!
//! Every run is bounded; servers stop on drop.

use std::time::Duration;

use ferrokv_tests::etcdctl::{ctl_with_timeout, tool, Output};
use ferrokv_tests::server::{ferroctl_bin, ferroutl_bin};
use ferrokv_tests::{etcdctl, FerrokvProcess, ServerOptions, ServerProcess};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn start(dir: &std::path::Path) -> ServerProcess {
    FerrokvProcess::start_with(
        dir,
        ServerOptions {
            shards: Some(2),
            ..ServerOptions::default()
        },
    )
    .into_inner()
}

fn ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = etcdctl(&server.endpoint(), args, None);
    assert_eq!(out.code, 0, "etcdctl {args:?}: {out:?}");
    out.stdout
}

fn utl(args: &[&str]) -> Output {
    tool(
        &ferroutl_bin().unwrap_or_else(|e| panic!("{e}")),
        args,
        TOOL_TIMEOUT,
    )
}

/// ferroctl's offline commands (no server involved).
fn ctl_offline(args: &[&str]) -> Output {
    tool(
        &ferroctl_bin().unwrap_or_else(|e| panic!("{e}")),
        args,
        TOOL_TIMEOUT,
    )
}

/// Every key with all its fields, without the header.
fn dump(server: &ServerProcess) -> serde_json::Value {
    let out = ok(server, &["get", "--prefix", "", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["kvs"].clone()
}

#[test]
fn snapshot_status_restore_defrag_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let lease = ok(&server, &["lease", "grant", "600"]);
    let lease = lease.split_whitespace().nth(1).unwrap().to_string();
    for i in 0..20 {
        ok(&server, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    ok(&server, &["put", "--lease", &lease, "leased", "x"]);
    ok(&server, &["del", "k00"]);
    let want = dump(&server);
    let file = dir.path().join("backup.db");
    let file = file.to_str().unwrap();
    ok(&server, &["snapshot", "save", file]);

    // status: the revision and key count of the backup, as etcdctl prints.
    let st = utl(&["snapshot", "status", file, "-w", "json"]);
    assert_eq!(st.code, 0, "{st:?}");
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["revision"], 23, "{}", st.stdout);
    assert_eq!(v["totalKey"], 20, "{}", st.stdout);
    let table = utl(&["snapshot", "status", file, "-w", "table"]);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 5, "{}", table.stdout);
    assert!(
        rows[1].ends_with("| REVISION | TOTAL KEYS | TOTAL SIZE |"),
        "{}",
        table.stdout
    );
    let cells: Vec<&str> = rows[3].split('|').map(str::trim).collect();
    assert_eq!(&cells[2..4], ["23", "20"], "{}", table.stdout);
    let via_ctl = ctl_with_timeout(
        &ferroctl_bin().unwrap_or_else(|e| panic!("{e}")),
        &server.endpoint(),
        &["snapshot", "status", file, "-w", "json"],
        None,
        TOOL_TIMEOUT,
    );
    assert_eq!(via_ctl.stdout, st.stdout, "ferroctl and ferroutl agree");

    // restore into a fresh member: the same keys (revisions, leases).
    let restored_dir = tempfile::tempdir().unwrap();
    let mut restored = start(restored_dir.path());
    restored.kill_9();
    std::fs::remove_dir_all(restored.data_dir()).unwrap();
    let target = restored.data_dir().to_str().unwrap().to_string();
    let mut bad = std::fs::read(file).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let bad_file = dir.path().join("bad.db");
    std::fs::write(&bad_file, &bad).unwrap();
    let refused = utl(&[
        "snapshot",
        "restore",
        bad_file.to_str().unwrap(),
        "--data-dir",
        &target,
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("integrity check failed"),
        "{refused:?}"
    );
    let wrong_name = utl(&[
        "snapshot",
        "restore",
        file,
        "--data-dir",
        &target,
        "--name",
        "m1",
        "--initial-cluster",
        "m2=http://127.0.0.1:2380",
    ]);
    assert_eq!(wrong_name.code, 1, "{wrong_name:?}");
    assert!(
        wrong_name
            .stderr
            .contains("couldn't find local name \"m1\""),
        "{wrong_name:?}"
    );
    let done = utl(&[
        "snapshot",
        "restore",
        file,
        "--data-dir",
        &target,
        "--name",
        "m1",
        "--initial-cluster",
        "m1=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster-token",
        "restored",
    ]);
    assert_eq!(done.code, 0, "{done:?}");
    assert!(
        done.stdout.contains("at revision 23 (20 keys, 2 shards)"),
        "{done:?}"
    );
    restored.start_again();
    assert_eq!(dump(&restored), want);
    let ttl = ok(&restored, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    drop(restored);

    // A hash that does not match is accepted only when told to.
    let mut tail = std::fs::read(file).unwrap();
    let last = tail.len() - 1;
    tail[last] ^= 1;
    let tail_file = dir.path().join("tail.db");
    std::fs::write(&tail_file, &tail).unwrap();
    // ferroutl and ferroctl (etcdctl 3.4 restores too) alike.
    for (tool, restore) in [
        ("ferroutl", utl as fn(&[&str]) -> Output),
        ("ferroctl", ctl_offline),
    ] {
        let elsewhere = dir.path().join(tool).join("data");
        let elsewhere = elsewhere.to_str().unwrap();
        let tail = tail_file.to_str().unwrap();
        let no = restore(&["snapshot", "restore", tail, "--data-dir", elsewhere]);
        assert_eq!(no.code, 1, "{tool}: {no:?}");
        assert!(no.stderr.starts_with("Error: "), "{tool}: {no:?}");
        let yes = restore(&[
            "snapshot",
            "restore",
            tail,
            "--data-dir",
            elsewhere,
            "--skip-hash-check",
        ]);
        assert_eq!(yes.code, 0, "{tool}: {yes:?}");
        assert!(
            yes.stdout.contains("at revision 23 (20 keys, 2 shards)"),
            "{tool}: {yes:?}"
        );
    }

    // defrag and wal on the stopped original member.
    let mut server = server;
    server.kill_9();
    let data = server.data_dir().to_str().unwrap().to_string();
    let wal = utl(&["wal", "--data-dir", &data]);
    assert_eq!(wal.code, 0, "{wal:?}");
    assert!(
        wal.stdout.contains("write revision 23: [shard "),
        "{}",
        wal.stdout
    );
    assert!(wal.stdout.contains("lease grant "), "{}", wal.stdout);
    let defrag = utl(&["defrag", "--data-dir", &data]);
    assert_eq!(
        (defrag.code, defrag.stdout.as_str(), defrag.stderr.as_str()),
        (0, "", ""),
        "{defrag:?}"
    );
    server.start_again();
    assert_eq!(dump(&server), want);
}

#[test]
fn usage_errors() {
    let no_dir = utl(&["defrag"]);
    assert_eq!(no_dir.code, 3, "{no_dir:?}");
    assert!(
        no_dir.stderr.starts_with("Error: --data-dir is required\n"),
        "{no_dir:?}"
    );
    let unknown = utl(&["frobnicate"]);
    assert_eq!(unknown.code, 3, "{unknown:?}");
    let bad_flag = utl(&["wal", "--data-dir", "x", "--bogus"]);
    assert_eq!(bad_flag.code, 3, "{bad_flag:?}");
    assert!(
        bad_flag
            .stderr
            .starts_with("Error: unknown flag: --bogus\n"),
        "{bad_flag:?}"
    );
    let missing = utl(&["wal", "--data-dir", "/nonexistent/ferroutl"]);
    assert_eq!(missing.code, 1, "{missing:?}");
}

/// What a client sees of a server's keyspace: the latest keys, the state
/// at every retained revision, the answer below the compaction point, the
/// leases and the keys attached to each.
fn observe(server: &ServerProcess, revs: std::ops::RangeInclusive<i64>) -> Vec<String> {
    let mut seen = vec![serde_json::to_string(&dump(server)).unwrap()];
    for rev in revs {
        let out = etcdctl(
            &server.endpoint(),
            &[
                "get",
                "--prefix",
                "",
                "--rev",
                &rev.to_string(),
                "-w",
                "json",
            ],
            None,
        );
        let kvs = serde_json::from_str::<serde_json::Value>(&out.stdout)
            .map(|v| v["kvs"].to_string())
            .unwrap_or_default();
        seen.push(format!(
            "rev {rev}: {} {kvs} {}",
            out.code,
            out.stderr.lines().last().unwrap_or("")
        ));
    }
    let leases = ok(server, &["lease", "list"]);
    for id in leases.lines().skip(1) {
        let ttl = ok(server, &["lease", "timetolive", id, "--keys"]);
        // The remaining TTL ticks; the lease and its keys do not (etcd
        // lists them in map order).
        let keys = ttl.split("attached keys([").nth(1).unwrap_or("");
        let mut keys: Vec<&str> = keys.trim_end_matches("])\n").split(' ').collect();
        keys.sort_unstable();
        seen.push(format!("lease {id} keys {keys:?}"));
    }
    seen
}

/// An etcd snapshot (`etcdctl snapshot save` against etcd) restored into
/// ferrokv over 4 shards: the same keys with the same revisions, create
/// revisions and versions, the same history at every retained revision,
/// the same compaction point, the same leases with their keys, and the
/// next write at the next revision: a way from etcd to ferrokv. A damaged
/// snapshot and a `db` without a hash are refused in etcd's words.
#[test]
fn an_etcd_snapshot_restores_into_ferrokv() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = ferrokv_tests::EtcdProcess::start(&dir.path().join("etcd")).into_inner();
    let lease = ok(&etcd, &["lease", "grant", "600"]);
    let lease = lease.split_whitespace().nth(1).unwrap().to_string();
    for i in 0..30 {
        ok(&etcd, &["put", &format!("/k/{i:02}"), &format!("v{i}")]);
    }
    ok(&etcd, &["put", "--lease", &lease, "/leased/a", "x"]);
    ok(&etcd, &["put", "--lease", &lease, "/leased/b", "y"]);
    for i in 0..10 {
        ok(&etcd, &["put", &format!("/k/{i:02}"), &format!("w{i}")]);
    }
    ok(&etcd, &["del", "/k/1", "--prefix"]);
    let txn = etcdctl(
        &etcd.endpoint(),
        &["txn"],
        Some(b"\nput /t/1 one\nput /t/2 two\ndel /k/05\n\n\n"),
    );
    assert_eq!(txn.code, 0, "{txn:?}");
    ok(&etcd, &["compaction", "20"]);
    ok(&etcd, &["put", "/k/00", "after-compaction"]);
    let file = dir.path().join("etcd.db");
    let file = file.to_str().unwrap();
    ok(&etcd, &["snapshot", "save", file]);
    let last = ferrokv_tests::normalize::json_u64_field(
        &ok(&etcd, &["get", "/none", "-w", "json"]),
        "revision",
    )
    .unwrap() as i64;
    let want = observe(&etcd, 18..=last);
    assert!(
        want[1].contains("required revision has been compacted"),
        "{want:?}"
    );

    let mut ferrokv = FerrokvProcess::start_with(
        &dir.path().join("ferrokv"),
        ServerOptions {
            shards: Some(4),
            ..ServerOptions::default()
        },
    )
    .into_inner();
    ferrokv.kill_9();
    std::fs::remove_dir_all(ferrokv.data_dir()).unwrap();
    let target = ferrokv.data_dir().to_str().unwrap().to_string();
    let restored = utl(&[
        "snapshot",
        "restore",
        file,
        "--data-dir",
        &target,
        "--shards",
        "4",
    ]);
    assert_eq!(restored.code, 0, "{restored:?}");
    assert!(
        restored.stdout.contains(&format!("at revision {last} (")),
        "{restored:?}"
    );
    ferrokv.start_again();
    let got = observe(&ferrokv, 18..=last);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    let next = |s: &ServerProcess| {
        let out = ok(s, &["put", "/next", "n", "-w", "json"]);
        ferrokv_tests::normalize::json_u64_field(&out, "revision")
    };
    assert_eq!(next(&ferrokv), next(&etcd));

    // A damaged snapshot, and a db copied without etcdctl's hash.
    let mut bad = std::fs::read(file).unwrap();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let bad_file = dir.path().join("bad.db");
    std::fs::write(&bad_file, &bad).unwrap();
    let bad_file = bad_file.to_str().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let elsewhere = elsewhere.to_str().unwrap();
    let refused = ctl_offline(&["snapshot", "restore", bad_file, "--data-dir", elsewhere]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("Error: expected sha256 ["),
        "{refused:?}"
    );
    let db = std::fs::read(file).unwrap();
    let bare = dir.path().join("bare.db");
    std::fs::write(&bare, &db[..db.len() - 32]).unwrap();
    let bare = bare.to_str().unwrap();
    let no_hash = utl(&["snapshot", "restore", bare, "--data-dir", elsewhere]);
    assert_eq!(
        (no_hash.code, no_hash.stderr.lines().next()),
        (
            1,
            Some("Error: snapshot missing hash but --skip-hash-check=false")
        ),
        "{no_hash:?}"
    );
    let skipped = ctl_offline(&[
        "snapshot",
        "restore",
        bare,
        "--data-dir",
        elsewhere,
        "--skip-hash-check",
        "--shards",
        "1",
    ]);
    assert_eq!(skipped.code, 0, "{skipped:?}");
}
