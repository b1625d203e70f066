//! Property tests: the store against a naive model that keeps a full copy of
//! the keyspace per revision, and a snapshotted store (base + delta) against
//! a never-snapshotted one, a store rebuilt from another's retained
//! records (an etcd snapshot restore) against the original, and a rolled
//! back store against one that never saw the voided writes.

use std::collections::BTreeMap;

use ferrokv_mvcc::{
    Error, Event, EventKind, ImportedRecord, KeyValue, RangeResult, Store, WriteOp,
};
use proptest::prelude::*;

const KEYS: [&str; 5] = ["a", "ab", "b", "ba", "c"];

#[derive(Clone, Debug)]
enum Action {
    /// Ops on distinct keys, as etcd forbids duplicate keys in one txn.
    Txn {
        gap: i64,
        ops: Vec<(usize, Option<(u8, i64)>)>,
    },
    Compact {
        offset: i64,
    },
    Range {
        range: RangeSel,
        rev_back: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    },
    Events {
        range: RangeSel,
        from_offset: i64,
        prev_kv: bool,
    },
    Snapshot,
}

#[derive(Clone, Copy, Debug)]
enum RangeSel {
    Single(usize),
    Prefix(usize),
    FromKey(usize),
    All,
    Between(usize, usize),
}

impl RangeSel {
    fn args(self) -> (Vec<u8>, Vec<u8>) {
        let k = |i: usize| KEYS[i].as_bytes().to_vec();
        match self {
            RangeSel::Single(i) => (k(i), vec![]),
            RangeSel::Prefix(i) => {
                let mut end = k(i);
                *end.last_mut().unwrap() += 1;
                (k(i), end)
            }
            RangeSel::FromKey(i) => (k(i), vec![0]),
            RangeSel::All => (vec![0], vec![0]),
            RangeSel::Between(i, j) => (k(i), k(j)),
        }
    }

    /// Written independently of the store's bound logic on purpose.
    fn matches(self, key: &[u8]) -> bool {
        let k = |i: usize| KEYS[i].as_bytes();
        match self {
            RangeSel::Single(i) => key == k(i),
            RangeSel::Prefix(i) => key.starts_with(k(i)),
            RangeSel::FromKey(i) => key >= k(i),
            RangeSel::All => true,
            RangeSel::Between(i, j) => key >= k(i) && key < k(j),
        }
    }
}

fn range_sel() -> impl Strategy<Value = RangeSel> {
    prop_oneof![
        (0..KEYS.len()).prop_map(RangeSel::Single),
        (0..KEYS.len()).prop_map(RangeSel::Prefix),
        (0..KEYS.len()).prop_map(RangeSel::FromKey),
        Just(RangeSel::All),
        (0..KEYS.len(), 0..KEYS.len()).prop_map(|(i, j)| RangeSel::Between(i, j)),
    ]
}

fn action(with_snapshots: bool) -> impl Strategy<Value = Action> {
    let op = (
        0..KEYS.len(),
        prop::option::weighted(0.75, (0u8..4, 0i64..3)),
    );
    let txn = (1i64..4, prop::collection::vec(op, 1..4)).prop_map(|(gap, mut ops)| {
        let mut seen = [false; KEYS.len()];
        ops.retain(|(k, _)| !std::mem::replace(&mut seen[*k], true));
        Action::Txn { gap, ops }
    });
    let snap_weight = if with_snapshots { 2 } else { 0 };
    prop_oneof![
        6 => txn,
        1 => (-1i64..8).prop_map(|offset| Action::Compact { offset }),
        2 => (range_sel(), 0i64..12, 0usize..3, any::<bool>(), any::<bool>()).prop_map(
            |(range, rev_back, limit, keys_only, count_only)| Action::Range {
                range, rev_back, limit, keys_only, count_only
            }
        ),
        1 => (range_sel(), -1i64..10, any::<bool>())
            .prop_map(|(range, from_offset, prev_kv)| Action::Events { range, from_offset, prev_kv }),
        snap_weight => Just(Action::Snapshot),
    ]
}

#[derive(Default)]
struct Model {
    /// (revision, full state after it), ascending.
    states: Vec<(i64, BTreeMap<Vec<u8>, KeyValue>)>,
    events: Vec<Event>,
    compact: i64,
    last: i64,
}

