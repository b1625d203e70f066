//! A private network for one test, built from network namespaces, so that
//! members can be cut off, partitioned and impaired without touching the
//! machine's own network ([`Net`]).
//!
//! For a `Net` of N members, numbered `n` in this process:
//!
//! ```text
//!   fkv-<pid>-<n>-m1  eth0 10.213.<n>.2/24 ──veth── m1 ┐
//!   fkv-<pid>-<n>-m2  eth0 10.213.<n>.3/24 ──veth── m2 ├ br0 10.213.<n>.1/24
//!   fkv-<pid>-<n>-m3  eth0 10.213.<n>.4/24 ──veth── m3 ┘   (fkv-<pid>-<n>-br)
//! ```
//!
//! One namespace per member and one holding the bridge `br0`; each member's
//! `eth0` is one end of a veth pair whose other end (`m<i>`) is a port of
//! the bridge. Every interface is created directly inside its namespace
//! (`ip -n <ns> link add ... peer name ... netns <ns>`) and addresses exist
//! only there: the host's namespace gets no interface, no address and no
//! route, so nothing can leave. `lo` is up in every namespace. The bridge
//! namespace's own address reaches every member: a test thread enters it
//! ([`Net::enter_bridge`]) to run etcdctl and gRPC clients against all
//! members; [`in_namespace`] runs a closure inside one member's namespace
//! (which reaches that member even when it is isolated).
//!
//! Faults, all on one member's link:
//! - [`Net::isolate`] / [`Net::heal`]: the bridge-side veth goes down / up
//!   (the member then reaches nothing but itself, and nothing reaches it).
//! - [`Net::partition`]: classic-BPF drop filters (`tc filter ... bpf da`,
//!   on a `clsact` qdisc) on the `eth0` egress of the members of each side,
//!   dropping IPv4 packets addressed to the other side. The bridge address
//!   stays reachable from both sides.
//! - [`Net::loss`]: a classic-BPF filter on `eth0` egress dropping that
//!   share of the frames the member sends (random per frame, as netem's
//!   `loss`). A BPF filter rather than netem, because it needs only
//!   `cls_bpf`, which kernels without `sch_netem` still have.
//! - [`Net::delay`]: `tc qdisc replace dev eth0 root netem delay <ms>ms`
//!   (needs `sch_netem`, see [`Net::netem_available`]).
//!
//! Impairments act on what a member *sends*, as `tc` on a node's own
//! interface does; a packet between two members is impaired once, by its
//! sender's settings.
//!
//! Every `ip`/`tc` command is bounded by [`COMMAND_TIMEOUT`], and its
//! failure panics with the command, exit code and stderr. Dropping a `Net`
//! deletes every veth and namespace it made, also when the test panics; a
//! test process killed without unwinding leaves its namespaces behind,
//! and the next `Net` of any test deletes those of processes that no
//! longer exist. Members must be stopped before their `Net` is dropped
//! and the thread must have left its bridge namespace before the `Net` is
//! dropped (declare the `Net` first, then the guard, then the cluster).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use crate::server::Placement;

/// Bound on one `ip` or `tc` command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Every namespace a `Net` makes is named `<NS_PREFIX><pid>-<n>-...`.
const NS_PREFIX: &str = "fkv-";
/// The member's client and peer ports on its own address.
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Member-side interface, and the bridge, in their namespaces.
const MEMBER_IF: &str = "eth0";
const BRIDGE_IF: &str = "br0";
/// `tc` filter priorities on a member's `eth0` egress.
const PARTITION_PRIO: &str = "1";
const LOSS_PRIO: &str = "2";

/// Per-process sequence of `Net`s (the `<n>` of names and addresses).
static NET_SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// One member's link and what is done to it now.
#[derive(Debug)]
struct Link {
    ns: String,
    /// The bridge-side veth, in the bridge namespace.
    port: String,
    ip: Ipv4Addr,
    isolated: bool,
    /// Members this one's packets are not delivered to (kept symmetric).
    blocked: BTreeSet<usize>,
    loss_pct: u32,
    delay_ms: u32,
    partition_filter: bool,
    loss_filter: bool,
    netem: bool,
}

