//! Integration tests of the shard log: propose -> WAL -> commit, restarts,
//! compaction, torn WAL tails.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ferrokv_raft::{Error, LogConfig, ShardLog};
use ferrokv_wal::{WalConfig, WalMetrics};
use glommio::{LocalExecutorBuilder, Placement};
use proptest::prelude::*;

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

fn cfg(segment_size_bytes: u64) -> LogConfig {
    LogConfig {
        wal: WalConfig {
            segment_size_bytes,
            batch_bytes_max: 1 << 20,
            metrics: Arc::new(WalMetrics::new()),
        },
        node_id: 1,
        voters: vec![1],
        election_tick: 10,
        heartbeat_tick: 1,
        tick_interval: Duration::from_millis(10),
        snapshot_conf: None,
        seed: None,
    }
}

fn data(i: u64) -> Vec<u8> {
    format!("put k{i} v{i} {}", "z".repeat((i % 50) as usize)).into_bytes()
}

async fn propose_concurrently(log: &Rc<ShardLog>, items: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
    let tasks: Vec<_> = items
        .into_iter()
        .map(|d| {
            let log = log.clone();
            glommio::spawn_local(async move {
                let idx = log.propose(d.clone()).await;
                (idx, d)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        let (idx, d) = t.await;
        out.push((idx.expect("proposal failed"), d));
    }
    out
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// End of the records in a segment's bytes.
fn data_end(bytes: &[u8]) -> usize {
    use ferrokv_wal::frame::{decode, Decoded};
    let mut off = 0;
    while let Decoded::Record { encoded_len, .. } = decode(&bytes[off..]) {
        off += encoded_len;
    }
    off
}

/// Writes garbage right after the last record of the newest segment that
/// holds records, as a crash in the middle of a write would leave it.
fn tear_tail(dir: &Path, garbage: &[u8]) {
    for seg in segments(dir).iter().rev() {
        let mut bytes = std::fs::read(seg).unwrap();
        let end = data_end(&bytes);
        if end > 0 {
            if bytes.len() < end + garbage.len() {
                bytes.resize(end + garbage.len(), 0);
            }
            bytes[end..end + garbage.len()].copy_from_slice(garbage);
            std::fs::write(seg, &bytes).unwrap();
            return;
        }
    }
}

#[test]
fn concurrent_proposals_commit_with_shared_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, rec) = ShardLog::open(&d, cfg(1 << 20), 0).await.unwrap();
        assert!(rec.entries.is_empty());
        assert!(log.is_leader());
        assert_eq!(log.leader_id(), 1);
        assert!(log.term() >= 1);
        let syncs_before = log.wal_fsync_count();
        let n = 400u64;
        let got = propose_concurrently(&log, (1..=n).map(data).collect()).await;
        // Queued in task order, so indices follow that order.
        for w in got.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "indices not increasing: {} then {}",
                w[0].0,
                w[1].0
            );
        }
        let syncs = log.wal_fsync_count() - syncs_before;
        assert!(syncs < n, "{syncs} fdatasyncs for {n} proposals");
        assert!(log.commit_index() >= got.last().unwrap().0);
        assert!(log.applied_index() >= got.last().unwrap().0);
        log.shutdown().await;
        assert!(matches!(log.propose(data(0)).await, Err(Error::Shutdown)));
    });
}

#[test]
fn restart_returns_committed_entries_after_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = ShardLog::open(&d, cfg(1 << 20), 0).await.unwrap();
        let mut acked = Vec::new();
        for i in 1..=50 {
            acked.push((log.propose(data(i)).await.unwrap(), data(i)));
        }
        let term1 = log.term();
        log.shutdown().await;

        let applied = acked[19].0;
        let (log, rec) = ShardLog::open(&d, cfg(1 << 20), applied).await.unwrap();
        assert_eq!(rec.entries, acked[20..].to_vec());
        assert_eq!(rec.commit_index, acked.last().unwrap().0);
        assert!(rec.term > term1);
        assert!(log.is_leader());
        let next = log.propose(data(51)).await.unwrap();
        assert!(next > acked.last().unwrap().0);
        log.shutdown().await;

        // From scratch: everything, including the entry after the restart.
        let (log, rec) = ShardLog::open(&d, cfg(1 << 20), 0).await.unwrap();
        assert_eq!(rec.entries.len(), 51);
        assert_eq!(&rec.entries[..50], &acked[..]);
        assert_eq!(rec.entries[50], (next, data(51)));
        log.shutdown().await;
    });
}

