use super::*;

fn put(k: &str, v: &str) -> WriteOp {
    WriteOp::Put {
        key: k.into(),
        value: v.into(),
        lease: 0,
    }
}

fn put_l(k: &str, v: &str, lease: i64) -> WriteOp {
    WriteOp::Put {
        key: k.into(),
        value: v.into(),
        lease,
    }
}

fn del(k: &str) -> WriteOp {
    WriteOp::Delete { key: k.into() }
}

fn kv(k: &str, v: &str, create: i64, modr: i64, ver: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        create_revision: create,
        mod_revision: modr,
        version: ver,
        value: v.into(),
        lease: 0,
    }
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn all(s: &Store, rev: i64) -> RangeResult {
    s.range(&[0], &[0], rev, 0, false, false).unwrap()
}

/// Runs `check` against the store as built, and again after a snapshot
/// round trip, so every unit test also covers the zero-copy base path.
fn both(s: Store, check: impl Fn(&Store)) {
    check(&s);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    s.write_snapshot(&path, 7, b"m").unwrap();
    let (s2, idx, meta) = Store::open_snapshot(&path).unwrap();
    assert_eq!((idx, meta.as_slice()), (7, &b"m"[..]));
    check(&s2);
}

#[test]
fn put_versions_and_generations() {
    let mut s = Store::new();
    let ev = s.apply(2, &[put("a", "1")]);
    assert_eq!(
        ev,
        vec![Event {
            kind: EventKind::Put,
            kv: kv("a", "1", 2, 2, 1),
            prev_kv: None
        }]
    );
    let ev = s.apply(5, &[put("a", "2")]);
    assert_eq!(ev[0].kv, kv("a", "2", 2, 5, 2));
    assert_eq!(ev[0].prev_kv, Some(kv("a", "1", 2, 2, 1)));
    let ev = s.apply(6, &[del("a")]);
    assert_eq!(
        ev,
        vec![Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b"a".to_vec(),
                mod_revision: 6,
                ..Default::default()
            },
            prev_kv: Some(kv("a", "2", 2, 5, 2)),
        }]
    );
    let ev = s.apply(9, &[put("a", "3")]);
    assert_eq!(
        ev[0].kv,
        kv("a", "3", 9, 9, 1),
        "new generation restarts version"
    );
    assert_eq!(ev[0].prev_kv, None);
    assert_eq!(s.last_revision(), 9);
    both(s, |s| {
        assert_eq!(s.get(b"a"), Some(kv("a", "3", 9, 9, 1)));
        assert_eq!(s.range(b"a", b"", 1, 0, false, false).unwrap().count, 0);
        assert_eq!(
            s.range(b"a", b"", 4, 0, false, false).unwrap().kvs,
            vec![kv("a", "1", 2, 2, 1)]
        );
        assert_eq!(
            s.range(b"a", b"", 5, 0, false, false).unwrap().kvs,
            vec![kv("a", "2", 2, 5, 2)]
        );
        assert_eq!(
            s.range(b"a", b"", 7, 0, false, false).unwrap().count,
            0,
            "tombstone"
        );
        assert_eq!(
            s.range(b"a", b"", 100, 0, false, false).unwrap().kvs,
            vec![kv("a", "3", 9, 9, 1)]
        );
        assert_eq!(s.key_count(), 1);
    });
}

#[test]
fn delete_of_missing_key_is_noop_and_consumes_no_sub() {
    let mut s = Store::new();
    assert!(s.apply(1, &[del("x")]).is_empty());
    let ev = s.apply(2, &[del("x"), put("a", "1"), put("b", "2")]);
    assert_eq!(ev.len(), 2);
    let evs = s.events(&[0], &[0], 1, 10, false).unwrap();
    assert_eq!(evs.len(), 2);
    // Subs are 0 and 1: a later explicit sub 2 at the same main is accepted.
    let ev = s.apply_at_sub(2, 2, &[put("c", "3")]);
    assert_eq!(ev[0].kv.mod_revision, 2);
    assert_eq!(s.last_revision(), 2);
}

#[test]
#[should_panic(expected = "not above last written")]
fn revisions_must_increase() {
    let mut s = Store::new();
    s.apply(3, &[put("a", "1")]);
    s.apply(3, &[put("b", "1")]);
}

#[test]
#[should_panic(expected = "below last applied")]
fn revisions_must_not_go_back() {
    let mut s = Store::new();
    s.apply(3, &[put("a", "1")]);
    s.apply(2, &[put("b", "1")]);
}

