//! Stream-level Watch tests: a Rust gRPC client (tonic + the prost types of
//! `ferrokv-wire`) against a ferrokv started by the harness and, where cheap,
//! the same scenario against the real etcd, so that every expectation is
//! etcd's observed behaviour and not our reading of it.
//!
//! Every wait is bounded (`tokio::time::timeout`); servers are stopped by the
//! harness on drop, also when a test panics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_tests::grpc::{
    compact, connect, delete, prefix_end, put, txn_puts, BidiStream, CALL_TIMEOUT,
};
use ferrokv_tests::{EtcdProcess, FerrokvProcess, ServerOptions, ServerProcess};
use ferrokv_wire::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use ferrokv_wire::pb::mvccpb::event::EventType;
use tonic::transport::Channel;

/// How long "nothing more arrives" is observed.
const QUIET_PERIOD: Duration = Duration::from_millis(700);

fn create(key: &str, range_end: Bytes) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end,
        ..Default::default()
    }
}

fn create_req(c: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(c)),
    }
}

/// One bidirectional Watch stream.
struct WatchStream(BidiStream<WatchRequest, WatchResponse>);

impl WatchStream {
    async fn open(channel: &Channel, first: WatchCreateRequest) -> Self {
        WatchStream(BidiStream::open(channel, "/etcdserverpb.Watch/Watch", create_req(first)).await)
    }

    async fn send(&self, req: RequestUnion) {
        self.0
            .send(WatchRequest {
                request_union: Some(req),
            })
            .await;
    }

    async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    async fn next_within(&mut self, bound: Duration) -> Option<WatchResponse> {
        self.0.next_within(bound).await
    }

    async fn next(&mut self) -> WatchResponse {
        self.0.next().await
    }

    async fn expect_quiet(&mut self) {
        if let Some(resp) = self.next_within(QUIET_PERIOD).await {
            panic!("unexpected watch response: {resp:?}");
        }
    }
}

/// The fields of a response that must match etcd's (ids and terms differ).
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    watch_id: i64,
    created: bool,
    canceled: bool,
    compact_revision: i64,
    cancel_reason: String,
    fragment: bool,
    header_revision: i64,
    events: Vec<(i32, String, i64, Option<i64>)>,
}

fn shape(r: &WatchResponse) -> Shape {
    Shape {
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason.clone(),
        fragment: r.fragment,
        header_revision: r.header.as_ref().map_or(-1, |h| h.revision),
        events: r
            .events
            .iter()
            .map(|e| {
                let kv = e.kv.clone().unwrap_or_default();
                (
                    e.r#type,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                    e.prev_kv.as_ref().map(|p| p.mod_revision),
                )
            })
            .collect(),
    }
}

fn start_ferrokv(dir: &std::path::Path) -> ServerProcess {
    FerrokvProcess::start(dir).into_inner()
}

fn start_etcd(dir: &std::path::Path) -> ServerProcess {
    EtcdProcess::start(dir).into_inner()
}

// ------------------------------------------------------------ metrics

fn metric(server: &ServerProcess, name: &str) -> f64 {
    let (_, body) = ferrokv_tests::http_get(server.client_addr(), "/metrics");
    body.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{body}"))
}

// ------------------------------------------ 1. ordering and exactly-once

const WRITERS: usize = 4;
const WRITES_PER_WRITER: usize = 200;
const WRITE_PHASE_MAX: Duration = Duration::from_secs(20);

/// Per acknowledged revision, the (type, key) pairs it must produce, in op
/// order.
type Expected = BTreeMap<i64, Vec<(i32, String)>>;

