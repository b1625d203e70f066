//! Multi-version key-value store of one shard, sans-IO.
//!
//! Reproduces etcd v3's MVCC semantics (etcd 3.4 `mvcc/kvstore.go`,
//! `key_index.go`): every write carries a (main, sub) revision handed in by
//! the caller (revisions are global and assigned by a sequencer outside this
//! crate, so a shard sees an increasing but gappy sequence), each key keeps
//! its history as generations separated by tombstones, and compaction keeps,
//! per key, the newest revision at or below the compaction point unless that
//! revision is a tombstone.
//!
//! Storage is two layers:
//! - the BASE, an rkyv snapshot file that is memory-mapped and read in place
//!   (no deserialization; see [`Store::open_snapshot`]);
//! - the DELTA, an in-memory `BTreeMap` holding every write since the base.
//!
//! Every read merges the two. Because every delta record of a key is newer
//! than every base record of that key, a key's history is simply
//! `base records ++ delta records`. Compaction physically trims the delta and
//! only logically trims the base (the base is immutable); the next snapshot
//! folds the compaction in.
//!
//! Decisions where the etcd behaviour had to be pinned down:
//! - Reading at exactly the compaction revision is allowed (etcd:
//!   `rev < compactMainRev` fails), and so is a watch starting there (etcd's
//!   watcher group: `minRev < compactRev` fails). Such a watch sees only the
//!   records compaction kept: puts at that revision, not tombstones, and no
//!   `prev_kv` (etcd reads it at `mod_revision - 1`, which is compacted).
//! - Only ops that change something consume a sub revision (etcd numbers
//!   subs by `len(changes)`), but every `apply` call advances
//!   [`Store::last_revision`], even when nothing was written, because the
//!   revision was applied to this shard.
//! - [`Store::key_count`] counts live keys at the latest revision.

#[doc(hidden)]
pub mod fuzzing;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;

