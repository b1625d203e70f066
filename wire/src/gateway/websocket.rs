//! WebSocket on the gateway's paths, as etcd 3.4.23 serves it: its
//! gateway sits behind tmc/grpc-websocket-proxy (over gorilla/websocket
//! 1.5.0, the one Debian's etcd 3.4.23 is built with), which turns a WebSocket handshake on any `/v3/` path into a
//! POST whose body is the client's messages, each followed by a newline,
//! and sends each line of the answer as a text message. Unary calls,
//! errors and unknown paths answer through it too: the body is what the
//! HTTP answer's body would be, the status and headers are dropped.
//!
//! The handshake is answered here (`101`); hyper then hands the socket
//! back to `conn::serve_http`, which runs the [`Session`] left in the
//! connection's [`Pending`].

use std::cell::Cell;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{go_http_error, golang, serve_call, Call, Source, JSON_EXPANSION_MAX};
use crate::conn::{receive_limit_bytes, Body, Handler, LocalBoxFuture};

/// The socket a session runs on once hyper has let go of it.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Socket for T {}

type Run = Box<dyn FnOnce(Bytes, Box<dyn Socket>) -> LocalBoxFuture<()>>;

/// An accepted handshake's session: run on the socket, after the bytes
/// hyper had read past the handshake.
pub(crate) struct Session(Run);

impl Session {
    pub(crate) async fn run(self, read_ahead: Bytes, socket: Box<dyn Socket>) {
        (self.0)(read_ahead, socket).await
    }
}

/// The session a connection's handshake left for it.
pub(crate) type Pending = Rc<Cell<Option<Session>>>;

/// Messages from the client queued for the call before reading waits
/// (grpc-websocket-proxy writes them into a pipe: it waits at once).
const MESSAGES_PENDING_MAX: usize = 16;
/// Control frames (pongs, the close reply) queued for the writer.
const CONTROLS_PENDING_MAX: usize = 16;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// gorilla's `tokenListContainsValue`: a comma-separated token list
/// holding `value`, in any case.
fn token_list_contains(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        let Ok(v) = v.to_str() else {
            return false;
        };
        for part in v.split(',') {
            let t = part.trim_matches([' ', '\t']);
            if t.is_empty() || !t.bytes().all(is_token_byte) {
                // gorilla stops at a list it cannot read.
                return false;
            }
            if t.eq_ignore_ascii_case(value) {
                return true;
            }
        }
        false
    })
}

fn is_token_byte(c: u8) -> bool {
    c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&c)
}

/// grpc-websocket-proxy's test: `Connection: upgrade` and
/// `Upgrade: websocket`.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    token_list_contains(headers, "connection", "upgrade")
        && token_list_contains(headers, "upgrade", "websocket")
}

/// gorilla's `returnError`: the status's words, and the version it
/// speaks.
fn refuse(status: StatusCode) -> Response<Body> {
    let mut resp = go_http_error(status, status.canonical_reason().unwrap_or_default());
    resp.headers_mut()
        .insert("sec-websocket-version", HeaderValue::from_static("13"));
    resp
}

fn first<'a>(headers: &'a HeaderMap, name: &str) -> &'a [u8] {
    headers.get(name).map_or(&b""[..], HeaderValue::as_bytes)
}

/// The `token` cookie (`http.Request.Cookie`), which the proxy makes the
/// call's `Authorization: Bearer ...`.
fn token_cookie(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get_all("cookie").iter().find_map(|line| {
        line.as_bytes().split(|&c| c == b';').find_map(|part| {
            let part = part.trim_ascii();
            let (name, value) = part.split_at(part.iter().position(|&c| c == b'=')?);
            let value = &value[1..];
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            let valid = value
                .iter()
                .all(|&c| (0x20..0x7f).contains(&c) && !b"\";\\".contains(&c));
            (name == b"token" && valid).then_some(value)
        })
    })
}

