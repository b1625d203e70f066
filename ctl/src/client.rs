//! A small etcd v3 client over tonic: a lazily connecting channel per
//! endpoint, calls on the first reachable one (moving on when it fails),
//! unary calls with a deadline, and the two bidirectional streams
//! (Watch, LeaseKeepAlive). Message types are `ferrokv_wire::pb`; calls go
//! through tonic's generic `Grpc` with the method path, so there is no second
//! copy of the protos and no generated stubs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// Pause between two connection attempts of one call.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// clientv3's limit on the attempts of one unary call.
const UNARY_ATTEMPTS_MAX: u32 = 100;
/// clientv3's pause between two attempts, before its +-10% jitter.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Requests queued on an outgoing stream before `send` waits.
const STREAM_SEND_QUEUE_MAX: usize = 64;

/// How a client connects; etcdctl's global flags.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub keepalive_time: Duration,
    pub keepalive_timeout: Duration,
    /// Transport security, as etcdctl's flags ask for it.
    pub tls: Option<Tls>,
}

/// etcdctl's TLS flags: the CA to verify servers with (else the system's
/// roots), and the client's own certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `--insecure-skip-tls-verify`: the server's certificate is not checked.
    pub skip_verify: bool,
}

impl Tls {
    fn read(flag: &str, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("--{flag}: open {path}: {e}"))
    }

    /// The connection setup of `--insecure-skip-tls-verify`.
    fn insecure(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (Self::read("cert", cert)?, Self::read("key", key)?);
                crate::insecure_tls::config(Some((&cert, &key)))
            }
            (None, None) => crate::insecure_tls::config(None),
            _ => Err("--cert and --key go together".into()),
        }
    }

    fn config(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = Self::read;
        let mut config = ClientTlsConfig::new();
        config = match &self.cacert {
            Some(path) => config.ca_certificate(Certificate::from_pem(read("cacert", path)?)),
            None => config.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?))
            }
            (None, None) => {}
            _ => return Err("--cert and --key go together".into()),
        }
        Ok(config)
    }
}

/// Why a call failed, in the terms etcdctl prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// The server answered with a gRPC status (`attempt`: how many earlier
    /// attempts of the call failed and were retried).
    Status {
        code: Code,
        message: String,
        attempt: u32,
    },
    /// No answer within the deadline (the caller's, or the dial's).
    DeadlineExceeded { detail: String },
    /// No connection could be made until the deadline; `refused` when the
    /// last attempt was actively refused (the address, as grpc-go names it).
    /// Nothing was sent.
    Unreachable { refused: Option<String> },
    /// The connection broke after the request went out: the server may or
    /// may not have executed it.
    Lost { attempt: u32 },
}

impl RpcError {
    /// Maps a received status to what etcdctl reports for it.
    pub fn from_status(status: Status) -> Self {
        if status.code() == Code::DeadlineExceeded
            || (status.code() == Code::Cancelled && status.message() == "Timeout expired")
        {
            return RpcError::DeadlineExceeded {
                detail: status.message().to_string(),
            };
        }
        // A status with a source was made on this side from a failure
        // below gRPC; one without came from the server.
        let source = std::error::Error::source(&status);
        if source.is_some() || is_transport_error(&status) {
            // hyper cancels the requests still queued on a connection that
            // closes: those, like failed connects, were never sent.
            let unsent = status.code() == Code::Cancelled
                || std::iter::successors(source, |e| e.source())
                    .any(|e| e.is::<tonic::ConnectError>());
            return if unsent {
                RpcError::Unreachable { refused: None }
            } else {
                RpcError::Lost { attempt: 0 }
            };
        }
        RpcError::Status {
            code: status.code(),
            message: status.message().to_string(),
            attempt: 0,
        }
    }

    /// The message etcdctl prints after `Error: `: clientv3 turns the
    /// errors etcd defines (all `etcdserver: ...`) into their bare text and
    /// leaves any other status in grpc-go's `rpc error: ...` form.
    pub fn message(&self) -> String {
        match self {
            RpcError::Status { message, .. } if message.starts_with("etcdserver: ") => {
                message.clone()
            }
            RpcError::Status { .. } | RpcError::Lost { .. } => self.grpc_text(),
            RpcError::Unreachable { .. } => "context deadline exceeded".into(),
            RpcError::DeadlineExceeded { .. } => "context deadline exceeded".into(),
        }
    }

