//! The lease table of one lease-owning core: granted leases, their
//! deadlines in a min-heap, and the rate-limited hand-out of expired
//! leases. It holds no keys (mvcc tracks key -> lease) and does no I/O:
//! the caller persists grants/revokes and revokes the attached keys.
//!
//! Semantics follow etcd 3.4's lessor (lease/lessor.go): a TTL above
//! [`MAX_LEASE_TTL`] is refused, a TTL below the minimum is raised to it,
//! an expired lease is handed out again after [`EXPIRED_RETRY`] if its
//! revoke did not complete, and leases restored from the log have no
//! deadline until [`LeaseTable::promote`] gives each its full TTL again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::Error;

/// etcd's `MaxLeaseTTL`, seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's `leaseRevokeRate`: expired leases revoked per second, at most.
pub const LEASE_REVOKE_RATE: usize = 1000;
/// How often the expiry timer runs; each run hands out at most
/// `LEASE_REVOKE_RATE * REVOKE_TICK` leases (etcd: 500 every 500ms).
pub const REVOKE_TICK: Duration = Duration::from_millis(500);
/// Leases handed out per timer run.
pub const REVOKE_BATCH: usize = LEASE_REVOKE_RATE / 2;
/// etcd's `defaultExpiredleaseRetryInterval`.
pub const EXPIRED_RETRY: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The granted TTL in seconds (after raising to the minimum).
    pub ttl: i64,
    /// When the lease expires; `None` until promoted after a restart.
    pub expiry: Option<Instant>,
    /// The heap entry that is current for this lease.
    due: Option<Instant>,
}

impl Lease {
    /// Whole seconds left, as etcd's `int64(Remaining().Seconds())`;
    /// a lease without a deadline reports its full TTL.
    pub fn remaining_secs(&self, now: Instant) -> i64 {
        match self.expiry {
            None => self.ttl,
            Some(e) => e.saturating_duration_since(now).as_secs() as i64,
        }
    }
}

pub struct LeaseTable {
    leases: HashMap<i64, Lease>,
    /// (deadline, id); an entry is stale unless it equals the lease's `due`.
    heap: BinaryHeap<Reverse<(Instant, i64)>>,
    min_ttl: i64,
}

impl LeaseTable {
    /// `min_ttl` in seconds: etcd's ceil(3/2 * election timeout).
    pub fn new(min_ttl: i64) -> Self {
        LeaseTable {
            leases: HashMap::new(),
            heap: BinaryHeap::new(),
            min_ttl,
        }
    }

    /// etcd's minimum TTL for an election timeout in milliseconds.
    pub fn min_ttl_for(election_timeout_ms: u64) -> i64 {
        (3 * election_timeout_ms).div_ceil(2 * 1000) as i64
    }

