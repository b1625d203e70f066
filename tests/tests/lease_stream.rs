//! Stream-level Lease tests: a Rust gRPC client against ferrokv (4 shards, so
//! a lease's keys live in several shards) and, for every scenario whose
//! outcome a client sees, the same against the real etcd: revoke and expiry
//! delete every attached key at one revision (one watch response), the
//! keep-alive stream renews many leases (and one that is never read holds
//! up no one else), etcd's errors, and leases that
//! survive kill -9 with their keys, through snapshots and log truncation,
//! without expiring early.
//!
//! Every wait is bounded; servers are stopped by the harness on drop.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_tests::grpc::{connect, prefix_end, put, put_with_lease, try_unary, unary, BidiStream};
use ferrokv_tests::{EtcdProcess, FerrokvProcess, ServerOptions, ServerProcess};
use ferrokv_wire::pb::etcdserverpb::{
    request_op, watch_request::RequestUnion, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tonic::transport::Channel;

const SHARDS: u32 = 4;
/// Upper bound for a lease of the minimum TTL (2 s) to be revoked by
/// expiry: TTL + etcd's 500 ms revoke tick + slack for a loaded machine.
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(15);

fn start_ferrokv(dir: &std::path::Path, extra_args: Vec<String>) -> ServerProcess {
    FerrokvProcess::start_with(
        dir,
        ServerOptions {
            shards: Some(SHARDS),
            extra_args,
            ..ServerOptions::default()
        },
    )
    .into_inner()
}

fn start_etcd(dir: &std::path::Path) -> ServerProcess {
    EtcdProcess::start(dir).into_inner()
}

// ---------------------------------------------------------------- calls

async fn grant(channel: &Channel, id: i64, ttl: i64) -> Result<(i64, i64), (tonic::Code, String)> {
    try_unary::<_, LeaseGrantResponse>(
        channel,
        "/etcdserverpb.Lease/LeaseGrant",
        LeaseGrantRequest { ttl, id },
    )
    .await
    .map(|r| (r.id, r.ttl))
    .map_err(|s| (s.code(), s.message().to_string()))
}

async fn revoke(channel: &Channel, id: i64) -> Result<i64, (tonic::Code, String)> {
    try_unary::<_, LeaseRevokeResponse>(
        channel,
        "/etcdserverpb.Lease/LeaseRevoke",
        LeaseRevokeRequest { id },
    )
    .await
    .map(|r| r.header.map_or(-1, |h| h.revision))
    .map_err(|s| (s.code(), s.message().to_string()))
}

async fn time_to_live(channel: &Channel, id: i64) -> LeaseTimeToLiveResponse {
    unary(
        channel,
        "/etcdserverpb.Lease/LeaseTimeToLive",
        LeaseTimeToLiveRequest { id, keys: true },
    )
    .await
}

async fn lease_ids(channel: &Channel) -> BTreeSet<i64> {
    let r: LeaseLeasesResponse = unary(
        channel,
        "/etcdserverpb.Lease/LeaseLeases",
        LeaseLeasesRequest {},
    )
    .await;
    r.leases.iter().map(|l| l.id).collect()
}

/// Keys under `prefix` and the lease each is attached to.
async fn keys_and_leases(channel: &Channel, prefix: &str) -> Vec<(String, i64)> {
    let r: RangeResponse = unary(
        channel,
        "/etcdserverpb.KV/Range",
        RangeRequest {
            key: Bytes::copy_from_slice(prefix.as_bytes()),
            range_end: prefix_end(prefix),
            ..Default::default()
        },
    )
    .await;
    r.kvs
        .iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
        .collect()
}

async fn put_status(
    channel: &Channel,
    key: &str,
    lease: i64,
) -> Result<i64, (tonic::Code, String)> {
    try_unary::<_, ferrokv_wire::pb::etcdserverpb::PutResponse>(
        channel,
        "/etcdserverpb.KV/Put",
        PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            lease,
            ..Default::default()
        },
    )
    .await
    .map(|r| r.header.map_or(-1, |h| h.revision))
    .map_err(|s| (s.code(), s.message().to_string()))
}

async fn watch_prefix(channel: &Channel, prefix: &str) -> BidiStream<WatchRequest, WatchResponse> {
    let first = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::copy_from_slice(prefix.as_bytes()),
            range_end: prefix_end(prefix),
            ..Default::default()
        })),
    };
    let mut w: BidiStream<WatchRequest, WatchResponse> =
        BidiStream::open(channel, "/etcdserverpb.Watch/Watch", first).await;
    let created = w.next().await;
    assert!(created.created, "{created:?}");
    w
}

