//! A shard's replicated state as a plain state machine: its mvcc store and
//! lease table, and the rules by which a leader's own writes ahead of the
//! log, committed records, a step-down and a snapshot install change them.
//! No I/O and no executor: the shard actor (`shard.rs`) feeds it and
//! carries out the [`Effect`]s it returns on the member-wide parts (the
//! sequencer's visibility, leadership), and the simulation drives the very
//! same code.

use std::collections::BTreeSet;

use ferrokv_mvcc::{Event, Store, WriteOp};

use crate::lease::LeaseTable;
use crate::record::Record;

/// The last leader-start marker a shard applied: (id, cut, through).
pub type MarkerMeta = (u64, i64, i64);

/// What the member-wide parts must be told, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// This shard's part of revision `rev` is applied (visibility).
    Written {
        rev: i64,
        participants: BTreeSet<u32>,
    },
    /// The compaction point reached `rev`.
    Compacted { rev: i64 },
    /// A compaction record at `rev` applied here, in effect once the
    /// member's visible revision is past `at` (`Sequencer::compaction_applied`);
    /// the store compacts then ([`ShardState::settle_compaction`]).
    CompactionApplied { rev: i64, at: i64 },
    /// Leader-start marker `id` applied here: `cut+1..=through` is void.
    Marker { id: u64, cut: i64, through: i64 },
    /// A snapshot this shard now holds folded in marker `id`.
    MarkerFolded { id: u64, cut: i64, through: i64 },
    /// The store is a snapshot holding every revision up to `rev`.
    Installed { rev: i64 },
    /// This member cannot keep a state the others share: it stops serving.
    Broken(String),
    /// A revision applied here was abandoned: a hole only a new leader
    /// start's marker voids, so the start runs again.
    Restart(String),
}

/// A lease revoke that a marker or a step-down may still undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoke {
    /// The revision of its deletes.
    pub rev: i64,
    pub id: i64,
    pub ttl_s: i64,
    /// Committed (not only submitted by this member as leader).
    pub committed: bool,
}

pub struct ShardState {
    pub id: u32,
    pub store: Store,
    /// The leases this shard owns (id mod shard count).
    pub leases: LeaseTable,
    /// The highest revision a lease revoke of this shard deleted keys at:
    /// a snapshot waits for it to be visible, since the deletes may all
    /// live in other shards.
    revoke_rev: i64,
    /// The term in which this shard applies writes before they commit (it
    /// leads that term); committed entries of that term are its own and
    /// already applied. None: every committed entry is applied as it comes.
    spec_term: Option<u64>,
    /// Revision of the last write committed and applied in log order: what
    /// a step-down rolls the store back to.
    committed_rev: i64,
    /// Raft index of the last entry the store covers.
    applied_index: u64,
    /// Revokes not yet visible, so a rollback can undo them.
    revoked: Vec<Revoke>,
    /// The last leader-start marker applied (kept in snapshots).
    last_marker: MarkerMeta,
    /// A compaction applied from the log and not yet in effect on this
    /// member: the store keeps what it would remove until it is, since
    /// reads below the revision that puts it in effect still see it.
    pending_compact: Option<i64>,
}

impl ShardState {
    pub fn new(id: u32, store: Store, leases: LeaseTable) -> ShardState {
        ShardState {
            id,
            committed_rev: store.last_revision(),
            store,
            leases,
            revoke_rev: 0,
            spec_term: None,
            applied_index: 0,
            revoked: Vec::new(),
            last_marker: (0, 0, 0),
            pending_compact: None,
        }
    }