impl Model {
    fn state_at(&self, rev: i64) -> BTreeMap<Vec<u8>, KeyValue> {
        self.states
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    fn apply(&mut self, rev: i64, ops: &[WriteOp]) -> Vec<Event> {
        let mut cur = self.state_at(i64::MAX);
        let mut out = Vec::new();
        for op in ops {
            match op {
                WriteOp::Put { key, value, lease } => {
                    let prev = cur.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: value.clone(),
                        lease: *lease,
                    };
                    cur.insert(key.clone(), kv.clone());
                    out.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev,
                    });
                }
                WriteOp::Delete { key } => {
                    if let Some(prev) = cur.remove(key) {
                        let kv = KeyValue {
                            key: key.clone(),
                            mod_revision: rev,
                            ..Default::default()
                        };
                        out.push(Event {
                            kind: EventKind::Delete,
                            kv,
                            prev_kv: Some(prev),
                        });
                    }
                }
            }
        }
        self.states.push((rev, cur));
        self.events.extend(out.iter().cloned());
        self.last = rev;
        out
    }

    fn range(
        &self,
        sel: RangeSel,
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<RangeResult, Error> {
        let at = if rev == 0 { i64::MAX } else { rev };
        if at < self.compact {
            return Err(Error::Compacted);
        }
        let live: Vec<KeyValue> = self
            .state_at(at)
            .into_values()
            .filter(|kv| sel.matches(&kv.key))
            .collect();
        let count = live.len();
        let mut kvs: Vec<KeyValue> = if count_only {
            vec![]
        } else {
            live.into_iter()
                .take(if limit == 0 { usize::MAX } else { limit })
                .collect()
        };
        if keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResult { kvs, count })
    }

    /// etcd semantics: events at the compaction point survive only if
    /// compaction kept their record (puts; ops are on distinct keys per txn);
    /// prev_kv is the state at mod_revision - 1 unless that is compacted.
    fn events(
        &self,
        sel: RangeSel,
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<Vec<Event>, Error> {
        if from < self.compact {
            return Err(Error::Compacted);
        }
        Ok(self
            .events
            .iter()
            .filter(|e| {
                let m = e.kv.mod_revision;
                m >= from
                    && m <= to
                    && sel.matches(&e.kv.key)
                    && (m > self.compact || e.kind == EventKind::Put)
            })
            .map(|e| {
                let m = e.kv.mod_revision;
                // i.e. `m - 1 >= compact`: the read at m - 1 is not compacted.
                let prev = if prev_kv && m > self.compact {
                    self.state_at(m - 1).get(&e.kv.key).cloned()
                } else {
                    None
                };
                Event {
                    kind: e.kind,
                    kv: e.kv.clone(),
                    prev_kv: prev,
                }
            })
            .collect())
    }
}

fn ops_of(ops: &[(usize, Option<(u8, i64)>)]) -> Vec<WriteOp> {
    ops.iter()
        .map(|(k, op)| match op {
            Some((v, lease)) => WriteOp::Put {
                key: KEYS[*k].into(),
                value: vec![b'0' + v],
                lease: *lease,
            },
            None => WriteOp::Delete {
                key: KEYS[*k].into(),
            },
        })
        .collect()
}

/// Everything observable about a store, for whole-state comparison.
fn full_check(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.last_revision(), model.last);
    prop_assert_eq!(store.compact_revision(), model.compact);
    let latest = model.state_at(i64::MAX);
    prop_assert_eq!(store.key_count(), latest.len());
    for k in KEYS {
        prop_assert_eq!(store.get(k.as_bytes()), latest.get(k.as_bytes()).cloned());
    }
    for lease in 0..3 {
        let want: Vec<Vec<u8>> = if lease == 0 {
            vec![]
        } else {
            latest
                .values()
                .filter(|kv| kv.lease == lease)
                .map(|kv| kv.key.clone())
                .collect()
        };
        prop_assert_eq!(store.keys_with_lease(lease), want);
    }
    let live: Vec<Vec<u8>> = latest.keys().cloned().collect();
    prop_assert_eq!(store.live_keys(&[0], &[0]), live);
    for rev in model.compact.max(1)..=model.last + 1 {
        prop_assert_eq!(
            store.range(&[0], &[0], rev, 0, false, false),
            model.range(RangeSel::All, rev, 0, false, false),
            "range at {}",
            rev
        );
    }
    let from = model.compact.max(1);
    prop_assert_eq!(
        store.events(&[0], &[0], from, model.last, true),
        model.events(RangeSel::All, from, model.last, true)
    );
    Ok(())
}