#[test]
fn writes_out_of_order_from_a_log_are_refused_unchanged() {
    // A committed record from a damaged log or a faulty peer: its
    // revisions are not the store's to trust, so no panic and no change.
    let mut s = Store::new();
    s.apply(3, &[put("a", "1"), put("b", "1")]);
    let before = all(&s, 0);
    for (rev, sub) in [(0, 0), (2, 5), (3, 1), (3, -1), (4, i64::MAX)] {
        let r = s.try_apply_at_sub(rev, sub, &[put("c", "1"), put("d", "1")]);
        assert!(
            matches!(r, Err(Error::OutOfOrder { .. })),
            "{rev}/{sub}: {r:?}"
        );
    }
    assert_eq!(all(&s, 0), before);
    assert_eq!(s.last_revision(), 3);
    s.compact(3).unwrap();
    assert!(s.try_apply_at_sub(3, 2, &[put("c", "1")]).is_err());
    // What follows is still accepted.
    assert_eq!(
        s.try_apply_at_sub(4, 0, &[put("c", "1")]).map(|e| e.len()),
        Ok(1)
    );
}

#[test]
fn txn_ops_see_earlier_ops() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    let ev = s.apply(2, &[del("a"), put("a", "2")]);
    assert_eq!(ev[0].kind, EventKind::Delete);
    assert_eq!(ev[1].kv, kv("a", "2", 2, 2, 1));
    assert_eq!(ev[1].prev_kv, None);
}

#[test]
fn range_conventions() {
    let mut s = Store::new();
    s.apply(
        1,
        &[
            put("a", "1"),
            put("ab", "2"),
            put("abc", "3"),
            put("b", "4"),
            put("c", "5"),
        ],
    );
    both(s, |s| {
        let r = |k: &[u8], e: &[u8]| keys(&s.range(k, e, 0, 0, false, false).unwrap());
        assert_eq!(r(b"ab", b""), vec!["ab"]);
        assert_eq!(r(b"zz", b""), Vec::<String>::new());
        assert_eq!(r(b"ab", b"ac"), vec!["ab", "abc"], "prefix range");
        assert_eq!(r(b"ab", &[0]), vec!["ab", "abc", "b", "c"], "from-key");
        assert_eq!(
            r(&[0], &[0]),
            vec!["a", "ab", "abc", "b", "c"],
            "everything"
        );
        assert_eq!(r(b"b", b"a"), Vec::<String>::new(), "end before start");
        assert_eq!(r(b"b", b"b"), Vec::<String>::new(), "end equals start");
        assert_eq!(r(b"a", b"c"), vec!["a", "ab", "abc", "b"]);
    });
}

#[test]
fn range_limit_count_keys_only() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1"), put("b", "2"), put("c", "3")]);
    s.apply(2, &[del("b")]);
    both(s, |s| {
        let r = s.range(&[0], &[0], 0, 1, false, false).unwrap();
        assert_eq!((keys(&r), r.count), (vec!["a".to_string()], 2));
        let r = s.range(&[0], &[0], 1, 2, true, false).unwrap();
        assert_eq!(
            (keys(&r), r.count),
            (vec!["a".to_string(), "b".to_string()], 3)
        );
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(r.kvs[1].version, 1);
        let r = s.range(&[0], &[0], 0, 0, false, true).unwrap();
        assert_eq!((r.kvs.len(), r.count), (0, 2));
    });
}

#[test]
fn range_at_old_revision_sees_deleted_keys() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(3, &[put("b", "1")]);
    s.apply(4, &[del("a")]);
    both(s, |s| {
        assert_eq!(keys(&all(s, 3)), vec!["a", "b"]);
        assert_eq!(keys(&all(s, 4)), vec!["b"]);
        assert_eq!(
            keys(&all(s, 2)),
            vec!["a"],
            "gap revision reads the state before it"
        );
        assert_eq!(keys(&all(s, 0)), vec!["b"]);
    });
}

