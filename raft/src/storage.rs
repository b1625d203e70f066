//! Raft storage rebuilt from the WAL, kept in memory (the WAL is the durable copy).

use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::record::{decode, Record};

/// Log entries after the compaction point, plus hard state and membership.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardStorage {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Entries <= `snap_index` are compacted away; `snap_term` is the term of
    /// entry `snap_index`, kept for log matching.
    pub snap_index: u64,
    pub snap_term: u64,
    /// Entries `snap_index + 1 ..`, contiguous.
    pub entries: Vec<Entry>,
    /// WAL lsn of the record that wrote each entry (parallel to `entries`).
    /// Increasing: a rewrite of index i also rewrites everything after i.
    pub entry_lsns: Vec<u64>,
    /// Raft index of the state machine's newest snapshot file (0: none):
    /// what a follower that needs compacted entries is sent.
    pub snapshot_file_index: u64,
    /// Index of the last conf change `conf_state` includes (0: none since
    /// the bootstrap membership).
    pub conf_index: u64,
    /// Raft asked for a snapshot the newest file cannot be (it predates
    /// the membership): the state machine should write a new one.
    pub snapshot_wanted: std::cell::Cell<bool>,
}

impl ShardStorage {
    /// An empty log whose group is `voters`.
    pub fn new(voters: &[u64]) -> Self {
        let mut cs = ConfState::default();
        cs.voters = voters.to_vec();
        ShardStorage {
            conf_state: cs,
            ..Default::default()
        }
    }

    pub fn last_index(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }

    /// Appends entries persisted at `lsns`, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry], lsns: &[u64]) -> Result<(), String> {
        debug_assert_eq!(ents.len(), lsns.len());
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index <= self.snap_index {
            return Err(format!(
                "append at index {} overwrites the compacted log (compacted to {})",
                first.index, self.snap_index
            ));
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "append at index {} leaves a gap after last index {}",
                first.index,
                self.last_index()
            ));
        }
        let keep = (first.index - self.snap_index - 1) as usize;
        self.entries.truncate(keep);
        self.entry_lsns.truncate(keep);
        for (i, e) in ents.iter().enumerate() {
            assert_eq!(
                e.index,
                first.index + i as u64,
                "entries must be contiguous"
            );
        }
        self.entries.extend_from_slice(ents);
        self.entry_lsns.extend_from_slice(lsns);
        Ok(())
    }

    /// Installs a snapshot the state machine already holds: the log now
    /// starts after `index` (whose entry had `term`); everything before is
    /// gone and `commit` is at least `index`.
    pub fn restore(&mut self, index: u64, term: u64, cs: ConfState) {
        self.snap_index = index;
        self.snap_term = term;
        self.conf_state = cs;
        self.entries.clear();
        self.entry_lsns.clear();
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.hard_state.term = self.hard_state.term.max(term);
        self.snapshot_file_index = self.snapshot_file_index.max(index);
        // A snapshot's membership is the one in force at its index.
        self.conf_index = index;
    }

    /// Drops entries <= `index` (which must be present or already compacted).
    pub fn compact(&mut self, index: u64) -> Result<(), String> {
        if index <= self.snap_index {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(format!(
                "compaction to {index} beyond last index {}",
                self.last_index()
            ));
        }
        let n = (index - self.snap_index) as usize;
        self.snap_term = self.entries[n - 1].term;
        self.snap_index = index;
        self.entries.drain(..n);
        self.entry_lsns.drain(..n);
        Ok(())
    }

    pub fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.snap_index {
            return Some(self.snap_term);
        }
        if idx < self.snap_index || idx > self.last_index() {
            return None;
        }
        Some(self.entries[(idx - self.snap_index - 1) as usize].term)
    }

    /// Lsn of the record that wrote entry `idx`, if present.
    pub fn lsn_of(&self, idx: u64) -> Option<u64> {
        if idx <= self.snap_index || idx > self.last_index() {
            return None;
        }
        Some(self.entry_lsns[(idx - self.snap_index - 1) as usize])
    }
}

