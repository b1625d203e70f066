//! Request checks etcd makes before a request reaches the store
//! (etcdserver/api/v3rpc/key.go), with its errors.

use std::collections::HashSet;

use ferrokv_wire::grpc::Status;
use ferrokv_wire::pb::etcdserverpb as pb;

use crate::errors;

pub fn range(r: &pb::RangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if pb::range_request::SortOrder::try_from(r.sort_order).is_err()
        || pb::range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(errors::invalid_sort_option());
    }
    Ok(())
}

pub fn put(r: &pb::PutRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(errors::value_provided());
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(errors::lease_provided());
    }
    Ok(())
}

pub fn delete(r: &pb::DeleteRangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(())
}

/// checkTxnRequest then checkIntervals on both branches, as etcd orders them.
pub fn txn(r: &pb::TxnRequest, max_txn_ops: usize) -> Result<(), Status> {
    txn_shape(r, max_txn_ops)?;
    intervals(&r.success)?;
    intervals(&r.failure)?;
    Ok(())
}

/// Whether any branch puts: etcd's capped applier (NOSPACE) refuses those.
pub fn has_put(r: &pb::TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .any(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(_)) => true,
            Some(pb::request_op::Request::RequestTxn(t)) => has_put(t),
            _ => false,
        })
}

/// etcd's checkTxnRequest: a nested txn gets what its parent's largest
/// list leaves of the budget (etcd passes `maxTxnOps-opc` down), and an
/// operation with no request (a `RequestOp` sent empty, or the gateway's
/// `{"request_put":null}`, which gogo encodes as nothing) is refused as
/// checkRequestOp's default case refuses it.
fn txn_shape(r: &pb::TxnRequest, max_txn_ops: usize) -> Result<(), Status> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(errors::too_many_ops());
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(errors::empty_key());
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(pb::request_op::Request::RequestRange(x)) => range(x)?,
            Some(pb::request_op::Request::RequestPut(x)) => put(x)?,
            Some(pb::request_op::Request::RequestDeleteRange(x)) => delete(x)?,
            Some(pb::request_op::Request::RequestTxn(x)) => txn_shape(x, max_txn_ops - opc)?,
            None => return Err(errors::key_not_found()),
        }
    }
    Ok(())
}

/// A delete's key span; a point covers only its key. etcd compares these
/// as plain byte intervals, so a from-key end ("\0") spans nothing.
struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => self.start.as_slice() == k,
            Some(end) => self.start.as_slice() <= k && k < end.as_slice(),
        }
    }
}

/// etcd's checkIntervals: within one branch no key is put twice, and no
/// put falls in a delete of the same or an enclosing level.
fn intervals(reqs: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Span>), Status> {
    let mut dels: Vec<Span> = Vec::new();
    for op in reqs {
        if let Some(pb::request_op::Request::RequestDeleteRange(d)) = &op.request {
            dels.push(Span {
                start: d.key.to_vec(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.to_vec()),
            });
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in reqs {
        let Some(pb::request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // The same key in both branches is fine: only one runs.
            if (puts.contains(k) && !puts_then.contains(k)) || dels.iter().any(|d| d.contains(k)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        if let Some(pb::request_op::Request::RequestPut(p)) = &op.request {
            let k = p.key.to_vec();
            if puts.contains(&k) || dels.iter().any(|d| d.contains(&k)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(k);
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put_op(k: &'static [u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: Bytes::from_static(k),
                ..Default::default()
            })),
        }
    }
    fn del_op(k: &'static [u8], end: &'static [u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: Bytes::from_static(k),
                    range_end: Bytes::from_static(end),
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn duplicate_puts_and_put_inside_delete_are_rejected() {
        let t = pb::TxnRequest {
            success: vec![put_op(b"a"), put_op(b"a")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(errors::duplicate_key()));
        let t = pb::TxnRequest {
            success: vec![del_op(b"a", b"c"), put_op(b"b")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(errors::duplicate_key()));
        // Same key in success and failure: fine.
        let t = pb::TxnRequest {
            success: vec![put_op(b"a")],
            failure: vec![put_op(b"a")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Ok(()));
    }

    #[test]
    fn nested_then_else_may_share_a_key_but_not_with_the_parent() {
        let nested = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                success: vec![put_op(b"k")],
                failure: vec![put_op(b"k")],
                ..Default::default()
            })),
        };
        let t = pb::TxnRequest {
            success: vec![nested.clone()],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Ok(()));
        let t = pb::TxnRequest {
            success: vec![nested, put_op(b"k")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(errors::duplicate_key()));
    }

    #[test]
    fn an_operation_without_a_request_is_key_not_found() {
        let t = pb::TxnRequest {
            success: vec![put_op(b"a")],
            failure: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(errors::key_not_found()));
    }

    #[test]
    fn a_nested_txn_gets_what_its_parent_leaves_of_the_budget() {
        let nested = |ops: usize| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                success: (0..ops).map(|_| put_op(b"n")).collect(),
                ..Default::default()
            })),
        };
        // Parent: 2 operations of a budget of 5, so 3 are left below.
        let t = |ops| pb::TxnRequest {
            success: vec![nested(ops), put_op(b"p")],
            ..Default::default()
        };
        assert_eq!(txn_shape(&t(3), 5), Ok(()));
        assert_eq!(txn_shape(&t(4), 5), Err(errors::too_many_ops()));
    }

    #[test]
    fn too_many_ops_counts_the_largest_list() {
        let t = pb::TxnRequest {
            success: (0..3).map(|_| put_op(b"x")).collect(),
            ..Default::default()
        };
        assert_eq!(txn(&t, 2), Err(errors::too_many_ops()));
    }
}
