//! etcd's client-side concurrency recipes (clientv3/concurrency), spoken
//! over the plain v3 API so that they interoperate with every etcd client:
//!
//! - a session is a lease kept alive in the background;
//! - a lock or election entrant is the key `<name>/<lease id in hex>`,
//!   written with that lease if its create revision is 0;
//! - the holder is the key under `<name>/` with the lowest create
//!   revision; an entrant waits for the deletion of every key created
//!   before its own (each watched from the revision it was seen at).

use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
};
use ferrokv_wire::pb::mvccpb::KeyValue;
use tokio::sync::watch;

use crate::client::{path, Client, RpcError};

/// clientv3/concurrency's default session TTL.
pub const SESSION_TTL_DEFAULT_S: i64 = 60;

/// Why a recipe stopped.
#[derive(Debug)]
pub enum RecipeError {
    Rpc(RpcError),
    /// The session's lease is gone (expired or revoked).
    SessionExpired,
    /// A watch ended without the event waited for.
    LostWatcher,
}

impl RecipeError {
    pub fn message(&self) -> String {
        match self {
            RecipeError::Rpc(e) => e.message(),
            RecipeError::SessionExpired => "session expired".into(),
            RecipeError::LostWatcher => "lost watcher waiting for delete".into(),
        }
    }
}

impl From<RpcError> for RecipeError {
    fn from(e: RpcError) -> Self {
        RecipeError::Rpc(e)
    }
}

/// A lease kept alive until dropped or revoked; `done` flips to true
/// when the keep-alive learns the lease is gone.
pub struct Session {
    pub client: Client,
    pub lease_id: i64,
    pub timeout: Duration,
    done: watch::Receiver<bool>,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl Session {
    pub async fn new(client: &Client, ttl_s: i64, timeout: Duration) -> Result<Session, RpcError> {
        let grant: LeaseGrantResponse = client
            .unary(
                path::LEASE_GRANT,
                LeaseGrantRequest { ttl: ttl_s, id: 0 },
                timeout,
            )
            .await?;
        let lease_id = grant.id;
        let (done_tx, done) = watch::channel(false);
        let ka_client = client.clone();
        let keep_alive = tokio::spawn(async move {
            let (mut tx, mut rx) = ka_client
                .bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>(path::LEASE_KEEP_ALIVE);
            // clientv3 renews every TTL/3.
            let every = Duration::from_millis(
                ((grant.ttl.max(1) as u64).saturating_mul(1000) / 3).max(500),
            );
            // Renew through lost streams until the TTL has passed since the
            // last renewal; the server says when the lease is gone.
            let mut renewed_until = tokio::time::Instant::now() + every * 3;
            loop {
                let answer = if tx
                    .send(LeaseKeepAliveRequest { id: lease_id })
                    .await
                    .is_err()
                {
                    None
                } else {
                    match tokio::time::timeout(timeout, rx.recv()).await {
                        Ok(Some(Ok(r))) => Some(r),
                        _ => None,
                    }
                };
                match answer {
                    Some(r) if r.ttl > 0 => {
                        renewed_until = crate::cmd::lease::renewal_deadline(r.ttl);
                        tokio::time::sleep(every).await;
                    }
                    Some(_) => break,
                    None if tokio::time::Instant::now() < renewed_until => {
                        ka_client.fail_over();
                        (tx, rx) = ka_client.bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>(
                            path::LEASE_KEEP_ALIVE,
                        );
                        tokio::time::sleep(crate::cmd::lease::KEEP_ALIVE_RECONNECT_PAUSE).await;
                    }
                    None => break,
                }
            }
            let _ = done_tx.send(true);
        });
        Ok(Session {
            client: client.clone(),
            lease_id,
            timeout,
            done,
            keep_alive,
        })
    }

    /// Resolves when the lease is known to be gone.
    pub async fn expired(&self) {
        let mut done = self.done.clone();
        while !*done.borrow() {
            if done.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops the keep-alive and revokes the lease (its keys go with it).
    pub async fn close(self) {
        self.keep_alive.abort();
        let _: Result<LeaseRevokeResponse, _> = self
            .client
            .unary(
                path::LEASE_REVOKE,
                LeaseRevokeRequest { id: self.lease_id },
                self.timeout,
            )
            .await;
    }

    /// `<prefix><lease id in hex>`, the session's key under a prefix.
    pub fn key_under(&self, prefix: &[u8]) -> Bytes {
        let mut k = prefix.to_vec();
        k.extend_from_slice(format!("{:x}", self.lease_id).as_bytes());
        Bytes::from(k)
    }
}

fn first_or_last_created(prefix: &[u8], descend: bool, max_create_rev: i64) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: Bytes::from(crate::cmd::kv::prefix_end(prefix)),
        limit: 1,
        sort_order: if descend { 2 } else { 1 },
        sort_target: 2,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

/// Creates the session's key under `prefix` with `value` if it does not
/// exist; returns the txn response and the key's create revision.
async fn enter(
    s: &Session,
    prefix: &[u8],
    value: &[u8],
) -> Result<(Bytes, i64, TxnResponse), RecipeError> {
    let key = s.key_under(prefix);
    let req = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        }],
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: Bytes::copy_from_slice(value),
                    lease: s.lease_id,
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestRange(first_or_last_created(
                    prefix, false, 0,
                ))),
            },
        ],
        failure: vec![
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestRange(first_or_last_created(
                    prefix, false, 0,
                ))),
            },
        ],
    };
    let resp: TxnResponse = s.client.unary(path::TXN, req, s.timeout).await?;
    let mut my_rev = resp.header.map_or(0, |h| h.revision);
    if !resp.succeeded {
        if let Some(response_op::Response::ResponseRange(r)) =
            resp.responses.first().and_then(|r| r.response.as_ref())
        {
            if let Some(kv) = r.kvs.first() {
                my_rev = kv.create_revision;
            }
        }
    }
    Ok((key, my_rev, resp))
}

