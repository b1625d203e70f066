//! The real engine (four shards, one glommio executor each, WAL on disk)
//! against a single-map model of etcd's KV semantics.
//!
//! proptest generates a workload of puts, deletes (single key, prefix,
//! from-key), transactions (compares on keys spread over the shards, both
//! branches with puts, deletes and ranges), ranges at the latest and older
//! revisions, and compactions. Every response (header revision, every field
//! of every kv, count, more, deleted, prev_kvs, succeeded, error) must equal
//! the model's. Leases take part: grants (of ids owned by every shard),
//! puts attached to a lease (unknown ones refused), keys moving between
//! leases, and revokes deleting every attached key at one revision. Then
//! the engine is stopped and started again on the same data dir, and every
//! retained revision, every lease and its keys must read back as the model
//! has them.
//!
//! The model is deliberately naive: one `BTreeMap` per revision, written
//! from etcd's rules (a write request takes exactly one new revision if it
//! changes anything, none otherwise; the first write of a fresh store is
//! revision 2; compares on a missing key see zeros, except VALUE which never
//! matches; reads below the compaction point fail).
//!
//! Limits: `CASES` cases of at most `OPS_MAX` ops, every engine call bounded
//! by `ENGINE_CALL_TIMEOUT`, idle cores by `IDLE_CORE_WAIT_MAX`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferrokv_shards::kv::shard_of;
use ferrokv_shards::{Config, Engine, Error};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use proptest::prelude::*;

const SHARDS: usize = 4;
const CASES: u32 = 16;
const OPS_MAX: usize = 40;
/// Small enough that a case takes snapshots, so the restart maps a snapshot
/// and replays the WAL tail after it.
const SNAPSHOT_COUNT: u64 = 5;
const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a core with no work of its own keeps its shard actor alive.
const IDLE_CORE_WAIT_MAX: Duration = Duration::from_secs(120);
const IDLE_CORE_POLL: Duration = Duration::from_millis(10);

/// Keys collide often and land on all four shards (checked below).
const KEYS: &[&str] = &[
    "a", "c", "e", "g", "a/1", "a/3", "b/1", "b/3", "c/1", "c/3", "c/4", "c/5",
];
const PREFIXES: &[&str] = &["a", "b", "c/", "a/", ""];
const VALUES: &[&str] = &["", "x", "y", "zz"];
/// Lease ids owned by each of the four shards (id mod 4).
const LEASE_IDS: &[i64] = &[4, 5, 6, 7];
const LEASE_TTL: i64 = 600;

// ---------------------------------------------------------------- workload

#[derive(Clone, Debug)]
enum KeySpec {
    Single(usize),
    Prefix(usize),
    FromKey(usize),
    All,
    Between(usize, usize),
}

#[derive(Clone, Debug)]
enum RevSel {
    Latest,
    /// `n` revisions before the current one (at least revision 1).
    Back(i64),
    /// One past the current revision: must fail.
    Future,
}

#[derive(Clone, Debug)]
struct Cmp {
    key: KeySpec,
    target: pb::compare::CompareTarget,
    result: pb::compare::CompareResult,
    /// Numeric targets compare against the key's current field plus this.
    delta: i64,
    /// VALUE: compare against this value, or (None) the key's current one.
    value: Option<usize>,
}

#[derive(Clone, Debug)]
enum TxnOp {
    Put {
        key: usize,
        value: usize,
        prev_kv: bool,
        lease: Option<usize>,
    },
    Del {
        spec: KeySpec,
        prev_kv: bool,
    },
    Range(RangeSel),
}

#[derive(Clone, Debug)]
struct RangeSel {
    spec: KeySpec,
    rev: RevSel,
    limit: i64,
    keys_only: bool,
    count_only: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: usize,
        prev_kv: bool,
        lease: Option<usize>,
    },
    Grant(usize),
    Revoke(usize),
    Del {
        spec: KeySpec,
        prev_kv: bool,
    },
    Txn {
        compare: Vec<Cmp>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    Range(RangeSel),
    Compact(RevSel),
}

