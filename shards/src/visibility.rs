//! Which revisions are visible on this member: a plain state machine (no
//! I/O, no clock) fed by every shard's apply path, leader and follower
//! alike.
//!
//! A revision is *complete* once every shard it touched has applied its
//! committed part here; it is *visible* once every revision at or below it
//! is complete or void. A new cluster leader voids the revisions that were
//! never complete everywhere with a marker `(id, cut, through)` written into
//! every shard's log after everything older: revisions in `cut+1..=through`
//! are void. A shard that applies the marker rolls its store back to `cut`;
//! until every shard has applied it, visibility waits at `cut`, because a
//! shard that has not got there yet may still hold void writes. Then the
//! void range counts as done and revisions after `through` may follow.
//!
//! Inputs arrive in each shard's log order; different shards interleave
//! arbitrarily. `tests` check the outcome against a direct definition for
//! random interleavings.

use std::collections::{BTreeMap, BTreeSet};

/// A marker not yet applied by every shard.
#[derive(Debug, Clone)]
struct Pending {
    cut: i64,
    through: i64,
    applied: BTreeSet<u32>,
}

#[derive(Debug)]
pub struct Visibility {
    shards: u32,
    visible: i64,
    /// Revisions above `visible` and the shards yet to apply their part.
    partial: BTreeMap<i64, BTreeSet<u32>>,
    /// Complete revisions above `visible`, waiting for the ones below.
    complete: BTreeSet<i64>,
    /// The newest marker each shard has applied.
    marker_of: Vec<u64>,
    markers: BTreeMap<u64, Pending>,
    /// Highest revision any shard has reported (void or not).
    last_seen: i64,
    /// The newest marker every shard has applied.
    finished: u64,
    /// Per shard: every revision at or below it is in the shard's store
    /// (a snapshot: taken here, or the leader's installed here), reported
    /// or not.
    floor: Vec<i64>,
    /// Per shard: the highest revision it holds (reported or in its
    /// floor). A shard applies its parts in revision order, so it holds
    /// every part of its own below this.
    high: Vec<i64>,
}

impl Visibility {
    pub fn new(shards: u32) -> Visibility {
        Visibility {
            shards,
            visible: 0,
            partial: BTreeMap::new(),
            complete: BTreeSet::new(),
            marker_of: vec![0; shards as usize],
            markers: BTreeMap::new(),
            last_seen: 0,
            finished: 0,
            floor: vec![0; shards as usize],
            high: vec![0; shards as usize],
        }
    }

    pub fn visible(&self) -> i64 {
        self.visible
    }

    /// The highest revision any shard holds or held (void ones included):
    /// a new leader's next revision comes after it.
    pub fn last_seen(&self) -> i64 {
        self.last_seen.max(self.visible)
    }

    /// Whether a marker is still on its way through the shards.
    pub fn marker_pending(&self) -> bool {
        !self.markers.is_empty()
    }

    /// A shard's store starts from a snapshot at `rev`: snapshots hold
    /// only visible state, so everything up to it is visible.
    pub fn snapshot(&mut self, rev: i64) {
        if rev > self.visible {
            self.visible = rev;
            self.partial = self.partial.split_off(&(rev + 1));
            self.complete = self.complete.split_off(&(rev + 1));
            self.advance();
        }
        self.last_seen = self.last_seen.max(rev);
    }

    /// `shard` installed a snapshot the leader sent, holding every revision
    /// up to `rev`: it will not report those, and other shards' parts of
    /// them need not wait for it. (The member's other shards may still lag,
    /// so this is not [`Visibility::snapshot`].)
    pub fn shard_snapshot(&mut self, shard: u32, rev: i64) {
        let Some(f) = self.floor.get_mut(shard as usize) else {
            return;
        };
        *f = (*f).max(rev);
        self.high[shard as usize] = self.high[shard as usize].max(rev);
        self.last_seen = self.last_seen.max(rev);
        let mut done = Vec::new();
        for (r, left) in self.partial.range_mut(..=rev) {
            left.remove(&shard);
            if left.is_empty() {
                done.push(*r);
            }
        }
        for r in done {
            self.partial.remove(&r);
            self.complete.insert(r);
        }
        self.advance();
    }