/// A private topology of `members` namespaces on one bridge (see the
/// module documentation). Not `Clone`: it owns the namespaces.
#[derive(Debug)]
pub struct Net {
    bridge_ns: String,
    bridge_ip: Ipv4Addr,
    links: Vec<Link>,
    /// Namespaces made so far, deleted in reverse order on drop.
    made: Vec<String>,
    /// Bridge-side veths made so far (deleting one deletes its pair).
    veths: Vec<String>,
    netem: Option<bool>,
}

impl Net {
    /// Creates the topology for `members` members; panics (after deleting
    /// what it made) if a command fails.
    pub fn new(members: usize) -> Net {
        assert!(
            (1..=250).contains(&members),
            "a Net holds 1..=250 members, not {members}"
        );
        delete_stale_namespaces();
        let n = NET_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let octet = (n % 256) as u8;
        let base = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let mut net = Net {
            bridge_ns: format!("{base}-br"),
            bridge_ip: Ipv4Addr::new(10, 213, octet, 1),
            links: (0..members)
                .map(|i| Link {
                    ns: format!("{base}-m{}", i + 1),
                    port: format!("m{}", i + 1),
                    ip: Ipv4Addr::new(10, 213, octet, i as u8 + 2),
                    isolated: false,
                    blocked: BTreeSet::new(),
                    loss_pct: 0,
                    delay_ms: 0,
                    partition_filter: false,
                    loss_filter: false,
                    netem: false,
                })
                .collect(),
            made: Vec::new(),
            veths: Vec::new(),
            netem: None,
        };
        // A panic below drops `net`, which deletes what exists so far.
        let br = net.bridge_ns.clone();
        ip(&["netns", "add", &br]);
        net.made.push(br.clone());
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", BRIDGE_IF, "type", "bridge"]);
        ip(&[
            "-n",
            &br,
            "addr",
            "add",
            &format!("{}/24", net.bridge_ip),
            "dev",
            BRIDGE_IF,
        ]);
        ip(&["-n", &br, "link", "set", BRIDGE_IF, "up"]);
        for i in 0..members {
            let (ns, port, addr) = {
                let l = &net.links[i];
                (l.ns.clone(), l.port.clone(), format!("{}/24", l.ip))
            };
            ip(&["netns", "add", &ns]);
            net.made.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &ns, "link", "add", MEMBER_IF, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ]);
            net.veths.push(port.clone());
            ip(&["-n", &br, "link", "set", &port, "master", BRIDGE_IF]);
            ip(&["-n", &br, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", MEMBER_IF]);
            ip(&["-n", &ns, "link", "set", MEMBER_IF, "up"]);
            tc(&["-n", &ns, "qdisc", "add", "dev", MEMBER_IF, "clsact"]);
        }
        net
    }

    pub fn members(&self) -> usize {
        self.links.len()
    }

    /// Member `i`'s namespace.
    pub fn member_ns(&self, i: usize) -> &str {
        &self.links[i].ns
    }

    /// The namespace of the bridge, which reaches every member that is not
    /// isolated.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Member `i`'s address (on its `eth0`).
    pub fn member_ip(&self, i: usize) -> Ipv4Addr {
        self.links[i].ip
    }

