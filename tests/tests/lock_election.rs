//! The v3lock and v3election services, side by side with the real etcd:
//! the same gRPC calls against etcd 3.4 and ferrokv (4 shards) give the
//! same answers, written down as lines with lease ids named by order of
//! appearance (`L0`, `L1`, ...) and revisions counted from the scenario's
//! start. Covered: lock/unlock and their errors; a second Lock waiting for
//! an Unlock and for a revoke; a canceled Lock or Campaign leaving no key;
//! interop with `etcdctl lock` / `etcdctl elect` holders and observers;
//! campaign, proclaim, leader, observe and resign with a leader change and
//! etcd's errors; clients contending for one lock, checked exclusive; and
//! the waiting and election scenarios through the followers of a
//! three-member ferrokv cluster.
//!
//! One intended difference, pinned on both sides: a Lock whose lease ends
//! while it waits. etcd 3.4 keeps waiting and, once the older holders are
//! gone, answers success with a key that no longer exists; ferrokv answers
//! at once with etcd 3.5's `mutex: session is expired` (see
//! docs/compatibility.md).
//!
//! Every wait is bounded (calls by `CALL_TIMEOUT`, background etcdctl by
//! named bounds); every server is stopped by the harness on drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_tests::cluster::{wait_leader, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS};
use ferrokv_tests::etcdctl::Background;
use ferrokv_tests::grpc::{
    connect, connect_lazy, prefix_end, put, try_unary, try_unary_within, unary,
};
use ferrokv_tests::{
    ClusterOptions, EtcdProcess, FerrokvCluster, FerrokvProcess, ServerOptions, ServerProcess,
};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::pb::mvccpb::KeyValue;
use ferrokv_wire::pb::v3electionpb as epb;
use ferrokv_wire::pb::v3lockpb as lpb;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const SHARDS: u32 = 4;
/// How long a call that must be waiting is given to (wrongly) answer: a
/// correct server never answers, so this cannot fail spuriously.
const STILL_WAITING: Duration = Duration::from_millis(400);
/// Bound on a waiting call answering once it may.
const ANSWER_MAX: Duration = Duration::from_secs(10);
/// Bound on a canceled candidate's key being gone, and on etcdctl
/// printing what it must.
const SETTLE_MAX: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// Bound on a lease of the minimum TTL (2 s) expiring: TTL, etcd's 500 ms
/// revoke tick and slack for a loaded machine.
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(15);

fn start_ferrokv(dir: &std::path::Path) -> ServerProcess {
    FerrokvProcess::start_with(
        dir,
        ServerOptions {
            shards: Some(SHARDS),
            ..ServerOptions::default()
        },
    )
    .into_inner()
}

fn start_etcd(dir: &std::path::Path) -> ServerProcess {
    EtcdProcess::start(dir).into_inner()
}

type Failure = (tonic::Code, String);

fn failure(s: tonic::Status) -> Failure {
    (s.code(), s.message().to_string())
}

fn rev_of(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(-1, |h| h.revision)
}

// ---------------------------------------------------------------- calls

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    let r: pb::LeaseGrantResponse = unary(
        ch,
        "/etcdserverpb.Lease/LeaseGrant",
        pb::LeaseGrantRequest { ttl, id: 0 },
    )
    .await;
    r.id
}

async fn revoke(ch: &Channel, id: i64) -> i64 {
    let r: pb::LeaseRevokeResponse = unary(
        ch,
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeRequest { id },
    )
    .await;
    rev_of(&r.header)
}

async fn granted_ttl(ch: &Channel, id: i64) -> i64 {
    let r: pb::LeaseTimeToLiveResponse = unary(
        ch,
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveRequest { id, keys: false },
    )
    .await;
    r.granted_ttl
}

