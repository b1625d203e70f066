//! The thread that makes a flush durable: one `pwrite` and one `fdatasync`
//! per batch, on a thread of its own that no core is pinned to.
//!
//! Why not io_uring: an O_DIRECT write submitted through io_uring completes
//! on ext4 in a kernel worker bound to the CPU that took the disk's
//! interrupt, and a busy or spinning executor pinned to that CPU delays it
//! by a scheduler slice (a second latency mode at 3-4 ms for one client on
//! 2 cores, `perf sched` in perf/README.md). A synchronous write completes
//! in the waiting thread itself, and the scheduler wakes that thread on
//! whichever CPU is free, as etcd's WAL goroutine is.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

/// Alignment of [`AlignedBuf`]: O_DIRECT wants buffer, offset and length
/// aligned to the device's logical block; 4 KiB covers every device.
pub(crate) const ALIGN: usize = 4096;

/// A zeroed heap buffer aligned to [`ALIGN`], owned by whichever side
/// holds it (the flusher fills it, the thread writes it, and it comes
/// back for the next flush).
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    len: usize,
}

// The buffer is plain memory owned by one side at a time.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(crate) fn new() -> Self {
        AlignedBuf {
            ptr: std::ptr::NonNull::dangling(),
            cap: 0,
            len: 0,
        }
    }

    /// The first `len` bytes, grown if needed; their contents are whatever
    /// the last use left.
    pub(crate) fn resize(&mut self, len: usize) -> &mut [u8] {
        if len > self.cap {
            let cap = len.next_power_of_two().max(ALIGN);
            let layout =
                Layout::from_size_align(cap, ALIGN).expect("a power of two below isize::MAX");
            // SAFETY: the layout has a non-zero size (cap >= ALIGN).
            let p = unsafe { alloc::alloc_zeroed(layout) };
            let Some(p) = std::ptr::NonNull::new(p) else {
                alloc::handle_alloc_error(layout)
            };
            self.free();
            self.ptr = p;
            self.cap = cap;
        }
        self.len = len;
        // SAFETY: ptr is valid for cap >= len bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }

    fn as_slice(&self) -> &[u8] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: as in `resize`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn free(&mut self) {
        if self.cap > 0 {
            let layout = Layout::from_size_align(self.cap, ALIGN).expect("as allocated");
            // SAFETY: allocated in `resize` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
            self.cap = 0;
            self.len = 0;
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.free();
    }
}

/// A segment as the thread sees it: its own descriptor (a `dup` of the
/// executor's), so a write in flight never lands in a file that reused a
/// closed descriptor's number.
pub(crate) struct SyncFile(Arc<File>);

impl SyncFile {
    pub(crate) fn dup(fd: RawFd) -> io::Result<Self> {
        // SAFETY: dup of a descriptor the caller keeps open; the new one is
        // owned by the File.
        let new = unsafe { libc::dup(fd) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` is a fresh descriptor nobody else owns.
        Ok(SyncFile(Arc::new(unsafe { File::from_raw_fd(new) })))
    }
}

struct Job {
    file: Arc<File>,
    buf: AlignedBuf,
    offset: u64,
    reply: oneshot::Sender<Done>,
}

/// What came of a write: the buffer back, and the fdatasync's duration.
pub(crate) struct Done {
    pub(crate) buf: AlignedBuf,
    pub(crate) result: io::Result<Duration>,
}

/// The thread of one WAL; it exits once its handle is dropped.
pub(crate) struct SyncThread {
    jobs: mpsc::Sender<Job>,
}

impl SyncThread {
    pub(crate) fn spawn(name: String) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || {
            for job in rx {
                let result =
                    write_all_at(&job.file, job.buf.as_slice(), job.offset).and_then(|()| {
                        let t0 = Instant::now();
                        // std's sync_data is fdatasync(2) on Linux.
                        job.file.sync_data()?;
                        Ok(t0.elapsed())
                    });
                // The flusher may have gone (shutdown): nothing to tell.
                let _ = job.reply.send(Done {
                    buf: job.buf,
                    result,
                });
            }
        })?;
        Ok(SyncThread { jobs })
    }

    /// Writes `buf` at `offset` of `file` and makes it durable.
    pub(crate) async fn write(&self, file: &SyncFile, buf: AlignedBuf, offset: u64) -> Done {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            file: file.0.clone(),
            buf,
            offset,
            reply,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            return Done {
                buf: job.buf,
                result: Err(io::Error::other("wal sync thread stopped")),
            };
        }
        match rx.await {
            Ok(done) => done,
            // The thread panicked with the buffer (it does not panic).
            Err(_) => Done {
                buf: AlignedBuf::new(),
                result: Err(io::Error::other("wal sync thread stopped")),
            },
        }
    }
}

fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    while !data.is_empty() {
        match file.write_at(data, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {} bytes left", data.len()),
                ))
            }
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_grows_and_keeps_its_alignment() {
        let mut b = AlignedBuf::new();
        assert!(b.as_slice().is_empty());
        b.resize(ALIGN).fill(7);
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        let s = b.resize(3 * ALIGN);
        assert_eq!(s.len(), 3 * ALIGN);
        assert_eq!(s.as_ptr() as usize % ALIGN, 0);
    }
}
