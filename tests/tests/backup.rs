//! Maintenance against ferrokv: `etcdctl snapshot save` of a 4-shard member
//! taken while writers run across every shard is one consistent revision
//! (every part together equals a range of the whole store at the backup's
//! revision); a damaged backup is refused; Defragment keeps every key
//! across a restart, online and offline; HashKV is stable for the same
//! data and revision; a backup restores into a member that continues it;
//! the WAL listing names every record.
//!
//! Every wait is bounded; servers stop on drop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_mvcc::Store;
use ferrokv_shards::backup;
use ferrokv_tests::grpc::{compact, connect, put, put_with_lease, txn_puts, unary};
use ferrokv_tests::{etcdctl, FerrokvProcess, ServerOptions, ServerProcess};
use ferrokv_wire::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, RangeRequest, RangeResponse,
};

const SHARDS: u32 = 4;
/// Writers run at most this long (and stop when the snapshot is taken).
const WRITE_PHASE_MAX: Duration = Duration::from_secs(20);

/// (key, value, create, mod, version, lease) of one live key.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

fn start(dir: &std::path::Path) -> ServerProcess {
    FerrokvProcess::start_with(
        dir,
        ServerOptions {
            shards: Some(SHARDS),
            ..ServerOptions::default()
        },
    )
    .into_inner()
}

fn ctl_ok(server: &ServerProcess, args: &[&str]) -> String {
    let out = etcdctl(&server.endpoint(), args, None);
    assert_eq!(out.code, 0, "etcdctl {args:?}: {out:?}");
    out.stdout
}

/// `etcdctl snapshot save FILE`, from a multi-threaded tokio test.
fn save(server: &ServerProcess, file: &std::path::Path) {
    let file_arg = file.display().to_string();
    let saved = tokio::task::block_in_place(|| ctl_ok(server, &["snapshot", "save", &file_arg]));
    assert!(saved.contains("Snapshot saved at"), "{saved}");
}

async fn rows_at(server: &ServerProcess, revision: i64) -> Vec<Row> {
    let channel = connect(server).await;
    let r: RangeResponse = unary(
        &channel,
        "/etcdserverpb.KV/Range",
        RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..Default::default()
        },
    )
    .await;
    r.kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key.to_vec(),
                kv.value.to_vec(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
        })
        .collect()
}

