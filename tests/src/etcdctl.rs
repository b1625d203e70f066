//! Running the real `etcdctl` (v3 API), bounded in time.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Wall-clock bound on one etcdctl invocation. etcdctl's own
/// `--command-timeout` (below) fires first; this catches a hung dial or a
/// stdin that is never read.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Passed to etcdctl as `--command-timeout`.
pub const ETCDCTL_COMMAND_TIMEOUT: &str = "10s";
/// Passed to etcdctl as `--dial-timeout`.
pub const ETCDCTL_DIAL_TIMEOUT: &str = "3s";
/// How often a running child is polled for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What one etcdctl run printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Exit code; -1 if killed by a signal (including our timeout).
    pub code: i32,
}

/// One key of `etcdctl get -w fields` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldsKv {
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// Parses the stdout of `etcdctl get ... -w fields` whose keys and values
/// are printable without escapes: `(header revision, key -> kv)`. Panics on
/// output it cannot read.
pub fn parse_get_fields(stdout: &str) -> (u64, BTreeMap<String, FieldsKv>) {
    let unquote = |s: &str| -> String {
        let s = s.trim();
        assert!(
            s.len() >= 2 && s.starts_with('"') && s.ends_with('"') && !s.contains('\\'),
            "unexpected quoted field {s:?}"
        );
        s[1..s.len() - 1].to_string()
    };
    let mut revision = None;
    let mut kvs = BTreeMap::new();
    let mut key: Option<String> = None;
    let (mut create_revision, mut mod_revision, mut version) = (None, None, None);
    for line in stdout.lines() {
        let Some((name, val)) = line.split_once(" : ") else {
            continue;
        };
        match name {
            "\"Revision\"" => revision = val.trim().parse().ok(),
            "\"Key\"" => key = Some(unquote(val)),
            "\"CreateRevision\"" => create_revision = val.trim().parse().ok(),
            "\"ModRevision\"" => mod_revision = val.trim().parse().ok(),
            "\"Version\"" => version = val.trim().parse().ok(),
            // etcdctl prints Value last of a kv's fields but Lease.
            "\"Value\"" => {
                let k = key.take().expect("Value after Key");
                let kv = FieldsKv {
                    value: unquote(val),
                    create_revision: create_revision.take().expect("CreateRevision"),
                    mod_revision: mod_revision.take().expect("ModRevision"),
                    version: version.take().expect("Version"),
                };
                kvs.insert(k, kv);
            }
            _ => {}
        }
    }
    (revision.expect("header revision in fields output"), kvs)
}

/// `/usr/bin/etcdctl`, or `FERROKV_TEST_ETCDCTL` if set.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("FERROKV_TEST_ETCDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// Runs `etcdctl --endpoints=<endpoint> <args>` with `stdin` fed to it.
pub fn etcdctl<S: AsRef<OsStr>>(endpoint: &str, args: &[S], stdin: Option<&[u8]>) -> Output {
    etcdctl_with_timeout(endpoint, args, stdin, ETCDCTL_TIMEOUT)
}

/// [`etcdctl()`] with an explicit wall-clock bound.
pub fn etcdctl_with_timeout<S: AsRef<OsStr>>(
    endpoint: &str,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    ctl_with_timeout(&etcdctl_bin(), endpoint, args, stdin, timeout)
}

/// Runs an etcdctl-compatible client `bin` (etcdctl or ferroctl) exactly
/// as [`etcdctl()`] runs etcdctl: same environment and global flags.
pub fn ctl_with_timeout<S: AsRef<OsStr>>(
    bin: &Path,
    endpoint: &str,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    let child = ctl_command(bin, endpoint, args, stdin.is_some())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    run_bounded(child, stdin.map(<[u8]>::to_vec), timeout)
}

/// [`ctl_with_timeout`] with extra environment variables (e.g.
/// `ETCDCTL_USER`), set after the developer's `ETCDCTL_*` are removed.
pub fn ctl_with_env<S: AsRef<OsStr>>(
    bin: &Path,
    endpoint: &str,
    args: &[S],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let child = ctl_command(bin, endpoint, args, false)
        .envs(env.iter().copied())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    run_bounded(child, None, timeout)
}

/// Runs an offline tool (`ferroutl`) with `args` only, bounded by
/// `timeout`, stdout and stderr captured.
pub fn tool<S: AsRef<OsStr>>(bin: &Path, args: &[S], timeout: Duration) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::server::die_with_test(&mut cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    run_bounded(child, None, timeout)
}

