//! What a shard writes into its raft log. A write record carries its main
//! revision and, for a transaction spanning shards, the whole write set of
//! every participant, so recovery can roll a transaction forward into a
//! shard that crashed before its own part was durable.

use ferrokv_mvcc::WriteOp;

use crate::auth_view::AuthRecord;

/// A run of ops one shard applied at consecutive sub revisions. A write
/// may hold several parts of the same shard (interleaved with others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub shard: u32,
    pub first_sub: i64,
    pub ops: Vec<WriteOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The parts of a write at revision `rev`; `shard`'s own part is the one
    /// to apply, the others are there for roll-forward.
    Write { rev: i64, parts: Vec<Part> },
    /// Compaction at `rev`, effective on a member once its visible
    /// revision is past `at` (or at it, once shard 0 applied its record):
    /// the highest revision assigned when every shard's record entered its
    /// log, so in every shard's log each write above `at` comes after it
    /// (docs/revisions-and-shards.md). 0: at once (records of older
    /// versions, which carry no `at`).
    Compact { rev: i64, at: i64 },
    /// Written by older versions at recovery: every earlier record above
    /// `rev` is void. Still read (at replay), no longer written.
    TruncateAbove { rev: i64 },
    /// Written by a new cluster leader into every shard's log before it
    /// serves: revisions `cut+1..=through` were never complete everywhere
    /// and are void; every earlier record of them is dropped. `id`s
    /// increase from one leader start to the next.
    Marker { id: u64, cut: i64, through: i64 },
    /// A lease granted in this (the lease-owning) shard; `ttl` in seconds,
    /// already raised to the minimum.
    LeaseGrant { id: i64, ttl: i64 },
    /// A lease revoked from this shard's lease table. The attached keys'
    /// deletion is a `Write` at revision `rev`; if there were none, `rev`
    /// is the last revision assigned when it found none (0: none yet, and
    /// in logs of older versions), so a marker voiding it voids the revoke.
    LeaseRevoke { id: i64, rev: i64 },
    /// An auth store change or a token, in shard 0's log only (the auth
    /// store is cluster state outside the keyspace: it takes no revision).
    Auth(AuthRecord),
}

impl Record {
    /// Whether a recovery cut at `cut` voids this record: writes above it,
    /// and lease revokes whose deletes (or, having none, the state they
    /// read) were above it (`rev` 0 stands on its own).
    pub fn voided_above(&self, cut: i64) -> bool {
        match self {
            Record::Write { rev, .. } => *rev > cut,
            Record::LeaseRevoke { rev, .. } => *rev > cut,
            _ => false,
        }
    }
}

impl std::fmt::Display for Record {
    /// One line for `ferroutl wal`; keys and values are shown with Rust's
    /// escaping, values shortened.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const VALUE_SHOWN_MAX: usize = 32;
        let bytes = |b: &[u8]| {
            let shown = &b[..b.len().min(VALUE_SHOWN_MAX)];
            let more = if b.len() > shown.len() { "..." } else { "" };
            format!("\"{}\"{more}", shown.escape_ascii())
        };
        match self {
            Record::Write { rev, parts } => {
                write!(f, "write revision {rev}:")?;
                for p in parts {
                    write!(f, " [shard {} sub {}:", p.shard, p.first_sub)?;
                    for op in &p.ops {
                        match op {
                            WriteOp::Put { key, value, lease } => {
                                write!(f, " put {}={}", bytes(key), bytes(value))?;
                                if *lease != 0 {
                                    write!(f, " lease {lease:x}")?;
                                }
                            }
                            WriteOp::Delete { key } => write!(f, " delete {}", bytes(key))?,
                        }
                    }
                    write!(f, "]")?;
                }
                Ok(())
            }
            Record::Compact { rev, at } => {
                write!(f, "compact at revision {rev}, effective past {at}")
            }
            Record::TruncateAbove { rev } => {
                write!(f, "recovery: records above revision {rev} void")
            }
            Record::Marker { id, cut, through } => {
                // Saturating: the record may come from a damaged log.
                write!(
                    f,
                    "leader start {id}: revisions {}..={through} void",
                    cut.saturating_add(1)
                )
            }
            Record::LeaseGrant { id, ttl } => write!(f, "lease grant {id:x} ttl {ttl}s"),
            Record::LeaseRevoke { id, rev } => {
                write!(f, "lease revoke {id:x} (keys deleted at revision {rev})")
            }
            // Never a password hash or a token: the log may be shown to
            // anyone debugging it.
            Record::Auth(AuthRecord::Change(op)) => write!(f, "auth {}", op.name()),
            Record::Auth(AuthRecord::Token { name, .. }) => {
                write!(f, "auth token for {}", name.escape_debug())
            }
        }
    }
}

