//! Entry points for the fuzz targets (`fuzz/`) and the stable-Rust replay
//! of their corpora (`tests/tests/fuzz_corpus.rs`): what a client sends to
//! the client port. Each panics only on a bug.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;

use crate::conn::{Caller, Handler, HttpReply, LocalBoxFuture, ResponseSink, GRPC_OVERHEAD_BYTES};
use crate::grpc::{decode, Code, FrameDecoder, Status};
use crate::pb::etcdserverpb as pb;

/// etcd's default `--max-request-bytes`.
const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Decodes `bytes` as the request message of `method` (the gRPC path), as
/// the server's services do; what decodes must re-encode to a message
/// that decodes the same. Unknown methods decode nothing.
pub fn request(method: &str, bytes: Bytes) -> Result<(), Status> {
    fn check<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
        bytes: Bytes,
    ) -> Result<(), Status> {
        let m: M = decode(bytes)?;
        let again: M = decode(Bytes::from(m.encode_to_vec())).expect("a decoded message encodes");
        assert_eq!(again, m);
        Ok(())
    }
    let name = method.rsplit('/').next().unwrap_or_default();
    match name {
        "Range" => check::<pb::RangeRequest>(bytes),
        "Put" => check::<pb::PutRequest>(bytes),
        "DeleteRange" => check::<pb::DeleteRangeRequest>(bytes),
        "Txn" => check::<pb::TxnRequest>(bytes),
        "Compact" => check::<pb::CompactionRequest>(bytes),
        "Watch" => check::<pb::WatchRequest>(bytes),
        "LeaseGrant" => check::<pb::LeaseGrantRequest>(bytes),
        "LeaseRevoke" => check::<pb::LeaseRevokeRequest>(bytes),
        "LeaseKeepAlive" => check::<pb::LeaseKeepAliveRequest>(bytes),
        "LeaseTimeToLive" => check::<pb::LeaseTimeToLiveRequest>(bytes),
        "LeaseLeases" => check::<pb::LeaseLeasesRequest>(bytes),
        "MemberAdd" => check::<pb::MemberAddRequest>(bytes),
        "MemberRemove" => check::<pb::MemberRemoveRequest>(bytes),
        "MemberUpdate" => check::<pb::MemberUpdateRequest>(bytes),
        "MemberList" => check::<pb::MemberListRequest>(bytes),
        "MemberPromote" => check::<pb::MemberPromoteRequest>(bytes),
        "Alarm" => check::<pb::AlarmRequest>(bytes),
        "Status" => check::<pb::StatusRequest>(bytes),
        "Defragment" => check::<pb::DefragmentRequest>(bytes),
        "Hash" => check::<pb::HashRequest>(bytes),
        "HashKV" => check::<pb::HashKvRequest>(bytes),
        "Snapshot" => check::<pb::SnapshotRequest>(bytes),
        "MoveLeader" => check::<pb::MoveLeaderRequest>(bytes),
        "Authenticate" => check::<pb::AuthenticateRequest>(bytes),
        "UserAdd" => check::<pb::AuthUserAddRequest>(bytes),
        "RoleGrantPermission" => check::<pb::AuthRoleGrantPermissionRequest>(bytes),
        _ => Ok(()),
    }
}

/// The methods `grpc` chooses from (by the input's second byte).
pub const METHODS: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
    "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd",
    "/etcdserverpb.Auth/RoleGrantPermission",
];

