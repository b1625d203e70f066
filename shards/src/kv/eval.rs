//! A transaction's evaluation against one view of the shards (visible
//! state, or the latest state of shards this coordinator fenced): etcd's
//! compare-then-branch, preconditions, and the ops of the chosen branch.

use ferrokv_mvcc::{KeyValue, WriteOp};
use ferrokv_wire::pb::etcdserverpb as pb;
use futures_channel::oneshot;

use crate::error::Error;
use crate::shard::FencedOp;

use super::write::{Via, WriteState};
use super::{header, to_pb, Engine};

/// Which branch each (nested) transaction takes, decided before any write.
pub(super) struct Path {
    pub(super) succeeded: bool,
    pub(super) nested: Vec<Path>,
}

impl Engine {
    /// etcd decides every (nested) branch against the state before the
    /// transaction's own writes.
    pub(super) async fn compare_path(
        &self,
        via: &Via<'_>,
        t: &pb::TxnRequest,
    ) -> Result<Path, Error> {
        let mut succeeded = true;
        for c in &t.compare {
            if !self.compare(via, c).await? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut nested = Vec::new();
        for op in ops {
            if let Some(pb::request_op::Request::RequestTxn(n)) = &op.request {
                nested.push(Box::pin(self.compare_path(via, n)).await?);
            }
        }
        Ok(Path { succeeded, nested })
    }

    pub(super) async fn compare(&self, via: &Via<'_>, c: &pb::Compare) -> Result<bool, Error> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let rev = match via {
            Via::Visible(v) => *v,
            Via::Fenced(_) | Via::Local(..) => 0,
        };
        let rr = self
            .range_raw(via, &c.key, &c.range_end, rev, 0, false, false)
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

    /// Put preconditions along the chosen path: the lease exists, and
    /// ignore_value/ignore_lease have a key to take them from.
    pub(super) fn check_puts<'a>(
        &'a self,
        via: &'a Via<'_>,
        t: &'a pb::TxnRequest,
        path: &'a Path,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + 'a>> {
        Box::pin(async move {
            let ops = if path.succeeded {
                &t.success
            } else {
                &t.failure
            };
            let mut nested = path.nested.iter();
            for op in ops {
                match &op.request {
                    Some(pb::request_op::Request::RequestPut(p)) => {
                        if p.ignore_value || p.ignore_lease {
                            let rr = self.range_raw(via, &p.key, &[], 0, 1, true, false).await?;
                            if rr.kvs.is_empty() {
                                return Err(Error::KeyNotFound);
                            }
                        }
                        if p.lease != 0 && !self.lease_exists(via, p.lease).await? {
                            return Err(Error::LeaseNotFound);
                        }
                    }
                    Some(pb::request_op::Request::RequestTxn(n)) => {
                        if let Some(np) = nested.next() {
                            self.check_puts(via, n, np).await?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }

    pub(super) fn check_ranges(
        &self,
        t: &pb::TxnRequest,
        path: &Path,
        current: i64,
    ) -> Result<(), Error> {
        let ops = if path.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(pb::request_op::Request::RequestRange(r)) if r.revision > 0 => {
                    self.check_revision(r.revision, current)?;
                }
                Some(pb::request_op::Request::RequestTxn(n)) => {
                    if let Some(np) = nested.next() {
                        self.check_ranges(n, np, current)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn exec<'a>(
        &'a self,
        via: &'a Via<'_>,
        t: &'a pb::TxnRequest,
        path: &'a Path,
        st: &'a mut WriteState,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<pb::ResponseOp>, Error>> + 'a>>
    {
        Box::pin(async move {
            use pb::response_op::Response;
            let ops = if path.succeeded {
                &t.success
            } else {
                &t.failure
            };
            let mut nested = path.nested.iter();
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                let resp = match &op.request {
                    Some(pb::request_op::Request::RequestRange(r)) => {
                        let rev = match via {
                            Via::Visible(v) if r.revision <= 0 => *v,
                            _ => r.revision.max(0),
                        };
                        let hdr = st.header_rev();
                        Some(Response::ResponseRange(
                            self.range_at(via, r, rev, hdr).await?,
                        ))
                    }
                    Some(pb::request_op::Request::RequestPut(p)) => {
                        Some(Response::ResponsePut(self.exec_put(via, p, st).await?))
                    }
                    Some(pb::request_op::Request::RequestDeleteRange(d)) => Some(
                        Response::ResponseDeleteRange(self.exec_delete(via, d, st).await?),
                    ),
                    Some(pb::request_op::Request::RequestTxn(n)) => {
                        let np = nested
                            .next()
                            .ok_or_else(|| Error::Internal("txn path mismatch".into()))?;
                        let responses = self.exec(via, n, np, st).await?;
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

    pub(super) async fn exec_put(
        &self,
        via: &Via<'_>,
        p: &pb::PutRequest,
        st: &mut WriteState,
    ) -> Result<pb::PutResponse, Error> {
        let mut prev = None;
        if p.prev_kv || p.ignore_value || p.ignore_lease {
            let rr = self.range_raw(via, &p.key, &[], 0, 1, false, false).await?;
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
        let shard = self.shard_of(&p.key);
        let op = WriteOp::Put {
            key: p.key.to_vec(),
            value,
            lease,
        };
        self.apply(via, shard, vec![op], st).await?;
        Ok(pb::PutResponse {
            header: header(st.header_rev()),
            prev_kv: if p.prev_kv { prev.map(to_pb) } else { None },
        })
    }

    pub(super) async fn exec_delete(
        &self,
        via: &Via<'_>,
        d: &pb::DeleteRangeRequest,
        st: &mut WriteState,
    ) -> Result<pb::DeleteRangeResponse, Error> {
        let rr = self
            .range_raw(via, &d.key, &d.range_end, 0, 0, !d.prev_kv, false)
            .await?;
        let deleted = rr.kvs.len() as i64;
        self.apply_deletes(via, rr.kvs.iter().map(|kv| &kv.key), st)
            .await?;
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
    /// follow key order, as etcd's do; consecutive keys of one shard go in
    /// one message.
    pub(super) async fn apply_deletes<'k>(
        &self,
        via: &Via<'_>,
        keys: impl Iterator<Item = &'k Vec<u8>>,
        st: &mut WriteState,
    ) -> Result<(), Error> {
        let mut run: Vec<WriteOp> = Vec::new();
        let mut run_shard = None;
        for key in keys {
            let s = self.shard_of(key);
            if let Some(r) = run_shard.filter(|r| *r != s) {
                let ops = std::mem::take(&mut run);
                self.apply(via, r, ops, st).await?;
            }
            run_shard = Some(s);
            run.push(WriteOp::Delete { key: key.clone() });
        }
        if let Some(s) = run_shard {
            self.apply(via, s, run, st).await?;
        }
        Ok(())
    }

    pub(super) async fn lease_exists(&self, via: &Via<'_>, id: i64) -> Result<bool, Error> {
        let s = self.lease_shard(id);
        if let Via::Local(local, _) = via {
            if local.id == s {
                return Ok(local.lease_exists(id));
            }
        }
        let Via::Fenced(fences) = via else {
            return Err(Error::Internal("lease check outside a fence".into()));
        };
        let (ch, _) = fences
            .get(&s)
            .ok_or_else(|| Error::Internal(format!("lease shard {s} not fenced")))?;
        let (tx, rx) = oneshot::channel();
        ch.send(FencedOp::LeaseExists(id, tx))
            .await
            .map_err(|_| Error::Internal("shard stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("shard stopped".into()))
    }
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
