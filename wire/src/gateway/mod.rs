//! The JSON gateway on the client port, as etcd 3.4.23 serves it
//! (grpc-gateway 1.x with jsonpb, `embed/serve.go`): `POST /v3/kv/put` with
//! a JSON body becomes the protobuf request of `/etcdserverpb.KV/Put`, is
//! served by the same [`Handler`] call a gRPC client reaches, and the
//! answer (or its gRPC status) goes back as JSON. Streaming calls answer
//! one `{"result":...}` object per line. Which fields and words appear is
//! pinned against real etcd by `tests/tests/gateway.rs`; `docs/gateway.md`
//! says what differs.

mod gohttp;
mod golang;
mod scan;
mod schema;
mod transcode;
mod websocket;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::conn::{
    drain, receive_limit_bytes, Body, Caller, Handler, ResponseSink, StreamItem,
    STREAM_RESPONSES_PENDING_MAX,
};
use crate::grpc::{message_too_large, Code, Status};
use gohttp::{canonical_header_key, query_error, timeout_decode, FormCheck};
pub(crate) use gohttp::{redirect_location, unescape_path};
use scan::{Op, Scanner};
use schema::{schema, Method as GrpcMethod, Schema};
use transcode::{from_json, to_json, DecodeError};
pub(crate) use websocket::Pending;

/// The paths etcd 3.4.23's gateway serves (its `*.pb.gw.go`), each with
/// the gRPC method it calls, in etcd's registration order: the first
/// match wins, as in grpc-gateway's mux. `HashKV` is registered under
/// `/v3/maintenance/hash` too, after `Hash`, so etcd never reaches it
/// there, and neither does ferrokv. `AuthStatus` has no path in 3.4.
const ROUTES: &[(&str, &str)] = &[
    ("/v3/kv/range", "/etcdserverpb.KV/Range"),
    ("/v3/kv/put", "/etcdserverpb.KV/Put"),
    ("/v3/kv/deleterange", "/etcdserverpb.KV/DeleteRange"),
    ("/v3/kv/txn", "/etcdserverpb.KV/Txn"),
    ("/v3/kv/compaction", "/etcdserverpb.KV/Compact"),
    ("/v3/watch", "/etcdserverpb.Watch/Watch"),
    ("/v3/lease/grant", "/etcdserverpb.Lease/LeaseGrant"),
    ("/v3/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke"),
    ("/v3/kv/lease/revoke", "/etcdserverpb.Lease/LeaseRevoke"),
    ("/v3/lease/keepalive", "/etcdserverpb.Lease/LeaseKeepAlive"),
    (
        "/v3/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
    ),
    (
        "/v3/kv/lease/timetolive",
        "/etcdserverpb.Lease/LeaseTimeToLive",
    ),
    ("/v3/lease/leases", "/etcdserverpb.Lease/LeaseLeases"),
    ("/v3/kv/lease/leases", "/etcdserverpb.Lease/LeaseLeases"),
    ("/v3/cluster/member/add", "/etcdserverpb.Cluster/MemberAdd"),
    (
        "/v3/cluster/member/remove",
        "/etcdserverpb.Cluster/MemberRemove",
    ),
    (
        "/v3/cluster/member/update",
        "/etcdserverpb.Cluster/MemberUpdate",
    ),
    (
        "/v3/cluster/member/list",
        "/etcdserverpb.Cluster/MemberList",
    ),
    (
        "/v3/cluster/member/promote",
        "/etcdserverpb.Cluster/MemberPromote",
    ),
    ("/v3/maintenance/alarm", "/etcdserverpb.Maintenance/Alarm"),
    ("/v3/maintenance/status", "/etcdserverpb.Maintenance/Status"),
    (
        "/v3/maintenance/defragment",
        "/etcdserverpb.Maintenance/Defragment",
    ),
    ("/v3/maintenance/hash", "/etcdserverpb.Maintenance/Hash"),
    (
        "/v3/maintenance/snapshot",
        "/etcdserverpb.Maintenance/Snapshot",
    ),
    (
        "/v3/maintenance/transfer-leadership",
        "/etcdserverpb.Maintenance/MoveLeader",
    ),
    ("/v3/auth/enable", "/etcdserverpb.Auth/AuthEnable"),
    ("/v3/auth/disable", "/etcdserverpb.Auth/AuthDisable"),
    ("/v3/auth/authenticate", "/etcdserverpb.Auth/Authenticate"),
    ("/v3/auth/user/add", "/etcdserverpb.Auth/UserAdd"),
    ("/v3/auth/user/get", "/etcdserverpb.Auth/UserGet"),
    ("/v3/auth/user/list", "/etcdserverpb.Auth/UserList"),
    ("/v3/auth/user/delete", "/etcdserverpb.Auth/UserDelete"),
    (
        "/v3/auth/user/changepw",
        "/etcdserverpb.Auth/UserChangePassword",
    ),
    ("/v3/auth/user/grant", "/etcdserverpb.Auth/UserGrantRole"),
    ("/v3/auth/user/revoke", "/etcdserverpb.Auth/UserRevokeRole"),
    ("/v3/auth/role/add", "/etcdserverpb.Auth/RoleAdd"),
    ("/v3/auth/role/get", "/etcdserverpb.Auth/RoleGet"),
    ("/v3/auth/role/list", "/etcdserverpb.Auth/RoleList"),
    ("/v3/auth/role/delete", "/etcdserverpb.Auth/RoleDelete"),
    (
        "/v3/auth/role/grant",
        "/etcdserverpb.Auth/RoleGrantPermission",
    ),
    (
        "/v3/auth/role/revoke",
        "/etcdserverpb.Auth/RoleRevokePermission",
    ),
    ("/v3/lock/lock", "/v3lockpb.Lock/Lock"),
    ("/v3/lock/unlock", "/v3lockpb.Lock/Unlock"),
    ("/v3/election/campaign", "/v3electionpb.Election/Campaign"),
    ("/v3/election/proclaim", "/v3electionpb.Election/Proclaim"),
    ("/v3/election/leader", "/v3electionpb.Election/Leader"),
    ("/v3/election/observe", "/v3electionpb.Election/Observe"),
    ("/v3/election/resign", "/v3electionpb.Election/Resign"),
];

