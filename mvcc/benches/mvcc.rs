//! MVCC store of one shard, in memory (no snapshot base): put (one key per
//! revision, as a Put request applies), single-key range, and a 100-key
//! prefix page, over 10,000 keys of 256-byte values. `cargo bench -p
//! ferrokv-mvcc`; under `cargo test --benches` each case runs once.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrokv_mvcc::{Store, WriteOp};

const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 256;

fn key(n: u64) -> Vec<u8> {
    format!("/bench/{n:025}").into_bytes()
}

fn put(n: u64) -> WriteOp {
    WriteOp::Put {
        key: key(n),
        value: vec![b'v'; VALUE_BYTES],
        lease: 0,
    }
}

/// A store holding `KEYS` keys, each written once.
fn filled() -> Store {
    let mut s = Store::new();
    for n in 0..KEYS {
        s.apply(n as i64 + 1, &[put(n)]);
    }
    s
}

fn puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc/put");
    group.throughput(Throughput::Elements(1));
    group.bench_function("overwrite_10k_keys", |b| {
        let mut s = filled();
        let mut rev = s.last_revision();
        let mut n = 0u64;
        b.iter(|| {
            rev += 1;
            n = (n + 7919) % KEYS;
            s.apply(rev, &[put(n)])
        });
    });
    group.bench_function("new_key", |b| {
        b.iter_batched(
            Store::new,
            |mut s| s.apply(1, &[put(1)]),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn ranges(c: &mut Criterion) {
    let s = filled();
    let mut group = c.benchmark_group("mvcc/range");
    let mut n = 0u64;
    group.bench_function("one_key", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            s.range(&key(n), &[], 0, 0, false, false).expect("range")
        });
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("prefix_page_100", |b| {
        b.iter(|| {
            n = (n + 7919) % KEYS;
            s.range(&key(n), b"/bench0", 0, 100, false, false)
                .expect("range")
        });
    });
    group.finish();
}

criterion_group!(benches, puts, ranges);
criterion_main!(benches);