fn key_spec() -> impl Strategy<Value = KeySpec> {
    prop_oneof![
        4 => (0..KEYS.len()).prop_map(KeySpec::Single),
        2 => (0..PREFIXES.len()).prop_map(KeySpec::Prefix),
        1 => (0..KEYS.len()).prop_map(KeySpec::FromKey),
        1 => Just(KeySpec::All),
        1 => (0..KEYS.len(), 0..KEYS.len()).prop_map(|(a, b)| KeySpec::Between(a, b)),
    ]
}

fn del_spec() -> impl Strategy<Value = KeySpec> {
    prop_oneof![
        4 => (0..KEYS.len()).prop_map(KeySpec::Single),
        2 => (0..PREFIXES.len()).prop_map(KeySpec::Prefix),
        1 => (0..KEYS.len()).prop_map(KeySpec::FromKey),
    ]
}

fn rev_sel() -> impl Strategy<Value = RevSel> {
    prop_oneof![
        4 => Just(RevSel::Latest),
        3 => (1i64..8).prop_map(RevSel::Back),
        1 => Just(RevSel::Future),
    ]
}

fn range_sel() -> impl Strategy<Value = RangeSel> {
    (
        key_spec(),
        rev_sel(),
        prop_oneof![3 => Just(0i64), 1 => 1i64..4],
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(spec, rev, limit, keys_only, count_only)| RangeSel {
            spec,
            rev,
            limit,
            keys_only,
            count_only,
        })
}

fn cmp() -> impl Strategy<Value = Cmp> {
    use pb::compare::{CompareResult as R, CompareTarget as T};
    (
        prop_oneof![
            4 => (0..KEYS.len()).prop_map(KeySpec::Single),
            1 => (0..PREFIXES.len()).prop_map(KeySpec::Prefix),
        ],
        prop_oneof![
            Just(T::Value),
            Just(T::Version),
            Just(T::Create),
            Just(T::Mod)
        ],
        prop_oneof![
            Just(R::Equal),
            Just(R::NotEqual),
            Just(R::Greater),
            Just(R::Less)
        ],
        -1i64..=1,
        proptest::option::of(0..VALUES.len()),
    )
        .prop_map(|(key, target, result, delta, value)| Cmp {
            key,
            target,
            result,
            delta,
            value,
        })
}

fn lease_sel() -> impl Strategy<Value = Option<usize>> {
    proptest::option::weighted(0.3, 0..LEASE_IDS.len())
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        3 => (0..KEYS.len(), 0..VALUES.len(), any::<bool>(), lease_sel())
            .prop_map(|(key, value, prev_kv, lease)| TxnOp::Put { key, value, prev_kv, lease }),
        2 => (del_spec(), any::<bool>()).prop_map(|(spec, prev_kv)| TxnOp::Del { spec, prev_kv }),
        2 => range_sel().prop_map(TxnOp::Range),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let branch = || proptest::collection::vec(txn_op(), 0..4);
    prop_oneof![
        5 => (0..KEYS.len(), 0..VALUES.len(), any::<bool>(), lease_sel())
            .prop_map(|(key, value, prev_kv, lease)| Op::Put { key, value, prev_kv, lease }),
        2 => (0..LEASE_IDS.len()).prop_map(Op::Grant),
        1 => (0..LEASE_IDS.len()).prop_map(Op::Revoke),
        2 => (del_spec(), any::<bool>()).prop_map(|(spec, prev_kv)| Op::Del { spec, prev_kv }),
        4 => (proptest::collection::vec(cmp(), 0..3), branch(), branch())
            .prop_map(|(compare, success, failure)| Op::Txn { compare, success, failure }),
        3 => range_sel().prop_map(Op::Range),
        1 => rev_sel().prop_map(Op::Compact),
    ]
}

// ------------------------------------------------------------------- model

#[derive(Clone, Debug, PartialEq)]
struct Val {
    value: Vec<u8>,
    create: i64,
    modr: i64,
    version: i64,
    lease: i64,
}

type State = BTreeMap<Vec<u8>, Val>;

