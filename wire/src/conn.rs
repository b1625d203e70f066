//! Serves one client connection: HTTP/2 (gRPC, prior knowledge as etcd
//! clients use it) or HTTP/1.1 (`/health`, `/version`, `/metrics`, JSON
//! gateway), told apart by the first bytes on the socket.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::grpc::{encode_message_header, Code, FrameDecoder, Status};
use crate::io::HyperIo;

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// gRPC's own receive limit sits above `--max-request-bytes`, as in etcd, so
/// that a slightly large request hears etcd's "request is too large" rather
/// than a transport error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// What the server reads of one request: `--max-request-bytes` plus
/// [`GRPC_OVERHEAD_BYTES`]. The flag takes any `usize`, so the sum
/// saturates: wrapped, it would refuse every request (or panic in a debug
/// build) on a member started with `--max-request-bytes` near the maximum.
pub fn receive_limit_bytes(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES)
}

/// Bound on responses a streaming call may have queued for a slow reader
/// before its producer waits.
pub const STREAM_RESPONSES_PENDING_MAX: usize = 128;

/// Bound on concurrent HTTP/2 streams per connection.
pub const HTTP2_STREAMS_CONCURRENT_MAX: u32 = 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(30);
/// grpc-go's bound on a message a server sends, which etcd keeps
/// (`math.MaxInt32`); a longer one would not fit the frame's 4-byte
/// length either.
const SEND_MESSAGE_BYTES_MAX: usize = i32::MAX as usize;

/// An HTTP/1.1 (or plain HTTP/2) reply.
pub struct HttpReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// Where a streaming call writes its responses (already-encoded messages).
#[derive(Clone)]
pub struct ResponseSink {
    pub(crate) tx: async_channel::Sender<StreamItem>,
}

impl ResponseSink {
    /// Queue one response; false once the client has gone away.
    pub async fn send(&self, msg: Bytes) -> bool {
        self.tx.send(StreamItem::Message(msg)).await.is_ok()
    }

    /// Whether the client has gone away (the response side was dropped), for
    /// calls that may sit idle without sending.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

pub enum StreamItem {
    Message(Bytes),
    End(Status),
}

/// Who makes a call, as its request says: the auth token clients send as
/// gRPC metadata `token` (clientv3) or, through the JSON gateway, as the
/// `Authorization` header (etcd reads both keys); and, on a TLS connection
/// with `--client-cert-auth`, its verified certificate's common name (the
/// user when no token is sent, as etcd's `AuthInfoFromTLS`; gRPC calls
/// only: etcd ignores it for its gateway).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub token: Option<String>,
    pub common_name: Option<String>,
    /// Metadata `hasleader: true` (clientv3's `WithRequireLeader`): etcd
    /// refuses the call when it has no leader.
    pub require_leader: bool,
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Caller {
        // `grpc-metadata-token`: grpc-gateway hands `Grpc-Metadata-*`
        // headers on as metadata without the prefix.
        let token = ["token", "grpc-metadata-token", "authorization"]
            .iter()
            .find_map(|k| headers.get(*k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Caller {
            token,
            common_name: None,
            require_leader: headers.get("hasleader").is_some_and(|v| v == "true"),
        }
    }
}

/// The server side of the protocol: what to do with each request.
pub trait Handler: 'static {
    /// A unary gRPC call; `method` is the path, `/etcdserverpb.KV/Range`.
    /// Returns the encoded response message.
    fn unary(
        self: Rc<Self>,
        method: String,
        caller: Caller,
        msg: Bytes,
    ) -> LocalBoxFuture<Result<Bytes, Status>>;

    /// Whether `method` is a bidirectional streaming call.
    fn is_streaming(&self, method: &str) -> bool;

    /// A streaming call: decoded request messages arrive on `requests` (closed
    /// when the client half-closes), responses go to `sink`. The returned
    /// status ends the call.
    fn streaming(
        self: Rc<Self>,
        method: String,
        caller: Caller,
        requests: async_channel::Receiver<Bytes>,
        sink: ResponseSink,
    ) -> LocalBoxFuture<Status>;

    /// Any non-gRPC request outside the JSON gateway: health, version,
    /// metrics. None when nothing is served at `path`: answered as Go's
    /// mux answers it (`404 page not found`), as etcd does.
    fn http(
        self: Rc<Self>,
        method: Method,
        path: String,
        body: Bytes,
    ) -> LocalBoxFuture<Option<HttpReply>>;

    /// `--max-request-bytes`.
    fn max_request_bytes(&self) -> usize;
}

/// Runs hyper's HTTP/2 connection tasks on the current glommio executor.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

/// Bind a client listener on this core. Every core binds the same address
/// (SO_REUSEPORT: the kernel spreads connections over cores), and
/// SO_REUSEADDR lets a restarted member rebind while old connections sit
/// in TIME_WAIT, as etcd (Go) does.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sk = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    // SAFETY: the descriptor is a listening TCP socket we own and hand over.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

/// Serve one accepted connection until the peer closes it or it fails.
/// Nothing a client sends here can panic the server: protocol errors end
/// this connection only.
pub async fn serve<H: Handler>(stream: glommio::net::TcpStream, handler: Rc<H>) {
    let _ = stream.set_nodelay(true);
    let is_h2 = match sniff_h2(&stream).await {
        Some(v) => v,
        None => return,
    };
    serve_http(stream, is_h2, handler, None).await;
}

/// [`serve`] behind a TLS handshake; HTTP/2 when the client chose `h2`
/// by ALPN (gRPC clients do), else HTTP/1.1. A client that does not
/// finish the handshake within a bound is dropped.
pub async fn serve_tls<H: Handler>(
    stream: glommio::net::TcpStream,
    acceptor: futures_rustls::TlsAcceptor,
    handler: Rc<H>,
) {
    let _ = stream.set_nodelay(true);
    let handshake = async { Some(acceptor.accept(stream).await) };
    let bound = async {
        glommio::timer::sleep(TLS_HANDSHAKE_MAX).await;
        None
    };
    let tls = match futures_lite::future::or(handshake, bound).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            log::debug!("TLS handshake failed: {e}");
            return;
        }
        None => return,
    };
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // rustls asks for (and verifies) client certificates only with
    // `--client-cert-auth`: a name here is a verified client's.
    let common_name = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::der::common_name(leaf.as_ref()));
    serve_http(tls, is_h2, handler, common_name).await;
}