/// The (type, key, mod revision) of each event of one watch response, and
/// its header revision.
fn events(r: &WatchResponse) -> (i64, Vec<(i32, String, i64)>) {
    (
        r.header.as_ref().map_or(-1, |h| h.revision),
        r.events
            .iter()
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                (
                    e.r#type,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                )
            })
            .collect(),
    )
}

const DELETE: i32 = 1;

// -------------------------------------------- 1. revoke and its errors

/// What a client observes of one revoke and of the lease errors.
#[derive(Debug, PartialEq, Eq)]
struct RevokeObserved {
    granted_ttl: (i64, i64),
    min_ttl: i64,
    put_revisions: Vec<i64>,
    ttl_keys: Vec<String>,
    revoke_revision: i64,
    watched: (i64, Vec<(i32, String, i64)>),
    left: Vec<(String, i64)>,
    after: (i64, i64, usize),
    errors: Vec<Result<i64, (tonic::Code, String)>>,
}

const LEASE_KEYS: [&str; 8] = [
    "/l/a", "/l/b", "/l/c", "/l/d", "/l/e", "/l/f", "/l/g", "/l/h",
];

async fn revoke_scenario(server: &ServerProcess) -> RevokeObserved {
    let channel = connect(server).await;
    let (id, ttl) = grant(&channel, 0, 600).await.expect("grant");
    assert!(id > 0, "server-chosen ids are positive: {id}");
    let (_, min_ttl) = grant(&channel, 7, 1).await.expect("grant min");
    let mut put_revisions = Vec::new();
    for k in LEASE_KEYS {
        put_revisions.push(put_with_lease(&channel, k, "v", id).await);
    }
    put_revisions.push(put(&channel, "/l/z-no-lease", "v").await);
    // A txn attaching a key in another shard to a lease.
    let t: TxnRequest = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"/l/txn"),
                value: Bytes::from_static(b"t"),
                lease: id,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    let tr: TxnResponse = unary(&channel, "/etcdserverpb.KV/Txn", t).await;
    put_revisions.push(tr.header.map_or(-1, |h| h.revision));
    let ttl_resp = time_to_live(&channel, id).await;
    let mut ttl_keys: Vec<String> = ttl_resp
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // etcd lists a lease's keys in map order.
    ttl_keys.sort();

    let mut w = watch_prefix(&channel, "/l/").await;
    let revoke_revision = revoke(&channel, id).await.expect("revoke");
    let watched = events(&w.next().await);
    let left = keys_and_leases(&channel, "/l/").await;
    let gone = time_to_live(&channel, id).await;
    let after = (gone.ttl, gone.granted_ttl, gone.keys.len());

    let errors = vec![
        revoke(&channel, id).await,
        put_status(&channel, "/l/x", id).await,
        grant(&channel, 7, 60).await.map(|(_, ttl)| ttl),
        grant(&channel, 8, 9_000_000_001).await.map(|(_, ttl)| ttl),
        revoke(&channel, 7).await.map(|_| 0),
    ];
    RevokeObserved {
        granted_ttl: (ttl, ttl_resp.granted_ttl),
        min_ttl,
        put_revisions,
        ttl_keys,
        revoke_revision,
        watched,
        left,
        after,
        errors,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_every_key_at_one_revision_like_etcd() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(etcd_dir.path());
    let ours = start_ferrokv(ours_dir.path(), Vec::new());
    let want = revoke_scenario(&etcd).await;
    let got = revoke_scenario(&ours).await;
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
    // The expectations etcd met, spelled out.
    assert_eq!(want.min_ttl, 2);
    assert_eq!(want.watched.1.len(), LEASE_KEYS.len() + 1);
    assert!(want
        .watched
        .1
        .iter()
        .all(|(t, _, rev)| *t == DELETE && *rev == want.revoke_revision));
    assert_eq!(want.left, vec![("/l/z-no-lease".to_string(), 0)]);
}

// ------------------------------------------------------------ 2. expiry