async fn writer(channel: Channel, w: usize) -> Expected {
    let mut acked = Expected::new();
    let deadline = Instant::now() + WRITE_PHASE_MAX;
    for j in 0..WRITES_PER_WRITER {
        if Instant::now() > deadline {
            break;
        }
        let put_ev = EventType::Put as i32;
        if j % 5 == 4 {
            // Ops in descending key order: a revision's events must come in
            // op (sub-revision) order, not key order.
            let keys: Vec<String> = (0..3).rev().map(|k| format!("/o/{w}/{j}/{k}")).collect();
            let kvs = keys
                .iter()
                .map(|k| (k.clone(), Bytes::from(format!("v{j}"))))
                .collect();
            let rev = txn_puts(&channel, kvs).await;
            let evs: Vec<_> = keys.into_iter().map(|k| (put_ev, k)).collect();
            assert!(
                acked.insert(rev, evs).is_none(),
                "revision {rev} acked twice"
            );
        } else if j % 7 == 6 && (j - 1) % 5 != 4 {
            // Deletes the plain put of the previous step (a delete of a
            // missing key creates no revision).
            let key = format!("/o/{w}/{}", j - 1);
            let rev = delete(&channel, &key).await;
            assert!(
                acked
                    .insert(rev, vec![(EventType::Delete as i32, key)])
                    .is_none(),
                "revision {rev} acked twice"
            );
        } else {
            let key = format!("/o/{w}/{j}");
            let rev = put(&channel, &key, format!("v{j}")).await;
            assert!(
                acked.insert(rev, vec![(put_ev, key)]).is_none(),
                "revision {rev} acked twice"
            );
        }
    }
    acked
}

