//! The revision sequencer: hands out one global revision order and tracks
//! which revisions are *visible* (every revision <= it is durable in all the
//! shards it touched). Lock-free: three atomics and a ring of completion
//! slots, shared by the cores.

use std::sync::atomic::{AtomicI64, Ordering::SeqCst};

use event_listener::Event;

/// Revisions that may be assigned but not yet visible at once. Bounds the
/// ring; writers wait (back-pressure) when it is full.
pub const REVISIONS_INFLIGHT_MAX: i64 = 1 << 16;

pub struct Sequencer {
    /// Last revision handed out.
    last_assigned: AtomicI64,
    /// Every revision <= this is complete.
    visible: AtomicI64,
    compact: AtomicI64,
    /// slot[r % MAX] == r once r is complete.
    done: Box<[AtomicI64]>,
    changed: Event,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    pub fn new() -> Sequencer {
        Sequencer {
            last_assigned: AtomicI64::new(0),
            visible: AtomicI64::new(0),
            compact: AtomicI64::new(0),
            done: (0..REVISIONS_INFLIGHT_MAX)
                .map(|_| AtomicI64::new(-1))
                .collect(),
            changed: Event::new(),
        }
    }

    /// Start from the state recovered from disk.
    pub fn recover(&self, last: i64, compact: i64) {
        self.last_assigned.fetch_max(last, SeqCst);
        self.visible.fetch_max(last, SeqCst);
        self.compact.fetch_max(compact, SeqCst);
    }

    pub fn visible(&self) -> i64 {
        self.visible.load(SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact.load(SeqCst)
    }

    /// Raise the compaction point; false if `rev` is not above it.
    pub fn try_compact(&self, rev: i64) -> bool {
        let cur = self.compact.load(SeqCst);
        rev > cur
            && self
                .compact
                .compare_exchange(cur, rev, SeqCst, SeqCst)
                .is_ok()
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

    /// Mark `rev` durable everywhere; advances `visible` over every
    /// contiguous completed revision.
    pub fn complete(&self, rev: i64) {
        debug_assert!(rev > self.visible(), "revision {rev} completed twice");
        self.done[(rev % REVISIONS_INFLIGHT_MAX) as usize].store(rev, SeqCst);
        let mut advanced = false;
        loop {
            let v = self.visible.load(SeqCst);
            let next = v + 1;
            if self.done[(next % REVISIONS_INFLIGHT_MAX) as usize].load(SeqCst) != next {
                break;
            }
            if self
                .visible
                .compare_exchange(v, next, SeqCst, SeqCst)
                .is_ok()
            {
                advanced = true;
            }
        }
        if advanced {
            self.changed.notify(usize::MAX);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order revisions complete in, visible is exactly the
        /// longest completed prefix.
        #[test]
        fn visible_is_longest_completed_prefix(order in Just((1..=200i64).collect::<Vec<_>>()).prop_shuffle()) {
            let s = Sequencer::new();
            for _ in 0..200 {
                futures_lite::future::block_on(s.assign());
            }
            let mut done = std::collections::BTreeSet::new();
            for r in order {
                s.complete(r);
                done.insert(r);
                let mut prefix = 0;
                while done.contains(&(prefix + 1)) { prefix += 1; }
                prop_assert_eq!(s.visible(), prefix);
            }
        }
    }

    #[test]
    fn recover_continues_after_last() {
        let s = Sequencer::new();
        s.recover(41, 7);
        assert_eq!(futures_lite::future::block_on(s.assign()), 42);
        assert_eq!(s.visible(), 41);
        assert!(!s.try_compact(7));
        assert!(s.try_compact(8));
    }
}
