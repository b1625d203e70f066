//! Network partitions of three-member clusters, ferrokv's side by side
//! with etcd's: every member runs in a network namespace of its own on a
//! private bridge (`src/netns.rs`), so that links can be cut and impaired.
//!
//! Each scenario runs on etcd first (the reference: a failure there is a
//! broken test, not a ferrokv bug), then on ferrokv (`--shards 2`), both
//! with `--heartbeat-interval 50 --election-timeout 500`, under the gRPC
//! write load of `ferrokv_tests::cluster` (through every member, from the
//! bridge namespace):
//! - `isolated_leader_steps_down_and_the_majority_goes_on`: the leader's
//!   link goes down; a put sent to it right away (from inside its
//!   namespace) must not be acknowledged; the two others elect a new
//!   leader in a later term and take writes; the isolated member stops
//!   calling itself leader; after the heal it follows the new leader and
//!   every acknowledged write is on every member (whether the put it was
//!   sent was applied in the end is printed, not asserted: a put that timed
//!   out may be either).
//! - `minority_follower_isolated`: a follower's link goes down; the leader
//!   stays (same member, same term), writes go on, a put sent to the
//!   follower is not acknowledged; after the heal the follower serves what
//!   was written without it.
//! - `lossy_and_slow_links`: every member's outgoing frames lose 20% and
//!   are delayed 50 ms (the delay needs the kernel's `sch_netem`; where it
//!   has none the test says so and runs with the loss alone) while a few
//!   hundred puts go through all members; then the impairment is removed.
//! - `net_isolates_partitions_and_cleans_up`: the fixture itself, with
//!   plain TCP connects between the namespaces, and nothing left behind.
//!
//! After each scenario, every acknowledged write is on every member
//! (serializable reads through each) and `endpoint hashkv --cluster`
//! agrees at one revision. The times measured are printed for both sides.
//!
//! Needs root (`ip netns`, veth, bridge, `tc`). Limits: every wait is
//! bounded by a named duration (those of `ferrokv_tests::cluster`, and the
//! ones below); every `ip`/`tc` command by `netns::COMMAND_TIMEOUT`.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ferrokv_tests::cluster::{
    check_acked_on_every_member, poll, probe, put_acked, sides, statuses, wait_leader, Load,
    Status, CATCH_UP_MAX, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, LEADER_WAIT_MAX,
    WRITE_AFTER_FAULT_MAX,
};
use ferrokv_tests::etcdctl::parse_get_fields;
use ferrokv_tests::netns::{in_namespace, Net, CLIENT_PORT};
use ferrokv_tests::server::{etcd_bin, ferrokv_bin, ServerKind};
use ferrokv_tests::{ClusterOptions, Output, ServerCluster};

const NAMES: [&str; 3] = ["m1", "m2", "m3"];
const TOKEN: &str = "ferrokv-partition-test";
/// ferrokv's `--shards`: two, so that cross-shard paths run.
const SHARDS: u32 = 2;
/// Puts acknowledged before a fault ...
const ACKS_BEFORE_FAULT: usize = 100;
/// ... within this bound.
const ACKS_BEFORE_FAULT_MAX: Duration = Duration::from_secs(20);
/// Puts acknowledged at each later stage.
const ACKS_PER_STAGE: usize = 100;
/// Bound on an isolated leader no longer calling itself leader (etcd's
/// check-quorum steps down after one election timeout without a quorum).
const STEP_DOWN_MAX: Duration = Duration::from_secs(10);
/// The key of the put sent to an isolated member (never acknowledged).
const ISOLATED_KEY: &str = "isolated/put";
/// The lossy, slow links.
const LOSS_PCT: u32 = 20;
const DELAY_MS: u32 = 50;
/// Puts acknowledged on clean links (for comparison), then on impaired ones.
const IMPAIRED_ACKS: usize = 300;
/// Bound on those puts on impaired links.
const IMPAIRED_ACKS_MAX: Duration = Duration::from_secs(60);
/// Bounds of the fixture test's TCP connects.
const REACH_TIMEOUT: Duration = Duration::from_millis(1500);
const UNREACHABLE_TIMEOUT: Duration = Duration::from_millis(500);