#[test]
fn compaction_keeps_latest_before_rev() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(2, &[put("a", "2")]);
    s.apply(3, &[put("b", "1")]);
    s.apply(5, &[put("a", "3")]);
    s.compact(4).unwrap();
    both(s, |s| {
        assert_eq!(s.compact_revision(), 4);
        assert_eq!(
            s.range(b"a", b"", 3, 0, false, false),
            Err(Error::Compacted)
        );
        assert_eq!(
            s.range(b"a", b"", 4, 0, false, false).unwrap().kvs,
            vec![kv("a", "2", 1, 2, 2)]
        );
        assert_eq!(keys(&all(s, 4)), vec!["a", "b"]);
        assert_eq!(s.get(b"a"), Some(kv("a", "3", 1, 5, 3)));
        assert_eq!(s.events(&[0], &[0], 3, 10, false), Err(Error::Compacted));
        // From the compaction point: only what compaction kept.
        let ev = s.events(&[0], &[0], 4, 10, true).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kv, kv("a", "3", 1, 5, 3));
        assert_eq!(ev[0].prev_kv, Some(kv("a", "2", 1, 2, 2)));
        let ev = s.events(&[0], &[0], 0, 10, true);
        assert_eq!(ev, Err(Error::Compacted));
    });
}

#[test]
fn compaction_drops_tombstones_and_history() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(2, &[del("a")]);
    s.apply(3, &[put("b", "1")]);
    s.apply(4, &[del("b")]);
    s.apply(6, &[put("b", "2")]);
    s.compact(5).unwrap();
    both(s, |s| {
        assert_eq!(keys(&all(s, 5)), Vec::<String>::new());
        assert_eq!(keys(&all(s, 6)), vec!["b"]);
        let ev = s.events(&[0], &[0], 5, 6, true).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kv, kv("b", "2", 6, 6, 1));
        assert_eq!(ev[0].prev_kv, None);
    });
}

#[test]
fn compaction_at_tombstone_revision_hides_it_from_watch() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1"), put("b", "1")]);
    s.apply(2, &[del("a"), put("b", "2")]);
    s.compact(2).unwrap();
    both(s, |s| {
        let ev = s.events(&[0], &[0], 2, 2, true).unwrap();
        assert_eq!(
            ev.len(),
            1,
            "the tombstone at the compaction point is gone, the put is kept"
        );
        assert_eq!(ev[0].kv.key, b"b");
        assert_eq!(ev[0].prev_kv, None, "prev_kv at rev-1 is compacted");
    });
}

#[test]
fn compact_errors_and_future_compaction() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(2, &[put("a", "2")]);
    assert_eq!(s.compact(0), Err(Error::Compacted));
    s.compact(10).unwrap();
    assert_eq!(s.compact(10), Err(Error::Compacted));
    assert_eq!(s.compact(9), Err(Error::Compacted));
    assert_eq!(
        s.range(b"a", b"", 2, 0, false, false),
        Err(Error::Compacted)
    );
    assert_eq!(s.get(b"a"), Some(kv("a", "2", 1, 2, 2)));
    assert_eq!(keys(&all(&s, 10)), vec!["a"]);
    assert!(s.events(&[0], &[0], 10, 20, false).unwrap().is_empty());
    let ev = s.apply(11, &[put("a", "3")]);
    assert_eq!(
        ev[0].kv,
        kv("a", "3", 1, 11, 3),
        "generation survives compaction"
    );
    assert_eq!(ev[0].prev_kv, Some(kv("a", "2", 1, 2, 2)));
}

#[test]
#[should_panic(expected = "compaction point")]
fn write_at_compacted_revision_panics() {
    let mut s = Store::new();
    s.compact(10).unwrap();
    s.apply(10, &[put("a", "1")]);
}

#[test]
fn events_order_filter_and_prev_kv() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1"), put("b", "1")]);
    s.apply(3, &[put("a", "2"), del("b"), put("c", "1")]);
    s.apply(7, &[put("b", "2")]);
    both(s, |s| {
        let ev = s.events(&[0], &[0], 1, 7, true).unwrap();
        let got: Vec<(EventKind, String, i64, Option<String>)> = ev
            .iter()
            .map(|e| {
                (
                    e.kind,
                    String::from_utf8_lossy(&e.kv.key).into_owned(),
                    e.kv.mod_revision,
                    e.prev_kv
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
                )
            })
            .collect();
        use EventKind::*;
        assert_eq!(
            got,
            vec![
                (Put, "a".into(), 1, None),
                (Put, "b".into(), 1, None),
                (Put, "a".into(), 3, Some("1".into())),
                (Delete, "b".into(), 3, Some("1".into())),
                (Put, "c".into(), 3, None),
                (Put, "b".into(), 7, None),
            ]
        );
        assert!(s
            .events(&[0], &[0], 1, 7, false)
            .unwrap()
            .iter()
            .all(|e| e.prev_kv.is_none()));
        let ev = s.events(b"b", b"", 2, 7, false).unwrap();
        assert_eq!(
            ev.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            vec![3, 7]
        );
        assert_eq!(
            ev[0].kv,
            KeyValue {
                key: b"b".to_vec(),
                mod_revision: 3,
                ..Default::default()
            }
        );
        assert!(s.events(&[0], &[0], 4, 6, false).unwrap().is_empty());
        assert!(s.events(&[0], &[0], 8, 6, false).unwrap().is_empty());
        assert_eq!(s.events(b"a", b"c", 1, 3, false).unwrap().len(), 4);
    });
}

