//! Fault tests against the real `ferrokv` binary, driven by the real
//! `etcdctl`:
//!
//! - `kill -9` in the middle of a concurrent load of cross-shard txns: every
//!   acknowledged txn survives whole, no txn survives in half, and the
//!   revisions each writer was acknowledged increase.
//! - A torn WAL tail (garbage, then a frame whose length runs past the end
//!   of the file) is cut off with a warning and loses no acknowledged write;
//!   a damaged record with valid records after it refuses to start, naming
//!   the file and offset.
//! - `--snapshot-count` snapshots and WAL truncation keep every key and the
//!   revision across restarts.
//!
//! Limits: writers are bounded by `WRITES_PER_WRITER_MAX` and
//! `LOAD_DURATION_MAX`, every wait by a named deadline, every etcdctl by the
//! harness's `ETCDCTL_TIMEOUT`; servers are killed when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::etcdctl::{parse_get_fields, FieldsKv};
use ferrokv_tests::normalize::json_u64_field;
use ferrokv_tests::server::ferrokv_bin;
use ferrokv_tests::{etcdctl, FerrokvProcess, Normalizer, ServerOptions, ServerProcess};

/// Concurrent writer threads in the kill -9 test.
const WRITERS: usize = 4;
/// Bound on the txns one writer attempts.
const WRITES_PER_WRITER_MAX: usize = 300;
/// Bound on the whole load, whatever happens to the server.
const LOAD_DURATION_MAX: Duration = Duration::from_secs(15);
/// The server is killed once this many txns were acknowledged (or at
/// `KILL_AFTER_MAX`, whichever comes first).
const ACKS_BEFORE_KILL: usize = 150;
const KILL_AFTER_MAX: Duration = Duration::from_secs(10);
/// Bound on waiting for a snapshot or a WAL truncation to appear on disk.
const DISK_STATE_WAIT_MAX: Duration = Duration::from_secs(20);
/// Bound on a server start that is expected to fail.
const FAILED_START_WAIT_MAX: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// WAL frame header: len u32LE, crc32c u32LE, lsn u64LE (wal/src/frame.rs).
const FRAME_HEADER_LEN: usize = 16;

/// CRC-32C (Castagnoli), bitwise: ferrokv places a key on shard
/// `crc32c(key) % shards` (shards/src/kv.rs), and the tests choose keys on
/// different shards with it.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn shard_of(key: &str, shards: u32) -> u32 {
    crc32c(key.as_bytes()) % shards
}

fn ctl(server: &ServerProcess, args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl(&server.endpoint(), args, stdin.map(str::as_bytes));
    assert_eq!(out.code, 0, "etcdctl {args:?} failed: {out:?}");
    out.stdout
}

/// `etcdctl get --prefix <prefix> -w fields`: `(header revision, key -> kv)`.
fn get_prefix(server: &ServerProcess, prefix: &str) -> (u64, BTreeMap<String, FieldsKv>) {
    parse_get_fields(&ctl(
        server,
        &["get", "--prefix", prefix, "-w", "fields"],
        None,
    ))
}

// ------------------------------------------------------------ kill -9 load

/// The two keys of txn `i` of writer `t`, on different shards of `shards`.
fn txn_keys(t: usize, i: usize, shards: u32) -> (String, String) {
    let a = format!("a/{t}/{i}");
    let sa = shard_of(&a, shards);
    let b = (0..)
        .map(|k| {
            if k == 0 {
                format!("b/{t}/{i}")
            } else {
                format!("b/{t}/{i}/{k}")
            }
        })
        .find(|b| shard_of(b, shards) != sa)
        .expect("some key lands on another shard");
    (a, b)
}

struct WriterLog {
    /// Txns sent (indices `0..attempted`).
    attempted: usize,
    /// `(i, header revision)` of every acknowledged txn, in ack order.
    acked: Vec<(usize, u64)>,
}

