//! Running the real `etcdctl` (v3 API), bounded in time.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    let mut cmd = Command::new(etcdctl_bin());
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
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", etcdctl_bin().display()));
    run_bounded(child, stdin.map(<[u8]>::to_vec), timeout)
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