const TAG_WRITE: u8 = 1;
const TAG_COMPACT: u8 = 2;
const TAG_TRUNCATE: u8 = 3;
const TAG_LEASE_GRANT: u8 = 4;
const TAG_LEASE_REVOKE: u8 = 5;
const TAG_MARKER: u8 = 6;
const TAG_AUTH: u8 = 7;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("shard record: {0}")]
pub struct DecodeError(pub &'static str);

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Write { rev, parts } => {
                out.push(TAG_WRITE);
                out.extend_from_slice(&rev.to_le_bytes());
                out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
                for p in parts {
                    out.extend_from_slice(&p.shard.to_le_bytes());
                    out.extend_from_slice(&p.first_sub.to_le_bytes());
                    out.extend_from_slice(&(p.ops.len() as u32).to_le_bytes());
                    for op in &p.ops {
                        match op {
                            WriteOp::Put { key, value, lease } => {
                                out.push(OP_PUT);
                                put_bytes(&mut out, key);
                                put_bytes(&mut out, value);
                                out.extend_from_slice(&lease.to_le_bytes());
                            }
                            WriteOp::Delete { key } => {
                                out.push(OP_DELETE);
                                put_bytes(&mut out, key);
                            }
                        }
                    }
                }
            }
            Record::Compact { rev, at } => {
                out.push(TAG_COMPACT);
                out.extend_from_slice(&rev.to_le_bytes());
                // 0 is the older versions' record, which has no `at`.
                if *at != 0 {
                    out.extend_from_slice(&at.to_le_bytes());
                }
            }
            Record::TruncateAbove { rev } => {
                out.push(TAG_TRUNCATE);
                out.extend_from_slice(&rev.to_le_bytes());
            }
            Record::Marker { id, cut, through } => {
                out.push(TAG_MARKER);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&cut.to_le_bytes());
                out.extend_from_slice(&through.to_le_bytes());
            }
            Record::LeaseGrant { id, ttl } => {
                out.push(TAG_LEASE_GRANT);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&ttl.to_le_bytes());
            }
            Record::LeaseRevoke { id, rev } => {
                out.push(TAG_LEASE_REVOKE);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&rev.to_le_bytes());
            }
            Record::Auth(rec) => {
                out.push(TAG_AUTH);
                out.extend_from_slice(&rec.encode());
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let rec = match r.u8()? {
            TAG_WRITE => {
                let rev = r.i64()?;
                let n = r.u32()? as usize;
                let mut parts = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let shard = r.u32()?;
                    let first_sub = r.i64()?;
                    let nops = r.u32()? as usize;
                    let mut ops = Vec::with_capacity(nops.min(1024));
                    for _ in 0..nops {
                        ops.push(match r.u8()? {
                            OP_PUT => WriteOp::Put {
                                key: r.bytes()?,
                                value: r.bytes()?,
                                lease: r.i64()?,
                            },
                            OP_DELETE => WriteOp::Delete { key: r.bytes()? },
                            _ => return Err(DecodeError("unknown op tag")),
                        });
                    }
                    parts.push(Part {
                        shard,
                        first_sub,
                        ops,
                    });
                }
                Record::Write { rev, parts }
            }
            TAG_COMPACT => {
                let rev = r.i64()?;
                // Absent in records of older versions (read as 0, which is
                // never written).
                let at = if r.pos < buf.len() { r.i64()? } else { 0 };
                if at == 0 && r.pos > 9 {
                    return Err(DecodeError("compaction threshold 0"));
                }
                Record::Compact { rev, at }
            }
            TAG_TRUNCATE => Record::TruncateAbove { rev: r.i64()? },
            TAG_MARKER => Record::Marker {
                id: r.i64()? as u64,
                cut: r.i64()?,
                through: r.i64()?,
            },
            TAG_LEASE_GRANT => Record::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            TAG_LEASE_REVOKE => Record::LeaseRevoke {
                id: r.i64()?,
                rev: r.i64()?,
            },
            TAG_AUTH => {
                let rest = r.take(buf.len() - r.pos)?;
                Record::Auth(AuthRecord::decode(rest).map_err(|_| DecodeError("auth record"))?)
            }
            _ => return Err(DecodeError("unknown record tag")),
        };
        if r.pos != buf.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(rec)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// Entry point for the fuzz targets (`fuzz/`) and the replay of their