    /// The bridge namespace's address.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.bridge_ip
    }

    /// Where member `i` of a cluster runs: its namespace, client and peer
    /// ports on its address.
    pub fn placement(&self, i: usize) -> Placement {
        let ip = self.links[i].ip;
        Placement {
            client_addr: SocketAddr::from((ip, CLIENT_PORT)),
            peer_addr: SocketAddr::from((ip, PEER_PORT)),
            netns: Some(self.links[i].ns.clone()),
        }
    }

    /// Every member's placement, in order.
    pub fn placements(&self) -> Vec<Placement> {
        (0..self.links.len()).map(|i| self.placement(i)).collect()
    }

    /// Moves the calling thread into the bridge namespace until the guard
    /// is dropped. Threads it starts meanwhile (a tokio runtime's workers,
    /// etcdctl children) are born there too.
    pub fn enter_bridge(&self) -> NsGuard {
        NsGuard::enter(&self.bridge_ns)
    }

    /// Member `i`'s link goes down at the bridge: it reaches nothing but
    /// itself, nothing reaches it (not even the bridge namespace).
    pub fn isolate(&mut self, i: usize) {
        assert!(!self.links[i].isolated, "member {i} is already isolated");
        let port = self.links[i].port.clone();
        ip(&["-n", &self.bridge_ns, "link", "set", &port, "down"]);
        self.links[i].isolated = true;
    }

    /// Undoes everything done to member `i`'s link: up again if isolated,
    /// no longer partitioned from anyone, no loss, no delay.
    pub fn heal(&mut self, i: usize) {
        if self.links[i].isolated {
            let port = self.links[i].port.clone();
            ip(&["-n", &self.bridge_ns, "link", "set", &port, "up"]);
            self.links[i].isolated = false;
        }
        let peers: Vec<usize> = std::mem::take(&mut self.links[i].blocked)
            .into_iter()
            .collect();
        for &p in &peers {
            self.links[p].blocked.remove(&i);
            self.apply_partition_filter(p);
        }
        self.apply_partition_filter(i);
        self.links[i].loss_pct = 0;
        self.apply_loss_filter(i);
        self.links[i].delay_ms = 0;
        self.apply_netem(i);
    }

    /// [`heal`](Self::heal) of every member.
    pub fn heal_all(&mut self) {
        for i in 0..self.links.len() {
            self.heal(i);
        }
    }

    /// No packet between a member of `a` and a member of `b` is delivered,
    /// either way; the members of each side still reach each other, and
    /// everyone still reaches the bridge namespace. Adds to any partition
    /// already in place; [`heal`](Self::heal) ends it member by member.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            assert!(!b.contains(&x), "member {x} on both sides of a partition");
            for &y in b {
                self.links[x].blocked.insert(y);
                self.links[y].blocked.insert(x);
            }
        }
        let touched: BTreeSet<usize> = a.iter().chain(b).copied().collect();
        for i in touched {
            self.apply_partition_filter(i);
        }
    }

    /// Drops `pct` percent of the frames member `i` sends (0 removes it).
    pub fn loss(&mut self, i: usize, pct: u32) {
        assert!(pct <= 100, "loss of {pct}%");
        self.links[i].loss_pct = pct;
        self.apply_loss_filter(i);
    }

    /// Delays every frame member `i` sends by `ms` milliseconds (0 removes
    /// it). Needs `sch_netem` ([`netem_available`](Self::netem_available));
    /// panics with `tc`'s error if the kernel has none.
    pub fn delay(&mut self, i: usize, ms: u32) {
        self.links[i].delay_ms = ms;
        self.apply_netem(i);
    }

    /// Whether this kernel has the netem qdisc that [`delay`](Self::delay)
    /// needs: probed once by adding and removing one on the bridge
    /// namespace's `lo` (the only command here whose failure is an answer,
    /// not a test failure).
    pub fn netem_available(&mut self) -> bool {
        if let Some(known) = self.netem {
            return known;
        }
        let ns = self.bridge_ns.clone();
        let probe = run_command(
            "tc",
            &[
                "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            ],
        );
        let available = probe.code == 0;
        if available {
            tc(&["-n", &ns, "qdisc", "del", "dev", "lo", "root"]);
        }
        self.netem = Some(available);
        available
    }

    /// The partition filter of member `i` as its blocked set says.
    fn apply_partition_filter(&mut self, i: usize) {
        let l = &self.links[i];
        let (ns, present) = (l.ns.clone(), l.partition_filter);
        let targets: Vec<Ipv4Addr> = l.blocked.iter().map(|&p| self.links[p].ip).collect();
        if targets.is_empty() {
            if present {
                tc(&[
                    "-n",
                    &ns,
                    "filter",
                    "del",
                    "dev",
                    MEMBER_IF,
                    "egress",
                    "prio",
                    PARTITION_PRIO,
                ]);
            }
        } else {
            set_bpf_filter(&ns, PARTITION_PRIO, &drop_to(&targets));
        }
        self.links[i].partition_filter = !targets.is_empty();
    }

    fn apply_loss_filter(&mut self, i: usize) {
        let l = &self.links[i];
        let (ns, present, pct) = (l.ns.clone(), l.loss_filter, l.loss_pct);
        if pct == 0 {
            if present {
                tc(&[
                    "-n", &ns, "filter", "del", "dev", MEMBER_IF, "egress", "prio", LOSS_PRIO,
                ]);
            }
        } else {
            set_bpf_filter(&ns, LOSS_PRIO, &drop_share(pct));
        }
        self.links[i].loss_filter = pct != 0;
    }

    fn apply_netem(&mut self, i: usize) {
        let l = &self.links[i];
        let (ns, present, ms) = (l.ns.clone(), l.netem, l.delay_ms);
        if ms == 0 {
            if present {
                tc(&["-n", &ns, "qdisc", "del", "dev", MEMBER_IF, "root"]);
            }
        } else {
            tc(&[
                "-n",
                &ns,
                "qdisc",
                "replace",
                "dev",
                MEMBER_IF,
                "root",
                "netem",
                "delay",
                &format!("{ms}ms"),
            ]);
        }
        self.links[i].netem = ms != 0;
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut failures = Vec::new();
        // The veths first (deleting one end deletes both), so that they go
        // even if a process left in a namespace keeps it alive.
        for port in self.veths.iter().rev() {
            let args = ["-n", &self.bridge_ns, "link", "del", port];
            let out = run_command("ip", &args);
            if out.code != 0 {
                failures.push(describe("ip", &args, &out));
            }
        }
        for ns in self.made.iter().rev() {
            let args = ["netns", "del", ns];
            let out = run_command("ip", &args);
            if out.code != 0 {
                failures.push(describe("ip", &args, &out));
            }
        }
        if !failures.is_empty() {
            let report = format!("deleting the test network failed:\n{}", failures.join("\n"));
            if thread::panicking() {
                eprintln!("{report}");
            } else {
                panic!("{report}");
            }
        }
    }
}

