//! Whether this member is the cluster leader that assigns revisions.
//!
//! Every shard group elects its own raft leader; the member that leads all
//! of them (group 0's leader pulls the others over by leader transfer) is
//! the cluster leader. It *serves* writes only after its start: every group
//! has committed an entry of the leader's term (so everything committed
//! before is in its logs and applied), and a marker in every group voided
//! what was never complete everywhere (see `visibility.rs`). Any group's
//! leadership moving ends serving at once; the next start runs again.
//!
//! Shared by the cores: each shard publishes its group's role here from its
//! apply path; core 0 runs [`lead`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

use event_listener::Event;

use ferrokv_raft::Role;

use crate::sequencer::Sequencer;

/// A start that has not finished by then (a group that cannot commit its
/// marker) is abandoned and tried again.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the start is retried while it cannot complete.
const START_RETRY: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Group {
    leader: AtomicBool,
    term: AtomicU64,
    leader_id: AtomicU64,
}

pub struct Leadership {
    member_id: u64,
    groups: Vec<Group>,
    serving: AtomicBool,
    /// Terms of every group when serving began; any change ends it.
    serving_terms: Mutex<Vec<u64>>,
    /// A shard could not finish a write it had applied (its log failed):
    /// this member must not assign revisions again until restarted.
    broken: AtomicBool,
    starts: AtomicU64,
    /// Times group 0's leader (the cluster leader) changed to a member.
    leader_changes: AtomicU64,
    /// Counts the times this member began serving.
    serving_epoch: AtomicU64,
    changed: Event,
}

impl Leadership {
    pub fn new(member_id: u64, shards: u32) -> Leadership {
        Leadership {
            member_id,
            groups: (0..shards).map(|_| Group::default()).collect(),
            serving: AtomicBool::new(false),
            serving_terms: Mutex::new(Vec::new()),
            broken: AtomicBool::new(false),
            starts: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            serving_epoch: AtomicU64::new(0),
            changed: Event::new(),
        }
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Whether this member assigns revisions now.
    pub fn serving(&self) -> bool {
        self.serving.load(SeqCst)
    }

    /// Group `shard`'s role changed on this member.
    pub fn publish(&self, shard: u32, role: Role) {
        let Some(g) = self.groups.get(shard as usize) else {
            return;
        };
        g.leader.store(role.leader, SeqCst);
        g.term.store(role.term, SeqCst);
        let before = g.leader_id.swap(role.leader_id, SeqCst);
        if shard == 0 && role.leader_id != 0 && role.leader_id != before {
            self.leader_changes.fetch_add(1, SeqCst);
        }
        if self.serving() {
            let terms = self
                .serving_terms
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default();
            if !role.leader || terms.get(shard as usize) != Some(&role.term) {
                self.serving.store(false, SeqCst);
                log::info!("shard {shard}: leadership changed (term {}); not serving writes until the next start", role.term);
            }
        }
        self.changed.notify(usize::MAX);
    }

    /// The raft term of the cluster leader's group (group 0) as this member
    /// knows it: the `raft_term` of response headers.
    pub fn term(&self) -> u64 {
        self.groups.first().map_or(0, |g| g.term.load(SeqCst))
    }

    /// Which stretch of serving this is: a request that saw the same epoch
    /// before and after, and serving still on, ran under one leadership
    /// (no marker voided anything meanwhile: only a new start writes one).
    pub fn serving_epoch(&self) -> Option<u64> {
        let e = self.serving_epoch.load(SeqCst);
        self.serving().then_some(e)
    }

    /// etcd's `etcd_server_leader_changes_seen_total`.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(SeqCst)
    }

    /// The member every group should be led by: group 0's leader (0 when
    /// there is none).
    pub fn cluster_leader(&self) -> u64 {
        self.groups.first().map_or(0, |g| g.leader_id.load(SeqCst))
    }

    /// Whether this member leads every group (terms as published).
    fn leads_all(&self) -> Option<Vec<u64>> {
        self.groups
            .iter()
            .map(|g| g.leader.load(SeqCst).then(|| g.term.load(SeqCst)))
            .collect()
    }

    /// Whether this member stopped serving writes for good (until restart).
    pub fn is_broken(&self) -> bool {
        self.broken.load(SeqCst)
    }

    /// A shard could not finish a write it had applied: stop assigning.
    pub fn break_member(&self, why: &str) {
        if !self.broken.swap(true, SeqCst) {
            log::error!("{why}; this member stops serving writes until it is restarted");
        }
        self.serving.store(false, SeqCst);
        self.changed.notify(usize::MAX);
    }

    /// A write failed after it was applied or half submitted: its revision
    /// leaves a hole only a new start's marker can void. Stop serving; the
    /// start runs again (in the same terms if they still hold).
    pub fn restart(&self, why: &str) {
        if self.serving.swap(false, SeqCst) {
            log::warn!("{why}; starting again as leader");
        }
        self.changed.notify(usize::MAX);
    }