#[derive(Clone, Debug)]
struct Model {
    /// `history[r]` is the keyspace as of revision `r`; a fresh store is at
    /// revision 1 with no keys (`history[0]` is unused).
    history: Vec<State>,
    compact: i64,
    leases: BTreeSet<i64>,
}

fn header(rev: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

fn kv_of(key: &[u8], v: &Val) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::copy_from_slice(key),
        create_revision: v.create,
        mod_revision: v.modr,
        version: v.version,
        value: Bytes::copy_from_slice(&v.value),
        lease: v.lease,
    }
}

/// etcd's interval rules: empty end is one key, end `\0` is every key >=
/// `key`, otherwise `[key, end)`.
fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

fn matching<'a>(
    s: &'a State,
    key: &'a [u8],
    end: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Val)> {
    s.iter().filter(move |(k, _)| in_range(k, key, end))
}

fn range_of(s: &State, r: &pb::RangeRequest, header_rev: i64) -> pb::RangeResponse {
    let all: Vec<(&Vec<u8>, &Val)> = matching(s, &r.key, &r.range_end).collect();
    let count = all.len() as i64;
    let mut kvs: Vec<mvccpb::KeyValue> = if r.count_only {
        Vec::new()
    } else {
        all.iter().map(|(k, v)| kv_of(k, v)).collect()
    };
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    pb::RangeResponse {
        header: header(header_rev),
        kvs,
        more,
        count,
    }
}

fn compare_holds(s: &State, c: &pb::Compare) -> bool {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let target = T::try_from(c.target).expect("valid target");
    let kvs: Vec<&Val> = matching(s, &c.key, &c.range_end).map(|(_, v)| v).collect();
    let zero = Val {
        value: Vec::new(),
        create: 0,
        modr: 0,
        version: 0,
        lease: 0,
    };
    if kvs.is_empty() && target == T::Value {
        return false;
    }
    let check = |v: &Val| {
        let ord = match (target, &c.target_union) {
            (T::Value, Some(U::Value(x))) => v.value.as_slice().cmp(x),
            (T::Version, Some(U::Version(x))) => v.version.cmp(x),
            (T::Create, Some(U::CreateRevision(x))) => v.create.cmp(x),
            (T::Mod, Some(U::ModRevision(x))) => v.modr.cmp(x),
            other => panic!("workload built an unexpected compare {other:?}"),
        };
        match R::try_from(c.result).expect("valid result") {
            R::Equal => ord.is_eq(),
            R::NotEqual => ord.is_ne(),
            R::Greater => ord.is_gt(),
            R::Less => ord.is_lt(),
        }
    };
    if kvs.is_empty() {
        check(&zero)
    } else {
        kvs.into_iter().all(check)
    }
}

impl Model {
    fn new() -> Model {
        Model {
            history: vec![State::new(), State::new()],
            compact: 0,
            leases: BTreeSet::new(),
        }
    }

    fn rev(&self) -> i64 {
        self.history.len() as i64 - 1
    }

    fn current(&self) -> &State {
        self.history.last().expect("revision 1 exists")
    }

    fn at(&self, rev: i64) -> &State {
        &self.history[rev as usize]
    }

