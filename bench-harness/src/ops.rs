//! The workloads' requests, sent as plain etcd v3 gRPC calls: the message
//! types come from `ferrokv_wire::pb` (prost), the call is tonic's generic
//! `Grpc::unary` with the method path, so no second copy of the protos and no
//! generated client stubs exist.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    compare, request_op, response_op, AuthenticateRequest, AuthenticateResponse, CompactionRequest,
    CompactionResponse, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::Status;

use crate::args::{Args, Workload};
use crate::mix::{chance, K8sOp};

/// One gRPC unary call with a deadline that holds even if the server never
/// answers (the `grpc-timeout` header tells the server; the local timer is
/// what bounds the run).
pub async fn unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    req: Req,
    timeout: Duration,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let call = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        with_token(&mut request);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                // tonic enforces the `grpc-timeout` it sends and reports
                // expiry as Cancelled; a caller's deadline is
                // DeadlineExceeded in every other gRPC client (etcd's too).
                if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
                {
                    Status::deadline_exceeded(format!(
                        "no response within {timeout:?} (client deadline)"
                    ))
                } else {
                    status
                }
            })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no response within {timeout:?} (client deadline)"
        ))),
    }
}

pub async fn put(
    channel: &Channel,
    key: Bytes,
    value: Bytes,
    timeout: Duration,
) -> Result<PutResponse, Status> {
    let req = PutRequest {
        key,
        value,
        ..Default::default()
    };
    unary(channel, "/etcdserverpb.KV/Put", req, timeout).await
}

/// The end of the range holding every key that starts with `prefix`
/// (etcd's `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    // All 0xff (or empty): every key from the start.
    Bytes::from_static(&[0])
}

/// Opens a bidirectional stream with `first` queued before the call starts:
/// a grpc-go server (etcd) sends the response headers only with its first
/// message, so awaiting the call with nothing sent would never return. The
/// returned sender feeds further requests. Not bounded in time here: callers
/// wrap it in their deadline.
pub async fn open_bidi<Req, Resp>(
    channel: Channel,
    path: &'static str,
    first: Vec<Req>,
) -> Result<(async_channel::Sender<Req>, tonic::Streaming<Resp>), Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    // Unbounded: each caller queues at most what it is about to wait for
    // (one keep-alive, or the watch creates of one stream).
    let (tx, rx) = async_channel::unbounded::<Req>();
    for r in first {
        let _ = tx.try_send(r);
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let mut request = tonic::Request::new(rx);
    with_token(&mut request);
    let resp = grpc
        .streaming(request, PathAndQuery::from_static(path), codec)
        .await?;
    Ok((tx, resp.into_inner()))
}

/// The auth token of this process's run (`--user`), sent as etcd's
/// clients send it: gRPC metadata `token` on every call. Set once, before
/// any request; a process runs one workload.
static TOKEN: std::sync::OnceLock<MetadataValue<Ascii>> = std::sync::OnceLock::new();

fn with_token<T>(request: &mut tonic::Request<T>) {
    if let Some(token) = TOKEN.get() {
        request.metadata_mut().insert("token", token.clone());
    }
}

/// Auth.Authenticate; on success every later request carries the token.
/// etcd drops a simple token after `--auth-token-ttl` (300 s) unused; a run
/// keeps it in use, and an expired one shows as failed requests.
pub async fn authenticate(
    channel: &Channel,
    name: &str,
    password: &str,
    timeout: Duration,
) -> Result<(), Status> {
    let resp: AuthenticateResponse = unary(
        channel,
        "/etcdserverpb.Auth/Authenticate",
        AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        },
        timeout,
    )
    .await?;
    let token = MetadataValue::try_from(resp.token.as_str())
        .map_err(|_| Status::internal("the server's auth token is not ASCII metadata"))?;
    let _ = TOKEN.set(token);
    Ok(())
}

pub async fn range(
    channel: &Channel,
    req: RangeRequest,
    timeout: Duration,
) -> Result<RangeResponse, Status> {
    unary(channel, "/etcdserverpb.KV/Range", req, timeout).await
}