/// The headers of the request the proxy makes: `Authorization` from the
/// subprotocol (`Bearer, TOKEN`; any other subprotocol makes it empty,
/// which etcd takes for a token and refuses) or the `token` cookie, and
/// `Origin` and `Referer`; nothing else (no `Grpc-Timeout`, no
/// `Grpc-Metadata-*`).
fn call_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let protocol = first(headers, "sec-websocket-protocol");
    let mut authorization = None;
    if !protocol.is_empty() {
        let text = String::from_utf8_lossy(protocol);
        authorization = Some(match text.split_once("Bearer,") {
            Some((_, token)) => format!("Bearer {}", token.trim_matches(' ')).into_bytes(),
            None => Vec::new(),
        });
    }
    for name in ["origin", "referer"] {
        if let Some(v) = headers.get(name) {
            out.insert(name, v.clone());
        }
    }
    if let Some(token) = token_cookie(headers) {
        authorization = Some([&b"Bearer "[..], token].concat());
    }
    if let Some(v) = authorization.and_then(|a| HeaderValue::from_bytes(&a).ok()) {
        out.insert(http::header::AUTHORIZATION, v);
    }
    out
}

fn accept_key(key: &[u8]) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &[key, GUID.as_bytes()].concat(),
    );
    let mut out = String::new();
    golang::push_base64(&mut out, digest.as_ref());
    out
}