/// How much larger than the largest request message its JSON may be
/// before the body is refused unread: base64 (4/3) and field names
/// (a txn of many small operations) stay well under it. Go's gateway
/// reads any body; this one holds at most this many times the gRPC limit
/// per request.
const JSON_EXPANSION_MAX: usize = 4;

/// Whether a path belongs to the gateway. etcd 3.4 still answers
/// `/v3beta/` (rewritten to `/v3/`), not `/v3alpha/`.
pub(crate) fn serves(path: &str) -> bool {
    path.starts_with("/v3/") || path.starts_with("/v3beta/")
}

/// The CORS headers etcd's access controller adds to every HTTP answer
/// (its default `--cors` allows any origin).
pub(crate) fn allow_cors(headers: &mut HeaderMap) {
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Canceled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Go's server buffers this much of an answer: one its handler wrote
/// whole within it gets a Content-Length, a longer one is chunked.
const GO_RESPONSE_BUFFER_BYTES: usize = 2048;

/// A form body grpc-gateway's method override makes Go read
/// (`http.Request.ParseForm`'s bound).
const FORM_BYTES_MAX: usize = 10 << 20;

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(Body::Once(Some(body), None));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if len <= GO_RESPONSE_BUFFER_BYTES {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// How Go's server refuses a request whose path does not decode, before
/// any handler (so without etcd's CORS headers).
pub(crate) fn bad_request_closing() -> Response<Body> {
    let mut resp = reply(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"400 Bad Request"),
    );
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// `http.Redirect(w, r, location, 301)` as Go's mux calls it for a path
/// that is not clean: a link in the body for GET only, a content type for
/// GET and HEAD.
pub(crate) fn redirect(method: &Method, location: &str) -> Response<Body> {
    let body = if method == Method::GET {
        let link = gohttp::html_escape(location);
        Bytes::from(format!("<a href=\"{link}\">Moved Permanently</a>.\n\n"))
    } else {
        Bytes::new()
    };
    let len = body.len();
    let mut resp = Response::new(Body::Once((len > 0).then_some(body), None));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    let h = resp.headers_mut();
    if method != Method::HEAD {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(http::header::LOCATION, v);
    }
    if method == Method::GET || method == Method::HEAD {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    resp
}

/// Go's `http.Error(w, message, status)`: how grpc-gateway answers
/// unknown paths and methods under `/v3/`, and Go's mux (`http.NotFound`)
/// any other path nothing serves.
pub(crate) fn go_http_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = format!("{message}\n");
    let mut resp = reply(status, "text/plain; charset=utf-8", Bytes::from(body));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// grpc-gateway's answer for a path or method it has no handler for:
/// the status's own words.
fn text(status: StatusCode) -> Response<Body> {
    go_http_error(status, status.canonical_reason().unwrap_or_default())
}

/// A successful answer; the header is the response metadata etcd's gRPC
/// server sends, which grpc-gateway passes on.
fn ok(body: Response<Body>) -> Response<Body> {
    let mut resp = body;
    resp.headers_mut().insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// grpc-gateway's `DefaultHTTPError` for an error of the gateway itself
/// (the request did not decode, the deadline passed): the errorBody
/// message through jsonpb (empty fields left out).
fn error_reply(status: &Status) -> Response<Body> {
    reply(
        http_status(status.code),
        "application/json",
        error_body(status),
    )
}

/// `DefaultHTTPError` for the status a call answered: its trailer
/// metadata (the `content-type` of the trailers-only gRPC answer) is
/// announced in `Trailer` and follows the chunked body. hyper sends
/// HTTP/1.1 trailers only to a client that asked for them (`TE:
/// trailers`); the header and the chunking are there for every client.
fn call_error_reply(status: &Status) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-trailer-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    let mut resp = Response::new(Body::Once(Some(error_body(status)), Some(trailers)));
    *resp.status_mut() = http_status(status.code);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::TRAILER,
        HeaderValue::from_static("Grpc-Trailer-Content-Type"),
    );
    resp
}

/// A stream whose call failed before its first response: grpc-gateway
/// has its (empty) headers and goes on to `ForwardResponseStream`, which
/// answers the error chunk with the error's status.
fn stream_failed(status: &Status) -> Response<Body> {
    let mut resp = Response::new(Body::Once(Some(stream_error(status)), None));
    *resp.status_mut() = http_status(status.code);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_body(status: &Status) -> Bytes {
    let mut body = String::from("{");
    if !status.message.is_empty() {
        body.push_str("\"error\":");
        golang::push_json_string(&mut body, status.message.as_bytes());
        body.push_str(",\"message\":");
        golang::push_json_string(&mut body, status.message.as_bytes());
        body.push(',');
    }
    body.push_str(&format!("\"code\":{}}}", status.code as u8));
    Bytes::from(body)
}

/// What a client-side deadline makes grpc-go answer.
fn deadline_exceeded() -> Status {
    Status::new(Code::DeadlineExceeded, "context deadline exceeded")
}

/// The chunk grpc-gateway ends a stream with when it fails after its
/// first message (`internal.StreamError` through jsonpb, no newline).
fn stream_error(status: &Status) -> Bytes {
    let http = http_status(status.code);
    let mut out = format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{}",
        status.code as u8,
        http.as_u16()
    );
    if !status.message.is_empty() {
        out.push_str(",\"message\":");
        golang::push_json_string(&mut out, status.message.as_bytes());
    }
    out.push_str(",\"http_status\":");
    golang::push_json_string(
        &mut out,
        http.canonical_reason().unwrap_or_default().as_bytes(),
    );
    out.push_str("}}");
    Bytes::from(out)
}

/// JSON values one after another in a body, split as Go's `json.Decoder`
/// splits them (white space between values, each checked by the scanner
/// as it arrives).
#[derive(Default)]
pub(crate) struct Values {
    buf: BytesMut,
    scanned: usize,
    scanner: Scanner,
}

pub(crate) enum Next {
    Value(Bytes),
    NeedMore,
    /// Only white space is left and the body has ended.
    End,
}

impl Values {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not a whole value yet.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, end: usize) -> Next {
        let value = self.buf.split_to(end).freeze();
        self.scanned = 0;
        self.scanner.reset();
        Next::Value(value)
    }

    /// The next value; `body_ended` says no more bytes will come. An
    /// error is Go's (`unexpected EOF` for a value the body cut short).
    pub(crate) fn next(&mut self, body_ended: bool) -> Result<Next, String> {
        while self.scanned < self.buf.len() {
            let c = self.buf[self.scanned];
            self.scanned += 1;
            match self.scanner.step(c) {
                // The value ended before this byte.
                Op::End => return Ok(self.take(self.scanned - 1)),
                // Go's Decoder does not wait for the byte after a closing
                // bracket: it steps a space instead.
                Op::EndObject | Op::EndArray => {
                    if self.scanner.end_value(b' ') == Op::End {
                        return Ok(self.take(self.scanned));
                    }
                }
                Op::Error => return Err(self.scanner.error()),
                Op::Continue => {}
            }
        }
        if !body_ended {
            return Ok(Next::NeedMore);
        }
        if self.scanner.step(b' ') == Op::End {
            return Ok(self.take(self.scanned));
        }
        if self
            .buf
            .iter()
            .any(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err("unexpected EOF".into());
        }
        Ok(Next::End)
    }
}

/// Why a request could not be made from the body.
pub(crate) enum BadRequest {
    /// Go's words; the code depends on the call (see `serve`).
    Json(String),
    /// Refused by the gateway itself.
    Local(Status),
    /// Over the gRPC limit: etcd's gRPC server refuses it, as the call's
    /// answer.
    TooLarge(Status),
}

impl BadRequest {
    fn answer(self, json_code: Code, streaming: bool) -> Response<Body> {
        match self {
            BadRequest::Json(m) => error_reply(&Status::new(json_code, m)),
            BadRequest::Local(s) => error_reply(&s),
            BadRequest::TooLarge(s) if streaming => stream_failed(&s),
            BadRequest::TooLarge(s) => call_error_reply(&s),
        }
    }
}

/// One JSON value as the request message of `method`, within the gRPC
/// limit the server applies to every message it receives.
pub(crate) fn request(
    schema: &Schema,
    method: &GrpcMethod,
    raw: &[u8],
    limit: usize,
) -> Result<Bytes, BadRequest> {
    let encoded = from_json(schema, &method.input, raw).map_err(|e| match e {
        DecodeError::Json(m) => BadRequest::Json(m),
        DecodeError::TooDeep => BadRequest::Local(Status::new(
            Code::Internal,
            "grpc: error unmarshalling request: failed to decode Protobuf message: recursion limit reached",
        )),
    })?;
    if encoded.len() > limit {
        return Err(BadRequest::TooLarge(message_too_large(
            encoded.len(),
            limit,
        )));
    }
    Ok(Bytes::from(encoded))
}

/// Where a gateway request's body comes from.
pub(crate) enum Source {
    Http(Incoming),
    /// A WebSocket's messages, each with the newline grpc-websocket-proxy
    /// writes after it.
    Messages(async_channel::Receiver<Bytes>),
    /// Read already (as a form).
    Spent,
}

impl Source {
    /// The next bytes; None once the body ended (or broke off: it ends
    /// where it broke).
    async fn chunk(&mut self) -> Option<Bytes> {
        match self {
            Source::Http(body) => loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Some(data);
                        }
                    }
                    Some(Err(_)) | None => return None,
                }
            },
            Source::Messages(rx) => rx.recv().await.ok(),
            Source::Spent => None,
        }
    }
}