/// The calling thread inside a namespace, until dropped (then back where
/// it was). Drop it before the [`Net`]: a thread still inside keeps the
/// deleted namespace alive until it leaves.
pub struct NsGuard {
    original: File,
}

impl NsGuard {
    fn enter(ns: &str) -> Self {
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("open /proc/thread-self/ns/net: {e}"));
        enter_namespace(ns);
        NsGuard { original }
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: setns(2) on an open namespace file descriptor; it only
        // changes the calling thread's network namespace.
        let rc = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let report = format!(
                "setns back to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
            if thread::panicking() {
                eprintln!("{report}");
            } else {
                panic!("{report}");
            }
        }
    }
}

/// Runs `f` on a thread of its own inside namespace `ns` (its sockets and
/// the processes it starts live there) and returns what it returned; a
/// panic in `f` is resumed here.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            enter_namespace(ns);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into the named namespace (`/run/netns/<ns>`).
fn enter_namespace(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on an open namespace file descriptor; it only
    // changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns({path}, CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
}

/// Deletes the namespaces of `Net`s whose test process no longer exists
/// (killed without unwinding), so that they do not pile up.
fn delete_stale_namespaces() {
    let out = ip(&["netns", "list"]);
    for line in out.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let args = ["netns", "del", name];
            let out = run_command("ip", &args);
            // Another test may have deleted it first.
            if out.code != 0 && Path::new(&format!("/run/netns/{name}")).exists() {
                panic!("{}", describe("ip", &args, &out));
            }
        }
    }
}

/// Adds or replaces the classic-BPF direct-action filter `prog` at `prio`
/// on member namespace `ns`'s `eth0` egress.
fn set_bpf_filter(ns: &str, prio: &str, prog: &[Insn]) {
    tc(&[
        "-n",
        ns,
        "filter",
        "replace",
        "dev",
        MEMBER_IF,
        "egress",
        "prio",
        prio,
        "handle",
        "1",
        "bpf",
        "da",
        "bytecode",
        &bytecode(prog),
    ]);
}

/// One classic BPF instruction: `(code, jt, jf, k)`.
type Insn = (u16, u8, u8, u32);