fn ctl_command<S: AsRef<OsStr>>(bin: &Path, endpoint: &str, args: &[S], stdin: bool) -> Command {
    let mut cmd = Command::new(bin);
    // A developer's ETCDCTL_ENDPOINTS, ETCDCTL_USER, ... must not leak into
    // the tests: only our flags decide what etcdctl talks to.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--command-timeout={ETCDCTL_COMMAND_TIMEOUT}"))
        .arg(format!("--dial-timeout={ETCDCTL_DIAL_TIMEOUT}"))
        .args(args)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::server::die_with_test(&mut cmd);
    cmd
}

/// An etcdctl run in the background (e.g. `watch`, which never exits on
/// its own), stopped with [`Background::stop`] or on drop.
pub struct Background {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `etcdctl --endpoints=<endpoint> <args>` without stdin.
    pub fn start<S: AsRef<OsStr>>(endpoint: &str, args: &[S]) -> Background {
        Background::start_with(&etcdctl_bin(), endpoint, args)
    }

    /// [`Background::start`] with another etcdctl-compatible client.
    pub fn start_with<S: AsRef<OsStr>>(bin: &Path, endpoint: &str, args: &[S]) -> Background {
        Background::start_with_env(bin, endpoint, args, &[])
    }

    /// [`Background::start_with`] with extra environment variables.
    pub fn start_with_env<S: AsRef<OsStr>>(
        bin: &Path,
        endpoint: &str,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Background {
        let mut child = ctl_command(bin, endpoint, args, false)
            .envs(env.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take(), stdout.clone()),
            collect(child.stderr.take(), stderr.clone()),
        ];
        Background {
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits (at most `timeout`) until the child has printed at least
    /// `bytes` bytes on stdout and stderr together; whether it did.
    pub fn wait_printed(&self, bytes: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.printed() < bytes {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
        true
    }

    fn printed(&self) -> usize {
        let n = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map_or(0, |b| b.len());
        n(&self.stdout) + n(&self.stderr)
    }

    /// Waits until the child has printed nothing new for `quiet` (at most
    /// `timeout` in all), or has exited; then kills it and returns what it
    /// printed. `code` is its exit code, or -1 if it had to be killed.
    pub fn stop(mut self, quiet: Duration, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut seen = self.printed();
        let mut quiet_since = Instant::now();
        let mut child = self.child.take().expect("child");
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait on etcdctl") {
                break status;
            }
            let now = Instant::now();
            let printed = self.printed();
            if printed != seen {
                seen = printed;
                quiet_since = now;
            }
            if now >= deadline || now.duration_since(quiet_since) >= quiet {
                let _ = child.kill();
                break child.wait().expect("wait on killed etcdctl");
            }
            thread::sleep(POLL_INTERVAL);
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let text = |b: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&b.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
        };
        Output {
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
            code: status.code().unwrap_or(-1),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn collect<R: Read + Send + 'static>(
    pipe: Option<R>,
    into: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut p) = pipe else { return };
        let mut buf = [0u8; 8192];
        while let Ok(n) = p.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    })
}

/// Feeds stdin and drains stdout/stderr on their own threads (a 1.7 MB value
/// would fill a pipe and deadlock a single-threaded writer), and kills the
/// child if it outlives `timeout`.
pub(crate) fn run_bounded(mut child: Child, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => Some(thread::spawn(move || {
            // A child that exits early closes the pipe; that is its answer.
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("try_wait on etcdctl") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait on killed etcdctl");
            }
            None => thread::sleep(POLL_INTERVAL),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = stdout.join().expect("stdout reader");
    let mut stderr = stderr.join().expect("stderr reader");
    if timed_out {
        stderr.push_str(&format!(
            "\n[harness: killed after {timeout:?} without exiting]\n"
        ));
    }
    Output {
        stdout,
        stderr,
        code: status.code().unwrap_or(-1),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_kills_a_hung_child() {
        let child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let out = run_bounded(child, None, Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.code, -1);
        assert!(out.stderr.contains("killed after"));
    }

    #[test]
    fn run_bounded_feeds_large_stdin() {
        let child = Command::new("wc")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = run_bounded(child, Some(vec![b'x'; 1_700_000]), ETCDCTL_TIMEOUT);
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout.trim(), "1700000");
    }
}