#[test]
fn lease_tracking() {
    let mut s = Store::new();
    s.apply(
        1,
        &[put_l("a", "1", 10), put_l("b", "1", 10), put("c", "1")],
    );
    assert_eq!(s.keys_with_lease(10), vec![b"a".to_vec(), b"b".to_vec()]);
    s.apply(2, &[put_l("a", "2", 20)]);
    s.apply(3, &[del("b")]);
    s.apply(4, &[put_l("c", "2", 20)]);
    s.apply(5, &[put_l("d", "1", 30)]);
    s.apply(6, &[put("d", "2")]);
    both(s, |s| {
        assert!(s.keys_with_lease(10).is_empty());
        assert_eq!(s.keys_with_lease(20), vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(
            s.keys_with_lease(30).is_empty(),
            "a put without lease detaches"
        );
        assert_eq!(s.leases(), vec![20]);
        assert_eq!(s.get(b"a").unwrap().lease, 20);
    });
}

#[test]
fn live_keys_get_key_count_size() {
    let mut s = Store::new();
    assert_eq!((s.key_count(), s.size_bytes()), (0, 0));
    s.apply(1, &[put("a", "1"), put("b", "1"), put("c", "1")]);
    s.apply(2, &[del("b")]);
    let before = s.size_bytes();
    assert!(before > 0);
    both(s, |s| {
        assert_eq!(s.live_keys(&[0], &[0]), vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(s.live_keys(b"b", b""), Vec::<Vec<u8>>::new());
        assert_eq!(s.live_keys(b"a", b"c"), vec![b"a".to_vec()]);
        assert_eq!(s.get(b"b"), None);
        assert_eq!(s.key_count(), 2);
        assert!(s.size_bytes() > 0);
    });
}

#[test]
fn compaction_shrinks_delta_size() {
    let mut s = Store::new();
    for rev in 1..=10 {
        s.apply(rev, &[put("a", "0123456789")]);
    }
    let before = s.size_bytes();
    s.compact(10).unwrap();
    assert!(s.size_bytes() * 5 < before);
}

#[test]
fn base_and_delta_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let mut s = Store::new();
    s.apply(1, &[put_l("a", "1", 5), put("b", "1"), put("c", "1")]);
    s.apply(2, &[put("a", "2")]);
    s.write_snapshot(&path, 42, b"meta").unwrap();
    let (mut s, idx, meta) = Store::open_snapshot(&path).unwrap();
    assert_eq!((idx, meta), (42, b"meta".to_vec()));
    assert_eq!((s.last_revision(), s.compact_revision()), (2, 0));
    assert!(s.keys_with_lease(5).is_empty());
    let ev = s.apply(4, &[put("b", "2"), del("c"), put("d", "1")]);
    assert_eq!(ev[0].prev_kv, Some(kv("b", "1", 1, 1, 1)));
    assert_eq!(ev[0].kv, kv("b", "2", 1, 4, 2));
    assert_eq!(keys(&all(&s, 0)), vec!["a", "b", "d"]);
    assert_eq!(keys(&all(&s, 3)), vec!["a", "b", "c"]);
    assert_eq!(s.key_count(), 3);
    // Compaction through the delta must hide base history (incl. c's put).
    s.compact(4).unwrap();
    assert_eq!(keys(&all(&s, 4)), vec!["a", "b", "d"]);
    let ev = s.events(&[0], &[0], 4, 4, true).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.kv.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"d".to_vec()]
    );
    assert!(ev.iter().all(|e| e.prev_kv.is_none()));
    s.apply(5, &[put("c", "again")]);
    assert_eq!(s.get(b"c"), Some(kv("c", "again", 5, 5, 1)));
    // Snapshot of base+delta, reopened: same answers.
    let path2 = dir.path().join("snap2");
    s.write_snapshot(&path2, 43, b"").unwrap();
    let (s2, _, _) = Store::open_snapshot(&path2).unwrap();
    for rev in 4..=6 {
        assert_eq!(all(&s, rev), all(&s2, rev));
    }
    assert_eq!(
        s.events(&[0], &[0], 4, 9, true),
        s2.events(&[0], &[0], 4, 9, true)
    );
    assert_eq!(s2.compact_revision(), 4);
    assert!(s2.size_bytes() < s.size_bytes() + 1);
}