pub async fn txn(
    channel: &Channel,
    req: TxnRequest,
    timeout: Duration,
) -> Result<TxnResponse, Status> {
    unary(channel, "/etcdserverpb.KV/Txn", req, timeout).await
}

pub async fn lease_grant(channel: &Channel, ttl_s: i64, timeout: Duration) -> Result<i64, Status> {
    let resp: LeaseGrantResponse = unary(
        channel,
        "/etcdserverpb.Lease/LeaseGrant",
        LeaseGrantRequest { ttl: ttl_s, id: 0 },
        timeout,
    )
    .await?;
    if !resp.error.is_empty() {
        return Err(Status::unknown(resp.error));
    }
    Ok(resp.id)
}

pub async fn lease_revoke(channel: &Channel, id: i64, timeout: Duration) -> Result<(), Status> {
    unary::<_, LeaseRevokeResponse>(
        channel,
        "/etcdserverpb.Lease/LeaseRevoke",
        LeaseRevokeRequest { id },
        timeout,
    )
    .await
    .map(|_| ())
}

pub async fn compact(channel: &Channel, revision: i64, timeout: Duration) -> Result<(), Status> {
    unary::<_, CompactionResponse>(
        channel,
        "/etcdserverpb.KV/Compact",
        CompactionRequest {
            revision,
            physical: false,
        },
        timeout,
    )
    .await
    .map(|_| ())
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// Kubernetes' write: `Txn(mod_revision(key) == expected) then <then> else
/// Range(key)`; `expected` 0 is a create (the key must not exist).
pub fn txn_on_mod_revision(key: Bytes, expected: i64, then: request_op::Request) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(expected)),
            ..Default::default()
        }],
        success: vec![op(then)],
        failure: vec![op(request_op::Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        }))],
    }
}