/// Every key under `prefix` (every key for ""), in key order.
async fn keys(ch: &Channel, prefix: &str) -> Vec<KeyValue> {
    let (key, range_end) = if prefix.is_empty() {
        (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
    } else {
        (
            Bytes::copy_from_slice(prefix.as_bytes()),
            prefix_end(prefix),
        )
    };
    let r: pb::RangeResponse = unary(
        ch,
        "/etcdserverpb.KV/Range",
        pb::RangeRequest {
            key,
            range_end,
            ..Default::default()
        },
    )
    .await;
    r.kvs
}

/// The revision now (a read's header).
async fn now_rev(ch: &Channel) -> i64 {
    let r: pb::RangeResponse = unary(
        ch,
        "/etcdserverpb.KV/Range",
        pb::RangeRequest {
            key: Bytes::from_static(b"now"),
            ..Default::default()
        },
    )
    .await;
    rev_of(&r.header)
}

async fn lock(ch: &Channel, name: &str, lease: i64) -> Result<(i64, Bytes), Failure> {
    let req = lpb::LockRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
    };
    try_unary::<_, lpb::LockResponse>(ch, "/v3lockpb.Lock/Lock", req)
        .await
        .map(|r| (rev_of(&r.header), r.key))
        .map_err(failure)
}

/// A Lock running on its own, to be checked waiting or answered.
fn lock_in_background(
    ch: &Channel,
    name: &str,
    lease: i64,
) -> JoinHandle<Result<(i64, Bytes), Failure>> {
    let (ch, name) = (ch.clone(), name.to_string());
    tokio::spawn(async move { lock(&ch, &name, lease).await })
}

async fn unlock(ch: &Channel, key: &[u8]) -> Result<i64, Failure> {
    let req = lpb::UnlockRequest {
        key: Bytes::copy_from_slice(key),
    };
    try_unary::<_, lpb::UnlockResponse>(ch, "/v3lockpb.Lock/Unlock", req)
        .await
        .map(|r| rev_of(&r.header))
        .map_err(failure)
}

async fn campaign(
    ch: &Channel,
    name: &str,
    lease: i64,
    value: &str,
) -> Result<(i64, epb::LeaderKey), Failure> {
    let req = epb::CampaignRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    try_unary::<_, epb::CampaignResponse>(ch, "/v3electionpb.Election/Campaign", req)
        .await
        .map(|r| (rev_of(&r.header), r.leader.unwrap_or_default()))
        .map_err(failure)
}

fn campaign_in_background(
    ch: &Channel,
    name: &str,
    lease: i64,
    value: &str,
) -> JoinHandle<Result<(i64, epb::LeaderKey), Failure>> {
    let (ch, name, value) = (ch.clone(), name.to_string(), value.to_string());
    tokio::spawn(async move { campaign(&ch, &name, lease, &value).await })
}

async fn proclaim(
    ch: &Channel,
    leader: Option<epb::LeaderKey>,
    value: &str,
) -> Result<i64, Failure> {
    let req = epb::ProclaimRequest {
        leader,
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    try_unary::<_, epb::ProclaimResponse>(ch, "/v3electionpb.Election/Proclaim", req)
        .await
        .map(|r| rev_of(&r.header))
        .map_err(failure)
}

async fn resign(ch: &Channel, leader: Option<epb::LeaderKey>) -> Result<i64, Failure> {
    try_unary::<_, epb::ResignResponse>(
        ch,
        "/v3electionpb.Election/Resign",
        epb::ResignRequest { leader },
    )
    .await
    .map(|r| rev_of(&r.header))
    .map_err(failure)
}

async fn leader(ch: &Channel, name: &str) -> Result<(i64, KeyValue), Failure> {
    let req = epb::LeaderRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
    };
    try_unary::<_, epb::LeaderResponse>(ch, "/v3electionpb.Election/Leader", req)
        .await
        .map(|r| (rev_of(&r.header), r.kv.unwrap_or_default()))
        .map_err(failure)
}

/// An Observe stream. Opened by a task of its own: a server may send the
/// response headers only with the first response (etcd does), which comes
/// once there is a leader.
struct Observer {
    rx: tokio::sync::mpsc::Receiver<epb::LeaderResponse>,
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Responses an observer may have queued before the test reads them.
const OBSERVED_PENDING_MAX: usize = 64;

fn observe(ch: &Channel, name: &str) -> Observer {
    let (tx, rx) = tokio::sync::mpsc::channel(OBSERVED_PENDING_MAX);
    let (ch, name) = (ch.clone(), Bytes::copy_from_slice(name.as_bytes()));
    let task = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(ch);
        grpc.ready().await.expect("connection ready");
        let codec = tonic_prost::ProstCodec::<epb::LeaderRequest, epb::LeaderResponse>::default();
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/v3electionpb.Election/Observe");
        let req = tonic::Request::new(epb::LeaderRequest { name });
        let mut stream = grpc
            .server_streaming(req, path, codec)
            .await
            .unwrap_or_else(|status| panic!("observe: {status}"))
            .into_inner();
        while let Some(resp) = stream.message().await.expect("observe stream") {
            if tx.send(resp).await.is_err() {
                return;
            }
        }
    });
    Observer { rx, task }
}

