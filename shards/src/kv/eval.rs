//! A transaction's evaluation, without I/O: etcd's compare-then-branch,
//! preconditions, the ops of the chosen branch, and a range's filters and
//! sorting, against a [`View`] of the shards. The engine's view is the
//! visible state or the latest state of shards its coordinator holds the
//! locks of (`kv/write.rs`); the simulation's is its members' shard states.

use ferrokv_mvcc::{KeyValue, RangeResult, WriteOp};
use ferrokv_wire::pb::etcdserverpb as pb;

use crate::error::Error;
use crate::record::{Part, Record};
use crate::sequencer::Sequencer;

use super::{header, to_pb};

/// What an evaluation reads and writes through. Its futures stay on one
/// core, as every shard's do: no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait View {
    /// The visible revision this view reads at; `None` for the latest state
    /// of shards whose locks the caller holds (the only view writes go to).
    fn at(&self) -> Option<i64>;
    /// Revisions: the next one, what is visible, what was compacted.
    fn seq(&self) -> &Sequencer;
    fn shard_of(&self, key: &[u8]) -> u32;
    /// The keys of `key..range_end` (`key` alone when empty) at `rev` (0:
    /// the latest), merged across shards in key order, at most `limit` (0:
    /// all).
    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        count_only: bool,
    ) -> Result<RangeResult, Error>;
    async fn lease_exists(&self, id: i64) -> Result<bool, Error>;
    /// Applies `ops` to `shard` at `rev` from sub revision `first_sub`,
    /// ahead of its log.
    async fn apply(
        &self,
        shard: u32,
        rev: i64,
        first_sub: i64,
        ops: &[WriteOp],
    ) -> Result<(), Error>;
}

/// Which branch each (nested) transaction takes, decided before any write.
pub struct Path {
    pub succeeded: bool,
    pub nested: Vec<Path>,
}

/// What a write has done so far: its revision once it wrote, and each
/// shard's part of it.
pub struct WriteState {
    pub rev: Option<i64>,
    /// The void count when the revision was taken (see `wait_committed`).
    pub voids: u64,
    /// The revision its reads saw when it wrote nothing.
    pub base_rev: i64,
    pub next_sub: i64,
    pub parts: Vec<Part>,
}

impl WriteState {
    pub fn new(base_rev: i64, voids: u64) -> WriteState {
        WriteState {
            rev: None,
            voids,
            base_rev,
            next_sub: 0,
            parts: Vec::new(),
        }
    }

    pub fn header_rev(&self) -> i64 {
        self.rev.unwrap_or(self.base_rev)
    }
}

/// Decides the branches, checks them and executes the chosen one against
/// the latest state under the held locks. An error carries the revision if
/// something was already applied at it.
pub async fn evaluate<V: View>(
    v: &V,
    t: &pb::TxnRequest,
) -> Result<(Path, WriteState, Vec<pb::ResponseOp>), (Error, Option<i64>)> {
    let seq = v.seq();
    let visible = seq.visible();
    let path = compare_path(v, t).await.map_err(|e| (e, None))?;
    check_puts(v, t, &path).await.map_err(|e| (e, None))?;
    check_ranges(seq, t, &path, visible).map_err(|e| (e, None))?;
    let mut st = WriteState::new(visible, seq.voids());
    match exec(v, t, &path, &mut st).await {
        Ok(responses) => {
            if st.rev.is_none() {
                // Wrote nothing: what it read (under its locks) is the
                // state after every revision assigned so far, and before
                // any assigned later (the header it reports).
                st.base_rev = st.base_rev.max(seq.last_assigned());
            }
            Ok((path, st, responses))
        }
        Err(e) => Err((e, st.rev)),
    }
}

/// A read-only transaction at the view's visible revision.
pub async fn read_only<V: View>(
    v: &V,
    t: &pb::TxnRequest,
    visible: i64,
) -> Result<(Path, Vec<pb::ResponseOp>), Error> {
    let path = compare_path(v, t).await?;
    check_ranges(v.seq(), t, &path, visible)?;
    let mut st = WriteState::new(visible, 0);
    let responses = exec(v, t, &path, &mut st).await?;
    Ok((path, responses))
}