pub(crate) async fn serve_http<H, T>(
    io: T,
    is_h2: bool,
    handler: Rc<H>,
    common_name: Option<String>,
) where
    H: Handler,
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let io = HyperIo::new(io);
    let upgrades = crate::gateway::Pending::default();
    let pending = upgrades.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (handler, common_name) = (handler.clone(), common_name.clone());
        let upgrades = upgrades.clone();
        async move { Ok::<_, Infallible>(route(handler, req, common_name, &upgrades).await) }
    });
    if is_h2 {
        let result = hyper::server::conn::http2::Builder::new(LocalExec)
            .max_concurrent_streams(HTTP2_STREAMS_CONCURRENT_MAX)
            .serve_connection(io, svc)
            .await;
        if let Err(e) = result {
            log::debug!("connection ended: {e}");
        }
        return;
    }
    // hyper's own upgrades need a Send socket; a WebSocket handshake
    // instead ends the HTTP connection here and its session takes the
    // socket over.
    let result = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .without_shutdown()
        .await;
    match result {
        Ok(parts) => {
            let mut io = parts.io.into_inner();
            match pending.take() {
                Some(session) => session.run(parts.read_buf, Box::new(io)).await,
                None => {
                    let _ = futures_lite::AsyncWriteExt::close(&mut io).await;
                }
            }
        }
        Err(e) => log::debug!("connection ended: {e}"),
    }
}