    /// The revision every shard must be known to hold its parts up to
    /// before snapshot-held revisions count (the highest snapshot here).
    pub fn floor_max(&self) -> i64 {
        self.floor.iter().max().copied().unwrap_or(0)
    }

    /// Whether `shard` is yet to confirm it holds its parts up to
    /// [`Visibility::floor_max`].
    pub fn behind_floor(&self, shard: u32) -> bool {
        self.high
            .get(shard as usize)
            .is_some_and(|h| *h < self.floor_max())
    }

    /// Whether some snapshot holds revisions not yet visible: until then a
    /// new leader's cut would be too low.
    pub fn floors_pending(&self) -> bool {
        self.floor_max() > self.visible
    }

    /// `shard` holds every part of its own up to `rev` (it applied all its
    /// group committed when `rev` was complete in the cluster).
    pub fn raise_high(&mut self, shard: u32, rev: i64) {
        if let Some(h) = self.high.get_mut(shard as usize) {
            *h = (*h).max(rev);
        }
        self.advance();
    }

    /// `shard` starts from a snapshot that folded in every marker up to
    /// `id`: those count as applied by it.
    pub fn marker_folded(&mut self, shard: u32, id: u64, cut: i64, through: i64) {
        // The snapshot's shard applied it: as if applied here now, void
        // range and all (a shard that has not reached it yet may still hold
        // what it voids).
        self.marker(shard, id, cut, through);
    }

    /// `shard` applied its part of revision `rev`, which touched
    /// `participants`. Returns the new visible revision.
    pub fn written(&mut self, shard: u32, rev: i64, participants: &BTreeSet<u32>) -> i64 {
        self.last_seen = self.last_seen.max(rev);
        if let Some(h) = self.high.get_mut(shard as usize) {
            *h = (*h).max(rev);
        }
        if rev <= self.visible || self.voided_for(shard, rev) {
            // Covered by a snapshot of another shard, or before a marker
            // this shard has yet to reach.
            return self.visible;
        }
        let floor = &self.floor;
        let left = self.partial.entry(rev).or_insert_with(|| {
            participants
                .iter()
                .copied()
                .filter(|p| floor.get(*p as usize).is_none_or(|f| *f < rev))
                .collect()
        });
        left.remove(&shard);
        if left.is_empty() {
            self.partial.remove(&rev);
            self.complete.insert(rev);
            self.advance();
        }
        self.visible
    }

    /// `shard` applied marker `id` voiding `cut+1..=through`. Returns the
    /// new visible revision.
    pub fn marker(&mut self, shard: u32, id: u64, cut: i64, through: i64) -> i64 {
        self.last_seen = self.last_seen.max(through);
        let Some(slot) = self.marker_of.get_mut(shard as usize) else {
            return self.visible;
        };
        if id <= *slot {
            return self.visible;
        }
        *slot = id;
        // Markers are in log order in every shard, so a shard at marker
        // `id` is past every older one: one its log lost (a leader that
        // died during its start got it committed in some groups only)
        // counts as applied, or it would hold visibility back for ever.
        for (mid, m) in self.markers.iter_mut() {
            if *mid < id {
                m.applied.insert(shard);
            }
        }
        if id > self.newest_finished() {
            let folded: BTreeSet<u32> = (0..self.shards)
                .filter(|s| self.marker_of[*s as usize] >= id)
                .collect();
            let m = self.markers.entry(id).or_insert_with(|| Pending {
                cut,
                through,
                applied: BTreeSet::new(),
            });
            // Shards already past it (their snapshot folded it in) count.
            m.applied.extend(folded);
            m.applied.insert(shard);
            // Whatever some shard reported in the void range is void.
            let (lo, hi) = (cut + 1, through);
            if lo <= hi {
                let mid = self.partial.split_off(&lo);
                let mut high = mid;
                let keep = high.split_off(&(hi + 1));
                self.partial.extend(keep);
                drop(high);
                let mid = self.complete.split_off(&lo);
                let mut high = mid;
                let keep = high.split_off(&(hi + 1));
                self.complete.extend(keep);
            }
        }
        self.finish_markers();
        self.visible
    }

