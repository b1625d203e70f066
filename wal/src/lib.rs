//! Append-only write-ahead log of one shard, on io_uring through glommio DMA
//! files. It does not interpret records: payloads are opaque bytes.
//!
//! # On-disk format
//!
//! A WAL directory holds segments named `{seq:016x}-{first_lsn:016x}.wal`
//! (hex, zero padded: name order is sequence order) and possibly one
//! `{seq:016x}.wal.tmp`, the next segment being preallocated (deleted on
//! open). A segment is a run of records followed by zeros (segments are
//! preallocated, DMA writes pad the last block with zeros):
//!
//! ```text
//! record = len u32 LE | crc32c u32 LE | lsn u64 LE | payload (len bytes)
//!          crc32c covers lsn bytes ++ payload; an all-zero header ends the data
//! ```
//!
//! # Invariants (and the tests that check them)
//!
//! * LSNs are consecutive from 1 across all segments; each segment's first
//!   record has the lsn in its name. A gap is corruption.
//! * `append` resolves only after the records are written and fdatasync'ed;
//!   concurrent appends share one fdatasync (group commit) and get
//!   increasing lsns (`tests/wal.rs: concurrent_appends_share_fsyncs`).
//! * New records never go into a recovered segment: every open starts a fresh
//!   segment, so a partially written block is never read back and modified.
//! * Recovery returns every complete record. A bad record in the last
//!   segment with no valid record after it is a torn tail: logged, cut off
//!   (the file is truncated there) and recovery goes on. Any other damage is
//!   `Error::Corrupt { file, offset, .. }` and the server must not start
//!   (`torn_tail_*`, `mid_log_corruption_refuses`).
//! * A write or fdatasync error fails the batch's waiters and every later
//!   append (`Error::Failed`): after a failed fsync the page cache cannot be
//!   trusted. A full disk found while preparing a segment fails only that
//!   batch with `Error::NoSpace`, before any of it is written.
//! * `truncate_before` deletes oldest segments first and syncs the directory
//!   after each, so a crash leaves a contiguous suffix.
//!
//! # Bounds
//!
//! `WalConfig::batch_bytes_max` bounds the bytes waiting for the next flush
//! (appenders wait for room); a segment grows past `segment_size_bytes` only
//! by a batch that alone is larger than a segment.

pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod metrics;

mod error;
pub mod notify;
mod segment;
mod sync_thread;
mod wal;

pub use error::Error;
pub use metrics::{FsyncHistogram, WalMetrics};
pub use segment::{scan_segment, ScanOutcome};
pub use wal::{Wal, WalConfig};
