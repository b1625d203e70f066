//! ferroctl, an etcdctl 3.4 work-alike, and the etcd v3 client it is built
//! on ([`client`], reusable by other tools such as ferro-bench).
//!
//! - [`client`]: connect, unary calls with deadlines, bidi streams.
//! - [`cli`]: etcdctl's command tree, flags, parser and usage text.
//! - [`printer`], [`json`], [`gofmt`], [`table`]: output byte-for-byte as
//!   etcdctl prints it.
//! - [`concurrency`]: etcd's lock and election recipes (sessions on leases).
//! - [`bolt`]: read-only bbolt walk for `snapshot status` of etcd files.
//! - [`snapshot_file`]: `snapshot status` of either kind of file (an etcd
//!   bbolt database or a ferrokv backup); `ferroutl snapshot restore`.
//! - [`cmd`]: the commands.

pub mod bolt;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod completion;
pub mod concurrency;
pub mod ctx;
pub mod error;
pub mod gofmt;
pub mod insecure_tls;
pub mod json;
pub mod password;
pub mod printer;
pub mod snapshot_file;
pub mod table;

/// The etcdctl version ferroctl reports (and matches byte-for-byte).
pub const VERSION: &str = "3.4.23";
/// The API version etcdctl 3.4 reports.
pub const API_VERSION: &str = "3.4";

use cli::ParseError;
use ctx::{eprint_now, Ctx};

/// Runs ferroctl with `argv` (without the program name); returns the exit
/// code.
pub fn main_with_args(argv: Vec<String>) -> i32 {
    let inv = match cli::parse(&argv) {
        Ok(inv) => inv,
        Err(ParseError::Help(path)) => {
            let _ = ctx::emit(cli::usage(&path).as_bytes());
            return 0;
        }
        Err(ParseError::UnknownCommand(word)) => {
            let msg = format!("unknown command \"{word}\" for \"etcdctl\"");
            eprint_now(&format!(
                "Error: {msg}\nRun 'etcdctl --help' for usage.\nError: {msg}\n"
            ));
            return error::EXIT_ERROR;
        }
        Err(ParseError::Flag { command, message }) => {
            // cobra: the error, the usage (etcdctl writes it to stdout),
            // an empty line; then etcdctl's own `Error:` line.
            eprint_now(&format!("Error: {message}\n"));
            let _ = ctx::emit(cli::usage(&command).as_bytes());
            eprint_now(&format!("\nError: {message}\n"));
            return error::EXIT_ERROR;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprint_now(&format!("Error: cannot start the async runtime: {e}\n"));
            return error::EXIT_ERROR;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = Ctx::new(inv)?;
        cmd::run(ctx).await
    });
    // Streams and children must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprint_now(&e.stderr_text());
            e.code
        }
    }
}