fn others(member: usize) -> Vec<usize> {
    (0..NAMES.len()).filter(|&i| i != member).collect()
}

fn all_members() -> Vec<usize> {
    (0..NAMES.len()).collect()
}

/// A three-member cluster of `kind` under `dir`, member `i` in `net`'s
/// namespace `i`, with short elections.
fn start_cluster(kind: ServerKind, dir: &std::path::Path, net: &Net) -> ServerCluster {
    let (binary, shards) = match kind {
        ServerKind::Etcd => (etcd_bin(), None),
        ServerKind::Ferrokv => (
            ferrokv_bin().unwrap_or_else(|e| panic!("{e}")),
            Some(SHARDS),
        ),
    };
    let opts = ClusterOptions {
        shards,
        extra_args: vec![
            format!("--heartbeat-interval={HEARTBEAT_INTERVAL_MS}"),
            format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
        ],
    };
    ServerCluster::start_placed(kind, binary, dir, &NAMES, TOKEN, opts, net.placements())
}

/// Every member's pid is the server's own process (`ip netns exec`
/// execs it, so killing the child kills the server), and that process
/// lives in the member's namespace.
fn check_members_are_servers(c: &ServerCluster, net: &Net) {
    for (i, m) in c.members.iter().enumerate() {
        let pid = m.pid().expect("member started");
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .unwrap_or_else(|e| panic!("{} {}: /proc/{pid}/exe: {e}", c.kind(), m.name()));
        // A binary rebuilt since the start shows as "<path> (deleted)".
        let exe = exe
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string();
        let binary = fs::canonicalize(m.binary()).expect("canonical binary path");
        assert_eq!(
            exe,
            binary.to_string_lossy(),
            "{} {}: pid {pid} runs {exe} instead of the server (started as `{}`)",
            c.kind(),
            m.name(),
            m.command_line()
        );
        let ns = net.member_ns(i);
        assert_eq!(m.netns(), Some(ns));
        let inode = |path: &str| {
            fs::metadata(path)
                .unwrap_or_else(|e| panic!("stat {path}: {e}"))
                .ino()
        };
        assert_eq!(
            inode(&format!("/proc/{pid}/ns/net")),
            inode(&format!("/run/netns/{ns}")),
            "{} {}: pid {pid} is not in namespace {ns}",
            c.kind(),
            m.name()
        );
    }
}

/// Runs `scenario` on a fresh cluster of each side in turn, each in a
/// fresh `Net`, with the test's thread in the bridge namespace; what each
/// returned, by side.
fn on_each_side<T>(
    test: &str,
    mut scenario: impl FnMut(&mut Net, &mut ServerCluster) -> T,
) -> Vec<(ServerKind, T)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ferrokv-{test}-"))
        .tempdir()
        .expect("tempdir");
    sides()
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            eprintln!("=== {test} on {kind}");
            // Dropped in reverse: the members, then the thread leaves the
            // bridge namespace, then the namespaces go.
            let mut net = Net::new(NAMES.len());
            let _inside = net.enter_bridge();
            let mut cluster = start_cluster(kind, &dir.path().join(format!("{i}-{kind}")), &net);
            check_members_are_servers(&cluster, &net);
            let result = scenario(&mut net, &mut cluster);
            for m in &mut cluster.members {
                assert!(
                    m.is_running(),
                    "{kind} {} exited during {test}:\n{}",
                    m.name(),
                    m.log_tail()
                );
            }
            (kind, result)
        })
        .collect()
}

/// `endpoint status` of member `m` alone, asked from inside its own
/// namespace (which reaches it even when it is isolated).
fn status_inside(net: &Net, c: &ServerCluster, m: usize) -> Option<Status> {
    in_namespace(net.member_ns(m), || statuses(c, &[m])).pop()
}