    fn check_rev(&self, rev: i64) -> Result<(), Error> {
        if rev > self.rev() {
            return Err(Error::FutureRevision);
        }
        if rev > 0 && rev < self.compact {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, Error> {
        let rev = if r.revision <= 0 {
            self.rev()
        } else {
            r.revision
        };
        self.check_rev(rev)?;
        Ok(range_of(self.at(rev), r, self.rev()))
    }

    fn compact(&mut self, rev: i64) -> Result<i64, Error> {
        if rev > self.rev() {
            return Err(Error::FutureRevision);
        }
        if rev <= self.compact {
            return Err(Error::Compacted);
        }
        self.compact = rev;
        Ok(self.rev())
    }

    fn txn(&mut self, t: &pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        use pb::request_op::Request as Q;
        use pb::response_op::Response as A;
        let base = self.rev();
        let next = base + 1;
        let succeeded = t.compare.iter().all(|c| compare_holds(self.current(), c));
        let ops = if succeeded { &t.success } else { &t.failure };
        // etcd checks every put of the chosen branch, then every range.
        for op in ops {
            if let Some(Q::RequestPut(p)) = &op.request {
                if p.lease != 0 && !self.leases.contains(&p.lease) {
                    return Err(Error::LeaseNotFound);
                }
            }
        }
        for op in ops {
            if let Some(Q::RequestRange(r)) = &op.request {
                if r.revision > 0 {
                    self.check_rev(r.revision)?;
                }
            }
        }
        let mut work = self.current().clone();
        let mut changed = false;
        let mut responses = Vec::new();
        for op in ops {
            let resp = match op.request.as_ref().expect("op has a request") {
                Q::RequestRange(r) => {
                    let hdr = if changed { next } else { base };
                    let s = if r.revision > 0 {
                        self.at(r.revision)
                    } else {
                        &work
                    };
                    A::ResponseRange(range_of(s, r, hdr))
                }
                Q::RequestPut(p) => {
                    let prev = work.get(p.key.as_ref()).cloned();
                    let v = match &prev {
                        Some(old) => Val {
                            value: p.value.to_vec(),
                            create: old.create,
                            modr: next,
                            version: old.version + 1,
                            lease: p.lease,
                        },
                        None => Val {
                            value: p.value.to_vec(),
                            create: next,
                            modr: next,
                            version: 1,
                            lease: p.lease,
                        },
                    };
                    work.insert(p.key.to_vec(), v);
                    changed = true;
                    A::ResponsePut(pb::PutResponse {
                        header: header(next),
                        prev_kv: if p.prev_kv {
                            prev.map(|v| kv_of(&p.key, &v))
                        } else {
                            None
                        },
                    })
                }
                Q::RequestDeleteRange(d) => {
                    let gone: Vec<(Vec<u8>, Val)> = matching(&work, &d.key, &d.range_end)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (k, _) in &gone {
                        work.remove(k);
                    }
                    changed |= !gone.is_empty();
                    A::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: header(if changed { next } else { base }),
                        deleted: gone.len() as i64,
                        prev_kvs: if d.prev_kv {
                            gone.iter().map(|(k, v)| kv_of(k, v)).collect()
                        } else {
                            Vec::new()
                        },
                    })
                }
                Q::RequestTxn(_) => panic!("the workload has no nested txns"),
            };
            responses.push(pb::ResponseOp {
                response: Some(resp),
            });
        }
        if changed {
            self.history.push(work);
        }
        Ok(pb::TxnResponse {
            header: header(if changed { next } else { base }),
            succeeded,
            responses,
        })
    }

    fn grant(&mut self, id: i64) -> Result<i64, Error> {
        if !self.leases.insert(id) {
            return Err(Error::LeaseExists);
        }
        Ok(LEASE_TTL)
    }

    /// Keys attached to `id` now, in key order.
    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.current()
            .iter()
            .filter(|(_, v)| v.lease == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Deletes every key attached to `id` at one new revision (none if it
    /// has no keys); the header revision.
    fn revoke(&mut self, id: i64) -> Result<i64, Error> {
        if !self.leases.remove(&id) {
            return Err(Error::LeaseNotFound);
        }
        let keys = self.lease_keys(id);
        if !keys.is_empty() {
            let mut next = self.current().clone();
            for k in keys {
                next.remove(&k);
            }
            self.history.push(next);
        }
        Ok(self.rev())
    }

    fn put(&mut self, p: &pb::PutRequest) -> Result<pb::PutResponse, Error> {
        let t = self.txn(&pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(p.clone())),
            }],
            ..Default::default()
        })?;
        match t.responses.into_iter().next().and_then(|r| r.response) {
            Some(pb::response_op::Response::ResponsePut(r)) => Ok(r),
            other => panic!("model put gave {other:?}"),
        }
    }

    fn delete_range(
        &mut self,
        d: &pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Error> {
        let t = self.txn(&pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(d.clone())),
            }],
            ..Default::default()
        })?;
        match t.responses.into_iter().next().and_then(|r| r.response) {
            Some(pb::response_op::Response::ResponseDeleteRange(r)) => Ok(r),
            other => panic!("model delete gave {other:?}"),
        }
    }
}