    /// Resolves when serving begins, or after `timeout`; returns whether
    /// this member serves.
    pub async fn wait_serving(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let l = self.changed.listen();
            if self.serving() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.broken.load(SeqCst) {
                return false;
            }
            futures_lite::future::or(l, async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }
}

/// The cluster leader's loop (core 0): whenever this member leads every
/// group and does not serve yet, runs the start; returns never.
pub async fn lead(engine: crate::Engine) {
    let me = engine.leadership();
    loop {
        let l = me.changed.listen();
        if !me.serving() && !me.broken.load(SeqCst) {
            if let Some(terms) = me.leads_all() {
                let attempt = futures_lite::future::or(
                    async { start(&engine, &terms).await.map_err(|e| e.to_string()) },
                    async {
                        glommio::timer::sleep(START_TIMEOUT).await;
                        Err("timed out".to_string())
                    },
                );
                match attempt.await {
                    Ok(()) => {
                        if let Ok(mut t) = me.serving_terms.lock() {
                            *t = terms.clone();
                        }
                        // Serve only if no group moved meanwhile.
                        if me.leads_all().as_ref() == Some(&terms) {
                            me.serving_epoch.fetch_add(1, SeqCst);
                            me.serving.store(true, SeqCst);
                            me.changed.notify(usize::MAX);
                            log::info!("serving as cluster leader (terms {terms:?})");
                            // A membership change its predecessor left
                            // half made is finished now, not at the next
                            // change (the member list waits for it).
                            let e = engine.clone();
                            glommio::spawn_local(async move {
                                if let Err(err) = e.settle_member_change().await {
                                    log::warn!("membership: finishing a change failed: {err}");
                                }
                            })
                            .detach();
                            continue;
                        }
                    }
                    Err(e) => log::debug!("leader start not done yet: {e}"),
                }
                glommio::timer::sleep(START_RETRY).await;
                continue;
            }
        }
        futures_lite::future::or(l, async {
            glommio::timer::sleep(Duration::from_millis(200)).await;
        })
        .await;
    }
}

/// What a new cluster leader does before it serves: see the module doc.
async fn start(engine: &crate::Engine, terms: &[u64]) -> Result<(), crate::Error> {
    let me = engine.leadership();
    // Every group has committed its term's first entry: all that earlier
    // leaders committed is applied here.
    engine.wait_terms_committed(terms).await?;
    let seq = engine.sequencer();
    let attempt = me.starts.fetch_add(1, SeqCst) + 1;
    let plan =
        Start::plan(terms, attempt, seq).map_err(|why| crate::Error::Internal(why.to_string()))?;
    engine
        .write_markers(plan.id, plan.cut, plan.through, terms)
        .await?;
    seq.wait_visible(plan.through).await;
    plan.serve(seq);
    engine.promote_leases().await?;
    Ok(())
}

/// A start's decisions, without I/O (the simulation makes them with the
/// same code): the marker it writes in every group once each has committed
/// an entry of the terms it leads, and when it may assign revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Increasing across leaders: terms grow with every election, and a
    /// member's attempts in one term are counted in the low bits.
    pub id: u64,
    /// The marker voids `cut+1..=through`.
    pub cut: i64,
    pub through: i64,
}

impl Start {
    /// The marker of attempt `attempt` (counted from 1 by this member) in
    /// `terms`, after every group has committed an entry of its term: what
    /// is visible stays, and the void range reaches past every revision
    /// held anywhere here and every one handed out before (a write
    /// abandoned before its log entry leaves only the latter).
    pub fn plan(terms: &[u64], attempt: u64, seq: &Sequencer) -> Result<Start, &'static str> {
        if seq.floors_pending() {
            // A snapshot here holds revisions not yet known complete on
            // every shard of this member: a cut now could void
            // acknowledged writes.
            return Err("snapshot floors not yet confirmed");
        }
        let cut = seq.visible();
        Ok(Start {
            id: (terms.first().copied().unwrap_or(0) << 20) | (attempt & 0xf_ffff),
            cut,
            through: seq.last_seen().max(seq.last_assigned()).max(cut),
        })
    }

    /// Once every group committed the marker: whether every shard here has
    /// applied it (the void range is visible), and if so revisions go on
    /// after it.
    pub fn serve(&self, seq: &Sequencer) -> bool {
        if seq.visible() < self.through {
            return false;
        }
        seq.start_assigning(self.through);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn set(s: &[u32]) -> BTreeSet<u32> {
        s.iter().copied().collect()
    }

    #[test]
    fn a_start_voids_past_everything_held_or_handed_out_and_serves_after_it() {
        let seq = Sequencer::new(2);
        seq.snapshot(1);
        seq.written(0, 2, &set(&[0]));
        // 3 reached shard 0 only (its other part never will); 5 was handed
        // out by this member before it lost its lead, and never logged.
        seq.written(0, 3, &set(&[0, 1]));
        seq.start_assigning(5);
        let plan = Start::plan(&[7, 7], 2, &seq).expect("no floors");
        assert_eq!((plan.cut, plan.through), (2, 5));
        assert_eq!(plan.id, (7 << 20) | 2);
        assert!(
            Start::plan(&[8, 7], 1, &seq).expect("plan").id > plan.id,
            "a later term's marker id is larger"
        );
        seq.marker(0, plan.id, plan.cut, plan.through);
        assert!(!plan.serve(&seq), "shard 1 has not applied the marker");
        seq.marker(1, plan.id, plan.cut, plan.through);
        assert!(plan.serve(&seq));
        assert_eq!(futures_lite::future::block_on(seq.assign()), 6);
    }

    #[test]
    fn no_start_while_a_snapshot_floor_is_unconfirmed() {
        let seq = Sequencer::new(2);
        seq.snapshot(1);
        // Shard 1 restarted from a snapshot holding revisions up to 4 that
        // shard 0 has not shown complete yet.
        seq.shard_snapshot(1, 4);
        assert!(seq.floors_pending());
        assert!(Start::plan(&[3, 3], 1, &seq).is_err());
    }
}