/// A request body read value by value, within a bound.
struct JsonBody {
    source: Source,
    values: Values,
    ended: bool,
    limit: usize,
    bytes_max: usize,
}

impl JsonBody {
    async fn next(&mut self) -> Result<Option<Bytes>, BadRequest> {
        loop {
            match self.values.next(self.ended).map_err(BadRequest::Json)? {
                Next::Value(v) => return Ok(Some(v)),
                Next::End => return Ok(None),
                Next::NeedMore => {}
            }
            if self.values.pending_bytes() > self.bytes_max {
                return Err(BadRequest::TooLarge(message_too_large(
                    self.values.pending_bytes(),
                    self.limit,
                )));
            }
            match self.source.chunk().await {
                Some(data) => self.values.push(&data),
                None => self.ended = true,
            }
        }
    }
}

/// One request as grpc-gateway's mux receives it.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    /// Decoded and clean, `/v3beta/` made `/v3/`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Serve one gateway request (its path passed [`serves`]); a WebSocket
/// handshake is grpc-websocket-proxy's, which etcd puts before the
/// gateway.
pub(crate) async fn serve<H: Handler>(
    handler: Rc<H>,
    req: Request<Incoming>,
    path: String,
    upgrades: &Pending,
) -> Response<Body> {
    // Upgrade headers are HTTP/1.1's only (HTTP/2 refuses them).
    if req.version() == http::Version::HTTP_11 && websocket::is_upgrade(req.headers()) {
        return websocket::accept(handler, req, path, upgrades);
    }
    let (parts, body) = req.into_parts();
    let call = Call {
        method: &parts.method,
        path: &path,
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    serve_call(handler, call, Source::Http(body)).await
}

/// `http.Request.ParseForm` as grpc-gateway's method override calls it:
/// a POST, PUT or PATCH body is read whole as a form (so the call sees
/// none), then the query; the first error is the answer.
async fn parse_form(method: &str, query: Option<&str>, source: &mut Source) -> Option<String> {
    if matches!(method, "POST" | "PUT" | "PATCH") {
        let mut check = FormCheck::default();
        let mut read = 0usize;
        while let Some(chunk) = source.chunk().await {
            read += chunk.len();
            if read > FORM_BYTES_MAX {
                return Some("http: POST too large".into());
            }
            check.push(&chunk);
        }
        *source = Source::Spent;
        if let Some(e) = check.finish() {
            return Some(e);
        }
    }
    query_error(query.unwrap_or_default())
}

/// The caller grpc-gateway's `AnnotateContext` makes of the headers, as
/// far as etcd reads it: the metadata `token` (`Grpc-Metadata-Token`),
/// else `authorization` (`Authorization`, or `Grpc-Metadata-Authorization`),
/// first values first, and `hasleader` (`Grpc-Metadata-Hasleader: true`,
/// a leader required). A `-Bin` metadata header must be base64, as
/// grpc-gateway decodes it before grpc-go encodes it again.
fn metadata_caller(headers: &HeaderMap) -> Result<Caller, Status> {
    let mut token = None;
    let mut authorization = None;
    let mut hasleader = None;
    for (name, value) in headers {
        let name = name.as_str();
        if name == "authorization" && authorization.is_none() {
            authorization = Some(value.as_bytes().to_vec());
        }
        let Some(key) = name.strip_prefix("grpc-metadata-") else {
            continue;
        };
        let value = if key.ends_with("-bin") {
            golang::base64_decode_bin(value.as_bytes()).map_err(|e| {
                Status::new(
                    Code::InvalidArgument,
                    format!("invalid binary header {}: {e}", canonical_header_key(name)),
                )
            })?
        } else {
            value.as_bytes().to_vec()
        };
        match key {
            "token" if token.is_none() => token = Some(value),
            "authorization" if authorization.is_none() => authorization = Some(value),
            "hasleader" if hasleader.is_none() => hasleader = Some(value),
            _ => {}
        }
    }
    Ok(Caller {
        token: token
            .or(authorization)
            .map(|t| String::from_utf8_lossy(&t).into_owned()),
        common_name: None,
        require_leader: hasleader.is_some_and(|v| v == b"true"),
    })
}

/// Waits for `fut` until `deadline`; None when the deadline came first.
async fn until<T>(
    deadline: Option<Instant>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let Some(at) = deadline else {
        return Some(fut.await);
    };
    let timer = async {
        glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
        None
    };
    futures_lite::future::or(async { Some(fut.await) }, timer).await
}

/// An answer given before the request body is read (an unknown path, a
/// wrong method, a bad header) waits until the body is read: hyper's
/// HTTP/2 server resets a stream whose request body is dropped unread,
/// and the reset can overtake the answer (curl got no response at all to
/// 8 of 200 POSTs of `/v3/nothing`).
async fn early(source: Source, answer: Response<Body>) -> Response<Body> {
    if let Source::Http(body) = source {
        drain(body, EARLY_BODY_MAX).await;
    }
    answer
}

/// What [`early`] reads of a body at most (the gRPC limit's default, times
/// the JSON's growth): a larger one is left to the reset.
const EARLY_BODY_MAX: usize = 8 * 1024 * 1024 * JSON_EXPANSION_MAX;

/// grpc-gateway's mux and the handler it calls: method override, the
/// call's deadline and metadata, the request, the answer.
pub(crate) async fn serve_call<H: Handler>(
    handler: Rc<H>,
    call: Call<'_>,
    mut source: Source,
) -> Response<Body> {
    let path = call.path;
    // A last component that starts with a verb's `:` has no handler of
    // any method, before the override is looked at.
    if path.rsplit('/').next().is_some_and(|c| c.starts_with(':')) {
        return early(source, text(StatusCode::NOT_FOUND)).await;
    }
    let mut method = call.method.as_str().to_string();
    let form = call
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-www-form-urlencoded");
    if method == "POST" && form {
        if let Some(over) = call
            .headers
            .get("x-http-method-override")
            .filter(|v| !v.is_empty())
        {
            method = String::from_utf8_lossy(over.as_bytes()).to_uppercase();
            if let Some(e) = parse_form(&method, call.query, &mut source).await {
                return early(source, go_http_error(StatusCode::BAD_REQUEST, &e)).await;
            }
        }
    }
    let Some(&(_, grpc)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return early(source, text(StatusCode::NOT_FOUND)).await;
    };
    if method != "POST" {
        return early(source, text(StatusCode::METHOD_NOT_ALLOWED)).await;
    }
    let deadline = match call.headers.get("grpc-timeout") {
        None => None,
        Some(v) => match timeout_decode(v.as_bytes()) {
            Ok(timeout) => timeout.map(|t| Instant::now() + t.remaining()),
            Err(()) => {
                let shown = String::from_utf8_lossy(v.as_bytes());
                return early(
                    source,
                    error_reply(&Status::new(
                        Code::InvalidArgument,
                        format!("invalid grpc-timeout: {shown}"),
                    )),
                )
                .await;
            }
        },
    };
    let caller = match metadata_caller(call.headers) {
        Ok(c) => c,
        Err(status) => return early(source, error_reply(&status)).await,
    };
    let schema = match schema() {
        Ok(s) => s,
        Err(e) => return early(source, error_reply(&Status::new(Code::Internal, e))).await,
    };
    let Some(method) = schema.methods.get(grpc) else {
        let service = grpc
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        return early(
            source,
            error_reply(&Status::new(
                Code::Unimplemented,
                format!("unknown service {service}"),
            )),
        )
        .await;
    };
    let limit = receive_limit_bytes(handler.max_request_bytes());
    let mut body = JsonBody {
        source,
        values: Values::default(),
        ended: false,
        limit,
        bytes_max: limit.saturating_mul(JSON_EXPANSION_MAX),
    };
    let streaming = method.client_streaming || method.server_streaming;
    let (req_tx, req_rx) = async_channel::bounded(STREAM_RESPONSES_PENDING_MAX);
    // A request that does not decode is InvalidArgument, but for the
    // first message of a bidirectional stream, where grpc-gateway hands on
    // the decoder's error itself (Unknown).
    let json_code = if method.client_streaming {
        Code::Unknown
    } else {
        Code::InvalidArgument
    };
    let first = match body.next().await {
        Ok(raw) => raw,
        Err(bad) => return bad.answer(json_code, streaming),
    };
    let first = match first {
        // An empty body is an empty request (a stream's requests end).
        None if method.client_streaming => None,
        None => Some(Bytes::new()),
        Some(raw) => match request(schema, method, &raw, limit) {
            Ok(msg) => Some(msg),
            Err(bad) => return bad.answer(json_code, streaming),
        },
    };
    if !streaming {
        let Some(msg) = first else {
            return error_reply(&Status::new(Code::Internal, "no request"));
        };
        // grpc-go does not send a call whose deadline has passed.
        if deadline.is_some_and(|at| at <= Instant::now()) {
            return error_reply(&deadline_exceeded());
        }
        let answer = until(deadline, handler.unary(grpc.to_string(), caller, msg)).await;
        return match answer {
            None => error_reply(&deadline_exceeded()),
            Some(Ok(resp)) => match to_json(schema, &method.output, &resp) {
                Ok(json) => ok(reply(StatusCode::OK, "application/json", Bytes::from(json))),
                Err(e) => error_reply(&Status::new(Code::Internal, e.0)),
            },
            Some(Err(status)) => call_error_reply(&status),
        };
    }
    if deadline.is_some_and(|at| at <= Instant::now()) {
        return error_reply(&deadline_exceeded());
    }
    let Some(msg) = first else {
        // No request at all: the call sees its requests end at once.
        drop(req_tx);
        return stream(
            handler,
            caller,
            schema,
            grpc,
            &method.output,
            req_rx,
            deadline,
        )
        .await;
    };
    let _ = req_tx.try_send(msg);
    if method.client_streaming {
        // Later requests of the stream as they arrive; one that does
        // not decode ends the requests (grpc-gateway closes its send
        // side), not the stream.
        glommio::spawn_local(async move {
            while let Ok(Some(raw)) = body.next().await {
                let Ok(msg) = request(schema, method, &raw, limit) else {
                    break;
                };
                if req_tx.send(msg).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    } else {
        drop(req_tx);
    }
    stream(
        handler,
        caller,
        schema,
        grpc,
        &method.output,
        req_rx,
        deadline,
    )
    .await
}

/// A streaming call's answer: nothing is sent until its first response
/// or its end (as grpc-gateway waits for the stream's headers). A call
/// that fails before answering gets the error chunk with the error's
/// status; a deadline that passes first is a unary error (grpc-go's
/// `Header()` fails), one that passes later ends the stream with the
/// error chunk.
async fn stream<H: Handler>(
    handler: Rc<H>,
    caller: Caller,
    schema: &'static Schema,
    grpc: &'static str,
    output: &str,
    requests: async_channel::Receiver<Bytes>,
    deadline: Option<Instant>,
) -> Response<Body> {
    let (resp_tx, resp_rx) = async_channel::bounded(STREAM_RESPONSES_PENDING_MAX);
    let call = handler.streaming(
        grpc.to_string(),
        caller,
        requests,
        ResponseSink {
            tx: resp_tx.clone(),
        },
    );
    glommio::spawn_local(async move {
        let status = call.await;
        let _ = resp_tx.send(StreamItem::End(status)).await;
    })
    .detach();
    let expired = Rc::new(Cell::new(false));
    // Dropped with the answer (or with this future, when it answers
    // before the stream): the deadline's forwarder lets the call go then,
    // not only at the deadline.
    let (answer_alive, answer_gone) = async_channel::bounded::<()>(1);
    let resp_rx = match deadline {
        None => resp_rx,
        Some(at) => with_deadline(resp_rx, at, expired.clone(), answer_gone),
    };
    let first = match resp_rx.recv().await {
        Ok(StreamItem::Message(m)) => m,
        Ok(StreamItem::End(status)) if expired.get() => return error_reply(&status),
        Ok(StreamItem::End(status)) if status.code != Code::Ok => return stream_failed(&status),
        // Ended with no response: grpc-go has no headers to hand on.
        _ => {
            let mut resp = Response::new(Body::Once(None, None));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp.headers_mut().insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            return resp;
        }
    };
    let output = output.to_string();
    let line = move |item: StreamItem| -> Option<Bytes> {
        let _alive = &answer_alive;
        match item {
            StreamItem::Message(m) => match to_json(schema, &output, &m) {
                Ok(json) => Some(Bytes::from(format!("{{\"result\":{json}}}\n"))),
                Err(e) => Some(stream_error(&Status::new(Code::Internal, e.0))),
            },
            StreamItem::End(status) if status.code != Code::Ok => Some(stream_error(&status)),
            StreamItem::End(_) => None,
        }
    };
    let first = line(StreamItem::Message(first));
    let mut resp = Response::new(Body::Lines(first, Box::pin(resp_rx), Box::new(line)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    ok(resp)
}

/// The responses of `rx` until `at`, then the deadline's error (and
/// `expired` set); the call's own channel is dropped then, which ends
/// it, or as soon as the answer is gone (`gone` closes).
fn with_deadline(
    rx: async_channel::Receiver<StreamItem>,
    at: Instant,
    expired: Rc<Cell<bool>>,
    gone: async_channel::Receiver<()>,
) -> async_channel::Receiver<StreamItem> {
    let (tx, out) = async_channel::bounded(STREAM_RESPONSES_PENDING_MAX);
    glommio::spawn_local(async move {
        let forward = async {
            while let Ok(item) = rx.recv().await {
                let end = matches!(item, StreamItem::End(_));
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        };
        let gone = async {
            let _ = gone.recv().await;
        };
        if until(Some(at), futures_lite::future::or(forward, gone))
            .await
            .is_none()
        {
            drop(rx);
            expired.set(true);
            let _ = tx.send(StreamItem::End(deadline_exceeded())).await;
        }
    })
    .detach();
    out
}

/// Where `path` is in the gateway's routes (for the fuzz seeds).
pub(crate) fn route_index(path: &str) -> Option<usize> {
    ROUTES.iter().position(|(p, _)| *p == path)
}

/// The fuzz target's body (`fuzzing::gateway`): `body` arrives in chunks
/// of `chunk` bytes as the request body of the `route`-th path; every
/// value the splitter yields that becomes a request must be a protobuf the
/// typed messages decode, and its JSON must read back to the same JSON.
pub(crate) fn check_body(route: usize, chunk: usize, body: &[u8], limit: usize) {
    let Ok(schema) = schema() else {
        panic!("the built-in descriptors do not load");
    };
    let (_, grpc) = ROUTES[route % ROUTES.len()];
    let Some(method) = schema.methods.get(grpc) else {
        return;
    };
    let mut values = Values::default();
    let mut chunks = body.chunks(chunk.max(1));
    loop {
        let ended = chunks.len() == 0;
        let raw = match values.next(ended) {
            Ok(Next::Value(raw)) => raw,
            Ok(Next::NeedMore) => {
                if let Some(c) = chunks.next() {
                    values.push(c);
                }
                continue;
            }
            Ok(Next::End) | Err(_) => return,
        };
        let Ok(msg) = request(schema, method, &raw, limit) else {
            continue;
        };
        if let Err(e) = crate::fuzzing::request(grpc, msg.clone()) {
            panic!("{grpc}: the gateway made a request prost refuses: {e}");
        }
        let json = match to_json(schema, &method.input, &msg) {
            Ok(j) => j,
            Err(e) => panic!("{grpc}: a request made here does not print: {e:?}"),
        };
        let again = match from_json(schema, &method.input, json.as_bytes()) {
            Ok(b) => b,
            Err(e) => panic!("{grpc}: printed JSON {json} does not read back: {e:?}"),
        };
        assert_eq!(
            to_json(schema, &method.input, &again).ok().as_deref(),
            Some(json.as_str()),
            "{grpc}: JSON changed on a round trip"
        );
    }
}