// ------------------------------------------------- workload -> requests

fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn bounds(spec: &KeySpec) -> (Bytes, Bytes) {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let all = (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"));
    match spec {
        KeySpec::Single(i) => (b(KEYS[*i]), Bytes::new()),
        KeySpec::Prefix(i) if PREFIXES[*i].is_empty() => all,
        KeySpec::Prefix(i) => (
            b(PREFIXES[*i]),
            Bytes::from(prefix_end(PREFIXES[*i].as_bytes())),
        ),
        KeySpec::FromKey(i) => (b(KEYS[*i]), Bytes::from_static(b"\0")),
        KeySpec::All => all,
        KeySpec::Between(a, z) => (b(KEYS[*a]), b(KEYS[*z])),
    }
}

fn revision(sel: &RevSel, m: &Model) -> i64 {
    match sel {
        RevSel::Latest => 0,
        RevSel::Back(n) => (m.rev() - n).max(1),
        RevSel::Future => m.rev() + 1,
    }
}

fn range_req(r: &RangeSel, m: &Model) -> pb::RangeRequest {
    let (key, range_end) = bounds(&r.spec);
    pb::RangeRequest {
        key,
        range_end,
        limit: r.limit,
        revision: revision(&r.rev, m),
        keys_only: r.keys_only,
        count_only: r.count_only,
        ..Default::default()
    }
}

fn put_req(key: usize, value: usize, prev_kv: bool, lease: Option<usize>) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::from_static(KEYS[key].as_bytes()),
        value: Bytes::from_static(VALUES[value].as_bytes()),
        prev_kv,
        lease: lease.map_or(0, |l| LEASE_IDS[l]),
        ..Default::default()
    }
}

fn del_req(spec: &KeySpec, prev_kv: bool) -> pb::DeleteRangeRequest {
    let (key, range_end) = bounds(spec);
    pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    }
}

/// Compares resolved against the model's current state, so that EQUAL,
/// GREATER and LESS all have a real chance to hold.
fn compare_req(c: &Cmp, m: &Model) -> pb::Compare {
    use pb::compare::{CompareTarget as T, TargetUnion as U};
    let (key, range_end) = bounds(&c.key);
    let first = matching(m.current(), &key, &range_end)
        .next()
        .map(|(_, v)| v.clone());
    let num = |f: fn(&Val) -> i64| first.as_ref().map_or(0, f) + c.delta;
    let target_union = match c.target {
        T::Value => U::Value(match c.value {
            Some(i) => Bytes::from_static(VALUES[i].as_bytes()),
            None => Bytes::from(first.as_ref().map_or(b"x".to_vec(), |v| v.value.clone())),
        }),
        T::Version => U::Version(num(|v| v.version)),
        T::Create => U::CreateRevision(num(|v| v.create)),
        T::Mod => U::ModRevision(num(|v| v.modr)),
        T::Lease => U::Lease(0),
    };
    pb::Compare {
        result: c.result as i32,
        target: c.target as i32,
        key,
        range_end,
        target_union: Some(target_union),
    }
}

/// etcd rejects a branch that puts one key twice or puts a key a delete of
/// the same branch covers ("duplicate key given in txn request"); such ops
/// are dropped so that every generated txn is one etcd would run.
fn branch_req(ops: &[TxnOp], m: &Model) -> Vec<pb::RequestOp> {
    use pb::request_op::Request as Q;
    let dels: Vec<(Bytes, Bytes)> = ops
        .iter()
        .filter_map(|o| match o {
            TxnOp::Del { spec, .. } => Some(bounds(spec)),
            _ => None,
        })
        .collect();
    let mut put_keys = Vec::new();
    let mut out = Vec::new();
    for o in ops {
        let req = match o {
            TxnOp::Put {
                key,
                value,
                prev_kv,
                lease,
            } => {
                let k = KEYS[*key].as_bytes();
                if put_keys.contains(&k) || dels.iter().any(|(s, e)| in_range(k, s, e)) {
                    continue;
                }
                put_keys.push(k);
                Q::RequestPut(put_req(*key, *value, *prev_kv, *lease))
            }
            TxnOp::Del { spec, prev_kv } => Q::RequestDeleteRange(del_req(spec, *prev_kv)),
            TxnOp::Range(r) => Q::RequestRange(range_req(r, m)),
        };
        out.push(pb::RequestOp { request: Some(req) });
    }
    out
}

