//! Servers on loopback, the real etcd and ferrokv: single members, and
//! clusters of several members started together ([`EtcdCluster`],
//! [`FerrokvCluster`]).
//!
//! Both are started with exactly the same etcd flags (ferrokv accepts etcd's
//! flag names), wait until `etcdctl endpoint health` succeeds, and are killed
//! (SIGKILL + wait) when dropped, so a panicking test still stops them.
//!
//! A child is also started with `PR_SET_PDEATHSIG = SIGKILL`: if the test
//! process dies without unwinding (nextest timeout, SIGKILL, abort), the
//! kernel kills the server too, so no orphan keeps a port or a data dir.
//! The death signal is tied to the *thread* that spawned the child, so start
//! and restart servers from the test's own thread, not from a helper thread
//! that exits before the test ends.
//!
//! A cluster's members can also run in network namespaces
//! ([`ServerCluster::start_placed`] with a [`crate::netns::Net`]'s
//! placements): spawned as `ip netns exec <ns> <server> <flags>`, which
//! execs the server, so the child's pid is the server's own; their
//! readiness is probed from inside their namespace.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::addr::free_addr_pair;
use crate::etcdctl::etcdctl_with_timeout;
use crate::normalize::json_u64_field;
use crate::tls::TlsFiles;

/// Upper bound on the time from spawn until `endpoint health` succeeds.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two readiness probes.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Wall-clock bound on one readiness probe.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts retried with new ports when another process took ours between
/// choosing and binding (the only failure that a retry can fix).
const START_ATTEMPTS_MAX: usize = 3;
/// How much of a server log a failure message shows.
const LOG_TAIL_BYTES: u64 = 4096;

/// Which server a [`ServerProcess`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Etcd,
    Ferrokv,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Etcd => "etcd",
            ServerKind::Ferrokv => "ferrokv",
        })
    }
}

/// Optional settings for a server start.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `--name`; defaults to the server kind ("etcd" / "ferrokv").
    pub name: Option<String>,
    /// ferrokv's `--shards N`; not valid for etcd.
    pub shards: Option<u32>,
    /// Further flags, appended after the standard ones.
    pub extra_args: Vec<String>,
    /// Serve clients over TLS with these files, requiring client
    /// certificates.
    pub tls: Option<TlsFiles>,
}

/// `/usr/bin/etcd`, or `FERROKV_TEST_ETCD` if set. (Not `ETCD_*`: etcd reads
/// every `ETCD_*` variable as a flag.)
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("FERROKV_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// The ferrokv server binary: `FERROKV_BIN` if set; else `ferrokv` next to the
/// test executable's profile dir (`<target>/<profile>/deps/..`, which follows
/// CARGO_TARGET_DIR and the build profile); else `<workspace>/target/debug`.
pub fn ferrokv_bin() -> Result<PathBuf, String> {
    workspace_bin("ferrokv", "FERROKV_BIN")
}

/// The `ferroctl` binary, found as [`ferrokv_bin`] finds the server
/// (`FERROCTL_BIN` overrides).
pub fn ferroctl_bin() -> Result<PathBuf, String> {
    workspace_bin("ferroctl", "FERROCTL_BIN")
}

/// The `ferroutl` binary, found as [`ferrokv_bin`] finds the server
/// (`FERROUTL_BIN` overrides).
pub fn ferroutl_bin() -> Result<PathBuf, String> {
    workspace_bin("ferroutl", "FERROUTL_BIN")
}

/// A binary of this workspace: `$env_var` if set, else next to the test
/// executable's profile dir, else `<workspace>/target/debug`.
fn workspace_bin(name: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{env_var}={} does not exist or is not a file",
                path.display()
            ))
        };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            tried.push(profile_dir.join(name));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let default_path = workspace.join("target").join("debug").join(name);
    if !tried.contains(&default_path) {
        tried.push(default_path);
    }
    for path in &tried {
        if path.is_file() {
            return Ok(path.clone());
        }
    }
    Err(format!(
        "{name} binary not found (tried {}); build it with `cargo build --workspace --bins` \
         or point {env_var} at it",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A running (or killed, restartable) single-member server.
pub struct ServerProcess {
    kind: ServerKind,
    binary: PathBuf,
    name: String,
    member_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    extra_args: Vec<String>,
    tls: Option<TlsFiles>,
    /// TLS between members: https peer URLs, served with these files and
    /// requiring peer client certificates (`--peer-client-cert-auth`).
    peer_tls: Option<TlsFiles>,
    /// The member's cluster, when it is one of several; `None`: a
    /// one-member cluster of its own.
    cluster: Option<ClusterFlags>,
    /// The network namespace it runs in (`ip netns exec`), if not the
    /// test's own; see [`Placement`].
    netns: Option<String>,
    child: Option<Child>,
}

/// Why a spawned server never became ready.
enum StartError {
    Exited(ExitStatus),
    /// Not healthy within this bound.
    NotReady(Duration),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Exited(status) => write!(f, "exited with {status}"),
            StartError::NotReady(bound) => write!(
                f,
                "`etcdctl endpoint health` did not succeed within {bound:?}"
            ),
        }
    }
}

