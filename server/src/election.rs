//! The Election service (etcd `v3election`): concurrency.Election run in
//! the server with the request's lease as the session (see `concurrency`).
//! A leadership is named by its `LeaderKey`: the candidate key and its
//! create revision, so a key re-created later is another leadership.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::conn::{Caller, ResponseSink};
use ferrokv_wire::grpc::{decode, Code, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use ferrokv_wire::pb::v3electionpb as epb;
use ferrokv_wire::Message;

use crate::concurrency::{self as cc, WaitError, Watches, Withdraw};
use crate::errors;
use crate::service::Service;

/// How often an Observe stream that has nothing to send checks that its
/// client is still there.
const OBSERVE_CLOSED_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `Election.Campaign`: become a candidate (announcing `value`), wait for
/// every older candidate to go. The header is that of the entering txn, as
/// etcd answers it.
pub async fn campaign(svc: Rc<Service>, msg: Bytes) -> Result<epb::CampaignResponse, Status> {
    let r: epb::CampaignRequest = decode(msg)?;
    let lease = cc::session_lease(&svc, r.lease).await?;
    let prefix = cc::candidates(&r.name);
    let key = cc::candidate_key(&prefix, lease);
    let enter = pb::TxnRequest {
        compare: vec![cc::created_at(&key, 0)],
        success: vec![cc::put_op(&key, r.value.clone(), lease)],
        failure: vec![cc::get_op(&key)],
    };
    let entered = cc::txn(&svc, enter).await?;
    let entered_rev = cc::revision(&entered.header);
    let mut leader_rev = entered_rev;
    if !entered.succeeded {
        // This session is a candidate already: keep its place, announce
        // the new value.
        let kv = cc::existing_own_key(&entered)?;
        leader_rev = kv.create_revision;
        if kv.value != r.value {
            if let Err(e) = proclaim_as(&svc, &key, leader_rev, lease, r.value.clone()).await {
                let _ = cc::txn(&svc, resign_txn(&key, leader_rev)).await;
                return Err(e);
            }
        }
    }
    let withdraw = Withdraw::new(svc.clone(), resign_txn(&key, leader_rev));
    let waited = cc::wait_deletes(&svc, &prefix, leader_rev - 1, &key, entered_rev + 1).await;
    // Only a canceled call resigns (the drop of `withdraw`); etcd leaves the
    // key of a campaign that failed otherwise.
    withdraw.disarm();
    match waited {
        Ok(_) => Ok(epb::CampaignResponse {
            header: svc.header(entered_rev).await,
            leader: Some(epb::LeaderKey {
                name: r.name,
                key,
                rev: leader_rev,
                lease,
            }),
        }),
        // The candidate key is gone (its lease ended): what Proclaim
        // answers such a leader.
        Err(WaitError::Lost) => Err(errors::election_not_leader()),
        Err(WaitError::Failed(status)) => Err(status),
    }
}

/// `Election.Proclaim`: the leader's new value, if the key still has the
/// leadership's create revision.
pub async fn proclaim(svc: &Service, msg: Bytes) -> Result<epb::ProclaimResponse, Status> {
    let r: epb::ProclaimRequest = decode(msg)?;
    let leader = r.leader.ok_or_else(errors::missing_leader_key)?;
    let lease = cc::session_lease(svc, leader.lease).await?;
    let rev = proclaim_as(svc, &leader.key, leader.rev, lease, r.value).await?;
    Ok(epb::ProclaimResponse {
        header: svc.header(rev).await,
    })
}

/// The put behind Proclaim; its revision.
async fn proclaim_as(
    svc: &Service,
    key: &Bytes,
    leader_rev: i64,
    lease: i64,
    value: Bytes,
) -> Result<i64, Status> {
    let t = pb::TxnRequest {
        compare: vec![cc::created_at(key, leader_rev)],
        success: vec![cc::put_op(key, value, lease)],
        failure: Vec::new(),
    };
    let resp = cc::txn(svc, t).await?;
    if !resp.succeeded {
        return Err(errors::election_not_leader());
    }
    Ok(cc::revision(&resp.header))
}

/// Deletes the leader key if it is still this leadership's.
fn resign_txn(key: &Bytes, leader_rev: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![cc::created_at(key, leader_rev)],
        success: vec![cc::delete_op(key)],
        failure: Vec::new(),
    }
}