// ------------------------------------------------------------ the engine

/// Awaits `fut` at most `ENGINE_CALL_TIMEOUT`.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        glommio::timer::sleep(ENGINE_CALL_TIMEOUT).await;
        Err(format!("{what}: no answer within {ENGINE_CALL_TIMEOUT:?}"))
    })
    .await
}

fn same<T: PartialEq + std::fmt::Debug>(
    i: usize,
    what: &str,
    req: &dyn std::fmt::Debug,
    got: T,
    want: T,
) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "op {i} ({what}) differs\nrequest: {req:?}\nengine:  {got:?}\nmodel:   {want:?}"
        ))
    }
}

async fn run_workload(engine: &Engine, ops: &[Op], m: &mut Model) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put {
                key,
                value,
                prev_kv,
                lease,
            } => {
                let req = put_req(*key, *value, *prev_kv, *lease);
                let want = m.put(&req);
                let got = bounded("put", engine.put(req.clone())).await?;
                same(i, "put", &req, got, want)?;
            }
            Op::Grant(l) => {
                let id = LEASE_IDS[*l];
                let want = m.grant(id);
                let got = bounded("lease_grant", engine.lease_grant(id, LEASE_TTL))
                    .await?
                    .map(|(ttl, _)| ttl);
                same(i, "lease_grant", &id, got, want)?;
            }
            Op::Revoke(l) => {
                let id = LEASE_IDS[*l];
                let want = m.revoke(id);
                let got = bounded("lease_revoke", engine.lease_revoke(id)).await?;
                same(i, "lease_revoke", &id, got, want)?;
            }
            Op::Del { spec, prev_kv } => {
                let req = del_req(spec, *prev_kv);
                let want = m.delete_range(&req);
                let got = bounded("delete_range", engine.delete_range(req.clone())).await?;
                same(i, "delete_range", &req, got, want)?;
            }
            Op::Txn {
                compare,
                success,
                failure,
            } => {
                let req = pb::TxnRequest {
                    compare: compare.iter().map(|c| compare_req(c, m)).collect(),
                    success: branch_req(success, m),
                    failure: branch_req(failure, m),
                };
                let want = m.txn(&req);
                let got = bounded("txn", engine.txn(req.clone())).await?;
                same(i, "txn", &req, got, want)?;
            }
            Op::Range(r) => {
                let req = range_req(r, m);
                let want = m.range(&req);
                let got = bounded("range", engine.range(&req)).await?;
                same(i, "range", &req, got, want)?;
            }
            Op::Compact(sel) => {
                let rev = match revision(sel, m) {
                    0 => m.rev(),
                    r => r,
                };
                let want = m.compact(rev);
                let got = bounded("compact", engine.compact(rev)).await?;
                same(i, "compact", &rev, got, want)?;
            }
        }
    }
    Ok(())
}

