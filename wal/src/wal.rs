//! The glommio shell: segment files, group commit, recovery, truncation.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use glommio::io::{Directory, DmaFile, OpenOptions};
use glommio::task::JoinHandle;

use crate::frame::{encode_into, encoded_len, PAYLOAD_LEN_MAX};
use crate::metrics::WalMetrics;
use crate::notify::Notify;
use crate::segment::{
    parse_segment_name, prealloc_file_name, scan_segment, segment_file_name, PREALLOC_SUFFIX,
};
use crate::sync_thread::{AlignedBuf, SyncFile, SyncThread};
use crate::Error;

/// Configuration of one shard's WAL.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A segment is rotated before a batch would take it past this size; it
    /// is also the size preallocated for every segment.
    pub segment_size_bytes: u64,
    /// Upper bound of encoded bytes waiting for the next flush. Appenders
    /// wait for room beyond it (back-pressure). A single append larger than
    /// the bound is admitted alone.
    pub batch_bytes_max: usize,
    /// Shared between shards so `/metrics` can render one merged histogram.
    pub metrics: Arc<WalMetrics>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size_bytes: 64 << 20,
            batch_bytes_max: 16 << 20,
            metrics: Arc::new(WalMetrics::new()),
        }
    }
}

/// Read-size used when scanning segments at open.
const READ_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
struct SegmentMeta {
    seq: u64,
    first_lsn: u64,
    path: PathBuf,
}

/// Completion slot shared by every append of one group-commit batch.
#[derive(Default)]
struct Batch {
    /// `Ok(first lsn of the batch)` once durable.
    result: RefCell<Option<Result<u64, Error>>>,
    done: Notify,
}

struct State {
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    pending_batch: Rc<Batch>,
    failed: Option<String>,
    closed: bool,
    flusher_exited: bool,
    segments: Vec<SegmentMeta>,
    /// Highest lsn known durable.
    durable_lsn: u64,
}

struct Shared {
    dir: PathBuf,
    cfg: WalConfig,
    st: RefCell<State>,
    /// Wakes the flusher: work queued or close requested.
    work: Notify,
    /// Wakes appenders waiting for room in the pending batch.
    room: Notify,
    flusher_exit: Notify,
    truncating: Cell<bool>,
}

/// The append-only log of one shard. Lives on one glommio executor.
pub struct Wal {
    shared: Rc<Shared>,
}

struct Active {
    seq: u64,
    file: Rc<DmaFile>,
    /// The same file for the sync thread.
    sync: SyncFile,
    /// Logical end of data in the active segment.
    write_off: u64,
    /// Bytes of the partially filled last block, `[align_down(write_off), write_off)`.
    /// The next flush rewrites that block from memory (never read back from disk);
    /// the rewrite carries identical bytes for the records already in it.
    tail: Vec<u8>,
}

/// Owned by the flusher task: everything that writes.
struct Writer {
    shared: Rc<Shared>,
    dir_handle: Directory,
    active: Active,
    next_lsn: u64,
    prepared: Option<(u64, JoinHandle<Result<DmaFile, Error>>)>,
    thread: SyncThread,
    /// The flush buffer, reused (it is with the thread during a write).
    buf: AlignedBuf,
}

