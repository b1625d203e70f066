//! The revision sequencer: hands out one global revision order (on the
//! serving leader) and publishes which revisions are *visible* on this
//! member (every revision <= it complete in all the shards it touched, or
//! void). Visibility is decided by the [`Visibility`] state machine, fed by
//! every shard's apply path; the sequencer shares its result with the cores
//! through atomics and wakes the waiters.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

use event_listener::Event;

use crate::visibility::Visibility;

/// Revisions that may be assigned but not yet visible at once; writers
/// wait (back-pressure) beyond it.
pub const REVISIONS_INFLIGHT_MAX: i64 = 1 << 16;

/// A write's revision was voided by a new leader's marker: the write was
/// never acknowledged and is not in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voided;

pub struct Sequencer {
    /// Last revision handed out.
    last_assigned: AtomicI64,
    visible: AtomicI64,
    /// The compaction in effect here: ranges below it are refused.
    compact: AtomicI64,
    /// The highest compaction this leader accepted (it orders concurrent
    /// calls); in effect only once its records say so.
    requested: AtomicI64,
    /// How many markers have voided revisions on this member; a waiter
    /// that saw an older count checks whether its revision was among them.
    voids: AtomicU64,
    state: Mutex<State>,
    changed: Event,
}

struct State {
    vis: Visibility,
    /// Compactions whose record a shard applied that are not yet in
    /// effect here: (rev, at, whether shard 0 applied its record).
    pending: Vec<(i64, i64, bool)>,
    /// (void count after it, cut, through) of every marker seen, newest last.
    voided: Vec<(u64, i64, i64)>,
}

/// Bound on remembered void ranges: waiters older than this many leader
/// changes are failed as voided rather than checked (their outcome is
/// unknown to them either way).
const VOIDS_REMEMBERED_MAX: usize = 64;