#[test]
fn corrupt_snapshots_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    let n = s.write_snapshot(&path, 1, b"").unwrap();
    let good = std::fs::read(&path).unwrap();
    assert_eq!(good.len() as u64, n);
    assert!(!dir.path().join("snap.tmp").exists());
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        match Store::open_snapshot(&path) {
            Err(Error::Snapshot(msg)) => assert!(msg.contains(path.to_str().unwrap()), "{msg}"),
            other => panic!("expected snapshot error, got {other:?}"),
        }
    };
    check(&[]);
    check(&good[..10]);
    check(&good[..good.len() - 1]);
    for i in [0, 9, 17, 25, 30, 64, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        check(&bad);
    }
    let missing = dir.path().join("nope");
    assert!(matches!(
        Store::open_snapshot(&missing),
        Err(Error::Snapshot(_))
    ));
}

#[test]
fn empty_store_snapshot() {
    both(Store::new(), |s| {
        assert_eq!(all(s, 0).count, 0);
        assert_eq!(s.last_revision(), 0);
        assert!(s.events(&[0], &[0], 1, 100, true).unwrap().is_empty());
    });
}

fn rec(
    key: &str,
    main: i64,
    sub: i64,
    create: i64,
    version: i64,
    lease: i64,
    value: &str,
) -> ImportedRecord {
    ImportedRecord {
        key: key.into(),
        main,
        sub,
        create,
        version,
        lease,
        value: value.into(),
    }
}

/// An imported history keeps the source's create revisions and versions
/// (its older records were compacted away), tombstones end a key, and the
/// result survives a snapshot round trip; out-of-order records are
/// refused, not applied.
#[test]
fn imported_history_keeps_its_create_revisions_and_versions() {
    let mut s = Store::new();
    s.import_record(rec("a", 10, 0, 3, 5, 0, "a5")).unwrap();
    s.import_record(rec("b", 10, 1, 10, 1, 7, "b1")).unwrap();
    s.import_record(rec("a", 12, 0, 3, 6, 0, "a6")).unwrap();
    s.import_record(rec("b", 13, 0, 0, 0, 0, "")).unwrap();
    // A tombstone of a key that is not live changes nothing.
    s.import_record(rec("zz", 14, 0, 0, 0, 0, "")).unwrap();
    assert!(s.import_record(rec("c", 13, 0, 13, 1, 0, "late")).is_err());
    assert!(s.import_record(rec("c", 0, 1, 1, 1, 0, "zero")).is_err());
    s.compact(11).unwrap();
    both(s, |s| {
        assert_eq!(all(s, 0).kvs, vec![kv("a", "a6", 3, 12, 6)]);
        let mut b = kv("b", "b1", 10, 10, 1);
        b.lease = 7;
        assert_eq!(all(s, 12).kvs, vec![kv("a", "a6", 3, 12, 6), b]);
        assert_eq!(all(s, 11).kvs[0], kv("a", "a5", 3, 10, 5));
        assert_eq!(s.key_count(), 1);
        assert_eq!(s.last_revision(), 13);
    });
}

/// A version no store could have written (above its revision, or
/// negative) is refused where it is read, in an import and in a snapshot
/// file: the next put of the key computed `version + 1` on it (an
/// overflow panic in a debug build for i64::MAX).
#[test]
fn versions_out_of_range_are_refused_on_import_and_in_snapshots() {
    let mut s = Store::new();
    for version in [i64::MAX, 11, -1] {
        assert!(matches!(
            s.import_record(rec("a", 10, 0, 3, version, 0, "x")),
            Err(Error::Snapshot(_))
        ));
    }
    s.import_record(rec("a", 10, 0, 3, 8, 0, "a8")).unwrap();
    s.apply(11, &[put("a", "a9")]);
    assert_eq!(s.get(b"a").map(|kv| kv.version), Some(9));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let bad = snapshot::Snapshot {
        compact_rev: 0,
        last_main: 10,
        last_written_main: 10,
        last_written_sub: 0,
        applied_index: 1,
        meta: Vec::new(),
        keys: vec![snapshot::SnapKey {
            key: b"a".to_vec(),
            recs: vec![snapshot::SnapRec {
                main: 10,
                sub: 0,
                create: 3,
                version: i64::MAX,
                lease: 0,
                value: b"x".to_vec(),
            }],
        }],
        revs: vec![snapshot::SnapRevEntry {
            main: 10,
            sub: 0,
            key_idx: 0,
            rec_idx: 0,
        }],
    };
    snapshot::write(&path, &bad).unwrap();
    match Store::open_snapshot(&path) {
        Err(Error::Snapshot(msg)) => assert!(msg.contains("record version out of range"), "{msg}"),
        other => panic!("expected snapshot error, got {other:?}"),
    }
}