/// HTTP/2 with prior knowledge starts with "PRI * HTTP/2.0"; anything else
/// is treated as HTTP/1.1. None when the peer closed before saying anything.
async fn sniff_h2(stream: &glommio::net::TcpStream) -> Option<bool> {
    let mut buf = [0u8; 4];
    // A peer that connects and says nothing is dropped after a bound.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    for _ in 0..64 {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) if n >= 4 => {
                let _ = stream.set_read_timeout(None);
                return Some(&buf == b"PRI ");
            }
            Ok(n) => {
                if buf[..n] != b"PRI "[..n] {
                    let _ = stream.set_read_timeout(None);
                    return Some(false);
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    None
}

async fn route<H: Handler>(
    handler: Rc<H>,
    req: Request<Incoming>,
    common_name: Option<String>,
    upgrades: &crate::gateway::Pending,
) -> Response<Body> {
    let is_grpc = req.method() == Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        return grpc_call(handler, req, common_name).await;
    }
    // Go's server matches handlers on the decoded path, and refuses a
    // request whose path does not decode before any handler sees it.
    let Some(decoded) = crate::gateway::unescape_path(req.uri().path()) else {
        return crate::gateway::bad_request_closing();
    };
    // etcd's access controller: `/v3beta/` is `/v3/`, CORS on every HTTP
    // answer, and OPTIONS (a browser's preflight) answered before any path
    // is looked at; then Go's mux redirects a path that is not clean.
    let path = match decoded.strip_prefix(b"/v3beta/") {
        Some(rest) => [&b"/v3/"[..], rest].concat(),
        None => decoded,
    };
    let redirect = (req.method() != Method::CONNECT)
        .then(|| crate::gateway::redirect_location(&path, req.uri().query()))
        .flatten();
    let path = String::from_utf8_lossy(&path).into_owned();
    let mut resp = if req.method() == Method::OPTIONS {
        // `rw.WriteHeader(http.StatusOK)` and nothing else.
        Response::new(Body::Once(None, None))
    } else if let Some(location) = redirect {
        crate::gateway::redirect(req.method(), &location)
    } else if crate::gateway::serves(&path) {
        crate::gateway::serve(handler, req, path, upgrades).await
    } else {
        http_call(handler, req, path).await
    };
    // A WebSocket handshake's answer is written by gorilla/websocket,
    // without the headers set before it.
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        crate::gateway::allow_cors(resp.headers_mut());
    }
    resp
}

async fn http_call<H: Handler>(
    handler: Rc<H>,
    req: Request<Incoming>,
    path: String,
) -> Response<Body> {
    let method = req.method().clone();
    let limit = receive_limit_bytes(handler.max_request_bytes());
    let body = match collect_limited(req.into_body(), limit).await {
        Ok(b) => b,
        Err(()) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request too large\n",
            )
        }
    };
    let Some(reply) = handler.http(method, path, body).await else {
        return crate::gateway::go_http_error(StatusCode::NOT_FOUND, "404 page not found");
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    plain(status, reply.content_type, reply.body)
}

async fn collect_limited(mut body: Incoming, limit: usize) -> Result<Bytes, ()> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(());
            }
            buf.put(data);
        }
    }
    Ok(buf.freeze())
}

/// Reads what is left of a request body, up to `limit` bytes, and drops it
/// (see `gateway::early` for why).
pub(crate) async fn drain(mut body: Incoming, limit: usize) {
    let mut read = 0;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::Once(Some(body.into()), None));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

async fn grpc_call<H: Handler>(
    handler: Rc<H>,
    req: Request<Incoming>,
    common_name: Option<String>,
) -> Response<Body> {
    let method = req.uri().path().to_string();
    let caller = Caller {
        common_name,
        ..Caller::from_headers(req.headers())
    };
    let mut decoder = FrameDecoder::new(receive_limit_bytes(handler.max_request_bytes()));
    let mut body = req.into_body();
    if handler.is_streaming(&method) {
        let (req_tx, req_rx) = async_channel::bounded(STREAM_RESPONSES_PENDING_MAX);
        let (resp_tx, resp_rx) = async_channel::bounded(STREAM_RESPONSES_PENDING_MAX);
        let sink = ResponseSink {
            tx: resp_tx.clone(),
        };
        let call = handler.streaming(method, caller, req_rx, sink);
        glommio::spawn_local(async move {
            let status = call.await;
            let _ = resp_tx.send(StreamItem::End(status)).await;
        })
        .detach();
        glommio::spawn_local(async move {
            // Pump request messages until the client half-closes or errs;
            // dropping req_tx tells the call there is no more input.
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                    loop {
                        match decoder.next_message() {
                            Ok(Some(msg)) => {
                                if req_tx.send(msg).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                }
            }
        })
        .detach();
        let mut resp = Response::new(Body::Stream(Box::pin(resp_rx)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        return resp;
    }
    let msg = loop {
        match decoder.next_message() {
            Err(status) => return grpc_error(status),
            Ok(Some(msg)) => break msg,
            Ok(None) => {}
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(_)) => {
                return grpc_error(Status::new(Code::Canceled, "context canceled"));
            }
            None => {
                return grpc_error(Status::new(
                    Code::Internal,
                    "grpc: request ended before a whole message arrived",
                ));
            }
        }
    };
    match handler.unary(method, caller, msg).await {
        Ok(encoded) if encoded.len() > SEND_MESSAGE_BYTES_MAX => {
            grpc_error(too_large_to_send(encoded.len()))
        }
        Ok(encoded) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let mut resp = Response::new(Body::Once(Some(frame_raw(&encoded)), Some(trailers)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(status) => grpc_error(status),
    }
}

/// grpc-go's answer to a message over [`SEND_MESSAGE_BYTES_MAX`].
fn too_large_to_send(len: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!(
            "grpc: trying to send message larger than max ({len} vs. {SEND_MESSAGE_BYTES_MAX})"
        ),
    )
}

fn frame_raw(encoded: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + encoded.len());
    buf.put_u8(0);
    buf.put_u32(encoded.len() as u32);
    buf.put_slice(encoded);
    buf.freeze()
}

fn status_headers(status: &Status, headers: &mut HeaderMap) {
    headers.insert("grpc-status", HeaderValue::from(status.code as u8 as u16));
    if !status.message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&encode_message_header(&status.message)) {
            headers.insert("grpc-message", v);
        }
    }
}