#[test]
fn compact_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = ShardLog::open(&d, cfg(4096), 0).await.unwrap();
        let mut acked = Vec::new();
        for round in 0..30 {
            let items = (round * 10 + 1..=round * 10 + 10).map(data).collect();
            acked.extend(propose_concurrently(&log, items).await);
        }
        let before = segments(&d).len();
        let snap = acked[249].0;
        log.compact_to(snap).await.unwrap();
        let after = segments(&d).len();
        assert!(after < before, "segments {before} -> {after}");
        // Compacting beyond what was applied is refused.
        assert!(matches!(
            log.compact_to(log.applied_index() + 10).await,
            Err(Error::CompactBeyondApplied { .. })
        ));
        let more = propose_concurrently(&log, (301..=320).map(data).collect()).await;
        log.shutdown().await;

        let (log, rec) = ShardLog::open(&d, cfg(4096), snap).await.unwrap();
        let mut want = acked[250..].to_vec();
        want.extend(more.clone());
        assert_eq!(rec.entries, want);
        log.shutdown().await;

        // The state machine must not be older than the compacted log.
        match ShardLog::open(&d, cfg(4096), snap - 5).await {
            Err(Error::AppliedBelowCompaction { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened below the compaction point"),
        }
    });
}

#[test]
fn torn_wal_restart_keeps_every_acknowledged_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (log, _) = ShardLog::open(&d, cfg(8192), 0).await.unwrap();
        let acked = propose_concurrently(&log, (1..=200).map(data).collect()).await;
        log.shutdown().await;
        // A half-written record header plus junk after the last record.
        tear_tail(&d, &[0x31, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x55, 0x66]);
        let (log, rec) = ShardLog::open(&d, cfg(8192), 0).await.unwrap();
        assert_eq!(rec.entries, acked);
        let next = log.propose(data(201)).await.unwrap();
        assert!(next > acked.last().unwrap().0);
        log.shutdown().await;
        let (log, rec) = ShardLog::open(&d, cfg(8192), 0).await.unwrap();
        assert_eq!(rec.entries.len(), 201);
        log.shutdown().await;
    });
}

#[derive(Debug, Clone)]
enum Op {
    Propose(u8),
    Compact,
    Restart,
    TornRestart(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..24).prop_map(Op::Propose),
        1 => Just(Op::Compact),
        1 => Just(Op::Restart),
        1 => proptest::collection::vec(1u8..=255, 1..40).prop_map(Op::TornRestart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random proposals, compactions and (torn) restarts never lose an
    /// acknowledged entry and never reorder entries.
    #[test]
    fn prop_acknowledged_entries_survive(ops in proptest::collection::vec(op(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        run(move || async move {
            // The caller's state machine: everything it learned, and the
            // index its durable snapshot covers.
            let mut known: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut snapshot_index = 0u64;
            let mut counter = 0u64;
            let (mut log, rec) = ShardLog::open(&d, cfg(2048), 0).await.unwrap();
            assert!(rec.entries.is_empty());
            for op in ops {
                match op {
                    Op::Propose(n) => {
                        let items: Vec<Vec<u8>> = (0..n).map(|_| { counter += 1; data(counter) }).collect();
                        let last_known = known.keys().next_back().copied().unwrap_or(0);
                        let got = propose_concurrently(&log, items).await;
                        for w in got.windows(2) {
                            assert!(w[0].0 < w[1].0);
                        }
                        assert!(got[0].0 > last_known, "index reused after restart");
                        known.extend(got);
                    }
                    Op::Compact => {
                        if let Some((&idx, _)) = known.iter().next_back() {
                            log.compact_to(idx).await.unwrap();
                            snapshot_index = idx;
                        }
                    }
                    Op::Restart | Op::TornRestart(_) => {
                        log.shutdown().await;
                        if let Op::TornRestart(g) = &op {
                            tear_tail(&d, g);
                        }
                        let (l, rec) = ShardLog::open(&d, cfg(2048), snapshot_index).await.unwrap();
                        let want: Vec<(u64, Vec<u8>)> = known
                            .range(snapshot_index + 1..)
                            .map(|(k, v)| (*k, v.clone()))
                            .collect();
                        assert_eq!(rec.entries, want);
                        log = l;
                    }
                }
            }
            log.shutdown().await;
        });
    }
}