fn writer(
    endpoint: String,
    t: usize,
    shards: u32,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> WriterLog {
    let started = Instant::now();
    let mut log = WriterLog {
        attempted: 0,
        acked: Vec::new(),
    };
    for i in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_DURATION_MAX {
            break;
        }
        let (a, b) = txn_keys(t, i, shards);
        let v = format!("w{t}-{i}");
        // etcdctl's stdin format: compares (none), blank line, success ops,
        // blank line, failure ops (none), blank line.
        let stdin = format!("\nput {a} {v}\nput {b} {v}\n\n\n");
        log.attempted = i + 1;
        let out = etcdctl(&endpoint, &["txn", "-w", "json"], Some(stdin.as_bytes()));
        if out.code == 0 && out.stdout.contains("\"succeeded\":true") {
            let rev = json_u64_field(&out.stdout, "revision")
                .unwrap_or_else(|| panic!("txn response without revision: {out:?}"));
            log.acked.push((i, rev));
            acks.fetch_add(1, Ordering::SeqCst);
        }
    }
    log
}

/// The writer threads. Dropping them (also when the test panics) stops
/// them and waits for their last etcdctl, which the harness kills after
/// `ETCDCTL_TIMEOUT`: no etcdctl outlives the test.
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<WriterLog>>,
}

impl Writers {
    fn finish(&mut self) -> Vec<WriterLog> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .drain(..)
            .map(|h| h.join().expect("writer thread"))
            .collect()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[test]
fn kill_9_during_concurrent_cross_shard_txns() {
    const SHARDS: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FerrokvProcess::start_with_shards(dir.path(), SHARDS);
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let mut writers = Writers {
        stop: stop.clone(),
        handles: (0..WRITERS)
            .map(|t| {
                let (endpoint, stop, acks) = (server.endpoint(), stop.clone(), acks.clone());
                thread::spawn(move || writer(endpoint, t, SHARDS, stop, acks))
            })
            .collect(),
    };
    let started = Instant::now();
    while acks.load(Ordering::SeqCst) < ACKS_BEFORE_KILL && started.elapsed() < KILL_AFTER_MAX {
        thread::sleep(Duration::from_millis(10));
    }
    server.kill_9();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    // Restart before waiting for the writers: etcdctl 3.4's `txn` ignores
    // --command-timeout and retries a dead endpoint until it answers, so
    // the txns in flight at the kill end only once the server is back (an
    // ack they get then is as binding as any other).
    server.start_again();
    let restarted_after = started.elapsed();
    let logs = writers.finish();
    eprintln!(
        "killed after {killed_after:?}, up again after {restarted_after:?}, writers done after {:?}",
        started.elapsed()
    );

    let total_acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let total_attempted: usize = logs.iter().map(|l| l.attempted).sum();
    assert!(
        total_acked >= ACKS_BEFORE_KILL,
        "only {total_acked} txns acknowledged in {killed_after:?}; the kill did not hit a load"
    );
    eprintln!("{total_acked} txns acknowledged of {total_attempted} sent");

    let (rev_a, a_keys) = get_prefix(&server, "a/");
    let (rev_b, b_keys) = get_prefix(&server, "b/");
    let mut all_revs = BTreeSet::new();
    for (t, log) in logs.iter().enumerate() {
        // Revisions increase in the order this writer saw its acks.
        for w in log.acked.windows(2) {
            assert!(
                w[0].1 < w[1].1,
                "writer {t}: txn {} acknowledged at revision {} but later txn {} at {}",
                w[0].0,
                w[0].1,
                w[1].0,
                w[1].1
            );
        }
        let acked: BTreeMap<usize, u64> = log.acked.iter().copied().collect();
        for i in 0..WRITES_PER_WRITER_MAX {
            let (a, b) = txn_keys(t, i, SHARDS);
            let v = format!("w{t}-{i}");
            let (ga, gb) = (a_keys.get(&a), b_keys.get(&b));
            if let Some(rev) = acked.get(&i) {
                for (k, got) in [(&a, ga), (&b, gb)] {
                    let got = got.map(|kv| (kv.value.as_str(), kv.mod_revision));
                    assert_eq!(
                        got,
                        Some((v.as_str(), *rev)),
                        "acknowledged txn {i} of writer {t}: {k}"
                    );
                }
                assert!(all_revs.insert(*rev), "revision {rev} acknowledged twice");
            }
            match (ga, gb) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    assert!(i < log.attempted, "{a} exists but was never sent");
                    assert_eq!(x.value, v, "{a}");
                    // Same value, create and mod revision and version: no
                    // attempt of this txn (etcdctl may retry one that was in
                    // flight at the kill) survived in half.
                    assert_eq!(x, y, "txn {i} of writer {t}: {a} and {b} differ");
                }
                _ => panic!(
                    "half a transaction survived: txn {i} of writer {t}: {a} = {ga:?}, {b} = {gb:?}"
                ),
            }
        }
    }
    // Nothing else is in the keyspace under these prefixes.
    assert_eq!(a_keys.len(), b_keys.len());
    let max_acked = all_revs.last().copied().unwrap_or(0);
    assert!(rev_a >= max_acked && rev_b >= max_acked);

    // The member serves writes after the restart, above every old revision.
    let out = ctl(
        &server,
        &["txn", "-w", "json"],
        Some("\nput after kill\n\n\n"),
    );
    let rev = json_u64_field(&out, "revision").expect("revision");
    assert!(
        rev > rev_a,
        "write after restart at {rev}, not above {rev_a}"
    );
}