async fn ordering_and_exactly_once(server: &ServerProcess) {
    let channel = connect(server).await;
    let mut watch = WatchStream::open(&channel, create("/o/", prefix_end("/o/"))).await;
    let created = watch.next().await;
    assert!(created.created && !created.canceled, "{created:?}");

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(channel.clone(), w)))
        .collect();
    let mut acked = Expected::new();
    for t in tasks {
        let part = tokio::time::timeout(WRITE_PHASE_MAX + CALL_TIMEOUT, t)
            .await
            .expect("writer ended within bound")
            .expect("writer task");
        for (rev, evs) in part {
            assert!(
                acked.insert(rev, evs).is_none(),
                "revision {rev} acked twice"
            );
        }
    }
    assert!(!acked.is_empty());

    let mut seen = Expected::new();
    let mut last_rev = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < acked.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(resp) = watch.next_within(left).await else {
            let missing: Vec<_> = acked.keys().filter(|r| !seen.contains_key(r)).collect();
            panic!(
                "{}: events of {} acknowledged revisions never arrived, e.g. {:?}",
                server.kind(),
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        };
        assert!(!resp.canceled, "{resp:?}");
        let mut in_resp: BTreeMap<i64, Vec<(i32, String)>> = BTreeMap::new();
        let mut prev_in_resp = 0;
        for e in &resp.events {
            let kv = e.kv.as_ref().expect("event kv");
            let rev = kv.mod_revision;
            assert!(
                rev > last_rev,
                "{}: event revision {rev} after revision {last_rev} of an earlier response \
                 (not strictly increasing across responses, or a revision split over responses)",
                server.kind()
            );
            assert!(
                rev >= prev_in_resp,
                "events out of order within a response: {resp:?}"
            );
            prev_in_resp = rev;
            in_resp
                .entry(rev)
                .or_default()
                .push((e.r#type, String::from_utf8_lossy(&kv.key).into_owned()));
        }
        if let Some(max) = in_resp.keys().next_back() {
            last_rev = *max;
        }
        for (rev, evs) in in_resp {
            let Some(want) = acked.get(&rev) else {
                panic!(
                    "{}: event at revision {rev} that no write acknowledged: {evs:?}",
                    server.kind()
                );
            };
            assert_eq!(&evs, want, "{}: events of revision {rev}", server.kind());
            assert!(
                seen.insert(rev, evs).is_none(),
                "revision {rev} delivered twice"
            );
        }
    }
    // Nothing after the last acknowledged write.
    watch.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_across_shards_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ferrokv = FerrokvProcess::start_with(
        dir.path(),
        ServerOptions {
            shards: Some(4),
            ..ServerOptions::default()
        },
    )
    .into_inner();
    let etcd = start_etcd(dir.path());
    ordering_and_exactly_once(&etcd).await;
    ordering_and_exactly_once(&ferrokv).await;
}

// -------------------------------------------- 2. ids, streams, duplicates

async fn ids_scenario(server: &ServerProcess) -> Vec<Shape> {
    let channel = connect(server).await;
    let mut out = Vec::new();
    // Stream A: client-chosen 1, then auto ids, then a duplicate id.
    let mut a = WatchStream::open(
        &channel,
        WatchCreateRequest {
            watch_id: 1,
            ..create("/ids/a", Bytes::new())
        },
    )
    .await;
    out.push(shape(&a.next().await));
    a.create(create("/ids/a", Bytes::new())).await;
    out.push(shape(&a.next().await));
    a.create(create("/ids/a", Bytes::new())).await;
    out.push(shape(&a.next().await));
    a.create(WatchCreateRequest {
        watch_id: 1,
        ..create("/ids/a", Bytes::new())
    })
    .await;
    out.push(shape(&a.next().await));
    // Stream B on the same connection: ids start again from 0.
    let mut b = WatchStream::open(&channel, create("/ids/a", Bytes::new())).await;
    out.push(shape(&b.next().await));
    b.create(create("/ids/", prefix_end("/ids/"))).await;
    out.push(shape(&b.next().await));

    put(&channel, "/ids/a", "x").await;
    // A: three watchers (1, 0, 2) each get the event once; order between
    // watchers is not defined, so sort by id.
    let mut got_a: Vec<Shape> = Vec::new();
    for _ in 0..3 {
        got_a.push(shape(&a.next().await));
    }
    got_a.sort_by_key(|s| s.watch_id);
    let mut got_b: Vec<Shape> = Vec::new();
    for _ in 0..2 {
        got_b.push(shape(&b.next().await));
    }
    got_b.sort_by_key(|s| s.watch_id);
    out.extend(got_a);
    out.extend(got_b);
    a.expect_quiet().await;
    b.expect_quiet().await;
    // An empty range (key >= range_end) is refused like a duplicate id.
    b.create(create("/ids/b", Bytes::from_static(b"/ids/a")))
        .await;
    out.push(shape(&b.next().await));
    b.expect_quiet().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ids_streams_and_duplicates_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    let want = ids_scenario(&etcd).await;
    let got = ids_scenario(&ferrokv).await;
    // Sanity: etcd's own answer is what the docs describe.
    assert_eq!(
        want.iter().take(6).map(|s| s.watch_id).collect::<Vec<_>>(),
        vec![1, 0, 2, -1, 0, 1]
    );
    assert!(want[3].created && want[3].canceled && !want[3].cancel_reason.is_empty());
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
}

// ---------------------------------------------------- 3. cancel, progress

async fn cancel_progress_scenario(server: &ServerProcess) -> Vec<Shape> {
    let channel = connect(server).await;
    let mut out = Vec::new();
    let mut w = WatchStream::open(&channel, create("/c/k", Bytes::new())).await;
    out.push(shape(&w.next().await));
    put(&channel, "/c/k", "1").await;
    out.push(shape(&w.next().await));
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 0,
    }))
    .await;
    out.push(shape(&w.next().await));
    put(&channel, "/c/k", "2").await;
    w.expect_quiet().await;
    // Cancel of an unknown id: etcd answers nothing.
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 7,
    }))
    .await;
    w.expect_quiet().await;
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    out.push(shape(&w.next().await));
    w.expect_quiet().await;
    // After the client half-closes, events keep flowing (etcd).
    let mut h = WatchStream::open(&channel, create("/c/h", Bytes::new())).await;
    out.push(shape(&h.next().await));
    h.0.close_send();
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&channel, "/c/h", "1").await;
    out.push(shape(&h.next().await));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_progress_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    let want = cancel_progress_scenario(&etcd).await;
    let got = cancel_progress_scenario(&ferrokv).await;
    assert!(want[2].canceled && want[2].watch_id == 0, "{want:?}");
    assert_eq!(want[3].watch_id, -1);
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
}

// --------------------------------------- 4. filters, prev_kv, fragments

