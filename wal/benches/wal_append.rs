//! WAL append + fdatasync, the cost every acknowledged write pays:
//!
//! - `append_batch/N`: one `append` of N 256-byte records (one flush);
//! - `group_commit/N`: N concurrent one-record appends, which group commit
//!   should turn into about one fdatasync.
//!
//! The log lives under Cargo's target tmp dir, i.e. on the disk the build
//! uses, not on a tmpfs /tmp where fsync costs nothing. `cargo bench -p
//! ferrokv-wal`; under `cargo test --benches` each case runs once.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrokv_wal::{Wal, WalConfig};
use glommio::{LocalExecutorBuilder, Placement};

const PAYLOAD_BYTES: usize = 256;
/// Small segments: each sample opens a fresh WAL, and the default 64 MiB
/// preallocation would dominate short samples.
const SEGMENT_BYTES: u64 = 8 << 20;

fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("join executor")
}

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Opens a fresh WAL, times `body(wal, iters)`, closes it.
fn timed<B, Fut>(iters: u64, body: B) -> Duration
where
    B: FnOnce(Rc<Wal>, u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    run(move || async move {
        let dir = tempfile::tempdir_in(scratch()).expect("bench dir");
        let cfg = WalConfig {
            segment_size_bytes: SEGMENT_BYTES,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.path(), cfg).await.expect("open wal");
        let wal = Rc::new(wal);
        let start = Instant::now();
        body(wal.clone(), iters).await;
        let elapsed = start.elapsed();
        wal.close().await;
        elapsed
    })
}

fn append_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append_batch");
    group.sample_size(10);
    for n in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                timed(iters, move |wal, iters| async move {
                    for _ in 0..iters {
                        let batch = vec![vec![0xa5u8; PAYLOAD_BYTES]; n];
                        wal.append(batch).await.expect("append");
                    }
                })
            });
        });
    }
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/group_commit");
    group.sample_size(10);
    for n in [8usize, 64] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                timed(iters, move |wal, iters| async move {
                    for _ in 0..iters {
                        let appends: Vec<_> = (0..n)
                            .map(|_| {
                                let wal = wal.clone();
                                glommio::spawn_local(async move {
                                    wal.append(vec![vec![0x5au8; PAYLOAD_BYTES]])
                                        .await
                                        .expect("append");
                                })
                            })
                            .collect();
                        for a in appends {
                            a.await;
                        }
                    }
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append_batch, group_commit);
criterion_main!(benches);