    /// Compacts the store for an applied compaction once the member has
    /// it in effect (`in_effect`: the sequencer's compact revision).
    /// Whether none is left pending (a snapshot must not fold the log's
    /// record in before the store holds it).
    pub fn settle_compaction(&mut self, in_effect: i64) -> bool {
        match self.pending_compact {
            Some(rev) if rev <= in_effect => {
                // An older point than the store's is simply done.
                let _ = self.store.compact(rev);
                self.pending_compact = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// The compaction applied here and not yet in effect, if any.
    pub fn pending_compaction(&self) -> Option<i64> {
        self.pending_compact
    }

    /// Raft index of the last entry the store covers.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn last_marker(&self) -> MarkerMeta {
        self.last_marker
    }

    /// The term this shard applies writes ahead of the log in, if any.
    pub fn spec_term(&self) -> Option<u64> {
        self.spec_term
    }

    /// The highest revision this shard holds a part of, revokes included:
    /// what must be visible before its state is exactly committed state.
    pub fn last_held(&self) -> i64 {
        self.store.last_revision().max(self.revoke_rev)
    }

    /// Whether writes of `term` may be applied ahead of the log here (as
    /// far as this state knows: the shell also checks that the log still
    /// leads `term`): not once a step-down left that term.
    pub fn may_write_in(&self, term: u64) -> bool {
        self.spec_term.is_none_or(|t| t == term)
    }

    /// This shard now writes ahead of the log as leader of `term`.
    pub fn take_term(&mut self, term: u64) {
        self.spec_term = Some(term);
    }

    /// Applies one part of a write at `rev` ahead of its commit, as the
    /// leader of `term` (the caller checked [`Self::may_write_in`]).
    pub fn apply(&mut self, rev: i64, first_sub: i64, ops: &[WriteOp], term: u64) -> Vec<Event> {
        self.spec_term = Some(term);
        self.store.apply_at_sub(rev, first_sub, ops)
    }

    /// A write applied here at `rev` in `term` will never be submitted
    /// (its coordinator failed while holding the fence, so nothing above it
    /// was applied since): drop it. If the term is over, the step-down
    /// already did.
    pub fn abandon(&mut self, rev: i64, term: u64) -> Vec<Effect> {
        if self.spec_term != Some(term) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Err(e) = self.store.rollback_above(rev - 1) {
            log::error!("shard {}: cannot drop abandoned write {rev}: {e}", self.id);
        }
        out.push(Effect::Restart(format!(
            "shard {}: a write at revision {rev} was abandoned after it was applied",
            self.id
        )));
        out
    }

    /// The store covers the log up to raft index `index` (its snapshot, or
    /// entries replayed at open, or a conf change that leaves it as is).
    pub fn covers(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    /// The snapshot the store was opened from folded in `marker`.
    pub fn opened_after_marker(&mut self, marker: MarkerMeta) -> Vec<Effect> {
        self.last_marker = marker;
        if marker.0 == 0 {
            return Vec::new();
        }
        vec![Effect::MarkerFolded {
            id: marker.0,
            cut: marker.1,
            through: marker.2,
        }]
    }

    /// A revoke of lease `id` (one of `records`) was submitted by this
    /// member as leader of `term`: the lease leaves the table now, so no
    /// write after it can attach a key to it; it stays undoable until
    /// visible. Its records are this term's own from now on even if it
    /// applied nothing ahead (no key to delete here): found by the
    /// simulation, such a revoke committed as another leader's, found its
    /// lease gone and stayed undoable, and a later step-down of the term
    /// put the revoked lease back in this member's table only.
    pub fn revoke_submitted(&mut self, id: i64, records: &[Record], visible: i64, term: u64) {
        let Ok(lease) = self.leases.revoke(id) else {
            return;
        };
        self.spec_term = Some(term);
        for r in records {
            if let Record::LeaseRevoke { rev, .. } = r {
                self.revoke_rev = self.revoke_rev.max(*rev);
                self.remember_revoke(*rev, id, lease.ttl, false, visible);
            }
        }
    }

    /// The revoke of lease `id` at `rev` this member submitted as leader
    /// of `term` failed. Within the term that means raft refused it (a
    /// leader transfer under way) and it is not in the log: the lease goes
    /// back in the table. Otherwise the step-down put it back already, and
    /// if the entry commits after all it is applied as another leader's.
    /// Without it, found by the simulation, such a leader kept serving
    /// with a table that lacked a lease every other member held (a revoke
    /// that deleted nothing is voided by no marker, and one that did only
    /// once a marker cuts below it).
    pub fn revoke_dropped(&mut self, id: i64, rev: i64, term: u64) {
        if self.spec_term == Some(term) {
            self.restore_revoked(|r| r.id == id && r.rev == rev && !r.committed);
        }
    }

    fn remember_revoke(&mut self, rev: i64, id: i64, ttl_s: i64, committed: bool, visible: i64) {
        // Once visible a committed revoke is undone by nothing; one not
        // committed yet still is by a step-down (a revoke that deleted
        // nothing carries a revision visible without it). Found by the
        // simulation: dropped here, a step-down could not put its lease
        // back.
        self.revoked.retain(|r| r.rev > visible || !r.committed);
        if let Some(e) = self.revoked.iter_mut().find(|e| e.id == id && e.rev == rev) {
            e.committed |= committed;
        } else {
            self.revoked.push(Revoke {
                rev,
                id,
                ttl_s,
                committed,
            });
        }
    }

    /// Revokes above `rev` (undone in a cut at `rev`).
    pub fn revoked_above(&self, rev: i64) -> impl Iterator<Item = &Revoke> {
        self.revoked.iter().filter(move |r| r.rev > rev)
    }

    /// A committed entry of this shard's log, in log order, on every
    /// member (and at restart): the one way state reaches the store apart
    /// from a leader's own writes, which it applied before proposing.
    /// `visible` is the member's visible revision. An entry the store
    /// already covers changes nothing; one that cannot be applied leaves
    /// [`Self::applied_index`] where it was (and says [`Effect::Broken`]).
    pub fn apply_committed(
        &mut self,
        index: u64,
        term: u64,
        rec: &Record,
        visible: i64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if index <= self.applied_index {
            return out;
        }
        let own = self.spec_term == Some(term) && term != 0;
        if let Err(e) = self.apply_record(rec, own, visible, &mut out) {
            // The log, not the store, is wrong: applying around it would
            // diverge from the other members.
            out.push(Effect::Broken(format!(
                "shard {}: committed log entry {index} cannot be applied: {e}",
                self.id
            )));
            return out;
        }
        self.applied_index = index;
        out
    }

    /// `own`: this shard applied the record's effects before proposing it.
    /// A write whose revisions do not follow the store's (a damaged log or
    /// a faulty peer) is refused whole.
    fn apply_record(
        &mut self,
        rec: &Record,
        own: bool,
        visible: i64,
        out: &mut Vec<Effect>,
    ) -> Result<(), ferrokv_mvcc::Error> {
        match rec {
            Record::Write { rev, parts } => {
                if !own && *rev > self.store.last_revision() {
                    for p in parts.iter().filter(|p| p.shard == self.id) {
                        if let Err(e) = self.store.try_apply_at_sub(*rev, p.first_sub, &p.ops) {
                            // Drop this record's earlier parts: `rev` was
                            // above everything the store held.
                            let _ = self.store.rollback_above(*rev - 1);
                            return Err(e);
                        }
                    }
                }
                self.committed_rev = self.committed_rev.max(*rev);
                out.push(Effect::Written {
                    rev: *rev,
                    participants: parts.iter().map(|p| p.shard).collect(),
                });
            }
            // Neither a compaction nor a grant is applied ahead of the log,
            // the leader's own included: it takes effect here, as the
            // record commits. Left to the proposing task after its commit
            // (as it was), a step-down in between left that member's
            // store uncompacted, or the lease out of its table only
            // (found by the simulation).
            Record::Compact { rev, at: 0 } => {
                // An older version's record: in effect as it applies.
                let _ = self.store.compact(*rev);
                out.push(Effect::Compacted { rev: *rev });
            }
            Record::Compact { rev, at } => {
                self.pending_compact = Some(self.pending_compact.unwrap_or(0).max(*rev));
                out.push(Effect::CompactionApplied { rev: *rev, at: *at });
            }
            Record::TruncateAbove { .. } => {}
            Record::Marker { id, cut, through } => {
                if let Err(e) = self.store.rollback_above(*cut) {
                    out.push(Effect::Broken(format!(
                        "shard {}: marker {id} cannot roll back to {cut}: {e}",
                        self.id
                    )));
                }
                self.committed_rev = self.committed_rev.min(*cut);
                self.restore_revoked(|r| r.rev > *cut);
                if *id > self.last_marker.0 {
                    self.last_marker = (*id, *cut, *through);
                }
                out.push(Effect::Marker {
                    id: *id,
                    cut: *cut,
                    through: *through,
                });
            }
            Record::LeaseGrant { id, ttl } => self.leases.restore(*id, *ttl),
            Record::LeaseRevoke { id, rev } => {
                if own {
                    self.remember_revoke(*rev, *id, 0, true, visible);
                } else if let Ok(lease) = self.leases.revoke(*id) {
                    self.remember_revoke(*rev, *id, lease.ttl, true, visible);
                }
            }
            // The member's auth view applies these (shard 0's log).
            Record::Auth(_) => {}
        }
        Ok(())
    }

    /// Puts back the revoked leases `undo` selects. A revoke that deleted
    /// nothing before any revision was assigned (`rev` 0) is no marker's
    /// to undo, but a step-down's like any other: found by the
    /// simulation, a leader whose expiry revoke of such a lease raft
    /// dropped kept it out of its table for good while every other member
    /// still held it.
    fn restore_revoked(&mut self, undo: impl Fn(&Revoke) -> bool) {
        let (back, keep): (Vec<Revoke>, Vec<Revoke>) = std::mem::take(&mut self.revoked)
            .into_iter()
            .partition(|r| undo(r));
        for r in back {
            self.leases.restore(r.id, r.ttl_s);
        }
        self.revoked = keep;
    }

    /// This member's role in the group is now `leader` in `term`. A leader
    /// that lost its term drops what it applied ahead of the log;
    /// committed entries of that term then arrive like anyone else's.
    pub fn role_changed(&mut self, leader: bool, term: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(t) = self.spec_term else {
            return out;
        };
        if leader && term == t {
            return out;
        }
        // A compaction's revision was visible when it was asked for, so
        // nothing of this shard at or below it is uncommitted; but the
        // shard's last committed write may be older (the revisions since
        // went to other shards), and the store refuses to roll back below
        // its compaction point. Found by the simulation: a leader that
        // stepped down with a write in flight stopped (`Effect::Broken`).
        let to = self.committed_rev.max(self.store.compact_revision());
        if let Err(e) = self.store.rollback_above(to) {
            out.push(Effect::Broken(format!(
                "shard {}: step-down cannot roll back to {to}: {e}",
                self.id
            )));
        }
        self.restore_revoked(|r| !r.committed);
        self.spec_term = None;
        log::info!(
            "shard {}: left leadership of term {t}; rolled back to revision {to}",
            self.id
        );
        out
    }

    /// The store is now the snapshot `store` at raft index `index`, with
    /// the marker and leases it holds.
    pub fn install(
        &mut self,
        store: Store,
        index: u64,
        marker: MarkerMeta,
        leases: &[(i64, i64)],
    ) -> Vec<Effect> {
        let rev = store.last_revision();
        let mut out = vec![Effect::Compacted {
            rev: store.compact_revision(),
        }];
        self.store = store;
        for id in self.leases.ids() {
            let _ = self.leases.revoke(id);
        }
        for (id, ttl) in leases {
            self.leases.restore(*id, *ttl);
        }
        self.revoked.clear();
        self.committed_rev = rev;
        self.applied_index = index;
        if marker.0 > self.last_marker.0 {
            self.last_marker = marker;
            out.push(Effect::MarkerFolded {
                id: marker.0,
                cut: marker.1,
                through: marker.2,
            });
        }
        out.push(Effect::Installed { rev });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Part;
    use proptest::prelude::*;

    fn put(key: &str, value: &str) -> WriteOp {
        WriteOp::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease: 0,
        }
    }

    fn write(rev: i64, shards: &[u32], ops: Vec<WriteOp>) -> Record {
        Record::Write {
            rev,
            parts: shards
                .iter()
                .map(|s| Part {
                    shard: *s,
                    first_sub: 0,
                    ops: ops.clone(),
                })
                .collect(),
        }
    }

    fn state() -> ShardState {
        ShardState::new(0, Store::new(), LeaseTable::new(1))
    }

    /// A key with its value, create/mod revisions and version.
    type Row = (Vec<u8>, Vec<u8>, i64, i64, i64);

    /// Every key, latest.
    fn dump(s: &ShardState) -> Vec<Row> {
        s.store
            .range(b"\0", b"\0", 0, 0, false, false)
            .expect("range")
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    kv.key,
                    kv.value,
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                )
            })
            .collect()
    }

