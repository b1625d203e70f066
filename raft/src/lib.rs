//! Consensus for one shard group on top of raft-rs (the port of etcd's raft),
//! with its log stored in the shard's WAL (`ferrokv-wal`).
//!
//! Write path: `propose` -> raft `Ready` -> one WAL append + fdatasync for
//! all proposals gathered meanwhile (group commit) -> commit -> the
//! proposer's future resolves with the entry's index.
//!
//! # On-disk format
//!
//! WAL payloads are raft records (see `record.rs`): a tag byte then
//! little-endian fields.
//!
//! ```text
//! Entry      = 0x01 | term u64 | index u64 | entry_type u8 | data
//! HardState  = 0x02 | term u64 | vote u64 | commit u64
//! Compaction = 0x03 | index u64 | term u64 | hard state (3 x u64)
//!                   | voters (u32 count + u64s) | learners (u32 count + u64s)
//!                   | conf_index u64
//! ```
//!
//! A `Ready` is written as one WAL append: its entries, then the hard state
//! (if changed), so a torn tail never keeps a commit index without the
//! entries it covers. Replay applies records in lsn order: the last
//! compaction marker sets the log base; an entry at index i replaces i and
//! everything after it (a later term's conflicting suffix wins); the last
//! hard state wins; what remains above the base must be contiguous.
//!
//! # Invariants (checked by `tests/shard_log.rs`)
//!
//! * An acknowledged proposal is durable: after a restart (clean, after
//!   compactions, or with a torn WAL tail) it is returned by `open` unless
//!   the caller's applied index covers it, at the same index, in order.
//! * Indices handed out are strictly increasing; restarts continue after the
//!   last durable entry.
//! * Many concurrent proposals share fdatasyncs.
//! * With a single voter every durable entry is committed, so `open` returns
//!   all of them (above `applied_index`).
//!
//! # Bounds
//!
//! Proposals waiting for the next `Ready` are bounded by
//! `WalConfig::batch_bytes_max` (proposers wait for room); pending ticks by 64.

// raft's protobuf messages carry hidden fields; building them field by field
// reads better than struct literals with `..Default::default()`.
#![allow(clippy::field_reassign_with_default)]

mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod log_core;
pub mod peer;
mod record;
mod shard_log;
mod storage;

pub use error::Error;
pub use log_core::{Recovered, Role};
pub use shard_log::{
    Apply, LogConfig, NoopTransport, ShardLog, Transport, INBOUND_MESSAGES_PENDING_MAX,
    TICKS_PENDING_MAX,
};

/// One WAL payload of a shard log, described for `ferroutl wal`: what it is
/// and, for a normal entry with data, that data (the shard's own record).
pub fn describe_wal_record(payload: &[u8]) -> (String, Option<Vec<u8>>) {
    use record::Record;
    match record::decode(payload) {
        Ok(Record::Entry(e)) => {
            let text = format!(
                "entry index {} term {} {:?}",
                e.index,
                e.term,
                e.get_entry_type()
            );
            let data = (!e.data.is_empty()).then(|| e.data.to_vec());
            (text, data)
        }
        Ok(Record::HardState(hs)) => (
            format!(
                "hard state term {} vote {} commit {}",
                hs.term, hs.vote, hs.commit
            ),
            None,
        ),
        Ok(Record::Compaction { index, term, .. }) => (
            format!("compaction: entries up to index {index} (term {term}) are in the snapshot"),
            None,
        ),
        Err(e) => (format!("undecodable raft record: {e}"), None),
    }
}
