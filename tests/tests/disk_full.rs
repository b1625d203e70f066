//! A full disk: writes fail with an error and are never acknowledged; every
//! acknowledged write is there after a restart with space freed. The data
//! dir lives on a small tmpfs the test mounts (CI runs as root).

use std::time::{Duration, Instant};

use ferrokv_tests::tmpfs::Tmpfs;
use ferrokv_tests::{etcdctl, FerrokvProcess, ServerOptions};

/// 1.4 MB: under --max-request-bytes, so ~46 of them fill one 64 MiB segment.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(1_400_000, b'a' + (i % 26) as u8);
    v
}

#[test]
fn full_disk_fails_writes_and_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    // One 64 MiB WAL segment fits, the next one cannot be preallocated.
    let fs = Tmpfs::mount(&dir.path().join("mnt"), 100);
    let mut server = FerrokvProcess::start_with(
        fs.path(),
        ServerOptions {
            shards: Some(1),
            ..ServerOptions::default()
        },
    )
    .into_inner();

    let mut acked = Vec::new();
    let mut failure = None;
    let started = Instant::now();
    for i in 0..80 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let v = value(i);
        let out = etcdctl(
            &server.endpoint(),
            &["put", &format!("big{i:02}")],
            Some(&v),
        );
        if out.code == 0 {
            assert_eq!(out.stdout, "OK\n");
            acked.push(i);
        } else {
            failure = Some(out);
            break;
        }
    }
    let failure = failure.expect("the disk never filled up");
    assert!(
        acked.len() >= 30,
        "too few writes before the disk filled: {}",
        acked.len()
    );
    assert!(
        failure.stderr.starts_with("{") || failure.stderr.contains("Error"),
        "{failure:?}"
    );
    // The member stays up: it no longer takes writes (its log failed, and
    // it never serves state the log does not hold), and it still answers
    // reads of what was acknowledged.
    assert!(server.is_running(), "member exited after its WAL failed");
    let again = etcdctl(&server.endpoint(), &["put", "after", "x"], None);
    assert_ne!(again.code, 0, "a write was taken after the WAL failed");
    let first = etcdctl(
        &server.endpoint(),
        &["get", "big00", "--print-value-only"],
        None,
    );
    assert_eq!(first.stdout.trim_end().as_bytes(), value(0).as_slice());
    assert!(
        server
            .log_tail()
            .to_lowercase()
            .contains("no space left on device"),
        "{}",
        server.log_tail()
    );

    fs.resize(400).unwrap_or_else(|e| panic!("{e}"));
    server.kill_9();
    server.start_again();
    let keys = etcdctl(
        &server.endpoint(),
        &["get", "--prefix", "big", "--keys-only"],
        None,
    );
    let got: Vec<&str> = keys.stdout.lines().filter(|l| !l.is_empty()).collect();
    let want: Vec<String> = acked.iter().map(|i| format!("big{i:02}")).collect();
    for k in &want {
        assert!(
            got.contains(&k.as_str()),
            "acknowledged {k} lost after a full disk"
        );
    }
    // The failed write is the only candidate for an extra key: it was never
    // acknowledged, so either outcome is allowed, nothing else is.
    assert!(got.len() <= want.len() + 1, "unexpected keys: {got:?}");
    let last = *acked.last().unwrap();
    let v = etcdctl(
        &server.endpoint(),
        &["get", &format!("big{last:02}"), "--print-value-only"],
        None,
    );
    assert_eq!(v.stdout.trim_end().as_bytes(), value(last).as_slice());
    drop(server);
}