    fn written(rev: i64, shards: &[u32]) -> Effect {
        Effect::Written {
            rev,
            participants: shards.iter().copied().collect(),
        }
    }

    #[test]
    fn a_compaction_waits_for_its_effect_before_it_removes_history() {
        let mut s = state();
        for (i, v) in ["1", "2"].into_iter().enumerate() {
            let rev = i as i64 + 1;
            s.apply_committed(rev as u64, 1, &write(rev, &[0], vec![put("a", v)]), 0);
        }
        let rec = Record::Compact { rev: 2, at: 3 };
        assert_eq!(
            s.apply_committed(3, 1, &rec, 2),
            vec![Effect::CompactionApplied { rev: 2, at: 3 }]
        );
        // Not in effect on this member yet: revision 1 is still readable.
        assert!(!s.settle_compaction(0));
        assert_eq!(s.store.compact_revision(), 0);
        assert!(s.settle_compaction(2));
        assert_eq!(s.store.compact_revision(), 2);
        assert_eq!(s.pending_compaction(), None);
    }

    #[test]
    fn a_leaders_own_entries_are_not_applied_twice() {
        let mut s = state();
        s.apply(1, 0, &[put("a", "1")], 5);
        let rec = write(1, &[0, 1], vec![put("a", "1")]);
        assert_eq!(s.apply_committed(1, 5, &rec, 0), vec![written(1, &[0, 1])]);
        assert_eq!(dump(&s), vec![(b"a".to_vec(), b"1".to_vec(), 1, 1, 1)]);
        assert_eq!(s.applied_index(), 1);
        // Covered already (a snapshot, or this very entry): nothing.
        assert_eq!(s.apply_committed(1, 5, &rec, 0), vec![]);
    }