    /// grpc-go's `rpc error: code = X desc = Y`, as clientv3 logs it.
    pub fn grpc_text(&self) -> String {
        match self {
            RpcError::Status { code, message, .. } => {
                format!("rpc error: code = {} desc = {message}", code_name(*code))
            }
            RpcError::DeadlineExceeded { detail } => {
                format!("rpc error: code = DeadlineExceeded desc = {detail}")
            }
            RpcError::Unreachable { .. } => "rpc error: code = DeadlineExceeded desc = latest \
                 balancer error: all SubConns are in TransientFailure"
                .into(),
            // grpc-go's words for a call whose connection closed under it.
            RpcError::Lost { .. } => {
                "rpc error: code = Unavailable desc = transport is closing".into()
            }
        }
    }

    /// The same for a call on a direct (`passthrough:///`) connection, as
    /// clientv3's per-endpoint maintenance calls make: grpc-go then names
    /// the dial error itself.
    pub fn grpc_text_direct(&self) -> String {
        match self {
            RpcError::Unreachable {
                refused: Some(addr),
            } => format!(
                "rpc error: code = DeadlineExceeded desc = latest balancer error: connection \
                 error: desc = \"transport: Error while dialing dial tcp {addr}: connect: \
                 connection refused\""
            ),
            other => other.grpc_text(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            RpcError::Status { code, .. } => *code,
            RpcError::Lost { .. } => Code::Unavailable,
            RpcError::DeadlineExceeded { .. } | RpcError::Unreachable { .. } => {
                Code::DeadlineExceeded
            }
        }
    }

    /// Attempts of the call that failed before this one (clientv3 logs
    /// each with its number).
    pub fn attempt(&self) -> u32 {
        match self {
            RpcError::Status { attempt, .. } | RpcError::Lost { attempt } => *attempt,
            RpcError::DeadlineExceeded { .. } | RpcError::Unreachable { .. } => 0,
        }
    }

    fn with_attempt(mut self, n: u32) -> Self {
        if let RpcError::Status { attempt, .. } | RpcError::Lost { attempt } = &mut self {
            *attempt = n;
        }
        self
    }

    /// clientv3's `isSafeRetryImmutableRPC`: a repeatable call (or a
    /// stream) is tried again after a transient failure (no connection, a
    /// connection lost under it, the server's `Unavailable`), never after
    /// any other answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RpcError::Unreachable { .. }
                | RpcError::Lost { .. }
                | RpcError::Status {
                    code: Code::Unavailable,
                    ..
                }
        )
    }
}

/// clientv3's retry policy: these calls change nothing (or nothing twice)
/// and are retried after transient failures; every other call only when
/// it was never sent, since it may have been executed.
fn is_repeatable(path: &str) -> bool {
    matches!(
        path,
        path::RANGE
            | path::LEASE_GRANT
            | path::LEASE_REVOKE
            | path::LEASE_TIME_TO_LIVE
            | path::LEASE_LEASES
            | path::MEMBER_LIST
            | path::ALARM
            | path::STATUS
            | path::HASH_KV
            | path::MOVE_LEADER
            | path::USER_LIST
            | path::USER_GET
            | path::ROLE_LIST
            | path::ROLE_GET
    )
}

fn is_transport_error(status: &Status) -> bool {
    status.code() == Code::Unknown
        && (status.message().contains("transport error")
            || status.message().contains("connection")
            || status.message().contains("h2 protocol error"))
}

/// grpc-go's names of the status codes (`codes.Code.String()`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// `host:port` of an endpoint.
fn host_port(endpoint: &str) -> Option<String> {
    let uri = endpoint_uri(endpoint);
    Some(uri.split("://").nth(1)?.trim_end_matches('/').to_string())
}

/// An endpoint as etcdctl accepts it (`host:port` or a URL) as a URI.
pub fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else if let Some(rest) = endpoint.strip_prefix("unix://") {
        format!("http://{rest}")
    } else {
        format!("http://{endpoint}")
    }
}

