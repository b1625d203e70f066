//! What etcd's v3lock and v3election services share: they run etcd's
//! client-side recipe (clientv3/concurrency: Session, Mutex, Election)
//! inside the server, through an in-process client. Here the recipe runs on
//! the engine's own calls, with the recipe's keys and requests, so a
//! client-side holder (`etcdctl lock`, `etcdctl elect`) and a server-side
//! one wait for each other.
//!
//! A candidate for the lock or election `name` is the key
//! `name/<session lease in hex>`, attached to that lease; candidates are
//! served in create-revision order, so the owner is the oldest key under
//! `name/`. A candidate waits (by watch, never by polling) until every older
//! key is deleted.

use std::rc::Rc;

use bytes::Bytes;
use ferrokv_shards::watch::{KeyRange, WatchHub, WatchOut, WatchSpec, WatchStream};
use ferrokv_wire::grpc::Status;
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb;
use ferrokv_wire::Message;

use crate::service::Service;
use crate::{errors, lease, validate};

/// clientv3/concurrency's `defaultSessionTTL`: the TTL of the lease etcd
/// grants for a request that names none (lease 0).
pub const SESSION_TTL_S: i64 = 60;

/// The lease a request's session runs on: its own, or a new one of the
/// default session TTL when it names none. etcd orphans the session at
/// once, so nothing keeps that lease alive: it expires unless the client
/// renews it.
pub async fn session_lease(svc: &Service, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let req = pb::LeaseGrantRequest {
        ttl: SESSION_TTL_S,
        id: 0,
    };
    let granted = lease::grant_request(svc, req)
        .await
        .map_err(errors::through_client)?;
    Ok(granted.id)
}

/// The keys of the candidates of `name`: `name/...`.
pub fn candidates(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A session's candidate key: the prefix and the lease id as Go's `%x`
/// prints an int64 (a sign, then the magnitude).
pub fn candidate_key(prefix: &[u8], lease: i64) -> Bytes {
    let sign = if lease < 0 { "-" } else { "" };
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    Bytes::from(key)
}

/// The range end of every key under a prefix ending in `/` (clientv3's
/// `GetPrefixRangeEnd`: the last byte plus one; `/` is never 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Bytes::from(end)
}

/// `compare create_revision(key) == rev`.
pub fn created_at(key: &Bytes, rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub fn put_op(key: &Bytes, value: Bytes, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub fn get_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: &Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )),
    }
}

/// clientv3's `WithFirstCreate` (ascending) and `WithLastCreate`
/// (descending): the one key under `prefix` with the lowest or highest
/// create revision.
pub fn by_create(prefix: &[u8], order: pb::range_request::SortOrder) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        ..Default::default()
    }
}

pub fn first_create_op(prefix: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(by_create(
            prefix,
            pb::range_request::SortOrder::Ascend,
        ))),
    }
}

/// The first key of a range answer inside a txn answer.
pub fn first_kv(resp: &pb::TxnResponse, op: usize) -> Option<&mvccpb::KeyValue> {
    match resp.responses.get(op)?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => r.kvs.first(),
        _ => None,
    }
}

/// The session's key as a candidacy txn that found it read it (its first
/// answer): the key exists then, since the txn's compare said so.
pub fn existing_own_key(entered: &pb::TxnResponse) -> Result<&mvccpb::KeyValue, Status> {
    first_kv(entered, 0).ok_or_else(|| {
        engine_error(ferrokv_shards::Error::Internal(
            "a candidate key vanished inside its own txn".into(),
        ))
    })
}