impl Sequencer {
    pub fn new(shards: u32) -> Sequencer {
        Sequencer {
            last_assigned: AtomicI64::new(0),
            visible: AtomicI64::new(0),
            compact: AtomicI64::new(0),
            requested: AtomicI64::new(0),
            voids: AtomicU64::new(0),
            state: Mutex::new(State {
                vis: Visibility::new(shards),
                pending: Vec::new(),
                voided: Vec::new(),
            }),
            changed: Event::new(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock would be a bug in `Visibility`;
        // its state is still the last consistent one.
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let out = f(&mut st);
        let v = st.vis.visible();
        // In effect before the revision that puts it in effect is
        // published: a read that sees that revision sees the compaction.
        let mut moved = false;
        st.pending.retain(|&(rev, at, anchored)| {
            let due = at <= 0 || v > at || (v == at && anchored);
            if due && self.compact.fetch_max(rev, SeqCst) < rev {
                moved = true;
            }
            !due
        });
        drop(st);
        if moved {
            self.changed.notify(usize::MAX);
        }
        if self.visible.fetch_max(v, SeqCst) < v {
            self.changed.notify(usize::MAX);
        }
        out
    }

    pub fn visible(&self) -> i64 {
        self.visible.load(SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact.load(SeqCst)
    }

    /// Accepts a compaction at `rev` on the leader; false if it is not
    /// above every compaction in effect or accepted before.
    pub fn try_compact(&self, rev: i64) -> bool {
        let cur = self.requested.load(SeqCst);
        rev > cur.max(self.compact.load(SeqCst))
            && self
                .requested
                .compare_exchange(cur, rev, SeqCst, SeqCst)
                .is_ok()
    }

    /// `shard` applied a compaction record (`Record::Compact`): in effect
    /// here once the visible revision passes `at`, or reaches it once
    /// shard 0 applied its record (at once for `at` 0). A linearizable
    /// read settles on shard 0's log and on a visible revision at least
    /// the leader's, so a read made after any member put it in effect
    /// finds it in effect too; and every write above `at` follows the
    /// record in its shard's log, so no member shows a revision above
    /// `at` without it.
    pub fn compaction_applied(&self, shard: u32, rev: i64, at: i64) {
        self.with(|st| {
            if rev <= self.compact.load(SeqCst) {
                return;
            }
            match st.pending.iter_mut().find(|p| p.0 == rev) {
                Some(p) => p.2 |= shard == 0,
                None => st.pending.push((rev, at, shard == 0)),
            }
        });
    }

    /// Resolves once a compaction at `rev` (or later) is in effect here.
    pub async fn wait_compacted(&self, rev: i64) {
        while self.compact_revision() < rev {
            let l = self.changed.listen();
            if self.compact_revision() >= rev {
                return;
            }
            l.await;
        }
    }

    /// A compaction that is already decided (recovered, or applied from the
    /// log on a follower).
    pub fn compacted(&self, rev: i64) {
        self.compact.fetch_max(rev, SeqCst);
    }

    /// A shard's store starts from a snapshot at `rev`.
    pub fn snapshot(&self, rev: i64) {
        self.with(|st| st.vis.snapshot(rev));
    }

    /// `shard` installed the leader's snapshot holding revisions up to `rev`.
    pub fn shard_snapshot(&self, shard: u32, rev: i64) {
        self.with(|st| st.vis.shard_snapshot(shard, rev));
    }

    /// See [`Visibility::floor_max`], [`Visibility::behind_floor`],
    /// [`Visibility::floors_pending`], [`Visibility::raise_high`].
    pub fn floor_max(&self) -> i64 {
        self.with(|st| st.vis.floor_max())
    }
    pub fn behind_floor(&self, shard: u32) -> bool {
        self.with(|st| st.vis.behind_floor(shard))
    }
    pub fn floors_pending(&self) -> bool {
        self.with(|st| st.vis.floors_pending())
    }
    pub fn raise_high(&self, shard: u32, rev: i64) {
        self.with(|st| st.vis.raise_high(shard, rev));
    }

    /// `shard` applied its part of `rev` (which touched `participants`).
    pub fn written(&self, shard: u32, rev: i64, participants: &BTreeSet<u32>) {
        self.with(|st| st.vis.written(shard, rev, participants));
    }

    /// `shard` applied marker `id`, voiding `cut+1..=through`.
    pub fn marker(&self, shard: u32, id: u64, cut: i64, through: i64) {
        self.with(|st| {
            if cut < through && cut < st.vis.visible() {
                // A start takes its cut once its own proposals settled, so
                // nothing visible anywhere lies above it: this one voids
                // what may have been acknowledged.
                log::error!(
                    "shard {shard}: marker {id} voids revisions {}..={through}, but {} is \
                     visible here already",
                    cut + 1,
                    st.vis.visible()
                );
            }
            if cut < through && !st.voided.iter().any(|(_, c, t)| (*c, *t) == (cut, through)) {
                let n = self.voids.fetch_add(1, SeqCst) + 1;
                st.voided.push((n, cut, through));
                if st.voided.len() > VOIDS_REMEMBERED_MAX {
                    st.voided.remove(0);
                }
            }
            st.vis.marker(shard, id, cut, through)
        });
        // Waiters must look at the new void range even if visible did not move.
        self.changed.notify(usize::MAX);
    }

    /// `shard`'s snapshot folded in every marker up to `id`.
    pub fn marker_folded(&self, shard: u32, id: u64, cut: i64, through: i64) {
        self.with(|st| st.vis.marker_folded(shard, id, cut, through));
    }

    /// The highest revision this member has seen (void ones included).
    pub fn last_seen(&self) -> i64 {
        self.with(|st| st.vis.last_seen())
    }

    /// Whether a marker is still on its way through the shards.
    pub fn marker_pending(&self) -> bool {
        self.with(|st| st.vis.marker_pending())
    }

    /// This member starts assigning: the next revision comes after `last`.
    pub fn start_assigning(&self, last: i64) {
        self.last_assigned.store(last, SeqCst);
    }

    /// The last revision handed out.
    pub fn last_assigned(&self) -> i64 {
        self.last_assigned.load(SeqCst)
    }

    /// The current void count, to hand to [`Sequencer::wait_committed`].
    pub fn voids(&self) -> u64 {
        self.voids.load(SeqCst)
    }

    /// The next revision. Callers hold the locks of every shard the write
    /// touches, so per shard revisions are taken in log order.
    pub async fn assign(&self) -> i64 {
        loop {
            let last = self.last_assigned.load(SeqCst);
            if last + 1 - self.visible() >= REVISIONS_INFLIGHT_MAX {
                let l = self.changed.listen();
                if last + 1 - self.visible() >= REVISIONS_INFLIGHT_MAX {
                    l.await;
                }
                continue;
            }
            if self
                .last_assigned
                .compare_exchange(last, last + 1, SeqCst, SeqCst)
                .is_ok()
            {
                return last + 1;
            }
        }
    }

    /// Resolves once `rev` is visible.
    pub async fn wait_visible(&self, rev: i64) {
        while self.visible() < rev {
            let l = self.changed.listen();
            if self.visible() >= rev {
                return;
            }
            l.await;
        }
    }

    /// Resolves once `rev` is visible and part of the history, or fails if
    /// a marker seen after `voids` (the count when the write began) voided
    /// it. A voided revision also becomes "visible" (as void), so only this
    /// tells a waiter its write was lost.
    pub async fn wait_committed(&self, rev: i64, voids: u64) -> Result<(), Voided> {
        loop {
            let l = self.changed.listen();
            // Visible first: a marker counts its void before it moves
            // visible, so a waiter that sees the new visible sees the void.
            let visible = self.visible();
            if self.voids() > voids {
                let lost = self.with(|st| {
                    let oldest = st.voided.first().map_or(u64::MAX, |(n, _, _)| *n);
                    oldest > voids + 1
                        || st
                            .voided
                            .iter()
                            .any(|(n, c, t)| *n > voids && rev > *c && rev <= *t)
                });
                if lost {
                    return Err(Voided);
                }
            }
            if visible >= rev {
                return Ok(());
            }
            l.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: u32) -> BTreeSet<u32> {
        [s].into_iter().collect()
    }

    #[test]
    fn assign_continues_after_the_start_and_visibility_follows_writes() {
        let s = Sequencer::new(1);
        s.snapshot(1);
        s.start_assigning(41);
        assert_eq!(futures_lite::future::block_on(s.assign()), 42);
        assert_eq!(s.visible(), 1);
        s.compacted(7);
        assert!(!s.try_compact(7));
        assert!(s.try_compact(8));
    }

    #[test]
    fn a_compaction_takes_effect_past_its_revision_or_at_it_with_shard_0() {
        // Shard 1 applied the record (after its writes up to 3, the
        // highest handed out then); shard 0 has not yet.
        let s = Sequencer::new(2);
        s.snapshot(1);
        s.written(0, 2, &one(0));
        s.compaction_applied(1, 2, 3);
        assert_eq!(s.compact_revision(), 0, "not before the member reaches 3");
        s.written(1, 3, &one(1));
        assert_eq!(s.visible(), 3);
        assert_eq!(s.compact_revision(), 0, "at 3 only once shard 0 has it");
        s.compaction_applied(0, 2, 3);
        assert_eq!(s.compact_revision(), 2);
        // Past `at`, whichever shard applied it.
        let s = Sequencer::new(2);
        s.snapshot(1);
        s.compaction_applied(1, 1, 1);
        assert_eq!(s.compact_revision(), 0);
        s.written(1, 2, &one(1));
        assert_eq!((s.visible(), s.compact_revision()), (2, 1));
        // A leader accepts only compactions above what it accepted.
        assert!(s.try_compact(2));
        assert!(!s.try_compact(2));
        assert_eq!(s.compact_revision(), 1, "accepting is not effect");
    }

    #[test]
    fn a_voided_write_is_told_so_and_a_kept_one_is_not() {
        let s = Sequencer::new(2);
        s.snapshot(1);
        let before = s.voids();
        s.written(0, 2, &one(0));
        // 3 reached shard 0 only; the new leader cuts at 2, voiding 3.
        s.written(0, 3, &[0, 1].into_iter().collect());
        s.marker(0, 1, 2, 3);
        s.marker(1, 1, 2, 3);
        assert_eq!(s.visible(), 3);
        let fut = s.wait_committed(3, before);
        assert_eq!(futures_lite::future::block_on(fut), Err(Voided));
        assert_eq!(
            futures_lite::future::block_on(s.wait_committed(2, before)),
            Ok(())
        );
    }
}