/// [`RETRY_BACKOFF`] with clientv3's jitter, so clients that failed
/// together do not retry in step.
fn retry_backoff() -> Duration {
    let tenth = RETRY_BACKOFF.as_micros() as usize / 10;
    let jitter = random_below(2 * tenth + 1) as u64;
    RETRY_BACKOFF - Duration::from_micros(tenth as u64) + Duration::from_micros(jitter)
}

/// A number in `0..n` that differs from call to call and process to process.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded randomly per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % n.max(1) as u64) as usize
}

/// Connections to the endpoints of one cluster; calls go to the current
/// one and move on to the next when it cannot be reached.
#[derive(Clone, Debug)]
pub struct Client {
    /// (endpoint as the user wrote it, lazily connecting channel)
    endpoints: Arc<Vec<(String, Channel)>>,
    current: Arc<AtomicUsize>,
    /// With `--user`: the credentials and the current token, sent with
    /// every request and renewed when the server no longer knows it.
    auth: Option<Arc<Auth>>,
}

type Token = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

#[derive(Debug)]
struct Auth {
    user: String,
    password: String,
    token: std::sync::Mutex<Option<Token>>,
}

/// etcd's answer to a token it does not know (expired, or issued by
/// another member before a restart).
const INVALID_AUTH_TOKEN: &str = "etcdserver: invalid auth token";