/// Everything a rollback must restore, internal counters included: `a` and
/// `b` must agree field by field (their bases are compared by the answers
/// they give, which is what the reads see).
fn assert_same_state(a: &Store, b: &Store) {
    assert_eq!(a.last_main, b.last_main, "last_main");
    assert_eq!(a.compact_rev, b.compact_rev, "compact_rev");
    assert_eq!(a.last_written, b.last_written, "last_written");
    assert_eq!(a.written_floor, b.written_floor, "written_floor");
    assert_eq!(a.lease_keys, b.lease_keys, "lease_keys");
    assert_eq!(a.live_count, b.live_count, "live_count");
    assert_eq!(a.delta_bytes, b.delta_bytes, "delta_bytes");
    assert_eq!(a.size_bytes(), b.size_bytes(), "size_bytes");
    assert_eq!(a.delta_by_rev, b.delta_by_rev, "delta_by_rev");
    let delta = |s: &Store| {
        s.delta
            .iter()
            .map(|(k, d)| {
                let recs: Vec<_> = d
                    .recs
                    .iter()
                    .map(|r| (r.rev, r.create, r.version, r.lease, r.value.clone()))
                    .collect();
                (k.clone(), recs, d.base_hidden)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delta(a), delta(b), "delta");
    let from = a.compact_rev.max(1);
    for rev in from..=a.last_main + 1 {
        assert_eq!(all(a, rev), all(b, rev), "range at {rev}");
    }
    assert_eq!(
        a.events_with_rev(&[0], &[0], from, a.last_main + 1, true),
        b.events_with_rev(&[0], &[0], from, a.last_main + 1, true),
    );
    assert_eq!(a.key_count(), b.key_count());
    assert_eq!(a.leases(), b.leases());
}

/// A snapshot round trip of `s`, for checking that a rolled-back store
/// writes a snapshot that opens and reads the same.
fn reopened(s: &Store) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    s.write_snapshot(&path, 1, b"").unwrap();
    Store::open_snapshot(&path).unwrap().0
}

#[test]
fn rollback_drops_puts_above_the_cut() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1"), put("b", "1")]);
    s.apply(2, &[put("a", "2")]);
    s.apply(4, &[put("a", "3"), put("b", "2")]);
    s.rollback_above(2).unwrap();
    let mut want = Store::new();
    want.apply(1, &[put("a", "1"), put("b", "1")]);
    want.apply(2, &[put("a", "2")]);
    assert_same_state(&s, &want);
    assert_eq!(s.get(b"a"), Some(kv("a", "2", 1, 2, 2)));
    assert_eq!(s.get(b"b"), Some(kv("b", "1", 1, 1, 1)));
    assert_eq!(s.last_revision(), 2);
    assert_eq!(s.events(&[0], &[0], 3, 10, false).unwrap(), vec![]);
    assert_same_state(&reopened(&s), &reopened(&want));
}

#[test]
fn rollback_of_a_delete_brings_the_key_back_with_its_lease() {
    let mut s = Store::new();
    s.apply(1, &[put_l("a", "1", 5), put("b", "1")]);
    s.apply(2, &[del("a"), del("b")]);
    assert_eq!((s.key_count(), s.leases()), (0, vec![]));
    s.rollback_above(1).unwrap();
    let mut want = Store::new();
    want.apply(1, &[put_l("a", "1", 5), put("b", "1")]);
    assert_same_state(&s, &want);
    assert_eq!(s.get(b"a").unwrap().lease, 5);
    assert_eq!(s.keys_with_lease(5), vec![b"a".to_vec()]);
    assert_eq!(s.key_count(), 2);
}