impl ServerProcess {
    /// Starts `binary` as a one-member cluster with its data under `dir`.
    /// Panics, after stopping the child, if it is not healthy within
    /// [`SERVER_READY_TIMEOUT`].
    pub fn start(kind: ServerKind, binary: PathBuf, dir: &Path, opts: ServerOptions) -> Self {
        if kind == ServerKind::Etcd {
            assert!(opts.shards.is_none(), "--shards is a ferrokv-only flag");
        }
        let name = opts.name.clone().unwrap_or_else(|| kind.to_string());
        let mut extra_args = Vec::new();
        if let Some(shards) = opts.shards {
            extra_args.push(format!("--shards={shards}"));
        }
        extra_args.extend(opts.extra_args.iter().cloned());

        let mut failures = Vec::new();
        for _attempt in 0..START_ATTEMPTS_MAX {
            let (client_addr, peer_addr) = free_addr_pair();
            let member_dir = dir.join(format!(
                "{kind}-{}-{}",
                client_addr.ip(),
                client_addr.port()
            ));
            fs::create_dir_all(&member_dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", member_dir.display()));
            let mut server = ServerProcess {
                kind,
                binary: binary.clone(),
                name: name.clone(),
                data_dir: member_dir.join("data"),
                log_path: member_dir.join("server.log"),
                member_dir,
                client_addr,
                peer_addr,
                extra_args: extra_args.clone(),
                tls: opts.tls.clone(),
                peer_tls: None,
                cluster: None,
                netns: None,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::Exited(status))
                    if server
                        .log_tail()
                        .to_ascii_lowercase()
                        .contains("address already in use") =>
                {
                    failures.push(format!("{client_addr}: {status}, port taken; retrying"));
                }
                Err(err) => server.fail_start(err),
            }
        }
        panic!(
            "{kind} did not start after {START_ATTEMPTS_MAX} attempts: {}",
            failures.join("; ")
        );
    }

