//! What the simulation checks at every step: raft's safety properties as
//! the state machines and the clients see them.

use std::collections::BTreeMap;

/// Everything the members reported, across crashes.
#[derive(Debug, Default)]
pub struct Checker {
    /// (group, term) -> the member that led it.
    leaders: BTreeMap<(usize, u64), u64>,
    /// (group, index) -> (term, data) of the entry committed there: what
    /// the first member that applied it applied.
    committed: BTreeMap<(usize, u64), (u64, Vec<u8>)>,
    /// (group, index) -> term of the entry a member counted committed
    /// there, data or not (a leader's empty entry too).
    terms: BTreeMap<(usize, u64), (u64, u64)>,
    /// (group, index) -> data of every acknowledged proposal.
    pub acked: BTreeMap<(usize, u64), Vec<u8>>,
    pub elections: usize,
}

impl Checker {
    /// Election safety: at most one leader per group and term.
    pub fn leader(&mut self, group: usize, term: u64, member: u64) -> Result<(), String> {
        match self.leaders.get(&(group, term)) {
            Some(m) if *m != member => Err(format!(
                "group {group} term {term}: members {m} and {member} both lead"
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert((group, term), member);
                self.elections += 1;
                Ok(())
            }
        }
    }

    /// Committed entries never diverge: every member that counts index
    /// `index` committed holds an entry of the same term there.
    pub fn committed_term(
        &mut self,
        group: usize,
        member: u64,
        index: u64,
        term: u64,
    ) -> Result<(), String> {
        match self.terms.get(&(group, index)) {
            Some((t, m)) if *t != term => Err(format!(
                "group {group} index {index}: member {member} counts an entry of term {term} \
                 committed, member {m} one of term {t}"
            )),
            Some(_) => Ok(()),
            None => {
                self.terms.insert((group, index), (term, member));
                Ok(())
            }
        }
    }

    /// State machine safety: every member applies the same entry at an
    /// index, whatever crashes came in between.
    pub fn applied(
        &mut self,
        group: usize,
        member: u64,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<(), String> {
        match self.committed.get(&(group, index)) {
            Some((t, d)) if *t != term || d[..] != *data => Err(format!(
                "group {group} index {index}: member {member} applied term {term} {:?}, \
                 another member term {t} {:?}",
                show(data),
                show(d)
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert((group, index), (term, data.to_vec()));
                Ok(())
            }
        }
    }

    /// An acknowledged proposal: the entry committed at its index is it
    /// (a waiter matched to another member's entry, or an older term's
    /// entry with the same id, would acknowledge a different write).
    pub fn acknowledged(&mut self, group: usize, index: u64, data: &[u8]) -> Result<(), String> {
        match self.committed.get(&(group, index)) {
            Some((_, d)) if d[..] == *data => {
                self.acked.insert((group, index), data.to_vec());
                Ok(())
            }
            Some((_, d)) => Err(format!(
                "group {group} index {index}: proposal {:?} acknowledged, {:?} committed there",
                show(data),
                show(d)
            )),
            None => Err(format!(
                "group {group} index {index}: proposal {:?} acknowledged before it was applied",
                show(data)
            )),
        }
    }

    /// The highest index of an acknowledged proposal of `group`.
    pub fn max_acked(&self, group: usize) -> u64 {
        self.acked
            .range((group, 0)..=(group, u64::MAX))
            .next_back()
            .map_or(0, |((_, i), _)| *i)
    }

    /// Every acknowledged proposal is in `log` (one member's applied
    /// entries of `group`, by index).
    pub fn all_acked_in(
        &self,
        group: usize,
        member: u64,
        log: &BTreeMap<u64, (u64, Vec<u8>)>,
    ) -> Result<(), String> {
        for ((g, index), data) in &self.acked {
            if *g != group {
                continue;
            }
            match log.get(index) {
                Some((_, d)) if d == data => {}
                other => {
                    return Err(format!(
                        "group {group}: acknowledged {:?} at index {index} is not on member \
                         {member} (it has {:?})",
                        show(data),
                        other.map(|(_, d)| show(d))
                    ))
                }
            }
        }
        Ok(())
    }
}

fn show(d: &[u8]) -> String {
    String::from_utf8_lossy(d).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_of_one_term_are_caught() {
        let mut c = Checker::default();
        c.leader(0, 3, 1).unwrap();
        c.leader(0, 3, 1).unwrap();
        c.leader(1, 3, 2).unwrap();
        assert!(c.leader(0, 3, 2).is_err());
    }

    #[test]
    fn diverging_committed_entries_are_caught() {
        let mut c = Checker::default();
        c.committed_term(0, 1, 7, 2).unwrap();
        c.committed_term(0, 2, 7, 2).unwrap();
        assert!(c.committed_term(0, 3, 7, 3).is_err());
        c.applied(0, 1, 7, 2, b"a").unwrap();
        assert!(c.applied(0, 2, 7, 2, b"b").is_err());
    }

    #[test]
    fn an_acknowledgement_of_another_entry_is_caught() {
        let mut c = Checker::default();
        assert!(
            c.acknowledged(0, 5, b"p1").is_err(),
            "acknowledged before applied"
        );
        c.applied(0, 1, 5, 1, b"p2").unwrap();
        assert!(c.acknowledged(0, 5, b"p1").is_err());
        c.acknowledged(0, 5, b"p2").unwrap();
        let mut log = BTreeMap::new();
        assert!(
            c.all_acked_in(0, 1, &log).is_err(),
            "an acknowledged entry missing"
        );
        log.insert(5, (1, b"p2".to_vec()));
        c.all_acked_in(0, 1, &log).unwrap();
    }
}