/// The key's mod_revision after a [`txn_on_mod_revision`]: the new revision
/// when it succeeded (0 after a delete), else the one the failure branch
/// read (0 when the key does not exist).
pub fn mod_revision_after(resp: &TxnResponse, deleted: bool) -> i64 {
    if resp.succeeded {
        if deleted {
            0
        } else {
            resp.header.as_ref().map_or(0, |h| h.revision)
        }
    } else {
        resp.responses
            .iter()
            .find_map(|r| match &r.response {
                Some(response_op::Response::ResponseRange(rr)) => {
                    Some(rr.kvs.first().map_or(0, |kv| kv.mod_revision))
                }
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// The request kinds of each workload, as they appear in reports.
pub type Kind = &'static str;

/// What a successful request reports besides its latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// A compare-mod-revision txn whose compare failed (another writer, or
    /// a stale revision).
    pub compare_failed: bool,
}

/// What every client of a run shares: things set up before the run, and
/// the highest revision any response carried (k8s's compactor reads it).
#[derive(Default)]
pub struct Shared {
    /// lease-keepalive: the leases granted before the run; client `i` keeps
    /// alive those at `i`, `i + clients`, ...
    pub leases: Vec<i64>,
    pub revision: AtomicI64,
}

impl Shared {
    fn saw(&self, header: Option<&ResponseHeader>) {
        if let Some(h) = header {
            self.revision.fetch_max(h.revision, Ordering::Relaxed);
        }
    }
}

/// Objects a k8s client remembers having created, for its deletes; past
/// this it deletes before creating more.
const K8S_CREATED_MAX: usize = 10_000;
/// Keys whose mod_revision all clients together remember (a few hundred
/// MB at most), shared out evenly.
const MOD_REVISIONS_TOTAL_MAX: usize = 4 << 20;
/// ... but at least this many per client.
const MOD_REVISIONS_CLIENT_MIN: usize = 1024;
/// Txns of one k8s update: the first, and retries after conflicts.
const UPDATE_ATTEMPTS_MAX: u32 = 3;
/// Upper bound on the pages of one k8s list (besides its deadline).
const LIST_PAGES_MAX: u32 = 100_000;

type KeepAliveStream = (
    async_channel::Sender<LeaseKeepAliveRequest>,
    tonic::Streaming<LeaseKeepAliveResponse>,
);

/// Per-client workload state: key choice, the last mod_revision this client
/// saw per key, and the leases and streams it owns.
pub struct Client {
    workload: Workload,
    args: Args,
    shared: Arc<Shared>,
    value: Bytes,
    rng: u64,
    /// txn-put: this client's index; it owns keys `n` with
    /// `n % clients == index`, so clients never race each other (conflicts
    /// then only come from keys written before the run, learnt on first use).
    index: u64,
    next_sequential: u64,
    mod_revisions: HashMap<u64, i64>,
    /// lease-keepalive: leases this client keeps alive, oldest first.
    leases: VecDeque<i64>,
    next_lease: usize,
    /// lease-keepalive churn alternates grant and revoke, so the number of
    /// leases stays within one of where it started.
    churn_grants_next: bool,
    keepalive: Option<KeepAliveStream>,
    /// k8s: objects created by this client (key, mod_revision), oldest first.
    created: VecDeque<(Bytes, i64)>,
    created_seq: u64,
    event_seq: u64,
    event_lease: EventLease,
}

/// The lease k8s events are attached to, as the apiserver reuses one lease
/// for many events. No I/O here: the client asks what to do and reports
/// what happened. Fails soft: after a failed grant (e.g. a server without
/// the Lease service) the next `events_per_lease` events go without a
/// lease, then a grant is tried again.
#[derive(Debug, Default)]
pub struct EventLease {
    lease: Option<i64>,
    events_on_lease: u64,
    /// Events still to put without a lease before granting is retried.
    backoff: u64,
}

impl EventLease {
    /// Whether the next event operation should be a grant.
    pub fn grant_due(&self, events_per_lease: u64) -> bool {
        let used_up = self.lease.is_none() || self.events_on_lease >= events_per_lease;
        used_up && self.backoff == 0
    }

    pub fn granted(&mut self, result: Option<i64>, events_per_lease: u64) {
        self.events_on_lease = 0;
        self.lease = result;
        if result.is_none() {
            self.backoff = events_per_lease;
        }
    }

    /// The lease for the next event's Put (0: none).
    pub fn for_put(&mut self) -> i64 {
        self.backoff = self.backoff.saturating_sub(1);
        self.lease.unwrap_or(0)
    }

    pub fn put_done(&mut self, ok: bool) {
        if !ok {
            // The lease may be gone (expired, revoked, a server that lost
            // it): the next event grants a new one rather than failing on
            // it forever.
            self.lease = None;
        } else if self.lease.is_some() {
            self.events_on_lease += 1;
        }
    }
}

impl Client {
    pub fn new(args: &Args, index: usize, value: Bytes, shared: Arc<Shared>) -> Self {
        let leases = shared
            .leases
            .iter()
            .skip(index)
            .step_by(args.clients.max(1))
            .copied()
            .collect();
        Client {
            workload: args.workload,
            args: args.clone(),
            shared,
            value,
            // splitmix-seeded xorshift state; never zero.
            rng: splitmix(args.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
            index: index as u64,
            next_sequential: index as u64,
            mod_revisions: HashMap::new(),
            leases,
            next_lease: 0,
            churn_grants_next: true,
            keepalive: None,
            created: VecDeque::new(),
            created_seq: 0,
            event_seq: 0,
            event_lease: EventLease::default(),
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Key number `n` of the key space (the preload writes `0..preload`).
    pub fn key(&self, n: u64) -> Bytes {
        if self.workload == Workload::K8s {
            let r = self.args.resources as u64;
            self.args.key(Some((n % r) as usize), n / r)
        } else {
            self.args.key(None, n)
        }
    }

    fn next_key_number(&mut self) -> u64 {
        let space = self.args.key_space;
        match self.workload {
            Workload::TxnPut => {
                let clients = self.args.clients as u64;
                // Keys owned by this client: index, index + clients, ...
                let owned = space.saturating_sub(self.index).div_ceil(clients);
                let owned = owned.max(1);
                let slot = if self.args.sequential_keys {
                    let s = self.next_sequential % owned;
                    self.next_sequential += 1;
                    s
                } else {
                    self.random() % owned
                };
                (self.index + slot * clients) % space
            }
            _ => {
                if self.args.sequential_keys {
                    let n = self.next_sequential % space;
                    self.next_sequential += self.args.clients as u64;
                    n
                } else {
                    self.random() % space
                }
            }
        }
    }

    /// Runs one operation of the workload: its kind and its result. Every
    /// operation is one request, except a k8s list (its pages, under one
    /// deadline).
    pub async fn op(
        &mut self,
        channel: &Channel,
        timeout: Duration,
    ) -> (Kind, Result<Outcome, Status>) {
        match self.workload {
            Workload::Put => {
                let key = self.next_key();
                let r = put(channel, key, self.value.clone(), timeout).await;
                ("put", r.map(|_| Outcome::default()))
            }
            Workload::Range => {
                let key = self.next_key();
                let req = if self.args.prefix {
                    RangeRequest {
                        key,
                        range_end: prefix_end(self.args.key_prefix.as_bytes()),
                        limit: self.args.limit,
                        serializable: self.args.serializable,
                        ..Default::default()
                    }
                } else {
                    RangeRequest {
                        key,
                        serializable: self.args.serializable,
                        ..Default::default()
                    }
                };
                (
                    "range",
                    range(channel, req, timeout)
                        .await
                        .map(|_| Outcome::default()),
                )
            }
            Workload::TxnPut => {
                let n = self.next_key_number();
                ("txn", self.update(channel, n, timeout).await)
            }
            Workload::TxnMixed => {
                let n = self.next_key_number();
                if chance(self.args.read_ratio, self.random()) {
                    (
                        "read",
                        self.get(channel, n, self.args.serializable, timeout).await,
                    )
                } else {
                    ("write", self.update(channel, n, timeout).await)
                }
            }
            Workload::WatchGet => {
                let n = self.next_key_number();
                (
                    "get",
                    self.get(channel, n, self.args.serializable, timeout).await,
                )
            }
            Workload::LeaseKeepalive => self.lease_op(channel, timeout).await,
            Workload::K8s => self.k8s_op(channel, timeout).await,
        }
    }

    fn next_key(&mut self) -> Bytes {
        let n = self.next_key_number();
        self.key(n)
    }

    /// A Range of key `n` that remembers its mod_revision.
    async fn get(
        &mut self,
        channel: &Channel,
        n: u64,
        serializable: bool,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let req = RangeRequest {
            key: self.key(n),
            serializable,
            ..Default::default()
        };
        let resp = range(channel, req, timeout).await?;
        self.shared.saw(resp.header.as_ref());
        self.remember(n, resp.kvs.first().map_or(0, |kv| kv.mod_revision));
        Ok(Outcome::default())
    }

    /// Bounded memory of mod_revisions: past its share of
    /// [`MOD_REVISIONS_TOTAL_MAX`] keys the client forgets them all, which
    /// only costs a compare failure (and a relearn) on each key's next
    /// update.
    fn remember(&mut self, n: u64, mod_revision: i64) {
        let max =
            (MOD_REVISIONS_TOTAL_MAX / self.args.clients.max(1)).max(MOD_REVISIONS_CLIENT_MIN);
        if self.mod_revisions.len() >= max && !self.mod_revisions.contains_key(&n) {
            self.mod_revisions.clear();
        }
        self.mod_revisions.insert(n, mod_revision);
    }

    /// Kubernetes' GuaranteedUpdate of key `n` from the last mod_revision
    /// seen; on a compare failure the next update of the key uses the
    /// revision just learnt (Kubernetes would re-read and retry).
    async fn update(
        &mut self,
        channel: &Channel,
        n: u64,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let key = self.key(n);
        let last = self.mod_revisions.get(&n).copied().unwrap_or(0);
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.clone(),
            value: self.value.clone(),
            ..Default::default()
        });
        let resp = txn(channel, txn_on_mod_revision(key, last, put), timeout).await?;
        self.shared.saw(resp.header.as_ref());
        self.remember(n, mod_revision_after(&resp, false));
        Ok(Outcome {
            compare_failed: !resp.succeeded,
        })
    }

    async fn lease_op(
        &mut self,
        channel: &Channel,
        timeout: Duration,
    ) -> (Kind, Result<Outcome, Status>) {
        let churn = chance(self.args.churn, self.random());
        if self.leases.is_empty() || (churn && self.churn_grants_next) {
            self.churn_grants_next = false;
            let r = lease_grant(channel, self.args.lease_ttl_s, timeout).await;
            if let Ok(id) = r {
                self.leases.push_back(id);
            }
            return ("grant", r.map(|_| Outcome::default()));
        }
        if churn {
            self.churn_grants_next = true;
            if let Some(id) = self.leases.pop_front() {
                let r = lease_revoke(channel, id, timeout).await;
                return ("revoke", r.map(|_| Outcome::default()));
            }
        }
        let id = self.leases[self.next_lease % self.leases.len()];
        self.next_lease = self.next_lease.wrapping_add(1);
        let r = match tokio::time::timeout(timeout, self.keepalive(channel, id)).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no keep-alive response within {timeout:?} (client deadline)"
            ))),
        };
        if r.is_err() {
            // The stream's state is unknown (a late response would be taken
            // for the next request's): start a new one next time.
            self.keepalive = None;
        }
        ("keepalive", r)
    }

    /// One keep-alive round trip on this client's stream (opened on first
    /// use, with the request queued so that etcd answers the open).
    async fn keepalive(&mut self, channel: &Channel, id: i64) -> Result<Outcome, Status> {
        let req = LeaseKeepAliveRequest { id };
        match &self.keepalive {
            Some((tx, _)) => tx
                .try_send(req)
                .map_err(|_| Status::unavailable("keep-alive stream closed"))?,
            None => {
                self.keepalive = Some(
                    open_bidi(
                        channel.clone(),
                        "/etcdserverpb.Lease/LeaseKeepAlive",
                        vec![req],
                    )
                    .await?,
                );
            }
        }
        let Some((_, inbound)) = self.keepalive.as_mut() else {
            unreachable!("opened above");
        };
        let resp = inbound
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("keep-alive stream ended"))?;
        if resp.id != id {
            return Err(Status::internal(format!(
                "keep-alive answered lease {:x}, asked {id:x}",
                resp.id
            )));
        }
        if resp.ttl <= 0 {
            // etcd answers an unknown lease with TTL -1 on the stream; its
            // client reports that as this error.
            return Err(Status::not_found("etcdserver: requested lease not found"));
        }
        Ok(Outcome::default())
    }

    async fn k8s_op(
        &mut self,
        channel: &Channel,
        timeout: Duration,
    ) -> (Kind, Result<Outcome, Status>) {
        let r = self.random();
        let mut op = self.args.mix.pick(r);
        if op == K8sOp::Delete && self.created.is_empty() {
            op = K8sOp::Create;
        } else if op == K8sOp::Create && self.created.len() >= K8S_CREATED_MAX {
            op = K8sOp::Delete;
        }
        let r = match op {
            K8sOp::Get => {
                let n = self.next_key_number();
                self.get(channel, n, false, timeout).await
            }
            K8sOp::Update => {
                let n = self.next_key_number();
                self.guaranteed_update(channel, n, timeout).await
            }
            K8sOp::List => {
                let res = (self.random() % self.args.resources as u64) as usize;
                self.list(channel, res, timeout).await
            }
            K8sOp::Create => self.create(channel, timeout).await,
            K8sOp::Delete => self.delete(channel, timeout).await,
            K8sOp::Event => {
                if self.event_lease.grant_due(self.args.events_per_lease) {
                    let r = lease_grant(channel, self.args.lease_ttl_s, timeout).await;
                    self.event_lease
                        .granted(r.as_ref().ok().copied(), self.args.events_per_lease);
                    return ("lease-grant", r.map(|_| Outcome::default()));
                }
                self.event(channel, timeout).await
            }
        };
        (op.name(), r)
    }

    /// The apiserver's GuaranteedUpdate: on a conflict it retries at once
    /// with the object the failed Txn read, so an update ends in a write
    /// unless others keep winning. Up to [`UPDATE_ATTEMPTS_MAX`] Txns under
    /// one deadline; `compare_failed` when any attempt conflicted.
    async fn guaranteed_update(
        &mut self,
        channel: &Channel,
        n: u64,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let attempts = async {
            let mut conflicted = false;
            for _ in 0..UPDATE_ATTEMPTS_MAX {
                if !self.update(channel, n, timeout).await?.compare_failed {
                    break;
                }
                conflicted = true;
            }
            Ok(Outcome {
                compare_failed: conflicted,
            })
        };
        match tokio::time::timeout(timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "update not done within {timeout:?} (client deadline)"
            ))),
        }
    }

    /// The apiserver's paginated list: pages of `--limit` keys, each next
    /// page from just after the last key at the first page's revision, so
    /// the whole list is one consistent snapshot.
    async fn list(
        &mut self,
        channel: &Channel,
        res: usize,
        timeout: Duration,
    ) -> Result<Outcome, Status> {
        let prefix = self.args.resource_prefix(res);
        let end = prefix_end(prefix.as_bytes());
        let (limit, shared) = (self.args.limit, self.shared.clone());
        let pages = async {
            let mut key = Bytes::from(prefix);
            let mut revision = 0;
            for _ in 0..LIST_PAGES_MAX {
                let req = RangeRequest {
                    key,
                    range_end: end.clone(),
                    limit,
                    revision,
                    ..Default::default()
                };
                let resp = range(channel, req, timeout).await?;
                shared.saw(resp.header.as_ref());
                if revision == 0 {
                    revision = resp.header.as_ref().map_or(0, |h| h.revision);
                }
                match resp.kvs.last() {
                    Some(last) if resp.more => {
                        let mut next = last.key.to_vec();
                        next.push(0);
                        key = next.into();
                    }
                    _ => return Ok(Outcome::default()),
                }
            }
            Ok(Outcome::default())
        };
        match tokio::time::timeout(timeout, pages).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "list not done within {timeout:?} (client deadline)"
            ))),
        }
    }

    async fn create(&mut self, channel: &Channel, timeout: Duration) -> Result<Outcome, Status> {
        let res = (self.random() % self.args.resources as u64) as usize;
        let key: Bytes = format!(
            "{}c{}-{:08}",
            self.args.resource_prefix(res),
            self.index,
            self.created_seq
        )
        .into();
        self.created_seq += 1;
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.clone(),
            value: self.value.clone(),
            ..Default::default()
        });
        let resp = txn(channel, txn_on_mod_revision(key.clone(), 0, put), timeout).await?;
        self.shared.saw(resp.header.as_ref());
        self.created
            .push_back((key, mod_revision_after(&resp, false)));
        Ok(Outcome {
            compare_failed: !resp.succeeded,
        })
    }

    async fn delete(&mut self, channel: &Channel, timeout: Duration) -> Result<Outcome, Status> {
        let Some((key, rev)) = self.created.pop_front() else {
            unreachable!("k8s_op turns a delete with nothing created into a create");
        };
        let del = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        });
        let resp = txn(channel, txn_on_mod_revision(key.clone(), rev, del), timeout).await?;
        self.shared.saw(resp.header.as_ref());
        if !resp.succeeded {
            let now = mod_revision_after(&resp, false);
            if now > 0 {
                // Still there at another revision: delete it later.
                self.created.push_back((key, now));
            }
        }
        Ok(Outcome {
            compare_failed: !resp.succeeded,
        })
    }

    async fn event(&mut self, channel: &Channel, timeout: Duration) -> Result<Outcome, Status> {
        let key: Bytes = format!(
            "{}events/c{}-{:010}",
            self.args.key_prefix, self.index, self.event_seq
        )
        .into();
        self.event_seq += 1;
        let req = PutRequest {
            key,
            value: self.value.clone(),
            lease: self.event_lease.for_put(),
            ..Default::default()
        };
        let r = unary::<_, PutResponse>(channel, "/etcdserverpb.KV/Put", req, timeout).await;
        self.event_lease.put_done(r.is_ok());
        let resp = r?;
        self.shared.saw(resp.header.as_ref());
        Ok(Outcome::default())
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value of `len` bytes that does not compress to nothing.
pub fn value_bytes(len: usize, seed: u64) -> Bytes {
    let mut s = splitmix(seed) | 1;
    (0..len)
        .map(|_| {
            s = splitmix(s);
            b'a' + (s % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(&prefix_end(b"/bench/")[..], b"/bench0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"")[..], b"\0");
    }

    #[test]
    fn keys_have_the_requested_size_and_txn_keys_are_owned() {
        let args = crate::args::parse(
            &"txn-put --clients 3 --key-space 10 --key-size 12"
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for index in 0..3 {
            let mut c = Client::new(&args, index, Bytes::new(), Arc::default());
            for _ in 0..50 {
                let n = c.next_key_number();
                assert!(n < 10);
                assert_eq!(n % 3, index as u64);
                assert_eq!(c.key(n).len(), 12);
            }
        }
    }

    fn parse(s: &str) -> Args {
        crate::args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn leases_are_dealt_to_clients_and_k8s_keys_spread_over_resources() {
        let args = parse("lease-keepalive --clients 3");
        let shared = Arc::new(Shared {
            leases: (10..17).collect(),
            ..Default::default()
        });
        let dealt: Vec<Vec<i64>> = (0..3)
            .map(|i| Vec::from(Client::new(&args, i, Bytes::new(), shared.clone()).leases))
            .collect();
        assert_eq!(dealt, [vec![10, 13, 16], vec![11, 14], vec![12, 15]]);

        let args = parse("k8s --resources 3 --key-space 9");
        let c = Client::new(&args, 0, Bytes::new(), Arc::default());
        assert_eq!(&c.key(0)[..], b"/registry/r0/0000000000000000000");
        assert_eq!(&c.key(4)[..], b"/registry/r1/0000000000000000001");
        assert_eq!(&c.key(8)[..], b"/registry/r2/0000000000000000002");
    }

    #[test]
    fn mod_revision_after_a_txn() {
        use ferrokv_wire::pb::etcdserverpb::ResponseOp;
        use ferrokv_wire::pb::mvccpb::KeyValue;
        let header = Some(ResponseHeader {
            revision: 42,
            ..Default::default()
        });
        let ok = TxnResponse {
            header,
            succeeded: true,
            responses: vec![],
        };
        assert_eq!(mod_revision_after(&ok, false), 42);
        assert_eq!(mod_revision_after(&ok, true), 0);
        let failed = |kvs: Vec<KeyValue>| TxnResponse {
            header,
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs,
                    ..Default::default()
                })),
            }],
        };
        let kv = KeyValue {
            mod_revision: 7,
            ..Default::default()
        };
        assert_eq!(mod_revision_after(&failed(vec![kv]), false), 7);
        assert_eq!(mod_revision_after(&failed(vec![]), false), 0);
        let t = txn_on_mod_revision(
            Bytes::from_static(b"k"),
            5,
            request_op::Request::RequestPut(PutRequest::default()),
        );
        assert_eq!(
            t.compare[0].target_union,
            Some(compare::TargetUnion::ModRevision(5))
        );
        assert_eq!(t.failure.len(), 1);
    }

    #[test]
    fn event_leases_are_reused_and_fail_soft() {
        let mut l = EventLease::default();
        assert!(l.grant_due(3));
        l.granted(Some(7), 3);
        // Three events on lease 7, then a new grant.
        for _ in 0..3 {
            assert!(!l.grant_due(3));
            assert_eq!(l.for_put(), 7);
            l.put_done(true);
        }
        assert!(l.grant_due(3));
        // A failed grant (no Lease service): three events without a lease,
        // then granting is tried again.
        l.granted(None, 3);
        for _ in 0..3 {
            assert!(!l.grant_due(3));
            assert_eq!(l.for_put(), 0);
            l.put_done(true);
        }
        assert!(l.grant_due(3));
        // A put that fails on its lease drops it: the next event grants.
        l.granted(Some(8), 3);
        assert_eq!(l.for_put(), 8);
        l.put_done(false);
        assert!(l.grant_due(3));
    }
}