use snapshot::{
    ArchivedSnapKey, ArchivedSnapRec, Mapped, SnapKey, SnapRec, SnapRevEntry, Snapshot,
};

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// One record of a history written by another store (etcd's `key`
/// bucket), for [`Store::import_record`]: the key's state at (main, sub);
/// version 0 is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedRecord {
    pub key: Vec<u8>,
    pub main: i64,
    pub sub: i64,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Delete`: only `key` and `mod_revision` (the delete revision) are
    /// set, as etcd sends them.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Error {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A [`SnapshotCut`] whose store was compacted or replaced between two
    /// parts: begin another.
    #[error("snapshot: {0}: the store was compacted or replaced during the copy")]
    Overtaken(String),
    /// [`Store::try_apply_at_sub`] was handed a write whose revisions do
    /// not come after what the store holds; the store is unchanged.
    #[error("mvcc: revision {rev} {why}")]
    OutOfOrder { rev: i64, why: String },
    /// [`Store::rollback_above`] was asked to void revisions this store
    /// holds as committed: at or below the compaction point, or records in
    /// the mapped snapshot. A caller that sends this has lost track of what
    /// was committed; the store is unchanged.
    #[error(
        "mvcc: cannot roll back to revision {rev}: revisions up to {committed} are committed ({held})"
    )]
    RollbackBelowCommitted {
        rev: i64,
        /// The lowest revision the store could roll back to.
        committed: i64,
        /// Why those revisions are committed: "compacted" or "in the snapshot".
        held: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub count: usize,
}

/// Rough per-record overhead (revision, counters, vector headers), used only
/// for the size estimate reported to Status and the quota.
const REC_OVERHEAD_BYTES: u64 = 64;

/// One delta record. `version == 0` marks a tombstone.
#[derive(Clone, Debug)]
struct Rec {
    rev: Revision,
    create: i64,
    version: i64,
    lease: i64,
    value: Vec<u8>,
}

#[derive(Debug, Default)]
struct DeltaKey {
    /// Oldest first; all newer than any base record of the key.
    recs: Vec<Rec>,
    /// Set once a compaction point reaches a delta record: from then on every
    /// base record of this key is below the kept revision and so compacted.
    /// The immutable base cannot be trimmed, so this flag hides it instead.
    base_hidden: bool,
}

/// A record read from either layer, borrowing its value.
#[derive(Clone, Copy, Debug)]
struct RecView<'a> {
    rev: Revision,
    create: i64,
    version: i64,
    lease: i64,
    value: &'a [u8],
}

impl<'a> RecView<'a> {
    fn from_base(r: &'a ArchivedSnapRec) -> RecView<'a> {
        RecView {
            rev: Revision {
                main: r.main.to_native(),
                sub: r.sub.to_native(),
            },
            create: r.create.to_native(),
            version: r.version.to_native(),
            lease: r.lease.to_native(),
            value: r.value.as_slice(),
        }
    }

    fn from_delta(r: &'a Rec) -> RecView<'a> {
        RecView {
            rev: r.rev,
            create: r.create,
            version: r.version,
            lease: r.lease,
            value: &r.value,
        }
    }

    fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn to_kv(self, key: &[u8], keys_only: bool) -> KeyValue {
        if self.is_tombstone() {
            return KeyValue {
                key: key.to_vec(),
                mod_revision: self.rev.main,
                ..KeyValue::default()
            };
        }
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create,
            mod_revision: self.rev.main,
            version: self.version,
            value: if keys_only {
                Vec::new()
            } else {
                self.value.to_vec()
            },
            lease: self.lease,
        }
    }
}

/// The merged history of one key: base records (empty when absent or hidden)
/// followed by delta records.
#[derive(Clone, Copy)]
struct Hist<'a> {
    base: &'a [ArchivedSnapRec],
    delta: &'a [Rec],
}

impl<'a> Hist<'a> {
    fn len(&self) -> usize {
        self.base.len() + self.delta.len()
    }

    fn get(&self, i: usize) -> RecView<'a> {
        if i < self.base.len() {
            RecView::from_base(&self.base[i])
        } else {
            RecView::from_delta(&self.delta[i - self.base.len()])
        }
    }

    fn last(&self) -> Option<RecView<'a>> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Index of the newest record with main revision <= `rev`.
    fn newest_at(&self, rev: i64) -> Option<usize> {
        let d = self.delta.partition_point(|r| r.rev.main <= rev);
        if d > 0 {
            return Some(self.base.len() + d - 1);
        }
        let b = self.base.partition_point(|r| r.main.to_native() <= rev);
        b.checked_sub(1)
    }

    /// The live record as of `rev`, if any.
    fn visible_at(&self, rev: i64) -> Option<RecView<'a>> {
        self.newest_at(rev)
            .map(|i| self.get(i))
            .filter(|r| !r.is_tombstone())
    }

    /// Whether record `i` is still part of history after compaction at
    /// `compact_rev` (etcd `keyIndex.compact`: keep all revisions above the
    /// point, plus the newest one at or below it unless it is a tombstone).
    fn survives(&self, i: usize, compact_rev: i64) -> bool {
        let r = self.get(i);
        r.rev.main > compact_rev || (!r.is_tombstone() && self.newest_at(compact_rev) == Some(i))
    }
}

type KeyBounds<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

/// Translates etcd's (key, range_end) convention into bounds; `None` is an
/// empty range.
fn key_bounds<'k>(key: &'k [u8], range_end: &'k [u8]) -> Option<KeyBounds<'k>> {
    if range_end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if range_end == [0] {
        let lo = if key == [0] {
            Bound::Unbounded
        } else {
            Bound::Included(key)
        };
        return Some((lo, Bound::Unbounded));
    }
    if range_end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(range_end)))
}

fn in_bounds(b: &KeyBounds<'_>, key: &[u8]) -> bool {
    let above = match b.0 {
        Bound::Unbounded => true,
        Bound::Included(lo) => key >= lo,
        Bound::Excluded(lo) => key > lo,
    };
    let below = match b.1 {
        Bound::Unbounded => true,
        Bound::Included(hi) => key <= hi,
        Bound::Excluded(hi) => key < hi,
    };
    above && below
}

fn rec_cost(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + REC_OVERHEAD_BYTES
}

fn base_lookup<'a>(base: Option<&'a Mapped>, key: &[u8]) -> Option<&'a ArchivedSnapKey> {
    let keys = base?.root().keys.as_slice();
    keys.binary_search_by(|k| k.key.as_slice().cmp(key))
        .ok()
        .map(|i| &keys[i])
}

/// Tells stores apart, so that a [`SnapshotCut`] is only ever continued
/// on the store it began on (a member that installs a leader's snapshot
/// gets a new store).
static STORE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The multi-version store of one shard.
pub struct Store {
    id: u64,
    base: Option<Mapped>,
    delta: BTreeMap<Vec<u8>, DeltaKey>,
    /// Revision index of the delta, for watch catch-up in revision order.
    delta_by_rev: BTreeMap<Revision, Vec<u8>>,
    compact_rev: i64,
    last_main: i64,
    /// Highest revision actually written; the next write must be above it.
    last_written: Revision,
    /// Newest revision written that the delta no longer holds: dropped by
    /// compaction, or written before the base (the base's `last_written`).
    /// A rollback restores `last_written` to the newest delta record or
    /// this, whichever is newer, as a store that never saw the voided
    /// writes would have it.
    written_floor: Revision,
    /// Live keys by lease id (lease 0 is not tracked).
    lease_keys: HashMap<i64, BTreeSet<Vec<u8>>>,
    live_count: usize,
    delta_bytes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("base", &self.base)
            .field("delta_keys", &self.delta.len())
            .field("compact_rev", &self.compact_rev)
            .field("last_main", &self.last_main)
            .field("last_written", &self.last_written)
            .field("live_count", &self.live_count)
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            id: STORE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            base: None,
            delta: BTreeMap::new(),
            delta_by_rev: BTreeMap::new(),
            compact_rev: 0,
            last_main: 0,
            last_written: Revision { main: 0, sub: 0 },
            written_floor: Revision { main: 0, sub: 0 },
            lease_keys: HashMap::new(),
            live_count: 0,
            delta_bytes: 0,
        }
    }

    /// Highest main revision applied to this shard (0 if none).
    pub fn last_revision(&self) -> i64 {
        self.last_main
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    fn base_keys(&self) -> &[ArchivedSnapKey] {
        match &self.base {
            Some(m) => m.root().keys.as_slice(),
            None => &[],
        }
    }

    fn hist_parts<'a>(
        &'a self,
        base: Option<&'a ArchivedSnapKey>,
        delta: Option<&'a DeltaKey>,
    ) -> Hist<'a> {
        let hidden = delta.is_some_and(|d| d.base_hidden);
        Hist {
            base: match base {
                Some(b) if !hidden => b.recs.as_slice(),
                _ => &[],
            },
            delta: delta.map_or(&[][..], |d| d.recs.as_slice()),
        }
    }

    fn hist(&self, key: &[u8]) -> Hist<'_> {
        self.hist_parts(base_lookup(self.base.as_ref(), key), self.delta.get(key))
    }

    /// Visits every key with any history in `bounds`, in key order, merging
    /// base and delta.
    fn for_each_key<'a>(&'a self, bounds: KeyBounds<'_>, mut f: impl FnMut(&'a [u8], Hist<'a>)) {
        self.for_each_key_while(bounds, |k, h| {
            f(k, h);
            true
        });
    }

    /// [`Store::for_each_key`] until `f` says false.
    fn for_each_key_while<'a>(
        &'a self,
        bounds: KeyBounds<'_>,
        mut f: impl FnMut(&'a [u8], Hist<'a>) -> bool,
    ) {
        let keys = self.base_keys();
        let start = match bounds.0 {
            Bound::Unbounded => 0,
            Bound::Included(k) => keys.partition_point(|e| e.key.as_slice() < k),
            Bound::Excluded(k) => keys.partition_point(|e| e.key.as_slice() <= k),
        };
        let end = match bounds.1 {
            Bound::Unbounded => keys.len(),
            Bound::Included(k) => keys.partition_point(|e| e.key.as_slice() <= k),
            Bound::Excluded(k) => keys.partition_point(|e| e.key.as_slice() < k),
        };
        let mut base_iter = keys[start..end.max(start)].iter().peekable();
        let mut delta_iter = self.delta.range::<[u8], _>(bounds).peekable();
        loop {
            let (key, b, d) = match (base_iter.peek(), delta_iter.peek()) {
                (None, None) => return,
                (Some(b), None) => (b.key.as_slice(), base_iter.next(), None),
                (None, Some((k, _))) => (k.as_slice(), None, delta_iter.next()),
                (Some(b), Some((k, _))) => match b.key.as_slice().cmp(k.as_slice()) {
                    std::cmp::Ordering::Less => (b.key.as_slice(), base_iter.next(), None),
                    std::cmp::Ordering::Greater => (k.as_slice(), None, delta_iter.next()),
                    std::cmp::Ordering::Equal => {
                        (b.key.as_slice(), base_iter.next(), delta_iter.next())
                    }
                },
            };
            let hist = self.hist_parts(b, d.map(|(_, v)| v));
            if hist.len() > 0 && !f(key, hist) {
                return;
            }
        }
    }

    /// Keys in `[key, range_end)` (etcd conventions: empty `range_end` is the
    /// single key, `range_end == [0]` is every key >= `key`, and
    /// `key == range_end == [0]` is everything) as of revision `rev`.
    ///
    /// `rev == 0` means latest. A `rev` beyond [`Store::last_revision`] is
    /// not an error: revisions are global and this shard may simply have no
    /// newer writes. `limit` 0 is unlimited; `count` counts every live key in
    /// the range regardless of `limit`.
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<RangeResult, Error> {
        let at = if rev <= 0 { i64::MAX } else { rev };
        // etcd: reading at exactly the compaction point is still allowed,
        // because the newest revision <= it was kept for every key.
        if at < self.compact_rev {
            return Err(Error::Compacted);
        }
        let mut out = RangeResult::default();
        let Some(bounds) = key_bounds(key, range_end) else {
            return Ok(out);
        };
        self.for_each_key(bounds, |k, hist| {
            if let Some(r) = hist.visible_at(at) {
                out.count += 1;
                if !count_only && (limit == 0 || out.kvs.len() < limit) {
                    out.kvs.push(r.to_kv(k, keys_only));
                }
            }
        });
        Ok(out)
    }

    /// Live keys in `[key, range_end)` at the latest state, sorted.
    pub fn live_keys(&self, key: &[u8], range_end: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(bounds) = key_bounds(key, range_end) {
            self.for_each_key(bounds, |k, hist| {
                if hist.last().is_some_and(|r| !r.is_tombstone()) {
                    out.push(k.to_vec());
                }
            });
        }
        out
    }

    /// Latest live value of one key.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.hist(key)
            .last()
            .filter(|r| !r.is_tombstone())
            .map(|r| r.to_kv(key, false))
    }

    /// Applies the writes of one transaction at main revision `rev`, with sub
    /// revisions 0, 1, 2, ... See [`Store::apply_at_sub`].
    pub fn apply(&mut self, rev: i64, ops: &[WriteOp]) -> Vec<Event> {
        self.apply_at_sub(rev, 0, ops)
    }

    /// Applies writes at main revision `rev`, the first written op getting
    /// sub revision `first_sub`. As in etcd, only ops that change something
    /// consume a sub revision: deleting a key that is not live is a no-op
    /// with no event. Returned events always carry `prev_kv` (the live value
    /// before the op, seeing earlier ops of the same call).
    ///
    /// Panics if revisions do not increase: a write at or below an earlier
    /// written (main, sub), below the last applied main revision, or at or
    /// below the compaction point would corrupt history. For revisions the
    /// caller did not choose itself (a log, a peer), use
    /// [`Store::try_apply_at_sub`].
    pub fn apply_at_sub(&mut self, rev: i64, first_sub: i64, ops: &[WriteOp]) -> Vec<Event> {
        self.try_apply_at_sub(rev, first_sub, ops)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Store::apply_at_sub`] for writes read from a log or sent by a
    /// peer: revisions that do not increase are refused with the store
    /// unchanged.
    pub fn try_apply_at_sub(
        &mut self,
        rev: i64,
        first_sub: i64,
        ops: &[WriteOp],
    ) -> Result<Vec<Event>, Error> {
        let refuse = |why: String| Err(Error::OutOfOrder { rev, why });
        if rev <= 0 {
            return refuse("revision must be positive".into());
        }
        if rev < self.last_main {
            return refuse(format!("below last applied revision {}", self.last_main));
        }
        if rev <= self.compact_rev {
            return refuse(format!("at or below compaction point {}", self.compact_rev));
        }
        // Subs count up from `first_sub`, one per written op.
        if first_sub < 0 || first_sub.checked_add(ops.len() as i64).is_none() {
            return refuse(format!("sub revision {first_sub} out of range"));
        }
        let mut events = Vec::with_capacity(ops.len());
        let mut sub = first_sub;
        for op in ops {
            let key = match op {
                WriteOp::Put { key, .. } | WriteOp::Delete { key } => key.as_slice(),
            };
            let prev = self.get(key);
            let r = Revision { main: rev, sub };
            let (rec, kind) = match op {
                WriteOp::Put { value, lease, .. } => {
                    let (create, version) = match &prev {
                        Some(p) => (p.create_revision, p.version + 1),
                        None => (rev, 1),
                    };
                    let rec = Rec {
                        rev: r,
                        create,
                        version,
                        lease: *lease,
                        value: value.clone(),
                    };
                    (rec, EventKind::Put)
                }
                WriteOp::Delete { .. } => {
                    if prev.is_none() {
                        continue;
                    }
                    let rec = Rec {
                        rev: r,
                        create: 0,
                        version: 0,
                        lease: 0,
                        value: Vec::new(),
                    };
                    (rec, EventKind::Delete)
                }
            };
            if r <= self.last_written {
                // Only the first written op can fail this (the ones after
                // it get larger subs), so nothing has changed yet.
                return refuse(format!(
                    "{r:?} not above last written {:?}",
                    self.last_written
                ));
            }
            sub += 1;
            let kv = self.insert(key, rec, prev.as_ref());
            events.push(Event {
                kind,
                kv,
                prev_kv: prev,
            });
        }
        self.last_main = rev;
        Ok(events)
    }

    /// Adds one record of a history written elsewhere (an etcd backend
    /// being imported), keeping its create revision and version instead of
    /// deriving them; version 0 is a tombstone. Records must come in
    /// (main, sub) order above everything written and above the compaction
    /// point; anything else is refused, since the source is a file.
    pub fn import_record(&mut self, rec: ImportedRecord) -> Result<(), Error> {
        let ImportedRecord {
            key,
            main,
            sub,
            create,
            version,
            lease,
            value,
        } = rec;
        let r = Revision { main, sub };
        if main <= 0 || main <= self.compact_rev || r <= self.last_written {
            return Err(Error::Snapshot(format!(
                "imported revision {main}_{sub} out of order (last written {}_{})",
                self.last_written.main, self.last_written.sub
            )));
        }
        // A version counts the puts since the key's creation, each at its
        // own revision, so it is never above the revision; a larger one
        // (a damaged file) would overflow the next put's `version + 1`.
        if !(0..=main).contains(&version) {
            return Err(Error::Snapshot(format!(
                "imported revision {main}_{sub}: version {version} out of range"
            )));
        }
        let tombstone = version == 0;
        let rec = Rec {
            rev: r,
            create: if tombstone { 0 } else { create },
            version,
            lease: if tombstone { 0 } else { lease },
            value: if tombstone { Vec::new() } else { value },
        };
        let prev = self.get(&key);
        if tombstone && prev.is_none() {
            // Nothing live to delete: etcd would not have written it.
            return Ok(());
        }
        self.insert(&key, rec, prev.as_ref());
        self.last_main = main;
        Ok(())
    }

    /// Records `rec` as the newest record of `key` (whose live value was
    /// `prev`): history, lease index, live count, size; returns the record
    /// as a key-value.
    fn insert(&mut self, key: &[u8], rec: Rec, prev: Option<&KeyValue>) -> KeyValue {
        let r = rec.rev;
        self.last_written = r;
        if let Some(p) = prev {
            if p.lease != 0 {
                self.untrack_lease(p.lease, key);
            }
        } else {
            self.live_count += 1;
        }
        if rec.version != 0 {
            if rec.lease != 0 {
                self.lease_keys
                    .entry(rec.lease)
                    .or_default()
                    .insert(key.to_vec());
            }
        } else {
            self.live_count -= 1;
        }
        let kv = RecView::from_delta(&rec).to_kv(key, false);
        self.delta_bytes += rec_cost(key, &rec.value);
        self.delta_by_rev.insert(r, key.to_vec());
        match self.delta.get_mut(key) {
            Some(d) => d.recs.push(rec),
            None => {
                self.delta.insert(
                    key.to_vec(),
                    DeltaKey {
                        recs: vec![rec],
                        base_hidden: false,
                    },
                );
            }
        }
        kv
    }

    fn untrack_lease(&mut self, lease: i64, key: &[u8]) {
        if let Some(set) = self.lease_keys.get_mut(&lease) {
            set.remove(key);
            if set.is_empty() {
                self.lease_keys.remove(&lease);
            }
        }
    }

    /// etcd compaction: for each key keep the newest revision <= `rev`
    /// (dropped too if it is a tombstone) and everything newer. Fails with
    /// [`Error::Compacted`] if `rev <= compact_revision`. `rev` may exceed
    /// [`Store::last_revision`] since revisions are global.
    pub fn compact(&mut self, rev: i64) -> Result<(), Error> {
        if rev <= self.compact_rev {
            return Err(Error::Compacted);
        }
        self.compact_rev = rev;
        // Only keys with a delta record at or below `rev` can lose delta
        // records; base-only keys are trimmed logically by `Hist::survives`.
        let touched: BTreeSet<Vec<u8>> = self
            .delta_by_rev
            .range(
                ..=Revision {
                    main: rev,
                    sub: i64::MAX,
                },
            )
            .map(|(_, k)| k.clone())
            .collect();
        for key in touched {
            let Some(d) = self.delta.get_mut(&key) else {
                continue;
            };
            let n = d.recs.partition_point(|r| r.rev.main <= rev);
            if n == 0 {
                continue;
            }
            d.base_hidden = true;
            let keep_from = if d.recs[n - 1].version == 0 { n } else { n - 1 };
            for r in d.recs.drain(..keep_from) {
                self.delta_by_rev.remove(&r.rev);
                self.delta_bytes -= rec_cost(&key, &r.value);
                self.written_floor = self.written_floor.max(r.rev);
            }
            // An empty entry must stay while it hides base records.
            if d.recs.is_empty() && base_lookup(self.base.as_ref(), &key).is_none() {
                self.delta.remove(&key);
            }
        }
        Ok(())
    }

    /// Drops every record with main revision above `rev`, as if the writes at
    /// those revisions had never been applied (a step-down or a recovery cut
    /// voids them). `rev` must be at or above the compaction point (revisions
    /// at or below it are committed and can never be voided): returns
    /// [`Error::RollbackBelowCommitted`] otherwise, changing nothing. Records
    /// in the mmapped base are all at or below the snapshot's revision, which
    /// is committed; an attempt to drop base records is refused with the same
    /// error (never a panic).
    ///
    /// Afterwards [`Store::last_revision`] is `min(last, rev)`, so the next
    /// write may come at any revision above `rev` (the voided revisions are
    /// handed out again). Costs O(dropped records · log n): only keys with a
    /// delta record above `rev` are visited.
    pub fn rollback_above(&mut self, rev: i64) -> Result<(), Error> {
        if rev < self.compact_rev {
            return Err(Error::RollbackBelowCommitted {
                rev,
                committed: self.compact_rev,
                held: "compacted",
            });
        }
        // The base's last written revision is its newest record unless
        // compaction dropped that record, and then it is at or below the
        // compaction point: this refuses exactly the cuts through base records.
        let base_written = self
            .base
            .as_ref()
            .map_or(0, |m| m.root().last_written_main.to_native());
        if rev < base_written {
            return Err(Error::RollbackBelowCommitted {
                rev,
                committed: base_written,
                held: "in the snapshot",
            });
        }
        self.last_main = self.last_main.min(rev);
        if self.last_written.main <= rev {
            return Ok(());
        }
        // `last_written.main > rev >= 0`, so `rev + 1` cannot overflow.
        let dropped = self.delta_by_rev.split_off(&Revision {
            main: rev + 1,
            sub: i64::MIN,
        });
        let touched: BTreeSet<Vec<u8>> = dropped.into_values().collect();
        for key in touched {
            // The lease of the key's live value (None: not live) before and
            // after: lease tracking and the live count follow the newest
            // record.
            let newest = |s: &Store| {
                s.hist(&key)
                    .last()
                    .filter(|r| !r.is_tombstone())
                    .map(|r| r.lease)
            };
            let before = newest(self);
            let base_has_key = base_lookup(self.base.as_ref(), &key).is_some();
            let Some(d) = self.delta.get_mut(&key) else {
                debug_assert!(false, "delta revision index names a missing key");
                continue;
            };
            let keep = d.recs.partition_point(|r| r.rev.main <= rev);
            for r in d.recs.drain(keep..) {
                self.delta_bytes -= rec_cost(&key, &r.value);
            }
            // `base_hidden` was set by a compaction at or below `rev`, whose
            // effect stands; an empty entry stays only while it hides base
            // records, as after `compact`.
            if d.recs.is_empty() && !(d.base_hidden && base_has_key) {
                self.delta.remove(&key);
            }
            let after = newest(self);
            if let Some(lease) = before {
                self.live_count -= 1;
                if lease != 0 {
                    self.untrack_lease(lease, &key);
                }
            }
            if let Some(lease) = after {
                self.live_count += 1;
                if lease != 0 {
                    self.lease_keys.entry(lease).or_default().insert(key);
                }
            }
        }
        // Every write at or below `rev` is either still in the delta or
        // counted in the floor (compacted, or before the base), and the
        // floor is at or below `rev`: compaction points and the base's
        // records are.
        debug_assert!(self.written_floor.main <= rev);
        self.last_written = self
            .delta_by_rev
            .last_key_value()
            .map_or(self.written_floor, |(r, _)| (*r).max(self.written_floor));
        Ok(())
    }

    /// Watch event source: events with main revision in `[from_rev, to_rev]`
    /// for keys in `[key, range_end)`, in (main, sub) order.
    ///
    /// Fails with [`Error::Compacted`] if `from_rev < compact_revision`, as
    /// etcd's watcher group does (`minRev < compactRev`); a watch starting
    /// exactly at the compaction point is served from what compaction kept.
    /// `prev_kv` is the key's previous live value when that is still
    /// retained, matching etcd which reads it at `mod_revision - 1`.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_rev: i64,
        to_rev: i64,
        with_prev_kv: bool,
    ) -> Result<Vec<Event>, Error> {
        self.events_with_rev(key, range_end, from_rev, to_rev, with_prev_kv)
            .map(|evs| evs.into_iter().map(|(_, e)| e).collect())
    }

    /// [`Store::events`] with each event's (main, sub) revision, which a
    /// caller merging several stores' events needs to order a transaction's
    /// events the way they were written.
    pub fn events_with_rev(
        &self,
        key: &[u8],
        range_end: &[u8],
        from_rev: i64,
        to_rev: i64,
        with_prev_kv: bool,
    ) -> Result<Vec<(Revision, Event)>, Error> {
        if from_rev < self.compact_rev {
            return Err(Error::Compacted);
        }
        let from = from_rev.max(1);
        let mut out = Vec::new();
        let Some(bounds) = key_bounds(key, range_end) else {
            return Ok(out);
        };
        if to_rev < from {
            return Ok(out);
        }
        let mut emit = |k: &[u8], hist: Hist<'_>, i: usize| {
            if !hist.survives(i, self.compact_rev) {
                return;
            }
            let r = hist.get(i);
            let prev_kv = if with_prev_kv && i > 0 && hist.survives(i - 1, self.compact_rev) {
                Some(hist.get(i - 1))
                    .filter(|p| !p.is_tombstone())
                    .map(|p| p.to_kv(k, false))
            } else {
                None
            };
            let kind = if r.is_tombstone() {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            out.push((
                r.rev,
                Event {
                    kind,
                    kv: r.to_kv(k, false),
                    prev_kv,
                },
            ));
        };
        // Base revisions are all below delta revisions, so base then delta is
        // already (main, sub) order.
        if let Some(m) = &self.base {
            let root = m.root();
            let revs = root.revs.as_slice();
            let start = revs.partition_point(|e| e.main.to_native() < from);
            for e in &revs[start..] {
                if e.main.to_native() > to_rev {
                    break;
                }
                let bk = &root.keys[e.key_idx.to_native() as usize];
                let k = bk.key.as_slice();
                if !in_bounds(&bounds, k) {
                    continue;
                }
                let d = self.delta.get(k);
                if d.is_some_and(|d| d.base_hidden) {
                    continue;
                }
                let hist = self.hist_parts(Some(bk), d);
                emit(k, hist, e.rec_idx.to_native() as usize);
            }
        }
        let lo = Revision {
            main: from,
            sub: i64::MIN,
        };
        let hi = Revision {
            main: to_rev,
            sub: i64::MAX,
        };
        for (r, k) in self.delta_by_rev.range(lo..=hi) {
            if !in_bounds(&bounds, k) {
                continue;
            }
            let hist = self.hist(k);
            let Ok(di) = hist.delta.binary_search_by(|x| x.rev.cmp(r)) else {
                debug_assert!(false, "delta revision index out of sync at {r:?}");
                continue;
            };
            emit(k, hist, hist.base.len() + di);
        }
        Ok(out)
    }

    /// Live keys attached to `lease`, sorted.
    pub fn keys_with_lease(&self, lease: i64) -> Vec<Vec<u8>> {
        self.lease_keys
            .get(&lease)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Lease ids referenced by live keys, sorted.
    pub fn leases(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.lease_keys.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Approximate bytes held: the mapped snapshot plus an estimate of the
    /// delta (compacted base records stay counted until the next snapshot,
    /// as etcd's db size stays until defragment).
    pub fn size_bytes(&self) -> u64 {
        self.base.as_ref().map_or(0, |m| m.len() as u64) + self.delta_bytes
    }

    /// Number of live keys at the latest revision.
    pub fn key_count(&self) -> usize {
        self.live_count
    }

    /// Writes the whole store (retained history after compaction, compact
    /// and last revisions, `applied_index`, and the caller's opaque `meta`)
    /// to `path` atomically. Returns the file size in bytes.
    pub fn write_snapshot(
        &self,
        path: &Path,
        applied_index: u64,
        meta: &[u8],
    ) -> Result<u64, Error> {
        self.snapshot_image(path, applied_index, meta)?.write(path)
    }

    /// The snapshot of [`Store::write_snapshot`] as an owned image, not yet
    /// serialized: copying it out is the part that needs the store; the
    /// serialization and the file write can then run on another thread.
    /// `path` only names the file in errors.
    pub fn snapshot_image(
        &self,
        path: &Path,
        applied_index: u64,
        meta: &[u8],
    ) -> Result<SnapshotImage, Error> {
        self.snapshot_image_upto(path, applied_index, meta, i64::MAX)
    }

    /// [`Store::snapshot_image`] of the store as of revision `upto`: every
    /// record above it is left out, as if not yet written (a member that
    /// goes on applying writes while a backup is cut at one revision).
    /// `upto` must be at or above the compaction point.
    pub fn snapshot_image_upto(
        &self,
        path: &Path,
        applied_index: u64,
        meta: &[u8],
        upto: i64,
    ) -> Result<SnapshotImage, Error> {
        let mut cut = self.snapshot_cut(path, applied_index, meta, upto)?;
        while !self.snapshot_cut_step(&mut cut, usize::MAX)? {}
        Ok(cut.image())
    }

    /// Begins [`Store::snapshot_image_upto`] as a [`SnapshotCut`], to be
    /// copied a part at a time by [`Store::snapshot_cut_step`] with writes
    /// to the store in between: the cut is at `upto` or at the newest
    /// revision now, whichever is lower, so every later write is left out.
    pub fn snapshot_cut(
        &self,
        path: &Path,
        applied_index: u64,
        meta: &[u8],
        upto: i64,
    ) -> Result<SnapshotCut, Error> {
        if upto < self.compact_rev {
            return Err(Error::Snapshot(format!(
                "{}: cannot cut a snapshot at {upto}, below the compaction point {}",
                path.display(),
                self.compact_rev
            )));
        }
        let upto = upto.min(self.last_main);
        // Everything written survives in the image unless compacted away,
        // so at the newest revision the store's own mark is the right one.
        let last_written = if upto >= self.last_main {
            self.last_written
        } else {
            // As a rollback to `upto` would leave it.
            self.delta_by_rev
                .range(
                    ..=Revision {
                        main: upto,
                        sub: i64::MAX,
                    },
                )
                .next_back()
                .map_or(self.written_floor, |(r, _)| (*r).max(self.written_floor))
        };
        Ok(SnapshotCut {
            store: self.id,
            path: path.to_path_buf(),
            upto,
            after: None,
            done: false,
            snapshot: Snapshot {
                compact_rev: self.compact_rev,
                last_main: upto,
                last_written_main: last_written.main,
                last_written_sub: last_written.sub,
                applied_index,
                meta: meta.to_vec(),
                keys: Vec::new(),
                revs: Vec::new(),
            },
        })
    }

    /// Copies up to `keys_max` more keys into `cut`; true once every key
    /// is in. The writes applied since the cut began are above its
    /// revision and left out; a compaction or another store since then
    /// would change what the copied part holds, so the cut is refused
    /// ([`Error::Overtaken`]: the caller begins again).
    pub fn snapshot_cut_step(&self, cut: &mut SnapshotCut, keys_max: usize) -> Result<bool, Error> {
        if cut.done {
            return Ok(true);
        }
        let keys_max = keys_max.max(1);
        if cut.store != self.id || cut.snapshot.compact_rev != self.compact_rev {
            return Err(Error::Overtaken(cut.path.display().to_string()));
        }
        let path = &cut.path;
        let too_many = || Error::Snapshot(format!("{}: too many keys or records", path.display()));
        let after = cut.after.take();
        let bounds: KeyBounds<'_> = (
            after.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            Bound::Unbounded,
        );
        let (keys, revs) = (&mut cut.snapshot.keys, &mut cut.snapshot.revs);
        let (compact_rev, upto) = (self.compact_rev, cut.upto);
        let mut err = None;
        let mut seen = 0usize;
        let mut last: Option<&[u8]> = None;
        self.for_each_key_while(bounds, |k, hist| {
            if seen == keys_max {
                return false;
            }
            seen += 1;
            last = Some(k);
            let mut recs = Vec::new();
            for i in 0..hist.len() {
                if !hist.survives(i, compact_rev) {
                    continue;
                }
                let r = hist.get(i);
                if r.rev.main > upto {
                    // Newer records of a key come later in its history.
                    break;
                }
                match (u32::try_from(keys.len()), u32::try_from(recs.len())) {
                    (Ok(key_idx), Ok(rec_idx)) => revs.push(SnapRevEntry {
                        main: r.rev.main,
                        sub: r.rev.sub,
                        key_idx,
                        rec_idx,
                    }),
                    _ => err = Some(too_many()),
                }
                recs.push(SnapRec {
                    main: r.rev.main,
                    sub: r.rev.sub,
                    create: r.create,
                    version: r.version,
                    lease: r.lease,
                    value: r.value.to_vec(),
                });
            }
            if !recs.is_empty() {
                keys.push(SnapKey {
                    key: k.to_vec(),
                    recs,
                });
            }
            true
        });
        if let Some(e) = err {
            return Err(e);
        }
        if seen < keys_max {
            cut.done = true;
        } else {
            cut.after = last.map(<[u8]>::to_vec).or(after);
        }
        Ok(cut.done)
    }

    /// Maps a snapshot written by [`Store::write_snapshot`] and returns a
    /// store whose base layer is the archive read in place (zero-copy: keys,
    /// values and revision history are never deserialized), with an empty
    /// delta on top, plus the `applied_index` and `meta` stored with it.
    ///
    /// Open verifies magic, format version, length, checksums, the archive
    /// structure (rkyv bytecheck) and the ordering invariants the reads rely
    /// on; it then scans the keys once to build the lease index and the live
    /// key count. Any defect is an [`Error::Snapshot`] naming the path.
    pub fn open_snapshot(path: &Path) -> Result<(Store, u64, Vec<u8>), Error> {
        let mapped = Mapped::open(path)?;
        let root = mapped.root();
        let mut store = Store::new();
        store.compact_rev = root.compact_rev.to_native();
        store.last_main = root.last_main.to_native();
        store.last_written = Revision {
            main: root.last_written_main.to_native(),
            sub: root.last_written_sub.to_native(),
        };
        store.written_floor = store.last_written;
        for k in root.keys.iter() {
            let Some(last) = k.recs.last() else { continue };
            if last.version.to_native() != 0 {
                store.live_count += 1;
                let lease = last.lease.to_native();
                if lease != 0 {
                    store
                        .lease_keys
                        .entry(lease)
                        .or_default()
                        .insert(k.key.as_slice().to_vec());
                }
            }
        }
        let applied_index = root.applied_index.to_native();
        let meta = root.meta.as_slice().to_vec();
        store.base = Some(mapped);
        Ok((store, applied_index, meta))
    }
}