impl Observer {
    async fn next(&mut self) -> epb::LeaderResponse {
        tokio::time::timeout(ANSWER_MAX, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing observed within {ANSWER_MAX:?}"))
            .expect("observe stream ended")
    }
}

/// Waits for a JoinHandle's answer within `ANSWER_MAX`.
async fn answer<T>(h: JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(ANSWER_MAX, h)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_MAX:?}"))
        .unwrap_or_else(|e| panic!("{what}: task failed: {e}"))
}

async fn still_waiting<T>(h: &JoinHandle<T>) -> bool {
    tokio::time::sleep(STILL_WAITING).await;
    !h.is_finished()
}

// --------------------------------------------------------- observations

/// What a scenario saw, as lines: lease ids replaced by `L<n>` in order of
/// appearance (in keys too, where they are hex), revisions relative to the
/// scenario's start.
struct Seen {
    lines: Vec<String>,
    base: i64,
    leases: Vec<i64>,
}

impl Seen {
    async fn start(ch: &Channel) -> Seen {
        Seen {
            lines: Vec::new(),
            base: now_rev(ch).await,
            leases: Vec::new(),
        }
    }

    fn lease(&mut self, id: i64) -> String {
        if id == 0 {
            return "none".into();
        }
        let n = match self.leases.iter().position(|l| *l == id) {
            Some(n) => n,
            None => {
                self.leases.push(id);
                self.leases.len() - 1
            }
        };
        format!("L{n}")
    }

    /// `name/<lease hex>` with the lease named.
    fn key(&mut self, key: &[u8]) -> String {
        let key = String::from_utf8_lossy(key).into_owned();
        match key.rsplit_once('/') {
            Some((name, hex)) => match i64::from_str_radix(hex, 16) {
                Ok(id) => format!("{name}/{}", self.lease(id)),
                Err(_) => key,
            },
            None => key,
        }
    }

    fn rev(&self, r: i64) -> i64 {
        r - self.base
    }

    fn note(&mut self, line: String) {
        self.lines.push(line);
    }

    fn lock(&mut self, what: &str, r: &Result<(i64, Bytes), Failure>) {
        let line = match r {
            Ok((rev, key)) => format!("{what}: rev {} key {}", self.rev(*rev), self.key(key)),
            Err(f) => format!("{what}: {f:?}"),
        };
        self.note(line);
    }

    fn rev_or_err(&mut self, what: &str, r: &Result<i64, Failure>) {
        let line = match r {
            Ok(rev) => format!("{what}: rev {}", self.rev(*rev)),
            Err(f) => format!("{what}: {f:?}"),
        };
        self.note(line);
    }

    fn leader_key(&mut self, l: &epb::LeaderKey) -> String {
        format!(
            "name {} key {} rev {} lease {}",
            String::from_utf8_lossy(&l.name),
            self.key(&l.key),
            self.rev(l.rev),
            self.lease(l.lease)
        )
    }

    fn campaign(&mut self, what: &str, r: &Result<(i64, epb::LeaderKey), Failure>) {
        let line = match r {
            Ok((rev, l)) => format!(
                "{what}: rev {} leader {}",
                self.rev(*rev),
                self.leader_key(l)
            ),
            Err(f) => format!("{what}: {f:?}"),
        };
        self.note(line);
    }

    fn kv(&mut self, kv: &KeyValue) -> String {
        format!(
            "{}={} create {} mod {} lease {}",
            self.key(&kv.key),
            String::from_utf8_lossy(&kv.value),
            self.rev(kv.create_revision),
            self.rev(kv.mod_revision),
            self.lease(kv.lease)
        )
    }