    #[test]
    fn a_step_down_rolls_back_to_the_last_committed_write() {
        let mut s = state();
        for rev in 1..=5 {
            s.apply(rev, 0, &[put("k", &rev.to_string())], 3);
        }
        for rev in 1..=3 {
            let rec = write(rev, &[0], vec![put("k", &rev.to_string())]);
            s.apply_committed(rev as u64, 3, &rec, 0);
        }
        assert_eq!(s.role_changed(true, 3), vec![]);
        assert_eq!(s.store.last_revision(), 5);
        assert_eq!(s.role_changed(false, 4), vec![]);
        assert_eq!(s.store.last_revision(), 3);
        assert!(s.may_write_in(4));
        // Entries of the old term that commit anyway are applied as
        // anyone else's.
        let rec = write(4, &[0], vec![put("k", "4")]);
        assert_eq!(s.apply_committed(4, 3, &rec, 0), vec![written(4, &[0])]);
        assert_eq!(dump(&s), vec![(b"k".to_vec(), b"4".to_vec(), 1, 4, 4)]);
    }

    #[test]
    fn a_marker_voids_above_its_cut_and_undoes_revokes_there() {
        let mut s = state();
        s.leases.restore(7, 60);
        for rev in 1..=4 {
            let rec = write(rev, &[0], vec![put("k", &rev.to_string())]);
            s.apply_committed(rev as u64, 2, &rec, 0);
        }
        s.apply_committed(5, 2, &Record::LeaseRevoke { id: 7, rev: 4 }, 0);
        assert!(!s.leases.contains(7));
        let marker = Record::Marker {
            id: 9,
            cut: 2,
            through: 4,
        };
        let out = s.apply_committed(6, 3, &marker, 2);
        assert_eq!(
            out,
            vec![Effect::Marker {
                id: 9,
                cut: 2,
                through: 4
            }]
        );
        assert_eq!(s.store.last_revision(), 2);
        assert!(s.leases.contains(7), "the revoke at 4 was voided");
        assert_eq!(s.last_marker(), (9, 2, 4));
        // An older marker applied later does not replace the newer one.
        let old = Record::Marker {
            id: 8,
            cut: 1,
            through: 1,
        };
        s.apply_committed(7, 3, &old, 2);
        assert_eq!(s.last_marker(), (9, 2, 4));
    }

