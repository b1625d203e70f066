//! Integration tests of the WAL on real files through glommio.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ferrokv_wal::frame::encoded_len;
use ferrokv_wal::{Error, Wal, WalConfig, WalMetrics};
use glommio::{LocalExecutorBuilder, Placement};

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

struct CaptureLogger;
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}
impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        logs().lock().unwrap().push(format!("{}", record.args()));
    }
    fn flush(&self) {}
}
fn init_logger() {
    static LOGGER: CaptureLogger = CaptureLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
}
fn logged(needle: &str) -> bool {
    logs().lock().unwrap().iter().any(|l| l.contains(needle))
}

fn cfg(segment_size_bytes: u64) -> WalConfig {
    WalConfig {
        segment_size_bytes,
        batch_bytes_max: 1 << 20,
        metrics: Arc::new(WalMetrics::new()),
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// Appends records 1..=n one append each; returns the segment paths.
async fn write_n(dir: &Path, c: WalConfig, n: u64) -> Vec<PathBuf> {
    let (wal, recs) = Wal::open(dir, c).await.unwrap();
    assert!(recs.is_empty());
    for i in 1..=n {
        assert_eq!(wal.append(vec![payload(i)]).await.unwrap(), i);
    }
    let paths = wal.segment_paths();
    wal.close().await;
    paths
}

fn check_records(recs: &[(u64, Vec<u8>)], first: u64, last: u64) {
    assert_eq!(recs.len() as u64, last + 1 - first, "record count");
    for (k, (lsn, p)) in recs.iter().enumerate() {
        assert_eq!(*lsn, first + k as u64);
        assert_eq!(p, &payload(*lsn));
    }
}

#[test]
fn recovery_after_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        assert!(recs.is_empty());
        assert_eq!(wal.append(vec![payload(1), payload(2)]).await.unwrap(), 2);
        assert_eq!(wal.append(vec![payload(3)]).await.unwrap(), 3);
        assert_eq!(wal.append(vec![]).await.unwrap(), 3);
        assert_eq!(wal.append(vec![Vec::new()]).await.unwrap(), 4);
        wal.close().await;
        assert!(matches!(
            wal.append(vec![payload(5)]).await,
            Err(Error::Closed)
        ));

        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        assert_eq!(recs.len(), 4);
        check_records(&recs[..3], 1, 3);
        assert_eq!(recs[3], (4, Vec::new()));
        assert_eq!(wal.append(vec![payload(5)]).await.unwrap(), 5);
        wal.close().await;
        // Reopen twice: empty segments left by opens must not pile up.
        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        assert_eq!(recs.len(), 5);
        wal.close().await;
        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        assert_eq!(recs.len(), 5);
        assert!(wal.segment_paths().len() <= 3, "{:?}", wal.segment_paths());
        wal.close().await;
    });
}

#[test]
fn torn_tail_truncated_mid_record() {
    init_logger();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let paths = write_n(&d, cfg(1 << 20), 20).await;
        let seg = &paths[0];
        let data_len: u64 = (1..=20).map(|i| encoded_len(payload(i).len()) as u64).sum();
        // Cut the last record in half, as a crash mid-write would.
        let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(data_len - 5).unwrap();
        drop(f);

        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        check_records(&recs, 1, 19);
        assert!(logged("wal: torn tail in"), "{:?}", logs().lock().unwrap());
        assert!(logged(&format!("{}", seg.display())));
        // The log goes on with the lsn of the lost record.
        assert_eq!(wal.append(vec![payload(20)]).await.unwrap(), 20);
        wal.close().await;
        // The torn segment is no longer last: it must still open cleanly.
        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        check_records(&recs, 1, 20);
        wal.close().await;
    });
}