impl Client {
    /// A client whose current endpoint is the first that accepts a TCP
    /// connection within the dial timeout (else the first one, so that the
    /// first call fails with the deadline as etcdctl's does).
    pub async fn connect(config: &ClientConfig) -> Result<Client, String> {
        let insecure = match &config.tls {
            Some(t) if t.skip_verify => Some(crate::insecure_tls::connector(t.insecure()?)),
            _ => None,
        };
        let tls = match &config.tls {
            Some(t) if !t.skip_verify => Some(t.config()?),
            _ => None,
        };
        let mut endpoints = Vec::new();
        for ep in &config.endpoints {
            if let Some(connector) = &insecure {
                // The connector makes the TLS connection; tonic sees http.
                let uri = endpoint_uri(ep).replacen("https://", "http://", 1);
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|e| format!("invalid endpoint {ep:?}: {e}"))?
                    .connect_timeout(config.dial_timeout)
                    .http2_keep_alive_interval(config.keepalive_time)
                    .keep_alive_timeout(config.keepalive_timeout)
                    .keep_alive_while_idle(true);
                endpoints.push((
                    ep.clone(),
                    endpoint.connect_with_connector_lazy(connector.clone()),
                ));
                continue;
            }
            let mut uri = endpoint_uri(ep);
            if tls.is_some() && !ep.starts_with("http://") {
                // As etcdctl: with TLS asked for, a bare host:port is https.
                uri = uri.replacen("http://", "https://", 1);
            }
            let mut endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("invalid endpoint {ep:?}: {e}"))?
                .connect_timeout(config.dial_timeout)
                .http2_keep_alive_interval(config.keepalive_time)
                .keep_alive_timeout(config.keepalive_timeout)
                .keep_alive_while_idle(true);
            if uri.starts_with("https://") {
                let tls = match &tls {
                    Some(t) => t.clone(),
                    None => Tls::default().config()?,
                };
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| format!("endpoint {ep:?}: TLS: {e}"))?;
            }
            endpoints.push((ep.clone(), endpoint.connect_lazy()));
        }
        if endpoints.is_empty() {
            return Err("no endpoints given".into());
        }
        // clientv3's round-robin balancer starts each client at a random
        // endpoint; so does this one, and a command's calls then stay on
        // the first endpoint from there that accepts a connection. If none
        // does, calls start at the first (the one etcdctl's errors name).
        let n = endpoints.len();
        let start = random_below(n);
        let mut current = 0;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(addr) = host_port(&endpoints[i].0) else {
                continue;
            };
            let dial = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(config.dial_timeout, dial).await {
                current = i;
                break;
            }
        }
        Ok(Client {
            endpoints: Arc::new(endpoints),
            current: Arc::new(AtomicUsize::new(current)),
            auth: None,
        })
    }

    fn current(&self) -> &(String, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    /// Moves calls on to the next endpoint (clientv3's balancer does the
    /// same when a connection fails).
    pub fn fail_over(&self) {
        if self.endpoints.len() > 1 {
            self.current.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Authenticates as `user` and sends the token with every later call.
    pub async fn authenticate(
        &mut self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), RpcError> {
        let auth = Arc::new(Auth {
            user: user.to_string(),
            password: password.to_string(),
            token: std::sync::Mutex::new(None),
        });
        self.auth = None;
        let token = self.fetch_token(&auth, timeout).await?;
        if let Ok(mut slot) = auth.token.lock() {
            *slot = token;
        }
        self.auth = Some(auth);
        Ok(())
    }

    async fn fetch_token(&self, auth: &Auth, timeout: Duration) -> Result<Option<Token>, RpcError> {
        let req = ferrokv_wire::pb::etcdserverpb::AuthenticateRequest {
            name: auth.user.clone(),
            password: auth.password.clone(),
        };
        let resp: ferrokv_wire::pb::etcdserverpb::AuthenticateResponse =
            self.unary(path::AUTHENTICATE, req, timeout).await?;
        Ok(resp.token.parse().ok())
    }

    /// clientv3's `retryAuth`: a call refused for its token gets a new
    /// one and goes again. Whether it did.
    async fn renew_token(&self, timeout: Duration) -> Result<bool, RpcError> {
        let Some(auth) = &self.auth else {
            return Ok(false);
        };
        if let Ok(mut slot) = auth.token.lock() {
            *slot = None;
        }
        let token = self.fetch_token(auth, timeout).await?;
        if let Ok(mut slot) = auth.token.lock() {
            *slot = token;
        }
        Ok(true)
    }

    /// `request` carrying this client's token (with `--user`), as clientv3
    /// sends it on every call, streams included.
    pub fn with_token<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        let token = self
            .auth
            .as_ref()
            .and_then(|a| a.token.lock().ok().and_then(|t| t.clone()));
        if let Some(token) = token {
            request.metadata_mut().insert("token", token);
        }
        request
    }

    /// The current endpoint's channel, for calls this type has no helper
    /// for.
    pub fn channel(&self) -> Channel {
        self.current().1.clone()
    }

    /// The endpoint calls currently go to, as the user wrote it.
    pub fn endpoint(&self) -> &str {
        &self.current().0
    }

    /// One unary call bounded by `timeout` even if the server never answers.
    pub async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        // grpc-go keeps trying to connect until the call's deadline, so
        // a server that comes up within it still answers; so does this.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_unreachable = None;
        let mut failed: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let attempt =
                tokio::time::timeout(remaining, self.unary_once(path, req.clone(), remaining))
                    .await;
            match attempt {
                Ok(Err(RpcError::Unreachable { .. })) => {
                    last_unreachable = Some(RpcError::Unreachable {
                        refused: self.refused_addr().await,
                    });
                    // Nothing was sent: any request may go to another one.
                    self.fail_over();
                    tokio::time::sleep(CONNECT_RETRY_PAUSE.min(remaining)).await;
                }
                Ok(Err(e))
                    if e.is_transient()
                        && is_repeatable(path)
                        && failed + 1 < UNARY_ATTEMPTS_MAX =>
                {
                    self.log_failed_attempt(e, failed);
                    failed += 1;
                    self.fail_over();
                    tokio::time::sleep(retry_backoff().min(remaining)).await;
                }
                Ok(Err(e @ RpcError::Status { .. }))
                    if e.message() == INVALID_AUTH_TOKEN
                        && path != path::AUTHENTICATE
                        && failed + 1 < UNARY_ATTEMPTS_MAX =>
                {
                    let e = self.log_failed_attempt(e, failed);
                    failed += 1;
                    let renewed = Box::pin(self.renew_token(remaining)).await;
                    match renewed {
                        Ok(true) => {}
                        Ok(false) => return Err(e),
                        Err(why) => return Err(why),
                    }
                }
                Ok(result) => return result.map_err(|e| e.with_attempt(failed)),
                Err(_) => break,
            }
        }
        Err(last_unreachable.unwrap_or(RpcError::DeadlineExceeded {
            detail: "context deadline exceeded".into(),
        }))
    }

    /// clientv3's warning for an attempt that failed and is retried.
    fn log_failed_attempt(&self, e: RpcError, attempt: u32) -> RpcError {
        let e = e.with_attempt(attempt);
        crate::ctx::eprint_now(&format!(
            "{}\n",
            crate::error::retry_warning(&e, self.endpoint())
        ));
        e
    }

    async fn unary_once<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = ready(self.channel()).await?;
        let mut request = self.with_token(tonic::Request::new(req));
        request.set_timeout(timeout);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(RpcError::from_status)
    }

    /// `host:port` when a plain TCP connect to the endpoint is refused.
    async fn refused_addr(&self) -> Option<String> {
        let addr = host_port(self.endpoint())?;
        match tokio::net::TcpStream::connect(&addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(addr),
            _ => None,
        }
    }

    /// Opens a bidirectional stream in the background: requests go in
    /// through the returned sender, responses (or the error that ended the
    /// stream) come out of the receiver, which closes with the stream.
    /// Opening does not wait for the server: grpc-go servers send their
    /// response headers only with the first message, so a client that
    /// waited before sending its first request would wait forever.
    pub fn bidi<Req, Resp>(
        &self,
        path: &'static str,
    ) -> (mpsc::Sender<Req>, mpsc::Receiver<Result<Resp, RpcError>>)
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let (req_tx, req_rx) = mpsc::channel(STREAM_SEND_QUEUE_MAX);
        let (resp_tx, resp_rx) = mpsc::channel(STREAM_SEND_QUEUE_MAX);
        let channel = self.channel();
        let request = self.with_token(tonic::Request::new(ReceiverStream::new(req_rx)));
        tokio::spawn(async move {
            let mut grpc = match ready(channel).await {
                Ok(g) => g,
                Err(e) => {
                    let _ = resp_tx.send(Err(e)).await;
                    return;
                }
            };
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            let opened = grpc
                .streaming(request, PathAndQuery::from_static(path), codec)
                .await;
            let mut stream: Streaming<Resp> = match opened {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    let _ = resp_tx.send(Err(RpcError::from_status(status))).await;
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(msg)) => {
                        if resp_tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = resp_tx.send(Err(RpcError::from_status(status))).await;
                        return;
                    }
                }
            }
        });
        (req_tx, resp_rx)
    }
}

