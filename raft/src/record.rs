//! Raft records inside WAL payloads: a tag byte then fixed little-endian fields.
//!
//! ```text
//! Entry      = 0x01 | term u64 | index u64 | entry_type u8 | data ...
//! HardState  = 0x02 | term u64 | vote u64 | commit u64
//! Compaction = 0x03 | index u64 | term u64 | hs.term u64 | hs.vote u64 | hs.commit u64
//!                   | voters_len u32 | voters u64* | learners_len u32 | learners u64*
//!                   | conf_index u64
//! ```
//! `conf_index` is the index of the last conf change the conf state
//! includes (it may be above `index`: the marker records the membership
//! applied when it was written). Markers written before membership changes
//! existed end after the learners and read as `conf_index` 0.
//! The entry `context` is not stored: it only links a live proposal to its
//! waiter, and waiters do not survive a restart.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};

const TAG_ENTRY: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_COMPACTION: u8 = 3;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Entry(Entry),
    HardState(HardState),
    /// Entries <= `index` are covered by the caller's snapshot.
    Compaction {
        index: u64,
        term: u64,
        hard_state: HardState,
        conf_state: ConfState,
        conf_index: u64,
    },
}

fn put(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + e.data.len());
    out.push(TAG_ENTRY);
    put(&mut out, e.term);
    put(&mut out, e.index);
    out.push(e.get_entry_type() as u8);
    out.extend_from_slice(&e.data);
    out
}

pub(crate) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(TAG_HARD_STATE);
    put(&mut out, hs.term);
    put(&mut out, hs.vote);
    put(&mut out, hs.commit);
    out
}

pub(crate) fn encode_compaction(
    index: u64,
    term: u64,
    hs: &HardState,
    cs: &ConfState,
    conf_index: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(TAG_COMPACTION);
    for v in [index, term, hs.term, hs.vote, hs.commit] {
        put(&mut out, v);
    }
    for list in [&cs.voters, &cs.learners] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for v in list.iter() {
            put(&mut out, *v);
        }
    }
    put(&mut out, conf_index);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        if self.buf.len() < 8 {
            return Err("record too short".to_string());
        }
        let (a, b) = self.buf.split_at(8);
        self.buf = b;
        let mut x = [0u8; 8];
        x.copy_from_slice(a);
        Ok(u64::from_le_bytes(x))
    }
    fn u32(&mut self) -> Result<u32, String> {
        if self.buf.len() < 4 {
            return Err("record too short".to_string());
        }
        let (a, b) = self.buf.split_at(4);
        self.buf = b;
        let mut x = [0u8; 4];
        x.copy_from_slice(a);
        Ok(u32::from_le_bytes(x))
    }
    fn u8(&mut self) -> Result<u8, String> {
        let (&a, b) = self.buf.split_first().ok_or("record too short")?;
        self.buf = b;
        Ok(a)
    }
    fn list(&mut self) -> Result<Vec<u64>, String> {
        let n = self.u32()? as usize;
        if self.buf.len() < n.saturating_mul(8) {
            return Err("record too short".to_string());
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

pub(crate) fn decode(buf: &[u8]) -> Result<Record, String> {
    let mut r = Reader { buf };
    match r.u8()? {
        TAG_ENTRY => {
            let mut e = Entry::default();
            e.term = r.u64()?;
            e.index = r.u64()?;
            let ty = match r.u8()? {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                t => return Err(format!("unknown entry type {t}")),
            };
            e.set_entry_type(ty);
            e.data = r.buf.to_vec().into();
            Ok(Record::Entry(e))
        }
        TAG_HARD_STATE => {
            let mut hs = HardState::default();
            hs.term = r.u64()?;
            hs.vote = r.u64()?;
            hs.commit = r.u64()?;
            Ok(Record::HardState(hs))
        }
        TAG_COMPACTION => {
            let index = r.u64()?;
            let term = r.u64()?;
            let mut hs = HardState::default();
            hs.term = r.u64()?;
            hs.vote = r.u64()?;
            hs.commit = r.u64()?;
            let mut cs = ConfState::default();
            cs.voters = r.list()?;
            cs.learners = r.list()?;
            let conf_index = if r.buf.is_empty() { 0 } else { r.u64()? };
            Ok(Record::Compaction {
                index,
                term,
                hard_state: hs,
                conf_state: cs,
                conf_index,
            })
        }
        t => Err(format!("unknown record tag {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut e = Entry::default();
        e.term = 3;
        e.index = 42;
        e.set_entry_type(EntryType::EntryConfChange);
        e.data = b"abc".to_vec().into();
        assert_eq!(decode(&encode_entry(&e)).unwrap(), Record::Entry(e));

        let mut hs = HardState::default();
        hs.term = 5;
        hs.vote = 1;
        hs.commit = 9;
        assert_eq!(
            decode(&encode_hard_state(&hs)).unwrap(),
            Record::HardState(hs.clone())
        );
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        cs.learners = vec![7];
        assert_eq!(
            decode(&encode_compaction(10, 4, &hs, &cs, 12)).unwrap(),
            Record::Compaction {
                index: 10,
                term: 4,
                hard_state: hs.clone(),
                conf_state: cs.clone(),
                conf_index: 12,
            }
        );
        // A marker from before membership changes: no conf index.
        let mut old = encode_compaction(10, 4, &hs, &cs, 0);
        old.truncate(old.len() - 8);
        assert_eq!(
            decode(&old).unwrap(),
            Record::Compaction {
                index: 10,
                term: 4,
                hard_state: hs,
                conf_state: cs,
                conf_index: 0,
            }
        );
        assert!(decode(&[9]).is_err());
        assert!(decode(&[TAG_HARD_STATE, 1, 2]).is_err());
        assert!(decode(&[]).is_err());
    }
}