/// Waits until member `m` follows a leader (not itself) in term `term`
/// or later; its status and how long that took.
fn wait_follows(c: &ServerCluster, m: usize, term: u64, since: Instant) -> (Status, Duration) {
    let mut last = Vec::new();
    let follows = poll(CATCH_UP_MAX, || {
        let st = statuses(c, &[m]);
        last = st.clone();
        st.into_iter()
            .find(|s| s.leader != 0 && s.leader != s.member_id && s.raft_term >= term)
    });
    let follows = follows.unwrap_or_else(|| {
        panic!(
            "{} {}: not a follower in term {term} or later within {CATCH_UP_MAX:?} of the \
             heal; last status {last:?}\n{}",
            c.kind(),
            c.members[m].name(),
            c.log_tails()
        )
    });
    (follows, since.elapsed())
}

/// A put of [`ISOLATED_KEY`] through member `m`, sent from inside its
/// namespace; must not be acknowledged. What etcdctl printed, and how long
/// it took to give up.
fn put_through_isolated(net: &Net, c: &ServerCluster, m: usize) -> (String, Duration) {
    let endpoint = c.members[m].endpoint();
    let sent = Instant::now();
    let out: Output = in_namespace(net.member_ns(m), || {
        probe(&endpoint, &["put", ISOLATED_KEY, "never", "-w", "json"])
    });
    let took = sent.elapsed();
    assert_ne!(
        out.code,
        0,
        "{} {}: a put through the isolated member was acknowledged: {out:?}\n{}",
        c.kind(),
        c.members[m].name(),
        c.log_tails()
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    let said = said.trim().lines().last().unwrap_or("").to_string();
    (said, took)
}

/// After a heal: the members on which the put of [`ISOLATED_KEY`] is
/// visible (serializable reads), for the report. Not an assertion: a put
/// that timed out may or may not be applied later (etcd applies one sent
/// to an isolated follower once the link is back, the follower having
/// queued it for the leader).
fn isolated_put_visible_on(c: &ServerCluster) -> String {
    let on: Vec<&str> = c
        .members
        .iter()
        .filter(|m| {
            let out = probe(
                &m.endpoint(),
                &["get", ISOLATED_KEY, "--consistency=s", "-w", "fields"],
            );
            assert_eq!(
                out.code,
                0,
                "{} {}: get {ISOLATED_KEY}: {out:?}\n{}",
                c.kind(),
                m.name(),
                c.log_tails()
            );
            !parse_get_fields(&out.stdout).1.is_empty()
        })
        .map(|m| m.name())
        .collect();
    if on.is_empty() {
        "applied nowhere".to_string()
    } else {
        format!("applied after all, visible on {}", on.join(" "))
    }
}

/// What each side measured, side by side.
fn print_timings(test: &str, results: &[(ServerKind, Vec<(&str, Duration)>)]) {
    for (kind, timings) in results {
        for (what, took) in timings {
            eprintln!("{test}, {kind}: {what}: {took:?}");
        }
    }
}

#[test]
fn isolated_leader_steps_down_and_the_majority_goes_on() {
    let results = on_each_side("isolated-leader", |net, c| {
        let kind = c.kind();
        let (leader, before) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let name = c.members[leader].name().to_string();
        let load = Load::start(c);
        load.wait_acked(
            c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the isolation",
        );
        net.isolate(leader);
        let isolated = Instant::now();
        let majority = others(leader);
        // A put sent to the old leader while it may still think it leads,
        // while the majority elects and takes writes.
        let (first_write, (new_leader, after), new_leader_seen, stepped_down, put) =
            thread::scope(|s| {
                let put = s.spawn(|| put_through_isolated(net, c, leader));
                let first_write = load.first_write_after(c, isolated, &majority);
                let elected = wait_leader(c, &majority, LEADER_WAIT_MAX);
                let new_leader_seen = isolated.elapsed();
                let mut last = None;
                let stepped = poll(STEP_DOWN_MAX, || {
                    let st = status_inside(net, c, leader);
                    last = st.clone();
                    st.filter(|s| s.leader != s.member_id)
                });
                assert!(
                    stepped.is_some(),
                    "{kind} {name}: isolated, still calls itself leader {STEP_DOWN_MAX:?} \
                     after the isolation (status from inside its namespace: {last:?})\n{}",
                    c.log_tails()
                );
                let stepped_down = isolated.elapsed();
                let put = put.join().expect("isolated put");
                (first_write, elected, new_leader_seen, stepped_down, put)
            });
        let (said, isolated_put_gave_up) = put;
        assert!(
            new_leader != leader && after.raft_term > before.raft_term,
            "{kind}: with {name} (term {}) isolated, leader {} in term {}",
            before.raft_term,
            c.members[new_leader].name(),
            after.raft_term
        );
        eprintln!(
            "{kind}: leader {name} (term {}) isolated; first write through the majority \
             acknowledged {first_write:?} after, {} leads in term {} (seen {new_leader_seen:?} \
             after); {name} no longer leader {stepped_down:?} after; the put sent to it gave up \
             after {isolated_put_gave_up:?}: {said}",
            before.raft_term,
            c.members[new_leader].name(),
            after.raft_term
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "with the old leader isolated",
        );
        net.heal(leader);
        let healed = Instant::now();
        let (follows, follows_after_heal) = wait_follows(c, leader, after.raft_term, healed);
        eprintln!(
            "{kind}: {name} healed follows {:x} in term {} {follows_after_heal:?} after the heal",
            follows.leader, follows.raft_term
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the heal",
        );
        let acks = load.finish();
        check_acked_on_every_member(c, &acks);
        eprintln!(
            "{kind}: the put that the isolated member did not acknowledge: {}",
            isolated_put_visible_on(c)
        );
        vec![
            ("isolation to the first write acknowledged", first_write),
            ("isolation to the new leader seen", new_leader_seen),
            ("isolation to the old leader stepped down", stepped_down),
            (
                "put to the isolated leader gave up after",
                isolated_put_gave_up,
            ),
            ("heal to the old leader following", follows_after_heal),
        ]
    });
    print_timings("isolated leader", &results);
}

#[test]
fn minority_follower_isolated() {
    let results = on_each_side("isolated-follower", |net, c| {
        let kind = c.kind();
        let (leader, before) = wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let follower = others(leader)[0];
        let name = c.members[follower].name().to_string();
        let load = Load::start(c);
        load.wait_acked(
            c,
            ACKS_BEFORE_FAULT,
            ACKS_BEFORE_FAULT_MAX,
            "before the isolation",
        );
        net.isolate(follower);
        let isolated = Instant::now();
        let majority = others(follower);
        let first_write = load.first_write_after(c, isolated, &majority);
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "with a follower isolated",
        );
        let (still, during) = wait_leader(c, &majority, LEADER_WAIT_MAX);
        assert!(
            still == leader && during.raft_term == before.raft_term,
            "{kind}: with only follower {name} isolated, leadership moved from {} (term {}) \
             to {} (term {})\n{}",
            c.members[leader].name(),
            before.raft_term,
            c.members[still].name(),
            during.raft_term,
            c.log_tails()
        );
        let (said, gave_up) = put_through_isolated(net, c, follower);
        let last = put_acked(c, leader, "load/while-isolated/last");
        eprintln!(
            "{kind}: follower {name} isolated; first write through the others acknowledged \
             {first_write:?} after, the leader stays; the put sent to {name} gave up after \
             {gave_up:?}: {said}"
        );
        net.heal(follower);
        let healed = Instant::now();
        let endpoint = c.members[follower].endpoint();
        let served = poll(CATCH_UP_MAX, || {
            let out = probe(
                &endpoint,
                &["get", &last.key, "--consistency=s", "-w", "fields"],
            );
            (out.code == 0 && out.stdout.contains(&format!("\"Key\" : \"{}\"", last.key)))
                .then_some(())
        });
        assert!(
            served.is_some(),
            "{kind} {name}: healed, did not serve {} (acknowledged while it was isolated) \
             within {CATCH_UP_MAX:?}\n{}",
            last.key,
            c.log_tails()
        );
        let serves_after_heal = healed.elapsed();
        eprintln!(
            "{kind}: {name} serves the writes made without it {serves_after_heal:?} after the \
             heal"
        );
        load.wait_acked(
            c,
            load.acked() + ACKS_PER_STAGE,
            WRITE_AFTER_FAULT_MAX,
            "after the heal",
        );
        let mut acks = load.finish();
        acks.push(last);
        check_acked_on_every_member(c, &acks);
        eprintln!(
            "{kind}: the put that the isolated member did not acknowledge: {}",
            isolated_put_visible_on(c)
        );
        vec![
            ("isolation to the first write acknowledged", first_write),
            ("heal to the follower serving the writes", serves_after_heal),
        ]
    });
    print_timings("isolated follower", &results);
}