    /// Markers every shard has applied: their void range counts as done.
    fn finish_markers(&mut self) {
        while let Some((&id, m)) = self.markers.iter().next() {
            if m.applied.len() < self.shards as usize {
                return;
            }
            let m = m.clone();
            self.markers.remove(&id);
            self.finished = self.finished.max(id);
            // Every shard is past the marker, so everything at or below
            // the cut is applied everywhere: visible is the cut.
            // A newer marker still on its way may void part of this one's
            // range again, and the shards that have not reached it may hold
            // writes there: stop at its cut, it finishes the rest.
            let limit = self
                .markers
                .values()
                .map(|n| n.cut)
                .min()
                .unwrap_or(i64::MAX);
            let done = m.through.min(limit);
            if self.visible >= m.cut {
                if done > self.visible {
                    self.visible = done;
                    self.partial = self.partial.split_off(&(done + 1));
                    self.complete = self.complete.split_off(&(done + 1));
                }
            } else {
                // Revisions at or below the cut are not all known complete
                // here yet (a snapshot floor not confirmed): only the void
                // range counts as done; the rest comes as it is reported.
                for r in (m.cut + 1)..=done {
                    self.partial.remove(&r);
                    self.complete.insert(r);
                }
            }
            self.advance();
        }
    }

    fn newest_finished(&self) -> u64 {
        self.finished
    }

    /// Whether `rev` from `shard` lies in the void range of a marker that
    /// shard has not applied yet.
    fn voided_for(&self, shard: u32, rev: i64) -> bool {
        let own = self.marker_of.get(shard as usize).copied().unwrap_or(0);
        self.markers
            .range(own + 1..)
            .any(|(_, m)| rev > m.cut && rev <= m.through)
    }

    fn advance(&mut self) {
        // A shard may still hold void writes above the oldest pending cut.
        let gate = self
            .markers
            .values()
            .map(|m| m.cut)
            .min()
            .unwrap_or(i64::MAX);
        // Every revision up to a snapshot's was complete in the cluster
        // when it was taken; here it is complete once every shard holds
        // something at or past it (each holds all its parts below what it
        // holds). Revisions only a snapshot holds are never reported, so
        // this is the only way past them.
        let covered = self
            .floor
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .min(self.high.iter().min().copied().unwrap_or(0))
            .min(gate);
        if covered > self.visible {
            self.visible = covered;
            self.partial = self.partial.split_off(&(covered + 1));
            self.complete = self.complete.split_off(&(covered + 1));
        }
        while self.visible < gate && self.complete.remove(&(self.visible + 1)) {
            self.visible += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(s: &[u32]) -> BTreeSet<u32> {
        s.iter().copied().collect()
    }

    #[test]
    fn a_revision_is_visible_once_every_part_and_every_earlier_one_is_in() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        assert_eq!(v.written(0, 3, &set(&[0])), 1, "2 is missing");
        assert_eq!(v.written(0, 2, &set(&[0, 1])), 1, "2 lacks shard 1");
        assert_eq!(v.written(1, 2, &set(&[0, 1])), 3);
    }

    #[test]
    fn a_marker_some_shard_never_got_does_not_hold_visibility_back() {
        // A leader died during its start: its marker 1 committed in group 0
        // only. The next leader's marker 2 reaches both groups.
        let mut v = Visibility::new(2);
        v.snapshot(1);
        v.written(0, 2, &set(&[0, 1]));
        v.written(1, 2, &set(&[0, 1]));
        assert_eq!(v.marker(0, 1, 2, 3), 2);
        assert_eq!(v.marker(1, 2, 2, 4), 2);
        assert_eq!(v.marker(0, 2, 2, 4), 4);
        assert!(!v.marker_pending());
        assert_eq!(v.written(0, 5, &set(&[0])), 5);
    }

    #[test]
    fn a_shard_that_installed_a_snapshot_does_not_hold_its_revisions_back() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        // Shard 1 lagged and gets the leader's snapshot holding 2..=3.
        v.written(0, 2, &set(&[0, 1]));
        assert_eq!(v.visible(), 1);
        v.shard_snapshot(1, 3);
        assert_eq!(v.visible(), 2, "3 is not yet in shard 0");
        assert_eq!(v.written(0, 3, &set(&[0, 1])), 3);
        assert_eq!(v.written(1, 4, &set(&[1])), 4);
    }