/// After a restart: the current revision, every revision from the
/// compaction point on, the compaction point itself, and that the next
/// write continues the revision sequence.
async fn check_recovered(engine: &Engine, m: &mut Model) -> Result<(), String> {
    let all = |revision| pb::RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision,
        ..Default::default()
    };
    let req = all(0);
    let got = bounded("range", engine.range(&req)).await?;
    same(0, "range after restart", &req, got, m.range(&req))?;
    for rev in m.compact.max(1)..=m.rev() {
        let req = all(rev);
        let got = bounded("range", engine.range(&req)).await?;
        same(
            0,
            "historical range after restart",
            &req,
            got,
            m.range(&req),
        )?;
    }
    if m.compact > 1 {
        let req = all(m.compact - 1);
        let got = bounded("range", engine.range(&req)).await?;
        same(0, "compacted range after restart", &req, got, m.range(&req))?;
        let rev = m.compact;
        let got = bounded("compact", engine.compact(rev)).await?;
        same(0, "compact again after restart", &rev, got, m.compact(rev))?;
    }
    let ids = bounded("lease_ids", engine.lease_ids()).await?;
    let want: Vec<i64> = m.leases.iter().copied().collect();
    same(0, "leases after restart", &"", ids, Ok(want))?;
    for id in LEASE_IDS {
        let got = bounded("lease_time_to_live", engine.lease_time_to_live(*id, true))
            .await?
            .map(|l| l.map(|(granted, _, keys)| (granted, keys)));
        let want = m
            .leases
            .contains(id)
            .then(|| (LEASE_TTL, m.lease_keys(*id)));
        same(0, "lease after restart", id, got, Ok(want))?;
    }
    let req = put_req(0, 1, true, None);
    let want = m.put(&req);
    let got = bounded("put", engine.put(req.clone())).await?;
    same(0, "put after restart", &req, got, want)?;
    Ok(())
}

/// What a run of the engine ended with, and the model after it.
type Outcome = (Result<(), String>, Model);

/// Sets the flag when dropped, also when the workload panics, so that the
/// idle cores never wait for a core that is gone.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the engine on `dir` with `work` on core 0 while the other cores keep
/// their shard actors alive; returns the model as `work` left it.
fn with_engine<F, Fut>(dir: &std::path::Path, model: Model, work: F) -> Outcome
where
    F: Fn(Engine, Model) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Outcome> + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    let input = Arc::new(Mutex::new(Some(model)));
    let output: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
    let cfg = Config {
        members: ferrokv_shards::Members::alone(1),
        data_dir: dir.to_path_buf(),
        wal_dir: None,
        shards: SHARDS,
        snapshot_count: SNAPSHOT_COUNT,
        wal_metrics: Arc::default(),
        heartbeat_interval_ms: 100,
        election_ticks: 10,
        changes: Arc::new(
            ferrokv_shards::membership::MemberChanges::offline(dir, SHARDS as u32)
                .expect("membership state"),
        ),
        auth: Arc::new(ferrokv_shards::auth_view::AuthView::new(
            ferrokv_shards::auth_view::TOKEN_TTL_DEFAULT,
        )),
    };
    let (d, i, o) = (done.clone(), input.clone(), output.clone());
    let ran = ferrokv_shards::run(cfg, move |engine, core| {
        let (done, input, output, work) = (d.clone(), i.clone(), o.clone(), work.clone());
        async move {
            if core == 0 {
                let _guard = SetOnDrop(done);
                let model = input.lock().unwrap().take().expect("model for core 0");
                let r = work(engine, model).await;
                *output.lock().unwrap() = Some(r);
            } else {
                let polls = IDLE_CORE_WAIT_MAX.as_millis() / IDLE_CORE_POLL.as_millis();
                for _ in 0..polls {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    glommio::timer::sleep(IDLE_CORE_POLL).await;
                }
            }
        }
    });
    let out = output.lock().unwrap().take();
    match (ran, out) {
        (Ok(()), Some(r)) => r,
        (ran, _) => panic!("engine run failed or core 0 did not finish: {ran:?}"),
    }
}

fn check_case(ops: Vec<Op>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ops = Arc::new(ops);
    let (r, model) = with_engine(dir.path(), Model::new(), move |engine, mut m| {
        let ops = ops.clone();
        async move {
            let r = run_workload(&engine, &ops, &mut m).await;
            (r, m)
        }
    });
    r?;
    let (r, _) = with_engine(dir.path(), model, |engine, mut m| async move {
        let r = check_recovered(&engine, &mut m).await;
        (r, m)
    });
    r.map_err(|e| format!("after restart: {e}"))
}