#[test]
fn lossy_and_slow_links() {
    let results = on_each_side("lossy-links", |net, c| {
        let kind = c.kind();
        wait_leader(c, &all_members(), LEADER_WAIT_MAX);
        let delay_applied = net.netem_available();
        if !delay_applied {
            eprintln!(
                "NOTE: this kernel has no netem qdisc (sch_netem): the {DELAY_MS} ms delay is \
                 not applied, the links only lose {LOSS_PCT}%"
            );
        }
        let load = Load::start(c);
        let started = Instant::now();
        load.wait_acked(c, IMPAIRED_ACKS, IMPAIRED_ACKS_MAX, "on clean links");
        let clean_puts = started.elapsed();
        for m in all_members() {
            net.loss(m, LOSS_PCT);
            if delay_applied {
                net.delay(m, DELAY_MS);
            }
        }
        let impaired = Instant::now();
        let target = load.acked() + IMPAIRED_ACKS;
        load.wait_acked(c, target, IMPAIRED_ACKS_MAX, "on lossy, slow links");
        let impaired_puts = impaired.elapsed();
        let acks = load.finish();
        net.heal_all();
        eprintln!(
            "{kind}: {IMPAIRED_ACKS} puts acknowledged in {clean_puts:?} on clean links, \
             {IMPAIRED_ACKS} more in {impaired_puts:?} with {LOSS_PCT}% loss{} on every \
             member's link",
            if delay_applied {
                format!(" and {DELAY_MS} ms delay")
            } else {
                String::new()
            }
        );
        check_acked_on_every_member(c, &acks);
        vec![
            ("puts on clean links", clean_puts),
            (
                if delay_applied {
                    "as many puts with loss and delay"
                } else {
                    "as many puts with loss (no netem: no delay)"
                },
                impaired_puts,
            ),
        ]
    });
    print_timings("lossy links", &results);
}