// ------------------------------------------------------------- WAL damage

fn wal_dir(server: &ServerProcess, shard: u32) -> PathBuf {
    server.shard_dir(shard).join("wal")
}

/// `*.wal` segments (not `.wal.tmp` preallocations), oldest first: names
/// are `{seq:016x}-{first_lsn:016x}.wal`.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// The frames of one segment: `(offset, payload len, lsn)` of each record
/// up to the first all-zero header, and the offset where data ends.
fn frames(path: &Path) -> (Vec<(usize, usize, u64)>, usize) {
    let buf = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut off = 0;
    while off + FRAME_HEADER_LEN <= buf.len() {
        let h = &buf[off..off + FRAME_HEADER_LEN];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(h[8..16].try_into().unwrap());
        assert!(
            off + FRAME_HEADER_LEN + len <= buf.len(),
            "{}: record at {off} runs past the end",
            path.display()
        );
        out.push((off, len, lsn));
        off += FRAME_HEADER_LEN + len;
    }
    (out, off)
}

fn overwrite(path: &Path, offset: usize, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset as u64)).expect("seek");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("sync");
}

/// Deterministic noise (xorshift), never starting with a zero byte.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    for _ in 0..len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.push((seed >> 24) as u8);
    }
    v[0] |= 1;
    v
}

fn put_keys(server: &ServerProcess, range: std::ops::Range<usize>) {
    for i in range {
        let out = ctl(
            server,
            &["put", &format!("k/{i:03}"), &format!("v{i}")],
            None,
        );
        assert_eq!(out.trim(), "OK");
    }
}

fn assert_keys(server: &ServerProcess, n: usize) {
    let (_, kvs) = get_prefix(server, "k/");
    let got: Vec<(String, String)> = kvs.into_iter().map(|(k, v)| (k, v.value)).collect();
    let want: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k/{i:03}"), format!("v{i}")))
        .collect();
    assert_eq!(got, want);
}

fn log_text(server: &ServerProcess) -> String {
    let mut s = String::new();
    fs::File::open(server.log_path())
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("read {}: {e}", server.log_path().display()));
    s
}