/// Waits until no key under `prefix` created at or before `max_create_rev`
/// is left (clientv3/concurrency's `waitDeletes`).
async fn wait_deletes(
    client: &Client,
    prefix: &[u8],
    max_create_rev: i64,
    timeout: Duration,
) -> Result<ResponseHeader, RecipeError> {
    loop {
        let resp: RangeResponse = client
            .unary(
                path::RANGE,
                first_or_last_created(prefix, true, max_create_rev),
                timeout,
            )
            .await?;
        let Some(last) = resp.kvs.first() else {
            return Ok(resp.header.unwrap_or_default());
        };
        let from = resp.header.map_or(0, |h| h.revision);
        wait_delete(client, last.key.clone(), from).await?;
    }
}

/// Watches `key` from `rev` until it is deleted.
async fn wait_delete(client: &Client, key: Bytes, rev: i64) -> Result<(), RecipeError> {
    let (_tx, mut rx) = client
        .watch(WatchCreateRequest {
            key,
            start_revision: rev,
            ..Default::default()
        })
        .await
        .ok_or(RecipeError::LostWatcher)?;
    while let Some(msg) = rx.recv().await {
        let resp = msg?;
        if resp.events.iter().any(|e| e.r#type == 1) {
            return Ok(());
        }
        if resp.canceled {
            break;
        }
    }
    Err(RecipeError::LostWatcher)
}

/// A held lock: its key and the revision it was acquired at.
pub struct LockGuard {
    pub key: Bytes,
    pub header: ResponseHeader,
}

/// Acquires the lock `name` for the session (clientv3's `Mutex.Lock`).
pub async fn lock(s: &Session, name: &[u8]) -> Result<LockGuard, RecipeError> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let (key, my_rev, resp) = enter(s, &prefix, b"").await?;
    let owner: Vec<KeyValue> = match resp.responses.get(1).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
        _ => Vec::new(),
    };
    if owner.is_empty() || owner[0].create_revision == my_rev {
        return Ok(LockGuard {
            key,
            header: resp.header.unwrap_or_default(),
        });
    }
    let header = match wait_deletes(&s.client, &prefix, my_rev - 1, s.timeout).await {
        Ok(h) => h,
        Err(e) => {
            let _ = delete(&s.client, key.clone(), s.timeout).await;
            return Err(e);
        }
    };
    let mine: RangeResponse = s
        .client
        .unary(
            path::RANGE,
            RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
            s.timeout,
        )
        .await?;
    if mine.kvs.is_empty() {
        return Err(RecipeError::SessionExpired);
    }
    Ok(LockGuard { key, header })
}