/// Every live key of every part of a backup, and the lease ids of the
/// parts' lease tables, after checking each part opens as a snapshot.
fn backup_rows(file: &[u8], scratch: &std::path::Path) -> (backup::Header, Vec<Row>) {
    let b = backup::parse(file, false).expect("a valid backup");
    assert_eq!(b.parts.len(), b.header.shards as usize);
    let mut rows = Vec::new();
    for (i, part) in b.parts.iter().enumerate() {
        let path = scratch.join(format!("part-{i}.rkyv"));
        std::fs::write(&path, part).expect("write part");
        let (store, applied, _meta) = Store::open_snapshot(&path).expect("part opens");
        assert_eq!(applied, 0, "a restored member starts a fresh log");
        let r = store
            .range(b"\0", b"\0", 0, 0, false, false)
            .expect("range part");
        rows.extend(r.kvs.into_iter().map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
        }));
    }
    rows.sort();
    (b.header, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_under_writes_is_one_consistent_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let channel = connect(&server).await;
    let lease: LeaseGrantResponse = unary(
        &channel,
        "/etcdserverpb.Lease/LeaseGrant",
        LeaseGrantRequest { ttl: 600, id: 0 },
    )
    .await;
    for i in 0..40 {
        put_with_lease(&channel, &format!("/seed/{i:02}"), "s", lease.id).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (channel, stop) = (channel.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + WRITE_PHASE_MAX;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Each txn spans shards: a torn backup would show half.
                let kvs = (0..4)
                    .map(|k| (format!("/w{w}/{k}"), Bytes::from(format!("{n}"))))
                    .collect();
                txn_puts(&channel, kvs).await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = dir.path().join("backup.db");
    save(&server, &file);
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 0, "writers made progress");
    put(&channel, "/after", "x").await;

    let bytes = std::fs::read(&file).unwrap();
    let (header, rows) = backup_rows(&bytes, dir.path());
    assert_eq!(header.shards, SHARDS);
    let want = rows_at(&server, header.revision).await;
    assert_eq!(rows.len(), want.len());
    assert!(
        rows == want,
        "the backup is the store at revision {}",
        header.revision
    );
    // Every txn is whole: the four keys of a writer carry one value.
    for w in 0..3 {
        let vals: Vec<&Vec<u8>> = rows
            .iter()
            .filter(|r| r.0.starts_with(format!("/w{w}/").as_bytes()))
            .map(|r| &r.1)
            .collect();
        assert!(
            vals.windows(2).all(|p| p[0] == p[1]),
            "writer {w}: {vals:?}"
        );
    }
    assert_eq!(
        rows.iter().filter(|r| r.5 == lease.id).count(),
        40,
        "keys keep their lease"
    );

    // Damage is refused (the parser `ferroutl snapshot restore` uses).
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let e = backup::parse(&bad, false).unwrap_err();
    assert!(e.contains("integrity check failed"), "{e}");

    // Restored into a fresh member: the same keys, revisions and leases,
    // and the next write continues after the backup's revision.
    let status = backup::status(&bytes, &dir.path().join("status")).unwrap();
    assert_eq!(
        (status.revision, status.total_keys),
        (header.revision, rows.len() as u64)
    );
    let restored_dir = tempfile::tempdir().unwrap();
    let mut restored = start(restored_dir.path());
    restored.kill_9();
    std::fs::remove_dir_all(restored.data_dir()).unwrap();
    let e = backup::restore(&bad, restored.data_dir(), false).unwrap_err();
    assert!(e.contains("integrity check failed"), "{e}");
    assert!(
        !restored.data_dir().join("member").exists(),
        "nothing left behind"
    );
    backup::restore(&bytes, restored.data_dir(), false).unwrap();
    let again = backup::restore(&bytes, restored.data_dir(), false).unwrap_err();
    assert!(again.contains("holds a member"), "{again}");
    restored.start_again();
    assert_eq!(rows_at(&restored, 0).await, rows);
    let channel = connect(&restored).await;
    let leases: ferrokv_wire::pb::etcdserverpb::LeaseLeasesResponse = unary(
        &channel,
        "/etcdserverpb.Lease/LeaseLeases",
        ferrokv_wire::pb::etcdserverpb::LeaseLeasesRequest {},
    )
    .await;
    assert_eq!(
        leases.leases.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![lease.id]
    );
    assert_eq!(put(&channel, "/restored", "x").await, header.revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_and_hashkv() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let channel = connect(&server).await;
    for round in 0..5 {
        for i in 0..40 {
            put(&channel, &format!("/d/{i:02}"), format!("v{round}")).await;
        }
    }
    let status = ctl_ok(&server, &["endpoint", "status", "-w", "json"]);
    let rev: i64 = serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["Status"]
        ["header"]["revision"]
        .as_i64()
        .unwrap();
    let hash = |server: &ServerProcess, rev: i64| {
        let out = ctl_ok(server, &["endpoint", "hashkv", "--rev", &rev.to_string()]);
        out.trim().rsplit(", ").next().unwrap().to_string()
    };
    let before = tokio::task::block_in_place(|| hash(&server, rev));
    tokio::task::block_in_place(|| {
        ctl_ok(&server, &["compaction", &(rev - 40).to_string()]);
        let out = ctl_ok(&server, &["defrag"]);
        assert!(
            out.starts_with("Finished defragmenting etcd member["),
            "{out}"
        );
    });
    for s in 0..SHARDS {
        let snap = server.shard_dir(s).join("snapshot.rkyv");
        assert!(snap.is_file(), "defrag wrote {}", snap.display());
    }
    let after_defrag = tokio::task::block_in_place(|| hash(&server, rev));
    assert_eq!(after_defrag, before, "same data at the same revision");
    let rows = rows_at(&server, 0).await;
    server.kill_9();
    server.start_again();
    assert_eq!(
        rows_at(&server, 0).await,
        rows,
        "every key after defrag + restart"
    );
    // Offline, on the stopped member, as etcdctl 3.4 does it
    // (`ferroctl defrag --data-dir`: silent when it worked).
    server.kill_9();
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let offline = tokio::task::block_in_place(|| {
        ferrokv_tests::etcdctl::tool(
            &ferrokv_tests::server::ferroctl_bin().unwrap(),
            &["defrag", "--data-dir", &data_dir],
            ferrokv_tests::etcdctl::ETCDCTL_TIMEOUT,
        )
    });
    assert_eq!(
        (
            offline.code,
            offline.stdout.as_str(),
            offline.stderr.as_str()
        ),
        (0, "", ""),
        "{offline:?}"
    );
    server.start_again();
    assert_eq!(
        rows_at(&server, 0).await,
        rows,
        "every key after offline defrag"
    );
    let after_restart = tokio::task::block_in_place(|| hash(&server, rev));
    assert_eq!(after_restart, before);
    let channel = connect(&server).await;
    put(&channel, "/d/00", "changed").await;
    let changed = tokio::task::block_in_place(|| hash(&server, 0));
    assert_ne!(changed, before, "a write changes the hash");
    // A compacted revision is refused as etcd refuses it.
    let out = etcdctl(
        &server.endpoint(),
        &["endpoint", "hashkv", "--rev", "2"],
        None,
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("required revision has been compacted"),
        "{out:?}"
    );
}

/// `ferroutl wal`'s listing: every write, lease grant and compaction of
/// every shard, with its revision, read from a stopped member's WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_listing_names_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let channel = connect(&server).await;
    let lease: LeaseGrantResponse = unary(
        &channel,
        "/etcdserverpb.Lease/LeaseGrant",
        LeaseGrantRequest { ttl: 600, id: 0 },
    )
    .await;
    let mut revs = Vec::new();
    for i in 0..8 {
        revs.push(put_with_lease(&channel, &format!("/wal/{i}"), "v", lease.id).await);
    }
    server.kill_9();
    let text = ferrokv_shards::inspect::describe_wal(server.data_dir(), None).unwrap();
    for (i, rev) in revs.iter().enumerate() {
        let line = format!("write revision {rev}: [shard ");
        assert!(text.contains(&line), "{line} missing:\n{text}");
        assert!(text.contains(&format!("put \"/wal/{i}\"=\"v\" lease {:x}", lease.id)));
    }
    assert!(
        text.contains(&format!("lease grant {:x} ttl 600s", lease.id)),
        "{text}"
    );
    for s in 0..SHARDS {
        assert!(text.contains(&format!("shard {s}: ")), "{text}");
    }
}

/// A backup whose parts compactions overtake while they are copied (one
/// revision at a time, all below the backup's, every few milliseconds;
/// the parts are copied a few hundred keys at a time after the fences are
/// released) begins again, the last time copied whole under the fences,
/// and is still the store at its one revision.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_overtaken_by_compactions_is_still_the_store_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let channel = connect(&server).await;
    let mut last = 0;
    for t in 0..OVERTAKEN_TXNS {
        let kvs = (0..OVERTAKEN_KEYS_PER_TXN)
            .map(|k| (format!("/k/{t:03}/{k:02}"), Bytes::from(format!("{t}"))))
            .collect();
        last = txn_puts(&channel, kvs).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (channel, stop) = (channel.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rev = 1;
            while !stop.load(Ordering::Relaxed) && rev < last {
                compact(&channel, rev).await;
                rev += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            rev
        })
    };
    let file = dir.path().join("backup.db");
    save(&server, &file);
    stop.store(true, Ordering::Relaxed);
    let compacted_to = compactor.await.unwrap();
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    eprintln!(
        "compacted up to {compacted_to}; backups begun again: {}",
        log.matches("overtook its copy").count()
    );
    let bytes = std::fs::read(&file).unwrap();
    let (header, rows) = backup_rows(&bytes, dir.path());
    assert_eq!(header.revision, last, "nothing was written after the seeds");
    let want = rows_at(&server, header.revision).await;
    assert_eq!(
        rows.len(),
        (OVERTAKEN_TXNS * OVERTAKEN_KEYS_PER_TXN) as usize
    );
    assert!(rows == want, "the backup is the store at revision {last}");
}

/// Seed txns of the overtaken-backup test, and keys in each: about 1,000
/// keys a shard, four parts of a shard's copy.
const OVERTAKEN_TXNS: u32 = 80;
const OVERTAKEN_KEYS_PER_TXN: u32 = 50;