/// `Election.Resign`: answered alike whether or not it still led.
pub async fn resign(svc: &Service, msg: Bytes) -> Result<epb::ResignResponse, Status> {
    let r: epb::ResignRequest = decode(msg)?;
    let leader = r.leader.ok_or_else(errors::missing_leader_key)?;
    // etcd opens a session here too (granting a lease for lease 0) though
    // resigning does not use it.
    cc::session_lease(svc, leader.lease).await?;
    let resp = cc::txn(svc, resign_txn(&leader.key, leader.rev)).await?;
    Ok(epb::ResignResponse {
        header: svc.header(cc::revision(&resp.header)).await,
    })
}

/// The oldest candidate under `prefix`, with the read's revision.
async fn current_leader(
    svc: &Service,
    prefix: &[u8],
) -> Result<(i64, Option<mvccpb::KeyValue>), Status> {
    let r = cc::range(
        svc,
        &cc::by_create(prefix, pb::range_request::SortOrder::Ascend),
    )
    .await?;
    Ok((cc::revision(&r.header), r.kvs.into_iter().next()))
}

/// `Election.Leader`: the oldest candidate's key and value.
pub async fn leader(svc: &Service, msg: Bytes) -> Result<epb::LeaderResponse, Status> {
    let r: epb::LeaderRequest = decode(msg)?;
    let (rev, kv) = current_leader(svc, &cc::candidates(&r.name)).await?;
    let kv = kv.ok_or_else(errors::election_no_leader)?;
    Ok(epb::LeaderResponse {
        header: svc.header(rev).await,
        kv: Some(kv),
    })
}

/// `Election.Observe` (server streaming): the current leader, then every
/// value it announces, then the next leader when its key goes, and so on,
/// until the client goes away. Ends (OK) when a read or watch fails, as
/// etcd's does.
pub async fn observe(
    svc: Rc<Service>,
    caller: Caller,
    requests: async_channel::Receiver<Bytes>,
    sink: ResponseSink,
) -> Status {
    let Ok(msg) = requests.recv().await else {
        return Status::new(
            Code::Internal,
            "grpc: request ended before a whole message arrived",
        );
    };
    let r: epb::LeaderRequest = match decode(msg) {
        Ok(r) => r,
        Err(status) => return status,
    };
    if let Err(status) = crate::auth::check_prefix(&svc, &caller, &r.name, true) {
        return status;
    }
    let prefix = cc::candidates(&r.name);
    let client_gone = async {
        while !sink.is_closed() {
            glommio::timer::sleep(OBSERVE_CLOSED_CHECK_INTERVAL).await;
        }
        canceled()
    };
    futures_lite::future::or(follow(&svc, &prefix, &sink), client_gone).await
}

fn canceled() -> Status {
    Status::new(Code::Canceled, "context canceled")
}

/// etcd's `Election.observe` loop.
async fn follow(svc: &Service, prefix: &[u8], sink: &ResponseSink) -> Status {
    let ok = Status::new(Code::Ok, "");
    loop {
        let Ok((read_rev, current)) = current_leader(svc, prefix).await else {
            return ok;
        };
        let mut watches = Watches::new(svc);
        let (rev, kv) = match current {
            Some(kv) => (read_rev, kv),
            None => {
                // No leader: the first put under the prefix makes one
                // (a delete is not a leader).
                let all = watches.watch(cc::prefix_range(prefix), read_rev + 1);
                let first_put = loop {
                    let out = watches.next().await;
                    if out.compact_revision != 0 {
                        return ok;
                    }
                    if let Some(e) = out.events.iter().find(|e| !cc::is_delete(e)) {
                        break e.to_pb(false).kv.unwrap_or_default();
                    }
                };
                watches.cancel(all);
                (first_put.mod_revision, first_put)
            }
        };
        let from = rev + 1;
        let key = kv.key.to_vec();
        if !send(svc, sink, rev, kv).await {
            return canceled();
        }
        watches.watch(cc::key_range(&key), from);
        'leader: loop {
            let out = watches.next().await;
            if out.compact_revision != 0 {
                return ok;
            }
            for e in &out.events {
                if cc::is_delete(e) {
                    break 'leader;
                }
                let kv = e.to_pb(false).kv.unwrap_or_default();
                if !send(svc, sink, out.header_rev, kv).await {
                    return canceled();
                }
            }
        }
    }
}

async fn send(svc: &Service, sink: &ResponseSink, rev: i64, kv: mvccpb::KeyValue) -> bool {
    let resp = epb::LeaderResponse {
        header: svc.header(rev).await,
        kv: Some(kv),
    };
    sink.send(Bytes::from(resp.encode_to_vec())).await
}