/// Runs the server binary with `server`'s flags, expecting it to exit on
/// its own within `FAILED_START_WAIT_MAX`; returns (exit code, output).
fn start_expecting_failure(server: &ServerProcess) -> (Option<i32>, String) {
    let out_path = server.member_dir().join("failed-start.log");
    let out = fs::File::create(&out_path).expect("create output file");
    let err = out.try_clone().expect("clone output file");
    let mut cmd = Command::new(ferrokv_bin().unwrap_or_else(|e| panic!("{e}")));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(server.args())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only an async-signal-safe libc call between fork and exec;
    // the child dies with this test process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn ferrokv");
    let deadline = Instant::now() + FAILED_START_WAIT_MAX;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL_INTERVAL);
    };
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!(
            "ferrokv kept running on a corrupt WAL for {FAILED_START_WAIT_MAX:?}; output:\n{text}"
        )
    });
    (status.code(), text)
}

#[test]
fn torn_wal_tail_is_cut_and_mid_log_damage_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FerrokvProcess::start_with_shards(dir.path(), 1);
    put_keys(&server, 0..20);
    server.kill_9();

    // 1. Garbage right after the last record of the newest segment, where a
    //    torn write of the next batch would leave it.
    let wal = wal_dir(&server, 0);
    let newest = segments(&wal).pop().expect("a WAL segment");
    let (recs, end) = frames(&newest);
    assert!(
        recs.len() >= 20,
        "{}: {} records",
        newest.display(),
        recs.len()
    );
    overwrite(&newest, end, &garbage(3000, 0x9e37_79b9_7f4a_7c15));
    server.start_again();
    assert_keys(&server, 20);
    let log = log_text(&server);
    let warning = format!("torn tail in {} at offset {end}", newest.display());
    assert!(log.contains(&warning), "no {warning:?} in the log:\n{log}");

    // 2. A frame header whose length runs past the end of the file, with a
    //    plausible next lsn and a few payload bytes.
    put_keys(&server, 20..25);
    server.kill_9();
    let newest = segments(&wal).pop().expect("a WAL segment");
    let (recs, end) = frames(&newest);
    let next_lsn = recs.last().map_or(1, |r| r.2 + 1);
    let file_len = fs::metadata(&newest).expect("stat").len();
    let mut partial = Vec::new();
    partial.extend_from_slice(&(u32::MAX - 15).to_le_bytes());
    partial.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    partial.extend_from_slice(&next_lsn.to_le_bytes());
    partial.extend_from_slice(&garbage(100, 7));
    assert!(
        (u32::MAX - 15) as u64 > file_len,
        "the partial frame must claim more bytes than the file has"
    );
    overwrite(&newest, end, &partial);
    server.start_again();
    assert_keys(&server, 25);
    let log = log_text(&server);
    let warning = format!("torn tail in {} at offset {end}", newest.display());
    assert!(log.contains(&warning), "no {warning:?} in the log:\n{log}");

    // 3. A flipped byte inside the first record of a segment that has valid
    //    records after it is corruption, not a torn tail: refuse to start.
    put_keys(&server, 25..30);
    server.kill_9();
    let (victim, recs) = segments(&wal)
        .into_iter()
        .rev()
        .map(|p| {
            let (recs, _) = frames(&p);
            (p, recs)
        })
        .find(|(_, recs)| recs.len() >= 2)
        .expect("a segment with two records");
    let (off, len, _) = recs[0];
    // Inside the payload if there is one, else inside the checksum.
    let at = if len > 0 {
        off + FRAME_HEADER_LEN + len / 2
    } else {
        off + 5
    };
    let mut byte = [0u8; 1];
    fs::File::open(&victim)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(at as u64))?;
            f.read_exact(&mut byte)
        })
        .expect("read victim byte");
    overwrite(&victim, at, &[byte[0] ^ 0x20]);
    let (code, output) = start_expecting_failure(&server);
    eprintln!("start on a corrupt WAL: exit {code:?}, output:\n{output}");
    assert!(
        code.is_some_and(|c| c != 0),
        "ferrokv exited with {code:?} on a corrupt WAL; output:\n{output}"
    );
    let want = format!("corrupt log in {} at offset {off}", victim.display());
    assert!(
        output.contains(&want),
        "error should say {want:?}; output:\n{output}"
    );
}

