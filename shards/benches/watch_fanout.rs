//! Watch fanout hot paths of one core's hub: finding the watchers an event
//! concerns among 100,000 single-key watchers and 100 prefix watchers
//! (`WatcherIndex`, against the linear scan it replaced), and encoding one event for 10,000 watchers once per
//! shape (`SharedEvent::encoded`, what the hub does) against encoding it
//! per watcher. `cargo bench -p ferrokv-shards`; under
//! `cargo test --benches` each case runs once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrokv_mvcc::{Event, EventKind, KeyValue};
use ferrokv_shards::watch::{KeyRange, SharedEvent, WatcherIndex};
use ferrokv_wire::Message;

const KEY_WATCHERS: u64 = 100_000;
const PREFIX_WATCHERS: u64 = 100;
const FANOUT_WATCHERS: usize = 10_000;

fn key(n: u64) -> Vec<u8> {
    format!("/registry/pods/ns-{:03}/pod-{n:06}", n % PREFIX_WATCHERS).into_bytes()
}

/// Every watcher's range: the single-key ones, then the prefix ones.
fn ranges() -> Vec<KeyRange> {
    let mut out: Vec<KeyRange> = (0..KEY_WATCHERS).map(|n| KeyRange::Key(key(n))).collect();
    for p in 0..PREFIX_WATCHERS {
        let prefix = format!("/registry/pods/ns-{p:03}/").into_bytes();
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        out.push(KeyRange::Between(prefix, end));
    }
    out
}

fn index() -> WatcherIndex {
    let mut idx = WatcherIndex::default();
    for (id, r) in ranges().iter().enumerate() {
        idx.insert(id as u64, r);
    }
    idx
}

fn event(n: u64) -> Event {
    let kv = |rev: i64| KeyValue {
        key: key(n),
        create_revision: 2,
        mod_revision: rev,
        version: rev - 1,
        value: vec![b'v'; 256],
        lease: 0,
    };
    Event {
        kind: EventKind::Put,
        kv: kv(10),
        prev_kv: Some(kv(9)),
    }
}

fn match_event(c: &mut Criterion) {
    let idx = index();
    let mut g = c.benchmark_group("watch_index");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    let mut n = 0u64;
    g.bench_function("candidates_100k_key_100_prefix_watchers", |b| {
        b.iter(|| {
            out.clear();
            n = (n + 7919) % KEY_WATCHERS;
            idx.candidates(&key(n), &mut out);
            // The key's own watcher and its namespace's prefix watcher.
            assert_eq!(out.len(), 2);
            black_box(&out);
        })
    });
    // The hub before the index: every watcher tested against every event.
    let all = ranges();
    g.bench_function("linear_scan_100k_key_100_prefix_watchers", |b| {
        b.iter(|| {
            n = (n + 7919) % KEY_WATCHERS;
            let k = key(n);
            let hits = all.iter().filter(|r| r.contains(&k)).count();
            assert_eq!(hits, 2);
            black_box(hits)
        })
    });
    g.finish();
}

fn encode_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_encode_10k_watchers");
    g.throughput(Throughput::Elements(FANOUT_WATCHERS as u64));
    g.bench_function("shared_once_per_shape", |b| {
        b.iter(|| {
            let e = SharedEvent::new(event(1));
            let mut bytes = 0;
            for w in 0..FANOUT_WATCHERS {
                bytes += e.encoded(w % 2 == 0).len();
            }
            black_box(bytes)
        })
    });
    g.bench_function("per_watcher", |b| {
        b.iter(|| {
            let e = SharedEvent::new(event(1));
            let mut bytes = 0;
            for w in 0..FANOUT_WATCHERS {
                bytes += e.to_pb(w % 2 == 0).encode_to_vec().len();
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, match_event, encode_fanout);
criterion_main!(benches);