/// etcd decides every (nested) branch against the state before the
/// transaction's own writes.
pub async fn compare_path<V: View>(v: &V, t: &pb::TxnRequest) -> Result<Path, Error> {
    let mut succeeded = true;
    for c in &t.compare {
        if !compare(v, c).await? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut nested = Vec::new();
    for op in ops {
        if let Some(pb::request_op::Request::RequestTxn(n)) = &op.request {
            nested.push(Box::pin(compare_path(v, n)).await?);
        }
    }
    Ok(Path { succeeded, nested })
}

async fn compare<V: View>(v: &V, c: &pb::Compare) -> Result<bool, Error> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let rr = v
        .range(&c.key, &c.range_end, v.at().unwrap_or(0), 0, false, false)
        .await?;
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
    let check = |kv: &KeyValue| -> bool {
        let ord = match (&target, &c.target_union) {
            (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v),
            (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
            (CompareTarget::Create, u) => kv.create_revision.cmp(&int_of(u, target)),
            (CompareTarget::Mod, u) => kv.mod_revision.cmp(&int_of(u, target)),
            (CompareTarget::Version, u) => kv.version.cmp(&int_of(u, target)),
            (CompareTarget::Lease, u) => kv.lease.cmp(&int_of(u, target)),
        };
        match result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::NotEqual => !ord.is_eq(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
        }
    };
    if rr.kvs.is_empty() {
        // A missing key never matches a value compare; for the others it
        // compares as all zeros.
        if target == CompareTarget::Value {
            return Ok(false);
        }
        return Ok(check(&KeyValue::default()));
    }
    Ok(rr.kvs.iter().all(check))
}

/// The ops of the branch `path` chose.
fn chosen<'t>(t: &'t pb::TxnRequest, path: &Path) -> &'t [pb::RequestOp] {
    if path.succeeded {
        &t.success
    } else {
        &t.failure
    }
}

