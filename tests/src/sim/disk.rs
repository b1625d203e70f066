//! A simulated WAL file: the real frame encoding (`ferrokv_wal::frame`)
//! written into bytes, made durable by a simulated fdatasync, damaged at a
//! crash the way a crash damages what was not yet synced, and recovered
//! with the real recovery scan (`ferrokv_wal::scan_segment`).

use ferrokv_wal::frame;

use super::rng::Rng;

/// One shard log's WAL as one segment.
#[derive(Debug, Default)]
pub struct Disk {
    /// Frames written; `bytes[..durable]` survived an fdatasync.
    bytes: Vec<u8>,
    durable: usize,
    /// Lsn of the first frame in `bytes`.
    first_lsn: u64,
    /// Lsn the next frame gets.
    next_lsn: u64,
    /// No room for the next segment: an append fails before writing.
    pub full: bool,
}

/// What a crash did to the unsynced tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Nothing unsynced, or every unsynced byte reached the disk.
    None,
    /// The unsynced tail is gone.
    Lost,
    /// The unsynced tail was cut at a byte.
    Torn,
    /// The unsynced tail was cut and what follows the cut is garbage.
    Garbage,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            first_lsn: 1,
            next_lsn: 1,
            ..Disk::default()
        }
    }

    /// Writes `payloads` as frames after everything written so far (not
    /// yet durable); returns the last lsn.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> u64 {
        for p in payloads {
            self.bytes.extend(frame::encode(self.next_lsn, p));
            self.next_lsn += 1;
        }
        self.next_lsn - 1
    }

    /// The fdatasync of everything written so far returned.
    pub fn sync(&mut self) {
        self.durable = self.bytes.len();
    }

    /// Drops every frame before `lsn` (segments deleted after a
    /// compaction); only durable frames are ever dropped.
    pub fn truncate_before(&mut self, lsn: u64) -> Result<(), String> {
        let mut off = 0;
        let mut at = self.first_lsn;
        while at < lsn {
            match frame::decode(&self.bytes[off..self.durable]) {
                frame::Decoded::Record { encoded_len, .. } => {
                    off += encoded_len;
                    at += 1;
                }
                other => return Err(format!("truncate before lsn {lsn}: {other:?} at lsn {at}")),
            }
        }
        self.bytes.drain(..off);
        self.durable -= off;
        self.first_lsn = at;
        Ok(())
    }

    /// The process died: what was not synced is lost, cut, or cut with
    /// garbage after the cut; or all of it made it.
    pub fn crash(&mut self, rng: &mut Rng) -> Damage {
        let unsynced = self.bytes.len() - self.durable;
        if unsynced == 0 {
            return Damage::None;
        }
        let damage = match rng.below(4) {
            0 => Damage::None,
            1 => Damage::Lost,
            2 => Damage::Torn,
            _ => Damage::Garbage,
        };
        match damage {
            Damage::None => {}
            Damage::Lost => self.bytes.truncate(self.durable),
            Damage::Torn | Damage::Garbage => {
                let cut = self.durable + rng.below(unsynced);
                self.bytes.truncate(cut);
                if damage == Damage::Garbage {
                    for _ in 0..rng.below(unsynced - (cut - self.durable)) + 1 {
                        self.bytes.push((rng.next_u64() as u8) | 1);
                    }
                }
            }
        }
        self.durable = self.bytes.len();
        damage
    }

    /// Recovery as `Wal::open` does it: the records of the segment up to
    /// a torn tail, which is cut off so new frames follow the last valid
    /// one.
    pub fn recover(&mut self) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let out = ferrokv_wal::scan_segment(&self.bytes, "sim.wal", true, self.first_lsn)
            .map_err(|e| e.to_string())?;
        let end = usize::try_from(out.data_end).map_err(|e| e.to_string())?;
        self.bytes.truncate(end);
        self.durable = end;
        self.next_lsn = self.first_lsn + out.records.len() as u64;
        Ok(out.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_frames_survive_every_crash_and_unsynced_ones_may_not() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let mut d = Disk::new();
            d.append(&[b"a".to_vec(), b"b".to_vec()]);
            d.sync();
            d.append(&[b"c".to_vec(), vec![7; 300]]);
            d.crash(&mut rng);
            let recs = d.recover().unwrap();
            assert!(recs.len() >= 2, "seed {seed}: {recs:?}");
            assert_eq!(recs[0], (1, b"a".to_vec()));
            assert_eq!(recs[1], (2, b"b".to_vec()));
            // Appends after recovery continue the lsns.
            let last = d.append(&[b"d".to_vec()]);
            assert_eq!(last, recs.len() as u64 + 1);
            d.sync();
            assert_eq!(d.recover().unwrap().len(), recs.len() + 1);
        }
    }

    #[test]
    fn truncation_keeps_the_lsns_after_it() {
        let mut d = Disk::new();
        d.append(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        d.sync();
        d.truncate_before(3).unwrap();
        assert_eq!(d.recover().unwrap(), vec![(3, b"c".to_vec())]);
    }
}