    #[test]
    fn a_step_down_puts_back_a_revoke_that_deleted_nothing() {
        let mut s = state();
        s.leases.restore(7, 60);
        s.take_term(3);
        s.revoke_submitted(7, &[Record::LeaseRevoke { id: 7, rev: 0 }], 0, 3);
        assert!(!s.leases.contains(7));
        // Raft dropped it: the next term never holds it.
        s.role_changed(false, 4);
        assert!(s.leases.contains(7), "the uncommitted revoke was undone");
        // A marker does not undo a committed one.
        s.apply_committed(1, 4, &Record::LeaseRevoke { id: 7, rev: 0 }, 0);
        let marker = Record::Marker {
            id: 9,
            cut: 0,
            through: 3,
        };
        s.apply_committed(2, 5, &marker, 0);
        assert!(!s.leases.contains(7));
    }

    #[test]
    fn a_revoke_that_deleted_nothing_is_voided_with_the_writes_it_read() {
        use crate::kv::eval::{records, WriteState};
        // The lease's only key had a version attached at 1, replaced at 2
        // (in another shard, not yet committed): the revoke found nothing
        // to delete, having read the state after 2.
        let st = WriteState::new(2, 0);
        let recs = records(&st, 0, Some((0, 7)));
        assert_eq!(recs, vec![Record::LeaseRevoke { id: 7, rev: 2 }]);
        let mut s = state();
        s.leases.restore(7, 60);
        s.apply_committed(1, 1, &recs[0], 0);
        assert!(!s.leases.contains(7));
        // Revision 2 is lost: so is the revoke, or the version at 1 would
        // stay attached to a lease no table holds.
        let marker = Record::Marker {
            id: 9,
            cut: 1,
            through: 2,
        };
        s.apply_committed(2, 2, &marker, 1);
        assert!(s.leases.contains(7), "the revoke was voided");
        assert!(recs[0].voided_above(1) && !recs[0].voided_above(2));
    }

