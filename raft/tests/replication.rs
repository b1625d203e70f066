//! Three shard logs of one group on one executor, wired by an in-memory
//! network the test can cut: elections, quorum commit, every member applying
//! the same entries in the same order, a leader's loss, proposals of a
//! deposed leader never acknowledged for another entry.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrokv_raft::{Apply, Error, LogConfig, Role, ShardLog, Transport};
use ferrokv_wal::{WalConfig, WalMetrics};
use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::Message;

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
    }
}

struct Member {
    log: Rc<ShardLog>,
    applied: Rc<Applied>,
}

async fn start(net: &Rc<Net>, dir: &std::path::Path, id: u64) -> Member {
    let t = Box::new(NetTransport {
        net: net.clone(),
        from: id,
    });
    let (log, rec) = ShardLog::open_with_transport(&dir.join(id.to_string()), cfg(id), 0, t)
        .await
        .expect("open");
    assert!(rec.entries.is_empty());
    let applied = Rc::new(Applied::default());
    net.logs.borrow_mut().retain(|(i, _)| *i != id);
    net.logs.borrow_mut().push((id, Rc::downgrade(&log)));
    log.start(Some(applied.clone() as Rc<dyn Apply>));
    Member { log, applied }
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
        let t = Box::new(NetTransport {
            net: net.clone(),
            from: victim,
        });
        let (log, rec) =
            ShardLog::open_with_transport(&path.join(victim.to_string()), cfg(victim), 0, t)
                .await
                .unwrap();
        let applied = Rc::new(Applied::default());
        net.logs.borrow_mut().retain(|(i, _)| *i != victim);
        net.logs.borrow_mut().push((victim, Rc::downgrade(&log)));
        log.start(Some(applied.clone() as Rc<dyn Apply>));
        let back = Member { log, applied };
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