/// Rebuilds storage from the WAL records in lsn order.
///
/// The last compaction marker sets the base. Entry records are applied with
/// raft's rule "a write at index i replaces i and everything after it", so a
/// suffix rewritten in a later term wins; what remains above the base must be
/// contiguous. The last hard state (a marker carries one too) wins.
pub(crate) fn replay(records: &[(u64, Vec<u8>)], voters: &[u64]) -> Result<ShardStorage, String> {
    let mut decoded = Vec::with_capacity(records.len());
    for (lsn, payload) in records {
        let rec = decode(payload).map_err(|e| format!("wal record at lsn {lsn}: {e}"))?;
        decoded.push((*lsn, rec));
    }
    let mut st = ShardStorage::new(voters);
    let mut log: BTreeMap<u64, (u64, Entry)> = BTreeMap::new();
    for (lsn, rec) in decoded {
        match rec {
            Record::Entry(e) => {
                if e.index == 0 {
                    return Err(format!("entry with index 0 at lsn {lsn}"));
                }
                let _ = log.split_off(&e.index);
                log.insert(e.index, (lsn, e));
            }
            Record::HardState(hs) => st.hard_state = hs,
            Record::Compaction {
                index,
                term,
                hard_state,
                conf_state,
                conf_index,
            } => {
                if index < st.snap_index {
                    return Err(format!(
                        "compaction marker to {index} at lsn {lsn} is older than {}",
                        st.snap_index
                    ));
                }
                st.snap_index = index;
                st.snap_term = term;
                st.hard_state = hard_state;
                st.conf_state = conf_state;
                st.conf_index = conf_index;
            }
        }
    }
    for (expect, (idx, (lsn, e))) in (st.snap_index + 1..).zip(log.range(st.snap_index + 1..)) {
        if *idx != expect {
            return Err(format!(
                "raft log has a gap: entry {idx} follows entry {}",
                expect - 1
            ));
        }
        st.entries.push(e.clone());
        st.entry_lsns.push(*lsn);
    }
    // A hard state is written after the entries of its batch, so its
    // commit never points past what survived; a log written by versions
    // that wrote it first may end below it (a torn tail).
    let last = st.last_index();
    st.hard_state.commit = st.hard_state.commit.clamp(st.snap_index, last);
    if let Some(e) = st.entries.last() {
        if e.term > st.hard_state.term {
            // The batch's hard state was lost with a torn tail after its
            // entries: the member had learnt that term from the leader
            // that sent them, and cast no vote in it that was not made
            // durable earlier. Knowing a term without a vote in it is
            // what receiving any message of that term gives.
            st.hard_state.term = e.term;
            st.hard_state.vote = 0;
        }
    }
    Ok(st)
}