/// Put preconditions along the chosen path: the lease exists, and
/// ignore_value/ignore_lease have a key to take them from.
fn check_puts<'a, V: View>(
    v: &'a V,
    t: &'a pb::TxnRequest,
    path: &'a Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + 'a>> {
    Box::pin(async move {
        let mut nested = path.nested.iter();
        for op in chosen(t, path) {
            match &op.request {
                Some(pb::request_op::Request::RequestPut(p)) => {
                    if p.ignore_value || p.ignore_lease {
                        let rr = v.range(&p.key, &[], 0, 1, true, false).await?;
                        if rr.kvs.is_empty() {
                            return Err(Error::KeyNotFound);
                        }
                    }
                    if p.lease != 0 && !v.lease_exists(p.lease).await? {
                        return Err(Error::LeaseNotFound);
                    }
                }
                Some(pb::request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        check_puts(v, n, np).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    })
}

/// Every range of the chosen path at a past revision is neither in the
/// future of `current` nor compacted.
fn check_ranges(
    seq: &Sequencer,
    t: &pb::TxnRequest,
    path: &Path,
    current: i64,
) -> Result<(), Error> {
    let mut nested = path.nested.iter();
    for op in chosen(t, path) {
        match &op.request {
            Some(pb::request_op::Request::RequestRange(r)) if r.revision > 0 => {
                check_revision(seq, r.revision, current)?;
            }
            Some(pb::request_op::Request::RequestTxn(n)) => {
                if let Some(np) = nested.next() {
                    check_ranges(seq, n, np, current)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A read at `rev` when `current` is the newest: etcd's future and
/// compacted revision errors.
pub fn check_revision(seq: &Sequencer, rev: i64, current: i64) -> Result<(), Error> {
    if rev > current {
        return Err(Error::FutureRevision);
    }
    if rev > 0 && rev < seq.compact_revision() {
        return Err(Error::Compacted);
    }
    Ok(())
}

fn exec<'a, V: View>(
    v: &'a V,
    t: &'a pb::TxnRequest,
    path: &'a Path,
    st: &'a mut WriteState,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<pb::ResponseOp>, Error>> + 'a>> {
    Box::pin(async move {
        use pb::response_op::Response;
        let ops = chosen(t, path);
        let mut nested = path.nested.iter();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(pb::request_op::Request::RequestRange(r)) => {
                    let rev = match v.at() {
                        Some(at) if r.revision <= 0 => at,
                        _ => r.revision.max(0),
                    };
                    let hdr = st.header_rev();
                    Some(Response::ResponseRange(range_at(v, r, rev, hdr).await?))
                }
                Some(pb::request_op::Request::RequestPut(p)) => {
                    Some(Response::ResponsePut(exec_put(v, p, st).await?))
                }
                Some(pb::request_op::Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(exec_delete(v, d, st).await?))
                }
                Some(pb::request_op::Request::RequestTxn(n)) => {
                    let np = nested
                        .next()
                        .ok_or_else(|| Error::Internal("txn path mismatch".into()))?;
                    let responses = exec(v, n, np, st).await?;
                    Some(Response::ResponseTxn(pb::TxnResponse {
                        // etcd's newTxnResp: a nested txn's header is
                        // empty (only the outer one is filled in).
                        header: Some(pb::ResponseHeader::default()),
                        succeeded: np.succeeded,
                        responses,
                    }))
                }
                None => None,
            };
            out.push(pb::ResponseOp { response: resp });
        }
        Ok(out)
    })
}

async fn exec_put<V: View>(
    v: &V,
    p: &pb::PutRequest,
    st: &mut WriteState,
) -> Result<pb::PutResponse, Error> {
    let mut prev = None;
    if p.prev_kv || p.ignore_value || p.ignore_lease {
        let rr = v.range(&p.key, &[], 0, 1, false, false).await?;
        prev = rr.kvs.into_iter().next();
    }
    let mut value = p.value.to_vec();
    let mut lease = p.lease;
    if p.ignore_value || p.ignore_lease {
        let Some(prev) = &prev else {
            return Err(Error::KeyNotFound);
        };
        if p.ignore_value {
            value = prev.value.clone();
        }
        if p.ignore_lease {
            lease = prev.lease;
        }
    }
    let op = WriteOp::Put {
        key: p.key.to_vec(),
        value,
        lease,
    };
    apply(v, v.shard_of(&p.key), vec![op], st).await?;
    Ok(pb::PutResponse {
        header: header(st.header_rev()),
        prev_kv: if p.prev_kv { prev.map(to_pb) } else { None },
    })
}

async fn exec_delete<V: View>(
    v: &V,
    d: &pb::DeleteRangeRequest,
    st: &mut WriteState,
) -> Result<pb::DeleteRangeResponse, Error> {
    let rr = v
        .range(&d.key, &d.range_end, 0, 0, !d.prev_kv, false)
        .await?;
    let deleted = rr.kvs.len() as i64;
    apply_deletes(v, rr.kvs.iter().map(|kv| &kv.key), st).await?;
    Ok(pb::DeleteRangeResponse {
        header: header(st.header_rev()),
        deleted,
        prev_kvs: if d.prev_kv {
            rr.kvs.into_iter().map(to_pb).collect()
        } else {
            Vec::new()
        },
    })
}

/// Deletes `keys` (in key order) at the write's revision. Sub revisions
/// follow key order, as etcd's do; consecutive keys of one shard go in one
/// apply.
pub async fn apply_deletes<'k, V: View>(
    v: &V,
    keys: impl Iterator<Item = &'k Vec<u8>>,
    st: &mut WriteState,
) -> Result<(), Error> {
    let mut run: Vec<WriteOp> = Vec::new();
    let mut run_shard = None;
    for key in keys {
        let s = v.shard_of(key);
        if let Some(r) = run_shard.filter(|r| *r != s) {
            let ops = std::mem::take(&mut run);
            apply(v, r, ops, st).await?;
        }
        run_shard = Some(s);
        run.push(WriteOp::Delete { key: key.clone() });
    }
    if let Some(s) = run_shard {
        apply(v, s, run, st).await?;
    }
    Ok(())
}

/// A lease revoke's writes: `keys` (the keys attached to the lease, sorted)
/// deleted at one revision, and, if that took a revision, a part in the
/// lease's shard `lease_shard` even if it holds none of them (an empty
/// one), so the revision is complete only once that shard committed its
/// `LeaseRevoke` too (which [`records`] puts before its part). Without it,
/// found by the simulation, a leader whose `LeaseRevoke` raft dropped while
/// the deletes committed in the other shards left its lease table without
/// a lease every other member still held, and the revoke half done.
pub async fn revoke_deletes<'k, V: View>(
    v: &V,
    keys: impl Iterator<Item = &'k Vec<u8>>,
    lease_shard: u32,
    st: &mut WriteState,
) -> Result<(), Error> {
    apply_deletes(v, keys, st).await?;
    if st.rev.is_some() && !st.parts.iter().any(|p| p.shard == lease_shard) {
        apply(v, lease_shard, Vec::new(), st).await?;
    }
    Ok(())
}

/// Applies one shard's ops at the write's revision (taken at its first
/// op) and keeps them as that shard's part.
async fn apply<V: View>(
    v: &V,
    shard: u32,
    ops: Vec<WriteOp>,
    st: &mut WriteState,
) -> Result<(), Error> {
    if v.at().is_some() {
        return Err(Error::Internal("write outside a fence".into()));
    }
    let rev = match st.rev {
        Some(r) => r,
        None => {
            let r = v.seq().assign().await;
            st.rev = Some(r);
            r
        }
    };
    let first_sub = st.next_sub;
    st.next_sub += ops.len() as i64;
    v.apply(shard, rev, first_sub, &ops).await?;
    st.parts.push(Part {
        shard,
        first_sub,
        ops,
    });
    Ok(())
}

/// etcd's Range: limit pushed down to the shards unless sorting or
/// filtering needs every key first.
pub async fn range_at<V: View>(
    v: &V,
    r: &pb::RangeRequest,
    rev: i64,
    header_rev: i64,
) -> Result<pb::RangeResponse, Error> {
    use pb::range_request::{SortOrder, SortTarget};
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let mut limit = r.limit.max(0) as usize;
    if r.sort_order != SortOrder::None as i32 || filtered {
        limit = 0;
    }
    if limit > 0 {
        // One extra tells whether there is more.
        limit += 1;
    }
    let rr = v
        .range(&r.key, &r.range_end, rev, limit, false, r.count_only)
        .await?;
    let mut kvs = rr.kvs;
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
    let mut order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        // A stable sort on top of key order, with the comparator reversed
        // for DESCEND (etcd's `sort.Reverse`): keys that tie on the target
        // stay in ascending key order either way, as etcd answers them
        // (reversing the ascending result would reverse the ties too).
        let by = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    Ok(pb::RangeResponse {
        header: header(header_rev),
        kvs: kvs
            .into_iter()
            .map(|mut kv| {
                if r.keys_only {
                    kv.value.clear();
                }
                to_pb(kv)
            })
            .collect(),
        more,
        count: rr.count as i64,
    })
}

/// What `shard` commits of a write: the whole write set (every shard's
/// part, so that any one shard's log tells which shards it waits for) if
/// it holds a part, and a lease revoke if it is the lease's shard
/// (`revoke`: that shard and the lease).
pub fn records(st: &WriteState, shard: u32, revoke: Option<(u32, i64)>) -> Vec<Record> {
    let mut records = Vec::new();
    // The revoke goes first: a lease shard whose part of the revision
    // committed has committed the revoke too (`revoke_deletes`).
    if let Some((_, id)) = revoke.filter(|(s, _)| *s == shard) {
        // A revoke that deleted nothing found no key attached in a state
        // that may hold revisions not yet committed in other shards; it
        // carries the last of them, so that a marker voiding them voids
        // it too. With 0, found by the simulation, a lease outlived the
        // loss of a write that had replaced its only key's version while
        // the key's earlier version, attached to it, stayed live.
        records.push(Record::LeaseRevoke {
            id,
            rev: st.rev.unwrap_or(st.base_rev),
        });
    }
    if let Some(rev) = st.rev.filter(|_| st.parts.iter().any(|p| p.shard == shard)) {
        records.push(Record::Write {
            rev,
            parts: st.parts.clone(),
        });
    }
    records
}

/// The shards' answers to one range as one: in key order, at most `limit`
/// (0: all), counted over all.
pub fn merge(results: Vec<RangeResult>, limit: usize) -> RangeResult {
    let mut merged = RangeResult::default();
    for r in results {
        merged.count += r.count;
        merged.kvs.extend(r.kvs);
    }
    if merged.kvs.len() > 1 {
        merged.kvs.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }
    if limit > 0 {
        merged.kvs.truncate(limit);
    }
    merged
}

fn int_of(u: &Option<pb::compare::TargetUnion>, target: pb::compare::CompareTarget) -> i64 {
    use pb::compare::{CompareTarget as T, TargetUnion as U};
    match (target, u) {
        (T::Create, Some(U::CreateRevision(v))) => *v,
        (T::Mod, Some(U::ModRevision(v))) => *v,
        (T::Version, Some(U::Version(v))) => *v,
        (T::Lease, Some(U::Lease(v))) => *v,
        _ => 0,
    }
}

/// etcd's isTxnReadonly: no put or delete anywhere, in either branch.
pub fn is_read_only(t: &pb::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(_))
            | Some(pb::request_op::Request::RequestDeleteRange(_)) => false,
            Some(pb::request_op::Request::RequestTxn(n)) => is_read_only(n),
            _ => true,
        })
}