#[test]
fn torn_tail_with_garbage_and_zeros() {
    init_logger();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let paths = write_n(&d, cfg(1 << 20), 10).await;
        let seg = &paths[0];
        let data_len: u64 = (1..=10).map(|i| encoded_len(payload(i).len()) as u64).sum();
        let mut bytes = std::fs::read(seg).unwrap();
        bytes.truncate(data_len as usize - 3);
        // A torn record followed by zeros, then garbage.
        bytes.extend(vec![0u8; 700]);
        bytes.extend((0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        std::fs::write(seg, &bytes).unwrap();

        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        check_records(&recs, 1, 9);
        assert!(logged("wal: torn tail in"));
        wal.close().await;

        // Garbage right after the last complete record.
        let paths = {
            let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
            check_records(&recs, 1, 9);
            assert_eq!(wal.append(vec![payload(10)]).await.unwrap(), 10);
            let p = wal.segment_paths();
            wal.close().await;
            p
        };
        let last = paths.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let end = encoded_len(payload(10).len());
        bytes[end..end + 64].copy_from_slice(&[0xA5u8; 64]);
        std::fs::write(last, &bytes).unwrap();
        let (wal, recs) = Wal::open(&d, cfg(1 << 20)).await.unwrap();
        check_records(&recs, 1, 10);
        wal.close().await;
    });
}

#[test]
fn mid_log_corruption_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let paths = write_n(&d, cfg(1 << 20), 10).await;
        let seg = &paths[0];
        let off: usize = (1..=3).map(|i| encoded_len(payload(i).len())).sum();
        let mut bytes = std::fs::read(seg).unwrap();
        bytes[off + 18] ^= 0x01; // a payload byte of lsn 4
        std::fs::write(seg, &bytes).unwrap();
        let err = match Wal::open(&d, cfg(1 << 20)).await {
            Err(e) => e,
            Ok(_) => panic!("corrupt log opened"),
        };
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Corrupt { offset, .. } if offset == off as u64),
            "{msg}"
        );
        assert!(msg.contains(&seg.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("offset {off}")), "{msg}");
    });
}

#[test]
fn damage_in_non_last_segment_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        // Small segments: records spread over several.
        let paths = write_n(&d, cfg(512), 40).await;
        assert!(paths.len() >= 3, "{paths:?}");
        // Damage the tail of the first segment: a torn tail, but not in the
        // last segment, so it cannot be an unacknowledged write.
        let seg = &paths[0];
        let bytes = std::fs::read(seg).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        std::fs::write(seg, &bytes[..end - 2]).unwrap();
        match Wal::open(&d, cfg(512)).await {
            Err(Error::Corrupt { file, .. }) => assert!(file.contains(&seg.display().to_string())),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("damaged log opened"),
        }
    });
}

#[test]
fn lsn_gap_between_segments_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let paths = write_n(&d, cfg(512), 40).await;
        assert!(paths.len() >= 4);
        std::fs::remove_file(&paths[1]).unwrap();
        assert!(matches!(
            Wal::open(&d, cfg(512)).await,
            Err(Error::Corrupt { .. })
        ));
    });
}

#[test]
fn rotation_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let c = cfg(1024);
        let metrics = c.metrics.clone();
        let paths = write_n(&d, c, 300).await;
        assert!(paths.len() > 10, "only {} segments", paths.len());
        let bytes: u64 = (1..=300)
            .map(|i| encoded_len(payload(i).len()) as u64)
            .sum();
        assert_eq!(metrics.write_bytes_total(), bytes);
        assert_eq!(metrics.fsync.count(), 300);
        for p in &paths {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".wal") && name.len() == 16 + 1 + 16 + 4,
                "{name}"
            );
        }
        let (wal, recs) = Wal::open(&d, cfg(1024)).await.unwrap();
        check_records(&recs, 1, 300);
        assert_eq!(wal.append(vec![payload(301)]).await.unwrap(), 301);
        wal.close().await;
        // No leftover preallocated files after a reopen.
        let (wal, recs) = Wal::open(&d, cfg(1024)).await.unwrap();
        check_records(&recs, 1, 301);
        let tmp = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert!(tmp <= 1);
        wal.close().await;
    });
}