/// A store's snapshot copied out of it ([`Store::snapshot_image`]); owns
/// its data, so it can be written from any thread.
pub struct SnapshotImage(Snapshot);

/// A [`SnapshotImage`] being copied out of a store a part at a time
/// ([`Store::snapshot_cut`]), so that a shard's writes go on between the
/// parts instead of waiting for the whole copy.
pub struct SnapshotCut {
    store: u64,
    path: std::path::PathBuf,
    upto: i64,
    /// The last key copied; the next part starts after it.
    after: Option<Vec<u8>>,
    done: bool,
    snapshot: Snapshot,
}

impl SnapshotCut {
    /// The image, once [`Store::snapshot_cut_step`] said it is whole.
    pub fn image(mut self) -> SnapshotImage {
        debug_assert!(self.done, "image of a cut not yet whole");
        self.snapshot.revs.sort_unstable_by_key(|e| (e.main, e.sub));
        SnapshotImage(self.snapshot)
    }
}

impl SnapshotImage {
    /// Serializes and writes the snapshot to `path` atomically (temp file,
    /// fsync, rename, directory fsync); the file size in bytes.
    pub fn write(self, path: &Path) -> Result<u64, Error> {
        snapshot::write(path, &self.0)
    }
}

#[cfg(test)]
mod tests;