/// A write or compaction as it was applied, with its absolute revision, so
/// that a history can be replayed without some of its writes.
#[derive(Clone, Debug)]
enum Applied {
    Txn(i64, Vec<WriteOp>),
    Compact(i64),
}

/// The model and two stores driven by the same actions: `plain` is never
/// snapshotted, `snapped` is reopened from its snapshot at every
/// `Action::Snapshot`.
struct Harness {
    dir: tempfile::TempDir,
    with_snapshots: bool,
    model: Model,
    plain: Store,
    snapped: Store,
    snaps: u64,
    /// Newest revision of a record in `snapped`'s mapped base at or above
    /// its compaction point (0 if none): no rollback may cut below it.
    base_newest: i64,
    log: Vec<Applied>,
}

impl Harness {
    fn new(with_snapshots: bool) -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
            with_snapshots,
            model: Model::default(),
            plain: Store::new(),
            snapped: Store::new(),
            snaps: 0,
            base_newest: 0,
            log: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        full_check(&self.plain, &self.model)?;
        if self.with_snapshots {
            full_check(&self.snapped, &self.model)?;
        }
        Ok(())
    }

    fn step(&mut self, a: Action) -> Result<(), TestCaseError> {
        let Harness {
            dir,
            model,
            plain,
            snapped,
            snaps,
            base_newest,
            log,
            ..
        } = self;
        match a {
            Action::Txn { gap, ops } => {
                let rev = model.last.max(model.compact) + gap;
                let ops = ops_of(&ops);
                let want = model.apply(rev, &ops);
                prop_assert_eq!(plain.apply(rev, &ops), want.clone());
                prop_assert_eq!(snapped.apply(rev, &ops), want);
                log.push(Applied::Txn(rev, ops));
            }
            Action::Compact { offset } => {
                let rev = model.compact + offset;
                let want = if rev <= model.compact {
                    Err(Error::Compacted)
                } else {
                    model.compact = rev;
                    log.push(Applied::Compact(rev));
                    Ok(())
                };
                prop_assert_eq!(plain.compact(rev), want.clone());
                prop_assert_eq!(snapped.compact(rev), want);
            }
            Action::Range {
                range,
                rev_back,
                limit,
                keys_only,
                count_only,
            } => {
                let rev = (model.last + 1 - rev_back).max(0);
                let (k, e) = range.args();
                let want = model.range(range, rev, limit, keys_only, count_only);
                prop_assert_eq!(
                    plain.range(&k, &e, rev, limit, keys_only, count_only),
                    want.clone()
                );
                prop_assert_eq!(
                    snapped.range(&k, &e, rev, limit, keys_only, count_only),
                    want
                );
            }
            Action::Events {
                range,
                from_offset,
                prev_kv,
            } => {
                let from = model.compact + from_offset;
                let (k, e) = range.args();
                let want = model.events(range, from, model.last, prev_kv);
                prop_assert_eq!(
                    plain.events(&k, &e, from, model.last, prev_kv),
                    want.clone()
                );
                prop_assert_eq!(snapped.events(&k, &e, from, model.last, prev_kv), want);
            }
            Action::Snapshot => {
                *snaps += 1;
                let path = dir.path().join(format!("snap{}", *snaps % 2));
                snapped
                    .write_snapshot(&path, *snaps, &snaps.to_le_bytes())
                    .unwrap();
                let (s, idx, meta) = Store::open_snapshot(&path).unwrap();
                prop_assert_eq!(idx, *snaps);
                prop_assert_eq!(meta, snaps.to_le_bytes().to_vec());
                *snapped = s;
                // Records below the compaction point are older still.
                let from = model.compact.max(1);
                *base_newest = model
                    .events(RangeSel::All, from, model.last, false)
                    .unwrap()
                    .last()
                    .map_or(0, |e| e.kv.mod_revision);
            }
        }
        self.check()
    }
}

fn run(actions: Vec<Action>, with_snapshots: bool) -> Result<(), TestCaseError> {
    let mut h = Harness::new(with_snapshots);
    for a in actions {
        h.step(a)?;
    }
    Ok(())
}