    fn leader(&mut self, what: &str, r: &Result<(i64, KeyValue), Failure>) {
        let line = match r {
            Ok((rev, kv)) => format!("{what}: rev {} {}", self.rev(*rev), self.kv(kv)),
            Err(f) => format!("{what}: {f:?}"),
        };
        self.note(line);
    }

    async fn observed(&mut self, what: &str, o: &mut Observer) {
        let r = o.next().await;
        let line = format!(
            "{what}: rev {} {}",
            self.rev(rev_of(&r.header)),
            self.kv(&r.kv.unwrap_or_default())
        );
        self.note(line);
    }

    async fn keys(&mut self, what: &str, ch: &Channel, prefix: &str) {
        let mut kvs = keys(ch, prefix).await;
        // Keys hold lease ids, which differ between servers: list them in
        // create order.
        kvs.sort_by_key(|kv| kv.create_revision);
        let listed: Vec<String> = kvs.iter().map(|kv| self.kv(kv)).collect();
        self.note(format!("{what}: [{}]", listed.join(", ")));
    }
}

/// Runs `scenario` against etcd and ferrokv (one process each) and
/// compares what they saw.
async fn side_by_side<F, Fut>(scenario: F)
where
    F: Fn(ServerProcess) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    let want = scenario(start_etcd(etcd_dir.path())).await;
    let got = scenario(start_ferrokv(ours_dir.path())).await;
    assert_eq!(
        got,
        want,
        "ferrokv (left) vs etcd (right):\n{}",
        want.join("\n")
    );
}

// ------------------------------------------- 1. lock, unlock, errors

async fn lock_basics(server: ServerProcess) -> Vec<String> {
    let ch = connect(&server).await;
    let mut s = Seen::start(&ch).await;
    let a = grant(&ch, 600).await;
    s.lease(a);
    let held = lock(&ch, "n", a).await;
    s.lock("lock n", &held);
    // The same session again: its own key, at once.
    let again = lock(&ch, "n", a).await;
    s.lock("lock n again", &again);
    s.lock("lock unknown lease", &lock(&ch, "n", 0x5eed).await);
    // Lease 0: the server grants a session lease of 60 s and leaves it.
    let own = lock(&ch, "m", 0).await;
    s.lock("lock m lease 0", &own);
    if let Ok((_, key)) = &own {
        let hex = String::from_utf8_lossy(key)
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let id = i64::from_str_radix(&hex, 16).expect("hex lease in key");
        s.note(format!(
            "lease 0 granted ttl {}",
            granted_ttl(&ch, id).await
        ));
    }
    s.keys("keys", &ch, "").await;
    s.lock("lock empty name", &lock(&ch, "", a).await);
    let key = held.map(|(_, k)| k).unwrap_or_default();
    s.rev_or_err("unlock n", &unlock(&ch, &key).await);
    s.rev_or_err("unlock n twice", &unlock(&ch, &key).await);
    s.rev_or_err("unlock empty key", &unlock(&ch, b"").await);
    s.keys("keys after", &ch, "n").await;
    s.lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_unlock_and_errors_like_etcd() {
    side_by_side(lock_basics).await;
}

// ------------------------------- 2. waiting for an unlock and a revoke

/// A holds `w`; B and C wait in line; A unlocks (B's turn), B's lease is
/// revoked (C's turn). `a` and `b` are the members the calls go through.
async fn lock_waits(a: Channel, b: Channel) -> Vec<String> {
    let mut s = Seen::start(&a).await;
    let (la, lb, lc) = (
        grant(&a, 600).await,
        grant(&b, 600).await,
        grant(&a, 600).await,
    );
    for l in [la, lb, lc] {
        s.lease(l);
    }
    let held = lock(&a, "w", la).await;
    s.lock("A locks", &held);
    let wait_b = lock_in_background(&b, "w", lb);
    s.note(format!("B waits: {}", still_waiting(&wait_b).await));
    let wait_c = lock_in_background(&a, "w", lc);
    s.note(format!("C waits: {}", still_waiting(&wait_c).await));
    s.keys("candidates", &a, "w/").await;
    let key_a = held.map(|(_, k)| k).unwrap_or_default();
    s.rev_or_err("A unlocks", &unlock(&a, &key_a).await);
    let got_b = answer(wait_b, "B's lock").await;
    s.lock("B locks", &got_b);
    s.note(format!("C still waits: {}", still_waiting(&wait_c).await));
    let revoked = revoke(&b, lb).await;
    s.note(format!("B's lease revoked: rev {}", s.rev(revoked)));
    let got_c = answer(wait_c, "C's lock").await;
    s.lock("C locks", &got_c);
    s.keys("candidates after", &b, "w/").await;
    s.lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_lock_waits_for_unlock_and_revoke_like_etcd() {
    side_by_side(|server| async move {
        let ch = connect(&server).await;
        lock_waits(ch.clone(), ch).await
    })
    .await;
}

// --------------------------- 3. a waiter whose lease ends (the difference)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_whose_lease_is_revoked() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    for server in [start_etcd(etcd_dir.path()), start_ferrokv(ours_dir.path())] {
        let is_etcd = server.kind() == ferrokv_tests::server::ServerKind::Etcd;
        let ch = connect(&server).await;
        let (holder, waiter) = (grant(&ch, 600).await, grant(&ch, 600).await);
        let (_, held) = lock(&ch, "r", holder).await.expect("holder locks");
        let waiting = lock_in_background(&ch, "r", waiter);
        assert!(still_waiting(&waiting).await);
        revoke(&ch, waiter).await;
        if is_etcd {
            // etcd 3.4 keeps waiting for the holder, then answers success
            // with the key its lease took away.
            assert!(still_waiting(&waiting).await, "etcd answered early");
            unlock(&ch, &held).await.expect("unlock");
            let (_, key) = answer(waiting, "etcd's waiter")
                .await
                .expect("etcd: success");
            assert!(keys(&ch, "r/").await.is_empty());
            assert!(key.ends_with(format!("{waiter:x}").as_bytes()));
        } else {
            let got = answer(waiting, "ferrokv's waiter").await;
            assert_eq!(
                got,
                Err((
                    tonic::Code::Unknown,
                    "mutex: session is expired".to_string()
                ))
            );
            // The holder is unaffected.
            let left: Vec<Bytes> = keys(&ch, "r/").await.into_iter().map(|kv| kv.key).collect();
            assert_eq!(left, vec![held]);
        }
    }
}