#[test]
fn truncate_before_removes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, cfg(1024)).await.unwrap();
        for i in 1..=200 {
            wal.append(vec![payload(i)]).await.unwrap();
        }
        let before = wal.segment_paths().len();
        wal.truncate_before(120).await.unwrap();
        let after = wal.segment_paths();
        assert!(after.len() < before);
        for p in &after {
            assert!(p.exists());
        }
        wal.close().await;
        let (wal, recs) = Wal::open(&d, cfg(1024)).await.unwrap();
        let first = recs[0].0;
        assert!(first > 1 && first <= 120, "first retained lsn {first}");
        check_records(&recs, first, 200);
        // Truncating past everything keeps the active segment and the lsn.
        wal.truncate_before(u64::MAX).await.unwrap();
        assert_eq!(wal.segment_paths().len(), 1);
        wal.close().await;
        let (wal, recs) = Wal::open(&d, cfg(1024)).await.unwrap();
        assert!(recs.is_empty());
        assert_eq!(wal.append(vec![payload(201)]).await.unwrap(), 201);
        wal.close().await;
        let (wal, recs) = Wal::open(&d, cfg(1024)).await.unwrap();
        check_records(&recs, 201, 201);
        wal.close().await;
    });
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let c = cfg(64 << 10);
        let metrics = c.metrics.clone();
        let (wal, _) = Wal::open(&d, c).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        let n = 500u64;
        let tasks: Vec<_> = (1..=n)
            .map(|i| {
                let wal = wal.clone();
                glommio::spawn_local(async move { (i, wal.append(vec![payload(i)]).await) })
            })
            .collect();
        let mut lsns = Vec::new();
        for t in tasks {
            let (i, res) = t.await;
            let lsn = res.unwrap();
            assert!(lsn <= wal.durable_lsn());
            lsns.push((i, lsn));
        }
        // Appends queued in task order get lsns in that order.
        for (i, lsn) in &lsns {
            assert_eq!(i, lsn);
        }
        let syncs = metrics.fsync.count();
        assert!(syncs < n, "{syncs} fdatasyncs for {n} appends");
        assert!(syncs >= 1);
        wal.close().await;
        let (wal, recs) = Wal::open(&d, cfg(64 << 10)).await.unwrap();
        check_records(&recs, 1, n);
        wal.close().await;
    });
}

#[test]
fn back_pressure_and_oversized_append() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let c = WalConfig {
            segment_size_bytes: 8192,
            batch_bytes_max: 256,
            metrics: Arc::new(WalMetrics::new()),
        };
        let (wal, _) = Wal::open(&d, c.clone()).await.unwrap();
        let wal = std::rc::Rc::new(wal);
        let tasks: Vec<_> = (0..100u64)
            .map(|_| {
                let wal = wal.clone();
                glommio::spawn_local(async move { wal.append(vec![vec![7u8; 100]]).await })
            })
            .collect();
        let mut lsns = Vec::new();
        for t in tasks {
            lsns.push(t.await.unwrap());
        }
        lsns.sort();
        assert_eq!(lsns, (1..=100).collect::<Vec<_>>());
        // Larger than both the batch bound and a segment: admitted alone.
        let big = vec![vec![1u8; 20_000], vec![2u8; 5]];
        assert_eq!(wal.append(big).await.unwrap(), 102);
        assert_eq!(wal.append(vec![vec![3u8; 10]]).await.unwrap(), 103);
        wal.close().await;
        let (wal, recs) = Wal::open(&d, c).await.unwrap();
        assert_eq!(recs.len(), 103);
        assert_eq!(recs[100].1.len(), 20_000);
        assert_eq!(recs[102], (103, vec![3u8; 10]));
        wal.close().await;
    });
}