impl Model {
    /// The model of a store that never applied the writes above `rev`,
    /// except that the last revision is `min(last, rev)`: the rollback keeps
    /// the cut itself as applied.
    fn rollback_above(&mut self, rev: i64) {
        self.states.retain(|(r, _)| *r <= rev);
        self.events.retain(|e| e.kv.mod_revision <= rev);
        self.last = self.last.min(rev);
    }
}

/// `got` (rolled back) answers as `want` (a store that never saw the voided
/// writes) does, up to `got`'s last revision; `plain` stores (no base)
/// also hold the same number of bytes.
fn same_store(got: &Store, want: &Store, plain: bool) -> Result<(), TestCaseError> {
    prop_assert!(got.last_revision() >= want.last_revision());
    prop_assert_eq!(got.compact_revision(), want.compact_revision());
    let from = got.compact_revision().max(1);
    for rev in from..=got.last_revision() + 1 {
        prop_assert_eq!(
            got.range(&[0], &[0], rev, 0, false, false),
            want.range(&[0], &[0], rev, 0, false, false),
            "range at {}",
            rev
        );
    }
    prop_assert_eq!(
        got.events_with_rev(&[0], &[0], from, got.last_revision(), true),
        want.events_with_rev(&[0], &[0], from, got.last_revision(), true)
    );
    prop_assert_eq!(got.key_count(), want.key_count());
    prop_assert_eq!(got.leases(), want.leases());
    for lease in 0..3 {
        prop_assert_eq!(got.keys_with_lease(lease), want.keys_with_lease(lease));
    }
    if plain {
        prop_assert_eq!(got.size_bytes(), want.size_bytes());
    }
    Ok(())
}

/// Segments of random actions, each ended by a rollback to a cut picked
/// from `[lowest allowed, last + 1]`, then a tail of actions: both stores
/// must match the model of the writes that were never voided, and a
/// store that replays only those writes (and the compactions).
fn rollback_run(segments: Vec<(Vec<Action>, u64)>, tail: Vec<Action>) -> Result<(), TestCaseError> {
    let mut h = Harness::new(true);
    for (actions, pick) in segments {
        for a in actions {
            h.step(a)?;
        }
        let compact = h.model.compact;
        let lo = compact.max(h.base_newest);
        // Just below what may be voided: refused, and nothing changes.
        let probe = lo - 1;
        let refused = |r: Result<(), Error>| matches!(r, Err(Error::RollbackBelowCommitted { rev, .. }) if rev == probe);
        prop_assert!(refused(h.snapped.rollback_above(probe)));
        if probe < compact {
            prop_assert!(refused(h.plain.rollback_above(probe)));
        }
        h.check()?;
        let cut = lo + (pick % (h.model.last - lo + 2).max(1) as u64) as i64;
        prop_assert_eq!(h.plain.rollback_above(cut), Ok(()));
        prop_assert_eq!(h.snapped.rollback_above(cut), Ok(()));
        h.model.rollback_above(cut);
        h.log
            .retain(|a| !matches!(a, Applied::Txn(rev, _) if *rev > cut));
        h.check()?;
        // A rolled-back store writes a snapshot that opens to the same store.
        let path = h.dir.path().join("rolled");
        h.plain.write_snapshot(&path, 0, b"").unwrap();
        full_check(&Store::open_snapshot(&path).unwrap().0, &h.model)?;
    }
    for a in tail {
        h.step(a)?;
    }
    let mut replayed = Store::new();
    for a in &h.log {
        match a {
            Applied::Txn(rev, ops) => {
                replayed.apply(*rev, ops);
            }
            Applied::Compact(rev) => replayed.compact(*rev).unwrap(),
        }
    }
    same_store(&h.plain, &replayed, true)?;
    same_store(&h.snapped, &replayed, false)
}

/// The records a store retains, as another store's backend would hold
/// them ((main, sub), key, create, version, lease, value; version 0 a
/// tombstone): the newest record at or below the compaction point of each
/// live key, then every event after it.
#[allow(clippy::type_complexity)]
fn retained(store: &Store) -> Vec<((i64, i64), KeyValue)> {
    let compact = store.compact_revision();
    let mut out = Vec::new();
    if compact > 0 {
        let at = store.range(&[0], &[0], compact, 0, false, false).unwrap();
        let mut below: Vec<KeyValue> = at
            .kvs
            .into_iter()
            .filter(|kv| kv.mod_revision < compact)
            .collect();
        below.sort_by_key(|kv| kv.mod_revision);
        // Keys written by one transaction keep their order; the sub only
        // has to increase.
        for (i, kv) in below.into_iter().enumerate() {
            out.push(((kv.mod_revision, i as i64), kv));
        }
    }
    let from = compact.max(1);
    let events = store
        .events_with_rev(&[0], &[0], from, store.last_revision(), false)
        .unwrap();
    for (rev, ev) in events {
        let mut kv = ev.kv;
        if ev.kind == EventKind::Delete {
            kv.version = 0;
        }
        out.push(((rev.main, rev.sub), kv));
    }
    out
}

