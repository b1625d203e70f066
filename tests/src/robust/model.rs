//! etcd's KV model as a deterministic state machine: what the checkers
//! compare every answer of a history with.
//!
//! State: the store's revision, the current keys (`Kv`: value,
//! create_revision, mod_revision, version, lease), the granted leases, and
//! the keys of every earlier revision (so that ranges at a revision and
//! serializable reads can be answered). [`step`] applies one request and
//! says what etcd would answer.
//!
//! Semantics, from etcd's source: v3.4.45's `etcdserver/apply.go`,
//! `mvcc/kvstore_txn.go`, `lease/lessor.go`, and today's
//! `server/etcdserver/txn/{txn,put,range,delete}.go`,
//! `server/storage/mvcc/kvstore_txn.go`, `server/lease/lessor.go`,
//! `api/v3rpc/rpctypes/error.go` (the same in these respects, but for the
//! order of the txn checks, which follows 3.4):
//! - A write txn (put, delete, txn) gets one main revision if it changes
//!   something (`storeTxnWrite.End` bumps `currentRev` only when
//!   `changes` is non-empty): a put always does, a delete of nothing does
//!   not, a read-only txn does not, a txn advances once whatever the number
//!   of writes in its taken branch. The header revision is the new revision
//!   if it changed something, else the current one.
//! - Put: version + 1 (1 when the key is absent), create_revision kept (the
//!   new revision when absent), mod_revision the new revision, lease the
//!   request's (0 detaches). Delete removes the key: a later put starts
//!   again at version 1 with create_revision = its revision.
//! - Txn (`Txn` in txn.go): the compares of the txn and of every nested txn
//!   on the taken path are evaluated first, on the state before the txn
//!   (`compareToPath`); then the taken path is checked (3.4's
//!   `etcdserver/apply.go` `checkRequests`, puts first, then ranges): a put
//!   with a lease that is not granted fails the whole txn with `requested
//!   lease not found`; a range at a revision above the current one with
//!   `required revision is a future revision`, below the oldest known one
//!   with `compacted`; then the ops run in order, a range seeing
//!   the writes made before it in the txn (`storeTxnWrite.Range`). A compare
//!   on an absent key compares a zero `Kv`, except a VALUE compare, which is
//!   false (`applyCompare`).
//! - LeaseGrant of an existing id fails with `lease already exists`; id 0
//!   (server-chosen) cannot be followed and changes nothing in the model.
//!   LeaseRevoke of an unknown id fails with `requested lease not found`;
//!   otherwise the keys attached (kv.lease == id) are deleted in one txn,
//!   which takes a revision only if there was a key (`lessor.Revoke`: one
//!   `txn.DeleteRange` per key, then `txn.End`). Their header revision is
//!   the store's revision after them (`newHeader`).
//! - Range: the header revision is the current revision; `revision` 0 is
//!   the latest; above the current one fails (future revision).
//!
//! - Compact (`mvcc/kvstore.go` `updateCompactRev`): at or below the
//!   compacted revision fails with `compacted`, above the current one with
//!   `future revision`; otherwise it records the new compacted revision,
//!   takes no revision, and its header is the store's revision when the
//!   response was made (`v3_server.go` `Compact` reads `kv.Rev()` after
//!   the apply, so later writes may show: [`outcome_matches`] accepts any
//!   header at or above the model's). From then on a range at a revision
//!   below it fails with `compacted` (after the future-revision check, as
//!   `rangeKeys` and 3.4's `checkRequestRange` order them). The model keeps
//!   the compacted states for [`State::at`] (serializable reads of a
//!   lagging member may still show them).
//! - RangeLimit: a range cut to its first `limit` keys, `count` all of them.
//!
//! Not modelled: lease TTL expiry (workloads must revoke, grant TTLs
//! longer than the run, or add the expiry as an unknown-outcome revoke
//! invoked when the TTL ran out), ranges below the initial state's
//! revision (they answer `compacted`), sort/keys-only/count-only (not in
//! the history types), `prev_kv` on delete, the duplicate-key validation of txns
//! (generated txns must not write one key twice).
//!
//! `Answer::Put.prev` from the model is always the previous kv (None when
//! absent); [`answers_match`] accepts an observed `None` (prev_kv not asked
//! for) and otherwise requires equality.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use super::history::{Answer, CmpOp, Compare, Kv, Outcome, Request, Target};

/// `rpctypes.ErrGRPCLeaseNotFound`.
pub const ERR_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
/// `rpctypes.ErrGRPCLeaseExist`.
pub const ERR_LEASE_EXISTS: &str = "etcdserver: lease already exists";
/// `rpctypes.ErrGRPCFutureRev`.
pub const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// `rpctypes.ErrGRPCCompacted`.
pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// The errors the model itself can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelError {
    LeaseNotFound,
    LeaseExists,
    FutureRevision,
    Compacted,
}

impl ModelError {
    /// etcd's message for it.
    pub fn message(self) -> &'static str {
        match self {
            ModelError::LeaseNotFound => ERR_LEASE_NOT_FOUND,
            ModelError::LeaseExists => ERR_LEASE_EXISTS,
            ModelError::FutureRevision => ERR_FUTURE_REV,
            ModelError::Compacted => ERR_COMPACTED,
        }
    }

    /// Which model error an error message (as a client reports it, maybe
    /// wrapped in a gRPC status text) is, if any.
    pub fn classify(message: &str) -> Option<ModelError> {
        if message.contains("requested lease not found") {
            Some(ModelError::LeaseNotFound)
        } else if message.contains("lease already exists") {
            Some(ModelError::LeaseExists)
        } else if message.contains("required revision is a future revision") {
            Some(ModelError::FutureRevision)
        } else if message.contains("required revision has been compacted") {
            Some(ModelError::Compacted)
        } else {
            None
        }
    }
}