// ---------------------------------------------------------------- fixture

/// What the host's own namespace has: links, addresses, routes.
fn host_network() -> String {
    ["link", "addr", "route"]
        .iter()
        .map(|what| {
            let out = Command::new("ip")
                .args(["-o", what, "show"])
                .output()
                .unwrap_or_else(|e| panic!("ip -o {what} show: {e}"));
            assert!(out.status.success(), "ip -o {what} show: {out:?}");
            // Counters and timers change; names and addresses do not.
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split(" valid_lft").next().unwrap_or(l).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a TCP connect from namespace `from` to `to` succeeds within
/// `bound`.
fn connects(from: &str, to: SocketAddr, bound: Duration) -> bool {
    in_namespace(from, || TcpStream::connect_timeout(&to, bound).is_ok())
}

/// Which of `froms` reach which members, as `"from->to"` lines, for one
/// assertion per topology state.
fn reachability(net: &Net, label: &str, want: &[(&str, usize, bool)]) {
    let mut wrong = Vec::new();
    for &(from, to, reachable) in want {
        let from_ns = match from {
            "br" => net.bridge_ns().to_string(),
            m => net
                .member_ns(m[1..].parse::<usize>().expect("m<i>") - 1)
                .to_string(),
        };
        let addr = SocketAddr::from((net.member_ip(to), CLIENT_PORT));
        let bound = if reachable {
            REACH_TIMEOUT
        } else {
            UNREACHABLE_TIMEOUT
        };
        if connects(&from_ns, addr, bound) != reachable {
            wrong.push(format!(
                "{from} -> m{}: expected {}",
                to + 1,
                if reachable { "reachable" } else { "cut off" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{label}: {wrong:?}");
}

#[test]
fn net_isolates_partitions_and_cleans_up() {
    let host_before = host_network();
    let mut net = Net::new(3);
    let names: Vec<String> = (0..3)
        .map(|i| net.member_ns(i).to_string())
        .chain([net.bridge_ns().to_string()])
        .collect();
    assert_eq!(
        host_network(),
        host_before,
        "the Net changed the host's network"
    );
    // A listener per member on its client port (accepting is the kernel's).
    let _listeners: Vec<TcpListener> = (0..3)
        .map(|i| {
            let addr = SocketAddr::from((net.member_ip(i), CLIENT_PORT));
            in_namespace(net.member_ns(i), || {
                TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
            })
        })
        .collect();
    let everyone: Vec<(&str, usize, bool)> = ["br", "m1", "m2", "m3"]
        .iter()
        .flat_map(|&from| (0..3).map(move |to| (from, to, true)))
        .collect();
    reachability(&net, "fresh", &everyone);

    // Nothing leaves: a member has no route but its /24.
    let err = in_namespace(net.member_ns(0), || {
        TcpStream::connect_timeout(&"192.0.2.1:80".parse().unwrap(), UNREACHABLE_TIMEOUT)
    })
    .expect_err("a member reached an address outside its network");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "outside address from a member: {err}"
    );

    net.isolate(0);
    reachability(
        &net,
        "m1 isolated",
        &[
            ("m1", 0, true),
            ("m2", 0, false),
            ("m3", 0, false),
            ("br", 0, false),
            ("m1", 1, false),
            ("m2", 2, true),
            ("br", 1, true),
        ],
    );
    net.heal(0);
    reachability(&net, "m1 healed", &everyone);

    net.partition(&[0], &[1, 2]);
    reachability(
        &net,
        "m1 | m2 m3",
        &[
            ("m1", 1, false),
            ("m1", 2, false),
            ("m2", 0, false),
            ("m3", 0, false),
            ("m2", 2, true),
            ("m3", 1, true),
            ("br", 0, true),
            ("br", 1, true),
            ("m1", 0, true),
        ],
    );
    net.heal(0);
    reachability(&net, "partition healed", &everyone);

    net.loss(1, 100);
    reachability(
        &net,
        "m2 loses everything it sends",
        &[
            ("br", 1, false),
            ("m1", 1, false),
            ("m2", 1, true),
            ("m1", 2, true),
        ],
    );
    net.heal(1);
    reachability(&net, "loss removed", &everyone);

    if net.netem_available() {
        net.delay(2, 300);
        let addr = SocketAddr::from((net.member_ip(2), CLIENT_PORT));
        let started = Instant::now();
        assert!(connects(net.bridge_ns(), addr, Duration::from_secs(3)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "delayed connect took {took:?}"
        );
        net.heal(2);
    } else {
        eprintln!("NOTE: this kernel has no netem qdisc (sch_netem): delay not checked");
    }

    drop(_listeners);
    drop(net);
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for name in &names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "namespace {name} left behind:\n{list}"
        );
    }
    assert_eq!(host_network(), host_before, "the host's network changed");
}