async fn filters_scenario(server: &ServerProcess) -> Vec<Shape> {
    let channel = connect(server).await;
    let mut out = Vec::new();
    let mut w = WatchStream::open(
        &channel,
        WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..create("/f/", prefix_end("/f/"))
        },
    )
    .await;
    out.push(shape(&w.next().await));
    w.create(WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        ..create("/f/", prefix_end("/f/"))
    })
    .await;
    out.push(shape(&w.next().await));
    w.create(WatchCreateRequest {
        prev_kv: true,
        ..create("/f/", prefix_end("/f/"))
    })
    .await;
    out.push(shape(&w.next().await));
    put(&channel, "/f/a", "1").await;
    put(&channel, "/f/a", "2").await;
    delete(&channel, "/f/a").await;
    // 2 (NODELETE) + 1 (NOPUT) + 3 (prev_kv) responses.
    let mut got = Vec::new();
    let mut prev_values = Vec::new();
    for _ in 0..6 {
        let r = w.next().await;
        if r.watch_id == 2 {
            for e in &r.events {
                prev_values.push(e.prev_kv.as_ref().map(|p| p.value.clone()));
            }
        }
        got.push(shape(&r));
    }
    assert_eq!(
        prev_values,
        vec![None, Some(Bytes::from("1")), Some(Bytes::from("2"))],
        "{}: prev_kv values",
        server.kind()
    );
    got.sort_by_key(|s| (s.watch_id, s.header_revision));
    out.extend(got);
    w.expect_quiet().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_prev_kv_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    let want = filters_scenario(&etcd).await;
    let got = filters_scenario(&ferrokv).await;
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
}

const FRAG_KEYS: usize = 10;
const FRAG_VALUE: usize = 140 * 1024;

/// (fragment flag, events) per response of one large txn, with prev_kv so
/// that its ~2.8 MiB of events exceed etcd's limit (1.5 MiB + 512 KiB).
async fn fragment_scenario(server: &ServerProcess) -> Vec<(bool, usize)> {
    let channel = connect(server).await;
    let keys: Vec<String> = (0..FRAG_KEYS).map(|i| format!("/frag/{i:02}")).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&channel, k, vec![b'a' + i as u8; FRAG_VALUE]).await;
    }
    let mut w = WatchStream::open(
        &channel,
        WatchCreateRequest {
            prev_kv: true,
            fragment: true,
            ..create("/frag/", prefix_end("/frag/"))
        },
    )
    .await;
    assert!(w.next().await.created);
    let kvs = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), Bytes::from(vec![b'A' + i as u8; FRAG_VALUE])))
        .collect();
    let rev = txn_puts(&channel, kvs).await;
    let mut flags = Vec::new();
    let mut events = Vec::new();
    loop {
        let r = w.next().await;
        flags.push((r.fragment, r.events.len()));
        events.extend(r.events);
        if !r.fragment {
            break;
        }
    }
    assert_eq!(
        events.len(),
        FRAG_KEYS,
        "{}: reassembled events",
        server.kind()
    );
    for (i, e) in events.iter().enumerate() {
        let kv = e.kv.as_ref().unwrap();
        assert_eq!(kv.key, keys[i].as_bytes(), "{}", server.kind());
        assert_eq!(kv.mod_revision, rev);
        assert_eq!(kv.value, vec![b'A' + i as u8; FRAG_VALUE]);
        let prev = e.prev_kv.as_ref().expect("prev_kv");
        assert_eq!(prev.value, vec![b'a' + i as u8; FRAG_VALUE]);
    }
    assert!(
        flags.len() > 1,
        "{}: expected fragments, got {flags:?}",
        server.kind()
    );
    w.expect_quiet().await;
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_reassemble_and_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    let want = fragment_scenario(&etcd).await;
    let got = fragment_scenario(&ferrokv).await;
    eprintln!("etcd fragments (flag, events): {want:?}");
    assert_eq!(got, want, "fragment flags: ferrokv (left) vs etcd (right)");
}

// ------------------------------------------------------- 5. compaction

async fn compacted_scenario(server: &ServerProcess) -> Vec<Shape> {
    let channel = connect(server).await;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(put(&channel, "/cmp/k", format!("{i}")).await);
    }
    compact(&channel, revs[3]).await;
    let mut w = WatchStream::open(
        &channel,
        WatchCreateRequest {
            start_revision: revs[0],
            ..create("/cmp/", prefix_end("/cmp/"))
        },
    )
    .await;
    let mut out = vec![shape(&w.next().await), shape(&w.next().await)];
    // A start equal to the compaction revision still works.
    w.create(WatchCreateRequest {
        start_revision: revs[3],
        ..create("/cmp/", prefix_end("/cmp/"))
    })
    .await;
    out.push(shape(&w.next().await));
    out.push(shape(&w.next().await));
    w.expect_quiet().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_canceled_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    let want = compacted_scenario(&etcd).await;
    let got = compacted_scenario(&ferrokv).await;
    eprintln!("etcd: {want:#?}");
    assert!(want[1].canceled && want[1].compact_revision > 0, "{want:?}");
    assert_eq!(got, want, "ferrokv (left) vs etcd (right)");
}