    /// Spawns the child with the stored configuration and waits for health.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.spawn();
        self.wait_ready(SERVER_READY_TIMEOUT)
    }

    /// Spawns the child with the stored configuration.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.kind);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let log_err = log.try_clone().expect("clone log file handle");

        // `ip netns exec` switches namespace and execs the server (no fork),
        // so the child's pid is the server's and kill_9 kills the server.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        // etcd (and ferrokv, by design) read ETCD_* variables as flags; only
        // the flags below may configure the server under test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        die_with_test(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}",
                self.kind,
                self.binary.display()
            )
        });
        self.child = Some(child);
    }

    fn wait_ready(&mut self, bound: Duration) -> Result<(), StartError> {
        const AUTH_NO_USER: &str = "etcdserver: user name is empty";
        let deadline = Instant::now() + bound;
        let endpoint = self.endpoint();
        loop {
            let child = self.child.as_mut().expect("child spawned");
            if let Some(status) = child.try_wait().expect("try_wait on server") {
                self.child = None;
                return Err(StartError::Exited(status));
            }
            let mut args = self.tls.as_ref().map_or(Vec::new(), TlsFiles::client_flags);
            args.extend(
                [
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ]
                .map(String::from),
            );
            let run = || etcdctl_with_timeout(&endpoint, &args, None, READY_PROBE_TIMEOUT);
            // From the member's own namespace, which always reaches it.
            let probe = match &self.netns {
                Some(ns) => crate::netns::in_namespace(ns, run),
                None => run(),
            };
            // With auth enabled the probe's unauthenticated read is
            // refused, by etcd and ferrokv alike only after its ReadIndex:
            // the member serves.
            if probe.code == 0 || probe.stderr.contains(AUTH_NO_USER) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::NotReady(bound));
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
    }

    fn fail_start(&mut self, err: StartError) -> ! {
        self.kill_9();
        panic!(
            "{} failed to start: {err}\ncommand: {}\nlog {} (tail):\n{}",
            self.kind,
            self.command_line(),
            self.log_path.display(),
            self.log_tail()
        );
    }

    /// The command the server is started with, as a shell would show it.
    pub fn command_line(&self) -> String {
        let netns = self
            .netns
            .as_ref()
            .map_or(String::new(), |ns| format!("ip netns exec {ns} "));
        format!("{netns}{} {}", self.binary.display(), self.args().join(" "))
    }

    /// The etcd flags both servers accept, then the extra ones.
    pub fn args(&self) -> Vec<String> {
        let client = self.client_url();
        let peer = self.peer_url();
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ];
        match &self.cluster {
            Some(cluster) => args.extend(cluster.args()),
            None => args.push(format!("--initial-cluster={}={peer}", self.name)),
        }
        if self.kind == ServerKind::Etcd {
            // Quiet etcd: its log is only read when a start fails.
            args.push("--logger=zap".to_string());
            args.push("--log-level=error".to_string());
        }
        if let Some(tls) = &self.tls {
            args.push(format!("--cert-file={}", tls.cert.display()));
            args.push(format!("--key-file={}", tls.key.display()));
            args.push(format!("--trusted-ca-file={}", tls.ca.display()));
            args.push("--client-cert-auth".to_string());
        }
        if let Some(tls) = &self.peer_tls {
            args.push(format!("--peer-cert-file={}", tls.cert.display()));
            args.push(format!("--peer-key-file={}", tls.key.display()));
            args.push(format!("--peer-trusted-ca-file={}", tls.ca.display()));
            args.push("--peer-client-cert-auth".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Kills the server with SIGKILL and reaps it; no-op if not running.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data dir, addresses and flags
    /// (after [`kill_9`](Self::kill_9)); panics if it does not become healthy.
    pub fn start_again(&mut self) {
        if let Err(err) = self.spawn_and_wait() {
            self.fail_start(err);
        }
    }

    /// [`start_again`](Self::start_again), healthy within `bound` rather
    /// than [`SERVER_READY_TIMEOUT`] (a member with a long log to replay
    /// and a long way to catch up).
    pub fn start_again_within(&mut self, bound: Duration) {
        self.spawn();
        if let Err(err) = self.wait_ready(bound) {
            self.fail_start(err);
        }
    }

    /// Starts it again and says why it did not become healthy within
    /// `bound` (then it is stopped), for a start that may be refused
    /// (damaged files).
    pub fn try_start_again(&mut self, bound: Duration) -> Result<(), String> {
        self.spawn();
        let r = self.wait_ready(bound).map_err(|e| e.to_string());
        if r.is_err() {
            self.kill_9();
        }
        r
    }

    /// The flags appended after the standard ones.
    pub fn extra_args(&self) -> &[String] {
        &self.extra_args
    }

    /// Replaces the flags appended after the standard ones, for the next
    /// [`start_again`](Self::start_again) (e.g. a restart told other
    /// `--initial-cluster*` flags).
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.extra_args = args;
    }

    /// `kill -9`, then start again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill_9();
        self.start_again();
    }

    /// SIGSTOP: the process stays alive but runs nothing (no heartbeat,
    /// no reply) until [`sigcont`](Self::sigcont).
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`sigstop`](Self::sigstop).
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} {} is not running", self.kind, self.name));
        // SAFETY: kill(2) on our own child, which is not reaped yet (so the
        // pid cannot have been reused).
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// How the process ended, if it did (`None` while it runs, and when it
    /// was never started or was killed by [`kill_9`](Self::kill_9)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("try_wait on server"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The network namespace it runs in, if not the test's own.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL, as given to `--endpoints`.
    pub fn endpoint(&self) -> String {
        self.client_url()
    }

    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }

    pub fn peer_url(&self) -> String {
        peer_url(self.peer_addr, self.peer_tls.is_some())
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// One ferrokv shard's directory (its `snapshot.rkyv` and `wal/`).
    pub fn shard_dir(&self, shard: u32) -> PathBuf {
        self.data_dir.join("member").join(format!("shard-{shard}"))
    }

    /// The directory holding this member's data dir and log.
    pub fn member_dir(&self) -> &Path {
        &self.member_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `(cluster_id, member_id)` from the response header of
    /// `member list -w json` (or else `endpoint status -w json`), if the
    /// server answers either.
    pub fn ids(&self) -> Option<(u64, u64)> {
        let endpoint = self.endpoint();
        [
            &["member", "list", "-w", "json"][..],
            &["endpoint", "status", "-w", "json"][..],
        ]
        .iter()
        .find_map(|args| {
            let out = crate::etcdctl(&endpoint, args, None);
            if out.code != 0 {
                return None;
            }
            Some((
                json_u64_field(&out.stdout, "cluster_id")?,
                json_u64_field(&out.stdout, "member_id")?,
            ))
        })
    }

    /// The last few KiB of the server's combined stdout/stderr.
    pub fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::from("<no log>");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint())
            .field("data_dir", &self.data_dir)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Runs a server `binary` with exactly `args` (none of the standard flags)
/// until it exits, bounded by `timeout`: for starts that must be refused.
/// `ETCD_*` variables are removed as for [`ServerProcess`].
pub fn run_to_exit(binary: &Path, args: &[String], timeout: Duration) -> crate::Output {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_test(&mut cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    crate::etcdctl::run_bounded(child, None, timeout)
}

/// A member's peer URL: https when its members speak TLS.
fn peer_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// What makes a server one member of a cluster of several: the same
/// `--initial-cluster`, `--initial-cluster-token` and
/// `--initial-cluster-state=new` on every member, etcd's and ferrokv's alike.
#[derive(Clone, Debug)]
struct ClusterFlags {
    initial_cluster: String,
    token: String,
}

impl ClusterFlags {
    fn args(&self) -> [String; 3] {
        [
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-token={}", self.token),
            "--initial-cluster-state=new".to_string(),
        ]
    }
}

/// Where one member of a [`ServerCluster::start_placed`] runs: its client
/// and peer addresses, and the network namespace it is started in
/// (`ip netns exec <netns> <server> <flags>`; `None`: the test's own).
#[derive(Clone, Debug)]
pub struct Placement {
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub netns: Option<String>,
}

/// Optional settings for a cluster start, the same for every member.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// ferrokv's `--shards N`; not valid for etcd.
    pub shards: Option<u32>,
    /// Further flags, appended after the standard ones (e.g.
    /// `--heartbeat-interval`, `--election-timeout`).
    pub extra_args: Vec<String>,
}

/// Several members of one server kind on loopback, started together (a
/// member is healthy only once a quorum runs, so they cannot be started one
/// after the other as [`ServerProcess::start`] does). No retry on a port
/// taken between choosing and binding: the start panics with the members'
/// logs instead. Every member is stopped on drop.
#[derive(Debug)]
pub struct ServerCluster {
    pub members: Vec<ServerProcess>,
    flags: ClusterFlags,
}

impl ServerCluster {
    /// Members named `names` of `kind`, with `--initial-cluster-token=token`.
    pub fn start(
        kind: ServerKind,
        binary: PathBuf,
        dir: &Path,
        names: &[&str],
        token: &str,
        opts: ClusterOptions,
    ) -> ServerCluster {
        Self::start_peer_tls(kind, binary, dir, names, token, opts, None)
    }

    /// [`start`](Self::start), with TLS between the members when
    /// `peer_tls` is given: https peer URLs, `--peer-cert-file`,
    /// `--peer-key-file`, `--peer-trusted-ca-file` and
    /// `--peer-client-cert-auth` with these files on every member.
    pub fn start_peer_tls(
        kind: ServerKind,
        binary: PathBuf,
        dir: &Path,
        names: &[&str],
        token: &str,
        opts: ClusterOptions,
        peer_tls: Option<TlsFiles>,
    ) -> ServerCluster {
        let placements = names
            .iter()
            .map(|_| {
                let (client_addr, peer_addr) = free_addr_pair();
                Placement {
                    client_addr,
                    peer_addr,
                    netns: None,
                }
            })
            .collect();
        Self::start_members(kind, binary, dir, names, token, opts, peer_tls, placements)
    }

    /// [`start`](Self::start), member `i` where `placements[i]` says: on
    /// those addresses, in that network namespace (e.g. a
    /// [`Net`](crate::netns::Net)'s).
    pub fn start_placed(
        kind: ServerKind,
        binary: PathBuf,
        dir: &Path,
        names: &[&str],
        token: &str,
        opts: ClusterOptions,
        placements: Vec<Placement>,
    ) -> ServerCluster {
        Self::start_members(kind, binary, dir, names, token, opts, None, placements)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_members(
        kind: ServerKind,
        binary: PathBuf,
        dir: &Path,
        names: &[&str],
        token: &str,
        opts: ClusterOptions,
        peer_tls: Option<TlsFiles>,
        placements: Vec<Placement>,
    ) -> ServerCluster {
        if kind == ServerKind::Etcd {
            assert!(opts.shards.is_none(), "--shards is a ferrokv-only flag");
        }
        assert_eq!(names.len(), placements.len(), "one placement per member");
        let flags = ClusterFlags {
            initial_cluster: names
                .iter()
                .zip(&placements)
                .map(|(name, place)| {
                    format!("{name}={}", peer_url(place.peer_addr, peer_tls.is_some()))
                })
                .collect::<Vec<_>>()
                .join(","),
            token: token.to_string(),
        };
        let mut extra_args = Vec::new();
        if let Some(shards) = opts.shards {
            extra_args.push(format!("--shards={shards}"));
        }
        extra_args.extend(opts.extra_args.iter().cloned());
        let members = names
            .iter()
            .zip(&placements)
            .map(|(name, place)| {
                let (client_addr, peer_addr) = (place.client_addr, place.peer_addr);
                let member_dir = dir.join(format!(
                    "{kind}-{name}-{}-{}",
                    client_addr.ip(),
                    client_addr.port()
                ));
                fs::create_dir_all(&member_dir)
                    .unwrap_or_else(|e| panic!("create {}: {e}", member_dir.display()));
                ServerProcess {
                    kind,
                    binary: binary.clone(),
                    name: name.to_string(),
                    data_dir: member_dir.join("data"),
                    log_path: member_dir.join("server.log"),
                    member_dir,
                    client_addr,
                    peer_addr,
                    extra_args: extra_args.clone(),
                    tls: None,
                    peer_tls: peer_tls.clone(),
                    cluster: Some(flags.clone()),
                    netns: place.netns.clone(),
                    child: None,
                }
            })
            .collect();
        let mut cluster = ServerCluster { members, flags };
        cluster.start_again_all();
        cluster
    }

    /// Spawns a server that is not one of the members but claims to be
    /// joining them: the members' binary and flags, named `name`, with
    /// `--initial-cluster` the members' plus itself, and `peer_tls` for
    /// its peer TLS (https peer URL). It is not waited for: the running
    /// members do not count it, so it never becomes healthy. Stopped when
    /// dropped.
    pub fn spawn_outsider(&self, name: &str, peer_tls: Option<TlsFiles>) -> ServerProcess {
        let first = &self.members[0];
        let (client_addr, peer_addr) = free_addr_pair();
        let member_dir = first
            .member_dir
            .parent()
            .expect("a member dir has a parent")
            .join(format!(
                "{}-{name}-{}-{}",
                first.kind,
                client_addr.ip(),
                client_addr.port()
            ));
        fs::create_dir_all(&member_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", member_dir.display()));
        let flags = ClusterFlags {
            initial_cluster: format!(
                "{},{name}={}",
                self.flags.initial_cluster,
                peer_url(peer_addr, peer_tls.is_some())
            ),
            token: self.flags.token.clone(),
        };
        let mut outsider = ServerProcess {
            kind: first.kind,
            binary: first.binary.clone(),
            name: name.to_string(),
            data_dir: member_dir.join("data"),
            log_path: member_dir.join("server.log"),
            member_dir,
            client_addr,
            peer_addr,
            extra_args: first.extra_args.clone(),
            tls: None,
            peer_tls,
            cluster: Some(flags),
            netns: None,
            child: None,
        };
        outsider.spawn();
        outsider
    }

    /// Starts every member that is not running (all of them at first, or
    /// after [`kill_9_all`](Self::kill_9_all)) together, on their data dirs,
    /// addresses and flags, and waits until each is healthy; panics with
    /// every member's log tail if one is not.
    pub fn start_again_all(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.members[i].is_running())
            .collect();
        for &i in &stopped {
            self.members[i].child = None;
            self.members[i].spawn();
        }
        for &i in &stopped {
            if let Err(err) = self.members[i].wait_ready(SERVER_READY_TIMEOUT) {
                let m = &self.members[i];
                let report = format!(
                    "{} member {} failed to start: {err}\ncommand: {}\n{}",
                    m.kind,
                    m.name,
                    m.command_line(),
                    self.log_tails()
                );
                self.kill_9_all();
                panic!("{report}");
            }
        }
    }

    /// `kill -9` of every member.
    pub fn kill_9_all(&mut self) {
        for m in &mut self.members {
            m.kill_9();
        }
    }

    pub fn kind(&self) -> ServerKind {
        self.members[0].kind
    }

    /// Every member's client URL, comma-separated (etcdctl `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(ServerProcess::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `--initial-cluster` every member was started with.
    pub fn initial_cluster(&self) -> &str {
        &self.flags.initial_cluster
    }

    pub fn token(&self) -> &str {
        &self.flags.token
    }

    /// Every member's log tail, each under a heading with its name.
    pub fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} {} log {} (tail):\n{}",
                    m.kind,
                    m.name,
                    m.log_path.display(),
                    m.log_tail()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A real etcd cluster of several members on loopback.
#[derive(Debug)]
pub struct EtcdCluster(ServerCluster);

impl EtcdCluster {
    /// Members named `names`, with `--initial-cluster-token=token`.
    pub fn start(dir: &Path, names: &[&str], token: &str) -> EtcdCluster {
        Self::start_with(dir, names, token, ClusterOptions::default())
    }

    pub fn start_with(dir: &Path, names: &[&str], token: &str, opts: ClusterOptions) -> Self {
        EtcdCluster(ServerCluster::start(
            ServerKind::Etcd,
            etcd_bin(),
            dir,
            names,
            token,
            opts,
        ))
    }

    pub fn into_inner(self) -> ServerCluster {
        self.0
    }
}

/// A ferrokv cluster of several members on loopback, started with the flags
/// an [`EtcdCluster`] gets (plus `--shards` if given).
#[derive(Debug)]
pub struct FerrokvCluster(ServerCluster);

impl FerrokvCluster {
    /// Panics with a clear message if the binary was not built.
    pub fn start(dir: &Path, names: &[&str], token: &str, opts: ClusterOptions) -> Self {
        Self::start_peer_tls(dir, names, token, opts, None)
    }

    /// With TLS between the members (see [`ServerCluster::start_peer_tls`]).
    pub fn start_peer_tls(
        dir: &Path,
        names: &[&str],
        token: &str,
        opts: ClusterOptions,
        peer_tls: Option<TlsFiles>,
    ) -> Self {
        let binary = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
        FerrokvCluster(ServerCluster::start_peer_tls(
            ServerKind::Ferrokv,
            binary,
            dir,
            names,
            token,
            opts,
            peer_tls,
        ))
    }

    pub fn into_inner(self) -> ServerCluster {
        self.0
    }
}

/// Makes the kernel SIGKILL the child when the spawning thread of the test
/// dies, so no orphan (a server, or an etcdctl retrying a dead endpoint
/// forever) outlives a test that was killed without unwinding.
pub(crate) fn die_with_test(cmd: &mut Command) {
    let parent_pid = std::process::id();
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent_pid {
                return Err(std::io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
}

/// The real etcd (`/usr/bin/etcd`), single member on loopback.
#[derive(Debug)]
pub struct EtcdProcess(ServerProcess);

impl EtcdProcess {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, ServerOptions::default())
    }

    pub fn start_with(dir: &Path, opts: ServerOptions) -> Self {
        EtcdProcess(ServerProcess::start(
            ServerKind::Etcd,
            etcd_bin(),
            dir,
            opts,
        ))
    }

    pub fn into_inner(self) -> ServerProcess {
        self.0
    }
}

/// ferrokv built from this workspace, single member on loopback.
#[derive(Debug)]
pub struct FerrokvProcess(ServerProcess);

impl FerrokvProcess {
    /// Panics with a clear message if the binary was not built.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, ServerOptions::default())
    }

    pub fn start_with(dir: &Path, opts: ServerOptions) -> Self {
        let binary = ferrokv_bin().unwrap_or_else(|e| panic!("{e}"));
        FerrokvProcess(ServerProcess::start(ServerKind::Ferrokv, binary, dir, opts))
    }

    /// `--shards N`.
    pub fn start_with_shards(dir: &Path, shards: u32) -> Self {
        Self::start_with(
            dir,
            ServerOptions {
                shards: Some(shards),
                ..ServerOptions::default()
            },
        )
    }

    pub fn into_inner(self) -> ServerProcess {
        self.0
    }
}

macro_rules! deref_to_inner {
    ($t:ty, $inner:ty) => {
        impl Deref for $t {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }
        impl DerefMut for $t {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.0
            }
        }
    };
}
deref_to_inner!(EtcdProcess, ServerProcess);
deref_to_inner!(FerrokvProcess, ServerProcess);
deref_to_inner!(EtcdCluster, ServerCluster);
deref_to_inner!(FerrokvCluster, ServerCluster);
