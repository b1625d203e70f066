//! Restart across shards. A write is acknowledged only once every shard it
//! touched has it durable, and a later write may have read an earlier
//! one's not-yet-durable effects; so after a crash the member keeps the
//! longest prefix of revisions that are complete in every shard they
//! touched (the cut), and voids everything above it. Nothing above the cut
//! was ever acknowledged or visible.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::Record;

/// What one shard recovered: its snapshot's last revision and, for every
/// write in its log after the snapshot, the shards that write touched.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub shard: u32,
    pub snapshot_rev: i64,
    pub writes: BTreeMap<i64, BTreeSet<u32>>,
}

impl Summary {
    pub fn of(shard: u32, snapshot_rev: i64, records: &[Record]) -> Summary {
        let mut writes = BTreeMap::new();
        for r in records {
            if let Record::Write { rev, parts } = r {
                if *rev > snapshot_rev {
                    writes.insert(*rev, parts.iter().map(|p| p.shard).collect());
                }
            }
        }
        Summary {
            shard,
            snapshot_rev,
            writes,
        }
    }

    fn has(&self, rev: i64) -> bool {
        self.snapshot_rev >= rev || self.writes.contains_key(&rev)
    }
}

/// Apply earlier `TruncateAbove` markers: a marker voids the writes above
/// its revision that precede it in the log.
pub fn resolve_truncations(records: Vec<Record>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    for r in records {
        match r {
            Record::TruncateAbove { rev } => {
                out.retain(|x| !x.voided_above(rev));
            }
            other => out.push(other),
        }
    }
    out
}

/// The highest revision V such that every revision <= V is complete.
/// Snapshots are only taken of visible state, so everything up to the
/// newest snapshot is complete.
pub fn cut(all: &[Summary]) -> i64 {
    let by_shard: BTreeMap<u32, &Summary> = all.iter().map(|s| (s.shard, s)).collect();
    // Revision 1 is the empty store every member starts from (as in etcd);
    // the first write is revision 2.
    let mut v = all.iter().map(|s| s.snapshot_rev).max().unwrap_or(0).max(1);
    loop {
        let next = v + 1;
        let Some(participants) = all.iter().find_map(|s| s.writes.get(&next)) else {
            return v;
        };
        let complete = participants
            .iter()
            .all(|p| by_shard.get(p).is_some_and(|s| s.has(next)));
        if !complete {
            return v;
        }
        v = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Part;
    use proptest::prelude::*;

    fn sum(shard: u32, snap: i64, writes: &[(i64, &[u32])]) -> Summary {
        Summary {
            shard,
            snapshot_rev: snap,
            writes: writes
                .iter()
                .map(|(r, p)| (*r, p.iter().copied().collect()))
                .collect(),
        }
    }

    #[test]
    fn half_written_transaction_is_cut_with_everything_after_it() {
        // rev 3 touched shards 0 and 1 but only 0 has it; 4 (complete) read
        // 3's effects and must go too.
        let all = [
            sum(0, 0, &[(2, &[0]), (4, &[0, 1]), (5, &[0])]),
            sum(1, 0, &[(3, &[1])]),
        ];
        assert_eq!(cut(&all), 3);
    }

    #[test]
    fn snapshots_count_as_present() {
        let all = [sum(0, 5, &[(6, &[0, 1])]), sum(1, 6, &[])];
        assert_eq!(cut(&all), 6);
    }

    #[test]
    fn truncation_marker_voids_only_earlier_writes_above_it() {
        let w = |rev| Record::Write {
            rev,
            parts: vec![Part {
                shard: 0,
                first_sub: 0,
                ops: vec![],
            }],
        };
        let out = resolve_truncations(vec![
            w(1),
            w(2),
            w(3),
            Record::TruncateAbove { rev: 1 },
            w(2),
        ]);
        assert_eq!(out, vec![w(1), w(2)]);
    }

    /// A revoke's lease-table change is void with its deletes; one that
    /// deleted nothing (rev 0), and grants, are never voided.
    #[test]
    fn lease_revoke_is_voided_with_its_deletes() {
        let revoke = |rev| Record::LeaseRevoke { id: 9, rev };
        let grant = Record::LeaseGrant { id: 9, ttl: 5 };
        let out = resolve_truncations(vec![
            grant.clone(),
            revoke(0),
            revoke(2),
            revoke(3),
            Record::TruncateAbove { rev: 2 },
        ]);
        assert_eq!(out, vec![grant.clone(), revoke(0), revoke(2)]);
        assert!(revoke(3).voided_above(2) && !revoke(2).voided_above(2));
        assert!(!revoke(0).voided_above(1) && !grant.voided_above(0));
    }

    proptest! {
        /// Model: revisions 1..=n each touch a random set of shards; a crash
        /// keeps a random prefix of each shard's log. The cut is exactly the
        /// longest prefix of revisions whose parts all survived.
        #[test]
        fn cut_is_longest_complete_prefix(
            touches in proptest::collection::vec(proptest::collection::btree_set(0u32..3, 1..=3), 0..30),
            keep in proptest::collection::vec(0usize..31, 3),
        ) {
            // Writes are revisions 2..; revision 1 is the empty store.
            let mut logs: Vec<Vec<i64>> = vec![Vec::new(); 3];
            for (i, t) in touches.iter().enumerate() {
                for s in t { logs[*s as usize].push(i as i64 + 2); }
            }
            let all: Vec<Summary> = (0..3u32).map(|s| {
                let kept = &logs[s as usize][..keep[s as usize].min(logs[s as usize].len())];
                Summary { shard: s, snapshot_rev: 0, writes: kept.iter().map(|r| (*r, touches[*r as usize - 2].clone())).collect() }
            }).collect();
            let mut expect = 1;
            for (i, t) in touches.iter().enumerate() {
                let r = i as i64 + 2;
                if t.iter().all(|s| all[*s as usize].writes.contains_key(&r)) { expect = r; } else { break; }
            }
            prop_assert_eq!(cut(&all), expect);
        }
    }
}