    /// Checks a grant without applying it: the TTL the lease will have.
    pub fn check_grant(&self, id: i64, ttl: i64) -> Result<i64, Error> {
        if id == 0 {
            return Err(Error::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        Ok(ttl.max(self.min_ttl))
    }

    /// Grants a lease expiring `ttl` seconds after `now`; returns the TTL.
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) -> Result<i64, Error> {
        let ttl = self.check_grant(id, ttl)?;
        self.restore(id, ttl);
        self.refresh(id, now);
        Ok(ttl)
    }

    /// Restores a lease from the log: no deadline until `promote`.
    pub fn restore(&mut self, id: i64, ttl: i64) {
        let ttl = ttl.max(self.min_ttl);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                expiry: None,
                due: None,
            },
        );
    }

    /// etcd's Promote: every lease gets its full TTL from `now`, so a
    /// restart never expires a lease early.
    pub fn promote(&mut self, now: Instant) {
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        self.heap.clear();
        for id in ids {
            self.refresh(id, now);
        }
    }

    fn refresh(&mut self, id: i64, now: Instant) {
        if let Some(l) = self.leases.get_mut(&id) {
            // A TTL restored from a log or snapshot was never checked
            // against the maximum; past it, `now + ttl` would overflow.
            let at = now + Duration::from_secs(l.ttl.clamp(0, MAX_LEASE_TTL) as u64);
            l.expiry = Some(at);
            l.due = Some(at);
            self.heap.push(Reverse((at, id)));
        }
    }

    /// KeepAlive: the lease's deadline moves to `now + ttl`; returns the TTL.
    /// A lease past its deadline is being revoked: as in etcd, renewing it
    /// answers not found rather than bringing it back.
    pub fn renew(&mut self, id: i64, now: Instant) -> Result<i64, Error> {
        let l = self.leases.get(&id).ok_or(Error::LeaseNotFound)?;
        if l.expiry.is_some_and(|at| at <= now) {
            return Err(Error::LeaseNotFound);
        }
        let ttl = l.ttl;
        self.refresh(id, now);
        Ok(ttl)
    }

    /// Removes the lease (its keys are the caller's to delete).
    pub fn revoke(&mut self, id: i64) -> Result<Lease, Error> {
        self.leases.remove(&id).ok_or(Error::LeaseNotFound)
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Every lease id, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.leases.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The earliest live deadline, for the timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.leases.get(&id).and_then(|l| l.due) == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Up to `limit` leases past their deadline, earliest first. Each is
    /// handed out again after `EXPIRED_RETRY` unless revoked by then.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(at) = self.next_deadline() else {
                break;
            };
            if at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.heap.pop() else {
                break;
            };
            let retry = now + EXPIRED_RETRY;
            if let Some(l) = self.leases.get_mut(&id) {
                l.due = Some(retry);
            }
            self.heap.push(Reverse((retry, id)));
            out.push(id);
        }
        out
    }
}

/// Server-chosen lease ids the way etcd's idutil makes request ids: the
/// member id's low 16 bits, then the low 40 bits of the start time in
/// milliseconds and an 8-bit counter (the 48-bit suffix counts up), kept
/// positive as etcd's LeaseGrant does (`& (1<<63 - 1)`).
pub struct IdGen {
    prefix: u64,
    suffix: u64,
}

const TIME_BITS: u32 = 40;
const COUNT_BITS: u32 = 8;
const SUFFIX_BITS: u32 = TIME_BITS + COUNT_BITS;

impl IdGen {
    pub fn new(member_id: u64, unix_ms: u64) -> Self {
        IdGen {
            prefix: member_id << SUFFIX_BITS,
            suffix: (unix_ms & ((1 << TIME_BITS) - 1)) << COUNT_BITS,
        }
    }