const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// `ld rand`: a classic-BPF ancillary load (SKF_AD_OFF + SKF_AD_RANDOM).
const SKF_AD_RANDOM: u32 = 0xffff_f000 + 56;
const ETHERTYPE_OFFSET: u32 = 12;
const ETHERTYPE_IPV4: u32 = 0x0800;
/// Ethernet header (14) + the IPv4 destination's offset (16).
const IPV4_DST_OFFSET: u32 = 30;
/// Direct-action verdicts: drop; or go on (the next filter, else pass).
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_UNSPEC: u32 = u32::MAX;

/// Drops IPv4 packets to any of `targets`.
fn drop_to(targets: &[Ipv4Addr]) -> Vec<Insn> {
    let n = targets.len();
    assert!(n < 250, "too many partition targets");
    // 0: A = ethertype; 1: not IPv4 -> pass; 2: A = dst; 3..3+n: dst ==
    // target -> drop; 3+n: pass; 4+n: drop.
    let mut prog = vec![
        (BPF_LD_H_ABS, 0, 0, ETHERTYPE_OFFSET),
        (BPF_JEQ_K, 0, n as u8 + 1, ETHERTYPE_IPV4),
        (BPF_LD_W_ABS, 0, 0, IPV4_DST_OFFSET),
    ];
    for (k, ip) in targets.iter().enumerate() {
        prog.push((BPF_JEQ_K, (n - k) as u8, 0, u32::from(*ip)));
    }
    prog.push((BPF_RET_K, 0, 0, TC_ACT_UNSPEC));
    prog.push((BPF_RET_K, 0, 0, TC_ACT_SHOT));
    prog
}

/// Drops `pct` percent of frames, each independently.
fn drop_share(pct: u32) -> Vec<Insn> {
    let threshold = ((u64::from(pct) << 32) / 100).min(u64::from(u32::MAX)) as u32;
    // A = random u32; A >= threshold -> pass, else drop.
    vec![
        (BPF_LD_W_ABS, 0, 0, SKF_AD_RANDOM),
        (BPF_JGE_K, 0, 1, threshold),
        (BPF_RET_K, 0, 0, TC_ACT_UNSPEC),
        (BPF_RET_K, 0, 0, TC_ACT_SHOT),
    ]
}

/// `tc ... bytecode` syntax: `N,code jt jf k,...`.
fn bytecode(prog: &[Insn]) -> String {
    let mut s = prog.len().to_string();
    for (code, jt, jf, k) in prog {
        s.push_str(&format!(",{code} {jt} {jf} {k}"));
    }
    s
}

/// Runs `ip <args>`; its stdout. Panics with the command and stderr if it
/// fails.
fn ip(args: &[&str]) -> String {
    checked("ip", args)
}

/// Runs `tc <args>`, as [`ip`] runs `ip`.
fn tc(args: &[&str]) -> String {
    checked("tc", args)
}

fn checked(program: &str, args: &[&str]) -> String {
    let out = run_command(program, args);
    if out.code != 0 {
        panic!("{}", describe(program, args, &out));
    }
    out.stdout
}

fn describe(program: &str, args: &[&str], out: &crate::Output) -> String {
    format!(
        "`{program} {}` failed (exit {}): {}{}",
        args.join(" "),
        out.code,
        out.stderr.trim(),
        if out.stdout.trim().is_empty() {
            String::new()
        } else {
            format!("\nstdout: {}", out.stdout.trim())
        }
    )
}

fn run_command(program: &str, args: &[&str]) -> crate::Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::server::die_with_test(&mut cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    crate::etcdctl::run_bounded(child, None, COMMAND_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_to_jumps_land_on_pass_and_drop() {
        let prog = drop_to(&[Ipv4Addr::new(10, 213, 0, 3), Ipv4Addr::new(10, 213, 0, 4)]);
        assert_eq!(
            bytecode(&prog),
            "7,40 0 0 12,21 0 3 2048,32 0 0 30,21 2 0 181731331,21 1 0 181731332,\
             6 0 0 4294967295,6 0 0 2"
        );
    }

    #[test]
    fn drop_share_threshold() {
        assert_eq!(drop_share(50)[1].3, 1 << 31);
        assert_eq!(drop_share(100)[1].3, u32::MAX);
        assert_eq!(drop_share(0)[1].3, 0);
    }
}