fn io_err(e: io::Error) -> Error {
    Error::io(e)
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and returns every record of the
    /// retained segments in lsn order. New records always go to a fresh
    /// segment.
    pub async fn open(dir: &Path, cfg: WalConfig) -> Result<(Wal, Vec<(u64, Vec<u8>)>), Error> {
        assert!(cfg.segment_size_bytes > 0 && cfg.batch_bytes_max > 0);
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let dir_handle = Directory::open(dir).await?;

        let mut found: Vec<(u64, u64, String)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(PREALLOC_SUFFIX) {
                // A segment preallocated but never used.
                glommio::io::remove(entry.path()).await?;
            } else if let Some((seq, first_lsn)) = parse_segment_name(&name) {
                found.push((seq, first_lsn, name));
            }
        }
        found.sort();
        for w in found.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::Corrupt {
                    file: w[1].2.clone(),
                    offset: 0,
                    reason: format!("two segments with sequence number {}", w[0].0),
                });
            }
        }

        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut segments = Vec::new();
        let mut empty_segments = Vec::new();
        let mut next_lsn = 1u64;
        for (i, (seq, first_lsn, name)) in found.iter().enumerate() {
            let path = dir.join(name);
            if i > 0 && *first_lsn != next_lsn {
                return Err(Error::Corrupt {
                    file: path.display().to_string(),
                    offset: 0,
                    reason: format!(
                        "segment starts at lsn {first_lsn} but the previous segment ends before lsn {next_lsn}"
                    ),
                });
            }
            if *first_lsn == 0 {
                return Err(Error::Corrupt {
                    file: path.display().to_string(),
                    offset: 0,
                    reason: "segment name carries lsn 0".to_string(),
                });
            }
            let is_last = i + 1 == found.len();
            let buf = read_whole_file(&path).await?;
            let out = scan_segment(&buf, &path.display().to_string(), is_last, *first_lsn)?;
            if let Some((off, dropped)) = out.torn {
                log::warn!(
                    "wal: torn tail in {} at offset {off}, dropping {dropped} bytes",
                    path.display()
                );
                // Cut the damage off for good: after this open the segment is
                // no longer the last one, where damage would be corruption.
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .dma_open(&path)
                    .await?;
                f.truncate(off).await?;
                f.fdatasync().await?;
                f.close().await?;
            }
            next_lsn = *first_lsn + out.records.len() as u64;
            let meta = SegmentMeta {
                seq: *seq,
                first_lsn: *first_lsn,
                path,
            };
            if out.records.is_empty() {
                empty_segments.push(meta.clone());
            }
            segments.push(meta);
            records.extend(out.records);
        }

        let seq = found.last().map_or(0, |f| f.0 + 1);
        let file = prepare_segment(dir, seq, cfg.segment_size_bytes).await?;
        let path = dir.join(segment_file_name(seq, next_lsn));
        file.rename(&path).await?;
        dir_handle.sync().await?;
        segments.push(SegmentMeta {
            seq,
            first_lsn: next_lsn,
            path,
        });
        // Empty recovered segments carry no information the new segment's
        // name does not also carry.
        for meta in &empty_segments {
            glommio::io::remove(&meta.path).await?;
            segments.retain(|s| s.seq != meta.seq);
        }
        if !empty_segments.is_empty() {
            dir_handle.sync().await?;
        }

        let shared = Rc::new(Shared {
            dir: dir.to_path_buf(),
            cfg,
            st: RefCell::new(State {
                pending: Vec::new(),
                pending_bytes: 0,
                pending_batch: Rc::new(Batch::default()),
                failed: None,
                closed: false,
                flusher_exited: false,
                segments,
                durable_lsn: next_lsn - 1,
            }),
            work: Notify::default(),
            room: Notify::default(),
            flusher_exit: Notify::default(),
            truncating: Cell::new(false),
        });
        let sync = SyncFile::dup(file.as_raw_fd()).map_err(io_err)?;
        let thread = SyncThread::spawn("wal-sync".to_string()).map_err(io_err)?;
        let mut writer = Writer {
            shared: shared.clone(),
            dir_handle,
            active: Active {
                seq,
                file: Rc::new(file),
                sync,
                write_off: 0,
                tail: Vec::new(),
            },
            next_lsn,
            prepared: None,
            thread,
            buf: AlignedBuf::new(),
        };
        writer.spawn_prepare();
        glommio::spawn_local(writer.run()).detach();
        Ok((Wal { shared }, records))
    }

    /// Appends `payloads` as consecutive records and resolves with the lsn of
    /// the last one once all of them are durable (written and fdatasync'ed).
    /// Appends issued while a flush is in progress share the next flush.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> Result<u64, Error> {
        let sh = &self.shared;
        let mut bytes = 0usize;
        for p in &payloads {
            if p.len() > PAYLOAD_LEN_MAX {
                return Err(Error::RecordTooLarge { len: p.len() });
            }
            bytes += encoded_len(p.len());
        }
        let n = payloads.len() as u64;
        let (batch, offset) = loop {
            {
                let mut st = sh.st.borrow_mut();
                if let Some(msg) = &st.failed {
                    return Err(Error::Failed(msg.clone()));
                }
                if st.closed {
                    return Err(Error::Closed);
                }
                if n == 0 {
                    return Ok(st.durable_lsn);
                }
                if st.pending_bytes == 0 || st.pending_bytes + bytes <= sh.cfg.batch_bytes_max {
                    let offset = st.pending.len() as u64;
                    st.pending.extend(payloads);
                    st.pending_bytes += bytes;
                    break (st.pending_batch.clone(), offset);
                }
            }
            let wait = sh.room.wait();
            wait.await;
        };
        sh.work.notify_all();
        loop {
            if let Some(res) = batch.result.borrow().as_ref() {
                return res.clone().map(|first| first + offset + n - 1);
            }
            let wait = batch.done.wait();
            wait.await;
        }
    }

    /// Highest lsn known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.st.borrow().durable_lsn
    }

    /// Error message if the WAL is failed (poisoned).
    pub fn failure(&self) -> Option<String> {
        self.shared.st.borrow().failed.clone()
    }

    /// Removes whole segments all of whose records have lsn < `lsn`, oldest
    /// first, syncing the directory after each removal so that a crash leaves
    /// a contiguous suffix of the log. The active segment is never removed.
    pub async fn truncate_before(&self, lsn: u64) -> Result<(), Error> {
        let sh = &self.shared;
        if sh.truncating.replace(true) {
            // Another truncation is running; it covers this one's purpose
            // only partly, so wait for it and then run ours.
            while sh.truncating.get() {
                glommio::yield_if_needed().await;
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            sh.truncating.set(true);
        }
        let res = self.truncate_before_inner(lsn).await;
        sh.truncating.set(false);
        res
    }

    async fn truncate_before_inner(&self, lsn: u64) -> Result<(), Error> {
        let sh = &self.shared;
        let dir_handle = Directory::open(&sh.dir).await?;
        loop {
            let victim = {
                let st = sh.st.borrow();
                match (st.segments.first(), st.segments.get(1)) {
                    // Segment 0's records are all < segment 1's first lsn.
                    (Some(s0), Some(s1)) if s1.first_lsn <= lsn => Some(s0.clone()),
                    _ => None,
                }
            };
            let Some(victim) = victim else { break };
            match glommio::io::remove(&victim.path).await {
                Ok(()) => {}
                Err(e) => {
                    let e = io::Error::from(e);
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(io_err(e));
                    }
                }
            }
            dir_handle.sync().await?;
            sh.st.borrow_mut().segments.retain(|s| s.seq != victim.seq);
        }
        dir_handle.close().await?;
        Ok(())
    }

    /// Paths of the retained segments, oldest first (for tests and tools).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.shared
            .st
            .borrow()
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    /// Flushes what is pending, stops the flusher and rejects later appends.
    pub async fn close(&self) {
        let sh = &self.shared;
        sh.st.borrow_mut().closed = true;
        sh.work.notify_all();
        sh.room.notify_all();
        loop {
            if sh.st.borrow().flusher_exited {
                return;
            }
            let wait = sh.flusher_exit.wait();
            wait.await;
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // The flusher drains what is pending and exits.
        self.shared.st.borrow_mut().closed = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
    }
}

