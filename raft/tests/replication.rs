//! Three shard logs of one group on one executor, wired by an in-memory
//! network the test can cut: elections, quorum commit, every member applying
//! the same entries in the same order, a leader's loss, proposals of a
//! deposed leader never acknowledged for another entry.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrokv_raft::{Apply, Error, LogConfig, Recovered, Role, ShardLog, Transport};
use ferrokv_wal::{WalConfig, WalMetrics};
use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::{ConfChangeType, Message};

const IDS: [u64; 3] = [1, 2, 3];

/// The network: delivers to the member's log unless either end is cut off.
#[derive(Default)]
struct Net {
    logs: RefCell<Vec<(u64, Weak<ShardLog>)>>,
    isolated: RefCell<BTreeSet<u64>>,
}

struct NetTransport {
    net: Rc<Net>,
    from: u64,
}

impl Transport for NetTransport {
    fn send(&self, msgs: Vec<Message>) {
        let isolated = self.net.isolated.borrow();
        for m in msgs {
            if isolated.contains(&self.from) || isolated.contains(&m.to) {
                continue;
            }
            let to = self
                .net
                .logs
                .borrow()
                .iter()
                .find(|(id, _)| *id == m.to)
                .and_then(|(_, l)| l.upgrade());
            if let Some(log) = to {
                log.step(m);
            }
        }
    }
}

/// Records what the log applied: (index, term, data).
#[derive(Default)]
struct Applied {
    entries: RefCell<Vec<(u64, u64, Vec<u8>)>>,
    /// Conf changes that took effect: (index, context).
    confs: RefCell<Vec<(u64, Vec<u8>)>>,
    role: Cell<Role>,
}

impl Apply for Applied {
    fn committed(&self, index: u64, term: u64, data: &[u8]) {
        self.entries.borrow_mut().push((index, term, data.to_vec()));
    }
    fn role_changed(&self, role: Role) {
        self.role.set(role);
    }
    fn snapshot_offered(&self, _msg: Message) {
        panic!("no log is compacted in these tests");
    }
    fn conf_changed(&self, index: u64, context: &[u8]) {
        self.confs.borrow_mut().push((index, context.to_vec()));
    }
    fn snapshot_wanted(&self) {
        panic!("no log is compacted in these tests");
    }
}

fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("join executor")
}

fn cfg(id: u64) -> LogConfig {
    LogConfig {
        wal: WalConfig {
            segment_size_bytes: 1 << 20,
            batch_bytes_max: 1 << 20,
            metrics: Arc::new(WalMetrics::new()),
        },
        node_id: id,
        voters: IDS.to_vec(),
        election_tick: 10,
        heartbeat_tick: 1,
        // Elections of 200 ms: short, yet not so short that a loaded
        // machine (the suite runs two tests at a time) starts spurious ones.
        tick_interval: Duration::from_millis(20),
        snapshot_conf: None,
        seed: None,
    }
}

struct Member {
    log: Rc<ShardLog>,
    applied: Rc<Applied>,
}

async fn start(net: &Rc<Net>, dir: &std::path::Path, id: u64) -> Member {
    let (m, rec) = open(net, dir, id).await;
    assert!(rec.entries.is_empty());
    m
}

/// Opens member `id`'s log in `dir` (new or not) on the network and starts
/// it; what it recovered is returned beside it.
async fn open(net: &Rc<Net>, dir: &std::path::Path, id: u64) -> (Member, Recovered) {
    let t = Box::new(NetTransport {
        net: net.clone(),
        from: id,
    });
    let (log, rec) = ShardLog::open_with_transport(&dir.join(id.to_string()), cfg(id), 0, t)
        .await
        .expect("open");
    let applied = Rc::new(Applied::default());
    net.logs.borrow_mut().retain(|(i, _)| *i != id);
    net.logs.borrow_mut().push((id, Rc::downgrade(&log)));
    log.start(Some(applied.clone() as Rc<dyn Apply>));
    (Member { log, applied }, rec)
}