    /// The next positive, non-zero id.
    pub fn next_id(&mut self) -> i64 {
        loop {
            self.suffix = (self.suffix + 1) & ((1 << SUFFIX_BITS) - 1);
            let id = ((self.prefix | self.suffix) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn grant_rules_follow_etcd() {
        let now = Instant::now();
        let mut t = LeaseTable::new(LeaseTable::min_ttl_for(1000));
        assert_eq!(LeaseTable::min_ttl_for(1000), 2);
        assert_eq!(LeaseTable::min_ttl_for(3000), 5);
        assert_eq!(t.grant(1, 1, now), Ok(2), "raised to the minimum");
        assert_eq!(t.grant(1, 60, now), Err(Error::LeaseExists));
        assert_eq!(
            t.grant(2, MAX_LEASE_TTL + 1, now),
            Err(Error::LeaseTtlTooLarge)
        );
        assert_eq!(t.grant(2, MAX_LEASE_TTL, now), Ok(MAX_LEASE_TTL));
        assert_eq!(t.grant(0, 60, now), Err(Error::LeaseNotFound));
        assert_eq!(t.ids(), vec![1, 2]);
        assert_eq!(t.revoke(1).map(|l| l.ttl), Ok(2));
        assert_eq!(t.revoke(1), Err(Error::LeaseNotFound));
        assert_eq!(t.renew(1, now), Err(Error::LeaseNotFound));
    }

    #[test]
    fn restored_ttl_beyond_the_maximum_does_not_overflow() {
        // A lease grant record or snapshot meta from a damaged log or a
        // faulty peer: its TTL was never checked. `now + ttl` panicked.
        let now = Instant::now();
        let mut t = LeaseTable::new(1);
        t.restore(5, i64::MAX);
        t.promote(now);
        assert_eq!(t.get(5).map(|l| l.ttl), Some(i64::MAX));
        assert_eq!(t.renew(5, now), Ok(i64::MAX));
        assert!(t.expired(now, 10).is_empty());
    }

    #[test]
    fn expiry_in_deadline_order_and_renew_moves_it() {
        let now = Instant::now();
        let mut t = LeaseTable::new(1);
        t.grant(30, 30, now).unwrap();
        t.grant(10, 10, now).unwrap();
        t.grant(20, 20, now).unwrap();
        assert_eq!(t.next_deadline(), Some(now + secs(10)));
        assert!(t.expired(now + secs(9), 10).is_empty());
        // Renewing 10 at t=5 moves it past 20.
        assert_eq!(t.renew(10, now + secs(5)), Ok(10));
        assert_eq!(t.get(10).unwrap().remaining_secs(now + secs(5)), 10);
        assert_eq!(t.get(10).unwrap().remaining_secs(now + secs(6)), 9);
        assert_eq!(t.expired(now + secs(16), 10), vec![10]);
        assert_eq!(t.renew(10, now + secs(16)), Err(Error::LeaseNotFound));
        // Not revoked: handed out again after the retry interval, not before.
        assert!(t.expired(now + secs(18), 10).is_empty());
        assert_eq!(t.expired(now + secs(31), 10), vec![10, 20, 30]);
        t.revoke(30).unwrap();
        assert!(t.expired(now + secs(32), 10).is_empty());
        assert_eq!(t.expired(now + secs(40), 10), vec![10, 20]);
    }

    #[test]
    fn revoked_lease_never_expires() {
        let now = Instant::now();
        let mut t = LeaseTable::new(1);
        t.grant(1, 5, now).unwrap();
        t.revoke(1).unwrap();
        assert_eq!(t.next_deadline(), None);
        assert!(t.expired(now + secs(100), 10).is_empty());
    }

    #[test]
    fn expiry_is_rate_limited() {
        let now = Instant::now();
        let mut t = LeaseTable::new(1);
        for id in 1..=1200 {
            t.grant(id, 5, now).unwrap();
        }
        let later = now + secs(6);
        let first = t.expired(later, REVOKE_BATCH);
        assert_eq!(first.len(), REVOKE_BATCH);
        for id in &first {
            t.revoke(*id).unwrap();
        }
        assert_eq!(t.expired(later, REVOKE_BATCH).len(), REVOKE_BATCH);
        assert_eq!(t.expired(later, REVOKE_BATCH).len(), 200);
        assert_eq!(REVOKE_BATCH as u128 * 1000 / REVOKE_TICK.as_millis(), 1000);
    }

    #[test]
    fn restore_then_promote_gives_full_ttl() {
        let now = Instant::now();
        let mut t = LeaseTable::new(1);
        t.restore(7, 60);
        assert_eq!(t.next_deadline(), None, "no deadline before promote");
        assert_eq!(t.get(7).unwrap().remaining_secs(now), 60);
        let start = now + secs(1000);
        t.promote(start);
        assert_eq!(t.next_deadline(), Some(start + secs(60)));
        assert!(t.expired(start + secs(59), 10).is_empty());
        assert_eq!(t.expired(start + secs(60), 10), vec![7]);
    }

    #[test]
    fn ids_are_positive_and_distinct() {
        let mut g = IdGen::new(u64::MAX, 1_700_000_000_000);
        let a = g.next_id();
        let b = g.next_id();
        assert!(a > 0 && b > 0 && a != b);
        // etcd's layout: member id << 48 | (ms & 2^40-1) << 8, then +1.
        let mut g = IdGen::new(0x1234, 5);
        assert_eq!(g.next_id(), (0x1234 << 48) | (5 << 8) | 1);
        assert_eq!(g.next_id(), (0x1234 << 48) | (5 << 8) | 2);
    }
}