impl Writer {
    async fn run(mut self) {
        let sh = self.shared.clone();
        loop {
            let wait = sh.work.wait();
            let taken = {
                let mut st = sh.st.borrow_mut();
                if st.pending.is_empty() {
                    if st.closed {
                        None
                    } else {
                        Some(None)
                    }
                } else {
                    let payloads = std::mem::take(&mut st.pending);
                    let bytes = std::mem::replace(&mut st.pending_bytes, 0);
                    let batch = std::mem::replace(&mut st.pending_batch, Rc::new(Batch::default()));
                    Some(Some((payloads, bytes, batch, st.failed.clone())))
                }
            };
            let taken = match taken {
                None => None,
                Some(None) => {
                    wait.await;
                    continue;
                }
                Some(Some(t)) => Some(t),
            };
            let Some((payloads, bytes, batch, failed)) = taken else {
                break;
            };
            sh.room.notify_all();
            let n = payloads.len() as u64;
            let result = match failed {
                Some(msg) => Err(Error::Failed(msg)),
                None => match self.flush(payloads, bytes).await {
                    Ok(first) => {
                        sh.st.borrow_mut().durable_lsn = first + n - 1;
                        Ok(first)
                    }
                    Err((e, poison)) => {
                        if poison {
                            let msg = e.to_string();
                            log::error!(
                                "wal: {} failed, refusing further appends: {msg}",
                                sh.dir.display()
                            );
                            sh.st.borrow_mut().failed = Some(msg);
                        }
                        Err(e)
                    }
                },
            };
            *batch.result.borrow_mut() = Some(result);
            batch.done.notify_all();
        }
        if let Some((_, task)) = self.prepared.take() {
            // Leaves a .wal.tmp file that the next open removes.
            if let Some(Ok(f)) = task.await {
                let _ = f.close().await;
            }
        }
        let _ = self.dir_handle.close().await;
        if let Ok(file) = Rc::try_unwrap(self.active.file) {
            let _ = file.close().await;
        }
        sh.st.borrow_mut().flusher_exited = true;
        sh.flusher_exit.notify_all();
    }

    fn spawn_prepare(&mut self) {
        let seq = self.active.seq + 1;
        let dir = self.shared.dir.clone();
        let size = self.shared.cfg.segment_size_bytes;
        let task =
            glommio::spawn_local(async move { prepare_segment(&dir, seq, size).await }).detach();
        self.prepared = Some((seq, task));
    }