// --------------------------------------------------- 6. slow consumer

const SLOW_WRITES: usize = 3000;
const SLOW_VALUE: usize = 4096;
const SLOW_WRITERS: usize = 4;
const SLOW_PUT_MAX: Duration = Duration::from_secs(5);

/// One stream that is not read while writers and another watcher go on.
async fn slow_consumer_scenario(server: &ServerProcess) {
    let base_watchers = metric(server, "etcd_debugging_mvcc_watcher_total");
    let base_slow = metric(server, "etcd_debugging_mvcc_slow_watcher_total");

    let channel = connect(server).await;
    let slow_channel = connect(server).await;
    let mut slow = WatchStream::open(&slow_channel, create("/s/", prefix_end("/s/"))).await;
    assert!(slow.next().await.created);
    let mut fast = WatchStream::open(&channel, create("/s/", prefix_end("/s/"))).await;
    assert!(fast.next().await.created);

    let fast_reader = tokio::spawn(async move {
        let mut revs = Vec::new();
        while revs.len() < SLOW_WRITES {
            let Some(r) = fast.next_within(Duration::from_secs(60)).await else {
                break;
            };
            revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
        }
        (fast, revs)
    });

    let value = Bytes::from(vec![b'x'; SLOW_VALUE]);
    let writers: Vec<_> = (0..SLOW_WRITERS)
        .map(|w| {
            let channel = channel.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in (w..SLOW_WRITES).step_by(SLOW_WRITERS) {
                    let start = Instant::now();
                    revs.push(put(&channel, &format!("/s/{i:05}"), value.clone()).await);
                    let took = start.elapsed();
                    assert!(
                        took < SLOW_PUT_MAX,
                        "put {i} took {took:?} with a slow watcher"
                    );
                }
                revs
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for t in writers {
        let revs = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("writers within bound")
            .expect("writer");
        acked.extend(revs);
    }
    assert_eq!(acked.len(), SLOW_WRITES);

    let (fast, fast_revs) = tokio::time::timeout(Duration::from_secs(90), fast_reader)
        .await
        .expect("fast watcher within bound")
        .expect("fast reader");
    assert_eq!(
        fast_revs,
        acked.iter().copied().collect::<Vec<_>>(),
        "fast watcher: every acknowledged revision once, in order"
    );
    let slow_during = metric(server, "etcd_debugging_mvcc_slow_watcher_total");
    let watchers_during = metric(server, "etcd_debugging_mvcc_watcher_total");
    eprintln!(
        "{}: watchers: base {base_watchers}, during {watchers_during}; \
         slow: base {base_slow}, during {slow_during}",
        server.kind()
    );
    assert_eq!(watchers_during, base_watchers + 2.0, "{}", server.kind());
    // ~12 MiB of events the client never read are far beyond any buffer.
    assert!(
        slow_during > base_slow,
        "{}: the unread watcher is not counted as slow",
        server.kind()
    );

    // Now the slow stream catches up with every event, in order.
    let mut slow_revs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow_revs.len() < SLOW_WRITES {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = slow.next_within(left).await.unwrap_or_else(|| {
            panic!(
                "{}: slow watcher stuck after {} events",
                server.kind(),
                slow_revs.len()
            )
        });
        assert!(
            !r.canceled,
            "slow watcher canceled without compaction: {r:?}"
        );
        slow_revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(slow_revs, acked.iter().copied().collect::<Vec<_>>());
    slow.expect_quiet().await;

    drop(slow);
    drop(fast);
    drop(channel);
    drop(slow_channel);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(server, "etcd_debugging_mvcc_watcher_total");
        let slow_now = metric(server, "etcd_debugging_mvcc_slow_watcher_total");
        if now == base_watchers && slow_now == base_slow {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after all streams closed: watcher_total {now} (want {base_watchers}), \
             slow_watcher_total {slow_now} (want {base_slow})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_does_not_block_writers_or_others() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let ferrokv = start_ferrokv(dir.path());
    slow_consumer_scenario(&etcd).await;
    slow_consumer_scenario(&ferrokv).await;
}