/// Answer a handshake as gorilla's `Upgrader.Upgrade` does (any origin:
/// the proxy's `CheckOrigin` allows all), and leave its session in
/// `pending`.
pub(crate) fn accept<H: Handler>(
    handler: Rc<H>,
    req: Request<Incoming>,
    path: String,
    pending: &Pending,
) -> Response<Body> {
    let headers = req.headers();
    if req.method() != Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !token_list_contains(headers, "sec-websocket-version", "13") {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let key = first(headers, "sec-websocket-key");
    if key.is_empty() {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let mut resp = Response::new(Body::Once(None, None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept_key(key)) {
        h.insert("sec-websocket-accept", v);
    }
    if first(headers, "sec-websocket-protocol").starts_with(b"Bearer") {
        h.insert("sec-websocket-protocol", HeaderValue::from_static("Bearer"));
    }
    let call_headers = call_headers(headers);
    let max_message =
        receive_limit_bytes(handler.max_request_bytes()).saturating_mul(JSON_EXPANSION_MAX);
    pending.set(Some(Session(Box::new(move |read_ahead, socket| {
        Box::pin(session(
            handler,
            path,
            call_headers,
            max_message,
            read_ahead,
            socket,
        ))
    }))));
    resp
}

/// What the reader tells the writer.
enum Control {
    Pong(Vec<u8>),
    /// A close frame's payload; the reader has stopped.
    Close(Vec<u8>),
}

async fn session<H: Handler>(
    handler: Rc<H>,
    path: String,
    headers: HeaderMap,
    max_message: usize,
    read_ahead: Bytes,
    socket: Box<dyn Socket>,
) {
    let (rd, mut wr) = futures_lite::io::split(socket);
    let (body_tx, body_rx) = async_channel::bounded::<Bytes>(MESSAGES_PENDING_MAX);
    let (ctl_tx, ctl_rx) = async_channel::bounded::<Control>(CONTROLS_PENDING_MAX);
    let reader = glommio::spawn_local(read_loop(rd, read_ahead, max_message, body_tx, ctl_tx));
    // The answer's body as it comes, ended by the channel's close; the
    // task is dropped (and the call with it) when the client goes.
    let (out_tx, out_rx) = async_channel::bounded::<Bytes>(1);
    let call = glommio::spawn_local(async move {
        let call = Call {
            method: &Method::POST,
            path: &path,
            query: None,
            headers: &headers,
        };
        let resp = serve_call(handler, call, Source::Messages(body_rx)).await;
        let mut body = resp.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if out_tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut lines = Lines::default();
    loop {
        let next =
            futures_lite::future::or(async { Event::Out(out_rx.recv().await.ok()) }, async {
                Event::Control(ctl_rx.recv().await.ok())
            })
            .await;
        let written = match next {
            Event::Out(Some(chunk)) => {
                lines.push(&chunk);
                write_lines(&mut wr, &mut lines).await
            }
            Event::Out(None) => {
                if let Some(last) = lines.finish() {
                    let _ = write_frame(&mut wr, OP_TEXT, &last).await;
                }
                break;
            }
            Event::Control(Some(Control::Pong(p))) => write_frame(&mut wr, OP_PONG, &p).await,
            Event::Control(Some(Control::Close(p))) => write_frame(&mut wr, OP_CLOSE, &p).await,
            // The client is gone (or broke the protocol): the call ends.
            Event::Control(None) => break,
        };
        if written.is_err() {
            break;
        }
    }
    drop(call);
    drop(reader);
    let _ = wr.close().await;
}

enum Event {
    Out(Option<Bytes>),
    Control(Option<Control>),
}

async fn write_lines<W: AsyncWrite + Unpin>(wr: &mut W, lines: &mut Lines) -> std::io::Result<()> {
    while let Some(line) = lines.next() {
        write_frame(wr, OP_TEXT, &line).await?;
    }
    Ok(())
}

/// `bufio.Scanner` with `ScanLines`, as the proxy reads the answer: lines
/// without their `\n` (and a `\r` before it), empty ones skipped, the
/// rest at the end.
#[derive(Default)]
struct Lines {
    buf: BytesMut,
}

impl Lines {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn next(&mut self) -> Option<Bytes> {
        loop {
            let at = self.buf.iter().position(|&c| c == b'\n')?;
            let mut line = self.buf.split_to(at + 1);
            line.truncate(at);
            if line.last() == Some(&b'\r') {
                line.truncate(at - 1);
            }
            if !line.is_empty() {
                return Some(line.freeze());
            }
        }
    }

    fn finish(mut self) -> Option<Bytes> {
        if self.buf.last() == Some(&b'\r') {
            self.buf.truncate(self.buf.len() - 1);
        }
        (!self.buf.is_empty()).then(|| self.buf.freeze())
    }
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// One unmasked, final frame (a server's).
async fn write_frame<W: AsyncWrite + Unpin>(
    wr: &mut W,
    op: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | op);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
    wr.write_all(&out).await?;
    wr.flush().await
}

/// gorilla's `FormatCloseMessage`: a code and text, or nothing for
/// "no status".
fn close_payload(code: Option<u16>, text: &str) -> Vec<u8> {
    match code {
        None => Vec::new(),
        Some(code) => [&code.to_be_bytes()[..], text.as_bytes()].concat(),
    }
}

const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Why reading stopped.
enum Stop {
    /// Closed, broken, or a frame gorilla takes for the end of reading
    /// without a word (a length with the top bit set).
    Gone,
    /// The close frame to send first.
    Close(Vec<u8>),
}

/// gorilla's `handleProtocolError`: 1002 and its words, cut to a
/// control frame's 125 bytes.
fn protocol_error(message: &str) -> Stop {
    let mut payload = close_payload(Some(CLOSE_PROTOCOL_ERROR), message);
    payload.truncate(125);
    Stop::Close(payload)
}

/// Bytes from the socket, after those hyper read ahead.
struct Input<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Input<R> {
    async fn take(&mut self, n: usize) -> Result<Bytes, Stop> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            let want = (n - self.buf.len()).min(chunk.len());
            match self.rd.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return Err(Stop::Gone),
                Ok(got) => self.buf.extend_from_slice(&chunk[..got]),
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// gorilla's `ReadMessage` loop in the proxy: each message (its frames
/// joined) goes to the call with a newline; pings are answered, a close
/// is echoed (its code, no text), a protocol error closes with 1002 and
/// gorilla's words; then reading stops and the call is cancelled. A
/// message over `max_message` closes with 1009 (gorilla would read any).
async fn read_loop<R: AsyncRead + Unpin>(
    rd: R,
    read_ahead: Bytes,
    max_message: usize,
    body: async_channel::Sender<Bytes>,
    control: async_channel::Sender<Control>,
) {
    let mut input = Input {
        rd,
        buf: BytesMut::from(&read_ahead[..]),
    };
    let stop = read_messages(&mut input, max_message, &body, &control).await;
    drop(body);
    if let Stop::Close(payload) = stop {
        let _ = control.send(Control::Close(payload)).await;
    }
}

async fn read_messages<R: AsyncRead + Unpin>(
    input: &mut Input<R>,
    max_message: usize,
    body: &async_channel::Sender<Bytes>,
    control: &async_channel::Sender<Control>,
) -> Stop {
    let mut message = BytesMut::new();
    let mut in_message = false;
    loop {
        let head = match input.take(2).await {
            Ok(h) => h,
            Err(stop) => return stop,
        };
        let fin = head[0] & 0x80 != 0;
        let op = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len7 = u64::from(head[1] & 0x7f);
        // gorilla 1.5 names every fault of the first two bytes at once.
        let mut faults: Vec<String> = Vec::new();
        for (bit, name) in [(0x40, "RSV1 set"), (0x20, "RSV2 set"), (0x10, "RSV3 set")] {
            if head[0] & bit != 0 {
                faults.push(name.into());
            }
        }
        match op {
            OP_CLOSE | OP_PING | OP_PONG => {
                if len7 > 125 {
                    faults.push("len > 125 for control".into());
                }
                if !fin {
                    faults.push("FIN not set on control".into());
                }
            }
            OP_TEXT | OP_BINARY => {
                if in_message {
                    faults.push("data before FIN".into());
                }
                in_message = !fin;
            }
            OP_CONTINUATION => {
                if !in_message {
                    faults.push("continuation after FIN".into());
                }
                in_message = !fin;
            }
            _ => faults.push(format!("bad opcode {op}")),
        }
        if !masked {
            faults.push("bad MASK".into());
        }
        if !faults.is_empty() {
            return protocol_error(&faults.join(", "));
        }
        let len = match len7 {
            126 => match input.take(2).await {
                Ok(b) => u64::from(u16::from_be_bytes([b[0], b[1]])),
                Err(stop) => return stop,
            },
            127 => match input.take(8).await {
                Ok(b) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b);
                    u64::from_be_bytes(n)
                }
                Err(stop) => return stop,
            },
            n => n,
        };
        // A negative length is gorilla's ErrReadLimit: it stops reading.
        if len > i64::MAX as u64 {
            return Stop::Gone;
        }
        let key = match input.take(4).await {
            Ok(k) => k,
            Err(stop) => return stop,
        };
        let data_frame = matches!(op, OP_TEXT | OP_BINARY | OP_CONTINUATION);
        if data_frame && (message.len() as u64).saturating_add(len) > max_message as u64 {
            return Stop::Close(close_payload(Some(CLOSE_MESSAGE_TOO_BIG), ""));
        }
        let Ok(len) = usize::try_from(len) else {
            return Stop::Gone;
        };
        let mut payload = match input.take(len).await {
            Ok(p) => BytesMut::from(&p[..]),
            Err(stop) => return stop,
        };
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        match op {
            OP_PONG => {}
            OP_PING => {
                if control.send(Control::Pong(payload.to_vec())).await.is_err() {
                    return Stop::Gone;
                }
            }
            OP_CLOSE => {
                let mut code = None;
                if payload.len() >= 2 {
                    let c = u16::from_be_bytes([payload[0], payload[1]]);
                    if !valid_close_code(c) {
                        return protocol_error(&format!("bad close code {c}"));
                    }
                    if std::str::from_utf8(&payload[2..]).is_err() {
                        return protocol_error("invalid utf8 payload in close frame");
                    }
                    code = Some(c);
                }
                return Stop::Close(close_payload(code, ""));
            }
            _ => {
                message.extend_from_slice(&payload);
                if !in_message {
                    let mut m = std::mem::take(&mut message);
                    m.put_u8(b'\n');
                    if body.send(m.freeze()).await.is_err() {
                        // The call has stopped reading (a unary call
                        // took its request); gorilla reads on.
                    }
                }
            }
        }
    }
}

/// gorilla's `isValidReceivedCloseCode`.
fn valid_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1013) || (3000..=4999).contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let key = [1, 2, 3, 4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// What the reader makes of `input`: the messages for the call, the
    /// controls for the writer, in order.
    fn read(input: &[u8], max_message: usize) -> (Vec<String>, Vec<String>) {
        let (body_tx, body_rx) = async_channel::unbounded();
        let (ctl_tx, ctl_rx) = async_channel::unbounded();
        futures_lite::future::block_on(read_loop(
            futures_lite::io::Cursor::new(input.to_vec()),
            Bytes::new(),
            max_message,
            body_tx,
            ctl_tx,
        ));
        let body = std::iter::from_fn(|| body_rx.try_recv().ok())
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect();
        let ctl = std::iter::from_fn(|| ctl_rx.try_recv().ok())
            .map(|c| match c {
                Control::Pong(p) => format!("pong {}", String::from_utf8_lossy(&p)),
                Control::Close(p) => format!("close {p:?}"),
            })
            .collect();
        (body, ctl)
    }

    #[test]
    fn frames_read_as_gorilla_reads_them() {
        // A message in fragments with a ping between them, then a close.
        let mut input = masked(0x01, b"{\"a\":");
        input.extend(masked(0x89, b"p"));
        input.extend(masked(0x80, b"1}"));
        input.extend(masked(0x82, b"x"));
        input.extend(masked(0x88, &[0x03, 0xe8, b'b']));
        input.extend(masked(0x81, b"never read"));
        let (body, ctl) = read(&input, 1024);
        assert_eq!(body, ["{\"a\":1}\n", "x\n"]);
        assert_eq!(ctl, ["pong p", "close [3, 232]"]);
        // Over the bound: 1009, nothing handed on.
        let (body, ctl) = read(&masked(0x81, &[b'a'; 200]), 100);
        assert!(body.is_empty());
        assert_eq!(ctl, ["close [3, 241]"]);
        // A length with the top bit set ends reading without a word, and
        // so does a frame cut short.
        let mut huge = vec![0x81, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(read(&huge, 100), (vec![], vec![]));
        assert_eq!(read(&masked(0x81, b"abc")[..5], 100), (vec![], vec![]));
        // Faults of the first two bytes, joined.
        let (_, ctl) = read(&[0x73, 0x7e], 100);
        let mut want = vec![3u8, 234];
        want.extend_from_slice(b"RSV1 set, RSV2 set, RSV3 set, bad opcode 3, bad MASK");
        assert_eq!(ctl, [format!("close {want:?}")]);
    }

    #[test]
    fn accept_key_is_rfc6455s() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn lines_split_as_bufio_scanner() {
        let mut l = Lines::default();
        l.push(b"{\"a\":1}\n\r\n\n{\"b\"");
        assert_eq!(l.next().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(l.next(), None);
        l.push(b":2}\r");
        assert_eq!(l.next(), None);
        assert_eq!(l.finish().as_deref(), Some(&b"{\"b\":2}"[..]));
    }

    #[test]
    fn subprotocols_and_cookies_make_authorization() {
        let mut h = HeaderMap::new();
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("Bearer, abc "),
        );
        h.insert("origin", HeaderValue::from_static("http://x"));
        h.insert("grpc-timeout", HeaderValue::from_static("1S"));
        let out = call_headers(&h);
        assert_eq!(out.get("authorization").unwrap(), "Bearer abc");
        assert_eq!(out.get("origin").unwrap(), "http://x");
        assert!(out.get("grpc-timeout").is_none());
        h.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
        assert_eq!(call_headers(&h).get("authorization").unwrap(), "");
        h.insert("cookie", HeaderValue::from_static("a=1; token=\"t0k\""));
        assert_eq!(call_headers(&h).get("authorization").unwrap(), "Bearer t0k");
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&h));
    }
}