/// The key alphabet must exercise cross-shard routing.
#[test]
fn keys_cover_every_shard() {
    let mut hit = [false; SHARDS];
    for k in KEYS {
        hit[shard_of(k.as_bytes(), SHARDS as u32) as usize] = true;
    }
    assert_eq!(
        hit, [true; SHARDS],
        "KEYS should land on all {SHARDS} shards"
    );
}

/// The model itself, on a hand-checked sequence (so it is not only ever
/// compared with the engine).
#[test]
fn model_follows_etcd_revision_rules() {
    let mut m = Model::new();
    assert_eq!(m.rev(), 1);
    let p = m.put(&put_req(0, 1, true, None)).unwrap();
    assert_eq!(p.header.unwrap().revision, 2);
    assert_eq!(p.prev_kv, None);
    let p = m.put(&put_req(0, 2, true, None)).unwrap();
    let prev = p.prev_kv.unwrap();
    assert_eq!(
        (
            prev.create_revision,
            prev.mod_revision,
            prev.version,
            &prev.value[..]
        ),
        (2, 2, 1, &b"x"[..])
    );
    // Deleting nothing takes no revision.
    let d = m
        .delete_range(&del_req(&KeySpec::Single(1), false))
        .unwrap();
    assert_eq!((d.header.unwrap().revision, d.deleted), (3, 0));
    // A failed compare on a missing key's value; the empty failure branch
    // changes nothing.
    let t = m
        .txn(&pb::TxnRequest {
            compare: vec![pb::Compare {
                key: Bytes::from_static(b"b"),
                target: pb::compare::CompareTarget::Value as i32,
                target_union: Some(pb::compare::TargetUnion::Value(Bytes::new())),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.header.unwrap().revision, 3);
    // Version of a missing key compares as 0.
    let missing_version_is_zero = pb::Compare {
        key: Bytes::from_static(b"b"),
        target: pb::compare::CompareTarget::Version as i32,
        target_union: Some(pb::compare::TargetUnion::Version(0)),
        ..Default::default()
    };
    assert!(compare_holds(m.current(), &missing_version_is_zero));
    assert_eq!(m.compact(2), Ok(3));
    assert_eq!(m.compact(2), Err(Error::Compacted));
    assert_eq!(m.compact(4), Err(Error::FutureRevision));
    let old = pb::RangeRequest {
        key: Bytes::from_static(b"a"),
        revision: 1,
        ..Default::default()
    };
    assert_eq!(m.range(&old), Err(Error::Compacted));
    let at2 = pb::RangeRequest { revision: 2, ..old };
    let r = m.range(&at2).unwrap();
    assert_eq!(
        (r.count, &r.kvs[0].value[..], r.header.unwrap().revision),
        (1, &b"x"[..], 3)
    );
    // Leases: an unknown one refuses the put and takes no revision; a
    // revoke deletes its keys at one revision, or takes none without keys.
    assert_eq!(
        m.put(&put_req(1, 1, false, Some(0))),
        Err(Error::LeaseNotFound)
    );
    assert_eq!(m.grant(LEASE_IDS[0]), Ok(LEASE_TTL));
    assert_eq!(m.grant(LEASE_IDS[0]), Err(Error::LeaseExists));
    m.put(&put_req(1, 1, false, Some(0))).unwrap();
    m.put(&put_req(2, 1, false, Some(0))).unwrap();
    assert_eq!(m.rev(), 5);
    assert_eq!(m.lease_keys(LEASE_IDS[0]).len(), 2);
    assert_eq!(m.revoke(LEASE_IDS[0]), Ok(6));
    assert_eq!(m.current().len(), 1);
    assert_eq!(m.revoke(LEASE_IDS[0]), Err(Error::LeaseNotFound));
    m.grant(LEASE_IDS[1]).unwrap();
    assert_eq!(m.revoke(LEASE_IDS[1]), Ok(6));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        max_shrink_iters: 64,
        max_shrink_time: 120_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_single_map_model(ops in proptest::collection::vec(op(), 1..=OPS_MAX)) {
        if let Err(e) = check_case(ops) {
            prop_assert!(false, "{}", e);
        }
    }
}
