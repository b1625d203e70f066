//! Restart. Each shard replays the committed entries of its log through
//! the apply path (`Shard::apply_committed`) and the sequencer's visibility
//! follows: a write is visible once every shard it touched has it, so a
//! write whose part a crash lost in some shard (never acknowledged) stays
//! invisible, with everything after it, until the leader's start marker
//! voids it. Logs written by older versions carry `TruncateAbove` markers
//! instead, resolved here before the replay.

use crate::record::Record;

/// Applies older `TruncateAbove` markers: a marker voids the writes above
/// its revision that precede it in the log. Entries keep their raft index.
pub fn resolve_truncations(records: Vec<(u64, Record)>) -> Vec<(u64, Record)> {
    let mut out: Vec<(u64, Record)> = Vec::with_capacity(records.len());
    for (index, r) in records {
        match r {
            Record::TruncateAbove { rev } => {
                out.retain(|(_, x)| !x.voided_above(rev));
            }
            other => out.push((index, other)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Part;
    use crate::sequencer::Sequencer;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn numbered(v: Vec<Record>) -> Vec<(u64, Record)> {
        v.into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r))
            .collect()
    }

    fn records(v: Vec<(u64, Record)>) -> Vec<Record> {
        v.into_iter().map(|(_, r)| r).collect()
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
        let out = resolve_truncations(numbered(vec![
            w(1),
            w(2),
            w(3),
            Record::TruncateAbove { rev: 1 },
            w(2),
        ]));
        assert_eq!(out[1].0, 5, "entries keep their index");
        assert_eq!(records(out), vec![w(1), w(2)]);
    }

    /// A revoke's lease-table change is void with its deletes; one that
    /// deleted nothing (rev 0), and grants, are never voided.
    #[test]
    fn lease_revoke_is_voided_with_its_deletes() {
        let revoke = |rev| Record::LeaseRevoke { id: 9, rev };
        let grant = Record::LeaseGrant { id: 9, ttl: 5 };
        let out = resolve_truncations(numbered(vec![
            grant.clone(),
            revoke(0),
            revoke(2),
            revoke(3),
            Record::TruncateAbove { rev: 2 },
        ]));
        assert_eq!(records(out), vec![grant.clone(), revoke(0), revoke(2)]);
        assert!(revoke(3).voided_above(2) && !revoke(2).voided_above(2));
        assert!(!revoke(0).voided_above(1) && !grant.voided_above(0));
    }

    proptest! {
        /// Revisions 2.. each touch a random set of shards; a crash keeps a
        /// random prefix of each shard's log; the shards replay in a random
        /// interleaving. Visible ends exactly at the longest prefix of
        /// revisions whose parts all survived.
        #[test]
        fn replay_makes_the_longest_complete_prefix_visible(
            touches in proptest::collection::vec(proptest::collection::btree_set(0u32..3, 1..=3), 0..30),
            keep in proptest::collection::vec(0usize..31, 3),
            picks in proptest::collection::vec(0usize..3, 0..100),
        ) {
            let mut logs: Vec<Vec<i64>> = vec![Vec::new(); 3];
            for (i, t) in touches.iter().enumerate() {
                for s in t { logs[*s as usize].push(i as i64 + 2); }
            }
            for (s, l) in logs.iter_mut().enumerate() {
                l.truncate(keep[s]);
            }
            let seq = Sequencer::new(3);
            seq.snapshot(1);
            let mut pos = [0usize; 3];
            let mut picks = picks.into_iter();
            loop {
                let open: Vec<usize> = (0..3).filter(|s| pos[*s] < logs[*s].len()).collect();
                if open.is_empty() { break; }
                let s = open[picks.next().unwrap_or(0) % open.len()];
                let r = logs[s][pos[s]];
                pos[s] += 1;
                let parts: BTreeSet<u32> = touches[r as usize - 2].clone();
                seq.written(s as u32, r, &parts);
            }
            let mut expect = 1;
            for (i, t) in touches.iter().enumerate() {
                let r = i as i64 + 2;
                if t.iter().all(|s| logs[*s as usize].contains(&r)) { expect = r; } else { break; }
            }
            prop_assert_eq!(seq.visible(), expect);
        }
    }
}