    #[test]
    fn a_step_down_after_a_compaction_above_the_shards_last_write_rolls_back() {
        let mut s = state();
        s.apply_committed(1, 1, &write(1, &[0], vec![put("a", "1")]), 0);
        // Revisions 2..=5 went to other shards; 5 was visible.
        s.apply_committed(2, 1, &Record::Compact { rev: 5, at: 5 }, 5);
        assert!(s.settle_compaction(5), "in effect on the member");
        s.apply(6, 0, &[put("a", "6")], 2);
        assert_eq!(s.role_changed(false, 3), vec![]);
        assert_eq!(dump(&s), vec![(b"a".to_vec(), b"1".to_vec(), 1, 1, 1)]);
        // The next leader's write applies as usual.
        let out = s.apply_committed(3, 3, &write(7, &[0], vec![put("a", "7")]), 5);
        assert_eq!(out, vec![written(7, &[0])]);
        assert_eq!(dump(&s), vec![(b"a".to_vec(), b"7".to_vec(), 1, 7, 2)]);
    }

    #[test]
    fn a_revoke_raft_refused_puts_its_lease_back() {
        let mut s = state();
        s.leases.restore(7, 60);
        s.leases.restore(8, 60);
        s.take_term(3);
        for id in [7, 8] {
            s.revoke_submitted(id, &[Record::LeaseRevoke { id, rev: 4 }], 0, 3);
        }
        s.revoke_dropped(7, 4, 3);
        assert!(s.leases.contains(7) && !s.leases.contains(8));
        // Once committed, or after the term, a failure changes nothing.
        s.apply_committed(1, 3, &Record::LeaseRevoke { id: 8, rev: 4 }, 0);
        s.revoke_dropped(8, 4, 3);
        s.revoke_dropped(8, 4, 2);
        assert!(!s.leases.contains(8));
    }

    #[test]
    fn a_revoke_that_applied_nothing_ahead_commits_as_the_leaders_own() {
        let mut s = state();
        s.leases.restore(7, 60);
        let rec = Record::LeaseRevoke { id: 7, rev: 3 };
        s.revoke_submitted(7, std::slice::from_ref(&rec), 0, 4);
        s.apply_committed(1, 4, &rec, 0);
        // A write of the same term, then a step-down: the committed revoke
        // stays.
        s.apply(4, 0, &[put("a", "1")], 4);
        s.role_changed(false, 5);
        assert!(!s.leases.contains(7));
    }

    #[test]
    fn a_leaders_own_compaction_and_grant_take_effect_as_they_commit() {
        let mut s = state();
        s.apply_committed(1, 1, &write(1, &[0], vec![put("a", "1")]), 0);
        s.apply_committed(2, 1, &write(2, &[0], vec![put("a", "2")]), 0);
        s.take_term(2);
        s.apply_committed(3, 2, &Record::Compact { rev: 2, at: 2 }, 2);
        s.apply_committed(4, 2, &Record::LeaseGrant { id: 7, ttl: 5 }, 2);
        // Stepped down before the proposing task went on.
        s.role_changed(false, 3);
        // In effect on the member (its visible revision reached 2).
        assert!(s.settle_compaction(2));
        assert_eq!(s.store.compact_revision(), 2);
        assert!(s.leases.contains(7));
    }