#[test]
fn rollback_removes_a_key_created_above_the_cut() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(3, &[put_l("b", "1", 9)]);
    s.apply(4, &[put("b", "2"), del("a")]);
    s.apply(5, &[del("b")]);
    s.rollback_above(2).unwrap();
    let mut want = Store::new();
    want.apply(1, &[put("a", "1")]);
    // apply advances the last revision even for a shard that wrote nothing
    // at 2, and so does the rollback: the same store.
    want.apply(2, &[]);
    assert_same_state(&s, &want);
    assert!(!s.delta.contains_key(&b"b"[..]), "no trace of b");
    assert_eq!(s.live_keys(&[0], &[0]), vec![b"a".to_vec()]);
    assert_eq!(s.range(b"b", b"", 4, 0, false, false).unwrap().count, 0);
    assert!(s.events(b"b", b"", 1, 10, true).unwrap().is_empty());
    assert!(s.leases().is_empty());
}

#[test]
fn rollback_retracks_leases() {
    let mut s = Store::new();
    s.apply(1, &[put_l("a", "1", 10), put_l("b", "1", 10)]);
    s.apply(2, &[put_l("a", "2", 20), put_l("c", "1", 20)]);
    s.apply(3, &[put("b", "2")]);
    s.apply(4, &[put_l("b", "3", 30), del("c")]);
    s.rollback_above(2).unwrap();
    assert_eq!(s.keys_with_lease(10), vec![b"b".to_vec()]);
    assert_eq!(s.keys_with_lease(20), vec![b"a".to_vec(), b"c".to_vec()]);
    assert!(s.keys_with_lease(30).is_empty());
    assert_eq!(s.leases(), vec![10, 20]);
    s.rollback_above(1).unwrap();
    assert_eq!(s.keys_with_lease(10), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(s.leases(), vec![10]);
    let mut want = Store::new();
    want.apply(1, &[put_l("a", "1", 10), put_l("b", "1", 10)]);
    assert_same_state(&s, &want);
}

#[test]
fn rollback_to_the_compaction_point_is_allowed_below_it_refused() {
    let build = || {
        let mut s = Store::new();
        s.apply(1, &[put("a", "1")]);
        s.apply(2, &[put("a", "2"), put("b", "1")]);
        s.apply(3, &[del("b")]);
        s.apply(5, &[put("a", "3"), put("c", "1")]);
        s.compact(3).unwrap();
        s
    };
    let mut s = build();
    let err = s.rollback_above(2).unwrap_err();
    assert_eq!(
        err,
        Error::RollbackBelowCommitted {
            rev: 2,
            committed: 3,
            held: "compacted"
        }
    );
    assert_eq!(
        err.to_string(),
        "mvcc: cannot roll back to revision 2: revisions up to 3 are committed (compacted)"
    );
    assert!(s.rollback_above(-1).is_err());
    assert_same_state(&s, &build());
    s.rollback_above(3).unwrap();
    let mut want = Store::new();
    want.apply(1, &[put("a", "1")]);
    want.apply(2, &[put("a", "2"), put("b", "1")]);
    want.apply(3, &[del("b")]);
    want.compact(3).unwrap();
    assert_same_state(&s, &want);
    assert_eq!(keys(&all(&s, 0)), vec!["a"]);
    // The next write may take any revision above the cut.
    let ev = s.apply(4, &[put("c", "2")]);
    assert_eq!(ev[0].kv, kv("c", "2", 4, 4, 1));
}

#[test]
fn rollback_after_a_snapshot_keeps_the_base_and_drops_the_delta_above() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let mut s = Store::new();
    s.apply(1, &[put_l("a", "1", 5), put("b", "1")]);
    s.apply(3, &[put("b", "2")]);
    s.compact(2).unwrap();
    s.write_snapshot(&path, 1, b"").unwrap();
    let open = || Store::open_snapshot(&path).unwrap().0;
    let mut s = open();
    s.apply(4, &[put("a", "2"), del("b")]);
    s.apply(6, &[put_l("c", "1", 5), del("a")]);
    // Base records are committed: the base holds b@3.
    let err = s.rollback_above(2).unwrap_err();
    assert_eq!(
        err,
        Error::RollbackBelowCommitted {
            rev: 2,
            committed: 3,
            held: "in the snapshot"
        }
    );
    assert_eq!(s.key_count(), 1);
    assert_eq!(s.keys_with_lease(5), vec![b"c".to_vec()]);
    s.rollback_above(4).unwrap();
    let mut want = open();
    want.apply(4, &[put("a", "2"), del("b")]);
    assert_same_state(&s, &want);
    s.rollback_above(3).unwrap();
    assert_same_state(&s, &open());
    assert!(s.delta.is_empty() && s.delta_by_rev.is_empty());
    assert_eq!(s.keys_with_lease(5), vec![b"a".to_vec()]);
    assert_eq!(s.get(b"b"), Some(kv("b", "2", 1, 3, 2)));
    assert_same_state(&reopened(&s), &open());
}