/// Keys and kvs shared between revisions (a write copies the map's nodes,
/// not the keys and values).
type Kvs = BTreeMap<Rc<[u8]>, Rc<Kv>>;

/// The granted leases: a sorted vector (copied whole on change: a memcpy).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Leases(Vec<i64>);

impl Leases {
    fn contains(&self, id: &i64) -> bool {
        self.0.binary_search(id).is_ok()
    }
    fn insert(&mut self, id: i64) {
        if let Err(at) = self.0.binary_search(&id) {
            self.0.insert(at, id);
        }
    }
    fn remove(&mut self, id: &i64) {
        if let Ok(at) = self.0.binary_search(id) {
            self.0.remove(at);
        }
    }
    fn iter(&self) -> std::slice::Iter<'_, i64> {
        self.0.iter()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The keys at one earlier revision; a chain back to the oldest known one,
/// with skew-binary jump pointers so that finding a revision is O(log n).
struct Past {
    revision: i64,
    kvs: Rc<Kvs>,
    kv_hash: u64,
    /// Hash of everything before `revision`.
    past_hash: u64,
    prev: Option<Rc<Past>>,
    jump: Option<Rc<Past>>,
}

impl Drop for Past {
    // Iterative, so that a chain of many thousands of revisions does not
    // overflow the stack when dropped.
    fn drop(&mut self) {
        self.jump = None;
        let mut next = self.prev.take();
        while let Some(rc) = next {
            match Rc::try_unwrap(rc) {
                Ok(mut node) => {
                    node.jump = None;
                    next = node.prev.take();
                }
                Err(_) => break,
            }
        }
    }
}

/// The model's state. Cheap to clone (shared, copy-on-write).
#[derive(Clone)]
pub struct State {
    revision: i64,
    /// Oldest revision whose keys are known (the initial state's).
    first_revision: i64,
    /// etcd's `compactMainRev` (0: never compacted).
    compacted: i64,
    kvs: Rc<Kvs>,
    leases: Rc<Leases>,
    past: Option<Rc<Past>>,
    kv_hash: u64,
    lease_hash: u64,
    past_hash: u64,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finalizer.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    t.hash(&mut h);
    mix(h.finish())
}

fn combine(a: u64, b: u64) -> u64 {
    mix(a.rotate_left(17) ^ b.wrapping_mul(0x2545_f491_4f6c_dd1d))
}

impl State {
    /// A fresh etcd: revision 1, no keys, no leases.
    pub fn new() -> State {
        State::with_contents(1, Vec::new(), Vec::new())
    }

    /// A store at `revision` holding `kvs` and `leases` (a history recorded
    /// on a server that was not empty). Revisions before `revision` are
    /// unknown: ranges at them answer `compacted`.
    pub fn with_contents(revision: i64, kvs: Vec<Kv>, leases: Vec<i64>) -> State {
        let kvs: Kvs = kvs
            .into_iter()
            .map(|kv| (Rc::from(kv.key.as_slice()), Rc::new(kv)))
            .collect();
        let mut leases: Vec<i64> = leases;
        leases.sort_unstable();
        leases.dedup();
        let leases = Leases(leases);
        let kv_hash = kvs
            .values()
            .fold(0u64, |a, kv| a.wrapping_add(hash_of(&**kv)));
        let lease_hash = leases.iter().fold(0u64, |a, l| a.wrapping_add(hash_of(l)));
        State {
            revision,
            first_revision: revision,
            compacted: 0,
            kvs: Rc::new(kvs),
            leases: Rc::new(leases),
            past: None,
            kv_hash,
            lease_hash,
            past_hash: 0,
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision compacted to (0: none).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The current keys, in key order.
    pub fn kvs(&self) -> impl Iterator<Item = &Kv> {
        self.kvs.values().map(|kv| &**kv)
    }

    /// One current key.
    pub fn get(&self, key: &[u8]) -> Option<&Kv> {
        self.kvs.get(key).map(|kv| &**kv)
    }

    /// The granted leases.
    pub fn leases(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.iter().copied()
    }

    /// The state as it was at `revision` (keys and everything before them;
    /// the lease set is not kept per revision: the view has none, which no
    /// read looks at). None when `revision` is above the current one or
    /// below the oldest known one.
    pub fn at(&self, revision: i64) -> Option<State> {
        if revision == self.revision {
            return Some(self.clone());
        }
        if revision > self.revision || revision < self.first_revision {
            return None;
        }
        let mut node = self.past.as_ref()?;
        while node.revision > revision {
            node = match &node.jump {
                Some(j) if j.revision >= revision => j,
                _ => node.prev.as_ref()?,
            };
        }
        debug_assert_eq!(node.revision, revision);
        Some(State {
            revision,
            first_revision: self.first_revision,
            compacted: self.compacted,
            kvs: node.kvs.clone(),
            leases: Rc::new(Leases::default()),
            past: node.prev.clone(),
            kv_hash: node.kv_hash,
            lease_hash: 0,
            past_hash: node.past_hash,
        })
    }

    /// A 64-bit hash of the whole state, its earlier revisions included
    /// (equal states hash equal; what the checker memoizes on).
    pub fn hash64(&self) -> u64 {
        combine(
            combine(
                combine(combine(self.revision as u64, self.kv_hash), self.lease_hash),
                self.past_hash,
            ),
            self.compacted as u64,
        )
    }

    pub(crate) fn apply(&self, effect: Effect) -> State {
        if effect.is_noop() {
            return self.clone();
        }
        let mut next = self.clone();
        match effect.lease {
            Some(LeaseChange::Grant(id)) => {
                Rc::make_mut(&mut next.leases).insert(id);
                next.lease_hash = next.lease_hash.wrapping_add(hash_of(&id));
            }
            Some(LeaseChange::Revoke(id)) => {
                Rc::make_mut(&mut next.leases).remove(&id);
                next.lease_hash = next.lease_hash.wrapping_sub(hash_of(&id));
            }
            None => {}
        }
        if let Some(c) = effect.compact {
            next.compacted = c;
        }
        if !effect.changes.is_empty() {
            // The current keys become the past; the new revision is one more.
            let past_jump = match &self.past {
                Some(p) => match &p.jump {
                    Some(j) => match &j.jump {
                        Some(jj) if p.revision - j.revision == j.revision - jj.revision => {
                            Some(jj.clone())
                        }
                        _ => Some(p.clone()),
                    },
                    None => Some(p.clone()),
                },
                None => None,
            };
            next.past = Some(Rc::new(Past {
                revision: self.revision,
                kvs: self.kvs.clone(),
                kv_hash: self.kv_hash,
                past_hash: self.past_hash,
                prev: self.past.clone(),
                jump: past_jump,
            }));
            next.past_hash = combine(self.past_hash, combine(self.revision as u64, self.kv_hash));
            let mut kvs: Kvs = (*self.kvs).clone();
            let mut h = self.kv_hash;
            for (key, kv) in effect.changes {
                if let Some(old) = kvs.remove(&key[..]) {
                    h = h.wrapping_sub(hash_of(&*old));
                }
                if let Some(kv) = kv {
                    h = h.wrapping_add(hash_of(&kv));
                    kvs.insert(Rc::from(key.as_slice()), Rc::new(kv));
                }
            }
            next.kvs = Rc::new(kvs);
            next.kv_hash = h;
            next.revision = self.revision + 1;
        }
        next
    }
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.revision == other.revision
            && self.kvs == other.kvs
            && self.leases == other.leases
            && self.past_hash == other.past_hash
            && self.compacted == other.compacted
    }
}

impl Eq for State {}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("revision", &self.revision)
            .field("kvs", &self.kvs.values().collect::<Vec<_>>())
            .field("leases", &self.leases)
            .finish()
    }
}

