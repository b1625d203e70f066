//! `ferroutl wal`: every record of every shard's log in a data dir, one
//! line each, for support cases: the WAL frame (segment, lsn), the raft
//! record, and for an entry the shard's own record (`Record`'s Display).

use std::fmt::Write as _;
use std::path::Path;

use crate::record::Record;

/// The listing of every shard's WAL under `data_dir` (or `wal_dir`, when the
/// member runs with `--wal-dir`). Read-only.
pub fn describe_wal(data_dir: &Path, wal_dir: Option<&Path>) -> Result<String, String> {
    let shards = crate::data_dir_shards(data_dir)?;
    let mut out = String::new();
    for s in 0..shards {
        let dir = match wal_dir {
            Some(w) => w.join(format!("shard-{s}")),
            None => data_dir
                .join("member")
                .join(format!("shard-{s}"))
                .join("wal"),
        };
        let segments =
            ferrokv_wal::inspect::read_dir(&dir).map_err(|e| format!("shard {s}: {e}"))?;
        let _ = writeln!(
            out,
            "shard {s}: {} ({} segments)",
            dir.display(),
            segments.len()
        );
        for seg in segments {
            let _ = writeln!(
                out,
                "  segment {} (first lsn {}, {} records, data ends at byte {})",
                seg.file,
                seg.first_lsn,
                seg.records.len(),
                seg.data_end
            );
            for (lsn, payload) in &seg.records {
                let (raft, data) = ferrokv_raft::describe_wal_record(payload);
                let _ = write!(out, "    lsn {lsn}: {raft}");
                if let Some(data) = data {
                    match Record::decode(&data) {
                        Ok(rec) => {
                            let _ = write!(out, ": {rec}");
                        }
                        Err(e) => {
                            let _ = write!(out, ": undecodable shard record ({e})");
                        }
                    }
                }
                out.push('\n');
            }
            if let Some((at, dropped)) = seg.torn {
                let _ = writeln!(
                    out,
                    "    torn tail at byte {at}: {dropped} bytes a restart drops"
                );
            }
        }
    }
    Ok(out)
}