    /// Returns the first lsn of the batch, or the error and whether it
    /// poisons the WAL (anything that may have reached the file does).
    async fn flush(&mut self, payloads: Vec<Vec<u8>>, bytes: usize) -> Result<u64, (Error, bool)> {
        let segment_size = self.shared.cfg.segment_size_bytes;
        if self.active.write_off > 0 && self.active.write_off + bytes as u64 > segment_size {
            self.rotate().await?;
        }
        let first = self.next_lsn;
        let poison = |e: Error| (e, true);
        let align = self.active.file.alignment();
        let write_off = self.active.write_off;
        let start = write_off - write_off % align;
        let tail_len = (write_off - start) as usize;
        debug_assert_eq!(tail_len, self.active.tail.len());
        let data_len = tail_len + bytes;
        let buf_len = (data_len as u64).div_ceil(align) * align;
        let mut buf = std::mem::replace(&mut self.buf, AlignedBuf::new());
        let new_end = write_off + bytes as u64;
        let new_tail_start = new_end - new_end % align;
        let new_tail;
        {
            let s = buf.resize(buf_len as usize);
            s[..tail_len].copy_from_slice(&self.active.tail);
            let mut p = tail_len;
            for (lsn, payload) in (first..).zip(payloads.iter()) {
                let n = encoded_len(payload.len());
                encode_into(lsn, payload, &mut s[p..p + n]);
                p += n;
            }
            debug_assert_eq!(p, data_len);
            s[p..].fill(0);
            new_tail = s[(new_tail_start - start) as usize..(new_end - start) as usize].to_vec();
        }
        let done = self.thread.write(&self.active.sync, buf, start).await;
        self.buf = done.buf;
        let fsync = done.result.map_err(|e| poison(io_err(e)))?;
        let metrics = &self.shared.cfg.metrics;
        metrics.fsync.observe_duration(fsync);
        metrics
            .write_bytes_total
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.active.write_off = new_end;
        self.active.tail = new_tail;
        self.next_lsn += payloads.len() as u64;
        Ok(first)
    }

    /// Makes the preallocated next segment active. Fails with `NoSpace`
    /// (without poisoning: nothing was written) when no segment can be
    /// prepared.
    async fn rotate(&mut self) -> Result<(), (Error, bool)> {
        let seq = self.active.seq + 1;
        let prepared = match self.prepared.take() {
            Some((s, task)) if s == seq => task.await.unwrap_or(Err(Error::NoSpace)),
            _ => Err(Error::NoSpace),
        };
        let file = match prepared {
            Ok(f) => f,
            // Space may have been freed since the background attempt.
            Err(_) => prepare_segment(&self.shared.dir, seq, self.shared.cfg.segment_size_bytes)
                .await
                .map_err(|e| {
                    let poison = !matches!(e, Error::NoSpace);
                    (e, poison)
                })?,
        };
        let path = self.shared.dir.join(segment_file_name(seq, self.next_lsn));
        let poison = |e: Error| (e, true);
        file.rename(&path).await.map_err(|e| poison(e.into()))?;
        self.dir_handle.sync().await.map_err(|e| poison(e.into()))?;
        let sync = SyncFile::dup(file.as_raw_fd()).map_err(|e| poison(io_err(e)))?;
        let old = std::mem::replace(
            &mut self.active,
            Active {
                seq,
                file: Rc::new(file),
                sync,
                write_off: 0,
                tail: Vec::new(),
            },
        );
        if let Ok(f) = Rc::try_unwrap(old.file) {
            let _ = f.close().await;
        }
        self.shared.st.borrow_mut().segments.push(SegmentMeta {
            seq,
            first_lsn: self.next_lsn,
            path,
        });
        self.spawn_prepare();
        Ok(())
    }
}

/// Creates `{seq}.wal.tmp` and reserves `size` bytes so that a full disk is
/// found here, before any record that would land in it is accepted.
async fn prepare_segment(dir: &Path, seq: u64, size: u64) -> Result<DmaFile, Error> {
    let path = dir.join(prealloc_file_name(seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await?;
    let res: Result<(), Error> = async {
        if let Err(e) = file.pre_allocate(size, false).await {
            let e = io::Error::from(e);
            match e.raw_os_error() {
                // No fallocate on this filesystem: at least set the size.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.truncate(size).await?,
                _ => return Err(io_err(e)),
            }
        }
        file.fdatasync().await?;
        Ok(())
    }
    .await;
    match res {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = file.close().await;
            let _ = glommio::io::remove(&path).await;
            Err(e)
        }
    }
}

async fn read_whole_file(path: &Path) -> Result<Vec<u8>, Error> {
    // Buffered reads: recovery reads each byte once, in order, and the
    // unaligned tail of a truncated segment needs no special casing.
    let file = glommio::io::BufferedFile::open(path).await?;
    let size = file.file_size().await?;
    let mut out = Vec::with_capacity(size as usize);
    let mut pos = 0u64;
    while pos < size {
        let want = READ_CHUNK_BYTES.min((size - pos) as usize);
        let chunk = file.read_at(pos, want).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
        pos += chunk.len() as u64;
    }
    file.close().await?;
    Ok(out)
}