impl Storage for ShardStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.snap_index - 1) as usize;
        let hi = (high - self.snap_index - 1) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(ShardStorage::last_index(self))
    }

    /// The state machine's snapshot file, described: its index, the term
    /// of that entry, the membership; `data` is the index (8 bytes LE).
    /// The follower fetches the file itself, in chunks (the shard's job).
    ///
    /// The membership sent is the one applied now, so the file must not
    /// predate the last conf change (a member added since would find
    /// itself missing from it, and raft refuses such a snapshot): then the
    /// answer is "temporarily unavailable" and the state machine is asked
    /// for a new file; raft offers again later.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot_file_index;
        if index < self.conf_index {
            self.snapshot_wanted.set(true);
        }
        let term = self.term_of(index);
        match term {
            Some(term)
                if index > 0
                    && index >= request_index
                    && index >= self.snap_index
                    && index >= self.conf_index =>
            {
                let mut snap = Snapshot::default();
                snap.data = index.to_le_bytes().to_vec().into();
                let meta = snap.mut_metadata();
                meta.index = index;
                meta.term = term;
                meta.set_conf_state(self.conf_state.clone());
                Ok(snap)
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_compaction, encode_entry, encode_hard_state};

    fn ent(term: u64, index: u64, data: &[u8]) -> Vec<u8> {
        let mut e = Entry::default();
        e.term = term;
        e.index = index;
        e.data = data.to_vec().into();
        encode_entry(&e)
    }

    fn hs(term: u64, commit: u64) -> Vec<u8> {
        let mut h = HardState::default();
        h.term = term;
        h.vote = 1;
        h.commit = commit;
        encode_hard_state(&h)
    }

    fn lsns(v: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        v.into_iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, p))
            .collect()
    }

    #[test]
    fn later_term_overwrites_suffix() {
        let recs = lsns(vec![
            hs(1, 0),
            ent(1, 1, b"a"),
            ent(1, 2, b"b"),
            ent(1, 3, b"c"),
            hs(2, 1),
            ent(2, 2, b"B"),
        ]);
        let st = replay(&recs, &[1]).unwrap();
        assert_eq!(st.last_index(), 2);
        assert_eq!(&st.entries[1].data[..], b"B");
        assert_eq!(st.term_of(2), Some(2));
        assert_eq!(st.entry_lsns, vec![2, 6]);
        assert_eq!(st.hard_state.commit, 1);
    }

    #[test]
    fn compaction_marker_sets_base_and_tolerates_missing_prefix() {
        let mut h = HardState::default();
        h.term = 1;
        h.commit = 5;
        let cs = ShardStorage::new(&[1]).conf_state;
        // The WAL was truncated: records start mid-log.
        let recs = vec![
            (10, ent(1, 6, b"f")),
            (11, encode_compaction(5, 1, &h, &cs, 0)),
            (12, ent(1, 7, b"g")),
        ];
        let st = replay(&recs, &[1]).unwrap();
        assert_eq!(st.snap_index, 5);
        assert_eq!(st.last_index(), 7);
        assert_eq!(st.term_of(5), Some(1));
    }

    #[test]
    fn a_hard_state_lost_after_its_entries_leaves_the_term_they_carry() {
        // A follower got term 3's entries with the hard state naming term
        // 3 in one write; the tail was torn after the entries.
        let recs = lsns(vec![
            hs(2, 1),
            ent(2, 1, b"a"),
            ent(2, 2, b"b"),
            ent(3, 2, b"B"),
            ent(3, 3, b"C"),
        ]);
        let st = replay(&recs, &[1, 2, 3]).unwrap();
        assert_eq!(st.hard_state.term, 3);
        assert_eq!(st.hard_state.vote, 0, "no vote in term 3 was made durable");
        assert_eq!(st.hard_state.commit, 1);
        assert_eq!(st.last_index(), 3);
    }

    #[test]
    fn gap_is_corrupt() {
        let recs = lsns(vec![hs(1, 0), ent(1, 1, b"a"), ent(1, 3, b"c")]);
        assert!(replay(&recs, &[1]).is_err());
        assert!(replay(&[(1, vec![77])], &[1]).is_err());
    }

    #[test]
    fn append_and_compact() {
        let mut st = ShardStorage::new(&[1]);
        let mk = |t, i| {
            let mut e = Entry::default();
            e.term = t;
            e.index = i;
            e
        };
        st.append(&[mk(1, 1), mk(1, 2), mk(1, 3)], &[1, 2, 3])
            .unwrap();
        st.append(&[mk(2, 3)], &[4]).unwrap();
        assert!(st.append(&[mk(2, 6)], &[5]).is_err());
        st.compact(2).unwrap();
        assert_eq!(st.snap_index, 2);
        assert_eq!(st.term_of(2), Some(1));
        assert_eq!(st.lsn_of(3), Some(4));
        assert!(st.append(&[mk(3, 2)], &[6]).is_err());
        assert!(st.compact(9).is_err());
    }
}
