//! ferroctl's failures with etcdctl's exit codes and `Error: ` lines.

use crate::client::RpcError;

/// etcdctl's exit codes (`ctlv3/command/error.go`).
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_INVALID_INPUT: i32 = 3;
pub const EXIT_BAD_FEATURE: i32 = 4;
pub const EXIT_INTERRUPTED: i32 = 5;
pub const EXIT_IO: i32 = 6;
pub const EXIT_BAD_ARGS: i32 = 128;

/// A command's failure: what etcdctl prints on stderr and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdError {
    pub code: i32,
    pub message: String,
    /// clientv3's retry-interceptor warning, printed before `Error: `.
    pub log: Option<String>,
}

impl CmdError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CmdError {
            code,
            message: message.into(),
            log: None,
        }
    }

    pub fn bad_args(message: impl Into<String>) -> Self {
        CmdError::new(EXIT_BAD_ARGS, message)
    }

    pub fn bad_feature(message: impl Into<String>) -> Self {
        CmdError::new(EXIT_BAD_FEATURE, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        CmdError::new(EXIT_INVALID_INPUT, message)
    }

    pub fn error(message: impl Into<String>) -> Self {
        CmdError::new(EXIT_ERROR, message)
    }

    /// A unary call's failure, with the warning clientv3 logs for it.
    pub fn rpc(err: &RpcError, endpoint: &str) -> Self {
        CmdError {
            code: EXIT_ERROR,
            message: err.message(),
            log: Some(retry_warning(err, endpoint)),
        }
    }

    /// The same, with etcdctl's wording around the server's message.
    pub fn rpc_wrapped(err: &RpcError, endpoint: &str, wrap: impl Fn(&str) -> String) -> Self {
        let mut e = CmdError::rpc(err, endpoint);
        e.message = wrap(&e.message);
        e
    }

    /// The text etcdctl writes to stderr.
    pub fn stderr_text(&self) -> String {
        let mut s = String::new();
        if let Some(log) = &self.log {
            s.push_str(log);
            s.push('\n');
        }
        // An empty message is etcdctl's bare `os.Exit(code)`.
        if !self.message.is_empty() {
            s.push_str(&format!("Error: {}\n", self.message));
        }
        s
    }
}

/// clientv3's zap warning from its retry interceptor, which etcdctl 3.4
/// prints for every failed unary call (`ts` and `target` differ per run).
pub fn retry_warning(err: &RpcError, endpoint: &str) -> String {
    let target = format!("endpoint://client-{}/{}", client_uuid(), endpoint);
    warning_line(&target, err.attempt(), &err.grpc_text())
}

/// The warning for a call on a direct connection to one endpoint
/// (clientv3's Status, HashKV, Defragment).
pub fn retry_warning_direct(err: &RpcError, endpoint: &str) -> String {
    warning_line(
        &format!("passthrough:///{endpoint}"),
        err.attempt(),
        &err.grpc_text_direct(),
    )
}

fn warning_line(target: &str, attempt: u32, error: &str) -> String {
    let ts = crate::gofmt::zap_timestamp(std::time::SystemTime::now());
    format!(
        "{{\"level\":\"warn\",\"ts\":{},\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":{attempt},\"error\":{}}}",
        crate::gofmt::json_string(&ts),
        crate::gofmt::json_string(target),
        crate::gofmt::json_string(error)
    )
}

/// A random-looking version-4 UUID, as clientv3 names its resolver
/// target; only its shape matters.
fn client_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u32(std::process::id());
        *w = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