pub fn revision(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// An engine error as etcd's in-process client reports it.
pub fn engine_error(e: ferrokv_shards::Error) -> Status {
    errors::through_client(errors::engine(e))
}

/// etcd measures every request its in-process client proposes against
/// `--max-request-bytes`.
fn check_size<M: Message>(svc: &Service, m: &M) -> Result<(), Status> {
    if m.encoded_len() > svc.max_request_bytes {
        return Err(errors::through_client(errors::request_too_large()));
    }
    Ok(())
}

/// A txn as the KV service runs it (etcd's quota check included), with
/// its errors as the in-process client reports them.
pub async fn txn(svc: &Service, t: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    check_size(svc, &t)?;
    if svc.alarms.nospace() && validate::has_put(&t) {
        return Err(errors::through_client(errors::no_space()));
    }
    svc.engine.txn(t).await.map_err(engine_error)
}

/// A (linearizable) range, errors as the in-process client reports them.
pub async fn range(svc: &Service, r: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    svc.engine.range(r).await.map_err(engine_error)
}

/// A delete, errors as the in-process client reports them.
pub async fn delete(
    svc: &Service,
    d: pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, Status> {
    validate::delete(&d).map_err(errors::through_client)?;
    check_size(svc, &d)?;
    svc.engine.delete_range(d).await.map_err(engine_error)
}

/// Takes a candidate back when its call ends before it owns the lock or
/// leads: etcd does it when the call's context ends (the client canceled
/// or its deadline passed), which here is the call's future being dropped.
/// Armed with the txn that withdraws (a delete, or a delete if the key
/// still has its create revision).
pub struct Withdraw {
    svc: Rc<Service>,
    txn: Option<pb::TxnRequest>,
}

impl Withdraw {
    pub fn new(svc: Rc<Service>, txn: pb::TxnRequest) -> Withdraw {
        Withdraw {
            svc,
            txn: Some(txn),
        }
    }

    /// The call ends with the candidate in place.
    pub fn disarm(mut self) {
        self.txn = None;
    }

    /// Withdraw before answering (etcd's answer waits for it too); its own
    /// failure is not reported, as etcd ignores it.
    pub async fn now(mut self) {
        if let Some(t) = self.txn.take() {
            let _ = self.svc.engine.txn(t).await;
        }
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(t) = self.txn.take() {
            // The dropped call cannot wait for it: it runs on its own, on
            // this core, bounded by the engine's request timeout.
            let svc = self.svc.clone();
            glommio::spawn_local(async move {
                if let Err(e) = svc.engine.txn(t).await {
                    log::warn!("withdrawing a canceled lock or election candidate: {e}");
                }
            })
            .detach();
        }
    }
}

/// Watchers on this core's hub whose responses come to one queue; all of
/// them are released when it is dropped, however the call ends.
pub struct Watches {
    hub: Rc<WatchHub>,
    queue: Rc<WatchStream>,
    /// (watch id, hub key) of the live watchers.
    live: Vec<(i64, u64)>,
    next_id: i64,
}

impl Watches {
    pub fn new(svc: &Service) -> Watches {
        Watches {
            hub: svc.hub.clone(),
            queue: Rc::new(WatchStream::default()),
            live: Vec::new(),
            next_id: 0,
        }
    }

    /// Watch every change of `range` from revision `from` on (history
    /// first when `from` is already past). Returns the watcher's id, which
    /// the responses carry; ids are never reused, so a response of a
    /// canceled watcher still queued is told apart.
    pub fn watch(&mut self, range: KeyRange, from: i64) -> i64 {
        debug_assert!(from > 0, "a start revision, not 'from now'");
        let id = self.next_id;
        self.next_id += 1;
        let spec = WatchSpec {
            range,
            start_rev: from,
            no_put: false,
            no_delete: false,
            prev_kv: false,
        };
        let key = self.hub.watch(&self.queue, id, spec);
        self.live.push((id, key));
        id
    }

    pub fn cancel(&mut self, id: i64) {
        if let Some(i) = self.live.iter().position(|(w, _)| *w == id) {
            let (_, key) = self.live.swap_remove(i);
            self.hub.cancel(key);
        }
    }

    /// The next response of any watcher: events (taken off the hub's
    /// per-watcher bound at once), or a compaction that ended the watcher.
    pub async fn next(&mut self) -> WatchOut {
        let out = self.queue.next().await;
        if let Some(key) = out.hub_key {
            self.hub.sent(key, out.events.len());
        }
        if out.compact_revision != 0 {
            self.live.retain(|(w, _)| *w != out.watch_id);
        }
        out
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for (_, key) in self.live.drain(..) {
            self.hub.cancel(key);
        }
    }
}

/// One key, to watch.
pub fn key_range(key: &[u8]) -> KeyRange {
    KeyRange::Key(key.to_vec())
}

/// Every key under a prefix ending in `/`, to watch.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    KeyRange::Between(prefix.to_vec(), prefix_end(prefix).to_vec())
}

pub fn is_delete(e: &ferrokv_shards::watch::SharedEvent) -> bool {
    e.event.kind == ferrokv_mvcc::EventKind::Delete
}

/// Why a candidate stopped waiting without its turn.
pub enum WaitError {
    /// Its own key was deleted: its lease was revoked or expired (or
    /// someone deleted the key).
    Lost,
    /// A read or watch failed (e.g. the history it needed was compacted).
    Failed(Status),
}

/// clientv3/concurrency's `waitDeletes`: waits until no key under `prefix`
/// has a create revision <= `max_create_rev`, one at a time from the
/// youngest, and returns the revision of the read that found none. Unlike
/// etcd 3.4 it also minds the candidate's own key `own` (watched from
/// revision `own_from`, and read with the others at one revision): a
/// candidate whose key is gone (its lease ended) never gets its turn, so it
/// stops at once instead of being told it owns a key that no longer exists.
pub async fn wait_deletes(
    svc: &Service,
    prefix: &[u8],
    max_create_rev: i64,
    own: &Bytes,
    own_from: i64,
) -> Result<i64, WaitError> {
    let mut watches = Watches::new(svc);
    let own_id = watches.watch(key_range(own), own_from);
    let mut newest_older = by_create(prefix, pb::range_request::SortOrder::Descend);
    newest_older.max_create_revision = max_create_rev;
    let check = pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(newest_older)),
            },
            get_op(own),
        ],
        ..Default::default()
    };
    loop {
        let r = txn(svc, check.clone()).await.map_err(WaitError::Failed)?;
        let read_rev = revision(&r.header);
        if first_kv(&r, 1).is_none() {
            return Err(WaitError::Lost);
        }
        let Some(older) = first_kv(&r, 0) else {
            return Ok(read_rev);
        };
        // The key exists at read_rev: its delete comes later.
        let awaited = watches.watch(key_range(&older.key), read_rev + 1);
        loop {
            let out = watches.next().await;
            if out.compact_revision != 0 && (out.watch_id == own_id || out.watch_id == awaited) {
                let compacted = engine_error(ferrokv_shards::Error::Compacted);
                return Err(WaitError::Failed(compacted));
            }
            let deleted = out.events.iter().any(|e| is_delete(e));
            if deleted && out.watch_id == own_id {
                return Err(WaitError::Lost);
            }
            if deleted && out.watch_id == awaited {
                break;
            }
        }
        watches.cancel(awaited);
    }
}
