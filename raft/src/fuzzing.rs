//! Entry points for the fuzz targets (`fuzz/`) and the stable-Rust replay
//! of their corpora (`tests/tests/fuzz_corpus.rs`): the raft records a
//! shard log reads back from its WAL. Panics only on a bug; the seeds are
//! made by the real encoders.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};

use crate::record::{decode, encode_compaction, encode_entry, encode_hard_state, Record};

/// A WAL payload of a shard log: what decodes re-encodes to a record that
/// decodes the same, and describes itself for `ferroutl wal`.
pub fn wal_record(data: &[u8]) {
    let _ = crate::describe_wal_record(data);
    let Ok(rec) = decode(data) else { return };
    let again = match &rec {
        Record::Entry(e) => encode_entry(e),
        Record::HardState(hs) => encode_hard_state(hs),
        Record::Compaction {
            index,
            term,
            hard_state,
            conf_state,
            conf_index,
        } => encode_compaction(*index, *term, hard_state, conf_state, *conf_index),
    };
    assert_eq!(decode(&again).ok(), Some(rec));
}

/// One record of each kind.
pub fn seed_wal_records() -> Vec<Vec<u8>> {
    let mut e = Entry::default();
    e.term = 2;
    e.index = 5;
    e.data = b"shard record".to_vec().into();
    let mut conf = Entry::default();
    conf.term = 2;
    conf.index = 6;
    conf.set_entry_type(EntryType::EntryConfChange);
    let mut hs = HardState::default();
    hs.term = 2;
    hs.vote = 1;
    hs.commit = 5;
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2, 3];
    cs.learners = vec![4];
    vec![
        encode_entry(&e),
        encode_entry(&conf),
        encode_hard_state(&hs),
        encode_compaction(5, 2, &hs, &cs, 6),
    ]
}