    #[test]
    fn revisions_only_a_snapshot_holds_become_visible_once_every_shard_is_past_them() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        // Shard 0 installs a snapshot at 5 whose revisions 2..=5 touched
        // shard 0 only, except 4 (shards 0 and 1).
        v.shard_snapshot(0, 5);
        assert!(v.floors_pending() && v.behind_floor(1) && !v.behind_floor(0));
        assert_eq!(v.visible(), 1, "shard 1 may still lack 4");
        v.written(1, 4, &set(&[0, 1]));
        assert_eq!(v.visible(), 4, "shard 1 holds 4, not yet anything past 5");
        v.written(1, 6, &set(&[1]));
        assert_eq!(v.visible(), 6);
        assert!(!v.floors_pending());
    }

    #[test]
    fn an_idle_shard_confirms_it_is_caught_up() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        // Shard 1 has nothing of its own up to 5: only its catch-up (a
        // ReadIndex applied) tells.
        v.shard_snapshot(0, 5);
        assert_eq!(v.visible(), 1);
        v.raise_high(1, 5);
        assert_eq!(v.visible(), 5);
        assert_eq!(v.written(0, 6, &set(&[0])), 6);
    }

    #[test]
    fn a_restart_counts_snapshots_as_floors_not_as_visible_everywhere() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        // Shard 0's snapshot is at 9; shard 1's log replays only to 7.
        v.shard_snapshot(0, 9);
        v.shard_snapshot(1, 3);
        assert_eq!(v.visible(), 3);
        v.written(1, 7, &set(&[0, 1]));
        assert_eq!(v.visible(), 7, "8 and 9 may have parts shard 1 lacks");
    }

    #[test]
    fn a_folded_marker_still_voids_what_another_shard_holds() {
        // Shard 1 applied its parts of 3..=4 of an old leader, whose parts
        // in shard 0 were lost; the new leader's marker (cut 2, through 4)
        // is folded into the snapshot shard 0 installs at 9; shard 1 has
        // not reached the marker yet.
        let mut v = Visibility::new(2);
        v.snapshot(1);
        v.written(0, 2, &set(&[0, 1]));
        v.written(1, 2, &set(&[0, 1]));
        v.written(1, 3, &set(&[0, 1]));
        v.written(1, 4, &set(&[0, 1]));
        v.marker_folded(0, 1, 2, 4);
        v.shard_snapshot(0, 9);
        assert_eq!(
            v.visible(),
            2,
            "3 and 4 are void until shard 1 rolls them back"
        );
        v.marker(1, 1, 2, 4);
        v.raise_high(1, 9);
        assert_eq!(v.visible(), 9);
    }

    #[test]
    fn a_marker_a_snapshot_folded_in_counts_as_applied() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        v.marker_folded(0, 7, 2, 2);
        v.written(1, 2, &set(&[1]));
        assert_eq!(v.marker(1, 7, 2, 2), 2);
        assert!(!v.marker_pending());
        assert_eq!(v.written(1, 3, &set(&[1])), 3);
    }

    #[test]
    fn a_marker_voids_the_partial_range_and_gates_until_every_shard_has_it() {
        let mut v = Visibility::new(2);
        v.snapshot(1);
        v.written(0, 2, &set(&[0]));
        // 3 reached shard 0 only; 4 is complete but after the hole.
        v.written(0, 3, &set(&[0, 1]));
        v.written(0, 4, &set(&[0]));
        assert_eq!(v.visible(), 2);
        // New leader: cut 2, void 3..=4.
        assert_eq!(v.marker(0, 1, 2, 4), 2);
        // A new write after the marker on shard 0 waits for shard 1.
        assert_eq!(v.written(0, 5, &set(&[0])), 2);
        // Shard 1 still applies its old entry of 3 before its marker: void.
        assert_eq!(v.written(1, 3, &set(&[0, 1])), 2);
        assert_eq!(v.marker(1, 1, 2, 4), 5);
        assert_eq!(v.last_seen(), 5);
    }

    /// One member's history: per shard, its log (writes and markers) in
    /// order. Built from a random global sequence of revisions, some of
    /// which lose their part in some shard, then a marker at the cut.
    #[derive(Debug, Clone)]
    enum Item {
        Write(i64, BTreeSet<u32>),
        Marker(u64, i64, i64),
    }

    fn history() -> impl Strategy<Value = (u32, Vec<Vec<Item>>, i64)> {
        (
            2u32..4,
            proptest::collection::vec((any::<u8>(), any::<u8>()), 1..30),
            0usize..3,
        )
            .prop_map(|(n, revs, rounds)| {
                let mut logs: Vec<Vec<Item>> = vec![Vec::new(); n as usize];
                let mut rev = 1i64;
                let mut marker_id = 0u64;
                let mut expect = 1i64;
                let chunks: Vec<_> = revs.chunks(revs.len() / (rounds + 1) + 1).collect();
                for chunk in chunks {
                    // A leader's term: revisions in order, some partial.
                    let mut cut = expect;
                    let mut hole = false;
                    for (mask, lose) in chunk {
                        rev += 1;
                        let parts: BTreeSet<u32> =
                            (0..n).filter(|s| mask & (1 << s) != 0).collect();
                        let parts = if parts.is_empty() { set(&[0]) } else { parts };
                        let lost = (*lose as u32)
                            .is_multiple_of(5)
                            .then(|| *parts.iter().next().unwrap());
                        for s in &parts {
                            if Some(*s) != lost {
                                logs[*s as usize].push(Item::Write(rev, parts.clone()));
                            }
                        }
                        if lost.is_some() {
                            hole = true;
                        }
                        if !hole {
                            cut = rev;
                        }
                    }
                    // A leader that died during its start: its marker
                    // reached some groups only, and it never served.
                    if let Some((mask, _)) = chunk.first().filter(|(m, _)| m % 3 == 0) {
                        marker_id += 1;
                        for (s, l) in logs.iter_mut().enumerate() {
                            if mask & (1 << s) != 0 {
                                l.push(Item::Marker(marker_id, cut, rev));
                            }
                        }
                    }
                    // The next leader voids what is above the cut.
                    marker_id += 1;
                    for l in logs.iter_mut() {
                        l.push(Item::Marker(marker_id, cut, rev));
                    }
                    expect = rev;
                }
                (n, logs, expect)
            })
    }

    proptest! {
        /// Whatever the interleaving of the shards' logs, visibility ends
        /// at the last marker's range end, never goes back, and never
        /// passes a revision that is not complete (or void).
        #[test]
        fn visibility_never_passes_an_incomplete_revision(
            (n, logs, expect) in history(),
            picks in proptest::collection::vec(any::<u32>(), 0..400),
        ) {
            let mut v = Visibility::new(n);
            v.snapshot(1);
            let mut pos = vec![0usize; n as usize];
            let mut picks = picks.into_iter();
            let mut last = v.visible();
            // Revisions applied per shard, void ones removed at markers.
            let mut applied: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); n as usize];
            let mut participants: BTreeMap<i64, BTreeSet<u32>> = BTreeMap::new();
            loop {
                let open: Vec<u32> = (0..n).filter(|s| pos[*s as usize] < logs[*s as usize].len()).collect();
                if open.is_empty() { break; }
                let s = open[(picks.next().unwrap_or(0) as usize) % open.len()];
                let item = logs[s as usize][pos[s as usize]].clone();
                pos[s as usize] += 1;
                let now = match item {
                    Item::Write(r, p) => {
                        applied[s as usize].insert(r);
                        participants.insert(r, p.clone());
                        v.written(s, r, &p)
                    }
                    Item::Marker(id, cut, through) => {
                        applied[s as usize].retain(|r| *r <= cut);
                        v.marker(s, id, cut, through)
                    }
                };
                prop_assert!(now >= last, "visible went back from {} to {}", last, now);
                last = now;
                // Every revision <= visible that some shard still holds
                // is held by every shard it touched.
                for (r, p) in participants.range(..=now) {
                    let held: Vec<bool> = p.iter().map(|s| applied[*s as usize].contains(r)).collect();
                    prop_assert!(held.iter().all(|h| *h) || held.iter().all(|h| !*h),
                        "revision {} visible but only partly applied", r);
                }
            }
            prop_assert_eq!(v.visible(), expect);
        }
    }
}
