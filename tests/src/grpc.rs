//! A small etcd v3 gRPC client for stream-level tests: tonic's generic
//! client with the prost types of `ferrokv-wire` and the method path, so no
//! generated stubs exist. Every call and every awaited message is bounded
//! by [`CALL_TIMEOUT`]; a failure panics with the method and the status.

use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RequestOp, TxnRequest, TxnResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use crate::server::ServerProcess;

/// Bound on one unary call or one awaited stream message.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than any response the tests provoke (watch fragments stay
/// below 2.1 MiB).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Requests a test may queue on one stream before the server reads them.
const STREAM_REQUESTS_PENDING_MAX: usize = 64;

pub async fn connect(server: &ServerProcess) -> Channel {
    let endpoint = Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .connect_timeout(CALL_TIMEOUT);
    tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .expect("connect within bound")
        .expect("connect")
}

/// A channel to `endpoint` that connects at its first call and again after
/// a broken connection, so a load can run across a member's kill and
/// restart (a call to a member that is down fails with `Unavailable`).
/// Needs a tokio runtime context.
pub fn connect_lazy(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect_timeout(CALL_TIMEOUT)
        .connect_lazy()
}

/// One unary call; the server's error status is returned, a call with no
/// answer within [`CALL_TIMEOUT`] panics.
pub async fn try_unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    match try_unary_within(channel, path, req, CALL_TIMEOUT).await {
        Some(result) => result,
        None => panic!("{path}: no answer within {CALL_TIMEOUT:?}"),
    }
}

/// One unary call bounded by `bound`: `None` if no answer came in time
/// (for calls that may legitimately hang, e.g. to a stopped member).
pub async fn try_unary_within<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    req: Req,
    bound: Duration,
) -> Option<Result<Resp, tonic::Status>>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    try_unary_as(channel, path, req, None, bound).await
}

/// [`try_unary_within`] carrying an auth token as clientv3 sends it (gRPC
/// metadata `token`).
pub async fn try_unary_as<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    req: Req,
    token: Option<&str>,
    bound: Duration,
) -> Option<Result<Resp, tonic::Status>>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut request = tonic::Request::new(req);
    if let Some(t) = token {
        match t.parse() {
            Ok(v) => {
                request.metadata_mut().insert("token", v);
            }
            Err(_) => return Some(Err(tonic::Status::invalid_argument("token is not ASCII"))),
        }
    }
    let call = async {
        let mut grpc =
            tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
    };
    tokio::time::timeout(bound, call).await.ok()
}

/// One unary call that must succeed.
pub async fn unary<Req, Resp>(channel: &Channel, path: &'static str, req: Req) -> Resp
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    match try_unary(channel, path, req).await {
        Ok(resp) => resp,
        Err(status) => panic!("{path}: {status}"),
    }
}

/// Put with a lease (0: none); the revision.
pub async fn put_with_lease(
    channel: &Channel,
    key: &str,
    value: impl Into<Bytes>,
    lease: i64,
) -> i64 {
    let req = PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: value.into(),
        lease,
        ..Default::default()
    };
    let resp: PutResponse = unary(channel, "/etcdserverpb.KV/Put", req).await;
    resp.header.expect("header").revision
}

pub async fn put(channel: &Channel, key: &str, value: impl Into<Bytes>) -> i64 {
    put_with_lease(channel, key, value, 0).await
}

/// Deletes one existing key; the revision.
pub async fn delete(channel: &Channel, key: &str) -> i64 {
    let req = DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    let resp: DeleteRangeResponse = unary(channel, "/etcdserverpb.KV/DeleteRange", req).await;
    assert_eq!(resp.deleted, 1, "delete {key}");
    resp.header.expect("header").revision
}

/// One unconditional txn putting every `(key, value)`; its revision.
pub async fn txn_puts(channel: &Channel, kvs: Vec<(String, Bytes)>) -> i64 {
    let success = kvs
        .into_iter()
        .map(|(k, v)| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into_bytes().into(),
                value: v,
                ..Default::default()
            })),
        })
        .collect();
    let req = TxnRequest {
        success,
        ..Default::default()
    };
    let resp: TxnResponse = unary(channel, "/etcdserverpb.KV/Txn", req).await;
    assert!(resp.succeeded);
    resp.header.expect("header").revision
}

pub async fn compact(channel: &Channel, revision: i64) {
    let req = CompactionRequest {
        revision,
        physical: true,
    };
    let _: CompactionResponse = unary(channel, "/etcdserverpb.KV/Compact", req).await;
}

/// The range end of every key starting with `prefix` (etcd's prefix form).
pub fn prefix_end(prefix: &str) -> Bytes {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end.into()
}

/// One bidirectional stream (Watch, LeaseKeepAlive).
pub struct BidiStream<Req, Resp> {
    tx: mpsc::Sender<Req>,
    rx: Streaming<Resp>,
}

impl<Req, Resp> BidiStream<Req, Resp>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    /// Opens a stream whose first request is `first` (sent before the call,
    /// since a server may send its response headers only with a response).
    pub async fn open(channel: &Channel, path: &'static str, first: Req) -> Self {
        let (tx, rx) = mpsc::channel(STREAM_REQUESTS_PENDING_MAX);
        tx.send(first).await.expect("queue first request");
        let call = async {
            let mut grpc =
                tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
            grpc.ready().await.expect("connection ready");
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_or_else(|status| panic!("open {path}: {status}"))
            .into_inner()
        };
        let rx = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| panic!("{path} opened within {CALL_TIMEOUT:?}"));
        BidiStream { tx, rx }
    }

    pub async fn send(&self, req: Req) {
        tokio::time::timeout(CALL_TIMEOUT, self.tx.send(req))
            .await
            .expect("request queued within bound")
            .expect("stream open");
    }

    /// Queues `req` unless the stream stays full for `bound` (the server
    /// stopped reading): whether it was queued.
    pub async fn send_within(&self, req: Req, bound: Duration) -> bool {
        matches!(
            tokio::time::timeout(bound, self.tx.send(req)).await,
            Ok(Ok(()))
        )
    }

    /// Half-closes the stream: the server sees the end of the requests.
    pub fn close_send(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
    }

    /// The next message, or None if none arrives within `bound`.
    pub async fn next_within(&mut self, bound: Duration) -> Option<Resp> {
        match tokio::time::timeout(bound, self.rx.message()).await {
            Err(_) => None,
            Ok(Ok(Some(resp))) => Some(resp),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => panic!("stream failed: {status}"),
        }
    }

    pub async fn next(&mut self) -> Resp {
        self.next_within(CALL_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no stream message within {CALL_TIMEOUT:?}"))
    }
}