async fn expiry_scenario(server: &ServerProcess) -> (usize, BTreeSet<i64>, i64) {
    let channel = connect(server).await;
    let (id, ttl) = grant(&channel, 0, 1).await.expect("grant");
    assert_eq!(ttl, 2, "raised to the minimum TTL");
    for k in ["/e/1", "/e/2", "/e/3", "/e/4"] {
        put_with_lease(&channel, k, "v", id).await;
    }
    let mut w = watch_prefix(&channel, "/e/").await;
    let resp = w
        .next_within(EXPIRY_WAIT_MAX)
        .await
        .unwrap_or_else(|| panic!("lease not expired within {EXPIRY_WAIT_MAX:?}"));
    let (header_rev, evs) = events(&resp);
    assert!(
        evs.iter()
            .all(|(t, _, rev)| *t == DELETE && *rev == header_rev),
        "{evs:?}"
    );
    let left = keys_and_leases(&channel, "/e/").await.len();
    (
        evs.len(),
        lease_ids(&channel).await,
        left as i64 + time_to_live(&channel, id).await.ttl,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_every_key_at_one_revision_like_etcd() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(etcd_dir.path());
    let ours = start_ferrokv(ours_dir.path(), Vec::new());
    let (want, got) = tokio::join!(expiry_scenario(&etcd), expiry_scenario(&ours));
    // Four deletes in one response, no lease left, no key left, TTL -1.
    assert_eq!(want, (4, BTreeSet::new(), -1));
    assert_eq!(got, want);
}

// --------------------------------------------------- 3. keep-alive stream

/// Keeps three minimum-TTL leases alive over one stream for longer than
/// their TTL; an unknown lease is answered TTL 0. Returns the responses'
/// (id index, TTL) and the keys alive after the keep-alive phase and after
/// the stream is closed and the leases expired.
async fn keepalive_scenario(server: &ServerProcess) -> (BTreeSet<(i64, i64)>, usize, usize) {
    const ROUNDS: usize = 8;
    const ROUND_EVERY: Duration = Duration::from_millis(500);
    let channel = connect(server).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (id, _) = grant(&channel, 0, 2).await.expect("grant");
        put_with_lease(&channel, &format!("/k/{i}"), "v", id).await;
        ids.push(id);
    }
    let unknown = 0x5eed;
    let mut ka: BidiStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> = BidiStream::open(
        &channel,
        "/etcdserverpb.Lease/LeaseKeepAlive",
        LeaseKeepAliveRequest { id: unknown },
    )
    .await;
    let mut seen = BTreeSet::new();
    let first = ka.next().await;
    seen.insert((if first.id == unknown { -1 } else { first.id }, first.ttl));
    for _ in 0..ROUNDS {
        for id in &ids {
            ka.send(LeaseKeepAliveRequest { id: *id }).await;
        }
        for _ in &ids {
            let r = ka.next().await;
            let index = ids.iter().position(|i| *i == r.id).map_or(-2, |p| p as i64);
            seen.insert((index, r.ttl));
        }
        tokio::time::sleep(ROUND_EVERY).await;
    }
    // 8 rounds of 0.5 s: well past the 2 s TTL, every key is still there.
    let alive = keys_and_leases(&channel, "/k/").await.len();
    ka.close_send();
    drop(ka);
    let deadline = Instant::now() + EXPIRY_WAIT_MAX;
    let mut after = alive;
    while Instant::now() < deadline {
        after = keys_and_leases(&channel, "/k/").await.len();
        if after == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (seen, alive, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_stream_renews_many_leases_like_etcd() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(etcd_dir.path());
    let ours = start_ferrokv(ours_dir.path(), Vec::new());
    let (want, got) = tokio::join!(keepalive_scenario(&etcd), keepalive_scenario(&ours));
    let expected: BTreeSet<(i64, i64)> = [(-1, 0), (0, 2), (1, 2), (2, 2)].into();
    assert_eq!(want, (expected, 3, 0));
    assert_eq!(got, want);
}

// ------------------------------------------- 4. a client that never reads

/// A keep-alive stream whose client sends without ever reading is slowed
/// down by flow control (its sends stop being taken), holds bounded memory,
/// and affects no one else: another connection's puts, grants and
/// keep-alives go on, and the server is fine once the stream goes away.
async fn never_reads_scenario(server: &ServerProcess) -> (bool, i64, i64) {
    const SENDS_MAX: usize = 200_000;
    const STALL: Duration = Duration::from_millis(200);
    let quiet = connect(server).await;
    let (id, _) = grant(&quiet, 0, 60).await.expect("grant");
    let greedy = connect(server).await;
    let ka: BidiStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> = BidiStream::open(
        &greedy,
        "/etcdserverpb.Lease/LeaseKeepAlive",
        LeaseKeepAliveRequest { id },
    )
    .await;
    let mut stalled = false;
    for _ in 0..SENDS_MAX {
        if !ka.send_within(LeaseKeepAliveRequest { id }, STALL).await {
            stalled = true;
            break;
        }
    }
    // Others are served meanwhile.
    put_with_lease(&quiet, "/nr/k", "v", id).await;
    let (other, _) = grant(&quiet, 0, 60).await.expect("grant while stalled");
    let mut ka2: BidiStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> = BidiStream::open(
        &quiet,
        "/etcdserverpb.Lease/LeaseKeepAlive",
        LeaseKeepAliveRequest { id: other },
    )
    .await;
    let renewed = ka2.next().await.ttl;
    drop(ka);
    drop(greedy);
    let after = put(&quiet, "/nr/after", "v").await;
    (stalled, renewed, i64::from(after > 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_client_that_never_reads_affects_no_one_else() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let ours_dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(etcd_dir.path());
    let ours = start_ferrokv(ours_dir.path(), Vec::new());
    let want = never_reads_scenario(&etcd).await;
    let got = never_reads_scenario(&ours).await;
    assert_eq!(want, (true, 60, 1), "etcd");
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
}

// ----------------------------------------------------------- 5. restart

/// Leases and their keys survive kill -9 — also when the snapshot holds
/// them and the log that granted them is gone — revoked ones stay revoked,
/// and a restart gives every lease its full TTL again (never early expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_kill_9_with_their_keys() {
    const SNAPSHOT_COUNT: usize = 5;
    const AGING_TTL: i64 = 20;
    /// Remaining TTL the aging lease is let to drop to before the restart.
    const AGED_TO: i64 = AGING_TTL - 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_ferrokv(
        dir.path(),
        vec![format!("--snapshot-count={SNAPSHOT_COUNT}")],
    );
    let channel = connect(&server).await;
    let (kept, _) = grant(&channel, 0, 600).await.expect("grant");
    let (revoked, _) = grant(&channel, 0, 600).await.expect("grant");
    let (chosen, _) = grant(&channel, 424_242, 600).await.expect("grant");
    let (aging, _) = grant(&channel, 0, AGING_TTL).await.expect("grant");
    // Enough writes that every shard passes --snapshot-count.
    for i in 0..(SNAPSHOT_COUNT * SHARDS as usize * 3) {
        put_with_lease(&channel, &format!("/r/{i:02}"), "v", kept).await;
    }
    put_with_lease(&channel, "/r/chosen", "v", chosen).await;
    put_with_lease(&channel, "/r/aging", "v", aging).await;
    put_with_lease(&channel, "/r/revoked", "v", revoked).await;
    revoke(&channel, revoked).await.expect("revoke");
    let before = keys_and_leases(&channel, "/r/").await;
    let kept_keys = time_to_live(&channel, kept).await.keys.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ttl = time_to_live(&channel, aging).await.ttl;
        if ttl <= AGED_TO {
            break;
        }
        assert!(Instant::now() < deadline, "lease TTL never counted down");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let snapshots = (0..SHARDS)
        .filter(|s| server.shard_dir(*s).join("snapshot.rkyv").is_file())
        .count();
    assert_eq!(snapshots, SHARDS as usize, "every shard took a snapshot");

    server.kill_9();
    server.start_again();
    let channel = connect(&server).await;
    assert_eq!(
        lease_ids(&channel).await,
        BTreeSet::from([kept, chosen, aging])
    );
    assert_eq!(keys_and_leases(&channel, "/r/").await, before);
    let ttl = time_to_live(&channel, kept).await;
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (600, kept_keys));
    let aged = time_to_live(&channel, aging).await;
    assert!(
        aged.ttl > AGED_TO,
        "a restart refreshes the TTL (etcd's promote): {} <= {AGED_TO}",
        aged.ttl
    );
    assert_eq!(
        put_status(&channel, "/r/x", revoked).await,
        Err((
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".to_string()
        ))
    );
    assert_eq!(
        grant(&channel, chosen, 60).await,
        Err((
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".to_string()
        ))
    );
    // Still fully usable: revoking deletes the keys in every shard.
    revoke(&channel, kept).await.expect("revoke after restart");
    let left: Vec<String> = keys_and_leases(&channel, "/r/")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, vec!["/r/aging".to_string(), "/r/chosen".to_string()]);
}
