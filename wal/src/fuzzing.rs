//! Entry points for the fuzz targets (`fuzz/`) and for the stable-Rust
//! replay of their corpora (`tests/tests/fuzz_corpus.rs`). Each takes
//! untrusted bytes and panics only on a bug: damaged input must come back
//! as an error, and what decodes must mean what it says.

use crate::frame::{decode, encode, Decoded};
use crate::segment::scan_segment;

/// Decodes records back to back, as recovery walks a segment; every
/// record that decodes must re-encode to the very bytes it came from.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    while let Decoded::Record {
        lsn,
        payload,
        encoded_len,
    } = decode(rest)
    {
        assert_eq!(encode(lsn, payload), rest[..encoded_len]);
        rest = &rest[encoded_len..];
    }
}

/// Bytes of the input before the segment: a flags byte (bit 0: the
/// segment is the last one, where a torn tail is allowed) and the first
/// lsn the segment's name claims (u64 LE; file names are untrusted too).
pub const SEGMENT_PREFIX_LEN: usize = 9;

/// The recovery scan of one segment file.
pub fn segment(data: &[u8]) {
    let Some((prefix, buf)) = data.split_at_checked(SEGMENT_PREFIX_LEN) else {
        return;
    };
    let is_last = prefix[0] & 1 == 1;
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&prefix[1..]);
    let first_lsn = u64::from_le_bytes(lsn);
    let Ok(out) = scan_segment(buf, "fuzz.wal", is_last, first_lsn) else {
        return;
    };
    let data_end = usize::try_from(out.data_end).expect("data end fits the buffer");
    assert!(data_end <= buf.len());
    let mut expect = first_lsn;
    let mut at = 0;
    for (lsn, payload) in &out.records {
        assert_eq!(*lsn, expect, "records are consecutive from the name's lsn");
        let rec = encode(*lsn, payload);
        assert_eq!(buf[at..at + rec.len()], rec[..], "records lie back to back");
        at += rec.len();
        expect = expect.wrapping_add(1);
    }
    assert_eq!(at, data_end);
    if out.torn.is_none() {
        assert!(buf[data_end..].iter().all(|b| *b == 0));
    } else {
        assert!(is_last, "a torn tail only in the last segment");
    }
}