#[test]
fn rollback_keeps_base_records_that_compaction_hid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let mut s = Store::new();
    s.apply(1, &[put("a", "1"), put("b", "1")]);
    s.write_snapshot(&path, 1, b"").unwrap();
    let (mut s, _, _) = Store::open_snapshot(&path).unwrap();
    s.apply(2, &[put("a", "2"), del("b")]);
    s.compact(2).unwrap();
    s.apply(3, &[put("a", "3"), put("b", "2")]);
    s.rollback_above(2).unwrap();
    let (mut want, _, _) = Store::open_snapshot(&path).unwrap();
    want.apply(2, &[put("a", "2"), del("b")]);
    want.compact(2).unwrap();
    assert_same_state(&s, &want);
    // b's only delta record (the tombstone) is compacted; the entry stays to
    // hide b's base record.
    assert!(s.delta[&b"b"[..]].recs.is_empty() && s.delta[&b"b"[..]].base_hidden);
    assert_eq!(s.get(b"b"), None);
    assert_eq!(keys(&all(&s, 2)), vec!["a"]);
}

#[test]
fn writes_after_a_rollback_reuse_the_voided_revisions() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(2, &[put("a", "2"), put("b", "1")]);
    s.apply(3, &[del("a")]);
    s.rollback_above(1).unwrap();
    assert_eq!(s.last_revision(), 1);
    let ev = s.apply(2, &[put("b", "x"), del("a")]);
    assert_eq!(ev[0].kv, kv("b", "x", 2, 2, 1));
    assert_eq!(ev[1].prev_kv, Some(kv("a", "1", 1, 1, 1)));
    s.apply(3, &[put("a", "y")]);
    let mut want = Store::new();
    want.apply(1, &[put("a", "1")]);
    want.apply(2, &[put("b", "x"), del("a")]);
    want.apply(3, &[put("a", "y")]);
    assert_same_state(&s, &want);
    assert_eq!(s.get(b"a"), Some(kv("a", "y", 3, 3, 1)));
}

#[test]
fn rollback_above_everything_changes_nothing_but_the_last_revision() {
    let mut s = Store::new();
    s.apply(1, &[put("a", "1")]);
    s.apply(5, &[]);
    s.rollback_above(7).unwrap();
    assert_eq!(s.last_revision(), 5);
    s.rollback_above(3).unwrap();
    let mut want = Store::new();
    want.apply(1, &[put("a", "1")]);
    want.apply(3, &[]);
    assert_same_state(&s, &want);
    s.rollback_above(0).unwrap();
    assert_same_state(&s, &Store::new());
    s.rollback_above(i64::MAX).unwrap();
    assert_same_state(&s, &Store::new());
}

/// A snapshot cut at a revision is the snapshot of the store rolled back
/// to it: a member can cut a backup at one revision while it applies more.
#[test]
fn snapshot_cut_at_a_revision_is_the_rolled_back_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::new();
    s.apply(1, &[put_l("a", "1", 5), put("b", "1")]);
    s.apply(2, &[del("a")]);
    s.compact(2).unwrap();
    s.apply(3, &[put("b", "2"), put("c", "1")]);
    s.apply(5, &[del("b")]);
    let cut = dir.path().join("cut");
    s.snapshot_image_upto(&cut, 1, b"", 3)
        .unwrap()
        .write(&cut)
        .unwrap();
    let mut want = Store::new();
    want.apply(1, &[put_l("a", "1", 5), put("b", "1")]);
    want.apply(2, &[del("a")]);
    want.compact(2).unwrap();
    want.apply(3, &[put("b", "2"), put("c", "1")]);
    let got = Store::open_snapshot(&cut).unwrap().0;
    assert_same_state(&got, &reopened(&want));
    assert!(
        s.snapshot_image_upto(&cut, 1, b"", 1).is_err(),
        "below the compaction point"
    );
}