pub async fn delete(client: &Client, key: Bytes, timeout: Duration) -> Result<(), RpcError> {
    let _: DeleteRangeResponse = client
        .unary(
            path::DELETE_RANGE,
            DeleteRangeRequest {
                key,
                ..Default::default()
            },
            timeout,
        )
        .await?;
    Ok(())
}

/// Campaigns in election `name` with `value` until elected (clientv3's
/// `Election.Campaign`); returns the leader key.
pub async fn campaign(s: &Session, name: &[u8], value: &[u8]) -> Result<Bytes, RecipeError> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let (key, my_rev, resp) = enter(s, &prefix, value).await?;
    if !resp.succeeded {
        let current = match resp.responses.first().and_then(|r| r.response.as_ref()) {
            Some(response_op::Response::ResponseRange(r)) => {
                r.kvs.first().map(|kv| kv.value.clone())
            }
            _ => None,
        };
        if current.as_deref() != Some(value) {
            // Proclaim: rewrite the value, keeping the lease.
            let _: ferrokv_wire::pb::etcdserverpb::PutResponse = s
                .client
                .unary(
                    path::PUT,
                    PutRequest {
                        key: key.clone(),
                        value: Bytes::copy_from_slice(value),
                        lease: s.lease_id,
                        ..Default::default()
                    },
                    s.timeout,
                )
                .await?;
        }
    }
    if let Err(e) = wait_deletes(&s.client, &prefix, my_rev - 1, s.timeout).await {
        let _ = delete(&s.client, key.clone(), s.timeout).await;
        return Err(e);
    }
    Ok(key)
}

/// Streams the leader of election `name` as etcdctl's `elect -l` prints
/// it: the current leader's key-value, then each change of its value,
/// then the next leader when it resigns (clientv3's `Election.Observe`).
pub async fn observe(
    client: &Client,
    name: &[u8],
    timeout: Duration,
    mut on_leader: impl FnMut(RangeResponse) -> Result<(), String>,
) -> Result<(), RecipeError> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    loop {
        let resp: RangeResponse = client
            .unary(
                path::RANGE,
                first_or_last_created(&prefix, false, 0),
                timeout,
            )
            .await?;
        let (header, kv) = match resp.kvs.first() {
            Some(kv) => (resp.header.unwrap_or_default(), kv.clone()),
            None => {
                let from = resp.header.map_or(0, |h| h.revision);
                wait_first_put(client, &prefix, from).await?
            }
        };
        on_leader(RangeResponse {
            header: Some(header),
            kvs: vec![kv.clone()],
            ..Default::default()
        })
        .map_err(|_| RecipeError::LostWatcher)?;
        // Follow the leader key until it is deleted.
        let (_tx, mut rx) = client
            .watch(WatchCreateRequest {
                key: kv.key.clone(),
                start_revision: header.revision + 1,
                ..Default::default()
            })
            .await
            .ok_or(RecipeError::LostWatcher)?;
        'follow: loop {
            let Some(msg) = rx.recv().await else {
                return Err(RecipeError::LostWatcher);
            };
            let wr = msg?;
            for ev in &wr.events {
                if ev.r#type == 1 {
                    break 'follow;
                }
                on_leader(RangeResponse {
                    header: wr.header,
                    kvs: ev.kv.clone().into_iter().collect(),
                    ..Default::default()
                })
                .map_err(|_| RecipeError::LostWatcher)?;
            }
            if wr.canceled {
                return Err(RecipeError::LostWatcher);
            }
        }
    }
}

/// The first put under `prefix` from revision `rev` on.
async fn wait_first_put(
    client: &Client,
    prefix: &[u8],
    rev: i64,
) -> Result<(ResponseHeader, KeyValue), RecipeError> {
    let (_tx, mut rx) = client
        .watch(WatchCreateRequest {
            key: Bytes::copy_from_slice(prefix),
            range_end: Bytes::from(crate::cmd::kv::prefix_end(prefix)),
            start_revision: rev,
            ..Default::default()
        })
        .await
        .ok_or(RecipeError::LostWatcher)?;
    while let Some(msg) = rx.recv().await {
        let wr = msg?;
        if let Some(kv) = wr
            .events
            .iter()
            .find(|e| e.r#type == 0)
            .and_then(|e| e.kv.clone())
        {
            let mut header = wr.header.unwrap_or_default();
            header.revision = kv.mod_revision;
            return Ok((header, kv));
        }
        if wr.canceled {
            break;
        }
    }
    Err(RecipeError::LostWatcher)
}