// ------------------------------------------------- snapshots and truncation

fn snapshot_path(server: &ServerProcess, shard: u32) -> PathBuf {
    server.shard_dir(shard).join("snapshot.rkyv")
}

/// Puts `count` keys `{prefix}{i:03}` in txns of `per_txn` puts.
fn txn_puts(server: &ServerProcess, prefix: &str, count: usize, per_txn: usize) {
    for start in (0..count).step_by(per_txn) {
        let mut stdin = String::from("\n");
        for i in start..(start + per_txn).min(count) {
            stdin.push_str(&format!("put {prefix}{i:03} v{i}\n"));
        }
        stdin.push_str("\n\n");
        let out = ctl(server, &["txn"], Some(&stdin));
        assert!(out.starts_with("SUCCESS"), "txn: {out}");
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DISK_STATE_WAIT_MAX;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {DISK_STATE_WAIT_MAX:?}"
        );
        thread::sleep(POLL_INTERVAL);
    }
}

/// Every key with all its fields, and the header, as JSON.
fn dump_all(server: &ServerProcess) -> String {
    ctl(server, &["get", "--from-key", "", "-w", "json"], None)
}

#[test]
fn snapshots_and_wal_truncation_survive_restarts() {
    const SHARDS: u32 = 2;
    const SNAPSHOT_COUNT: usize = 10;
    const KEYS: usize = 200;
    const PER_TXN: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FerrokvProcess::start_with(
        dir.path(),
        ServerOptions {
            shards: Some(SHARDS),
            extra_args: vec![format!("--snapshot-count={SNAPSHOT_COUNT}")],
            ..ServerOptions::default()
        },
    );
    // Each shard commits one entry per txn that touches it; with 20 txns of
    // 10 keys each both shards pass the snapshot count.
    for s in 0..SHARDS {
        let touching = (0..KEYS)
            .step_by(PER_TXN)
            .filter(|start| {
                (*start..start + PER_TXN).any(|i| shard_of(&format!("s/{i:03}"), SHARDS) == s)
            })
            .count();
        assert!(
            touching >= SNAPSHOT_COUNT,
            "shard {s} gets only {touching} txns"
        );
    }
    txn_puts(&server, "s/", KEYS, PER_TXN);
    for s in 0..SHARDS {
        let path = snapshot_path(&server, s);
        wait_for(&format!("{}", path.display()), || path.is_file());
    }
    let norm = Normalizer::new();
    let before = dump_all(&server);
    let (_, kvs) = get_prefix(&server, "s/");
    assert_eq!(kvs.len(), KEYS);
    let first_run_segments: Vec<Vec<PathBuf>> = (0..SHARDS)
        .map(|s| segments(&wal_dir(&server, s)))
        .collect();

    server.restart();
    assert_eq!(norm.normalize(&dump_all(&server)), norm.normalize(&before));

    // More writes after the restart: new snapshots cover the new segment,
    // so the first run's segments must be deleted.
    let mtimes: Vec<_> = (0..SHARDS)
        .map(|s| {
            fs::metadata(snapshot_path(&server, s))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    txn_puts(&server, "t/", KEYS, PER_TXN);
    for s in 0..SHARDS {
        let path = snapshot_path(&server, s);
        wait_for(&format!("a new {}", path.display()), || {
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > mtimes[s as usize])
        });
        let wal = wal_dir(&server, s);
        wait_for(
            &format!(
                "truncation of the first run's segments in {}",
                wal.display()
            ),
            || first_run_segments[s as usize].iter().all(|p| !p.exists()),
        );
        assert!(!segments(&wal).is_empty());
    }
    let before = dump_all(&server);
    let (_, kvs) = get_prefix(&server, "t/");
    assert_eq!(kvs.len(), KEYS);

    server.restart();
    let after = dump_all(&server);
    assert_eq!(norm.normalize(&after), norm.normalize(&before));
    let count = json_u64_field(&after, "count").expect("count");
    assert_eq!(count, 2 * KEYS as u64);
}