/// A `Watch` stream's two ends.
pub type WatchStream = (
    mpsc::Sender<ferrokv_wire::pb::etcdserverpb::WatchRequest>,
    mpsc::Receiver<Result<ferrokv_wire::pb::etcdserverpb::WatchResponse, RpcError>>,
);

/// The request that creates `create` on a Watch stream.
pub fn create_watch(
    create: ferrokv_wire::pb::etcdserverpb::WatchCreateRequest,
) -> ferrokv_wire::pb::etcdserverpb::WatchRequest {
    ferrokv_wire::pb::etcdserverpb::WatchRequest {
        request_union: Some(
            ferrokv_wire::pb::etcdserverpb::watch_request::RequestUnion::CreateRequest(create),
        ),
    }
}

impl Client {
    /// Opens a Watch stream with `create` as its first watch; None when
    /// the stream closed before taking it.
    pub async fn watch(
        &self,
        create: ferrokv_wire::pb::etcdserverpb::WatchCreateRequest,
    ) -> Option<WatchStream> {
        let (tx, rx) = self.bidi(path::WATCH);
        tx.send(create_watch(create)).await.ok()?;
        Some((tx, rx))
    }
}

/// A gRPC client on `channel` once it can take a call; when it cannot,
/// nothing was sent.
async fn ready(channel: Channel) -> Result<tonic::client::Grpc<Channel>, RpcError> {
    let mut grpc = tonic::client::Grpc::new(channel);
    match grpc.ready().await {
        Ok(()) => Ok(grpc),
        Err(_) => Err(RpcError::Unreachable { refused: None }),
    }
}

/// A status as etcdctl prints a failed stream's error.
pub fn status_text(status: &Status) -> String {
    RpcError::from_status(status.clone()).message()
}