impl fmt::Display for State {
    /// etcdctl-like: the revision, one line per key, the leases.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "revision {}", self.revision)?;
        if self.compacted > 0 {
            writeln!(f, "  compacted to {}", self.compacted)?;
        }
        for kv in self.kvs.values() {
            writeln!(f, "  {}", show_kv(kv))?;
        }
        if self.leases.is_empty() {
            write!(f, "  leases: none")
        } else {
            let ls: Vec<String> = self.leases.iter().map(|l| format!("{l:x}")).collect();
            write!(f, "  leases: {}", ls.join(" "))
        }
    }
}

/// What a request does to the state (computed without copying it).
#[derive(Debug, Default)]
pub(crate) struct Effect {
    /// Key changes, in order: `None` deletes. Non-empty means one new
    /// revision.
    changes: Vec<(Vec<u8>, Option<Kv>)>,
    /// The lease set's change, if any.
    lease: Option<LeaseChange>,
    /// The new compacted revision, if any.
    compact: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum LeaseChange {
    Grant(i64),
    Revoke(i64),
}

impl Effect {
    /// Changes nothing (neither keys nor leases).
    pub(crate) fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.lease.is_none() && self.compact.is_none()
    }

    /// Takes a new revision.
    pub(crate) fn bumps(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Applies `request` to `state`: the state after it and what etcd answers
/// (never `Outcome::Unknown`; a model error leaves the state unchanged).
pub fn step(state: &State, request: &Request) -> (State, Outcome) {
    let (outcome, effect) = eval(state, request);
    (state.apply(effect), outcome)
}

/// [`step`] without building the new state.
pub(crate) fn eval(state: &State, request: &Request) -> (Outcome, Effect) {
    match request {
        Request::LeaseGrant { id, .. } => {
            if *id == 0 {
                // Server-chosen id: not followed (as etcd's own model does).
                return (ok(state.revision, Answer::LeaseGrant), Effect::default());
            }
            if state.leases.contains(id) {
                return (failed(ModelError::LeaseExists), Effect::default());
            }
            (
                ok(state.revision, Answer::LeaseGrant),
                Effect {
                    lease: Some(LeaseChange::Grant(*id)),
                    ..Effect::default()
                },
            )
        }
        Request::LeaseRevoke { id } => {
            if !state.leases.contains(id) {
                return (failed(ModelError::LeaseNotFound), Effect::default());
            }
            let changes: Vec<(Vec<u8>, Option<Kv>)> = state
                .kvs
                .values()
                .filter(|kv| kv.lease == *id)
                .map(|kv| (kv.key.clone(), None))
                .collect();
            let revision = state.revision + i64::from(!changes.is_empty());
            (
                ok(revision, Answer::LeaseRevoke),
                Effect {
                    changes,
                    lease: Some(LeaseChange::Revoke(*id)),
                    compact: None,
                },
            )
        }
        Request::Compact { revision } => {
            if *revision <= state.compacted {
                return (failed(ModelError::Compacted), Effect::default());
            }
            if *revision > state.revision {
                return (failed(ModelError::FutureRevision), Effect::default());
            }
            (
                ok(state.revision, Answer::Compact),
                Effect {
                    compact: Some(*revision),
                    ..Effect::default()
                },
            )
        }
        _ => {
            let mut view = View {
                base: state,
                overlay: BTreeMap::new(),
                changes: Vec::new(),
            };
            match view.run(request) {
                Ok(answer) => {
                    let revision = state.revision + i64::from(!view.changes.is_empty());
                    (
                        ok(revision, answer),
                        Effect {
                            changes: view.changes,
                            ..Effect::default()
                        },
                    )
                }
                Err(e) => (failed(e), Effect::default()),
            }
        }
    }
}

fn ok(revision: i64, answer: Answer) -> Outcome {
    Outcome::Ok { revision, answer }
}

fn failed(e: ModelError) -> Outcome {
    Outcome::Failed(e.message().to_string())
}

/// Whether an observed outcome is what the model expected: same header
/// revision and answer (see [`answers_match`]), or both the same model
/// error; for a compaction, any header at or above the model's (etcd
/// reads it after the apply). An observed `Unknown` matches nothing.
pub fn outcome_matches(expected: &Outcome, observed: &Outcome) -> bool {
    match (expected, observed) {
        (
            Outcome::Ok {
                revision: r1,
                answer: Answer::Compact,
            },
            Outcome::Ok {
                revision: r2,
                answer: a2,
            },
        ) => r2 >= r1 && *a2 == Answer::Compact,
        (
            Outcome::Ok {
                revision: r1,
                answer: a1,
            },
            Outcome::Ok {
                revision: r2,
                answer: a2,
            },
        ) => r1 == r2 && answers_match(a1, a2),
        (Outcome::Failed(m1), Outcome::Failed(m2)) => match ModelError::classify(m1) {
            Some(e) => ModelError::classify(m2) == Some(e),
            None => false,
        },
        _ => false,
    }
}

/// Whether an observed answer is the model's: equal, except that an
/// observed put without `prev` (prev_kv not asked for) matches any.
pub fn answers_match(expected: &Answer, observed: &Answer) -> bool {
    match (expected, observed) {
        (Answer::Put { .. }, Answer::Put { prev: None }) => true,
        (Answer::Put { prev: p1 }, Answer::Put { prev: p2 }) => p1 == p2,
        (
            Answer::Txn {
                succeeded: s1,
                results: r1,
            },
            Answer::Txn {
                succeeded: s2,
                results: r2,
            },
        ) => {
            s1 == s2 && r1.len() == r2.len() && r1.iter().zip(r2).all(|(a, b)| answers_match(a, b))
        }
        (a, b) => a == b,
    }
}

/// etcd's `mkGteRange` + `[key, range_end)`: which keys a range covers.
#[derive(Clone, Copy)]
enum Span<'a> {
    One(&'a [u8]),
    From(&'a [u8]),
    Between(&'a [u8], &'a [u8]),
}

impl<'a> Span<'a> {
    fn new(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        if range_end.is_empty() {
            Span::One(key)
        } else if range_end == [0] {
            Span::From(key)
        } else {
            Span::Between(key, range_end)
        }
    }

    fn contains(&self, k: &[u8]) -> bool {
        match *self {
            Span::One(key) => k == key,
            Span::From(key) => k >= key,
            Span::Between(a, b) => k >= a && k < b,
        }
    }

    fn kvs(&self, kvs: &Kvs) -> Vec<Kv> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        match *self {
            Span::One(key) => kvs.get(key).map(|kv| (**kv).clone()).into_iter().collect(),
            Span::From(key) => kvs
                .range::<[u8], _>((Included(key), Unbounded))
                .map(|(_, v)| (**v).clone())
                .collect(),
            Span::Between(a, b) if a < b => kvs
                .range::<[u8], _>((Included(a), Excluded(b)))
                .map(|(_, v)| (**v).clone())
                .collect(),
            Span::Between(..) => Vec::new(),
        }
    }
}

/// A txn in progress: the state before it plus its own writes so far.
struct View<'a> {
    base: &'a State,
    /// Keys written so far by this txn (None: deleted).
    overlay: BTreeMap<Vec<u8>, Option<Kv>>,
    changes: Vec<(Vec<u8>, Option<Kv>)>,
}

impl View<'_> {
    fn get(&self, key: &[u8]) -> Option<Kv> {
        match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.base.kvs.get(key).map(|kv| (**kv).clone()),
        }
    }

    fn range(&self, span: Span<'_>) -> Vec<Kv> {
        let mut out = span.kvs(&self.base.kvs);
        if self.overlay.is_empty() {
            return out;
        }
        let mut merged: BTreeMap<Vec<u8>, Kv> =
            out.drain(..).map(|kv| (kv.key.clone(), kv)).collect();
        for (k, v) in &self.overlay {
            if span.contains(k) {
                match v {
                    Some(kv) => {
                        merged.insert(k.clone(), kv.clone());
                    }
                    None => {
                        merged.remove(k);
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    fn write(&mut self, key: Vec<u8>, kv: Option<Kv>) {
        self.overlay.insert(key.clone(), kv.clone());
        self.changes.push((key, kv));
    }

    /// The taken path: one bool per txn on it, as etcd's `compareToPath`,
    /// evaluated on the state before the txn.
    fn path(&self, request: &Request, out: &mut Vec<bool>) {
        if let Request::Txn {
            compares,
            success,
            failure,
        } = request
        {
            let taken = compares.iter().all(|c| compare(self.base, c));
            out.push(taken);
            for op in if taken { success } else { failure } {
                self.path(op, out);
            }
        }
    }

    /// etcd 3.4's `checkRequests` (and the checks of a lone put/range)
    /// along the taken path: `puts` the lease of every put, else the
    /// revision of every range (3.4 makes the two passes in that order).
    fn check(
        &self,
        request: &Request,
        path: &[bool],
        at: &mut usize,
        puts: bool,
    ) -> Result<(), ModelError> {
        match request {
            Request::Range { revision, .. } | Request::RangeLimit { revision, .. } if !puts => {
                check_revision(self.base, *revision)
            }
            Request::Put { lease, .. } if puts => {
                if *lease != 0 && !self.base.leases.contains(lease) {
                    Err(ModelError::LeaseNotFound)
                } else {
                    Ok(())
                }
            }
            Request::Txn {
                success, failure, ..
            } => {
                let taken = path[*at];
                *at += 1;
                for op in if taken { success } else { failure } {
                    self.check(op, path, at, puts)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn run(&mut self, request: &Request) -> Result<Answer, ModelError> {
        let mut path = Vec::new();
        self.path(request, &mut path);
        self.check(request, &path, &mut 0, true)?;
        self.check(request, &path, &mut 0, false)?;
        Ok(self.exec(request, &path, &mut 0))
    }

    fn exec(&mut self, request: &Request, path: &[bool], at: &mut usize) -> Answer {
        let new_rev = self.base.revision + 1;
        match request {
            Request::Range {
                key,
                range_end,
                revision,
                ..
            } => {
                let span = Span::new(key, range_end);
                let kvs = if *revision == 0 {
                    self.range(span)
                } else {
                    // Checked: first_revision <= revision <= base.revision.
                    let past = self.base.at(*revision).expect("revision checked");
                    span.kvs(&past.kvs)
                };
                let count = kvs.len() as i64;
                Answer::Range { kvs, count }
            }
            Request::RangeLimit {
                key,
                range_end,
                revision,
                limit,
            } => {
                let span = Span::new(key, range_end);
                let mut kvs = if *revision == 0 {
                    self.range(span)
                } else {
                    let past = self.base.at(*revision).expect("revision checked");
                    span.kvs(&past.kvs)
                };
                let count = kvs.len() as i64;
                if *limit > 0 {
                    kvs.truncate(*limit as usize);
                }
                Answer::Range { kvs, count }
            }
            Request::Put { key, value, lease } => {
                let prev = self.get(key);
                let kv = Kv {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(new_rev, |p| p.create_revision),
                    mod_revision: new_rev,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                self.write(key.clone(), Some(kv));
                Answer::Put { prev }
            }
            Request::Delete { key, range_end } => {
                let doomed = self.range(Span::new(key, range_end));
                for kv in &doomed {
                    self.write(kv.key.clone(), None);
                }
                Answer::Delete {
                    deleted: doomed.len() as i64,
                }
            }
            Request::Txn {
                success, failure, ..
            } => {
                let succeeded = path[*at];
                *at += 1;
                let ops = if succeeded { success } else { failure };
                let results = ops.iter().map(|op| self.exec(op, path, at)).collect();
                Answer::Txn { succeeded, results }
            }
            // Not valid inside a txn (etcd's RequestOp has no lease ops):
            // answered as a no-op.
            Request::LeaseGrant { .. } => Answer::LeaseGrant,
            Request::LeaseRevoke { .. } => Answer::LeaseRevoke,
            Request::Compact { .. } => Answer::Compact,
        }
    }
}

fn check_revision(state: &State, revision: i64) -> Result<(), ModelError> {
    if revision == 0 {
        Ok(())
    } else if revision > state.revision {
        Err(ModelError::FutureRevision)
    } else if revision < state.first_revision || revision < state.compacted {
        Err(ModelError::Compacted)
    } else {
        Ok(())
    }
}

/// etcd's `applyCompare` on one key.
fn compare(state: &State, c: &Compare) -> bool {
    let zero;
    let kv: &Kv = match state.kvs.get(&c.key[..]) {
        Some(kv) => kv,
        None => {
            if matches!(c.target, Target::Value(_)) {
                return false;
            }
            zero = Kv {
                key: c.key.clone(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            };
            &zero
        }
    };
    let ord = match &c.target {
        Target::Version(v) => kv.version.cmp(v),
        Target::Create(v) => kv.create_revision.cmp(v),
        Target::Mod(v) => kv.mod_revision.cmp(v),
        Target::Lease(v) => kv.lease.cmp(v),
        Target::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
    };
    match c.op {
        CmpOp::Equal => ord.is_eq(),
        CmpOp::NotEqual => ord.is_ne(),
        CmpOp::Greater => ord.is_gt(),
        CmpOp::Less => ord.is_lt(),
    }
}

/// Whether the request is served serializably by etcd: a range with
/// `serializable`, or a read-only txn whose every op is a serializable
/// range (etcd's `IsTxnSerializable`, so also a txn with no ops).
pub fn is_serializable(request: &Request) -> bool {
    match request {
        Request::Range { serializable, .. } => *serializable,
        Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).all(|r| {
            matches!(
                r,
                Request::Range {
                    serializable: true,
                    ..
                }
            )
        }),
        _ => false,
    }
}

// ---- etcdctl-like text -------------------------------------------------

/// Bytes as text: printable ASCII as is, the rest `\xNN`.
pub fn show_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x21..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if s.is_empty() {
        s.push_str("\"\"");
    }
    s
}

/// One kv: `key=value (c=create m=mod v=version [lease=id])`.
pub fn show_kv(kv: &Kv) -> String {
    let mut s = format!(
        "{}={} (c={} m={} v={}",
        show_bytes(&kv.key),
        show_bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if kv.lease != 0 {
        s.push_str(&format!(" lease={:x}", kv.lease));
    }
    s.push(')');
    s
}

fn show_span(key: &[u8], range_end: &[u8]) -> String {
    if range_end.is_empty() {
        show_bytes(key)
    } else if range_end == [0] {
        format!("{} --from-key", show_bytes(key))
    } else {
        format!("{} {}", show_bytes(key), show_bytes(range_end))
    }
}

/// A request as etcdctl would be asked for it (txns on one line).
pub fn show_request(r: &Request) -> String {
    match r {
        Request::Range {
            key,
            range_end,
            revision,
            serializable,
        } => {
            let mut s = format!("get {}", show_span(key, range_end));
            if *revision != 0 {
                s.push_str(&format!(" --rev={revision}"));
            }
            if *serializable {
                s.push_str(" --consistency=s");
            }
            s
        }
        Request::Put { key, value, lease } => {
            let mut s = format!("put {} {}", show_bytes(key), show_bytes(value));
            if *lease != 0 {
                s.push_str(&format!(" --lease={lease:x}"));
            }
            s
        }
        Request::Delete { key, range_end } => format!("del {}", show_span(key, range_end)),
        Request::Txn {
            compares,
            success,
            failure,
        } => {
            let cs: Vec<String> = compares.iter().map(show_compare).collect();
            let ss: Vec<String> = success.iter().map(show_request).collect();
            let fs: Vec<String> = failure.iter().map(show_request).collect();
            format!(
                "txn if({}) then({}) else({})",
                cs.join(", "),
                ss.join("; "),
                fs.join("; ")
            )
        }
        Request::LeaseGrant { id, ttl } => format!("lease grant {id:x} ttl={ttl}"),
        Request::LeaseRevoke { id } => format!("lease revoke {id:x}"),
        Request::RangeLimit {
            key,
            range_end,
            revision,
            limit,
        } => {
            let mut s = format!("get {} --limit={limit}", show_span(key, range_end));
            if *revision != 0 {
                s.push_str(&format!(" --rev={revision}"));
            }
            s
        }
        Request::Compact { revision } => format!("compaction {revision}"),
    }
}

fn show_compare(c: &Compare) -> String {
    let op = match c.op {
        CmpOp::Equal => "=",
        CmpOp::NotEqual => "!=",
        CmpOp::Greater => ">",
        CmpOp::Less => "<",
    };
    let k = show_bytes(&c.key);
    match &c.target {
        Target::Version(v) => format!("ver({k}) {op} {v}"),
        Target::Create(v) => format!("create({k}) {op} {v}"),
        Target::Mod(v) => format!("mod({k}) {op} {v}"),
        Target::Lease(v) => format!("lease({k}) {op} {v:x}"),
        Target::Value(v) => format!("val({k}) {op} {}", show_bytes(v)),
    }
}

/// An answer, without its header.
pub fn show_answer(a: &Answer) -> String {
    match a {
        Answer::Range { kvs, count } => {
            let ks: Vec<String> = kvs.iter().map(show_kv).collect();
            if ks.len() as i64 == *count {
                format!("[{}]", ks.join(", "))
            } else {
                format!("[{}] count={count}", ks.join(", "))
            }
        }
        Answer::Put { prev: None } => "OK".to_string(),
        Answer::Put { prev: Some(p) } => format!("OK prev={}", show_kv(p)),
        Answer::Delete { deleted } => format!("deleted={deleted}"),
        Answer::Txn { succeeded, results } => {
            let rs: Vec<String> = results.iter().map(show_answer).collect();
            format!(
                "{} ({})",
                if *succeeded { "SUCCESS" } else { "FAILURE" },
                rs.join("; ")
            )
        }
        Answer::LeaseGrant => "granted".to_string(),
        Answer::LeaseRevoke => "revoked".to_string(),
        Answer::Compact => "compacted".to_string(),
    }
}

/// An outcome: `rev=N answer`, `error: ...`, `unknown: ...`.
pub fn show_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok { revision, answer } => format!("rev={revision} {}", show_answer(answer)),
        Outcome::Failed(m) => format!("error: {m}"),
        Outcome::Unknown(m) => format!("unknown: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn put(k: &str, v: &str) -> Request {
        Request::Put {
            key: b(k),
            value: b(v),
            lease: 0,
        }
    }

    fn put_lease(k: &str, v: &str, lease: i64) -> Request {
        Request::Put {
            key: b(k),
            value: b(v),
            lease,
        }
    }

    fn get(k: &str) -> Request {
        Request::Range {
            key: b(k),
            range_end: Vec::new(),
            revision: 0,
            serializable: false,
        }
    }

    fn get_rev(k: &str, revision: i64) -> Request {
        Request::Range {
            key: b(k),
            range_end: Vec::new(),
            revision,
            serializable: false,
        }
    }

    fn del(k: &str) -> Request {
        Request::Delete {
            key: b(k),
            range_end: Vec::new(),
        }
    }

    fn kv(k: &str, v: &str, c: i64, m: i64, ver: i64, lease: i64) -> Kv {
        Kv {
            key: b(k),
            value: b(v),
            create_revision: c,
            mod_revision: m,
            version: ver,
            lease,
        }
    }

    fn rev_of(o: &Outcome) -> i64 {
        match o {
            Outcome::Ok { revision, .. } => *revision,
            other => panic!("not ok: {other:?}"),
        }
    }

    fn answer(o: Outcome) -> Answer {
        match o {
            Outcome::Ok { answer, .. } => answer,
            other => panic!("not ok: {other:?}"),
        }
    }

    /// Runs requests in order; checks each (revision, answer-text) pair.
    fn run(steps: &[(Request, &str)]) -> State {
        let mut s = State::new();
        for (i, (r, want)) in steps.iter().enumerate() {
            let (n, o) = step(&s, r);
            assert_eq!(show_outcome(&o), *want, "step {i}: {}", show_request(r));
            s = n;
        }
        s
    }

    #[test]
    fn revisions_versions_and_recreate() {
        let s = run(&[
            (get("a"), "rev=1 []"),
            (put("a", "1"), "rev=2 OK"),
            (put("a", "2"), "rev=3 OK prev=a=1 (c=2 m=2 v=1)"),
            (get("a"), "rev=3 [a=2 (c=2 m=3 v=2)]"),
            (del("b"), "rev=3 deleted=0"),
            (del("a"), "rev=4 deleted=1"),
            (put("a", "3"), "rev=5 OK"),
            (get("a"), "rev=5 [a=3 (c=5 m=5 v=1)]"),
            (get_rev("a", 3), "rev=5 [a=2 (c=2 m=3 v=2)]"),
            (get_rev("a", 4), "rev=5 []"),
            (get_rev("a", 1), "rev=5 []"),
            (get_rev("a", 6), &format!("error: {ERR_FUTURE_REV}")),
        ]);
        assert_eq!(s.revision(), 5);
        assert_eq!(s.at(3).unwrap().get(b"a").unwrap().value, b("2"));
        assert!(s.at(6).is_none());
        assert!(s.at(0).is_none());
    }

    #[test]
    fn txn_semantics() {
        let cas = |m: i64| Request::Txn {
            compares: vec![Compare {
                key: b("k"),
                op: CmpOp::Equal,
                target: Target::Mod(m),
            }],
            success: vec![put("k", "new"), get("k")],
            failure: vec![get("k")],
        };
        run(&[
            // Absent key: mod compares as 0; value compare is false.
            (cas(0), "rev=2 SUCCESS (OK; [k=new (c=2 m=2 v=1)])"),
            (cas(0), "rev=2 FAILURE ([k=new (c=2 m=2 v=1)])"),
            (
                Request::Txn {
                    compares: vec![Compare {
                        key: b("zz"),
                        op: CmpOp::NotEqual,
                        target: Target::Value(b("x")),
                    }],
                    success: vec![put("zz", "1")],
                    failure: vec![del("zz")],
                },
                "rev=2 FAILURE (deleted=0)",
            ),
            // A txn writing two keys takes one revision.
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![put("x", "1"), put("y", "1"), del("k")],
                    failure: vec![],
                },
                "rev=3 SUCCESS (OK; OK; deleted=1)",
            ),
            // Range at the revision before the txn's writes: the old state.
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![put("x", "2"), get_rev("x", 3), get("x")],
                    failure: vec![],
                },
                "rev=4 SUCCESS (OK prev=x=1 (c=3 m=3 v=1); [x=1 (c=3 m=3 v=1)]; [x=2 (c=3 m=4 v=2)])",
            ),
            // A range at the txn's own new revision is a future revision.
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![put("x", "3"), get_rev("x", 5)],
                    failure: vec![],
                },
                &format!("error: {ERR_FUTURE_REV}"),
            ),
            // Nested txn: its compares see the state before the outer txn.
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![
                        put("n", "1"),
                        Request::Txn {
                            compares: vec![Compare {
                                key: b("n"),
                                op: CmpOp::Equal,
                                target: Target::Version(0),
                            }],
                            success: vec![get("n")],
                            failure: vec![],
                        },
                    ],
                    failure: vec![],
                },
                "rev=5 SUCCESS (OK; SUCCESS ([n=1 (c=5 m=5 v=1)]))",
            ),
            // Read-only txn: no revision.
            (
                Request::Txn {
                    compares: vec![Compare {
                        key: b("n"),
                        op: CmpOp::Greater,
                        target: Target::Create(4),
                    }],
                    success: vec![],
                    failure: vec![],
                },
                "rev=5 SUCCESS ()",
            ),
        ]);
    }

    #[test]
    fn ranges() {
        let range = |k: &str, e: &[u8]| Request::Range {
            key: b(k),
            range_end: e.to_vec(),
            revision: 0,
            serializable: false,
        };
        run(&[
            (put("a", "1"), "rev=2 OK"),
            (put("b", "1"), "rev=3 OK"),
            (put("c", "1"), "rev=4 OK"),
            (
                range("a", b"c"),
                "rev=4 [a=1 (c=2 m=2 v=1), b=1 (c=3 m=3 v=1)]",
            ),
            (
                range("b", &[0]),
                "rev=4 [b=1 (c=3 m=3 v=1), c=1 (c=4 m=4 v=1)]",
            ),
            (range("c", b"a"), "rev=4 []"),
            (
                Request::Delete {
                    key: b("a"),
                    range_end: b("c"),
                },
                "rev=5 deleted=2",
            ),
            (range("\0", &[0]), "rev=5 [c=1 (c=4 m=4 v=1)]"),
        ]);
    }

    #[test]
    fn leases() {
        let grant = |id| Request::LeaseGrant { id, ttl: 60 };
        let revoke = |id| Request::LeaseRevoke { id };
        let s = run(&[
            (
                put_lease("a", "1", 7),
                &format!("error: {ERR_LEASE_NOT_FOUND}"),
            ),
            (grant(7), "rev=1 granted"),
            (grant(7), &format!("error: {ERR_LEASE_EXISTS}")),
            (put_lease("a", "1", 7), "rev=2 OK"),
            (put_lease("b", "1", 7), "rev=3 OK"),
            // Re-put without a lease detaches.
            (put("b", "2"), "rev=4 OK prev=b=1 (c=3 m=3 v=1 lease=7)"),
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![put("c", "1"), put_lease("d", "1", 9)],
                    failure: vec![],
                },
                &format!("error: {ERR_LEASE_NOT_FOUND}"),
            ),
            // 3.4 checks every put's lease before any range's revision.
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![get_rev("a", 99), put_lease("c", "1", 9)],
                    failure: vec![],
                },
                &format!("error: {ERR_LEASE_NOT_FOUND}"),
            ),
            (revoke(7), "rev=5 revoked"),
            (get("a"), "rev=5 []"),
            (get("b"), "rev=5 [b=2 (c=3 m=4 v=2)]"),
            (revoke(7), &format!("error: {ERR_LEASE_NOT_FOUND}")),
            // A revoke with no key attached takes no revision.
            (grant(8), "rev=5 granted"),
            (revoke(8), "rev=5 revoked"),
        ]);
        assert_eq!(s.leases().count(), 0);
    }

    #[test]
    fn revoke_deletes_all_attached_keys_in_one_revision() {
        let mut s = State::new();
        for r in [
            Request::LeaseGrant { id: 1, ttl: 10 },
            put_lease("a", "1", 1),
            put_lease("b", "1", 1),
            put_lease("c", "1", 1),
        ] {
            s = step(&s, &r).0;
        }
        let (s2, o) = step(&s, &Request::LeaseRevoke { id: 1 });
        assert_eq!(rev_of(&o), 5);
        assert_eq!(s2.kvs().count(), 0);
        assert_eq!(s2.at(4).unwrap().kvs().count(), 3);
    }

    #[test]
    fn compaction() {
        let compact = |revision| Request::Compact { revision };
        let list = |revision, limit| Request::RangeLimit {
            key: b("a"),
            range_end: b("z"),
            revision,
            limit,
        };
        let s = run(&[
            (put("a", "1"), "rev=2 OK"),
            (put("b", "1"), "rev=3 OK"),
            (put("a", "2"), "rev=4 OK prev=a=1 (c=2 m=2 v=1)"),
            (compact(5), &format!("error: {ERR_FUTURE_REV}")),
            (compact(3), "rev=4 compacted"),
            (compact(3), &format!("error: {ERR_COMPACTED}")),
            (compact(2), &format!("error: {ERR_COMPACTED}")),
            // At the compacted revision itself: still readable.
            (get_rev("a", 3), "rev=4 [a=1 (c=2 m=2 v=1)]"),
            (get_rev("a", 2), &format!("error: {ERR_COMPACTED}")),
            // A future revision is checked first.
            (get_rev("a", 9), &format!("error: {ERR_FUTURE_REV}")),
            (list(0, 1), "rev=4 [a=2 (c=2 m=4 v=2)] count=2"),
            (list(3, 1), "rev=4 [a=1 (c=2 m=2 v=1)] count=2"),
            (list(2, 1), &format!("error: {ERR_COMPACTED}")),
            (list(0, 0), "rev=4 [a=2 (c=2 m=4 v=2), b=1 (c=3 m=3 v=1)]"),
            (
                Request::Txn {
                    compares: vec![],
                    success: vec![put("c", "1"), get_rev("a", 2)],
                    failure: vec![],
                },
                &format!("error: {ERR_COMPACTED}"),
            ),
        ]);
        assert_eq!(s.compacted(), 3);
        // Compacted states stay known to `at` (serializable reads).
        assert_eq!(s.at(2).unwrap().get(b"a").unwrap().value, b("1"));
        // The compaction is part of the state (and of its hash).
        let t = step(&step(&State::new(), &put("a", "1")).0, &compact(2)).0;
        let u = step(&State::new(), &put("a", "1")).0;
        assert_ne!(t, u);
        assert_ne!(t.hash64(), u.hash64());
        // Its header may be read after later writes.
        let (_, o) = step(&u, &compact(2));
        let at = |revision| Outcome::Ok {
            revision,
            answer: Answer::Compact,
        };
        assert!(outcome_matches(&o, &at(2)));
        assert!(outcome_matches(&o, &at(5)));
        assert!(!outcome_matches(&o, &at(1)));
    }

    #[test]
    fn matching() {
        let s = step(&State::new(), &put("a", "1")).0;
        let (_, o) = step(&s, &put("a", "2"));
        let obs = |prev| Outcome::Ok {
            revision: 3,
            answer: Answer::Put { prev },
        };
        assert!(outcome_matches(&o, &obs(None)));
        assert!(outcome_matches(&o, &obs(Some(kv("a", "1", 2, 2, 1, 0)))));
        assert!(!outcome_matches(&o, &obs(Some(kv("a", "0", 2, 2, 1, 0)))));
        assert!(!outcome_matches(
            &o,
            &Outcome::Ok {
                revision: 4,
                answer: Answer::Put { prev: None }
            }
        ));
        let (_, e) = step(&s, &put_lease("a", "1", 3));
        assert!(outcome_matches(
            &e,
            &Outcome::Failed(format!(
                "status: NotFound, message: \"{ERR_LEASE_NOT_FOUND}\""
            ))
        ));
        assert!(!outcome_matches(
            &e,
            &Outcome::Failed("context deadline exceeded".into())
        ));
        assert_eq!(
            answer(step(&s, &get("a")).1),
            Answer::Range {
                kvs: vec![kv("a", "1", 2, 2, 1, 0)],
                count: 1
            }
        );
    }

    #[test]
    fn hashes_follow_state_and_history() {
        let a = step(&step(&State::new(), &put("x", "1")).0, &put("y", "1")).0;
        let b2 = step(&step(&State::new(), &put("x", "1")).0, &put("y", "1")).0;
        let c = step(&step(&State::new(), &put("y", "1")).0, &put("x", "1")).0;
        assert_eq!(a, b2);
        assert_eq!(a.hash64(), b2.hash64());
        // Same revision, different kvs (mod revisions differ) and history.
        assert_ne!(a, c);
        assert_ne!(a.hash64(), c.hash64());
    }

    #[test]
    fn long_history_lookups_and_drop() {
        let mut s = State::new();
        for i in 0..50_000 {
            s = step(&s, &put("k", &i.to_string())).0;
        }
        for r in [2, 3, 1000, 25_001, 50_000, 50_001] {
            let v = s.at(r).unwrap();
            assert_eq!(v.revision(), r);
            assert_eq!(v.get(b"k").unwrap().value, b(&(r - 2).to_string()));
        }
        assert_eq!(s.at(1).unwrap().kvs().count(), 0);
        drop(s); // must not overflow the stack
    }

    #[test]
    fn serializable_requests() {
        assert!(is_serializable(&Request::Range {
            key: b("a"),
            range_end: vec![],
            revision: 0,
            serializable: true
        }));
        assert!(!is_serializable(&get("a")));
        assert!(is_serializable(&Request::Txn {
            compares: vec![],
            success: vec![],
            failure: vec![]
        }));
        assert!(!is_serializable(&Request::Txn {
            compares: vec![],
            success: vec![get("a")],
            failure: vec![]
        }));
    }
}
