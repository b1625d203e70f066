//! The deterministic simulation (`ferrokv_tests::sim`) in CI: a bounded
//! slice of seeds (thousands, well under a minute), replay of one seed
//! byte for byte, and the fault-free case. Longer runs are a command:
//! `scripts/simulate --seeds 100000`.

use ferrokv_tests::sim::{run, Options};

/// Totals over the seeds that all passed.
#[derive(Default)]
struct Totals {
    acked: usize,
    crashes: usize,
    torn: usize,
    snapshots: usize,
    reads: usize,
    changes: usize,
    rolled_back: usize,
    writes: usize,
    empty_writes: usize,
    disk_fulls: usize,
    store_compactions: usize,
    lease_grants: usize,
    lease_revokes: usize,
    lease_expiries: usize,
}

fn seeds(first: u64, n: u64, opts: &Options) -> Totals {
    let mut t = Totals::default();
    for seed in first..first + n {
        match run(seed, opts) {
            Ok(out) => {
                t.acked += out.acked;
                t.crashes += out.crashes;
                t.torn += out.torn_tails;
                t.snapshots += out.snapshots;
                t.reads += out.reads;
                t.changes += out.changes;
                t.rolled_back += out.rolled_back;
                t.writes += out.writes;
                t.empty_writes += out.empty_writes;
                t.disk_fulls += out.disk_fulls;
                t.store_compactions += out.store_compactions;
                t.lease_grants += out.lease_grants;
                t.lease_revokes += out.lease_revokes;
                t.lease_expiries += out.lease_expiries;
            }
            Err(f) => panic!("{f}"),
        }
    }
    t
}

#[test]
fn three_members_two_groups_under_faults() {
    let t = seeds(0, 3_000, &Options::default());
    eprintln!(
        "3,000 seeds: {} acknowledged, {} crashes, {} torn tails, {} snapshots installed, \
         {} reads, {} membership changes, {} writes acknowledged ({} wrote nothing), {} \
         rolled back, {} logs failed on a full disk, {} store compactions, {} lease grants, \
         {} revokes and {} expiries acknowledged",
        t.acked,
        t.crashes,
        t.torn,
        t.snapshots,
        t.reads,
        t.changes,
        t.writes,
        t.empty_writes,
        t.rolled_back,
        t.disk_fulls,
        t.store_compactions,
        t.lease_grants,
        t.lease_revokes,
        t.lease_expiries
    );
    // The runs did what they are for (about half of what these seeds
    // do today): a run that never acknowledged, tore a tail, installed a
    // snapshot, read or changed members would pass every check.
    assert!(t.acked > 11_000, "only {} acknowledged proposals", t.acked);
    assert!(t.crashes > 10_000, "only {} crashes", t.crashes);
    assert!(t.torn > t.crashes / 20, "only {} torn tails", t.torn);
    assert!(
        t.snapshots > 200,
        "only {} snapshots installed",
        t.snapshots
    );
    assert!(t.reads > 10_000, "only {} reads answered", t.reads);
    assert!(t.changes > 1_000, "only {} membership changes", t.changes);
    assert!(
        t.rolled_back > 600,
        "only {} writes rolled back by a leader's store",
        t.rolled_back
    );
    assert!(t.writes > 5_000, "only {} writes acknowledged", t.writes);
    assert!(
        t.empty_writes > 500,
        "only {} writes that wrote nothing acknowledged",
        t.empty_writes
    );
    assert!(
        t.disk_fulls > 300,
        "only {} logs failed on a full disk",
        t.disk_fulls
    );
    assert!(
        t.store_compactions > 200,
        "only {} store compactions acknowledged",
        t.store_compactions
    );
    assert!(
        t.lease_grants > 350,
        "only {} lease grants acknowledged",
        t.lease_grants
    );
    assert!(
        t.lease_revokes > 60,
        "only {} lease revokes acknowledged",
        t.lease_revokes
    );
    assert!(
        t.lease_expiries > 150,
        "only {} lease expiries acknowledged",
        t.lease_expiries
    );
}

#[test]
fn five_members_under_faults() {
    let opts = Options {
        members: 5,
        ..Options::default()
    };
    let t = seeds(1_000_000, 1_000, &opts);
    eprintln!(
        "1,000 seeds of five members: {} acknowledged, {} writes acknowledged",
        t.acked, t.writes
    );
    assert!(t.acked > 2_000, "only {} acknowledged proposals", t.acked);
    assert!(t.writes > 500, "only {} writes acknowledged", t.writes);
}

#[test]
fn without_faults_nearly_every_proposal_to_a_leader_is_acknowledged() {
    let opts = Options {
        faults: false,
        ..Options::default()
    };
    let (mut acked, mut proposals) = (0, 0);
    for seed in 0..200 {
        let out = run(seed, &opts).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(out.crashes, 0);
        acked += out.acked;
        proposals += out.proposals;
    }
    // A proposal is only made to a member that leads; one can still fail
    // when that leader's check-quorum fires while the network is slow
    // (the scheduler delivers late), which no link failure is needed for.
    assert!(
        acked * 100 >= proposals * 95,
        "{acked} of {proposals} proposals acknowledged"
    );
}

/// A leader stopped (SIGSTOP) past an election, resuming while it still
/// believes it leads: a transaction that writes nothing is answered only
/// after a ReadIndex confirmed the lead (without it, seed 210 answers at
/// revision 32 after 44 was acknowledged by the next leader).
#[test]
fn a_leader_stopped_past_an_election_answers_nothing_stale() {
    let opts = Options {
        pauses_only: true,
        steps: 20_000,
        ..Options::default()
    };
    let t = seeds(0, 300, &opts);
    eprintln!(
        "300 seeds, SIGSTOP only: {} writes acknowledged, {} of them wrote nothing",
        t.writes, t.empty_writes
    );
    assert!(t.writes > 5_000, "only {} writes acknowledged", t.writes);
    assert!(
        t.empty_writes > 500,
        "only {} writes that wrote nothing acknowledged",
        t.empty_writes
    );
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let opts = Options {
        trace: true,
        ..Options::default()
    };
    for seed in [7, 2_867, 424_242] {
        let a = run(seed, &opts).unwrap_or_else(|f| panic!("{f}"));
        let b = run(seed, &opts).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.trace, b.trace);
        assert!(a.trace.len() > 500, "seed {seed}: {} lines", a.trace.len());
    }
    let other = run(8, &opts).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(
        run(7, &opts).map(|o| o.trace_hash).ok(),
        Some(other.trace_hash)
    );
}