/// gRPC method paths of the etcd v3 services.
pub mod path {
    pub const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
    pub const AUTH_ENABLE: &str = "/etcdserverpb.Auth/AuthEnable";
    pub const AUTH_DISABLE: &str = "/etcdserverpb.Auth/AuthDisable";
    pub const USER_ADD: &str = "/etcdserverpb.Auth/UserAdd";
    pub const USER_GET: &str = "/etcdserverpb.Auth/UserGet";
    pub const USER_LIST: &str = "/etcdserverpb.Auth/UserList";
    pub const USER_DELETE: &str = "/etcdserverpb.Auth/UserDelete";
    pub const USER_CHANGE_PASSWORD: &str = "/etcdserverpb.Auth/UserChangePassword";
    pub const USER_GRANT_ROLE: &str = "/etcdserverpb.Auth/UserGrantRole";
    pub const USER_REVOKE_ROLE: &str = "/etcdserverpb.Auth/UserRevokeRole";
    pub const ROLE_ADD: &str = "/etcdserverpb.Auth/RoleAdd";
    pub const ROLE_GET: &str = "/etcdserverpb.Auth/RoleGet";
    pub const ROLE_LIST: &str = "/etcdserverpb.Auth/RoleList";
    pub const ROLE_DELETE: &str = "/etcdserverpb.Auth/RoleDelete";
    pub const ROLE_GRANT_PERMISSION: &str = "/etcdserverpb.Auth/RoleGrantPermission";
    pub const ROLE_REVOKE_PERMISSION: &str = "/etcdserverpb.Auth/RoleRevokePermission";
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub const TXN: &str = "/etcdserverpb.KV/Txn";
    pub const COMPACT: &str = "/etcdserverpb.KV/Compact";
    pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
    pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    pub const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
    pub const LEASE_TIME_TO_LIVE: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
    pub const LEASE_LEASES: &str = "/etcdserverpb.Lease/LeaseLeases";
    pub const MEMBER_ADD: &str = "/etcdserverpb.Cluster/MemberAdd";
    pub const MEMBER_REMOVE: &str = "/etcdserverpb.Cluster/MemberRemove";
    pub const MEMBER_UPDATE: &str = "/etcdserverpb.Cluster/MemberUpdate";
    pub const MEMBER_LIST: &str = "/etcdserverpb.Cluster/MemberList";
    pub const MEMBER_PROMOTE: &str = "/etcdserverpb.Cluster/MemberPromote";
    pub const ALARM: &str = "/etcdserverpb.Maintenance/Alarm";
    pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
    pub const DEFRAGMENT: &str = "/etcdserverpb.Maintenance/Defragment";
    pub const HASH_KV: &str = "/etcdserverpb.Maintenance/HashKV";
    pub const SNAPSHOT: &str = "/etcdserverpb.Maintenance/Snapshot";
    pub const MOVE_LEADER: &str = "/etcdserverpb.Maintenance/MoveLeader";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(std::io::Error::new(kind, "test"))
    }

    #[test]
    fn failures_are_told_apart_by_whether_the_request_went_out() {
        let refused = Status::from_error(Box::new(tonic::ConnectError(io(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(
            RpcError::from_status(refused),
            RpcError::Unreachable { refused: None }
        );
        let reset = Status::from_error(io(std::io::ErrorKind::ConnectionReset));
        assert_eq!(RpcError::from_status(reset), RpcError::Lost { attempt: 0 });
        let no_leader = Status::unavailable("etcdserver: no leader");
        let e = RpcError::from_status(no_leader);
        assert!(e.is_transient());
        assert_eq!(e.message(), "etcdserver: no leader");
        let compacted = RpcError::from_status(Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(!compacted.is_transient());
    }

    #[test]
    fn only_calls_that_change_nothing_twice_are_repeatable() {
        for p in [
            path::RANGE,
            path::LEASE_GRANT,
            path::MEMBER_LIST,
            path::STATUS,
        ] {
            assert!(is_repeatable(p), "{p}");
        }
        for p in [
            path::PUT,
            path::TXN,
            path::DELETE_RANGE,
            path::COMPACT,
            path::DEFRAGMENT,
        ] {
            assert!(!is_repeatable(p), "{p}");
        }
    }

    #[test]
    fn backoff_stays_within_clientv3s_jitter() {
        for _ in 0..100 {
            let b = retry_backoff();
            assert!(
                (Duration::from_micros(22_500)..=Duration::from_micros(27_500)).contains(&b),
                "{b:?}"
            );
        }
    }
}