/// A store rebuilt by importing another's retained records
/// (`Store::import_record`, as a restore of an etcd snapshot does) is
/// indistinguishable from it.
fn import_run(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut original = Store::new();
    for a in actions {
        match a {
            Action::Txn { gap, ops } => {
                let rev = model.last.max(model.compact) + gap;
                let ops = ops_of(&ops);
                model.apply(rev, &ops);
                original.apply(rev, &ops);
            }
            Action::Compact { offset } => {
                let rev = model.compact + offset;
                if rev > model.compact {
                    model.compact = rev;
                    original.compact(rev).unwrap();
                }
            }
            _ => {}
        }
    }
    let mut imported = Store::new();
    for ((main, sub), kv) in retained(&original) {
        imported
            .import_record(ImportedRecord {
                key: kv.key,
                main,
                sub,
                create: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                value: kv.value,
            })
            .unwrap();
    }
    if model.last > 0 {
        imported.apply(model.last, &[]);
    }
    if model.compact > 0 {
        imported.compact(model.compact).unwrap();
    }
    full_check(&imported, &model)
}

/// A snapshot copied a part at a time (`snapshot_cut`, then
/// `snapshot_cut_step` of `part` keys) with more writes applied between
/// the parts writes the same file, byte for byte, as the snapshot copied
/// whole when the cut began; a compaction between the parts refuses the
/// cut instead.
fn cut_run(before: Vec<Action>, between: Vec<Action>, part: usize) -> Result<(), TestCaseError> {
    let mut h = Harness::new(true);
    for a in before {
        h.step(a)?;
    }
    let dir = tempfile::tempdir().unwrap();
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    let store = &h.snapped;
    store
        .snapshot_image(&whole, 9, b"meta")
        .unwrap()
        .write(&whole)
        .unwrap();
    let mut cut = store.snapshot_cut(&parts, 9, b"meta", i64::MAX).unwrap();
    let mut between = between.into_iter();
    let mut compacted = false;
    loop {
        match h.snapped.snapshot_cut_step(&mut cut, part) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                prop_assert!(compacted, "refused without a compaction: {e}");
                prop_assert!(matches!(e, Error::Overtaken(_)), "{e}");
                return Ok(());
            }
        }
        // Writes (and compactions, which refuse the cut) between parts; a
        // snapshot action would replace the store, so it is left out.
        for a in between.by_ref() {
            match a {
                Action::Snapshot => continue,
                Action::Compact { offset } => {
                    compacted |= h.model.compact + offset > h.model.compact;
                    h.step(Action::Compact { offset })?;
                }
                other => h.step(other)?,
            }
            break;
        }
    }
    prop_assert!(!compacted || h.snapped.compact_revision() == h.model.compact);
    cut.image().write(&parts).unwrap();
    prop_assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&parts).unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_cut_in_parts_under_writes_is_the_snapshot_at_its_start(
        before in prop::collection::vec(action(true), 1..40),
        between in prop::collection::vec(action(false), 0..20),
        part in 1usize..4,
    ) {
        cut_run(before, between, part)?;
    }

    #[test]
    fn imported_history_matches_the_original(actions in prop::collection::vec(action(false), 1..40)) {
        import_run(actions)?;
    }

    #[test]
    fn store_matches_model(actions in prop::collection::vec(action(false), 1..40)) {
        run(actions, false)?;
    }

    #[test]
    fn rollback_matches_a_store_that_never_saw_the_voided_writes(
        segments in prop::collection::vec(
            (prop::collection::vec(action(true), 1..30), any::<u64>()),
            1..4,
        ),
        tail in prop::collection::vec(action(true), 0..20),
    ) {
        rollback_run(segments, tail)?;
    }

    #[test]
    fn snapshot_then_writes_matches_unsnapshotted(actions in prop::collection::vec(action(true), 1..40)) {
        run(actions, true)?;
    }
}