/// Waits (bounded) until exactly one live member leads a committed term.
async fn leader(members: &[&Member]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: Vec<u64> = members
            .iter()
            .filter(|m| m.log.leads_committed_term())
            .map(|m| m.log.node_id())
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_applied(m: &Member, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.applied.entries.borrow().len() < n {
        assert!(
            Instant::now() < deadline,
            "member {} applied {} of {n}",
            m.log.node_id(),
            m.applied.entries.borrow().len()
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

fn by_id(members: &[Member], id: u64) -> &Member {
    members
        .iter()
        .find(|m| m.log.node_id() == id)
        .expect("member")
}

#[test]
fn three_voters_elect_replicate_and_survive_a_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let net = Rc::new(Net::default());
        let mut members = Vec::new();
        for id in IDS {
            members.push(start(&net, &path, id).await);
        }
        let refs: Vec<&Member> = members.iter().collect();
        let l1 = leader(&refs).await;
        let lead = by_id(&members, l1);
        // A follower refuses proposals and names the leader.
        let follower = members.iter().find(|m| m.log.node_id() != l1).unwrap();
        match follower.log.submit(b"x".to_vec()) {
            Err(Error::NotLeader { leader_id }) => assert_eq!(leader_id, l1),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a follower accepted a proposal"),
        }
        // Concurrent proposals commit once a quorum has them.
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let log = lead.log.clone();
            tasks.push(glommio::spawn_local(async move {
                log.propose(format!("a{i}").into_bytes()).await
            }));
        }
        let mut indexes = Vec::new();
        for t in tasks {
            indexes.push(t.await.expect("commit"));
        }
        let mut sorted = indexes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 50, "every proposal has its own index");
        for m in &members {
            wait_applied(m, 50).await;
        }
        let first = members[0].applied.entries.borrow().clone();
        for m in &members[1..] {
            assert_eq!(
                *m.applied.entries.borrow(),
                first,
                "same entries, same order"
            );
        }
        // Each acknowledged index holds what was proposed there.
        for (i, idx) in indexes.iter().enumerate() {
            let e = first.iter().find(|e| e.0 == *idx).expect("applied");
            assert_eq!(e.2, format!("a{i}").into_bytes());
        }

        // The leader is cut off: the others elect a new one and go on; the
        // old leader's proposal made in isolation is never acknowledged.
        net.isolated.borrow_mut().insert(l1);
        let stale = lead
            .log
            .submit(b"lost".to_vec())
            .expect("still leader locally");
        let rest: Vec<&Member> = members.iter().filter(|m| m.log.node_id() != l1).collect();
        let l2 = leader(&rest).await;
        assert_ne!(l1, l2);
        let new_lead = by_id(&members, l2);
        for i in 0..10u32 {
            new_lead
                .log
                .propose(format!("b{i}").into_bytes())
                .await
                .expect("commit under the new leader");
        }
        // check-quorum: the isolated leader steps down by itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lead.log.is_leader() {
            assert!(Instant::now() < deadline, "isolated leader kept leading");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(stale.await, Err(Error::ProposalDropped)));
        assert!(!lead.applied.role.get().leader);
        // Healed, the old leader catches up with exactly the new history.
        net.isolated.borrow_mut().clear();
        for m in &members {
            wait_applied(m, 60).await;
        }
        let first = members[0].applied.entries.borrow().clone();
        assert!(first.iter().all(|e| e.2 != b"lost"));
        for m in &members[1..] {
            assert_eq!(*m.applied.entries.borrow(), first);
        }
        // Leadership moves on request.
        let target = IDS.iter().copied().find(|id| *id != l2).unwrap();
        new_lead.log.transfer_leader(target);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !by_id(&members, target).log.leads_committed_term() {
            assert!(Instant::now() < deadline, "leadership did not move");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        // ReadIndex on the leader and on a follower.
        let commit = by_id(&members, target).log.commit_index();
        assert!(by_id(&members, target).log.read_index().await.unwrap() >= commit);
        assert!(by_id(&members, l2).log.read_index().await.unwrap() >= commit);
        for m in &members {
            m.log.shutdown().await;
        }
    });
}

#[test]
fn a_restarted_member_keeps_its_log_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let net = Rc::new(Net::default());
        let mut members = Vec::new();
        for id in IDS {
            members.push(start(&net, &path, id).await);
        }
        let refs: Vec<&Member> = members.iter().collect();
        let l = leader(&refs).await;
        for i in 0..20u32 {
            by_id(&members, l)
                .log
                .propose(format!("c{i}").into_bytes())
                .await
                .unwrap();
        }
        let victim = IDS.iter().copied().find(|id| *id != l).unwrap();
        let pos = members
            .iter()
            .position(|m| m.log.node_id() == victim)
            .unwrap();
        let m = members.remove(pos);
        wait_applied(&m, 20).await;
        m.log.shutdown().await;
        drop(m);
        for i in 20..30u32 {
            by_id(&members, l)
                .log
                .propose(format!("c{i}").into_bytes())
                .await
                .unwrap();
        }
        // Reopened: its durable log comes back (committed part in
        // `Recovered`), and the rest arrives from the leader.
        let (back, rec) = open(&net, &path, victim).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = rec.entries.len() + back.applied.entries.borrow().len();
            if n >= 30 {
                break;
            }
            assert!(Instant::now() < deadline, "restarted member has {n} of 30");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let mut all: Vec<Vec<u8>> = rec.entries.iter().map(|(_, d)| d.clone()).collect();
        all.extend(back.applied.entries.borrow().iter().map(|e| e.2.clone()));
        let want: Vec<Vec<u8>> = (0..30u32).map(|i| format!("c{i}").into_bytes()).collect();
        assert_eq!(all, want);
        back.log.shutdown().await;
        for m in &members {
            m.log.shutdown().await;
        }
    });
}

