//! The Lease service (etcd `v3rpc/lease.go`, `etcdserver/v3_server.go`):
//! grant, revoke, time-to-live and list as unary calls, keep-alive as a
//! bidirectional stream of many leases. The lease tables live in the shards
//! (`ferrokv_shards::lease`); this module only speaks etcd's messages.

use std::rc::Rc;

use bytes::Bytes;
use ferrokv_shards::Error as EngineError;
use ferrokv_wire::conn::ResponseSink;
use ferrokv_wire::grpc::{decode, Code, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::Message;

use crate::errors;
use crate::service::Service;

/// Server-chosen ids that collide with an existing lease are drawn again;
/// this bounds the draws (a collision needs a client to have picked ids in
/// this member's own id space).
const GRANT_ID_DRAWS_MAX: usize = 16;

pub async fn grant(svc: &Service, msg: Bytes) -> Result<pb::LeaseGrantResponse, Status> {
    grant_request(svc, decode(msg)?).await
}

/// A grant as the Lease service makes it, also for the sessions of the
/// lock and election services.
pub async fn grant_request(
    svc: &Service,
    r: pb::LeaseGrantRequest,
) -> Result<pb::LeaseGrantResponse, Status> {
    // etcd's quotaLeaseServer: a full backend refuses new leases too.
    if svc.alarms.nospace() {
        return Err(errors::no_space());
    }
    let (id, (ttl, rev)) = if r.id != 0 {
        let granted = svc
            .engine
            .lease_grant(r.id, r.ttl)
            .await
            .map_err(errors::engine)?;
        (r.id, granted)
    } else {
        let mut granted = Err(EngineError::LeaseExists);
        let mut id = 0;
        for _ in 0..GRANT_ID_DRAWS_MAX {
            id = svc.next_lease_id();
            granted = svc.engine.lease_grant(id, r.ttl).await;
            if granted != Err(EngineError::LeaseExists) {
                break;
            }
        }
        (id, granted.map_err(errors::engine)?)
    };
    Ok(pb::LeaseGrantResponse {
        header: svc.header(rev).await,
        id,
        ttl,
        error: String::new(),
    })
}

pub async fn revoke(svc: &Service, msg: Bytes) -> Result<pb::LeaseRevokeResponse, Status> {
    let r: pb::LeaseRevokeRequest = decode(msg)?;
    let rev = svc
        .engine
        .lease_revoke(r.id)
        .await
        .map_err(errors::engine)?;
    Ok(pb::LeaseRevokeResponse {
        header: svc.header(rev).await,
    })
}

pub async fn time_to_live(
    svc: &Service,
    msg: Bytes,
) -> Result<pb::LeaseTimeToLiveResponse, Status> {
    let r: pb::LeaseTimeToLiveRequest = decode(msg)?;
    let found = svc
        .engine
        .lease_time_to_live(r.id, r.keys)
        .await
        .map_err(errors::engine)?;
    let header = svc.header(svc.engine.sequencer().visible()).await;
    // etcd answers an unknown lease with TTL -1, not an error; etcdctl
    // prints "lease ... already expired" for it.
    Ok(match found {
        None => pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
        Some((granted, remaining, keys)) => pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl: remaining,
            granted_ttl: granted,
            keys: keys.into_iter().map(Bytes::from).collect(),
        },
    })
}

pub async fn leases(svc: &Service, msg: Bytes) -> Result<pb::LeaseLeasesResponse, Status> {
    let _: pb::LeaseLeasesRequest = decode(msg)?;
    let ids = svc.engine.lease_ids().await.map_err(errors::engine)?;
    Ok(pb::LeaseLeasesResponse {
        header: svc.header(svc.engine.sequencer().visible()).await,
        leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
    })
}

/// `/etcdserverpb.Lease/LeaseKeepAlive`: each request renews one lease and
/// is answered in order; an unknown (or expired) lease answers TTL 0, as
/// etcd does. The stream ends when the client closes its side.
pub async fn keep_alive(
    svc: Rc<Service>,
    requests: async_channel::Receiver<Bytes>,
    sink: ResponseSink,
) -> Status {
    while let Ok(msg) = requests.recv().await {
        let req: pb::LeaseKeepAliveRequest = match decode(msg) {
            Ok(r) => r,
            Err(status) => return status,
        };
        let ttl = match svc.engine.lease_renew(req.id).await {
            Ok(ttl) => ttl,
            Err(EngineError::LeaseNotFound) => 0,
            Err(e) => return errors::engine(e),
        };
        let resp = pb::LeaseKeepAliveResponse {
            header: svc.header(svc.engine.sequencer().visible()).await,
            id: req.id,
            ttl,
        };
        if !sink.send(Bytes::from(resp.encode_to_vec())).await {
            return Status::new(Code::Canceled, "context canceled");
        }
    }
    Status::new(Code::Ok, "")
}
