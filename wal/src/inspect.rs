//! Read-only listing of a WAL directory for support (`ferroutl wal`): every
//! segment in order, every record in it, and how each segment ends, using
//! the same scan as recovery. Plain blocking reads; never writes, so it is
//! safe on a copy of a data dir (the member should not be running).

use std::path::Path;

use crate::segment::{parse_segment_name, scan_segment};
use crate::Error;

/// One segment of a WAL directory.
#[derive(Debug)]
pub struct Segment {
    pub file: String,
    pub seq: u64,
    pub first_lsn: u64,
    pub records: Vec<(u64, Vec<u8>)>,
    /// Where the valid data ends; for the last segment a torn tail (offset,
    /// bytes dropped) as recovery would cut it.
    pub data_end: u64,
    pub torn: Option<(u64, u64)>,
}

/// Every segment of `dir`, oldest first. Damage recovery would refuse to
/// start on is an `Error::Corrupt` naming the file and offset.
pub fn read_dir(dir: &Path) -> Result<Vec<Segment>, Error> {
    let entries = std::fs::read_dir(dir).map_err(Error::io)?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(Error::io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((seq, first_lsn)) = parse_segment_name(&name) {
            names.push((seq, first_lsn, name));
        }
    }
    names.sort_unstable();
    let last = names.len().saturating_sub(1);
    let mut out = Vec::with_capacity(names.len());
    for (i, (seq, first_lsn, name)) in names.into_iter().enumerate() {
        let path = dir.join(&name);
        let buf = std::fs::read(&path).map_err(Error::io)?;
        let scan = scan_segment(&buf, &path.display().to_string(), i == last, first_lsn)?;
        out.push(Segment {
            file: name,
            seq,
            first_lsn,
            records: scan.records,
            data_end: scan.data_end,
            torn: scan.torn,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode;
    use crate::segment::segment_file_name;

    #[test]
    fn lists_segments_in_order_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Vec::new();
        for lsn in 1..=3 {
            first.extend(encode(lsn, format!("r{lsn}").as_bytes()));
        }
        first.resize(first.len() + 64, 0);
        std::fs::write(dir.path().join(segment_file_name(0, 1)), &first).unwrap();
        let mut second = encode(4, b"r4");
        let torn_at = second.len() as u64;
        second.extend(&encode(5, b"r5")[..10]);
        std::fs::write(dir.path().join(segment_file_name(1, 4)), &second).unwrap();
        std::fs::write(dir.path().join("0000000000000002.wal.tmp"), b"ignored").unwrap();
        let segs = read_dir(dir.path()).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(
            segs[0].records.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(segs[1].records, vec![(4, b"r4".to_vec())]);
        let (at, dropped) = segs[1].torn.unwrap();
        assert_eq!(at, torn_at);
        assert!((1..=10).contains(&dropped), "{dropped}");
        // Damage in a segment that is not the last is refused.
        let mut bad = first.clone();
        bad[20] ^= 1;
        std::fs::write(dir.path().join(segment_file_name(0, 1)), &bad).unwrap();
        assert!(matches!(read_dir(dir.path()), Err(Error::Corrupt { .. })));
    }
}