/// ferrokv only (etcd 3.4 waits for the holder, as above): a waiter whose
/// lease is not kept alive fails when it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_whose_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_ferrokv(dir.path());
    let ch = connect(&server).await;
    let holder = grant(&ch, 600).await;
    let waiter = grant(&ch, 2).await;
    lock(&ch, "x", holder).await.expect("holder locks");
    let started = Instant::now();
    let req = lpb::LockRequest {
        name: Bytes::from_static(b"x"),
        lease: waiter,
    };
    let got =
        try_unary_within::<_, lpb::LockResponse>(&ch, "/v3lockpb.Lock/Lock", req, EXPIRY_WAIT_MAX)
            .await
            .unwrap_or_else(|| {
                panic!("no answer within {EXPIRY_WAIT_MAX:?} of the lease's expiry")
            });
    let status = got.expect_err("a lock on an expired lease");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unknown, "mutex: session is expired")
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "answered before the lease expired"
    );
}

// ----------------------------------- 4. a canceled call leaves no key

async fn canceled_calls(server: ServerProcess) -> Vec<String> {
    let ch = connect(&server).await;
    let mut s = Seen::start(&ch).await;
    let (holder, waiter) = (grant(&ch, 600).await, grant(&ch, 600).await);
    s.lease(holder);
    s.lease(waiter);
    s.lock("holder locks", &lock(&ch, "c", holder).await);
    let req = lpb::LockRequest {
        name: Bytes::from_static(b"c"),
        lease: waiter,
    };
    // The client gives up (its future dropped: the stream is reset).
    let gave_up =
        try_unary_within::<_, lpb::LockResponse>(&ch, "/v3lockpb.Lock/Lock", req, STILL_WAITING)
            .await;
    s.note(format!("waiter gave up: {}", gave_up.is_none()));
    s.note(format!(
        "waiter's key gone: {}",
        settles(&ch, "c/", 1).await
    ));
    s.keys("lock keys", &ch, "c/").await;

    campaign(&ch, "e", holder, "h").await.expect("leader");
    let req = epb::CampaignRequest {
        name: Bytes::from_static(b"e"),
        lease: waiter,
        value: Bytes::from_static(b"w"),
    };
    let gave_up = try_unary_within::<_, epb::CampaignResponse>(
        &ch,
        "/v3electionpb.Election/Campaign",
        req,
        STILL_WAITING,
    )
    .await;
    s.note(format!("candidate gave up: {}", gave_up.is_none()));
    s.note(format!(
        "candidate's key gone: {}",
        settles(&ch, "e/", 1).await
    ));
    s.keys("election keys", &ch, "e/").await;
    s.lines
}

