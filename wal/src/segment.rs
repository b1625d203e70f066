//! Segment naming and the sans-IO recovery scan of one segment's bytes.

use crate::frame::{decode, valid_record_at, Decoded, HEADER_LEN};
use crate::Error;

/// `{seq:016x}-{first_lsn:016x}.wal`
pub(crate) fn segment_file_name(seq: u64, first_lsn: u64) -> String {
    format!("{seq:016x}-{first_lsn:016x}.wal")
}

/// Name of a segment being preallocated in the background; renamed to its
/// final name (which carries the first lsn) when it becomes active. Leftovers
/// from a crash are deleted on open.
pub(crate) fn prealloc_file_name(seq: u64) -> String {
    format!("{seq:016x}.wal.tmp")
}

pub(crate) const PREALLOC_SUFFIX: &str = ".wal.tmp";

/// Parses `{seq:016x}-{first_lsn:016x}.wal` into `(seq, first_lsn)`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, lsn) = stem.split_once('-')?;
    if seq.len() != 16 || lsn.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(lsn, 16).ok()?,
    ))
}

/// What the recovery scan of one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub records: Vec<(u64, Vec<u8>)>,
    /// Offset just past the last valid record.
    pub data_end: u64,
    /// Torn tail found (only ever in the last segment): `(offset, bytes dropped)`.
    pub torn: Option<(u64, u64)>,
}

/// Decodes every record of one segment: the recovery scan `Wal::open`
/// runs on every file (and the deterministic simulation on its simulated
/// disk's bytes).
///
/// * Records must carry consecutive lsns starting at `first_lsn`.
/// * Data ends at an all-zero header (or the end of the file); everything
///   after it must be zeros.
/// * A bad record in the last segment with no valid record after it is a torn
///   tail: the scan stops there. Anything else bad is `Error::Corrupt`.
pub fn scan_segment(
    buf: &[u8],
    file: &str,
    is_last: bool,
    first_lsn: u64,
) -> Result<ScanOutcome, Error> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        file: file.to_string(),
        offset: offset as u64,
        reason,
    };
    let mut out = ScanOutcome::default();
    let mut off = 0usize;
    let mut expect = first_lsn;
    let reason = loop {
        let rest = &buf[off..];
        match decode(rest) {
            Decoded::Record {
                lsn,
                payload,
                encoded_len,
            } => {
                if lsn != expect {
                    return Err(corrupt(
                        off,
                        format!("record has lsn {lsn} where lsn {expect} was expected"),
                    ));
                }
                out.records.push((lsn, payload.to_vec()));
                off += encoded_len;
                // The first lsn comes from the file name, which a damaged
                // directory may hold any value in.
                expect = expect.checked_add(1).ok_or_else(|| {
                    corrupt(off, format!("lsn {lsn} is the last lsn there can be"))
                })?;
            }
            Decoded::End => {
                if rest.iter().all(|b| *b == 0) {
                    out.data_end = off as u64;
                    return Ok(out);
                }
                break "non-zero bytes after the end-of-data marker".to_string();
            }
            Decoded::Bad(bad) => break bad.to_string(),
        }
    };
    if !is_last {
        return Err(corrupt(off, format!("{reason} (not the last segment)")));
    }
    // Torn tail or corruption? A torn write only loses the tail; if any valid
    // record of this log follows, the damage is in the middle.
    let records_max = (buf.len() / HEADER_LEN) as u64;
    for p in off + 1..buf.len() {
        if valid_record_at(&buf[p..], expect..=expect.saturating_add(records_max)) {
            return Err(corrupt(
                off,
                format!("{reason}, but a valid record follows at offset {p}"),
            ));
        }
    }
    let last_nonzero = buf.iter().rposition(|b| *b != 0).map_or(off, |p| p + 1);
    out.data_end = off as u64;
    out.torn = Some((off as u64, last_nonzero.saturating_sub(off) as u64));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode;

    fn log(first: u64, n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for lsn in first..first + n {
            v.extend(encode(lsn, format!("payload-{lsn}").as_bytes()));
        }
        v
    }

    #[test]
    fn names_round_trip() {
        let n = segment_file_name(3, 0x1234);
        assert_eq!(n, "0000000000000003-0000000000001234.wal");
        assert_eq!(parse_segment_name(&n), Some((3, 0x1234)));
        assert_eq!(parse_segment_name("0000000000000003.wal.tmp"), None);
        assert_eq!(parse_segment_name("junk.wal"), None);
    }

    #[test]
    fn clean_segment_with_zero_padding() {
        let mut buf = log(5, 10);
        let end = buf.len() as u64;
        buf.extend([0u8; 5000]);
        let out = scan_segment(&buf, "f", false, 5).unwrap();
        assert_eq!(out.records.len(), 10);
        assert_eq!(out.records[0].0, 5);
        assert_eq!(out.data_end, end);
        assert_eq!(out.torn, None);
    }

    #[test]
    fn torn_tail_in_last_segment() {
        let full = log(1, 10);
        let cut = full.len() - 7;
        let mut buf = full[..cut].to_vec();
        buf.extend([0u8; 100]);
        let out = scan_segment(&buf, "f", true, 1).unwrap();
        assert_eq!(out.records.len(), 9);
        let (off, _) = out.torn.unwrap();
        assert_eq!(off, out.data_end);
        // The same damage in a non-last segment is corruption.
        let err = scan_segment(&buf, "f", false, 1).unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset, .. } if offset == off));
    }

    #[test]
    fn garbage_after_data_is_torn_in_last_segment() {
        let mut buf = log(1, 3);
        buf.extend((0..1000u32).map(|i| (i * 7 + 3) as u8));
        let out = scan_segment(&buf, "f", true, 1).unwrap();
        assert_eq!(out.records.len(), 3);
        assert!(out.torn.is_some());
    }

    #[test]
    fn bad_record_followed_by_valid_is_corrupt() {
        let mut buf = log(1, 10);
        // Flip a payload byte of record 3 (lsn 3).
        let rec_len = encode(1, b"payload-1").len();
        buf[2 * rec_len + HEADER_LEN + 1] ^= 0x40;
        let err = scan_segment(&buf, "seg.wal", true, 1).unwrap_err();
        match err {
            Error::Corrupt { file, offset, .. } => {
                assert_eq!(file, "seg.wal");
                assert_eq!(offset, 2 * rec_len as u64);
            }
            e => panic!("unexpected {e}"),
        }
    }

    /// Found reading the code for the fuzz target: an lsn at the top of
    /// the range overflowed the next expected lsn (a panic in debug builds).
    #[test]
    fn the_last_lsn_there_can_be_is_corrupt_not_a_panic() {
        let buf = encode(u64::MAX, b"x");
        assert!(matches!(
            scan_segment(&buf, "f", true, u64::MAX),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn lsn_gap_is_corrupt() {
        let mut buf = log(1, 3);
        buf.extend(log(5, 2));
        assert!(matches!(
            scan_segment(&buf, "f", true, 1),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            scan_segment(&log(2, 2), "f", true, 1),
            Err(Error::Corrupt { offset: 0, .. })
        ));
    }
}
