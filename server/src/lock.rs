//! The Lock service (etcd `v3lock`): concurrency.Mutex run in the server
//! with the request's lease as the session (see `concurrency`).

use std::rc::Rc;

use bytes::Bytes;
use ferrokv_wire::grpc::{decode, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::v3lockpb as lpb;

use crate::concurrency::{self as cc, WaitError, Withdraw};
use crate::errors;
use crate::service::Service;

/// `Mutex.Lock`: become a candidate (or find this session already one),
/// then wait for every older candidate to go. Answers the candidate key;
/// the header is the read that found the lock free.
pub async fn lock(svc: Rc<Service>, msg: Bytes) -> Result<lpb::LockResponse, Status> {
    let r: lpb::LockRequest = decode(msg)?;
    let lease = cc::session_lease(&svc, r.lease).await?;
    let prefix = cc::candidates(&r.name);
    let key = cc::candidate_key(&prefix, lease);
    // One round trip when uncontended: enter (or find our key) and read
    // the owner.
    let enter = pb::TxnRequest {
        compare: vec![cc::created_at(&key, 0)],
        success: vec![
            cc::put_op(&key, Bytes::new(), lease),
            cc::first_create_op(&prefix),
        ],
        failure: vec![cc::get_op(&key), cc::first_create_op(&prefix)],
    };
    let entered = cc::txn(&svc, enter).await?;
    let entered_rev = cc::revision(&entered.header);
    let my_rev = if entered.succeeded {
        entered_rev
    } else {
        cc::existing_own_key(&entered)?.create_revision
    };
    let owner_rev = cc::first_kv(&entered, 1).map(|kv| kv.create_revision);
    if owner_rev.is_none_or(|rev| rev == my_rev) {
        return Ok(lpb::LockResponse {
            header: svc.header(entered_rev).await,
            key,
        });
    }
    // etcd's Mutex deletes its key whenever the wait fails.
    let unlock = pb::TxnRequest {
        success: vec![cc::delete_op(&key)],
        ..Default::default()
    };
    let withdraw = Withdraw::new(svc.clone(), unlock);
    match cc::wait_deletes(&svc, &prefix, my_rev - 1, &key, entered_rev + 1).await {
        Ok(free_rev) => {
            withdraw.disarm();
            Ok(lpb::LockResponse {
                header: svc.header(free_rev).await,
                key,
            })
        }
        Err(WaitError::Lost) => {
            // Nothing left to delete.
            withdraw.disarm();
            Err(errors::session_expired())
        }
        Err(WaitError::Failed(status)) => {
            withdraw.now().await;
            Err(status)
        }
    }
}

/// `Unlock`: a plain delete of the key, whoever holds it.
pub async fn unlock(svc: &Service, msg: Bytes) -> Result<lpb::UnlockResponse, Status> {
    let r: lpb::UnlockRequest = decode(msg)?;
    let deleted = cc::delete(
        svc,
        pb::DeleteRangeRequest {
            key: r.key,
            ..Default::default()
        },
    )
    .await?;
    Ok(lpb::UnlockResponse {
        header: svc.header(cc::revision(&deleted.header)).await,
    })
}