/// Whether the keys under `prefix` come down to `n` within `SETTLE_MAX`.
async fn settles(ch: &Channel, prefix: &str, n: usize) -> bool {
    let deadline = Instant::now() + SETTLE_MAX;
    while Instant::now() < deadline {
        if keys(ch, prefix).await.len() == n {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_lock_and_campaign_leave_no_key_like_etcd() {
    side_by_side(canceled_calls).await;
}

// ------------------------------------------------------- 5. election

async fn election(a: Channel, b: Channel) -> Vec<String> {
    let mut s = Seen::start(&a).await;
    let (la, lb, lc) = (
        grant(&a, 600).await,
        grant(&b, 600).await,
        grant(&a, 600).await,
    );
    for l in [la, lb, lc] {
        s.lease(l);
    }
    s.leader("leader of none", &leader(&a, "e").await);
    s.rev_or_err("proclaim without leader", &proclaim(&a, None, "x").await);
    s.rev_or_err("resign without leader", &resign(&a, None).await);
    s.campaign(
        "campaign unknown lease",
        &campaign(&a, "e", 0x5eed, "x").await,
    );
    // Watching before anyone leads: the first leader's value comes.
    let mut early = observe(&b, "e");
    // Give it time to find no leader (it sees the same either way).
    tokio::time::sleep(STILL_WAITING).await;
    let first = campaign(&a, "e", la, "a1").await;
    s.campaign("A campaigns", &first);
    let lead_a = first.map(|(_, l)| l).ok();
    s.observed("early observer", &mut early).await;
    s.leader("leader", &leader(&b, "e").await);
    let wait_b = campaign_in_background(&b, "e", lb, "b1");
    s.note(format!("B waits: {}", still_waiting(&wait_b).await));
    s.rev_or_err("A proclaims", &proclaim(&a, lead_a.clone(), "a2").await);
    s.observed("early observer", &mut early).await;
    let mut stale = lead_a.clone().unwrap_or_default();
    stale.rev += 1;
    s.rev_or_err(
        "proclaim with a wrong rev",
        &proclaim(&a, Some(stale.clone()), "z").await,
    );
    s.rev_or_err("resign with a wrong rev", &resign(&a, Some(stale)).await);
    s.rev_or_err("A resigns", &resign(&a, lead_a.clone()).await);
    let got_b = answer(wait_b, "B's campaign").await;
    s.campaign("B campaigns", &got_b);
    s.observed("early observer", &mut early).await;
    let mut late = observe(&a, "e");
    s.observed("late observer", &mut late).await;
    s.rev_or_err(
        "A proclaims after resigning",
        &proclaim(&a, lead_a.clone(), "a3").await,
    );
    s.rev_or_err("A resigns again", &resign(&a, lead_a).await);
    // B's lease ends: no leader until C campaigns.
    let revoked = revoke(&a, lb).await;
    s.note(format!("B's lease revoked: rev {}", s.rev(revoked)));
    s.leader("leader after revoke", &leader(&a, "e").await);
    s.campaign("C campaigns", &campaign(&a, "e", lc, "c1").await);
    s.observed("early observer", &mut early).await;
    s.observed("late observer", &mut late).await;
    // The same session again with another value: its place, the value
    // proclaimed.
    let again = campaign(&b, "e", lc, "c2").await;
    s.campaign("C campaigns again", &again);
    s.observed("early observer", &mut early).await;
    s.observed("late observer", &mut late).await;
    // Lease 0 in a LeaderKey: etcd opens a session on a new lease for the
    // call, and the value is put with that lease.
    let mut no_lease = again.map(|(_, l)| l).unwrap_or_default();
    no_lease.lease = 0;
    s.rev_or_err(
        "C proclaims with lease 0",
        &proclaim(&b, Some(no_lease), "c3").await,
    );
    s.observed("early observer", &mut early).await;
    s.observed("late observer", &mut late).await;
    s.keys("keys", &a, "e/").await;
    if let Some(kv) = keys(&a, "e/").await.first() {
        s.note(format!(
            "its lease's ttl {}",
            granted_ttl(&a, kv.lease).await
        ));
    }
    s.lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_proclaim_leader_observe_resign_like_etcd() {
    side_by_side(|server| async move {
        let ch = connect(&server).await;
        election(ch.clone(), ch).await
    })
    .await;
}

// --------------------------------------- 6. etcdctl lock / elect interop

/// The lines etcdctl printed, lease hex named.
fn printed(s: &mut Seen, text: &str) -> String {
    text.lines()
        .map(|l| s.key(l.as_bytes()))
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn wait_until<F: Fn() -> bool>(what: &str, done: F) {
    let deadline = Instant::now() + SETTLE_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {SETTLE_MAX:?}");
        tokio::time::sleep(POLL).await;
    }
}

async fn with_etcdctl(server: ServerProcess) -> Vec<String> {
    let ch = connect(&server).await;
    let ep = server.endpoint();
    let mut s = Seen::start(&ch).await;
    // etcdctl holds the lock while its command runs, then unlocks.
    let ctl = Background::start(&ep, &["lock", "il", "--", "sleep", "2"]);
    let deadline = Instant::now() + SETTLE_MAX;
    while keys(&ch, "il/").await.is_empty() {
        assert!(Instant::now() < deadline, "etcdctl lock took the lock");
        tokio::time::sleep(POLL).await;
    }
    let la = grant(&ch, 600).await;
    let waiting = lock_in_background(&ch, "il", la);
    s.note(format!(
        "grpc Lock waits for etcdctl: {}",
        still_waiting(&waiting).await
    ));
    let got = answer(waiting, "grpc Lock after etcdctl").await;
    // etcdctl deletes its key before it revokes its session and exits:
    // wait for the exit, which may come after the gRPC Lock's answer.
    let out = ctl.stop(SETTLE_MAX, SETTLE_MAX);
    s.note(format!("etcdctl lock exited {}", out.code));
    s.lock("grpc Lock", &got);
    // And the other way: etcdctl waits for the gRPC holder.
    let ctl = Background::start(&ep, &["lock", "il", "--", "echo", "ctl-got-it"]);
    tokio::time::sleep(STILL_WAITING * 2).await;
    s.note(format!(
        "etcdctl printed while held: {:?}",
        ctl.wait_printed(1, Duration::ZERO)
    ));
    let key = got.map(|(_, k)| k).unwrap_or_default();
    unlock(&ch, &key).await.expect("unlock");
    let out = ctl.stop(SETTLE_MAX, SETTLE_MAX);
    s.note(format!(
        "etcdctl lock after unlock: exit {} {:?}",
        out.code,
        out.stdout.trim()
    ));

    // A gRPC leader, seen by an etcdctl observer; an etcdctl candidate
    // leads once it resigns.
    let leader_key = campaign(&ch, "ie", la, "grpc-value")
        .await
        .map(|(_, l)| l)
        .ok();
    let watcher = Background::start(&ep, &["elect", "-l", "ie"]);
    wait_until("observer printed the leader", || {
        watcher.wait_printed(1, Duration::ZERO)
    })
    .await;
    proclaim(&ch, leader_key.clone(), "grpc-value-2")
        .await
        .expect("proclaim");
    let candidate = Background::start(&ep, &["elect", "ie", "ctl-value"]);
    tokio::time::sleep(STILL_WAITING * 2).await;
    s.note(format!(
        "etcdctl candidate printed while led: {:?}",
        candidate.wait_printed(1, Duration::ZERO)
    ));
    resign(&ch, leader_key).await.expect("resign");
    wait_until("etcdctl candidate leads", || {
        candidate.wait_printed(1, Duration::ZERO)
    })
    .await;
    s.leader("grpc Leader", &leader(&ch, "ie").await);
    let lead = candidate.stop(Duration::from_millis(700), SETTLE_MAX);
    let lead = printed(&mut s, &lead.stdout);
    s.note(format!("etcdctl elect printed: {lead}"));
    let seen = watcher.stop(Duration::from_millis(700), SETTLE_MAX);
    let seen = printed(&mut s, &seen.stdout);
    s.note(format!("etcdctl elect -l printed: {seen}"));
    s.lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_etcdctl_lock_and_elect_like_etcd() {
    side_by_side(with_etcdctl).await;
}

// --------------------------------------------- 7. contention, exclusive

const CONTENDERS: usize = 5;
const ROUNDS: usize = 4;
/// Time inside the critical section between reading and writing the
/// counter: long enough for a second holder to interleave if exclusion
/// failed.
const HOLD: Duration = Duration::from_millis(20);

/// Every contender locks, reads the counter, waits, writes it plus one,
/// unlocks; an in-process count of holders checks that no two Lock calls
/// answered at once.
async fn contend(channels: Vec<Channel>) {
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, ch) in channels.into_iter().cycle().take(CONTENDERS).enumerate() {
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let lease = grant(&ch, 600).await;
            for round in 0..ROUNDS {
                let (_, key) = lock(&ch, "count-lock", lease)
                    .await
                    .unwrap_or_else(|f| panic!("contender {i} round {round}: {f:?}"));
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let kvs = keys(&ch, "counter").await;
                let n: i64 = kvs.first().map_or(0, |kv| {
                    String::from_utf8_lossy(&kv.value)
                        .parse()
                        .expect("a number")
                });
                tokio::time::sleep(HOLD).await;
                put(&ch, "counter", (n + 1).to_string()).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                unlock(&ch, &key).await.expect("unlock");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(ANSWER_MAX * 6, t)
            .await
            .expect("contenders finish")
            .expect("contender");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_clients_hold_the_lock_one_at_a_time() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    for server in [start_etcd(etcd_dir.path()), start_ferrokv(ours_dir.path())] {
        // One connection per contender, as separate clients would have.
        let mut channels = Vec::new();
        for _ in 0..CONTENDERS {
            channels.push(connect(&server).await);
        }
        contend(channels.clone()).await;
        let kvs = keys(&channels[0], "counter").await;
        let n = kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        assert_eq!(
            n,
            Some((CONTENDERS * ROUNDS).to_string()),
            "{}: lost updates",
            server.kind()
        );
        assert!(keys(&channels[0], "count-lock/").await.is_empty());
    }
}

// ------------------------------------- 8. through a cluster's followers

/// The waiting and election scenarios on a three-member ferrokv cluster,
/// the calls through its two followers (a holder on one, a waiter on the
/// other), against a one-member etcd running them alike.
#[test]
fn lock_and_election_through_cluster_followers_like_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = FerrokvCluster::start(
        &dir.path().join("ferrokv"),
        &["a", "b", "c"],
        "lock-election",
        ClusterOptions {
            shards: Some(2),
            extra_args: vec![
                format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
                format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
            ],
        },
    )
    .into_inner();
    let (leader_at, _) = wait_leader(&cluster, &[0, 1, 2], Duration::from_secs(15));
    let followers: Vec<String> = (0..3)
        .filter(|i| *i != leader_at)
        .map(|i| cluster.members[i].endpoint())
        .collect();
    let etcd = start_etcd(&dir.path().join("etcd"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (f1, f2) = (connect_lazy(&followers[0]), connect_lazy(&followers[1]));
        let one = connect(&etcd).await;
        let want = lock_waits(one.clone(), one.clone()).await;
        let got = lock_waits(f1.clone(), f2.clone()).await;
        assert_eq!(got, want, "cluster followers (left) vs etcd (right)");
        let want = election(one.clone(), one).await;
        let got = election(f1, f2).await;
        assert_eq!(got, want, "cluster followers (left) vs etcd (right)");
    });
}
