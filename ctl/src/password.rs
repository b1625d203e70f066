//! Password input as etcdctl's does it: a prompt on stdout, the answer
//! read from stdin with echo off when stdin is a terminal (speakeasy), a
//! newline after it; or, with `--interactive=false`, the first word of
//! stdin (`fmt.Scanf("%s")`).

use std::io::{BufRead, IsTerminal, Write};

use crate::error::CmdError;

/// Reads one line of stdin with the terminal's echo turned off.
pub fn ask(prompt: &str) -> String {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(prompt.as_bytes());
    let _ = out.flush();
    let stdin = std::io::stdin();
    let echo_off = stdin.is_terminal().then(EchoOff::new).flatten();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    drop(echo_off);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    line.trim_end_matches(['\n', '\r']).to_string()
}

/// etcdctl's `readPasswordInteractive`: asked twice, both must match.
pub fn ask_new(name: &str) -> Result<String, CmdError> {
    let first = ask(&format!("Password of {name}: "));
    if first.is_empty() {
        return Err(CmdError::bad_args("empty password"));
    }
    let second = ask(&format!("Type password of {name} again for confirmation: "));
    if first != second {
        return Err(CmdError::bad_args("given passwords are different"));
    }
    Ok(first)
}

/// `fmt.Scanf("%s")`: the first word of stdin.
pub fn first_word() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.split_whitespace().next().unwrap_or("").to_string()
}

/// The terminal's settings while echo is off; restored on drop.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0, and
        // tcsetattr only reads it.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same fd.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