/// A gRPC request body: the first byte sets the size of the chunks it
/// arrives in (HTTP/2 DATA frames cut it anywhere), the second the
/// method from `METHODS`; the rest is length-prefixed messages.
pub fn grpc(data: &[u8]) {
    let [chunk, method, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*method) % METHODS.len()];
    let mut dec = FrameDecoder::new(MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES);
    for c in body.chunks(usize::from(*chunk) + 1) {
        dec.push(c);
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => {
                    let _ = request(method, msg);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A JSON gateway request body: the first byte chooses the path (of the
/// gateway's routes), the second the size of the chunks the body arrives
/// in; the rest is the body, JSON values one after another as a stream's
/// requests are. Each value is decoded as the gateway does; what decodes
/// must be a request prost decodes, and print as JSON that reads back the
/// same.
pub fn gateway(data: &[u8]) {
    let [route, chunk, body @ ..] = data else {
        return;
    };
    crate::gateway::check_body(
        usize::from(*route),
        usize::from(*chunk) + 1,
        body,
        MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES,
    );
}

/// The first byte of a `gateway` input that chooses `path`.
pub fn gateway_route(path: &str) -> Option<u8> {
    crate::gateway::route_index(path).and_then(|i| u8::try_from(i).ok())
}

/// The bytes a client sends on one connection, served by the real
/// HTTP/2 (input starting with the prior-knowledge preface) or HTTP/1.1
/// stack, with a handler that decodes each gRPC request as the server
/// would and answers at once.
pub fn connection(data: &[u8]) {
    thread_local! {
        static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::new(
            glommio::Placement::Unbound,
        )
        .make()
        .expect("a glommio executor starts");
    }
    let is_h2 = data.starts_with(b"PRI ");
    let io = ClientBytes {
        data: data.to_vec(),
        at: 0,
        idle_polls: 0,
    };
    EXECUTOR.with(|ex| {
        ex.run(async move {
            crate::conn::serve_http(io, is_h2, Rc::new(Decoding), None).await;
            // Let the request tasks hyper spawned see the connection end.
            for _ in 0..TASK_DRAIN_YIELDS {
                futures_lite::future::yield_now().await;
            }
        })
    });
}

/// Polls a finished connection's request tasks get to wind down.
const TASK_DRAIN_YIELDS: usize = 64;
/// Times a read past the input answers "not yet" before end of stream, so
/// that requests already received reach the handler before the
/// connection closes.
const IDLE_POLLS_BEFORE_EOF: usize = 32;

struct ClientBytes {
    data: Vec<u8>,
    at: usize,
    idle_polls: usize,
}

impl futures_lite::AsyncRead for ClientBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let rest = &this.data[this.at..];
        if rest.is_empty() {
            if this.idle_polls < IDLE_POLLS_BEFORE_EOF {
                this.idle_polls += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Ok(0));
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        this.at += n;
        Poll::Ready(Ok(n))
    }
}

impl futures_lite::AsyncWrite for ClientBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A handler that decodes what it is given, as the server's would, and
/// answers with an empty message.
struct Decoding;

impl Handler for Decoding {
    fn unary(
        self: Rc<Self>,
        method: String,
        _caller: Caller,
        msg: Bytes,
    ) -> LocalBoxFuture<Result<Bytes, Status>> {
        Box::pin(async move { request(&method, msg).map(|()| Bytes::new()) })
    }

    fn is_streaming(&self, method: &str) -> bool {
        matches!(
            method,
            "/etcdserverpb.Watch/Watch"
                | "/etcdserverpb.Lease/LeaseKeepAlive"
                | "/etcdserverpb.Maintenance/Snapshot"
        )
    }

    fn streaming(
        self: Rc<Self>,
        method: String,
        _caller: Caller,
        requests: async_channel::Receiver<Bytes>,
        sink: ResponseSink,
    ) -> LocalBoxFuture<Status> {
        Box::pin(async move {
            while let Ok(msg) = requests.recv().await {
                if let Err(status) = request(&method, msg) {
                    return status;
                }
                if !sink.send(Bytes::new()).await {
                    break;
                }
            }
            Status::new(Code::Ok, "")
        })
    }

    fn http(
        self: Rc<Self>,
        _: Method,
        path: String,
        body: Bytes,
    ) -> LocalBoxFuture<Option<HttpReply>> {
        Box::pin(async move {
            (path == "/health").then_some(HttpReply {
                status: 200,
                content_type: "text/plain",
                body,
            })
        })
    }

    fn max_request_bytes(&self) -> usize {
        MAX_REQUEST_BYTES
    }
}