/// corpora: a shard log record read back from disk or from a peer.
#[doc(hidden)]
pub mod fuzzing {
    use super::Record;

    /// What decodes must print (ferroutl shows records from damaged
    /// logs) and re-encode to the very bytes it came from.
    pub fn decode(data: &[u8]) {
        if let Ok(rec) = Record::decode(data) {
            let _ = rec.to_string();
            assert_eq!(rec.encode(), data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = WriteOp> {
        prop_oneof![
            (any::<Vec<u8>>(), any::<Vec<u8>>(), any::<i64>())
                .prop_map(|(key, value, lease)| WriteOp::Put { key, value, lease }),
            any::<Vec<u8>>().prop_map(|key| WriteOp::Delete { key }),
        ]
    }

    #[test]
    fn a_compaction_record_carries_its_threshold_and_old_ones_read_as_zero() {
        let rec = Record::Compact { rev: 7, at: 9 };
        assert_eq!(Record::decode(&rec.encode()), Ok(rec));
        // An older version's record: the tag and the revision only.
        let mut old = vec![TAG_COMPACT];
        old.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(Record::decode(&old), Ok(Record::Compact { rev: 7, at: 0 }));
        assert_eq!(Record::Compact { rev: 7, at: 0 }.encode(), old);
        old.extend_from_slice(&0i64.to_le_bytes());
        assert!(
            Record::decode(&old).is_err(),
            "a written 0 is not canonical"
        );
    }

    #[test]
    fn records_describe_themselves_in_one_line() {
        let w = Record::Write {
            rev: 5,
            parts: vec![Part {
                shard: 1,
                first_sub: 0,
                ops: vec![
                    WriteOp::Put {
                        key: b"k\n".to_vec(),
                        value: vec![b'v'; 40],
                        lease: 0x1f,
                    },
                    WriteOp::Delete { key: b"d".to_vec() },
                ],
            }],
        };
        let text = w.to_string();
        assert!(
            text.starts_with("write revision 5: [shard 1 sub 0: put \"k\\n\"="),
            "{text}"
        );
        assert!(text.contains("...") && text.contains("lease 1f") && text.contains("delete \"d\""));
        assert!(!text.contains('\n'));
        assert_eq!(
            Record::LeaseGrant { id: 255, ttl: 60 }.to_string(),
            "lease grant ff ttl 60s"
        );
    }

    /// Found reading the code for the fuzz target: `ferroutl wal` showing
    /// a marker whose cut is the largest revision overflowed (a panic in
    /// debug builds).
    #[test]
    fn a_marker_at_the_last_revision_describes_itself() {
        let m = Record::Marker {
            id: 1,
            cut: i64::MAX,
            through: i64::MAX,
        };
        let decoded = Record::decode(&m.encode()).unwrap();
        assert!(decoded
            .to_string()
            .starts_with("leader start 1: revisions "));
    }

    proptest! {
        #[test]
        fn lease_records_round_trip(id in any::<i64>(), x in any::<i64>()) {
            let marker = Record::Marker { id: id as u64, cut: x, through: x.wrapping_add(id) };
            for rec in [Record::LeaseGrant { id, ttl: x }, Record::LeaseRevoke { id, rev: x }, marker] {
                let enc = rec.encode();
                prop_assert_eq!(Record::decode(&enc), Ok(rec));
                for cut in 0..enc.len() {
                    prop_assert!(Record::decode(&enc[..cut]).is_err());
                }
                let mut long = enc.clone();
                long.push(0);
                prop_assert!(Record::decode(&long).is_err());
            }
        }

        #[test]
        fn round_trip(rev in any::<i64>(), parts in proptest::collection::vec((any::<u32>(), any::<i64>(), proptest::collection::vec(op(), 0..4)), 0..4)) {
            let rec = Record::Write { rev, parts: parts.into_iter().map(|(shard, first_sub, ops)| Part { shard, first_sub, ops }).collect() };
            let enc = rec.encode();
            prop_assert_eq!(Record::decode(&enc), Ok(rec));
            // Every strict prefix is rejected, never misread.
            for cut in 0..enc.len() {
                prop_assert!(Record::decode(&enc[..cut]).is_err());
            }
        }
    }
}