/// A "trailers-only" gRPC response: the status rides in the headers.
fn grpc_error(status: Status) -> Response<Body> {
    let mut resp = Response::new(Body::Once(None, None));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    status_headers(&status, resp.headers_mut());
    resp
}

/// Response bodies: one buffer (optionally followed by trailers), or a
/// stream of gRPC messages ended by a status.
pub enum Body {
    Once(Option<Bytes>, Option<HeaderMap>),
    Stream(Pin<Box<async_channel::Receiver<StreamItem>>>),
    /// The JSON gateway's streamed answer: a first chunk, then each
    /// response mapped to a chunk, until the map says the stream is over.
    Lines(
        Option<Bytes>,
        Pin<Box<async_channel::Receiver<StreamItem>>>,
        Box<dyn FnMut(StreamItem) -> Option<Bytes>>,
    ),
    Done,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        match this {
            Body::Once(data, trailers) => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                let t = trailers.take();
                *this = Body::Done;
                Poll::Ready(t.map(|t| Ok(Frame::trailers(t))))
            }
            Body::Stream(rx) => match futures_lite::Stream::poll_next(rx.as_mut(), cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(StreamItem::Message(m))) if m.len() <= SEND_MESSAGE_BYTES_MAX => {
                    Poll::Ready(Some(Ok(Frame::data(frame_raw(&m)))))
                }
                Poll::Ready(Some(item)) => {
                    // The stream ends with grpc-go's refusal of a message
                    // too large to send, as etcd's SendMsg error ends it.
                    let status = match item {
                        StreamItem::End(status) => status,
                        StreamItem::Message(m) => too_large_to_send(m.len()),
                    };
                    let mut t = HeaderMap::new();
                    status_headers(&status, &mut t);
                    *this = Body::Done;
                    Poll::Ready(Some(Ok(Frame::trailers(t))))
                }
                Poll::Ready(None) => {
                    *this = Body::Done;
                    Poll::Ready(None)
                }
            },
            Body::Lines(first, rx, map) => {
                if let Some(chunk) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                match futures_lite::Stream::poll_next(rx.as_mut(), cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(item)) => match map(item) {
                        Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                        None => {
                            *this = Body::Done;
                            Poll::Ready(None)
                        }
                    },
                    Poll::Ready(None) => {
                        *this = Body::Done;
                        Poll::Ready(None)
                    }
                }
            }
            Body::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Done | Body::Once(None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_too_large_to_send_gets_grpc_gos_words() {
        let s = too_large_to_send(SEND_MESSAGE_BYTES_MAX + 1);
        assert_eq!(s.code, Code::ResourceExhausted);
        assert_eq!(
            s.message,
            "grpc: trying to send message larger than max (2147483648 vs. 2147483647)"
        );
    }

    #[test]
    fn the_largest_max_request_bytes_still_reads_requests() {
        assert_eq!(receive_limit_bytes(usize::MAX), usize::MAX);
        assert_eq!(receive_limit_bytes(10), 10 + GRPC_OVERHEAD_BYTES);
        let mut dec = FrameDecoder::new(receive_limit_bytes(usize::MAX));
        dec.push(&[0, 0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(
            dec.next_message().ok().flatten().as_deref(),
            Some(&[0x08, 0x01][..])
        );
    }
}