/// Waits (bounded) until `m` has seen `n` conf changes take effect.
async fn wait_confs(m: &Member, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.applied.confs.borrow().len() < n {
        assert!(
            Instant::now() < deadline,
            "member {} saw {} of {n} conf changes",
            m.log.node_id(),
            m.applied.confs.borrow().len()
        );
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn members_are_added_promoted_and_removed_and_restarts_keep_the_membership() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let net = Rc::new(Net::default());
        let mut members = Vec::new();
        for id in IDS {
            members.push(start(&net, &path, id).await);
        }
        let refs: Vec<&Member> = members.iter().collect();
        let l = leader(&refs).await;
        for i in 0..10u32 {
            let log = by_id(&members, l).log.clone();
            log.propose(format!("a{i}").into_bytes()).await.unwrap();
        }
        // A learner joins: it starts from the bootstrap voters (as every
        // member's log did) and replays the log, this change included.
        by_id(&members, l)
            .log
            .propose_conf_change(ConfChangeType::AddLearnerNode, 4, b"learner".to_vec())
            .await
            .unwrap();
        members.push(start(&net, &path, 4).await);
        for m in &members {
            wait_confs(m, 1).await;
            wait_applied(m, 10).await;
            assert_eq!(m.log.voters(), IDS.to_vec());
            assert_eq!(m.log.learners(), vec![4]);
        }
        // Its log matches the leader's: ready to be promoted.
        let (matched, last) = by_id(&members, l).log.replication_of(4).unwrap();
        assert!(matched <= last);
        by_id(&members, l)
            .log
            .propose_conf_change(ConfChangeType::AddNode, 4, b"promote".to_vec())
            .await
            .unwrap();
        for m in &members {
            wait_confs(m, 2).await;
            assert_eq!(m.log.voters(), vec![1, 2, 3, 4]);
            assert!(m.log.learners().is_empty());
        }
        // Writes need 3 of 4 now: one member cut off, they still commit.
        let cut = IDS.iter().copied().find(|id| *id != l).unwrap();
        net.isolated.borrow_mut().insert(cut);
        by_id(&members, l).log.propose(b"b".to_vec()).await.unwrap();
        net.isolated.borrow_mut().clear();

        // A restarted member comes back with the membership its log holds.
        let victim = [1u64, 2, 3].into_iter().find(|id| *id != l).unwrap();
        let pos = members
            .iter()
            .position(|m| m.log.node_id() == victim)
            .unwrap();
        let m = members.remove(pos);
        wait_applied(&m, 11).await;
        m.log.shutdown().await;
        drop(m);
        let (back, rec) = open(&net, &path, victim).await;
        assert_eq!(back.log.voters(), vec![1, 2, 3, 4]);
        let contexts: Vec<Vec<u8>> = rec.conf_changes.iter().map(|(_, c)| c.clone()).collect();
        assert_eq!(contexts, vec![b"learner".to_vec(), b"promote".to_vec()]);
        members.push(back);

        // Removed, member 4 is out of every configuration.
        let l = leader(&members.iter().collect::<Vec<_>>()).await;
        by_id(&members, l)
            .log
            .propose_conf_change(ConfChangeType::RemoveNode, 4, b"remove".to_vec())
            .await
            .unwrap();
        for m in members
            .iter()
            .filter(|m| m.log.node_id() != 4 && m.log.node_id() != victim)
        {
            wait_confs(m, 3).await;
        }
        for m in members.iter().filter(|m| m.log.node_id() != 4) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while m.log.voters() != IDS.to_vec() {
                assert!(
                    Instant::now() < deadline,
                    "member {} keeps 4",
                    m.log.node_id()
                );
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
        for m in &members {
            m.log.shutdown().await;
        }
    });
}

#[test]
fn a_read_index_raft_drops_for_want_of_a_leader_fails_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        // One member of three: no leader can ever be elected, and raft
        // drops a follower's ReadIndex while it knows none.
        let net = Rc::new(Net::default());
        let alone = start(&net, &path, 1).await;
        let started = Instant::now();
        let asked = futures_lite::future::or(async { Some(alone.log.read_index().await) }, async {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            None
        })
        .await;
        assert!(
            matches!(asked, Some(Err(Error::ProposalDropped))),
            "{asked:?} after {:?}",
            started.elapsed()
        );
        alone.log.shutdown().await;
    });
}