    #[test]
    fn a_revoke_not_committed_stays_undoable_once_its_revision_is_visible() {
        let mut s = state();
        s.leases.restore(7, 60);
        s.leases.restore(8, 60);
        // Deleted nothing, having read the state after 3.
        s.revoke_submitted(7, &[Record::LeaseRevoke { id: 7, rev: 3 }], 0, 4);
        // Revision 3 became visible; another revoke is submitted.
        s.revoke_submitted(8, &[Record::LeaseRevoke { id: 8, rev: 5 }], 3, 4);
        s.role_changed(false, 5);
        assert!(s.leases.contains(7) && s.leases.contains(8));
    }

    #[test]
    fn a_write_out_of_order_is_refused_whole() {
        let mut s = state();
        s.apply_committed(1, 1, &write(3, &[0], vec![put("a", "x")]), 0);
        // Below what the store holds: skipped as already there.
        let out = s.apply_committed(2, 1, &write(2, &[0], vec![put("b", "y")]), 0);
        assert_eq!(out, vec![written(2, &[0])]);
        assert_eq!(s.store.last_revision(), 3);
    }

    #[test]
    fn an_abandoned_write_is_dropped_and_restarts_the_leader() {
        let mut s = state();
        s.apply(1, 0, &[put("a", "1")], 2);
        assert_eq!(s.abandon(1, 1), vec![], "another term's: not ours");
        let out = s.abandon(1, 2);
        assert!(matches!(&out[..], [Effect::Restart(_)]), "{out:?}");
        assert_eq!(s.store.last_revision(), 0);
    }

    #[test]
    fn an_install_replaces_store_leases_and_marker() {
        let mut s = state();
        s.leases.restore(1, 10);
        let mut other = state();
        other.apply_committed(1, 1, &write(1, &[0], vec![put("z", "1")]), 0);
        let out = s.install(other.store, 40, (3, 1, 2), &[(2, 20)]);
        assert_eq!(
            out,
            vec![
                Effect::Compacted { rev: 0 },
                Effect::MarkerFolded {
                    id: 3,
                    cut: 1,
                    through: 2
                },
                Effect::Installed { rev: 1 },
            ]
        );
        assert_eq!(s.applied_index(), 40);
        assert!(!s.leases.contains(1) && s.leases.contains(2));
        assert_eq!(dump(&s).len(), 1);
    }

    proptest! {
        /// A leader that applies its writes ahead of the log, loses some
        /// to a step-down and sees others commit anyway ends with the same
        /// store as a follower that applied only the committed log.
        #[test]
        fn leader_and_follower_agree_on_the_committed_log(
            plan in proptest::collection::vec((0u8..4, 0u8..3, any::<bool>()), 1..40),
        ) {
            let (mut leader, mut follower) = (state(), state());
            let (mut term, mut rev, mut index) = (1u64, 0i64, 0u64);
            // Applied ahead by the leader, not yet committed.
            let mut pending: Vec<Record> = Vec::new();
            for (key, value, commit) in plan {
                if !commit && !pending.is_empty() {
                    // Lost: a step-down; the new term starts at the last
                    // committed revision.
                    leader.role_changed(false, term + 1);
                    term += 1;
                    pending.clear();
                    rev = follower.store.last_revision();
                    continue;
                }
                rev += 1;
                let op = put(&format!("k{key}"), &value.to_string());
                leader.apply(rev, 0, std::slice::from_ref(&op), term);
                pending.push(write(rev, &[0], vec![op]));
                if commit {
                    for rec in pending.drain(..) {
                        index += 1;
                        leader.apply_committed(index, term, &rec, 0);
                        follower.apply_committed(index, term, &rec, 0);
                    }
                }
            }
            leader.role_changed(false, term + 1);
            prop_assert_eq!(dump(&leader), dump(&follower));
            prop_assert_eq!(leader.store.last_revision(), follower.store.last_revision());
        }
    }
}
